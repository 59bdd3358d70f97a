"""Process-level settings: CPU threads, device and precision. Nothing here knows about models.

A small shared machine thrashes when torch and OpenMP each start one thread per logical CPU
(measured on a busy 2-core machine: a tiny GPT step took 708 ms with 2 threads, 70 ms with 1),
so every entry point calls :func:`configure_threads` before heavy work.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from functools import lru_cache

from aigc.errors import InvalidInput

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


def share_threads(processes: int) -> int:
    """Give each of ``processes`` training processes on this machine its share of the torch threads
    configured (``--threads``, ``$AIGC_THREADS`` or the physical cores), at least one: two
    processes on 2 cores that each take both oversubscribe them."""
    import torch

    n = max(1, torch.get_num_threads() // processes)
    torch.set_num_threads(n)
    return n


def worker_threads(threads: int | None = None) -> int:
    """Torch threads of each serving engine worker: ``threads``, or all physical cores but one
    (the last one serves HTTP and JSON)."""
    return threads or max(1, physical_cores() - 1)


def default_memory_limit() -> int:
    """Bytes the serving engine may hold in loaded runs by default: half of this machine's memory,
    at least 2 GiB. A pretrained base served at 16 rows (SmolLM2-135M: weights, decode copy, key/value
    slots and prefix cache, 2.7 GiB) did not fit the fixed 2 GiB of before."""
    import psutil

    return max(2 << 30, psutil.virtual_memory().total // 2)


def default_device() -> str:
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


DECODE_WEIGHTS = ("float", "bfloat16", "int8", "mixed")
ENV_DECODE_WEIGHTS = "AIGC_DECODE_WEIGHTS"


def decode_weights(device: str) -> str:
    """How a pretrained base's fast decoder holds its matrices when it serves
    (:data:`aigc.pretrained.decoder.WEIGHT_FORMATS`): ``$AIGC_DECODE_WEIGHTS`` (``aigc serve
    --decode-weights``), else "mixed" on a CPU (int8 for a few rows, bfloat16 for batches) and the
    base's own float dtype elsewhere.

    Why not float on a CPU: decoding a small base there reads every matrix once per token and goes at
    the speed of memory. ``benchmarks/pretrained.py`` measures each format's decode speed and its
    held-out perplexity against float (README, "Pretrained bases"). Float is the reference: only it is
    bit-equal between a request decoded alone, in a batch or after a cached prefix. On a GPU the
    int8 kernel is not the fast path; there the base's dtype serves."""
    chosen = os.environ.get(ENV_DECODE_WEIGHTS, "").strip().lower()
    if chosen:
        if chosen not in DECODE_WEIGHTS:
            raise InvalidInput(f"${ENV_DECODE_WEIGHTS} must be one of {', '.join(DECODE_WEIGHTS)}, got {chosen!r}")
        return chosen
    return "mixed" if str(device).startswith("cpu") else "float"


def cpu_has_bf16() -> bool:
    """Whether this CPU multiplies bfloat16 natively (AVX-512 BF16 or AMX tiles): there oneDNN's
    bf16 kernels beat float32; elsewhere bf16 is emulated and slower."""
    import torch

    try:
        return bool(torch.cpu._is_avx512_bf16_supported() or torch.cpu._is_amx_tile_supported())
    except AttributeError:  # a torch without these probes (or not an x86 build)
        return False


def default_precision(device: str, cpu_bf16: bool = False) -> str:
    """bf16 autocast on a GPU that supports it, and on a CPU with native bf16 for a family that
    asks for it (``cpu_bf16``: measured faster there; see the family); exact float32 elsewhere
    (correctness first). ``--precision 32-true`` keeps float32 everywhere."""
    import torch

    if device == "cuda" and torch.cuda.is_bf16_supported():
        return "bf16-mixed"
    if device == "cpu" and cpu_bf16 and cpu_has_bf16():
        return "bf16-mixed"
    return "32-true"


@dataclass(frozen=True)
class CpuPlan:
    """Which CPUs a serving engine's decode thread gets to itself, and which everything else shares.

    Why: on a small CPU box the decode loop is the bottleneck, and each time the scheduler puts
    an HTTP, JSON or prefill thread on its core it stops. Measured on 2 cores (small gpt, 16
    streaming clients): unbound, the decode thread waited on the run queue 11 % of the time; bound
    to a core of its own, with the rest of the server on the other, 16-client throughput rose
    3-6 %. vLLM's CPU backend binds its worker threads to cores for the same reason.
    """

    decode: frozenset[int]
    other: frozenset[int]

    @classmethod
    def make(cls, decode_threads: int) -> CpuPlan | None:
        """The last CPU this process may use for a one-thread decode loop, the others for the rest;
        None where that cannot be: one CPU, a multi-threaded worker (OpenMP places its own threads)
        or no affinity API (not Linux)."""
        if decode_threads != 1 or not hasattr(os, "sched_getaffinity"):
            return None
        cpus = sorted(os.sched_getaffinity(0))
        if len(cpus) < 2:
            return None
        return cls(frozenset(cpus[-1:]), frozenset(cpus[:-1]))


def bind_thread(cpus: frozenset[int], native_id: int = 0) -> bool:
    """Restrict one thread (0: the calling one) to ``cpus``; threads it starts later inherit that.
    False where the system refuses (a container's cpuset, say): binding is an optimization."""
    try:
        os.sched_setaffinity(native_id, cpus)
        return True
    except (OSError, AttributeError):
        return False


def bind_process(cpus: frozenset[int]) -> bool:
    """Restrict every thread this process has now to ``cpus`` (Linux: each is a task of its own)."""
    try:
        tids = [int(t) for t in os.listdir("/proc/self/task")]
    except OSError:
        tids = [0]
    return all([bind_thread(cpus, tid) for tid in tids])
