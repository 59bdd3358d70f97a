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
  score, over groups of images of one class, so that a G that collapses within a class is caught.
- Loss: hinge (SNGAN, BigGAN) or the non-saturating loss of Goodfellow et al. 2014.
- An exponential moving average of G's weights (a submodule, so it is in the state_dict) is what
  ``sample`` draws from: it gives smoother, steadier samples than the raw G at any given step.
- Validation scores EMA samples against the val images of the same classes (``nn_score``: nearest
  neighbours both ways, so a collapse and junk both score worse), so the trainer keeps the best
  checkpoint rather than the latest; the samples' spread shows in the progress line, and a fall
  into collapse warns. D learns at 4x G's rate in `small` (TTUR, ``d_lr_ratio``), both at a
  constant rate (TRAIN_DEFAULTS has the measurements behind it). In `small`, D also names the
  class of real images and G is pushed to draw what D names as asked (AC-GAN's auxiliary
  classifier, ``aux_class``, beside the projection), and sampling draws again what D's classifier
  names as another class, up to 4 draws (``sample_tries``). Options, off in the presets: DiffAugment,
  lazy R1 and MSGAN's mode-seeking term (``augment``, ``r1_gamma``, ``diversity``).

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
import warnings
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
    # DiffAugment (Zhao et al. 2020): the same random, differentiable augmentations of real and
    # fake images before D, in both steps, so D cannot memorise a small train set and G is not
    # pushed towards it. Comma-separated from "translation" (up to 1/8 of the side, edges
    # repeated) and "cutout" (a square of half the side set to mid-grey). No colour jitter: colour
    # may be what tells classes apart. "" = off (runs saved before it existed load with "").
    augment: str = ""
    # R1 penalty (Mescheder et al. 2018): gamma/2 * |grad_x D(x)|^2 on real images, lazily every
    # r1_every D steps with the penalty scaled by r1_every (StyleGAN2). 0 = off.
    r1_gamma: float = 0.0
    r1_every: int = 16
    # D's learning rate as a multiple of G's (TTUR, Heusel et al. 2017). 1 = the same rate.
    d_lr_ratio: float = 1.0
    # Mode-seeking term (MSGAN, Mao et al. 2019): G's loss += diversity / (d_x / d_z + 1e-5) over
    # pairs of fakes of one class, d_x the mean absolute difference of the two images and d_z of
    # their noise vectors, so a G that maps different z to one image pays for it. 0 = off (runs
    # saved before it existed load with 0). Off in the presets: on Fashion-MNIST (small, 1,000
    # steps, the old decaying lr; a one-off run, not a committed benchmark) weight 1 gave recall 0.17 against 0.00 without, but as pixel
    # noise, not garments of another cut, and conditional accuracy 0.38 against 0.75.
    diversity: float = 0.0
    # Auxiliary classifier (AC-GAN, Odena et al. 2017) beside the projection: D also names the
    # class of the real images (cross-entropy, this weight) and G is pushed to draw images D names
    # as asked. 0 = off (runs saved before it existed load with 0).
    aux_class: float = 0.0
    # Class-checked sampling (for models with the auxiliary classifier): a drawn image that D's
    # classifier names as another class than the asked one is drawn again with fresh noise, up to
    # this many draws in all (the last draw is kept either way); the rejection sampling of
    # discriminator-guided GANs (Azadi et al. 2019) with D's class head as the test. 1 = off (runs
    # saved before it existed load with 1).
    sample_tries: int = 1


SPREAD_WARNING = 0.25  # a validation spread (see nn_score) below this warns of mode collapse


class CollapseWarning(UserWarning):
    """The generator draws (nearly) one image per class."""


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


# -- DiffAugment -------------------------------------------------------------------------------
# Each takes images (B, C, H, W) in [-1, 1] and returns an augmented batch of the same shape,
# differentiable in the images, drawing from torch's global RNG (which a resume restores).


