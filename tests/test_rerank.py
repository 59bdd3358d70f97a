"""Reranking by a condition classifier (aigc.rerank): of the candidates drawn, the on-condition ones are kept."""

from __future__ import annotations

import random

import pytest

from aigc.data.dataset import TextRecord
from aigc.errors import InvalidInput
from aigc.rerank import ConditionJudge, generate_reranked

WORDS = {"tea": ["oolong", "leaves", "steep", "茶叶", "冲泡"], "pan": ["skillet", "iron", "sear", "铁锅", "煎炒"]}


def text(topic: str, rng: random.Random) -> str:
    return " ".join(rng.choice(WORDS[topic]) for _ in range(rng.randint(3, 7)))


@pytest.fixture(scope="module")
def judge():
    rng = random.Random(0)
    records = [TextRecord(text(t, rng), {"topic": t, "same": "x"}) for t in ["tea", "pan"] * 100]
    return ConditionJudge.fit(records, ["topic", "same"])


class HalfObeys:
    """Draws 'tea' and 'pan' texts alternately whatever is asked: a model that learned half its condition."""

    def __init__(self):
        self.calls = []

    def generate(self, prompt, *, n, cond, **sampling):
        self.calls.append(n)
        rng = random.Random(sampling.get("seed"))
        return [text(("tea", "pan")[i % 2], rng) for i in range(n)]


def test_reranking_keeps_the_candidates_read_as_asked(judge):
    gen = HalfObeys()
    assert "same" not in judge.classifiers  # one value: nothing to tell apart
    out = generate_reranked(gen, n=5, cond={"topic": "pan"}, candidates=4, judge=judge, seed=1)
    assert gen.calls == [20] and len(out) == 5
    assert all(w in WORDS["pan"] for t in out for w in t.split())
    assert out == generate_reranked(HalfObeys(), n=5, cond={"topic": "pan"}, candidates=4, judge=judge, seed=1)
    # without reranking, half of them are off-condition
    plain = generate_reranked(gen, n=4, cond={"topic": "pan"}, candidates=1, judge=judge, seed=1)
    assert gen.calls[-1] == 4 and sum(t.split()[0] in WORDS["tea"] for t in plain) == 2


def test_pick_keeps_the_order_drawn_and_ignores_columns_it_cannot_judge(judge):
    texts = ["oolong leaves", "skillet iron", "茶叶 冲泡", "铁锅 煎炒"]
    assert judge.pick(texts, {"topic": "tea", "same": "x", "unknown": "y"}, 2) == ["oolong leaves", "茶叶 冲泡"]
    scores = judge.scores(texts, {"topic": "tea"})
    assert scores[0] > scores[1] and scores[2] > scores[3]
    assert (judge.scores(texts, {"topic": "never-seen"}) == 0).all()
    # a value typed full-width (a Chinese input method) is judged as the generator reads it: NFKC
    assert (judge.scores(texts, {"topic": "ｔｅａ"}) == scores).all()


@pytest.mark.parametrize("kwargs, match", [(dict(candidates=0), "candidates"), (dict(candidates=True), "candidates")])
def test_bad_candidates_are_refused(judge, kwargs, match):
    with pytest.raises(InvalidInput, match=match):
        generate_reranked(HalfObeys(), n=1, cond={"topic": "tea"}, judge=judge, **kwargs)


def test_pick_refuses_more_than_it_has(judge):
    with pytest.raises(InvalidInput, match="between 1 and the 2 candidates"):
        judge.pick(["a", "b"], {"topic": "tea"}, 3)
