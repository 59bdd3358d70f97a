"""arfpy 0.1.1 as its authors wrote it, on numpy 2.

arfpy's pruning step calls ``np.in1d``, which numpy 2.4 removed (``np.isin`` is the same function,
its replacement since numpy 2.0). The benchmark imports arfpy through :func:`arf_class`, which puts
the old name back first; nothing of arfpy is copied or changed, and nothing under src/ imports this.
"""

import numpy as np


def arf_class():
    """arfpy's ``arf`` class, with ``np.in1d`` restored for it."""
    if not hasattr(np, "in1d"):
        np.in1d = np.isin
    from arfpy.arf import arf

    return arf
