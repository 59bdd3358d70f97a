"""The `gan` family through the image-family contract: the two-optimizer step trains D and G and keeps
an EMA of G, samples are images, seeds and reloads are exact, labels steer G, every loss and
spectral-norm setting runs, and bad arguments fail with one line."""

from __future__ import annotations

import math
import warnings

import pytest
import torch
from image_steering import obeyed, train_on_halves
from safetensors.torch import load_model, save_model

from aigc.errors import InvalidInput
from aigc.models.gan import GAN, SPREAD_WARNING, CollapseWarning, cutout, mode_seeking, nn_score, translate
from aigc.models.registry import config_from_dict


def make_gan(preset: str = "tiny", **overrides) -> GAN:
    """A model built the way the trainer will: preset + dataset facts, through the registry's checks."""
    values = {**GAN.PRESETS[preset], "image_size": 16, "channels": 1, **overrides}
    return GAN(config_from_dict(GAN.Config, values, what="gan config"))


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


def train(model: GAN, steps: int, batch: int = 16, lr: float | None = None) -> list[dict]:
    opts = model.configure_optimizers(lr=lr or GAN.TRAIN_DEFAULTS["tiny"]["lr"], weight_decay=0.0)
    images, labels = bars(256)
    g = torch.Generator().manual_seed(1)
    history = []
    for _ in range(steps):
        idx = torch.randint(len(images), (batch,), generator=g)
        y = labels[idx] if model.conditional else None
        history.append(model.training_step(images[idx], y, opts, backward))
    return history


def test_training_moves_the_discriminator_loss_and_the_ema():
    torch.manual_seed(0)
    model = make_gan(num_classes=2)
    g_before = [p.detach().clone() for p in model.generator.parameters()]
    hist = train(model, 40)
    assert set(hist[0]) == {"loss", "d_loss", "g_loss"} and set(GAN.progress_keys) <= set(hist[0])
    d = [h["d_loss"] for h in hist]
    assert sum(d[-10:]) / 10 < d[0] - 0.3  # D learned to tell the bars from G's early noise
    assert all(p.requires_grad for p in model.discriminator.parameters())  # unfrozen after the G step
    # G moved, and its EMA lags behind it
    assert any(not torch.equal(a, b) for a, b in zip(g_before, model.generator.parameters()))
    pairs = zip(model.generator_ema.parameters(), model.generator.parameters())
    assert max((e - p).abs().max().item() for e, p in pairs) > 1e-4
    assert model.ema_updates.item() == 40
    assert not model.generator_ema.training  # its batch norm uses running statistics
    model.train()
    assert not model.generator_ema.training


@pytest.mark.parametrize("loss", ["hinge", "ns"])
@pytest.mark.parametrize("spectral_norm", [True, False])
def test_every_loss_and_spectral_norm_setting_trains(loss, spectral_norm):
    torch.manual_seed(0)
    model = make_gan(loss=loss, spectral_norm=spectral_norm, num_classes=2)
    d_before = [p.detach().clone() for p in model.discriminator.parameters()]
    g_before = [p.detach().clone() for p in model.generator.parameters()]
    hist = train(model, 6)
    assert all(torch.isfinite(torch.tensor([h["d_loss"], h["g_loss"]])).all() for h in hist)
    assert all(h["d_loss"] >= 0 for h in hist)  # both D losses are sums of non-negative terms
    assert any(not torch.equal(a, b) for a, b in zip(d_before, model.discriminator.parameters()))
    assert any(not torch.equal(a, b) for a, b in zip(g_before, model.generator.parameters()))
    normalised = any("parametrizations" in name for name, _ in model.discriminator.named_parameters())
    assert normalised == spectral_norm


@pytest.mark.parametrize(
    ("size", "channels", "depth"), [(8, 1, 2), (10, 3, 2), (16, 1, 2), (28, 1, 2), (28, 3, 3)]
)
def test_samples_have_the_image_shape_and_range(size, channels, depth):
    torch.manual_seed(0)
    model = make_gan(image_size=size, channels=channels, depth=depth)
    x = model.sample(5, generator=torch.Generator().manual_seed(0))
    assert x.shape == (5, channels, size, size) and x.dtype == torch.float32
    assert x.min() >= 0 and x.max() <= 1


def test_28px_starts_at_7x7_with_depth_2():
    model = make_gan("small", image_size=28)
    assert model.generator.side == 7  # 7 -> 14 -> 28: no cropping


