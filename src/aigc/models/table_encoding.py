"""What the table families see of a table, and the encodings they share.

Families never see the stored table: they see its *model frame* (``aigc.data.tables.to_model_frame``),
whose columns are of two types only, ``numerical`` (float64, NaN = missing) and ``categorical``
(str, None = missing), described by one :class:`ColumnSpec` each.

Shared here, for the neural families (``ctgan``, ``tvae``):

- :class:`DataTransformer`, the mode-specific normalisation of Xu et al. 2019 (CTGAN), with
  missing values and point masses (a value that a large share of rows hold, such as the 0 of a
  capital-gain column) as modes of their own, so both come back exactly;
- the conditions of ``sample(n, conditions)``: their checks and a rejection sampler;
- DP-SGD: per-example gradients (``torch.func``), clipping and Gaussian noise, and Opacus' RDP
  accountant, which sets the noise for a target (epsilon, delta) and counts what a run spent.

This module knows frames, arrays and tensors; nothing about files, runs or the training loop.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import asdict, dataclass
from typing import Any, Callable, NamedTuple

import numpy as np
import pandas as pd
import torch
from torch import Tensor, nn

from aigc.errors import InvalidInput

NUMERICAL_KINDS = ("continuous", "discrete", "datetime")


@dataclass
class ColumnSpec:
    name: str
    type: str  # "numerical" | "categorical"
    integer: bool = False  # numerical: integer-valued (the discrete kind, or no decimals)
    min: float | None = None
    max: float | None = None
    categories: list[str] | None = None  # categorical: the values, most frequent first
    missing: float = 0.0  # share of missing values in the ingested table

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "ColumnSpec":
        return cls(**d)


def column_specs(meta: Any) -> list[ColumnSpec]:
    """One spec per modelled column of a :class:`aigc.data.tables.TableMetadata`, in table order."""
    specs = []
    for col in meta.modelled():
        if col.kind in NUMERICAL_KINDS:
            specs.append(ColumnSpec(col.name, "numerical", integer=col.kind == "discrete" or col.decimals == 0,
                                    min=col.min, max=col.max, missing=col.missing))
        else:
            specs.append(ColumnSpec(col.name, "categorical", categories=list(col.categories or {}),
                                    missing=col.missing))
    return specs


# -- mode-specific normalisation (Xu et al. 2019) -----------------------------------------------

MAX_FIT_VALUES = 10_000  # a column's mixture is fitted on at most this many sampled values (seconds, not minutes)
MAX_POINTS = 10  # at most this many point masses per column, the most frequent first
WEIGHT_THRESHOLD = 0.005  # mixture components lighter than this are dropped (CTGAN's threshold)


class Span(NamedTuple):
    """One block of an encoded row: ``dim`` values at ``start``, squashed by ``activation``.

    kind: "scalar" (a numerical value within its mode, in [-1, 1]: tanh), "mode" (a numerical
    column's mode, point mass or missing value: softmax) or "category" (a categorical column's
    value, missing as one of them: softmax)."""

    dim: int
    activation: str  # "tanh" | "softmax"
    column: str
    kind: str  # "scalar" | "mode" | "category"
    start: int


class DataTransformer:
    """Model-frame rows <-> float32 arrays, CTGAN's mode-specific normalisation extended.

    Numerical column: a variational Gaussian mixture (at most ``max_modes`` modes, a Dirichlet
    process prior of concentration 0.001, modes lighter than 0.005 dropped) is fitted to the
    values that are not point masses. A value is encoded as its most probable mode, one-hot, and
    a scalar (value - mean) / (4 std) of that mode (CTGAN draws the mode from the posterior; the
    most probable one makes the encoding deterministic and the round trip exact). A *point mass*
    (one value held by at least ``point_share`` of the column's present values, e.g. the 0 that
    92 % of adult's capital-gain holds) is a mode of its own with scalar 0, and so is a missing
    value when the column has any: both decode exactly. Decoding clips to the train data's
    [min, max] and rounds integer columns.

    Categorical column: a one-hot of its values (the spec's, most frequent first, then any other
    the train data holds), a missing value as one more category (None).

    The state (:meth:`fit`'s result) is a JSON-able dict: what ``encoding.json`` holds.
    """

    def __init__(self, state: dict[str, Any]):
        self.state = state
        self.columns: list[dict[str, Any]] = state["columns"]
        spans: list[Span] = []
        start = 0
        for col in self.columns:
            if col["type"] == "numerical":
                blocks = [(1, "tanh", "scalar")] if col["means"] else []
                blocks.append((_mode_count(col), "softmax", "mode"))
            else:
                blocks = [(len(col["categories"]), "softmax", "category")]
            for dim, activation, kind in blocks:
                spans.append(Span(dim, activation, col["name"], kind, start))
                start += dim
        self.output_info = spans
        self.dim = start
        self.names = [col["name"] for col in self.columns]

    # -- fitting ---------------------------------------------------------------------------------

    @classmethod
    def fit(cls, frame: pd.DataFrame, specs: list[ColumnSpec], seed: int, max_modes: int = 10,
            point_share: float = 0.05) -> dict[str, Any]:
        """The encoding learnt from the train model frame: a JSON-able dict for :meth:`from_state`."""
        if len(frame) == 0:
            raise InvalidInput("the train table holds no rows: ingest a table with rows")
        if not specs:
            raise InvalidInput("the table has no modelled column (numerical or categorical): nothing to learn")
        _check_columns(frame, [s.name for s in specs])
        if max_modes < 1:
            raise InvalidInput(f"max_modes must be >= 1, got {max_modes}")
        if not 0 < point_share <= 1:
            raise InvalidInput(f"point_share must be in (0, 1], got {point_share}")
        rng = np.random.default_rng(seed)
        columns = []
        for spec in specs:
            if spec.type == "numerical":
                columns.append(_fit_numerical(spec, _numbers(frame, spec.name), rng, max_modes, point_share))
            elif spec.type == "categorical":
                columns.append(_fit_categorical(spec, frame[spec.name]))
            else:
                raise InvalidInput(f"column {spec.name!r} has type {spec.type!r}: a spec's type is numerical or categorical")
        return {"version": 1, "columns": columns}

    @classmethod
    def from_state(cls, state: dict[str, Any]) -> "DataTransformer":
        return cls(state)

    # -- encoding --------------------------------------------------------------------------------

    def transform(self, frame: pd.DataFrame) -> np.ndarray:
        """(N, dim) float32: each row's spans, one-hots exactly 0/1."""
        _check_columns(frame, self.names)
        out = np.zeros((len(frame), self.dim), dtype=np.float32)
        rows = np.arange(len(frame))
        spans = iter(self.output_info)
        for col in self.columns:
            if col["type"] == "numerical":
                values = _numbers(frame, col["name"])
                mode, scalar = _assign_modes(col, values)
                if col["means"]:
                    out[:, next(spans).start] = scalar
                out[rows, next(spans).start + mode] = 1.0
            else:
                span = next(spans)
                out[rows, span.start + self._category_index(col, frame[col["name"]])] = 1.0
        return out

    def _category_index(self, col: dict[str, Any], series: pd.Series) -> np.ndarray:
        lookup = {value: i for i, value in enumerate(col["categories"])}
        values = [None if _is_missing(v) else str(v) for v in series]
        unknown = sorted({v for v in values if v not in lookup}, key=str)
        if unknown:
            what = "missing values" if unknown == [None] else f"value(s) {unknown[:3]}"
            raise InvalidInput(f"column {col['name']!r} holds {what} that its encoding does not know "
                               f"(it knows {len(lookup)}: {list(lookup)[:5]}...): fit the encoding on a table "
                               "whose metadata lists every value")
        return np.fromiter((lookup[v] for v in values), dtype=np.int64, count=len(values))

    def inverse(self, array: np.ndarray, rng: np.random.Generator | None = None) -> pd.DataFrame:
        """Encoded rows (N, dim) -> the model frame. A softmax span picks its largest entry, or,
        with ``rng``, draws one in proportion to its entries (which must then be probabilities).
        Numbers are clipped to the train data's [min, max] and integers rounded. Scalars are not
        clipped: a family's tanh keeps them in [-1, 1], and the rare train value more than 4 std
        from its mode's mean (8 of adult's 26,048 fnlwgt values) then comes back exactly too."""
        array = np.asarray(array, dtype=np.float64)
        if array.ndim != 2 or array.shape[1] != self.dim:
            raise InvalidInput(f"expected encoded rows of shape (N, {self.dim}), got {array.shape}")
        data: dict[str, Any] = {}
        spans = iter(self.output_info)
        for col in self.columns:
            if col["type"] == "numerical":
                scalar = None
                if col["means"]:
                    scalar = array[:, next(spans).start]
                s = next(spans)
                mode = _choose(array[:, s.start : s.start + s.dim], rng)
                data[col["name"]] = _decode_numbers(col, mode, scalar)
            else:
                s = next(spans)
                index = _choose(array[:, s.start : s.start + s.dim], rng)
                data[col["name"]] = pd.Series(np.asarray(col["categories"], dtype=object)[index], dtype=object)
        return pd.DataFrame(data)

    # -- what the families ask ----------------------------------------------------------------------

    def column(self, name: str) -> dict[str, Any]:
        for col in self.columns:
            if col["name"] == name:
                return col
        raise InvalidInput(f"unknown column {name!r}: the table's columns are {', '.join(self.names)}")

    def category_spans(self) -> list[Span]:
        """The spans of the categorical columns, in table order (CTGAN's conditional vector)."""
        return [s for s in self.output_info if s.kind == "category"]


def _mode_count(col: dict[str, Any]) -> int:
    return len(col["means"]) + len(col["points"]) + int(col["missing"])


def _check_columns(frame: pd.DataFrame, names: list[str]) -> None:
    absent = [n for n in names if n not in frame.columns]
    if absent:
        raise InvalidInput(f"the table lacks column(s) {', '.join(map(repr, absent))}: pass a model frame with "
                           f"every encoded column ({', '.join(names)})")


def _is_missing(value: Any) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value)) or value is pd.NA


