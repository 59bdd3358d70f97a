"""Moderation: what the policy says about a text, in our terms and in OpenAI's.

``moderate(text)`` matches the policy's terms (:meth:`aigc.safety.policy.Policy.match_terms`),
scores each category (a term gives its category the score of its severity, raised a step where a
context rule of the policy says so; several terms combine as a noisy OR, each counted once), folds
in a workspace classifier's scores when there is one (the larger score wins) and scans for PII.
``Moderation.to_openai()`` is one result of OpenAI's ``/v1/moderations``: ``flagged``,
``categories`` and ``category_scores`` under OpenAI's names (our categories mapped by the policy;
one without a mapping keeps its own name), plus our ``matches`` and ``entities``.

:func:`assess` is the decision itself, shared with the rails: a category is on when its score
reaches its threshold; a term match blocks when its action is ``block`` and its category is on.

:class:`TextClassifier` is the hook for a workspace's own labelled data: character n-gram TF-IDF
and one logistic regression per category (scikit-learn fits it), saved as one ``.npz`` of arrays
and JSON (no pickle) and scored with numpy alone. A policy names it (``moderation.classifier``).
"""

from __future__ import annotations

import json
import math
import os
import uuid
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np

from aigc.errors import InvalidInput
from aigc.safety.normalize import normalize
from aigc.safety.policy import OPENAI_CATEGORIES, Policy, TermMatch, default_policy

MAX_BYTES = 1 << 20  # 1 MiB: a moderation request over it is refused (split the text)


@dataclass
class Assessment:
    """A policy's decision on one text (or one stream so far)."""

    scores: dict[str, float]  # category -> score in [0, 1]
    categories: dict[str, bool]  # category -> on (score at or over its threshold)
    blocking: list[TermMatch]  # matches whose action is block, in a category that is on
    redact: list[TermMatch]  # matches whose action is redact (masked whatever the threshold)
    blocked_by_classifier: list[str]  # categories the classifier put on whose action is block

    @property
    def blocked(self) -> bool:
        return bool(self.blocking or self.blocked_by_classifier)

    @property
    def flagged(self) -> bool:
        return any(self.categories.values())

    @property
    def on(self) -> list[str]:
        return [c for c, v in self.categories.items() if v]


def assess(policy: Policy, matches: Sequence[TermMatch], extra_scores: Mapping[str, float] | None = None
           ) -> Assessment:
    """Scores, categories on, and which matches block, for ``matches`` (and classifier scores).
    A rule counts once however often it matches (its highest severity, a raise rule included): a
    word said twice is no second piece of evidence, so two ``slots`` are no casino."""
    strongest: dict[tuple[str, str], float] = {}
    for m in matches:
        key = (m.category, m.rule_id)
        strongest[key] = max(strongest.get(key, 0.0), policy.severity_score(m.severity))
    keep: dict[str, float] = {c: 1.0 for c in policy.categories}  # prod(1 - s) per category
    for (category, _), score in strongest.items():
        keep[category] *= 1.0 - score
    scores = {c: 1.0 - k for c, k in keep.items()}
    by_classifier = []
    for c, s in (extra_scores or {}).items():
        if c in scores and s > scores[c]:
            scores[c] = float(s)
            if s >= policy.categories[c].threshold and policy.categories[c].action == "block":
                by_classifier.append(c)
    on = {c: scores[c] >= cat.threshold and scores[c] > 0 for c, cat in policy.categories.items()}
    blocking = [m for m in matches if m.action == "block" and on[m.category]]
    redact = [m for m in matches if m.action == "redact"]
    return Assessment({c: round(s, 4) for c, s in scores.items()}, on, blocking, redact, by_classifier)


@dataclass
class Moderation:
    flagged: bool
    categories: dict[str, bool]  # our category names
    category_scores: dict[str, float]
    matches: list[TermMatch]
    entities: list[Any]  # aigc.safety.pii.Entity
    blocked: bool = False  # a rail would refuse it (a block action in a category that is on)
    policy_version: str = ""
    openai_map: dict[str, tuple[str, ...]] = field(default_factory=dict, repr=False)

    @property
    def rule_ids(self) -> list[str]:
        return sorted({m.rule_id for m in self.matches})

    def to_dict(self) -> dict[str, Any]:
        return {"flagged": self.flagged, "blocked": self.blocked, "categories": dict(self.categories),
                "category_scores": dict(self.category_scores), "matches": [m.to_dict() for m in self.matches],
                "entities": [e.to_dict() for e in self.entities], "policy_version": self.policy_version}

    def to_openai(self) -> dict[str, Any]:
        """One result of OpenAI's moderation response (its category names), plus ``matches`` and
        ``entities``. A category of ours with no OpenAI counterpart keeps its own name."""
        cats = {name: False for name in OPENAI_CATEGORIES}
        scores = {name: 0.0 for name in OPENAI_CATEGORIES}
        for ours, on in self.categories.items():
            for name in self.openai_map.get(ours) or (ours,):
                cats[name] = cats.get(name, False) or on
                scores[name] = max(scores.get(name, 0.0), self.category_scores.get(ours, 0.0))
        return {"flagged": self.flagged, "categories": cats, "category_scores": scores,
                "matches": [m.to_dict() for m in self.matches], "entities": [e.to_dict() for e in self.entities]}


