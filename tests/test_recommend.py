"""Recommendation (issue 16, part 2): reading items and interactions, the four models, the API's
filters and cold starts, the CLI and HTTP surfaces. Tiny generated data; item texts go through a
stub embedder (character bigrams hashed into 384 dimensions) except in the one test marked for the
real e5."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from helpers import StubEmbedder

from aigc.errors import InvalidInput, NotFound




@pytest.fixture
def stub_embedder(monkeypatch):
    from aigc.apps.assistant import retrieval

    stub = StubEmbedder()
    monkeypatch.setattr(retrieval, "embedder", lambda: stub)
    return stub


@pytest.fixture(scope="module")
def shop():
    from aigc.apps.recommend.synth import generate

    return generate(n_users=60, n_items=80, seed=3, events_per_user=8)


def _train(name, shop, tmp_path, model="hybrid", **opts):
    from aigc.apps import recommend

    items, interactions, truth = shop
    cold = set(truth["cold_items"])
    train_rows = interactions[~interactions["item"].isin(cold)]
    return recommend.train(name, items, train_rows, model=model, workspace=tmp_path / "ws", seed=0, **opts)


# -- the generator -------------------------------------------------------------------------------


def test_generator_is_seeded_and_cold_items_only_appear_after_new_from():
    from aigc.apps.recommend.synth import generate

    a_items, a_events, a_truth = generate(n_users=30, n_items=50, seed=7)
    b_items, b_events, _ = generate(n_users=30, n_items=50, seed=7)
    c_items, c_events, _ = generate(n_users=30, n_items=50, seed=8)
    pd.testing.assert_frame_equal(a_events, b_events)
    assert not a_events.equals(c_events)
    cold_rows = a_events[a_events["item"].isin(a_truth["cold_items"])]
    assert len(a_truth["cold_items"]) == 5
    assert (pd.to_datetime(cold_rows["timestamp"]) >= pd.Timestamp(a_truth["new_from"])).all()
    assert set(a_events["event"]) <= {"view", "click", "cart", "buy"}


def test_titles_are_product_names_found_in_two_texts_else_the_first_words():
    from aigc.apps.recommend.synth import product_names

    texts = ["Quietly made from cotton, the Indigo Cushion Cover rewards a slower pace.",
             "Some objects simply belong; the Indigo Cushion Cover is one of them.",
             "Material: solid brass. Details: 8 cm tall.", "产品名称：黄瓜保湿喷雾。原料：黄瓜水。",
             "黄瓜保湿喷雾规格：100毫升。", "有茶有闲，快乐无边！"]
    assert product_names(texts, ["en"] * 3 + ["zh"] * 3) == [
        "Indigo Cushion Cover", "Indigo Cushion Cover", "Material", "黄瓜保湿喷雾", "黄瓜保湿喷雾", "有茶有闲"]


# -- reading -----------------------------------------------------------------------------------


def _items_frame():
    return pd.DataFrame({"商品ID": ["a", "b", "c"], "标题": ["靛蓝靠垫套", "Brass Candle Holder", "Oak Mirror"],
                         "类目": ["home", "home", "home"], "有货": ["是", "否", "是"]})


def test_items_columns_found_by_chinese_names_and_availability():
    from aigc.apps.recommend.data import read_items

    cat = read_items(_items_frame())
    assert cat.ids == ["a", "b", "c"]
    assert cat.columns["item"] == "商品ID" and cat.columns["title"] == "标题" and cat.columns["category"] == "类目"
    assert cat.available.tolist() == [True, False, True]
    assert cat.langs == ["zh", "en", "en"]


def test_items_without_an_id_or_text_column_say_which_option_names_it(tmp_path):
    from aigc.apps.recommend.data import read_items

    path = tmp_path / "items.csv"
    path.write_text("code,title\nx1,Lamp\n", "utf-8")
    with pytest.raises(InvalidInput, match=r"items.csv has no item id column .*--item-column"):
        read_items(path)
    assert read_items(path, item_column="code").ids == ["x1"]
    with pytest.raises(InvalidInput, match=r"--item-column 'sku' is not a column of items.csv"):
        read_items(path, item_column="sku")
    (tmp_path / "empty.csv").write_text("", "utf-8")
    with pytest.raises(InvalidInput, match="empty"):
        read_items(tmp_path / "empty.csv")


def test_unknown_items_in_interactions_are_named_or_dropped_and_counted():
    from aigc.apps.recommend.data import read_interactions, read_items

    cat = read_items(_items_frame())
    events = pd.DataFrame({"user": ["u1", "u1", "u2", "u3"], "item": ["a", "zz-9", "zz-8", "c"],
                           "event": ["buy", "view", "view", "wishlist"],
                           "timestamp": ["2024-05-01T10:00:00Z"] * 4})
    with pytest.raises(InvalidInput, match=r"2 interactions name 2 items that are not in the catalogue "
                                           r"\(e.g. 'zz-9', 'zz-8'\).*--drop-unknown"):
        read_interactions(events, cat)
    got = read_interactions(events, cat, drop_unknown=True)
    assert len(got) == 2 and got.dropped_unknown == 2
    assert got.weight.tolist() == [5.0, 1.0]  # buy 5; 'wishlist' is not a known kind: 1
    assert got.unknown_events == {"wishlist": 1}
    assert any("wishlist" in w for w in got.warnings)
    with pytest.raises(InvalidInput, match=r"the interactions frame has no user column .*--user-column"):
        read_interactions(events.rename(columns={"user": "who"}), cat)


def test_mixed_timestamp_formats_parse_to_utc_and_a_garbage_one_names_its_row(tmp_path):
    from aigc.apps.recommend.data import read_interactions, read_items

    cat = read_items(_items_frame())
    stamps = ["2024-05-01T10:00:00Z", "2024-05-01 18:00:00+08:00", "05/01/2024 10:00", "2024年5月1日 10:00",
              "1714557600", "1714557600000"]
    path = tmp_path / "events.csv"
    path.write_text("user,item,time\n" + "".join(f"u{i},a,{s}\n" for i, s in enumerate(stamps)), "utf-8")
    got = read_interactions(path, cat)
    assert np.allclose(got.time, 1714557600.0)  # 2024-05-01 10:00 UTC, every one of them
    path.write_text("user,item,time\nu1,a,2024-05-01\nu2,a,next tuesday\n", "utf-8")
    with pytest.raises(InvalidInput, match=r"events.csv row 3: time 'next tuesday' is not a time"):
        read_interactions(path, cat)


# -- models and the API --------------------------------------------------------------------------


def test_train_save_load_gives_identical_recommendations(shop, tmp_path, stub_embedder):
    from aigc.apps import recommend

    summary = _train("shop", shop, tmp_path)
    assert summary["model"] == "hybrid" and summary["users"] > 0 and summary["items"] == 80
    assert set(summary["blend"]) == {"text_prior", "warm", "cold"}
    user = shop[1]["user"].iloc[0]
    first = recommend.recommend("shop", user, 10, workspace=tmp_path / "ws", explain=True)
    recommend._LOADED.clear()  # read it from disk again
    again = recommend.recommend("shop", user, 10, workspace=tmp_path / "ws", explain=True)
    assert first == again and len(first["items"]) == 10
    assert [m["name"] for m in recommend.models(tmp_path / "ws")] == ["shop"]
    assert not list((tmp_path / "ws" / "tmp").iterdir())  # nothing left staged


@pytest.mark.parametrize("model", ["popularity", "als", "bpr", "hybrid"])
def test_exclude_seen_and_unavailable_items(shop, tmp_path, stub_embedder, model):
    from aigc.apps import recommend

    items, interactions, truth = shop
    items = items.assign(available=["no" if i % 4 == 0 else "yes" for i in range(len(items))])
    _train("s", (items, interactions, truth), tmp_path, model=model)
    unavailable = set(items["item"][items["available"] == "no"])
    user = interactions["user"].value_counts().index[0]
    seen = set(interactions["item"][(interactions["user"] == user) & ~interactions["item"].isin(truth["cold_items"])])
    got = recommend.recommend("s", user, 80, workspace=tmp_path / "ws")
    ids = [it["item"] for it in got["items"]]
    assert ids and not set(ids) & seen and not set(ids) & unavailable
    assert got["cold_start"] is False
    with_seen = recommend.recommend("s", user, 80, workspace=tmp_path / "ws", exclude_seen=False)
    ids = {it["item"] for it in with_seen["items"]}
    assert seen - unavailable <= ids and not ids & unavailable


def test_a_user_without_history_gets_popular_items_and_is_told(shop, tmp_path, stub_embedder):
    from aigc.apps import recommend

    _train("shop", shop, tmp_path)
    got = recommend.recommend("shop", "nobody-42", 5, workspace=tmp_path / "ws", explain=True)
    assert got["cold_start"] is True and got["note"] == "no history for user nobody-42: most popular items"
    rec = recommend.load("shop", tmp_path / "ws")
    expected = [rec.item_ids[i] for i in np.argsort(-rec.popularity, kind="stable")[:5]]
    assert [it["item"] for it in got["items"]] == expected
    assert all(it["reason"].startswith(("popular:", "热门")) for it in got["items"])


def test_a_new_item_reaches_the_top_10_of_a_user_whose_history_is_its_near_duplicate(tmp_path, stub_embedder):
    """Item 'new' has no interactions; user 'fan' touched only near-duplicates of its text: the
    hybrid puts it in the fan's top 10; popularity (every other item has interactions) cannot."""
    from aigc.apps import recommend
    from aigc.apps.recommend.synth import generate

    items, events, _ = generate(n_users=40, n_items=60, seed=5, cold_fraction=0.0, events_per_user=8)
    twin = "Hand-thrown speckled stoneware tea bowl with a wood-ash glaze, 200 ml, made in Jingdezhen"
    extra = pd.DataFrame({"item": ["twin-1", "twin-2", "new"], "title": ["Ash Tea Bowl", "Ash Tea Bowl II", "Ash Bowl"],
                          "description": [twin, twin + ", boxed", twin + ", gift set"], "category": ["tea"] * 3,
                          "tags": ["practical"] * 3})
    items = pd.concat([items, extra], ignore_index=True)
    fan = pd.DataFrame({"user": ["fan"] * 3, "item": ["twin-1", "twin-2", "twin-1"], "event": ["view", "buy", "buy"],
                        "timestamp": ["2024-03-01T10:00:00Z", "2024-03-02T10:00:00Z", "2024-03-03T10:00:00Z"]})
    others = pd.DataFrame({"user": ["u00001", "u00002"], "item": ["twin-1", "twin-2"], "event": ["view", "view"],
                           "timestamp": ["2024-02-01T10:00:00Z"] * 2})
    events = pd.concat([events, fan, others], ignore_index=True)
    ws = tmp_path / "ws"
    recommend.train("h", items, events, workspace=ws)
    recommend.train("p", items, events, model="popularity", workspace=ws)
    got = recommend.recommend("h", "fan", 10, workspace=ws, explain=True)
    ids = [it["item"] for it in got["items"]]
    assert "new" in ids
    reason = got["items"][ids.index("new")]["reason"]
    assert reason.startswith("new: similar to 'Ash Tea Bowl") and "that you bought" in reason
    assert "new" not in [it["item"] for it in recommend.recommend("p", "fan", 10, workspace=ws)["items"]]
    sim = recommend.similar("h", "new", 3, workspace=ws)
    assert {it["item"] for it in sim["items"][:2]} == {"twin-1", "twin-2"}


