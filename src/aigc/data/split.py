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


def contiguous_split(text: str, fractions: tuple[float, float, float]) -> dict[str, str]:
    """Cut one corpus into three consecutive pieces at line boundaries, sized by characters.

    Each cut goes at the first line boundary at or after its target character offset, so train
    gets at least its share; a one-line corpus goes wholly to train.
    """
    lines = text.splitlines(keepends=True)
    total = len(text)
    targets = (fractions[0] * total, (fractions[0] + fractions[1]) * total)
    pieces: dict[str, list[str]] = {s: [] for s in SPLITS}
    offset = 0
    for line in lines:
        # The split a line belongs to is decided by where it starts.
        if offset < targets[0]:
            pieces["train"].append(line)
        elif offset < targets[1]:
            pieces["val"].append(line)
        else:
            pieces["test"].append(line)
        offset += len(line)
    return {s: "".join(p) for s, p in pieces.items()}
