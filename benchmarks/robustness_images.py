"""Image families on data sets they were not built on, with no per-set settings: the image half of
``benchmarks/robustness.py`` (issue 11).

Three sets, each ingested the way a user would (``aigc.ingest`` of an .npz):

- ``fashion-mnist``: the 60,000 train images of ../shared/data/fashion-mnist, 28x28 grey;
- ``digits``: scikit-learn's bundled 8x8 digits upscaled to 16x16 (scripts/make_digits.py);
- ``shapes``: coloured shapes, the shape is the class, colour/size/position random, 32x32 RGB
  (scripts/make_shapes.py).

For each set and family (``gan``, ``diffusion``; preset ``small``) one training under the same
wall-clock budget, then ``aigc.evaluate`` (domain-classifier FID, precision, recall, conditional
accuracy) and a sample grid, one row per class, in benchmarks/results/robustness/<set>_<family>.png.
The target of issue 11 is conditional accuracy >= 0.90 and recall >= 0.5 on every set.

    python benchmarks/robustness_images.py [--budget 300] [--sets fashion-mnist digits shapes]
                                           [--families gan diffusion] [--samples 500] [--threads N]
                                           [--set FAMILY.KEY=VALUE ...] [--seed N]

``--set diffusion.offset_noise=0.1`` overrides one model config field of one family on every set (as
``aigc train --set`` does), so a candidate default is measured on all sets in one invocation; the
overrides are recorded in the results file.

Writes benchmarks/results/robustness_images.json (one invocation: commit, date, machine).
``run_images(workspace, budget_s, sets, families)`` is the same as a function.
"""

from __future__ import annotations

import argparse
import gzip
import struct
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
RESULTS = HERE / "results"
GRIDS = RESULTS / "robustness"
DEFAULT_OUT = RESULTS / "robustness_images.json"
FMNIST = REPO.parent / "shared" / "data" / "fashion-mnist"
FMNIST_CLASSES = ["T-shirt", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag",
                  "Ankle boot"]
SETS = ("fashion-mnist", "digits", "shapes")
FAMILIES = ("gan", "diffusion")
TARGET = {"conditional_accuracy": 0.90, "recall": 0.5}
GRID_PER_CLASS = 8
# train/val/test for every set: the digits' 1,797 images with ingest's default 5 % would leave about
# 80 test images, too few for precision and recall; 10 % gives about 180
SPLIT = (0.8, 0.1, 0.1)
KEYS = ("fid", "fid_floor_train_vs_test", "kid_mean", "precision", "recall", "conditional_accuracy",
        "seconds_per_1000_samples")

sys.path.insert(0, str(REPO / "scripts"))
from make_digits import digits  # noqa: E402
from make_shapes import draw_shapes, write_npz  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import provenance  # noqa: E402


def _read_idx(path: Path) -> np.ndarray:
    with gzip.open(path) as f:
        magic, n = struct.unpack(">II", f.read(8))
        dims = struct.unpack(">" + "I" * ((magic & 0xFF) - 1), f.read(4 * ((magic & 0xFF) - 1)))
        return np.frombuffer(f.read(), np.uint8).reshape(n, *dims)


def write_set(name: str, out_dir: Path) -> Path:
    """The .npz of set ``name`` (x uint8, y class names) under ``out_dir``."""
    path = out_dir / f"{name}.npz"
    if name == "fashion-mnist":
        if not FMNIST.exists():
            raise FileNotFoundError(f"{FMNIST} not found: the fashion-mnist set needs ../shared/data/fashion-mnist")
        x = _read_idx(FMNIST / "train-images-idx3-ubyte.gz")
        y = np.array(FMNIST_CLASSES)[_read_idx(FMNIST / "train-labels-idx1-ubyte.gz")]
    elif name == "digits":
        x, y = digits(16)
    elif name == "shapes":
        x, y = draw_shapes(6000, 32)
    else:
        raise ValueError(f"unknown set {name!r}: choose from {', '.join(SETS)}")
    write_npz(path, x, y)
    return path


def run_one(ws, dataset: str, family: str, budget_s: float, samples: int, grid_dir: Path | None,
            model: dict | None = None, seed: int | None = None) -> dict:
    """Train ``family`` small on ``dataset`` for ``budget_s`` seconds (``model`` overriding the
    preset's config), evaluate, draw the grid."""
    import torch

    import aigc
    from aigc.data.images import write_grid
    from aigc.image_generation import to_uint8

    name = f"{dataset}-{family}"
    t0 = time.perf_counter()
    options = {} if seed is None else {"seed": seed}
    row = aigc.train(dataset, family=family, preset="small", name=name, workspace=ws, time_budget=budget_s,
                     max_steps=10**7, model=model or None, **options)
    train_s = time.perf_counter() - t0
    result = aigc.evaluate(name, workspace=ws, n_samples=samples)
    gen = aigc.load(name, workspace=ws)
    if grid_dir is not None:
        rows = [gen.sample(GRID_PER_CLASS, cond={"label": c}, seed=7) for c in gen.classes]
        grid_dir.mkdir(parents=True, exist_ok=True)
        write_grid(grid_dir / f"{dataset}_{family}.png", list(to_uint8(torch.cat(rows))), per_row=GRID_PER_CLASS)
    s = row["summary"]
    out = {"family": family, "budget_s": budget_s, "steps": row["step"], "stop_reason": s.get("stop_reason"),
           "train_wall_s": round(train_s, 1),
           "images_per_s": round(s["tokens_seen"] / max(1e-9, s["elapsed_s"]), 1),
           **{k: result.get(k) for k in KEYS},
           "classifier_accuracy": result["classifier"]["test_accuracy"]}
    out["meets_target"] = all((out.get(k) or 0.0) >= v for k, v in TARGET.items())
    return out


