"""Synthesis: data sets similar to but independent of the real ones, and reports that say how
faithful, useful and private they are.

- :func:`synthesize` turns a run into a labelled synthetic data set: a table run into CSV, TSV,
  Parquet or JSONL rows (``synthesis.tables``), a text run into JSONL records with their conditions,
  near-copies of training text filtered out (``synthesis.text``), an image run into a folder of
  PNGs by class with a CSV (``synthesis.images``); ``ingest=NAME`` ingests the result back as a
  dataset.
- :func:`report` measures a run's synthetic data against its dataset's splits (fidelity, utility,
  privacy, each beside what a real holdout scores) and writes ``report.json`` and ``report.html``;
  :func:`report_files` does the same for any real and synthetic table files.

Orchestration above ``runs``: imports data, runs, metrics and safety; no surface imports it back.
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path
from typing import Any

from aigc.errors import InvalidInput


def run_modality(ws: Any, run: str) -> str:
    """What ``run`` makes: ``text`` for a run adapted from a pretrained base, else its spec's modality."""
    from aigc import runs

    spec = runs.read_spec(Path(ws.get_run(run)["path"]))  # an unknown run: the catalog's NotFound
    return "text" if spec.get("base") else spec.get("modality", "text")




def synthesize(ws: Any, run: str, n: int, out: str | Path, *, conditions: dict[str, Any] | None = None,
               seed: int = 0, constraints: list[dict[str, Any]] | None = None, ingest: str | None = None,
               progress=None) -> dict[str, Any]:
    """``n`` synthetic records of ``run`` written to ``out`` (a file for tables and text, a folder for
    images); with ``ingest``, also ingested back as a dataset of that name. Returns a summary."""
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise InvalidInput(f"n must be a whole number >= 1, got {n!r}")
    if n > 10_000_000:
        raise InvalidInput(f"n = {n:,} is more than 10,000,000 rows: write several files")
    out = Path(out)
    if ingest is not None:
        from aigc.workspace import check_name

        check_name(ingest, "dataset name")
        if ws.has_dataset(ingest):
            raise InvalidInput(f"dataset {ingest!r} already exists: pick another --ingest name")
    modality = run_modality(ws, run)
    if modality == "table":
        from aigc.synthesis.tables import synthesize_table

        summary = synthesize_table(ws, run, n, out, conditions=conditions, seed=seed, constraints=constraints,
                                   progress=progress)
    elif constraints:
        raise InvalidInput("constraints apply to table runs only")
    elif modality == "text":
        from aigc.synthesis.text import synthesize_text

        summary = synthesize_text(ws, run, n, out, conditions=conditions, seed=seed, progress=progress)
    else:
        from aigc.synthesis.images import synthesize_images

        summary = synthesize_images(ws, run, n, out, conditions=conditions, seed=seed, progress=progress)
    summary.setdefault("modality", modality)
    if ingest is not None:
        summary["ingested"] = ingest_back(ws, run, modality, out, ingest)
    return summary


def ingest_back(ws: Any, run: str, modality: str, out: Path, name: str) -> dict[str, Any]:
    """``out``, written by ``run``, ingested as dataset ``name``; a table keeps the run's column kinds."""
    from aigc import ingest as api_ingest
    from aigc import runs

    spec = runs.read_spec(ws.run_path(run))
    if modality == "table":  # the run's metadata: the synthetic set keeps the real set's kinds
        with tempfile.TemporaryDirectory() as tmp:
            meta = Path(tmp) / "metadata.json"
            meta.write_text(json.dumps(spec["metadata"], ensure_ascii=False), encoding="utf-8")
            card = api_ingest(out, name, workspace=ws, table=True, metadata=meta,
                              drop_columns=["aigc_label"])
    elif modality == "text":
        options: dict[str, Any] = {"text_column": "text"}
        if spec.get("cond_columns"):
            options["cond_columns"] = list(spec["cond_columns"])
        card = api_ingest(out, name, workspace=ws, **options)
    else:
        card = api_ingest(out, name, workspace=ws)
    return {"dataset": name, "counts": card.get("counts")}


