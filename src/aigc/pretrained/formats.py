"""A business's data as supervised chat examples for a pretrained base, with the loss on the response only.

Three ways in, one shape out: a conversation is a list of ``{"role", "content"}`` turns, an optional
``system`` turn first, then ``user`` and ``assistant`` turns alternating, starting with ``user`` and
ending with ``assistant`` (the turns the model learns; a trailing user turn would teach nothing, and
Gemma's and Mistral's templates refuse anything but alternation).

- **a dataset's records** (:class:`~aigc.data.dataset.TextRecord`): :func:`records_to_chats` asks with a
  prompt made from the record's condition columns (:func:`render_prompt`, :func:`default_template`)
  and answers with its text;
- **a table with a prompt and a response column**: :func:`prompt_response_chats`;
- **chat JSONL as people have it** (the formats LLaMA-Factory reads), detected line by line by
  :func:`read_chat_jsonl`: OpenAI ``{"messages": [{"role", "content"}]}``, ShareGPT
  ``{"conversations": [{"from": "human|gpt|system", "value"}]}``, Alpaca ``{"instruction", "input",
  "output", "system", "history"}``.

Then :func:`tokenize_chat` renders a conversation with the base's own chat template
(:func:`ensure_chat_template` gives :data:`DEFAULT_CHAT_TEMPLATE` to a base that has none) and labels
the tokens of the assistant turns, end-of-turn token included, with -100 everywhere else; and
:func:`pack` concatenates examples into blocks of one length.

This module knows strings, JSON files and a transformers tokenizer passed in; it does not import
torch, and knows nothing about models, training, the workspace or surfaces. It does not know tools
or function calls (a ``tool`` or ``observation`` turn is refused), images, or reasoning fields.
"""

from __future__ import annotations

import json
import os
import string
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from aigc.errors import InvalidInput

ROLES = ("system", "user", "assistant")
IGNORE_INDEX = -100  # the label transformers' causal-LM losses skip

# Role names as the formats spell them -> ours. ShareGPT says human/gpt; exports of it often say
# user/assistant instead, so both are read in either list.
_ROLE_NAMES = {"system": "system", "user": "user", "human": "user",
               "assistant": "assistant", "gpt": "assistant"}

# For a base without a chat template. Plain-text headers the tokenizer already has (no new special
# tokens, so no embedding is added), and the tokenizer's own eos_token closes every assistant turn:
# the model learns to stop where generation stops. The blank line before a header belongs to the
# turn it opens, so an assistant turn is exactly its text + eos_token. Rendered:
#
#     ### System:
#     You sell tea.
#
#     ### User:
#     Write a warm note.
#
#     ### Assistant:
#     Hello!</s>
#
# (HF renders templates with trim_blocks and lstrip_blocks, so every newline here is an expression.)
DEFAULT_CHAT_TEMPLATE = (
    "{%- for message in messages -%}"
    "{%- if not loop.first -%}{{ '\n\n' }}{%- endif -%}"
    "{%- if message['role'] == 'system' -%}{{ '### System:\n' + message['content'] }}"
    "{%- elif message['role'] == 'user' -%}{{ '### User:\n' + message['content'] }}"
    "{%- elif message['role'] == 'assistant' -%}{{ '### Assistant:\n' + message['content'] + eos_token }}"
    "{%- endif -%}"
    "{%- endfor -%}"
    "{%- if add_generation_prompt -%}"
    "{%- if messages -%}{{ '\n\n' }}{%- endif -%}{{ '### Assistant:\n' }}"
    "{%- endif -%}"
)

_FORMATS_HINT = ("expected an object with 'messages' (OpenAI), 'conversations' (ShareGPT) or 'instruction' "
                 "and 'output' (Alpaca)")


def _clip(text: str, n: int = 60) -> str:
    return repr(text if len(text) <= n else text[:n] + "...")


# -- prompts from condition columns ---------------------------------------------------------


