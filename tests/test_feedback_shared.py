"""Machines that share one catalog keep one reward model per run (issue 18): two workspaces with
folders of their own and one catalog (the SQLite file of the first, or under AIGC_TEST_DB=postgresql
the test's database) stand for two `aigc serve` hosts. Ratings go through what ``POST /api/feedback``
runs (the log row, and the store learning from it in the row's transaction); each machine's model
catches up with the rows the other recorded, in the catalog's order, so both end with the model one
workspace given every rating learns."""

from __future__ import annotations

import json
from functools import partial

import pytest
import sqlalchemy as sa

from aigc import logbook
from aigc.apps.copy import experiments
from aigc.feedback import store
from aigc.server.routers.native import _learner
from aigc.server.schemas import FeedbackRequest
from aigc.workspace import Workspace, feedback_table, runs_table

TEXTS = [["linen shirt, breathable", "polyester shirt!!!", "cotton shirt in white"],
         ["羊毛围巾，柔软保暖", "cheap scarf", "wool scarf, soft and warm"],
         ["red apple, crisp", "apple", "green kiwi, sweet and tart"]]
# (generation, body): thumbs, choices and edits on the three generations above
SCRIPT = [(0, {"rating": "up"}), (1, {"choice": 2}), (2, {"rating": "down", "sample_index": 1}),
          (0, {"edited": "linen shirt, cool and breathable", "index": 1}), (1, {"rating": "up"}),
          (2, {"choice": 0}), (0, {"rating": "down", "sample_index": 1}),
          (1, {"rating": "down", "sample_index": 1}),
          (2, {"edited": "green kiwi, sweet", "index": 2}), (0, {"choice": 2})]
PROBES = ["linen dress, breathable", "polyester!!!", "wool socks, warm", "kiwi", "羊毛衫"]


@pytest.fixture(autouse=True)
def no_wait(monkeypatch):
    """Every use looks at the catalog (the throttle has a test of its own)."""
    monkeypatch.setattr(store, "SYNC_EVERY", 0.0)


def _machine(root, db_url: str | None = None) -> Workspace:
    ws = Workspace(root, db_url=db_url)
    ws.run_path("g").mkdir(parents=True, exist_ok=True)  # the run's folder (an artifact store would fetch it)
    return ws


@pytest.fixture
def pair(tmp_path) -> tuple[Workspace, Workspace]:
    """Machines A and B: folders of their own, A's catalog, one run "g" and the generations of TEXTS."""
    a = _machine(tmp_path / "a")
    a.create_run("g", "gpt", "d", {})
    b = _machine(tmp_path / "b", a.db_url)
    return a, b


def _generations(ws: Workspace) -> list[str]:
    return [logbook.record(ws, {"run": "g", "kind": "text", "endpoint": "python", "prompt": "", "options": {},
                                "output": {"texts": texts}, "status": "ok", "latency_ms": 1.0})
            for texts in TEXTS]


def _rate(ws: Workspace, gid: str, body: dict) -> int:
    """What ``POST /api/feedback`` does with ``body`` on machine ``ws``: the row, learned from."""
    req = FeedbackRequest(generation_id=gid, **body)
    add = {"thumb": partial(logbook.add_feedback, ws, gid, req.rating, req.comment, req.sample),
           "choice": partial(logbook.add_choice, ws, gid, req.sample, req.comment),
           "edit": partial(logbook.add_edit, ws, gid, req.edited, req.sample, req.comment)}[req.kind]
    return add(learn=_learner(ws, req))


def _state(ws: Workspace) -> dict:
    """The run's model as a comparable whole: weights, accumulators, recent ratings, replay state."""
    model = store.reward_for(ws, "g")
    state = model.state_dict()
    return {"n": model.n_ratings, "index": state["index"].tolist(), "weights": state["weights"].tolist(),
            "accum": state["accum"].tolist(), "recent": state["recent"], "rng": state["rng"]}


def _scores(ws: Workspace) -> list[float]:
    """How the run's judge (what the engine reranks by) scores PROBES on machine ``ws``."""
    return store.judge_for(ws, "g", "").scores(PROBES).tolist()


def _saved(ws: Workspace) -> dict:
    return json.loads((ws.run_path("g") / store.STATS_FILE).read_text())


