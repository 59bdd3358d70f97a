"""Image families on Fashion-MNIST under one wall-clock budget each, and a VAE beside its peer.

For each family's `small` preset: train from scratch with `--time-budget` (default 300 s; a
vqvae's two stages, the VQ-VAE and its gpt prior over the codes, share that one budget), then
`aigc eval` (domain-classifier FID, KID, precision, recall, conditional accuracy, seconds per
1,000 samples) and a per-class sample grid in benchmarks/results/image_<family>.png.

Beside them in the same invocation, the peer: pytorch/examples' VAE (`vae/main.py` from a
checkout of pytorch/examples given with `--examples PATH`, run unchanged as its own process; the
three torchvision names it imports come from benchmarks/peer_shims, which serves our
Fashion-MNIST IDX files) for 2 epochs, against our `vae small` for 2 epochs of the same 60k
images. The peer is unconditional, so ours is too (trained on the images without their labels):
test loss on the official t10k, summed BCE + KL per image, both.

    python benchmarks/image_train.py [--budget 300] [--families gan vae vqvae diffusion] [--samples 1000]
                                     [--examples /path/to/pytorch-examples] [--threads 2]

Every row of the results file comes from this one invocation.
Needs ../shared/data/fashion-mnist; prints a table, writes benchmarks/results/image_train.json.
"""

from __future__ import annotations

import argparse
import contextlib
import gzip
import json
import os
import re
import struct
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import write_result  # noqa: E402

