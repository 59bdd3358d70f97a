"""Variants in front of people: which copy was shown, chosen or clicked; Thompson sampling to pick
what to show; lift against the human-written control; choices that teach the desk's reward model.

Events are rows of the catalog's ``copy_events`` table (``experiment`` is usually a product id,
``variant`` ``"control"`` or a candidate id). A success is a ``chosen`` or ``clicked`` event; the
rate of a variant is successes over ``shown``. :func:`pick` draws the variant to show next by
Thompson sampling over Beta posteriors (:mod:`aigc.apps.copy.abtest`); :func:`report` gives each
variant's rate and its lift over the control with a confidence interval.

A ``chosen`` event also teaches the desk's reward model (issue 12's
:class:`~aigc.feedback.reward.RewardModel`, ``<workspace>/copy/reward.npz``): the chosen text beat
the other variants of the experiment that had a text by then. The desk ranks ties of rules,
coverage and model score by it, so what people choose steers the next candidates. The model is
derived from the catalog, as a run's feedback model is (:mod:`aigc.feedback.store`): it learns the
``chosen`` events in id order, each with the texts of the events up to it, and ``copy/reward.json``
keeps the last id learned; each use (at most every ``SYNC_EVERY`` seconds) and each choice catch
up with the events above it, so machines that share the catalog, each with its own workspace
folder, rank by the same model.
"""

from __future__ import annotations

import json
import os
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import sqlalchemy as sa

from aigc.errors import InvalidInput, NotFound
from aigc.workspace import Workspace, check_name, copy_events_table, now, write_json_atomic

EVENTS = ("shown", "chosen", "clicked")
CONTROL = "control"
REWARD_FILE = "reward.npz"
REWARD_STATE = "reward.json"  # {"watermark": the last copy_events id learned or passed, "n_ratings"}
REWARD_LOCK = "reward.lock"


def record_event(ws: Workspace, experiment: str, variant: str, event: str, text: str | None = None) -> dict:
    """Record one event; returns the experiment's :func:`report`."""
    check_name(experiment, "experiment")
    if not isinstance(variant, str) or not variant.strip() or len(variant) > 200:
        raise InvalidInput(f"variant must be a non-empty name of at most 200 characters, got {variant!r}")
    if event not in EVENTS:
        raise InvalidInput(f"unknown event {event!r}: choose from {', '.join(EVENTS)}")
    if text is not None and not isinstance(text, str):
        raise InvalidInput("text must be a string")
    with ws.engine.begin() as conn:
        conn.execute(copy_events_table.insert().values(created_at=now(), experiment=experiment, variant=variant,
                                                       event=event, text=text))
    if event == "chosen":
        reward_model(ws, fresh=True)  # learned now: the next candidates are ranked by it
    return report(ws, experiment)


def counts(ws: Workspace, experiment: str) -> dict[str, dict[str, Any]]:
    """``{variant: {"shown", "successes", "text"}}`` of an experiment."""
    t = copy_events_table
    with ws.engine.connect() as conn:
        rows = conn.execute(sa.select(t.c.variant, t.c.event, sa.func.count(), sa.func.max(t.c.text))
                            .where(t.c.experiment == experiment).group_by(t.c.variant, t.c.event)).all()
    out: dict[str, dict[str, Any]] = {}
    for variant, event, n, text in rows:
        v = out.setdefault(variant, {"shown": 0, "successes": 0, "text": None})
        if event == "shown":
            v["shown"] += n
        else:
            v["successes"] += n
        v["text"] = v["text"] or text
    return out


def pick(ws: Workspace, experiment: str, variants: Sequence[str], seed: int | None = None) -> str:
    """The variant to show next, by Thompson sampling over what the experiment has seen."""
    from aigc.apps.copy.abtest import thompson_pick

    if not variants:
        raise InvalidInput("pick needs at least one variant")
    seen = counts(ws, experiment)
    stats = {v: (seen.get(v, {}).get("shown", 0), seen.get(v, {}).get("successes", 0)) for v in variants}
    return thompson_pick(stats, np.random.default_rng(seed))


def report(ws: Workspace, experiment: str, confidence: float = 0.95) -> dict[str, Any]:
    """Each variant's shown / successes / rate, and its lift over the control with a CI."""
    from aigc.apps.copy.abtest import lift

    seen = counts(ws, experiment)
    if not seen:
        raise NotFound(f"experiment {experiment!r} has no events: POST /api/copy/events records them")
    control = seen.get(CONTROL)
    variants = []
    for name, v in sorted(seen.items()):
        row = {"variant": name, "shown": v["shown"], "successes": v["successes"],
               "rate": v["successes"] / v["shown"] if v["shown"] else None}
        if control and name != CONTROL and control["shown"] and v["shown"]:
            row["lift"] = lift((control["shown"], control["successes"]), (v["shown"], v["successes"]),
                               confidence=confidence)
        variants.append(row)
    return {"experiment": experiment, "control": CONTROL if control else None, "variants": variants}


