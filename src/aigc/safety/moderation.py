"""Moderation: what the policy says about a text, in our terms and in OpenAI's.

``moderate(text)`` matches the policy's terms (:meth:`aigc.safety.policy.Policy.match_terms`),
scores each category (a term gives its category the score of its severity, raised a step where a
context rule of the policy says so; several terms combine as a noisy OR, each counted once), folds
in the policy's classifier's scores when it names one (the larger score wins) and scans for PII.
``Moderation.to_openai()`` is one result of OpenAI's ``/v1/moderations``: ``flagged``,
``categories`` and ``category_scores`` under OpenAI's names (our categories mapped by the policy;
one without a mapping keeps its own name), plus our ``matches`` and ``entities``.

:func:`assess` is the decision itself, shared with the rails: a category is on when its score
reaches its threshold; a term match blocks when its action is ``block`` and its category is on.

:class:`TextClassifier` is the hook for a workspace's own labelled data: character n-gram TF-IDF
and one logistic regression per category (scikit-learn fits it), saved as one ``.npz`` of arrays
and JSON (no pickle) and scored with numpy alone. A policy names it (``moderation.classifier``).

:class:`SemanticClassifier` is the one that ships (``builtin:moderation_e5.npz``): term lists miss
slang and paraphrase ("break every bone in your face", 带刀去公司), so e5 (:mod:`aigc.embedding`, the
model the assistant's retrieval uses) reads each piece of the text twice: its mean-pooled vector goes
through one hidden layer of ReLUs to a logit per category, and its latent terms (the wheel's sparse
autoencoder on each token, max-pooled: a phrase anywhere in the piece) add a linear term.
``scripts/train_moderation_classifier.py`` fits it on the policy benchmark's dev and train cases and
everyday negatives (halves of reviews, Shakespeare and shop copy; service texts), with the policy's
terms beside it: its thresholds and the confirm points at which it overrules a term are chosen by
cross-validation and folded into the intercepts, so a score of 0.5 (the policy's category threshold)
is that operating point. The default policy leaves it off (the figures and why are in the default
policy's comment); a workspace turns it on with ``moderation: {classifier: builtin:moderation_e5.npz}``.
It then reads prompts (the input rail) and ``/v1/moderations``, not the streaming output rail: an e5
call per released sentence on the decode loop took tokens/s to 0.40 of the layer off at 1 client and
0.20 at 16, where the budget is 0.90 (``benchmarks/serve_load.py --safety-overhead``); on prompts
alone on/off stayed within noise (1.10 and 1.08, one pair each, measured when a check was one e5 call
of ~20 ms against a 128-token stream's ~200 ms; it is two calls now).

:class:`aigc.safety.tuned.TunedClassifier` ships beside it (``builtin:moderation_e5_tuned.npz``, same
training rows, same rules for thresholds and confirm points): e5 itself fine-tuned for the categories
(LoRA on its top layers), where the classifier above reads e5's vectors as they come. And
:class:`aigc.safety.combined.CombinedClassifier` (``builtin:moderation_e5_combined.npz``): the two added, the
fine-tuned one's logits plus half the other's, piece by piece, with thresholds of its own; it blocks the
most (benchmarks/results/policy.json; on each sealed set, read once after the choice it tested: heldout8 0.954 at
0.042 false blocks, heldout9 0.927 at 0.033, heldout10 0.969 at 0.042, heldout11 0.960 at 0.038, heldout12 0.910 at
0.025, heldout13 0.954 at 0.025, policy_heldoutN.json; the files retrained in session 39 read heldout16 + heldout17 at
0.969 / 0.026, policy_s39_test.json) and costs both checks (~143 ms a prompt on two cores, session 40: with it on every
prompt, the serving benchmark's tokens/s fell to 0.56 of the layer off at 1 client and 0.27 at 16,
benchmarks/results/serve_safety_moderation_e5_combined.json). A policy names any of them; :func:`policy_classifier` loads whichever
format the file holds.

A classifier file may name a ``sentence_margin`` (:func:`text_logits`): a text of several sentences then also
scores its worst sentence, less that margin, so one harmful sentence in an ordinary post is not diluted by the
rest of its piece. No shipped file names one. Session 33 tried margins 0 to 3 on the combined one
(benchmarks/results/policy_s33_sentences.json): on heldout6-13 each blocked more (pooled 0.962 at margin 0, 0.958 at
3, against 0.955 without) but each flagged more than 1 % of held-out shopping reviews (2.72 % at margin 0, 1.45 % at 3,
against 0.88 %), and the 1 % everyday bar rules them out: the thresholds were chosen on whole pieces, and a lone
sentence of a long review (a hotel's "old" rooms, a brand "威武") scores as no piece did. Session 34 chose the
thresholds on sentence-level out-of-fold logits instead (``scripts/train_moderation_classifier.py --model combined
--sentences``; benchmarks/results/moderation_s34_sentence_grid.json, policy_s34_sentence_cv.json): under the same
budgets each margin then blocks less, on CV (0.874 at margin 0 to 0.931 at 3, against 0.936 without) and on
heldout6-13 (pooled 0.896 at 0 to 0.951 at 3, against 0.949 for the same procedure without sentences and 0.956
for the shipped file), so none is shipped. A file's ``sentence_min_chars`` reads by sentence only texts of at least
that many characters; session 40 (R17) tried 120 and 240 at margins 0, 1.5 and 3 on heldout6-20
(benchmarks/results/policy_s40_r17_validation.json): 240 added no block, 120 at most 10 of 7144, and each flagged
1.10 % to 2.03 % of held-out shopping reviews (0.92 % without), over the 1 % bar, so none is shipped either.
"""

