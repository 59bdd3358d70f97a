"""An online reward model learned from user feedback: "more like what this user liked".

Ratings arrive one at a time (a thumbs up or down on one output, a choice among candidates for
one prompt, an edit whose corrected text is preferred over the generated one) and each updates a
linear model at once, in a millisecond or two, so the next request's candidates are reranked by
what was rated seconds before. No network and no downloaded model: the features come from the
text itself (plus, optionally, a vector the caller passes, e.g. a model's hidden state).

Features (one fixed-size sparse vector a text, made for a batch of texts at once as
``(row, idx, val)`` arrays; see :class:`Featurizer`):

- hashed character n-grams (1-4 by default) of the lower-cased text, which needs no word
  segmentation and so serves Chinese and English alike;
- hashed word unigrams and bigrams, for a text with spaces in it;
- a few dense surface features that preferences often hinge on (:data:`DENSE_FEATURES`: length,
  as log-length and a piecewise-linear function of it; ``!`` and ``?`` counts; digit,
  punctuation, emoji, upper-case, Latin and CJK shares; a terminal punctuation mark at the end;
  line breaks);
- the caller's vector (scaled to unit L2 norm), if the model was made with ``extra_dim`` > 0.

Texts are cleaned as ingest cleans records (NFKC except CJK punctuation, spaces tidied), so a
full-width letter from an input method is the same feature as its half-width form. Each kind of
n-gram is scaled to unit L2 norm a text (presence / sqrt(how many)), so a long text is not loud
merely for having many n-grams; its length speaks through the length features. Hashing is
signed (Weinberger et al. 2009), so collisions cancel on average rather than add up, and is our
own 64-bit hash (FNV-1a + splitmix64's finalizer, numpy-vectorized), the same in every process
(Python's ``hash`` of a str is salted).

With ``prompt_aware``, each feature also gets a copy keyed by the prompt (the same paper's
personalization trick): the model learns a taste for all prompts and one for each prompt,
and a prompt never rated gets the taste for all. Off by default: ratings are few, and most
taste (tone, length, punctuation, what to mention) holds across prompts.

Objective (Bradley-Terry / logistic): a pair ``chosen > rejected`` costs
``-log sigmoid(s(chosen) - s(rejected))`` with ``s(x) = w . phi(x)``; a choice is a pair with each
candidate not chosen; an edit is a pair with the edited text chosen. A thumb costs
``-log sigmoid(y * (s(x) + b + b_prompt))``, ``y = +-1``: the global bias ``b`` and a hashed
per-prompt bias ``b_prompt`` absorb how generous raters are overall and on each prompt, so the
weights learn only what sets liked outputs apart. ``score`` is ``s(x)`` alone (the biases do not
change the order of one prompt's candidates).

Defaults (:class:`RewardConfig`) and why. They are generic, the same for every language and taste:

- Adagrad (Duchi et al. 2011), ``lr`` 0.1, initial accumulator 0.1 (TensorFlow's default): each
  feature gets its own step, so a rare n-gram that decides the taste ("linen", "羊毛") learns as
  fast as a common one, and steps shrink as evidence grows, which keeps the model stable over
  hundreds of ratings without a schedule. The initial accumulator damps the very first steps.
- ``steps`` 2 passes on the new rating plus ``replay`` 16 drawn from the last ``buffer`` 512:
  the new rating moves the model now, the replay keeps older ratings from being forgotten
  and averages out a single noisy one. 200 ratings cost 200 * 18 sparse steps (~0.2 s on
  one core).
- L2 ``l2`` 1e-3 on the weights a step touches (lazy, the usual sparse form): a weight grows only
  while ratings keep supporting it.
- 2^18 hashed dimensions: few collisions for the n-grams of thousands of short outputs; the
  model keeps two float64 arrays of that size (4 MiB) and saves only the weights that moved.
- Length as hat features on half octaves rather than one-hot bins: with bins, two texts in one
  bin (50 and 63 characters) tie, so a taste for "under 60" could not rank inside the bin.

These were checked, not tuned, on simulated raters (tests/test_reward.py: three tastes, English
and Chinese): with lr 0.05-0.3, l2 1e-4-1e-2, replay 4-16 or steps 1-2, 200 pairs teach every
taste well enough that the top pick fits it in all 64 held-out sets of 8.

This module knows texts, prompts, vectors and a file to save to. It knows nothing of the
workspace, the log or the server, which call it. It is not thread-safe: one caller at a time.
"""

from __future__ import annotations

import functools
import json
import math
import os
import re
import unicodedata
import uuid
import zlib
from collections import deque
from collections.abc import Sequence
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

import numpy as np

from aigc.data.clean import clean_text
from aigc.errors import InvalidInput

FORMAT = "aigc-reward-1"

