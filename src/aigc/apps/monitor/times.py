"""Timestamps as people write them, to UTC: ISO 8601 with or without an offset, ``2026/03/04 10:00``,
``2026年3月4日 10时5分``, ``04 Mar 2026``, Unix seconds or milliseconds, mixed in one column. A time
without an offset is in the stream's time zone. A value that is none of these refuses the batch,
naming its row."""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

from aigc.errors import InvalidInput

_ZH = [(re.compile(r"(\d{4})\s*年\s*(\d{1,2})\s*月\s*(\d{1,2})\s*[日号]?"), r"\1-\2-\3 "),
       (re.compile(r"(\d{1,2})\s*[时點点]\s*(?:(\d{1,2})\s*分)?\s*(?:(\d{1,2})\s*秒)?"),
        lambda m: f"{m[1]}:{m[2] or '00'}:{m[3] or '00'}"),
       (re.compile(r"上午"), " AM "), (re.compile(r"下午|晚上"), " PM ")]
_NUMBER = re.compile(r"^\d{9,13}(\.\d+)?$")


def check_timezone(tz: str) -> str:
    from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

    try:
        ZoneInfo(str(tz))
    except (ZoneInfoNotFoundError, ValueError):
        raise InvalidInput(f"unknown time zone {tz!r}: give an IANA name such as UTC or Asia/Shanghai") from None
    return str(tz)


def _normalise(text: str) -> str:
    t = text.strip().replace("：", ":")
    for pattern, repl in _ZH:
        t = pattern.sub(repl, t)
    return re.sub(r"\s+", " ", t).strip()


def parse_one(value: Any, tz: str = "UTC"):
    """One value as a UTC :class:`pandas.Timestamp`, or None when it is not a time."""
    import pandas as pd

    if value is None or (isinstance(value, float) and value != value):
        return None
    if isinstance(value, pd.Timestamp):
        ts = value
    elif isinstance(value, (int, float)) or _NUMBER.match(str(value).strip()):
        x = float(value)
        if not 1e8 <= x < 1e13:
            return None
        ts = pd.Timestamp(x, unit="ms" if x >= 1e11 else "s", tz="UTC")
    else:
        text = _normalise(str(value))
        if not text or not re.search(r"\d", text):
            return None
        try:
            ts = pd.Timestamp(text)
        except (ValueError, OverflowError):
            return None
    if ts is pd.NaT or ts != ts:
        return None
    if ts.tzinfo is None:
        ts = ts.tz_localize(tz, ambiguous="NaT", nonexistent="shift_forward")
        if ts is pd.NaT:
            return None
    ts = ts.tz_convert("UTC")
    if not 1970 <= ts.year <= 2200:
        return None
    return ts


def parse_times(values: Sequence[Any], tz: str = "UTC", where: str = "input") -> list:
    """Every value as a UTC timestamp; the first that is not one raises, naming its row (1 = the
    first data row) and its text."""
    check_timezone(tz)
    out = []
    for i, v in enumerate(values):
        ts = parse_one(v, tz)
        if ts is None:
            shown = "" if v is None or (isinstance(v, float) and v != v) else str(v)[:60]
            raise InvalidInput(f"{where}: row {i + 1} has no readable timestamp ({shown!r}): give ISO 8601 "
                               "(2026-03-04T10:00:00+08:00), a date and time, or Unix seconds; nothing was added")
        out.append(ts)
    return out


def parse_bound(value: str | None, what: str) -> str | None:
    """A query's start or end as an ISO UTC string (None stays None)."""
    if value is None or value == "":
        return None
    ts = parse_one(value)
    if ts is None:
        raise InvalidInput(f"{what} {value!r} is not a time: give ISO 8601, e.g. 2026-03-04 or 2026-03-04T10:00Z")
    return ts.isoformat()
