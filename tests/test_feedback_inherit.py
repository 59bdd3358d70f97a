"""A tuned run keeps what its users taught its parent (aigc.feedback.store, ``feedback_inherits``):
``adapted.tune`` records in the new run's catalog row (and run.json) the parent's ratings in the
catalog so far, and the new run's reward model learns them, then its own, in the catalog's id
order: it reranks from its first request as the parent did when it was tuned. A rating given to
the parent after the tune stays the parent's; a grandchild inherits both generations' ratings,
also when tuned from a pairs file; the model is derived from the catalog alone (its files deleted,
or another machine's folder without them, give the same model)."""

from __future__ import annotations

import json
from functools import partial

import pytest
import sqlalchemy as sa
from test_adapted_runs import tiny_shop_workspace

import aigc
from aigc import logbook
from aigc.feedback import store
from aigc.feedback.reward import RewardModel
from aigc.server.routers.native import _learner
from aigc.server.schemas import FeedbackRequest
from aigc.workspace import Workspace, feedback_table

TEXTS = [["leaves steep hot, green tea", "iron sear oil!!!", "black tea, brewed strong"],
         ["cast iron pan, seasoned", "cheap pan", "oolong leaves, steep twice"],
         ["jasmine tea, fragrant", "pan pan pan", "carbon steel pan, oiled"]]
PROBES = ["green tea leaves", "iron pan!!!", "oolong, steeped", "cheap", "steel pan, seasoned"]
TUNE = {"max_steps": 2, "eval_every": 2, "batch_size": 4, "lr": 1e-3}


@pytest.fixture(scope="module")
def ws(tmp_path_factory):
    """The tiny llama as base "tiny", the topic data as "shop" (tests/test_tune.py's workspace)."""
    return tiny_shop_workspace(tmp_path_factory.mktemp("inherit"))


@pytest.fixture(autouse=True)
def no_wait(monkeypatch):
    """Every use looks at the catalog (the throttle has a test of its own)."""
    monkeypatch.setattr(store, "SYNC_EVERY", 0.0)


def _lora(ws: Workspace, name: str) -> None:
    row = aigc.train("shop", base="tiny", name=name, prompt_template="write about {topic}", max_steps=2,
                     eval_every=2, batch_size=8, seed=0, adapt={"block_size": 96, "r": 4, "alpha": 8}, workspace=ws)
    assert row["status"] == "finished"


def _generations(ws: Workspace, run: str) -> list[str]:
    return [logbook.record(ws, {"run": run, "kind": "text", "endpoint": "python", "prompt": "",
                                "options": {"cond": {"topic": ("tea", "pan")[k % 2]}}, "output": {"texts": texts},
                                "status": "ok", "latency_ms": 1.0})
            for k, texts in enumerate(TEXTS)]


def _rate(ws: Workspace, gid: str, body: dict) -> tuple[str, list]:
    """What ``POST /api/feedback`` does with ``body``: the row, and the rated run's model learning
    from it; returns what the rating teaches a reward model (a method of RewardModel and its
    arguments after the prompt), read off the generation independently of the store."""
    req = FeedbackRequest(generation_id=gid, **body)
    add = {"thumb": partial(logbook.add_feedback, ws, gid, req.rating, req.comment, req.sample),
           "choice": partial(logbook.add_choice, ws, gid, req.sample, req.comment)}[req.kind]
    add(learn=_learner(ws, req))
    texts = logbook.get(ws, gid)["output"]["texts"]
    if req.kind == "choice":
        return "add_choice", [texts[req.sample], [t for k, t in enumerate(texts) if k != req.sample]]
    return "add_thumb", [texts[req.sample], req.rating in ("up", 1)]


def _replay(taught: list[tuple[str, list]]) -> RewardModel:
    """A fresh reward model taught ``taught`` in order, as one workspace would learn them."""
    model = RewardModel()
    for method, args in taught:
        getattr(model, method)("", *args)
    return model


def _state(model: RewardModel) -> dict:
    """A model as a comparable whole: weights, accumulators, recent ratings, replay state."""
    state = model.state_dict()
    return {"n": model.n_ratings, "index": state["index"].tolist(), "weights": state["weights"].tolist(),
            "accum": state["accum"].tolist(), "recent": state["recent"], "rng": state["rng"]}


def _model_of(ws: Workspace, run: str) -> dict:
    return _state(store.reward_for(ws, run))


def _last_feedback_id(ws: Workspace) -> int:
    with ws.engine.connect() as conn:
        return conn.execute(sa.select(sa.func.max(feedback_table.c.id))).scalar()


def _inherits(ws: Workspace, run: str) -> list[dict]:
    """The run's ``feedback_inherits`` as its catalog row has it; run.json has the same."""
    spec = json.loads((ws.run_path(run) / "run.json").read_text())
    config = ws.get_run(run)["config"]
    assert spec[store.INHERITS] == config[store.INHERITS]
    return config[store.INHERITS]


