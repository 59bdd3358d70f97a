"""Text generation for every text family: one decoding loop, streamed chunk by chunk.

The loop feeds tokens through the family's cache (``forward_cached``) when it has one, or runs
the full forward over the cropped context when asked not to (``use_cache=False``; tests use
it as the reference). Token choice is :func:`aigc.sampling.sample_next_token`, a pure function
given a seeded ``torch.Generator``; stop strings and end-of-text end a sample.

This module knows models, tokenizers and sampling. It knows nothing about files or the catalog.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field

import torch
from torch import Tensor, nn

from aigc.data.textstream import prefix_ids
from aigc.data.tokenizers import StreamDecoder, TextTokenizer
from aigc.errors import InvalidInput
from aigc.sampling import StopMatcher, check_sampling, sample_next_token


@dataclass
class Chunk:
    """A piece of sample ``index``. The last chunk of a sample has ``finish_reason`` set."""

    index: int
    text: str
    finish_reason: str | None = None  # "stop" (end-of-text or a stop string) | "length"
    tokens: int = 0  # tokens generated for this sample so far


@dataclass
class Sampling:
    max_new_tokens: int = 200
    temperature: float = 0.8
    top_k: int | None = None
    top_p: float | None = None
    repetition_penalty: float = 1.0
    stop: Sequence[str] = field(default_factory=tuple)
    seed: int | None = None

    def check(self) -> None:
        if self.max_new_tokens < 1:
            raise InvalidInput(f"max_new_tokens must be >= 1, got {self.max_new_tokens}")
        check_sampling(self.temperature, self.top_k, self.top_p, self.repetition_penalty)


def decode_tokens(model: nn.Module, context: Tensor, steps: int, generator: torch.Generator,
                  s: Sampling, use_cache: bool = True) -> Iterator[Tensor]:
    """Yield ``steps`` next tokens (B,) after ``context`` (B, T). The caller may stop early."""
    block = model.block_size
    seq = context
    cached = use_cache and getattr(model, "supports_cache", False)

    def prefill(tokens: Tensor):
        cache = model.init_cache(tokens.shape[0])
        return cache, model.forward_cached(tokens, cache)

    if cached:
        cache, logits = prefill(seq[:, -block:])
    else:
        logits = model(seq[:, -block:])[0][:, -1]
    for _ in range(steps):
        token = sample_next_token(
            logits.float(), generator, temperature=s.temperature, top_k=s.top_k, top_p=s.top_p,
            repetition_penalty=s.repetition_penalty, prev_tokens=seq if s.repetition_penalty != 1.0 else None,
        )
        yield token
        seq = torch.cat([seq, token[:, None]], dim=1)
        if not cached:
            logits = model(seq[:, -block:])[0][:, -1]
        elif cache.capacity is not None and cache.pos >= cache.capacity:
            # Context full: start again from the most recent three quarters of a block.
            cache, logits = prefill(seq[:, -(3 * block // 4):])
        else:
            logits = model.forward_cached(token[:, None], cache)


class SampleStream:
    """One sample's tokens -> text chunks: incremental decoding, stop strings, end-of-text.

    ``push(token)`` returns the chunk that token completes (or None while text is held back);
    ``finish()`` ends a sample that ran out of tokens (``finish_reason="length"``).
    """

    def __init__(self, tokenizer: TextTokenizer, index: int, stops: Sequence[str] = ()):
        self.index = index
        self.decoder = StreamDecoder(tokenizer)
        self.matcher = StopMatcher(stops)
        self.eos = tokenizer.eos_id
        self.tokens = 0  # tokens generated, end-of-text excluded
        self.done = False

    def push(self, token: int) -> Chunk | None:
        if self.done:
            return None
        if token == self.eos:
            self.done = True
            return Chunk(self.index, self.matcher.feed(self.decoder.flush())[0] + self.matcher.flush(), "stop",
                         self.tokens)
        self.tokens += 1
        text, stopped = self.matcher.feed(self.decoder.push(token))
        if stopped:
            self.done = True
            return Chunk(self.index, text, "stop", self.tokens)
        return Chunk(self.index, text, None, self.tokens) if text else None

    def finish(self) -> Chunk:
        self.done = True
        text, stopped = self.matcher.feed(self.decoder.flush())
        return Chunk(self.index, text if stopped else text + self.matcher.flush(), "stop" if stopped else "length",
                     self.tokens)


class TextGenerator:
    """A loaded text run: model + tokenizer + the conditions it was trained on."""

    def __init__(self, model: nn.Module, tokenizer: TextTokenizer, cond_columns: Sequence[str] = (),
                 conditions: dict[str, list[str]] | None = None, name: str = ""):
        self.model = model.eval()
        self.tokenizer = tokenizer
        self.cond_columns = list(cond_columns)
        self.conditions = conditions or {}
        self.name = name

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    def context_ids(self, prompt: str = "", cond: dict[str, str] | None = None) -> list[int]:
        unknown = self.tokenizer.count_unknown(prompt)
        if unknown:
            unseen = sorted({ch for ch in prompt if self.tokenizer.count_unknown(ch)})
            shown = ", ".join(repr(ch) for ch in unseen[:5])
            raise InvalidInput(
                f"the prompt has {len(unseen)} character(s) this run never saw in training ({shown}): "
                "remove them, or train with --tokenizer bpe, which handles any text"
            )
        return prefix_ids(self.tokenizer, cond or {}, self.cond_columns, self.conditions) + self.tokenizer.encode(prompt)

    def prepare(self, prompt: str, n: int, cond: dict[str, str] | None, s: Sampling) -> tuple[Tensor, torch.Generator]:
        """Validate a request; return the context (n, T) and the seeded generator."""
        s.check()
        if n < 1:
            raise InvalidInput(f"n must be >= 1, got {n}")
        ids = self.context_ids(prompt, cond)
        seed = s.seed if s.seed is not None else int.from_bytes(os.urandom(4), "little")
        generator = torch.Generator(device=self.device).manual_seed(seed)
        return torch.tensor([ids] * n, dtype=torch.long, device=self.device), generator

    def stream(self, prompt: str = "", *, n: int = 1, cond: dict[str, str] | None = None,
               use_cache: bool = True, **sampling) -> Iterator[Chunk]:
        """Yield chunks of ``n`` continuations of ``prompt`` as tokens arrive (prompt excluded)."""
        s = Sampling(**sampling)
        context, generator = self.prepare(prompt, n, cond, s)
        samples = [SampleStream(self.tokenizer, i, s.stop) for i in range(n)]
        with torch.inference_mode():
            for tokens in decode_tokens(self.model, context, s.max_new_tokens, generator, s, use_cache):
                for sample, tok in zip(samples, tokens.tolist()):
                    chunk = sample.push(tok)
                    if chunk is not None:
                        yield chunk
                if all(sample.done for sample in samples):
                    return
        for sample in samples:
            if not sample.done:
                yield sample.finish()

    def generate(self, prompt: str = "", *, n: int = 1, cond: dict[str, str] | None = None,
                 use_cache: bool = True, **sampling) -> list[str]:
        """``n`` finished continuations of ``prompt`` (prompt excluded)."""
        if sampling.get("stop"):  # stop strings are matched on text as it streams
            out = [""] * n
            for chunk in self.stream(prompt, n=n, cond=cond, use_cache=use_cache, **sampling):
                out[chunk.index] += chunk.text
            return out
        # Without stop strings only end-of-text ends a sample: collect ids, decode once at the end.
        s = Sampling(**sampling)
        context, generator = self.prepare(prompt, n, cond, s)
        ids: list[list[int]] = [[] for _ in range(n)]
        done = [False] * n
        eos = self.tokenizer.eos_id
        with torch.inference_mode():
            for tokens in decode_tokens(self.model, context, s.max_new_tokens, generator, s, use_cache):
                for i, tok in enumerate(tokens.tolist()):
                    if not done[i]:
                        if tok == eos:
                            done[i] = True
                        else:
                            ids[i].append(tok)
                if all(done):
                    break
        return [self.tokenizer.decode(row, skip_special=True) for row in ids]
