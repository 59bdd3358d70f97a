"""Each run's reward model: derived from the catalog's ratings of its outputs, learned online.

``runs/<name>/reward.npz`` is the run's :class:`~aigc.feedback.reward.RewardModel` (written by
``RewardModel.save``: atomically), and ``runs/<name>/reward.json`` how many ratings of each kind
(:data:`KINDS`) it has learned, up to which feedback row of the catalog (``watermark``), and the
ratings learned here whose rows it has not seen yet (``pending``). A run has neither until its
first rating.

The catalog is the source of truth; the files are derived state that catches up, so machines that
share one catalog (``aigc serve`` on several hosts, each with its own workspace folder) keep the
same model. Each use of a run's model (at most every :data:`SYNC_EVERY` seconds: one indexed query,
``feedback.id > watermark``, never one per candidate) and each recorded rating first learn the
feedback rows above the watermark: those of the run's text generations made since the run was
(re)created, as the server's ``POST /api/feedback`` would have taught them, in the catalog's id
order, as the learner (Adagrad with a seeded replay) depends on the order. A rating recorded here
is learned at once, inside its row's transaction, and kept in ``pending`` with the model as it
was before it (``reward.base.npz``); when the rows show up, in the order they were learned here,
they are only checked off; in another order (another machine rated the run at the same moment)
the model is learned again from that base in the catalog's order. So every machine ends with the
model of the catalog's rows in id order, whichever machine recorded which. A rating with no row
(the Python API: :func:`record_thumb` and friends on their own) is local: kept once it has not
shown up for :data:`PENDING_TTL` seconds. On PostgreSQL an id can commit after a larger one: the
catch-up stops at a missing id for up to :data:`GAP_WAIT` seconds (a rolled-back rating leaves
one for good); a row that commits later still is not learned.

A run tuned from another (:func:`aigc.adapted.tune`) keeps what the user taught its parent: the
run's catalog row records the ratings it inherits (:data:`INHERITS`, made by :func:`inheritance`:
each ancestor's name, when it was created, and the catalog's last feedback id when the run was
tuned from it), and its model learns those rows with its own, all in the catalog's id order. Until
its own first rating it is the model its parent had when it was tuned, less ratings with no row.

A model is loaded on first use and kept in this process, one entry per run folder, with a lock:
a ``RewardModel`` is not thread-safe, and the server's request threads record ratings while the
engine's decode thread scores candidates with it. Every record learns and saves under the lock.
Each use compares the files with the ones the entry last read or wrote (inode, size, mtime), so a
model saved by another process (the server records ratings; ``aigc serve`` decodes in a child
process) is read again before it is used. A model file removed is learned afresh from the catalog.
Recording and catching up also hold ``reward.lock`` (``flock``), so processes of one machine that
rate one run at once lose no rating and learn none twice.

:func:`judge_for` gives the engine a judge of candidates with the interface of
:class:`aigc.rerank.ConditionJudge` (``choose(texts, cond, n)``): the ``n`` its run's reward model
scores highest for a prompt.

This module knows the workspace's run folders, the catalog's feedback rows and the reward model;
nothing of the engine or HTTP.
"""

from __future__ import annotations

import json
import os
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import sqlalchemy as sa

from aigc.data.clean import clean_text
from aigc.errors import InvalidInput
from aigc.feedback.reward import RewardModel
from aigc.workspace import Workspace, feedback_table, generations_table, write_json_atomic

MODEL_FILE = "reward.npz"
STATS_FILE = "reward.json"
BASE_FILE = "reward.base.npz"  # the model before its pending ratings (only while there are some)
LOCK_FILE = "reward.lock"  # held while ratings are read, learned and saved (see file_lock)
KINDS = ("thumb", "choice", "edit")
RERANK_BY = ("condition", "feedback")  # who judges a rerank's candidates: aigc.rerank, or this module
SYNC_EVERY = 1.0  # seconds: how stale a use may find the catalog (ratings given on other machines)
PENDING_TTL = 60.0  # seconds: a rating learned here whose row has not shown up by then has none
GAP_WAIT = 10.0  # seconds: how long a missing feedback id may be a transaction not yet committed
INHERITS = "feedback_inherits"  # a tuned run's catalog config (and run.json): the ratings its model inherits


