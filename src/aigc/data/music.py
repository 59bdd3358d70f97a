"""Symbolic music as a text dataset: MIDI files, folders of them, or music21's bundled corpus,
tokenized with miditok's REMI and stored so that the text families train on it unchanged.

Sources (:func:`is_music_source` tells them apart; :func:`ingest_music` reads them):

- **a MIDI file** (``.mid``/``.midi``): one piece, conditions ``key`` and ``instrument``.
- **a folder**: every MIDI file below it. When a first-level subfolder holds MIDI files, the
  subfolder names a value of ``folder_condition`` (default ``composer``: ``root/bach/a.mid``,
  ``root/bach/set1/b.mid`` are both ``bach``), and files directly in the root are dropped (no
  value), as image ingestion does with classes. Hidden files and other suffixes are ignored
  (counted on the card).
- **music21:<name>**: music21's corpus, which ships inside its wheel (nothing downloads).
  ``music21:bach`` is the 371 Bach chorales in Riemenschneider's numbering
  (``music21.corpus.chorales.Iterator``; 350 distinct files, as some chorales are listed twice;
  ``corpus.getComposer('bach')`` would add 20 Roman-numeral analyses, which are not music);
  any other name is ``corpus.getComposer(name)`` less its ``.rntxt`` analyses. Each piece is
  parsed and exported to MIDI once, into ``<workspace>/cache/music21/<name>/`` (MIDI files
  and ``index.json``, which also remembers the pieces that failed, so they are not retried);
  later ingests read the cache. ``limit=N`` takes the first N distinct pieces.

Every piece is made one track: drum tracks are dropped (their note count goes on the card) and
the other tracks are merged (``miditok.utils.merge_tracks``). A piece with no notes left, or a
file that is not a MIDI file, is dropped and listed on the card; ``strict=True`` makes it an
error naming the file.

Conditions, per piece (every chunk of a piece carries its piece's):

- ``composer`` (the ``folder_condition`` column): the first-level subfolder, or the corpus name;
  present only when the source gives one.
- ``key``: music21's key analysis (``AardenEssen``, what ``Stream.analyze('key')`` runs) on the
  piece's duration-weighted pitch-class histogram, e.g. ``F# minor``, ``Bb major`` (flats as
  ``b``). The same for a corpus piece and a MIDI file, since both are read from MIDI.
- ``instrument``: the General MIDI family of the program with the most notes (``piano``,
  ``organ``, ``strings``...; music21 writes its chorales as program 0, ``piano``).

Tokens: :data:`REMI_SETTINGS` below, fixed for every dataset so that one tokenizer decodes any of
them; it is saved as miditok's JSON in the dataset folder (:data:`TOKENIZER_FILE`), which is what
:func:`decode_text` reads. Token id ``i`` is stored as the private-use character
``chr(0xE000 + i)``, so the text families' char tokenizer sees exactly one token per REMI token.
A piece longer than ``max_tokens`` is cut into chunks of at most ``max_tokens`` tokens at bar
boundaries (each chunk starts with a ``Bar`` token and so decodes on its own); a single bar
longer than that is cut before a ``Position`` token (a time step), or at ``max_tokens`` when a
time step alone is longer.

Splits are by piece, never by chunk: a piece goes to train/val/test by the hash of its whole token
text (:func:`aigc.data.split.hash_split`, as text records do), so identical pieces land together
and no chunk of a val piece is trained on. A split with a fraction above 0 that the hashes leave
empty takes the train piece whose hash lies nearest its range (only small sets meet this), so
three pieces or more always give a val piece.

On disk (the layout of :mod:`aigc.data.ingest`, registered in the catalog as ``text``, so the
text families train on it; the card says ``modality: music``)::

    datasets/<name>/train.jsonl        one {"text": chunk, "cond": {...}} per chunk
    datasets/<name>/val.jsonl
    datasets/<name>/test.jsonl
    datasets/<name>/tokenizer_remi.json   miditok's REMI, as saved by ``tokenizer.save``
    datasets/<name>/card.json          pieces, tokens, conditions, drops, tokenizer, the unigram
                                       and bigram baselines (nats per REMI token on val)

This module knows MIDI, REMI and the text dataset layout. It knows nothing about models. music21,
miditok and symusic load on first use.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import subprocess
import uuid
from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from aigc.data.cards import build_card
from aigc.data.clean import Drop
from aigc.data.conditions import DEFAULT_MIN_COND_COUNT, check_min_count
from aigc.data.ingest import write_split
from aigc.data.sources import RawSource
from aigc.data.split import SPLITS, check_fractions, hash_split, hash_unit
from aigc.errors import AlreadyExists, InvalidInput
from aigc.workspace import Workspace, now, write_json_atomic

if TYPE_CHECKING:
    from miditok import REMI
    from symusic import Score

MIDI_SUFFIXES = (".mid", ".midi")
MUSIC21_PREFIX = "music21:"
TOKENIZER_FILE = "tokenizer_remi.json"
CACHE_INDEX = "index.json"
# Token id i <-> chr(PUA_BASE + i). The Basic Multilingual Plane's private-use area runs to
# U+F8FF: 6,400 ids, far above REMI's vocabulary under REMI_SETTINGS (322).
PUA_BASE = 0xE000
PUA_SIZE = 0xF8FF - PUA_BASE + 1
# A chorale is about 1,500 tokens; 512 (the gpt ``base`` block) cuts it into three chunks, each of
# which starts with its conditions, so more training windows see them.
DEFAULT_MAX_TOKENS = 512
MIN_MAX_TOKENS = 16
DEFAULT_SOUNDFONT = Path("/usr/share/sounds/sf2/FluidR3_GM.sf2")  # Debian: fluid-soundfont-gm
RENDER_TIMEOUT_S = 600
MAX_POLYPHONY = 8  # music_stats: the last bin counts this many sounding notes or more

# The one REMI configuration (miditok 3.1 TokenizerConfig arguments; the rest keep miditok's
# defaults, which the saved JSON records).
REMI_SETTINGS: dict[str, Any] = {
    "pitch_range": (21, 109),  # A0..C8, the piano's 88 keys (109 excluded); notes outside are dropped
    # Position resolution: 8 steps per beat over a bar's first 4 beats and durations up to 4 beats,
    # 4 per beat for durations of 4 to 12 beats (longer ones are clipped to 12).
    "beat_res": {(0, 4): 8, (4, 12): 4},
    # No velocity tokens: music21 writes its corpus at one velocity, and a velocity token per
    # note would make a third of the tokens while carrying nothing. Decoded notes play at 100.
    "use_velocities": False,
    "use_time_signatures": True,  # one TimeSig token after every Bar: a chunk decodes in its metre
    "time_signature_range": {8: [3, 6, 9, 12], 4: [1, 2, 3, 4, 5, 6], 2: [1, 2, 3, 4]},
    "use_tempos": False,  # decoded at miditok's 120 bpm
    "use_programs": False,  # one merged track per piece; its program is the instrument condition
    "use_chords": False,
    "use_rests": False,
    "special_tokens": ["PAD"],  # the text families add their own end-of-text; PAD is id 0
}

# General MIDI program families, 8 programs each (program // 8).
GM_FAMILIES = (
    "piano", "chromatic percussion", "organ", "guitar", "bass", "strings", "ensemble", "brass",
    "reed", "pipe", "synth lead", "synth pad", "synth effects", "ethnic", "percussive", "sound effects",
)

# Options only music takes: any of them set makes a source music (``strict`` and ``limit`` are shared).
MUSIC_ONLY_OPTIONS = ("music21", "max_tokens", "folder_condition")


# -- routing (used by aigc.ingest) ----------------------------------------------------------


def is_music_source(path: str | Path | None, options: Mapping[str, Any] | None = None) -> bool:
    """True for ``music21:<name>``, a MIDI file, a folder holding one, or a music-only option set
    (:data:`MUSIC_ONLY_OPTIONS`, e.g. ``music21="bach"``).

    A folder counts when any file below it ends in ``.mid``/``.midi``: check this before the image
    sources, which claim every folder.
    """
    if any((options or {}).get(k) not in (None, False) for k in MUSIC_ONLY_OPTIONS):
        return True
    if path is None:
        return False
    if str(path).startswith(MUSIC21_PREFIX):
        return True
    p = Path(path).expanduser()
    if p.is_file():
        return p.suffix.lower() in MIDI_SUFFIXES
    if p.is_dir():
        return any(f.suffix.lower() in MIDI_SUFFIXES for f in p.rglob("*") if not f.name.startswith("."))
    return False


# -- tokenizer ------------------------------------------------------------------------------


def new_tokenizer() -> REMI:
    """miditok's REMI under :data:`REMI_SETTINGS`."""
    from miditok import REMI, TokenizerConfig

    return REMI(TokenizerConfig(**REMI_SETTINGS))


