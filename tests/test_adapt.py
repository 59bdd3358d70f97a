"""Adapting a base (issue 12, part 2, the model half): LoRA under the one training loop lowers the
response loss, its checkpoints hold the adapters alone, save -> load gives identical outputs,
and the merged model equals the adapted one."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from test_bases import _tokenizer, save_tiny

from aigc.data.dataset import TextRecord
from aigc.errors import InvalidInput
from aigc.pretrained.adapt import AdaptedLM, SFTTask, build_blocks
from aigc.pretrained.formats import records_to_chats
from aigc.training import TrainConfig, fit


def base_and_tokenizer(tmp_path):
    from transformers import AutoModelForCausalLM

    save_tiny(tmp_path / "base")
    return AutoModelForCausalLM.from_pretrained(tmp_path / "base"), _tokenizer(
        "{% for m in messages %}<{{ m['role'] }}>{{ m['content'] }}{% if m['role'] == 'assistant' %}{{ eos_token }}{% endif %}\n"
        "{% endfor %}{% if add_generation_prompt %}<assistant>{% endif %}")


def records(n: int, seed: int) -> list[TextRecord]:
    g = torch.Generator().manual_seed(seed)
    words = {"tea": "leaves steep hot", "pan": "iron sear oil"}
    out = []
    for i in range(n):
        topic = ("tea", "pan")[int(torch.randint(0, 2, (1,), generator=g))]
        out.append(TextRecord(f"{words[topic]} {'ab'[i % 2]}", {"topic": topic}))
    return out


def test_lora_through_the_loop_lowers_the_response_loss_and_saves_only_adapters(tmp_path):
    torch.manual_seed(0)
    base, tok = base_and_tokenizer(tmp_path)
    model = AdaptedLM(base, "lora", r=4, alpha=8, dropout=0.0)
    total = sum(p.numel() for p in model.parameters())
    assert 0 < model.trainable_parameters() < total / 5  # the base is frozen
    template = "write about {topic}"
    train = build_blocks(tok, records_to_chats(records(64, 1), template), block_size=32)
    val = build_blocks(tok, records_to_chats(records(16, 2), template), block_size=32)
    assert (val[1] != -100).any() and (val[1] == -100).any()  # responses scored, prompts not
    task = SFTTask(train, val, batch_size=8)
    before = task.evaluate(model)
    cfg = TrainConfig(max_steps=60, batch_size=8, lr=3e-2, warmup_steps=0, eval_every=60, weight_decay=0.0)
    fit(model, task, cfg, tmp_path / "run")
    after = task.evaluate(model)
    assert after < before - 0.3, (before, after)  # a frozen random 16-wide base: LoRA moves it slowly
    # the best weights and the checkpoint hold the adapters, not the base
    from safetensors.torch import load_file

    saved = load_file(tmp_path / "run" / "model.safetensors")
    assert saved and all("lora_" in k for k in saved)
    assert sum(v.numel() for v in saved.values()) == model.trainable_parameters()


def test_adapter_save_load_and_merge_give_the_same_outputs(tmp_path):
    torch.manual_seed(0)
    base, _ = base_and_tokenizer(tmp_path)
    model = AdaptedLM(base, "lora", r=4, alpha=8, dropout=0.0).eval()
    with torch.no_grad():  # LoRA's B starts at zero: move it so the adapters change the outputs
        for name, p in model.named_parameters():
            if "lora_B" in name:
                p.normal_(0, 0.5)
    ids = torch.tensor([[3, 4, 5, 6, 7, 8]])
    with torch.no_grad():
        adapted, _ = model(ids)
        with model.net.disable_adapter():
            plain = model.net(input_ids=ids).logits
        assert not torch.allclose(adapted, plain, atol=1e-3)  # the adapters do change the outputs
        merged = model.merged()(ids).logits
    assert torch.allclose(adapted, merged, atol=1e-5)
    state = model.state_dict()
    other = AdaptedLM(base_and_tokenizer(tmp_path / "again")[0], "lora", r=4, alpha=8, dropout=0.0).eval()
    other.load_state_dict(state)
    with torch.no_grad():
        assert torch.equal(other(ids)[0], adapted)
    with pytest.raises(InvalidInput, match="do not fit this base and LoRA setting"):
        AdaptedLM(base_and_tokenizer(tmp_path / "r8")[0], "lora", r=8, alpha=8).load_state_dict(
            {k + ".x": v for k, v in state.items()})


def test_bad_methods_and_lora_settings_are_refused(tmp_path):
    base, _ = base_and_tokenizer(tmp_path)
    with pytest.raises(InvalidInput, match="--method must be one of lora, full, got 'qlora'"):
        AdaptedLM(base, "qlora")
    with pytest.raises(InvalidInput, match="LoRA needs rank >= 1"):
        AdaptedLM(base, "lora", r=0)
    with pytest.raises(InvalidInput, match="LoRA cannot wrap this base"):
        AdaptedLM(base, "lora", target_modules=["no_such_layer"])


@pytest.mark.parametrize("case", ["llama-tied", "qwen2-biases-window5-yarn", "qwen3-qknorm-untied", "gemma3"])
def test_the_fused_lora_forward_gives_peft_s_loss_and_gradients(case):
    """AdaptedLM trains LoRA on a llama-family base through FastLM.lora_hidden (q/k/v and gate/up
    fused): the same loss and the same adapter gradients as peft's own forward."""
    from test_pretrained_decoder import VOCAB, tiny_base

    torch.manual_seed(0)
    model = AdaptedLM(tiny_base(case), "lora", r=4, alpha=8, dropout=0.0)
    model.base_weights = "float"  # exact: the default on a CPU with native bf16 is a bfloat16 copy (tested below)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "lora_B" in name:
                p.normal_(0, 0.3)
    assert model._fused_decoder() is not None
    g = torch.Generator().manual_seed(1)
    ids = torch.randint(1, VOCAB, (3, 20), generator=g)  # past every sliding window
    targets = torch.randint(1, VOCAB, (3, 20), generator=g)
    targets[:, :6] = -100  # a prompt: no loss there
    results = []
    for fused in (True, False):
        model.fused = fused
        model.zero_grad()
        logits, loss = model(ids, targets)
        assert (logits is None) == fused  # the fused head keeps no logits
        loss.backward()
        grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.requires_grad}
        # per-token losses, weighted unevenly: the fused head's backward scales each row by its own gradient
        model.zero_grad()
        nll = model.token_nll(ids, targets)
        (nll * torch.linspace(0.5, 2.0, len(nll))).sum().backward()
        weighted = {n: p.grad.clone() for n, p in model.named_parameters() if p.requires_grad}
        results.append((nll.detach(), loss.item(), grads, weighted))
    (fn, floss, fgrads, fweighted), (pn, ploss, pgrads, pweighted) = results
    assert fn.shape == (3 * 14,)
    torch.testing.assert_close(fn, pn, atol=1e-5, rtol=1e-5)
    assert abs(floss - ploss) < 1e-5 and abs(floss - fn.mean().item()) < 1e-6
    for n in fweighted:
        torch.testing.assert_close(fweighted[n], pweighted[n], atol=1e-5, rtol=1e-4, msg=lambda m: f"{n}: {m}")
    assert set(fgrads) == set(pgrads) and len(fgrads) == 2 * 7 * 2  # A and B, 7 projections, 2 layers
    for n in fgrads:
        assert fgrads[n].abs().max() > 0, n
        torch.testing.assert_close(fgrads[n], pgrads[n], atol=1e-5, rtol=1e-4, msg=lambda m: f"{n}: {m}")