@dataclass(frozen=True)
class _Scope:
    """Whose ratings a run's model learns: those of its own text generations made since it was
    created (``born``), and of each ancestor's ``(run, born, upto)`` made since that one was
    created, with feedback ids up to ``upto`` (the catalog's last when the run was tuned from it)."""

    run: str
    born: str
    ancestors: tuple[tuple[str, str, int], ...] = ()

    def owner(self, row: Any) -> str | None:
        """``"own"`` when feedback ``row`` rates one of the run's generations, ``"inherited"`` one
        of an ancestor's that the run inherits, else None."""
        if row.run == self.run and row.gen_at >= self.born:
            return "own"
        if any(row.run == run and row.gen_at >= born and row.id <= upto for run, born, upto in self.ancestors):
            return "inherited"
        return None


@dataclass
class _Entry:
    """One run's model as this process knows it."""

    lock: threading.Lock = field(default_factory=threading.Lock)
    model: RewardModel | None = None
    counts: dict[str, int] = field(default_factory=lambda: dict.fromkeys(KINDS, 0))
    watermark: int = 0  # the last feedback id learned or passed over
    inherited: int = 0  # how many of the ratings learned are its ancestors' (see INHERITS)
    pending: list[dict[str, Any]] = field(default_factory=list)  # learned here, rows not seen yet
    stamp: tuple | None = None  # (inode, size, mtime_ns) of the two files read or written
    synced: float = -np.inf  # time.monotonic() of the last look at the catalog
    gaps: dict[int, float] = field(default_factory=dict)  # missing feedback id: when first missed
    scope: _Scope | None = None  # whose ratings it learns, as the catalog said at the last use


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
    return _record(ws, run, {"kind": "thumb", "prompt": prompt, "args": [text, up]})


def record_choice(ws: Workspace, run: str, prompt: str | None, chosen: str,
                  others: Sequence[str]) -> dict[str, Any]:
    """Learn that ``chosen`` beat each of ``others`` (the outputs shown with it for ``prompt``)."""
    others = list(others) if isinstance(others, Sequence) and not isinstance(others, str) else others
    return _record(ws, run, {"kind": "choice", "prompt": prompt, "args": [chosen, others]})


def record_edit(ws: Workspace, run: str, prompt: str | None, generated: str, edited: str) -> dict[str, Any]:
    """Learn that the user's ``edited`` text is better than the ``generated`` one it corrects."""
    return _record(ws, run, {"kind": "edit", "prompt": prompt, "args": [generated, edited]})


def _learn(model: RewardModel, rating: dict[str, Any]) -> None:
    """Teach ``model`` one rating as :func:`_record` and :func:`_rating_of` describe it; all or
    nothing: a rating the model refuses (InvalidInput) changes nothing."""
    kind, prompt, args = rating["kind"], rating["prompt"], rating["args"]
    if kind == "thumb":
        model.add_thumb(prompt, *args)
    elif kind == "choice":
        model.add_choice(prompt, *args)
    else:
        model.add_edit(prompt, *args)


def _record(ws: Workspace, run: str, rating: dict[str, Any]) -> dict[str, Any]:
    path, entry, scope = _entry(ws, run)
    with entry.lock, file_lock(path / LOCK_FILE):  # other processes: read, learn and save as one step
        _refresh(path, entry)
        _catch_up(ws, scope, path, entry)  # ratings given elsewhere come first: their rows are older
        if not entry.pending:  # the model as saved is what a rebuild in the catalog's order starts from
            _keep_base(path, entry.model, saved=True)  # (ignored, and removed, while nothing is pending)
        model = entry.model if entry.model is not None else RewardModel()
        _learn(model, rating)  # refused: nothing changed, nothing saved
        entry.model = model
        entry.counts = {**entry.counts, rating["kind"]: entry.counts[rating["kind"]] + 1}
        entry.pending = [*entry.pending, {**rating, "at": time.time()}]
        _save(path, entry)
        return _stats(entry)


# -- catching up with the catalog --------------------------------------------------------------------


def _rating_of(row: Any, scope: _Scope) -> dict[str, Any] | None:
    """What feedback ``row`` (with its generation's columns) teaches the model of ``scope``'s run,
    as the server's ``POST /api/feedback`` learns it (an ancestor's marked ``"inherited": True``);
    None when nothing: a run's it neither is nor inherits from, an image's, a generation older than
    the run (a run of that name deleted since), a sample with no text."""
    owner = scope.owner(row)
    if owner is None or row.gen_kind != "text":
        return None
    texts, i = json.loads(row.output).get("texts") or [], row.sample_index
    if not 0 <= i < len(texts) or not learnable(texts[i]):
        return None
    rating = None
    if row.kind == "thumb":
        rating = {"kind": "thumb", "prompt": row.prompt, "args": [texts[i], row.rating > 0]}
    elif row.kind == "choice":
        others = [t for k, t in enumerate(texts) if k != i and learnable(t)]
        rating = {"kind": "choice", "prompt": row.prompt, "args": [texts[i], others]} if others else None
    elif row.kind == "edit" and row.edited:
        rating = {"kind": "edit", "prompt": row.prompt, "args": [texts[i], row.edited]}
    return {**rating, "inherited": True} if rating is not None and owner == "inherited" else rating


