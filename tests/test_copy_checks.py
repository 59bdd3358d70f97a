"""The copywriting desk's checks: brand rules (required / forbidden words, the advertising law's
absolute claims, length, punctuation, emoji) with offsets into the text, contradictions refused;
attribute coverage and invented values in Chinese and English; distinct-n; A/B statistics."""

from __future__ import annotations

import json

import numpy as np
import pytest
import yaml

from aigc.apps.copy.abtest import lift, prob_beats, thompson_pick
from aigc.apps.copy.checks import coverage, distinct_n, invented, kind_of
from aigc.apps.copy.rules import DEFAULT_LENGTH, BrandRules, Violation, load_rules
from aigc.errors import InvalidInput
from aigc.safety.policy import parse_policy

LONG_ZH = ("这款亚麻上衣采用天然面料，透气舒适，适合夏天通勤与周末出游，"
           "简洁的版型搭配宽松剪裁，日常穿着轻松自在，洗后依然平整。")


def rules_of(text: str, channel: str = "detail", rules: BrandRules | None = None, **kw) -> list[Violation]:
    return (rules or load_rules({})).check(text, channel, **kw)


def by_rule(violations: list[Violation], rule: str) -> list[str]:
    return [v.text for v in violations if v.rule == rule]


# -- brand rules: loading, round trips, contradictions ----------------------------------------------


def test_defaults_and_round_trip(tmp_path):
    rules = load_rules({})
    assert rules == BrandRules()
    assert rules.length == DEFAULT_LENGTH and rules.bounds("title") == (10, 30)
    assert "最佳" in rules.banned_claims and "best" in rules.banned_claims
    custom = load_rules({"required_words": ["亚麻"], "forbidden_words": ["廉价"], "length": {"push": [5, 40]},
                         "emoji": {"push": 2}, "punctuation": {"max_repeat": 2}, "use_policy_terms": False})
    assert custom.length["push"] == (5, 40) and custom.length["title"] == (10, 30)  # added to the defaults
    assert load_rules(custom.to_dict()) == custom
    (tmp_path / "r.yaml").write_text(yaml.safe_dump(custom.to_dict(), allow_unicode=True), "utf-8")
    (tmp_path / "r.json").write_text(json.dumps(custom.to_dict(), ensure_ascii=False), "utf-8")
    assert load_rules(tmp_path / "r.yaml") == custom == load_rules(str(tmp_path / "r.json"))
    assert load_rules({"emoji": False}).emoji == {ch: 0 for ch in DEFAULT_LENGTH}
    assert load_rules({"emoji": True}).emoji == {ch: None for ch in DEFAULT_LENGTH}
    assert load_rules({"emoji": {"allowed": False}}).emoji == {ch: 0 for ch in DEFAULT_LENGTH}
    assert load_rules({"emoji": {"allowed": True, "max": {"social": 2}}}).emoji["social"] == 2
    extra = load_rules({"banned_claims": "default+", "extra_banned_claims": ["秒杀", "miracle"]})
    assert extra.banned_claims == BrandRules().banned_claims + ["秒杀", "miracle"]
    claims = by_rule(extra.check("秒杀价亚麻衬衫，a miracle fabric", "social"), "banned_claim")
    assert claims == ["秒杀", "miracle"]
    assert load_rules(extra.to_dict()) == extra


@pytest.mark.parametrize("doc, needle", [
    ({"required_words": ["亚麻"], "forbidden_words": ["亚麻"]}, "亚麻"),
    ({"required_words": ["Cheap Linen"], "forbidden_words": ["ｃｈｅａｐ"]}, "Cheap Linen"),  # case, width
    ({"required_words": ["最佳拍档"]}, "最佳"),  # a required word holding a banned claim
    ({"required_words": ["The Best Tee"]}, "Best"),
    ({"length": {"title": [30, 10]}}, "swap"),
    ({"length": {"title": [10]}}, "[min, max]"),
    ({"emoji": {"blog": 1}}, "blog"),
    ({"emoji": {"title": -1}}, "-1"),
    ({"punctuation": {"max_repeat": 0}}, "max_repeat"),
    ({"colour": "red"}, "colour"),
    ({"required_words": "亚麻"}, "list"),
    ({"forbidden_words": [""]}, "non-empty"),
])
def test_contradictions_and_bad_rules_are_refused(doc, needle):
    with pytest.raises(InvalidInput) as e:
        load_rules(doc)
    assert needle in str(e.value) and "\n" not in str(e.value)


