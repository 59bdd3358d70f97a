"""Model runners: what the decoding core needs of a model, and nothing more.

A runner holds ``rows`` sequences that decode together, each at its own length. The core asks it
to prefill contexts (on a state of their own, so that may run on another thread while rows
decode; a :class:`SlotRunner` reuses cached prefixes, :mod:`aigc.decoding.prefix`), to load a
prefill into rows, to feed one token to every live row, to move a row (rows
are kept packed) and which rows are full. :class:`SlotRunner` serves every family with a slot
cache (``gpt``, ``lstm``); :class:`ForwardRunner` runs the plain forward over each row's last
block and is the reference the cached path is tested against. A pretrained transformers model
with its own key/value cache becomes servable by writing one more runner.

This module knows the text families' cache methods. It knows nothing about sampling, tokenizers
or requests.
"""

from __future__ import annotations

from typing import Any, Literal, Protocol

import torch
from torch import Tensor, nn

from aigc.decoding.prefix import PrefixCache
from aigc.errors import InvalidInput


class ModelRunner(Protocol):
    """Rows of sequences a model decodes together, each at its own length."""

    rows: int  # how many sequences fit
    block_size: int  # the longest context a prefill takes (a longer one keeps its last tokens)
    capacity: int | None  # tokens a row holds; a row holding this many must be refilled. None: never full
    device: torch.device

    def prefill(self, idx: Tensor) -> tuple[Any, Tensor]:
        """Run contexts ``idx`` (n, T) on a state of their own, touching no row:
        ``(state, logits (n, V) after each context's last token)``."""
        ...

    def load(self, state: Any, rows: list[int]) -> None:
        """Put the sequences of a :meth:`prefill` state into ``rows``."""
        ...

    def decode(self, tokens: Tensor) -> Tensor:
        """Feed one token (B,) to each of rows ``0..B-1``; logits (B, V)."""
        ...

    def move(self, src: int, dst: int) -> None:
        """Copy row ``src`` into row ``dst`` (the caller keeps live rows packed)."""
        ...

    def full_rows(self, live: int) -> list[int]:
        """Which of rows ``0..live-1`` hold ``capacity`` tokens."""
        ...


class SlotRunner:
    """A text family's slot cache (``init_slots``, ``prefill_state``, ``load_slots``,
    ``decode_slots``; docs/architecture.md, Contracts) as a :class:`ModelRunner`.

    ``prefix_cache``: where prefills reuse the keys and values of prefixes run before
    (:class:`~aigc.decoding.prefix.PrefixCache`). ``"auto"`` (the default): a cache of its own,
    default size, when the model can continue a prefix (``continue_state``: gpt, FastLM and its
    LoRA adapters; an lstm cannot); None: every prompt runs from its first token. A cache passed in
    serves this runner's model alone (another model's weights empty it)."""

    def __init__(self, model: nn.Module, rows: int,
                 prefix_cache: PrefixCache | None | Literal["auto"] = "auto"):
        continues = hasattr(model, "continue_state")
        if prefix_cache == "auto":
            prefix_cache = PrefixCache() if continues else None
        elif prefix_cache is not None and not (isinstance(prefix_cache, PrefixCache) and continues):
            raise InvalidInput(f"prefix_cache must be a PrefixCache, None or 'auto', for a model with "
                               f"continue_state; got {prefix_cache!r} for a {type(model).__name__}: pass None")
        self.model = model
        self.slots = model.init_slots(rows)
        self.rows = rows
        self.block_size = model.block_size
        self.capacity = self.slots.capacity
        self.device = self.slots.lengths.device
        self.prefix_cache = prefix_cache

    def prefill(self, idx: Tensor) -> tuple[Any, Tensor]:
        if self.prefix_cache is None:
            return self.model.prefill_state(idx, self.slots)
        return self.prefix_cache.prefill(self.model, self.slots, idx)

    def load(self, state: Any, rows: list[int]) -> None:
        self.model.load_slots(state, self.slots, rows)

    def decode(self, tokens: Tensor) -> Tensor:
        return self.model.decode_slots(tokens, self.slots)

    def move(self, src: int, dst: int) -> None:
        self.slots.move(src, dst)

    def full_rows(self, live: int) -> list[int]:
        if self.capacity is None:
            return []
        return (self.slots.lengths[:live] >= self.capacity).nonzero().flatten().tolist()  # one tensor read


class ForwardRunner:
    """No cache: each step runs the model's ``forward`` over every row's last ``block_size`` tokens
    (a sliding window, so a row is never full). Slow; the reference for the cached runners."""

    capacity = None

    def __init__(self, model: nn.Module, rows: int):
        self.model = model
        self.rows = rows
        self.block_size = model.block_size
        self.device = next(model.parameters()).device
        self.seqs: list[Tensor | None] = [None] * rows  # each row's tokens so far (T,)

    def _last_logits(self, idx: Tensor) -> Tensor:
        return self.model(idx[:, -self.block_size :])[0][:, -1]

    def prefill(self, idx: Tensor) -> tuple[Any, Tensor]:
        return idx, self._last_logits(idx)

    def load(self, state: Tensor, rows: list[int]) -> None:
        for i, r in enumerate(rows):
            self.seqs[r] = state[i]

    def decode(self, tokens: Tensor) -> Tensor:
        B = tokens.shape[0]
        by_length: dict[int, list[int]] = {}
        for r in range(B):
            self.seqs[r] = torch.cat([self.seqs[r], tokens[r : r + 1]])
            by_length.setdefault(self.seqs[r].shape[0], []).append(r)
        out = None
        for rows in by_length.values():  # rows of equal length share one forward
            logits = self._last_logits(torch.stack([self.seqs[r] for r in rows]))
            if out is None:
                out = logits.new_empty(B, logits.shape[-1])
            out[rows] = logits
        return out

    def move(self, src: int, dst: int) -> None:
        self.seqs[dst] = self.seqs[src]

    def full_rows(self, live: int) -> list[int]:
        return []
