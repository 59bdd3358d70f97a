"""Copy guard (issue 13): is every copied span found, how often is held-out text flagged, what
does the index cost?

Corpus: the real text under ../shared/data, Chinese and English: the Chinese online-shopping
reviews (``cn-shopping-reviews``, one record per review) and Shakespeare (``tinyshakespeare``,
one record per speech, split on blank lines). Records that are exact duplicates of another after
normalisation are dropped first (a held-out copy of a training record is a real copy, not a false
flag), then ``--holdout`` of each corpus's records (seeded) is held out and never indexed. That
is about 4.8 M characters, not the 20 M the issue names: nothing more of real text is there. Recall
and false flags are measured on that real text only. Size and time at 20 M (``--scale-chars``) are
measured on the real training records plus records made by shuffling the characters of real ones
(the same characters and lengths, none of the n-grams: every window new, the worst case for size),
with the copies of real training text still to be found in it.

Measured, for :class:`aigc.safety.copyguard.CopyIndex` at each ``--strides`` (window 16: every
span of 16 characters or more is found) and, in the same run on the same texts, for the baseline
the issue quotes (a sorted array of the hash of every 32-character window, ``np.sort``, binary
search with ``np.searchsorted``, the longest run of consecutive hits as the copy length):

- build seconds, bytes in memory and on disk, load seconds;
- check time p50 / p95 of ``longest`` on 800-character texts (normalisation included), and the
  bucket entries compared per check (false candidates cost time, never a wrong answer);
- recall on spans of 16, 32, 64 and 128 characters cut at random from training records and put
  inside held-out 800-character texts: found means a reported span (``CopyIndex.spans``; for the
  baseline a run of hits) is at least as long and covers the inserted characters (target 1.0; the
  index leaves out runs such as "!!!!!!!!!", so a span that is mostly a run can be missed: the
  misses are listed);
- false flags: the share of held-out 800-character texts (and of single held-out records) whose
  longest span in the training text reaches 16 / 24 / 32 / 40 / 50 / 64 characters (target
  <= 1 % at the default threshold).

    python benchmarks/copy_guard.py [--strides 4 6 8] [--holdout 0.1] [--recall-trials 200]
                                    [--seed 0] [--out PATH]

Prints a table and writes benchmarks/results/copy_guard.json (commit and date included) through
a rename.
"""

from __future__ import annotations

import argparse
import csv
import random
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import RESULTS, provenance  # noqa: E402

HERE = Path(__file__).resolve().parent
DATA = HERE.parents[1] / "shared" / "data"
REVIEWS = DATA / "cn-shopping-reviews" / "online_shopping_10_cats.csv"
SHAKESPEARE = DATA / "tinyshakespeare" / "input.txt"
TEXT_CHARS = 800  # the size of one checked text, as the issue measures it
SPAN_LENGTHS = (16, 32, 64, 128)
THRESHOLDS = (16, 24, 32, 40, 50, 64)
BASELINE_GRAM = 32


def corpora() -> dict[str, list[str]]:
    """Name -> records, as they are in the files."""
    out = {}
    if REVIEWS.is_file():
        with open(REVIEWS, encoding="utf-8-sig", newline="") as f:
            reviews = (r["review"] or "" for r in csv.DictReader(f))
            out["reviews_zh"] = [r.lstrip("\ufeff") for r in reviews if r.strip()]
    if SHAKESPEARE.is_file():
        speeches = SHAKESPEARE.read_text(encoding="utf-8").split("\n\n")
        out["shakespeare_en"] = [s for s in speeches if s.strip()]
    return out


def split(records: list[str], holdout: float, rng: random.Random) -> tuple[list[str], list[str], int]:
    """(train, held out, duplicates dropped): exact duplicates after normalisation kept once."""
    from aigc.safety.normalize import normalize

    seen, unique = set(), []
    for r in records:
        key = normalize(r).text
        if key not in seen:
            seen.add(key)
            unique.append(r)
    order = list(range(len(unique)))
    rng.shuffle(order)
    cut = int(len(unique) * holdout)
    held = [unique[i] for i in sorted(order[:cut])]
    train = [unique[i] for i in sorted(order[cut:])]
    return train, held, len(records) - len(unique)


