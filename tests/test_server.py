"""The HTTP server: OpenAI-compatible and native routes through TestClient (startup included),
a real uvicorn on 127.0.0.1 driven by the official `openai` client, httpx and curl, the
generation log and feedback, API keys, limits, and every bad-input case of the issue."""

from __future__ import annotations

import base64
import io
import json
import shutil
import subprocess
import threading
import time

import httpx
import numpy as np
import pytest
from fastapi.testclient import TestClient
from PIL import Image

import aigc
from aigc import keys, logbook
from aigc.server import Settings, create_app
from aigc.server.app import Gate

from helpers import LiveServer, never_ending_text
from http_probe import OneConnection, assert_error_envelope

SMALL = dict(max_tokens=64, default_max_tokens=24, max_batch=4, max_queue=8, max_images=4)


@pytest.fixture()
def client(served_ws):
    with TestClient(create_app(served_ws, Settings(**SMALL))) as c:  # `with`: the lifespan runs
        yield c


def _error(res, status, param=None, code=None):
    assert res.status_code == status, res.text
    err = res.json()["error"]
    assert set(err) == {"message", "type", "param", "code"} and err["message"]
    if param is not None:
        assert err["param"] == param, err
    if code is not None:
        assert err["code"] == code, err
    return err


def _sse(text: str) -> list:
    events = [line[len("data: "):] for line in text.splitlines() if line.startswith("data: ")]
    assert events[-1] == "[DONE]"
    return [json.loads(e) for e in events[:-1]]


# -- through TestClient ------------------------------------------------------------------------------


def test_health_models_and_openapi(client):
    assert client.get("/health").json()["status"] == "ok"
    ids = {m["id"] for m in client.get("/v1/models").json()["data"]}
    assert {"g", "l", "d"} <= ids
    assert client.get("/v1/models/g").json()["family"] == "gpt"
    _error(client.get("/v1/models/nope"), 404, code="model_not_found")
    assert "/v1/chat/completions" in client.get("/openapi.json").json()["paths"]


def test_health_is_503_until_the_preloaded_runs_are_ready(served_ws):
    app = create_app(served_ws, Settings(preload=["g"]))
    assert TestClient(app).get("/health").status_code == 503  # no lifespan has run: not ready
    with TestClient(app) as c:  # startup loads "g" before it answers
        body = c.get("/health").json()
    assert body["status"] == "ok" and "g" in body["loaded"]


def test_completion_is_seeded_and_matches_the_python_api(client, served_ws):
    body = {"model": "g", "prompt": "apple", "max_tokens": 20, "temperature": 1.0, "seed": 5,
            "cond": {"fruit": "apple"}}
    a = client.post("/v1/completions", json=body).json()
    b = client.post("/v1/completions", json=body).json()
    assert a["choices"][0]["text"] == b["choices"][0]["text"]
    assert a["object"] == "text_completion" and a["choices"][0]["finish_reason"] in ("stop", "length")
    assert a["usage"]["total_tokens"] == a["usage"]["prompt_tokens"] + a["usage"]["completion_tokens"]
    same = aigc.load("g", workspace=served_ws).generate("apple", cond={"fruit": "apple"}, seed=5,
                                                        max_new_tokens=20, temperature=1.0)
    assert a["choices"][0]["text"] == same[0]


def test_completion_logprobs_n_and_stop(client):
    res = client.post("/v1/completions", json={"model": "g", "prompt": "apple", "max_tokens": 8, "n": 2,
                                               "logprobs": 2, "seed": 1, "stop": ["\n", "zz"]}).json()
    assert [c["index"] for c in res["choices"]] == [0, 1]
    for c in res["choices"]:
        lp = c["logprobs"]
        assert len(lp["tokens"]) == len(lp["token_logprobs"]) == len(lp["top_logprobs"]) >= 1
        assert all(v <= 0 for v in lp["token_logprobs"]) and all(len(t) <= 2 for t in lp["top_logprobs"])
        assert "\n" not in c["text"]


