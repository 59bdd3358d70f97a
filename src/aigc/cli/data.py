"""`aigc ingest`, `aigc datasets`, `aigc show`."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from aigc.cli.common import JsonOpt, WorkspaceOpt, err, fmt, hms, on_command_line, out
from aigc.cli.runs import show_run
from aigc.errors import InvalidInput, NotFound


def ingest(
    ctx: typer.Context,
    name: Annotated[str, typer.Option("--name", "-n", help="Dataset name.", show_default=False)],
    path: Annotated[Path | None, typer.Argument(
        help="A text file (.txt .csv .tsv .jsonl .parquet), a table (.csv .tsv .dat .parquet .jsonl .xlsx with "
             "no text column), images: a folder (one subfolder per class), an IDX file (MNIST format, raw or "
             ".gz), an .npz (x, y) or a .csv of image paths; audio clips: a folder of .wav .flac .ogg .mp3 (one "
             "subfolder per class) or a .csv of clip paths; or music: MIDI files or music21:bach (or --music21 bach).",
        show_default=False)] = None,
    lines: Annotated[bool, typer.Option("--lines", help="A .txt file holds one record per line.")] = False,
    text_column: Annotated[str | None, typer.Option("--text-column", help="Column with the text.")] = None,
    header: Annotated[bool | None, typer.Option(
        "--header/--no-header", help="CSV/TSV: the first row names the columns. Without one, columns are "
        "named 1, 2, 3... as `cut -f` counts them [default: a header, unless --columns; tables: detected].",
        show_default=False)] = None,
    columns: Annotated[str | None, typer.Option(
        "--columns", help="CSV/TSV: name the columns, e.g. title,author,poem (the first row is then data, "
        "unless --header).", show_default=False)] = None,
    cond_column: Annotated[list[str] | None, typer.Option(
        "--cond-column", help="A condition column (repeatable), e.g. category, label.")] = None,
    encoding: Annotated[str | None, typer.Option(
        "--encoding", help="Force an encoding (utf-8, gb18030, gbk...) [default: detect].")] = None,
    normalize: Annotated[bool, typer.Option("--normalize/--no-normalize", help="Unicode NFKC normalization.")] = True,
    min_length: Annotated[int, typer.Option("--min-length", help="Drop records shorter than this (chars).")] = 1,
    max_length: Annotated[int | None, typer.Option("--max-length", help="Drop records longer than this.")] = None,
    min_cond_count: Annotated[int, typer.Option(
        "--min-cond-count",
        help="Condition values with fewer train records share one 'other' token per column.")] = 2,
    labels: Annotated[Path | None, typer.Option(
        "--labels", help="Images: the IDX label file for an IDX image file.", show_default=False)] = None,
    image_size: Annotated[int | None, typer.Option(
        "--image-size", help="Images: resize to SIZE x SIZE (see --resize). Without it, all must share one size. "
        "Audio: the side of the square spectrogram images [default: 64].",
        show_default=False)] = None,
    channels: Annotated[int | None, typer.Option(
        "--channels", help="Images: 1 (greyscale) or 3 (RGB). Default: 1 if every image is grey, else 3.",
        show_default=False)] = None,
    resize: Annotated[str | None, typer.Option(
        "--resize", help="Images: crop (centre crop, the default) or pad (letterbox) to --image-size.",
        show_default=False)] = None,
    strict: Annotated[bool, typer.Option(
        "--strict", help="Images, audio: fail on the first unreadable file instead of skipping it.")] = False,
    sample_rate: Annotated[int | None, typer.Option(
        "--sample-rate", help="Audio: resample every clip to this rate in Hz [default: 16000].",
        show_default=False)] = None,
    seconds: Annotated[float | None, typer.Option(
        "--seconds", help="Audio: cut or pad every clip to this length, centred [default: 1.0].",
        show_default=False)] = None,
    silence_db: Annotated[float | None, typer.Option(
        "--silence-db", help="Audio: trim leading and trailing frames this many dB below the clip's loudest "
        "[default: 40; 0 keeps clips whole].", show_default=False)] = None,
    path_column: Annotated[str | None, typer.Option(
        "--path-column", help="CSV of images: the column of paths. Default: path, image or file.",
        show_default=False)] = None,
    label_column: Annotated[str | None, typer.Option(
        "--label-column", help="CSV of images: the column of class labels. Default: label, if present.",
        show_default=False)] = None,
    table: Annotated[bool, typer.Option(
        "--table", help="Read the file as a table whatever its columns or extension.")] = False,
    metadata: Annotated[Path | None, typer.Option(
        "--metadata", help="Tables: column kinds, keys and constraints to use (JSON: ours, as in the card's "
        "metadata, partial is fine; or SDV's metadata JSON).", show_default=False)] = None,
    drop_column: Annotated[list[str] | None, typer.Option(
        "--drop-column", help="Tables: leave this column out (repeatable).", show_default=False)] = None,
    music21: Annotated[str | None, typer.Option(
        "--music21", help="Music: a corpus bundled with music21 instead of PATH, e.g. bach (the chorales).",
        show_default=False)] = None,
    max_tokens: Annotated[int | None, typer.Option(
        "--max-tokens", help="Music: cut pieces into chunks of at most this many REMI tokens, at bars.",
        show_default=False)] = None,
    limit: Annotated[int | None, typer.Option(
        "--limit", help="Music: take the first N pieces (of a corpus or a folder).", show_default=False)] = None,
    folder_condition: Annotated[str | None, typer.Option(
        "--folder-condition", help="Music: the condition a first-level subfolder names [default: composer].",
        show_default=False)] = None,
    split: Annotated[str, typer.Option("--split", help="train,val,test fractions.")] = "0.9,0.05,0.05",
    pii: Annotated[str | None, typer.Option(
        "--pii", help="Personal information in the text: report (count it), redact (replace it, e.g. "
                      "<CN_MOBILE>), drop (leave out its records) [default: the policy's ingest.pii].",
        show_default=False)] = None,
    replace: Annotated[bool, typer.Option("--replace", help="Replace an existing dataset of this name.")] = False,
    workspace: WorkspaceOpt = None,
) -> None:
    """Clean, deduplicate and split a text, table or image source into a dataset with a card."""
    from aigc import ingest as api_ingest

    try:
        fractions = tuple(float(x) for x in split.split(","))
    except ValueError:
        fractions = ()
    if len(fractions) != 3:
        raise InvalidInput(f"--split expects three fractions like 0.9,0.05,0.05, got {split!r}")
    # Only the options given on the command line go to the API, which picks text or image
    # ingestion from the path and refuses options of the other kind.
    given = {
        "lines": lines, "text_column": text_column, "cond_columns": cond_column, "encoding": encoding,
        "header": header, "columns": columns, "min_cond_count": min_cond_count,
        "normalize": normalize, "min_length": min_length, "max_length": max_length,
        "labels": labels, "image_size": image_size, "channels": channels, "resize": resize, "strict": strict,
        "path_column": path_column, "label_column": label_column, "pii": pii,
        "sample_rate": sample_rate, "seconds": seconds, "silence_db": silence_db,
        "table": table, "metadata": metadata, "drop_columns": drop_column,
        "music21": music21, "max_tokens": max_tokens, "limit": limit, "folder_condition": folder_condition,
    }
    if (path is None) == (music21 is None):
        raise InvalidInput("give a PATH to ingest, or --music21 NAME for a corpus bundled with music21 (not both)"
                           if path is not None else "missing PATH: give a file or folder to ingest, or --music21 NAME")
    flag = {"cond_columns": "cond_column", "drop_columns": "drop_column"}
    options = {k: v for k, v in given.items() if on_command_line(ctx, flag.get(k, k))}
    options["progress"] = RowProgress()
    card = api_ingest(path, name, workspace=workspace, split=fractions, replace=replace, **options)
    c = card["counts"]
    if card.get("modality") == "table":
        _print_table_ingest(name, card)
        return
    if card.get("modality") == "audio":
        a, classes = card["audio"], card["classes"]
        out.print(f"dataset {name}: {c['kept']} clips kept of {c['read']} read "
                  f"(train {c['train']}, val {c['val']}, test {c['test']}; dropped {c['dropped']})")
        out.print(f"  {a['seconds']:g} s at {a['sample_rate']} Hz, spectrograms {card['image_size'][0]}x"
                  f"{card['image_size'][1]}; " + (f"{len(classes)} classes" if classes else "unlabelled"))
    elif card.get("modality") == "image":
        h, w = card["image_size"]
        classes = card["classes"]
        out.print(f"dataset {name}: {c['kept']} images kept of {c['read']} read "
                  f"(train {c['train']}, val {c['val']}, test {c['test']}; dropped {c['dropped']})")
        shown = ", ".join(classes[:20]) + (f" ... ({len(classes) - 20} more)" if len(classes) > 20 else "")
        out.print(f"  {w}x{h}, {card['channels']} channel{'s' if card['channels'] > 1 else ''}, "
                  + (f"{len(classes)} classes: {shown}" if classes else "unlabelled"))
    else:
        out.print(f"dataset {name}: {c['kept']} records kept of {c['read']} read "
                  f"(train {c['train']}, val {c['val']}, test {c['test']}; dropped {c['dropped']})")
    for reason, count in card.get("dropped_by_reason", {}).items():
        out.print(f"  dropped {count}: {reason}")
    if found := card.get("pii", {}).get("entities"):
        what = ", ".join(f"{t} {n}" for t, n in found.items())
        done = {"report": "left as they are (--pii redact replaces them)", "redact": "redacted",
                "drop": "records dropped"}[card["pii"]["mode"]]
        out.print(f"  personal information: {what}: {done}")
    for col, st in card.get("condition_stats", {}).items():
        out.print(f"  condition {col}: {_condition_summary(st)}")
    if card.get("modality") not in ("image", "audio") and "val" in card.get("empty_splits", []):
        out.print("  note: the val split is empty, and training needs one: add records or raise the val "
                  "fraction (--split)")


def _print_table_ingest(name: str, card: dict) -> None:
    c = card["counts"]
    n_dup = c["duplicates"]
    dupes = f", {n_dup} duplicate{'s' if n_dup != 1 else ''} dropped" if n_dup else ""
    out.print(f"dataset {name}: {c['kept']} rows kept of {c['read']} read{dupes} "
              f"(train {c['train']}, val {c['val']}, test {c['test']})")
    label = {"id": "id (regenerated)", "pii": "pii (replaced)", "text": "text (not learned)"}
    for kind, cols in card["kinds"].items():
        out.print(f"  {label.get(kind, kind)}: {', '.join(cols)}", markup=False, soft_wrap=True)
    if card["dropped_columns"]:
        out.print(f"  dropped columns: {', '.join(card['dropped_columns'])}", markup=False, soft_wrap=True)
    if n := card["counts"]["dropped"] - c["duplicates"]:
        out.print(f"  dropped {n} rows: personal information in a text column (--pii drop)")
    if empty := card["empty_splits"]:
        are = "splits are" if len(empty) > 1 else "split is"
        out.print(f"  note: the {' and '.join(empty)} {are} empty (--split)")


def _table_columns(card: dict) -> Table:
    """One row per column: kind, missing share, and its range or top categories."""
    from rich.markup import escape

    from aigc.data.table_sources import format_date

    table = Table("column", "kind", "missing", "range / top values", "why", title="columns")
    for col in card["metadata"]["columns"]:
        kind = col["kind"]
        if kind == "datetime":
            shown = " .. ".join(format_date(col[k], col["datetime_format"]) for k in ("min", "max"))
        elif "min" in col and kind in ("continuous", "discrete", "id"):
            shown = " .. ".join(fmt(col[k], col.get("decimals") or 0) for k in ("min", "max"))
        elif col.get("categories"):
            cats = list(col["categories"].items())
            more = f" ... {len(cats)} values" if len(cats) > 5 else ""
            shown = ", ".join(f"{v} ({n})" for v, n in cats[:5]) + more
        else:
            shown = col.get("entity") or ""
        table.add_row(escape(col["name"]), kind, f"{100 * col.get('missing', 0):.1f}%", escape(shown),
                      escape(col.get("reason") or ""))
    return table


class RowProgress:
    """A stage of ingestion in rows/s with an ETA, on stderr, when it takes more than a moment."""

    def __init__(self, every_s: float = 2.0):
        import time

        self._clock = time.perf_counter
        self.start = self.last = self._clock()
        self.every_s = every_s

    def __call__(self, stage: str, done: int, total: int) -> None:
        now = self._clock()
        if now - self.last < self.every_s:
            return
        self.last = now
        elapsed = now - self.start
        rate = done / max(elapsed, 1e-9)
        eta = (total - done) / rate if rate else float("inf")
        what = {"pii": "scanning for personal information"}.get(stage, stage)
        err.print(f"{what}: {done:,}/{total:,} records, {rate:,.0f} rows/s, ETA {hms(eta)}")


def _condition_summary(st: dict) -> str:
    return (f"{st['cardinality']} values, {st['own_token']} with a token of their own; {st['other_values']} "
            f"rarer or unseen in train share 'other' ({st['other_records']} records)")


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
    table.add_row("source", f"{card.get('source')} ({card.get('format')}" + (f", {card['encoding']})" if card.get("encoding") else ")"))
    unit = {"image": "images", "table": "rows", "audio": "clips"}.get(card.get("modality"), "records")
    table.add_row(unit, f"{c['kept']} kept of {c['read']} (train {c['train']}, val {c['val']}, test {c['test']})")
    if unit == "clips":
        a, d = card["audio"], card["durations"]["before_trim"]
        table.add_row("length", f"{a['seconds']:g} s at {a['sample_rate']} Hz (files: {d['min']:g} .. "
                               f"{d['max']:g} s, median {d['median']:g})")
        table.add_row("found", "; ".join(f"{k} {v}" for k, v in card["found"].items()))
        train_counts = card.get("class_counts", {}).get("train", {})
        table.add_row("classes", ", ".join(f"{k} ({train_counts.get(k, 0)})" for k in card["classes"]) or "unlabelled")
        table.add_row("preview", str(Path(ds["path"]) / "preview.png"))
    elif unit == "images":
        h, w = card["image_size"]
        table.add_row("size", f"{w}x{h}, {card['channels']} channel(s), resize {card.get('resize') or 'none'}")
        train_counts = card.get("class_counts", {}).get("train", {})
        table.add_row("classes", ", ".join(f"{k} ({train_counts.get(k, 0)})" for k in card["classes"]) or "unlabelled")
        table.add_row("preview", str(Path(ds["path"]) / "preview.png"))
    elif unit == "rows":
        meta = card["metadata"]
        table.add_row("kinds", "; ".join(f"{k}: {len(v)}" for k, v in card["kinds"].items()))
        for key in ("primary_key", "target"):
            if meta.get(key):
                table.add_row(key.replace("_", " "), meta[key])
        if card["dropped_columns"]:
            table.add_row("dropped columns", ", ".join(card["dropped_columns"]))
        if card.get("text_columns"):
            table.add_row("text", card["text_columns"]["note"])
    else:
        length = card.get("length", {})
        table.add_row("length (chars)", "  ".join(f"{k} {fmt(v, 0)}" for k, v in length.items()))
        table.add_row("scripts", ", ".join(f"{k} {v}" for k, v in card.get("scripts", {}).items()))
    for col, values in card.get("conditions", {}).items():
        table.add_row(f"condition {col}", ", ".join(f"{v} ({n})" for v, n in list(values.items())[:20]))
        if col in card.get("condition_stats", {}):
            table.add_row("", _condition_summary(card["condition_stats"][col]))
    for reason, n in card.get("dropped_by_reason", {}).items():
        table.add_row("dropped", f"{n}: {reason}")
    out.print(table)
    if unit == "rows":
        out.print(_table_columns(card))
