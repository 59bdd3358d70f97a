"""diffusion: training lowers the noise-prediction loss, DDIM samples have the right shape and
range, seeds and reloads reproduce images, class labels and guidance change them and samples
asked for a class show it, the presets predict v with min-SNR weights, SDEdit works,
bad arguments are refused, the exported pipeline folder loads in diffusers, offset noise shifts each
image's channels by one constant, eta > 0 samples with seeded fresh noise, and runs saved before
offset noise and eta existed load as they were."""

from __future__ import annotations

from dataclasses import asdict

import pytest
import torch
from safetensors.torch import load_model, save_model

from image_steering import obeyed, train_on_halves

from aigc.errors import InvalidInput
from aigc.models.diffusion import Diffusion
from aigc.models.registry import config_from_dict, make_config


@pytest.fixture(autouse=True)
def _quiet_diffusers():
    from diffusers.utils import logging as dlogging

    dlogging.disable_progress_bar()


def toy_images(n: int, size: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """(images (n, 1, size, size) in [0, 1], labels (n,)): class 0 a bright left half, class 1 a
    bright top half, class 2 a bright centre square."""
    g = torch.Generator().manual_seed(seed)
    labels = torch.randint(0, 3, (n,), generator=g)
    images = torch.zeros(n, 1, size, size)
    h = size // 2
    for i, y in enumerate(labels.tolist()):
        if y == 0:
            images[i, 0, :, :h] = 1
        elif y == 1:
            images[i, 0, :h, :] = 1
        else:
            images[i, 0, h // 2 : h + h // 2, h // 2 : h + h // 2] = 1
    return images, labels


def build(size: int = 8, num_classes: int = 0, **overrides) -> Diffusion:
    torch.manual_seed(0)
    values = {"image_size": size, "num_classes": num_classes, **overrides}
    return Diffusion(make_config(Diffusion, "tiny", values))


def backward(loss: torch.Tensor) -> None:  # what Fabric's backward does on a CPU
    loss.backward()


def train(model: Diffusion, steps: int, size: int = 8, batch: int = 8, lr: float = 2e-3,
          conditional: bool = False) -> list[float]:
    images, labels = toy_images(64, size)
    opts = model.configure_optimizers(lr, 0.0)
    g = torch.Generator().manual_seed(1)
    model.train()
    losses = []
    for _ in range(steps):
        idx = torch.randint(0, len(images), (batch,), generator=g)
        out = model.training_step(images[idx], labels[idx] if conditional else None, opts, backward)
        losses.append(out["loss"])
    model.eval()
    return losses


def test_a_few_steps_lower_the_loss():
    model = build(8)
    images, _ = toy_images(64, 8)
    before = model.validation_losses(images, None)["loss_online"]  # same noise and timesteps each time
    train(model, 20)
    after = model.validation_losses(images, None)["loss_online"]
    assert after < before * 0.8, (before, after)


def test_training_moves_the_ema_copy_and_not_more():
    model = build(8)
    online = {n: p.detach().clone() for n, p in model.unet.named_parameters()}
    ema = {n: p.detach().clone() for n, p in model.ema.named_parameters()}
    assert all(torch.equal(online[n], ema[n]) for n in online)  # the copy starts equal
    assert all(not p.requires_grad for p in model.ema.parameters())
    (opt,) = model.configure_optimizers(1e-3, 0.0)
    opt_params = {id(p) for g in opt.param_groups for p in g["params"]}
    assert opt_params == {id(p) for p in model.unet.parameters()}
    train(model, 3)
    assert int(model.ema_updates) == 3
    changed = [n for n, p in model.ema.named_parameters() if not torch.equal(p, ema[n])]
    assert changed, "the EMA weights follow the online ones"
    differ = [n for n, p in model.ema.named_parameters() if not torch.equal(p, model.unet.get_parameter(n))]
    assert differ, "but lag behind them"
    assert any(k.startswith("ema.") for k in model.state_dict())


def test_sample_shape_and_range():
    model = build(8)
    images = model.sample(3, generator=torch.Generator().manual_seed(0), steps=2)
    assert images.shape == (3, 1, 8, 8) and images.dtype == torch.float32
    assert images.min() >= 0 and images.max() <= 1


def test_same_seed_same_images_after_reload(tmp_path):
    model = build(8, num_classes=3)
    train(model, 3, conditional=True)
    save_model(model, str(tmp_path / "m.safetensors"))
    other = Diffusion(model.config)
    load_model(other, str(tmp_path / "m.safetensors"))
    other.eval()
    cond = torch.tensor([0, 2])
    a = model.sample(2, cond, torch.Generator().manual_seed(7), steps=2)
    b = other.sample(2, cond, torch.Generator().manual_seed(7), steps=2)
    assert torch.equal(a, b)
    c = model.sample(2, cond, torch.Generator().manual_seed(8), steps=2)
    assert not torch.equal(a, c)


def test_labels_and_guidance_change_the_images():
    model = build(8, num_classes=3)
    train(model, 3, conditional=True)

    def draw(labels, guidance):
        gen = torch.Generator().manual_seed(3)
        return model.sample(2, torch.tensor(labels), gen, steps=2, guidance=guidance)

    base = draw([0, 0], 1.0)
    assert not torch.allclose(base, draw([1, 1], 1.0))
    assert not torch.allclose(base, draw([0, 0], 3.0))
    assert torch.equal(base, draw([0, 0], 1.0))
    unconditional = model.sample(2, None, torch.Generator().manual_seed(3), steps=2)  # the null class
    assert unconditional.shape == base.shape
    with pytest.raises(InvalidInput, match="0..2"):
        draw([0, 3], 1.0)


def test_samples_asked_for_a_class_show_that_class():
    torch.manual_seed(0)
    model = build(8, num_classes=2)
    assert min(obeyed(model, steps=4)) < 0.9  # untrained, the label does not decide the lit half
    train_on_halves(model, 120, batch=8, lr=2e-3)
    assert min(obeyed(model, steps=4)) >= 0.9  # samples asked for class k light class k's half


def test_presets_predict_v_with_min_snr_weights_and_old_runs_load_as_epsilon():
    model = build(8)
    assert model.config.prediction_type == "v_prediction" and model.config.snr_gamma == 5.0
    assert model.noise_scheduler.config.prediction_type == "v_prediction"  # DDIM and the export follow
    t = torch.tensor([0, 500, 999])
    a = model.noise_scheduler.alphas_cumprod[t]
    snr = a / (1 - a)
    assert torch.allclose(model._snr_weight(t), snr.clamp(max=5.0) / (snr + 1))
    w = model._snr_weight(t)
    assert w[0] < 1e-3 and w[1] > 0.4  # a nearly clean step weighs little against a half-noised one
    old = Diffusion(Diffusion.Config(image_size=8, base_channels=8, norm_num_groups=4))  # run.json without them
    assert old.config.prediction_type == "epsilon" and old.config.snr_gamma == 0.0
    x, _ = toy_images(4, 8)
    gen = lambda: torch.Generator().manual_seed(0)  # noqa: E731
    assert old.loss(x, None, generator=gen()).item() > 0.5  # predicting eps from scratch: about 1
    with pytest.raises(InvalidInput, match="prediction_type must be one of epsilon, v_prediction"):
        build(8, prediction_type="sample")


def test_unconditional_model_refuses_a_condition():
    with pytest.raises(InvalidInput, match="unconditional"):
        build(8).sample(2, torch.tensor([0, 1]), steps=2)


def test_steps_below_one_are_refused():
    model = build(8)
    with pytest.raises(InvalidInput, match="steps must be between 1 and 1000, got 0"):
        model.sample(1, steps=0)
    with pytest.raises(InvalidInput, match="steps"):
        model.sdedit(torch.zeros(1, 1, 8, 8), None, 0.5, steps=0)
    with pytest.raises(InvalidInput, match="strength"):
        model.sdedit(torch.zeros(1, 1, 8, 8), None, 0.0, steps=2)


def test_sdedit():
    model = build(8, num_classes=3)
    images, _ = toy_images(2, 8)
    g = lambda: torch.Generator().manual_seed(1)  # noqa: E731
    out = model.sdedit(images, torch.tensor([2, 1]), strength=0.5, steps=4, generator=g())
    assert out.shape == images.shape and out.min() >= 0 and out.max() <= 1
    # a weaker edit stays nearer the input than a full one
    weak = model.sdedit(images, torch.tensor([2, 1]), strength=0.25, steps=4, generator=g())
    full = model.sdedit(images, torch.tensor([2, 1]), strength=1.0, steps=4, generator=g())
    assert (weak - images).abs().mean() < (full - images).abs().mean()


def test_sizes_the_unet_cannot_halve_are_padded_and_cropped():
    model = build(14, levels=3)  # 14 -> 7 -> 4 would not come back up: padded to 16
    assert model.padded_size == 16 and model.unet.config.sample_size == 16
    images, _ = toy_images(4, 14)
    out = model.training_step(images, None, model.configure_optimizers(1e-3, 0.0), backward)
    assert out["loss"] > 0
    model.eval()
    assert model.sample(2, steps=2).shape == (2, 1, 14, 14)
    assert model.validation_losses(images, None)["loss"] == model.validation_losses(images, None)["loss"]


def test_save_pipeline_loads_in_diffusers(tmp_path):
    from diffusers import DDPMPipeline

    model = build(8)
    train(model, 2)
    model.save_pipeline(tmp_path / "pipe")
    pipe = DDPMPipeline.from_pretrained(tmp_path / "pipe")
    pipe.set_progress_bar_config(disable=True)
    assert torch.equal(pipe.unet.conv_in.weight, model.ema.conv_in.weight)  # the EMA weights
    assert pipe.scheduler.config.beta_schedule == model.config.beta_schedule
    gen = torch.Generator().manual_seed(0)
    out = pipe(batch_size=1, num_inference_steps=2, generator=gen, output_type="np")
    assert out.images.shape == (1, 8, 8, 1)

    conditional = build(8, num_classes=3)
    conditional.save_pipeline(tmp_path / "cond")
    pipe = DDPMPipeline.from_pretrained(tmp_path / "cond")
    assert pipe.unet.config.num_class_embeds == 4  # 3 classes + the null class
    x = torch.randn(1, 1, 8, 8)
    eps = pipe.unet(x, 10, class_labels=torch.tensor([1])).sample
    # equal to float rounding: the loaded UNet may order its sums differently (3e-7 seen on a CPU)
    assert torch.allclose(eps, conditional.ema(x, 10, class_labels=torch.tensor([1])).sample, atol=1e-5)


def test_offset_noise_adds_one_constant_per_image_and_channel(monkeypatch):
    x = torch.rand(4, 3, 8, 8)
    seen = []

    def noises(model: Diffusion) -> torch.Tensor:
        seen.clear()
        real = model.noise_scheduler.add_noise
        spy = lambda x0, n, t: seen.append(n) or real(x0, n, t)  # noqa: E731
        monkeypatch.setattr(model.noise_scheduler, "add_noise", spy)
        model.loss(x, None, generator=torch.Generator().manual_seed(0))
        return seen[0]

    plain = noises(build(8, channels=3))
    assert build(8, channels=3).config.offset_noise == 0.0  # off by default and in tiny
    shifted = noises(build(8, channels=3, offset_noise=0.1))
    offset = shifted - plain  # the same per-pixel draws, plus the offset
    assert torch.allclose(offset, offset[..., :1, :1].expand_as(offset))  # constant over each image's pixels
    per_channel = offset[:, :, 0, 0]
    assert per_channel.std() > 0.03 and per_channel.abs().max() < 0.5  # ~ 0.1 * N(0, 1), B x C of them
    with pytest.raises(InvalidInput, match="offset_noise must be >= 0"):
        build(8, offset_noise=-0.1)


def test_eta_adds_fresh_noise_at_each_step_and_is_seeded():
    model = build(8, num_classes=3)
    train(model, 3, conditional=True)
    cond = torch.tensor([0, 2])

    def draw(eta, seed=5):
        return model.sample(2, cond, torch.Generator().manual_seed(seed), steps=4, eta=eta)

    assert torch.equal(draw(1.0), draw(1.0))  # the generator drives the per-step noise too
    assert not torch.allclose(draw(1.0), draw(0.0))
    default = model.sample(2, cond, torch.Generator().manual_seed(5), steps=4)
    assert torch.equal(draw(0.0), default)  # tiny's default
    with pytest.raises(InvalidInput, match="eta must be >= 0"):
        draw(-0.5)


def test_offset_noise_and_eta_are_config_and_runs_saved_before_them_load_as_they_were():
    small = make_config(Diffusion, "small", {"image_size": 32, "channels": 3, "num_classes": 6})
    assert (small.offset_noise, small.sample_eta, small.guidance) == (0.1, 1.0, 2.0)  # small's (see diffusion.py)
    tuned = make_config(Diffusion, "small", {"image_size": 32, "channels": 3, "num_classes": 6,
                                             "offset_noise": 0.2, "sample_eta": 0.5, "guidance": 1.5})
    again = config_from_dict(Diffusion.Config, asdict(tuned))  # what run.json holds round-trips
    assert again == tuned and (again.offset_noise, again.sample_eta, again.guidance) == (0.2, 0.5, 1.5)
    old = asdict(small)  # a run saved before the two fields existed
    del old["offset_noise"], old["sample_eta"]
    before = config_from_dict(Diffusion.Config, old)
    assert (before.offset_noise, before.sample_eta, before.guidance) == (0.0, 0.0, 2.0)


def test_scale_shift_conditioning_scales_and_shifts_each_block_and_loads_as_saved():
    plain, film = build(8, num_classes=3), build(8, num_classes=3, time_scale_shift="scale_shift")
    # ADM's adaptive group norm: each ResNet block's embedding projection gives a scale and a shift
    resnet = lambda m: m.unet.down_blocks[0].resnets[0]  # noqa: E731
    assert resnet(film).time_emb_proj.out_features == 2 * resnet(plain).time_emb_proj.out_features
    assert resnet(film).time_embedding_norm == "scale_shift" and resnet(plain).time_embedding_norm == "default"
    old = asdict(plain.config)  # a run saved before the field existed
    del old["time_scale_shift"]
    assert config_from_dict(Diffusion.Config, old).time_scale_shift == "default"
    with pytest.raises(InvalidInput, match="time_scale_shift must be one of default, scale_shift"):
        build(8, time_scale_shift="film")
