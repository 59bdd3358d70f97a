"""Batch work cut into shards, run on this machine or on a Ray cluster, resumable.

Two jobs use it: generating from a file of requests (:func:`generate_file`, ``aigc generate RUN
--file``) and synthesizing a data set shard by shard (:func:`synthesize_shards`, ``aigc synthesize
--shard-size``: a table run's rows, or a text run's records). A job is a list of *tasks* (one
request; or one shard's count of rows, or its records' conditions), cut into shards of
``shard_size`` tasks. Every task carries its own seed, derived from the job's
seed and the task's position (:func:`task_seed`), never from the worker that runs it, so the
results are the same whatever the shard size, the worker count, or whether Ray runs them.

Each finished shard is written whole under ``<out>.parts/`` (temp file, then rename) as soon as it
arrives; the output is assembled from the shards when all are there (temp file, then rename). A
manifest beside the shards records the input's hash and the arguments: a restarted job skips the
shards already written, and another job aimed at the same ``--out`` is refused unless told to
restart.

Shards run in one of three places, each loading the run once per worker (:class:`ShardWorker`):
this process (one worker), worker processes here (``workers`` > 1), or Ray actors
(``ray=ADDRESS``: Ray Data ``map_batches`` over an actor pool). Workers read the run from the
workspace path (the same machine, or a filesystem every node mounts).

Knows runs and files; nothing of the CLI. The Ray side (joining a cluster, the actor pool) is
:mod:`aigc.batch_ray`, imported only when a job asks for Ray.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import shutil
import time
import uuid
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from aigc.errors import AigcError, InvalidInput
from aigc.workspace import write_text_atomic

SHARD_SIZE = 64  # requests per shard: a few seconds of a small model, so a restart loses little
ROWS_PER_SHARD = 10_000  # synthesis with --ray and no --shard-size: rows per shard
RECORDS_PER_SHARD = 512  # the same for text records: 8 generation batches, a restart loses little

SAMPLING = ("max_new_tokens", "temperature", "top_k", "top_p", "repetition_penalty", "stop", "guidance")
FIELDS = {"text": {"id", "prompt", "cond", "n", "seed", *SAMPLING}, "table": {"id", "cond", "n", "seed"}}

Progress = Callable[[int, int], None]


def task_seed(seed: int, index: int) -> int:
    """The seed of task ``index`` of a job seeded ``seed``: 32 bits of BLAKE2b over both, so tasks
    draw independent streams and a task's seed depends only on its position in the input."""
    digest = hashlib.blake2b(f"aigc-batch:{seed}:{index}".encode(), digest_size=4).digest()
    return int.from_bytes(digest, "big")


# -- requests ------------------------------------------------------------------------------------


def read_requests(path: Path, modality: str, defaults: dict[str, Any], seed: int) -> tuple[list[dict], str]:
    """The tasks of a JSONL file of requests, every line checked before anything runs, and the
    file's SHA-256. A line is a JSON object (``prompt``, ``cond``, ``n``, ``seed``, sampling options,
    ``id``) or a JSON string (the prompt); blank lines are skipped. ``defaults`` fill what a line
    leaves out; a bad line is an :class:`InvalidInput` naming its line number."""
    if not path.is_file():
        raise InvalidInput(f"--file {path}: no such file")
    data = path.read_bytes()
    tasks: list[dict] = []
    first_line: dict[Any, int] = {}  # id -> the line that has it
    for lineno, raw in enumerate(data.splitlines(), 1):
        if not raw.strip():
            continue
        try:
            task = _task(_parse_line(raw), modality, defaults, task_seed(seed, len(tasks)), lineno)
            if task["id"] in first_line:
                raise InvalidInput(f"id {task['id']!r} is already the id of line {first_line[task['id']]}; "
                                   "give each request its own id")
        except InvalidInput as e:
            raise InvalidInput(f"{path.name} line {lineno}: {e}") from None
        first_line[task["id"]] = lineno
        tasks.append(task)
    if not tasks:
        raise InvalidInput(f"--file {path} holds no requests: write one JSON object (or string) per line")
    return tasks, hashlib.sha256(data).hexdigest()


