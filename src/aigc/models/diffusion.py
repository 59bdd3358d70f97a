"""`diffusion`: a denoising diffusion model (Ho et al. 2020) with DDIM sampling (Song et al. 2021)
and classifier-free guidance (Ho & Salimans 2022).

The network is diffusers' ``UNet2DModel`` predicting v (the presets; ``prediction_type``) or the
noise epsilon; training draws a timestep and noise per image and regresses the target, weighted
per timestep by min-SNR-5 (the presets; ``snr_gamma``). Sampling is a short loop
over a ``DDIMScheduler`` built from the training ``DDPMScheduler``'s config, using an exponential
moving average of the UNet's weights. A conditional model embeds a class id per image; one extra
*null class* (index ``num_classes``) stands for "no condition": labels are dropped to it with
probability ``label_dropout`` during training, and at sampling time the two predictions are mixed,
``pred = pred_null + guidance * (pred_class - pred_null)``.

Sizes the UNet cannot halve ``levels - 1`` times are padded (28x28 with 4 levels -> 32x32) and
cropped back; the padding is black, the background of most small image sets.

This module knows the network, its loss and its samplers, and writes a diffusers pipeline folder.
It knows nothing about datasets, the training loop, or image files.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from aigc.errors import InvalidInput

BETA_SCHEDULES = ("linear", "scaled_linear", "squaredcos_cap_v2")
PREDICTION_TYPES = ("epsilon", "v_prediction")
TIME_SCALE_SHIFTS = ("default", "scale_shift")
# every preset: v-prediction with min-SNR-5 weighting (gamma 5 is the paper's choice)
V_MIN_SNR = dict(prediction_type="v_prediction", snr_gamma=5.0)


@dataclass
class DiffusionConfig:
    image_size: int = 28  # set from the dataset before building
    channels: int = 1  # set from the dataset
    num_classes: int = 0  # set from the dataset; 0 = unconditional
    base_channels: int = 32  # UNet width at full resolution; doubles at each level below
    levels: int = 2  # UNet resolutions (28 -> 14 with 2); each level halves the image
    layers_per_block: int = 1  # ResNet blocks per level (diffusers' default, 2, costs twice the time)
    norm_num_groups: int = 8  # GroupNorm groups; must divide base_channels
    attention: bool = False  # self-attention at the lowest-resolution level
    mid_attention: bool = True  # self-attention in the mid block (diffusers' default; runs saved before it existed have it)
    # How the timestep + class embedding enters each ResNet block: "default" adds it to the features
    # (DDPM, diffusers' default; runs saved before it existed load with it), "scale_shift" scales and
    # shifts the normalised features by it (ADM's adaptive group norm, Dhariwal & Nichol 2021).
    time_scale_shift: str = "default"
    num_train_timesteps: int = 1000
    # cosine schedule (Nichol & Dhariwal 2021): the linear one destroys small images too early,
    # wasting the last few hundred timesteps on pure noise
    beta_schedule: str = "squaredcos_cap_v2"
    # What the UNet predicts: "epsilon" (the noise, DDPM) or "v_prediction" (v = sqrt(a) eps -
    # sqrt(1 - a) x_0, Salimans & Ho 2022). The cosine schedule ends at alpha_bar = 2.4e-9, where
    # x_0 = (x_t - sqrt(1 - a) eps) / sqrt(a) multiplies any error of an epsilon model by ~20,000:
    # the first DDIM step's x_0 is clipped noise, a speckle pattern that the deterministic sampler
    # carries into the image (the grey speckled backgrounds of issue 11). A v model predicts x_0
    # itself there. The presets use v; runs saved before it existed load as "epsilon".
    prediction_type: str = "epsilon"
    # Min-SNR-gamma loss weighting (Hang et al. 2023): each timestep's loss is weighted so that
    # nearly noise-free steps, which teach little about the image, stop dominating the gradient.
    # 0 = off, the plain DDPM loss.
    snr_gamma: float = 0.0
    # Offset noise (Guttenberg 2023): training noise + offset_noise * randn(B, C, 1, 1), a constant
    # per image and channel. Plain noise barely touches an image's mean colour until the last
    # timesteps, so the model learns little about moving it: on the coloured shapes the samples came
    # out pastel, with colour gradients inside one shape. 0 = off; runs saved before it existed
    # load as 0. 0.1 against 0 (one-off runs, not a committed benchmark), `small`, one shared core,
    # 300 s, seed 0, 500 samples, default sampler (25 DDIM steps, eta 0, guidance 2): shapes FID 66.6 / precision 0.61 /
    # recall 0.67 / conditional accuracy 0.86 against 68.8 / 0.54 / 0.69 / 0.84; Fashion-MNIST
    # 6.8 / 0.93 / 0.62 / 0.93 against 9.3 / 0.89 / 0.62 / 0.93 (1816 and 1538 steps reached on
    # shapes, 2446 and 2511 on Fashion-MNIST: the core's load varied)
    offset_noise: float = 0.0
    label_dropout: float = 0.1  # p of training a conditional model on the null class (for guidance)
    ema_decay: float = 0.999  # sampling weights; warmed up as min(decay, (1 + n) / (10 + n))
    sample_steps: int = 50  # default DDIM steps of sample() and sdedit()
    # DDIM's eta, the default of sample(): 0 = deterministic DDIM (runs saved before it existed),
    # 1 = fresh noise at every step, as ancestral DDPM; the noise lets later steps correct what
    # the first ones got wrong instead of carrying it to the end (deterministic DDIM's shapes came
    # with stray fragments and colour drift). Eta 1 with guidance 1.5 against eta 0 with guidance
    # 2, on the same trained offset-noise runs (one-off, as above): shapes FID 59.3 / precision 0.73 /
    # recall 0.67 / conditional accuracy 0.92 against 66.6 / 0.61 / 0.67 / 0.86; Fashion-MNIST
    # 7.2 / 0.94 / 0.57 / 0.93 against 6.8 / 0.93 / 0.62 / 0.93 (recall is what it costs there;
    # at guidance 2, eta 1: shapes 0.93 accuracy but recall 0.58, Fashion-MNIST recall 0.55)
    sample_eta: float = 0.0
    # default classifier-free guidance scale; 1.0 = plain conditional sampling. Higher trades
    # recall for conditional accuracy and precision (benchmarks/image_train.py sweeps it). 2, not
    # 3: benchmarks/results/robustness_images.json, `small`, 300 s, 2 threads, at guidance 3 (the
    # file as committed in 49aeea9) and at 2 (as now): Fashion-MNIST FID 9.3 / recall 0.49 /
    # conditional accuracy 0.98 against 9.1 / 0.61 / 0.91; digits 16.0 / 0.51 / 1.00 against
    # 10.5 / 0.71 / 1.00
    guidance: float = 2.0


class Diffusion(nn.Module):
    name = "diffusion"
    modality = "image"
    # Trains under bf16 autocast on a CPU with native bf16 (aigc.runtime.default_precision; the UNet's
    # convolutions go to oneDNN's bf16 kernels; the loss, the weights, Adam and the EMA stay float32).
    # `small`, 2 threads, AMD EPYC with AVX-512 BF16, steps in the same time as float32 reached:
    # spoken-digit mels 64 x 64, 600 s, 2652 against 2000 (benchmarks/results/audio_train.json, against
    # the file at 5474227); Fashion-MNIST / digits / shapes, 300 s, 4611 / 6750 / 3615 against 3403 /
    # 6213 / 2576 (robustness_images_diffusion.json against robustness_images.json).
    cpu_bf16 = True
    Config = DiffusionConfig
    PRESETS = {
        # tests: 8x8 or 16x16, widths (8, 16); about 30 ms a step at batch 8
        "tiny": dict(base_channels=8, levels=2, norm_num_groups=4, sample_steps=4, **V_MIN_SNR),
        # CPU minutes on 28-32 px: widths (16, 32, 64), 0.62 M parameters, no mid-block attention.
        # Most of a small UNet's time is its full-resolution convs, so the narrow first level and
        # one more halving buy speed and reach: on Fashion-MNIST, 300 s each on one shared core
        # (a one-off comparison, not a committed benchmark), it took 793 steps to the former widths (32, 64)'s 340 and scored FID 26 / conditional
        # accuracy 0.93 / recall 0.36 against 92 / 0.53 / 0.23 (300 samples). 25 DDIM steps by
        # default, half the time of 50 for nearly the same images; --steps 50 buys the difference.
        # Offset noise 0.1 and eta 1 at guidance 2 (see offset_noise and sample_eta), for the coloured
        # shapes' pastel colours and stray fragments: one-off runs on one shared core, 300 s, gave shapes
        # conditional accuracy 0.93 / recall 0.58 against the former preset's 0.84 / 0.69, Fashion-MNIST
        # 0.96 / 0.55 against 0.93 / 0.62, digits 1.00 / 0.68; benchmarks/results/robustness_images.json
        # has them like for like at two threads. On spoken-digit mels they are level with the former
        # preset at each guidance (audio_train_offset_eta.json against audio_train_1thread.json, 600 s,
        # one thread beside another job: conditional accuracy 0.44 / 0.56 / 0.63 against 0.43 / 0.55 /
        # 0.63 at guidance 1.5 / 2 / 3), which is why the guidance stays 2: 1.5 suits the images' recall
        # (shapes 0.92 / 0.67) but costs the mels a tenth of their accuracy.
        "small": dict(base_channels=16, levels=3, norm_num_groups=8, mid_attention=False, sample_steps=25,
                      offset_noise=0.1, sample_eta=1.0, **V_MIN_SNR),
        # a GPU: widths (64, 128, 256), attention at 7x7, 2 ResNet blocks per level
        "base": dict(base_channels=64, levels=3, layers_per_block=2, norm_num_groups=32, attention=True,
                     **V_MIN_SNR),
    }
    # Training defaults per preset (any of them can be overridden on the command line).
    # No weight decay: DDPM and its descendants train the UNet with plain Adam.
    TRAIN_DEFAULTS = {
        "tiny": dict(max_steps=40, batch_size=8, lr=2e-3, warmup_steps=5, eval_every=20, weight_decay=0.0),
        "small": dict(max_steps=3000, batch_size=16, lr=1e-3, warmup_steps=100, eval_every=250,
                      weight_decay=0.0),
        "base": dict(max_steps=50000, batch_size=128, lr=2e-4, warmup_steps=1000, eval_every=2500,
                     weight_decay=0.0),
    }
    progress_keys = ("loss",)

    def __init__(self, config: DiffusionConfig):
        super().__init__()
        from diffusers import DDPMScheduler, UNet2DModel

        c = config
        if c.image_size < 1 or c.channels < 1:
            raise ValueError("DiffusionConfig.image_size and channels must be set from the dataset before "
                             "building")
        if c.levels < 1:
            raise InvalidInput(f"diffusion levels must be >= 1, got {c.levels}")
        if c.base_channels % c.norm_num_groups:
            raise InvalidInput(
                f"diffusion base_channels ({c.base_channels}) must be divisible by norm_num_groups "
                f"({c.norm_num_groups})"
            )
        if c.beta_schedule not in BETA_SCHEDULES:
            raise InvalidInput(
                f"diffusion beta_schedule must be one of {', '.join(BETA_SCHEDULES)}, got {c.beta_schedule!r}"
            )
        if c.prediction_type not in PREDICTION_TYPES:
            raise InvalidInput(f"diffusion prediction_type must be one of {', '.join(PREDICTION_TYPES)}, "
                               f"got {c.prediction_type!r}")
        if c.snr_gamma < 0:
            raise InvalidInput(f"diffusion snr_gamma must be >= 0 (0 = off), got {c.snr_gamma}")
        if c.offset_noise < 0:
            raise InvalidInput(f"diffusion offset_noise must be >= 0 (0 = off), got {c.offset_noise}")
        if c.sample_eta < 0:
            raise InvalidInput(f"diffusion sample_eta must be >= 0 (0 = deterministic DDIM), "
                               f"got {c.sample_eta}")
        if c.time_scale_shift not in TIME_SCALE_SHIFTS:
            raise InvalidInput(f"diffusion time_scale_shift must be one of {', '.join(TIME_SCALE_SHIFTS)}, "
                               f"got {c.time_scale_shift!r}")
        if not 0 <= c.label_dropout < 1:
            raise InvalidInput(f"diffusion label_dropout must be in [0, 1), got {c.label_dropout}")
        self.config = c
        factor = 2 ** (c.levels - 1)  # each level but the last downsamples by 2
        self.padded_size = -(-c.image_size // factor) * factor
        widths = tuple(c.base_channels * 2**i for i in range(c.levels))
        down = ["DownBlock2D"] * c.levels
        up = ["UpBlock2D"] * c.levels
        if c.attention:
            down[-1], up[0] = "AttnDownBlock2D", "AttnUpBlock2D"
        self.unet = UNet2DModel(
            sample_size=self.padded_size,
            in_channels=c.channels,
            out_channels=c.channels,
            block_out_channels=widths,
            down_block_types=tuple(down),
            up_block_types=tuple(up),
            layers_per_block=c.layers_per_block,
            norm_num_groups=c.norm_num_groups,
            add_attention=c.mid_attention,
            resnet_time_scale_shift=c.time_scale_shift,
            # one embedding per class plus the null class, added to the timestep embedding
            num_class_embeds=c.num_classes + 1 if c.num_classes else None,
        )
        # The sampling weights: a frozen copy, a submodule so that it is in the state_dict.
        self.ema = copy.deepcopy(self.unet).requires_grad_(False)
        self.register_buffer("ema_updates", torch.zeros((), dtype=torch.long))
        # clip_sample keeps the predicted x_0 in [-1, 1] at every step: the images' range
        self.noise_scheduler = DDPMScheduler(
            num_train_timesteps=c.num_train_timesteps,
            beta_schedule=c.beta_schedule,
            prediction_type=c.prediction_type,
            clip_sample=True,
        )

    @property
    def null_class(self) -> int | None:
        return self.config.num_classes if self.config.num_classes else None

    # -- pixels <-> model space ------------------------------------------------------------

    def _to_model(self, images: Tensor) -> Tensor:
        """(B, C, H, W) in [0, 1] -> (B, C, P, P) in [-1, 1], padded with black."""
        want = (self.config.channels, self.config.image_size, self.config.image_size)
        if images.dim() != 4 or tuple(images.shape[1:]) != want:
            shape = ", ".join(map(str, want))
            raise InvalidInput(f"diffusion expects images (B, {shape}), got {tuple(images.shape)}")
        x = images * 2 - 1
        total = self.padded_size - self.config.image_size
        if total:
            a = total // 2
            x = F.pad(x, (a, total - a, a, total - a), value=-1.0)
        return x

    def _to_images(self, x: Tensor) -> Tensor:
        """(B, C, P, P) in [-1, 1] -> (B, C, H, W) in [0, 1], cropped."""
        a = (self.padded_size - self.config.image_size) // 2
        s = self.config.image_size
        return ((x[..., a : a + s, a : a + s] + 1) / 2).clamp(0, 1)

    def _class_labels(self, labels: Tensor | None, n: int, device) -> Tensor | None:
        """Class ids for the UNet: None for an unconditional model, the null class when none given."""
        if self.null_class is None:
            if labels is not None:
                raise InvalidInput("this diffusion model is unconditional: sample it without a condition")
            return None
        if labels is None:
            return torch.full((n,), self.null_class, dtype=torch.long, device=device)
        labels = torch.as_tensor(labels, dtype=torch.long, device=device)
        if labels.shape != (n,):
            raise InvalidInput(
                f"condition must hold one class id per image, shape ({n},), got {tuple(labels.shape)}"
            )
        if labels.numel() and (labels.min() < 0 or labels.max() >= self.config.num_classes):
            raise InvalidInput(
                f"class ids must lie in 0..{self.config.num_classes - 1}, "
                f"got {labels.min().item()}..{labels.max().item()}"
            )
        return labels

    # -- the objective ---------------------------------------------------------------------

    def loss(self, images: Tensor, labels: Tensor | None, unet: nn.Module | None = None,
             generator: torch.Generator | None = None, label_dropout: float = 0.0) -> Tensor:
        """The DDPM loss || target - unet(sqrt(a_t) x_0 + sqrt(1 - a_t) eps, t, y) ||^2, target eps or
        v per ``prediction_type``, each image's term weighted by min-SNR when ``snr_gamma`` > 0."""
        unet = unet or self.unet
        x0 = self._to_model(images)  # (B, C, P, P)
        B, dev = x0.shape[0], x0.device
        y = self._class_labels(labels if self.null_class is not None else None, B, dev)
        if y is not None and label_dropout > 0:
            drop = _rand((B,), generator, dev) < label_dropout
            y = y.masked_fill(drop, self.null_class)  # train the unconditional model too
        noise = _randn(x0.shape, generator, dev, x0.dtype)
        t = _randint(self.config.num_train_timesteps, (B,), generator, dev)
        if self.config.offset_noise > 0:  # drawn last: with it off, the draws are those of before
            offset = _randn((B, x0.shape[1], 1, 1), generator, dev, x0.dtype)
            noise = noise + self.config.offset_noise * offset
        x_t = self.noise_scheduler.add_noise(x0, noise, t)  # forward process q(x_t | x_0)
        pred = unet(x_t, t, class_labels=y).sample
        if self.config.prediction_type == "v_prediction":
            target = self.noise_scheduler.get_velocity(x0, noise, t)
        else:
            target = noise
        per_image = (pred.float() - target.float()).square().mean(dim=(1, 2, 3))  # (B,)
        if self.config.snr_gamma > 0:
            per_image = per_image * self._snr_weight(t)
        return per_image.mean()

    def _snr_weight(self, t: Tensor) -> Tensor:
        """min(SNR, gamma) / SNR for epsilon, / (SNR + 1) for v: both equal min-SNR's weight on the
        x_0 error (Hang et al. 2023, eq. 10 and its v form)."""
        a = self.noise_scheduler.alphas_cumprod.to(t.device)[t].float()
        snr = a / (1 - a)
        clipped = snr.clamp(max=self.config.snr_gamma)
        return clipped / (snr + 1) if self.config.prediction_type == "v_prediction" else clipped / snr

    # -- the training contract -------------------------------------------------------------

    def configure_optimizers(self, lr: float, weight_decay: float) -> list[torch.optim.Optimizer]:
        params = list(self.unet.parameters())  # the EMA copy is not trained
        decay = [p for p in params if p.dim() >= 2]
        no_decay = [p for p in params if p.dim() < 2]
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
        loss = self.loss(images, labels, label_dropout=self.config.label_dropout)
        backward(loss)
        opt.step()
        self.update_ema()
        return {"loss": loss.item()}

    @torch.no_grad()
    def update_ema(self) -> None:
        """ema <- d * ema + (1 - d) * online, with d warmed up so the first samples are not noise."""
        n = int(self.ema_updates)
        d = min(self.config.ema_decay, (1 + n) / (10 + n))
        for e, p in zip(self.ema.parameters(), self.unet.parameters()):
            e.lerp_(p.detach(), 1 - d)
        self.ema_updates += 1

    @torch.no_grad()
    def validation_losses(self, images: Tensor, labels: Tensor | None) -> dict[str, float]:
        """"loss" is the EMA weights' (those that sample); the same noise and timesteps at every
        validation (a fixed seed), so checkpoints are compared on equal terms."""
        gen = torch.Generator().manual_seed(0)
        ema = self.loss(images, labels, unet=self.ema, generator=gen).item()
        gen.manual_seed(0)
        raw = self.loss(images, labels, unet=self.unet, generator=gen).item()
        return {"loss": ema, "loss_online": raw}

    # -- sampling --------------------------------------------------------------------------

    def _ddim(self, steps: int | None):
        """A fresh DDIM scheduler (they are stateful) on the training schedule, ``steps`` long.
        Trailing spacing starts at t = T - 1, so even 2 steps start from pure noise."""
        from diffusers import DDIMScheduler

        steps = self.config.sample_steps if steps is None else steps
        if not 1 <= steps <= self.config.num_train_timesteps:
            raise InvalidInput(f"steps must be between 1 and {self.config.num_train_timesteps}, got {steps}")
        scheduler = DDIMScheduler.from_config(self.noise_scheduler.config, timestep_spacing="trailing")
        scheduler.set_timesteps(steps)
        return scheduler

    def _denoise(self, x: Tensor, scheduler, timesteps: Tensor, y: Tensor | None, guidance: float,
                 eta: float = 0.0, generator: torch.Generator | None = None) -> Tensor:
        """The reverse process from x_t at timesteps[0] down to x_0, with the EMA UNet; ``eta`` > 0
        adds fresh noise at each step (DDIM's sigma; 1.0 is the ancestral DDPM step)."""
        guided = y is not None and y.ne(self.null_class).any() and guidance != 1.0
        for t in timesteps:
            # 1. predict the noise (or v); with guidance, conditional and null-class predictions in
            #    one batch, mixed linearly (both targets are linear in the noise)
            if guided:
                null = torch.full_like(y, self.null_class)
                both = self.ema(torch.cat([x, x]), t, class_labels=torch.cat([y, null])).sample
                pred_c, pred_u = both.chunk(2)
                pred = pred_u + guidance * (pred_c - pred_u)
            else:
                pred = self.ema(x, t, class_labels=y).sample
            # 2. x_t -> x_t-1 (DDIM, eta = 0: deterministic given x_T). The predicted x_0 is clipped
            #    to [-1, 1] and the noise re-derived from the clipped x_0, as GLIDE and guided-diffusion
            #    do; stepping with the unclipped noise (diffusers' default) lets guidance push pixels
            #    out of range step after step. The last step (t_prev < 0, alpha = 1) returns that
            #    clipped x_0 itself.
            x = scheduler.step(pred, t, x, eta=eta, use_clipped_model_output=True,
                               generator=generator).prev_sample
        return x

    @torch.no_grad()
    def sample(self, n: int, condition: Tensor | None = None, generator: torch.Generator | None = None,
               steps: int | None = None, guidance: float | None = None, eta: float | None = None) -> Tensor:
        """n images (n, C, H, W) in [0, 1] by DDIM with ``steps`` steps (default config.sample_steps).

        ``condition``: (n,) class ids, or None (a conditional model then samples its null class).
        ``guidance``: classifier-free guidance scale (default config.guidance); 1.0 = none.
        ``eta``: DDIM's eta (default config.sample_eta); 0 = deterministic given the seed's x_T.
        """
        if n < 1:
            raise InvalidInput(f"n must be >= 1, got {n}")
        guidance = self.config.guidance if guidance is None else guidance
        eta = self.config.sample_eta if eta is None else eta
        if eta < 0:
            raise InvalidInput(f"eta must be >= 0 (0 = deterministic DDIM), got {eta}")
        scheduler = self._ddim(steps)
        dev = self.ema.device
        y = self._class_labels(condition, n, dev)
        shape = (n, self.config.channels, self.padded_size, self.padded_size)
        x = _randn(shape, generator, dev, self.ema.dtype)  # x_T ~ N(0, I)
        return self._to_images(self._denoise(x, scheduler, scheduler.timesteps, y, guidance, eta, generator))

    @torch.no_grad()
    def sdedit(self, images: Tensor, labels_to: Tensor | None, strength: float = 0.6,
               steps: int | None = None, generator: torch.Generator | None = None,
               guidance: float | None = None) -> Tensor:
        """SDEdit (Meng et al. 2022): noise ``images`` (B, C, H, W in [0, 1]) to ``strength`` of the
        schedule (1.0 = pure noise, the input is forgotten), then denoise towards ``labels_to``."""
        if not 0 < strength <= 1:
            raise InvalidInput(f"strength must be in (0, 1], got {strength}")
        guidance = self.config.guidance if guidance is None else guidance
        scheduler = self._ddim(steps)
        x0 = self._to_model(images.to(self.ema.device, self.ema.dtype))
        y = self._class_labels(labels_to, x0.shape[0], x0.device)
        k = min(int(scheduler.num_inference_steps * strength), scheduler.num_inference_steps)  # steps to run
        if k == 0:
            return images.clone().clamp(0, 1)
        timesteps = scheduler.timesteps[-k:]
        noise = _randn(x0.shape, generator, x0.device, x0.dtype)
        x = scheduler.add_noise(x0, noise, timesteps[:1].repeat(x0.shape[0]))  # x_t for the first kept t
        return self._to_images(self._denoise(x, scheduler, timesteps, y, guidance))

    # -- export ----------------------------------------------------------------------------

    def save_pipeline(self, out_dir: Path | str) -> None:
        """Write a diffusers pipeline folder (EMA UNet + DDPM scheduler) that loads offline with
        ``diffusers.DDPMPipeline.from_pretrained(out_dir)``.

        An unconditional model generates with the pipeline itself (``pipe(num_inference_steps=50)``);
        the images are ``padded_size`` square (written in ``aigc.json``): crop the centre
        ``image_size`` square. ``DDPMPipeline`` cannot pass class labels, so for a conditional model
        load the pipeline (or ``UNet2DModel.from_pretrained(out_dir, subfolder="unet")``) and write
        the loop with ``unet(x, t, class_labels=y).sample``: ``y`` holds class ids
        0..num_classes-1, and ``num_classes`` (= ``unet.config.num_class_embeds - 1``) is the null
        class used for classifier-free guidance.
        """
        from diffusers import DDPMPipeline, DDPMScheduler
        from diffusers.utils import logging as dlogging

        out_dir = Path(out_dir)
        out_dir.mkdir(parents=True, exist_ok=True)
        pipe = DDPMPipeline(unet=self.ema, scheduler=DDPMScheduler.from_config(self.noise_scheduler.config))
        bar = dlogging.is_progress_bar_enabled()
        dlogging.disable_progress_bar()
        try:
            pipe.save_pretrained(out_dir)
        finally:
            if bar:
                dlogging.enable_progress_bar()
        info = {
            "family": self.name,
            "image_size": self.config.image_size,
            "padded_size": self.padded_size,
            "channels": self.config.channels,
            "num_classes": self.config.num_classes,
            "null_class": self.null_class,
        }
        (out_dir / "aigc.json").write_text(json.dumps(info, indent=2) + "\n", encoding="utf-8")

    def config_dict(self) -> dict:
        return asdict(self.config)


# Random draws from an optional generator, which may live on another device than the tensors.

def _gen_device(generator: torch.Generator | None, device) -> torch.device:
    return generator.device if generator is not None else torch.device(device)


def _randn(shape, generator, device, dtype=torch.float32) -> Tensor:
    where = _gen_device(generator, device)
    return torch.randn(shape, generator=generator, device=where, dtype=dtype).to(device)


def _rand(shape, generator, device) -> Tensor:
    return torch.rand(shape, generator=generator, device=_gen_device(generator, device)).to(device)


def _randint(high: int, shape, generator, device) -> Tensor:
    where = _gen_device(generator, device)
    return torch.randint(0, high, shape, generator=generator, device=where).to(device)
