"""The online reward model (aigc.feedback.reward): a simulated rater with a planted taste it never
states; the model learns it from pairs, thumbs or edits, in English and in Chinese, and reranks
fresh candidates by it."""

from __future__ import annotations

import json
import random
import time
from dataclasses import dataclass, replace

import numpy as np
import pytest

from aigc.errors import InvalidInput
from aigc.feedback.reward import RewardConfig, RewardModel

# -- a procedural copywriter: candidates are built from parts, so a rater can judge and edit them --

LANGS = {
    "en": {
        "openers": ["Meet our", "Discover the", "Try this", "Introducing the", "Shop the",
                    "Say hello to the"],
        "adjectives": ["soft", "stylish", "classic", "cozy", "lightweight", "elegant", "breathable",
                       "durable", "modern", "relaxed"],
        "products": ["shirt", "dress", "scarf", "sweater", "jacket", "blanket", "pillowcase", "hoodie",
                     "towel", "cardigan"],
        "materials": ["cotton", "linen", "wool"],
        "clauses": ["for everyday wear", "with a relaxed fit", "that keeps you warm", "in five colors",
                    "perfect for travel", "with reinforced seams", "made to last", "for the whole family",
                    "easy to wash", "at a fair price"],
        "ends": [".", " today.", ". Love it."],
        "shout": ["!", "!!", " today!"],
        "join": lambda parts: " ".join(parts),
        "with_material": lambda m: f"in pure {m}",
        "short": 60,
        "prompts": ["Write product copy for a {p}", "Describe our new {p}", "A tagline for the {p}"],
    },
    "zh": {
        "openers": ["全新", "精选", "经典款", "限时推荐", "热卖", "店长推荐"],
        "adjectives": ["柔软", "时尚", "舒适", "轻薄", "保暖", "百搭", "透气", "简约", "耐穿", "优雅"],
        "products": ["衬衫", "连衣裙", "围巾", "开衫", "外套", "毯子", "枕套", "卫衣", "浴巾", "睡衣"],
        "materials": ["纯棉", "亚麻", "羊毛"],
        "clauses": ["适合日常穿着", "版型宽松", "冬天很暖和", "五种颜色可选", "出行必备", "做工精细",
                    "经久耐用", "全家都适合", "机洗不变形", "价格实惠"],
        "ends": ["。", "，值得拥有。", "，欢迎选购。"],
        "shout": ["！", "！！", "，快来抢购！"],
        "join": lambda parts: parts[0] + "".join(parts[1:3]) + "".join("，" + c for c in parts[3:]),
        "with_material": lambda m: f"{m}面料",
        "short": 22,
        "prompts": ["为{p}写一段商品文案", "介绍我们的新款{p}", "给{p}写一句广告语"],
    },
}


@dataclass(frozen=True)
class Copy:
    """One candidate, as its parts: ``text`` renders it, a rater judges and edits the parts."""

    lang: str
    opener: str
    adjective: str
    product: str
    material: str | None
    clauses: tuple[str, ...]
    shout: str | None  # an exclamatory ending, else a calm one
    end: str

    @property
    def text(self) -> str:
        lang = LANGS[self.lang]
        head = [self.opener, self.adjective]
        if self.material:
            head.append(lang["with_material"](self.material))
        return lang["join"]([*head, self.product, *self.clauses]) + (self.shout or self.end)


def draw(lang: str, rng: random.Random, product: str | None = None) -> Copy:
    L = LANGS[lang]
    opener, adjective = rng.choice(L["openers"]), rng.choice(L["adjectives"])
    product = product or rng.choice(L["products"])
    material = rng.choice(L["materials"]) if rng.random() < 0.4 else None
    clauses = tuple(rng.sample(L["clauses"], rng.randint(0, 3)))
    shout = rng.choice(L["shout"]) if rng.random() < 0.5 else None
    return Copy(lang, opener, adjective, product, material, clauses, shout, rng.choice(L["ends"]))


def request(lang: str, rng: random.Random, n: int) -> tuple[str, list[Copy]]:
    """A prompt and ``n`` candidates for it (all about one product)."""
    product = rng.choice(LANGS[lang]["products"])
    return rng.choice(LANGS[lang]["prompts"]).format(p=product), [draw(lang, rng, product) for _ in range(n)]


