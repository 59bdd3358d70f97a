"""A fast decoder for pretrained Llama-family bases, under the text families' slot contract.

:class:`FastLM` wraps a transformers causal LM of model type llama, mistral, qwen2, qwen3 or
gemma3_text (``FastLM.from_hf(model)``). ``forward`` is the transformers forward: the reference,
which :class:`~aigc.decoding.ForwardRunner` runs. The slot methods (``init_slots``,
``prefill_state``, ``load_slots``, ``decode_slots``; docs/architecture.md, Contracts) are gpt's
decode path (:mod:`aigc.models.gpt`) widened to these bases: fused, transposed matrices, a
preallocated key/value cache whose rows each sit at their own length, and the layers of a step in
one TorchScript call. So ``SlotRunner(FastLM.from_hf(model), rows)`` serves a base with the
decoding core and the engine's continuous batching, and nothing there changes; ``continue_state``
runs a context after a prefix whose keys and values a :class:`~aigc.decoding.PrefixCache` kept. A
test checks prefill and decode logits against the transformers forward and greedy tokens against
``generate()``.

What it knows: grouped-query attention (keys and values stored once per key/value head), a
``head_dim`` of the config's own, RoPE tables taken from the model's own rotary module (so the
config's theta and scaling, llama3, linear, dynamic, yarn, are transformers' arithmetic, its
attention scaling included), q/k/v and output biases (qwen2), per-head q/k norms (qwen3, gemma3),
MLP biases, sliding-window layers (mistral, qwen2/3 with ``use_sliding_window``, gemma3), tied or
untied heads, and gemma3's differences: (1 + w) RMSNorm, the embedding scaled by sqrt(hidden),
the gelu-tanh MLP, norms after attention and after the MLP, ``query_pre_attn_scalar`` and a
RoPE table per layer type, final logit soft-capping.

What it does not know, and refuses with :class:`~aigc.errors.InvalidInput` so a caller falls back to
the plain forward: other model types (gpt2, phi, gemma2, multimodal gemma3, ...), attention logit
soft-capping, bidirectional attention, partial rotary, ``longrope`` (its tables switch with a
sequence's length, which a cache written at earlier lengths cannot follow) and activations other
than silu and gelu-tanh. A sliding-window layer reads every key of its row with the keys out of its
window masked: correct, but the window saves neither memory nor time here. Dropout is never
applied: the decode path is the eval-mode arithmetic.

Memory: the embeddings, the head and the norms are the base's own tensors (a tied head is the
embedding matrix, read in place). The fused, transposed layer matrices are a copy, about the base's
size less its embeddings (SmolLM2-135M's shape: 107 M values, 0.43 GB in float32), gathered on the
first cache and again only when a parameter changes. The slot cache holds
2 * layers * rows * kv_heads * block_size * head_dim values: 94 MB a row in float32 for
SmolLM2-135M at 2048 tokens, which is why ``block_size`` is capped (``max_context``) rather than
the base's 8k-128k context. Dtype and device follow the base's parameters.

Weight formats (``FastLM.from_hf(model, weights=...)``, :data:`WEIGHT_FORMATS`): on a CPU, decoding
a small base reads every matrix once per token and goes at the speed of memory, so the layer
matrices and the head may be held smaller than the base's float32. ``"float"`` (the default here)
is the base's own dtype, the exact reference the tests hold against transformers. ``"bfloat16"``
halves the bytes; ``"int8"`` quarters them (weight-only, symmetric, one scale per output, the
products in torch's int8 kernel with bfloat16 activations, which is made for a few rows; a prefill
of more than 16 rows de-quantizes to bfloat16 first); ``"mixed"`` holds an int8 and a bfloat16 copy
(SmolLM2-135M: 0.40 GB, less than float's 0.43 GB) and reads the int8 one for products of fewer
than :data:`INT8_ROWS` rows, the bfloat16 one for batches and prefills, whichever measured faster
(``benchmarks/int8_matmul.py``). The residual stream, norms, attention, the cache and the logits
stay in the base's dtype. Only "float" is bit-equal between a row decoded alone, in a batch and
after a cached prefix; the others pick a copy by the rows of a product. What serving uses is
:func:`aigc.runtime.decode_weights`; ``benchmarks/pretrained.py`` measures each format's speed
and held-out perplexity against float.

LoRA adapters, unmerged (:meth:`FastLM.with_lora` -> :class:`LoraFastLM`): several adapters on one
base in memory, as vLLM and LoRAX serve them. An adapted decoder reads the base's fused weights,
embeddings, head and tables in place and adds its own low-rank deltas in each projection it
targets, A matrices concatenated and B block-diagonal per fused projection (:class:`LoraWeights`),
inside the same TorchScript'd layer loops; the base and every other adapter are untouched. Rows of
one slot cache share one adapter: each adapted decoder has slot caches of its own.

This module knows torch, the module layout of transformers' models of these types and peft's LoRA
key names. It knows nothing about tokenizers, sampling, the workspace or surfaces.
"""

# No ``from __future__ import annotations``: TorchScript reads the NamedTuples' field types at run
# time, and string annotations on a NamedTuple fail to script.

import inspect
import math
import re
from collections.abc import Mapping
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from aigc.errors import InvalidInput
from aigc.models.gpt import GPT, GPTConfig, KVCache, SlotCache, _scripted

SUPPORTED = ("llama", "mistral", "qwen2", "qwen3", "gemma3_text")
UNIT_OFFSET_NORMS = ("gemma3_text",)  # RMSNorm scales by (1 + w), w stored around zero
ACTIVATIONS = ("silu", "gelu_pytorch_tanh")
# How decoding holds the base's matrices (the embeddings and norms stay as the base has them), see
# the class docstring: "float" the base's own dtype (exact: the reference); "bfloat16"; "int8"
# (weight-only, one scale per output); "mixed" both an int8 and a bfloat16 copy, the int8 one read by
# steps of fewer than INT8_ROWS rows, the bfloat16 one by larger batches and prefills.
WEIGHT_FORMATS = ("float", "bfloat16", "int8", "mixed")
INT8_ROWS = 8  # "mixed": products over fewer rows than this read the int8 copy (TorchScript: a literal below)
DEFAULT_MAX_CONTEXT = 2048  # tokens a row holds unless asked: a 128k-context base's cache would not fit
# The projections a LoRA adapter may target, by the fused projection of LayerWeights they feed:
# group -> (the layer's submodule holding them, their names in fused order)
LORA_GROUPS = {"qkv": ("self_attn", ("q_proj", "k_proj", "v_proj")), "o": ("self_attn", ("o_proj",)),
               "gate_up": ("mlp", ("gate_proj", "up_proj")), "down": ("mlp", ("down_proj",))}
_LORA_PARENT = {proj: parent for parent, projs in LORA_GROUPS.values() for proj in projs}
# peft's keys: [prefix.]layers.<i>.<self_attn|mlp>.<proj>.lora_<A|B>[.<adapter name>].weight; the
# prefix is PeftModel's ``base_model.model.model.`` (and ``net.`` in an adapted run's weights)
_LORA_KEY = re.compile(r"(?:^|\.)layers\.(\d+)\.(\w+)\.(\w+)\.lora_([AB])(?:\.([^.]+))?\.weight$")


