"""The files training keeps in a run folder, and how they are read back: checkpoints
(``torch.save``) and weights (safetensors), each written to a temporary file and renamed, so a
process killed while writing leaves the previous good file in place; a tied weight stored once;
a run's best weights or, before its first validation, its last checkpoint's. Also the metrics log
(cut back to a checkpoint's step on resume) and the TensorBoard events. The loop
(:mod:`aigc.training`) decides what to write and when; this module knows only how.
"""

from __future__ import annotations

import json
import os
import uuid
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from aigc.errors import InvalidInput


def atomic_save(obj: Any, path: Path) -> None:
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex[:8]}.tmp")
    try:
        torch.save(obj, tmp)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def tensor_groups(state: dict[str, torch.Tensor]) -> dict[tuple, list[str]]:
    """A state dict's names grouped by the tensor they hold: a group of two or more is a tied
    weight (the gpt's head and embedding)."""
    groups: dict[tuple, list[str]] = {}
    for name, t in state.items():
        key = (t.device, t.untyped_storage().data_ptr(), t.storage_offset(), tuple(t.shape), t.stride())
        groups.setdefault(key, []).append(name)
    return groups


def save_weights(model: nn.Module | dict[str, Tensor], path: Path) -> None:
    """Write ``model``'s weights (a module, or its state dict: FSDP's gathered from the shards) as
    safetensors, atomically; :func:`load_weights` reads them back.

    A tied weight is stored once, under its first name. Every tensor is copied to storage of its
    own first: on CUDA, cuDNN packs an LSTM's weights into one flat buffer, and safetensors'
    ``save_model`` refuses such views ("None is covering the entire storage")."""
    from safetensors.torch import save_file

    state = model if isinstance(model, dict) else model.state_dict()
    tensors = {names[0]: state[names[0]].detach().clone() for names in tensor_groups(state).values()}
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
    lost = [names[0] for names in tensor_groups(model.state_dict()).values() if all(n in missing for n in names)]
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


def tensorboard(path: Path):
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:  # tensorboard is a dependency, but an event file is not worth a crash
        return None
    return SummaryWriter(str(path))


def truncate_metrics(path: Path, step: int) -> None:
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
