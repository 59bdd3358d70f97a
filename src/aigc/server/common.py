"""What the routers share: the app's engine and settings, request limits, submitting to the
engine without blocking the event loop, and holding a stream's first event back so that an
error before any output is still an HTTP error rather than a broken stream."""

from __future__ import annotations

import asyncio
import dataclasses
import json
from collections.abc import AsyncIterator
from typing import Any

from fastapi import Request
from starlette.concurrency import run_in_threadpool

from aigc.engine import Engine, Handle, ImageRequest, Result, TextRequest
from aigc.errors import InvalidInput


def shared(request: Request) -> dict[str, Any]:
    return request.app.state.shared


def engine_of(request: Request) -> Engine:
    return shared(request)["engine"]


def settings_of(request: Request):
    return shared(request)["settings"]


def key_id_of(request: Request) -> str | None:
    return request.scope.get("state", {}).get("key_id")


def check_limits(request: Request, prompt: str, max_tokens: int | None, n: int, param: str = "max_tokens",
                 rerank: int = 1) -> int:
    """The prompt-length, max_tokens and n caps (n x rerank samples drawn); returns the max_tokens to use."""
    s = settings_of(request)
    if len(prompt) > s.max_prompt_chars:
        raise with_param(InvalidInput(f"the prompt is {len(prompt)} characters; this server takes at most "
                                  f"{s.max_prompt_chars}"), "prompt")
    tokens = s.default_max_tokens if max_tokens is None else max_tokens
    if tokens > s.max_tokens:
        raise with_param(InvalidInput(f"{param} is {tokens}; this server allows at most {s.max_tokens}"), param)
    if n > s.max_batch:
        raise with_param(InvalidInput(f"n is {n}; this server makes at most {s.max_batch} per request"), "n")
    if n * rerank > s.max_batch:
        raise with_param(InvalidInput(f"n {n} x rerank {rerank} is {n * rerank} samples to draw; this "
                                      f"server draws at most {s.max_batch} per request: lower rerank or n"),
                         "rerank")
    return min(tokens, s.max_tokens)


def stops(stop: str | list[str] | None) -> tuple[str, ...]:
    """OpenAI's and Ollama's ``stop``: one string or a list of them."""
    return (stop,) if isinstance(stop, str) else tuple(stop or ())


def guidance(value: float | None) -> dict[str, float]:
    """The ``guidance`` keyword of a :class:`TextRequest` when the body gives one (none: the
    engine's default, no guidance)."""
    if value is None:
        return {}
    if "guidance" not in {f.name for f in dataclasses.fields(TextRequest)}:
        raise with_param(InvalidInput("guidance is not supported by this engine: leave it out"), "guidance")
    return {"guidance": value}


def rerank(value: int | None, stream: bool) -> dict[str, int]:
    """The ``rerank`` keyword of a :class:`TextRequest` when the body asks for candidates (none or
    1: no reranking). The judge reads whole samples, so nothing can stream before it has chosen."""
    if value is None or value == 1:
        return {}
    if stream:
        raise with_param(InvalidInput(f"rerank {value} picks among whole samples once all are drawn, so it "
                                      'cannot stream: send "stream": false, or leave rerank out'), "rerank")
    return {"rerank": value}


def printable(text: str | None) -> str | None:
    """``text`` with what UTF-8 cannot encode (a lone surrogate a client sent) written as escapes:
    an error message may quote the client's input, and rendering it must not fail in turn."""
    return None if text is None else text.encode("utf-8", "backslashreplace").decode("utf-8")


def with_param(error: Exception, param: str) -> Exception:
    error.param = param  # picked up by the error envelope
    return error


async def submit(request: Request, req: TextRequest | ImageRequest) -> tuple[Handle, AsyncIterator[list]]:
    """Queue ``req`` (loading its run in a worker thread if needed) and wait for its first events.

    Returns the handle and an iterator of bursts (lists of events: all those waiting when the
    consumer got to them; see :meth:`Handle.bursts`); :func:`flat` iterates them one by one.
    Errors up to the first event (bad prompt, unknown run, full queue, deadline in the queue)
    raise here, before any response has started."""
    req.key_id = key_id_of(request)
    handle = await run_in_threadpool(engine_of(request).submit, req, asyncio.get_running_loop())
    bursts = handle.bursts()
    try:
        first = await bursts.__anext__()
    except BaseException:
        handle.cancel()
        raise

    async def rest():
        yield first
        async for burst in bursts:
            yield burst

    return handle, rest()


async def flat(bursts: AsyncIterator[list]) -> AsyncIterator[Any]:
    async for burst in bursts:
        for event in burst:
            yield event


async def drain(handle: Handle, events: AsyncIterator) -> Result:
    try:
        async for _ in events:
            pass
    finally:
        if handle.result is None:
            handle.cancel()
    return handle.result


def sse(obj: Any) -> str:
    return "data: " + (obj if isinstance(obj, str) else json.dumps(obj, ensure_ascii=False)) + "\n\n"


async def sse_stream(handle: Handle, events: AsyncIterator[list], render) -> AsyncIterator[str]:
    """An OpenAI event stream: one write per burst of events (``render(event)`` gives each one's
    ``data:`` lines), then ``[DONE]``. An error mid-stream ends it with an error chunk; a stream
    closed early (the client went away) cancels its request."""
    try:
        async for burst in events:
            if text := "".join(render(ev) for ev in burst):
                yield text
        yield sse("[DONE]")
    except Exception as e:  # noqa: BLE001 - an error mid-stream ends the stream cleanly
        yield sse({"error": {"message": printable(str(e)), "type": "server_error", "param": None, "code": None}})
    finally:
        if handle.result is None:
            handle.cancel()
