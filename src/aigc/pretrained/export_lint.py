"""The export lint: does a model folder carry what vLLM, TGI, llama.cpp and Ollama read?

:func:`lint` checks a transformers checkpoint folder (and the GGUF file and Ollama ``Modelfile`` beside
it, when there are some) field by field against what each server reads, and returns one
:class:`Finding` per check: ``error`` (a server refuses the folder, or serves it wrongly: a default
RoPE base, no stop at the end of an answer, a chat endpoint with no template), ``warning`` (it works
with less: no chat template on a continuation model), ``ok`` or ``skipped``. :func:`make_portable`
writes what transformers 5's ``save_pretrained`` leaves out for older readers, so our exports pass.

Measured with transformers 5 (issue 18): the chat template lands only in ``chat_template.jinja``;
``rope_theta`` moves under ``rope_parameters``; the tokenizer class is written as ``TokenizersBackend``;
``extra_special_tokens`` becomes a list; ``torch_dtype`` becomes ``dtype``.

Who reads what, from their sources (the same table is in docs/scale-out/serving.md):

- vLLM: ``vllm/model_executor/models/registry.py`` ``ModelRegistry.resolve_model_cls`` (``architectures``);
  ``vllm/config/model.py`` ``_find_dtype`` (``config.dtype``, which transformers < 4.56 fills from
  ``torch_dtype`` only) and ``_get_and_verify_max_len`` (``max_position_embeddings``...);
  ``vllm/transformers_utils/tokenizer.py`` ``get_tokenizer`` (``AutoTokenizer``: ``tokenizer_class``);
  ``vllm/entrypoints/chat_utils.py`` ``resolve_hf_chat_template`` (the tokenizer's template);
  ``vllm/sampling_params.py`` ``SamplingParams.update_from_generation_config`` (the tokenizer's eos, then
  ``generation_config.json``'s ``eos_token_id`` as extra stop ids).
- TGI: ``router/src/server.rs`` reads ``tokenizer_config.json`` (``HubTokenizerConfig``: ``chat_template``,
  ``bos_token``, ``eos_token``, ``tokenizer_class``) and ``chat_template.json``, never
  ``chat_template.jinja``; ``py_resolve_tokenizer`` loads the tokenizer with transformers 4.51.3 (its
  pin), which does not know ``TokenizersBackend``; ``launcher/src/main.rs`` ``RawConfig``
  (``max_position_embeddings``, ``model_type``); ``server/.../models/__init__.py`` ``get_model``
  (``model_type``); ``flash_causal_lm.py`` (``GenerationConfig.from_pretrained``: a list of eos ids);
  ``layers/rotary.py`` and the flash modeling files (``config.rope_theta``, ``config.rope_scaling``).
- llama.cpp: ``convert_hf_to_gguf.py`` ``get_model_architecture`` (``architectures[0]``),
  ``TextModel.__init__`` (``rope_parameters`` or ``rope_scaling``, ``rope_theta``; older releases
  ``rope_theta`` only), ``set_gguf_parameters`` (``max_position_embeddings``...);
  ``gguf-py/gguf/vocab.py`` ``SpecialVocab`` (``tokenizer_config.json``'s ``chat_template``, then
  ``chat_template.jinja``; ``bos_token``/``eos_token`` looked up in ``tokenizer.json``'s ``added_tokens``,
  then ``config.json``'s ``*_token_id``). Our own GGUF export reads the folder through transformers.
- Ollama: ``convert/convert.go`` ``ConvertModel`` (``architectures[0]``, ``vocab_size``);
  ``convert/convert_llama.go`` (``rope_theta`` at the top level only: without it no
  ``rope.freq_base`` is written and llama.cpp's default 10000 applies, ``rope_scaling``,
  ``max_position_embeddings``); ``convert/tokenizer.go`` ``parseTokenizer`` (``tokenizer.json``;
  ``tokenizer_config.json``'s ``chat_template`` and ``*_token`` matched against ``added_tokens``;
  ``generation_config.json``'s ``eos_token_id`` list). A ``Modelfile``'s ``FROM`` is read relative to
  its own folder.
- transformers 4.x (what TGI and older vLLM load with): ``AutoTokenizer`` raises "Tokenizer class
  TokenizersBackend does not exist"; ``PreTrainedTokenizerBase._set_model_specific_special_tokens``
  calls ``.keys()`` on ``extra_special_tokens``; configs read ``rope_theta`` and ``rope_scaling``.

The folder as read and the :class:`Finding` type are in :mod:`aigc.pretrained.export_folder`, the
GGUF and Modelfile checks in :mod:`aigc.pretrained.gguf_lint`; their public names are importable from
here too. This module knows files, JSON, jinja2 and transformers; nothing about runs, the workspace or
surfaces.
"""

