"""Opinion monitoring: the classifiers, timestamps, streams, trends, alerts, the CLI and HTTP."""

from __future__ import annotations

import json
import random

import numpy as np
import pandas as pd
import pytest

from aigc.apps import monitor
from aigc.apps.monitor import classifier
from aigc.apps.monitor.times import parse_bound, parse_times
from aigc.errors import InvalidInput, NotFound

GOOD = ["质量很好，非常满意", "物流很快，好评", "屏幕清晰，推荐购买", "great battery, love it", "works perfectly, happy",
        "性价比高，值得买", "客服态度好", "excellent quality and fast delivery"]
BAD = ["电池发热严重，很差", "物流太慢，差评", "屏幕有坏点，退货", "terrible battery, broke in a day",
       "awful, refund please", "质量太差了，不推荐", "客服态度恶劣", "poor quality and slow delivery"]
TOPICS = {"电池": "battery", "battery": "battery", "物流": "delivery", "delivery": "delivery", "屏幕": "screen"}


def corpus(n: int = 240, seed: int = 0) -> pd.DataFrame:
    rng = random.Random(seed)
    rows = []
    for i in range(n):
        neg = i % 2 == 0
        text = rng.choice(BAD if neg else GOOD) + rng.choice(["", "！", "。", " 真的", " really"])
        topic = next((t for k, t in TOPICS.items() if k in text), "other")
        rows.append({"review": text, "label": "0" if neg else "1", "cat": topic})
    return pd.DataFrame(rows)


@pytest.fixture(scope="module")
def tiny_model():
    df = corpus()
    return classifier.fit(df["review"], df["label"], df["cat"], kind="transformer", max_epochs=3, seed=0,
                          device="cpu")


def test_tokenize_splits_cjk_and_words():
    assert classifier.tokenize("电池 Great battery!") == ["电", "池", "great", "battery", "!"]


def test_classifier_learns_and_round_trips(tiny_model, tmp_path):
    m = tiny_model
    assert m.negative == "0" and m.labels == ["0", "1"]
    hist = m.info["encoder"]["history"]
    assert hist[-1]["val_loss"] < hist[0]["val_loss"] or hist[0]["val_accuracy"] == 1.0
    got = m.predict(["电池发热严重，很差", "great battery, love it"])
    assert [g["negative"] for g in got] == [True, False]
    assert got[0]["score"] < 0 < got[1]["score"]
    assert got[0]["topic"] == "battery"
    m.save_to(tmp_path)
    back = classifier.TextClassifier.load(tmp_path)
    texts = ["物流太慢", "works perfectly", "屏幕清晰"]
    np.testing.assert_allclose(back.sentiment_logprobs(texts), m.sentiment_logprobs(texts), atol=1e-5)
    assert back.predict(texts) == m.predict(texts)


def test_fit_refuses_bad_labels():
    with pytest.raises(InvalidInput, match="at least two labels"):
        classifier.fit(["a"] * 20, ["x"] * 20, kind="tfidf")
    with pytest.raises(InvalidInput, match="too few"):
        classifier.fit(["a", "b"], ["x", "y"], kind="tfidf")
    with pytest.raises(InvalidInput, match="unknown classifier kind"):
        classifier.fit(["a"] * 20, ["x", "y"] * 10, kind="bert")
    assert classifier.negative_label(["negative", "positive", "neutral"]) == "negative"
    assert classifier.negative_label(["a", "b"]) is None
    with pytest.raises(InvalidInput, match="not one of the labels"):
        classifier.negative_label(["a", "b"], "c")


def test_times_mixed_formats_and_zones():
    got = parse_times(["2026-03-04T10:00:00+08:00", "2026/03/04 02:00", "2026年3月4日 2时0分", 1772589600,
                       "1772589600000", "04 Mar 2026 02:00"], tz="UTC")
    assert {t.isoformat() for t in got} == {"2026-03-04T02:00:00+00:00"}
    shanghai = parse_times(["2026-03-04 10:00"], tz="Asia/Shanghai")[0]
    assert shanghai.isoformat() == "2026-03-04T02:00:00+00:00"
    with pytest.raises(InvalidInput, match=r"row 3 has no readable timestamp \('yesterday-ish'\)"):
        parse_times(["2026-03-04", "2026-03-05", "yesterday-ish"])
    with pytest.raises(InvalidInput, match="unknown time zone"):
        parse_times(["2026-03-04"], tz="Mars/Olympus")
    with pytest.raises(InvalidInput, match="start 'soon' is not a time"):
        parse_bound("soon", "start")


@pytest.fixture()
def ws_with_model(tmp_path, tiny_model):
    import aigc

    ws = aigc.open_workspace(tmp_path / "ws")
    dest = classifier.model_dir(ws, "reviews")
    dest.mkdir(parents=True)
    tiny_model.save_to(dest)
    return ws