class LoraWeights(NamedTuple):
    """A LoRA adapter on one fused projection, unmerged: the projection adds ``(x @ a) @ b``.

    ``a`` (in, R) holds the A matrices of the fused parts side by side, transposed (q, k and v: R up
    to 3r); ``b`` (R, out) their B matrices, transposed and scaled by alpha / r, block-diagonal: part
    j's rank rows feed part j's output columns only, the rest zeros. So a fused projection gets one
    extra pair of small matmuls, not one per part."""

    a: Tensor  # in the dtype of the base's matrices in training over a bfloat16 copy (:func:`_project`)
    b: Tensor
    # dropped from the adapter's input in training (:meth:`FastLM.lora_hidden`; b then carries the
    # 1 / (1 - dropout) that inverted dropout scales the kept ones by); 0 decoding
    dropout: float


class LayerWeights(NamedTuple):
    """One decoder layer as decoding reads it: matrices (in, out) and contiguous, so a projection is
    ``x @ W``; None where the base has no such part (or no adapter is attached to it)."""

    attn_norm: Tensor  # (C,) RMSNorm weight before attention ((1 + w) where the base stores w)
    w_qkv: Tensor | None  # (C, (nh + 2 * nkv) * hd): q, k and v fused (None: int8 only)
    b_qkv: Tensor | None  # qwen2
    qk_norm: Tensor | None  # (nh + nkv, hd): the q heads' RMSNorm weight, then the k heads' (qwen3, gemma3)
    w_o: Tensor | None  # (nh * hd, C)
    b_o: Tensor | None
    attn_out_norm: Tensor | None  # gemma3: RMSNorm of the attention's output, before the residual add
    mlp_norm: Tensor  # (C,)
    w_gate_up: Tensor | None  # (C, 2 * I): gate and up fused
    b_gate_up: Tensor | None
    w_down: Tensor | None  # (I, C)
    b_down: Tensor | None
    mlp_out_norm: Tensor | None  # gemma3: RMSNorm of the MLP's output
    rope: int  # which RoPE table (gemma3's sliding layers have a theta of their own)
    sliding: bool  # attends to the last ``FastLM.window`` tokens only
    # int8 copies ("int8", "mixed"): each matrix (out, in) in int8 and its scale per output (bfloat16,
    # the int8 kernel's activation dtype); None in the float formats
    q_qkv: Tensor | None
    s_qkv: Tensor | None
    q_o: Tensor | None
    s_o: Tensor | None
    q_gate_up: Tensor | None
    s_gate_up: Tensor | None
    q_down: Tensor | None
    s_down: Tensor | None
    # LoRA deltas of the four fused projections (:meth:`FastLM.with_lora`); None on the base
    lora_qkv: LoraWeights | None
    lora_o: LoraWeights | None
    lora_gate_up: LoraWeights | None
    lora_down: LoraWeights | None


class Weights(NamedTuple):
    """What decoding reads, gathered once per cache (:meth:`FastLM._decode_weights`)."""

    layers: list[LayerWeights]
    norm: Tensor  # (C,) the final RMSNorm
    head: Tensor | None  # (V, C): the base's lm_head weight itself (the embeddings when tied), not a
    # copy, in "float"; a bfloat16 copy in "bfloat16" and "mixed"; None in "int8"
    head_q: Tensor | None  # (V, C) int8 ("int8", "mixed")
    head_scale: Tensor | None  # (V,) its scale per vocabulary entry


# -- the layers, written for TorchScript --------------------------------------------------------


def _project(x: Tensor, w: Tensor | None, q: Tensor | None, s: Tensor | None, b: Tensor | None,
             lora: LoraWeights | None) -> Tensor:
    """x (..., in) through one fused projection, in whichever of its copies suits the rows: the int8
    one (q, s) when it is the only one or the rows are fewer than INT8_ROWS, else w (float or
    bfloat16; the product in w's dtype, the result back in x's).

    An adapter adds ``(x @ A) @ B``. Its A may be in w's dtype (training over a bfloat16 copy of the
    base, :meth:`FastLM.lora_hidden`): then it reads the input already cast for w, so its dropout
    and its wide product run in bfloat16 too, and its rank-r result is cast back to B's dtype
    (float32), so the delta is added to the base's product in float32. Summed in bfloat16, as
    torch's bf16 autocast sums peft's, a young adapter's delta, far below the product's last
    bfloat16 bit, lost most of its bits (one-off, SmolLM2-135M, 24 LoRA steps of batch 8 x 256,
    held-out loss: float32 2.9092, this way 2.9099, summed in bfloat16 2.9271)."""
    xw = x  # the input in w's dtype
    if q is not None and s is not None and (w is None or x.numel() < 8 * x.shape[-1]):  # 8: INT8_ROWS
        y = _int8_matmul(x, q, s)
    elif w is not None:
        if w.dtype == x.dtype:
            y = x @ w
        else:
            xw = x.to(w.dtype)
            y = (xw @ w).to(x.dtype)
    else:
        raise ValueError("a projection with neither float nor int8 weights")
    if b is not None:
        y = y + b
    if lora is not None:  # the adapter's low-rank delta, (x @ A^T) @ B^T * alpha / r for each part
        xa = xw if xw.dtype == lora.a.dtype else x
        if lora.dropout > 0.0:
            xa = _dropout(xa, lora.dropout)
        y = y + (xa @ lora.a).to(lora.b.dtype) @ lora.b
    return y


def _dropout(x: Tensor, p: float) -> Tensor:
    """x with each element zeroed with probability p, the kept ones NOT scaled: inverted dropout's
    1 / (1 - p) is folded into the adapter's B (:func:`_live_lora`), a few thousand values instead of
    a pass over x. An element is kept when a random byte clears round(256 p), eight bytes from each
    64-bit draw, where that is within 2 % of p (0.05 -> 0.0508), else a 16-bit word clears
    round(65536 p). On a CPU, drawing the random numbers is the cost of dropout: ``F.dropout`` took
    22.5 ms over an (8, 256, 1536) activation, 16-bit words 8.6 ms with the scale, bytes and no
    scale ~4 ms (one-off, 2 threads); LoRA's dropout runs on the input of every adapted projection,
    each step."""
    n = x.numel()
    byte = int(round(p * 256))
    if abs(byte / 256 - p) <= 0.02 * p:  # 2 %: lets the usual 0.05 and 0.1 take bytes
        per_draw, unit, threshold = 8, torch.uint8, byte
    else:
        per_draw, unit, threshold = 4, torch.int16, int(round(p * 65536)) - 32768
    words = torch.randint(-9223372036854775807 - 1, 9223372036854775807, [(n + per_draw - 1) // per_draw],
                          dtype=torch.int64, device=x.device)  # -2**63 .. 2**63 - 1, written out for TorchScript
    keep = words.view(unit)[:n].view(x.shape) >= threshold
    return torch.where(keep, x, 0.0)


def _rms_norm(x: Tensor, w: Tensor, eps: float) -> Tensor:
    """RMSNorm over the last dimension, as transformers' Llama-family norms compute it. Written out,
    not ``F.rms_norm``: on one token's vector its fused kernel took ~26 us on this CPU, these four
    small ops ~8 us, and a decode step runs 61 norms (SmolLM2-135M)."""
    return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + eps) * w


HEAD_CHUNK_BYTES = 1 << 25  # the float32 logits of one chunk of rows in _HeadNLL: 32 MB


