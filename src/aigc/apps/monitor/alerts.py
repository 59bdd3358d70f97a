"""Alerts on the negative share of scored posts, and why each one fired. Pure functions over a
pandas DataFrame of scored posts (columns ``ts``: tz-aware timestamps, ``topic``, ``negative``:
bool, ``text``, ``id``); no workspace, no I/O. The classifier, storage, CLI and HTTP routes of
:mod:`aigc.apps.monitor` call these; this module never calls them.

- :func:`series`: volume, negatives and share per period (``hour`` or ``day``, UTC), every period
  between ``start`` and ``end`` present, an empty one as volume 0.
- :func:`detect`: one rule over one series -> ``alert`` / ``resolved`` :class:`Event`s. The rules
  (:data:`RULES`) share one state machine: periods under ``min_count`` posts are skipped (they
  neither alert, resolve nor update a rule), no alert during the warm-up, one ``alert`` when the
  state turns high (not one per high period), ``resolved`` when the statistic falls below a lower
  (hysteresis) threshold, and no new alert within ``cooldown`` periods after a resolve.

  - ``ewma``: the expected share is an EWMA of the previous periods (negatives and volumes
    averaged apart, so the share is volume-weighted); a period is high when its negatives are
    more than k standard errors above it (the exact tail of the beta-binomial predictive: the
    binomial of the period's own volume widened by the EWMA's own error, so it keeps its nominal
    rate at small counts where the normal band sqrt(p(1-p)/n) does not, and equals that band at
    large ones) and its share is at least ``MARGIN`` above the expected.
  - ``cusum``: a one-sided binomial CUSUM, S = max(0, S + log-likelihood ratio of p1 = ``SHIFT``
    x p0 against p0), for slow drifts. p0 is a slow EWMA of the periods outside alerts, frozen
    while S > 0, so a drift is measured against the level before it; S is held at h while the
    alert stands and reset to 0 when it resolves; an alert standing WARMUP periods restarts p0 from
    its periods (the new normal).
  - ``baseline``: "this period (the last 24 h with hourly periods) above the mean of the previous
    7 days + k sigma", sigma the standard deviation of those days' shares (as a prediction error:
    x sqrt(1 + 1/days)), floored at the binomial error of the current volume and of the history's;
    days of the alert itself are left out of the history.

- :func:`scan`: every rule over every topic and overall.
- :func:`explain`: keywords (smoothed log-odds with an informative Dirichlet prior, Monroe et al.
  2008), the topics behind an overall alert, the change point (``ruptures``), sample posts, and a
  summary in English and Chinese.

Every threshold derives from a nominal false-alarm probability per period and series
(:data:`FALSE_ALARM_RATE`); none is fitted to the replay generator they are benchmarked on.
"""

from __future__ import annotations

import math
import re
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from statistics import NormalDist
from typing import Any

import numpy as np
import pandas as pd

from aigc.errors import InvalidInput

PERIODS = {"hour": "h", "day": "D"}  # period name -> pandas frequency (periods start on the UTC hour/day)
SENSITIVITIES = ("low", "medium", "high")

# One-sided false-alarm probability per period and series: ewma and baseline alert at the normal
# quantile k = z(1 - rate); cusum at h = ln(1 / rate), since an LLR CUSUM's in-control run length is
# at least e^h periods (Lorden 1971). Medium: one false alarm per ~1000 periods of a topic.
FALSE_ALARM_RATE = {"low": 1e-4, "medium": 1e-3, "high": 1e-2}
MIN_COUNT = 10  # posts a period needs: below it one post moves the share by over 10 points
COOLDOWN = 3  # periods without a new alert after a resolve: a 1-2 period dip inside an incident is not two
WARMUP = 14  # valid periods before any alert: two weekly cycles, so the baseline holds >= 14 periods of posts
HYSTERESIS = 0.5  # resolve below half the alert threshold, so noise around the threshold does not flap
MARGIN = 0.25  # least relative rise (ewma, baseline): at a huge volume a trivial rise is significant
EWMA_LAMBDA = 0.1  # memory (2 - l) / l = 19 periods: error small next to one period's, yet follows the level
CUSUM_LAMBDA = 0.02  # p0's memory, ~100 periods: longer than the drifts of weeks cusum is for
SHIFT = 1.5  # cusum's design shift p1 = 1.5 p0: it is optimal for the smallest rise worth an alert (+50%)
HISTORY_DAYS = 7  # baseline: the previous week (one weekly cycle)
MIN_DAYS = 3  # baseline: days with enough posts needed for a mean and a deviation