def test_min_tokens_holds_end_of_text_back_and_must_fit_max_tokens(client):
    body = {"model": "g", "prompt": "apple", "max_tokens": 40, "n": 2, "seed": 1, "min_tokens": 40}
    res = client.post("/v1/completions", json=body).json()
    assert [c["finish_reason"] for c in res["choices"]] == ["length", "length"]
    assert res["usage"]["completion_tokens"] == 80
    err = _error(client.post("/v1/completions", json={**body, "min_tokens": 41}), 400, param="min_tokens")
    assert "at most max_tokens (40)" in err["message"]
    native = {"model": "g", "prompt": "apple", "stream": False, "options": {"num_predict": 40, "seed": 1, "min_tokens": 40}}
    res = client.post("/api/generate", json=native).json()
    assert res["done_reason"] == "length" and res["eval_count"] == 40
    native["options"]["min_tokens"] = 41
    err = _error(client.post("/api/generate", json=native), 400, param="options.min_tokens")
    assert "at most num_predict (40)" in err["message"]


def test_chat_stream_with_usage_and_logprobs(client):
    res = client.post("/v1/chat/completions", json={
        "model": "g", "messages": [{"role": "user", "content": "apple"}], "stream": True, "max_tokens": 10,
        "seed": 3, "logprobs": True, "top_logprobs": 1, "stream_options": {"include_usage": True}})
    assert res.headers["content-type"].startswith("text/event-stream")
    chunks = _sse(res.text)
    assert chunks[0]["choices"][0]["delta"]["role"] == "assistant"
    assert chunks[-1]["choices"] == [] and chunks[-1]["usage"]["completion_tokens"] >= 1
    finals = [c for c in chunks[:-1] if c["choices"][0]["finish_reason"]]
    assert len(finals) == 1 and finals[0]["choices"][0]["finish_reason"] in ("stop", "length")
    text = "".join(c["choices"][0]["delta"].get("content", "") for c in chunks[:-1])
    whole = client.post("/v1/chat/completions", json={"model": "g", "messages": [{"role": "user", "content": "apple"}],
                                                      "max_tokens": 10, "seed": 3}).json()
    assert whole["choices"][0]["message"]["content"] == text
    assert whole["object"] == "chat.completion"


def test_native_generate_ndjson_log_and_feedback(client):
    res = client.post("/api/generate", json={"model": "g", "prompt": "apple", "cond": {"fruit": "apple"},
                                             "options": {"num_predict": 12, "seed": 2}})
    lines = [json.loads(line) for line in res.text.splitlines()]
    final = lines[-1]
    assert final["done"] is True and all(not x["done"] for x in lines[:-1])
    assert final["eval_count"] >= 1 and final["prompt_eval_count"] >= 1 and final["total_duration"] > 0
    text = "".join(x["response"] for x in lines[:-1])
    row = client.get(f"/api/generations/{final['id']}").json()
    assert row["output"]["texts"] == [text] and row["endpoint"] == "/api/generate" and row["run"] == "g"
    assert row["options"]["cond"] == {"fruit": "apple"} and row["options"]["num_predict"] == 12
    assert client.post("/api/feedback", json={"generation_id": final["id"], "rating": "up",
                                              "comment": "好"}).status_code == 201
    row = client.get(f"/api/generations/{final['id']}").json()
    assert [(f["rating"], f["comment"]) for f in row["feedback"]] == [(1, "好")]
    listed = client.get("/api/generations", params={"run": "g"}).json()["generations"]
    assert any(g["id"] == final["id"] and g["up"] == 1 for g in listed)
    _error(client.post("/api/feedback", json={"generation_id": "gen-nope", "rating": "up"}), 404)
    _error(client.post("/api/feedback", json={"generation_id": final["id"], "rating": "meh"}), 400, param="rating")
    _error(client.post("/api/feedback", json={"generation_id": final["id"], "rating": "up", "sample_index": 3}), 400)


def test_images_b64_and_url(client):
    res = client.post("/v1/images/generations", json={"model": "d", "prompt": "top", "n": 2, "seed": 1, "steps": 2,
                                                      "size": "8x8"})
    assert res.status_code == 200, res.text
    body = res.json()
    assert body["label"] == "top" and len(body["data"]) == 2
    img = Image.open(io.BytesIO(base64.b64decode(body["data"][0]["b64_json"])))
    assert img.size == (8, 8)
    again = client.post("/v1/images/generations", json={"model": "d", "label": "top", "n": 2, "seed": 1,
                                                        "steps": 2}).json()
    pixels = [[np.asarray(Image.open(io.BytesIO(base64.b64decode(d["b64_json"])))).tolist() for d in b["data"]]
              for b in (body, again)]
    assert pixels[0] == pixels[1], "same seed, same images"  # (their labels name each generation)
    url = client.post("/v1/images/generations", json={"model": "d", "n": 1, "steps": 2,
                                                      "response_format": "url"}).json()["data"][0]["url"]
    png = client.get(url.replace("http://testserver", ""))
    assert png.status_code == 200 and png.headers["content-type"] == "image/png"


