"""Image datasets: ``ingest_images`` turns a folder, IDX, .npz or CSV of paths into uint8 arrays on disk.

Sources (picked by :func:`source_format`):

- **folder**: every ``.png .jpg .jpeg .webp .bmp`` below it, decoded by Pillow. The first-level
  subfolder is the class (``root/cat/a.png``, ``root/cat/indoor/b.png`` are both ``cat``). When
  no subfolder holds images, the images directly in the root form an unlabelled dataset; when
  some do, images directly in the root are dropped (no class). Hidden files and folders
  (``.name``) and files with other suffixes are ignored (their count goes on the card).
- **idx**: MNIST's format, raw or gzipped: magic ``0x00000803`` then big-endian N, rows, cols
  and uint8 pixels; class labels from a second IDX file (``labels=``, magic ``0x00000801``).
- **npz**: array ``x`` (or ``images``), (N, H, W) or (N, H, W, C) with C in 1, 3, 4, holding
  uint8 or floats in [0, 1]; optional ``y`` (or ``labels``) of ints or strings.
- **csv**: a column of image paths (relative to the CSV's folder) and optionally a label column.

Pixel handling, the same for every source, in this order:

1. EXIF orientation is applied (phone photos come out upright).
2. 16-bit greyscale (Pillow modes ``I;16*`` and ``I``) is scaled to 8 bits with rounding,
   ``round(v * 255 / 65535)``, so 65535 -> 255 and 32768 -> 128. (Pillow's own ``convert("L")``
   clips instead, turning most of a 16-bit image white.) 16-bit RGB PNGs are reduced to 8 bits
   by Pillow while decoding.
3. Transparency (an alpha channel, or a palette/greyscale transparency key) is composited on
   white: ``round(c * a / 255 + 255 * (1 - a / 255))``.
4. Channels: ``channels=1`` converts colour to luma (ITU-R 601-2, Pillow's weights), ``3``
   repeats a grey channel. Left out, it is 1 when every image is greyscale, else 3.
5. Resize with ``image_size=S`` to S x S, bicubic: ``crop`` scales the shorter side to S and
   cuts the centre; ``pad`` scales the longer side to S and letterboxes with black (0). Without
   ``image_size`` every image must already share one size.

Then byte-identical duplicates (same pixels after all of the above) are dropped, and each image
goes to train/val/test by a hash of its pixels, so its split depends on nothing but itself.
Unreadable, truncated or missing files are dropped and listed on the card; ``strict=True``
makes the first such file an error instead.

On disk::

    datasets/<name>/train.npz    images: uint8 (N, H, W, C); labels: int64 (N,) class ids, absent if unlabelled
    datasets/<name>/val.npz      (N may be 0)
    datasets/<name>/test.npz
    datasets/<name>/card.json    counts, size, channels, classes, histograms, drops, pixel handling
    datasets/<name>/preview.png  up to 64 train images, 8 per row, grouped by class

This module knows image formats, pixels and the dataset layout. It knows nothing about models.
"""

from __future__ import annotations

import csv
import gzip
import hashlib
import io
import os
import re
import struct
import zipfile
import zlib
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from PIL import Image, ImageOps

from aigc.data.cards import MAX_DROPS_LISTED
from aigc.data.dataset import read_card
from aigc.data.sources import DEFAULT_TEXT_COLUMNS, clean_header, decode_bytes
from aigc.data.split import SPLITS, check_fractions, split_of
from aigc.errors import AlreadyExists, InvalidInput, NotFound
from aigc.workspace import Workspace, now, write_json_atomic

if TYPE_CHECKING:
    import torch

IMAGE_SUFFIXES: tuple[str, ...] = (".png", ".jpg", ".jpeg", ".webp", ".bmp")
DEFAULT_PATH_COLUMNS: tuple[str, ...] = ("path", "image", "file")
DEFAULT_LABEL_COLUMN = "label"
RESIZE_MODES: tuple[str, ...] = ("crop", "pad")

IDX_IMAGES_MAGIC = 0x00000803  # uint8, 3 dimensions (N, rows, cols)
IDX_LABELS_MAGIC = 0x00000801  # uint8, 1 dimension (N,)

# The keyword options only image sources take; passing any of them routes `aigc.ingest` here.
IMAGE_OPTIONS: tuple[str, ...] = (
    "labels", "image_size", "channels", "resize", "strict", "path_column", "label_column",
)
_COMMON_OPTIONS: tuple[str, ...] = ("split", "replace")

PREVIEW_MAX = 64
PREVIEW_PER_ROW = 8
_PREVIEW_GAP = 2  # pixels between tiles
_PREVIEW_BG = 40  # dark grey around tiles, so white and black images both show their edges

_GREY_MODES = frozenset({"1", "L", "I", "I;16", "I;16L", "I;16B", "I;16N", "F"})
_SIXTEEN_BIT_MODES = frozenset({"I", "I;16", "I;16L", "I;16B", "I;16N"})
_ALPHA_MODES = frozenset({"LA", "La", "PA", "RGBA", "RGBa"})
_IDX_NAME = re.compile(r"(\.idx|idx\d-ubyte|-ubyte)$")
_INT_NAME = re.compile(r"-?\d+")