def run_images(workspace: str | Path, budget_s: float, sets=SETS, families=FAMILIES, *, samples: int = 500,
               grid_dir: Path | None = GRIDS, overrides: dict[str, dict] | None = None,
               seed: int | None = None) -> dict:
    """Ingest ``sets`` into ``workspace`` (skipping those already there), train and evaluate each
    family on each, and return ``{"sets": {set: {family: row}}, "target": ..., "all_meet_target": ...}``.
    Each row: steps, images/s, FID (and the train-vs-test floor), KID, precision, recall,
    conditional accuracy, the classifier's own test accuracy, and whether the target is met."""
    import aigc

    ws = aigc.open_workspace(workspace)
    table: dict[str, dict] = {}
    for s in sets:
        if not ws.has_dataset(s):
            aigc.ingest(write_set(s, Path(ws.root)), s, workspace=ws, split=SPLIT)
        table[s] = {}
        for f in families:
            table[s][f] = run_one(ws, s, f, budget_s, samples, grid_dir, (overrides or {}).get(f), seed)
            print(f"{s:14} {f:10} " + "  ".join(f"{k} {table[s][f][k]}" for k in
                  ("steps", "fid", "precision", "recall", "conditional_accuracy")), flush=True)
    rows = [r for per in table.values() for r in per.values()]
    return {"budget_s": budget_s, "target": TARGET, "overrides": overrides or {}, "seed": seed, "sets": table,
            "all_meet_target": bool(rows) and all(r["meets_target"] for r in rows)}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--budget", type=float, default=300, help="seconds of training per set and family")
    ap.add_argument("--sets", nargs="+", default=list(SETS), choices=SETS)
    ap.add_argument("--families", nargs="+", default=list(FAMILIES))
    ap.add_argument("--samples", type=int, default=500, help="generated images per evaluation")
    ap.add_argument("--threads", type=int, default=None, help="torch threads (default: $AIGC_THREADS or cores)")
    ap.add_argument("--keep", metavar="DIR", help="use this workspace and keep it, instead of a temp one")
    ap.add_argument("--set", dest="set_", action="append", default=[], metavar="FAMILY.KEY=VALUE",
                    help="override one model config field of one family on every set (repeatable)")
    ap.add_argument("--seed", type=int, default=None, help="training seed (default: the trainer's)")
    ap.add_argument("--out", type=Path, default=DEFAULT_OUT)
    args = ap.parse_args(argv)
    overrides = parse_overrides(args.set_, args.families)

    from aigc.runtime import configure_threads
    from aigc.workspace import write_json_atomic

    configure_threads(args.threads)
    with (tempfile.TemporaryDirectory(prefix="aigc-robust-img-") if not args.keep else _keep(args.keep)) as ws:
        result = run_images(ws, args.budget, args.sets, args.families, samples=args.samples, overrides=overrides,
                            seed=args.seed, grid_dir=GRIDS if args.out == DEFAULT_OUT else args.out.with_suffix(""))
    result = {"benchmark": "robustness_images", **provenance(), **result}  # commit and date taken at start
    args.out.parent.mkdir(parents=True, exist_ok=True)
    write_json_atomic(args.out, result)
    print(f"wrote {args.out}; every row meets the target: {result['all_meet_target']}")
    return 0


def parse_overrides(pairs: list[str], families) -> dict[str, dict[str, str]]:
    """["diffusion.offset_noise=0.1"] -> {"diffusion": {"offset_noise": "0.1"}}; a malformed pair or a
    family not being run exits with a one-line error (the pairs are read as ``aigc train --set`` reads them)."""
    from aigc.cli.common import parse_pairs
    from aigc.errors import InvalidInput

    try:
        flat = parse_pairs(pairs, "--set")
    except InvalidInput as e:
        raise SystemExit(f"error: {e}") from None
    out: dict[str, dict[str, str]] = {}
    for key, value in flat.items():
        family, dot, field = key.partition(".")
        if not dot or not field:
            raise SystemExit(f"error: --set expects FAMILY.KEY=VALUE, got {key}={value!r}")
        if family not in families:
            raise SystemExit(f"error: --set {key}={value}: {family!r} is not among the families run "
                             f"({', '.join(families)})")
        out.setdefault(family, {})[field] = value
    return out


class _keep:
    """A context manager that yields a kept workspace path (tempfile's counterpart)."""

    def __init__(self, path: str):
        self.path = path

    def __enter__(self) -> str:
        Path(self.path).mkdir(parents=True, exist_ok=True)
        return self.path

    def __exit__(self, *exc) -> None:
        return None


if __name__ == "__main__":
    sys.exit(main())
