"""`aigc synthesize` (a run -> a labelled synthetic data set) and `aigc report` (how faithful, useful
and private it is)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer

from aigc.batch import RECORDS_PER_SHARD, ROWS_PER_SHARD
from aigc.cli.common import JsonOpt, RateProgress, ThreadsOpt, WorkspaceOpt, fmt, out, parse_pairs, threads
from aigc.errors import InvalidInput


def _constraints(items: list[str] | None) -> list[dict[str, Any]]:
    """``age:0:120`` (a range; either end may be empty), ``start<=end``, ``a+b`` (fixed combinations)."""
    result = []
    for item in items or []:
        if "<=" in item:
            low, high = (s.strip() for s in item.split("<=", 1))
            result.append({"type": "inequality", "low": low, "high": high})
        elif item.count(":") == 2:
            column, low, high = (s.strip() for s in item.split(":"))
            try:
                bounds = [float(x) if x else None for x in (low, high)]
            except ValueError:
                raise InvalidInput(f"--constraint {item!r}: a range is COLUMN:LOW:HIGH with numbers") from None
            result.append({"type": "range", "column": column, "low": bounds[0], "high": bounds[1]})
        elif "+" in item:
            result.append({"type": "fixed_combinations", "columns": [s.strip() for s in item.split("+")]})
        else:
            raise InvalidInput(f"--constraint {item!r}: use COLUMN:LOW:HIGH, LOW_COLUMN<=HIGH_COLUMN or A+B")
    return result


def synthesize(
    run: Annotated[str, typer.Argument(help="Run name (see `aigc runs`): a table, text or image run.",
                                       show_default=False)],
    n: Annotated[int, typer.Option("--n", help="Rows (tables), records (text) or images to make.")] = 1000,
    out_path: Annotated[Path, typer.Option(
        "--out", "-o", help="Tables: .csv .tsv .parquet .jsonl; text: .jsonl; images: a folder.",
        show_default=False)] = ...,  # type: ignore[assignment]
    cond: Annotated[list[str] | None, typer.Option(
        "--cond", help="Condition COLUMN=VALUE (repeatable): every row gets it, e.g. income='>50K' to "
        "rebalance a minority class.", show_default=False)] = None,
    constraint: Annotated[list[str] | None, typer.Option(
        "--constraint", help="Tables: COLUMN:LOW:HIGH (a range), START<=END, or A+B (only combinations "
        "of A and B seen in train); repeatable. The dataset's own constraints always apply.",
        show_default=False)] = None,
    seed: Annotated[int, typer.Option("--seed")] = 0,
    ingest: Annotated[str | None, typer.Option("--ingest", help="Also ingest the result as a dataset of this name.",
                                               show_default=False)] = None,
    shard_size: Annotated[int | None, typer.Option(
        "--shard-size", min=1, help="Tables and text: make shards of this many rows or records, shard k with a seed "
        "of its own derived from --seed (the output then depends on --seed and --shard-size, not on where shards run); "
        "finished shards are kept, and a restarted job skips them.", show_default=False)] = None,
    workers: Annotated[int | None, typer.Option(
        "--workers", min=1, help="Sharded synthesis: workers, each loading the run once and running --threads torch "
        "threads (default 1 here); default 1 worker, with --ray one per CPU of the cluster.",
        show_default=False)] = None,
    ray: Annotated[str | None, typer.Option(
        "--ray", help="Tables and text: make the shards on a Ray cluster: auto, HOST:PORT of its head, or local "
        f"(started here); --shard-size defaults to {ROWS_PER_SHARD:,} rows or {RECORDS_PER_SHARD} records then.",
        show_default=False)] = None,
    restart: Annotated[bool, typer.Option("--restart", help="Sharded synthesis: discard the finished shards under "
                                          "OUT.parts and start over.")] = False,
    threads_: ThreadsOpt = None,
    workspace: WorkspaceOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Write a synthetic data set made by RUN, labelled as AI-generated."""
    import aigc

    from aigc.synthesis import run_modality

    ws = aigc.open_workspace(workspace)
    unit = {"table": "rows", "text": "records", "image": "images"}.get(run_modality(ws, run), "items")
    options = dict(conditions=parse_pairs(cond, "--cond") or None, constraints=_constraints(constraint) or None,
                   seed=seed, ingest=ingest, progress=RateProgress("synthesizing", unit))
    if shard_size is not None or ray is not None:
        from aigc.batch import synthesize_shards

        summary = synthesize_shards(ws, run, n, out_path, shard_size=shard_size, ray=ray, restart=restart,
                                    workers=workers if workers is not None or ray else 1, threads=threads_ or 1,
                                    **options)
    elif workers is not None or restart:
        raise InvalidInput("--workers and --restart apply to sharded synthesis (table and text runs): add "
                           "--shard-size N (rows or records per shard), or --ray")
    else:
        threads(threads_)
        summary = aigc.synthesize(run, n=n, out=out_path, workspace=ws, **options)
    if as_json:
        out.print_json(json.dumps(summary, ensure_ascii=False, default=str))
        return
    what = {"table": "rows", "text": "records", "image": "images"}.get(summary.get("modality"), "items")
    line = f"wrote {summary['n']:,} {what} to {summary['path']}"
    if summary.get("seconds") is not None:
        line += f" in {summary['seconds']:.1f} s"
    if summary.get("shards"):
        done = f", {summary['skipped_shards']} already done" if summary["skipped_shards"] else ""
        line += f" ({summary['shards']} shards{done}; {summary['workers']} worker(s), {summary['where']})"
    if summary.get("dropped_copies"):
        line += f" ({summary['dropped_copies']} near-copies of training records dropped and drawn again)"
    out.print(line)
    if summary.get("ingested"):
        c = summary["ingested"].get("counts") or {}
        out.print(f"ingested as dataset {summary['ingested']['dataset']}: {c.get('kept', '?')} kept "
                  f"(train {c.get('train', '?')}, val {c.get('val', '?')}, test {c.get('test', '?')})")


