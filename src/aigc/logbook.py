"""The generation log: every output the engine makes, and the feedback people give on it.

One row per finished request (text or images), written in one transaction before the caller
sees the end of its stream, so a row is either whole or absent. Feedback rows reference a
generation: a thumb on one sample, a choice of one sample over the others, or a user's edit of
one. :func:`export_jsonl` writes the log as JSON Lines and, with ``pairs=True``, the
prompt / chosen / rejected pairs that preference tuning (DPO and friends) reads: for every
prompt that has both a thumbs-up and a thumbs-down output.

This module knows the catalog's rows. It knows nothing about models or HTTP.
"""

from __future__ import annotations

import json
import os
import queue
import threading
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import sqlalchemy as sa

from aigc.errors import InvalidInput, NotFound
from aigc.workspace import Workspace, feedback_table, generations_table, now, written

RATINGS = {"up": 1, "down": -1, "1": 1, "-1": -1, "+1": 1}
Learn = Callable[[dict[str, Any]], None]  # what learns from a rating, given its generation


def new_id() -> str:
    return "gen-" + uuid.uuid4().hex[:24]


_COLUMNS = frozenset(generations_table.c.keys())


def record(ws: Workspace, row: dict[str, Any]) -> str:
    """Insert a generation row (``id`` is made when absent); returns its id."""
    return record_many(ws, [row])[0]


def record_many(ws: Workspace, rows: list[dict[str, Any]]) -> list[str]:
    """Insert generation rows in one transaction (all or none); returns their ids."""
    prepared = [_row(row) for row in rows]
    with ws.engine.begin() as conn:
        # The rows as parameters of one cached statement: building ``insert().values(**row)`` anew
        # per row took 0.25 ms of the serving engine's decode thread, this takes 0.11 ms.
        conn.execute(generations_table.insert(), prepared)
    return [row["id"] for row in prepared]


def _row(row: dict[str, Any]) -> dict[str, Any]:
    row = dict(row)
    row.setdefault("id", new_id())
    row.setdefault("created_at", now())
    for key in ("options", "output"):
        if not isinstance(row.get(key), str):
            row[key] = json.dumps(row.get(key) or {}, ensure_ascii=False)
    unknown = row.keys() - _COLUMNS
    if unknown:  # parameters of a cached statement that name no column would be dropped silently
        raise ValueError(f"no such generations column(s): {', '.join(sorted(unknown))}")
    return row


class LogWriter:
    """Writes generation rows on a thread of its own, so that a slow or locked database (SQLite
    waits up to 30 s for another writer) holds up only the requests being written, never the
    serving engine's decode loop and every stream with it.

    ``write(row, done)`` queues a row; ``done(ok)`` runs on the writer's thread once the write is
    over (``ok`` False when it failed three times), which is when the engine delivers the request's
    result: a caller that has its result finds its row in the log. Rows waiting together go in
    one transaction.
    """

    def __init__(self, ws: Workspace, audit: Callable[[Workspace, list[dict[str, Any]]], Any] | None = None):
        self.ws = ws
        # Rows may carry ``_prepare``: a function run here, off the caller's thread, that returns
        # the row as it is to be kept (e.g. its text redacted) and may add ``_audit`` rows, which
        # ``audit(ws, rows)`` writes after the generations. A prepare that fails keeps no text.
        self.audit = audit
        self.failures = 0  # rows given up on
        self._q: queue.SimpleQueue = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._loop, name="aigc-log", daemon=True)
        self._thread.start()

    def write(self, row: dict[str, Any], done: Callable[[bool], None]) -> None:
        self._q.put((row, done))

    def close(self, timeout: float | None = None) -> None:
        """Write what is queued, then stop."""
        self._q.put(None)
        self._thread.join(timeout)

    def _loop(self) -> None:
        while True:
            batch, stop = [], False
            item = self._q.get()
            while item is not None:
                batch.append(item)
                try:
                    item = self._q.get_nowait()
                except queue.Empty:
                    break
            stop = item is None
            if batch:
                self._write(batch)
            if stop:
                return

    def _write(self, batch: list[tuple[dict[str, Any], Callable[[bool], None]]]) -> None:
        batch = [(_prepared(row), done) for row, done in batch]
        audits = [a for row, _ in batch for a in row.pop("_audit", ())]
        results = [False] * len(batch)
        if self._attempt(lambda: record_many(self.ws, [row for row, _ in batch])):
            results = [True] * len(batch)
        elif len(batch) > 1:  # one bad row must not cost the others theirs
            results = [self._attempt(lambda row=row: record(self.ws, row)) for row, _ in batch]
        self.failures += results.count(False)
        if audits and self.audit is not None:
            self._attempt(lambda: self.audit(self.ws, audits))
        for (_, done), ok in zip(batch, results):
            try:
                done(ok)
            except Exception:  # noqa: BLE001 - the writer must outlive any one caller's callback
                pass

    @staticmethod
    def _attempt(write: Callable[[], Any]) -> bool:
        """SQLite already waits up to 30 s for a concurrent writer; then we try twice more."""
        for attempt in range(3):
            try:
                write()
                return True
            except ValueError:  # the row itself is wrong (record refuses it): trying again will not help
                return False
            except Exception:  # noqa: BLE001 - a log failure must not take the request down
                if attempt < 2:
                    time.sleep(0.1 * (attempt + 1))
        return False