def _alone(tmp_path) -> Workspace:
    """One workspace given every rating of SCRIPT (a catalog of its own: SQLite whatever the test DB)."""
    c = _machine(tmp_path / "c", f"sqlite:///{tmp_path / 'c' / 'catalog.db'}")
    c.create_run("g", "gpt", "d", {})
    gids = _generations(c)
    for k, body in SCRIPT:
        _rate(c, gids[k], body)
    return c


def test_ratings_given_on_a_are_learned_by_b_before_it_scores(pair):
    a, b = pair
    gids = _generations(a)
    for k, body in SCRIPT[:6]:
        _rate(a, gids[k], body)
    assert not (b.run_path("g") / store.MODEL_FILE).exists()  # B has no file of its own: only the catalog
    b_scores = _scores(b)
    assert b_scores == _scores(a)
    assert len(set(b_scores)) == len(PROBES)  # a model that learned, not one that scores all alike
    assert store.stats(b, "g") == store.stats(a, "g") == {
        "run": "g", "n_ratings": 6, "by_kind": {"thumb": 3, "choice": 2, "edit": 1}}
    assert _state(b) == _state(a)


def test_ratings_alternating_between_machines_give_both_the_model_of_one_workspace(pair, tmp_path):
    a, b = pair
    gids = _generations(a)
    for i, (k, body) in enumerate(SCRIPT):
        _rate((a, b)[i % 2], gids[k], body)
    alone = _alone(tmp_path)
    assert _state(a) == _state(b) == _state(alone)
    assert _scores(b) == _scores(alone)


def test_no_rating_is_learned_twice(pair, monkeypatch):
    a, b = pair
    gids = _generations(a)
    for i, (k, body) in enumerate(SCRIPT):
        _rate(b if i % 3 == 0 else a, gids[k], body)
    want = {"thumb": 5, "choice": 3, "edit": 2}
    for ws in (a, b):
        store.stats(ws, "g")  # caught up: the other machine's last ratings learned, its own checked off
        saved = _saved(ws)
        assert (saved["counts"], saved["n_ratings"], saved["pending"]) == (want, 10, [])
        assert not (ws.run_path("g") / store.BASE_FILE).exists()  # nothing pending: the model is the base
    monkeypatch.setattr(store, "_entries", {})  # fresh processes: read from the files, caught up again
    assert store.stats(a, "g")["by_kind"] == store.stats(b, "g")["by_kind"] == want
    assert _saved(a)["watermark"] == _saved(b)["watermark"] == len(SCRIPT)


def test_ratings_at_the_same_moment_are_learned_in_the_catalogs_order(pair, tmp_path):
    """A learns its rating at once, in its row's transaction; B's row commits first. A's model
    learns again from the model before its rating, in the catalog's order: B's rating, then A's."""
    a, b = pair
    gids = _generations(a)
    (k0, first), (k1, second) = SCRIPT[:2]
    gen = logbook.get(a, gids[k1])
    req = FeedbackRequest(generation_id=gids[k1], **second)
    _learner(a, req)(gen)  # A learns the choice; its row is not committed yet
    _rate(b, gids[k0], first)  # B's thumb commits first: row 1
    logbook.add_choice(a, gids[k1], req.sample)  # A's row commits: row 2 (learned already)
    c = _machine(tmp_path / "c", f"sqlite:///{tmp_path / 'c' / 'catalog.db'}")
    c.create_run("g", "gpt", "d", {})
    c_gids = _generations(c)
    _rate(c, c_gids[k0], first)
    _rate(c, c_gids[k1], second)
    assert _state(a) == _state(b) == _state(c)
    assert _saved(a)["counts"] == {"thumb": 1, "choice": 1, "edit": 0} and _saved(a)["pending"] == []


def test_a_rating_with_no_row_stays_with_its_machine(pair, monkeypatch):
    """The Python API learns without a row: pending until PENDING_TTL, then this machine's own."""
    a, b = pair
    base = a.run_path("g") / store.BASE_FILE
    store.record_thumb(a, "g", "", "a liked text", True)
    assert store.reward_for(b, "g") is None
    assert len(_saved(a)["pending"]) == 1 and not base.exists()  # the model before it: none
    monkeypatch.setattr(store, "PENDING_TTL", 0.0)
    assert store.stats(a, "g")["n_ratings"] == 1 and _saved(a)["pending"] == []
    store.record_thumb(a, "g", "", "a disliked text!!!", False)
    assert len(_saved(a)["pending"]) == 1 and base.exists()  # the model of the first rating
    assert store.stats(a, "g")["n_ratings"] == 2 and _saved(a)["pending"] == [] and not base.exists()
    assert store.reward_for(b, "g") is None


