"""Audio ingestion and features: clips in every format, rate and channel count; bad files; the
log-mel image scale; Griffin-Lim; the spoken-digits script. Tiny clips made here, seconds in all."""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from typer.testing import CliRunner

import aigc
from aigc.data import audio_features as af
from aigc.data.audio import is_audio_source, trim_silence
from aigc.data.images import read_image_split
from aigc.errors import InvalidInput
from aigc.workspace import Workspace

REPO = Path(__file__).resolve().parents[1]
FORMATS = {".wav": ("WAV", "PCM_16"), ".flac": ("FLAC", "PCM_24"), ".ogg": ("OGG", "VORBIS"),
           ".mp3": ("MP3", "MPEG_LAYER_III")}
CAN_MP3 = "MP3" in sf.available_formats()


@pytest.fixture
def ws(tmp_path: Path) -> Workspace:
    return aigc.open_workspace(tmp_path / "ws")


def tone(freq: float, sr: int, seconds: float, channels: int = 1, seed: int = 0, amp: float = 0.5) -> np.ndarray:
    """A sine with a little seeded noise (so no two clips are identical): (T,) or (T, channels)."""
    t = np.arange(round(sr * seconds)) / sr
    rng = np.random.default_rng(seed)
    y = amp * np.sin(2 * np.pi * freq * t) + 0.003 * rng.standard_normal(len(t))
    return (np.repeat(y[:, None], channels, axis=1) if channels > 1 else y).astype(np.float32)


def write(path: Path, wave: np.ndarray, sr: int) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    fmt, subtype = FORMATS[path.suffix]
    sf.write(path, wave, sr, format=fmt, subtype=subtype)
    return path


def tmp_is_empty(ws: Workspace) -> bool:
    return not (ws.root / "tmp").exists() or not any((ws.root / "tmp").iterdir())


def harmonic(f0: float, samples: int, sr: int = af.SAMPLE_RATE) -> np.ndarray:
    t = np.arange(samples) / sr
    return sum(0.3 / k * np.sin(2 * np.pi * f0 * k * t + k) for k in range(1, 6)).astype(np.float32)


# -- ingestion ------------------------------------------------------------------------------------


def mixed_folder(root: Path) -> dict[str, list[float]]:
    """Two classes, 'low' (300 Hz) and 'high' (3 kHz): WAV 16 kHz mono, FLAC 22.05 kHz stereo, OGG
    44.1 kHz mono, 4 clips each per class, 0.6 to 1.2 s long. Returns each class's clip lengths."""
    lengths: dict[str, list[float]] = {"low": [], "high": []}
    plan = [(".wav", 16000, 1), (".flac", 22050, 2), (".ogg", 44100, 1)]
    for label, freq in (("low", 300.0), ("high", 3000.0)):
        for k in range(12):
            suffix, sr, ch = plan[k % 3]
            seconds = 0.6 + 0.05 * k
            write(root / label / f"{k:02d}{suffix}", tone(freq, sr, seconds, ch, seed=k + int(freq)), sr)
            lengths[label].append(seconds)
    return lengths


