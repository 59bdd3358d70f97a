"""Preference tuning (DPO on pairs, KTO on thumbs) of a LoRA on a tiny random llama, through the one
training loop: a planted preference (chosen responses say "good", rejected ones "bad") is learned
and holds on held-out prompts, the reference is the base itself and never moves, checkpoints hold
the adapters alone, and bad input is refused in one line."""

from __future__ import annotations

import pytest
import torch
from test_adapt import base_and_tokenizer
from test_bases import save_tiny

from aigc.errors import InvalidInput
from aigc.pretrained.adapt import AdaptedLM
from aigc.pretrained.formats import IGNORE_INDEX
from aigc.pretrained.preference import (
    PreferenceObjective,
    PreferencePair,
    PreferenceTask,
    Thumb,
    collate,
    dpo_loss,
    encode_response,
    kto_loss,
    kto_reference_point,
    thumbs_from_pairs,
)
from aigc.training import TrainConfig, fit

TRAIN_NOUNS = ["tea", "pan", "cup", "rug", "lamp", "desk", "sofa", "mug", "pot", "bowl", "fork", "vase"]
VAL_NOUNS = ["hat", "jar", "box", "pen", "map", "bag"]


def pairs(nouns: list[str]) -> list[PreferencePair]:
    return [PreferencePair(f"rate the {n}", f"the {n} is good", f"the {n} is bad") for n in nouns]


def objective(tmp_path, kind: str, beta: float = 0.1):
    torch.manual_seed(0)
    base, tok = base_and_tokenizer(tmp_path)
    return PreferenceObjective(AdaptedLM(base, "lora", r=4, alpha=8, dropout=0.0), kind, beta), tok


def base_logps(folder, task: PreferenceTask, rows) -> torch.Tensor:
    """The response log-probabilities under the saved base itself, no peft anywhere."""
    from transformers import AutoModelForCausalLM

    plain = AutoModelForCausalLM.from_pretrained(folder).eval()
    x, y = collate(rows, [0] * len(rows), task.pad_id)
    targets = y[:, 1:]
    with torch.no_grad():
        logp = torch.log_softmax(plain(input_ids=x).logits.float(), -1)
    token = logp.gather(-1, targets.clamp(min=0)[..., None]).squeeze(-1)
    return (token * (targets != IGNORE_INDEX)).sum(1)


CFG = dict(batch_size=8, lr=3e-2, warmup_steps=0, weight_decay=0.0, grad_clip=1.0)


def test_dpo_through_the_loop_learns_a_planted_preference_against_a_fixed_reference(tmp_path):
    model, tok = objective(tmp_path, "dpo", beta=0.5)
    model.adapted.base_weights = "float"  # compared with the float base below (on a bf16 CPU: a bf16 copy)
    task = PreferenceTask(tok, pairs(TRAIN_NOUNS), pairs(VAL_NOUNS), batch_size=8)
    before = task.measure(model)
    # LoRA's B starts at zero: the policy is the reference, every reward 0 and the loss log 2
    assert abs(before["reward_margin"]) < 1e-6 and before["loss"] == pytest.approx(0.6931, abs=1e-3)
    rows = task.val.first + task.val.second
    ref_before = task.response_logps(model, rows)[1]
    assert torch.allclose(ref_before, base_logps(tmp_path / "base", task, rows), atol=1e-4)
    state = fit(model, task, TrainConfig(max_steps=40, eval_every=20, **CFG), tmp_path / "run")
    after = task.measure(model)
    assert after["reward_margin"] > 0.5 and after["reward_accuracy"] > 0.8, after
    assert after["loss"] < before["loss"] - 0.2
    assert state.val_figures["val_reward_accuracy"] == after["reward_accuracy"]
    policy, ref_after = task.response_logps(model, rows)
    assert torch.equal(ref_after, ref_before)  # the reference is the base, untouched by training
    assert not torch.allclose(policy, ref_after, atol=1e-3)