def is_short(c: Copy) -> bool:
    return len(c.text) < LANGS[c.lang]["short"]


def shorten(c: Copy) -> Copy:
    """Drop the clauses, then (if still too long) the material, then the exclamation."""
    for cut in ({"clauses": ()}, {"material": None}, {"shout": None}):
        if not is_short(c):
            c = replace(c, **cut)
    assert is_short(c)
    return c


# The planted tastes: what the rater likes, and how the rater edits a copy to fit it.
RULES = {
    "calm": (lambda c: c.shout is None, lambda c, rng: replace(c, shout=None)),
    "material": (lambda c: c.material is not None,
                 lambda c, rng: replace(c, material=rng.choice(LANGS[c.lang]["materials"]))),
    "short": (is_short, lambda c, rng: shorten(c)),
}


def likes(rule: str, copy: Copy) -> bool:
    return RULES[rule][0](copy)


def rate_pairs(model: RewardModel, lang: str, rule: str, rng: random.Random, n: int) -> None:
    """``n`` choices between two candidates; when both or neither fit the taste, a coin decides."""
    for _ in range(n):
        prompt, (a, b) = request(lang, rng, 2)
        while a.text == b.text:  # two draws can read the same: nothing to choose between
            b = draw(lang, rng, b.product)
        if likes(rule, a) == likes(rule, b):
            a, b = (a, b) if rng.random() < 0.5 else (b, a)
        elif likes(rule, b):
            a, b = b, a
        model.add_pair(prompt, a.text, b.text)


def rate_thumbs(model: RewardModel, lang: str, rule: str, rng: random.Random, n: int) -> None:
    for _ in range(n):
        prompt, (c,) = request(lang, rng, 1)
        model.add_thumb(prompt, c.text, likes(rule, c))


def rate_edits(model: RewardModel, lang: str, rule: str, rng: random.Random, n: int) -> None:
    """``n`` edits: the rater corrects an output that misses the taste into one that fits it."""
    done = 0
    while done < n:
        prompt, (c,) = request(lang, rng, 1)
        if not likes(rule, c):
            model.add_edit(prompt, c.text, RULES[rule][1](c, rng).text)
            done += 1


def held_out(lang: str, rule: str, seed: int = 1234, sets: int = 64) -> list[tuple[str, list[Copy]]]:
    """Fresh requests of 8 candidates with at least one the rater likes and one not, so a pick matters."""
    rng, out = random.Random(seed), []
    while len(out) < sets:
        prompt, cands = request(lang, rng, 8)
        if 0 < sum(likes(rule, c) for c in cands) < 8:
            out.append((prompt, cands))
    return out


def judge(model: RewardModel, sets, rule: str) -> tuple[float, float]:
    """(how often the reranker's first pick is one the rater likes, the model's confidence in the
    taste: its mean Bradley-Terry probability that a liked candidate beats a disliked one of the
    same set, 0.5 knowing nothing of the taste and 1 sure of it)."""
    top, confidence = [], []
    for prompt, cands in sets:
        s = np.asarray(model.score([c.text for c in cands], prompt))
        ok = np.array([likes(rule, c) for c in cands])
        top.append(ok[np.argmax(s)])  # rerank's first: the first of the highest (checked below)
        confidence.append(np.mean(1 / (1 + np.exp(-(s[ok][:, None] - s[~ok][None, :])))))
    return float(np.mean(top)), float(np.mean(confidence))


def base_rate(sets, rule: str) -> float:
    """How often a random pick is one the rater likes."""
    return float(np.mean([np.mean([likes(rule, c) for c in cands]) for _, cands in sets]))


BOTH = pytest.mark.parametrize("lang", ["en", "zh"])
EVERY_RULE = pytest.mark.parametrize("rule", sorted(RULES))


@BOTH
@EVERY_RULE
def test_pairs_teach_a_planted_taste_and_more_pairs_teach_it_better(lang, rule):
    rng, model, sets = random.Random(7), RewardModel(), held_out(lang, rule)
    curve = []
    for seen, n in [(0, 20), (20, 50), (50, 200)]:
        rate_pairs(model, lang, rule, rng, n - seen)
        assert model.n_ratings == n
        curve.append(judge(model, sets, rule))
    (top20, conf20), (top50, conf50), (top200, conf200) = curve
    base = base_rate(sets, rule)
    assert 0.3 < base < 0.7  # the sets are a real choice
    assert top200 >= 0.9 and top200 > base + 0.3, (curve, base)
    assert top200 >= top20 - 0.05, curve  # where 20 ratings already pick well, more do not spoil it
    # the confidence in the planted taste grows with the ratings, by more than the noise of 64 sets
    assert conf20 < conf50 < conf200 and conf200 >= conf20 + 0.05, curve
    assert conf20 > 0.6, curve  # 20 ratings already point the right way


