"""Recommendations from what items say and what customers did.

    from aigc.apps import recommend
    recommend.train("shop", "items.csv", "events.csv")                   # the hybrid model, by default
    recommend.recommend("shop", "u00042", k=10, explain=True)["items"]   # [{item, score, title, reason}]
    recommend.similar("shop", "sku-00017", k=5)
    recommend.models()

A recommender NAME lives in ``<workspace>/recommend/NAME/``, built in the workspace's ``tmp/`` and
renamed into place (a retrain replaces it whole; a failed one leaves the old as it was):

- ``model.json``: ``name``, ``model`` (popularity | als | bpr | hybrid), ``params``, ``created``,
  ``id`` (new at every train), the summary :func:`train` returned.
- ``items.json``: ``ids``, ``titles``, ``categories``, ``langs`` (zh/en of each item's text),
  ``available``; ``users.json``: the user ids, rows of the arrays.
- ``arrays.npz``: ``popularity`` (n_items,: the cold-start answer), ``item_users`` (distinct users
  per item), the history (users x items CSR of summed weights, and of each pair's strongest event
  weight, for ``exclude_seen`` and the reasons) and the model's own arrays, prefixed ``model.``.

Item text vectors are cached in ``<workspace>/recommend/.cache/`` by the sha256 of each text, so a
retrain embeds only new or changed texts. Reading is :mod:`.data`'s, the models :mod:`.models`',
the benchmark's data :mod:`.synth`'s. The CLI and the server call this module, never the reverse.
"""

from __future__ import annotations

import json
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import scipy.sparse as sp

from aigc.errors import InvalidInput, NotFound

# Imported first, on purpose: importing a submodule sets the package attribute of its name, and
# ``recommend.models`` must stay the function below, not the module models.py (imported later, an
# already loaded submodule sets nothing).
from aigc.apps.recommend import data as reading  # noqa: E402
from aigc.apps.recommend.models import (Popularity, TrainData, item_vectors, model_class,  # noqa: E402
                                        standardize, top_k, weight_matrix)

DEFAULT_MODEL = "hybrid"
COPY_TOP = 3  # items given personalised copy when ``copy=True``
READ_OPTIONS = ("item_column", "title_column", "description_column", "category_column", "tags_column",
                "available_column", "user_column", "event_column", "time_column", "drop_unknown")
_VERBS = ((5.0, "bought", "购买"), (3.0, "added to your cart", "加购"), (2.0, "clicked", "点击"),
          (0.0, "viewed", "浏览"))
Progress = Callable[[str, int, int], None]


def _ws(workspace: Any):
    from aigc import open_workspace

    return open_workspace(workspace)


def recommender_path(ws: Any, name: str, fetch: bool = True) -> Path:
    """``recommend/<name>``: with an artifact store, fetched first when missing here or older there."""
    from aigc.workspace import check_name

    return ws.artifact_path("recommend", check_name(name, "recommender name"), fetch)


# -- train -------------------------------------------------------------------------------------