def test_required_word_holding_a_policy_term_and_unknown_channel(tmp_path):
    rules = load_rules({"required_words": ["刷单返现"]})
    with pytest.raises(InvalidInput, match="刷单"):
        rules.validate(policy_terms=["刷单"])
    load_rules({"required_words": ["刷单返现"], "use_policy_terms": False}).validate(policy_terms=["刷单"])
    with pytest.raises(InvalidInput, match="unknown channel 'blog'.*title, detail, social, ad"):
        rules.check("文案", "blog")
    with pytest.raises(InvalidInput, match="no brand rules file"):
        load_rules(tmp_path / "missing.yaml")


# -- brand rules: checking a text --------------------------------------------------------------------


def test_required_and_forbidden_words_through_normalisation_with_offsets():
    rules = load_rules({"required_words": ["亚麻", "Linen"], "forbidden_words": ["廉价", "cheap"]})
    text = "廉 價亞麻衬衫, ＣＨＥＡＰ but cheaper LINEN"
    vs = rules.check(text, "social")
    # spaced, traditional, full-width; not "cheaper"
    assert by_rule(vs, "forbidden") == ["廉 價", "ＣＨＥＡＰ"]
    v = next(v for v in vs if v.rule == "forbidden")
    assert (v.start, v.end) == (0, 3) and text[v.start:v.end] == v.text
    assert by_rule(vs, "required") == []  # 亞麻 (traditional) and LINEN hold both
    missing = rules.check("棉质衬衫，透气舒适，适合夏天", "social")
    assert [v.detail for v in missing if v.rule == "required"] == [
        "required word '亚麻' is missing: add it", "required word 'Linen' is missing: add it"]


def test_policy_terms_are_forbidden_unless_turned_off():
    text = "亚麻衬衫，支持刷单返现，舒适透气适合夏天"
    assert by_rule(rules_of(text, "social", policy_terms=["刷单"]), "forbidden") == ["刷单"]
    assert by_rule(rules_of(text, "social"), "forbidden") == []
    off = load_rules({"use_policy_terms": False})
    assert by_rule(off.check(text, "social", policy_terms=["刷单"]), "forbidden") == []
    # the Policy itself: its allow list applies (谨防刷单诈骗 warns, it does not offer)
    policy = parse_policy(json.dumps({"version": 1, "categories": {"fraud": {}}, "allow": ["刷单诈骗"],
                                      "terms": [{"term": "刷单", "category": "fraud"}]}))
    warning = "亚麻衬衫上新，谨防刷单诈骗，舒适透气适合夏天"
    assert by_rule(rules_of(warning, "social", policy_terms=["刷单"]), "forbidden") == ["刷单"]
    assert by_rule(rules_of(warning, "social", policy_terms=policy), "forbidden") == []
    assert by_rule(rules_of(text, "social", policy_terms=policy), "forbidden") == ["刷单"]


def test_banned_claims_zh_with_offsets_and_no_false_positives():
    text = "最近上新：销量第一的亚麻衬衫，最佳选择；最后一件，最多3天发货，第一次穿就爱上，第一时间发货。"
    vs = rules_of(text, "detail")
    claims = [v for v in vs if v.rule == "banned_claim"]
    assert [v.text for v in claims] == ["第一", "最佳"]
    assert [(v.start, v.end) for v in claims] == [(7, 9), (15, 17)]
    assert all(text[v.start:v.end] == v.text for v in claims)
    # 最 before any other character is a claim (最强, 最受欢迎); separators do not hide one
    assert by_rule(rules_of("全网最强，最受欢迎，最 佳品质", "ad"), "banned_claim") == \
        ["最强", "最受", "最 佳"]
    # a composition is not a claim; an efficacy is
    assert by_rule(rules_of("100%纯棉，100% 亚麻，100%有效，國家級認證", "detail"), "banned_claim") == \
        ["100%", "國家級"]