def held_out_texts(held: list[str]) -> list[str]:
    """Consecutive held-out records joined into 800-character texts that do not overlap."""
    texts, cur = [], ""
    for r in held:
        cur = f"{cur}\n{r}" if cur else r
        if len(cur) >= TEXT_CHARS:
            texts.append(cur[:TEXT_CHARS])
            cur = ""
    return texts


def copied_texts(train: list[str], bases: list[str], length: int, trials: int, rng: random.Random):
    """(text, inserted start, inserted end) with ``length`` normalised characters of a training
    record put at a random place of a held-out text (trimmed so the result stays 800 characters)."""
    from aigc.safety.normalize import normalize

    long_enough = [r for r in train if len(r) >= length]
    out = []
    while len(out) < trials:
        norm = normalize(rng.choice(long_enough))
        if len(norm.text) < length:
            continue
        o = rng.randrange(len(norm.text) - length + 1)
        a, b = norm.span(o, o + length)
        piece = norm.original[a:b]
        base = rng.choice(bases)[:max(TEXT_CHARS - len(piece), 0)]
        at = rng.randrange(len(base) + 1)
        out.append((base[:at] + piece + base[at:], at, at + len(piece)))
    return out


class SortedWindowHashes:
    """The baseline the issue quotes: the hash of every 32-character window of the normalised
    training text (windows across two records left out), sorted with ``np.sort``; a check looks up
    every window of the text with ``np.searchsorted`` and reports the longest run of hits."""

    def __init__(self, texts: list[str], gram: int = BASELINE_GRAM):
        from aigc.safety.copyguard import _Folder, _window_hashes

        self.gram = gram
        fold, hashes = _Folder(), []
        for t in texts:  # per record: no window crosses two records
            ids = np.frombuffer(fold(t).encode("utf-32-le", "surrogatepass"), np.uint32)
            hashes.append(_window_hashes(ids, gram, 1, max(len(ids) - gram + 1, 0)))
        self.hashes = np.sort(np.concatenate(hashes))

    def runs(self, text: str) -> list[tuple[int, int, int]]:
        """(start, end, length) of each run of consecutive windows found, in ``text`` as written."""
        from aigc.safety.copyguard import _window_hashes
        from aigc.safety.normalize import normalize

        norm = normalize(text)
        if len(norm.text) < self.gram or len(self.hashes) == 0:
            return []
        ids = np.frombuffer(norm.text.encode("utf-32-le", "surrogatepass"), np.uint32)
        h = _window_hashes(ids, self.gram, 1, len(ids) - self.gram + 1)
        i = np.minimum(np.searchsorted(self.hashes, h), len(self.hashes) - 1)
        hit = np.concatenate([[0], (self.hashes[i] == h).astype(np.int8), [0]])
        edges = np.flatnonzero(np.diff(hit))  # run starts and ends (window starts), alternating
        out = []
        for a, b in zip(edges[::2], edges[1::2]):
            start, end = norm.span(int(a), int(b) + self.gram - 1)
            out.append((start, end, int(b - a) + self.gram - 1))
        return out

    def longest(self, text: str) -> int:
        """The copy length in normalised characters (0 if no 32-character window is found)."""
        return max((n for _, _, n in self.runs(text)), default=0)


def percentiles(seconds: list[float]) -> dict:
    ms = np.asarray(seconds) * 1e3
    return {"p50_ms": round(float(np.percentile(ms, 50)), 3), "p95_ms": round(float(np.percentile(ms, 95)), 3),
            "mean_ms": round(float(ms.mean()), 3)}


def flag_rates(lengths: dict[str, list[int]]) -> dict:
    """Corpus -> threshold -> share of texts whose longest copied span reaches it."""
    return {name: {str(t): round(sum(v >= t for v in ls) / len(ls), 4) for t in THRESHOLDS}
            for name, ls in lengths.items() if ls}


