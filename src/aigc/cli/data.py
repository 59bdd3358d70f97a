"""`aigc ingest`, `aigc datasets`, `aigc show`."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from aigc.cli.common import JsonOpt, WorkspaceOpt, fmt, out
from aigc.cli.runs import show_run
from aigc.errors import InvalidInput, NotFound


def ingest(
    path: Annotated[Path, typer.Argument(help="A .txt, .csv, .tsv, .jsonl or .parquet file.", show_default=False)],
    name: Annotated[str, typer.Option("--name", "-n", help="Dataset name.", show_default=False)],
    lines: Annotated[bool, typer.Option("--lines", help="A .txt file holds one record per line.")] = False,
    text_column: Annotated[str | None, typer.Option("--text-column", help="Column with the text.")] = None,
    cond_column: Annotated[list[str] | None, typer.Option(
        "--cond-column", help="A condition column (repeatable), e.g. category, label.")] = None,
    encoding: Annotated[str | None, typer.Option(
        "--encoding", help="Force an encoding (utf-8, gb18030, gbk...) [default: detect].")] = None,
    normalize: Annotated[bool, typer.Option("--normalize/--no-normalize", help="Unicode NFKC normalization.")] = True,
    min_length: Annotated[int, typer.Option("--min-length", help="Drop records shorter than this (chars).")] = 1,
    max_length: Annotated[int | None, typer.Option("--max-length", help="Drop records longer than this.")] = None,
    split: Annotated[str, typer.Option("--split", help="train,val,test fractions.")] = "0.9,0.05,0.05",
    replace: Annotated[bool, typer.Option("--replace", help="Replace an existing dataset of this name.")] = False,
    workspace: WorkspaceOpt = None,
) -> None:
    """Clean, deduplicate and split a text source into a dataset with a card."""
    from aigc import ingest as api_ingest

    try:
        fractions = tuple(float(x) for x in split.split(","))
    except ValueError:
        fractions = ()
    if len(fractions) != 3:
        raise InvalidInput(f"--split expects three fractions like 0.9,0.05,0.05, got {split!r}")
    card = api_ingest(path, name, workspace=workspace, lines=lines, text_column=text_column,
                      cond_columns=cond_column or [], encoding=encoding, normalize=normalize,
                      min_length=min_length, max_length=max_length, split=fractions, replace=replace)
    c = card["counts"]
    out.print(f"dataset [bold]{name}[/bold]: {c['kept']} records kept of {c['read']} read "
              f"(train {c['train']}, val {c['val']}, test {c['test']}; dropped {c['dropped']})")
    for reason, count in card.get("dropped_by_reason", {}).items():
        out.print(f"  dropped {count}: {reason}")


def datasets(workspace: WorkspaceOpt = None, as_json: JsonOpt = False) -> None:
    """List datasets."""
    from aigc import open_workspace

    rows = open_workspace(workspace).list_datasets()
    if as_json:
        out.print_json(json.dumps(rows, ensure_ascii=False))
        return
    table = Table("name", "modality", "train", "val", "test", "created", "source")
    for r in rows:
        table.add_row(r["name"], r["modality"], str(r["n_train"]), str(r["n_val"]), str(r["n_test"]),
                      r["created_at"][:19], r["source"])
    out.print(table if rows else "no datasets yet: `aigc ingest PATH --name NAME`")


def show(
    name: Annotated[str, typer.Argument(help="A dataset or run name.", show_default=False)],
    workspace: WorkspaceOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Describe a dataset (its card) or a run (config, progress, evaluation)."""
    from aigc import open_workspace

    ws = open_workspace(workspace)
    if ws.has_run(name):
        row = ws.get_run(name)
        eval_path = Path(row["path"]) / "eval.json"
        if eval_path.exists():
            row["eval"] = json.loads(eval_path.read_text(encoding="utf-8"))
        if as_json:
            out.print_json(json.dumps(row, ensure_ascii=False, default=str))
            return
        show_run(row)
    elif ws.has_dataset(name):
        ds = ws.get_dataset(name)
        if as_json:
            out.print_json(json.dumps(ds["card"], ensure_ascii=False))
            return
        _show_card(ds)
    else:
        known = [r["name"] for r in ws.list_runs()] + [d["name"] for d in ws.list_datasets()]
        raise NotFound(f"no dataset or run named {name!r} (known: {', '.join(known) or 'none yet'})")


def _show_card(ds: dict) -> None:
    card = ds["card"]
    c = card["counts"]
    table = Table(show_header=False, title=f"dataset {ds['name']}")
    table.add_row("source", f"{card.get('source')} ({card.get('format')}, {card.get('encoding')})")
    table.add_row("records", f"{c['kept']} kept of {c['read']} (train {c['train']}, val {c['val']}, test {c['test']})")
    length = card.get("length", {})
    table.add_row("length (chars)", "  ".join(f"{k} {fmt(v, 0)}" for k, v in length.items()))
    table.add_row("scripts", ", ".join(f"{k} {v}" for k, v in card.get("scripts", {}).items()))
    for col, values in card.get("conditions", {}).items():
        table.add_row(f"condition {col}", ", ".join(f"{v} ({n})" for v, n in list(values.items())[:20]))
    for reason, n in card.get("dropped_by_reason", {}).items():
        table.add_row("dropped", f"{n}: {reason}")
    out.print(table)
