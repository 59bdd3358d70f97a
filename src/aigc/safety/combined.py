"""A moderation classifier that adds other classifiers' logits: an ensemble of different models.

The fine-tuned e5 (:mod:`aigc.safety.tuned`) and the head on e5's fixed vector and latent terms
(:class:`~aigc.safety.moderation.SemanticClassifier`) read a text differently and err on different texts;
the weighted sum of their logits catches more at the same false-block rate than either (the training
script's ``--model combined`` measures it on cross-validation). The file holds no weights of its own: it
names its parts (``builtin:NAME`` or a path relative to its own folder), their weights, and a shift per
category, so a piece's logit is ``sum(weight * part's logit) + shift`` (each part's logit as its own file
scores it, thresholds folded in; the shift then puts the combined operating point at 0.5). A text scores
its highest piece, the sum taken piece by piece.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from aigc.errors import InvalidInput
from aigc.safety.moderation import SemanticClassifier, TextClassifier, _read_npz, _save_npz, text_logits

COMBINED_FORMAT = "aigc-moderation-combined/1"


class CombinedClassifier:
    """``parts`` (classifiers with ``piece_logits`` over the same ``categories``) weighted by ``weights``, plus
    ``shift``; ``refs`` names the parts in the file. ``confirm`` as in
    :class:`~aigc.safety.moderation.ClassifierScores`."""

    kind = "passage"
    prepare = staticmethod(TextClassifier.prepare)
    scores_of = SemanticClassifier.scores_of
    scores_many = SemanticClassifier.scores_many
    scores = SemanticClassifier.scores

    def __init__(self, categories: Sequence[str], parts: Sequence[Any], weights: Sequence[float], shift: np.ndarray,
                 refs: Sequence[str], meta: Mapping[str, Any] | None = None, confirm: np.ndarray | None = None):
        self.categories = tuple(categories)
        self.parts, self.refs = list(parts), [str(r) for r in refs]
        self.weights = np.asarray(weights, dtype=np.float64)
        if not self.parts or len(self.parts) != len(self.weights) or len(self.refs) != len(self.parts):
            raise InvalidInput(f"a combined classifier needs as many weights and names as parts (got {len(self.parts)} "
                               f"parts, {len(self.weights)} weights, {len(self.refs)} names)")
        for ref, part in zip(self.refs, self.parts):
            if tuple(getattr(part, "categories", ())) != self.categories or not hasattr(part, "piece_logits"):
                raise InvalidInput(f"part {ref} scores {list(getattr(part, 'categories', []))}, not "
                                   f"{list(self.categories)}: combine classifiers of the same categories")
        self.shift = np.asarray(shift, dtype=np.float64)
        self.confirm = None if confirm is None else np.asarray(confirm, dtype=np.float64)
        for name, v in (("shift", self.shift), ("confirm", self.confirm)):
            if v is not None and v.shape != (len(self.categories),):
                raise InvalidInput(f"classifier arrays disagree: {len(self.categories)} categories, {name} {v.shape}")
        self.meta = dict(meta or {})
        h = hashlib.sha256(f"{self.categories}|{self.refs}".encode())
        for a in [self.weights, self.shift, *([] if self.confirm is None else [self.confirm])]:
            h.update(np.ascontiguousarray(a).tobytes())
        for part in self.parts:
            h.update(str(getattr(part, "digest", "")).encode())
        self.digest = h.hexdigest()[:16]

    def combine(self, part_logits: Sequence[np.ndarray]) -> np.ndarray:
        """The combined logits from each part's logits of the same pieces (in ``parts`` order)."""
        return sum(w * np.asarray(z, dtype=np.float64) for w, z in zip(self.weights, part_logits)) + self.shift

    def piece_logits(self, pieces: Sequence[str]) -> np.ndarray:
        """(n, C): the logits of ``pieces`` (each already one normalised piece)."""
        return self.combine([part.piece_logits(pieces) for part in self.parts])

    sentence_margin = SemanticClassifier.sentence_margin
    sentence_min_chars = SemanticClassifier.sentence_min_chars

    def logits(self, texts: Sequence[str]) -> np.ndarray:
        """(n, C): each text's highest combined logit per category (:func:`~aigc.safety.moderation.text_logits`)."""
        return text_logits(self.piece_logits, texts, self.sentence_margin, self.sentence_min_chars)

    def save(self, path: str | os.PathLike) -> Path:
        meta = {**self.meta, "format": COMBINED_FORMAT, "categories": list(self.categories), "parts": self.refs,
                "weights": [float(w) for w in self.weights], "kind": self.kind}
        extra = {} if self.confirm is None else {"confirm": self.confirm}
        return _save_npz(path, meta, shift=self.shift, **extra)

    @classmethod
    def load(cls, path: str | os.PathLike) -> CombinedClassifier:
        from aigc.safety.moderation import classifier_at

        meta, arrays = _read_npz(path, COMBINED_FORMAT)
        try:
            refs, weights, shift = list(meta["parts"]), meta["weights"], arrays["shift"]
        except KeyError as e:
            raise InvalidInput(f"{path} lacks {e} of a combined moderation classifier: retrain it") from None
        parts = []
        for ref in refs:
            part = classifier_at(str(ref), Path(path).parent, f"part of {Path(path).name}:")
            if isinstance(part, CombinedClassifier):
                raise InvalidInput(f"{path}: part {ref} is itself combined; name its parts instead")
            parts.append(part)
        return cls(meta["categories"], parts, weights, shift, refs, meta, arrays.get("confirm"))
