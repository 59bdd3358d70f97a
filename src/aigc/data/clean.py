"""Text cleanup and record filtering: normalization, invisible characters, whitespace, length, dedupe.

Input is the raw records a reader produced; output is the records to keep plus one
:class:`Drop` per record left out, each with a reason a person can read. This module knows
nothing about files, encodings, splits or the workspace.
"""

from __future__ import annotations

import hashlib
import re
import unicodedata
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Literal

Mode = Literal["records", "corpus"]

# Removed everywhere: every Cc control except '\n' and '\t', the BOM (U+FEFF, which also shows up
# mid-file when files were concatenated), zero-width space and word joiner. ZWNJ/ZWJ (U+200C/D)
# are kept on purpose: they change the rendering of Persian, Indic scripts and emoji sequences.
# A regex, not str.translate: for non-ASCII text the regex is over ten times faster.
_INVISIBLE = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f\ufeff\u200b\u2060]")

_HSPACE = re.compile(r"[^\S\n]+")  # any whitespace but newline: spaces, tabs, U+3000...
_LINE_ENDS = re.compile(r"[^\S\n]*\n[^\S\n]*")  # a newline with the spaces around it
_MANY_NEWLINES = re.compile(r"\n{3,}")
_TRAILING = re.compile(r"[^\S\n]+$", re.MULTILINE)


# Full-width punctuation is how Chinese (and Japanese) text is written: NFKC would turn
# "好，真的！" into "好,真的!". Keep these; full-width letters and digits (ＡＢＣ１) still fold.
CJK_PUNCTUATION = "，！？：；（）［］｛｝｟｠＂＇～｀＿"
_KEEP_CJK = re.compile(f"([{re.escape(CJK_PUNCTUATION)}])")
_AFTER_KEPT = re.compile(f"(?<=[{re.escape(CJK_PUNCTUATION)}])")

# A long text (a whole corpus) is processed in blocks of about this many characters, cut where
# the operation gives the same result in pieces. re.sub and re.split build a list of every piece
# before joining them: on one 50 MB text with a space every few characters that list, millions
# of small strings, held many times the text's own size.
BLOCK_CHARS = 1 << 16
_ANYWHERE = re.compile(r"(?s:.)")
_BEFORE_NON_SPACE = re.compile(r"(?=\S)")  # no whitespace run spans such a cut
_AFTER_NEWLINE = re.compile(r"(?<=\n)")  # no line's end spans it


def text_blocks(text: str, size: int, cut: re.Pattern[str]) -> list[str]:
    """``text`` in pieces of about ``size`` characters or more, each cut at the first match of
    ``cut`` at or after ``size`` characters; a text with no such place stays in one piece."""
    out = []
    start = 0
    while len(text) - start > size:
        m = cut.search(text, start + size)
        if m is None:
            break
        out.append(text[start : m.start()])
        start = m.start()
    out.append(text[start:])
    return out


def _sub(pattern: re.Pattern[str], repl: str, text: str, cut: re.Pattern[str] = _BEFORE_NON_SPACE) -> str:
    """``pattern.sub(repl, text)``, block by block for a long text (see BLOCK_CHARS)."""
    if len(text) <= 2 * BLOCK_CHARS:
        return pattern.sub(repl, text)
    return "".join(pattern.sub(repl, block) for block in text_blocks(text, BLOCK_CHARS, cut))


def _nfkc_kept(text: str) -> str:
    parts = _KEEP_CJK.split(text)  # odd indices are the kept punctuation marks
    return "".join(p if i % 2 else unicodedata.normalize("NFKC", p) for i, p in enumerate(parts))


def nfkc(text: str) -> str:
    """Unicode NFKC, except that full-width CJK punctuation is kept as written."""
    if not _KEEP_CJK.search(text):
        return unicodedata.normalize("NFKC", text)
    # Blocks end right after a kept mark: the same pieces are normalized as in one pass.
    return "".join(_nfkc_kept(block) for block in text_blocks(text, BLOCK_CHARS, _AFTER_KEPT))


def clean_text(text: str, *, normalize: bool = True, mode: Mode = "records") -> str:
    """Clean one text. ``records`` tidies all whitespace; ``corpus`` only trims line ends."""
    if "\r" in text:
        text = text.replace("\r\n", "\n").replace("\r", "\n")  # before '\r' is removed as a control
    if normalize and not text.isascii():  # ASCII is already NFKC
        text = nfkc(text)
    text = _sub(_INVISIBLE, "", text, _ANYWHERE)
    if mode == "corpus":
        # A corpus keeps its layout (indentation, blank lines between speeches): models learn it.
        return _sub(_TRAILING, "", text, _AFTER_NEWLINE)
    text = _sub(_HSPACE, " ", text)
    if "\n" in text:  # most records are one line: skip two regex passes
        text = _sub(_LINE_ENDS, "\n", text)
        text = _sub(_MANY_NEWLINES, "\n\n", text)
    return text.strip()


def _is_ignorable(ch: str) -> bool:
    """Whitespace, punctuation (P*) or symbol (S*): erased from dedupe keys."""
    return ch.isspace() or unicodedata.category(ch)[0] in "PS"


