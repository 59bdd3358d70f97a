"""Synthetic image data sets from an image run, and the report that says how faithful, useful and
private they are.

:func:`synthesize_images` writes labelled PNGs, one subfolder per class (a class-conditional run;
an unconditional run's go in the folder itself) and ``labels.csv`` (``path,label,aigc_label``), all
built in a staging folder beside the target and renamed into place, so the folder is whole or
absent. :func:`image_report` scores such a folder against the run's dataset:

- fidelity: FID, KID, precision / recall and conditional accuracy in the features of the
  dataset's domain classifier (the one ``aigc eval`` trains and caches), with the train-vs-test FID
  of as many real images as the floor;
- utility: classification accuracy score (a small CNN trained on the synthetic images, tested on
  the real test split) beside the same CNN trained on as many real train images;
- privacy: each synthetic image's nearest training image in pixels (RMS distance, 0..1) and in the
  classifier's features; the share of near-duplicates and of samples closer to train than all but
  5 % of real test images are, each next to what the real test images score; and the 8 most
  train-similar samples beside their nearest training images.

Orchestration: knows runs, datasets and the safety policy; no surface imports it back.
"""

from __future__ import annotations

import base64
import csv
import io
import re
import shutil
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from aigc.errors import InvalidInput
from aigc.runs import load, read_spec
from aigc.synthesis.text import fmt, largest_remainder
from aigc.workspace import Workspace

BATCH = 100  # images sampled per call (one seed each)
CSV_NAME = "labels.csv"
FID_IMAGES = 2000  # fidelity compares at most this many synthetic and real images, evenly spaced
PRIVACY_IMAGES = 2000  # nearest-neighbour search for at most this many synthetic and real test images
NEAR_DUPLICATE_RMS = 0.04  # pixel RMS distance (0..1) under which a sample is a near-copy (~10/255 a pixel)
SHOWN_NEIGHBOURS = 8
CAS_EPOCHS = 3


def synthesize_images(ws: Workspace, run: str, n: int, out_dir: Path, *, conditions: dict | None = None,
                      seed: int = 0, progress: Callable[[int, int], None] | None = None,
                      steps: int | None = None, guidance: float | None = None) -> dict[str, Any]:
    """Write ``n`` synthetic images of image run ``run`` into the new folder ``out_dir``; returns a
    summary. Classes follow the train split's shares (largest remainder), or ``conditions``'
    ``{"label": CLASS}`` for all. ``steps`` / ``guidance``: a diffusion run's sampling options."""
    from PIL import Image

    from aigc.image_generation import MARK_MIN_SIDE, ImageGenerator, to_uint8
    from aigc.provenance.labels import new_produce_id, save_image, write_csv
    from aigc.safety.guard import guard_for

    if isinstance(n, bool) or not isinstance(n, int) or not 1 <= n <= 1_000_000:
        raise InvalidInput(f"n must be a whole number of images from 1 to 1,000,000, got {n!r}")
    out_dir = Path(out_dir)
    if out_dir.exists() and (not out_dir.is_dir() or any(out_dir.iterdir())):
        raise InvalidInput(f"{out_dir} already exists and is not an empty folder: remove it or pick a new folder")
    if not out_dir.parent.is_dir():
        raise InvalidInput(f"folder {out_dir.parent} does not exist: create it or write somewhere else")
    gen = load(ws, run, safety=False)
    if not isinstance(gen, ImageGenerator):
        raise InvalidInput(f"run {run!r} is not an image run: synthesize text with synthesize_text, "
                           "tables with aigc.synthesis.synthesize")
    gen.label_ids(1, conditions)  # an unknown condition or class is refused here, naming the known ones
    options = gen.check_options({"steps": steps, "guidance": guidance})
    counts = _class_counts(ws, run, gen.classes, (conditions or {}).get("label"), n)
    folders = folder_names(gen.classes)
    guard = guard_for(ws)
    label = guard.label(new_produce_id())
    mark = bool(guard.policy.labels.get("image_mark"))

    start = time.perf_counter()
    staging = out_dir.parent / f".{out_dir.name}.{uuid.uuid4().hex[:8]}.tmp"
    rows: list[dict[str, str]] = []
    try:
        staging.mkdir()
        batch_no = 0
        for cls, count in counts.items():
            folder = staging / folders[cls] if cls is not None else staging
            folder.mkdir(exist_ok=True)
            for first in range(0, count, BATCH):
                k = min(BATCH, count - first)
                cond = {"label": cls} if cls is not None else None
                images = to_uint8(gen.sample(k, cond=cond, seed=seed + batch_no, **options))  # (k, H, W, C)
                batch_no += 1
                for a in images:
                    i = len(rows)
                    image = Image.fromarray(a[..., 0] if a.shape[-1] == 1 else a)
                    name = f"synthetic-{i:06d}.png"
                    meta = {**label, "ProduceID": f"{label['ProduceID']}-{i:06d}"}
                    save_image(image, folder / name, meta, explicit=mark and min(image.size) >= MARK_MIN_SIDE)
                    rel = (folder / name).relative_to(staging).as_posix()
                    rows.append({"path": rel, **({"label": cls} if cls is not None else {})})
                if progress is not None:
                    progress(len(rows), n)
        write_csv(staging / CSV_NAME, rows, lambda i, _r: {**label, "ProduceID": f"{label['ProduceID']}-{i:06d}"},
                  fieldnames=["path", "label"] if gen.classes else ["path"])
        if out_dir.exists():
            out_dir.rmdir()  # empty (checked above)
        staging.rename(out_dir)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    seconds = time.perf_counter() - start
    return {"run": run, "path": str(out_dir), "csv": str(out_dir / CSV_NAME), "n": n,
            "classes": {str(c): k for c, k in counts.items()} if gen.classes else {},
            "seed": seed, "seconds": round(seconds, 3), "images_per_s": round(n / max(seconds, 1e-9), 2)}


