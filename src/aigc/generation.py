"""Text generation for every text family: a loaded run's prompts in, streamed chunks out.

:class:`TextGenerator` turns a prompt and conditions into a :class:`~aigc.decoding.SequenceGroup`
(the context the run was trained to continue: normalized as its training text was, with the
condition prefix, and under classifier-free guidance the unconditional context beside it), then
runs it through the decoding core (:func:`aigc.decoding.run`) on a batch of its own. The serving
engine runs the same groups through the same core, many to a batch.

This module knows models, tokenizers and the run's conditions. It knows nothing about files or
the catalog.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence

import torch
from torch import nn

from aigc.data import textstream
from aigc.data.clean import clean_text, nfkc
from aigc.data.tokenizers import TextTokenizer
from aigc.decoding import (Chunk, ForwardRunner, ModelRunner, SampleStream, Sampling, SequenceGroup,
                           SlotRunner, run)
from aigc.errors import InvalidInput

__all__ = ["Chunk", "SampleStream", "Sampling", "TextGenerator"]


class TextGenerator:
    """A loaded text run: model + tokenizer + the conditions it was trained on.

    ``normalize``: whether the run's training text was NFKC-normalized at ingest (the default
    there); prompts and condition values are then normalized the same way, so full-width letters,
    digits and spaces typed by a Chinese input method read as the characters the model saw.
    """

    def __init__(self, model: nn.Module, tokenizer: TextTokenizer, cond_columns: Sequence[str] = (),
                 conditions: dict[str, list[str]] | None = None, name: str = "", normalize: bool = True):
        self.model = model.eval()
        self.tokenizer = tokenizer
        self.cond_columns = list(cond_columns)
        self.conditions = conditions or {}
        self.name = name
        self.normalize = normalize
        # The safety layer (aigc.safety.guard.RunGuard): the input rail on prompts and an output
        # rail on each sample. runs.load attaches the workspace's; None (a bare generator) is off.
        self.guard = None

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    def knows_value(self, column: str, value: str) -> bool:
        """Whether ``value`` of condition ``column`` has a control token of its own in this run (a
        value without one generates through its column's ``other`` token)."""
        return self.tokenizer.token_to_id(textstream.cond_token(column, value)) is not None

    def prompt_ids(self, prompt: str) -> list[int]:
        """The prompt's tokens, normalized as the training text was; unseen characters refused."""
        if self.normalize and not prompt.isascii():  # ASCII is already NFKC
            prompt = nfkc(prompt)
        if self.tokenizer.count_unknown(prompt):
            unseen = sorted({ch for ch in prompt if self.tokenizer.count_unknown(ch)})
            shown = ", ".join(repr(ch) for ch in unseen[:5])
            raise InvalidInput(
                f"the prompt has {len(unseen)} character(s) this run never saw in training ({shown}): "
                "remove them, or train with --tokenizer bpe, which handles any text"
            )
        return self.tokenizer.encode(prompt)

    def _cond(self, cond: dict[str, str] | None) -> dict[str, str]:
        """Condition values cleaned as ingest cleaned them (they name control tokens exactly)."""
        return {k: clean_text(v, normalize=self.normalize) if isinstance(v, str) else v
                for k, v in (cond or {}).items()}

    def context_ids(self, prompt: str = "", cond: dict[str, str] | None = None) -> list[int]:
        """``<|endoftext|>`` + the condition tokens + the prompt: what generation continues."""
        prefix = textstream.prefix_ids(self.tokenizer, self._cond(cond), self.cond_columns, self.conditions)
        return prefix + self.prompt_ids(prompt)

    def prepare(self, prompt: str, n: int, cond: dict[str, str] | None, s: Sampling) -> SequenceGroup:
        """Validate a request; return it as a sequence group with its seeded generator."""
        s.check()
        if isinstance(n, bool) or not isinstance(n, int) or n < 1:
            raise InvalidInput(f"n must be an integer >= 1, got {n!r}")
        verdict = None
        if self.guard is not None and prompt:
            checked, verdict = self.guard.check_prompt(prompt)
            if checked != prompt and self.tokenizer.count_unknown(checked) > self.tokenizer.count_unknown(prompt):
                # a placeholder (<CN_RESIDENT_ID>) in characters this run never saw: the entity is left
                # out instead, rather than refusing a prompt for characters its user never typed
                checked = self.guard.guard.scanner.redact(prompt, "redact").text
            prompt = checked
        cond = self._cond(cond)
        prefix = textstream.prefix_ids(self.tokenizer, cond, self.cond_columns, self.conditions)
        ids = self.prompt_ids(prompt)
        uncond = None
        if s.guidance != 1.0:
            null = textstream.null_prefix_ids(self.tokenizer, self.cond_columns)
            if null is None:
                raise InvalidInput(
                    f"guidance {s.guidance:g} needs a run trained with condition dropout, and "
                    f"{self.name or 'this run'} was trained without it (it has no null condition tokens): "
                    "use guidance 1, or train the run again with --cond-dropout")
            if cond:  # with no condition given, both contexts would say the same: one row suffices
                uncond = null + ids
        seed = s.seed if s.seed is not None else int.from_bytes(os.urandom(4), "little")
        generator = torch.Generator(device=self.device).manual_seed(seed)
        return self.guarded(SequenceGroup(prefix + ids, n, s, generator, self.tokenizer, uncond, device=self.device),
                            verdict)

    def guarded(self, group: SequenceGroup, prompt_verdict=None) -> SequenceGroup:
        """``group`` with an output rail on each sample, when the generator has a guard; the input
        rail's verdict on its prompt kept with it (for the audit log)."""
        if self.guard is not None:
            group.attach_rails(self.guard.rail)
            group.prompt_verdict = prompt_verdict
        return group

    def runner(self, rows: int, use_cache: bool = True) -> ModelRunner:
        """A runner of ``rows`` rows for this run's model: its slot cache, or (``use_cache=False``,
        or a family without one) the plain forward over the last block."""
        if use_cache and hasattr(self.model, "init_slots"):
            return SlotRunner(self.model, rows)
        return ForwardRunner(self.model, rows)

    def stream(self, prompt: str = "", *, n: int = 1, cond: dict[str, str] | None = None,
               use_cache: bool = True, **sampling) -> Iterator[Chunk]:
        """Yield chunks of ``n`` continuations of ``prompt`` as tokens arrive (prompt excluded).
        Under a guard the call is one audit row, written when the stream ends or its reader stops."""
        group = self.prepare(prompt, n, cond, Sampling(**sampling))
        if self.guard is None:
            with torch.inference_mode():
                yield from run(self.runner(group.width, use_cache), group)
            return
        released = [""] * n
        try:
            with torch.inference_mode():
                for chunk in run(self.runner(group.width, use_cache), group):
                    released[chunk.index] += chunk.text
                    yield chunk
        except GeneratorExit:  # the reader stopped early: what it was given is audited all the same
            self.guard.audit_call(prompt, group, released)
            raise
        self.guard.audit_call(prompt, group, released)

    def generate(self, prompt: str = "", *, n: int = 1, cond: dict[str, str] | None = None,
                 use_cache: bool = True, **sampling) -> list[str]:
        """``n`` finished continuations of ``prompt`` (prompt excluded)."""
        texts: dict[int, str] = {}
        for chunk in self.stream(prompt, n=n, cond=cond, use_cache=use_cache, **sampling):
            texts[chunk.index] = texts.get(chunk.index, "") + chunk.text
        return [texts.get(i, "") for i in range(n)]
