"""Table synthesis on adult: our families against SDV, arfpy and two reference rows (issue 14).

One invocation, every contestant on the same data and the same wall budget:

* data: ../shared/data/adult/adult.csv (32,561 rows, 15 columns; values read as written, a "?"
  is a category like any other), split 80/20 with seed 0: train 26,048 rows, holdout 6,513. Every
  contestant learns from the same train rows and writes len(train) synthetic rows; ``income`` is
  the TSTR target.
* contestants, each in its own subprocess (peak memory is that process's ``ru_maxrss``; torch,
  OpenMP and BLAS at 2 threads, arfpy's forests at ``n_jobs=2``, the same for everyone):
  - ``holdout``: the real holdout rows as if synthetic, the reference a generator cannot beat;
  - ``floor``: every column sampled independently from its train marginal (no dependence at all);
  - ``sdv-copula``, ``sdv-ctgan``, ``sdv-tvae``: SDV 2.0.0's GaussianCopulaSynthesizer,
    CTGANSynthesizer and TVAESynthesizer with their defaults (CPU); they have no time option, so
    the CTGAN/TVAE epochs are set to fit the budget: a fit of 1 and one of 3 epochs are timed
    first (their seconds are reported apart, not in "fit"), or given with ``--epochs``. Each SDV
    process first fits 1,000 rows once, untimed: a process's first fit pays lazy imports and the
    start of ctgan's joblib process pool (which uses every core: ctgan's own n_jobs=-1);
  - ``arf``: arfpy 0.1.1's adversarial random forest with its defaults (30 trees, at most 10
    rounds, early stop; ``forde`` truncated normals), no time option either. Its raw rows hold
    values outside the real range (negative ages) and fractions in integer columns: the row
    ``arf`` is rounded and clipped to the train range, ``arf-raw`` is as it came out;
  - ours, ``copula``, ``ctgan``, ``tvae``, ``tabgpt``, through the product's own path:
    ``aigc.ingest`` of the train rows into a temporary workspace with split (0.95, 0.05, 0): the 5 %
    validation rows serve the training loop's best-weights choice and early stop, so our
    families learn from 95 % of the train rows; ``runs.train(..., preset="small",
    train_overrides={"time_budget": budget})``; ``aigc.synthesis.sample_table`` for the rows.
* metrics, on each contestant's rows against train and holdout, all from ``aigc.metrics.table``
  (the product's report, checked against sdmetrics in its tests) on adult's metadata written out
  here: quality (column shapes / column-pair trends, SDMetrics' QualityReport), detection
  (logistic), TSTR AUC and macro-F1 against TRTR (a fixed HistGradientBoosting tested on the
  holdout; the holdout row shows TRTR, as a model cannot be tested on its own training rows),
  closer to train (share of synthetic rows nearer a train row than a holdout row, equal-size
  train subsample: 50 % = no copying), DCR overfitting and baseline protection, exact-copy rate
  (the holdout's is the reference), validity (rows with every value inside the train range and
  known categories), fit and sample seconds, peak memory; nndr and the membership attack's AUC
  in the JSON.

Targets (issue 14): our best family at quality >= 0.97, TSTR AUC >= 0.91, macro-F1 >= 0.79, at
most 52.5 % closer to train, validity 1.0, no more exact copies than the holdout, fit <= 300 s,
sample <= 10 s; our ctgan at least SDV CTGAN's quality in half its fit time.

    python benchmarks/synthesis.py [--budget 300] [--families NAME ...] [--epochs sdv-ctgan=70,...]
                                   [--quick] [--calibrate sdv-ctgan sdv-tvae]

``--families`` takes contestant names and the groups ``ours``, ``peers``, ``refs``; ``--quick``
is a smoke run (10 s budget, 2,000 train and 500 holdout rows, SDV CTGAN / TVAE at 5 epochs with
no warm-up or epoch timing). ``--calibrate`` only times one epoch of the named SDV synthesizers
on the train split and exits. Prints a table and writes benchmarks/results/synthesis.json
(synthesis_quick.json with --quick).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import write_result  # noqa: E402

HERE = Path(__file__).resolve().parent
DATA = HERE.parents[1] / "shared" / "data" / "adult" / "adult.csv"
DATA_SHOWN = "../shared/data/adult/adult.csv"  # as the JSON names it: relative to the repository
TARGET = "income"
SEED = 0
THREADS = 2
THREAD_VARS = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS", "AIGC_THREADS")
QUICK_ROWS, QUICK_HOLDOUT, QUICK_BUDGET = 2000, 500, 10.0
QUICK_EPOCHS = 5  # --quick: SDV CTGAN / TVAE epochs, without the warm-up and the epoch timing

REFS = ("holdout", "floor")
PEERS = ("sdv-copula", "sdv-ctgan", "sdv-tvae", "arf")
OURS = ("copula", "ctgan", "tvae", "tabgpt", "ctgan-half")  # ctgan-half: our ctgan at half the budget
LABELS = {"holdout": "real holdout", "floor": "independent marginals (floor)",
          "sdv-copula": "SDV GaussianCopula", "sdv-ctgan": "SDV CTGAN", "sdv-tvae": "SDV TVAE",
          "arf": "arfpy ARF, rounded and clipped", "arf-raw": "arfpy ARF, raw",
          "copula": "aigc copula", "ctgan": "aigc ctgan", "tvae": "aigc tvae", "tabgpt": "aigc tabgpt",
          "ctgan-half": "aigc ctgan, half the budget"}


# --------------------------------------------------------------------------------------------
# Data: the one split every contestant sees
# --------------------------------------------------------------------------------------------

def load_split(quick: bool) -> tuple[pd.DataFrame, pd.DataFrame]:
    frame = pd.read_csv(DATA, skipinitialspace=True)  # the file writes ", State-gov"
    order = np.random.default_rng(SEED).permutation(len(frame))
    n_train = int(0.8 * len(frame))
    train = frame.iloc[order[:n_train]].reset_index(drop=True)
    holdout = frame.iloc[order[n_train:]].reset_index(drop=True)
    if quick:
        train = train.sample(QUICK_ROWS, random_state=SEED).reset_index(drop=True)
        holdout = holdout.sample(QUICK_HOLDOUT, random_state=SEED).reset_index(drop=True)
    return train, holdout


def numeric_columns(frame: pd.DataFrame) -> list[str]:
    return [c for c in frame.columns if pd.api.types.is_numeric_dtype(frame[c])]


def align(synth: pd.DataFrame, train: pd.DataFrame) -> tuple[pd.DataFrame, list[str]]:
    """``synth`` with train's columns and types: numbers as numbers, categories as str (NaN kept)."""
    missing = [c for c in train.columns if c not in synth.columns]
    if missing:
        raise ValueError(f"synthetic rows lack column(s) {missing}")
    out, notes, numeric = synth[list(train.columns)].copy(), [], set(numeric_columns(train))
    for c in train.columns:
        if c in numeric:
            out[c] = pd.to_numeric(out[c], errors="coerce").astype(float)
        else:
            values = out[c].astype(object).where(out[c].notna(), None)
            out[c] = values.map(lambda v: v if v is None else str(v))
            # A product that reads adult's "?" as missing gives it back as missing: the same value.
            if out[c].isna().any() and not train[c].isna().any() and (train[c] == "?").any():
                notes.append(f"{c}: {int(out[c].isna().sum())} missing values written back as '?'")
                out[c] = out[c].fillna("?")
    return out.reset_index(drop=True), notes


