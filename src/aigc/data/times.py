"""Timestamps as people write them, to UTC, a column at a time: the one parser of the monitor's
posts and the recommender's interactions.

Read: ISO 8601 with or without an offset (``2026-03-04T10:00:00+08:00``, ``2026-03-04 10:00``),
``2026/03/04 10:00``, ``04 Mar 2026``, Chinese dates and times (``2026年3月4日 下午2时5分``,
``2026年3月4日 14:05``), Unix seconds or milliseconds, ``datetime`` / ``pandas.Timestamp``
objects, all mixed in one column. A time without an offset is in the column's time zone ``tz``.

Speed: the ISO forms (nearly every export) are parsed by pandas' vectorised ISO 8601 parser,
zoned and zone-less apart (pandas 2.3 gives a zone-less time the offset of the zoned one before
it when they are parsed together); only the rest goes through ``pandas.Timestamp`` one value at a
time.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from datetime import datetime
from typing import Any

import numpy as np
import pandas as pd

from aigc.errors import InvalidInput

MIN_YEAR, MAX_YEAR = 1970, 2200  # a parsed time outside these years is taken as a misreading
# Unix time as a bare number: 1e8 s is 1973, 1e13 ms is 2286; at or past 1e11 it counts milliseconds
# (1e11 s would be the year 5138)
EPOCH_RANGE = (1e8, 1e13)
MS_FROM = 1e11

_ZH = [(re.compile(r"(\d{4})\s*年\s*(\d{1,2})\s*月\s*(\d{1,2})\s*[日号]?"), r"\1-\2-\3 "),
       (re.compile(r"(\d{1,2})\s*[时點点]\s*(?:(\d{1,2})\s*分)?\s*(?:(\d{1,2})\s*秒)?"),
        lambda m: f"{m[1]}:{m[2] or '00'}:{m[3] or '00'}"),
       (re.compile(r"上午|早上|凌晨"), " AM "), (re.compile(r"下午|晚上"), " PM ")]
_MERIDIEM_FIRST = re.compile(r"\b(AM|PM)\s+(\d{1,2}:\d{2}(?::\d{2})?)")
_NUMBER = re.compile(r"[+-]?\d+(\.\d+)?")
_ISO_NAIVE = re.compile(r"\d{4}-\d{2}-\d{2}(?:[T ]\d{2}:\d{2}(?::\d{2}(?:\.\d+)?)?)?")
_ISO_ZONED = re.compile(r"\d{4}-\d{2}-\d{2}[T ]\d{2}:\d{2}(?::\d{2}(?:\.\d+)?)?(?:Z|[+-]\d{2}:?\d{2})")


def check_timezone(tz: str) -> str:
    """``tz`` when it is an IANA zone name; otherwise a one-line error."""
    from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

    try:
        ZoneInfo(str(tz))
    except (ZoneInfoNotFoundError, ValueError):
        raise InvalidInput(f"unknown time zone {tz!r}: give an IANA name such as UTC or Asia/Shanghai") from None
    return str(tz)


def normalise(text: str) -> str:
    """Chinese date and time words and full-width colons to the forms pandas reads."""
    t = text.strip().replace("：", ":")
    for pattern, repl in _ZH:
        t = pattern.sub(repl, t)
    t = _MERIDIEM_FIRST.sub(r"\2 \1", t)  # 上午 comes before the time in Chinese, AM after it in English
    return re.sub(r"\s+", " ", t).strip()


def to_utc(values: Sequence[Any], tz: str = "UTC", *, any_number: bool = False) -> pd.Series:
    """Every value as a UTC time (``datetime64[ns, UTC]``, index 0..n-1); NaT where a value is no
    time (empty, unreadable, or outside MIN_YEAR..MAX_YEAR). The caller names the first NaT row.

    A bare number is Unix seconds, or milliseconds from MS_FROM on. It must lie in EPOCH_RANGE
    (``20240501`` then reads as a date, not as 1970), unless ``any_number``: then any number is
    seconds, for data where only the order of time matters (an event counter)."""
    check_timezone(tz)
    raw = list(values)
    got = np.full(len(raw), np.datetime64("NaT"), dtype="datetime64[ns]")  # UTC, without the zone
    kinds = np.array([_kind(v, any_number) for v in raw], dtype=object)

    # 1. numbers: Unix seconds or milliseconds
    num = np.flatnonzero(kinds == "number")
    if len(num):
        x = np.array([float(raw[i]) for i in num])
        ok = np.ones(len(x), bool) if any_number else (np.abs(x) >= EPOCH_RANGE[0]) & (np.abs(x) < EPOCH_RANGE[1])
        secs = np.where(np.abs(x) >= MS_FROM, x / 1000.0, x)[ok]
        got[num[ok]] = (secs * 1e9).round().astype("int64").astype("datetime64[ns]")

    # 2. time objects
    for i in np.flatnonzero(kinds == "time"):
        got[i] = _naive_utc(_localised(pd.Timestamp(raw[i]), tz))

    # 3. text: the ISO forms vectorised (zoned, then zone-less in tz), the rest one at a time
    txt = np.flatnonzero(kinds == "text")
    if len(txt):
        text = pd.Series([normalise(str(raw[i])) for i in txt], index=txt)
        zoned = text.str.fullmatch(_ISO_ZONED).to_numpy()
        if zoned.any():
            at = pd.to_datetime(text[zoned], format="ISO8601", utc=True, errors="coerce")
            got[txt[zoned]] = at.dt.tz_localize(None).to_numpy()
        naive = text.str.fullmatch(_ISO_NAIVE).to_numpy() & ~zoned
        if naive.any():
            at = pd.to_datetime(text[naive], format="ISO8601", errors="coerce")
            at = at.dt.tz_localize(tz, ambiguous="NaT", nonexistent="shift_forward").dt.tz_convert("UTC")
            got[txt[naive]] = at.dt.tz_localize(None).to_numpy()
        for i in txt[~zoned & ~naive]:
            got[i] = _naive_utc(_one(text[i], tz))

    out = pd.Series(got).dt.tz_localize("UTC")
    years = out.dt.year
    keep = out.isna() | ((years >= MIN_YEAR) & (years <= MAX_YEAR))
    if any_number:
        keep |= pd.Series(kinds == "number")
    return out.where(keep)


def utc_seconds(times: pd.Series) -> np.ndarray:
    """(n,) float64 seconds since 1970-01-01 UTC of :func:`to_utc`'s result (NaN for NaT)."""
    return (times - pd.Timestamp("1970-01-01", tz="UTC")).dt.total_seconds().to_numpy(dtype=np.float64)


