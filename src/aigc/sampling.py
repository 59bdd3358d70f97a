"""Choosing the next token: pure functions from logits to token ids, plus stop-string matching.

Logits in, tokens out; randomness comes only from the ``torch.Generator`` the caller passes, so the
same generator state gives the same tokens. Nothing here knows about models, tokenizers or I/O:
the caller runs the model, decodes ids to text and feeds the text to :class:`StopMatcher`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

import torch
from torch import Tensor

from aigc.errors import InvalidInput


def check_sampling(
    temperature: float = 1.0,
    top_k: int | None = None,
    top_p: float | None = None,
    repetition_penalty: float = 1.0,
) -> None:
    """Raise :class:`InvalidInput` for settings :func:`sample_next_token` cannot honour."""
    if not temperature >= 0:  # written this way so NaN is refused too
        raise InvalidInput(f"temperature must be >= 0 (0 means greedy), got {temperature}")
    if top_k is not None and (isinstance(top_k, bool) or int(top_k) != top_k or top_k < 0):
        raise InvalidInput(f"top_k must be an integer >= 1 (or 0/None for no limit), got {top_k}")
    if top_p is not None and not 0 < top_p <= 1:
        raise InvalidInput(f"top_p must be in (0, 1], got {top_p} (use 1 or None for no nucleus cut)")
    if not repetition_penalty > 0:
        raise InvalidInput(f"repetition_penalty must be > 0 (1 means none), got {repetition_penalty}")


def apply_repetition_penalty(logits: Tensor, prev_tokens: Tensor, penalty: float) -> Tensor:
    """CTRL-style penalty, as in transformers: for every token already in ``prev_tokens``, divide a
    positive logit by ``penalty`` and multiply a negative one, so ``penalty > 1`` always makes it
    less likely. ``logits`` (B, V), ``prev_tokens`` (B, T) long; negative ids (padding) are ignored.
    Returns a new tensor.
    """
    if prev_tokens.dim() == 1:
        prev_tokens = prev_tokens.unsqueeze(0).expand(logits.shape[0], -1)
    if prev_tokens.shape[0] != logits.shape[0]:
        raise InvalidInput(
            f"prev_tokens must have one row per logits row: got {tuple(prev_tokens.shape)} "
            f"for logits {tuple(logits.shape)}"
        )
    prev = prev_tokens.to(device=logits.device, dtype=torch.long)
    valid = prev >= 0
    # seen (B, V): which ids occur in each row. scatter_add, not scatter: with repeated ids a plain
    # scatter would let a padding entry (pointed at id 0) overwrite a real occurrence of id 0.
    seen = torch.zeros(logits.shape, device=logits.device)
    seen.scatter_add_(1, prev.clamp(min=0), valid.to(seen.dtype))
    penalized = torch.where(logits < 0, logits * penalty, logits / penalty)
    return torch.where(seen > 0, penalized, logits)


def sample_next_token(
    logits: Tensor,
    generator: torch.Generator | None = None,
    *,
    temperature: float = 1.0,
    top_k: int | None = None,
    top_p: float | None = None,
    repetition_penalty: float = 1.0,
    prev_tokens: Tensor | None = None,
) -> Tensor:
    """Pick one token per row: ``logits`` (B, V) float -> (B,) long.

    Order: repetition penalty, then ``temperature == 0`` -> argmax (greedy); otherwise divide by the
    temperature, keep the ``top_k`` largest, keep the smallest set whose probability reaches ``top_p``
    (always at least the top token), and draw by inverse CDF with one uniform per row from
    ``generator`` (:func:`draw`). Rows are independent.
    """
    probs, greedy = next_token_probs(logits, temperature=temperature, top_k=top_k, top_p=top_p,
                                     repetition_penalty=repetition_penalty, prev_tokens=prev_tokens)
    if greedy is not None:
        return greedy
    return draw(probs, uniforms(probs.shape[0], generator, probs.device))


def next_token_probs(
    logits: Tensor,
    *,
    temperature: float = 1.0,
    top_k: int | None = None,
    top_p: float | None = None,
    repetition_penalty: float = 1.0,
    prev_tokens: Tensor | None = None,
) -> tuple[Tensor | None, Tensor | None]:
    """``(probs, None)``: the distribution (B, V) :func:`sample_next_token` draws from; or
    ``(None, tokens)`` when greedy. Rows are independent, so the rows of several requests with the
    same settings can share one call (the serving engine does)."""
    check_sampling(temperature, top_k, top_p, repetition_penalty)
    if logits.dim() != 2:
        raise InvalidInput(f"logits must have shape (batch, vocab), got {tuple(logits.shape)}")
    logits = logits.float()  # half precision softmax/cumsum loses the tail of the distribution
    if repetition_penalty != 1.0 and prev_tokens is not None and prev_tokens.numel() > 0:
        logits = apply_repetition_penalty(logits, prev_tokens, repetition_penalty)

    if temperature == 0:
        return None, logits.argmax(dim=-1)

    logits = logits / temperature
    vocab = logits.shape[-1]
    if top_k and top_k < vocab:
        kth = torch.topk(logits, int(top_k), dim=-1).values[:, -1:]  # (B, 1) smallest kept logit
        logits = logits.masked_fill(logits < kth, float("-inf"))
    if top_p is not None and top_p < 1.0:
        sorted_logits, order = torch.sort(logits, dim=-1, descending=True)  # (B, V)
        probs = sorted_logits.softmax(dim=-1)
        # Drop a token when the tokens ranked above it already reach top_p; the top token has
        # nothing above it (0 < top_p), so it is always kept.
        drop_sorted = (probs.cumsum(dim=-1) - probs) >= top_p
        drop = drop_sorted.scatter(1, order, drop_sorted)  # back to vocabulary order
        logits = logits.masked_fill(drop, float("-inf"))
    return logits.softmax(dim=-1), None  # (B, V)


def uniforms(n: int | Sequence[int], generator: torch.Generator | None | Sequence[torch.Generator], device) -> Tensor:
    """n draws from (0, 1] (never 0, so :func:`draw` never picks a token of probability 0).

    With sequences, ``n[i]`` draws from ``generator[i]`` each, concatenated: the same values as
    one call per generator, in one tensor (the serving engine samples many requests' rows at once).
    """
    if isinstance(n, int):
        n, generator = [n], [generator]
    where = generator[0].device if generator[0] is not None else device
    parts = [torch.rand(k, generator=g, device=where) for k, g in zip(n, generator)]
    u = parts[0] if len(parts) == 1 else torch.cat(parts)
    return (1.0 - u).to(device)


def draw(probs: Tensor, u: Tensor) -> Tensor:
    """Inverse-CDF sampling: for each row, the first token whose cumulative probability reaches
    ``u`` (B,) times the row's total. One uniform per row, from whichever generator owns the row."""
    cdf = probs.cumsum(dim=-1)
    idx = torch.searchsorted(cdf, (u.to(cdf.dtype) * cdf[:, -1]).unsqueeze(-1)).squeeze(-1)
    return idx.clamp(max=probs.shape[-1] - 1)


class TokenLogprobs(NamedTuple):
    """Log-probabilities for chosen tokens and, optionally, the most likely alternatives."""

    token: Tensor  # (...) log p(chosen token)
    top_values: Tensor  # (..., top_n) log-probs of the top_n tokens, best first
    top_ids: Tensor  # (..., top_n) their ids


def logprobs_of(logits: Tensor, tokens: Tensor, top_n: int = 0) -> TokenLogprobs:
    """Log-softmax of ``logits`` (..., V) at ``tokens`` (...), plus the ``top_n`` best alternatives.

    Works for one step ((B, V) with (B,)) or a whole sequence ((B, T, V) with (B, T)). The values are
    those of the distribution given: pass raw logits for the model's own probabilities, or processed
    ones for the distribution that was actually sampled.
    """
    if top_n < 0:
        raise InvalidInput(f"top_n must be >= 0, got {top_n}")
    if logits.shape[:-1] != tokens.shape:
        raise InvalidInput(
            f"tokens shape must be logits shape without the vocab dim: got tokens {tuple(tokens.shape)} "
            f"for logits {tuple(logits.shape)}"
        )
    logp = torch.log_softmax(logits.float(), dim=-1)  # (..., V)
    token = logp.gather(-1, tokens.long().unsqueeze(-1)).squeeze(-1)  # (...)
    top_values, top_ids = torch.topk(logp, min(top_n, logp.shape[-1]), dim=-1)  # (..., top_n)
    return TokenLogprobs(token, top_values, top_ids)


class StopMatcher:
    """Streams text against stop strings. ``feed(piece) -> (text_to_emit, stopped)``.

    Holds back any tail that could be the start of a stop string; on a match emits only the text
    before the stop and ``stopped=True`` (later feeds emit nothing); :meth:`flush` returns what was
    held back when the stream ends without a stop.
    """

    def __init__(self, stops: Sequence[str]):
        self.stops = _check_stops(stops)
        self._held = ""
        self.stopped = False

    def feed(self, piece: str) -> tuple[str, bool]:
        if not self.stops:  # the common case, once per streamed token
            return piece, False
        if self.stopped:
            return "", True
        buf = self._held + piece
        hit = _first_stop(buf, self.stops)
        if hit is not None:
            self._held = ""
            self.stopped = True
            return buf[:hit], True
        # Keep the longest tail that is a proper prefix of some stop; the rest cannot start a stop.
        keep = 0
        for stop in self.stops:
            for k in range(min(len(stop) - 1, len(buf)), keep, -1):
                if buf.endswith(stop[:k]):
                    keep = k
                    break
        self._held = buf[len(buf) - keep :] if keep else ""
        return buf[: len(buf) - keep], False

    def flush(self) -> str:
        held, self._held = self._held, ""
        return held


def apply_stops(text: str, stops: Sequence[str]) -> tuple[str, bool]:
    """Cut ``text`` at the earliest stop string: ``(text before it, True)``, or ``(text, False)``."""
    hit = _first_stop(text, _check_stops(stops))
    return (text, False) if hit is None else (text[:hit], True)


def _check_stops(stops: Sequence[str] | str | None) -> list[str]:
    if stops is None:
        return []
    if isinstance(stops, str):
        stops = [stops]  # a bare string is one stop, not one stop per character
    out = list(stops)
    for s in out:
        if not isinstance(s, str) or not s:
            raise InvalidInput(f"stop strings must be non-empty strings, got {s!r}")
    return out


def _first_stop(text: str, stops: list[str]) -> int | None:
    hits = [i for i in (text.find(s) for s in stops) if i >= 0]
    return min(hits) if hits else None