def load_tokenizer(dataset_dir: str | Path) -> REMI:
    """The REMI tokenizer saved in a music dataset's folder."""
    from miditok import REMI

    path = Path(dataset_dir) / TOKENIZER_FILE
    if not path.is_file():
        raise InvalidInput(
            f"{path} is missing: {dataset_dir} is not a music dataset, or it is incomplete: "
            "ingest the MIDI source again with --replace"
        )
    return REMI(params=path)


def ids_to_text(ids: Iterable[int]) -> str:
    """REMI token ids -> one private-use character each."""
    return "".join(chr(PUA_BASE + int(i)) for i in ids)


def text_to_ids(text: str, vocab_size: int) -> tuple[list[int], int]:
    """(token ids, how many characters were not a token of a ``vocab_size`` vocabulary and were dropped)."""
    ids = [ord(c) - PUA_BASE for c in text]
    kept = [i for i in ids if 0 <= i < vocab_size]
    return kept, len(ids) - len(kept)


# -- pieces ---------------------------------------------------------------------------------


@dataclass
class _Piece:
    id: str  # relative path of the file, or the corpus name of the piece
    ids: list[int]  # REMI token ids of the whole piece
    cond: dict[str, str]
    text: str = ""  # ids as private-use characters


@dataclass
class _Found:
    """A source listed: (MIDI file, shown id, folder value or None) items, and what fell out already."""

    format: str  # midi | folder | music21
    items: list[tuple[Path, str, str | None]]
    drops: list[tuple[str, str, str]] = field(default_factory=list)  # (id, kind, reason)
    n_read: int = 0
    ignored_files: int = 0
    corpus: dict[str, Any] | None = None  # music21: name, cache folder, listed, distinct, failed