from __future__ import annotations

import json
import os
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from aigc.errors import InvalidInput
from aigc.pretrained.export_folder import SAMPLE_CHAT, ExportFolder, Finding, read_json, token_ids
from aigc.pretrained.export_folder import LEVELS, READERS, has_errors  # noqa: F401 - re-exported: the API
from aigc.pretrained.gguf_lint import gguf_checks
from aigc.pretrained.gguf_lint import parse_modelfile  # noqa: F401 - re-exported: the API

PORTABLE_TOKENIZER_CLASS = "PreTrainedTokenizerFast"  # transformers 4.x and 5 both load tokenizer.json with it
_SENTINEL = "\u2063aigc-end-of-answer\u2063"  # an assistant text no template writes by itself


# -- chat templates -------------------------------------------------------------------------


def render_chat(template: str, messages: list[dict], add_generation_prompt: bool,
                special_tokens: dict[str, str] | None = None) -> str:
    """``template`` rendered the way transformers, TGI (minijinja) and Ollama's importer render a
    Hugging Face chat template: jinja2 sandboxed, ``trim_blocks`` and ``lstrip_blocks``, loop controls,
    ``raise_exception``, the special tokens as variables. Raises InvalidInput when it does not render."""
    import jinja2
    from jinja2.ext import loopcontrols
    from jinja2.sandbox import ImmutableSandboxedEnvironment

    def raise_exception(message):
        raise jinja2.exceptions.TemplateError(message)

    def tojson(x, ensure_ascii=False, indent=None, separators=None, sort_keys=False):
        return json.dumps(x, ensure_ascii=ensure_ascii, indent=indent, separators=separators, sort_keys=sort_keys)

    env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True, extensions=[loopcontrols])
    env.filters["tojson"] = tojson
    env.globals["raise_exception"] = raise_exception
    try:
        return env.from_string(template).render(messages=messages, add_generation_prompt=add_generation_prompt,
                                                **(special_tokens or {}))
    except Exception as e:  # noqa: BLE001 - jinja2's TemplateError, or a template's own TypeError, KeyError...
        raise InvalidInput(f"the chat template does not render a plain conversation: {e}") from None


def _end_of_turn(folder: ExportFolder) -> str | None:
    """The special token the chat template writes right after an assistant's answer (its end of turn),
    or None when it writes none: the token a server must stop at."""
    template = folder.template()
    if not template:
        return None
    try:
        text = render_chat(template, [{"role": "user", "content": "hi"}, {"role": "assistant", "content": _SENTINEL}],
                           False, folder.special_tokens())
    except InvalidInput:
        return None
    after = text.split(_SENTINEL, 1)[1] if _SENTINEL in text else ""
    specials = sorted((t["content"] for t in folder.added_tokens() if t.get("special")), key=len, reverse=True)
    return next((s for s in specials if after.startswith(s)), None)


# -- the checks -----------------------------------------------------------------------------


