"""PII recognition on the synthetic test split, aigc's scanner and Presidio side by side (issue 13).

Reads ``tests/data/pii_test.jsonl`` (made by scripts/make_pii_data.py; split by template, so no
test template was seen while the recognizers were written against the dev split) and runs, in
the same invocation, on every record:

* **aigc**: ``aigc.safety.pii.Scanner()`` with its defaults (threshold 0.5, no name list), and
  ``Scanner.redact(text, "replace")``.
* **Presidio 2.2.366**: ``AnalyzerEngine`` over ``NoOpNlpEngine`` (no spaCy model, nothing
  downloaded) with the predefined pattern recognizers, registered for ``en`` and again for
  ``zh`` so Chinese text is scanned too; ``PhoneRecognizer`` with its default regions plus CN;
  default score threshold (0). tldextract is pinned to its bundled public-suffix snapshot.
  Redaction: presidio_anonymizer's default ``replace`` (``<ENTITY_TYPE>``). Types are mapped:
  EMAIL_ADDRESS -> EMAIL, IP_ADDRESS, URL, CREDIT_CARD -> BANK_CARD, PHONE_NUMBER -> CN_MOBILE or
  CN_LANDLINE (it matches a gold span of either; unmatched, by its digits: a leading 1 after
  +86 is a mobile), PERSON; other Presidio types are not counted. Types Presidio has no
  recognizer for show "—".

Measured:

* per entity type (PERSON and ADDRESS also per lang): precision, recall and F1 under the match
  rule **same type and character IoU >= 0.5**, one prediction per gold span (greedy by IoU);
  exact-span recall (a prediction of the same type with the same start and end); support.
* hard negatives: the share of each kind overlapped by any counted prediction.
* leak rate after redaction: a gold value leaks when its normalised letters and digits
  (NFKC, case-folded, traditional -> simplified, everything else dropped) occur in the
  equally normalised redacted text more often than in the record's text outside gold spans.
* streams (if ``aigc.safety.rails.OutputRail`` exists): every record through a fresh rail
  (default policy, this scanner) fed in chunks of 1..8 characters, and a sample of records
  split in two at every position; a gold value visible in the concatenated released text (the
  same test) is a stream leak. Reported also: the leaks beyond those of whole-text redaction
  (a value the scanner misses in the whole text leaks from every stream; one it finds there
  but that leaks from a stream is the rail's own fault).
* latency of one scan per record, p50 / p95 (after a warm-up pass).
* a second table, precision on real text: entities found per 1,000 records, by type, on texts with
  no planted PII, for both systems: the project's own product copy (src/aigc/resources/shop_copy.csv,
  column ``text``, 3,600 records, Chinese and English: none holds personal data, so every hit is a
  false positive), a seeded sample of ``--real-sample`` Chinese shopping reviews
  (../shared/data/cn-shopping-reviews) and the first ``--real-sample`` non-empty lines of
  ../shared/data/tinyshakespeare. Reviews are real people's text and may hold real phone numbers,
  links or names of authors and actors, and Shakespeare's characters are names: those hits need a
  person's judgement, so the first few of each type are kept in the JSON (``--examples`` prints
  them). A corpus whose file is absent is skipped with a note.

Targets (issue 13): resident ID, USCC, bank card P and R >= 0.99; mobile P >= 0.97, R >= 0.99;
e-mail and IP recall >= 0.99; Chinese names recall >= 0.80 at precision >= 0.70; addresses
recall >= 0.85; zero stream leaks.

    python benchmarks/pii.py [--split test|dev] [--stream-sample 100] [--real-sample 5000]
                             [--examples 0] [--out PATH]

Prints two tables and writes benchmarks/results/pii.json (``pii_dev.json`` for the dev split).
"""

from __future__ import annotations

import argparse
import collections
import csv
import json
import random
import re
import sys
import time
import unicodedata
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import RESULTS, provenance  # noqa: E402

