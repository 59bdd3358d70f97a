"""`tabgpt`: an autoregressive transformer over a table's columns, one token per cell.

Encoding. Every column has its own slice of the vocabulary. A categorical column's tokens are
its values. A numerical column's tokens are its values when it has few (ages, counts: a discrete
variable), otherwise quantile bins, where a value that alone holds a large share of the rows
(the 0 of a mostly-zero ``capital-gain``) is a token of its own, so point masses come back
exactly; at sampling, a value is drawn inside its bin from the bin's own quantiles (its
*knots*), so the marginal is right below the bin width too, and it stays within the train
range. Every column also has a missing token. :meth:`TabGPT.fit_encoding` writes all this as a
JSON dict (value lists, points, bin knots, train counts).

Network. A causal transformer reads a row column after column. Its input at step k is the
value read last plus that column's embedding, plus an embedding of the column it must predict
now (step 0 reads a start token); the logits are those of the asked column's slice. There is no
position embedding: a step sees the *set* of (column, value) pairs read before it and the name
of the column asked for, so any column order is one model. Training mostly follows the table's
order, with a share of rows that first read a random subset of the columns in random order and
then the rest in order. ``sample(n, conditions=...)`` then reads the conditioned columns first
with their given values and samples the rest: the conditional is the model's own, every row
has the asked values, and no row is rejected. Sampling is at temperature 1 (fidelity, not modes)
and never draws a token that training never saw.

This module knows the encoding, the network, its loss and its sampler. It knows nothing about
files, datasets or metadata beyond :class:`aigc.models.table_encoding.ColumnSpec`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from aigc.errors import InvalidInput
from aigc.models.table_encoding import ColumnSpec

ENCODING_VERSION = 1


@dataclass
class TabGPTConfig:
    n_layer: int = 3
    n_head: int = 4
    n_embd: int = 128
    mlp_ratio: int = 4  # MLP width = mlp_ratio * n_embd
    dropout: float = 0.1  # rows are few and the model must not learn them by heart
    # A numerical column is discrete (one token per value) when it has at most this many distinct
    # values and each repeats on average at least `min_repeats` times; else it is binned.
    max_distinct: int = 128
    min_repeats: int = 10
    n_bins: int = 64  # quantile bins of a binned column (fewer when it has few rows: `min_bin_rows`)
    min_bin_rows: int = 20  # a bin holds at least about this many train values
    point_mass: float = 0.05  # a value that alone holds this share of a binned column is its own token
    bin_knots: int = 8  # within a bin, values are drawn piecewise-linearly between this many quantiles
    shuffle_share: float = 0.25  # share of training rows that read a random subset of columns first
    sample_batch: int = 2048  # rows sampled at once (26,048 adult rows, 2 cores: 5.5 s; 7.8 s at 8192)


class _Block(nn.Module):
    """Pre-norm transformer block: :meth:`forward` over whole sequences (training), :meth:`step`
    one position at a time with a key/value cache (sampling)."""

    def __init__(self, config: TabGPTConfig):
        super().__init__()
        d = config.n_embd
        self.n_head = config.n_head
        self.dropout = config.dropout
        self.ln1 = nn.LayerNorm(d)
        self.qkv = nn.Linear(d, 3 * d)
        self.proj = nn.Linear(d, d)
        self.ln2 = nn.LayerNorm(d)
        self.fc = nn.Linear(d, config.mlp_ratio * d)
        self.out = nn.Linear(config.mlp_ratio * d, d)
        self.drop = nn.Dropout(config.dropout)

    def forward(self, x: Tensor) -> Tensor:
        """x (B, T, C) -> (B, T, C), causal."""
        B, T, C = x.shape
        q, k, v = self.qkv(self.ln1(x)).view(B, T, 3, self.n_head, C // self.n_head).permute(2, 0, 3, 1, 4)
        y = F.scaled_dot_product_attention(q, k, v, is_causal=True,  # (B, nh, T, hd)
                                           dropout_p=self.dropout if self.training else 0.0)
        x = x + self.drop(self.proj(y.transpose(1, 2).reshape(B, T, C)))
        return x + self.drop(self.out(F.gelu(self.fc(self.ln2(x)))))

    def step(self, x: Tensor, keys: Tensor, values: Tensor, pos: int) -> Tensor:
        """One position of every row: x (B, C) at position ``pos``; its key and value go to the
        caches (n_columns, B, nh, hd) first. Same arithmetic as :meth:`forward` (a test checks).

        One query against at most n_columns keys: products and sums over position-major caches
        ran 4-5x faster on a CPU than batched matmuls or scaled_dot_product_attention, whose
        per-(row, head) 1 x L products are too small for their kernels."""
        B, C = x.shape
        q, k, v = self.qkv(self.ln1(x)).view(B, 3, self.n_head, C // self.n_head).unbind(1)  # (B, nh, hd) each
        keys[pos] = k
        values[pos] = v
        scores = (keys[: pos + 1] * q).sum(-1) * (C // self.n_head) ** -0.5  # (pos+1, B, nh)
        y = (scores.softmax(0)[..., None] * values[: pos + 1]).sum(0)  # (B, nh, hd)
        x = x + self.proj(y.reshape(B, C))
        return x + self.out(F.gelu(self.fc(self.ln2(x))))


class TabGPT(nn.Module):
    name = "tabgpt"
    modality = "table"
    Config = TabGPTConfig
    TRAINABLE = True
    DP = False
    SUPPORTS_CONDITIONS = True
    PRESETS = {
        "tiny": dict(n_layer=1, n_head=2, n_embd=32, dropout=0.0, n_bins=16),  # tests: seconds
        "small": dict(n_layer=3, n_head=4, n_embd=128),  # 2 CPU cores: minutes
        "base": dict(n_layer=6, n_head=8, n_embd=256, n_bins=100),  # a GPU
    }
    TRAIN_DEFAULTS = {
        "tiny": dict(max_steps=60, batch_size=64, lr=1e-2, warmup_steps=5, eval_every=30, weight_decay=0.0),
        "small": dict(max_steps=0, time_budget=240, batch_size=256, lr=2e-3, warmup_steps=100,
                      eval_every=200, patience=0, weight_decay=0.1),
        "base": dict(max_steps=20000, batch_size=512, lr=1e-3, warmup_steps=500, eval_every=500, patience=8,
                     weight_decay=0.1),
    }

    # -- encoding ------------------------------------------------------------------------

    @classmethod
    def fit_encoding(cls, config: TabGPTConfig, frame: pd.DataFrame, specs: list[ColumnSpec], seed: int) -> dict:
        """The vocabulary of each column, learned from the train model frame (JSON-able). ``seed``
        is unused: the encoding is a deterministic function of the frame."""
        if len(frame) == 0:
            raise InvalidInput("cannot fit tabgpt on an empty table: give it at least one row")
        if not specs:
            raise InvalidInput("cannot fit tabgpt on a table with no modelled columns")
        _check_columns(frame, specs)
        columns = []
        for spec in specs:
            s = frame[spec.name]
            if spec.type == "categorical":
                columns.append(_categorical_encoding(spec, s))
            elif spec.type == "numerical":
                columns.append(_numerical_encoding(config, spec, s))
            else:
                raise InvalidInput(f"column {spec.name!r} has type {spec.type!r}: "
                                   "a ColumnSpec's type must be numerical or categorical")
        return {"version": ENCODING_VERSION, "columns": columns}

    def __init__(self, config: TabGPTConfig, encoding: dict):
        super().__init__()
        if config.n_embd % config.n_head:
            raise InvalidInput(f"tabgpt n_embd ({config.n_embd}) must be divisible by n_head ({config.n_head})")
        if encoding.get("version") != ENCODING_VERSION:
            raise InvalidInput(f"tabgpt encoding version {encoding.get('version')!r} is not {ENCODING_VERSION}: "
                               "fit the encoding again")
        self.config = config
        self.columns: list[dict] = encoding["columns"]
        self.names = [c["name"] for c in self.columns]
        sizes = [len(c["counts"]) for c in self.columns]
        self.offsets = [0, *np.cumsum(sizes).tolist()]
        n_col, V, d = len(self.columns), self.offsets[-1], config.n_embd
        self.vocab_size = V
        counts = torch.tensor([n for c in self.columns for n in c["counts"]], dtype=torch.float32)
        # sampling never draws a token no train row had (e.g. a category only the val split holds)
        self.register_buffer("unseen", torch.where(counts > 0, 0.0, -math.inf), persistent=False)
        self.value_embed = nn.Embedding(V + 1, d)  # + the start token (id V)
        self.column_embed = nn.Embedding(n_col + 1, d)  # the column of the value read; + none (the start)
        self.next_embed = nn.Embedding(n_col, d)  # the column to predict
        self.drop = nn.Dropout(config.dropout)
        self.blocks = nn.ModuleList(_Block(config) for _ in range(config.n_layer))
        self.ln_f = nn.LayerNorm(d)
        self.head = nn.Linear(d, V)
        self.apply(_init_weights)
        for block in self.blocks:  # GPT-2: residual projections scaled down with depth
            for w in (block.proj.weight, block.out.weight):
                nn.init.normal_(w, std=0.02 / math.sqrt(2 * config.n_layer))
        with torch.no_grad():  # start from each column's marginal: the first steps learn structure, not counts
            prior = torch.zeros(V)
            for c in range(n_col):
                lo, hi = self.offsets[c], self.offsets[c + 1]
                prior[lo:hi] = torch.log((counts[lo:hi] + 0.5) / (counts[lo:hi].sum() + 0.5 * (hi - lo)))
            self.head.bias.copy_(prior)

    def encode(self, frame: pd.DataFrame) -> Tensor:
        """Model-frame rows -> (N, n_columns) token ids, as floats (exact below 2**24)."""
        specs = [ColumnSpec(c["name"], c["type"]) for c in self.columns]
        _check_columns(frame, specs)
        ids = np.empty((len(frame), len(self.columns)), dtype=np.int64)
        for j, col in enumerate(self.columns):
            ids[:, j] = self.offsets[j] + _column_tokens(col, frame[col["name"]])
        return torch.from_numpy(ids).float()

    # -- training ------------------------------------------------------------------------

    def forward(self, x: Tensor, y: Tensor | None = None) -> tuple[None, Tensor]:
        """x (B, n_columns) token ids -> (None, mean negative log-likelihood per row, nats)."""
        tokens = x.long()
        order = self._orders(tokens.shape[0], tokens.device) if self.training else None
        return None, self._row_nll(tokens, order).mean()

    @torch.no_grad()
    def validation_losses(self, x: Tensor, y: Tensor | None = None) -> dict[str, float]:
        """Mean negative log-likelihood per row (nats, the table's column order) of token rows x."""
        return {"loss": float(self._row_nll(x.long(), None).mean())}

    def _orders(self, B: int, device) -> Tensor:
        """(B, n_columns) orders to read the columns in: the table's, except for a share of rows
        that read a random subset (1..n-1 columns, random order) first and then the rest in order.
        The randomness is torch's global generator, which the training loop seeds."""
        n = len(self.columns)
        natural = torch.arange(n, device=device).expand(B, n)
        if n < 2 or self.config.shuffle_share <= 0:
            return natural
        r = torch.rand(B, n, device=device)
        m = torch.randint(1, n, (B, 1), device=device)  # subset size
        shuffled = torch.rand(B, 1, device=device) < self.config.shuffle_share
        first = (r.argsort(1).argsort(1) < m) & shuffled  # the m columns of smallest r
        key = torch.where(first, r, 1.0 + natural / n)  # subset by r, then the rest in table order
        return key.argsort(1)

    def _row_nll(self, tokens: Tensor, order: Tensor | None) -> Tensor:
        """(B,) negative log-likelihood of each row read in ``order`` (None: the table's)."""
        B, n = tokens.shape
        if order is None:
            order = torch.arange(n, device=tokens.device).expand(B, n)
        seq = tokens.gather(1, order)  # (B, n) values in reading order
        start = torch.full((B, 1), self.vocab_size, dtype=torch.long, device=tokens.device)
        none = torch.full((B, 1), n, dtype=torch.long, device=tokens.device)
        h = (self.value_embed(torch.cat([start, seq[:, :-1]], 1)) + self.column_embed(torch.cat([none, order[:, :-1]], 1))
             + self.next_embed(order))
        h = self.drop(h)
        for block in self.blocks:
            h = block(h)
        h = self.ln_f(h)
        # Each row predicts each column once: column c at position where[:, c]. One small head per
        # column over its own slice costs 1/n of a masked head over the whole vocabulary.
        where = order.argsort(1)
        rows = torch.arange(B, device=tokens.device)
        nll = torch.zeros(B, device=tokens.device)
        for c in range(n):
            lo, hi = self.offsets[c], self.offsets[c + 1]
            logits = F.linear(h[rows, where[:, c]], self.head.weight[lo:hi], self.head.bias[lo:hi])
            nll = nll + F.cross_entropy(logits, tokens[:, c] - lo, reduction="none")
        return nll

    # -- sampling ------------------------------------------------------------------------

    @torch.no_grad()
    def sample(self, n: int, conditions: dict[str, object] | None = None,
               generator: torch.Generator | None = None) -> pd.DataFrame:
        """n rows of the model frame; with ``conditions`` ({column: value}) every row has those values."""
        if not isinstance(n, int) or isinstance(n, bool) or n < 0:
            raise InvalidInput(f"number of rows must be a whole number >= 0, got {n!r}")
        given = self._condition_tokens(conditions or {})
        order = [c for c in range(len(self.columns)) if c in given]
        order += [c for c in range(len(self.columns)) if c not in given]
        was_training = self.training
        self.eval()
        try:
            device = self.head.weight.device
            step = max(1, self.config.sample_batch)
            parts = [self._sample_tokens(min(step, n - i), order, given, generator, device)
                     for i in range(0, n, step)]
            tokens = torch.cat(parts) if parts else torch.empty(0, len(self.columns), dtype=torch.long)
            frame = self._decode(tokens.cpu(), generator)
        finally:
            self.train(was_training)
        for c, (_, value) in given.items():
            col = self.columns[c]
            frame[col["name"]] = pd.Series([value] * n, dtype=frame[col["name"]].dtype)
        return frame

    def _sample_tokens(self, m: int, order: list[int], given: dict[int, tuple[int, object]],
                       generator: torch.Generator | None, device) -> Tensor:
        """(m, n_columns) token ids, the columns read in ``order`` with a key/value cache."""
        n, cfg = len(self.columns), self.config
        hd = cfg.n_embd // cfg.n_head
        caches = [(torch.empty(n, m, cfg.n_head, hd, device=device), torch.empty(n, m, cfg.n_head, hd, device=device))
                  for _ in self.blocks]
        out = torch.empty(m, n, dtype=torch.long, device=device)
        prev = torch.full((m,), self.vocab_size, dtype=torch.long, device=device)
        prev_col = n
        for k, c in enumerate(order):
            h = self.value_embed(prev) + self.column_embed.weight[prev_col] + self.next_embed.weight[c]  # (m, d)
            if c in given:
                tok = torch.full((m,), given[c][0], dtype=torch.long, device=device)
            if c not in given or k < len(order) - 1:
                for block, (keys, values) in zip(self.blocks, caches, strict=True):
                    h = block.step(h, keys, values, k)
            if c not in given:
                lo, hi = self.offsets[c], self.offsets[c + 1]
                logits = F.linear(self.ln_f(h), self.head.weight[lo:hi], self.head.bias[lo:hi])
                tok = lo + _draw(torch.softmax(logits + self.unseen[lo:hi], dim=-1), generator)
            out[:, c] = tok
            prev, prev_col = tok, c
        return out

    def _decode(self, tokens: Tensor, generator: torch.Generator | None) -> pd.DataFrame:
        """(m, n_columns) token ids -> the model frame; binned values drawn inside their bins."""
        data = {}
        for j, col in enumerate(self.columns):
            local = (tokens[:, j] - self.offsets[j]).numpy()
            if col["type"] == "categorical":
                data[col["name"]] = pd.Series(np.array([*col["values"], None], dtype=object)[local], dtype=object)
                continue
            points, knots = np.asarray(col["points"], dtype=np.float64), np.asarray(col["knots"], dtype=np.float64)
            values = np.full(len(local), np.nan)
            is_point = local < len(points)
            values[is_point] = points[local[is_point]]
            u = torch.rand(len(local), generator=generator, dtype=torch.float64).numpy()
            in_bin = (local >= len(points)) & (local < len(points) + len(knots))
            if in_bin.any():
                b = local[in_bin] - len(points)
                K = knots.shape[1] - 1
                at = u[in_bin] * K
                i = np.minimum(at.astype(np.int64), K - 1)
                lo, hi = knots[b, i], knots[b, i + 1]
                values[in_bin] = lo + (at - i) * (hi - lo)
            if col["integer"]:
                values = np.round(values)
            data[col["name"]] = np.clip(values, col["min"], col["max"])  # NaN (missing) stays NaN
        return pd.DataFrame(data, index=pd.RangeIndex(len(tokens)))

    def _condition_tokens(self, conditions: dict[str, object]) -> dict[int, tuple[int, object]]:
        """{column index: (token id, the value every row gets)}; a value training never saw is refused."""
        given = {}
        for name, value in conditions.items():
            if name not in self.names:
                raise InvalidInput(f"cannot condition on {name!r}: the table's columns are {', '.join(self.names)}")
            c = self.names.index(name)
            col = self.columns[c]
            missing = _is_missing(value)
            if col["type"] == "categorical":
                value = None if missing else str(value)
            elif missing:
                value = math.nan
            else:
                try:
                    value = float(value)  # type: ignore[arg-type]
                except (TypeError, ValueError):
                    raise InvalidInput(f"cannot condition {name!r} on {value!r}: it is a numerical column; "
                                       "give a number") from None
                if not col["min"] <= value <= col["max"]:
                    raise InvalidInput(f"cannot condition {name!r} on {value:g}: training saw values in "
                                       f"[{col['min']:g}, {col['max']:g}]; give one inside")
            series = pd.Series([value], dtype=object if col["type"] == "categorical" else np.float64)
            local = int(_column_tokens(col, series, exact=True)[0])
            if local < 0 or col["counts"][local] == 0:
                if missing:
                    raise InvalidInput(f"cannot condition {name!r} on a missing value: training never saw "
                                       "it missing; give a value")
                seen = [v for v, k in zip(col["values"] if col["type"] == "categorical" else col["points"],
                                          col["counts"], strict=False) if k]
                raise InvalidInput(f"cannot condition {name!r} on {value!r}: training never saw that value; "
                                   f"seen values include {', '.join(map(repr, seen[:8]))}")
            given[c] = (self.offsets[c] + local, value)
        return given


# -- encoding helpers -----------------------------------------------------------------------


def _check_columns(frame: pd.DataFrame, specs: list[ColumnSpec]) -> None:
    absent = [s.name for s in specs if s.name not in frame.columns]
    if absent:
        raise InvalidInput(f"the table has no column(s) {', '.join(map(repr, absent))}: "
                           f"its columns are {', '.join(map(str, frame.columns))}")


def _as_numbers(name: str, s: pd.Series) -> np.ndarray:
    try:
        return pd.to_numeric(s, errors="raise").to_numpy(dtype=np.float64, na_value=np.nan)
    except (TypeError, ValueError):
        bad = next(v for v in s if pd.notna(v) and not isinstance(v, (int, float, np.number)))
        raise InvalidInput(f"numerical column {name!r} holds {bad!r}: give numbers (missing as empty)") from None


def _categorical_encoding(spec: ColumnSpec, s: pd.Series) -> dict:
    """Tokens: the spec's categories (then any others the frame holds), then missing."""
    present = s[s.notna()].astype(str)
    freq = present.value_counts()
    values = list(dict.fromkeys([*(str(v) for v in spec.categories or []), *freq.index]))
    counts = [int(freq.get(v, 0)) for v in values] + [int(s.isna().sum())]
    return {"name": spec.name, "type": "categorical", "values": values, "counts": counts}


def _numerical_encoding(config: TabGPTConfig, spec: ColumnSpec, s: pd.Series) -> dict:
    """Tokens: points (exact values), then bins (quantile knots each), then missing."""
    x = _as_numbers(spec.name, s)
    present = x[~np.isnan(x)]
    integer = bool(spec.integer) or bool(len(present) and np.all(present == np.round(present)))
    distinct, counts = np.unique(present, return_counts=True)
    if len(distinct) <= config.max_distinct and len(present) >= config.min_repeats * len(distinct):
        points = distinct  # a discrete variable: every value its own token
    else:
        points = distinct[counts >= config.point_mass * len(present)]
    rest = present[~np.isin(present, points)]
    knots = np.empty((0, config.bin_knots + 1))
    if len(rest):
        n_bins = max(1, min(config.n_bins, len(rest) // max(1, config.min_bin_rows)))
        edges = np.unique(np.quantile(rest, np.linspace(0, 1, n_bins + 1), method="inverted_cdf"))
        bin_of = np.clip(np.searchsorted(edges, rest, side="right") - 1, 0, max(0, len(edges) - 2))
        q = np.linspace(0, 1, config.bin_knots + 1)
        knots = np.stack([np.quantile(rest[bin_of == b], q) for b in range(max(1, len(edges) - 1))])
    col = {"name": spec.name, "type": "numerical", "integer": integer,
           "min": float(present.min()) if len(present) else 0.0, "max": float(present.max()) if len(present) else 0.0,
           "points": points.tolist(), "knots": knots.tolist()}
    col["counts"] = np.bincount(_column_tokens(col, pd.Series(x)), minlength=len(points) + len(knots) + 1).tolist()
    return col


def _column_tokens(col: dict, s: pd.Series, exact: bool = False) -> np.ndarray:
    """A column's values -> local token ids (0 .. size-1). A categorical value the encoding does
    not know is refused (``exact``: -1); a numerical value that is no point falls in the bin of
    nearest range, or, with no bins, on the nearest point (``exact``: -1)."""
    missing = s.isna().to_numpy()
    if col["type"] == "categorical":
        ids = np.full(len(s), len(col["values"]), dtype=np.int64)  # missing
        known = s[~missing].astype(str).map({v: i for i, v in enumerate(col["values"])})
        unknown = known.isna().to_numpy()
        if unknown.any() and not exact:
            bad = s[~missing][unknown].iloc[0]
            raise InvalidInput(f"column {col['name']!r} holds {bad!r}, a category its encoding does not know: "
                               f"known ones include {', '.join(map(repr, col['values'][:8]))}")
        ids[~missing] = known.fillna(-1).to_numpy(dtype=np.int64)
        return ids
    x = _as_numbers(col["name"], s)
    points, knots = np.asarray(col["points"], dtype=np.float64), np.asarray(col["knots"], dtype=np.float64)
    n_points, n_bins = len(points), len(knots)
    ids = np.full(len(x), n_points + n_bins, dtype=np.int64)  # missing
    present = ~missing
    v = x[present]
    tok = np.full(len(v), -1, dtype=np.int64)
    if n_points:
        at = np.clip(np.searchsorted(points, v), 0, n_points - 1)
        below = np.clip(at - 1, 0, n_points - 1)
        nearest = np.where(np.abs(points[below] - v) < np.abs(points[at] - v), below, at)
        tok = np.where(points[nearest] == v, nearest, tok)
    if n_bins:
        lower = knots[:, 0]  # each bin's smallest value; a value falls in the last bin whose lower is <= it
        tok = np.where(tok < 0, n_points + np.clip(np.searchsorted(lower, v, side="right") - 1, 0, n_bins - 1), tok)
    elif n_points and not exact:
        tok = np.where(tok < 0, nearest, tok)
    ids[present] = tok
    return ids


def _draw(probs: Tensor, generator: torch.Generator | None) -> Tensor:
    """One index per row of probs (B, K), by inverse CDF: one uniform per row, where
    ``torch.multinomial`` draws K exponentials (a tenth of all sampling time). A token of
    probability 0 is never drawn: ``right=True`` skips the flat steps of the CDF."""
    cdf = probs.double().cumsum(-1)
    u = torch.rand(len(probs), 1, generator=generator, dtype=torch.float64, device=probs.device)
    return torch.searchsorted(cdf, u * cdf[:, -1:], right=True).clamp_(max=probs.shape[1] - 1)[:, 0]


def _is_missing(value: object) -> bool:
    return value is None or (np.ndim(value) == 0 and not isinstance(value, str) and bool(pd.isna(value)))


def _init_weights(module: nn.Module) -> None:
    if isinstance(module, (nn.Linear, nn.Embedding)):
        nn.init.normal_(module.weight, std=0.02)
    if isinstance(module, nn.Linear) and module.bias is not None:
        nn.init.zeros_(module.bias)
