"""The one training loop (Lightning Fabric keeps it ours): devices, precision, schedule,
evaluation, checkpoints, resume, time budget, early stopping, and hooks for observers.

A *task* supplies what differs between kinds of data: batches, the loss of one step, and
validation. This module knows nothing about tokenizers, catalogs or the command line; the
caller (``aigc.runs``) owns the run folder's other files and the catalog row.

Checkpoints are written to a temporary file and renamed, so a process killed while writing
leaves the previous good ``last.pt`` in place. A loss or weights that are no longer finite stop
the run (:class:`Diverged`) before anything of them is saved: ``model.safetensors`` and
``last.pt`` keep the last good weights.
"""

from __future__ import annotations

import json
import math
import os
import random
import signal
import time
import uuid
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Protocol

import torch
from torch import Tensor, nn

from aigc.errors import AigcError, InvalidInput

WARMUP_SHARE_OF_BUDGET = 0.2
# metrics.jsonl names the throughput in the task's unit (TrainState.unit)
RATE_KEYS = {"tok": "tokens_per_s", "img": "images_per_s", "row": "rows_per_s"}
MIN_IMPROVEMENT = 1e-4  # nats: smaller validation gains do not reset early-stopping patience


class Diverged(AigcError):
    """A training or validation loss (or the weights) stopped being finite. The run keeps the
    weights of its last good validation; the message names the step and the fix."""


@dataclass
class TrainConfig:
    max_steps: int = 3000  # 0 = no step cap: the time budget alone governs (only with one)
    time_budget: float = 0.0  # seconds; 0 = none. The LR schedule then follows the clock too
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
    seed: int = 1337
    tokenizer: str = "char"  # char | bpe
    vocab_size: int = 2048  # bpe only
    precision: str = ""  # "" = auto: bf16-mixed on a capable GPU, else 32-true
    cond_dropout: float = 0.1  # conditional text: share of records whose control tokens train as null (CFG)

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
        if not 0 <= self.cond_dropout < 1:
            raise InvalidInput(f"--cond-dropout must be in [0, 1), got {self.cond_dropout}")


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
    elapsed: float = 0.0  # seconds of training, summed over resumed sessions
    time_budget: float = 0.0
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
    extra: dict[str, float] = field(default_factory=dict)
    val_figures: dict[str, float] = field(default_factory=dict)  # the best val loss in the task's terms


class Task(Protocol):
    """What the loop needs from a kind of data. ``tokens_per_batch`` counts the unit of the
    throughput figure, which ``unit`` names as progress shows it (``tok`` for text, ``img`` for
    image families). ``evaluate`` returns the mean validation loss, or None for a family that
    has none (a GAN). An optional ``loss_figures(loss)`` gives a validation loss in the data's
    own terms for the run's summary, e.g. ``{"val_bits_per_token": ...}``."""

    def batch(self, generator: torch.Generator) -> tuple[Tensor, Tensor | None]: ...

    def evaluate(self, model: nn.Module, full: bool = False) -> float | None: ...

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


class _StopFlag:
    """SIGINT/SIGTERM ask the loop to stop after the current step; a second Ctrl-C aborts at once."""

    def __init__(self) -> None:
        self.requested = False
        self._old: dict[int, Any] = {}

    def __enter__(self) -> "_StopFlag":
        if threading_main():
            for sig in (signal.SIGINT, signal.SIGTERM):
                self._old[sig] = signal.signal(sig, self._handle)
        return self

    def _handle(self, signum, frame) -> None:  # noqa: ANN001
        if self.requested and signum == signal.SIGINT:
            raise KeyboardInterrupt
        self.requested = True

    def __exit__(self, *exc) -> None:
        for sig, old in self._old.items():
            signal.signal(sig, old)


def threading_main() -> bool:
    import threading

    return threading.current_thread() is threading.main_thread()


