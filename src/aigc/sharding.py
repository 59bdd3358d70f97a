"""FSDP's side of the training loop (:mod:`aigc.training`): the plain state of a model sharded
over ranks, gathered from the shards and loaded back into them with
``torch.distributed.checkpoint``'s full-state-dict functions, and the conversion of an optimizer
state between FSDP's parameter-name keys and ``torch.optim``'s indices. Checkpoints stay in the
plain form, so a run moves freely between FSDP, DDP and one device. Also what FSDP can train: a
family that takes its own step cannot be sharded (:func:`require_loop_step`)."""

from __future__ import annotations

from itertools import chain
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor, nn

from aigc.errors import InvalidInput

if TYPE_CHECKING:
    from lightning.fabric import Fabric

    from aigc.training import TrainConfig


def require_loop_step(cfg: TrainConfig, family: type | nn.Module) -> None:
    """Refuse FSDP for a family that owns its step (``training_step``: a GAN's two optimizers, a
    VAE's or a diffusion model's own losses). It calls its submodules and methods directly, never
    the sharded module's forward, where FSDP gathers the weights; DDP trains it (the loop averages
    its gradients, :func:`aigc.distributed.average_gradients`)."""
    if cfg.strategy == "fsdp" and hasattr(family, "training_step"):
        raise InvalidInput(owns_step_message(family))


def owns_step_message(family: type | nn.Module) -> str:
    name = getattr(family, "name", None) or getattr(family, "__name__", type(family).__name__)
    return (f"--strategy fsdp trains families whose step the loop takes (gpt, lstm, tabgpt); {name} takes "
            "its own training step, which FSDP cannot shard: use --strategy ddp")


def uses_fsdp(fabric: Fabric) -> bool:
    from lightning.fabric.strategies import FSDPStrategy

    return isinstance(fabric.strategy, FSDPStrategy)


def optimizer_param_names(model: nn.Module, optimizer: torch.optim.Optimizer) -> list[list[str]]:
    """Each param group's parameter names, in the optimizer's order: the names
    ``torch.distributed.checkpoint`` keys FSDP's optimizer state by (a tied weight's first name)."""
    name_of: dict[int, str] = {}
    for name, p in model.named_parameters():
        name_of.setdefault(id(p), name)
    return [[name_of[id(p)] for p in group["params"]] for group in optimizer.param_groups]


def plain_optimizer_state(named: dict[str, Any], names: list[list[str]]) -> dict[str, Any]:
    """An optimizer state keyed by parameter names (``get_optimizer_state_dict``'s, under FSDP) as
    ``torch.optim`` saves it: the parameters numbered 0, 1, ... in the order of ``names``
    (:func:`optimizer_param_names`), so that a plain optimizer loads it (DDP, one device)."""
    if [sorted(group["params"]) for group in named["param_groups"]] != [sorted(group) for group in names]:
        raise ValueError("the optimizer state names other parameters than the optimizer holds")
    index = {name: i for i, name in enumerate(chain.from_iterable(names))}
    return {"state": {index[n]: named["state"][n] for n in index if n in named["state"]},
            "param_groups": [{**group, "params": [index[n] for n in group_names]}
                             for group, group_names in zip(named["param_groups"], names)]}


def named_optimizer_state(plain: dict[str, Any], names: list[list[str]]) -> dict[str, Any]:
    """The reverse of :func:`plain_optimizer_state`: what ``set_optimizer_state_dict`` loads into an
    FSDP model's optimizer, from a checkpoint written under FSDP, DDP or on one device."""
    if [len(group["params"]) for group in plain["param_groups"]] != [len(group) for group in names]:
        raise ValueError("the optimizer state holds other parameter groups than the optimizer")
    flat = list(chain.from_iterable(names))
    return {"state": {flat[i]: s for i, s in plain["state"].items()},
            "param_groups": [{**group, "params": list(group_names)}
                             for group, group_names in zip(plain["param_groups"], names)]}