def test_folder_of_mixed_clips_becomes_images_waves_and_a_card(ws: Workspace, tmp_path: Path) -> None:
    lengths = mixed_folder(tmp_path / "clips")
    card = aigc.ingest(tmp_path / "clips", "tones", workspace=ws, image_size=32, silence_db=None,
                       split=(0.5, 0.25, 0.25))
    d = ws.dataset_path("tones")

    assert card["modality"] == "audio" and ws.get_dataset("tones")["modality"] == "audio"
    assert card["counts"] == {"read": 24, "kept": 24, "dropped": 0, "train": 12, "val": 6, "test": 6}
    assert card["classes"] == ["high", "low"]
    # stratified: every split holds both classes in proportion
    assert card["class_counts"] == {"train": {"high": 6, "low": 6}, "val": {"high": 3, "low": 3},
                                    "test": {"high": 3, "low": 3}}
    assert card["found"] == {"sample_rates": {"16000": 8, "22050": 8, "44100": 8}, "channels": {"1": 16, "2": 8},
                             "formats": {"WAV": 8, "FLAC": 8, "OGG": 8}, "resampled": 16, "mixed_to_mono": 8}
    every = sorted(lengths["low"] + lengths["high"])
    assert card["durations"]["before_trim"] == pytest.approx(
        {"min": every[0], "median": float(np.median(every)), "max": every[-1]}, abs=2e-3)
    # per class: 3 clips over a second (1.05-1.15 s) cut, 8 under it padded, one of exactly 1.0 s kept as it is
    assert card["audio"]["clips_cut"] == 6 and card["audio"]["clips_padded"] == 16
    assert card["features"]["db_min"] == af.DB_MIN and card["features"]["hop"] == af.HOP

    # the image families' reader takes the spectrograms as they are
    split = read_image_split(d, "train")
    assert split.images.dtype == np.uint8 and split.images.shape == (12, 32, 32, 1)
    assert split.classes == ["high", "low"] and sorted(split.labels.tolist()) == [0] * 6 + [1] * 6
    with np.load(d / "audio_train.npz") as z:
        waves, rate, labels = z["waves"], int(z["sample_rate"]), z["labels"]
    assert waves.dtype == np.float16 and waves.shape == (12, 16000) and rate == 16000
    assert labels.tolist() == split.labels.tolist()
    # each image is the spectrogram of the (float16) wave stored beside it
    again = np.stack([af.mel_to_image(af.log_mel(w.astype(np.float32)), 32) for w in waves])
    assert np.abs(again.astype(int) - split.images[..., 0].astype(int)).max() <= 1  # batched vs one STFT
    # ... and of its own class: 3 kHz lights a band high in the picture, 300 Hz one near the bottom
    brightest_row = split.images[..., 0].astype(float).mean(axis=2).argmax(axis=1)
    assert (brightest_row[split.labels == 0] < 16).all() and (brightest_row[split.labels == 1] > 24).all()

    previews = sorted(p.name for p in d.glob("preview_*.wav"))
    assert previews == [f"preview_{k}.wav" for k in range(4)] and (d / "preview.png").stat().st_size > 0
    y, sr = sf.read(d / "preview_0.wav")
    assert sr == 16000 and len(y) == 16000
    assert {p["label"] for p in card["previews"]} == {"high", "low"}


@pytest.mark.skipif(not CAN_MP3, reason="this libsndfile cannot write MP3 (needs libsndfile >= 1.1 with mpg123/lame)")
def test_mp3_clips_ingest(ws: Workspace, tmp_path: Path) -> None:
    for label, freq in (("a", 500.0), ("b", 2000.0)):
        for k in range(3):
            write(tmp_path / "mp3" / label / f"{k}.mp3", tone(freq, 22050, 0.8, seed=k), 22050)
    card = aigc.ingest(tmp_path / "mp3", "mp3s", workspace=ws, split=(1.0, 0.0, 0.0))
    assert card["counts"]["kept"] == 6 and card["found"]["formats"] == {"MP3": 6}


