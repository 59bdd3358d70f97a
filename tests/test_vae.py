"""The `vae` family through the image-family contract: training lowers the negative ELBO, samples are
images, seeds and reloads are exact, labels steer the decoder (samples asked for a class show it), and bad
arguments fail with one line."""

from __future__ import annotations

import pytest
import torch
from safetensors.torch import load_model, save_model

from image_steering import obeyed, train_on_halves

from aigc.errors import InvalidInput
from aigc.models.registry import config_from_dict
from aigc.models.vae import VAE


def make_vae(preset: str = "tiny", **overrides) -> VAE:
    """A model built the way the trainer will: preset + dataset facts, through the registry's checks."""
    values = {**VAE.PRESETS[preset], "image_size": 16, "channels": 1, **overrides}
    return VAE(config_from_dict(VAE.Config, values, what="vae config"))


def bars(n: int, size: int = 16, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """(n, 1, size, size) images in [0, 1] of two separable classes: 0 = horizontal bars, 1 = vertical."""
    g = torch.Generator().manual_seed(seed)
    labels = torch.arange(n) % 2
    images = torch.zeros(n, 1, size, size)
    pos = torch.randint(1, size - 3, (n,), generator=g)
    for i in range(n):
        if labels[i] == 0:
            images[i, 0, pos[i] : pos[i] + 3, :] = 1.0
        else:
            images[i, 0, :, pos[i] : pos[i] + 3] = 1.0
    return images, labels


def backward(loss: torch.Tensor) -> None:  # what Fabric's backward does on one CPU
    loss.backward()


def train(model: VAE, steps: int, batch: int = 16, lr: float = 1e-2, conditional: bool = False) -> list[dict]:
    (opt,) = model.configure_optimizers(lr=lr, weight_decay=0.0)
    images, labels = bars(256)
    g = torch.Generator().manual_seed(1)
    history = []
    for _ in range(steps):
        idx = torch.randint(len(images), (batch,), generator=g)
        y = labels[idx] if conditional else None
        history.append(model.training_step(images[idx], y, [opt], backward))
    return history


@pytest.mark.parametrize("conditional", [False, True])
def test_forty_steps_lower_the_loss(conditional):
    torch.manual_seed(0)
    model = make_vae(num_classes=2 if conditional else 0)
    hist = train(model, 40, conditional=conditional)
    assert set(hist[0]) == {"loss", "recon", "kl"} and set(VAE.progress_keys) <= set(hist[0])
    first = hist[0]["loss"]
    last = sum(h["loss"] for h in hist[-5:]) / 5
    assert 0.8 < first / (256 * 0.693) < 1.3  # starts near 256 pixels x ln 2 nats (logits near 0)
    assert last < 0.75 * first
    for h in hist:
        assert h["loss"] == pytest.approx(h["recon"] + h["kl"], rel=1e-5)  # beta 1


def test_validation_reports_a_positive_negative_elbo():
    torch.manual_seed(0)
    model = make_vae(beta=0.5)
    images, _ = bars(32)
    model.eval()
    a = model.validation_losses(images, None)
    b = model.validation_losses(images, None)
    assert a == b  # a fixed-seed z: repeatable
    assert a["loss"] > 0 and a["kl"] >= 0
    assert a["loss"] == pytest.approx(a["recon"] + a["kl"])  # the true ELBO: beta does not enter it


@pytest.mark.parametrize(
    ("size", "channels", "depth"), [(8, 1, 2), (10, 3, 2), (16, 1, 2), (28, 1, 2), (28, 3, 3)]
)
def test_sample_and_reconstruct_have_the_image_shape_and_range(size, channels, depth):
    torch.manual_seed(0)
    model = make_vae(image_size=size, channels=channels, depth=depth)
    x = model.sample(5, generator=torch.Generator().manual_seed(0))
    assert x.shape == (5, channels, size, size) and x.dtype == torch.float32
    assert x.min() >= 0 and x.max() <= 1
    mu, logvar = model.encode(torch.rand(3, channels, size, size))
    assert mu.shape == logvar.shape == (3, model.config.latent_dim)
    assert model.reconstruct(torch.rand(3, channels, size, size)).shape == (3, channels, size, size)


def test_28px_needs_no_padding_with_depth_2():
    model = make_vae("small", image_size=28)
    assert model.padded == 28 and model.feat_side == 7  # 28 -> 14 -> 7 -> 14 -> 28


def test_same_seed_gives_the_same_images_also_after_reload(tmp_path):
    torch.manual_seed(0)
    model = make_vae(num_classes=2)
    train(model, 5, conditional=True)
    model.eval()
    a = model.sample(4, generator=torch.Generator().manual_seed(7))
    assert torch.equal(a, model.sample(4, generator=torch.Generator().manual_seed(7)))
    assert not torch.equal(a, model.sample(4, generator=torch.Generator().manual_seed(8)))

    save_model(model, str(tmp_path / "model.safetensors"))
    torch.manual_seed(123)  # a fresh model starts from other weights
    fresh = make_vae(num_classes=2)
    assert not torch.equal(a, fresh.sample(4, generator=torch.Generator().manual_seed(7)))
    load_model(fresh, str(tmp_path / "model.safetensors"))
    fresh.eval()
    assert torch.equal(a, fresh.sample(4, generator=torch.Generator().manual_seed(7)))


def test_samples_asked_for_a_class_show_that_class():
    torch.manual_seed(0)
    model = make_vae(num_classes=2, image_size=8)
    assert min(obeyed(model)) < 0.9  # untrained, the label does not decide the lit half
    train_on_halves(model, 30, batch=16, lr=1e-2)
    assert min(obeyed(model)) >= 0.9  # samples asked for class k light class k's half


def test_the_label_steers_the_decoder_and_style_transfer():
    torch.manual_seed(0)
    model = make_vae(num_classes=2)
    train(model, 30, conditional=True)
    z = torch.randn(4, model.config.latent_dim)
    zeros = model.decode(z, torch.zeros(4, dtype=torch.long))
    ones = model.decode(z, torch.ones(4, dtype=torch.long))
    assert (zeros - ones).abs().mean() > 1e-3
    # sample: the same seed gives the same z, so the condition alone changes the images
    gen = lambda: torch.Generator().manual_seed(3)  # noqa: E731
    s0, s1 = model.sample(4, torch.tensor([0]), gen()), model.sample(4, torch.tensor([1]), gen())
    assert not torch.equal(s0, s1)
    assert torch.equal(s0, model.sample(4, torch.zeros(4, dtype=torch.long), gen()))  # one id broadcasts

    images, labels = bars(6)
    moved = model.style_transfer(images, labels, 1 - labels)
    assert moved.shape == images.shape and moved.min() >= 0 and moved.max() <= 1
    assert torch.allclose(model.style_transfer(images, labels, labels), model.reconstruct(images, labels))


def test_style_transfer_needs_a_conditional_model():
    model = make_vae()
    images, labels = bars(2)
    with pytest.raises(InvalidInput, match="style transfer needs a class-conditional vae"):
        model.style_transfer(images, labels, 1 - labels)


def test_interpolation_runs_between_the_two_seeds_samples():
    torch.manual_seed(0)
    model = make_vae()
    frames = model.interpolate(5, 1, 2)
    assert frames.shape == (5, 1, 16, 16)
    for frame, seed in ((frames[0], 1), (frames[-1], 2)):
        alone = model.sample(1, generator=torch.Generator().manual_seed(seed))[0]
        assert torch.allclose(frame, alone, atol=1e-5)
    cond = make_vae(num_classes=3).interpolate(3, 1, 2, condition=2)
    assert cond.shape == (3, 1, 16, 16)


def test_gaussian_decoder_learns_its_sigma():
    torch.manual_seed(0)
    model = make_vae(decoder="gaussian", learn_sigma=True, sigma=0.5)
    before = model.log_sigma.detach().clone()
    hist = train(model, 10)
    assert all(torch.isfinite(torch.tensor(h["loss"])) for h in hist)
    assert not torch.equal(before, model.log_sigma.detach())
    fixed = make_vae(decoder="gaussian")
    assert not fixed.log_sigma.requires_grad
    assert all(p is not fixed.log_sigma for g in fixed.configure_optimizers(1e-3, 0.0)[0].param_groups
               for p in g["params"])


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (dict(decoder="laplace"), "decoder must be one of bernoulli, gaussian, got 'laplace'"),
        (dict(image_size=4), "image_size must be >= 8"),
        (dict(depth=5), "depth must be 1..4 for 16 px"),
        (dict(beta=-1.0), "beta must be >= 0"),
    ],
)
def test_bad_configs_are_refused(overrides, message):
    with pytest.raises(InvalidInput, match=message):
        make_vae(**overrides)


def test_bad_inputs_are_refused():
    model = make_vae(num_classes=2)
    images, labels = bars(2)
    with pytest.raises(InvalidInput, match=r"images must be \(B, 1, 16, 16\)"):
        model.encode(torch.rand(2, 1, 28, 28), labels)
    with pytest.raises(InvalidInput, match="class-conditional"):
        model.encode(images, None)
    with pytest.raises(InvalidInput, match="class ids must be in 0..1"):
        model.sample(2, torch.tensor([0, 5]))