HERE = Path(__file__).resolve().parent
DATA = HERE.parent / "tests" / "data"
SHOP_COPY = HERE.parent / "src" / "aigc" / "resources" / "shop_copy.csv"
SHARED = HERE.parents[1] / "shared" / "data"
REVIEWS = SHARED / "cn-shopping-reviews" / "online_shopping_10_cats.csv"
SHAKESPEARE = SHARED / "tinyshakespeare" / "input.txt"
REAL_EXAMPLES = 8  # hits kept per corpus, system and type for a person to judge
IOU = 0.5
ROWS = ("CN_RESIDENT_ID", "CN_MOBILE", "CN_LANDLINE", "BANK_CARD", "CN_USCC", "PASSPORT",
        "CN_HK_MACAU_PERMIT", "CN_LICENSE_PLATE", "EMAIL", "IP_ADDRESS", "URL",
        "PERSON", "PERSON/zh", "PERSON/en", "ADDRESS", "ADDRESS/zh", "ADDRESS/en")
# row -> (precision at least, recall at least); None: no target on that figure
TARGETS = {"CN_RESIDENT_ID": (0.99, 0.99), "CN_USCC": (0.99, 0.99), "BANK_CARD": (0.99, 0.99),
           "CN_MOBILE": (0.97, 0.99), "EMAIL": (None, 0.99), "IP_ADDRESS": (None, 0.99),
           "PERSON/zh": (0.70, 0.80), "ADDRESS": (None, 0.85)}
PRESIDIO_TYPES = {"EMAIL_ADDRESS": "EMAIL", "IP_ADDRESS": "IP_ADDRESS", "URL": "URL",
                  "CREDIT_CARD": "BANK_CARD", "PHONE_NUMBER": "PHONE", "PERSON": "PERSON"}
PHONE = ("CN_MOBILE", "CN_LANDLINE")  # what Presidio's PHONE_NUMBER may match
CJK = re.compile(r"[\u3400-\u9fff]")


def load(split: str) -> list[dict]:
    path = DATA / f"pii_{split}.jsonl"
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


# --------------------------------------------------------------------------------------------
# The two systems: scan(text, lang) -> [(type, start, end)], redact(text, lang) -> str
# --------------------------------------------------------------------------------------------

class Aigc:
    name = "aigc"

    def __init__(self):
        from aigc.safety.pii import Scanner

        self.scanner = Scanner()
        self.supported = set(ROWS)

    def scan(self, text: str, lang: str) -> list[tuple[str, int, int]]:
        return [(e.type, e.start, e.end) for e in self.scanner.scan(text)]

    def redact(self, text: str, lang: str) -> str:
        return self.scanner.redact(text, "replace").text


class Presidio:
    name = "presidio"

    def __init__(self):
        import tldextract.tldextract as tld

        # The e-mail recognizer asks tldextract for the public suffix list, which by default it
        # downloads: the bundled snapshot is used instead, nothing leaves the machine.
        tld.TLD_EXTRACTOR = tld.TLDExtract(suffix_list_urls=(), cache_dir=None)
        from presidio_analyzer import AnalyzerEngine, RecognizerRegistry
        from presidio_analyzer.nlp_engine import NoOpNlpEngine
        from presidio_analyzer.predefined_recognizers import PhoneRecognizer
        from presidio_anonymizer import AnonymizerEngine

        langs = ["en", "zh"]
        nlp = NoOpNlpEngine(models=[{"lang_code": lang, "model_name": "noop"} for lang in langs])
        english = RecognizerRegistry(supported_languages=["en"])
        english.load_predefined_recognizers(languages=["en"], nlp_engine=nlp)
        registry = RecognizerRegistry(supported_languages=langs)
        self.skipped = []
        for rec in english.recognizers:
            if isinstance(rec, PhoneRecognizer):
                continue
            for lang in langs:
                try:  # the same recognizer again for zh: predefined ones take supported_language
                    registry.add_recognizer(rec if lang == "en" else type(rec)(supported_language=lang))
                except TypeError:
                    self.skipped.append(type(rec).__name__)
        regions = tuple(PhoneRecognizer.DEFAULT_SUPPORTED_REGIONS) + ("CN",)
        for lang in langs:
            registry.add_recognizer(PhoneRecognizer(supported_language=lang, supported_regions=regions))
        self.engine = AnalyzerEngine(registry=registry, nlp_engine=nlp, supported_languages=langs)
        self.anonymizer = AnonymizerEngine()
        self.recognizers = sorted({type(r).__name__ for r in registry.recognizers})
        self.supported = {"EMAIL", "IP_ADDRESS", "URL", "BANK_CARD", "CN_MOBILE", "CN_LANDLINE"}
        self.unmapped = collections.Counter()

    def _analyze(self, text: str, lang: str):
        return self.engine.analyze(text, language="en" if lang == "en" else "zh")

    def scan(self, text: str, lang: str) -> list[tuple[str, int, int]]:
        out = []
        for r in self._analyze(text, lang):
            ours = PRESIDIO_TYPES.get(r.entity_type)
            if ours is None:
                self.unmapped[r.entity_type] += 1
            else:
                out.append((ours, r.start, r.end))
        return out

    def redact(self, text: str, lang: str) -> str:
        return self.anonymizer.anonymize(text=text, analyzer_results=self._analyze(text, lang)).text