def _rows_above(ws: Workspace, scope: _Scope, watermark: int) -> list[Any]:
    """Every feedback row above ``watermark`` in id order (the primary key's range: one indexed
    query), with the columns of its generation; prompt and output only for the generations of
    ``scope``'s run, and for its ancestors' under the rows it inherits."""
    f, g = feedback_table, generations_table
    mine = sa.or_(g.c.run == scope.run,
                  *(sa.and_(g.c.run == run, f.c.id <= upto) for run, _, upto in scope.ancestors))
    q = (sa.select(f.c.id, f.c.kind, f.c.rating, f.c.sample_index, f.c.edited, g.c.run,
                   g.c.kind.label("gen_kind"), g.c.created_at.label("gen_at"),
                   sa.case((mine, g.c.prompt)).label("prompt"), sa.case((mine, g.c.output)).label("output"))
         .select_from(f.outerjoin(g, g.c.id == f.c.generation_id)).where(f.c.id > watermark).order_by(f.c.id))
    with ws.engine.connect() as conn:
        return conn.execute(q).all()


def settled(rows: Sequence[Any], watermark: int, gaps: dict[int, float]) -> list[Any]:
    """Catalog rows (``.id`` ascending, all above ``watermark``) up to the first missing id that may
    still be a transaction in flight: PostgreSQL numbers a row when it is inserted, not when it
    commits. A missing id is passed over once :data:`GAP_WAIT` seconds have gone by since ``gaps``
    (``{id: time.monotonic()}``, kept by the caller and updated here) first had it: a rollback, or
    a deleted row. Nothing is waited for before the first row of a fresh start (``watermark`` 0)."""
    now, expected, out = time.monotonic(), watermark + 1, []
    for row in rows:
        first = not out and not watermark
        if row.id > expected and not first and now - gaps.setdefault(expected, now) < GAP_WAIT:
            break
        out.append(row)
        expected = row.id + 1
    for k in [k for k in gaps if k < expected]:
        del gaps[k]
    return out


def _catch_up(ws: Workspace, scope: _Scope, path: Path, entry: _Entry) -> None:
    """Learn the catalog's ratings of ``scope``'s run (its own and those it inherits) above the
    watermark, in id order, and save. The caller holds the entry's lock and the file lock, and has
    refreshed the entry."""
    rows = settled(_rows_above(ws, scope, entry.watermark), entry.watermark, entry.gaps)
    entry.synced = time.monotonic()
    before = (entry.model, _n_ratings(entry), len(entry.pending))
    if rows:
        _apply(path, entry, [r for r in (_rating_of(row, scope) for row in rows) if r is not None])
        entry.watermark = rows[-1].id
    if entry.pending and time.time() - max(p["at"] for p in entry.pending) > PENDING_TTL:
        entry.pending = []  # no rows for them: ratings of this machine alone, kept as learned
    if rows or len(entry.pending) != before[2]:
        _save(path, entry, model=entry.model is not before[0] or _n_ratings(entry) != before[1])


def _apply(path: Path, entry: _Entry, new: list[dict[str, Any]]) -> None:
    """Learn ``new`` (the catalog's ratings, in id order) so that the model is the one learned from
    every row in id order, then the pending ratings whose rows are not among them."""
    if not new:
        return
    ours = [_bare(p) for p in entry.pending]
    if new[:len(ours)] == ours:  # ours came first, in our order: checked off, the others learned after
        entry.pending = []
        _learn_all(entry, new[len(ours):])
    elif ours[:len(new)] == new:  # only ours so far, in our order: checked off, the base moves past them
        base = _base(path, entry)
        base = base if base is not None else RewardModel()
        for r in new:
            _learn(base, r)
        base.save(path / BASE_FILE)
        entry.pending = entry.pending[len(new):]
    else:  # another machine's rating came in between: learned again from the base in the catalog's order
        rest = entry.pending
        for r in new:
            rest = _without(rest, r)
        entry.counts = _minus(entry.counts, entry.pending)
        entry.model, entry.pending = _base(path, entry), []
        _learn_all(entry, new)
        if rest:
            _keep_base(path, entry.model)
            entry.pending = rest
            _learn_all(entry, [_bare(p) for p in rest])


