"""Fidelity, utility and privacy of a synthetic table against the real one (issue 14).

Pure functions over pandas frames (numpy, pandas, scipy, scikit-learn; no torch, no model code).
``real``/``train`` is the split a generator learned from, ``holdout`` real rows it never saw (the
test split), ``synth`` the synthetic rows. Frames may be stored frames or model frames: only the
*modelled* columns count (id, text and pii columns are ignored), and which of them are numerical
or categorical comes from ``meta``, either an ``aigc.data.tables.TableMetadata`` (duck-typed:
``meta.modelled()`` gives columns with ``.name`` and ``.kind``) or a plain dict
``{column: "numerical" | "categorical"}`` (``"datetime"``, ``"boolean"``, ``"continuous"`` and
``"discrete"`` are accepted too). Datetime columns given as strings become epoch seconds.

Public API (every figure in [0, 1] unless stated; higher is better unless stated):

- ``column_types(meta) -> {column: "numerical" | "categorical"}``
- ``column_values(frame, meta) -> {column: array}``: float64 with NaN, or object str/None
- ``column_shapes(real, synth, meta) -> {column: score}``: KSComplement / TVComplement
- ``column_pair_trends(real, synth, meta) -> {(a, b): score}``: CorrelationSimilarity (Pearson)
  for two numerical columns, ContingencySimilarity otherwise
- ``association_matrix(frame, meta) -> (columns, matrix)``: Pearson r between numerical columns,
  Cramér's V otherwise (numerical columns binned as below); the report's heat maps
- ``quality(real, synth, meta) -> dict``: SDMetrics 0.32's QualityReport
- ``diagnostic(real, synth, meta) -> dict``: validity of the synthetic rows
- ``detection(real, synth, meta, seed=0) -> float``: SDMetrics' LogisticDetection
- ``tstr(train, synth, holdout, meta, target, seed=0) -> dict``: train-synthetic-test-real
- ``dcr(a, b, meta) -> array``: distance of each row of ``a`` to its closest row of ``b``
- ``privacy(train, synth, holdout, meta, seed=0, ...) -> dict``: each figure with its reference

The fidelity and DCR formulas are SDMetrics 0.32.0's (read from its source; ``tests/
test_table_metrics.py`` checks ours against it). Deliberate differences, all documented where
they happen: SDMetrics subsamples contingency pairs above 50,000 rows without a seed (we use every
row); detection follows the metadata's column types (SDMetrics one-hot encodes by dtype and drops
boolean columns), one-hot encodes an unseen synthetic category as all zeros (SDMetrics fails),
keeps at most 100 one-hot columns per column (categories under 1% of the real rows share one
when there are more) and subsamples to ``max_rows`` (seeded); DCRs are
computed in float32 (errors below 1e-6).
"""

from __future__ import annotations

import itertools
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from aigc.errors import InvalidInput

NUMERICAL = "numerical"
CATEGORICAL = "categorical"
_NUMERICAL_KINDS = ("numerical", "continuous", "discrete", "datetime")
_CATEGORICAL_KINDS = ("categorical", "boolean")
_MAX_DECIMALS = 14  # SDMetrics' KSComplement rounds to sys.float_info.dig - 1 decimals
_CHUNK = 1 << 20  # distance-matrix elements per chunk (4 MB of float32)


# ----------------------------------------------------------------------------- columns


@dataclass
class _Schema:
    """What the metrics need to know of a table, from a TableMetadata or a plain dict."""

    types: dict[str, str]  # modelled column -> NUMERICAL | CATEGORICAL, in table order
    formats: dict[str, str | None] = field(default_factory=dict)  # datetime columns -> strftime format
    bounds: dict[str, tuple[float | None, float | None]] = field(default_factory=dict)
    categories: dict[str, set[str]] = field(default_factory=dict)
    nullable: dict[str, bool] = field(default_factory=dict)  # declared missing share > 0
    primary_key: str | None = None
    constraints: list[dict] = field(default_factory=list)
    quasi_identifiers: list[str] = field(default_factory=list)
    target: str | None = None


def _schema(meta: Any) -> _Schema:
    if isinstance(meta, _Schema):
        return meta
    if isinstance(meta, Mapping):
        types, formats = {}, {}
        for name, kind in meta.items():
            kind_s = str(kind).lower()
            if kind_s in _NUMERICAL_KINDS:
                types[str(name)] = NUMERICAL
                if kind_s == "datetime":
                    formats[str(name)] = None
            elif kind_s in _CATEGORICAL_KINDS:
                types[str(name)] = CATEGORICAL
            else:
                raise InvalidInput(
                    f"column {name!r} has type {kind!r}: a column-type dict maps each column to "
                    f"'numerical' or 'categorical' (or one of {_NUMERICAL_KINDS + _CATEGORICAL_KINDS})")
        schema = _Schema(types, formats)
    elif callable(getattr(meta, "modelled", None)):
        schema = _Schema({})
        for col in meta.modelled():
            if col.kind in _NUMERICAL_KINDS:
                schema.types[col.name] = NUMERICAL
                schema.bounds[col.name] = (getattr(col, "min", None), getattr(col, "max", None))
                if col.kind == "datetime":
                    schema.formats[col.name] = getattr(col, "datetime_format", None)
            elif col.kind in _CATEGORICAL_KINDS:
                schema.types[col.name] = CATEGORICAL
                schema.categories[col.name] = {str(c) for c in (getattr(col, "categories", None) or {})}
            schema.nullable[col.name] = (getattr(col, "missing", 0.0) or 0.0) > 0
        schema.primary_key = getattr(meta, "primary_key", None)
        schema.constraints = list(getattr(meta, "constraints", None) or [])
        schema.quasi_identifiers = list(getattr(meta, "quasi_identifiers", None) or [])
        schema.target = getattr(meta, "target", None)
    else:
        raise InvalidInput(
            f"table metadata of type {type(meta).__name__}: pass a TableMetadata "
            "(aigc.data.tables) or a dict {column: 'numerical' | 'categorical'}")
    if not schema.types:
        raise InvalidInput("the table has no modelled column (numerical or categorical): "
                           "there is nothing to compare; check the metadata's column kinds")
    return schema


def column_types(meta: Any) -> dict[str, str]:
    """``{column: "numerical" | "categorical"}`` for the modelled columns of ``meta``, in order."""
    return dict(_schema(meta).types)


def _label(value: Any) -> str:
    if isinstance(value, (float, np.floating)) and float(value).is_integer():
        return str(int(value))  # 3.0 (an int column with missing values) and 3 are one category
    return str(value)


