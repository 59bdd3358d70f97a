"""Symbolic music from a text run trained on REMI tokens: samples decoded to MIDI, rendered to WAV,
drawn as piano rolls, every file carrying the AIGC implicit label.

A music run is a text run (``gpt``, ``lstm``) on a dataset of :mod:`aigc.data.music`: each REMI
token is one private-use character, and the run folder keeps the dataset's REMI tokenizer
(``spec["music"]["tokenizer"]``). :func:`generate_music` samples text from the run's
:class:`~aigc.generation.TextGenerator` and decodes it; :func:`write_music` writes, per sample::

    sample-000.mid   the notes (atomic); a marker meta event at tick 0 holds {"AIGC": {...}}
    sample-000.wav   fluidsynth with a General MIDI soundfont (aigc.data.music.render_wav),
                     labelled by aigc.provenance.audio.label_audio_file; skipped, with a one-line
                     reason naming the Debian package, when fluidsynth or the soundfont is missing
    sample-000.png   the piano roll: pitch (rows, a label at every C) against time (bar lines)

:func:`read_midi_label` reads a MIDI file's label back.

This module knows MIDI files, pictures and labels. It knows nothing about the catalog or the CLI.
"""

from __future__ import annotations

import io
import os
import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from aigc.data import music
from aigc.data.music import Decoded
from aigc.errors import InvalidInput
from aigc.provenance import annex

# A Bach chorale is about 1,500 REMI tokens and a run learns chunks of at most 512
# (aigc.data.music.DEFAULT_MAX_TOKENS): 512 new tokens is one whole chunk, some 10-20 bars, and a
# sample that ends earlier stops at its end-of-text.
MUSIC_MAX_NEW_TOKENS = 512
MUSIC_TEMPERATURE = 1.0  # the model's own distribution: lower makes chorales repeat one cadence
MUSIC_TOP_P = 0.95  # cuts only the rare tail (a stray octave leap), not the choice of harmony

# The piano roll: pixels per semitone row, per beat (shrunk for long samples), and the margins.
ROLL_ROW = 6
ROLL_BEAT = 24
ROLL_MAX_WIDTH = 1600
ROLL_MIN_WIDTH = 320
ROLL_MIN_SEMITONES = 24  # at least two octaves shown, so a narrow melody is not blown up
ROLL_LEFT, ROLL_TOP = 34, 18
_BLACK_KEYS = {1, 3, 6, 8, 10}
_NOTE_NAMES = ("C", "C#", "D", "Eb", "E", "F", "F#", "G", "Ab", "A", "Bb", "B")


def is_music_run(ws, name: str) -> bool:
    """Whether run ``name`` of workspace ``ws`` was trained on a music dataset (its ``run.json``
    has ``music``)."""
    from aigc.runs import read_spec

    return bool(read_spec(Path(ws.get_run(name)["path"])).get("music"))


def generate_music(gen, run_dir: str | Path, *, n: int = 4, cond: dict[str, str] | None = None,
                   max_new_tokens: int = MUSIC_MAX_NEW_TOKENS, temperature: float = MUSIC_TEMPERATURE,
                   top_p: float = MUSIC_TOP_P, seed: int | None = None, **sampling: Any) -> list[Decoded]:
    """``n`` samples of a music run's :class:`~aigc.generation.TextGenerator` ``gen``, decoded to
    notes with the REMI tokenizer kept in ``run_dir``.

    ``cond``: condition values (``{"key": "C major", "composer": "bach"}``); a value the run never
    saw is an :class:`InvalidInput` naming the closest ones. With an ``instrument`` condition the
    decoded track plays that General MIDI family's first program (``strings``: 40, a violin).
    ``sampling``: further options of ``gen.generate`` (``top_k``, ``repetition_penalty``,
    ``guidance``).
    """
    tokenizer = run_tokenizer(run_dir)
    program = _program_of(cond)
    texts = gen.generate("", n=n, cond=cond, max_new_tokens=max_new_tokens, temperature=temperature,
                         top_p=top_p, seed=seed, **sampling)
    return [music.decode_text(None, text, program=program, tokenizer=tokenizer) for text in texts]


def run_tokenizer(run_dir: str | Path):
    """The REMI tokenizer a music run keeps in its folder."""
    run_dir = Path(run_dir)
    if not (run_dir / music.TOKENIZER_FILE).is_file():
        raise InvalidInput(f"run folder {run_dir} has no {music.TOKENIZER_FILE}: it is not a run trained on a "
                           "music dataset (ingest MIDI files or music21:bach, then train gpt or lstm on it)")
    return music.load_tokenizer(run_dir)


