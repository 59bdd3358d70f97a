"""Copy guard: how much of a generated text is copied verbatim from the training text.

At training time :meth:`CopyIndex.build` reads the training records through
:func:`aigc.safety.normalize.normalize` (NFKC, case folding, zero-width characters dropped,
traditional -> simplified; separators kept) and keeps two things:

- the normalised training text itself, one small integer per character (an index into the
  corpus's own alphabet: 2 bytes a character, 1 for an alphabet under 254 characters), the
  records joined by a separator that no checked text can contain, so no match runs across two
  records;
- the positions of its ``gram``-character windows at every ``stride``-th character, sorted by a
  64-bit hash of the window, with a table of where each hash bucket starts (4 bytes an entry
  plus about 1 for the table).

A verbatim span of ``window = gram + stride - 1`` characters or more always contains one of the
sampled windows, so :meth:`CopyIndex.longest` hashes every window of the checked text (all of
them: it is short), keeps the bucket entries whose characters really are equal, and extends each
hit left and right over the stored text to its maximal length. The answer is exact: the longest
span of the checked text that occurs in one training record, with its length in normalised
characters, where it lies in the text as written (:meth:`Normalized.span`) and where it lies in
the training text, provided it is at least ``window`` characters long; shorter spans are not
looked for, and neither are runs: a window that repeats a unit of up to four characters
(``!!!!!!!!!``, ``哈哈哈哈哈``, ``很好很好很``) is not indexed, so a span that is mostly a run
(``建议!!!!!!!!!!!!!!``) can be missed, while a span with ``window`` characters in a row that
hold no run is found whole, runs and all. 800 "!" then cost what any text costs, instead of 800 x
the thousands of places "!!!!!!!!!" occurs. A hash collision costs a wasted comparison, never a
wrong answer.

Size with the defaults (window 16, stride 8): 2 bytes a character of text + an entry of ~5 bytes
every 8 characters, about 2.7 bytes a character (11.6 MB for the 4.3 M characters of
benchmarks/copy_guard.py, where the sorted hashes of every 32-character window take 21.1 MB, up
to 8 bytes a character, and cannot see a 16-character copy).

The index is one ``.npz`` (written to a temporary file, then renamed over the target);
:meth:`CopyIndex.load` maps its large arrays from the file instead of reading them, so processes
that load the same index share the pages. This module knows nothing of training runs or policies: the
training code stores the index with the run and the policy says what a threshold is and what a
copy does (report, or block).
"""

from __future__ import annotations

import json
import math
import os
import struct
import uuid
import zipfile
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from aigc.errors import InvalidInput
from aigc.safety.normalize import normalize

FORMAT = "aigc-copy-index"
VERSION = 1
DEFAULT_WINDOW = 16  # every copied span this long or longer is found (the floor)
DEFAULT_STRIDE = 8  # sampled every 8th character: hashed windows of 16 - 8 + 1 = 9 characters
# The policy's default, in normalised characters (the shop-demo figure counts 50-character
# spans too). benchmarks/copy_guard.py, 4.3 M characters of reviews and Shakespeare: a held-out
# record reaches it in 0.59 % (reviews) / 0.00 % (Shakespeare) of cases; at 32, 0.99 % / 0.70 %.
# Each such span is verbatim overlap (reviews written twice, boilerplate), never a chance match.
DEFAULT_THRESHOLD = 50
MIN_GRAM = 8  # shorter hashed windows are common words: lookups return thousands of hits
RUN_UNIT = 4  # a window that repeats a unit of up to 4 characters (!!!!, 哈哈哈, 很好很好) is a run: not indexed
_PER_BUCKET = 4  # entries per hash bucket on average: the bucket table costs ~1 byte an entry
_MAX_CHARS = 2**32 - 2  # positions are uint32
_SLICE = 1 << 18  # bucket entries compared at once (a typical 800-character check compares ~3000)
_MMAP_MIN_BYTES = 1 << 20  # arrays this large are mapped from the file, not read
_NO_CODEPOINT = 0x110000  # marks record separators while the codepoints are counted
_BASE = np.uint64(0x9E3779B97F4A7C15)  # odd multiplier of the polynomial window hash
_MIX = np.uint64(0xBF58476D1CE4E5B9)  # splitmix64's finaliser constant