def translate(x: Tensor, ratio: float = 0.125) -> Tensor:
    """Shift each image by up to ``ratio`` of its side in x and y (integer pixels), repeating the
    edge pixels into the gap, so the background stays what it is, black, white or anything."""
    b, _, h, w = x.shape
    sh, sw = max(1, round(h * ratio)), max(1, round(w * ratio))
    dy = torch.randint(-sh, sh + 1, (b, 1, 1), device=x.device)
    dx = torch.randint(-sw, sw + 1, (b, 1, 1), device=x.device)
    rows = (torch.arange(h, device=x.device)[None, :, None] + dy).clamp(0, h - 1)  # (B, H, 1)
    cols = (torch.arange(w, device=x.device)[None, None, :] + dx).clamp(0, w - 1)  # (B, 1, W)
    index = (rows * w + cols).flatten(1)  # (B, H*W) source pixel of every output pixel
    flat = x.flatten(2)  # (B, C, H*W)
    return flat.gather(2, index[:, None, :].expand(-1, x.shape[1], -1)).view_as(x)


def cutout(x: Tensor, ratio: float = 0.5) -> Tensor:
    """Set a square of ``ratio`` of the side, at a random place per image, to 0 (mid-grey)."""
    b, _, h, w = x.shape
    ch, cw = max(1, round(h * ratio)), max(1, round(w * ratio))
    top = torch.randint(0, h - ch + 1, (b, 1, 1), device=x.device)
    left = torch.randint(0, w - cw + 1, (b, 1, 1), device=x.device)
    r = torch.arange(h, device=x.device)[None, :, None]
    c = torch.arange(w, device=x.device)[None, None, :]
    inside = (r >= top) & (r < top + ch) & (c >= left) & (c < left + cw)  # (B, H, W)
    return x * (~inside)[:, None].to(x.dtype)


AUGMENTS: dict[str, Callable[[Tensor], Tensor]] = {"translation": translate, "cutout": cutout}


def augment_policy(text: str) -> list[str]:
    """"translation,cutout" -> ["translation", "cutout"]; "" -> []."""
    return [p.strip() for p in text.split(",") if p.strip()]


def mode_seeking(fake: Tensor, z: Tensor, labels: Tensor | None) -> Tensor:
    """MSGAN's term 1 / (d_x / d_z + 1e-5) (Mao et al. 2019), averaged over the pairs of
    consecutive fakes (0, 1), (2, 3), ... that share a class (all pairs when unconditional); 0
    when none do. d_x is the mean absolute pixel difference of a pair, d_z that of its noise."""
    n = len(fake) // 2 * 2
    a, b = fake[:n:2].flatten(1), fake[1:n:2].flatten(1)
    ratio = (a - b).abs().mean(1) / (z[:n:2] - z[1:n:2]).abs().mean(1)
    same = torch.ones_like(ratio, dtype=torch.bool) if labels is None else labels[:n:2] == labels[1:n:2]
    if not same.any():
        return ratio.sum() * 0.0
    return (1.0 / (ratio[same] + 1e-5)).mean()


# -- a validation score that sees collapse ---------------------------------------------------