def _gm_family(program: int) -> str:
    return GM_FAMILIES[max(0, min(127, int(program))) // 8]


def _one_track(score: Score) -> tuple[Score | None, int, int]:
    """(the melodic tracks merged into one, or None when no note is left; main program;
    drum notes dropped)."""
    from miditok.utils import merge_tracks

    score = score.copy()
    drums = sum(t.note_num() for t in score.tracks if t.is_drum)
    melodic = [t for t in score.tracks if not t.is_drum and t.note_num() > 0]
    if not melodic:
        return None, 0, drums
    by_program: Counter[int] = Counter()
    for t in melodic:
        by_program[int(t.program)] += t.note_num()
    main = by_program.most_common(1)[0][0]
    score.tracks = melodic
    merge_tracks(score, effects=False)
    score.tracks[0].program = main
    return score, main, drums


def key_of(score: Score) -> str:
    """music21's key analysis (AardenEssen, as ``analyze('key')``) of a score's notes: ``C major``,
    ``F# minor``.

    The analysis sums each pitch class's duration in quarter notes, so one note per pitch class
    holding its total is enough for it (a stream of every note would give the same histogram).
    """
    from music21 import analysis, note, stream

    tpq = max(1, int(score.ticks_per_quarter))
    totals = np.zeros(12)
    for t in score.tracks:
        if t.is_drum or t.note_num() == 0:
            continue
        arr = t.notes.numpy()
        np.add.at(totals, arr["pitch"] % 12, np.maximum(arr["duration"], 1) / tpq)
    s = stream.Stream()
    for pc in np.flatnonzero(totals):
        s.append(note.Note(60 + int(pc), quarterLength=round(float(totals[pc]), 3)))
    k = analysis.discrete.AardenEssen().getSolution(s)
    return f"{k.tonic.name.replace('-', 'b')} {k.mode}"


class _Unusable(Exception):
    """A MIDI file that cannot become a piece: ``kind`` goes on the card's drops, the message is
    the reason."""

    def __init__(self, kind: str, reason: str):
        super().__init__(reason)
        self.kind = kind


def _read_piece(path: Path, tokenizer: REMI) -> tuple[list[int], str, int, int]:
    """(REMI ids, key, main program, drum notes dropped) of one MIDI file; :class:`_Unusable` if none."""
    from symusic import Score

    try:
        score = Score(str(path))
    except Exception as e:  # noqa: BLE001 - symusic raises RuntimeError for most damage, others too
        detail = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise _Unusable("corrupt", f"not a readable MIDI file ({detail})") from None
    merged, program, drums = _one_track(score)
    if merged is None:
        raise _Unusable("no_notes", f"{'only drum notes' if drums else 'no notes'}: nothing to tokenize")
    seqs = tokenizer(merged)
    if not seqs or not any(t.startswith("Pitch_") for t in seqs[0].tokens):
        low, high = REMI_SETTINGS["pitch_range"]
        raise _Unusable("no_notes", f"no notes in the tokenizer's pitch range {low}-{high - 1}")
    return list(seqs[0].ids), key_of(merged), program, drums


# -- sources --------------------------------------------------------------------------------


def _list_folder(root: Path, folder_condition: str) -> _Found:
    visible = sorted(p for p in root.rglob("*")
                     if p.is_file() and not any(part.startswith(".") for part in p.relative_to(root).parts))
    found = [(p, p.relative_to(root).as_posix()) for p in visible if p.suffix.lower() in MIDI_SUFFIXES]
    ignored = len(visible) - len(found)
    if not found:
        raise InvalidInput(f"no MIDI files (.mid, .midi) in {root}: pass a folder of MIDI files, "
                           f"one subfolder per {folder_condition} if you want it as a condition")
    labelled = any("/" in rel for _, rel in found)
    out = _Found("folder", [], n_read=len(found), ignored_files=ignored)
    for full, rel in found:
        if labelled and "/" not in rel:
            out.drops.append((rel, "no_condition",
                              f"directly in the root folder, not in a {folder_condition} subfolder"))
        else:
            out.items.append((full, rel, rel.split("/", 1)[0] if labelled else None))
    return out


def _corpus_listing(name: str) -> tuple[list[str], int]:
    """(distinct corpus paths music21 can parse, in catalogue order; how many entries were listed)."""
    from music21 import corpus
    from music21.corpus import chorales

    if name == "bach":
        listed = [str(n) for n in chorales.Iterator(returnType="filename")]
    else:
        root = Path(corpus.getCorpusFilePath())
        listed = []
        for p in corpus.getComposer(name):
            p = Path(p)
            if p.suffix.lower() != ".rntxt":
                listed.append(p.relative_to(root).as_posix() if p.is_relative_to(root) else str(p))
    if not listed:
        raise InvalidInput(f"music21's corpus has no pieces by {name!r}: use e.g. music21:bach "
                           "(the chorales), music21:beethoven, music21:mozart or music21:palestrina")
    return list(dict.fromkeys(listed)), len(listed)


def _export_piece(source: str, dest: Path) -> None:
    """Parse one corpus piece with music21 and write it as MIDI (temp name, then renamed)."""
    from music21 import corpus

    score = corpus.parse(source)
    tmp = dest.with_name(f".{dest.name}.{uuid.uuid4().hex[:8]}.tmp")
    try:
        score.write("midi", fp=str(tmp))
        if not tmp.is_file() or tmp.stat().st_size == 0:
            raise RuntimeError("music21 wrote no MIDI")
        os.replace(tmp, dest)
    finally:
        tmp.unlink(missing_ok=True)


def _list_music21(ws: Workspace, name: str, limit: int | None,
                  progress: Callable[[str, int, int], None] | None) -> _Found:
    """Export the corpus's pieces to the workspace cache (once) and list the cached MIDI files."""
    if not name or "/" in name or name.startswith("."):
        raise InvalidInput(f"invalid music21 corpus name {name!r}: use e.g. music21:bach")
    cache = ws.root / "cache" / "music21" / name
    cache.mkdir(parents=True, exist_ok=True)
    index_path = cache / CACHE_INDEX
    index: dict[str, dict[str, str]] = {}
    if index_path.is_file():
        try:
            index = json.loads(index_path.read_text(encoding="utf-8")).get("pieces", {})
        except (json.JSONDecodeError, AttributeError):
            index = {}  # a damaged index only costs a new export
    distinct, n_listed = _corpus_listing(name)
    wanted = distinct[:limit] if limit is not None else distinct
    out = _Found("music21", [], n_read=len(wanted))
    exported = 0
    for i, source in enumerate(wanted):
        entry = index.get(source)
        if entry is None or ("file" in entry and not (cache / entry["file"]).is_file()):
            filename = f"{i + 1:03d}-{source.replace('/', '_').replace('.', '_')}.mid"
            try:
                _export_piece(source, cache / filename)
                entry = {"file": filename}
            except Exception as e:  # noqa: BLE001 - music21's parsers and writer raise many kinds
                detail = str(e).splitlines()[0] if str(e) else "no detail"
                entry = {"error": f"music21 could not export it ({type(e).__name__}: {detail[:200]})"}
            index[source] = entry
            exported += 1
            write_json_atomic(index_path, {"corpus": name, "pieces": index})  # an interrupted export resumes
        if progress is not None:
            progress("music21", i + 1, len(wanted))
        if "error" in entry:
            out.drops.append((source, "export_failed", entry["error"]))
        else:
            out.items.append((cache / entry["file"], source, name))
    failed = [{"piece": s, "reason": r} for s, _, r in out.drops]
    out.corpus = {"name": name, "cache": str(cache), "listed": n_listed, "distinct": len(distinct),
                  "taken": len(wanted), "exported_now": exported, "from_cache": len(wanted) - exported,
                  "failed": failed}
    return out


def _list_source(ws: Workspace, path: str | Path | None, music21: str | None, folder_condition: str,
                 limit: int | None, progress) -> _Found:
    spec = f"{MUSIC21_PREFIX}{music21}" if music21 else str(path)
    if spec.startswith(MUSIC21_PREFIX):
        return _list_music21(ws, spec[len(MUSIC21_PREFIX):], limit, progress)
    p = Path(spec).expanduser().resolve()
    if not p.exists():
        raise InvalidInput(f"no such file or folder: {p}: check the path")
    if p.is_dir():
        found = _list_folder(p, folder_condition)
    elif p.suffix.lower() in MIDI_SUFFIXES:
        found = _Found("midi", [(p, p.name, None)], n_read=1)
    else:
        raise InvalidInput(f"{p} is not a MIDI file (.mid, .midi): pass a MIDI file, a folder of them, "
                           "or music21:<name>")
    if limit is not None:
        found.items = found.items[:limit]
        found.n_read = len(found.items) + len(found.drops)
    return found


# -- chunks, splits, baselines --------------------------------------------------------------


def chunk_at_bars(ids: Sequence[int], bar_id: int, position_ids: Iterable[int],
                  max_tokens: int) -> list[list[int]]:
    """Cut a piece's ids into chunks of at most ``max_tokens``, each starting at a bar (see the module doc).

    Whole bars are packed greedily; a bar longer than ``max_tokens`` gets chunks of its own, cut
    before its last ``Position`` token that fits (or at ``max_tokens`` when none does).
    """
    positions = set(position_ids)
    starts = [i for i, t in enumerate(ids) if t == bar_id]
    if not starts or starts[0] != 0:
        starts = [0, *starts]  # tokens before the first bar form a span of their own
    spans = zip(starts, [*starts[1:], len(ids)])
    chunks: list[list[int]] = []
    start = end = 0
    for a, b in spans:
        if b - a > max_tokens:
            if end > start:
                chunks.append(list(ids[start:end]))
            while b - a > max_tokens:
                cut = next((j for j in range(a + max_tokens, a, -1) if ids[j] in positions), a + max_tokens)
                chunks.append(list(ids[a:cut]))
                a = cut
            start, end = a, b
            continue
        if b - start > max_tokens:
            chunks.append(list(ids[start:end]))
            start = a
        end = b
    if end > start:
        chunks.append(list(ids[start:end]))
    return chunks


def split_pieces(pieces: Sequence[_Piece], fractions: tuple[float, float, float]) -> dict[str, list[_Piece]]:
    """Pieces by split: the hash of each piece's text, then an empty val/test (fraction > 0) takes
    the train piece whose hash lies nearest its range, while train keeps at least one."""
    out = hash_split(pieces, [p.text for p in pieces], fractions)
    bounds = {"val": (fractions[0], fractions[0] + fractions[1]), "test": (fractions[0] + fractions[1], 1.0)}
    for s in ("val", "test"):
        lo, hi = bounds[s]
        if out[s] or hi <= lo or len(out["train"]) < 2:
            continue
        nearest = min(out["train"],
                      key=lambda p: min(abs(hash_unit(p.text) - lo), abs(hash_unit(p.text) - hi)))
        out["train"] = [p for p in out["train"] if p is not nearest]
        out[s] = [nearest]
    return out


def ngram_baselines(train: Iterable[Sequence[int]],
                    val: Iterable[Sequence[int]]) -> dict[str, float | int | None]:
    """Unigram and bigram NLL per token (nats) of the ``val`` sequences under add-one smoothed
    counts of the ``train`` ones.

    The vocabulary is what a text run's char tokenizer makes of the same data: every token seen
    in train plus one unknown, which stands for every val token train never saw. Each sequence's
    first token is predicted from a start symbol (the bigram's context), as a language model
    predicts it from the end-of-text that starts every record. None when val holds no token.
    """
    train = [list(s) for s in train]
    start, unknown = -1, -2
    seen = {t for seq in train for t in seq}
    uni: Counter[int] = Counter()
    bi: Counter[tuple[int, int]] = Counter()
    ctx: Counter[int] = Counter()
    for seq in train:
        uni.update(seq)
        prev = [start, *seq[:-1]]
        bi.update(zip(prev, seq))
        ctx.update(prev)
    vocab = len(seen) + 1
    n_uni = sum(uni.values())
    nll_uni = nll_bi = 0.0
    n = 0
    for seq in val:
        seq = [t if t in seen else unknown for t in seq]
        for prev, tok in zip([start, *seq[:-1]], seq):
            nll_uni -= math.log((uni[tok] + 1) / (n_uni + vocab))
            nll_bi -= math.log((bi[(prev, tok)] + 1) / (ctx[prev] + vocab))
            n += 1
    if n == 0:
        return {"unigram_nll": None, "bigram_nll": None, "val_tokens": 0, "vocab": vocab}
    return {"unigram_nll": round(nll_uni / n, 4), "bigram_nll": round(nll_bi / n, 4), "val_tokens": n,
            "vocab": vocab}


# -- ingest ---------------------------------------------------------------------------------


def _check_options(max_tokens: Any, limit: Any, folder_condition: Any) -> None:
    if not isinstance(max_tokens, int) or isinstance(max_tokens, bool) or max_tokens < MIN_MAX_TOKENS:
        raise InvalidInput(f"invalid --max-tokens {max_tokens!r}: pass a whole number >= {MIN_MAX_TOKENS} "
                           f"(default {DEFAULT_MAX_TOKENS})")
    if limit is not None and (not isinstance(limit, int) or isinstance(limit, bool) or limit < 1):
        raise InvalidInput(f"invalid --limit {limit!r}: pass a whole number >= 1, "
                           "or leave it out for every piece")
    if not isinstance(folder_condition, str) or not folder_condition.strip() or any(
            c in folder_condition for c in "=|<>") or folder_condition in ("key", "instrument"):
        raise InvalidInput(f"invalid --folder-condition {folder_condition!r}: pass a column name without "
                           "= | < >, other than key and instrument, e.g. composer")


def ingest_music(
    ws: Workspace,
    path: str | Path | None,
    name: str,
    *,
    music21: str | None = None,
    max_tokens: int = DEFAULT_MAX_TOKENS,
    split: tuple[float, float, float] = (0.9, 0.05, 0.05),
    strict: bool = False,
    limit: int | None = None,
    folder_condition: str = "composer",
    min_cond_count: int = DEFAULT_MIN_COND_COUNT,
    replace: bool = False,
    progress: Callable[[str, int, int], None] | None = None,
) -> dict[str, Any]:
    """Ingest a MIDI file, a folder of them or ``music21:<name>`` (or ``music21=<name>``) as text
    dataset ``name`` of REMI tokens; return its card (see the module doc).

    ``limit``: the first N pieces only. ``strict``: a corrupt MIDI, one with no notes, or a corpus
    piece music21 cannot export is an error naming it, instead of a drop on the card.
    ``progress(stage, done, total)``: ``"music21"`` (pieces exported or found in the cache) and
    ``"tokenize"`` (pieces read).
    """
    dest = ws.dataset_path(name)
    if not replace and (ws.has_dataset(name) or dest.exists()):
        raise AlreadyExists(f"dataset {name!r} already exists: pass --replace to overwrite it")
    fractions = check_fractions(split)
    _check_options(max_tokens, limit, folder_condition)
    check_min_count(min_cond_count)

    found = _list_source(ws, path, music21, folder_condition, limit, progress)
    shown_source = found.corpus["cache"] if found.corpus else str(Path(str(path)).expanduser().resolve())
    drops: list[tuple[str, str, str]] = list(found.drops)
    if strict and drops:
        piece, _, reason = drops[0]
        raise InvalidInput(f"{piece}: {reason}: fix or remove it, or leave out --strict to skip it")

    tokenizer = new_tokenizer()
    pieces: list[_Piece] = []
    drum_notes = 0
    for n, (file, rel, value) in enumerate(found.items, start=1):
        try:
            ids, key, program, drums = _read_piece(file, tokenizer)
        except _Unusable as e:
            if strict:
                raise InvalidInput(
                    f"{file}: {e}: fix or remove the file, or leave out --strict to skip it") from None
            drops.append((rel, e.kind, str(e)))
        else:
            drum_notes += drums
            cond = {folder_condition: value} if value is not None else {}
            cond.update(key=key, instrument=_gm_family(program))
            pieces.append(_Piece(rel, ids, cond, ids_to_text(ids)))
        if progress is not None:
            progress("tokenize", n, len(found.items))
    if len(pieces) < 2:
        listed = "; ".join(f"{p}: {r}" for p, _, r in drops[:3])
        raise InvalidInput(
            f"{shown_source}: {len(pieces)} usable piece(s) of {found.n_read} read"
            f"{' (' + listed + ')' if listed else ''}, and a dataset needs at least 2, one to train on "
            "and one to validate on: add MIDI files with notes"
        )

    by_split = split_pieces(pieces, fractions)
    bar_id = tokenizer.vocab["Bar_None"]
    position_ids = [i for t, i in tokenizer.vocab.items() if t.startswith("Position_")]
    rows: dict[str, list[tuple[str, dict[str, str]]]] = {s: [] for s in SPLITS}
    chunk_ids: dict[str, list[list[int]]] = {s: [] for s in SPLITS}
    for s in SPLITS:
        for p in by_split[s]:
            for chunk in chunk_at_bars(p.ids, bar_id, position_ids, max_tokens):
                rows[s].append((ids_to_text(chunk), p.cond))
                chunk_ids[s].append(chunk)

    named = any(folder_condition in p.cond for p in pieces)
    columns = [folder_condition, "key", "instrument"] if named else ["key", "instrument"]
    source = RawSource(path=Path(shown_source), format=found.format, encoding="", mode="records",
                       text_column=None, cond_columns=columns)
    card = build_card(
        name=name, source=source, normalize=False,
        texts_by_split={s: [t for t, _ in rows[s]] for s in SPLITS},
        conds_by_split={s: [c for _, c in rows[s]] for s in SPLITS},
        min_cond_count=min_cond_count,
        lengths=[len(c) for s in SPLITS for c in chunk_ids[s]],
        n_read=found.n_read,
        drops=[Drop(i, kind, reason, piece) for i, (piece, kind, reason) in enumerate(drops)],
        split_method="hash of each piece's tokens",
        fractions=fractions,
        created_at=now(),
    )
    vocab_size = len(tokenizer)
    # build_card counts records; here read/kept/dropped are pieces, train/val/test records (chunks).
    card["counts"].update(read=found.n_read, kept=len(pieces), dropped=len(drops))
    card.update(
        modality="music",
        source=shown_source if found.corpus is None else f"{MUSIC21_PREFIX}{found.corpus['name']}",
        pieces={"read": found.n_read, "kept": len(pieces), **{s: len(by_split[s]) for s in SPLITS},
                "names": {s: [p.id for p in by_split[s]][:200] for s in ("val", "test")}},
        tokens={"total": sum(len(p.ids) for p in pieces),
                **{s: sum(len(p.ids) for p in by_split[s]) for s in SPLITS},
                "per_piece": {"min": min(len(p.ids) for p in pieces), "max": max(len(p.ids) for p in pieces),
                              "mean": round(sum(len(p.ids) for p in pieces) / len(pieces), 1)}},
        chunks={"max_tokens": max_tokens, "cut": "at bar boundaries", **{s: len(rows[s]) for s in SPLITS}},
        tokenizer={"kind": "miditok.REMI", "file": TOKENIZER_FILE, "vocab_size": vocab_size,
                   "char_base": f"U+{PUA_BASE:04X}",
                   "settings": {k: ({f"{a}-{b}": r for (a, b), r in v.items()} if k == "beat_res" else v)
                                for k, v in REMI_SETTINGS.items()}},
        baselines={**ngram_baselines(chunk_ids["train"], chunk_ids["val"]),
                   "unit": "nats per REMI token of val (a run's val loss also counts its end-of-text "
                           "and condition tokens); add-one smoothed counts of train over train's "
                           "tokens + unknown"},
        ignored_files=found.ignored_files,
        drum_notes_dropped=drum_notes,
    )
    if found.corpus is not None:
        card["music21"] = found.corpus
    with ws.staging("dataset") as staged:
        for s in SPLITS:
            write_split(staged / f"{s}.jsonl", rows[s])
        tokenizer.save(staged, filename=TOKENIZER_FILE)
        write_json_atomic(staged / "card.json", card)
        ws.publish(staged, dest, replace=replace)
    # Registered as text: the text families train on it as they are (runs.train checks the modality).
    ws.register_dataset(name, "text", card["source"], card)
    return card


# -- decoding, files, rendering, statistics -------------------------------------------------


@dataclass
class Decoded:
    """A text of private-use characters decoded to music."""

    score: Score  # one track, program as asked
    tokens: int  # REMI tokens decoded
    unknown: int  # characters that were no token of the dataset's vocabulary, dropped

    def midi_bytes(self) -> bytes:
        return bytes(self.score.dumps_midi())


def decode_text(dataset_dir: str | Path | None, text: str, *, program: int = 0,
                tokenizer: REMI | None = None) -> Decoded:
    """Characters -> REMI ids -> a symusic Score, with the dataset's tokenizer (or ``tokenizer``).

    Characters outside the dataset's token range (stray text, control tokens) are dropped and
    counted. ``program``: the General MIDI program of the decoded track (0, piano, by default).
    """
    from symusic import Score

    if not isinstance(program, int) or isinstance(program, bool) or not 0 <= program <= 127:
        raise InvalidInput(f"invalid program {program!r}: pass a General MIDI program 0-127 (0 is piano)")
    tok = tokenizer if tokenizer is not None else load_tokenizer(dataset_dir)
    ids, unknown = text_to_ids(text, len(tok))
    score = tok.decode([ids]) if ids else Score(tok.time_division)
    for t in score.tracks:
        t.program = program
    return Decoded(score, len(ids), unknown)


def write_midi(path: str | Path, score: Score | Decoded) -> Path:
    """Write a Score as a MIDI file: to a temporary name beside ``path``, then renamed over it."""
    score = score.score if isinstance(score, Decoded) else score
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex[:8]}.tmp")
    try:
        tmp.write_bytes(bytes(score.dumps_midi()))
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path


