"""Records -> one stream of token ids, with condition columns as control-prefix tokens.

Every record becomes ``<|endoftext|> <|col=value|>... text`` and the stream ends with a final
``<|endoftext|>``. The end-of-text token doubles as the start marker, so generation always
begins its context the same way training saw it: ``<|endoftext|>`` + condition tokens + prompt.
A value without a token of its own (rare in train, or never seen there) is written as its
column's ``other`` token; see :mod:`aigc.data.conditions`.

With condition dropout, training swaps a record's control tokens for its columns' ``null`` tokens
at batch time, so one stream serves both the conditional and the unconditional objective that
classifier-free guidance needs (:func:`null_prefix_ids` is the unconditional prefix).

Training samples random windows of this stream (nanoGPT style); evaluation walks it in
non-overlapping windows. Condition tokens are given, not predicted, so they are masked out of
evaluation targets; bits per character divide by the characters of the text (plus one per
end-of-text), which makes them comparable across tokenizers.
"""

from __future__ import annotations

import math
from array import array
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

from aigc.data.conditions import (
    DEFAULT_MIN_COND_COUNT,
    control_tokens,
    null_token,
    other_token,
    unknown_value,
)
from aigc.data.dataset import TextRecord
from aigc.data.tokenizers import TextTokenizer, cond_token
from aigc.errors import InvalidInput


# Records are encoded this many at a time; a text longer than _LONG_TEXT characters is encoded on
# its own, in chunks (TextTokenizer.encode_array), rather than as one Encoding in a batch.
_RECORDS_PER_BATCH = 4096
_LONG_TEXT = 1 << 15


@dataclass
class TokenStream:
    ids: Tensor  # (N,) int64
    is_cond: Tensor  # (N,) bool: True where the token is a condition prefix
    n_chars: int  # characters of text plus one per end-of-text: the unit of bits per character
    starts: Tensor  # (R,) int64: position of each record's leading end-of-text token

    def __len__(self) -> int:
        return self.ids.numel()


def prefix_ids(tokenizer: TextTokenizer, cond: dict[str, str], cond_columns: Sequence[str],
               known: dict[str, list[str]] | None = None) -> list[int]:
    """``<|endoftext|>`` + one control token per condition column given, in the run's column order.

    A value with no token of its own takes its column's ``other`` token when the run has one and
    the value is known: ``known`` lists every value a run knows (generation); None means the
    records come from the run's own dataset (training, evaluation), where every value is known.
    """
    unknown_keys = sorted(set(cond) - set(cond_columns))
    if unknown_keys:
        cols = ", ".join(cond_columns) or "none (this run is unconditional)"
        raise InvalidInput(f"unknown condition {unknown_keys[0]!r}: this run knows {cols}")
    ids = [tokenizer.eos_id]
    for col in cond_columns:
        if col not in cond:
            continue  # an unspecified condition is left for the model to choose
        value = cond[col]
        tok_id = tokenizer.token_to_id(cond_token(col, value))
        if tok_id is None:
            if known is not None and value not in known.get(col, ()):
                raise unknown_value(col, value, known.get(col, []))
            tok_id = tokenizer.token_to_id(other_token(col))
            if tok_id is None:
                raise InvalidInput(
                    f"value {value!r} of condition {col!r} has no token in this run, which was trained "
                    "before values without one of their own shared an 'other' token: train the run again "
                    "to use it"
                )
        ids.append(tok_id)
    return ids


def null_prefix_ids(tokenizer: TextTokenizer, cond_columns: Sequence[str]) -> list[int] | None:
    """The unconditional prefix, ``<|endoftext|>`` + each column's ``null`` token, for
    classifier-free guidance; None when the run has no null tokens (unconditional, or older)."""
    nulls = [tokenizer.token_to_id(null_token(col)) for col in cond_columns]
    if not nulls or None in nulls:
        return None
    return [tokenizer.eos_id, *nulls]


def null_lookup(tokenizer: TextTokenizer, cond_columns: Sequence[str]) -> Tensor | None:
    """(V,) id -> the id that condition dropout writes in its place: a control token's column's
    ``null`` token, every other id itself. None when the run has no null tokens."""
    if null_prefix_ids(tokenizer, cond_columns) is None:
        return None
    table = torch.arange(tokenizer.vocab_size)
    for token in tokenizer.special_tokens():
        for col in cond_columns:
            # Column names hold no '=' or '|' (conditions.reserved_tokens), so a token has one column.
            if token.startswith(f"<|{col}=") or token == other_token(col):
                table[tokenizer.token_to_id(token)] = tokenizer.token_to_id(null_token(col))
    return table


