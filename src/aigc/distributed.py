"""The processes of a training job, around the loop each of them runs (:mod:`aigc.training`).

:func:`launch` starts them (or joins the processes ``torchrun`` / ``fabric run`` started); the
callers that do not split their writes by rank refuse several (:func:`require_one_process`). At
each step the loop calls the collectives here: rank 0's stop reason and clock for every rank
(:func:`agree`), each rank's share of the global batch (:func:`share`), losses and gradients
averaged over the ranks. :class:`StopFlag` turns SIGINT/SIGTERM into a stop between steps. A
process that fails becomes one line (:class:`ProcessLost`) instead of a collective's traceback.
Nothing here writes files; FSDP's state lives in :mod:`aigc.sharding`.
"""

from __future__ import annotations

import os
import random
import re
import signal
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor, nn

from aigc.errors import AigcError, InvalidInput

if TYPE_CHECKING:
    from lightning.fabric import Fabric

    from aigc.training import TrainConfig

# The reasons rank 0 can stop a job for, by index: what the per-step all-reduce carries
STOP_REASONS = ("", "max_steps", "time_budget", "early_stopping", "interrupted")


class ProcessLost(AigcError):
    """A process of a multi-process job failed (killed, out of memory, its node gone): every
    other rank stops at its next collective; the run keeps its last checkpoint."""


class JobStopped(AigcError):
    """Raised on ranks above 0 when rank 0 stopped the job before training (rank 0's own error
    says why): the CLI of those ranks stays quiet."""


def launch(cfg: TrainConfig) -> Fabric:
    """Lightning Fabric for ``cfg``'s processes, started.

    One process (the default) is Fabric on this machine's device. Several: Fabric's launcher
    starts the other local ranks by running this command line again with ``LOCAL_RANK`` set, so
    the caller's code runs on every rank: launch before writing anything, and write on rank 0
    only (:func:`aigc.training.fit` does). Under ``torchrun`` or ``fabric run`` it joins the
    processes they started; called again in a launched process (a second training stage), it joins
    the same process group.
    """
    import torch.distributed as dist
    from lightning.fabric import Fabric
    from lightning.fabric.utilities.exceptions import MisconfigurationException

    from aigc.runtime import default_device, default_precision, share_threads

    cfg.validate()
    accelerator = cfg.accelerator or default_device()
    devices, nodes = _world_shape(cfg)
    if cfg.strategy == "fsdp" and accelerator != "cuda":  # Lightning runs FSDP on GPUs only
        raise InvalidInput("--strategy fsdp shards the model over GPUs and runs on CUDA only: "
                           "on CPU use --strategy ddp (or auto)")
    strategy: Any = "ddp" if devices * nodes > 1 and cfg.strategy == "auto" else cfg.strategy
    if strategy == "fsdp":
        from lightning.fabric.strategies import FSDPStrategy

        # Every rank starts from rank 0's weights, as under DDP. One FSDP unit (no auto-wrap policy):
        # the whole model is gathered for each forward, its shards kept between steps
        strategy = FSDPStrategy(sync_module_states=True)
    if accelerator == "cpu" and devices > 1 and not dist.is_initialized():
        share_threads(devices)  # once per process: the first launch
    _quiet_lightning()  # (its notes: each rank's start, "Using bfloat16 Automatic Mixed Precision")
    try:
        fabric = Fabric(accelerator=accelerator, devices=devices, num_nodes=nodes, strategy=strategy,
                        precision=cfg.precision or default_precision(accelerator))
    except (ValueError, RuntimeError, MisconfigurationException) as e:  # e.g. more GPUs asked than there are
        raise InvalidInput(f"cannot train on {devices} {accelerator} device(s) x {nodes} node(s): {e}") from None
    if strategy != "auto" and os.environ.get("LT_CLI_USED") != "1":  # `fabric run` has launched them already
        fabric.launch()
    return fabric


def _world_shape(cfg: TrainConfig) -> tuple[int, int]:
    """(processes per node, nodes): ``cfg``'s, or the launcher's when ``torchrun`` / ``fabric
    run`` started this process (their environment says; ``cfg`` left at 1 x 1 takes it)."""
    if not all(k in os.environ for k in ("LOCAL_WORLD_SIZE", "GROUP_RANK", "WORLD_SIZE")):
        return cfg.devices, cfg.num_nodes
    per_node = int(os.environ["LOCAL_WORLD_SIZE"])
    nodes = int(os.environ["WORLD_SIZE"]) // per_node
    if (cfg.devices, cfg.num_nodes) not in ((1, 1), (per_node, nodes)):
        raise InvalidInput(f"--devices {cfg.devices} --num-nodes {cfg.num_nodes} do not match the launcher's "
                           f"{per_node} process(es) per node on {nodes} node(s): drop them, or make them match")
    return per_node, nodes