def measure(longest, covers, sets: dict, copies: dict) -> dict:
    """Time ``longest(text) -> length`` on every held-out 800-character text and every text with a
    copy in it; ``covers(text, start, end, length)``: a span of ``length`` or more covers the copy."""
    times, flags, record_flags, recall, missed = [], {}, {}, {}, {}
    for name, s in sets.items():
        flags[name] = []
        for text in s["texts"]:
            t0 = time.perf_counter()
            flags[name].append(longest(text))
            times.append(time.perf_counter() - t0)
        record_flags[name] = [longest(r) for r in s["held"]]
    for length, trials in copies.items():
        for text, _, _ in trials:
            t0 = time.perf_counter()
            longest(text)
            times.append(time.perf_counter() - t0)
        missed[str(length)] = [text[a:b] for text, a, b in trials if not covers(text, a, b, length)]
        recall[str(length)] = round(1 - len(missed[str(length)]) / len(trials), 4)
    return {"check": percentiles(times), "checks": len(times), "recall": recall, "missed": missed,
            "false_flags_800": flag_rates(flags), "false_flags_record": flag_rates(record_flags)}


def flagged_examples(index, train: list[str], sets: dict, threshold: int, limit: int = 8) -> dict:
    """Corpus -> held-out records flagged at ``threshold``: how many, how many of their spans occur
    twice or more in the training text (boilerplate many people wrote, not a chance overlap), and
    the first few spans."""
    from aigc.safety.copyguard import _Folder

    fold = _Folder()
    corpus = "\ue000".join(fold(t) for t in train)
    out = {}
    for name, s in sets.items():
        spans = [(r, index.longest(r)) for r in s["held"]]
        spans = [(r, span) for r, span in spans if span is not None and span.length >= threshold]
        repeated = sum(corpus.count(index.source(span)[2]) >= 2 for _, span in spans)
        out[name] = {"threshold": threshold, "held_out_records": len(s["held"]), "flagged": len(spans),
                     "flagged_span_twice_or_more_in_training": repeated,
                     "examples": [{"length": span.length, "span": r[span.start:span.end][:120]}
                                  for r, span in spans[:limit]]}
    return out


def index_checks(index):
    """(longest(text) -> copy length, covers(text, start, end, length) -> a reported span of ``length`` or
    more covers the copy) for a :class:`aigc.safety.copyguard.CopyIndex`."""
    def longest(text):
        span = index.longest(text)
        return 0 if span is None else span.length

    def covers(text, a, b, length):
        return any(s.start <= a and s.end >= b and s.length >= length for s in index.spans(text))

    return longest, covers


def baseline_covers(base: "SortedWindowHashes"):
    """covers(text, start, end, length) for the baseline: a run of hits of ``length`` or more covers the copy."""
    def covers(text, a, b, length):
        return any(s <= a and e >= b and n >= length for s, e, n in base.runs(text))

    return covers


def run_index(train: list[str], stride: int, window: int, sets: dict, copies: dict, tmp: Path) -> dict:
    from aigc.safety.copyguard import DEFAULT_STRIDE, DEFAULT_THRESHOLD, CopyIndex
    from aigc.safety.normalize import normalize

    t0 = time.perf_counter()
    built = CopyIndex.build(train, window=window, stride=stride)
    build_s = time.perf_counter() - t0
    path = built.save(tmp / f"copy_index_s{stride}.npz")
    del built
    t0 = time.perf_counter()
    index = CopyIndex.load(path)
    load_s = time.perf_counter() - t0
    compared = [index._matches(normalize(t))[3] for s in sets.values() for t in s["texts"]]

    longest, covers = index_checks(index)
    result = {"kind": "copy_index", "window": window, "stride": stride, "gram": index.gram,
              "build_s": round(build_s, 2), "load_s": round(load_s, 4), **index.stats(),
              "disk_bytes": path.stat().st_size, "compared_per_check": round(float(np.mean(compared)), 1),
              **measure(longest, covers, sets, copies)}
    if stride == DEFAULT_STRIDE:
        result["flagged"] = flagged_examples(index, train, sets, DEFAULT_THRESHOLD)
    return result


def run_baseline(train: list[str], sets: dict, copies: dict, tmp: Path) -> dict:
    t0 = time.perf_counter()
    base = SortedWindowHashes(train)
    build_s = time.perf_counter() - t0
    path = tmp / "baseline.npy"
    np.save(path, base.hashes)
    result = {"kind": "sorted_window_hashes", "window": BASELINE_GRAM, "stride": 1, "gram": BASELINE_GRAM,
              "build_s": round(build_s, 2), "entries": len(base.hashes), "bytes": int(base.hashes.nbytes),
              "disk_bytes": path.stat().st_size}

    return {**result, **measure(base.longest, baseline_covers(base), sets, copies)}