def _labels(s: pd.Series) -> np.ndarray:
    """A column as an object array of str, None where missing."""
    codes, uniques = pd.factorize(s, use_na_sentinel=True)
    names = np.array([_label(u) for u in uniques] + [None], dtype=object)
    return names[codes]  # code -1 (missing) takes the last entry, None


def _numbers(s: pd.Series, datetime_format: str | None = None, datetime: bool = False) -> np.ndarray:
    """A column as float64 (NaN where missing; datetimes as seconds since the epoch)."""
    if pd.api.types.is_datetime64_any_dtype(s):
        dt = pd.to_datetime(s, utc=True)
        return (dt - pd.Timestamp(0, tz="UTC")).dt.total_seconds().to_numpy(np.float64)
    if pd.api.types.is_bool_dtype(s) or pd.api.types.is_numeric_dtype(s):
        return s.to_numpy(np.float64, na_value=np.nan)
    if not datetime:
        num = pd.to_numeric(s, errors="coerce")
        if num.notna().sum() == s.notna().sum():
            return num.to_numpy(np.float64, na_value=np.nan)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        dt = pd.to_datetime(s, format=datetime_format or "mixed", errors="coerce", utc=True)
    if not datetime and dt.notna().sum() < s.notna().sum():  # neither numbers nor dates: numbers
        return pd.to_numeric(s, errors="coerce").to_numpy(np.float64, na_value=np.nan)
    return (dt - pd.Timestamp(0, tz="UTC")).dt.total_seconds().to_numpy(np.float64)


def _prepare(frame: pd.DataFrame, schema: _Schema, what: str) -> dict[str, np.ndarray]:
    if not isinstance(frame, pd.DataFrame):
        raise InvalidInput(f"the {what} table is a {type(frame).__name__}: pass a pandas DataFrame")
    missing = [c for c in schema.types if c not in frame.columns]
    if missing:
        raise InvalidInput(f"the {what} table lacks column(s) {missing[:5]}: every table compared "
                           f"must have the modelled columns {list(schema.types)[:10]}")
    if len(frame) == 0:
        raise InvalidInput(f"the {what} table has no rows: metrics need at least one row")
    out = {}
    for name, typ in schema.types.items():
        if typ == NUMERICAL:
            out[name] = _numbers(frame[name], schema.formats.get(name), name in schema.formats)
        else:
            out[name] = _labels(frame[name])
    return out


def column_values(frame: pd.DataFrame, meta: Any) -> dict[str, np.ndarray]:
    """Each modelled column of ``frame``: float64 with NaN for missing (numerical; datetimes in
    seconds since the epoch) or an object array of str with None for missing (categorical)."""
    return _prepare(frame, _schema(meta), "given")


def _codes(*arrays: np.ndarray) -> tuple[list[np.ndarray], int]:
    """Shared integer codes of label arrays; missing (None) is a value of its own (the last code)."""
    codes, uniques = pd.factorize(np.concatenate(arrays), use_na_sentinel=True)
    size = len(uniques) + 1
    codes = np.where(codes < 0, size - 1, codes)
    out, start = [], 0
    for a in arrays:
        out.append(codes[start:start + len(a)])
        start += len(a)
    return out, size


def _nanmean(values) -> float:
    arr = np.asarray([v for v in values if v is not None], dtype=np.float64)
    arr = arr[~np.isnan(arr)]
    return float(arr.mean()) if len(arr) else float("nan")


# ----------------------------------------------------------------------------- fidelity


def _ks_complement(real: np.ndarray, synth: np.ndarray) -> float:
    """1 - the two-sample Kolmogorov-Smirnov statistic (scipy's ks_2samp D), missing dropped."""
    r = np.sort(np.round(real[~np.isnan(real)], _MAX_DECIMALS))
    s = np.sort(np.round(synth[~np.isnan(synth)], _MAX_DECIMALS))
    if len(r) == 0 or len(s) == 0:
        return float("nan")
    both = np.concatenate([r, s])
    cdf_r = np.searchsorted(r, both, side="right") / len(r)
    cdf_s = np.searchsorted(s, both, side="right") / len(s)
    return float(1.0 - np.max(np.abs(cdf_r - cdf_s)))


def _tv_complement(real: np.ndarray, synth: np.ndarray) -> float:
    """1 - total variation distance of the category frequencies, missing dropped.

    As SDMetrics' ``get_frequencies``: a category only the synthetic data has counts 1e-6 in the
    real data (its regularisation), which shifts the real frequencies by about 1e-6."""
    r = real[pd.notna(real)]
    s = synth[pd.notna(synth)]
    if len(r) == 0 or len(s) == 0:
        return float("nan")
    (rc, sc), size = _codes(r, s)
    r_counts = np.bincount(rc, minlength=size).astype(np.float64)
    s_counts = np.bincount(sc, minlength=size).astype(np.float64)
    r_counts[(r_counts == 0) & (s_counts > 0)] += 1e-6
    keep = r_counts > 0
    f_exp = r_counts[keep] / r_counts.sum()
    f_obs = s_counts[keep] / s_counts.sum()
    return float(1.0 - 0.5 * np.abs(f_obs - f_exp).sum())


def _shapes(r: dict, s: dict, schema: _Schema) -> dict[str, float]:
    return {name: (_ks_complement if typ == NUMERICAL else _tv_complement)(r[name], s[name])
            for name, typ in schema.types.items()}


def column_shapes(real: pd.DataFrame, synth: pd.DataFrame, meta: Any) -> dict[str, float]:
    """Per modelled column: KSComplement (numerical, datetime) or TVComplement (categorical,
    boolean), as SDMetrics defines them: missing values are dropped from both sides first; a
    column with no value left on one side scores NaN (left out of averages)."""
    schema = _schema(meta)
    return _shapes(_prepare(real, schema, "real"), _prepare(synth, schema, "synthetic"), schema)


def _bins(x: np.ndarray) -> np.ndarray:
    """SDMetrics' QualityReport discretisation: ``np.digitize(x, np.histogram_bin_edges(x))`` with
    10 equal-width bins over the frame's own values (real and synthetic are binned separately).
    Codes run 0..11; a missing value lands in 11, together with the maximum."""
    edges = np.histogram_bin_edges(x[~np.isnan(x)])
    return np.searchsorted(edges, x, side="right")  # = np.digitize for increasing edges


def _pearson(x: np.ndarray, y: np.ndarray) -> float:
    ok = ~(np.isnan(x) | np.isnan(y))
    x, y = x[ok], y[ok]
    if len(x) < 2:
        return float("nan")
    xm, ym = x - x.mean(), y - y.mean()
    den = np.sqrt((xm * xm).sum()) * np.sqrt((ym * ym).sum())
    if den == 0:
        return float("nan")
    return float(np.clip((xm * ym).sum() / den, -1.0, 1.0))