def _class_counts(ws: Workspace, run: str, classes: list[str], asked: str | None, n: int) -> dict:
    """{class: images} in the train split's class shares (largest remainder); {None: n} unconditional."""
    from aigc.data.images import read_image_split

    if not classes:
        return {None: n}
    if asked is not None:
        return {asked: n}
    dataset = read_spec(Path(ws.get_run(run)["path"])).get("dataset")
    labels = None
    if dataset and ws.has_dataset(dataset):
        labels = read_image_split(ws.dataset_path(dataset), "train").labels
    share = np.bincount(labels, minlength=len(classes))[: len(classes)] if labels is not None else None
    share = share if share is not None and share.sum() else np.ones(len(classes))  # no data: balanced
    return {c: k for c, k in zip(classes, largest_remainder(share, n)) if k}


def folder_names(classes: list[str]) -> dict[str, str]:
    """A safe, distinct folder name per class ("T-shirt/top" -> "T-shirt_top"); labels.csv keeps the names."""
    out: dict[str, str] = {}
    used: set[str] = set()
    for c in classes:
        base = re.sub(r"[^\w.-]+", "_", c).strip("._") or "class"
        name, k = base, 2
        while name.lower() in used:
            name, k = f"{base}_{k}", k + 1
        used.add(name.lower())
        out[c] = name
    return out


# -- the report -------------------------------------------------------------------------------------


