"""FastLM: the slot cache for pretrained Llama-family bases, against transformers itself.

Tiny random-weight bases of every supported type (built here from transformers configs, every
parameter perturbed so that biases, norms and q/k norms all matter): prefill and decode logits
equal the transformers forward, rows at different lengths decode in one batch as they do alone,
a moved row continues as before, and greedy decoding through the decoding core gives the tokens
of the plain forward and of ``generate()``."""

from __future__ import annotations

import pytest
import torch
from tokenizers import Tokenizer, models, pre_tokenizers

from aigc.data.tokenizers import EOS, UNK, TextTokenizer
from aigc.decoding import ForwardRunner, Sampling, SequenceGroup, SlotRunner, run
from aigc.errors import InvalidInput
from aigc.models import gpt
from aigc.pretrained import decoder
from aigc.pretrained.decoder import SUPPORTED, FastLM

VOCAB = 64
TINY = dict(vocab_size=VOCAB, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
            num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64,
            bos_token_id=0, eos_token_id=0, pad_token_id=0)
LLAMA3_ROPE = {"rope_type": "llama3", "rope_theta": 10000.0, "factor": 8.0, "low_freq_factor": 1.0,
               "high_freq_factor": 4.0, "original_max_position_embeddings": 16}
# yarn also scales cos and sin (its attention factor), which the tables must carry
YARN_ROPE = {"rope_type": "yarn", "rope_theta": 10000.0, "factor": 4.0,
             "original_max_position_embeddings": 16}

# (name, config class, its arguments beyond TINY): each case holds what sets its type apart
CASES = {
    "llama-tied": ("LlamaConfig", dict(tie_word_embeddings=True)),
    "llama3-rope-biases-head16": ("LlamaConfig", dict(rope_parameters=LLAMA3_ROPE, attention_bias=True,
                                                      mlp_bias=True, head_dim=16)),
    "mistral-window6": ("MistralConfig", dict(sliding_window=6, head_dim=16)),
    "qwen2-biases-window5-yarn": ("Qwen2Config", dict(use_sliding_window=True, sliding_window=5,
                                                      max_window_layers=1, rope_parameters=YARN_ROPE)),
    "qwen3-qknorm-untied": ("Qwen3Config", dict(head_dim=16, tie_word_embeddings=False)),
    "gemma3": ("Gemma3TextConfig", dict(head_dim=16, query_pre_attn_scalar=24, sliding_window=6,
                                        layer_types=["sliding_attention", "full_attention"],
                                        final_logit_softcapping=5.0, hidden_activation="gelu_pytorch_tanh")),
}


def tiny_base(case: str, seed: int = 0):
    import transformers

    cls_name, extra = CASES[case]
    config = getattr(transformers, cls_name)(**{**TINY, **extra})
    torch.manual_seed(seed)
    model = transformers.AutoModelForCausalLM.from_config(config)
    with torch.no_grad():
        for p in model.parameters():  # norms around 1 (gemma's around 0), biases non-zero
            p.add_(torch.randn_like(p) * 0.1)
    return model.eval()


@pytest.fixture(scope="module", params=list(CASES))
def base(request):
    return request.param, tiny_base(request.param)


def test_cases_cover_every_supported_type():
    import transformers

    types = {getattr(transformers, cls_name).model_type for cls_name, _ in CASES.values()}
    assert types == set(SUPPORTED)


def _hf_logits(model, idx):
    with torch.no_grad():
        return model(input_ids=idx, use_cache=False).logits


def test_prefill_and_decode_equal_the_transformers_forward(base):
    case, model = base
    lm = FastLM.from_hf(model)
    g = torch.Generator().manual_seed(1)
    seq = torch.randint(1, VOCAB, (2, 25), generator=g)  # 20 to prefill (past every window), 5 to decode
    want = _hf_logits(model, seq)  # (2, 25, V)
    slots = lm.init_slots(3)
    state, first = lm.prefill_state(seq[:, :20], slots)
    lm.load_slots(state, slots, [0, 1])
    got = [first] + [lm.decode_slots(seq[:, t], slots) for t in range(20, 25)]
    for step, logits in enumerate(got):
        torch.testing.assert_close(logits, want[:, 19 + step], atol=1e-4, rtol=1e-4,
                                   msg=lambda m: f"{case}, step {step}: {m}")
    assert slots.lengths.tolist() == [25, 25, 0]
    assert lm.block_size == 64 and slots.capacity == 64


