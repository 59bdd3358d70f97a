"""Write scikit-learn's bundled 8x8 hand-written digits, upscaled, as an .npz that ``aigc ingest`` reads.

``sklearn.datasets.load_digits`` ships inside scikit-learn (1,797 images, 10 classes, grey levels
0..16), so this needs no network. Pixels are scaled to 0..255 (``round(v * 255 / 16)``) and
resized with Pillow's bicubic filter.

16x16 by default, and why: the 8x8 originals hold 64 pixels of information, so a larger side
adds only interpolated pixels while each training step costs about (side / 16)^2 times as much;
16 also gives the image families a side length that neither Fashion-MNIST (28) nor the shapes set
(32) has. ``--size`` picks another.

    python scripts/make_digits.py OUT.npz [--size 16]
    aigc ingest OUT.npz --name digits

Also importable: ``digits(size) -> (x uint8 (N, size, size), y class names)``.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parent))
from make_shapes import write_cli  # noqa: E402  (one command line and atomic writer for both)


def digits(size: int = 16) -> tuple[np.ndarray, np.ndarray]:
    from sklearn.datasets import load_digits

    if size < 8:
        raise ValueError(f"size must be >= 8 px (the originals are 8x8), got {size}")
    bunch = load_digits()
    raw = np.rint(bunch.images * (255.0 / 16.0)).astype(np.uint8)  # (N, 8, 8), 0..16 -> 0..255
    x = np.stack([np.asarray(Image.fromarray(a).resize((size, size), Image.Resampling.BICUBIC)) for a in raw])
    y = np.array([str(int(t)) for t in bunch.target])
    return x, y


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("out", type=Path, help="the .npz to write")
    ap.add_argument("--size", type=int, default=16, help="side in pixels (default 16)")
    args = ap.parse_args(argv)
    return write_cli(args.out, lambda: digits(args.size))


if __name__ == "__main__":
    sys.exit(main())