def test_runs_datasets_and_studio_page(client):
    runs = {r["name"]: r for r in client.get("/api/runs").json()["runs"]}
    assert runs["g"]["modality"] == "text" and runs["g"]["conditions"]["fruit"] == ["apple", "kiwi"]
    assert runs["d"]["modality"] == "image" and runs["d"]["classes"] == ["bottom", "top"]
    detail = client.get("/api/runs/d").json()
    assert detail["curve"]["val"] and detail["images"]
    assert client.get(f"/api/runs/d/files/{detail['images'][0]}").headers["content-type"] == "image/png"
    assert {d["name"] for d in client.get("/api/datasets").json()["datasets"]} >= {"fruit", "blocks"}
    assert client.get("/api/datasets/blocks").json()["has_preview"] is True
    page = client.get("/")
    assert page.status_code == 200 and "aigc-studio" in page.text
    assert client.get("/static/app.js").status_code == 200


def test_metrics(client):
    def counted() -> float:
        lines = [x for x in client.get("/metrics").text.splitlines() if x.startswith("aigc_tokens_generated_total")]
        return float(lines[0].split()[-1]) if lines else 0.0

    before, made = counted(), 0
    for seed in range(5):  # a sample may end at once (its first token the end of text): then ask again
        r = client.post("/v1/completions", json={"model": "g", "prompt": "apple", "max_tokens": 5, "seed": seed})
        made += r.json()["usage"]["completion_tokens"]
        if made:
            break
    assert made >= 1 and counted() - before == made
    text = client.get("/metrics").text
    for name in ("aigc_tokens_generated_total", "aigc_time_to_first_token_seconds_bucket",
                 "aigc_request_latency_seconds_bucket", "aigc_queue_depth", "aigc_active_batch_rows",
                 'aigc_http_requests_total{path="/v1/completions",status="200"}'):
        assert name in text, name


@pytest.mark.parametrize("method,path,body,status,param", [
    ("post", "/v1/completions", "{not json", 400, None),
    ("post", "/v1/completions", {"model": "g", "prompt": "a", "temperature": "hot"}, 400, "temperature"),
    ("post", "/v1/completions", {"model": "g", "prompt": 7}, 400, None),
    ("post", "/v1/completions", {"model": "nope", "prompt": "a"}, 404, None),
    ("post", "/v1/completions", {"model": "g", "prompt": "a", "n": 5}, 400, "n"),
    ("post", "/v1/completions", {"model": "g", "prompt": "a", "max_tokens": 65}, 400, "max_tokens"),
    ("post", "/v1/completions", {"model": "g", "prompt": "a", "frobnicate": 1}, 400, "frobnicate"),
    ("post", "/v1/completions", {"model": "g", "prompt": "a", "presence_penalty": 1}, 400, None),
    ("post", "/v1/completions", {"model": "g", "prompt": "x" * 20_000}, 400, "prompt"),
    ("post", "/v1/completions", {"model": "g", "prompt": "Ωmega"}, 400, None),
    ("post", "/v1/completions", {"model": "g", "prompt": "a", "stop": ["a", "b", "c", "d", "e"]}, 400, "stop"),
    ("post", "/v1/completions", {"model": "g", "prompt": "a", "cond": {"fruit": "durian"}}, 400, None),
    ("post", "/v1/completions", {"model": "d", "prompt": "a"}, 400, None),
    ("post", "/v1/chat/completions", {"model": "g", "messages": []}, 400, "messages"),
    ("post", "/v1/chat/completions", {"model": "g", "messages": [{"role": "robot", "content": "a"}]}, 400, None),
    ("post", "/v1/images/generations", {"model": "d", "size": "64x64"}, 400, "size"),
    ("post", "/v1/images/generations", {"model": "d", "label": "left"}, 400, "label"),
    ("post", "/v1/images/generations", {"model": "d", "n": 5}, 400, "n"),
    ("post", "/v1/images/generations", {"model": "d", "steps": 0}, 400, "steps"),
    ("post", "/v1/images/generations", {"model": "g"}, 400, "model"),
    ("post", "/api/generate", {"model": "g", "options": {"num_predict": 1000}}, 400, "num_predict"),
    ("post", "/api/generate", {"model": "g", "keep_alive": "soon"}, 400, "keep_alive"),
    ("get", "/api/generations/gen-unknown", None, 404, None),
    ("get", "/api/runs/nope", None, 404, None),
    ("get", "/v2/anything", None, 404, None),
])
def test_bad_input_is_a_4xx_with_the_error_envelope(client, method, path, body, status, param):
    if body is None:
        res = client.request(method, path)
    elif isinstance(body, str):
        res = client.request(method, path, content=body, headers={"content-type": "application/json"})
    else:
        res = client.request(method, path, json=body)
    _error(res, status, param=param)


