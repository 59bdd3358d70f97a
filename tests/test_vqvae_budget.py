"""A vqvae run's two stages (the autoencoder, then its gpt prior) share the one --time-budget."""

from __future__ import annotations

import json
from pathlib import Path

import aigc

from helpers import write_blocks_npz


def test_a_budgeted_vqvae_run_splits_its_budget_between_its_stages(tmp_path):
    ws = aigc.open_workspace(tmp_path / "ws")
    aigc.ingest(write_blocks_npz(tmp_path / "blocks.npz"), "blocks", workspace=ws)
    budget = 4.0
    row = aigc.train("blocks", family="vqvae", preset="tiny", name="vq", workspace=ws, time_budget=budget,
                     eval_every=10**6, batch_size=8, seed=0)
    spec = json.loads((Path(row["path"]) / "run.json").read_text())
    first = row["summary"]["elapsed_s"]
    prior_budget = spec["prior"]["train_config"]["time_budget"]
    assert row["summary"]["stop_reason"] == "time_budget" and spec["prior"]["stop_reason"] == "time_budget"
    assert first <= budget * 0.5 + 0.5  # the autoencoder's share, give or take one step
    assert abs(first + prior_budget - budget) < 0.2  # the prior gets what is left, not the budget again