CHAR_NGRAM_MAX = 6  # longer character n-grams are nearly all unique: memory, not signal
WORD_NGRAM_MAX = 3

# Length: log-length, and a piecewise-linear function of it: "hat" features at every half octave
# from 8 to 1,024 characters, two of them non-zero for a text (e.g. 60 characters: 0.19 on the knot
# at 45, 0.81 on the one at 64), so a taste for any length range can be learned and lengths inside
# a range still rank (one-hot bins would tie 50 and 63 characters).
_KNOTS = tuple(2 ** (k / 2) for k in range(6, 21))
DENSE_FEATURES = (
    "log_chars",  # log1p(characters) / log(1024): about 1 for a 1,000-character text
    *(f"chars~{round(k)}" for k in _KNOTS),
    "exclamations",  # log1p(count of ! and ！)
    "questions",  # log1p(count of ? and ？)
    "digit_share", "punctuation_share", "emoji_share", "upper_share",  # upper: of the letters
    "latin_share", "cjk_share",
    "ends_terminal",  # 1 when the last character is . ! ? 。 ！ ？ or …
    "line_breaks",  # log1p(count of \n)
)
_TERMINAL = frozenset(".!?。！？…")
_BREAK = "\x00"  # between the texts of a batch; cleaned text has no NUL
_WORDS = re.compile(r"\w+|[^\w\s]")  # words, and each punctuation mark a word of its own

# Character classes for the dense features, one bit each, looked up by code point.
_DIGIT, _PUNCT, _LETTER, _UPPER, _LATIN, _CJK, _EMOJI = (np.uint8(1 << i) for i in range(7))
_BITS = (np.arange(256)[:, None] >> np.arange(7)) & 1  # (256, 7): the bits of each class value
_TABLE_SIZE = 0x30000  # the BMP, emoji (U+1Fxxx) and CJK extensions (U+2xxxx); beyond: no class
_CJK_RANGES = ((0x3040, 0x30FF), (0x3400, 0x4DBF), (0x4E00, 0x9FFF), (0xAC00, 0xD7AF), (0xF900, 0xFAFF),
               (0x20000, 0x2FA1F))  # kana, Han, Hangul
_EMOJI_RANGES = ((0x2600, 0x27BF), (0x1F000, 0x1FAFF))
_LATIN_RANGES = ((0x41, 0x5A), (0x61, 0x7A), (0xC0, 0x24F), (0x1E00, 0x1EFF))


@functools.cache
def _char_classes() -> np.ndarray:
    """(0x30000,) uint8 class bits by code point; built on first use (~50 ms), then kept. Unicode
    categories for the BMP; above it only the ranges (emoji, CJK extensions, letters all)."""
    bmp = np.array([unicodedata.category(chr(c)) for c in range(0x10000)])  # (65536,) 'Lu', 'Nd', ...
    major = bmp.astype("U1")
    letters = np.zeros(_TABLE_SIZE, dtype=bool)
    letters[:0x10000] = major == "L"
    for lo, hi in _CJK_RANGES:
        letters[lo:hi + 1] |= lo >= 0x10000
    table = np.zeros(_TABLE_SIZE, dtype=np.uint8)
    table[:0x10000] |= np.where(bmp == "Nd", _DIGIT, 0).astype(np.uint8)
    table[:0x10000] |= np.where(major == "P", _PUNCT, 0).astype(np.uint8)
    table[:0x10000] |= np.where(bmp == "Lu", _UPPER, 0).astype(np.uint8)
    table[letters] |= _LETTER
    for ranges, bit in ((_LATIN_RANGES, _LATIN), (_CJK_RANGES, _CJK), (_EMOJI_RANGES, _EMOJI)):
        for lo, hi in ranges:
            table[lo:hi + 1] |= bit
    table[(table & _LATIN).astype(bool) & ~letters] &= ~_LATIN  # Latin letters only, not the signs between
    return table


def _code_points(text: str) -> np.ndarray:
    """(len(text),) uint32 code points."""
    return np.frombuffer(text.encode("utf-32-le"), dtype="<u4")