def test_banned_claims_en_are_whole_words_case_insensitive():
    text = ("The BEST linen shirt. Best before 2026. Ｎｏ.１ choice, #1 in town, world class, 100% cotton, "
            "redo bestow")
    vs = rules_of(text, "social")
    assert by_rule(vs, "banned_claim") == ["BEST", "Ｎｏ.１", "#1", "world class"]
    v = [v for v in vs if v.rule == "banned_claim"][1]
    assert text[v.start:v.end] == "Ｎｏ.１"
    allowed = load_rules({"allowed_phrases": ["best linen"]})
    assert by_rule(allowed.check(text, "social"), "banned_claim") == ["Ｎｏ.１", "#1", "world class"]


def test_length_bounds_count_cjk_as_one_and_highlight_the_overflow():
    assert by_rule(rules_of("亚麻衬衫透气舒适夏天", "title"), "length") == []  # 10 CJK characters = min
    text = "亚" * 35
    (v,) = [v for v in rules_of(text, "title") if v.rule == "length"]
    assert (v.start, v.end) == (30, 35) and "at most 30: cut 5" in v.detail
    (short,) = [v for v in rules_of("  亚麻衬衫 ", "title") if v.rule == "length"]
    assert (short.start, short.end) == (2, 6) and "add 6" in short.detail


def test_punctuation_repeats_and_mixed_width():
    vs = rules_of(LONG_ZH + "快来抢购!!太舒服了！", "detail")
    marks = [v for v in vs if v.rule == "punctuation"]
    assert {v.text for v in marks} == {"!!"} and len(marks) == 2  # two in a row; half-width after Chinese
    run = next(v for v in marks if "in a row" in v.detail)
    assert run.start == len(LONG_ZH) + 4
    assert by_rule(rules_of(LONG_ZH.replace("，", ",", 1), "detail"), "punctuation") == [","]
    assert by_rule(rules_of(LONG_ZH + "容量3.5L，尺码:XL。", "detail"), "punctuation") == []
    en = "Linen shirt，breathable and light for summer days。"
    assert by_rule(rules_of(en, "social"), "punctuation") == ["，", "。"]
    assert by_rule(rules_of("Light linen shirt! Breathable, soft.", "social"), "punctuation") == []


def test_emoji_limits_per_channel():
    title = "亚麻衬衫夏季透气款😀"
    (v,) = [v for v in rules_of(title, "title") if v.rule == "emoji"]
    assert (v.start, v.end) == (9, 10) and "allows no emoji" in v.detail
    social = "亚麻衬衫上新👍🏽👨‍👩‍👧🇨🇳❤️，夏天穿着透气又舒服，快来看看吧"
    assert by_rule(rules_of(social, "social"), "emoji") == []  # 4 emoji (a ZWJ family is one) <= 5
    two = load_rules({"emoji": {"social": 2}}).check(social, "social")
    assert by_rule(two, "emoji") == ["🇨🇳", "❤️"]


# -- attribute coverage ------------------------------------------------------------------------------

ZH = {"类型": "上衣", "材质": "亚麻", "颜色": "米白", "容量": "500ml", "防水": "是"}
EN = {"type": "shirt", "material": "linen", "color": "off-white", "capacity": "0.5 L"}


def test_coverage_zh_units_colour_suffix_and_spans():
    text = "这款米白色亚麻上衣，容量500 毫升，防水。"
    cov = coverage(text, ZH)
    assert cov["covered"] == list(ZH) and cov["missing"] == [] and cov["score"] == 1.0
    spans = {k: text[a:b] for k, [[a, b]] in cov["spans"].items()}
    assert spans == {"类型": "上衣", "材质": "亚麻", "颜色": "米白色", "容量": "500 毫升", "防水": "防水"}
    half = coverage("亚麻上衣，1000ml", ZH)
    assert half["covered"] == ["类型", "材质"] and half["score"] == pytest.approx(2 / 5)
    assert coverage("这款上衣不防水", {"防水": "是"})["missing"] == ["防水"]  # negated
    # a "no" is not asked for
    assert coverage("亚麻上衣", {"类型": "上衣", "防水": "否"})["covered"] == ["类型"]
    assert coverage("容量0.5L", {"容量(ml)": 500})["covered"] == ["容量(ml)"]  # the unit in the key