class _HeadNLL(torch.autograd.Function):
    """Per-row cross-entropy of the logits ``h @ weight.T`` (in weight's dtype; optionally soft-capped)
    against ``targets``, (N,) float32, for a frozen ``weight``: the gradient with respect to ``h`` is taken
    in the forward, a chunk of rows at a time, so the (N, V) logits are never whole and never saved
    (the idea of Liger-Kernel's fused linear cross-entropy, without the weight's gradient).

    Same arithmetic as ``F.cross_entropy(F.linear(h, weight).float(), targets, reduction="none")``;
    what it saves in LoRA training (SmolLM2's 49k-entry vocabulary): the (N, V) zeros that cross-entropy's backward fills and scatters into, and log-softmax's
    backward over them."""

    @staticmethod
    def forward(ctx, h: Tensor, weight: Tensor, targets: Tensor, softcap: float | None) -> Tensor:
        n, vocab = h.shape[0], weight.shape[0]
        chunk = max(1, HEAD_CHUNK_BYTES // (4 * vocab))
        nll = torch.empty(n, dtype=torch.float32, device=h.device)
        grad = torch.empty_like(h) if ctx.needs_input_grad[0] else None
        for a in range(0, n, chunk):
            z = F.linear(h[a:a + chunk].to(weight.dtype), weight).float()
            t = None
            if softcap is not None:
                t = torch.tanh(z / softcap)
                z = t * softcap
            lse = torch.logsumexp(z, dim=-1)
            tgt = targets[a:a + chunk, None]
            nll[a:a + chunk] = lse - z.gather(1, tgt).squeeze(1)
            if grad is not None:
                p = z.sub_(lse[:, None]).exp_()  # softmax, in place of the logits
                p.scatter_add_(1, tgt, torch.full_like(tgt, -1, dtype=p.dtype))
                if t is not None:
                    p.mul_(1 - t * t)
                grad[a:a + chunk] = (p.to(weight.dtype) @ weight).to(grad.dtype)
        ctx.save_for_backward(grad)
        return nll

    @staticmethod
    def backward(ctx, g: Tensor):
        (grad,) = ctx.saved_tensors
        return grad * g[:, None].to(grad.dtype), None, None, None


def _int8_matmul(x: Tensor, q: Tensor, s: Tensor) -> Tensor:
    """x (..., in) @ the int8 matrix q (out, in) scaled by s (out,) -> (..., out) in x's dtype. Up to
    16 rows (decoding) run torch's weight-only int8 kernel on a CPU; more rows (an "int8" prefill), or
    another device, de-quantize q to bfloat16 first: at 64 rows and more that measured faster than
    the kernel, which is made for a few rows (one-off, SmolLM2-135M's MLP shape, 2 threads)."""
    rows = x.reshape(-1, x.shape[-1]).to(s.dtype)
    if rows.shape[0] <= 16 and q.device.type == "cpu":
        y = torch.ops.aten._weight_int8pack_mm(rows, q, s)
    else:
        y = rows @ (q.to(s.dtype) * s[:, None]).t()
    return y.view(x.shape[:-1] + (q.shape[0],)).to(x.dtype)


def _qkv(x: Tensor, layer: LayerWeights, cos: Tensor, sin: Tensor, nh: int, nkv: int, hd: int,
         eps: float) -> tuple[Tensor, Tensor]:
    """x (B, T, C) -> (q and k heads (B, T, nh + nkv, hd), normed and rotated; v (B, T, nkv, hd))."""
    qkv = _project(_rms_norm(x, layer.attn_norm, eps), layer.w_qkv, layer.q_qkv, layer.s_qkv, layer.b_qkv,
                   layer.lora_qkv)
    qkv = qkv.view(x.shape[0], x.shape[1], nh + 2 * nkv, hd)
    qk = qkv[:, :, : nh + nkv]
    qk_norm = layer.qk_norm
    if qk_norm is not None:
        qk = _rms_norm(qk, qk_norm, eps)
    # RoPE on q and k together: x * cos + rotate_half(x) * sin, rotate_half = roll + sign (in sin)
    qk = qk * cos + qk.roll(hd // 2, dims=-1) * sin
    return qk, qkv[:, :, nh + nkv :]


def _after_attention(x: Tensor, y: Tensor, layer: LayerWeights, gelu: bool, eps: float) -> Tensor:
    """The rest of a layer: x (B, T, C) plus the attention's heads y (B, T, nh * hd), then the MLP."""
    a = _project(y, layer.w_o, layer.q_o, layer.s_o, layer.b_o, layer.lora_o)
    attn_out_norm = layer.attn_out_norm
    if attn_out_norm is not None:
        a = _rms_norm(a, attn_out_norm, eps)
    x = x + a
    h = _rms_norm(x, layer.mlp_norm, eps)
    gate_up = _project(h, layer.w_gate_up, layer.q_gate_up, layer.s_gate_up, layer.b_gate_up,
                       layer.lora_gate_up).chunk(2, dim=-1)
    gate = F.gelu(gate_up[0], approximate="tanh") if gelu else F.silu(gate_up[0])
    m = _project(gate * gate_up[1], layer.w_down, layer.q_down, layer.s_down, layer.b_down,
                 layer.lora_down)
    mlp_out_norm = layer.mlp_out_norm
    if mlp_out_norm is not None:
        m = _rms_norm(m, mlp_out_norm, eps)
    return x + m


def _prefill_layers(x: Tensor, k: Tensor, v: Tensor, pos: int, layers: list[LayerWeights], cos: Tensor,
                    sin: Tensor, full_mask: Tensor | None, window_mask: Tensor | None, nh: int, nkv: int, hd: int,
                    scale: float, gelu: bool, eps: float) -> Tensor:
    """The decoder layers over contexts x (B, T, C) after ``pos`` tokens already in ``k``/``v``
    (n_layer, B, nkv, pos + T, hd; 0: from the start); their keys and values go to positions
    ``pos..pos+T-1``. ``cos``/``sin`` (tables, 1, T, 1, hd); ``full_mask`` and ``window_mask``
    (T, pos + T), True where a full or sliding layer's query sees a key (None: causal from position 0).
    Returns x."""
    B, T = x.shape[0], x.shape[1]
    for i, layer in enumerate(layers):
        qk, val = _qkv(x, layer, cos[layer.rope], sin[layer.rope], nh, nkv, hd, eps)
        q = qk[:, :, :nh].transpose(1, 2)  # (B, nh, T, hd)
        k[i, :, :, pos : pos + T] = qk[:, :, nh:].transpose(1, 2)
        v[i, :, :, pos : pos + T] = val.transpose(1, 2)
        mask = window_mask if layer.sliding else full_mask
        y = F.scaled_dot_product_attention(q, k[i, :, :, : pos + T], v[i, :, :, : pos + T], attn_mask=mask,
                                           is_causal=mask is None, scale=scale, enable_gqa=True)
        x = _after_attention(x, y.transpose(1, 2).reshape(B, T, nh * hd), layer, gelu, eps)
    return x


def _slot_layers(x: Tensor, k: Tensor, v: Tensor, pos: Tensor, L: int, masked: Tensor | None,
                 masked_window: Tensor | None, layers: list[LayerWeights], cos: Tensor, sin: Tensor, nh: int,
                 nkv: int, hd: int, scale: float, gelu: bool, eps: float) -> Tensor:
    """The decoder layers of :meth:`FastLM.decode_slots`: x (B, 1, C), one token per row, row b at
    position ``pos[b]``; its key and value go to row b of ``k``/``v`` (n_layer, rows, nkv, capacity,
    hd) and it reads the first ``L`` keys of its row, those past its position ``masked`` (B, 1, 1, L)
    out (``masked_window`` for a sliding layer, also those out of its window). ``cos``/``sin``
    (tables, B, 1, 1, hd). Returns x."""
    B = x.shape[0]
    group = nh // nkv
    rows = torch.arange(B, device=x.device)
    for i, layer in enumerate(layers):
        qk, val = _qkv(x, layer, cos[layer.rope], sin[layer.rope], nh, nkv, hd, eps)
        k[i, rows, :, pos] = qk[:, 0, nh:]
        v[i, rows, :, pos] = val[:, 0]
        # Query heads grouped under their key/value head (head h reads kv head h // group, as
        # transformers' repeat_kv): (B, nkv, group, hd) against (B, nkv, L, hd), no repeated keys.
        q = qk[:, 0, :nh].reshape(B, nkv, group, hd) * scale
        scores = q @ k[i, :B, :, :L].transpose(-1, -2)  # (B, nkv, group, L)
        mask = masked_window if layer.sliding else masked
        if mask is not None:
            scores = scores.masked_fill(mask, float("-inf"))
        y = scores.softmax(-1) @ v[i, :B, :, :L]  # (B, nkv, group, hd)
        x = _after_attention(x, y.reshape(B, 1, nh * hd), layer, gelu, eps)
    return x


def _quantize_int8(w: Tensor) -> tuple[Tensor, Tensor]:
    """w (out, in), float -> (int8 (out, in), scale (out,) bfloat16): symmetric, per output, the
    scale rounded to bfloat16 before the weights are divided by it (the kernel multiplies by the
    rounded one)."""
    scale = (w.float().abs().amax(dim=1) / 127).clamp_min(1e-12).to(torch.bfloat16)
    q = torch.round(w.float() / scale.float()[:, None]).clamp_(-127, 127).to(torch.int8)
    return q.contiguous(), scale


def _convert_layer(layer: LayerWeights, fmt: str) -> LayerWeights:
    """A float layer's four matrices (in, out) held as ``fmt`` says ("bfloat16", "int8", "mixed")."""
    out = {}
    for name in ("qkv", "o", "gate_up", "down"):
        w = getattr(layer, f"w_{name}")
        if fmt in ("int8", "mixed"):
            out[f"q_{name}"], out[f"s_{name}"] = _quantize_int8(w.t())
        out[f"w_{name}"] = None if fmt == "int8" else w.to(torch.bfloat16).contiguous()
    return layer._replace(**out)


def _train_layers(x: Tensor, layers: list[LayerWeights], cos: Tensor, sin: Tensor, window_mask: Tensor | None,
                  nh: int, nkv: int, hd: int, scale: float, gelu: bool, eps: float) -> Tensor:
    """The decoder layers over whole blocks x (B, T, C) from position 0, no cache: the training
    forward of :meth:`FastLM.lora_hidden` (eager, so autograd reaches the adapters). ``cos``/``sin``
    (tables, 1, T, 1, hd); ``window_mask`` (T, T) for sliding layers when T exceeds the window."""
    B, T = x.shape[0], x.shape[1]
    for layer in layers:
        qk, val = _qkv(x, layer, cos[layer.rope], sin[layer.rope], nh, nkv, hd, eps)
        mask = window_mask if layer.sliding else None
        y = F.scaled_dot_product_attention(qk[:, :, :nh].transpose(1, 2), qk[:, :, nh:].transpose(1, 2),
                                           val.transpose(1, 2), attn_mask=mask, is_causal=mask is None,
                                           scale=scale, enable_gqa=True)
        x = _after_attention(x, y.transpose(1, 2).reshape(B, T, nh * hd), layer, gelu, eps)
    return x


def _live_lora(layer: nn.Module, group: str, dropout: bool, dtype: torch.dtype) -> LoraWeights | None:
    """The :class:`LoraWeights` of one fused projection read live from a peft-wrapped layer's
    modules: A and B concatenated and block-diagonal as :func:`_fuse_lora` does, but built from
    the parameters themselves, so gradients reach them; A in ``dtype`` (the base's matrices', see
    :func:`_project`); with dropout, B carries its 1 / (1 - p) (:func:`_dropout`). None when no part
    carries an adapter."""
    parent, projs = LORA_GROUPS[group]
    mods = [getattr(getattr(layer, parent), proj) for proj in projs]
    a_parts, b_parts, p = [], [], 0.0
    for m in mods:
        lora_a = getattr(m, "lora_A", None)
        name = m.active_adapters[0] if lora_a is not None and len(lora_a) else None
        if name is None or m.disable_adapters or m.merged:  # peft's disable_adapter(), or merged in
            b_parts.append(m.weight.new_zeros(0, m.weight.shape[0]))
            continue
        a_parts.append(lora_a[name].weight)
        b_parts.append((m.lora_B[name].weight * m.scaling[name]).t())
        drop = m.lora_dropout[name]
        p = drop.p if isinstance(drop, nn.Dropout) else 0.0
    if not a_parts:
        return None
    p = p if dropout else 0.0
    b = torch.block_diag(*b_parts)
    if p > 0.0:
        b = b * (1.0 / (1.0 - p))
    return LoraWeights(torch.cat(a_parts).t().to(dtype), b, p)


# -- the model ----------------------------------------------------------------------------------


class FastLM(nn.Module):
    """A transformers causal LM with gpt's slot cache: see the module docstring."""

    modality = "text"

    def __init__(self, hf: nn.Module, max_context: int | None = DEFAULT_MAX_CONTEXT, weights: str = "float"):
        super().__init__()
        if weights not in WEIGHT_FORMATS:
            raise InvalidInput(f"decode weights must be one of {', '.join(WEIGHT_FORMATS)}, got {weights!r}")
        self.weights = weights
        config = hf.config
        model_type = getattr(config, "model_type", None)
        if model_type not in SUPPORTED:
            raise InvalidInput(f"FastLM decodes model types {', '.join(SUPPORTED)}; this base is "
                               f"{model_type!r}: serve it with the plain forward (ForwardRunner)")
        if max_context is not None and (isinstance(max_context, bool) or not isinstance(max_context, int)
                                        or max_context < 1):
            raise InvalidInput(f"max_context must be a whole number of tokens >= 1 (or None for the base's "
                               f"own context), got {max_context!r}")
        act = getattr(config, "hidden_activation", None) or getattr(config, "hidden_act", None)
        unsupported = [
            (act not in ACTIVATIONS, f"activation {act!r} (FastLM knows {', '.join(ACTIVATIONS)})"),
            (getattr(config, "attn_logit_softcapping", None) is not None, "attention logit soft-capping"),
            (bool(getattr(config, "use_bidirectional_attention", False)), "bidirectional attention"),
        ]
        self._refuse_any(model_type, unsupported)
        self.hf = hf
        longest = int(config.max_position_embeddings)
        self.block_size = min(longest, max_context or longest)
        attn = hf.model.layers[0].self_attn
        self.n_head, self.n_kv_head = config.num_attention_heads, config.num_key_value_heads
        self.head_dim = int(attn.head_dim)
        self.scale = float(attn.scaling)  # head_dim ** -0.5, or gemma3's query_pre_attn_scalar ** -0.5
        self.eps = float(config.rms_norm_eps)
        self.gelu = act == "gelu_pytorch_tanh"
        self.norm_offset = 1.0 if model_type in UNIT_OFFSET_NORMS else 0.0
        self.softcap = getattr(config, "final_logit_softcapping", None)
        self._layer_windows(config)
        self._rope_tables(config, model_type)

    @classmethod
    def from_hf(cls, model: nn.Module, max_context: int | None = DEFAULT_MAX_CONTEXT,
                weights: str = "float") -> "FastLM":
        """Wrap a transformers causal LM (in eval mode) of a supported type; its parameters are
        shared, not copied. ``block_size`` is its ``max_position_embeddings``, at most ``max_context``
        tokens (None: no cap). Any other type raises :class:`InvalidInput` naming the supported ones."""
        return cls(model, max_context=max_context, weights=weights)

    def with_lora(self, state: Mapping[str, Tensor], alpha: float) -> "LoraFastLM":
        """This base with a peft LoRA adapter, unmerged: a new decoder that reads this one's fused
        weights, embeddings, head and RoPE tables in place (no base matrix is copied) and adds the
        adapter's low-rank deltas, ``(x @ A^T) @ B^T * alpha / r``, to the projections it targets.

        ``state`` is the adapter's state dict: an adapted run's weights (``AdaptedLM.state_dict()``,
        keys ``net.base_model.model.model.layers.0.self_attn.q_proj.lora_A.default.weight``, ...),
        ``get_peft_model_state_dict``'s or a ``PeftModel``'s LoRA keys; its ranks r are read from
        the A matrices; ``alpha`` is the run's ``lora_alpha``. Any q, k, v, o, gate, up and down
        projections may be targeted. A state with no LoRA weight, with weights of other parts (the
        head, embeddings, DoRA magnitudes, LoRA biases) or of another base's shapes raises
        :class:`InvalidInput`. Move the base to its device and dtype first: the adapter takes them
        from it. The base and each adapter attached to it decode side by side, each in slot caches
        of its own."""
        if isinstance(alpha, bool) or not isinstance(alpha, (int, float)) or not 0 < alpha < math.inf:
            raise InvalidInput(f"LoRA alpha must be a number > 0 (the run's lora_alpha), got {alpha!r}")
        return LoraFastLM(self, _lora_pairs(state, self.hf), float(alpha))

    @staticmethod
    def _refuse_any(model_type: str, checks: list[tuple[bool, str]]) -> None:
        found = [what for bad, what in checks if bad]
        if found:
            raise InvalidInput(f"FastLM cannot decode this {model_type} base: it has {'; '.join(found)}. "
                               "Serve it with the plain forward (ForwardRunner)")

    def _layer_windows(self, config) -> None:
        """Which layers slide, and their window (``self.window``, 0 when none matters)."""
        windows = []
        for layer in self.hf.model.layers:
            attn = layer.self_attn
            # qwen2/3 and gemma3 set it per layer (None for a full layer); mistral reads the config's
            windows.append(attn.sliding_window if hasattr(attn, "sliding_window")
                           else getattr(config, "sliding_window", None))
        sizes = {int(w) for w in windows if w is not None and int(w) < self.block_size}
        if len(sizes) > 1:
            self._refuse_any(config.model_type, [(True, f"sliding windows of several sizes {sorted(sizes)}")])
        # A window at least as long as the cache hides nothing: such a layer attends to all of its row.
        self.window = sizes.pop() if sizes else 0
        self._sliding = [self.window > 0 and w is not None and int(w) == self.window for w in windows]

    def _rope_tables(self, config, model_type: str) -> None:
        """cos and signed sin for every position, one table per RoPE kind: (tables, block_size, hd).

        Taken from the model's rotary module at positions 0..block_size-1, so scaling types and
        their attention factor are transformers' own; a dynamic table stays the original one
        within ``max_position_embeddings``, as the module computes it there."""
        rotary = self.hf.model.rotary_emb
        types = rotary.rope_type.values() if isinstance(rotary.rope_type, dict) else [rotary.rope_type]
        self._refuse_any(model_type, [(t == "longrope", "longrope RoPE scaling") for t in types])
        per_layer_type = "layer_type" in inspect.signature(rotary.forward).parameters  # gemma3
        kinds = sorted(set(config.layer_types)) if per_layer_type else [None]
        self._rope_index = ([kinds.index(t) for t in config.layer_types] if per_layer_type
                            else [0] * len(self._sliding))
        device, dtype = self.hf.lm_head.weight.device, self.hf.lm_head.weight.dtype
        x = torch.zeros(1, dtype=torch.float32, device=device)
        positions = torch.arange(self.block_size, device=device)[None]
        with torch.no_grad():
            tables = [rotary(x, positions, kind) if per_layer_type else rotary(x, positions)
                      for kind in kinds]
        cos = torch.stack([c[0] for c, _ in tables])
        sin = torch.stack([s[0] for _, s in tables])
        hd = self.head_dim
        partial = cos.shape[-1] != hd
        self._refuse_any(model_type, [(partial, f"partial rotary ({cos.shape[-1]} of {hd} dims)")])
        half = hd // 2
        # rotate_half(x) == roll(x, half) * sign
        sign = torch.cat([-torch.ones(half), torch.ones(half)]).to(device)
        self.register_buffer("rope_cos", cos.to(dtype), persistent=False)
        self.register_buffer("rope_sin_signed", (sin * sign).to(dtype), persistent=False)

    # The transformers forward (the reference) and the slot methods that are gpt's as they are:
    # they read only ``self.hf``, ``prefill_state``/``load_slots`` and the caches' k, v and lengths.
    forward = GPT.forward
    prefill_slots = GPT.prefill_slots
    load_slots = GPT.load_slots

    # -- decoding ------------------------------------------------------------------------------

    def _norm_weight(self, norm: nn.Module) -> Tensor:
        return norm.weight if not self.norm_offset else norm.weight + self.norm_offset

    def _cache_shape(self, capacity: int) -> GPTConfig:
        """The shape of gpt's caches for this base: they hold (n_layer, rows, n_head, capacity,
        n_embd // n_head), here with the key/value heads."""
        return GPTConfig(n_layer=len(self._sliding), n_head=self.n_kv_head,
                         n_embd=self.n_kv_head * self.head_dim, block_size=capacity)

    @torch.no_grad()
    def _decode_weights(self) -> Weights:
        """A :class:`Weights` snapshot of the base, kept while no parameter changes (their version
        counters and storage are its key, as :meth:`GPT._decode_weights`)."""
        # a peft-wrapped base's adapters are not part of them (lora_hidden adds them live)
        key = tuple((id(p), p._version, p.data_ptr()) for n, p in self.hf.named_parameters() if "lora_" not in n)
        cached = self.__dict__.get("_decode_cache")
        if cached is not None and cached[0] == key:
            return cached[1]
        nh, nkv, hd = self.n_head, self.n_kv_head, self.head_dim
        layers = []
        for i, layer in enumerate(self.hf.model.layers):
            attn, mlp = layer.self_attn, layer.mlp
            qkv = (attn.q_proj, attn.k_proj, attn.v_proj)
            gate_up = (mlp.gate_proj, mlp.up_proj)
            qk_norm = None
            if hasattr(attn, "q_norm"):
                qk_norm = torch.cat([self._norm_weight(attn.q_norm).expand(nh, hd),
                                     self._norm_weight(attn.k_norm).expand(nkv, hd)])
            # gemma3: norms after attention and after the MLP too
            sandwich = hasattr(layer, "pre_feedforward_layernorm")
            layers.append(LayerWeights(
                attn_norm=self._norm_weight(layer.input_layernorm),
                w_qkv=torch.cat([m.weight for m in qkv]).t().contiguous(),
                b_qkv=torch.cat([m.bias for m in qkv]) if attn.q_proj.bias is not None else None,
                qk_norm=qk_norm,
                w_o=attn.o_proj.weight.t().contiguous(),
                b_o=attn.o_proj.bias,
                attn_out_norm=self._norm_weight(layer.post_attention_layernorm) if sandwich else None,
                mlp_norm=self._norm_weight(layer.pre_feedforward_layernorm if sandwich
                                           else layer.post_attention_layernorm),
                w_gate_up=torch.cat([m.weight for m in gate_up]).t().contiguous(),
                b_gate_up=torch.cat([m.bias for m in gate_up]) if mlp.gate_proj.bias is not None else None,
                w_down=mlp.down_proj.weight.t().contiguous(),
                b_down=mlp.down_proj.bias,
                mlp_out_norm=self._norm_weight(layer.post_feedforward_layernorm) if sandwich else None,
                rope=self._rope_index[i],
                sliding=self._sliding[i],
                q_qkv=None, s_qkv=None, q_o=None, s_o=None, q_gate_up=None, s_gate_up=None, q_down=None,
                s_down=None,
                lora_qkv=None, lora_o=None, lora_gate_up=None, lora_down=None,
            ))
        head, head_q, head_scale = self.hf.lm_head.weight, None, None
        if self.weights != "float":
            layers = [_convert_layer(layer, self.weights) for layer in layers]
            if self.weights in ("int8", "mixed"):  # (V, C) is already (out, in)
                head_q, head_scale = _quantize_int8(head)
            head = None if self.weights == "int8" else head.to(torch.bfloat16)
        weights = Weights(layers, self._norm_weight(self.hf.model.norm), head, head_q, head_scale)
        self.__dict__["_decode_cache"] = (key, weights)  # not a submodule or buffer: not in the state_dict
        return weights

    def _embed(self, idx: Tensor) -> Tensor:
        embed = self.hf.model.embed_tokens
        x = F.embedding(idx, embed.weight)  # (B, T, C)
        # gemma3: sqrt(hidden), a buffer of the module (read each call: .to() replaces buffers)
        scale = getattr(embed, "embed_scale", None)
        return x if scale is None else x * scale.to(x.dtype)

    def _logits(self, x: Tensor, weights: Weights) -> Tensor:
        """x (..., C) after the layers -> logits (..., V)."""
        h = _rms_norm(x, weights.norm, self.eps)
        if weights.head_q is not None and (weights.head is None or h.numel() < INT8_ROWS * h.shape[-1]):
            logits = _int8_matmul(h, weights.head_q, weights.head_scale)
        elif weights.head.dtype != h.dtype:
            logits = F.linear(h.to(weights.head.dtype), weights.head).to(h.dtype)
        else:
            logits = F.linear(h, weights.head)
        if self.softcap is not None:
            logits = torch.tanh(logits / self.softcap) * self.softcap
        return logits

    def head_nll(self, x: Tensor, targets: Tensor, weights: Weights) -> Tensor:
        """x (N, C) after the layers, targets (N,) -> the cross-entropy of each row (N,) float32, as
        ``F.cross_entropy(self._logits(x, weights).float(), targets, reduction="none")``; through
        :class:`_HeadNLL` (no (N, V) logits kept) when the head is a frozen float or bfloat16 matrix."""
        w = weights.head
        if w is None or w.requires_grad or not x.requires_grad:
            return F.cross_entropy(self._logits(x, weights).float(), targets, reduction="none")
        return _HeadNLL.apply(_rms_norm(x, weights.norm, self.eps), w, targets, self.softcap)

    def init_slots(self, rows: int) -> SlotCache:
        w = self.hf.lm_head.weight
        return SlotCache(self._cache_shape(self.block_size), rows, self._decode_weights(), w.device, w.dtype)

    @torch.no_grad()
    def prefill_state(self, idx: Tensor, slots: SlotCache) -> tuple[KVCache, Tensor]:
        """Run the contexts idx (n, T) on a cache of their own: ``(cache, logits (n, V))``.

        Reads nothing of ``slots`` but its weights and writes nothing to it, so it may run in
        another thread while rows of ``slots`` decode; :meth:`load_slots` then moves it in."""
        n, T = idx.shape
        if T > slots.capacity:
            raise InvalidInput(f"a context of {T} tokens is longer than the {slots.capacity} a row holds: "
                               "pass its last block_size tokens")
        cache = KVCache(self._cache_shape(T), n, slots.weights, slots.k.device, slots.k.dtype)
        return cache, self._logits(self._prefill(idx, cache)[:, -1], slots.weights)

    @torch.no_grad()
    def continue_state(self, prefix: tuple[Tensor, Tensor], idx: Tensor,
                       slots: SlotCache) -> tuple[KVCache, Tensor]:
        """:meth:`prefill_state` of contexts whose first P tokens were run before: ``prefix`` holds their
        keys and values ((n_layer, n, n_kv_head, P, head_dim) each), ``idx`` (n, T - P) the rest.
        ``(cache holding all T tokens, logits (n, V))``, as :meth:`GPT.continue_state`."""
        P, (n, S) = prefix[0].shape[3], idx.shape
        if P + S > slots.capacity:
            raise InvalidInput(f"a context of {P} + {S} tokens is longer than the {slots.capacity} a row holds: "
                               "pass its last block_size tokens")
        cache = KVCache(self._cache_shape(P + S), n, slots.weights, slots.k.device, slots.k.dtype)
        cache.fill(*prefix)
        return cache, self._logits(self._prefill(idx, cache)[:, -1], slots.weights)

    def _prefill(self, idx: Tensor, cache: KVCache) -> Tensor:
        """The layers over contexts idx (n, T) after the cache's ``pos`` tokens (0: from the start), keys
        and values into ``cache`` (which holds pos + T tokens and the weights to read); x (n, T, C)
        after the last layer."""
        T, pos = idx.shape[1], cache.pos
        full_mask, window_mask, cos, sin = self._block_inputs(pos, T, idx.device)
        x = _scripted(_prefill_layers)(self._embed(idx), cache.k, cache.v, pos, cache.weights.layers, cos, sin,
                                       full_mask, window_mask, self.n_head, self.n_kv_head, self.head_dim,
                                       self.scale, self.gelu, self.eps)
        cache.pos = pos + T
        return x

    def _block_inputs(self, pos: int, T: int, device) -> tuple[Tensor | None, Tensor | None, Tensor, Tensor]:
        """(full_mask, window_mask, cos, sin) of T tokens after ``pos``: the masks (T, pos + T), True
        where query i sees key j (full: j <= i; window: also j > i - window), None where SDPA's own
        causal path does (from position 0, no window to apply); the RoPE tables (tables, 1, T, 1, hd)."""
        L = pos + T
        full_mask = window_mask = None
        if pos or (self.window and L > self.window):
            i = torch.arange(pos, L, device=device)[:, None]
            j = torch.arange(L, device=device)[None]
            causal = j <= i
            full_mask = causal if pos else None  # from position 0, SDPA's own causal path
            window_mask = causal & (j > i - self.window) if self.window and L > self.window else full_mask
        hd, tables = self.head_dim, self.rope_cos.shape[0]
        cos = self.rope_cos[:, pos:L].view(tables, 1, T, 1, hd)
        sin = self.rope_sin_signed[:, pos:L].view(tables, 1, T, 1, hd)
        return full_mask, window_mask, cos, sin

    def lora_hidden(self, idx: Tensor, dropout: bool) -> Tensor:
        """The training forward of a peft-LoRA-wrapped base (``FastLM.from_hf`` of the model peft
        wraps): the hidden states (B, T, C) after the last layer (before the final norm; ``_logits``
        applies it) of blocks idx (B, T), causal from position 0. The base's matrices are the fused,
        frozen copies decoding reads, in this decoder's format (float, or a bfloat16 copy whose
        adapters' A products run in bfloat16, :func:`_project`); each projection adds its adapter read live from peft's
        modules (:func:`_live_lora`, with their dropout when ``dropout``). Same arithmetic as peft's
        forward, in four fused products a layer instead of seven, and four adapter pairs instead of
        seven; :meth:`lora_supported` says whether a model's adapters fit this path."""
        base = self._decode_weights()
        first = base.layers[0].w_qkv if base.layers else None
        dtype = first.dtype if first is not None else self.hf.model.embed_tokens.weight.dtype  # A's
        layers = [lw._replace(**{f"lora_{g}": _live_lora(hl, g, dropout, dtype) for g in LORA_GROUPS})
                  for lw, hl in zip(base.layers, self.hf.model.layers)]
        _, window_mask, cos, sin = self._block_inputs(0, idx.shape[1], idx.device)
        return _train_layers(self._embed(idx), layers, cos, sin, window_mask, self.n_head, self.n_kv_head,
                             self.head_dim, self.scale, self.gelu, self.eps)

    @staticmethod
    def lora_supported(model: nn.Module) -> bool:
        """Whether :meth:`lora_hidden` computes this peft-wrapped causal LM's forward: every adapter
        on a q, k, v, o, gate, up or down projection of a decoder layer, one active adapter, plain
        LoRA (no DoRA, no adapter bias)."""
        found = False
        for name, m in model.named_modules():
            lora_a = getattr(m, "lora_A", None)
            if lora_a is None or not len(lora_a):
                continue
            found = True
            parts = name.split(".")
            if (len(m.active_adapters) != 1 or len(parts) < 3 or parts[-1] not in _LORA_PARENT
                    or parts[-2] != _LORA_PARENT[parts[-1]] or not parts[-3].isdigit()):
                return False
            adapter = m.active_adapters[0]
            if m.use_dora.get(adapter) or m.lora_B[adapter].bias is not None:
                return False
        return found

    @torch.no_grad()
    def decode_slots(self, tokens: Tensor, slots: SlotCache) -> Tensor:
        """Feed one token (B,) to each of rows 0..B-1, every row at its own position; logits (B, V).

        Each row's RoPE angle is taken at its own length, and keys past that length (or out of a
        sliding layer's window) are masked out."""
        B = tokens.shape[0]
        pos = slots.lengths[:B]
        longest = int(pos.max())
        if longest >= slots.capacity:
            raise ValueError(f"a slot is full ({slots.capacity} tokens): prefill it again from a shorter "
                             "context")
        L = longest + 1  # keys to read: the longest live row
        keys = torch.arange(L, device=tokens.device)[None]
        masked = None
        if int(pos.min()) + 1 < L:  # rows of different lengths: hide the keys past each row's end
            masked = (keys > pos[:, None]).view(B, 1, 1, L)
        masked_window = masked
        if self.window and L > self.window:  # and, for a sliding layer, those before its window
            out = (keys <= pos[:, None] - self.window).view(B, 1, 1, L)
            masked_window = out if masked is None else out | masked
        hd, tables = self.head_dim, self.rope_cos.shape[0]
        cos = self.rope_cos[:, pos].view(tables, B, 1, 1, hd)
        sin = self.rope_sin_signed[:, pos].view(tables, B, 1, 1, hd)
        x = _scripted(_slot_layers)(self._embed(tokens[:, None]), slots.k, slots.v, pos, L, masked,
                                    masked_window, slots.weights.layers, cos, sin, self.n_head,
                                    self.n_kv_head, hd, self.scale, self.gelu, self.eps)
        slots.lengths[:B] += 1
        return self._logits(x[:, -1], slots.weights)


# -- LoRA adapters on a shared base -------------------------------------------------------------


class LoraFastLM(FastLM):
    """A :class:`FastLM` with one LoRA adapter over another FastLM's weights, unmerged
    (:meth:`FastLM.with_lora`).

    It holds the adapter alone: per layer and targeted fused projection a :class:`LoraWeights`
    (SmolLM2-135M's shape, r 8 on all seven projections: 3.6 M values, 15 MB in float32, against the
    base's 0.43 GB of fused matrices). So N adapters on one base cost the base once. Its slot
    methods are the base's, over the base's weights with the adapter's deltas in each layer, in the
    same TorchScript'd loops. Their cost, one-off on a shared 2-core CPU, 1 thread, that shape with
    r 8 on all seven projections: the deltas' matmuls alone 1.2 ms a step at batch 1 and 5 ms at
    batch 16; whole decode steps (median of 12) 54.3 -> 55.6 ms at batch 1, 159 -> 166 ms at 16.

    The base module is a submodule (``parameters()`` and ``hf`` are the base's); its device and
    dtype are fixed when the adapter is attached: move the base first, never one adapted decoder
    (``.to()`` on it would move the base under every other adapter and leave their deltas behind).

    ``forward`` (the reference) runs the prefill arithmetic over every position and returns every
    position's logits: the base's transformers modules are shared by the base and every adapter, and
    could carry this adapter only by being changed for all of them. It reads at most ``block_size``
    tokens, as a row does. Nothing here is trainable: it serves an adapter, it does not train one."""

    # plain settings read from the base; its modules and tables are read through properties
    _SHARED = ("weights", "block_size", "n_head", "n_kv_head", "head_dim", "scale", "eps", "gelu", "norm_offset",
               "softcap", "window", "_sliding", "_rope_index")

    def __init__(self, base: FastLM, pairs: dict[tuple[int, str], tuple[Tensor, Tensor]], alpha: float):
        nn.Module.__init__(self)  # not FastLM's: everything it derives from the base model is the base's
        self.base = base
        for name in self._SHARED:
            setattr(self, name, getattr(base, name))
        self.alpha = alpha
        self.targets = tuple(proj for proj in _LORA_PARENT if any(p == proj for _, p in pairs))
        w = base.hf.lm_head.weight
        for i, layer in enumerate(base.hf.model.layers):
            for group, (parent, projs) in LORA_GROUPS.items():
                fused = _fuse_lora([getattr(getattr(layer, parent), proj).weight for proj in projs],
                                   [pairs.get((i, proj)) for proj in projs], alpha, w.device, w.dtype)
                if fused is not None:  # buffers, so .to() moves them; not in the state_dict
                    self.register_buffer(f"lora_{i}_{group}_a", fused.a, persistent=False)
                    self.register_buffer(f"lora_{i}_{group}_b", fused.b, persistent=False)

    hf = property(lambda self: self.base.hf)
    rope_cos = property(lambda self: self.base.rope_cos)
    rope_sin_signed = property(lambda self: self.base.rope_sin_signed)

    def with_lora(self, state: Mapping[str, Tensor], alpha: float) -> "LoraFastLM":
        raise InvalidInput("this decoder already carries a LoRA adapter; attach another to its base "
                           "(lm.base.with_lora(...)): adapters are not stacked")

    def _lora(self, i: int, group: str) -> LoraWeights | None:
        a = self._buffers.get(f"lora_{i}_{group}_a")
        return None if a is None else LoraWeights(a, self._buffers[f"lora_{i}_{group}_b"], 0.0)

    @torch.no_grad()
    def _decode_weights(self) -> Weights:
        """The base's :class:`Weights` (its own tensors, not copies) with this adapter's deltas in each
        layer; rebuilt when the base regathers its weights or the adapter moves."""
        base = self.base._decode_weights()
        key = tuple(t.data_ptr() for t in self._buffers.values())
        cached = self.__dict__.get("_decode_cache")
        if cached is not None and cached[0] is base and cached[1] == key:
            return cached[2]
        layers = [layer._replace(lora_qkv=self._lora(i, "qkv"), lora_o=self._lora(i, "o"),
                                 lora_gate_up=self._lora(i, "gate_up"), lora_down=self._lora(i, "down"))
                  for i, layer in enumerate(base.layers)]
        weights = base._replace(layers=layers)
        self.__dict__["_decode_cache"] = (base, key, weights)  # not a submodule or buffer
        return weights

    @torch.no_grad()
    def forward(self, idx: Tensor, targets: Tensor | None = None) -> tuple[Tensor, Tensor | None]:
        """idx (B, T) -> the adapted model's logits (B, T, V), T <= block_size; loss is mean
        cross-entropy against targets (B, T), -100 ignored."""
        B, T = idx.shape
        if T > self.block_size:
            raise InvalidInput(f"a context of {T} tokens is longer than the {self.block_size} this adapted "
                               "decoder reads: pass its last block_size tokens")
        weights = self._decode_weights()
        w = self.hf.lm_head.weight
        cache = KVCache(self._cache_shape(T), B, weights, w.device, w.dtype)
        logits = self._logits(self._prefill(idx, cache), weights)
        loss = None
        if targets is not None:
            loss = F.cross_entropy(logits.flatten(0, 1).float(), targets.flatten(), ignore_index=-100)
        return logits, loss


def _lora_pairs(state: Mapping[str, Tensor], hf: nn.Module) -> dict[tuple[int, str], tuple[Tensor, Tensor]]:
    """(layer, projection) -> (A (r, in), B (out, r)) of a peft LoRA state dict, every key and shape
    checked against the base ``hf`` before anything is built."""
    if not isinstance(state, Mapping):
        raise InvalidInput(f"a LoRA adapter's state must be a dict of tensors, got {type(state).__name__}")
    found: dict[tuple[int, str, str], tuple[str, Tensor]] = {}  # (layer, projection, "A"/"B") -> key, value
    names, unknown = set(), []
    for key, value in state.items():
        m = _LORA_KEY.search(str(key))
        if m is None or _LORA_PARENT.get(m[3]) != m[2] or not isinstance(value, Tensor):
            unknown.append(key)
            continue
        where = (int(m[1]), m[3], m[4])
        if where in found:
            raise InvalidInput(f"the LoRA state holds layer {where[0]}'s {where[1]} lora_{where[2]} twice "
                               f"({found[where][0]!r} and {key!r}): pass one adapter's weights")
        found[where] = (key, value)
        names.add(m[5])
    if not found:
        example = f", e.g. {unknown[0]!r}" if unknown else ""
        raise InvalidInput(f"this state dict holds no LoRA weights (no key like "
                           f"'model.layers.0.self_attn.q_proj.lora_A.weight' among its {len(unknown)} keys"
                           f"{example}): pass a LoRA adapter's state (a run adapted with --method lora)")
    if unknown:
        raise InvalidInput(f"the LoRA state holds {len(unknown)} weights FastLM cannot apply (e.g. "
                           f"{unknown[0]!r}): it adapts the {', '.join(_LORA_PARENT)} projections with plain "
                           "LoRA only; serve this run merged")
    if len(names) > 1:
        raise InvalidInput(f"the LoRA state holds several adapters ({', '.join(sorted(map(str, names)))}): "
                           "pass one")
    n_layer, order = len(hf.model.layers), list(_LORA_PARENT)
    pairs = {}
    for i, proj in sorted({(i, proj) for i, proj, _ in found}, key=lambda w: (w[0], order.index(w[1]))):
        a_key, a = found.get((i, proj, "A"), (None, None))
        b_key, b = found.get((i, proj, "B"), (None, None))
        if a is None or b is None:
            present, missing = ("A", "B") if b is None else ("B", "A")
            raise InvalidInput(f"the LoRA state has layer {i}'s {proj} lora_{present} but not its "
                               f"lora_{missing}: pass the adapter's whole state")
        if i >= n_layer:
            raise InvalidInput(f"the LoRA weight {a_key!r} is for layer {i}, and this base has {n_layer} "
                               "layers: the adapter was trained on another base")
        out, in_ = getattr(getattr(hf.model.layers[i], _LORA_PARENT[proj]), proj).weight.shape
        fits = a.dim() == b.dim() == 2 and a.shape[0] >= 1 and a.shape[1] == in_
        if not fits or b.shape != (out, a.shape[0]):
            raise InvalidInput(f"the LoRA weights {a_key!r} {tuple(a.shape)} and {b_key!r} {tuple(b.shape)} "
                               f"do not fit layer {i}'s {proj}, which needs (r, {in_}) and ({out}, r), "
                               "r >= 1: the adapter was trained on another base")
        pairs[(i, proj)] = (a, b)
    return pairs


def _fuse_lora(weights: list[Tensor], pairs: list[tuple[Tensor, Tensor] | None], alpha: float, device,
               dtype) -> LoraWeights | None:
    """The :class:`LoraWeights` of one fused projection whose parts have base ``weights`` (out_j, in)
    and adapters ``pairs`` (A (r_j, in), B (out_j, r_j); None where a part has none), scaled by
    alpha / r_j; None when no part has one."""
    if all(pair is None for pair in pairs):
        return None
    ranks = [0 if pair is None else pair[0].shape[0] for pair in pairs]
    outs = [w.shape[0] for w in weights]
    a = torch.cat([pair[0] for pair in pairs if pair is not None]).detach().to(device, torch.float32)
    b = torch.zeros(sum(ranks), sum(outs), device=device)  # (R, out): block-diagonal, B_j^T * alpha / r_j
    for j, pair in enumerate(pairs):
        if pair is not None:
            r0, c0 = sum(ranks[:j]), sum(outs[:j])
            b_j = pair[1].detach().to(device, torch.float32).t()  # (r_j, out_j)
            b[r0 : r0 + ranks[j], c0 : c0 + outs[j]] = b_j * (alpha / ranks[j])
    return LoraWeights(a.t().to(dtype).contiguous(), b.to(dtype), 0.0)
