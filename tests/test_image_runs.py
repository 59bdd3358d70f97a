"""Image families through the run machinery: train, resume, load, sample by class, export, CLI."""

from __future__ import annotations

import os
import signal
from pathlib import Path

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

import aigc
from aigc.cli.main import app

from helpers import write_blocks_npz as write_npz


@pytest.fixture(scope="module")
def image_ws(tmp_path_factory):
    root = tmp_path_factory.mktemp("images")
    ws = aigc.open_workspace(root / "ws")
    aigc.ingest(write_npz(root / "blocks.npz"), "blocks", workspace=ws)
    return ws


@pytest.mark.parametrize("family", ["vae", "gan", "diffusion", "vqvae"])
def test_train_load_and_sample(image_ws, family):
    row = aigc.train("blocks", family=family, preset="tiny", name=f"b-{family}", workspace=image_ws,
                     max_steps=6, eval_every=3, batch_size=8, seed=0)
    assert row["status"] == "finished" and row["step"] == 6
    gen = aigc.load(f"b-{family}", workspace=image_ws)
    assert gen.classes == ["bottom", "top"]
    if family != "vqvae":  # a grid of samples at every validation (a vqvae has no sampler until its prior)
        assert sorted(p.name for p in (Path(row["path"]) / "samples").iterdir()) == [
            "step-0000003.png", "step-0000006.png"]
    if family == "vqvae":  # the run's second stage trained a gpt prior over the codes
        assert row["step"] == 6 and (Path(row["path"]) / "prior" / "model.safetensors").exists()
    opts = {"steps": 2} if family == "diffusion" else {}
    a = gen.sample(4, cond={"label": "top"}, seed=3, **opts)
    b = aigc.load(f"b-{family}", workspace=image_ws).sample(4, cond={"label": "top"}, seed=3, **opts)
    assert a.shape == (4, 1, 8, 8) and float(a.min()) >= 0 and float(a.max()) <= 1
    assert torch.equal(a, b), "same seed, reloaded run: same images"
    with pytest.raises(aigc.InvalidInput, match="unknown label 'left'.*bottom, top"):
        gen.sample(2, cond={"label": "left"})


def test_gan_progress_metrics_and_exact_resume(image_ws):
    class StopAt:
        def on_step(self, state):
            if state.step == 4:
                os.kill(os.getpid(), signal.SIGINT)

    opts = dict(family="gan", preset="tiny", workspace=image_ws, max_steps=8, eval_every=2, batch_size=8, seed=1)
    aigc.train("blocks", name="gan-straight", **opts)
    assert aigc.train("blocks", name="gan-cut", callbacks=[StopAt()], **opts)["status"] == "interrupted"
    assert aigc.resume("gan-cut", workspace=image_ws)["step"] == 8
    runs = Path(image_ws.root) / "runs"
    a = torch.load(runs / "gan-straight" / "checkpoints" / "last.pt", weights_only=False)["model"]
    b = torch.load(runs / "gan-cut" / "checkpoints" / "last.pt", weights_only=False)["model"]
    assert all(torch.equal(a[k], b[k]) for k in a), "both optimizers and the RNG were restored"
    metrics = (runs / "gan-straight" / "metrics.jsonl").read_text()
    assert "d_loss" in metrics and "g_loss" in metrics
    assert '"images_per_s"' in metrics and "tokens_per_s" not in metrics  # throughput in the data's unit


def test_a_gan_run_keeps_its_best_scored_checkpoint_not_its_latest(image_ws):
    import json

    row = aigc.train("blocks", family="gan", preset="tiny", name="gan-best", workspace=image_ws, max_steps=12,
                     eval_every=3, batch_size=8, seed=2)
    rows = [json.loads(line) for line in (Path(row["path"]) / "metrics.jsonl").read_text().splitlines()]
    scores = {r["step"]: r["val_loss"] for r in rows if "val_loss" in r}
    assert sorted(scores) == [3, 6, 9, 12] and all(np.isfinite(list(scores.values())))  # a score, not NaN
    assert any("spread" in r for r in rows if r["step"] > 3)  # the progress rows carry the last spread
    best = min(scores, key=scores.get)
    gen = aigc.load("gan-best", workspace=image_ws)
    last = torch.load(Path(row["path"]) / "checkpoints" / "last.pt", map_location="cpu", weights_only=False)["model"]
    kept = gen.model.state_dict()
    same_as_last = all(torch.equal(kept[k].cpu(), last[k]) for k in kept)
    assert same_as_last == (best == 12)  # model.safetensors holds the best-scored weights


