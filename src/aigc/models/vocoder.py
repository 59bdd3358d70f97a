"""`vocoder`: a small neural vocoder, log-mel in dB -> waveform, with one task. Three generators:
``postnet`` (the default: learned linear magnitudes, Tacotron's post-net, with Griffin-Lim's phase;
see :class:`MagnitudeGenerator`), HiFi-GAN's (Kong et al. 2020, ``generator="hifigan"``) and
Vocos's (Siuzdak 2023, ``generator="vocos"``); the two wave generators share one objective.

``hifigan`` (scaled down): a 7-tap conv from the mel bands to ``channels``, then one stage per
upsampling rate (8, 8, 2, 2: 256x, the features' hop), each a transposed conv of kernel 2 x rate
(so every output sample sees the same number of taps: no checkerboard) that halves the channels,
followed by the multi-receptive-field fusion: the mean of residual blocks of different kernel
sizes, each a chain of dilated convs (HiFi-GAN's ResBlock1); a last 7-tap conv to one channel and
``tanh``. Every conv is weight-normalised.

``vocos``: ConvNeXt blocks at the frame rate and a linear head to each frame's log-magnitude and
phase over an STFT of 4 x hop, then the inverse STFT: nothing runs at the sample rate, so a CPU
takes about 2.5x the steps per second of ``hifigan`` small, and each step learns more. Measured
(``small``, one thread, 150 s under :func:`aigc.training.fit` at lr 2e-3, 24 one-second harmonic
tones, MR-STFT distance of 4 val tones): hifigan 1.48 after 857 steps, vocos 0.89 after 2,169
steps, Griffin-Lim (64 iterations) 0.50. On 170 espeak-ng spoken digits a first version of the
vocos generator (same blocks, no layer scale) reached 0.97 on 10 val clips after 6,500 steps
(400 s), Griffin-Lim 0.77: within CPU minutes neither generator beats Griffin-Lim yet. What they
miss is phase more than magnitude: on training segments vocos's mel L1 falls to about 1.5 dB while
its spectral convergence stays near 0.5 (hifigan's near 0.85); Griffin-Lim's is 0.40 on those val
clips.

Either way a mel of ``F`` frames gives exactly ``F * hop`` samples: frame ``f`` (centred at
sample ``f * hop`` by the features' ``center=True`` STFT) owns samples ``f * hop .. (f + 1) * hop - 1``.

The input is the dB mel of :func:`aigc.data.audio_features.log_mel`, clipped to the fixed dB
range the dataset's images hold (``db_min .. db_max``) and scaled to [-1, 1]: a mel decoded from a
generated image and a mel of a real clip mean the same thing to the vocoder.

Objective (no discriminator by default, so it trains on a CPU in minutes): the multi-resolution
STFT loss of Parallel WaveGAN (spectral convergence + log-magnitude L1 at FFT 512/1024/2048,
:func:`aigc.metrics.audio.mr_stft_terms`) plus ``mel_weight`` x the L1 between the dB mels of the
features (HiFi-GAN's mel loss, on the very mel the vocoder inverts). ``discriminator=True`` adds a light
multi-scale discriminator (MelGAN's, at a quarter of its width) with least-squares GAN losses and
feature matching; it is untuned in this first slice and off in every preset. Weights start at
PyTorch's defaults (not HiFi-GAN's normal(0, 0.01)).

:class:`VocoderTask` feeds the training loop (:func:`aigc.training.fit`): random segments of
``segment_frames`` mel frames and their ``segment_frames * hop`` samples, cut from the mels of whole
clips computed once (so training sees frames exactly as vocoding a whole clip does); validation is
the MR-STFT distance of vocoded val clips to the originals. :func:`compare_with_griffin_lim` scores
the vocoder against the Griffin-Lim baseline on the same mels.

This module knows the network, its losses, segments of waveforms and the feature constants; it
reads an audio dataset's ``audio_<split>.npz`` only in :meth:`VocoderTask.from_dataset`.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.nn.utils.parametrizations import weight_norm

from aigc.data.audio_features import AMIN
from aigc.errors import InvalidInput, NotFound
from aigc.metrics.audio import MAG_FLOOR, RESOLUTIONS, mr_stft_distance, mr_stft_terms

CONFIG_FILE = "vocoder.json"
WEIGHTS_FILE = "vocoder.safetensors"
LRELU_SLOPE = 0.1  # HiFi-GAN's
MAX_LOG_MAGNITUDE = 4.6  # vocos: magnitudes capped at e^4.6 = 100, as Vocos does


@dataclass
class VocoderConfig:
    # The features the vocoder inverts (aigc.data.audio_features: its constants are the defaults,
    # a test checks; training refuses a config or a dataset that differs from them)
    sample_rate: int = 16000
    n_mels: int = 64
    hop: int = 256  # samples per mel frame: the product of upsample_rates
    db_min: float = -100.0  # the fixed dB range of the dataset's images: the input is clipped to it
    db_max: float = 40.0
    # postnet (learned magnitudes + Griffin-Lim phase: beats Griffin-Lim in benchmarks/audio_train.py,
    # where vocos and hifigan did not in audio_vocoder.py) | hifigan (samples from upsampling convs) |
    # vocos (STFT frames, then iSTFT)
    generator: str = "postnet"
    channels: int = 128  # hifigan: after the input conv; each upsampling stage halves it
    # Comma-separated integers (the registry and the command line take scalars): see the properties
    upsample_rates: str = "8,8,2,2"
    resblock_kernels: str = "3,7,11"  # one residual block per kernel size (MRF)
    resblock_dilations: str = "1,3,5"  # the dilated convs of each residual block
    vocos_channels: int = 128  # vocos: width of its ConvNeXt blocks
    vocos_blocks: int = 4  # vocos: ConvNeXt blocks (Vocos itself: 512 wide, 8 deep)
    segment_frames: int = 32  # training segment: 32 frames = 8192 samples, HiFi-GAN's
    # weight of the log-mel L1 (in dB) next to the MR-STFT loss (sc + log-mag): 0.1 puts 10 dB of
    # mel error level with a log-magnitude L1 of 1 (1 neper is 8.7 dB)
    mel_weight: float = 0.1
    # vocos: weight of APNet's anti-wrapped phase losses (instantaneous phase, group delay,
    # instantaneous frequency against the clip's own STFT); 0 = off
    phase_weight: float = 0.0
    gl_iterations: int = 64  # postnet: Griffin-Lim iterations on its magnitudes (the baseline's 64)
    # vocos: weight of APNet's amplitude loss (its predicted log-magnitudes against the clip's own)
    amplitude_weight: float = 0.0
    discriminator: bool = False  # add the light multi-scale discriminator (adversarial + feature matching)
    disc_width: int = 4  # discriminator channels of its first conv (MelGAN: 16); a multiple of 4
    adv_weight: float = 1.0  # discriminator on: weight of the adversarial term (Parallel WaveGAN: 4)
    fm_weight: float = 2.0  # discriminator on: weight of feature matching (HiFi-GAN: 2)

    @property
    def rates(self) -> tuple[int, ...]:
        return _ints(self.upsample_rates, "upsample_rates")

    @property
    def kernels(self) -> tuple[int, ...]:
        return _ints(self.resblock_kernels, "resblock_kernels")

    @property
    def dilations(self) -> tuple[int, ...]:
        return _ints(self.resblock_dilations, "resblock_dilations")


def _ints(text: str, key: str) -> tuple[int, ...]:
    try:
        return tuple(int(part) for part in text.split(","))
    except ValueError:
        raise InvalidInput(f"vocoder {key} must be comma-separated integers such as 8,8,2,2, "
                           f"got {text!r}") from None


def _padding(kernel: int, dilation: int = 1) -> int:
    return (kernel * dilation - dilation) // 2  # "same" length for an odd kernel


# -- network -------------------------------------------------------------------------------------


class ResBlock(nn.Module):
    """HiFi-GAN's ResBlock1: per dilation d, x += conv_k(lrelu(conv_k,d(lrelu(x)))); length kept."""

    def __init__(self, channels: int, kernel: int, dilations: tuple[int, ...]):
        super().__init__()
        self.dilated = nn.ModuleList(
            weight_norm(nn.Conv1d(channels, channels, kernel, dilation=d, padding=_padding(kernel, d)))
            for d in dilations)
        self.plain = nn.ModuleList(
            weight_norm(nn.Conv1d(channels, channels, kernel, padding=_padding(kernel))) for _ in dilations)

    def forward(self, x: Tensor) -> Tensor:  # (B, C, T) -> (B, C, T)
        for dilated, plain in zip(self.dilated, self.plain):
            x = x + plain(F.leaky_relu(dilated(F.leaky_relu(x, LRELU_SLOPE)), LRELU_SLOPE))
        return x


