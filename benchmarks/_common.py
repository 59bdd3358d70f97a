"""What every benchmark result carries: where and when it was measured, written atomically.

A results file comes from one invocation: ``provenance()`` records the commit (and whether the
tree had uncommitted changes), the date, the machine and the exact command line, so a figure
quoted anywhere can be traced back to the run that produced it.
"""

from __future__ import annotations

import datetime as _dt
import os
import platform
import subprocess
import sys
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results"


def _git(*args: str) -> str:
    try:
        return subprocess.run(["git", *args], cwd=HERE, capture_output=True, text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return ""


def device_name() -> str:
    import torch

    if torch.cuda.is_available():
        return torch.cuda.get_device_name(0)
    return f"cpu ({os.cpu_count()} logical cores)"


def cpu_model() -> dict[str, Any]:
    """The processor as /proc/cpuinfo names it, with its vector extensions: CPU figures, and the
    ratios between peers, differ by generation, and every session's machine is a 2-core "AMD EPYC" by
    name, so a result says which one it ran on. Empty where there is no /proc/cpuinfo."""
    out: dict[str, Any] = {}
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as f:
            text = f.read()
    except OSError:
        return out
    for line in text.splitlines():
        key, _, value = line.partition(":")
        key, value = key.strip(), value.strip()
        if key in ("model name", "cpu family", "model", "stepping") and key not in out:
            out[key] = value
        elif key == "flags" and "flags" not in out:
            flags = set(value.split())
            out["flags"] = sorted(f for f in flags if f.startswith(("avx512", "amx", "avx_vnni")) or f in ("avx2", "fma"))
        elif not line.strip() and out:
            break
    return out


# Taken when the benchmark starts (it imports this module first), not when it writes: the code
# that ran is the commit checked out then, whatever is committed while it runs.
_STARTED = {
    # A copy of the tree on a lent GPU machine is told its commit (AIGC_COMMIT): the .git it
    # carries was seen to name an older commit than the tree's. AIGC_DATE likewise, for the record.
    "commit": os.environ.get("AIGC_COMMIT") or _git("rev-parse", "HEAD") or "unknown",
    "dirty": False if os.environ.get("AIGC_COMMIT") else bool(_git("status", "--porcelain", "--untracked-files=no")),
    "date": os.environ.get("AIGC_DATE") or _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
}


def provenance() -> dict[str, Any]:
    return {
        **_STARTED,
        "finished": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "machine": f"{platform.machine()}, {device_name()}",
        "cpu": cpu_model(),
        "command": " ".join([Path(sys.argv[0]).name, *map(shown_arg, sys.argv[1:])]),
    }


def shown_arg(arg: str) -> str:
    """A command-line argument as a result records it: an absolute path relative to the repository when it is
    inside it, else its name (results name no machine's folders); anything else as given."""
    if not arg.startswith("/"):
        return arg
    try:
        return str(Path(arg).resolve().relative_to(HERE.parent))
    except ValueError:
        return Path(arg).name


def write_result(name: str, result: dict[str, Any]) -> Path:
    """``benchmarks/results/<name>.json`` with provenance first, written through a rename."""
    from aigc.workspace import write_json_atomic

    RESULTS.mkdir(exist_ok=True)
    path = RESULTS / f"{name}.json"
    write_json_atomic(path, {"benchmark": name, **provenance(), **result})
    return path