def test_body_size_limit(served_ws):
    with TestClient(create_app(served_ws, Settings(max_body_bytes=1000))) as c:
        err = _error(c.post("/v1/completions", json={"model": "g", "prompt": "a" * 2000}), 413, code="body_too_large")
    assert "1000" in err["message"]


def test_a_chunked_body_over_the_limit_is_refused_without_reading_it_all():
    """A body with no Content-Length: the gate reads it up to the limit, answers 413 and never
    asks for the rest (nor calls the app)."""
    import asyncio

    from aigc.server.metrics import ServerMetrics

    limit, chunk, total = 1000, 100, 10 << 20
    reads, sent = [], []

    async def receive():
        reads.append(chunk)
        return {"type": "http.request", "body": b"x" * chunk, "more_body": len(reads) * chunk < total}

    async def send(message):
        sent.append(message)

    async def app(scope, receive, send):
        raise AssertionError("the app must not see an oversized body")

    gate = Gate(app, {"ws": None, "settings": Settings(max_body_bytes=limit), "metrics": ServerMetrics()})
    scope = {"type": "http", "method": "POST", "path": "/health", "headers": [(b"transfer-encoding", b"chunked")]}
    asyncio.run(gate(scope, receive, send))
    assert sent[0]["status"] == 413
    assert json.loads(sent[1]["body"])["error"]["code"] == "body_too_large"
    assert sum(reads) == limit + chunk  # stopped at the first chunk past the limit


@pytest.mark.own_catalog
def test_api_keys(served_ws, tmp_path, monkeypatch):
    import aigc

    ws = aigc.open_workspace(tmp_path / "keyed")
    shutil.copytree(served_ws.root / "runs", ws.root / "runs", dirs_exist_ok=True)
    monkeypatch.setattr(Gate, "KEY_TTL", 0.0)
    with TestClient(create_app(ws, Settings(**SMALL))) as c:
        assert c.get("/v1/models").status_code == 200  # no key exists yet: open
        key_id, key = keys.create_key(ws, "tests")
        _, other = keys.create_key(ws, "other")
        assert key.startswith("aigc-") and key not in json.dumps(keys.list_keys(ws))  # only the hash is kept
        _error(c.get("/v1/models"), 401, code="invalid_api_key")
        _error(c.get("/v1/models", headers={"Authorization": "Bearer wrong"}), 401, code="invalid_api_key")
        assert c.get("/v1/models", headers={"Authorization": f"Bearer {key}"}).status_code == 200
        assert c.get("/api/runs", headers={"Authorization": f"Bearer {key}"}).status_code == 200
        assert c.get("/health").status_code == 200 and c.get("/").status_code == 200  # open routes
        keys.revoke_key(ws, key_id)
        _error(c.get("/v1/models", headers={"Authorization": f"Bearer {key}"}), 401)
        assert c.get("/v1/models", headers={"Authorization": f"Bearer {other}"}).status_code == 200


def test_cors_is_off_by_default_and_configurable(served_ws):
    origin = {"Origin": "http://shop.example", "Access-Control-Request-Method": "POST"}
    with TestClient(create_app(served_ws, Settings())) as c:
        assert "access-control-allow-origin" not in c.options("/v1/completions", headers=origin).headers
    with TestClient(create_app(served_ws, Settings(cors_origins=["http://shop.example"]))) as c:
        res = c.options("/v1/completions", headers=origin)
        assert res.headers["access-control-allow-origin"] == "http://shop.example"


