"""The robustness benchmark's image sets: scripts/make_shapes.py and scripts/make_digits.py draw the
same images for the same seed, and `aigc ingest` reads what they write."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "scripts"))
from make_digits import digits  # noqa: E402
from make_shapes import CLASSES, draw_shapes, main  # noqa: E402


def test_shapes_are_seeded_balanced_rgb_and_vary_in_colour_within_a_class():
    x, y = draw_shapes(60, 32, seed=5)
    assert x.shape == (60, 32, 32, 3) and x.dtype == np.uint8
    assert np.array_equal(x, draw_shapes(60, 32, seed=5)[0])  # deterministic
    assert not np.array_equal(x, draw_shapes(60, 32, seed=6)[0])
    assert sorted(set(y.tolist())) == sorted(CLASSES) and all((y == c).sum() == 10 for c in CLASSES)
    circles = x[y == "circle"].reshape(10, -1, 3)
    mean_colours = np.array([px[px.max(axis=1) > 100].mean(axis=0) for px in circles])  # lit pixels
    assert mean_colours.std(axis=0).max() > 30  # the colour is not the class
    assert (x[:, 0, 0] == 0).all()  # black background (shapes never touch the corners)


def test_digits_are_upscaled_to_16_px_with_ten_classes():
    x, y = digits(16)
    assert x.shape == (1797, 16, 16) and x.dtype == np.uint8 and x.max() == 255
    assert sorted(set(y.tolist()), key=int) == [str(d) for d in range(10)]


def test_the_scripts_write_an_npz_that_ingest_reads(tmp_path, capsys):
    import aigc

    out = tmp_path / "shapes.npz"
    assert main([str(out), "--n", "60", "--size", "16"]) == 0
    card = aigc.ingest(out, "shapes", workspace=tmp_path / "ws")
    assert card["classes"] == sorted(CLASSES) and card["channels"] == 3 and card["image_size"] == [16, 16]
    assert card["counts"]["kept"] == 60  # no two drawings alike
    assert main([str(tmp_path / "shapes.png")]) == 2
    assert "must end in .npz" in capsys.readouterr().err
    with pytest.raises(ValueError, match="size must be >= 16"):
        draw_shapes(4, 8)
