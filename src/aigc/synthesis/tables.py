"""Synthetic tables: sample a table run into a labelled file, and report on any real/synthetic pair.

``synthesize_table`` writes CSV, TSV, Parquet or JSONL (by the extension), each with the AIGC
label (an ``aigc_label`` column in CSV/TSV/JSONL, the file's key-value metadata in Parquet).
``table_report`` measures a synthetic table against the run's train split (fidelity, utility,
privacy) with the test split as the holdout that says what a real sample of the same data scores.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from aigc.errors import InvalidInput

TABLE_SUFFIXES = (".csv", ".tsv", ".parquet", ".jsonl")
REPORT_MAX_ROWS = 50_000  # the report samples at most this many rows of train, holdout and synthetic


def check_out(out: Path) -> str:
    suffix = out.suffix.lower()
    if suffix not in TABLE_SUFFIXES:
        raise InvalidInput(f"--out {out.name}: a table run writes {', '.join(TABLE_SUFFIXES)}; pick one of those")
    if not out.parent.is_dir():
        raise InvalidInput(f"folder {out.parent} does not exist: create it or write somewhere else")
    return suffix


def write_table(frame: pd.DataFrame, out: Path, label: dict[str, Any]) -> Path:
    """``frame`` as ``out`` (atomic), labelled; JSON-unsafe cells (NaN, numpy types) made plain."""
    from aigc.provenance import labels

    suffix = check_out(out)
    if suffix == ".parquet":
        return labels.write_parquet(out, frame, label)
    rows = _records(frame)
    if suffix == ".jsonl":
        return labels.write_jsonl(out, rows, label)
    if suffix == ".csv":
        return labels.write_csv(out, rows, label, fieldnames=list(frame.columns))
    return _write_tsv(out, frame, label)


def _records(frame: pd.DataFrame) -> list[dict[str, Any]]:
    clean = frame.astype(object).where(frame.notna(), None)
    return [{k: (v.item() if hasattr(v, "item") else v) for k, v in row.items()}
            for row in clean.to_dict(orient="records")]


def _write_tsv(out: Path, frame: pd.DataFrame, label: dict[str, Any]) -> Path:
    import csv

    from aigc.provenance import annex, labels

    stamp = annex.dumps(label)

    def write(fh) -> None:
        w = csv.writer(fh, delimiter="\t", lineterminator="\n")
        w.writerow([*frame.columns, labels.JSON_FIELD])
        for row in _records(frame):
            w.writerow([("" if v is None else v) for v in row.values()] + [stamp])

    return labels._write_atomic(out, write)  # noqa: SLF001 - the module's one atomic writer


def synthesize_table(ws: Any, run: str, n: int, out: Path, *, conditions: dict[str, Any] | None = None,
                     seed: int = 0, constraints: list[dict[str, Any]] | None = None, progress=None) -> dict[str, Any]:
    from aigc import runs
    from aigc.provenance.labels import new_produce_id
    from aigc.safety.guard import guard_for

    check_out(out)
    gen = runs.load(ws, run)
    t0 = time.perf_counter()
    frame = gen.sample(n, conditions=conditions, seed=seed, constraints=constraints, progress=progress)
    seconds = time.perf_counter() - t0
    label = guard_for(ws).label(new_produce_id())
    write_table(frame, out, label)
    return {"run": run, "modality": "table", "path": str(out), "n": len(frame), "seconds": round(seconds, 2),
            "rows_per_s": round(len(frame) / max(seconds, 1e-9)), "conditions": conditions or {}}


def read_synthetic(path: Path) -> pd.DataFrame:
    """A synthetic table file as written here (or by anyone): the label column left out."""
    from aigc.data.tables import read_table
    from aigc.provenance.labels import JSON_FIELD

    frame = read_table(path)
    return frame.drop(columns=[JSON_FIELD], errors="ignore")


def table_report(ws: Any, run: str, synth: pd.DataFrame | Path | None = None, *, target: str | None = None,
                 seed: int = 0) -> dict[str, Any]:
    """Fidelity, utility and privacy of a table run's synthetic rows (sampled now when not given)."""
    from aigc import runs
    from aigc.data.tables import TableMetadata, read_table_split

    spec = runs.read_spec(ws.run_path(run))
    if spec.get("modality") != "table":
        raise InvalidInput(f"run {run!r} is a {spec.get('modality')} run: table_report takes table runs")
    ds = ws.dataset_path(spec["dataset"])
    meta = TableMetadata.from_dict(spec["metadata"])
    train = read_table_split(ds, "train")
    holdout = read_table_split(ds, "test")
    if len(holdout) == 0:
        holdout = read_table_split(ds, "val")
    if synth is None:
        synth = runs.load(ws, run).sample(min(len(train), REPORT_MAX_ROWS), seed=seed)
    elif not isinstance(synth, pd.DataFrame):
        synth = read_synthetic(Path(synth))
    report = compare(train, synth, holdout if len(holdout) else None, meta, target=target, seed=seed)
    report["run"] = run
    report["family"] = spec.get("family")
    summary = ws.get_run(run).get("summary") or {}
    if spec.get("model_config", {}).get("epsilon"):  # DP-SGD: the accountant's (epsilon, delta) of the run
        report["privacy"]["differential_privacy"] = {
            "target_epsilon": spec["model_config"]["epsilon"], "epsilon": summary.get("epsilon"),
            "delta": summary.get("delta")}
    return report