def _learn_all(entry: _Entry, ratings: list[dict[str, Any]]) -> None:
    for r in ratings:
        model = entry.model if entry.model is not None else RewardModel()
        try:
            _learn(model, r)
        except InvalidInput:  # a row the model refuses (one written without learning): passed over
            continue
        entry.model = model
        entry.counts = {**entry.counts, r["kind"]: entry.counts[r["kind"]] + 1}
        entry.inherited += bool(r.get("inherited"))


def _bare(rating: dict[str, Any]) -> dict[str, Any]:
    """A pending rating as its row reads (without when it was learned)."""
    return {k: rating[k] for k in ("kind", "prompt", "args")}


def _without(ratings: list[dict[str, Any]], rating: dict[str, Any]) -> list[dict[str, Any]]:
    """``ratings`` less the first that is ``rating`` (its row showed up), if any."""
    for k, p in enumerate(ratings):
        if _bare(p) == rating:
            return ratings[:k] + ratings[k + 1:]
    return ratings


def _minus(counts: dict[str, int], ratings: list[dict[str, Any]]) -> dict[str, int]:
    out = dict(counts)
    for r in ratings:
        out[r["kind"]] -= 1
    return out


def _base(path: Path, entry: _Entry) -> RewardModel | None:
    """The model before the pending ratings (None: no model yet)."""
    if not entry.pending:
        return entry.model
    file = path / BASE_FILE
    return RewardModel.load(file) if file.is_file() else None


def _keep_base(path: Path, model: RewardModel | None, saved: bool = False) -> None:
    """Make ``reward.base.npz`` ``model`` (None: no model, no file). ``saved``: ``model`` is the
    model file as it is, linked (the next save replaces that name, not the file)."""
    file = path / BASE_FILE
    if model is None:
        file.unlink(missing_ok=True)
    elif saved:
        tmp = path / f".{BASE_FILE}.{os.getpid()}.tmp"
        tmp.unlink(missing_ok=True)
        os.link(path / MODEL_FILE, tmp)
        os.replace(tmp, file)
    else:
        model.save(file)


def _sync(ws: Workspace, scope: _Scope, path: Path, entry: _Entry) -> None:
    """Catch up with the catalog if the last look is :data:`SYNC_EVERY` seconds old or more (the
    caller holds the entry's lock)."""
    if time.monotonic() - entry.synced < SYNC_EVERY:
        return
    with file_lock(path / LOCK_FILE):
        _refresh(path, entry)
        _catch_up(ws, scope, path, entry)


def _save(path: Path, entry: _Entry, model: bool = True) -> None:
    """Write the entry's files: the model (unless ``model`` is False: it did not change), then
    ``reward.json``; no base file once nothing is pending. The caller holds the file lock."""
    try:
        if not entry.pending:
            (path / BASE_FILE).unlink(missing_ok=True)
        if model and entry.model is not None:
            entry.model.save(path / MODEL_FILE)
        write_json_atomic(path / STATS_FILE, {"counts": entry.counts, "n_ratings": _n_ratings(entry),
                                              "inherited": entry.inherited, "watermark": entry.watermark,
                                              "pending": entry.pending})
    except BaseException:
        entry.model, entry.stamp, entry.synced = None, None, -np.inf  # read again from what is on disk
        raise
    entry.stamp = _stamps(path)


# -- reading -----------------------------------------------------------------------------------------


def reward_for(ws: Workspace, run: str) -> RewardModel | None:
    """``run``'s reward model, or None while it has no ratings. The model is the one this process
    shares: score with it from one thread at a time, or use :func:`judge_for` and :func:`explain`,
    which take its lock."""
    with _current(ws, run) as entry:
        return entry.model


def stats(ws: Workspace, run: str) -> dict[str, Any]:
    """``{"run", "n_ratings", "by_kind": {"thumb", "choice", "edit"}}`` of ``run``'s reward model
    (all 0 before its first rating); a run that inherits ratings (:data:`INHERITS`) also has
    ``"inherits"``, the runs it inherits from (oldest first), and ``"inherited"``, how many of its
    ratings are theirs."""
    with _current(ws, run) as entry:
        return _stats(entry)


def explain(ws: Workspace, run: str, text: str, prompt: str | None = None,
            top: int = 8) -> dict[str, Any] | None:
    """``{"score", "features": [[feature, contribution], ...]}`` of ``text`` under ``run``'s reward
    model (:meth:`RewardModel.explain`, largest first), or None while the run has no ratings."""
    with _current(ws, run) as entry:
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
    with _current(ws, run) as entry:
        if entry.model is None:
            raise InvalidInput(f"run {run!r} has no feedback yet: rate some outputs first (thumbs, choices "
                               "or edits on its logged generations), or rerank by 'condition'")
    return FeedbackJudge(entry, prompt)