@dataclass(frozen=True)
class CopySpan:
    """The longest copied span: ``text[start:end]`` as written, ``length`` normalised characters,
    starting at ``source_offset`` in the index's normalised training text (see :meth:`CopyIndex.source`)."""

    start: int
    end: int
    length: int
    source_offset: int

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class CopyVerdict:
    """``copied``: the longest span reaches the threshold; ``span``: that span, reported either way."""

    copied: bool
    span: CopySpan | None

    def to_dict(self) -> dict:
        return {"copied": self.copied, "span": None if self.span is None else self.span.to_dict()}


def _gram_for(window: int, stride: int) -> int:
    for name, value in (("window", window), ("stride", stride)):
        if isinstance(value, bool) or not isinstance(value, int):
            raise InvalidInput(f"copy index {name} must be an integer, not {value!r}; "
                               f"the defaults are window={DEFAULT_WINDOW}, stride={DEFAULT_STRIDE}")
    if stride < 1 or window - stride + 1 < MIN_GRAM:
        raise InvalidInput(f"copy index stride {stride} does not fit window {window}: the hashed windows "
                           f"(window - stride + 1 characters) must be at least {MIN_GRAM} long; "
                           f"use a stride from 1 to {max(window - MIN_GRAM + 1, 1)} or a longer window")
    return window - stride + 1


def _window_hashes(ids: np.ndarray, gram: int, step: int, count: int) -> np.ndarray:
    """(count,) uint64: a hash of ``ids[i : i + gram]`` for i = 0, step, 2 step, ..."""
    h = np.zeros(count, np.uint64)
    if count == 0:
        return h
    span = step * (count - 1) + 1
    for j in range(gram):  # polynomial in the characters, wrapping mod 2**64
        h *= _BASE
        h += ids[j:j + span:step]
    h ^= h >> np.uint64(31)  # mix, so the bucket (the top bits) depends on every character
    h *= _MIX
    h ^= h >> np.uint64(29)
    return h


def _runs_of_a_unit(ids: np.ndarray, gram: int, step: int, count: int) -> np.ndarray:
    """(count,) bool: window ``ids[i : i + gram]`` (i = 0, step, ...) repeats a unit of at most
    RUN_UNIT characters. Runs are left out on both sides: a run of "!" is in thousands of places,
    and 800 of them would be 800 x thousands of hits, each a different alignment."""
    out = np.zeros(count, bool)
    if count == 0:
        return out
    span = step * (count - 1) + 1
    for unit in range(1, RUN_UNIT + 1):
        same = np.ones(count, bool)
        for j in range(gram - unit):
            same &= ids[j:j + span:step] == ids[j + unit:j + unit + span:step]
        out |= same
    return out


def _match_lengths(a: np.ndarray, b: np.ndarray, i: np.ndarray, j: np.ndarray) -> np.ndarray:
    """For each t, how many ``a[i[t] + k] == b[j[t] + k]`` for k = 0, 1, ... before the first
    difference or either end. Compared in blocks that double, all pairs at once."""
    out = np.zeros(len(i), np.intp)
    alive = np.arange(len(i))
    width = 16
    while alive.size:
        ai = (i[alive] + out[alive])[:, None] + np.arange(width)  # (alive, width)
        bj = (j[alive] + out[alive])[:, None] + np.arange(width)
        inside = (ai < len(a)) & (bj < len(b))
        eq = inside & (a[np.minimum(ai, len(a) - 1)] == b[np.minimum(bj, len(b) - 1)])
        full = eq.all(axis=1)
        out[alive] += np.where(full, width, eq.argmin(axis=1))
        alive = alive[full]
        width = min(2 * width, 4096)
    return out


def _not_unicode(e: UnicodeError) -> str:
    bad = getattr(e, "object", "")[getattr(e, "start", 0):getattr(e, "end", 0)]
    return (f"holds {', '.join(f'U+{ord(c):04X}' for c in bad) or 'a character'} that is not valid Unicode "
            "(a lone surrogate); decode the text with errors='replace'")


def _span(norm, a, b, src) -> CopySpan:
    start, end = norm.span(int(a), int(b))
    return CopySpan(start, end, int(b - a), int(src))


class _Folder:
    """``normalize(text).text`` for many texts at C speed: each distinct character is folded once,
    by ``normalize`` itself (it works character by character, so the result is identical), and
    ``str.translate`` does the rest."""

    def __init__(self):
        self.table: dict[int, str] = {}
        self.seen: set[str] = set()

    def __call__(self, text: str) -> str:
        new = set(text) - self.seen
        for c in new:
            self.table[ord(c)] = normalize(c).text
        self.seen |= new
        return text.translate(self.table)


