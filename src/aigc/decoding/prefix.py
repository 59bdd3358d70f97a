"""A prefix cache: the keys and values of token prefixes already run, reused by later prefills.

Chat requests to one run start alike (the chat template's header, often the same system prompt or
instruction), and every request's prompt used to be prefilled from its first token. A
:class:`PrefixCache` keeps the keys and values of what earlier prefills ran, in blocks of
``block`` (16) tokens; a new context that starts with cached blocks copies their keys and values
into its state and runs only the rest (the model's ``continue_state``), as vLLM's automatic prefix
caching and SGLang's RadixAttention do.

Why a trie of blocks, not vLLM's hash chains: a block's key is its parent and its own 16 tokens,
compared exactly (a dict of children keyed by the token tuple), so two prefixes can never be taken
for each other, where a hash chain trusts its hash; a lookup is one dict probe per block either
way. Block-aligned prefixes, not every length: a block is stored once however many contexts share
it, and a context's lookup touches at most T / 16 nodes.

Eviction is least recently used, block by block, within ``max_tokens`` cached tokens. A lookup or
an insert touches its chain from the deepest block to the first, so a block is always more
recently used than its children and the least recently used block is a leaf: eviction never
strands a block whose parent is gone.

Exactness: a hit's logits are not bit-equal to a full prefill's everywhere. The suffix runs after
the prefix with an explicit causal mask, where a prefill from position 0 takes attention's own
causal path, and a prefix's keys may come from a longer context than the one that reuses them; the
matmuls and the attention kernel may round differently. tests/test_prefix_cache.py checks the tiny
gpt and a tiny llama: logits within 1e-5 of the full prefill (seen: bit-equal for one row, up to
6e-8 apart for several), the same greedy and seeded tokens, and through the engine the same text
with log-probabilities within 1e-5.

One cache serves one model's weights (one per loaded run: an adapter's keys are not the base's);
met with other weights (a model trained further, a runner of another adapter) it empties and serves
those. It is thread-safe: the serving engine prefills on a thread of its own.

This module knows the slot-cache families' prefill contract (``prefill_state``,
``continue_state``, a state's ``k``, ``v``, ``pos``). It knows nothing about sampling, tokenizers
or requests.
"""

from __future__ import annotations

import collections
import threading
from typing import Any

import torch
from torch import Tensor, nn

from aigc.errors import InvalidInput

DEFAULT_MAX_TOKENS = 8192  # a few rows' worth: templates and system prompts are tens to hundreds of tokens
DEFAULT_MIN_PREFIX = 16  # a shorter shared prefix saves less than the copy costs
BLOCK = 16  # tokens a node holds (vLLM's block size)


class _Node:
    """One block: its tokens' keys and values ((n_layer, heads, block, head_dim) each, a copy of
    their own), its children by their tokens."""

    __slots__ = ("parent", "tokens", "k", "v", "children")

    def __init__(self, parent: _Node | None, tokens: tuple[int, ...], k: Tensor | None, v: Tensor | None):
        self.parent, self.tokens, self.k, self.v = parent, tokens, k, v
        self.children: dict[tuple[int, ...], _Node] = {}


