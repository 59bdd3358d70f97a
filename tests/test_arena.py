"""The arena: votes between two runs' answers to one prompt, checked against the generation log;
the Elo table they give (replayed by hand here); the HTTP routes; and the studio's arena tab in
headless Chromium, which hides which run wrote which answer until the vote."""

from __future__ import annotations

import os
import re

import pytest
import sqlalchemy as sa
from fastapi.testclient import TestClient

from aigc import arena, logbook
from aigc.errors import InvalidInput
from aigc.server import Settings, create_app
from aigc.workspace import MIGRATIONS, Workspace, arena_votes_table, migrations_table

from helpers import LiveServer
from test_studio import CHROMIUM, open_page


def answer(ws, run: str, prompt: str = "apple", cond: dict | None = None, kind: str = "text") -> str:
    """A logged generation of ``run`` (no model needed: the arena reads the log only)."""
    return logbook.record(ws, {"run": run, "kind": kind, "endpoint": "test", "prompt": prompt,
                               "options": {"cond": cond or {}}, "output": {"texts": [f"{run} says hi"]},
                               "status": "ok", "latency_ms": 1.0})


def vote(ws, run_a: str, run_b: str, winner: str, **changes) -> int:
    fields = dict(prompt="apple", cond=None, run_a=run_a, run_b=run_b, generation_a=answer(ws, run_a),
                  generation_b=answer(ws, run_b), winner=winner)
    return arena.record_vote(ws, **{**fields, **changes})


@pytest.fixture()
def ws(tmp_path):
    return Workspace(tmp_path / "ws")


# -- core --------------------------------------------------------------------------------------------


def test_elo_replays_the_votes_in_order_as_computed_by_hand(ws):
    vote(ws, "x", "y", "a")  # x beats y
    # both at 1000: expected 0.5 each, so x = 1000 + 32 * 0.5 and y = 1000 - 16
    first = {r["run"]: r["rating"] for r in arena.leaderboard(ws)}
    assert first == {"x": 1016.0, "y": 984.0}
    vote(ws, "x", "z", "tie")
    # x expected 1 / (1 + 10 ** (-16 / 400)) = 0.52300959, scores 0.5: x -= 32 * 0.02300959 = 0.73630679
    vote(ws, "y", "z", "b")  # z (1000.73630679) beats y (984): y expected 0.47593313, y -= 32 * 0.47593313
    board = arena.leaderboard(ws)
    assert [r["run"] for r in board] == ["z", "x", "y"]  # z edges past x: it beat a weaker y by more
    rating = {r["run"]: r["rating"] for r in board}
    assert rating["x"] == pytest.approx(1016 - 0.73630679, abs=1e-6)
    assert rating["z"] == pytest.approx(1000.73630679 + 15.22986019, abs=1e-6)
    assert rating["y"] == pytest.approx(984 - 15.22986019, abs=1e-6)
    assert sum(rating.values()) == pytest.approx(3000.0)  # every point one run wins, the other loses
    counts = {r["run"]: (r["wins"], r["losses"], r["ties"], r["games"]) for r in board}
    assert counts == {"x": (1, 0, 1, 2), "y": (0, 2, 0, 2), "z": (1, 0, 1, 2)}
    assert arena.leaderboard(ws) == board  # the same votes, the same table


def test_a_vote_is_stored_with_what_it_compared(ws):
    ga, gb = answer(ws, "x", "猕猴桃", {"fruit": "kiwi"}), answer(ws, "y", "猕猴桃", {"fruit": "kiwi"})
    vote_id = arena.record_vote(ws, prompt="猕猴桃", cond={"fruit": "kiwi"}, run_a="x", run_b="y",
                                generation_a=ga, generation_b=gb, winner="tie")
    [row] = arena.votes(ws)
    assert row["id"] == vote_id and row["created_at"]
    fields = ("prompt", "cond", "run_a", "run_b", "generation_a", "generation_b", "winner")
    assert {k: row[k] for k in fields} == \
        {"prompt": "猕猴桃", "cond": {"fruit": "kiwi"}, "run_a": "x", "run_b": "y", "generation_a": ga,
         "generation_b": gb, "winner": "tie"}


