"""OpenAI-compatible routes: ``/v1/models``, ``/v1/completions``, ``/v1/chat/completions``,
``/v1/images/generations``. The official ``openai`` client works against them unchanged.

A run adapted from a pretrained base (`aigc train --base`) answers a chat through its base's chat
template (``system``/``developer`` turns as the system turn). Runs trained from scratch are not
chat-tuned: a chat request's prompt is its messages' contents, one per line, in order, and the
answer is the run's continuation. Conditions (``cond``), ``top_k``,
``repetition_penalty``, ``guidance``, ``rerank`` and ``rerank_by`` are extras in the body
(``extra_body=`` in the client). The response ``id`` is the generation's id in the log, so
feedback can refer to it. Under the workspace's output rails, ``logprobs`` speak of the released
text only, and alternatives that the rails would not let out are left out
(:class:`aigc.engine.SampleLogprobs`).
"""

from __future__ import annotations

import base64
import io
import time
from pathlib import Path
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import StreamingResponse
from starlette.concurrency import run_in_threadpool

from aigc.engine import ImageRequest, Result, TextEvent, TextRequest
from aigc.errors import InvalidInput
from aigc.generation import Sampling
from aigc.server.common import (check_limits, drain, engine_of, flat, guidance, rerank, settings_of, shared,
                                sse, sse_stream, stops, submit, with_param)
from aigc.server.schemas import ChatRequest, CompletionRequest, ImageGenerationRequest

router = APIRouter(prefix="/v1", tags=["openai"])


def _has_weights(path: Path) -> bool:
    return (path / "model.safetensors").exists() or (path / "checkpoints" / "last.pt").exists()


@router.get("/models")
def list_models(request: Request) -> dict[str, Any]:
    ws = shared(request)["ws"]
    data = []
    for row in ws.list_runs():
        path = ws.run_path(row["name"], fetch=False)  # a listing never downloads from the artifact store
        in_store = not path.exists() and ws.mirror is not None and row["status"] in ("finished", "interrupted")
        if in_store or _has_weights(path):
            data.append({"id": row["name"], "object": "model", "created": _epoch(row["created_at"]),
                         "owned_by": "aigc", "family": row["family"], "dataset": row["dataset"]})
    from aigc.server.routers.assistant import kb_models

    return {"object": "list", "data": data + kb_models(ws)}


@router.get("/models/{model}")
def get_model(model: str, request: Request) -> dict[str, Any]:
    for m in list_models(request)["data"]:
        if m["id"] == model:
            return m
    from aigc.errors import NotFound

    raise NotFound(f"unknown run {model!r}: GET /v1/models lists the runs this server has")


def _epoch(iso: str) -> int:
    from datetime import datetime

    return int(datetime.fromisoformat(iso).timestamp())


def _text_request(request: Request, body, prompt: str, max_tokens: int | None, endpoint: str,
                  top_logprobs: int | None) -> TextRequest:
    candidates = rerank(body.rerank, body.stream)
    param = "max_completion_tokens" if getattr(body, "max_completion_tokens", None) else "max_tokens"
    tokens = check_limits(request, prompt, max_tokens, body.n, param, candidates.get("rerank", 1))
    if body.min_tokens > tokens:
        raise with_param(InvalidInput(f"min_tokens is {body.min_tokens}; it can be at most {param} ({tokens})"),
                         "min_tokens")
    sampling = Sampling(max_new_tokens=tokens, temperature=body.temperature, top_k=body.top_k or None,
                        top_p=None if body.top_p >= 1 else body.top_p, repetition_penalty=body.repetition_penalty,
                        stop=stops(body.stop), seed=body.seed, min_new_tokens=body.min_tokens)
    options = body.model_dump(exclude={"prompt", "messages", "model"}, exclude_none=True)
    return TextRequest(model=body.model, prompt=prompt, cond=body.cond, n=body.n, sampling=sampling,
                       logprobs=top_logprobs, timeout=body.timeout, endpoint=endpoint, options=options,
                       rerank_by=body.rerank_by, **guidance(body.guidance), **candidates)


def _reason(reason: str | None) -> str:
    # content_filter: the output rail stopped the sample; anything else (a deadline) cut it short
    return reason if reason in ("stop", "length", "content_filter") else "length"


def _safety(result: Result) -> dict[str, Any]:
    """Our additions to an OpenAI body (clients ignore fields they do not know): the implicit AIGC
    label and, per choice, what the safety layer decided."""
    out: dict[str, Any] = {}
    if result.label is not None:
        out["aigc_label"] = result.label
    if result.safety:
        out["safety"] = result.client_safety()
    return out


def _finish_reason(result: Result, i: int) -> str:
    return _reason(result.finish_reasons[i] if i < len(result.finish_reasons) else None)


def _usage(result: Result) -> dict[str, int]:
    return {"prompt_tokens": result.prompt_tokens, "completion_tokens": result.completion_tokens,
            "total_tokens": result.prompt_tokens + result.completion_tokens}


