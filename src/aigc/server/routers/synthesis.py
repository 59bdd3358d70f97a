"""Synthesis routes: ``POST /api/synthesize`` starts a background job (202), ``GET`` its status and
progress, its data file, and its report as JSON or as the HTML page. The work is
:mod:`aigc.synthesis.jobs`'; this router only translates."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import FileResponse, HTMLResponse, JSONResponse
from starlette.concurrency import run_in_threadpool

from aigc.server.common import shared
from aigc.server.schemas import SynthesizeRequest

router = APIRouter(tags=["synthesis"])

MEDIA = {".csv": "text/csv; charset=utf-8", ".tsv": "text/tab-separated-values; charset=utf-8",
         ".jsonl": "application/jsonl; charset=utf-8", ".parquet": "application/vnd.apache.parquet"}


def jobs_of(request: Request):
    state = shared(request)
    if state.get("synthesis") is None:
        from aigc.synthesis.jobs import SynthesisJobs

        state["synthesis"] = SynthesisJobs(state["ws"])
    return state["synthesis"]


def _links(job: dict[str, Any]) -> dict[str, Any]:
    base = f"/api/synthesize/{job['id']}"
    job["links"] = {"self": base, "file": f"{base}/file", "report": f"{base}/report",
                    "report_html": f"{base}/report.html"}
    return job


@router.post("/api/synthesize", status_code=202)
async def start(body: SynthesizeRequest, request: Request) -> JSONResponse:
    jobs = jobs_of(request)
    job = await run_in_threadpool(jobs.submit, body.run, body.n, fmt=body.format, conditions=body.conditions,
                                  constraints=body.constraints, seed=body.seed, report=body.report,
                                  target=body.target)
    return JSONResponse(_links(job), status_code=202)


@router.get("/api/synthesize")
async def list_jobs(request: Request) -> dict[str, Any]:
    return {"data": [_links(j) for j in await run_in_threadpool(jobs_of(request).list)]}


@router.get("/api/synthesize/{job_id}")
def status(job_id: str, request: Request) -> dict[str, Any]:
    return _links(jobs_of(request).get(job_id))


@router.get("/api/synthesize/{job_id}/file")
def data_file(job_id: str, request: Request):
    path = jobs_of(request).path(job_id, "file")
    if path.is_dir():  # an image run's folder: its CSV of paths and labels
        path = path / "labels.csv"
    return FileResponse(path, media_type=MEDIA.get(path.suffix, "application/octet-stream"),
                        filename=f"{job_id}{path.suffix}")


@router.get("/api/synthesize/{job_id}/report")
def report_json(job_id: str, request: Request):
    return FileResponse(jobs_of(request).path(job_id, "report.json"), media_type="application/json")


@router.get("/api/synthesize/{job_id}/report.html")
def report_html(job_id: str, request: Request):
    path = jobs_of(request).path(job_id, "report.html")
    return HTMLResponse(path.read_text(encoding="utf-8"))
