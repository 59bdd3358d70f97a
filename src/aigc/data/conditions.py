"""Condition values -> control tokens, for columns of any cardinality.

Each condition column gets, in the tokenizer of a run:

* one token per value seen at least ``min_count`` times in the train split, ``<|col=value|>``;
* one shared ``other`` token, ``<|col|other|>``, for rarer values and for values the train split
  never saw (a value that only lands in val or test, or a new SKU), so no value breaks training,
  evaluation or serving;
* one ``null`` token, ``<|col|null|>``, that stands for "no condition given". Training swaps a
  share of the records' control tokens for it (condition dropout), which teaches the model an
  unconditional mode that classifier-free guidance contrasts with the conditional one.

``cond_token(col, value)`` always reads ``<|col=...|>``, so any value, even one literally named
``other`` or ``null``, has a token of its own; the reserved tokens have ``|`` where values have
``=``, so they cannot be spelled by a value. Only a column name holding ``=`` could make the two
meet, and :func:`reserved_tokens` refuses that.

This module knows strings and counts only: no torch, no files, no tokenizer objects.
"""

from __future__ import annotations

import difflib
from collections import Counter
from collections.abc import Iterable, Sequence

from aigc.data.tokenizers import cond_token
from aigc.errors import InvalidInput

# A value needs this many train records to get a token of its own. A token that stands for a
# single record is an alias of that record: conditioning on it replays the record (memorization),
# and a column of unique values (SKUs, ids) would add one embedding and one output logit per record.
# Two is the smallest count at which a token names a group rather than one text.
DEFAULT_MIN_COND_COUNT = 2

# At generation, an unknown value is answered with this many closest known values.
CLOSEST_SHOWN = 5


def other_token(column: str) -> str:
    """The token shared by a column's rare and unseen values."""
    return f"<|{column}|other|>"


def null_token(column: str) -> str:
    """The token that stands for 'no value given' (condition dropout, classifier-free guidance)."""
    return f"<|{column}|null|>"


def check_min_count(min_count: int) -> int:
    if not isinstance(min_count, int) or isinstance(min_count, bool) or min_count < 1:
        raise InvalidInput(
            f"invalid --min-cond-count {min_count!r}: pass a whole number >= 1 "
            f"(1 gives every value its own token; default {DEFAULT_MIN_COND_COUNT})"
        )
    return min_count


def value_counts(conds: Iterable[dict[str, str]], columns: Sequence[str]) -> dict[str, Counter[str]]:
    """{column: Counter of values} over the given records' condition dicts."""
    counters: dict[str, Counter[str]] = {c: Counter() for c in columns}
    for cond in conds:
        for c in columns:
            counters[c][cond[c]] += 1
    return counters


def frequent_values(conds: Iterable[dict[str, str]], columns: Sequence[str],
                    min_count: int) -> dict[str, list[str]]:
    """{column: sorted values with at least ``min_count`` records}: the values that get their own token."""
    counts = value_counts(conds, columns)
    return {c: sorted(v for v, n in counts[c].items() if n >= min_count) for c in columns}


def reserved_tokens(columns: Sequence[str]) -> list[str]:
    """Every column's ``other`` and ``null`` tokens; refuses a column name a value token could spell."""
    for col in columns:
        if "=" in col or "|" in col:
            raise InvalidInput(
                f"condition column {col!r} contains '=' or '|', which the control tokens use as "
                "separators: rename the column in the file"
            )
    return [tok for col in columns for tok in (other_token(col), null_token(col))]


def control_tokens(train_conds: Iterable[dict[str, str]], columns: Sequence[str],
                   min_count: int) -> list[str]:
    """All control tokens of a new run: value tokens of frequent train values, then the reserved ones."""
    frequent = frequent_values(train_conds, columns, min_count)
    values = sorted(cond_token(c, v) for c in columns for v in frequent[c])
    return values + reserved_tokens(columns)


def closest_values(value: str, known: Sequence[str], n: int = CLOSEST_SHOWN) -> list[str]:
    """The ``n`` known values most like ``value`` (difflib ratio; characters, so Chinese works too)."""
    return difflib.get_close_matches(value, list(known), n=n, cutoff=0.0)


def unknown_value(column: str, value: str, known: Sequence[str]) -> InvalidInput:
    """The error for a value the run never saw, naming the closest values it knows."""
    if not known:
        return InvalidInput(
            f"unknown value {value!r} for condition {column!r}: this run lists no values for it"
        )
    shown = ", ".join(closest_values(value, known))
    return InvalidInput(
        f"unknown value {value!r} for condition {column!r}: the closest of its {len(known)} known values "
        f"are {shown}"
    )