def train(name: str, items: Any, interactions: Any, *, model: str = DEFAULT_MODEL, workspace: Any = None,
          seed: int = 0, progress: Progress | None = None, **opts: Any) -> dict[str, Any]:
    """Train recommender ``name`` from a catalogue and interactions (files or pandas frames; see
    :mod:`.data`) and save it, replacing one of that name. ``opts``: the reading options
    (:data:`READ_OPTIONS`, e.g. ``item_column="sku"``, ``drop_unknown=True``) and the model's own
    (e.g. ``factors=32``; :data:`.models.MODELS`' ``DEFAULTS``). ``progress(stage, done, total)``
    hears the long stages. Returns the summary: counts, model, seconds, warnings."""
    started = time.perf_counter()
    ws = _ws(workspace)
    dest = recommender_path(ws, name, fetch=False)
    cls = model_class(model)
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise InvalidInput(f"seed must be a whole number, got {seed!r}")
    read = {k: opts.pop(k) for k in list(opts) if k in READ_OPTIONS}
    fitted = cls(**opts)  # unknown or bad model options fail here, before any reading
    item_opts = {k: v for k, v in read.items() if k in ("item_column", "title_column", "description_column",
                                                        "category_column", "tags_column", "available_column")}
    catalogue = reading.read_items(items, **item_opts)
    events = reading.read_interactions(interactions, catalogue, item_column=read.get("item_column"),
                                        user_column=read.get("user_column"), event_column=read.get("event_column"),
                                        time_column=read.get("time_column"),
                                        drop_unknown=bool(read.get("drop_unknown", False)))
    if progress:
        progress("reading interactions", len(events), len(events))
    shape = (len(events.user_ids), len(catalogue))
    train_data = TrainData(weight_matrix(events.user, events.item, events.weight, shape), events.user, events.item,
                           events.weight, events.time)
    summary: dict[str, Any] = {"name": name, "model": model}
    if cls.needs_vectors:
        train_data.attributes, train_data.groups, _ = catalogue.attributes()
        train_data.vectors, info = item_vectors(catalogue.texts, ws.root / "recommend" / ".cache", progress)
        summary.update(embedder=info["embedder"], embedded=info["embedded"], cached_vectors=info["cached"])
    if progress:
        progress(f"fitting {model}", 0, 1)
    fitted.fit(train_data, seed)
    if progress:
        progress(f"fitting {model}", 1, 1)
    popularity = fitted if isinstance(fitted, Popularity) else Popularity().fit(train_data, seed)
    history = train_data.matrix
    strongest = _max_matrix(events.user, events.item, events.weight, shape)
    item_users = np.asarray(history.getnnz(axis=0), dtype=np.int64)
    warnings = list(events.warnings)
    unavailable = int((~catalogue.available).sum())
    summary.update({
        "items": len(catalogue), "available": len(catalogue) - unavailable,
        "items_without_interactions": int((item_users == 0).sum()), "users": shape[0],
        "interactions": len(events), "events": events.events, "unknown_events": events.unknown_events,
        "dropped_unknown": events.dropped_unknown, "columns": {"items": catalogue.columns,
                                                               "interactions": events.columns},
        "params": fitted.params(), "seed": seed,
    })
    if hasattr(fitted, "blend"):  # the hybrid's chosen weights
        summary["blend"] = fitted.blend
    summary["warnings"] = warnings
    summary["seconds"] = round(time.perf_counter() - started, 3)  # saved before saving; returned after
    meta = {"name": name, "model": model, "id": uuid.uuid4().hex, "created": _now(), "params": fitted.params(),
            "summary": summary}
    arrays = {"popularity": popularity.popularity, "item_users": item_users,
              "history_indptr": history.indptr, "history_indices": history.indices, "history_data": history.data,
              "strongest_data": strongest.data,
              **{f"model.{k}": v for k, v in fitted.arrays().items()}}
    items_doc = {"ids": catalogue.ids, "titles": catalogue.titles, "categories": catalogue.categories,
                 "langs": catalogue.langs, "available": catalogue.available.tolist()}
    dest.parent.mkdir(parents=True, exist_ok=True)
    with ws.staging("recommend") as staged:
        np.savez(staged / "arrays.npz", **arrays)
        (staged / "items.json").write_text(json.dumps(items_doc, ensure_ascii=False), "utf-8")
        (staged / "users.json").write_text(json.dumps(events.user_ids, ensure_ascii=False), "utf-8")
        (staged / "model.json").write_text(json.dumps(meta, ensure_ascii=False, indent=2), "utf-8")
        ws.publish(staged, dest, replace=True)
    summary["seconds"] = round(time.perf_counter() - started, 3)
    summary["path"] = str(dest)
    return summary


