"""How sure the assistant is that its knowledge base answers a question, and how that is calibrated.

:func:`features` reads a question's hits: the top hit's (language-centred) cosine, its margin to the
best hit that is not a near-duplicate of it (the same FAQ entry in the other language is no rival),
the best uncentred cosine and log(1 + the best BM25). :func:`confidence` is a logistic model over
them, standardised; :func:`fit_calibration` fits it on labelled questions and picks the lowest
threshold whose answered precision reaches the target. e5's cosines are compressed (off-topic
questions still score 0.83-0.86, as measured when issue 15 was written), so the model is fitted per embedding model: ``calibration.json``
ships one per embedder id (``benchmarks/assistant.py --calibrate``), and a knowledge base may carry
its own (``aigc kb calibrate``).
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from importlib import resources
from typing import Any

import numpy as np

from aigc.errors import InvalidInput

NEAR_DUPLICATE = 0.92  # passage cosine above which two hits say the same thing (e.g. one FAQ in zh and en)


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


def features(hits: Sequence[Any], vectors_of) -> np.ndarray:
    """What the confidence model reads (:data:`FEATURES`): the top hit's centred cosine, its margin
    to the best hit that is not a near-duplicate of it, the best uncentred cosine, and log(1 + the
    best BM25) (words of the question found verbatim)."""
    if not hits:
        return np.zeros(len(FEATURES))
    top = hits[0]
    vecs = vectors_of(hits)
    rival = 0.0
    for h, v in zip(hits[1:], vecs[1:]):
        if float(vecs[0] @ v) < NEAR_DUPLICATE:
            rival = max(rival, h.vector)
    rival = rival or min(h.vector for h in hits)
    return np.array([top.vector, top.vector - rival, max(h.raw for h in hits),
                     float(np.log1p(max(h.bm25 for h in hits)))])


def confidence(feat: np.ndarray, cal: Mapping[str, Any]) -> float:
    x = (np.asarray(feat, dtype=float) - np.asarray(cal["mean"])) / np.asarray(cal["scale"])
    z = float(np.dot(cal["weights"], x) + cal["bias"])
    return 1.0 / (1.0 + np.exp(-z))


def fit_calibration(feats: np.ndarray, answerable: np.ndarray, *, precision: float = 0.9) -> dict[str, Any]:
    """A logistic model over standardised :func:`features` and the lowest threshold whose answered
    precision on these questions is at least ``precision`` (so the answered share is as large as that
    allows). ``answerable``: the knowledge base answers the question (right, when known)."""
    from sklearn.linear_model import LogisticRegression

    feats = np.asarray(feats, dtype=float)
    answerable = np.asarray(answerable, dtype=bool)
    if answerable.all() or not answerable.any():
        raise InvalidInput("calibration needs both answerable and out-of-scope questions")
    mean, scale = feats.mean(0), feats.std(0) + 1e-9
    lr = LogisticRegression(C=1.0).fit((feats - mean) / scale, answerable.astype(int))
    cal = {"features": list(FEATURES), "mean": [float(m) for m in mean], "scale": [float(v) for v in scale],
           "weights": [float(w) for w in lr.coef_[0]], "bias": float(lr.intercept_[0])}
    probs = np.array([confidence(f, cal) for f in feats])
    threshold = 0.5
    for t in sorted(set(np.round(probs, 4))):
        answered = probs >= t
        if answered.any() and answerable[answered].mean() >= precision:
            threshold = float(t)
            break
    cal["threshold"] = threshold
    return cal
