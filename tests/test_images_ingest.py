"""Image ingestion: folders, IDX, NPZ and CSV sources, pixel conversion, drops, splits, cards, CLI.

Every test draws its own tiny images in ``tmp_path``; only the last one reads ../shared (beside the repo) and it
skips when that folder is absent.
"""

from __future__ import annotations

import gzip
import json
import struct
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

import aigc
from aigc.cli.main import app
from aigc.data.images import ImageSplit, ingest_images, read_image_split, to_tensor
from aigc.errors import AlreadyExists, InvalidInput, NotFound
from aigc.workspace import Workspace

SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
ALL_TRAIN = (1.0, 0.0, 0.0)


@pytest.fixture
def ws(tmp_path: Path) -> Workspace:
    return Workspace(tmp_path / "ws")


def save(path: Path, a: np.ndarray | Image.Image, **kw) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    (a if isinstance(a, Image.Image) else Image.fromarray(a)).save(path, **kw)
    return path


def solid(rgb: tuple[int, int, int], size: tuple[int, int] = (8, 8), mark: int = 0) -> np.ndarray:
    """(H, W, 3) of one colour; ``mark`` changes one corner pixel so images are not duplicates."""
    a = np.empty((*size, 3), np.uint8)
    a[:] = rgb
    a[0, 0] = (mark * 37 % 256, mark * 91 % 256, mark * 53 % 256)
    return a


def read_all(ws: Workspace, name: str) -> dict[str, ImageSplit]:
    return {s: read_image_split(ws.dataset_path(name), s) for s in ("train", "val", "test")}


def write_idx(path: Path, magic: int, arr: np.ndarray, gz: bool = False) -> Path:
    data = struct.pack(">I", magic) + struct.pack(f">{arr.ndim}I", *arr.shape) + arr.astype(np.uint8).tobytes()
    path.write_bytes(gzip.compress(data) if gz else data)
    return path


def tmp_is_empty(ws: Workspace) -> bool:
    return not any((ws.root / "tmp").iterdir())


# -- folders --------------------------------------------------------------------------------


def test_class_folders_in_every_format(ws: Workspace, tmp_path: Path) -> None:
    root = tmp_path / "pics"
    for i in range(3):
        save(root / "red" / f"r{i}.png", solid((250, 0, 0), mark=i))
        save(root / "blue" / f"b{i}.bmp", solid((0, 0, 250), mark=i))
    save(root / "red" / "r.jpg", solid((250, 0, 0), mark=3), quality=95)
    save(root / "blue" / "b.webp", solid((0, 0, 250), mark=3), lossless=True)
    (root / "notes.txt").write_text("not an image")

    card = ingest_images(ws, root, "pics", split=ALL_TRAIN)
    assert card["format"] == "folder" and card["modality"] == "image"
    assert card["classes"] == ["blue", "red"] and card["label_source"] == "first-level subfolder"
    assert card["counts"] == {"read": 8, "kept": 8, "dropped": 0, "train": 8, "val": 0, "test": 0}
    assert card["image_size"] == [8, 8] and card["channels"] == 3 and card["ignored_files"] == 1
    assert card["class_counts"]["train"] == {"blue": 4, "red": 4}

    train = read_all(ws, "pics")["train"]
    assert train.images.dtype == np.uint8 and train.images.shape == (8, 8, 8, 3)
    assert train.labels.dtype == np.int64 and train.classes == ["blue", "red"]
    centre = train.images[:, 4, 4].astype(int)  # (N, 3), away from the marked corner
    for label, px in zip(train.labels, centre):
        want = (0, 0, 250) if train.classes[label] == "blue" else (250, 0, 0)
        assert np.abs(px - want).max() <= 3  # JPEG is lossy, the rest exact


