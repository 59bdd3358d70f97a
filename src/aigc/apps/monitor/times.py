"""The monitor's timestamps: :mod:`aigc.data.times` (the one parser, shared with the recommender)
with the monitor's errors. A value that is no time refuses the batch, naming its row."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from aigc.data.times import check_timezone, to_utc
from aigc.errors import InvalidInput

__all__ = ["check_timezone", "parse_bound", "parse_one", "parse_times"]


def parse_one(value: Any, tz: str = "UTC"):
    """One value as a UTC :class:`pandas.Timestamp`, or None when it is not a time."""
    ts = to_utc([value], tz)[0]
    return None if ts is None or ts != ts else ts


def parse_times(values: Sequence[Any], tz: str = "UTC", where: str = "input") -> list:
    """Every value as a UTC timestamp; the first that is not one raises, naming its row (1 = the
    first data row) and its text."""
    values = list(values)
    times = to_utc(values, tz)
    bad = times.isna().to_numpy()
    if bad.any():
        i = int(bad.argmax())
        v = values[i]
        shown = "" if v is None or (isinstance(v, float) and v != v) else str(v)[:60]
        raise InvalidInput(f"{where}: row {i + 1} has no readable timestamp ({shown!r}): give ISO 8601 "
                           "(2026-03-04T10:00:00+08:00), a date and time, or Unix seconds; nothing was added")
    return list(times)


def parse_bound(value: str | None, what: str) -> str | None:
    """A query's start or end as an ISO UTC string (None stays None)."""
    if value is None or value == "":
        return None
    ts = parse_one(value)
    if ts is None:
        raise InvalidInput(f"{what} {value!r} is not a time: give ISO 8601, e.g. 2026-03-04 or 2026-03-04T10:00Z")
    return ts.isoformat()
