"""Audio datasets: ``ingest_audio`` turns a folder or CSV of clips into spectrogram images and waveforms.

Sources (picked by :func:`source_format`):

- **folder**: every ``.wav .flac .ogg .mp3`` below it. The first-level subfolder is the class
  (``root/seven/a.wav``); when no subfolder holds clips the root's clips form an unlabelled set,
  and when some do, clips directly in the root are dropped (no class). Hidden files and folders
  are skipped; files with other suffixes are counted on the card as ``ignored_files``.
- **csv**: a column of paths (``path``, ``audio`` or ``file``; relative to the CSV's folder) and
  optionally a ``label`` column (``path_column=`` / ``label_column=`` name others).

Each clip, in this order:

1. read with soundfile (MP3 through libsndfile's mpg123), the channels averaged to mono, resampled
   to ``sample_rate`` with soxr; the file's own rate, channel count and format are tallied on the
   card. An empty, unreadable or truncated file, or one with no samples, is skipped and listed
   (``strict=True``: the first one is an error naming it, and nothing is written);
2. leading and trailing silence trimmed (``silence_db``, default 40): frames of ``N_FFT`` samples
   every ``HOP`` (centred, as :func:`librosa.effects.trim` frames them) whose RMS is more than
   ``silence_db`` dB below the clip's loudest frame are silence; the clip keeps from its first
   loud frame to the end of its last. A clip whose loudest frame is below -70 dBFS RMS is dropped
   as silent. ``silence_db=None`` (or 0) keeps clips whole;
3. cut or zero-padded to ``seconds``, centred (as much cut or padded at each end, the odd sample
   at the end);
4. byte-identical clips after 1-3 are dropped as duplicates (the first is kept).

Then each class is split train/val/test on its own (``round(n * fraction)`` clips of it to val and
test, in a seeded shuffle, train keeping at least one), so every split holds every class in
proportion.

On disk (the image files are those of :mod:`aigc.data.images`, so the image families train on the
spectrograms unchanged)::

    datasets/<name>/train.npz        images: uint8 (N, S, S, 1) log-mel images; labels: int64 (N,) class ids
    datasets/<name>/val.npz, test.npz
    datasets/<name>/audio_train.npz  waves: float16 (N, seconds * sample_rate); sample_rate: int64 ();
                                     labels: int64 (N,) (absent if unlabelled); same order as train.npz
    datasets/<name>/audio_val.npz, audio_test.npz
    datasets/<name>/card.json        counts, classes, durations, rates and channels found, drops, features
    datasets/<name>/preview.png      spectrograms of up to 64 train clips, grouped by class
    datasets/<name>/preview_<k>.wav  4 train clips as the models see them (k = 0..3)

The images follow :mod:`aigc.data.audio_features` (fixed dB scale, low bands at the bottom); the
card's ``features`` holds every parameter needed to decode an image back to a waveform. The
dataset's modality is "audio" (card and catalog); ``runs.TRAINED_AS`` lets the image families
train on it.

This module knows audio files, clips and the dataset layout. It knows nothing about models.
"""

from __future__ import annotations

import csv
import hashlib
import io
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from aigc.data import audio_features as af
from aigc.data.cards import MAX_DROPS_LISTED
from aigc.data.images import IMAGE_SUFFIXES, _classes, _Drop, _file_drop, _resolve, _write_preview
from aigc.data.sources import clean_header, decode_bytes
from aigc.data.split import SPLITS, check_fractions
from aigc.errors import AlreadyExists, InvalidInput
from aigc.workspace import Workspace, now, write_json_atomic

DEFAULT_PATH_COLUMNS: tuple[str, ...] = ("path", "audio", "file")
DEFAULT_LABEL_COLUMN = "label"
DEFAULT_SILENCE_DB = 40.0  # librosa.effects.trim uses 60; 40 also cuts espeak-ng's breath and room tone
SILENT_DBFS = -70.0  # a clip whose loudest frame is quieter than this (RMS, dB re full scale) is silent
N_PREVIEW_WAVS = 4

# The keyword options audio sources take; the first three exist only for audio, so passing any of
# them routes `aigc.ingest` here whatever the path.
AUDIO_ONLY_OPTIONS: tuple[str, ...] = ("sample_rate", "seconds", "silence_db")
AUDIO_OPTIONS: tuple[str, ...] = AUDIO_ONLY_OPTIONS + (
    "image_size", "strict", "seed", "path_column", "label_column",
)
_AUDIO_FLAGS = tuple(k for k in AUDIO_OPTIONS if k != "seed")  # those `aigc ingest` has a flag for
_COMMON_OPTIONS: tuple[str, ...] = ("split", "replace", "progress")
_CSV_SNIFF_ROWS = 50