# -- events -----------------------------------------------------------------------------------


@dataclass
class Event:
    """An alert or its resolve. ``topic`` None is the overall series; ``statistic`` is the rule's
    (standard errors above the expected for ewma and baseline, the CUSUM sum for cusum) and
    ``threshold`` the one it crossed (the alert threshold, or the lower one for ``resolved``)."""

    kind: str  # "alert" | "resolved"
    rule: str
    topic: Any
    period: pd.Timestamp
    share: float
    expected: float
    statistic: float
    threshold: float
    volume: int

    def to_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, "rule": self.rule, "topic": _plain(self.topic),
                "period": self.period.isoformat(), "share": round(self.share, 6),
                "expected": round(self.expected, 6), "statistic": round(self.statistic, 6),
                "threshold": round(self.threshold, 6), "volume": self.volume}

    @classmethod
    def from_dict(cls, doc: Mapping[str, Any]) -> Event:
        missing = [f for f in cls.__dataclass_fields__ if f not in doc]
        if missing:
            raise InvalidInput(f"an event needs the keys {sorted(cls.__dataclass_fields__)}; missing {missing}: "
                               "pass an Event or its to_dict()")
        fields = {f: doc[f] for f in cls.__dataclass_fields__}
        fields["period"] = _timestamp(doc["period"], "event period")
        return cls(**fields)


@dataclass
class Reading:
    """What a rule reads in one period: the numbers an event reports, and whether they are above
    the alert threshold or below the lower one."""

    share: float
    expected: float
    statistic: float
    threshold: float
    lower: float
    volume: int
    above: bool
    below: bool


# -- input checks -----------------------------------------------------------------------------


def _freq(period: Any) -> str:
    if period not in PERIODS:
        raise InvalidInput(f"period must be one of {list(PERIODS)}, got {period!r}: pass period='day' or 'hour'")
    return PERIODS[period]


def _timestamp(value: Any, what: str) -> pd.Timestamp:
    """A UTC timestamp from a Timestamp or an ISO string; a naive one is taken as UTC."""
    try:
        ts = pd.Timestamp(value)
    except (TypeError, ValueError) as e:
        raise InvalidInput(f"{what} must be a time (ISO 8601, e.g. '2026-03-04T00:00:00Z'), got {value!r}") from e
    if ts is pd.NaT:
        raise InvalidInput(f"{what} must be a time (ISO 8601, e.g. '2026-03-04T00:00:00Z'), got {value!r}")
    return ts.tz_localize("UTC") if ts.tzinfo is None else ts.tz_convert("UTC")


def _posts(items: Any, columns: Sequence[str] = ("ts", "topic", "negative")) -> pd.DataFrame:
    """``items`` checked: a DataFrame with ``columns``, ``ts`` in UTC, ``negative`` as bool."""
    if not isinstance(items, pd.DataFrame):
        raise InvalidInput(f"items must be a pandas DataFrame of scored posts, got {type(items).__name__}")
    missing = [c for c in columns if c not in items.columns]
    if missing:
        raise InvalidInput(f"items lack the column(s) {missing} (have {list(items.columns)}): scored posts need "
                           "ts, topic, negative, text, id")
    frame = items
    ts = items["ts"]
    if not pd.api.types.is_datetime64_any_dtype(ts) or getattr(ts.dt, "tz", None) is None:
        raise InvalidInput(f"items.ts must hold time-zone aware timestamps, got dtype {ts.dtype}: parse it with "
                           "pd.to_datetime(column, utc=True)")
    if ts.isna().any():
        row = int(np.flatnonzero(ts.isna().to_numpy())[0])
        raise InvalidInput(f"items.ts is missing at row {row}: every post needs a timestamp "
                           "(drop the row or fill it)")
    if "negative" in columns:
        neg = items["negative"]
        if neg.dtype != bool:
            bad = ~neg.isin([0, 1, True, False])
            if bad.any():
                row = int(np.flatnonzero(bad.to_numpy())[0])
                raise InvalidInput(f"items.negative must be a bool (or 0/1), got {neg.iloc[row]!r} at row {row}")
        frame = frame.assign(negative=neg.astype(bool))
    if str(ts.dt.tz) != "UTC":
        frame = frame.assign(ts=ts.dt.tz_convert("UTC"))
    return frame