def test_nested_folders_take_the_first_level_as_class(ws: Workspace, tmp_path: Path) -> None:
    root = tmp_path / "nest"
    save(root / "cat" / "indoor" / "deep" / "a.png", solid((10, 10, 10), mark=1))
    save(root / "cat" / "b.png", solid((10, 10, 10), mark=2))
    save(root / "dog" / "x" / "c.png", solid((90, 90, 90), mark=3))
    save(root / "stray.png", solid((5, 5, 5)))  # beside the class folders: no class
    card = ingest_images(ws, root, "nest", split=ALL_TRAIN)
    assert card["classes"] == ["cat", "dog"] and card["class_counts"]["train"] == {"cat": 2, "dog": 1}
    assert card["dropped"] == [{"file": "stray.png", "kind": "no_class",
                                "reason": "directly in the root folder, not in a class subfolder"}]


def test_root_only_folder_is_unlabelled_and_grey_gives_one_channel(ws: Workspace, tmp_path: Path) -> None:
    root = tmp_path / "flat"
    for i in range(4):
        save(root / f"{i}.png", np.full((6, 5), 40 * i, np.uint8))
    card = ingest_images(ws, root, "flat", split=ALL_TRAIN)
    assert card["classes"] == [] and card["class_counts"] == {} and card["label_source"] is None
    assert card["channels"] == 1 and card["image_size"] == [6, 5]
    train = read_all(ws, "flat")["train"]
    assert train.labels is None and train.classes == [] and train.images.shape == (4, 6, 5, 1)
    assert sorted(train.images[:, 0, 0, 0].tolist()) == [0, 40, 80, 120]


def test_channels_option_converts_both_ways(ws: Workspace, tmp_path: Path) -> None:
    root = tmp_path / "mix"
    save(root / "c.png", solid((200, 100, 50)))
    save(root / "g.png", np.full((8, 8), 77, np.uint8))
    assert ingest_images(ws, root, "default", split=ALL_TRAIN)["channels"] == 3  # one colour image
    ingest_images(ws, root, "grey", channels=1, split=ALL_TRAIN)
    values = sorted(read_all(ws, "grey")["train"].images[:, 4, 4, 0].tolist())
    assert values == sorted([77, round(0.299 * 200 + 0.587 * 100 + 0.114 * 50)])
    ingest_images(ws, root, "rgb", channels=3, split=ALL_TRAIN)
    px = {tuple(p) for p in read_all(ws, "rgb")["train"].images[:, 4, 4].tolist()}
    assert px == {(200, 100, 50), (77, 77, 77)}


def test_mixed_sizes_need_image_size(ws: Workspace, tmp_path: Path) -> None:
    root = tmp_path / "sizes"
    save(root / "a.png", solid((1, 2, 3), size=(32, 32)))
    save(root / "b.png", solid((1, 2, 3), size=(30, 28)))
    with pytest.raises(InvalidInput) as e:
        ingest_images(ws, root, "sizes")
    assert str(e.value) == "images have different sizes (e.g. a.png 32x32, b.png 28x30): pass --image-size"
    assert tmp_is_empty(ws) and not ws.dataset_path("sizes").exists() and not ws.has_dataset("sizes")


