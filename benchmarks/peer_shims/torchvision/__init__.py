"""A stand-in for the three torchvision names that pytorch/examples' `vae/main.py` imports.

torchvision is not installed here (its wheels pull a CUDA torch), and the peer must run as its
authors wrote it, so this package is put first on the peer's PYTHONPATH and nowhere else:
`datasets.MNIST` serves the IDX files in `$PEER_IDX_DIR` (Fashion-MNIST in our benchmark: same
format, same 60k/10k split), `transforms.ToTensor` scales uint8 to [0, 1] as torchvision's does,
and `utils.save_image` writes nothing (the peer's reconstruction PNGs are not compared).
"""

from . import datasets, transforms, utils  # noqa: F401
