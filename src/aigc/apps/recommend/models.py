"""The recommenders: a popularity baseline, implicit's ALS and BPR, and our hybrid of behaviour and
item text.

What this module knows: a user x item matrix of interaction weights (:class:`TrainData`) -> a model
that scores every item for known users (``scores(users) -> (B, n_items)``), its arrays and
parameters to save and load, and item texts -> vectors (:func:`item_vectors`, cached by the sha256
of each text). It knows nothing about files, ids or the workspace (``data.py`` and the package do).

Models (:data:`MODELS`), each one class with ``fit(data, seed)``, ``scores(users)``, ``arrays()``,
``params()`` and ``load(arrays, params)``:

- ``popularity``: the items' summed weights, each interaction decayed by ``half_life_days`` when
  given (none by default); the same list for everyone.
- ``als``: implicit's alternating least squares on the weights as confidences (Hu, Koren & Volinsky
  2008; ``alpha`` scales them), 64 factors, regularization 0.05, 15 iterations.
- ``bpr``: implicit's Bayesian personalised ranking (Rendle et al. 2009) on which items each user
  touched (weights unused), 64 factors, learning rate 0.01, regularization 0.01, 100 iterations.
- ``hybrid`` (ours): ALS for behaviour, plus what the catalogue says. Each item's text is an e5
  vector (the assistant's embedder, multilingual-e5-small: Chinese and English in one space),
  centred on the catalogue's mean. Three scores per (user, item), each standardised over the
  catalogue per user (:class:`HybridParts`):

  1. *behaviour*: the user's ALS factors . the item's. A ridge map from text vector to ALS item
     factors (fitted on the items with interactions) predicts factors from text; an item's factors
     are ALS's shrunk towards those by ``prior`` pseudo-users, ``(n V + prior T) / (n + prior)`` for
     an item of ``n`` users, so an item without interactions gets the text's and is placed where
     items with its words sit.
  2. *text*: the cosine of the item's vector with the user's profile, the mean of the vectors of
     what they touched, weighted by event weight and recency (``profile_half_life_days``).
  3. *taste*: per attribute (category, tags, the text's language), log P(the item's value | user),
     the user's decayed weights over the values smoothed towards the catalogue's shares.

  The score is the weighted sum, with one set of weights for items that had interactions and
  another for items without, and the prior, all chosen on a slice held out of the *training*
  interactions (:meth:`Hybrid.choose_blend`): each user's last item for the first, the items of a
  random tenth of the catalogue with all their interactions removed (pseudo-new items) for the
  second. Nothing is fixed to a benchmark. On ``benchmarks/recommend.py`` (seeds 0 and 1,
  ``benchmarks/results/recommend.json``) the choice was a text prior of 30, behaviour 0.5 + taste
  0.5 for items with interactions (warm NDCG@10 +5 % over ALS alone) and taste alone for new items
  (recall@10 6-9x popularity's); the text cosine got weight 0 there, as that generator's users like
  exactly the listed attributes (category, tags, language), which the taste score reads directly.
  The e5 vectors still count through the text prior (behaviour alone with it: warm NDCG@10 +4 % over
  plain ALS) and where a catalogue's attributes say less than its words.
"""

from __future__ import annotations

import hashlib
import os
import threading
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import scipy.sparse as sp

from aigc.errors import InvalidInput

DAY = 86400.0
COMPONENTS = ("behaviour", "text", "taste")  # the hybrid's three scores, in the order of its weights
# The hybrid's weights tried: every (behaviour, text, taste) on a 0.1 grid summing to 1 (66 of them).
WEIGHT_GRID = tuple((a / 10, b / 10, (10 - a - b) / 10) for a in range(11) for b in range(11 - a))
DEFAULT_WEIGHTS = (0.6, 0.2, 0.2)  # when too few users are held out to choose
PRIOR_GRID = (0.0, 3.0, 10.0, 30.0, 100.0, 300.0)  # pseudo-users of text behind each item's factors
DEFAULT_PRIOR = 3.0
MAX_VALIDATION_USERS = 3000  # users scored per grid point when choosing (sampled beyond)
MIN_VALIDATION_USERS = 20  # fewer: the defaults
PSEUDO_COLD_FRACTION = 0.1
Progress = Callable[[str, int, int], None]