def _random_lora(base, dropout: float) -> AdaptedLM:
    """A LoRA (r 4, alpha 8) on ``base`` whose B matrices are random, not zero: the adapters act."""
    model = AdaptedLM(base, "lora", r=4, alpha=8, dropout=dropout)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "lora_B" in name:
                p.normal_(0, 0.3)
    return model


def test_the_fused_path_applies_lora_dropout_in_training_only_and_falls_back_where_it_cannot():
    from test_pretrained_decoder import VOCAB, tiny_base

    torch.manual_seed(0)
    ids = torch.randint(1, VOCAB, (2, 12), generator=torch.Generator().manual_seed(2))
    model = _random_lora(tiny_base("llama-tied"), dropout=0.5)
    model.eval()
    assert torch.equal(model.token_nll(ids, ids), model.token_nll(ids, ids))  # eval: no dropout
    model.train()
    assert not torch.equal(model.token_nll(ids, ids), model.token_nll(ids, ids))  # training: a fresh mask each time
    # an adapter on the head, or DoRA, or a full fine-tune: peft's own forward
    assert AdaptedLM(tiny_base("llama-tied"), "lora", r=4, target_modules=["q_proj", "lm_head"])._fused_decoder() is None
    from peft import LoraConfig, get_peft_model

    dora = get_peft_model(tiny_base("llama-tied"), LoraConfig(r=4, target_modules=["q_proj"], use_dora=True))
    from aigc.pretrained.decoder import FastLM

    assert not FastLM.lora_supported(dora.get_base_model())
    assert AdaptedLM(tiny_base("llama-tied"), "full")._fused_decoder() is None