def spiky_posts(days: int = 40, spike_day: int = 30, seed: int = 1) -> pd.DataFrame:
    """Delivery posts, 40 a day, 10% negative, 70% on days spike_day..spike_day+2."""
    rng = np.random.default_rng(seed)
    rows = []
    start = pd.Timestamp("2026-01-01", tz="UTC")
    for d in range(days):
        share = 0.7 if spike_day <= d < spike_day + 3 else 0.1
        for _ in range(40):
            neg = rng.random() < share
            text = "物流太慢，差评" if neg else "物流很快，好评"
            rows.append({"time": (start + pd.Timedelta(days=d, hours=int(rng.integers(0, 24)))).isoformat(),
                         "text": text})
    return pd.DataFrame(rows)


def test_stream_add_trends_alerts_items(ws_with_model, tmp_path):
    ws = ws_with_model
    with pytest.raises(NotFound, match="no monitor stream"):
        monitor.add("shop", [{"text": "x"}], workspace=ws)
    with pytest.raises(InvalidInput, match="sensitivity 'extreme'"):
        monitor.configure("shop", ws, model="reviews", sensitivity="extreme")
    monitor.configure("shop", ws, model="reviews", rules="ewma,cusum")
    f = tmp_path / "posts.csv"
    spiky_posts().to_csv(f, index=False)
    r = monitor.add("shop", f, workspace=ws)
    assert r["added"] == 40 * 40
    t = monitor.trends("shop", workspace=ws)
    overall = next(s for s in t["series"] if s["topic"] == monitor.ALL)
    assert len(overall["points"]) == 40 and overall["points"][30]["share"] > 0.5 > overall["points"][10]["share"]
    fired = [a for a in monitor.list_alerts("shop", workspace=ws) if a["kind"] == "alert"]
    assert fired, "the planted spike raised no alert"
    first = min(pd.Timestamp(a["period"]) for a in fired)
    assert pd.Timestamp("2026-01-31", tz="UTC") <= first <= pd.Timestamp("2026-02-01", tz="UTC")
    why = fired[0]["explanation"]
    assert why["summary"] and why["samples"] and all("差评" in s["text"] or "慢" in s["text"] for s in why["samples"])
    drill = monitor.items("shop", start="2026-01-31", end="2026-02-01", negative=True, workspace=ws)
    assert drill and all(d["negative"] and d["ts"].startswith("2026-01-31") for d in drill)
    again = monitor.add("shop", [{"text": "物流很快", "timestamp": "2026-02-09T10:00:00Z"}], workspace=ws)
    assert again["added"] == 1 and not [e for e in again["new_alerts"] if e["kind"] == "alert"]  # no duplicates


def test_add_refuses_a_bad_timestamp_and_keeps_nothing(ws_with_model, tmp_path):
    ws = ws_with_model
    monitor.configure("shop", ws, model="reviews")
    f = tmp_path / "bad.csv"
    pd.DataFrame({"text": ["好", "差", "一般"], "time": ["2026-01-01", "2026-01-02 10:00", "32/13/2026"]}).to_csv(
        f, index=False)
    with pytest.raises(InvalidInput, match="row 3"):
        monitor.add("shop", f, workspace=ws)
    assert monitor.streams(ws)[0]["items"] == 0
    g = tmp_path / "notime.csv"
    pd.DataFrame({"text": ["好", "差"]}).to_csv(g, index=False)
    with pytest.raises(InvalidInput, match="no timestamp column"):
        monitor.add("shop", g, workspace=ws)


def test_keyword_topics_win_and_classify_file(ws_with_model, tmp_path):
    ws = ws_with_model
    monitor.set_topics({"快递": ["物流", "快递", "delivery"]}, ws)
    rows = monitor.score_texts(ws, "reviews", ["物流太慢，差评", "great battery, love it"])
    assert rows[0]["topic"] == "快递" and rows[1]["topic"] == "battery"
    src = tmp_path / "in.jsonl"
    src.write_text("\n".join(json.dumps({"id": i, "review": t}, ensure_ascii=False)
                             for i, t in enumerate(["质量太差了", "excellent quality"])), "utf-8")
    out = tmp_path / "scored.csv"
    r = monitor.classify_file("reviews", src, out, workspace=ws)
    scored = pd.read_csv(out)
    assert r["rows"] == 2 and list(scored["label"].astype(str)) == ["0", "1"]
    assert {"prob", "score", "topic"} <= set(scored.columns)
    with pytest.raises(InvalidInput, match="must map each topic"):
        monitor.set_topics({"x": []}, ws)


def test_watch_folder_adds_new_files_once(ws_with_model, tmp_path):
    ws = ws_with_model
    monitor.configure("shop", ws, model="reviews")
    folder = tmp_path / "inbox"
    folder.mkdir()
    spiky_posts(days=3).to_csv(folder / "a.csv", index=False)
    (folder / "b.csv").write_text("text,time\n好,never\n", "utf-8")
    seen = []
    assert monitor.watch("shop", folder, once=True, workspace=ws, on_batch=lambda f, r: seen.append((f, r))) == 1
    assert "row 1" in dict(seen)["b.csv"]["error"]
    assert monitor.watch("shop", folder, once=True, workspace=ws) == 0  # nothing new
    assert monitor.streams(ws)[0]["items"] == 120


