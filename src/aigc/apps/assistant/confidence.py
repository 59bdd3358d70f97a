"""How sure the assistant is that its knowledge base answers a question, and how that is calibrated.

:func:`features` reads a question's hits: the top hit's (language-centred) cosine, its margin to the
best hit of another entry, the best uncentred cosine and log(1 + the best BM25). :func:`confidence`
is a logistic model over them, standardised; :func:`fit_calibration` fits it on labelled questions
and picks the lowest threshold whose answered precision reaches the target. e5's cosines are
compressed (off-topic questions still score 0.83-0.86, as measured when issue 15 was written), so
the model is fitted per embedding model: ``calibration.json`` ships one per embedder id
(``benchmarks/assistant.py --calibrate``), and a knowledge base may carry its own (``aigc kb calibrate``).

**The margin's rival is another entry, in either language.** The top hit's translation (the same
FAQ entry in the other language) is no rival. A cosine threshold does not find it: centred, the
cosine of an entry and its translation is 0.43-0.71 (hit vectors renormalised; the 10 bilingual
pairs of the assistant benchmark), below that of two related entries of one language (up to 0.75).
The translation is the top hit's mutual nearest hit across languages (:func:`twin`), from
:data:`TWIN_MIN` (the other mutual nearest pairs among the questions' hits: median 0.30).
Taken as the rival, as before, the translation left a question that matches a bilingual entry a
margin near zero (asked back), while one whose right entry exists in one language kept a wide one.

**The threshold is read off out-of-fold probabilities.** On the questions the model was fitted on,
its probabilities are optimistic, and the lowest threshold reaching the precision there falls short
on new questions. :func:`fit_calibration` picks it on the probabilities of :data:`OOF_REPEATS`
seeded shuffles into :data:`OOF_FOLDS` folds, each question scored by the model fitted without its
fold; the model applied is the one fitted on all the questions.

Measured by ``benchmarks/assistant.py --calibrate`` (its 2-fold split by entry, target 0.90), before
and after the two changes: answered precision 0.900 -> 0.905, answerable answered 0.575 -> 0.608,
out-of-scope not answered 0.967 -> 0.967. The precision varies by a few points between splits.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from importlib import resources
from typing import Any

import numpy as np

from aigc.apps import lang_of
from aigc.errors import InvalidInput

NEAR_DUPLICATE = 0.92  # cosine (of renormalised hit vectors) above which two hits say the same thing
TWIN_MIN = 0.4  # ... and from which a mutual nearest hit in another language may be a translation
OOF_FOLDS, OOF_REPEATS = 5, 4  # the out-of-fold probabilities the threshold is picked on


def _default_calibration() -> dict[str, Any]:
    return json.loads(resources.files("aigc.apps.assistant").joinpath("calibration.json").read_text("utf-8"))


def calibration_for(own: Mapping[str, Any] | None, embedder: str, name: str) -> dict[str, Any]:
    """The knowledge base's own calibration, else the one shipped for its embedder."""
    if own:
        return own
    shipped = _default_calibration()
    if embedder not in shipped:
        raise InvalidInput(f"no confidence calibration for embedder {embedder!r}: run "
                           f"`aigc kb calibrate {name} QUESTIONS.jsonl` with labelled questions")
    return shipped[embedder]


FEATURES = ("top_cosine", "margin", "top_raw_cosine", "log1p_bm25")


def _unit(x: np.ndarray) -> np.ndarray:
    return x / np.maximum(np.linalg.norm(x, axis=-1, keepdims=True), 1e-12)


def twin(vecs: np.ndarray, langs: Sequence[str], i: int = 0) -> int | None:
    """The index of hit ``i``'s translation among the hits (``vecs`` their vectors, ``langs`` their
    languages): the hit in another language closest to it, when hit ``i`` is also the closest to that
    one among the hits not in that one's language (mutual nearest neighbours across languages) and
    their cosine reaches :data:`TWIN_MIN` (a one-language entry's nearest is some other entry)."""
    vecs = _unit(np.asarray(vecs, dtype=np.float64))
    other = [j for j in range(len(langs)) if langs[j] != langs[i]]
    if not other:
        return None
    j = other[int(np.argmax(vecs[other] @ vecs[i]))]
    back = [k for k in range(len(langs)) if langs[k] != langs[j]]
    mutual = back[int(np.argmax(vecs[back] @ vecs[j]))] == i
    return j if mutual and float(vecs[i] @ vecs[j]) >= TWIN_MIN else None