def report(
    run: Annotated[str | None, typer.Argument(help="Run name; or leave it out and give --real and --synth files.",
                                              show_default=False)] = None,
    out_dir: Annotated[Path | None, typer.Option("--out", "-o", help="Folder for report.json and report.html.",
                                                 show_default=False)] = None,
    synth: Annotated[Path | None, typer.Option(
        "--synth", help="The synthetic data (a file or, for images, a folder) [tables: sampled now].",
        show_default=False)] = None,
    real: Annotated[Path | None, typer.Option("--real", help="Without RUN: the real table file.",
                                              show_default=False)] = None,
    holdout: Annotated[Path | None, typer.Option(
        "--holdout", help="Without RUN: real rows the generator never saw (privacy and utility references).",
        show_default=False)] = None,
    metadata: Annotated[Path | None, typer.Option("--metadata", help="Without RUN: column kinds (ours or SDV's JSON).",
                                                  show_default=False)] = None,
    target: Annotated[str | None, typer.Option("--target", help="Tables: the column TSTR predicts.",
                                               show_default=False)] = None,
    seed: Annotated[int, typer.Option("--seed")] = 0,
    threads_: ThreadsOpt = None,
    workspace: WorkspaceOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Fidelity, utility and privacy of synthetic data, each beside what real holdout data scores."""
    import aigc

    threads(threads_)
    if run is None:
        if real is None or synth is None:
            raise InvalidInput("give a RUN, or --real FILE and --synth FILE to compare two tables")
        result = aigc.report_files(real, synth, out_dir, holdout=holdout, metadata=metadata, target=target, seed=seed)
    else:
        if real is not None or holdout is not None or metadata is not None:
            raise InvalidInput("--real, --holdout and --metadata compare files: leave out RUN, or drop them")
        result = aigc.report(run, out_dir, synth=synth, target=target, seed=seed, workspace=workspace)
    if as_json:
        out.print_json(json.dumps(result, ensure_ascii=False, default=str))
        return
    for line in summary_lines(result):
        out.print(line)
    if result.get("files"):
        out.print(f"wrote {result['files']['json']} and {result['files']['html']}")


def summary_lines(r: dict[str, Any]) -> list[str]:
    """The headline figures of a report, one per line: a table's, or each section of a text or image
    report's page as ``title: measure values; measure values`` (the header row names the columns)."""
    lines = []
    fid, uti, pri = r.get("fidelity", {}), r.get("utility", {}), r.get("privacy", {})
    if r.get("modality") == "table":
        q = fid.get("quality", {})
        ref = fid.get("reference", {})
        lines.append(f"fidelity: quality {fmt(q.get('score'))} (shapes {fmt(q.get('shapes'))} / trends "
                     f"{fmt(q.get('trends'))}; a real holdout {fmt(ref.get('quality'))}), detection "
                     f"{fmt(fid.get('detection'))}, validity {fmt(fid.get('diagnostic', {}).get('validity'))}")
        if "skipped" in uti:
            lines.append(f"utility: skipped ({uti['skipped']})")
        else:
            t, b = uti.get("tstr", {}), uti.get("trtr", {})
            lines.append(f"utility ({uti.get('target')}): TSTR AUC {fmt(t.get('auc'))} / macro-F1 "
                         f"{fmt(t.get('f1_macro'))}; TRTR {fmt(b.get('auc'))} / {fmt(b.get('f1_macro'))}")
        if "skipped" in pri:
            lines.append(f"privacy: skipped ({pri['skipped']})")
        else:
            lines.append(f"privacy: exact copies {fmt(_v(pri, 'exact_copy_rate'))} (holdout "
                         f"{fmt(_ref(pri, 'exact_copy_rate'))}), closer to train {fmt(_v(pri, 'closer_to_train'))} "
                         f"(0.5 = none), DCR overfitting protection {fmt(_v(pri, 'dcr_overfitting_protection'))}, "
                         f"MIA AUC {fmt(_v(pri, 'mia_auc'))}")
        return lines
    for section in r.get("sections", []):
        table = section.get("table") or []
        if not table:
            continue
        header, rows = table[0], table[1:]
        cells = "; ".join(" ".join(str(c) for c in row if str(c) != "") for row in rows)
        lines.append(f"{section['title']} ({' / '.join(str(h) for h in header)}): {cells}")
    return lines


def _v(d: dict, key: str) -> Any:
    """A privacy figure's value (``{"value", "reference"}``, see aigc.metrics.table.privacy)."""
    return (d.get(key) or {}).get("value")


def _ref(d: dict, key: str) -> Any:
    """What a real holdout scores for the same figure."""
    return (d.get(key) or {}).get("reference")
