"""Synthetic text data sets from a text run, and the report that says how faithful, useful and
private they are.

:func:`synthesize_text` draws records with their conditions (the train split's joint distribution
of condition values, or the values asked), drops every record whose longest span copied from the
training text reaches the copy guard's threshold (issue 7's index, stored with the run) and draws
again, and writes labelled JSONL in one atomic step. :func:`text_report` scores a synthetic set
against the real splits: fidelity (lengths, n-grams, condition shares), utility (a classifier of
each condition trained on synthetic records and tested on real ones, beside the same trained on
real records) and privacy (exact copies, copied spans, PII replayed from train), each privacy
figure next to what the real test split itself scores. ``sections`` is the report's HTML shape
(:mod:`aigc.synthesis.report_html`).

Orchestration: knows runs, datasets and the safety policy; no surface imports it back.
"""

from __future__ import annotations

import json
import math
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from aigc.data.clean import clean_text
from aigc.data.dataset import TextRecord, read_text_split
from aigc.errors import InvalidInput
from aigc.metrics import text as tm
from aigc.runs import load, read_spec
from aigc.workspace import Workspace

BATCH = 64  # records generated per call (one seed each)
MAX_DRAWS_PER_RECORD = 10  # give up (and write nothing) past this many draws per record asked
REPORT_RECORDS = 5000  # each side of a report is scored on at most this many records, evenly spaced
TOP_UNITS = 20  # the most frequent units whose overlap and shares the report shows
LENGTH_BINS = 20
LENGTH = "aigc:length"  # the record length's column among the condition columns (no column is named so)


# -- synthesis ---------------------------------------------------------------------------------------


def synthesize_text(ws: Workspace, run: str, n: int, out: Path, *, conditions: dict | None = None, seed: int = 0,
                    max_new_tokens: int | None = None, temperature: float = 1.0, top_p: float = 0.95,
                    progress: Callable[[int, int], None] | None = None) -> dict[str, Any]:
    """Write ``n`` synthetic records of text run ``run`` to ``out`` (JSONL, each record
    ``{"text", <condition columns>..., "aigc_label"}``); returns a summary.

    Without ``conditions`` the records' conditions follow the train split's joint distribution (each
    combination's share, rounded by largest remainder); with them every record has them (columns not
    given follow the train records that have the asked values). A record whose longest span copied
    from the training text reaches the policy's ``copy_guard.threshold``, or that is empty, is
    dropped and drawn again. ``max_new_tokens`` defaults to 1.2 x the 99th percentile of the train
    records' token lengths. Deterministic for a seed. :func:`aigc.batch.synthesize_shards` makes the
    same kind of file shard by shard, from the same :func:`text_job` and :func:`fill_records`.
    """
    from aigc.provenance.labels import new_produce_id, write_jsonl
    from aigc.safety.guard import guard_for

    job = text_job(ws, run, n, out, conditions=conditions, seed=seed, max_new_tokens=max_new_tokens,
                   temperature=temperature, top_p=top_p)
    start = time.perf_counter()
    texts, counts = fill_records(job.gen, job.combos, job.copy_index, job.threshold, seed=seed, sampling=job.sampling,
                                 what=f"run {run!r}", progress=progress)
    records = [{"text": t, **combo} for t, combo in zip(texts, job.combos)]
    label = guard_for(ws).label(new_produce_id())
    write_jsonl(out, records, lambda i, _r: {**label, "ProduceID": f"{label['ProduceID']}-{i:06d}"})
    seconds = time.perf_counter() - start
    return {"run": run, "path": str(out), **text_summary(job, records, counts, seed), "seconds": round(seconds, 3),
            "records_per_s": round(n / max(seconds, 1e-9), 2)}


