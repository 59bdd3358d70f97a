"""`aigc eval` for text runs: likelihood, continuation quality, diversity, memorization.

- Test-split perplexity (per token) and bits per character: the summed negative log-likelihood
  over the test stream (condition tokens given, not scored) divided by its characters, so
  char-level and BPE runs compare on the same scale.
- BLEU and chrF of prompted continuations against the held-out rest of each test record (or of
  each 300-character test chunk for a whole-corpus dataset).
- distinct-1/2/3 and self-BLEU of free samples (per condition when the run has conditions),
  and memorization: the share of generated 50-character spans found verbatim in train text.
- Conditional accuracy, per condition column: a classifier of the column's value from text
  (char n-gram TF-IDF + logistic regression, fitted on the train split) names the value of
  samples generated under each of the column's most frequent values; the share named as asked is
  the column's accuracy. The classifier's accuracy on held-out records is shown as its ceiling,
  the majority share of the asked values as chance.

Every figure is computed with fixed seeds, so two evaluations of one run agree.
"""

from __future__ import annotations

import inspect
import math
from pathlib import Path
from typing import Any

from aigc.data.dataset import TextRecord, read_text_split
from aigc.data.textstream import encode_records, eval_windows
from aigc.errors import InvalidInput
from aigc.metrics import text as tm
from aigc.rerank import ConditionJudge, RerankedGenerator, check_candidates
from aigc.runs import load, read_spec
from aigc.safety.report import safety_report
from aigc.tasks import nll_sum
from aigc.workspace import Workspace, now, write_json_atomic

CHUNK = 300  # corpus-mode test text is cut into pieces of this many characters
PROMPT_CHARS = 100  # at most this much of a record is the prompt; the rest is the reference
ROTATION_TRAIN_IMAGES = 10_000  # train images (x4 rotations) for the extractor of an unlabelled set
COND_VALUES = 8  # conditional accuracy asks for at most this many values per column, the most frequent
COND_SAMPLES = 16  # samples generated per asked value
FOLDED = "\x00other"  # the classifier's label for values without a token of their own (no value spells it)