def render_wav(midi_path: str | Path, wav_path: str | Path, soundfont: str | Path | None = None,
               sample_rate: int = 22050) -> Path:
    """Render a MIDI file to a WAV file with fluidsynth and a General MIDI soundfont.

    The default soundfont is Debian's ``fluid-soundfont-gm`` (:data:`DEFAULT_SOUNDFONT`). The WAV is
    rendered to a temporary name and renamed into place, so a failed render leaves nothing.
    """
    exe = shutil.which("fluidsynth")
    if exe is None:
        raise InvalidInput("fluidsynth is not installed: install the Debian package fluidsynth "
                           "(apt-get install fluidsynth)")
    sf = Path(soundfont).expanduser() if soundfont is not None else DEFAULT_SOUNDFONT
    if not sf.is_file():
        raise InvalidInput(f"soundfont {sf} not found: install the Debian package fluid-soundfont-gm "
                           "(apt-get install fluid-soundfont-gm), or pass soundfont= a .sf2 file")
    midi = Path(midi_path).expanduser()
    if not midi.is_file():
        raise InvalidInput(f"no such MIDI file: {midi}: check the path")
    if not isinstance(sample_rate, int) or isinstance(sample_rate, bool) or not 8000 <= sample_rate <= 96000:
        raise InvalidInput(f"invalid sample_rate {sample_rate!r}: pass a whole number of Hz from 8000 "
                           "to 96000, e.g. 22050")
    out = Path(wav_path)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.stem}.{uuid.uuid4().hex[:8]}.tmp.wav")
    try:
        done = subprocess.run(
            # dynamic sample loading: only the samples the piece plays are read from the soundfont
            # (Debian's is 148 MB), not all of it for every render
            [exe, "-ni", "-q", "-o", "synth.dynamic-sample-loading=1", "-r", str(sample_rate), "-T", "wav", "-F",
             str(tmp), str(sf), str(midi)],
            capture_output=True, text=True, timeout=RENDER_TIMEOUT_S, check=False)
        if done.returncode != 0 or not tmp.is_file() or tmp.stat().st_size <= 44:  # 44: a bare WAV header
            detail = (done.stderr or done.stdout or "").strip().splitlines()
            raise InvalidInput(f"fluidsynth could not render {midi} (exit {done.returncode}"
                               f"{': ' + detail[-1] if detail else ''}): "
                               "check that it is a MIDI file with notes")
        os.replace(tmp, out)
    finally:
        tmp.unlink(missing_ok=True)
    return out