def _config_checks(f: ExportFolder) -> Iterator[Finding]:
    import transformers
    from transformers.models.auto.configuration_auto import CONFIG_MAPPING_NAMES

    if f.config is None:
        why = f.config_error or "config.json is missing: not a transformers checkpoint (save it with save_pretrained)"
        yield Finding("config.present", "error", why)
        return
    c = f.config
    yield Finding("config.present", "ok", "config.json")
    arch = c.get("architectures")
    if not (isinstance(arch, list) and arch and isinstance(arch[0], str)):
        yield Finding("config.architectures", "error", "config.json has no 'architectures' list: vLLM, llama.cpp's "
                      "converter and Ollama pick the model class by architectures[0] (e.g. LlamaForCausalLM)")
    elif not hasattr(transformers, arch[0]):
        yield Finding("config.architectures", "error", f"architectures[0] {arch[0]!r} is no transformers class")
    else:
        yield Finding("config.architectures", "ok", arch[0])
    model_type = c.get("model_type")
    if model_type not in CONFIG_MAPPING_NAMES:
        yield Finding("config.model_type", "error", f"model_type {model_type!r} is not one transformers knows: TGI's "
                      "get_model and AutoConfig dispatch on it")
    else:
        yield Finding("config.model_type", "ok", model_type)
    yield _dtype(c)
    length = c.get("max_position_embeddings", c.get("n_positions"))
    if not (isinstance(length, int) and length > 0):
        yield Finding("config.max_position_embeddings", "error", "no max_position_embeddings: vLLM then guesses 2048 "
                      "and TGI cannot size its batches; write the context length the model was trained for")
    else:
        yield Finding("config.max_position_embeddings", "ok", str(length))
    yield from _vocab_size(f)
    yield from _special_ids(f)
    yield _rope(c)


def _dtype(c: dict) -> Finding:
    dtype, torch_dtype = c.get("dtype"), c.get("torch_dtype")
    allowed = ("float32", "float16", "bfloat16")
    if dtype is None and torch_dtype is None:
        return Finding("config.dtype", "error", "config.json names no dtype: vLLM then serves in bfloat16 whatever the "
                       "weights are; write torch_dtype (and dtype)")
    if torch_dtype is None:
        return Finding("config.dtype", "error", f"dtype {dtype!r} but no torch_dtype: readers on transformers < 4.56 "
                       "(older vLLM; TGI pins 4.51.3) read torch_dtype only; write both (make_portable does)")
    if dtype is not None and dtype != torch_dtype:
        return Finding("config.dtype", "error", f"dtype {dtype!r} and torch_dtype {torch_dtype!r} disagree")
    if torch_dtype not in allowed:
        return Finding("config.dtype", "error", f"torch_dtype {torch_dtype!r} is not one of {', '.join(allowed)}")
    return Finding("config.dtype", "ok", torch_dtype)


def _embedding_rows(folder: Path) -> int | None:
    """Rows of the input embedding, from the safetensors headers (None when not found)."""
    from safetensors import safe_open

    for path in sorted(folder.glob("model*.safetensors")):
        try:
            with safe_open(str(path), framework="pt") as st:
                for key in st.keys():
                    if key.endswith(("embed_tokens.weight", "wte.weight")):
                        return int(st.get_slice(key).get_shape()[0])
        except Exception:  # noqa: BLE001 - an unreadable file is the weights check's finding
            return None
    return None


def _vocab_size(f: ExportFolder) -> Iterator[Finding]:
    size = f.config.get("vocab_size")
    if not (isinstance(size, int) and size > 0):
        yield Finding("config.vocab_size", "error", "config.json has no vocab_size")
        return
    ids = f.vocab.values()
    needed = max(ids) + 1 if ids else 0
    rows = _embedding_rows(f.path)
    if needed > size:
        yield Finding("config.vocab_size", "error", f"vocab_size {size} but the tokenizer has ids up to {needed - 1}: "
                      "llama.cpp and Ollama refuse a token past the embedding; resize the embeddings")
    elif rows is not None and rows != size:
        yield Finding("config.vocab_size", "error", f"vocab_size {size} but the embedding has {rows} rows")
    else:
        yield Finding("config.vocab_size", "ok", f"{size} (tokenizer: {needed})")


