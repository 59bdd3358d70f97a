"""The one normalisation every safety check reads text through, with a map back to the original.

``normalize(text)`` folds the ways one string can be written so that a check written once
catches them all: NFKC (full-width letters and digits, ligatures, circled numbers), case
folding, zero-width and format characters dropped, traditional Chinese to simplified (OpenCC
``t2s``), and, with ``separators=True``, whitespace and the punctuation people put between
characters to dodge a filter (``1 3 8-1234``, ``微.信``) dropped too. Each normalised character
remembers the index of the original character it came from, so a match in the normalised text
is reported where it is in what the user wrote (:meth:`Normalized.span`).

Characters are normalised one at a time (and cached), so the offset map is exact; NFKC of a
combining sequence (``e`` + U+0301) is therefore left as two characters, which no check here
depends on.
"""

from __future__ import annotations

import unicodedata
from dataclasses import dataclass
from functools import lru_cache

# Characters people put between the characters of a word to break a filter's match. Letters,
# digits and CJK characters are never separators; neither are the sentence ends 。！？ that the
# output rail segments on (they are kept so a match never runs across two sentences).
_SEPARATOR_CATEGORIES = frozenset({"Zs", "Zl", "Zp", "Cc", "Pd", "Pc", "Po", "Sk", "Sm", "So"})
_KEEP_PUNCT = frozenset("。！？!?\n")


@dataclass(frozen=True)
class Normalized:
    """Normalised ``text`` and, for each of its characters, the index in ``original``."""

    original: str
    text: str
    index: tuple[int, ...]

    def span(self, start: int, end: int) -> tuple[int, int]:
        """The original span ``[a, b)`` that normalised characters ``[start, end)`` came from."""
        if not 0 <= start < end <= len(self.text):
            raise ValueError(f"span [{start}, {end}) is outside the normalised text of {len(self.text)} characters")
        return self.index[start], self.index[end - 1] + 1

    def __len__(self) -> int:
        return len(self.text)


@lru_cache(maxsize=1)
def _t2s():
    import opencc  # OpenCC's own dictionaries ship in the wheel: nothing is downloaded

    return opencc.OpenCC("t2s")


@lru_cache(maxsize=65536)
def _fold(ch: str, separators: bool, simplify: bool, casefold: bool) -> str:
    out = unicodedata.normalize("NFKC", ch)
    if casefold:
        out = out.casefold()
    if simplify and not out.isascii() and not ("\ud800" <= out <= "\udfff"):  # OpenCC cannot take a lone surrogate
        out = _t2s().convert(out)
    kept = []
    for c in out:
        cat = unicodedata.category(c)
        if cat == "Cf" or cat == "Mn" and c in "\u034f\ufe00\ufe01\ufe02\ufe03\ufe0e\ufe0f":
            continue  # zero-width spaces and joiners, BOM, bidi marks, variation selectors
        if separators and cat in _SEPARATOR_CATEGORIES and c not in _KEEP_PUNCT:
            continue
        kept.append(c)
    return "".join(kept)


def normalize(text: str, *, separators: bool = False, simplify: bool = True,
              casefold: bool = True) -> Normalized:
    """Normalise ``text`` (see the module doc) and keep the offset map back to it."""
    if not isinstance(text, str):
        raise TypeError(f"normalize() takes a str, not {type(text).__name__}")
    if not separators and text.isascii():
        folded = text.casefold() if casefold else text  # the common case: one char per char
        return Normalized(text, folded, tuple(range(len(text))))
    chars: list[str] = []
    index: list[int] = []
    for i, ch in enumerate(text):
        out = _fold(ch, separators, simplify, casefold)
        if out:
            chars.append(out)
            index.extend([i] * len(out))
    return Normalized(text, "".join(chars), tuple(index))
