"""A fast decoder for pretrained Llama-family bases, under the text families' slot contract.

:class:`FastLM` wraps a transformers causal LM of model type llama, mistral, qwen2, qwen3 or
gemma3_text (``FastLM.from_hf(model)``). ``forward`` is the transformers forward: the reference,
which :class:`~aigc.decoding.ForwardRunner` runs. The slot methods (``init_slots``,
``prefill_state``, ``load_slots``, ``decode_slots``; docs/architecture.md, Contracts) are gpt's
decode path (:mod:`aigc.models.gpt`) widened to these bases: fused, transposed matrices, a
preallocated key/value cache whose rows each sit at their own length, and the layers of a step in
one TorchScript call. So ``SlotRunner(FastLM.from_hf(model), rows)`` serves a base with the
decoding core and the engine's continuous batching, and nothing there changes. A test checks
prefill and decode logits against the transformers forward and greedy tokens against
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

This module knows torch and the module layout of transformers' models of these types. It knows
nothing about tokenizers, sampling, the workspace or surfaces.
"""

# No ``from __future__ import annotations``: TorchScript reads the NamedTuples' field types at run
# time, and string annotations on a NamedTuple fail to script.

import inspect
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from aigc.errors import InvalidInput
from aigc.models.gpt import GPT, GPTConfig, KVCache, SlotCache, _scripted

SUPPORTED = ("llama", "mistral", "qwen2", "qwen3", "gemma3_text")
UNIT_OFFSET_NORMS = ("gemma3_text",)  # RMSNorm scales by (1 + w), w stored around zero
ACTIVATIONS = ("silu", "gelu_pytorch_tanh")
DEFAULT_MAX_CONTEXT = 2048  # tokens a row holds unless asked: a 128k-context base's cache would not fit


class LayerWeights(NamedTuple):
    """One decoder layer as decoding reads it: matrices (in, out) and contiguous, so a projection is
    ``x @ W``; None where the base has no such part."""

    attn_norm: Tensor  # (C,) RMSNorm weight before attention ((1 + w) where the base stores w)
    w_qkv: Tensor  # (C, (nh + 2 * nkv) * hd): q, k and v fused
    b_qkv: Tensor | None  # qwen2
    qk_norm: Tensor | None  # (nh + nkv, hd): the q heads' RMSNorm weight, then the k heads' (qwen3, gemma3)
    w_o: Tensor  # (nh * hd, C)
    b_o: Tensor | None
    attn_out_norm: Tensor | None  # gemma3: RMSNorm of the attention's output, before the residual add
    mlp_norm: Tensor  # (C,)
    w_gate_up: Tensor  # (C, 2 * I): gate and up fused
    b_gate_up: Tensor | None
    w_down: Tensor  # (I, C)
    b_down: Tensor | None
    mlp_out_norm: Tensor | None  # gemma3: RMSNorm of the MLP's output
    rope: int  # which RoPE table (gemma3's sliding layers have a theta of their own)
    sliding: bool  # attends to the last ``FastLM.window`` tokens only


class Weights(NamedTuple):
    """What decoding reads, gathered once per cache (:meth:`FastLM._decode_weights`)."""

    layers: list[LayerWeights]
    norm: Tensor  # (C,) the final RMSNorm
    head: Tensor  # (V, C): the base's lm_head weight itself (the embeddings when tied), not a copy


# -- the layers, written for TorchScript --------------------------------------------------------


def _project(x: Tensor, w: Tensor, b: Tensor | None) -> Tensor:
    y = x @ w
    if b is not None:
        y = y + b
    return y