def langs_of(hits: Sequence[Any]) -> list[str]:
    """Each hit's language, as the knowledge base reads it (``KnowledgeBase.langs``)."""
    return [lang_of(h.chunk["text"]) for h in hits]


def features(hits: Sequence[Any], vectors_of) -> np.ndarray:
    """What the confidence model reads (:data:`FEATURES`): the top hit's centred cosine, its margin
    to the best hit that is neither its translation (:func:`twin`) nor a near-duplicate of it, the
    best uncentred cosine, and log(1 + the best BM25) (words of the question found verbatim)."""
    if not hits:
        return np.zeros(len(FEATURES))
    vecs = _unit(np.asarray(vectors_of(hits), dtype=np.float64))
    t = twin(vecs, langs_of(hits))
    near = vecs @ vecs[0]
    rivals = [h.vector for i, h in enumerate(hits) if i and i != t and near[i] < NEAR_DUPLICATE]
    rival = max(rivals) if rivals else min(h.vector for h in hits)
    top = hits[0]
    return np.array([top.vector, top.vector - rival, max(h.raw for h in hits),
                     float(np.log1p(max(h.bm25 for h in hits)))])


def confidence(feat: np.ndarray, cal: Mapping[str, Any]) -> float:
    x = (np.asarray(feat, dtype=float) - np.asarray(cal["mean"])) / np.asarray(cal["scale"])
    z = float(np.dot(cal["weights"], x) + cal["bias"])
    return 1.0 / (1.0 + np.exp(-z))


def _out_of_fold(x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(probabilities, labels) of each question by models fitted without it: :data:`OOF_REPEATS`
    seeded shuffles into :data:`OOF_FOLDS` folds (a fold whose rest holds one class is skipped)."""
    from sklearn.linear_model import LogisticRegression

    rng = np.random.default_rng(0)
    probs, labels = [], []
    for _ in range(OOF_REPEATS):
        order = rng.permutation(len(y))
        for held in np.array_split(order, OOF_FOLDS):
            rest = np.setdiff1d(order, held)
            if not len(held) or y[rest].all() or not y[rest].any():
                continue
            lr = LogisticRegression(C=1.0).fit(x[rest], y[rest].astype(int))
            probs.append(lr.predict_proba(x[held])[:, 1])
            labels.append(y[held])
    return (np.concatenate(probs), np.concatenate(labels)) if probs else (np.zeros(0), np.zeros(0, bool))


def fit_calibration(feats: np.ndarray, answerable: np.ndarray, *, precision: float = 0.9) -> dict[str, Any]:
    """A logistic model over standardised :func:`features` and the lowest threshold whose answered
    precision is at least ``precision`` on out-of-fold probabilities (module docstring; in-sample
    ones when there are too few questions to hold any out), so the answered share is as large as
    that allows. ``answerable``: the knowledge base answers the question (right, when known)."""
    from sklearn.linear_model import LogisticRegression

    feats = np.asarray(feats, dtype=float)
    answerable = np.asarray(answerable, dtype=bool)
    if answerable.all() or not answerable.any():
        raise InvalidInput("calibration needs both answerable and out-of-scope questions")
    mean, scale = feats.mean(0), feats.std(0) + 1e-9
    x = (feats - mean) / scale
    lr = LogisticRegression(C=1.0).fit(x, answerable.astype(int))
    cal = {"features": list(FEATURES), "mean": [float(m) for m in mean], "scale": [float(v) for v in scale],
           "weights": [float(w) for w in lr.coef_[0]], "bias": float(lr.intercept_[0])}
    probs, labels = _out_of_fold(x, answerable)
    if not len(probs):
        probs, labels = lr.predict_proba(x)[:, 1], answerable
    threshold = 0.5
    for t in sorted(set(np.round(probs, 4))):
        answered = probs >= t
        if answered.any() and labels[answered].mean() >= precision:
            threshold = float(t)
            break
    cal["threshold"] = threshold
    return cal