@dataclass
class TextJob:
    """A checked text synthesis: the model, each record's conditions, how to sample, the copy guard."""

    gen: Any  # aigc.generation.TextGenerator, loaded without the safety rails (the copy guard is ours)
    combos: list[dict[str, str]]  # record i's condition values
    sampling: dict[str, Any]  # max_new_tokens, temperature, top_p
    copy_index: Any  # the run's copy index (None: nothing to compare with)
    threshold: int  # a record copying a span this long from the training text is dropped
    cols: list[str]  # the run's condition columns


def text_job(ws: Workspace, run: str, n: int, out: Path, *, conditions: dict | None, seed: int,
             max_new_tokens: int | None, temperature: float, top_p: float) -> TextJob:
    """Everything checked before a record is drawn, and the ``n`` records' conditions drawn with
    ``seed`` (see :func:`synthesize_text`); builds the run's copy index once if it has none."""
    from aigc.generation import TextGenerator

    if isinstance(n, bool) or not isinstance(n, int) or not 1 <= n <= 10_000_000:
        raise InvalidInput(f"n must be a whole number of records from 1 to 10,000,000, got {n!r}")
    out = Path(out)
    if out.suffix.lower() not in (".jsonl", ".ndjson"):
        raise InvalidInput(f"text runs synthesize JSONL records: name the output .jsonl, not {out.name!r}")
    if not out.parent.is_dir() or out.is_dir():
        raise InvalidInput(f"cannot write {out}: its folder must exist and the path must not be a folder")
    gen = load(ws, run, safety=False)
    if not isinstance(gen, TextGenerator):
        raise InvalidInput(f"run {run!r} is not a text run: synthesize images with synthesize_images, "
                           "tables with aigc.synthesis.synthesize")
    run_dir, train = _run_dir_and_train(ws, run)
    cols = gen.cond_columns
    asked = _check_conditions(gen, conditions)
    mnt = max_new_tokens if max_new_tokens is not None else _default_max_tokens(gen, train)
    combos = _draw_combos([r.cond for r in train], cols, asked, n, np.random.default_rng(seed))
    index, threshold = copy_guard(ws, run_dir, train)
    return TextJob(gen, combos, {"max_new_tokens": mnt, "temperature": temperature, "top_p": top_p}, index,
                   threshold, list(cols))


def fill_records(gen, combos: list[dict[str, str]], index, threshold: int, *, seed: int, sampling: dict[str, Any],
                 what: str, progress: Callable[[int, int], None] | None = None) -> tuple[list[str], dict[str, int]]:
    """One text for each of ``combos``, in order, and the counts ``drawn``, ``dropped_copies`` and
    ``dropped_empty``. Records of one combination are generated together in batches of :data:`BATCH`
    seeded ``seed``, ``seed + 1``...; an empty text, or one whose longest span found in ``index``
    reaches ``threshold``, is dropped and drawn again. Past :data:`MAX_DRAWS_PER_RECORD` draws a record
    it fails (``what`` names who gave too few) rather than return fewer."""
    n = len(combos)
    texts: list[str | None] = [None] * n
    slots: dict[tuple, list[int]] = {}
    for i, combo in enumerate(combos):
        slots.setdefault(tuple(sorted(combo.items())), []).append(i)
    drawn = copies = empty = batch_no = done = 0
    limit = MAX_DRAWS_PER_RECORD * n + BATCH
    for key in sorted(slots):
        todo, at = slots[key], 0  # the records of this combination, the next one to fill
        while at < len(todo):
            if drawn >= limit:
                raise InvalidInput(
                    f"{what} gave only {done} usable records of {n} in {drawn} draws ({copies} copied "
                    f"{threshold}+ characters of training text, {empty} were empty): nothing was written; "
                    "sample with a higher temperature, or train the run on more data / for fewer steps")
            got = gen.generate("", n=min(BATCH, len(todo) - at), cond=dict(key) or None, seed=seed + batch_no,
                               **sampling)
            batch_no += 1
            for text in got:
                drawn += 1
                text = text.strip()
                if not text:
                    empty += 1
                elif index is not None and _copied(index, text, threshold):
                    copies += 1
                else:
                    texts[todo[at]] = text
                    at, done = at + 1, done + 1
                    if at == len(todo):
                        break
            if progress is not None:
                progress(done, n)
    return texts, {"drawn": drawn, "dropped_copies": copies, "dropped_empty": empty}


