"""`vqvae`: a vector-quantised autoencoder (van den Oord et al. 2017) with an EMA codebook.

    images (B, C, H, W) --encoder--> z_e (B, D, h, w) --nearest code--> indices (B, h, w)
                                                          --codebook--> z_q (B, D, h, w) --decoder--> images

The codebook is not trained by gradients: each code moves to the exponential moving average of
the encoder outputs assigned to it (the paper's appendix A.1), with Laplace smoothing of the
counts so a rarely used code is not divided by zero. Gradients reach the encoder through the
straight-through estimator, and a commitment loss keeps the encoder outputs near their codes.

Codes that no encoder output chose for ``dead_after`` steps are *restarted*: moved onto random
encoder outputs of the current batch (Dhariwal et al. 2020, Jukebox). Without it a VQ-VAE on
MNIST kept 2 of its 512 codes in use; with it all 512 (test MSE 0.029 -> 0.0043).

A VQ-VAE alone cannot sample: new images come from a *prior* over the code grid. The prior is
a text family (``gpt``) trained on the row-major flattened indices (:meth:`VQVAE.indices_to_tokens`);
whoever trains it attaches ``prior_sampler`` and then :meth:`VQVAE.sample` works.

This module knows the autoencoder, its losses and its codebook. It knows nothing about datasets,
the prior's training, or files.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from aigc.errors import InvalidInput

# (n, condition, generator) -> code indices (n, h, w) long
PriorSampler = Callable[[int, Tensor | None, torch.Generator | None], Tensor]


@dataclass
class VQVAEConfig:
    image_size: int = 28  # set from the dataset before building
    channels: int = 1  # set from the dataset
    num_classes: int = 0  # set from the dataset; the autoencoder ignores labels (the prior uses them)
    hidden: int = 64  # conv width at the latent resolution (half of it at the first downsampling)
    n_res: int = 2  # residual blocks at the latent resolution, in the encoder and in the decoder
    downsample: int = 2  # stride-2 convolutions: 28 -> 14 -> 7 gives a 7x7 grid of 49 codes
    codebook_size: int = 512  # K; also the vocabulary of the prior
    code_dim: int = 64  # D, width of one code vector
    commitment: float = 0.25  # beta in the paper; weight of ||z_e - sg(z_q)||^2
    ema_decay: float = 0.99  # codebook moving average (the paper's gamma)
    ema_eps: float = 1e-5  # Laplace smoothing of the code counts
    restart_dead_codes: bool = True  # re-seed unused codes from the batch's encoder outputs
    dead_after: int = 50  # steps a code may go unchosen before it is restarted


class ResBlock(nn.Module):
    """x + conv1x1(relu(conv3x3(relu(x)))), as in the paper's encoder and decoder."""

    def __init__(self, width: int):
        super().__init__()
        self.net = nn.Sequential(
            nn.ReLU(), nn.Conv2d(width, width, 3, padding=1), nn.ReLU(), nn.Conv2d(width, width, 1)
        )

    def forward(self, x: Tensor) -> Tensor:
        return x + self.net(x)


class Encoder(nn.Module):
    """(B, C, H, W) in [-1, 1] -> (B, D, H / 2^downsample, W / 2^downsample)."""

    def __init__(self, c: VQVAEConfig):
        super().__init__()
        layers: list[nn.Module] = []
        width_in = c.channels
        for i in range(c.downsample):
            width = c.hidden if i == c.downsample - 1 else c.hidden // 2
            layers += [nn.Conv2d(width_in, width, 4, stride=2, padding=1), nn.ReLU()]  # halves H and W
            width_in = width
        layers += [nn.Conv2d(width_in, c.hidden, 3, padding=1)]
        layers += [ResBlock(c.hidden) for _ in range(c.n_res)]
        layers += [nn.ReLU(), nn.Conv2d(c.hidden, c.code_dim, 1)]
        self.net = nn.Sequential(*layers)

    def forward(self, x: Tensor) -> Tensor:
        return self.net(x)


