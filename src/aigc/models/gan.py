"""`gan`: a DCGAN-style generative adversarial network, optionally class-conditional.

A GAN is a system of two models (Lightning's phrase): a generator G and a discriminator D, each
with its own Adam optimizer, trained by one D step then one G step per ``training_step``.

- G (Radford et al. 2016): [z, class embedding] -> linear -> (w*2^(depth-1), s, s) -> ``depth``
  stride-2 transposed convs (batch norm + ReLU between them) -> tanh. s = ceil(image_size / 2**depth),
  so 28 px with depth 2 is exactly 7 -> 14 -> 28; other sizes are generated a little larger and
  centre-cropped.
- D: ``depth`` stride-2 convs with leaky ReLU, optionally spectrally normalised
  (Miyato et al. 2018), features summed over space, then a linear score plus, for class-conditional
  models, the projection term <embed(y), features> (Miyato & Koyama 2018). Optionally (on in
  `small`) ProGAN's minibatch standard deviation (Karras et al. 2018) as one more input to the
  score, over groups of images of one class: the conditional G had collapsed within each class
  (recall 0.02 on Fashion-MNIST after 10 min); with it, at the same budget, FID 39.1 -> 19.0,
  recall 0.02 -> 0.16, conditional accuracy 93.0 % -> 87.0 %.
- Loss: hinge (SNGAN, BigGAN) or the non-saturating loss of Goodfellow et al. 2014.
- An exponential moving average of G's weights (a submodule, so it is in the state_dict) is what
  ``sample`` draws from: it gives smoother, steadier samples than the raw G at any given step.

Only stride-2 layers: on a CPU a full-resolution 3x3 conv (and its batch norm) costs as much as a
whole stage below it. The G step reuses the D step's fakes (as pytorch/examples' DCGAN does), and D
sees real and fake images in one pass. Measured here at batch 64 on 28x28, `small`, conditional:
8.0 steps/s on one thread and 11.5 on two (OMP_WAIT_POLICY=PASSIVE) against 3.2 and 5.0 for
pytorch/examples' DCGAN padded to 32x32, run alongside; recognisable garments of the asked class
after two minutes on Fashion-MNIST.

Images are in [0, 1] at the boundary and in [-1, 1] inside (tanh range).
This module knows the networks, the losses and the samplers; nothing about datasets, files or the loop.
"""

from __future__ import annotations

import copy
import math
from dataclasses import asdict, dataclass
from typing import Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.nn.utils.parametrizations import spectral_norm as _spectral_norm

from aigc.errors import InvalidInput
from aigc.models.checks import check_images, check_labels, sampling_labels


@dataclass
class GANConfig:
    image_size: int = 28  # set from the dataset before building
    channels: int = 1  # set from the dataset
    num_classes: int = 0  # set from the dataset; 0 = unconditional
    z_dim: int = 64  # noise dimensions
    label_dim: int = 32  # G's class-embedding width, concatenated to z
    g_width: int = 64  # G's channels before its last (pixel) layer; x2 per stage towards the start
    d_width: int = 64  # D's channels after its first stride-2 conv; x2 per further one
    depth: int = 2  # stride-2 stages in G and D: 7 -> 14 -> 28 for 28 px
    spectral_norm: bool = True  # on every D layer (and the projection embedding); keeps D 1-Lipschitz-ish
    loss: str = "hinge"  # hinge | ns (non-saturating)
    # Adam betas for both nets: SNGAN's (0.0, 0.9). DCGAN's (0.5, 0.999) collapsed each class to a
    # few modes within 1,400 steps on Fashion-MNIST here; (0.0, 0.9) kept them varied at equal time.
    beta1: float = 0.0
    beta2: float = 0.9
    ema_decay: float = 0.999  # EMA of G's weights; warmed up as min(decay, (1 + t) / (10 + t))
    # ProGAN's minibatch standard deviation: D also sees how much the images of a group of this
    # many (of one class, see training_step) differ, so a G that makes one image per class is
    # caught. 0 = off (runs saved before it existed load with 0).
    minibatch_std: int = 0