def test_reasons_follow_the_item_language(tmp_path, stub_embedder):
    from aigc.apps import recommend

    items = pd.DataFrame({"item": ["a", "b", "c", "d"],
                          "title": ["靛蓝靠垫套", "靛蓝抱枕套", "Oak Mirror", "Oak Wall Mirror"],
                          "category": ["家居"] * 2 + ["home"] * 2})
    events = pd.DataFrame({"user": ["u1", "u1", "u2", "u2", "u3"], "item": ["a", "c", "b", "d", "a"],
                           "event": ["购买", "click", "view", "view", "view"],
                           "timestamp": ["2024-01-0%d 10:00" % d for d in range(1, 6)]})
    recommend.train("x", items, events, workspace=tmp_path / "ws")
    got = recommend.recommend("x", "u1", 4, workspace=tmp_path / "ws", explain=True)
    reasons = {it["item"]: it["reason"] for it in got["items"]}
    assert reasons["b"] == "与您购买的「靛蓝靠垫套」相似"
    assert reasons["d"] == "similar to 'Oak Mirror' that you clicked"


def test_bad_inputs_are_one_line_errors(shop, tmp_path, stub_embedder):
    from aigc.apps import recommend

    with pytest.raises(InvalidInput, match="unknown model 'svd': use one of popularity, als, bpr, hybrid"):
        _train("x", shop, tmp_path, model="svd")
    with pytest.raises(InvalidInput, match="model 'popularity' has no option 'factors'"):
        _train("x", shop, tmp_path, model="popularity", factors=8)
    with pytest.raises(InvalidInput, match=r"als option factors=0: pass a whole number >= 1 \(default 64\)"):
        _train("x", shop, tmp_path, model="als", factors=0)
    assert not (tmp_path / "ws" / "recommend" / "x").exists()
    _train("shop", shop, tmp_path, model="als")
    with pytest.raises(NotFound, match="no recommender 'nope'.*known: shop"):
        recommend.recommend("nope", "u1", workspace=tmp_path / "ws")
    with pytest.raises(InvalidInput, match="k must be a whole number >= 1, got 0"):
        recommend.recommend("shop", "u1", 0, workspace=tmp_path / "ws")
    with pytest.raises(NotFound, match="no item 'zz' in recommender 'shop'"):
        recommend.similar("shop", "zz", workspace=tmp_path / "ws")