def _prepared(row: dict[str, Any]) -> dict[str, Any]:
    prepare = row.pop("_prepare", None)
    if prepare is None:
        return row
    try:
        return prepare(row)
    except Exception as e:  # noqa: BLE001 - fail closed: the row is kept without its text
        withheld = f"[withheld: preparing the row for the log failed: {type(e).__name__}]"
        return {**{k: v for k, v in row.items() if not k.startswith("_")}, "prompt": withheld,
                "output": {"withheld": True}, "error": withheld}


def _decode(row) -> dict[str, Any]:
    out = dict(row)
    out["options"] = json.loads(out["options"])
    out["output"] = json.loads(out["output"])
    return out


def get(ws: Workspace, generation_id: str) -> dict[str, Any]:
    """One generation with its feedback rows."""
    with ws.engine.connect() as conn:
        row = conn.execute(sa.select(generations_table).where(generations_table.c.id == generation_id)).mappings().first()
        if row is None:
            raise NotFound(f"unknown generation {generation_id!r}: ids are returned by every generation request")
        fb = conn.execute(sa.select(feedback_table).where(feedback_table.c.generation_id == generation_id)
                          .order_by(feedback_table.c.id)).mappings().all()
    out = _decode(row)
    out["feedback"] = [dict(f) for f in fb]
    return out


def list_generations(ws: Workspace, run: str | None = None, limit: int = 50, offset: int = 0) -> list[dict[str, Any]]:
    """Newest first, each with ``up`` and ``down`` counts of its feedback."""
    if limit < 1 or offset < 0:
        raise InvalidInput(f"limit must be >= 1 and offset >= 0, got limit={limit}, offset={offset}")
    g, f = generations_table, feedback_table
    up = sa.func.coalesce(sa.func.sum(sa.case((f.c.rating > 0, 1), else_=0)), 0).label("up")
    down = sa.func.coalesce(sa.func.sum(sa.case((f.c.rating < 0, 1), else_=0)), 0).label("down")
    q = (sa.select(g, up, down).select_from(g.outerjoin(f, f.c.generation_id == g.c.id)).group_by(g.c.id)
         .order_by(written(ws.engine.dialect.name, g).desc()).limit(limit).offset(offset))
    if run:
        q = q.where(g.c.run == run)
    with ws.engine.connect() as conn:
        return [_decode(r) for r in conn.execute(q).mappings().all()]


def add_feedback(ws: Workspace, generation_id: str, rating: int | str, comment: str | None = None,
                 sample_index: int = 0, *, learn: Learn | None = None) -> int:
    """Store a thumbs up (+1) or down (-1) on a generation; returns the feedback id. ``learn``
    (see :func:`add_choice`) runs inside the row's transaction."""
    value = RATINGS.get(str(rating).strip().lower())
    if value is None:
        raise InvalidInput(f"rating must be 'up' or 'down' (or 1 / -1), got {rating!r}")
    return _add(ws, generation_id, "thumb", sample_index, value, comment, None, learn)


