"""The vocoder as a family: `aigc train DATASET --family vocoder` trains it on an audio dataset's
clips under the one loop, and a run on the same dataset's mel images turns its samples into sound
through it (``--vocoder auto`` picks it; ``griffin-lim`` or a run name choose)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from typer.testing import CliRunner

import aigc
from aigc.audio_generation import GRIFFIN_LIM, choose_inverter
from aigc.cli.main import app
from aigc.errors import InvalidInput, NotFound
from aigc.runs import read_spec
from test_audio_ingest import tone, write


@pytest.fixture(scope="module")
def ws(tmp_path_factory):
    root = tmp_path_factory.mktemp("voc")
    for label, freq in (("low", 300.0), ("high", 2000.0)):
        for k in range(14):
            write(root / "clips" / label / f"{k:02d}.wav", tone(freq, 16000, 0.6, seed=k + int(freq)), 16000)
    ws = aigc.open_workspace(root / "ws")
    aigc.ingest(root / "clips", "tones", workspace=ws, seconds=0.6, image_size=16)
    aigc.train("tones", family="vae", preset="tiny", name="mel", workspace=ws, max_steps=2, eval_every=2,
               batch_size=8, seed=0)
    return ws


def test_vocoder_trains_as_a_family_and_its_loss_falls(ws) -> None:
    row = aigc.train("tones", family="vocoder", preset="tiny", name="voc", workspace=ws, max_steps=30,
                     eval_every=15, seed=0)
    assert row["status"] == "finished" and row["family"] == "vocoder"
    lines = [line for line in (Path(row["path"]) / "metrics.jsonl").read_text().splitlines() if '"val_loss"' in line]
    import json

    vals = [json.loads(line)["val_loss"] for line in lines]
    assert len(vals) >= 2 and vals[-1] < vals[0]
    spec = read_spec(Path(row["path"]))
    assert spec["modality"] == "audio" and spec["audio"]["sample_rate"] == 16000


def test_auto_picks_the_vocoder_run_and_griffin_lim_can_be_asked(ws, tmp_path) -> None:
    if not ws.has_run("voc"):
        aigc.train("tones", family="vocoder", preset="tiny", name="voc", workspace=ws, max_steps=4, seed=0)
    gen = aigc.load("mel", workspace=ws)
    assert gen.inverter.name == "voc" and gen.inverter.is_vocoder
    images = gen.sample(2, cond={"label": "low"}, seed=3)
    paths = gen.save_audio(np.asarray(images.mul(255).round().clamp(0, 255).byte().permute(0, 2, 3, 1)),
                           tmp_path)
    wave, sr = sf.read(paths[0])
    assert sr == 16000 and len(wave) == round(0.6 * 16000) and np.isfinite(wave).all()
    # the same mel through the same vocoder: the same sound
    again = gen.save_audio(np.asarray(images.mul(255).round().clamp(0, 255).byte().permute(0, 2, 3, 1)),
                           tmp_path / "again")
    np.testing.assert_array_equal(sf.read(again[0])[0], wave)
    gl = aigc.load("mel", workspace=ws, vocoder=GRIFFIN_LIM)
    assert gl.inverter.name == GRIFFIN_LIM and not gl.inverter.is_vocoder


def test_bad_vocoder_choices_fail_with_one_line(ws) -> None:
    spec = read_spec(ws.run_path("mel"))
    with pytest.raises(NotFound, match="no run named 'nope'"):
        choose_inverter(ws, spec, "nope")
    with pytest.raises(InvalidInput, match="not a vocoder"):
        choose_inverter(ws, spec, "mel")
    runner = CliRunner()
    r = runner.invoke(app, ["generate", "mel", "--vocoder", "mel", "--workspace", str(ws.root)])
    assert r.exit_code == 2 and "not a vocoder" in r.output


def test_cli_generate_names_the_inverter(ws, tmp_path) -> None:
    if not ws.has_run("voc"):
        aigc.train("tones", family="vocoder", preset="tiny", name="voc", workspace=ws, max_steps=4, seed=0)
    r = CliRunner().invoke(app, ["generate", "mel", "--n", "2", "--cond", "label=high", "--out", str(tmp_path / "o"),
                                 "--vocoder", "griffin-lim", "--workspace", str(ws.root)])
    assert r.exit_code == 0, r.output
    assert "griffin-lim of its mel spectrogram" in r.output
    assert len(list((tmp_path / "o").glob("*.wav"))) == 2
    r = CliRunner().invoke(app, ["generate", "voc", "--workspace", str(ws.root)])
    assert r.exit_code == 2 and "is a vocoder" in r.output


def test_a_reloaded_run_and_vocoder_give_the_same_sound_for_the_same_seed(ws, tmp_path) -> None:
    if not ws.has_run("voc"):
        aigc.train("tones", family="vocoder", preset="tiny", name="voc", workspace=ws, max_steps=4, seed=0)
    sounds = []
    for k in range(2):  # two loads from disk: weights, features and inverter come back the same
        gen = aigc.load("mel", workspace=ws, vocoder="voc")
        images = gen.sample(2, cond={"label": "high"}, seed=11)
        paths = gen.save(images, tmp_path / f"load{k}")
        sounds.append([sf.read(p.with_suffix(".wav"))[0] for p in paths])
    for a, b in zip(*sounds):
        np.testing.assert_array_equal(a, b)
    assert np.abs(sounds[0][0]).max() > 0