# --------------------------------------------------------------------------------------------
# Contestants: fit(train, n, budget, options) -> (synthetic frames by row name, record)
# each runs in a worker subprocess (see main); the record says what was fitted and how long
# --------------------------------------------------------------------------------------------

def fit_floor(train: pd.DataFrame, n: int, budget: float, options: dict):
    rng = np.random.default_rng(SEED)
    t0 = time.perf_counter()
    synth = pd.DataFrame({c: train[c].to_numpy()[rng.integers(0, len(train), n)] for c in train.columns})
    return {"floor": synth}, {"fit_s": 0.0, "sample_s": time.perf_counter() - t0,
                              "settings": "each column drawn independently from its train values"}


def sdv_metadata(train: pd.DataFrame):
    from sdv.metadata import Metadata

    numeric = set(numeric_columns(train))  # SDV 2 reads integer-ness from the data (enforce_rounding)
    columns = {c: {"sdtype": "numerical" if c in numeric else "categorical"} for c in train.columns}
    return Metadata.load_from_dict({"tables": {"adult": {"columns": columns}}})


def _sdv_synthesizer(name: str, train: pd.DataFrame, epochs: int | None):
    from sdv.single_table import CTGANSynthesizer, GaussianCopulaSynthesizer, TVAESynthesizer

    meta = sdv_metadata(train)
    if name == "sdv-copula":
        return GaussianCopulaSynthesizer(meta)
    cls = CTGANSynthesizer if name == "sdv-ctgan" else TVAESynthesizer
    return cls(meta, epochs=epochs, enable_gpu=False)


