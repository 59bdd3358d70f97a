"""Opinion monitoring over HTTP: ``GET /api/monitor`` (streams), ``PUT /api/monitor/{name}``
(settings), ``POST /api/monitor/{name}/items`` (one post or many: scored, stored, rules run),
``GET /api/monitor/{name}/trends``, ``/alerts``, ``/items`` (the drill-down), ``GET
/api/monitor/models`` and ``POST /api/monitor/classify``. The work is :mod:`aigc.apps.monitor`'s;
this router only translates."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Query, Request
from starlette.concurrency import run_in_threadpool

from aigc.server.common import shared
from aigc.server.schemas import MonitorClassifyRequest, MonitorItemsRequest, MonitorSettingsRequest

router = APIRouter(tags=["monitor"])


def _ws(request: Request):
    return shared(request)["ws"]


@router.get("/api/monitor")
async def streams(request: Request) -> dict[str, Any]:
    from aigc.apps import monitor

    return {"streams": await run_in_threadpool(monitor.streams, _ws(request))}


@router.get("/api/monitor/models")
async def models(request: Request) -> dict[str, Any]:
    from aigc.apps import monitor

    return {"models": await run_in_threadpool(monitor.models, _ws(request))}


@router.post("/api/monitor/classify")
async def classify(body: MonitorClassifyRequest, request: Request) -> dict[str, Any]:
    from aigc.apps import monitor

    rows = await run_in_threadpool(monitor.score_texts, _ws(request), body.model, body.texts)
    return {"model": body.model, "results": rows}


@router.put("/api/monitor/{name}")
async def configure(name: str, body: MonitorSettingsRequest, request: Request) -> dict[str, Any]:
    from aigc.apps import monitor

    changes = body.model_dump(exclude_unset=True)
    return await run_in_threadpool(lambda: monitor.configure(name, _ws(request), **changes))


@router.post("/api/monitor/{name}/items")
async def add(name: str, body: MonitorItemsRequest, request: Request) -> dict[str, Any]:
    from aigc.apps import monitor

    rows = [i.model_dump() for i in body.items] if body.items is not None else \
        [{"text": body.text, "timestamp": body.timestamp, "id": body.id}]
    return await run_in_threadpool(lambda: monitor.add(name, rows, workspace=_ws(request)))


@router.get("/api/monitor/{name}/trends")
async def trends(name: str, request: Request, period: str | None = None, start: str | None = None,
                 end: str | None = None) -> dict[str, Any]:
    from aigc.apps import monitor

    return await run_in_threadpool(lambda: monitor.trends(name, period=period, start=start, end=end,
                                                          workspace=_ws(request)))


@router.get("/api/monitor/{name}/alerts")
async def alerts(name: str, request: Request, limit: int = Query(200, ge=1, le=10_000)) -> dict[str, Any]:
    from aigc.apps import monitor

    return {"stream": name, "alerts": await run_in_threadpool(
        lambda: monitor.list_alerts(name, limit=limit, workspace=_ws(request)))}


@router.get("/api/monitor/{name}/items")
async def items(name: str, request: Request, topic: str | None = None, start: str | None = None,
                end: str | None = None, negative: bool | None = None,
                limit: int = Query(50, ge=1, le=1000)) -> dict[str, Any]:
    from aigc.apps import monitor

    return {"stream": name, "items": await run_in_threadpool(
        lambda: monitor.items(name, topic=topic, start=start, end=end, negative=negative, limit=limit,
                              workspace=_ws(request)))}