def test_no_log_records_nothing(served_ws):
    before = len(logbook.list_generations(served_ws, limit=500))
    with TestClient(create_app(served_ws, Settings(log=False))) as c:
        gid = c.post("/v1/completions", json={"model": "g", "prompt": "apple", "max_tokens": 3}).json()["id"]
        _error(c.get(f"/api/generations/{gid}"), 404)
    assert len(logbook.list_generations(served_ws, limit=500)) == before


# -- a real uvicorn server ----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def live(served_ws):
    with LiveServer(served_ws, Settings(**SMALL)) as server:
        yield server


def test_openai_client_completions_chat_and_images(live):
    from openai import OpenAI

    client = OpenAI(base_url=live.url + "/v1", api_key="unused", max_retries=0)
    assert {"g", "l", "d"} <= {m.id for m in client.models.list()}
    c = client.completions.create(model="g", prompt="apple", max_tokens=12, seed=4, temperature=1.0,
                                  extra_body={"cond": {"fruit": "apple"}})
    streamed = "".join(ch.choices[0].text for ch in client.completions.create(
        model="g", prompt="apple", max_tokens=12, seed=4, temperature=1.0, stream=True,
        extra_body={"cond": {"fruit": "apple"}}))
    assert c.choices[0].text == streamed and c.usage.completion_tokens >= 1
    chat = client.chat.completions.create(model="l", messages=[{"role": "user", "content": "apple"}],
                                          max_tokens=10, seed=1)
    chunks = list(client.chat.completions.create(model="l", messages=[{"role": "user", "content": "apple"}],
                                                 max_tokens=10, seed=1, stream=True,
                                                 stream_options={"include_usage": True}))
    assert "".join(ch.choices[0].delta.content or "" for ch in chunks if ch.choices) == chat.choices[0].message.content
    assert chunks[-1].usage.completion_tokens == chat.usage.completion_tokens
    images = client.images.generate(model="d", prompt="bottom", n=2, response_format="b64_json",
                                    extra_body={"seed": 3, "steps": 2})
    assert len(images.data) == 2 and Image.open(io.BytesIO(base64.b64decode(images.data[0].b64_json))).size == (8, 8)
    from openai import BadRequestError, NotFoundError

    with pytest.raises(NotFoundError, match="unknown run"):
        client.completions.create(model="nope", prompt="a")
    with pytest.raises(BadRequestError, match="max_tokens"):
        client.completions.create(model="g", prompt="a", max_tokens=10_000)


def test_httpx_ndjson_stream_and_curl(live):
    with httpx.Client(base_url=live.url, timeout=30) as h:
        with h.stream("POST", "/api/generate", json={"model": "g", "prompt": "apple",
                                                     "options": {"num_predict": 10, "seed": 1}}) as res:
            assert res.headers["content-type"] == "application/x-ndjson"
            lines = [json.loads(line) for line in res.iter_lines() if line]
    assert lines[-1]["done"] and lines[-1]["eval_count"] >= 1
    if shutil.which("curl") is None:
        pytest.skip("curl is not installed")
    out = subprocess.run(["curl", "-sN", live.url + "/api/generate", "-d",  # no content type, as in the README
                          json.dumps({"model": "g", "prompt": "apple", "options": {"num_predict": 10, "seed": 1}})],
                         capture_output=True, text=True, timeout=60, check=True).stdout
    curl_lines = [json.loads(line) for line in out.splitlines() if line]
    assert [x["response"] for x in curl_lines[:-1]] == [x["response"] for x in lines[:-1]]