def _parse_line(raw: bytes) -> dict[str, Any]:
    try:
        obj = json.loads(raw.decode("utf-8"))
    except UnicodeDecodeError:
        raise InvalidInput("not UTF-8 text; save the file as UTF-8") from None
    except ValueError as e:
        raise InvalidInput(f"not JSON ({e.msg} at column {e.colno}); write a JSON object such as "
                           '{"prompt": "..."} or a JSON string') from None
    if isinstance(obj, str):
        return {"prompt": obj}
    if not isinstance(obj, dict):
        raise InvalidInput(f"a request is a JSON object or string, not {type(obj).__name__}")
    return obj


def _task(obj: dict[str, Any], modality: str, defaults: dict[str, Any], seed: int, lineno: int) -> dict[str, Any]:
    """One checked task: id (default: its line number), seed (the line's, else ``seed``), conditions,
    n and, for text, the prompt and sampling options."""
    unknown = sorted(set(obj) - FIELDS[modality])
    if unknown:
        raise InvalidInput(f"unknown field(s) {', '.join(unknown)} for a {modality} run; a request takes "
                           f"{', '.join(sorted(FIELDS[modality]))}")
    rid = obj.get("id", lineno)
    if isinstance(rid, bool) or not isinstance(rid, (str, int)):
        raise InvalidInput(f"id must be a string or a whole number, got {rid!r}")
    line = {**defaults, **obj}
    cond = {**defaults.get("cond", {}), **_cond(obj.get("cond"))}
    task: dict[str, Any] = {"id": rid, "seed": _whole(line, "seed", seed), "n": _whole(line, "n", 1, low=1),
                            "cond": {k: str(v) for k, v in cond.items()} if modality == "text" else cond}
    if modality == "text":
        prompt = line.get("prompt", "")
        if not isinstance(prompt, str):
            raise InvalidInput(f"prompt must be a string, got {prompt!r}")
        task.update(prompt=prompt, sampling=_sampling({k: line[k] for k in SAMPLING if line.get(k) is not None}))
    return task


def _whole(line: dict[str, Any], key: str, default: int, low: int = 0) -> int:
    value = line.get(key, default)
    if isinstance(value, bool) or not isinstance(value, int) or value < low:
        raise InvalidInput(f"{key} must be a whole number >= {low}, got {value!r}")
    return value


def _cond(cond: Any) -> dict[str, Any]:
    if cond is None:
        return {}
    if not isinstance(cond, dict) or not all(isinstance(v, (str, int, float)) and not isinstance(v, bool)
                                             for v in cond.values()):
        raise InvalidInput(f"cond must be an object of column -> value (text or a number), "
                           f"e.g. {{\"category\": \"tea\"}}, got {cond!r}")
    return cond


def _sampling(sampling: dict[str, Any]) -> dict[str, Any]:
    """Sampling options checked: types first (a clear message, not a TypeError deep in decoding), then
    the decoder's own rules. ``stop`` as a list, whole numbers as ints (as JSON keeps them)."""
    from aigc.decoding import Sampling

    if isinstance(sampling.get("stop"), str):
        sampling["stop"] = [sampling["stop"]]
    for key, value in sampling.items():
        if key == "stop":
            if not isinstance(value, list) or not all(isinstance(s, str) for s in value):
                raise InvalidInput(f"stop must be a string or a list of strings, got {value!r}")
        elif isinstance(value, bool) or not isinstance(value, (int, float)):
            raise InvalidInput(f"{key} must be a number, got {value!r}")
        elif key in ("max_new_tokens", "top_k") and value != int(value):
            raise InvalidInput(f"{key} must be a whole number, got {value!r}")
        elif key in ("max_new_tokens", "top_k"):
            sampling[key] = int(value)
    Sampling(**{k: tuple(v) if k == "stop" else v for k, v in sampling.items()}).check()
    return sampling


