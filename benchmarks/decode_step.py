"""One continuous-batching decode step of the `small` gpt: weights stored transposed vs as modules hold them.

`GPT.decode_slots` feeds one token to each live row of a slot cache, every row at its own
length. It reads its projections from `DecodeWeights`, stored (in, out) and contiguous. The
peer, side by side in this process, is the same step with the matrices as the `nn.Linear`
modules keep them: (out, in), read through a transposed view. That is what `F.linear(x, W)`
does, and what this code did before. Rows are at equal lengths (66) and at staggered ones
(3, 11, ..., 123: how a serving batch looks). Also printed: 16 x the batch-1 step time over the
batch-16 one, what batching 16 requests gains in the model step alone (serving gains more, as a
step's other work is paid once per batch).

    python benchmarks/decode_step.py [--threads 1] [--steps 400]

Prints a table and writes benchmarks/results/decode_step.json. Needs nothing from ../shared.
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import time
from importlib import resources
from pathlib import Path

import torch

from aigc.models.gpt import GPT, DecodeWeights
from aigc.models.registry import make_config
from aigc.runtime import configure_threads
sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import write_result  # noqa: E402

HERE = Path(__file__).resolve().parent


def vocab_size() -> int:
    """About the size of the character vocabulary `serve_load.py` serves: the distinct characters
    of the bundled shop CSV, plus a few special tokens."""
    text = (resources.files("aigc") / "resources" / "shop_copy.csv").read_text(encoding="utf-8")
    return len(set(text)) + 4


def as_modules_hold_them(w: DecodeWeights) -> DecodeWeights:
    """The same matrices as transposed views of (out, in) tensors: ``x @ W.t()``, F.linear's layout."""
    def view(t: torch.Tensor) -> torch.Tensor:
        return t.t().contiguous().t()
    layers = [(n1, view(qkv), view(o), n2, view(gu), view(down)) for n1, qkv, o, n2, gu, down in w.layers]
    return DecodeWeights(layers, w.norm, view(w.head))


def step_ms(model: GPT, weights: DecodeWeights, lengths: list[int], steps: int) -> tuple[float, torch.Tensor]:
    slots = model.init_slots(16)
    slots.weights = weights
    B = len(lengths)
    start = torch.tensor(lengths)
    tokens = torch.randint(4, model.config.vocab_size, (B,), generator=torch.Generator().manual_seed(0))
    times = []
    with torch.inference_mode():
        for _ in range(steps):
            slots.lengths[:B] = start
            t0 = time.perf_counter()
            logits = model.decode_slots(tokens, slots)
            times.append(time.perf_counter() - t0)
    times.sort()
    return 1000 * times[len(times) // 2], logits


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--steps", type=int, default=400)
    args = ap.parse_args()
    configure_threads(args.threads)
    torch.manual_seed(0)
    model = GPT(make_config(GPT, "small", {"vocab_size": vocab_size()})).eval()
    ours = model._decode_weights()
    peer = as_modules_hold_them(ours)
    cases = {"batch 1": [66], "batch 4, equal": [66] * 4, "batch 16, equal": [66] * 16,
             "batch 16, staggered": [3 + 8 * i for i in range(16)]}
    rows = []
    for name, lengths in cases.items():
        step_ms(model, ours, lengths, 20)  # warm-up
        t_ours, a = step_ms(model, ours, lengths, args.steps)
        t_peer, b = step_ms(model, peer, lengths, args.steps)
        rows.append({"case": name, "batch": len(lengths), "ours_ms": round(t_ours, 3),
                     "peer_ms": round(t_peer, 3),
                     "speedup": round(t_peer / t_ours, 2), "max_abs_diff": float((a - b).abs().max())})
    one = rows[0]
    cap = {k: round(16 * one[f"{k}_ms"] / rows[-1][f"{k}_ms"], 2) for k in ("ours", "peer")}
    print(f"gpt small ({sum(p.numel() for p in model.parameters()) / 1e6:.2f} M parameters), decode_slots, "
          f"{args.threads} thread(s), median of {args.steps} steps, {platform.machine()} "
          f"{os.cpu_count()} CPUs")
    print(f"{'case':<22} {'transposed ms':>13} {'module layout ms':>16} {'speedup':>8} {'max |diff|':>11}")
    for r in rows:
        print(f"{r['case']:<22} {r['ours_ms']:>13} {r['peer_ms']:>16} {r['speedup']:>7}x "
              f"{r['max_abs_diff']:>11.2g}")
    print(f"16 x step(batch 1) / step(batch 16, staggered): transposed {cap['ours']}x, "
          f"module layout {cap['peer']}x")
    out = {"benchmark": "decode_step", "threads": args.threads, "steps": args.steps,
           "torch": torch.__version__,
           "rows": rows, "batch16_over_batch1_cap": cap, "machine_detail": {"cpus": os.cpu_count()}}
    out.pop("benchmark")
    path = write_result("decode_step", out)
    print(f"wrote {path.relative_to(HERE.parent)}")


if __name__ == "__main__":
    main()
