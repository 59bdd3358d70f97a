"""A generator that replays real reviews over time with known answers, for benchmarking the alert
rules of :mod:`aigc.apps.monitor.alerts`, and the report that scores a rule's events against it.

:func:`replay` lays out, per topic, a daily volume level (log-uniform over 15-400 posts a day;
one topic in five quiet, 1-8 a day, so with days without posts), a weekly cycle and Poisson
noise, and a base negative share (0.1-0.4). On some active topics it plants 1-2 crises (the share
doubles, capped at 0.95, for 2-6 days) and on others a slow drift (the share rises by half over
20-40 days, then stays). Quiet topics get neither: a doubling there is below what any period can
show. The first ``QUIET_START`` days hold no event, as history for the rules. Each day's
negatives are binomial at that day's share, their texts sampled with replacement from the
topic's reviews of that label, their times spread over the day (more by day than by night).
Everything comes from one seed.

:func:`detection_report` scores one rule's events: the delay to each crisis, the drifts caught,
and the false alarms on the calm (topic, period) pairs.

:func:`detectability` says how many crises any rule could catch in time: per crisis, the chance
that an oracle that knows the base and crisis shares exactly alerts by the period after the start
at a given false-alarm rate per period. A small topic's doubling is often within its noise: the
expected count, not every crisis, is what a rule can be held to.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from aigc.apps.monitor.alerts import RULES, Event, _count_arg, _freq, _timestamp
from aigc.errors import InvalidInput

QUIET_START = 21  # days without events first: the rules' warm-up (14 periods) and one week more
AFTER = 7  # days after a crisis or drift not counted calm: the baseline rule's week of history
CRISIS_GAP = 14  # days at least between two crises of a topic
MIN_DAYS = 60  # QUIET_START + the longest drift (40 days) fits only from here on
_DIURNAL = 0.4 + np.sin(np.pi * np.clip((np.arange(24) - 6) / 18, 0, 1))  # posts per hour: low at night


@dataclass
class Replay:
    """The replayed posts and the answers: ``crises`` (topic, start, end: first and last day,
    factor, base_share, share), ``drifts`` (topic, start, end: first and last day of the rise,
    from_share, to_share), and ``calm``: the (topic, period) pairs with posts outside every event
    and the AFTER days following it (topic None: overall, when every topic is calm), from day
    QUIET_START on, for counting false alarms."""

    items: pd.DataFrame
    crises: list[dict[str, Any]]
    drifts: list[dict[str, Any]]
    calm: list[tuple[Any, pd.Timestamp]]
    period: str = "day"
    topics: dict[Any, dict[str, Any]] = field(default_factory=dict)  # level, base_share, quiet per topic


def _pools(reviews: Any) -> dict[Any, tuple[np.ndarray, np.ndarray]]:
    """Per topic, the texts of its negative and of its positive reviews."""
    if not isinstance(reviews, pd.DataFrame):
        raise InvalidInput("reviews must be a pandas DataFrame with text, label and topic, got "
                           f"{type(reviews).__name__}")
    missing = [c for c in ("text", "label", "topic") if c not in reviews.columns]
    if missing:
        raise InvalidInput(f"reviews lack the column(s) {missing} (have {list(reviews.columns)}): rename the "
                           "category column to topic")
    bad = ~reviews["label"].isin([0, 1])
    if bad.any():
        row = int(np.flatnonzero(bad.to_numpy())[0])
        raise InvalidInput("reviews.label must be 1 (positive) or 0 (negative), got "
                           f"{reviews['label'].iloc[row]!r} at row {row}")
    if reviews.empty:
        raise InvalidInput("reviews is empty: replay needs reviews of both labels per topic")
    pools = {}
    for topic, rows in reviews.groupby("topic", sort=True):
        neg = rows.loc[rows["label"] == 0, "text"].astype(str).to_numpy()
        pos = rows.loc[rows["label"] == 1, "text"].astype(str).to_numpy()
        if not len(neg) or not len(pos):
            raise InvalidInput(f"topic {topic!r} has no {'negative' if not len(neg) else 'positive'} review: "
                               "every topic needs both labels (drop the topic or add reviews)")
        pools[topic] = (neg, pos)
    return pools


def _crises(rng: np.random.Generator, days: int) -> list[tuple[int, int]]:
    """1-2 (first, last) day pairs of 2-6 days each, from QUIET_START on, CRISIS_GAP apart,
    ending AFTER days before the end."""
    out: list[tuple[int, int]] = []
    first = QUIET_START
    for _ in range(int(rng.integers(1, 3))):
        length = int(rng.integers(2, 7))
        latest = days - AFTER - length
        if latest <= first:
            break
        start = int(rng.integers(first, min(latest, first + (days - QUIET_START) // 2)))
        out.append((start, start + length - 1))
        first = start + length + CRISIS_GAP
    return out


def replay(reviews: pd.DataFrame, days: int = 120, seed: int = 0, start: Any = "2026-01-01",
           period: str = "day") -> Replay:
    """``days`` days of posts replayed from ``reviews`` (``text``, ``label`` 1/0, ``topic``) with
    planted crises and drifts; ``period`` sets the granularity of ``calm``."""
    _freq(period)
    days = _count_arg(days, "days", MIN_DAYS)
    seed = _count_arg(seed, "seed", 0)
    day0 = _timestamp(start, "start").floor("D")
    pools = _pools(reviews)
    rng = np.random.default_rng(seed)
    names = list(pools)
    order = [names[j] for j in rng.permutation(len(names))]
    n_quiet = len(names) // 5
    active = order[n_quiet:]
    n_crisis = max(1, round(0.4 * len(active)))
    crisis_topics = set(active[:n_crisis])
    drift_topics = set(active[n_crisis:n_crisis + round(0.3 * len(active))])

    d = np.arange(days)
    frames, crises, drifts, profiles = [], [], [], {}
    busy = np.zeros((len(names), days), dtype=bool)  # topic x day inside an event or AFTER days after it
    for t, topic in enumerate(names):
        quiet = topic in order[:n_quiet]
        least, most = (1, 8) if quiet else (15, 400)  # posts a day, log-uniform
        level = float(np.exp(rng.uniform(np.log(least), np.log(most))))
        weekly = 1 + rng.uniform(0.1, 0.4) * np.cos(2 * np.pi * (d - rng.uniform(0, 7)) / 7)  # (days,)
        volume = rng.poisson(level * weekly)  # (days,)
        base = float(rng.uniform(0.1, 0.4))
        share = np.full(days, base)
        if topic in crisis_topics:
            for first, last in _crises(rng, days):
                high = min(2 * base, 0.95)
                share[first:last + 1] = high
                busy[t, first:last + 1 + AFTER] = True
                crises.append({"topic": topic, "start": day0 + pd.Timedelta(days=first),
                               "end": day0 + pd.Timedelta(days=last), "factor": 2.0, "base_share": base,
                               "share": high})
        elif topic in drift_topics:
            length = int(rng.integers(20, 41))
            first = int(rng.integers(QUIET_START, max(QUIET_START + 1, days - AFTER - length)))
            ramp = np.clip((d - first + 1) / length, 0, 1)  # 0 before, 1 from the last day of the rise on
            share = base * (1 + 0.5 * ramp)
            busy[t, first:] = True  # the level never comes back: calm again AFTER days past the rise
            busy[t, first + length - 1 + AFTER + 1:] = False
            drifts.append({"topic": topic, "start": day0 + pd.Timedelta(days=first),
                           "end": day0 + pd.Timedelta(days=first + length - 1), "from_share": base,
                           "to_share": 1.5 * base})
        profiles[topic] = {"level": level, "base_share": base, "quiet": quiet}

        negatives = rng.binomial(volume, share)  # (days,)
        total = int(volume.sum())
        day = np.repeat(d, volume)  # (N,)
        rank = np.arange(total) - np.repeat(np.cumsum(volume) - volume, volume)  # index within its day
        negative = rank < np.repeat(negatives, volume)
        neg_pool, pos_pool = pools[topic]
        text = np.where(negative, neg_pool[rng.integers(len(neg_pool), size=total)],
                        pos_pool[rng.integers(len(pos_pool), size=total)])
        hour = rng.choice(24, size=total, p=_DIURNAL / _DIURNAL.sum())
        seconds = day * 86400 + hour * 3600 + rng.integers(0, 3600, size=total)
        frames.append(pd.DataFrame({"ts": day0 + pd.to_timedelta(seconds, unit="s"), "text": text, "topic": topic,
                                    "label": (~negative).astype(np.int64), "negative": negative}))

    items = pd.concat(frames, ignore_index=True).sort_values("ts", kind="stable", ignore_index=True)
    items.insert(0, "id", np.arange(len(items), dtype=np.int64))
    return Replay(items, crises, drifts, _calm(items, names, busy, day0, period), period, profiles)


def _calm(items: pd.DataFrame, names: list, busy: np.ndarray, day0: pd.Timestamp,
          period: str) -> list[tuple[Any, pd.Timestamp]]:
    """(topic, period) pairs with posts, from QUIET_START on, outside ``busy``; overall (None) where
    no topic is busy."""
    freq = _freq(period)
    slot = items["ts"].dt.floor(freq)
    day = ((slot - day0) // pd.Timedelta(days=1)).to_numpy()
    quiet_day = (day >= QUIET_START)
    calm: list[tuple[Any, pd.Timestamp]] = []
    overall = quiet_day & ~busy.any(axis=0)[day]
    calm += [(None, p) for p in slot[overall].unique()]
    index = {topic: t for t, topic in enumerate(names)}
    topic_row = items["topic"].map(index).to_numpy()
    mine = quiet_day & ~busy[topic_row, day]
    pairs = pd.DataFrame({"topic": items["topic"][mine], "slot": slot[mine]}).drop_duplicates()
    calm += list(zip(pairs["topic"], pairs["slot"], strict=True))
    return calm


def detection_report(events: list[Event | dict], replay: Replay, rule: str) -> dict[str, Any]:
    """How ``rule``'s alerts meet the planted answers: per crisis the delay in periods from its start
    to the first alert on its topic or overall within it (None: missed); drifts caught (an alert on
    the topic between the start of the rise and AFTER days past its end); false alarms (alerts on
    calm pairs) per 100 calm periods."""
    if rule not in RULES:
        raise InvalidInput(f"rule must be one of {list(RULES)}, got {rule!r}")
    step = pd.Timedelta(1, unit=_freq(replay.period))
    alerts = [e if isinstance(e, Event) else Event.from_dict(e) for e in events]
    alerts = [e for e in alerts if e.kind == "alert" and e.rule == rule]
    by_topic: dict[Any, list[pd.Timestamp]] = {}
    for e in alerts:
        by_topic.setdefault(e.topic, []).append(e.period)

    def first(topics: tuple, lo: pd.Timestamp, hi: pd.Timestamp) -> pd.Timestamp | None:
        hits = [p for t in topics for p in by_topic.get(t, []) if lo <= p <= hi]
        return min(hits) if hits else None

    delays = []
    for c in replay.crises:
        hit = first((c["topic"], None), c["start"], c["end"] + pd.Timedelta(days=1) - step)
        delays.append(None if hit is None else int((hit - c["start"]) // step))
    caught = sum(first((dr["topic"],), dr["start"], dr["end"] + pd.Timedelta(days=AFTER + 1) - step) is not None
                 for dr in replay.drifts)
    calm = set(replay.calm)
    false_alarms = sum((e.topic, e.period) in calm for e in alerts)
    found = [x for x in delays if x is not None]
    return {"crises": len(delays), "detected": len(found), "delays": delays,
            "max_delay": max(found) if found else None, "false_alarms": false_alarms,
            "calm_periods": len(calm),
            "false_alarms_per_100": round(100 * false_alarms / len(calm), 3) if calm else None,
            "drifts": len(replay.drifts), "drifts_detected": caught}


def detectability(replay: Replay, rate: float = 1e-2, flag_rates: Mapping[Any, tuple[float, float]] | None = None,
                  ) -> list[float]:
    """Per crisis, the probability that an oracle alerts within one period of its start while
    raising about ``rate`` false alarms per calm period: it knows the topic's base share p0 and
    crisis share p1, and tests the start period's negatives and those of the start and the next
    period together, each one-sided binomial test at ``rate`` / 2 (Bonferroni). Knowing p0 exactly,
    it is at least as strong as any rule estimating it from history at that rate.

    ``flag_rates`` maps a topic to (the share of its negative posts flagged negative, the share of
    its positive posts flagged negative): what a classifier's flags turn the shares into, p ->
    p tpr + (1 - p) fpr. Without it the flags are the true labels. The volumes are the replay's own."""
    from scipy.stats import binom

    if not 0 < rate < 1:
        raise InvalidInput(f"rate must be between 0 and 1, got {rate!r}")
    freq = _freq(replay.period)
    step = pd.Timedelta(1, unit=freq)
    slot = replay.items["ts"].dt.floor(freq)
    out = []
    for c in replay.crises:
        tpr, fpr = (flag_rates or {}).get(c["topic"], (1.0, 0.0))
        p0, p1 = (p * tpr + (1 - p) * fpr for p in (c["base_share"], c["share"]))
        mine = slot[replay.items["topic"] == c["topic"]]
        n0, n1 = int((mine == c["start"]).sum()), int((mine == c["start"] + step).sum())
        if p1 <= p0 or n0 + n1 == 0:
            out.append(0.0)
            continue
        # the least negatives that alert: P(X >= c | p0) <= rate / 2
        c0 = int(binom.isf(rate / 2, n0, p0)) + 1 if n0 else 1
        c01 = int(binom.isf(rate / 2, n0 + n1, p0)) + 1
        x0 = np.arange(min(c0, n0 + 1))  # start-period counts that do not alert on their own
        missed = float(np.sum(binom.pmf(x0, n0, p1) * binom.cdf(c01 - 1 - x0, n1, p1)))
        out.append(round(1.0 - missed, 6))
    return out