def test_kto_raises_thumbs_up_and_lowers_thumbs_down_relative_to_the_reference(tmp_path):
    model, tok = objective(tmp_path, "kto", beta=0.5)
    task = PreferenceTask(tok, thumbs_from_pairs(pairs(TRAIN_NOUNS)), thumbs_from_pairs(pairs(VAL_NOUNS)),
                          batch_size=8)
    fit(model, task, TrainConfig(max_steps=40, eval_every=40, **CFG), tmp_path / "run")
    figures = task.measure(model)
    assert figures["up_reward"] > 0.1 and figures["down_reward"] < -0.1, figures
    assert figures["reward_accuracy"] > 0.8, figures


def test_checkpoints_hold_only_the_adapters_and_load_into_a_plain_adapted_model(tmp_path):
    from safetensors.torch import load_file

    model, tok = objective(tmp_path, "dpo", beta=0.5)
    task = PreferenceTask(tok, pairs(TRAIN_NOUNS[:4]), pairs(VAL_NOUNS[:2]), batch_size=4)
    fit(model, task, TrainConfig(max_steps=4, eval_every=2, **CFG), tmp_path / "run")
    saved = load_file(tmp_path / "run" / "model.safetensors")
    last = torch.load(tmp_path / "run" / "checkpoints" / "last.pt", map_location="cpu", weights_only=False)
    for state in (saved, last["model"]):
        assert state and all("lora_" in k for k in state)
        assert sum(v.numel() for v in state.values()) == model.adapted.trainable_parameters()
    fresh = AdaptedLM(base_and_tokenizer(tmp_path / "again")[0], "lora", r=4, alpha=8, dropout=0.0)
    fresh.load_state_dict(last["model"])
    x, y = collate(task.val.first, [1] * len(task.val.first), task.pad_id)
    model.eval()
    with torch.no_grad():
        assert torch.equal(fresh.eval()(x)[0], model.adapted(x)[0])


def test_the_losses_are_the_papers_formulas():
    pc, pr, rc, rr = torch.tensor([-3.0]), torch.tensor([-5.0]), torch.tensor([-4.0]), torch.tensor([-4.5])
    losses, chosen, rejected = dpo_loss(pc, pr, rc, rr, beta=0.2)
    expected = -torch.nn.functional.logsigmoid(torch.tensor(0.2 * (1.0 + 0.5)))
    assert losses.item() == pytest.approx(expected.item())
    assert chosen.item() == pytest.approx(0.2) and rejected.item() == pytest.approx(-0.1)
    z0 = kto_reference_point(torch.tensor([-2.0, -3.0]), torch.tensor([-2.5, -3.1]))
    assert z0.item() == pytest.approx(0.3)
    assert kto_reference_point(torch.tensor([-3.0]), torch.tensor([-2.0])).item() == 0  # clamped at 0
    losses, rewards = kto_loss(torch.tensor([-1.0, -1.0]), torch.tensor([-2.0, -2.0]),
                               torch.tensor([True, False]), z0, beta=0.1, desirable_weight=1.0,
                               undesirable_weight=2.0)
    s = torch.sigmoid(torch.tensor(0.1 * (1.0 - 0.3))).item()
    # up: 1 - sigmoid(beta (r - z0)); down, weighted 2: 1 - sigmoid(beta (z0 - r)) = sigmoid(beta (r - z0))
    assert losses.tolist() == pytest.approx([1 - s, 2 * s])
    assert rewards.tolist() == pytest.approx([0.1, 0.1])


