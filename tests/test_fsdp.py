"""FSDP (``--strategy fsdp``): what runs without a GPU.

The refusals (on CPU; for a family that takes its own step), the conversion between FSDP's
name-keyed optimizer state and ``torch.optim``'s index-keyed one, the CLI help, and the whole
training path on 2 CPU processes with gloo. Lightning refuses FSDP on CPU, so the last test puts
in a CPU build of its strategy (:class:`CpuFSDP`): the loop, its checkpoints, resume and export
are the code a GPU runs. ``tests/test_fsdp_gpu.py`` runs the same round trip on GPUs.

Run as a script, this file is the driver of a multi-process job (Fabric's launcher starts the
other rank by running the same command line again, which pytest cannot be):
``python tests/test_fsdp.py WORKSPACE --devices N [--cpu] ACTION...`` (see :func:`main`).
"""

from __future__ import annotations

import copy
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from lightning.fabric.strategies import FSDPStrategy
from torch import nn

PRECISION = "32-true"  # exact float32, so FSDP and one device agree within rounding
RUN = dict(family="gpt", preset="tiny", eval_every=1, seed=7, precision=PRECISION)  # a validation every step


class CpuFSDP(FSDPStrategy):
    """Lightning's FSDP strategy on CPU with gloo, for tests only. Lightning refuses
    ``accelerator="cpu"`` for ``FSDPStrategy`` itself (not for a subclass) and passes FSDP no
    ``device_id`` there, without which FSDP looks for a GPU."""

    def setup_module(self, module: nn.Module) -> nn.Module:
        from torch.distributed.fsdp import FullyShardedDataParallel

        return FullyShardedDataParallel(module, sharding_strategy=self.sharding_strategy,
                                        device_id=torch.device("cpu"), **self._fsdp_kwargs)


def _cpu_fsdp_launch(cfg):
    """``aigc.distributed.launch`` for ``--strategy fsdp`` on CPU: what the driver's ``--cpu`` puts in."""
    from lightning.fabric import Fabric

    fabric = Fabric(accelerator="cpu", devices=cfg.devices, strategy=CpuFSDP(), precision=PRECISION)
    fabric.launch()
    return fabric


class StopAt:
    """An observer that interrupts the run after ``step`` (as Ctrl-C does): the run stops there
    with its checkpoint, and its schedule stays the one of ``max_steps``, as if uninterrupted."""

    def __init__(self, step: int):
        self.step = step

    def on_step(self, state) -> None:
        if state.step == self.step:
            os.kill(os.getpid(), signal.SIGINT)


def main(argv: list[str]) -> None:
    """The driver: each action trains (or resumes) a run under FSDP on ``--devices`` processes.
    ACTION: ``train:NAME:MAX_STEPS:BATCH[:STOP_AT]`` or ``resume:NAME:MAX_STEPS:BATCH``."""
    import argparse

    import aigc
    import aigc.runs

    parser = argparse.ArgumentParser()
    parser.add_argument("workspace")
    parser.add_argument("--devices", type=int, required=True)
    parser.add_argument("--cpu", action="store_true")
    parser.add_argument("actions", nargs="+")
    args = parser.parse_args(argv)
    if args.cpu:
        aigc.runs.launch = _cpu_fsdp_launch
    for action in args.actions:
        kind, name, steps, batch, *stop = action.split(":")
        options = dict(workspace=args.workspace, max_steps=int(steps), batch_size=int(batch),
                       devices=args.devices, strategy="fsdp", callbacks=[StopAt(int(s)) for s in stop])
        if kind == "train":
            aigc.train("corpus", name=name, **RUN, **options)
        else:
            aigc.resume(name, **options)


def fsdp_job(root: Path, devices: int, *actions: str, cpu: bool) -> subprocess.CompletedProcess:
    env = {**os.environ, "AIGC_THREADS": "1", "OMP_NUM_THREADS": "1"}
    env.pop("AIGC_DB_URL", None)  # the workspace's own SQLite catalog
    command = [sys.executable, __file__, str(root), "--devices", str(devices), *(["--cpu"] if cpu else []),
               *actions]
    job = subprocess.run(command, env=env, capture_output=True, text=True, timeout=600)
    assert job.returncode == 0, job.stderr[-4000:]
    return job