def _timed_fit(name: str, train: pd.DataFrame, epochs: int | None):
    import torch

    torch.manual_seed(SEED)
    np.random.seed(SEED)
    model = _sdv_synthesizer(name, train, epochs)
    t0, c0 = time.perf_counter(), time.process_time()
    model.fit({"adult": train})  # SDV 2 takes and gives {table name: frame}
    return model, time.perf_counter() - t0, time.process_time() - c0


def warm_up(name: str, train: pd.DataFrame) -> float:
    """One untimed fit of 1 epoch on 1,000 rows. A process's first fit pays lazy imports and, from
    500 rows on, the start of ctgan's joblib process pool (its DataTransformer.transform runs
    Parallel(n_jobs=-1)): 9 s of a 17.5 s first fit, against 8.1 s for the next ones."""
    t0 = time.perf_counter()
    _timed_fit(name, train.head(1000), None if name == "sdv-copula" else 1)
    return round(time.perf_counter() - t0, 1)


def calibrate(name: str, train: pd.DataFrame) -> dict:
    """Seconds per epoch and fixed overhead (preprocessing) from fits of 1 and 3 epochs (warm process)."""
    _, t1, cpu1 = _timed_fit(name, train, 1)
    _, t3, cpu3 = _timed_fit(name, train, 3)
    # Wall seconds on a busy machine are noisy (a 1-epoch fit was once slower than a 3-epoch one):
    # then all of t3 is taken as epochs (no overhead), which errs towards fewer epochs, never past
    # the budget. The process's CPU seconds (its own threads) are recorded beside, less load-bound.
    per_epoch = (t3 - t1) / 2 if t3 > t1 else t3 / 3
    return {"fit_1_epoch_s": round(t1, 2), "fit_3_epochs_s": round(t3, 2), "epoch_s": round(per_epoch, 2),
            "overhead_s": round(max(t1 - per_epoch, 0.0) if t3 > t1 else 0.0, 2),
            "cpu_fit_1_epoch_s": round(cpu1, 2), "cpu_fit_3_epochs_s": round(cpu3, 2)}


def fit_sdv(name: str):
    def fit(train: pd.DataFrame, n: int, budget: float, options: dict):
        record: dict = {"settings": "SDV defaults, enable_gpu=False"}
        if not options["quick"]:
            record["warmup_s"] = warm_up(name, train)
        epochs = None
        if name != "sdv-copula":
            epochs = options["epochs"] or (QUICK_EPOCHS if options["quick"] else None)
            if epochs is None:
                t0 = time.perf_counter()
                record["calibration"] = cal = calibrate(name, train)
                record["calibration_s"] = round(time.perf_counter() - t0, 1)
                epochs = max(1, int((budget - cal["overhead_s"]) / cal["epoch_s"]))
            record["epochs"] = epochs
        model, record["fit_s"], record["fit_cpu_s"] = _timed_fit(name, train, epochs)
        t0 = time.perf_counter()
        synth = model.sample(num_rows=n)["adult"]
        record["sample_s"] = time.perf_counter() - t0
        return {name: synth}, record
    return fit