def test_only_the_last_response_is_labelled_and_padding_is_at_the_end(tmp_path):
    _, tok = base_and_tokenizer(tmp_path)
    chat = [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "old"},
            {"role": "user", "content": "rate it"}]
    ids, labels = encode_response(tok, chat, "new")
    scored = tok.decode([t for t, label in zip(ids, labels) if label != IGNORE_INDEX])
    assert scored.replace(" ", "") == "new</s>"
    x, y = collate([(ids, labels), ([5, 6, 7], [IGNORE_INDEX, 6, 7])], [1, 0], pad_id=2)
    assert x.shape == (2, len(ids) - 1) and y.shape == (2, len(ids))
    assert y[:, 0].tolist() == [1, 0] and x[1, 2:].eq(2).all() and y[1, 3:].eq(IGNORE_INDEX).all()
    assert y[1, 1:3].tolist() == [6, 7]


def test_bad_input_is_refused_in_one_line(tmp_path):
    base, tok = base_and_tokenizer(tmp_path)
    adapted = AdaptedLM(base, "lora", r=4, alpha=8)
    cases = [
        (lambda: PreferenceTask(tok, [], []), "the train split has no preference examples"),
        (lambda: PreferenceTask(tok, [Thumb("a", "b", True)] * 3, []),
         "KTO needs both thumbs up and thumbs down: got only up"),
        (lambda: PreferenceTask(tok, [Thumb("a", "b", False)] * 3, []), "got only down"),
        (lambda: PreferenceTask(tok, [PreferencePair("rate it", " ", "bad")], []),
         "train pair 1: the chosen response is empty"),
        (lambda: PreferenceTask(tok, [PreferencePair("", "good", "bad")], []),
         "train pair 1: the prompt is empty"),
        (lambda: PreferenceTask(tok, [Thumb("a", "b", True), Thumb("a", "", False)], []),
         "train thumb 2: the response is empty"),
        (lambda: PreferenceTask(tok, [PreferencePair("a", "same", "same")], []), "are the same text"),
        (lambda: PreferenceTask(tok, pairs(["tea"]), thumbs_from_pairs(pairs(["pan"]))), "val split is not"),
        (lambda: PreferenceTask(tok, [PreferencePair([{"role": "user", "content": "a"}, {"role": "assistant",
                                                       "content": "b"}], "c", "d")], []),
         "end them with the user turn"),
        (lambda: PreferenceTask(tok, thumbs_from_pairs(pairs(["tea"])), [], batch_size=1), "batch_size >= 2"),
        (lambda: PreferenceTask(tok, pairs(["tea"]), [], max_length=8), "no response token is left"),
        (lambda: PreferenceObjective(adapted, "dpo", beta=0), "beta must be a number > 0, got 0"),
        (lambda: PreferenceObjective(adapted, "dpo", beta=-0.1), "beta must be a number > 0"),
        (lambda: PreferenceObjective(adapted, "ipo"), "must be one of dpo, kto, got 'ipo'"),
        (lambda: PreferenceObjective(AdaptedLM(save_tiny(tmp_path / "full"), "full")),
         "needs a base adapted with LoRA"),
    ]
    for make, message in cases:
        with pytest.raises(InvalidInput, match=message) as err:
            make()
        assert "\n" not in str(err.value), str(err.value)


def test_kto_batches_hold_both_thumbs_and_a_mismatched_row_per_thumb(tmp_path):
    _, tok = base_and_tokenizer(tmp_path)
    thumbs = [Thumb(f"rate the {n}", f"the {n} is good", True) for n in TRAIN_NOUNS]
    thumbs.append(Thumb("rate the hat", "the hat is bad", False))  # one down among twelve up
    task = PreferenceTask(tok, thumbs, [], batch_size=4)
    g = torch.Generator().manual_seed(0)
    for _ in range(20):
        x, y = task.batch(g)
        roles = y[:, 0].tolist()
        assert sorted(roles[:4])[0] == 0 and sorted(roles[:4])[-1] == 1 and roles[4:] == [2] * 4
    # a mismatched row answers its thumb's prompt with another prompt's response
    prompt = tok.decode(task.train.second[0][0]).replace(" ", "")
    assert prompt.startswith("<user>ratethetea") and "thepanisgood" in prompt
    assert task.evaluate(None) is None  # no val split: no validation loss