@dataclass
class _Clips:
    """A source after reading, trimming and fitting; nothing deduplicated or split yet."""

    format: str
    waves: list[np.ndarray] = field(default_factory=list)  # float16 (samples,) each, fitted
    labels: list[str | None] = field(default_factory=list)
    files: list[str] = field(default_factory=list)  # the name each clip is listed by
    seconds_before: list[float] = field(default_factory=list)  # the file's duration
    seconds_trimmed: list[float] = field(default_factory=list)  # after trimming, before fitting
    rates: Counter = field(default_factory=Counter)  # the files' own sample rates
    channels: Counter = field(default_factory=Counter)
    formats: Counter = field(default_factory=Counter)
    drops: list[_Drop] = field(default_factory=list)
    n_read: int = 0
    label_source: str | None = None
    ignored_files: int = 0


# -- routing (used by aigc.ingest) ----------------------------------------------------------


def _walk(root: Path) -> tuple[list[tuple[Path, str]], list[str]]:
    """(audio file, path relative to root) sorted by path, and the relative paths of other files;
    hidden files and anything in a hidden folder are skipped."""
    found: list[tuple[Path, str]] = []
    other: list[str] = []
    for full in sorted(root.rglob("*")):
        rel = full.relative_to(root)
        if full.is_file() and not any(part.startswith(".") for part in rel.parts):
            if full.suffix.lower() in af.AUDIO_SUFFIXES:
                found.append((full, rel.as_posix()))
            else:
                other.append(rel.as_posix())
    return found, other


def _csv_rows(text: str, p: Path) -> tuple[list[str], list[list[str]]]:
    reader = csv.reader(io.StringIO(text, newline=""))
    try:
        header = [clean_header(h) for h in next(reader, [])]
        return header, [r for r in reader if r]
    except csv.Error as e:
        raise InvalidInput(f"{p}: malformed CSV near line {reader.line_num}: {e}") from None


def _sniff_audio_csv(p: Path) -> bool:
    """A .csv whose header has a path column and whose first rows' paths are mostly audio files."""
    try:
        with p.open(encoding="utf-8", errors="replace", newline="") as f:
            header, rows = _csv_rows(f.read(65536).lstrip("\ufeff"), p)  # the first rows are enough
    except (OSError, InvalidInput):
        return False
    col = next((header.index(c) for c in DEFAULT_PATH_COLUMNS if c in header), None)
    if col is None:
        return False
    paths = [r[col].strip().lower() for r in rows[:_CSV_SNIFF_ROWS] if col < len(r) and r[col].strip()]
    audio = sum(s.endswith(af.AUDIO_SUFFIXES) for s in paths)
    return audio > 0 and audio * 2 >= len(paths)


def source_format(path: str | Path) -> str | None:
    """'folder' or 'csv' when ``path`` holds audio clips (see the module docstring), else None.

    A folder counts when it holds audio files and more of them than images, so a folder of
    images with one stray .wav still goes to image ingestion.
    """
    p = Path(path).expanduser()
    if p.is_dir():
        found, other = _walk(p)
        images = sum(Path(o).suffix.lower() in IMAGE_SUFFIXES for o in other)
        return "folder" if found and len(found) > images else None
    if p.suffix.lower() == ".csv" and p.is_file() and _sniff_audio_csv(p):
        return "csv"
    return None


def is_audio_source(path: str | Path | None, options: Mapping[str, Any] | None = None) -> bool:
    """True when ``path`` holds audio clips or an audio-only option is set (not None)."""
    if any((options or {}).get(k) is not None for k in AUDIO_ONLY_OPTIONS):
        return True
    return path is not None and source_format(path) is not None


def audio_options(path: str | Path, options: Mapping[str, Any]) -> dict[str, Any]:
    """The options for :func:`ingest_audio`; options of other sources are refused by name."""
    if extra := [k for k in options if k not in AUDIO_OPTIONS + _COMMON_OPTIONS]:
        raise InvalidInput(f"{', '.join('--' + k.replace('_', '-') for k in extra)}: not for the audio source "
                           f"{path} (audio takes --{', --'.join(k.replace('_', '-') for k in _AUDIO_FLAGS)}): "
                           f"drop {'it' if len(extra) == 1 else 'them'}")
    # None is the default, except for silence_db, where it keeps clips whole
    return {k: v for k, v in options.items() if v is not None or k == "silence_db"}