def evaluate(ws: Workspace, name: str, *, n_prompts: int = 40, n_samples: int | None = None,
             max_new_tokens: int = 120, seed: int = 0, temperature: float = 0.7, top_p: float = 0.9,
             steps: int | None = None, guidance: float | None = None,
             cond_samples: int = COND_SAMPLES, rerank: int = 1, vocoder: str | None = None) -> dict[str, Any]:
    """Evaluate a run; saved as ``eval.json`` in it. Image runs: see :func:`evaluate_images`;
    runs on audio clips (and vocoders): :mod:`aigc.audio_evaluation` (``vocoder``: the mel
    inverter, see :func:`aigc.audio_generation.choose_inverter`); runs on symbolic music:
    :mod:`aigc.music_evaluation`.

    ``cond_samples``: samples per asked value for conditional accuracy (0 skips it). ``rerank``
    above 1 also measures it for samples reranked by a classifier of the conditions, each the best
    of ``rerank`` draws (:mod:`aigc.rerank`; its classifier is fitted with another seed than the
    judge's, and still agrees with the judge more than an independent reader would).
    """
    spec = read_spec(Path(ws.get_run(name)["path"]))
    if spec.get("family") == "vocoder":
        from aigc.audio_evaluation import evaluate_vocoder

        if vocoder is not None:
            raise InvalidInput(f"run {name!r} is itself a vocoder: it is evaluated against Griffin-Lim, leave "
                               "--vocoder out")

        return evaluate_vocoder(ws, name, seed=seed)
    if spec.get("audio"):  # an image family on an audio dataset's mel images
        from aigc.audio_evaluation import evaluate_audio

        return evaluate_audio(ws, name, n_samples=n_samples or 500, seed=seed, steps=steps, guidance=guidance,
                              vocoder=vocoder)
    if vocoder is not None:
        raise InvalidInput(f"run {name!r} was not trained on audio clips: --vocoder applies to those runs only")
    if spec.get("music"):  # a text family on REMI tokens
        from aigc.music_evaluation import evaluate_music

        return evaluate_music(ws, name, n_samples=n_samples or 32, seed=seed, temperature=temperature, top_p=top_p,
                              max_new_tokens=max_new_tokens)
    if spec["modality"] == "image":
        return evaluate_images(ws, name, n_samples=n_samples or 500, seed=seed, steps=steps, guidance=guidance)
    check_candidates(rerank, "rerank")
    if spec.get("base"):
        return evaluate_adapted(ws, name, n_prompts=n_prompts, n_samples=n_samples or 32,
                                max_new_tokens=max_new_tokens, seed=seed, temperature=temperature, top_p=top_p,
                                cond_samples=cond_samples)
    if not isinstance(cond_samples, int) or cond_samples < 0:
        raise InvalidInput(f"cond_samples must be a whole number >= 0 (0 skips conditional accuracy), got {cond_samples!r}")
    n_samples = n_samples or 32
    gen = load(ws, name, safety=False)
    run_dir = Path(ws.get_run(name)["path"])
    spec = read_spec(run_dir)
    ds_dir = ws.dataset_path(spec["dataset"])
    cols = spec["cond_columns"]
    split = "test"
    records = read_text_split(ds_dir, "test")
    if not records:
        split, records = "val", read_text_split(ds_dir, "val")
    train_records = read_text_split(ds_dir, "train")
    train_texts = [r.text for r in train_records]
    sampling = dict(temperature=temperature, top_p=top_p, seed=seed)
    if guidance is not None:  # classifier-free guidance for every sample of the evaluation
        sampling["guidance"] = guidance

    result: dict[str, Any] = {"run": name, "split": split, "created_at": now(), "sampling": sampling}
    result["likelihood"] = _likelihood(gen, records, cols)

    # Continuations of held-out text: prompt = the start of a record, reference = its rest.
    candidates = _prompt_pairs(records, n_prompts)
    # A held-out prompt with a character the run never saw (a char-level run on open-vocabulary
    # text) cannot be asked: it is left out and counted, not a failed evaluation.
    pairs = [p for p in candidates if _askable(gen, p[0])]
    hyps, refs = [], []
    for prompt, reference, cond in pairs:
        budget = min(max_new_tokens * 2, len(gen.tokenizer.encode(reference)) + 8)
        hyps.append(gen.generate(prompt, cond=cond, max_new_tokens=budget, **sampling)[0][: len(reference)])
        refs.append(reference)
    result["continuation"] = {
        "n": len(pairs),
        "skipped_unseen_characters": len(candidates) - len(pairs),
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
    result["safety"] = safety_report(ws, samples, run_dir, train_texts)
    result["by_condition"] = by_condition
    if cols and cond_samples:
        result["conditional"] = conditional_report(gen, train_records, records, cols, samples=cond_samples,
                                                   max_new_tokens=max_new_tokens, **sampling)
        if rerank > 1:
            reranker = RerankedGenerator(gen, ConditionJudge.fit(train_records, cols, seed=1), rerank)
            result["conditional_reranked"] = {"candidates": rerank, **conditional_report(
                reranker, train_records, records, cols, samples=cond_samples, max_new_tokens=max_new_tokens,
                **sampling)}
    write_json_atomic(run_dir / "eval.json", result)
    row = ws.get_run(name)
    ws.update_run(name, summary={**row["summary"], "eval": _headline(result)})
    return result


def _askable(gen, prompt: str) -> bool:
    try:
        gen.prompt_ids(prompt)
    except InvalidInput:
        return False
    return True


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


def own_token_values(gen, column: str, records: list[TextRecord]) -> list[str]:
    """The column's values in ``records`` that have a control token of their own in ``gen``'s run,
    most frequent first (ties by value); values folded into the column's ``other`` token are left out."""
    counts: dict[str, int] = {}
    for r in records:
        counts[r.cond[column]] = counts.get(r.cond[column], 0) + 1
    own = [v for v in counts if gen.knows_value(column, v)]
    return sorted(own, key=lambda v: (-counts[v], v))


def conditional_report(gen, train: list[TextRecord], heldout: list[TextRecord], cols: list[str], *,
                       samples: int = COND_SAMPLES, max_values: int = COND_VALUES, max_new_tokens: int = 120,
                       seed: int = 0, **sampling) -> dict[str, Any]:
    """Conditional accuracy per condition column (see the module docstring); JSON-ready.

    Each column is judged alone: samples are generated with that column's condition only, ``samples``
    for each of its ``max_values`` most frequent train values that have a token of their own, one seed
    per value. A column with fewer than two such values has no accuracy (``"skipped"`` says why).
    """
    own = {c: set(own_token_values(gen, c, train)) for c in cols}
    labels = {c: [r.cond[c] if r.cond[c] in own[c] else FOLDED for r in train] for c in cols}
    judged = [c for c in cols if len(set(labels[c])) >= 2 and len(own[c]) >= 2]
    classifiers = tm.fit_condition_classifiers([r.text for r in train], {c: labels[c] for c in judged}, seed=0)
    columns: dict[str, Any] = {}
    for col in cols:
        if col not in judged:
            columns[col] = {"skipped": "fewer than two values with a token of their own in the train split"}
            continue
        clf = classifiers[col]
        held = [r.cond[col] if r.cond[col] in own[col] else FOLDED for r in heldout]
        ceiling = tm.condition_accuracy(clf, [r.text for r in heldout], held) if heldout else None
        asked_values = own_token_values(gen, col, train)[:max_values]
        texts, asked, per_value = [], [], {}
        for i, value in enumerate(asked_values):
            out = gen.generate("", n=samples, cond={col: value}, max_new_tokens=max_new_tokens,
                               seed=seed + i, **sampling)
            per_value[value] = tm.condition_accuracy(clf, out, [value] * len(out))
            texts.extend(out)
            asked.extend([value] * len(out))
        columns[col] = {
            "accuracy": tm.condition_accuracy(clf, texts, asked),
            "ceiling": ceiling,
            "chance": tm.majority_share(asked),
            "values": len(asked_values),
            "samples": len(texts),
            "per_value": per_value,
            "example": {"value": asked_values[0], "text": texts[0][:160]},
        }
    return {"samples_per_value": samples, "max_values": max_values, "heldout_records": len(heldout),
            "columns": columns}


def evaluate_adapted(ws: Workspace, name: str, *, n_prompts: int = 40, n_samples: int = 32,
                     max_new_tokens: int = 120, seed: int = 0, temperature: float = 0.7, top_p: float = 0.9,
                     cond_samples: int = COND_SAMPLES, side_by_side: int = 4) -> dict[str, Any]:
    """Evaluate a run adapted from a pretrained base: the held-out responses' likelihood (the
    instruction given, not scored), BLEU/chrF of its answers to held-out instructions against the
    records' texts, diversity, memorization, conditional accuracy as for every text run, and a
    side-by-side of the base's and the run's answers to the same instructions."""
    from aigc import adapted
    from aigc.pretrained.adapt import build_blocks

    gen = load(ws, name, safety=False)
    run_dir = Path(ws.get_run(name)["path"])
    spec = read_spec(run_dir)
    cols = spec["cond_columns"]
    sampling = dict(temperature=temperature, top_p=top_p, seed=seed)
    result: dict[str, Any] = {"run": name, "base": spec["base"], "created_at": now(), "sampling": sampling}
    if spec.get("dataset"):
        ds_dir = ws.dataset_path(spec["dataset"])
        split = "test"
        records = read_text_split(ds_dir, "test")
        if not records:
            split, records = "val", read_text_split(ds_dir, "val")
        train_records = read_text_split(ds_dir, "train")
        chats = adapted.records_chats(spec, records)
    else:  # a chat file: its held-out conversations
        split, records, train_records = "val", [], []
        chats = adapted.chats_of(ws, spec, run_dir)[1]
    result["split"] = split
    ids, labels = build_blocks(gen.hf_tokenizer, chats, adapted.AdaptConfig(**spec["adapt"]).block_size)
    total, count = nll_sum(gen.model, ids[:, :-1], labels[:, 1:], batch_size=8)
    chars = sum(len(m["content"]) for c in chats for m in c if m["role"] == "assistant")
    result["likelihood"] = {"nll_per_token": total / max(1, count), "perplexity": math.exp(min(50.0, total / max(1, count))),
                            "bits_per_char": total / math.log(2) / max(1, chars), "tokens": count, "chars": chars,
                            "scored": "responses"}
    # Answers to held-out instructions against the held-out answers
    step = max(1, len(chats) // n_prompts)
    picked = chats[::step][:n_prompts]
    hyps, refs = [], []
    for chat in picked:
        group_msgs = chat[:-1]
        reference = chat[-1]["content"]
        hyps.append(_answer(gen, group_msgs, max_new_tokens, sampling))
        refs.append(reference)
    result["continuation"] = {"n": len(picked), "bleu": tm.bleu(hyps, refs) if picked else None,
                              "chrf": tm.chrf(hyps, refs) if picked else None,
                              "example": {"prompt": picked[0][-2]["content"], "reference": refs[0],
                                          "generated": hyps[0]} if picked else None}
    samples = hyps[:n_samples] if hyps else []
    result["diversity"] = {"n_samples": len(samples), "distinct_1": tm.distinct_n(samples, 1),
                           "distinct_2": tm.distinct_n(samples, 2), "distinct_3": tm.distinct_n(samples, 3),
                           "self_bleu": tm.self_bleu(samples)}
    result["memorization"] = tm.memorization(samples, [r.text for r in train_records], span=50)
    result["safety"] = safety_report(ws, samples, run_dir, [r.text for r in train_records])
    if cols and cond_samples and train_records:
        result["conditional"] = conditional_report(gen, train_records, records, cols, samples=cond_samples,
                                                   max_new_tokens=max_new_tokens, **sampling)
    if side_by_side:
        base = adapted.base_generator(ws, spec["base"], spec["data"].get("template"), cols)
        result["side_by_side"] = [
            {"instruction": chat[-2]["content"],
             "base": _answer(base, chat[:-1], max_new_tokens, sampling),
             "adapted": hyps[i] if i < len(hyps) else _answer(gen, chat[:-1], max_new_tokens, sampling),
             "reference": chat[-1]["content"]}
            for i, chat in enumerate(picked[:side_by_side])]
    write_json_atomic(run_dir / "eval.json", result)
    row = ws.get_run(name)
    ws.update_run(name, summary={**row["summary"], "eval": _headline(result)})
    return result


def _answer(gen, messages, max_new_tokens: int, sampling: dict[str, Any]) -> str:
    """One answer of a chat generator to a conversation (``messages`` ending with a user turn)."""
    import torch

    from aigc.decoding import Sampling, run

    group = gen.prepare("", 1, None, Sampling(max_new_tokens=max_new_tokens, **sampling), messages=messages)
    with torch.inference_mode():
        return "".join(c.text for c in run(gen.runner(group.width), group))


def _headline(result: dict[str, Any]) -> dict[str, Any]:
    accuracies = [c["accuracy"] for c in result.get("conditional", {}).get("columns", {}).values() if "accuracy" in c]
    return {
        "bits_per_char": result["likelihood"]["bits_per_char"],
        "perplexity": result["likelihood"]["perplexity"],
        "bleu": result["continuation"]["bleu"],
        "chrf": result["continuation"]["chrf"],
        "distinct_2": result["diversity"]["distinct_2"],
        "self_bleu": result["diversity"]["self_bleu"],
        "memorized": result["memorization"].get("rate"),
        "copied_over_threshold": result.get("safety", {}).get("copy", {}).get("over_threshold"),
        "conditional_accuracy_min": min(accuracies) if accuracies else None,  # the worst column's
    }


def evaluate_images(ws: Workspace, name: str, *, n_samples: int = 500, seed: int = 0,
                    steps: int | None = None, guidance: float | None = None) -> dict[str, Any]:
    """FID / KID / precision / recall in a domain classifier's features, conditional accuracy,
    reconstruction PSNR/SSIM and test loss where the family has them, sampling speed.

    The classifier is trained once per dataset on its train split and kept under
    ``classifiers/<dataset>/`` in the workspace; its test accuracy is reported. The train-vs-test
    FID of the same number of real images is the floor a perfect generator would reach.
    """
    import time

    import torch

    from aigc.data.images import read_image_split, to_tensor
    from aigc.image_generation import to_uint8
    from aigc.data.images import write_grid
    from aigc.metrics import image as im
    from aigc.provenance.labels import new_produce_id
    from aigc.safety.guard import guard_for

    gen = load(ws, name, safety=False)
    run_dir = Path(ws.get_run(name)["path"])
    spec = read_spec(run_dir)
    ds_dir = ws.dataset_path(spec["dataset"])
    split = "test"
    real = read_image_split(ds_dir, "test")
    if len(real.images) == 0:
        split, real = "val", read_image_split(ds_dir, "val")
    train = read_image_split(ds_dir, "train")
    real_x = to_tensor(real.images)
    n = min(n_samples, len(real_x))
    pick = torch.linspace(0, len(real_x) - 1, n).long()  # an evenly spaced, deterministic subset
    real_x = real_x[pick]
    if real.labels is not None:  # features of a classifier of the dataset's classes
        real_y = torch.from_numpy(real.labels).long()[pick]
        classifier, info = im.load_or_train_classifier(
            ws.root / "classifiers", spec["dataset"], to_tensor(train.images),
            torch.from_numpy(train.labels).long(), real_x, real_y, num_classes=len(train.classes), seed=0)
        features = "class"
    else:  # no classes: a self-supervised extractor that tells how an image is rotated
        real_y = None
        sub = torch.linspace(0, len(train.images) - 1, min(len(train.images), ROTATION_TRAIN_IMAGES)).long()
        rot_x, rot_y = im.rotations(to_tensor(train.images[sub.numpy()]))
        test_x, test_y = im.rotations(real_x)
        classifier, info = im.load_or_train_classifier(
            ws.root / "classifiers", spec["dataset"] + ".rotation", rot_x, rot_y, test_x, test_y,
            num_classes=4, seed=0)
        features = "rotation"

    # Samples: every class in turn (or unconditional), batches of 100, one seed per batch.
    t0 = time.perf_counter()
    fakes, asked = [], []
    options = {k: v for k, v in (("steps", steps), ("guidance", guidance)) if v is not None}
    for i, start in enumerate(range(0, n, 100)):
        k = min(100, n - start)
        labels = gen.label_ids(k, None)
        if labels is not None:
            labels = (labels + start) % len(gen.classes)
            fakes.append(gen.model.sample(k, condition=labels, generator=torch.Generator().manual_seed(seed + i),
                                          **gen._options(gen.model.sample, options)))
            asked.append(labels.cpu())
        else:
            fakes.append(gen.sample(k, seed=seed + i, **options))
    sec_per_1000 = (time.perf_counter() - t0) / n * 1000
    fake_x = torch.cat(fakes).cpu()
    fake_y = torch.cat(asked) if asked else None
    report = im.image_report(classifier, real_x, fake_x, fake_y, real_y, seed=seed)
    train_pick = torch.linspace(0, len(train.images) - 1, n).long()
    floor = im.image_report(classifier, real_x, to_tensor(train.images[train_pick.numpy()]), seed=seed)["fid"]

    result: dict[str, Any] = {
        "run": name, "modality": "image", "split": split, "created_at": now(), "seed": seed, "n": n,
        "classifier": {"features": features, "test_accuracy": info.get("accuracy"),
                       "trained_now": info.get("trained")},
        **report, "fid_floor_train_vs_test": floor, "seconds_per_1000_samples": sec_per_1000,
    }
    model = gen.model
    model_y = real_y if gen.classes else None  # the labels a conditional model is given
    with torch.no_grad():
        if hasattr(model, "reconstruct"):
            takes_labels = "labels" in inspect.signature(model.reconstruct).parameters  # a conditional vae
            recon = []
            for i in range(0, n, 100):
                x = real_x[i : i + 100].to(gen.device)
                y = model_y[i : i + 100].to(gen.device) if model_y is not None else None
                recon.append((model.reconstruct(x, y) if takes_labels else model.reconstruct(x)).cpu())
            recon = torch.cat(recon)
            result["psnr"] = im.psnr(recon, real_x)
            result["ssim"] = im.ssim(recon, real_x)
        if hasattr(model, "encode_indices"):
            codes = torch.cat([model.encode_indices(real_x[i : i + 100].to(gen.device)) for i in range(0, n, 100)])
            result["codebook_usage"] = codes.unique().numel() / model.codebook_size
        losses = model.validation_losses(real_x.to(gen.device),
                                         model_y.to(gen.device) if model_y is not None else None)
        if "loss" in losses:
            result["test_loss"] = losses["loss"]
    guard = guard_for(ws)  # the samples are generated images: labelled (and marked) like the engine's
    write_grid(run_dir / "eval_samples.png", list(to_uint8(fake_x[:64])), label=guard.label(new_produce_id()),
               mark=bool(guard.policy.labels.get("image_mark")))
    write_json_atomic(run_dir / "eval.json", result)
    row = ws.get_run(name)
    keys = ("fid", "kid_mean", "precision", "recall", "conditional_accuracy", "psnr", "test_loss")
    ws.update_run(name, summary={**row["summary"], "eval": {k: result[k] for k in keys if k in result}})
    return result
