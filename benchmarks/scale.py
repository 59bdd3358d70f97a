"""Scale-out figures (issue 18): training on 1 vs 2 processes, Ray batch generation with 1 vs 2
workers, and catalog write throughput, SQLite vs PostgreSQL, under 16 concurrent writers.

    python benchmarks/scale.py [--parts train ray catalog] [--writers 16] [--rows 200] [--steps 60]
                               [--batch 32] [--requests 1000]

On a 2-core machine the first two show the overhead of the extra processes (two ranks, or two Ray
actors, share the cores one process had); on a machine with a GPU per rank they show the scaling.

Catalog: every writer is a process of its own that opens the workspace and logs ``--rows``
generation rows, one transaction each, as a server's request log does. PostgreSQL is a throwaway
server (tests/pg.py) started here with its durable defaults (fsync and synchronous_commit on), as
SQLite keeps its own (WAL, synchronous=NORMAL, which does not sync each commit); a third row gives
PostgreSQL that same guarantee (synchronous_commit off for the database).
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import write_result  # noqa: E402

REPO = Path(__file__).resolve().parents[1]


def aigc(*args: str, env: dict | None = None, cwd: Path | None = None) -> float:
    """Run the CLI; its wall seconds (an error ends the benchmark with the CLI's own line)."""
    t = time.perf_counter()
    res = subprocess.run([str(Path(sys.executable).with_name("aigc")), *args], capture_output=True, text=True,
                         env={**os.environ, **(env or {})}, cwd=cwd)
    if res.returncode != 0:
        raise SystemExit(f"aigc {' '.join(args)} failed: {res.stderr.strip()[-800:]}")
    return time.perf_counter() - t


# -- training ----------------------------------------------------------------------------------


def _train_rows(run_dir: Path) -> list[dict]:
    """The training-step rows of a run's metrics.jsonl (validation rows left out)."""
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    return [r for r in rows if "train_loss" in r]


def _steps_per_s(rows: list[dict], skip: int) -> float:
    """Training steps per second after the first ``skip`` (compilation, caches, process start-up)."""
    first = next(r for r in rows if r["step"] >= skip)
    last = rows[-1]
    return (last["step"] - first["step"]) / (last["time"] - first["time"])


def part_train(steps: int, batch: int) -> dict:
    """gpt ``small`` on the bundled shop corpus: one process with the global batch (1 thread, then 2
    threads) against two processes with half of it each (one thread each). Same global batch, seed
    and steps, so the same number of samples; steps/s after the first 10 steps, and wall time with
    start-up."""
    out: dict = {"preset": "small", "steps": steps, "global_batch": batch, "dataset": "bundled shop corpus",
                 "configs": []}
    with tempfile.TemporaryDirectory(prefix="scale-train-") as tmp:
        ws = Path(tmp) / "ws"
        aigc("ingest", str(REPO / "src/aigc/resources/shop_copy.csv"), "--name", "shop", "--workspace", str(ws))
        for name, procs, threads in (("1 process, 1 thread", 1, 1), ("1 process, 2 threads", 1, 2),
                                     ("2 processes, 1 thread each", 2, 2)):
            run = f"p{procs}t{threads}"
            wall = aigc("train", "shop", "--family", "gpt", "--preset", "small", "--name", run, "--workspace",
                        str(ws), "--max-steps", str(steps), "--eval-every", str(10 * steps), "--seed", "0",
                        "--batch-size", str(batch // procs), "--devices", str(procs),
                        env={"AIGC_THREADS": str(threads), "OMP_NUM_THREADS": str(threads)})
            rows = _train_rows(ws / "runs" / run)
            rate, loss = _steps_per_s(rows, 10), rows[-1]["train_loss"]
            row = {"config": name, "processes": procs, "threads_per_process": max(1, threads // procs),
                   "batch_per_process": batch // procs, "steps_per_s": round(rate, 3),
                   "samples_per_s": round(rate * batch, 1), "wall_s": round(wall, 1), "last_train_loss": loss}
            out["configs"].append(row)
            print(f"train {name:28s} {row['steps_per_s']:6.2f} steps/s {row['samples_per_s']:7.1f} samples/s "
                  f"wall {row['wall_s']:6.1f} s  loss {loss}")
    return out


# -- Ray batch generation ----------------------------------------------------------------------


def part_ray(requests: int) -> dict:
    """``aigc generate RUN --file`` of ``requests`` prompts with a gpt ``tiny`` run: in this process
    (1 worker), in 2 local worker processes, and on a local Ray cluster of 2 CPUs with 1 and 2
    actors. The outputs must be byte-identical everywhere (checked); rates include each worker's
    loading of the run, not the cluster's start (reported apart)."""
    import aigc as api
    from aigc.batch import generate_file

    out: dict = {"requests": requests, "run": "gpt tiny, 300 steps, bundled shop corpus", "max_new_tokens": 40,
                 "configs": []}
    with tempfile.TemporaryDirectory(prefix="scale-ray-", dir="/tmp") as tmp:
        ws = api.Workspace(Path(tmp) / "ws")
        api.ingest(REPO / "src/aigc/resources/shop_copy.csv", "shop", workspace=ws)
        api.train("shop", family="gpt", preset="tiny", name="g", workspace=ws, max_steps=300, seed=0)
        prompts = Path(tmp) / "prompts.jsonl"
        words = ["Green tea", "A linen shirt", "The kettle", "Our new mug", "This lamp", "The notebook"]
        prompts.write_text("".join(json.dumps({"prompt": f"{words[i % len(words)]} ", "max_new_tokens": 40}) + "\n"
                                   for i in range(requests)))
        results = {}

        def one(name: str, **kw) -> None:
            dest = Path(tmp) / f"{len(results)}.jsonl"
            summary = generate_file(ws, "g", prompts, dest, seed=1, shard_size=50, **kw)
            results[name] = dest.read_bytes()
            row = {"config": name, "prompts_per_s": summary["per_s"], "seconds": summary["seconds"]}
            out["configs"].append(row)
            print(f"ray   {name:28s} {row['prompts_per_s']:7.1f} prompts/s ({row['seconds']:.1f} s)")

        one("local, 1 worker", workers=1)
        one("local, 2 worker processes", workers=2)
        import ray

        t = time.perf_counter()
        os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
        os.environ.setdefault("RAY_AUTH_MODE", "disabled")  # a throwaway local cluster: no token written to ~/.ray
        ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, _temp_dir=str(Path(tmp) / "ray"))
        out["ray_cluster_start_s"] = round(time.perf_counter() - t, 2)
        try:
            one("Ray, 1 actor", workers=1, ray="local")
            one("Ray, 2 actors", workers=2, ray="local")
        finally:
            ray.shutdown()
        first = next(iter(results.values()))
        out["identical_outputs"] = all(r == first for r in results.values())
        print(f"ray   identical outputs everywhere: {out['identical_outputs']}")
    return out


# -- catalog -----------------------------------------------------------------------------------


def _writer(args: tuple[str, str, int, int, mp.synchronize.Event]) -> list[float]:
    root, url, rows, index, go = args
    os.environ["OMP_NUM_THREADS"] = "1"
    from aigc import logbook
    from aigc.workspace import Workspace

    ws = Workspace(root, db_url=url)
    go.wait()
    latencies = []
    for i in range(rows):
        t = time.perf_counter()
        logbook.record(ws, {"run": "bench", "kind": "text", "endpoint": "/v1/completions",
                            "prompt": f"writer {index} row {i}", "options": {}, "output": {"texts": ["x" * 64]},
                            "status": "ok", "latency_ms": 1.0})
        latencies.append(time.perf_counter() - t)
    ws.engine.dispose()
    return latencies


def catalog_throughput(root: Path, url: str, writers: int, rows: int) -> dict:
    from aigc.workspace import Workspace

    Workspace(root, db_url=url).engine.dispose()  # migrate once, before the clock
    ctx = mp.get_context("spawn")
    with ctx.Manager() as manager:
        go = manager.Event()
        with ctx.Pool(writers) as pool:
            pending = pool.map_async(_writer, [(str(root), url, rows, i, go) for i in range(writers)])
            time.sleep(1.0 + 0.3 * writers)  # every writer imported and connected
            t = time.perf_counter()
            go.set()
            per_writer = pending.get(timeout=600)
            wall = time.perf_counter() - t
    lat = sorted(x for w in per_writer for x in w)
    n = len(lat)
    return {"writers": writers, "rows": n, "wall_s": round(wall, 3), "rows_per_s": round(n / wall, 1),
            "p50_ms": round(1000 * statistics.median(lat), 2), "p99_ms": round(1000 * lat[int(0.99 * (n - 1))], 2)}


def part_catalog(writers: int, rows: int) -> dict:
    sys.path.insert(0, str(REPO / "tests"))
    import pg

    out: dict = {}
    with tempfile.TemporaryDirectory(prefix="scale-catalog-") as tmp:
        root = Path(tmp) / "ws"
        out["sqlite"] = catalog_throughput(root, f"sqlite:///{root / 'catalog.db'}", writers, rows)
        why = pg.unavailable()
        if why:
            out["postgresql"] = {"skipped": why}
            return out
        server = pg.PgServer(pg.find_bindir(), durable=True).start()
        try:
            out["postgresql"] = catalog_throughput(Path(tmp) / "ws-pg", server.new_database(), writers, rows)
            out["postgresql"]["server"] = server.version()
            # SQLite's WAL with synchronous=NORMAL does not sync each commit either (a power cut may lose
            # the last ones, never corrupt): the same guarantee on PostgreSQL, for a like-for-like row.
            url = server.new_database()
            server.execute(f"ALTER DATABASE {url.rsplit('/', 1)[1]} SET synchronous_commit = off")
            out["postgresql_async_commit"] = catalog_throughput(Path(tmp) / "ws-pg2", url, writers, rows)
        finally:
            server.stop()
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--parts", nargs="+", default=["train", "ray", "catalog"], choices=["train", "ray", "catalog"])
    ap.add_argument("--writers", type=int, default=16)
    ap.add_argument("--rows", type=int, default=200, help="rows per catalog writer")
    ap.add_argument("--steps", type=int, default=60, help="training steps per configuration")
    ap.add_argument("--batch", type=int, default=32, help="global training batch")
    ap.add_argument("--requests", type=int, default=1000, help="prompts of the batch-generation part")
    args = ap.parse_args()
    result: dict = {"parts": {}}
    if "train" in args.parts:
        result["parts"]["train"] = part_train(args.steps, args.batch)
    if "ray" in args.parts:
        result["parts"]["ray"] = part_ray(args.requests)
    if "catalog" in args.parts:
        result["parts"]["catalog"] = part_catalog(args.writers, args.rows)
        for db, r in result["parts"]["catalog"].items():
            print(f"catalog {db:10s} " + json.dumps(r))
    path = write_result("scale", result)
    print(f"wrote {path.relative_to(REPO)}")


if __name__ == "__main__":
    main()