def _special_ids(f: ExportFolder) -> Iterator[Finding]:
    c, size = f.config, f.config.get("vocab_size") or 0
    problems = []
    for name in ("bos", "eos", "pad"):
        bad = [i for i in token_ids(c.get(f"{name}_token_id")) if not 0 <= i < size]
        if bad:
            problems.append(f"{name}_token_id {bad[0]} is outside the vocabulary (0..{size - 1})")
    eos = f.token_id("eos")
    if eos is not None and eos not in token_ids(c.get("eos_token_id")):
        problems.append(f"eos_token_id {c.get('eos_token_id')!r} does not include the tokenizer's eos "
                        f"{f.token('eos')!r} (id {eos})")
    bos = f.token_id("bos")
    if bos is not None and c.get("bos_token_id") is not None and c.get("bos_token_id") != bos:
        problems.append(f"bos_token_id {c.get('bos_token_id')!r} is not the tokenizer's bos {f.token('bos')!r} "
                        f"(id {bos})")
    if problems:
        yield Finding("config.special_ids", "error", "; ".join(problems) + ": llama.cpp falls back on these ids and "
                      "transformers generates with them; make them the tokenizer's (make_portable does)")
    else:
        yield Finding("config.special_ids", "ok", f"bos {c.get('bos_token_id')!r}, eos {c.get('eos_token_id')!r}")


def rope_fields(config: dict) -> dict[str, Any]:
    """The top-level RoPE fields older readers need, from transformers 5's ``rope_parameters``:
    ``rope_theta``, ``rope_scaling`` (when the rope type is not the default one) and, for per-layer-type
    parameters (Gemma 3), ``rope_local_base_freq`` of the sliding-window layers. Empty without RoPE."""
    rope = config.get("rope_parameters")
    if not isinstance(rope, dict):
        return {}
    out: dict[str, Any] = {}
    if "full_attention" in rope:
        sliding = rope.get("sliding_attention") or {}
        if "rope_theta" in sliding:
            out["rope_local_base_freq"] = sliding["rope_theta"]
        rope = rope["full_attention"] or {}
    if "rope_theta" in rope:
        out["rope_theta"] = rope["rope_theta"]
    if rope.get("rope_type", "default") != "default":
        out["rope_scaling"] = {k: v for k, v in rope.items() if k != "rope_theta"}
    return out


def _rope(c: dict) -> Finding:
    want = rope_fields(c)
    if not want:
        if "rope_theta" in c:
            return Finding("config.rope_theta", "ok", f"rope_theta {c['rope_theta']}")
        return Finding("config.rope_theta", "skipped", "no rope_parameters: the model does not use RoPE")
    wrong = []
    for key, value in want.items():
        have = c.get(key)
        if key == "rope_scaling" and isinstance(have, dict):
            have = {k: v for k, v in have.items() if k != "rope_theta"}
        if have != value:
            wrong.append(f"{key} {'missing' if have is None else repr(have)} (rope_parameters says {value!r})")
    if wrong:
        return Finding("config.rope_theta", "error", "top-level " + "; ".join(wrong) + ": Ollama's converter, TGI and "
                       "transformers 4.x read the top-level fields and otherwise use a base of 10000; write them "
                       "(make_portable does)")
    return Finding("config.rope_theta", "ok", ", ".join(f"{k} {v}" for k, v in want.items()))


