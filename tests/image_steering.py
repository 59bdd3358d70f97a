"""A two-class image set that a rule can classify, for the "labels steer" tests of the image families.

Class 0 lights the left half of the image, class 1 the right half, at a random brightness in
[0.6, 1.0]; the rule that names the class of any image compares the two halves' means. A model
whose samples for class k obey the rule learned what its label means, which "the outputs differ"
never showed.
"""

from __future__ import annotations

import torch


def halves(n: int, size: int = 8, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """(images (n, 1, size, size) in [0, 1], labels (n,)), the classes in turn."""
    g = torch.Generator().manual_seed(seed)
    labels = torch.arange(n) % 2
    level = 0.6 + 0.4 * torch.rand(n, generator=g)
    cols = torch.arange(size)
    lit = (cols[None, :] >= size // 2) == labels[:, None].bool()  # (n, size): the lit columns
    images = (lit[:, None, None, :] * level[:, None, None, None]).expand(n, 1, size, size).contiguous()
    return images, labels


def side(images: torch.Tensor) -> torch.Tensor:
    """(n,) the class the rule gives each image: 1 when the right half is brighter, else 0."""
    h = images.shape[-1] // 2
    return (images[..., h:].mean(dim=(1, 2, 3)) > images[..., :h].mean(dim=(1, 2, 3))).long()


def train_on_halves(model, steps: int, batch: int, lr: float, size: int = 8) -> None:
    """``steps`` training steps of ``model`` (a class-conditional image family) on :func:`halves`."""
    opts = model.configure_optimizers(lr=lr, weight_decay=0.0)
    images, labels = halves(256, size)
    g = torch.Generator().manual_seed(1)
    model.train()
    for _ in range(steps):
        idx = torch.randint(len(images), (batch,), generator=g)
        model.training_step(images[idx], labels[idx], opts, lambda loss: loss.backward())
    model.eval()


def obeyed(model, n: int = 32, **options) -> list[float]:
    """Per class k, the share of ``n`` samples asked for k that the rule names k."""
    shares = []
    for k in (0, 1):
        samples = model.sample(n, torch.full((n,), k), torch.Generator().manual_seed(3), **options)
        shares.append((side(samples) == k).float().mean().item())
    return shares