def fit_arf(train: pd.DataFrame, n: int, budget: float, options: dict):
    from peer_shims.arfpy_numpy2 import arf_class

    arf = arf_class()
    np.random.seed(SEED)  # arfpy draws from numpy's global generator
    t0 = time.perf_counter()
    model = arf(x=train, num_trees=30, delta=0, max_iters=10, early_stop=True, verbose=False,
                min_node_size=5, n_jobs=THREADS, random_state=SEED)
    model.forde()
    fit_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    raw = model.forge(n)
    sample_s = time.perf_counter() - t0
    fixed = raw.copy()
    for c in numeric_columns(train):
        values = pd.to_numeric(fixed[c], errors="coerce").clip(train[c].min(), train[c].max())
        fixed[c] = values.round() if pd.api.types.is_integer_dtype(train[c]) else values
    return {"arf": fixed, "arf-raw": raw}, {
        "fit_s": fit_s, "sample_s": sample_s,
        "settings": "arfpy defaults: 30 trees, max_iters=10, early_stop, min_node_size=5, truncnorm; "
                    "n_jobs=2",
        "over_budget": fit_s > budget}


def run_ours(family: str, train: pd.DataFrame, budget: float, n: int | None = None,
             workdir: Path | None = None) -> tuple[pd.DataFrame, dict]:
    """Our ``family`` through the product's path: ingest, train at the budget, sample ``n`` rows."""
    import aigc
    from aigc import runs, synthesis

    n = len(train) if n is None else n
    workdir = Path(workdir or tempfile.mkdtemp(prefix="aigc-synthesis-"))
    ws = aigc.open_workspace(workdir / "workspace")
    csv = workdir / "adult_train.csv"
    train.to_csv(csv, index=False)
    t0 = time.perf_counter()
    aigc.ingest(csv, "adult", workspace=ws, table=True, split=(0.95, 0.05, 0.0))
    ingest_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    row = runs.train(ws, "adult", family=family, preset="small", train_overrides={"time_budget": budget})
    fit_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    synth = synthesis.sample_table(ws, row["name"], n, seed=SEED)
    sample_s = time.perf_counter() - t0
    summary = row.get("summary") or {}
    return synth, {"fit_s": fit_s, "sample_s": sample_s, "ingest_s": round(ingest_s, 1),
                   "settings": f"preset small, time_budget {budget:g} s, train rows split 95/5 train/val",
                   "run": row["name"], "steps": summary.get("steps"), "stopped": summary.get("stopped")}


def fit_ours(name: str):
    family, share = (name[:-5], 0.5) if name.endswith("-half") else (name, 1.0)  # the issue: ctgan in half the time

    def fit(train: pd.DataFrame, n: int, budget: float, options: dict):
        synth, record = run_ours(family, train, budget * share, n, options["workdir"] / f"ours-{name}")
        return {name: synth}, record
    return fit


FITS = {"floor": fit_floor, "sdv-copula": fit_sdv("sdv-copula"), "sdv-ctgan": fit_sdv("sdv-ctgan"),
        "sdv-tvae": fit_sdv("sdv-tvae"), "arf": fit_arf, **{f: fit_ours(f) for f in OURS}}


def set_threads() -> None:
    os.environ.update({var: str(THREADS) for var in THREAD_VARS})
    import torch

    torch.set_num_threads(THREADS)


def worker(name: str, budget: float, quick: bool, workdir: Path, epochs: int | None) -> None:
    """One contestant, in its own process: fit, sample, write its rows and its record."""
    set_threads()
    train, _ = load_split(quick)
    options = {"epochs": epochs, "workdir": workdir, "quick": quick}
    frames, record = FITS[name](train, len(train), budget, options)
    peak_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux
    record["peak_rss_mib"] = round(peak_kib / 1024, 1)
    record["rows"] = {}
    for row, frame in frames.items():
        frame.to_pickle(workdir / f"{row}.pkl")
        record["rows"][row] = len(frame)
    (workdir / f"{name}.json").write_text(json.dumps(record, default=float))