def dense_features(texts: Sequence[str]) -> np.ndarray:
    """(B, F) the :data:`DENSE_FEATURES` of cleaned, non-empty ``texts``, one row a text."""
    batch = len(texts)
    units = _code_points(_BREAK.join(texts))
    breaks = units == 0
    row = np.cumsum(breaks)[~breaks]  # (C,) the text of each character
    units = units[~breaks]
    n = np.bincount(row, minlength=batch).astype(np.float64)  # (B,) characters

    def per_text(mask: np.ndarray) -> np.ndarray:  # (C,) bool -> (B,) how many in each text
        return np.bincount(row, weights=mask, minlength=batch)

    classes = _char_classes()[np.minimum(units, _TABLE_SIZE - 1)]
    # (B, 256) characters with each combination of class bits @ (256, 7) the bits of each -> (B, 7)
    digit, punct, letter, upper, latin, cjk, emoji = (
        np.bincount(row * 256 + classes, minlength=batch * 256).reshape(batch, 256) @ _BITS).T
    at = np.clip(2 * np.log2(n) - 6, 0.0, len(_KNOTS) - 1.0)  # (B,) position among the length knots
    left = np.minimum(at.astype(np.int64), len(_KNOTS) - 2)
    hats = np.zeros((batch, len(_KNOTS)))
    hats[np.arange(batch), left] = left + 1 - at
    hats[np.arange(batch), left + 1] = at - left
    last = units[np.cumsum(n).astype(np.int64) - 1]  # (B,) each text's last character
    return np.column_stack([
        np.log1p(n) / math.log(1024), hats,
        np.log1p(per_text((units == ord("!")) | (units == ord("！")))),
        np.log1p(per_text((units == ord("?")) | (units == ord("？")))),
        digit / n, punct / n, emoji / n, upper / np.maximum(letter, 1), latin / n, cjk / n,
        np.isin(last, [ord(c) for c in _TERMINAL]), np.log1p(per_text(units == ord("\n"))),
    ])


# Hashing: FNV-1a over the units of an n-gram (code points, or words' crc32), then splitmix64's
# finalizer so every bit of the result depends on every unit. 64-bit, vectorized over a whole
# batch of texts, and the same in every process. The low hash_bits bits pick the dimension, bit 63
# the sign.
_FNV_PRIME = np.uint64(0x100000001B3)
_SEEDS = {"char": 0xCBF29CE484222325, "word": 0x84222325CBF29CE4, "dense": 0x9E3779B97F4A7C15,
          "prompt": 0x2545F4914F6CDD1D}


def _mix(x: np.ndarray) -> np.ndarray:
    """splitmix64's finalizer, elementwise on uint64 (wrapping arithmetic)."""
    x = x ^ (x >> np.uint64(30))
    x = x * np.uint64(0xBF58476D1CE4E5B9)
    x = x ^ (x >> np.uint64(27))
    x = x * np.uint64(0x94D049BB133111EB)
    return x ^ (x >> np.uint64(31))


