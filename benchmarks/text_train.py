"""Training quality at fixed wall-clock budgets on tiny shakespeare (character level), beside nanoGPT.

For each family's `small` preset and each budget (100 s and 300 s by default), trains from
scratch with `--time-budget` (evaluation counted inside the budget; the LR schedule follows the
clock) and reports the validation loss in nats per character over the whole val split (the
last 10 % of the text, cut at a line boundary), tokens/s, steps and peak RSS. Each configuration
runs in its own process so peak memory is its own.

The peer, nanoGPT, runs in the same invocation from a checkout of it (`--nanogpt PATH`; its code
stays out of this repo): its own `train.py` with its CPU recipe for shakespeare_char (4 layers,
4 heads, 128 wide, batch 12, lr 1e-3, no dropout) except that its block size is set to ours, on
the same split (our train and val text written in its `train.bin`/`val.bin` format), the same
thread count and the same budget. nanoGPT stops by iteration count, not by the clock, so a short
calibration run measures its time per iteration here and `max_iters` (= `lr_decay_iters`, so its
cosine schedule anneals within the budget) is set to fill the budget; the time its loop really
took is reported. Its checkpoint is then scored with the same protocol as ours: every val
character once, in non-overlapping windows of the block size (ours also scores one end-of-text
token at each end of the split, 2 of ~111,000 positions).

    python benchmarks/text_train.py [--budgets 100 300] [--families gpt lstm] [--threads 2] \
        [--nanogpt /path/to/nanoGPT]

Needs ../shared/data/tinyshakespeare; prints a table, writes benchmarks/results/text_train.json.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import pickle
import re
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import write_result  # noqa: E402

HERE = Path(__file__).resolve().parent
DATA = HERE.parents[1] / "shared" / "data" / "tinyshakespeare" / "input.txt"
TARGET = {100: 1.85, 300: 1.65}
# nanoGPT's README recipe for a CPU ("I only have a macbook"), block size aside (set to ours).
NANOGPT_RECIPE = dict(device="cpu", compile=False, dtype="float32", eval_iters=20, log_interval=1,
                      batch_size=12, n_layer=4, n_head=4, n_embd=128, dropout=0.0, learning_rate=1e-3,
                      min_lr=1e-4, beta2=0.99, warmup_iters=100, wandb_log=False)
CALIBRATION_ITERS = 30


def _ensure_dataset(ws) -> None:
    import aigc

    if not ws.has_dataset("shakespeare"):
        aigc.ingest(DATA, "shakespeare", workspace=ws, split=(0.9, 0.1, 0.0))


def one(family: str, budget: float, workspace: str, threads: int | None) -> dict:
    """Runs in a child process: ingest (once per workspace), train, report."""
    import aigc
    from aigc.runtime import configure_threads

    n = configure_threads(threads)
    ws = aigc.open_workspace(workspace)
    _ensure_dataset(ws)
    name = f"{family}-{int(budget)}"
    row = aigc.train("shakespeare", family=family, preset="small", name=name, workspace=ws,
                     time_budget=budget, max_steps=10**6)
    s = row["summary"]
    model = aigc.load(name, workspace=ws).model
    return {"family": family, "budget_s": budget, "val_loss": round(row["best_val_loss"], 4),
            "train_loss": round(s["train_loss"], 4), "steps": row["step"], "elapsed_s": s["elapsed_s"],
            "tokens_per_s": round(s["tokens_seen"] / max(1e-9, s["elapsed_s"])), "threads": n,
            "block_size": model.block_size, "params": sum(p.numel() for p in model.parameters()),
            "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)}


def _nanogpt_data(workspace: str, out: Path) -> None:
    """Our split, in nanoGPT's char format: uint16 ids of train/val text + meta.pkl."""
    import aigc
    import numpy as np

    ws = aigc.open_workspace(workspace)
    _ensure_dataset(ws)
    folder = ws.dataset_path("shakespeare")
    texts = {s: "".join(json.loads(line)["text"] for line in open(folder / f"{s}.jsonl", encoding="utf-8"))
             for s in ("train", "val")}
    chars = sorted(set(texts["train"]) | set(texts["val"]))
    stoi = {ch: i for i, ch in enumerate(chars)}
    out.mkdir(parents=True, exist_ok=True)
    for split, text in texts.items():
        np.array([stoi[c] for c in text], dtype=np.uint16).tofile(out / f"{split}.bin")
    with open(out / "meta.pkl", "wb") as f:
        pickle.dump({"vocab_size": len(chars), "itos": dict(enumerate(chars)), "stoi": stoi}, f)


