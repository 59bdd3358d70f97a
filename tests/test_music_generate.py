"""Symbolic music runs (aigc.music_generation, aigc.music_evaluation): samples written as labelled
MIDI, WAV and piano rolls; NLL per REMI token against n-gram baselines on the same split; the
`aigc generate` and `aigc eval` paths on a music run."""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import pytest
import torch
from PIL import Image
from symusic import Score
from typer.testing import CliRunner

import aigc
from aigc.cli.main import app
from aigc.data import music
from aigc.data.dataset import read_text_split
from aigc.errors import InvalidInput
from aigc.music_evaluation import evaluate_music, remi_nll, score_windows
from aigc.music_generation import generate_music, read_midi_label, write_music
from aigc.provenance import audio as audio_labels
from aigc.provenance.labels import implicit_label, read_label
from test_music import C_MAJOR_SCALE, Q, _midi, _scale

runner = CliRunner()
HAS_FLUIDSYNTH = shutil.which("fluidsynth") is not None and music.DEFAULT_SOUNDFONT.is_file()
NO_FLUIDSYNTH = "fluidsynth or its soundfont is not installed (Debian packages fluidsynth, fluid-soundfont-gm)"


def _scale_pieces(root: Path, first_bar: int, n: int) -> None:
    """``n`` pieces of the C major scale in quarter notes, each a different number of bars (so each
    has its own hash and the splits get pieces); every one is longer than the tiny gpt's block."""
    for bars in range(first_bar, first_bar + n):
        _midi(root / f"scale{bars:02d}.mid", _scale(C_MAJOR_SCALE, bars=bars))


@pytest.fixture(scope="module")
def ws(tmp_path_factory):
    """Two datasets and a tiny gpt run on each: ``tunes`` (two composers: scales and chords) and
    ``scales`` (one repeated scale, for the known answer)."""
    root = tmp_path_factory.mktemp("music-runs")
    src = root / "composers"
    _scale_pieces(src / "bach", 4, 4)
    for k in range(4):  # chords: three notes at once, a root moving by fifths
        base = 48 + (k * 7) % 12
        notes = [(base + d, i * 2 * Q, 2 * Q) for i in range(4 + k) for d in (0, 4, 7)]
        _midi(src / "handel" / f"chords{k}.mid", notes, program=40)  # violin: strings
    ws = aigc.open_workspace(root / "ws")
    aigc.ingest(src, "tunes", workspace=ws, split=(0.5, 0.25, 0.25))
    aigc.train("tunes", family="gpt", preset="tiny", name="tunes-gpt", workspace=ws, max_steps=30, eval_every=30,
               seed=0)
    _scale_pieces(root / "scales", 6, 12)
    aigc.ingest(root / "scales", "scales", workspace=ws, split=(0.5, 0.25, 0.25))
    aigc.train("scales", family="gpt", preset="tiny", name="scales-gpt", workspace=ws, max_steps=80, eval_every=80,
               seed=0)
    return ws


def _label(produce_id: str = "p1") -> dict:
    return implicit_label(producer="aigc-studio-test", produce_id=produce_id)


def test_generate_writes_labelled_midi_that_parses_and_a_piano_roll(ws, tmp_path):
    gen = aigc.load("tunes-gpt", workspace=ws)
    run_dir = ws.run_path("tunes-gpt")
    decoded = generate_music(gen, run_dir, n=3, cond={"composer": "handel"}, max_new_tokens=96, seed=1)
    assert len(decoded) == 3 and all(d.tokens > 0 for d in decoded)
    written = write_music(decoded, tmp_path / "out", label=_label(), wav=False)
    names = sorted(p.name for p in (tmp_path / "out").iterdir())
    assert names == [f"sample-{i:03d}.{ext}" for i in range(3) for ext in ("mid", "png")]  # no temporary files
    for i, (d, s) in enumerate(zip(decoded, written["samples"])):
        back = Score(str(s["midi"]))  # parses back, with the notes decoded
        assert back.note_num() == d.score.note_num() == s["notes"]
        if s["notes"]:
            assert [n.pitch for n in back.tracks[0].notes] == [n.pitch for n in d.score.tracks[0].notes]
        assert read_midi_label(s["midi"]) == {**_label(), "ProduceID": f"p1-{i:03d}"}
        with Image.open(s["roll"]) as im:
            assert im.width > 100 and im.height > 60
        assert read_label(s["roll"])["ProduceID"] == f"p1-{i:03d}-roll"
        assert s["wav"] is None
    assert sum(s["notes"] for s in written["samples"]) > 0  # 30 steps on scales and chords: some notes
    assert written["empty"] == sum(s["notes"] == 0 for s in written["samples"])
    # the same seed, the same music
    again = generate_music(gen, run_dir, n=3, cond={"composer": "handel"}, max_new_tokens=96, seed=1)
    assert [d.midi_bytes() for d in again] == [d.midi_bytes() for d in decoded]
    # an instrument condition picks its General MIDI family's program: handel's pieces are strings
    strings = generate_music(gen, run_dir, n=1, cond={"instrument": "strings"}, max_new_tokens=32, seed=2)
    assert [t.program for t in strings[0].score.tracks] == [40]


