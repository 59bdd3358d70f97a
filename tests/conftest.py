"""Shared fixtures: every test gets its own workspace (via $AIGC_HOME) and one torch thread."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("AIGC_THREADS", "1")
os.environ.setdefault("OMP_NUM_THREADS", "1")

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data"


@pytest.fixture(autouse=True)
def aigc_home(tmp_path, monkeypatch):
    home = tmp_path / "aigc-home"
    monkeypatch.setenv("AIGC_HOME", str(home))
    return home


@pytest.fixture(scope="session", autouse=True)
def _one_thread():
    try:
        import torch
    except ImportError:
        return
    torch.set_num_threads(1)


@pytest.fixture(scope="session")
def served_ws(tmp_path_factory):
    """Tiny runs for the engine and server tests: "g" (gpt), "l" (lstm), "d" (diffusion)."""
    from helpers import train_served_workspace

    return train_served_workspace(tmp_path_factory.mktemp("served"))
