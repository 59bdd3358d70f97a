"""`aigc base add|list|remove`: pretrained bases from local folders, GGUF files or bundled packages."""

from __future__ import annotations

import json
from typing import Annotated

import typer
from rich.table import Table

from aigc.cli.common import JsonOpt, WorkspaceOpt, err, guard, out

base_app = typer.Typer(help="Pretrained bases: local checkpoint folders, GGUF files, bundled models.",
                       no_args_is_help=True)


def _size(n: int | None) -> str:
    if n is None:
        return "-"
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1024 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return "-"


def _params(n: int | None) -> str:
    return "-" if n is None else f"{n / 1e6:.1f} M" if n < 1e9 else f"{n / 1e9:.2f} B"


@base_app.command("add")
@guard
def base_add(
    source: Annotated[str, typer.Argument(help="A checkpoint folder, a .gguf file, or a bundled base's name "
                                               "(see `aigc base list`).")],
    name: Annotated[str | None, typer.Option(help="Name to register it under [default: from the source].")] = None,
    accept_license: Annotated[bool, typer.Option("--accept-license",
                                                 help="Accept a bundled base's terms (Gemma's).")] = False,
    replace: Annotated[bool, typer.Option("--replace", help="Replace a base of the same name.")] = False,
    workspace: WorkspaceOpt = None,
) -> None:
    """Register a pretrained base. A GGUF is de-quantized once into the workspace; a folder stays where it is."""
    from aigc import open_workspace
    from aigc.pretrained.bases import add_base

    info = add_base(open_workspace(workspace), source, name, accept_license=accept_license, replace=replace,
                    progress=lambda msg: err.print(msg))
    out.print(f"added base {info.name}: {info.architecture}, {_params(info.params)} parameters, "
              f"context {info.context_length or '-'}, chat template {'yes' if info.chat_template else 'no'}")


@base_app.command("list")
@guard
def base_list(workspace: WorkspaceOpt = None, as_json: JsonOpt = False) -> None:
    """List bases: the registered ones, then bundled ones not added yet."""
    from aigc import open_workspace
    from aigc.pretrained.bases import list_bases

    rows = list_bases(open_workspace(workspace))
    if as_json:
        out.print_json(json.dumps(rows, ensure_ascii=False))
        return
    table = Table("name", "kind", "architecture", "params", "size", "context", "chat template", "licence", "status")
    for r in rows:
        chat = "-" if r["chat_template"] is None else "yes" if r["chat_template"] else "no"
        table.add_row(r["name"], r["kind"], r["architecture"] or "-", _params(r["params"]), _size(r["size_bytes"]),
                      str(r["context_length"] or "-"), chat, r["licence"] or "-", r["status"])
    out.print(table)


@base_app.command("remove")
@guard
def base_remove(name: Annotated[str, typer.Argument(help="The base's name.")], workspace: WorkspaceOpt = None) -> None:
    """Forget a base (a de-quantized copy in the workspace is deleted; your own folder never is)."""
    from aigc import open_workspace
    from aigc.pretrained.bases import remove_base

    remove_base(open_workspace(workspace), name)
    out.print(f"removed base {name}")