def check_text(text: Any, what: str = "text") -> str:
    """``text`` if it is non-empty text of at most 1 MiB (UTF-8), else InvalidInput."""
    if not isinstance(text, str):
        raise InvalidInput(f"{what} must be a string, not {type(text).__name__}")
    if not text.strip():
        raise InvalidInput(f"{what} is empty: send the text to check")
    size = len(text.encode("utf-8", "surrogatepass"))
    if size > MAX_BYTES:
        raise InvalidInput(f"{what} is {size:,} bytes; moderation takes at most {MAX_BYTES:,} (1 MiB): "
                           f"split it into parts")
    return text


@lru_cache(maxsize=8)
def policy_scanner(policy: Policy) -> Any:
    """A PII scanner as ``policy`` configures it (no workspace key), one per policy."""
    return policy.scanner()


def moderate(text: str, policy: Policy | None = None, classifier: TextClassifier | None = None, *,
             scanner: Any = None) -> Moderation:
    """Moderate ``text`` under ``policy`` (default: the shipped one). ``classifier`` (else the one
    the policy names) adds its scores; ``scanner`` finds PII (default: the policy's own)."""
    check_text(text)
    policy = policy or default_policy()
    if classifier is None:
        classifier = policy_classifier(policy)
    matches = policy.match_terms(text)
    extra = classifier.scores(text) if classifier is not None else None
    if extra:
        unknown = sorted(set(extra) - set(policy.categories))
        if unknown:
            raise InvalidInput(f"the classifier scores categories the policy lacks ({', '.join(unknown)}): "
                               f"add them to the policy or train the classifier on its categories")
    verdict = assess(policy, matches, extra)
    entities = (scanner or policy_scanner(policy)).scan(text)
    return Moderation(verdict.flagged, verdict.categories, verdict.scores, list(matches), list(entities),
                      verdict.blocked, policy.version,
                      {name: cat.openai for name, cat in policy.categories.items()})


def policy_classifier(policy: Policy) -> TextClassifier | None:
    """The classifier the policy names (``moderation.classifier``, relative to its folder), or None."""
    ref = policy.doc["moderation"]["classifier"]
    if not ref:
        return None
    path = Path(ref)
    if not path.is_absolute():
        path = (policy.base_dir or Path(".")) / path
    try:
        st = path.stat()
    except FileNotFoundError:
        raise InvalidInput(f"the policy's moderation.classifier {path} does not exist: train one "
                           f"(TextClassifier.fit(...).save(path)) or remove the key") from None
    return _load_classifier(str(path), st.st_mtime_ns, st.st_size)


@lru_cache(maxsize=8)
def _load_classifier(path: str, mtime_ns: int, size: int) -> TextClassifier:
    return TextClassifier.load(path)


# -- the classifier hook ---------------------------------------------------------------------------

FORMAT = "aigc-moderation-classifier/1"