@dataclass
class TrainData:
    """What a model learns from: ``matrix`` (users x items, float32 summed event weights), the
    interactions behind it (indices, weights, UTC seconds) and, for the hybrid, item vectors."""

    matrix: sp.csr_matrix
    user: np.ndarray
    item: np.ndarray
    weight: np.ndarray
    time: np.ndarray
    vectors: np.ndarray | None = None  # (n_items, d) unit rows, centred
    attributes: sp.csr_matrix | None = None  # (n_items, n_values): see HybridParts
    groups: np.ndarray | None = None  # (n_values,) the group of each attribute value

    @property
    def n_users(self) -> int:
        return self.matrix.shape[0]

    @property
    def n_items(self) -> int:
        return self.matrix.shape[1]

    @property
    def now(self) -> float:
        return float(self.time.max()) if len(self.time) else 0.0

    def subset(self, keep: np.ndarray) -> "TrainData":
        """The same users and items with only the interactions where ``keep`` (a row mask)."""
        return TrainData(weight_matrix(self.user[keep], self.item[keep], self.weight[keep], self.matrix.shape),
                         self.user[keep], self.item[keep], self.weight[keep], self.time[keep], self.vectors,
                         self.attributes, self.groups)


def weight_matrix(user: np.ndarray, item: np.ndarray, values: np.ndarray, shape: tuple[int, int]) -> sp.csr_matrix:
    """(users, items) CSR, duplicates summed."""
    m = sp.csr_matrix((np.asarray(values, dtype=np.float32), (user, item)), shape=shape)
    m.sum_duplicates()
    return m


def _decay(data: TrainData, half_life_days: float | None) -> np.ndarray:
    """Each interaction's weight, halved every ``half_life_days`` before the last interaction."""
    if not half_life_days:
        return data.weight.astype(np.float32)
    age = (data.now - data.time) / DAY
    return (data.weight * 0.5 ** (age / half_life_days)).astype(np.float32)


def standardize(x: np.ndarray) -> np.ndarray:
    """Each row to mean 0 and standard deviation 1 (a constant row to zeros). (B, n) -> (B, n)"""
    mean = x.mean(1, keepdims=True)
    std = x.std(1, keepdims=True)
    return (x - mean) / np.where(std > 0, std, 1.0)


def _unit(x: np.ndarray) -> np.ndarray:
    return x / np.maximum(np.linalg.norm(x, axis=-1, keepdims=True), 1e-12)


def _check_params(cls: type, given: dict[str, Any]) -> dict[str, Any]:
    allowed = cls.DEFAULTS
    unknown = sorted(set(given) - set(allowed))
    if unknown:
        raise InvalidInput(f"model {cls.kind!r} has no option {unknown[0]!r}: its options are "
                           f"{', '.join(allowed) or 'none'}")
    params = dict(allowed)
    for key, value in given.items():
        default = allowed[key]
        kind = float if isinstance(default, float) or default is None else type(default)
        if value is not None and (isinstance(value, bool) or not isinstance(value, (int, float))
                                  or (kind is int and (not float(value).is_integer() or value < 1)) or value < 0):
            what = "a whole number >= 1" if kind is int else "a number >= 0"
            raise InvalidInput(f"{cls.kind} option {key}={value!r}: pass {what} (default {default})")
        params[key] = None if value is None else kind(value)
    return params


# -- popularity --------------------------------------------------------------------------------


class Popularity:
    """Summed event weights per item, optionally decayed by age: the same ranking for everyone."""

    kind = "popularity"
    needs_vectors = False
    DEFAULTS: dict[str, Any] = {"half_life_days": None}

    def __init__(self, **params: Any):
        self.p = _check_params(type(self), params)
        self.popularity: np.ndarray | None = None  # (n_items,)

    def fit(self, data: TrainData, seed: int = 0, progress: Progress | None = None) -> "Popularity":
        w = _decay(data, self.p["half_life_days"])
        self.popularity = np.bincount(data.item, weights=w, minlength=data.n_items).astype(np.float32)
        return self

    def scores(self, users: np.ndarray) -> np.ndarray:
        return np.broadcast_to(self.popularity, (len(users), len(self.popularity))).copy()

    def arrays(self) -> dict[str, np.ndarray]:
        return {"popularity": self.popularity}

    def params(self) -> dict[str, Any]:
        return dict(self.p)

    @classmethod
    def load(cls, arrays: dict[str, np.ndarray], params: dict[str, Any]) -> "Popularity":
        m = cls(**params)
        m.popularity = arrays["popularity"]
        return m