def compare(real: pd.DataFrame, synth: pd.DataFrame, holdout: pd.DataFrame | None, meta: Any, *,
            target: str | None = None, seed: int = 0) -> dict[str, Any]:
    """The report of ``synth`` against ``real`` (the generator's train rows) and ``holdout``."""
    from aigc.metrics import table as tm

    missing = [c.name for c in meta.modelled() if c.name not in synth.columns]
    if missing:
        raise InvalidInput(f"the synthetic table lacks column(s) {', '.join(missing)} of the real one")
    rng = np.random.default_rng(seed)
    real, synth = _cap(real, rng), _cap(synth, rng)
    holdout = _cap(holdout, rng) if holdout is not None else None
    t0 = time.perf_counter()
    fidelity = {"quality": tm.quality(real, synth, meta), "diagnostic": tm.diagnostic(real, synth, meta),
                "detection": tm.detection(real, synth, meta, seed=seed)}
    if holdout is not None:  # what a real sample of the same data scores: the reference
        fidelity["reference"] = {"quality": tm.quality(real, holdout, meta)["score"],
                                 "detection": tm.detection(real, holdout, meta, seed=seed)}
    target = target or getattr(meta, "target", None)
    if target and holdout is not None:
        utility = {"target": target, **tm.tstr(real, synth, holdout, meta, target, seed=seed)}
    else:
        why = "no holdout rows (the dataset's test and val splits are empty)" if holdout is None else \
            "no target column: pass --target COLUMN (or declare one in the metadata)"
        utility = {"skipped": why}
    privacy = (tm.privacy(real, synth, holdout, meta, seed=seed, quasi_identifiers=meta.quasi_identifiers or None)
               if holdout is not None else {"skipped": "no holdout rows to compare with"})
    privacy["pii_replayed"] = _pii_replay(real, synth, meta)
    return {"modality": "table", "rows": {"real": len(real), "synthetic": len(synth),
                                          "holdout": 0 if holdout is None else len(holdout)},
            "fidelity": fidelity, "utility": utility, "privacy": privacy,
            "seconds": round(time.perf_counter() - t0, 1)}


def _cap(frame: pd.DataFrame, rng: np.random.Generator) -> pd.DataFrame:
    if len(frame) <= REPORT_MAX_ROWS:
        return frame.reset_index(drop=True)
    return frame.iloc[np.sort(rng.choice(len(frame), REPORT_MAX_ROWS, replace=False))].reset_index(drop=True)


def _pii_replay(real: pd.DataFrame, synth: pd.DataFrame, meta: Any) -> dict[str, Any]:
    """Synthetic PII values equal to a stored one. PII columns are replaced by fakes at ingest and
    regenerated at sampling, never learned, so this stays 0 unless something leaks."""
    out = {}
    for col in meta.columns:
        if col.kind == "pii" and col.name in synth.columns and col.name in real.columns:
            seen = set(real[col.name].dropna().astype(str))
            out[col.name] = int(synth[col.name].dropna().astype(str).isin(seen).sum())
    return {"columns": out, "total": sum(out.values())}


def report_files(real: Path, synth: Path, *, holdout: Path | None = None, metadata: Path | None = None,
                 target: str | None = None, seed: int = 0) -> tuple[dict[str, Any], pd.DataFrame, pd.DataFrame, Any]:
    """The report of any real/synthetic pair of files (and an optional holdout file)."""
    from aigc.data.tables import infer_metadata, load_metadata_file, read_table

    real_frame = read_table(real)
    overrides = load_metadata_file(metadata, list(real_frame.columns)) if metadata else None
    meta = infer_metadata(real_frame, overrides=overrides)
    synth_frame = read_synthetic(synth)
    holdout_frame = read_synthetic(holdout) if holdout else None
    report = compare(real_frame, synth_frame, holdout_frame, meta, target=target, seed=seed)
    return report, real_frame, synth_frame, meta