# -- workers -------------------------------------------------------------------------------------


class ShardWorker:
    """One worker: loads the run once, then turns shards of tasks into result records.

    ``work`` says what to do (``kind``: ``text`` or ``table`` requests, or a synthesis shard's ``rows``
    or text ``records``), which run, and which workspace (its root, catalog URL and artifact store),
    so a worker in another process or on another node opens the same one. Torch gets ``threads``
    threads here: one per worker by default, and parallelism comes from the number of workers.
    """

    def __init__(self, work: dict[str, Any], threads: int = 1):
        from aigc import runs
        from aigc.runtime import configure_threads
        from aigc.workspace import Workspace

        os.environ["OMP_NUM_THREADS"] = str(threads)
        configure_threads(threads)
        self.kind = work["kind"]
        ws = Workspace(work["workspace"]["root"], db_url=work["workspace"]["db_url"],
                       artifacts=work["workspace"]["artifacts"])
        if self.kind == "records":  # the model itself and the copy index, as aigc.synthesis.text uses them
            from aigc.safety.training import load_copy_index

            self.gen = runs.load(ws, work["run"], safety=False)
            self.copy_index = load_copy_index(ws.run_path(work["run"]))  # built by the driver if missing
        else:
            self.gen = runs.load(ws, work["run"])
            if getattr(self.gen, "guard", None) is not None:  # each request's audit row comes back with it:
                self.gen.guard.audit_rows = []  # the job writes one row for all (generate_file)

    def __call__(self, tasks: list[dict[str, Any]]) -> list[dict[str, Any]]:
        # A synthesis shard's error fails the job: its rows or records are one data set.
        if self.kind == "rows":
            return [{"rows": _plain_rows(self.gen.sample(t["rows"], conditions=t["conditions"], seed=t["seed"],
                                                         constraints=t["constraints"]))} for t in tasks]
        if self.kind == "records":
            return [self._records(t) for t in tasks]
        return [self._request(t) for t in tasks]

    def _records(self, t: dict[str, Any]) -> dict[str, Any]:
        """A text synthesis shard: a text for each of its records' conditions, and what it drew."""
        from aigc.synthesis.text import fill_records

        texts, counts = fill_records(self.gen, t["combos"], self.copy_index, t["copy_threshold"], seed=t["seed"],
                                     sampling=t["sampling"], what=t["what"])
        return {"texts": texts, **counts}

    def _request(self, t: dict[str, Any]) -> dict[str, Any]:
        """One request's record; a request the run refuses (an unseen character, a blocked prompt,
        an unknown condition value) gets its error instead of outputs, and the job goes on."""
        record: dict[str, Any] = {"id": t["id"], "seed": t["seed"]}
        try:
            if self.kind == "table":
                record["outputs"] = _plain_rows(self.gen.sample(t["n"], conditions=t["cond"], seed=t["seed"]))
                return record
            texts, reasons = [""] * t["n"], [None] * t["n"]
            sampling = {k: tuple(v) if k == "stop" else v for k, v in t["sampling"].items()}
            for chunk in self.gen.stream(t["prompt"], n=t["n"], cond=t["cond"], seed=t["seed"], **sampling):
                texts[chunk.index] += chunk.text
                reasons[chunk.index] = chunk.finish_reason or reasons[chunk.index]
            record.update(outputs=texts, finish_reasons=reasons)
            rows = getattr(getattr(self.gen, "guard", None), "audit_rows", None)
            if rows:  # the safety decision, for the job's audit row (taken out before the line is written)
                row = rows.pop()
                record["_safety"] = {k: row[k] for k in ("decision", "categories", "entity_counts",
                                                         "rule_ids")}
        except AigcError as e:
            record["error"] = str(e)
        return record


def _plain_rows(frame) -> list[dict[str, Any]]:
    """A frame's rows as JSON-safe dicts: missing cells None, numpy scalars Python ones."""
    clean = frame.astype(object).where(frame.notna(), None)
    return [{k: (v.item() if hasattr(v, "item") else v) for k, v in row.items()}
            for row in clean.to_dict(orient="records")]