# --------------------------------------------------------------------------------------------
# Scoring
# --------------------------------------------------------------------------------------------

def iou(a: tuple[int, int], b: tuple[int, int]) -> float:
    inter = min(a[1], b[1]) - max(a[0], b[0])
    return inter / (max(a[1], b[1]) - min(a[0], b[0])) if inter > 0 else 0.0


def _compatible(pred_type: str, gold_type: str) -> bool:
    return pred_type == gold_type or (pred_type == "PHONE" and gold_type in PHONE)


def _rows(etype: str, lang: str) -> tuple[str, ...]:
    """The table rows an entity counts in: its type, and for PERSON / ADDRESS also type/lang."""
    return (etype, f"{etype}/{lang}") if etype in ("PERSON", "ADDRESS") else (etype,)


def _phone_kind(s: str) -> str:
    digits = re.sub(r"\D", "", unicodedata.normalize("NFKC", s))
    digits = re.sub(r"^(0086|86)(?=1\d{10}$)", "", digits)
    return "CN_MOBILE" if digits.startswith("1") else "CN_LANDLINE"


def score_record(rec: dict, preds: list[tuple[str, int, int]], tally: dict) -> None:
    """Greedy one-to-one matching by IoU; adds tp / fp / fn / exact per row (and per form) to ``tally``."""
    gold = rec["entities"]
    pairs = sorted(((iou((g["start"], g["end"]), (p[1], p[2])), gi, pi) for gi, g in enumerate(gold)
                    for pi, p in enumerate(preds) if _compatible(p[0], g["type"])), reverse=True)
    gold_hit, pred_hit = {}, {}
    for v, gi, pi in pairs:
        if v >= IOU and gi not in gold_hit and pi not in pred_hit:
            gold_hit[gi], pred_hit[pi] = pi, gi
    for gi, g in enumerate(gold):
        rows = _rows(g["type"], g["lang"])
        exact = any(_compatible(p[0], g["type"]) and (p[1], p[2]) == (g["start"], g["end"]) for p in preds)
        for row in rows:
            tally[row]["tp" if gi in gold_hit else "fn"] += 1
            tally[row]["exact"] += exact
        tally["forms"][f"{g['type']}:{g['form']}"]["n"] += 1
        tally["forms"][f"{g['type']}:{g['form']}"]["hit"] += gi in gold_hit
        if gi not in gold_hit:
            tally["misses"].append((g["type"], g["value"], rec["id"]))
    for pi, (ptype, start, end) in enumerate(preds):
        if pi in pred_hit:
            continue
        surface = rec["text"][start:end]
        etype = _phone_kind(surface) if ptype == "PHONE" else ptype
        for row in _rows(etype, "zh" if CJK.search(surface) else "en"):
            tally[row]["fp"] += 1
        tally["false_positives"].append((etype, surface, rec["id"]))


def new_tally() -> dict:
    t = collections.defaultdict(collections.Counter)
    t["misses"], t["false_positives"] = [], []
    t["forms"] = collections.defaultdict(collections.Counter)
    return t


def prf(c: collections.Counter) -> dict:
    tp, fp, fn = c["tp"], c["fp"], c["fn"]
    p = tp / (tp + fp) if tp + fp else None
    r = tp / (tp + fn) if tp + fn else None
    f1 = 2 * p * r / (p + r) if p and r else (0.0 if p is not None and r is not None else None)
    exact = c["exact"] / (tp + fn) if tp + fn else None
    return {"precision": p, "recall": r, "f1": f1, "exact_recall": exact, "support": tp + fn,
            "tp": tp, "fp": fp, "fn": fn}


def target_met(row: str, m: dict) -> bool | None:
    if row not in TARGETS:
        return None
    p_min, r_min = TARGETS[row]
    return ((p_min is None or (m["precision"] or 0) >= p_min) and (m["recall"] or 0) >= r_min)


