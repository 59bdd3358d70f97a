"""Reranking through the engine and the HTTP server: a request with ``rerank`` N draws N candidates
per sample in one sequence group and returns the judge's picks (aigc.rerank); the judge is fitted on
the loader thread, once per loaded run; what cannot rerank (a stream, a run without conditions, too
many rows) is a 400 that says why."""

from __future__ import annotations

import threading

import pytest
from fastapi.testclient import TestClient

import aigc
from aigc import engine as engine_module
from aigc import logbook
from aigc.engine import Engine, TextEvent, TextRequest
from aigc.errors import InvalidInput
from aigc.generation import Sampling
from aigc.rerank import judge_for_run
from aigc.server import Settings, create_app

from helpers import LiveServer, write_fruit_csv

KIWI = {"fruit": "kiwi"}
DRAW = dict(max_new_tokens=16, temperature=1.0, seed=1)  # a seed whose picks are not the first draws


@pytest.fixture(scope="module")
def ws(tmp_path_factory):
    """A tiny conditional gpt "g" (fruit=apple|kiwi) and an unconditional one "u" on the same texts."""
    root = tmp_path_factory.mktemp("rerank")
    ws = aigc.open_workspace(root / "ws")
    csv = write_fruit_csv(root / "fruit.csv")
    aigc.ingest(csv, "fruit", workspace=ws, text_column="text", cond_columns=["fruit"])
    aigc.ingest(csv, "plain", workspace=ws, text_column="text")
    aigc.train("fruit", family="gpt", preset="tiny", name="g", workspace=ws, max_steps=30)
    aigc.train("plain", family="gpt", preset="tiny", name="u", workspace=ws, max_steps=2)
    return ws


@pytest.fixture(scope="module")
def picks(ws):
    """What 2 samples reranked from 3 candidates each must be: the judge's picks of the 6 texts the
    plain generator draws with the same seed."""
    drawn = aigc.load("g", workspace=ws).generate("", n=6, cond=KIWI, **DRAW)
    chosen = judge_for_run(ws, "g").pick(drawn, KIWI, 2)
    assert chosen != drawn[:2], "the fixture's seed must make the judge pick other than the first draws"
    return drawn, chosen


def _req(**kw) -> TextRequest:
    return TextRequest(model=kw.pop("model", "g"), sampling=Sampling(**DRAW), **kw)


def test_the_engine_returns_the_judges_picks_of_n_x_rerank_draws(ws, picks):
    drawn, chosen = picks
    engine = Engine(ws, max_batch=8, log=False)
    try:
        handle = engine.submit(_req(cond=KIWI, n=2, rerank=3))
        events = [ev for ev in handle if isinstance(ev, TextEvent)]
        result = handle.result
        plain = engine.generate(_req(cond=KIWI, n=6))
    finally:
        engine.close()
    assert plain.texts == drawn  # the candidates are the draws of n x rerank samples
    assert result.texts == chosen
    assert result.finish_reasons == [plain.finish_reasons[drawn.index(t)] for t in chosen]
    # the picks go out whole, one event each, as samples 0 and 1; no candidate's text goes out
    assert [(ev.index, ev.text) for ev in events] == [(0, chosen[0]), (1, chosen[1])]
    assert all(ev.finish_reason for ev in events)
    assert result.completion_tokens == plain.completion_tokens  # every candidate's tokens are counted


def test_the_judge_is_fitted_on_the_loader_thread_once_per_loaded_run(ws, monkeypatch):
    fits = []

    def judge_for_run_spy(*args, **kw):
        fits.append(threading.current_thread().name)
        return judge_for_run(*args, **kw)

    monkeypatch.setattr(engine_module, "judge_for_run", judge_for_run_spy)
    engine = Engine(ws, max_batch=8, log=False)
    try:
        engine.generate(_req(cond=KIWI, n=1))
        assert fits == []  # no rerank asked: no judge
        engine.generate(_req(cond=KIWI, n=1, rerank=2))
        engine.generate(_req(cond={"fruit": "apple"}, n=2, rerank=4))
        assert len(fits) == 1 and fits[0].startswith("aigc-load")
        assert engine.unload("g")
        engine.generate(_req(cond=KIWI, n=1, rerank=2))  # unloaded with its run: fitted again
        assert len(fits) == 2
    finally:
        engine.close()


def test_the_engine_refuses_what_cannot_rerank(ws):
    engine = Engine(ws, max_batch=8, log=False)
    try:
        with pytest.raises(InvalidInput, match="run 'u' has no text conditions to judge"):
            engine.submit(_req(model="u", rerank=2))
        for bad in (0, -1, 2.5, "3"):
            with pytest.raises(InvalidInput, match="rerank must be a whole number >= 1"):
                engine.submit(_req(cond=KIWI, rerank=bad))
        too_wide = [
            (dict(n=3, rerank=3), r"n is 3 with rerank 3, .*: 9 rows; .* at most 8 rows, "
                                  r"so n can be at most 2 \(or lower rerank\)"),
            (dict(n=1, rerank=9), "so rerank can be at most 8"),
            (dict(n=2, rerank=3, guidance=2.0), "rerank 3, .* and guidance, .*: 12 rows; .* at most 1")]
        for kw, match in too_wide:
            with pytest.raises(InvalidInput, match=match):
                engine.submit(_req(cond=KIWI, **kw))
        # without cond there is nothing to judge: rerank is 1, and nothing extra is drawn
        assert engine.generate(_req(n=2, rerank=3)).texts == engine.generate(_req(n=2)).texts
    finally:
        engine.close()


