"""`tvae`: the tabular VAE of Xu et al. 2019 ("Modeling Tabular Data using Conditional GAN",
section 4.3), on the same encoding as ``ctgan``; our own PyTorch code.

- Rows are encoded by :class:`~aigc.models.table_encoding.DataTransformer` (modes, point
  masses, missing values and categories as one-hots, a scalar in [-1, 1] within each mode).
- Encoder: an MLP (``depth`` x ``width``, ReLU) to the mean and log-variance of q(z | row);
  decoder: an MLP from z (``latent_dim``) to the row's logits and pre-tanh scalars.
- Loss (per row, averaged over the batch): ``loss_factor`` x reconstruction + KL(q || N(0, I)).
  Reconstruction = cross-entropy on every softmax span (modes and categories) + a Gaussian
  negative log-likelihood of each scalar around tanh(decoder output), with a learned sigma per
  scalar (clamped to [0.01, 1] after each step), as CTGAN's reference TVAE.
- Adam (1e-3, weight decay 1e-5), constant rate.

Sampling: z ~ N(0, I) -> decoder; each scalar tanh(output) plus its learned sigma of Gaussian
noise, each softmax span one value drawn from its softmax (the reference takes the argmax, which
under-draws rare values), so the seed's torch.Generator fixes every row. No native conditions
(SUPPORTS_CONDITIONS = False): :meth:`sample` meets conditions by rejection.

Validation: the same loss on the val rows, the noise of z drawn with a fixed seed, so the loop's
early stopping and best-weights selection work as for any family with a validation loss.

Differential privacy (``epsilon`` > 0): DP-SGD on both networks (the encoder sees every row):
each row's gradient clipped to ``max_grad_norm`` (ghost clipping: the rows' gradient norms from
one backward, the clipped sum from a second, 0.03 s a step on adult against 0.4 s for explicit
per-row gradients), summed, plus Gaussian noise of the Opacus RDP accountant's multiplier for the
target (epsilon, delta) over ``dp_steps``; the privacy unit is one row. Not covered by epsilon:
the encoding (modes, ranges and categories of each column, fitted on the train rows: treat the
metadata as public). A DP run returns no validation loss, so no weights are chosen by the (real)
val rows: it keeps the latest. The epsilon spent is in every step's losses; :meth:`privacy`
gives the full account.

This module knows the networks, the loss and the sampler; nothing about files or the loop.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

import numpy as np
import pandas as pd
import torch
from torch import Tensor, nn

from aigc.errors import InvalidInput
from aigc.models.table_encoding import (
    TableFamily,
    TableFamilyConfig,
    check_conditions,
    check_family_config,
    dp_presets,
    dp_train_defaults,
    sample_by_rejection,
    segment_log_softmax,
    set_private_gradients_ghost,
)

SIGMA_RANGE = (0.01, 1.0)  # the learned scalar noise is clamped to this after every step


@dataclass
class TVAEConfig(TableFamilyConfig):
    latent_dim: int = 128  # z's dimensions
    width: int = 128  # units of each hidden layer, encoder and decoder
    depth: int = 2  # hidden layers of each
    loss_factor: float = 2.0  # weight of the reconstruction against the KL term (the reference's 2)


def mlp(in_dim: int, width: int, depth: int) -> tuple[nn.Sequential, int]:
    """``depth`` x (Linear, ReLU) and the width it ends at."""
    layers: list[nn.Module] = []
    dim = in_dim
    for _ in range(depth):
        layers += [nn.Linear(dim, width), nn.ReLU()]
        dim = width
    return nn.Sequential(*layers), dim


class Encoder(nn.Module):
    """rows (B, D) -> (mu, logvar) (B, latent) each."""

    def __init__(self, data_dim: int, width: int, depth: int, latent_dim: int):
        super().__init__()
        self.body, dim = mlp(data_dim, width, depth)
        self.mu = nn.Linear(dim, latent_dim)
        self.logvar = nn.Linear(dim, latent_dim)

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        h = self.body(x)
        return self.mu(h), self.logvar(h)


class Decoder(nn.Module):
    """z (B, latent) -> raw outputs (B, D): logits of the softmax spans, pre-tanh scalars."""

    def __init__(self, latent_dim: int, width: int, depth: int, data_dim: int):
        super().__init__()
        self.body, dim = mlp(latent_dim, width, depth)
        self.out = nn.Linear(dim, data_dim)

    def forward(self, z: Tensor) -> Tensor:
        return self.out(self.body(z))


class TVAE(TableFamily):
    name = "tvae"
    Config = TVAEConfig
    SUPPORTS_CONDITIONS = False
    PRESETS = {
        "tiny": dict(latent_dim=8, width=32, depth=1),  # tests: seconds
        "small": dict(latent_dim=128, width=128, depth=2),  # the reference's networks: CPU minutes
        "base": dict(latent_dim=128, width=256, depth=2),  # a GPU
        # DP: a narrower latent (fewer parameters to noise), 2,000 steps planned
        **dp_presets(dict(latent_dim=64, width=128, depth=2), steps=2000),
    }
    _TRAIN = dict(lr=1e-3, warmup_steps=0, weight_decay=1e-5, min_lr_ratio=1.0)
    TRAIN_DEFAULTS = {
        "tiny": dict(max_steps=60, batch_size=64, eval_every=20, **_TRAIN),
        "small": dict(max_steps=4000, batch_size=500, eval_every=500, **_TRAIN),
        "base": dict(max_steps=15000, batch_size=500, eval_every=1000, **_TRAIN),  # the reference's 300 epochs
        **dp_train_defaults(dict(batch_size=500, eval_every=500, **_TRAIN), steps=2000),
    }
    progress_keys = ("recon", "kl")

    @staticmethod
    def check_config(config: TVAEConfig) -> None:
        _check_config(config)

    def __init__(self, config: TVAEConfig, encoding: dict):
        super().__init__(config, encoding)  # the encoding, the DP ledger, the span positions
        self.encoder = Encoder(self.data_dim, config.width, config.depth, config.latent_dim)
        self.decoder = Decoder(config.latent_dim, config.width, config.depth, self.data_dim)
        self.sigma = nn.Parameter(torch.full((len(self.scalar_pos),), 0.1))  # the scalars' learned noise

    # -- the objective -----------------------------------------------------------------------------

    def row_losses(self, x: Tensor, eps: Tensor, params: dict[str, Tensor] | None = None) -> tuple[Tensor, Tensor]:
        """(reconstruction (B,), KL (B,)) of rows x (B, D) with z = mu + eps * std. ``params``
        (all of the model's, by name) stand in for the weights: per-example gradients use it."""
        if params is None:
            params = dict(self.named_parameters())
        mu, logvar = torch.func.functional_call(self.encoder, _under(params, "encoder."), (x,))
        z = mu + eps * torch.exp(0.5 * logvar)
        out = torch.func.functional_call(self.decoder, _under(params, "decoder."), (z,))
        sigma = params["sigma"]
        target = x[:, self.scalar_pos]
        gauss = ((target - torch.tanh(out[:, self.scalar_pos])) ** 2 / (2 * sigma**2) + torch.log(sigma)).sum(1)
        logp = segment_log_softmax(out[:, self.soft_pos], self.soft_seg, self.n_soft)
        ce = -(x[:, self.soft_pos] * logp).sum(1)  # one-hot targets: the cross-entropy of every span
        kl = -0.5 * (1 + logvar - mu**2 - logvar.exp()).sum(1)
        return gauss + ce, kl

    def forward(self, x: Tensor, y: Tensor | None = None) -> tuple[None, Tensor]:
        """(None, the mean loss of rows x (B, D)) with z's noise from torch's global generator."""
        recon, kl = self.row_losses(x, torch.randn(len(x), self.config.latent_dim, device=x.device))
        return None, (self.config.loss_factor * recon + kl).mean()

    # -- training ----------------------------------------------------------------------------------

    def configure_optimizers(self, lr: float, weight_decay: float) -> list[torch.optim.Optimizer]:
        """[Adam] over both networks and sigma (the reference's L2 as decoupled weight decay)."""
        return [torch.optim.AdamW(self.parameters(), lr=lr, weight_decay=weight_decay)]

    def training_step(self, x: Tensor, y: Tensor | None, optimizers: list,
                      backward: Callable[[Tensor], None]) -> dict[str, float]:
        """One Adam step on the loss (DP-SGD's clipped, noised gradients with DP)."""
        (opt,) = optimizers
        self.check_rows(x)
        opt.zero_grad(set_to_none=True)
        eps = torch.randn(len(x), self.config.latent_dim, device=x.device)
        if self.privacy_ledger is None:
            recon, kl = self.row_losses(x, eps)
            backward((self.config.loss_factor * recon + kl).mean())
        else:  # DP-SGD: each row's gradient clipped (ghost clipping: no per-row copies), then noised
            noise = self.privacy_ledger.step(len(x))
            parts: dict[str, Tensor] = {}

            def row_losses() -> tuple[Tensor, dict[str, Tensor]]:
                sigma_rows = self.sigma.expand(len(x), -1)  # sigma's per-row gradients, for its part of the norm
                r, k = self.row_losses(x, eps, {**dict(self.named_parameters()), "sigma": sigma_rows})
                parts["recon"], parts["kl"] = r.detach(), k.detach()
                return self.config.loss_factor * r + k, {"sigma": sigma_rows}

            set_private_gradients_ghost(self, row_losses, self.config.max_grad_norm, noise)
            recon, kl = parts["recon"], parts["kl"]
        opt.step()
        with torch.no_grad():
            self.sigma.clamp_(*SIGMA_RANGE)
        r, k = recon.mean().item(), kl.mean().item()
        out = {"loss": self.config.loss_factor * r + k, "recon": r, "kl": k}
        if self.privacy_ledger is not None:
            out["epsilon"] = self.privacy_ledger.epsilon()
        return out

    def validation_losses(self, x: Tensor, y: Tensor | None = None) -> dict[str, float]:
        """{"loss", "recon", "kl"} of the val rows x, z's noise drawn with seed 0; {} for a DP run
        (choosing weights by real val rows would spend privacy not counted)."""
        if self.privacy_ledger is not None or len(x) == 0:
            return {}
        gen = torch.Generator(device=x.device).manual_seed(0)
        eps = torch.randn(len(x), self.config.latent_dim, device=x.device, generator=gen)
        with torch.no_grad():
            recon, kl = self.row_losses(x, eps)
        r, k = recon.mean().item(), kl.mean().item()
        return {"loss": self.config.loss_factor * r + k, "recon": r, "kl": k}

    # -- sampling ----------------------------------------------------------------------------------

    @torch.no_grad()
    def sample(self, n: int, conditions: dict[str, Any] | None = None,
               generator: torch.Generator | None = None) -> pd.DataFrame:
        """n rows of the model frame; conditions ({column: value}) are met by rejection."""
        checked = check_conditions(self.transformer, conditions, "tvae")
        return sample_by_rejection(lambda m: self.transformer.inverse(self._generate(m, generator)), n, checked,
                                   "tvae")

    @torch.no_grad()
    def _generate(self, n: int, generator: torch.Generator | None) -> np.ndarray:
        device = self.sigma.device

        def rows(m: int) -> Tensor:
            out = self.decoder(torch.randn(m, self.config.latent_dim, device=device, generator=generator))
            noise = torch.randn(m, len(self.scalar_pos), device=device, generator=generator) * self.sigma
            return self.draw_rows(out, generator, noise)

        return self.in_chunks(n, self.data_dim, rows)


def _under(params: dict[str, Tensor], prefix: str) -> dict[str, Tensor]:
    """The entries of ``params`` under ``prefix``, with the prefix taken off."""
    return {k[len(prefix):]: v for k, v in params.items() if k.startswith(prefix)}


def _check_config(config: TVAEConfig) -> None:
    for key in ("latent_dim", "width"):
        if getattr(config, key) < 1:
            raise InvalidInput(f"tvae {key} must be >= 1, got {getattr(config, key)}")
    if config.depth < 0:
        raise InvalidInput(f"tvae depth must be >= 0, got {config.depth}")
    if not config.loss_factor > 0:
        raise InvalidInput(f"tvae loss_factor must be > 0, got {config.loss_factor}")
    check_family_config("tvae", config)