def _kind(v: Any, any_number: bool) -> str:
    if v is None or (isinstance(v, float) and v != v) or v is pd.NaT:
        return "missing"
    if isinstance(v, (pd.Timestamp, datetime, np.datetime64)):
        return "time"
    if isinstance(v, (int, float, np.integer, np.floating)) and not isinstance(v, bool):
        return "number"
    text = str(v).strip()
    if not text:
        return "missing"
    if not _NUMBER.fullmatch(text):
        return "text"
    # a short number such as 20240501 is a date written without separators, unless any number is time
    return "number" if any_number or len(text.split(".")[0].lstrip("+-")) >= 9 else "text"


def _naive_utc(ts) -> np.datetime64:
    return np.datetime64("NaT") if ts is pd.NaT else ts.tz_localize(None).to_datetime64()


def _localised(ts: pd.Timestamp, tz: str):
    if ts is pd.NaT or ts != ts:
        return pd.NaT
    if ts.tzinfo is None:
        ts = ts.tz_localize(tz, ambiguous="NaT", nonexistent="shift_forward")
        if ts is pd.NaT:
            return pd.NaT
    return ts.tz_convert("UTC")


def _one(text: str, tz: str):
    if not text or not re.search(r"\d", text):
        return pd.NaT
    try:
        return _localised(pd.Timestamp(text), tz)
    except (ValueError, OverflowError):
        return pd.NaT
