"""Make an instrument-labelled set of clips of the Bach chorales with fluidsynth, offline and deterministic.

    python scripts/make_instrument_clips.py OUT_DIR [--per-instrument 200] [--seconds 1.0] [--seed 0]
        [--jobs 2] [--max-transpose 3] [--midi-dir DIR] [--soundfont SF2]
    aigc ingest OUT_DIR --name instruments --seconds 1.0

The music is music21's Bach chorales (its bundled corpus; nothing downloads), exported to MIDI once
into the workspace's cache (``$AIGC_HOME/cache/music21/bach``, the cache ``aigc ingest music21:bach``
fills and reads; the first export parses each chorale with music21, about 0.2 s a piece, so a
minute or so), or every MIDI file below ``--midi-dir``.

Each clip is an excerpt of ``--seconds`` starting at a bar line (the score's downbeats, from its
time signatures) where a note sounds; the piece, the bar and a transposition of
``-max_transpose .. +max_transpose`` semitones are drawn from ``--seed``, and every voice of the
excerpt is played by the clip's instrument of :data:`INSTRUMENTS` (General MIDI programs: piano 0,
church organ 19, nylon guitar 24, violin 40, trumpet 56, flute 73). No two clips of an instrument
share piece, bar and transposition. The excerpt is rendered by fluidsynth with Debian's General MIDI
soundfont (``fluid-soundfont-gm``) at 16 kHz, mixed to mono, cut or zero-padded at the end to
``--seconds``, and scaled to a peak of -3 dBFS (fluidsynth's default gain leaves a chorale near
-20 dBFS, and loudness should not tell the instruments apart). A clip whose loudest frame is below
-70 dBFS RMS (what ``aigc ingest`` drops as silent) is skipped and counted.

Writes ``OUT_DIR/<instrument>/<id>.wav`` (16 kHz mono 16-bit) and ``OUT_DIR/manifest.csv`` (path,
label, piece, start_bar, transpose, program), which ``aigc ingest`` also takes. Each file is written
under a temporary name and renamed; the same seed writes the same bytes. The default 200 per
instrument makes 1,200 clips. Measured with 2 jobs on 2 cores busy with a benchmark (nice 19),
chorales cached: 120 clips (20 per instrument) in 26 s wall, 23 s of CPU, two thirds of it
fluidsynth loading the 148 MB soundfont again for each clip; so about 4 minutes for 1,200.
"""

from __future__ import annotations

import argparse
import csv
import os
import random
import re
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from aigc.data import audio_features as af
from aigc.data import music
from aigc.data.audio import trim_silence
from aigc.errors import InvalidInput

INSTRUMENTS = {  # label -> General MIDI program (0-based): timbres far apart
    "piano": 0,  # Acoustic Grand Piano
    "organ": 19,  # Church Organ
    "guitar": 24,  # Acoustic Guitar (nylon)
    "violin": 40,
    "trumpet": 56,
    "flute": 73,
}
SAMPLE_RATE = 16000
DEFAULT_PER_INSTRUMENT = 200
PEAK = 10 ** (-3 / 20)  # -3 dBFS
TAIL_S = 0.25  # notes run this far past the clip's end, so their release is not heard inside it
TICKS_PER_SECOND = 960  # the excerpt's MIDI: 480 ticks per quarter at 120 bpm
MANIFEST_COLUMNS = ["path", "label", "piece", "start_bar", "transpose", "program"]


@dataclass
class Piece:
    id: str  # the corpus name (bach/bwv180.7) or the file's path below --midi-dir
    score: object  # symusic Score in seconds
    bars: list[tuple[int, float]]  # (bar number from 0, start in seconds) of the bars an excerpt may start at


# -- sources --------------------------------------------------------------------------------------


def corpus_files() -> list[tuple[Path, str]]:
    """(cached MIDI file, corpus path) of music21's Bach chorales, exported into the workspace cache once."""
    import aigc

    began = time.monotonic()

    def progress(stage: str, done: int, total: int) -> None:  # shown only while exporting: cached is instant
        if (done % 25 == 0 or done == total) and time.monotonic() - began > 5:
            print(f"exporting music21's chorales to MIDI (once; then cached): {done}/{total}",
                  file=sys.stderr)

    found = music._list_music21(aigc.open_workspace(), "bach", None, progress)
    return [(path, source) for path, source, _ in found.items]