# -- completions ----------------------------------------------------------------------------------


def _completion_logprobs(tokens) -> dict[str, Any]:
    offset, offsets = 0, []
    for t in tokens:
        offsets.append(offset)
        offset += len(t.token)
    return {"tokens": [t.token for t in tokens], "token_logprobs": [t.logprob for t in tokens],
            "top_logprobs": [dict(t.top) for t in tokens], "text_offset": offsets}


@router.post("/completions")
async def completions(body: CompletionRequest, request: Request):
    prompts = body.prompt if isinstance(body.prompt, list) else [body.prompt]
    if body.stream and len(prompts) > 1:
        raise InvalidInput("streaming takes one prompt per request: send the prompts as separate requests")
    if len(prompts) * body.n > settings_of(request).max_batch:
        raise with_param(InvalidInput(f"{len(prompts)} prompt(s) x n={body.n} is more than this server's "
                                      f"{settings_of(request).max_batch} samples per request"), "n")
    created = int(time.time())
    if body.stream:
        req = _text_request(request, body, prompts[0], body.max_tokens, "/v1/completions", body.logprobs)
        handle, events = await submit(request, req)

        include_usage = bool(body.stream_options and body.stream_options.include_usage)
        head = {"id": handle.id, "object": "text_completion", "created": created, "model": body.model}

        def chunk(ev) -> str:
            if isinstance(ev, TextEvent):
                choice = {"text": ev.text, "index": ev.index,
                          "finish_reason": _reason(ev.finish_reason) if ev.finish_reason else None,
                          "logprobs": _completion_logprobs(ev.tokens) if ev.tokens is not None else None}
                return sse({**head, "choices": [choice], **({"usage": None} if include_usage else {})})
            return sse({**head, "choices": [], "usage": _usage(ev)}) if include_usage else ""

        return StreamingResponse(sse_stream(handle, events, chunk), media_type="text/event-stream",
                                 headers={"X-Generation-Id": handle.id})

    choices, usage, ids = [], {"prompt_tokens": 0, "completion_tokens": 0, "total_tokens": 0}, []
    safety: list[dict[str, Any]] = []
    for p, prompt in enumerate(prompts):
        req = _text_request(request, body, prompt, body.max_tokens, "/v1/completions", body.logprobs)
        handle, events = await submit(request, req)
        tokens: dict[int, list] = {}
        async for ev in flat(events):
            if isinstance(ev, TextEvent) and ev.tokens is not None:
                tokens.setdefault(ev.index, []).extend(ev.tokens)
        result = handle.result
        ids.append(result.id)
        for i, text in enumerate(result.texts):
            choices.append({"text": text, "index": p * body.n + i, "finish_reason": _finish_reason(result, i),
                            "logprobs": _completion_logprobs(tokens.get(i, [])) if body.logprobs is not None else None})
        for k, v in _usage(result).items():
            usage[k] += v
        safety += result.client_safety()
    return {"id": ids[0], "object": "text_completion", "created": created, "model": body.model,
            "choices": choices, "usage": usage, **({"generation_ids": ids} if len(ids) > 1 else {}),
            **_safety(result), **({"safety": safety} if safety else {})}


# -- chat -------------------------------------------------------------------------------------------


def _chat_logprobs(tokens) -> dict[str, Any]:
    def entry(token: str, logprob: float) -> dict[str, Any]:
        return {"token": token, "logprob": logprob, "bytes": list(token.encode("utf-8"))}

    return {"content": [{**entry(t.token, t.logprob), "top_logprobs": [entry(a, b) for a, b in t.top]}
                        for t in tokens]}


