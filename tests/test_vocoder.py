"""The neural vocoder and the audio metrics (issue 17): the multi-resolution STFT distance is 0 for
identical clips and grows with noise; the vocoder gives frames * hop samples, learns under the
training loop (its validation distance falls), reloads to the same waveform, and is compared with
Griffin-Lim; bad arguments fail with one line."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from aigc.data import audio_features as af
from aigc.errors import InvalidInput, NotFound
from aigc.metrics.audio import mel_l1_db, mr_stft_distance, mr_stft_loss
from aigc.models.registry import config_from_dict
from aigc.models.vocoder import Vocoder, VocoderConfig, VocoderTask, compare_with_griffin_lim
from aigc.training import TrainConfig, fit

SR = af.SAMPLE_RATE


def tones(n: int, seconds: float = 0.5, seed: int = 0) -> np.ndarray:
    """(n, T) float32 harmonic tones: a random f0 in 110-440 Hz, five partials falling as 1/k, a
    10 ms attack and an exponential decay."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(SR * seconds)) / SR
    out = []
    for _ in range(n):
        f0 = rng.uniform(110, 440)
        wave = sum(np.sin(2 * np.pi * f0 * k * t + rng.uniform(0, 2 * np.pi)) / k for k in range(1, 6))
        out.append(0.2 * wave * np.minimum(1, t * 100) * np.exp(-t * rng.uniform(0.5, 3)))
    return np.stack(out).astype(np.float32)


def make_vocoder(preset: str = "tiny", seed: int = 0, **overrides) -> Vocoder:
    torch.manual_seed(seed)
    return Vocoder.from_preset(preset, **overrides)


# -- the metrics ------------------------------------------------------------------------------------


def test_mr_stft_distance_is_zero_for_identical_clips_and_grows_with_noise():
    clean = tones(2, seconds=0.5)
    rng = np.random.default_rng(1)
    noise = rng.standard_normal(clean.shape).astype(np.float32)
    assert mr_stft_distance(clean, clean) == 0.0
    assert mr_stft_distance(torch.from_numpy(clean[0]), clean[0]) == 0.0  # a tensor, a single clip
    by_level = [mr_stft_distance(clean + level * noise, clean) for level in (0.001, 0.01, 0.1)]
    assert 0 < by_level[0] < by_level[1] < by_level[2], by_level
    # the training loss is the same two terms, differentiable
    pred = torch.from_numpy(clean + 0.01 * noise).requires_grad_()
    loss = mr_stft_loss(pred, torch.from_numpy(clean))
    loss.backward()
    assert loss.item() > 0 and torch.isfinite(pred.grad).all() and pred.grad.abs().sum() > 0


def test_mel_l1_db_is_zero_for_identical_clips_and_grows_with_noise():
    clean = tones(2, seconds=0.5)
    noise = np.random.default_rng(2).standard_normal(clean.shape).astype(np.float32)
    assert mel_l1_db(clean, clean) == 0.0
    small, large = mel_l1_db(clean + 0.001 * noise, clean), mel_l1_db(clean + 0.05 * noise, clean)
    assert 0 < small < large