from __future__ import annotations

import json
import math
import os
import re
import uuid
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np

from aigc.errors import InvalidInput
from aigc.safety.normalize import normalize
from aigc.safety.policy import BUILTIN, OPENAI_CATEGORIES, Policy, TermMatch, default_policy

MAX_BYTES = 1 << 20  # 1 MiB: a moderation request over it is refused (split the text)


@dataclass
class Assessment:
    """A policy's decision on one text (or one stream so far)."""

    scores: dict[str, float]  # category -> score in [0, 1]
    categories: dict[str, bool]  # category -> on (score at or over its threshold)
    blocking: list[TermMatch]  # matches whose action is block, in a category that is on
    redact: list[TermMatch]  # matches whose action is redact (masked whatever the threshold)
    blocked_by_classifier: list[str]  # categories the classifier put on whose action is block
    overruled: list[str] = field(default_factory=list)  # categories the terms put on and the classifier took off

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
    overruled = []
    for c, floor in (getattr(extra_scores, "confirm", None) or {}).items():  # see ClassifierScores
        s = extra_scores.get(c)
        if c in scores and s is not None and s < floor and scores[c] >= policy.categories[c].threshold > 0:
            overruled.append(c)
            scores[c] = 0.0  # the classifier's own score replaces the terms' below
    by_classifier = []
    for c, s in (extra_scores or {}).items():
        if c in scores and s > scores[c]:
            scores[c] = float(s)
            if s >= policy.categories[c].threshold and policy.categories[c].action == "block":
                by_classifier.append(c)
    on = {c: scores[c] >= cat.threshold and scores[c] > 0 for c, cat in policy.categories.items()}
    blocking = [m for m in matches if m.action == "block" and on[m.category]]
    redact = [m for m in matches if m.action == "redact"]
    return Assessment({c: round(s, 4) for c, s in scores.items()}, on, blocking, redact, by_classifier, overruled)


class ClassifierScores(dict):
    """A classifier's scores of one text (category -> probability) and ``confirm``: per category, the
    score below which the classifier overrules the policy's terms there (their matches do not turn the
    category on: a warning or a news item that quotes a term). Empty when the classifier has no such
    point; :func:`assess` reads it."""

    def __init__(self, scores: Mapping[str, float], confirm: Mapping[str, float] | None = None):
        super().__init__(scores)
        self.confirm = dict(confirm or {})


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
    overruled: list[str] = field(default_factory=list)  # categories matched terms put on, the classifier took off

    @property
    def rule_ids(self) -> list[str]:
        return sorted({m.rule_id for m in self.matches})

    def to_dict(self) -> dict[str, Any]:
        return {"flagged": self.flagged, "blocked": self.blocked, "categories": dict(self.categories),
                "category_scores": dict(self.category_scores), "matches": [m.to_dict() for m in self.matches],
                "entities": [e.to_dict() for e in self.entities], "overruled": list(self.overruled),
                "policy_version": self.policy_version}

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
    matches = policy.match_terms(text)
    verdict = assess(policy, matches, classifier_scores(policy, text, classifier))
    entities = (scanner or policy_scanner(policy)).scan(text)
    return Moderation(verdict.flagged, verdict.categories, verdict.scores, list(matches), list(entities),
                      verdict.blocked, policy.version,
                      {name: cat.openai for name, cat in policy.categories.items()}, list(verdict.overruled))


