"""`aigc eval` for text runs: likelihood, continuation quality, diversity, memorization.

- Test-split perplexity (per token) and bits per character: the summed negative log-likelihood
  over the test stream (condition tokens given, not scored) divided by its characters, so
  char-level and BPE runs compare on the same scale.
- BLEU and chrF of prompted continuations against the held-out rest of each test record (or of
  each 300-character test chunk for a whole-corpus dataset).
- distinct-1/2/3 and self-BLEU of free samples (per condition when the run has conditions),
  and memorization: the share of generated 50-character spans found verbatim in train text.

Every figure is computed with fixed seeds, so two evaluations of one run agree.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from aigc.data.dataset import TextRecord, read_text_split
from aigc.data.textstream import encode_records, eval_windows
from aigc.metrics import text as tm
from aigc.runs import load, read_spec
from aigc.tasks import nll_sum
from aigc.workspace import Workspace, now, write_json_atomic

CHUNK = 300  # corpus-mode test text is cut into pieces of this many characters
PROMPT_CHARS = 100  # at most this much of a record is the prompt; the rest is the reference


def evaluate(ws: Workspace, name: str, *, n_prompts: int = 40, n_samples: int = 32, max_new_tokens: int = 120,
             seed: int = 0, temperature: float = 0.7, top_p: float = 0.9) -> dict[str, Any]:
    gen = load(ws, name)
    run_dir = Path(ws.get_run(name)["path"])
    spec = read_spec(run_dir)
    ds_dir = ws.dataset_path(spec["dataset"])
    cols = spec["cond_columns"]
    split = "test"
    records = read_text_split(ds_dir, "test")
    if not records:
        split, records = "val", read_text_split(ds_dir, "val")
    train_texts = [r.text for r in read_text_split(ds_dir, "train")]
    sampling = dict(temperature=temperature, top_p=top_p, seed=seed)

    result: dict[str, Any] = {"run": name, "split": split, "created_at": now(), "sampling": sampling}
    result["likelihood"] = _likelihood(gen, records, cols)

    # Continuations of held-out text: prompt = the start of a record, reference = its rest.
    pairs = _prompt_pairs(records, n_prompts)
    hyps, refs = [], []
    for prompt, reference, cond in pairs:
        budget = min(max_new_tokens * 2, len(gen.tokenizer.encode(reference)) + 8)
        hyps.append(gen.generate(prompt, cond=cond, max_new_tokens=budget, **sampling)[0][: len(reference)])
        refs.append(reference)
    result["continuation"] = {
        "n": len(pairs),
        "bleu": tm.bleu(hyps, refs) if pairs else None,
        "chrf": tm.chrf(hyps, refs) if pairs else None,
        "example": {"prompt": pairs[0][0], "reference": refs[0], "generated": hyps[0]} if pairs else None,
    }

    # Free samples, spread over the most frequent condition combinations.
    combos = _top_combos(records, cols, limit=4)
    per = max(1, n_samples // len(combos))
    samples: list[str] = []
    by_condition: dict[str, Any] = {}
    for combo in combos:
        texts = gen.generate("", n=per, cond=combo, max_new_tokens=max_new_tokens, **sampling)
        samples.extend(texts)
        if combo:
            key = ", ".join(f"{k}={v}" for k, v in combo.items())
            subset = [r for r in records if all(r.cond.get(k) == v for k, v in combo.items())]
            by_condition[key] = {
                "n_test": len(subset),
                **_likelihood(gen, subset, cols),
                "distinct_2": tm.distinct_n(texts, 2),
                "sample": texts[0][:160],
            }
    result["diversity"] = {
        "n_samples": len(samples),
        "distinct_1": tm.distinct_n(samples, 1),
        "distinct_2": tm.distinct_n(samples, 2),
        "distinct_3": tm.distinct_n(samples, 3),
        "self_bleu": tm.self_bleu(samples),
    }
    result["memorization"] = tm.memorization(samples, train_texts, span=50)
    result["by_condition"] = by_condition
    write_json_atomic(run_dir / "eval.json", result)
    row = ws.get_run(name)
    ws.update_run(name, summary={**row["summary"], "eval": _headline(result)})
    return result


def _likelihood(gen, records: list[TextRecord], cols: list[str]) -> dict[str, float | None]:
    if not records:
        return {"nll_per_token": None, "perplexity": None, "bits_per_char": None}
    stream = encode_records(gen.tokenizer, records, cols)
    x, y = eval_windows(stream, gen.model.block_size)
    total, count = nll_sum(gen.model, x, y)
    per_token = total / max(1, count)
    return {
        "nll_per_token": per_token,
        "perplexity": math.exp(per_token),
        "bits_per_char": total / math.log(2) / max(1, stream.n_chars),
        "tokens": count,
        "chars": stream.n_chars,
    }


def _prompt_pairs(records: list[TextRecord], limit: int) -> list[tuple[str, str, dict[str, str]]]:
    pieces: list[tuple[str, dict[str, str]]] = []
    if len(records) == 1:  # a whole corpus: cut the held-out text into chunks
        text = records[0].text
        pieces = [(text[i : i + CHUNK], records[0].cond) for i in range(0, len(text) - CHUNK + 1, CHUNK)]
    else:
        pieces = [(r.text, r.cond) for r in records if len(r.text) >= 12]
    if len(pieces) > limit:  # evenly spaced, deterministic
        pieces = [pieces[round(i * (len(pieces) - 1) / (limit - 1))] for i in range(limit)] if limit > 1 else pieces[:1]
    pairs = []
    for text, cond in pieces:
        cut = min(PROMPT_CHARS, max(4, len(text) // 3))
        pairs.append((text[:cut], text[cut:], cond))
    return pairs


def _top_combos(records: list[TextRecord], cols: list[str], limit: int) -> list[dict[str, str]]:
    if not cols:
        return [{}]
    counts: dict[tuple, int] = {}
    for r in records:
        key = tuple((c, r.cond[c]) for c in cols)
        counts[key] = counts.get(key, 0) + 1
    top = sorted(counts, key=lambda k: (-counts[k], k))[:limit]
    return [dict(k) for k in top] or [{}]


def _headline(result: dict[str, Any]) -> dict[str, Any]:
    return {
        "bits_per_char": result["likelihood"]["bits_per_char"],
        "perplexity": result["likelihood"]["perplexity"],
        "bleu": result["continuation"]["bleu"],
        "chrf": result["continuation"]["chrf"],
        "distinct_2": result["diversity"]["distinct_2"],
        "self_bleu": result["diversity"]["self_bleu"],
        "memorized": result["memorization"].get("rate"),
    }
