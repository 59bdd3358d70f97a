"""Tuning from feedback (issue 12, part 5, offline): `aigc tune RUN --from-feedback` (or --pairs)
learns what users preferred with DPO on pairs or KTO on thumbs; the new run records its parent
and its feedback, prefers the chosen responses more than its parent did, serves and exports as a
LoRA run; bad input (no feedback, one kind of thumb, a run trained from scratch) is one line."""

from __future__ import annotations

import json

import pytest
import torch
from test_adapted_runs import tiny_shop_workspace
from typer.testing import CliRunner

import aigc
from aigc import logbook
from aigc.cli.main import app
from aigc.pretrained.formats import tokenize_chat

GOOD, BAD = "leaves steep hot", "iron sear oil"  # the planted preference: tea copy over pan copy, for any topic


@pytest.fixture(scope="module")
def ws(tmp_path_factory):
    root = tmp_path_factory.mktemp("tune")
    ws = tiny_shop_workspace(root)
    aigc.train("shop", base="tiny", name="p", prompt_template="write about {topic}", max_steps=20, lr=3e-2,
               batch_size=8, eval_every=20, adapt={"block_size": 96, "r": 4, "alpha": 8}, workspace=ws)
    return ws


def _margin(folder, tok_folder, topic: str) -> float:
    """log p(GOOD) - log p(BAD) as the answer to the run's instruction, by the exported model."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model, tok = AutoModelForCausalLM.from_pretrained(folder).eval(), AutoTokenizer.from_pretrained(tok_folder)
    out = []
    for answer in (GOOD, BAD):
        ex = tokenize_chat(tok, [{"role": "user", "content": f"write about {topic}"},
                                 {"role": "assistant", "content": answer}])
        ids, labels = torch.tensor([ex["input_ids"]]), torch.tensor([ex["labels"]])
        with torch.no_grad():
            logp = model(ids).logits[0, :-1].log_softmax(-1)
        target = labels[0, 1:]
        keep = target != -100
        out.append(float(logp[keep].gather(1, target[keep, None]).sum()))
    return out[0] - out[1]


def _log(ws, run, topic, texts):
    return logbook.record(ws, {"run": run, "kind": "text", "endpoint": "python", "prompt": "",
                               "options": {"cond": {"topic": topic}}, "output": {"texts": texts},
                               "status": "ok", "latency_ms": 1.0})


def test_dpo_from_logged_choices_raises_the_preferred_answer_and_the_run_serves(ws, monkeypatch):
    for i in range(12):
        topic = ("tea", "pan")[i % 2]
        gid = _log(ws, "p", topic, [BAD + " " + "xyzw"[i % 4], GOOD + " " + "xyzw"[i % 4]])
        logbook.add_choice(ws, gid, 1)  # a user picked the second sample
    row = aigc.adapted.tune(aigc.open_workspace(ws), "p", name="p-dpo", max_drift=0, train_overrides={
        "max_steps": 40, "lr": 3e-2, "eval_every": 20, "batch_size": 4})
    assert row["status"] == "finished" and row["family"] == "dpo"
    spec = json.loads((ws.run_path("p-dpo") / "run.json").read_text())
    assert spec["parent"] == "p" and spec["tune"]["learned_from"]["pairs"] == 12
    assert spec["adapt"]["r"] == 8  # the parent's rank 4 + the preference adapter's 4, as one LoRA
    # the copy guard compares its outputs with the parent's training text
    assert (ws.run_path("p-dpo") / "copy_index.npz").read_bytes() == (ws.run_path("p") / "copy_index.npz").read_bytes()
    for topic in ("tea", "pan"):
        before = _margin(ws.run_path("p") / "export", ws.run_path("p") / "export", topic)
        after = _margin(ws.run_path("p-dpo") / "export", ws.run_path("p-dpo") / "export", topic)
        assert after > before + 1.0, (topic, before, after)
    assert row["summary"]["val_reward_accuracy"] == 1.0
    monkeypatch.setenv("AIGC_DECODE_WEIGHTS", "float")  # the exact reference, compared with the export
    gen = aigc.load("p-dpo", workspace=ws)  # serves on the shared base like any LoRA run
    assert type(gen.model).__name__ == "LoraFastLM"
    ids = torch.tensor([gen.context_ids("", {"topic": "tea"})])
    from transformers import AutoModelForCausalLM

    merged = AutoModelForCausalLM.from_pretrained(ws.run_path("p-dpo") / "export").eval()
    with torch.no_grad():
        torch.testing.assert_close(gen.model(ids)[0], merged(ids).logits, atol=1e-4, rtol=1e-4)


def test_kto_from_a_pairs_file_and_bad_input(ws, tmp_path):
    cli = CliRunner()
    pairs = tmp_path / "pairs.jsonl"
    pairs.write_text("".join(json.dumps({"prompt": "", "cond": {"topic": t}, "chosen": GOOD + f" {i}",
                                         "rejected": BAD + f" {i}"}) + "\n"
                             for i, t in enumerate(["tea", "pan"] * 6)))
    result = cli.invoke(app, ["tune", "p", "--pairs", str(pairs), "--method", "kto", "--name", "p-kto",
                              "--max-steps", "30", "--lr", "3e-2", "--batch-size", "4", "--max-drift", "0",
                              "--workspace", str(ws.root)])
    assert result.exit_code == 0, result.output
    assert "p-kto finished" in result.output and "tuned from p" in result.output
    before = _margin(ws.run_path("p") / "export", ws.run_path("p") / "export", "tea")
    assert _margin(ws.run_path("p-kto") / "export", ws.run_path("p-kto") / "export", "tea") > before + 0.5
    aigc.train("shop", base="tiny", name="p2", max_steps=2, adapt={"block_size": 96}, workspace=ws)
    gid = _log(ws, "p2", "tea", [GOOD])  # one thumb up: no pair, one kind of thumb
    logbook.add_feedback(ws, gid, "up")
    for args, message in (
        (["q", "--from-feedback"], "unknown run 'q'"),
        (["p"], "--from-feedback (the ratings logged on RUN) or --pairs FILE"),
        (["p2", "--from-feedback", "--method", "dpo", "--name", "x1"], "DPO needs at least 2"),
        (["p2", "--from-feedback", "--name", "x2"], "KTO needs both thumbs up and thumbs down"),
        (["p", "--pairs", str(pairs), "--method", "ppo"], "--method must be one of auto, dpo, kto"),
        (["p-kto", "--pairs", str(pairs), "--beta", "0"], "--beta must be > 0"),
        (["p-kto", "--pairs", str(pairs), "--max-drift", "0.9"], "--max-drift must be a perplexity ratio > 1"),
    ):
        bad = cli.invoke(app, ["tune", *args, "--workspace", str(ws.root)])
        assert bad.exit_code == 2 and message in bad.output, (args, bad.output)
    assert not ws.has_run("x1") and not ws.has_run("x2")
    resumed = cli.invoke(app, ["train", "--resume", "p-kto", "--workspace", str(ws.root)])
    assert resumed.exit_code == 2 and "does not resume" in resumed.output


def _heldout_nll(ws, run: str) -> float:
    """Nats per response token of a run's export on the val conversations of the data "p" learned from."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from aigc.adapted import chats_of, read_spec
    from aigc.pretrained.adapt import build_blocks

    folder = ws.run_path(run) / "export"
    model, tok = AutoModelForCausalLM.from_pretrained(folder).eval(), AutoTokenizer.from_pretrained(folder)
    spec = read_spec(ws.run_path("p"))
    ids, labels = build_blocks(tok, chats_of(ws, spec, ws.run_path("p"))[1], spec["adapt"]["block_size"])
    with torch.no_grad():
        logits = model(ids[:, :-1]).logits
    return float(torch.nn.functional.cross_entropy(logits.flatten(0, 1), labels[:, 1:].flatten(), ignore_index=-100))


