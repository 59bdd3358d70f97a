"""One request being decoded: its rows' contexts, its generator, its samples' text.

Everything that decides what a request generates, apart from the model, is here: the sampling
settings and their checks, classifier-free guidance, which tokens a row is refilled from when
its cache is full, and how tokens become text (end-of-text, stop strings, ``max_new_tokens``).

This module knows tokenizers (to turn tokens into text) and :mod:`aigc.sampling`. It knows
nothing about models, threads or files.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import torch
from torch import Tensor

from aigc import sampling as sampling_fns
from aigc.data.tokenizers import StreamDecoder, TextTokenizer
from aigc.errors import InvalidInput
from aigc.sampling import StopMatcher, check_sampling


@dataclass
class Sampling:
    max_new_tokens: int = 200
    temperature: float = 0.8
    top_k: int | None = None
    top_p: float | None = None
    repetition_penalty: float = 1.0
    stop: Sequence[str] = field(default_factory=tuple)
    seed: int | None = None
    # Classifier-free guidance (Sanchez et al. 2023): with a condition given, each sample also runs
    # an unconditional row, and tokens are drawn from uncond + guidance * (cond - uncond) on
    # log-probabilities. 1 is off; above 1 holds the condition harder. Needs a run trained with
    # condition dropout (its unconditional context is the null condition tokens).
    guidance: float = 1.0
    # End-of-text is not drawn before a sample has this many tokens (vLLM's min_tokens); a stop string
    # still ends it. 0 is off.
    min_new_tokens: int = 0

    def check(self) -> None:
        if self.max_new_tokens < 1:
            raise InvalidInput(f"max_new_tokens must be >= 1, got {self.max_new_tokens}")
        m = self.min_new_tokens
        if isinstance(m, bool) or not isinstance(m, int) or not 0 <= m <= self.max_new_tokens:
            raise InvalidInput(f"min_new_tokens must be a whole number from 0 to max_new_tokens "
                               f"({self.max_new_tokens}), got {m!r}")
        check_sampling(self.temperature, self.top_k, self.top_p, self.repetition_penalty)
        g = self.guidance
        if isinstance(g, bool) or not isinstance(g, (int, float)) or not (math.isfinite(g) and g >= 0):
            raise InvalidInput(f"guidance must be a finite number >= 0 (1 means off), got {self.guidance!r}")


def refill_window(capacity: int) -> int:
    """Tokens a full row starts again from: the last three quarters of its cache. A quarter block of
    new tokens per refill keeps refills rare while the model still sees most of its context."""
    return 3 * capacity // 4


@dataclass
class Chunk:
    """A piece of sample ``index``. The last chunk of a sample has ``finish_reason`` set."""

    index: int
    text: str
    finish_reason: str | None = None  # "stop" (end-of-text or a stop string) | "length"
    tokens: int = 0  # tokens generated for this sample so far


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
        # The output rail (aigc.safety.rails.OutputRail) the sample's text passes through, if any
        self.rail = None

    def push(self, token: int) -> Chunk | None:
        if self.done:
            return None
        if token == self.eos:
            self.done = True
            text = self.matcher.feed(self.decoder.flush())[0] + self.matcher.flush()
            return self._out(Chunk(self.index, text, "stop", self.tokens))
        self.tokens += 1
        text, stopped = self.matcher.feed(self.decoder.push(token))
        if stopped:
            self.done = True
            return self._out(Chunk(self.index, text, "stop", self.tokens))
        if self.rail is not None:
            return self._out(Chunk(self.index, text, None, self.tokens)) if text else None
        return Chunk(self.index, text, None, self.tokens) if text else None

    def finish(self) -> Chunk:
        self.done = True
        text, stopped = self.matcher.feed(self.decoder.flush())
        if stopped:
            return self._out(Chunk(self.index, text, "stop", self.tokens))
        return self._out(Chunk(self.index, text + self.matcher.flush(), "length", self.tokens))

    def _out(self, chunk: Chunk) -> Chunk | None:
        """The chunk as the output rail lets it out: text held back until its segment is checked,
        PII handled, a blocked segment never released and the sample ended ``content_filter``."""
        rail = self.rail
        if rail is None:
            return chunk
        text = rail.feed(chunk.text) if chunk.text else ""
        if chunk.finish_reason and not rail.blocked:
            text += rail.finish()
        if rail.blocked:
            self.done = True
            return Chunk(self.index, text, "content_filter", self.tokens)
        if not text and not chunk.finish_reason:
            return None
        return Chunk(self.index, text, chunk.finish_reason, self.tokens)


class SequenceGroup:
    """One request being decoded: ``n`` samples continuing one context, one row of a runner each,
    or two under guidance (rows ``0..n-1`` the conditional context, ``n..2n-1`` the unconditional
    one; both rows of a sample are fed its sampled token). vLLM calls this a sequence group.

    The caller places the rows (:class:`~aigc.decoding.batch.Batch`) and hands back their logits;
    the group turns them into tokens (:meth:`scores`, drawn by :func:`~aigc.decoding.batch.choose_tokens`
    from its own ``generator``) and tokens into text (:meth:`accept`).
    """

    def __init__(self, context: Sequence[int], n: int, sampling: Sampling, generator: torch.Generator,
                 tokenizer: TextTokenizer, uncond_context: Sequence[int] | None = None,
                 device: torch.device | str | None = None):
        self.n = n
        self.sampling = sampling
        self.generator = generator
        self.guided = uncond_context is not None
        contexts = [context] if uncond_context is None else [context, uncond_context]
        # (1, T) each: the conditional context, then the unconditional one
        self.contexts = [torch.tensor([list(c)], dtype=torch.long, device=device) for c in contexts]
        self.width = n * len(contexts)  # rows it takes in a batch
        self.samples = [SampleStream(tokenizer, i, sampling.stop) for i in range(n)]
        self.eos = tokenizer.eos_id  # kept from being drawn before sampling.min_new_tokens
        # Sampled together with other groups of the same settings (rows are independent); a
        # repetition penalty looks at this group's own history, so such a group samples alone.
        s = sampling
        self.group_key = None if s.repetition_penalty != 1.0 else (s.temperature, s.top_k, s.top_p)
        self.want_scores = False  # choose_tokens hands back the scores and tokens (for log-probabilities)
        self.rows: list[int] = []  # the batch rows it holds, set by the batch
        self.last: list[int] = []  # (width) the token each row is fed next
        self.started = False  # its first prefill is done
        self.steps = 0
        self.done = False
        self.peak_batch = 0  # the most groups it shared a decode step with, itself included
        self.owner = None  # the caller's object for this group (the engine's job)
        self.prompt_verdict = None  # the input rail's verdict on its prompt (aigc.safety.rails)
        self._generated = torch.zeros(n, 0, dtype=torch.long, device=device)
        self._unjoined: list[list[int]] = []  # tokens since the last join, one list of n per step

    @property
    def prompt_tokens(self) -> int:
        return self.contexts[0].shape[1]

    @property
    def completion_tokens(self) -> int:
        return sum(sample.tokens for sample in self.samples)

    def history(self, kind: int = 0) -> Tensor:
        """(n, T): the conditional (``kind`` 0) or unconditional (1) context and every token since."""
        if self._unjoined:  # joined when asked, not every step
            new = torch.tensor(self._unjoined, dtype=torch.long, device=self._generated.device).T
            self._generated, self._unjoined = torch.cat([self._generated, new], dim=1), []
        return torch.cat([self.contexts[kind].expand(self.n, -1), self._generated], dim=1)

    def prefill_parts(self, block_size: int, capacity: int | None) -> list[tuple[list[int], Tensor]]:
        """What to prefill before the group (re)joins a batch: ``(its rows, contexts (m, T))`` pairs.

        First each context's last ``block_size`` tokens; the logits of that prefill give the first
        token. Later (a row is full) each row's last :func:`refill_window` tokens but the newest,
        which the next decode step feeds as it would have anyway.
        """
        parts = []
        for kind in range(len(self.contexts)):
            rows = list(range(kind * self.n, (kind + 1) * self.n))
            if not self.started:
                ctx = self.contexts[kind][:, -block_size:].repeat(self.n, 1)
            else:
                ctx = self.history(kind)[:, -refill_window(capacity) : -1]
            if parts and parts[-1][1].shape[1] == ctx.shape[1]:  # equal lengths: one prefill call
                parts[-1] = (parts[-1][0] + rows, torch.cat([parts[-1][1], ctx]))
            else:
                parts.append((rows, ctx))
        return parts

    @property
    def holds_eos(self) -> bool:
        """End-of-text may not be drawn this step: ``min_new_tokens`` not reached yet."""
        return self.steps < self.sampling.min_new_tokens and self.eos is not None

    def scores(self, logits: Tensor, rows: list[int] | None = None) -> Tensor:
        """(n, V): what the group samples from, given the logits of its rows (``logits[rows]``, or
        all of ``logits``). Under guidance, log-probabilities uncond + g * (cond - uncond). End-of-text
        is -inf until ``min_new_tokens`` steps have been taken."""
        lg = logits if rows is None else logits[rows]
        if self.guided:
            logp = torch.log_softmax(lg.float(), dim=-1)
            cond, uncond = logp[: self.n], logp[self.n :]
            lg = uncond + self.sampling.guidance * (cond - uncond)
        if self.holds_eos:
            lg = lg.clone()
            lg[:, self.eos] = float("-inf")
        return lg

    def choose(self, scores: Tensor) -> Tensor:
        """Tokens (n,) from ``scores`` (n, V) on its own: the path of a group with a repetition penalty."""
        s = self.sampling
        return sampling_fns.sample_next_token(
            scores.float(), self.generator, temperature=s.temperature, top_k=s.top_k, top_p=s.top_p,
            repetition_penalty=s.repetition_penalty,
            prev_tokens=self.history() if s.repetition_penalty != 1.0 else None)

    def accept(self, ids: list[int]) -> list[Chunk]:
        """Take each sample's next token; return the chunks of text they complete. A sample ends on
        end-of-text or a stop string, every sample at ``max_new_tokens``; then ``done`` is set."""
        self._unjoined.append(ids)
        self.last = ids if not self.guided else ids + ids
        self.steps += 1
        chunks = []
        for sample, token in zip(self.samples, ids):
            if not sample.done:
                chunk = sample.push(token)
                if chunk is not None:
                    chunks.append(chunk)
        if self.steps >= self.sampling.max_new_tokens:
            chunks += [sample.finish() for sample in self.samples if not sample.done]
        self.done = all(sample.done for sample in self.samples)
        return chunks

    def cut(self, reason: str) -> list[Chunk]:
        """End the samples still running (a deadline passed): their last chunks, with ``reason``."""
        chunks = []
        for sample in self.samples:
            if not sample.done:
                chunk = sample.finish()
                if chunk.finish_reason != "content_filter":
                    chunk.finish_reason = reason
                chunks.append(chunk)
        self.done = True
        return chunks

    def attach_rails(self, make_rail) -> None:
        """Pass each sample's text through its own output rail, ``make_rail()``."""
        for sample in self.samples:
            sample.rail = make_rail()
