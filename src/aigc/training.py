"""The one training loop (Lightning Fabric keeps it ours): devices, precision, schedule,
evaluation, checkpoints, resume, time budget, early stopping, and hooks for observers.

A *task* supplies what differs between kinds of data: batches, the loss of one step, and
validation. This module knows nothing about tokenizers, catalogs or the command line; the
caller (``aigc.runs``) owns the run folder's other files and the catalog row.

Checkpoints are written to a temporary file and renamed, so a process killed while writing
leaves the previous good ``last.pt`` in place. A loss or weights that are no longer finite stop
the run (:class:`Diverged`) before anything of them is saved: ``model.safetensors`` and
``last.pt`` keep the last good weights.

Several processes (``devices`` x ``num_nodes``, DDP): :func:`~aigc.distributed.launch` starts
them (or joins the processes ``torchrun`` / ``fabric run`` started). Every rank draws the same
global batch from the same seeded generator and trains on its own share of it, so N processes
with batch B step like one process with batch N*B. Rank 0's clock, stop reason and validation
decide for all ranks; rank 0 alone writes files and calls the observers. Checkpoints hold the
plain module's state, so a run resumes on another number of processes.

FSDP (``strategy="fsdp"``, CUDA only) shards the weights, gradients and optimizer state over the
ranks. Checkpoints and best weights are then gathered from the shards with
``torch.distributed.checkpoint``'s full-state-dict functions (every rank takes part, rank 0
writes) and saved in the plain form above, so a run moves freely between FSDP, DDP and one
device. Families that own their step (``training_step``) stay on DDP.

What is not the loop lives beside it: the processes (launch, ranks, collectives, signals) in
:mod:`aigc.distributed`, FSDP's state in :mod:`aigc.sharding`, the files of a run (checkpoints,
weights, metrics log) in :mod:`aigc.checkpoints`.
"""

from __future__ import annotations

import json
import math
import random
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import torch
from torch import Tensor, nn

from aigc.checkpoints import (atomic_save, load_weights, save_weights, tensor_groups, tensorboard,
                              truncate_metrics)
from aigc.distributed import (ProcessLost, StopFlag, agree, average_gradients, launch, lost_message,
                              mean_over_ranks, seed_rank, share)
from aigc.errors import AigcError, InvalidInput
from aigc.sharding import FullState, owns_step_message, uses_fsdp

if TYPE_CHECKING:
    from lightning.fabric import Fabric

WARMUP_SHARE_OF_BUDGET = 0.2
# metrics.jsonl names the throughput in the task's unit (TrainState.unit)
RATE_KEYS = {"tok": "tokens_per_s", "img": "images_per_s", "row": "rows_per_s"}
MIN_IMPROVEMENT = 1e-4  # nats: smaller validation gains do not reset early-stopping patience
STRATEGIES = ("auto", "ddp", "fsdp")  # fsdp: CUDA only, families whose step the loop takes (launch, fit)
# How a session runs, not what the run is: a resumed run does not carry these over (aigc.runs)
LAUNCH_KEYS = ("devices", "num_nodes", "strategy", "accelerator")


class Diverged(AigcError):
    """A training or validation loss (or the weights) stopped being finite. The run keeps the
    weights of its last good validation; the message names the step and the fix."""


PRECISIONS = ("", "32-true", "bf16-mixed", "16-mixed")  # Lightning's names; "" = auto (see TrainConfig.precision)