def _numbers(frame: pd.DataFrame, name: str) -> np.ndarray:
    try:
        return pd.to_numeric(frame[name], errors="raise").to_numpy(dtype=np.float64, na_value=np.nan)
    except (ValueError, TypeError):
        bad = next(v for v in frame[name] if not _is_missing(v) and not _numeric(v))
        raise InvalidInput(f"numerical column {name!r} holds the value {bad!r}, which is not a number: "
                           "pass the model frame (aigc.data.tables.to_model_frame)") from None


def _numeric(value: Any) -> bool:
    try:
        float(value)
        return True
    except (TypeError, ValueError):
        return False


def _fit_numerical(spec: ColumnSpec, values: np.ndarray, rng: np.random.Generator, max_modes: int,
                   point_share: float) -> dict[str, Any]:
    present = values[~np.isnan(values)]
    if len(present) == 0:
        raise InvalidInput(f"column {spec.name!r} has no values in the train table, only missing ones: "
                           "drop the column or fill it")
    unique, counts = np.unique(present, return_counts=True)
    order = np.argsort(-counts, kind="stable")[:MAX_POINTS]
    points = unique[order][counts[order] >= point_share * len(present)]
    rest = present[~np.isin(present, points)]
    if 0 < len(np.unique(rest)) == 1:  # one value left over: a point of its own, not a mode of width 0
        points = np.append(points, rest[0])
        rest = rest[:0]
    means, stds, weights = _fit_mixture(rest, rng, max_modes) if len(rest) else ([], [], [])
    return {
        "name": spec.name, "type": "numerical", "integer": bool(spec.integer),
        "min": float(present.min()), "max": float(present.max()),
        "means": means, "stds": stds, "weights": weights,
        "points": [float(p) for p in points],
        "missing": bool(np.isnan(values).any() or spec.missing > 0),
    }


