"""Feedback steers generation online: ratings posted on logged generations (thumbs, choices, edits)
update the run's reward model (aigc.feedback.store, runs/<name>/reward.npz), and a request with
``rerank_by: "feedback"`` keeps the candidate that model scores highest. Bad ratings are 4xx and
write nothing; the model survives a reload of the store, and a process that serves (the engine's
child) reads what another saved."""

from __future__ import annotations

import sqlite3

import pytest
from fastapi.testclient import TestClient

import aigc
from aigc import logbook
from aigc.engine import Engine, TextRequest
from aigc.errors import InvalidInput, NotFound
from aigc.feedback import store
from aigc.generation import Sampling
from aigc.server import Settings, create_app
from aigc.workspace import Workspace, feedback_table

from helpers import LiveServer, fruit_gpt_workspace

DRAW = dict(max_new_tokens=16, temperature=1.0)
PLANTED = "e"  # the planted taste: outputs without this character (in about a third of the tiny run's)


@pytest.fixture(scope="module")
def ws(tmp_path_factory):
    """A tiny gpt "g" (fruit=apple|kiwi; asked without cond, it mixes English and Chinese)."""
    return fruit_gpt_workspace(tmp_path_factory.mktemp("feedback"), steps=30)


@pytest.fixture(autouse=True)
def no_ratings(ws):
    """Every test starts with run g unrated (the files gone: the store reads that as no model)."""
    for name in (store.MODEL_FILE, store.STATS_FILE):
        (ws.run_path("g") / name).unlink(missing_ok=True)
    with ws.engine.begin() as conn:  # and the catalog's ratings, which the store would learn again
        conn.execute(feedback_table.delete())


@pytest.fixture(scope="module")
def client(ws):
    with TestClient(create_app(ws, Settings(max_batch=8, max_tokens=64))) as c:
        yield c


def _error(res, status: int, *needles: str, param: str | None = None) -> str:
    assert res.status_code == status, res.text
    err = res.json()["error"]
    assert err["message"] and err["param"] == param, err
    for needle in needles:
        assert needle in err["message"], err["message"]
    return err["message"]


def _complete(client, n: int, seed: int) -> tuple[str, list[str]]:
    """A logged generation of n samples: its id and texts."""
    res = client.post("/v1/completions", json={"model": "g", "prompt": "", "max_tokens": 16, "n": n,
                                               "seed": seed, "temperature": 1.0})
    assert res.status_code == 200, res.text
    return res.json()["id"], [c["text"] for c in res.json()["choices"]]


def _unrated_texts(client, n: int = 3) -> tuple[str, list[str]]:
    """A generation whose n samples are all non-empty and different."""
    for seed in range(20):
        gid, texts = _complete(client, n, seed)
        if all(t.strip() for t in texts) and len(set(texts)) == n:
            return gid, texts
    raise AssertionError("no seed in 0..19 drew n distinct non-empty samples")


def _rerank(client, seed: int, candidates: int = 8) -> str:
    res = client.post("/api/generate", json={"model": "g", "prompt": "", "rerank": candidates, "rerank_by": "feedback",
                                             "stream": False,
                                             "options": {"num_predict": 16, "temperature": 1.0, "seed": seed}})
    assert res.status_code == 200, res.text
    return res.json()["response"]


def _liked(text: str) -> bool:
    return bool(text.strip()) and PLANTED not in text


# -- ratings through HTTP ------------------------------------------------------------------------------


def test_thumbs_choices_and_edits_are_logged_and_learned(client, ws):
    before = client.get("/api/runs/g/feedback").json()
    assert before == {"run": "g", "n_ratings": 0, "by_kind": {"thumb": 0, "choice": 0, "edit": 0}, "last_pick": None}
    assert store.reward_for(ws, "g") is None
    gid, texts = _unrated_texts(client)
    edited = texts[2] + " 好"

    answers = [client.post("/api/feedback", json=body) for body in (
        {"generation_id": gid, "rating": "up", "sample_index": 0, "comment": "nice"},  # the thumb API as it was
        {"generation_id": gid, "choice": 1},
        {"generation_id": gid, "edited": edited, "index": 2})]
    assert [(a.status_code, a.json()["kind"]) for a in answers] == [(201, "thumb"), (201, "choice"), (201, "edit")]

    assert (ws.run_path("g") / "reward.npz").is_file()
    stats = client.get("/api/runs/g/feedback").json()
    assert stats["n_ratings"] == 3 and stats["by_kind"] == {"thumb": 1, "choice": 1, "edit": 1}
    rows = logbook.get(ws, gid)["feedback"]
    assert [(f["kind"], f["rating"], f["sample_index"], f["edited"], f["comment"]) for f in rows] == [
        ("thumb", 1, 0, None, "nice"), ("choice", 1, 1, None, None), ("edit", -1, 2, edited, None)]
    # what each rating taught: the edit beats the text it corrects, the choice beats the others
    model = store.reward_for(ws, "g")
    assert model.n_ratings == 3
    edit_scores = model.score([edited, texts[2]])
    assert edit_scores[0] > edit_scores[1]
    choice_scores = model.score(texts)
    assert choice_scores[1] > choice_scores[2]