# -- the desk's reward model --------------------------------------------------------------------


@dataclass
class _Desk:
    """The desk's model as this process knows it."""

    model: Any = None  # a RewardModel, or None before the first choice
    watermark: int = 0
    stamp: tuple | None = None  # the files as read or written
    synced: float = -float("inf")  # time.monotonic() of the last look at the catalog
    gaps: dict[int, float] = field(default_factory=dict)


_lock = threading.Lock()
_desks: dict[str, _Desk] = {}


def reward_model(ws: Workspace, fresh: bool = False):
    """The desk's reward model, or None before the first choice it could learn from; caught up with
    the catalog's choices if the last look is ``SYNC_EVERY`` seconds old (``fresh``: now)."""
    from aigc.feedback.store import SYNC_EVERY, file_lock

    folder = ws.root / "copy"
    with _lock:
        desk = _desks.setdefault(str(folder.resolve()), _Desk())
        _read(folder, desk)
        if fresh or time.monotonic() - desk.synced >= SYNC_EVERY:
            folder.mkdir(parents=True, exist_ok=True)
            with file_lock(folder / REWARD_LOCK):  # processes of this machine: one catches up at a time
                _read(folder, desk)
                _catch_up(ws, folder, desk)
        return desk.model


def _stamps(folder: Path) -> tuple:
    out = []
    for name in (REWARD_FILE, REWARD_STATE):
        try:
            st = os.stat(folder / name)
            out.append((st.st_ino, st.st_size, st.st_mtime_ns))
        except FileNotFoundError:
            out.append(None)
    return tuple(out)


def _read(folder: Path, desk: _Desk) -> None:
    """Make ``desk`` what its files say, if they changed; a model without its state (or a state
    without its model) is learned again from the catalog."""
    from aigc.feedback.reward import RewardModel

    stamps = _stamps(folder)
    if stamps == desk.stamp:
        return
    try:
        state = json.loads((folder / REWARD_STATE).read_text(encoding="utf-8"))
        watermark, n = int(state["watermark"]), int(state["n_ratings"])
        same = desk.stamp is not None and stamps[0] == desk.stamp[0]  # only the state moved on
        model = desk.model if same else RewardModel.load(folder / REWARD_FILE) if n else None
    except (OSError, ValueError, KeyError, TypeError, InvalidInput):
        model, watermark = None, 0
    desk.model, desk.watermark, desk.stamp = model, watermark, stamps
    desk.synced, desk.gaps = -float("inf"), {}  # another process moved on: look at the catalog again


def _catch_up(ws: Workspace, folder: Path, desk: _Desk) -> None:
    """Learn the ``chosen`` events above the watermark, in id order (one query; one more per choice
    for the experiment's texts up to it), and save."""
    from aigc.feedback.reward import RewardModel
    from aigc.feedback.store import settled

    t, chosen = copy_events_table, copy_events_table.c.event == "chosen"
    with ws.engine.connect() as conn:
        q = (sa.select(t.c.id, t.c.event, *(sa.case((chosen, c)).label(c.name)
                                            for c in (t.c.experiment, t.c.variant, t.c.text)))
             .where(t.c.id > desk.watermark).order_by(t.c.id))
        rows = settled(conn.execute(q).all(), desk.watermark, desk.gaps)
        desk.synced = time.monotonic()
        if not rows:
            return
        model, learned = desk.model, False
        for row in rows:
            if row.event != "chosen":
                continue
            texts = dict(conn.execute(sa.select(t.c.variant, sa.func.max(t.c.text))
                                      .where(t.c.experiment == row.experiment, t.c.id <= row.id)
                                      .group_by(t.c.variant).order_by(t.c.variant)).all())
            text = row.text or texts.get(row.variant)
            others = [v for name, v in texts.items() if name != row.variant and v]
            if not text or not others:
                continue  # nothing to compare with yet: the model learns later choices
            candidate = model if model is not None else RewardModel()
            try:
                candidate.add_choice(None, text, others)
            except InvalidInput:  # every other text is the chosen one
                continue
            model, learned = candidate, True
    if learned:
        model.save(folder / REWARD_FILE)
    desk.model, desk.watermark = model, rows[-1].id
    write_json_atomic(folder / REWARD_STATE, {"watermark": desk.watermark,
                                              "n_ratings": model.n_ratings if model is not None else 0})
    desk.stamp = _stamps(folder)