def _ngrams(units: np.ndarray, breaks: np.ndarray, sizes: tuple[int, int],
            kind: str) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Every n-gram of ``units`` (rows joined by a break unit, ``breaks`` marking them) that crosses
    no break, lo <= n <= hi, each once a row: ``(row, hash, start, n)``, (G,) each, sorted by row."""
    lo, hi = sizes
    before = np.concatenate(([0], np.cumsum(breaks)))  # (L + 1,) breaks before each position
    h = units.astype(np.uint64) ^ np.uint64(_SEEDS[kind])  # (L,) the 1-grams
    rows, hashes, starts, ns = [], [], [], []
    for n in range(1, min(hi, len(units)) + 1):
        m = len(units) - n + 1
        if n > 1:  # FNV-1a, one unit further: the n-grams from the (n-1)-grams
            h = (h[:-1] * _FNV_PRIME) ^ units[n - 1:].astype(np.uint64)
        if n >= lo:
            ok = before[n:n + m] == before[:m]  # no break in [p, p + n)
            rows.append(before[:m][ok])
            hashes.append(h[ok])
            starts.append(np.flatnonzero(ok))
            ns.append(np.full(len(starts[-1]), n))
    if not rows:  # every text shorter than the shortest n-gram
        empty = np.zeros(0, dtype=np.int64)
        return empty, np.zeros(0, dtype=np.uint64), empty, empty
    row, hashed = np.concatenate(rows), _mix(np.concatenate(hashes))
    order = np.lexsort((hashed, row))
    row, hashed = row[order], hashed[order]
    first = np.concatenate(([True], (row[1:] != row[:-1]) | (hashed[1:] != hashed[:-1])))
    keep = order[first]
    return row[first], hashed[first], np.concatenate(starts)[keep], np.concatenate(ns)[keep]


@dataclass(frozen=True)
class RewardConfig:
    """What a :class:`RewardModel` is made of; saved with it. See the module docstring for why."""

    hash_bits: int = 18  # 2^18 hashed n-gram dimensions
    char_ngrams: tuple[int, int] = (1, 4)  # (shortest, longest) character n-gram
    word_ngrams: tuple[int, int] | None = (1, 2)  # None: no word features
    extra_dim: int = 0  # length of the caller's vector per text (0: none)
    prompt_aware: bool = False  # also learn a taste per prompt
    prompt_buckets: int = 4096  # hashed per-prompt biases for thumbs
    lr: float = 0.1  # Adagrad step
    initial_accumulator: float = 0.1  # Adagrad's accumulator at start (TensorFlow's default)
    l2: float = 1e-3  # L2 on the weights a step touches
    steps: int = 2  # passes over each new rating
    replay: int = 16  # recent ratings replayed after each new one
    buffer: int = 512  # how many recent ratings replay draws from (and a save keeps)
    seed: int = 0  # the replay's draws

    def __post_init__(self):
        object.__setattr__(self, "char_ngrams", _ngram_range("char_ngrams", self.char_ngrams, CHAR_NGRAM_MAX))
        if self.word_ngrams is not None:
            words = _ngram_range("word_ngrams", self.word_ngrams, WORD_NGRAM_MAX)
            object.__setattr__(self, "word_ngrams", words)
        _whole("hash_bits", self.hash_bits, 10, 24, "18 (2^18 dimensions)")
        _whole("extra_dim", self.extra_dim, 0, 1 << 16, "0 (no vector) or the length of your vectors")
        _whole("prompt_buckets", self.prompt_buckets, 1, 1 << 20, "4096")
        _whole("steps", self.steps, 1, 100, "2")
        _whole("replay", self.replay, 0, 10_000, "16")
        _whole("buffer", self.buffer, 1, 1_000_000, "512")
        _whole("seed", self.seed, 0, 2**63 - 1, "0")
        for name, value in (("lr", self.lr), ("initial_accumulator", self.initial_accumulator)):
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 < value < math.inf:
                raise InvalidInput(f"{name} must be a number > 0, got {value!r}; e.g. 0.1")
        if isinstance(self.l2, bool) or not isinstance(self.l2, (int, float)) or not 0 <= self.l2 < 1:
            raise InvalidInput(f"l2 must be a number in [0, 1), got {self.l2!r}; e.g. 1e-3")
        if not isinstance(self.prompt_aware, bool):
            raise InvalidInput(f"prompt_aware must be true or false, got {self.prompt_aware!r}")

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> RewardConfig:
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise InvalidInput(f"unknown reward config keys {unknown}; known keys: {sorted(known)}")
        data = dict(data)
        for key in ("char_ngrams", "word_ngrams"):
            if isinstance(data.get(key), list):
                data[key] = tuple(data[key])
        return cls(**data)


def _ngram_range(name: str, value: Any, most: int) -> tuple[int, int]:
    ok = (isinstance(value, (tuple, list)) and len(value) == 2
          and all(isinstance(v, int) and not isinstance(v, bool) for v in value)
          and 1 <= value[0] <= value[1] <= most)
    if not ok:
        raise InvalidInput(f"{name} must be (shortest, longest) with 1 <= shortest <= longest <= {most}, "
                           f"got {value!r}; e.g. (1, 4) for characters, (1, 2) for words")
    return int(value[0]), int(value[1])


def _whole(name: str, value: Any, lo: int, hi: int, hint: str) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or not lo <= value <= hi:
        raise InvalidInput(f"{name} must be a whole number from {lo} to {hi}, got {value!r}; e.g. {hint}")


def _text(value: Any, name: str) -> str:
    """``value`` cleaned as ingest cleans records (NFKC but CJK punctuation, spaces tidied)."""
    if not isinstance(value, str):
        raise InvalidInput(f"{name} must be a string, got {type(value).__name__} {value!r:.60}")
    text = clean_text(value)
    if not text:
        raise InvalidInput(f"{name} is empty (got {value!r:.60}); pass the text itself, "
                           "at least one character that is not a space")
    return text


def _prompt(value: Any) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str):
        raise InvalidInput(f"prompt must be a string or None, got {type(value).__name__} {value!r:.60}")
    return clean_text(value) or None  # an empty prompt is no prompt


class Featurizer:
    """Texts (+ vectors) -> one sparse vector a text, as ``(row, idx, val)`` arrays in ``dim``
    dimensions. Vectorized over the batch: 8 short texts take under a millisecond on one core,
    much of it numpy's per-call cost, which a batch pays once.

    Layout: ``[0, 2^hash_bits)`` hashed n-grams, then the dense features, then the caller's
    vector (``extra_dim``). ``dim`` counts them all."""

    def __init__(self, config: RewardConfig):
        self.config = config
        self.mask = np.uint64((1 << config.hash_bits) - 1)
        self.dense_at = 1 << config.hash_bits
        self.extra_at = self.dense_at + len(DENSE_FEATURES)
        self.dim = self.extra_at + config.extra_dim

    def __call__(self, texts: Sequence[str], prompt: str | None = None, vectors: Sequence[Any] | None = None,
                 names: dict[int, set[str]] | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Features of cleaned, non-empty ``texts``: ``(row, idx, val)``, (K,) each, text ``row``
        having ``val`` at ``idx`` (an index may repeat within a row: the values add up). ``vectors``
        (one per text, None for none) must already be :meth:`check_vector`'d. ``names``, when
        given, gets the features behind each index (for :meth:`RewardModel.explain`)."""
        cfg, batch = self.config, len(texts)
        lowered = [t.lower() for t in texts]
        groups = []  # (row, hash, labels or None): one group a kind of n-gram
        joined = _BREAK.join(f" {t} " for t in lowered)  # padded: n-grams see where a text starts and ends
        units = _code_points(joined)
        row, h, start, n = _ngrams(units, units == 0, cfg.char_ngrams, "char")
        labels = None if names is None else [f"char {joined[s:s + k]!r}" for s, k in zip(start, n)]
        groups.append((row, h, labels))
        if cfg.word_ngrams is not None:
            words: list[str] = []
            for t in lowered:  # a text without spaces (Chinese, or one word) has no word features
                words += (_WORDS.findall(t) if " " in t or "\n" in t else []) + [_BREAK]
            crcs = np.array([0 if w == _BREAK else zlib.crc32(w.encode()) | 1 << 32 for w in words],
                            dtype=np.uint64)  # (W,) a word's crc32 with bit 32 set: never 0, the break
            if len(crcs) > batch:
                row, h, start, n = _ngrams(crcs, crcs == 0, cfg.word_ngrams, "word")
                groups.append((row, h, None if names is None
                               else [f"word {' '.join(words[s:s + k])!r}" for s, k in zip(start, n)]))
        salt = None
        if cfg.prompt_aware and prompt:
            salt = _mix(np.array([zlib.crc32(prompt.encode()) ^ _SEEDS["prompt"]], dtype=np.uint64))
        rows, idx, val = [], [], []

        def add(r: np.ndarray, i: np.ndarray, v: np.ndarray, labels: Sequence[str] | None) -> None:
            rows.append(r)
            idx.append(i)
            val.append(v)
            if names is not None:
                for k, label in zip(i.tolist(), labels):
                    names.setdefault(k, set()).add(label)

        def add_hashed(r: np.ndarray, h: np.ndarray, v: np.ndarray, labels: Sequence[str] | None) -> None:
            """Signed features at hashes ``h``, and with a prompt, again keyed by it."""
            for hh, where in [(h, "")] + ([] if salt is None else [(_mix(h ^ salt), " @prompt")]):
                add(r, (hh & self.mask).astype(np.int64), np.where(hh >> np.uint64(63), v, -v),
                    None if labels is None else [label + where for label in labels])

        for row, h, labels in groups:
            count = np.bincount(row, minlength=batch)  # (B,) n-grams of each text
            add_hashed(row, h, 1.0 / np.sqrt(count[row]), labels)  # unit L2 a text: presence, not counts
        dense = dense_features(texts)  # (B, F)
        rows_f = np.repeat(np.arange(batch), dense.shape[1])
        add(rows_f, np.tile(np.arange(self.dense_at, self.extra_at), batch), dense.ravel(),
            DENSE_FEATURES * batch)
        if salt is not None:  # the dense features keyed by the prompt too
            h = _mix(np.arange(len(DENSE_FEATURES), dtype=np.uint64) ^ np.uint64(_SEEDS["dense"]))
            add(rows_f, (_mix(np.tile(h, batch) ^ salt) & self.mask).astype(np.int64), dense.ravel(),
                [f"{label} @prompt" for label in DENSE_FEATURES] * batch)
        for r, vector in enumerate(vectors or []):
            if vector is not None:
                norm = float(np.linalg.norm(vector))  # unit L2: the scale of a hidden state varies
                add(np.full(cfg.extra_dim, r), np.arange(self.extra_at, self.dim), vector / (norm or 1.0),
                    [f"vector[{j}]" for j in range(cfg.extra_dim)])
        row, i, v = np.concatenate(rows), np.concatenate(idx), np.concatenate(val)
        keep = v != 0.0  # zero dense features
        return row[keep], i[keep], v[keep]

    def check_vector(self, vector: Any) -> np.ndarray:
        """``vector`` as a finite float array of ``extra_dim`` values."""
        want = self.config.extra_dim
        if want == 0:
            raise InvalidInput("this reward model takes no vectors (extra_dim 0); leave the vector out, "
                               "or make a RewardModel(RewardConfig(extra_dim=N)) for N-value vectors")
        try:
            vec = np.asarray(vector, dtype=np.float64).reshape(-1)
        except (TypeError, ValueError):
            raise InvalidInput(f"vector must be a list of {want} numbers, got {vector!r:.60}") from None
        if vec.shape != (want,) or not np.isfinite(vec).all():
            raise InvalidInput(f"vector must be {want} finite numbers (extra_dim), got {vec.size} "
                               f"{'with NaN or inf' if vec.shape == (want,) else 'values'}; "
                               "pass one vector a text")
        return vec