def test_rows_at_different_lengths_decode_as_they_do_alone(base):
    case, model = base
    lm = FastLM.from_hf(model)
    g = torch.Generator().manual_seed(2)
    contexts = [torch.randint(1, VOCAB, (1, n), generator=g) for n in (12, 3, 8)]
    feed = torch.randint(1, VOCAB, (4, 3), generator=g)  # 4 steps, one token per row

    together = lm.init_slots(4)
    for r, ctx in enumerate(contexts):
        lm.prefill_slots(ctx, together, [r])
    batched = torch.stack([lm.decode_slots(feed[t], together) for t in range(4)])  # (4, 3, V)
    for r, ctx in enumerate(contexts):
        alone = lm.init_slots(1)
        lm.prefill_slots(ctx, alone, [0])
        solo = torch.stack([lm.decode_slots(feed[t, r : r + 1], alone)[0] for t in range(4)])
        torch.testing.assert_close(batched[:, r], solo, atol=1e-5, rtol=1e-5,
                                   msg=lambda m: f"{case}, row {r}: {m}")
        torch.testing.assert_close(solo[-1], _hf_logits(model, torch.cat([ctx[0], feed[:, r]])[None])[0, -1],
                                   atol=1e-4, rtol=1e-4)


def test_a_moved_row_continues_as_before(base):
    case, model = base
    lm = FastLM.from_hf(model)
    g = torch.Generator().manual_seed(3)
    ctx = torch.randint(1, VOCAB, (2, 9), generator=g)
    nxt = torch.randint(1, VOCAB, (3, 2), generator=g)
    a, b = lm.init_slots(2), lm.init_slots(2)
    for slots in (a, b):
        lm.prefill_slots(ctx, slots, [0, 1])
        lm.decode_slots(nxt[0], slots)
    a.move(1, 0)  # row 1 leaves its place for row 0's, as the engine packs rows
    assert a.lengths[0] == 10
    for t in (1, 2):
        moved = lm.decode_slots(nxt[t, 1:], a)[0]
        staying = lm.decode_slots(nxt[t], b)[1]
        torch.testing.assert_close(moved, staying, atol=1e-5, rtol=1e-5, msg=lambda m: f"{case}: {m}")


def _tokenizer() -> TextTokenizer:
    vocab = {EOS: 0, UNK: 1, **{f"w{i}": i for i in range(2, VOCAB)}}
    hf = Tokenizer(models.WordLevel(vocab, unk_token=UNK))
    hf.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    return TextTokenizer(hf)


def _greedy(runner, context, tok, max_new):
    group = SequenceGroup(context, 1, Sampling(max_new_tokens=max_new, temperature=0.0, seed=0),
                          torch.Generator().manual_seed(0), tok)
    list(run(runner, group))
    return group.history()[0, len(context) :].tolist()


# seeds whose greedy path does not settle on one token at once (tiny random bases repeat themselves)
@pytest.mark.parametrize("case, seed", [("llama-tied", 7), ("mistral-window6", 5), ("qwen3-qknorm-untied", 4),
                                        ("gemma3", 6)])
def test_greedy_decoding_through_the_core_equals_forward_and_generate(case, seed):
    model = tiny_base(case, seed)
    lm = FastLM.from_hf(model)
    tok = _tokenizer()
    context = [tok.eos_id] + tok.encode("w5 w9 w17 w33 w2")
    slot = _greedy(SlotRunner(lm, 2), context, tok, 12)
    forward = _greedy(ForwardRunner(lm, 2), context, tok, 12)
    with torch.no_grad():
        out = model.generate(torch.tensor([context]), max_new_tokens=12, do_sample=False,
                             eos_token_id=tok.eos_id, pad_token_id=tok.eos_id)
    generated = out[0, len(context) :].tolist()
    assert slot == forward == generated
    assert len(set(slot)) >= 4, "the greedy path is varied enough to tell decoders apart"