def _program_of(cond: dict[str, str] | None) -> int:
    family = (cond or {}).get("instrument")
    return music.GM_FAMILIES.index(family) * 8 if family in music.GM_FAMILIES else 0


def write_music(decoded: Sequence[Decoded], out_dir: str | Path, *, prefix: str = "sample",
                label: dict[str, Any] | None = None, wav: bool = True, soundfont: str | Path | None = None,
                explicit: bool = False) -> dict[str, Any]:
    """Write each decoded sample as ``<prefix>-NNN.mid``, ``.wav`` (``wav=True``) and ``.png`` (its
    piano roll) in ``out_dir``; see the module doc.

    ``label``: the implicit AIGC label (GB 45438 Annex E); each file carries it with its own
    ProduceID (``<id>-NNN`` for the MIDI, ``-wav`` and ``-roll`` after it for the others).
    ``explicit``: the WAVs get the audible cue too. A sample with no notes still gets its MIDI and
    picture (counted in ``empty``); it has no WAV, as there is nothing to hear.

    Returns ``{"out": folder, "samples": [{"midi", "wav", "roll", "notes", "seconds", "tokens",
    "unknown"}], "empty": int, "wav_skipped": None or the one-line reason}``. Missing fluidsynth or
    soundfont does not fail: the MIDI files and pictures are written, and ``wav_skipped`` names
    the Debian package to install.
    """
    if not isinstance(prefix, str) or not prefix or any(c in prefix for c in "/\\\0"):
        raise InvalidInput(f"invalid prefix {prefix!r}: pass a file name stem without slashes, e.g. sample")
    out = Path(out_dir).expanduser()
    if out.exists() and not out.is_dir():
        raise InvalidInput(f"{out} is a file: pass a folder for the MIDI, WAV and picture files")
    out.mkdir(parents=True, exist_ok=True)
    produce = (label or {}).get("ProduceID") or "music"
    samples: list[dict[str, Any]] = []
    wav_skipped: str | None = None if wav else "not asked for"
    for i, d in enumerate(decoded):
        stem = f"{prefix}-{i:03d}"
        meta = None if label is None else {**label, "ProduceID": f"{produce}-{i:03d}"}
        notes = d.score.note_num()
        seconds = round(float(d.score.to("second").end()), 2) if notes else 0.0
        midi = music.write_midi(out / f"{stem}.mid", _labelled_score(d, meta))
        roll = _write_png(out / f"{stem}.png", piano_roll(d, f"{stem}: {notes} notes, {seconds:g} s"),
                          None if meta is None else {**meta, "ProduceID": f"{meta['ProduceID']}-roll"})
        wav_path = None
        if wav_skipped is None and notes:
            try:
                wav_path = music.render_wav(midi, out / f"{stem}.wav", soundfont)
            except InvalidInput as e:  # fluidsynth or the soundfont missing: every sample would fail alike
                wav_skipped = str(e)
            else:
                if meta is not None:
                    from aigc.provenance.audio import label_audio_file

                    label_audio_file(wav_path, {**meta, "ProduceID": f"{meta['ProduceID']}-wav"}, explicit=explicit)
        samples.append({"midi": midi, "wav": wav_path, "roll": roll, "notes": notes, "seconds": seconds,
                        "tokens": d.tokens, "unknown": d.unknown})
    return {"out": out, "samples": samples, "empty": sum(s["notes"] == 0 for s in samples),
            "wav_skipped": wav_skipped}


# -- the label inside a MIDI file ----------------------------------------------------------------


def _labelled_score(d: Decoded, label: dict[str, Any] | None):
    """The decoded score, with the label as a marker meta event at tick 0 when there is one."""
    if label is None:
        return d.score
    from symusic import TextMeta

    score = d.score.copy(True)
    score.markers.append(TextMeta(0, midi_label_text(label)))
    return score


def midi_label_text(label: dict[str, Any]) -> str:
    """The marker text that carries a label: ``{"AIGC": {...}}``, as a JPEG comment carries it."""
    return '{"%s":%s}' % (annex.FIELD, annex.dumps(label))


def read_midi_label(path: str | Path) -> dict[str, Any] | None:
    """The AIGC label of a MIDI file (its first marker or text event holding ``{"AIGC": {...}}``),
    or None when it has none. A file that is missing or not MIDI is an :class:`InvalidInput`."""
    from symusic import Score

    path = Path(path).expanduser()
    if not path.is_file():
        raise InvalidInput(f"no such MIDI file: {path}: check the path")
    try:
        score = Score(str(path))
    except Exception as e:  # noqa: BLE001 - symusic raises RuntimeError for most damage, others too
        detail = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise InvalidInput(f"{path} is not a readable MIDI file ({detail}): pass a .mid file") from None
    texts = [m.text for m in score.markers] + [m.text for t in score.tracks for m in t.lyrics]
    for text in texts:
        stripped = text.strip()
        if stripped.startswith("{") and stripped[1:].lstrip().startswith(f'"{annex.FIELD}"'):
            return annex.loads(text, f"{path.name} (MIDI marker)")
    return None