def test_read_midi_label_none_for_unlabelled_and_one_line_for_non_midi(tmp_path):
    plain = _midi(tmp_path / "plain.mid", _scale(C_MAJOR_SCALE))
    assert read_midi_label(plain) is None
    (tmp_path / "not.mid").write_bytes(b"RIFF....WAVEfmt ")
    with pytest.raises(InvalidInput, match=r"not\.mid is not a readable MIDI file") as e:
        read_midi_label(tmp_path / "not.mid")
    assert "\n" not in str(e.value)
    with pytest.raises(InvalidInput, match="no such MIDI file"):
        read_midi_label(tmp_path / "missing.mid")


def test_a_sample_with_no_notes_gets_its_midi_and_picture_and_is_counted(tmp_path):
    tok = music.new_tokenizer()
    empty = music.decode_text(None, "", tokenizer=tok)
    full = music.decode_text(None, music.ids_to_text(tok(_score_of(_scale(C_MAJOR_SCALE)))[0].ids), tokenizer=tok)
    written = write_music([empty, full], tmp_path, wav=False)
    assert written["empty"] == 1 and [s["notes"] for s in written["samples"]] == [0, 8]
    assert Score(str(written["samples"][0]["midi"])).note_num() == 0
    assert read_midi_label(written["samples"][0]["midi"]) is None  # no label asked for, none written


def _score_of(notes):
    from symusic import Note, TimeSignature, Track

    score = Score(480)
    score.time_signatures.append(TimeSignature(0, 4, 4))
    track = Track()
    for pitch, start, dur in notes:
        track.notes.append(Note(start, dur, pitch, 90))
    score.tracks.append(track)
    return score


@pytest.mark.skipif(not HAS_FLUIDSYNTH, reason=NO_FLUIDSYNTH)
def test_wav_is_rendered_and_reads_with_soundfile(tmp_path):
    import soundfile as sf

    tok = music.new_tokenizer()
    d = music.decode_text(None, music.ids_to_text(tok(_score_of(_scale(C_MAJOR_SCALE)))[0].ids), tokenizer=tok)
    written = write_music([d], tmp_path / "plain", wav=True)
    wave, sr = sf.read(written["samples"][0]["wav"])
    assert written["wav_skipped"] is None and sr == 22050
    assert len(wave) / sr >= 3.5 and abs(wave).max() > 0.01  # 8 quarter notes at 120 bpm: 4 s, audible
    labelled = write_music([d], tmp_path / "labelled", label=_label("p2"), wav=True)
    path = labelled["samples"][0]["wav"]
    assert sf.read(path)[0].shape == wave.shape
    assert audio_labels.read_audio_label(path)["ProduceID"] == "p2-000-wav"


def test_missing_fluidsynth_still_writes_midi_and_names_the_package(tmp_path, monkeypatch):
    monkeypatch.setattr(music.shutil, "which", lambda name: None)
    tok = music.new_tokenizer()
    d = music.decode_text(None, music.ids_to_text(tok(_score_of(_scale(C_MAJOR_SCALE)))[0].ids), tokenizer=tok)
    written = write_music([d, d], tmp_path, label=_label(), wav=True)
    assert "Debian package fluidsynth" in written["wav_skipped"] and "\n" not in written["wav_skipped"]
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "sample-000.mid", "sample-000.png", "sample-001.mid", "sample-001.png"]
    assert all(s["wav"] is None for s in written["samples"])


