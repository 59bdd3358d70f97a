"""Reranking text samples by a classifier of their conditions: draw ``candidates`` samples for each
one wanted, keep those a classifier of the condition columns reads most surely as asked.

A language model that has learned its conditions only in part (a small model, a short budget, a
column whose values show in a few words) still draws on-condition samples some of the time; the
classifier finds them. Its cost is generation: ``candidates`` times the tokens. The classifier is
:func:`aigc.metrics.text.fit_condition_classifiers` (char n-gram TF-IDF + logistic regression),
fitted on the run's train split.

This module knows texts, condition dicts and a ``TextGenerator``; it knows nothing about the
workspace beyond reading a run's train split in :func:`judge_for_run`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from aigc.data.clean import clean_text
from aigc.data.dataset import TextRecord
from aigc.errors import InvalidInput
from aigc.metrics import text as tm


class ConditionJudge:
    """Per condition column, a fitted classifier of the value from text (scikit-learn pipeline)."""

    def __init__(self, classifiers: dict[str, Any]):
        self.classifiers = dict(classifiers)

    @classmethod
    def fit(cls, records: Sequence[TextRecord], columns: Sequence[str], *, seed: int = 0) -> ConditionJudge:
        """Fit one classifier per column that has at least two values in ``records``."""
        labels = {c: [r.cond[c] for r in records] for c in columns}
        labels = {c: v for c, v in labels.items() if len(set(v)) >= 2}
        return cls(tm.fit_condition_classifiers([r.text for r in records], labels, seed=seed))

    def scores(self, texts: Sequence[str], cond: dict[str, str]) -> np.ndarray:
        """(N,) summed log-probability, over the columns of ``cond`` the judge knows, that each text
        has the asked value; a value no classifier knows adds nothing (it cannot be judged). A value
        is looked up as given, then cleaned as ingest cleans text (NFKC: full-width letters from a
        Chinese input method), as the generator cleans it before it names a control token."""
        total = np.zeros(len(texts))
        cut = [t[: tm.CLASSIFY_CHARS] for t in texts]
        for col, value in cond.items():
            clf = self.classifiers.get(col)
            if clf is None or not texts:
                continue
            value = str(value)
            if value not in clf.classes_:
                value = clean_text(value, normalize=True)
            if value not in clf.classes_:
                continue
            column = list(clf.classes_).index(value)
            total += np.log(np.clip(clf.predict_proba(cut)[:, column], 1e-12, None))
        return total

    def choose(self, texts: Sequence[str], cond: dict[str, str], n: int) -> list[int]:
        """The indices of the ``n`` texts judged most surely on ``cond``, in the order they were drawn."""
        if not 1 <= n <= len(texts):
            raise InvalidInput(f"n must be between 1 and the {len(texts)} candidates, got {n}")
        order = np.argsort(-self.scores(texts, cond), kind="stable")[:n]  # ties: the earlier draw
        return sorted(int(i) for i in order)

    def pick(self, texts: Sequence[str], cond: dict[str, str], n: int) -> list[str]:
        """The ``n`` texts judged most surely on ``cond``, in the order they were drawn."""
        return [texts[i] for i in self.choose(texts, cond, n)]


def check_candidates(value: Any, name: str = "candidates") -> int:
    """``value`` if it is a whole number of candidates per sample (>= 1; 1 = no reranking)."""
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise InvalidInput(f"{name} must be a whole number >= 1 (1 = no reranking), got {value!r}")
    return value


def generate_reranked(gen, prompt: str = "", *, n: int = 1, cond: dict[str, str] | None = None,
                      candidates: int = 4, judge: ConditionJudge, **sampling) -> list[str]:
    """``n`` samples of ``gen.generate``, each the best judged of ``candidates`` draws.

    The draws are one ``generate`` call of ``n * candidates`` samples with the sampling given (seed
    included), so the result is as deterministic as generation itself. Without conditions there is
    nothing to judge and ``n`` samples are drawn as usual.
    """
    check_candidates(candidates)
    if not cond or candidates == 1:
        return gen.generate(prompt, n=n, cond=cond, **sampling)
    drawn = gen.generate(prompt, n=n * candidates, cond=cond, **sampling)
    return judge.pick(drawn, cond, n)


class RerankedGenerator:
    """A text generator whose ``generate`` returns each sample as the best of ``candidates`` draws
    (:func:`generate_reranked`); everything else is the wrapped generator's."""

    def __init__(self, gen, judge: ConditionJudge, candidates: int):
        self.gen, self.judge, self.candidates = gen, judge, candidates

    def __getattr__(self, name: str):
        return getattr(self.gen, name)

    def generate(self, prompt: str = "", **options) -> list[str]:
        return generate_reranked(self.gen, prompt, candidates=self.candidates, judge=self.judge, **options)


def judge_for_run(ws, name: str, *, seed: int = 0) -> ConditionJudge:
    """A judge of run ``name``'s condition columns, fitted on its dataset's train split."""
    from pathlib import Path

    from aigc.data.dataset import read_text_split
    from aigc.runs import read_spec

    spec = read_spec(Path(ws.get_run(name)["path"]))
    if spec.get("modality") != "text" or not spec.get("cond_columns"):
        raise InvalidInput(f"run {name!r} has no text conditions to judge: rerank needs a conditional text run")
    return ConditionJudge.fit(read_text_split(ws.dataset_path(spec["dataset"]), "train"), spec["cond_columns"],
                              seed=seed)
