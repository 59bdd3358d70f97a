"""Argument checks shared by the image families: image shapes and class labels.

Each family calls these from its own thin methods, so messages name the family and say the fix.
"""

from __future__ import annotations

import torch
from torch import Tensor

from aigc.errors import InvalidInput


def check_images(images: Tensor, channels: int, size: int, family: str) -> None:
    if images.dim() != 4 or tuple(images.shape[1:]) != (channels, size, size):
        raise InvalidInput(f"images must be (B, {channels}, {size}, {size}) for this {family}, "
                           f"got {tuple(images.shape)}")


def check_labels(labels: Tensor | None, n: int, num_classes: int, family: str, device: torch.device) -> Tensor:
    """The class ids a conditional model needs, checked: (n,) long in [0, num_classes)."""
    if labels is None:
        raise InvalidInput(f"this {family} is class-conditional ({num_classes} classes): pass one class id per image")
    labels = torch.as_tensor(labels, device=device).long().reshape(-1)
    if len(labels) != n:
        raise InvalidInput(f"got {len(labels)} labels for {n} images: pass one class id per image")
    if len(labels) and (labels.min() < 0 or labels.max() >= num_classes):
        raise InvalidInput(f"class ids must be in 0..{num_classes - 1}, got {labels.tolist()}")
    return labels


def sampling_labels(n: int, condition: Tensor | None, num_classes: int, family: str, device: torch.device,
                    generator: torch.Generator | None) -> Tensor | None:
    """Labels for sampling: none for an unconditional model; given (one broadcasts to all n), or
    uniformly random classes."""
    if not num_classes:
        return None
    if condition is None:
        return torch.randint(num_classes, (n,), generator=generator, device=device)
    condition = torch.as_tensor(condition, device=device).long().reshape(-1)
    if len(condition) == 1 and n > 1:
        condition = condition.expand(n)
    return check_labels(condition, n, num_classes, family, device)