def _tokenizer_checks(f: ExportFolder) -> Iterator[Finding]:
    import transformers

    if f.tokenizer is None:
        yield Finding("tokenizer.json", "error", f.tokenizer_error or "tokenizer.json is missing: TGI's router, "
                      "llama.cpp's converter and Ollama read the vocabulary from it (save a fast tokenizer)")
    else:
        kind = (f.tokenizer.get("model") or {}).get("type")
        yield Finding("tokenizer.json", "ok", f"{kind}, {len(f.vocab)} tokens")
    if f.tok_config is None:
        yield Finding("tokenizer_config.tokenizer_class", "error", f.tok_config_error or "tokenizer_config.json is "
                      "missing: TGI reads the chat template and the special tokens from it")
        return
    cls = f.tok_config.get("tokenizer_class")
    names = (cls, cls + "Fast", cls.removesuffix("Fast")) if isinstance(cls, str) else ()  # 4.x tries CLASSFast first
    known = any(hasattr(transformers, n) for n in names)
    if cls == "TokenizersBackend" or not known:
        yield Finding("tokenizer_config.tokenizer_class", "error", f"tokenizer_class {cls!r}: transformers 4.x (TGI's "
                      "py_resolve_tokenizer, vLLM's get_tokenizer on it) raises 'Tokenizer class ... does not exist'; "
                      f"write {PORTABLE_TOKENIZER_CLASS} (make_portable does)")
    else:
        yield Finding("tokenizer_config.tokenizer_class", "ok", cls)
    extra = f.tok_config.get("extra_special_tokens")
    if isinstance(extra, list):
        yield Finding("tokenizer_config.extra_special_tokens", "error", "extra_special_tokens is a list: transformers "
                      "4.x calls .keys() on it and the tokenizer does not load; write them as "
                      "additional_special_tokens (make_portable does)")
    else:
        yield Finding("tokenizer_config.extra_special_tokens", "ok", "a mapping" if extra else "absent")
    yield from _chat_template(f)
    yield from _special_tokens(f)


def _chat_template(f: ExportFolder) -> Iterator[Finding]:
    in_config = f.tok_config.get("chat_template")
    template = f.template()
    if template is None:
        yield Finding("tokenizer_config.chat_template", "warning", "no chat template: vLLM and TGI refuse "
                      "/v1/chat/completions and Ollama prompts with the raw text; /v1/completions works (right for a "
                      "model that continues text)")
        return
    if in_config is None:
        yield Finding("tokenizer_config.chat_template", "error", "the chat template is only in chat_template.jinja, "
                      "which TGI's router and Ollama's converter do not read: copy it into tokenizer_config.json "
                      "(make_portable does)")
        return
    if f.jinja is not None and isinstance(in_config, str) and in_config != f.jinja:
        yield Finding("tokenizer_config.chat_template", "error", "tokenizer_config.json's chat_template differs from "
                      "chat_template.jinja: TGI and Ollama would chat in another format than transformers")
        return
    try:
        text = render_chat(template, SAMPLE_CHAT, True, f.special_tokens())
    except InvalidInput as e:
        yield Finding("tokenizer_config.chat_template", "error", str(e))
        return
    if not all(m["content"] in text for m in SAMPLE_CHAT):
        yield Finding("tokenizer_config.chat_template", "error", "the chat template leaves a message's text out of the "
                      "prompt")
        return
    yield Finding("tokenizer_config.chat_template", "ok", f"in tokenizer_config.json, renders ({len(text)} characters)")


def _special_tokens(f: ExportFolder) -> Iterator[Finding]:
    vocab, added = f.vocab, {t["content"] for t in f.added_tokens()}
    if f.token("eos") is None:
        yield Finding("tokenizer.special_tokens", "error", "tokenizer_config.json names no eos_token: servers would "
                      "not know where an answer ends")
        return
    missing = [f"{n}_token {f.token(n)!r}" for n in ("eos", "bos", "pad") if f.token(n) and f.token(n) not in vocab]
    if missing:
        yield Finding("tokenizer.special_tokens", "error", ", ".join(missing) + " not in the vocabulary")
        return
    unlisted = [f"{n}_token {f.token(n)!r}" for n in ("eos", "bos", "pad") if f.token(n) and f.token(n) not in added]
    if unlisted:
        yield Finding("tokenizer.special_tokens", "warning", ", ".join(unlisted) + " not among tokenizer.json's "
                      "added_tokens, where llama.cpp's converter and Ollama look its id up (they then fall back on "
                      "config.json's ids, or leave it unset)")
        return
    names = ", ".join(f"{n} {f.token(n)!r}" for n in ("eos", "bos", "pad") if f.token(n))
    yield Finding("tokenizer.special_tokens", "ok", names)


