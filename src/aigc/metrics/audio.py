"""Audio metrics: multi-resolution STFT distance and mel L1 for reconstructions (vocoders), and the
distribution metrics re-exported for audio-classifier features.

**Multi-resolution STFT** (Yamamoto et al. 2020, Parallel WaveGAN): at each of three resolutions
(FFT 512, 1024, 2048; hop a quarter of the FFT; Hann window of the FFT's length) the spectral
convergence ``||S_t - S_p||_F / ||S_t||_F`` plus the log-magnitude L1 ``mean |log S_t - log S_p|``,
magnitudes floored at ``sqrt(1e-7)`` as in Parallel WaveGAN's code; the distance is the mean over
the resolutions of the sum of the two terms. Unlike Parallel WaveGAN's loss, both terms are taken
per clip and then averaged over the batch, so a figure does not depend on how clips were batched.
0 means identical magnitudes (phase is ignored, as a listener mostly does); one thing to keep in
mind when reading figures: the log term weighs quiet time-frequency cells as much as loud ones.

**Mel L1 in dB**: the mean absolute difference of the two clips' log-mel spectrograms
(:func:`aigc.data.audio_features.log_mel`: the dataset's own features), in dB.

**Fréchet distance and KID** take feature matrices (N, F), whatever network made them: they are
:func:`aigc.metrics.image.fid` and :func:`aigc.metrics.image.kid`, re-exported here for an audio
classifier's features rather than written twice.

**Inception-style score** (Salimans et al. 2016): ``exp(E_x KL(p(y|x) || p(y)))`` of a classifier's
class probabilities over a set of clips, ``p(y)`` their mean. 1 when every clip gets the same
distribution; the number of classes K when each clip is one class with certainty and the classes
are equally frequent. Computed on the dataset's own audio classifier, not Inception, so figures
compare runs of one dataset only.

This module knows waveforms as float arrays or tensors, (T,) or (B, T), in [-1, 1]; nothing about
datasets, runs or models.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

from aigc.errors import InvalidInput
from aigc.metrics.image import fid, kid

__all__ = ["RESOLUTIONS", "fid", "inception_score", "kid", "mel_l1_db", "mr_stft_distance", "mr_stft_loss",
           "mr_stft_terms"]

# (n_fft, hop, window length) per resolution: FFT sizes 512/1024/2048 with hops of a quarter
RESOLUTIONS: tuple[tuple[int, int, int], ...] = ((512, 128, 512), (1024, 256, 1024), (2048, 512, 2048))
MAG_FLOOR = 1e-7  # on the squared magnitude, as Parallel WaveGAN: log() stays finite in silence
# Two clips compared whose lengths differ by more than this share are a caller's mistake (a wrong
# sample rate, another clip), not the few samples a vocoder's frames * hop adds to a clip.
MAX_LENGTH_GAP = 0.1


def _magnitude(wave: Tensor, n_fft: int, hop: int, win: int) -> Tensor:
    """(B, T) -> STFT magnitude (B, n_fft // 2 + 1, frames), floored (see MAG_FLOOR)."""
    window = torch.hann_window(win, device=wave.device, dtype=wave.dtype)
    spec = torch.stft(wave, n_fft, hop, win, window=window, center=True, return_complex=True)
    return (spec.real.square() + spec.imag.square()).clamp(min=MAG_FLOOR).sqrt()


def mr_stft_terms(
    pred: Tensor, target: Tensor, resolutions: tuple[tuple[int, int, int], ...] = RESOLUTIONS,
    per_clip: bool = True,
) -> tuple[Tensor, Tensor]:
    """Spectral convergence and log-magnitude L1 of ``pred`` against ``target`` (B, T) each,
    averaged over resolutions: two differentiable scalars.

    ``per_clip`` (the metric) takes each clip's spectral convergence and averages them; off (the
    training loss, as Parallel WaveGAN) it takes the norms over the whole batch, so a nearly
    silent training segment, whose own norm is tiny, cannot blow the loss up. The waves must have
    the same shape and be longer than half the largest FFT (reflect padding):
    :func:`mr_stft_distance` checks its arguments, this training-time function does not.
    """
    sc_total = pred.new_zeros(())
    mag_total = pred.new_zeros(())
    for n_fft, hop, win in resolutions:
        p, t = _magnitude(pred, n_fft, hop, win), _magnitude(target, n_fft, hop, win)  # (B, F, frames)
        if per_clip:
            sc_total = sc_total + ((t - p).flatten(1).norm(dim=1) / t.flatten(1).norm(dim=1)).mean()
        else:
            sc_total = sc_total + (t - p).norm() / t.norm()
        mag_total = mag_total + (t.log() - p.log()).abs().mean()  # clips of one length: the same mean
    return sc_total / len(resolutions), mag_total / len(resolutions)


def mr_stft_loss(pred: Tensor, target: Tensor) -> Tensor:
    """Spectral convergence (over the batch) + log-magnitude L1: Parallel WaveGAN's training loss."""
    sc, mag = mr_stft_terms(pred, target, per_clip=False)
    return sc + mag


def mr_stft_distance(pred: np.ndarray | Tensor, target: np.ndarray | Tensor) -> float:
    """The multi-resolution STFT distance of ``pred`` to ``target``: clips (T,) or batches (B, T).

    Clips of slightly different lengths (a vocoder gives ``frames * hop`` samples, a little more
    than the clip the mel came from) are cut to the shorter; lengths further apart than
    ``MAX_LENGTH_GAP`` are refused. Computed in float64 without gradients.
    """
    p, t = _as_batch(pred, "pred"), _as_batch(target, "target")
    if len(p) != len(t):
        raise InvalidInput(f"mr_stft_distance: pred holds {len(p)} clips but target holds {len(t)}: "
                           "pass one prediction per target clip")
    p, t = _cut_to_shorter(p, t, "mr_stft_distance")
    shortest = RESOLUTIONS[-1][0] // 2 + 1
    if p.shape[1] < shortest:
        raise InvalidInput(f"mr_stft_distance needs clips of at least {shortest} samples (half the "
                           f"largest FFT, {RESOLUTIONS[-1][0]}), got {p.shape[1]}: compare longer clips")
    with torch.no_grad():
        sc, mag = mr_stft_terms(p, t)
    return float(sc + mag)


def mel_l1_db(pred: np.ndarray | Tensor, target: np.ndarray | Tensor, sr: int | None = None) -> float:
    """Mean absolute difference, in dB, between the log-mel spectrograms of ``pred`` and
    ``target`` (clips (T,) or batches (B, T)), each from :func:`aigc.data.audio_features.log_mel`
    at ``sr`` (default: the features' sample rate). Lengths are matched as in
    :func:`mr_stft_distance`."""
    from aigc.data import audio_features as af

    p, t = _as_batch(pred, "pred"), _as_batch(target, "target")
    if len(p) != len(t):
        raise InvalidInput(f"mel_l1_db: pred holds {len(p)} clips but target holds {len(t)}: "
                           "pass one prediction per target clip")
    p, t = _cut_to_shorter(p, t, "mel_l1_db")
    rate = sr or af.SAMPLE_RATE
    diffs = [np.abs(af.log_mel(a.float(), sr=rate) - af.log_mel(b.float(), sr=rate)).mean()
             for a, b in zip(p, t)]
    return float(np.mean(diffs))


def _as_batch(wave: np.ndarray | Tensor, name: str) -> Tensor:
    """A clip (T,) or batch (B, T) as a float64 tensor (B, T), checked."""
    if isinstance(wave, np.ndarray):
        if not np.issubdtype(wave.dtype, np.floating):
            raise InvalidInput(f"{name} must be a float waveform in [-1, 1], got dtype {wave.dtype}: "
                               "convert integer PCM with wave / 32768")
        wave = torch.from_numpy(np.ascontiguousarray(wave))
    if not isinstance(wave, Tensor):
        raise InvalidInput(f"{name} must be a numpy array or a torch tensor, got {type(wave).__name__}")
    if wave.dim() not in (1, 2) or wave.shape[-1] == 0:
        raise InvalidInput(f"{name} must be a clip (T,) or a batch (B, T) with T > 0, got shape "
                           f"{tuple(wave.shape)}")
    if not wave.is_floating_point():
        raise InvalidInput(f"{name} must be a float waveform in [-1, 1], got dtype {wave.dtype}")
    wave = wave.detach().to("cpu", torch.float64)
    if not torch.isfinite(wave).all():
        raise InvalidInput(f"{name} holds NaN or infinite samples: check the model that made it")
    return wave if wave.dim() == 2 else wave[None]


def _cut_to_shorter(p: Tensor, t: Tensor, what: str) -> tuple[Tensor, Tensor]:
    n = min(p.shape[1], t.shape[1])
    if n < (1 - MAX_LENGTH_GAP) * max(p.shape[1], t.shape[1]):
        raise InvalidInput(f"{what}: clips of {p.shape[1]} and {t.shape[1]} samples are not the same "
                           "sound: compare a reconstruction with the clip it came from, at the same "
                           "sample rate")
    return p[:, :n], t[:, :n]


def inception_score(probs: np.ndarray | Tensor) -> float:
    """``exp(mean_x KL(p(y|x) || p(y)))`` of class probabilities (N, K), each row a distribution
    (softmax output, not logits): in [1, K]; ``0 log 0`` counts as 0. Float64."""
    p = probs.detach().cpu().numpy() if isinstance(probs, Tensor) else np.asarray(probs)
    if p.ndim != 2 or p.shape[0] < 1 or p.shape[1] < 1 or not np.issubdtype(p.dtype, np.floating):
        raise InvalidInput(f"inception_score expects float class probabilities (clips, classes), got "
                           f"{p.dtype} {p.shape}: pass the classifier's softmax, one row per clip")
    p = p.astype(np.float64)
    sums = p.sum(1)
    if not np.isfinite(p).all() or (p < 0).any() or not np.allclose(sums, 1.0, atol=1e-4):
        raise InvalidInput(f"inception_score expects rows of probabilities (>= 0, summing to 1), got "
                           f"values from {np.nanmin(p):.3g} to {np.nanmax(p):.3g}, row sums up to "
                           f"{np.nanmax(sums):.3g}: pass softmax(logits), not the logits")
    ratio = np.divide(p, p.mean(0), out=np.ones_like(p), where=p > 0)  # p(y|x) / p(y), > 0 where p(y|x) is
    return float(np.exp((p * np.log(ratio)).sum(1).mean()))