def scaled_corpus(train: list[str], chars: int, seed: int) -> tuple[list[str], int]:
    """``train`` and, after it, records made by shuffling the characters of training records picked at
    random, until the corpus holds ``chars`` characters; (corpus, characters added). A shuffled record
    keeps the corpus's characters and lengths but none of its n-grams, so nearly every window of it
    is new: the worst case for the index's size, and no copy to find."""
    rng = np.random.default_rng(seed)
    have = sum(map(len, train))
    out, added = list(train), 0
    while have + added < chars:
        record = train[int(rng.integers(len(train)))]
        out.append("".join(rng.permutation(np.array(list(record)))))
        added += len(record)
    return out, added


def run_scale(train: list[str], chars: int, seed: int, stride: int, window: int, sets: dict, copies: dict,
              baseline: bool, tmp: Path) -> dict:
    """Build seconds, memory, disk, load seconds and check time at ``chars`` characters of indexed
    text (:func:`scaled_corpus`), and that every copy of the real training text is still found there;
    the false flags are the real corpus's (above), not measured again."""
    from aigc.safety.copyguard import CopyIndex

    corpus, added = scaled_corpus(train, chars, seed)
    out: dict = {"chars": sum(map(len, corpus)), "records": len(corpus), "shuffled_chars_added": added}
    t0 = time.perf_counter()
    built = CopyIndex.build(corpus, window=window, stride=stride)
    build_s = time.perf_counter() - t0
    path = built.save(tmp / "copy_index_scale.npz")
    del built
    t0 = time.perf_counter()
    index = CopyIndex.load(path)
    load_s = time.perf_counter() - t0

    longest, covers = index_checks(index)
    m = measure(longest, covers, sets, copies)
    out["indexes"] = [{"kind": "copy_index", "window": window, "stride": stride, "gram": index.gram,
                       "build_s": round(build_s, 2), "load_s": round(load_s, 4), **index.stats(),
                       "disk_bytes": path.stat().st_size, "check": m["check"], "recall": m["recall"]}]
    if baseline:
        t0 = time.perf_counter()
        base = SortedWindowHashes(corpus)
        build_s = time.perf_counter() - t0

        m = measure(base.longest, baseline_covers(base), sets, copies)
        out["indexes"].append({"kind": "sorted_window_hashes", "window": BASELINE_GRAM, "stride": 1,
                               "gram": BASELINE_GRAM, "build_s": round(build_s, 2), "entries": len(base.hashes),
                               "bytes": int(base.hashes.nbytes), "disk_bytes": int(base.hashes.nbytes),
                               "check": m["check"], "recall": m["recall"]})
    return out


def label(r: dict) -> str:
    if r["kind"] != "copy_index":
        return "sorted 32-hash"
    return f"copyidx w{r['window']} s{r['stride']} g{r['gram']}"