class Decoder(nn.Module):
    """(B, D, h, w) -> (B, C, h * 2^downsample, w * 2^downsample), predicting pixels in [0, 1]."""

    def __init__(self, c: VQVAEConfig):
        super().__init__()
        layers: list[nn.Module] = [nn.Conv2d(c.code_dim, c.hidden, 3, padding=1)]
        layers += [ResBlock(c.hidden) for _ in range(c.n_res)]
        width_in = c.hidden
        for i in range(c.downsample):
            last = i == c.downsample - 1
            width = c.channels if last else c.hidden // 2
            # doubles H and W
            layers += [nn.ReLU(), nn.ConvTranspose2d(width_in, width, 4, stride=2, padding=1)]
            width_in = width
        self.net = nn.Sequential(*layers)

    def forward(self, z: Tensor) -> Tensor:
        return self.net(z)


class Codebook(nn.Module):
    """K code vectors of width D, moved by exponential moving averages, never by gradients.

    Buffers (all in the state_dict, so a resumed run continues exactly):
    ``embedding`` (K, D) the codes; ``cluster_size`` (K,) and ``embed_sum`` (K, D) the moving
    averages of how many vectors each code received and of their sum; ``unused_for`` (K,) steps
    since each code was last chosen.
    """

    def __init__(self, c: VQVAEConfig):
        super().__init__()
        self.decay, self.eps = c.ema_decay, c.ema_eps
        embedding = torch.randn(c.codebook_size, c.code_dim)
        self.register_buffer("embedding", embedding)
        # Start as if each code had been chosen once, at its own position: an unused code then
        # stays where it is (embed_sum / cluster_size = embedding) instead of collapsing to 0.
        self.register_buffer("cluster_size", torch.ones(c.codebook_size))
        self.register_buffer("embed_sum", embedding.clone())
        self.register_buffer("unused_for", torch.zeros(c.codebook_size, dtype=torch.long))

    @property
    def size(self) -> int:
        return self.embedding.shape[0]

    def nearest(self, z: Tensor) -> Tensor:
        """z (N, D) -> index of the nearest code (N,), by squared Euclidean distance."""
        e = self.embedding
        # ||z - e||^2 = ||z||^2 - 2 z.e + ||e||^2, without materialising (N, K, D)
        dist = z.pow(2).sum(1, keepdim=True) - 2 * z @ e.t() + e.pow(2).sum(1)[None]
        return dist.argmin(1)

    def lookup(self, indices: Tensor) -> Tensor:
        """indices (B, h, w) -> code vectors (B, D, h, w)."""
        return F.embedding(indices, self.embedding).permute(0, 3, 1, 2)

    @torch.no_grad()
    def ema_update(self, z: Tensor, indices: Tensor) -> None:
        """Move each code towards the mean of the vectors z (N, D) assigned to it (indices (N,))."""
        z = z.to(self.embedding.dtype)  # float32 statistics even under mixed precision
        onehot = F.one_hot(indices, self.size).type(z.dtype)  # (N, K)
        # out of autocast: on CUDA it would run the matrix product in bf16 and lerp_ refuses a bf16 end
        with torch.autocast(z.device.type, enabled=False):
            sums = onehot.t() @ z
        self.cluster_size.lerp_(onehot.sum(0), 1 - self.decay)  # N_i <- gamma N_i + (1 - gamma) n_i
        self.embed_sum.lerp_(sums, 1 - self.decay)  # m_i <- gamma m_i + (1 - gamma) sum z
        # Laplace smoothing: (N_i + eps) / (n + K eps) * n keeps the total n but no count at zero
        n = self.cluster_size.sum()
        smoothed = (self.cluster_size + self.eps) / (n + self.size * self.eps) * n
        self.embedding.copy_(self.embed_sum / smoothed[:, None])  # e_i = m_i / N_i

    @torch.no_grad()
    def restart_dead(self, z: Tensor, indices: Tensor, dead_after: int) -> int:
        """Re-seed codes unchosen for ``dead_after`` steps from random rows of z (N, D); returns how many."""
        z = z.to(self.embedding.dtype)
        used = torch.bincount(indices, minlength=self.size) > 0
        self.unused_for.add_(1).masked_fill_(used, 0)
        dead = (self.unused_for >= dead_after).nonzero().squeeze(1)
        if dead.numel() == 0:
            return 0
        pick = torch.randint(0, z.shape[0], (dead.numel(),), device=z.device)
        self.embedding[dead] = z[pick]
        self.embed_sum[dead] = z[pick]  # as if chosen once, by that vector
        self.cluster_size[dead] = 1.0
        self.unused_for[dead] = 0
        return dead.numel()