def classifier_scores(policy: Policy, text: str, classifier: Any = None) -> dict[str, float] | None:
    """``classifier``'s (else the policy's own) scores of ``text``, or None when there is none: what
    :func:`assess` folds in, for ``moderate`` and the input rail alike."""
    if classifier is None:
        classifier = policy_classifier(policy)
    if classifier is None:
        return None
    extra = classifier.scores(text)
    unknown = sorted(set(extra) - set(policy.categories))
    if unknown:
        raise InvalidInput(f"the classifier scores categories the policy lacks ({', '.join(unknown)}): "
                           f"add them to the policy or train the classifier on its categories")
    return extra


def policy_classifier(policy: Policy) -> TextClassifier | SemanticClassifier | None:
    """The classifier the policy names (``moderation.classifier``: ``builtin:NAME`` for one that
    ships, else a path relative to the policy's folder), or None."""
    ref = policy.doc["moderation"]["classifier"]
    if not ref:
        return None
    return classifier_at(ref, policy.base_dir, "the policy's moderation.classifier")


def classifier_at(ref: str, base_dir: Path | None, what: str = "the classifier") -> Any:
    """The classifier ``ref`` names (``builtin:NAME``, or a path, relative to ``base_dir``), loaded once per
    file version."""
    if ref.startswith(BUILTIN):
        from importlib import resources

        path = Path(str(resources.files("aigc").joinpath("resources/safety", ref[len(BUILTIN):])))
    else:
        path = Path(ref)
        if not path.is_absolute():
            path = (base_dir or Path(".")) / path
    try:
        st = path.stat()
    except FileNotFoundError:
        raise InvalidInput(f"{what} {ref} ({path}) does not exist: train one "
                           f"(TextClassifier.fit(...).save(path)) or remove the key") from None
    return _load_classifier(str(path), st.st_mtime_ns, st.st_size)


@lru_cache(maxsize=8)
def _load_classifier(path: str, mtime_ns: int, size: int) -> TextClassifier | SemanticClassifier:
    fmt = _read_npz(path)[0].get("format")
    if fmt == SEMANTIC_FORMAT:
        return SemanticClassifier.load(path)
    from aigc.safety.combined import COMBINED_FORMAT, CombinedClassifier

    if fmt == COMBINED_FORMAT:
        return CombinedClassifier.load(path)
    from aigc.safety.tuned import TUNED_FORMAT, TunedClassifier

    return TunedClassifier.load(path) if fmt == TUNED_FORMAT else TextClassifier.load(path)


def _read_npz(path: str | os.PathLike, fmt: str | None = None) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    """A classifier file's JSON ``meta`` and its arrays (no pickle), or InvalidInput; with ``fmt``, InvalidInput
    too unless the file is of that format."""
    try:
        with np.load(path, allow_pickle=False) as z:
            meta = json.loads(bytes(z["meta"]).decode("utf-8"))
            arrays = {k: z[k] for k in z.files if k != "meta"}
    except (OSError, ValueError, KeyError) as e:
        raise InvalidInput(f"{path} is not a moderation classifier ({type(e).__name__}: {e}): train one with "
                           f"TextClassifier.fit(...).save(path)") from None
    if fmt is not None and meta.get("format") != fmt:
        raise InvalidInput(f"{path} has format {meta.get('format')!r}, not {fmt!r}: retrain it")
    return meta, arrays


def _save_npz(path: str | os.PathLike, meta: dict[str, Any], **arrays: np.ndarray) -> Path:
    """Write ``meta`` (as JSON bytes) and ``arrays`` to ``path`` atomically."""
    path = Path(path)
    blob = np.frombuffer(json.dumps(meta, ensure_ascii=False).encode("utf-8"), dtype=np.uint8)
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex[:8]}.tmp.npz")
    try:
        np.savez(tmp, meta=blob, **arrays)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path


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
        meta = {"format": FORMAT, "categories": list(self.categories), "ngram_range": list(self.ngram_range),
                "vocabulary": sorted(self.vocabulary, key=self.vocabulary.get)}
        return _save_npz(path, meta, idf=self.idf, coef=self.coef, intercept=self.intercept)

    @classmethod
    def load(cls, path: str | os.PathLike) -> TextClassifier:
        meta, arrays = _read_npz(path, FORMAT)
        try:
            return cls(meta["categories"], meta["vocabulary"], arrays["idf"], arrays["coef"],
                       arrays["intercept"], tuple(meta["ngram_range"]))
        except KeyError as e:
            raise InvalidInput(f"{path} lacks {e} of a moderation classifier: retrain it") from None