def nn_score(real: Tensor, fake: Tensor, labels: Tensor | None) -> tuple[float, float]:
    """(chamfer, spread) of images (N, ...) in [0, 1], fake[i] drawn for real[i]'s class.

    chamfer: the mean RMS pixel distance from each real image to its nearest fake of the same class
    plus from each fake to its nearest real one. The first half grows when G drops modes (a
    collapsed class is far from most of its real images), the second when G draws what is not
    in the data, so the lower the better on both counts; a checkpoint is kept by it.
    spread: mean pairwise distance among the fakes of a class over the same among the reals,
    averaged over classes with 2+ images: about 1 for a varied G, near 0 for one that draws one
    image per class."""
    r, f = real.flatten(1).float(), fake.flatten(1).float()
    d = torch.cdist(r, f) / math.sqrt(r.shape[1])  # (N, N) RMS distances
    same = torch.ones_like(d, dtype=torch.bool) if labels is None else labels[:, None] == labels[None, :]
    d = d.masked_fill(~same, float("inf"))
    chamfer = (d.min(dim=1).values.mean() + d.min(dim=0).values.mean()).item()
    ratios = []
    for group in ([torch.arange(len(r))] if labels is None else [labels.eq(c).nonzero()[:, 0] for c in labels.unique()]):
        if len(group) >= 2:
            real_spread = torch.pdist(r[group]).mean()
            if real_spread > 0:
                ratios.append((torch.pdist(f[group]).mean() / real_spread).item())
    return chamfer, (sum(ratios) / len(ratios) if ratios else float("nan"))


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
        self.classify = nn.Linear(feat, config.num_classes) if config.num_classes and config.aux_class else None
        self.logits: Tensor | None = None  # the classify head's output of the last forward, if it has one

    def forward(self, images: Tensor, labels: Tensor | None) -> Tensor:
        x = self.body(images)
        h = x.sum(dim=(2, 3))  # (B, feat): sum pooling, as in SNGAN
        if self.group:
            out = self.score(torch.cat([h, self._spread(x)], dim=1)).squeeze(1)  # (B,)
        else:
            out = self.score(h).squeeze(1)
        if self.label_embed is not None:
            out = out + (self.label_embed(labels) * h).sum(1)
        self.logits = self.classify(h) if self.classify is not None else None
        return out

    @torch.no_grad()
    def class_logits(self, images: Tensor) -> Tensor:
        """The classify head's logits (B, num_classes) for images in [-1, 1], in eval mode (no power
        iteration of the spectral norms, whatever mode the model is in)."""
        was = self.training
        self.eval()
        try:
            return self.classify(self.body(images).sum(dim=(2, 3)))
        finally:
            self.train(was)


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
        # CPU, 28x28. D at 4x G's rate (SAGAN's TTUR ratio): on digits it raised recall and conditional
        # accuracy over 1x and 2x at equal steps (the issue 11 report has the figures)
        # The auxiliary classifier at 0.2: on Fashion-MNIST, 300 s on one thread, two runs at once (one-off
        # runs, not a committed benchmark), aux_class 0 / 0.2 / 1 scored conditional accuracy 0.85 / 0.91 /
        # 0.92 and recall 0.71 / 0.67 / 0.54; 0.5 scored 0.93 / 0.57 there but 0.88 / 0.59 at two threads
        # (robustness_images.py at 9a77fa2, 3,765 steps), so the recall it costs buys nothing sure.
        # Class-conditional batch norm in G instead (de Vries et al. 2017) scored 0.81 / recall 0.72
        # (FID 17.0), so G keeps its input conditioning. Class-checked sampling, up to 4 draws: the
        # one-thread aux 0.5 run above, evaluated with 1,000 samples at 1 / 4 / 8 draws (one-off), scored
        # conditional accuracy 0.927 / 0.944 / 0.944, FID 14.4 / 12.5 / 12.3, recall 0.566 / 0.571 / 0.572;
        # accepting only draws D names with probability >= 0.8 scored no better (0.937).
        "small": dict(z_dim=64, label_dim=32, g_width=64, d_width=64, depth=2, minibatch_std=4, d_lr_ratio=4.0,
                      aux_class=0.2, sample_tries=4),
        "base": dict(z_dim=128, label_dim=64, g_width=128, d_width=128, depth=3),  # a GPU, or 32-64 px
    }
    # Training defaults per preset (any of them can be overridden on the command line).
    # No warm-up, no weight decay and a constant rate (min_lr_ratio 1), as DCGAN, SNGAN and BigGAN
    # train: a decaying rate freezes G before it has found the modes. `small` runs minutes, not
    # DCGAN's hours, and its 2e-4 left every class one image: on Fashion-MNIST, 1,000 steps, one
    # shared core (a one-off sweep, not a committed benchmark; robustness_images.json has the
    # chosen rate at 300 s), G at 2e-4 / 4e-4 / 8e-4 / 1.6e-3 / 3.2e-3 constant (D at 4x) scored recall
    # 0.03 / 0.30 / 0.53 / 0.70 / 0.64 and conditional accuracy 0.83 / 0.85 / 0.83 / 0.87 / 0.76
    # (the former 2e-4 decaying: 0.00 and 0.75 at 1,000-1,500 steps); 1.6e-3 on the coloured shapes
    # (not part of the choice): recall 0.83 and conditional accuracy 0.86, from 0.00 and 0.42.
    TRAIN_DEFAULTS = {
        "tiny": dict(max_steps=40, batch_size=16, lr=2e-3, warmup_steps=0, weight_decay=0.0, eval_every=20,
                     min_lr_ratio=1.0),
        "small": dict(max_steps=3000, batch_size=64, lr=1.6e-3, warmup_steps=0, weight_decay=0.0,
                      eval_every=500, min_lr_ratio=1.0),
        "base": dict(max_steps=20000, batch_size=64, lr=2e-4, warmup_steps=0, weight_decay=0.0,
                     eval_every=2000, min_lr_ratio=1.0),
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
        self._policy = augment_policy(config.augment)
        self.spread = float("nan")  # of the last validation
        self.best_spread = 0.0  # the highest validation spread of this session, for the collapse warning
        self._warned = False

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
        d_lr = lr * self.config.d_lr_ratio
        return [
            torch.optim.AdamW(self.generator.parameters(), lr=lr, betas=betas, weight_decay=weight_decay),
            torch.optim.AdamW(self.discriminator.parameters(), lr=d_lr, betas=betas, weight_decay=weight_decay),
        ]

    def _augment(self, x: Tensor) -> Tensor:
        for name in self._policy:
            x = AUGMENTS[name](x)
        return x

    def training_step(
        self, images: Tensor, labels: Tensor | None, optimizers: list, backward: Callable[[Tensor], None]
    ) -> dict[str, float]:
        """One D step, one G step, one EMA update. "loss" is D's loss: the one that means something
        alone (hinge: 2 when D cannot tell real from fake, 0 when it always can)."""
        opt_g, opt_d = optimizers
        self._check_images(images)
        labels = self._labels(labels, len(images)) if self.conditional else None
        if labels is not None and (self.config.minibatch_std or self.config.diversity):
            # groups of one class for D's spread feature and pairs of one class for the mode-seeking term
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
        scores = self.discriminator(self._augment(torch.cat([real, fake.detach()])), both)
        d_loss = self.d_loss_fn(scores[:n], scores[n:])
        if self.discriminator.logits is not None:  # AC-GAN: D names the class of the reals
            d_loss = d_loss + self.config.aux_class * F.cross_entropy(self.discriminator.logits[:n], labels)
        r1 = self._r1_due()
        if r1:  # lazy R1 on (augmented) reals: D's gradient at the data pushed towards 0
            x = self._augment(real).detach().requires_grad_(True)
            (grad,) = torch.autograd.grad(self.discriminator(x, labels).sum(), x, create_graph=True)
            d_loss = d_loss + self.config.r1_gamma / 2 * self.config.r1_every * grad.square().sum((1, 2, 3)).mean()
        backward(d_loss)
        opt_d.step()

        # 2. G step against the updated D; D's weights frozen (no gradient is computed for them)
        opt_g.zero_grad(set_to_none=True)
        self.discriminator.requires_grad_(False)
        try:
            g_loss = self.g_loss_fn(self.discriminator(self._augment(fake), labels))
            if self.discriminator.logits is not None:  # AC-GAN: fakes D names as the asked class
                g_loss = g_loss + self.config.aux_class * F.cross_entropy(self.discriminator.logits, labels)
            if self.config.diversity > 0:
                g_loss = g_loss + self.config.diversity * mode_seeking(fake, z, labels)
            backward(g_loss)
        finally:
            self.discriminator.requires_grad_(True)
        opt_g.step()

        # 3. EMA of G
        self.update_ema()
        d, g = d_loss.item(), g_loss.item()
        out = {"loss": d, "d_loss": d, "g_loss": g}
        if not math.isnan(self.spread):  # of the last validation (nn_score): the progress line shows a collapse
            out["spread"] = self.spread
        return out

    def _r1_due(self) -> bool:
        """Every r1_every-th step, counted by the EMA's updates (one a step, saved, so a resume keeps the beat)."""
        return self.config.r1_gamma > 0 and self.ema_updates.item() % self.config.r1_every == 0

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

    def validation_losses(self, images: Tensor, labels: Tensor | None) -> dict[str, float]:
        """{"loss": chamfer, "spread": spread} of EMA samples drawn for these images' classes with
        a fixed seed (see :func:`nn_score`). A GAN's own losses say nothing about sample quality;
        this score does, and punishes a collapse, so the trainer keeps the checkpoint with the
        lowest instead of the latest. A spread that falls below SPREAD_WARNING after a validation
        at or above it warns (a CollapseWarning), once per model."""
        labels = self._labels(labels, len(images)) if self.conditional else None
        gen = torch.Generator(device=self.ema_updates.device).manual_seed(0)
        with torch.no_grad():
            fake = self.sample(len(images), labels, generator=gen)
        chamfer, spread = nn_score(images, fake, labels)
        self.spread = spread
        # A G starts out drawing one blur per class; only a fall from a varied validation is a collapse.
        if spread < SPREAD_WARNING <= self.best_spread and not self._warned:
            self._warned = True
            warnings.warn(f"gan: samples of a class vary {spread:.2f}x as much as the real images after "
                          f"{self.ema_updates.item()} steps, down from {self.best_spread:.2f}x (mode collapse); "
                          "the run keeps the checkpoint with the best validation score", CollapseWarning,
                          stacklevel=2)
        if not math.isnan(spread):
            self.best_spread = max(self.best_spread, spread)
        return {"loss": chamfer, "spread": spread}

    @torch.no_grad()
    def sample(
        self, n: int, condition: Tensor | None = None, generator: torch.Generator | None = None
    ) -> Tensor:
        """n images (n, C, H, W) in [0, 1] from the EMA generator.

        z is drawn before any random classes, so a seed gives the same noise whatever the condition.
        With ``sample_tries`` > 1, images that D's classifier names as another class are drawn again
        (fresh noise for those alone, from the same generator), up to that many draws in all.
        """
        device = self.ema_updates.device
        z = torch.randn(n, self.config.z_dim, generator=generator, device=device)
        labels = self._condition(n, condition, generator)
        images = self.generator_ema(z, labels)
        if labels is not None and self.discriminator.classify is not None:
            for _ in range(self.config.sample_tries - 1):
                wrong = self.discriminator.class_logits(images).argmax(1) != labels
                if not wrong.any():
                    break
                z = torch.randn(int(wrong.sum()), self.config.z_dim, generator=generator, device=device)
                images[wrong] = self.generator_ema(z, labels[wrong])
        return (images + 1) / 2

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
    unknown = [p for p in augment_policy(config.augment) if p not in AUGMENTS]
    if unknown:
        raise InvalidInput(f"gan augment takes a comma-separated list of {', '.join(AUGMENTS)} "
                           f"(or \"\" for none), got {unknown[0]!r}")
    if config.r1_gamma < 0 or config.r1_every < 1:
        raise InvalidInput(f"gan r1_gamma must be >= 0 and r1_every >= 1, got {config.r1_gamma} and {config.r1_every}")
    if config.diversity < 0:
        raise InvalidInput(f"gan diversity must be >= 0 (0 = off), got {config.diversity}")
    if config.aux_class < 0:
        raise InvalidInput(f"gan aux_class must be >= 0 (0 = off), got {config.aux_class}")
    if config.sample_tries < 1:
        raise InvalidInput(f"gan sample_tries must be >= 1 (1 = off), got {config.sample_tries}")
    if not config.d_lr_ratio > 0:
        raise InvalidInput(f"gan d_lr_ratio must be > 0, got {config.d_lr_ratio}")
    if config.minibatch_std < 0 or config.minibatch_std == 1:
        raise InvalidInput(f"gan minibatch_std must be 0 (off) or a group size >= 2, got {config.minibatch_std}")
    if not 0.0 <= config.ema_decay < 1.0:
        raise InvalidInput(f"gan ema_decay must be in [0, 1), got {config.ema_decay}")
    for key in ("beta1", "beta2"):
        if not 0.0 <= getattr(config, key) < 1.0:
            raise InvalidInput(f"gan {key} must be in [0, 1), got {getattr(config, key)}")
