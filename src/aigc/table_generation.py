"""Sampling rows from a trained table family: conditions, constraints, and the stored table's shape.

``TableGenerator.sample(n, conditions, seed)`` returns a frame with the dataset's columns: the
family samples the modelled columns (its *model frame*), ``aigc.data.tables.from_model_frame``
writes them back as the data came (rounding, date formats, boolean spellings) and regenerates
identifier and PII columns. Rows that break a condition or a constraint are drawn again, in
batches, until ``n`` rows are valid or the draws show that the request cannot be met:

- conditions ``{column: value}``: a family that conditions natively (``SUPPORTS_CONDITIONS``)
  gets them; otherwise rows are filtered (rejection sampling, as SDV does);
- constraints from the dataset's metadata (and the caller): ``range`` (low <= column <= high),
  ``inequality`` (low column <= high column), ``fixed_combinations`` (only combinations of those
  columns that the train split holds).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch import nn

from aigc.errors import InvalidInput

MAX_ROUNDS = 50  # batches drawn before a request that rows rarely meet is refused
_NUMERIC = ("continuous", "discrete", "datetime")


class TableGenerator:
    def __init__(self, model: nn.Module, spec: dict[str, Any], name: str | None = None,
                 dataset_dir: Any = None):
        from aigc.data.tables import TableMetadata

        self.dataset_dir = dataset_dir  # where a new fixed-combinations constraint finds train's combinations
        self.model = model
        self.spec = spec
        self.name = name
        self.meta = TableMetadata.from_dict(spec["metadata"])
        self.modality = "table"
        self._combos = {key: {tuple(c) for c in rows} for key, rows in (spec.get("fixed_combinations") or {}).items()}

    @property
    def columns(self) -> list[str]:
        return [c.name for c in self.meta.columns]

    def check_conditions(self, conditions: dict[str, Any] | None) -> dict[str, Any]:
        """Conditions as the model frame holds them; unknown columns or never-seen values refused."""
        out: dict[str, Any] = {}
        names = self.columns
        for column, value in (conditions or {}).items():
            if column not in names:
                raise InvalidInput(f"unknown condition column {column!r}: the table's columns are {', '.join(names)}")
            col = self.meta.column(column)
            if col.kind in ("categorical", "boolean"):
                known = list(col.categories or {})
                if str(value) not in known:
                    shown = ", ".join(repr(k) for k in known[:12]) + (" ..." if len(known) > 12 else "")
                    raise InvalidInput(f"value {value!r} was never seen in column {column!r}: known values are {shown}")
                out[column] = str(value)
            elif col.kind == "discrete":
                try:
                    number = float(value)
                except (TypeError, ValueError):
                    raise InvalidInput(f"condition {column}={value!r}: {column!r} holds numbers") from None
                if not math.isfinite(number) or number != round(number) or not (col.min <= number <= col.max):
                    raise InvalidInput(f"condition {column}={value!r}: {column!r} holds whole numbers from "
                                       f"{col.min:g} to {col.max:g}")
                out[column] = number
            else:
                raise InvalidInput(f"cannot condition on {column!r} ({col.kind}): condition on a categorical, "
                                   "boolean or whole-number column, or give a range constraint")
        return out

    def check_constraints(self, constraints: list[dict[str, Any]] | None) -> list[dict[str, Any]]:
        names = {c.name for c in self.meta.columns}
        out = []
        for c in [*self.meta.constraints, *(constraints or [])]:
            kind = c.get("type")
            cols = ([c.get("column")] if kind == "range" else [c.get("low"), c.get("high")] if kind == "inequality"
                    else list(c.get("columns") or []) if kind == "fixed_combinations" else None)
            if cols is None:
                raise InvalidInput(f"unknown constraint type {kind!r}: use range, inequality or fixed_combinations")
            missing = [x for x in cols if x not in names]
            if missing or not cols:
                raise InvalidInput(f"constraint {c} names unknown column(s) {missing}: the table's columns are "
                                   f"{', '.join(sorted(names))}")
            if kind == "fixed_combinations" and ",".join(cols) not in self._combos:
                self._combos[",".join(cols)] = self._train_combinations(cols)
            out.append(c)
        return out

    def _train_combinations(self, cols: list[str]) -> set[tuple]:
        from aigc.data.tables import read_table_split

        if self.dataset_dir is None:
            raise InvalidInput(f"a new fixed_combinations constraint on {', '.join(cols)} needs the run's dataset "
                               f"{self.spec.get('dataset')!r}, which no longer exists")
        return set(combinations(read_table_split(self.dataset_dir, "train"), cols))

    def sample(self, n: int, conditions: dict[str, Any] | None = None, seed: int = 0,
               constraints: list[dict[str, Any]] | None = None, progress=None) -> pd.DataFrame:
        """``n`` rows of the stored table's columns that meet every condition and constraint."""
        from aigc.data.tables import from_model_frame

        if n < 1:
            raise InvalidInput(f"n must be >= 1, got {n}")
        conds = self.check_conditions(conditions)
        rules = self.check_constraints(constraints)
        native = bool(conds) and getattr(self.model, "SUPPORTS_CONDITIONS", False)
        gen = torch.Generator().manual_seed(seed)
        rng = np.random.default_rng(seed)
        kept: list[pd.DataFrame] = []
        have, drawn, rate = 0, 0, 1.0
        for _ in range(MAX_ROUNDS):
            want = n - have
            batch = int(min(max(want / max(rate, 1e-3) * 1.1, 64), max(4 * n, 4096)))
            frame = self.model.sample(batch, conditions=conds if native else None, generator=gen)
            stored = from_model_frame(frame, self.meta, rng)
            ok = self._valid(frame, stored, conds, rules)
            drawn += batch
            good = stored[ok]
            kept.append(good)
            have += len(good)
            rate = max(have / drawn, 1e-4)
            if progress is not None:
                progress(min(have, n), n)
            if have >= n:
                break
        if have < n:
            what = ", ".join(f"{k}={v!r}" for k, v in conds.items()) or "the constraints"
            raise InvalidInput(f"only {have} of {drawn} sampled rows met {what}: the model rarely makes such rows; "
                               "ask for fewer rows or loosen the conditions")
        return pd.concat(kept, ignore_index=True).iloc[:n].reset_index(drop=True)

    def _valid(self, frame: pd.DataFrame, stored: pd.DataFrame, conds: dict[str, Any],
               rules: list[dict[str, Any]]) -> np.ndarray:
        ok = np.ones(len(frame), dtype=bool)
        for column, value in conds.items():
            col = frame[column]
            ok &= (col.astype(object) == value).to_numpy() if isinstance(value, str) else \
                np.isclose(pd.to_numeric(col, errors="coerce").to_numpy(dtype=float), value)
        for c in rules:
            if c["type"] == "range":
                v = pd.to_numeric(frame[c["column"]], errors="coerce").to_numpy(dtype=float)
                low = -np.inf if c.get("low") is None else float(c["low"])
                high = np.inf if c.get("high") is None else float(c["high"])
                ok &= np.isnan(v) | ((v >= low) & (v <= high))
            elif c["type"] == "inequality":
                lo = pd.to_numeric(frame[c["low"]], errors="coerce").to_numpy(dtype=float)
                hi = pd.to_numeric(frame[c["high"]], errors="coerce").to_numpy(dtype=float)
                ok &= np.isnan(lo) | np.isnan(hi) | (lo <= hi)
            else:
                cols = list(c["columns"])
                allowed = self._combos.get(",".join(cols))
                if allowed:
                    rows = stored[cols].astype(object).where(stored[cols].notna(), None)
                    ok &= np.array([tuple(_plain(v) for v in r) in allowed for r in rows.itertuples(index=False)])
        return ok


def combinations(frame: pd.DataFrame, cols: list[str]) -> list[tuple]:
    """The distinct value combinations of ``cols`` in ``frame`` (missing as None), sorted as JSON keeps them."""
    part = frame[cols].astype(object).where(frame[cols].notna(), None)
    return sorted({tuple(_plain(v) for v in row) for row in part.itertuples(index=False)},
                  key=lambda t: tuple((v is None, str(v)) for v in t))


def _plain(v: Any) -> Any:
    if v is None or (isinstance(v, float) and v != v):
        return None
    return v.item() if hasattr(v, "item") else v