def test_a_tuned_run_starts_with_its_parents_ratings_then_learns_its_own(ws):
    _lora(ws, "a")
    gids = _generations(ws, "a")
    taught = [_rate(ws, gids[k], body) for k, body in [
        (0, {"choice": 0}), (1, {"rating": "down", "sample_index": 1}), (1, {"choice": 2}),
        (2, {"rating": "up"}), (2, {"choice": 0}), (0, {"rating": "down", "sample_index": 1})]]
    parent = _model_of(ws, "a")
    assert parent == _state(_replay(taught))  # the parent's own model: every rating, in order
    upto = _last_feedback_id(ws)

    row = aigc.adapted.tune(ws, "a", name="a-dpo", train_overrides=TUNE)
    assert row["status"] == "finished" and row["config"]["tune"]["learned_from"]["pairs"] >= 2
    assert _inherits(ws, "a-dpo") == [{"run": "a", "born": ws.get_run("a")["created_at"], "upto": upto}]
    assert not (ws.run_path("a-dpo") / store.MODEL_FILE).exists()  # nothing copied: learned from the catalog
    assert _model_of(ws, "a-dpo") == parent  # its first use: the parent's model as it was at the tune
    scores = store.judge_for(ws, "a-dpo", "").scores(PROBES).tolist()
    assert scores == _replay(taught).score(PROBES) and len(set(scores)) == len(PROBES)
    assert store.stats(ws, "a-dpo") == {"run": "a-dpo", "n_ratings": 6, "by_kind": {"thumb": 3, "choice": 3, "edit": 0},
                                        "inherits": ["a"], "inherited": 6}
    assert "inherited" not in store.stats(ws, "a")  # a run trained from data inherits nothing

    later = _rate(ws, gids[2], {"rating": "down", "sample_index": 1})  # the parent rated after the tune
    assert _model_of(ws, "a") == _state(_replay([*taught, later]))  # the parent's own ...
    assert _model_of(ws, "a-dpo") == parent  # ... not the child's

    own = [_rate(ws, gid, body) for gid, body in zip(_generations(ws, "a-dpo"), [{"choice": 2}, {"rating": "up"}])]
    assert _model_of(ws, "a-dpo") == _state(_replay([*taught, *own]))  # its own, after the inherited ones
    assert store.stats(ws, "a-dpo") == {"run": "a-dpo", "n_ratings": 8, "by_kind": {"thumb": 4, "choice": 4, "edit": 0},
                                        "inherits": ["a"], "inherited": 6}


def test_a_grandchild_inherits_both_and_the_model_is_derived_from_the_catalog(ws, tmp_path, monkeypatch):
    _lora(ws, "b")
    gids = _generations(ws, "b")
    taught_b = [_rate(ws, gids[k], body) for k, body in [(0, {"choice": 0}), (1, {"choice": 2}), (2, {"rating": "up"})]]
    aigc.adapted.tune(ws, "b", name="b1", train_overrides=TUNE)
    upto_b = _last_feedback_id(ws)
    _rate(ws, gids[1], {"rating": "down", "sample_index": 1})  # the parent's after b1's tune: before b2's, yet not b2's
    own_gids = _generations(ws, "b1")
    taught_b1 = [_rate(ws, own_gids[k], body) for k, body in [(2, {"choice": 0}), (0, {"rating": "down",
                                                                                         "sample_index": 1})]]
    child = _model_of(ws, "b1")
    assert child == _state(_replay([*taught_b, *taught_b1]))

    pairs = tmp_path / "pairs.jsonl"  # tuned from a pairs file: the ratings are inherited all the same
    pairs.write_text("".join(json.dumps({"prompt": "", "cond": {"topic": t}, "chosen": f"leaves steep hot {i}",
                                         "rejected": f"iron sear oil {i}"}) + "\n"
                             for i, t in enumerate(["tea", "pan"] * 2)))
    upto_b1 = _last_feedback_id(ws)
    row = aigc.adapted.tune(ws, "b1", name="b2", method="dpo", pairs_file=str(pairs), train_overrides=TUNE)
    assert row["status"] == "finished"
    assert _inherits(ws, "b2") == [{"run": "b", "born": ws.get_run("b")["created_at"], "upto": upto_b},
                                   {"run": "b1", "born": ws.get_run("b1")["created_at"], "upto": upto_b1}]
    assert _model_of(ws, "b2") == child  # b's ratings up to b1's tune, then b1's own: as b1 had them
    grand = _rate(ws, _generations(ws, "b2")[1], {"choice": 0})
    assert _model_of(ws, "b2") == _state(_replay([*taught_b, *taught_b1, grand]))
    stats = {"run": "b2", "n_ratings": 6, "by_kind": {"thumb": 2, "choice": 4, "edit": 0}, "inherits": ["b", "b1"],
             "inherited": 5}
    assert store.stats(ws, "b2") == stats
    model, scores = _model_of(ws, "b2"), store.judge_for(ws, "b2", "").scores(PROBES).tolist()

    for name in (store.MODEL_FILE, store.STATS_FILE):  # removed behind the store's back: learned again
        (ws.run_path("b2") / name).unlink()
    assert _model_of(ws, "b2") == model and store.stats(ws, "b2") == stats
    monkeypatch.setattr(store, "_entries", {})  # and in a fresh process, from the files it wrote
    assert _model_of(ws, "b2") == model and store.judge_for(ws, "b2", "").scores(PROBES).tolist() == scores

    other = Workspace(tmp_path / "other", db_url=ws.db_url)  # another machine: the catalog, not the run's files
    other.run_path("b2").mkdir(parents=True)
    assert _model_of(other, "b2") == model and store.stats(other, "b2") == stats