# -- matrix factorisation (implicit) -------------------------------------------------------------


class Factors:
    """A user x item factorisation: ``score = user_factors . item_factors``."""

    kind = "factors"
    needs_vectors = False
    DEFAULTS: dict[str, Any] = {}

    def __init__(self, **params: Any):
        self.p = _check_params(type(self), params)
        self.user_factors: np.ndarray | None = None  # (n_users, f)
        self.item_factors: np.ndarray | None = None  # (n_items, f)

    def _implicit(self, seed: int) -> Any:
        raise NotImplementedError

    def fit(self, data: TrainData, seed: int = 0, progress: Progress | None = None) -> "Factors":
        from threadpoolctl import threadpool_limits

        # One BLAS thread: implicit warns (and slows down) when OpenBLAS would use several.
        with threadpool_limits(1, "blas"):
            model = self._implicit(seed)
            model.fit(data.matrix, show_progress=False)
        self.user_factors = np.ascontiguousarray(model.user_factors, dtype=np.float32)
        self.item_factors = np.ascontiguousarray(model.item_factors, dtype=np.float32)
        return self

    @property
    def behaviour_factors(self) -> np.ndarray:
        return self.item_factors

    def scores(self, users: np.ndarray) -> np.ndarray:
        return self.user_factors[users] @ self.item_factors.T

    def arrays(self) -> dict[str, np.ndarray]:
        return {"user_factors": self.user_factors, "item_factors": self.item_factors}

    def params(self) -> dict[str, Any]:
        return dict(self.p)

    @classmethod
    def load(cls, arrays: dict[str, np.ndarray], params: dict[str, Any]) -> "Factors":
        m = cls(**params)
        m.user_factors, m.item_factors = arrays["user_factors"], arrays["item_factors"]
        return m


class ALS(Factors):
    kind = "als"
    DEFAULTS: dict[str, Any] = {"factors": 64, "regularization": 0.05, "alpha": 2.0, "iterations": 15}

    def _implicit(self, seed: int) -> Any:
        from implicit.cpu.als import AlternatingLeastSquares

        return AlternatingLeastSquares(factors=self.p["factors"], regularization=self.p["regularization"],
                                       alpha=self.p["alpha"], iterations=self.p["iterations"], random_state=seed,
                                       num_threads=1)


class BPR(Factors):
    kind = "bpr"
    DEFAULTS: dict[str, Any] = {"factors": 64, "learning_rate": 0.01, "regularization": 0.01, "iterations": 100}

    def _implicit(self, seed: int) -> Any:
        from implicit.cpu.bpr import BayesianPersonalizedRanking

        return BayesianPersonalizedRanking(factors=self.p["factors"], learning_rate=self.p["learning_rate"],
                                           regularization=self.p["regularization"], iterations=self.p["iterations"],
                                           random_state=seed, num_threads=1)


# -- ours: behaviour, text and tastes ---------------------------------------------------------