def _fit_mixture(values: np.ndarray, rng: np.random.Generator, max_modes: int) -> tuple[list, list, list]:
    """A Bayesian Gaussian mixture on (at most MAX_FIT_VALUES of) the values, standardised for the
    fit and mapped back: (means, stds, weights) of the modes kept, heaviest first."""
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.mixture import BayesianGaussianMixture

    sample = rng.choice(values, MAX_FIT_VALUES, replace=False) if len(values) > MAX_FIT_VALUES else values
    center, scale = float(sample.mean()), float(sample.std()) or 1.0
    z = (sample - center) / scale
    gmm = BayesianGaussianMixture(
        n_components=min(max_modes, len(np.unique(z))),
        weight_concentration_prior_type="dirichlet_process",
        weight_concentration_prior=0.001,
        n_init=1,
        random_state=int(rng.integers(2**31 - 1)),
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        gmm.fit(z[:, None])
    keep = np.flatnonzero(gmm.weights_ > WEIGHT_THRESHOLD)
    keep = keep[np.argsort(-gmm.weights_[keep], kind="stable")]
    means = gmm.means_[keep, 0] * scale + center
    stds = np.sqrt(gmm.covariances_[keep].reshape(-1)) * scale
    return means.tolist(), stds.tolist(), gmm.weights_[keep].tolist()


def _assign_modes(col: dict[str, Any], values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Each value's mode index (continuous modes, then points, then missing) and its scalar."""
    n_cont = len(col["means"])
    mode = np.zeros(len(values), dtype=np.int64)
    scalar = np.zeros(len(values), dtype=np.float64)
    missing = np.isnan(values)
    if missing.any() and not col["missing"]:
        raise InvalidInput(f"column {col['name']!r} has missing values but its encoding has no missing mode "
                           "(the train table had none and the metadata says none): fit the encoding on a table "
                           "whose metadata counts its missing values")
    mode[missing] = _mode_count(col) - 1
    points = np.asarray(col["points"], dtype=np.float64)
    is_point = np.isin(values, points) & ~missing
    if len(points):
        order = np.argsort(points)
        mode[is_point] = n_cont + order[np.searchsorted(points[order], values[is_point])]
    cont = ~missing & ~is_point
    if cont.any():
        x = values[cont]
        if n_cont == 0:  # a value between point masses in a column that had no other: the nearest point
            mode[cont] = np.abs(x[:, None] - points[None, :]).argmin(1)
        else:
            means, stds = np.asarray(col["means"]), np.asarray(col["stds"])
            logp = np.log(np.asarray(col["weights"])) - np.log(stds) - 0.5 * ((x[:, None] - means) / stds) ** 2
            k = logp.argmax(1)
            mode[cont] = k
            scalar[cont] = (x - means[k]) / (4 * stds[k])
    return mode, scalar


def _decode_numbers(col: dict[str, Any], mode: np.ndarray, scalar: np.ndarray | None) -> np.ndarray:
    n_cont = len(col["means"])
    table = np.concatenate([np.asarray(col["means"], dtype=np.float64), np.asarray(col["points"], dtype=np.float64),
                            [np.nan] * int(col["missing"])])
    values = table[mode]
    if n_cont:
        cont = mode < n_cont
        values[cont] += scalar[cont] * 4 * np.asarray(col["stds"])[mode[cont]]
    values = np.clip(values, col["min"], col["max"])  # NaN stays NaN
    if col["integer"]:
        values = np.round(values)
    return values


def _choose(block: np.ndarray, rng: np.random.Generator | None) -> np.ndarray:
    """(N, K) -> (N,) indices: the largest entry of each row, or one drawn in proportion to the entries."""
    if rng is None or block.shape[1] == 1:
        return block.argmax(1)
    p = np.clip(block, 0.0, None)
    cum = np.cumsum(p, axis=1)
    u = rng.random(len(block))[:, None] * cum[:, -1:]
    return np.minimum((cum <= u).sum(1), block.shape[1] - 1)


def _fit_categorical(spec: ColumnSpec, series: pd.Series) -> dict[str, Any]:
    values = [None if _is_missing(v) else str(v) for v in series]
    counts: dict[Any, int] = {}
    for v in values:
        counts[v] = counts.get(v, 0) + 1
    if all(v is None for v in values):
        raise InvalidInput(f"column {spec.name!r} has no values in the train table, only missing ones: "
                           "drop the column or fill it")
    categories = [str(c) for c in (spec.categories or [])]
    seen = set(categories)
    categories += sorted((v for v in counts if v is not None and v not in seen), key=lambda v: -counts[v])
    if None in counts or spec.missing > 0:
        categories.append(None)
    return {"name": spec.name, "type": "categorical", "categories": categories,
            "counts": [counts.get(c, 0) for c in categories]}


def marginal_distance(real: pd.DataFrame, synth: pd.DataFrame) -> float:
    """Mean over columns of how far synth's marginal is from real's: the Kolmogorov-Smirnov
    statistic for numerical columns (a missing value counts as larger than any number, so a
    wrong missing rate shows), the total-variation distance for the others. 0 = identical
    marginals; 1 - this is close to SDMetrics' column-shapes score. A quick validation proxy for
    families without a validation loss; ``aigc.metrics.table`` has the real metrics."""
    distances = []
    for name in real.columns:
        a, b = real[name], synth[name]
        if pd.api.types.is_numeric_dtype(a.dtype):
            x = np.sort(np.nan_to_num(a.to_numpy(np.float64), nan=np.inf))
            y = np.sort(np.nan_to_num(b.to_numpy(np.float64), nan=np.inf))
            grid = np.concatenate([x, y])
            cdf_x = np.searchsorted(x, grid, side="right") / len(x)
            cdf_y = np.searchsorted(y, grid, side="right") / len(y)
            distances.append(float(np.abs(cdf_x - cdf_y).max()))
        else:
            p = a.fillna("\0missing").value_counts(normalize=True)
            q = b.fillna("\0missing").value_counts(normalize=True)
            distances.append(float(0.5 * p.sub(q, fill_value=0.0).abs().sum()))
    return float(np.mean(distances))


# -- softmax spans as segments -----------------------------------------------------------------
# A row's softmax spans, side by side, are segments of one vector: ``seg`` (K,) names the segment
# of each of its K entries, so one scatter does what a loop over the spans would.


def softmax_segments(spans: list[Span]) -> tuple[Tensor, Tensor]:
    """(positions, seg): the encoded positions of the spans' entries (K,) and their segment ids (K,)."""
    positions = [s.start + i for s in spans for i in range(s.dim)]
    seg = [j for j, s in enumerate(spans) for _ in range(s.dim)]
    return torch.tensor(positions, dtype=torch.long), torch.tensor(seg, dtype=torch.long)


def segment_log_softmax(logits: Tensor, seg: Tensor, n_seg: int) -> Tensor:
    """log_softmax within each segment of the last axis: (B, K) -> (B, K)."""
    index = seg.expand_as(logits)
    top = logits.new_full((logits.shape[0], n_seg), -math.inf).scatter_reduce(1, index, logits, "amax")
    shifted = logits - top.detach().gather(1, index)
    total = logits.new_zeros(logits.shape[0], n_seg).scatter_add(1, index, shifted.exp())
    return shifted - total.log().gather(1, index)


def segment_one_hot(logits: Tensor, seg: Tensor, n_seg: int) -> Tensor:
    """1 at the largest entry of each segment, 0 elsewhere: (B, K) -> (B, K)."""
    index = seg.expand_as(logits)
    top = logits.new_full((logits.shape[0], n_seg), -math.inf).scatter_reduce(1, index, logits, "amax")
    return (logits == top.gather(1, index)).to(logits.dtype)


def gumbel(shape: tuple[int, ...], device: torch.device, generator: torch.Generator | None = None) -> Tensor:
    """Standard Gumbel noise: argmax(logits + gumbel) draws from softmax(logits)."""
    u = torch.rand(shape, device=device, generator=generator)
    return -torch.log(-torch.log(u.clamp(1e-10, 1.0 - 1e-7)))


# -- conditions ----------------------------------------------------------------------------------


def check_conditions(transformer: DataTransformer, conditions: dict[str, Any] | None, family: str) -> dict[str, Any]:
    """{column: value} checked against the encoding: categorical values as str (None = missing),
    numbers as float (NaN = missing). An unknown column or a value the train table never held
    is refused with the values it did hold."""
    if not conditions:
        return {}
    if not isinstance(conditions, dict):
        raise InvalidInput(f"{family} conditions must be a mapping of column to value, e.g. "
                           f"{{'income': '>50K'}}, got {conditions!r}")
    checked: dict[str, Any] = {}
    for name, value in conditions.items():
        col = transformer.column(name)
        if col["type"] == "categorical":
            v = None if _is_missing(value) else str(value)
            if v not in col["categories"]:
                known = ", ".join(repr(c) for c in col["categories"][:8])
                raise InvalidInput(f"condition {name}={value!r}: the train table never held that value; "
                                   f"{name} takes {known}{', ...' if len(col['categories']) > 8 else ''}")
            checked[name] = v
        else:
            if _is_missing(value):
                if not col["missing"]:
                    raise InvalidInput(f"condition {name}=missing: {name} has no missing values in the train table")
                checked[name] = math.nan
                continue
            try:
                number = float(value)
            except (TypeError, ValueError):
                raise InvalidInput(f"condition {name}={value!r}: {name} is numerical, pass a number") from None
            if not col["min"] <= number <= col["max"]:
                raise InvalidInput(f"condition {name}={value!r}: outside the train table's range "
                                   f"[{col['min']:g}, {col['max']:g}] of {name}")
            if col["integer"] and number != round(number):
                raise InvalidInput(f"condition {name}={value!r}: {name} holds whole numbers only")
            if not col["integer"] and number not in col["points"]:
                raise InvalidInput(f"condition {name}={value!r}: {name} is continuous, so no sampled row would hold "
                                   "exactly that value; condition on a categorical or whole-number column, or "
                                   "filter the sampled rows by a range")
            checked[name] = number
    return checked


def matching(frame: pd.DataFrame, conditions: dict[str, Any]) -> np.ndarray:
    """(N,) bool: the rows of a model frame that hold every condition's value."""
    mask = np.ones(len(frame), dtype=bool)
    for name, value in conditions.items():
        column = frame[name]
        if value is None or (isinstance(value, float) and math.isnan(value)):
            mask &= column.isna().to_numpy()
        elif isinstance(value, str):
            mask &= (column == value).to_numpy(dtype=bool, na_value=False)
        else:
            mask &= np.isclose(column.to_numpy(np.float64), value, rtol=1e-9, atol=0.0)
    return mask


def sample_by_rejection(draw: Callable[[int], pd.DataFrame], n: int, conditions: dict[str, Any],
                        family: str, max_factor: int = 200) -> pd.DataFrame:
    """n rows holding ``conditions``, kept from ``draw(m)`` batches; at most ``max_factor * n``
    (and 100,000) rows are drawn before the attempt is refused as too rare."""
    if n < 0:
        raise InvalidInput(f"{family}: the number of rows must be >= 0, got {n}")
    if not conditions:
        return draw(n)
    limit = max(max_factor * n, 100_000)
    kept: list[pd.DataFrame] = []
    got = drawn = 0
    batch = max(n, 1024)
    while got < n:
        if drawn >= limit:
            raise InvalidInput(f"{family}: only {got} of {drawn:,} sampled rows held {conditions} "
                               f"({n} asked): the model rarely makes such rows; ask for fewer rows or a "
                               "commoner value")
        frame = draw(batch)
        drawn += batch
        hit = frame[matching(frame, conditions)]
        kept.append(hit)
        got += len(hit)
        rate = max(got / drawn, 1.0 / limit)
        batch = int(min(max((n - got) / rate * 1.2, 1024), limit - drawn, 200_000)) or 1
    return pd.concat(kept, ignore_index=True).iloc[:n].reset_index(drop=True)


# -- differential privacy (DP-SGD, Abadi et al. 2016) -------------------------------------------


def check_privacy(family: str, epsilon: float, delta: float, max_grad_norm: float, dp_steps: int) -> None:
    """The DP fields of a family's config: epsilon 0 = no DP; otherwise a target of (epsilon,
    delta) over ``dp_steps`` planned steps, per-example gradients clipped to ``max_grad_norm``."""
    if not math.isfinite(epsilon) or epsilon < 0:
        raise InvalidInput(f"{family} epsilon must be > 0 for a DP run (the dp presets use 1, 3, 10) or 0 for none, "
                           f"got {epsilon}")
    if epsilon == 0 and dp_steps:
        raise InvalidInput(f"{family} epsilon 0 with dp_steps={dp_steps}: a DP run needs epsilon > 0 (0 would be "
                           "perfect privacy, which no training gives; the dp presets use 1, 3, 10); for a run "
                           "without DP use a preset other than dp*")
    if not 0 <= delta < 1:
        raise InvalidInput(f"{family} delta must be in [0, 1) (0 = 1 / (10 x train rows)), got {delta}")
    if epsilon > 0:
        if not max_grad_norm > 0:
            raise InvalidInput(f"{family} max_grad_norm must be > 0 for a DP run, got {max_grad_norm}")
        if dp_steps < 1:
            raise InvalidInput(f"{family} DP (epsilon {epsilon:g}) needs dp_steps, the steps the noise is planned "
                               "for: set it to the run's max_steps (the dp presets set both)")


DP_EPSILONS = (1.0, 3.0, 10.0)  # the targets of the dp presets, "dp1", "dp3", "dp10"


def dp_presets(model: dict[str, Any], steps: int) -> dict[str, dict[str, Any]]:
    """{"dp1": ..., "dp3": ..., "dp10": ...}: ``model``'s settings at each target epsilon, the noise
    planned over ``steps`` (the same as their train defaults' max_steps: :func:`dp_train_defaults`)."""
    return {f"dp{e:g}": {**model, "epsilon": e, "dp_steps": steps} for e in DP_EPSILONS}


def dp_train_defaults(train: dict[str, Any], steps: int) -> dict[str, dict[str, Any]]:
    return {f"dp{e:g}": {**train, "max_steps": steps} for e in DP_EPSILONS}


class PrivacyLedger(nn.Module):
    """Opacus' RDP accountant for a DP-SGD run, kept in the state dict so a reload or a resume
    knows what was spent. The noise multiplier is set at the first step from the target
    (epsilon, delta), the sample rate (rows per batch / train rows) and the planned steps
    (Opacus' ``get_noise_multiplier``); every step adds its Renyi DP at each order, and the
    epsilon spent is the best conversion over the orders. A step that would spend more than the
    target is refused: the run stops at its planned steps.

    The accountant assumes Poisson sampling of the rows; the tasks draw fixed-size uniform
    batches, the approximation that DP-SGD libraries make too."""

    def __init__(self, epsilon: float, delta: float, planned_steps: int, rows: int, family: str):
        super().__init__()
        from opacus.accountants import RDPAccountant

        self.target, self.delta, self.planned, self.rows, self.family = epsilon, delta, planned_steps, rows, family
        self.orders = np.asarray(RDPAccountant.DEFAULT_ALPHAS, dtype=np.float64)
        self.register_buffer("noise_multiplier", torch.zeros((), dtype=torch.float64))
        self.register_buffer("sample_rate", torch.zeros((), dtype=torch.float64))
        self.register_buffer("rdp", torch.zeros(len(self.orders), dtype=torch.float64))
        self.register_buffer("steps", torch.zeros((), dtype=torch.long))
        self._step_rdp: dict[tuple[float, float], np.ndarray] = {}

    def step(self, batch_rows: int) -> float:
        """Account for one step over ``batch_rows`` sampled rows; returns the noise multiplier."""
        from opacus.accountants.analysis.rdp import compute_rdp
        from opacus.accountants.utils import get_noise_multiplier

        q = batch_rows / self.rows
        if q > 1:
            raise InvalidInput(f"{self.family} DP: a batch of {batch_rows} rows is more than the {self.rows} train rows; "
                               "lower --batch-size")
        if self.noise_multiplier.item() == 0:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # "optimal order is the largest alpha": see _epsilon
                sigma = get_noise_multiplier(target_epsilon=self.target, target_delta=self.delta, sample_rate=q,
                                             steps=self.planned, accountant="rdp")
            self.noise_multiplier.fill_(sigma)
            self.sample_rate.fill_(q)
        sigma = self.noise_multiplier.item()
        key = (sigma, q)
        if key not in self._step_rdp:
            self._step_rdp[key] = np.asarray(compute_rdp(q=q, noise_multiplier=sigma, steps=1, orders=self.orders))
        after = self.rdp.cpu().numpy() + self._step_rdp[key]
        spent = self._epsilon(after)
        if spent > self.target * (1 + 1e-9):
            raise InvalidInput(f"{self.family} DP: step {self.steps.item() + 1} would spend epsilon {spent:.3f}, past the "
                               f"target {self.target:g} planned over dp_steps={self.planned}; the run stops with the "
                               "weights it has: to train longer, start again with dp_steps set to the longer run")
        self.rdp.copy_(torch.from_numpy(after))
        self.steps += 1
        return sigma

    def _epsilon(self, rdp: np.ndarray) -> float:
        from opacus.accountants.analysis.rdp import get_privacy_spent

        if not rdp.any():
            return 0.0
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # "optimal order is the largest alpha": a looser bound, still a bound
            eps, _ = get_privacy_spent(orders=self.orders, rdp=rdp, delta=self.delta)
        return float(eps)

    def epsilon(self) -> float:
        """The epsilon spent so far (at this ledger's delta)."""
        return self._epsilon(self.rdp.cpu().numpy())

    def report(self) -> dict[str, float]:
        return {"epsilon": self.epsilon(), "delta": self.delta, "target_epsilon": self.target,
                "noise_multiplier": self.noise_multiplier.item(), "sample_rate": self.sample_rate.item(),
                "steps": int(self.steps.item()), "max_steps": self.planned}


def privacy_delta(delta: float, rows: int) -> float:
    """The configured delta, or 1 / (10 x train rows) for 0 (below 1 / n, as DP requires)."""
    return delta if delta > 0 else 1.0 / (10 * rows)


def per_example_gradients(loss: Callable[..., Tensor], params: dict[str, Tensor], *examples: Tensor,
                          randomness: str = "error", chunk_size: int | None = 128) -> dict[str, Tensor]:
    """{name: (B, *shape)}: the gradient of ``loss(params, *example)`` for each example (the
    examples' first axis is B), by ``torch.func`` (a gradient penalty's double backward included,
    which Opacus' hooks cannot take). ``chunk_size`` examples at a time bound the memory."""
    from torch.func import grad, vmap

    detached = {k: v.detach() for k, v in params.items()}
    return vmap(grad(loss), in_dims=(None,) + (0,) * len(examples), randomness=randomness,
                chunk_size=chunk_size)(detached, *examples)


def set_private_gradients(params: dict[str, Tensor], grads: dict[str, Tensor], max_grad_norm: float,
                          noise_multiplier: float) -> None:
    """DP-SGD's update direction into each parameter's ``.grad`` from per-example gradients
    ``grads`` {name: (B, *shape)}: every example's gradient clipped to ``max_grad_norm`` (over all
    parameters together), summed, noised (:func:`_noised_mean`)."""
    names = list(params)
    b = grads[names[0]].shape[0]
    norms = torch.stack([grads[k].reshape(b, -1).norm(dim=1) for k in names]).norm(dim=0)  # (B,)
    scale = (max_grad_norm / (norms + 1e-6)).clamp(max=1.0)
    for k in names:
        params[k].grad = _noised_mean(torch.einsum("b,b...->...", scale, grads[k]), b, max_grad_norm, noise_multiplier)


def set_private_gradients_ghost(model: nn.Module, row_losses: Callable[[], tuple[Tensor, dict[str, Tensor]]],
                                max_grad_norm: float, noise_multiplier: float) -> Tensor:
    """DP-SGD's update direction into ``.grad`` without materialising per-example gradients
    (ghost clipping, Li et al. 2022), for a model whose parameters are ``nn.Linear`` layers on
    (B, in) inputs plus parameters broadcast over the rows. ``row_losses()`` runs the forward and
    returns (the per-row losses (B,), {name: the row-wise expansion (B, *shape)} of each parameter
    it used outside a Linear layer). A Linear layer's per-row weight gradient is the outer product
    of its output gradient and its input, whose norm is the product of theirs; so one backward
    gives every row's gradient norm, and a second one, of the losses weighted by their clipping
    factors, the sum of the clipped gradients. Returns the losses."""
    captured: list[tuple[nn.Linear, Tensor, Tensor]] = []
    linears = [m for m in model.modules() if isinstance(m, nn.Linear)]
    hooks = [m.register_forward_hook(lambda mod, inp, out: captured.append((mod, inp[0], out))) for m in linears]
    try:
        losses, expanded = row_losses()
    finally:
        for h in hooks:
            h.remove()
    covered = {id(p) for m in linears for p in m.parameters()} | {id(getattr(model, k)) for k in expanded}
    uncovered = [k for k, p in model.named_parameters() if p.requires_grad and id(p) not in covered]
    if uncovered or any(a.ndim != 2 for _, a, _ in captured):
        raise RuntimeError(f"ghost clipping cannot bound the gradient of {uncovered or 'a Linear on 3-D input'}")
    b = len(losses)
    outs = [out for _, _, out in captured]
    grads = torch.autograd.grad(losses.sum(), outs + list(expanded.values()), retain_graph=True)
    sq = losses.new_zeros(b)
    for (mod, a, _), d in zip(captured, grads[: len(outs)]):
        sq = sq + d.square().sum(1) * (a.square().sum(1) + (1.0 if mod.bias is not None else 0.0))
    for g in grads[len(outs):]:
        sq = sq + g.reshape(b, -1).square().sum(1)
    scale = (max_grad_norm / (sq.sqrt() + 1e-6)).clamp(max=1.0).detach()
    params = [p for p in model.parameters() if p.requires_grad]
    summed = torch.autograd.grad((scale * losses).sum(), params, allow_unused=True)
    for p, g in zip(params, summed):
        p.grad = _noised_mean(torch.zeros_like(p) if g is None else g, b, max_grad_norm, noise_multiplier)
    return losses


def _noised_mean(summed: Tensor, batch: int, max_grad_norm: float, noise_multiplier: float) -> Tensor:
    """(sum of clipped gradients + N(0, (noise_multiplier * max_grad_norm)^2)) / batch, as Opacus'
    DPOptimizer; the noise from torch's global generator, which the loop seeds and resumes."""
    return (summed + torch.randn_like(summed) * (noise_multiplier * max_grad_norm)) / batch


# -- what the neural families share -------------------------------------------------------------

SAMPLE_CHUNK = 8192  # rows per network pass when sampling


@dataclass
class TableFamilyConfig:
    """The encoding and DP settings of every neural table family; its Config extends this."""

    max_modes: int = 10  # mixture modes per numerical column (DataTransformer)
    point_share: float = 0.05  # a value held by this share of a column's rows is a point mass of its own
    # differential privacy (DP-SGD): epsilon 0 = off
    epsilon: float = 0.0
    delta: float = 0.0  # 0 = 1 / (10 x train rows)
    max_grad_norm: float = 1.0  # each example's gradient is clipped to this norm
    dp_steps: int = 0  # the steps the noise is planned for: the run's max_steps (the dp presets set both)


class TableFamily(nn.Module):
    """The part of a neural table family (``ctgan``, ``tvae``) that is not its networks: the
    encoding and the train row count it was fitted on, the DP ledger when ``epsilon`` > 0, the
    positions of the encoded row's scalars and softmax spans, and drawing sampled rows from the
    networks' raw outputs. A family sets ``name``, ``Config`` (a :class:`TableFamilyConfig`) and
    ``check_config``."""

    name = "table"
    modality = "table"
    TRAINABLE = True
    DP = True

    @staticmethod
    def check_config(config: Any) -> None:
        raise NotImplementedError

    @classmethod
    def fit_encoding(cls, config: Any, frame: pd.DataFrame, specs: list[ColumnSpec], seed: int) -> dict:
        """The mode-specific normalisation of the train model frame, and its row count (for DP)."""
        cls.check_config(config)
        state = DataTransformer.fit(frame, specs, seed, max_modes=config.max_modes, point_share=config.point_share)
        return {"transformer": state, "rows": len(frame)}

    def __init__(self, config: Any, encoding: dict):
        super().__init__()
        self.check_config(config)
        self.config = config
        self.encoding = encoding
        self.transformer = DataTransformer.from_state(encoding["transformer"])
        self.rows = int(encoding["rows"])
        self.data_dim = self.transformer.dim
        self.privacy_ledger = None
        if config.epsilon > 0:
            self.privacy_ledger = PrivacyLedger(config.epsilon, privacy_delta(config.delta, self.rows),
                                                config.dp_steps, self.rows, self.name)
        spans = self.transformer.output_info
        soft = [s for s in spans if s.activation == "softmax"]
        soft_pos, soft_seg = softmax_segments(soft)
        self.n_soft = len(soft)
        # index tensors, rebuilt from the encoding (not saved)
        scalar_pos = torch.tensor([s.start for s in spans if s.activation == "tanh"], dtype=torch.long)
        self.register_buffer("scalar_pos", scalar_pos, persistent=False)
        self.register_buffer("soft_pos", soft_pos, persistent=False)
        self.register_buffer("soft_seg", soft_seg, persistent=False)

    def encode(self, frame: pd.DataFrame) -> Tensor:
        """Model-frame rows -> (N, D) float32."""
        return torch.from_numpy(self.transformer.transform(frame))

    def config_dict(self) -> dict:
        return asdict(self.config)

    def privacy(self) -> dict[str, float] | None:
        """The DP account of this model (epsilon spent, delta, noise, steps), or None without DP."""
        return None if self.privacy_ledger is None else self.privacy_ledger.report()

    def check_rows(self, x: Tensor) -> None:
        if x.ndim != 2 or x.shape[1] != self.data_dim:
            raise InvalidInput(f"{self.name} expects encoded rows of shape (B, {self.data_dim}), got {tuple(x.shape)}")

    def draw_rows(self, raw: Tensor, generator: torch.Generator | None, scalar_noise: Tensor | None = None) -> Tensor:
        """Raw network outputs (B, D) -> sampled encoded rows: tanh scalars (+ ``scalar_noise``),
        one value per softmax span drawn from its softmax (the argmax of the logits + Gumbel noise)."""
        rows = torch.empty_like(raw)
        scalars = torch.tanh(raw[:, self.scalar_pos])
        rows[:, self.scalar_pos] = scalars if scalar_noise is None else scalars + scalar_noise
        logits = raw[:, self.soft_pos]
        rows[:, self.soft_pos] = segment_one_hot(logits + gumbel(tuple(logits.shape), raw.device, generator),
                                                 self.soft_seg, self.n_soft)
        return rows

    @staticmethod
    def in_chunks(n: int, dim: int, rows: Callable[[int], Tensor]) -> np.ndarray:
        """(n, dim) float32 from ``rows(m)`` called on chunks of at most SAMPLE_CHUNK rows."""
        chunks = [rows(min(SAMPLE_CHUNK, n - start)) for start in range(0, n, SAMPLE_CHUNK)]
        if not chunks:
            return np.zeros((0, dim), dtype=np.float32)
        return torch.cat(chunks).float().cpu().numpy()


def check_family_config(family: str, config: TableFamilyConfig) -> None:
    """The fields of :class:`TableFamilyConfig`."""
    if config.max_modes < 1:
        raise InvalidInput(f"{family} max_modes must be >= 1, got {config.max_modes}")
    if not 0 < config.point_share <= 1:
        raise InvalidInput(f"{family} point_share must be in (0, 1], got {config.point_share}")
    check_privacy(family, config.epsilon, config.delta, config.max_grad_norm, config.dp_steps)