@dataclass
class TrainConfig:
    max_steps: int = 3000  # 0 = no step cap: the time budget alone governs (only with one)
    # wall seconds of the command (setup and validations count); 0 = none. The LR schedule follows the clock
    time_budget: float = 0.0
    batch_size: int = 32
    lr: float = 2e-3  # peak learning rate (AdamW)
    min_lr_ratio: float = 0.1  # cosine decays to lr * this
    warmup_steps: int = 100
    weight_decay: float = 0.1  # on matrices only; norms, biases and embeddings are not decayed
    beta2: float = 0.99  # small-batch char models like a shorter second-moment memory (nanoGPT uses 0.99)
    # max gradient norm (0 = off) for the families this loop steps (gpt, lstm). The image families
    # own their step (training_step) and do not clip: DCGAN and SNGAN do not either, but DDPM's
    # reference code clips at norm 1, which our diffusion does not do yet
    grad_clip: float = 1.0
    eval_every: int = 250  # steps between validations (and checkpoints)
    eval_tokens: int = 32768  # target tokens per periodic validation; the final one sees the whole split
    patience: int = 0  # stop after this many validations without improvement; 0 = never
    # a task's veto (Task.veto: e.g. tuning's drift guard) goes back to the best weights kept and on
    # at half the lr, this many times, before it stops the run; 0 = the first veto stops it
    veto_backoffs: int = 0
    seed: int = 1337
    tokenizer: str = "char"  # char | bpe
    vocab_size: int = 2048  # bpe only
    # "" = auto: bf16-mixed on a capable GPU, and on a CPU with native bf16 for a family whose
    # ``cpu_bf16`` says it pays there (resolved by aigc.runs.train_config_for), else 32-true
    precision: str = ""
    cond_dropout: float = 0.1  # conditional text: share of records whose control tokens train as null (CFG)
    # Several processes (LAUNCH_KEYS). batch_size stays per process: the global batch is
    # batch_size * devices * num_nodes, as in Lightning and Hugging Face
    devices: int = 1  # processes per node, one per GPU; under torchrun / fabric run, the launcher's count
    num_nodes: int = 1
    strategy: str = "auto"  # auto (ddp when several processes) | ddp | fsdp (CUDA; gpt, lstm, tabgpt...)
    accelerator: str = ""  # "" = cuda when available, else cpu

    def validate(self) -> None:
        if self.time_budget < 0:
            raise InvalidInput(f"--time-budget must be positive, got {self.time_budget}")
        if self.max_steps < 1 and not (self.max_steps == 0 and self.time_budget > 0):
            raise InvalidInput(f"--max-steps must be >= 1, got {self.max_steps}")
        if self.batch_size < 1:
            raise InvalidInput(f"--batch-size must be >= 1, got {self.batch_size}")
        if not self.lr > 0:
            raise InvalidInput(f"--lr must be > 0, got {self.lr}")
        if self.tokenizer not in ("char", "bpe"):
            raise InvalidInput(f"--tokenizer must be char or bpe, got {self.tokenizer!r}")
        if self.eval_every < 1:
            raise InvalidInput(f"--eval-every must be >= 1, got {self.eval_every}")
        if self.veto_backoffs < 0:
            raise InvalidInput(f"veto_backoffs must be >= 0, got {self.veto_backoffs}")
        if not 0 <= self.cond_dropout < 1:
            raise InvalidInput(f"--cond-dropout must be in [0, 1), got {self.cond_dropout}")
        if self.devices < 1:
            raise InvalidInput(f"--devices must be >= 1 (processes per node, one per GPU), got {self.devices}")
        if self.num_nodes < 1:
            raise InvalidInput(f"--num-nodes must be >= 1, got {self.num_nodes}")
        if self.strategy not in STRATEGIES:
            raise InvalidInput(f"--strategy must be one of {', '.join(STRATEGIES)}, got {self.strategy!r}")
        if self.precision not in PRECISIONS:
            raise InvalidInput(f"--precision must be one of {', '.join(p for p in PRECISIONS if p)} (default: auto), "
                               f"got {self.precision!r}")
        if self.accelerator not in ("", "cpu", "cuda"):
            raise InvalidInput(f"--accelerator must be cpu or cuda (default: cuda when available), "
                               f"got {self.accelerator!r}")


def merge_options(base: dict[str, Any], overrides: dict[str, Any] | None) -> dict[str, Any]:
    """Training options: ``overrides`` (the user's) over ``base`` (a preset's, or a run's saved
    config). A time budget given without ``max_steps`` governs alone: the preset's step count
    would otherwise end a budgeted run early (gan ``small`` stopped at its 3,000 steps after 241
    of 300 s)."""
    overrides = overrides or {}
    merged = {**base, **overrides}
    if overrides.get("time_budget") and "max_steps" not in overrides:
        merged["max_steps"] = 0
    return merged


def parse_duration(text: str | float | int) -> float:
    """'90', '90s', '5m', '1.5h' -> seconds."""
    if isinstance(text, (int, float)):
        return float(text)
    s = text.strip().lower()
    units = {"s": 1, "m": 60, "h": 3600}
    try:
        if s and s[-1] in units:
            return float(s[:-1]) * units[s[-1]]
        return float(s)
    except ValueError:
        raise InvalidInput(f"cannot read duration {text!r}: use e.g. 300, 300s, 5m or 1h") from None


