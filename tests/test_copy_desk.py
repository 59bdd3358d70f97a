"""The copywriting desk: ranking by rules -> coverage -> model score, repair of omitted attributes,
batch output with labels, A/B events that teach the reward model. The language model is replaced by
fixed drafts here (its sampling is the decoding core's, tested elsewhere): what is tested is the desk."""

from __future__ import annotations

import json

import pytest

import aigc
from aigc.apps import copy
from aigc.apps.copy.desk import Desk, fit_length, template_copy
from aigc.errors import InvalidInput

PRODUCT = {"类型": "衬衫", "材质": "亚麻", "颜色": "米白色"}
DRAFTS = [
    "这款衬衫是最好的选择！！采用亚麻面料，米白色。",        # banned claim + repeated punctuation
    "这款衬衫采用亚麻面料，黑色设计，清爽透气，适合夏天通勤。",  # invented colour
    "这款衬衫采用亚麻面料，米白色，清爽透气，适合夏天的通勤与周末出游。",  # passes
    "轻盈透气的亚麻衬衫，夏天穿着舒适，适合日常通勤和周末出游。",    # omits the colour: repaired
]


@pytest.fixture
def fake_model(monkeypatch):
    def drafts(self, prompt, n, max_new_tokens, seed):
        return [DRAFTS[i % len(DRAFTS)] for i in range(n)]

    def model_scores(self, prompt, texts):
        return [-float(len(t)) / 100 for t in texts]

    monkeypatch.setattr(Desk, "drafts", drafts)
    monkeypatch.setattr(Desk, "model_scores", model_scores)


def test_ranked_candidates_put_rule_passing_full_coverage_first(fake_model):
    ws = aigc.open_workspace()
    r = copy.write(PRODUCT, {"channel": "social"}, n=4, workspace=ws)
    cands = r["candidates"]
    assert [c["rank"] for c in cands] == [1, 2, 3, 4]
    top = cands[0]
    assert top["checks"]["passed"] and top["checks"]["coverage"]["score"] == 1.0
    assert all(c["checks"]["passed"] for c in cands[:2]) and not cands[-1]["checks"]["passed"]
    repaired = [c for c in cands if c["repaired"]]
    assert repaired and "颜色：米白色" in repaired[0]["text"]
    assert top["label"]["Label"] == "1"


def test_violations_carry_their_spans(fake_model):
    ws = aigc.open_workspace()
    d = Desk(ws, copy.workspace_rules(ws))
    checks = d.check(DRAFTS[0], PRODUCT, "social")
    claim = [v for v in checks["violations"] if v["rule"] == "banned_claim"]
    assert claim and DRAFTS[0][claim[0]["start"]:claim[0]["end"]].startswith("最")
    inv = d.check(DRAFTS[1], PRODUCT, "social")["invented"]
    assert inv and inv[0]["stated"] == "黑色"


def test_unranked_samples_are_the_drafts_as_drawn(fake_model):
    raw = Desk(aigc.open_workspace(), copy.workspace_rules()).write(PRODUCT, {"channel": "social"}, n=2, rank=False)
    assert [c["text"] for c in raw["candidates"]] == DRAFTS[:2]
    assert all(not c["repaired"] for c in raw["candidates"])


@pytest.mark.parametrize("product, brief, message", [
    ({}, None, "attributes"), ({"颜色": ""}, None, "no values"), (PRODUCT, {"channel": "radio"}, "unknown channel"),
    (PRODUCT, {"colour": "x"}, "unknown brief field")])
def test_bad_products_and_briefs(product, brief, message):
    with pytest.raises(InvalidInput, match=message):
        copy.write(product, brief, workspace=aigc.open_workspace())


def test_contradictory_rules_are_refused():
    with pytest.raises(InvalidInput):
        copy.set_rules({"required_words": ["便宜"], "forbidden_words": ["便宜"]})


def test_batch_writes_labelled_csv_with_progress(fake_model, tmp_path):
    src = tmp_path / "products.jsonl"
    src.write_text("\n".join(json.dumps({"id": f"p{i}", "attributes": PRODUCT, "brief": {"channel": "social"}},
                                        ensure_ascii=False) for i in range(3)), "utf-8")
    seen = []
    out = copy.write_batch(src, tmp_path / "copy.csv", n=2, progress=lambda d, t: seen.append((d, t)))
    assert out["products"] == 3 and seen[-1] == (3, 3)
    text = (tmp_path / "copy.csv").read_text("utf-8")
    assert "aigc_label" in text.splitlines()[0] and "米白色" in text


def test_fit_length_cuts_at_a_sentence_end_else_a_clause_else_the_limit():
    assert fit_length("One. Two two. Three three three.", 14) == "One. Two two."
    assert fit_length("A fine chef's knife - crafted from Damascus steel", 30) == "A fine chef's knife - crafted"
    assert fit_length("轻盈透气的亚麻衬衫，夏天穿着舒适，适合通勤", 12) == "轻盈透气的亚麻衬衫"
    from aigc.apps.copy.desk import spec_sentence

    attrs = {"material": "Damascus steel, walnut", "blade length": "20cm", "origin": "Yangjiang"}
    assert spec_sentence(attrs, list(attrs), "en") == "Material: Damascus steel, walnut. Blade length: 20cm. Origin: Yangjiang."
    assert spec_sentence(attrs, list(attrs), "en", budget=30) == "Damascus steel, walnut · 20cm · Yangjiang"
    assert fit_length("abcdefghij", 4) == "abcd" and fit_length("abc", 0) == ""
    assert template_copy({"type": "mug", "material": "ceramic"}) == "New in. Type: mug. Material: ceramic."


def test_choices_feed_the_reward_model_and_report_lift():
    ws = aigc.open_workspace()
    for _ in range(40):
        copy.record_event("sku-1", "control", "shown", "人工写的文案", workspace=ws)
        copy.record_event("sku-1", "c-a", "shown", "亚麻衬衫，米白色，透气。", workspace=ws)
    for _ in range(4):
        copy.record_event("sku-1", "control", "clicked", workspace=ws)
    for _ in range(20):
        copy.record_event("sku-1", "c-a", "clicked", workspace=ws)
    rep = copy.report("sku-1", workspace=ws)
    row = [v for v in rep["variants"] if v["variant"] == "c-a"][0]
    assert row["lift"]["absolute_lift"] == pytest.approx(0.4) and row["lift"]["ci"][0] > 0
    picks = [copy.pick("sku-1", ["control", "c-a"], workspace=ws, seed=s) for s in range(50)]
    assert picks.count("c-a") > 45
    from aigc.apps.copy.experiments import reward_model

    assert reward_model(ws) is None
    copy.record_event("sku-1", "c-a", "chosen", "亚麻衬衫，米白色，透气。", workspace=ws)
    model = reward_model(ws)
    a, b = model.score(["亚麻衬衫，米白色，透气。", "人工写的文案"])
    assert a > b