def _generation_checks(f: ExportFolder) -> Iterator[Finding]:
    if f.gen_config is None:
        yield Finding("generation_config.eos", "error", f.gen_config_error or "generation_config.json is missing: "
                      "Ollama's converter and TGI read the list of eos ids from it (make_portable writes it)")
        return
    have = token_ids(f.gen_config.get("eos_token_id"))
    need: dict[int, str] = {}  # id -> what it is (the eos is often the end of turn too)
    for what, token in (("eos_token", f.token("eos")), ("the chat template's end of turn", _end_of_turn(f))):
        if token is not None and (i := f.vocab.get(token)) is not None:
            need.setdefault(i, f"{what} {token!r}")
    missing = [f"{what} (id {i})" for i, what in need.items() if i not in have]
    if not have:
        yield Finding("generation_config.eos", "error", "generation_config.json has no eos_token_id")
    elif missing:
        yield Finding("generation_config.eos", "error", f"eos_token_id {have} lacks " + ", ".join(missing) +
                      ": vLLM, TGI and transformers would not stop at the end of an answer (make_portable adds it)")
    else:
        yield Finding("generation_config.eos", "ok", f"eos_token_id {have}")


def _weight_checks(f: ExportFolder, load_model: bool) -> Iterator[Finding]:
    from safetensors import safe_open

    files = [p for p in sorted(f.path.glob("*.safetensors")) if p.name != "adapter_model.safetensors"]
    index, index_error = read_json(f.path / "model.safetensors.index.json")
    if not files:
        yield Finding("weights.safetensors", "error", "no *.safetensors weights: TGI loads only safetensors and vLLM, "
                      "llama.cpp and Ollama prefer them (save_pretrained writes them)")
        return
    problems = [index_error] if index_error else []
    if isinstance(index, dict):
        problems += [f"the index names {n}, which is missing" for n in sorted(set(index.get("weight_map", {}).values()))
                     if not (f.path / n).is_file()]
    for path in files:
        try:
            with safe_open(str(path), framework="pt") as st:
                meta = st.metadata()
        except Exception as e:  # noqa: BLE001 - safetensors raises its own error types
            problems.append(f"{path.name} is not a readable safetensors file ({e})")
            continue
        if meta is not None and meta.get("format") not in ("pt", "tf", "flax", "mlx"):
            problems.append(f"{path.name}'s metadata has format {meta.get('format')!r}, which transformers 4.x refuses "
                            "(save with save_pretrained, which writes format 'pt')")
    if problems:
        yield Finding("weights.safetensors", "error", "; ".join(problems))
    else:
        yield Finding("weights.safetensors", "ok", ", ".join(p.name for p in files))
    if load_model and f.config is not None:
        yield _load_model(f.path)
    else:
        yield Finding("weights.load", "skipped", "not loaded (no config.json, or load_model=False)")