@dataclass
class TrainState:
    """What observers see. Updated in place by the loop."""

    step: int = 0
    max_steps: int = 0  # 0 = none: the time budget governs
    elapsed: float = 0.0  # wall seconds of the budget spent (setup included), summed over resumed sessions
    time_budget: float = 0.0
    # of the budget, kept for what follows the last step: one more step is not started unless it ends
    # in time, and the closing validations (the last step's, the best weights' on the whole split) are
    # counted at twice what the last periodic one took
    reserve_s: float = 0.0
    train_loss: float = float("nan")
    val_loss: float = float("nan")
    best_val_loss: float = float("inf")
    evals_since_best: int = 0
    lr: float = 0.0
    unit: str = "tok"  # what tokens_per_s and tokens_seen count: the task's unit ("tok", "img")
    tokens_per_s: float = 0.0
    tokens_seen: int = 0
    eta_s: float = float("nan")
    stop_reason: str = ""  # max_steps | time_budget | early_stopping | interrupted | diverged
    world_size: int = 1  # processes training together (the throughput figures are all of theirs)
    global_batch: int = 0  # samples per step over all processes
    extra: dict[str, float] = field(default_factory=dict)
    val_figures: dict[str, float] = field(default_factory=dict)  # the best val loss in the task's terms


class Task(Protocol):
    """What the loop needs from a kind of data. ``tokens_per_batch`` counts the unit of the
    throughput figure, which ``unit`` names as progress shows it (``tok`` for text, ``img`` for
    image families). ``evaluate`` returns the mean validation loss, or None for a family that
    has none (a GAN). An optional ``loss_figures(loss)`` gives a validation loss in the data's
    own terms for the run's summary, e.g. ``{"val_bits_per_token": ...}``.

    An optional ``veto`` attribute, read after each ``evaluate``: None, or a short reason (e.g.
    ``"drift"``) why the weights just validated may not be kept; the loop then keeps the best
    weights validated before (or what the run directory's ``model.safetensors`` already held) and
    stops with that reason (preference tuning's drift guard:
    :class:`aigc.pretrained.preference.DriftGuard`), or, ``veto_backoffs`` times, goes back to those
    weights (a fresh optimizer state) and goes on at half the learning rate.

    ``batch`` draws ``batch_size`` samples; with several processes the loop multiplies
    ``batch_size`` and ``tokens_per_batch`` by their number (every rank draws the global batch
    and keeps its share)."""

    def batch(self, generator: torch.Generator) -> tuple[Tensor, Tensor | None]: ...

    def evaluate(self, model: nn.Module, full: bool = False) -> float | None: ...

    batch_size: int
    tokens_per_batch: int
    unit: str


class Callback(Protocol):  # every method optional
    def on_start(self, state: TrainState) -> None: ...
    def on_step(self, state: TrainState) -> None: ...
    def on_eval(self, state: TrainState) -> None: ...
    def on_end(self, state: TrainState) -> None: ...


def _emit(callbacks, hook: str, state: TrainState) -> None:
    for cb in callbacks:
        fn = getattr(cb, hook, None)
        if fn is not None:
            fn(state)


def lr_at(cfg: TrainConfig, step: int, elapsed: float) -> float:
    """Linear warm-up, then cosine decay over the steps or the clock, whichever runs out first.

    Under a time budget the warm-up also ends after 20 % of the clock: on a slow machine (or a
    large vocabulary) a short budget may not even reach ``warmup_steps``. (5 % was too abrupt:
    gpt small on tiny shakespeare reached 1.80 nats/char at 100 s, against 1.72 with 20 %.)
    """
    warm = (step + 1) / max(1, cfg.warmup_steps)
    progress = step / cfg.max_steps if cfg.max_steps else 0.0
    if cfg.time_budget:
        warm = max(warm, elapsed / (WARMUP_SHARE_OF_BUDGET * cfg.time_budget))
        progress = max(progress, elapsed / cfg.time_budget)
    warm = min(1.0, warm)
    progress = min(1.0, progress)
    decay = cfg.min_lr_ratio + (1 - cfg.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * progress))
    return cfg.lr * warm * decay