@BOTH
@EVERY_RULE
@pytest.mark.parametrize("rate,n,bar", [(rate_thumbs, 200, 0.8), (rate_edits, 50, 0.9)],
                         ids=["thumbs", "edits"])
def test_thumbs_alone_or_edits_alone_teach_it(lang, rule, rate, n, bar):
    """Thumbs, unpaired, say less than a choice (a lower bar); an edit says exactly what was wrong
    (50 are enough)."""
    rng, model, sets = random.Random(8), RewardModel(), held_out(lang, rule)
    rate(model, lang, rule, rng, n)
    top, confidence = judge(model, sets, rule)
    assert top >= bar and top > base_rate(sets, rule) + 0.2 and confidence > 0.75, (top, confidence)


def test_a_choice_among_candidates_teaches_it_and_counts_as_one_rating():
    rng, model, sets = random.Random(10), RewardModel(), held_out("zh", "material")
    for _ in range(50):
        prompt, cands = request("zh", rng, 4)
        liked = [c for c in cands if likes("material", c)]
        chosen = liked[0] if liked else cands[0]
        model.add_choice(prompt, chosen.text, [c.text for c in cands if c is not chosen])
    assert model.n_ratings == 50
    top, _ = judge(model, sets, "material")
    assert top >= 0.9


def test_prompt_aware_learns_a_taste_for_each_prompt():
    """For product copy the rater wants calm text, for a party invitation exclamations: one model
    with prompt-keyed features learns both; without them the two cancel out."""
    prompts = {"Write product copy for a shirt": "calm", "Invite friends to the shirt party": "loud"}

    def fits(prompt, c):
        return (c.shout is None) == (prompts[prompt] == "calm")

    def train(config):
        rng, model = random.Random(11), RewardModel(config)
        for i in range(200):
            prompt = list(prompts)[i % 2]
            a, b = draw("en", rng, "shirt"), draw("en", rng, "shirt")
            if fits(prompt, b) and not fits(prompt, a):
                a, b = b, a
            if fits(prompt, a) != fits(prompt, b):
                model.add_pair(prompt, a.text, b.text)
        return model

    def top_rate(model):
        rng, hits = random.Random(12), []
        for prompt in prompts:
            for _ in range(40):
                cands = [draw("en", rng, "shirt") for _ in range(8)]
                if 0 < sum(fits(prompt, c) for c in cands) < 8:
                    hits.append(fits(prompt, cands[model.rerank([c.text for c in cands], prompt)[0]]))
        return float(np.mean(hits))

    assert top_rate(train(RewardConfig(prompt_aware=True))) >= 0.9
    assert top_rate(train(RewardConfig())) < 0.75


def test_a_callers_vector_can_carry_the_taste():
    """Texts alike in every way the features see; the liked ones differ only in the caller's vector
    (a hidden state, say)."""
    rng = np.random.default_rng(0)

    def vector(liked):
        return np.r_[2.0 if liked else -2.0, rng.normal(size=7)]

    model = RewardModel(RewardConfig(extra_dim=8))
    for i in range(50):
        model.add_pair(None, f"option {i} a", f"option {i} b",
                       vector_chosen=vector(True), vector_rejected=vector(False))
    hits = []
    for i in range(50):
        liked = rng.permutation([True] + [False] * 7)
        order = model.rerank([f"candidate {i} {k}" for k in range(8)], vectors=[vector(x) for x in liked])
        hits.append(liked[order[0]])
    assert np.mean(hits) >= 0.9


