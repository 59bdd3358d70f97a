import random

import pytest
from sacrebleu.metrics import BLEU

from aigc.errors import InvalidInput
from aigc.metrics.text import (
    bleu,
    chrf,
    classify,
    condition_accuracy,
    distinct_n,
    fit_condition_classifiers,
    majority_share,
    memorization,
    self_bleu,
    units,
)

EN = [
    "the quick brown fox jumps over the lazy dog",
    "a stitch in time saves nine when you sew carefully",
    "all that glitters is not gold said the old merchant",
]
ZH = ["这款手机的屏幕很清晰，电池也很耐用。", "酒店的位置不错，但是房间有点小，早餐一般。", "物流很快，包装完好，书的质量很好。"]


def test_bleu_identical_is_100_and_unrelated_near_0():
    assert bleu(EN, EN) == pytest.approx(100.0)
    unrelated = ["purple elephants compute quantum soup", "zebra violin marathon", "xylophone orbit"]
    assert bleu(unrelated, EN) < 1.0
    partial = bleu(["the quick brown fox jumps over the sleepy cat"] + EN[1:], EN)
    assert 50 < partial < 100


def test_bleu_uses_zh_tokenization_for_chinese():
    assert bleu(ZH, ZH) == pytest.approx(100.0)
    hyp = ["这款手机的屏幕很清晰，电池一般。", "酒店的位置不错，房间很大。", "物流很慢。"]
    # 13a sees each unspaced Chinese sentence as one or two "words", so it would score ~0
    assert bleu(hyp, ZH) == pytest.approx(BLEU(tokenize="zh").corpus_score(hyp, [ZH]).score)
    assert bleu(hyp, ZH) > 20 > BLEU(tokenize="13a").corpus_score(hyp, [ZH]).score


def test_chrf_identical_high_unrelated_low():
    assert chrf(EN, EN) == pytest.approx(100.0)
    assert chrf(ZH, ZH) == pytest.approx(100.0)
    assert chrf(["zzz qqq", "vvv", "kkk"], EN) < 10


def test_bleu_refuses_mismatched_inputs():
    with pytest.raises(InvalidInput, match="same length, got 1 and 3"):
        bleu(EN[:1], EN)
    with pytest.raises(InvalidInput, match="must not be empty"):
        chrf([], [])


def test_units_split_words_and_cjk_chars():
    assert units("iPhone 15很好用! 质量 OK，don't") == ["iPhone", "15", "很", "好", "用", "质", "量", "OK", "don", "t"]
    assert units("，。！？ ... --") == []


def test_distinct_n_on_handcrafted_example():
    texts = ["a b a b", "很好很好"]
    # units: [a, b, a, b] and [很, 好, 很, 好]
    assert distinct_n(texts, 1) == pytest.approx(4 / 8)  # a, b, 很, 好
    assert distinct_n(texts, 2) == pytest.approx(4 / 6)  # (a b), (b a), (很 好), (好 很); no bigram across texts
    assert distinct_n(["one two three"], 3) == 1.0
    assert distinct_n(["one two"], 3) == 0.0  # no trigram at all
    with pytest.raises(InvalidInput, match="n must be >= 1, got 0"):
        distinct_n(texts, 0)


def test_self_bleu_identical_high_distinct_low():
    assert self_bleu([EN[0]] * 5) == pytest.approx(100.0)
    assert self_bleu([ZH[0]] * 3) == pytest.approx(100.0)
    distinct = ["purple elephants compute soup", "zebra violin marathon runs", "xylophone orbit glows"]
    assert self_bleu(distinct) < 5
    with pytest.raises(InvalidInput, match="at least 2 texts"):
        self_bleu(EN[:1])


def test_self_bleu_matches_sacrebleu_sentence_scores():
    rng = random.Random(0)
    words = "the a fox dog runs jumps over under quickly slowly 很 好".split()
    texts = [" ".join(rng.choice(words) for _ in range(rng.randrange(0, 12))) for _ in range(30)]
    metric = BLEU(tokenize="zh", effective_order=True)
    scores = [metric.sentence_score(t, texts[:i] + texts[i + 1 :]).score for i, t in enumerate(texts)]
    expected = sum(scores) / len(scores)
    assert self_bleu(texts) == pytest.approx(expected)
    # above max_texts an evenly spaced subset is scored: deterministic
    assert self_bleu(texts, max_texts=10) == self_bleu(texts, max_texts=10)
    assert self_bleu(texts, max_texts=10) == pytest.approx(self_bleu(texts[::3]))