def test_the_drift_guard_keeps_held_out_perplexity_within_its_limit_across_tunings(ws):
    """Where the unguarded tuning takes the held-out perplexity past a limit (x1.03 here, against
    x1.01: the tiny base drifts little), the guarded one stops at the limit and keeps weights
    within it, as measured independently on the exports; a second tuning on top is held to the same
    limit relative to the first run, not to its parent (limits do not compound)."""
    import math

    w = aigc.open_workspace(ws)
    for i in range(12):
        topic = ("tea", "pan")[i % 2]
        gid = _log(ws, "p", topic, [BAD + " " + "xyzw"[i % 4], GOOD + " " + "xyzw"[i % 4]])
        logbook.add_choice(ws, gid, 1)
    steep = {"max_steps": 40, "lr": 1e-1, "eval_every": 2, "batch_size": 4, "warmup_steps": 0}
    free = aigc.adapted.tune(w, "p", name="g-free", max_drift=0, train_overrides=steep)
    root = _heldout_nll(ws, "p")
    assert math.exp(_heldout_nll(ws, "g-free") - root) > 1.02  # what the guard must prevent
    assert free["summary"]["stop_reason"] == "max_steps" and "val_drift" not in free["summary"]

    row = aigc.adapted.tune(w, "p", name="g1", max_drift=1.01, train_overrides={**steep, "veto_backoffs": 0})
    spec = json.loads((ws.run_path("g1") / "run.json").read_text())
    drift = spec["tune"]["drift"]
    assert row["status"] == "finished" and row["summary"]["stop_reason"] == "drift" and row["step"] < 40
    assert drift["root"] == "p" and drift["max_ratio"] == 1.01 and drift["conversations"] >= 1
    measured = math.exp(_heldout_nll(ws, "g1") - root)
    assert measured <= 1.01 and abs(measured - row["summary"]["val_drift"]) < 0.003, (measured, row["summary"])
    assert abs(drift["root_nll"] - root) < 0.01

    # with back-offs (tune's default), a veto goes back to the kept weights and on at half the lr
    back = aigc.adapted.tune(w, "p", name="g-back", max_drift=1.01, train_overrides=steep)
    rows = [json.loads(line) for line in (ws.run_path("g-back") / "metrics.jsonl").read_text().splitlines()]
    assert [r["lr_scale"] for r in rows if "backoff" in r][:1] == [0.5] and back["step"] > row["step"]
    assert math.exp(_heldout_nll(ws, "g-back") - root) <= 1.01

    gid = _log(ws, "g1", "tea", [BAD + " q", GOOD + " q"])
    logbook.add_choice(ws, gid, 1)
    gid = _log(ws, "g1", "pan", [BAD + " r", GOOD + " r"])
    logbook.add_choice(ws, gid, 1)
    row2 = aigc.adapted.tune(w, "g1", name="g2", max_drift=1.01, train_overrides=steep)
    drift2 = json.loads((ws.run_path("g2") / "run.json").read_text())["tune"]["drift"]
    assert drift2["root"] == "p" and drift2["root_nll"] == drift["root_nll"]  # relative to p, not to g1
    assert math.exp(_heldout_nll(ws, "g2") - root) <= 1.01, row2["summary"]