def _run_nanogpt(src: Path, workdir: Path, args: dict, env: dict, limit_s: float) -> tuple[list[tuple[float, str]], float]:
    """Run its train.py; return its output lines with arrival times, and the wall time."""
    cmd = [sys.executable, "-u", "train.py", "config/train_shakespeare_char.py"]
    cmd += [f"--{k}={v}" for k, v in args.items()]
    lines: list[tuple[float, str]] = []
    t0 = time.perf_counter()
    with subprocess.Popen(cmd, cwd=workdir, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                          text=True) as proc:
        for line in proc.stdout:
            lines.append((time.perf_counter() - t0, line.rstrip()))
            if time.perf_counter() - t0 > limit_s:
                proc.kill()
                break
        proc.wait()
    if proc.returncode != 0:
        tail = "\n".join(line for _, line in lines[-15:])
        raise SystemExit(f"nanoGPT's train.py failed ({proc.returncode}):\n{tail}")
    return lines, time.perf_counter() - t0


def _iter_times(lines: list[tuple[float, str]]) -> list[tuple[int, float, float]]:
    """(iteration, arrival time, its own reported ms) for every `iter N: ... time Xms` line."""
    out = []
    for t, line in lines:
        m = re.match(r"iter (\d+): loss [\d.naninf]+, time ([\d.]+)ms", line)
        if m:
            out.append((int(m.group(1)), t, float(m.group(2))))
    return out


def _score_nanogpt(src: Path, ckpt_path: Path, val_bin: Path) -> float:
    """Nats per character of its checkpoint over the whole val split: non-overlapping windows."""
    import numpy as np
    import torch

    sys.path.insert(0, str(src))
    from model import GPT, GPTConfig  # nanoGPT's own model.py, from the checkout

    ckpt = torch.load(ckpt_path, map_location="cpu", weights_only=False)
    model = GPT(GPTConfig(**ckpt["model_args"]))
    state = {k.removeprefix("_orig_mod."): v for k, v in ckpt["model"].items()}
    model.load_state_dict(state)
    model.eval()
    data = torch.from_numpy(np.fromfile(val_bin, dtype=np.uint16).astype(np.int64))
    T = ckpt["model_args"]["block_size"]
    n = len(data) - 1  # predictable positions
    total, count = 0.0, 0
    with torch.no_grad():
        for start in range(0, n, T * 16):
            xs, ys = [], []
            for w in range(start, min(start + T * 16, n), T):
                end = min(w + T, n)
                x = torch.zeros(T, dtype=torch.long)
                y = torch.full((T,), -1, dtype=torch.long)  # -1: nanoGPT's ignore_index
                x[: end - w] = data[w:end]
                y[: end - w] = data[w + 1 : end + 1]
                xs.append(x)
                ys.append(y)
            x, y = torch.stack(xs), torch.stack(ys)
            _, loss = model(x, y)  # mean over the scored positions
            k = int((y != -1).sum())
            total += float(loss) * k
            count += k
    return total / count