def test_same_seed_gives_the_same_images_also_after_reload(tmp_path):
    torch.manual_seed(0)
    model = make_gan(num_classes=2)
    train(model, 5)
    a = model.sample(4, generator=torch.Generator().manual_seed(7))
    assert torch.equal(a, model.sample(4, generator=torch.Generator().manual_seed(7)))
    assert not torch.equal(a, model.sample(4, generator=torch.Generator().manual_seed(8)))

    save_model(model, str(tmp_path / "model.safetensors"))
    torch.manual_seed(123)  # a fresh model starts from other weights
    fresh = make_gan(num_classes=2)
    assert not torch.equal(a, fresh.sample(4, generator=torch.Generator().manual_seed(7)))
    load_model(fresh, str(tmp_path / "model.safetensors"))
    assert torch.equal(a, fresh.sample(4, generator=torch.Generator().manual_seed(7)))
    assert fresh.ema_updates.item() == 5  # the EMA warm-up resumes where it was


def test_labels_steer_the_generator():
    torch.manual_seed(0)
    model = make_gan(num_classes=2, image_size=8)
    assert min(obeyed(model)) < 0.9  # untrained, the label does not decide the lit half
    train_on_halves(model, 40, batch=16, lr=GAN.TRAIN_DEFAULTS["tiny"]["lr"])
    assert min(obeyed(model)) >= 0.9  # samples asked for class k light class k's half

    model = make_gan(num_classes=2)
    train(model, 5)
    gen = lambda: torch.Generator().manual_seed(3)  # noqa: E731
    s0, s1 = model.sample(4, torch.tensor([0]), gen()), model.sample(4, torch.tensor([1]), gen())
    assert torch.equal(s0, model.sample(4, torch.zeros(4, dtype=torch.long), gen()))  # one id broadcasts
    mixed = model.sample(4, torch.tensor([0, 1, 0, 1]), gen())
    assert torch.equal(mixed[0], s0[0]) and torch.equal(mixed[1], s1[1])
    random_classes = model.sample(4, None, gen())  # a conditional model picks classes itself
    assert random_classes.shape == (4, 1, 16, 16)


def test_interpolation_runs_between_the_two_seeds_samples():
    torch.manual_seed(0)
    model = make_gan()
    frames = model.interpolate(5, 1, 2)
    assert frames.shape == (5, 1, 16, 16)
    for frame, seed in ((frames[0], 1), (frames[-1], 2)):
        alone = model.sample(1, generator=torch.Generator().manual_seed(seed))[0]
        assert torch.allclose(frame, alone, atol=1e-5)
    assert make_gan(num_classes=3).interpolate(3, 1, 2, condition=2).shape == (3, 1, 16, 16)


def test_optimizers_cover_g_then_d_and_never_the_ema():
    model = make_gan(num_classes=2)
    opt_g, opt_d = model.configure_optimizers(lr=1e-3, weight_decay=0.0)
    ids = lambda opt: {id(p) for group in opt.param_groups for p in group["params"]}  # noqa: E731
    assert ids(opt_g) == {id(p) for p in model.generator.parameters()}
    assert ids(opt_d) == {id(p) for p in model.discriminator.parameters()}
    assert opt_g.param_groups[0]["betas"] == (model.config.beta1, model.config.beta2)
    assert opt_g.param_groups[0]["lr"] == opt_d.param_groups[0]["lr"] == 1e-3
    opt_g, opt_d = make_gan(d_lr_ratio=4.0).configure_optimizers(lr=1e-3, weight_decay=0.0)  # TTUR
    assert opt_d.param_groups[0]["lr"] == 4 * opt_g.param_groups[0]["lr"] == 4e-3


def test_validation_score_ranks_a_collapsed_generator_below_a_varied_one():
    real, labels = bars(64)
    varied, _ = bars(64, seed=1)  # other images of the same classes
    collapsed = torch.stack([varied[labels == y][0] for y in labels.tolist()])  # one image per class
    noise = torch.rand_like(real)
    score = {name: nn_score(real, fake, labels) for name, fake in
             (("varied", varied), ("collapsed", collapsed), ("noise", noise))}
    assert score["varied"][0] < score["collapsed"][0] and score["varied"][0] < score["noise"][0]  # chamfer
    assert score["collapsed"][1] == 0.0 and 0.8 < score["varied"][1] < 1.25  # spread
    # the model's own validation: a fixed seed, so equal weights score equally
    model = make_gan(num_classes=2)
    first = model.validation_losses(real, labels)
    assert set(first) == {"loss", "spread"} and first == model.validation_losses(real, labels)


