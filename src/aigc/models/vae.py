"""`vae`: a convolutional variational autoencoder (Kingma & Welling 2014), optionally class-conditional.

Encoder: ``depth`` stride-2 4x4 convs (channels double each time), flattened, (+ the class
embedding), a linear head to (mu, logvar). Decoder: the mirror image, z (+ the class embedding) ->
linear -> stride-2 transposed convs, the last one straight to pixel logits. Images are zero-padded
to a multiple of 2**depth on the way in and centre-cropped on the way out, so any size from 8 px up
works; 28x28 with depth 2 needs no padding (28 -> 14 -> 7 -> 14 -> 28). The class embedding joins
the encoder at its flattened features (the input of the latent head), not as extra image planes:
same information, and the convs stay as cheap as the unconditional model's.

The loss is the negative ELBO per image in nats: the reconstruction NLL summed over pixels
(Bernoulli: BCE with logits; Gaussian: NLL with a fixed or learned per-channel sigma) plus
``beta`` x KL(q(z|x) || N(0, I)), averaged over the batch. With the Bernoulli decoder and beta 1
this is the figure pytorch/examples' VAE prints as its test loss. Measured here on Fashion-MNIST
(batch 128, Adam 1e-3, one thread), test -ELBO after 3,000 steps: `small` 244.5 in 152 s;
pytorch/examples' MLP VAE 246.2 in 25 s. The conv net is a little better per step and slower per
second.

This module knows the network, its loss and its samplers; nothing about datasets, files or the loop.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from aigc.errors import InvalidInput
from aigc.models.checks import check_images, check_labels, sampling_labels


@dataclass
class VAEConfig:
    image_size: int = 28  # set from the dataset before building
    channels: int = 1  # set from the dataset
    num_classes: int = 0  # set from the dataset; 0 = unconditional
    latent_dim: int = 16
    width: int = 32  # channels after the first stride-2 conv; doubled by each further one
    depth: int = 2  # stride-2 stages: 28 px -> 7x7 features with 2
    label_dim: int = 16  # class-embedding width, concatenated to the encoder features and to z
    decoder: str = "bernoulli"  # bernoulli (BCE, for near-binary pixels) | gaussian (NLL with sigma below)
    sigma: float = 0.1  # gaussian only: pixel standard deviation (the starting value if learn_sigma)
    learn_sigma: bool = False  # gaussian only: learn one sigma per channel instead of fixing it
    beta: float = 1.0  # weight on the KL term in training (beta-VAE); validation reports the true ELBO


# -- objective ---------------------------------------------------------------------------------


def bernoulli_nll(logits: Tensor, images: Tensor, log_sigma: Tensor) -> Tensor:
    """Per-image -log p(x|z) under independent Bernoullis, summed over pixels: (B,)."""
    return F.binary_cross_entropy_with_logits(logits, images, reduction="none").flatten(1).sum(1)


def gaussian_nll(logits: Tensor, images: Tensor, log_sigma: Tensor) -> Tensor:
    """Per-image -log N(x; sigmoid(logits), sigma^2) summed over pixels, sigma per channel: (B,)."""
    mean = torch.sigmoid(logits)
    log_sigma = log_sigma.view(1, -1, 1, 1)  # (1, C, 1, 1)
    nll = 0.5 * ((images - mean) / log_sigma.exp()) ** 2 + log_sigma + 0.5 * math.log(2 * math.pi)
    return nll.flatten(1).sum(1)


# decoder name -> reconstruction NLL. Both decoders output logits; the pixel mean is sigmoid(logits).
RECONSTRUCTION: dict[str, Callable[[Tensor, Tensor, Tensor], Tensor]] = {
    "bernoulli": bernoulli_nll,
    "gaussian": gaussian_nll,
}


def kl_to_standard_normal(mu: Tensor, logvar: Tensor) -> Tensor:
    """KL(N(mu, exp(logvar)) || N(0, I)) summed over latent dimensions: (B,)."""
    return 0.5 * (mu.pow(2) + logvar.exp() - 1.0 - logvar).sum(1)


def slerp(a: Tensor, b: Tensor, t: Tensor) -> Tensor:
    """Spherical interpolation between latents a, b (D,) at fractions t (N,) -> (N, D).

    Linear interpolation between two Gaussian draws passes through vectors of unusually small norm
    (atypical under the prior, so blurry or grey images mid-way); slerp keeps the norm typical.
    """
    cos = (F.normalize(a, dim=0) * F.normalize(b, dim=0)).sum().clamp(-1.0, 1.0)
    omega = torch.acos(cos)
    if omega.abs() < 1e-4:  # nearly parallel: lerp is exact enough
        return torch.lerp(a[None], b[None], t[:, None])
    t = t[:, None]
    return (torch.sin((1 - t) * omega) * a + torch.sin(t * omega) * b) / torch.sin(omega)


# -- network -----------------------------------------------------------------------------------


class VAE(nn.Module):
    name = "vae"
    modality = "image"
    Config = VAEConfig
    PRESETS = {
        "tiny": dict(latent_dim=4, width=8, depth=2, label_dim=4),  # tests: 8-16 px, trains in seconds
        "small": dict(latent_dim=16, width=32, depth=2, label_dim=16),  # CPU minutes on 28x28 Fashion-MNIST
        "base": dict(latent_dim=32, width=64, depth=3, label_dim=32),  # a GPU, or 64 px images
    }
    # Training defaults per preset (any of them can be overridden on the command line).
    # Adam at 1e-3 with no weight decay, as in pytorch/examples; warm-up barely matters for a VAE.
    TRAIN_DEFAULTS = {
        "tiny": dict(max_steps=40, batch_size=16, lr=1e-2, warmup_steps=0, weight_decay=0.0, eval_every=20),
        "small": dict(max_steps=3000, batch_size=128, lr=1e-3, warmup_steps=50, weight_decay=0.0,
                      eval_every=250),
        "base": dict(max_steps=20000, batch_size=128, lr=1e-3, warmup_steps=200, weight_decay=0.0,
                     eval_every=1000),
    }
    progress_keys = ("loss", "recon", "kl")

    def __init__(self, config: VAEConfig):
        super().__init__()
        _check_config(config)
        self.config = config
        c, w, d = config.channels, config.width, config.depth
        stride = 2**d
        self.padded = -(-config.image_size // stride) * stride  # zero-padded side, a multiple of 2**depth
        self.feat_side = self.padded // stride  # side of the deepest feature map (7 for 28 px, depth 2)
        feat_dim = w * 2 ** (d - 1) * self.feat_side**2
        label_dim = config.label_dim if config.num_classes else 0

        # encoder: (B, C, P, P) -> (B, w*2^(d-1), P/2^d, P/2^d). Only stride-2 convs: on a CPU a
        # full-resolution 3x3 layer costs as much as a whole stage below it and adds little.
        layers: list[nn.Module] = []
        ch_in = c
        for i in range(d):
            layers += [nn.Conv2d(ch_in, w * 2**i, 4, stride=2, padding=1), nn.LeakyReLU(0.2)]
            ch_in = w * 2**i
        self.encoder = nn.Sequential(*layers)
        self.to_latent = nn.Linear(feat_dim + label_dim, 2 * config.latent_dim)  # -> (mu, logvar)

        # decoder: z (+ label) -> (B, w*2^(d-1), side, side) -> (B, C, P, P) logits
        self.from_latent = nn.Linear(config.latent_dim + label_dim, feat_dim)
        layers = []
        for i in reversed(range(d)):
            ch_out = w * 2 ** (i - 1) if i else c  # the last stage outputs the pixel logits
            layers += [nn.ReLU(), nn.ConvTranspose2d(w * 2**i, ch_out, 4, stride=2, padding=1)]
        self.decoder = nn.Sequential(*layers)

        # One class embedding shared by encoder and decoder: the label means the same thing to both.
        self.label_embed = nn.Embedding(config.num_classes, label_dim) if config.num_classes else None
        # log sigma per channel; a parameter only when learned (a frozen one is ignored by the optimizer)
        log_sigma = torch.full((c,), math.log(config.sigma))
        self.log_sigma = nn.Parameter(log_sigma, requires_grad=config.learn_sigma)

    @property
    def conditional(self) -> bool:
        return self.config.num_classes > 0

    # -- the two halves --------------------------------------------------------------------

    def encode(self, images: Tensor, labels: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """images (B, C, H, W) in [0, 1] -> posterior mean and log-variance, (B, latent_dim) each."""
        self._check_images(images)
        pad = self.padded - self.config.image_size
        x = F.pad(images, (pad // 2, pad - pad // 2) * 2) if pad else images  # (B, C, P, P)
        h = self.encoder(x).flatten(1)  # (B, feat_dim)
        if self.conditional:
            h = torch.cat([h, self.label_embed(self._labels(labels, len(images)))], dim=1)
        mu, logvar = self.to_latent(h).chunk(2, dim=1)
        return mu, logvar.clamp(-30.0, 20.0)  # exp() stays finite in float32

    def decode_logits(self, z: Tensor, labels: Tensor | None = None) -> Tensor:
        """z (B, latent_dim) -> pixel logits (B, C, H, W); the pixel mean is their sigmoid."""
        if self.conditional:
            z = torch.cat([z, self.label_embed(self._labels(labels, len(z)))], dim=1)
        s = self.feat_side
        h = self.from_latent(z).view(len(z), -1, s, s)  # (B, w*2^(d-1), s, s)
        logits = self.decoder(h)  # (B, C, P, P)
        pad = self.padded - self.config.image_size
        if pad:
            lo, size = pad // 2, self.config.image_size
            logits = logits[:, :, lo : lo + size, lo : lo + size]
        return logits

    def decode(self, z: Tensor, labels: Tensor | None = None) -> Tensor:
        """z (B, latent_dim) -> images (B, C, H, W) in [0, 1] (the decoder's mean, not a pixel sample)."""
        return torch.sigmoid(self.decode_logits(z, labels))

    def forward(self, images: Tensor, labels: Tensor | None = None) -> tuple[Tensor, Tensor, Tensor]:
        """images -> (pixel logits, mu, logvar) with z drawn by the reparameterisation trick."""
        mu, logvar = self.encode(images, labels)
        z = mu + torch.randn_like(mu) * (0.5 * logvar).exp()  # z = mu + sigma * eps, eps ~ N(0, I)
        return self.decode_logits(z, labels), mu, logvar

    def losses(self, images: Tensor, labels: Tensor | None, beta: float) -> dict[str, Tensor]:
        """Batch means, in nats per image: recon, kl, and loss = recon + beta * kl."""
        logits, mu, logvar = self(images, labels)
        recon = RECONSTRUCTION[self.config.decoder](logits, images, self.log_sigma).mean()
        kl = kl_to_standard_normal(mu, logvar).mean()
        return {"loss": recon + beta * kl, "recon": recon, "kl": kl}

    # -- the training contract --------------------------------------------------------------

    def configure_optimizers(self, lr: float, weight_decay: float) -> list[torch.optim.Optimizer]:
        params = [p for p in self.parameters() if p.requires_grad]
        return [torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay)]

    def training_step(
        self, images: Tensor, labels: Tensor | None, optimizers: list, backward: Callable[[Tensor], None]
    ) -> dict[str, float]:
        (opt,) = optimizers
        opt.zero_grad(set_to_none=True)
        out = self.losses(images, labels, self.config.beta)
        backward(out["loss"])
        opt.step()
        return {k: v.item() for k, v in out.items()}

    @torch.no_grad()
    def validation_losses(self, images: Tensor, labels: Tensor | None) -> dict[str, float]:
        """The negative ELBO (beta 1, whatever beta trains) in nats per image, plus its two terms.

        z is drawn from a fixed-seed generator, so the figure is repeatable and the global RNG
        (which drives training) is left untouched.
        """
        mu, logvar = self.encode(images, labels)
        gen = torch.Generator(device=mu.device).manual_seed(0)
        eps = torch.randn(mu.shape, generator=gen, device=mu.device, dtype=mu.dtype)
        logits = self.decode_logits(mu + eps * (0.5 * logvar).exp(), labels)
        recon = RECONSTRUCTION[self.config.decoder](logits, images, self.log_sigma).mean().item()
        kl = kl_to_standard_normal(mu, logvar).mean().item()
        return {"loss": recon + kl, "recon": recon, "kl": kl}

    @torch.no_grad()
    def sample(
        self, n: int, condition: Tensor | None = None, generator: torch.Generator | None = None
    ) -> Tensor:
        """n images (n, C, H, W) in [0, 1] decoded from z ~ N(0, I).

        z is drawn before any random classes, so a seed gives the same latents whatever the condition.
        """
        device = self.log_sigma.device
        z = torch.randn(n, self.config.latent_dim, generator=generator, device=device)
        return self.decode(z, self._condition(n, condition, generator))

    # -- extras ------------------------------------------------------------------------------

    @torch.no_grad()
    def reconstruct(self, images: Tensor, labels: Tensor | None = None) -> Tensor:
        """Encode and decode through the posterior mean: (B, C, H, W) in [0, 1]."""
        mu, _ = self.encode(images, labels)
        return self.decode(mu, labels)

    @torch.no_grad()
    def style_transfer(self, images: Tensor, labels_from: Tensor, labels_to: Tensor) -> Tensor:
        """Keep each image's encoded latent (its "style"), decode it under another class."""
        if not self.conditional:
            raise InvalidInput("style transfer needs a class-conditional vae: train it on a labelled dataset")
        mu, _ = self.encode(images, labels_from)
        return self.decode(mu, labels_to)

    @torch.no_grad()
    def interpolate(
        self,
        n_steps: int,
        generator_a_seed: int,
        generator_b_seed: int,
        condition: int | Tensor | None = None,
    ) -> Tensor:
        """n_steps images (n_steps, C, H, W) along the slerp from seed a's latent to seed b's.

        Each seed's latent is the first draw of ``sample``'s generator, so the ends are what
        ``sample(1, condition, generator=torch.Generator().manual_seed(seed))`` gives. One class
        for every frame: ``condition``, or (conditional model, None) the class seed a draws.
        """
        if n_steps < 2:
            raise InvalidInput(f"interpolate needs n_steps >= 2, got {n_steps}")
        device = self.log_sigma.device
        ga = torch.Generator(device=device).manual_seed(generator_a_seed)
        gb = torch.Generator(device=device).manual_seed(generator_b_seed)
        za = torch.randn(1, self.config.latent_dim, generator=ga, device=device)[0]
        zb = torch.randn(1, self.config.latent_dim, generator=gb, device=device)[0]
        if isinstance(condition, int):
            condition = torch.tensor([condition])
        label = self._condition(1, condition, ga)
        z = slerp(za, zb, torch.linspace(0, 1, n_steps, device=device))  # (n_steps, latent_dim)
        return self.decode(z, None if label is None else label.expand(n_steps))

    def config_dict(self) -> dict:
        return asdict(self.config)

    # -- argument checks ---------------------------------------------------------------------

    def _check_images(self, images: Tensor) -> None:
        check_images(images, self.config.channels, self.config.image_size, "vae")

    def _labels(self, labels: Tensor | None, n: int) -> Tensor:
        return check_labels(labels, n, self.config.num_classes, "vae", self.log_sigma.device)

    def _condition(self, n: int, condition: Tensor | None, generator: torch.Generator | None) -> Tensor | None:
        num_classes = self.config.num_classes if self.conditional else 0
        return sampling_labels(n, condition, num_classes, "vae", self.log_sigma.device, generator)