def _fields(template: str) -> list[str]:
    """The column names a template uses, in order (repeats kept); refuses anything but ``{name}``."""
    if not isinstance(template, str) or not template.strip():
        raise InvalidInput("the prompt template is empty: give text with {column} fields, e.g. "
                           "'Write a {tone} text about {category}', or leave --prompt-template out")
    try:
        parts = list(string.Formatter().parse(template))
    except ValueError as e:  # unbalanced braces
        raise InvalidInput(f"prompt template {_clip(template)} is malformed ({e}): write a column as "
                           "{column} and a literal brace as {{ or }}: fix --prompt-template") from None
    names = []
    for _literal, name, spec, conversion in parts:
        if name is None:
            continue
        if name == "":
            raise InvalidInput(f"prompt template {_clip(template)} has an empty field {{}}: name a column "
                               "inside the braces, e.g. {category}: fix --prompt-template")
        if spec or conversion:
            shown = name + (f"!{conversion}" if conversion else "") + (f":{spec}" if spec else "")
            raise InvalidInput(f"prompt template field {{{shown}}} has a format spec or conversion, which "
                               f"prompts do not take: write {{{name}}}: fix --prompt-template")
        names.append(name)
    return names


def _missing(name: str, columns: Iterable[str]) -> InvalidInput:
    cols = ", ".join(columns) or "no condition columns"
    if ("." in name or "[" in name) and name not in columns:
        return InvalidInput(f"prompt template field {{{name}}} uses attribute or index access, which prompts "
                            f"do not take: name a column (it has: {cols}): fix --prompt-template")
    return InvalidInput(f"prompt template names column {name!r}, which the dataset does not have "
                        f"(it has: {cols}): fix --prompt-template")


def check_template(template: str, columns: Sequence[str]) -> list[str]:
    """The columns ``template`` uses (each once, in order of first use); raises InvalidInput when it
    names a column not in ``columns`` or is malformed (unbalanced braces, ``{a.b}``, ``{a[0]}``,
    ``{a:>10}``, ``{a!r}``, ``{}``)."""
    used: list[str] = []
    for name in _fields(template):
        if name not in columns:
            raise _missing(name, columns)
        if name not in used:
            used.append(name)
    return used


def render_prompt(template: str, cond: Mapping[str, str]) -> str:
    """``template`` with each ``{column}`` replaced by ``cond[column]`` (``{{``/``}}`` are literal braces).

    Fields are plain column names, looked up as written: ``{1}`` is the column named ``1`` (a table
    read with ``--no-header``), not a position."""
    names = set(_fields(template))
    for name in names:
        if name not in cond:
            raise _missing(name, list(cond))
    out = []
    for literal, name, _spec, _conversion in string.Formatter().parse(template):
        out.append(literal)
        if name is not None:
            out.append(str(cond[name]))
    return "".join(out)


def default_template(columns: Sequence[str]) -> str:
    """A generic prompt naming every condition column: ``Write a text with category: {category}, tone:
    {tone}.``; with no columns ``Write a text.``

    A scenario passes its own wording instead (``--prompt-template``), e.g. ``Write a {tone} product
    description for {category} in {lang}``, or ``为{category}写一段{tone}的文案``."""
    usable = [c for c in columns if c and not any(ch in c for ch in "{}:!")]  # a name a field can spell
    if not usable:
        return "Write a text."
    return "Write a text with " + ", ".join(f"{c}: {{{c}}}" for c in usable) + "."


# -- conversations --------------------------------------------------------------------------