BAD_VOTES = [  # (what changes in a good vote of x over y, what the message says)
    (lambda ws: {"generation_a": "gen-nope"}, "unknown generation_a 'gen-nope': pass the id"),
    (lambda ws: {"generation_b": answer(ws, "x")}, "is an answer of run 'x', not of run_b 'y'"),
    (lambda ws: {"run_b": "x"}, "run_a and run_b are both 'x'"),
    (lambda ws: {"winner": "c"}, "winner must be 'a', 'b' or 'tie', got 'c'"),
    (lambda ws: {"winner": "A"}, "winner must be 'a', 'b' or 'tie', got 'A'"),
    (lambda ws: {"generation_b": answer(ws, "y", prompt="kiwi")}, "answered the prompt 'kiwi', not 'apple'"),
    (lambda ws: {"generation_a": answer(ws, "x", cond={"fruit": "kiwi"})},
     "was asked with cond {'fruit': 'kiwi'}"),
    (lambda ws: {"generation_a": answer(ws, "x", kind="image")},
     "is an image generation: the arena compares text"),
    (lambda ws: {"cond": {"fruit": 3}}, "cond must map column names to values"),
]


@pytest.mark.parametrize("change, message", BAD_VOTES)
def test_bad_votes_are_refused_in_one_line_and_nothing_is_written(ws, change, message):
    with pytest.raises(InvalidInput, match=re.escape(message)) as info:
        vote(ws, **{"run_a": "x", "run_b": "y", "winner": "a", **change(ws)})
    assert "\n" not in str(info.value)
    assert arena.votes(ws) == [] and arena.leaderboard(ws) == []


def test_one_pair_of_answers_gets_one_vote(ws):
    ga, gb = answer(ws, "x"), answer(ws, "y")
    pair = dict(prompt="apple", cond={}, generation_a=ga, generation_b=gb)
    first = arena.record_vote(ws, run_a="x", run_b="y", winner="a", **pair)
    with pytest.raises(InvalidInput, match=rf"already have a vote \(#{first}\): ask both runs again"):
        arena.record_vote(ws, run_a="y", run_b="x", winner="a",
                          **{**pair, "generation_a": gb, "generation_b": ga})
    assert len(arena.votes(ws)) == 1


@pytest.mark.sqlite_only
def test_an_older_catalog_gets_the_arena_table(tmp_path):
    Workspace(tmp_path)
    engine = sa.create_engine(f"sqlite:///{tmp_path / 'catalog.db'}")
    with engine.begin() as conn:  # the catalog as it was before m005
        conn.exec_driver_sql("DROP TABLE arena_votes")
        conn.execute(migrations_table.delete().where(migrations_table.c.name == "m005_arena"))
    engine.dispose()
    ws = Workspace(tmp_path)
    assert "m005_arena" in ws.applied_migrations() and len(ws.applied_migrations()) == len(MIGRATIONS)
    vote(ws, "x", "y", "b")
    assert [r["run"] for r in arena.leaderboard(ws)] == ["y", "x"]


# -- HTTP --------------------------------------------------------------------------------------------


@pytest.fixture()
def fresh_arena(served_ws):
    """No votes in the shared served workspace before (or after) a test."""
    def clear():
        with served_ws.engine.begin() as conn:
            conn.execute(arena_votes_table.delete())

    clear()
    yield served_ws
    clear()


def ask(client, run: str, prompt: str = "apple") -> str:
    res = client.post("/api/generate", json={"model": run, "prompt": prompt, "cond": {"fruit": "apple"},
                                             "stream": False, "options": {"num_predict": 8, "seed": 1}})
    assert res.status_code == 200, res.text
    return res.json()["id"]