# The worker of a local worker process (one per process, made on its first shard). Module state,
# but only ever set inside the pool's child processes.
_process_worker: ShardWorker | None = None


def _run_in_process(work: dict[str, Any], threads: int, tasks: list[dict[str, Any]]) -> list[dict[str, Any]]:
    global _process_worker
    if _process_worker is None:
        _process_worker = ShardWorker(work, threads)
    return _process_worker(tasks)


# -- the parts folder ----------------------------------------------------------------------------


class Parts:
    """``<out>.parts/``: ``manifest.json`` and one ``shard-00012.jsonl`` per finished shard."""

    def __init__(self, out: Path, manifest: dict[str, Any], sizes: list[int]):
        self.out = out
        self.dir = out.with_name(out.name + ".parts")
        self.manifest = {**manifest, "shard_lines": sizes}
        self.sizes = sizes

    def path(self, i: int) -> Path:
        return self.dir / f"shard-{i:05d}.jsonl"

    def open(self, restart: bool) -> list[int]:
        """The shards still to do. Finished shards of the same job are kept; another job's are refused
        (``restart``: deleted)."""
        if self.dir.exists() and restart:
            shutil.rmtree(self.dir)
        if self.dir.exists():
            self._check_same_job()
        else:
            self.dir.mkdir()
            write_text_atomic(self.dir / "manifest.json", json.dumps(self.manifest, ensure_ascii=False, indent=1))
        return [i for i, size in enumerate(self.sizes) if not self._done(i, size)]

    def _check_same_job(self) -> None:
        try:
            old = json.loads((self.dir / "manifest.json").read_text(encoding="utf-8"))
        except (OSError, ValueError):
            old = None
        if old == self.manifest:
            return
        if old is None:
            why = "it has no readable manifest.json"
        else:
            differ = [k for k in self.manifest if k != "shard_lines" and old.get(k) != self.manifest[k]] or ["manifest"]
            why = "; ".join(_difference(k, old.get(k), self.manifest.get(k)) for k in differ)
        raise InvalidInput(f"{self.dir} holds the shards of another job ({why}): pass --restart to discard "
                           "them and start over, or choose another --out")

    def _done(self, i: int, size: int) -> bool:
        """Whether shard ``i`` is written whole (renamed into place, with its count of lines)."""
        try:
            with open(self.path(i), "rb") as f:
                return sum(1 for _ in f) == size
        except OSError:
            return False

    def write(self, i: int, lines: Iterable[str]) -> None:
        write_text_atomic(self.path(i), "".join(lines))

    def lines(self) -> Iterable[str]:
        for i in range(len(self.sizes)):
            with open(self.path(i), encoding="utf-8") as f:
                yield from f


def _difference(key: str, then: Any, now: Any) -> str:
    if key == "input_sha256":
        return f"the input file differs: sha256 {str(then)[:12]}... then, {str(now)[:12]}... now"
    if key == "manifest":
        return "its manifest.json differs"
    return f"{key.replace('_', ' ')}: {json.dumps(then, ensure_ascii=False)} then, {json.dumps(now, ensure_ascii=False)} now"


def _check_out(out: Path) -> None:
    if out.is_dir():
        raise InvalidInput(f"--out {out} is a folder: name the results file, e.g. {out / 'results.jsonl'}")
    if not out.parent.is_dir():
        raise InvalidInput(f"--out {out}: folder {out.parent} does not exist; create it or write elsewhere")


def _check_size(size: int) -> int:
    if isinstance(size, bool) or not isinstance(size, int) or size < 1:
        raise InvalidInput(f"--shard-size must be a whole number >= 1, got {size!r}")
    return size


def _shards(tasks: list[dict[str, Any]], size: int) -> list[list[dict[str, Any]]]:
    size = _check_size(size)
    return [tasks[i:i + size] for i in range(0, len(tasks), size)]


# -- running shards ------------------------------------------------------------------------------