# -- objective ---------------------------------------------------------------------------------
# Each takes D's scores (B,) and returns a scalar; D wants real scores high and fake ones low.


def d_hinge(real: Tensor, fake: Tensor) -> Tensor:
    return F.relu(1.0 - real).mean() + F.relu(1.0 + fake).mean()


def g_hinge(fake: Tensor) -> Tensor:
    return -fake.mean()


def d_nonsaturating(real: Tensor, fake: Tensor) -> Tensor:
    # -log sigmoid(real) - log(1 - sigmoid(fake)), written with softplus for stability
    return F.softplus(-real).mean() + F.softplus(fake).mean()


def g_nonsaturating(fake: Tensor) -> Tensor:
    return F.softplus(-fake).mean()  # -log sigmoid(D(G(z))): strong gradients while D wins


# loss name -> (discriminator loss, generator loss)
LOSSES: dict[str, tuple[Callable[[Tensor, Tensor], Tensor], Callable[[Tensor], Tensor]]] = {
    "hinge": (d_hinge, g_hinge),
    "ns": (d_nonsaturating, g_nonsaturating),
}


def slerp(a: Tensor, b: Tensor, t: Tensor) -> Tensor:
    """Spherical interpolation between latents a, b (D,) at fractions t (N,) -> (N, D).

    Linear interpolation between two Gaussian draws passes through vectors of unusually small
    norm, which G never saw in training; slerp keeps the norm typical.
    """
    cos = (F.normalize(a, dim=0) * F.normalize(b, dim=0)).sum().clamp(-1.0, 1.0)
    omega = torch.acos(cos)
    if omega.abs() < 1e-4:  # nearly parallel: lerp is exact enough
        return torch.lerp(a[None], b[None], t[:, None])
    t = t[:, None]
    return (torch.sin((1 - t) * omega) * a + torch.sin(t * omega) * b) / torch.sin(omega)


# -- networks ----------------------------------------------------------------------------------