def _count_arg(value: Any, name: str, least: int) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < least:
        raise InvalidInput(f"{name} must be an integer >= {least}, got {value!r}")
    return int(value)


# -- series -----------------------------------------------------------------------------------


def series(items: pd.DataFrame, period: str = "day", topic: Any = None, start: Any = None,
           end: Any = None) -> pd.DataFrame:
    """Volume, negatives and negative share per period, indexed by the period's start (UTC).

    Every period from ``start`` to ``end`` (default: the first and last post of ``items``, all
    topics, so topic series line up) appears; one without posts has volume 0 and share NaN.
    ``topic`` None counts every post (overall). ``attrs`` keeps the topic and period for
    :func:`detect`."""
    freq = _freq(period)
    frame = _posts(items)
    if topic is not None:
        chosen = frame["topic"] == topic
        if not chosen.any():
            known = sorted(map(str, frame["topic"].unique()))[:10]
            raise InvalidInput(f"topic {topic!r} has no posts; known topics: {known}")
    if frame.empty and (start is None or end is None):
        raise InvalidInput("no posts to count and no start/end: pass posts, or start and end for an empty series")
    lo = _timestamp(start, "start").floor(freq) if start is not None else frame["ts"].min().floor(freq)
    hi = _timestamp(end, "end").floor(freq) if end is not None else frame["ts"].max().floor(freq)
    if hi < lo:
        raise InvalidInput(f"end {hi.isoformat()} is before start {lo.isoformat()}: swap them")
    if topic is not None:
        frame = frame[chosen]
    slot = frame["ts"].dt.floor(freq)
    index = pd.date_range(lo, hi, freq=freq, name="period")
    counts = frame["negative"].groupby(slot).agg(["size", "sum"]).reindex(index, fill_value=0)
    out = pd.DataFrame({"volume": counts["size"].astype(np.int64), "negative": counts["sum"].astype(np.int64)},
                       index=index)
    out["share"] = (out["negative"] / out["volume"].where(out["volume"] > 0)).astype(float)
    out.attrs.update(topic=topic, period=period)
    return out


# -- the rules --------------------------------------------------------------------------------


class _Ewma:
    """EWMA of negatives and volumes per valid period (the share is their ratio, so volume-
    weighted), with the sum of squared weights x volume for its effective number of posts. The
    first 1/lambda updates are a running mean (weight max(lambda, 1/t)), so no start value biases it."""

    def __init__(self, lam: float):
        self.lam, self.periods = lam, 0
        self.neg = self.vol = self.sq = 0.0

    def update(self, n: int, x: int) -> None:
        self.periods += 1
        w = max(self.lam, 1.0 / self.periods)
        self.neg = (1 - w) * self.neg + w * x
        self.vol = (1 - w) * self.vol + w * n
        self.sq = (1 - w) ** 2 * self.sq + w * w * n  # Var(share) = p(1-p) * sq / vol^2

    def n_eff(self) -> float:
        return self.vol * self.vol / self.sq

    def share(self) -> float:
        """The share, kept half a post from 0 and 1 so a flat history has a nonzero variance."""
        edge = 0.5 / self.n_eff()
        return min(max(self.neg / self.vol, edge), 1 - edge)


def _tail_z(x: int, n: int, p: float, n_eff: float) -> float:
    """Standard errors of ``x`` negatives out of ``n`` above share ``p`` known from ``n_eff`` posts:
    the normal quantile of P(X >= x) under the beta-binomial predictive Beta(p n_eff, (1-p) n_eff)."""
    from scipy.special import betaln, gammaln, logsumexp, ndtri  # a fifth of scipy.stats' import time

    a, b = p * n_eff, (1 - p) * n_eff
    k = np.arange(x, n + 1)  # (n - x + 1,)
    log_pmf = gammaln(n + 1) - gammaln(k + 1) - gammaln(n - k + 1) + betaln(k + a, n - k + b) - betaln(a, b)
    tail = math.exp(min(float(logsumexp(log_pmf)), 0.0))
    return float(-ndtri(min(max(tail, 1e-300), 1 - 1e-15)))