def folder_files(root: Path) -> list[tuple[Path, str]]:
    """(MIDI file, path below root) of every visible .mid/.midi below root, sorted."""
    if not root.is_dir():
        raise InvalidInput(f"--midi-dir {root} is not a folder: pass a folder of MIDI files")
    files = [(p, p.relative_to(root).as_posix()) for p in sorted(root.rglob("*"))
             if p.is_file() and p.suffix.lower() in music.MIDI_SUFFIXES
             and not any(part.startswith(".") for part in p.relative_to(root).parts)]
    if not files:
        raise InvalidInput(f"no MIDI files (.mid, .midi) below --midi-dir {root}: "
                           "pass a folder that holds some")
    return files


def load_pieces(files: list[tuple[Path, str]], seconds: float) -> tuple[list[Piece], list[str]]:
    """The pieces with at least one bar an excerpt may start at (a note sounds at its downbeat and the
    piece lasts ``seconds`` past it), and the ids of the files left out, with why."""
    from symusic import Score

    pieces, left_out = [], []
    for path, pid in files:
        try:
            score = Score(str(path)).to("second")
        except Exception as e:  # noqa: BLE001 - symusic raises RuntimeError for most damage, others too
            detail = str(e).splitlines()[0] if str(e) else type(e).__name__
            left_out.append(f"{pid} (not a readable MIDI file: {detail})")
            continue
        notes = [t.notes.numpy() for t in score.tracks if not t.is_drum and t.note_num() > 0]
        if not notes:
            left_out.append(f"{pid} (no notes)")
            continue
        start = np.concatenate([n["time"] for n in notes])
        end = start + np.concatenate([n["duration"] for n in notes])
        last = float(end.max())
        bars = [(b, float(t)) for b, t in enumerate(score.get_downbeats())
                if t + seconds <= last and np.any((start <= t) & (end > t))]
        if bars:
            pieces.append(Piece(pid, score, bars))
        else:
            left_out.append(f"{pid} (no bar with a note at its downbeat and {seconds:g} s after it)")
    return pieces, left_out


# -- plan, excerpt, render ------------------------------------------------------------------------


def _slug(piece_id: str) -> str:
    """bach/bwv180.7 -> bach-bwv180-7, set1/a.mid -> set1-a: a piece's id as part of a file name."""
    if piece_id.lower().endswith(music.MIDI_SUFFIXES):
        piece_id = piece_id[: -len(Path(piece_id).suffix)]
    return re.sub(r"[^A-Za-z0-9]+", "-", piece_id).strip("-") or "piece"


def plan(pieces: list[Piece], per_instrument: int, seed: int, max_transpose: int) -> list[dict]:
    """Every clip to make, in a fixed order: instrument, piece, bar, transposition and file name."""
    rng = random.Random(seed)
    combos = sum(len(p.bars) for p in pieces) * (2 * max_transpose + 1)
    if per_instrument > combos:
        raise InvalidInput(f"--per-instrument {per_instrument} is more than the {combos} distinct excerpts "
                           f"(bar x transposition) of these {len(pieces)} piece(s): pass at most {combos}, "
                           "or a larger --max-transpose")
    clips = []
    for label, program in INSTRUMENTS.items():
        seen: set[tuple[int, int, int]] = set()
        while len(seen) < per_instrument:
            k = rng.randrange(len(pieces))
            b = rng.randrange(len(pieces[k].bars))
            transpose = rng.randint(-max_transpose, max_transpose)
            if (k, b, transpose) in seen:
                continue
            seen.add((k, b, transpose))
            bar, start = pieces[k].bars[b]
            name = f"{len(seen) - 1:04d}-{_slug(pieces[k].id)}-b{bar}-t{transpose:+d}.wav"
            clips.append({"path": f"{label}/{name}", "label": label, "piece": pieces[k].id, "start_bar": bar,
                          "transpose": transpose, "program": program, "index": k, "start": start})
    return clips