def test_scripted_layers_are_bit_equal_to_eager():
    """Prefill and decode run their layers as one TorchScript call each; they must compute what
    the eager functions do, call after call (the profiling executor re-optimizes)."""
    lm = FastLM.from_hf(tiny_base("gemma3"))  # every optional part but biases ...
    lm_b = FastLM.from_hf(tiny_base("qwen2-biases-window5-yarn"))  # ... and biases
    x = torch.randint(1, VOCAB, (2, 14), generator=torch.Generator().manual_seed(5))
    fns = (decoder._prefill_layers, decoder._slot_layers)

    def outputs():
        outs = []
        for m in (lm, lm_b):
            slots = m.init_slots(3)
            m.prefill_slots(x[:, :9], slots, [0, 2])
            m.prefill_slots(x[:1, :4], slots, [1])  # rows at different lengths: the masked path
            outs += [m.decode_slots(x[:, 9 + t].repeat(2)[:3], slots) for t in range(5)] + [slots.k.clone()]
        return outs

    try:
        for fn in fns:
            gpt._SCRIPTED[fn] = fn
        eager = outputs()
        for fn in fns:
            del gpt._SCRIPTED[fn]
        assert all(gpt._scripted(fn) is not fn for fn in fns), "TorchScript compiled both layer loops"
        for _ in range(3):
            assert all(torch.equal(a, b) for a, b in zip(outputs(), eager))
    finally:
        for fn in fns:
            gpt._SCRIPTED.pop(fn, None)


def test_bfloat16_follows_the_base():
    model = tiny_base("qwen3-qknorm-untied").to(torch.bfloat16)
    lm = FastLM.from_hf(model)
    seq = torch.randint(1, VOCAB, (1, 12), generator=torch.Generator().manual_seed(6))
    slots = lm.init_slots(1)
    lm.prefill_slots(seq[:, :10], slots, [0])
    got = torch.stack([lm.decode_slots(seq[:, t], slots) for t in (10, 11)])
    assert slots.k.dtype == got.dtype == torch.bfloat16
    want = _hf_logits(model, seq)[0, 10:]
    torch.testing.assert_close(got[:, 0].float(), want.float(), atol=0.1, rtol=0.05)


def test_decode_weights_follow_a_changed_parameter():
    model = tiny_base("llama-tied")
    lm = FastLM.from_hf(model)
    seq = torch.randint(1, VOCAB, (1, 6), generator=torch.Generator().manual_seed(7))
    before = lm.prefill_state(seq, lm.init_slots(1))[1]
    with torch.no_grad():
        model.model.layers[1].mlp.down_proj.weight.mul_(2.0)
    after = lm.prefill_state(seq, lm.init_slots(1))[1]
    assert not torch.allclose(before, after)
    torch.testing.assert_close(after, _hf_logits(model, seq)[:, -1], atol=1e-4, rtol=1e-4)


def test_max_context_caps_the_cache():
    model = tiny_base("llama-tied")
    lm = FastLM.from_hf(model, max_context=16)
    slots = lm.init_slots(2)
    assert lm.block_size == 16 and slots.capacity == 16 and slots.k.shape == (2, 2, 2, 16, 8)
    assert FastLM.from_hf(model, max_context=None).block_size == 64  # the base's own
    with pytest.raises(InvalidInput, match="max_context must be .* got 0"):
        FastLM.from_hf(model, max_context=0)
    with pytest.raises(InvalidInput, match="17 tokens is longer than the 16"):
        lm.prefill_state(torch.ones(1, 17, dtype=torch.long), slots)


def test_an_unsupported_type_is_refused_with_the_supported_ones():
    from transformers import GPT2Config, GPT2LMHeadModel

    config = GPT2Config(vocab_size=VOCAB, n_embd=32, n_layer=1, n_head=2, n_positions=64, bos_token_id=0,
                        eos_token_id=0)
    model = GPT2LMHeadModel(config).eval()
    with pytest.raises(InvalidInput) as err:
        FastLM.from_hf(model)
    message = str(err.value)
    assert "'gpt2'" in message and all(t in message for t in SUPPORTED) and "\n" not in message


LONGROPE = {"rope_type": "longrope", "rope_theta": 10000.0, "long_factor": [1.0] * 4,
            "short_factor": [1.0] * 4, "original_max_position_embeddings": 16}


@pytest.mark.parametrize("cls_name, extra, what", [
    ("Gemma3TextConfig", dict(head_dim=16, attn_logit_softcapping=50.0), "attention logit soft-capping"),
    ("LlamaConfig", dict(hidden_act="relu"), "activation 'relu'"),
    ("LlamaConfig", dict(rope_parameters=LONGROPE), "longrope"),
])
def test_what_it_cannot_decode_is_refused(cls_name, extra, what):
    import transformers

    config = getattr(transformers, cls_name)(**{**TINY, **extra})
    model = transformers.AutoModelForCausalLM.from_config(config).eval()
    with pytest.raises(InvalidInput, match=f"cannot decode this .*{what}.*ForwardRunner"):
        FastLM.from_hf(model)
