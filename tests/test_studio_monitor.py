"""The studio's Monitor page in headless Chromium (Debian's `chromium`, driven by Playwright), end to
end over a real server: a stream with a planted crisis (the battery topic's negative share jumps from
10% to 70% for three days, the new complaint being "leaking") shows an alert marker on the chart;
the alert list explains it (the complaint among the keyword chips, a sample post holding it); a click
on the marker lists the posts of that period, their text shown as text, never as markup. The
monitor model is a TF-IDF baseline trained here on 200 short reviews (the module takes ~20 s)."""

from __future__ import annotations

import os
import random

import pandas as pd
import pytest

from helpers import LiveServer
from test_studio import CHROMIUM, open_page

pytestmark = pytest.mark.skipif(not os.path.exists(CHROMIUM),
                                reason="Debian's chromium is not installed (`make test` installs it as root)")

# (topic, negative texts, positive texts): short reviews in Chinese and English
REVIEWS = {
    "battery": (["电池不耐用，差评", "battery died fast, poor", "续航太短，失望", "battery drains quickly, bad",
                 "battery leaking, awful", "电池漏液，太差了"],
                ["电池很耐用，好评", "battery lasts all day, great", "续航很长，满意", "great battery, love it"]),
    "delivery": (["物流太慢，差评", "delivery was slow, bad", "快递包装破损，失望", "late delivery, awful"],
                 ["物流很快，好评", "fast delivery, great", "快递包装完好，满意", "arrived early, love it"]),
    "screen": (["屏幕有坏点，差评", "screen flickers, poor", "屏幕太暗，失望", "dead pixels on the screen, bad"],
               ["屏幕清晰，好评", "bright screen, great", "屏幕色彩好，满意", "sharp screen, love it"]),
}
COMPLAINT = "leaking"  # the crisis' new word: in no post before it, in every negative battery post during it
CRISIS = ["battery leaking after one week, awful", "my battery is leaking, terrible", "battery leaking again, bad"]
MARKUP = "battery leaking <b>x</b> awful"  # a post that must be shown as these characters
START = pd.Timestamp("2026-01-01", tz="UTC")
DAYS, SPIKE = 40, 30  # the spike covers days SPIKE..SPIKE+2


def labelled_reviews(n: int = 200, seed: int = 0) -> tuple[list[str], list[str], list[str]]:
    """``n`` texts with labels ("0" negative, "1" positive) and topics, half of them negative."""
    rng = random.Random(seed)
    texts, labels, topics = [], [], []
    for i in range(n):
        topic = rng.choice(sorted(REVIEWS))
        neg = i % 2 == 0
        texts.append(rng.choice(REVIEWS[topic][0 if neg else 1]) + rng.choice(["", "！", "。", " really", " 真的"]))
        labels.append("0" if neg else "1")
        topics.append(topic)
    return texts, labels, topics


def crisis_posts(seed: int = 1) -> list[dict]:
    """40 posts a day for 40 days (half on battery), exactly 10% of each topic's posts negative; on the
    spike days 70% of the battery posts are negative, all of them the leaking complaint, one of
    them MARKUP. Exact shares keep calm days calm, so the only alerts are the planted ones."""
    rng = random.Random(seed)
    rows = []
    for d in range(DAYS):
        spike = SPIKE <= d < SPIKE + 3
        for topic, n in (("battery", 20), ("delivery", 10), ("screen", 10)):
            crisis = spike and topic == "battery"
            bad = set(rng.sample(range(n), round(n * (0.7 if crisis else 0.1))))
            negatives = [t for t in REVIEWS[topic][0] if COMPLAINT not in t and "漏液" not in t]
            for k in range(n):
                if k not in bad:
                    text = rng.choice(REVIEWS[topic][1])
                elif crisis:
                    text = MARKUP if k == min(bad) else rng.choice(CRISIS)
                else:
                    text = rng.choice(negatives)
                ts = START + pd.Timedelta(days=d, minutes=rng.randrange(24 * 60))
                rows.append({"text": text, "timestamp": ts.isoformat(), "id": f"{topic}-{d}-{k}"})
    return rows


@pytest.fixture(scope="module")
def monitor_ws(tmp_path_factory):
    """A workspace with monitor model "reviews" (TF-IDF) and stream "shop" holding the crisis."""
    import aigc
    from aigc.apps import monitor
    from aigc.apps.monitor import classifier

    ws = aigc.open_workspace(tmp_path_factory.mktemp("monitor") / "ws")
    model = classifier.fit(*labelled_reviews(), kind="tfidf", seed=0, device="cpu")
    dest = classifier.model_dir(ws, "reviews")
    dest.mkdir(parents=True)
    model.save_to(dest)
    monitor.configure("shop", ws, model="reviews")
    monitor.add("shop", crisis_posts(), workspace=ws)
    return ws


@pytest.fixture()
def page(monitor_ws):
    with LiveServer(monitor_ws) as server, open_page(server.url) as pg:  # fails on any JS error of the page
        yield pg


def day(offset: int) -> str:
    return (START + pd.Timedelta(days=offset)).strftime("%Y-%m-%d")


