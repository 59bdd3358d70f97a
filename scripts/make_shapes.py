"""Make the coloured-shapes image set: the shape is the class; colour, size and position are random.

Six classes (circle, square, triangle, diamond, cross, ring), drawn filled in one random saturated
colour on a black background, RGB, 32x32 by default. Each image is drawn at 4x the size and
reduced with a box filter, so edges are anti-aliased the same way every time. A generator that
gets the class right must get the shape right whatever the colour, and one that collapses to a
single colour or position per class loses recall; neither is true of Fashion-MNIST or digits,
the sets the image families were first built on.

Deterministic: ``numpy.random.default_rng(seed)`` drives every draw, Pillow does the drawing.

    python scripts/make_shapes.py OUT.npz [--n 6000] [--size 32] [--seed 20261127]
    aigc ingest OUT.npz --name shapes

Writes ``x`` uint8 (N, size, size, 3) and ``y`` class names, the .npz layout that ``aigc ingest``
reads. Also importable: ``draw_shapes(n, size, seed) -> (x, y)``.
"""

from __future__ import annotations

import argparse
import colorsys
import os
import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

CLASSES = ("circle", "square", "triangle", "diamond", "cross", "ring")
SUPERSAMPLE = 4  # drawn at 4x and reduced: anti-aliased edges without depending on Pillow's AA
MIN_SIZE = 16  # below this a shape of the smallest radius is a few pixels and classes blur


def _outline(kind: str, cx: float, cy: float, r: float) -> list[tuple[float, float]]:
    """Polygon vertices of the polygonal classes, centred on (cx, cy), circumradius-ish ``r``."""
    if kind == "square":
        s = r * 0.8
        return [(cx - s, cy - s), (cx + s, cy - s), (cx + s, cy + s), (cx - s, cy + s)]
    if kind == "triangle":
        return [(cx, cy - r), (cx + r * 0.95, cy + r * 0.75), (cx - r * 0.95, cy + r * 0.75)]
    if kind == "diamond":
        return [(cx, cy - r), (cx + r, cy), (cx, cy + r), (cx - r, cy)]
    if kind == "cross":
        a = r * 0.35  # half the bar width
        return [(cx - a, cy - r), (cx + a, cy - r), (cx + a, cy - a), (cx + r, cy - a), (cx + r, cy + a),
                (cx + a, cy + a), (cx + a, cy + r), (cx - a, cy + r), (cx - a, cy + a), (cx - r, cy + a),
                (cx - r, cy - a), (cx - a, cy - a)]
    raise ValueError(kind)


def draw_one(kind: str, size: int, colour: tuple[int, int, int], cx: float, cy: float, r: float) -> np.ndarray:
    """One (size, size, 3) uint8 image; centre and radius in output pixels."""
    k = SUPERSAMPLE
    im = Image.new("RGB", (size * k, size * k), (0, 0, 0))
    d = ImageDraw.Draw(im)
    cx, cy, r = cx * k, cy * k, r * k
    if kind == "circle":
        d.ellipse([cx - r, cy - r, cx + r, cy + r], fill=colour)
    elif kind == "ring":
        d.ellipse([cx - r, cy - r, cx + r, cy + r], fill=colour)
        h = r * 0.55
        d.ellipse([cx - h, cy - h, cx + h, cy + h], fill=(0, 0, 0))
    else:
        d.polygon(_outline(kind, cx, cy, r), fill=colour)
    return np.asarray(im.resize((size, size), Image.Resampling.BOX), dtype=np.uint8)


def draw_shapes(n: int, size: int = 32, seed: int = 20261127) -> tuple[np.ndarray, np.ndarray]:
    """n images (n, size, size, 3) uint8 and their class names (n,), classes in turn (balanced)."""
    if n < 1:
        raise ValueError(f"n must be >= 1, got {n}")
    if size < MIN_SIZE:
        raise ValueError(f"size must be >= {MIN_SIZE} px, got {size}")
    rng = np.random.default_rng(seed)
    x = np.empty((n, size, size, 3), np.uint8)
    y = np.array([CLASSES[i % len(CLASSES)] for i in range(n)])
    for i in range(n):
        r = rng.uniform(0.18, 0.34) * size  # radius: a fifth to a third of the side
        cx, cy = rng.uniform(r + 1, size - r - 1, size=2)  # the whole shape inside the frame
        # saturated, bright colours of any hue: the class never tells the colour
        h, s, v = rng.uniform(0, 1), rng.uniform(0.55, 1.0), rng.uniform(0.65, 1.0)
        colour = tuple(int(round(c * 255)) for c in colorsys.hsv_to_rgb(h, s, v))
        x[i] = draw_one(str(y[i]), size, colour, cx, cy, r)
    return x, y


def write_npz(path: Path, x: np.ndarray, y: np.ndarray) -> None:
    """np.savez to a temp file then rename: a killed run leaves no half-written set."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp.npz")
    try:
        np.savez(tmp, x=x, y=y)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def write_cli(out: Path, make: Callable[[], tuple[np.ndarray, np.ndarray]]) -> int:
    """The scripts' command line: refuse a path that is not .npz or a bad option with one line and
    exit code 2, else write what ``make`` returns and say so."""
    if out.suffix != ".npz":
        print(f"error: {out} must end in .npz", file=sys.stderr)
        return 2
    try:
        x, y = make()
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    write_npz(out, x, y)
    print(f"wrote {out}: {len(x)} images {x.shape[1]}x{x.shape[2]}, classes {', '.join(sorted(set(y.tolist())))}")
    return 0


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("out", type=Path, help="the .npz to write")
    ap.add_argument("--n", type=int, default=6000, help="images (default 6000, 1000 per class)")
    ap.add_argument("--size", type=int, default=32, help="side in pixels (default 32)")
    ap.add_argument("--seed", type=int, default=20261127)
    args = ap.parse_args(argv)
    return write_cli(args.out, lambda: draw_shapes(args.n, args.size, args.seed))


if __name__ == "__main__":
    sys.exit(main())