def test_the_fused_path_s_lora_dropout_is_inverted_dropout_at_its_rate():
    """Each input element of an adapter is dropped with probability p and the adapter's delta keeps
    its expectation: the 1 / (1 - p) of inverted dropout is folded into B (a delta at half its size
    on average would mean the scale was lost)."""
    from test_pretrained_decoder import tiny_base

    from aigc.pretrained.decoder import _dropout, _live_lora

    torch.manual_seed(0)
    model = _random_lora(tiny_base("llama-tied"), dropout=0.5)
    layer = model._fused_decoder().hf.model.layers[0]
    dropped, kept = (_live_lora(layer, "qkv", on, torch.float32) for on in (True, False))
    assert dropped.dropout == 0.5 and kept.dropout == 0.0
    row = torch.randn(1, dropped.a.shape[0])
    x = row.expand(40_000, -1).contiguous()
    masked = _dropout(x, 0.5)
    assert abs((masked == 0).float().mean().item() - 0.5) < 0.01
    assert torch.equal(masked[masked != 0], x[masked != 0])  # the kept ones unscaled: B carries the scale
    want = (row @ kept.a) @ kept.b
    got = ((masked @ dropped.a) @ dropped.b).mean(0, keepdim=True)
    assert torch.allclose(got, want, atol=0.03 * want.abs().max().item())
    # the rate as asked: from random bytes where a 256th is close enough, else from 16-bit words
    for rate in (0.05, 0.01):
        assert abs((_dropout(x, rate) == 0).float().mean().item() - rate) < 0.1 * rate


def test_a_young_adapter_s_delta_is_not_lost_to_a_bfloat16_base():
    """Over a bfloat16 copy of the base, an adapter's delta (here a thousandth of the product) is
    added in float32: summed in bfloat16 most of its bits would go (bfloat16 keeps 8)."""
    from aigc.pretrained.decoder import LoraWeights, _project

    g = torch.Generator().manual_seed(0)
    x, w = torch.randn(64, 32, generator=g), torch.randn(32, 48, generator=g)
    a, b = torch.randn(32, 4, generator=g), torch.randn(4, 48, generator=g) * 1e-3
    want = (x @ a) @ b
    for base, lora in ((w, LoraWeights(a, b, 0.0)), (w.bfloat16(), LoraWeights(a.bfloat16(), b, 0.0))):
        got = _project(x, base, None, None, None, lora) - _project(x, base, None, None, None, None)
        assert got.dtype == torch.float32
        assert ((got - want).norm() / want.norm()).item() < 0.02