def test_score_windows_score_every_position_once_with_its_context():
    seq = list(range(1000, 1300))  # distinct ids: a target's value says its position
    windows = score_windows(seq, first=3, block=64)
    scored = {}
    for w, (x, y) in enumerate(windows):
        for j in range(64):
            if y[j] != -100:
                t = int(y[j]) - 1000
                assert t not in scored
                scored[t] = j
                assert int(x[j]) == seq[t - 1]  # the input at j is the token before the target
                if w > 0:
                    assert j >= 32  # later windows: at least half a block of context
    assert sorted(scored) == list(range(3, 300))
    assert len(score_windows(seq[:40], first=3, block=64)) == 1


def test_remi_nll_equals_a_direct_forward_when_a_record_fits_the_block(ws):
    gen = aigc.load("tunes-gpt", workspace=ws)
    ds = ws.dataset_path("tunes")
    rec = next(r for r in read_text_split(ds, "train") if len(r.text) >= 40)
    rec = type(rec)(rec.text[:40], rec.cond)  # fits the tiny block of 64 with its prefix
    from aigc.data.textstream import prefix_ids

    ctx = prefix_ids(gen.tokenizer, rec.cond, gen.cond_columns)
    ids = torch.tensor([ctx + gen.tokenizer.encode(rec.text)])
    with torch.no_grad():
        logits, _ = gen.model(ids[:, :-1])
    logp = torch.log_softmax(logits.float(), -1)[0]
    want = -sum(float(logp[t - 1, ids[0, t]]) for t in range(len(ctx), ids.shape[1]))
    total, count = remi_nll(gen, [rec])
    assert count == 40 and total == pytest.approx(want, rel=1e-4)


def test_evaluate_music_reports_finite_nll_baselines_and_histograms(ws):
    r = evaluate_music(ws, "tunes-gpt", n_samples=4, seed=0)
    lk = r["likelihood"]
    assert r["modality"] == "music" and r["run"] == "tunes-gpt" and r["split"] == "test"
    for key in ("nll_per_token", "bits_per_token", "unigram_nll", "bigram_nll"):
        assert math.isfinite(lk[key]) and lk[key] > 0
    assert lk["bits_per_token"] == pytest.approx(lk["nll_per_token"] / math.log(2))
    # the baselines are on the test split, recomputed here from the dataset's files
    ds = ws.dataset_path("tunes")
    ids = {s: [[ord(c) - music.PUA_BASE for c in rec.text] for rec in read_text_split(ds, s)] for s in ("train", "test")}
    base = music.ngram_baselines(ids["train"], ids["test"])
    assert (lk["unigram_nll"], lk["bigram_nll"]) == (base["unigram_nll"], base["bigram_nll"])
    assert lk["tokens"] == base["val_tokens"] == sum(map(len, ids["test"]))
    assert lk["beats_bigram"] == (lk["nll_per_token"] < lk["bigram_nll"])
    assert r["sampling"]["max_new_tokens"] == 256 and r["sampling"]["max_new_tokens_asked"] == 120
    sm = r["samples"]
    assert sm["n"] == 4 and 0 <= sm["decoded_share"] <= 1 and sum(c["samples"] for c in sm["by_condition"]) == 4
    hist = r["histograms"]["pitch_class"]
    assert len(hist["bins"]) == 12 and sum(hist["test"]) == pytest.approx(1) and sum(hist["train"]) == pytest.approx(1)
    floor = r["distances"]["train_vs_test"]["pitch_class"]
    assert 0 <= floor["tv"] <= 1 and 0 <= floor["js"] <= 1
    saved = json.loads((ws.run_path("tunes-gpt") / "eval.json").read_text())
    assert saved["likelihood"]["nll_per_token"] == pytest.approx(lk["nll_per_token"])
    headline = ws.get_run("tunes-gpt")["summary"]["eval"]
    assert headline["nll_per_token"] == pytest.approx(lk["nll_per_token"]) and "pitch_class_tv" in headline