@dataclass
class HybridParts:
    """What the hybrid learns from one set of interactions. Items: ``als_items`` (ALS's factors),
    ``text_items`` (the ridge map's prediction from text), ``counts`` (distinct users); users:
    ``user_factors`` and ``profile`` (decayed weights, users x items); the catalogue's ``vectors``
    and ``attributes`` (items x attribute values, each row summing to 1 within each group) with the
    ``groups`` of the values."""

    user_factors: np.ndarray  # (n_users, f)
    als_items: np.ndarray  # (n_items, f)
    text_items: np.ndarray  # (n_items, f)
    counts: np.ndarray  # (n_items,)
    profile: sp.csr_matrix  # (n_users, n_items)
    vectors: np.ndarray  # (n_items, d)
    attributes: sp.csr_matrix  # (n_items, n_values)
    groups: np.ndarray  # (n_values,)
    smoothing: float

    def __post_init__(self) -> None:
        # per group: its value columns, their (n_items, n_g) slice and the catalogue's shares of them
        self.by_group = []
        for g in np.unique(self.groups):
            cols = np.flatnonzero(self.groups == g)
            a = self.attributes[:, cols].tocsr()
            self.by_group.append((cols, a, np.asarray(a.sum(0)).ravel() / max(a.sum(), 1e-9)))

    def item_factors(self, prior: float) -> np.ndarray:
        """ALS's factors shrunk towards the text's by ``prior`` pseudo-users: ``(n V + prior T) / (n +
        prior)``; an item without interactions gets the text's. (n_items, f)"""
        n = self.counts[:, None].astype(np.float32)
        mixed = (n * self.als_items + prior * self.text_items) / np.maximum(n + prior, 1e-9)
        return np.where(n > 0, mixed, self.text_items).astype(np.float32)

    def taste(self, users: np.ndarray) -> np.ndarray:
        """Per group (category, tags, language), the mean over the item's values of log P(value |
        user), P the user's decayed weights over the group's values smoothed towards the catalogue's
        shares by ``smoothing`` pseudo-interactions, summed over groups. (B,) -> (B, n_items)"""
        counts = (self.profile[users] @ self.attributes).toarray()  # (B, n_values)
        out = np.zeros((len(users), self.attributes.shape[0]))
        for cols, a, share in self.by_group:
            c = counts[:, cols]  # (B, n_g)
            p = (c + self.smoothing * share) / (c.sum(1, keepdims=True) + self.smoothing)
            out += np.asarray(a @ np.log(np.maximum(p, 1e-12)).T).T
        return out

    def components(self, users: np.ndarray, item_factors: np.ndarray) -> np.ndarray:
        """(3, B, n_items): the standardised collaborative, content and taste scores."""
        collab = self.user_factors[users] @ item_factors.T
        prof = _unit(np.asarray(self.profile[users] @ self.vectors))  # (B, d): the profile's direction
        content = prof @ self.vectors.T
        return np.stack([standardize(collab), standardize(content), standardize(self.taste(users))])