def make_optimizer(model: nn.Module, cfg: TrainConfig) -> torch.optim.Optimizer:
    decay, no_decay = [], []
    seen: set[int] = set()
    for name, p in model.named_parameters():
        if not p.requires_grad or id(p) in seen:
            continue
        seen.add(id(p))
        # matrices of linear/recurrent layers decay; embeddings (tied to heads), norms and biases do not
        (decay if p.dim() >= 2 and "embed" not in name else no_decay).append(p)
    groups = [{"params": decay, "weight_decay": cfg.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    return torch.optim.AdamW(groups, lr=cfg.lr, betas=(0.9, cfg.beta2), fused=False)


def fit(
    model: nn.Module,
    task: Task,
    cfg: TrainConfig,
    run_dir: Path,
    callbacks: list = (),  # type: ignore[assignment]
    resume: bool = False,
    fabric: Fabric | None = None,
    setup_s: float = 0.0,
) -> TrainState:
    """Train ``model`` on ``task``. Writes ``checkpoints/last.pt``, ``model.safetensors`` (best
    validation), ``metrics.jsonl`` and TensorBoard events under ``run_dir``, and calls the
    observers: on rank 0 alone. ``fabric``: from :func:`launch`, by a caller that must launch
    before it writes anything (``aigc.runs``); launched here otherwise. ``setup_s``: wall seconds
    the caller already spent on this command (imports, reading the data, fitting an encoding),
    which the time budget counts as spent.

    Under FSDP, ``model`` is sharded in place and stays so: read its weights afterwards from
    ``model.safetensors`` into a plain copy."""
    cfg.validate()
    fabric = fabric or launch(cfg)
    world, rank, zero = fabric.world_size, fabric.global_rank, fabric.is_global_zero
    fsdp = uses_fsdp(fabric)
    ckpt_dir = run_dir / "checkpoints"
    if zero:
        ckpt_dir.mkdir(parents=True, exist_ok=True)
    last_path = ckpt_dir / "last.pt"
    best_path = run_dir / "model.safetensors"

    # A family that owns its update (a GAN: two optimizers) brings its optimizers and its step.
    owns_step = hasattr(model, "training_step")
    if fsdp and owns_step:
        raise InvalidInput(owns_step_message(model))
    if world > 1:  # every rank draws the global batch from the same generator and trains on its share
        task.batch_size *= world
        task.tokens_per_batch *= world
    state = TrainState(max_steps=cfg.max_steps, time_budget=cfg.time_budget, unit=getattr(task, "unit", "tok"),
                       world_size=world, global_batch=getattr(task, "batch_size", 0))
    gen = torch.Generator().manual_seed(cfg.seed)
    seed_rank(cfg.seed, rank, 0)
    optimizers = model.configure_optimizers(cfg.lr, cfg.weight_decay) if owns_step else [make_optimizer(model, cfg)]
    for opt in optimizers:
        for group in opt.param_groups:
            group.setdefault("base_lr", group["lr"])  # the schedule scales each group's own rate
    ties = [names for names in tensor_groups(model.state_dict()).values() if len(names) > 1]
    shards = FullState(fabric, model, optimizers, ties) if fsdp else None
    if resume:
        if not last_path.exists():
            raise InvalidInput(f"{run_dir.name} has no checkpoint to resume from: start it again without --resume")
        try:  # written atomically, so only a damaged disk or a foreign file gets here
            ckpt = torch.load(last_path, map_location="cpu", weights_only=False)
        except Exception as e:  # noqa: BLE001 (torch raises RuntimeError, EOFError, pickle errors...)
            raise InvalidInput(f"{last_path} is damaged ({type(e).__name__}): the run cannot resume; "
                               "train it again") from None
        model.load_state_dict(ckpt["model"])  # (FSDP shards these weights at setup)
        if not fsdp:  # FSDP shards the optimizer state too: it loads after setup
            model.to(fabric.device)  # first: an optimizer loads its state onto its parameters' device
            for opt, opt_state in zip(optimizers, ckpt["optimizers"], strict=True):
                opt.load_state_dict(opt_state)
        gen.set_state(ckpt["rng"]["batches"])
        torch.set_rng_state(ckpt["rng"]["torch"])
        random.setstate(ckpt["rng"]["python"])
        for key in ("step", "elapsed", "best_val_loss", "evals_since_best", "tokens_seen", "val_loss"):
            setattr(state, key, ckpt["state"][key])
        if rank:  # the checkpoint holds rank 0's noise generators
            seed_rank(cfg.seed, rank, state.step)
        if zero:
            truncate_metrics(run_dir / "metrics.jsonl", state.step)
    good_step = state.step  # the step of the last weights known good: those in last.pt
    diverged, diverged_at = "", 0  # what stopped being finite, once something has, and at which step

    net = model  # the plain module: for saving and evaluation (under FSDP, sharded: ``shards`` gathers)
    try:  # with several processes, DDP's first collective: where a rank that failed to start shows
        model, *optimizers = fabric.setup(model, *optimizers)
    except RuntimeError as e:
        if world == 1:
            raise
        raise ProcessLost(lost_message(e, state.step, world, state.step)) from e
    evaluated = net  # what validation runs: under FSDP, the sharded module, whose forward gathers the weights
    if shards is not None:
        shards.attach(model)
        evaluated = model
        if hasattr(net, "validation_losses"):  # (tabgpt's validation): through FSDP's forward too
            model.mark_forward_method("validation_losses")
        if resume:
            shards.load_optimizer_states(ckpt["optimizers"])
    writer = tensorboard(run_dir / "tb") if zero else None
    metrics = open(run_dir / "metrics.jsonl", "a", encoding="utf-8") if zero else None

    def log(row: dict[str, Any]) -> None:
        if metrics is None:
            return
        metrics.write(json.dumps(row) + "\n")
        metrics.flush()
        if writer is not None:
            for key, value in row.items():
                if key not in ("step", "time") and isinstance(value, (int, float)):
                    writer.add_scalar(key, value, row["step"])

    def emit(hook: str) -> None:
        if zero:
            _emit(callbacks, hook, state)

    def checkpoint() -> None:
        if shards is not None:  # gathering is a collective: every rank takes part, rank 0 writes
            weights, opt_states = shards.weights(), shards.optimizer_states()
        elif zero:
            weights, opt_states = net.state_dict(), [opt.state_dict() for opt in optimizers]
        if not zero:
            return
        atomic_save(
            {
                "model": weights,
                "optimizers": opt_states,
                "rng": {"batches": gen.get_state(), "torch": torch.get_rng_state(), "python": random.getstate()},
                "state": {k: getattr(state, k) for k in
                          ("step", "elapsed", "best_val_loss", "evals_since_best", "tokens_seen", "val_loss")},
                "train_config": asdict(cfg),
            },
            last_path,
        )

    def backward(loss: Tensor) -> None:
        """For a family that owns its step: it never calls DDP's forward, so DDP does not average
        its gradients; this does, after each of its backward passes."""
        fabric.backward(loss)
        if world > 1:
            average_gradients(fabric, net)

    def diverge(what: str, step: int) -> None:
        nonlocal diverged, diverged_at
        diverged, diverged_at = what, step
        state.stop_reason = "diverged"

    def validate(full: bool = False) -> bool:
        """Validate and keep the best weights; False (and nothing saved) when they diverged."""
        evaluated.eval()
        loss = task.evaluate(evaluated, full=full)
        evaluated.train()
        # the only check a family without a validation loss gets (under FSDP, of every rank's shard)
        finite = shards.finite(fabric) if shards is not None else _finite(net)
        if world > 1:  # rank 0's verdict: every rank counts patience alike and stops alike
            loss, finite = fabric.broadcast((loss, finite), src=0)
        if loss is not None and not math.isfinite(loss):
            diverge(f"validation loss {loss}", state.step)
            return False
        if not finite:
            diverge("weights not finite", state.step)
            return False
        state.val_loss = float("nan") if loss is None else loss
        # Patience counts validations that failed to improve by a meaningful margin.
        if loss is not None and loss < state.best_val_loss - MIN_IMPROVEMENT:
            state.evals_since_best = 0
        elif loss is not None:
            state.evals_since_best += 1
        if getattr(task, "veto", None) is None and (loss is None or loss < state.best_val_loss):
            # No validation loss (a GAN's losses say little about quality): keep the latest.
            if loss is not None:
                state.best_val_loss = loss
            weights = shards.weights() if shards is not None else net  # (a gather: on every rank)
            if zero:
                save_weights(weights, best_path)
        log({"step": state.step, "time": round(state.elapsed, 2), "val_loss": state.val_loss})
        emit("on_eval")
        return True

    emit("on_start")
    net.train()
    step_times: list[float] = []
    eval_s = 0.0  # what the last validation and checkpoint took
    loss_acc, loss_n = 0.0, 0
    aborted = False
    failed = False  # an error ends the loop: under FSDP, ranks may be gone for the final checkpoint's gather
    stepping = False  # from drawing a batch until the step is counted: the weights may be ahead of state.step
    backoffs, lr_scale = 0, 1.0  # a task's vetoes so far, and the lr's scale since (see TrainConfig.veto_backoffs)
    # The budget is wall seconds: steps, validations, checkpoints, logging and callbacks between
    # steps all count (timing the step bodies alone let a 300 s tabgpt run end at 310 s).
    clock, clock_base = time.perf_counter(), state.elapsed + (setup_s if zero else 0.0)
    state.elapsed = clock_base  # (the other ranks read rank 0's clock at every step)
    with StopFlag() as stop:
        try:
            while True:
                reason = _stop_reason(cfg, state, stop.requested)
                if world > 1:  # rank 0's clock and verdict for all; a Ctrl-C on any rank stops every rank
                    reason, state.elapsed = agree(fabric, reason, state.elapsed, stop.requested)
                if reason:
                    state.stop_reason = reason
                    break
                stepping = True
                t0 = time.perf_counter()
                state.lr = lr_at(cfg, state.step, state.elapsed) * lr_scale
                factor = state.lr / cfg.lr
                for opt in optimizers:
                    for group in opt.param_groups:
                        group["lr"] = group["base_lr"] * factor
                x, y = task.batch(gen)
                if world > 1:
                    x, y = share(x, rank, world), share(y, rank, world)
                x = x.to(fabric.device)
                y = y.to(fabric.device) if y is not None else None
                if owns_step:
                    with fabric.autocast():
                        losses = net.training_step(x, y, optimizers, backward)
                else:
                    _, loss = model(x, y)
                    fabric.backward(loss)
                    if cfg.grad_clip:  # a non-finite norm is no error here: the loss check below stops the run
                        fabric.clip_gradients(model, optimizers[0], max_norm=cfg.grad_clip,
                                              error_if_nonfinite=False)
                    optimizers[0].step()
                    optimizers[0].zero_grad(set_to_none=True)
                    losses = {"loss": loss.item()}  # after the step, as before: no extra device sync
                if world > 1:  # the global batch's loss, as one process would report it
                    losses = mean_over_ranks(fabric, losses)
                loss_value = losses["loss"]
                if owns_step:
                    state.extra = losses
                bad = {k: v for k, v in losses.items() if not math.isfinite(v)}
                if bad:  # this step's update is garbage: stop before anything saves it
                    diverge(", ".join(f"{k} {v}" for k, v in bad.items()), state.step + 1)
                    break
                state.step += 1
                stepping = False
                loss_acc += loss_value
                loss_n += 1
                dt = time.perf_counter() - t0
                state.elapsed = clock_base + time.perf_counter() - clock
                state.tokens_seen += task.tokens_per_batch
                step_times.append(dt)
                recent = step_times[-20:]
                state.tokens_per_s = task.tokens_per_batch * len(recent) / sum(recent)
                state.train_loss = loss_acc / loss_n
                state.eta_s = _eta(state, cfg, sum(recent) / len(recent))
                if state.step % 10 == 0 or state.step == cfg.max_steps:
                    log({"step": state.step, "time": round(state.elapsed, 2), "train_loss": state.train_loss,
                         "lr": state.lr, RATE_KEYS.get(state.unit, f"{state.unit}_per_s"): round(state.tokens_per_s),
                         **{k: v for k, v in state.extra.items() if k != "loss"}})
                    loss_acc, loss_n = 0.0, 0
                emit("on_step")
                if state.step % cfg.eval_every == 0:
                    t_eval = time.perf_counter()
                    if not validate():
                        break
                    checkpoint()
                    good_step = state.step
                    eval_s = time.perf_counter() - t_eval
                    if getattr(task, "veto", None) is not None:  # (its weights were not kept)
                        if backoffs >= cfg.veto_backoffs or not best_path.exists() or world > 1 or fsdp:
                            state.stop_reason = task.veto
                            break
                        backoffs += 1
                        lr_scale /= 2
                        load_weights(net, best_path)
                        for opt in optimizers:
                            opt.state.clear()  # its moments point the way that was vetoed
                        task.veto = None
                        log({"step": state.step, "time": round(state.elapsed, 2), "backoff": backoffs,
                             "lr_scale": lr_scale})
                state.reserve_s = sum(recent) / len(recent) + 2 * eval_s
                state.elapsed = clock_base + time.perf_counter() - clock
            if state.stop_reason not in ("interrupted", "diverged") and state.step % cfg.eval_every:
                validate()  # the weights of the last step compete for "best" too
        except KeyboardInterrupt:
            # A second Ctrl-C may land inside an optimizer step: keep the previous checkpoint.
            state.stop_reason = "interrupted"
            aborted = True
        except Exception as e:
            failed = True
            if world == 1 or isinstance(e, AigcError):
                raise
            # Another rank died (its peers see a closed connection at their next collective) or
            # this one failed: one line that says so, instead of a collective's traceback.
            kept = good_step if stepping or fsdp else state.step  # (FSDP: the final checkpoint needs every rank)
            raise ProcessLost(lost_message(e, state.step, world, kept)) from e
        finally:
            # Otherwise every completed step is resumable, whatever ended the loop: a first
            # signal only sets a flag that the loop reads between steps. Diverged weights are
            # never written: last.pt keeps the last good ones, to resume from with a lower lr.
            # Nor is a step that failed halfway: its batch is drawn, its update maybe made. Under
            # FSDP with several ranks a failed job keeps its last periodic checkpoint: gathering the
            # shards needs every rank.
            gone = failed and fsdp and world > 1
            if state.step and not aborted and not diverged and not stepping and not gone:
                checkpoint()
            if metrics is not None:
                metrics.close()
            if writer is not None:
                writer.close()
    if world > 1 and not aborted:  # (an abort leaves the others to fail at their next collective)
        fabric.barrier()  # rank 0's checkpoint and best weights are written before any rank reads them
    if diverged:
        emit("on_end")
        raise Diverged(_diverged_message(diverged, diverged_at, good_step, cfg.lr))
    if state.stop_reason != "interrupted" and best_path.exists():
        # The best weights get one validation on the whole split: the figure reported for the run.
        if shards is not None:
            shards.load_weights(best_path)
        else:
            load_weights(net, best_path)
        evaluated.eval()
        loss = task.evaluate(evaluated, full=True)
        state.val_loss = state.best_val_loss = float("nan") if loss is None else loss
    if math.isfinite(state.best_val_loss) and hasattr(task, "loss_figures"):
        state.val_figures = task.loss_figures(state.best_val_loss)
    emit("on_end")
    return state


def _stop_reason(cfg: TrainConfig, state: TrainState, interrupted: bool) -> str:
    if cfg.max_steps and state.step >= cfg.max_steps:
        return "max_steps"
    if cfg.time_budget and state.elapsed + state.reserve_s >= cfg.time_budget and state.step:  # (setup may spend it all: one step)
        return "time_budget"
    if cfg.patience and state.evals_since_best >= cfg.patience:
        return "early_stopping"
    return "interrupted" if interrupted else ""


def _finite(model: nn.Module) -> bool:
    return all(bool(torch.isfinite(t).all()) for t in model.state_dict().values() if t.is_floating_point())


def _diverged_message(what: str, step: int, good_step: int, lr: float) -> str:
    if good_step:
        return (f"training diverged at step {step} ({what}): the run keeps the weights of step {good_step}, "
                f"its last good validation; lower --lr (it was {lr:g}) and continue with --resume, "
                "or train again")
    return (f"training diverged at step {step} ({what}) before its first validation: "
            f"train again with a lower --lr (it was {lr:g})")


def _eta(state: TrainState, cfg: TrainConfig, sec_per_step: float) -> float:
    by_steps = (cfg.max_steps - state.step) * sec_per_step if cfg.max_steps else math.inf
    if cfg.time_budget:
        return max(0.0, min(by_steps, cfg.time_budget - state.elapsed))
    return by_steps