def test_memorization_finds_copied_span_only():
    rng = random.Random(0)
    train = ["".join(rng.choice("abcdefghij klmnop") for _ in range(3000)) for _ in range(5)]
    copied = train[2][1000:1080]  # 80 chars: windows at offsets 0, 10, 20, 30 all copied
    novel = "".join(rng.choice("qrstuvwxyz") for _ in range(80))
    assert memorization([copied], train) == {"spans": 4, "memorized": 4, "rate": 1.0}
    assert memorization([novel], train) == {"spans": 4, "memorized": 0, "rate": 0.0}
    # half-copied text: windows lying wholly inside the copied part count
    mixed = copied[:60] + novel[:40]  # 100 chars -> windows at 0..50; only offset 0 and 10 are inside
    assert memorization([mixed], train) == {"spans": 6, "memorized": 2, "rate": 2 / 6}
    # a string as training text, a span across the "\n" join, and texts too short to count
    joined = "\n".join(train)
    assert memorization([joined[2990:3050]], train, span=50, stride=5)["rate"] == 1.0
    assert memorization(["short"], joined) == {"spans": 0, "memorized": 0, "rate": None}


def test_memorization_matches_substring_search_on_chinese():
    rng = random.Random(1)
    train = "\n".join("".join(rng.choice(ZH[i % 3]) for _ in range(500)) for i in range(30))
    gen = [train[s : s + 120] if k % 2 else "".join(rng.choice(ZH[0]) for _ in range(120))
           for k, s in enumerate(rng.randrange(len(train) - 120) for _ in range(20))]
    result = memorization(gen, train, span=20, stride=7)
    windows = [g[i : i + 20] for g in gen for i in range(0, len(g) - 19, 7)]
    assert result["spans"] == len(windows)
    assert result["memorized"] == sum(w in train for w in windows)
    assert 0 < result["rate"] < 1


# ---------------------------------------------------------------------- condition classifiers


def topic_texts(n: int, seed: int) -> tuple[list[str], list[str], list[str]]:
    """Texts whose topic (tea / pan) shows in its words, in English or Chinese (lang)."""
    rng = random.Random(seed)
    words = {("tea", "en"): ["oolong", "leaves", "steep", "brew", "cup"],
             ("pan", "en"): ["skillet", "iron", "sear", "handle", "stove"],
             ("tea", "zh"): ["乌龙", "茶叶", "冲泡", "茶杯", "清香"],
             ("pan", "zh"): ["铁锅", "煎炒", "锅柄", "灶台", "不粘"]}
    texts, topics, langs = [], [], []
    for i in range(n):
        topic, lang = ("tea", "pan")[i % 2], ("en", "zh")[(i // 2) % 2]
        sep = " " if lang == "en" else ""
        texts.append(sep.join(rng.choice(words[topic, lang]) for _ in range(rng.randint(3, 8))))
        topics.append(topic)
        langs.append(lang)
    return texts, topics, langs


def test_condition_classifiers_read_english_and_chinese_per_column():
    texts, topics, langs = topic_texts(200, seed=0)
    clfs = fit_condition_classifiers(texts, {"topic": topics, "lang": langs}, seed=0)
    held, held_topics, held_langs = topic_texts(60, seed=1)
    assert condition_accuracy(clfs["topic"], held, held_topics) == 1.0
    assert condition_accuracy(clfs["lang"], held, held_langs) == 1.0
    assert classify(clfs["topic"], ["乌龙茶叶冲泡", "skillet sear iron"]) == ["tea", "pan"]
    # the share asked for: one of four asked wrongly
    assert condition_accuracy(clfs["topic"], held[:4], ["pan"] + held_topics[1:4]) == 0.75
    # deterministic for a seed
    again = fit_condition_classifiers(texts, {"topic": topics}, seed=0)["topic"]
    assert (again.predict_proba(held) == clfs["topic"].predict_proba(held)).all()


def test_condition_classifiers_fit_on_an_evenly_spaced_subset_above_max_texts():
    texts, topics, _ = topic_texts(200, seed=0)
    small = fit_condition_classifiers(texts, {"topic": topics}, max_texts=40)["topic"]
    # SGD makes one update per text per epoch (20 epochs), plus one: 40 texts were fitted on
    assert small.named_steps["logreg"].t_ == 20 * 40 + 1
    whole = fit_condition_classifiers(texts, {"topic": topics})["topic"]
    assert whole.named_steps["logreg"].t_ == 20 * 200 + 1


def test_majority_share_is_the_share_of_the_most_frequent_value():
    assert majority_share(["a", "b", "a", "c"]) == 0.5
    assert majority_share(["x"] * 3) == 1.0


@pytest.mark.parametrize("call, match", [
    (lambda: fit_condition_classifiers(["a b", "c d"], {"topic": ["x", "x"]}), "2 distinct values"),
    (lambda: fit_condition_classifiers(["a b", "c d"], {"topic": ["x"]}), "1 values for 2 texts"),
    (lambda: fit_condition_classifiers("a b", {"topic": ["x", "y"]}), "single string"),
    (lambda: condition_accuracy(None, [], []), "non-empty"),
    (lambda: majority_share([]), "at least one"),
])
def test_condition_metrics_refuse_bad_input(call, match):
    with pytest.raises(InvalidInput, match=match):
        call()