@dataclass
class ImageSplit:
    images: np.ndarray  # uint8 (N, H, W, C)
    labels: np.ndarray | None  # int64 (N,) class ids, or None when unlabelled
    classes: list[str]  # class id -> name ([] when unlabelled)


@dataclass
class _Drop:
    where: dict[str, Any]  # {"file": "cat/a.png"} or {"index": 12}
    kind: str  # unreadable | missing | no_class | empty_label | empty_path | duplicate
    reason: str


@dataclass
class _Loaded:
    """A source after decoding, conversion and resizing; nothing deduplicated or split yet."""

    format: str
    images: np.ndarray  # uint8 (N, H, W, C), the images that decoded
    raw_labels: np.ndarray | None  # (N,) ints or strings, or None when unlabelled
    where: list[dict[str, Any]]  # (N,) how to name each image in a drop entry
    n_read: int
    drops: list[_Drop] = field(default_factory=list)
    label_source: str | None = None
    ignored_files: int = 0


# -- routing (used by aigc.ingest) ----------------------------------------------------------


def source_format(path: str | Path) -> str | None:
    """'folder', 'idx', 'npz' or 'csv' when ``path`` looks like an image source, else None.

    A .csv counts only when its header names a path column (path/image/file) and no text column,
    so text CSVs keep going to text ingestion.
    """
    p = Path(path).expanduser()
    if p.is_dir():
        return "folder"
    name = p.name.lower()
    if name.endswith(".npz"):
        return "npz"
    stem = name[: -len(".gz")] if name.endswith(".gz") else name
    if _IDX_NAME.search(stem) or (name.endswith(".gz") and _sniff_idx(p)):
        return "idx"
    if name.endswith(".csv") and _sniff_path_csv(p):
        return "csv"
    return None


def is_image_source(path: str | Path, options: Mapping[str, Any] | None = None) -> bool:
    """True when ``path`` is an image source or an image-only option is set (not None/False)."""
    if any((options or {}).get(k) not in (None, False) for k in IMAGE_OPTIONS):
        return True
    return source_format(path) is not None


def image_options(path: str | Path, options: Mapping[str, Any]) -> dict[str, Any]:
    """The options for :func:`ingest_images`; text-only options are refused by name."""
    extra = [k for k in options if k not in IMAGE_OPTIONS + _COMMON_OPTIONS]
    if extra:
        flags = ", ".join("--" + k.replace("_", "-") for k in extra)
        raise InvalidInput(
            f"{flags} appl{'ies' if len(extra) == 1 else 'y'} to text files, not to the image "
            f"source {path}: drop {'it' if len(extra) == 1 else 'them'}"
        )
    return dict(options)


def _sniff_idx(p: Path) -> bool:
    """A gzipped file whose first bytes are an IDX magic (0x00 0x00 type ndim)."""
    try:
        with gzip.open(p, "rb") as f:
            head = f.read(4)
    except (OSError, EOFError):
        return False
    return len(head) == 4 and head[:2] == b"\0\0" and 0x08 <= head[2] <= 0x0E and 1 <= head[3] <= 4


def _sniff_path_csv(p: Path) -> bool:
    try:
        with p.open("rb") as f:
            first = f.readline(65536)
    except OSError:
        return False
    line = first.decode("utf-8", errors="replace").lstrip("\ufeff")
    header = {clean_header(h) for h in next(csv.reader([line]), [])}
    return bool(header & set(DEFAULT_PATH_COLUMNS)) and not header & set(DEFAULT_TEXT_COLUMNS)


# -- pixels ---------------------------------------------------------------------------------


