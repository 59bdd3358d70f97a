"""Variants in front of people: which copy was shown, chosen or clicked; Thompson sampling to pick
what to show; lift against the human-written control; choices that teach the desk's reward model.

Events are rows of the catalog's ``copy_events`` table (``experiment`` is usually a product id,
``variant`` ``"control"`` or a candidate id). A success is a ``chosen`` or ``clicked`` event; the
rate of a variant is successes over ``shown``. :func:`pick` draws the variant to show next by
Thompson sampling over Beta posteriors (:mod:`aigc.apps.copy.abtest`); :func:`report` gives each
variant's rate and its lift over the control with a confidence interval.

A ``chosen`` event also teaches the desk's reward model (issue 12's
:class:`~aigc.feedback.reward.RewardModel`, ``<workspace>/copy/reward.npz``): the chosen text beat
the other variants shown in the experiment. The desk ranks ties of rules, coverage and model score
by it, so what people choose steers the next candidates.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from typing import Any

import numpy as np
import sqlalchemy as sa

from aigc.errors import InvalidInput, NotFound
from aigc.workspace import Workspace, check_name, copy_events_table, now

EVENTS = ("shown", "chosen", "clicked")
CONTROL = "control"
REWARD_FILE = "reward.npz"
_lock = threading.Lock()
_models: dict[str, tuple[float, Any]] = {}


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
        _learn_choice(ws, experiment, variant, text)
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


def _reward_path(ws: Workspace):
    return ws.root / "copy" / REWARD_FILE


def reward_model(ws: Workspace):
    """The desk's reward model, or None before the first choice (re-read when its file changes)."""
    from aigc.feedback.reward import RewardModel

    path = _reward_path(ws)
    if not path.exists():
        return None
    key = str(path.resolve())
    with _lock:
        mtime = path.stat().st_mtime
        cached = _models.get(key)
        if cached is None or cached[0] != mtime:
            cached = (mtime, RewardModel.load(path))
            _models[key] = cached
        return cached[1]


def _learn_choice(ws: Workspace, experiment: str, variant: str, text: str | None) -> None:
    from aigc.feedback.reward import RewardModel

    seen = counts(ws, experiment)
    chosen = text or seen.get(variant, {}).get("text")
    others = [v["text"] for name, v in seen.items() if name != variant and v.get("text")]
    if not chosen or not others:
        return  # nothing to compare with yet: the event is kept, the model learns later choices
    with _lock:
        path = _reward_path(ws)
        model = RewardModel.load(path) if path.exists() else RewardModel()
        model.add_choice(None, chosen, others)
        path.parent.mkdir(parents=True, exist_ok=True)
        model.save(path)
        _models.pop(str(path.resolve()), None)
