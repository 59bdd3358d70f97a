"""Opinion monitoring's alerts: per-period series with empty periods filled, the three rules
(alert on a jump, quiet on binomial noise, one alert per crossing then a resolve, cool-down,
minimum count, cusum on a slow drift), the explanation of an alert (keywords, samples, topics,
change point), and the replay generator with its detection report. Seeded synthetic data."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from aigc.apps.monitor.alerts import RULES, Event, detect, explain, scan, series, tokens
from aigc.apps.monitor.replay import detectability, detection_report, replay
from aigc.errors import InvalidInput

DAY = pd.Timedelta(days=1)
START = pd.Timestamp("2026-01-01", tz="UTC")


def counts(shares, volume=200, seed=0) -> pd.DataFrame:
    """A daily series: ``volume`` posts a day (an int or one per day), negatives binomial at ``shares``."""
    rng = np.random.default_rng(seed)
    shares = np.asarray(shares, dtype=float)
    volume = np.broadcast_to(np.asarray(volume), shares.shape).astype(np.int64)
    index = pd.date_range(START, periods=len(shares), freq="D", name="period")
    return pd.DataFrame({"volume": volume, "negative": rng.binomial(volume, shares)}, index=index)


def step(n, at, length, base=0.2, high=0.45) -> np.ndarray:
    shares = np.full(n, base)
    shares[at:at + length] = high
    return shares


def day_of(event: Event) -> int:
    return int((event.period - START) / DAY)


def alerts(events):
    return [e for e in events if e.kind == "alert"]


# -- series ---------------------------------------------------------------------------------------


def posts(rows) -> pd.DataFrame:
    frame = pd.DataFrame(rows, columns=["ts", "topic", "negative", "text"])
    frame["ts"] = pd.to_datetime(frame["ts"], utc=True)
    frame["id"] = range(len(frame))
    return frame


def test_series_fills_empty_periods_with_zero_volume():
    items = posts([("2026-01-01T08:00Z", "a", True, "差"), ("2026-01-01T09:00Z", "a", False, "好"),
                   ("2026-01-02T10:00Z", "b", True, "差"), ("2026-01-05T23:30-05:00", "a", True, "差")])
    overall = series(items)
    assert list(overall.index) == list(pd.date_range(START, periods=6, freq="D"))  # 23:30 -05:00: the 6th, UTC
    assert overall["volume"].tolist() == [2, 1, 0, 0, 0, 1] and overall["negative"].tolist() == [1, 1, 0, 0, 0, 1]
    assert overall["share"].iloc[0] == 0.5 and overall["share"].iloc[2:5].isna().all()
    b = series(items, topic="b")  # a topic's series spans all posts, so topics line up
    assert b.index.equals(overall.index) and b["volume"].tolist() == [0, 1, 0, 0, 0, 0]
    wide = series(items, topic="a", start="2025-12-30", end="2026-01-08")
    assert len(wide) == 10 and wide["volume"].sum() == 3 and wide["volume"].iloc[:2].tolist() == [0, 0]
    hourly = series(items, period="hour", start="2026-01-01T07:00Z", end="2026-01-01T10:00Z")
    assert hourly["volume"].tolist() == [0, 1, 1, 0]
    assert hourly.attrs == {"topic": None, "period": "hour"}


# -- the rules ------------------------------------------------------------------------------------


@pytest.mark.parametrize("rule", list(RULES))
def test_rule_alerts_within_one_period_of_a_jump(rule):
    events = detect(counts(step(60, 40, 6, high=0.4)), rule)
    first = alerts(events)
    assert first, f"{rule} missed a jump from 20% to 40% at 200 posts a period"
    assert day_of(first[0]) in (40, 41)
    assert first[0].statistic > first[0].threshold and first[0].share > first[0].expected


@pytest.mark.parametrize("rule", list(RULES))
def test_rule_is_quiet_on_a_calm_series(rule):
    rng = np.random.default_rng(7)
    for seed in range(3):  # 200 periods of binomial noise, volumes from 20 to ~300 a period
        volume = rng.integers(20, 300, size=200)
        events = detect(counts(np.full(200, rng.uniform(0.1, 0.4)), volume, seed=seed), rule)
        assert len(alerts(events)) <= 2, [e.to_dict() for e in events]


@pytest.mark.parametrize("rule", list(RULES))
def test_hourly_periods(rule):  # baseline compares the last 24 h with the 7 days before them
    shares = step(24 * 20, 24 * 15 + 5, 12, high=0.5)
    data = counts(shares, 30, seed=4).set_axis(pd.date_range(START, periods=len(shares), freq="h"))
    data.attrs["period"] = "hour"
    first = alerts(detect(data, rule))
    hours = [int((e.period - START) / pd.Timedelta(hours=1)) - (24 * 15 + 5) for e in first]
    assert hours and 0 <= hours[0] < 12, hours


@pytest.mark.parametrize("rule", list(RULES))
def test_alert_fires_once_on_crossing_then_resolves(rule):
    events = detect(counts(step(70, 30, 5), seed=1), rule)  # periods 30-34 at 45%, back to 20% at 35
    assert [e.kind for e in events] == ["alert", "resolved"], [e.to_dict() for e in events]
    alert, resolved = events
    assert day_of(alert) in (30, 31) and 35 <= day_of(resolved) <= 37
    assert resolved.statistic < resolved.threshold < alert.threshold
    assert all(e.rule == rule and e.topic is None for e in events)
    assert json.loads(json.dumps(alert.to_dict()))["period"] == alert.period.isoformat()
    assert Event.from_dict(alert.to_dict()).period == alert.period


@pytest.mark.parametrize("rule", list(RULES))
def test_cooldown_suppresses_a_realert(rule):
    shares = step(70, 30, 4, high=0.5)
    shares[37:41] = 0.5  # back to 20% for periods 34-36 only, then high again
    data = counts(shares, seed=2)
    eager = detect(data, rule, cooldown=0)
    assert len(alerts(eager)) == 2 and day_of(alerts(eager)[1]) in (37, 38), [e.to_dict() for e in eager]
    calm = detect(data, rule, cooldown=10)
    resolved = next(e for e in calm if e.kind == "resolved")
    assert [day_of(e) for e in alerts(calm)] == [day_of(alerts(eager)[0])]
    assert day_of(resolved) < 37


@pytest.mark.parametrize("rule, small, periods", [("ewma", 3, 1), ("baseline", 3, 1), ("cusum", 8, 5)])
def test_min_count_blocks_small_periods(rule, small, periods):
    data = counts(np.full(60, 0.05))
    data.iloc[40:40 + periods] = [small, small]  # every post negative
    loose = alerts(detect(data, rule, min_count=1))
    assert any(40 <= day_of(e) < 40 + periods for e in loose)  # without the floor, the small periods alert
    assert not any(40 <= day_of(e) < 40 + periods for e in alerts(detect(data, rule)))


def test_cusum_catches_a_slow_drift_that_ewma_misses_or_sees_later():
    shares = np.full(150, 0.2)
    shares[60:90] = np.linspace(0.2, 0.3, 30)  # +50% over 30 periods, then it stays
    shares[90:] = 0.3
    delays = {"cusum": [], "ewma": []}
    for seed in range(5):
        for rule, found in delays.items():
            late = [day_of(e) - 60 for e in alerts(detect(counts(shares, seed=seed), rule)) if day_of(e) >= 60]
            found.append(late[0] if late else 90)  # missed: the rest of the series
    assert all(d < 30 for d in delays["cusum"]), delays  # within the drift's length, every time
    assert sum(delays["cusum"]) < sum(delays["ewma"]) and min(delays["ewma"]) >= min(delays["cusum"]), delays


def test_bad_arguments_name_the_value():
    items = posts([("2026-01-01T08:00Z", "a", True, "差")])
    with pytest.raises(InvalidInput, match="'week'"):
        series(items, period="week")
    with pytest.raises(InvalidInput, match="'weekly'"):
        scan(items, period="weekly")
    with pytest.raises(InvalidInput, match="'zscore'"):
        detect(counts(np.full(5, 0.2)), "zscore")
    with pytest.raises(InvalidInput, match="'extreme'"):
        detect(counts(np.full(5, 0.2)), "ewma", sensitivity="extreme")
    with pytest.raises(InvalidInput, match="time-zone aware"):
        series(items.assign(ts=items["ts"].dt.tz_localize(None)))
    with pytest.raises(InvalidInput, match="'c'"):
        series(items, topic="c")


# -- explanations ---------------------------------------------------------------------------------

NEGATIVE = ["电池 很差", "质量 一般 不推荐", "screen too dark", "物流 太慢", "customer service ignored me"]
POSITIVE = ["great battery", "很好 满意", "屏幕 清晰", "fast delivery"]
CRISIS = ["电池发热 很差", "手机发热 烫手", "battery overheating again"]


def test_tokens_cut_chinese_with_jieba_and_drop_stopwords():
    assert tokens("The battery is HOT, 2 days!") == ["battery", "hot", "days"]
    words = tokens("电池发热，很差的手机 battery")
    assert {"电池", "发热", "很差", "手机", "battery"} <= set(words) and "的" not in words and "，" not in words


@pytest.fixture(scope="module")
def monitored():
    """40 days of two topics at ~120 posts a day; from day 30 'battery' turns 60% negative, its
    new complaints about heat (发热, overheating)."""
    rng = np.random.default_rng(11)
    rows = []
    for day in range(40):
        for topic in ("battery", "screen"):
            crisis = topic == "battery" and day >= 30
            for _ in range(rng.poisson(120)):
                negative = rng.random() < (0.6 if crisis else 0.2)
                pool = (CRISIS if crisis and rng.random() < 0.7 else NEGATIVE) if negative else POSITIVE
                ts = START + day * DAY + pd.Timedelta(seconds=int(rng.integers(86400)))
                rows.append((ts, topic, negative, pool[rng.integers(len(pool))]))
    items = posts(rows)
    return items, scan(items, rules=("ewma",))


def test_explain_a_topic_alert(monitored):
    items, events = monitored
    alert = next(e for e in alerts(events) if e.topic == "battery")
    assert day_of(alert) in (30, 31) and not [e for e in alerts(events) if e.topic == "screen"]
    why = explain(items, alert)
    json.dumps(why, ensure_ascii=False)
    words = [k["word"] for k in why["keywords"]]
    assert "发热" in words[:3] and "overheating" in words
    assert all(k["score"] > 0 and k["count"] > 0 for k in why["keywords"])
    assert why["samples"] and all("发热" in s["text"] or "overheating" in s["text"] for s in why["samples"])
    assert [t["topic"] for t in why["topics"]] == ["battery"] and why["topics"][0]["share"] > 0.45
    assert abs((pd.Timestamp(why["change_point"]) - (START + 30 * DAY)) / DAY) <= 1
    assert "'battery'" in why["summary"] and "发热" in why["summary"] and "发热" in why["summary_zh"]
    assert why["summary"].startswith("Negative share for 'battery' rose to")


def test_explain_an_overall_alert_names_the_topic(monitored):
    items, events = monitored
    alert = next(e for e in alerts(events) if e.topic is None)
    why = explain(items, alert.to_dict(), baseline_periods=10)
    assert why["topics"][0]["topic"] == "battery" and why["topics"][0]["negative"] > 50
    assert why["summary"].startswith("Overall negative share rose") and "'battery'" in why["summary"]
    assert why["baseline"]["start"] == (alert.period - 10 * DAY).isoformat()


# -- replay ---------------------------------------------------------------------------------------


def reviews(topics=5) -> pd.DataFrame:
    rows = [(f"坏 {t}-{j}", 0, f"t{t}") for t in range(topics) for j in range(4)]
    rows += [(f"good {t}-{j}", 1, f"t{t}") for t in range(topics) for j in range(4)]
    return pd.DataFrame(rows, columns=["text", "label", "topic"])


def test_replay_is_deterministic_and_its_crises_double_the_share():
    a, b = replay(reviews(), days=80, seed=3), replay(reviews(), days=80, seed=3)
    pd.testing.assert_frame_equal(a.items, b.items)
    assert a.crises == b.crises and a.drifts == b.drifts and a.calm == b.calm
    other = replay(reviews(), days=80, seed=4)
    assert other.crises != a.crises or not other.items["ts"].equals(a.items["ts"])
    items = a.items
    assert list(items.columns) == ["id", "ts", "text", "topic", "label", "negative"]
    assert (items["negative"] == (items["label"] == 0)).all() and str(items["ts"].dt.tz) == "UTC"
    assert items["ts"].is_monotonic_increasing and items["id"].tolist() == list(range(len(items)))
    assert a.crises and a.drifts
    seen = expected = 0.0
    for c in a.crises:
        days = (items["ts"] >= c["start"]) & (items["ts"] < c["end"] + DAY)
        inside = items[(items["topic"] == c["topic"]) & days]
        seen += inside["negative"].sum()
        expected += c["base_share"] * len(inside)
        assert c["share"] == pytest.approx(min(2 * c["base_share"], 0.95))
    assert seen / expected > 1.6  # doubled in expectation
    calm = set(a.calm)
    assert not any((c["topic"], c["start"]) in calm for c in a.crises)
    assert sum(t is None for t, _ in a.calm) > 0


def test_detection_report_scores_alerts_against_the_answers():
    r = replay(reviews(), days=80, seed=3)
    def alert(topic, period):
        return Event("alert", "ewma", topic, period, 0.5, 0.2, 5.0, 3.1, 100)
    events = [alert(c["topic"], c["start"] + DAY) for c in r.crises]
    events.append(alert(*r.calm[-1]))
    events.append(Event("alert", "cusum", *r.calm[0], 0.5, 0.2, 9.0, 6.9, 100))  # another rule's: not counted
    report = detection_report([e.to_dict() for e in events], r, "ewma")
    assert report["crises"] == report["detected"] == len(r.crises) and report["delays"] == [1] * len(r.crises)
    assert report["max_delay"] == 1 and report["false_alarms"] == 1 and report["calm_periods"] == len(set(r.calm))
    assert report["false_alarms_per_100"] == pytest.approx(100 / len(set(r.calm)), abs=1e-3)
    missed = detection_report([], r, "ewma")
    assert missed["detected"] == 0 and missed["delays"] == [None] * len(r.crises) and missed["max_delay"] is None


def test_detectability_is_the_chance_an_oracle_alerts_in_time():
    r = replay(reviews(), days=80, seed=3)
    crisis = r.crises[0]
    slot = r.items["ts"].dt.floor("D")
    mine = r.items[(r.items["topic"] == crisis["topic"]) & (slot >= crisis["start"]) & (slot <= crisis["start"] + DAY)]
    power = detectability(r)
    assert len(power) == len(r.crises) and all(0.0 <= p <= 1.0 for p in power)
    # the same oracle by hand for the first crisis: binomial tests at rate / 2 on day 0 and days 0-1
    from scipy.stats import binom

    n0 = int((slot[mine.index] == crisis["start"]).sum())
    n1 = len(mine) - n0
    p0, p1 = crisis["base_share"], crisis["share"]
    c0, c01 = int(binom.isf(0.005, n0, p0)) + 1, int(binom.isf(0.005, n0 + n1, p0)) + 1
    hand = 1 - sum(binom.pmf(x, n0, p1) * binom.cdf(c01 - 1 - x, n1, p1) for x in range(min(c0, n0 + 1)))
    assert power[0] == pytest.approx(hand, abs=1e-6)
    # a stricter rate loses power; a classifier that flags at random sees no crisis at all
    assert all(s <= p + 1e-9 for s, p in zip(detectability(r, rate=1e-4), power))
    blind = detectability(r, flag_rates={c["topic"]: (0.3, 0.3) for c in r.crises})
    assert blind == [0.0] * len(r.crises)
    with pytest.raises(InvalidInput, match="rate must be between 0 and 1"):
        detectability(r, rate=0)