def image_report(ws: Workspace, run: str, synth_dir: Path, *, seed: int = 0) -> dict[str, Any]:
    """Fidelity, utility and privacy of the synthetic images in ``synth_dir`` (as
    :func:`synthesize_images` wrote it), JSON-able, with ``sections`` for the HTML page."""
    from aigc.data.images import read_image_split, to_tensor
    from aigc.metrics import image as im

    spec = read_spec(Path(ws.get_run(run)["path"]))
    if spec.get("modality") != "image":
        raise InvalidInput(f"run {run!r} is not an image run: report text runs with text_report")
    if not spec.get("dataset") or not ws.has_dataset(spec["dataset"]):
        raise InvalidInput(f"run {run!r} has no dataset in this workspace ({spec.get('dataset')!r}): "
                           "synthetic images cannot be judged against real ones; ingest it again")
    ds_dir = ws.dataset_path(spec["dataset"])
    train = read_image_split(ds_dir, "train")
    split, real = "test", read_image_split(ds_dir, "test")
    if not len(real.images):
        split, real = "val", read_image_split(ds_dir, "val")
    fake_u8, fake_y = read_synthetic(synth_dir, train.images.shape[1], train.images.shape[3], train.classes)
    n = min(len(fake_u8), len(real.images), FID_IMAGES)
    if n < 4:
        raise InvalidInput(f"the report needs at least 4 synthetic and 4 real test images, got {len(fake_u8)} "
                           f"and {len(real.images)}: synthesize more images")
    train_x, real_x, fake_x = to_tensor(train.images), to_tensor(real.images), to_tensor(fake_u8)
    real_y = torch.from_numpy(real.labels).long() if real.labels is not None else None
    classifier, info = _judge(ws, spec["dataset"], train, train_x, real_x, real_y)

    rp, fp = _spaced(len(real_x), n), _spaced(len(fake_x), n)
    labelled = real_y is not None and fake_y is not None
    fidelity = im.image_report(classifier, real_x[rp], fake_x[fp], fake_y[fp] if labelled else None,
                               real_y[rp] if labelled else None, seed=seed)
    fidelity["fid_floor_train_vs_test"] = im.image_report(classifier, real_x[rp],
                                                          train_x[_spaced(len(train_x), n)], seed=seed)["fid"]
    fidelity["classifier"] = {"test_accuracy": info.get("accuracy"), "trained_now": info.get("trained")}
    utility: dict[str, Any] = {"skipped": "the dataset or the synthetic images have no classes"}
    if labelled and len(fake_y.unique()) >= 2:
        pick = _spaced(len(train_x), len(fake_x))
        k = len(train.classes)
        utility = {"cas": _cas(fake_x, fake_y, real_x, real_y, k, seed),
                   "trtr": _cas(train_x[pick], torch.from_numpy(train.labels).long()[pick], real_x, real_y, k, seed),
                   "n_train": len(fake_x), "n_test": len(real_x), "epochs": CAS_EPOCHS}
    privacy, pairs = _privacy(classifier, train_x, real_x, fake_x)
    report = {"run": run, "modality": "image", "split": split, "n_synthetic": len(fake_x), "n_real": len(real_x),
              "fidelity": fidelity, "utility": utility, "privacy": privacy}
    report["sections"] = _sections(report, pairs)
    return report


def read_synthetic(folder: Path, size: int, channels: int, classes: list[str]) -> tuple[np.ndarray, Any]:
    """The images of ``folder/labels.csv`` as uint8 (N, H, W, C) at the dataset's size, and their
    class ids (None when the CSV has no label column or the dataset no classes)."""
    from aigc.data.images import load_image

    path = Path(folder) / CSV_NAME
    if not path.is_file():
        raise InvalidInput(f"no {CSV_NAME} in {folder}: pass the folder that synthesize_images wrote")
    with path.open(encoding="utf-8", newline="") as f:
        rows = list(csv.DictReader(f))
    if not rows or "path" not in rows[0]:
        raise InvalidInput(f"{path} lists no images (it needs a path column): synthesize the folder again")
    has_labels = bool(classes) and "label" in rows[0]
    unknown = sorted({r["label"] for r in rows if has_labels and r["label"] not in classes})
    if unknown:
        raise InvalidInput(f"{path} has labels the run's dataset does not ({', '.join(unknown[:5])}): "
                           f"the classes are {', '.join(classes)}")
    images = np.stack([load_image(Path(folder) / r["path"], size, channels) for r in rows])
    labels = torch.tensor([classes.index(r["label"]) for r in rows]) if has_labels else None
    return images, labels