def _load_model(folder: Path) -> Finding:
    """The final check: transformers loads the weights under the names the architecture expects."""
    import torch
    from transformers import AutoModelForCausalLM

    try:
        _, info = AutoModelForCausalLM.from_pretrained(folder, output_loading_info=True, dtype=torch.float32)
    except Exception as e:  # noqa: BLE001 - transformers raises many error types for a bad checkpoint
        first = str(e).splitlines()[0] if str(e) else type(e).__name__
        return Finding("weights.load", "error", f"AutoModelForCausalLM does not load the folder: {first[:300]}")
    wrong = {k: sorted(map(str, info.get(k) or []))[:3] for k in ("missing_keys", "unexpected_keys", "mismatched_keys",
                                                                   "error_msgs")}
    wrong = {k: v for k, v in wrong.items() if v}
    if wrong:
        detail = "; ".join(f"{k.replace('_', ' ')}: {', '.join(v)}" for k, v in wrong.items())
        return Finding("weights.load", "error", f"the weights' names are not what the architecture expects ({detail}): "
                       "every server loads by these names")
    return Finding("weights.load", "ok", "AutoModelForCausalLM loads it, no missing or unexpected keys")


def _tokenizer_load(f: ExportFolder) -> Iterator[Finding]:
    """transformers loads the tokenizer, and renders the chat exactly as the template in tokenizer_config.json."""
    from transformers import AutoTokenizer

    if f.tokenizer is None or f.tok_config is None:
        yield Finding("tokenizer.load", "skipped", "no readable tokenizer.json and tokenizer_config.json")
        return
    try:
        tok = AutoTokenizer.from_pretrained(f.path)
    except Exception as e:  # noqa: BLE001 - transformers raises many error types for a bad tokenizer
        first = str(e).splitlines()[0] if str(e) else type(e).__name__
        yield Finding("tokenizer.load", "error", f"AutoTokenizer does not load the folder: {first[:300]}")
        return
    template = f.tok_config.get("chat_template")
    if isinstance(template, str) and getattr(tok, "chat_template", None):
        try:
            ours = render_chat(template, SAMPLE_CHAT, True, f.special_tokens())
            theirs = tok.apply_chat_template(SAMPLE_CHAT, tokenize=False, add_generation_prompt=True)
        except Exception as e:  # noqa: BLE001 - jinja errors; the template check reports them
            yield Finding("tokenizer.load", "error", f"the chat template does not render: {e}")
            return
        if ours != theirs:
            yield Finding("tokenizer.load", "error", "transformers renders the chat differently from the template in "
                          "tokenizer_config.json (what TGI and Ollama use)")
            return
    yield Finding("tokenizer.load", "ok", f"{type(tok).__name__}, {len(tok)} tokens")


# -- the lint -------------------------------------------------------------------------------


def lint(folder: str | os.PathLike, *, load_model: bool = True) -> list[Finding]:
    """Every check on ``folder`` (a transformers checkpoint, with a GGUF and Modelfile or not), in a
    fixed order. ``load_model``: end with loading the weights through transformers (the whole model
    in memory). Raises InvalidInput for a folder that does not exist."""
    path = Path(folder).expanduser()
    if not path.is_dir():
        raise InvalidInput(f"model folder {str(path)!r} {'is a file' if path.exists() else 'not found'}: give an "
                           "export folder (a run's export/, with config.json, *.safetensors, tokenizer.json)")
    with _quiet_transformers():
        f = ExportFolder.read(path)
        return [*_config_checks(f), *_tokenizer_checks(f), *_generation_checks(f), *_weight_checks(f, load_model),
                *_tokenizer_load(f), *gguf_checks(f)]


@contextmanager
def _quiet_transformers() -> Iterator[None]:
    """transformers' own warnings (missing keys, a model type it does not know) and progress bars would
    print between the findings, which already say the same."""
    from transformers.utils import logging as hf_logging

    verbosity, bar = hf_logging.get_verbosity(), hf_logging.is_progress_bar_enabled()
    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        hf_logging.set_verbosity(verbosity)
        if bar:
            hf_logging.enable_progress_bar()


# -- writing what they need -----------------------------------------------------------------