def test_concurrent_http_requests_each_get_what_they_get_alone(live):
    def ask(seed):
        with httpx.Client(base_url=live.url, timeout=60) as h:
            return h.post("/v1/completions", json={"model": "g", "prompt": "apple", "max_tokens": 30,
                                                   "temperature": 1.0, "seed": seed}).json()["choices"][0]["text"]

    alone = [ask(s) for s in range(4)]
    results = [None] * 4
    threads = [threading.Thread(target=lambda i=i: results.__setitem__(i, ask(i))) for i in range(4)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    assert results == alone


def test_a_client_that_disconnects_mid_stream_frees_its_slot(served_ws, monkeypatch):
    never_ending_text(monkeypatch, served_ws)
    # safety off: the output rail would hold all 64 tokens back (no sentence ends), and this test
    # hangs up after the first chunk
    with LiveServer(served_ws, Settings(**SMALL, safety=False)) as live:
        with httpx.Client(base_url=live.url, timeout=30) as h:
            with h.stream("POST", "/api/generate", json={"model": "g", "prompt": "apple",
                                                         "options": {"num_predict": 64, "temperature": 1.5}}) as res:
                gid = res.headers["x-generation-id"]
                next(res.iter_lines())  # one chunk, then hang up
        deadline = time.time() + 10
        while time.time() < deadline:
            try:
                row = logbook.get(served_ws, gid)
                break
            except aigc.NotFound:
                time.sleep(0.05)
        assert row["status"] == "cancelled" and row["completion_tokens"] < 64
        assert live.engine.stats()["active_rows"] == 0
        assert httpx.get(live.url + "/health").status_code == 200


def test_a_10_mb_chunked_body_is_a_413_and_a_small_one_is_served(live):
    def chunks(size):
        for _ in range(size // 65536):
            yield b" " * 65536

    with httpx.Client(base_url=live.url, timeout=60) as h:
        res = h.post("/v1/completions", content=chunks(10 << 20), headers={"content-type": "application/json"})
        assert "content-length" not in res.request.headers  # really chunked
        err = _error(res, 413, code="body_too_large")
        assert str(Settings().max_body_bytes) in err["message"]

        def small():
            yield b'{"model": "g", "prompt": '
            yield b'"apple", "max_tokens": 3}'

        ok = h.post("/v1/completions", content=small(), headers={"content-type": "application/json"})
        assert ok.status_code == 200 and ok.json()["usage"]["completion_tokens"] >= 1


def test_a_bug_of_ours_is_a_500_in_the_envelope_and_the_connection_lives(live, monkeypatch):
    from aigc.server.routers import openai as openai_routes

    def broken(*args, **kwargs):
        raise KeyError("a bug")

    monkeypatch.setattr(openai_routes, "_text_request", broken)
    with OneConnection(live.url) as conn:
        answer = conn.post_json("/v1/completions", {"model": "g", "prompt": "apple", "max_tokens": 3})
        error = assert_error_envelope(answer, 500)
        assert error["type"] == "server_error" and "KeyError" in error["message"] and "retry-after" not in answer.headers
        monkeypatch.undo()
        assert conn.post_json("/v1/completions", {"model": "g", "prompt": "apple", "max_tokens": 3}).status == 200
        assert conn.alive()


def test_path_traversal_reaches_the_file_handlers_and_is_refused(live, served_ws):
    """Paths sent byte for byte (a client library would resolve the dots first): literal ``..``,
    ``%2e%2e`` and ``..%2f`` all reach the handlers, which refuse every file outside their folder,
    and still serve their own files."""
    outside = served_ws.root / "datasets" / "blocks" / "preview.png"  # a PNG, but not the run's
    assert outside.is_file()
    with OneConnection(live.url) as conn:
        images = conn.request("GET", "/api/runs/d").json()["images"]
        own = conn.request("GET", f"/api/runs/d/files/{images[0]}")
        assert own.status == 200 and own.body[:8] == b"\x89PNG\r\n\x1a\n"
        for up in ("../../", "%2e%2e/%2e%2e/", "..%2f..%2f", "%2E%2E%2F%2E%2E%2F", "sub/../../../"):
            answer = conn.request("GET", f"/api/runs/d/files/{up}datasets/blocks/preview.png")
            error = assert_error_envelope(answer, 404)
            assert error["message"].startswith("no image"), (up, error)  # said by the handler, not the router
        answer = conn.request("GET", "/api/generations/gen-x/images/%2e%2e")
        assert_error_envelope(answer, 404)
        assert conn.request("GET", "/static/app.js").status == 200
        for up in ("../", "%2e%2e/", "..%2f", "%2e%2e%2f"):
            answer = conn.request("GET", f"/static/{up}app.py")  # src/aigc/server/app.py, beside static/
            assert answer.status == 404 and b"create_app" not in answer.body, (up, answer.status)
        assert conn.alive()


def test_guidance_passes_through_to_the_engine(client, monkeypatch):
    engine = client.app.state.shared["engine"]
    seen = []
    submit = engine.submit
    monkeypatch.setattr(engine, "submit", lambda req, *a: seen.append(req) or submit(req, *a))
    cond = {"fruit": "apple"}
    assert client.post("/v1/completions", json={"model": "g", "prompt": "apple", "max_tokens": 3, "cond": cond,
                                                "guidance": 2.5}).status_code == 200
    assert client.post("/v1/chat/completions", json={"model": "g", "messages": [{"role": "user", "content": "a"}],
                                                     "max_tokens": 3, "cond": cond, "guidance": 1.5}).status_code == 200
    assert client.post("/api/generate", json={"model": "g", "prompt": "apple", "stream": False, "cond": cond,
                                              "guidance": 3, "options": {"num_predict": 3}}).status_code == 200
    assert client.post("/api/generate", json={"model": "g", "prompt": "apple", "stream": False,
                                              "options": {"num_predict": 3}}).status_code == 200
    assert [r.guidance for r in seen] == [2.5, 1.5, 3.0, 1.0]  # 1.0: the engine's default, no guidance
    for bad in (0, -1, 21, "strong", float("nan")):
        for path, body in (("/v1/completions", {"model": "g", "prompt": "a"}),
                           ("/api/generate", {"model": "g", "prompt": "a"})):
            res = client.post(path, content=json.dumps({**body, "guidance": bad}),
                              headers={"content-type": "application/json"})
            _error(res, 400, param="guidance")


def test_a_full_queue_answers_429_with_retry_after(served_ws, monkeypatch):
    never_ending_text(monkeypatch, served_ws)
    with LiveServer(served_ws, Settings(max_batch=1, max_queue=1, max_tokens=5000)) as server:
        with httpx.Client(base_url=server.url, timeout=30) as h:
            body = {"model": "g", "prompt": "apple", "options": {"num_predict": 5000, "temperature": 1.5}}
            with h.stream("POST", "/api/generate", json=body) as running:
                lines = running.iter_lines()  # keep a reference: a collected iterator closes the stream
                next(lines)  # it holds the only row
                queued = threading.Thread(target=lambda: httpx.post(server.url + "/api/generate", timeout=60, json={
                    "model": "g", "prompt": "apple", "options": {"num_predict": 3}}))  # a client of its own
                queued.start()
                deadline = time.time() + 10
                while server.engine.stats()["queue_depth"] < 1 and time.time() < deadline:
                    time.sleep(0.01)
                assert server.engine.stats()["active_rows"] == 1
                res = httpx.post(server.url + "/api/generate", json={"model": "g", "prompt": "apple"}, timeout=30)
                err = _error(res, 429, code="queue_full")
                assert int(res.headers["retry-after"]) >= 1 and "queue is full" in err["message"]
            queued.join(timeout=30)
            assert h.get("/health").status_code == 200


@pytest.mark.own_catalog
def test_a_run_deleted_while_serving_keeps_serving_what_is_loaded(served_ws, tmp_path):
    ws = aigc.open_workspace(tmp_path / "w")
    shutil.copytree(served_ws.root / "runs" / "g", ws.root / "runs" / "g")
    from aigc.workspace import runs_table

    with served_ws.engine.connect() as conn:
        row = dict(conn.execute(runs_table.select().where(runs_table.c.name == "g")).mappings().first())
    with ws.engine.begin() as conn:
        conn.execute(runs_table.insert().values(**row))
    with LiveServer(ws, Settings(**SMALL)) as server, httpx.Client(base_url=server.url, timeout=30) as h:
        assert h.post("/v1/completions", json={"model": "g", "prompt": "apple", "max_tokens": 3}).status_code == 200
        shutil.rmtree(ws.run_path("g"))
        assert h.post("/v1/completions", json={"model": "g", "prompt": "apple", "max_tokens": 3}).status_code == 200
        server.engine.unload("g")
        err = _error(h.post("/v1/completions", json={"model": "g", "prompt": "apple", "max_tokens": 3}), 404)
        assert "cannot be loaded" in err["message"]
        assert h.get("/health").status_code == 200