class EwmaRule:
    """The period against an EWMA of the previous ones (the current one excluded)."""

    name = "ewma"

    def __init__(self, volume: np.ndarray, negative: np.ndarray, rate: float, min_count: int, per_day: int):
        self.volume, self.negative, self.min_count = volume, negative, min_count
        self.k = NormalDist().inv_cdf(1 - rate)
        self.base = _Ewma(EWMA_LAMBDA)

    def read(self, i: int, high: bool) -> Reading | None:
        n, x = int(self.volume[i]), int(self.negative[i])
        if n < self.min_count:
            return None
        reading = None
        if self.base.periods >= WARMUP:
            p = self.base.share()
            z, share = _tail_z(x, n, p, self.base.n_eff()), x / n
            reading = Reading(share, p, z, self.k, HYSTERESIS * self.k, n,
                              above=z > self.k and share > p * (1 + MARGIN),
                              below=z < HYSTERESIS * self.k or share < p * (1 + HYSTERESIS * MARGIN))
        self.base.update(n, x)  # every valid period, alerts included: a lasting shift becomes the new normal
        return reading

    def settle(self, i: int, high: bool, kind: str | None) -> None:
        pass


class CusumRule:
    """One-sided binomial CUSUM of p1 = SHIFT x p0 against p0. p0 is a slow EWMA of the periods
    outside alerts, frozen while S > 0 (a drift is measured against the level before it) and while
    the alert stands (it resolves when the share comes back). An alert that stands for WARMUP
    periods is a new level: the baseline restarts from its periods, so S falls and it resolves."""

    name = "cusum"

    def __init__(self, volume: np.ndarray, negative: np.ndarray, rate: float, min_count: int, per_day: int):
        self.volume, self.negative, self.min_count = volume, negative, min_count
        self.h = math.log(1 / rate)
        self.base = _Ewma(CUSUM_LAMBDA)
        self.s, self.p0 = 0.0, 0.0
        self.held: list[tuple[int, int]] = []  # (volume, negatives) of the periods of the standing alert
        self.last: tuple[int, int] | None = None  # the period being read, for settle

    def read(self, i: int, high: bool) -> Reading | None:
        n, x = int(self.volume[i]), int(self.negative[i])
        if n < self.min_count:
            return None
        if self.base.periods < WARMUP:
            self.base.update(n, x)
            return None
        if self.s == 0.0 and not high:
            self.p0 = self.base.share()
        p0 = self.p0
        p1 = min(SHIFT * p0, (1 + p0) / 2)
        llr = x * math.log(p1 / p0) + (n - x) * math.log((1 - p1) / (1 - p0))
        self.s = max(0.0, self.s + llr)
        self.last = (n, x)
        lower = HYSTERESIS * self.h
        return Reading(x / n, p0, self.s, self.h, lower, n, above=self.s > self.h, below=self.s < lower)

    def settle(self, i: int, high: bool, kind: str | None) -> None:
        # S never banks more than h (an alert held back by the cool-down would otherwise fire later on
        # evidence from an incident already over), and restarts from 0 once an alert resolves
        self.s = 0.0 if kind == "resolved" else min(self.s, self.h)
        last, self.last = self.last, None
        if kind == "resolved":
            self.held = []  # the incident's periods never enter the baseline
        if last is None:
            return
        if not high:
            self.base.update(*last)
            return
        self.held.append(last)
        if len(self.held) >= WARMUP:  # the level has held as long as a warm-up: it is the new normal
            self.base = _Ewma(CUSUM_LAMBDA)
            for n, x in self.held:
                self.base.update(n, x)
            self.p0, self.held = self.base.share(), []