def test_the_catalog_is_read_at_most_every_sync_every_seconds(pair, monkeypatch):
    """The engine asks for a judge per request: one indexed query per SYNC_EVERY, not one a use."""
    a, b = pair
    gids = _generations(a)
    _rate(a, gids[0], {"rating": "up"})
    queries = []
    rows_above = store._rows_above
    monkeypatch.setattr(store, "_rows_above", lambda *args: queries.append(args) or rows_above(*args))
    monkeypatch.setattr(store, "SYNC_EVERY", 3600.0)
    before = _scores(b)  # B's first look: A's thumb learned
    _rate(a, gids[1], {"choice": 2})
    for _ in range(20):
        assert _scores(b) == before  # within the hour: the catalog is not read again
    assert len(queries) == 2  # B's first look, and A's own catch-up as it recorded the choice
    monkeypatch.setattr(store, "SYNC_EVERY", 0.0)
    assert _scores(b) == _scores(a)
    assert store.stats(b, "g")["n_ratings"] == 2


def test_a_missing_id_is_waited_for_then_passed(pair, monkeypatch):
    """A missing feedback id may be a transaction that has not committed (PostgreSQL numbers rows
    as inserted): the catch-up stops before it for GAP_WAIT seconds, then learns past it."""
    a, b = pair
    gids = _generations(a)
    ids = [_rate(a, gids[k], body) for k, body in SCRIPT[:3]]
    assert store.stats(b, "g")["n_ratings"] == 3
    more = [_rate(a, gids[k], body) for k, body in SCRIPT[3:6]]
    with a.engine.begin() as conn:  # the first of them "not committed yet"
        conn.execute(sa.delete(feedback_table).where(feedback_table.c.id == more[0]))
    monkeypatch.setattr(store, "GAP_WAIT", 3600.0)
    assert store.stats(b, "g")["n_ratings"] == 3 and _saved(b)["watermark"] == ids[-1]
    monkeypatch.setattr(store, "GAP_WAIT", 0.0)
    assert store.stats(b, "g")["n_ratings"] == 5 and _saved(b)["watermark"] == more[-1]


def test_a_run_made_again_under_its_name_does_not_learn_the_old_ones_ratings(pair):
    a, b = pair
    gids = _generations(a)
    _rate(a, gids[0], {"rating": "up"})
    with a.engine.begin() as conn:  # run g deleted and created again, later
        conn.execute(sa.update(runs_table).where(runs_table.c.name == "g").values(created_at="9999-01-01"))
    assert store.reward_for(b, "g") is None and store.stats(b, "g")["n_ratings"] == 0


COPY = {"c-a": "亚麻衬衫，米白色，透气。", "c-b": "LINEN SHIRT!!! BUY NOW!!!", "control": "人工写的文案"}
CHOICES = ["c-a", "control", "c-a", "c-b", "c-a", "c-a"]


def _copy_events(machines: list[Workspace]) -> None:
    """Every variant shown 4 times (with its text) on the first machine, then CHOICES made in turn."""
    for variant, text in COPY.items():
        for _ in range(4):
            experiments.record_event(machines[0], "sku-1", variant, "shown", text)
    for i, variant in enumerate(CHOICES):
        experiments.record_event(machines[i % len(machines)], "sku-1", variant, "chosen")


def test_the_copy_desks_choices_teach_one_model_on_every_machine(pair, tmp_path, monkeypatch):
    monkeypatch.setattr(experiments, "_desks", {})
    a, b = pair
    assert experiments.reward_model(b) is None
    _copy_events([a, b])
    alone = _machine(tmp_path / "c", f"sqlite:///{tmp_path / 'c' / 'catalog.db'}")
    _copy_events([alone])
    models = [experiments.reward_model(ws) for ws in (a, b, alone)]
    assert [m.n_ratings for m in models] == [len(CHOICES)] * 3
    scores = [m.score(list(COPY.values())) for m in models]
    assert scores[0] == scores[1] == scores[2] and scores[0][0] > scores[0][1]
    for ws in (a, b):
        state = json.loads((ws.root / "copy" / experiments.REWARD_STATE).read_text())
        assert state["n_ratings"] == len(CHOICES) and state["watermark"] == 4 * len(COPY) + len(CHOICES)
