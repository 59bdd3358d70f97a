"""`MNIST(root, train, download, transform)` over the IDX files in $PEER_IDX_DIR, offline."""

import gzip
import os
import struct
from pathlib import Path

import numpy as np
import torch


def _read_idx(path: Path) -> np.ndarray:
    with gzip.open(path) as f:
        magic, n = struct.unpack(">II", f.read(8))
        dims = struct.unpack(">" + "I" * ((magic & 0xFF) - 1), f.read(4 * ((magic & 0xFF) - 1)))
        return np.frombuffer(f.read(), np.uint8).reshape(n, *dims)


class MNIST(torch.utils.data.Dataset):
    def __init__(self, root, train=True, download=False, transform=None):
        folder = Path(os.environ["PEER_IDX_DIR"])
        prefix = "train" if train else "t10k"
        self.images = _read_idx(folder / f"{prefix}-images-idx3-ubyte.gz")
        self.labels = _read_idx(folder / f"{prefix}-labels-idx1-ubyte.gz").astype(np.int64)
        self.transform = transform

    def __len__(self):
        return len(self.images)

    def __getitem__(self, i):
        image = self.images[i]
        if self.transform is not None:
            image = self.transform(image)
        return image, int(self.labels[i])
