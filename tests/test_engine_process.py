"""The engine in a child process (what `aigc serve` runs): the same outputs as the engine in
this process, errors that keep their type and fields, cancellation, images, the log, and a
clean failure when the child dies."""

from __future__ import annotations

import asyncio
import os
import signal
import time

import pytest

from aigc import logbook
from aigc.engine import Engine, ImageRequest, Result, TextEvent, TextRequest
from aigc.engine_process import EngineProcess
from aigc.errors import EngineUnavailable, InvalidInput, NotFound, Overloaded
from aigc.generation import Sampling


def _req(seed=1, **kw):
    sampling = dict(max_new_tokens=kw.pop("max_new_tokens", 24), min_new_tokens=kw.pop("min_new_tokens", 0),
                    temperature=1.0, seed=seed)
    return TextRequest(model=kw.pop("model", "g"), sampling=Sampling(**sampling), **kw)


@pytest.fixture(scope="module")
def remote(served_ws):
    engine = EngineProcess(served_ws, max_batch=2, max_queue=1, threads=1)
    seen = []
    engine.listeners.append(lambda kind, result: seen.append((kind, result.id)))
    engine.seen = seen
    yield engine
    engine.close()
    assert not engine.process.is_alive()


async def _admitted(submit, patience_s: float = 5.0):
    """submit() again while the engine's one queue place (max_queue=1) still holds the previous
    request: the decode thread frees it when it admits that one to the batch, as a client honouring
    Retry-After would find."""
    deadline = time.monotonic() + patience_s
    while True:
        try:
            return submit()
        except Overloaded:
            if time.monotonic() > deadline:
                raise
            await asyncio.sleep(0.01)


def test_outputs_equal_the_in_process_engine(served_ws, remote):
    prompts = [("apple", {"fruit": "apple"}, 1), ("猕猴桃", {"fruit": "kiwi"}, 2)]
    local = Engine(served_ws, log=False)
    try:
        expected = [local.generate(_req(seed, prompt=p, cond=c)).texts for p, c, seed in prompts]
    finally:
        local.close()

    async def both():  # through asyncio handles, both decoding in one batch
        loop = asyncio.get_running_loop()
        handles = [await _admitted(lambda: remote.submit(_req(seed, prompt=p, cond=c), loop))
                   for p, c, seed in prompts]
        texts = []
        for handle in handles:
            streamed = "".join(e.text for burst in [b async for b in handle.bursts()] for e in burst
                               if isinstance(e, TextEvent))
            assert streamed == handle.result.texts[0]
            texts.append(handle.result.texts)
        return texts, [h.id for h in handles]

    texts, ids = asyncio.run(both())
    assert texts == expected
    assert [("text", i) for i in ids] == [s for s in remote.seen if s[1] in ids]


def test_errors_keep_their_type_message_and_fields(remote):
    with pytest.raises(NotFound, match="nope"):
        remote.submit(_req(model="nope"))
    with pytest.raises(InvalidInput, match="never saw"):
        remote.submit(_req(prompt="\u2603\u2603"))
    # both rows busy until cancelled: no end-of-text before 10,000 tokens (it once ended first, and came back ok)
    running = remote.submit(_req(prompt="apple", n=2, max_new_tokens=10_000, min_new_tokens=10_000))
    next(iter(running))
    queued = remote.submit(_req(prompt="apple", max_new_tokens=3))  # the one queue place
    with pytest.raises(Overloaded, match="queue is full") as info:
        remote.submit(_req(prompt="apple", max_new_tokens=3))
    assert info.value.retry_after == 1
    running.cancel()  # stops within a step, in the child
    result = running.wait()
    assert result.status == "cancelled" and result.completion_tokens < 20_000
    assert queued.wait().status == "ok"
    assert remote.stats()["active_rows"] == 0


def test_images_and_the_log(served_ws, remote):
    info = remote.describe("d")
    assert info["kind"] == "image" and info["image_size"] == 8 and len(info["classes"]) >= 2
    assert remote.describe("g")["kind"] == "text"
    result = remote.submit(ImageRequest(model="d", n=2, seed=4, cond={"label": info["classes"][1]})).wait()
    assert isinstance(result, Result) and tuple(result.images.shape) == (2, 1, 8, 8)
    assert 0 <= float(result.images.min()) and float(result.images.max()) <= 1
    row = logbook.get(served_ws, result.id)  # written by the child before the result was sent
    assert row["kind"] == "image" and row["status"] == "ok"
    assert ("image", result.id) in remote.seen


def test_a_dead_engine_process_fails_requests_cleanly(served_ws):
    engine = EngineProcess(served_ws, threads=1, log=False, safety=False)  # acts on the first token
    try:
        running = engine.submit(_req(prompt="apple", max_new_tokens=100_000, min_new_tokens=100_000))
        next(iter(running))
        os.kill(engine.process.pid, signal.SIGKILL)
        # our fault, not a full queue: never Overloaded (the server would answer 429 and clients retry forever)
        with pytest.raises(EngineUnavailable, match="exited unexpectedly") as info:
            running.wait()
        assert not isinstance(info.value, Overloaded)
        with pytest.raises(EngineUnavailable, match="exited unexpectedly.*restart the server"):
            engine.submit(_req(prompt="apple"))
        with pytest.raises(EngineUnavailable):
            engine.stats()
    finally:
        engine.close()
    with pytest.raises(EngineUnavailable, match="shutting down"):
        engine.submit(_req(prompt="apple"))


