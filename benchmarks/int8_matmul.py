"""The products behind FastLM's weight formats (``aigc.pretrained.decoder.WEIGHT_FORMATS``), one
projection of SmolLM2-135M's MLP (576 -> 1536) at the row counts decoding and prefill use:

- *fp32*: ``x @ W``, W stored (in, out) in float32 (the "float" format);
- *bf16*: the same in bfloat16, x cast to bfloat16 ("bfloat16", and "mixed" from 8 rows);
- *int8, fp32 x*: torch's weight-only int8 kernel (``torch._weight_int8pack_mm``, W (out, in) int8,
  a scale per output, as gpt-fast uses) fed float32 activations: what an earlier version of this
  benchmark measured, 11x-35x slower than fp32, which had ruled int8 out;
- *int8, bf16 x*: the same kernel fed bfloat16 activations, its fast path ("int8"; "mixed" below
  8 rows);
- *dequant*: the int8 matrix de-quantized to bfloat16, then the bf16 product ("int8" prefills of
  more than 16 rows).

``--cold`` reads a different copy of the matrix each call (64 copies, 0.2 GB in float32, more than
the caches hold), as decoding a whole model does; by default the one matrix stays in cache.

    python benchmarks/int8_matmul.py [--threads 1] [--cold]

Prints a table and writes benchmarks/results/int8_matmul.json (commit, date, machine).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import write_result  # noqa: E402

K, N = 576, 1536
ROWS = (1, 4, 8, 16, 64, 256)
COPIES = 64  # --cold: matrices cycled through, beyond the last-level cache
KINDS = ("fp32", "bf16", "int8, fp32 x", "int8, bf16 x", "dequant")


def timed(f, calls: int) -> float:
    for i in range(min(calls, 20)):
        f(i)
    t0 = time.perf_counter()
    for i in range(calls):
        f(i)
    return (time.perf_counter() - t0) / calls * 1e6


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--cold", action="store_true", help="cycle through 64 copies of the matrix (out of cache)")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    copies = COPIES if args.cold else 1
    w = [torch.randn(N, K) * 0.05 for _ in range(copies)]
    scales = [m.abs().amax(1) / 127 for m in w]
    wq = [(m / s[:, None]).round().clamp(-127, 127).to(torch.int8) for m, s in zip(w, scales)]
    sb = [s.to(torch.bfloat16) for s in scales]
    wt = [m.t().contiguous() for m in w]
    wtb = [m.to(torch.bfloat16) for m in wt]
    rows = []
    for r in ROWS:
        x = torch.randn(r, K)
        xb = x.to(torch.bfloat16)
        calls = max(50, 4000 // r)
        fns = {
            "fp32": lambda i: x @ wt[i % copies],
            "bf16": lambda i: xb @ wtb[i % copies],
            "int8, fp32 x": lambda i: torch._weight_int8pack_mm(x, wq[i % copies], scales[i % copies]),
            "int8, bf16 x": lambda i: torch._weight_int8pack_mm(xb, wq[i % copies], sb[i % copies]),
            "dequant": lambda i: xb @ (wq[i % copies].to(torch.bfloat16) * sb[i % copies][:, None]).t(),
        }
        us = {k: timed(f, calls if k != "int8, fp32 x" else max(10, calls // 20)) for k, f in fns.items()}
        exact = x @ wt[0]
        err = {k: float((fns[k](0).float() - exact).abs().max() / exact.abs().max()) for k in fns}
        rows.append({"rows": r, "us": {k: round(v, 1) for k, v in us.items()},
                     "over_fp32": {k: round(v / us["fp32"], 2) for k, v in us.items()},
                     "max_error_of_largest": {k: round(v, 4) for k, v in err.items()}})
    print(f"one {K} -> {N} product, {args.threads} thread(s), matrix {'out of' if args.cold else 'in'} cache; "
          "microseconds (x fp32 time)")
    print(f"{'rows':>5} " + " ".join(f"{k:>20}" for k in KINDS))
    for row in rows:
        print(f"{row['rows']:>5} " + " ".join(f"{row['us'][k]:>11.1f} ({row['over_fp32'][k]:>5.2f}x)" for k in KINDS))
    print(write_result("int8_matmul", {"shape": [K, N], "threads": args.threads, "cold": args.cold,
                                       "torch": torch.__version__, "rows": rows}))


if __name__ == "__main__":
    main()
