"""Image quality metrics: FID, KID and precision/recall in the feature space of a domain classifier,
conditional accuracy, and PSNR/SSIM for reconstructions.

Inception-v3 weights cannot be downloaded here, and an ImageNet network is a poor judge of 28 px
greyscale garments anyway. So each dataset gets its own judge: :class:`DomainClassifier`, a small
CNN trained on the dataset's train split (once; :func:`load_or_train_classifier` caches it). Its
penultimate layer is the feature space for FID, KID and precision/recall, and its predictions give
the conditional accuracy of class-conditional samples. Figures are comparable between runs scored
with the *same* classifier, not with published Inception-based numbers.

FID and KID are computed here on features, in float64, rather than through torchmetrics'
``FrechetInceptionDistance(feature=module)``: the functions take features, so one embedding pass
serves FID, KID and precision/recall; and FID's trace term is taken from symmetric matrices (``eigh``
and singular values, see :func:`fid`), where torchmetrics takes ``eigvals`` of the non-symmetric
``S1 S2``, whose values can come out slightly complex or negative. The tests check that both agree.

This module knows images as float tensors (N, C, H, W) in [0, 1] and features as (N, F) tensors.
It knows nothing about runs, datasets on disk or generators; callers pass the images in.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from aigc.checkpoints import load_weights, save_weights
from aigc.errors import InvalidInput
from aigc.workspace import write_json_atomic

CLASSIFIER_WEIGHTS = "classifier.safetensors"
CLASSIFIER_INFO = "classifier.json"
EMBED_BATCH = 512  # images per forward pass when embedding or predicting (memory, not results)
_KEY = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")


# -- the judge -----------------------------------------------------------------------------------


@dataclass
class ClassifierConfig:
    channels: int
    image_size: int
    num_classes: int
    width: int = 32  # channels of the first conv; the second and third have 2x, features are 4x


class DomainClassifier(nn.Module):
    """A small CNN classifier trained on a dataset's train split; its penultimate layer is the
    feature space for FID/KID/PR.

    (B, C, S, S) -> conv3x3/2(w) -> conv3x3/2(2w) -> conv3x3(2w) -> avgpool to 4x4
    -> linear(4w) = features -> linear(K) = logits. Batch norm after every conv makes three epochs
    enough; the adaptive pool lets one design serve 8 px to 64 px images. On 28 px Fashion-MNIST
    with w = 32 that is about 2.9 M multiply-adds per image (a 60,000-image CPU epoch in ~15 s).
    Features are post-ReLU, like Inception's pool3 features that FID was defined on.
    """

    def __init__(self, channels: int, image_size: int, num_classes: int, width: int = 32):
        super().__init__()
        self.config = ClassifierConfig(channels, image_size, num_classes, width)
        _check_classifier_config(self.config)
        w = width
        self.num_features = 4 * w  # torchmetrics' FID/KID read this when given the module as `feature`

        def block(c_in: int, c_out: int, stride: int) -> list[nn.Module]:
            conv = nn.Conv2d(c_in, c_out, 3, stride=stride, padding=1, bias=False)
            return [conv, nn.BatchNorm2d(c_out), nn.ReLU()]

        # Stride-2 convs, no full-resolution layer and no max-pooling: on a CPU a 3x3 conv at full
        # resolution costs more than the rest of the network (10x the step time, measured).
        self.body = nn.Sequential(
            *block(channels, w, 2),  # (B, w, S/2, S/2)
            *block(w, 2 * w, 2),  # (B, 2w, S/4, S/4)
            *block(2 * w, 2 * w, 1),
            nn.AdaptiveAvgPool2d(4),  # (B, 2w, 4, 4) whatever S
            nn.Flatten(),
        )
        self.to_features = nn.Sequential(nn.Linear(2 * w * 16, self.num_features), nn.ReLU())
        self.head = nn.Linear(self.num_features, num_classes)

    def features(self, images: Tensor) -> Tensor:
        """images (N, C, H, W) in [0, 1] -> penultimate features (N, num_features)."""
        self._check_images(images)
        return self.to_features(self.body(images * 2.0 - 1.0))  # centred input trains faster

    def forward(self, images: Tensor) -> Tensor:
        """images (N, C, H, W) in [0, 1] -> class logits (N, num_classes)."""
        return self.head(self.features(images))

    def config_dict(self) -> dict[str, int]:
        return asdict(self.config)

    def _check_images(self, images: Tensor) -> None:
        c, s = self.config.channels, self.config.image_size
        if not isinstance(images, Tensor) or images.dim() != 4 or tuple(images.shape[1:]) != (c, s, s):
            shown = tuple(images.shape) if isinstance(images, Tensor) else type(images).__name__
            raise InvalidInput(
                f"images must be (N, {c}, {s}, {s}) for this classifier (trained on {c}-channel {s} px "
                f"images), got {shown}: score images of the classifier's dataset"
            )


def _check_classifier_config(cfg: ClassifierConfig) -> None:
    for key, low in (("channels", 1), ("image_size", 4), ("num_classes", 2), ("width", 1)):
        value = getattr(cfg, key)
        if not isinstance(value, int) or isinstance(value, bool) or value < low:
            raise InvalidInput(f"classifier {key} must be a whole number >= {low}, got {value!r}")


@torch.no_grad()
def embed(classifier: DomainClassifier, images: Tensor, batch_size: int = EMBED_BATCH) -> Tensor:
    """Features (N, F) of ``images`` in eval mode, batch by batch; the module's mode is restored."""
    return _batched(classifier, images, classifier.features, batch_size)