def _trained(config=None, n=60, seed=13):
    rng, model = random.Random(seed), RewardModel(config)
    rate_pairs(model, "en", "material", rng, n // 2)
    rate_thumbs(model, "zh", "calm", rng, n // 2)
    return model


def test_save_then_load_gives_identical_scores_and_goes_on_learning_identically(tmp_path):
    model, rng = _trained(RewardConfig(prompt_aware=True, extra_dim=3)), np.random.default_rng(0)
    for i in range(5):  # some ratings with the caller's vectors, kept among the recent ones
        model.add_pair("Describe our new shirt", f"take {i}", "a take", vector_chosen=rng.normal(size=3))
    texts = [draw(lang, random.Random(i)).text for i, lang in enumerate(["en", "zh"] * 10)]
    vectors = [rng.normal(size=3) for _ in texts]
    path = model.save(tmp_path / "reward.npz")
    loaded = RewardModel.load(path)
    assert loaded.config == model.config and loaded.n_ratings == model.n_ratings == 65
    for prompt, vecs in [("Describe our new shirt", vectors), (None, None)]:
        assert loaded.score(texts, prompt, vectors=vecs) == model.score(texts, prompt, vectors=vecs)
    # the recent ratings and the replay's random state came back too: the same ratings next give
    # the same model, bit for bit
    for m in (model, loaded):
        rate_pairs(m, "zh", "short", random.Random(14), 20)
    assert np.array_equal(loaded.weights, model.weights) and np.array_equal(loaded.accum, model.accum)
    assert json.loads(json.dumps(model.state_dict()["recent"])) == model.state_dict()["recent"]


def test_a_failed_save_leaves_the_old_file_whole(tmp_path, monkeypatch):
    path = _trained(n=20).save(tmp_path / "reward.npz")
    before = path.read_bytes()

    def broken(fh, **arrays):
        fh.write(b"half a file")
        raise OSError("disk full")

    monkeypatch.setattr(np, "savez", broken)
    with pytest.raises(OSError, match="disk full"):
        _trained(n=40).save(path)
    assert path.read_bytes() == before and [p.name for p in tmp_path.iterdir()] == ["reward.npz"]
    assert RewardModel.load(path).n_ratings == 20


def test_the_seed_decides_the_model():
    a, b, c = _trained(seed=13), _trained(seed=13), _trained(RewardConfig(seed=1), seed=13)
    assert np.array_equal(a.weights, b.weights)
    assert not np.array_equal(a.weights, c.weights)  # the replay drew other ratings


def test_explain_names_what_pushed_the_score():
    rng, model = random.Random(15), RewardModel()
    rate_pairs(model, "en", "calm", rng, 100)
    text = "Meet our soft shirt for everyday wear!!"
    why = model.explain(text, top=5)
    assert len(why) == 5 and abs(why[0][1]) >= abs(why[-1][1])
    assert any("!" in name and weight < 0 for name, weight in why), why
    everything = model.explain(text, top=10_000)
    assert sum(w for _, w in everything) == pytest.approx(model.score([text])[0])
    assert RewardModel().explain(text) == []  # nothing learned: nothing pushed


def test_a_texts_score_does_not_depend_on_the_batch_it_is_scored_in():
    """Texts are featurized together in one pass: no n-gram may cross from one text to the next."""
    model = _trained(RewardConfig(prompt_aware=True))
    texts = ["a", "棉", "Soft cotton shirt!", "纯棉 T恤，透气！", "a b", "x" * 300, "Linen. Linen? Linen!"]
    for prompt in (None, "Describe our new shirt"):
        together = model.score(texts, prompt)
        alone = [model.score([t], prompt)[0] for t in texts]
        assert together == pytest.approx(alone, rel=1e-12, abs=1e-12)
        assert model.score(texts[::-1], prompt) == pytest.approx(together[::-1], rel=1e-12, abs=1e-12)
    row, idx, val = model.featurize(texts)
    for r, t in enumerate(texts):
        _, i, v = model.featurize([t])
        assert sorted(zip(idx[row == r], val[row == r])) == sorted(zip(i, v))


def test_rerank_orders_by_score_best_first_and_ties_keep_the_order_given():
    assert RewardModel().score(["a", "棉", "b c"]) == [0.0, 0.0, 0.0]
    assert RewardModel().rerank(["a", "b", "c"]) == [0, 1, 2]
    model, (prompt, cands) = _trained(), request("en", random.Random(17), 8)
    texts = [c.text for c in cands]
    scores = model.score(texts, prompt)
    order = model.rerank(texts, prompt)
    assert sorted(order) == list(range(8)) and order[0] == int(np.argmax(scores))
    assert [scores[i] for i in order] == sorted(scores, reverse=True)


BAD = [
    (lambda m: m.add_pair("p", "", "fine"), "chosen is empty (got '')"),
    (lambda m: m.add_thumb("p", "  \n ", True), "text is empty"),
    (lambda m: m.add_thumb("p", "fine", 1), "up must be True (thumbs up) or False (thumbs down), got 1"),
    (lambda m: m.add_edit("p", "Soft shirt.", " Soft shirt. "),
     "edited is the same as generated ('Soft shirt.') once cleaned"),
    (lambda m: m.add_pair("p", "same", "same"), "chosen and rejected are the same text ('same')"),
    (lambda m: m.add_choice("p", "a", []), "others must be a non-empty list"),
    (lambda m: m.add_choice("p", "a", ["b", ""]), "others[1] is empty"),
    (lambda m: m.score("one text"), "texts must be a list of strings, got str"),
    (lambda m: m.score([3]), "texts[0] must be a string, got int 3"),
    (lambda m: m.rerank([]), "candidates is empty"),
    (lambda m: m.explain("text", top=0), "top must be a whole number >= 1, got 0"),
    (lambda m: m.add_thumb("p", "text", True, vector=[1.0]), "takes no vectors (extra_dim 0)"),
    (lambda m: RewardModel(RewardConfig(extra_dim=3)).score(["a"], vectors=[[1, 2]]),
     "vector must be 3 finite numbers (extra_dim), got 2 values"),
    (lambda m: RewardModel(RewardConfig(extra_dim=2)).add_thumb(None, "a", True, vector=[1, np.nan]),
     "vector must be 2 finite numbers (extra_dim), got 2 with NaN or inf"),
    (lambda m: RewardConfig(char_ngrams=(0, 4)),
     "char_ngrams must be (shortest, longest) with 1 <= shortest <= longest <= 6, got (0, 4); e.g. (1, 4)"),
    (lambda m: RewardConfig(char_ngrams=(1, 9)), "got (1, 9)"),
    (lambda m: RewardConfig(char_ngrams=(3, 2)), "got (3, 2)"),
    (lambda m: RewardConfig(word_ngrams=(1, 5)),
     "word_ngrams must be (shortest, longest) with 1 <= shortest <= longest <= 3, got (1, 5)"),
    (lambda m: RewardConfig(hash_bits=40), "hash_bits must be a whole number from 10 to 24, got 40"),
    (lambda m: RewardConfig(lr=0), "lr must be a number > 0, got 0"),
    (lambda m: RewardConfig.from_dict({"lr": 0.1, "speed": 2}), "unknown reward config keys ['speed']"),
]


@pytest.mark.parametrize("call,message", BAD, ids=[m[:30] for _, m in BAD])
def test_bad_input_is_refused_in_one_line_that_says_what_and_the_fix(call, message):
    model = RewardModel()
    with pytest.raises(InvalidInput) as err:
        call(model)
    text = str(err.value)
    assert message in text and "\n" not in text
    assert model.n_ratings == 0 and not model.weights.any() and not model._recent  # nothing half-learned


def test_a_bad_vector_in_a_choice_changes_nothing():
    model = RewardModel(RewardConfig(extra_dim=2))
    with pytest.raises(InvalidInput, match="got 3 values"):
        model.add_choice("p", "a", ["b", "c"], vectors_others=[[1, 2], [1, 2, 3]])
    assert model.n_ratings == 0 and not model.weights.any() and not model._recent


def test_loading_what_is_not_a_saved_model_says_so(tmp_path):
    with pytest.raises(InvalidInput, match="no reward model file at .*missing.npz.*save one"):
        RewardModel.load(tmp_path / "missing.npz")
    (tmp_path / "notes.npz").write_text("not a model")
    with pytest.raises(InvalidInput, match="is not a reward model file") as err:
        RewardModel.load(tmp_path / "notes.npz")
    assert "\n" not in str(err.value)
    with pytest.raises(InvalidInput, match="folder .* does not exist"):
        RewardModel().save(tmp_path / "no" / "reward.npz")


def test_two_hundred_ratings_take_seconds_at_most():
    model = RewardModel()
    start = time.perf_counter()
    rate_pairs(model, "en", "short", random.Random(16), 200)
    assert time.perf_counter() - start < 10  # about 0.2 s on one core
    assert model.n_ratings == 200