def _max_matrix(user: np.ndarray, item: np.ndarray, weight: np.ndarray, shape: tuple[int, int]) -> sp.csr_matrix:
    """(users, items) CSR of each pair's largest weight, on the same sparsity pattern as the sums."""
    order = np.lexsort((-weight, item, user))  # per pair, the largest weight first
    u, i, w = user[order], item[order], weight[order]
    first = np.r_[True, (u[1:] != u[:-1]) | (i[1:] != i[:-1])]
    m = sp.csr_matrix((w[first], (u[first], i[first])), shape=shape)
    m.sort_indices()
    return m


def _now() -> str:
    from aigc.workspace import now

    return now()


# -- load --------------------------------------------------------------------------------------


@dataclass
class Recommender:
    """A trained recommender as loaded: its model, the catalogue's ids, titles, languages and
    availability, the user ids and their history."""

    name: str
    meta: dict[str, Any]
    model: Any
    item_ids: list[str]
    titles: list[str]
    categories: list[str]
    langs: list[str]
    available: np.ndarray  # (n_items,) bool
    user_ids: list[str]
    popularity: np.ndarray  # (n_items,)
    item_users: np.ndarray  # (n_items,) distinct users
    history: sp.csr_matrix  # (n_users, n_items) summed weights
    strongest: sp.csr_matrix  # (n_users, n_items) each pair's largest event weight

    def __post_init__(self) -> None:
        self.user_index = {u: k for k, u in enumerate(self.user_ids)}
        self.item_index = {i: k for k, i in enumerate(self.item_ids)}

    @property
    def kind(self) -> str:
        return self.meta["model"]


_LOADED: dict[str, tuple[str, Recommender]] = {}  # path -> (train id, recommender): reloaded after a retrain
_LOAD_LOCK = threading.Lock()
_MAX_LOADED = 8


def load(name: str, workspace: Any = None) -> Recommender:
    """Recommender ``name`` of the workspace, kept in memory until it is retrained."""
    ws = _ws(workspace)
    path = recommender_path(ws, name)
    try:
        meta = json.loads((path / "model.json").read_text("utf-8"))
    except FileNotFoundError:
        known = ", ".join(m["name"] for m in models(ws)) or "none"
        raise NotFound(f"no recommender {name!r} in this workspace (known: {known}): train it with "
                       f"`aigc recommend train {name} --items ITEMS --interactions EVENTS`") from None
    key = str(path.resolve())
    with _LOAD_LOCK:
        hit = _LOADED.get(key)
        if hit and hit[0] == meta["id"]:
            return hit[1]
    items = json.loads((path / "items.json").read_text("utf-8"))
    users = json.loads((path / "users.json").read_text("utf-8"))
    with np.load(path / "arrays.npz") as z:
        arrays = {k: z[k] for k in z.files}
    shape = (len(users), len(items["ids"]))
    history = sp.csr_matrix((arrays["history_data"], arrays["history_indices"], arrays["history_indptr"]), shape=shape)
    strongest = sp.csr_matrix((arrays["strongest_data"], arrays["history_indices"], arrays["history_indptr"]),
                              shape=shape)
    own = {k[len("model."):]: v for k, v in arrays.items() if k.startswith("model.")}
    rec = Recommender(name=name, meta=meta, model=model_class(meta["model"]).load(own, meta["params"]),
                      item_ids=items["ids"], titles=items["titles"], categories=items["categories"],
                      langs=items["langs"], available=np.array(items["available"], dtype=bool), user_ids=users,
                      popularity=arrays["popularity"], item_users=arrays["item_users"], history=history,
                      strongest=strongest)
    with _LOAD_LOCK:
        if len(_LOADED) >= _MAX_LOADED:
            _LOADED.pop(next(iter(_LOADED)))
        _LOADED[key] = (meta["id"], rec)
    return rec


