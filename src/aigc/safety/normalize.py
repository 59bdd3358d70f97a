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
depends on. Text in which NFKC joins no two characters and every step keeps one character per
character (most Chinese text, full-width forms included) takes a whole-string path with the same
result and offsets (``tests/test_normalize.py`` holds the two paths to each other).
"""

from __future__ import annotations

import re
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
    # zero-width spaces and joiners, BOM, bidi marks, variation selectors; separators on request
    return "".join(c for c in out if not _dropped(c, separators))


@lru_cache(maxsize=1)
def _t2s_table() -> dict[int, str]:
    """OpenCC's t2s for single characters as a ``str.translate`` table: every CJK character
    converted in one call, one per line so no phrase spans two (what ``_fold`` does one by one)."""
    chars = [chr(i) for r in ((0x3400, 0x4DC0), (0x4E00, 0xA000), (0xF900, 0xFB00), (0x20000, 0x2A6E0))
             for i in range(*r)]
    out = _t2s().convert("\n".join(chars)).split("\n")
    if len(out) != len(chars):  # never seen; the per-character path stays correct regardless
        return {}
    return {ord(a): b for a, b in zip(chars, out) if a != b and len(b) == 1}


def _dropped(c: str, separators: bool) -> bool:
    cat = unicodedata.category(c)
    if cat == "Cf" or cat == "Mn" and c in "\u034f\ufe00\ufe01\ufe02\ufe03\ufe0e\ufe0f":
        return True
    return separators and cat in _SEPARATOR_CATEGORIES and c not in _KEEP_PUNCT


def _class(hit) -> re.Pattern:
    """The BMP characters for which ``hit(ch)`` holds, as one regex character class."""
    ranges, start = [], None
    for i in range(0x10000):
        h = not 0xD800 <= i < 0xE000 and hit(chr(i))
        if h and start is None:
            start = i
        elif not h and start is not None:
            ranges.append((start, i - 1))
            start = None
    if start is not None:
        ranges.append((start, 0xFFFF))
    return re.compile("[" + "".join(f"\\u{a:04x}-\\u{b:04x}" for a, b in ranges) + "]")


@lru_cache(maxsize=2)
def _drop_re(separators: bool) -> re.Pattern:
    """The BMP characters :func:`_fold` drops."""
    return _class(lambda c: _dropped(c, separators))


@lru_cache(maxsize=1)
def _joining_re() -> re.Pattern:
    """Characters NFKC may join to the character before them: those whose decomposition starts
    with a combining mark (composed or reordered with what precedes it) or with the second half of
    a canonical pair (Hangul vowels and final consonants, the half-width kana voicing marks
    ``ｶﾞ`` -> ``ガ``, Indic length marks). Text with one takes the per-character path, whose
    offsets stay exact; in text without one, NFKC of the whole is NFKC of each character in turn."""
    pairs = (unicodedata.decomposition(chr(i)).split() for i in range(0x110000))
    second = {chr(int(p[1], 16)) for p in pairs if len(p) == 2 and not p[0].startswith("<")}
    second |= {chr(i) for i in range(0x1161, 0x11C3)}  # Hangul vowels and finals: composed by rule, unlisted

    def joins(c: str) -> bool:
        first = unicodedata.normalize("NFKD", c)[:1]
        return bool(first) and (unicodedata.combining(first) != 0 or first in second)

    return _class(joins)


_ASTRAL_OR_SURROGATE = re.compile("[\ud800-\udfff\U00010000-\U0010ffff]")


def _fast(text: str, separators: bool, simplify: bool, casefold: bool) -> Normalized | None:
    """The same result as the per-character path, with whole-string operations, when every step
    keeps one character per character (NFKC, case folding, t2s) and the text is in the BMP; else None."""
    if _ASTRAL_OR_SURROGATE.search(text) or _joining_re().search(text):
        return None
    out = unicodedata.normalize("NFKC", text)
    if len(out) != len(text):
        return None
    if casefold:
        out = out.casefold()
        if len(out) != len(text):
            return None
    if simplify and not out.isascii():
        out = out.translate(_t2s_table())
    drops = [m.start() for m in _drop_re(separators).finditer(out)]
    if not drops:
        return Normalized(text, out, tuple(range(len(text))))
    pieces: list[str] = []
    index: list[int] = []
    prev = 0
    for d in drops:
        pieces.append(out[prev:d])
        index.extend(range(prev, d))
        prev = d + 1
    pieces.append(out[prev:])
    index.extend(range(prev, len(out)))
    return Normalized(text, "".join(pieces), tuple(index))


def warm() -> None:
    """Build the fast path's tables now (a third of a second, once per process), e.g. while a run
    loads, rather than in the first request's check."""
    _t2s_table()
    _joining_re()
    _drop_re(False)
    _drop_re(True)


def normalize(text: str, *, separators: bool = False, simplify: bool = True,
              casefold: bool = True) -> Normalized:
    """Normalise ``text`` (see the module doc) and keep the offset map back to it."""
    if not isinstance(text, str):
        raise TypeError(f"normalize() takes a str, not {type(text).__name__}")
    if not separators and text.isascii():
        folded = text.casefold() if casefold else text  # the common case: one char per char
        return Normalized(text, folded, tuple(range(len(text))))
    fast = _fast(text, separators, simplify, casefold)
    return fast if fast is not None else _per_char(text, separators, simplify, casefold)


def _per_char(text: str, separators: bool, simplify: bool, casefold: bool) -> Normalized:
    """The reference path: each character folded on its own, so the offset map is exact by construction."""
    chars: list[str] = []
    index: list[int] = []
    for i, ch in enumerate(text):
        out = _fold(ch, separators, simplify, casefold)
        if out:
            chars.append(out)
            index.extend([i] * len(out))
    return Normalized(text, "".join(chars), tuple(index))