def music_stats(scores: Iterable[Score | Decoded]) -> dict[str, Any]:
    """Pitch-class and polyphony histograms over scores (drums left out), each summing to 1.

    ``pitch_class_hist[c]``: the share of notes whose pitch class is ``c`` (0 = C).
    ``polyphony_hist[k - 1]``: the share of note onsets at which ``k`` notes sound (started at or
    before and not yet ended; the last bin is :data:`MAX_POLYPHONY` or more). Histograms are all
    zeros when there is no note.
    """
    pcs = np.zeros(12)
    poly = np.zeros(MAX_POLYPHONY)
    n_notes = 0
    for score in scores:
        score = score.score if isinstance(score, Decoded) else score
        arrays = [t.notes.numpy() for t in score.tracks if not t.is_drum and t.note_num() > 0]
        if not arrays:
            continue
        pitch = np.concatenate([a["pitch"] for a in arrays])
        start = np.concatenate([a["time"] for a in arrays]).astype(np.int64)
        end = start + np.maximum(np.concatenate([a["duration"] for a in arrays]).astype(np.int64), 1)
        n_notes += len(pitch)
        pcs += np.bincount(pitch % 12, minlength=12)
        onsets = np.unique(start)
        started = np.searchsorted(np.sort(start), onsets, side="right")
        sounding = started - np.searchsorted(np.sort(end), onsets, side="right")
        poly += np.bincount(np.clip(sounding, 1, MAX_POLYPHONY) - 1, minlength=MAX_POLYPHONY)
    return {"notes": n_notes, "pitch_class_hist": _shares(pcs), "polyphony_hist": _shares(poly)}


def _shares(counts: np.ndarray) -> list[float]:
    total = counts.sum()
    return (counts / total).round(6).tolist() if total else counts.tolist()
