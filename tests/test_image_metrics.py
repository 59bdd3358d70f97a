"""Image metrics on tiny synthetic images: FID/KID/PR invariants, the domain classifier and its cache."""

from __future__ import annotations

import json

import pytest
import torch
from torch import nn

from aigc.errors import InvalidInput
from aigc.metrics import image as im


def two_class_images(n: int = 160, size: int = 8, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """(n, 1, size, size) in [0, 1]: class 0 has a bright top half, class 1 a bright bottom half."""
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(n, 1, size, size, generator=g) * 0.25
    y = torch.arange(n) % 2
    x[y == 0, :, : size // 2] += 0.7
    x[y == 1, :, size // 2 :] += 0.7
    return x, y


def noisy(x: torch.Tensor, sigma: float, seed: int = 1) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return (x + sigma * torch.randn(x.shape, generator=g)).clamp(0, 1)


@pytest.fixture(scope="module")
def data():
    x, y = two_class_images(160, seed=0)
    x_test, y_test = two_class_images(64, seed=1)
    return x, y, x_test, y_test


@pytest.fixture(scope="module")
def trained(data):
    x, y, x_test, y_test = data
    return im.train_classifier(x, y, x_test, y_test, epochs=4, batch_size=32, seed=0)


# -- the classifier ------------------------------------------------------------------------------


def test_classifier_shapes_and_feature_width():
    model = im.DomainClassifier(channels=3, image_size=12, num_classes=5, width=8)
    x = torch.rand(4, 3, 12, 12)
    assert model.num_features == 32
    assert model.features(x).shape == (4, 32)
    assert model(x).shape == (4, 5)


def test_train_classifier_learns_separable_classes(trained, data):
    model, accuracy = trained
    assert accuracy >= 0.95
    assert not model.training  # returned ready to score
    # deterministic for a seed, and the global RNG is left alone
    x, y, x_test, y_test = data
    state = torch.random.get_rng_state()
    again, acc2 = im.train_classifier(x, y, x_test, y_test, epochs=4, batch_size=32, seed=0)
    assert torch.equal(torch.random.get_rng_state(), state)
    assert acc2 == accuracy
    assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), again.state_dict().values()))


def test_train_classifier_stops_on_the_clock(data):
    x, y, _, _ = data
    model, accuracy = im.train_classifier(x, y, None, None, epochs=1000, batch_size=16, time_budget=0.3)
    assert accuracy != accuracy  # NaN: no test images
    assert model.config.num_classes == 2


def test_load_or_train_classifier_trains_once_then_reuses(tmp_path, data):
    x, y, x_test, y_test = data
    kwargs = dict(epochs=1, batch_size=32)
    first, info1 = im.load_or_train_classifier(tmp_path, "toy", x, y, x_test, y_test, **kwargs)
    folder = tmp_path / "toy"
    assert info1["trained"] is True
    assert (folder / im.CLASSIFIER_WEIGHTS).is_file()
    stored = json.loads((folder / im.CLASSIFIER_INFO).read_text())
    assert stored["config"] == {"channels": 1, "image_size": 8, "num_classes": 2, "width": 32}
    assert stored["accuracy"] == info1["accuracy"]
    assert not [p for p in folder.iterdir() if p.name.endswith(".tmp")]  # atomic writes leave nothing

    second, info2 = im.load_or_train_classifier(tmp_path, "toy", x, y, x_test, y_test, **kwargs)
    assert info2["trained"] is False
    assert info2["accuracy"] == info1["accuracy"]
    assert all(torch.equal(a, b) for a, b in zip(first.state_dict().values(), second.state_dict().values()))
    torch.testing.assert_close(second.features(x[:8]), first.features(x[:8]))

    # images of another shape ask for another classifier: the stale cache is replaced
    rgb = x.repeat(1, 3, 1, 1)
    _, info3 = im.load_or_train_classifier(tmp_path, "toy", rgb, y, **kwargs)
    assert info3["trained"] is True and info3["config"]["channels"] == 3


def test_a_replaced_dataset_of_the_same_name_and_shape_trains_a_new_classifier(tmp_path, data):
    """Issue 11 item 11: after `ingest --replace` with other images of the same shape, the cached
    classifier (keyed by name and shape alone) was reused and scored the new test split at 0 %."""
    x, y, x_test, y_test = data
    kwargs = dict(epochs=4, batch_size=32)
    _, old = im.load_or_train_classifier(tmp_path, "toy", x, y, x_test, y_test, **kwargs)
    assert old["accuracy"] >= 0.95
    # the replacement: the same images with the classes swapped, so the old judge is always wrong
    _, new = im.load_or_train_classifier(tmp_path, "toy", x, 1 - y, x_test, 1 - y_test, **kwargs)
    assert new["trained"] is True
    assert new["fingerprint"] != old["fingerprint"]
    assert new["accuracy"] >= 0.95
    stored = json.loads((tmp_path / "toy" / im.CLASSIFIER_INFO).read_text())
    assert stored["fingerprint"] == new["fingerprint"]
    # one changed pixel is another dataset too
    x2 = x.clone()
    x2[0, 0, 0, 0] += 0.01
    assert im.data_fingerprint(x2, y) != im.data_fingerprint(x, y) == im.data_fingerprint(x.clone(), y.clone())


