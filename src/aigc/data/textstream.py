"""Records -> one stream of token ids, with condition columns as control-prefix tokens.

Every record becomes ``<|endoftext|> <|col=value|>... text`` and the stream ends with a final
``<|endoftext|>``. The end-of-text token doubles as the start marker, so generation always
begins its context the same way training saw it: ``<|endoftext|>`` + condition tokens + prompt.

Training samples random windows of this stream (nanoGPT style); evaluation walks it in
non-overlapping windows. Condition tokens are given, not predicted, so they are masked out of
evaluation targets; bits per character divide by the characters of the text (plus one per
end-of-text), which makes them comparable across tokenizers.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

from aigc.data.dataset import TextRecord
from aigc.data.tokenizers import TextTokenizer, cond_token
from aigc.errors import InvalidInput


@dataclass
class TokenStream:
    ids: Tensor  # (N,) int64
    is_cond: Tensor  # (N,) bool: True where the token is a condition prefix
    n_chars: int  # characters of text plus one per end-of-text: the unit of bits per character
    starts: Tensor  # (R,) int64: position of each record's leading end-of-text token

    def __len__(self) -> int:
        return self.ids.numel()


def condition_tokens(records: Iterable[TextRecord], cond_columns: Sequence[str]) -> list[str]:
    seen: dict[str, None] = {}
    for r in records:
        for col in cond_columns:
            seen[cond_token(col, r.cond[col])] = None
    return sorted(seen)


def prefix_ids(tokenizer: TextTokenizer, cond: dict[str, str], cond_columns: Sequence[str],
               known: dict[str, list[str]] | None = None) -> list[int]:
    """``<|endoftext|>`` + one control token per condition column, in the run's column order."""
    unknown_keys = sorted(set(cond) - set(cond_columns))
    if unknown_keys:
        cols = ", ".join(cond_columns) or "none (this run is unconditional)"
        raise InvalidInput(f"unknown condition {unknown_keys[0]!r}: this run knows {cols}")
    ids = [tokenizer.eos_id]
    for col in cond_columns:
        if col not in cond:
            continue  # an unspecified condition is left for the model to choose
        tok_id = tokenizer.token_to_id(cond_token(col, cond[col]))
        if tok_id is None:
            values = ", ".join((known or {}).get(col, [])) or "?"
            raise InvalidInput(f"unknown value {cond[col]!r} for condition {col!r}: trained values are {values}")
        ids.append(tok_id)
    return ids


def encode_records(tokenizer: TextTokenizer, records: Sequence[TextRecord], cond_columns: Sequence[str]) -> TokenStream:
    if not records:
        empty = torch.zeros(0, dtype=torch.long)
        return TokenStream(empty, torch.zeros(0, dtype=torch.bool), 0, empty)
    bodies = tokenizer.encode_batch([r.text for r in records])
    ids: list[int] = []
    is_cond: list[bool] = []
    n_chars = 0
    starts: list[int] = []
    for record, body in zip(records, bodies):
        starts.append(len(ids))
        prefix = prefix_ids(tokenizer, record.cond, cond_columns)
        ids.extend(prefix)
        ids.extend(body)
        is_cond.extend([False] + [True] * (len(prefix) - 1))
        is_cond.extend([False] * len(body))
        n_chars += len(record.text) + 1
    ids.append(tokenizer.eos_id)
    is_cond.append(False)
    return TokenStream(torch.tensor(ids, dtype=torch.long), torch.tensor(is_cond, dtype=torch.bool), n_chars,
                       torch.tensor(starts, dtype=torch.long))


def train_tokenizer(records: Sequence[TextRecord], cond_columns: Sequence[str], kind: str, vocab_size: int) -> TextTokenizer:
    specials = condition_tokens(records, cond_columns)
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
                   starts: Tensor | None = None, aligned: float = 0.0) -> tuple[Tensor, Tensor]:
    """A training batch: inputs and next-token targets (B, T) from random positions of the stream.

    With ``starts`` and ``aligned`` > 0, that share of the windows begins exactly at a record's
    start, where its condition tokens sit: the situation generation starts from, which teaches
    the model to follow conditions several times faster than uniform windows alone.
    """
    span = min(block_size, len(ids) - 1)
    begin = torch.randint(0, len(ids) - span, (batch_size,), generator=generator)
    if starts is not None and aligned > 0:
        pick = starts[torch.randint(0, len(starts), (batch_size,), generator=generator)].clamp(max=len(ids) - span - 1)
        use = torch.rand(batch_size, generator=generator) < aligned
        begin = torch.where(use, pick, begin)
    index = begin[:, None] + torch.arange(span + 1)  # (B, T+1)
    chunk = ids[index]
    return chunk[:, :-1], chunk[:, 1:]