class BaselineRule:
    """This period (hourly: the last 24 h) against the mean + k sigma of the previous 7 days."""

    name = "baseline"

    def __init__(self, volume: np.ndarray, negative: np.ndarray, rate: float, min_count: int, per_day: int):
        self.min_count, self.span = min_count, per_day
        self.k = NormalDist().inv_cdf(1 - rate)
        self.cum_n = np.concatenate(([0], np.cumsum(volume)))  # window sums in O(1)
        self.cum_x = np.concatenate(([0], np.cumsum(negative)))
        self.high = np.zeros(len(volume), dtype=bool)  # periods in the alert state, left out of the history

    def _window(self, end: int) -> tuple[int, int, bool]:
        """Volume, negatives and whether any period alerted, over the ``span`` periods ending at ``end``."""
        lo = end - self.span + 1
        return (int(self.cum_n[end + 1] - self.cum_n[lo]), int(self.cum_x[end + 1] - self.cum_x[lo]),
                bool(self.high[lo:end + 1].any()))

    def read(self, i: int, high: bool) -> Reading | None:
        if i + 1 < self.span * (HISTORY_DAYS + 1):
            return None
        n, x, _ = self._window(i)
        if n < self.min_count:
            return None
        days = [self._window(i - d * self.span) for d in range(1, HISTORY_DAYS + 1)]
        valid = [day for day in days if day[0] >= self.min_count]
        clean = [day for day in valid if not day[2]]
        history = clean if len(clean) >= MIN_DAYS else valid  # a shift lasting a week becomes the new normal
        if len(history) < MIN_DAYS:
            return None
        shares = np.array([xd / nd for nd, xd, _ in history])
        posts = sum(nd for nd, _, _ in history)
        pooled = (sum(xd for _, xd, _ in history) + 0.5) / (posts + 1)
        mean = float(shares.mean())
        # sigma of the difference between a new period and the mean of the history (a prediction error,
        # so the mean's own error counts): the days' spread, or at least the binomial error of both
        sigma = max(float(shares.std(ddof=1)) * math.sqrt(1 + 1 / len(shares)),
                    math.sqrt(pooled * (1 - pooled) * (1 / n + 1 / posts)))
        share = x / n
        z = (share - mean) / sigma
        lower = HYSTERESIS * self.k
        return Reading(share, mean, z, self.k, lower, n,
                       above=z > self.k and share > mean * (1 + MARGIN),
                       below=z < lower or share < mean * (1 + HYSTERESIS * MARGIN))

    def settle(self, i: int, high: bool, kind: str | None) -> None:
        self.high[i] = high


RULES = {"ewma": EwmaRule, "cusum": CusumRule, "baseline": BaselineRule}


def _rule_class(rule: Any) -> type:
    if rule not in RULES:
        raise InvalidInput(f"rule must be one of {list(RULES)}, got {rule!r}")
    return RULES[rule]


def _rate(sensitivity: Any) -> float:
    if sensitivity not in FALSE_ALARM_RATE:
        raise InvalidInput(f"sensitivity must be one of {list(SENSITIVITIES)}, got {sensitivity!r}")
    return FALSE_ALARM_RATE[sensitivity]


def _periods_per_day(frame: pd.DataFrame) -> int:
    period = frame.attrs.get("period")
    if period is None:  # a frame built by hand: its index spacing says
        step = frame.index[1] - frame.index[0] if len(frame) > 1 else pd.Timedelta(days=1)
        period = "hour" if step == pd.Timedelta(hours=1) else "day" if step == pd.Timedelta(days=1) else step
    _freq(period)
    return 24 if period == "hour" else 1


