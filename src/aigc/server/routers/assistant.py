"""The customer-service assistant over HTTP: knowledge bases (``/api/kb``), one turn
(``POST /api/kb/{name}/ask``), the hand-off queue (``/api/handoffs``), and the assistant as an
OpenAI-compatible model (``model: "kb:NAME"`` on ``/v1/chat/completions``, :func:`chat`). The work
is :mod:`aigc.apps.assistant`'s; this router only translates."""

from __future__ import annotations

import time
import uuid
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import StreamingResponse
from starlette.concurrency import run_in_threadpool

from aigc.errors import InvalidInput, NotFound
from aigc.server.common import shared, sse, with_param
from aigc.server.schemas import AskRequest, KbSettingsRequest

router = APIRouter(tags=["assistant"])
MAX_UPLOAD = 50 * 1024 * 1024
KB_PREFIX = "kb:"


def _ws(request: Request):
    return shared(request)["ws"]


@router.get("/api/kb")
async def list_kbs(request: Request) -> dict[str, Any]:
    from aigc.apps.assistant import kb

    return {"data": await run_in_threadpool(kb.list_kbs, _ws(request))}


@router.get("/api/kb/{name}")
async def kb_info(name: str, request: Request) -> dict[str, Any]:
    from aigc.apps.assistant import kb
    from aigc.apps.assistant.answer import settings

    ws = _ws(request)
    info = await run_in_threadpool(kb.info, ws, name)
    conf = settings(ws, name)
    info["assistant"] = {k: v for k, v in conf.items() if k != "calibration"}
    return info


@router.get("/api/kb/{name}/chunks")
async def kb_chunks(name: str, request: Request, doc: str | None = None, offset: int = 0,
                    limit: int = 50) -> dict[str, Any]:
    from aigc.apps.assistant import kb

    if offset < 0 or not 1 <= limit <= 500:
        raise InvalidInput("offset must be >= 0 and limit from 1 to 500")
    return {"data": await run_in_threadpool(kb.chunks, _ws(request), name, doc, offset, limit)}


@router.put("/api/kb/{name}/documents/{filename}")
async def upload(name: str, filename: str, request: Request) -> dict[str, Any]:
    """Add (or update) one document: the request body is the file's bytes."""
    from aigc.apps.assistant import kb

    if "/" in filename or "\\" in filename or filename.startswith(".") or len(filename) > 200:
        raise with_param(InvalidInput(f"bad file name {filename!r}: a plain name like faq.csv"), "filename")
    size = int(request.headers.get("content-length") or 0)
    if size > MAX_UPLOAD:
        raise InvalidInput(f"{filename} is {size / 2**20:,.0f} MB; a document may be at most "
                           f"{MAX_UPLOAD // 2**20} MB: split it")
    ws = _ws(request)
    folder = ws.root / "tmp" / f"upload-{uuid.uuid4().hex[:12]}"
    folder.mkdir(parents=True)
    path = folder / filename
    total = 0
    try:
        with open(path, "wb") as fh:
            async for part in request.stream():
                total += len(part)
                if total > MAX_UPLOAD:
                    raise InvalidInput(f"{filename} is over {MAX_UPLOAD // 2**20} MB, the most a document may be: "
                                       "split it")
                fh.write(part)
        return await run_in_threadpool(kb.add, ws, name, [str(path)])
    finally:
        import shutil

        shutil.rmtree(folder, ignore_errors=True)


@router.delete("/api/kb/{name}/documents/{doc}")
async def remove_document(name: str, doc: str, request: Request) -> dict[str, Any]:
    from aigc.apps.assistant import kb

    return await run_in_threadpool(kb.remove_document, _ws(request), name, doc)


@router.delete("/api/kb/{name}")
async def delete_kb(name: str, request: Request) -> dict[str, Any]:
    from aigc.apps.assistant import kb

    await run_in_threadpool(kb.delete, _ws(request), name)
    return {"deleted": name}


@router.patch("/api/kb/{name}")
async def set_kb(name: str, body: KbSettingsRequest, request: Request) -> dict[str, Any]:
    from aigc.apps import assistant

    changes = body.model_dump(exclude_unset=True)
    conf = await run_in_threadpool(lambda: assistant.configure(name, workspace=_ws(request), **changes))
    return {k: v for k, v in conf.items() if k != "calibration"}