def _check_conversation(turns: list[dict[str, str]]) -> str | None:
    """What is wrong with a normalized conversation (None: nothing): system only first, then user and
    assistant alternating from user, ending with a non-empty assistant turn."""
    if not turns:
        return "the conversation has no turns"
    if not any(t["role"] == "assistant" for t in turns):
        return "the conversation has no assistant turn, so nothing to learn: each needs at least one"
    body = turns[1:] if turns[0]["role"] == "system" else turns
    for i, t in enumerate(turns, start=1):
        if t["role"] not in ROLES:
            return f"turn {i} has role {t['role']!r}, which is not one of {', '.join(ROLES)}"
        if not isinstance(t["content"], str):
            return f"turn {i}'s content is not text ({type(t['content']).__name__})"
        if t["role"] == "assistant" and not t["content"].strip():
            return f"turn {i} (assistant) is empty: give the response text"
    offset = len(turns) - len(body)
    for j, t in enumerate(body):
        want = "user" if j % 2 == 0 else "assistant"
        if t["role"] != want:
            where = "first" if j == 0 else f"after {body[j - 1]['role']!r}"
            hint = (" (system only as the first turn)" if t["role"] == "system"
                    else "" if j else " (a conversation starts with the user, after an optional system turn)")
            return (f"turn {j + offset + 1} is {t['role']!r} {where}: turns must alternate user, "
                    f"assistant{hint}")
    if body[-1]["role"] != "assistant":
        return (f"the conversation ends with a {body[-1]['role']!r} turn (turn {len(turns)}): end it with "
                "the assistant's answer, or drop the last turn")
    return None


def _content(value: Any) -> str | None:
    """A turn's text: a string, or OpenAI's list of ``{"type": "text", "text"}`` parts joined."""
    if isinstance(value, str):
        return value
    if isinstance(value, list) and all(isinstance(p, dict) and p.get("type") == "text"
                                       and isinstance(p.get("text"), str) for p in value):
        return "".join(p["text"] for p in value)
    return None


# The keys a turn's role and text go by in each list; a turn spelled the other way is read too.
_TURN_KEYS = {"messages": ("role", "content"), "conversations": ("from", "value")}


def _turns(items: Any, key: str) -> list[dict[str, str]]:
    """OpenAI ``messages`` or ShareGPT ``conversations``, normalized; raises ValueError with the reason."""
    role_key, content_key = _TURN_KEYS[key]
    alt_role, alt_content = _TURN_KEYS["conversations" if key == "messages" else "messages"]
    if not isinstance(items, list):
        raise ValueError(f"{key!r} is not a list of turns")
    turns = []
    for i, item in enumerate(items, start=1):
        if not isinstance(item, dict):
            raise ValueError(f"turn {i} is not an object with {role_key!r} and {content_key!r}")
        role = item.get(role_key, item.get(alt_role))
        if role is None:
            raise ValueError(f"turn {i} has no {role_key!r}")
        raw = item.get(content_key, item.get(alt_content))
        if raw is None:
            raise ValueError(f"turn {i} has no {content_key!r}")
        if not isinstance(role, str) or role.lower() not in _ROLE_NAMES:
            raise ValueError(f"turn {i} has role {role!r}, which is not one of system, user, assistant "
                             "(or human, gpt): tool and function turns are not supported")
        text = _content(raw)
        if text is None:
            raise ValueError(f"turn {i}'s {content_key!r} is not text ({type(raw).__name__})")
        turns.append({"role": _ROLE_NAMES[role.lower()], "content": text})
    return turns


def _alpaca(obj: dict) -> list[dict[str, str]]:
    """Alpaca's record as LLaMA-Factory reads it: the prompt is instruction + "\\n" + input, after the
    history's (instruction, response) pairs."""
    fields = {k: obj.get(k) for k in ("instruction", "input", "output", "system")}
    for k, v in fields.items():
        if v is not None and not isinstance(v, str):
            raise ValueError(f"Alpaca field {k!r} is not text ({type(v).__name__})")
    turns = [{"role": "system", "content": fields["system"]}] if fields["system"] else []
    history = obj.get("history") or []
    pairs = isinstance(history, list) and all(
        isinstance(h, list) and len(h) == 2 and all(isinstance(x, str) for x in h) for h in history)
    if not pairs:
        raise ValueError("Alpaca 'history' is not a list of [instruction, response] pairs")
    for q, a in history:
        turns += [{"role": "user", "content": q}, {"role": "assistant", "content": a}]
    prompt = "\n".join(s for s in (fields["instruction"], fields["input"]) if s)
    return turns + [{"role": "user", "content": prompt}, {"role": "assistant", "content": fields["output"]}]