@torch.no_grad()
def predict(classifier: DomainClassifier, images: Tensor, batch_size: int = EMBED_BATCH) -> Tensor:
    """Predicted class ids (N,) of ``images`` in eval mode."""
    return _batched(classifier, images, lambda x: classifier(x).argmax(1), batch_size)


def _batched(classifier: DomainClassifier, images: Tensor, fn, batch_size: int) -> Tensor:
    classifier._check_images(images)
    _check_images(images, "images")
    was_training = classifier.training
    classifier.eval()
    try:
        return torch.cat([fn(images[i : i + batch_size]) for i in range(0, max(len(images), 1), batch_size)])
    finally:
        classifier.train(was_training)


# -- training the judge ----------------------------------------------------------------------------


def train_classifier(
    train_images: Tensor,
    train_labels: Tensor,
    test_images: Tensor | None,
    test_labels: Tensor | None,
    *,
    epochs: int = 3,
    batch_size: int = 128,
    seed: int = 0,
    time_budget: float | None = None,
    num_classes: int | None = None,
    width: int = 32,
    lr: float = 3e-3,
) -> tuple[DomainClassifier, float]:
    """Train a :class:`DomainClassifier`; returns it (in eval mode) and its test accuracy in [0, 1].

    AdamW with a one-cycle schedule (5 % warm-up, cosine to zero). Under ``time_budget`` (seconds)
    training stops when the clock runs out, and the schedule follows the clock as well as the step
    count so a cut-short run still anneals. Deterministic for a seed; the global RNG is untouched.
    ``num_classes`` defaults to the largest label + 1. Accuracy is NaN when there are no test images.
    """
    _check_images(train_images, "train_images")
    train_labels = _check_labels(train_labels, len(train_images), "train_labels")
    has_test = test_images is not None and len(test_images) > 0
    if has_test:
        _check_images(test_images, "test_images")
        test_labels = _check_labels(test_labels, len(test_images), "test_labels")
    if len(train_images) < 2:
        raise InvalidInput(f"train_images holds {len(train_images)} image(s): a classifier needs at least 2")
    if epochs < 1 or batch_size < 1:
        raise InvalidInput(f"epochs and batch_size must be >= 1, got {epochs} and {batch_size}")
    if time_budget is not None and not time_budget > 0:
        raise InvalidInput(f"time_budget must be > 0 seconds (or None for no limit), got {time_budget!r}")
    top = int(train_labels.max()) + 1
    if has_test:
        top = max(top, int(test_labels.max()) + 1)
    num_classes = max(2, top) if num_classes is None else num_classes
    if top > num_classes:
        raise InvalidInput(
            f"labels go up to {top - 1} but num_classes is {num_classes}: pass num_classes >= {top}"
        )

    _, c, h, w = train_images.shape
    if h != w:
        raise InvalidInput(
            f"the classifier needs square images, got {h}x{w}: ingest the dataset with --image-size"
        )
    with torch.random.fork_rng(devices=[]):  # weight init from `seed`, global RNG left as it was
        torch.manual_seed(seed)
        model = DomainClassifier(c, h, num_classes, width)
    gen = torch.Generator().manual_seed(seed)
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=1e-4)
    n = len(train_images)
    steps_per_epoch = max(1, n // batch_size)  # drop the ragged last batch: BN dislikes batches of 1
    total = epochs * steps_per_epoch
    warmup = max(1, total // 20)
    start = time.perf_counter()
    model.train()
    for step in range(total):
        elapsed = time.perf_counter() - start
        if time_budget is not None and elapsed >= time_budget:
            break
        b = step % steps_per_epoch
        if b == 0:
            order = torch.randperm(n, generator=gen)  # a fresh shuffle each epoch
        progress = step / total if time_budget is None else max(step / total, elapsed / time_budget)
        scale = min(1.0, (step + 1) / warmup) * 0.5 * (1.0 + math.cos(math.pi * min(progress, 1.0)))
        for group in opt.param_groups:
            group["lr"] = lr * scale
        idx = order[b * batch_size : (b + 1) * batch_size]
        loss = F.cross_entropy(model(train_images[idx]), train_labels[idx])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    model.eval()
    accuracy = float("nan")
    if has_test:
        accuracy = (predict(model, test_images) == test_labels).double().mean().item()
    return model, accuracy


def load_or_train_classifier(
    cache_dir: Path,
    dataset_key: str,
    train_images: Tensor,
    train_labels: Tensor,
    test_images: Tensor | None = None,
    test_labels: Tensor | None = None,
    *,
    num_classes: int | None = None,
    epochs: int = 3,
    batch_size: int = 128,
    seed: int = 0,
    time_budget: float | None = None,
    width: int = 32,
    retrain: bool = False,
    extra: Callable[[], tuple[Tensor, Tensor]] | None = None,
    extra_recipe: str | None = None,
) -> tuple[DomainClassifier, dict[str, Any]]:
    """The dataset's classifier from ``cache_dir/<dataset_key>/``, trained and stored on first use.

    Stored: ``classifier.safetensors`` (weights) and ``classifier.json`` (config, test accuracy,
    training settings, a fingerprint of the training images and labels, seconds), both written to
    a temporary name and renamed, the JSON last, so a reader sees either nothing or a complete
    pair. A cached classifier is reused only when it was trained on these very images and labels
    (same fingerprint) with the config they ask for (channels, image size, classes, width): a
    dataset replaced under the same name and shape (``ingest --replace``) trains a new one.
    Otherwise, or with ``retrain=True``, it is trained again and replaced. The returned info adds
    ``"trained"`` (True when this call trained it) and ``"path"``. Pass ``num_classes`` (the
    dataset's class count) when a class may be missing from the labels given.

    ``extra``: more training pairs made from the train images (an augmentation), called only when
    a classifier is trained, as making them may be slow; ``extra_recipe`` names how they are made
    and joins the fingerprint, since the pairs themselves are not computed on a cache hit.
    """
    if not isinstance(dataset_key, str) or not _KEY.match(dataset_key) or dataset_key in (".", ".."):
        raise InvalidInput(
            f"invalid dataset_key {dataset_key!r}: use letters, digits, '.', '_' or '-' (a folder name), "
            "e.g. the dataset's name"
        )
    _check_images(train_images, "train_images")
    folder = Path(cache_dir) / dataset_key
    weights, info_path = folder / CLASSIFIER_WEIGHTS, folder / CLASSIFIER_INFO
    labels = _check_labels(train_labels, len(train_images), "train_labels")
    top = int(labels.max()) + 1 if len(labels) else 2
    if test_labels is not None and len(test_labels):
        top = max(top, int(torch.as_tensor(test_labels).max()) + 1)
    want = ClassifierConfig(
        channels=train_images.shape[1], image_size=train_images.shape[2],
        num_classes=max(2, top) if num_classes is None else num_classes, width=width,
    )
    if (extra is None) != (extra_recipe is None):
        raise ValueError("extra and extra_recipe go together")
    fingerprint = data_fingerprint(train_images, labels)
    if extra_recipe is not None:
        fingerprint = hashlib.sha256(f"{fingerprint};{extra_recipe}".encode()).hexdigest()

    if not retrain and weights.is_file() and info_path.is_file():
        try:
            info = json.loads(info_path.read_text(encoding="utf-8"))
            cached = ClassifierConfig(**info["config"])
        except (OSError, ValueError, KeyError, TypeError):
            cached = None  # damaged: train again below
        # A classifier from before fingerprints has none: it is trained again, as its data is unknown.
        if cached == want and info.get("fingerprint") == fingerprint:
            model = DomainClassifier(**asdict(cached))
            load_weights(model, weights)
            model.eval()
            return model, {**info, "trained": False, "path": str(folder)}

    start = time.perf_counter()
    n_extra = 0
    if extra is not None:
        more_images, more_labels = extra()
        _check_images(more_images, "extra images")
        n_extra = len(more_images)
        train_images = torch.cat([train_images, more_images])
        labels = torch.cat([labels, _check_labels(more_labels, n_extra, "extra labels")])
    model, accuracy = train_classifier(
        train_images, labels, test_images, test_labels, epochs=epochs, batch_size=batch_size, seed=seed,
        time_budget=time_budget, num_classes=want.num_classes, width=width,
    )
    info = {
        "dataset_key": dataset_key,
        "config": model.config_dict(),
        "accuracy": None if math.isnan(accuracy) else accuracy,  # test accuracy; None without test images
        "n_train": len(train_images),
        "n_extra": n_extra,
        "extra_recipe": extra_recipe,
        "n_test": 0 if test_images is None else len(test_images),
        "fingerprint": fingerprint,
        "train": dict(epochs=epochs, batch_size=batch_size, seed=seed, time_budget=time_budget),
        "seconds": round(time.perf_counter() - start, 2),
    }
    folder.mkdir(parents=True, exist_ok=True)
    save_weights(model, weights)
    write_json_atomic(info_path, info)  # last: a reader sees no info until the weights are whole
    return model, {**info, "trained": True, "path": str(folder)}


def data_fingerprint(images: Tensor, labels: Tensor) -> str:
    """SHA-256 of the images' and labels' shapes, dtypes and bytes: equal only for the same data."""
    digest = hashlib.sha256()
    for t in (images, labels):
        t = t.detach().cpu().contiguous()
        digest.update(f"{t.dtype}{tuple(t.shape)};".encode())
        digest.update(t.numpy())  # the buffer itself: no copy of a 60,000-image set
    return digest.hexdigest()


# -- distribution metrics on features --------------------------------------------------------------


def rotations(images: Tensor) -> tuple[Tensor, Tensor]:
    """Each image (N, C, S, S) at 0, 90, 180 and 270 degrees, labelled 0..3: the pretext task of
    Gidaris et al. 2018. A classifier of it learns shapes and textures without any class labels,
    so its features serve FID, KID and precision/recall for image sets that have no classes."""
    _check_images(images, "images")
    if images.shape[2] != images.shape[3]:
        raise InvalidInput(f"rotations need square images, got {images.shape[2]}x{images.shape[3]}")
    x = torch.cat([torch.rot90(images, k, dims=(2, 3)) for k in range(4)])
    return x, torch.arange(4).repeat_interleave(len(images))


def fid(real_feats: Tensor, fake_feats: Tensor) -> float:
    """Fréchet distance between Gaussians fitted to two feature sets (Heusel et al. 2017).

    ``|mu_r - mu_f|^2 + tr(S_r) + tr(S_f) - 2 tr((S_r S_f)^(1/2))`` in float64, covariances with
    the unbiased (N - 1) normaliser as in the reference implementation. The trace term is the sum of
    the singular values of ``S_f^(1/2) S_r^(1/2)``: their squares are the eigenvalues of
    ``S_r^(1/2) S_f S_r^(1/2)``, which has the spectrum of ``S_r S_f``. Taking singular values of
    the product of roots, rather than square roots of eigenvalues, keeps the many near-zero
    directions of post-ReLU features from turning rounding noise (1e-17) into 1e-9-sized terms, so a
    set scored against itself gives 0 to about 1e-12 of the covariance trace (tiny negative
    rounding is clipped to 0).
    """
    real, fake = _check_feature_pair(real_feats, fake_feats, "fid", at_least=2)
    mu_r, mu_f = real.mean(0), fake.mean(0)
    d = real.shape[1]
    cov_r, cov_f = torch.cov(real.T).reshape(d, d), torch.cov(fake.T).reshape(d, d)  # (F, F)
    trace_root = torch.linalg.svdvals(_psd_sqrt(cov_f) @ _psd_sqrt(cov_r)).sum()
    value = (mu_r - mu_f).pow(2).sum() + cov_r.trace() + cov_f.trace() - 2 * trace_root
    return max(0.0, value.item())


def _psd_sqrt(m: Tensor) -> Tensor:
    """The symmetric square root of a positive semi-definite matrix (negative rounding clipped)."""
    vals, vecs = torch.linalg.eigh(m)
    return (vecs * vals.clamp(min=0).sqrt()) @ vecs.T


def kid(
    real_feats: Tensor, fake_feats: Tensor, subsets: int = 10, subset_size: int = 100, seed: int = 0
) -> tuple[float, float]:
    """Kernel Inception Distance (Bińkowski et al. 2018): mean and std of the unbiased MMD^2.

    Polynomial kernel ``k(x, y) = (x.y / d + 1)^3``; ``subsets`` times, ``subset_size`` rows are
    drawn without replacement from each set (a seeded generator) and the unbiased MMD^2 estimate is
    taken; the std is over subsets (population std, as torchmetrics). ``subset_size`` is capped at
    the smaller set. Unbiased means the estimate can be slightly negative when the sets match; a
    set against itself gives about ``-2 / (m - 1) * (mean k(x, x) - mean k(x, y))``, an O(1/m)
    fraction of the kernel's scale, because identical samples are not independent draws.
    """
    real, fake = _check_feature_pair(real_feats, fake_feats, "kid", at_least=2)
    if subsets < 1 or subset_size < 2:
        raise InvalidInput(f"kid needs subsets >= 1 and subset_size >= 2, got {subsets} and {subset_size}")
    m = min(subset_size, len(real), len(fake))
    gen = torch.Generator().manual_seed(seed)
    scores = []
    for _ in range(subsets):
        x = real[torch.randperm(len(real), generator=gen)[:m]]
        y = fake[torch.randperm(len(fake), generator=gen)[:m]]
        scores.append(_mmd2_unbiased(x, y))
    s = torch.stack(scores)
    return s.mean().item(), s.std(unbiased=False).item()


def _mmd2_unbiased(x: Tensor, y: Tensor) -> Tensor:
    """Unbiased MMD^2 between two equal-size samples (m, d) under the cubic polynomial kernel."""
    m, d = x.shape
    k_xx = (x @ x.T / d + 1) ** 3
    k_yy = (y @ y.T / d + 1) ** 3
    k_xy = (x @ y.T / d + 1) ** 3
    within = (k_xx.sum() - k_xx.diagonal().sum() + k_yy.sum() - k_yy.diagonal().sum()) / (m * (m - 1))
    return within - 2 * k_xy.mean()


def precision_recall(real_feats: Tensor, fake_feats: Tensor, k: int = 3) -> tuple[float, float]:
    """Improved precision and recall (Kynkäänniemi et al. 2019) with k-NN manifolds.

    Each sample of a set gets a ball reaching its k-th nearest neighbour in that set (itself not
    counted). Precision: the share of fake samples inside some real ball (fidelity). Recall: the
    share of real samples inside some fake ball (coverage). Euclidean distances in float64,
    computed in row blocks so 10,000 x 10,000 samples fit in memory.
    """
    real, fake = _check_feature_pair(real_feats, fake_feats, "precision_recall", at_least=k + 1)
    if k < 1:
        raise InvalidInput(f"precision_recall needs k >= 1, got {k}")
    r_real, r_fake = _knn_radii(real, k), _knn_radii(fake, k)
    precision = _inside_share(fake, real, r_real)
    recall = _inside_share(real, fake, r_fake)
    return precision, recall


def _row_blocks(n_rows: int, n_cols: int) -> int:
    return max(1, (1 << 22) // max(n_cols, 1))  # about 32 MB of float64 distances per block


def _knn_radii(x: Tensor, k: int) -> Tensor:
    """(N,) distance from each row to its k-th nearest other row."""
    step = _row_blocks(len(x), len(x))
    out = []
    for i in range(0, len(x), step):
        d = torch.cdist(x[i : i + step], x)  # (B, N), includes the 0 to itself
        out.append(d.topk(k + 1, dim=1, largest=False).values[:, k])
    return torch.cat(out)


def _inside_share(points: Tensor, centres: Tensor, radii: Tensor) -> float:
    """Share of ``points`` within ``radii[j]`` of at least one ``centres[j]``."""
    step = _row_blocks(len(points), len(centres))
    inside = 0
    for i in range(0, len(points), step):
        d = torch.cdist(points[i : i + step], centres)  # (B, M)
        inside += int((d <= radii[None, :]).any(dim=1).sum())
    return inside / len(points)


def _check_feature_pair(real: Tensor, fake: Tensor, what: str, at_least: int) -> tuple[Tensor, Tensor]:
    for name, t in (("real_feats", real), ("fake_feats", fake)):
        if not isinstance(t, Tensor) or t.dim() != 2:
            shown = tuple(t.shape) if isinstance(t, Tensor) else type(t).__name__
            raise InvalidInput(f"{what}: {name} must be a 2-D tensor (N, features), got {shown}")
        if len(t) < at_least:
            raise InvalidInput(f"{what} needs at least {at_least} samples per set, {name} has {len(t)}: "
                               "score more images")
    if real.shape[1] != fake.shape[1]:
        raise InvalidInput(
            f"{what}: real_feats has {real.shape[1]} features but fake_feats has {fake.shape[1]}: "
            "embed both sets with the same classifier"
        )
    real, fake = real.detach().double(), fake.detach().double()
    if not (torch.isfinite(real).all() and torch.isfinite(fake).all()):
        raise InvalidInput(f"{what}: features hold NaN or infinity: check the images and the classifier")
    return real, fake


# -- per-sample metrics ----------------------------------------------------------------------------


def conditional_accuracy(classifier: DomainClassifier, images: Tensor, asked_labels: Tensor) -> float:
    """The share of samples asked for class c that the classifier calls c."""
    labels = _check_labels(asked_labels, len(images), "asked_labels")
    if len(images) == 0:
        raise InvalidInput("conditional_accuracy needs at least one image")
    return (predict(classifier, images) == labels).double().mean().item()


def psnr(a: Tensor, b: Tensor) -> float:
    """Peak signal-to-noise ratio in dB over the whole batch, images in [0, 1]; inf when identical."""
    from torchmetrics.functional.image import peak_signal_noise_ratio

    _check_image_pair(a, b, "psnr")
    return peak_signal_noise_ratio(b.double(), a.double(), data_range=1.0).item()


def ssim(a: Tensor, b: Tensor) -> float:
    """Mean structural similarity (Gaussian window 11, sigma 1.5), images in [0, 1]; 1 when identical.

    The window shrinks to the image for images smaller than 11 px (torchmetrics needs it to fit).
    """
    from torchmetrics.functional.image import structural_similarity_index_measure

    _check_image_pair(a, b, "ssim")
    side = min(a.shape[-2:])
    kernel = min(11, side if side % 2 else side - 1)  # odd and no larger than the image
    return structural_similarity_index_measure(
        b.double(), a.double(), data_range=1.0, kernel_size=kernel, sigma=1.5 * kernel / 11
    ).item()


def _check_image_pair(a: Tensor, b: Tensor, what: str) -> None:
    _check_images(a, f"{what}: a")
    _check_images(b, f"{what}: b")
    if a.shape != b.shape:
        raise InvalidInput(f"{what} compares images of one shape, got {tuple(a.shape)} and {tuple(b.shape)}: "
                           "pass each image with its reconstruction")


# -- the report ------------------------------------------------------------------------------------


def image_report(
    classifier: DomainClassifier,
    real_images: Tensor,
    fake_images: Tensor,
    fake_labels: Tensor | None = None,
    real_labels: Tensor | None = None,
    *,
    seed: int = 0,
    k: int = 3,
) -> dict[str, Any]:
    """Everything that judges generated images against real ones, in one dict.

    ``fid``, ``kid_mean``, ``kid_std`` (subsets of up to 100 per set, ``kid_subset_size``),
    ``precision``, ``recall`` (k-NN, ``k``), ``n_real``, ``n_fake``; with ``fake_labels`` (the
    classes asked for) ``conditional_accuracy``; with ``real_labels`` ``real_accuracy``, the
    classifier's accuracy on the real images: the ceiling conditional accuracy can reach.
    """
    real = embed(classifier, real_images)
    fake = embed(classifier, fake_images)
    kid_mean, kid_std = kid(real, fake, seed=seed)
    precision, recall = precision_recall(real, fake, k=k)
    report: dict[str, Any] = {
        "fid": fid(real, fake),
        "kid_mean": kid_mean,
        "kid_std": kid_std,
        "kid_subset_size": min(100, len(real), len(fake)),
        "precision": precision,
        "recall": recall,
        "k": k,
        "n_real": len(real),
        "n_fake": len(fake),
    }
    if fake_labels is not None:
        report["conditional_accuracy"] = conditional_accuracy(classifier, fake_images, fake_labels)
    if real_labels is not None:
        report["real_accuracy"] = conditional_accuracy(classifier, real_images, real_labels)
    return report


# -- argument checks -------------------------------------------------------------------------------


def _check_images(images: Tensor, name: str) -> None:
    if not isinstance(images, Tensor) or images.dim() != 4 or not images.is_floating_point():
        is_tensor = isinstance(images, Tensor)
        shown = f"{images.dtype} {tuple(images.shape)}" if is_tensor else type(images).__name__
        raise InvalidInput(f"{name} must be float images (N, C, H, W) in [0, 1], got {shown}: "
                           "convert uint8 arrays with aigc.data.images.to_tensor")
    if images.numel() and (images.min() < 0 or images.max() > 1):
        raise InvalidInput(f"{name} must be in [0, 1], got values from {images.min().item():.3g} to "
                           f"{images.max().item():.3g}: clamp or rescale them")


def _check_labels(labels: Tensor | None, n: int, name: str) -> Tensor:
    if labels is None:
        raise InvalidInput(f"{name} is missing: pass one class id per image")
    labels = torch.as_tensor(labels)
    if labels.is_floating_point() or labels.dim() != 1:
        raise InvalidInput(
            f"{name} must be a 1-D tensor of class ids, got {labels.dtype} {tuple(labels.shape)}"
        )
    labels = labels.long()
    if len(labels) != n:
        raise InvalidInput(f"{name} has {len(labels)} labels for {n} images: pass one class id per image")
    if len(labels) and labels.min() < 0:
        raise InvalidInput(f"{name} holds a negative class id ({labels.min().item()}): class ids start at 0")
    return labels
