"""GGUF export: a transformers checkpoint folder -> one ``.gguf`` file that llama.cpp and Ollama load,
and an Ollama ``Modelfile`` beside it.

:func:`export_gguf` is our own converter, written with the ``gguf`` package's writer, tensor name maps
and constants (llama.cpp's ``convert_hf_to_gguf.py`` is not part of that package). It reads the
folder's ``config.json``, its safetensors weights (one tensor at a time, so a model needs about one
tensor of memory, not the whole model) and its tokenizer, and writes:

- ``general.*`` and the architecture's hyper-parameters: context length, embedding length, block
  count, feed-forward length, head counts (query and key/value), RMS-norm epsilon, vocabulary size,
  rope frequency base, rope scaling (``linear`` and ``yarn`` as keys; Llama 3's ``llama3`` as the
  ``rope_freqs`` tensor llama.cpp multiplies into its frequencies), key/value length where the
  head width is not ``hidden / heads`` (and always for Qwen3 and Gemma 3, as llama.cpp does);
- the tokenizer: ``tokenizer.ggml.model`` ``"gpt2"`` for a byte-level BPE (tokens, token types,
  merges, and the pre-tokenizer llama.cpp must split text with: ``gpt-2``, ``llama-bpe``,
  ``qwen2`` or ``smollm``), ``"llama"`` for a sentencepiece-style BPE with byte fallback (Llama 2,
  Mistral, Gemma: tokens, token types, scores from the merge ranks, merges); the bos/eos/unk/pad
  ids, whether a bos/eos is added, and the chat template (``tokenizer.chat_template``);
- the tensors under llama.cpp's names (``token_embd``, ``blk.N.attn_q``..., ``output_norm``,
  ``output``; no ``output`` when the embeddings are tied), with the query and key rows of the
  ``llama`` architecture permuted from transformers' rotate-half layout to llama.cpp's interleaved
  one, and Gemma's norms stored as ``1 + w`` (transformers' GGUF reader undoes both). 2-D weights
  are stored in the asked type (``f16``, ``q8_0``: a matrix whose rows are not a multiple of 32
  falls back to f16, as llama.cpp does; ``f32``); norms and biases stay f32.

Supported architectures: llama (and mistral, written as llama as llama.cpp does), qwen2, qwen3 and
gemma3 (``gemma3_text``); anything else, or a tokenizer llama.cpp could not reproduce, is refused
with :class:`~aigc.errors.InvalidInput`. The file is written under a temporary name in the target
folder and renamed into place: a failure leaves nothing at ``out_file``.

:func:`write_modelfile` writes ``FROM ./<file>.gguf``, a ``TEMPLATE`` in Ollama's Go-template syntax
for the chat format it recognises in the jinja template (see :func:`detect_chat_format`), an
optional ``SYSTEM`` and ``PARAMETER stop`` lines.

Checked by reading the files back with transformers' GGUF reader (tests/test_gguf_export.py);
llama.cpp itself is not run here. That reader ignores rope scaling and a Qwen3 key length (it
rebuilds Qwen3 at head_dim 128, the width every Qwen3 has), so those reach llama.cpp only.

This module knows files, torch, safetensors, transformers' config and tokenizer classes and the
``gguf`` package; nothing about training, the workspace or surfaces.
"""

from __future__ import annotations

import json
import os
import re
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from aigc.errors import InvalidInput
from aigc.pretrained.bases import inspect_folder
from aigc.pretrained.formats import DEFAULT_CHAT_TEMPLATE

GGUF_DTYPES = ("f16", "q8_0", "f32")

# transformers model_type -> (llama.cpp architecture name, permute Q/K rows, norm offset).
# llama.cpp's llama graph rotates adjacent pairs of a head; transformers rotates the two halves,
# so the llama rows are interleaved (qwen and gemma use llama.cpp's NEOX rope, which rotates
# halves: no permutation). Gemma's RMSNorm multiplies by (1 + w); llama.cpp's by the stored weight.
_ARCHS: dict[str, tuple[str, bool, float]] = {
    "llama": ("llama", True, 0.0),
    "mistral": ("llama", True, 0.0),
    "qwen2": ("qwen2", False, 0.0),
    "qwen3": ("qwen3", False, 0.0),
    "gemma3_text": ("gemma3", False, 1.0),
}
SUPPORTED_ARCHITECTURES = tuple(_ARCHS)