def _val_losses(run_dir: Path) -> dict[int, float]:
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    return {r["step"]: r["val_loss"] for r in rows if "val_loss" in r}


def _max_diff(a: dict, b: dict) -> float:
    assert a.keys() == b.keys()
    return max((a[k].float() - b[k].float()).abs().max().item() for k in a)


def _last(ws, name: str) -> dict:
    return torch.load(ws.run_path(name) / "checkpoints" / "last.pt", map_location="cpu", weights_only=False)


def check_round_trip(root: Path, devices: int, *, cpu: bool, weights_tol: float, loss_tol: float) -> None:
    """Against "one", 6 steps on one device uninterrupted: "part" trains 3 of its 6 steps under
    FSDP on ``devices`` processes (batch 4 each) and resumes on one device at the same global
    batch; "single" the reverse. The FSDP job runs as a subprocess, the one-device runs here."""
    import aigc
    from safetensors.torch import load_file

    from aigc.checkpoints import load_weights
    from aigc.models.gpt import GPT, GPTConfig
    from aigc.training import TrainConfig, make_optimizer

    ws = aigc.open_workspace(root)
    batch, global_batch = 4, 4 * devices
    aigc.train("corpus", name="one", workspace=ws, max_steps=6, batch_size=global_batch, **RUN)
    aigc.train("corpus", name="single", workspace=ws, max_steps=6, batch_size=global_batch,
               callbacks=[StopAt(3)], **RUN)
    single = _last(ws, "single")  # step 3, before the FSDP job resumes it
    fsdp_job(root, devices, f"train:part:6:{batch}:3", f"resume:single:6:{batch}", cpu=cpu)
    part = _last(ws, "part")  # step 3, before the one-device session below resumes it
    assert ws.get_run("part")["status"] == "interrupted"
    assert part["state"]["step"] == single["state"]["step"] == 3

    # The checkpoint is the plain module's full state and torch.optim's index-keyed optimizer state
    spec = json.loads((ws.run_path("part") / "run.json").read_text())
    fresh = GPT(GPTConfig(**spec["model_config"]))
    plain = fresh.state_dict()
    assert {k: v.shape for k, v in part["model"].items()} == {k: v.shape for k, v in plain.items()}
    opt_state = part["optimizers"][0]
    n_params = len(list(fresh.parameters()))
    assert sorted(opt_state["state"]) == list(range(n_params))
    assert sorted(i for group in opt_state["param_groups"] for i in group["params"]) == list(range(n_params))
    make_optimizer(fresh, TrainConfig()).load_state_dict(opt_state)
    # Trained under FSDP (N x 4) it is where one device (1 x 4N) was after the same steps, and its loss fell
    assert _max_diff(part["model"], single["model"]) < weights_tol
    losses = _val_losses(ws.run_path("part"))
    assert losses[3] < losses[2] < losses[1]

    # FSDP -> one device, and one device -> FSDP: the same validation loss at every step, the
    # first ones after the resume included, and the same weights as the uninterrupted run
    aigc.resume("part", workspace=ws, max_steps=6, batch_size=global_batch)
    one = _val_losses(ws.run_path("one"))
    for name in ("part", "single"):
        losses = _val_losses(ws.run_path(name))
        assert sorted(losses) == sorted(one) == [1, 2, 3, 4, 5, 6], name
        for step in one:
            assert losses[step] == pytest.approx(one[step], abs=loss_tol), (name, step)
        assert _max_diff(_last(ws, name)["model"], _last(ws, "one")["model"]) < weights_tol, name
        row = ws.get_run(name)
        assert row["status"] == "finished" and row["step"] == 6
        assert row["best_val_loss"] == pytest.approx(ws.get_run("one")["best_val_loss"], abs=loss_tol)

    # "single" finished under FSDP: its best weights (gathered) load into a fresh model, and its
    # export (from rank 0's plain copy) holds them
    best = ws.run_path("single") / "model.safetensors"
    load_weights(fresh, best)
    one_best = load_file(str(ws.run_path("one") / "model.safetensors"))
    assert _max_diff(load_file(str(best)), one_best) < weights_tol
    exported = load_file(str(ws.run_path("single") / "export" / "model.safetensors"))
    embed = fresh.state_dict()["hf.model.embed_tokens.weight"]
    assert torch.equal(exported["model.embed_tokens.weight"].cpu(), embed)


