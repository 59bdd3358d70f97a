"""Whether int8 weights could make decoding faster here: one projection of SmolLM2-135M's MLP
(576 -> 1536) as the fp32 product decoding uses (``x @ W``, W stored (in, out)) against torch's
int8 weight-only kernel (``torch._weight_int8pack_mm``, per-row scales, as gpt-fast uses), at
batch 1 and 16, one thread.

    python benchmarks/int8_matmul.py

Prints a table and writes benchmarks/results/int8_matmul.json (commit, date, machine).
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import write_result  # noqa: E402

K, N, REPEATS = 576, 1536, 2000


def timed(f) -> float:
    for _ in range(50):
        f()
    t0 = time.perf_counter()
    for _ in range(REPEATS):
        f()
    return (time.perf_counter() - t0) / REPEATS * 1e6


def main() -> None:
    torch.set_num_threads(1)
    torch.manual_seed(0)
    rows = []
    for batch in (1, 16):
        x, w = torch.randn(batch, K), torch.randn(N, K)
        scales = w.abs().amax(1) / 127
        wq = (w / scales[:, None]).round().clamp(-128, 127).to(torch.int8)
        wt = w.t().contiguous()
        fp32 = timed(lambda: x @ wt)
        int8 = timed(lambda: torch._weight_int8pack_mm(x, wq, scales))
        err = float((torch._weight_int8pack_mm(x, wq, scales) - x @ wt).abs().max())
        rows.append({"batch": batch, "fp32_us": round(fp32, 1), "int8_us": round(int8, 1),
                     "int8_over_fp32": round(int8 / fp32, 2), "max_abs_error": round(err, 3)})
    print(f"{'batch':>5} {'fp32 us':>9} {'int8 us':>9} {'int8/fp32':>9}")
    for r in rows:
        print(f"{r['batch']:>5} {r['fp32_us']:>9} {r['int8_us']:>9} {r['int8_over_fp32']:>9}")
    print(write_result("int8_matmul", {"shape": [K, N], "threads": 1, "torch": torch.__version__, "rows": rows}))


if __name__ == "__main__":
    main()