class Hybrid:
    """ALS with item factors shrunk towards those the text predicts, the cosine with the user's text
    profile and the user's attribute tastes, blended (see the module docstring)."""

    kind = "hybrid"
    needs_vectors = True
    DEFAULTS: dict[str, Any] = {**ALS.DEFAULTS, "ridge": 1.0, "profile_half_life_days": 60.0,
                                "taste_smoothing": 2.0}

    def __init__(self, **params: Any):
        self.p = _check_params(type(self), params)
        self.parts: HybridParts | None = None
        self.item_factors: np.ndarray | None = None  # (n_items, f) as scored
        self.prior = DEFAULT_PRIOR
        self.weights = {"warm": DEFAULT_WEIGHTS, "cold": DEFAULT_WEIGHTS}
        self.blend_info: dict[str, Any] = {}

    @property
    def vectors(self) -> np.ndarray:
        return self.parts.vectors

    @property
    def behaviour_factors(self) -> np.ndarray:
        return self.parts.als_items

    @property
    def blend(self) -> dict[str, Any]:
        return {"text_prior": self.prior, **{part: dict(zip(COMPONENTS, w)) for part, w in self.weights.items()}}

    def _fit_parts(self, data: TrainData, seed: int) -> HybridParts:
        if data.vectors is None or data.attributes is None:
            raise InvalidInput("the hybrid model needs item text vectors and attributes")
        als = ALS(**{k: self.p[k] for k in ALS.DEFAULTS}).fit(data, seed)
        counts = np.asarray(data.matrix.getnnz(axis=0))
        warm = counts > 0
        text_items = np.zeros_like(als.item_factors)
        if warm.any():
            x, y = data.vectors[warm], als.item_factors[warm]  # (n_warm, d), (n_warm, f)
            w = np.linalg.solve(x.T @ x + self.p["ridge"] * np.eye(x.shape[1], dtype=np.float32), x.T @ y)  # (d, f)
            text_items = (data.vectors @ w).astype(np.float32)
        profile = weight_matrix(data.user, data.item, _decay(data, self.p["profile_half_life_days"]),
                                data.matrix.shape)
        return HybridParts(als.user_factors, als.item_factors, text_items, counts, profile, data.vectors,
                           data.attributes, data.groups, self.p["taste_smoothing"])

    def fit(self, data: TrainData, seed: int = 0, progress: Progress | None = None) -> "Hybrid":
        self.prior, self.weights, self.blend_info = self.choose_blend(data, seed)
        self.parts = self._fit_parts(data, seed)
        self.item_factors = self.parts.item_factors(self.prior)
        return self

    def choose_blend(self, data: TrainData, seed: int) -> tuple[float, dict[str, tuple], dict[str, Any]]:
        """The text prior and the weights, chosen on a slice held out of ``data`` by mean NDCG@10:

        - *warm*: every user's last item (users with 3 items or more), ranked among the items they
          had not touched: first the text prior of :data:`PRIOR_GRID` (collaborative score alone),
          then the weights of :data:`WEIGHT_GRID`.
        - *cold*: pseudo-new items (a random :data:`PSEUDO_COLD_FRACTION` of the items with
          interactions, all their interactions removed), ranked among themselves for each user who
          had touched one: the weights of :data:`WEIGHT_GRID`.

        Fewer than :data:`MIN_VALIDATION_USERS` cases leave that part at its default."""
        rng = np.random.default_rng(seed)
        m = data.matrix
        order = np.lexsort((data.time, data.user))  # by user, then time: each user's last row ends a run
        last_row = order[np.r_[np.flatnonzero(np.diff(data.user[order])), len(order) - 1]] if len(order) else order
        n_items_of = np.asarray(m.getnnz(axis=1))
        val_pairs = sorted({(int(data.user[r]), int(data.item[r])) for r in last_row
                            if n_items_of[data.user[r]] >= 3})
        key = data.user.astype(np.int64) * data.n_items + data.item
        held = np.isin(key, np.array([u * data.n_items + i for u, i in val_pairs], dtype=np.int64))
        warm_items = np.flatnonzero(np.asarray(m.getnnz(axis=0)) > 0)
        pseudo = np.zeros(data.n_items, dtype=bool)
        pseudo[rng.choice(warm_items, int(round(PSEUDO_COLD_FRACTION * len(warm_items))), replace=False)] = True
        fit_data = data.subset(~(held | pseudo[data.item]))
        prior, weights = DEFAULT_PRIOR, {"warm": DEFAULT_WEIGHTS, "cold": DEFAULT_WEIGHTS}
        info: dict[str, Any] = {"metric": "NDCG@10", "components": list(COMPONENTS)}
        if not len(fit_data.user):
            info["note"] = "too few interactions to hold a slice out: the defaults"
            return prior, weights, info
        parts = self._fit_parts(fit_data, seed)
        seen = fit_data.matrix

        warm_cases = [(u, i) for u, i in val_pairs if not pseudo[i]]
        cold_truth: dict[int, set[int]] = {}
        for u, i in zip(data.user[pseudo[data.item]], data.item[pseudo[data.item]]):
            if seen.indptr[u + 1] > seen.indptr[u]:  # a user with history left
                cold_truth.setdefault(int(u), set()).add(int(i))
        info["warm_cases"], info["cold_cases"] = len(warm_cases), len(cold_truth)
        if len(warm_cases) >= MIN_VALIDATION_USERS:
            if len(warm_cases) > MAX_VALIDATION_USERS:
                picked = np.sort(rng.choice(len(warm_cases), MAX_VALIDATION_USERS, replace=False))
                warm_cases = [warm_cases[k] for k in picked]
            users, truth = np.array([u for u, _ in warm_cases]), [{i} for _, i in warm_cases]

            def excluded(batch: np.ndarray) -> np.ndarray:  # seen, or pseudo-new: not candidates
                mask = seen[batch].toarray() > 0
                mask[:, pseudo] = True
                return mask

            by_prior = {p: _grid_ndcg(parts, parts.item_factors(p), users, truth, excluded, [(1.0, 0.0, 0.0)])
                        [(1.0, 0.0, 0.0)] for p in PRIOR_GRID}
            prior = max(PRIOR_GRID, key=lambda p: (by_prior[p], -abs(p - DEFAULT_PRIOR)))
            results = _grid_ndcg(parts, parts.item_factors(prior), users, truth, excluded, WEIGHT_GRID)
            weights["warm"] = _best(results)
            info["warm_prior_ndcg"] = {str(p): round(v, 4) for p, v in by_prior.items()}
            info["warm_ndcg"] = {"best": round(results[weights["warm"]], 4),
                                 "behaviour only": round(results[(1.0, 0.0, 0.0)], 4)}
        else:
            info["warm_note"] = f"fewer than {MIN_VALIDATION_USERS} held-out users: the default weights"
        if len(cold_truth) >= MIN_VALIDATION_USERS:
            users = np.array(sorted(cold_truth))
            if len(users) > MAX_VALIDATION_USERS:
                users = np.sort(rng.choice(users, MAX_VALIDATION_USERS, replace=False))
            results = _grid_ndcg(parts, parts.item_factors(prior), users, [cold_truth[int(u)] for u in users],
                                 lambda batch: np.broadcast_to(~pseudo, (len(batch), data.n_items)), WEIGHT_GRID)
            weights["cold"] = _best(results)
            info["cold_ndcg"] = {"best": round(results[weights["cold"]], 4),
                                 "behaviour only": round(results[(1.0, 0.0, 0.0)], 4)}
        else:
            info["cold_note"] = f"fewer than {MIN_VALIDATION_USERS} users of pseudo-new items: the default weights"
        return prior, weights, info

    def scores(self, users: np.ndarray) -> np.ndarray:
        parts = self.parts.components(users, self.item_factors)  # (3, B, n_items)
        w = np.where(self.parts.counts[None, :] > 0, np.array(self.weights["warm"])[:, None],
                     np.array(self.weights["cold"])[:, None]).astype(np.float32)  # (3, n_items)
        return np.einsum("cbn,cn->bn", parts, w)

    def arrays(self) -> dict[str, np.ndarray]:
        p = self.parts
        return {"user_factors": p.user_factors, "als_items": p.als_items, "text_items": p.text_items,
                "counts": p.counts, "vectors": p.vectors, "groups": p.groups,
                **_csr_arrays("profile", p.profile), **_csr_arrays("attributes", p.attributes)}

    def params(self) -> dict[str, Any]:
        return {**self.p, "blend": self.blend, "blend_choice": self.blend_info}

    @classmethod
    def load(cls, arrays: dict[str, np.ndarray], params: dict[str, Any]) -> "Hybrid":
        m = cls(**{k: v for k, v in params.items() if k in cls.DEFAULTS})
        n_users, n_items = len(arrays["user_factors"]), len(arrays["vectors"])
        m.parts = HybridParts(arrays["user_factors"], arrays["als_items"], arrays["text_items"], arrays["counts"],
                              _csr_from("profile", arrays, (n_users, n_items)), arrays["vectors"],
                              _csr_from("attributes", arrays, (n_items, len(arrays["groups"]))), arrays["groups"],
                              m.p["taste_smoothing"])
        blend = params["blend"]
        m.prior = blend["text_prior"]
        m.weights = {part: tuple(blend[part][c] for c in COMPONENTS) for part in ("warm", "cold")}
        m.item_factors = m.parts.item_factors(m.prior)
        m.blend_info = params.get("blend_choice", {})
        return m