# -- what runs in-process ------------------------------------------------------------------------


class _Tied(nn.Module):
    """A tiny language model with a tied head, the case where names and indices part ways."""

    def __init__(self):
        super().__init__()
        self.embed = nn.Embedding(11, 8)
        self.mix = nn.Linear(8, 8)
        self.norm = nn.LayerNorm(8)
        self.head = nn.Linear(8, 11, bias=False)
        self.head.weight = self.embed.weight

    def forward(self, x, y):
        logits = self.head(self.norm(torch.relu(self.mix(self.embed(x)))))
        return logits, nn.functional.cross_entropy(logits.flatten(0, 1), y.flatten())


def _trained(steps: int = 2):
    from aigc.training import TrainConfig, make_optimizer

    torch.manual_seed(0)
    model = _Tied()
    opt = make_optimizer(model, TrainConfig())
    for _ in range(steps):
        x = torch.randint(0, 11, (4, 6))
        model(x, x.roll(1, 1))[1].backward()
        opt.step()
        opt.zero_grad()
    return model, opt


def _same(a, b) -> bool:
    """Nested state dicts equal, tensors compared by value."""
    if isinstance(a, torch.Tensor):
        return isinstance(b, torch.Tensor) and torch.equal(a, b)
    if isinstance(a, dict):
        return isinstance(b, dict) and list(a) == list(b) and all(_same(a[k], b[k]) for k in a)
    if isinstance(a, (list, tuple)):
        return isinstance(b, (list, tuple)) and len(a) == len(b) and all(map(_same, a, b))
    return a == b


def test_optimizer_state_converts_between_torch_names_and_plain_indices():
    """``get_optimizer_state_dict``'s name-keyed state (what FSDP gathers) becomes exactly what
    ``torch.optim`` saves, and back; a tied weight is one parameter, under its first name."""
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_optimizer_state_dict

    from aigc.sharding import named_optimizer_state, optimizer_param_names, plain_optimizer_state

    model, opt = _trained()
    names = optimizer_param_names(model, opt)
    assert names == [["mix.weight"], ["embed.weight", "mix.bias", "norm.weight", "norm.bias"]]
    named = get_optimizer_state_dict(model, opt, options=StateDictOptions(full_state_dict=True))
    assert set(named["state"]) == {"mix.weight", "embed.weight", "mix.bias", "norm.weight", "norm.bias"}
    plain = opt.state_dict()
    assert _same(plain_optimizer_state(named, names), plain)
    assert _same(named_optimizer_state(plain, names), named)


def test_converted_state_resumes_the_optimizer_exactly():
    from aigc.sharding import named_optimizer_state, optimizer_param_names, plain_optimizer_state
    from aigc.training import TrainConfig, make_optimizer

    model, opt = _trained()
    names = optimizer_param_names(model, opt)
    twin = _Tied()
    twin.load_state_dict(model.state_dict())
    twin_opt = make_optimizer(twin, TrainConfig())
    saved = copy.deepcopy(opt.state_dict())  # as a checkpoint holds it (a live one shares its step tensors)
    twin_opt.load_state_dict(plain_optimizer_state(named_optimizer_state(saved, names), names))
    x = torch.randint(0, 11, (4, 6), generator=torch.Generator().manual_seed(1))
    for m, o in ((model, opt), (twin, twin_opt)):
        m(x, x.roll(1, 1))[1].backward()
        o.step()
    assert _max_diff(model.state_dict(), twin.state_dict()) == 0


def test_optimizer_state_of_other_parameters_is_refused():
    from aigc.sharding import named_optimizer_state, optimizer_param_names, plain_optimizer_state

    model, opt = _trained()
    names = optimizer_param_names(model, opt)
    plain = opt.state_dict()
    with pytest.raises(ValueError, match="other parameter groups"):
        named_optimizer_state(plain, [names[0], names[1][:-1]])
    named = named_optimizer_state(plain, names)
    with pytest.raises(ValueError, match="other parameters"):
        plain_optimizer_state(named, [names[0], [*names[1][:-1], "norm.other"]])