def text_summary(job: TextJob, records: list[dict], counts: dict[str, int], seed: int) -> dict[str, Any]:
    """What a synthetic text set holds and what it cost: records, draws and drops, conditions, sampling."""
    return {"n": len(records), "drawn": counts["drawn"], "kept": len(records),
            "dropped_copies": counts["dropped_copies"], "dropped_empty": counts["dropped_empty"],
            "copy_threshold": job.threshold,
            "conditions": {c: dict(Counter(r[c] for r in records).most_common()) for c in job.cols},
            "sampling": {"seed": seed, **{k: job.sampling[k] for k in ("temperature", "top_p", "max_new_tokens")}}}


def _run_dir_and_train(ws: Workspace, run: str) -> tuple[Path, list[TextRecord]]:
    run_dir = Path(ws.get_run(run)["path"])
    dataset = read_spec(run_dir).get("dataset")
    if not dataset or not ws.has_dataset(dataset):
        raise InvalidInput(f"run {run!r} has no dataset in this workspace ({dataset!r}): its synthetic records "
                           "cannot be drawn or judged against real ones; ingest the dataset again")
    return run_dir, read_text_split(ws.dataset_path(dataset), "train")


def _check_conditions(gen, conditions: dict | None) -> dict[str, str]:
    if conditions is None:
        return {}
    if not isinstance(conditions, dict) or not all(isinstance(v, str) for v in conditions.values()):
        raise InvalidInput(f"conditions must map condition columns to text values, got {conditions!r}")
    gen.context_ids("", conditions)  # an unknown column or value is refused here, naming the known ones
    return {k: clean_text(v, normalize=gen.normalize) for k, v in conditions.items()}  # as training cleaned them


def _default_max_tokens(gen, train: list[TextRecord]) -> int:
    texts = [r.text for r in _spaced(train, 2000)]
    if not texts:
        return 256
    lengths = [len(gen.tokenizer.encode(t)) for t in texts]
    return int(min(1024, max(16, math.ceil(np.percentile(lengths, 99) * 1.2) + 2)))


def _draw_combos(train_conds: list[dict[str, str]], cols: list[str], asked: dict[str, str], n: int,
                 rng: np.random.Generator) -> list[dict[str, str]]:
    """``n`` condition combinations in the train split's proportions (largest remainder), shuffled;
    the asked values override, the other columns following the train records that have them."""
    if not cols:
        return [{} for _ in range(n)]
    pool = [c for c in train_conds if all(c.get(k) == v for k, v in asked.items())] or train_conds
    counts = Counter(tuple(c.get(col, "") for col in cols) for c in pool)
    if not counts:
        return [dict(asked) for _ in range(n)]
    keys = sorted(counts, key=lambda k: (-counts[k], k))
    take = largest_remainder([counts[k] for k in keys], n)
    combos = [{**dict(zip(cols, k)), **asked} for k, t in zip(keys, take) for _ in range(t)]
    return [combos[i] for i in rng.permutation(n)]


def largest_remainder(weights: Sequence[float], n: int) -> list[int]:
    """``n`` split in proportion to ``weights``: the floors, then one more to the largest remainders
    (ties to the earlier weight), so the counts sum to ``n`` and each is within 1 of its share."""
    exact = np.asarray(weights, dtype=float) * n / float(np.sum(weights))
    take = np.floor(exact).astype(int)
    for i in np.argsort(-(exact - take), kind="stable")[: n - int(take.sum())]:
        take[i] += 1
    return take.tolist()