def run_shards(work: dict[str, Any], shards: dict[int, list[dict[str, Any]]],
               on_shard: Callable[[int, list[dict[str, Any]]], None], *, workers: int | None = 1,
               threads: int = 1, ray: str | None = None) -> int:
    """Run ``shards`` (index -> tasks) and hand each one's records to ``on_shard`` as it finishes, in
    any order: in this process, in ``workers`` worker processes, or on the Ray cluster at ``ray``.
    Returns the number of workers used."""
    if isinstance(threads, bool) or not isinstance(threads, int) or threads < 1:
        raise InvalidInput(f"--threads must be a whole number >= 1, got {threads!r}")
    if workers is not None and (isinstance(workers, bool) or not isinstance(workers, int) or workers < 1):
        raise InvalidInput(f"--workers must be a whole number >= 1, got {workers!r}")
    if ray is not None:
        from aigc.batch_ray import run_on_ray

        return run_on_ray(work, shards, on_shard, address=ray, workers=workers, threads=threads)
    workers = min(workers or 1, max(len(shards), 1))
    if workers == 1:
        worker = ShardWorker(work, threads) if shards else None
        for i, tasks in shards.items():
            on_shard(i, worker(tasks))
        return 1
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor, as_completed

    # spawn: a fresh interpreter per worker (forking a process that already holds torch threads is unsafe)
    with ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn")) as pool:
        futures = {pool.submit(_run_in_process, work, threads, tasks): i for i, tasks in shards.items()}
        try:
            for future in as_completed(futures):
                on_shard(futures[future], future.result())
        except BaseException:  # a failed shard (or ^C) ends the job now: the shards not started never run
            pool.shutdown(cancel_futures=True)
            raise
    return workers


# -- jobs ----------------------------------------------------------------------------------------


def _work(ws: Any, kind: str, run: str) -> dict[str, Any]:
    return {"kind": kind, "run": run,
            "workspace": {"root": str(Path(ws.root).resolve()), "db_url": ws.db_url, "artifacts": ws.artifacts}}


def _rate(count: int, seconds: float) -> float:
    return round(count / seconds, 2) if seconds > 0 else math.inf


