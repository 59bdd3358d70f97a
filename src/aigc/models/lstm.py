"""`lstm`: a multi-layer LSTM language model (embedding -> LSTM stack -> linear head).

Same contract as every text family: ``forward(idx, targets=None) -> (logits, loss)`` and
``block_size`` (here: the truncated-backpropagation window used in training). Its recurrent
state is its cache, so decoding feeds one token at a time and never needs to crop context.

This module knows the network and its loss; nothing about tokenizers, sampling or files.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn


@dataclass
class LSTMConfig:
    vocab_size: int = 0  # set from the tokenizer when training starts
    block_size: int = 128  # training window (truncated BPTT length) in tokens
    n_layer: int = 2
    n_embd: int = 64  # token embedding width
    n_hidden: int = 256  # LSTM state width; cost per token grows with its square
    dropout: float = 0.0  # between LSTM layers and before the head
    eos_token_id: int = 0


class LSTMState:
    """The recurrent state (h, c), each (n_layer, B, n_hidden); None before the first token."""

    def __init__(self) -> None:
        self.hc: tuple[Tensor, Tensor] | None = None
        self.pos = 0
        self.capacity = None  # unbounded: a recurrent state never fills up


class LSTMSlots:
    """Recurrent states of ``rows`` sequences for continuous batching: (h, c), each
    (n_layer, rows, n_hidden). Rows ``0..B-1`` are live; :meth:`move` keeps them packed."""

    def __init__(self, config: LSTMConfig, rows: int, device, dtype):
        self.h = torch.zeros(config.n_layer, rows, config.n_hidden, device=device, dtype=dtype)
        self.c = torch.zeros_like(self.h)
        self.lengths = torch.zeros(rows, dtype=torch.long, device=device)
        self.rows = rows
        self.capacity = None

    def move(self, src: int, dst: int) -> None:
        self.h[:, dst], self.c[:, dst], self.lengths[dst] = self.h[:, src], self.c[:, src], self.lengths[src]


class LSTMLM(nn.Module):
    name = "lstm"
    modality = "text"
    Config = LSTMConfig
    supports_cache = True
    PRESETS = {
        "tiny": dict(block_size=64, n_layer=1, n_embd=32, n_hidden=64),
        # 256 wide, not 512: 3.5x the tokens/s on 2 CPU cores, and a lower loss at any budget up
        # to several minutes (tiny shakespeare, 40 s: 1.70 vs 2.13 nats/char)
        "small": dict(block_size=128, n_layer=2, n_embd=64, n_hidden=256),
        "base": dict(block_size=256, n_layer=3, n_embd=256, n_hidden=1024, dropout=0.1),
    }
    # Training defaults per preset (any of them can be overridden on the command line).
    TRAIN_DEFAULTS = {
        "tiny": dict(max_steps=40, batch_size=8, lr=2e-2, warmup_steps=5, eval_every=20, eval_tokens=2048),
        # recurrent nets take a larger step size than transformers; weight decay slowed it here
        "small": dict(max_steps=5000, batch_size=32, lr=2e-2, warmup_steps=50, eval_every=250, weight_decay=0.0),
        "base": dict(max_steps=20000, batch_size=64, lr=1e-3, warmup_steps=500, eval_every=500),
    }

    def __init__(self, config: LSTMConfig):
        super().__init__()
        if config.vocab_size <= 0:
            raise ValueError("LSTMConfig.vocab_size must be set from the tokenizer before building the model")
        self.config = config
        self.embed = nn.Embedding(config.vocab_size, config.n_embd)
        self.lstm = nn.LSTM(
            config.n_embd,
            config.n_hidden,
            num_layers=config.n_layer,
            batch_first=True,
            dropout=config.dropout if config.n_layer > 1 else 0.0,
        )
        self.drop = nn.Dropout(config.dropout)
        self.head = nn.Linear(config.n_hidden, config.vocab_size)
        # Forget-gate biases start at 1 (Jozefowicz et al. 2015): the state is kept by default,
        # which lets gradients through early on. With a tied, small-init embedding instead, the
        # model sat on the unigram plateau (3.3 nats/char) for its first hundred steps.
        with torch.no_grad():
            for name, p in self.lstm.named_parameters():
                if name.startswith("bias"):
                    p[config.n_hidden : 2 * config.n_hidden] = 1.0  # gate order: input, forget, cell, output

    @property
    def block_size(self) -> int:
        return self.config.block_size

    def _logits(self, idx: Tensor, hc: tuple[Tensor, Tensor] | None) -> tuple[Tensor, tuple[Tensor, Tensor]]:
        x = self.embed(idx)  # (B, T, E)
        y, hc = self.lstm(x, hc)  # (B, T, H)
        return self.head(self.drop(y)), hc  # (B, T, V)

    def forward(self, idx: Tensor, targets: Tensor | None = None) -> tuple[Tensor, Tensor | None]:
        logits, _ = self._logits(idx, None)
        loss = None
        if targets is not None:
            loss = F.cross_entropy(logits.flatten(0, 1).float(), targets.flatten(), ignore_index=-100)
        return logits, loss

    def init_cache(self, batch_size: int) -> LSTMState:
        return LSTMState()

    @torch.no_grad()
    def forward_cached(self, idx: Tensor, cache: LSTMState, last_only: bool = True) -> Tensor:
        logits, cache.hc = self._logits(idx, cache.hc)
        cache.pos += idx.shape[1]
        return logits[:, -1] if last_only else logits

    # -- continuous batching: the state of each live sequence is one row ----------------

    def init_slots(self, rows: int) -> LSTMSlots:
        w = self.head.weight
        return LSTMSlots(self.config, rows, w.device, w.dtype)

    @torch.no_grad()
    def prefill_slots(self, idx: Tensor, slots: LSTMSlots, rows: list[int]) -> Tensor:
        """Run the contexts idx (n, T) and keep their states in ``rows``; logits (n, V)."""
        state, logits = self.prefill_state(idx, slots)
        self.load_slots(state, slots, rows)
        return logits

    @torch.no_grad()
    def prefill_state(self, idx: Tensor, slots: LSTMSlots) -> tuple[tuple[Tensor, Tensor, int], Tensor]:
        """Run the contexts idx (n, T) without touching ``slots``: ``((h, c, T), logits (n, V))``,
        for :meth:`load_slots` (the engine runs this beside decode steps)."""
        logits, (h, c) = self._logits(idx, None)
        return (h, c, idx.shape[1]), logits[:, -1]

    @torch.no_grad()
    def load_slots(self, state: tuple[Tensor, Tensor, int], slots: LSTMSlots, rows: list[int]) -> None:
        h, c, T = state
        index = torch.tensor(rows, device=slots.h.device)
        slots.h[:, index], slots.c[:, index] = h, c
        slots.lengths[index] = T

    @torch.no_grad()
    def decode_slots(self, tokens: Tensor, slots: LSTMSlots) -> Tensor:
        """Feed one token (B,) to each of rows 0..B-1; logits (B, V)."""
        B = tokens.shape[0]
        logits, (h, c) = self._logits(tokens[:, None], (slots.h[:, :B].contiguous(), slots.c[:, :B].contiguous()))
        slots.h[:, :B], slots.c[:, :B] = h, c
        slots.lengths[:B] += 1
        return logits[:, -1]

    def config_dict(self) -> dict:
        return asdict(self.config)
