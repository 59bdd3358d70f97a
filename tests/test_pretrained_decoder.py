"""FastLM: the slot cache for pretrained Llama-family bases, against transformers itself.

Tiny random-weight bases of every supported type (built here from transformers configs, every
parameter perturbed so that biases, norms and q/k norms all matter): prefill and decode logits
equal the transformers forward, rows at different lengths decode in one batch as they do alone,
a moved row continues as before, and greedy decoding through the decoding core gives the tokens
of the plain forward and of ``generate()``. LoRA adapters (``FastLM.with_lora``), unmerged over a
shared base: their logits equal peft's model and the merged model, several live on one base without
copying it, and bad adapter states are refused."""

from __future__ import annotations

import copy

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
    lm_lora = lm_b.with_lora(*_lora_state(tiny_base("qwen2-biases-window5-yarn"), seed=1))  # ... and LoRA
    x = torch.randint(1, VOCAB, (2, 14), generator=torch.Generator().manual_seed(5))
    fns = (decoder._prefill_layers, decoder._slot_layers)

    def outputs():
        outs = []
        for m in (lm, lm_b, lm_lora):
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


# -- LoRA adapters on a shared base --------------------------------------------------------------


def _random_lora(wrapped: torch.nn.Module, seed: int) -> torch.nn.Module:
    """``wrapped`` with every lora_B drawn at random (a fresh adapter's B is zero and would change
    nothing), in eval mode."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in wrapped.named_parameters():
            if "lora_B" in name:
                p.copy_(torch.randn(p.shape, generator=g) * 0.3)
    return wrapped.eval()


def _peft(model, seed: int, r: int = 4, alpha: float = 8.0, targets="all-linear"):
    """A peft LoRA model over a copy of ``model`` (peft rewrites the modules it wraps); its lora_A
    peft's own init under ``seed``, its lora_B random."""
    from peft import LoraConfig, get_peft_model

    torch.manual_seed(seed)
    config = LoraConfig(r=r, lora_alpha=alpha, lora_dropout=0.0, target_modules=targets,
                        task_type="CAUSAL_LM")
    return _random_lora(get_peft_model(copy.deepcopy(model), config), seed)


def _adapted(model, seed: int):
    """An AdaptedLM (LoRA r 4, alpha 8, on all-linear) over a copy of ``model``, as :func:`_peft`; its
    state_dict is what an adapted run saves, keys under ``net.``."""
    from aigc.pretrained.adapt import AdaptedLM

    torch.manual_seed(seed)
    return _random_lora(AdaptedLM(copy.deepcopy(model), "lora", r=4, alpha=8, dropout=0.0), seed)


def _lora_state(model, seed: int):
    """(state, alpha) of :func:`_adapted`: the arguments of ``with_lora``."""
    return _adapted(model, seed).state_dict(), 8


def _slot_logits(lm, seq, prefill: int):
    """Logits (B, steps, V) of prefilling seq[:, :prefill] and decoding the rest one token a step."""
    slots = lm.init_slots(seq.shape[0])
    first = lm.prefill_slots(seq[:, :prefill], slots, list(range(seq.shape[0])))
    steps = [lm.decode_slots(seq[:, t], slots) for t in range(prefill, seq.shape[1])]
    return torch.stack([first] + steps, dim=1)


