"""The arena: two runs answer one prompt side by side, a person says which answer is better, and an
Elo table ranks the runs (as Open WebUI's arena and Chatbot Arena do).

A vote names the two logged generations it compares (their ids come back from every generation
request), so it is checked against the log: each is a text answer of its own run, to the vote's
prompt and conditions. :func:`leaderboard` replays the votes in the order they were cast, each run
starting at ``START`` and moving by at most ``K`` per game, so the same votes always give the same
table.

This module knows the catalog's rows. It knows nothing about models or HTTP.
"""

from __future__ import annotations

import json
from typing import Any

import sqlalchemy as sa

from aigc.errors import InvalidInput
from aigc.workspace import Workspace, arena_votes_table, generations_table, now

START = 1000.0  # every run's rating before its first game
K = 32.0  # the most one game moves a rating (the classic chess value; Chatbot Arena used 4 for many votes)
SCORES = {"a": 1.0, "b": 0.0, "tie": 0.5}  # run_a's score in a game; run_b's is 1 minus it


def record_vote(ws: Workspace, *, prompt: str, cond: dict[str, str] | None, run_a: str, run_b: str,
                generation_a: str, generation_b: str, winner: str) -> int:
    """Store that ``winner`` ("a", "b" or "tie") gave the better answer to ``prompt`` under ``cond``,
    where run ``run_a`` answered with logged generation ``generation_a`` and ``run_b`` with
    ``generation_b``; returns the vote's id. Nothing is written unless every check passes."""
    if winner not in SCORES:
        raise InvalidInput(f"winner must be 'a', 'b' or 'tie', got {winner!r}")
    if not isinstance(prompt, str):
        raise InvalidInput(f"prompt must be the text both runs answered, got {type(prompt).__name__}")
    cond = cond or {}
    if not isinstance(cond, dict) or not all(isinstance(k, str) and isinstance(v, str)
                                             for k, v in cond.items()):
        raise InvalidInput(f"cond must map column names to values (strings), got {cond!r:.80}")
    if run_a == run_b:
        raise InvalidInput(f"run_a and run_b are both {run_a!r}: a vote compares two different runs; "
                           "pick another run for one side")
    g, v = generations_table, arena_votes_table
    with ws.engine.begin() as conn:
        for side, run, gid in (("a", run_a, generation_a), ("b", run_b, generation_b)):
            row = conn.execute(sa.select(g.c.run, g.c.kind, g.c.prompt, g.c.options)
                               .where(g.c.id == gid)).mappings().first()
            _check_answer(side, run, gid, row, prompt, cond)
        pair = (sa.and_(v.c.generation_a == generation_a, v.c.generation_b == generation_b)
                | sa.and_(v.c.generation_a == generation_b, v.c.generation_b == generation_a))
        earlier = conn.execute(sa.select(v.c.id).where(pair)).scalar()
        if earlier is not None:
            raise InvalidInput(f"generations {generation_a!r} and {generation_b!r} already have a vote "
                               f"(#{earlier}): ask both runs again for a new pair of answers")
        res = conn.execute(v.insert().values(
            created_at=now(), prompt=prompt, cond=json.dumps(cond, ensure_ascii=False, sort_keys=True),
            run_a=run_a, run_b=run_b, generation_a=generation_a, generation_b=generation_b, winner=winner))
        return int(res.inserted_primary_key[0])


def _check_answer(side: str, run: str, gid: str, row, prompt: str, cond: dict[str, str]) -> None:
    """Refuse a generation that is not run ``run``'s text answer to ``prompt`` under ``cond``."""
    name = f"generation_{side}"
    if row is None:
        raise InvalidInput(f"unknown {name} {gid!r}: pass the id that run_{side}'s generation request "
                           "returned (X-Generation-Id, or the final message's id)")
    if row["run"] != run:
        raise InvalidInput(f"{name} {gid!r} is an answer of run {row['run']!r}, not of run_{side} {run!r}: "
                           f"pass run_{side}'s own generation, or set run_{side} to {row['run']!r}")
    if row["kind"] != "text":
        raise InvalidInput(f"{name} {gid!r} is an {row['kind']} generation: the arena compares text answers")
    if row["prompt"] != prompt:
        raise InvalidInput(f"{name} {gid!r} answered the prompt {row['prompt'][:60]!r}, not {prompt[:60]!r}: "
                           "both answers must be to the vote's prompt")
    asked = json.loads(row["options"]).get("cond") or {}
    if asked != cond:
        raise InvalidInput(f"{name} {gid!r} was asked with cond {asked!r:.80}, not {cond!r:.80}: "
                           "both answers must be to the vote's conditions")


def votes(ws: Workspace) -> list[dict[str, Any]]:
    """Every vote, oldest first, ``cond`` decoded."""
    with ws.engine.connect() as conn:
        rows = conn.execute(sa.select(arena_votes_table).order_by(arena_votes_table.c.id)).mappings().all()
    return [{**r, "cond": json.loads(r["cond"])} for r in rows]


def leaderboard(ws: Workspace) -> list[dict[str, Any]]:
    """``{run, rating, wins, losses, ties, games}`` for every run that has played, best rating first
    (ties of rating by name). Elo: each vote, in the order cast, moves run_a by
    ``K * (score - expected)`` and run_b by the opposite, where ``expected = 1 / (1 + 10 ** ((r_b -
    r_a) / 400))`` and a tie scores 0.5 for each side."""
    table: dict[str, dict[str, Any]] = {}
    for vote in votes(ws):
        a, b = (table.setdefault(run, {"run": run, "rating": START, "wins": 0, "losses": 0, "ties": 0,
                                       "games": 0}) for run in (vote["run_a"], vote["run_b"]))
        score = SCORES[vote["winner"]]
        expected = 1.0 / (1.0 + 10.0 ** ((b["rating"] - a["rating"]) / 400.0))
        delta = K * (score - expected)
        a["rating"] += delta
        b["rating"] -= delta
        a["games"] += 1
        b["games"] += 1
        if vote["winner"] == "tie":
            a["ties"] += 1
            b["ties"] += 1
        else:
            winner, loser = (a, b) if vote["winner"] == "a" else (b, a)
            winner["wins"] += 1
            loser["losses"] += 1
    return sorted(table.values(), key=lambda r: (-r["rating"], r["run"]))