def copy_guard(ws: Workspace, run_dir: Path, train: list[TextRecord]):
    """(the run's copy index, the policy's threshold); a run trained before the copy guard gets
    its index built once, as :func:`aigc.runs.load` does."""
    from aigc.safety.policy import workspace_policy
    from aigc.safety.training import load_copy_index, write_copy_index

    index = load_copy_index(run_dir)
    if index is None and train:
        write_copy_index(run_dir, (r.text for r in train), ws)
        index = load_copy_index(run_dir)
    return index, int(workspace_policy(ws).copy_guard["threshold"])


def _span_length(index, text: str) -> int:
    span = index.longest(text)
    return 0 if span is None else span.length


def _copied(index, text: str, threshold: int) -> bool:
    """``text`` copies ``threshold`` characters in a row from the training text, or is itself a
    training record (or part of one) however short: found whole, as the report's exact-copy rate
    counts it (texts under the index's window are too short to be found)."""
    span = index.longest(text)
    return span is not None and (span.length >= threshold or not (text[:span.start] + text[span.end:]).strip())


# -- the report -------------------------------------------------------------------------------------


def text_report(ws: Workspace, run: str, synth_records: list[dict] | Path, *, seed: int = 0) -> dict[str, Any]:
    """Fidelity, utility and privacy of synthetic records of text run ``run`` (JSON-able; see the
    module docstring), with ``sections`` for the HTML page."""
    run_dir, train = _run_dir_and_train(ws, run)
    spec = read_spec(run_dir)
    cols = list(spec.get("cond_columns") or [])
    ds_dir = ws.dataset_path(spec["dataset"])
    split, real = "test", read_text_split(ds_dir, "test")
    if not real:
        split, real = "val", read_text_split(ds_dir, "val")
    synth = _spaced(read_records(synth_records, cols), REPORT_RECORDS)
    real = _spaced(real, REPORT_RECORDS)
    if not real:
        raise InvalidInput(f"dataset {spec['dataset']!r} has no test or val records to compare with: "
                           "ingest it again with a test split")
    report = {"run": run, "modality": "text", "split": split, "n_real": len(real), "n_synthetic": len(synth),
              "fidelity": fidelity(real, synth, cols), "utility": utility(train, real, synth, cols, seed=seed),
              "privacy": privacy(ws, run_dir, train, real, synth)}
    report["sections"] = _sections(report, cols)
    return report


def read_records(source: list[dict] | Path, cols: Sequence[str]) -> list[TextRecord]:
    """Synthetic records from a JSONL file or a list of dicts: ``text`` plus condition columns
    (top-level fields, or a ``cond`` object as in a dataset's splits)."""
    if isinstance(source, (str, Path)):
        path = Path(source)
        if not path.is_file():
            raise InvalidInput(f"no synthetic records at {path}: pass the JSONL that synthesize wrote")
        rows = []
        for lineno, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
            if line.strip():
                try:
                    rows.append(json.loads(line))
                except json.JSONDecodeError as e:
                    raise InvalidInput(f"{path}: line {lineno} is not JSON ({e.msg}): pass a JSONL file") from None
    else:
        rows, path = list(source), "the synthetic records"
    out = []
    for i, row in enumerate(rows, 1):
        if not isinstance(row, dict) or not isinstance(row.get("text"), str):
            raise InvalidInput(f"{path}: record {i} has no text field (got {str(row)[:60]!r}): "
                               'each record must be {"text": ..., <condition>: ...}')
        cond = row["cond"] if isinstance(row.get("cond"), dict) else row
        out.append(TextRecord(row["text"], {c: str(cond[c]) for c in cols if cond.get(c) is not None}))
    if not out:
        raise InvalidInput(f"{path} holds no records: synthesize some first")
    return out