def models(workspace: Any = None) -> list[dict[str, Any]]:
    """The recommenders of the workspace: name, model, counts, when trained."""
    ws = _ws(workspace)
    out = []
    for name in ws.artifact_names("recommend"):  # made here or in the artifact store; not .cache
        raw = ws.read_artifact_file("recommend", name, "model.json")  # not the whole recommender
        if raw is None:
            continue
        meta = json.loads(raw)
        s = meta.get("summary", {})
        out.append({"name": meta["name"], "model": meta["model"], "created": meta["created"],
                    "items": s.get("items"), "users": s.get("users"), "interactions": s.get("interactions"),
                    "seconds": s.get("seconds")})
    return out


# -- recommend ----------------------------------------------------------------------------------


def _check_k(k: Any) -> int:
    if isinstance(k, bool) or not isinstance(k, int) or k < 1:
        raise InvalidInput(f"k must be a whole number >= 1, got {k!r}: pass e.g. k=10")
    return k


def _verb(weight: float, lang: str) -> str:
    for floor, en, zh in _VERBS:
        if weight >= floor:
            return zh if lang == "zh" else en
    return ""


def _reason_similar(rec: Recommender, title: str, weight: float, lang: str, new: bool) -> str:
    if lang == "zh":
        return f"{'新品，' if new else ''}与您{_verb(weight, 'zh')}的「{title}」相似"
    return f"{'new: ' if new else ''}similar to '{title}' that you {_verb(weight, 'en')}"


def _reason_popular(rec: Recommender, i: int, lang: str) -> str:
    n = int(rec.item_users[i])
    return f"热门：{n} 位顾客互动过" if lang == "zh" else f"popular: {n} shoppers interacted with it"


def _item_similarity(rec: Recommender, targets: np.ndarray, sources: np.ndarray) -> np.ndarray | None:
    """(len(targets), len(sources)) cosine of item representations: text vectors when the model has
    them, else its item factors; None for the popularity model."""
    m = rec.model
    rows = getattr(m, "vectors", None)
    if rows is None:
        rows = getattr(m, "item_factors", None)
    if rows is None:
        return None
    a, b = rows[targets], rows[sources]
    a = a / np.maximum(np.linalg.norm(a, axis=1, keepdims=True), 1e-12)
    b = b / np.maximum(np.linalg.norm(b, axis=1, keepdims=True), 1e-12)
    return a @ b.T


def recommend(name: str, user: str, k: int = 10, *, workspace: Any = None, exclude_seen: bool = True,
              explain: bool = False, copy: bool | int = False) -> dict[str, Any]:
    """The ``k`` best items for ``user``: ``{model, user, cold_start, note, items: [{item, score, title,
    reason}]}``. Items the user touched are left out unless ``exclude_seen`` is False; unavailable
    items never come back. A user without history is a cold start: the most popular items, said so
    in ``note``. ``explain``: each item's ``reason`` in its own text's language. ``copy`` (True, or a
    number of items): personalised copy for the top items through :func:`aigc.apps.copy.write`, a
    model call per item."""
    k = _check_k(k)
    if not isinstance(user, str) or not user.strip():
        raise InvalidInput(f"user must be a non-empty id, got {user!r}")
    rec = load(name, workspace)
    u = rec.user_index.get(user)
    cold = u is None
    if cold:
        scores = rec.popularity.astype(np.float64).copy()
        note = f"no history for user {user}: most popular items"
    else:
        scores = rec.model.scores(np.array([u]))[0].astype(np.float64)
        note = "the popularity model: the most popular items, for every user alike" if rec.kind == "popularity" \
            else None
    scores[~rec.available] = -np.inf
    seen = np.zeros(0, dtype=np.int64) if cold else rec.history.indices[rec.history.indptr[u]:rec.history.indptr[u + 1]]
    if exclude_seen and len(seen):
        scores[seen] = -np.inf
    top = [int(i) for i in top_k(scores[None, :], k)[0] if np.isfinite(scores[i])]
    out = [{"item": rec.item_ids[i], "score": round(float(scores[i]), 6), "title": rec.titles[i], "reason": None}
           for i in top]
    if explain and top:
        _explain(rec, out, top, u, seen)
    n_copy = (COPY_TOP if copy is True else int(copy)) if copy else 0
    if n_copy:
        _copy(rec, out[:n_copy], top[:n_copy], workspace)
    return {"model": name, "kind": rec.kind, "user": user, "cold_start": cold, "note": note, "items": out}