class CopyIndex:
    """An index of training text that says at once which span of a text is copied from it."""

    def __init__(self, *, ids: np.ndarray, alphabet: np.ndarray, positions: np.ndarray,
                 offsets: np.ndarray, starts: np.ndarray, window: int, stride: int, bits: int):
        self.window, self.stride, self.gram = window, stride, window - stride + 1
        self._ids = ids  # (N,) normalised training text as alphabet indices; separators = len(alphabet)
        self._alphabet = alphabet  # (V,) uint32 codepoints, sorted
        self._positions = positions  # (M,) uint32 window starts, sorted by hash bucket
        self._offsets = offsets  # (2**bits + 1,) uint32: bucket b holds positions[offsets[b]:offsets[b + 1]]
        self._starts = starts  # (records,) int64 where each record starts in the text
        self._shift = np.uint64(64 - bits)
        self._bits = bits
        self._unknown = len(alphabet) + 1  # a checked character the corpus never had: equal to nothing

    # -- building ----------------------------------------------------------------------------

    @classmethod
    def build(cls, texts: Iterable[str], *, window: int = DEFAULT_WINDOW,
              stride: int = DEFAULT_STRIDE) -> CopyIndex:
        """Index the training records ``texts``: every copied span of ``window`` characters or more
        will be found. A longer ``stride`` makes a smaller index (an entry of ~5 bytes every ``stride``
        characters) with shorter hashed windows (``window - stride + 1``), which more places share."""
        gram = _gram_for(window, stride)
        if isinstance(texts, str):
            raise InvalidInput("CopyIndex.build takes an iterable of training records, not one str; "
                               "pass [text] to index a single text")
        fold = _Folder()
        parts: list[str] = []
        for i, text in enumerate(texts):
            if not isinstance(text, str):
                raise InvalidInput(f"training record {i} is a {type(text).__name__}, not text; "
                                   "pass the records as str")
            try:
                parts.append(fold(text))
            except UnicodeError as e:
                raise InvalidInput(f"training record {i} {_not_unicode(e)}") from None
        if not parts:
            raise InvalidInput("CopyIndex.build got no training records; pass the texts the run trains on")
        lengths = np.fromiter((len(p) for p in parts), np.int64, len(parts))
        starts = np.zeros(len(parts), np.int64)
        np.cumsum(lengths[:-1] + 1, out=starts[1:])  # one separator after each record but the last
        n = int(lengths.sum()) + max(len(parts) - 1, 0)
        if n > _MAX_CHARS:
            raise InvalidInput(f"the training text has {n} characters after normalisation; a copy index "
                               f"holds at most {_MAX_CHARS}: index a sample or split it")
        joined = "\n".join(parts)  # each "\n" between records becomes the separator below
        del parts
        cps = np.frombuffer(joined.encode("utf-32-le", "surrogatepass"), np.uint32).copy()
        del joined
        seps = starts[1:] - 1
        cps[seps] = _NO_CODEPOINT
        seen = np.zeros(_NO_CODEPOINT + 1, bool)
        for i in range(0, n, 1 << 22):  # bincount copies its input to int64: in slices
            seen |= np.bincount(cps[i:i + (1 << 22)], minlength=_NO_CODEPOINT + 1).astype(bool)
        alphabet = np.flatnonzero(seen[:_NO_CODEPOINT]).astype(np.uint32)
        ids_needed = len(alphabet) + 2  # the characters, the separator, "unknown" in a checked text
        dtype = np.uint8 if ids_needed <= 2**8 else np.uint16 if ids_needed <= 2**16 else np.uint32
        lut = np.zeros(_NO_CODEPOINT + 1, dtype)
        lut[alphabet] = np.arange(len(alphabet))
        lut[_NO_CODEPOINT] = len(alphabet)  # the separator
        ids = lut[cps]
        del cps, lut

        # Sample every stride-th window; drop those that run over a separator (they match nothing).
        count = (n - gram) // stride + 1 if n >= gram else 0
        hashes = _window_hashes(ids, gram, stride, count)
        keep = ~_runs_of_a_unit(ids, gram, stride, count)
        for back in range(gram):
            s = seps - back
            s = s[(s >= 0) & (s % stride == 0) & (s // stride < count)]
            keep[s // stride] = False
        positions = (np.arange(count, dtype=np.int64) * stride)[keep].astype(np.uint32)
        hashes = hashes[keep]

        bits = int(min(max(round(math.log2(max(len(positions), 1) / _PER_BUCKET)), 4), 32))
        buckets = (hashes >> np.uint64(64 - bits)).astype(np.intp)
        positions = positions[np.argsort(buckets, kind="stable")]
        offsets = np.zeros(2**bits + 1, np.uint32)
        np.cumsum(np.bincount(buckets, minlength=2**bits), out=offsets[1:])
        return cls(ids=ids, alphabet=alphabet, positions=positions, offsets=offsets, starts=starts,
                   window=window, stride=stride, bits=bits)

    # -- checking ----------------------------------------------------------------------------

    def longest(self, text: str) -> CopySpan | None:
        """The longest span of ``text`` that occurs verbatim in one training record (after
        normalisation), or None when no span of ``window`` characters or more does."""
        norm = self._normalize(text)
        a, b, src, _ = self._matches(norm)
        if not a.size:
            return None
        best = np.lexsort((a, a - b))[0]  # longest, then leftmost
        return _span(norm, a[best], b[best], src[best])

    def spans(self, text: str) -> list[CopySpan]:
        """Every maximal span of ``text`` of ``window`` characters or more that occurs verbatim in
        one training record, by start (longest first where two start together); overlaps kept."""
        norm = self._normalize(text)
        a, b, src, _ = self._matches(norm)
        return [_span(norm, *found) for found in zip(a, b, src)]

    def check(self, text: str, threshold: int = DEFAULT_THRESHOLD) -> CopyVerdict:
        """Whether ``text`` copies ``threshold`` or more characters in a row from the training text."""
        if isinstance(threshold, bool) or not isinstance(threshold, int):
            raise InvalidInput(f"copy-guard threshold must be a whole number of characters, "
                               f"not {threshold!r}; the default is {DEFAULT_THRESHOLD}")
        if threshold < self.window:
            raise InvalidInput(f"copy-guard threshold {threshold!r} is below what this index finds: spans of "
                               f"{self.window} characters or more; use a threshold >= {self.window} "
                               f"or build the index with window={threshold}")
        span = self.longest(text)
        return CopyVerdict(span is not None and span.length >= threshold, span)

    def source(self, span: CopySpan) -> tuple[int, int, str]:
        """Where ``span`` was copied from: (record number, offset in that record, the normalised text)."""
        a, b = span.source_offset, span.source_offset + span.length
        if not 0 <= a < b <= len(self._ids):
            raise InvalidInput(f"span {span} does not come from this index (it holds {len(self._ids)} "
                               "characters); pass a span this index returned")
        record = int(np.searchsorted(self._starts, a, side="right")) - 1
        chars = self._alphabet[np.minimum(self._ids[a:b], len(self._alphabet) - 1)]
        return record, a - int(self._starts[record]), chars.astype("<u4").tobytes().decode("utf-32-le")

    def stats(self) -> dict:
        """Characters and records indexed, hash entries, bytes held (in memory or mapped)."""
        arrays = (self._ids, self._alphabet, self._positions, self._offsets, self._starts)
        return {"chars": len(self._ids) - max(len(self._starts) - 1, 0), "records": len(self._starts),
                "entries": len(self._positions), "bytes": int(sum(a.nbytes for a in arrays)),
                "window": self.window, "stride": self.stride, "gram": self.gram}

    def _normalize(self, text: str):
        if not isinstance(text, str):
            raise InvalidInput(f"the copy guard checks text, not {type(text).__name__}; pass a str")
        try:
            return normalize(text)
        except UnicodeError as e:
            raise InvalidInput(f"the checked text {_not_unicode(e)}") from None

    def _matches(self, norm) -> tuple[np.ndarray, np.ndarray, np.ndarray, int]:
        """(a, b, source) of each maximal copied span ``norm.text[a:b]`` of ``window`` characters
        or more, by (a, -length), once each; and how many bucket entries were compared."""
        none = np.zeros(0, np.intp)
        n, gram = len(norm.text), self.gram
        if n < self.window or len(self._positions) == 0:
            return none, none, none, 0
        cps = np.frombuffer(norm.text.encode("utf-32-le", "surrogatepass"), np.uint32)
        k = np.minimum(np.searchsorted(self._alphabet, cps), len(self._alphabet) - 1)
        q = np.where(self._alphabet[k] == cps, k, self._unknown).astype(self._ids.dtype)  # (n,)

        # Every window of the text -> its bucket's entries -> the ones whose characters are equal.
        count = n - gram + 1
        bucket = (_window_hashes(q, gram, 1, count) >> self._shift).astype(np.intp)
        lo = self._offsets[bucket].astype(np.intp)
        size = np.where(_runs_of_a_unit(q, gram, 1, count), 0, self._offsets[bucket + 1].astype(np.intp) - lo)
        cum = np.cumsum(size)
        total = int(cum[-1])
        # In slices of about _SLICE entries, so memory stays bounded whatever the text.
        cuts = np.searchsorted(cum, np.arange(_SLICE, total, _SLICE))
        edges = np.unique(np.concatenate([[0], cuts, [count]]))
        hits = [self._hits(q, lo, size, int(w0), int(w1)) for w0, w1 in zip(edges[:-1], edges[1:])]
        qpos, ppos = np.concatenate([h[0] for h in hits]), np.concatenate([h[1] for h in hits])
        if qpos.size == 0:
            return none, none, none, total

        # Hits on one diagonal (ppos - qpos) whose windows touch are one match: extend it once.
        diag = ppos - qpos
        order = np.lexsort((qpos, diag))
        qpos, diag = qpos[order], diag[order]
        new = np.ones(len(qpos), bool)
        new[1:] = (diag[1:] != diag[:-1]) | (qpos[1:] - qpos[:-1] > gram)
        first = np.flatnonzero(new)
        last = np.append(first[1:] - 1, len(qpos) - 1)
        qa, qb, d = qpos[first], qpos[last] + gram, diag[first]
        ids = self._ids
        right = _match_lengths(q, ids, qb, qb + d)
        left = _match_lengths(q[::-1], ids[::-1], n - qa, len(ids) - (qa + d))  # the same, read backwards
        a, b = qa - left, qb + right
        src, keep = a + d, b - a >= self.window
        a, b, src = a[keep], b[keep], src[keep]
        order = np.lexsort((src, a - b, a))
        a, b, src = a[order], b[order], src[order]
        first = np.ones(len(a), bool)  # the same span of the text copied from two places: the first
        first[1:] = (a[1:] != a[:-1]) | (b[1:] != b[:-1])
        return a[first], b[first], src[first], total

    def _hits(self, q: np.ndarray, lo: np.ndarray, size: np.ndarray, w0: int, w1: int):
        """(text positions, training positions) of the windows w0..w1 of ``q`` whose bucket entries
        hold the same characters."""
        size = size[w0:w1]
        qpos = np.repeat(np.arange(w0, w1), size)
        starts = np.repeat(lo[w0:w1] - (np.cumsum(size) - size), size)
        ppos = self._positions[np.arange(len(qpos)) + starts].astype(np.intp)
        # Most entries are other windows that share the bucket: the end characters tell them apart
        # with two reads each, then the survivors are compared in full.
        gram = self.gram
        ends = (self._ids[ppos] == q[qpos]) & (self._ids[ppos + gram - 1] == q[qpos + gram - 1])
        qpos, ppos = qpos[ends], ppos[ends]
        cols = np.arange(1, gram - 1)
        same = (self._ids[ppos[:, None] + cols] == q[qpos[:, None] + cols]).all(axis=1)
        return qpos[same], ppos[same]

    # -- storage -----------------------------------------------------------------------------

    def save(self, path: str | os.PathLike) -> Path:
        """Write the index to ``path`` (one .npz) through a temporary file and a rename."""
        path = Path(path)
        meta = {"format": FORMAT, "version": VERSION, "window": self.window, "stride": self.stride,
                "bits": self._bits, "chars": self.stats()["chars"], "records": len(self._starts)}
        tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex[:8]}.tmp")
        try:
            with open(tmp, "wb") as f:
                np.savez(f, meta=np.frombuffer(json.dumps(meta).encode(), np.uint8), ids=self._ids,
                         alphabet=self._alphabet, positions=self._positions, offsets=self._offsets,
                         starts=self._starts)
            os.replace(tmp, path)
        finally:
            tmp.unlink(missing_ok=True)
        return path

    @classmethod
    def load(cls, path: str | os.PathLike, *, mmap: bool = True) -> CopyIndex:
        """Read an index :meth:`save` wrote; its large arrays are mapped from the file when ``mmap``."""
        path = Path(path)
        fix = "rebuild it with CopyIndex.build(texts).save(path)"
        if not path.is_file():
            raise InvalidInput(f"copy index {path} does not exist; {fix}")
        try:
            arrays = _read_npz(path, mmap)
            meta = json.loads(bytes(arrays.pop("meta")).decode())
        except (zipfile.BadZipFile, ValueError, KeyError, OSError, EOFError, struct.error) as e:
            why = " ".join(str(e).split())  # one line, whatever the reader said
            raise InvalidInput(f"{path} is not a copy index ({type(e).__name__}: {why}); {fix}") from None
        if not isinstance(meta, dict) or meta.get("format") != FORMAT:
            found = meta.get("format") if isinstance(meta, dict) else meta
            raise InvalidInput(f"{path} is not a copy index (format {found!r}); {fix}")
        if meta.get("version") != VERSION:
            raise InvalidInput(f"copy index {path} has version {meta.get('version')!r}; this aigc reads "
                               f"version {VERSION}: {fix}")
        try:
            index = cls(window=int(meta["window"]), stride=int(meta["stride"]), bits=int(meta["bits"]),
                        **{k: arrays[k] for k in ("ids", "alphabet", "positions", "offsets", "starts")})
            problem = index._inconsistency()
        except (KeyError, TypeError, ValueError) as e:
            problem = f"{type(e).__name__}: {' '.join(str(e).split())}"
        if problem:
            raise InvalidInput(f"copy index {path} is damaged ({problem}); {fix}")
        return index

    def _inconsistency(self) -> str | None:
        """What is wrong with the arrays as loaded, or None: a damaged file must not index out of range."""
        _gram_for(self.window, self.stride)
        ids, alphabet, positions, offsets, starts = (self._ids, self._alphabet, self._positions,
                                                     self._offsets, self._starts)
        if any(a.ndim != 1 for a in (ids, alphabet, positions, offsets, starts)):
            return "an array is not one-dimensional"
        if ids.dtype.kind != "u" or positions.dtype != np.uint32 or offsets.dtype != np.uint32:
            return "unexpected array types"
        if len(alphabet) + 1 > np.iinfo(ids.dtype).max or len(offsets) != 2**self._bits + 1:
            return "array sizes disagree"
        if int(offsets[0]) != 0 or int(offsets[-1]) != len(positions) or np.any(offsets[1:] < offsets[:-1]):
            return "bucket table does not cover the entries"
        if len(positions) and int(positions.max()) > len(ids) - self.gram:
            return "an entry points past the text"
        if np.any(alphabet[1:] <= alphabet[:-1]):
            return "the alphabet is not sorted"
        if len(ids) and int(ids.max()) > len(alphabet):
            return "a character outside the alphabet"
        if len(starts) == 0 or int(starts[0]) != 0 or np.any(starts[1:] <= starts[:-1]) \
                or int(starts[-1]) > len(ids):
            return "record starts are out of order"
        return None


def _read_npz(path: Path, mmap: bool) -> dict[str, np.ndarray]:
    """The arrays of an uncompressed .npz; large ones mapped from the file (read-only) when ``mmap``."""
    arrays: dict[str, np.ndarray] = {}
    with open(path, "rb") as f, zipfile.ZipFile(f) as zf:
        for info in zf.infolist():
            name = info.filename.removesuffix(".npy")
            if not (mmap and info.compress_type == zipfile.ZIP_STORED and info.file_size >= _MMAP_MIN_BYTES):
                with zf.open(info) as member:
                    arrays[name] = np.lib.format.read_array(member, allow_pickle=False)
                continue
            f.seek(info.header_offset)  # the member's local header, then its .npy header, then the data
            local = f.read(30)
            if local[:4] != b"PK\x03\x04":
                raise ValueError(f"member {info.filename} has no local header")
            name_len, extra_len = struct.unpack("<HH", local[26:30])
            f.seek(info.header_offset + 30 + name_len + extra_len)
            version = np.lib.format.read_magic(f)
            fmt = np.lib.format
            header = fmt.read_array_header_1_0 if version == (1, 0) else fmt.read_array_header_2_0
            shape, fortran, dtype = header(f)
            if dtype.hasobject:
                raise ValueError(f"member {info.filename} holds Python objects")
            arrays[name] = np.memmap(path, dtype=dtype, mode="r", offset=f.tell(), shape=shape,
                                     order="F" if fortran else "C").view(np.ndarray)
    return arrays