def target_text(row: str) -> str:
    if row not in TARGETS:
        return ""
    p_min, r_min = TARGETS[row]
    return (f"P>={p_min:.2f} " if p_min is not None else "") + f"R>={r_min:.2f}"


def condensed(text: str) -> str:
    """Letters and digits only, as every check reads them (full-width, case, traditional folded)."""
    from aigc.safety.normalize import normalize

    return "".join(ch for ch in normalize(text).text if ch.isalnum())


def leaks(rec: dict, released: str) -> list[dict]:
    """Gold entities whose value occurs in ``released`` more often than outside gold spans."""
    text, outside, pos = rec["text"], [], 0
    for e in sorted(rec["entities"], key=lambda e: e["start"]):
        outside.append(text[pos:e["start"]])
        pos = e["end"]
    outside = condensed(" ".join([*outside, text[pos:]]))
    out_text = condensed(released)
    found = []
    for e in rec["entities"]:
        v = condensed(e["value"])
        if v and out_text.count(v) > outside.count(v):
            found.append(e)
    return found


def percentile_ms(seconds: list[float], q: float) -> float:
    s = sorted(seconds)
    return round(1000 * s[min(len(s) - 1, int(round(q * (len(s) - 1))))], 3)


# --------------------------------------------------------------------------------------------
# Runs
# --------------------------------------------------------------------------------------------

def run_system(system, records: list[dict]) -> dict:
    for rec in records[:50]:  # warm-up: compiled patterns, caches
        system.scan(rec["text"], rec["lang"])
    tally, times = new_tally(), []
    negatives = collections.defaultdict(collections.Counter)
    flagged_as = collections.defaultdict(collections.Counter)
    leaked = collections.Counter()
    for rec in records:
        t0 = time.perf_counter()
        preds = system.scan(rec["text"], rec["lang"])
        times.append(time.perf_counter() - t0)
        score_record(rec, preds, tally)
        for n in rec["negatives"]:
            hits = [p for p in preds if iou((n["start"], n["end"]), (p[1], p[2])) > 0]
            negatives[n["kind"]]["n"] += 1
            negatives[n["kind"]]["flagged"] += bool(hits)
            for p in hits:
                flagged_as[n["kind"]][p[0]] += 1
        for e in leaks(rec, system.redact(rec["text"], rec["lang"])):
            leaked.update(_rows(e["type"], e["lang"]))
    rows, types = {}, [r for r in ROWS if "/" not in r]
    for row in ROWS:
        m = prf(tally[row])
        etype = row.split("/")[0]
        supported = etype in system.supported
        m["leak_rate"] = leaked[row] / m["support"] if m["support"] else None
        m["supported"] = supported
        m["target_met"] = target_met(row, m) if supported else (False if row in TARGETS else None)
        rows[row] = m
    return {
        "entities": rows,
        "micro": prf(sum((tally[r] for r in types), collections.Counter())),
        "negatives": {k: {"n": c["n"], "fp_rate": c["flagged"] / c["n"], "flagged_as": dict(flagged_as[k])}
                      for k, c in sorted(negatives.items())},
        "leaks_after_redaction": {"leaked": sum(leaked[r] for r in types),
                                  "entities": sum(tally[r]["tp"] + tally[r]["fn"] for r in types)},
        "recall_by_form": {k: round(c["hit"] / c["n"], 4) for k, c in sorted(tally["forms"].items())},
        "latency": {"p50_ms": percentile_ms(times, 0.5), "p95_ms": percentile_ms(times, 0.95),
                    "records": len(times)},
        "_misses": tally["misses"], "_false_positives": tally["false_positives"],
    }


