"""`aigc db ...`: the catalog database: migrate it, describe it, copy it to another URL (PostgreSQL)."""

from __future__ import annotations

import json
import time
from typing import Annotated

import typer
from rich.table import Table

from aigc.cli.common import JsonOpt, RateProgress, WorkspaceOpt, guard, out

db_app = typer.Typer(help="The catalog database: migrate it, see what it holds, copy it to another URL "
                          "(e.g. from the workspace's SQLite file to PostgreSQL).", no_args_is_help=True)

DbUrlOpt = Annotated[
    str | None,
    typer.Option("--db-url", show_default=False,
                 help="The catalog's URL (default: $AIGC_DB_URL, else the workspace's catalog.db)."),
]


@db_app.command("migrate")
@guard
def migrate(workspace: WorkspaceOpt = None, db_url: DbUrlOpt = None) -> None:
    """Apply the migrations the catalog lacks (any command does so on opening it); print what was applied."""
    from aigc.catalog import mask
    from aigc.workspace import Workspace

    ws = Workspace(workspace, db_url=db_url)
    names = ws.applied_migrations()
    ws.engine.dispose()
    if ws.migrated:
        out.print(f"applied {', '.join(ws.migrated)} to {mask(ws.engine.url)}")
    else:
        out.print(f"{mask(ws.engine.url)} is up to date ({len(names)} migrations, the last {names[-1]})")


@db_app.command("info")
@guard
def info(workspace: WorkspaceOpt = None, db_url: DbUrlOpt = None, as_json: JsonOpt = False) -> None:
    """Dialect, URL (password masked), migrations and rows per table; changes nothing."""
    from aigc import catalog

    desc = catalog.describe(catalog.resolve_url(workspace, db_url))
    if as_json:
        out.print_json(json.dumps(desc))
        return
    pending = f"; pending: {', '.join(desc['pending'])}" if desc["pending"] else ""
    unknown = f"; unknown (a newer aigc-studio): {', '.join(desc['unknown'])}" if desc["unknown"] else ""
    out.print(f"{desc['dialect']}  {desc['url']}")
    out.print(f"{len(desc['migrations'])} migrations applied{pending}{unknown}")
    table = Table("table", "rows")
    for name, n in sorted(desc["tables"].items()):
        table.add_row(name, f"{n:,}")
    out.print(table)


@db_app.command("copy")
@guard
def copy(
    src: Annotated[str, typer.Argument(help="The catalog to copy, e.g. sqlite:///home/me/.aigc/catalog.db.")],
    dst: Annotated[str, typer.Argument(help="Where to, e.g. postgresql://aigc:PASSWORD@db-host:5432/aigc; "
                                            "its tables are created if missing.")],
    replace: Annotated[bool, typer.Option("--replace", help="Delete the rows the destination holds first "
                                                            "(otherwise it must be empty).")] = False,
    batch: Annotated[int, typer.Option(min=1, help="Rows per insert.")] = 2000,
) -> None:
    """Copy every table, ids kept, in one transaction on the destination: a failure leaves it as it was."""
    from aigc import catalog

    started = time.perf_counter()
    bars: dict[str, RateProgress] = {}

    def progress(table: str, done: int, total: int) -> None:
        if total > batch:  # a table of one batch is done before a rate means anything
            bars.setdefault(table, RateProgress(f"copy {table}", "rows"))(done, total)

    counts = catalog.copy(src, dst, replace=replace, batch=batch, progress=progress)
    elapsed = time.perf_counter() - started
    total = sum(counts.values())
    table = Table("table", "rows")
    for name, n in sorted(counts.items()):
        if n:
            table.add_row(name, f"{n:,}")
    out.print(table)
    src_shown, dst_shown = (catalog.mask(catalog.parse_url(u)) for u in (src, dst))
    out.print(f"copied {total:,} rows from {src_shown} to {dst_shown} in {elapsed:.1f} s "
              f"({total / max(elapsed, 1e-9):,.0f} rows/s)")