def excerpt(score, start: float, seconds: float, program: int, transpose: int):
    """The notes of a seconds-score sounding in [start, start + seconds), shifted to 0 and transposed,
    every melodic track played by ``program``: a new tick Score at 120 bpm (notes cut TAIL_S past the end)."""
    from symusic import Note, Score, Tempo, Track

    out = Score(TICKS_PER_SECOND // 2)
    out.tempos.append(Tempo(0, 120.0))
    for track in score.tracks:
        if track.is_drum or track.note_num() == 0:
            continue
        new = Track(track.name, program, False)
        for n in track.notes:
            begin, end = max(n.time, start), min(n.time + n.duration, start + seconds + TAIL_S)
            pitch = n.pitch + transpose
            if n.time < start + seconds and end > begin and 0 <= pitch <= 127:
                t0 = round((begin - start) * TICKS_PER_SECOND)
                t1 = round((end - start) * TICKS_PER_SECOND)
                new.notes.append(Note(t0, max(1, t1 - t0), pitch, n.velocity))
        if new.note_num():
            out.tracks.append(new)
    return out


def render_clip(score, out_wav: Path, seconds: float, soundfont: Path, workdir: Path) -> bool:
    """Render one excerpt to ``out_wav`` (16 kHz mono, ``seconds`` long, peak -3 dBFS); False when silent."""
    stem = f"{out_wav.parent.name}-{out_wav.stem}"  # unique across instruments: clips render at once
    midi, wav = workdir / f"{stem}.mid", workdir / f"{stem}.wav"
    try:
        music.write_midi(midi, score)
        music.render_wav(midi, wav, soundfont, SAMPLE_RATE)
        wave, _ = af.read_audio(wav, SAMPLE_RATE)  # fluidsynth writes stereo: the mean of the channels
    finally:
        midi.unlink(missing_ok=True)
        wav.unlink(missing_ok=True)
    samples = round(seconds * SAMPLE_RATE)
    wave = np.pad(wave[:samples], (0, max(0, samples - len(wave))))  # the excerpt starts at the bar line
    if trim_silence(wave) is None:
        return False
    af.write_wav(out_wav, wave * (PEAK / float(np.abs(wave).max())), SAMPLE_RATE)  # temp name, then renamed
    return True


def check_renderer(soundfont: Path, workdir: Path) -> None:
    """Render one note, so a missing fluidsynth or soundfont stops the run before any work
    (render_wav's error names the Debian package)."""
    from symusic import Note, Score, Track

    score = Score(480)
    score.tracks.append(Track("check", 0, False))
    score.tracks[0].notes.append(Note(0, 240, 60, 90))
    midi = music.write_midi(workdir / "check.mid", score)
    music.render_wav(midi, workdir / "check.wav", soundfont, SAMPLE_RATE)


# -- the whole set --------------------------------------------------------------------------------


def make(out: Path, per_instrument: int = DEFAULT_PER_INSTRUMENT, seconds: float = 1.0, seed: int = 0,
         jobs: int = 2, max_transpose: int = 3, midi_dir: Path | None = None,
         soundfont: Path = music.DEFAULT_SOUNDFONT) -> dict:
    """Render the planned clips into ``out``; returns {"clips": the rows manifest.csv lists,
    "silent": clips skipped as silent, "left_out": MIDI files not used, with why, "others": .wav files
    in the instrument folders that this run did not make}."""
    with tempfile.TemporaryDirectory(prefix="instrument-clips-") as tmp:
        workdir = Path(tmp)
        check_renderer(soundfont, workdir)
        files = folder_files(midi_dir) if midi_dir is not None else corpus_files()
        pieces, left_out = load_pieces(files, seconds)
        if not pieces:
            raise InvalidInput(f"none of the {len(files)} MIDI file(s) has a bar with notes and "
                               f"{seconds:g} s after it ({'; '.join(left_out[:3])}): "
                               "pass longer pieces or a smaller --seconds")
        clips = plan(pieces, per_instrument, seed, max_transpose)
        for label in INSTRUMENTS:
            (out / label).mkdir(parents=True, exist_ok=True)

        def one(clip: dict) -> bool:
            piece = pieces[clip["index"]]
            score = excerpt(piece.score, clip["start"], seconds, clip["program"], clip["transpose"])
            if score.note_num() == 0:  # every note transposed out of MIDI's range: nothing to hear
                return False
            return render_clip(score, out / clip["path"], seconds, soundfont, workdir)

        with ThreadPoolExecutor(max_workers=max(1, jobs)) as pool:  # fluidsynth runs as a child process
            written = list(pool.map(one, clips))
    kept = [c for c, ok in zip(clips, written) if ok]
    tmp_manifest = out / ".manifest.csv.tmp"
    with tmp_manifest.open("w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=MANIFEST_COLUMNS, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(kept)
    os.replace(tmp_manifest, out / "manifest.csv")
    ours = {c["path"] for c in kept}
    others = sum(1 for label in INSTRUMENTS for p in (out / label).glob("*.wav")
                 if f"{label}/{p.name}" not in ours)
    return {"clips": kept, "silent": len(clips) - len(kept), "left_out": left_out, "others": others}


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("out_dir", type=Path, help="where to write <instrument>/<id>.wav and manifest.csv")
    ap.add_argument("--per-instrument", type=int, default=DEFAULT_PER_INSTRUMENT,
                    help=f"clips per instrument (default {DEFAULT_PER_INSTRUMENT})")
    ap.add_argument("--seconds", type=float, default=1.0, help="clip length (default 1.0)")
    ap.add_argument("--seed", type=int, default=0,
                    help="draws the pieces, bars and transpositions (default 0)")
    ap.add_argument("--jobs", type=int, default=2, help="fluidsynth processes at once (default 2)")
    ap.add_argument("--max-transpose", type=int, default=3,
                    help="transpose by -N..+N semitones, drawn per clip (default 3; 0 keeps the key)")
    ap.add_argument("--midi-dir", type=Path, default=None,
                    help="MIDI files to take excerpts of (default: music21's Bach chorales)")
    ap.add_argument("--soundfont", type=Path, default=music.DEFAULT_SOUNDFONT,
                    help=f"General MIDI .sf2 (default {music.DEFAULT_SOUNDFONT}, "
                         "Debian's fluid-soundfont-gm)")
    args = ap.parse_args(argv)
    if args.per_instrument < 1:
        ap.error(f"--per-instrument must be at least 1, got {args.per_instrument}")
    if not 0.1 <= args.seconds <= 30:
        ap.error(f"--seconds must be from 0.1 to 30, got {args.seconds:g}")
    if args.jobs < 1:
        ap.error(f"--jobs must be at least 1, got {args.jobs}")
    if not 0 <= args.max_transpose <= 12:
        ap.error(f"--max-transpose must be from 0 to 12 semitones, got {args.max_transpose}")
    began = time.monotonic()
    try:
        made = make(args.out_dir, args.per_instrument, args.seconds, args.seed, args.jobs, args.max_transpose,
                    args.midi_dir, args.soundfont)
    except InvalidInput as e:
        print(f"error: {e}", file=sys.stderr)
        raise SystemExit(2) from None
    if made["left_out"]:
        print(f"note: {len(made['left_out'])} MIDI file(s) left out: {'; '.join(made['left_out'][:3])}",
              file=sys.stderr)
    if made["others"]:
        print(f"note: {made['others']} other .wav file(s) in {args.out_dir}'s instrument folders were "
              f"not made by this run: ingest {args.out_dir / 'manifest.csv'} to leave them out",
              file=sys.stderr)
    print(f"{len(made['clips'])} clips in {args.out_dir} ({args.per_instrument} per instrument planned, "
          f"{made['silent']} silent skipped; manifest.csv lists them) in {time.monotonic() - began:.1f} s")


if __name__ == "__main__":
    main()