def test_coverage_en_variants_multi_value_and_bilingual():
    cov = coverage("An off white linen shirts pack, 500 ml each.", EN)
    assert cov["covered"] == list(EN) and cov["score"] == 1.0
    multi = coverage("棉质混纺，柔软亲肤", {"材质": "棉, 涤纶"})
    assert multi["missing"] == ["材质"] and multi["partial"] == {"材质": ["涤纶"]}
    assert multi["score"] == pytest.approx(0.5)
    assert coverage("纯棉与涤纶混纺", {"材质": ["棉", "涤纶"]})["covered"] == ["材质"]
    # a value stated in the other language, through the lexicon
    text = "Off-white linen top"
    cov = coverage(text, {"颜色": "米白", "材质": "亚麻"})
    assert cov["covered"] == ["颜色", "材质"] and text[slice(*cov["spans"]["颜色"][0])] == "Off-white"
    assert coverage("白天很热，明白", {"颜色": "白"})["missing"] == ["颜色"]  # 白 inside other words
    assert coverage("安吉的竹子做的砧板", {"材质": "竹"})["covered"] == ["材质"]  # 竹 is stated by 竹子


def test_kind_of_keys():
    assert [kind_of(k) for k in ("颜色", "主色", "Colour", "upper material", "面料", "容量(ml)", "Net Weight",
                                 "尺码", "特色", "类型")] == \
        ["color", "color", "color", "material", "material", "capacity", "weight", "size", None, None]


# -- invented values ---------------------------------------------------------------------------------


def test_invented_colour_material_quantity_size_zh():
    product = {**ZH, "尺码": "M"}
    text = "黑色纯棉上衣，容量1000ml，XL码"
    found = invented(text, product)
    assert [(d["key"], d["kind"], d["stated"]) for d in found] == [
        ("颜色", "color", "黑色"), ("材质", "material", "纯棉"), ("容量", "quantity", "1000ml"),
        ("尺码", "size", "XL")]
    assert all(text[d["start"]:d["end"]] == d["stated"] for d in found)
    assert found[0]["expected"] == "米白"


def test_invented_no_false_positives():
    product = {**ZH, "尺码": "M"}
    text = "白天穿这件黑科技亚麻上衣，明白什么叫舒适；蓝牙金属扣，白色系百搭，500 毫升，M码，最近很火"
    assert invented(text, product) == []  # 白色 is of 米白's family
    en = "Redo your summer with this off-white linen shirt, bored no more: 500 ml, a true white."
    assert invented(en, EN) == []
    assert [d["stated"] for d in invented("A black linen shirt", EN)] == ["black"]
    assert [d["stated"] for d in invented("A linen shirt, 1 L", EN)] == ["1 L"]
    # a colour inside the value of another attribute is that attribute, not a colour claim
    assert invented("Black Edition 亚麻上衣，米白色", {"系列": "Black Edition", "颜色": "米白"}) == []


def test_invented_with_catalogue_lexicon_and_booleans():
    lex = {"颜色": ["米白", "雾蓝"], "类型": ["上衣", "裤子"]}
    product = {"类型": "上衣", "颜色": "米白"}
    assert [d["stated"] for d in invented("雾蓝色上衣", product, lexicon=lex)] == ["雾蓝色"]
    assert [d["kind"] for d in invented("这条裤子很舒服", product, lexicon=lex)] == ["catalogue"]
    assert invented("这件上衣配裤子", product, lexicon=lex) == []  # its own type stated: a pairing
    # a catalogue's yes / no and quantity values are not words: no "no" in "no more", one report for 1L
    lex = {"防水": ["yes", "no"], "容量": ["500ml", "1L"]}
    assert invented("Rain? no more worries", {"防水": "yes"}, lexicon=lex) == []
    assert [(d["kind"], d["stated"]) for d in invented("水杯 1L", {"容量": "500ml"}, lexicon=lex)] == \
        [("quantity", "1L")]
    assert [d["key"] for d in invented("Waterproof linen shirt", {"waterproof": False})] == ["waterproof"]
    assert invented("Not waterproof, linen shirt", {"waterproof": False}) == []
    assert invented("这款上衣不防水", {"是否防水": "否"}) == []