def test_a_failed_retrain_leaves_the_old_recommender(shop, tmp_path, stub_embedder):
    from aigc.apps import recommend

    _train("shop", shop, tmp_path, model="popularity")
    before = recommend.recommend("shop", "nobody", 5, workspace=tmp_path / "ws")
    items, interactions, truth = shop
    bad = interactions.assign(timestamp=["garbage"] * len(interactions))
    with pytest.raises(InvalidInput, match="row 1: timestamp 'garbage' is not a time"):
        recommend.train("shop", items, bad, workspace=tmp_path / "ws")
    recommend._LOADED.clear()
    assert recommend.recommend("shop", "nobody", 5, workspace=tmp_path / "ws") == before


def test_copy_for_the_top_items_goes_through_the_copy_desk(shop, tmp_path, stub_embedder, monkeypatch):
    from aigc.apps import copy as copy_desk
    from aigc.apps import recommend

    calls = []

    def fake_write(product, brief=None, **kw):
        calls.append((product, brief))
        return {"candidates": [{"text": f"copy for {next(iter(product.values()))}"}]}

    monkeypatch.setattr(copy_desk, "write", fake_write)
    _train("shop", shop, tmp_path)
    user = shop[1]["user"].iloc[0]
    got = recommend.recommend("shop", user, 5, workspace=tmp_path / "ws", explain=True, copy=2)
    assert len(calls) == 2 and [it.get("copy") for it in got["items"][:2]] == [
        f"copy for {it['title']}" for it in got["items"][:2]]
    assert "copy" not in got["items"][2]
    assert calls[0][1]["audience"] == got["items"][0]["reason"]