def run_worker(name: str, args, workdir: Path) -> dict:
    cmd = [sys.executable, str(Path(__file__).resolve()), "--worker", name, "--budget", str(args.budget),
           "--workdir", str(workdir)]
    if args.quick:
        cmd.append("--quick")
    if name in args.epochs:
        cmd += ["--worker-epochs", str(args.epochs[name])]
    env = {**os.environ, **{var: str(THREADS) for var in THREAD_VARS}}  # set before the child's imports
    log = workdir / f"{name}.log"
    t0 = time.perf_counter()
    with log.open("w") as fh:
        try:  # a contestant that hangs must not hold the others: 3x the budget and 15 minutes more
            rc = subprocess.run(cmd, env=env, stdout=fh, stderr=subprocess.STDOUT,
                                timeout=3 * args.budget + 900).returncode
        except subprocess.TimeoutExpired:
            rc = "timeout"
    wall = time.perf_counter() - t0
    record_path = workdir / f"{name}.json"
    if rc != 0 or not record_path.exists():
        tail = [line for line in log.read_text(errors="replace").splitlines() if line.strip()]
        return {"error": f"exit {rc}: {tail[-1] if tail else 'no output'}"[:400], "wall_s": round(wall, 1)}
    return {**json.loads(record_path.read_text()), "wall_s": round(wall, 1)}


# --------------------------------------------------------------------------------------------
# Metrics: all from aigc.metrics.table, on adult's metadata written out here (fixed, the same for all)
# --------------------------------------------------------------------------------------------

def table_metadata(train: pd.DataFrame):
    """adult's metadata: numbers continuous (decimals 0 for integers), the rest categorical; target income."""
    from aigc.data.tables import Column, TableMetadata

    columns = []
    for c in train.columns:
        s = train[c]
        if pd.api.types.is_numeric_dtype(s):
            columns.append(Column(c, "continuous", float(s.isna().mean()), float(s.min()), float(s.max()),
                                  0 if pd.api.types.is_integer_dtype(s) else None))
        else:
            counts = s.astype(str).value_counts()
            columns.append(Column(c, "categorical", float(s.isna().mean()),
                                  categories={str(k): int(v) for k, v in counts.items()}))
    return TableMetadata(columns=columns, target=TARGET)


def measure(train: pd.DataFrame, synth: pd.DataFrame, holdout: pd.DataFrame) -> dict:
    """Every figure of the table (and a few more for the JSON) for one contestant's rows."""
    from aigc.metrics import table as tm

    t0 = time.perf_counter()
    meta = table_metadata(train)
    q = tm.quality(train, synth, meta)
    u = tm.tstr(train, synth, holdout, meta, TARGET, seed=SEED)
    p = tm.privacy(train, synth, holdout, meta, seed=SEED)
    return {"quality": q["score"], "shapes": q["shapes"], "trends": q["trends"],
            "trends_all": q["trends_all"],
            "per_column": q["per_column"],
            "worst_pairs": [{"columns": w["columns"], "score": w["score"]} for w in q["worst_pairs"]],
            "detection": tm.detection(train, synth, meta, seed=SEED),
            "tstr_auc": u["tstr"]["auc"], "tstr_f1": u["tstr"]["f1_macro"],
            "trtr_auc": u["trtr"]["auc"], "trtr_f1": u["trtr"]["f1_macro"],
            **{k: p[k]["value"] for k in ("closer_to_train", "dcr_overfitting_protection",
                                          "dcr_baseline_protection", "exact_copy_rate", "nndr", "mia_auc")},
            "privacy_reference": {k: p[k]["reference"] for k in (
                "closer_to_train", "dcr_overfitting_protection", "dcr_baseline_protection", "exact_copy_rate",
                "nndr", "mia_auc")},
            "validity": tm.diagnostic(train, synth, meta)["validity"],
            "metrics_s": round(time.perf_counter() - t0, 1)}