@router.get("/api/kb/{name}/search")
async def search(name: str, q: str, request: Request, k: int = 10, mode: str = "fusion") -> dict[str, Any]:
    from aigc.apps import assistant

    if not 1 <= k <= 100:
        raise with_param(InvalidInput(f"k must be from 1 to 100, got {k}"), "k")
    return {"data": await run_in_threadpool(lambda: assistant.search(name, q, k=k, mode=mode,
                                                                      workspace=_ws(request)))}


@router.post("/api/kb/{name}/ask")
async def ask(name: str, body: AskRequest, request: Request) -> dict[str, Any]:
    from aigc.apps import assistant

    history = [t.model_dump(exclude_none=True) for t in body.history]
    return await run_in_threadpool(lambda: assistant.ask(name, body.question, history=history,
                                                         workspace=_ws(request), mode=body.mode, model=body.model))


@router.get("/api/handoffs")
async def handoffs(request: Request, kb: str | None = None, status: str | None = "open",
                   limit: int = 100) -> dict[str, Any]:
    from aigc.apps import assistant

    if status not in (None, "open", "closed", "all"):
        raise with_param(InvalidInput(f"status must be open, closed or all, got {status!r}"), "status")
    rows = await run_in_threadpool(lambda: assistant.handoffs(kb, status=None if status == "all" else status,
                                                              limit=max(1, min(limit, 1000)),
                                                              workspace=_ws(request)))
    return {"data": rows}


@router.post("/api/handoffs/{handoff_id}/close")
async def close_handoff(handoff_id: int, request: Request) -> dict[str, Any]:
    from aigc.apps import assistant

    await run_in_threadpool(lambda: assistant.close_handoff(handoff_id, workspace=_ws(request)))
    return {"id": handoff_id, "status": "closed"}


# -- as an OpenAI-compatible model ------------------------------------------------------------------


def kb_models(ws) -> list[dict[str, Any]]:
    from aigc.apps.assistant import kb

    return [{"id": KB_PREFIX + k["name"], "object": "model", "created": 0, "owned_by": "aigc", "family": "assistant"}
            for k in kb.list_kbs(ws)]


async def chat(body: Any, request: Request):
    """``/v1/chat/completions`` with ``model: "kb:NAME"``: the last user message is the question, the
    turns before it the history; the reply carries ``citations``, ``handoff`` and ``confidence``
    beside the usual fields (clients that do not know them ignore them)."""
    from aigc.apps import assistant

    name = body.model[len(KB_PREFIX):]
    turns = [{"role": "system" if m.role == "developer" else m.role, "content": m.text()} for m in body.messages]
    turns = [t for t in turns if t["role"] in ("user", "assistant", "system")]
    if not turns or turns[-1]["role"] != "user":
        raise with_param(InvalidInput("the last message must be the user's question"), "messages")
    if body.n not in (None, 1):
        raise with_param(InvalidInput("a kb: model gives one answer: leave n at 1"), "n")
    from aigc.apps.assistant import kb

    ws = _ws(request)
    # (with an artifact store the first look may download the knowledge base: off the event loop)
    if not await run_in_threadpool(lambda: kb.kb_path(ws, name).is_dir()):
        raise with_param(NotFound(f"unknown knowledge base {name!r}: GET /v1/models lists the kb: models"), "model")
    reply = await run_in_threadpool(lambda: assistant.ask(name, turns[-1]["content"], history=turns[:-1],
                                                          workspace=ws))
    rid = "chatcmpl-kb-" + uuid.uuid4().hex[:20]
    created = int(time.time())
    extra = {"citations": reply["citations"], "handoff": reply["handoff"], "confidence": reply.get("confidence"),
             "clarify": reply.get("clarify", False)}
    if body.stream:
        head = {"id": rid, "object": "chat.completion.chunk", "created": created, "model": body.model}

        def events():
            yield sse({**head, "choices": [{"index": 0, "delta": {"role": "assistant", "content": reply["answer"]},
                                            "logprobs": None, "finish_reason": None}]})
            yield sse({**head, "choices": [{"index": 0, "delta": {}, "logprobs": None, "finish_reason": "stop"}],
                       **extra})
            yield "data: [DONE]\n\n"

        return StreamingResponse(events(), media_type="text/event-stream")
    return {"id": rid, "object": "chat.completion", "created": created, "model": body.model,
            "choices": [{"index": 0, "message": {"role": "assistant", "content": reply["answer"], "refusal": None},
                         "logprobs": None, "finish_reason": "stop"}],
            "usage": {"prompt_tokens": 0, "completion_tokens": 0, "total_tokens": 0}, **extra}


