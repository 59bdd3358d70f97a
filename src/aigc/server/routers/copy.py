"""The copywriting desk over HTTP: ``POST /api/copy`` (ranked candidates with their checks),
``GET/PUT /api/copy/rules`` (the workspace's brand rules), ``POST /api/copy/events`` (shown, chosen,
clicked), ``POST /api/copy/pick`` (Thompson sampling) and ``GET /api/copy/experiments/{id}`` (lift
over the control). The work is :mod:`aigc.apps.copy`'s; this router only translates."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from starlette.concurrency import run_in_threadpool

from aigc.server.common import shared
from aigc.server.schemas import CopyEventRequest, CopyPickRequest, CopyRequest, CopyRulesRequest

router = APIRouter(tags=["copy"])


def _ws(request: Request):
    return shared(request)["ws"]


@router.post("/api/copy")
async def write(body: CopyRequest, request: Request) -> dict[str, Any]:
    from aigc.apps import copy

    return await run_in_threadpool(lambda: copy.write(body.product, body.brief, n=body.n, rules=body.rules,
                                                      model=body.model, workspace=_ws(request), seed=body.seed))


@router.get("/api/copy/rules")
async def get_rules(request: Request) -> dict[str, Any]:
    from aigc.apps import copy

    return (await run_in_threadpool(copy.workspace_rules, _ws(request))).to_dict()


@router.put("/api/copy/rules")
async def put_rules(body: CopyRulesRequest, request: Request) -> dict[str, Any]:
    from aigc.apps import copy

    return await run_in_threadpool(copy.set_rules, body.model_dump(exclude_unset=True), _ws(request))


@router.post("/api/copy/events")
async def event(body: CopyEventRequest, request: Request) -> dict[str, Any]:
    from aigc.apps import copy

    return await run_in_threadpool(lambda: copy.record_event(body.experiment, body.variant, body.event, body.text,
                                                             workspace=_ws(request)))


@router.post("/api/copy/pick")
async def pick(body: CopyPickRequest, request: Request) -> dict[str, Any]:
    from aigc.apps import copy

    variant = await run_in_threadpool(lambda: copy.pick(body.experiment, body.variants, workspace=_ws(request)))
    return {"experiment": body.experiment, "variant": variant}


@router.get("/api/copy/experiments/{experiment}")
async def experiment(experiment: str, request: Request) -> dict[str, Any]:
    from aigc.apps import copy

    return await run_in_threadpool(lambda: copy.report(experiment, workspace=_ws(request)))
