"""Each run's reward model, kept in its run folder and learned online from the ratings it gets.

``runs/<name>/reward.npz`` is the run's :class:`~aigc.feedback.reward.RewardModel` (written by
``RewardModel.save``: atomically), and ``runs/<name>/reward.json`` how many ratings of each kind
(:data:`KINDS`) it has learned from. A run has neither until its first rating.

A model is loaded on first use and kept in this process, one entry per run folder, with a lock:
a ``RewardModel`` is not thread-safe, and the server's request threads record ratings while the
engine's decode thread scores candidates with it. Every record learns and saves under the lock.
Each use compares the file with the one the entry last read or wrote (inode, size, mtime), so a
model saved by another process (the server records ratings; ``aigc serve`` decodes in a child
process) is read again before it is used, and a run deleted and trained again starts afresh.
Recording also holds ``reward.lock`` (``flock``) from that check to the save, so processes of one
machine that rate one run at once lose no rating. Machines with separate workspace folders keep
separate reward models (the file is not in the artifact store).

:func:`judge_for` gives the engine a judge of candidates with the interface of
:class:`aigc.rerank.ConditionJudge` (``choose(texts, cond, n)``): the ``n`` its run's reward model
scores highest for a prompt.

This module knows the workspace's run folders and the reward model; nothing of the log, the
engine or HTTP.
"""

from __future__ import annotations

import json
import os
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from aigc.data.clean import clean_text
from aigc.errors import InvalidInput
from aigc.feedback.reward import RewardModel
from aigc.workspace import Workspace, write_json_atomic

MODEL_FILE = "reward.npz"
STATS_FILE = "reward.json"
LOCK_FILE = "reward.lock"  # held while a rating is read, learned and saved (see _file_lock)
KINDS = ("thumb", "choice", "edit")
RERANK_BY = ("condition", "feedback")  # who judges a rerank's candidates: aigc.rerank, or this module


@dataclass
class _Entry:
    """One run's model as this process knows it."""

    lock: threading.Lock = field(default_factory=threading.Lock)
    model: RewardModel | None = None
    counts: dict[str, int] = field(default_factory=lambda: dict.fromkeys(KINDS, 0))
    stamp: tuple[int, int, int] | None = None  # (inode, size, mtime_ns) of the file read or written


# The one piece of process state: a ratings model must be shared by the threads that rate and
# those that rerank, and loading one re-featurizes its recent ratings (~0.2 s for 512).
_entries: dict[Path, _Entry] = {}
_entries_lock = threading.Lock()


def check_rerank_by(value: Any) -> str:
    """``value`` if it names a judge of rerank candidates (:data:`RERANK_BY`)."""
    if value not in RERANK_BY:
        raise InvalidInput(f"rerank_by must be one of {', '.join(map(repr, RERANK_BY))}, got {value!r:.60}; "
                           "'feedback' picks what the run's ratings favour, 'condition' what reads as cond")
    return value


def learnable(text: str) -> bool:
    """Whether ``text`` has anything a reward model can learn from (it is not empty once cleaned)."""
    return isinstance(text, str) and bool(clean_text(text))


# -- recording ---------------------------------------------------------------------------------------


def record_thumb(ws: Workspace, run: str, prompt: str | None, text: str, up: bool) -> dict[str, Any]:
    """Learn a thumbs up (``up``) or down on ``text``, an output of ``run`` for ``prompt``; saved
    before this returns. Returns the run's :func:`stats`."""
    return _record(ws, run, "thumb", lambda m: m.add_thumb(prompt, text, up))


def record_choice(ws: Workspace, run: str, prompt: str | None, chosen: str,
                  others: Sequence[str]) -> dict[str, Any]:
    """Learn that ``chosen`` beat each of ``others`` (the outputs shown with it for ``prompt``)."""
    return _record(ws, run, "choice", lambda m: m.add_choice(prompt, chosen, others))


def record_edit(ws: Workspace, run: str, prompt: str | None, generated: str, edited: str) -> dict[str, Any]:
    """Learn that the user's ``edited`` text is better than the ``generated`` one it corrects."""
    return _record(ws, run, "edit", lambda m: m.add_edit(prompt, generated, edited))


def _record(ws: Workspace, run: str, kind: str, learn) -> dict[str, Any]:
    path, entry = _entry(ws, run)
    with entry.lock, _file_lock(path / LOCK_FILE):  # other processes: read, learn and save as one step
        _refresh(path, entry)
        model = entry.model if entry.model is not None else RewardModel()
        learn(model)  # all or nothing: a rating the model refuses changes nothing
        counts = {**entry.counts, kind: entry.counts[kind] + 1}
        try:
            model.save(path / MODEL_FILE)
            write_json_atomic(path / STATS_FILE, {"counts": counts, "n_ratings": model.n_ratings})
        except BaseException:
            entry.model, entry.stamp = None, None  # read again from what is on disk
            raise
        entry.model, entry.counts, entry.stamp = model, counts, _stamp(path / MODEL_FILE)
        return _stats(run, entry)


# -- reading -----------------------------------------------------------------------------------------


def reward_for(ws: Workspace, run: str) -> RewardModel | None:
    """``run``'s reward model, or None while it has no ratings. The model is the one this process
    shares: score with it from one thread at a time, or use :func:`judge_for` and :func:`explain`,
    which take its lock."""
    path, entry = _entry(ws, run)
    with entry.lock:
        _refresh(path, entry)
        return entry.model