def generate_file(ws: Any, run: str, path: str | Path, out: str | Path, *, seed: int = 0,
                  shard_size: int = SHARD_SIZE, defaults: dict[str, Any] | None = None, workers: int | None = 1,
                  threads: int = 1, ray: str | None = None, restart: bool = False,
                  progress: Progress | None = None) -> dict[str, Any]:
    """Generate from every request of the JSONL file ``path`` with run ``run`` (text or table) and
    write one labelled JSONL line per request to ``out``, in input order: ``id``, ``seed``,
    ``outputs`` (texts, or rows of a table run), ``finish_reasons`` (text), or ``error`` for a
    request the run refused. ``defaults`` (sampling options, ``n``, ``cond``) fill what lines leave
    out. ``progress(done, total)`` counts requests. Returns a summary."""
    from aigc.music_generation import is_music_run
    from aigc.synthesis import run_modality

    path, out = Path(path), Path(out)
    modality = run_modality(ws, run)  # an unknown run: the catalog's NotFound, before anything else
    if modality not in FIELDS or is_music_run(ws, run):
        kind = "music" if modality == "text" else modality
        raise InvalidInput(f"--file generates from text and table runs, and {run} is a run on {kind}: use "
                           f"`aigc generate {run}` (or `aigc synthesize` for a data set)")
    _check_out(out)
    if out.resolve() == path.resolve():
        raise InvalidInput(f"--out {out} is the --file itself: write the results elsewhere")
    defaults = dict(defaults or {})
    unknown = sorted(set(defaults) - FIELDS[modality])
    if unknown:
        raise InvalidInput(f"{', '.join(unknown)} do(es) not apply to {run}, a {modality} run: leave them out")
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise InvalidInput(f"--seed must be a whole number >= 0, got {seed!r}")
    tasks, digest = read_requests(path, modality, defaults, seed)
    shards = _shards(tasks, shard_size)
    job = {"job": "generate", "input_sha256": digest, "run": run, "run_step": ws.get_run(run).get("step"),
           "seed": seed, "defaults": defaults}
    parts = Parts(out, {**job, "shard_size": shard_size}, [len(s) for s in shards])
    pending = parts.open(restart)
    job_key = hashlib.sha256(json.dumps(job, sort_keys=True).encode()).hexdigest()  # ProduceIDs: shards aside
    label = _labeller(ws)
    offsets = [i * shard_size for i in range(len(shards))]
    todo = sum(len(shards[i]) for i in pending)
    done = errors = 0
    decided: list[dict[str, Any]] = []  # each text request's safety decision, for the job's audit row
    t0 = time.perf_counter()

    def on_shard(i: int, records: list[dict[str, Any]]) -> None:
        nonlocal done, errors
        decided.extend(r.pop("_safety") for r in records if "_safety" in r)
        produce = (hashlib.sha256(f"{job_key}:{offsets[i] + k}".encode()).hexdigest()[:32] for k in range(len(records)))
        parts.write(i, (json.dumps({**r, "aigc_label": label(pid)}, ensure_ascii=False) + "\n"
                        for r, pid in zip(records, produce)))
        done += len(records)
        errors += sum("error" in r for r in records)
        if progress is not None:
            progress(done, todo)

    used = run_shards(_work(ws, modality, run), {i: shards[i] for i in pending}, on_shard, workers=workers,
                      threads=threads, ray=ray)
    seconds = time.perf_counter() - t0
    _assemble_lines(parts, out)
    if modality == "text":
        _audit_job(ws, run, job_key, out, done, errors, decided)
    return {"run": run, "path": str(out), "requests": len(tasks), "shards": len(shards),
            "skipped_shards": len(shards) - len(pending), "generated": done, "errors": errors,
            "workers": used, "where": f"ray {ray}" if ray else "local", "seconds": round(seconds, 2),
            "per_s": _rate(done, seconds)}


def _audit_job(ws: Any, run: str, job_key: str, out: Path, done: int, errors: int,
               decided: list[dict[str, Any]]) -> None:
    """The job's one audit row (a row per request would be thousands): the requests run here, those
    the run refused (a blocked prompt has its own row already), each decision's count, and the
    categories, entity counts and rules of all its outputs."""
    from aigc.provenance import audit
    from aigc.safety.guard import DECISION_ORDER, guard_for

    counts: dict[str, int] = {}
    entities: dict[str, int] = {}
    for d in decided:
        counts[d["decision"]] = counts.get(d["decision"], 0) + 1
        for kind, n in d["entity_counts"].items():
            entities[kind] = entities.get(kind, 0) + n
    text = (f"generate --file -> {out.name}: {done} requests run, {errors} refused; decisions: "
            + (", ".join(f"{k} {counts[k]}" for k in DECISION_ORDER if k in counts) or "none"))
    audit.record(ws, path="batch", decision=min(counts or ["allow"], key=DECISION_ORDER.index), text=text,
                 policy_version=guard_for(ws).policy.version, run=run, request_id="batch-" + job_key[:24],
                 categories={c for d in decided for c in d["categories"]}, entity_counts=entities,
                 rule_ids={r for d in decided for r in d["rule_ids"]})


def _labeller(ws: Any) -> Callable[[str], dict[str, Any]]:
    from aigc.safety.guard import guard_for

    return guard_for(ws).label


def _assemble_lines(parts: Parts, out: Path) -> None:
    """The shards' lines, streamed into a temporary file of this call's own (two jobs writing one
    ``out`` never share it), renamed over ``out``."""
    tmp = out.with_name(f".{out.name}.{uuid.uuid4().hex[:8]}.tmp")
    try:
        with open(tmp, "w", encoding="utf-8") as f:
            f.writelines(parts.lines())
        os.replace(tmp, out)
    finally:
        tmp.unlink(missing_ok=True)