def _parse_conversation(obj: Any) -> list[dict[str, str]]:
    """One record in any of the three formats, normalized and checked; raises ValueError with the reason."""
    if not isinstance(obj, dict):
        raise ValueError(f"is not in a known chat format ({type(obj).__name__}): {_FORMATS_HINT}")
    if "messages" in obj:
        turns = _turns(obj["messages"], "messages")
    elif "conversations" in obj:
        turns = _turns(obj["conversations"], "conversations")
    elif "instruction" in obj and "output" in obj:
        turns = _alpaca(obj)
    else:
        keys = ", ".join(map(str, obj)) or "none"
        raise ValueError(f"is not in a known chat format (its keys: {keys}): {_FORMATS_HINT}")
    problem = _check_conversation(turns)
    if problem:
        raise ValueError(problem)
    return turns


def read_chat_jsonl(path: str | os.PathLike) -> list[list[dict[str, str]]]:
    """Every conversation of a chat file, normalized to ``[{"role": "system|user|assistant", "content"}]``.

    One JSON object per line, each in any of the three formats (detected per line); blank lines are
    skipped and a UTF-8 BOM is accepted. A file that is one JSON array of such objects (Alpaca's
    ``alpaca_data.json``) is read too, its errors counted by record instead of line. The first bad line
    raises InvalidInput naming the file, the line and what is wrong with it."""
    file = Path(path).expanduser()
    if not file.is_file():
        raise InvalidInput(f"chat file {str(file)!r} not found: give a .jsonl file of conversations")
    try:
        text = file.read_bytes().decode("utf-8-sig")
    except UnicodeDecodeError as e:
        raise InvalidInput(f"{file}: not UTF-8 (byte {e.start}): save it as UTF-8") from None
    records: list[tuple[str, Any]] = []
    if text.lstrip().startswith("["):
        try:
            whole = json.loads(text)
        except json.JSONDecodeError:
            whole = None  # read line by line, so the error says which line
        if isinstance(whole, list):
            records = [(f"record {i}", obj) for i, obj in enumerate(whole, start=1)]
    if not records and not text.lstrip().startswith("[]"):
        for lineno, line in enumerate(text.splitlines(), start=1):
            if not line.strip():
                continue
            try:
                records.append((f"line {lineno}", json.loads(line)))
            except json.JSONDecodeError as e:
                raise InvalidInput(f"{file}: line {lineno} is not JSON ({e.msg} at column {e.colno}): "
                                   "write one JSON object per line") from None
    if not records:
        raise InvalidInput(f"{file} has no conversations: write one per line, {_FORMATS_HINT}")
    out = []
    for where, obj in records:
        try:
            out.append(_parse_conversation(obj))
        except ValueError as e:
            sep = " " if str(e).startswith("is not") else ": "
            raise InvalidInput(f"{file}: {where}{sep}{e}") from None
    return out


def records_to_chats(records: Iterable[Any], template: str) -> list[list[dict[str, str]]]:
    """Each :class:`~aigc.data.dataset.TextRecord` as ``[user: render_prompt(template, cond), assistant:
    text]``."""
    out = []
    for i, r in enumerate(records, start=1):
        turns = [{"role": "user", "content": render_prompt(template, r.cond)},
                 {"role": "assistant", "content": r.text}]
        problem = _check_conversation(turns)
        if problem:
            raise InvalidInput(f"record {i}: {problem}")
        out.append(turns)
    return out