def _write_json(path: Path, data: dict) -> None:
    """Temp file beside, then rename: a reader never sees half a file."""
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex[:8]}.tmp")
    try:
        tmp.write_text(json.dumps(data, ensure_ascii=False, indent=2) + "\n", encoding="utf-8")
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def _with_id(value: Any, extra: int) -> int | list[int]:
    """An eos-like field that also holds ``extra``, kept an int when it was one and equal."""
    ids = token_ids(value)
    if extra in ids:
        return value
    return extra if not ids else [*ids, extra]


def _portable_config(f: ExportFolder) -> dict | None:
    c = dict(f.config or {})
    if not c:
        return None
    if c.get("dtype") and not c.get("torch_dtype"):
        c["torch_dtype"] = c["dtype"]
    elif c.get("torch_dtype") and not c.get("dtype"):
        c["dtype"] = c["torch_dtype"]
    c.update(rope_fields(c))
    if (eos := f.token_id("eos")) is not None:
        c["eos_token_id"] = _with_id(c.get("eos_token_id"), eos)
    if (bos := f.token_id("bos")) is not None and c.get("bos_token_id") is not None:
        c["bos_token_id"] = bos
    return c


def _portable_tokenizer_config(f: ExportFolder) -> dict | None:
    t = dict(f.tok_config or {})
    if not t:
        return None
    if f.tokenizer is not None and t.get("tokenizer_class") in (None, "TokenizersBackend"):
        t["tokenizer_class"] = PORTABLE_TOKENIZER_CLASS
    if f.jinja is not None:
        t["chat_template"] = f.jinja
    extra = t.get("extra_special_tokens")
    if isinstance(extra, list):
        del t["extra_special_tokens"]
        t["additional_special_tokens"] = list(dict.fromkeys([*(t.get("additional_special_tokens") or []), *extra]))
    return t


def _portable_generation_config(f: ExportFolder) -> dict | None:
    if f.gen_config is None and f.config is None:
        return None
    ids = {k: v for k in ("bos_token_id", "eos_token_id", "pad_token_id") if (v := (f.config or {}).get(k)) is not None}
    g = dict(f.gen_config) if f.gen_config is not None else ids
    for token in (f.token("eos"), _end_of_turn(f)):
        if token is not None and (i := f.vocab.get(token)) is not None:
            g["eos_token_id"] = _with_id(g.get("eos_token_id"), i)
    if (bos := f.token_id("bos")) is not None and g.get("bos_token_id") is not None:
        g["bos_token_id"] = bos
    return g


def make_portable(folder: str | os.PathLike) -> list[str]:
    """Write into ``folder`` what transformers 5's ``save_pretrained`` leaves out for older readers, and
    return the names of the files it changed:

    - config.json: ``torch_dtype`` beside ``dtype``; ``rope_theta`` (and ``rope_scaling``,
      ``rope_local_base_freq``) at the top level from ``rope_parameters``; the tokenizer's eos among
      ``eos_token_id`` and its bos as ``bos_token_id``;
    - tokenizer_config.json: ``tokenizer_class`` ``PreTrainedTokenizerFast`` for ``TokenizersBackend``;
      ``chat_template`` from chat_template.jinja; ``extra_special_tokens`` (a list) as
      ``additional_special_tokens``;
    - generation_config.json: written when missing, its ``eos_token_id`` holding the tokenizer's eos and
      the chat template's end-of-turn token.

    Only fields are added or corrected; weights and tokenizer.json are not touched. Files are written
    atomically. Idempotent: a second call changes nothing."""
    path = Path(folder).expanduser()
    if not path.is_dir():
        raise InvalidInput(f"model folder {str(path)!r} not found")
    f = ExportFolder.read(path)
    planned = {"config.json": (f.config, _portable_config(f)),
               "tokenizer_config.json": (f.tok_config, _portable_tokenizer_config(f)),
               "generation_config.json": (f.gen_config, _portable_generation_config(f))}
    changed = []
    for name, (old, new) in planned.items():
        if new is not None and new != old:
            _write_json(path / name, new)
            changed.append(name)
    return changed