def _csr_arrays(name: str, m: sp.csr_matrix) -> dict[str, np.ndarray]:
    return {f"{name}_indptr": m.indptr, f"{name}_indices": m.indices, f"{name}_data": m.data}


def _csr_from(name: str, arrays: dict[str, np.ndarray], shape: tuple[int, int]) -> sp.csr_matrix:
    return sp.csr_matrix((arrays[f"{name}_data"], arrays[f"{name}_indices"], arrays[f"{name}_indptr"]), shape=shape)


def _best(results: dict[tuple, float]) -> tuple:
    """The best weights; on a tie the more even ones."""
    return max(results, key=lambda w: (results[w], -float(np.var(w))))


def _grid_ndcg(parts: HybridParts, item_factors: np.ndarray, users: np.ndarray, truth: list[set[int]],
               excluded: Callable[[np.ndarray], np.ndarray], grid: Sequence[tuple], k: int = 10,
               batch: int = 128) -> dict[tuple, float]:
    """Mean NDCG@k over ``users`` of each weighting in ``grid``, ``batch`` users scored at a time;
    ``excluded(batch) -> (B, n_items)`` marks what is not a candidate."""
    totals = dict.fromkeys(grid, 0.0)
    for start in range(0, len(users), batch):
        part = users[start:start + batch]
        comp = parts.components(part, item_factors)  # (3, B, n_items)
        mask = excluded(part)
        for w in grid:
            top = top_k(np.where(mask, -np.inf, np.tensordot(np.array(w), comp, 1)), k)
            totals[w] += sum(ndcg_at(row, t, k) for row, t in zip(top, truth[start:start + batch]))
    return {w: v / len(users) for w, v in totals.items()}