def test_the_engine_process_reranks_too(ws, picks):
    from aigc.engine_process import EngineProcess

    engine = EngineProcess(ws, max_batch=8, threads=1, log=False)  # what `aigc serve` runs
    try:
        assert engine.generate(_req(cond=KIWI, n=2, rerank=3)).texts == picks[1]
        with pytest.raises(InvalidInput, match="no text conditions"):
            engine.submit(_req(model="u", rerank=2))
    finally:
        engine.close()


def test_python_api_generate_reranks(ws, picks):
    assert aigc.generate("g", "", workspace=ws, n=2, cond=KIWI, rerank=3, **DRAW) == picks[1]
    with pytest.raises(InvalidInput, match="no text conditions"):
        aigc.generate("u", "", workspace=ws, rerank=2, max_new_tokens=4)


# -- HTTP ---------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def client(ws):
    with TestClient(create_app(ws, Settings(max_batch=8, max_tokens=64))) as c:
        yield c


def _error(res, param="rerank") -> str:
    assert res.status_code == 400, res.text
    err = res.json()["error"]
    assert err["param"] == param, err
    return err["message"]


def test_http_rerank_returns_the_picks_on_every_text_route(client, ws, picks):
    chosen = picks[1]
    draw = {"temperature": 1.0, "seed": 1, "cond": KIWI, "rerank": 3}
    done = client.post("/v1/completions", json={"model": "g", "prompt": "", "max_tokens": 16, "n": 2,
                                                "logprobs": 1, **draw}).json()
    assert [c["text"] for c in done["choices"]] == chosen
    for c in done["choices"]:  # the pick's own tokens (and its end-of-text)
        assert "".join(t for t in c["logprobs"]["tokens"] if not t.startswith("<|")) == c["text"]
    assert logbook.get(ws, done["id"])["options"]["rerank"] == 3
    messages = [{"role": "user", "content": ""}]
    chat = client.post("/v1/chat/completions", json={"model": "g", "messages": messages, "max_tokens": 16,
                                                     "n": 2, **draw}).json()
    assert [c["message"]["content"] for c in chat["choices"]] == chosen
    assert chat["usage"]["completion_tokens"] == done["usage"]["completion_tokens"]  # all 6 candidates'
    options = {"num_predict": 16, "temperature": 1.0, "seed": 1}
    native = client.post("/api/generate", json={"model": "g", "prompt": "", "cond": KIWI, "rerank": 6,
                                                "stream": False, "options": options}).json()
    assert native["response"] == judge_for_run(ws, "g").pick(picks[0], KIWI, 1)[0]


def test_http_refuses_what_cannot_rerank(client):
    completion = {"model": "g", "prompt": "", "max_tokens": 4, "cond": KIWI}
    message = _error(client.post("/v1/completions", json={**completion, "rerank": 2, "stream": True}))
    assert "cannot stream" in message and '"stream": false' in message
    chat = {"model": "g", "messages": [{"role": "user", "content": "a"}], "max_tokens": 4, "cond": KIWI}
    chat_res = client.post("/v1/chat/completions", json={**chat, "rerank": 2, "stream": True})
    assert "cannot stream" in _error(chat_res)
    native = {"model": "g", "prompt": "", "cond": KIWI, "options": {"num_predict": 4}}
    native_res = client.post("/api/generate", json={**native, "rerank": 2})  # it streams by default
    assert "cannot stream" in _error(native_res)
    unconditional = client.post("/v1/completions", json={**completion, "model": "u", "cond": None,
                                                          "rerank": 2})
    assert "no text conditions to judge" in _error(unconditional, None)
    wide = client.post("/v1/completions", json={**completion, "n": 3, "rerank": 3})
    assert "n 3 x rerank 3 is 9 samples" in _error(wide)
    for bad in (0, 17, 2.5, "many"):
        _error(client.post("/v1/completions", json={**completion, "rerank": bad}))
        _error(client.post("/api/generate", json={**native, "stream": False, "rerank": bad}))
    # rerank 1 is no reranking, and streams
    assert client.post("/v1/completions", json={**completion, "rerank": 1, "stream": True}).status_code == 200


def test_openai_client_sends_rerank_as_an_extra(ws, picks):
    from openai import OpenAI

    with LiveServer(ws, Settings(max_batch=8, max_tokens=64)) as live:
        client = OpenAI(base_url=live.url + "/v1", api_key="unused", max_retries=0)
        c = client.completions.create(model="g", prompt="", max_tokens=16, n=2, seed=1, temperature=1.0,
                                      extra_body={"cond": KIWI, "rerank": 3})
    assert [choice.text for choice in c.choices] == picks[1]