def _explain(rec: Recommender, out: list[dict[str, Any]], top: list[int], u: int | None, seen: np.ndarray) -> None:
    """Each item's reason: the history item it is most like (with what the user did to it), or its
    popularity when there is no history or nothing to compare by."""
    sim = _item_similarity(rec, np.array(top), seen) if u is not None and len(seen) else None
    new = rec.item_users == 0
    for row, i, entry in zip(range(len(top)), top, out):
        lang = rec.langs[i]
        if sim is None:
            entry["reason"] = _reason_popular(rec, i, lang)
            continue
        j = int(seen[int(np.argmax(sim[row]))])
        weight = float(rec.strongest[u, j])
        entry["reason"] = _reason_similar(rec, rec.titles[j], weight, lang, bool(new[i]))


def _copy(rec: Recommender, entries: list[dict[str, Any]], top: list[int], workspace: Any) -> None:
    from aigc.apps import copy as copy_desk

    for entry, i in zip(entries, top):
        zh = rec.langs[i] == "zh"
        product = {"名称": rec.titles[i], "类目": rec.categories[i]} if zh else \
            {"name": rec.titles[i], "category": rec.categories[i]}
        brief = {"channel": "social"}
        if entry.get("reason"):
            brief["audience"] = entry["reason"]
        result = copy_desk.write({k: v for k, v in product.items() if v}, brief, n=1, workspace=workspace)
        entry["copy"] = result["candidates"][0]["text"] if result.get("candidates") else None


# -- similar ------------------------------------------------------------------------------------


def similar(name: str, item: str, k: int = 10, *, workspace: Any = None) -> dict[str, Any]:
    """The ``k`` available items most like ``item``: by text vectors (the hybrid), blended with the
    items' behaviour factors when the item had interactions; by factors alone for ALS and BPR; by
    co-interaction (users in common, cosine) for popularity."""
    k = _check_k(k)
    rec = load(name, workspace)
    i = rec.item_index.get(item)
    if i is None:
        raise NotFound(f"no item {item!r} in recommender {name!r}: pass an id of its catalogue "
                       f"(e.g. {', '.join(repr(x) for x in rec.item_ids[:3])})")
    m = rec.model
    warm = rec.item_users[i] > 0
    parts = []
    vectors = getattr(m, "vectors", None)
    if vectors is not None:
        parts.append(vectors @ vectors[i])
    factors = getattr(m, "behaviour_factors", None)
    if factors is not None and warm:
        f = factors / np.maximum(np.linalg.norm(factors, axis=1, keepdims=True), 1e-12)
        parts.append(f @ f[i])
    if factors is None and vectors is None:  # popularity: users in common
        binary = (rec.history > 0).astype(np.float32).tocsc()
        co = np.asarray((binary.T @ binary[:, i]).todense()).ravel()
        norms = np.sqrt(np.maximum(rec.item_users, 1).astype(np.float64))
        parts.append(co / (norms * norms[i]))
    if not parts:
        raise InvalidInput(f"item {item!r} had no interactions and the {rec.kind} model has no text vectors to "
                           f"compare it by: train the hybrid model (`aigc recommend train {name} --model hybrid`)")
    scores = standardize(np.stack(parts)).mean(0) if len(parts) > 1 else parts[0].astype(np.float64)
    scores = scores.astype(np.float64)
    scores[i] = -np.inf
    scores[~rec.available] = -np.inf
    top = [int(j) for j in top_k(scores[None, :], k)[0] if np.isfinite(scores[j])]
    return {"model": name, "kind": rec.kind, "item": item, "title": rec.titles[i],
            "items": [{"item": rec.item_ids[j], "score": round(float(scores[j]), 6), "title": rec.titles[j]}
                      for j in top]}