def detect(series_df: pd.DataFrame, rule: str, sensitivity: str = "medium", min_count: int | None = None,
           cooldown: int | None = None) -> list[Event]:
    """The ``alert`` and ``resolved`` events of ``rule`` over one :func:`series` (or any frame with
    ``volume`` and ``negative`` columns on a regular hourly or daily DatetimeIndex)."""
    if not isinstance(series_df, pd.DataFrame) or not {"volume", "negative"} <= set(series_df.columns) \
            or not isinstance(series_df.index, pd.DatetimeIndex):
        raise InvalidInput("detect needs a series: a DataFrame with volume and negative columns on a "
                           "DatetimeIndex, as series(items) returns")
    cls, rate = _rule_class(rule), _rate(sensitivity)
    min_count = MIN_COUNT if min_count is None else _count_arg(min_count, "min_count", 1)
    cooldown = COOLDOWN if cooldown is None else _count_arg(cooldown, "cooldown", 0)
    volume = series_df["volume"].to_numpy(np.int64)
    negative = series_df["negative"].to_numpy(np.int64)
    if (negative < 0).any() or (negative > volume).any():
        raise InvalidInput("series negative counts must lie between 0 and the volume of their period")
    state = cls(volume, negative, rate, min_count, _periods_per_day(series_df))
    topic = series_df.attrs.get("topic")
    events: list[Event] = []
    high, resolved_at = False, None
    for i, period in enumerate(series_df.index):
        reading = state.read(i, high)
        kind = None
        if reading is not None:
            if not high and reading.above and (resolved_at is None or i - resolved_at > cooldown):
                high, kind = True, "alert"
            elif high and reading.below:
                high, kind, resolved_at = False, "resolved", i
        state.settle(i, high, kind)
        if kind is not None:
            events.append(Event(kind, cls.name, topic, _timestamp(period, "period"), reading.share,
                                reading.expected, reading.statistic,
                                reading.threshold if kind == "alert" else reading.lower, reading.volume))
    return events


def scan(items: pd.DataFrame, period: str = "day", rules: Iterable[str] = tuple(RULES),
         sensitivity: str = "medium", topics: Iterable[Any] | None = None) -> list[Event]:
    """Every rule over the overall series and each topic's (default: every topic in ``items``), all
    over the same span; events in time order."""
    _freq(period)
    rules = [rules] if isinstance(rules, str) else list(rules)
    for rule in rules:
        _rule_class(rule)
    _rate(sensitivity)
    frame = _posts(items)
    if frame.empty:
        return []
    names = sorted(frame["topic"].unique(), key=str) if topics is None else list(topics)
    lo, hi = frame["ts"].min(), frame["ts"].max()
    events = []
    for topic in [None, *names]:
        counts = series(frame, period, topic, lo, hi)
        for rule in rules:
            events += detect(counts, rule, sensitivity)
    events.sort(key=lambda e: (e.period, e.rule, "" if e.topic is None else str(e.topic), e.kind))
    return events


# -- explanations -----------------------------------------------------------------------------

_CJK = re.compile(r"[\u3400-\u4dbf\u4e00-\u9fff]")
_WORD = re.compile(r"[^\W_]+")
STOPWORDS = frozenset({  # a short list: function words of English and Chinese
    "the", "a", "an", "and", "or", "but", "is", "are", "was", "were", "be", "been", "it", "its",
    "this", "that", "these", "those", "to", "of", "in", "on", "at", "for", "with", "as", "by", "from",
    "i", "me", "my", "we", "our", "you", "your", "he", "she", "they", "them", "their", "not", "no",
    "so", "very", "too", "just", "also", "really", "have", "has", "had", "do", "does", "did", "will",
    "would", "can", "could", "there", "than", "then", "if", "all", "get", "got", "one",
    "的", "了", "是", "我", "也", "很", "都", "就", "和", "在", "有", "还", "这", "那", "吧", "啊", "呢", "吗", "哦", "呀",
    "把", "被", "给", "让", "又", "与", "及", "等", "着", "啦", "嘛", "个", "之", "没有", "一个", "我们", "你们", "他们", "就是",
    "但是", "还是", "非常", "比较", "感觉", "觉得", "东西", "这个", "那个", "什么", "可以", "已经", "而且", "因为", "所以", "不过",
    "然后", "如果", "一下", "一点", "有点", "真的", "还有", "这样", "那样", "自己", "知道",
})


def tokens(text: str, cache: dict[str, list[str]] | None = None) -> list[str]:
    """Words of ``text``: jieba for text with CJK, lower-cased words otherwise; stopwords, punctuation,
    numbers and one-letter non-CJK tokens dropped. ``cache`` (text -> words) spares repeated texts."""
    if cache is not None and text in cache:
        return cache[text]
    if _CJK.search(text):
        import jieba

        jieba.setLogLevel(60)
        raw = (t.lower() for t in jieba.lcut(text))
    else:
        raw = iter(_WORD.findall(text.lower()))
    words = [t for t in raw if _WORD.fullmatch(t) and not t.isdigit() and t not in STOPWORDS
             and (len(t) > 1 or _CJK.match(t))]
    if cache is not None:
        cache[text] = words
    return words


