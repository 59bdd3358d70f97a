"""Training quality at fixed wall-clock budgets on tiny shakespeare (character level).

For each family's `small` preset and each budget (100 s and 300 s by default), trains from
scratch with `--time-budget` (evaluation counted inside the budget; the LR schedule follows the
clock) and reports the validation loss in nats per character over the whole val split (the
last 10 % of the text, as in nanoGPT's shakespeare_char), tokens/s, steps and peak RSS. Each
configuration runs in its own process so peak memory is its own.

Anchor, measured on this machine kind: nanoGPT's CPU recipe (4 layers, 4 heads, 128 wide,
block 64, batch 12) reaches val loss 1.886 after 2,000 iterations, about 95 s, peak RSS 372 MB.

    python benchmarks/text_train.py [--budgets 100 300] [--families gpt lstm] [--threads 2]

Needs ../shared/data/tinyshakespeare; prints a table, writes benchmarks/results/text_train.json.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
DATA = HERE.parents[1] / "shared" / "data" / "tinyshakespeare" / "input.txt"
ANCHOR = {"name": "nanoGPT CPU recipe", "val_loss": 1.886, "seconds": 95, "peak_rss_mb": 372}
TARGET = {100: 1.85, 300: 1.65}


def one(family: str, budget: float, workspace: str, threads: int | None) -> dict:
    """Runs in a child process: ingest (once per workspace), train, report."""
    import aigc
    from aigc.runtime import configure_threads

    n = configure_threads(threads)
    ws = aigc.open_workspace(workspace)
    if not ws.has_dataset("shakespeare"):
        aigc.ingest(DATA, "shakespeare", workspace=ws, split=(0.9, 0.1, 0.0))
    name = f"{family}-{int(budget)}"
    row = aigc.train("shakespeare", family=family, preset="small", name=name, workspace=ws,
                     time_budget=budget, max_steps=10**6)
    s = row["summary"]
    return {"family": family, "budget_s": budget, "val_loss": round(row["best_val_loss"], 4),
            "train_loss": round(s["train_loss"], 4), "steps": row["step"], "elapsed_s": s["elapsed_s"],
            "tokens_per_s": round(s["tokens_seen"] / max(1e-9, s["elapsed_s"])), "threads": n,
            "params": aigc.load(name, workspace=ws).model.hf.num_parameters() if family == "gpt"
            else sum(p.numel() for p in aigc.load(name, workspace=ws).model.parameters()),
            "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--budgets", type=float, nargs="+", default=[100, 300])
    ap.add_argument("--families", nargs="+", default=["gpt", "lstm"])
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--child", nargs=3, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        family, budget, workspace = args.child
        print(json.dumps(one(family, float(budget), workspace, args.threads)))
        return
    if not DATA.exists():
        sys.exit(f"skipped: {DATA} not found (the benchmark needs ../shared/data/tinyshakespeare)")
    rows = []
    with tempfile.TemporaryDirectory(prefix="aigc-bench-") as ws:
        for budget in args.budgets:
            for family in args.families:
                cmd = [sys.executable, __file__, "--child", family, str(budget), ws]
                if args.threads:
                    cmd += ["--threads", str(args.threads)]
                out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
                rows.append(json.loads(out.strip().splitlines()[-1]))
                r = rows[-1]
                print(f"  {family} {budget:.0f}s: val {r['val_loss']:.4f}", file=sys.stderr)
    gpt = {r["budget_s"]: r["val_loss"] for r in rows if r["family"] == "gpt"}
    for r in rows:
        r["target"] = TARGET.get(int(r["budget_s"])) if r["family"] == "gpt" else None
        r["vs_gpt"] = round(r["val_loss"] / gpt[r["budget_s"]], 3) if r["budget_s"] in gpt else None
        r["vs_anchor"] = round(r["val_loss"] / ANCHOR["val_loss"], 3)
    print(f"tiny shakespeare, char level, val loss in nats/char (anchor: {ANCHOR['name']} "
          f"{ANCHOR['val_loss']} at ~{ANCHOR['seconds']} s, {ANCHOR['peak_rss_mb']} MB)")
    head = f"{'family':<6} {'budget':>6} {'val loss':>8} {'target':>6} {'vs gpt':>6} {'steps':>6} " \
           f"{'tok/s':>7} {'params':>8} {'peak RSS':>9}"
    print(head)
    for r in rows:
        target = f"{r['target']:.2f}" if r["target"] else "-"
        print(f"{r['family']:<6} {r['budget_s']:>5.0f}s {r['val_loss']:>8.4f} {target:>6} {r['vs_gpt']:>6.3f} "
              f"{r['steps']:>6} {r['tokens_per_s']:>7,} {r['params'] / 1e6:>7.2f}M {r['peak_rss_mb']:>6} MB")
    result = {"benchmark": "text_train", "anchor": ANCHOR, "rows": rows}
    path = HERE / "results" / "text_train.json"
    path.parent.mkdir(exist_ok=True)
    path.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {path.relative_to(HERE.parent)}")


if __name__ == "__main__":
    main()