def real_corpora(sample: int) -> tuple[dict[str, list[tuple[str, str]]], dict[str, str]]:
    """Texts with no planted PII: name -> [(text, lang)], and name -> why a corpus was skipped."""
    corpora, skipped = {}, {}
    with open(SHOP_COPY, encoding="utf-8", newline="") as f:
        corpora["shop_copy"] = [(r["text"], r["lang"]) for r in csv.DictReader(f)]
    if REVIEWS.is_file():
        with open(REVIEWS, encoding="utf-8-sig", newline="") as f:  # some rows start with a BOM
            reviews = [r.lstrip("\ufeff") for r in (row["review"] or "" for row in csv.DictReader(f)) if r]
        picked = random.Random(0).sample(reviews, min(sample, len(reviews)))
        corpora["cn_reviews"] = [(r, "zh") for r in picked]
    else:
        skipped["cn_reviews"] = f"{REVIEWS} not found (../shared/data/cn-shopping-reviews)"
    if SHAKESPEARE.is_file():
        lines = [line for line in SHAKESPEARE.read_text(encoding="utf-8").splitlines() if line.strip()]
        corpora["tinyshakespeare"] = [(line, "en") for line in lines[:sample]]
    else:
        skipped["tinyshakespeare"] = f"{SHAKESPEARE} not found (../shared/data/tinyshakespeare)"
    return corpora, skipped


def run_real(system, corpora: dict[str, list[tuple[str, str]]]) -> dict:
    """Entities found per corpus: counts and per 1,000 records by type, and the first few hits."""
    out = {}
    for name, records in corpora.items():
        counts, examples = collections.Counter(), collections.defaultdict(list)
        other_before = sum(getattr(system, "unmapped", {}).values())
        for text, lang in records:
            for etype, start, end in system.scan(text, lang):
                if etype == "PHONE":
                    etype = _phone_kind(text[start:end])
                counts[etype] += 1
                if len(examples[etype]) < REAL_EXAMPLES:
                    examples[etype].append({"value": text[start:end],
                                            "context": text[max(0, start - 12):end + 12]})
        n = len(records)
        result = {"records": n, "found": dict(counts),
                  "per_1000": {k: round(1000 * v / n, 2) for k, v in counts.items()},
                  "total_per_1000": round(1000 * sum(counts.values()) / n, 2), "examples": dict(examples)}
        if hasattr(system, "unmapped"):  # Presidio types with no counterpart here
            other = sum(system.unmapped.values()) - other_before
            result["other_types_per_1000"] = round(1000 * other / n, 2)
        out[name] = result
    return out


def print_real(real: dict, examples: int) -> None:
    systems = [s for s in ("aigc", "presidio") if isinstance(real.get(s), dict)]
    corpora = list(real[systems[0]]) if systems else []
    types = [t for t in ROWS if "/" not in t
             and any(real[s][c]["found"].get(t) for s in systems for c in corpora)]
    print("\nreal text without planted PII: entities found per 1,000 records (a hit is a false positive "
          "unless the text really holds that PII: see the examples)")
    print(f"{'corpus':16} {'records':>7} {'system':9} " + " ".join(f"{t:>10}" for t in types)
          + f" {'total':>8} {'other':>7}")
    supported = real.get("supported", {})
    for c in corpora:
        for s in systems:
            r = real[s][c]
            other = r.get("other_types_per_1000")
            cells = (f"{r['per_1000'].get(t, 0.0):>10.2f}" if t in supported.get(s, types) else f"{'—':>10}"
                     for t in types)
            print(f"{c:16} {r['records']:>7} {s:9} " + " ".join(cells)
                  + f" {r['total_per_1000']:>8.2f} {'-' if other is None else f'{other:.2f}':>7}")
    print("(—: the system has no recognizer for that type; other: Presidio types with no counterpart here)")
    for c, why in real.get("skipped", {}).items():
        print(f"{c:16} skipped: {why}")
    if examples:
        for s in systems:
            for c in corpora:
                for etype, items in sorted(real[s][c]["examples"].items()):
                    print(f"  {s} {c} {etype}: " + "; ".join(repr(x["value"]) for x in items[:examples]))


def _released(rail_cls, policy, scanner, parts: list[str]) -> tuple[str, bool]:
    rail = rail_cls(policy, scanner=scanner)
    out = [rail.feed(p) for p in parts]
    out.append(rail.finish())
    return "".join(out), bool(rail.blocked)