def test_metrics_refuse_mismatched_or_broken_clips():
    clip = tones(1)[0]
    with pytest.raises(InvalidInput, match="not the same sound"):
        mr_stft_distance(clip, clip[: len(clip) // 2])
    with pytest.raises(InvalidInput, match="at least 1025 samples"):
        mr_stft_distance(clip[:800], clip[:800])
    with pytest.raises(InvalidInput, match="pred holds 2 clips but target holds 1"):
        mr_stft_distance(np.stack([clip, clip]), clip)
    with pytest.raises(InvalidInput, match="NaN"):
        mr_stft_distance(np.full_like(clip, np.nan), clip)
    with pytest.raises(InvalidInput, match="dtype int16"):
        mr_stft_distance((clip * 32767).astype(np.int16), clip)
    # a vocoder's few extra samples (frames * hop) are cut, not refused
    assert mr_stft_distance(np.pad(clip, (0, 100)), clip) == 0.0


# -- the network --------------------------------------------------------------------------------


def test_config_defaults_are_the_audio_features():
    c = VocoderConfig()
    assert (c.sample_rate, c.n_mels, c.hop, c.db_min, c.db_max) == (af.SAMPLE_RATE, af.N_MELS, af.HOP,
                                                                    af.DB_MIN, af.DB_MAX)
    assert np.prod(c.rates) == af.HOP


@pytest.mark.parametrize("generator", ["hifigan", "vocos", "postnet"])
@pytest.mark.parametrize("frames", [1, 7, 40])
def test_output_length_is_frames_times_hop(frames, generator):
    vocoder = make_vocoder(generator=generator)
    mel = np.random.default_rng(0).uniform(-100, 20, (af.N_MELS, frames)).astype(np.float32)
    wave = vocoder.vocode(mel)
    assert wave.shape == (frames * af.HOP,) and wave.dtype == np.float32
    assert np.abs(wave).max() <= 1.0
    batch = vocoder.vocode(np.stack([mel, mel]))
    assert batch.shape == (2, frames * af.HOP)
    np.testing.assert_allclose(batch[0], wave, atol=1e-6)  # batching changes nothing
    # a real clip's mel: as many samples as the clip, rounded up to whole frames
    clip = tones(1, seconds=0.3)[0]
    out = vocoder.vocode(af.log_mel(clip))
    assert len(out) == (1 + len(clip) // af.HOP) * af.HOP


def test_bad_configs_and_mels_fail_with_one_line():
    with pytest.raises(InvalidInput, match="multiply to 128, not the hop 256"):
        Vocoder(VocoderConfig(upsample_rates="8,8,2"))
    with pytest.raises(InvalidInput, match="comma-separated integers"):
        Vocoder(VocoderConfig(upsample_rates="8x8"))
    with pytest.raises(InvalidInput, match="channels must be a multiple of 16"):
        Vocoder(VocoderConfig(channels=24))
    with pytest.raises(InvalidInput, match="resblock_kernels must be odd"):
        Vocoder(VocoderConfig(resblock_kernels="3,4"))
    with pytest.raises(InvalidInput, match="raise segment_frames"):
        Vocoder(VocoderConfig(segment_frames=2))
    with pytest.raises(InvalidInput, match="generator must be one of hifigan, vocos, postnet, got 'wavenet'"):
        Vocoder(VocoderConfig(generator="wavenet"))
    with pytest.raises(InvalidInput, match="vocoder config channels must be int"):
        config_from_dict(VocoderConfig, {"channels": "many"}, what="vocoder config")
    vocoder = make_vocoder()
    with pytest.raises(InvalidInput, match=r"\(64, frames\)"):
        vocoder.vocode(np.zeros((80, 10), np.float32))
    with pytest.raises(InvalidInput, match="NaN"):
        vocoder.vocode(np.full((64, 10), np.nan, np.float32))


@pytest.mark.parametrize("generator", ["hifigan", "vocos"])
def test_save_load_gives_the_same_waveform(tmp_path, generator):
    vocoder = make_vocoder(generator=generator, discriminator=True)
    for p in vocoder.parameters():  # move off the initial weights, so the file's content matters
        p.data.add_(torch.randn(p.shape, generator=torch.Generator().manual_seed(3)) * 1e-3)
    mel = af.log_mel(tones(1, seconds=0.4)[0])
    before = vocoder.vocode(mel)
    vocoder.save(tmp_path / "voc")
    loaded = Vocoder.load(tmp_path / "voc")
    assert loaded.config == vocoder.config
    np.testing.assert_array_equal(loaded.vocode(mel), before)
    assert json.loads((tmp_path / "voc" / "vocoder.json").read_text())["family"] == "vocoder"
    assert sorted(p.name for p in (tmp_path / "voc").iterdir()) == ["vocoder.json", "vocoder.safetensors"]
    with pytest.raises(NotFound, match="holds no saved vocoder"):
        Vocoder.load(tmp_path / "nothing")


# -- training ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("generator", ["hifigan", "vocos"])
def test_training_under_the_loop_lowers_the_validation_distance(tmp_path, generator):
    waves = torch.from_numpy(tones(4, seconds=0.5, seed=0))
    vocoder = make_vocoder(generator=generator)
    task = VocoderTask(waves[:3], waves[3:], vocoder.config, batch_size=4)
    mel, wave = task.batch(torch.Generator().manual_seed(0))
    seg = vocoder.config.segment_frames
    assert mel.shape == (4, af.N_MELS, seg) and wave.shape == (4, seg * af.HOP)
    before = task.evaluate(vocoder)
    cfg = TrainConfig(**{**Vocoder.TRAIN_DEFAULTS["tiny"], "max_steps": 40, "eval_every": 20, "seed": 0})
    state = fit(vocoder, task, cfg, tmp_path / "run")
    assert state.step == 40 and state.unit == "sample"
    # measured (MR-STFT distance of the whole val clip): hifigan 4.22 -> 2.07, vocos 6.53 -> 3.43
    assert before > 4.0 and state.best_val_loss < 0.6 * before, (before, state.best_val_loss)
    assert (tmp_path / "run" / "model.safetensors").exists()


def test_postnet_starts_as_griffin_lim_and_learns_magnitudes_that_beat_it(tmp_path):
    """An untrained postnet (its head starts at zero) is Griffin-Lim on the mel's own inversion; a
    few dozen steps on magnitudes alone bring its val distance below that start."""
    waves = torch.from_numpy(tones(44, seconds=0.5, seed=1))  # 4 train tones: it learns their f0s, not tones
    vocoder = make_vocoder(generator="postnet")
    task = VocoderTask(waves[:40], waves[40:], vocoder.config, batch_size=8)
    mel = task.val_mels[0]
    frames = mel.shape[-1]
    gl = af.griffin_lim(mel.numpy(), n_iter=64, length=(frames - 1) * af.HOP)
    np.testing.assert_allclose(vocoder.vocode(mel)[: len(gl)], np.clip(gl, -1, 1), atol=1e-3)  # float32 magnitudes
    before = task.evaluate(vocoder)
    # measured: 0.741 -> 0.714 (the learned magnitudes' gain on digits is larger: benchmarks/audio_train.py)
    cfg = TrainConfig(**{**Vocoder.TRAIN_DEFAULTS["tiny"], "lr": 2e-3, "max_steps": 60, "eval_every": 30, "seed": 0})
    state = fit(vocoder, task, cfg, tmp_path / "run")
    assert state.best_val_loss < 0.98 * before, (before, state.best_val_loss)
    with pytest.raises(InvalidInput, match="postnet generator trains on magnitudes alone"):
        make_vocoder(generator="postnet", discriminator=True)


def test_batches_are_frame_aligned_slices_of_the_clips():
    """A segment's mel is the whole clip's mel at those frames, and its wave the samples those
    frames own: what the vocoder is taught is what vocoding a whole clip asks of it."""
    waves = torch.from_numpy(tones(2, seconds=0.5, seed=4))
    config = make_vocoder().config
    task = VocoderTask(waves, waves[:1], config, batch_size=3)
    mel, wave = task.batch(torch.Generator().manual_seed(5))
    full = torch.from_numpy(af.log_mel(waves)).clamp(config.db_min, config.db_max)  # (2, n_mels, F)
    hop = config.hop
    for i in range(3):
        matches = [(c, f) for c in range(2) for f in range(full.shape[-1] - mel.shape[-1] + 1)
                   if torch.equal(full[c, :, f : f + mel.shape[-1]], mel[i])]
        assert matches, "a batch mel that is no slice of a clip's mel"
        c, f = matches[0]
        padded = torch.nn.functional.pad(waves[c], (0, full.shape[-1] * hop - waves.shape[1]))
        assert torch.equal(wave[i], padded[f * hop : f * hop + wave.shape[1]])


def test_discriminator_flag_trains_both_networks():
    vocoder = make_vocoder(generator="hifigan", discriminator=True)
    waves = torch.from_numpy(tones(2, seconds=0.5, seed=6))
    task = VocoderTask(waves, waves[:1], vocoder.config, batch_size=2)
    optimizers = vocoder.configure_optimizers(1e-3, 0.0)
    assert len(optimizers) == 2
    d_before = [p.detach().clone() for p in vocoder.discriminator.parameters()]
    g_before = [p.detach().clone() for p in vocoder.generator.parameters()]
    losses = vocoder.training_step(*task.batch(torch.Generator().manual_seed(0)), optimizers,
                                   lambda loss: loss.backward())
    assert {"loss", "sc", "mag", "mel", "d_loss", "adv", "fm"} <= set(losses)
    assert all(np.isfinite(v) for v in losses.values())
    assert any(not torch.equal(a, b) for a, b in zip(d_before, vocoder.discriminator.parameters()))
    assert any(not torch.equal(a, b) for a, b in zip(g_before, vocoder.generator.parameters()))


def test_task_reads_an_audio_dataset_and_refuses_another_rate(tmp_path):
    waves = tones(3, seconds=0.5)
    for split, rows in (("train", waves[:2]), ("val", waves[2:])):
        np.savez(tmp_path / f"audio_{split}.npz", waves=rows.astype(np.float16), sample_rate=np.int64(SR))
    config = make_vocoder().config
    task = VocoderTask.from_dataset(tmp_path, config, batch_size=2)
    assert task.mels.shape[0] == 2 and task.val.shape == (1, waves.shape[1])
    np.savez(tmp_path / "audio_val.npz", waves=waves[2:].astype(np.float16), sample_rate=np.int64(22050))
    with pytest.raises(InvalidInput, match="22050 Hz but the vocoder is set for 16000 Hz"):
        VocoderTask.from_dataset(tmp_path, config, batch_size=2)
    with pytest.raises(NotFound, match="audio_train.npz is missing"):
        VocoderTask.from_dataset(tmp_path / "none", config, batch_size=2)
    with pytest.raises(InvalidInput, match="differs from the audio features"):
        VocoderTask(torch.from_numpy(waves), torch.from_numpy(waves), VocoderConfig(n_mels=80), batch_size=2)


def test_compare_with_griffin_lim_returns_finite_distances_for_both():
    scores = compare_with_griffin_lim(make_vocoder(), tones(2, seconds=0.5, seed=7), n_iter=4)
    assert scores["clips"] == 2
    for key in ("vocoder_mr_stft", "griffin_lim_mr_stft", "vocoder_mel_l1_db", "griffin_lim_mel_l1_db"):
        assert np.isfinite(scores[key]) and scores[key] > 0, (key, scores)