def test_a_collapse_warns_once_and_the_spread_shows_in_progress():
    model = make_gan(num_classes=2)
    train(model, 2)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        spread = model.validation_losses(*bars(16))["spread"]  # a barely trained G draws ~one image:
    assert spread < SPREAD_WARNING  # low, but it never was varied, so that is no collapse
    model.best_spread = 0.8  # as if an earlier validation had seen varied samples
    with pytest.warns(CollapseWarning, match=r"down from 0.80x \(mode collapse\)"):
        model.validation_losses(*bars(16))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        model.validation_losses(*bars(16))  # once per model
    assert train(model, 1)[0]["spread"] == spread


def test_translation_and_cutout_keep_shapes_and_gradients():
    torch.manual_seed(0)
    x = torch.rand(6, 3, 16, 16, requires_grad=True)
    for fn in (translate, cutout):
        out = fn(x)
        assert out.shape == x.shape
        out.sum().backward()  # differentiable: G learns through them
        assert x.grad is not None and x.grad.abs().sum() > 0
        x.grad = None
    flat = torch.full((4, 1, 16, 16), 0.3)
    assert torch.equal(translate(flat), flat)  # edges repeat: a plain background stays plain
    holes = (cutout(torch.ones(4, 1, 16, 16)) == 0).sum(dim=(1, 2, 3))
    assert torch.all(holes == 64)  # an 8x8 square (half the side) per image


def test_augmentation_r1_and_ttur_train():
    torch.manual_seed(0)
    model = make_gan(num_classes=2, augment="translation,cutout", r1_gamma=1.0, r1_every=2, d_lr_ratio=2.0)
    due = []
    model._r1_due = lambda: due.append(GAN._r1_due(model)) or due[-1]  # noqa: E731  (record the beat)
    hist = train(model, 6)
    assert due == [True, False] * 3 and all(math.isfinite(h["d_loss"]) for h in hist)


def test_minibatch_std_sees_a_collapsed_group_and_never_mixes_groups():
    model = make_gan(num_classes=2, minibatch_std=4).requires_grad_(False)
    d = model.discriminator
    varied = bars(4)[0] * 2 - 1
    same = varied[:1].repeat(4, 1, 1, 1)  # a collapsed generator: one image four times
    spread = d._spread(d.body(torch.cat([varied, same])))  # two groups of four
    assert spread.shape == (8, 1)
    assert torch.all(spread[:4] == spread[0]) and torch.all(spread[4:] == spread[4])  # one value per group
    assert float(spread[0]) > 100 * float(spread[4]) and float(spread[4]) < 0.01  # varied vs repeated (eps only)
    # D's score depends on it: the same images scored in a varied group and in a collapsed one differ
    scores = d(torch.cat([varied[:1].repeat(4, 1, 1, 1), same]), torch.zeros(8, dtype=torch.long))
    assert torch.allclose(scores[:4], scores[4:])  # identical groups, identical scores
    mixed = d(torch.cat([varied[:1], varied[1:4]]), torch.zeros(4, dtype=torch.long))
    assert not torch.allclose(mixed[:1], scores[:1])  # the first image, now in a varied group
    losses = train(make_gan(num_classes=2, minibatch_std=4), 10)
    assert all(torch.isfinite(torch.tensor(h["d_loss"])) for h in losses)


def test_mode_seeking_charges_a_generator_that_ignores_its_noise():
    z = torch.randn(8, 4, generator=torch.Generator().manual_seed(0))
    varied = bars(8)[0]
    same = varied[:1].repeat(8, 1, 1, 1)  # one image whatever the noise
    labels = torch.zeros(8, dtype=torch.long)
    assert float(mode_seeking(same, z, labels)) > 1000 * float(mode_seeking(varied, z, labels))
    # only pairs of one class count: (0, 1) differ in class, so a collapsed pair there is not charged
    mixed = torch.cat([same[:2], varied[2:]])
    assert float(mode_seeking(mixed, z, torch.tensor([0, 1, 0, 0, 0, 0, 0, 0]))) == pytest.approx(
        float(mode_seeking(varied[2:], z[2:], labels[2:])))
    assert float(mode_seeking(same, z, torch.tensor([0, 1] * 4))) == 0.0  # no pair shares a class
    # and the term trains: a model with it takes steps with finite losses
    hist = train(make_gan(num_classes=2, diversity=1.0), 4)
    assert all(math.isfinite(h["g_loss"]) for h in hist)


