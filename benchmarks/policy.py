"""Policy: does the default safety policy block what it should and let the rest through?

Cases: benchmarks/data/policy_cases.jsonl, written by hand before the term lists were tuned. Per
category (sexual, sexual_minors, hate, harassment, violence, self_harm, illicit, fraud, gambling,
extremism, privacy, advertising) and language (zh, en): 8 texts that should be stopped, each with
the phrase that makes it so (``key``), and 12 that should pass: near misses (``skill``, 跑分成绩,
第一次), warnings and anti-fraud notices quoting the term, news, medical and help texts. Each
should-block text also appears obfuscated (``variant``; made by :func:`obfuscate`, rewritten with
``--write-variants``): zh spaces / symbols / zero-width characters between the key's characters
or the whole text in traditional characters; en spaced letters, full-width letters, mixed case,
homoglyph digits (k1ll), zero-width characters. So 32 should-block and 24 should-pass a category
(dev).

Splits. ``dev``: the cases above, written first; the term lists and context rules were tuned on
them. ``heldout``: 3 should-block and 3 should-pass per category and language (plus the block
cases' variants), written after that tuning; its misses were then read and grouped into classes of
failure that the matcher and the lists were changed to handle in general (inflections, ``~`` gaps,
particles, families of terms, context rules), so it is no longer untouched. ``heldout2``: 10
should-block and 10 should-pass per category and language (480, plus 240 variants), written as
realistic abuse and business text before those changes were made and never tuned on; its block
cases of ``kind`` ``slang`` are written the way people dodge filters by hand (yp, cnm, p0rn, 菠菜 for
博彩). The targets are judged on the held-out splits, never on dev: a figure on the tuning set proves
little.

"Stopped" is the policy's verdict: a category is on (for advertising, whose action is flag, that
means flagged for review; for the others it blocks). Targets: block rate >= 0.95 and false-block
rate <= 0.05, overall and per category. Latency per check: ``Policy.match_terms`` + the decision
(what the rails run on each segment), and ``moderate()`` with the PII scan, p50 / p95; and the
output rail's cost per ``feed`` of a 2-character piece, segment checks included and without them.

    python benchmarks/policy.py [--policy FILE] [--repeat 5] [--out-name policy] [--write-variants]

Prints a table and the misses; writes benchmarks/results/<out-name>.json (provenance first).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections import defaultdict
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import write_result  # noqa: E402

HERE = Path(__file__).resolve().parent
CASES = HERE / "data" / "policy_cases.jsonl"


def _shown(path: Path) -> str:
    """``path`` relative to the repository when it is inside it (results name no machine's folders)."""
    try:
        return str(path.resolve().relative_to(HERE.parent))
    except ValueError:
        return path.name
TARGET_BLOCK, TARGET_FALSE = 0.95, 0.05
SPLITS = ("dev", "heldout", "heldout2")
HELD_OUT = ("heldout", "heldout2")  # what the targets are judged on
ZH_VARIANTS = ("spaces", "traditional", "zero_width", "symbols")
EN_VARIANTS = ("spaces", "fullwidth", "mixed_case", "homoglyph", "zero_width")
_HOMOGLYPH = str.maketrans("aeios", "43105")


def obfuscate(text: str, key: str, variant: str) -> str:
    """``text`` with its ``key`` written the way people dodge a filter."""
    if variant == "traditional":
        import opencc

        return opencc.OpenCC("s2t").convert(text)
    if variant == "spaces" and key.isascii():  # letters one space apart, words two
        new = "  ".join(" ".join(word) for word in key.split())
    elif variant in ("spaces", "symbols", "zero_width"):
        sep = {"spaces": " ", "symbols": "*", "zero_width": "\u200b"}[variant]
        new = sep.join(key)
    elif variant == "fullwidth":
        new = "".join(chr(ord(c) + 0xFEE0) if "!" <= c <= "~" else "\u3000" if c == " " else c for c in key)
    elif variant == "mixed_case":
        new = "".join(c.upper() if i % 2 else c.lower() for i, c in enumerate(key))
    elif variant == "homoglyph":
        new = key.lower().translate(_HOMOGLYPH)
    else:
        raise ValueError(f"unknown variant {variant!r}")
    return text.replace(key, new, 1)


def read_cases(path: Path = CASES) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def write_variants(path: Path = CASES) -> int:
    """Rewrite the file: the base cases as they are, then one obfuscated variant of each
    should-block base case (variants cycle per category and language)."""
    base = [c for c in read_cases(path) if "variant" not in c]
    out = list(base)
    counters: dict[tuple, int] = defaultdict(int)
    for c in base:
        if c["expect"] != "block":
            continue
        names = ZH_VARIANTS if c["lang"] == "zh" else EN_VARIANTS
        k = counters[c["category"], c["lang"]]
        counters[c["category"], c["lang"]] += 1
        variant = names[k % len(names)]
        out.append({"id": f"{c['id']}-{variant}", "category": c["category"], "lang": c["lang"], "expect": "block",
                    "kind": "obfuscated", "split": c["split"], "variant": variant, "of": c["id"],
                    "text": obfuscate(c["text"], c["key"], variant)})
    tmp = path.with_suffix(".tmp")
    tmp.write_text("".join(json.dumps(c, ensure_ascii=False) + "\n" for c in out), encoding="utf-8")
    tmp.replace(path)
    return len(out) - len(base)


def percentile(values: list[float], q: float) -> float:
    import numpy as np

    return float(np.percentile(np.asarray(values), q)) if values else float("nan")


def run(policy, cases: list[dict], repeat: int, scanner) -> dict:
    from aigc.safety.moderation import assess, moderate

    check_us: list[float] = []
    moderate_us: list[float] = []
    rows = []
    for c in cases:
        text = c["text"]
        for _ in range(repeat):
            t0 = time.perf_counter()
            verdict = assess(policy, policy.match_terms(text))
            check_us.append((time.perf_counter() - t0) * 1e6)
        for _ in range(repeat):
            t0 = time.perf_counter()
            moderate(text, policy, scanner=scanner)
            moderate_us.append((time.perf_counter() - t0) * 1e6)
        rows.append({**c, "stopped": verdict.flagged, "blocked": verdict.blocked, "on": verdict.on,
                     "terms": [m.rule_id for m in policy.match_terms(text)]})
    return {"rows": rows, "check_us": check_us, "moderate_us": moderate_us}


def rail_overhead(policy, cases: list[dict], scanner, token_chars: int = 2) -> dict:
    """Each case's text streamed through an OutputRail in pieces of ``token_chars`` characters (about
    a token of Chinese): microseconds per ``feed`` in all (segment checks included) and on the path
    where no segment ends (a long text without sentence ends, cap out of reach)."""
    from aigc.safety.rails import OutputRail

    feeds, total = 0, 0.0
    for c in cases:
        text = c["text"] + "\n"
        rail = OutputRail(policy, scanner=scanner)
        t0 = time.perf_counter()
        for i in range(0, len(text), token_chars):
            rail.feed(text[i:i + token_chars])
        rail.finish()
        total += time.perf_counter() - t0
        feeds += -(-len(text) // token_chars)
    rail = OutputRail(policy, scanner=scanner, segment_cap=10**7)
    pieces = ["好的", "颜色", " nice", " soft"] * 25_000
    t0 = time.perf_counter()
    for p in pieces:
        rail.feed(p)
    fast = (time.perf_counter() - t0) / len(pieces)
    return {"token_chars": token_chars, "feeds": feeds, "us_per_feed": round(total / feeds * 1e6, 2),
            "us_per_feed_no_segment_end": round(fast * 1e6, 3)}


def rates(rows: list[dict]) -> dict:
    block = [r for r in rows if r["expect"] == "block"]
    allow = [r for r in rows if r["expect"] == "allow"]
    br = sum(r["stopped"] for r in block) / len(block) if block else None
    fb = sum(r["stopped"] for r in allow) / len(allow) if allow else None
    return {"n_block": len(block), "n_allow": len(allow), "block_rate": None if br is None else round(br, 4),
            "false_block_rate": None if fb is None else round(fb, 4)}


def report(split: str, rows: list[dict]) -> dict:
    """Print and return the rates of one split: per category and language, per variant, per kind."""
    per_cat = {}
    for cat in sorted({r["category"] for r in rows}):
        sub = [r for r in rows if r["category"] == cat]
        per_cat[cat] = {**rates(sub), **{lang: rates([r for r in sub if r["lang"] == lang]) for lang in ("zh", "en")}}
    per_variant = {v: rates([r for r in rows if r.get("variant", "plain") == v and r["expect"] == "block"])
                   ["block_rate"] for v in ["plain", *sorted({r["variant"] for r in rows if "variant" in r})]}
    per_kind = {k: rates([r for r in rows if r["kind"] == k and r["expect"] == "allow"])["false_block_rate"]
                for k in sorted({r["kind"] for r in rows if r["expect"] == "allow"})}
    per_kind_block = {k: rates([r for r in rows if r["kind"] == k and r["expect"] == "block"])["block_rate"]
                      for k in sorted({r["kind"] for r in rows if r["expect"] == "block"})}
    overall = rates(rows)
    misses = [{"id": r["id"], "expect": r["expect"], "text": r["text"], "on": r["on"], "terms": r["terms"]}
              for r in rows if r["stopped"] != (r["expect"] == "block")]
    passed = overall["block_rate"] >= TARGET_BLOCK and overall["false_block_rate"] <= TARGET_FALSE
    cats_pass = all(v["block_rate"] >= TARGET_BLOCK and v["false_block_rate"] <= TARGET_FALSE
                    for v in per_cat.values())

    def f(x):
        return "    -" if x is None else f"{x:.3f}"

    print(f"\n[{split}] {overall['n_block']} should block, {overall['n_allow']} should pass")
    print(f"{'category':<14}{'block':>7}{'false':>7}   {'zh block':>8}{'zh false':>9}   {'en block':>8}{'en false':>9}")
    for cat, v in per_cat.items():
        below = v["block_rate"] < TARGET_BLOCK or v["false_block_rate"] > TARGET_FALSE
        print(f"{cat:<14}{f(v['block_rate']):>7}{f(v['false_block_rate']):>7}   {f(v['zh']['block_rate']):>8}"
              f"{f(v['zh']['false_block_rate']):>9}   {f(v['en']['block_rate']):>8}{f(v['en']['false_block_rate']):>9}"
              f"{'  <- below target' if below else ''}")
    print(f"{'overall':<14}{f(overall['block_rate']):>7}{f(overall['false_block_rate']):>7}   "
          f"target block >= {TARGET_BLOCK}, false <= {TARGET_FALSE}: {'PASS' if passed else 'FAIL'}"
          f" (every category: {'PASS' if cats_pass else 'FAIL'})")
    print("block rate by variant: " + ", ".join(f"{k} {f(v)}" for k, v in per_variant.items()))
    print("false-block rate by kind: " + ", ".join(f"{k} {f(v)}" for k, v in per_kind.items()))
    print("block rate by kind: " + ", ".join(f"{k} {f(v)}" for k, v in per_kind_block.items()))
    for m in misses:
        print(f"  MISS {m['id']:<28} expect {m['expect']:<5} on={m['on']} terms={m['terms']} {m['text']!r}")
    return {"overall": overall, "pass": passed, "every_category_passes": cats_pass, "per_category": per_cat,
            "block_rate_by_variant": per_variant, "block_rate_by_kind": per_kind_block,
            "false_block_rate_by_kind": per_kind, "misses": misses}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--policy", help="a policy file (default: the shipped default policy)")
    ap.add_argument("--cases", default=str(CASES))
    ap.add_argument("--repeat", type=int, default=5, help="timed checks per case")
    ap.add_argument("--out-name", default="policy")
    ap.add_argument("--write-variants", action="store_true", help="rewrite the obfuscated variants, then exit")
    args = ap.parse_args()
    if args.write_variants:
        print(f"wrote {write_variants(Path(args.cases))} variants to {args.cases}")
        return

    from aigc.safety.pii import Scanner
    from aigc.safety.policy import default_policy, load_policy

    policy = load_policy(args.policy) if args.policy else default_policy()
    scanner = Scanner()
    cases = read_cases(Path(args.cases))
    t0 = time.perf_counter()
    res = run(policy, cases, args.repeat, scanner)
    elapsed = time.perf_counter() - t0
    latency = {"check_us": {"p50": round(percentile(res["check_us"], 50), 1),
                            "p95": round(percentile(res["check_us"], 95), 1)}}
    latency["moderate_with_pii_us"] = {"p50": round(percentile(res["moderate_us"], 50), 1),
                                       "p95": round(percentile(res["moderate_us"], 95), 1)}
    overhead = rail_overhead(policy, cases, scanner)
    print(f"policy {policy.version}: {len(cases)} cases, {elapsed:.1f} s")
    splits = {}
    for split in SPLITS:
        rows = [r for r in res["rows"] if r.get("split", "dev") == split]
        if rows:
            splits[split] = report(split, rows)
    print("latency per check (us): " + "; ".join(f"{k} p50 {v['p50']}, p95 {v['p95']}" for k, v in latency.items()))
    print(f"output rail: {overhead['us_per_feed']} us per feed of {overhead['token_chars']} characters "
          f"(segment checks included), {overhead['us_per_feed_no_segment_end']} us when no segment ends")

    judged = [splits[s] for s in HELD_OUT if s in splits]
    passed = bool(judged) and all(r["pass"] for r in judged)
    every = bool(judged) and all(r["every_category_passes"] for r in judged)
    print(f"target judged on {', '.join(s for s in HELD_OUT if s in splits)}: {'PASS' if passed else 'FAIL'} "
          f"(every category: {'PASS' if every else 'FAIL'})")
    path = write_result(args.out_name, {
        "policy_version": policy.version, "cases": _shown(Path(args.cases)), "n_cases": len(cases), "repeat": args.repeat,
        "targets": {"block_rate": TARGET_BLOCK, "false_block_rate": TARGET_FALSE,
                    "judged_on": list(HELD_OUT)},
        "pass": passed, "every_category_passes": every,
        **splits, "latency": latency, "output_rail": overhead})
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
