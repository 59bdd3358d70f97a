"""`aigc audit list|export|verify`: the hash-chained log of safety decisions."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from aigc.cli.common import JsonOpt, WorkspaceOpt, err, guard, out

audit_app = typer.Typer(help="The safety audit log: one hash-chained row per decision, never raw PII.",
                        no_args_is_help=True)


@audit_app.command("list")
@guard
def audit_list(
    path: Annotated[str | None, typer.Option(
        "--path", help="Only this path: ingest, train, prompt, output, log, moderation, generate, batch.",
        show_default=False)] = None,
    decision: Annotated[str | None, typer.Option(
        help="Only this decision: allow, flag, redact, block, error.", show_default=False)] = None,
    run: Annotated[str | None, typer.Option(help="Only this run.", show_default=False)] = None,
    since: Annotated[str | None, typer.Option(help="From this ISO date or time on (UTC unless it says).",
                                              show_default=False)] = None,
    until: Annotated[str | None, typer.Option(help="Before this ISO date or time.",
                                              show_default=False)] = None,
    limit: Annotated[int, typer.Option(help="At most this many rows, newest first.", min=1)] = 100,
    workspace: WorkspaceOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """List decisions, newest first."""
    from aigc import open_workspace
    from aigc.provenance.audit import list_entries

    rows = list_entries(open_workspace(workspace), path=path, decision=decision, run=run, since=since,
                        until=until, limit=limit)
    if as_json:
        out.print_json(json.dumps(rows, ensure_ascii=False))
        return
    table = Table("id", "time", "path", "decision", "run", "policy", "categories", "entities", "excerpt")
    for r in rows:
        entities = ", ".join(f"{k} {n}" for k, n in r["entity_counts"].items())
        table.add_row(str(r["id"]), r["created_at"][:19], r["path"], r["decision"], r["run"] or "-",
                      r["policy_version"], ", ".join(r["categories"]) or "-", entities or "-",
                      r["excerpt"][:60] + ("..." if len(r["excerpt"]) > 60 else ""))
    out.print(table)


@audit_app.command("export")
@guard
def audit_export(
    file: Annotated[Path, typer.Argument(
        help="Where to write: .jsonl or .csv (every row, hashes included).")],
    fmt: Annotated[str | None, typer.Option("--format", help="jsonl or csv [default: from the suffix].",
                                            show_default=False)] = None,
    workspace: WorkspaceOpt = None,
) -> None:
    """Export the whole log in chain order (atomic), so that a copy can be kept and verified elsewhere."""
    from aigc import open_workspace
    from aigc.provenance.audit import export

    n = export(open_workspace(workspace), file, fmt)
    out.print(f"exported {n} audit rows to {file}")


@audit_app.command("verify")
@guard
def audit_verify(workspace: WorkspaceOpt = None, as_json: JsonOpt = False) -> None:
    """Check the hash chain. Exit 0: intact; 1: broken (the first bad row and why, on one line)."""
    from aigc import open_workspace
    from aigc.provenance.audit import verify

    res = verify(open_workspace(workspace))
    if as_json:
        out.print_json(json.dumps(res.to_dict()))
    elif res.ok:
        out.print(f"audit chain intact: {res.rows} rows, head {res.head or '-'}")
    else:
        err.print(f"audit chain broken at row {res.first_bad_id}: {res.reason}")
    raise typer.Exit(0 if res.ok else 1)