def test_extra_pairs_are_made_only_when_training_and_their_recipe_keys_the_cache(tmp_path, data):
    x, y, x_test, y_test = data
    calls = []

    def flipped():  # an augmentation: every image mirrored, same labels
        calls.append(1)
        return x.flip(3), y

    kwargs = dict(epochs=1, batch_size=32, extra=flipped)
    _, first = im.load_or_train_classifier(tmp_path, "toy", x, y, x_test, y_test, extra_recipe="flip", **kwargs)
    assert first["trained"] and first["n_train"] == 2 * len(x) and first["n_extra"] == len(x) and calls == [1]
    _, hit = im.load_or_train_classifier(tmp_path, "toy", x, y, x_test, y_test, extra_recipe="flip", **kwargs)
    assert not hit["trained"] and calls == [1]  # a cache hit never makes the pairs
    _, other = im.load_or_train_classifier(tmp_path, "toy", x, y, x_test, y_test, extra_recipe="flip v2", **kwargs)
    assert other["trained"] and other["fingerprint"] != first["fingerprint"] and calls == [1, 1]
    _, plain = im.load_or_train_classifier(tmp_path, "toy", x, y, x_test, y_test, epochs=1, batch_size=32)
    assert plain["trained"] and plain["fingerprint"] == im.data_fingerprint(x, y) and plain["n_extra"] == 0
    with pytest.raises(ValueError, match="together"):
        im.load_or_train_classifier(tmp_path, "toy", x, y, extra=flipped)


def test_a_cached_classifier_without_a_fingerprint_is_trained_again(tmp_path, data):
    x, y, x_test, y_test = data
    im.load_or_train_classifier(tmp_path, "toy", x, y, x_test, y_test, epochs=1, batch_size=32)
    path = tmp_path / "toy" / im.CLASSIFIER_INFO
    info = json.loads(path.read_text())
    del info["fingerprint"]  # as written before fingerprints existed
    path.write_text(json.dumps(info))
    _, again = im.load_or_train_classifier(tmp_path, "toy", x, y, x_test, y_test, epochs=1, batch_size=32)
    assert again["trained"] is True


def test_load_or_train_classifier_refuses_a_path_as_key(tmp_path, data):
    x, y, _, _ = data
    with pytest.raises(InvalidInput, match="dataset_key"):
        im.load_or_train_classifier(tmp_path, "../evil", x, y)


# -- FID, KID, precision/recall -----------------------------------------------------------------


def test_fid_is_zero_against_itself_and_grows_with_noise(trained, data):
    model, _ = trained
    x = data[0]
    real = im.embed(model, x)
    scale = real.double().var(0).sum().item()  # FID's natural scale: the trace of the covariance
    assert im.fid(real, real) < 1e-6 * scale
    scores = [im.fid(real, im.embed(model, noisy(x, sigma))) for sigma in (0.05, 0.15, 0.4)]
    assert 0 < scores[0] < scores[1] < scores[2], scores


@pytest.mark.filterwarnings("ignore:Metric `Kernel Inception Distance` will save")
def test_fid_and_kid_match_torchmetrics():
    """Our float64 formulas against torchmetrics' metrics, fed the same features by an identity 'network'."""
    from torchmetrics.image.fid import FrechetInceptionDistance
    from torchmetrics.image.kid import KernelInceptionDistance

    class Identity(nn.Module):
        num_features = 6

        def forward(self, x):
            return x

    g = torch.Generator().manual_seed(0)
    a = torch.randn(120, 6, generator=g, dtype=torch.float64)
    b = torch.randn(120, 6, generator=g, dtype=torch.float64) * 1.3 + 0.4

    tm_fid = FrechetInceptionDistance(feature=Identity(), normalize=True)
    tm_fid.update(a, real=True)
    tm_fid.update(b, real=False)
    assert im.fid(a, b) == pytest.approx(tm_fid.compute().item(), rel=1e-6)

    # one subset holding every sample: the subset draw cannot differ, so the figures must agree
    tm_kid = KernelInceptionDistance(feature=Identity(), subsets=1, subset_size=120, normalize=True)
    tm_kid.update(a, real=True)
    tm_kid.update(b, real=False)
    mean, std = im.kid(a, b, subsets=1, subset_size=120)
    assert mean == pytest.approx(tm_kid.compute()[0].item(), rel=1e-6)
    assert std == 0.0