def test_diffusion_run_exports_a_diffusers_pipeline(image_ws):
    from diffusers import DDPMPipeline

    aigc.train("blocks", family="diffusion", preset="tiny", name="d-export", workspace=image_ws,
               max_steps=2, eval_every=2, batch_size=8)
    pipe = DDPMPipeline.from_pretrained(Path(image_ws.root) / "runs" / "d-export" / "export")
    assert pipe.unet.config.sample_size >= 8


def test_cli_generate_writes_pngs_and_a_grid(image_ws, tmp_path):
    aigc.train("blocks", family="vae", preset="tiny", name="cli-vae", workspace=image_ws, max_steps=2,
               eval_every=2, batch_size=8)
    runner = CliRunner()
    r = runner.invoke(app, ["generate", "cli-vae", "--n", "5", "--cond", "label=bottom", "--seed", "7",
                            "--out", str(tmp_path / "out"), "-w", str(image_ws.root)])
    assert r.exit_code == 0, r.output
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == [
        "grid.png", *[f"sample-{i:03d}.png" for i in range(5)]]
    r = runner.invoke(app, ["generate", "cli-vae", "--steps", "3", "-w", str(image_ws.root)])
    assert r.exit_code == 2 and "--steps does not apply to a vae run" in r.stderr
    r = runner.invoke(app, ["generate", "cli-vae", "a prompt", "-w", str(image_ws.root)])
    assert r.exit_code == 2 and "takes no PROMPT" in r.stderr


def test_vqvae_prior_learns_the_codes_of_each_class(image_ws):
    """Prior -> codes -> decoder: samples asked for 'top' are bright on top, 'bottom' below."""
    aigc.train("blocks", family="vqvae", preset="tiny", name="vq-prior", workspace=image_ws,
               max_steps=150, eval_every=50, batch_size=16, seed=0)
    gen = aigc.load("vq-prior", workspace=image_ws)
    top = gen.sample(16, cond={"label": "top"}, seed=1)
    bottom = gen.sample(16, cond={"label": "bottom"}, seed=1)
    assert top.shape == (16, 1, 8, 8)

    def upper_minus_lower(x):
        return float(x[..., :4, :].mean() - x[..., 4:, :].mean())

    assert upper_minus_lower(top) > 0.2 and upper_minus_lower(bottom) < -0.2


@pytest.mark.parametrize("family", ["diffusion", "vae"])
def test_style_transfer_from_the_cli(image_ws, tmp_path, family):
    from PIL import Image

    img = np.zeros((8, 8), np.uint8)
    img[:4] = 230  # a 'top' image
    Image.fromarray(img).save(tmp_path / "item.png")
    args = ["generate", f"b-{family}", "--style-from", str(tmp_path / "item.png"), "--cond", "label=bottom",
            "--n", "2", "--seed", "1", "--out", str(tmp_path / "st"), "-w", str(image_ws.root)]
    extra = ["--strength", "0.5", "--steps", "2"] if family == "diffusion" else ["--from-label", "top"]
    r = CliRunner().invoke(app, args + extra)
    assert r.exit_code == 0, r.output
    assert (tmp_path / "st" / "sample-001.png").exists() and (tmp_path / "st" / "grid.png").exists()


def test_style_transfer_refusals(image_ws, tmp_path):
    runner = CliRunner()
    r = runner.invoke(app, ["generate", "b-gan", "--style-from", str(tmp_path / "nope.png"), "--cond",
                            "label=top", "-w", str(image_ws.root)])
    assert r.exit_code == 2 and "no such image" in r.stderr
    from PIL import Image

    Image.fromarray(np.zeros((8, 8), np.uint8)).save(tmp_path / "x.png")
    r = runner.invoke(app, ["generate", "b-gan", "--style-from", str(tmp_path / "x.png"), "--cond", "label=top",
                            "-w", str(image_ws.root)])
    assert r.exit_code == 2 and "cannot do style transfer" in r.stderr
    r = runner.invoke(app, ["generate", "b-diffusion", "--style-from", str(tmp_path / "x.png"), "--cond",
                            "label=top", "--steps", "0", "-w", str(image_ws.root)])
    assert r.exit_code == 2 and "steps" in r.stderr