@router.post("/chat/completions")
async def chat_completions(body: ChatRequest, request: Request):
    if body.model.startswith("kb:"):  # the customer-service assistant of a knowledge base
        from aigc.server.routers.assistant import chat

        return await chat(body, request)
    prompt = "\n".join(m.text() for m in body.messages if m.text())
    max_tokens = body.max_completion_tokens or body.max_tokens
    top = (body.top_logprobs or 0) if body.logprobs else None
    req = _text_request(request, body, prompt, max_tokens, "/v1/chat/completions", top)
    req.messages = [{"role": "system" if m.role == "developer" else m.role, "content": m.text()}
                    for m in body.messages]
    handle, events = await submit(request, req)
    created = int(time.time())
    head = {"id": handle.id, "object": "chat.completion.chunk", "created": created, "model": body.model}

    if body.stream:
        include_usage = bool(body.stream_options and body.stream_options.include_usage)
        extra = {"usage": None} if include_usage else {}

        started: set[int] = set()

        def chunks(ev) -> str:
            if not isinstance(ev, TextEvent):
                return sse({**head, "choices": [], "usage": _usage(ev)}) if include_usage else ""
            out = ""
            delta: dict[str, Any] = {"content": ev.text}
            if ev.index not in started:
                started.add(ev.index)
                delta = {"role": "assistant", "content": ev.text}
            choice = {"index": ev.index, "delta": delta, "logprobs": None, "finish_reason": None}
            if ev.tokens is not None:
                choice["logprobs"] = _chat_logprobs(ev.tokens)
            if ev.finish_reason:
                if ev.text or ev.tokens or "role" in delta:
                    out += sse({**head, "choices": [choice], **extra})
                choice = {"index": ev.index, "delta": {}, "logprobs": None, "finish_reason": _reason(ev.finish_reason)}
            return out + sse({**head, "choices": [choice], **extra})

        return StreamingResponse(sse_stream(handle, events, chunks), media_type="text/event-stream",
                                 headers={"X-Generation-Id": handle.id})

    tokens: dict[int, list] = {}

    async def collect():
        async for ev in flat(events):
            if isinstance(ev, TextEvent) and ev.tokens is not None:
                tokens.setdefault(ev.index, []).extend(ev.tokens)
            yield ev

    result = await drain(handle, collect())
    choices = [{"index": i, "message": {"role": "assistant", "content": text, "refusal": None},
                "logprobs": _chat_logprobs(tokens.get(i, [])) if body.logprobs else None,
                "finish_reason": _finish_reason(result, i)} for i, text in enumerate(result.texts)]
    return {"id": result.id, "object": "chat.completion", "created": created, "model": body.model,
            "choices": choices, "usage": _usage(result), **_safety(result)}


# -- images --------------------------------------------------------------------------------------------


def _png_b64(array, label: dict | None = None, i: int = 0, mark: bool = False) -> str:
    """A PNG as base64; with the result's ``label``, the PNG carries it (GB 45438 Annex E) and, with
    ``mark``, the visible "AI生成" mark where the image is large enough, as the files the engine writes."""
    from PIL import Image

    image = Image.fromarray(array[..., 0] if array.shape[-1] == 1 else array)
    if label is None:
        buf = io.BytesIO()
        image.save(buf, format="PNG")
        return base64.b64encode(buf.getvalue()).decode("ascii")
    from aigc.image_generation import MARK_MIN_SIDE
    from aigc.provenance.labels import label_png

    meta = {**label, "ProduceID": f"{label.get('ProduceID') or 'image'}-{i:03d}"}
    explicit = mark and min(image.size) >= MARK_MIN_SIDE
    return base64.b64encode(label_png(image, meta, explicit=explicit)).decode("ascii")


@router.post("/images/generations")
async def images(body: ImageGenerationRequest, request: Request):
    settings = settings_of(request)
    if body.n > settings.max_images:
        raise with_param(InvalidInput(f"n is {body.n}; this server makes at most {settings.max_images} images "
                                       "per request"), "n")
    run = await run_in_threadpool(engine_of(request).describe, body.model)
    if run["kind"] != "image":
        raise with_param(InvalidInput(f"{body.model!r} is a text run: use /v1/completions"), "model")
    side, classes = run["image_size"], run["classes"]
    if body.size is not None and body.size != f"{side}x{side}":
        raise with_param(InvalidInput(f"size {body.size} is not available: {body.model!r} makes {side}x{side} "
                                       "images"), "size")
    label = body.label or body.prompt.strip() or None
    cond = None
    if label is not None:
        if classes:
            match = {c.lower(): c for c in classes}.get(label.lower())
            if match is None:
                raise with_param(InvalidInput(f"{label!r} is not a class of {body.model!r} "
                                               f"(classes: {', '.join(classes)})"), "label")
            cond = {"label": match}
        elif body.label:
            raise with_param(InvalidInput(f"{body.model!r} is unconditional: leave label out"), "label")
    if body.response_format == "url" and not settings.log:
        raise with_param(InvalidInput("response_format 'url' needs the generation log (this server runs with "
                                       "--no-log): ask for b64_json"), "response_format")
    options = {k: v for k, v in (("steps", body.steps), ("guidance", body.guidance)) if v is not None}
    req = ImageRequest(model=body.model, n=body.n, cond=cond, seed=body.seed, options=options,
                       timeout=body.timeout, endpoint="/v1/images/generations")
    handle, events = await submit(request, req)
    result = await drain(handle, events)
    if body.response_format == "url":
        base = str(request.base_url).rstrip("/")
        data = [{"url": f"{base}/api/generations/{result.id}/images/{Path(p).name}"} for p in result.paths]
    else:
        from aigc.image_generation import to_uint8

        arrays = await run_in_threadpool(to_uint8, result.images)
        data = [{"b64_json": await run_in_threadpool(_png_b64, a, result.label, i, result.mark)}
                for i, a in enumerate(arrays)]
    return {"created": int(time.time()), "data": data, "id": result.id, "model": body.model,
            "label": (cond or {}).get("label"), "seed": body.seed,
            **({"aigc_label": result.label} if result.label is not None else {})}
