"""An audio dataset trains under the image families (its clips are mel-spectrogram images) and the
run's samples come back as sound: a WAV beside each PNG, through Griffin-Lim with the dataset's
feature parameters."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import soundfile as sf

import aigc
from aigc.data import audio_features as af
from aigc.image_generation import to_uint8
from test_audio_ingest import tone, write


def test_an_image_family_trains_on_audio_and_generates_wavs(tmp_path: Path) -> None:
    for label, freq in (("low", 300.0), ("high", 3000.0)):
        for k in range(10):
            write(tmp_path / "clips" / label / f"{k:02d}.wav", tone(freq, 16000, 0.5, seed=k + int(freq)), 16000)
    ws = aigc.open_workspace(tmp_path / "ws")
    card = aigc.ingest(tmp_path / "clips", "tones", workspace=ws, seconds=0.5, image_size=16)
    assert card["modality"] == "audio"
    row = aigc.train("tones", family="vae", preset="tiny", name="t-vae", workspace=ws, max_steps=4, eval_every=2,
                     batch_size=8, seed=0)
    assert row["status"] == "finished"
    gen = aigc.load("t-vae", workspace=ws)
    assert gen.audio["sample_rate"] == 16000 and gen.classes == ["high", "low"]
    images = gen.sample(2, cond={"label": "low"}, seed=1)
    paths = gen.save(images, tmp_path / "out")
    wavs = sorted((tmp_path / "out").glob("*.wav"))
    assert [p.stem for p in wavs] == [p.stem for p in paths] == ["sample-000", "sample-001"]
    wave, sr = sf.read(wavs[0])
    assert sr == 16000 and abs(len(wave) - 0.5 * sr) <= 2 * af.HOP and np.isfinite(wave).all()
    # the same image decodes to the same sound
    (tmp_path / "again").mkdir()
    again = gen.save_audio(to_uint8(images), tmp_path / "again")
    np.testing.assert_array_equal(sf.read(again[0])[0], wave)