def synthesize_shards(ws: Any, run: str, n: int, out: str | Path, *, shard_size: int | None = None, seed: int = 0,
                      conditions: dict[str, Any] | None = None, constraints: list[dict[str, Any]] | None = None,
                      ingest: str | None = None, workers: int | None = 1, threads: int = 1, ray: str | None = None,
                      restart: bool = False, progress: Progress | None = None) -> dict[str, Any]:
    """``n`` rows of table run ``run``, or ``n`` records of text run ``run``, written to ``out`` shard by
    shard, labelled, as the one-call path (``aigc.synthesize``) writes them; with ``ingest``, also
    ingested back as a dataset of that name. ``progress(done, total)`` counts rows or records.

    Shard ``k`` draws with seed ``task_seed(seed, k)``, so the output is a function of (``seed``,
    ``shard_size``) alone: the same locally, in worker processes or on Ray. It differs from the
    one-call path's, which draws with ``seed`` itself. Image runs are refused: their output is a
    folder of PNGs, not shard-sized lines."""
    from aigc.synthesis import ingest_back, run_modality

    out = Path(out)
    modality = run_modality(ws, run)
    if modality not in ("table", "text"):
        a = "an" if modality[:1] in tuple("aeiou") else "a"
        raise InvalidInput(f"sharded synthesis (--shard-size, --ray) makes table rows and text records, and {run} "
                           f"is {a} {modality} run: synthesize it without those options")
    if ingest is not None:
        from aigc.workspace import check_name

        check_name(ingest, "dataset name")
        if ws.has_dataset(ingest):
            raise InvalidInput(f"dataset {ingest!r} already exists: pick another --ingest name")
    where = {"workers": workers, "threads": threads, "ray": ray}
    if modality == "table":
        summary = _table_shards(ws, run, n, out, shard_size, seed, conditions, constraints, where, restart, progress)
    elif constraints:
        raise InvalidInput("constraints apply to table runs only")
    else:
        summary = _text_shards(ws, run, n, out, shard_size, seed, conditions, where, restart, progress)
    if ingest is not None:
        summary["ingested"] = ingest_back(ws, run, modality, out, ingest)
    return summary


def _table_shards(ws: Any, run: str, n: int, out: Path, shard_size: int | None, seed: int,
                  conditions: dict[str, Any] | None, constraints: list[dict[str, Any]] | None, where: dict[str, Any],
                  restart: bool, progress: Progress | None) -> dict[str, Any]:
    """A table run's rows: shard ``k`` holds ``shard_size`` rows sampled with seed ``task_seed(seed, k)``
    (the one-call path's single sampling draws its batches by the total)."""
    from aigc import runs
    from aigc.synthesis.tables import check_out, write_table

    if isinstance(n, bool) or not isinstance(n, int) or not 1 <= n <= 10_000_000:
        raise InvalidInput(f"n must be a whole number of rows from 1 to 10,000,000, got {n!r}")
    check_out(out)
    gen = runs.load(ws, run)  # the request checked here, before any worker starts
    conds = gen.check_conditions(conditions)
    gen.check_constraints(constraints)
    size = _check_size(shard_size or ROWS_PER_SHARD)
    counts = [min(size, n - start) for start in range(0, n, size)]
    tasks = [{"rows": c, "seed": task_seed(seed, k), "conditions": conds, "constraints": constraints or []}
             for k, c in enumerate(counts)]
    parts = Parts(out, {"job": "synthesize", "run": run, "run_step": ws.get_run(run).get("step"), "n": n,
                        "seed": seed, "conditions": conds, "constraints": constraints or [], "shard_size": size},
                  [1] * len(tasks))
    used, seconds, done = _run_synthesis(ws, "rows", run, parts, tasks, counts, where, restart, progress)
    import pandas as pd

    from aigc.provenance.labels import new_produce_id

    rows = [row for line in parts.lines() for row in json.loads(line)["rows"]]
    write_table(pd.DataFrame(rows, columns=gen.columns), out, _labeller(ws)(new_produce_id()))
    return {"run": run, "modality": "table", "path": str(out), "n": len(rows), **used, "shard_size": size,
            "seconds": round(seconds, 2), "rows_per_s": _rate(done, seconds), "conditions": conditions or {}}