def _qkv(x: Tensor, layer: LayerWeights, cos: Tensor, sin: Tensor, nh: int, nkv: int, hd: int,
         eps: float) -> tuple[Tensor, Tensor]:
    """x (B, T, C) -> (q and k heads (B, T, nh + nkv, hd), normed and rotated; v (B, T, nkv, hd))."""
    C = x.shape[2]
    qkv = _project(F.rms_norm(x, [C], layer.attn_norm, eps), layer.w_qkv, layer.b_qkv)
    qkv = qkv.view(x.shape[0], x.shape[1], nh + 2 * nkv, hd)
    qk = qkv[:, :, : nh + nkv]
    qk_norm = layer.qk_norm
    if qk_norm is not None:
        qk = F.rms_norm(qk, [hd], None, eps) * qk_norm
    # RoPE on q and k together: x * cos + rotate_half(x) * sin, rotate_half = roll + sign (in sin)
    qk = qk * cos + qk.roll(hd // 2, dims=-1) * sin
    return qk, qkv[:, :, nh + nkv :]


def _after_attention(x: Tensor, y: Tensor, layer: LayerWeights, gelu: bool, eps: float) -> Tensor:
    """The rest of a layer: x (B, T, C) plus the attention's heads y (B, T, nh * hd), then the MLP."""
    C = x.shape[2]
    a = _project(y, layer.w_o, layer.b_o)
    attn_out_norm = layer.attn_out_norm
    if attn_out_norm is not None:
        a = F.rms_norm(a, [C], attn_out_norm, eps)
    x = x + a
    h = F.rms_norm(x, [C], layer.mlp_norm, eps)
    gate_up = _project(h, layer.w_gate_up, layer.b_gate_up).chunk(2, dim=-1)
    gate = F.gelu(gate_up[0], approximate="tanh") if gelu else F.silu(gate_up[0])
    m = _project(gate * gate_up[1], layer.w_down, layer.b_down)
    mlp_out_norm = layer.mlp_out_norm
    if mlp_out_norm is not None:
        m = F.rms_norm(m, [C], mlp_out_norm, eps)
    return x + m


def _prefill_layers(x: Tensor, k: Tensor, v: Tensor, layers: list[LayerWeights], cos: Tensor, sin: Tensor,
                    window_mask: Tensor | None, nh: int, nkv: int, hd: int, scale: float, gelu: bool,
                    eps: float) -> Tensor:
    """The decoder layers over whole contexts x (B, T, C) from position 0; keys and values go to
    ``k``/``v`` (n_layer, B, nkv, T, hd). ``cos``/``sin`` (tables, 1, T, 1, hd); ``window_mask``
    (T, T), True where a sliding layer's query sees a key (None: the window spans the context).
    Returns x."""
    B, T = x.shape[0], x.shape[1]
    for i, layer in enumerate(layers):
        qk, val = _qkv(x, layer, cos[layer.rope], sin[layer.rope], nh, nkv, hd, eps)
        q = qk[:, :, :nh].transpose(1, 2)  # (B, nh, T, hd)
        k[i] = qk[:, :, nh:].transpose(1, 2)
        v[i] = val.transpose(1, 2)
        mask = window_mask if layer.sliding else None
        y = F.scaled_dot_product_attention(q, k[i], v[i], attn_mask=mask, is_causal=mask is None, scale=scale,
                                           enable_gqa=True)
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


# -- the model ----------------------------------------------------------------------------------


class FastLM(nn.Module):
    """A transformers causal LM with gpt's slot cache: see the module docstring."""

    modality = "text"

    def __init__(self, hf: nn.Module, max_context: int | None = DEFAULT_MAX_CONTEXT):
        super().__init__()
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
    def from_hf(cls, model: nn.Module, max_context: int | None = DEFAULT_MAX_CONTEXT) -> "FastLM":
        """Wrap a transformers causal LM (in eval mode) of a supported type; its parameters are
        shared, not copied. ``block_size`` is its ``max_position_embeddings``, at most ``max_context``
        tokens (None: no cap). Any other type raises :class:`InvalidInput` naming the supported ones."""
        return cls(model, max_context=max_context)

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
        key = tuple((id(p), p._version, p.data_ptr()) for p in self.hf.parameters())
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
            ))
        weights = Weights(layers, self._norm_weight(self.hf.model.norm), self.hf.lm_head.weight)
        self.__dict__["_decode_cache"] = (key, weights)  # not a submodule or buffer: not in the state_dict
        return weights

    def _embed(self, idx: Tensor) -> Tensor:
        embed = self.hf.model.embed_tokens
        x = F.embedding(idx, embed.weight)  # (B, T, C)
        # gemma3: sqrt(hidden), a buffer of the module (read each call: .to() replaces buffers)
        scale = getattr(embed, "embed_scale", None)
        return x if scale is None else x * scale.to(x.dtype)

    def _logits(self, x: Tensor, weights: Weights) -> Tensor:
        """x (B, C) after the layers -> logits (B, V)."""
        logits = F.linear(F.rms_norm(x, (x.shape[-1],), weights.norm, self.eps), weights.head)
        if self.softcap is not None:
            logits = torch.tanh(logits / self.softcap) * self.softcap
        return logits

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
        window_mask = None
        if self.window and T > self.window:  # True where query i sees key j: i - window < j <= i
            i = torch.arange(T, device=idx.device)
            window_mask = (i[None] <= i[:, None]) & (i[None] > i[:, None] - self.window)
        hd, tables = self.head_dim, self.rope_cos.shape[0]
        cos = self.rope_cos[:, :T].view(tables, 1, T, 1, hd)
        sin = self.rope_sin_signed[:, :T].view(tables, 1, T, 1, hd)
        x = _scripted(_prefill_layers)(self._embed(idx), cache.k, cache.v, slots.weights.layers, cos, sin,
                                       window_mask, self.n_head, self.n_kv_head, hd, self.scale, self.gelu,
                                       self.eps)
        cache.pos = T
        return cache, self._logits(x[:, -1], slots.weights)

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