def test_known_answer_a_model_of_one_repeated_scale_beats_the_bigram(ws):
    r = evaluate_music(ws, "scales-gpt", n_samples=2, seed=0)
    lk = r["likelihood"]
    # After a Duration token the bigram cannot tell which of the eight pitches comes next; a model
    # that sees the previous notes can. 80 steps of the tiny gpt take it well below.
    assert lk["beats_bigram"] and lk["nll_per_token"] < 0.75 * lk["bigram_nll"], lk
    assert r["samples"]["decoded_share"] == 1.0
    # its samples walk the scale: each degree about as often as in the test piece (an untrained
    # model, or one stuck on a note, is far off)
    assert r["distances"]["samples_vs_test"]["pitch_class"]["tv"] < 0.25, r["histograms"]["pitch_class"]


def test_cli_generate_writes_the_files_and_a_bad_condition_is_one_line(ws, tmp_path, monkeypatch):
    out = tmp_path / "gen"
    r = runner.invoke(app, ["generate", "tunes-gpt", "--n", "2", "--cond", "composer=bach", "--out", str(out),
                            "-m", "64", "--seed", "3", "-w", str(ws.root)])
    assert r.exit_code == 0, r.output
    assert "wrote 2 MIDI files" in r.stdout and str(out) in r.stdout
    mids = sorted(out.glob("*.mid"))
    assert [p.name for p in mids] == ["sample-000.mid", "sample-001.mid"]
    assert len(list(out.glob("*.png"))) == 2
    label = read_midi_label(mids[0])
    assert label["Label"] == "1" and label["ProduceID"].endswith("-000")
    with_notes = [m for m in mids if Score(str(m)).note_num() > 0]
    assert with_notes  # 30 steps on scales: seed 3 gives notes
    wavs = sorted(out.glob("*.wav"))
    if HAS_FLUIDSYNTH:  # one WAV per sample with notes, labelled, the policy's audible cue in front
        assert [w.stem for w in wavs] == [m.stem for m in with_notes]
        produce = label["ProduceID"].rsplit("-", 1)[0]  # the run's id; each file adds its own suffix
        assert audio_labels.read_audio_label(wavs[0])["ProduceID"] == f"{produce}-{wavs[0].stem[-3:]}-wav"
        assert audio_labels.read_audio_cue(wavs[0]) is not None
    else:
        assert wavs == [] and "WAV skipped" in r.stderr and "fluidsynth" in r.stderr


def test_cli_without_fluidsynth_writes_midi_and_one_warning_line(ws, tmp_path, monkeypatch):
    monkeypatch.setattr(music.shutil, "which", lambda name: None)
    r = runner.invoke(app, ["generate", "tunes-gpt", "--n", "2", "--out", str(tmp_path), "-m", "48", "--seed", "1",
                            "-w", str(ws.root)])
    assert r.exit_code == 0, r.output
    assert sorted(p.suffix for p in tmp_path.iterdir()) == [".mid", ".mid", ".png", ".png"]
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("warning: WAV skipped") and "Debian package fluidsynth" in lines[0]

    bad = runner.invoke(app, ["generate", "tunes-gpt", "--cond", "composer=mozart", "--out", str(tmp_path / "bad"),
                              "-w", str(ws.root)])
    assert bad.exit_code == 2
    lines = bad.stderr.strip().splitlines()
    assert len(lines) == 1 and "unknown value 'mozart'" in lines[0] and "bach" in lines[0]
    assert not (tmp_path / "bad").exists()  # nothing written
    prompt = runner.invoke(app, ["generate", "tunes-gpt", "hello", "-w", str(ws.root)])
    assert prompt.exit_code == 2 and "music run" in prompt.stderr


def test_cli_eval_prints_the_music_table(ws):
    r = runner.invoke(app, ["eval", "tunes-gpt", "--samples", "2", "-w", str(ws.root)])
    assert r.exit_code == 0, r.output
    for text in ("NLL per REMI token", "bigram", "pitch-class histogram", "polyphony", "train vs test"):
        assert text in r.stdout