class VQVAE(nn.Module):
    name = "vqvae"
    modality = "image"
    # Under --time-budget the autoencoder gets this share and its gpt prior (the run's second stage)
    # what is left, so a run takes the budget it was given. An even split: not tuned.
    first_stage_budget_share = 0.5
    Config = VQVAEConfig
    PRESETS = {
        # tests: 8x8 -> 2x2 codes, 16x16 -> 4x4; trains in a second
        "tiny": dict(hidden=16, n_res=1, codebook_size=32, code_dim=8, dead_after=10),
        # CPU minutes on 28x28 Fashion-MNIST: a 7x7 grid of 512 codes (the prior sees 49 tokens).
        # Measured: 360 steps at batch 64 (45 s, one busy core) -> test MSE 0.010, 501 codes in use
        "small": dict(hidden=64, n_res=2, codebook_size=512, code_dim=64),
        # a GPU: 64x64 images -> 16x16 codes
        "base": dict(hidden=128, n_res=2, codebook_size=1024, code_dim=64, dead_after=100),
    }
    # Training defaults per preset (any of them can be overridden on the command line).
    # No weight decay: it pulls the encoder outputs towards zero, away from the codes.
    TRAIN_DEFAULTS = {
        "tiny": dict(max_steps=40, batch_size=16, lr=2e-3, warmup_steps=5, eval_every=20, weight_decay=0.0),
        "small": dict(max_steps=3000, batch_size=64, lr=1e-3, warmup_steps=100, eval_every=250,
                      weight_decay=0.0),
        "base": dict(max_steps=20000, batch_size=128, lr=3e-4, warmup_steps=500, eval_every=1000,
                     weight_decay=0.0),
    }
    progress_keys = ("recon", "commit", "usage")

    def __init__(self, config: VQVAEConfig):
        super().__init__()
        if config.image_size < 1 or config.channels < 1:
            raise ValueError("VQVAEConfig.image_size and channels must be set from the dataset before "
                             "building")
        if config.downsample < 1:
            raise InvalidInput(f"vqvae downsample must be >= 1, got {config.downsample}")
        if config.codebook_size < 2:
            raise InvalidInput(f"vqvae codebook_size must be >= 2, got {config.codebook_size}")
        self.config = config
        self.encoder = Encoder(config)
        self.codebook = Codebook(config)
        self.decoder = Decoder(config)
        # Sizes that do not halve evenly are padded up to a multiple of 2^downsample and cropped back.
        factor = 2**config.downsample
        self.padded_size = -(-config.image_size // factor) * factor
        self.prior_sampler: PriorSampler | None = None  # attached by whoever trains the prior; not saved

    # -- shapes and helpers ----------------------------------------------------------------

    @property
    def latent_shape(self) -> tuple[int, int]:
        side = self.padded_size // 2**self.config.downsample
        return side, side

    @property
    def codebook_size(self) -> int:
        return self.config.codebook_size

    def _pad(self, images: Tensor) -> Tensor:
        total = self.padded_size - self.config.image_size
        if not total:
            return images
        a = total // 2
        return F.pad(images, (a, total - a, a, total - a))  # 0 = black, the background of most sets

    def _crop(self, images: Tensor) -> Tensor:
        total = self.padded_size - self.config.image_size
        if not total:
            return images
        a = total // 2
        return images[..., a : a + self.config.image_size, a : a + self.config.image_size]

    def _check_images(self, images: Tensor) -> None:
        want = (self.config.channels, self.config.image_size, self.config.image_size)
        if images.dim() != 4 or tuple(images.shape[1:]) != want:
            shape = ", ".join(map(str, want))
            raise InvalidInput(f"vqvae expects images (B, {shape}), got {tuple(images.shape)}")

    # -- the network -----------------------------------------------------------------------

    def encode(self, images: Tensor) -> Tensor:
        """images (B, C, H, W) in [0, 1] -> z_e (B, D, h, w)."""
        self._check_images(images)
        return self.encoder(self._pad(images) * 2 - 1)  # the encoder sees [-1, 1], zero-centred

    def quantize(self, z_e: Tensor) -> tuple[Tensor, Tensor]:
        """z_e (B, D, h, w) -> (indices (B, h, w), z_q (B, D, h, w))."""
        B, D, h, w = z_e.shape
        indices = self.codebook.nearest(z_e.permute(0, 2, 3, 1).reshape(-1, D)).view(B, h, w)
        return indices, self.codebook.lookup(indices)

    def decode(self, z_q: Tensor) -> Tensor:
        """z_q (B, D, h, w) -> pixels (B, C, H, W), not clamped (the loss sees the raw prediction)."""
        return self._crop(self.decoder(z_q))

    def forward(self, images: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """images -> (reconstruction (B, C, H, W) unclamped, z_e, z_q, indices (B, h, w))."""
        z_e = self.encode(images)
        indices, z_q = self.quantize(z_e)
        if self.training:
            # straight-through estimator: the forward pass uses z_q, the backward pass copies
            # the decoder's gradient onto z_e as if quantisation were the identity
            z_dec = z_e + (z_q - z_e).detach()
        else:
            z_dec = z_q  # exactly the codes, so decoding indices reproduces this path bit for bit
        return self.decode(z_dec), z_e, z_q, indices

    def losses(self, images: Tensor) -> tuple[dict[str, Tensor], Tensor, Tensor]:
        """The objective: reconstruction MSE (pixels in [0, 1]) + beta * commitment. The codebook
        term of the paper is replaced by the EMA update. Returns (losses, z_e, indices)."""
        recon, z_e, z_q, indices = self(images)
        rec = F.mse_loss(recon, images)
        commit = F.mse_loss(z_e, z_q.detach())
        loss = rec + self.config.commitment * commit
        return {"loss": loss, "recon": rec, "commit": commit}, z_e, indices

    # -- the training contract -------------------------------------------------------------

    def configure_optimizers(self, lr: float, weight_decay: float) -> list[torch.optim.Optimizer]:
        # The codebook holds buffers, not parameters: it is not in the optimizer.
        decay = [p for p in self.parameters() if p.dim() >= 2]
        no_decay = [p for p in self.parameters() if p.dim() < 2]
        groups = [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
        return [torch.optim.AdamW(groups, lr=lr)]

    def training_step(
        self,
        images: Tensor,
        labels: Tensor | None,
        optimizers: list[torch.optim.Optimizer],
        backward: Callable[[Tensor], None],
    ) -> dict[str, float]:
        (opt,) = optimizers
        opt.zero_grad(set_to_none=True)
        out, z_e, indices = self.losses(images)
        backward(out["loss"])
        opt.step()
        # The codebook follows the encoder outputs of this batch (no gradients involved).
        z = z_e.detach().permute(0, 2, 3, 1).reshape(-1, self.config.code_dim)  # (N, D)
        flat = indices.reshape(-1)  # (N,)
        self.codebook.ema_update(z, flat)
        restarted = 0
        if self.config.restart_dead_codes:
            restarted = self.codebook.restart_dead(z, flat, self.config.dead_after)
        stats = {k: v.item() for k, v in out.items()}
        stats.update(_code_stats(flat, self.codebook.size))
        stats["restarted"] = float(restarted)
        return stats

    @torch.no_grad()
    def validation_losses(self, images: Tensor, labels: Tensor | None) -> dict[str, float]:
        out, _, indices = self.losses(images)
        stats = {k: v.item() for k, v in out.items()}
        stats.update(_code_stats(indices.reshape(-1), self.codebook.size))
        return stats

    # -- codes in and out ------------------------------------------------------------------

    @torch.no_grad()
    def reconstruct(self, images: Tensor) -> Tensor:
        """images (B, C, H, W) in [0, 1] -> their reconstruction through the codes, in [0, 1]."""
        return self(images)[0].clamp(0, 1)

    @torch.no_grad()
    def encode_indices(self, images: Tensor) -> Tensor:
        """images (B, C, H, W) in [0, 1] -> code indices (B, h, w) long."""
        return self.quantize(self.encode(images))[0]

    @torch.no_grad()
    def decode_indices(self, indices: Tensor) -> Tensor:
        """code indices (B, h, w) -> images (B, C, H, W) in [0, 1]."""
        self._check_indices(indices)
        return self.decode(self.codebook.lookup(indices)).clamp(0, 1)

    def _check_indices(self, indices: Tensor) -> None:
        h, w = self.latent_shape
        if indices.dim() != 3 or tuple(indices.shape[1:]) != (h, w):
            raise InvalidInput(f"vqvae code indices must be (B, {h}, {w}), got {tuple(indices.shape)}")
        if indices.dtype != torch.long:
            raise InvalidInput(f"vqvae code indices must be torch.long, got {indices.dtype}")
        if indices.numel() and (indices.min() < 0 or indices.max() >= self.codebook_size):
            raise InvalidInput(
                f"vqvae code indices must lie in 0..{self.codebook_size - 1}, "
                f"got {indices.min().item()}..{indices.max().item()}"
            )

    def indices_to_tokens(self, indices: Tensor) -> list[list[int]]:
        """(B, h, w) -> B token lists of length h*w, row-major: the prior's training sequences."""
        self._check_indices(indices)
        return indices.reshape(indices.shape[0], -1).tolist()

    def tokens_to_indices(self, tokens: list[list[int]] | Tensor) -> Tensor:
        """B token lists of length h*w (row-major) -> code indices (B, h, w) long."""
        h, w = self.latent_shape
        t = torch.as_tensor(tokens, dtype=torch.long, device=self.codebook.embedding.device)
        if t.dim() != 2 or t.shape[1] != h * w:
            raise InvalidInput(
                f"vqvae expects token rows of length {h * w} ({h}x{w} codes), got shape {tuple(t.shape)}"
            )
        indices = t.view(-1, h, w)
        self._check_indices(indices)
        return indices

    @torch.no_grad()
    def sample(
        self, n: int, condition: Tensor | None = None, generator: torch.Generator | None = None
    ) -> Tensor:
        """n images (n, C, H, W) in [0, 1]: codes drawn from the attached prior, then decoded."""
        if self.prior_sampler is None:
            raise InvalidInput("a vqvae samples through its prior: train the prior first")
        if n < 1:
            raise InvalidInput(f"n must be >= 1, got {n}")
        if condition is not None and condition.shape != (n,):
            raise InvalidInput(
                f"condition must hold one class id per image, shape ({n},), got {tuple(condition.shape)}"
            )
        indices = self.prior_sampler(n, condition, generator)
        if indices.dim() == 2:  # a prior may return flat token rows
            indices = self.tokens_to_indices(indices)
        if indices.shape[0] != n:
            raise InvalidInput(f"the prior returned {indices.shape[0]} code grids for n={n}")
        return self.decode_indices(indices.to(self.codebook.embedding.device))

    def config_dict(self) -> dict:
        return asdict(self.config)


def _code_stats(indices: Tensor, size: int) -> dict[str, float]:
    """usage: share of the K codes chosen at least once in the batch; perplexity: exp(entropy)
    of the batch's code distribution (K when all codes are used evenly, 1 when one code is)."""
    counts = torch.bincount(indices, minlength=size).float()
    p = counts / counts.sum()
    entropy = -(p * torch.log(p.clamp_min(1e-12))).sum().item()
    return {"usage": (counts > 0).float().mean().item(), "perplexity": math.exp(entropy)}
