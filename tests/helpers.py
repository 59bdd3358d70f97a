"""Tiny data sets written by the tests themselves (no downloads, no shared data)."""

from __future__ import annotations

import csv
import random
from pathlib import Path


def write_fruit_csv(path: Path, n: int = 160, seed: int = 0) -> Path:
    """Two conditions whose texts never overlap: fruit=apple -> 'apple ...', fruit=kiwi -> '猕猴桃 ...'.

    Separable enough that a tiny model learns the condition in a few dozen steps.
    """
    rng = random.Random(seed)
    rows = []
    for i in range(n):
        fruit = "apple" if i % 2 == 0 else "kiwi"
        words = ["apple", "red", "sweet"] if fruit == "apple" else ["猕猴桃", "绿色", "酸甜"]
        k = rng.randint(3, 12)
        text = " ".join(rng.choice(words) for _ in range(k)) + f" {i}"
        rows.append({"text": text, "fruit": fruit, "tone": rng.choice(["a", "b"])})
    with open(path, "w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=["text", "fruit", "tone"])
        writer.writeheader()
        writer.writerows(rows)
    return path


def write_corpus(path: Path, lines: int = 400, seed: int = 0) -> Path:
    """A whole-corpus .txt of short English and Chinese lines."""
    rng = random.Random(seed)
    vocab = ["the", "shop", "sells", "green", "tea", "and", "cups", "好", "茶", "杯子", "清香"]
    text = "\n".join(" ".join(rng.choice(vocab) for _ in range(rng.randint(4, 10))) for _ in range(lines))
    path.write_text(text + "\n", encoding="utf-8")
    return path