def _spaced(items: list, k: int) -> list:
    """At most ``k`` items, evenly spaced: a deterministic subset."""
    return items if len(items) <= k else [items[i * len(items) // k] for i in range(k)]


# fidelity -------------------------------------------------------------------------------------------


def ngram_counts(texts: Sequence[str], n: int) -> Counter:
    """Counts of every n-gram of :func:`aigc.metrics.text.units` (words; one unit per CJK character)."""
    counts: Counter = Counter()
    for text in texts:
        u = tm.units(text)
        counts.update(tuple(u[i : i + n]) for i in range(len(u) - n + 1))
    return counts


def js_divergence(p: Counter, q: Counter) -> float:
    """Jensen-Shannon divergence (base 2: 0 = same distribution, 1 = disjoint) of two count tables."""
    sp, sq = sum(p.values()), sum(q.values())
    if not sp or not sq:
        return 1.0 if sp or sq else 0.0
    total = 0.0
    for k in set(p) | set(q):
        a, b = p[k] / sp, q[k] / sq
        m = (a + b) / 2
        total += (a * math.log2(a / m) if a else 0.0) + (b * math.log2(b / m) if b else 0.0)
    return min(1.0, max(0.0, total / 2))


def fidelity(real: list[TextRecord], synth: list[TextRecord], cols: Sequence[str]) -> dict[str, Any]:
    """Lengths (KSComplement), n-grams (distinct-n, Jensen-Shannon, top-unit overlap) and condition
    shares (TVComplement); KS and TV complements as metrics.table computes them for tables."""
    import pandas as pd

    from aigc.metrics.table import column_shapes

    rt, st = [r.text for r in real], [r.text for r in synth]
    rl, sl = np.array([len(t) for t in rt]), np.array([len(t) for t in st])

    def frame(records: list[TextRecord], lengths: np.ndarray):
        return pd.DataFrame({LENGTH: lengths.astype(float), **{c: [r.cond.get(c) for r in records] for c in cols}})

    shapes = column_shapes(frame(real, rl), frame(synth, sl), {LENGTH: "numerical", **{c: "categorical" for c in cols}})
    shapes = {k: (None if v is None or math.isnan(v) else float(v)) for k, v in shapes.items()}
    hi = max(1, int(np.percentile(np.concatenate([rl, sl]), 99)))
    edges = np.linspace(0, hi, LENGTH_BINS + 1)
    lengths = {"ks_complement": shapes[LENGTH],
               "real": _summary(rl), "synthetic": _summary(sl), "bins": edges.round(1).tolist(),
               "real_counts": np.histogram(rl.clip(max=hi), edges)[0].tolist(),
               "synthetic_counts": np.histogram(sl.clip(max=hi), edges)[0].tolist()}
    ngrams: dict[str, Any] = {}
    for n in (1, 2):
        rc, sc = ngram_counts(rt, n), ngram_counts(st, n)
        ngrams[f"distinct_{n}"] = {"real": tm.distinct_n(rt, n), "synthetic": tm.distinct_n(st, n)}
        ngrams[f"js_{n}"] = js_divergence(rc, sc)
        if n == 1:
            top_r, top_s = [k for k, _ in rc.most_common(TOP_UNITS)], [k for k, _ in sc.most_common(TOP_UNITS)]
            ngrams["top_overlap"] = len(set(top_r) & set(top_s)) / max(1, len(top_r))
            ngrams["top_units"] = [{"unit": k[0], "real": rc[k] / max(1, sum(rc.values())),
                                    "synthetic": sc[k] / max(1, sum(sc.values()))} for k in top_r]
    conditions = {}
    for c in cols:
        rv, sv = [r.cond.get(c, "") for r in real], [r.cond.get(c, "") for r in synth if c in r.cond]
        rs, ss = Counter(rv), Counter(sv)
        conditions[c] = {"tv_complement": shapes[c],
                         "real": {k: v / len(rv) for k, v in rs.most_common()},
                         "synthetic": {k: v / max(1, len(sv)) for k, v in ss.most_common()}}
    return {"length_chars": lengths, "ngrams": ngrams, "conditions": conditions}


def _summary(x: np.ndarray) -> dict[str, float]:
    return {"mean": float(x.mean()), "median": float(np.median(x)), "p95": float(np.percentile(x, 95))}


# utility --------------------------------------------------------------------------------------------


def utility(train: list[TextRecord], real: list[TextRecord], synth: list[TextRecord], cols: Sequence[str], *,
            seed: int = 0) -> dict[str, Any]:
    """Per condition column: a classifier of the column from text (metrics.text's char n-gram TF-IDF +
    logistic regression) trained on the synthetic records and tested on the real ones (TSTR), beside
    the same trained on as many real train records (TRTR)."""
    out: dict[str, Any] = {}
    test_x = [r.text for r in real]
    for c in cols:
        labelled = [r for r in synth if c in r.cond]
        test_y = [r.cond.get(c, "") for r in real]
        if len({r.cond[c] for r in labelled}) < 2:
            out[c] = {"skipped": "the synthetic records hold fewer than two values of this column"}
            continue
        base = _spaced(train, len(labelled))
        out[c] = {"tstr": _fit_score(labelled, c, test_x, test_y, seed),
                  "trtr": _fit_score(base, c, test_x, test_y, seed),
                  "chance": tm.majority_share(test_y), "n_train": len(labelled), "n_train_real": len(base),
                  "n_test": len(real)}
    return out


def _fit_score(records: list[TextRecord], col: str, test_x: list[str], test_y: list[str], seed: int):
    from sklearn.metrics import f1_score

    labels = [r.cond.get(col, "") for r in records]
    if len(set(labels)) < 2:
        return None
    try:
        clf = tm.fit_condition_classifiers([r.text for r in records], {col: labels}, seed=seed)[col]
    except ValueError:  # scikit-learn: no n-gram appears twice (a handful of one-word texts)
        return None
    pred = tm.classify(clf, test_x)
    return {"accuracy": float(np.mean([p == y for p, y in zip(pred, test_y)])),
            "f1_macro": float(f1_score(test_y, pred, average="macro", labels=sorted(set(test_y)), zero_division=0))}


# privacy --------------------------------------------------------------------------------------------


def privacy(ws: Workspace, run_dir: Path, train: list[TextRecord], real: list[TextRecord],
            synth: list[TextRecord]) -> dict[str, Any]:
    """Exact copies, copied spans (the copy guard) and PII replayed from train, for the synthetic
    records and, as the reference, for the real test records."""
    from aigc.safety.policy import workspace_policy

    index, threshold = copy_guard(ws, run_dir, train)
    seen = {r.text.strip() for r in train}
    joined = "\n".join(r.text for r in train)
    scanner = workspace_policy(ws).scanner(ws)

    def measure(records: list[TextRecord]) -> dict[str, Any]:
        spans = np.array([_span_length(index, r.text) if index is not None else 0 for r in records])
        found, replayed, with_replay = Counter(), Counter(), 0
        for r in records:
            hits = [e for e in scanner.scan(r.text) if e.text]
            found.update(e.type for e in hits)
            again = [e for e in hits if e.text in joined]
            replayed.update(e.type for e in again)
            with_replay += bool(again)
        return spans, {
            "exact_copy_rate": float(np.mean([r.text.strip() in seen for r in records])),
            "copy_span": {"mean": float(spans.mean()), "p95": float(np.percentile(spans, 95)),
                          "max": int(spans.max()), "over_threshold": float((spans >= threshold).mean())},
            "pii": {"entities": dict(found.most_common()), "replayed": dict(replayed.most_common()),
                    "replayed_share": sum(replayed.values()) / max(1, sum(found.values())),
                    "records_with_replay": with_replay / len(records)}}

    (s_spans, s), (r_spans, r) = measure(synth), measure(real)
    edges = np.linspace(0, max(threshold, s_spans.max(), r_spans.max()) + 1, 11).round(1)
    return {"copy_threshold": threshold, "copy_window": None if index is None else index.window,
            "synthetic": s, "reference": r,
            "copy_span_histogram": {"bins": edges.tolist(), "synthetic": np.histogram(s_spans, edges)[0].tolist(),
                                    "reference": np.histogram(r_spans, edges)[0].tolist()}}


# sections (the HTML's shape) ----------------------------------------------------------------------


def _sections(report: dict[str, Any], cols: Sequence[str]) -> list[dict[str, Any]]:
    fid, util, priv = report["fidelity"], report["utility"], report["privacy"]
    lengths, ngrams = fid["length_chars"], fid["ngrams"]
    sections = [
        {"title": "Fidelity: length in characters",
         "table": [["measure", "real", "synthetic"],
                   *[[k, fmt(lengths["real"][k]), fmt(lengths["synthetic"][k])] for k in ("mean", "median", "p95")],
                   ["KS complement", fmt(lengths["ks_complement"]), ""]],
         "histograms": [{"title": "characters per record", "bins": lengths["bins"],
                         "series": {"real": lengths["real_counts"], "synthetic": lengths["synthetic_counts"]}}]},
        {"title": "Fidelity: n-grams (words; one unit per CJK character)",
         "table": [["measure", "real", "synthetic"],
                   *[[f"distinct-{n}", fmt(ngrams[f"distinct_{n}"]["real"]), fmt(ngrams[f"distinct_{n}"]["synthetic"])]
                     for n in (1, 2)],
                   ["Jensen-Shannon, unigrams (0 = same)", fmt(ngrams["js_1"]), ""],
                   ["Jensen-Shannon, bigrams", fmt(ngrams["js_2"]), ""],
                   [f"top-{TOP_UNITS} unit overlap", fmt(ngrams["top_overlap"]), ""]],
         "histograms": [{"title": f"share of the {TOP_UNITS} most frequent real units",
                         "bins": [u["unit"] for u in ngrams["top_units"]],
                         "series": {s: [u[s] for u in ngrams["top_units"]] for s in ("real", "synthetic")}}]},
    ]
    for c in cols:
        shares = fid["conditions"][c]
        values = list(dict.fromkeys([*shares["real"], *shares["synthetic"]]))
        sections.append({"title": f"Fidelity: condition {c}",
                         "table": [["measure", "value"], ["TV complement", fmt(shares["tv_complement"])]],
                         "histograms": [{"title": f"share of each {c}", "bins": values,
                                         "series": {s: [shares[s].get(v, 0.0) for v in values]
                                                    for s in ("real", "synthetic")}}]})
    rows = [["column", "TSTR accuracy", "TSTR macro-F1", "TRTR accuracy", "TRTR macro-F1", "chance"]]
    for c, u in util.items():
        if "skipped" in u:
            rows.append([c, u["skipped"], "", "", "", ""])
            continue
        t, r = u["tstr"] or {}, u["trtr"] or {}
        rows.append([c, fmt(t.get("accuracy")), fmt(t.get("f1_macro")), fmt(r.get("accuracy")),
                     fmt(r.get("f1_macro")), fmt(u["chance"])])
    sections.append({"title": "Utility: condition classifiers trained on synthetic, tested on real", "table": rows})
    hist = priv["copy_span_histogram"]
    measures = (("exact copies of a train record", "exact_copy_rate", None),
                (f"copied span >= {priv['copy_threshold']} chars", "copy_span", "over_threshold"),
                ("longest copied span, p95", "copy_span", "p95"),
                ("PII entities replayed from train", "pii", "replayed_share"),
                ("records with replayed PII", "pii", "records_with_replay"))
    sections.append({
        "title": "Privacy (reference: the real test split)",
        "table": [["measure", "synthetic", "real test"],
                  *[[name, *(fmt(priv[side][a] if b is None else priv[side][a][b]) for side in ("synthetic", "reference"))]
                    for name, a, b in measures]],
        "histograms": [{"title": "longest span copied from train (characters; 0 = none found)", "bins": hist["bins"],
                        "series": {"synthetic": hist["synthetic"], "real test": hist["reference"]}}]})
    return sections


def fmt(x: Any) -> str:
    """A report figure as table text: 4 significant digits, '-' for none."""
    if x is None:
        return "-"
    return f"{x:.4g}" if isinstance(x, float) else str(x)
