"""Evaluation of a symbolic-music run (a text family on REMI tokens, :mod:`aigc.data.music`).

Two questions, each against a yardstick measured the same way:

- **Does the model predict held-out music?** NLL per REMI token of the test split (val when test
  is empty), counting only the notes' tokens: a record's end-of-text and condition tokens are its
  context, never scored. Against the unigram and bigram baselines of
  :func:`aigc.data.music.ngram_baselines` fitted on train and scored on the *same* split (the
  card's baselines are on val), so ``beats_bigram`` compares like with like. A record longer than
  the model's block is scored in windows: the first holds a whole block, each later one moves on by
  half a block, so every token after the first block is predicted from at least half a block of
  context; no token is scored twice.
- **Do its samples sound like the data?** Free samples, spread over the run's most frequent
  condition combinations in train, decoded to notes: the share that decode to at least one note,
  notes per sample, characters that were no REMI token; their pitch-class and polyphony histograms
  (:func:`aigc.data.music.music_stats`) beside the test split's, with total variation and
  Jensen-Shannon divergence (base 2: 0 same, 1 disjoint), and the same distances for the train
  split against the test split: the floor that real music of this style reaches.

The result goes to ``eval.json`` in the run folder (atomically) and its headline to the run's
summary, as :func:`aigc.evaluation.evaluate_images` does.
"""

from __future__ import annotations

import math
from collections import Counter
from pathlib import Path
from typing import Any

import torch

from aigc.data import music
from aigc.data.dataset import TextRecord, read_text_split
from aigc.data.textstream import prefix_ids
from aigc.errors import InvalidInput
from aigc.evaluation import _top_combos
from aigc.music_generation import generate_music, run_tokenizer
from aigc.runs import load, read_spec
from aigc.synthesis.text import js_divergence
from aigc.tasks import nll_sum
from aigc.workspace import Workspace, now, write_json_atomic

# Free samples are cut at max(max_new_tokens, this): `aigc eval`'s 120 tokens are some 40 notes of
# REMI, two or three bars of a chorale; 256 give a phrase of four voices, enough for the histograms.
EVAL_MIN_NEW_TOKENS = 256
COMBOS = 4  # samples are spread over this many of train's most frequent condition combinations
PITCH_CLASSES = ("C", "C#", "D", "Eb", "E", "F", "F#", "G", "Ab", "A", "Bb", "B")


def evaluate_music(ws: Workspace, name: str, *, n_samples: int = 32, seed: int = 0, temperature: float = 0.7,
                   top_p: float = 0.9, max_new_tokens: int = 120) -> dict[str, Any]:
    """NLL per REMI token against n-gram baselines, and samples' note statistics against the data
    (see the module doc); saved as ``eval.json`` in the run folder.

    ``max_new_tokens``: samples are cut at ``max(max_new_tokens, EVAL_MIN_NEW_TOKENS)`` tokens (the
    result's ``sampling`` says which).
    """
    if isinstance(n_samples, bool) or not isinstance(n_samples, int) or n_samples < 1:
        raise InvalidInput(f"invalid n_samples {n_samples!r}: pass a whole number >= 1, e.g. 32")
    if isinstance(max_new_tokens, bool) or not isinstance(max_new_tokens, int) or max_new_tokens < 1:
        raise InvalidInput(f"invalid max_new_tokens {max_new_tokens!r}: pass a whole number >= 1")
    run_dir = Path(ws.get_run(name)["path"])
    spec = read_spec(run_dir)
    if not spec.get("music"):
        raise InvalidInput(f"run {name!r} was not trained on a music dataset: evaluate it with `aigc eval {name}`, "
                           "which measures it as text")
    tokenizer = run_tokenizer(run_dir)
    gen = load(ws, name, safety=False)
    ds_dir = ws.dataset_path(spec["dataset"])
    split, records = "test", read_text_split(ds_dir, "test")
    if not records:
        split, records = "val", read_text_split(ds_dir, "val")
    if not records:
        raise InvalidInput(f"dataset {spec['dataset']!r} has no test or val pieces to evaluate on: ingest it again "
                           "with a split that gives them some (e.g. --split 0.8,0.1,0.1)")
    train = read_text_split(ds_dir, "train")

    def ids_of(recs: list[TextRecord]) -> list[list[int]]:
        return [music.text_to_ids(r.text, len(tokenizer))[0] for r in recs]

    total, count = remi_nll(gen, records)
    base = music.ngram_baselines(ids_of(train), ids_of(records))
    nll = total / count
    likelihood = {
        "nll_per_token": nll, "bits_per_token": nll / math.log(2), "tokens": count,
        "unigram_nll": base["unigram_nll"], "bigram_nll": base["bigram_nll"],
        "unigram_bits": _bits(base["unigram_nll"]), "bigram_bits": _bits(base["bigram_nll"]),
        "beats_unigram": base["unigram_nll"] is not None and nll < base["unigram_nll"],
        "beats_bigram": base["bigram_nll"] is not None and nll < base["bigram_nll"],
        "baseline_vocab": base["vocab"],
    }

    budget = max(max_new_tokens, EVAL_MIN_NEW_TOKENS)
    decoded: list[music.Decoded] = []
    asked: list[dict[str, Any]] = []
    combos = _top_combos(train, gen.cond_columns, COMBOS)[:n_samples]
    for i, combo in enumerate(combos):
        k = n_samples // len(combos) + (i < n_samples % len(combos))
        got = generate_music(gen, run_dir, n=k, cond=combo or None, max_new_tokens=budget, temperature=temperature,
                             top_p=top_p, seed=seed + i)
        decoded.extend(got)
        asked.append({"cond": combo, "samples": k, "notes": [d.score.note_num() for d in got]})
    notes = [d.score.note_num() for d in decoded]

    def scores(recs: list[TextRecord]) -> list[music.Decoded]:
        return [music.decode_text(None, r.text, tokenizer=tokenizer) for r in recs]

    stats = {"samples": music.music_stats(decoded), split: music.music_stats(scores(records)),
             "train": music.music_stats(scores(train))}
    result: dict[str, Any] = {
        "run": name, "modality": "music", "split": split, "created_at": now(), "seed": seed,
        "sampling": {"temperature": temperature, "top_p": top_p, "max_new_tokens": budget,
                     "max_new_tokens_asked": max_new_tokens,
                     "note": f"samples run to max(max_new_tokens, {EVAL_MIN_NEW_TOKENS}) REMI tokens: "
                             "fewer hold too few notes for the histograms"},
        "likelihood": likelihood,
        "samples": {
            "n": len(decoded),
            "decoded_share": sum(k > 0 for k in notes) / len(decoded),
            "notes_per_sample": sum(notes) / len(decoded),
            "empty": sum(k == 0 for k in notes),
            "tokens_per_sample": sum(d.tokens for d in decoded) / len(decoded),
            "unknown_chars": sum(d.unknown for d in decoded),
            "by_condition": asked,
        },
        "notes": {key: s["notes"] for key, s in stats.items()},
        "histograms": {
            "pitch_class": {"bins": list(PITCH_CLASSES), **{key: s["pitch_class_hist"] for key, s in stats.items()}},
            "polyphony": {"bins": [str(k) for k in range(1, music.MAX_POLYPHONY)] + [f"{music.MAX_POLYPHONY}+"],
                          **{key: s["polyphony_hist"] for key, s in stats.items()}},
        },
        "distances": {"samples_vs_" + split: _distances(stats["samples"], stats[split]),
                      "train_vs_" + split: _distances(stats["train"], stats[split])},
    }
    write_json_atomic(run_dir / "eval.json", result)
    row = ws.get_run(name)
    ws.update_run(name, summary={**row["summary"], "eval": _headline(result)})
    return result