def test_real_embedder_on_a_few_texts_ranks_the_paraphrase_first(tmp_path):
    """multilingual-e5 itself (about 20 short texts, a few seconds on one thread)."""
    from aigc.apps import recommend

    titles = ["Indigo cushion cover, hand-dyed cotton", "Hand-dyed indigo cotton pillow case",
              "Stainless steel chef knife", "Carbon steel wok", "Green tea, spring harvest", "Oolong tea tin",
              "Hiking poles, carbon", "Camping lantern", "Fountain pen, brass", "Notebook, dotted",
              "Lavender sleep balm", "Oat milk cleanser", "靛蓝手染棉靠垫套", "不锈钢主厨刀", "春茶绿茶", "碳纤维登山杖",
              "黄铜钢笔", "薰衣草睡眠膏", "陶瓷小花瓶", "竹制桌面收纳盒"]
    items = pd.DataFrame({"item": [f"i{k}" for k in range(len(titles))], "title": titles})
    events = pd.DataFrame({"user": ["u1", "u2", "u2", "u3"], "item": ["i0", "i2", "i3", "i4"],
                           "timestamp": ["2024-01-01", "2024-01-02", "2024-01-03", "2024-01-04"]})
    recommend.train("real", items, events, workspace=tmp_path / "ws")
    sim = recommend.similar("real", "i0", 3, workspace=tmp_path / "ws")
    assert sim["items"][0]["item"] in ("i1", "i12")  # the English paraphrase or the Chinese translation


