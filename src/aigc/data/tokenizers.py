"""Text tokenizers: characters or byte-level BPE, both stored as a Hugging Face ``tokenizer.json``.

Two kinds, one class:

* ``"char"``: one id per character (WordLevel over every distinct training character). Tiny, exact,
  good for small corpora such as tiny shakespeare. Characters never seen in training map to ``UNK``.
* ``"bpe"``: byte-level BPE (the GPT-2 scheme). Every string encodes, because any character falls back
  to its UTF-8 bytes; there is no unknown token.

Both are plain ``tokenizers.Tokenizer`` objects, so the saved file loads in
``transformers.PreTrainedTokenizerFast(tokenizer_file=...)`` and gives the same ids and text.

Special tokens (``EOS`` first, then ``UNK`` for char, then caller-given ones such as condition tokens
``<|category=手机|>``) take the lowest ids, so ``EOS`` is always id 0, and are matched as single tokens
wherever they occur in the input text.

This module knows about text and ids only; it knows nothing of models, datasets or files other than
the one ``tokenizer.json`` it reads or writes.
"""

from __future__ import annotations

import os
import re
import tempfile
from array import array
from collections.abc import Iterable, Sequence
from pathlib import Path

from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers, trainers

from aigc.errors import InvalidInput

EOS = "<|endoftext|>"  # also used as BOS: every record is preceded by it in the training stream
UNK = "<|unk|>"  # char tokenizer only; byte-level BPE never needs it

KINDS = ("char", "bpe")

# Long inputs are cut into chunks of about this many characters and encoded with encode_batch
# (parallel in Rust, and much faster than one huge encode: 0.4 s instead of 1.7 s for tiny
# shakespeare with char, 2.8 s instead of 8.7 s for 3.7 M chars of Chinese with bpe, on 2 cores).
_CHUNK_CHARS = 16_384

# A cut is made only right after a "\n" that has non-whitespace on both sides. There the GPT-2
# pre-tokenizer regex always yields "\n" as a token of its own (whitespace runs can only join
# neighbouring whitespace), so chunked encoding gives exactly the ids of a single encode.
# Python's \s is a superset of Unicode White_Space (the regex engine's \s), so a char Python
# calls non-whitespace is non-whitespace there too.
_SAFE_CUT = re.compile(r"(?<=\S\n)(?=\S)")
# A text with no such newline for a whole chunk (a corpus written as one line) is cut inside the
# line instead. char: anywhere, every character is a token. bpe: between a letter or digit and a
# punctuation mark or symbol: the GPT-2 regex ends a letter run or a digit run there and starts a
# new pre-token at the mark, so the cut changes nothing. (Python's \w is letters, digits and "_".)
_LINE_CUT = {"char": re.compile(r"(?s:.)"), "bpe": re.compile(r"(?<=[^\W_])(?=[^\w\s])")}
# Chunks are encoded this many at a time: a whole corpus never exists as Encoding objects (each
# token's string, offsets and masks) at once.
_CHUNKS_PER_BATCH = 64


def cond_token(key: str, value: str) -> str:
    """The special token that conditions generation on a column value, e.g. ``<|category=手机|>``."""
    return f"<|{key}={value}|>"