def log_odds(target: Counter, reference: Counter, prior: Counter) -> dict[str, float]:
    """z-scores of the smoothed log-odds ratio of each word of ``target`` against ``reference``, with
    the informative Dirichlet prior ``prior`` (counts; Monroe, Colaresi & Quinn 2008, eq. 16-22):
    delta = log((y_t + a) / (n_t + a0 - y_t - a)) - log((y_r + a) / (n_r + a0 - y_r - a)),
    var = 1 / (y_t + a) + 1 / (y_r + a). Positive: more in ``target``."""
    a0, n_t, n_r = sum(prior.values()), sum(target.values()), sum(reference.values())
    scores = {}
    for word, y_t in target.items():
        a = prior.get(word, 0) + 0.01  # the prior holds every target word; 0.01 guards a prior without it
        y_r = reference.get(word, 0)
        delta = math.log((y_t + a) / (n_t + a0 - y_t - a)) - math.log((y_r + a) / (n_r + a0 - y_r - a))
        scores[word] = delta / math.sqrt(1 / (y_t + a) + 1 / (y_r + a))
    return scores


def _counts(texts: Iterable[str], cache: dict[str, list[str]]) -> Counter:
    counts: Counter = Counter()
    for text in texts:
        counts.update(tokens(text, cache))
    return counts


def _change_point(posts: pd.DataFrame, period: str, lo: pd.Timestamp, hi: pd.Timestamp) -> str | None:
    """The start of the second segment of the share series over [lo, hi] (ruptures' binary
    segmentation, l2 cost, one breakpoint), over periods with at least MIN_COUNT posts (all with
    posts when that leaves too few); None under 4 periods."""
    if posts.empty:
        return None
    counts = series(posts, period, None, lo, hi)
    for least in (MIN_COUNT, 1):
        used = counts[counts["volume"] >= least]
        if len(used) >= 4:
            break
    else:
        return None
    import ruptures as rpt

    signal = used["share"].to_numpy(np.float64).reshape(-1, 1)  # (T, 1)
    breaks = rpt.Binseg(model="l2", min_size=1, jump=1).fit(signal).predict(n_bkps=1)
    return used.index[breaks[0]].isoformat() if breaks[0] < len(used) else None


def _json_id(value: Any) -> Any:
    return int(value) if isinstance(value, (int, np.integer)) and not isinstance(value, bool) else str(value)


def _plain(value: Any) -> Any:
    """A numpy scalar (a topic read from a frame) as the Python value JSON can write."""
    return value.item() if isinstance(value, np.generic) else value


def _summaries(ev: Event, period: str, words: list[str], topics: list[dict]) -> tuple[str, str]:
    """One sentence in English and one in Chinese: the share against the expected, and for an alert
    the topics (overall) and the first three keywords behind it."""
    when = ev.period.strftime("%Y-%m-%d" if period == "day" else "%Y-%m-%d %H:00 UTC")
    share, expected = f"{ev.share:.0%}", f"{ev.expected:.0%}"
    rose = ev.kind == "alert"
    if ev.topic is None:
        en, zh = "Overall negative share", "整体负面占比"
    else:
        en, zh = f"Negative share for '{ev.topic}'", f"「{ev.topic}」的负面占比"
    en += f" {'rose' if rose else 'is back'} to {share} (expected {expected}) on {when}"
    zh += f"在 {when} {'升至' if rose else '回落至'} {share}（预期 {expected}）"
    if not rose:
        return en, zh
    if ev.topic is None and topics:
        en += ", mostly in " + ", ".join(f"'{t['topic']}'" for t in topics[:3])
        zh += "，主要在" + "、".join(f"「{t['topic']}」" for t in topics[:3])
    if words:
        en += "; driven by: " + ", ".join(words[:3])
        zh += "；主要原因：" + "、".join(words[:3])
    return en, zh