def _stream_runs(records: list[dict], sample: int):
    """(kind, record, parts): each record in chunks of 1..8; ``sample`` records cut in two everywhere."""
    for rec in records:
        for k in range(1, 9):
            yield "chunk", rec, [rec["text"][i:i + k] for i in range(0, len(rec["text"]), k)]
    step = max(1, len(records) // sample) if sample else 0
    for rec in (records[::step][:sample] if sample else []):
        for cut in range(1, len(rec["text"])):
            yield "split", rec, [rec["text"][:cut], rec["text"][cut:]]


def run_streams(records: list[dict], sample: int) -> dict:
    try:
        from aigc.safety.pii import Scanner
        from aigc.safety.policy import default_policy
        from aigc.safety.rails import OutputRail
    except ImportError as e:
        return {"skipped": f"aigc.safety.rails.OutputRail is not available ({e})"}
    policy, scanner = default_policy(), Scanner()
    # What the scanner misses on the whole text leaks from any stream too; a leak beyond those is
    # the rail's own (a value released before the segment that holds it was checked).
    whole = {rec["id"]: {(e["start"], e["end"])
                         for e in leaks(rec, scanner.redact(rec["text"], "replace").text)} for rec in records}
    runs, blocked, examples = collections.Counter(), 0, []
    by_kind = collections.defaultdict(collections.Counter)  # run kind -> entity type -> leaks
    beyond = collections.defaultdict(collections.Counter)  # those whole-text redaction does not leak
    t0 = time.perf_counter()
    for kind, rec, parts in _stream_runs(records, sample):
        released, b = _released(OutputRail, policy, scanner, parts)
        runs[kind] += 1
        blocked += b
        for e in leaks(rec, released):
            by_kind[kind][e["type"]] += 1
            if (e["start"], e["end"]) not in whole[rec["id"]]:
                beyond[kind][e["type"]] += 1
                if len(examples) < 20:
                    examples.append({"id": rec["id"], "run": kind, "parts": [len(p) for p in parts][:3],
                                     "type": e["type"], "value": e["value"]})
    try:
        operators = dict(policy.pii_operators("output"))
    except Exception as e:  # report what the policy says, whatever shape it has
        operators = f"unavailable: {e}"
    return {"chunk_sizes": list(range(1, 9)), "chunk_runs": runs["chunk"], "split_runs": runs["split"],
            "split_records": min(sample, len(records)), "blocked_runs": blocked,
            "chunk_leaks": dict(by_kind["chunk"]), "split_leaks": dict(by_kind["split"]),
            "total_leaks": sum(sum(c.values()) for c in by_kind.values()),
            "leaks_beyond_whole_text": sum(sum(c.values()) for c in beyond.values()),
            "beyond_by_run": {k: dict(c) for k, c in beyond.items()},
            "whole_text_misses": sum(len(v) for v in whole.values()),
            "output_operators": operators, "examples_beyond_whole_text": examples,
            "seconds": round(time.perf_counter() - t0, 1)}


# --------------------------------------------------------------------------------------------
# Report
# --------------------------------------------------------------------------------------------

def _f(v) -> str:
    return "-" if v is None else f"{v:.3f}"


def print_report(results: dict) -> None:
    systems = [s for s in ("aigc", "presidio") if isinstance(results.get(s), dict)]
    head = f"{'entity':19} {'support':>7}"
    for s in systems:
        head += f" | {s + ' P':>10} {'R':>6} {'F1':>6} {'exactR':>6} {'leak':>6}"
    print(head + f" | {'target':14} " + " ".join(f"{s:>8}" for s in systems))
    for row in ROWS:
        line = f"{row:19} {results[systems[0]]['entities'][row]['support'] if systems else 0:>7}"
        for s in systems:
            m = results[s]["entities"][row]
            if not m["supported"]:
                line += f" | {'—':>10} {'—':>6} {'—':>6} {'—':>6} {_f(m['leak_rate']):>6}"
            else:
                line += (f" | {_f(m['precision']):>10} {_f(m['recall']):>6} {_f(m['f1']):>6} "
                         f"{_f(m['exact_recall']):>6} {_f(m['leak_rate']):>6}")
        met = ["" if v is None else ("met" if v else "not met")
               for v in (results[s]["entities"][row]["target_met"] for s in systems)]
        line += f" | {target_text(row):14} " + " ".join(f"{v:>8}" for v in met)
        print(line)
    for s in systems:
        m, lk, lat = results[s]["micro"], results[s]["leaks_after_redaction"], results[s]["latency"]
        print(f"{s}: micro P {_f(m['precision'])} R {_f(m['recall'])} F1 {_f(m['f1'])}; "
              f"leaked after redaction {lk['leaked']}/{lk['entities']}; "
              f"latency p50 {lat['p50_ms']} ms, p95 {lat['p95_ms']} ms per record")
    print(f"\n{'hard negative':20} {'n':>5} " + " ".join(f"{s + ' FP rate':>18}" for s in systems))
    kinds = results[systems[0]]["negatives"] if systems else {}
    for kind, c in kinds.items():
        rates = (results[s]["negatives"][kind]["fp_rate"] for s in systems)
        print(f"{kind:20} {c['n']:>5} " + " ".join(f"{r:>18.3f}" for r in rates))
    st = results.get("streams")
    if isinstance(st, dict) and "skipped" not in st:
        verdict = "met" if st["total_leaks"] == 0 else "not met"
        print(f"\nstreams (aigc OutputRail, default policy): {st['chunk_runs']} chunked runs (sizes 1-8), "
              f"{st['split_runs']} two-way splits of {st['split_records']} records, "
              f"{st['blocked_runs']} blocked: "
              f"{st['total_leaks']} leaks (chunks {st['chunk_leaks']}, splits {st['split_leaks']}); "
              f"target zero: {verdict}")
        print(f"  of which beyond what whole-text redaction leaks ({st['whole_text_misses']} values): "
              f"{st['leaks_beyond_whole_text']} {st['beyond_by_run']}")
    elif isinstance(st, dict):
        print(f"\nstreams: skipped: {st['skipped']}")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--split", choices=["test", "dev"], default="test")
    ap.add_argument("--stream-sample", type=int, default=100, help="records split in two at every position")
    ap.add_argument("--real-sample", type=int, default=5000,
                    help="reviews (a seeded sample) and Shakespeare lines read as real text; 0: none")
    ap.add_argument("--examples", type=int, default=0,
                    help="print this many misses and false positives per type (aigc)")
    ap.add_argument("--out", type=Path, default=None,
                    help="default benchmarks/results/pii.json (pii_dev.json for dev)")
    args = ap.parse_args(argv)
    from aigc.workspace import write_json_atomic

    records = load(args.split)
    result: dict = {"split": args.split, "records": len(records),
                    "match_rule": f"same type, character IoU >= {IOU}",
                    "targets": {k: {"precision": p, "recall": r} for k, (p, r) in TARGETS.items()}}
    try:
        ours = Aigc()
    except ImportError as e:
        print(f"note: aigc.safety.pii is not available ({e}): only Presidio is measured")
        result["aigc"] = f"unavailable: {e}"
    else:
        result["aigc"] = run_system(ours, records)
    try:
        peer = Presidio()
    except ImportError as e:
        raise SystemExit(f"Presidio is the peer this benchmark runs beside aigc ({e}): "
                         "pip install -e \".[bench]\"")
    result["presidio"] = run_system(peer, records)
    result["presidio"]["recognizers"] = peer.recognizers
    result["presidio"]["unmapped_types"] = dict(peer.unmapped)
    result["streams"] = run_streams(records, args.stream_sample) if isinstance(result["aigc"], dict) else {
        "skipped": "aigc.safety.pii is not available"}
    if args.real_sample > 0:
        corpora, skipped = real_corpora(args.real_sample)
        result["real_text"] = {"skipped": skipped, "presidio": run_real(peer, corpora),
                               "supported": {"presidio": sorted(peer.supported)}}
        if isinstance(result["aigc"], dict):
            result["real_text"]["aigc"] = run_real(ours, corpora)
            result["real_text"]["supported"]["aigc"] = sorted(ours.supported)
    if args.examples and isinstance(result["aigc"], dict):
        for label, key in (("missed", "_misses"), ("false positive", "_false_positives")):
            by_type = collections.defaultdict(list)
            for etype, value, rid in result["aigc"][key]:
                by_type[etype].append(f"{rid} {value!r}")
            for etype, items in sorted(by_type.items()):
                print(f"aigc {label} {etype} ({len(items)}): " + "; ".join(items[: args.examples]))
    print_report(result)
    if "real_text" in result:
        print_real(result["real_text"], args.examples)
    for s in ("aigc", "presidio"):
        if isinstance(result[s], dict):
            for key in ("_misses", "_false_positives"):
                result[s][key.lstrip("_")] = len(result[s].pop(key))
    out = args.out or RESULTS / ("pii.json" if args.split == "test" else "pii_dev.json")
    RESULTS.mkdir(exist_ok=True)
    write_json_atomic(out, {"benchmark": "pii", **provenance(), **result})
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