def test_kid_is_near_zero_for_identical_sets_and_larger_for_noisy(trained, data):
    model, _ = trained
    x = data[0]
    real = im.embed(model, x)
    kernel_scale = ((real.double() @ real.double().T / real.shape[1] + 1) ** 3).diagonal().mean().item()
    same, same_std = im.kid(real, real, subsets=1, subset_size=len(real))
    # a set against itself: the unbiased estimate is -O(1/m) of the kernel scale (docstring), ~0
    assert abs(same) < 0.02 * kernel_scale
    assert same_std == 0.0  # one subset
    noisy_kid = [im.kid(real, im.embed(model, noisy(x, s)), subsets=1, subset_size=len(real))[0]
                 for s in (0.15, 0.4)]
    assert noisy_kid[1] > 10 * abs(same) and noisy_kid[1] > noisy_kid[0]
    # subsets are drawn from a seeded generator: the same call gives the same figures
    first = im.kid(real, real, subsets=3, subset_size=50, seed=4)
    assert im.kid(real, real, subsets=3, subset_size=50, seed=4) == first


def test_precision_recall_identical_and_collapsed():
    g = torch.Generator().manual_seed(0)
    real = torch.randn(200, 4, generator=g)
    assert im.precision_recall(real, real) == (1.0, 1.0)
    # mode collapse: every fake sample is one of three real points
    collapsed = real[torch.arange(200) % 3]
    precision, recall = im.precision_recall(real, collapsed, k=3)
    assert precision == 1.0  # each collapsed sample is a real one: perfect fidelity
    assert recall < 0.1  # but the real spread is not covered


# -- per-sample metrics and the report -------------------------------------------------------------


def test_conditional_accuracy_correct_and_shuffled_labels(trained, data):
    model, _ = trained
    _, _, x_test, y_test = data
    assert im.conditional_accuracy(model, x_test, y_test) == 1.0
    assert im.conditional_accuracy(model, x_test, 1 - y_test) == 0.0
    shuffled = y_test[torch.randperm(len(y_test), generator=torch.Generator().manual_seed(0))]
    assert im.conditional_accuracy(model, x_test, shuffled) < 0.8


def test_psnr_and_ssim():
    x = torch.rand(4, 1, 8, 8, generator=torch.Generator().manual_seed(0))
    assert im.psnr(x, x) == float("inf")
    assert im.ssim(x, x) == pytest.approx(1.0)
    slightly, very = noisy(x, 0.02), noisy(x, 0.3)
    assert 25 < im.psnr(x, slightly) and im.psnr(x, very) < im.psnr(x, slightly)
    assert im.ssim(x, very) < im.ssim(x, slightly) < 1.0
    # a large image uses the standard 11 px window
    big = torch.rand(2, 3, 16, 16, generator=torch.Generator().manual_seed(1))
    assert im.ssim(big, big) == pytest.approx(1.0)


def test_image_report(trained, data):
    model, _ = trained
    x, y, x_test, y_test = data
    report = im.image_report(model, x, x_test, fake_labels=y_test, real_labels=y)
    assert report["n_real"] == 160 and report["n_fake"] == 64
    assert report["conditional_accuracy"] == 1.0 and report["real_accuracy"] == 1.0
    assert 0 <= report["precision"] <= 1 and 0 <= report["recall"] <= 1
    assert report["fid"] >= 0 and report["kid_subset_size"] == 64
    same = im.image_report(model, x, x)
    assert same["fid"] < 1e-9 and (same["precision"], same["recall"]) == (1.0, 1.0)
    assert "conditional_accuracy" not in same


# -- errors ------------------------------------------------------------------------------------------


def _one_line(exc: pytest.ExceptionInfo) -> str:
    msg = str(exc.value)
    assert "\n" not in msg
    return msg


def test_errors_are_one_line_invalid_input(trained):
    model, _ = trained
    with pytest.raises(InvalidInput) as e:  # a 3-channel image through a greyscale classifier
        im.embed(model, torch.rand(2, 3, 8, 8))
    assert "(N, 1, 8, 8)" in _one_line(e)
    with pytest.raises(InvalidInput) as e:
        im.fid(torch.rand(10, 4), torch.rand(10, 5))
    assert "same classifier" in _one_line(e)
    with pytest.raises(InvalidInput) as e:
        im.fid(torch.rand(1, 4), torch.rand(10, 4))
    _one_line(e)
    with pytest.raises(InvalidInput) as e:
        im.precision_recall(torch.rand(3, 4), torch.rand(10, 4), k=3)
    _one_line(e)
    with pytest.raises(InvalidInput) as e:
        im.psnr(torch.rand(2, 1, 8, 8), torch.rand(2, 3, 8, 8))
    _one_line(e)
    with pytest.raises(InvalidInput) as e:
        im.ssim(torch.rand(2, 1, 8, 8) * 255, torch.rand(2, 1, 8, 8))
    assert "[0, 1]" in _one_line(e)
    with pytest.raises(InvalidInput) as e:
        im.conditional_accuracy(model, torch.rand(4, 1, 8, 8), torch.tensor([0, 1]))
    _one_line(e)
    with pytest.raises(InvalidInput) as e:
        im.train_classifier(torch.rand(8, 1, 8, 8), torch.tensor([0, 1] * 4), None, None, num_classes=1)
    _one_line(e)