def atomic_save(obj: Any, path: Path) -> None:
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex[:8]}.tmp")
    try:
        torch.save(obj, tmp)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def _tensor_groups(state: dict[str, torch.Tensor]) -> dict[tuple, list[str]]:
    """A state dict's names grouped by the tensor they hold: a group of two or more is a tied
    weight (the gpt's head and embedding)."""
    groups: dict[tuple, list[str]] = {}
    for name, t in state.items():
        key = (t.device, t.untyped_storage().data_ptr(), t.storage_offset(), tuple(t.shape), t.stride())
        groups.setdefault(key, []).append(name)
    return groups


def save_weights(model: nn.Module, path: Path) -> None:
    """Write ``model``'s weights as safetensors, atomically; :func:`load_weights` reads them back.

    A tied weight is stored once, under its first name. Every tensor is copied to storage of its
    own first: on CUDA, cuDNN packs an LSTM's weights into one flat buffer, and safetensors'
    ``save_model`` refuses such views ("None is covering the entire storage")."""
    from safetensors.torch import save_file

    state = model.state_dict()
    tensors = {names[0]: state[names[0]].detach().clone() for names in _tensor_groups(state).values()}
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex[:8]}.tmp")
    try:
        save_file(tensors, str(tmp), metadata={"format": "pt"})
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def load_weights(model: nn.Module, path: Path) -> None:
    """Load weights written by :func:`save_weights` (or safetensors' ``save_model``) into ``model``,
    on whatever device it is; a tied weight needs only one of its names in the file."""
    from safetensors.torch import load_file

    missing, unexpected = model.load_state_dict(load_file(str(path)), strict=False)
    lost = [names[0] for names in _tensor_groups(model.state_dict()).values() if all(n in missing for n in names)]
    if lost or unexpected:
        raise RuntimeError(f"{path.name} does not fit the model: missing {lost[:5]}, unexpected {unexpected[:5]}")


def load_run_weights(model: nn.Module, run_dir: Path, name: str) -> None:
    """A run's best weights (``model.safetensors``), else its last checkpoint's (a run interrupted
    before its first validation)."""
    weights = run_dir / "model.safetensors"
    if weights.exists():
        load_weights(model, weights)
    elif (run_dir / "checkpoints" / "last.pt").exists():
        ckpt = torch.load(run_dir / "checkpoints" / "last.pt", map_location="cpu", weights_only=False)
        model.load_state_dict(ckpt["model"])
    else:
        raise InvalidInput(f"run {name!r} has no weights yet: train it with `aigc train --resume {name}`")


