"""aigc.data.times: the one timestamp parser of the monitor and the recommender."""

from __future__ import annotations

import datetime

import numpy as np
import pandas as pd
import pytest

from aigc.apps.monitor.times import parse_times as monitor_times
from aigc.apps.recommend.data import parse_times as recommend_times
from aigc.data.times import to_utc, utc_seconds
from aigc.errors import InvalidInput

MIXED = ["2024-05-01T10:00:00Z", "2024-05-01 18:00:00+08:00", "2024/05/01 10:00", "2024年5月1日 10时",
         "2024年5月1日 10:00", "2024年5月1日 上午10点", "01 May 2024 10:00", "1714557600", "1714557600000",
         1714557600, datetime.datetime(2024, 5, 1, 10), pd.Timestamp("2024-05-01T12:00:00+02:00")]


def test_every_form_in_one_column_is_the_same_instant_for_both_apps():
    got = to_utc(MIXED)
    assert got.notna().all() and set(utc_seconds(got)) == {1714557600.0}
    frame = pd.DataFrame({"time": MIXED})
    assert np.allclose(recommend_times(MIXED, frame, "time", "events.csv"), 1714557600.0)
    assert {t.isoformat() for t in monitor_times(MIXED)} == {"2024-05-01T10:00:00+00:00"}


def test_a_zoneless_time_after_a_zoned_one_keeps_the_column_zone():
    # pandas 2.3 parsing these together gives the second the first one's +08:00
    got = to_utc(["2024-05-01T10:00:00+08:00", "2024-05-01 10:00"], "UTC")
    assert [t.isoformat() for t in got] == ["2024-05-01T02:00:00+00:00", "2024-05-01T10:00:00+00:00"]
    shanghai = to_utc(["2024-05-01 10:00", "2024年5月1日 晚上8点"], "Asia/Shanghai")
    assert [t.isoformat() for t in shanghai] == ["2024-05-01T02:00:00+00:00", "2024-05-01T12:00:00+00:00"]


def test_numbers_dates_without_separators_and_what_is_no_time():
    got = to_utc(["20240501", 5, "-3", "1899-01-01", "next tuesday", "", None, float("nan"), "2024-13-45"])
    assert got[0].isoformat() == "2024-05-01T00:00:00+00:00"  # 8 digits: a date, not 1970
    assert got[1:].isna().all()  # 5 s and -3 s are no Unix time a monitor expects; 1899 is out of range
    counter = to_utc([5, "7", "1714557600000"], any_number=True)  # the recommender: any number orders events
    assert list(utc_seconds(counter)) == [5.0, 7.0, 1714557600.0]
    with pytest.raises(InvalidInput, match="unknown time zone"):
        to_utc(["2024-05-01"], "Mars/Olympus")


def test_errors_name_the_row_in_each_app():
    with pytest.raises(InvalidInput, match=r"row 2 has no readable timestamp \('soon'\)"):
        monitor_times(["2024-05-01", "soon"])
    frame = pd.DataFrame({"time": ["2024-05-01", ""]})
    with pytest.raises(InvalidInput, match="the timestamp \\(time\\) is empty"):
        recommend_times(["2024-05-01", ""], frame, "time", "events.csv")