def encode_records(tokenizer: TextTokenizer, records: Sequence[TextRecord], cond_columns: Sequence[str]) -> TokenStream:
    """The records as one stream. Ids are gathered in compact arrays, a batch of records (or one
    long text) at a time: a corpus of tens of millions of tokens never lives as Python ints."""
    ids, is_cond = array("q"), array("b")
    starts = array("q")
    n_chars = 0
    for first in range(0, len(records), _RECORDS_PER_BATCH):
        batch = records[first : first + _RECORDS_PER_BATCH]
        short = iter(tokenizer.encode_batch([r.text for r in batch if len(r.text) <= _LONG_TEXT]))
        for record in batch:
            starts.append(len(ids))
            prefix = prefix_ids(tokenizer, record.cond, cond_columns)
            ids.extend(prefix)
            is_cond.extend([0] + [1] * (len(prefix) - 1))
            body = next(short) if len(record.text) <= _LONG_TEXT else tokenizer.encode_array(record.text)
            ids.extend(body)
            is_cond.extend(bytes(len(body)))
            n_chars += len(record.text) + 1
    if records:
        ids.append(tokenizer.eos_id)
        is_cond.append(0)
    return TokenStream(_tensor(ids, torch.long), _tensor(is_cond, torch.int8).bool(), n_chars,
                       _tensor(starts, torch.long))


def _tensor(values: array, dtype: torch.dtype) -> Tensor:
    # frombuffer shares the array's memory; clone so the tensor owns its own (the array is freed)
    return torch.frombuffer(values, dtype=dtype).clone() if len(values) else torch.zeros(0, dtype=dtype)


def train_tokenizer(records: Sequence[TextRecord], cond_columns: Sequence[str], kind: str, vocab_size: int,
                    min_cond_count: int = DEFAULT_MIN_COND_COUNT) -> TextTokenizer:
    """A tokenizer of the records' texts whose special tokens are the control tokens of
    :func:`aigc.data.conditions.control_tokens` (values with ``min_cond_count`` records, other, null)."""
    specials = control_tokens((r.cond for r in records), cond_columns, min_cond_count) if cond_columns else []
    return TextTokenizer.train([r.text for r in records], kind=kind, vocab_size=vocab_size, special_tokens=specials)


def eval_windows(stream: TokenStream, block_size: int, max_tokens: int | None = None) -> tuple[Tensor, Tensor]:
    """Non-overlapping windows over the stream: inputs (W, T) and targets (W, T), -100 = not scored.

    With ``max_tokens``, keeps evenly spaced windows up to that many target tokens, so periodic
    evaluation costs the same at every step and looks at the whole split, not just its start.
    """
    n = len(stream) - 1  # predictable positions
    if n < 1:
        raise InvalidInput("the evaluation split holds no text: ingest with a non-zero val/test fraction")
    n_windows = math.ceil(n / block_size)
    chosen = range(n_windows)
    if max_tokens is not None and n_windows * block_size > max_tokens:
        keep = max(1, max_tokens // block_size)
        chosen = sorted({round(i * (n_windows - 1) / max(1, keep - 1)) for i in range(keep)})
    xs, ys = [], []
    ids, mask = stream.ids, stream.is_cond
    for w in chosen:
        start = w * block_size
        end = min(start + block_size, n)
        x = torch.zeros(block_size, dtype=torch.long)  # padding is never scored
        y = torch.full((block_size,), -100, dtype=torch.long)
        x[: end - start] = ids[start:end]
        target = ids[start + 1 : end + 1].clone()
        target[mask[start + 1 : end + 1]] = -100
        y[: end - start] = target
        xs.append(x)
        ys.append(y)
    return torch.stack(xs), torch.stack(ys)


def random_windows(ids: Tensor, block_size: int, batch_size: int, generator: torch.Generator,
                   starts: Tensor | None = None, aligned: float = 0.0, is_cond: Tensor | None = None,
                   null_of: Tensor | None = None, cond_dropout: float = 0.0) -> tuple[Tensor, Tensor]:
    """A training batch: inputs and next-token targets (B, T) from random positions of the stream.

    With ``starts`` and ``aligned`` > 0, that share of the windows begins exactly at a record's
    start, where its condition tokens sit: the situation generation starts from, which teaches
    the model to follow conditions several times faster than uniform windows alone.

    With ``cond_dropout`` > 0 (and ``starts``, ``is_cond``, ``null_of`` from the same stream), each
    record in a window has its control tokens replaced by their columns' ``null`` tokens with that
    probability, all of a record's columns together: the unconditional mode of the model is the
    one prefix :func:`null_prefix_ids` gives.
    """
    span = min(block_size, len(ids) - 1)
    begin = torch.randint(0, len(ids) - span, (batch_size,), generator=generator)
    if starts is not None and aligned > 0:
        pick = starts[torch.randint(0, len(starts), (batch_size,), generator=generator)].clamp(max=len(ids) - span - 1)
        use = torch.rand(batch_size, generator=generator) < aligned
        begin = torch.where(use, pick, begin)
    index = begin[:, None] + torch.arange(span + 1)  # (B, T+1)
    chunk = ids[index]
    if cond_dropout > 0 and starts is not None and is_cond is not None and null_of is not None:
        record = torch.searchsorted(starts, index, right=True) - 1  # (B, T+1): record of each position
        # One draw per (window, record): a window of T+1 tokens touches at most T+1 records.
        draws = torch.rand(index.shape, generator=generator)
        dropped = draws.gather(1, record - record[:, :1]) < cond_dropout
        chunk = torch.where(dropped & is_cond[index], null_of[chunk], chunk)
    return chunk[:, :-1], chunk[:, 1:]