def nanogpt(src: Path, budget: float, workspace: str, threads: int | None, block_size: int) -> dict:
    """Runs in a child process: nanoGPT's own train.py on our split, filling the same budget."""
    n = threads or os.cpu_count() or 1
    env = {**os.environ, "OMP_NUM_THREADS": str(n), "MKL_NUM_THREADS": str(n)}
    with tempfile.TemporaryDirectory(prefix="nanogpt-") as tmp:
        work = Path(tmp)
        for name in ("train.py", "model.py", "configurator.py", "config"):  # it reads them from its cwd
            (work / name).symlink_to((src / name).resolve())
        _nanogpt_data(workspace, work / "data" / "shakespeare_char")
        base = {**NANOGPT_RECIPE, "block_size": block_size}
        # 1. calibrate: its time per iteration on this machine, now
        cal = {**base, "out_dir": str(work / "cal"), "max_iters": CALIBRATION_ITERS,
               "lr_decay_iters": CALIBRATION_ITERS, "eval_interval": 10**9, "always_save_checkpoint": False}
        lines, _ = _run_nanogpt(src, work, cal, env, limit_s=600)
        its = _iter_times(lines)
        ms = sorted(t for i, _, t in its if i >= 5)  # skip the first iterations (warm-up)
        ms_per_iter = ms[len(ms) // 2]
        # 2. the run: max_iters fills the budget; one evaluation + checkpoint at the end
        max_iters = max(1, int(budget * 1000 / ms_per_iter))
        run = {**base, "out_dir": str(work / "out"), "max_iters": max_iters, "lr_decay_iters": max_iters,
               "eval_interval": max_iters, "always_save_checkpoint": True}
        lines, wall = _run_nanogpt(src, work, run, env, limit_s=budget * 3 + 120)
        its = _iter_times(lines)
        loop_s = its[-1][1] - its[0][1] if len(its) > 1 else float("nan")
        own_val = [float(m.group(1)) for _, line in lines if (m := re.search(r"val loss ([\d.]+)", line))]
        last_train = [float(m.group(1)) for _, line in lines if (m := re.match(r"iter \d+: loss ([\d.]+)", line))]
        ckpt = work / "out" / "ckpt.pt"
        val_loss = _score_nanogpt(src, ckpt, work / "data" / "shakespeare_char" / "val.bin")
        import torch

        params = sum(v.numel() for k, v in torch.load(ckpt, map_location="cpu", weights_only=False)["model"].items()
                     if not k.endswith(".attn.bias"))
    return {"family": "nanoGPT", "budget_s": budget, "val_loss": round(val_loss, 4),
            "train_loss": round(last_train[-1], 4) if last_train else None,
            "own_val_estimate": own_val[-1] if own_val else None,
            "steps": its[-1][0] if its else 0, "elapsed_s": round(loop_s, 1), "process_wall_s": round(wall, 1),
            "calibrated_ms_per_iter": round(ms_per_iter, 2),
            "tokens_per_s": round(its[-1][0] * base["batch_size"] * block_size / loop_s) if its else 0,
            "threads": n, "block_size": block_size, "params": params,
            "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024)}


def _child(cmd: list[str]) -> dict:
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        sys.exit(f"error: {' '.join(cmd[2:5])} failed:\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--budgets", type=float, nargs="+", default=[100, 300])
    ap.add_argument("--families", nargs="+", default=["gpt", "lstm"])
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--nanogpt", type=Path, default=None,
                    help="a checkout of karpathy/nanoGPT (train.py, model.py, config/): run it beside ours")
    ap.add_argument("--child", nargs=3, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        family, budget, workspace = args.child
        if family == "nanoGPT":
            from aigc.models.gpt import GPT

            block = GPT.PRESETS["small"]["block_size"]
            print(json.dumps(nanogpt(args.nanogpt, float(budget), workspace, args.threads, block)))
        else:
            print(json.dumps(one(family, float(budget), workspace, args.threads)))
        return
    if not DATA.exists():
        sys.exit(f"skipped: {DATA} not found (the benchmark needs ../shared/data/tinyshakespeare)")
    if args.nanogpt is not None and not (args.nanogpt / "train.py").exists():
        sys.exit(f"error: {args.nanogpt} is not a nanoGPT checkout (no train.py)")
    families = list(args.families) + (["nanoGPT"] if args.nanogpt else [])
    rows = []
    with tempfile.TemporaryDirectory(prefix="aigc-bench-") as ws:
        for budget in args.budgets:
            for family in families:
                cmd = [sys.executable, __file__, "--child", family, str(budget), ws]
                if args.threads:
                    cmd += ["--threads", str(args.threads)]
                if args.nanogpt:
                    cmd += ["--nanogpt", str(args.nanogpt)]
                rows.append(_child(cmd))
                print(f"  {family} {budget:.0f}s: val {rows[-1]['val_loss']:.4f}", file=sys.stderr)
    peer = {r["budget_s"]: r["val_loss"] for r in rows if r["family"] == "nanoGPT"}
    for r in rows:
        r["target"] = TARGET.get(int(r["budget_s"])) if r["family"] == "gpt" else None
        r["vs_nanogpt"] = round(r["val_loss"] / peer[r["budget_s"]], 3) if r["budget_s"] in peer else None
    print("tiny shakespeare, char level, val loss in nats/char over the whole val split, same split, "
          "budget and threads for every row (nanoGPT: its own train.py, run here)")
    head = f"{'family':<8} {'budget':>6} {'val loss':>8} {'target':>6} {'vs nanoGPT':>10} {'steps':>6} " \
           f"{'tok/s':>7} {'block':>5} {'params':>8} {'peak RSS':>9}"
    print(head)
    for r in rows:
        target = f"{r['target']:.2f}" if r["target"] else "-"
        vs = f"{r['vs_nanogpt']:.3f}" if r["vs_nanogpt"] else "-"
        print(f"{r['family']:<8} {r['budget_s']:>5.0f}s {r['val_loss']:>8.4f} {target:>6} {vs:>10} {r['steps']:>6} "
              f"{r['tokens_per_s']:>7,} {r['block_size']:>5} {r['params'] / 1e6:>7.2f}M {r['peak_rss_mb']:>6} MB")
    path = write_result("text_train", {"nanogpt_recipe": NANOGPT_RECIPE if args.nanogpt else None, "rows": rows})
    print(f"wrote {path.relative_to(HERE.parent)}")


if __name__ == "__main__":
    main()
