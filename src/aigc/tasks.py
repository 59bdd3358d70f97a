"""Tasks: what the training loop needs from a kind of data, a batch and a validation loss.

``TextLMTask`` samples windows of a token stream; ``ImageTask`` samples images (and labels).
Both keep their data in memory as tensors: the datasets this project trains on a CPU fit.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from aigc.data.textstream import TokenStream, eval_windows, random_windows
from aigc.errors import InvalidInput
from aigc.training import TrainConfig


def nll_sum(model: nn.Module, x: Tensor, y: Tensor, batch_size: int = 64) -> tuple[float, int]:
    """Summed negative log-likelihood (nats) and scored-token count over windows x, y (W, T)."""
    device = next(model.parameters()).device
    total, count = 0.0, 0
    with torch.inference_mode():
        for i in range(0, len(x), batch_size):
            xb, yb = x[i : i + batch_size].to(device), y[i : i + batch_size].to(device)
            logits, _ = model(xb)
            loss = torch.nn.functional.cross_entropy(
                logits.flatten(0, 1).float(), yb.flatten(), ignore_index=-100, reduction="sum"
            )
            total += loss.item()
            count += int((yb != -100).sum())
    return total, count


class TextLMTask:
    """Next-token prediction on random windows of the train stream; validation on the val stream."""

    unit = "tok"

    def __init__(self, train: TokenStream, val: TokenStream, block_size: int, cfg: TrainConfig,
                 aligned: float = 0.0, cond_dropout: float = 0.0, null_of: Tensor | None = None):
        if len(train) < 2:
            raise InvalidInput("the train split is too small to train on: ingest more text")
        if not 0 <= cond_dropout < 1:
            raise InvalidInput(f"--cond-dropout must be in [0, 1) (0 = off), got {cond_dropout}")
        self.train = train
        self.aligned = aligned  # share of windows that start at a record (see random_windows)
        # Records whose control tokens become null tokens (see random_windows); needs null tokens.
        self.cond_dropout = cond_dropout if null_of is not None else 0.0
        self.null_of = null_of
        self.block_size = block_size
        self.batch_size = cfg.batch_size
        self.tokens_per_batch = cfg.batch_size * min(block_size, len(train) - 1)
        self.periodic = eval_windows(val, block_size, cfg.eval_tokens)
        self.full = eval_windows(val, block_size)

    def batch(self, generator: torch.Generator) -> tuple[Tensor, Tensor]:
        return random_windows(self.train.ids, self.block_size, self.batch_size, generator,
                              self.train.starts, self.aligned, self.train.is_cond, self.null_of,
                              self.cond_dropout)

    def evaluate(self, model: nn.Module, full: bool = False) -> float:
        total, count = nll_sum(model, *(self.full if full else self.periodic))
        return total / max(1, count)

    def loss_figures(self, loss: float) -> dict[str, float]:
        return {"val_bits_per_token": loss / math.log(2)}


class ImageTask:
    """Random batches of train images; validation averages the family's ``validation_losses``."""

    EVAL_IMAGES = 512  # periodic validation looks at this many evenly spaced val images
    # ... and the final one at up to this many: on 6,000 Fashion-MNIST val images a diffusion
    # model's final validation took 170 s after a 300 s budget (benchmarks/robustness_images.py);
    # 2,048 evenly spaced images keep a budgeted run near its budget
    FULL_EVAL_IMAGES = 2048
    unit = "img"

    def __init__(self, train_images: Tensor, train_labels: Tensor | None, val_images: Tensor,
                 val_labels: Tensor | None, cfg: TrainConfig):
        if len(train_images) < 1:
            raise InvalidInput("the train split holds no images: ingest more")
        self.images, self.labels = train_images, train_labels  # (N, C, H, W) float in [0, 1]; (N,) long
        self.val_images, self.val_labels = val_images, val_labels
        self.batch_size = cfg.batch_size
        self.tokens_per_batch = cfg.batch_size  # the throughput unit here is images

    def batch(self, generator: torch.Generator) -> tuple[Tensor, Tensor | None]:
        index = torch.randint(0, len(self.images), (self.batch_size,), generator=generator)
        return self.images[index], (self.labels[index] if self.labels is not None else None)

    def evaluate(self, model: nn.Module, full: bool = False) -> float | None:
        n = len(self.val_images)
        if n == 0:
            return None
        index = torch.arange(n)
        most = self.FULL_EVAL_IMAGES if full else self.EVAL_IMAGES
        if n > most:
            index = torch.linspace(0, n - 1, most).long()
        device = next(model.parameters()).device
        total, count = 0.0, 0
        # a fixed seed: families whose validation draws noise (diffusion) score every checkpoint alike
        state = torch.get_rng_state()
        torch.manual_seed(0)
        try:
            for chunk in index.split(256):
                labels = self.val_labels[chunk].to(device) if self.val_labels is not None else None
                losses = model.validation_losses(self.val_images[chunk].to(device), labels)
                if "loss" not in losses:
                    return None  # a family without a validation loss (a GAN)
                total += losses["loss"] * len(chunk)
                count += len(chunk)
        finally:
            torch.set_rng_state(state)
        return total / count


class TableTask:
    """Random batches of a table's encoded train rows; validation averages the family's
    ``validation_losses`` over the encoded val rows (None when the family has none, or the val
    split is empty: the loop then keeps the latest weights)."""

    unit = "row"
    EVAL_ROWS = 8192  # periodic validations look at this many evenly spaced val rows; the final one at all

    def __init__(self, train: Tensor, val: Tensor | None, cfg: TrainConfig):
        if len(train) < 1:
            raise InvalidInput("the train split holds no rows: ingest more")
        self.train, self.val = train, val
        self.batch_size = min(cfg.batch_size, len(train))
        self.tokens_per_batch = self.batch_size  # the throughput unit is rows

    def batch(self, generator: torch.Generator) -> tuple[Tensor, None]:
        index = torch.randint(0, len(self.train), (self.batch_size,), generator=generator)
        return self.train[index], None

    def evaluate(self, model: nn.Module, full: bool = False) -> float | None:
        if self.val is None or len(self.val) == 0:
            return None
        rows = self.val
        if not full and len(rows) > self.EVAL_ROWS:
            rows = rows[torch.linspace(0, len(rows) - 1, self.EVAL_ROWS).long()]
        device = next((p.device for p in model.parameters()), torch.device("cpu"))
        state = torch.get_rng_state()
        torch.manual_seed(0)  # families whose validation draws noise (a VAE) score every checkpoint alike
        total, count = 0.0, 0
        try:
            with torch.no_grad():
                for chunk in rows.split(4096):
                    losses = model.validation_losses(chunk.to(device))
                    if "loss" not in losses:
                        return None
                    total += float(losses["loss"]) * len(chunk)
                    count += len(chunk)
        finally:
            torch.set_rng_state(state)
        return total / count