def _composite_on_white(a: np.ndarray) -> np.ndarray:
    """(H, W, C+1) uint8 with alpha last -> (H, W, C) on a white background, rounded."""
    color = a[..., :-1].astype(np.uint32)
    alpha = a[..., -1:].astype(np.uint32)
    return ((color * alpha + 255 * (255 - alpha) + 127) // 255).astype(np.uint8)


def _scale_16_to_8(a: np.ndarray) -> np.ndarray:
    """16-bit values (any int dtype) -> uint8 by round(v * 255 / 65535); out-of-range values clip."""
    v = np.clip(a.astype(np.int64), 0, 65535)
    return ((v * 255 + 32767) // 65535).astype(np.uint8)


def _luma(a: np.ndarray) -> np.ndarray:
    """(..., 3) uint8 RGB -> (..., 1) uint8 with Pillow's ITU-R 601-2 weights (L = .299 R + .587 G + .114 B)."""
    rgb = a.astype(np.uint32)
    y = (rgb[..., 0] * 299 + rgb[..., 1] * 587 + rgb[..., 2] * 114 + 500) // 1000
    return y.astype(np.uint8)[..., None]


def _set_channels(a: np.ndarray, channels: int) -> np.ndarray:
    """(..., C) uint8 with C in 1 or 3 -> (..., channels)."""
    if a.shape[-1] == channels:
        return a
    if channels == 1:
        return _luma(a)
    return np.repeat(a, 3, axis=-1)


def _palette_is_grey(im: Image.Image) -> bool:
    pal = im.getpalette() or []
    return all(pal[i] == pal[i + 1] == pal[i + 2] for i in range(0, len(pal) - 2, 3))


def _to_8bit(im: Image.Image) -> np.ndarray:
    """Any decoded Pillow image -> uint8 (H, W, 1) grey or (H, W, 3) RGB; see the module docstring."""
    mode = im.mode
    if mode in _SIXTEEN_BIT_MODES:
        return _scale_16_to_8(np.asarray(im))[..., None]
    has_key = "transparency" in im.info and mode in ("1", "L", "P", "RGB")
    grey = mode in _GREY_MODES or mode in ("LA", "La") or (mode in ("P", "PA") and _palette_is_grey(im))
    if mode in _ALPHA_MODES or has_key:
        return _composite_on_white(np.asarray(im.convert("LA" if grey else "RGBA")))
    a = np.asarray(im.convert("L" if grey else "RGB"))
    return a[..., None] if a.ndim == 2 else a


def _resize(a: np.ndarray, size: int, mode: str) -> np.ndarray:
    """(H, W, C) uint8 -> (size, size, C) by centre crop or letterbox; bicubic."""
    if a.shape[0] == size and a.shape[1] == size:
        return a
    im = Image.fromarray(a[..., 0] if a.shape[-1] == 1 else a)
    if mode == "crop":
        im = ImageOps.fit(im, (size, size), method=Image.Resampling.BICUBIC)
    else:
        im = ImageOps.pad(im, (size, size), method=Image.Resampling.BICUBIC, color=0)
    out = np.asarray(im)
    return out[..., None] if out.ndim == 2 else out


def _decode_file(path: Path) -> np.ndarray:
    """One image file -> uint8 (H, W, 1|3), upright, 8-bit, alpha on white. Raises on a bad file."""
    with Image.open(path) as im:
        im.load()  # decode now: a truncated file raises here, not later
        im = ImageOps.exif_transpose(im)
        return _to_8bit(im)


def load_image(path: str | Path, image_size: int, channels: int, resize: str = "crop") -> np.ndarray:
    """One image file prepared like the dataset a run was trained on: uint8 (size, size, channels)."""
    p = Path(path)
    if not p.is_file():
        raise InvalidInput(f"no such image: {p}")
    try:
        a = _decode_file(p)
    except (OSError, SyntaxError, ValueError) as e:
        raise InvalidInput(f"{p}: cannot read the image ({e})") from None
    return _set_channels(_resize(a, image_size, resize), channels)


# -- sources --------------------------------------------------------------------------------


def _check_options(image_size: int | None, channels: int | None, resize: str) -> None:
    if image_size is not None and (
        not isinstance(image_size, int) or isinstance(image_size, bool) or not 1 <= image_size <= 4096
    ):
        raise InvalidInput(f"invalid --image-size {image_size!r}: pass a whole number from 1 to 4096, e.g. 32")
    if channels not in (None, 1, 3) or isinstance(channels, bool):
        raise InvalidInput(f"invalid --channels {channels!r}: pass 1 (greyscale) or 3 (RGB), or leave it out")
    if resize not in RESIZE_MODES:
        raise InvalidInput(
            f"invalid --resize {resize!r}: use crop (centre crop) or pad (letterbox)"
        )


def _resolve(path: str | Path) -> Path:
    p = Path(path).expanduser().resolve()
    if not p.exists():
        raise InvalidInput(f"no such file or folder: {p}: check the path")
    return p


def _fmt_size(a: np.ndarray) -> str:
    return f"{a.shape[1]}x{a.shape[0]}"  # width x height, as image viewers show it


def _file_drop(rel: str, kind: str, reason: str, strict: bool, shown: Path) -> _Drop:
    if strict:
        raise InvalidInput(f"{shown}: {reason}: fix or remove the file, or leave out --strict to skip it")
    return _Drop({"file": rel}, kind, reason)


def _load_files(
    items: Sequence[tuple[Path, str, str | None]],
    *,
    image_size: int | None,
    channels: int | None,
    resize: str,
    strict: bool,
    drops: list[_Drop],
) -> tuple[list[np.ndarray], list[str | None], list[dict[str, Any]]]:
    """Decode (file, shown name, label) items; unreadable ones go to ``drops`` (or raise when strict)."""
    arrays: list[np.ndarray] = []
    labels: list[str | None] = []
    where: list[dict[str, Any]] = []
    first: tuple[str, np.ndarray] | None = None
    for path, rel, label in items:
        if not path.is_file():
            drops.append(_file_drop(rel, "missing", "no such file", strict, path))
            continue
        try:
            a = _decode_file(path)
        except Exception as e:  # noqa: BLE001 - corrupt files raise all sorts (OSError, SyntaxError...)
            reason = f"unreadable ({type(e).__name__}: {str(e).splitlines()[0] if str(e) else 'no detail'})"
            drops.append(_file_drop(rel, "unreadable", reason, strict, path))
            continue
        if channels is not None:
            a = _set_channels(a, channels)
        if image_size is not None:
            a = _resize(a, image_size, resize)
        elif first is None:
            first = (rel, a)
        elif a.shape[:2] != first[1].shape[:2]:
            raise InvalidInput(
                f"images have different sizes (e.g. {first[0]} {_fmt_size(first[1])}, {rel} {_fmt_size(a)}): "
                "pass --image-size"
            )
        arrays.append(a)
        labels.append(label)
        where.append({"file": rel})
    return arrays, labels, where


def _stack(arrays: list[np.ndarray], channels: int | None) -> np.ndarray:
    """Same-size (H, W, 1|3) arrays -> (N, H, W, C); C is 1 only when every image is grey (or asked)."""
    if channels is None:
        channels = 1 if all(a.shape[-1] == 1 for a in arrays) else 3
    return np.stack([_set_channels(a, channels) for a in arrays])


def _read_folder(root: Path, *, image_size, channels, resize, strict) -> _Loaded:
    found: list[tuple[Path, str]] = []  # (file, path relative to root), sorted
    ignored: list[str] = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        for f in sorted(filenames):
            if f.startswith("."):
                continue
            full = Path(dirpath) / f
            rel = full.relative_to(root).as_posix()
            if full.suffix.lower() in IMAGE_SUFFIXES:
                found.append((full, rel))
            else:
                ignored.append(rel)
    if not found:
        if not ignored:
            raise InvalidInput(f"{root} is empty: put images in it, one subfolder per class")
        raise InvalidInput(
            f"no image files ({' '.join(IMAGE_SUFFIXES)}) in {root}: found {len(ignored)} other "
            f"file(s), e.g. {ignored[0]}: pass a folder of images"
        )
    labelled = any("/" in rel for _, rel in found)
    drops: list[_Drop] = []
    items: list[tuple[Path, str, str | None]] = []
    for full, rel in found:
        if labelled and "/" not in rel:
            drops.append(_file_drop(rel, "no_class", "directly in the root folder, not in a class subfolder",
                                    strict, full))
            continue
        items.append((full, rel, rel.split("/", 1)[0] if labelled else None))
    arrays, labels, where = _load_files(items, image_size=image_size, channels=channels,
                                        resize=resize, strict=strict, drops=drops)
    return _Loaded(
        format="folder",
        images=_stack(arrays, channels) if arrays else np.zeros((0, 1, 1, 1), np.uint8),
        raw_labels=np.array(labels) if labelled and arrays else None,
        where=where,
        n_read=len(found),
        drops=drops,
        label_source="first-level subfolder" if labelled else None,
        ignored_files=len(ignored),
    )


def _read_csv(p: Path, *, path_column, label_column, image_size, channels, resize, strict) -> _Loaded:
    text, _ = decode_bytes(p.read_bytes(), p)
    reader = csv.reader(io.StringIO(text, newline=""))
    try:
        header = [clean_header(h) for h in next(reader, [])]
        rows = [r for r in reader if r]
    except csv.Error as e:
        raise InvalidInput(f"{p}: malformed CSV near line {reader.line_num}: {e}") from None
    shown = ", ".join(repr(c) for c in header) or "none"
    if path_column is None:
        path_column = next((c for c in DEFAULT_PATH_COLUMNS if c in header), None)
        if path_column is None:
            raise InvalidInput(f"{p}: no image path column among the columns {shown}: pass --path-column NAME")
    elif path_column not in header:
        raise InvalidInput(
            f"{p}: no column {path_column!r} (available: {shown}): pass one of them as --path-column"
        )
    if label_column is not None and label_column not in header:
        raise InvalidInput(
            f"{p}: no column {label_column!r} (available: {shown}): pass one of them as --label-column"
        )
    if label_column is None and DEFAULT_LABEL_COLUMN in header:
        label_column = DEFAULT_LABEL_COLUMN
    if not rows:
        raise InvalidInput(f"{p}: no rows under the header: list one image path per row")
    pi = header.index(path_column)
    li = header.index(label_column) if label_column is not None else None
    drops: list[_Drop] = []
    items: list[tuple[Path, str, str | None]] = []
    for lineno, row in enumerate(rows, start=2):
        rel = row[pi].strip() if pi < len(row) else ""
        label = (row[li].strip() if li < len(row) else "") if li is not None else None
        if not rel:
            drops.append(_file_drop(f"(row {lineno})", "empty_path", "empty path", strict, p))
        elif label == "":
            drops.append(_file_drop(rel, "empty_label", f"empty {label_column!r}", strict, p.parent / rel))
        else:
            items.append((p.parent / rel, rel, label))
    arrays, labels, where = _load_files(items, image_size=image_size, channels=channels,
                                        resize=resize, strict=strict, drops=drops)
    return _Loaded(
        format="csv",
        images=_stack(arrays, channels) if arrays else np.zeros((0, 1, 1, 1), np.uint8),
        raw_labels=np.array(labels) if li is not None and arrays else None,
        where=where,
        n_read=len(rows),
        drops=drops,
        label_source=f"column {label_column!r}" if li is not None else None,
    )


def _read_idx(p: Path, expected_magic: int, what: str) -> np.ndarray:
    """An IDX file (raw or gzipped) -> uint8 array of its declared shape."""
    data = p.read_bytes()
    if data[:2] == b"\x1f\x8b":
        try:
            data = gzip.decompress(data)
        except (OSError, EOFError, zlib.error) as e:
            raise InvalidInput(f"{p}: damaged gzip data ({e}): download the file again") from None
    ndim = expected_magic & 0xFF
    expected_shape = "N x rows x cols" if ndim == 3 else "N"
    if len(data) < 4:
        raise InvalidInput(f"{p}: too short for an IDX file ({len(data)} bytes): check the file")
    (magic,) = struct.unpack(">I", data[:4])
    if magic != expected_magic:
        hint = ""
        if magic == IDX_LABELS_MAGIC:
            hint = ": this is a label file, pass it as --labels"
        elif magic == IDX_IMAGES_MAGIC:
            hint = ": this is an image file, pass it as the PATH"
        raise InvalidInput(
            f"{p}: not an IDX {what} file: magic number 0x{magic:08x}, expected 0x{expected_magic:08x} "
            f"(uint8, {expected_shape}){hint or ': check the file'}"
        )
    header = 4 + 4 * ndim
    if len(data) < header:
        raise InvalidInput(f"{p}: IDX header cut short ({len(data)} bytes): the file is truncated")
    shape = struct.unpack(f">{ndim}I", data[4:header])
    size = int(np.prod(shape))
    if len(data) - header != size:
        raise InvalidInput(
            f"{p}: the header declares {' x '.join(map(str, shape))} = {size} bytes of data but the file "
            f"holds {len(data) - header}: the file is truncated or damaged"
        )
    return np.frombuffer(data, dtype=np.uint8, count=size, offset=header).reshape(shape)


def _resize_all(images: np.ndarray, image_size: int | None, resize: str) -> np.ndarray:
    if image_size is None or images.shape[1:3] == (image_size, image_size):
        return images
    return np.stack([_resize(a, image_size, resize) for a in images]) if len(images) else \
        np.zeros((0, image_size, image_size, images.shape[-1]), np.uint8)


def _load_idx(p: Path, labels: str | Path | None, *, image_size, channels, resize) -> _Loaded:
    images = _read_idx(p, IDX_IMAGES_MAGIC, "image")[..., None]  # (N, rows, cols, 1)
    raw_labels = None
    if labels is not None:
        lp = _resolve(labels)
        if lp.is_dir():
            raise InvalidInput(
                f"--labels {lp} is a folder: pass the IDX label file (e.g. train-labels-idx1-ubyte.gz)"
            )
        raw_labels = _read_idx(lp, IDX_LABELS_MAGIC, "label")
        if len(raw_labels) != len(images):
            raise InvalidInput(
                f"{p} holds {len(images)} images but {lp} holds {len(raw_labels)} labels: "
                "pass the label file that belongs to these images"
            )
    images = _resize_all(_set_channels(images, channels or 1), image_size, resize)
    return _Loaded(
        format="idx",
        images=images,
        raw_labels=raw_labels,
        where=[{"index": i} for i in range(len(images))],
        n_read=len(images),
        label_source=str(_resolve(labels)) if labels is not None else None,
    )


def _load_npz(p: Path, *, image_size, channels, resize) -> _Loaded:
    try:
        with np.load(p, allow_pickle=False) as z:
            keys = list(z.files)
            xk = next((k for k in ("x", "images") if k in keys), None)
            if xk is None:
                raise InvalidInput(
                    f"{p}: no array 'x' (arrays: {', '.join(keys) or 'none'}): save the images as x=..., "
                    "e.g. np.savez(path, x=images, y=labels)"
                )
            yk = next((k for k in ("y", "labels") if k in keys), None)
            x = z[xk]
            y = z[yk] if yk is not None else None
    except (OSError, ValueError, zipfile.BadZipFile) as e:
        raise InvalidInput(
            f"{p}: not a readable .npz ({type(e).__name__}: {e}): save it with np.savez and plain "
            "(non-object) arrays"
        ) from None
    if x.ndim == 3:
        x = x[..., None]
    if x.ndim != 4 or x.shape[-1] not in (1, 3, 4) or x.shape[0] == 0:
        raise InvalidInput(
            f"{p}: {xk} has shape {x.shape}: expected (N, H, W) or (N, H, W, C) with N >= 1 and C 1, 3 or 4"
        )
    x = _npz_pixels(p, xk, x)
    if x.shape[-1] == 4:
        x = _composite_on_white(x)
    if y is not None:
        if y.ndim != 1 or len(y) != len(x):
            raise InvalidInput(
                f"{p}: {yk} has shape {y.shape} but {xk} holds {len(x)} images: pass one label per image"
            )
        y = _npz_labels(p, yk, y)
    x = _resize_all(_set_channels(x, channels or x.shape[-1]), image_size, resize)
    return _Loaded(
        format="npz",
        images=x,
        raw_labels=y,
        where=[{"index": i} for i in range(len(x))],
        n_read=len(x),
        label_source=f"array {yk!r}" if y is not None else None,
    )


def _npz_pixels(p: Path, key: str, x: np.ndarray) -> np.ndarray:
    if x.dtype == np.uint8:
        return x
    if np.issubdtype(x.dtype, np.floating):
        lo, hi = (float(x.min()), float(x.max())) if x.size else (0.0, 0.0)
        if not (np.isfinite(lo) and np.isfinite(hi)) or lo < 0 or hi > 1:
            raise InvalidInput(
                f"{p}: {key} holds floats from {lo:g} to {hi:g}: scale them to [0, 1] or save uint8 0..255"
            )
        return np.rint(x * 255).astype(np.uint8)
    if np.issubdtype(x.dtype, np.integer) or x.dtype == np.bool_:
        lo, hi = int(x.min()), int(x.max())
        if lo < 0 or hi > 255:
            raise InvalidInput(
                f"{p}: {key} holds integers from {lo} to {hi}: save uint8 0..255 or floats in [0, 1]"
            )
        return x.astype(np.uint8)
    raise InvalidInput(f"{p}: {key} has dtype {x.dtype}: save uint8 0..255 or floats in [0, 1]")


def _npz_labels(p: Path, key: str, y: np.ndarray) -> np.ndarray:
    if y.dtype.kind in "iub":
        return y.astype(np.int64)
    if y.dtype.kind == "f" and np.all(np.isfinite(y)) and np.all(y == np.rint(y)):
        return y.astype(np.int64)
    if y.dtype.kind in "US":
        y = y.astype(str)
        if np.any(np.char.strip(y) == ""):
            raise InvalidInput(f"{p}: {key} has empty labels: give every image a label, or leave {key} out")
        return y
    raise InvalidInput(f"{p}: {key} has dtype {y.dtype}: save whole-number or string labels")


# -- classes, dedupe, split -----------------------------------------------------------------


def _classes(raw: np.ndarray) -> tuple[list[str], np.ndarray]:
    """Distinct labels as names (numeric order when they are all whole numbers) and int64 ids."""
    uniq, ids = np.unique(raw, return_inverse=True)
    names = [str(u) for u in uniq.tolist()]
    if uniq.dtype.kind in "US" and all(_INT_NAME.fullmatch(n) for n in names):
        order = sorted(range(len(names)), key=lambda i: int(names[i]))
        remap = np.empty(len(order), np.int64)
        remap[order] = np.arange(len(order))
        names = [names[i] for i in order]
        ids = remap[ids]
    return names, ids.astype(np.int64).reshape(-1)


def _dedupe_and_split(
    loaded: _Loaded, fractions: tuple[float, float, float]
) -> tuple[dict[str, np.ndarray], list[_Drop]]:
    """Indices of kept images per split (input order), plus duplicate drops."""
    first_seen: dict[bytes, int] = {}
    dupes: list[_Drop] = []
    out: dict[str, list[int]] = {s: [] for s in SPLITS}
    images = loaded.images
    for i in range(len(images)):
        digest = hashlib.sha256(images[i].tobytes()).digest()
        j = first_seen.setdefault(digest, i)
        if j != i:
            first = next(iter(loaded.where[j].values()))
            dupes.append(_Drop(loaded.where[i], "duplicate", f"same pixels as {first}"))
            continue
        out[split_of(digest.hex(), fractions)].append(i)  # the split helpers hash text: give them hex
    return {s: np.asarray(v, dtype=np.int64) for s, v in out.items()}, dupes


def _pixel_stats(images: np.ndarray) -> tuple[list[float], list[float]]:
    """Per-channel mean and std in [0, 1], exact, from a 256-bin histogram (no float copy of the data)."""
    values = np.arange(256, dtype=np.float64)
    means, stds = [], []
    for c in range(images.shape[-1]):
        hist = np.bincount(images[..., c].reshape(-1), minlength=256).astype(np.float64)
        n = max(hist.sum(), 1.0)
        mean = (hist @ values) / n
        var = max((hist @ values**2) / n - mean**2, 0.0)
        means.append(round(float(mean) / 255, 4))
        stds.append(round(float(var) ** 0.5 / 255, 4))
    return means, stds


# -- preview --------------------------------------------------------------------------------


def _preview_cells(labels: np.ndarray | None, n_classes: int, n: int) -> list[int | None]:
    """Which train images to show, in grid order; None leaves a cell blank (a class starts a row)."""
    if labels is None or n_classes == 0:
        return list(range(min(n, PREVIEW_MAX)))
    cells: list[int | None] = []
    if n_classes <= PREVIEW_PER_ROW:
        # Whole rows per class: 1 class -> 8 rows, 2 -> 4 rows each, 5..8 -> one row each.
        per_class = PREVIEW_PER_ROW * max(1, (PREVIEW_MAX // PREVIEW_PER_ROW) // n_classes)
        for c in range(n_classes):
            idx = np.flatnonzero(labels == c)[:per_class].tolist()
            if idx:
                cells += idx + [None] * (-len(idx) % PREVIEW_PER_ROW)
    else:
        per_class = max(1, PREVIEW_MAX // n_classes)
        for c in range(n_classes):
            cells += np.flatnonzero(labels == c)[:per_class].tolist()
    return cells[:PREVIEW_MAX]


def _write_preview(path: Path, images: np.ndarray, labels: np.ndarray | None, n_classes: int) -> None:
    cells = _preview_cells(labels, n_classes, len(images))
    write_grid(path, [None if i is None else images[i] for i in cells])


def write_grid(path: Path, tiles: Sequence[np.ndarray | None], per_row: int = PREVIEW_PER_ROW, *,
               label: Mapping[str, Any] | None = None, mark: bool = False) -> None:
    """A PNG grid of uint8 (H, W, C) tiles, ``per_row`` to a row; None leaves a cell blank.

    Tiny images (MNIST) are blown up with nearest-neighbour so they can be seen; big ones are
    shrunk so the grid stays a small file. A grid of generated images passes ``label``, the implicit
    AIGC label (GB 45438 Annex E) the PNG carries, and ``mark`` for the visible "AI生成" mark too.
    """
    first = next(t for t in tiles if t is not None)
    h, w, c = first.shape
    scale = max(1, 64 // max(h, w))
    th, tw = h * scale, w * scale
    if max(th, tw) > 128:
        f = 128 / max(th, tw)
        th, tw = max(1, round(th * f)), max(1, round(tw * f))
    rows = max(1, -(-len(tiles) // per_row))
    cols = per_row if len(tiles) >= per_row else max(1, len(tiles))
    g = _PREVIEW_GAP
    grid = Image.new("L" if c == 1 else "RGB", (cols * (tw + g) + g, rows * (th + g) + g), _PREVIEW_BG)
    for k, a in enumerate(tiles):
        if a is None:
            continue
        tile = Image.fromarray(a[..., 0] if c == 1 else a)
        if (th, tw) != (h, w):
            resample = Image.Resampling.NEAREST if th >= h else Image.Resampling.BICUBIC
            tile = tile.resize((tw, th), resample)
        r, col = divmod(k, per_row)
        grid.paste(tile, (g + col * (tw + g), g + r * (th + g)))
    if label is not None:
        from aigc.provenance.labels import save_image

        save_image(grid, path, label, explicit=mark)  # atomic, like the plain grid below
        return
    tmp = path.with_name(f".{path.name}.tmp")
    grid.save(tmp, format="PNG")
    os.replace(tmp, path)


# -- the card -------------------------------------------------------------------------------


def _build_card(
    *, name: str, source: Path, loaded: _Loaded, drops: Sequence[_Drop], counts: dict[str, int],
    size: tuple[int, int], channels: int, classes: list[str], class_counts: dict[str, dict[str, int]],
    pixel_mean: list[float], pixel_std: list[float], image_size: int | None, resize: str,
    fractions: Sequence[float],
) -> dict[str, Any]:
    by_kind = Counter(d.kind for d in drops)
    card: dict[str, Any] = {
        "name": name,
        "modality": "image",
        "source": str(source),
        "format": loaded.format,
        "label_source": loaded.label_source,
        "counts": {"read": loaded.n_read, "kept": sum(counts.values()), "dropped": len(drops), **counts},
        "image_size": [size[0], size[1]],  # [H, W]
        "channels": channels,
        "classes": classes,
        "class_counts": class_counts,
        "pixel_mean": pixel_mean,  # per channel, train split, in [0, 1]
        "pixel_std": pixel_std,
        "resize": resize if image_size is not None else None,
        "pixels": {
            "dtype": "uint8",
            "layout": "NHWC",
            "alpha": "composited on white",
            "sixteen_bit": "scaled to 8 bits: round(v * 255 / 65535)",
            "channels": "luma (ITU-R 601-2) for 1, grey repeated for 3",
            "resample": "bicubic",
            "pad_fill": 0,
            "exif_orientation": "applied",
        },
        "dropped": [{**d.where, "kind": d.kind, "reason": d.reason} for d in drops[:MAX_DROPS_LISTED]],
        "dropped_by_reason": dict(by_kind.most_common()),
        "split": {"method": "hash", "fractions": [float(f) for f in fractions]},
        "empty_splits": [s for s in ("val", "test") if counts[s] == 0],
        "files": {**{s: f"{s}.npz" for s in SPLITS}, "preview": "preview.png"},
        "created_at": now(),
    }
    if loaded.ignored_files:
        card["ignored_files"] = loaded.ignored_files  # files without an image suffix
    if len(drops) > MAX_DROPS_LISTED:
        card["dropped_not_listed"] = len(drops) - MAX_DROPS_LISTED
    return card


# -- ingest ---------------------------------------------------------------------------------


def _nothing_left(source: Path, n_read: int, drops: Sequence[_Drop]) -> InvalidInput:
    detail = ", ".join(f"{k}: {n}" for k, n in Counter(d.kind for d in drops).most_common())
    example = f" (e.g. {next(iter(drops[0].where.values()))}: {drops[0].reason})" if drops else ""
    return InvalidInput(
        f"{source}: no images left: read {n_read}, dropped {len(drops)} ({detail}){example}: check the files"
    )


def ingest_images(
    ws: Workspace,
    path: str | Path,
    name: str,
    *,
    labels: str | Path | None = None,
    image_size: int | None = None,
    channels: int | None = None,
    resize: str = "crop",
    strict: bool = False,
    path_column: str | None = None,
    label_column: str | None = None,
    split: tuple[float, float, float] = (0.9, 0.05, 0.05),
    replace: bool = False,
) -> dict[str, Any]:
    """Ingest an image folder, IDX file, .npz or CSV of image paths as dataset ``name``; return its card."""
    # Cheap checks first: a taken name or a bad option must not cost decoding a whole folder.
    dest = ws.dataset_path(name)
    if not replace and (ws.has_dataset(name) or dest.exists()):
        raise AlreadyExists(f"dataset {name!r} already exists: pass --replace to overwrite it")
    fractions = check_fractions(split)
    _check_options(image_size, channels, resize)
    source = _resolve(path)
    fmt = source_format(source)
    if fmt is None and source.suffix.lower() == ".csv":
        fmt = "csv"  # a CSV with --path-column/--label-column but no default-named path column
    if fmt is None:
        raise InvalidInput(
            f"{source} is not an image source: pass a folder of images (one subfolder per class), an IDX "
            "file (.idx, *-ubyte, or gzipped), an .npz with x (and y), or a .csv of image paths"
        )
    if labels is not None and fmt != "idx":
        raise InvalidInput(f"--labels applies to IDX image files, not to the {fmt} {source}: drop --labels")
    if (path_column is not None or label_column is not None) and fmt != "csv":
        raise InvalidInput(
            f"--path-column/--label-column apply to a .csv of image paths, not to the {fmt} {source}: drop them"
        )

    opts = dict(image_size=image_size, channels=channels, resize=resize)
    if fmt == "folder":
        loaded = _read_folder(source, strict=strict, **opts)
    elif fmt == "csv":
        loaded = _read_csv(source, path_column=path_column, label_column=label_column, strict=strict, **opts)
    elif fmt == "idx":
        loaded = _load_idx(source, labels, **opts)
    else:
        loaded = _load_npz(source, **opts)

    if len(loaded.images) == 0:
        raise _nothing_left(source, loaded.n_read, loaded.drops)
    by_split, dupes = _dedupe_and_split(loaded, fractions)
    drops = loaded.drops + dupes
    if len(by_split["train"]) == 0:
        raise InvalidInput(
            f"{source}: none of the {sum(len(v) for v in by_split.values())} kept images landed in train with "
            f"split {','.join(f'{f:g}' for f in fractions)}: add more images or raise the train fraction"
        )

    kept = np.sort(np.concatenate([by_split[s] for s in SPLITS]))
    classes: list[str] = []
    ids = None
    if loaded.raw_labels is not None:
        classes, kept_ids = _classes(loaded.raw_labels[kept])
        ids = np.full(len(loaded.images), -1, np.int64)
        ids[kept] = kept_ids
    arrays = {s: loaded.images[by_split[s]] for s in SPLITS}
    split_labels = {s: ids[by_split[s]] if ids is not None else None for s in SPLITS}
    class_counts = {
        s: {classes[c]: int(n) for c, n in enumerate(np.bincount(split_labels[s], minlength=len(classes)))}
        for s in SPLITS
    } if ids is not None else {}
    train = arrays["train"]
    mean, std = _pixel_stats(train)
    card = _build_card(
        name=name, source=source, loaded=loaded, drops=drops,
        counts={s: len(arrays[s]) for s in SPLITS}, size=tuple(train.shape[1:3]),
        channels=int(train.shape[3]), classes=classes, class_counts=class_counts,
        pixel_mean=mean, pixel_std=std,
        image_size=image_size, resize=resize, fractions=fractions,
    )
    with ws.staging("dataset") as staged:
        for s in SPLITS:
            if split_labels[s] is None:
                np.savez(staged / f"{s}.npz", images=arrays[s])
            else:
                np.savez(staged / f"{s}.npz", images=arrays[s], labels=split_labels[s])
        _write_preview(staged / "preview.png", train, split_labels["train"], len(classes))
        write_json_atomic(staged / "card.json", card)
        ws.publish(staged, dest, replace=replace)
    ws.register_dataset(name, "image", str(source), card)
    return card


# -- reading back ---------------------------------------------------------------------------


def read_image_split(dataset_dir: Path, split: str) -> ImageSplit:
    """One split of an image dataset: uint8 NHWC images, int64 class ids (or None) and class names."""
    if split not in SPLITS:
        raise InvalidInput(f"unknown split {split!r}: use one of {', '.join(SPLITS)}")
    dataset_dir = Path(dataset_dir)
    path = dataset_dir / f"{split}.npz"
    if not path.is_file():
        if not dataset_dir.is_dir():
            raise NotFound(f"no dataset folder at {dataset_dir}: ingest it first with `aigc ingest`")
        if (dataset_dir / f"{split}.jsonl").is_file():
            raise InvalidInput(f"{dataset_dir} is a text dataset, not an image dataset: pick an image dataset")
        raise NotFound(f"{path} is missing: the dataset is incomplete, ingest it again with --replace")
    try:
        with np.load(path, allow_pickle=False) as z:
            images = z["images"]
            ids = z["labels"] if "labels" in z.files else None
    except (OSError, ValueError, KeyError, zipfile.BadZipFile) as e:
        raise InvalidInput(
            f"{path} is damaged ({type(e).__name__}: {e}): ingest the dataset again with --replace"
        ) from None
    if images.dtype != np.uint8 or images.ndim != 4 or (ids is not None and ids.shape != (len(images),)):
        raise InvalidInput(f"{path} does not hold uint8 NHWC images: ingest the dataset again with --replace")
    classes = [str(c) for c in read_card(dataset_dir).get("classes", [])]
    return ImageSplit(images=images, labels=ids.astype(np.int64, copy=False) if ids is not None else None,
                      classes=classes)


def to_tensor(images: np.ndarray) -> torch.Tensor:
    """uint8 (N, H, W, C) -> float32 (N, C, H, W) in [0, 1], contiguous."""
    import torch

    if not isinstance(images, np.ndarray) or images.dtype != np.uint8 or images.ndim != 4:
        shown = f"{images.dtype} {images.shape}" if isinstance(images, np.ndarray) else type(images).__name__
        raise InvalidInput(f"to_tensor expects uint8 images of shape (N, H, W, C), got {shown}")
    t = torch.from_numpy(np.ascontiguousarray(images)).permute(0, 3, 1, 2)  # (N, C, H, W) view
    return t.to(torch.float32, memory_format=torch.contiguous_format).div_(255)