# -- one clip -------------------------------------------------------------------------------


def trim_silence(wave: np.ndarray, top_db: float = DEFAULT_SILENCE_DB) -> tuple[int, int] | None:
    """(start, end) sample indices of ``wave`` without its leading and trailing silence, or None
    when the whole clip is silent (see the module docstring for the rule)."""
    padded = np.pad(wave.astype(np.float64), af.N_FFT // 2)
    if len(padded) < af.N_FFT:
        padded = np.pad(padded, (0, af.N_FFT - len(padded)))
    frames = np.lib.stride_tricks.sliding_window_view(padded, af.N_FFT)[:: af.HOP]  # centred frames
    db = 10 * np.log10(np.maximum(np.mean(frames**2, axis=1), 1e-20))  # RMS in dB re full scale
    peak = float(db.max())
    if peak < SILENT_DBFS:
        return None
    loud = np.flatnonzero(db > peak - top_db)
    return int(loud[0]) * af.HOP, min(len(wave), (int(loud[-1]) + 1) * af.HOP)


def fit_length(wave: np.ndarray, samples: int) -> np.ndarray:
    """Cut the centre of a longer clip, or zero-pad a shorter one equally at both ends."""
    n = len(wave)
    if n >= samples:
        start = (n - samples) // 2
        return wave[start:start + samples]
    before = (samples - n) // 2
    return np.pad(wave, (before, samples - n - before))


def _read_clips(items: Sequence[tuple[Path, str, str | None]], clips: _Clips, *, sample_rate: int, samples: int,
                silence_db: float | None, strict: bool, progress: Callable | None) -> None:
    for k, (path, rel, label) in enumerate(items):
        if progress is not None:
            progress("reading audio", k, len(items))
        try:
            wave, info = af.read_audio(path, sample_rate)
        except af.AudioFileError as e:
            if strict:
                raise InvalidInput(f"{e}; or leave out --strict to skip it") from None
            clips.drops.append(_Drop({"file": rel}, e.kind, str(e).replace(f"{path}: ", "", 1)))
            continue
        clips.rates[str(info["sample_rate"])] += 1
        clips.channels[str(info["channels"])] += 1
        clips.formats[info["format"]] += 1
        if silence_db is not None:
            span = trim_silence(wave, silence_db)
            if span is None:
                clips.drops.append(_file_drop(rel, "silent", f"silent: no frame above {SILENT_DBFS:g} dBFS RMS",
                                              strict, path))
                continue
            wave = wave[span[0]:span[1]]
        clips.seconds_before.append(info["seconds"])
        clips.seconds_trimmed.append(len(wave) / sample_rate)
        clips.waves.append(fit_length(wave, samples).astype(np.float16))  # as stored: half the memory
        clips.labels.append(label)
        clips.files.append(rel)


# -- sources --------------------------------------------------------------------------------


def _folder_items(root: Path, strict: bool, clips: _Clips) -> list[tuple[Path, str, str | None]]:
    found, other = _walk(root)
    if not found:
        raise InvalidInput(f"no audio files ({' '.join(af.AUDIO_SUFFIXES)}) in {root}: found {len(other)} other "
                           "file(s): pass a folder of clips, one subfolder per class")
    clips.n_read, clips.ignored_files = len(found), len(other)
    labelled = any("/" in rel for _, rel in found)
    clips.label_source = "first-level subfolder" if labelled else None
    items = []
    for full, rel in found:
        if labelled and "/" not in rel:
            clips.drops.append(_file_drop(rel, "no_class", "directly in the root folder, not in a class subfolder",
                                          strict, full))
        else:
            items.append((full, rel, rel.split("/", 1)[0] if labelled else None))
    return items


def _csv_items(p: Path, path_column: str | None, label_column: str | None, strict: bool,
               clips: _Clips) -> list[tuple[Path, str, str | None]]:
    header, rows = _csv_rows(decode_bytes(p.read_bytes(), p)[0], p)
    shown = ", ".join(repr(c) for c in header) or "none"
    path_column = path_column or next((c for c in DEFAULT_PATH_COLUMNS if c in header), None)
    for flag, col in (("--path-column", path_column), ("--label-column", label_column)):
        if col is not None and col not in header:
            raise InvalidInput(f"{p}: no column {col!r} (available: {shown}): pass one of them as {flag}")
    if path_column is None:
        raise InvalidInput(f"{p}: no audio path column among the columns {shown}: pass --path-column NAME")
    if label_column is None and DEFAULT_LABEL_COLUMN in header:
        label_column = DEFAULT_LABEL_COLUMN
    if not rows:
        raise InvalidInput(f"{p}: no rows under the header: list one audio path per row")
    clips.n_read = len(rows)
    clips.label_source = f"column {label_column!r}" if label_column else None
    pi, li = header.index(path_column), header.index(label_column) if label_column else None
    items = []
    for lineno, row in enumerate(rows, start=2):
        rel = row[pi].strip() if pi < len(row) else ""
        label = (row[li].strip() if li < len(row) else "") if li is not None else None
        if not rel:
            clips.drops.append(_file_drop(f"(row {lineno})", "empty_path", "empty path", strict, p))
        elif label == "":
            clips.drops.append(_file_drop(rel, "empty_label", f"empty {label_column!r}", strict, p.parent / rel))
        else:
            items.append((p.parent / rel, rel, label))
    return items


# -- split, preview, card -------------------------------------------------------------------


def stratified_split(ids: np.ndarray, fractions: tuple[float, float, float], seed: int) -> dict[str, np.ndarray]:
    """Indices per split (ascending), each class cut on its own: ``round(n * f)`` of its clips to val
    and to test from a seeded shuffle, train keeping at least one."""
    rng = np.random.default_rng(seed)
    out: dict[str, list[np.ndarray]] = {s: [] for s in SPLITS}
    for c in np.unique(ids):
        members = rng.permutation(np.flatnonzero(ids == c))
        n = len(members)
        n_val = min(round(n * fractions[1]), n - 1)
        n_test = min(round(n * fractions[2]), n - 1 - n_val)
        out["val"].append(members[:n_val])
        out["test"].append(members[n_val:n_val + n_test])
        out["train"].append(members[n_val + n_test:])
    return {s: np.sort(np.concatenate(v)).astype(np.int64) for s, v in out.items()}


def _spread(values: Sequence[float]) -> dict[str, float]:
    a = np.asarray(values, dtype=np.float64)
    return {"min": round(float(a.min()), 3), "median": round(float(np.median(a)), 3), "max": round(float(a.max()), 3)}


def _preview_picks(labels: np.ndarray | None, n: int) -> list[int]:
    """Up to N_PREVIEW_WAVS train clips, one class after another (the first clip of each)."""
    if labels is None:
        return list(range(min(n, N_PREVIEW_WAVS)))
    firsts = [int(np.flatnonzero(labels == c)[0]) for c in np.unique(labels)]
    rest = sorted(set(range(min(n, N_PREVIEW_WAVS + len(firsts)))) - set(firsts))
    return (firsts + rest)[:N_PREVIEW_WAVS]


def _check_options(sample_rate, seconds, image_size, silence_db, seed) -> int:
    """Validate the audio options; return the clip length in samples."""
    def whole(v) -> bool:
        return isinstance(v, (int, np.integer)) and not isinstance(v, bool)

    if not whole(sample_rate) or not 4000 <= sample_rate <= 192000:
        raise InvalidInput(f"invalid --sample-rate {sample_rate!r}: pass a rate in Hz from 4000 to 192000, e.g. 16000")
    if isinstance(seconds, bool) or not isinstance(seconds, (int, float)) or not 0.05 <= seconds <= 60:
        raise InvalidInput(f"invalid --seconds {seconds!r}: pass a clip length from 0.05 to 60 seconds, e.g. 1.0")
    if not whole(image_size) or not 8 <= image_size <= 1024:
        raise InvalidInput(f"invalid --image-size {image_size!r}: pass a whole number from 8 to 1024, e.g. 64")
    if silence_db is not None and (isinstance(silence_db, bool) or not isinstance(silence_db, (int, float))
                                   or not 0 <= silence_db <= 120):
        raise InvalidInput(f"invalid --silence-db {silence_db!r}: pass a threshold from 1 to 120 dB below the "
                           f"clip's peak, e.g. {DEFAULT_SILENCE_DB:g}, or 0 to keep clips whole")
    if not whole(seed):
        raise InvalidInput(f"invalid seed {seed!r}: pass a whole number, e.g. 0")
    samples = round(seconds * sample_rate)
    if samples <= af.N_FFT // 2:
        raise InvalidInput(f"--seconds {seconds:g} at {sample_rate} Hz gives {samples} samples, too few for one "
                           f"{af.N_FFT}-sample analysis window: pass a longer --seconds")
    return samples


def _nothing_left(source: Path, clips: _Clips) -> InvalidInput:
    detail = ", ".join(f"{k}: {n}" for k, n in Counter(d.kind for d in clips.drops).most_common())
    first = clips.drops[0] if clips.drops else None
    example = f" (e.g. {next(iter(first.where.values()))}: {first.reason})" if first else ""
    return InvalidInput(f"{source}: no clips left: read {clips.n_read}, dropped {len(clips.drops)} "
                        f"({detail}){example}: check the files")


def _dedupe(clips: _Clips) -> list[int]:
    """Indices of the first clip of each distinct waveform (as stored: float16); duplicates dropped."""
    seen: dict[bytes, int] = {}
    keep = []
    for i, w in enumerate(clips.waves):
        j = seen.setdefault(hashlib.sha256(w.tobytes()).digest(), i)
        if j == i:
            keep.append(i)
        else:
            clips.drops.append(_Drop({"file": clips.files[i]}, "duplicate", f"same samples as {clips.files[j]}"))
    return keep


# -- ingest ---------------------------------------------------------------------------------


def ingest_audio(
    ws: Workspace,
    path: str | Path,
    name: str,
    *,
    sample_rate: int = af.SAMPLE_RATE,
    seconds: float = 1.0,
    image_size: int = 64,
    strict: bool = False,
    silence_db: float | None = DEFAULT_SILENCE_DB,
    seed: int = 0,
    path_column: str | None = None,
    label_column: str | None = None,
    split: tuple[float, float, float] = (0.9, 0.05, 0.05),
    replace: bool = False,
    progress: Callable[[str, int, int], None] | None = None,
) -> dict[str, Any]:
    """Ingest a folder (one subfolder per class) or CSV of audio clips as dataset ``name``; return its card."""
    # Cheap checks first: a taken name or a bad option must not cost reading a whole folder.
    dest = ws.dataset_path(name)
    if not replace and (ws.has_dataset(name) or dest.exists()):
        raise AlreadyExists(f"dataset {name!r} already exists: pass --replace to overwrite it")
    fractions = check_fractions(split)
    samples = _check_options(sample_rate, seconds, image_size, silence_db, seed)
    silence_db = silence_db or None  # 0: no trimming
    source = _resolve(path)
    fmt = source_format(source) or ("csv" if source.suffix.lower() == ".csv" else None)
    if fmt is None:
        raise InvalidInput(f"{source} is not an audio source: pass a folder of {'/'.join(af.AUDIO_SUFFIXES)} clips "
                           "(one subfolder per class) or a .csv of clip paths and labels")
    if (path_column is not None or label_column is not None) and fmt != "csv":
        raise InvalidInput(f"--path-column/--label-column apply to a .csv of clip paths, not to the folder "
                           f"{source}: drop them")

    clips = _Clips(format=fmt)
    items = (_folder_items(source, strict, clips) if fmt == "folder"
             else _csv_items(source, path_column, label_column, strict, clips))
    _read_clips(items, clips, sample_rate=sample_rate, samples=samples, silence_db=silence_db, strict=strict,
                progress=progress)
    keep = _dedupe(clips)
    if not keep:
        raise _nothing_left(source, clips)

    waves = np.stack([clips.waves[i] for i in keep])  # float16 (N, samples), as stored
    # the images are made from these very samples, so an image and the wave beside it agree
    labelled = clips.label_source is not None
    classes, ids = _classes(np.array([clips.labels[i] for i in keep])) if labelled else ([], None)
    by_split = stratified_split(ids if labelled else np.zeros(len(keep), np.int64), fractions, seed)
    images = np.stack([af.mel_to_image(m, image_size) for m in _mels(waves, sample_rate)])[..., None]

    counts = {s: len(by_split[s]) for s in SPLITS}
    class_counts = {s: {classes[c]: int(n) for c, n in enumerate(np.bincount(ids[by_split[s]],
                                                                              minlength=len(classes)))}
                    for s in SPLITS} if labelled else {}
    train_labels = ids[by_split["train"]] if labelled else None
    picks = _preview_picks(train_labels, counts["train"])
    card = _card(name=name, source=source, clips=clips, keep=keep, counts=counts, classes=classes,
                 class_counts=class_counts, sample_rate=sample_rate, seconds=seconds, samples=samples,
                 image_size=image_size, silence_db=silence_db, seed=seed, fractions=fractions,
                 previews=[{"file": f"preview_{k}.wav", "clip": clips.files[keep[by_split["train"][i]]],
                            "label": classes[train_labels[i]] if labelled else None} for k, i in enumerate(picks)])
    with ws.staging("dataset") as staged:
        for s in SPLITS:
            idx = by_split[s]
            extra = {"labels": ids[idx]} if labelled else {}
            np.savez(staged / f"{s}.npz", images=images[idx], **extra)
            np.savez(staged / f"audio_{s}.npz", waves=waves[idx],
                     sample_rate=np.int64(sample_rate), **extra)
        _write_preview(staged / "preview.png", images[by_split["train"]], train_labels, len(classes))
        for k, i in enumerate(picks):
            af.write_wav(staged / f"preview_{k}.wav", waves[by_split["train"][i]].astype(np.float32), sample_rate)
        write_json_atomic(staged / "card.json", card)
        ws.publish(staged, dest, replace=replace)
    ws.register_dataset(name, "audio", str(source), card)
    return card


def _mels(waves: np.ndarray, sample_rate: int, chunk: int = 256):
    """dB mels of (N, samples) clips, ``chunk`` clips per STFT call (bounded memory)."""
    for start in range(0, len(waves), chunk):
        yield from af.log_mel(waves[start:start + chunk].astype(np.float32), sample_rate)


def _card(*, name: str, source: Path, clips: _Clips, keep: list[int], counts: dict[str, int], classes: list[str],
          class_counts: dict, sample_rate: int, seconds: float, samples: int, image_size: int,
          silence_db: float | None, seed: int, fractions: Sequence[float], previews: list[dict]) -> dict[str, Any]:
    drops = clips.drops
    kept_trimmed = [clips.seconds_trimmed[i] for i in keep]
    card: dict[str, Any] = {
        "name": name,
        "modality": "audio",
        "source": str(source),
        "format": clips.format,
        "label_source": clips.label_source,
        "counts": {"read": clips.n_read, "kept": len(keep), "dropped": len(drops), **counts},
        "classes": classes,
        "class_counts": class_counts,
        "image_size": [image_size, image_size],  # [H, W], as image datasets record it
        "channels": 1,
        "audio": {
            "sample_rate": sample_rate, "seconds": seconds, "samples": samples, "mono": "mean of the channels",
            "resampler": "soxr HQ", "dtype": "float16",
            "silence": (f"trimmed: frames more than {silence_db:g} dB below the clip's loudest frame (RMS over "
                        f"{af.N_FFT} samples every {af.HOP}); clips below {SILENT_DBFS:g} dBFS dropped as silent"
                        if silence_db is not None else "kept"),
            "silence_db": silence_db,
            "fit": "centre cut or zero padding at both ends",
            "clips_cut": int(sum(t > seconds for t in kept_trimmed)),
            "clips_padded": int(sum(t < seconds for t in kept_trimmed)),
        },
        "durations": {  # seconds, of the clips kept
            "before_trim": _spread([clips.seconds_before[i] for i in keep]),
            "after_trim": _spread(kept_trimmed),
        },
        "found": {  # what the files held before resampling and mixing down, over every file read
            "sample_rates": dict(clips.rates.most_common()),
            "channels": dict(clips.channels.most_common()),
            "formats": dict(clips.formats.most_common()),
            "resampled": sum(n for r, n in clips.rates.items() if int(r) != sample_rate),
            "mixed_to_mono": sum(n for c, n in clips.channels.items() if int(c) > 1),
        },
        "features": {**af.feature_params(sample_rate), "image_size": image_size,
                     "frames": 1 + samples // af.HOP, "samples": samples},
        "dropped": [{**d.where, "kind": d.kind, "reason": d.reason} for d in drops[:MAX_DROPS_LISTED]],
        "dropped_by_reason": dict(Counter(d.kind for d in drops).most_common()),
        "split": {"method": "stratified by class, seeded shuffle", "fractions": [float(f) for f in fractions],
                  "seed": seed},
        "empty_splits": [s for s in ("val", "test") if counts[s] == 0],
        "files": {**{s: f"{s}.npz" for s in SPLITS}, **{f"audio_{s}": f"audio_{s}.npz" for s in SPLITS},
                  "preview": "preview.png"},
        "previews": previews,
        "created_at": now(),
    }
    if clips.ignored_files:
        card["ignored_files"] = clips.ignored_files
    if len(drops) > MAX_DROPS_LISTED:
        card["dropped_not_listed"] = len(drops) - MAX_DROPS_LISTED
    return card