def test_monitor_page_shows_the_planted_alert_explained_and_the_posts_behind_it(page):
    page.click("button[data-tab=monitor]")
    page.wait_for_selector("#monitor-stream option[value=shop]", state="attached")
    page.select_option("#monitor-stream", "shop")
    page.wait_for_selector("#monitor-chart[data-stream=shop][data-topic='*'] .alert-marker")
    assert page.locator("#monitor-chart .bars rect.bar").count() == DAYS  # all posts: one bar per day
    volumes = {int(v) for v in page.eval_on_selector_all("#monitor-chart .bars rect.bar", "bs => bs.map(b => b.dataset.volume)")}
    assert volumes == {40}

    # the markers sit on the spike days only, the first on the day the spike began
    markers = page.locator("#monitor-chart .alert-marker")
    periods = [markers.nth(i).get_attribute("data-period") for i in range(markers.count())]
    assert {p[:10] for p in periods} <= {day(SPIKE + i) for i in range(3)}
    first = min(periods, key=pd.Timestamp)
    assert first.startswith(day(SPIKE))

    # the battery alert explains itself: shares, summary, the complaint among the keywords, samples holding it
    card = page.locator("#monitor-alerts .alert[data-topic=battery]").first
    assert card.locator(".share").text_content() == "70% negative, expected 10%"
    summary = card.locator(".summary").text_content()
    assert "'battery'" in summary and "70%" in summary
    assert COMPLAINT in card.locator(".keywords .chip").all_text_contents()
    samples = card.locator(".samples .sample").all_text_contents()
    assert samples and all(COMPLAINT in s for s in samples)
    assert day(SPIKE) in card.locator(".change").text_content()

    # hour by hour: a bar per hour of the 40 days, the same posts in all, the markers on the spike days' hours;
    # a click on an hour lists that hour's posts only; back to the stream's own period (day)
    page.select_option("#monitor-period", "hour")
    page.wait_for_selector("#monitor-chart[data-period=hour]")
    hourly = page.eval_on_selector_all("#monitor-chart .bars rect.bar", "bs => bs.map(b => +b.dataset.volume)")
    assert sum(hourly) == 40 * DAYS and len(hourly) > DAYS and max(hourly) < 40
    hour_marks = page.eval_on_selector_all("#monitor-chart .alert-marker", "ms => ms.map(m => m.dataset.period)")
    assert hour_marks and {p[:10] for p in hour_marks} <= {day(SPIKE + i) for i in range(3)}
    busiest = page.eval_on_selector_all("#monitor-chart .hit", "hs => hs.map(h => h.dataset.t)")[hourly.index(max(hourly))]
    page.dispatch_event(f"#monitor-chart .hit[data-t='{busiest}']", "click")  # a column under a pixel wide
    page.wait_for_selector(f"#monitor-posts[data-start='{busiest}'] .post")
    assert page.locator("#monitor-posts .post").count() == max(hourly)
    page.select_option("#monitor-period", "")
    page.wait_for_selector("#monitor-chart[data-period=day]")
    assert page.locator("#monitor-chart .bars rect.bar").count() == DAYS

    # a click on the first marker lists that day's posts: all 40, 16 of them negative, with label and probability
    page.click(f"#monitor-chart .alert-marker[data-period='{first}'] .alert-flag")
    page.wait_for_selector(f"#monitor-posts[data-start='{first}'] .post")
    posts = page.locator("#monitor-posts .post")
    assert posts.count() == 40 and page.locator("#monitor-posts .post.negative").count() == 14 + 1 + 1
    assert all(t.startswith(day(SPIKE)) for t in page.locator("#monitor-posts .post td.time").all_text_contents())
    assert set(page.locator("#monitor-posts .post .badge.label").all_text_contents()) == {"0", "1"}
    probs = [float(p) for p in page.locator("#monitor-posts .post td.num").all_text_contents()]
    assert all(0.5 <= p <= 1 for p in probs)
    # text is shown as text: the post holding <b>x</b> reads so, and no <b> element came of it
    assert MARKUP in page.locator("#monitor-posts .post td.text").all_text_contents()
    assert page.locator("#monitor-posts b, #monitor-alerts b").count() == 0

    # the topic filter: battery's chart, only battery's alerts; an alert's own button lists its topic's posts
    page.select_option("#monitor-topic", "battery")
    page.wait_for_selector("#monitor-chart[data-topic=battery] .alert-marker")
    topics = page.eval_on_selector_all("#monitor-alerts .alert", "cs => cs.map(c => c.dataset.topic)")
    assert topics and set(topics) == {"battery"}
    page.locator("#monitor-alerts .alert button.alert-posts").last.click()  # newest first: the last is the earliest
    page.wait_for_selector("#monitor-posts[data-topic=battery] .post")
    assert page.locator("#monitor-posts .post").count() == 20
    assert page.locator("#monitor-posts .post.negative").count() == 14

    # in Chinese the summary is the Chinese one
    page.click("#lang")
    page.wait_for_selector("#monitor-alerts .alert .summary:has-text('负面占比')")
    assert "「battery」" in page.locator("#monitor-alerts .alert .summary").first.text_content()
