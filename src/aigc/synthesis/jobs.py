"""Synthesis as background jobs (what ``POST /api/synthesize`` starts): one worker thread runs
them in order, each with its progress, and writes its data set and report under
``<workspace>/synthetic/<job id>/``. A job's status survives in ``job.json`` there, so a restarted
server still serves finished jobs' files and reports.
"""

from __future__ import annotations

import json
import queue
import threading
import time
import traceback
import uuid
from pathlib import Path
from typing import Any

from aigc.errors import AigcError, InvalidInput, NotFound

SUFFIX = {"csv": ".csv", "tsv": ".tsv", "parquet": ".parquet", "jsonl": ".jsonl"}


class SynthesisJobs:
    def __init__(self, ws: Any):
        self.ws = ws
        self.root = Path(ws.root) / "synthetic"
        self._jobs: dict[str, dict[str, Any]] = {}
        self._lock = threading.Lock()
        self._queue: queue.Queue[str | None] = queue.Queue()
        self._thread: threading.Thread | None = None

    # -- submitting ------------------------------------------------------------------------------

    def submit(self, run: str, n: int, *, fmt: str = "csv", conditions: dict[str, Any] | None = None,
               constraints: list[dict[str, Any]] | None = None, seed: int = 0, report: bool = True,
               target: str | None = None) -> dict[str, Any]:
        """Check the request now (a bad one is an error here, not a failed job), then queue it."""
        from aigc import runs
        from aigc.synthesis import run_modality

        modality = run_modality(self.ws, run)
        if modality == "table":
            if fmt not in SUFFIX:
                raise InvalidInput(f"format {fmt!r}: a table run writes {', '.join(SUFFIX)}")
            gen = runs.load(self.ws, run)
            gen.check_conditions(conditions)
            gen.check_constraints(constraints)
            if target is not None and target not in gen.columns:
                raise InvalidInput(f"unknown target column {target!r}: the table's columns are {', '.join(gen.columns)}")
            out_name = f"synthetic{SUFFIX[fmt]}"
        elif constraints:
            raise InvalidInput("constraints apply to table runs only")
        else:
            out_name = "synthetic.jsonl" if modality == "text" else "images"
        job_id = "syn-" + uuid.uuid4().hex[:12]
        job = {"id": job_id, "run": run, "modality": modality, "n": n, "status": "queued",
               "created": time.time(), "progress": {"done": 0, "total": n}, "file": out_name,
               "request": {"conditions": conditions or {}, "constraints": constraints or [], "seed": seed,
                           "report": report, "target": target}}
        (self.root / job_id).mkdir(parents=True, exist_ok=True)
        with self._lock:
            self._jobs[job_id] = job
        self._save(job)
        self._queue.put(job_id)
        self._start()
        return self.get(job_id)

    def _start(self) -> None:
        if self._thread is None or not self._thread.is_alive():
            self._thread = threading.Thread(target=self._work, name="aigc-synthesis", daemon=True)
            self._thread.start()

    def close(self) -> None:
        self._queue.put(None)

    # -- reading ---------------------------------------------------------------------------------

    def get(self, job_id: str) -> dict[str, Any]:
        with self._lock:
            job = self._jobs.get(job_id)
            if job is not None:
                return json.loads(json.dumps(job))
        path = self.root / job_id / "job.json"
        if not job_id.startswith("syn-") or "/" in job_id or not path.exists():
            raise NotFound(f"no synthesis job {job_id!r}")
        return json.loads(path.read_text(encoding="utf-8"))

    def list(self) -> list[dict[str, Any]]:
        found = {}
        if self.root.exists():
            for path in self.root.glob("syn-*/job.json"):
                try:
                    found[path.parent.name] = json.loads(path.read_text(encoding="utf-8"))
                except (OSError, ValueError):
                    continue
        with self._lock:
            found.update({k: json.loads(json.dumps(v)) for k, v in self._jobs.items()})
        return sorted(found.values(), key=lambda j: j.get("created", 0), reverse=True)

    def path(self, job_id: str, what: str) -> Path:
        """The data file (``file``), ``report.json`` or ``report.html`` of a finished job."""
        job = self.get(job_id)
        if job["status"] != "finished":
            raise InvalidInput(f"job {job_id} is {job['status']}: its files exist once it has finished")
        name = job["file"] if what == "file" else what
        path = self.root / job_id / name
        if not path.exists():
            raise NotFound(f"job {job_id} has no {what}" + (" (it was started without a report)"
                                                           if what.startswith("report") else ""))
        return path

    # -- the worker ------------------------------------------------------------------------------

    def _update(self, job_id: str, **fields: Any) -> dict[str, Any]:
        with self._lock:
            job = self._jobs[job_id]
            job.update(fields)
            return json.loads(json.dumps(job))

    def _save(self, job: dict[str, Any]) -> None:
        import os

        folder = self.root / job["id"]
        tmp = folder / ".job.json.tmp"
        tmp.write_text(json.dumps(job, ensure_ascii=False, default=str), encoding="utf-8")
        os.replace(tmp, folder / "job.json")

    def _work(self) -> None:
        while True:
            job_id = self._queue.get()
            if job_id is None:
                return
            self._run(job_id)

    def _run(self, job_id: str) -> None:
        from aigc.synthesis import report as make_report
        from aigc.synthesis import synthesize

        job = self._update(job_id, status="running", started=time.time())
        self._save(job)
        folder = self.root / job_id
        req = job["request"]
        t0 = time.perf_counter()

        def progress(done: int, total: int) -> None:
            elapsed = time.perf_counter() - t0
            rate = done / max(elapsed, 1e-9)
            self._update(job_id, progress={"done": done, "total": total, "per_s": round(rate, 1),
                                           "eta_s": round((total - done) / rate, 1) if rate else None})

        try:
            summary = synthesize(self.ws, job["run"], job["n"], folder / job["file"],
                                 conditions=req["conditions"] or None, constraints=req["constraints"] or None,
                                 seed=req["seed"], progress=progress)
            summary["path"] = job["file"]  # relative to the job: no server paths in answers
            self._update(job_id, summary=summary, progress={"done": job["n"], "total": job["n"]})
            if req["report"]:
                self._save(self._update(job_id, status="reporting"))
                result = make_report(self.ws, job["run"], folder, synth=folder / job["file"],
                                     target=req["target"], seed=req["seed"])
                headline = {k: result.get(k) for k in ("fidelity", "utility", "privacy")}
                self._update(job_id, headline=json.loads(json.dumps(headline, default=str)))
            job = self._update(job_id, status="finished", finished=time.time())
        except AigcError as e:
            job = self._update(job_id, status="failed", error=str(e), finished=time.time())
        except Exception as e:  # noqa: BLE001 - our fault: recorded as such, the worker keeps going
            traceback.print_exc()
            job = self._update(job_id, status="failed", error=f"internal error: {type(e).__name__}",
                               finished=time.time())
        self._save(job)