def print_table(result: dict) -> None:
    by_corpus = ", ".join(f"{k} {v:,}" for k, v in result["train_chars_by_corpus"].items())
    print(f"corpus: {result['corpus_chars']:,} normalised training characters in {result['train_records']:,} "
          f"records ({by_corpus}); the issue's 20 M is not available as real text here")
    print(f"{'index':22} {'build s':>8} {'MB mem':>7} {'MB disk':>8} {'load s':>7} {'p50 ms':>7} {'p95 ms':>7} "
          f"{'cmp/chk':>8} " + " ".join(f"{'R' + str(n):>6}" for n in SPAN_LENGTHS))
    for r in result["indexes"]:
        print(f"{label(r):22} {r['build_s']:>8.2f} {r['bytes'] / 1e6:>7.1f} {r['disk_bytes'] / 1e6:>8.1f} "
              f"{r.get('load_s', 0):>7.3f} {r['check']['p50_ms']:>7.3f} {r['check']['p95_ms']:>7.3f} "
              f"{r.get('compared_per_check', 0):>8.0f} " + " ".join(f"{r['recall'][str(n)]:>6.3f}" for n in SPAN_LENGTHS))
    print("false flags (share of held-out texts whose longest copied span reaches the threshold):")
    print(f"{'index':22} {'texts':22} " + " ".join(f"{'>=' + str(t):>7}" for t in THRESHOLDS))
    for r in result["indexes"]:
        for unit, texts in (("false_flags_800", "800ch"), ("false_flags_record", "record")):
            for corpus, rates in r[unit].items():
                print(f"{label(r):22} {corpus + ' ' + texts:22} " + " ".join(f"{rates[str(t)]:>7.4f}" for t in THRESHOLDS))
    scale = result.get("scale")
    if scale:
        print(f"at {scale['chars']:,} characters ({scale['shuffled_chars_added']:,} of them real records with their "
              "characters shuffled: see scaled_corpus):")
        for r in scale["indexes"]:
            print(f"{label(r):22} {r['build_s']:>8.2f} {r['bytes'] / 1e6:>7.1f} {r['disk_bytes'] / 1e6:>8.1f} "
                  f"{r.get('load_s', 0):>7.3f} {r['check']['p50_ms']:>7.3f} {r['check']['p95_ms']:>7.3f} "
                  f"{'':>8} " + " ".join(f"{r['recall'][str(n)]:>6.3f}" for n in SPAN_LENGTHS))
    for r in result["indexes"]:
        missed = {n: m for n, m in r["missed"].items() if m}
        if r["kind"] == "copy_index" and missed:
            print(f"{label(r)} missed: " + "; ".join(f"{n}: " + ", ".join(map(repr, m[:4])) for n, m in missed.items()))
        for corpus, f in r.get("flagged", {}).items():
            print(f"{label(r)} at threshold {f['threshold']}: {corpus}: {f['flagged']} of {f['held_out_records']} "
                  f"held-out records flagged, {f['flagged_span_twice_or_more_in_training']} of their spans occur "
                  "twice or more in the training text")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--strides", type=int, nargs="+", default=[4, 6, 8], help="copy-index strides measured")
    ap.add_argument("--window", type=int, default=16, help="shortest span every index must find")
    ap.add_argument("--holdout", type=float, default=0.1, help="share of each corpus's records never indexed")
    ap.add_argument("--recall-trials", type=int, default=200, help="inserted copies per span length")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--no-baseline", action="store_true", help="skip the sorted 32-character window hashes")
    ap.add_argument("--scale-chars", type=int, default=20_000_000,
                    help="also measure size and time at this many indexed characters (0: skip)")
    ap.add_argument("--out", type=Path, default=RESULTS / "copy_guard.json", help="where the results go")
    args = ap.parse_args(argv)

    from aigc.safety.normalize import normalize
    from aigc.workspace import write_json_atomic

    rng = random.Random(args.seed)
    sources = corpora()
    if not sources:
        print(f"no corpus under {DATA}: nothing to measure")
        return 1
    train, sets, info = [], {}, {}
    for name, records in sources.items():
        tr, held, dups = split(records, args.holdout, rng)
        train.extend(tr)
        sets[name] = {"held": held, "texts": held_out_texts(held)}
        info[name] = {"records": len(records), "duplicates_dropped": dups, "train_records": len(tr),
                      "held_out_records": len(held), "held_out_texts": len(sets[name]["texts"]),
                      "train_chars": sum(len(normalize(r).text) for r in tr)}
    bases = [t for s in sets.values() for t in s["texts"]]
    copies = {n: copied_texts(train, bases, n, args.recall_trials, rng) for n in SPAN_LENGTHS}
    result = {"corpora": info, "corpus_chars": sum(v["train_chars"] for v in info.values()),
              "train_records": len(train), "train_chars_by_corpus": {k: v["train_chars"] for k, v in info.items()},
              "text_chars": TEXT_CHARS, "holdout": args.holdout, "seed": args.seed,
              "recall_trials": args.recall_trials, "thresholds": list(THRESHOLDS), "indexes": []}
    with tempfile.TemporaryDirectory(prefix="aigc-copyguard-") as tmp:
        for stride in args.strides:
            result["indexes"].append(run_index(train, stride, args.window, sets, copies, Path(tmp)))
        if not args.no_baseline:
            result["indexes"].append(run_baseline(train, sets, copies, Path(tmp)))
        if args.scale_chars:
            from aigc.safety.copyguard import DEFAULT_STRIDE

            result["scale"] = run_scale(train, args.scale_chars, args.seed, DEFAULT_STRIDE, args.window, sets,
                                        copies, not args.no_baseline, Path(tmp))
    print_table(result)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    write_json_atomic(args.out, {"benchmark": "copy_guard", **provenance(), **result})
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
