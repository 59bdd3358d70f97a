"""FSDP on GPUs (``--strategy fsdp``): the round trip of ``tests/test_fsdp.py`` on CUDA with NCCL.

Skipped without a GPU. On a machine with one, ``scripts/check_fsdp_gpu.sh`` runs it: a tiny gpt
trains under FSDP (2 processes on 2 or more GPUs, 1 on one GPU), its loss falls, its checkpoint
is the plain full state (the model's, and the optimizer's keyed by index as ``torch.optim`` saves
it), it resumes on one GPU with the same validation loss at every step as a run that was never
interrupted (and a one-GPU run resumes under FSDP alike), and its best weights load into a fresh
model and make its export. Exact float32 (``precision="32-true"``), so only the order of sums
differs between FSDP and one device. About a minute on a GPU machine, most of it start-up.
"""

from __future__ import annotations

import pytest
import torch

from test_fsdp import check_round_trip

DEVICES = min(torch.cuda.device_count(), 2)

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(DEVICES < 1, reason="FSDP runs on CUDA only and this machine has no GPU: "
                                           "run scripts/check_fsdp_gpu.sh on a machine with one"),
]


def test_fsdp_on_gpus_trains_checkpoints_and_resumes_like_one_device(tmp_path, monkeypatch):
    import aigc
    from helpers import write_corpus

    monkeypatch.delenv("AIGC_DB_URL", raising=False)
    root = tmp_path / "ws"
    aigc.ingest(write_corpus(tmp_path / "corpus.txt"), "corpus", workspace=aigc.open_workspace(root))
    check_round_trip(root, DEVICES, cpu=False, weights_tol=1e-4, loss_tol=1e-4)