def _ignorable_pattern(chars: Iterable[str]) -> re.Pattern[str] | None:
    """One regex class of the ignorable characters among ``chars``, or None when there are none.

    Unicode categories cannot be written in a ``re`` class, so the class is built from the
    characters a corpus actually uses: one category lookup per distinct character, then a
    regex pass per text (several times faster than ``str.translate`` on non-ASCII text).
    """
    drop = sorted(ch for ch in set(chars) if _is_ignorable(ch))
    return re.compile("[" + "".join(re.escape(ch) for ch in drop) + "]+") if drop else None


def _fold(text: str) -> str:
    return unicodedata.normalize("NFKC", text).casefold()


def dedupe_key(text: str) -> str:
    """The text with case, width, whitespace and punctuation erased: 'Hello, World!' == 'hello world'."""
    folded = _fold(text)
    pattern = _ignorable_pattern(folded)
    return _sub(pattern, "", folded, _ANYWHERE) if pattern else folded


def _key(folded: str, pattern: re.Pattern[str] | None) -> str | bytes:
    """The dedupe key of a folded text; for a long text a digest of it, so a key as large as a
    whole corpus is never built. Empty (falsy) for a text of only ignorable characters."""
    if len(folded) <= 2 * BLOCK_CHARS:
        return pattern.sub("", folded) if pattern else folded
    digest = hashlib.blake2b(digest_size=16)
    empty = True
    for block in text_blocks(folded, BLOCK_CHARS, _ANYWHERE):
        key = pattern.sub("", block) if pattern else block
        empty = empty and not key
        digest.update(key.encode("utf-8", "surrogatepass"))
    return b"" if empty else digest.digest()


@dataclass(frozen=True)
class Drop:
    index: int  # 0-based record number in the source
    kind: str  # empty | empty_condition | too_short | too_long | duplicate | near_duplicate
    reason: str  # one readable line, e.g. "duplicate of record #12"
    preview: str  # the first 60 characters of the (cleaned, else raw) text


@dataclass(frozen=True)
class Kept:
    index: int
    text: str
    cond: dict[str, str]


def _preview(text: str) -> str:
    return text[:60]


def clean_records(
    records: Iterable[tuple[str, dict[str, str]]],
    *,
    normalize: bool = True,
    mode: Mode = "records",
    min_length: int = 1,
    max_length: int | None = None,
) -> tuple[list[Kept], list[Drop]]:
    """Clean every record, then drop empties, out-of-range lengths and duplicates (first wins)."""
    # Pass 1: clean, then drop empties and out-of-range lengths.
    survivors: list[Kept] = []
    drops: list[Drop] = []
    cond_cache: dict[str, str] = {}  # condition values repeat (labels, categories): clean each once
    for i, (raw, raw_cond) in enumerate(records):
        text = clean_text(raw, normalize=normalize, mode=mode)
        if not text.strip():
            drops.append(Drop(i, "empty", "empty after cleaning", _preview(raw.strip())))
            continue
        cond = {}
        for c, v in raw_cond.items():
            if v not in cond_cache:
                cond_cache[v] = clean_text(v, normalize=normalize)
            cond[c] = cond_cache[v]
        missing = [c for c, v in cond.items() if not v]
        if missing:
            drops.append(Drop(i, "empty_condition", f"empty condition {missing[0]!r}", _preview(text)))
            continue
        n = len(text)
        if n < min_length:
            reason = f"{n} chars, shorter than min_length {min_length}"
            drops.append(Drop(i, "too_short", reason, _preview(text)))
            continue
        if max_length is not None and n > max_length:
            reason = f"{n} chars, longer than max_length {max_length}"
            drops.append(Drop(i, "too_long", reason, _preview(text)))
            continue
        survivors.append(Kept(i, text, cond))

    # Pass 2: dedupe against earlier *kept* records. Two passes so the ignorable-character
    # regex is built once from every character the survivors use.
    folded = [_fold(k.text) for k in survivors]
    chars: set[str] = set()
    for f in folded:
        chars.update(f)
    pattern = _ignorable_pattern(chars)
    kept: list[Kept] = []
    first_exact: dict[str, int] = {}
    first_norm: dict[str | bytes, int] = {}
    for k, f in zip(survivors, folded, strict=True):
        if k.text in first_exact:
            reason = f"duplicate of record #{first_exact[k.text]}"
            drops.append(Drop(k.index, "duplicate", reason, _preview(k.text)))
            continue
        key = _key(f, pattern)
        # A text of only punctuation has an empty key; it is not a near-duplicate of every other one.
        if key and key in first_norm:
            drops.append(
                Drop(k.index, "near_duplicate", f"near-duplicate of record #{first_norm[key]} "
                     "(same text ignoring case, width, spaces and punctuation)", _preview(k.text))
            )
            continue
        first_exact[k.text] = k.index
        if key:
            first_norm[key] = k.index
        kept.append(k)
    drops.sort(key=lambda d: d.index)
    return kept, drops
