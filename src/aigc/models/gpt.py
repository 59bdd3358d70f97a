"""`gpt`: a decoder-only Transformer language model.

The network is transformers' ``LlamaForCausalLM`` (RoPE, RMSNorm, SwiGLU, tied embeddings) with
a small config, so a run exports as a standard checkpoint that ``AutoModelForCausalLM`` loads.
We chose the Llama class over GPT-2's because it trained about 20 % faster per step here at the
same width and converges at least as well on character-level text.

Training uses the transformers forward. Decoding uses :meth:`GPT.forward_cached`, a lean pass
over the *same* modules with a preallocated key/value cache: at the tiny sizes this project
trains on a CPU, the per-token Python overhead of a general ``generate()`` dominates, and this
path removes it. A test checks it against the transformers forward and ``generate()``.

This module knows the network, its loss and its cache. It knows nothing about tokenizers,
sampling, datasets or files other than its own export.
"""

from __future__ import annotations

import threading
import warnings
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import NamedTuple, Optional

import torch
import torch.nn.functional as F
from torch import Tensor, nn


@dataclass
class GPTConfig:
    vocab_size: int = 0  # set from the tokenizer when training starts
    block_size: int = 256  # context length in tokens (RoPE positions 0..block_size-1)
    n_layer: int = 4
    n_head: int = 4
    n_embd: int = 128
    mlp_hidden: int = 0  # SwiGLU width; 0 means 8/3 * n_embd rounded up to a multiple of 32
    dropout: float = 0.0  # attention dropout; tiny models on small data rarely need more
    rope_theta: float = 10000.0
    eos_token_id: int = 0  # the tokenizer's <|endoftext|>; also used as BOS and PAD in the export


class DecodeWeights(NamedTuple):
    """The weights decoding reads, gathered once per cache: per layer (norm1, W_qkv, W_o, norm2,
    W_gate_up, W_down) and the head, every matrix fused where it can be and stored transposed,
    (in, out) and contiguous, so that a projection is ``x @ W``.

    Why transposed: ``x @ W`` against a contiguous (in, out) matrix is faster on a CPU than
    ``F.linear`` against the module's (out, in) weight: a whole batch-16 decode step of the small
    gpt 1.03-1.06x at width 128 (1.12-1.14x at the former width 192), batch 1 about equal, with
    bit-equal results at batch 16 (``benchmarks/decode_step.py`` measures both; results/decode_step.json).
    """

    layers: list[tuple[Tensor, Tensor, Tensor, Tensor, Tensor, Tensor]]
    norm: Tensor
    head: Tensor


class KVCache:
    """Preallocated keys and values, (n_layer, B, n_head, capacity, head_dim) each, plus the
    :class:`DecodeWeights` gathered once per generation."""

    def __init__(self, config: GPTConfig, batch_size: int, weights: DecodeWeights, device, dtype):
        head_dim = config.n_embd // config.n_head
        shape = (config.n_layer, batch_size, config.n_head, config.block_size, head_dim)
        self.k = torch.zeros(shape, device=device, dtype=dtype)
        self.v = torch.zeros(shape, device=device, dtype=dtype)
        self.weights = weights
        self.pos = 0  # tokens already in the cache
        self.capacity = config.block_size

    def fill(self, k: Tensor, v: Tensor) -> None:
        """Start from a prefix already run: keys and values (n_layer, B, n_head, P, head_dim) become the
        first P tokens (:meth:`GPT.continue_state`; :class:`aigc.decoding.PrefixCache` keeps them)."""
        P = k.shape[3]
        self.k[:, :, :, :P] = k
        self.v[:, :, :, :P] = v
        self.pos = P