def test_image_size_crop_and_pad(ws: Workspace, tmp_path: Path) -> None:
    root = tmp_path / "wide"
    wide = np.zeros((8, 24, 3), np.uint8)  # three 8x8 thirds: red | green | blue
    wide[:, :8] = (255, 0, 0)
    wide[:, 8:16] = (0, 255, 0)
    wide[:, 16:] = (0, 0, 255)
    save(root / "wide.png", wide)
    save(root / "square.png", solid((255, 255, 255), size=(12, 12)))

    card = ingest_images(ws, root, "crop", image_size=4, split=ALL_TRAIN)
    assert card["resize"] == "crop" and card["image_size"] == [4, 4]
    crop = read_all(ws, "crop")["train"].images
    assert crop.shape == (2, 4, 4, 3)
    greens = [a for a in crop if a[2, 2, 1] > 200 and a[2, 2, 0] < 60]
    assert len(greens) == 1  # the centre third of the wide image survives the crop

    card = ingest_images(ws, root, "pad", image_size=6, resize="pad", split=ALL_TRAIN)
    assert card["resize"] == "pad"
    padded = read_all(ws, "pad")["train"].images
    assert padded.shape == (2, 6, 6, 3)
    boxed = next(a for a in padded if a[0].max() == 0)  # letterboxed: black bars top and bottom
    assert boxed[0].max() == 0 and boxed[-1].max() == 0 and boxed[3, 0, 0] > 200  # red on the left
    with pytest.raises(InvalidInput, match="--resize 'stretch'"):
        ingest_images(ws, root, "bad", image_size=6, resize="stretch")
    with pytest.raises(InvalidInput, match="--image-size 0"):
        ingest_images(ws, root, "bad", image_size=0)


def test_alpha_goes_on_white_and_16_bit_scales_down(ws: Workspace, tmp_path: Path) -> None:
    root = tmp_path / "modes"
    rgba = np.zeros((4, 4, 4), np.uint8)
    rgba[..., :3] = (0, 0, 0)
    rgba[0, :, 3] = 0  # transparent black -> white
    rgba[1, :, 3] = 128  # half-transparent black -> mid grey
    rgba[2:, :, 3] = 255  # opaque black stays black
    save(root / "alpha" / "rgba.png", rgba)  # (H, W, 4) -> mode RGBA
    deep = np.array([[0, 257, 32768, 65535]] * 4, np.uint16)
    im16 = Image.fromarray(deep)
    assert im16.mode == "I;16"
    save(root / "deep" / "g16.png", im16)

    card = ingest_images(ws, root, "modes", channels=1, split=ALL_TRAIN)
    assert card["pixels"]["alpha"] == "composited on white"
    assert card["pixels"]["sixteen_bit"].startswith("scaled to 8 bits")
    train = read_all(ws, "modes")["train"]
    by_class = {train.classes[c]: img[..., 0] for c, img in zip(train.labels, train.images)}
    assert by_class["alpha"][:, 0].tolist() == [255, 127, 0, 0]
    assert by_class["deep"][0].tolist() == [0, 1, 128, 255]  # round(v * 255 / 65535), not clipped

    # A 16-bit grey image alone is greyscale: one channel by default.
    assert ingest_images(ws, root / "deep", "deep-only", split=ALL_TRAIN)["channels"] == 1