@pytest.mark.parametrize("case", ["llama-tied", "qwen2-biases-window5-yarn", "gemma3"])
def test_an_adapter_decodes_as_peft_and_the_merged_model(case):
    from peft import get_peft_model_state_dict

    model = tiny_base(case)
    peft = _peft(model, seed=11)
    merged = copy.deepcopy(peft).merge_and_unload().eval()
    lm = FastLM.from_hf(model).with_lora(get_peft_model_state_dict(peft), alpha=8)
    seq = torch.randint(1, VOCAB, (2, 25), generator=torch.Generator().manual_seed(12))
    want = _hf_logits(peft, seq)
    got = _slot_logits(lm, seq, 20)  # prefill 20 (past every window), then 5 decode steps
    torch.testing.assert_close(got, want[:, 19:], atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(got, _hf_logits(merged, seq)[:, 19:], atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(lm(seq)[0], want, atol=1e-4, rtol=1e-4)  # forward: the reference path too
    assert (want - _hf_logits(model, seq)).abs().max() > 0.1, "the adapter changes the logits"
    assert lm.targets == ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")


def test_two_adapters_share_one_base_without_copying_it():
    from peft import get_peft_model_state_dict

    model = tiny_base("qwen2-biases-window5-yarn")
    before = {k: v.clone() for k, v in model.state_dict().items()}
    base = FastLM.from_hf(model)
    adapted = _adapted(model, seed=21)  # all-linear, rank 4, an adapted run's keys
    peft_1 = adapted.net
    peft_2 = _peft(model, seed=22, r=2, alpha=6.0, targets=["q_proj", "v_proj"])  # peft's default targets
    lm_1 = base.with_lora(adapted.state_dict(), alpha=8)
    lm_2 = base.with_lora(get_peft_model_state_dict(peft_2), alpha=6.0)
    assert lm_2.targets == ("q_proj", "v_proj")

    seq = torch.randint(1, VOCAB, (2, 16), generator=torch.Generator().manual_seed(23))
    slots = {lm: lm.init_slots(2) for lm in (base, lm_1, lm_2)}
    for lm, s in slots.items():
        lm.prefill_slots(seq[:, :10], s, [0, 1])
    got = {lm: [] for lm in slots}
    for t in range(10, 16):  # the three decode in turn, each in its own slot cache
        for lm, s in slots.items():
            got[lm].append(lm.decode_slots(seq[:, t], s))
    for lm, ref in ((base, model), (lm_1, peft_1), (lm_2, peft_2)):
        want = _hf_logits(ref, seq)[:, 10:]
        torch.testing.assert_close(torch.stack(got[lm], 1), want, atol=1e-4, rtol=1e-4)
    assert (torch.stack(got[lm_1], 1) - torch.stack(got[lm_2], 1)).abs().max() > 0.1

    # every tensor of the base's decode weights is the base's own, in place; the adapters add theirs
    w = slots[base].weights
    assert w is base._decode_weights(), "the base's weights were not regathered"
    for lm, ref in ((lm_1, peft_1), (lm_2, peft_2)):
        assert lm.hf is model and lm._decode_weights() is slots[lm].weights
        mine = slots[lm].weights
        assert mine.head.data_ptr() == w.head.data_ptr() and mine.norm.data_ptr() == w.norm.data_ptr()
        for ours, theirs in zip(mine.layers, w.layers):
            for field in _base_fields(theirs):
                a, b = getattr(ours, field), getattr(theirs, field)
                assert (a is None and b is None) or a.data_ptr() == b.data_ptr(), field
        # the adapter alone: peft's A and B, with B block-diagonal over a fused projection's parts
        lora_values = sum(p.numel() for name, p in ref.named_parameters() if "lora_" in name)
        assert lora_values < sum(t.numel() for t in lm._buffers.values()) < 2 * lora_values
    first = slots[lm_2].weights.layers[0]
    assert first.lora_qkv is not None and first.lora_o is None and first.lora_down is None  # q and v only
    assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items()), "the base is untouched"
    with pytest.raises(InvalidInput, match="already carries a LoRA adapter"):
        lm_1.with_lora(adapted.state_dict(), alpha=8)


def _base_fields(layer) -> list[str]:
    """The fields of a LayerWeights that hold the base's tensors (or None): all but the adapter's."""
    values = layer._asdict()
    return [f for f, v in values.items() if not f.startswith("lora_") and (v is None or torch.is_tensor(v))]


def test_greedy_decoding_of_an_adapter_equals_peft_generate():
    from peft import get_peft_model_state_dict

    model = tiny_base("llama-tied", 7)
    peft = _peft(model, seed=33)  # a seed whose greedy path is varied
    lm = FastLM.from_hf(model).with_lora(get_peft_model_state_dict(peft), alpha=8)
    tok = _tokenizer()
    context = [tok.eos_id] + tok.encode("w5 w9 w17 w33 w2")
    slot = _greedy(SlotRunner(lm, 2), context, tok, 12)
    forward = _greedy(ForwardRunner(lm, 2), context, tok, 12)
    with torch.no_grad():
        out = peft.generate(input_ids=torch.tensor([context]), max_new_tokens=12, do_sample=False,
                            eos_token_id=tok.eos_id, pad_token_id=tok.eos_id)
    generated = out[0, len(context) :].tolist()
    assert slot == forward == generated
    assert len(set(slot)) >= 4, "the greedy path is varied enough to tell decoders apart"
    assert slot != _greedy(SlotRunner(FastLM.from_hf(model), 2), context, tok, 12), "the adapter steers it"


def _other_base_state(**shape):
    """An adapter's state for a llama of TINY's shape but ``shape``."""
    import transformers

    other = transformers.LlamaConfig(**{**TINY, **shape})
    torch.manual_seed(0)
    return _lora_state(transformers.AutoModelForCausalLM.from_config(other), seed=0)[0]


@pytest.mark.parametrize("make_state, alpha, what", [
    (lambda: _other_base_state(hidden_size=48), 8,
     r"do not fit layer 0's q_proj, which needs \(r, 32\) and \(32, r\).*another base"),
    (lambda: _other_base_state(num_hidden_layers=3), 8,
     "is for layer 2, and this base has 2 layers.*another base"),
    (lambda: tiny_base("llama-tied").state_dict(), 8, "holds no LoRA weights .*'model.embed_tokens.weight'"),
    (lambda: {}, 8, "holds no LoRA weights"),
    (lambda: {k: v for k, v in _lora_state(tiny_base("llama-tied"), 0)[0].items() if "lora_B" not in k}, 8,
     "has layer 0's q_proj lora_A but not its lora_B"),
    (lambda: {**_lora_state(tiny_base("llama-tied"), 0)[0], "lm_head.lora_A.weight": torch.zeros(4, 32)}, 8,
     "1 weights FastLM cannot apply .*'lm_head.lora_A.weight'"),
    (lambda: _lora_state(tiny_base("llama-tied"), 0)[0], 0, "alpha must be a number > 0 .* got 0"),
])
def test_an_adapter_that_does_not_fit_is_refused(make_state, alpha, what):
    lm = FastLM.from_hf(tiny_base("llama-tied"))
    with pytest.raises(InvalidInput, match=what) as err:
        lm.with_lora(make_state(), alpha)
    assert "\n" not in str(err.value)


# -- weight formats: bfloat16, int8 and mixed copies of the matrices ------------------------------


def _rel_err(got, want):
    return float((got.float() - want.float()).abs().max() / want.float().abs().max())


@pytest.mark.parametrize("fmt, tol", [("bfloat16", 0.03), ("int8", 0.05), ("mixed", 0.05)])
@pytest.mark.parametrize("case", ["llama-tied", "qwen2-biases-window5-yarn", "gemma3"])
def test_each_weight_format_decodes_close_to_float(case, fmt, tol):
    model = tiny_base(case)
    seq = torch.randint(1, VOCAB, (2, 25), generator=torch.Generator().manual_seed(20))
    want = _slot_logits(FastLM.from_hf(model), seq, 20)
    lm = FastLM.from_hf(model, weights=fmt)
    got = _slot_logits(lm, seq, 20)
    assert got.dtype == want.dtype == torch.float32  # the stream and the cache stay in the base's dtype
    err = _rel_err(got, want)
    assert 0 < err < tol, f"{case} {fmt}: max error {err:.4f} of the largest logit"
    layer = lm._decode_weights().layers[0]
    if fmt == "bfloat16":
        assert layer.w_qkv.dtype == torch.bfloat16 and layer.q_qkv is None
    else:
        assert layer.q_qkv.dtype == torch.int8 and layer.s_qkv.shape == (layer.q_qkv.shape[0],)
        assert (layer.w_qkv is None) == (fmt == "int8")
    # LoRA on a quantized base: the adapter's deltas on top, close to the float base's adapter
    state, alpha = _lora_state(model, seed=21)
    float_lora = _slot_logits(FastLM.from_hf(model).with_lora(state, alpha), seq, 20)
    assert _rel_err(_slot_logits(lm.with_lora(state, alpha), seq, 20), float_lora) < tol


def test_mixed_reads_int8_for_a_few_rows_and_bfloat16_for_many():
    model = tiny_base("llama-tied")
    seq = torch.randint(1, VOCAB, (decoder.INT8_ROWS, 12), generator=torch.Generator().manual_seed(22))
    mixed, int8, bf16 = (FastLM.from_hf(model, weights=f) for f in ("mixed", "int8", "bfloat16"))
    # the two copies give different logits, so the checks below tell which one was read
    assert not torch.equal(_slot_logits(int8, seq[:1], 10), _slot_logits(bf16, seq[:1], 10))
    # a prefill's layers (10 tokens) read the bfloat16 copy: the same keys and values
    slots_m, slots_i, slots_b = mixed.init_slots(1), int8.init_slots(1), bf16.init_slots(1)
    mixed.prefill_slots(seq[:1, :10], slots_m, [0])
    bf16.prefill_slots(seq[:1, :10], slots_b, [0])
    assert torch.equal(slots_m.k, slots_b.k) and torch.equal(slots_m.v, slots_b.v)
    # one row's decode step reads the int8 copy: from the same cache, it is int8's step
    int8.prefill_slots(seq[:1, :10], slots_i, [0])
    slots_i.k.copy_(slots_m.k)
    slots_i.v.copy_(slots_m.v)
    assert torch.equal(mixed.decode_slots(seq[:1, 10], slots_m), int8.decode_slots(seq[:1, 10], slots_i))
    # INT8_ROWS rows decode on the bfloat16 copy
    assert torch.equal(_slot_logits(mixed, seq, 10), _slot_logits(bf16, seq, 10))


def test_int8_rows_decode_together_as_they_do_alone():
    model = tiny_base("qwen3-qknorm-untied")
    lm = FastLM.from_hf(model, weights="int8")
    g = torch.Generator().manual_seed(23)
    contexts = [torch.randint(1, VOCAB, (1, n), generator=g) for n in (9, 4, 7)]
    feed = torch.randint(1, VOCAB, (3, 3), generator=g)
    together = lm.init_slots(3)
    for r, ctx in enumerate(contexts):
        lm.prefill_slots(ctx, together, [r])
    batched = torch.stack([lm.decode_slots(feed[t], together) for t in range(3)])
    for r, ctx in enumerate(contexts):
        alone = lm.init_slots(1)
        lm.prefill_slots(ctx, alone, [0])
        solo = torch.stack([lm.decode_slots(feed[t, r : r + 1], alone)[0] for t in range(3)])
        torch.testing.assert_close(batched[:, r], solo, atol=1e-5, rtol=1e-5)


def test_an_unknown_weight_format_is_refused():
    with pytest.raises(InvalidInput, match="decode weights must be one of float, bfloat16, int8, mixed, got 'fp8'"):
        FastLM.from_hf(tiny_base("llama-tied"), weights="fp8")


def test_the_serving_default_is_mixed_on_a_cpu_and_float_elsewhere(monkeypatch):
    from aigc.runtime import ENV_DECODE_WEIGHTS, decode_weights

    monkeypatch.delenv(ENV_DECODE_WEIGHTS, raising=False)
    assert decode_weights("cpu") == "mixed" and decode_weights("cuda:0") == "float"
    monkeypatch.setenv(ENV_DECODE_WEIGHTS, "Float")
    assert decode_weights("cpu") == "float"
    monkeypatch.setenv(ENV_DECODE_WEIGHTS, "int4")
    with pytest.raises(InvalidInput, match=r"\$AIGC_DECODE_WEIGHTS must be one of float, bfloat16, int8, mixed"):
        decode_weights("cpu")
