"""Process-level settings: CPU threads, device and precision. Nothing here knows about models.

A small shared machine thrashes when torch and OpenMP each start one thread per logical CPU
(measured on a busy 2-core machine: a tiny GPT step took 708 ms with 2 threads, 70 ms with 1),
so every entry point calls :func:`configure_threads` before heavy work.
"""

from __future__ import annotations

import os
from functools import lru_cache

ENV_THREADS = "AIGC_THREADS"


@lru_cache(maxsize=1)
def physical_cores() -> int:
    """Physical cores from /proc/cpuinfo (Linux); falls back to the logical count."""
    try:
        cores = set()
        phys = core = None
        with open("/proc/cpuinfo", encoding="ascii", errors="ignore") as f:
            for line in f:
                if line.startswith("physical id"):
                    phys = line.split(":")[1].strip()
                elif line.startswith("core id"):
                    core = line.split(":")[1].strip()
                elif not line.strip() and core is not None:
                    cores.add((phys, core))
                    phys = core = None
        if core is not None:
            cores.add((phys, core))
        if cores:
            return len(cores)
    except OSError:
        pass
    return os.cpu_count() or 1


def configure_threads(threads: int | None = None) -> int:
    """Set torch's intra-op threads (and OpenMP's) to ``threads``, ``$AIGC_THREADS`` or the physical cores."""
    import torch

    n = threads or int(os.environ.get(ENV_THREADS) or 0) or physical_cores()
    n = max(1, n)
    os.environ.setdefault("OMP_NUM_THREADS", str(n))
    if torch.get_num_threads() != n:
        torch.set_num_threads(n)
    return n


def default_device() -> str:
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def default_precision(device: str) -> str:
    """bf16 autocast on a GPU that supports it; exact float32 elsewhere (correctness first)."""
    import torch

    if device == "cuda" and torch.cuda.is_bf16_supported():
        return "bf16-mixed"
    return "32-true"
