"""scripts/make_instrument_clips.py: excerpts of MIDI files rendered by fluidsynth, one folder per instrument.

The MIDI files are made here with symusic (two short pieces of chords), so nothing reads music21's
corpus; the tests that render skip when fluidsynth or Debian's General MIDI soundfont is missing.
"""

from __future__ import annotations

import csv
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

import aigc
from aigc.data import music
from aigc.errors import InvalidInput

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "scripts"))
try:
    import make_instrument_clips as clips
finally:
    sys.path.pop(0)

HAS_RENDERER = shutil.which("fluidsynth") is not None and music.DEFAULT_SOUNDFONT.is_file()
needs_renderer = pytest.mark.skipif(
    not HAS_RENDERER,
    reason="fluidsynth or its soundfont is not installed (Debian packages fluidsynth, fluid-soundfont-gm)")
SECONDS = 0.5


def write_chords(folder: Path, velocity: int = 80) -> Path:
    """Two pieces of three 4/4 bars at 120 bpm (2 s a bar), four voices of quarter-note chords."""
    from symusic import Note, Score, Tempo, TimeSignature, Track

    folder.mkdir(parents=True, exist_ok=True)
    for k, root in enumerate((60, 62)):
        score = Score(480)
        score.tempos.append(Tempo(0, 120.0))
        score.time_signatures.append(TimeSignature(0, 4, 4))
        for v, offset in enumerate((-12, 0, 4, 7)):
            track = Track(f"voice{v}", 0, False)
            for beat in range(12):
                track.notes.append(Note(beat * 480, 480, root + offset + 5 * (beat // 4 % 2), velocity))
            score.tracks.append(track)
        music.write_midi(folder / f"piece{k}.mid", score)
    return folder


def run(out: Path, midi_dir: Path, *extra: str) -> None:
    clips.main([str(out), "--per-instrument", "2", "--seconds", str(SECONDS), "--seed", "1",
                "--midi-dir", str(midi_dir), *extra])


@pytest.fixture(scope="module")
def made(tmp_path_factory) -> tuple[Path, Path]:
    """The same set made twice, with the same seed."""
    root = tmp_path_factory.mktemp("instruments")
    midi = write_chords(root / "midi")
    run(root / "a", midi)
    run(root / "b", midi)
    return root / "a", root / "b"


def manifest(out: Path) -> list[dict[str, str]]:
    with (out / "manifest.csv").open(newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


@needs_renderer
def test_clips_are_16k_mono_the_right_length_loud_and_listed_by_instrument(made):
    out, _ = made
    rows = manifest(out)
    assert list(rows[0]) == ["path", "label", "piece", "start_bar", "transpose", "program"]
    assert sorted(p.name for p in out.iterdir() if p.is_dir()) == sorted(clips.INSTRUMENTS)
    files = sorted(p.relative_to(out).as_posix() for p in out.rglob("*.wav"))
    assert files == sorted(r["path"] for r in rows) and len(files) == 2 * len(clips.INSTRUMENTS)
    for r in rows:
        assert r["path"].split("/")[0] == r["label"] and int(r["program"]) == clips.INSTRUMENTS[r["label"]]
        assert r["piece"] in ("piece0.mid", "piece1.mid") and abs(int(r["transpose"])) <= 3
        info = sf.info(out / r["path"])
        assert (info.samplerate, info.channels, info.frames) == (16000, 1, round(SECONDS * 16000))
        wave, _ = sf.read(out / r["path"])
        assert np.abs(wave).max() == pytest.approx(clips.PEAK, abs=1e-3)  # scaled to -3 dBFS
        assert np.sqrt(np.mean(wave[: len(wave) // 4] ** 2)) > 0.01  # sound from the start: not silent
    assert not list(out.rglob(".*"))  # no temporary left behind


@needs_renderer
def test_the_same_seed_writes_the_same_bytes(made):
    a, b = made
    files = sorted(p.relative_to(a) for p in a.rglob("*") if p.is_file())
    assert files == sorted(p.relative_to(b) for p in b.rglob("*") if p.is_file())
    assert all((a / f).read_bytes() == (b / f).read_bytes() for f in files)


@needs_renderer
def test_ingest_gives_one_class_per_instrument(made):
    card = aigc.ingest(made[0], "instruments", seconds=SECONDS, split=(1.0, 0.0, 0.0))
    assert sorted(card["classes"]) == sorted(clips.INSTRUMENTS)
    assert card["class_counts"]["train"] == {label: 2 for label in clips.INSTRUMENTS}
    assert card["counts"]["kept"] == 12 and card["found"]["sample_rates"] == {"16000": 12}


@needs_renderer
def test_the_program_sets_the_timbre(tmp_path):
    pieces, _ = clips.load_pieces([(p, p.name) for p in sorted(write_chords(tmp_path / "midi").iterdir())],
                                  SECONDS)
    waves = {}
    for label in ("piano", "flute"):
        score = clips.excerpt(pieces[0].score, 2.0, SECONDS, clips.INSTRUMENTS[label], 0)
        assert clips.render_clip(score, tmp_path / f"{label}.wav", SECONDS, music.DEFAULT_SOUNDFONT, tmp_path)
        waves[label] = sf.read(tmp_path / f"{label}.wav")[0]
    spectra = [np.abs(np.fft.rfft(w)) for w in waves.values()]
    assert np.corrcoef(*spectra)[0, 1] < 0.9  # the same notes, another instrument


@needs_renderer
def test_silent_clips_are_skipped_and_counted(tmp_path, capsys):
    run(tmp_path / "out", write_chords(tmp_path / "midi", velocity=1), "--per-instrument", "1")
    last = capsys.readouterr().out.splitlines()[-1]
    assert last.startswith("0 clips") and "6 silent skipped" in last
    assert manifest(tmp_path / "out") == [] and not list((tmp_path / "out").rglob("*.wav"))


def test_excerpt_shifts_cuts_transposes_and_sets_every_program(tmp_path):
    from symusic import Note, Score, Tempo, Track

    score = Score(480)
    score.tempos.append(Tempo(0, 120.0))  # 960 ticks a second
    melody, drums = Track("melody", 0, False), Track("drums", 0, True)
    melody.notes.extend([Note(0, 960, 60, 90),  # ends at 1 s: before the excerpt
                         Note(960, 1440, 62, 90),  # 1-2.5 s: sounding when it starts at 2 s
                         Note(2400, 480, 64, 70),  # 2.5-3 s
                         Note(2640, 960, 67, 90),  # 2.75-3.75 s: cut TAIL_S (0.25 s) past the end
                         Note(3840, 480, 65, 90)])  # 4 s: after it ends at 3 s
    drums.notes.append(Note(1920, 480, 36, 90))
    score.tracks.extend([melody, drums])
    out = clips.excerpt(score.to("second"), 2.0, 1.0, 40, 2)
    assert [(t.program, t.is_drum) for t in out.tracks] == [(40, False)]
    assert [(n.time, n.duration, n.pitch, n.velocity) for n in out.tracks[0].notes] == [
        (0, 480, 64, 90), (480, 480, 66, 70), (720, 480, 69, 90)]
    assert out.tempos[0].qpm == 120 and out.ticks_per_quarter == 480


def test_plan_is_seeded_distinct_and_refuses_more_than_there_is(tmp_path):
    pieces, left_out = clips.load_pieces(
        [(p, p.name) for p in sorted(write_chords(tmp_path / "midi").iterdir())], SECONDS)
    assert left_out == [] and [len(p.bars) for p in pieces] == [3, 3]
    plan = clips.plan(pieces, 20, 0, 3)
    assert plan == clips.plan(pieces, 20, 0, 3) and plan != clips.plan(pieces, 20, 1, 3)
    for label in clips.INSTRUMENTS:
        mine = [(c["piece"], c["start_bar"], c["transpose"]) for c in plan if c["label"] == label]
        assert len(mine) == 20 == len(set(mine))
    with pytest.raises(InvalidInput, match=r"--per-instrument 43 is more than the 42 distinct excerpts"):
        clips.plan(pieces, 43, 0, 3)  # 2 pieces x 3 bars x 7 transpositions


def test_missing_fluidsynth_is_one_line_naming_the_package_and_writes_nothing(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(music.shutil, "which", lambda name: None)
    with pytest.raises(SystemExit) as e:
        run(tmp_path / "out", write_chords(tmp_path / "midi"))
    err = capsys.readouterr().err.strip()
    assert e.value.code == 2 and "\n" not in err and "Debian package fluidsynth" in err
    assert not (tmp_path / "out").exists()


def test_missing_soundfont_is_one_line_naming_the_package(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(music.shutil, "which", lambda name: "/usr/bin/fluidsynth")
    with pytest.raises(SystemExit) as e:
        run(tmp_path / "out", write_chords(tmp_path / "midi"), "--soundfont", str(tmp_path / "none.sf2"))
    err = capsys.readouterr().err.strip()
    assert e.value.code == 2 and "\n" not in err and "fluid-soundfont-gm" in err and "none.sf2" in err
    assert not (tmp_path / "out").exists()
