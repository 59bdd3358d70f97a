"""Training on several processes: Fabric DDP on gloo, 2 CPU processes of one thread each.

Each multi-process run is a subprocess, mostly a real ``aigc train`` (Fabric's launcher runs the
command line again for rank 1; torchrun starts both "nodes" on loopback), since a launcher
cannot re-run pytest. The catalog of these runs is their workspace's own SQLite file.
"""

from __future__ import annotations

import json
import os
import runpy
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest
import torch

import aigc
from helpers import run_cli, write_corpus

pytestmark = pytest.mark.slow
RUN = ["--preset", "tiny", "--max-steps", "3", "--eval-every", "3", "--seed", "7"]


def _env() -> dict[str, str]:
    env = {**os.environ, "AIGC_THREADS": "1", "OMP_NUM_THREADS": "1"}
    env.pop("AIGC_DB_URL", None)  # the workspace's own SQLite catalog, whatever database the suite tests
    return env


def _train(root: Path, *args: str, launcher: tuple[str, ...] = ("-m",)) -> list[str]:
    return [sys.executable, *launcher, "aigc.cli.main", "train", "corpus", *args, "--workspace", str(root)]


def _resume(root: Path, name: str, *args: str) -> list[str]:
    return [sys.executable, "-m", "aigc.cli.main", "train", "--resume", name, *args, "--workspace", str(root)]


def _workspace(root: Path):
    ws = aigc.open_workspace(root)
    aigc.ingest(write_corpus(root.parent / "corpus.txt"), "corpus", workspace=ws)
    return ws


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> tuple[Path, subprocess.CompletedProcess]:
    """A workspace where "two" trained on 2 processes at batch 4, "one" on 1 process at batch 8."""
    root = tmp_path_factory.mktemp("ddp") / "ws"
    with pytest.MonkeyPatch.context() as mp:
        mp.delenv("AIGC_DB_URL", raising=False)
        ws = _workspace(root)
        two = subprocess.run(_train(root, *RUN, "--name", "two", "--batch-size", "4", "--devices", "2"),
                             env=_env(), capture_output=True, text=True, timeout=300)
        assert two.returncode == 0, two.stderr
        aigc.train("corpus", family="gpt", preset="tiny", name="one", workspace=ws, max_steps=3, eval_every=3,
                   seed=7, batch_size=8)
    return root, two


@pytest.fixture()
def ws(trained, monkeypatch):
    monkeypatch.delenv("AIGC_DB_URL", raising=False)
    return aigc.open_workspace(trained[0])


def _last(ws, name: str) -> dict:
    return torch.load(ws.run_path(name) / "checkpoints" / "last.pt", weights_only=False)


def _max_diff(a: dict, b: dict) -> float:
    assert a.keys() == b.keys()
    return max((a[k] - b[k]).abs().max().item() for k in a)


def _metrics(ws, name: str) -> list[dict]:
    return [json.loads(line) for line in (ws.run_path(name) / "metrics.jsonl").read_text().splitlines()]


def test_two_processes_train_the_weights_of_one_process_with_the_doubled_batch(ws):
    one, two = _last(ws, "one"), _last(ws, "two")
    assert one["state"]["step"] == two["state"]["step"] == 3
    assert _max_diff(one["model"], two["model"]) < 1e-5  # DDP averaged the two halves' gradients
    curve_one, curve_two = _metrics(ws, "one"), _metrics(ws, "two")
    assert [sorted(r) for r in curve_one] == [sorted(r) for r in curve_two]
    for a, b in zip(curve_one, curve_two):
        for key in ("train_loss", "val_loss"):
            if key in a:
                assert a[key] == pytest.approx(b[key], abs=1e-5), key


def test_only_rank_zero_writes_and_prints(ws, trained):
    two = trained[1]
    run_dir = ws.run_path("two")
    assert sorted(p.name for p in run_dir.iterdir()) == sorted(p.name for p in ws.run_path("one").iterdir())
    assert [p.name for p in (run_dir / "checkpoints").iterdir()] == ["last.pt"]
    assert len(list((run_dir / "tb").iterdir())) == 1  # one TensorBoard event file
    assert [(r["step"], sorted(r)) for r in _metrics(ws, "two")] == [
        (3, ["lr", "step", "time", "tokens_per_s", "train_loss"]), (3, ["step", "time", "val_loss"])]
    assert sorted(r["name"] for r in ws.list_runs()) == ["one", "two"]
    assert two.stdout.count("run two finished") == 1
    assert two.stderr.count("training on 2 processes: global batch 8 (2 x 4 per process)") == 1
    assert two.stderr.count("two: step 3/3") == 1  # the progress line of the validation, once
    summary = ws.get_run("two")["summary"]
    assert (summary["processes"], summary["global_batch"], summary["tokens_seen"]) == (2, 8, 3 * 8 * 64)