@pytest.mark.parametrize("family", ["vae", "vqvae"])
def test_eval_reports_domain_metrics(image_ws, family):
    result = aigc.evaluate(f"b-{family}", workspace=image_ws, n_samples=32)
    for key in ("fid", "fid_floor_train_vs_test", "kid_mean", "precision", "recall", "conditional_accuracy",
                "psnr", "ssim", "seconds_per_1000_samples"):
        assert key in result, key
    assert result["classifier"]["test_accuracy"] > 0.9  # two trivially separable classes
    assert result["fid"] >= 0 and result["fid_floor_train_vs_test"] >= 0 and 0 <= result["precision"] <= 1
    run = Path(image_ws.get_run(f"b-{family}")["path"])
    assert (run / "eval.json").exists() and (run / "eval_samples.png").exists()
    if family == "vqvae":
        assert 0 < result["codebook_usage"] <= 1
    r = CliRunner().invoke(app, ["eval", f"b-{family}", "--samples", "16", "-w", str(image_ws.root)])
    assert r.exit_code == 0 and "FID floor" in r.stdout and "conditional accuracy" in r.stdout


@pytest.mark.parametrize("family", ["gan", "vae"])
def test_latent_interpolation_between_two_seeds(image_ws, tmp_path, family):
    gen = aigc.load(f"b-{family}", workspace=image_ws)
    frames = gen.interpolate(5, 1, 2, cond={"label": "top"})
    assert frames.shape == (5, 1, 8, 8) and float(frames.min()) >= 0 and float(frames.max()) <= 1
    ends = [gen.sample(1, cond={"label": "top"}, seed=s) for s in (1, 2)]  # the ends are those seeds' samples
    torch.testing.assert_close(frames[0:1], ends[0], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(frames[-1:], ends[1], atol=1e-5, rtol=1e-5)
    steps = (frames[1:] - frames[:-1]).abs().mean(dim=(1, 2, 3))
    assert float(steps.max()) < float((frames[-1] - frames[0]).abs().mean()) + 1e-6  # a walk, not a jump
    r = CliRunner().invoke(app, ["generate", f"b-{family}", "--seed", "1", "--interpolate", "2", "--n", "6",
                                 "--cond", "label=bottom", "--out", str(tmp_path / "walk"), "-w", str(image_ws.root)])
    assert r.exit_code == 0, r.output
    assert len(list((tmp_path / "walk").glob("frame-*.png"))) == 6


def test_interpolation_refusals(image_ws):
    r = CliRunner().invoke(app, ["generate", "b-diffusion", "--seed", "1", "--interpolate", "2", "-w",
                                 str(image_ws.root)])
    assert r.exit_code == 2 and "cannot interpolate" in r.stderr
    r = CliRunner().invoke(app, ["generate", "b-gan", "--interpolate", "2", "-w", str(image_ws.root)])
    assert r.exit_code == 2 and "--seed" in r.stderr
    r = CliRunner().invoke(app, ["generate", "b-gan", "--seed", "1", "--interpolate", "2", "--n", "1", "-w",
                                 str(image_ws.root)])
    assert r.exit_code == 2 and "at least 2 frames" in r.stderr


def test_eval_of_an_unlabelled_set_uses_a_self_supervised_extractor(tmp_path):
    from aigc.metrics import image as im

    x, y = im.rotations(torch.arange(8.0).view(2, 1, 2, 2) / 8)  # the pretext task itself
    assert y.tolist() == [0, 0, 1, 1, 2, 2, 3, 3]
    assert torch.equal(x[2], torch.rot90(x[0], 1, dims=(1, 2))) and torch.equal(x[4], x[0].flip(1, 2))

    data = np.load(write_npz(tmp_path / "blocks.npz", n=160))
    np.savez(tmp_path / "plain.npz", x=data["x"])  # the same images, no classes
    ws = aigc.open_workspace(tmp_path / "ws")
    aigc.ingest(tmp_path / "plain.npz", "plain", workspace=ws)
    aigc.train("plain", family="vae", preset="tiny", name="p-vae", workspace=ws, max_steps=30)
    result = aigc.evaluate("p-vae", workspace=ws, n_samples=32)
    assert result["classifier"]["features"] == "rotation"
    # chance is 0.25; half-bright blocks cap it at 0.5 (a top-bright block upside down is a bottom-bright one)
    assert result["classifier"]["test_accuracy"] > 0.3
    assert "conditional_accuracy" not in result and result["fid"] >= 0 and 0 <= result["recall"] <= 1
    assert result["fid"] > result["fid_floor_train_vs_test"]  # a 30-step vae is worse than real images
    assert "psnr" in result and (Path(ws.root) / "classifiers" / "plain.rotation").is_dir()
    r = CliRunner().invoke(app, ["eval", "p-vae", "--samples", "16", "-w", str(ws.root)])
    assert r.exit_code == 0 and "rotation test accuracy" in r.stdout and "conditional" not in r.stdout
