"""`lstm`: a multi-layer LSTM language model (embedding -> LSTM stack -> projection -> tied head).

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
    n_embd: int = 128  # token embedding width; the output head is tied to the embedding
    n_hidden: int = 512  # LSTM state width
    dropout: float = 0.0  # between LSTM layers and before the head
    eos_token_id: int = 0


class LSTMState:
    """The recurrent state (h, c), each (n_layer, B, n_hidden); None before the first token."""

    def __init__(self) -> None:
        self.hc: tuple[Tensor, Tensor] | None = None
        self.pos = 0
        self.capacity = None  # unbounded: a recurrent state never fills up


class LSTMLM(nn.Module):
    name = "lstm"
    modality = "text"
    Config = LSTMConfig
    supports_cache = True
    PRESETS = {
        "tiny": dict(block_size=64, n_layer=1, n_embd=32, n_hidden=64),
        "small": dict(block_size=128, n_layer=2, n_embd=128, n_hidden=512),
        "base": dict(block_size=256, n_layer=3, n_embd=512, n_hidden=1536, dropout=0.1),
    }
    # Training defaults per preset (any of them can be overridden on the command line).
    TRAIN_DEFAULTS = {
        "tiny": dict(max_steps=40, batch_size=8, lr=2e-2, warmup_steps=5, eval_every=20, eval_tokens=2048),
        "small": dict(max_steps=5000, batch_size=32, lr=3e-3, warmup_steps=100, eval_every=250),
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
        self.proj = nn.Linear(config.n_hidden, config.n_embd)  # back to embedding width for the tied head
        self.head = nn.Linear(config.n_embd, config.vocab_size, bias=False)
        self.head.weight = self.embed.weight  # weight tying (Press & Wolf 2017): fewer params, better loss
        nn.init.normal_(self.embed.weight, std=0.02)

    @property
    def block_size(self) -> int:
        return self.config.block_size

    def _logits(self, idx: Tensor, hc: tuple[Tensor, Tensor] | None) -> tuple[Tensor, tuple[Tensor, Tensor]]:
        x = self.embed(idx)  # (B, T, E)
        y, hc = self.lstm(x, hc)  # (B, T, H)
        return self.head(self.proj(self.drop(y))), hc  # (B, T, V)

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

    def config_dict(self) -> dict:
        return asdict(self.config)