class FullState:
    """Under FSDP, the plain state of a model and its optimizers: gathered from the ranks' shards
    and loaded back into them with ``torch.distributed.checkpoint``'s full-state-dict functions.
    Each method is a collective: every rank calls it, in the same order."""

    def __init__(self, fabric: Fabric, model: nn.Module, optimizers: list[torch.optim.Optimizer],
                 ties: list[list[str]]):
        # Before ``fabric.setup``: the plain module's tied weights (``ties``: the names of each; the
        # gathered state holds a copy under each name) and the names its optimizers' parameters go by
        self.ties = ties
        self.names = [optimizer_param_names(model, opt) for opt in optimizers]
        self.optimizers, self.zero, self.device = optimizers, fabric.is_global_zero, fabric.device
        self.root: nn.Module | None = None

    def attach(self, model: nn.Module) -> None:
        """``model``: what ``fabric.setup`` returned; its FSDP module is what the functions take."""
        from torch.distributed.fsdp import FullyShardedDataParallel

        self.root = next(m for m in model.modules() if isinstance(m, FullyShardedDataParallel))

    def _options(self, gather: bool):
        from torch.distributed.checkpoint.state_dict import StateDictOptions

        # A gather with cpu_offload lands on rank 0's CPU alone (the others get nothing). On CPU (FSDP
        # runs there in tests only) torch 2.13 crashes offloading: every rank then gets the whole copy.
        # A load takes the whole state on every rank
        return StateDictOptions(full_state_dict=True, cpu_offload=gather and self.device.type != "cpu")

    def _tie(self, weights: dict[str, Tensor]) -> dict[str, Tensor]:
        for names in self.ties:
            if names[0] in weights:
                for name in names[1:]:
                    weights[name] = weights[names[0]]
        return weights

    def weights(self) -> dict[str, Tensor]:
        """The whole model's weights, tied as in the plain module (complete on rank 0)."""
        from torch.distributed.checkpoint.state_dict import get_model_state_dict

        return self._tie(get_model_state_dict(self.root, options=self._options(gather=True)))

    def optimizer_states(self) -> list[dict[str, Any]]:
        """Each optimizer's whole state, index-keyed as ``torch.optim`` saves it (rank 0's; the
        other ranks get empty dicts)."""
        from torch.distributed.checkpoint.state_dict import get_optimizer_state_dict

        options = self._options(gather=True)
        named = [get_optimizer_state_dict(self.root, opt, options=options) for opt in self.optimizers]
        if not self.zero:
            return [{} for _ in named]
        return [plain_optimizer_state(state, names) for state, names in zip(named, self.names)]

    def load_weights(self, path: Path) -> None:
        """Weights written by :func:`aigc.checkpoints.save_weights` into the shards (every rank reads
        the file)."""
        from safetensors.torch import load_file
        from torch.distributed.checkpoint.state_dict import set_model_state_dict

        set_model_state_dict(self.root, self._tie(load_file(str(path))),
                             options=self._options(gather=False))

    def load_optimizer_states(self, states: list[dict[str, Any]]) -> None:
        """Index-keyed optimizer states (a checkpoint's, from FSDP, DDP or one device) into the shards."""
        from torch.distributed.checkpoint.state_dict import set_optimizer_state_dict

        for opt, state, names in zip(self.optimizers, states, self.names, strict=True):
            set_optimizer_state_dict(self.root, opt, named_optimizer_state(state, names),
                                     options=self._options(gather=False))

    def finite(self, fabric: Fabric) -> bool:
        """Whether every rank's shard of the weights is finite (each rank holds only its own)."""
        with torch.no_grad():
            mine = all(bool(torch.isfinite(t.detach()).all()) for t in chain(self.root.parameters(),
                                                                             self.root.buffers())
                       if t.is_floating_point())
        ok = fabric.all_reduce(torch.tensor(float(mine), device=fabric.device), reduce_op="sum")
        return int(ok.item()) == fabric.world_size