def test_the_auxiliary_classifier_learns_the_classes_and_pushes_g_towards_them():
    torch.manual_seed(0)
    model = make_gan(num_classes=2, aux_class=1.0)
    assert make_gan(num_classes=2).discriminator.classify is None  # off: no head, old checkpoints load
    assert make_gan(aux_class=1.0).discriminator.classify is None  # unconditional: nothing to name
    images, labels = bars(64, seed=3)

    def named(x: torch.Tensor) -> float:  # share of images D's head names as their class
        with torch.no_grad():
            model.discriminator(x * 2 - 1, labels)
            return float((model.discriminator.logits.argmax(1) == labels).float().mean())

    before = named(images)
    train(model, 40)
    after = named(images)  # reals it did not train on
    assert after >= 0.9 and after >= before + 0.2, (before, after)
    # G's loss carries the term: the same step without it gives another G loss
    opts = model.configure_optimizers(lr=1e-3, weight_decay=0.0)
    state = {k: v.clone() for k, v in model.state_dict().items()}
    torch.manual_seed(5)
    with_term = model.training_step(images[:16], labels[:16], opts, backward)["g_loss"]
    model.load_state_dict(state)
    model.config.aux_class = 0.0
    torch.manual_seed(5)
    without = model.training_step(images[:16], labels[:16], opts, backward)["g_loss"]
    assert with_term > without


def test_class_checked_sampling_redraws_what_d_names_as_another_class(monkeypatch):
    model = make_gan(num_classes=2, aux_class=1.0, sample_tries=3)
    calls = []
    real_g = model.generator_ema.forward
    monkeypatch.setattr(model.generator_ema, "forward", lambda z, y: calls.append(len(z)) or real_g(z, y))
    # D's head names every image class 0 (logits as large for 0, lower for 1)
    monkeypatch.setattr(model.discriminator, "class_logits", lambda x: torch.tensor([[1.0, 0.0]]).repeat(len(x), 1))

    def draw(label: int, tries: int, seed: int = 3) -> torch.Tensor:
        calls.clear()
        model.config.sample_tries = tries
        return model.sample(4, torch.full((4,), label), torch.Generator().manual_seed(seed))

    once = draw(1, 1)
    assert calls == [4]
    redrawn = draw(1, 3)
    assert calls == [4, 4, 4]  # rejected every time: three draws in all, the last kept
    assert not torch.allclose(redrawn, once) and torch.equal(redrawn, draw(1, 3))  # fresh noise, seeded
    accepted = draw(0, 3)
    assert calls == [4] and torch.equal(accepted, draw(0, 1))  # named as asked at once: one draw
    assert make_gan(num_classes=2).config.sample_tries == 1  # off unless asked for; old runs load with 1


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (dict(sample_tries=0), r"sample_tries must be >= 1 \(1 = off\), got 0"),
        (dict(loss="wasserstein"), "loss must be one of hinge, ns, got 'wasserstein'"),
        (dict(image_size=4), "image_size must be >= 8"),
        (dict(depth=5), "depth must be 1..4 for 16 px"),
        (dict(ema_decay=1.0), r"ema_decay must be in \[0, 1\)"),
        (dict(minibatch_std=1), "minibatch_std must be 0 .off. or a group size >= 2"),
        (dict(augment="translation,color"), "augment takes a comma-separated list of translation, cutout"),
        (dict(r1_gamma=-1.0), "r1_gamma must be >= 0"),
        (dict(d_lr_ratio=0.0), "d_lr_ratio must be > 0"),
        (dict(diversity=-1.0), "diversity must be >= 0"),
        (dict(aux_class=-0.5), "aux_class must be >= 0"),
    ],
)
def test_bad_configs_are_refused(overrides, message):
    with pytest.raises(InvalidInput, match=message):
        make_gan(**overrides)


def test_bad_inputs_are_refused():
    model = make_gan(num_classes=2)
    opts = model.configure_optimizers(1e-3, 0.0)
    images, labels = bars(2)
    with pytest.raises(InvalidInput, match="class-conditional"):
        model.training_step(images, None, opts, backward)
    with pytest.raises(InvalidInput, match=r"images must be \(B, 1, 16, 16\)"):
        model.training_step(torch.rand(2, 1, 28, 28), labels, opts, backward)
    with pytest.raises(InvalidInput, match="class ids must be in 0..1"):
        model.sample(2, torch.tensor([0, 5]))