def test_bad_feedback_is_a_4xx_that_writes_nothing(client, ws):
    gid, texts = _unrated_texts(client)
    single, _ = _complete(client, 1, 0)
    fullwidth = texts[0].translate({c: c + 0xFEE0 for c in range(0x21, 0x7F)})  # NFKC's half-width: the same text
    assert fullwidth != texts[0]
    cases = [
        ({"generation_id": "gen-nope", "rating": "up"}, 404, ["unknown generation 'gen-nope'"]),
        ({"generation_id": "gen-nope", "choice": 1}, 404, ["unknown generation"]),
        ({"generation_id": gid, "choice": 3}, 400, ["choice must be in 0..2", "got 3"]),
        ({"generation_id": single, "choice": 0}, 400, ["a choice needs a generation of 2 or more samples"]),
        ({"generation_id": gid, "edited": texts[1], "index": 1}, 400, ["edited is the same as sample 1's text"]),
        ({"generation_id": gid, "edited": fullwidth}, 400, ["edited is the same as generated", "once cleaned"]),
        ({"generation_id": gid, "edited": "x", "index": 7}, 400, ["index must be in 0..2", "got 7"]),
        ({"generation_id": gid, "rating": "up", "sample_index": 3}, 400, ["sample_index must be in 0..2"]),
        ({"generation_id": gid}, 400, ["send one of rating", "got none"]),
        ({"generation_id": gid, "rating": "up", "choice": 1}, 400, ["send one of rating", "got rating and choice"]),
        ({"generation_id": gid, "rating": "up", "index": 1}, 400, ["index names the sample an edit corrects"]),
        ({"generation_id": gid, "choice": 1, "sample_index": 1}, 400, ["send the sample once"]),
    ]
    for body, status, needles in cases:
        _error(client.post("/api/feedback", json=body), status, *needles)
    _error(client.post("/api/feedback", json={"generation_id": gid, "rating": "meh"}), 400, param="rating")
    _error(client.post("/api/feedback", json={"generation_id": gid, "edited": ""}), 400, param="edited")
    # nothing was written: no feedback row, no model
    assert logbook.get(ws, gid)["feedback"] == [] and logbook.get(ws, single)["feedback"] == []
    assert not (ws.run_path("g") / "reward.npz").exists()
    assert client.get("/api/runs/g/feedback").json()["n_ratings"] == 0
    _error(client.get("/api/runs/nope/feedback"), 404, "unknown run 'nope'")


def test_rerank_by_feedback_is_refused_until_the_run_is_rated(client, ws):
    _error(client.post("/api/generate", json={"model": "g", "rerank": 4, "rerank_by": "feedback", "stream": False,
                                              "options": {"num_predict": 8}}),
           400, "run 'g' has no feedback yet: rate some outputs first")
    chat = {"model": "g", "messages": [{"role": "user", "content": ""}], "max_tokens": 8, "rerank": 2}
    _error(client.post("/v1/chat/completions", json={**chat, "rerank_by": "feedback"}), 400, "no feedback yet")
    _error(client.post("/v1/completions", json={"model": "g", "max_tokens": 8, "rerank_by": "taste"}), 400,
           "rerank_by", param="rerank_by")
    _error(client.post("/api/generate", json={"model": "g", "rerank": 2, "rerank_by": "feedback", "stream": True}), 400,
           "cannot stream", param="rerank")
    engine = Engine(ws, max_batch=8, log=False)
    try:
        with pytest.raises(InvalidInput, match="rerank_by must be one of 'condition', 'feedback', got 'taste'"):
            engine.submit(TextRequest(model="g", rerank=2, rerank_by="taste"))
    finally:
        engine.close()
    with pytest.raises(InvalidInput, match="no feedback yet"):
        aigc.generate("g", workspace=ws, rerank=2, rerank_by="feedback", max_new_tokens=4)