# -- the cache ---------------------------------------------------------------------------------------


def _entry(ws: Workspace, run: str) -> tuple[Path, _Entry, _Scope]:
    """``run``'s folder, entry, and whose ratings it learns (kept in the entry too), from the run's
    catalog row: when it was created (its ratings are of generations since) and what it inherits."""
    row = ws.get_run(run)  # an unknown run is NotFound, with the known ones
    scope = _Scope(run, row["created_at"], tuple((a["run"], a["born"], a["upto"]) for a in _inherits(row)))
    path = ws.run_path(run).resolve()
    with _entries_lock:
        entry = _entries.setdefault(path, _Entry())
        entry.scope = scope
        return path, entry, scope


def _inherits(row: dict[str, Any]) -> list[dict[str, Any]]:
    """The ratings a run's catalog ``row`` says it inherits (:data:`INHERITS`); none for a run not
    tuned from another (an image run, one trained from data), or whose record is not one
    :func:`inheritance` made."""
    config = row.get("config")
    found = config.get(INHERITS) if isinstance(config, dict) else None
    if not isinstance(found, list):
        return []
    try:
        return [{"run": str(a["run"]), "born": str(a["born"]), "upto": int(a["upto"])} for a in found]
    except (KeyError, TypeError, ValueError):
        return []


def inheritance(ws: Workspace, run: str) -> list[dict[str, Any]]:
    """What the reward model of a run tuned from ``run`` now inherits, to record as its
    :data:`INHERITS`: what ``run`` inherits, then ``run``'s own ratings so far, as ``{"run",
    "born": when it was created, "upto": the catalog's last feedback id}`` (the oldest ancestor
    first). Ratings given to ``run`` later are ``run``'s alone."""
    row = ws.get_run(run)
    with ws.engine.connect() as conn:
        upto = conn.execute(sa.select(sa.func.max(feedback_table.c.id))).scalar()
    return [*_inherits(row), {"run": run, "born": row["created_at"], "upto": int(upto or 0)}]


@contextmanager
def _current(ws: Workspace, run: str) -> Iterator[_Entry]:
    """``run``'s entry, with its lock, as its files are and (every :data:`SYNC_EVERY` seconds) caught
    up with the catalog."""
    path, entry, scope = _entry(ws, run)
    with entry.lock:
        _refresh(path, entry)
        _sync(ws, scope, path, entry)
        yield entry


@contextmanager
def file_lock(file: Path) -> Iterator[None]:
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


def _stamps(path: Path) -> tuple:
    return _stamp(path / MODEL_FILE), _stamp(path / STATS_FILE)


def _refresh(path: Path, entry: _Entry) -> None:
    """Make ``entry`` what is on disk, if either file changed since it was read or written (the
    caller holds the entry's lock). Without a model file, what ``reward.json`` says of a model is
    dropped: the model is learned afresh from the catalog."""
    stamps = _stamps(path)
    if stamps == entry.stamp:
        return
    file = path / MODEL_FILE
    model = entry.model if entry.stamp is not None and stamps[0] == entry.stamp[0] else None
    if model is None and stamps[0] is not None:
        try:
            model = RewardModel.load(file)
        except InvalidInput as e:
            raise InvalidInput(f"cannot read the reward model of run {path.name!r}: {e}; or delete "
                               f"{str(file)!r} to learn it again from the catalog's ratings") from None
    try:
        saved = json.loads((path / STATS_FILE).read_text(encoding="utf-8"))
        counts = {k: int(saved["counts"].get(k, 0)) for k in KINDS}
        watermark, pending = int(saved["watermark"]), list(saved["pending"])
        inherited = int(saved.get("inherited", 0))
        if model is None and saved["n_ratings"]:
            raise ValueError("the model file was removed")
    except (OSError, ValueError, KeyError, TypeError, AttributeError):  # learned again from the catalog
        model, counts, inherited, watermark, pending = None, dict.fromkeys(KINDS, 0), 0, 0, []
    entry.model, entry.counts, entry.watermark, entry.pending = model, counts, watermark, pending
    entry.inherited = inherited
    entry.stamp, entry.synced = stamps, -np.inf  # another process moved on: look at the catalog again
    entry.gaps = {}


def _n_ratings(entry: _Entry) -> int:
    return entry.model.n_ratings if entry.model is not None else 0


def _stats(entry: _Entry) -> dict[str, Any]:
    scope = entry.scope
    out = {"run": scope.run, "n_ratings": _n_ratings(entry), "by_kind": dict(entry.counts)}
    if scope.ancestors:
        out.update(inherits=[run for run, _, _ in scope.ancestors], inherited=entry.inherited)
    return out