class SlotCache:
    """Keys and values for continuous batching: ``rows`` sequences, each at its own length.

    Shapes as :class:`KVCache`, with ``lengths`` (rows,) in place of one ``pos``. Rows
    ``0..B-1`` are the live ones; the caller keeps them packed with :meth:`move` when a
    sequence leaves, so a decode step reads a view, never a gathered copy.
    """

    def __init__(self, config: GPTConfig, rows: int, weights: DecodeWeights, device, dtype):
        head_dim = config.n_embd // config.n_head
        shape = (config.n_layer, rows, config.n_head, config.block_size, head_dim)
        self.k = torch.zeros(shape, device=device, dtype=dtype)
        self.v = torch.zeros(shape, device=device, dtype=dtype)
        self.lengths = torch.zeros(rows, dtype=torch.long, device=device)
        self.weights = weights
        self.rows = rows
        self.capacity = config.block_size

    def move(self, src: int, dst: int) -> None:
        """Copy row ``src`` (its keys, values and length) into row ``dst``."""
        n = int(self.lengths[src])
        self.k[:, dst, :, :n] = self.k[:, src, :, :n]
        self.v[:, dst, :, :n] = self.v[:, src, :, :n]
        self.lengths[dst] = n


def _cached_layers(x: Tensor, k: Tensor, v: Tensor, pos: int,
                   weights: list[tuple[Tensor, Tensor, Tensor, Tensor, Tensor, Tensor]], cos: Tensor, sin: Tensor,
                   mask: Optional[Tensor], n_head: int, eps: float) -> Tensor:  # noqa: UP045 - TorchScript has no X | None
    """The decoder layers of :meth:`GPT.forward_cached`: x (B, T, C) after ``pos`` cached tokens,
    keys and values written to ``k``/``v`` (n_layer, B, n_head, capacity, head_dim); ``weights``
    are :attr:`DecodeWeights.layers`, matrices (in, out). Returns x."""
    B, T, C = x.shape[0], x.shape[1], x.shape[2]
    nh = n_head
    hd = C // nh
    for i, (w_n1, w_qkv, w_o, w_n2, w_gu, w_down) in enumerate(weights):
        h = F.rms_norm(x, [C], w_n1, eps)
        qkv = (h @ w_qkv).view(B, T, 3, nh, hd)
        # RoPE on q and k together: x * cos + rotate_half(x) * sin, rotate_half = roll + sign
        qk = qkv[:, :, :2] * cos + qkv[:, :, :2].roll(hd // 2, dims=-1) * sin  # (B, T, 2, nh, hd)
        q = qk[:, :, 0].transpose(1, 2)  # (B, nh, T, hd)
        k[i, :, :, pos : pos + T] = qk[:, :, 1].transpose(1, 2)
        v[i, :, :, pos : pos + T] = qkv[:, :, 2].transpose(1, 2)
        keys, values = k[i, :, :, : pos + T], v[i, :, :, : pos + T]
        if T == 1:
            # One query per sequence: two batched matmuls over (B*nh) run about twice as
            # fast on a CPU as scaled_dot_product_attention's kernel, with the same result.
            q1 = q.reshape(B * nh, 1, hd) * float(hd) ** -0.5
            scores = torch.bmm(q1, keys.reshape(B * nh, pos + 1, hd).transpose(1, 2))
            y = torch.bmm(scores.softmax(-1), values.reshape(B * nh, pos + 1, hd))
            y = y.view(B, nh, 1, hd)
        else:
            y = F.scaled_dot_product_attention(q, keys, values, attn_mask=mask, is_causal=(pos == 0))
        x = x + y.transpose(1, 2).reshape(B, T, C) @ w_o
        gate_up = (F.rms_norm(x, [C], w_n2, eps) @ w_gu).chunk(2, dim=-1)
        x = x + (F.silu(gate_up[0]) * gate_up[1]) @ w_down
    return x


def _slot_layers(x: Tensor, k: Tensor, v: Tensor, pos: Tensor, L: int,
                 masked: Optional[Tensor],  # noqa: UP045 - TorchScript has no X | None
                 weights: list[tuple[Tensor, Tensor, Tensor, Tensor, Tensor, Tensor]],
                 cos: Tensor, sin: Tensor, n_head: int, eps: float) -> Tensor:
    """The decoder layers of :meth:`GPT.decode_slots`: x (B, 1, C), one token per row, row b at
    position ``pos[b]``; its key and value go to row b of ``k``/``v``, and it reads the first ``L``
    keys of its row, those past its own position ``masked`` (B, 1, 1, L) out. Returns x."""
    B, C = x.shape[0], x.shape[2]
    nh = n_head
    hd = C // nh
    rows = torch.arange(B, device=x.device)
    for i, (w_n1, w_qkv, w_o, w_n2, w_gu, w_down) in enumerate(weights):
        h = F.rms_norm(x, [C], w_n1, eps)
        qkv = (h @ w_qkv).view(B, 1, 3, nh, hd)
        qk = qkv[:, :, :2] * cos + qkv[:, :, :2].roll(hd // 2, dims=-1) * sin
        k[i, rows, :, pos] = qk[:, 0, 1]
        v[i, rows, :, pos] = qkv[:, 0, 2]
        q = qk[:, :, 0].transpose(1, 2) * float(hd) ** -0.5  # (B, nh, 1, hd)
        scores = q @ k[i, :B, :, :L].transpose(-1, -2)  # (B, nh, 1, L)
        if masked is not None:
            scores = scores.masked_fill(masked, float("-inf"))
        y = scores.softmax(-1) @ v[i, :B, :, :L]  # (B, nh, 1, hd)
        x = x + y.transpose(1, 2).reshape(B, 1, C) @ w_o
        gate_up = (F.rms_norm(x, [C], w_n2, eps) @ w_gu).chunk(2, dim=-1)
        x = x + (F.silu(gate_up[0]) * gate_up[1]) @ w_down
    return x


_SCRIPTED: dict = {}
_SCRIPTING = threading.Lock()  # the engine's decode loop and prefill thread may both ask first


def _scripted(fn):
    """``fn`` compiled by TorchScript, once per process (:func:`_scripted_layers` says why)."""
    compiled = _SCRIPTED.get(fn)
    if compiled is None:
        with _SCRIPTING:
            if fn not in _SCRIPTED:
                try:
                    with warnings.catch_warnings():
                        warnings.simplefilter("ignore", DeprecationWarning)
                        _SCRIPTED[fn] = torch.jit.script(fn)
                except Exception:  # noqa: BLE001 - a torch without TorchScript: same arithmetic, eager
                    _SCRIPTED[fn] = fn
            compiled = _SCRIPTED[fn]
    return compiled


def _scripted_layers():
    """:func:`_cached_layers` compiled by TorchScript, once per process.

    Why TorchScript: a scripted call runs all its ops in C++ and takes the GIL once, where eager
    code gives it back and takes it again around each of its ~70 ops. The serving engine prefills
    on a second thread beside its decode loop; eager, the two threads' GIL hand-offs slowed every
    decode step of the small gpt at batch 16 by about 0.5 ms (2.2 -> 2.7 ms) and throughput at 16
    clients fell 8 %; scripted, the prefill runs on the other core at a cost of about 0.1 ms a step.
    The outputs are bit-equal to eager (CPU fusion is off by default; a test checks). TorchScript
    is deprecated in favour of torch.compile, whose CPU path needs a C++ compiler at run time; we
    pin torch, and fall back to eager if scripting ever fails.
    """
    return _scripted(_cached_layers)


def _scripted_slot_layers():
    """:func:`_slot_layers` compiled by TorchScript: the decode loop's step, in one call that lets
    go of the GIL until it is done. Eager, each of its ~100 ops took the GIL back, and waited
    whenever another thread of the engine (requests arriving, prefills) ran Python meanwhile."""
    return _scripted(_slot_layers)


class GPT(nn.Module):
    name = "gpt"
    modality = "text"
    Config = GPTConfig
    supports_cache = True
    PRESETS = {
        "tiny": dict(block_size=64, n_layer=2, n_head=2, n_embd=32),  # tests: trains in seconds
        # CPU: minutes. Width 128, not 192: a run of minutes on a CPU is short of steps, not of
        # capacity. One thread each, two runs at once (one-off runs, not a committed benchmark):
        # Chinese reviews (a 4,800-character vocabulary), 300 s: 314 steps to 207, val loss 4.27 against
        # 5.31 nats/token, category accuracy of samples 0.64 against 0.15 (best of 8: 0.98 against
        # 0.51); tinyshakespeare, 180 s: 369 steps to 197, val loss 1.77 against 1.91.
        "small": dict(block_size=128, n_layer=4, n_head=4, n_embd=128),
        "base": dict(block_size=512, n_layer=8, n_head=8, n_embd=512),  # a GPU
    }
    # Training defaults per preset (any of them can be overridden on the command line).
    TRAIN_DEFAULTS = {
        "tiny": dict(max_steps=40, batch_size=8, lr=1e-2, warmup_steps=5, eval_every=20, eval_tokens=2048),
        "small": dict(max_steps=5000, batch_size=32, lr=2e-3, warmup_steps=100, eval_every=250),
        "base": dict(max_steps=20000, batch_size=64, lr=1e-3, warmup_steps=500, eval_every=500),
    }

    def __init__(self, config: GPTConfig):
        super().__init__()
        from transformers import LlamaConfig, LlamaForCausalLM

        if config.vocab_size <= 0:
            raise ValueError("GPTConfig.vocab_size must be set from the tokenizer before building the model")
        if config.n_embd % config.n_head:
            raise ValueError(f"n_embd ({config.n_embd}) must be divisible by n_head ({config.n_head})")
        self.config = config
        hidden = config.mlp_hidden or -(-(8 * config.n_embd // 3) // 32) * 32
        hf_config = LlamaConfig(
            vocab_size=config.vocab_size,
            hidden_size=config.n_embd,
            intermediate_size=hidden,
            num_hidden_layers=config.n_layer,
            num_attention_heads=config.n_head,
            num_key_value_heads=config.n_head,
            max_position_embeddings=config.block_size,
            attention_dropout=config.dropout,
            rope_parameters={"rope_type": "default", "rope_theta": config.rope_theta},
            tie_word_embeddings=True,
            bos_token_id=config.eos_token_id,
            eos_token_id=config.eos_token_id,
            pad_token_id=config.eos_token_id,
        )
        hf_config._attn_implementation = "sdpa"
        self.hf = LlamaForCausalLM(hf_config)
        # RoPE tables for every position, computed once: (block_size, head_dim)
        positions = torch.arange(config.block_size)[None]
        cos, sin = self.hf.model.rotary_emb(torch.zeros(1, dtype=torch.float32), positions)
        half = cos.shape[-1] // 2
        sign = torch.cat([-torch.ones(half), torch.ones(half)])  # rotate_half(x) == roll(x, half) * sign
        self.register_buffer("rope_cos", cos[0], persistent=False)
        self.register_buffer("rope_sin_signed", sin[0] * sign, persistent=False)

    @property
    def block_size(self) -> int:
        return self.config.block_size

    def forward(self, idx: Tensor, targets: Tensor | None = None) -> tuple[Tensor, Tensor | None]:
        """idx (B, T) -> logits (B, T, V); loss is mean cross-entropy against targets (B, T), -100 ignored."""
        logits = self.hf(input_ids=idx, use_cache=False).logits
        loss = None
        if targets is not None:
            loss = F.cross_entropy(logits.flatten(0, 1).float(), targets.flatten(), ignore_index=-100)
        return logits, loss

    # -- incremental decoding ------------------------------------------------------------

    def init_cache(self, batch_size: int) -> KVCache:
        return KVCache(self.config, batch_size, self._decode_weights(), self.hf.lm_head.weight.device,
                       self.hf.lm_head.weight.dtype)

    @torch.no_grad()
    def _decode_weights(self) -> DecodeWeights:
        """A :class:`DecodeWeights` snapshot of the model. Fusing the projections turns seven
        matmuls per layer into four; at batch 1 each call costs more than its arithmetic.

        Kept while no parameter changes: their version counters (which every in-place update such
        as an optimizer step or ``load_state_dict`` bumps) and storage (which ``.to()`` moves) are
        its key. Gathering costs about 2 ms."""
        key = tuple((id(p), p._version, p.data_ptr()) for p in self.parameters())
        cached = self.__dict__.get("_decode_cache")
        if cached is not None and cached[0] == key:
            return cached[1]
        layers = []
        for layer in self.hf.model.layers:
            attn, mlp = layer.self_attn, layer.mlp
            layers.append((
                layer.input_layernorm.weight,
                torch.cat([attn.q_proj.weight, attn.k_proj.weight, attn.v_proj.weight]).t().contiguous(),
                attn.o_proj.weight.t().contiguous(),
                layer.post_attention_layernorm.weight,
                torch.cat([mlp.gate_proj.weight, mlp.up_proj.weight]).t().contiguous(),
                mlp.down_proj.weight.t().contiguous(),
            ))
        weights = DecodeWeights(layers, self.hf.model.norm.weight, self.hf.lm_head.weight.t().contiguous())
        self.__dict__["_decode_cache"] = (key, weights)  # not a submodule or buffer: not in the state_dict
        return weights

    @torch.no_grad()
    def forward_cached(self, idx: Tensor, cache: KVCache, last_only: bool = True) -> Tensor:
        """Feed idx (B, T) after the cache's contents; returns logits (B, V) (or (B, T, V)).

        The same arithmetic as the transformers forward (RMSNorm, RoPE, causal attention,
        SwiGLU, tied head), written functionally over fused weights to cut per-call overhead.
        """
        T = idx.shape[1]
        pos = cache.pos
        if pos + T > cache.capacity:
            raise ValueError(f"KV cache holds {cache.capacity} tokens; {pos} used, {T} more asked")
        C, nh = self.config.n_embd, self.config.n_head
        hd = C // nh
        cos = self.rope_cos[pos : pos + T].view(1, T, 1, 1, hd)
        sin = self.rope_sin_signed[pos : pos + T].view(1, T, 1, 1, hd)
        mask = None
        if T > 1 and pos > 0:  # a chunk after existing context: causal within the chunk, all before it
            mask = torch.ones(T, pos + T, dtype=torch.bool, device=idx.device).tril(diagonal=pos)
        x = F.embedding(idx, self.hf.model.embed_tokens.weight)  # (B, T, C)
        eps, w = self.hf.config.rms_norm_eps, cache.weights
        x = _scripted_layers()(x, cache.k, cache.v, pos, w.layers, cos, sin, mask, nh, eps)
        cache.pos = pos + T
        if last_only:
            x = x[:, -1]
        return F.rms_norm(x, (C,), w.norm, eps) @ w.head

    # -- continuous batching -------------------------------------------------------------

    def init_slots(self, rows: int) -> SlotCache:
        return SlotCache(self.config, rows, self._decode_weights(), self.hf.lm_head.weight.device,
                         self.hf.lm_head.weight.dtype)

    @torch.no_grad()
    def prefill_slots(self, idx: Tensor, slots: SlotCache, rows: list[int]) -> Tensor:
        """Run the contexts idx (n, T) and store them in ``rows`` of ``slots``; logits (n, V)."""
        state, logits = self.prefill_state(idx, slots)
        self.load_slots(state, slots, rows)
        return logits

    @torch.no_grad()
    def prefill_state(self, idx: Tensor, slots: SlotCache) -> tuple[KVCache, Tensor]:
        """Run the contexts idx (n, T) on a cache of their own: ``(cache, logits (n, V))``.

        Reads nothing of ``slots`` but its weights and writes nothing to it, so it may run in
        another thread while rows of ``slots`` decode; :meth:`load_slots` then moves it in."""
        cache = KVCache(self.config, idx.shape[0], slots.weights, slots.k.device, slots.k.dtype)
        return cache, self.forward_cached(idx, cache)

    @torch.no_grad()
    def continue_state(self, prefix: tuple[Tensor, Tensor], idx: Tensor,
                       slots: SlotCache) -> tuple[KVCache, Tensor]:
        """:meth:`prefill_state` of contexts whose first P tokens were run before: ``prefix`` holds their
        keys and values ((n_layer, n, n_head, P, head_dim) each), ``idx`` (n, T - P) the rest, run as
        :meth:`forward_cached` continues a cache. ``(cache holding all T tokens, logits (n, V))``."""
        cache = KVCache(self.config, idx.shape[0], slots.weights, slots.k.device, slots.k.dtype)
        cache.fill(*prefix)
        return cache, self.forward_cached(idx, cache)

    @torch.no_grad()
    def load_slots(self, state: KVCache, slots: SlotCache, rows: list[int]) -> None:
        """Copy the sequences of a :meth:`prefill_state` cache into ``rows`` of ``slots``."""
        T = state.pos
        index = torch.tensor(rows, device=slots.k.device)
        slots.k[:, index, :, :T] = state.k[:, :, :, :T]
        slots.v[:, index, :, :T] = state.v[:, :, :, :T]
        slots.lengths[index] = T

    @torch.no_grad()
    def decode_slots(self, tokens: Tensor, slots: SlotCache) -> Tensor:
        """Feed one token (B,) to each of rows 0..B-1, every row at its own position; logits (B, V).

        The arithmetic of :meth:`forward_cached` for one token, with each row's RoPE angle
        taken at its own length and keys past that length masked out.
        """
        B = tokens.shape[0]
        pos = slots.lengths[:B]
        if int(pos.max()) >= slots.capacity:
            raise ValueError(f"a slot is full ({slots.capacity} tokens): prefill it again from a shorter context")
        C, nh = self.config.n_embd, self.config.n_head
        hd = C // nh
        eps = self.hf.config.rms_norm_eps
        cos = self.rope_cos[pos].view(B, 1, 1, 1, hd)
        sin = self.rope_sin_signed[pos].view(B, 1, 1, 1, hd)
        L = int(pos.max()) + 1  # keys to read: the longest live row
        masked = None
        if int(pos.min()) + 1 < L:  # rows of different lengths: hide the keys past each row's end
            masked = (torch.arange(L, device=tokens.device)[None] > pos[:, None]).view(B, 1, 1, L)
        x = F.embedding(tokens[:, None], self.hf.model.embed_tokens.weight)  # (B, 1, C)
        x = _scripted_slot_layers()(x, slots.k, slots.v, pos, L, masked, slots.weights.layers, cos, sin, nh,
                                    eps)
        slots.lengths[:B] += 1
        return F.rms_norm(x[:, -1], (C,), slots.weights.norm, eps) @ slots.weights.head

    # -- export --------------------------------------------------------------------------

    def export(self, out_dir: Path, tokenizer) -> None:
        """Write a transformers checkpoint: config.json, model.safetensors, tokenizer files, with the
        fields older readers need (:func:`~aigc.pretrained.export_lint.make_portable`).

        ``tokenizer`` is the run's :class:`~aigc.data.tokenizers.TextTokenizer`.
        """
        from transformers import GenerationConfig

        out_dir.mkdir(parents=True, exist_ok=True)
        self.hf.generation_config = GenerationConfig(
            bos_token_id=self.config.eos_token_id,
            eos_token_id=self.config.eos_token_id,
            pad_token_id=self.config.eos_token_id,
        )
        from transformers.utils import logging as hf_logging

        bar = hf_logging.is_progress_bar_enabled()
        hf_logging.disable_progress_bar()  # its "Writing model shards" bar would cut into ours
        try:
            self.hf.save_pretrained(out_dir)
        finally:
            if bar:
                hf_logging.enable_progress_bar()
        tok = tokenizer.to_transformers()
        tok.pad_token = tok.eos_token
        tok.model_max_length = self.config.block_size
        tok.save_pretrained(out_dir)
        from aigc.pretrained.export_lint import make_portable

        make_portable(out_dir)  # what vLLM, TGI, llama.cpp and Ollama read that transformers 5 leaves out

    def config_dict(self) -> dict:
        return asdict(self.config)

