"""Adapting a base (issue 12, part 2, the model half): LoRA under the one training loop lowers the
response loss, its checkpoints hold the adapters alone, save -> load gives identical outputs,
and the merged model equals the adapted one."""

from __future__ import annotations

import pytest
import torch
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
