"""Gaussian copula over per-column marginals: the fast table baseline (seconds, no training loop).

Each column becomes a standard normal score through its own marginal (Sklar's theorem), the
scores' correlation matrix is the dependence model, and sampling runs the chain backwards:

- a numerical column's marginal is its empirical quantile function on a grid of ``quantiles``
  points (interpolated, so values between train values come out; rounded for integer columns);
- a categorical column's values share [0, 1] in proportion to their frequencies (the order is by
  frequency, as SDV's frequency encoder does); a value is a uniform draw inside its interval;
- a missing value is a category of its own: a numerical column with missing values gets a
  companion indicator column in the copula, so missingness correlates with the other columns.

Conditions are met by rejection in the synthesis layer (``SUPPORTS_CONDITIONS = False``): exact
conditioning of a Gaussian on a categorical interval would need a truncated multivariate normal.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
import torch
from scipy.special import ndtr, ndtri
from torch import nn

from aigc.errors import InvalidInput
from aigc.models.table_encoding import ColumnSpec

_EPS = 1e-6


@dataclass
class Config:
    quantiles: int = 512  # grid points of each numerical marginal (the run keeps these, not the rows)
    shrinkage: float = 0.0  # correlation shrunk towards the identity by this share (0 = the sample correlation)


class Copula(nn.Module):
    name = "copula"
    modality = "table"
    Config = Config
    PRESETS: dict[str, dict[str, Any]] = {"tiny": {"quantiles": 64}, "small": {}, "base": {"quantiles": 2048}}
    TRAIN_DEFAULTS: dict[str, dict[str, Any]] = {}
    TRAINABLE = False  # fit_encoding is the whole fit
    SUPPORTS_CONDITIONS = False

    def __init__(self, config: Config, encoding: dict[str, Any]):
        super().__init__()
        self.config = config
        self.encoding = encoding
        self.specs = [ColumnSpec.from_dict(s) for s in encoding["specs"]]
        self.register_buffer("_chol", torch.tensor(encoding["cholesky"], dtype=torch.float64), persistent=False)

    @classmethod
    def fit_encoding(cls, config: Config, frame: pd.DataFrame, specs: list[ColumnSpec], seed: int) -> dict[str, Any]:
        if not 2 <= config.quantiles <= 100_000:
            raise InvalidInput(f"copula quantiles must be in [2, 100000], got {config.quantiles}")
        if not 0 <= config.shrinkage <= 1:
            raise InvalidInput(f"copula shrinkage must be in [0, 1], got {config.shrinkage}")
        if len(frame) < 2:
            raise InvalidInput("the train split has fewer than 2 rows: a copula needs at least 2")
        rng = np.random.default_rng(seed)
        grid = np.linspace(0, 1, config.quantiles)
        marginals, scores = [], []
        for spec in specs:
            col = frame[spec.name]
            if spec.type == "numerical":
                values = pd.to_numeric(col, errors="coerce").to_numpy(dtype=float)
                missing = np.isnan(values)
                present = values[~missing]
                if len(present) == 0:
                    raise InvalidInput(f"column {spec.name!r} has no values in the train split")
                q = np.quantile(present, grid)
                m = {"kind": "numerical", "quantiles": q.tolist(), "missing": bool(missing.any())}
                u = np.empty(len(values))
                # the rank of each value within the grid, with ties spread uniformly (a point mass such
                # as capital-gain's zeros is an interval of u, not one point)
                lo = np.searchsorted(q, present, side="left") / max(1, len(q) - 1)
                hi = np.searchsorted(q, present, side="right") / max(1, len(q) - 1)
                hi = np.maximum(hi, lo)
                u_present = lo + (hi - lo) * rng.random(len(present))
                u[~missing] = u_present
                u[missing] = rng.random(int(missing.sum()))  # its score is noise: the indicator carries it
                scores.append(ndtri(np.clip(u, _EPS, 1 - _EPS)))
                if m["missing"]:
                    ind = _categorical_marginal(pd.Series(np.where(missing, "1", "0")))
                    m["indicator"] = ind
                    scores.append(_categorical_scores(pd.Series(np.where(missing, "1", "0")), ind, rng))
                marginals.append(m)
            else:
                values = col.astype(object).where(col.notna(), None)
                m = _categorical_marginal(values)
                marginals.append(m)
                scores.append(_categorical_scores(values, m, rng))
        z = np.stack(scores, axis=1)
        corr = np.corrcoef(z, rowvar=False) if z.shape[1] > 1 else np.ones((1, 1))
        corr = np.nan_to_num(np.atleast_2d(corr), nan=0.0)
        np.fill_diagonal(corr, 1.0)
        corr = (1 - config.shrinkage) * corr + config.shrinkage * np.eye(len(corr))
        chol = _cholesky(corr)
        return {"specs": [s.to_dict() for s in specs], "marginals": marginals, "cholesky": chol.tolist()}

    @torch.no_grad()
    def sample(self, n: int, conditions: dict[str, Any] | None = None,
               generator: torch.Generator | None = None) -> pd.DataFrame:
        g = generator if generator is not None else torch.Generator().manual_seed(0)
        z = torch.randn(n, self._chol.shape[0], generator=g, dtype=torch.float64) @ self._chol.T
        u = ndtr(z.numpy())
        out, k = {}, 0
        for spec, m in zip(self.specs, self.encoding["marginals"], strict=True):
            if m["kind"] == "numerical":
                q = np.asarray(m["quantiles"])
                values = np.interp(u[:, k] * (len(q) - 1), np.arange(len(q)), q)
                if spec.integer:
                    values = np.round(values)
                k += 1
                if m["missing"]:
                    missing = _categorical_values(u[:, k], m["indicator"]) == "1"
                    values = np.where(missing, np.nan, values)
                    k += 1
                out[spec.name] = values.astype(float)
            else:
                out[spec.name] = _categorical_values(u[:, k], m)
                k += 1
        return pd.DataFrame(out)


def _categorical_marginal(values: pd.Series) -> dict[str, Any]:
    counts = values.fillna("\x00missing").value_counts()
    cats = [None if c == "\x00missing" else str(c) for c in counts.index]
    freq = counts.to_numpy(dtype=float) / counts.sum()
    edges = np.concatenate([[0.0], np.cumsum(freq)])
    edges[-1] = 1.0
    return {"kind": "categorical", "categories": cats, "edges": edges.tolist()}


def _categorical_scores(values: pd.Series, m: dict[str, Any], rng: np.random.Generator) -> np.ndarray:
    index = {c: i for i, c in enumerate(m["categories"])}
    codes = np.array([index[None if v is None or (isinstance(v, float) and np.isnan(v)) else str(v)]
                      for v in values.astype(object)])
    edges = np.asarray(m["edges"])
    u = edges[codes] + (edges[codes + 1] - edges[codes]) * rng.random(len(codes))
    return ndtri(np.clip(u, _EPS, 1 - _EPS))


def _categorical_values(u: np.ndarray, m: dict[str, Any]) -> np.ndarray:
    edges = np.asarray(m["edges"])
    codes = np.clip(np.searchsorted(edges, u, side="right") - 1, 0, len(m["categories"]) - 1)
    cats = np.array(m["categories"], dtype=object)
    return cats[codes]


def _cholesky(corr: np.ndarray) -> np.ndarray:
    """Cholesky factor of a correlation matrix, nudged to positive definite when it is not."""
    for jitter in (0.0, 1e-8, 1e-6, 1e-4, 1e-2):
        try:
            return np.linalg.cholesky(corr + jitter * np.eye(len(corr)))
        except np.linalg.LinAlgError:
            continue
    w, v = np.linalg.eigh(corr)
    fixed = (v * np.clip(w, 1e-6, None)) @ v.T
    d = np.sqrt(np.diag(fixed))
    return np.linalg.cholesky(fixed / np.outer(d, d))