# -- pictures ------------------------------------------------------------------------------------


def piano_roll(d: Decoded, title: str = ""):
    """A PIL image of a sample's notes: one row per semitone (black keys shaded, each C named),
    time to the right with a line at each bar, each note a bar as long as it sounds."""
    from PIL import Image, ImageDraw

    score = d.score
    arrays = [t.notes.numpy() for t in score.tracks if not t.is_drum and t.note_num() > 0]
    if not arrays:
        image = Image.new("RGB", (360, 60), "white")
        ImageDraw.Draw(image).text((8, 8), f"{title}\n(no notes)" if title else "no notes", fill="black")
        return image
    pitch = np.concatenate([a["pitch"] for a in arrays]).astype(int)
    start = np.concatenate([a["time"] for a in arrays]).astype(float)
    dur = np.maximum(np.concatenate([a["duration"] for a in arrays]).astype(float), 1)
    tpq = max(1, int(score.ticks_per_quarter))
    beats = float((start + dur).max()) / tpq
    px_beat = max(2.0, min(ROLL_BEAT, (ROLL_MAX_WIDTH - ROLL_LEFT) / max(beats, 1)))
    lo, hi = int(pitch.min()) - 1, int(pitch.max()) + 1
    if hi - lo + 1 < ROLL_MIN_SEMITONES:
        extra = ROLL_MIN_SEMITONES - (hi - lo + 1)
        lo, hi = lo - extra // 2, hi + extra - extra // 2
    width = max(ROLL_MIN_WIDTH, ROLL_LEFT + int(np.ceil(beats * px_beat)) + 8)  # room for the title
    height = ROLL_TOP + (hi - lo + 1) * ROLL_ROW + 4
    image = Image.new("RGB", (width, height), "white")
    draw = ImageDraw.Draw(image)

    def row_y(p: int) -> int:  # top edge of pitch p's row; high pitches at the top
        return ROLL_TOP + (hi - p) * ROLL_ROW

    for p in range(lo, hi + 1):
        if p % 12 in _BLACK_KEYS:
            draw.rectangle([ROLL_LEFT, row_y(p), width - 1, row_y(p) + ROLL_ROW - 1], fill=(236, 236, 240))
        if p % 12 == 0:
            draw.line([ROLL_LEFT, row_y(p) + ROLL_ROW - 1, width - 1, row_y(p) + ROLL_ROW - 1], fill=(180, 180, 190))
            draw.text((2, row_y(p) - 2), f"{_NOTE_NAMES[0]}{p // 12 - 1}", fill=(60, 60, 60))
    sig = score.time_signatures[0] if len(score.time_signatures) else None
    bar = (sig.numerator * 4 / sig.denominator) if sig is not None else 4.0  # quarter notes per bar
    b = 0.0
    while b <= beats:
        x = ROLL_LEFT + round(b * px_beat)
        draw.line([x, ROLL_TOP, x, height - 4], fill=(200, 200, 210))
        b += bar
    for p, s, t in zip(pitch, start, dur):
        x0 = ROLL_LEFT + s / tpq * px_beat
        x1 = max(x0 + 1, ROLL_LEFT + (s + t) / tpq * px_beat - 1)
        y0 = row_y(int(p))
        draw.rectangle([x0, y0, x1, y0 + ROLL_ROW - 2], fill=(40, 90, 170), outline=(20, 45, 100))
    if title:
        draw.text((ROLL_LEFT, 2), title, fill="black")
    return image


def _write_png(path: Path, image, label: dict[str, Any] | None) -> Path:
    """A PNG written atomically; labelled (iTXt + XMP) when ``label`` is given."""
    if label is not None:
        from aigc.provenance.labels import save_image

        return save_image(image, path, label)
    buf = io.BytesIO()
    image.save(buf, format="PNG")
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex[:8]}.tmp")
    try:
        tmp.write_bytes(buf.getvalue())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path


def summary_line(written: dict[str, Any]) -> str:
    """One line saying what :func:`write_music` wrote."""
    samples = written["samples"]
    wavs = sum(s["wav"] is not None for s in samples)
    notes = ", ".join(str(s["notes"]) for s in samples[:12]) + (", ..." if len(samples) > 12 else "")
    return (f"wrote {len(samples)} MIDI files, {wavs} WAVs and {len(samples)} piano rolls to {written['out']} "
            f"(notes per sample: {notes}; {written['empty']} empty)")

