"""The copywriting desk (issue 15) on the project's own fixture: 30 products (15 zh, 15 en), their
briefs, the brand rules and a human-written control text each (benchmarks/fixtures/copy).

Four ways to write each product's copy, measured with the same checks (:mod:`aigc.apps.copy.checks`,
:mod:`aigc.apps.copy.rules`, the workspace's default safety policy) in one invocation:

- ``control``: the human text (the bar);
- ``template``: the fill-in baseline (:func:`aigc.apps.copy.desk.template_copy`: every attribute in
  one fixed frame);
- ``unranked``: the first of ``--n`` drafts of the instruct model as drawn (cleaned, nothing else);
- ``desk``: the desk's top candidate (``--n`` x ``--pool`` drafts, fitted to the channel's length,
  omissions repaired with a spec sentence, checked and ranked).

(Not ``benchmarks/copy.py`` as issue 15 names it: a script's folder comes first on ``sys.path``, so a
``copy.py`` there shadows the standard library's ``copy`` for every import the benchmark makes.)

Per system, over the products: attribute coverage of the top text (target >= 0.95) and of the
model's own words in it (before the desk's repair sentence: what the model wrote), the share
with an invented attribute value (<= 0.05), rule violations (0), the share passing every check,
and distinct-2 across the ``--n`` candidates of a product (template: one text).

    python benchmarks/copy_desk.py [--model smollm2-135m-instruct] [--n 5] [--pool 3] [--limit 30]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "2")
sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import write_result  # noqa: E402

FIXTURE = Path(__file__).resolve().parent / "fixtures" / "copy"
SYSTEMS = ("control", "template", "unranked", "desk")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", default=None, help="instruct model (default: the desk's, the bundled SmolLM2)")
    ap.add_argument("--n", type=int, default=5)
    ap.add_argument("--pool", type=int, default=3)
    ap.add_argument("--limit", type=int, default=0, help="only the first N products of each language")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--gemma", action="store_true",
                    help="register the bundled Gemma 3 270M (installed with `make gemma`; you accept its terms) so "
                         "the desk writes Chinese copy with it")
    args = ap.parse_args()

    import torch

    torch.set_num_threads(args.threads)
    from aigc import open_workspace
    from aigc.apps.copy.checks import distinct_n
    from aigc.apps.copy.desk import Desk, catalogue_lexicon, template_copy
    from aigc.apps.copy.rules import load_rules

    products = [json.loads(line) for line in (FIXTURE / "products.jsonl").read_text("utf-8").splitlines() if line]
    if args.limit:
        products = [p for lang in ("zh", "en") for p in [q for q in products if q["lang"] == lang][:args.limit]]
    ws = open_workspace(tempfile.mkdtemp(prefix="aigc-bench-copy-"))
    if args.gemma:
        from aigc.pretrained.bases import add_base

        add_base(ws, "gemma-3-270m", accept_license=True)
    desk = Desk(ws, load_rules(FIXTURE / "rules.yaml"), model=args.model)
    lexicon = catalogue_lexicon([p["attributes"] for p in products])
    rows = []
    t_all = time.perf_counter()
    for i, p in enumerate(products, 1):
        attrs, brief = p["attributes"], p["brief"]
        channel = brief["channel"]
        texts = {"control": [p["control"]], "template": [template_copy(attrs, brief)] * args.n}
        t = time.perf_counter()
        unranked = desk.write(attrs, brief, n=args.n, seed=i, rank=False, lexicon=lexicon)
        t_unranked = time.perf_counter() - t
        t = time.perf_counter()
        ranked = desk.write(attrs, brief, n=args.n, pool=args.pool, seed=i, lexicon=lexicon)
        t_desk = time.perf_counter() - t
        texts["unranked"] = [c["text"] for c in unranked["candidates"]]
        texts["desk"] = [c["text"] for c in ranked["candidates"]]
        row = {"id": p["id"], "lang": p["lang"], "channel": channel, "model": ranked["model"],
               "seconds": {"unranked": t_unranked, "desk": t_desk}}
        for system in SYSTEMS:
            top = texts[system][0] if texts[system] else ""
            ch = desk.check(top, attrs, channel, lexicon)
            row[system] = {"text": top, "coverage": ch["coverage"]["score"], "invented": len(ch["invented"]) > 0,
                           "violations": len(ch["violations"]), "rules": sorted({v["rule"] for v in ch["violations"]}),
                           "passed": ch["passed"], "distinct2": distinct_n(texts[system], 2)
                           if len(texts[system]) > 1 else None}
        row["desk"]["repaired"] = ranked["candidates"][0]["repaired"] if ranked["candidates"] else []
        row["desk"]["own_coverage"] = ranked["candidates"][0]["checks"]["own_coverage"] if ranked["candidates"] else 0
        rows.append(row)
        print(f"[{i}/{len(products)}] {p['id']}: desk coverage {row['desk']['coverage']:.2f} passed "
              f"{row['desk']['passed']} ({t_desk:.1f} s); unranked {row['unranked']['coverage']:.2f} "
              f"{row['unranked']['passed']}", flush=True)

    def summary(sel):
        out = {}
        for system in SYSTEMS:
            rs = [r[system] for r in sel]
            d2 = [r["distinct2"] for r in rs if r["distinct2"] is not None]
            out[system] = {"coverage": sum(r["coverage"] for r in rs) / len(rs),
                           "own_coverage": sum(r.get("own_coverage", r["coverage"]) for r in rs) / len(rs),
                           "invented_rate": sum(r["invented"] for r in rs) / len(rs),
                           "violations": sum(r["violations"] for r in rs),
                           "passed": sum(r["passed"] for r in rs) / len(rs),
                           "distinct2": sum(d2) / len(d2) if d2 else None}
        return out

    table = {"all": summary(rows), "zh": summary([r for r in rows if r["lang"] == "zh"]),
             "en": summary([r for r in rows if r["lang"] == "en"])}
    print(f"\n{'':10}{'system':<10}{'coverage':>10}{'own cov.':>10}{'invented':>10}{'violations':>12}{'passed':>8}"
          f"{'distinct-2':>12}")
    for part, res in table.items():
        for system, m in res.items():
            d2 = "-" if m["distinct2"] is None else f"{m['distinct2']:.3f}"
            print(f"{part:<10}{system:<10}{m['coverage']:>10.3f}{m['own_coverage']:>10.3f}{m['invented_rate']:>10.3f}"
                  f"{m['violations']:>12d}{m['passed']:>8.3f}{d2:>12}")
    secs = [r["seconds"]["desk"] for r in rows]
    path = write_result("copy_desk", {
        "models": sorted({r["model"] for r in rows}), "n": args.n, "pool": args.pool, "threads": args.threads, "products": len(rows),
        "summary": table, "desk_seconds_per_product": {"mean": sum(secs) / len(secs), "max": max(secs)},
        "total_seconds": time.perf_counter() - t_all, "rows": rows})
    print(f"\nwrote {path}")


if __name__ == "__main__":
    main()