# Byte-level pre-tokenizers llama.cpp knows, by the regex a tokenizer.json splits with before
# ByteLevel(use_regex=False). Two more are recognised by shape in _pre_tokenizer: a bare ByteLevel
# (GPT-2's regex: "gpt-2") and Digits(individual) + ByteLevel (SmolLM: "smollm").
_SPLIT_PRE = {
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+":
        "llama-bpe",
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+":
        "qwen2",
}
_KNOWN_PRE = ("gpt-2", "llama-bpe", "qwen2", "smollm")


# -- reading the checkpoint -----------------------------------------------------------------


@dataclass
class _Hparams:
    """What llama.cpp needs of a config, read once (transformers fills the class defaults)."""

    model_type: str
    arch: str  # llama.cpp's name
    permute_qk: bool
    norm_shift: float
    hidden: int
    layers: int
    ffn: int
    heads: int
    kv_heads: int
    head_dim: int
    context: int
    eps: float
    vocab: int
    tied: bool
    rope: dict[str, Any]  # rope_type, rope_theta, factor...
    rope_swa_theta: float | None = None  # Gemma 3's sliding-window layers
    sliding_window: int | None = None
    config: Any = field(default=None, repr=False)


def _hparams(folder: Path) -> _Hparams:
    from transformers import AutoConfig

    info = inspect_folder(folder)  # config.json, weights, tokenizer, a causal LM: one-line errors
    if info.model_type not in _ARCHS:
        raise InvalidInput(f"{str(folder)!r} holds a {info.model_type!r} model, which the GGUF export does not "
                           f"convert: it converts {', '.join(SUPPORTED_ARCHITECTURES)}")
    try:
        config = AutoConfig.from_pretrained(folder, local_files_only=True)
    except Exception as e:  # noqa: BLE001 - transformers raises ValueError, TypeError, OSError...
        raise InvalidInput(f"{str(folder / 'config.json')!r} is not a config transformers reads: "
                           f"{str(e).splitlines()[0] if str(e) else type(e).__name__}") from None
    arch, permute, shift = _ARCHS[info.model_type]
    heads = int(config.num_attention_heads)
    rope = dict(config.rope_parameters or {})
    swa_theta = None
    if "full_attention" in rope:  # Gemma 3: one set of rope parameters per layer type
        swa_theta = float(rope.get("sliding_attention", {}).get("rope_theta", 10000.0))
        rope = dict(rope["full_attention"])
    return _Hparams(
        model_type=info.model_type, arch=arch, permute_qk=permute, norm_shift=shift,
        hidden=int(config.hidden_size), layers=int(config.num_hidden_layers), ffn=int(config.intermediate_size),
        heads=heads, kv_heads=int(getattr(config, "num_key_value_heads", None) or heads),
        head_dim=int(getattr(config, "head_dim", None) or config.hidden_size // heads),
        context=int(config.max_position_embeddings), eps=float(config.rms_norm_eps), vocab=int(config.vocab_size),
        tied=bool(getattr(config, "tie_word_embeddings", False)), rope=rope, rope_swa_theta=swa_theta,
        sliding_window=getattr(config, "sliding_window", None) if arch == "gemma3" else None, config=config,
    )


def _weight_index(folder: Path) -> dict[str, tuple[Path, tuple[int, ...]]]:
    """Every tensor name -> (the safetensors file that holds it, its shape), from the headers only."""
    from safetensors import safe_open

    # save_pretrained writes model.safetensors or model-0000i-of-0000n.safetensors; other files
    # (a peft adapter_model.safetensors saved beside them) are not the model's weights
    files = sorted(folder.glob("model*.safetensors")) or sorted(folder.glob("*.safetensors"))
    if not files:
        raise InvalidInput(f"{str(folder)!r} has no *.safetensors weights: the GGUF export reads safetensors "
                           "(save the model with save_pretrained, which writes them)")
    index: dict[str, tuple[Path, tuple[int, ...]]] = {}
    for path in files:
        try:
            with safe_open(str(path), framework="pt") as f:
                index.update({key: (path, tuple(f.get_slice(key).get_shape())) for key in f.keys()})
        except Exception as e:  # noqa: BLE001 - safetensors raises its own error types
            raise InvalidInput(f"{str(path)!r} is not a readable safetensors file: {e}") from None
    return index


# -- the tokenizer --------------------------------------------------------------------------


@dataclass
class _Vocab:
    model: str  # "gpt2" | "llama"
    pre: str
    tokens: list[str]
    types: list[int]
    scores: list[float] | None
    merges: list[str]
    special: dict[str, int]  # bos / eos / unk / pad -> id
    add_bos: bool
    add_eos: bool
    add_space_prefix: bool | None
    chat_template: str | None


def _steps(component: dict | None) -> list[dict]:
    """A tokenizer.json normalizer / pre-tokenizer as a flat list of steps."""
    if not component:
        return []
    if component.get("type") == "Sequence":
        return [s for part in component.get("pretokenizers") or component.get("normalizers") or [] for s in _steps(part)]
    return [component]


def _pre_tokenizer(spec: dict) -> str | None:
    """llama.cpp's name for the way a byte-level tokenizer splits text, or None if it has none."""
    steps = _steps(spec.get("pre_tokenizer"))
    kinds = [s.get("type") for s in steps]
    byte_level = steps[-1] if kinds and kinds[-1] == "ByteLevel" else None
    if byte_level is None or byte_level.get("add_prefix_space"):
        return None
    if kinds == ["ByteLevel"] and byte_level.get("use_regex", True):
        return "gpt-2"
    if kinds == ["Digits", "ByteLevel"] and steps[0].get("individual_digits") and byte_level.get("use_regex", True):
        return "smollm"
    if kinds == ["Split", "ByteLevel"] and not byte_level.get("use_regex", True):
        pattern = steps[0].get("pattern", {})
        return _SPLIT_PRE.get(pattern.get("Regex") if isinstance(pattern, dict) else None)
    return None


def _space_prefix(spec: dict) -> bool:
    """Whether a sentencepiece-style tokenizer puts "▁" before the text (Llama 2, Mistral: yes; Gemma: no)."""
    for s in _steps(spec.get("normalizer")):
        if s.get("type") == "Prepend" and s.get("prepend") == "\u2581":
            return True
    for s in _steps(spec.get("pre_tokenizer")):
        if s.get("type") == "Metaspace":
            return s.get("prepend_scheme", "always" if s.get("add_prefix_space", True) else "never") != "never"
    return False


def _read_vocab(folder: Path, n_vocab: int, config_ids: dict[str, int | None]) -> _Vocab:
    """The tokenizer as ``AutoTokenizer`` loads it from ``folder`` (so as transformers rebuilds it for the
    architecture), padded to the embedding's ``n_vocab`` rows; ``config_ids``: config.json's bos/eos/pad
    ids, used where the tokenizer names none (Qwen's has no bos; llama.cpp would otherwise guess one)."""
    from gguf import TokenType
    from transformers import AutoTokenizer

    try:
        tok = AutoTokenizer.from_pretrained(folder, local_files_only=True)
    except Exception as e:  # noqa: BLE001 - transformers raises many error types for a bad tokenizer
        raise InvalidInput(f"the tokenizer in {str(folder)!r} does not load: "
                           f"{str(e).splitlines()[0] if str(e) else type(e).__name__}") from None
    backend = getattr(tok, "backend_tokenizer", None)
    if backend is None:
        raise InvalidInput(f"the tokenizer in {str(folder)!r} has no tokenizer.json (a slow tokenizer): save it "
                           "with a fast tokenizer (PreTrainedTokenizerFast.save_pretrained writes tokenizer.json)")
    spec = json.loads(backend.to_str())
    model = spec.get("model", {})
    if model.get("type") != "BPE":
        raise InvalidInput(f"the tokenizer in {str(folder)!r} is a {model.get('type')!r} model, which GGUF cannot "
                           "carry for llama.cpp: it reads byte-level BPE and sentencepiece-style BPE with byte fallback")
    if model.get("byte_fallback"):
        kind, pre = "llama", "default"
    else:
        kind, pre = "gpt2", _pre_tokenizer(spec)
        if pre is None:
            raise InvalidInput(f"the byte-level tokenizer in {str(folder)!r} splits text in a way llama.cpp does not "
                               f"know (it knows {', '.join(_KNOWN_PRE)}): the exported model would tokenize "
                               "differently, so it is not exported")
    vocab: dict[str, int] = model.get("vocab") or {}
    added = {i: t for i, t in tok.added_tokens_decoder.items()}
    size = max([*vocab.values(), *added.keys(), -1]) + 1
    if size > n_vocab:
        raise InvalidInput(f"the tokenizer in {str(folder)!r} has {size} tokens but the model's embedding only "
                           f"{n_vocab} rows: resize the embeddings (model.resize_token_embeddings) before exporting")
    # tokenizer.json spells a merge "a b" (older files) or ["a", "b"]; GGUF as "a b"
    pairs = [tuple(m.split(" ", 1)) if isinstance(m, str) else tuple(m) for m in model.get("merges") or []]
    merges = [" ".join(p) for p in pairs]
    if any(" " in part for p in pairs for part in p):
        if kind == "gpt2":
            raise InvalidInput(f"the byte-level tokenizer in {str(folder)!r} has a merge with a raw space, which "
                               "GGUF's \"a b\" merges cannot hold")
        merges = []  # llama.cpp tokenizes a sentencepiece-style vocabulary by scores; readers rebuild merges
    # A sentencepiece-style vocabulary ranks tokens by score: the token an earlier merge makes
    # scores higher, as in the sentencepiece model it was converted from.
    rank: dict[str, int] = {}
    for r, p in enumerate(pairs):
        rank.setdefault("".join(p), r)
    tokens = [f"[PAD{i}]" for i in range(n_vocab)]
    types = [int(TokenType.UNUSED)] * n_vocab
    scores = [-1000.0] * n_vocab
    unk = model.get("unk_token")
    for text, i in vocab.items():
        tokens[i], scores[i] = text, -float(rank[text]) if text in rank else 0.0
        if kind == "llama" and re.fullmatch(r"<0x[0-9A-Fa-f]{2}>", text):
            types[i] = int(TokenType.BYTE)
        elif text == unk:
            types[i] = int(TokenType.UNKNOWN)
        else:
            types[i] = int(TokenType.NORMAL)
    for i, t in added.items():
        tokens[i], scores[i] = t.content, 0.0
        types[i] = int(TokenType.CONTROL if t.special else TokenType.USER_DEFINED)
        if t.content == unk:
            types[i] = int(TokenType.UNKNOWN)
    if len(set(tokens)) != len(tokens):
        raise InvalidInput(f"the tokenizer in {str(folder)!r} spells two ids the same way, which a GGUF vocabulary "
                           "cannot hold")
    ids = {name: getattr(tok, f"{name}_token_id", None) for name in ("bos", "eos", "unk", "pad")}
    ids = {name: i if i is not None else config_ids.get(name) for name, i in ids.items()}
    special = {name: int(i) for name, i in ids.items() if isinstance(i, int) and 0 <= i < n_vocab}
    plain, full = tok("a", add_special_tokens=False)["input_ids"], tok("a")["input_ids"]
    add_bos = len(full) > len(plain) and "bos" in special and full[0] == special["bos"]
    add_eos = len(full) > len(plain) and "eos" in special and full[-1] == special["eos"]
    template = tok.chat_template
    if isinstance(template, dict):  # several named templates: the default one is the chat template
        template = template.get("default")
    return _Vocab(model=kind, pre=pre, tokens=tokens, types=types, scores=scores if kind == "llama" else None,
                  merges=merges, special=special, add_bos=add_bos, add_eos=add_eos,
                  add_space_prefix=_space_prefix(spec) if kind == "llama" else None,
                  chat_template=template if isinstance(template, str) and template else None)


# -- tensors --------------------------------------------------------------------------------


@dataclass
class _Tensor:
    name: str  # llama.cpp's
    shape: tuple[int, ...]  # numpy order (rows, columns)
    qtype: Any  # gguf.GGMLQuantizationType
    load: Callable[[], Any]  # -> float32 numpy array of ``shape``, transformed for llama.cpp


def _qtype(name: str, shape: tuple[int, ...], dtype: str):
    """f32 for norms, biases and other vectors; the asked type for matrices (q8_0 needs rows of a multiple of 32)."""
    from gguf import GGML_QUANT_SIZES, GGMLQuantizationType as Q

    if len(shape) < 2 or name.endswith("_norm.weight") or dtype == "f32":
        return Q.F32
    if dtype == "q8_0" and shape[-1] % GGML_QUANT_SIZES[Q.Q8_0][0] == 0:
        return Q.Q8_0
    return Q.F16


def _permute(w, n_head: int):
    """Rotate-half rows (transformers) -> interleaved pairs (llama.cpp's llama rope), per head."""
    return w.reshape(n_head, 2, w.shape[0] // n_head // 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def _rope_freqs(hp: _Hparams):
    """Llama 3's rope scaling as llama.cpp takes it: one divisor per frequency (default / scaled)."""
    import torch
    from transformers.modeling_rope_utils import ROPE_INIT_FUNCTIONS

    d = hp.head_dim
    default = 1.0 / (float(hp.rope["rope_theta"]) ** (torch.arange(0, d, 2, dtype=torch.float64) / d))
    scaled, _ = ROPE_INIT_FUNCTIONS["llama3"](hp.config, "cpu")
    return (default / scaled.to(torch.float64)).to(torch.float32).numpy()


def _plan(folder: Path, hp: _Hparams, dtype: str) -> list[_Tensor]:
    """Every tensor to write, in llama.cpp's names, without reading any data yet."""
    from gguf import MODEL_ARCH, MODEL_ARCH_NAMES, get_tensor_name_map
    from safetensors import safe_open

    arch = next(a for a in MODEL_ARCH if MODEL_ARCH_NAMES[a] == hp.arch)
    names = get_tensor_name_map(arch, hp.layers)
    index = _weight_index(folder)
    if hp.tied:
        index.pop("lm_head.weight", None)
    plan: list[_Tensor] = []
    for key, (path, shape) in index.items():
        if key.endswith("rotary_emb.inv_freq"):
            continue  # a buffer older checkpoints saved; llama.cpp computes it
        name = names.get_name(key, try_suffixes=(".weight", ".bias"))
        if name is None:
            hint = " (a LoRA adapter: merge it into the base first)" if "lora_" in key else ""
            raise InvalidInput(f"tensor {key!r} in {str(path)!r} has no llama.cpp name for architecture "
                               f"{hp.arch!r}{hint}")

        def load(key=key, path=path, name=name):
            with safe_open(str(path), framework="pt") as f:
                w = f.get_tensor(key).float().numpy()
            if hp.permute_qk and ".attn_q." in name:
                w = _permute(w, hp.heads)
            elif hp.permute_qk and ".attn_k." in name:
                w = _permute(w, hp.kv_heads)
            if hp.norm_shift and name.endswith("norm.weight"):
                w = w + hp.norm_shift
            return w

        plan.append(_Tensor(name, shape, _qtype(name, shape, dtype), load))
    have = {t.name for t in plan}
    missing = [n for n in ("token_embd.weight", "output_norm.weight") if n not in have]
    if not hp.tied and "output.weight" not in have:
        missing.append("output.weight (lm_head; the config says the embeddings are not tied)")
    if missing:
        raise InvalidInput(f"the weights in {str(folder)!r} lack {', '.join(missing)}: not a complete checkpoint")
    rows = next(t.shape[0] for t in plan if t.name == "token_embd.weight")
    if rows != hp.vocab:
        raise InvalidInput(f"{str(folder)!r}: config.json says vocab_size {hp.vocab} but the embedding has {rows} rows")
    if hp.rope.get("rope_type") == "llama3":
        if hp.arch != "llama":
            raise InvalidInput(f"rope scaling 'llama3' on a {hp.model_type!r} model is not something llama.cpp runs")
        freqs = _rope_freqs(hp)
        plan.append(_Tensor("rope_freqs.weight", freqs.shape, _qtype("rope_freqs.weight", freqs.shape, "f32"),
                            lambda: freqs))

    def order(t: _Tensor):  # embeddings, then the blocks in order, then the head
        m = re.match(r"blk\.(\d+)\.", t.name)
        return (1, int(m.group(1)), t.name) if m else (0 if t.name.startswith(("token_embd", "rope")) else 2, 0, t.name)

    return sorted(plan, key=order)


def _encode(t: _Tensor):
    """The bytes llama.cpp reads for ``t``: float32, float16 or Q8_0 blocks."""
    import numpy as np
    from gguf import GGMLQuantizationType as Q
    from gguf.quants import quantize

    w = np.ascontiguousarray(t.load(), dtype=np.float32)
    if w.shape != t.shape:
        raise InvalidInput(f"tensor {t.name!r} changed shape while reading: {w.shape} != {t.shape}")
    if t.qtype == Q.F32:
        return w
    if t.qtype == Q.F16:
        return w.astype(np.float16)
    return quantize(w, t.qtype)


def _nbytes(t: _Tensor) -> int:
    from gguf import GGML_QUANT_SIZES

    block, size = GGML_QUANT_SIZES[t.qtype]
    count = 1
    for d in t.shape:
        count *= d
    return count // block * size


# -- writing --------------------------------------------------------------------------------


def _add(values: dict[Callable[[Any], None], Any]) -> None:
    """Call each GGUFWriter method with its value, skipping None (a key this file does not need)."""
    for add, value in values.items():
        if value is not None:
            add(value)


def _write_hparams(w, hp: _Hparams, name: str) -> None:
    from gguf import RopeScalingType

    own_head_dim = hp.head_dim != hp.hidden // hp.heads or hp.arch in ("qwen3", "gemma3")
    _add({
        w.add_name: name, w.add_context_length: hp.context, w.add_embedding_length: hp.hidden,
        w.add_block_count: hp.layers, w.add_feed_forward_length: hp.ffn, w.add_head_count: hp.heads,
        w.add_head_count_kv: hp.kv_heads, w.add_layer_norm_rms_eps: hp.eps, w.add_vocab_size: hp.vocab,
        w.add_rope_freq_base: float(hp.rope.get("rope_theta", 10000.0)),
        # transformers' reader takes a llama's head_dim from the rope dimension count
        w.add_rope_dimension_count: hp.head_dim if hp.arch == "llama" else None,
        w.add_key_length: hp.head_dim if own_head_dim else None,
        w.add_value_length: hp.head_dim if own_head_dim else None,
        w.add_rope_freq_base_swa: hp.rope_swa_theta,
        w.add_sliding_window: int(hp.sliding_window) if hp.sliding_window else None,
    })
    kind = hp.rope.get("rope_type", "default")
    if kind in ("linear", "yarn"):
        original = hp.rope.get("original_max_position_embeddings") if kind == "yarn" else None
        _add({w.add_rope_scaling_type: RopeScalingType(kind), w.add_rope_scaling_factor: float(hp.rope["factor"]),
              w.add_rope_scaling_orig_ctx_len: int(original) if original else None})
    elif kind not in ("default", "llama3"):
        raise InvalidInput(f"rope scaling {kind!r} is not one the GGUF export writes (it writes linear, yarn "
                           "and llama3)")


def _write_vocab(w, v: _Vocab) -> None:
    _add({
        w.add_tokenizer_model: v.model, w.add_tokenizer_pre: v.pre, w.add_token_list: v.tokens,
        # llama.cpp refuses a byte-level vocabulary without the merges key, even an empty one
        w.add_token_types: v.types, w.add_token_scores: v.scores,
        w.add_token_merges: v.merges if v.merges or v.model == "gpt2" else None,
        w.add_add_bos_token: v.add_bos, w.add_add_eos_token: v.add_eos, w.add_add_space_prefix: v.add_space_prefix,
        w.add_chat_template: v.chat_template,
        **{getattr(w, f"add_{name}_token_id"): i for name, i in v.special.items()},
    })


def _temp_beside(path: Path) -> Path:
    return path.with_name(f".{path.name}.{uuid.uuid4().hex[:8]}.tmp")


def export_gguf(model_dir: str | os.PathLike, out_file: str | os.PathLike, dtype: str = "f16") -> Path:
    """Convert the transformers checkpoint in ``model_dir`` into the GGUF file ``out_file``.

    ``dtype``: ``"f16"`` (default, what llama.cpp's converter writes), ``"q8_0"`` (8-bit blocks of
    32, about half the size, close to f16 in quality) or ``"f32"`` (exact). Returns the file's path.
    Raises :class:`InvalidInput` for a folder that is not a checkpoint of a supported architecture,
    a tokenizer llama.cpp cannot reproduce, or an unknown ``dtype``; nothing is left at ``out_file``."""
    import numpy as np
    from gguf import GGML_QUANT_VERSION, GGUFWriter, LlamaFileType

    if dtype not in GGUF_DTYPES:
        raise InvalidInput(f"unknown GGUF dtype {dtype!r}: use one of {', '.join(GGUF_DTYPES)}")
    folder = Path(model_dir).expanduser()
    if not folder.is_dir():
        raise InvalidInput(f"model folder {str(folder)!r} {'is a file' if folder.exists() else 'not found'}: give a "
                           "transformers checkpoint folder (config.json, *.safetensors, tokenizer.json)")
    out = Path(out_file).expanduser()
    if out.is_dir():
        raise InvalidInput(f"{str(out)!r} is a folder: give the path of the .gguf file to write")
    hp = _hparams(folder)
    config_ids = {k: getattr(hp.config, f"{k}_token_id", None) for k in ("bos", "eos", "pad")}
    vocab = _read_vocab(folder, hp.vocab, config_ids)
    plan = _plan(folder, hp, dtype)

    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = _temp_beside(out)
    writer = GGUFWriter(tmp, hp.arch)
    try:
        _write_hparams(writer, hp, folder.resolve().name)
        writer.add_file_type({"f32": LlamaFileType.ALL_F32, "f16": LlamaFileType.MOSTLY_F16,
                              "q8_0": LlamaFileType.MOSTLY_Q8_0}[dtype])
        writer.add_quantization_version(GGML_QUANT_VERSION)
        _write_vocab(writer, vocab)
        for t in plan:
            # a float32 dtype beside raw_dtype keeps the shape in elements (uint8 would mean bytes)
            writer.add_tensor_info(t.name, t.shape, np.dtype(np.float32), _nbytes(t), raw_dtype=t.qtype)
        writer.write_header_to_file()
        writer.write_kv_data_to_file()
        writer.write_ti_data_to_file()
        for t in plan:  # one tensor in memory at a time
            writer.write_tensor_data(_encode(t))
        writer.close()
        os.replace(tmp, out)
    finally:
        writer.close()
        tmp.unlink(missing_ok=True)
    return out


# -- Ollama ---------------------------------------------------------------------------------

# Ollama's TEMPLATE is a Go template over .Messages (each .Role, .Content); a SYSTEM line arrives as
# the first message with role "system". Each ends with the generation prompt for the assistant.
# Each was checked, with Go's text/template, to render what its jinja counterpart renders.
_TEMPLATES: dict[str, tuple[str, tuple[str, ...]]] = {
    # Qwen and others: <|im_start|>role\ncontent<|im_end|>\n
    "chatml": (
        "{{- range .Messages }}<|im_start|>{{ .Role }}\n{{ .Content }}<|im_end|>\n{{ end }}<|im_start|>assistant\n",
        ("<|im_end|>", "<|im_start|>"),
    ),
    # Llama 3: <|start_header_id|>role<|end_header_id|>\n\ncontent<|eot_id|> (the bos comes from the tokenizer)
    "llama3": (
        "{{- range .Messages }}<|start_header_id|>{{ .Role }}<|end_header_id|>\n\n{{ .Content }}<|eot_id|>"
        "{{ end }}<|start_header_id|>assistant<|end_header_id|>\n\n",
        ("<|eot_id|>", "<|start_header_id|>", "<|end_header_id|>"),
    ),
    # Gemma: user and model turns only; a system message opens the next user turn, as Gemma's template does
    "gemma": (
        "{{- $system := \"\" }}{{- range .Messages }}"
        "{{- if eq .Role \"system\" }}{{ $system = .Content }}"
        "{{- else if eq .Role \"user\" }}<start_of_turn>user\n{{ if $system }}{{ $system }}\n\n"
        "{{ $system = \"\" }}{{ end }}{{ .Content }}<end_of_turn>\n"
        "{{ else }}<start_of_turn>model\n{{ .Content }}<end_of_turn>\n{{ end }}"
        "{{- end }}<start_of_turn>model\n",
        ("<end_of_turn>", "<start_of_turn>"),
    ),
    # aigc's DEFAULT_CHAT_TEMPLATE: "### Role:\n" headers, turns apart by a blank line, eos after each
    # assistant turn ({eos} is filled in with the file's eos token)
    "default": (
        "{{- range $i, $m := .Messages }}{{ if $i }}\n\n{{ end }}"
        "{{- if eq .Role \"system\" }}### System:\n{{ .Content }}"
        "{{- else if eq .Role \"user\" }}### User:\n{{ .Content }}"
        "{{- else }}### Assistant:\n{{ .Content }}{eos}{{ end }}"
        "{{- end }}{{ if .Messages }}\n\n{{ end }}### Assistant:\n",
        ("{eos}", "### User:"),
    ),
}


def detect_chat_format(chat_template: str | None) -> str | None:
    """Which chat format a jinja chat template writes, from the markers it contains:

    - ``"chatml"``: ``<|im_start|>`` (Qwen 2/2.5/3, SmolLM2 and many fine-tunes);
    - ``"llama3"``: ``<|start_header_id|>`` (Llama 3.x);
    - ``"gemma"``: ``<start_of_turn>`` (Gemma 2/3);
    - ``"default"``: aigc's :data:`~aigc.pretrained.formats.DEFAULT_CHAT_TEMPLATE` (``### User:`` /
      ``### Assistant:`` headers);
    - ``None``: anything else, or no template.

    Only the markers are read: a template's extras (tools, a default system prompt, reasoning
    blocks) are not carried into the Ollama template."""
    if not chat_template:
        return None
    if "<|im_start|>" in chat_template:
        return "chatml"
    if "<|start_header_id|>" in chat_template:
        return "llama3"
    if "<start_of_turn>" in chat_template:
        return "gemma"
    if chat_template == DEFAULT_CHAT_TEMPLATE or ("### User:" in chat_template and "### Assistant:" in chat_template):
        return "default"
    return None


def ollama_template(fmt: str, eos: str | None) -> tuple[str, list[str]]:
    """Ollama's ``TEMPLATE`` body and ``PARAMETER stop`` strings for chat format ``fmt`` (one that
    :func:`detect_chat_format` returns), ``eos`` (the eos token's text) filled in where the format ends
    a turn with it. The export lint compares a Modelfile with them."""
    body, markers = _TEMPLATES[fmt]
    return body.replace("{eos}", eos or ""), [m.replace("{eos}", eos or "") for m in markers]


def _gguf_chat_info(path: Path) -> tuple[str | None, str | None]:
    """(chat template, eos token text) from a GGUF's metadata."""
    from gguf import GGUFReader

    try:
        reader = GGUFReader(path)
    except Exception as e:  # noqa: BLE001 - gguf raises ValueError, struct.error, IndexError...
        raise InvalidInput(f"{str(path)!r} is not a readable GGUF file: {e}") from None

    def value(key: str):
        f = reader.fields.get(key)
        return None if f is None else f.contents()

    eos, tokens = value("tokenizer.ggml.eos_token_id"), reader.fields.get("tokenizer.ggml.tokens")
    eos_text = tokens.contents(int(eos)) if eos is not None and tokens is not None else None
    return value("tokenizer.chat_template"), eos_text


def _quoted(text: str, what: str) -> str:
    """A Modelfile value: "x", or \"\"\"x\"\"\" when it holds a quote or a line break. Ollama's parser
    has no escapes: it strips one or three quotes from each end, so only \"\"\" cannot be carried."""
    if '"""' in text:
        raise InvalidInput(f"the {what} {text[:40]!r} contains '\"\"\"', which a Modelfile cannot quote: remove it")
    return f'"""{text}"""' if ('"' in text or "\n" in text or "\r" in text) else f'"{text}"'


def write_modelfile(gguf_path: str | os.PathLike, out_file: str | os.PathLike, chat_template_hint: str | None,
                    stop: list[str], system: str | None = None) -> Path:
    """Write an Ollama Modelfile for ``gguf_path`` at ``out_file`` (``ollama create NAME -f out_file``).

    ``chat_template_hint``: the model's jinja chat template (None: the one in the GGUF's metadata);
    its format is found by :func:`detect_chat_format` and written as Ollama's ``TEMPLATE``. An
    unrecognised format gets no ``TEMPLATE`` line: Ollama then matches the GGUF's own template to
    one it knows, or prompts with the raw text. ``stop``: extra stop strings, after the format's
    end-of-turn markers (duplicates dropped). ``system``: a ``SYSTEM`` prompt. Returns the path."""
    model = Path(gguf_path).expanduser()
    if not model.is_file():
        raise InvalidInput(f"GGUF file {str(model)!r} not found: export one first (export_gguf)")
    if isinstance(stop, str) or not all(isinstance(s, str) and s for s in stop):
        raise InvalidInput(f"stop must be a list of non-empty strings, got {stop!r}")
    out = Path(out_file).expanduser()
    if out.is_dir():
        raise InvalidInput(f"{str(out)!r} is a folder: give the path of the Modelfile to write")
    template, eos = _gguf_chat_info(model)
    fmt = detect_chat_format(chat_template_hint if chat_template_hint is not None else template)
    out.parent.mkdir(parents=True, exist_ok=True)
    source = os.path.relpath(model.resolve(), out.parent.resolve())  # Ollama reads it from the Modelfile's folder
    source = source if source.startswith(".") else "./" + source
    lines = ["FROM " + (_quoted(source, "GGUF path") if re.search(r'[\s"]', source) else source)]
    stops: list[str] = []
    if fmt is not None:
        if fmt == "default" and not eos:
            raise InvalidInput(f"{str(model)!r} has no eos token, which the default chat format ends turns with")
        body, markers = ollama_template(fmt, eos)
        lines.append(f'TEMPLATE """{body}"""')
        stops += markers
    if system:
        lines.append(f"SYSTEM {_quoted(system, 'system prompt')}")
    stops += stop
    for s in dict.fromkeys(stops):
        lines.append(f"PARAMETER stop {_quoted(s, 'stop string')}")
    tmp = _temp_beside(out)
    try:
        tmp.write_text("\n".join(lines) + "\n", encoding="utf-8")
        os.replace(tmp, out)
    finally:
        tmp.unlink(missing_ok=True)
    return out