def test_families_that_take_their_own_step_are_refused_and_name_ddp():
    from aigc.errors import InvalidInput
    from aigc.models.registry import FAMILIES, get_family
    from aigc.sharding import require_loop_step
    from aigc.training import TrainConfig

    fsdp = TrainConfig(strategy="fsdp")
    own = [name for name in FAMILIES if hasattr(get_family(name), "training_step")]
    assert {"gan", "vae", "vqvae", "diffusion", "ctgan", "tvae"} <= set(own)
    for name in own:
        with pytest.raises(InvalidInput, match=f"{name} takes its own training step.*use --strategy ddp"):
            require_loop_step(fsdp, get_family(name))
        require_loop_step(TrainConfig(strategy="ddp"), get_family(name))  # DDP trains them
    for name in ("gpt", "lstm", "tabgpt"):
        require_loop_step(fsdp, get_family(name))


def test_one_process_callers_refuse_fsdp():
    from aigc.distributed import require_one_process
    from aigc.errors import InvalidInput
    from aigc.training import TrainConfig

    with pytest.raises(InvalidInput, match="adapting a pretrained base trains in one process, unsharded"):
        require_one_process(TrainConfig(strategy="fsdp"), "adapting a pretrained base")


@pytest.fixture()
def ws(tmp_path, monkeypatch):
    import aigc
    from helpers import write_corpus

    monkeypatch.delenv("AIGC_DB_URL", raising=False)
    ws = aigc.open_workspace(tmp_path / "ws")
    aigc.ingest(write_corpus(tmp_path / "corpus.txt"), "corpus", workspace=ws)
    return ws


@pytest.mark.parametrize("args, message", [
    (["--family", "gan"], "--strategy fsdp trains families whose step the loop takes (gpt, lstm, tabgpt); "
                          "gan takes its own training step, which FSDP cannot shard: use --strategy ddp"),
    (["--family", "diffusion", "--devices", "2"], "diffusion takes its own training step"),
    ([], "--strategy fsdp shards the model over GPUs and runs on CUDA only: on CPU use --strategy ddp"),
])
def test_cli_refuses_fsdp_with_one_line(ws, args, message):
    from helpers import run_cli

    if not args and torch.cuda.is_available():
        pytest.skip("FSDP runs on this machine's GPUs")
    result = run_cli("train", "corpus", "--preset", "tiny", "--name", "bad", "--strategy", "fsdp", *args,
                     "--workspace", ws.root)
    assert result.exit_code == 2, result.output
    assert message in " ".join(result.output.split()) and "Traceback" not in result.output
    assert not ws.has_run("bad") and not (ws.root / "runs" / "bad").exists()


def test_cli_help_says_what_fsdp_does():
    from helpers import run_cli

    result = run_cli("train", "--help")
    text = " ".join(result.output.replace("│", " ").split())
    assert result.exit_code == 0
    assert ("fsdp (CUDA only): shards the weights over the GPUs, for gpt, lstm and tabgpt; the other "
            "families use ddp") in text
    assert "not available yet" not in text


@pytest.mark.slow
def test_fsdp_on_two_cpu_processes_trains_checkpoints_and_resumes_like_one_device(tmp_path, monkeypatch):
    """The whole path on CPU: ``aigc.train``/``aigc.resume`` with ``strategy="fsdp"`` on 2 gloo
    processes (Lightning's FSDP, its CPU build), against one process with the doubled batch."""
    import aigc
    from helpers import write_corpus

    monkeypatch.delenv("AIGC_DB_URL", raising=False)
    root = tmp_path / "ws"
    aigc.ingest(write_corpus(tmp_path / "corpus.txt"), "corpus", workspace=aigc.open_workspace(root))
    check_round_trip(root, 2, cpu=True, weights_tol=1e-5, loss_tol=1e-5)


if __name__ == "__main__":
    main(sys.argv[1:])