def _check_config(config: VAEConfig) -> None:
    if config.decoder not in RECONSTRUCTION:
        raise InvalidInput(f"vae decoder must be one of {', '.join(RECONSTRUCTION)}, got {config.decoder!r}")
    if config.image_size < 8:
        raise InvalidInput(f"vae image_size must be >= 8 px, got {config.image_size}")
    if config.channels < 1:
        raise InvalidInput(f"vae channels must be >= 1, got {config.channels}")
    if config.num_classes < 0:
        raise InvalidInput(f"vae num_classes must be >= 0 (0 = unconditional), got {config.num_classes}")
    if config.depth < 1 or 2**config.depth > config.image_size:
        raise InvalidInput(f"vae depth must be 1..{int(math.log2(config.image_size))} for "
                           f"{config.image_size} px, got {config.depth}")
    for key in ("latent_dim", "width"):
        if getattr(config, key) < 1:
            raise InvalidInput(f"vae {key} must be >= 1, got {getattr(config, key)}")
    if config.num_classes and config.label_dim < 1:
        raise InvalidInput(f"vae label_dim must be >= 1 for a conditional model, got {config.label_dim}")
    if not config.sigma > 0:
        raise InvalidInput(f"vae sigma must be > 0, got {config.sigma}")
    if config.beta < 0:
        raise InvalidInput(f"vae beta must be >= 0, got {config.beta}")