def prompt_response_chats(rows: Iterable[Mapping[str, Any]], prompt_column: str,
                          response_column: str) -> list[list[dict[str, str]]]:
    """Each row (column -> value) as ``[user: row[prompt_column], assistant: row[response_column]]``.

    A missing column or an empty cell is refused with the row number (1 = the first row)."""
    out = []
    for i, row in enumerate(rows, start=1):
        texts = []
        for column, flag in ((prompt_column, "--prompt-column"), (response_column, "--response-column")):
            if column not in row:
                where = "the table" if i == 1 else f"row {i}"
                raise InvalidInput(f"{where} has no column {column!r} (it has: {', '.join(map(str, row))}): "
                                   f"fix {flag}")
            value = row[column]
            if value is None or not str(value).strip():
                raise InvalidInput(f"row {i}: column {column!r} is empty: fill it in or drop the row")
            texts.append(str(value))
        out.append([{"role": "user", "content": texts[0]}, {"role": "assistant", "content": texts[1]}])
    return out


# -- tokenizing -----------------------------------------------------------------------------


def ensure_chat_template(tokenizer) -> bool:
    """Give ``tokenizer`` :data:`DEFAULT_CHAT_TEMPLATE` when it has no chat template; True when it did.

    A base's own template is kept: an instruct model answers best in the format it was tuned on."""
    if getattr(tokenizer, "chat_template", None):
        return False
    if not getattr(tokenizer, "eos_token", None):
        raise InvalidInput("the base's tokenizer has neither a chat template nor an eos_token, so a model "
                           "could not learn where an answer ends: pick a base whose tokenizer has one")
    tokenizer.chat_template = DEFAULT_CHAT_TEMPLATE
    return True


def _render(tokenizer, messages: list[dict[str, str]], add_generation_prompt: bool) -> str:
    try:
        return tokenizer.apply_chat_template(messages, tokenize=False,
                                             add_generation_prompt=add_generation_prompt)
    except Exception as e:  # noqa: BLE001 - jinja2's TemplateError, or a template's raise_exception
        first = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise InvalidInput(f"the base's chat template refused this conversation: {first[:200]}") from None


def _assistant_spans(tokenizer, messages: list[dict[str, str]], full: str) -> list[tuple[int, int]]:
    """Character spans of ``full`` (the whole rendering) that the model must learn to write.

    Turn i spans from the end of the rendering of messages[:i] with the generation prompt to the end of
    the rendering of messages[:i+1], which is where a template's end-of-turn token sits. A template
    that renders a finished turn differently when later turns follow (Qwen3's empty think block on the
    last turn only) is met by finding the turn's text after the start instead, then as much of what
    the template wrote after it in the shorter rendering as the whole one also has."""
    spans = []
    cursor = 0
    for i, m in enumerate(messages):
        if m["role"] != "assistant":
            continue
        content = m["content"].strip()
        prompt = _render(tokenizer, messages[:i], add_generation_prompt=True)
        if full.startswith(prompt) and len(prompt) >= cursor:
            start = len(prompt)
        else:
            start = full.find(content, cursor)
        done = _render(tokenizer, messages[: i + 1], add_generation_prompt=False)
        if full.startswith(done) and len(done) > start >= 0:
            end = len(done)
        else:
            at = full.find(content, max(start, 0))
            if start < 0 or at < 0:
                raise InvalidInput(f"the base's chat template does not write assistant turn {i + 1}'s text "
                                   "as given, so its tokens cannot be found: use a template that keeps it")
            end = at + len(content)
            tail = done[done.rfind(content) + len(content):] if content in done else ""
            while tail and end < len(full) and full[end] == tail[0]:  # the end-of-turn the template writes
                end, tail = end + 1, tail[1:]
        end = start + len(full[start:end].rstrip())  # a newline after the end-of-turn is the next turn's
        spans.append((start, end))
        cursor = end
    return spans