def fit(
    model: nn.Module,
    task: Task,
    cfg: TrainConfig,
    run_dir: Path,
    callbacks: list = (),  # type: ignore[assignment]
    resume: bool = False,
) -> TrainState:
    """Train ``model`` on ``task``. Writes ``checkpoints/last.pt``, ``model.safetensors`` (best
    validation), ``metrics.jsonl`` and TensorBoard events under ``run_dir``."""
    from lightning.fabric import Fabric

    from aigc.runtime import default_device, default_precision

    cfg.validate()
    device = default_device()
    fabric = Fabric(accelerator=device, devices=1, precision=cfg.precision or default_precision(device))
    ckpt_dir = run_dir / "checkpoints"
    ckpt_dir.mkdir(parents=True, exist_ok=True)
    last_path = ckpt_dir / "last.pt"
    best_path = run_dir / "model.safetensors"

    state = TrainState(max_steps=cfg.max_steps, time_budget=cfg.time_budget,
                       unit=getattr(task, "unit", "tok"))
    gen = torch.Generator().manual_seed(cfg.seed)
    torch.manual_seed(cfg.seed)
    random.seed(cfg.seed)
    # A family that owns its update (a GAN: two optimizers) brings its optimizers and its step.
    owns_step = hasattr(model, "training_step")
    optimizers = model.configure_optimizers(cfg.lr, cfg.weight_decay) if owns_step else [make_optimizer(model, cfg)]
    for opt in optimizers:
        for group in opt.param_groups:
            group.setdefault("base_lr", group["lr"])  # the schedule scales each group's own rate
    if resume:
        if not last_path.exists():
            raise InvalidInput(f"{run_dir.name} has no checkpoint to resume from: start it again without --resume")
        try:  # written atomically, so only a damaged disk or a foreign file gets here
            ckpt = torch.load(last_path, map_location="cpu", weights_only=False)
        except Exception as e:  # noqa: BLE001 (torch raises RuntimeError, EOFError, pickle errors...)
            raise InvalidInput(f"{last_path} is damaged ({type(e).__name__}): the run cannot resume; "
                               "train it again") from None
        model.load_state_dict(ckpt["model"])
        model.to(fabric.device)  # first: an optimizer loads its state onto its parameters' device
        for opt, opt_state in zip(optimizers, ckpt["optimizers"], strict=True):
            opt.load_state_dict(opt_state)
        gen.set_state(ckpt["rng"]["batches"])
        torch.set_rng_state(ckpt["rng"]["torch"])
        random.setstate(ckpt["rng"]["python"])
        for key in ("step", "elapsed", "best_val_loss", "evals_since_best", "tokens_seen", "val_loss"):
            setattr(state, key, ckpt["state"][key])
        _truncate_metrics(run_dir / "metrics.jsonl", state.step)
    good_step = state.step  # the step of the last weights known good: those in last.pt
    diverged, diverged_at = "", 0  # what stopped being finite, once something has, and at which step

    net = model  # the plain module: for saving and evaluation
    model, *optimizers = fabric.setup(model, *optimizers)
    writer = _tensorboard(run_dir / "tb")
    metrics = open(run_dir / "metrics.jsonl", "a", encoding="utf-8")

    def log(row: dict[str, Any]) -> None:
        metrics.write(json.dumps(row) + "\n")
        metrics.flush()
        if writer is not None:
            for key, value in row.items():
                if key not in ("step", "time") and isinstance(value, (int, float)):
                    writer.add_scalar(key, value, row["step"])

    def checkpoint() -> None:
        atomic_save(
            {
                "model": net.state_dict(),
                "optimizers": [opt.state_dict() for opt in optimizers],
                "rng": {"batches": gen.get_state(), "torch": torch.get_rng_state(), "python": random.getstate()},
                "state": {k: getattr(state, k) for k in
                          ("step", "elapsed", "best_val_loss", "evals_since_best", "tokens_seen", "val_loss")},
                "train_config": asdict(cfg),
            },
            last_path,
        )

    def diverge(what: str, step: int) -> None:
        nonlocal diverged, diverged_at
        diverged, diverged_at = what, step
        state.stop_reason = "diverged"

    def validate(full: bool = False) -> bool:
        """Validate and keep the best weights; False (and nothing saved) when they diverged."""
        net.eval()
        loss = task.evaluate(net, full=full)
        net.train()
        if loss is not None and not math.isfinite(loss):
            diverge(f"validation loss {loss}", state.step)
            return False
        if not _finite(net):  # the only check a family without a validation loss gets
            diverge("weights not finite", state.step)
            return False
        state.val_loss = float("nan") if loss is None else loss
        # Patience counts validations that failed to improve by a meaningful margin.
        if loss is not None and loss < state.best_val_loss - MIN_IMPROVEMENT:
            state.evals_since_best = 0
        elif loss is not None:
            state.evals_since_best += 1
        if loss is None or loss < state.best_val_loss:
            # No validation loss (a GAN's losses say little about quality): keep the latest.
            if loss is not None:
                state.best_val_loss = loss
            save_weights(net, best_path)
        log({"step": state.step, "time": round(state.elapsed, 2), "val_loss": state.val_loss})
        _emit(callbacks, "on_eval", state)
        return True

    _emit(callbacks, "on_start", state)
    net.train()
    step_times: list[float] = []
    loss_acc, loss_n = 0.0, 0
    aborted = False
    with _StopFlag() as stop:
        try:
            while True:
                if cfg.max_steps and state.step >= cfg.max_steps:
                    state.stop_reason = "max_steps"
                elif cfg.time_budget and state.elapsed >= cfg.time_budget:
                    state.stop_reason = "time_budget"
                elif cfg.patience and state.evals_since_best >= cfg.patience:
                    state.stop_reason = "early_stopping"
                elif stop.requested:
                    state.stop_reason = "interrupted"
                if state.stop_reason:
                    break
                t0 = time.perf_counter()
                state.lr = lr_at(cfg, state.step, state.elapsed)
                factor = state.lr / cfg.lr
                for opt in optimizers:
                    for group in opt.param_groups:
                        group["lr"] = group["base_lr"] * factor
                x, y = task.batch(gen)
                x = x.to(fabric.device)
                y = y.to(fabric.device) if y is not None else None
                if owns_step:
                    with fabric.autocast():
                        losses = net.training_step(x, y, optimizers, fabric.backward)
                    loss_value = losses["loss"]
                    state.extra = losses
                    bad = {k: v for k, v in losses.items() if not math.isfinite(v)}
                else:
                    _, loss = model(x, y)
                    fabric.backward(loss)
                    if cfg.grad_clip:  # a non-finite norm is no error here: the loss check below stops the run
                        fabric.clip_gradients(model, optimizers[0], max_norm=cfg.grad_clip,
                                              error_if_nonfinite=False)
                    optimizers[0].step()
                    optimizers[0].zero_grad(set_to_none=True)
                    loss_value = loss.item()  # after the step, as before: no extra device sync
                    bad = {} if math.isfinite(loss_value) else {"loss": loss_value}
                if bad:  # this step's update is garbage: stop before anything saves it
                    diverge(", ".join(f"{k} {v}" for k, v in bad.items()), state.step + 1)
                    break
                state.step += 1
                loss_acc += loss_value
                loss_n += 1
                dt = time.perf_counter() - t0
                state.elapsed += dt
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
                _emit(callbacks, "on_step", state)
                if state.step % cfg.eval_every == 0:
                    t_eval = time.perf_counter()
                    if not validate():
                        break
                    checkpoint()
                    good_step = state.step
                    state.elapsed += time.perf_counter() - t_eval  # the budget counts evaluation too
            if state.stop_reason not in ("interrupted", "diverged") and state.step % cfg.eval_every:
                validate()  # the weights of the last step compete for "best" too
        except KeyboardInterrupt:
            # A second Ctrl-C may land inside an optimizer step: keep the previous checkpoint.
            state.stop_reason = "interrupted"
            aborted = True
        finally:
            # Otherwise every completed step is resumable, whatever ended the loop: a first
            # signal only sets a flag that the loop reads between steps. Diverged weights are
            # never written: last.pt keeps the last good ones, to resume from with a lower lr.
            if state.step and not aborted and not diverged:
                checkpoint()
            metrics.close()
            if writer is not None:
                writer.close()
    if diverged:
        _emit(callbacks, "on_end", state)
        raise Diverged(_diverged_message(diverged, diverged_at, good_step, cfg.lr))
    if state.stop_reason != "interrupted" and best_path.exists():
        # The best weights get one validation on the whole split: the figure reported for the run.
        load_weights(net, best_path)
        net.eval()
        loss = task.evaluate(net, full=True)
        state.val_loss = state.best_val_loss = float("nan") if loss is None else loss
    if math.isfinite(state.best_val_loss) and hasattr(task, "loss_figures"):
        state.val_figures = task.loss_figures(state.best_val_loss)
    _emit(callbacks, "on_end", state)
    return state


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


def _tensorboard(path: Path):
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:  # tensorboard is a dependency, but an event file is not worth a crash
        return None
    return SummaryWriter(str(path))


def _truncate_metrics(path: Path, step: int) -> None:
    """On resume, forget metric rows past the checkpoint: they will be logged again. A row that
    does not parse is dropped too: a process killed while appending leaves half a last line."""
    if not path.exists():
        return
    keep = []
    for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
        try:
            row = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(row, dict) and isinstance(row.get("step"), int) and row["step"] <= step:
            keep.append(line)
    tmp = path.with_suffix(".tmp")
    tmp.write_text("".join(line + "\n" for line in keep), encoding="utf-8")
    os.replace(tmp, path)