def test_a_planted_preference_steers_rerank_by_feedback(client, ws):
    """~40 thumbs from a rater who likes outputs without PLANTED; then each reranked output (the best
    of 8 by the reward model) is compared with the first of the same 8 draws and with the best a
    perfect judge could do."""
    rated = 0
    for seed in range(10):
        gid, texts = _complete(client, 4, seed)
        for i, text in enumerate(texts):
            if text.strip():
                res = client.post("/api/feedback", json={"generation_id": gid, "sample_index": i,
                                                         "rating": "up" if _liked(text) else "down"})
                assert res.status_code == 201, res.text
                rated += 1
    assert rated >= 30
    stats = client.get("/api/runs/g/feedback").json()
    assert stats["n_ratings"] == rated and stats["by_kind"] == {"thumb": rated, "choice": 0, "edit": 0}

    first = picked = best = 0
    seeds = range(100, 130)
    for seed in seeds:
        _, candidates = _complete(client, 8, seed)  # what a rerank of 8 draws with this seed
        chosen = _rerank(client, seed)
        assert chosen == store.judge_for(ws, "g", "").pick(candidates, None, 1)[0]
        first += _liked(candidates[0])
        picked += _liked(chosen)
        best += any(_liked(c) for c in candidates)
    first, picked, best = (x / len(seeds) for x in (first, picked, best))
    room = best - first
    assert room >= 0.2, (first, best)  # the draws leave room to steer
    assert picked - first >= room / 2, (first, picked, best)  # feedback won at least half of it

    # the same judge on the OpenAI routes (extra body), and the studio's view of the last pick
    _, candidates = _complete(client, 8, 7)
    expected = store.judge_for(ws, "g", "").pick(candidates, None, 1)
    done = client.post("/v1/completions", json={"model": "g", "prompt": "", "max_tokens": 16, "seed": 7,
                                                "temperature": 1.0, "rerank": 8, "rerank_by": "feedback"}).json()
    assert [c["text"] for c in done["choices"]] == expected
    assert logbook.get(ws, done["id"])["options"]["rerank_by"] == "feedback"
    last = client.get("/api/runs/g/feedback").json()["last_pick"]
    assert last["generation_id"] == done["id"] and last["text"] == expected[0]
    assert last["score"] == pytest.approx(store.reward_for(ws, "g").score(expected)[0])
    assert last["features"] and all(isinstance(f, str) and isinstance(v, float) for f, v in last["features"])


# -- the store -------------------------------------------------------------------------------------------


def test_the_store_survives_a_reload_and_refuses_bad_ratings(ws, monkeypatch):
    texts = ["apple red sweet 1", "猕猴桃 绿色 2", "red red red 3"]
    store.record_thumb(ws, "g", "", texts[0], True)
    store.record_choice(ws, "g", "", texts[1], [texts[0], texts[2]])
    store.record_edit(ws, "g", "", texts[2], "red apple 3")
    scores, stats = store.reward_for(ws, "g").score(texts), store.stats(ws, "g")
    assert stats == {"run": "g", "n_ratings": 3, "by_kind": {"thumb": 1, "choice": 1, "edit": 1}}

    monkeypatch.setattr(store, "_entries", {})  # a fresh process: nothing cached
    reloaded = store.reward_for(ws, "g")
    assert reloaded.score(texts) == scores and store.stats(ws, "g") == stats
    store.record_thumb(ws, "g", "", texts[2], False)
    assert store.stats(ws, "g")["n_ratings"] == 4 and store.reward_for(ws, "g") is reloaded  # learned in place

    for bad, match in [(lambda: store.record_thumb(ws, "g", "", "   ", True), "text is empty"),
                       (lambda: store.record_edit(ws, "g", "", texts[0], texts[0]), "edited is the same"),
                       (lambda: store.record_choice(ws, "g", "", texts[0], []), "others must be a non-empty list")]:
        with pytest.raises(InvalidInput, match=match):
            bad()
    assert store.stats(ws, "g")["n_ratings"] == 4
    with pytest.raises(NotFound, match="unknown run 'nope'"):
        store.record_thumb(ws, "nope", "", "a", True)
    (ws.run_path("g") / store.MODEL_FILE).unlink()  # removed behind the store's back: no model again
    assert store.reward_for(ws, "g") is None and store.stats(ws, "g")["n_ratings"] == 0


RATER = """
import sys, time
from pathlib import Path
from aigc.feedback import store
from aigc.workspace import Workspace
ws, tag, go = Workspace(sys.argv[1]), sys.argv[2], Path(sys.argv[3])
store.stats(ws, "g")  # imports done, the run's entry made
(go.parent / f"ready-{tag}").touch()
while not go.exists():
    time.sleep(0.01)
for i in range(15):
    store.record_thumb(ws, "g", "", f"{tag} apple {i}", i % 2 == 0)
"""