def _spaced(total: int, k: int) -> torch.Tensor:
    return torch.linspace(0, total - 1, min(k, total)).long()  # evenly spaced, deterministic


def _judge(ws: Workspace, dataset: str, train, train_x, real_x, real_y):
    """The dataset's domain classifier as ``aigc eval`` trains and caches it (the same key, so
    both share it); a rotation classifier for a set without classes."""
    from aigc.evaluation import ROTATION_TRAIN_IMAGES
    from aigc.metrics import image as im

    pick = _spaced(len(real_x), 500)
    if real_y is not None:
        return im.load_or_train_classifier(ws.root / "classifiers", dataset, train_x,
                                           torch.from_numpy(train.labels).long(), real_x[pick], real_y[pick],
                                           num_classes=len(train.classes), seed=0)
    rot_x, rot_y = im.rotations(train_x[_spaced(len(train_x), ROTATION_TRAIN_IMAGES)])
    test_x, test_y = im.rotations(real_x[pick])
    return im.load_or_train_classifier(ws.root / "classifiers", dataset + ".rotation", rot_x, rot_y, test_x,
                                       test_y, num_classes=4, seed=0)


def _cas(x, y, test_x, test_y, num_classes: int, seed: int) -> dict[str, float]:
    """Accuracy and macro-F1 on the real test images of a small CNN trained on (x, y)."""
    from sklearn.metrics import f1_score

    from aigc.metrics import image as im

    model, accuracy = im.train_classifier(x, y, test_x, test_y, epochs=CAS_EPOCHS, seed=seed,
                                          num_classes=num_classes, width=16)
    pred = im.predict(model, test_x).numpy()
    truth = test_y.numpy()
    return {"accuracy": accuracy, "f1_macro": float(f1_score(truth, pred, average="macro",
                                                               labels=np.unique(truth), zero_division=0))}