def remi_nll(gen, records: list[TextRecord]) -> tuple[float, int]:
    """(summed NLL in nats, REMI tokens scored) of ``records`` under a loaded text run ``gen``.

    Each record is ``<|endoftext|>`` + its condition tokens + its text, as in training; only the
    text's tokens are targets. The count is REMI tokens (characters), so with a BPE tokenizer the
    sum over its tokens still divides into nats per REMI token.
    """
    block = int(gen.model.block_size)
    xs: list[torch.Tensor] = []
    ys: list[torch.Tensor] = []
    count = 0
    for r in records:
        if not r.text:
            continue
        context = prefix_ids(gen.tokenizer, r.cond, gen.cond_columns)
        count += len(r.text)
        for x, y in score_windows(context + gen.tokenizer.encode(r.text), len(context), block):
            xs.append(x)
            ys.append(y)
    if not xs:
        raise InvalidInput("the evaluation split holds no REMI tokens: ingest the music again with a non-zero "
                           "val/test fraction")
    total, _ = nll_sum(gen.model, torch.stack(xs), torch.stack(ys))
    return total, count


def score_windows(seq: list[int], first: int, block: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Windows (inputs, targets; each (block,), -100 = not scored) that score every position from
    ``first`` (>= 1) to the end of ``seq`` exactly once: the first window a whole block, each later
    one half a block more, with the block's remaining positions as its context."""
    stride = max(1, block // 2)
    out = []
    a, n = first, len(seq)
    while a < n:
        b = min(n, max(a + stride, block + 1))  # score targets a..b-1
        s = max(0, b - 1 - block)  # inputs s..b-2
        x = torch.zeros(block, dtype=torch.long)
        y = torch.full((block,), -100, dtype=torch.long)
        x[: b - 1 - s] = torch.tensor(seq[s : b - 1])
        y[a - 1 - s : b - 1 - s] = torch.tensor(seq[a:b])
        out.append((x, y))
        a = b
    return out


def _distances(a: dict[str, Any], b: dict[str, Any]) -> dict[str, Any]:
    """Total variation and Jensen-Shannon (base 2) between two music_stats' histograms; None
    where a side has no notes."""
    out = {}
    for key in ("pitch_class_hist", "polyphony_hist"):
        p, q = a[key], b[key]
        if not (a["notes"] and b["notes"]):
            out[key.removesuffix("_hist")] = {"tv": None, "js": None}
            continue
        out[key.removesuffix("_hist")] = {
            "tv": 0.5 * sum(abs(x - y) for x, y in zip(p, q)),
            "js": js_divergence(Counter(dict(enumerate(p))), Counter(dict(enumerate(q)))),
        }
    return out


def _bits(nats: float | None) -> float | None:
    return None if nats is None else nats / math.log(2)


def _headline(result: dict[str, Any]) -> dict[str, Any]:
    lk = result["likelihood"]
    vs = result["distances"]["samples_vs_" + result["split"]]
    return {"nll_per_token": lk["nll_per_token"], "bigram_nll": lk["bigram_nll"], "beats_bigram": lk["beats_bigram"],
            "pitch_class_tv": vs["pitch_class"]["tv"], "polyphony_tv": vs["polyphony"]["tv"],
            "decoded_share": result["samples"]["decoded_share"]}