def test_two_processes_rating_one_run_at_once_lose_no_rating(ws, tmp_path):
    """Each process reads the model, learns and saves: without the file lock the later save of two
    at once drops the other's rating."""
    import os
    import subprocess
    import sys
    import time

    go = tmp_path / "go"
    env = {**os.environ, "AIGC_THREADS": "1", "OMP_NUM_THREADS": "1", "AIGC_DB_URL": ws.db_url}  # ws's catalog
    procs = [subprocess.Popen([sys.executable, "-c", RATER, str(ws.root), tag, str(go)], env=env,
                              stderr=subprocess.PIPE, text=True) for tag in ("a", "b")]
    deadline = time.monotonic() + 120
    while not all((tmp_path / f"ready-{t}").exists() for t in "ab") and time.monotonic() < deadline:
        time.sleep(0.01)
    go.touch()  # both start rating together
    for p in procs:
        assert p.wait(timeout=120) == 0, p.stderr.read()
    assert store.stats(ws, "g") == {"run": "g", "n_ratings": 30, "by_kind": {"thumb": 30, "choice": 0, "edit": 0}}


def test_the_engine_process_reads_ratings_saved_after_it_loaded_the_model(ws):
    """`aigc serve` decodes in a child process: its cached model must follow the parent's saves."""
    from aigc.engine_process import EngineProcess

    candidates = aigc.load("g", workspace=ws).generate("", n=4, seed=3, **DRAW)
    assert all(c.strip() for c in candidates) and len(set(candidates)) == 4
    store.record_thumb(ws, "g", "", candidates[0], True)
    req = dict(model="g", rerank=4, rerank_by="feedback", sampling=Sampling(seed=3, **DRAW))
    engine = EngineProcess(ws, max_batch=8, threads=1, log=False)
    try:
        before = engine.generate(TextRequest(**req)).texts
        assert before == store.judge_for(ws, "g", "").pick(candidates, None, 1)
        underdog = next(c for c in candidates if c != before[0])
        for _ in range(20):  # rate the underdog up and the pick down until the parent's model flips
            store.record_choice(ws, "g", "", underdog, [before[0]])
            if store.judge_for(ws, "g", "").pick(candidates, None, 1) == [underdog]:
                break
        assert store.judge_for(ws, "g", "").pick(candidates, None, 1) == [underdog]
        assert engine.generate(TextRequest(**req)).texts == [underdog]
    finally:
        engine.close()
    # and the Python API picks the same from the same draws
    assert aigc.generate("g", "", workspace=ws, rerank=4, rerank_by="feedback", seed=3, **DRAW) == [underdog]


def test_the_openai_client_sends_rerank_by_as_an_extra(ws):
    from openai import OpenAI

    candidates = aigc.load("g", workspace=ws).generate("", n=4, seed=5, **DRAW)
    for text in candidates:
        if text.strip():
            store.record_thumb(ws, "g", "", text, _liked(text))
    with LiveServer(ws, Settings(max_batch=8, max_tokens=64)) as live:
        client = OpenAI(base_url=live.url + "/v1", api_key="unused", max_retries=0)
        chat = client.chat.completions.create(model="g", messages=[{"role": "user", "content": ""}], max_tokens=16,
                                              seed=5, temperature=1.0,
                                              extra_body={"rerank": 4, "rerank_by": "feedback"})
    assert [chat.choices[0].message.content] == store.judge_for(ws, "g", "").pick(candidates, None, 1)


# -- the catalog -----------------------------------------------------------------------------------------


@pytest.mark.sqlite_only
def test_an_older_catalog_gets_the_feedback_kinds(tmp_path):
    """m004 adds ``kind`` and ``edited`` to a feedback table made before them; its rows are thumbs."""
    con = sqlite3.connect(tmp_path / "catalog.db")
    con.executescript("""
        create table schema_migrations (name varchar primary key, applied_at varchar not null);
        insert into schema_migrations values ('m001_initial', 't'), ('m002_serving', 't'), ('m003_bases', 't');
        create table feedback (id integer primary key autoincrement, generation_id varchar not null,
                               created_at varchar not null, rating integer not null,
                               sample_index integer not null, comment text);
        insert into feedback (generation_id, created_at, rating, sample_index) values ('gen-1', 't', -1, 0);
    """)
    con.commit()
    con.close()
    ws = Workspace(tmp_path)
    assert "m004_feedback_kinds" in ws.applied_migrations()
    rows = sqlite3.connect(tmp_path / "catalog.db").execute("select rating, kind, edited from feedback").fetchall()
    assert rows == [(-1, "thumb", None)]
    Workspace(tmp_path)  # opened again: nothing left to apply, nothing fails