HERE = Path(__file__).resolve().parent
DATA = HERE.parents[1] / "shared" / "data" / "fashion-mnist"
CLASSES = ["T-shirt", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"]
GUIDANCE_SWEEP = (1.0, 2.0, 4.0)  # plus the default of the main row


def read_idx(path: Path) -> np.ndarray:
    with gzip.open(path) as f:
        magic, n = struct.unpack(">II", f.read(8))
        dims = struct.unpack(">" + "I" * ((magic & 0xFF) - 1), f.read(4 * ((magic & 0xFF) - 1)))
        return np.frombuffer(f.read(), np.uint8).reshape(n, *dims)


def write_npz(out: Path, labels: bool = True) -> Path:
    """The 60k train images, with class names as labels (so `--cond label=Sneaker` reads well) or none."""
    x = read_idx(DATA / "train-images-idx3-ubyte.gz")
    if labels:
        np.savez(out, x=x, y=np.array(CLASSES)[read_idx(DATA / "train-labels-idx1-ubyte.gz")])
    else:
        np.savez(out, x=x)
    return out


def child(family: str, budget: float, workspace: str, samples: int, threads: int | None,
          diffusion_steps: int = 25, sweep_values=None) -> dict:
    import torch

    import aigc
    from aigc.data.images import write_grid
    from aigc.image_generation import to_uint8
    from aigc.runtime import configure_threads

    configure_threads(threads)
    ws = aigc.open_workspace(workspace)
    if not ws.has_dataset("fmnist"):
        aigc.ingest(write_npz(Path(workspace) / "fmnist.npz"), "fmnist", workspace=ws)
    name = f"fm-{family}"
    row = aigc.train("fmnist", family=family, preset="small", name=name, workspace=ws,
                     time_budget=budget, max_steps=10**7)
    steps = {"steps": diffusion_steps} if family == "diffusion" else {}
    sweep = {}
    if family == "diffusion":  # classifier-free guidance trades variety for class fidelity: show the curve
        for g in (GUIDANCE_SWEEP if sweep_values is None else sweep_values):
            r = aigc.evaluate(name, workspace=ws, n_samples=samples // 2, guidance=g, **steps)
            sweep[str(g)] = {k: r.get(k) for k in ("fid", "conditional_accuracy", "precision", "recall")}
    result = aigc.evaluate(name, workspace=ws, n_samples=samples, **steps)  # eval.json: the default guidance
    gen = aigc.load(name, workspace=ws)
    rows = [gen.sample(8, cond={"label": c}, seed=7, **steps) for c in CLASSES]  # one row per class
    write_grid(HERE / "results" / f"image_{family}.png", list(to_uint8(torch.cat(rows))))
    s = row["summary"]
    return {"family": family, "budget_s": budget, "steps": row["step"], "elapsed_s": s["elapsed_s"],
            "images_per_s": round(s["tokens_seen"] / max(1e-9, s["elapsed_s"]), 1),
            **{k: result.get(k) for k in ("fid", "fid_floor_train_vs_test", "kid_mean", "precision", "recall",
                                          "conditional_accuracy", "seconds_per_1000_samples", "psnr", "ssim",
                                          "test_loss", "codebook_usage")},
            "classifier_accuracy": result["classifier"]["test_accuracy"],
            **({"sample_steps": diffusion_steps, "guidance": gen.model.config.guidance, "guidance_sweep": sweep}
               if family == "diffusion" else {})}


def ours_vae_2_epochs(workspace: str, threads: int | None) -> dict:
    """Our vae `small`, unconditional, for exactly 2 epochs of the 60k images; test loss on t10k."""
    import math

    import torch

    import aigc
    import aigc.models.registry
    from aigc.runtime import configure_threads

    configure_threads(threads)
    ws = aigc.open_workspace(workspace)
    if not ws.has_dataset("fmnist-unlabelled"):
        aigc.ingest(write_npz(Path(workspace) / "fmnist-unlabelled.npz", labels=False), "fmnist-unlabelled",
                    workspace=ws, split=(1.0, 0.0, 0.0))
    batch = aigc.models.registry.get_family("vae").TRAIN_DEFAULTS["small"]["batch_size"]
    n_train = ws.get_dataset("fmnist-unlabelled")["n_train"]
    steps = math.ceil(2 * n_train / batch)
    t0 = time.perf_counter()
    aigc.train("fmnist-unlabelled", family="vae", preset="small", name="fm-vae-2ep", workspace=ws,
               max_steps=steps, eval_every=steps)
    seconds = time.perf_counter() - t0
    gen = aigc.load("fm-vae-2ep", workspace=ws)
    assert not gen.classes, "the comparison needs an unconditional vae"
    xt = torch.from_numpy(read_idx(DATA / "t10k-images-idx3-ubyte.gz")).float()[:, None] / 255
    with torch.no_grad():
        loss = gen.model.validation_losses(xt, None)["loss"]
    return {"model": "aigc vae small (unconditional)", "epochs": 2, "train_images": n_train, "steps": steps,
            "test_loss": round(loss, 2), "seconds": round(seconds, 1)}


def peer_vae(examples: Path, threads: int | None, epochs: int = 2) -> dict:
    """pytorch/examples' vae/main.py, unchanged, on the same Fashion-MNIST 60k/10k split."""
    n = threads or os.cpu_count() or 1
    env = {**os.environ, "PYTHONPATH": str(HERE / "peer_shims"), "PEER_IDX_DIR": str(DATA),
           "OMP_NUM_THREADS": str(n), "MKL_NUM_THREADS": str(n)}
    with tempfile.TemporaryDirectory(prefix="peer-vae-") as tmp:
        (Path(tmp) / "results").mkdir()
        t0 = time.perf_counter()
        proc = subprocess.run([sys.executable, str(examples / "vae" / "main.py"), "--epochs", str(epochs),
                               "--no-accel", "--log-interval", "100000"],
                              cwd=tmp, env=env, capture_output=True, text=True)
        seconds = time.perf_counter() - t0
    if proc.returncode != 0:
        sys.exit(f"error: pytorch/examples vae/main.py failed:\n{proc.stderr[-2000:]}")
    losses = [float(x) for x in re.findall(r"Test set loss: ([\d.]+)", proc.stdout)]
    return {"model": "pytorch/examples VAE (vae/main.py, run here)", "epochs": epochs,
            "test_loss_per_epoch": losses, "test_loss": losses[-1], "seconds": round(seconds, 1)}


def _child(cmd: list[str]) -> dict:
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        sys.exit(f"error: {' '.join(cmd[2:4])} failed:\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--budget", type=float, default=300)
    ap.add_argument("--families", nargs="+", default=["gan", "vae", "vqvae", "diffusion"])
    ap.add_argument("--samples", type=int, default=1000)
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--examples", type=Path, default=None,
                    help="a checkout of pytorch/examples: run its vae/main.py beside our vae for 2 epochs")
    ap.add_argument("--diffusion-steps", type=int, default=25, help="DDIM steps when evaluating diffusion")
    ap.add_argument("--guidance-sweep", type=float, nargs="*", default=None,
                    help=f"guidance values to evaluate diffusion at besides the default (default: {GUIDANCE_SWEEP})")
    ap.add_argument("--keep", metavar="DIR", help="train in this workspace and keep it (to evaluate the runs again)")
    ap.add_argument("--child", nargs=2, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        family, workspace = args.child
        if family == "vae-2-epochs":
            print(json.dumps(ours_vae_2_epochs(workspace, args.threads)))
        else:
            print(json.dumps(child(family, args.budget, workspace, args.samples, args.threads, args.diffusion_steps,
                                   args.guidance_sweep)))
        return
    if not DATA.exists():
        sys.exit(f"skipped: {DATA} not found (the benchmark needs ../shared/data/fashion-mnist)")
    if args.examples is not None and not (args.examples / "vae" / "main.py").exists():
        sys.exit(f"error: {args.examples} is not a pytorch/examples checkout (no vae/main.py)")
    (HERE / "results").mkdir(exist_ok=True)
    threads = ["--threads", str(args.threads)] if args.threads else []
    rows = []
    comparison = None
    with (contextlib.nullcontext(args.keep) if args.keep else tempfile.TemporaryDirectory(prefix="aigc-img-bench-")) as ws:
        for family in args.families:
            cmd = [sys.executable, __file__, "--child", family, ws, "--budget", str(args.budget),
                   "--samples", str(args.samples), "--diffusion-steps", str(args.diffusion_steps), *threads] + (
                ["--guidance-sweep", *map(str, args.guidance_sweep)] if args.guidance_sweep is not None else [])
            rows.append(_child(cmd))
            print(f"  {family}: FID {rows[-1]['fid']:.2f}", file=sys.stderr)
        if args.examples is not None:
            ours = _child([sys.executable, __file__, "--child", "vae-2-epochs", ws, *threads])
            comparison = {"ours": ours, "peer": peer_vae(args.examples, args.threads)}
    print(f"Fashion-MNIST, small presets, {args.budget:.0f} s each (a vqvae's two stages share it); FID/KID/PR in "
          f"the domain classifier's features; {args.samples} samples")
    print(f"{'family':<10} {'steps':>6} {'img/s':>7} {'FID':>7} {'floor':>6} {'KID':>7} {'prec':>5} {'rec':>5} "
          f"{'cond acc':>8} {'s/1k':>6}")
    for r in rows:
        cond = f"{r['conditional_accuracy']:.3f}" if r.get("conditional_accuracy") is not None else "-"
        print(f"{r['family']:<10} {r['steps']:>6} {r['images_per_s']:>7} {r['fid']:>7.2f} "
              f"{r['fid_floor_train_vs_test']:>6.2f} {r['kid_mean']:>7.4f} {r['precision']:>5.2f} "
              f"{r['recall']:>5.2f} {cond:>8} {r['seconds_per_1000_samples']:>6.1f}")
    if comparison:
        ours, peer = comparison["ours"], comparison["peer"]
        print("VAE, unconditional both, 2 epochs of the 60k train images, test loss on t10k (summed BCE + KL "
              "per image; lower is better):")
        print(f"  {ours['model']}: {ours['test_loss']} ({ours['seconds']} s)")
        print(f"  {peer['model']}: {peer['test_loss']} ({peer['seconds']} s)")
    path = write_result("image_train", {"budget_s": args.budget, "threads": args.threads, "rows": rows,
                                        "vae_2_epochs": comparison})
    print(f"wrote {path.relative_to(HERE.parent)}")


if __name__ == "__main__":
    main()