class TextClassifier:
    """Character n-gram TF-IDF + one logistic regression per category, trained on a workspace's
    own labelled texts. ``scores(text)`` -> {category: probability}; numpy only once trained."""

    def __init__(self, categories: Sequence[str], vocabulary: Sequence[str], idf: np.ndarray, coef: np.ndarray,
                 intercept: np.ndarray, ngram_range: tuple[int, int] = (1, 3)):
        self.categories = tuple(categories)
        self.vocabulary = {g: i for i, g in enumerate(vocabulary)}
        self.idf = np.asarray(idf, dtype=np.float64)  # (V,)
        self.coef = np.asarray(coef, dtype=np.float64)  # (C, V)
        self.intercept = np.asarray(intercept, dtype=np.float64)  # (C,)
        self.ngram_range = (int(ngram_range[0]), int(ngram_range[1]))
        v = len(self.vocabulary)
        if self.idf.shape != (v,) or self.coef.shape != (len(self.categories), v) or \
                self.intercept.shape != (len(self.categories),):
            raise InvalidInput(f"classifier arrays disagree: {len(self.categories)} categories, {v} n-grams, idf "
                               f"{self.idf.shape}, coef {self.coef.shape}, intercept {self.intercept.shape}")
        self._analyzer = _char_wb_analyzer(self.ngram_range)

    @staticmethod
    def prepare(text: str) -> str:
        return normalize(text).text

    @classmethod
    def fit(cls, texts: Sequence[str], labels: Sequence[str | Iterable[str] | None], *,
            categories: Sequence[str] | None = None, ngram_range: tuple[int, int] = (1, 3),
            max_features: int = 50_000, c: float = 4.0, seed: int = 0) -> TextClassifier:
        """Fit on ``texts`` with ``labels`` (a category, several, or None/"" for a benign text)."""
        from sklearn.feature_extraction.text import TfidfVectorizer
        from sklearn.linear_model import LogisticRegression

        if len(texts) != len(labels) or not texts:
            raise InvalidInput(f"fit needs texts and labels of one length (got {len(texts)} and {len(labels)})")
        sets = [set() if not lab else {lab} if isinstance(lab, str) else set(lab) for lab in labels]
        cats = list(categories) if categories is not None else sorted(set().union(*sets))
        if not cats:
            raise InvalidInput("no category among the labels: label the texts that break the policy")
        vec = TfidfVectorizer(analyzer="char_wb", ngram_range=ngram_range, lowercase=False,
                              max_features=max_features, dtype=np.float64)
        x = vec.fit_transform([cls.prepare(t) for t in texts])
        coef, intercept = [], []
        for cat in cats:
            y = np.array([cat in s for s in sets], dtype=int)
            if y.min() == y.max():
                raise InvalidInput(f"category {cat!r} needs labelled texts both in it and not in it "
                                   f"(got {int(y.sum())} of {len(y)} in it)")
            lr = LogisticRegression(C=c, class_weight="balanced", max_iter=2000, random_state=seed)
            lr.fit(x, y)
            coef.append(lr.coef_[0])
            intercept.append(lr.intercept_[0])
        vocab = [None] * len(vec.vocabulary_)
        for g, i in vec.vocabulary_.items():
            vocab[i] = g
        return cls(cats, vocab, vec.idf_, np.array(coef), np.array(intercept), ngram_range)

    def features(self, text: str) -> np.ndarray:
        """The L2-normalised TF-IDF vector of ``text`` (what sklearn's transform gives)."""
        x = np.zeros(len(self.vocabulary))
        for g in self._analyzer(self.prepare(text)):
            i = self.vocabulary.get(g)
            if i is not None:
                x[i] += 1.0
        x *= self.idf
        norm = math.sqrt(float(x @ x))
        return x / norm if norm else x

    def scores(self, text: str) -> dict[str, float]:
        logits = self.coef @ self.features(text) + self.intercept
        return {c: float(1.0 / (1.0 + math.exp(-z))) for c, z in zip(self.categories, logits)}

    def save(self, path: str | os.PathLike) -> Path:
        path = Path(path)
        meta = {"format": FORMAT, "categories": list(self.categories), "ngram_range": list(self.ngram_range),
                "vocabulary": sorted(self.vocabulary, key=self.vocabulary.get)}
        blob = np.frombuffer(json.dumps(meta, ensure_ascii=False).encode("utf-8"), dtype=np.uint8)
        tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex[:8]}.tmp.npz")
        try:
            np.savez(tmp, meta=blob, idf=self.idf, coef=self.coef, intercept=self.intercept)
            os.replace(tmp, path)
        finally:
            tmp.unlink(missing_ok=True)
        return path

    @classmethod
    def load(cls, path: str | os.PathLike) -> TextClassifier:
        try:
            with np.load(path, allow_pickle=False) as z:
                meta = json.loads(bytes(z["meta"]).decode("utf-8"))
                arrays = z["idf"], z["coef"], z["intercept"]
        except (OSError, ValueError, KeyError) as e:
            raise InvalidInput(f"{path} is not a moderation classifier ({type(e).__name__}: {e}): train one with "
                               f"TextClassifier.fit(...).save(path)") from None
        if meta.get("format") != FORMAT:
            raise InvalidInput(f"{path} has format {meta.get('format')!r}, not {FORMAT!r}: retrain it")
        return cls(meta["categories"], meta["vocabulary"], *arrays, tuple(meta["ngram_range"]))


def _char_wb_analyzer(ngram_range: tuple[int, int]):
    from sklearn.feature_extraction.text import TfidfVectorizer

    return TfidfVectorizer(analyzer="char_wb", ngram_range=ngram_range, lowercase=False).build_analyzer()