def test_suggest_topics_separates_clusters():
    texts = [f"电池 续航 发热 {i}" for i in range(15)] + [f"物流 快递 包装 {i}" for i in range(15)]
    got = monitor.suggest_topics(texts, k=2)
    kws = [set(g["keywords"]) for g in got]
    assert any({"电池", "续航"} & k for k in kws) and any({"物流", "快递"} & k for k in kws)
    assert sorted(g["size"] for g in got) == [15, 15]


def test_http_stream_round_trip(ws_with_model):
    import httpx

    from helpers import LiveServer

    ws = ws_with_model
    with LiveServer(ws) as server:
        base = server.url + "/api/monitor"
        assert httpx.put(f"{base}/shop", json={"model": "nope"}).status_code == 404
        r = httpx.put(f"{base}/shop", json={"model": "reviews", "rules": ["ewma"], "timezone": "Asia/Shanghai"})
        assert r.status_code == 200 and r.json()["rules"] == ["ewma"]
        one = httpx.post(f"{base}/shop/items", json={"text": "物流太慢，差评", "timestamp": "2026-03-04 10:00"})
        assert one.status_code == 200 and one.json()["items"][0]["ts"] == "2026-03-04T02:00:00+00:00"
        many = httpx.post(f"{base}/shop/items", json={"items": [{"text": "great battery"}, {"text": "好评"}]})
        assert many.status_code == 200 and many.json()["added"] == 2
        bad = httpx.post(f"{base}/shop/items", json={"items": [{"text": "x", "timestamp": "someday"}]})
        assert bad.status_code == 400 and "row 1" in bad.json()["error"]["message"]
        both = httpx.post(f"{base}/shop/items", json={"text": "x", "items": [{"text": "y"}]})
        assert both.status_code in (400, 422)
        assert httpx.get(f"{base}/nope/trends").status_code == 404
        t = httpx.get(f"{base}/shop/trends").json()
        assert t["items"] == 3 and t["series"][0]["topic"] == "*"
        drill = httpx.get(f"{base}/shop/items", params={"negative": "true"}).json()["items"]
        assert [d["text"] for d in drill] == ["物流太慢，差评"]
        assert httpx.get(f"{base}/shop/items", params={"start": "whenever"}).status_code == 400
        listed = httpx.get(base).json()["streams"]
        assert listed[0]["name"] == "shop" and listed[0]["items"] == 3
        c = httpx.post(f"{base}/classify", json={"model": "reviews", "texts": ["terrible battery"]}).json()
        assert c["results"][0]["negative"] is True


def test_cli_monitor_commands(ws_with_model, tmp_path):
    from typer.testing import CliRunner

    from aigc.cli.main import app

    runner = CliRunner()
    ws = str(ws_with_model.root)
    r = runner.invoke(app, ["monitor", "set", "shop", "--model", "reviews", "--workspace", ws])
    assert r.exit_code == 0, r.output
    f = tmp_path / "posts.csv"
    spiky_posts().to_csv(f, index=False)
    r = runner.invoke(app, ["monitor", "add", "shop", str(f), "--workspace", ws])
    assert r.exit_code == 0 and "added 1,600 posts" in r.output and "[alert]" in r.output, r.output
    r = runner.invoke(app, ["monitor", "alerts", "shop", "--json", "--workspace", ws])
    assert r.exit_code == 0 and any(a["kind"] == "alert" for a in json.loads(r.output))
    r = runner.invoke(app, ["monitor", "set", "shop", "--period", "week", "--workspace", ws])
    assert r.exit_code == 2 and "period 'week'" in r.output and "Traceback" not in r.output
    r = runner.invoke(app, ["monitor", "add", "nope", str(f), "--workspace", ws])
    assert r.exit_code == 2 and "no monitor stream 'nope'" in r.output


def test_alerts_are_posted_to_the_webhook(ws_with_model):
    import time

    from helpers import WebhookSink

    ws = ws_with_model
    with WebhookSink() as sink:
        monitor.configure("shop", ws, model="reviews", rules="ewma", webhook=sink.url)
        monitor.add("shop", [{"text": r["text"], "timestamp": r["time"]} for r in spiky_posts().to_dict("records")],
                    workspace=ws)
        got = sink.wait()
        assert got and got[0]["event"] == "monitor_alerts" and got[0]["stream"] == "shop"
        fired = [a for a in got[0]["alerts"] if a["kind"] == "alert"]
        assert fired and fired[0]["explanation"]["samples"]
        deadline = time.time() + 10
        while time.time() < deadline and monitor.list_alerts("shop", workspace=ws)[-1]["delivered"] is None:
            time.sleep(0.05)
        assert {a["delivered"] for a in monitor.list_alerts("shop", workspace=ws)} == {"200"}