def report(ws: Any, run: str, out_dir: str | Path | None = None, *, synth: str | Path | None = None,
           target: str | None = None, seed: int = 0) -> dict[str, Any]:
    """The report of ``run``'s synthetic data (``synth``: a file or folder it wrote; otherwise sampled
    now), written as ``report.json`` and ``report.html`` under ``out_dir`` when given."""
    modality = run_modality(ws, run)
    real = synth_frame = meta = None
    if modality == "table":
        from aigc import runs
        from aigc.data.tables import TableMetadata, read_table_split
        from aigc.synthesis.tables import REPORT_MAX_ROWS, read_synthetic, table_report

        spec = runs.read_spec(ws.run_path(run))
        meta = TableMetadata.from_dict(spec["metadata"])
        real = read_table_split(ws.dataset_path(spec["dataset"]), "train")
        if synth:
            synth_frame = read_synthetic(Path(synth))
        else:  # as many rows as the train split (up to the report's cap), sampled now
            synth_frame = runs.load(ws, run).sample(min(len(real), REPORT_MAX_ROWS), seed=seed)
        result = table_report(ws, run, synth_frame, target=target, seed=seed)
    elif modality == "text":
        from aigc.synthesis.text import text_report

        if synth is None:
            raise InvalidInput("a text run's report reads the JSONL that `aigc synthesize` wrote: pass --synth FILE")
        result = text_report(ws, run, Path(synth), seed=seed)
    else:
        from aigc.synthesis.images import image_report

        if synth is None:
            raise InvalidInput("an image run's report reads the folder that `aigc synthesize` wrote: pass --synth DIR")
        result = image_report(ws, run, Path(synth), seed=seed)
    result.setdefault("run", run)
    result.setdefault("modality", modality)
    if out_dir is not None:
        write_report(result, Path(out_dir), real, synth_frame, meta, title=f"Synthetic data report: {run}")
    return result


def report_files(real: str | Path, synth: str | Path, out_dir: str | Path | None = None, *,
                 holdout: str | Path | None = None, metadata: str | Path | None = None,
                 target: str | None = None, seed: int = 0) -> dict[str, Any]:
    """The report of any real and synthetic table files (and an optional real holdout file)."""
    from aigc.synthesis.tables import report_files as table_files

    result, real_frame, synth_frame, meta = table_files(Path(real), Path(synth),
                                                        holdout=Path(holdout) if holdout else None,
                                                        metadata=Path(metadata) if metadata else None,
                                                        target=target, seed=seed)
    if out_dir is not None:
        write_report(result, Path(out_dir), real_frame, synth_frame, meta,
                     title=f"Synthetic data report: {Path(synth).name} vs {Path(real).name}")
    return result


def write_report(result: dict[str, Any], out_dir: Path, real, synth, meta, title: str) -> None:
    """``report.json`` and ``report.html`` in ``out_dir`` (each written whole, then renamed)."""
    import os

    from aigc.synthesis.report_html import render

    out_dir.mkdir(parents=True, exist_ok=True)
    html = render(result, real, synth, meta, title)
    for name, text in (("report.json", json.dumps(_plain(result), ensure_ascii=False, indent=2)),
                       ("report.html", html)):
        tmp = out_dir / f".{name}.tmp"
        tmp.write_text(text, encoding="utf-8")
        os.replace(tmp, out_dir / name)
    result["files"] = {"json": str(out_dir / "report.json"), "html": str(out_dir / "report.html")}


def _plain(obj: Any) -> Any:
    """JSON-safe: numpy scalars and arrays as Python, tuple keys joined, NaN as None."""
    import math

    import numpy as np

    if isinstance(obj, dict):
        return {(" | ".join(map(str, k)) if isinstance(k, tuple) else str(k)): _plain(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_plain(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return _plain(obj.tolist())
    if isinstance(obj, np.generic):
        obj = obj.item()
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    return obj


def sample_table(ws: Any, run: str, n: int, *, seed: int = 0, conditions: dict[str, Any] | None = None,
                 constraints: list[dict[str, Any]] | None = None):
    """``n`` rows of a table run as a pandas frame of the stored table's columns (no file)."""
    from aigc import runs

    gen = runs.load(ws, run)
    if getattr(gen, "modality", None) != "table":
        raise InvalidInput(f"run {run!r} is not a table run: sample_table takes table runs")
    return gen.sample(n, conditions=conditions, seed=seed, constraints=constraints)