def test_a_closed_in_process_engine_is_unavailable_not_overloaded(served_ws):
    engine = Engine(served_ws, log=False, threads=1)
    assert engine.generate(_req(prompt="apple", max_new_tokens=2)).status == "ok"
    engine.close()
    with pytest.raises(EngineUnavailable, match="shutting down"):
        engine.submit(_req(prompt="apple"))


def test_the_server_over_an_engine_process(served_ws):
    import httpx
    from helpers import LiveServer
    from openai import OpenAI

    from aigc.server import Settings

    with LiveServer(served_ws, Settings(engine_process=True, threads=1)) as live:
        child = live.engine.process
        client = OpenAI(base_url=live.url + "/v1", api_key="unused", max_retries=0)
        c = client.completions.create(model="g", prompt="apple", max_tokens=12, seed=4, temperature=1.0)
        streamed = "".join(ch.choices[0].text for ch in client.completions.create(
            model="g", prompt="apple", max_tokens=12, seed=4, temperature=1.0, stream=True))
        assert c.choices[0].text == streamed and c.usage.completion_tokens >= 1
        chunks = list(client.chat.completions.create(model="l", messages=[{"role": "user", "content": "apple"}],
                                                     max_tokens=10, seed=1, stream=True,
                                                     stream_options={"include_usage": True}))
        assert chunks[-1].usage.completion_tokens >= 1
        images = client.images.generate(model="d", prompt="bottom", n=2, response_format="b64_json",
                                        extra_body={"seed": 3, "steps": 2})
        assert len(images.data) == 2
        bad = httpx.post(live.url + "/v1/images/generations", json={"model": "d", "prompt": "x", "size": "9x9"})
        assert bad.status_code == 400 and "8x8" in bad.json()["error"]["message"]
        assert httpx.get(live.url + "/health").json()["status"] == "ok"
        metrics = httpx.get(live.url + "/metrics").text
        assert "aigc_active_batch_rows 0.0" in metrics and 'aigc_tokens_generated_total' in metrics
        # the child dies: our fault, a 503 with the error envelope and no Retry-After (not 429 queue_full)
        os.kill(child.pid, signal.SIGKILL)
        child.join(10)
        with httpx.Client(base_url=live.url, timeout=30) as h:
            for path, body in (("/v1/completions", {"model": "g", "prompt": "apple", "max_tokens": 3}),
                               ("/api/generate", {"model": "g", "prompt": "apple", "stream": False})):
                dead = h.post(path, json=body)
                assert dead.status_code == 503, dead.text
                assert "retry-after" not in dead.headers
                error = dead.json()["error"]
                assert error["code"] == "engine_unavailable" and "restart the server" in error["message"]
            assert h.get("/health").status_code == 503
    child.join(10)
    assert not child.is_alive()  # stopping the server stops its engine


@pytest.mark.skipif(not hasattr(os, "sched_getaffinity") or len(os.sched_getaffinity(0)) < 2,
                    reason="binding needs Linux and two CPUs")
def test_cpu_bind_gives_the_decode_loop_a_core_of_its_own(served_ws):
    """`aigc serve` binds: one thread of the engine process (the text decode loop) on the last CPU,
    every other thread of both processes on the rest; the parent's CPUs come back on close."""
    before = os.sched_getaffinity(0)
    last = {max(before)}
    engine = EngineProcess(served_ws, cpu_bind=True, threads=1, log=False)
    try:
        r = engine.generate(_req(seed=2, max_new_tokens=6))  # a request decodes on the bound thread
        assert r.status == "ok"
        child = {int(t): os.sched_getaffinity(int(t)) for t in os.listdir(f"/proc/{engine.process.pid}/task")}
        assert sum(cpus == last for cpus in child.values()) == 1, child
        assert all(cpus == before - last for cpus in child.values() if cpus != last), child
        assert os.sched_getaffinity(0) == before - last  # the HTTP side keeps off the decode core
    finally:
        engine.close()
    assert os.sched_getaffinity(0) == before


def test_an_error_that_cannot_be_pickled_still_crosses_as_its_message():
    from aigc.engine_process import _pack, _unpack

    class Local(Exception):  # defined in a function: pickle cannot find it by name
        pass

    error = _unpack(_pack(Local("the lamp is out")))
    assert isinstance(error, RuntimeError) and str(error) == "Local: the lamp is out"
    over = _unpack(_pack(Overloaded("busy", retry_after=7)))
    assert isinstance(over, Overloaded) and over.retry_after == 7 and str(over) == "busy"