# -- surfaces ------------------------------------------------------------------------------------


def test_cli_for_prints_json_and_bad_input_is_one_line(shop, tmp_path, stub_embedder):
    from typer.testing import CliRunner

    from aigc.cli.recommend import recommend_app

    items, interactions, truth = shop
    items.to_csv(tmp_path / "items.csv", index=False)
    interactions.to_csv(tmp_path / "events.csv", index=False)
    ws = str(tmp_path / "ws")
    runner = CliRunner()
    r = runner.invoke(recommend_app, ["train", "shop", "--items", str(tmp_path / "items.csv"), "--interactions",
                                      str(tmp_path / "events.csv"), "--model", "als", "-w", ws])
    assert r.exit_code == 0, r.output
    user = interactions["user"].iloc[0]
    r = runner.invoke(recommend_app, ["for", "shop", user, "--k", "3", "--json", "--explain", "-w", ws])
    assert r.exit_code == 0, r.output
    got = json.loads(r.stdout)
    assert got["user"] == user and len(got["items"]) == 3 and all(it["reason"] for it in got["items"])
    r = runner.invoke(recommend_app, ["list", "--json", "-w", ws])
    assert [m["name"] for m in json.loads(r.stdout)] == ["shop"]
    interactions.assign(item=["ghost"] + interactions["item"].tolist()[1:]).to_csv(tmp_path / "bad.csv", index=False)
    r = runner.invoke(recommend_app, ["train", "shop", "--items", str(tmp_path / "items.csv"), "--interactions",
                                      str(tmp_path / "bad.csv"), "-w", ws])
    assert r.exit_code == 2
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and "'ghost'" in lines[0] and lines[0].startswith("error:")


def test_http_recommend_similar_list_and_4xx(shop, tmp_path, stub_embedder):
    """On a real uvicorn server."""
    import httpx

    import aigc
    from helpers import LiveServer

    _train("shop", shop, tmp_path, model="hybrid")
    user = shop[1]["user"].iloc[0]
    with LiveServer(aigc.open_workspace(tmp_path / "ws")) as server, httpx.Client(base_url=server.url) as client:
        r = client.post("/api/recommend", json={"model": "shop", "user": user, "k": 4, "explain": True})
        assert r.status_code == 200 and len(r.json()["items"]) == 4 and r.json()["cold_start"] is False
        r = client.post("/api/recommend", json={"model": "shop", "user": "stranger"})
        assert r.json()["cold_start"] is True and r.json()["note"].startswith("no history for user stranger")
        item = shop[0]["item"].iloc[0]
        r = client.get(f"/api/recommend/shop/similar/{item}", params={"k": 2})
        assert r.status_code == 200 and len(r.json()["items"]) == 2
        assert [m["name"] for m in client.get("/api/recommend").json()["data"]] == ["shop"]
        r = client.post("/api/recommend", json={"model": "nope", "user": user})
        assert r.status_code == 404 and r.json()["error"]["param"] == "model"
        assert "no recommender 'nope'" in r.json()["error"]["message"]
        r = client.post("/api/recommend", json={"model": "shop", "user": user, "k": 0})
        assert r.status_code == 400 and r.json()["error"]["param"] == "k"
        r = client.post("/api/recommend", json={"model": "shop", "user": user, "colour": "red"})
        assert r.status_code == 400 and r.json()["error"]["param"] == "colour"
        r = client.get(f"/api/recommend/shop/similar/{item}", params={"k": 101})
        assert r.status_code == 400 and r.json()["error"]["param"] == "k"
        r = client.get("/api/recommend/shop/similar/ghost")
        assert r.status_code == 404 and r.json()["error"]["param"] == "item"