def test_bad_files_are_listed_or_fatal_when_strict(ws: Workspace, tmp_path: Path) -> None:
    root = tmp_path / "bad"
    for k in range(3):
        write(root / "ok" / f"{k}.wav", tone(440, 16000, 0.5, seed=k), 16000)
    (root / "ok" / "corrupt.wav").write_bytes(b"RIFF\x00\x00\x00\x00WAVEjunk" + bytes(range(200)))
    (root / "ok" / "empty.flac").write_bytes(b"")
    whole = write(tmp_path / "whole.wav", tone(440, 16000, 0.5, seed=9), 16000).read_bytes()
    (root / "ok" / "cut.wav").write_bytes(whole[: len(whole) // 2])
    write(root / "ok" / "silent.wav", np.zeros(8000, np.float32), 16000)
    sf.write(root / "ok" / "nothing.wav", np.zeros(0, np.float32), 16000)  # a header, no samples
    (root / "ok" / "notes.txt").write_text("not audio")

    card = aigc.ingest(root, "bad", workspace=ws, split=(1.0, 0.0, 0.0))
    assert card["counts"]["read"] == 8 and card["counts"]["kept"] == 3 and card["ignored_files"] == 1
    kinds = {d["file"]: d["kind"] for d in card["dropped"]}
    assert kinds == {"ok/corrupt.wav": "unreadable", "ok/empty.flac": "empty", "ok/cut.wav": "truncated",
                     "ok/silent.wav": "silent", "ok/nothing.wav": "no_samples"}
    assert card["dropped_by_reason"] == {"unreadable": 1, "empty": 1, "truncated": 1, "silent": 1, "no_samples": 1}

    with pytest.raises(InvalidInput, match=r"ok/corrupt\.wav: cannot read the audio .*--strict") as e:
        aigc.ingest(root, "strict", workspace=ws, strict=True)
    assert "\n" not in str(e.value)
    assert tmp_is_empty(ws) and not ws.has_dataset("strict") and not ws.dataset_path("strict").exists()


def test_a_440_hz_sine_at_22050_hz_peaks_at_440_hz_at_16_khz(ws: Workspace, tmp_path: Path) -> None:
    write(tmp_path / "one" / "a" / "sine.wav", tone(440, 22050, 1.0), 22050)
    wave, info = af.read_audio(tmp_path / "one" / "a" / "sine.wav")
    assert info == {"sample_rate": 22050, "channels": 1, "seconds": 1.0, "format": "WAV"} and len(wave) == 16000
    aigc.ingest(tmp_path / "one", "sine", workspace=ws, silence_db=None, split=(1.0, 0.0, 0.0))
    with np.load(ws.dataset_path("sine") / "audio_train.npz") as z:
        stored = z["waves"][0].astype(np.float64)
    spectrum = np.abs(np.fft.rfft(stored * np.hanning(len(stored))))  # 1 Hz per bin over 16,000 samples
    assert int(spectrum.argmax()) == 440


def test_silence_is_trimmed_and_the_clip_centred() -> None:
    sr = af.SAMPLE_RATE
    wave = np.concatenate([np.zeros(int(0.3 * sr)), tone(1000, sr, 0.2), np.zeros(int(0.5 * sr))])
    start, end = trim_silence(wave, 40.0)
    # frames are a window wide: the kept span starts at most half a window (+ a hop) before the tone
    assert 0.3 * sr - af.N_FFT // 2 - af.HOP <= start <= 0.3 * sr
    assert 0.5 * sr <= end <= 0.5 * sr + af.N_FFT // 2 + af.HOP
    assert trim_silence(np.zeros(sr, np.float32), 40.0) is None


def test_csv_of_clips_and_routing(ws: Workspace, tmp_path: Path) -> None:
    for k in range(4):
        write(tmp_path / "c" / f"{k}.wav", tone(300 + 500 * (k % 2), 16000, 0.5, seed=k), 16000)
    csv_path = tmp_path / "c" / "clips.csv"
    csv_path.write_text("path,label\n" + "".join(f"{k}.wav,{'ab'[k % 2]}\n" for k in range(4)) + "missing.wav,a\n")
    assert is_audio_source(csv_path) and is_audio_source(tmp_path / "c")
    (tmp_path / "text.csv").write_text("text,label\nhello,a\n")
    assert not is_audio_source(tmp_path / "text.csv") and is_audio_source(tmp_path / "text.csv", {"seconds": 1.0})
    card = aigc.ingest(csv_path, "fromcsv", workspace=ws, seconds=0.5, split=(1.0, 0.0, 0.0))
    assert card["format"] == "csv" and card["classes"] == ["a", "b"] and card["counts"]["kept"] == 4
    assert card["dropped"] == [{"file": "missing.wav", "kind": "missing",
                                "reason": "no such audio file: check the path"}]
    with pytest.raises(InvalidInput, match=r"--lines: not for the audio source .*\(audio takes --sample-rate, .*"):
        aigc.ingest(csv_path, "x", workspace=ws, lines=True)
    with pytest.raises(InvalidInput, match=r"invalid --seconds 0: pass a clip length from 0\.05 to 60"):
        aigc.ingest(csv_path, "x", workspace=ws, seconds=0)


def test_cli_passes_the_audio_options(tmp_path: Path) -> None:
    from aigc.cli.main import app

    for k in range(2):
        write(tmp_path / "c" / "x" / f"{k}.wav", tone(500, 16000, 0.5, seed=k), 16000)
    res = CliRunner().invoke(app, ["ingest", str(tmp_path / "c"), "--name", "cli", "--sample-rate", "8000",
                                   "--seconds", "0.25", "--image-size", "16", "--split", "1,0,0"],
                             catch_exceptions=False)
    assert res.exit_code == 0, res.output
    assert "2 clips kept of 2 read" in res.output and "0.25 s at 8000 Hz, spectrograms 16x16" in res.output
    card = json.loads((aigc.open_workspace().dataset_path("cli") / "card.json").read_text())
    assert card["audio"]["samples"] == 2000 and card["image_size"] == [16, 16]


# -- features -------------------------------------------------------------------------------------


def test_mel_image_round_trip_is_within_half_a_grey_level() -> None:
    samples = (af.N_MELS - 1) * af.HOP  # 64 frames: the image needs no resampling
    rng = np.random.default_rng(0)
    wave = harmonic(220, samples) + 1e-4 * rng.standard_normal(samples).astype(np.float32)
    db = af.log_mel(wave)
    assert db.shape == (af.N_MELS, 64) and db.dtype == np.float32
    img = af.mel_to_image(db, 64)
    back = af.image_to_mel(img)
    assert img.dtype == np.uint8 and back.shape == (af.N_MELS, 64)
    err = np.abs(back - np.clip(db, af.DB_MIN, af.DB_MAX))
    assert err.max() <= af.DB_STEP / 2 + 1e-4
    assert af.image_to_mel(img.astype(np.float32) / 255) == pytest.approx(back, abs=1e-4)  # as models sample
    # the scale is absolute: twice the amplitude is +6 dB, not the same picture
    louder = af.log_mel(2 * wave)
    assert np.median(louder - db) == pytest.approx(20 * np.log10(2), abs=0.01)
    # low bands at the bottom: a 220 Hz tone lights the bottom quarter
    assert img[48:].mean() > img[:16].mean() + 50
    # other sizes resample bands and frames; the shape comes back on request
    assert af.image_to_mel(af.mel_to_image(db, 32), frames=64).shape == (af.N_MELS, 64)


def test_griffin_lim_round_trip() -> None:
    """Measured on this 220 Hz tone of 5 harmonics after 64 iterations: 0.67 dB mean error on the
    bands within 30 dB of each frame's loudest, 2.4 dB over all bands (the valleys 40 dB down
    between harmonics fill in); with random phase (no iteration) 6.2 and 5.2 dB."""
    wave = harmonic(220, af.SAMPLE_RATE)
    db = af.log_mel(wave)
    near = db >= db.max(axis=0, keepdims=True) - 30

    def errors(n_iter: int) -> tuple[float, float]:
        back = af.log_mel(af.griffin_lim(db, n_iter=n_iter, length=len(wave)))
        e = np.abs(back - db)
        return float(e[near].mean()), float(e.mean())

    loud, everywhere = errors(64)
    assert loud < 1.0 and everywhere < 3.0
    assert errors(0)[0] > 4.0  # the iterations are what does it
    first = af.griffin_lim(db, n_iter=4)
    assert first.dtype == np.float32 and len(first) == (db.shape[1] - 1) * af.HOP
    assert np.array_equal(first, af.griffin_lim(db, n_iter=4))  # seeded: the same mel, the same wave


def test_write_wav_round_trips_and_leaves_no_temporary(tmp_path: Path) -> None:
    wave = tone(440, 16000, 0.25)
    path = af.write_wav(tmp_path / "out.wav", wave, 16000)
    back, info = af.read_audio(path)
    assert info["sample_rate"] == 16000 and np.abs(back - wave).max() < 1e-4
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.wav"]


# -- the spoken-digits script ---------------------------------------------------------------------


@pytest.mark.skipif(shutil.which("espeak-ng") is None,
                    reason="espeak-ng is not installed (Debian package espeak-ng; `make audio-deps` installs it)")
def test_spoken_digits_script_makes_clips_that_ingest(ws: Workspace, tmp_path: Path) -> None:
    sys.path.insert(0, str(REPO / "scripts"))
    try:
        import make_spoken_digits as digits
    finally:
        sys.path.pop(0)
    digits.main([str(tmp_path / "digits"), "--per-digit", "2", "--seed", "3"])
    files = sorted(p.relative_to(tmp_path / "digits").as_posix() for p in (tmp_path / "digits").rglob("*.wav"))
    assert len(files) == 20 and {f.split("/")[0] for f in files} == set(digits.LABELS)
    assert files == sorted(c["path"] for c in digits.plan(2, 3, digits._installed_languages(digits._espeak())))
    card = aigc.ingest(tmp_path / "digits", "digits", workspace=ws, split=(1.0, 0.0, 0.0))
    assert card["counts"]["kept"] == 20 and sorted(card["classes"]) == sorted(digits.LABELS)
    assert card["found"]["sample_rates"] == {"22050": 20} and card["ignored_files"] == 1  # manifest.csv