class Generator(nn.Module):
    """[z, embed(y)] (B, z_dim + label_dim) -> images (B, C, H, W) in [-1, 1]."""

    def __init__(self, config: GANConfig):
        super().__init__()
        c, w, d = config.channels, config.g_width, config.depth
        self.side = -(-config.image_size // 2**d)  # start side: 7 for 28 px at depth 2
        self.image_size = config.image_size
        self.label_embed = nn.Embedding(config.num_classes, config.label_dim) if config.num_classes else None
        in_dim = config.z_dim + (config.label_dim if config.num_classes else 0)
        top = w * 2 ** (d - 1)
        self.project = nn.Sequential(
            nn.Linear(in_dim, top * self.side**2, bias=False),
            nn.Unflatten(1, (top, self.side, self.side)),
            nn.BatchNorm2d(top),
            nn.ReLU(),
        )
        # stride-2 layers only (see the module docstring), the last one straight to pixels
        layers: list[nn.Module] = []
        for i in reversed(range(1, d)):
            layers += [
                nn.ConvTranspose2d(w * 2**i, w * 2 ** (i - 1), 4, stride=2, padding=1, bias=False),
                nn.BatchNorm2d(w * 2 ** (i - 1)),
                nn.ReLU(),
            ]
        layers += [nn.ConvTranspose2d(w, c, 4, stride=2, padding=1), nn.Tanh()]
        self.body = nn.Sequential(*layers)

    def forward(self, z: Tensor, labels: Tensor | None) -> Tensor:
        if self.label_embed is not None:
            z = torch.cat([z, self.label_embed(labels)], dim=1)
        x = self.body(self.project(z))  # (B, C, side * 2^depth, ...)
        extra = x.shape[-1] - self.image_size
        if extra:  # centre-crop to the requested size
            lo = extra // 2
            x = x[:, :, lo : lo + self.image_size, lo : lo + self.image_size]
        return x


class Discriminator(nn.Module):
    """images (B, C, H, W) in [-1, 1] (+ labels) -> scores (B,); higher means "real"."""

    def __init__(self, config: GANConfig):
        super().__init__()
        sn = _spectral_norm if config.spectral_norm else (lambda m: m)
        c, w, d = config.channels, config.d_width, config.depth
        layers: list[nn.Module] = []
        ch_in = c
        for i in range(d):
            layers += [sn(nn.Conv2d(ch_in, w * 2**i, 4, stride=2, padding=1)), nn.LeakyReLU(0.2)]
            ch_in = w * 2**i
        self.body = nn.Sequential(*layers)
        feat = ch_in
        self.group = config.minibatch_std
        self.score = sn(nn.Linear(feat + (1 if self.group else 0), 1))
        # projection discriminator: score += <embed(y), h>, one learned vector per class
        self.label_embed = sn(nn.Embedding(config.num_classes, feat)) if config.num_classes else None

    def forward(self, images: Tensor, labels: Tensor | None) -> Tensor:
        x = self.body(images)
        h = x.sum(dim=(2, 3))  # (B, feat): sum pooling, as in SNGAN
        if self.group:
            out = self.score(torch.cat([h, self._spread(x)], dim=1)).squeeze(1)  # (B,)
        else:
            out = self.score(h).squeeze(1)
        if self.label_embed is not None:
            out = out + (self.label_embed(labels) * h).sum(1)
        return out


    def _spread(self, x: Tensor) -> Tensor:
        """(B, 1): per group of ``group`` consecutive images, the standard deviation of each
        feature across the group, averaged, on the scale of the sum-pooled features. Groups are
        consecutive images, so a batch of reals then fakes never mixes the two; a batch that the
        group size does not divide uses one group per batch."""
        b = x.shape[0]
        g = self.group if b % self.group == 0 else b
        if g < 2:
            return x.new_zeros(b, 1)
        y = x.reshape(b // g, g, -1)  # (groups, g, C*H*W); Tensor.var over dim 1 is 20x slower on a CPU
        std = (y - y.mean(dim=1, keepdim=True)).square().mean(dim=1).add(1e-8).sqrt()
        spread = std.mean(dim=1) * (x.shape[2] * x.shape[3])
        return spread.repeat_interleave(g)[:, None]


def _dcgan_init(module: nn.Module) -> None:
    """N(0, 0.02) conv/linear weights and N(1, 0.02) batch-norm scales, as in DCGAN."""
    if isinstance(module, (nn.Conv2d, nn.ConvTranspose2d, nn.Linear)):
        nn.init.normal_(module.weight, 0.0, 0.02)
        if module.bias is not None:
            nn.init.zeros_(module.bias)
    elif isinstance(module, nn.BatchNorm2d):
        nn.init.normal_(module.weight, 1.0, 0.02)
        nn.init.zeros_(module.bias)


class GAN(nn.Module):
    name = "gan"
    modality = "image"
    Config = GANConfig
    PRESETS = {
        "tiny": dict(z_dim=16, label_dim=8, g_width=8, d_width=8, depth=2),  # tests: 8-16 px, seconds
        "small": dict(z_dim=64, label_dim=32, g_width=64, d_width=64, depth=2, minibatch_std=4),  # CPU, 28x28
        "base": dict(z_dim=128, label_dim=64, g_width=128, d_width=128, depth=3),  # a GPU, or 32-64 px
    }
    # Training defaults per preset (any of them can be overridden on the command line).
    # DCGAN's 2e-4, no warm-up and no weight decay: both would fight the adversarial balance.
    TRAIN_DEFAULTS = {
        "tiny": dict(max_steps=40, batch_size=16, lr=2e-3, warmup_steps=0, weight_decay=0.0, eval_every=20),
        "small": dict(max_steps=3000, batch_size=64, lr=2e-4, warmup_steps=0, weight_decay=0.0,
                      eval_every=500),
        "base": dict(max_steps=20000, batch_size=64, lr=2e-4, warmup_steps=0, weight_decay=0.0,
                     eval_every=2000),
    }
    progress_keys = ("d_loss", "g_loss")

    def __init__(self, config: GANConfig):
        super().__init__()
        _check_config(config)
        self.config = config
        self.generator = Generator(config)
        self.generator.apply(_dcgan_init)
        # spectral norm registers its power-iteration vectors from the weights it wraps: init first
        self.discriminator = Discriminator(config)
        self.discriminator.apply(_dcgan_init)
        self.generator_ema = copy.deepcopy(self.generator).requires_grad_(False).eval()
        self.register_buffer("ema_updates", torch.zeros((), dtype=torch.long))  # for the EMA warm-up
        self.d_loss_fn, self.g_loss_fn = LOSSES[config.loss]

    @property
    def conditional(self) -> bool:
        return self.config.num_classes > 0

    def train(self, mode: bool = True) -> "GAN":
        """The EMA generator always stays in eval mode: its batch norm uses running statistics."""
        super().train(mode)
        self.generator_ema.eval()
        return self

    # -- the training contract --------------------------------------------------------------

    def configure_optimizers(self, lr: float, weight_decay: float) -> list[torch.optim.Optimizer]:
        """[opt_g, opt_d]: one Adam per network, same rate (G's EMA is not optimised)."""
        betas = (self.config.beta1, self.config.beta2)
        return [
            torch.optim.AdamW(self.generator.parameters(), lr=lr, betas=betas, weight_decay=weight_decay),
            torch.optim.AdamW(self.discriminator.parameters(), lr=lr, betas=betas, weight_decay=weight_decay),
        ]

    def training_step(
        self, images: Tensor, labels: Tensor | None, optimizers: list, backward: Callable[[Tensor], None]
    ) -> dict[str, float]:
        """One D step, one G step, one EMA update. "loss" is D's loss: the one that means something
        alone (hinge: 2 when D cannot tell real from fake, 0 when it always can)."""
        opt_g, opt_d = optimizers
        self._check_images(images)
        labels = self._labels(labels, len(images)) if self.conditional else None
        if labels is not None and self.config.minibatch_std:  # groups of one class for D's spread feature
            order = labels.argsort(stable=True)
            images, labels = images[order], labels[order]
        real = images * 2 - 1  # [0, 1] -> [-1, 1], G's tanh range
        n = len(real)
        device = real.device

        # 1. D step: real images against fakes of the same classes (one D pass over 2n images)
        z = torch.randn(n, self.config.z_dim, device=device)
        fake = self.generator(z, labels)  # kept with its graph: the G step below reuses it, as DCGAN does
        opt_d.zero_grad(set_to_none=True)
        both = None if labels is None else torch.cat([labels, labels])
        scores = self.discriminator(torch.cat([real, fake.detach()]), both)
        d_loss = self.d_loss_fn(scores[:n], scores[n:])
        backward(d_loss)
        opt_d.step()

        # 2. G step against the updated D; D's weights frozen (no gradient is computed for them)
        opt_g.zero_grad(set_to_none=True)
        self.discriminator.requires_grad_(False)
        try:
            g_loss = self.g_loss_fn(self.discriminator(fake, labels))
            backward(g_loss)
        finally:
            self.discriminator.requires_grad_(True)
        opt_g.step()

        # 3. EMA of G
        self.update_ema()
        d, g = d_loss.item(), g_loss.item()
        return {"loss": d, "d_loss": d, "g_loss": g}

    @torch.no_grad()
    def update_ema(self) -> None:
        """ema <- decay * ema + (1 - decay) * G; the decay is warmed up so that early samples track
        G. Batch-norm statistics are copied, not averaged."""
        t = self.ema_updates.item()
        decay = min(self.config.ema_decay, (1 + t) / (10 + t))
        for ema_p, p in zip(self.generator_ema.parameters(), self.generator.parameters()):
            ema_p.lerp_(p, 1.0 - decay)
        for ema_buf, buf in zip(self.generator_ema.buffers(), self.generator.buffers()):
            ema_buf.copy_(buf)
        self.ema_updates += 1

    @torch.no_grad()
    def validation_losses(self, images: Tensor, labels: Tensor | None) -> dict[str, float]:
        """Empty: a GAN's losses say nothing about sample quality, so they cannot pick a checkpoint."""
        return {}

    @torch.no_grad()
    def sample(
        self, n: int, condition: Tensor | None = None, generator: torch.Generator | None = None
    ) -> Tensor:
        """n images (n, C, H, W) in [0, 1] from the EMA generator.

        z is drawn before any random classes, so a seed gives the same noise whatever the condition.
        """
        device = self.ema_updates.device
        z = torch.randn(n, self.config.z_dim, generator=generator, device=device)
        labels = self._condition(n, condition, generator)
        return (self.generator_ema(z, labels) + 1) / 2

    # -- extras ------------------------------------------------------------------------------

    @torch.no_grad()
    def interpolate(
        self,
        n_steps: int,
        generator_a_seed: int,
        generator_b_seed: int,
        condition: int | Tensor | None = None,
    ) -> Tensor:
        """n_steps images (n_steps, C, H, W) along the slerp from seed a's noise to seed b's.

        Each seed's z is the first draw of ``sample``'s generator, so the ends are what
        ``sample(1, condition, generator=torch.Generator().manual_seed(seed))`` gives. One class
        for every frame: ``condition``, or (conditional model, None) the class seed a draws.
        """
        if n_steps < 2:
            raise InvalidInput(f"interpolate needs n_steps >= 2, got {n_steps}")
        device = self.ema_updates.device
        ga = torch.Generator(device=device).manual_seed(generator_a_seed)
        gb = torch.Generator(device=device).manual_seed(generator_b_seed)
        za = torch.randn(1, self.config.z_dim, generator=ga, device=device)[0]
        zb = torch.randn(1, self.config.z_dim, generator=gb, device=device)[0]
        if isinstance(condition, int):
            condition = torch.tensor([condition])
        label = self._condition(1, condition, ga)
        z = slerp(za, zb, torch.linspace(0, 1, n_steps, device=device))  # (n_steps, z_dim)
        return (self.generator_ema(z, None if label is None else label.expand(n_steps)) + 1) / 2

    def config_dict(self) -> dict:
        return asdict(self.config)

    # -- argument checks ---------------------------------------------------------------------

    def _check_images(self, images: Tensor) -> None:
        check_images(images, self.config.channels, self.config.image_size, "gan")

    def _labels(self, labels: Tensor | None, n: int) -> Tensor:
        return check_labels(labels, n, self.config.num_classes, "gan", self.ema_updates.device)

    def _condition(self, n: int, condition: Tensor | None, generator: torch.Generator | None) -> Tensor | None:
        num_classes = self.config.num_classes if self.conditional else 0
        return sampling_labels(n, condition, num_classes, "gan", self.ema_updates.device, generator)


def _check_config(config: GANConfig) -> None:
    if config.loss not in LOSSES:
        raise InvalidInput(f"gan loss must be one of {', '.join(LOSSES)}, got {config.loss!r}")
    if config.image_size < 8:
        raise InvalidInput(f"gan image_size must be >= 8 px, got {config.image_size}")
    if config.channels < 1:
        raise InvalidInput(f"gan channels must be >= 1, got {config.channels}")
    if config.num_classes < 0:
        raise InvalidInput(f"gan num_classes must be >= 0 (0 = unconditional), got {config.num_classes}")
    if config.depth < 1 or 2**config.depth > config.image_size:
        raise InvalidInput(f"gan depth must be 1..{int(math.log2(config.image_size))} for "
                           f"{config.image_size} px, got {config.depth}")
    for key in ("z_dim", "g_width", "d_width"):
        if getattr(config, key) < 1:
            raise InvalidInput(f"gan {key} must be >= 1, got {getattr(config, key)}")
    if config.num_classes and config.label_dim < 1:
        raise InvalidInput(f"gan label_dim must be >= 1 for a conditional model, got {config.label_dim}")
    if config.minibatch_std < 0 or config.minibatch_std == 1:
        raise InvalidInput(f"gan minibatch_std must be 0 (off) or a group size >= 2, got {config.minibatch_std}")
    if not 0.0 <= config.ema_decay < 1.0:
        raise InvalidInput(f"gan ema_decay must be in [0, 1), got {config.ema_decay}")
    for key in ("beta1", "beta2"):
        if not 0.0 <= getattr(config, key) < 1.0:
            raise InvalidInput(f"gan {key} must be in [0, 1), got {getattr(config, key)}")