class PrefixCache:
    """The keys and values of token prefixes of one model's contexts, by blocks of ``block``
    tokens, at most ``max_tokens`` of them; a context reuses its longest cached prefix of at least
    ``min_prefix`` tokens. See the module docstring."""

    def __init__(self, max_tokens: int = DEFAULT_MAX_TOKENS, min_prefix: int = DEFAULT_MIN_PREFIX,
                 block: int = BLOCK):
        for name, value, least in (("block", block, 1), ("max_tokens", max_tokens, block),
                                   ("min_prefix", min_prefix, 1)):
            if isinstance(value, bool) or not isinstance(value, int) or value < least:
                raise InvalidInput(f"a prefix cache's {name} must be a whole number >= {least}, got {value!r}: "
                                   f"pass {name}={least} or more (or no prefix cache at all)")
        self.max_tokens, self.min_prefix, self.block = max_tokens, min_prefix, block
        self._lock = threading.Lock()
        self._root = _Node(None, (), None, None)
        self._lru: collections.OrderedDict[_Node, None] = collections.OrderedDict()  # oldest first
        self._weights: Any = None  # the decode weights whose keys and values it holds
        self.lookups = self.hits = 0  # prefills asked, and those that reused a prefix
        self.tokens_saved = 0  # prefix tokens copied instead of run, summed over rows
        self.tokens_run = 0  # tokens the model ran in prefills, summed over rows
        self.evicted = 0  # blocks dropped to stay within max_tokens

    # -- what a runner calls -------------------------------------------------------------

    def prefill(self, model: nn.Module, slots: Any, idx: Tensor) -> tuple[Any, Tensor]:
        """``model.prefill_state(idx, slots)``, reusing cached prefixes: ``(state, logits (n, V))``.

        The prefix reused is the longest run of cached blocks every row of ``idx`` (n, T) starts
        with, at most T - 1 tokens (the last one must run to give the logits); shorter than
        ``min_prefix``, the whole context runs. Either way each row's whole blocks are cached after."""
        n, T = idx.shape
        rows: dict[tuple[int, ...], list[int]] = {}  # distinct contexts -> their rows (n samples share one)
        for r, row in enumerate(idx.tolist()):
            rows.setdefault(tuple(row), []).append(r)
        with self._lock:
            if self._weights is not slots.weights:  # other weights: what is cached is not theirs
                self._clear()
                self._weights = slots.weights
            chains = {ctx: self._walk(ctx, (T - 1) // self.block) for ctx in rows}
            depth = min(len(chain) for chain in chains.values())
            P = depth * self.block
            self.lookups += 1
            if P >= self.min_prefix:
                self.hits += 1
                self.tokens_saved += n * P
            else:
                P = 0
            self.tokens_run += n * (T - P)
        if P:
            # the blocks are never written after insertion, so they are read outside the lock
            k, v = (self._rows([torch.cat([getattr(node, kv) for node in chains[ctx][:depth]], dim=2)
                                for ctx in rows], rows, n) for kv in ("k", "v"))
            state, logits = model.continue_state((k, v), idx[:, P:], slots)
        else:
            state, logits = model.prefill_state(idx, slots)
        with self._lock:
            if self._weights is slots.weights:
                for ctx, (first, *_) in rows.items():
                    self._insert(ctx, state, first)
        return state, logits

    def stats(self) -> dict[str, int]:
        """Counters since the cache was made: prefills looked up, hits, tokens saved and run (summed
        over rows), blocks evicted; and the tokens held now."""
        with self._lock:
            return {"lookups": self.lookups, "hits": self.hits, "tokens_saved": self.tokens_saved,
                    "tokens_run": self.tokens_run, "cached_tokens": len(self._lru) * self.block,
                    "max_tokens": self.max_tokens, "evicted_blocks": self.evicted}

    def nbytes(self, slots: Any) -> int:
        """Bytes it holds when full, for a model whose slot cache is ``slots`` (its keys and values
        (n_layer, rows, heads, capacity, head_dim))."""
        per_token = slots.k[:, 0, :, 0].numel() * slots.k.element_size() * 2  # keys and values
        return self.max_tokens * per_token

    def clear(self) -> None:
        with self._lock:
            self._clear()

    # -- the trie (lock held) ------------------------------------------------------------

    def _walk(self, ctx: tuple[int, ...], most: int) -> list[_Node]:
        """The cached blocks ``ctx`` starts with, at most ``most``, touched (deepest first)."""
        chain, node, b = [], self._root, self.block
        for j in range(most):
            node = node.children.get(ctx[j * b : (j + 1) * b])
            if node is None:
                break
            chain.append(node)
        self._touch(chain)
        return chain

    def _touch(self, chain: list[_Node]) -> None:
        for node in reversed(chain):  # children before parents: a parent stays the more recent
            self._lru[node] = None  # a new block joins at the end; a known one stays where it was
            self._lru.move_to_end(node)

    def _insert(self, ctx: tuple[int, ...], state: Any, row: int) -> None:
        """Cache the whole blocks of ``ctx``, whose keys and values are row ``row`` of ``state``,
        as many as fit in ``max_tokens``; the least recently used blocks of other contexts go first."""
        b = self.block
        most = min(len(ctx) // b, self.max_tokens // b)
        chain = self._walk(ctx, most)
        while len(self._lru) + most - len(chain) > self.max_tokens // b:
            self._evict()  # never one of chain's: they were just touched, and others are older
        node = chain[-1] if chain else self._root
        for j in range(len(chain), most):
            span = slice(j * b, (j + 1) * b)
            child = _Node(node, ctx[span], state.k[:, row, :, span].clone(), state.v[:, row, :, span].clone())
            node.children[child.tokens] = child
            chain.append(child)
            node = child
        self._touch(chain)

    def _evict(self) -> None:
        node, _ = self._lru.popitem(last=False)  # a leaf: its children, had it any, would be older
        del node.parent.children[node.tokens]
        node.parent = None
        self.evicted += 1

    def _clear(self) -> None:
        self._root.children.clear()
        self._lru.clear()

    @staticmethod
    def _rows(per_ctx: list[Tensor], rows: dict[tuple[int, ...], list[int]], n: int) -> Tensor:
        """(n_layer, n, heads, P, head_dim): each row's prefix from its context's (n_layer, heads, P, hd)."""
        if len(per_ctx) == 1:  # every row the same context: a view, the state copies it
            return per_ctx[0].unsqueeze(1).expand(-1, n, -1, -1, -1)
        out = per_ctx[0].new_empty(per_ctx[0].shape[0], n, *per_ctx[0].shape[1:])
        for prefix, where in zip(per_ctx, rows.values()):
            out[:, where] = prefix.unsqueeze(1)
        return out