def _text_shards(ws: Any, run: str, n: int, out: Path, shard_size: int | None, seed: int,
                 conditions: dict[str, Any] | None, where: dict[str, Any], restart: bool,
                 progress: Progress | None) -> dict[str, Any]:
    """A text run's records: their conditions drawn once here with ``seed``, as the one-call path
    draws them, then shard ``k`` fills its ``shard_size`` records with seed ``task_seed(seed, k)``
    (:func:`aigc.synthesis.text.fill_records`: the same drops of empty records and copies of training
    text). Record ``i``'s ProduceID derives from the job and ``i``, so the file is byte-identical
    wherever the shards ran."""
    from aigc.provenance.labels import write_jsonl
    from aigc.synthesis.text import text_job, text_summary

    job = text_job(ws, run, n, out, conditions=conditions, seed=seed, max_new_tokens=None, temperature=1.0,
                   top_p=0.95)
    size = _check_size(shard_size or RECORDS_PER_SHARD)
    starts = range(0, n, size)
    tasks = [{"combos": job.combos[a:a + size], "seed": task_seed(seed, k), "sampling": job.sampling,
              "copy_threshold": job.threshold,
              "what": f"run {run!r}, shard {k} (records {a} to {min(a + size, n) - 1}),"}
             for k, a in enumerate(starts)]
    manifest = {"job": "synthesize", "run": run, "run_step": ws.get_run(run).get("step"), "n": n, "seed": seed,
                "conditions": conditions or {}, "sampling": job.sampling, "copy_threshold": job.threshold,
                "shard_size": size}
    parts = Parts(out, manifest, [1] * len(tasks))
    used, seconds, done = _run_synthesis(ws, "records", run, parts, tasks, [len(t["combos"]) for t in tasks], where,
                                         restart, progress)
    shards = [json.loads(line) for line in parts.lines()]
    texts = [t for shard in shards for t in shard["texts"]]
    counts = {k: sum(shard[k] for shard in shards) for k in ("drawn", "dropped_copies", "dropped_empty")}
    records = [{"text": t, **combo} for t, combo in zip(texts, job.combos)]
    base = hashlib.sha256(json.dumps(manifest, sort_keys=True).encode()).hexdigest()[:32]
    label = _labeller(ws)(base)
    write_jsonl(out, records, lambda i, _r: {**label, "ProduceID": f"{base}-{i:06d}"})
    return {"run": run, "modality": "text", "path": str(out), **text_summary(job, records, counts, seed), **used,
            "shard_size": size, "seconds": round(seconds, 2), "records_per_s": _rate(done, seconds)}


def _run_synthesis(ws: Any, kind: str, run: str, parts: Parts, tasks: list[dict[str, Any]], counts: list[int],
                   where: dict[str, Any], restart: bool, progress: Progress | None) -> tuple[dict, float, int]:
    """The shards not yet under ``parts`` run (shard ``i``: task ``i``, making ``counts[i]`` rows or
    records) and are written there, one JSON line each. Returns what the summary says of the shards,
    the seconds taken and the rows or records made this time."""
    pending = parts.open(restart)
    todo = sum(counts[i] for i in pending)
    done = 0
    t0 = time.perf_counter()

    def on_shard(i: int, records: list[dict[str, Any]]) -> None:
        nonlocal done
        parts.write(i, [json.dumps(records[0], ensure_ascii=False) + "\n"])
        done += counts[i]
        if progress is not None:
            progress(done, todo)

    used = run_shards(_work(ws, kind, run), {i: [tasks[i]] for i in pending}, on_shard, **where)
    ray = where["ray"]
    return ({"shards": len(tasks), "skipped_shards": len(tasks) - len(pending), "workers": used,
             "where": f"ray {ray}" if ray else "local"}, time.perf_counter() - t0, done)
