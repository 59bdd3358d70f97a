"""Audio evaluation: a domain classifier of the dataset's log-mel spectrograms judges the SOUND of
generated clips (mel image -> inverter -> wave -> log-mel again), against real, resynthesized and
Griffin-Lim-of-noise references; a vocoder run against Griffin-Lim. Three classes of tones, a
quarter second each, a vae and a vocoder trained a few steps: about half a minute on one thread,
most of it Griffin-Lim."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

import aigc
from aigc.audio_evaluation import AudioJudge, evaluate_audio, evaluate_vocoder, sound_to_images
from aigc.cli.common import out
from aigc.cli.evaluate import print_eval
from aigc.cli.main import app
from aigc.data import audio_features as af
from aigc.data.images import ImageSplit, read_image_split, to_tensor
from aigc.errors import InvalidInput
from aigc.metrics.audio import inception_score
from helpers import write_fruit_csv

SR, SECONDS, N = 16000, 0.25, 24  # 8 test clips per class: the evaluations' n


def tones(root: Path) -> Path:
    """3 classes of pure tones (300 Hz, 1.2 kHz, 4 kHz), 20 clips each, every clip its own slight
    detuning and noise (seeded)."""
    t = np.arange(round(SR * SECONDS)) / SR
    for label, freq in (("low", 300.0), ("mid", 1200.0), ("high", 4000.0)):
        (root / label).mkdir(parents=True)
        for k in range(20):
            rng = np.random.default_rng(k + int(freq))
            wave = 0.5 * np.sin(2 * np.pi * freq * (1 + 0.01 * rng.standard_normal()) * t)
            wave = wave + 0.003 * rng.standard_normal(len(t))
            af.write_wav(root / label / f"{k:02d}.wav", wave.astype(np.float32), SR)
    return root


@pytest.fixture(scope="module")
def ws(tmp_path_factory):
    root = tmp_path_factory.mktemp("audio-eval")
    ws = aigc.open_workspace(root / "ws")
    aigc.ingest(tones(root / "clips"), "tones", workspace=ws, seconds=SECONDS, image_size=16,
                split=(0.5, 0.1, 0.4))
    aigc.train("tones", family="vae", preset="tiny", name="mel", workspace=ws, max_steps=4, eval_every=2,
               batch_size=8, seed=0)
    return ws


@pytest.fixture(scope="module")
def griffin_lim_eval(ws):
    """`aigc eval mel --vocoder griffin-lim` (before any vocoder run exists): its output and eval.json."""
    result = CliRunner().invoke(app, ["eval", "mel", "--vocoder", "griffin-lim", "--samples", str(N),
                                      "--workspace", str(ws.root)], env={"COLUMNS": "200"})
    return result, json.loads((ws.run_path("mel") / "eval.json").read_text(encoding="utf-8"))


@pytest.fixture(scope="module")
def vocoder_run(ws, griffin_lim_eval):
    # vocos: a 30-step wave generator, far from Griffin-Lim (the default postnet starts as Griffin-Lim)
    aigc.train("tones", family="vocoder", preset="tiny", name="voc", workspace=ws, seed=0,
               model={"generator": "vocos"})
    return "voc"


def test_sound_to_images_of_the_stored_clips_gives_the_stored_images(ws) -> None:
    d = ws.dataset_path("tones")
    with np.load(d / "audio_test.npz") as z:
        waves = z["waves"]
    features = json.loads((d / "card.json").read_text(encoding="utf-8"))["features"]
    np.testing.assert_array_equal(sound_to_images(waves, features), read_image_split(d, "test").images)
    # a wave a little longer (a vocoder's frames * hop) or shorter is fitted to the clip length first
    longer = [np.pad(w.astype(np.float32), (0, 300)) for w in waves[:2]]
    np.testing.assert_array_equal(sound_to_images(longer, features), read_image_split(d, "test").images[:2])
    with pytest.raises(InvalidInput, match="float waves"):
        sound_to_images([np.zeros(8000, np.int16)], features)


def test_griffin_lim_evaluation_through_the_cli(ws, griffin_lim_eval) -> None:
    result, r = griffin_lim_eval
    assert result.exit_code == 0, result.output
    assert "evaluation of mel: 24 clips vs the test split" in result.output
    assert "Griffin-Lim of noise (the ceiling)" in result.output
    assert "test mels through griffin-lim" in result.output
    assert r["modality"] == "audio" and r["n"] == N and r["split"] == "test"
    assert r["inverter"]["inverter"] == "griffin-lim" and r["inverter"]["kind"] == "griffin-lim"
    assert all(math.isfinite(r[k]) for k in ("fd", "kid_mean", "kid_std", "precision", "recall"))
    assert 0 <= r["conditional_accuracy"] <= 1 and 1 <= r["inception_score"] <= 3
    # the classifier reads separable tones: a known answer
    assert r["classifier"]["test_accuracy"] >= 0.9 and r["real_accuracy"] >= 0.9
    assert r["real_inception_score"] > 2.5  # three equally frequent classes, each named with confidence
    refs = r["references"]
    # real clips are closer to real clips than Griffin-Lim of noise is, by far
    assert refs["train_vs_test"]["fd"] * 10 < refs["griffin_lim_of_noise"]["fd"]
    # the SOUND is judged: the test clips' own images, inverted and analysed again, keep their class
    # but are no longer the very images the classifier was tested on (those would give FD 0)
    assert refs["resynthesis"]["conditional_accuracy"] >= 0.9
    assert refs["resynthesis"]["fd"] > refs["train_vs_test"]["fd"]
    assert refs["resynthesis"]["fd"] * 10 < refs["griffin_lim_of_noise"]["fd"]
    assert r["sampling_seconds_per_1000"] > 0 and r["inversion_seconds_per_1000"] > 0
    samples = ws.run_path("mel") / "eval_samples"
    listed = json.loads((samples / "samples.json").read_text(encoding="utf-8"))
    assert [s["file"] for s in listed] == [f"sample-{i:03d}.wav" for i in range(8)]
    assert [s["label"] for s in listed[:3]] == ["high", "low", "mid"]  # classes in turn
    wave, info = af.read_audio(samples / "sample-000.wav", SR)
    assert info["sample_rate"] == SR and len(wave) == round(SR * SECONDS) and np.abs(wave).max() > 0
    assert (samples / "generated.png").is_file() and (samples / "heard.png").is_file()
    assert not any((ws.root / "tmp").iterdir())  # the staging folder was renamed into place
    assert ws.get_run("mel")["summary"]["eval"] == {"fd": r["fd"], "kid_mean": r["kid_mean"],
                                                   "conditional_accuracy": r["conditional_accuracy"],
                                                   "inverter": "griffin-lim"}


def test_auto_picks_the_vocoder_and_its_sound_shows_in_the_figures(ws, griffin_lim_eval, vocoder_run) -> None:
    r = evaluate_audio(ws, "mel", n_samples=N)  # auto: the vocoder run on the same dataset
    assert r["inverter"] == {"inverter": "voc", "kind": "vocoder"}
    assert ws.get_run("mel")["summary"]["eval"]["inverter"] == "voc"
    gl = griffin_lim_eval[1]
    # the same real clips, classifier and train floor; a 30-step vocoder resynthesizes far worse
    assert r["references"]["train_vs_test"] == gl["references"]["train_vs_test"]
    assert r["references"]["resynthesis"]["fd"] > 2 * gl["references"]["resynthesis"]["fd"]
    assert r["references"]["griffin_lim_of_noise"] == gl["references"]["griffin_lim_of_noise"]  # seeded


def test_vocoder_evaluation_against_griffin_lim(ws, griffin_lim_eval, vocoder_run) -> None:
    r = evaluate_vocoder(ws, vocoder_run)
    assert r["modality"] == "vocoder" and r["run"] == "voc" and r["n"] == N
    rec = r["reconstruction"]
    assert set(rec) == {"vocoder_mr_stft", "vocoder_mel_l1_db", "griffin_lim_mr_stft", "griffin_lim_mel_l1_db",
                        "clips"}
    beats = r["beats_griffin_lim"]
    assert set(beats) == {"mr_stft", "fd", "accuracy"} and all(isinstance(v, bool) for v in beats.values())
    assert beats["mr_stft"] == (rec["vocoder_mr_stft"] < rec["griffin_lim_mr_stft"])
    assert beats["fd"] == (r["vocoder"]["fd"] < r["griffin_lim"]["fd"])
    # Griffin-Lim of the same test mels with the same seed: the resynthesis reference of evaluate_audio
    resynthesis = griffin_lim_eval[1]["references"]["resynthesis"]
    assert r["griffin_lim"]["fd"] == resynthesis["fd"]
    assert r["griffin_lim"]["conditional_accuracy"] == resynthesis["conditional_accuracy"] >= 0.9
    assert not beats["mr_stft"]  # 30 tiny steps do not beat Griffin-Lim (a known answer, not a goal)
    saved = json.loads((ws.run_path("voc") / "eval.json").read_text(encoding="utf-8"))
    assert saved["beats_griffin_lim"] == ws.get_run("voc")["summary"]["eval"]["beats_griffin_lim"] == beats
    with out.capture() as shown:  # what `aigc eval voc` prints (the CLI path is tested above)
        print_eval(r)
    table = shown.get()
    assert "voc against Griffin-Lim on 24 test clips of tones" in table and "MR-STFT distance" in table


def test_vocoder_option_on_a_text_run_is_one_line_and_exit_2(ws, tmp_path) -> None:
    aigc.ingest(write_fruit_csv(tmp_path / "fruit.csv", n=80), "fruit", workspace=ws, text_column="text")
    aigc.train("fruit", family="gpt", preset="tiny", name="txt", workspace=ws, max_steps=1)
    result = CliRunner().invoke(app, ["eval", "txt", "--vocoder", "griffin-lim", "--workspace", str(ws.root)])
    assert result.exit_code == 2
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and "not trained on audio clips" in lines[0] and "txt" in lines[0]
    assert not (ws.run_path("txt") / "eval.json").exists()


def test_without_references_the_figures_are_the_same(ws, griffin_lim_eval) -> None:
    _, full = griffin_lim_eval
    lean = evaluate_audio(ws, "mel", n_samples=N, vocoder="griffin-lim", references=False)
    assert "references" not in lean and "references" in full
    assert (lean["conditional_accuracy"], lean["fd"]) == (full["conditional_accuracy"], full["fd"])


def test_bad_sample_count_is_refused_before_any_work(ws) -> None:
    with pytest.raises(InvalidInput, match="n_samples must be a whole number >= 4.*got 2"):
        evaluate_audio(ws, "mel", n_samples=2)


def test_a_set_without_classes_gets_the_rotation_classifier(ws) -> None:
    d = ws.dataset_path("tones")
    train, test = read_image_split(d, "train"), read_image_split(d, "test")
    features = json.loads((d / "card.json").read_text(encoding="utf-8"))["features"]
    judge = AudioJudge.for_dataset(ws, "tones-unlabelled", ImageSplit(train.images[::4], None, []),
                                   to_tensor(test.images), None, features)
    assert judge.kind == "rotation" and judge.describe()["key"] == "tones-unlabelled.audio-gl.rotation"
    n = len(train.images[::4])  # each clip also heard through Griffin-Lim, all four turns of both
    assert judge.info["n_extra"] == 4 * n and judge.info["n_train"] == 8 * n
    assert judge.inception(to_tensor(test.images)) is None
    report = judge.report(to_tensor(test.images), to_tensor(train.images[: len(test.images)]))
    assert math.isfinite(report["fd"]) and report["inception_score"] is None


def test_the_judge_also_learns_clips_heard_through_griffin_lim_and_reuses_itself(ws, monkeypatch) -> None:
    import aigc.audio_generation as ag

    d = ws.dataset_path("tones")
    train, test = read_image_split(d, "train"), read_image_split(d, "test")
    features = json.loads((d / "card.json").read_text(encoding="utf-8"))["features"]
    judge = AudioJudge.for_dataset(ws, "tones-judge", train, to_tensor(test.images),
                                   torch.from_numpy(test.labels).long(), features)
    info = judge.info
    assert info["trained"] and info["n_extra"] == len(train.images) and info["n_train"] == 2 * len(train.images)
    assert info["extra_recipe"].startswith("griffin-lim") and judge.describe()["key"] == "tones-judge.audio-gl"

    def no_inversion(*a, **k):
        raise AssertionError("a cached judge must not invert the train clips again")

    monkeypatch.setattr(ag, "images_to_waves", no_inversion)
    again = AudioJudge.for_dataset(ws, "tones-judge", train, to_tensor(test.images),
                                   torch.from_numpy(test.labels).long(), features)
    assert not again.info["trained"] and again.info["fingerprint"] == info["fingerprint"]


def test_inception_score_known_answers() -> None:
    assert inception_score(np.eye(3)) == pytest.approx(3.0)  # certain and balanced: K
    assert inception_score(np.full((5, 4), 0.25)) == pytest.approx(1.0)  # no information: 1
    # two clips certain of class 0, one of class 1: exp((2 log 1.5 + log 3) / 3)
    expected = math.exp((2 * math.log(1.5) + math.log(3)) / 3)
    assert inception_score(np.eye(3)[[0, 0, 1]]) == pytest.approx(expected)
    with pytest.raises(InvalidInput, match="softmax"):
        inception_score(np.array([[2.0, -1.0]]))