def _constant(x: np.ndarray) -> bool:
    """SDMetrics refuses a correlation when a column has exactly one distinct non-missing value."""
    return len(np.unique(x[~np.isnan(x)])) == 1


class _Joint:
    """The joint counts of two coded columns, sparse: the cells that occur, with their counts."""

    def __init__(self, x: np.ndarray, y: np.ndarray, size_y: int):
        self.size_y = size_y
        self.keys, self.counts = np.unique(x.astype(np.int64) * size_y + y, return_counts=True)
        self.n = int(self.counts.sum())

    def tv_complement(self, other: _Joint) -> float:
        """ContingencySimilarity: 1 - half the L1 distance of the two joint frequency tables."""
        keys = np.union1d(self.keys, other.keys)
        p, q = np.zeros(len(keys)), np.zeros(len(keys))
        p[np.searchsorted(keys, self.keys)] = self.counts / self.n
        q[np.searchsorted(keys, other.keys)] = other.counts / other.n
        return float(1.0 - 0.5 * np.abs(p - q).sum())

    def cramers_v(self) -> float:
        """Cramér's V of the table (scipy's ``association(method="cramer")`` without correction),
        over the values that occur: ``chi2 = n * (sum n_ij^2 / (r_i c_j) - 1)``."""
        _, row = np.unique(self.keys // self.size_y, return_inverse=True)
        _, col = np.unique(self.keys % self.size_y, return_inverse=True)
        k = min(row.max(initial=-1), col.max(initial=-1)) + 1
        if self.n == 0 or k < 2:
            return float("nan")
        c = self.counts.astype(np.float64)
        r_tot, c_tot = np.bincount(row, weights=c), np.bincount(col, weights=c)
        phi2 = float((c * c / (r_tot[row] * c_tot[col])).sum()) - 1.0
        return float(np.sqrt(max(phi2, 0.0) / (k - 1)))


class _PairData:
    """A frame's columns as the pair metrics see them: numbers, bin codes, shared label codes."""

    def __init__(self, values: dict, schema: _Schema, label_codes: dict[str, np.ndarray],
                 sizes: dict[str, int]):
        self.numbers = {n: values[n] for n, t in schema.types.items() if t == NUMERICAL}
        self.discrete = {n: _bins(v) for n, v in self.numbers.items()}
        self.discrete.update(label_codes)
        self.sizes = {n: 12 for n in self.numbers} | sizes

    def joint(self, a: str, b: str) -> _Joint:
        return _Joint(self.discrete[a], self.discrete[b], self.sizes[b])


def _pair_data(r: dict, s: dict, schema: _Schema) -> tuple[_PairData, _PairData]:
    r_codes, s_codes, sizes = {}, {}, {}
    for name, typ in schema.types.items():
        if typ == CATEGORICAL:
            (r_codes[name], s_codes[name]), sizes[name] = _codes(r[name], s[name])
    return _PairData(r, schema, r_codes, sizes), _PairData(s, schema, s_codes, sizes)


def _pairs(r: dict, s: dict, schema: _Schema, correlation_threshold: float,
           association_threshold: float) -> list[dict]:
    """One record per column pair: metric, score, real and synthetic association, and whether it
    counts towards the trends score under SDMetrics 0.32's thresholds."""
    rd, sd = _pair_data(r, s, schema)
    records = []
    for a, b in itertools.combinations(schema.types, 2):
        if schema.types[a] == NUMERICAL and schema.types[b] == NUMERICAL:
            if any(_constant(d.numbers[c]) for d in (rd, sd) for c in (a, b)):
                real_r = synth_r = score = float("nan")
            else:
                real_r = _pearson(rd.numbers[a], rd.numbers[b])
                synth_r = _pearson(sd.numbers[a], sd.numbers[b])
                score = 1 - abs(real_r - synth_r) / 2  # NaN if either is NaN
            counted = not np.isnan(real_r) and abs(real_r) > correlation_threshold
            records.append({"columns": (a, b), "metric": "CorrelationSimilarity", "score": score,
                            "real": real_r, "synthetic": synth_r, "counted": bool(counted)})
        else:
            real_joint, synth_joint = rd.joint(a, b), sd.joint(a, b)
            score = real_joint.tv_complement(synth_joint)
            real_v, synth_v = real_joint.cramers_v(), synth_joint.cramers_v()
            counted = (association_threshold <= 0
                       or (not np.isnan(real_v) and real_v > association_threshold))
            records.append({"columns": (a, b), "metric": "ContingencySimilarity",
                            "score": float(score), "real": real_v, "synthetic": synth_v,
                            "counted": bool(counted)})
    return records


def column_pair_trends(real: pd.DataFrame, synth: pd.DataFrame, meta: Any) -> dict[tuple[str, str], float]:
    """Per column pair (table order): CorrelationSimilarity, ``1 - |r_real - r_synth| / 2`` with
    Pearson's r over rows where both are present, for two numerical/datetime columns (NaN when a
    column is constant); ContingencySimilarity, ``1 - TV`` of the joint frequencies with missing
    as a value of its own, otherwise, numerical columns binned as SDMetrics' QualityReport bins
    them (see ``_bins``). Every pair is scored here; ``quality`` applies the thresholds."""
    schema = _schema(meta)
    r, s = _prepare(real, schema, "real"), _prepare(synth, schema, "synthetic")
    return {rec["columns"]: rec["score"] for rec in _pairs(r, s, schema, 0.0, 0.0)}


def association_matrix(frame: pd.DataFrame, meta: Any) -> tuple[list[str], np.ndarray]:
    """The column-pair association matrix of one table: Pearson's r (-1..1) between two numerical
    columns, Cramér's V (0..1) otherwise (numerical columns binned as in the trends), 1 on the
    diagonal, NaN where undefined (a constant column)."""
    schema = _schema(meta)
    values = _prepare(frame, schema, "given")
    codes, sizes = {}, {}
    for name, typ in schema.types.items():
        if typ == CATEGORICAL:
            (codes[name],), sizes[name] = _codes(values[name])
    data = _PairData(values, schema, codes, sizes)
    names = list(schema.types)
    matrix = np.eye(len(names))
    for i, j in itertools.combinations(range(len(names)), 2):
        a, b = names[i], names[j]
        if schema.types[a] == NUMERICAL and schema.types[b] == NUMERICAL:
            v = _pearson(data.numbers[a], data.numbers[b])
        else:
            v = data.joint(a, b).cramers_v()
        matrix[i, j] = matrix[j, i] = v
    return names, matrix


def quality(real: pd.DataFrame, synth: pd.DataFrame, meta: Any, correlation_threshold: float = 0.5,
            association_threshold: float = 0.3) -> dict:
    """SDMetrics 0.32's single-table QualityReport.

    ``shapes`` is the mean of the column shapes; ``trends`` the mean pair score over the pairs
    whose *real* association passes SDMetrics 0.32's defaults (|Pearson r| > 0.5 for two
    numerical columns, Cramér's V > 0.3 otherwise; 0 counts every pair); ``score`` the mean of the
    two (just ``shapes`` when no pair passes). ``trends_all`` is the mean over every pair (what
    SDMetrics reported before 0.3x). Returns ``{"score", "shapes", "trends", "trends_all",
    "per_column": {column: score}, "pairs": [{"columns", "metric", "score", "real", "synthetic",
    "counted"}], "worst_pairs": the five lowest-scoring counted pairs}``.
    """
    schema = _schema(meta)
    r, s = _prepare(real, schema, "real"), _prepare(synth, schema, "synthetic")
    per_column = _shapes(r, s, schema)
    pairs = _pairs(r, s, schema, correlation_threshold, association_threshold)
    shapes = _nanmean(per_column.values())
    trends = _nanmean(p["score"] for p in pairs if p["counted"])
    for p in pairs:
        p["columns"] = list(p["columns"])
    scored = sorted((p for p in pairs if p["counted"] and not np.isnan(p["score"])),
                    key=lambda p: p["score"])
    return {
        "score": _nanmean([shapes, trends]),
        "shapes": shapes,
        "trends": trends,
        "trends_all": _nanmean(p["score"] for p in pairs),
        "per_column": per_column,
        "pairs": pairs,
        "worst_pairs": scored[:5],
        "thresholds": {"correlation": correlation_threshold, "association": association_threshold},
    }


# ----------------------------------------------------------------------------- diagnostic


def diagnostic(real: pd.DataFrame, synth: pd.DataFrame, meta: Any) -> dict:
    """Validity of the synthetic rows.

    Per column (SDMetrics' BoundaryAdherence / CategoryAdherence / KeyUniqueness): a numerical
    value must lie within the real range (the real data's min..max, widened to the metadata's
    declared min/max when given), a categorical value must be a known category (seen in the real
    data or declared in the metadata), a missing value is valid only where the real column (or
    the metadata) has missing values; the declared primary key, when the synthetic table has it,
    must be present and unique (the first of duplicates counts as valid). ``validity`` is the
    share of synthetic rows that pass every check. Declared constraints (range, inequality
    ``low <= high``, fixed combinations seen in the real data) are checked apart, in
    ``constraints`` and ``constraint_validity``.

    Returns ``{"validity", "rows", "checks": {column: {"check", "score"}}, "constraints":
    {description: score}, "constraint_validity"}``.
    """
    schema = _schema(meta)
    r, s = _prepare(real, schema, "real"), _prepare(synth, schema, "synthetic")
    n = len(synth)
    row_ok = np.ones(n, dtype=bool)
    checks = {}
    for name, typ in schema.types.items():
        x = s[name]
        if typ == NUMERICAL:
            real_x = r[name]
            lo, hi = np.nanmin(real_x, initial=np.inf), np.nanmax(real_x, initial=-np.inf)
            d_lo, d_hi = schema.bounds.get(name, (None, None))
            lo = min(lo, d_lo) if d_lo is not None else lo
            hi = max(hi, d_hi) if d_hi is not None else hi
            missing = np.isnan(x)
            ok = ~missing & (x >= lo) & (x <= hi)
            unparsed = missing & synth[name].notna().to_numpy()  # a value that is no number
            nullable = bool(np.isnan(real_x).any()) or schema.nullable.get(name, False)
            ok |= missing & ~unparsed & nullable
            check = "range"
        else:
            known = set(r[name][pd.notna(r[name])]) | schema.categories.get(name, set())
            missing = pd.isna(x)
            ok = pd.Series(x, dtype=object).isin(list(known)).to_numpy() & ~missing
            nullable = bool(pd.isna(r[name]).any()) or schema.nullable.get(name, False)
            ok |= missing & nullable
            check = "category"
        checks[name] = {"check": check, "score": float(ok.mean())}
        row_ok &= ok
    key = schema.primary_key
    if key and key in synth.columns:
        ok = (synth[key].notna() & ~synth[key].duplicated()).to_numpy()
        checks[key] = {"check": "key", "score": float(ok.mean())}
        row_ok &= ok
    constraints, constraint_ok = _constraints(real, synth, schema)
    return {
        "validity": float(row_ok.mean()),
        "rows": n,
        "checks": checks,
        "constraints": constraints,
        "constraint_validity": float(constraint_ok.mean()) if constraints else None,
    }


def _constraint_column(frame: pd.DataFrame, schema: _Schema, name: str) -> np.ndarray:
    if name not in frame.columns:
        raise InvalidInput(f"a constraint names column {name!r}, which the table does not have: "
                           "fix the metadata's constraints")
    return _numbers(frame[name], schema.formats.get(name), name in schema.formats)


def _constraints(real: pd.DataFrame, synth: pd.DataFrame, schema: _Schema) -> tuple[dict, np.ndarray]:
    out, all_ok = {}, np.ones(len(synth), dtype=bool)
    for c in schema.constraints:
        kind = c.get("type")
        if kind == "range":
            x = _constraint_column(synth, schema, c["column"])
            ok = np.isnan(x) | ((x >= c.get("low", -np.inf)) & (x <= c.get("high", np.inf)))
            desc = f"range {c.get('low')} <= {c['column']} <= {c.get('high')}"
        elif kind == "inequality":
            lo = _constraint_column(synth, schema, c["low"])
            hi = _constraint_column(synth, schema, c["high"])
            ok = np.isnan(lo) | np.isnan(hi) | (lo <= hi)
            desc = f"inequality {c['low']} <= {c['high']}"
        elif kind == "fixed_combinations":
            cols = list(c["columns"])
            for col in cols:
                if col not in real.columns or col not in synth.columns:
                    raise InvalidInput(f"a constraint names column {col!r}, which the table does "
                                       "not have: fix the metadata's constraints")
            seen = _row_hashes({k: _labels(real[k]) for k in cols})
            ok = np.isin(_row_hashes({k: _labels(synth[k]) for k in cols}), seen)
            desc = "fixed combinations of " + ", ".join(cols)
        else:
            continue  # a constraint type this report does not know is not scored
        out[desc] = float(ok.mean())
        all_ok &= ok
    return out, all_ok


# ----------------------------------------------------------------------------- detection


def _subsample(values: dict, n: int, rng: np.random.Generator) -> dict:
    rows = len(next(iter(values.values())))
    if rows <= n:
        return values
    idx = np.sort(rng.choice(rows, n, replace=False))
    return {k: v[idx] for k, v in values.items()}


_MAX_ONEHOT = 100  # detection: one-hot columns per categorical column at most


def _detection_features(r: dict, s: dict, schema: _Schema) -> np.ndarray:
    """SDMetrics' HyperTransformer, fitted on the real rows: numerical columns (in table order)
    with missing values filled by the real mean, then each categorical column one-hot over the
    real categories (missing is a category; an unseen synthetic category is all zeros). A column
    of more than 100 real categories keeps those that hold at least 1% of the real rows (99 at
    most); the rest, and unseen ones, share one column: a classifier would otherwise tell real
    rows by the rare categories only the real sample happens to have."""
    blocks = []
    for name, typ in schema.types.items():
        if typ == NUMERICAL:
            x = np.concatenate([r[name], s[name]])
            mean = np.nanmean(r[name]) if (~np.isnan(r[name])).any() else np.nan
            blocks.append(np.where(np.isnan(x), mean, x)[:, None])
    for name, typ in schema.types.items():
        if typ == CATEGORICAL:
            (rc, sc), size = _codes(r[name], s[name])
            counts = np.bincount(rc, minlength=size)
            cats = np.flatnonzero(counts)
            lookup = np.full(size, -1)
            lookup[cats] = np.arange(len(cats))
            if len(cats) > _MAX_ONEHOT:  # rare and unseen categories share the last column
                order = cats[np.argsort(-counts[cats], kind="stable")][:_MAX_ONEHOT - 1]
                order = order[counts[order] >= len(rc) / _MAX_ONEHOT]
                lookup[:] = len(order)
                lookup[order] = np.arange(len(order))
                cats = cats[:len(order) + 1]
            col = lookup[np.concatenate([rc, sc])]
            onehot = np.zeros((len(col), len(cats)))
            hit = col >= 0
            onehot[np.flatnonzero(hit), col[hit]] = 1.0
            blocks.append(onehot)
    return np.hstack(blocks)


def detection(real: pd.DataFrame, synth: pd.DataFrame, meta: Any, seed: int = 0,
              max_rows: int = 10_000) -> float:
    """SDMetrics' LogisticDetection: ``1 - mean over 3 stratified folds of (2 * max(AUC, 0.5) - 1)``
    for a logistic regression (lbfgs, mean imputation, robust scaling) told to separate real rows
    from synthetic ones. 1 = indistinguishable. Each side is subsampled to ``max_rows`` rows and
    the folds are shuffled with ``seed``."""
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.impute import SimpleImputer
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import roc_auc_score
    from sklearn.model_selection import StratifiedKFold
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import RobustScaler

    schema = _schema(meta)
    rng = np.random.default_rng(seed)
    r = _subsample(_prepare(real, schema, "real"), max_rows, rng)
    s = _subsample(_prepare(synth, schema, "synthetic"), max_rows, rng)
    n_real = len(next(iter(r.values())))
    n_synth = len(next(iter(s.values())))
    if min(n_real, n_synth) < 3:
        raise InvalidInput(f"detection needs at least 3 real and 3 synthetic rows (got {n_real} "
                           f"and {n_synth}): it cross-validates over 3 folds")
    x = _detection_features(r, s, schema)
    y = np.concatenate([np.ones(n_real), np.zeros(n_synth)])
    scores = []
    folds = StratifiedKFold(n_splits=3, shuffle=True, random_state=seed)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        for train_idx, test_idx in folds.split(x, y):
            model = Pipeline([("imputer", SimpleImputer()), ("scaler", RobustScaler()),
                              ("classifier", LogisticRegression(solver="lbfgs"))])
            model.fit(x[train_idx], y[train_idx])
            auc = roc_auc_score(y[test_idx], model.predict_proba(x[test_idx])[:, 1])
            scores.append(max(0.5, auc) * 2 - 1)
    return float(1 - np.mean(scores))


# ----------------------------------------------------------------------------- utility

_MAX_CATEGORIES = 250  # HistGradientBoosting's native categories must stay below max_bins (255)


def _tstr_features(values: dict, features: list[str], schema: _Schema,
                   categories: dict[str, dict[str, int]]) -> np.ndarray:
    cols = []
    for name in features:
        if schema.types[name] == NUMERICAL:
            cols.append(values[name])
        else:
            cols.append(pd.Series(values[name], dtype=object).map(categories[name])
                        .to_numpy(np.float64, na_value=np.nan))
    return np.column_stack(cols) if cols else np.zeros((len(next(iter(values.values()))), 0))


def _classification_scores(model, x: np.ndarray, y: np.ndarray, classes: list[str], positive: str,
                           constant: str | None = None) -> dict:
    """AUC, macro-F1 and accuracy on the holdout; probabilities of classes the real train lacks
    are dropped, a one-class (``constant``) predictor ranks nothing (AUC 0.5)."""
    from sklearn.metrics import accuracy_score, f1_score, roc_auc_score

    y = y.astype(str)
    if model is None:
        pred = np.full(len(y), constant, dtype=object).astype(str)
        auc = 0.5
    else:
        raw = model.predict_proba(x)
        proba = np.zeros((len(y), len(classes)))
        for j, c in enumerate(model.classes_):
            if c in classes:
                proba[:, classes.index(c)] = raw[:, j]
        pred = np.asarray(model.classes_, dtype=object)[raw.argmax(axis=1)].astype(str)
        present = [c for c in classes if (y == c).any() and not (y == c).all()]
        if len(classes) == 2:
            auc = (float(roc_auc_score(y == positive, proba[:, classes.index(positive)]))
                   if positive in present else float("nan"))
        else:  # macro one-vs-rest over the classes the holdout has
            aucs = [roc_auc_score(y == c, proba[:, classes.index(c)]) for c in present]
            auc = float(np.mean(aucs)) if aucs else float("nan")
    return {"auc": float(auc), "f1_macro": float(f1_score(y, pred, average="macro")),
            "accuracy": float(accuracy_score(y, pred))}


def tstr(train: pd.DataFrame, synth: pd.DataFrame, holdout: pd.DataFrame, meta: Any,
         target: str | None = None, seed: int = 0) -> dict:
    """Train on synthetic, test on real, next to train on real, test on real.

    The same fixed model is trained once on ``train`` (TRTR) and once on ``synth`` (TSTR) and
    scored on ``holdout``: scikit-learn's HistGradientBoostingClassifier (or Regressor for a
    numerical target) with 100 iterations, learning rate 0.1, 31 leaves, no early stopping,
    ``random_state=seed``; categorical features are coded by the real train's categories (the
    250 most frequent; others and missing values are missing) the same way for all three sets.
    Rows whose target is missing are dropped. A categorical target gives ``auc`` (binary: of the
    positive class, the minority class of the real train; multiclass: macro one-vs-rest over the
    classes the holdout has), ``f1_macro`` and ``accuracy``; a numerical one gives ``r2``.

    Returns ``{"target", "task", "positive", "trtr": {...}, "tstr": {...}}``.
    """
    from sklearn.ensemble import HistGradientBoostingClassifier, HistGradientBoostingRegressor
    from sklearn.metrics import r2_score

    schema = _schema(meta)
    target = target or schema.target
    if not target or target not in schema.types:
        raise InvalidInput(f"TSTR target {target!r} is not a modelled column of the table: pick "
                           f"one of {list(schema.types)[:20]}")
    sets = {}
    for what, frame in (("real train", train), ("synthetic", synth), ("holdout", holdout)):
        values = _prepare(frame, schema, what)
        keep = pd.notna(values[target]) if schema.types[target] == CATEGORICAL else ~np.isnan(values[target])
        if not keep.any():
            raise InvalidInput(f"TSTR target {target!r} is missing in every row of the {what} "
                               "table: pick a column with values")
        sets[what] = {k: v[keep] for k, v in values.items()}
    features = [c for c in schema.types if c != target]
    if not features:
        raise InvalidInput(f"TSTR needs at least one column besides the target {target!r}")
    categories = {}
    for name in features:
        if schema.types[name] == CATEGORICAL:
            counts = pd.Series(sets["real train"][name]).value_counts()
            categories[name] = {c: i for i, c in enumerate(counts.index[:_MAX_CATEGORIES])}
    is_cat = np.array([schema.types[c] == CATEGORICAL for c in features])
    x = {k: _tstr_features(v, features, schema, categories) for k, v in sets.items()}
    y = {k: v[target] for k, v in sets.items()}
    settings = dict(max_iter=100, learning_rate=0.1, max_leaf_nodes=31, early_stopping=False,
                    random_state=seed, categorical_features=is_cat if is_cat.any() else None)
    if schema.types[target] == NUMERICAL:
        out = {"target": target, "task": "regression", "positive": None}
        for name, source in (("trtr", "real train"), ("tstr", "synthetic")):
            model = HistGradientBoostingRegressor(**settings).fit(x[source], y[source])
            out[name] = {"r2": float(r2_score(y["holdout"], model.predict(x["holdout"])))}
        return out
    counts = pd.Series(y["real train"]).value_counts()
    if len(counts) < 2:
        raise InvalidInput(f"TSTR target {target!r} has one class ({counts.index[0]!r}) in the real "
                           "train table: pick a target with two or more classes")
    classes = sorted(counts.index)
    positive = min(classes, key=lambda c: (counts[c], c))  # the minority class
    out = {"target": target, "task": "classification", "positive": positive}
    for name, source in (("trtr", "real train"), ("tstr", "synthetic")):
        seen = sorted(set(y[source]))
        if len(seen) < 2:  # a synthetic set of one class: the model can only predict that class
            out[name] = _classification_scores(None, x["holdout"], y["holdout"], classes, positive,
                                               constant=seen[0])
            continue
        model = HistGradientBoostingClassifier(**settings).fit(x[source], y[source])
        out[name] = _classification_scores(model, x["holdout"], y["holdout"], classes, positive)
    return out


# ----------------------------------------------------------------------------- distances


class _Space:
    """Rows of a reference table ``b`` encoded for Gower-style distances (SDMetrics' DCR).

    Per column: numerical ``min(|a - b| / range_b, 1)`` (range_b = max - min of the reference;
    a constant reference column gives 0 if equal else 1), categorical 0 if equal else 1; missing
    vs missing is 0, missing vs a value 1. The distance is the mean over the columns. Categorical
    mismatches are counted with one matrix product of one-hot codes; numerical columns are
    scaled to the reference range in float64 and differenced in float32.
    """

    _WIDE = 256  # a categorical column with more codes is compared code by code, not one-hot

    def __init__(self, b: dict, schema: _Schema):
        self.schema = schema
        self.b = b
        self.nb = len(next(iter(b.values())))
        self.names = list(schema.types)
        self.scale = {}
        for name, typ in schema.types.items():
            if typ == NUMERICAL:
                y = b[name]
                lo, hi = (np.nanmin(y), np.nanmax(y)) if (~np.isnan(y)).any() else (0.0, 0.0)
                self.scale[name] = (lo, hi - lo)

    def _numeric(self, x: np.ndarray, name: str) -> tuple[np.ndarray, np.ndarray]:
        lo, rng = self.scale[name]
        missing = np.isnan(x)
        if rng > 0:
            scaled = (x - lo) / rng
        else:  # a constant reference: 0 if equal to it, else 1
            scaled = (x != lo).astype(np.float64)
        return np.where(missing, 0.0, scaled).astype(np.float32), missing

    def nearest(self, a: dict, k: int = 1) -> np.ndarray:
        """(len(a), k) distances of each row of ``a`` to its k closest rows here, ascending."""
        na = len(next(iter(a.values())))
        n_cols = len(self.names)
        onehot_a, onehot_b, wide = [], [], []
        for name, typ in self.schema.types.items():
            if typ != CATEGORICAL:
                continue
            (ca, cb), size = _codes(a[name], self.b[name])
            if size > self._WIDE:
                wide.append((ca, cb))
            else:
                onehot_a.append(np.eye(size, dtype=np.float32)[ca])
                onehot_b.append(np.eye(size, dtype=np.float32)[cb])
        oa = np.hstack(onehot_a) if onehot_a else None
        ob_t = np.ascontiguousarray(np.hstack(onehot_b).T) if onehot_b else None
        n_onehot = len(onehot_a)
        numeric = []
        for name, typ in self.schema.types.items():
            if typ == NUMERICAL:
                xa, ma = self._numeric(a[name], name)
                xb, mb = self._numeric(self.b[name], name)
                outside = bool(((xa < 0) | (xa > 1)).any())  # then the cap at 1 matters
                numeric.append((xa, ma, xb, mb, outside))
        best = np.full((na, k), np.inf, dtype=np.float32)
        rows = max(1, _CHUNK // max(self.nb, 1))
        for start in range(0, na, rows):
            sl = slice(start, min(na, start + rows))
            if oa is not None:
                dist = np.float32(n_onehot) - oa[sl] @ ob_t  # categorical mismatches
            else:
                dist = np.zeros((sl.stop - sl.start, self.nb), dtype=np.float32)
            for ca, cb in wide:
                dist += ca[sl, None] != cb[None, :]
            buf = np.empty_like(dist)
            for xa, ma, xb, mb, outside in numeric:
                np.subtract(xa[sl, None], xb[None, :], out=buf)
                np.abs(buf, out=buf)
                if outside:
                    np.minimum(buf, 1.0, out=buf)
                rows_missing, cols_missing = ma[sl], mb
                if rows_missing.any() or cols_missing.any():
                    buf[rows_missing] = 1.0
                    buf[:, cols_missing] = 1.0
                    buf[np.ix_(rows_missing, cols_missing)] = 0.0
                dist += buf
            dist /= n_cols
            if k == 1:
                best[sl, 0] = np.minimum(best[sl, 0], dist.min(axis=1))
            else:
                top = np.partition(dist, k - 1, axis=1)[:, :k] if dist.shape[1] > k else dist
                best[sl] = np.sort(np.concatenate([best[sl], top], axis=1), axis=1)[:, :k]
        return best.astype(np.float64)


def _nearest(a: dict, b: dict, schema: _Schema, k: int = 1) -> np.ndarray:
    return _Space(b, schema).nearest(a, k)


def dcr(a: pd.DataFrame, b: pd.DataFrame, meta: Any) -> np.ndarray:
    """Distance of each row of ``a`` to its closest row of ``b``, in [0, 1] (SDMetrics'
    ``calculate_dcr``): the mean over the modelled columns of ``min(|x - y| / range, 1)`` for a
    numerical column (range = max - min of ``b``'s column; a constant column counts 0 if equal,
    1 if not) and ``x != y`` for a categorical one; missing vs missing is 0, missing vs a value 1.
    Vectorised in float32 chunks of ``a``'s rows against all of ``b``."""
    schema = _schema(meta)
    return _nearest(_prepare(a, schema, "first"), _prepare(b, schema, "reference"), schema)[:, 0]


# ----------------------------------------------------------------------------- privacy


def _row_hashes(values: dict) -> np.ndarray:
    """One uint64 per row over the given columns; equal rows (missing == missing) hash equal."""
    cols = {}
    for i, (name, v) in enumerate(values.items()):
        if v.dtype == object:
            cols[str(i)] = np.where(pd.isna(v), "\x00missing", v.astype(str)).astype(object)
        else:
            cols[str(i)] = np.where(np.isnan(v), np.nan, v + 0.0)  # one NaN, and -0.0 == 0.0
    return pd.util.hash_pandas_object(pd.DataFrame(cols), index=False).to_numpy()


def _take(values: dict, idx: np.ndarray) -> dict:
    return {k: v[idx] for k, v in values.items()}


def _closer(d_train: np.ndarray, d_holdout: np.ndarray) -> tuple[float, float]:
    """(closer_to_train with ties counted half, SDMetrics' DCROverfittingProtection)."""
    strictly = float(np.mean(d_train < d_holdout))
    ties = float(np.mean(d_train == d_holdout))
    return strictly + 0.5 * ties, min((1.0 - strictly) * 2, 1.0)


def _random_like(values: dict, n: int, rng: np.random.Generator, integer: set[str]) -> dict:
    """SDMetrics' DCRBaselineProtection baseline: each column drawn uniformly at random and
    independently (integers within min..max for integer columns, a uniform float within
    min..max otherwise, a uniform choice among the seen categories), missing at the real rate."""
    out = {}
    for name, v in values.items():
        if v.dtype == object:
            seen = pd.unique(v[pd.notna(v)])
            drawn = rng.choice(seen, size=n) if len(seen) else np.full(n, None, dtype=object)
            missing = pd.isna(v).mean()
            drawn = drawn.astype(object)
        else:
            ok = v[~np.isnan(v)]
            if len(ok) == 0:
                drawn, missing = np.full(n, np.nan), 1.0
            elif name in integer:
                drawn = rng.integers(int(ok.min()), int(ok.max()) + 1, size=n).astype(np.float64)
                missing = np.isnan(v).mean()
            else:
                drawn = rng.uniform(ok.min(), ok.max(), size=n)
                missing = np.isnan(v).mean()
        mask = rng.random(n) < missing
        if v.dtype == object:
            drawn[mask] = None
        else:
            drawn[mask] = np.nan
        out[name] = drawn
    return out


def _nndr(top2: np.ndarray) -> float:
    """Median over rows of nearest / second-nearest distance (0 when the nearest is at 0)."""
    d1, d2 = top2[:, 0], top2[:, 1]
    ratio = np.divide(d1, d2, out=np.zeros_like(d1), where=d2 > 0)
    return float(np.median(ratio))


def _mia_auc(members: dict, non_members: dict, released: dict, schema: _Schema) -> float:
    """AUC of the attack "a row is a training member if it is close to the released set"."""
    from sklearn.metrics import roc_auc_score

    space = _Space(released, schema)
    score = -np.concatenate([space.nearest(members)[:, 0], space.nearest(non_members)[:, 0]])
    n_m = len(next(iter(members.values())))
    n_n = len(next(iter(non_members.values())))
    labels = np.concatenate([np.ones(n_m), np.zeros(n_n)])
    return float(roc_auc_score(labels, score))


def _cap(real: pd.DataFrame, released: pd.DataFrame, keys: list[str], sensitive: str) -> float:
    """SDMetrics' CategoricalCAP: for each real row whose key values occur in the released rows,
    the share of those released rows that carry its sensitive value; 1 - the mean (NaN if no key
    matches). Missing is a value like any other."""
    def coded(frame):
        labels = {k: _labels(frame[k]) for k in keys}
        return _row_hashes(labels), _row_hashes({**labels, "\x00sensitive": _labels(frame[sensitive])})

    real_key, real_both = coded(real)
    rel_key, rel_both = coded(released)
    key_counts = pd.Series(rel_key).value_counts()
    both_counts = pd.Series(rel_both).value_counts()
    n_key = key_counts.reindex(real_key).to_numpy(np.float64)
    n_both = both_counts.reindex(real_both).fillna(0).to_numpy(np.float64)
    matched = ~np.isnan(n_key)
    if not matched.any():
        return float("nan")
    return float(1.0 - np.mean(n_both[matched] / n_key[matched]))


def _figure(value: float, reference: float) -> dict:
    return {"value": float(value), "reference": float(reference)}


def privacy(train: pd.DataFrame, synth: pd.DataFrame, holdout: pd.DataFrame, meta: Any, seed: int = 0,
            quasi_identifiers: Sequence[str] | None = None, sensitive: str | None = None,
            max_rows: int = 100_000, histogram_bins: int = 20) -> dict:
    """Privacy figures of ``synth``, each ``{"value", "reference"}`` where the reference is what
    a set of real rows the generator never saw (the holdout, used as if it were synthetic) scores,
    so a reader sees what "private" looks like. Distances are ``dcr``'s (the reference set's own
    ranges, as SDMetrics). With ``m = min(len(train), len(holdout))``, T = ``m`` random train rows
    and H = ``m`` holdout rows (seeded); H splits in halves H1 and H2 and T2 is T's first
    ``len(H2)`` rows, for the references that need a third set.

    - ``exact_copy_rate`` (lower): share of synthetic rows equal to some train row (all columns,
      missing == missing); reference: the same for holdout rows (also ``holdout_exact_copy_rate``).
    - ``closer_to_train`` (0.5 = no copying, higher = copying): share of synthetic rows whose DCR
      to T is below their DCR to H, ties counted half; reference: H1 against T2 and H2. When the
      train split is larger than the holdout, only ``m / len(train)`` of a copied train row's
      chances fall in T: a verbatim copy of train scores ``m / n + (1 - m / n) / 2`` (0.63 at
      80/20), not 1; ``exact_copy_rate`` and ``mia_auc`` see such copying in full.
    - ``dcr_overfitting_protection`` (higher): SDMetrics' DCROverfittingProtection on T and H,
      ``min(2 * (1 - share strictly closer to train), 1)``; reference: H1 against T2 and H2.
    - ``dcr_baseline_protection`` (higher): SDMetrics' DCRBaselineProtection, ``min(median DCR
      of synthetic to T / median DCR of ``m`` uniformly random rows to T, 1)``; reference: H to T.
    - ``nndr`` (lower = closer to copying): median nearest / second-nearest DCR ratio to T;
      reference: H to T.
    - ``mia_auc`` (0.5 = nothing leaks): AUC of the membership attack "score = -DCR to the
      released set" over T2 (members) against H2 (non-members), the synthetic set released;
      reference: H1 released.
    - ``cap`` (higher), when ``sensitive`` is given: SDMetrics' CategoricalCAP of the train rows
      against the synthetic ones on ``quasi_identifiers`` (default: the metadata's) -> sensitive;
      reference: against the holdout rows. ``None`` without a sensitive column.

    Also ``rows`` (the sizes used) and ``dcr_histogram`` (``{"title", "bins", "series"}``: counts
    of DCR to T of the synthetic rows and of H). Synthetic rows beyond ``max_rows`` are
    subsampled (seeded).
    """
    schema = _schema(meta)
    rng = np.random.default_rng(seed)
    t_all = _prepare(train, schema, "real train")
    h_all = _prepare(holdout, schema, "holdout")
    s_all = _prepare(synth, schema, "synthetic")
    n_t, n_h, n_s = len(train), len(holdout), len(synth)
    m = min(n_t, n_h)
    if m < 4:
        raise InvalidInput(f"privacy metrics need at least 4 train and 4 holdout rows (got {n_t} "
                           f"and {n_h}): the holdout is split in two for the references")
    train_hashes = _row_hashes(t_all)
    copy_rate = float(np.isin(_row_hashes(s_all), train_hashes).mean())
    holdout_copy_rate = float(np.isin(_row_hashes(h_all), train_hashes).mean())

    t = _take(t_all, rng.permutation(n_t)[:m])
    h = _take(h_all, rng.permutation(n_h)[:m])
    s = _take(s_all, np.sort(rng.choice(n_s, max_rows, replace=False))) if n_s > max_rows else s_all
    h1 = _take(h, np.arange(m // 2))
    h2 = _take(h, np.arange(m // 2, m))
    t2 = _take(t, np.arange(m - m // 2))

    space_t = _Space(t, schema)
    s_to_t = space_t.nearest(s, k=2)
    h_to_t = space_t.nearest(h, k=2)
    s_to_h = _nearest(s, h, schema)[:, 0]
    closer, protection = _closer(s_to_t[:, 0], s_to_h)
    h1_to_t2 = _nearest(h1, t2, schema)[:, 0]
    h1_to_h2 = _nearest(h1, h2, schema)[:, 0]
    closer_ref, protection_ref = _closer(h1_to_t2, h1_to_h2)

    integer = {c for c, typ in schema.types.items()
               if typ == NUMERICAL and pd.api.types.is_integer_dtype(train[c])}
    random_rows = _random_like(t_all, m, rng, integer)  # m rows: SDMetrics' equal-size subsample
    random_median = float(np.median(space_t.nearest(random_rows)[:, 0]))

    def baseline(d: np.ndarray) -> float:
        return min(float(np.median(d)) / random_median, 1.0) if random_median > 0 else float("nan")

    out = {
        "rows": {"train": n_t, "synthetic": n_s, "holdout": n_h, "sample": m},
        "exact_copy_rate": _figure(copy_rate, holdout_copy_rate),
        "holdout_exact_copy_rate": holdout_copy_rate,
        "closer_to_train": _figure(closer, closer_ref),
        "dcr_overfitting_protection": _figure(protection, protection_ref),
        "dcr_baseline_protection": _figure(baseline(s_to_t[:, 0]), baseline(h_to_t[:, 0])),
        "nndr": _figure(_nndr(s_to_t), _nndr(h_to_t)),
        "mia_auc": _figure(_mia_auc(t2, h2, s, schema), _mia_auc(t2, h2, h1, schema)),
        "cap": None,
    }
    keys = list(quasi_identifiers if quasi_identifiers is not None else schema.quasi_identifiers)
    if sensitive is not None:
        if not keys:
            raise InvalidInput(f"CAP on sensitive column {sensitive!r} needs quasi-identifiers: "
                               "pass quasi_identifiers or declare them in the metadata")
        for col in [*keys, sensitive]:
            for what, frame in (("real train", train), ("synthetic", synth), ("holdout", holdout)):
                if col not in frame.columns:
                    raise InvalidInput(f"CAP column {col!r} is not in the {what} table: pick "
                                       f"columns of the table, e.g. {list(train.columns)[:10]}")
        out["cap"] = _figure(_cap(train, synth, keys, sensitive), _cap(train, holdout, keys, sensitive))
    top = max(float(s_to_t[:, 0].max()), float(h_to_t[:, 0].max()), 1e-9)
    edges = np.linspace(0.0, top, histogram_bins + 1)
    out["dcr_histogram"] = {
        "title": "Distance to the closest train row (DCR)",
        "bins": edges.tolist(),
        "series": {"synthetic → train": np.histogram(s_to_t[:, 0], edges)[0].tolist(),
                   "holdout → train": np.histogram(h_to_t[:, 0], edges)[0].tolist()},
    }
    return out
