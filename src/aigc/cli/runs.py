"""`aigc runs` and the run half of `aigc show`."""

from __future__ import annotations

import json
from typing import Annotated

import typer
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


def push(
    names: Annotated[list[str], typer.Argument(help="Runs to push (datasets with --dataset).", show_default=False)],
    dataset: Annotated[bool, typer.Option("--dataset", help="The names are datasets, not runs.")] = False,
    workspace: WorkspaceOpt = None,
) -> None:
    """Commit runs or datasets to the artifact store ($AIGC_ARTIFACTS): one trained before the store
    was set, or whose upload at the end of training failed. Training, ingestion and evaluation push
    by themselves."""
    from aigc import open_workspace
    from aigc.errors import InvalidInput
    from aigc.workspace import ENV_ARTIFACTS

    ws = open_workspace(workspace)
    if ws.mirror is None:
        raise InvalidInput(f"no artifact store to push to: set ${ENV_ARTIFACTS}, e.g. s3://bucket/aigc")
    kind = "dataset" if dataset else "run"
    for name in names:  # every name checked before the first upload
        if dataset:
            ws.get_dataset(name)
        elif ws.get_run(name)["status"] == "running":
            raise InvalidInput(f"run {name!r} is training now: it is pushed when it ends")
    for name in names:
        manifest = ws.push_dataset(name) if dataset else ws.push_run(name)
        out.print(f"pushed {kind} {name}: version {manifest['version']}, {len(manifest['files'])} files")


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