def test_bad_inputs_raise_invalid_input():
    with pytest.raises(InvalidInput):
        coverage(None, ZH)
    with pytest.raises(InvalidInput):
        coverage("text", ["颜色"])
    with pytest.raises(InvalidInput):
        invented("text", {"颜色": {"a": 1}})


# -- diversity ---------------------------------------------------------------------------------------


def test_distinct_n_chars_for_chinese_words_for_english():
    assert distinct_n(["一二三四", "一二三五"], 2) == pytest.approx(4 / 6)  # 一二 二三 三四 / 一二 二三 三五
    assert distinct_n(["一二三四", "一二三五"], 1) == pytest.approx(5 / 8)
    assert distinct_n(["The cat sat.", "the CAT ran"], 1) == pytest.approx(4 / 6)  # words, case folded
    assert distinct_n(["the cat sat", "the cat sat"], 3) == pytest.approx(1 / 2)
    assert distinct_n(["a"], 2) == 0.0
    with pytest.raises(InvalidInput):
        distinct_n(["x"], 0)
    with pytest.raises(InvalidInput):
        distinct_n("one string", 1)


# -- A/B statistics ----------------------------------------------------------------------------------


def test_thompson_picks_the_clearly_better_arm():
    rng = np.random.default_rng(0)
    stats = {"control": (200, 20), "b": (200, 60), "c": (200, 24)}
    picks = [thompson_pick(stats, rng) for _ in range(1000)]
    assert picks.count("b") > 900
    fresh = [thompson_pick({"seen": (500, 50), "new": (0, 0)}, np.random.default_rng(s)) for s in range(200)]
    assert 100 < fresh.count("new") < 200  # an arm never shown is still tried (uniform prior vs 0.1)
    with pytest.raises(InvalidInput):
        thompson_pick({}, rng)
    with pytest.raises(InvalidInput):
        thompson_pick({"a": (5, 6)}, rng)


def test_lift_numbers_and_errors():
    out = lift((1000, 100), (1000, 130))
    assert out["control"]["rate"] == 0.1 and out["variant"]["rate"] == 0.13
    assert out["absolute_lift"] == pytest.approx(0.03) and out["relative_lift"] == pytest.approx(0.3)
    lo, hi = out["ci"]
    assert lo < 0.03 < hi and 0 < lo and out["ci_method"] == "newcombe-hybrid-score"
    rng = np.random.default_rng(1)
    mc = (rng.beta(131, 871, 200_000) > rng.beta(101, 901, 200_000)).mean()
    assert out["p_variant_better"] == pytest.approx(mc, abs=0.005)
    assert prob_beats((50, 5), (40, 9)) + prob_beats((40, 9), (50, 5)) == pytest.approx(1.0)
    assert lift((10, 0), (10, 1))["relative_lift"] is None
    for bad in [((0, 0), (10, 1)), ((10, 1), (0, 0)), ((10, 11), (10, 1)), ((10, -1), (10, 1))]:
        with pytest.raises(InvalidInput):
            lift(*bad)
    with pytest.raises(InvalidInput, match="confidence"):
        lift((10, 1), (10, 2), confidence=1.5)


def test_lift_ci_covers_the_true_difference_about_95_percent():
    rng = np.random.default_rng(7)
    p_c, p_v, n, sims = 0.10, 0.13, 800, 400
    hits = 0
    for _ in range(sims):
        c, v = int(rng.binomial(n, p_c)), int(rng.binomial(n, p_v))
        lo, hi = lift((n, c), (n, v))["ci"]
        hits += lo <= p_v - p_c <= hi
    assert 0.92 <= hits / sims <= 0.98