def add_choice(ws: Workspace, generation_id: str, choice: int, comment: str | None = None, *,
               learn: Learn | None = None) -> int:
    """Store that sample ``choice`` of a generation was preferred to its other samples (a row of
    kind ``choice``, rating +1 on the chosen sample); returns the feedback id.

    ``learn(generation)``, when given, runs inside the row's transaction with the generation as
    :func:`get` returns it (less its feedback), after the row's checks: what it raises (a model
    that refuses the rating) rolls the row back, so the row and what learned from it go together."""
    return _add(ws, generation_id, "choice", choice, 1, comment, None, learn)


def add_edit(ws: Workspace, generation_id: str, edited: str, sample_index: int = 0,
             comment: str | None = None, *, learn: Learn | None = None) -> int:
    """Store the user's correction ``edited`` of a text generation's sample ``sample_index`` (a row
    of kind ``edit``, rating -1: the sample was not right as it was); returns the feedback id.
    ``learn`` as for :func:`add_choice`."""
    if not isinstance(edited, str) or not edited.strip():
        raise InvalidInput(f"edited must be the corrected text, got {edited!r:.60}")
    return _add(ws, generation_id, "edit", sample_index, -1, comment, edited, learn)


def _add(ws: Workspace, generation_id: str, kind: str, sample_index: int, rating: int, comment: str | None,
         edited: str | None, learn: Learn | None) -> int:
    if comment is not None and len(comment) > 4000:
        raise InvalidInput(f"comment is {len(comment)} characters; the limit is 4000")
    what = {"thumb": "sample_index", "choice": "choice", "edit": "the edited sample's index"}[kind]
    with ws.engine.begin() as conn:
        row = conn.execute(sa.select(generations_table)
                           .where(generations_table.c.id == generation_id)).mappings().first()
        if row is None:
            raise NotFound(f"unknown generation {generation_id!r}: ids are returned by every generation request")
        gen = _decode(row)
        n = len(_outputs(gen)) or 1
        if not 0 <= sample_index < n:
            raise InvalidInput(f"{what} must be in 0..{n - 1} for this generation, got {sample_index}")
        if kind == "choice" and n < 2:
            raise InvalidInput(f"a choice needs a generation of 2 or more samples; {generation_id!r} has 1: "
                               "rate it with a thumb (rating) instead, or ask for n > 1")
        if kind == "edit":
            texts = gen["output"].get("texts") or [""]
            if gen["kind"] != "text":
                raise InvalidInput(f"{generation_id!r} is an image generation: only text can be edited; "
                                   "rate it with a thumb or a choice")
            if edited.strip() == texts[sample_index].strip():
                raise InvalidInput(f"edited is the same as sample {sample_index}'s text ({edited[:60]!r}); "
                                   "an edit must change it (to approve it as it is, send a thumbs up)")
        res = conn.execute(feedback_table.insert().values(
            generation_id=generation_id, created_at=now(), rating=rating, sample_index=sample_index,
            comment=comment, kind=kind, edited=edited))
        if learn is not None:
            learn(gen)
        return int(res.inserted_primary_key[0])


def _outputs(gen: dict[str, Any]) -> list[str]:
    out = gen["output"]
    return list(out.get("texts") or out.get("images") or [])