def test_the_fused_path_follows_peft_s_disable_adapter():
    """DPO's reference is the base with the adapters switched off (peft's disable_adapter): the
    fused forward must switch them off too."""
    from test_pretrained_decoder import VOCAB, tiny_base

    torch.manual_seed(0)
    model = AdaptedLM(tiny_base("llama-tied"), "lora", r=4, alpha=8, dropout=0.0).eval()
    model.base_weights = "float"
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "lora_B" in name:
                p.normal_(0, 0.3)
    ids = torch.randint(1, VOCAB, (2, 12), generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        adapted = model.token_nll(ids, ids)
        with model.net.disable_adapter():
            off = model.token_nll(ids, ids)
            model.fused = False
            want = model.token_nll(ids, ids)
    assert not torch.allclose(adapted, off, atol=1e-3)
    torch.testing.assert_close(off, want, atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("softcap", [None, 3.0])
def test_the_fused_head_gives_cross_entropy_s_losses_and_gradient_chunk_by_chunk(monkeypatch, softcap):
    """_HeadNLL (the head's loss, its gradient taken in the forward) against F.cross_entropy over the
    whole logits: the same per-row losses and the same gradient, across chunk boundaries (7 rows a
    chunk here), with Gemma's soft cap and without."""
    import aigc.pretrained.decoder as decoder

    monkeypatch.setattr(decoder, "HEAD_CHUNK_BYTES", 4 * 50 * 7)  # 7 rows of a 50-entry vocabulary
    g = torch.Generator().manual_seed(0)
    weight = torch.randn(50, 12, generator=g)
    targets = torch.randint(0, 50, (23,), generator=g)
    h = torch.randn(23, 12, generator=g, requires_grad=True)
    upstream = torch.rand(23, generator=g)

    nll = decoder._HeadNLL.apply(h, weight, targets, softcap)
    (nll * upstream).sum().backward()
    got, h.grad = h.grad, None
    logits = F.linear(h, weight)
    if softcap is not None:
        logits = torch.tanh(logits / softcap) * softcap
    want = F.cross_entropy(logits, targets, reduction="none")
    (want * upstream).sum().backward()
    torch.testing.assert_close(nll, want.detach(), atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(got, h.grad, atol=1e-5, rtol=1e-5)
    assert got.abs().max() > 0


def test_the_fused_path_trains_on_a_bfloat16_copy_of_the_base_close_to_float(monkeypatch):
    """On a CPU with native bf16 the frozen base's matrices are a bfloat16 copy (the adapters, their
    gradients and the loss stay float32): the loss and the adapters' gradients stay close to float's;
    elsewhere, or asked, float."""
    import aigc.runtime as runtime
    from test_pretrained_decoder import VOCAB, tiny_base

    torch.manual_seed(0)
    model = _random_lora(tiny_base("llama-tied"), dropout=0.0)
    param = next(model.parameters())
    monkeypatch.setattr(runtime, "cpu_has_bf16", lambda: False)
    assert model.base_format(param) == "float"
    monkeypatch.setattr(runtime, "cpu_has_bf16", lambda: True)
    assert model.base_format(param) == "bfloat16"
    g = torch.Generator().manual_seed(4)
    ids = torch.randint(1, VOCAB, (3, 16), generator=g)
    targets = torch.randint(1, VOCAB, (3, 16), generator=g)
    results = {}
    for fmt in ("float", "bfloat16"):
        model.base_weights = fmt
        assert model._fused_decoder().weights == fmt
        model.zero_grad()
        _, loss = model(ids, targets)
        loss.backward()
        results[fmt] = (loss.item(), torch.cat([p.grad.flatten() for p in model.parameters() if p.requires_grad]))
    (lf, gf), (lb, gb) = results["float"], results["bfloat16"]
    assert abs(lb - lf) < 0.01 * lf
    assert F.cosine_similarity(gf, gb, dim=0) > 0.99 and not torch.equal(gf, gb)
