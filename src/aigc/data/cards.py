"""The dataset card (``card.json``): what was ingested, from where, and what it looks like.

Pure functions from already-computed facts to a JSON-ready dict. This module knows nothing
about files or the workspace; the caller writes the card.
"""

from __future__ import annotations

import unicodedata
from collections import Counter
from collections.abc import Iterable, Sequence
from typing import Any

from aigc.data.clean import Drop
from aigc.data.conditions import value_counts
from aigc.data.sources import RawSource

# The card lists at most this many drops and this many values per condition column: a card is
# read by people and stored in the catalog, so it must stay small even for millions of rows.
# (A run lists every value it knows in its run.json; condition_stats counts them all here.)
MAX_DROPS_LISTED = 1000
MAX_CONDITION_VALUES = 200

# unicodedata.name() prefixes -> script. Checked in order; the first match wins.
_SCRIPT_PREFIXES: tuple[tuple[str, str], ...] = (
    ("LATIN", "Latin"),
    ("CJK UNIFIED IDEOGRAPH", "Han"),
    ("CJK COMPATIBILITY IDEOGRAPH", "Han"),
    ("HIRAGANA", "Hiragana"),
    ("KATAKANA", "Katakana"),
    ("HANGUL", "Hangul"),
    ("CYRILLIC", "Cyrillic"),
    ("GREEK", "Greek"),
    ("ARABIC", "Arabic"),
    ("HEBREW", "Hebrew"),
    ("THAI", "Thai"),
    ("DEVANAGARI", "Devanagari"),
)


def script_of(ch: str) -> str | None:
    """Script of a letter ('Latin', 'Han'...), 'Digit' for a decimal digit, None for anything else."""
    cat = unicodedata.category(ch)
    if cat == "Nd":
        return "Digit"
    if cat[0] != "L":
        return None
    name = unicodedata.name(ch, "")
    for prefix in ("FULLWIDTH ", "HALFWIDTH "):  # e.g. FULLWIDTH LATIN CAPITAL LETTER A
        if name.startswith(prefix):
            name = name[len(prefix):]
    for prefix, script in _SCRIPT_PREFIXES:
        if name.startswith(prefix):
            return script
    return "Other"


def script_counts(texts: Iterable[str]) -> dict[str, int]:
    """Characters per script over all texts, most frequent first.

    Counter counts characters in C; the Unicode lookups then run once per *distinct* character.
    """
    chars: Counter[str] = Counter()
    for t in texts:
        chars.update(t)
    scripts: Counter[str] = Counter()
    for ch, n in chars.items():
        script = script_of(ch)
        if script is not None:
            scripts[script] += n
    return dict(scripts.most_common())


def length_stats(lengths: Sequence[int]) -> dict[str, float]:
    """min, p5..p95 (nearest rank) and max of record lengths, plus the mean to 2 decimals."""
    if not lengths:
        return {k: 0 for k in ("min", "p5", "p25", "p50", "p75", "p95", "max", "mean")}
    s = sorted(lengths)
    last = len(s) - 1

    def pct(p: int) -> int:
        return s[round(p / 100 * last)]

    return {
        "min": s[0], "p5": pct(5), "p25": pct(25), "p50": pct(50), "p75": pct(75), "p95": pct(95),
        "max": s[-1], "mean": round(sum(s) / len(s), 2),
    }


def condition_counts(counts: dict[str, Counter[str]]) -> tuple[dict, dict]:
    """({col: {value: count}} most frequent first, {col: distinct values} for truncated columns)."""
    out = {c: dict(n.most_common(MAX_CONDITION_VALUES)) for c, n in counts.items()}
    truncated = {c: len(n) for c, n in counts.items() if len(n) > MAX_CONDITION_VALUES}
    return out, truncated


def condition_stats(counts: dict[str, Counter[str]], train_counts: dict[str, Counter[str]],
                    min_count: int) -> dict[str, dict[str, int]]:
    """Per column: distinct values, how many get a token of their own (``min_count`` train
    records), and how many values and records (all splits) share the column's ``other`` token."""
    stats = {}
    for col, n in counts.items():
        own = {v for v, k in train_counts[col].items() if k >= min_count}
        stats[col] = {
            "cardinality": len(n),
            "own_token": len(own),
            "other_values": len(n) - len(own),
            "other_records": sum(k for v, k in n.items() if v not in own),
            "unseen_in_train": sum(1 for v in n if v not in train_counts[col]),
        }
    return stats


def build_card(
    *,
    name: str,
    source: RawSource,
    normalize: bool,
    texts_by_split: dict[str, list[str]],
    conds_by_split: dict[str, list[dict[str, str]]],
    min_cond_count: int,
    lengths: Sequence[int],
    n_read: int,
    drops: Sequence[Drop],
    split_method: str,
    fractions: Sequence[float],
    created_at: str,
) -> dict[str, Any]:
    """Assemble card.json. ``lengths`` are per kept record; ``texts_by_split`` and
    ``conds_by_split`` what was written."""
    all_texts = [t for s in ("train", "val", "test") for t in texts_by_split[s]]
    by_reason = Counter(d.kind for d in drops)
    columns = source.cond_columns
    counts = value_counts((c for s in ("train", "val", "test") for c in conds_by_split[s]), columns)
    conditions, truncated = condition_counts(counts)
    card: dict[str, Any] = {
        "name": name,
        "modality": "text",
        "source": str(source.path),
        "format": source.format,
        "encoding": source.encoding,
        "mode": source.mode,
        "text_column": source.text_column,
        "cond_columns": list(source.cond_columns),
        "normalize": normalize,
        "counts": {
            "read": n_read,
            "kept": len(lengths),
            "dropped": len(drops),
            # Corpus mode: one record per non-empty split (the split's text in one piece).
            **{s: len(texts_by_split[s]) for s in ("train", "val", "test")},
        },
        "chars": {
            "total": sum(len(t) for t in all_texts),
            "train": sum(len(t) for t in texts_by_split["train"]),
        },
        "length": length_stats(lengths),
        "scripts": script_counts(all_texts),
        "conditions": conditions,
        "min_cond_count": min_cond_count,
        "condition_stats": condition_stats(counts, value_counts(conds_by_split["train"], columns),
                                           min_cond_count),
        "dropped": [
            {"index": d.index, "reason": d.reason, "preview": d.preview} for d in drops[:MAX_DROPS_LISTED]
        ],
        "dropped_by_reason": dict(by_reason.most_common()),
        "split": {"method": split_method, "fractions": [float(f) for f in fractions]},
        "empty_splits": [s for s in ("val", "test") if not texts_by_split[s]],
        "created_at": created_at,
    }
    if len(drops) > MAX_DROPS_LISTED:
        card["dropped_not_listed"] = len(drops) - MAX_DROPS_LISTED
    if truncated:
        card["conditions_truncated"] = truncated  # column -> distinct values; only the top ones listed
    return card
