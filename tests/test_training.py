"""The training loop: resume after an interrupt is exact, checkpoints are atomic, budgets stop it."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

import aigc
from aigc.checkpoints import atomic_save
from aigc.training import TrainConfig, lr_at, parse_duration
from helpers import write_corpus


@pytest.fixture()
def corpus_ws(tmp_path):
    ws = aigc.open_workspace(tmp_path / "ws")
    aigc.ingest(write_corpus(tmp_path / "corpus.txt"), "corpus", workspace=ws)
    return ws


class InterruptAt:
    """Sends this process SIGINT after step ``n``, as a user pressing Ctrl-C would."""

    def __init__(self, n: int):
        self.n = n

    def on_step(self, state):
        if state.step == self.n:
            os.kill(os.getpid(), signal.SIGINT)


def _weights(ws, name):
    ckpt = torch.load(Path(ws.get_run(name)["path"]) / "checkpoints" / "last.pt", weights_only=False)
    return ckpt["model"]


def test_resume_after_ctrl_c_matches_an_uninterrupted_run(corpus_ws):
    opts = dict(family="gpt", preset="tiny", max_steps=30, eval_every=10, seed=7, workspace=corpus_ws)
    aigc.train("corpus", name="straight", **opts)
    row = aigc.train("corpus", name="cut", callbacks=[InterruptAt(13)], **opts)
    assert row["status"] == "interrupted" and row["step"] == 13
    row = aigc.resume("cut", workspace=corpus_ws)
    assert row["status"] == "finished" and row["step"] == 30
    a, b = _weights(corpus_ws, "straight"), _weights(corpus_ws, "cut")
    assert all(torch.equal(a[k], b[k]) for k in a), "optimizer, data order and RNG state were restored"


def test_a_checkpoint_interrupted_while_writing_leaves_the_previous_one(tmp_path, monkeypatch):
    path = tmp_path / "last.pt"
    atomic_save({"step": 1}, path)

    def dying_save(obj, f, *a, **k):
        Path(f).write_bytes(b"half a checkpoint")
        raise KeyboardInterrupt  # the process dies mid-write

    monkeypatch.setattr(torch, "save", dying_save)
    with pytest.raises(KeyboardInterrupt):
        atomic_save({"step": 2}, path)
    monkeypatch.undo()
    assert torch.load(path)["step"] == 1
    assert [p.name for p in tmp_path.iterdir()] == ["last.pt"]


def test_killed_training_process_resumes_from_its_last_checkpoint(corpus_ws):
    env = {**os.environ, "AIGC_HOME": str(corpus_ws.root), "AIGC_THREADS": "1"}
    cmd = [sys.executable, "-m", "aigc.cli.main", "train", "corpus", "--family", "lstm", "--preset", "tiny",
           "--name", "killed", "--max-steps", "100000", "--eval-every", "5"]
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    last = corpus_ws.root / "runs" / "killed" / "checkpoints" / "last.pt"
    deadline = time.time() + 120
    while time.time() < deadline and not last.exists():
        time.sleep(0.2)
    time.sleep(1.0)  # let it get further, possibly into the middle of another checkpoint
    proc.kill()  # SIGKILL: no handler runs
    proc.wait()
    assert last.exists(), proc.stderr.read().decode()
    step = torch.load(last, weights_only=False)["state"]["step"]
    assert step >= 5
    row = aigc.resume("killed", workspace=corpus_ws, max_steps=step + 10)
    assert row["status"] == "finished" and row["step"] == step + 10


def test_time_budget_stops_training_and_drives_the_schedule(corpus_ws):
    row = aigc.train("corpus", family="gpt", preset="tiny", name="budget", workspace=corpus_ws,
                     max_steps=10**6, time_budget="2s", eval_every=50)
    assert row["summary"]["stop_reason"] == "time_budget"
    # The loop stops once the next step and the closing validations would not end within the budget
    # (their time is kept in reserve), so what it reports is somewhat under 2 s, never far over.
    assert 1.0 <= row["summary"]["elapsed_s"] < 6
    cfg = TrainConfig(max_steps=10**6, time_budget=100, warmup_steps=1, lr=1.0, min_lr_ratio=0.1)
    assert lr_at(cfg, 10, 0.0) == pytest.approx(1.0, abs=1e-3)
    assert lr_at(cfg, 10, 50.0) == pytest.approx(0.55, abs=1e-3)  # halfway through the clock
    assert lr_at(cfg, 10, 100.0) == pytest.approx(0.1)
    slow = TrainConfig(max_steps=10**6, time_budget=100, warmup_steps=1000, lr=1.0)
    assert lr_at(slow, 10, 4.0) == pytest.approx(0.2, abs=0.01)  # 4 s of the 20 s warm-up share
    # warm after 20 % of the budget; the cosine has decayed to 0.1 + 0.45 * (1 + cos(0.2 pi)) by then
    assert lr_at(slow, 10, 20.0) == pytest.approx(0.914, abs=0.001)


def test_early_stopping_and_best_weights(corpus_ws):
    # At a vanishing learning rate validation cannot improve, so patience ends the run.
    row = aigc.train("corpus", family="gpt", preset="tiny", name="early", workspace=corpus_ws, max_steps=400,
                     eval_every=5, patience=3, lr=1e-9, warmup_steps=1)
    assert row["summary"]["stop_reason"] == "early_stopping"
    assert row["step"] == 20  # 4 validations: the first sets the best, 3 more fail to improve
    run = Path(row["path"])
    assert load_file(run / "model.safetensors"), "the best weights are kept"


def test_parse_duration():
    assert parse_duration("90") == 90 and parse_duration("5m") == 300 and parse_duration("1.5h") == 5400
    with pytest.raises(aigc.InvalidInput, match="300s, 5m"):
        parse_duration("soon")


def test_weights_round_trip_with_packed_and_tied_tensors(tmp_path):
    """On CUDA, cuDNN packs an LSTM's weights into one flat buffer (views that safetensors'
    save_model refuses); tied weights share one tensor. Both must save and load back."""
    from torch import nn

    from aigc.checkpoints import load_weights, save_weights

    class Packed(nn.Module):
        def __init__(self):
            super().__init__()
            flat = torch.randn(10)
            self.a, self.b = nn.Parameter(flat[:4]), nn.Parameter(flat[4:])  # views of one storage
            self.emb = nn.Linear(3, 2, bias=False)
            self.head = nn.Linear(3, 2, bias=False)
            self.head.weight = self.emb.weight  # tied

    src, dst = Packed(), Packed()
    save_weights(src, tmp_path / "w.safetensors")
    load_weights(dst, tmp_path / "w.safetensors")
    for name, t in src.state_dict().items():
        assert torch.equal(dst.state_dict()[name], t), name
    assert dst.head.weight is dst.emb.weight
    with pytest.raises(RuntimeError, match="does not fit the model"):
        load_weights(nn.Linear(3, 2), tmp_path / "w.safetensors")


class _NanLossAfter:
    """Wraps GPT.forward so that the training loss turns NaN from the n-th training call on,
    as a learning rate far too high makes it do (the NaN gradients then poison the weights)."""

    def __init__(self, monkeypatch, n: int):
        from aigc.models.gpt import GPT

        self.calls = 0
        original = GPT.forward

        def forward(model, idx, targets=None):
            logits, loss = original(model, idx, targets)
            if targets is not None:
                self.calls += 1
                if self.calls >= n:
                    loss = loss * float("nan")
            return logits, loss

        monkeypatch.setattr(GPT, "forward", forward)


def test_a_diverging_run_stops_keeps_its_last_good_weights_and_exports_nothing(corpus_ws, monkeypatch):
    _NanLossAfter(monkeypatch, 25)
    with pytest.raises(aigc.AigcError, match=r"^training diverged at step 25 \(loss nan\): the run keeps the "
                                             r"weights of step 20.*lower --lr \(it was 0\.01\)"):
        aigc.train("corpus", family="gpt", preset="tiny", name="nan", workspace=corpus_ws, max_steps=40,
                   eval_every=10)
    row = corpus_ws.get_run("nan")
    run = Path(row["path"])
    assert row["status"] == "failed"
    assert not (run / "export").exists(), "no export from diverged weights"
    ckpt = torch.load(run / "checkpoints" / "last.pt", weights_only=False)
    assert ckpt["state"]["step"] == 20
    best = load_file(run / "model.safetensors")
    assert all(torch.isfinite(t).all() for t in best.values())
    assert all(torch.isfinite(t).all() for t in ckpt["model"].values() if t.is_floating_point())
    # With a sane loss again (a lower --lr), the run continues from its last good step.
    monkeypatch.undo()
    row = aigc.resume("nan", workspace=corpus_ws, lr=1e-3)
    assert row["status"] == "finished" and row["step"] == 40 and (run / "export").is_dir()


def test_a_nan_validation_loss_is_divergence_not_a_missing_loss(corpus_ws, monkeypatch):
    from aigc.tasks import TextLMTask

    original, calls = TextLMTask.evaluate, []

    def evaluate(task, model, full=False):
        calls.append(full)
        return float("nan") if len(calls) == 2 else original(task, model, full)

    monkeypatch.setattr(TextLMTask, "evaluate", evaluate)
    with pytest.raises(aigc.AigcError, match=r"diverged at step 20 \(validation loss nan\).*weights of step 10"):
        aigc.train("corpus", family="gpt", preset="tiny", name="nanval", workspace=corpus_ws, max_steps=40,
                   eval_every=10)
    run = Path(corpus_ws.get_run("nanval")["path"])
    assert corpus_ws.get_run("nanval")["status"] == "failed"
    assert torch.load(run / "checkpoints" / "last.pt", weights_only=False)["state"]["step"] == 10
    best = load_file(run / "model.safetensors")
    assert all(torch.isfinite(t).all() for t in best.values())


def test_divergence_before_the_first_validation_leaves_no_run(corpus_ws, monkeypatch):
    from typer.testing import CliRunner

    from aigc.cli.main import app

    _NanLossAfter(monkeypatch, 3)
    r = CliRunner().invoke(app, ["train", "corpus", "--preset", "tiny", "--name", "early-nan", "--max-steps", "40",
                                 "--eval-every", "10", "-w", str(corpus_ws.root)])
    assert r.exit_code == 2, r.output
    assert r.stderr.strip().splitlines()[-1] == ("error: training diverged at step 3 (loss nan) before its first "
                                                 "validation: train again with a lower --lr (it was 0.01)")
    assert not corpus_ws.has_run("early-nan")


def test_resume_survives_a_torn_last_metrics_line(corpus_ws):
    opts = dict(family="gpt", preset="tiny", max_steps=30, eval_every=10, seed=7, workspace=corpus_ws)
    row = aigc.train("corpus", name="torn", callbacks=[InterruptAt(13)], **opts)
    assert row["status"] == "interrupted"
    metrics = Path(row["path"]) / "metrics.jsonl"
    with open(metrics, "a", encoding="utf-8") as f:
        f.write('{"step": 20, "time": 1.')  # killed in the middle of a write
    row = aigc.resume("torn", workspace=corpus_ws)
    assert row["status"] == "finished" and row["step"] == 30
    rows = [json.loads(line) for line in metrics.read_text(encoding="utf-8").splitlines()]
    train_steps = [r["step"] for r in rows if "train_loss" in r]
    assert train_steps == [10, 20, 30], "the torn row is gone and no row is logged twice"


def test_the_time_budget_counts_the_setup_and_keeps_room_for_the_final_validation(corpus_ws, monkeypatch):
    from aigc import runs

    prepare = runs._prepare

    def slow_prepare(*args, **kwargs):  # a setup (reading data, fitting a tokenizer) that takes 1.5 s
        time.sleep(1.5)
        return prepare(*args, **kwargs)

    monkeypatch.setattr(runs, "_prepare", slow_prepare)
    t0 = time.perf_counter()
    row = aigc.train("corpus", family="gpt", preset="tiny", name="setup", workspace=corpus_ws,
                     time_budget="3s", eval_every=20)
    wall = time.perf_counter() - t0
    assert row["summary"]["stop_reason"] == "time_budget"
    assert row["summary"]["elapsed_s"] >= 2.5  # the setup's 1.5 s are part of what was spent
    assert wall < 3 + 1.0  # the loop alone for 3 s would make it 4.5 s and more


def test_a_time_budget_without_max_steps_governs_alone(corpus_ws):
    from aigc.models.registry import get_family
    from aigc.runs import train_config_for

    gpt = get_family("gpt")
    assert gpt.TRAIN_DEFAULTS["tiny"]["max_steps"] == 40
    assert train_config_for(gpt, "tiny", {"time_budget": 3.0}).max_steps == 0
    assert train_config_for(gpt, "tiny", {"time_budget": 3.0, "max_steps": 7}).max_steps == 7
    with pytest.raises(aigc.InvalidInput, match="--max-steps must be >= 1"):
        train_config_for(gpt, "tiny", {"max_steps": 0})
    # The tiny preset stops at 40 steps; a 3 s budget makes several times as many on one thread.
    row = aigc.train("corpus", family="gpt", preset="tiny", name="budgeted", workspace=corpus_ws, time_budget="3s",
                     eval_every=10**6)
    assert row["summary"]["stop_reason"] == "time_budget" and row["step"] > 40


def test_resume_from_a_damaged_checkpoint_or_run_file_is_one_clear_error(corpus_ws):
    row = aigc.train("corpus", family="gpt", preset="tiny", name="damaged", workspace=corpus_ws, max_steps=4)
    run = Path(row["path"])
    last = run / "checkpoints" / "last.pt"
    last.write_bytes(last.read_bytes()[:100])
    with pytest.raises(aigc.InvalidInput, match=r"last\.pt is damaged .*train it again"):
        aigc.resume("damaged", workspace=corpus_ws, max_steps=8)
    (run / "run.json").write_text('{"name": "dam', encoding="utf-8")
    with pytest.raises(aigc.InvalidInput, match=r"run\.json is damaged \(not JSON\)"):
        aigc.resume("damaged", workspace=corpus_ws, max_steps=8)


@pytest.mark.parametrize("native", [True, False])
def test_a_family_that_asks_for_cpu_bf16_gets_it_where_the_cpu_has_it_and_only_there(monkeypatch, native):
    """Diffusion (cpu_bf16) trains under bf16 autocast on a CPU with native bf16, recorded in the
    run's training config; float32 elsewhere, on request (--precision 32-true) and for the other
    families."""
    import aigc.runtime as runtime
    from aigc.models.registry import get_family
    from aigc.runs import train_config_for

    monkeypatch.setattr(runtime, "cpu_has_bf16", lambda: native)
    monkeypatch.setattr(runtime, "default_device", lambda: "cpu")
    diffusion, gpt = get_family("diffusion"), get_family("gpt")
    assert diffusion.cpu_bf16 and not getattr(gpt, "cpu_bf16", False)
    assert train_config_for(diffusion, "small", {}).precision == ("bf16-mixed" if native else "")
    assert runtime.default_precision("cpu", cpu_bf16=True) == ("bf16-mixed" if native else "32-true")
    assert train_config_for(diffusion, "small", {"precision": "32-true"}).precision == "32-true"
    assert train_config_for(gpt, "tiny", {}).precision == ""
    assert runtime.default_precision("cpu") == "32-true"