def test_truncated_file_is_dropped_or_fatal_when_strict(ws: Workspace, tmp_path: Path) -> None:
    root = tmp_path / "broken"
    for i in range(3):
        save(root / "ok" / f"{i}.png", solid((9, 9, 9), mark=i))
    good = save(tmp_path / "full.jpg", np.random.default_rng(0).integers(0, 255, (16, 16, 3), dtype=np.uint8))
    data = good.read_bytes()
    (root / "ok" / "cut.jpg").write_bytes(data[: len(data) // 2])
    (root / "ok" / "junk.png").write_bytes(b"not a png at all")

    card = ingest_images(ws, root, "broken", split=ALL_TRAIN)
    assert card["counts"]["read"] == 5 and card["counts"]["kept"] == 3 and card["counts"]["dropped"] == 2
    dropped = {d["file"]: d for d in card["dropped"]}
    assert set(dropped) == {"ok/cut.jpg", "ok/junk.png"}
    assert all(d["kind"] == "unreadable" and d["reason"].startswith("unreadable (") for d in dropped.values())
    assert card["dropped_by_reason"] == {"unreadable": 2}

    with pytest.raises(InvalidInput, match=r"cut\.jpg: unreadable .*--strict"):
        ingest_images(ws, root, "strict", strict=True)
    assert tmp_is_empty(ws) and not ws.has_dataset("strict")


def test_empty_folder_and_folder_without_images(ws: Workspace, tmp_path: Path) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(InvalidInput, match="is empty"):
        ingest_images(ws, empty, "e")
    docs = tmp_path / "docs"
    (docs / "sub").mkdir(parents=True)
    (docs / "sub" / "readme.md").write_text("hi")
    with pytest.raises(InvalidInput, match=r"no image files .* found 1 other file\(s\), e.g. sub/readme.md"):
        ingest_images(ws, docs, "d")
    only_bad = tmp_path / "bad"
    only_bad.mkdir()
    (only_bad / "x.png").write_bytes(b"garbage")
    with pytest.raises(InvalidInput, match=r"no images left: read 1, dropped 1 \(unreadable: 1\)"):
        ingest_images(ws, only_bad, "b")
    assert tmp_is_empty(ws)


def test_duplicates_are_dropped_with_reason(ws: Workspace, tmp_path: Path) -> None:
    root = tmp_path / "dups"
    save(root / "a" / "1.png", solid((1, 2, 3)))
    save(root / "a" / "2.bmp", solid((1, 2, 3)))  # other file format, same pixels
    save(root / "a" / "3.png", solid((1, 2, 3), mark=5))
    card = ingest_images(ws, root, "dups", split=ALL_TRAIN)
    assert card["counts"]["kept"] == 2 and card["dropped_by_reason"] == {"duplicate": 1}
    assert card["dropped"] == [{"file": "a/2.bmp", "kind": "duplicate", "reason": "same pixels as a/1.png"}]


# -- IDX, NPZ, CSV --------------------------------------------------------------------------


@pytest.mark.parametrize("gz", [False, True])
def test_idx_images_with_labels(ws: Workspace, tmp_path: Path, gz: bool) -> None:
    rng = np.random.default_rng(1)
    images = rng.integers(0, 256, (40, 5, 4), dtype=np.uint8)
    labels = np.arange(40) % 3
    suffix = ".gz" if gz else ""
    ip = write_idx(tmp_path / f"train-images-idx3-ubyte{suffix}", 0x803, images, gz)
    lp = write_idx(tmp_path / f"train-labels-idx1-ubyte{suffix}", 0x801, labels, gz)

    card = aigc.ingest(ip, "idx", workspace=ws, labels=lp, split=(0.6, 0.2, 0.2))
    assert card["format"] == "idx" and card["classes"] == ["0", "1", "2"] and card["channels"] == 1
    assert card["image_size"] == [5, 4] and card["counts"]["kept"] == 40
    splits = read_all(ws, "idx")
    assert sum(len(s.images) for s in splits.values()) == 40
    for s in splits.values():  # every image keeps its own label
        for img, lab in zip(s.images, s.labels):
            i = next(k for k in range(40) if np.array_equal(images[k], img[..., 0]))
            assert lab == labels[i]

    # Unlabelled, and recognised as IDX by aigc.ingest from the name alone.
    card = aigc.ingest(ip, "idx-plain", workspace=ws, split=ALL_TRAIN)
    assert card["classes"] == [] and read_all(ws, "idx-plain")["train"].labels is None


def test_idx_errors_name_the_magic_and_the_counts(ws: Workspace, tmp_path: Path) -> None:
    images = np.zeros((3, 2, 2), np.uint8)
    ip = write_idx(tmp_path / "imgs.idx", 0x803, images)
    lp = write_idx(tmp_path / "labs.idx", 0x801, np.zeros(4, np.uint8))
    with pytest.raises(InvalidInput) as e:
        ingest_images(ws, lp, "x")
    msg = str(e.value)
    assert "labs.idx" in msg and "0x00000801" in msg and "expected 0x00000803" in msg and "--labels" in msg
    with pytest.raises(InvalidInput) as e:
        ingest_images(ws, ip, "x", labels=ip)
    assert "0x00000803" in str(e.value) and "expected 0x00000801" in str(e.value)
    with pytest.raises(InvalidInput, match="holds 3 images but .*labs.idx holds 4 labels"):
        ingest_images(ws, ip, "x", labels=lp)
    cut = tmp_path / "cut.idx"
    cut.write_bytes(ip.read_bytes()[:-1])
    with pytest.raises(InvalidInput, match="truncated"):
        ingest_images(ws, cut, "x")
    assert tmp_is_empty(ws)


def test_npz_with_and_without_labels(ws: Workspace, tmp_path: Path) -> None:
    rng = np.random.default_rng(2)
    x = rng.random((12, 3, 3, 3)).astype(np.float32)  # floats in [0, 1], RGB
    y = np.array(["shoe", "bag", "hat"] * 4)
    np.savez(tmp_path / "xy.npz", x=x, y=y)
    card = aigc.ingest(tmp_path / "xy.npz", "xy", workspace=ws, split=ALL_TRAIN)
    assert card["format"] == "npz" and card["classes"] == ["bag", "hat", "shoe"] and card["channels"] == 3
    train = read_all(ws, "xy")["train"]
    assert np.array_equal(train.images, np.rint(x * 255).astype(np.uint8))  # input order kept
    assert [train.classes[i] for i in train.labels] == y.tolist()

    np.savez(tmp_path / "x.npz", x=rng.integers(0, 256, (5, 4, 4), dtype=np.uint8))
    card = ingest_images(ws, tmp_path / "x.npz", "x", split=ALL_TRAIN)
    assert card["classes"] == [] and card["channels"] == 1 and read_all(ws, "x")["train"].labels is None

    np.savez(tmp_path / "bad.npz", x=x * 3)
    with pytest.raises(InvalidInput, match=r"floats from .* to .*: scale them to \[0, 1\]"):
        ingest_images(ws, tmp_path / "bad.npz", "bad")
    np.savez(tmp_path / "nox.npz", z=x)
    with pytest.raises(InvalidInput, match="no array 'x' .*arrays: z"):
        ingest_images(ws, tmp_path / "nox.npz", "bad")


def test_csv_of_image_paths(ws: Workspace, tmp_path: Path) -> None:
    folder = tmp_path / "shop"
    save(folder / "img" / "a.png", solid((200, 0, 0), mark=1))
    save(folder / "img" / "b.png", solid((0, 200, 0), mark=2))
    save(folder / "img" / "c.png", solid((0, 0, 200), mark=3))
    (folder / "list.csv").write_text(
        "file,kind\nimg/a.png,10\nimg/b.png,9\nimg/c.png,10\nimg/missing.png,9\nimg/a.png,\n", encoding="utf-8"
    )
    card = aigc.ingest(folder / "list.csv", "shop", workspace=ws, label_column="kind", split=ALL_TRAIN)
    assert card["format"] == "csv" and card["classes"] == ["9", "10"]  # whole numbers sort numerically
    assert card["label_source"] == "column 'kind'"
    assert card["counts"]["read"] == 5 and card["counts"]["kept"] == 3
    assert {d["kind"] for d in card["dropped"]} == {"missing", "empty_label"}
    train = read_all(ws, "shop")["train"]
    assert [train.classes[i] for i in train.labels] == ["10", "9", "10"]

    with pytest.raises(InvalidInput, match=r"no column 'where' \(available: 'file', 'kind'\)"):
        ingest_images(ws, folder / "list.csv", "x", path_column="where")


# -- splits, card, preview, workspace -------------------------------------------------------


def test_split_is_deterministic_and_depends_only_on_the_image(ws: Workspace, tmp_path: Path) -> None:
    rng = np.random.default_rng(3)
    x = rng.integers(0, 256, (200, 4, 4), dtype=np.uint8)
    np.savez(tmp_path / "all.npz", x=x)
    np.savez(tmp_path / "half.npz", x=x[::2])
    ingest_images(ws, tmp_path / "all.npz", "a1", split=(0.6, 0.2, 0.2))
    ingest_images(ws, tmp_path / "all.npz", "a2", split=(0.6, 0.2, 0.2))
    ingest_images(ws, tmp_path / "half.npz", "h", split=(0.6, 0.2, 0.2))
    a1, a2, h = read_all(ws, "a1"), read_all(ws, "a2"), read_all(ws, "h")
    for s in ("train", "val", "test"):
        assert np.array_equal(a1[s].images, a2[s].images)
        assert 0 < len(a1[s].images) < 200
        # The images of the half dataset sit in the same split as in the full one.
        full = {img.tobytes() for img in a1[s].images}
        assert all(img.tobytes() in full for img in h[s].images)


def test_card_and_preview(ws: Workspace, tmp_path: Path) -> None:
    root = tmp_path / "cp"
    for c, rgb in enumerate([(255, 0, 0), (0, 255, 0), (0, 0, 255)]):
        for i in range(10):
            save(root / f"class{c}" / f"{i}.png", solid(rgb, mark=i))
    card = ingest_images(ws, root, "cp", split=(0.8, 0.1, 0.1))
    on_disk = json.loads((ws.dataset_path("cp") / "card.json").read_text(encoding="utf-8"))
    assert on_disk == card == ws.get_dataset("cp")["card"]
    assert ws.get_dataset("cp")["modality"] == "image"
    c = card["counts"]
    assert c["read"] == 30 and c["kept"] == 30 and c["train"] + c["val"] + c["test"] == 30
    assert card["split"] == {"method": "hash", "fractions": [0.8, 0.1, 0.1]}
    assert {s: sum(v.values()) for s, v in card["class_counts"].items()} == {s: c[s] for s in ("train", "val", "test")}
    assert card["resize"] is None and card["files"]["train"] == "train.npz"
    assert len(card["pixel_mean"]) == 3 and all(0 <= m <= 1 for m in card["pixel_mean"])

    preview = ws.dataset_path("cp") / "preview.png"
    assert preview.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    with Image.open(preview) as im:
        im.verify()
    with Image.open(preview) as im:
        # 3 classes -> up to 2 rows of 8 per class, each class starting a row; 8x8 images shown as
        # 64x64 tiles with 2 px gaps.
        rows = sum(-(-min(n, 16) // 8) for n in card["class_counts"]["train"].values())
        assert im.format == "PNG" and im.size == (8 * 66 + 2, rows * 66 + 2)
        first_row = np.asarray(im.convert("RGB"))[2 + 32, 2 + 32]
        assert tuple(first_row) == (255, 0, 0)  # grouped by class: class0 (red) first


def test_name_taken_and_replace(ws: Workspace, tmp_path: Path) -> None:
    np.savez(tmp_path / "one.npz", x=np.zeros((2, 2, 2), np.uint8) + np.arange(2, dtype=np.uint8)[:, None, None])
    ingest_images(ws, tmp_path / "one.npz", "taken", split=ALL_TRAIN)
    with pytest.raises(AlreadyExists, match="--replace"):
        ingest_images(ws, tmp_path / "missing-file.npz", "taken")  # the name is checked before the path
    card = ingest_images(ws, tmp_path / "one.npz", "taken", channels=3, split=ALL_TRAIN, replace=True)
    assert card["channels"] == 3 and read_all(ws, "taken")["train"].images.shape == (2, 2, 2, 3)


def test_failure_while_writing_leaves_nothing_behind(ws: Workspace, tmp_path: Path, monkeypatch) -> None:
    import aigc.data.images as images

    np.savez(tmp_path / "x.npz", x=np.arange(16, dtype=np.uint8).reshape(4, 2, 2))

    def boom(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(images, "_write_preview", boom)
    with pytest.raises(OSError, match="disk full"):
        ingest_images(ws, tmp_path / "x.npz", "x")
    assert tmp_is_empty(ws) and not ws.dataset_path("x").exists() and not ws.has_dataset("x")


def test_read_back_errors_and_to_tensor(ws: Workspace, tmp_path: Path) -> None:
    np.savez(tmp_path / "x.npz", x=np.array([[[0, 255]], [[51, 102]]], np.uint8)[..., None].repeat(3, -1))
    ingest_images(ws, tmp_path / "x.npz", "t", split=ALL_TRAIN)
    with pytest.raises(InvalidInput, match="unknown split 'dev'"):
        read_image_split(ws.dataset_path("t"), "dev")
    with pytest.raises(NotFound, match="no dataset folder"):
        read_image_split(ws.dataset_path("nope"), "train")

    images = read_all(ws, "t")["train"].images  # (2, 1, 2, 3)
    t = to_tensor(images)
    assert t.shape == (2, 3, 1, 2) and t.dtype.is_floating_point and t.is_contiguous()
    assert t.min().item() == 0.0 and t.max().item() == 1.0
    assert abs(t[1, 0, 0, 0].item() - 0.2) < 1e-6
    with pytest.raises(InvalidInput, match=r"uint8 images of shape \(N, H, W, C\)"):
        to_tensor(images[0])


def test_aigc_ingest_routes_images_and_text(ws: Workspace, tmp_path: Path) -> None:
    root = tmp_path / "r"
    save(root / "a.png", solid((1, 1, 1)))
    save(root / "b.png", solid((2, 2, 2)))
    assert aigc.ingest(root, "img", workspace=ws, split=ALL_TRAIN)["modality"] == "image"
    with pytest.raises(InvalidInput, match="--text-column applies to text files"):
        aigc.ingest(root, "img2", workspace=ws, text_column="text")
    text = tmp_path / "t.csv"
    text.write_text("text,label\nhello there,1\ngood day,0\n", encoding="utf-8")
    assert aigc.ingest(text, "txt", workspace=ws, cond_columns=["label"])["modality"] == "text"


# -- CLI ------------------------------------------------------------------------------------


def test_cli_ingests_a_folder_and_reports_bad_input_in_one_line(tmp_path: Path) -> None:
    runner = CliRunner()
    root = tmp_path / "cli"
    for c in ("a", "b"):
        for i in range(3):
            save(root / c / f"{i}.png", solid((60, 60, 60) if c == "a" else (0, 90, 200), size=(10, 12), mark=i))
    (root / "b" / "bad.jpg").write_bytes(b"\xff\xd8 broken")
    ws = tmp_path / "ws"
    r = runner.invoke(app, ["ingest", str(root), "--name", "x", "-w", str(ws), "--image-size", "8"])
    assert r.exit_code == 0, r.output
    assert "dataset x: 6 images kept of 7 read" in r.stdout
    assert "8x8, 3 channels, 2 classes: a, b" in r.stdout and "dropped 1: unreadable" in r.stdout

    r = runner.invoke(app, ["ingest", str(root), "--name", "y", "-w", str(ws), "--strict", "--channels", "1"])
    assert r.exit_code == 2, r.output
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and "bad.jpg" in lines[0], r.stderr


# -- real data (skipped in a fresh clone) ---------------------------------------------------


@pytest.mark.skipif(not (SHARED_DATA / "fashion-mnist").is_dir(), reason=f"{SHARED_DATA / 'fashion-mnist'} is absent")
def test_fashion_mnist_test_set(ws: Workspace) -> None:
    d = SHARED_DATA / "fashion-mnist"
    card = aigc.ingest(d / "t10k-images-idx3-ubyte.gz", "fm", workspace=ws, labels=d / "t10k-labels-idx1-ubyte.gz")
    assert card["counts"]["read"] == 10_000 and card["image_size"] == [28, 28] and card["channels"] == 1
    assert card["classes"] == [str(i) for i in range(10)]
    assert sum(card["class_counts"]["train"].values()) == card["counts"]["train"] > 8_500