def _quiet_lightning() -> None:
    """Lightning announces every rank's start and the precision plugin on the console; our own
    progress line says how many processes train. Its warnings, and the launcher's note when a rank
    dies, still show."""
    import logging

    import lightning_utilities.core.rank_zero as rank_zero  # its ``log`` is the logger Lightning set last

    for log in (logging.getLogger("lightning.fabric.utilities.distributed"), rank_zero.log):
        log.setLevel(logging.WARNING)


def launched_rank() -> bool:
    """Whether a launcher started this process as a rank of a job (Fabric's launcher sets
    ``LOCAL_RANK`` in the processes it starts, torchrun ``RANK`` in all)."""
    return "LOCAL_RANK" in os.environ or "RANK" in os.environ


def global_rank() -> int:
    """This process's rank in a launched job (0 outside one)."""
    import torch.distributed as dist

    return dist.get_rank() if dist.is_available() and dist.is_initialized() else 0


def require_one_process(cfg: TrainConfig, what: str) -> None:
    """Refuse several processes for a caller that does not split its own writes by rank."""
    if cfg.devices * cfg.num_nodes > 1 or int(os.environ.get("WORLD_SIZE") or 1) > 1:
        raise InvalidInput(f"{what} trains in one process: drop --devices/--num-nodes and do not start it "
                           "under torchrun or fabric run")
    if cfg.strategy == "fsdp":
        raise InvalidInput(f"{what} trains in one process, unsharded: drop --strategy fsdp")


class StopFlag:
    """SIGINT/SIGTERM ask the loop to stop after the current step; a second Ctrl-C aborts at once."""

    def __init__(self) -> None:
        self.requested = False
        self._old: dict[int, Any] = {}

    def __enter__(self) -> "StopFlag":
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


def agree(fabric: Fabric, reason: str, elapsed: float, interrupted: bool) -> tuple[str, float]:
    """Rank 0's stop reason and clock for every rank (the budget is the job's, and the
    learning-rate schedule follows the clock, so all ranks must read the same one); a stop asked
    on any rank (Ctrl-C, SIGTERM) stops all. One all-reduce of three numbers per step."""
    zero = fabric.global_rank == 0
    mine = [STOP_REASONS.index(reason) if zero else 0, elapsed if zero else 0.0, float(interrupted)]
    code, elapsed, stops = fabric.all_reduce(torch.tensor(mine, dtype=torch.float64, device=fabric.device),
                                             reduce_op="sum").tolist()
    return STOP_REASONS[int(code)] or ("interrupted" if stops else ""), elapsed


def share(batch: Tensor | None, rank: int, world: int) -> Tensor | None:
    """This rank's rows of the global batch: rank r of N takes the r-th of N equal slices."""
    return None if batch is None else batch.tensor_split(world)[rank]


def mean_over_ranks(fabric: Fabric, values: dict[str, float]) -> dict[str, float]:
    """Each named loss averaged over the ranks: the global batch's (a non-finite one on any rank
    makes it non-finite everywhere, so every rank stops at the same step)."""
    keys = sorted(values)  # the same order on every rank
    t = torch.tensor([values[k] for k in keys], dtype=torch.float64, device=fabric.device)
    mean = dict(zip(keys, (fabric.all_reduce(t, reduce_op="sum") / fabric.world_size).tolist()))
    return {k: mean[k] for k in values}


def average_gradients(fabric: Fabric, module: nn.Module) -> None:
    """Average ``module``'s gradients over the ranks in place: one all-reduce per dtype."""
    groups: dict[torch.dtype, list[Tensor]] = {}
    for p in module.parameters():
        if p.grad is not None:
            groups.setdefault(p.grad.dtype, []).append(p.grad)
    for grads in groups.values():
        flat = fabric.all_reduce(torch.cat([g.reshape(-1) for g in grads]), reduce_op="mean")
        for g, part in zip(grads, flat.split([g.numel() for g in grads])):
            g.copy_(part.view_as(g))


def seed_rank(seed: int, rank: int, step: int) -> None:
    """Seed the global generators (a diffusion model's noise, a GAN's z). Rank 0 draws what one
    process would, so its checkpoints resume exactly on one process; every other rank draws its
    own noise for its own samples, from its rank and the step it starts at."""
    s = seed + 1_000_003 * rank + step
    torch.manual_seed(s)
    random.seed(s)


def lost_message(e: Exception, step: int, world: int, kept: int) -> str:
    first = (str(e).strip().splitlines() or [""])[0]
    # gloo says "[.../pair.cc:537] Read error [addr]: Connection reset by peer. This is typically...":
    # the what, without its source line and its advice
    first = re.sub(r"^\[[^\]]*\]\s*", "", first).split(". ")[0]
    cause = f"{type(e).__name__}: {first[:160]}" if first else type(e).__name__
    keep = (f"the run keeps its checkpoint of step {kept}: continue with --resume" if kept
            else "no checkpoint was written yet: train again")
    return f"training stopped at step {step}: a process of the {world}-process job failed ({cause}); {keep}"