def test_vote_and_leaderboard_round_trip_over_http(fresh_arena):
    with TestClient(create_app(fresh_arena, Settings(max_tokens=64, max_batch=4))) as client:
        assert client.get("/api/arena/leaderboard").json() == {"leaderboard": []}
        body = {"prompt": "apple", "cond": {"fruit": "apple"}, "run_a": "g", "run_b": "l",
                "generation_a": ask(client, "g"), "generation_b": ask(client, "l"), "winner": "b"}
        res = client.post("/api/arena/vote", json=body)
        assert res.status_code == 201, res.text
        [stored] = arena.votes(fresh_arena)
        assert res.json() == {"id": stored["id"], "run_a": "g", "run_b": "l", "winner": "b"}
        board = client.get("/api/arena/leaderboard").json()["leaderboard"]
        assert board == [{"run": "l", "rating": 1016.0, "wins": 1, "losses": 0, "ties": 0, "games": 1},
                         {"run": "g", "rating": 984.0, "wins": 0, "losses": 1, "ties": 0, "games": 1}]

        for change, status, param, message in [
            ({"winner": "both"}, 400, "winner", "winner"),
            ({"generation_a": "gen-nope"}, 400, None, "unknown generation_a 'gen-nope'"),
            ({"run_b": "g"}, 400, None, "run_a and run_b are both 'g'"),
            ({"generation_b": body["generation_a"]}, 400, None, "is an answer of run 'g', not of run_b 'l'"),
            ({"prompt": "red"}, 400, None, "answered the prompt 'apple', not 'red'"),
            ({}, 400, None, "already have a vote"),
            ({"extra": 1}, 400, "extra", "unrecognized request argument"),
        ]:
            res = client.post("/api/arena/vote", json={**body, **change})
            assert res.status_code == status, (change, res.text)
            err = res.json()["error"]
            assert message in err["message"] and err["param"] == param, (change, err)
        assert len(arena.votes(fresh_arena)) == 1  # none of the refused votes was written


# -- the studio --------------------------------------------------------------------------------------

MARKUP = "<b>x</b>"


@pytest.mark.skipif(not os.path.exists(CHROMIUM), reason="Debian's chromium is not installed")
def test_studio_arena_hides_the_runs_until_the_vote_then_ranks_the_winner(fresh_arena):
    ws = fresh_arena
    with LiveServer(ws, Settings(max_tokens=64)) as server, open_page(server.url) as page:
        page.click("button[data-tab=arena]")
        page.wait_for_selector("#arena-run-2 option[value=l]", state="attached")
        assert page.input_value("#arena-run-1") == page.input_value("#arena-run-2") == ""  # random two
        assert page.locator("#arena-run-1 option[value=d]").count() == 0  # an image run answers no prompt
        assert page.text_content("#arena-board tbody") == "No votes yet."

        page.select_option("#arena-cond-box select[data-cond=fruit]", "apple")
        for field, value in {"prompt": "apple", "max-tokens": "20", "seed": "3"}.items():
            page.fill(f"#arena-{field}", value)
        page.click("#arena-ask")
        page.wait_for_selector("#arena-vote-a:not([disabled])", timeout=30_000)
        answers = {k: page.text_content(f"#arena-answer-{k}") for k in "ab"}
        for k in "ab":  # both answers are in, neither says whose it is
            assert answers[k].startswith("apple") and len(answers[k]) > len("apple")
            name = page.locator(f"#arena-name-{k}")
            assert name.is_hidden() and name.text_content() == ""
        assert arena.votes(ws) == []

        page.click("#arena-vote-a")
        page.wait_for_selector("#arena-board tbody tr[data-run]")
        shown = {k: page.text_content(f"#arena-name-{k}") for k in "ab"}
        assert sorted(shown.values()) == ["g", "l"] and page.locator("#arena-name-a").is_visible()
        assert page.is_disabled("#arena-vote-a") and page.is_disabled("#arena-vote-tie")  # one vote per pair

        [row] = arena.votes(ws)  # what the server stored is what the page showed
        assert (row["run_a"], row["run_b"], row["winner"]) == (shown["a"], shown["b"], "a")
        assert row["prompt"] == "apple" and row["cond"] == {"fruit": "apple"}
        for k in "ab":
            gen = logbook.get(ws, row[f"generation_{k}"])
            assert gen["run"] == shown[k] and "apple" + gen["output"]["texts"][0] == answers[k]
        first = page.locator("#arena-board tbody tr").first
        assert first.get_attribute("data-run") == shown["a"] == arena.leaderboard(ws)[0]["run"]
        assert float(first.locator("td.rating").text_content()) == 1016.0 > 1000
        assert page.locator("#arena-board tbody tr").nth(1).get_attribute("data-run") == shown["b"]

        page.fill("#arena-prompt", MARKUP)  # user text is shown as text, never read as markup
        page.click("#arena-ask")
        page.wait_for_function("document.querySelector('#arena-stats-b').textContent.length > 0",
                               timeout=30_000)
        for k in "ab":
            assert page.text_content(f"#arena-answer-{k} .prompt") == MARKUP
            assert page.locator(f"#arena-answer-{k} b").count() == 0
            assert page.locator(f"#arena-name-{k}").is_hidden()  # a new pair: who is who is hidden again