# --------------------------------------------------------------------------------------------
# Report
# --------------------------------------------------------------------------------------------

def _p(v, pct=False) -> str:
    if v is None:
        return "-"
    return f"{100 * v:.1f} %" if pct else f"{v:.3f}"


def print_table(result: dict) -> None:
    rows = result["contestants"]
    ref = next((r["metrics"] for r in rows.values() if "metrics" in r), None)
    data = result["data"]
    print(f"\nadult: train {data['train_rows']:,} / holdout {data['holdout_rows']:,} rows; "
          f"budget {result['budget_s']:g} s each; {THREADS} threads for every contestant; "
          "metrics: aigc.metrics.table")
    if ref:
        print(f"TRTR (a model trained on the real train rows): AUC {ref['trtr_auc']:.3f} / "
              f"macro-F1 {ref['trtr_f1']:.3f}")
    print("ours train on 95 % of the train rows: the other 5 % are their validation split "
          "(best weights, early stop)")
    print("real holdout row: utility is TRTR, privacy the references (half the holdout against train "
          "and the other half)\n")
    print("| model | quality (shapes / trends) | detection | TSTR AUC / macro-F1 | closer to train "
          "| DCR overfit / baseline | exact copies | validity | fit | sample | peak MiB |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for name, r in rows.items():
        label = LABELS.get(name, name)
        if r.get("epochs"):
            label += f", {r['epochs']} epoch{'s' if r['epochs'] > 1 else ''}"
        if "metrics" not in r:
            print(f"| {label} | {r.get('error', 'not run')} |")
            continue
        m = r["metrics"]
        hold = name == "holdout"
        fit = "-" if hold else f"{r['fit_s']:.0f} s"
        sample = "-" if hold else f"{r['sample_s']:.1f} s"
        print(f"| {label} | {m['quality']:.3f} ({m['shapes']:.3f} / {m['trends']:.3f}) "
              f"| {_p(m['detection'])} "
              f"| {m['tstr_auc']:.3f} / {m['tstr_f1']:.3f} | {_p(m['closer_to_train'], True)} "
              f"| {_p(m['dcr_overfitting_protection'])} / {_p(m['dcr_baseline_protection'])} "
              f"| {_p(m['exact_copy_rate'], True)} | {_p(m['validity'])} | {fit} | {sample} "
              f"| {r.get('peak_rss_mib', '-')} |")


def _families(names: list[str]) -> list[str]:
    groups = {"ours": OURS, "peers": PEERS, "refs": REFS, "all": REFS + PEERS + OURS}
    out = []
    for n in names:
        for f in groups.get(n, (n,)):
            if f not in REFS + PEERS + OURS:
                raise SystemExit(f"unknown contestant {f!r}: choose from {', '.join(REFS + PEERS + OURS)} "
                                 "or the groups ours, peers, refs, all")
            if f not in out:
                out.append(f)
    return out


def _epochs(text: str) -> dict[str, int]:
    out = {}
    for part in filter(None, text.split(",")):
        name, _, value = part.partition("=")
        if name not in ("sdv-ctgan", "sdv-tvae") or not value.isdigit() or int(value) < 1:
            raise SystemExit(f"--epochs takes sdv-ctgan=N,sdv-tvae=N with N >= 1, got {part!r}")
        out[name] = int(value)
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--budget", type=float, default=None,
                    help="wall seconds per contestant [300; 10 with --quick]")
    ap.add_argument("--families", nargs="+", default=["all"],
                    help="contestants or groups (ours peers refs all)")
    ap.add_argument("--epochs", type=_epochs, default={},
                    help="sdv-ctgan=N,sdv-tvae=N: skip the epoch timing")
    ap.add_argument("--quick", action="store_true",
                    help=f"{QUICK_ROWS:,} train rows, {QUICK_BUDGET:g} s budget")
    ap.add_argument("--calibrate", nargs="+", choices=["sdv-ctgan", "sdv-tvae"],
                    help="only time one epoch of these on the train split, print it and exit")
    ap.add_argument("--worker", help=argparse.SUPPRESS)
    ap.add_argument("--worker-epochs", type=int, default=None, help=argparse.SUPPRESS)
    ap.add_argument("--workdir", type=Path, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.budget is None:
        args.budget = QUICK_BUDGET if args.quick else 300.0
    if args.budget <= 0:
        raise SystemExit(f"--budget must be positive seconds, got {args.budget:g}")
    if not DATA.exists():
        print(f"skipped: {DATA_SHOWN} is not there (the adult census table, 32,561 rows; "
              "put adult.csv in ../shared/data/adult/)")
        return 0
    if args.worker:
        worker(args.worker, args.budget, args.quick, args.workdir, args.worker_epochs)
        return 0
    if args.calibrate:
        set_threads()
        train, _ = load_split(args.quick)
        for name in args.calibrate:
            warm_up(name, train)
            cal = calibrate(name, train)
            print(f"{name} on {len(train):,} rows, {THREADS} threads: {cal}; epochs in {args.budget:g} s: "
                  f"{max(1, int((args.budget - cal['overhead_s']) / cal['epoch_s']))}")
        return 0

    names = _families(args.families)
    try:
        import aigc.metrics.table  # noqa: F401
    except ImportError as e:
        raise SystemExit(f"the metrics are aigc.metrics.table's, which does not import here ({e}): "
                         "pip install -e . in this checkout")
    train, holdout = load_split(args.quick)
    result = {"data": {"path": DATA_SHOWN, "split": "80/20, numpy default_rng(0) permutation",
                       "train_rows": len(train), "holdout_rows": len(holdout), "target": TARGET,
                       "synthetic_rows": len(train), "quick": args.quick},
              "budget_s": args.budget, "threads": THREADS, "metrics": "aigc.metrics.table", "contestants": {}}
    rows = result["contestants"]
    with tempfile.TemporaryDirectory(prefix="aigc-bench-synthesis-") as tmp:
        workdir = Path(tmp)
        for name in names:
            print(f"{name} ...", flush=True)
            if name == "holdout":
                rows[name] = {"fit_s": None, "sample_s": None, "frames": {"holdout": holdout}}
                continue
            record = run_worker(name, args, workdir)
            frames = {row: pd.read_pickle(workdir / f"{row}.pkl") for row in record.pop("rows", {})}
            rows[name] = record
            for row, frame in frames.items():  # arf also gives arf-raw, a row of its own, same timings
                rows[row] = {**record, "frames": {row: frame}}
            if "error" in record:
                print(f"  {record['error']}")
        for name, r in rows.items():
            for row, frame in r.pop("frames", {}).items():
                try:
                    synth, notes = align(frame, train)
                    r["metrics"] = m = measure(train, synth, holdout)
                    if row == "holdout":  # trained and tested on the same rows would score 1.0
                        m["tstr_auc"], m["tstr_f1"] = m["trtr_auc"], m["trtr_f1"]
                        m.update(m["privacy_reference"])  # distances of holdout rows to themselves are 0
                        notes += ["utility: TRTR (trained on the train rows, tested on the holdout)",
                                  "privacy: the references (one half of the holdout against train "
                                  "and the other half)"]
                    if notes:
                        r["notes"] = notes
                except Exception as e:  # one contestant's bad rows must not lose the others' figures
                    r["error"] = f"metrics failed: {type(e).__name__}: {e}"[:400]
                print(f"{row}: measured", flush=True)
    if "holdout" in rows and "metrics" in rows["holdout"]:
        result["holdout_exact_copy_rate"] = rows["holdout"]["metrics"]["exact_copy_rate"]
    print_table(result)
    path = write_result("synthesis_quick" if args.quick else "synthesis", result)
    print(f"\nwrote {path.relative_to(HERE.parent)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