def tokenize_chat(tokenizer, messages: Sequence[Mapping[str, str]],
                  max_length: int | None = None) -> dict[str, list[int]]:
    """``{"input_ids", "labels"}`` of one conversation rendered with the tokenizer's chat template.

    ``input_ids`` are the tokens of the whole rendering (no special tokens added beyond what the
    template writes); ``labels`` equal them on the assistant turns, end-of-turn token included, and
    are -100 everywhere else (transformers shifts labels inside the model). A token that straddles
    the edge of an assistant turn is labelled. ``max_length`` keeps the first tokens: a conversation
    cut inside its prompt has no label left (drop such examples, ``all(l == -100 ...)``).

    Needs a fast tokenizer (character offsets) with a chat template (:func:`ensure_chat_template`)."""
    turns = [{"role": m.get("role"), "content": m.get("content")} for m in messages]
    problem = _check_conversation(turns)
    if problem:
        raise InvalidInput(f"cannot tokenize the conversation: {problem}")
    if not getattr(tokenizer, "is_fast", False):
        raise InvalidInput(f"{type(tokenizer).__name__} is a slow tokenizer, which cannot map text to "
                           "tokens: load the base with a fast tokenizer (tokenizer.json)")
    if not getattr(tokenizer, "chat_template", None):
        raise InvalidInput("the tokenizer has no chat template: call ensure_chat_template(tokenizer) first")
    if max_length is not None and (not isinstance(max_length, int) or isinstance(max_length, bool)
                                   or max_length < 2):
        raise InvalidInput(f"invalid max_length {max_length!r}: pass a whole number >= 2, or None for no "
                           "limit")
    full = _render(tokenizer, turns, add_generation_prompt=False)
    spans = _assistant_spans(tokenizer, turns, full)
    enc = tokenizer(full, return_offsets_mapping=True, add_special_tokens=False)
    ids, offsets = list(enc["input_ids"]), enc["offset_mapping"]
    labels = [IGNORE_INDEX] * len(ids)
    k = 0  # spans and tokens both go left to right
    for t, (s, e) in enumerate(offsets):
        while k < len(spans) and spans[k][1] <= s:
            k += 1
        if k < len(spans) and s < spans[k][1] and e > spans[k][0]:
            labels[t] = ids[t]
    if all(label == IGNORE_INDEX for label in labels):
        raise InvalidInput("the base's chat template leaves the assistant's text out of the rendering, so "
                           "there is nothing to learn: use a template that writes assistant turns")
    if max_length is not None:
        ids, labels = ids[:max_length], labels[:max_length]
    return {"input_ids": ids, "labels": labels}


def pack(examples: Iterable[Mapping[str, Sequence[int]]], block_size: int,
         pad_id: int | None = None) -> list[dict[str, list[int]]]:
    """Tokenized examples concatenated, in order, and cut into blocks of exactly ``block_size`` tokens.

    The last partial block is dropped when ``pad_id`` is None (as transformers' ``run_clm`` does), or
    padded with ``pad_id`` and labels -100 otherwise: under causal attention padding at the end
    changes nothing before it, so no attention mask is needed. A block may hold the end of one
    example and the start of the next, which then attends to it (no document mask: the usual price
    of packing). Fewer tokens than one block, with nothing to pad, are refused."""
    if not isinstance(block_size, int) or isinstance(block_size, bool) or block_size < 2:
        raise InvalidInput(f"invalid block size {block_size!r}: pass a whole number >= 2")
    ids: list[int] = []
    labels: list[int] = []
    for i, ex in enumerate(examples, start=1):
        if len(ex["input_ids"]) != len(ex["labels"]):
            raise InvalidInput(f"example {i} has {len(ex['input_ids'])} input_ids and {len(ex['labels'])} "
                               "labels: they must pair one to one")
        ids.extend(ex["input_ids"])
        labels.extend(ex["labels"])
    rest = len(ids) % block_size
    if rest and pad_id is not None:
        ids.extend([pad_id] * (block_size - rest))
        labels.extend([IGNORE_INDEX] * (block_size - rest))
    if len(ids) < block_size:
        raise InvalidInput(f"the examples hold {len(ids)} tokens, fewer than one block of {block_size}: "
                           "lower the block size, add data, or pad the last block")
    return [{"input_ids": ids[s:s + block_size], "labels": labels[s:s + block_size]}
            for s in range(0, len(ids) - block_size + 1, block_size)]