def ndcg_at(ranked: np.ndarray, truth: set[int], k: int = 10) -> float:
    """NDCG@k of one ranked list (binary relevance)."""
    gains = [1.0 / np.log2(r + 2) for r, i in enumerate(ranked[:k]) if int(i) in truth]
    ideal = sum(1.0 / np.log2(r + 2) for r in range(min(len(truth), k)))
    return float(sum(gains) / ideal) if ideal else 0.0


def top_k(scores: np.ndarray, k: int) -> np.ndarray:
    """Indices of each row's ``k`` highest scores, best first (ties in index order). (B, n) -> (B, k)"""
    k = min(k, scores.shape[1])
    top = np.argpartition(-scores, k - 1, axis=1)[:, :k] if k < scores.shape[1] else \
        np.tile(np.arange(scores.shape[1]), (len(scores), 1))
    order = np.lexsort((top, -np.take_along_axis(scores, top, 1)), axis=1)
    return np.take_along_axis(top, order, 1)


MODELS: dict[str, type] = {m.kind: m for m in (Popularity, ALS, BPR, Hybrid)}


def model_class(kind: str) -> type:
    if kind not in MODELS:
        raise InvalidInput(f"unknown model {kind!r}: use one of {', '.join(MODELS)}")
    return MODELS[kind]


# -- item text vectors ---------------------------------------------------------------------------

_CACHE_LOCK = threading.Lock()


def _sha(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def item_vectors(texts: Sequence[str], cache_dir: Path | None = None, progress: Progress | None = None,
                 batch: int = 32) -> tuple[np.ndarray, dict[str, Any]]:
    """(n, d) float32 unit vectors of item texts (e5 passages), centred on their mean and
    renormalised, and ``{"embedder", "embedded", "cached"}``. Vectors already embedded by the same
    embedder are read from ``cache_dir`` (one ``.npz`` per embedder id, keyed by each text's sha256),
    new ones are added to it, written through a rename."""
    from aigc.apps.assistant import retrieval

    emb = retrieval.embedder()
    keys = [_sha(t) for t in texts]
    cache: dict[str, np.ndarray] = {}
    path = None
    if cache_dir is not None:
        path = Path(cache_dir) / f"vectors-{_sha(emb.id)[:16]}.npz"
        if path.exists():
            with np.load(path) as z:
                cache = dict(zip(z["keys"].tolist(), z["vectors"]))
    todo = list(dict.fromkeys(k for k in keys if k not in cache))
    text_of = dict(zip(keys, texts))
    if progress and todo:
        progress("embedding item texts", 0, len(todo))
    for start in range(0, len(todo), batch):
        part = todo[start:start + batch]
        for k, v in zip(part, emb.embed_passages([text_of[k] for k in part])):
            cache[k] = v
        if progress:
            progress("embedding item texts", min(start + batch, len(todo)), len(todo))
    if path is not None and todo:
        with _CACHE_LOCK:
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_name(f".{path.stem}.{uuid.uuid4().hex[:8]}.tmp.npz")
            names = list(cache)
            np.savez(tmp, keys=np.array(names), vectors=np.stack([cache[k] for k in names]).astype(np.float32))
            os.replace(tmp, path)
    raw = np.stack([cache[k] for k in keys]).astype(np.float32) if keys else np.zeros((0, 0), np.float32)
    centred = _unit(raw - raw.mean(0, keepdims=True)) if len(raw) > 1 else raw
    return centred.astype(np.float32), {"embedder": emb.id, "embedded": len(todo), "cached": len(set(keys)) - len(todo)}
