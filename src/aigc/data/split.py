"""Deterministic train/val/test splits.

Records are split by a hash of their text, so the split of a record depends on nothing but the
record: re-ingesting the same file gives the same splits, and adding records to a file never
moves an existing one to another split (no test text leaks into train when a dataset grows).
A single corpus is cut contiguously at line boundaries, so the held-out text is unseen prose
rather than lines interleaved with the training text.

This module knows fractions and strings. It knows nothing about files or cleaning.
"""

from __future__ import annotations

import hashlib
import math
import re
from collections.abc import Sequence
from typing import TypeVar

from aigc.errors import InvalidInput

SPLITS: tuple[str, str, str] = ("train", "val", "test")

T = TypeVar("T")


def check_fractions(split: Sequence[float]) -> tuple[float, float, float]:
    """Validate (train, val, test) fractions: three non-negative numbers summing to 1, train > 0."""
    shown = ", ".join(str(x) for x in split) if isinstance(split, (tuple, list)) else repr(split)
    try:
        values = tuple(float(x) for x in split)
    except (TypeError, ValueError):
        values = ()
    if len(values) != 3 or any(math.isnan(x) or x < 0 for x in values):
        raise InvalidInput(
            f"invalid split ({shown}): give three non-negative fractions train,val,test, e.g. 0.9,0.05,0.05"
        )
    total = sum(values)
    if abs(total - 1.0) > 1e-6:
        raise InvalidInput(
            f"invalid split ({shown}): the fractions sum to {total:g}, not 1: e.g. 0.9,0.05,0.05"
        )
    if values[0] == 0:
        raise InvalidInput(f"invalid split ({shown}): train must be above 0: e.g. 0.9,0.05,0.05")
    return values  # type: ignore[return-value]


def hash_unit(text: str) -> float:
    """A stable float in [0, 1) from the text's SHA-256 (first 8 bytes; same on every machine)."""
    digest = hashlib.sha256(text.encode("utf-8")).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


def split_of(text: str, fractions: tuple[float, float, float]) -> str:
    u = hash_unit(text)
    if u < fractions[0]:
        return "train"
    if u < fractions[0] + fractions[1]:
        return "val"
    return "test"


def hash_split(
    items: Sequence[T], texts: Sequence[str], fractions: tuple[float, float, float]
) -> dict[str, list[T]]:
    """Assign each item to a split by the hash of its text; order within a split follows input order."""
    out: dict[str, list[T]] = {s: [] for s in SPLITS}
    for item, text in zip(items, texts, strict=True):
        out[split_of(text, fractions)].append(item)
    return out


# Where str.splitlines() breaks lines ("\r\n" counts once).
_LINE_BREAK = re.compile(r"\r\n|[\n\r\v\f\x1c\x1d\x1e\x85\u2028\u2029]")
# Inside a long line: after a sentence end or a space.
_SOFT_BREAK = re.compile(r"[。！？!?.;；]|\s")


def _cut(text: str, target: float, limit: int) -> int:
    """The offset of the cut for ``target``: the first line start at or after it, or, when the
    line holding it runs to ``limit`` (the next cut), the first sentence end or space after the
    target within that line, else the target itself. A corpus without line breaks can be split too."""
    at = math.ceil(target)
    if at <= 0:
        return 0
    if at >= len(text):
        return len(text)
    line = _LINE_BREAK.search(text, at - 1)  # a line starts at 0 or right after a break
    if line is not None and line.end() < limit:
        return line.end()
    soft = _SOFT_BREAK.search(text, at, limit)
    return soft.end() if soft is not None else at


def contiguous_split(text: str, fractions: tuple[float, float, float]) -> dict[str, str]:
    """Cut one corpus into three consecutive pieces, sized by characters.

    Each cut goes at the first line boundary at or after its target character offset, so train
    gets at least its share; where a line is so long that no boundary falls before the next
    target, the cut is made inside it (see :func:`_cut`). Only offsets are searched: the text is
    copied once, into its pieces, however many lines it has.
    """
    total = len(text)
    end_val = _cut(text, (fractions[0] + fractions[1]) * total, total) if fractions[2] else total
    end_train = _cut(text, fractions[0] * total, end_val) if fractions[1] else end_val
    return {"train": text[:end_train], "val": text[end_train:end_val], "test": text[end_val:]}