class TextTokenizer:
    """A trained tokenizer of kind ``"char"`` or ``"bpe"``; ``hf`` is the ``tokenizers.Tokenizer`` inside."""

    def __init__(self, hf: Tokenizer):
        model = type(hf.model).__name__
        if model == "WordLevel":
            self.kind = "char"
        elif model == "BPE":
            self.kind = "bpe"
        else:
            raise InvalidInput(f"tokenizer model must be WordLevel (char) or BPE (bpe), got {model}")
        eos = hf.token_to_id(EOS)
        if eos is None:
            raise InvalidInput(f"tokenizer has no {EOS} token; train it with TextTokenizer.train")
        self.hf = hf
        self.eos_id: int = eos
        # None for bpe: byte fallback means nothing is ever unknown.
        self.unk_id: int | None = hf.token_to_id(UNK) if self.kind == "char" else None
        specials = self.special_tokens()
        # Chunked encoding is exact for the pipelines train() builds (see _SAFE_CUT), provided no
        # special token spans a cut; a foreign tokenizer.json is always encoded in one piece.
        self._can_chunk = (
            hf.normalizer is None
            and type(hf.pre_tokenizer).__name__ == ("Split" if self.kind == "char" else "ByteLevel")
            and not any("\n" in t for t in specials)
        )
        # Cuts inside a line avoid the neighbourhood of "<|", where a special token could start;
        # that protects only specials of the form <|...|>, as train() makes them.
        self._special_span = max(map(len, specials), default=0)
        self._cut_in_lines = self._can_chunk and all(
            t.startswith("<|") and t.endswith("|>") for t in specials)

    # ------------------------------------------------------------------ training and files

    @classmethod
    def train(
        cls,
        texts: Iterable[str] | Sequence[str],
        kind: str = "char",
        vocab_size: int = 2048,
        special_tokens: Sequence[str] = (),
        min_frequency: int = 2,
    ) -> TextTokenizer:
        """Train a tokenizer on ``texts`` (any iterable of strings, consumed once).

        ``vocab_size`` and ``min_frequency`` apply to ``"bpe"`` only: ``"char"`` keeps every distinct
        character it sees, however rare, so its vocabulary size is set by the data.
        """
        if kind not in KINDS:
            raise InvalidInput(f"kind must be one of {', '.join(KINDS)}; got {kind!r}")
        if isinstance(texts, str):
            texts = [texts]  # a bare string would otherwise be iterated character by character
        specials = _special_list([EOS, UNK] if kind == "char" else [EOS], special_tokens)
        if kind == "char":
            return cls(_train_char(texts, specials))
        min_size = 256 + len(specials)
        if vocab_size < min_size:
            raise InvalidInput(
                f"vocab_size must be >= {min_size} for bpe (256 byte symbols + {len(specials)} special "
                f"tokens), got {vocab_size}"
            )
        if min_frequency < 1:
            raise InvalidInput(f"min_frequency must be >= 1, got {min_frequency}")
        return cls(_train_bpe(texts, specials, vocab_size, min_frequency))

    @classmethod
    def load(cls, path) -> TextTokenizer:
        """Load a ``tokenizer.json`` written by :meth:`save` (or by any tool, if it has the tokens)."""
        path = Path(path)
        if not path.is_file():
            raise InvalidInput(f"tokenizer file not found: {path}")
        try:
            hf = Tokenizer.from_file(str(path))
        except Exception as e:  # the Rust error is multi-line; keep ours to one line
            first = str(e).splitlines()[0] if str(e) else type(e).__name__
            raise InvalidInput(f"cannot read tokenizer file {path}: {first}") from e
        return cls(hf)

    def save(self, path) -> None:
        """Write ``tokenizer.json`` atomically (temp file in the same folder, then ``os.replace``)."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
        os.close(fd)
        try:
            self.hf.save(tmp)
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise

    def to_transformers(self):
        """This tokenizer as a ``transformers.PreTrainedTokenizerFast`` with EOS/BOS/UNK set."""
        from transformers import PreTrainedTokenizerFast  # heavy import, only when exporting

        return PreTrainedTokenizerFast(
            tokenizer_object=self.hf,
            eos_token=EOS,
            bos_token=EOS,
            unk_token=UNK if self.unk_id is not None else None,
        )

    # ------------------------------------------------------------------ vocabulary

    @property
    def vocab_size(self) -> int:
        """Number of ids, special tokens included (ids are 0 .. vocab_size - 1)."""
        return self.hf.get_vocab_size(with_added_tokens=True)

    def token_to_id(self, token: str) -> int | None:
        return self.hf.token_to_id(token)

    def special_tokens(self) -> list[str]:
        """Special tokens in id order (``EOS`` first)."""
        added = self.hf.get_added_tokens_decoder()
        return [added[i].content for i in sorted(added) if added[i].special]

    # ------------------------------------------------------------------ encoding

    def encode(self, text: str) -> list[int]:
        return [i for enc in self._encodings(text) for i in enc.ids]

    def encode_array(self, text: str) -> array:
        """The ids of ``text`` as a compact ``array('q')`` (8 bytes an id, where a list of ints
        takes about 40): for whole corpora of tens of millions of tokens."""
        out = array("q")
        for enc in self._encodings(text):
            out.extend(enc.ids)
        return out

    def encode_batch(self, texts: Sequence[str]) -> list[list[int]]:
        return [enc.ids for enc in self.hf.encode_batch(list(texts), add_special_tokens=False)]

    def count_unknown(self, text: str) -> int:
        """How many characters of ``text`` map to ``UNK`` (always 0 for bpe)."""
        if self.unk_id is None:
            return 0
        unk = self.unk_id
        # An unknown character covers one char of input; a literal "<|unk|>" in the text covers 7.
        return sum(
            1
            for enc in self._encodings(text)
            for i, (start, end) in zip(enc.ids, enc.offsets)
            if i == unk and end - start == 1
        )

    def _encodings(self, text: str):
        if len(text) <= 2 * _CHUNK_CHARS or not self._can_chunk:
            yield self.hf.encode(text, add_special_tokens=False)
            return
        chunks = _chunks(text, self.kind, self._special_span if self._cut_in_lines else None)
        for i in range(0, len(chunks), _CHUNKS_PER_BATCH):
            yield from self.hf.encode_batch(chunks[i : i + _CHUNKS_PER_BATCH], add_special_tokens=False)

    # ------------------------------------------------------------------ decoding

    def decode(self, ids: Sequence[int], skip_special: bool = False) -> str:
        ids = [int(i) for i in ids]
        if ids:
            lo, hi = min(ids), max(ids)
            if lo < 0 or hi >= self.vocab_size:
                bad = lo if lo < 0 else hi
                raise InvalidInput(f"token ids must be in [0, {self.vocab_size}), got {bad}")
        return self.hf.decode(ids, skip_special_tokens=skip_special)

    def __repr__(self) -> str:
        return f"TextTokenizer(kind={self.kind!r}, vocab_size={self.vocab_size})"


class StreamDecoder:
    """Incremental detokenization for streaming: push ids one at a time, get text as it completes.

    The pieces concatenate to ``decode(all ids)``. A multi-byte character split across byte-level
    tokens is held back until its last byte arrives, so no piece ever ends in U+FFFD mid-character.

    It decodes a small window of ids each push (the ids of the last emitted piece plus the new ones)
    and emits the part past the text already emitted: the window starts where a piece ended cleanly,
    so decoding it gives the same text as decoding everything.
    """

    def __init__(self, tokenizer: TextTokenizer, skip_special: bool = True):
        self.tokenizer = tokenizer
        self.skip_special = skip_special
        self._vocab = tokenizer.vocab_size  # ids are checked once, on push, not on every decode
        self._ids: list[int] = []
        self._prefix = 0  # start of the window: the first id of the last emitted piece
        self._read = 0  # ids before this have been emitted as text

    def push(self, token_id: int) -> str:
        token_id = int(token_id)
        if not 0 <= token_id < self._vocab:
            raise InvalidInput(f"token ids must be in [0, {self._vocab}), got {token_id}")
        self._ids.append(token_id)
        prefix_text = self._decode(self._prefix, self._read)
        new_text = self._decode(self._prefix, len(self._ids))
        if len(new_text) > len(prefix_text) and not new_text.endswith("\ufffd"):
            self._prefix, self._read = self._read, len(self._ids)
            return new_text[len(prefix_text) :]
        return ""  # incomplete character (or a skipped special token): wait for more ids

    def flush(self) -> str:
        """Emit whatever is still held back (possibly ending in U+FFFD if the stream ended mid-character)."""
        prefix_text = self._decode(self._prefix, self._read)
        new_text = self._decode(self._prefix, len(self._ids))
        self._prefix = self._read = len(self._ids)
        return new_text[len(prefix_text) :]

    def _decode(self, start: int, end: int) -> str:
        if start >= end:
            return ""
        # Straight to the Rust tokenizer: a serving engine streams every row's every token here.
        return self.tokenizer.hf.decode(self._ids[start:end], skip_special_tokens=self.skip_special)


# ---------------------------------------------------------------------- helpers


def _special_list(fixed: list[str], extra: Sequence[str]) -> list[str]:
    if isinstance(extra, str):
        extra = [extra]
    out = list(fixed)
    for tok in extra:
        if not isinstance(tok, str) or not tok:
            raise InvalidInput(f"special_tokens must be non-empty strings, got {tok!r}")
        if tok not in out:
            out.append(tok)
    return out


def _train_char(texts: Iterable[str], specials: list[str]) -> Tokenizer:
    chars: set[str] = set()
    seen_text = False
    for t in texts:
        if not isinstance(t, str):
            raise InvalidInput(f"texts must be strings, got {type(t).__name__}")
        chars.update(t)
        seen_text = seen_text or bool(t)
    if not seen_text:
        raise InvalidInput("texts must contain at least one non-empty string to train a tokenizer")
    vocab = {tok: i for i, tok in enumerate(specials)}
    for ch in sorted(chars):  # sorted: the same texts give the same ids on every machine
        vocab.setdefault(ch, len(vocab))
    hf = Tokenizer(models.WordLevel(vocab, unk_token=UNK))
    # Every single character is its own pre-token, whitespace and newlines included, so nothing is
    # dropped or merged; no normalizer, so the text is kept exactly.
    hf.pre_tokenizer = pre_tokenizers.Split(Regex(r"[\s\S]"), behavior="isolated")
    hf.decoder = decoders.Fuse()  # concatenate without separators
    hf.add_special_tokens(specials)  # already in the vocab, so they keep their low ids
    return hf


def _train_bpe(texts: Iterable[str], specials: list[str], vocab_size: int, min_frequency: int) -> Tokenizer:
    seen_text = False

    span = max(map(len, specials))  # all <|...|>: train() makes them so

    def checked():
        nonlocal seen_text
        for t in texts:
            if not isinstance(t, str):
                raise InvalidInput(f"texts must be strings, got {type(t).__name__}")
            seen_text = seen_text or bool(t)
            # A long text goes in pieces cut where pre-tokens end: the same word counts, without
            # the trainer holding one giant sequence (a one-line corpus took gigabytes).
            yield from (_chunks(t, "bpe", span) if len(t) > 2 * _CHUNK_CHARS else (t,))

    hf = Tokenizer(models.BPE())
    hf.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    hf.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        min_frequency=min_frequency,
        special_tokens=specials,  # get ids 0..n-1 in this order and are registered as special
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),  # all 256 bytes: nothing is unknown
        show_progress=False,
    )
    hf.train_from_iterator(checked(), trainer=trainer)
    if not seen_text:
        raise InvalidInput("texts must contain at least one non-empty string to train a tokenizer")
    return hf


def _chunks(text: str, kind: str, special_span: int | None) -> list[str]:
    """``text`` in pieces of about ``_CHUNK_CHARS`` that encode to the ids of the whole (and give a
    BPE trainer the same words). ``special_span``: the longest special token, when all are <|...|>
    and pieces may be cut inside a line; None to cut at newlines only."""
    out = []
    start = 0
    while len(text) - start > _CHUNK_CHARS:
        cut = _cut(text, start + _CHUNK_CHARS, kind, special_span)
        if cut is None:
            break
        out.append(text[start:cut])
        start = cut
    out.append(text[start:])
    return out


def _cut(text: str, pos: int, kind: str, special_span: int | None) -> int | None:
    """A safe cut at or after ``pos``: a newline one within a chunk's length, else one inside the
    line (away from any "<|"), else the next newline one however far, else None."""
    window = pos + _CHUNK_CHARS
    m = _SAFE_CUT.search(text, pos, window)
    if m is not None:
        return m.start()
    if special_span is not None:
        pattern = _LINE_CUT[kind]
        at = pos
        while (m := pattern.search(text, at, window)) is not None:
            cut = m.start()
            if text.find("<|", max(0, cut - special_span + 1), cut + 1) < 0:
                return cut
            at = cut + 1
    m = _SAFE_CUT.search(text, window)
    return m.start() if m is not None else None