def explain(items: pd.DataFrame, event: Event | Mapping[str, Any], period: str = "day", window: int | None = None,
            baseline_periods: int | None = None, n_keywords: int = 8, n_samples: int = 5) -> dict[str, Any]:
    """Why ``event`` fired, as JSON-able data: ``keywords``, ``topics``, ``change_point``,
    ``samples``, ``summary`` and ``summary_zh``, with the ``window`` (``window`` periods ending at
    the event's; default one day) and the ``baseline`` (``baseline_periods`` periods before it;
    default 14 days: 14 daily or 336 hourly periods)."""
    freq = _freq(period)
    ev = event if isinstance(event, Event) else Event.from_dict(event)
    step = pd.Timedelta(1, unit=freq)
    per_day = 24 if period == "hour" else 1
    window = per_day if window is None else _count_arg(window, "window", 1)
    baseline_periods = (14 * per_day if baseline_periods is None
                        else _count_arg(baseline_periods, "baseline_periods", 1))
    n_keywords = _count_arg(n_keywords, "n_keywords", 0)
    n_samples = _count_arg(n_samples, "n_samples", 0)
    frame = _posts(items, ("ts", "topic", "negative", "text", "id"))
    w_end = ev.period.floor(freq)
    w_start = w_end - (window - 1) * step
    b_start = w_start - baseline_periods * step
    slot = frame["ts"].dt.floor(freq)
    in_window = (slot >= w_start) & (slot <= w_end)
    in_baseline = (slot >= b_start) & (slot < w_start)
    scope = frame["topic"] == ev.topic if ev.topic is not None else pd.Series(True, index=frame.index)

    # keywords: negative posts of the window against negative posts of the baseline
    cache: dict[str, list[str]] = {}
    neg_window = frame[scope & in_window & frame["negative"]]
    target = _counts(neg_window["text"].astype(str), cache)
    reference = _counts(frame.loc[scope & in_baseline & frame["negative"], "text"].astype(str), cache)
    prior = _counts(frame.loc[scope & (in_window | in_baseline), "text"].astype(str), cache)
    scores = log_odds(target, reference, prior)
    top = sorted((w for w in scores if scores[w] > 0), key=lambda w: (-scores[w], w))[:n_keywords]
    keywords = [{"word": w, "score": round(scores[w], 4), "count": int(target[w])} for w in top]

    # topics: that topic, or those whose negatives per period grew most
    rows = []
    for topic, posts in frame[in_window | in_baseline].groupby("topic", sort=True):
        if ev.topic is not None and topic != ev.topic:
            continue
        win = posts[in_window.loc[posts.index]]
        base = posts[~in_window.loc[posts.index]]
        growth = win["negative"].sum() / window - base["negative"].sum() / baseline_periods
        rows.append({"topic": _plain(topic),
                     "share": round(float(win["negative"].mean()), 4) if len(win) else None,
                     "expected": round(float(base["negative"].mean()), 4) if len(base) else None,
                     "negative": int(win["negative"].sum()), "growth_per_period": round(float(growth), 4)})
    if ev.topic is None:
        rows = sorted((r for r in rows if r["growth_per_period"] > 0), key=lambda r: -r["growth_per_period"])[:5]

    # samples: the window's negative posts holding the most top keywords first
    wanted = set(top)
    hits = np.array([len(wanted.intersection(tokens(str(t), cache))) for t in neg_window["text"]], dtype=np.int64)
    order = np.lexsort((neg_window["ts"].to_numpy(), -hits))[:n_samples]  # most hits, then earliest
    samples = [{"id": _json_id(neg_window["id"].iloc[j]), "ts": neg_window["ts"].iloc[j].isoformat(),
                "text": str(neg_window["text"].iloc[j])} for j in order]

    summary, summary_zh = _summaries(ev, period, top, rows)
    return {"event": ev.to_dict(),
            "window": {"start": w_start.isoformat(), "end": w_end.isoformat()},
            "baseline": {"start": b_start.isoformat(), "end": (w_start - step).isoformat()},
            "keywords": keywords, "topics": rows,
            "change_point": _change_point(frame[scope], period, b_start, w_end),
            "samples": samples, "summary": summary, "summary_zh": summary_zh}
