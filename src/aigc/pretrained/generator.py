"""Generation from an adapted pretrained base, through the one decoding core.

:class:`ChatGenerator` is a :class:`~aigc.generation.TextGenerator` whose context is a chat: the
request's conditions become an instruction through the run's prompt template, the prompt (or the
whole conversation of ``/v1/chat/completions``) becomes user turns, and the base's chat template
renders them with the generation prompt. A base without a chat template continues plain text.
Samples end at the template's end-of-turn token. Runs go through :func:`aigc.decoding.run` (and
the serving engine's batch) exactly as a gpt run does: :class:`BaseTokenizer` gives the core what it
reads of a tokenizer.

This module knows transformers tokenizers and the decoding core. It knows nothing about files,
the catalog or surfaces.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence

import torch
from torch import nn

from aigc.decoding import Sampling, SequenceGroup
from aigc.errors import InvalidInput
from aigc.generation import TextGenerator
from aigc.pretrained.formats import _check_conversation, _render, render_prompt


class BaseTokenizer:
    """A transformers fast tokenizer as the decoding core reads one: ``hf`` (the Rust tokenizer),
    ``vocab_size`` (ids the model may emit), ``eos_id`` (where a sample ends: the end-of-turn token of
    the chat template where it has one, else the tokenizer's eos)."""

    def __init__(self, tokenizer, vocab_size: int | None = None):
        if not getattr(tokenizer, "is_fast", False):
            raise InvalidInput(f"{type(tokenizer).__name__} is a slow tokenizer: the base needs a tokenizer.json")
        self.tokenizer = tokenizer
        self.hf = tokenizer.backend_tokenizer
        self.vocab_size = max(int(vocab_size or 0), len(tokenizer))
        self.eos_id = end_of_turn_id(tokenizer)

    def encode(self, text: str) -> list[int]:
        return self.tokenizer.encode(text, add_special_tokens=False)

    def decode(self, ids: Sequence[int], skip_special: bool = True) -> str:
        return self.tokenizer.decode(list(ids), skip_special_tokens=skip_special)

    def token_to_id(self, token: str) -> int | None:
        return self.hf.token_to_id(token)

    def count_unknown(self, text: str) -> int:
        return 0  # a base's tokenizer reads any text (byte fallback or byte-level)


def end_of_turn_id(tokenizer) -> int | None:
    """The special token the chat template writes right after an assistant's text (``<|im_end|>``,
    ``<end_of_turn>``, ``<|eot_id|>``...), else the tokenizer's eos token id."""
    eos = tokenizer.eos_token_id
    if not getattr(tokenizer, "chat_template", None):
        return eos
    marker = "Zq7xMarker"
    try:
        text = tokenizer.apply_chat_template([{"role": "user", "content": "hi"},
                                              {"role": "assistant", "content": marker}], tokenize=False)
    except Exception:  # noqa: BLE001 - a template that refuses this tiny chat: fall back to eos
        return eos
    after = text[text.find(marker) + len(marker):] if marker in text else ""
    ids = tokenizer.encode(after, add_special_tokens=False) if after.strip() else []
    specials = set(tokenizer.all_special_ids)
    for i in ids:
        if i in specials:
            return i
    return eos


def instruction(template: str | None, cond_columns: Sequence[str], prompt: str = "",
                cond: Mapping[str, str] | None = None, run: str = "") -> str:
    """An adapted run's user turn: its prompt ``template`` filled with ``cond`` (when given), then
    ``prompt``; an unconditional run's template alone when neither is given."""
    parts = []
    if cond:
        unknown = sorted(set(cond) - set(cond_columns))
        if unknown:
            have = ", ".join(cond_columns) or "none"
            raise InvalidInput(f"unknown condition column(s) {', '.join(unknown)} for run {run!r} (it has: {have})")
        if template:
            filled = {c: "" for c in cond_columns}
            filled.update({k: str(v) for k, v in cond.items()})
            parts.append(render_prompt(template, filled))
    if prompt:
        parts.append(prompt)
    if not parts and template and not cond_columns:
        parts.append(template)
    return "\n\n".join(parts)


class ChatGenerator(TextGenerator):
    """A loaded adapted run: a transformers causal LM (wrapped to the text contract: ``forward(idx)
    -> (logits, None)``, ``block_size``; or a :class:`~aigc.pretrained.decoder.FastLM` with a slot
    cache), its tokenizer, and the run's prompt template over its condition columns."""

    def __init__(self, model: nn.Module, tokenizer, template: str | None, cond_columns: Sequence[str] = (),
                 conditions: dict[str, list[str]] | None = None, name: str = "", chat: bool = True,
                 system: str | None = None, vocab_size: int | None = None):
        super().__init__(model, BaseTokenizer(tokenizer, vocab_size or _vocab_size(model)), cond_columns,
                         conditions, name, normalize=False)
        self.hf_tokenizer = tokenizer
        self.template = template
        self.chat = chat and bool(getattr(tokenizer, "chat_template", None))
        self.system = system

    def knows_value(self, column: str, value: str) -> bool:
        """Any value of a condition column can be asked for: it is written into the instruction."""
        return column in self.cond_columns

    # -- contexts -------------------------------------------------------------------------
    def instruction(self, prompt: str = "", cond: Mapping[str, str] | None = None) -> str:
        """The user turn: the template filled with ``cond`` (when given), then ``prompt``."""
        return instruction(self.template, self.cond_columns, prompt, cond, self.name)

    def messages_ids(self, messages: Sequence[Mapping[str, str]]) -> list[int]:
        """A conversation (``system``/``user``/``assistant`` turns ending with a user turn) rendered
        with the chat template and the generation prompt."""
        turns = [{"role": m.get("role"), "content": m.get("content")} for m in messages]
        if self.system and (not turns or turns[0]["role"] != "system"):
            turns = [{"role": "system", "content": self.system}, *turns]
        problem = _check_conversation([*turns, {"role": "assistant", "content": "x"}])
        if problem:
            raise InvalidInput(f"messages: {problem}")
        if not self.chat:  # plain continuation: the turns' text, one after another
            return self.tokenizer.encode("\n".join(t["content"] for t in turns if t["role"] != "system"))
        text = _render(self.hf_tokenizer, turns, add_generation_prompt=True)
        return self.tokenizer.encode(text)

    def context_ids(self, prompt: str = "", cond: dict[str, str] | None = None) -> list[int]:
        instruction = self.instruction(prompt, cond)
        if not self.chat:
            return self.tokenizer.encode(instruction)
        return self.messages_ids([{"role": "user", "content": instruction or " "}])

    def prepare(self, prompt: str, n: int, cond: dict[str, str] | None, s: Sampling,
                messages: Sequence[Mapping[str, str]] | None = None) -> SequenceGroup:
        """A request as a sequence group: ``messages`` (a chat) or ``prompt`` and ``cond``."""
        s.check()
        if isinstance(n, bool) or not isinstance(n, int) or n < 1:
            raise InvalidInput(f"n must be an integer >= 1, got {n!r}")
        if s.guidance != 1.0:
            raise InvalidInput(f"guidance {s.guidance:g} is for runs trained from scratch with condition "
                               f"dropout; {self.name or 'this run'} is adapted from a pretrained base: use guidance 1")
        verdict = None
        if self.guard is not None:  # the input rail, on every turn a person wrote
            if messages is not None:
                checked = []
                for m in messages:
                    if m.get("role") != "assistant" and m.get("content"):
                        content, verdict = self.guard.check_prompt(m["content"])
                        m = {**m, "content": content}
                    checked.append(m)
                messages = checked
            elif prompt:
                prompt, verdict = self.guard.check_prompt(prompt)
        ids = self.messages_ids(messages) if messages is not None else self.context_ids(prompt, cond)
        if not ids:
            raise InvalidInput("the prompt is empty and the run has no instruction to start from: give a prompt")
        seed = s.seed if s.seed is not None else int.from_bytes(os.urandom(4), "little")
        generator = torch.Generator(device=self.device).manual_seed(seed)
        return self.guarded(SequenceGroup(ids, n, s, generator, self.tokenizer, None, device=self.device), verdict)



def _vocab_size(model: nn.Module) -> int:
    config = getattr(model, "config", None) or getattr(getattr(model, "net", None), "config", None)
    return int(getattr(config, "vocab_size", 0) or 0)
