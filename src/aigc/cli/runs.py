"""`aigc runs` and the run half of `aigc show`."""

from __future__ import annotations

import json

from rich.table import Table

from aigc.cli.common import JsonOpt, WorkspaceOpt, fmt, out


def runs(workspace: WorkspaceOpt = None, as_json: JsonOpt = False) -> None:
    """List training runs."""
    from aigc import open_workspace

    rows = open_workspace(workspace).list_runs()
    if as_json:
        out.print_json(json.dumps(rows, ensure_ascii=False))
        return
    table = Table("name", "family", "dataset", "status", "step", "best val loss", "updated")
    for r in rows:
        table.add_row(r["name"], r["family"], r["dataset"], r["status"], str(r["step"]),
                      fmt(r["best_val_loss"], 4), r["updated_at"][:19])
    out.print(table if rows else "no runs yet: `aigc train DATASET`")


def show_run(row: dict) -> None:
    table = Table(show_header=False, title=f"run {row['name']}")
    for key in ("family", "dataset", "status", "step", "best_val_loss", "created_at", "updated_at"):
        table.add_row(key, fmt(row[key], 4))
    table.add_row("model", ", ".join(f"{k}={v}" for k, v in row["config"]["model"].items()))
    table.add_row("training", ", ".join(f"{k}={v}" for k, v in row["config"]["train"].items()))
    for key, value in row["summary"].items():
        if key != "eval":
            table.add_row(key, fmt(value, 4))
    for key, value in row["summary"].get("eval", {}).items():
        table.add_row(f"eval {key}", fmt(value, 4))
    out.print(table)