def preference_pairs(ws: Workspace, run: str | None = None) -> list[dict[str, Any]]:
    """``{prompt, chosen, rejected}`` for each prompt with a thumbs-up and a thumbs-down output
    (its latest rating per output wins; every up is paired with every down of that prompt)."""
    g, f = generations_table, feedback_table
    q = (sa.select(g.c.id, g.c.run, g.c.prompt, g.c.options, g.c.output, f.c.sample_index, f.c.rating)
         .join(f, f.c.generation_id == g.c.id).where(g.c.kind == "text").order_by(f.c.id))
    if run:
        q = q.where(g.c.run == run)
    latest: dict[tuple[str, int], tuple] = {}
    with ws.engine.connect() as conn:
        for r in conn.execute(q).mappings():
            latest[(r["id"], r["sample_index"])] = r
    by_prompt: dict[tuple[str, str, str], dict[str, list[str]]] = {}
    for r in latest.values():
        cond = json.dumps(json.loads(r["options"]).get("cond") or {}, sort_keys=True, ensure_ascii=False)
        texts = json.loads(r["output"]).get("texts") or []
        if r["sample_index"] >= len(texts):
            continue
        slot = by_prompt.setdefault((r["run"], r["prompt"], cond), {"up": [], "down": []})
        slot["up" if r["rating"] > 0 else "down"].append(texts[r["sample_index"]])
    pairs = []
    for (run_name, prompt, cond), votes in by_prompt.items():
        for chosen in votes["up"]:
            for rejected in votes["down"]:
                if chosen != rejected:
                    pairs.append({"run": run_name, "prompt": prompt, "cond": json.loads(cond),
                                  "chosen": chosen, "rejected": rejected})
    return pairs


def feedback_examples(ws: Workspace, run: str) -> dict[str, list[dict[str, Any]]]:
    """What run ``run``'s text feedback teaches, for preference tuning: ``pairs`` ({prompt, cond,
    chosen, rejected}) from a thumbs-up and a thumbs-down output of the same prompt and conditions
    (:func:`preference_pairs`), from a choice (the chosen sample over each other sample) and from an
    edit (the user's text over the sample it corrects); ``thumbs`` ({prompt, cond, text, up}): each
    rated output's latest thumb, unpaired."""
    g, f = generations_table, feedback_table
    q = (sa.select(g.c.id, g.c.prompt, g.c.options, g.c.output, f.c.sample_index, f.c.rating, f.c.kind,
                   f.c.edited).join(f, f.c.generation_id == g.c.id)
         .where(g.c.kind == "text", g.c.run == run).order_by(f.c.id))
    thumbs: dict[tuple[str, int], dict[str, Any]] = {}
    pairs: list[dict[str, Any]] = [{k: p[k] for k in ("prompt", "cond", "chosen", "rejected")}
                                   for p in preference_pairs(ws, run)]
    with ws.engine.connect() as conn:
        for r in conn.execute(q).mappings():
            texts = json.loads(r["output"]).get("texts") or []
            i = r["sample_index"]
            if i >= len(texts):
                continue
            base = {"prompt": r["prompt"], "cond": json.loads(r["options"]).get("cond") or {}}
            if r["kind"] == "thumb":
                thumbs[(r["id"], i)] = {**base, "text": texts[i], "up": r["rating"] > 0}
            elif r["kind"] == "choice":
                pairs += [{**base, "chosen": texts[i], "rejected": t} for j, t in enumerate(texts)
                          if j != i and t != texts[i]]
            elif r["kind"] == "edit" and r["edited"]:
                pairs.append({**base, "chosen": r["edited"], "rejected": texts[i]})
    return {"pairs": pairs, "thumbs": list(thumbs.values())}


def export_jsonl(ws: Workspace, path: str | Path, run: str | None = None, pairs: bool = False,
                 label: Callable[[str], dict[str, Any]] | None = None) -> int:
    """Write the log (or, with ``pairs``, the preference pairs) as JSON Lines; returns the row count.
    Written to a temporary name and renamed, so ``path`` is never half-written. ``label(id)``: the
    implicit AIGC label each exported generation carries (field ``aigc_label``)."""
    path = Path(path)
    if pairs:
        rows = preference_pairs(ws, run)
    else:
        rows, offset = [], 0
        while True:
            page = list_generations(ws, run, limit=1000, offset=offset)
            rows.extend(page)
            offset += len(page)
            if len(page) < 1000:
                break
        for row in rows:
            row["feedback"] = get(ws, row["id"])["feedback"] if row.get("up") or row.get("down") else []
            if label is not None:
                row["aigc_label"] = label(row["id"])
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex[:8]}.tmp")
    with open(tmp, "w", encoding="utf-8") as fh:
        for row in rows:
            fh.write(json.dumps(row, ensure_ascii=False) + "\n")
    os.replace(tmp, path)
    return len(rows)