def _sigmoid(z: float) -> float:
    return 1.0 / (1.0 + math.exp(-z)) if z >= 0 else math.exp(z) / (1.0 + math.exp(z))


def _map_vectors(rating: dict[str, Any], fn) -> dict[str, Any]:
    """``rating`` with ``fn`` applied to each vector it has (``vector``, ``vector_chosen``, ...)."""
    return {k: (fn(v) if k.startswith("vector") and v is not None else v) for k, v in rating.items()}


def _merge(idx: np.ndarray, val: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Sum the values of repeated indices: (K,) -> (U,) with unique sorted indices."""
    order = np.argsort(idx, kind="stable")
    idx, val = idx[order], val[order]
    starts = np.flatnonzero(np.concatenate(([True], idx[1:] != idx[:-1])))
    if len(starts) == len(idx):  # no repeats (most texts): nothing to add up
        return idx, val
    return idx[starts], np.add.reduceat(val, starts)


class RewardModel:
    """A linear reward model over :class:`Featurizer` features, trained online from ratings.

    ``add_pair``, ``add_choice``, ``add_edit`` and ``add_thumb`` each learn from one rating at
    once; ``score`` and ``rerank`` read the model. ``save`` / ``load`` keep everything, the
    recent ratings and the replay's random state included, so a loaded model goes on learning
    exactly as the saved one would have."""

    def __init__(self, config: RewardConfig | None = None):
        self.config = config if config is not None else RewardConfig()
        if not isinstance(self.config, RewardConfig):
            raise InvalidInput(f"config must be a RewardConfig, got {type(self.config).__name__}")
        self.featurize = Featurizer(self.config)
        self.bias_at = self.featurize.dim  # the global bias of thumbs, then the per-prompt ones
        size = self.bias_at + 1 + self.config.prompt_buckets
        self.weights = np.zeros(size)
        self.accum = np.full(size, float(self.config.initial_accumulator))
        self.n_ratings = 0
        self._recent: deque[dict[str, Any]] = deque(maxlen=self.config.buffer)  # as saved: texts
        self._examples: deque[tuple] = deque(maxlen=self.config.buffer)  # the same, featurized
        self._rng = np.random.default_rng(self.config.seed)

    # -- ratings ---------------------------------------------------------------------------------

    def add_pair(self, prompt: str | None, chosen: str, rejected: str, *,
                 vector_chosen: Any = None, vector_rejected: Any = None) -> None:
        """Learn that ``chosen`` is better than ``rejected`` for ``prompt``."""
        self._add_pair(prompt, ("chosen", chosen, vector_chosen), ("rejected", rejected, vector_rejected),
                       "chosen and rejected are the same text ({text}); a preference needs two different "
                       "outputs (for a single output use add_thumb)")

    def add_choice(self, prompt: str | None, chosen: str, others: Sequence[str], *,
                   vector_chosen: Any = None, vectors_others: Sequence[Any] | None = None) -> None:
        """Learn that ``chosen`` beat each of ``others`` (the candidates shown with it for ``prompt``)."""
        p = _prompt(prompt)
        a = _text(chosen, "chosen")
        if isinstance(others, str) or not isinstance(others, Sequence) or not others:
            raise InvalidInput("others must be a non-empty list of the candidates not chosen, "
                               f"got {others!r:.60}")
        rest = [_text(o, f"others[{i}]") for i, o in enumerate(others)]
        if vectors_others is not None and len(vectors_others) != len(rest):
            raise InvalidInput(f"vectors_others has {len(vectors_others)} vectors for {len(rest)} others; "
                               "pass one vector per candidate, or none")
        vecs = list(vectors_others) if vectors_others is not None else [None] * len(rest)
        pairs = [{"kind": "pair", "prompt": p, "chosen": a, "rejected": b,
                  "vector_chosen": vector_chosen, "vector_rejected": v} for b, v in zip(rest, vecs) if b != a]
        if not pairs:
            raise InvalidInput(f"every other candidate is the chosen text itself ({a!r:.60}); "
                               "a choice needs a different candidate to win over")
        self._learn(pairs)

    def add_edit(self, prompt: str | None, generated: str, edited: str, *,
                 vector_generated: Any = None, vector_edited: Any = None) -> None:
        """Learn that the user's ``edited`` text is better than the ``generated`` one it corrects."""
        self._add_pair(prompt, ("edited", edited, vector_edited), ("generated", generated, vector_generated),
                       "edited is the same as generated ({text}) once cleaned; an edit must change the text "
                       "(to approve it unchanged, use add_thumb(prompt, text, True))")

    def _add_pair(self, prompt: str | None, chosen: tuple[str, Any, Any], rejected: tuple[str, Any, Any],
                  same: str) -> None:
        """``chosen`` and ``rejected`` are (argument name, text, vector); ``same`` the message for two
        texts that are one once cleaned."""
        p = _prompt(prompt)
        a, b = _text(chosen[1], chosen[0]), _text(rejected[1], rejected[0])
        if a == b:
            raise InvalidInput(same.format(text=f"{a!r:.60}"))
        self._learn([{"kind": "pair", "prompt": p, "chosen": a, "rejected": b,
                      "vector_chosen": chosen[2], "vector_rejected": rejected[2]}])

    def add_thumb(self, prompt: str | None, text: str, up: bool, *, vector: Any = None) -> None:
        """Learn from a thumbs up (``up=True``) or down on one output for ``prompt``."""
        p = _prompt(prompt)
        t = _text(text, "text")
        if not isinstance(up, bool):
            raise InvalidInput(f"up must be True (thumbs up) or False (thumbs down), got {up!r:.60}")
        self._learn([{"kind": "thumb", "prompt": p, "text": t, "up": up, "vector": vector}])

    # -- reading ---------------------------------------------------------------------------------

    def score(self, texts: Sequence[str], prompt: str | None = None, *,
              vectors: Sequence[Any] | None = None) -> list[float]:
        """The reward of each text for ``prompt`` (higher: more like what was liked)."""
        p = _prompt(prompt)
        if isinstance(texts, str) or not isinstance(texts, Sequence):
            raise InvalidInput(f"texts must be a list of strings, got {type(texts).__name__}; "
                               "wrap one text in [ ]")
        if vectors is not None and len(vectors) != len(texts):
            raise InvalidInput(f"vectors has {len(vectors)} vectors for {len(texts)} texts; "
                               "pass one a text, or none")
        cleaned = [_text(t, f"texts[{i}]") for i, t in enumerate(texts)]
        if not cleaned:
            return []
        checked = None if vectors is None else [self._vector(v) for v in vectors]
        row, idx, val = self.featurize(cleaned, p, checked)
        return np.bincount(row, weights=self.weights[idx] * val, minlength=len(cleaned)).tolist()

    def rerank(self, candidates: Sequence[str], prompt: str | None = None, *,
               vectors: Sequence[Any] | None = None) -> list[int]:
        """Indices of ``candidates``, best first; ties keep the order given."""
        if isinstance(candidates, Sequence) and not isinstance(candidates, str) and not candidates:
            raise InvalidInput("candidates is empty; pass at least one text to rerank")
        scores = np.asarray(self.score(candidates, prompt, vectors=vectors))
        return [int(i) for i in np.argsort(-scores, kind="stable")]

    def explain(self, text: str, top: int = 5, prompt: str | None = None, *,
                vector: Any = None) -> list[tuple[str, float]]:
        """The ``top`` features that pushed ``text``'s score most, as ``(feature, contribution)``,
        largest ``|contribution|`` first, those that pushed nothing left out; all of them add up
        to the score. A hashed index that several n-grams share names them all, joined by ``|``."""
        if isinstance(top, bool) or not isinstance(top, int) or top < 1:
            raise InvalidInput(f"top must be a whole number >= 1, got {top!r}; e.g. 5")
        names: dict[int, set[str]] = {}
        _, idx, val = self.featurize([_text(text, "text")], _prompt(prompt), [self._vector(vector)], names)
        idx, val = _merge(idx, val)
        contrib = self.weights[idx] * val
        order = np.argsort(-np.abs(contrib), kind="stable")[:top]
        return [(" | ".join(sorted(names[int(idx[k])])), float(contrib[k])) for k in order if contrib[k] != 0]

    # -- learning --------------------------------------------------------------------------------

    def _vector(self, vector: Any) -> np.ndarray | None:
        return None if vector is None else self.featurize.check_vector(vector)

    def _learn(self, ratings: list[dict[str, Any]]) -> None:
        """Check and featurize every rating before anything changes, then step: all or nothing."""
        ratings = [_map_vectors(r, self.featurize.check_vector) for r in ratings]
        examples = [self._example(r) for r in ratings]
        for rating, example in zip(ratings, examples):
            self._recent.append(_map_vectors(rating, np.ndarray.tolist))
            self._examples.append(example)
        self.n_ratings += 1
        for _ in range(self.config.steps):
            for example in examples:
                self._step(example)
        if self.config.replay and len(self._examples) > len(examples):
            for k in self._rng.integers(0, len(self._examples), size=self.config.replay):
                self._step(self._examples[int(k)])

    def _example(self, r: dict[str, Any]) -> tuple:
        """A rating as the arrays a step needs: ``("pair", idx, val)`` with val = chosen - rejected,
        or ``("thumb", idx, val, y)`` with the biases' coordinates included; indices unique."""
        p = r["prompt"]
        if r["kind"] == "pair":
            texts, vectors = [r["chosen"], r["rejected"]], [r["vector_chosen"], r["vector_rejected"]]
            row, idx, val = self.featurize(texts, p, vectors)
            return ("pair", *_merge(idx, np.where(row == 0, val, -val)))
        _, idx, val = self.featurize([r["text"]], p, [r["vector"]])
        biases = [self.bias_at]  # global, and the prompt's own
        if p is not None:
            biases.append(self.bias_at + 1 + zlib.crc32(p.encode()) % self.config.prompt_buckets)
        idx, val = _merge(np.concatenate([idx, biases]), np.concatenate([val, np.ones(len(biases))]))
        return ("thumb", idx, val, 1.0 if r["up"] else -1.0)

    def _step(self, example: tuple) -> None:
        """One Adagrad step on one example's logistic loss, L2 on its weights (not the global bias)."""
        kind, idx, val = example[:3]
        z = float(self.weights[idx] @ val)
        if kind == "pair":
            grad = -_sigmoid(-z) * val  # d/dw of -log sigmoid(w . (x_chosen - x_rejected))
        else:
            y = example[3]
            grad = -y * _sigmoid(-y * z) * val
        w = self.weights[idx]
        grad = grad + self.config.l2 * np.where(idx == self.bias_at, 0.0, w)
        self.accum[idx] += grad * grad
        self.weights[idx] = w - self.config.lr * grad / np.sqrt(self.accum[idx])

    # -- saving ----------------------------------------------------------------------------------

    def state_dict(self) -> dict[str, Any]:
        """Everything that makes this model, as arrays (weights and accumulators that moved) and
        JSON-able values (config, rating count, recent ratings, the replay's random state)."""
        moved = np.flatnonzero((self.weights != 0) | (self.accum != self.config.initial_accumulator))
        return {"format": FORMAT, "config": asdict(self.config), "n_ratings": self.n_ratings,
                "recent": list(self._recent), "rng": self._rng.bit_generator.state,
                "index": moved, "weights": self.weights[moved], "accum": self.accum[moved]}

    @classmethod
    def from_state_dict(cls, state: dict[str, Any]) -> RewardModel:
        if not isinstance(state, dict) or state.get("format") != FORMAT:
            got = state.get("format") if isinstance(state, dict) else type(state).__name__
            raise InvalidInput(f"not a reward model state (format {got!r}, want {FORMAT!r}); "
                               "pass what RewardModel.state_dict() or save() wrote")
        model = cls(RewardConfig.from_dict(state["config"]))
        index = np.asarray(state["index"], dtype=np.int64)
        if index.size and (index.min() < 0 or index.max() >= model.weights.size):
            raise InvalidInput(f"reward model state has weight indices outside 0..{model.weights.size - 1}; "
                               "the file is damaged or from another config: save it again")
        model.weights[index] = state["weights"]
        model.accum[index] = state["accum"]
        model.n_ratings = int(state["n_ratings"])
        for rating in state["recent"]:
            model._recent.append(rating)
            model._examples.append(model._example(_map_vectors(rating, model.featurize.check_vector)))
        model._rng.bit_generator.state = state["rng"]
        return model

    def save(self, path: str | Path) -> Path:
        """Write the model to ``path`` (``.npz``: arrays plus a JSON ``meta``), atomically: a
        temporary file in the same folder, then renamed over ``path``."""
        path = Path(path)
        if not path.parent.is_dir():
            raise InvalidInput(f"cannot save the reward model to {str(path)!r}: folder {str(path.parent)!r} "
                               "does not exist; create it first")
        state = self.state_dict()
        meta = {k: v for k, v in state.items() if k not in ("index", "weights", "accum")}
        tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex[:8]}.tmp")
        try:
            with open(tmp, "wb") as fh:
                np.savez(fh, index=state["index"], weights=state["weights"], accum=state["accum"],
                         meta=np.array(json.dumps(meta, ensure_ascii=False)))
            os.replace(tmp, path)
        finally:
            tmp.unlink(missing_ok=True)
        return path

    @classmethod
    def load(cls, path: str | Path) -> RewardModel:
        """The model :meth:`save` wrote to ``path``."""
        path = Path(path)
        if not path.is_file():
            raise InvalidInput(f"no reward model file at {str(path)!r}; "
                               "save one with RewardModel.save(path) first")
        try:
            with np.load(path, allow_pickle=False) as data:
                state = json.loads(str(data["meta"]))
                state.update(index=data["index"], weights=data["weights"], accum=data["accum"])
            return cls.from_state_dict(state)
        except InvalidInput:
            raise
        except (OSError, ValueError, KeyError, TypeError, AttributeError) as e:
            reason = f"{type(e).__name__}: {e}".splitlines()[0]
            raise InvalidInput(f"{str(path)!r} is not a reward model file ({reason}); "
                               "pass a file RewardModel.save wrote") from None
