"""Image families on Fashion-MNIST under one wall-clock budget each.

For each family's `small` preset: train from scratch with `--time-budget` (default 600 s),
then `aigc eval` (domain-classifier FID, KID, precision, recall, conditional accuracy, seconds
per 1,000 samples) and a per-class sample grid in benchmarks/results/image_<family>.png. Side
by side in the same run, the peer: pytorch/examples' VAE (an MLP, 784-400-20, Adam 1e-3, batch
128, summed BCE + KL per image), written here from its published description, trained for 2
epochs on the same images; our vae's test loss after 2 epochs of the same data is compared.

    python benchmarks/image_train.py [--budget 600] [--families gan vae vqvae diffusion] [--samples 1000]
                                     [--no-vae-comparison]

A vqvae run has two stages, each given the budget: the VQ-VAE, then its gpt prior over the codes.
Re-running some families (``--families diffusion --no-vae-comparison``) replaces their rows in
the results file and keeps the others.

Needs ../shared/data/fashion-mnist; prints a table, writes benchmarks/results/image_train.json.
"""

from __future__ import annotations

import argparse
import contextlib
import gzip
import json
import os
import struct
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
DATA = HERE.parents[1] / "shared" / "data" / "fashion-mnist"
CLASSES = ["T-shirt", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"]
GUIDANCE_SWEEP = (1.0, 2.0, 4.0)  # plus the default (3.0) of the main row
ANCHORS = {"vae_test_loss_2_epochs_mnist": 116.3, "dcgan_it_per_s": "2.3-3.9",
           "published_inception_fid": {"WGAN": 21.5, "NS-GAN": 26.5, "VAE": 43.6}}


def read_idx(path: Path) -> np.ndarray:
    with gzip.open(path) as f:
        magic, n = struct.unpack(">II", f.read(8))
        dims = struct.unpack(">" + "I" * ((magic & 0xFF) - 1), f.read(4 * ((magic & 0xFF) - 1)))
        return np.frombuffer(f.read(), np.uint8).reshape(n, *dims)


def write_npz(out: Path) -> Path:
    """The 60k train images with class names as labels (so `--cond label=Sneaker` reads well)."""
    x = read_idx(DATA / "train-images-idx3-ubyte.gz")
    y = np.array(CLASSES)[read_idx(DATA / "train-labels-idx1-ubyte.gz")]
    np.savez(out, x=x, y=y)
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
    """Our vae `small` for exactly 2 epochs of the ingested train split; test loss on the official t10k."""
    import math

    import torch

    import aigc
    import aigc.models.registry
    from aigc.runtime import configure_threads

    configure_threads(threads)
    ws = aigc.open_workspace(workspace)
    if not ws.has_dataset("fmnist"):
        aigc.ingest(write_npz(Path(workspace) / "fmnist.npz"), "fmnist", workspace=ws)
    batch = aigc.models.registry.get_family("vae").TRAIN_DEFAULTS["small"]["batch_size"]
    steps = math.ceil(2 * ws.get_dataset("fmnist")["n_train"] / batch)
    t0 = time.perf_counter()
    aigc.train("fmnist", family="vae", preset="small", name="fm-vae-2ep", workspace=ws, max_steps=steps,
               eval_every=steps)
    seconds = time.perf_counter() - t0
    gen = aigc.load("fm-vae-2ep", workspace=ws)
    xt = torch.from_numpy(read_idx(DATA / "t10k-images-idx3-ubyte.gz")).float()[:, None] / 255
    yt = torch.from_numpy(read_idx(DATA / "t10k-labels-idx1-ubyte.gz").astype(np.int64))
    names = np.array(CLASSES)[yt.numpy()]
    yt = torch.tensor([gen.classes.index(c) for c in names]) if gen.classes else None
    with torch.no_grad():
        loss = gen.model.validation_losses(xt, yt)["loss"]
    return {"ours": "aigc vae small", "epochs": 2, "steps": steps, "test_loss": round(loss, 2),
            "seconds": round(seconds, 1)}


def peer_vae(threads: int | None, epochs: int = 2) -> dict:
    """pytorch/examples' VAE architecture and recipe, on the same 60k/10k Fashion-MNIST split."""
    import torch
    import torch.nn.functional as F
    from torch import nn

    from aigc.runtime import configure_threads

    configure_threads(threads)
    torch.manual_seed(1)
    x = torch.from_numpy(read_idx(DATA / "train-images-idx3-ubyte.gz").reshape(-1, 784)).float() / 255
    xt = torch.from_numpy(read_idx(DATA / "t10k-images-idx3-ubyte.gz").reshape(-1, 784)).float() / 255

    class VAE(nn.Module):
        def __init__(self):
            super().__init__()
            self.fc1, self.fc21, self.fc22 = nn.Linear(784, 400), nn.Linear(400, 20), nn.Linear(400, 20)
            self.fc3, self.fc4 = nn.Linear(20, 400), nn.Linear(400, 784)

        def forward(self, v):
            h = F.relu(self.fc1(v))
            mu, logvar = self.fc21(h), self.fc22(h)
            z = mu + torch.randn_like(mu) * torch.exp(0.5 * logvar)
            return torch.sigmoid(self.fc4(F.relu(self.fc3(z)))), mu, logvar

    def loss_fn(recon, v, mu, logvar):
        return F.binary_cross_entropy(recon, v, reduction="sum") - 0.5 * torch.sum(1 + logvar - mu**2 - logvar.exp())

    model = VAE()
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    t0 = time.perf_counter()
    for _ in range(epochs):
        for idx in torch.randperm(len(x)).split(128):
            opt.zero_grad()
            recon, mu, logvar = model(x[idx])
            loss = loss_fn(recon, x[idx], mu, logvar)
            loss.backward()
            opt.step()
    with torch.no_grad():
        recon, mu, logvar = model(xt)
        test = loss_fn(recon, xt, mu, logvar).item() / len(xt)
    return {"peer": "pytorch/examples VAE", "epochs": epochs, "test_loss": round(test, 2),
            "seconds": round(time.perf_counter() - t0, 1)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--budget", type=float, default=600)
    ap.add_argument("--families", nargs="+", default=["gan", "vae", "vqvae", "diffusion"])
    ap.add_argument("--samples", type=int, default=1000)
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--no-vae-comparison", action="store_true", help="skip the 2-epoch VAE against the peer")
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
    (HERE / "results").mkdir(exist_ok=True)
    rows = []
    with (contextlib.nullcontext(args.keep) if args.keep else tempfile.TemporaryDirectory(prefix="aigc-img-bench-")) as ws:
        for family in args.families:
            cmd = [sys.executable, __file__, "--child", family, ws, "--budget", str(args.budget),
                   "--samples", str(args.samples), "--diffusion-steps", str(args.diffusion_steps)] + (
                ["--threads", str(args.threads)] if args.threads else []) + (
                ["--guidance-sweep", *map(str, args.guidance_sweep)] if args.guidance_sweep is not None else [])
            out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
            rows.append(json.loads(out.strip().splitlines()[-1]))
            print(f"  {family}: FID {rows[-1]['fid']:.2f}", file=sys.stderr)
        ours = peer = None
        if not args.no_vae_comparison:
            cmd = [sys.executable, __file__, "--child", "vae-2-epochs", ws] + (
                ["--threads", str(args.threads)] if args.threads else [])
            ours = json.loads(subprocess.run(cmd, check=True, capture_output=True,
                                             text=True).stdout.strip().splitlines()[-1])
    if ours is not None:
        peer = peer_vae(args.threads)
    path = HERE / "results" / "image_train.json"
    previous = json.loads(path.read_text()) if path.exists() else {}
    ran = {r["family"] for r in rows}
    rows = [r for r in previous.get("rows", []) if r["family"] not in ran and r.get("budget_s") == args.budget] + rows
    rows.sort(key=lambda r: ["gan", "vae", "vqvae", "diffusion"].index(r["family"]))
    comparison = {"ours": ours, "peer": peer} if ours is not None else previous.get("vae_2_epochs")
    print(f"Fashion-MNIST, small presets, {args.budget:.0f} s each; FID/KID/PR in the domain classifier's "
          f"features (accuracy {rows[0]['classifier_accuracy']:.3f}); {args.samples} samples")
    print(f"{'family':<10} {'steps':>6} {'img/s':>7} {'FID':>7} {'floor':>6} {'KID':>7} {'prec':>5} {'rec':>5} "
          f"{'cond acc':>8} {'s/1k':>6}")
    for r in rows:
        cond = f"{r['conditional_accuracy']:.3f}" if r.get("conditional_accuracy") is not None else "-"
        print(f"{r['family']:<10} {r['steps']:>6} {r['images_per_s']:>7} {r['fid']:>7.2f} "
              f"{r['fid_floor_train_vs_test']:>6.2f} {r['kid_mean']:>7.4f} {r['precision']:>5.2f} "
              f"{r['recall']:>5.2f} {cond:>8} {r['seconds_per_1000_samples']:>6.1f}")
    if comparison:
        ours, peer = comparison["ours"], comparison["peer"]
        print(f"VAE test loss on t10k after 2 epochs (summed BCE + KL per image): ours {ours['test_loss']} "
              f"({ours['seconds']} s), {peer['peer']} {peer['test_loss']} ({peer['seconds']} s), "
              f"ratio {ours['test_loss'] / peer['test_loss']:.3f}")
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps({"benchmark": "image_train", "budget_s": args.budget, "rows": rows,
                               "vae_2_epochs": comparison, "anchors": ANCHORS}, indent=2) + "\n")
    os.replace(tmp, path)
    print(f"wrote {path.relative_to(HERE.parent)}")


if __name__ == "__main__":
    main()