def _char_wb_analyzer(ngram_range: tuple[int, int]):
    from sklearn.feature_extraction.text import TfidfVectorizer

    return TfidfVectorizer(analyzer="char_wb", ngram_range=ngram_range, lowercase=False).build_analyzer()


# -- the shipped classifier: e5 vectors --------------------------------------------------------------

SEMANTIC_FORMAT = "aigc-moderation-e5/1"
PIECE_CHARS = 512  # e5 reads 512 tokens; a piece of this many characters fits (a Chinese character is ~1)
MAX_PIECES = 8  # a longer text is read in its first 8 pieces (~4,000 characters); terms read all of it
_PIECE_END = re.compile(r"[。！？!?.\n]")


def pieces_of(text: str) -> list[str]:
    """``text`` in pieces of at most :data:`PIECE_CHARS` characters, each cut after its last sentence
    end (a hard cut where it has none), at most :data:`MAX_PIECES`: a threat inside a long text is
    scored in its own piece, not averaged into the whole, and a 1 MiB request costs 8 e5 calls."""
    out: list[str] = []
    while text and len(out) < MAX_PIECES:
        if len(text) <= PIECE_CHARS:
            out.append(text)
            break
        ends = [m.end() for m in _PIECE_END.finditer(text, 0, PIECE_CHARS)]
        cut = ends[-1] if ends else PIECE_CHARS
        out.append(text[:cut])
        text = text[cut:].lstrip()
    return out


MAX_SENTENCES = 16  # a text of several sentences is also read sentence by sentence, its first 16
_SENTENCE_END = re.compile(r"(?<=[。！？!?;；\n])")


def sentences_of(text: str) -> list[str]:
    """``text``'s sentences, each cut after 。！？!?;； or a line end, the first :data:`MAX_SENTENCES`, each
    at most :data:`PIECE_CHARS` characters; none for a text of one sentence (its pieces already are it).
    A full stop is not a cut (abbreviations, decimals); cutting there too was tried in session 33 only in a
    scratch script outside the repo (issue 13's note), so no figure is given here."""
    out = [s.strip()[:PIECE_CHARS] for s in _SENTENCE_END.split(text) if s.strip()]
    return out[:MAX_SENTENCES] if len(out) > 1 else []


def text_logits(piece_logits: Callable[[list[str]], np.ndarray], texts: Sequence[str],
                sentence_margin: float | None = None, sentence_min_chars: int = 0) -> np.ndarray:
    """(n, C): each text's highest logit per category over its pieces (:func:`pieces_of`, normalised) and,
    when ``sentence_margin`` is a number, over its sentences (:func:`sentences_of`) less that margin: one
    harmful sentence in an ordinary post is scored on its own, not diluted by the rest of its piece. Only a text
    of at least ``sentence_min_chars`` characters (normalised) is read by sentence: a short one is hardly diluted.
    ``piece_logits`` scores every piece and sentence of every text in one call."""
    def sentences(text: str) -> list[str]:
        text = TextClassifier.prepare(text)
        return sentences_of(text) if len(text) >= sentence_min_chars else []

    split = SemanticClassifier.split(texts)
    sents = [[] if sentence_margin is None else sentences(t) for t in texts]
    n = sum(map(len, split))
    z = piece_logits([p for ps in split for p in ps] + [s for ss in sents for s in ss])
    out = highest(z[:n], [len(ps) for ps in split])
    has = [i for i, ss in enumerate(sents) if ss]
    if has:
        out[has] = np.maximum(out[has], highest(z[n:] - sentence_margin, [len(sents[i]) for i in has]))
    return out


def highest(z: np.ndarray, counts: Sequence[int]) -> np.ndarray:
    """(n, C) from pieces' (pieces, C) logits ``z``: each text's highest per category over its ``counts[i]``
    pieces (in order): a text is as harmful as its worst piece."""
    starts = np.concatenate([[0], np.cumsum(counts)[:-1]]).astype(np.int64)
    return np.maximum.reduceat(z, starts, axis=0) if len(starts) else z[:0]