class Generator(nn.Module):
    """(B, n_mels, F) scaled mel -> (B, F * hop) waveform in [-1, 1]."""

    def __init__(self, c: VocoderConfig):
        super().__init__()
        self.pre = weight_norm(nn.Conv1d(c.n_mels, c.channels, 7, padding=3))
        self.ups = nn.ModuleList()
        self.mrfs = nn.ModuleList()
        ch = c.channels
        for rate in c.rates:
            # kernel 2r, stride r, padding r/2: output length = input length * r exactly
            up = nn.ConvTranspose1d(ch, ch // 2, 2 * rate, stride=rate, padding=rate // 2)
            self.ups.append(weight_norm(up))
            ch //= 2
            self.mrfs.append(nn.ModuleList(ResBlock(ch, k, c.dilations) for k in c.kernels))
        self.post = weight_norm(nn.Conv1d(ch, 1, 7, padding=3))

    def forward(self, x: Tensor) -> Tensor:
        x = self.pre(x)  # (B, C, F)
        for up, mrf in zip(self.ups, self.mrfs):
            x = up(F.leaky_relu(x, LRELU_SLOPE))  # (B, C/2, T * rate)
            x = sum(block(x) for block in mrf) / len(mrf)  # multi-receptive-field fusion
        x = self.post(F.leaky_relu(x))  # (B, 1, F * hop); 0.01 slope here, as HiFi-GAN
        return torch.tanh(x).squeeze(1)


class ConvNeXtBlock(nn.Module):
    """Vocos's block at the frame rate: a depthwise 7-tap conv, LayerNorm, a pointwise MLP (3x,
    GELU) scaled per channel (layer scale), added back: (B, C, F) -> (B, C, F)."""

    def __init__(self, channels: int, layer_scale: float):
        super().__init__()
        self.depthwise = nn.Conv1d(channels, channels, 7, padding=3, groups=channels)
        self.norm = nn.LayerNorm(channels, eps=1e-6)
        self.up = nn.Linear(channels, 3 * channels)
        self.down = nn.Linear(3 * channels, channels)
        self.scale = nn.Parameter(torch.full((channels,), layer_scale))

    def forward(self, x: Tensor) -> Tensor:
        h = self.depthwise(x).transpose(1, 2)  # (B, F, C)
        h = self.down(F.gelu(self.up(self.norm(h)))) * self.scale
        return x + h.transpose(1, 2)


class FrameGenerator(nn.Module):
    """Vocos (Siuzdak 2023): ConvNeXt blocks at the frame rate, a linear head to each frame's
    log-magnitude and phase over an STFT of 4 x hop (1024 at hop 256), and the inverse STFT.
    (B, n_mels, F) scaled mel -> (B, F * hop) waveform; nothing runs at the sample rate."""

    def __init__(self, c: VocoderConfig):
        super().__init__()
        ch, self.hop, self.n_fft = c.vocos_channels, c.hop, 4 * c.hop
        self.pre = nn.Conv1d(c.n_mels, ch, 7, padding=3)
        self.pre_norm = nn.LayerNorm(ch, eps=1e-6)
        self.blocks = nn.ModuleList(ConvNeXtBlock(ch, 1 / c.vocos_blocks) for _ in range(c.vocos_blocks))
        self.post_norm = nn.LayerNorm(ch, eps=1e-6)
        self.head = nn.Linear(ch, self.n_fft + 2)  # log-magnitudes and phases of n_fft // 2 + 1 bins
        self.register_buffer("window", torch.hann_window(self.n_fft), persistent=False)

    def spectrum(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """(B, n_mels, F) scaled mel -> each frame's log-magnitude and phase (B, n_fft/2+1, F)."""
        h = self.pre_norm(self.pre(x).transpose(1, 2)).transpose(1, 2)  # (B, C, F)
        for block in self.blocks:
            h = block(h)
        out = self.head(self.post_norm(h.transpose(1, 2))).transpose(1, 2).float()  # iSTFT in float32
        log_mag, phase = out.chunk(2, dim=1)
        return log_mag.clamp(max=MAX_LOG_MAGNITUDE), phase

    def synthesize(self, log_mag: Tensor, phase: Tensor) -> Tensor:
        # frame f centred on sample f * hop, as the features' STFT; the last hop samples fade out
        return torch.istft(torch.polar(log_mag.exp(), phase), self.n_fft, self.hop, window=self.window,
                           center=True, length=phase.shape[-1] * self.hop)

    def forward(self, x: Tensor) -> Tensor:
        return self.synthesize(*self.spectrum(x))

    def target_spectrum(self, wave: Tensor, frames: int) -> Tensor:
        """The target wave's STFT on the generator's own frames (B, n_fft/2+1, frames), complex."""
        return torch.stft(wave.float(), self.n_fft, self.hop, window=self.window, center=True,
                          return_complex=True)[..., :frames]

    def amplitude_loss(self, log_mag: Tensor, target: Tensor) -> Tensor:
        """APNet's amplitude loss: L1 between the predicted and the target log-magnitudes on the
        generator's frames (floored as the MR-STFT metric floors them), so the magnitudes it
        predicts are the clip's, and silence comes from small magnitudes, not from phases that
        cancel in the overlap-add."""
        return (log_mag - target.abs().clamp(min=MAG_FLOOR ** 0.5).log()).abs().mean()

    def phase_losses(self, phase: Tensor, wave: Tensor) -> Tensor:
        """APNet's anti-wrapped phase losses (Ai & Ling 2023): instantaneous phase, group delay
        (its difference along frequency) and instantaneous frequency (along time) of the predicted
        phase against the target wave's STFT on the generator's own frames, each cell weighted by
        the target's magnitude (the phase of a silent cell is noise)."""
        target = torch.stft(wave.float(), self.n_fft, self.hop, window=self.window, center=True,
                            return_complex=True)[..., : phase.shape[-1]]
        weight = target.abs()
        weight = weight / weight.mean().clamp(min=1e-8)
        true = target.angle()

        def wrapped(d: Tensor) -> Tensor:
            return (d - 2 * math.pi * torch.round(d / (2 * math.pi))).abs()

        ip = (weight * wrapped(phase - true)).mean()
        gd = (weight[:, 1:] * wrapped(phase.diff(dim=1) - true.diff(dim=1))).mean()
        iaf = (weight[..., 1:] * wrapped(phase.diff(dim=2) - true.diff(dim=2))).mean()
        return ip + gd + iaf


class ScaleDiscriminator(nn.Module):
    """MelGAN's per-scale discriminator at ``width`` channels: (B, T) -> (scores, feature maps)."""

    def __init__(self, width: int):
        super().__init__()
        self.convs = nn.ModuleList([
            weight_norm(nn.Conv1d(1, width, 15, padding=7)),
            weight_norm(nn.Conv1d(width, 4 * width, 41, stride=4, groups=4, padding=20)),
            weight_norm(nn.Conv1d(4 * width, 16 * width, 41, stride=4, groups=16, padding=20)),
            weight_norm(nn.Conv1d(16 * width, 16 * width, 5, padding=2)),
        ])
        self.post = weight_norm(nn.Conv1d(16 * width, 1, 3, padding=1))

    def forward(self, wave: Tensor) -> tuple[Tensor, list[Tensor]]:
        x, feats = wave[:, None], []
        for conv in self.convs:
            x = F.leaky_relu(conv(x), LRELU_SLOPE)
            feats.append(x)
        return self.post(x).flatten(1), feats


class MultiScaleDiscriminator(nn.Module):
    """Three scale discriminators on the wave, its 2x and its 4x average-pooled versions."""

    def __init__(self, width: int):
        super().__init__()
        self.scales = nn.ModuleList(ScaleDiscriminator(width) for _ in range(3))
        self.pool = nn.AvgPool1d(4, stride=2, padding=2)

    def forward(self, wave: Tensor) -> list[tuple[Tensor, list[Tensor]]]:
        out = []
        for i, disc in enumerate(self.scales):
            if i:
                wave = self.pool(wave[:, None]).squeeze(1)
            out.append(disc(wave))
        return out


# postnet: the power floor of its magnitudes, the features' silence (AMIN, -100 dB); the MR-STFT
# metric's floor (1e-7, -70 dB) would let silence fill up to -70 dB, which the metric cannot see but
# the mel (and a classifier reading it) does
POWER_FLOOR = AMIN


class MagnitudeGenerator(nn.Module):
    """``postnet``: a learned mel -> linear-magnitude network (Tacotron's post-processing net, Wang
    et al. 2017) whose magnitudes fast Griffin-Lim turns into sound, as Tacotron does.

    Vocos's trunk (ConvNeXt blocks at the frame rate) predicts a correction, in log-magnitude, to the
    mel's own non-negative inversion (:func:`aigc.data.audio_features.mel_to_linear`, what
    Griffin-Lim starts from); the head starts at zero, so an untrained net is exactly Griffin-Lim. It
    trains on magnitudes alone (no waveform in the loop: many steps a second on a CPU): the
    log-magnitude L1 and the spectral convergence against the clip's own STFT on the features'
    frames (N_FFT 1024, hop 256). Phase comes from Griffin-Lim with as many iterations and the same
    seeded start as the baseline, so a comparison with it isolates the magnitudes.
    """

    def __init__(self, c: VocoderConfig):
        super().__init__()
        from aigc.data.audio_features import N_FFT

        ch, self.hop, self.n_fft, self.sample_rate = c.vocos_channels, c.hop, N_FFT, c.sample_rate
        self.gl_iterations = c.gl_iterations
        self.pre = nn.Conv1d(c.n_mels, ch, 7, padding=3)
        self.pre_norm = nn.LayerNorm(ch, eps=1e-6)
        self.blocks = nn.ModuleList(ConvNeXtBlock(ch, 1 / c.vocos_blocks) for _ in range(c.vocos_blocks))
        self.post_norm = nn.LayerNorm(ch, eps=1e-6)
        self.head = nn.Linear(ch, self.n_fft // 2 + 1)
        nn.init.zeros_(self.head.weight)
        nn.init.zeros_(self.head.bias)
        self.register_buffer("window", torch.hann_window(self.n_fft), persistent=False)

    def log_magnitude(self, x: Tensor, db_mel: Tensor) -> Tensor:
        """(B, n_mels, F) scaled mel and its dB values -> log linear magnitudes (B, N_FFT/2+1, F)."""
        from aigc.data.audio_features import mel_to_linear

        with torch.no_grad():
            base = mel_to_linear(db_mel.double(), self.sample_rate).float().clamp(min=POWER_FLOOR).log() / 2
        h = self.pre_norm(self.pre(x).transpose(1, 2)).transpose(1, 2)
        for block in self.blocks:
            h = block(h)
        correction = self.head(self.post_norm(h.transpose(1, 2))).transpose(1, 2).float()
        return (base + correction).clamp(max=MAX_LOG_MAGNITUDE)

    def losses(self, x: Tensor, db_mel: Tensor, wave: Tensor) -> dict[str, Tensor]:
        """On a training segment: its edge frames, whose windows reach past the segment (the STFT pads
        them by reflection, the mel saw the clip around them), are left out."""
        log_mag = self.log_magnitude(x, db_mel)
        target = torch.stft(wave.float(), self.n_fft, self.hop, window=self.window, center=True,
                            return_complex=True)[..., : log_mag.shape[-1]].abs().clamp(min=POWER_FLOOR ** 0.5)
        edge = self.n_fft // (2 * self.hop)  # frames whose window starts before the segment: 2
        if log_mag.shape[-1] > edge + 2:
            log_mag, target = log_mag[..., edge:-1], target[..., edge:-1]
        mag = (log_mag - target.log()).abs().mean()
        sc = (log_mag.exp() - target).norm() / target.norm()
        return {"loss": sc + mag, "sc": sc, "mag": mag}

    def forward(self, x: Tensor, db_mel: Tensor) -> Tensor:
        from aigc.data.audio_features import griffin_lim_magnitude

        frames = x.shape[-1]  # F frames span (F - 1) * hop samples; the last hop is silence
        if frames < 2:
            return x.new_zeros(x.shape[0], frames * self.hop)
        magnitude = self.log_magnitude(x, db_mel).exp()
        wave = griffin_lim_magnitude(magnitude.cpu(), self.gl_iterations, length=(frames - 1) * self.hop)
        return F.pad(wave, (0, self.hop)).to(x.device)


GENERATORS: dict[str, type[nn.Module]] = {"hifigan": Generator, "vocos": FrameGenerator, "postnet": MagnitudeGenerator}


class Vocoder(nn.Module):
    name = "vocoder"
    modality = "audio"
    Config = VocoderConfig
    PRESETS = {
        # tests: trains in seconds (hifigan 0.03 M parameters, vocos 0.06 M)
        "tiny": dict(channels=32, resblock_kernels="3", resblock_dilations="1,3", vocos_channels=32,
                     vocos_blocks=2, segment_frames=8),
        # 2 CPU cores, minutes, 1-second clips (hifigan 0.13 M parameters, vocos 0.6 M)
        "small": dict(channels=64, resblock_kernels="3,7", resblock_dilations="1,3", vocos_channels=128,
                      vocos_blocks=4, segment_frames=32),
        # hifigan: HiFi-GAN V2's generator (128 channels, kernels 3/7/11, dilations 1/3/5, 0.9 M
        # parameters); vocos 3.6 M: a GPU
        "base": dict(channels=128, resblock_kernels="3,7,11", resblock_dilations="1,3,5", vocos_channels=256,
                     vocos_blocks=8, segment_frames=32),
    }
    # AdamW with HiFi-GAN's betas (0.8, 0.99); without a discriminator rates far above its 2e-4
    # are stable and learn much more in a CPU budget (tiny: 40 steps at 1e-2 halve the distance,
    # at 2e-3 they take 10 % off it).
    TRAIN_DEFAULTS = {
        "tiny": dict(max_steps=30, batch_size=4, lr=1e-2, warmup_steps=0, weight_decay=0.0, eval_every=15),
        "small": dict(max_steps=0, time_budget=600.0, batch_size=8, lr=2e-3, warmup_steps=50,
                      weight_decay=0.0, eval_every=200),
        "base": dict(max_steps=50000, batch_size=16, lr=2e-4, warmup_steps=500, weight_decay=0.0,
                     eval_every=1000),
    }
    progress_keys = ("loss", "sc", "mag", "mel")

    def __init__(self, config: VocoderConfig):
        super().__init__()
        _check_config(config)
        self.config = config
        self.generator = GENERATORS[config.generator](config)
        self.discriminator = MultiScaleDiscriminator(config.disc_width) if config.discriminator else None

    @classmethod
    def from_preset(cls, preset: str = "small", **overrides: Any) -> "Vocoder":
        from aigc.models.registry import make_config

        return cls(make_config(cls, preset, overrides))

    @staticmethod
    def task_for_dataset(ds_dir: Path | str, config: VocoderConfig, batch_size: int) -> "VocoderTask":
        """The training task over an ingested audio dataset (:func:`aigc.runs.train` asks for it)."""
        return VocoderTask.from_dataset(ds_dir, config, batch_size)

    # -- inference -----------------------------------------------------------------------------

    def scale(self, db_mel: Tensor) -> Tensor:
        """dB mel -> the generator's input: clipped to [db_min, db_max], mapped to [-1, 1]."""
        c = self.config
        return (db_mel.clamp(c.db_min, c.db_max) - c.db_min) * (2.0 / (c.db_max - c.db_min)) - 1.0

    def forward(self, db_mel: Tensor) -> Tensor:
        """(B, n_mels, F) mel in dB -> (B, F * hop) waveform in [-1, 1]."""
        if isinstance(self.generator, MagnitudeGenerator):
            c = self.config
            return self.generator(self.scale(db_mel), db_mel.clamp(c.db_min, c.db_max))
        return self.generator(self.scale(db_mel))

    @torch.no_grad()
    def vocode(self, db_mel: np.ndarray | Tensor) -> np.ndarray:
        """A dB mel (n_mels, frames), or a batch (B, n_mels, frames), -> float32 waveform(s) of
        ``frames * hop`` samples at ``config.sample_rate``. Deterministic: no noise is drawn."""
        mel = _check_mel(db_mel, self.config.n_mels)
        device = next(self.parameters()).device
        was_training = self.training
        self.eval()
        try:
            wave = self(mel.to(device)[None] if mel.dim() == 2 else mel.to(device))
        finally:
            self.train(was_training)
        wave = wave.clamp(-1.0, 1.0).float().cpu().numpy()  # vocos has no tanh: clip as a WAV would
        return wave[0] if mel.dim() == 2 else wave

    # -- objective -----------------------------------------------------------------------------

    def reconstruction_losses(self, fake: Tensor, real: Tensor) -> dict[str, Tensor]:
        """MR-STFT (sc + mag) + mel_weight * the log-mel L1 in dB (the features' own mel,
        :func:`aigc.data.audio_features.log_mel_torch`) of ``fake`` against ``real`` (B, T)."""
        from aigc.data.audio_features import log_mel_torch

        fake, real = fake.float(), real.float()
        with torch.autocast(fake.device.type, enabled=False):  # STFTs and dB in float32 under bf16 too
            sc, mag = mr_stft_terms(fake, real, per_clip=False)  # batch norms: silent segments stay tame
            sr = self.config.sample_rate
            mel = (log_mel_torch(fake, sr) - log_mel_torch(real, sr)).abs().mean()  # dB
        return {"loss": sc + mag + self.config.mel_weight * mel, "sc": sc, "mag": mag, "mel": mel}

    # -- the training contract (aigc.training.fit: a family that owns its step) ------------------

    def configure_optimizers(self, lr: float, weight_decay: float) -> list[torch.optim.Optimizer]:
        betas = (0.8, 0.99)  # HiFi-GAN's
        nets = [self.generator] + ([self.discriminator] if self.discriminator is not None else [])
        return [torch.optim.AdamW(net.parameters(), lr=lr, betas=betas, weight_decay=weight_decay)
                for net in nets]

    def training_step(
        self, db_mel: Tensor, wave: Tensor, optimizers: list, backward: Callable[[Tensor], None]
    ) -> dict[str, float]:
        """One update on mel segments (B, n_mels, F) and their waves (B, F * hop)."""
        opt_g = optimizers[0]
        out: dict[str, Tensor] = {}
        if isinstance(self.generator, MagnitudeGenerator):  # magnitudes only: no wave in the loop
            opt_g.zero_grad(set_to_none=True)
            c = self.config
            rec = self.generator.losses(self.scale(db_mel), db_mel.clamp(c.db_min, c.db_max), wave)
            backward(rec["loss"])
            opt_g.step()
            return {k: float(v.detach()) for k, v in rec.items()}
        phase_loss = None
        if (self.config.phase_weight or self.config.amplitude_weight) and isinstance(self.generator, FrameGenerator):
            log_mag, phase = self.generator.spectrum(self.scale(db_mel))
            fake = self.generator.synthesize(log_mag, phase)
            phase_loss = fake.new_zeros(())
            if self.config.phase_weight:
                phase_loss = phase_loss + self.config.phase_weight * self.generator.phase_losses(phase, wave)
            if self.config.amplitude_weight:
                target = self.generator.target_spectrum(wave, log_mag.shape[-1])
                phase_loss = phase_loss + self.config.amplitude_weight * self.generator.amplitude_loss(log_mag, target)
        else:
            fake = self(db_mel)  # (B, F * hop)
        if self.discriminator is not None:
            # 1. discriminator: real -> 1, fake -> 0 (least squares)
            opt_d = optimizers[1]
            opt_d.zero_grad(set_to_none=True)
            scores = zip(self.discriminator(wave), self.discriminator(fake.detach()))
            d_loss = sum((1 - real).square().mean() + fake_s.square().mean()
                         for (real, _), (fake_s, _) in scores)
            backward(d_loss)
            opt_d.step()
            out["d_loss"] = d_loss.detach()
        # 2. generator: reconstruction (+ fooling the discriminator and matching its features)
        opt_g.zero_grad(set_to_none=True)
        rec = self.reconstruction_losses(fake, wave)
        loss = rec["loss"]
        if phase_loss is not None:
            loss = loss + phase_loss
            out["spectrum"] = phase_loss.detach()
        if self.discriminator is not None:
            with torch.no_grad():
                real_feats = [feats for _, feats in self.discriminator(wave)]
            adv, fm = fake.new_zeros(()), fake.new_zeros(())
            for (score, feats), reals in zip(self.discriminator(fake), real_feats):
                adv = adv + (1 - score).square().mean()
                fm = fm + sum((f - r).abs().mean() for f, r in zip(feats, reals)) / len(feats)
            loss = loss + self.config.adv_weight * (adv + self.config.fm_weight * fm)
            out.update(adv=adv.detach(), fm=fm.detach())
        backward(loss)
        opt_g.step()
        out.update({k: v.detach() for k, v in rec.items()}, loss=loss.detach())
        return {k: float(v) for k, v in out.items()}

    # -- files -----------------------------------------------------------------------------------

    def config_dict(self) -> dict:
        return asdict(self.config)

    def save(self, folder: Path | str) -> Path:
        """Write ``vocoder.safetensors`` then ``vocoder.json`` (the config) into ``folder``, each
        atomically; the config goes last, so a folder with it holds weights that fit it."""
        from aigc.checkpoints import save_weights
        from aigc.workspace import write_json_atomic

        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        save_weights(self, folder / WEIGHTS_FILE)
        write_json_atomic(folder / CONFIG_FILE, {"family": self.name, "config": self.config_dict()})
        return folder

    @classmethod
    def load(cls, folder: Path | str, device: str | torch.device = "cpu") -> "Vocoder":
        """A vocoder written by :meth:`save`, in eval mode."""
        from aigc.checkpoints import load_weights
        from aigc.models.registry import config_from_dict

        folder = Path(folder)
        if not (folder / CONFIG_FILE).exists() or not (folder / WEIGHTS_FILE).exists():
            raise NotFound(f"{folder} holds no saved vocoder ({CONFIG_FILE} and {WEIGHTS_FILE}): "
                           "save one with Vocoder.save(folder)")
        try:
            spec = json.loads((folder / CONFIG_FILE).read_text(encoding="utf-8"))
            values = spec["config"]
        except (json.JSONDecodeError, KeyError, TypeError) as e:
            raise InvalidInput(f"{folder / CONFIG_FILE} is not a vocoder config ({type(e).__name__}): "
                               "save the vocoder again") from None
        model = cls(config_from_dict(VocoderConfig, values, what="vocoder config")).to(device)
        load_weights(model, folder / WEIGHTS_FILE)
        return model.eval()


def _check_config(c: VocoderConfig) -> None:
    if c.generator not in GENERATORS:
        raise InvalidInput(f"vocoder generator must be one of {', '.join(GENERATORS)}, got {c.generator!r}")
    if c.generator == "postnet" and (c.discriminator or c.gl_iterations < 1):
        raise InvalidInput("the postnet generator trains on magnitudes alone: no discriminator, and "
                           f"gl_iterations >= 1 (got discriminator={c.discriminator}, gl_iterations={c.gl_iterations})")
    if not c.phase_weight >= 0:
        raise InvalidInput(f"vocoder phase_weight must be >= 0 (0 turns the phase losses off), got {c.phase_weight}")
    if c.vocos_channels < 1 or c.vocos_blocks < 1:
        raise InvalidInput(f"vocoder vocos_channels and vocos_blocks must be >= 1, got {c.vocos_channels} "
                           f"and {c.vocos_blocks}")
    rates = c.rates
    if math.prod(rates) != c.hop:
        raise InvalidInput(f"vocoder upsample_rates {c.upsample_rates!r} multiply to {math.prod(rates)}, "
                           f"not the hop {c.hop}: their product must be the hop")
    if any(r < 2 or r % 2 for r in rates):
        raise InvalidInput(f"vocoder upsample_rates must be even numbers >= 2, got {c.upsample_rates!r}")
    if c.channels < 2 ** len(rates) or c.channels % 2 ** len(rates):
        raise InvalidInput(f"vocoder channels must be a multiple of {2 ** len(rates)} (each of "
                           f"{len(rates)} stages halves them), got {c.channels}")
    if any(k < 1 or k % 2 == 0 for k in c.kernels):
        raise InvalidInput(f"vocoder resblock_kernels must be odd sizes, got {c.resblock_kernels!r}")
    if any(d < 1 for d in c.dilations):
        raise InvalidInput(f"vocoder resblock_dilations must be >= 1, got {c.resblock_dilations!r}")
    shortest = RESOLUTIONS[-1][0] // 2 + 1  # the MR-STFT loss's largest FFT pads by half its size
    if c.segment_frames * c.hop < shortest:
        raise InvalidInput(f"vocoder segment_frames {c.segment_frames} gives {c.segment_frames * c.hop} "
                           f"samples, the loss needs at least {shortest}: raise segment_frames")
    if not c.db_max > c.db_min:
        raise InvalidInput(f"vocoder db_max ({c.db_max}) must be above db_min ({c.db_min})")
    if c.n_mels < 1 or c.sample_rate < 1:
        raise InvalidInput(f"vocoder n_mels and sample_rate must be positive, got {c.n_mels} and "
                           f"{c.sample_rate}")
    if c.discriminator and (c.disc_width < 4 or c.disc_width % 4):
        raise InvalidInput(f"vocoder disc_width must be a multiple of 4 (grouped convs), got {c.disc_width}")
    for key in ("mel_weight", "adv_weight", "fm_weight"):
        if getattr(c, key) < 0:
            raise InvalidInput(f"vocoder {key} must be >= 0, got {getattr(c, key)}")


def _check_mel(db_mel: np.ndarray | Tensor, n_mels: int) -> Tensor:
    if isinstance(db_mel, np.ndarray):
        db_mel = torch.from_numpy(np.ascontiguousarray(db_mel))
    if not isinstance(db_mel, Tensor):
        raise InvalidInput(f"vocode takes a dB mel as a numpy array or tensor, got {type(db_mel).__name__}")
    if db_mel.dim() not in (2, 3) or db_mel.shape[-2] != n_mels or db_mel.shape[-1] < 1:
        raise InvalidInput(f"vocode takes a dB mel ({n_mels}, frames) or (B, {n_mels}, frames), got shape "
                           f"{tuple(db_mel.shape)}: compute it with aigc.data.audio_features.log_mel")
    db_mel = db_mel.float()
    if not torch.isfinite(db_mel).all():
        raise InvalidInput("vocode: the mel holds NaN or infinite values: check what produced it")
    return db_mel


# -- data: segments for the training loop -----------------------------------------------------------


def clip_mels(waves: Tensor, config: VocoderConfig) -> tuple[Tensor, Tensor]:
    """Whole clips (N, T) -> their dB mels (N, n_mels, F), clipped to [db_min, db_max], and the
    clips zero-padded (or cut) to ``F * hop`` samples (N, F * hop), frame-aligned with the mels."""
    from aigc.data.audio_features import log_mel

    mels = torch.cat([torch.from_numpy(log_mel(chunk, sr=config.sample_rate)) for chunk in waves.split(256)])
    mels = mels.float().clamp(config.db_min, config.db_max)
    samples = mels.shape[-1] * config.hop
    aligned = F.pad(waves, (0, max(0, samples - waves.shape[1])))[:, :samples]
    return mels, aligned


class VocoderTask:
    """Random (mel segment, wave segment) batches from train clips; validation is the MR-STFT
    distance of whole vocoded val clips to the originals (lower is better)."""

    unit = "sample"  # throughput counts audio samples generated per second of training
    EVAL_CLIPS = 16  # periodic validation vocodes this many evenly spaced val clips ...
    FULL_EVAL_CLIPS = 128  # ... and the final one up to this many

    def __init__(self, train_waves: Tensor, val_waves: Tensor, config: VocoderConfig, batch_size: int):
        for name, w in (("train", train_waves), ("val", val_waves)):
            if not isinstance(w, Tensor) or w.dim() != 2 or not w.is_floating_point():
                shown = tuple(w.shape) if isinstance(w, Tensor) else type(w).__name__
                raise InvalidInput(f"vocoder {name} waves must be a float tensor (clips, samples), "
                                   f"got {shown}")
        if len(train_waves) < 1:
            raise InvalidInput("the train split holds no clips: ingest more audio")
        _check_features(config)
        self.config = config
        self.mels, self.waves = clip_mels(train_waves.float(), config)  # (N, n_mels, F), (N, F * hop)
        self.val = val_waves.float()
        self.val_mels = clip_mels(self.val, config)[0] if len(val_waves) else None
        self.segment = min(config.segment_frames, self.mels.shape[-1])
        if self.segment * config.hop < RESOLUTIONS[-1][0] // 2 + 1:
            seconds = (RESOLUTIONS[-1][0] // 2 + 1) / config.sample_rate
            raise InvalidInput(f"clips of {train_waves.shape[1]} samples are too short to train a vocoder "
                               f"on: ingest clips of at least {seconds:.2f} s")
        self.batch_size = batch_size
        self.tokens_per_batch = batch_size * self.segment * config.hop

    @classmethod
    def from_dataset(cls, ds_dir: Path | str, config: VocoderConfig, batch_size: int) -> "VocoderTask":
        """The task over an audio dataset's ``audio_train.npz`` and ``audio_val.npz`` (float16
        waves (N, T) and their sample rate, as ingest writes them)."""
        ds_dir = Path(ds_dir)
        splits = [_read_waves(ds_dir / f"audio_{s}.npz", config.sample_rate) for s in ("train", "val")]
        return cls(*splits, config, batch_size)

    def batch(self, generator: torch.Generator) -> tuple[Tensor, Tensor]:
        seg, hop = self.segment, self.config.hop
        clips = torch.randint(0, len(self.mels), (self.batch_size,), generator=generator)
        starts = torch.randint(0, self.mels.shape[-1] - seg + 1, (self.batch_size,), generator=generator)
        frames = starts[:, None] + torch.arange(seg)  # (B, seg)
        mel = self.mels[clips[:, None], :, frames].transpose(1, 2)  # (B, n_mels, seg)
        samples = starts[:, None] * hop + torch.arange(seg * hop)  # (B, seg * hop)
        return mel.contiguous(), self.waves[clips[:, None], samples]

    def evaluate(self, model: Vocoder, full: bool = False) -> float | None:
        if self.val_mels is None:
            return None
        n = len(self.val)
        most = self.FULL_EVAL_CLIPS if full else self.EVAL_CLIPS
        index = torch.linspace(0, n - 1, most).long().unique() if n > most else torch.arange(n)
        fakes = np.concatenate([model.vocode(self.val_mels[chunk]) for chunk in index.split(16)])
        return mr_stft_distance(fakes, self.val[index])


def _check_features(config: VocoderConfig) -> None:
    """The vocoder learns to invert the features' mel: its config must describe that mel."""
    from aigc.data import audio_features as af

    want = {"n_mels": af.N_MELS, "hop": af.HOP, "db_min": af.DB_MIN, "db_max": af.DB_MAX}
    wrong = {k: getattr(config, k) for k, v in want.items() if getattr(config, k) != v}
    if wrong:
        raise InvalidInput(f"vocoder config {wrong} differs from the audio features "
                           f"{ {k: want[k] for k in wrong} }: leave these keys at their defaults")


def _read_waves(path: Path, sample_rate: int) -> Tensor:
    if not path.exists():
        raise NotFound(f"{path} is missing: the vocoder trains on an audio dataset "
                       "(ingest a folder of clips)")
    with np.load(path) as data:
        if "waves" not in data or "sample_rate" not in data:
            raise InvalidInput(f"{path} holds {sorted(data.files)}, not waves and sample_rate: "
                               "ingest the audio again")
        waves, sr = data["waves"], int(data["sample_rate"])
    if sr != sample_rate:
        raise InvalidInput(f"{path.name} is at {sr} Hz but the vocoder is set for {sample_rate} Hz: "
                           f"train it with sample_rate={sr}")
    waves = waves.astype(np.float32)
    return torch.from_numpy(waves.reshape(len(waves), -1) if len(waves) else waves.reshape(0, 0))


# -- the baseline ------------------------------------------------------------------------------------


def compare_with_griffin_lim(
    vocoder: Vocoder, waves: np.ndarray | Tensor | list, n_iter: int = 64
) -> dict[str, float]:
    """Both mel inverters against the original clips: each clip's dB mel (clipped to the
    vocoder's dB range, as an image holds it) goes through the vocoder and through
    :func:`aigc.data.audio_features.griffin_lim`; returns their mean MR-STFT distance and mel L1
    (dB) to the originals over the clips, and the clip count."""
    from aigc.data.audio_features import griffin_lim
    from aigc.metrics.audio import mel_l1_db

    clips = [torch.as_tensor(np.asarray(w, dtype=np.float32)).reshape(-1) for w in waves]
    if not clips:
        raise InvalidInput("compare_with_griffin_lim needs at least one clip")
    sr = vocoder.config.sample_rate
    scores: dict[str, list[float]] = {}
    for clip in clips:
        mel, _ = clip_mels(clip[None], vocoder.config)
        outputs = {"vocoder": vocoder.vocode(mel[0]),
                   "griffin_lim": griffin_lim(mel[0].numpy(), n_iter=n_iter, sr=sr, length=len(clip))}
        for name, wave in outputs.items():
            scores.setdefault(f"{name}_mr_stft", []).append(mr_stft_distance(wave, clip))
            scores.setdefault(f"{name}_mel_l1_db", []).append(mel_l1_db(wave, clip, sr=sr))
    return {**{k: float(np.mean(v)) for k, v in scores.items()}, "clips": float(len(clips))}