def stats(ws: Workspace, run: str) -> dict[str, Any]:
    """``{"run", "n_ratings", "by_kind": {"thumb", "choice", "edit"}}`` of ``run``'s reward model
    (all 0 before its first rating)."""
    path, entry = _entry(ws, run)
    with entry.lock:
        _refresh(path, entry)
        return _stats(run, entry)


def explain(ws: Workspace, run: str, text: str, prompt: str | None = None,
            top: int = 8) -> dict[str, Any] | None:
    """``{"score", "features": [[feature, contribution], ...]}`` of ``text`` under ``run``'s reward
    model (:meth:`RewardModel.explain`, largest first), or None while the run has no ratings."""
    path, entry = _entry(ws, run)
    with entry.lock:
        _refresh(path, entry)
        if entry.model is None or not learnable(text):
            return None
        return {"score": entry.model.score([text], prompt)[0],
                "features": [[name, value] for name, value in entry.model.explain(text, top, prompt)]}


class FeedbackJudge:
    """Rerank candidates by a run's reward model, for one prompt: the interface of
    :class:`aigc.rerank.ConditionJudge`, ``cond`` aside (the model reads the text alone)."""

    def __init__(self, entry: _Entry, prompt: str | None):
        self._entry, self.prompt = entry, prompt
        self._model = entry.model  # if the entry loses its model (a failed save, a deleted run)

    def scores(self, texts: Sequence[str]) -> np.ndarray:
        """(N,) each text's reward; an empty one (nothing to score) ranks below every other."""
        out = np.full(len(texts), -np.inf)
        keep = [i for i, t in enumerate(texts) if learnable(t)]
        if keep:
            with self._entry.lock:  # the model as it is now: ratings given since submission count
                model = self._entry.model if self._entry.model is not None else self._model
                out[keep] = model.score([texts[i] for i in keep], self.prompt)
        return out

    def choose(self, texts: Sequence[str], cond: dict[str, str] | None, n: int) -> list[int]:
        """The indices of the ``n`` texts the reward model scores highest, in the order drawn."""
        if not 1 <= n <= len(texts):
            raise InvalidInput(f"n must be between 1 and the {len(texts)} candidates, got {n}")
        order = np.argsort(-self.scores(texts), kind="stable")[:n]  # ties: the earlier draw
        return sorted(int(i) for i in order)

    def pick(self, texts: Sequence[str], cond: dict[str, str] | None, n: int) -> list[str]:
        """The ``n`` texts the reward model scores highest, in the order drawn."""
        return [texts[i] for i in self.choose(texts, cond, n)]


def judge_for(ws: Workspace, run: str, prompt: str | None = None) -> FeedbackJudge:
    """A judge of ``run``'s candidates for ``prompt`` by its reward model; refused while the run
    has no ratings (there is nothing to judge by)."""
    path, entry = _entry(ws, run)
    with entry.lock:
        _refresh(path, entry)
        if entry.model is None:
            raise InvalidInput(f"run {run!r} has no feedback yet: rate some outputs first (thumbs, choices "
                               "or edits on its logged generations), or rerank by 'condition'")
    return FeedbackJudge(entry, prompt)


# -- the cache ---------------------------------------------------------------------------------------


def _entry(ws: Workspace, run: str) -> tuple[Path, _Entry]:
    ws.get_run(run)  # an unknown run is NotFound, with the known ones
    path = ws.run_path(run).resolve()
    with _entries_lock:
        return path, _entries.setdefault(path, _Entry())


@contextmanager
def _file_lock(file: Path) -> Iterator[None]:
    """An exclusive lock on ``file`` (created if missing) across the processes of this machine
    (``flock``; released when the file is closed, so also when the holder dies). Two servers or
    CLI commands recording ratings of one run would otherwise each read the model, learn their
    rating and save, and the later save would drop the earlier one's rating."""
    import fcntl

    with open(file, "a+b") as fh:
        fcntl.flock(fh.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh.fileno(), fcntl.LOCK_UN)


def _stamp(file: Path) -> tuple[int, int, int] | None:
    try:
        st = os.stat(file)
    except FileNotFoundError:
        return None
    return st.st_ino, st.st_size, st.st_mtime_ns


def _refresh(path: Path, entry: _Entry) -> None:
    """Make ``entry`` what is on disk, if the file changed since it was read or written (the
    caller holds the entry's lock)."""
    file = path / MODEL_FILE
    stamp = _stamp(file)
    if stamp == entry.stamp:
        return
    model, counts = None, dict.fromkeys(KINDS, 0)
    if stamp is not None:
        try:
            model = RewardModel.load(file)
        except InvalidInput as e:
            raise InvalidInput(f"cannot read the reward model of run {path.name!r}: {e}; or delete "
                               f"{str(file)!r} to start its feedback afresh") from None
        try:
            saved = json.loads((path / STATS_FILE).read_text(encoding="utf-8"))["counts"]
            counts.update({k: int(saved.get(k, 0)) for k in KINDS})
        except (OSError, ValueError, KeyError, TypeError, AttributeError):  # missing or damaged: unknown
            pass
    entry.model, entry.counts, entry.stamp = model, counts, stamp


def _stats(run: str, entry: _Entry) -> dict[str, Any]:
    return {"run": run, "n_ratings": entry.model.n_ratings if entry.model is not None else 0,
            "by_kind": dict(entry.counts)}