def test_torchrun_with_two_nodes_on_loopback_trains_the_same_weights(ws, trained):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    torchrun = ("-m", "torch.distributed.run", "--nnodes", "2", "--nproc-per-node", "1", "--master-addr",
                "127.0.0.1", "--master-port", str(port))
    nodes = [subprocess.Popen(_train(trained[0], *RUN, "--name", "nodes", "--batch-size", "4",
                                     launcher=(*torchrun, "--node-rank", str(rank), "-m")),
                              env=_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for rank in (0, 1)]
    outputs = [node.communicate(timeout=300) for node in nodes]
    assert [node.returncode for node in nodes] == [0, 0], outputs
    assert "run nodes finished" in outputs[0][0] and "run nodes" not in outputs[1][0]  # node 1 stays quiet
    assert _max_diff(_last(ws, "one")["model"], _last(ws, "nodes")["model"]) < 1e-5


@pytest.mark.parametrize("args, message", [
    (["--strategy", "fsdp", "--devices", "2"], "--strategy fsdp shards the model over GPUs and runs on CUDA only"),
    (["--devices", "0"], "--devices must be >= 1"),
    (["--num-nodes", "0"], "--num-nodes must be >= 1"),
    (["--strategy", "zero"], "--strategy must be one of auto, ddp, fsdp, got 'zero'"),
    (["--devices", "two"], "Invalid value for '--devices'"),
])
def test_fsdp_on_cpu_and_bad_process_counts_are_one_clear_error(ws, args, message):
    if "fsdp" in args and torch.cuda.is_available():
        pytest.skip("FSDP runs on this machine's GPUs")
    result = run_cli("train", "corpus", "--preset", "tiny", "--name", "bad", *args, "--workspace", ws.root)
    assert result.exit_code == 2, result.output
    assert message in " ".join(result.output.split()) and "Traceback" not in result.output
    assert not ws.has_run("bad") and not (ws.root / "runs" / "bad").exists()


def test_resume_on_one_process_continues_a_two_process_run(ws):
    """Checkpoints hold the plain module: "two" (2 x 4) resumes on one process at batch 8 where
    "one" (1 x 8) resumes, and they stay equal."""
    for name in ("two", "one"):
        row = aigc.resume(name, workspace=ws, max_steps=6, batch_size=8)
        assert row["status"] == "finished" and row["step"] == 6
        assert "processes" not in row["summary"]  # this session ran on one
    assert [r["step"] for r in _metrics(ws, "two")] == [3, 3, 6, 6]
    assert _max_diff(_last(ws, "one")["model"], _last(ws, "two")["model"]) < 1e-5


def _rank1_after_a_checkpoint(job: subprocess.Popen, last: Path, past: int = 0) -> psutil.Process:
    """Rank 1 of a job started by Fabric's launcher, once rank 0 has checkpointed past ``past``."""
    deadline = time.time() + 240
    while time.time() < deadline and job.poll() is None:
        if last.exists() and torch.load(last, weights_only=False)["state"]["step"] > past:
            break
        time.sleep(0.2)
    assert job.poll() is None, job.communicate()[1]
    (rank1,) = psutil.Process(job.pid).children()  # Fabric's launcher started it
    time.sleep(0.3)  # mid-epoch
    return rank1


def test_ctrl_c_or_a_killed_rank_stops_every_rank_cleanly_and_resume_finishes(tmp_path, monkeypatch):
    monkeypatch.delenv("AIGC_DB_URL", raising=False)
    root = tmp_path / "ws"
    ws = _workspace(root)
    last = root / "runs" / "cut" / "checkpoints" / "last.pt"
    forever = ["--max-steps", "100000", "--eval-every", "5", "--batch-size", "4", "--devices", "2"]
    pipes = dict(env=_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)

    # Ctrl-C on rank 1 alone: every rank stops after the same step, and rank 0 checkpoints it
    job = subprocess.Popen(_train(root, "--preset", "tiny", "--name", "cut", *forever), **pipes)
    _rank1_after_a_checkpoint(job, last).send_signal(signal.SIGINT)
    _, err = job.communicate(timeout=60)
    row = ws.get_run("cut")
    assert job.returncode == 130 and row["status"] == "interrupted", err
    assert torch.load(last, weights_only=False)["state"]["step"] == row["step"] >= 5

    # A rank killed: rank 0 says so in one line, exits 2, the run is failed, its checkpoint intact
    job = subprocess.Popen(_resume(root, "cut", *forever), **pipes)
    _rank1_after_a_checkpoint(job, last, past=row["step"]).kill()  # SIGKILL: it says nothing
    _, err = job.communicate(timeout=60)
    errors = [line for line in err.splitlines() if line.startswith("error:")]
    assert job.returncode == 2, err
    assert len(errors) == 1 and "a process of the 2-process job failed" in errors[0], err
    assert "continue with --resume" in errors[0]
    assert ws.get_run("cut")["status"] == "failed"
    step = torch.load(last, weights_only=False)["state"]["step"]
    assert step > row["step"]

    # Rank 0 killed: it cannot record anything, so rank 1 marks the run failed, not left "running"
    job = subprocess.Popen(_resume(root, "cut", *forever), **pipes)
    rank1 = _rank1_after_a_checkpoint(job, last, past=step)
    assert ws.get_run("cut")["status"] == "running"
    job.kill()
    job.communicate(timeout=60)
    rank1.wait(timeout=60)
    assert ws.get_run("cut")["status"] == "failed"
    step = torch.load(last, weights_only=False)["state"]["step"]
    row = aigc.resume("cut", workspace=ws, max_steps=step + 5)
    assert row["status"] == "finished" and row["step"] == step + 5


OWN_STEP_FAMILY = '''
"""A family that owns its step (as a GAN or a VAE does): no noise, so 2 x B must equal 1 x 2B."""
import sys
from pathlib import Path

import torch
from torch import nn

from aigc.distributed import global_rank
from aigc.training import TrainConfig, fit


class Regression(nn.Module):
    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.lin = nn.Linear(4, 1)

    def configure_optimizers(self, lr, weight_decay):
        return [torch.optim.AdamW(self.parameters(), lr=lr)]

    def training_step(self, x, y, optimizers, backward):
        (opt,) = optimizers
        opt.zero_grad(set_to_none=True)
        loss = (self.lin(x).squeeze(-1) - y).square().mean()
        backward(loss)
        opt.step()
        return {"loss": loss.item()}


class Rows:
    unit = "row"

    def __init__(self, batch_size):
        self.x = torch.randn(256, 4, generator=torch.Generator().manual_seed(1))
        self.y = self.x.sum(1)
        self.batch_size = self.tokens_per_batch = batch_size

    def batch(self, generator):
        index = torch.randint(0, 256, (self.batch_size,), generator=generator)
        return self.x[index], self.y[index]

    def evaluate(self, model, full=False):
        with torch.no_grad():
            return float((model.lin(self.x).squeeze(-1) - self.y).square().mean())


def main(devices, batch, out):
    model = Regression()
    out.mkdir(parents=True, exist_ok=True)
    torch.save(model.state_dict(), out / "init.pt")
    cfg = TrainConfig(max_steps=5, eval_every=5, batch_size=batch, lr=0.05, warmup_steps=1, devices=devices)
    fit(model, Rows(batch), cfg, out)
    if global_rank() == 0:  # the last step's weights (the model now holds the best validation's)
        torch.save(torch.load(out / "checkpoints" / "last.pt", weights_only=False)["model"], out / "last.pt")


if __name__ == "__main__":
    main(int(sys.argv[1]), int(sys.argv[2]), Path(sys.argv[3]))
'''


def test_a_family_that_owns_its_step_gets_its_gradients_averaged(tmp_path):
    """Its step never calls DDP's forward: the loop's backward averages the gradients itself."""
    script = tmp_path / "own_step.py"
    script.write_text(OWN_STEP_FAMILY)
    runpy.run_path(str(script))["main"](1, 8, tmp_path / "1")  # one process, here
    done = subprocess.run([sys.executable, str(script), "2", "4", str(tmp_path / "2")], env=_env(),
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    one, two = (torch.load(tmp_path / d / "last.pt") for d in ("1", "2"))
    assert _max_diff(one, two) < 1e-6  # without the averaging, 0.0098 here
    assert _max_diff(one, torch.load(tmp_path / "1" / "init.pt")) > 1e-2  # and they trained