def _nearest(a: torch.Tensor, b: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Euclidean distance (N,) from each row of ``a`` (N, D) to its nearest row of ``b`` (M, D), and its index.

    The search runs on cdist's matrix-product form (fast, rounding ~1e-3); the distance to the one
    found is then taken exactly, so a copy scores 0."""
    step = max(1, (1 << 24) // max(len(b), 1))  # ~64 MB of float32 distances per block
    idx = torch.cat([torch.cdist(a[i : i + step], b).argmin(dim=1) for i in range(0, len(a), step)])
    return (a - b[idx]).norm(dim=1), idx


def _privacy(classifier, train_x, real_x, fake_x) -> tuple[dict[str, Any], list]:
    from aigc.metrics import image as im

    fake = fake_x[_spaced(len(fake_x), PRIVACY_IMAGES)]
    real = real_x[_spaced(len(real_x), PRIVACY_IMAGES)]
    train_flat = train_x.flatten(1)
    train_feats = im.embed(classifier, train_x)
    scale = train_flat.shape[1] ** 0.5  # Euclidean distance -> per-pixel RMS
    measured = {}
    for name, x in (("synthetic", fake), ("reference", real)):
        pix, pix_nn = _nearest(x.flatten(1), train_flat)
        feat, _ = _nearest(im.embed(classifier, x), train_feats)
        measured[name] = ((pix / scale).clamp(min=0).numpy(), feat.numpy(), pix_nn)
    cut = float(np.percentile(measured["reference"][0], 5))  # 5 % of real test images are this close
    out: dict[str, Any] = {"near_duplicate_rms": NEAR_DUPLICATE_RMS, "closer_than_real_p5_rms": cut}
    for name, (pix, feat, _) in measured.items():
        out[name] = {"pixel_rms": _summary(pix), "feature_distance": _summary(feat),
                     "near_duplicate_share": float((pix <= NEAR_DUPLICATE_RMS).mean()),
                     "closer_than_real_p5": float((pix < cut).mean())}
    hi = float(max(measured["synthetic"][0].max(), measured["reference"][0].max())) or 1.0
    edges = np.linspace(0, hi, 21)
    out["pixel_rms_histogram"] = {"bins": edges.round(4).tolist(),
                                  **{k: np.histogram(v[0], edges)[0].tolist() for k, v in measured.items()}}
    pix, _, nn = measured["synthetic"]
    order = np.argsort(pix, kind="stable")[:SHOWN_NEIGHBOURS]
    pairs = [(fake[i], train_x[nn[i]], float(pix[i]), int(nn[i])) for i in order]
    return out, pairs


def _summary(x: np.ndarray) -> dict[str, float]:
    return {"min": float(x.min()), "p5": float(np.percentile(x, 5)), "median": float(np.median(x)),
            "mean": float(x.mean())}


def _data_uri(left: torch.Tensor, right: torch.Tensor) -> str:
    """A PNG data URI of two (C, H, W) images side by side, enlarged to at least 64 px tall."""
    from PIL import Image

    from aigc.image_generation import to_uint8

    a, b = to_uint8(torch.stack([left, right]))  # (H, W, C) each
    gap = np.full((a.shape[0], max(1, a.shape[1] // 8), a.shape[2]), 255, np.uint8)
    pair = np.concatenate([a, gap, b], axis=1)
    k = max(1, 64 // pair.shape[0])
    pair = pair.repeat(k, axis=0).repeat(k, axis=1)
    buf = io.BytesIO()
    Image.fromarray(pair[..., 0] if pair.shape[-1] == 1 else pair).save(buf, "PNG")
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def _sections(report: dict[str, Any], pairs: list) -> list[dict[str, Any]]:
    f, u, p = report["fidelity"], report["utility"], report["privacy"]
    keys = ("fid", "fid_floor_train_vs_test", "kid_mean", "precision", "recall", "conditional_accuracy",
            "real_accuracy")
    sections = [{"title": "Fidelity (domain classifier features)",
                 "table": [["measure", "value"], *[[k, fmt(f[k])] for k in keys if k in f]]}]
    if "skipped" in u:
        sections.append({"title": "Utility: classification accuracy score", "table": [["note"], [u["skipped"]]]})
    else:
        sections.append({"title": "Utility: classification accuracy score (tested on real test images)",
                         "table": [["trained on", "accuracy", "macro-F1", "images"],
                                   ["synthetic", fmt(u["cas"]["accuracy"]), fmt(u["cas"]["f1_macro"]),
                                    str(u["n_train"])],
                                   ["real train", fmt(u["trtr"]["accuracy"]), fmt(u["trtr"]["f1_macro"]),
                                    str(u["n_train"])]]})
    s, r, h = p["synthetic"], p["reference"], p["pixel_rms_histogram"]
    sections.append({
        "title": "Privacy: nearest training image (reference: the real test split)",
        "table": [["measure", "synthetic", "real test"],
                  ["pixel RMS to nearest train, median", fmt(s["pixel_rms"]["median"]), fmt(r["pixel_rms"]["median"])],
                  ["pixel RMS to nearest train, min", fmt(s["pixel_rms"]["min"]), fmt(r["pixel_rms"]["min"])],
                  ["feature distance to nearest train, median", fmt(s["feature_distance"]["median"]),
                   fmt(r["feature_distance"]["median"])],
                  [f"near-duplicates (RMS <= {NEAR_DUPLICATE_RMS})", fmt(s["near_duplicate_share"]),
                   fmt(r["near_duplicate_share"])],
                  ["closer than 95 % of real test images", fmt(s["closer_than_real_p5"]),
                   fmt(r["closer_than_real_p5"])]],
        "histograms": [{"title": "pixel RMS distance to the nearest training image", "bins": h["bins"],
                        "series": {"synthetic": h["synthetic"], "real test": h["reference"]}}]})
    sections.append({"title": f"The {len(pairs)} most train-similar samples (left) and their nearest training image",
                     "images": [{"src": _data_uri(a, b), "caption": f"RMS {d:.3f}, train image #{j}"}
                                for a, b, d, j in pairs]})
    return sections

