"""Recommendations over HTTP: ``POST /api/recommend`` (a user's items), ``GET
/api/recommend/{model}/similar/{item}`` (an item's look-alikes) and ``GET /api/recommend`` (the
trained recommenders). The work is :mod:`aigc.apps.recommend`'s; this router only translates
(an unknown recommender or item is a 404, a bad body or ``k`` a 400, in the server's error envelope)."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Query, Request
from starlette.concurrency import run_in_threadpool

from aigc.errors import NotFound
from aigc.server.common import shared, with_param
from aigc.server.schemas import MAX_RECOMMEND_K as MAX_K
from aigc.server.schemas import RecommendRequest

router = APIRouter(tags=["recommend"])


@router.get("/api/recommend")
async def list_models(request: Request) -> dict[str, Any]:
    from aigc.apps import recommend

    return {"data": await run_in_threadpool(recommend.models, shared(request)["ws"])}


@router.post("/api/recommend")
async def recommend_items(body: RecommendRequest, request: Request) -> dict[str, Any]:
    from aigc.apps import recommend

    try:
        return await run_in_threadpool(lambda: recommend.recommend(
            body.model, body.user, body.k, workspace=shared(request)["ws"], exclude_seen=body.exclude_seen,
            explain=body.explain, copy=body.write_copy))
    except NotFound as e:
        raise with_param(e, "model") from None


@router.get("/api/recommend/{model}/similar/{item}")
async def similar_items(model: str, item: str, request: Request,
                        k: int = Query(10, ge=1, le=MAX_K)) -> dict[str, Any]:
    from aigc.apps import recommend

    ws = shared(request)["ws"]
    try:
        await run_in_threadpool(recommend.load, model, ws)
    except NotFound as e:
        raise with_param(e, "model") from None
    try:
        return await run_in_threadpool(lambda: recommend.similar(model, item, k, workspace=ws))
    except NotFound as e:
        raise with_param(e, "item") from None