class SemanticClassifier:
    """One logistic regression per category over a text's e5 vector (query or passage prefix, as the
    training script chose on cross-validation), or over a hidden layer of ReLUs on it (``w1``, ``b1``).
    ``sparse_coef`` (optional, (C, 16,384)): a linear term over the piece's e5 latent terms
    (:meth:`aigc.embedding.E5.sparse`, each value v read as log(1 + v)) added to each logit.
    ``coef`` and ``intercept`` already hold each category's operating point, so its score is 0.5 there;
    a text's score is its highest piece's. ``confirm``: see :class:`ClassifierScores`."""

    def __init__(self, categories: Sequence[str], coef: np.ndarray, intercept: np.ndarray, kind: str,
                 meta: Mapping[str, Any] | None = None, confirm: np.ndarray | None = None,
                 w1: np.ndarray | None = None, b1: np.ndarray | None = None,
                 sparse_coef: np.ndarray | None = None):
        from aigc.embedding import DIM, KINDS

        self.categories = tuple(categories)
        # an optional hidden layer of ReLUs, relu(v @ w1.T + b1), that the regressions then read; kept
        # at float32 precision (as the file stores it, so a loaded classifier scores as this one does)
        self.w1 = None if w1 is None else np.asarray(w1, dtype=np.float32).astype(np.float64)  # (H, 384)
        self.b1 = None if b1 is None else np.asarray(b1, dtype=np.float32).astype(np.float64)  # (H,)
        if (self.w1 is None) != (self.b1 is None) or (self.w1 is not None and (
                self.w1.ndim != 2 or self.w1.shape[1] != DIM or self.b1.shape != (self.w1.shape[0],))):
            raise InvalidInput(f"classifier hidden layer arrays disagree: w1 "
                               f"{None if self.w1 is None else self.w1.shape} (want (H, {DIM})), b1 "
                               f"{None if self.b1 is None else self.b1.shape} (want (H,))")
        width = DIM if self.w1 is None else self.w1.shape[0]
        self.coef = np.asarray(coef, dtype=np.float64)  # (C, 384) or (C, H)
        self.intercept = np.asarray(intercept, dtype=np.float64)  # (C,)
        # (C,) logits: a category the terms put on stays on only where the classifier's logit is at
        # least this (-inf: never overruled); None: the terms are never overruled
        self.confirm = None if confirm is None else np.asarray(confirm, dtype=np.float64)
        if self.confirm is not None and self.confirm.shape != (len(self.categories),):
            raise InvalidInput(f"classifier arrays disagree: {len(self.categories)} categories, confirm "
                               f"{self.confirm.shape}")
        if self.coef.shape != (len(self.categories), width) or self.intercept.shape != (len(self.categories),):
            raise InvalidInput(f"classifier arrays disagree: {len(self.categories)} categories, coef "
                               f"{self.coef.shape} (want (C, {width})), intercept {self.intercept.shape}")
        # (C, latent terms) at float32 precision, as stored; None: the dense vector alone
        self.sparse_coef = None if sparse_coef is None else np.asarray(sparse_coef, np.float32).astype(np.float64)
        if self.sparse_coef is not None and (self.sparse_coef.ndim != 2
                                             or self.sparse_coef.shape[0] != len(self.categories)):
            raise InvalidInput(f"classifier arrays disagree: {len(self.categories)} categories, sparse_coef "
                               f"{self.sparse_coef.shape} (want (C, latent terms))")
        if kind not in KINDS:
            raise InvalidInput(f"classifier kind {kind!r} is not one of {', '.join(KINDS)}: retrain it")
        self.kind = kind
        self.meta = dict(meta or {})

    prepare = staticmethod(TextClassifier.prepare)

    @classmethod
    def split(cls, texts: Sequence[str]) -> list[list[str]]:
        """Each text's pieces, as e5 reads them (normalised; an empty text is one empty piece)."""
        return [pieces_of(cls.prepare(t)) or [""] for t in texts]

    @property
    def sentence_margin(self) -> float | None:
        """The file's ``sentence_margin`` (:func:`text_logits`); None (a text's pieces alone) when it has none."""
        return self.meta.get("sentence_margin")

    @property
    def sentence_min_chars(self) -> int:
        """The file's ``sentence_min_chars`` (:func:`text_logits`): the shortest text read by sentence; 0 when none."""
        return int(self.meta.get("sentence_min_chars") or 0)

    def logits(self, texts: Sequence[str]) -> np.ndarray:
        """(n, C): each text's highest logit per category (:func:`text_logits`)."""
        return text_logits(self.piece_logits, texts, self.sentence_margin, self.sentence_min_chars)

    def piece_logits(self, pieces: Sequence[str]) -> np.ndarray:
        """(n, C): the logits of ``pieces`` (each already one normalised piece, as :meth:`split` makes them)."""
        from aigc.embedding import SPARSE_TOP_K, e5

        vectors = e5().embed(list(pieces), self.kind)
        sparse = None
        if self.sparse_coef is not None:  # as many latent terms a piece as the fit read (the training script's record)
            sparse = e5().sparse(list(pieces), (self.meta.get("sparse") or {}).get("top_k", SPARSE_TOP_K))
        return self.logits_of(vectors, [1] * len(pieces), sparse)

    def logits_of(self, vectors: np.ndarray, counts: Sequence[int], sparse: Any = None) -> np.ndarray:
        """(n, C) from the e5 vectors of the texts' pieces, ``counts[i]`` of them text i's, in order (and
        their latent terms, raw, when the classifier reads them): the same figures as :meth:`logits`, for
        a caller that keeps the vectors (training, benchmarks)."""
        h = np.asarray(vectors, dtype=np.float64)
        if self.w1 is not None:
            h = np.maximum(h @ self.w1.T + self.b1, 0.0)
        z = h @ self.coef.T + self.intercept  # (pieces, C)
        if self.sparse_coef is not None:
            if sparse is None or sparse.shape != (len(h), self.sparse_coef.shape[1]):
                raise ValueError(f"this classifier reads {self.sparse_coef.shape[1]} latent terms of each of "
                                 f"{len(h)} pieces; got {None if sparse is None else sparse.shape}")
            z = z + np.asarray(sparse.log1p() @ self.sparse_coef.T)
        return highest(z, counts)

    def scores_many(self, texts: Sequence[str]) -> list[dict[str, float]]:
        return self.scores_of(self.logits(texts))

    def scores_of(self, logits: np.ndarray) -> list[dict[str, float]]:
        """Each row of (n, C) ``logits`` as :class:`ClassifierScores` (with the confirm points)."""
        p = 1.0 / (1.0 + np.exp(-np.asarray(logits, dtype=np.float64)))
        confirm = {} if self.confirm is None else {
            c: float(1.0 / (1.0 + np.exp(-v))) for c, v in zip(self.categories, self.confirm) if np.isfinite(v)}
        return [ClassifierScores(dict(zip(self.categories, map(float, row))), confirm) for row in p]

    def scores(self, text: str) -> dict[str, float]:
        return self.scores_many([text])[0]

    def save(self, path: str | os.PathLike) -> Path:
        meta = {**self.meta, "format": SEMANTIC_FORMAT, "categories": list(self.categories),
                "kind": self.kind}
        extra = {} if self.confirm is None else {"confirm": self.confirm}
        if self.w1 is not None:  # float32 on disk: the file stays small; scoring is float64
            extra.update(w1=self.w1.astype(np.float32), b1=self.b1.astype(np.float32))
        if self.sparse_coef is not None:
            extra.update(sparse_coef=self.sparse_coef.astype(np.float32))
        return _save_npz(path, meta, coef=self.coef, intercept=self.intercept, **extra)

    @classmethod
    def load(cls, path: str | os.PathLike) -> SemanticClassifier:
        from aigc.embedding import e5_id

        meta, arrays = _read_npz(path, SEMANTIC_FORMAT)
        if meta.get("embedder") != e5_id():
            raise InvalidInput(f"{path} was fitted on {meta.get('embedder')} vectors, this embedder is "
                               f"{e5_id()}: retrain it (scripts/train_moderation_classifier.py)")
        try:
            return cls(meta["categories"], arrays["coef"], arrays["intercept"], meta["kind"], meta,
                       arrays.get("confirm"), arrays.get("w1"), arrays.get("b1"), arrays.get("sparse_coef"))
        except KeyError as e:
            raise InvalidInput(f"{path} lacks {e} of a moderation classifier: retrain it") from None
