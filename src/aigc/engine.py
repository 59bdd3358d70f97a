"""The serving engine: loaded runs, continuous batching for text, batched image sampling.

No HTTP here. A surface (the server, a script) builds a :class:`TextRequest` or
:class:`ImageRequest`, calls :meth:`Engine.submit` and reads the :class:`Handle` it gets back,
synchronously (``for event in handle``) or from asyncio (``async for event in handle``).

Text: one worker thread runs every loaded text run's batch. Between two decode steps it
admits queued requests (their prompts are prefilled into free rows of the run's slot cache)
and drops finished, cancelled and expired ones, so a request joins and leaves a running
batch without waiting for the others (continuous batching, as in Orca and vLLM). Each
request samples from its own seeded generator, over its own rows only, so what it gets does
not depend on who else is in the batch. Images: a second worker samples each request's
``n`` images as one batch.

Runs load on first use and stay loaded for ``keep_alive`` seconds after their last use
(per request, as Ollama's ``keep_alive``); loaded runs are also capped in memory, the
least recently used idle one unloaded first. The queue is bounded: beyond ``max_queue``
waiting requests, :meth:`submit` raises :class:`~aigc.errors.Overloaded`.

What a request generates is decided by the decoding core (:mod:`aigc.decoding`), the same code
:class:`~aigc.generation.TextGenerator` runs; this module schedules: queues, rows, threads.

Nothing slow runs on the decode loop. Runs load on a loader thread (requests for a run being
loaded wait in the queue while other runs' batches keep decoding), and the log is written by
a writer thread (:class:`aigc.logbook.LogWriter`). Every finished request is written to the
catalog before its :class:`Result` is delivered, unless the engine was built with ``log=False``.
"""

from __future__ import annotations

import asyncio
import collections
import dataclasses
import queue
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from aigc import logbook
from aigc.decoding import Batch, Pick, PrefixCache, SequenceGroup, choose_tokens, prefill
from aigc.decoding.prefix import BLOCK
from aigc.decoding.prefix import DEFAULT_MAX_TOKENS as DEFAULT_PREFIX_TOKENS
from aigc.errors import AigcError, DeadlineExceeded, EngineUnavailable, InvalidInput, NotFound, Overloaded
from aigc.feedback.store import FeedbackJudge, check_rerank_by, judge_for
from aigc.generation import Sampling, TextGenerator
from aigc.rerank import ConditionJudge, check_candidates, judge_for_run
from aigc.runtime import CpuPlan, bind_thread, worker_threads
from aigc.safety.guard import report_copies, verdict
from aigc.safety.rails import Piece
from aigc.sampling import logprobs_of
from aigc.workspace import Workspace

FOREVER = -1.0


# -- requests, events, results -----------------------------------------------------------


@dataclass
class TextRequest:
    model: str
    prompt: str = ""
    cond: dict[str, str] | None = None
    n: int = 1
    sampling: Sampling = field(default_factory=Sampling)
    logprobs: int | None = None  # None: no log-probabilities; k >= 0: chosen token + k alternatives
    timeout: float | None = None  # seconds from submission; None: the engine's default
    keep_alive: float | None = None  # seconds to keep the run loaded after this request; None: default
    endpoint: str = "python"  # for the log
    options: dict[str, Any] = field(default_factory=dict)  # for the log: the request as the caller gave it
    key_id: str | None = None
    guidance: float = 1.0  # classifier-free guidance (Sampling.guidance); when 1, the sampling's own applies
    # Candidates drawn per sample, of which a classifier of the run's conditions keeps the one it reads
    # most surely as ``cond`` (aigc.rerank); 1 = none, and so is any value without ``cond``.
    rerank: int = 1
    # Who judges those candidates: "condition" (the classifier above) or "feedback": the run's reward
    # model, learned from the ratings of its outputs (aigc.feedback.store), for any text run, cond or not.
    rerank_by: str = "condition"
    # A chat's turns ({"role", "content"}), for a run adapted from a base with a chat template: its
    # template renders them. Other runs continue ``prompt`` (the turns' text, one per line).
    messages: list[dict[str, str]] | None = None


@dataclass
class ImageRequest:
    model: str
    n: int = 1
    cond: dict[str, str] | None = None
    seed: int | None = None
    options: dict[str, Any] = field(default_factory=dict)  # family extras: steps, guidance
    timeout: float | None = None
    keep_alive: float | None = None
    endpoint: str = "python"
    key_id: str | None = None
    write_audio: bool = True  # a run on audio clips: also write a WAV per sample (its caller may do it)
    log_options: dict[str, Any] = field(default_factory=dict)  # recorded in the log row, never sampled with


@dataclass
class TokenInfo:
    token: str
    logprob: float
    top: list[tuple[str, float]]


@dataclass
class TextEvent:
    """New text of sample ``index``; the sample's last event has ``finish_reason`` set."""

    index: int
    text: str
    finish_reason: str | None = None
    tokens: list[TokenInfo] | None = None  # when log-probabilities were asked for: ``text``'s (SampleLogprobs)


@dataclass
class Result:
    """The end of a request. ``texts``/``finish_reasons`` for text; ``images`` (n, C, H, W) in
    [0, 1] and ``paths`` (when logged) for images."""

    id: str
    model: str
    status: str  # ok | cancelled | timeout
    texts: list[str] = field(default_factory=list)
    finish_reasons: list[str] = field(default_factory=list)
    images: torch.Tensor | None = None
    paths: list[str] = field(default_factory=list)
    prompt_tokens: int = 0
    completion_tokens: int = 0  # every token drawn, those of candidates a rerank left out included
    queued_s: float = 0.0
    load_s: float = 0.0
    prefill_s: float = 0.0
    ttft_s: float | None = None
    total_s: float = 0.0
    peak_batch: int = 0  # text: the most requests decoded in one step with this one, itself included
    # text under the safety layer: per sample, what its output rail decided (aigc.safety.guard.verdict)
    safety: list[dict[str, Any]] = field(default_factory=list)
    label: dict[str, Any] | None = None  # the implicit AIGC label (GB 45438 Annex E) of the output
    # images: the policy asks for the visible mark (drawn on those of MARK_MIN_SIDE px and up)
    mark: bool = False

    def client_safety(self) -> list[dict[str, Any]]:
        """Per sample, what the safety layer decided, as a client may see it: without the rule ids and
        the reason, which quote the policy's terms (``violence:<term>``), so a blocked term would reach
        the client that way. The log and the audit keep them."""
        return [{k: x for k, x in v.items() if k not in ("rule_ids", "reason")} for v in self.safety]


class Handle:
    """What :meth:`Engine.submit` returns: an iterator of events ending with a :class:`Result`
    (or raising the request's error), plus :meth:`cancel`."""

    def __init__(self, loop: asyncio.AbstractEventLoop | None = None):
        self.id = logbook.new_id()
        self.cancelled = False
        self.result: Result | None = None
        self._loop = loop
        self._q: Any = asyncio.Queue() if loop is not None else queue.SimpleQueue()

    def cancel(self) -> None:
        """Stop the request: it leaves its batch before the next decode step."""
        self.cancelled = True

    def _put(self, item: Any) -> None:
        if self._loop is None:
            self._q.put(item)
        else:
            try:
                self._loop.call_soon_threadsafe(self._q.put_nowait, item)
            except RuntimeError:  # the caller's loop is closed: nobody is listening any more
                self.cancelled = True

    def _unpack(self, item: Any):
        if isinstance(item, BaseException):
            raise item
        if isinstance(item, Result):
            self.result = item
        return item

    def __iter__(self):
        while self.result is None:
            item = self._unpack(self._q.get())
            yield item

    async def __aiter__(self):
        while self.result is None:
            item = self._unpack(await self._q.get())
            yield item

    async def bursts(self):
        """Like ``async for``, in lists: each holds every event already delivered, so a consumer
        that fell behind (a busy server) catches up in one write rather than one per token."""
        while self.result is None:
            items = [await self._q.get()]
            while not self._q.empty():
                items.append(self._q.get_nowait())
            burst = []
            for item in items:
                if isinstance(item, BaseException):
                    if burst:
                        yield burst
                    raise item
                burst.append(self._unpack(item))
                if self.result is not None:
                    break
            yield burst

    def wait(self) -> Result:
        for _ in self:
            pass
        return self.result


def _deliver(items: list[tuple[Handle, Any]]) -> None:
    """Runs in the caller's event loop: hand a decode step's events to their handles at once."""
    for handle, item in items:
        handle._q.put_nowait(item)


# -- loaded runs ---------------------------------------------------------------------------


@dataclass
class Loaded:
    name: str
    generator: Any  # TextGenerator | ImageGenerator
    kind: str  # text | image
    nbytes: int
    load_s: float
    last_used: float = 0.0
    keep_alive: float = FOREVER
    busy: int = 0  # requests queued or running on it
    batch: Batch | None = None  # text runs: the rows of their slot cache and who holds them
    judge: Future | None = None  # text runs with conditions, once a request reranks: its ConditionJudge

    def expired(self, now: float) -> bool:
        return self.busy == 0 and self.keep_alive >= 0 and now - self.last_used >= self.keep_alive


def _nbytes(module: torch.nn.Module) -> int:
    return sum(t.numel() * t.element_size() for t in [*module.parameters(), *module.buffers()])


def _extra_bytes(obj: Any, module: torch.nn.Module) -> int:
    """Bytes of the tensors in ``obj``'s attributes (nested in lists and tuples, such as a slot
    cache's keys, values and decode weights) that are not storage of ``module`` itself."""
    own = {t.untyped_storage().data_ptr() for t in [*module.parameters(), *module.buffers()]}
    seen: set[int] = set()
    total = 0
    todo = list(vars(obj).values())
    while todo:
        item = todo.pop()
        if isinstance(item, torch.Tensor):
            ptr = item.untyped_storage().data_ptr()
            if ptr not in own and ptr not in seen:
                seen.add(ptr)
                total += item.untyped_storage().nbytes()
        elif isinstance(item, (list, tuple)):
            todo.extend(item)
    return total


# -- text jobs ----------------------------------------------------------------------------


class _TextJob:
    """A text request in the engine: its sequence group (what it generates; :mod:`aigc.decoding`)
    plus what serving adds: the handle, the deadline, timings and the text delivered so far.

    With a ``judge`` (a rerank), the group draws ``rerank`` candidates per sample; their text is
    held back, and the judge's picks go out whole when all are drawn (:meth:`Engine._end`)."""

    def __init__(self, req: TextRequest, handle: Handle, deadline: float | None, group: SequenceGroup,
                 judge: ConditionJudge | FeedbackJudge | None = None):
        self.req, self.handle, self.deadline = req, handle, deadline
        self.group, self.judge = group, judge
        group.owner = self
        group.want_scores = req.logprobs is not None
        self.submitted = time.perf_counter()
        self.started = 0.0
        self.first_token: float | None = None
        self.load_s = self.prefill_s = 0.0
        self.loading: Future | None = None  # the load of its run, while it waits for one
        self.texts = [""] * group.n
        self.finish: list[str | None] = [None] * group.n
        self.logprobs = [SampleLogprobs(s.rail) for s in group.samples] if req.logprobs is not None else None


class SampleLogprobs:
    """One sample's log-probabilities as a client may see them.

    Without an output rail: every token as drawn. With one, entries are sent only for text the rail
    released, and their strings are that text: a token's string is its stretch of the released
    text; tokens a redaction replaced (or that end inside one) become one entry that carries the
    placeholder, with the sum of their log-probabilities (the probability of the span) and no
    alternatives. Tokens of a segment the rail withheld are never sent, nor are trailing ones that
    released no text (a stop string); a token that has put no character into the stream yet (the
    first bytes of a character) joins the next entry. A special token, which says nothing (the end
    of text, a condition), keeps its own entry and string, checked as an alternative is. The rail
    says what each release stands for (its :class:`~aigc.safety.rails.Piece` s); which stream
    characters each token brought is counted here, as the rail takes them.

    Alternatives (top log-probabilities) are text the model did not say, which no rail has read:
    each is kept only if the rail would let it pass after the text released before it
    (:meth:`~aigc.safety.rails.OutputRail.passes`: no term or entity ends in it, so "8" after
    "1381234567" or "桃" after "猕猴" is dropped). Filtered rather than refused, so evaluations
    and confidence scores keep working under the rails; the check costs a term match and a PII
    scan per alternative (0.13 ms each measured here, on 2 busy cores), paid on the decode loop by
    the requests that ask for alternatives only."""

    def __init__(self, rail: Any):
        self.rail = rail
        if rail is not None:
            rail.record_pieces()
        # drawn, not yet sent: (token, stream characters it brought, whether it is a special token)
        self.tokens: list[tuple[TokenInfo, int, bool]] = []
        self.pieces: list[Piece] = []  # released, not yet in an entry
        self.known = 0  # stream characters those pieces stand for
        self.fed = 0  # the rail's stream characters counted into self.tokens
        self.context = ""  # the end of the released text sent so far: what the next alternatives follow

    def add(self, info: TokenInfo, special: bool = False) -> None:
        """A token drawn for the sample (``special``: one that says nothing), once its text is in the
        stream."""
        n = 0
        if self.rail is not None:
            n, self.fed = self.rail.fed - self.fed, self.rail.fed
        self.tokens.append((info, n, special))

    def take(self, released: str, final: bool) -> list[TokenInfo]:
        """The entries that ``released``, the text just released, completes (``final``: the
        sample's last text: what is left unsent then is dropped)."""
        if self.rail is None:
            out, self.tokens = [t for t, _, _ in self.tokens], []
            return out
        budget = len(released)
        for piece in self.rail.take_pieces():
            if len(piece.text) > budget:  # the rail let it out but the copy guard withheld it: the rest too
                break
            budget -= len(piece.text)
            self.pieces.append(piece)
            self.known += piece.chars
        if final and self.tokens:  # what the stream flushed at its end came from the tokens before
            info, n, special = self.tokens[-1]
            self.tokens[-1], self.fed = (info, n + self.rail.fed - self.fed, special), self.rail.fed
        out, start, span = [], 0, 0
        for i, (info, n, special) in enumerate(self.tokens):
            if special and not n and not span:  # it says nothing: its own entry, after the text before it
                if self.rail.passes(self.context, info.token):
                    out.append(TokenInfo(info.token, info.logprob, self._alternatives(info)))
                start = i + 1
                continue
            span += n
            if not span:
                continue
            if span > self.known:  # not released yet
                break
            text = self._cut(span)
            if text is not None:  # None: the tokens so far end inside a redaction; the next ones join them
                out.append(self._entry([t for t, _, _ in self.tokens[start : i + 1]], text))
                self.known -= span
                start, span = i + 1, 0
        self.tokens = [] if final else self.tokens[start:]
        return out

    def _cut(self, chars: int) -> str | None:
        """The released text that stands for the next ``chars`` stream characters, taken off the
        pieces; None (nothing taken) when that would end inside a piece the rail changed."""
        taken = []
        for k, piece in enumerate(self.pieces):
            if chars < piece.chars:
                if not piece.same:
                    return None
                taken.append(piece.text[:chars])
                self.pieces[: k + 1] = [Piece(piece.chars - chars, piece.text[chars:], True)]
                break
            taken.append(piece.text)
            chars -= piece.chars
            if not chars:
                while k + 1 < len(self.pieces) and not self.pieces[k + 1].chars:  # text the rail added here
                    k += 1
                    taken.append(self.pieces[k].text)
                del self.pieces[: k + 1]
                break
        return "".join(taken)

    def _entry(self, tokens: list[TokenInfo], text: str) -> TokenInfo:
        """One entry for ``tokens``, whose released text is ``text``."""
        if len(tokens) == 1 and tokens[0].token == text:
            entry = TokenInfo(text, tokens[0].logprob, self._alternatives(tokens[0]))
        else:
            entry = TokenInfo(text, sum(t.logprob for t in tokens), [])
        self.context = (self.context + text)[-self.rail.hold :]
        return entry

    def _alternatives(self, token: TokenInfo) -> list[tuple[str, float]]:
        return [(a, v) for a, v in token.top if self.rail.passes(self.context, a)]


def _audit_many(ws: Workspace, rows: list[dict[str, Any]]) -> None:
    from aigc.provenance import audit

    audit.record_many(ws, rows)


# -- the engine ------------------------------------------------------------------------------


class Engine:
    def __init__(self, workspace: Workspace, *, max_batch: int = 16, max_queue: int = 32,
                 memory_limit: int | None = None, keep_alive: float = 300.0, timeout: float | None = 600.0,
                 log: bool = True, device: str | None = None, threads: int | None = None,
                 cpu_plan: CpuPlan | None = None, prefix_cache_tokens: int = DEFAULT_PREFIX_TOKENS,
                 safety: bool = True):
        if max_batch < 1 or max_queue < 0:
            raise InvalidInput(f"max_batch must be >= 1 and max_queue >= 0, got {max_batch} and {max_queue}")
        if isinstance(prefix_cache_tokens, bool) or not isinstance(prefix_cache_tokens, int) or not (
                prefix_cache_tokens == 0 or prefix_cache_tokens >= BLOCK):
            raise InvalidInput(f"prefix_cache_tokens must be 0 (off) or a whole number of tokens >= {BLOCK} "
                               f"(one block), got {prefix_cache_tokens!r}")
        # Each loaded text run's prompt prefixes (template headers, system prompts) are cached for
        # later requests, up to this many tokens per run (0: off; aigc.decoding.prefix).
        self.prefix_cache_tokens = prefix_cache_tokens
        # The workspace's safety layer on every text request (aigc.safety.guard): input and output
        # rails, redacted log rows, the audit log. Off only to measure what it costs.
        self.safety = safety
        self.ws = workspace
        self.max_batch, self.max_queue = max_batch, max_queue
        from aigc.runtime import default_memory_limit

        memory_limit = default_memory_limit() if memory_limit is None else memory_limit
        self.memory_limit, self.keep_alive, self.timeout = memory_limit, keep_alive, timeout
        self.log, self.device = log, device
        # Torch threads of each worker. All cores but one by default: the last one serves HTTP and
        # JSON. Measured on 2 cores (small gpt, one decode step at batch 1 / 16): a worker thread
        # with 2 OpenMP threads took 3.4 / 5.0 ms, with 1 thread 0.9 / 2.2 ms.
        self.threads = worker_threads(threads)
        # With a plan, the text worker binds itself to its CPUs and the other workers to the rest
        # (aigc.runtime.CpuPlan says why; `aigc serve` makes one for its engine process).
        self.cpu_plan = cpu_plan
        self.loaded: collections.OrderedDict[str, Loaded] = collections.OrderedDict()  # LRU order
        self._lock = threading.Lock()  # guards loaded, the queues and the counters
        self._wake = threading.Condition(self._lock)
        self._text_queue: collections.deque[_TextJob] = collections.deque()
        self._image_queue: collections.deque[tuple[ImageRequest, Handle, float | None, float]] = collections.deque()
        self._image_wake = threading.Condition(self._lock)
        self._stop = False
        # Prefills (a new request's prompt; a full context's refill) run on their own thread, so a
        # running batch keeps decoding meanwhile: the text worker hands a context over and picks the
        # state up, done, between two steps. Inline, a 96-token refill of the small gpt stalled all
        # 16 streams of a batch for 4.5 ms. The gpt's layers are one TorchScript call that takes the
        # GIL once (see models/gpt.py), so on the second core a prefill costs the decode loop ~0.1 ms.
        self._prefill_pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="aigc-prefill")
        self._prefilled: collections.deque[tuple] = collections.deque()  # finished, waiting to join
        self._prefilling = 0  # handed over and not yet joined (text worker only)
        # Runs load on a thread of their own: loading takes seconds, and on the decode loop it
        # would freeze every stream of every run. One load per run at a time; callers share it.
        self._load_pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="aigc-load",
                                             initializer=self._worker_setup,
                                             initargs=(cpu_plan and cpu_plan.other,))
        self._loads: dict[str, Future] = {}
        # The log is written on a thread of its own too (a locked database waits up to 30 s); a text
        # request's result comes back here once its row is written, and goes out after its events.
        self._writer = logbook.LogWriter(workspace, audit=_audit_many) if log else None
        self._logged: collections.deque[tuple[Handle, Result]] = collections.deque()
        self._logging = 0  # text results at the writer, not yet delivered
        self.listeners: list[Callable[[str, Result], None]] = []  # called with (kind, result) per request
        self.tokens_generated = 0
        # Events for asyncio callers, gathered per event loop during a decode step and handed over
        # with one call_soon_threadsafe (one wake-up of the loop per step, not one per request).
        self._outbox: dict[asyncio.AbstractEventLoop, list[tuple[Handle, Any]]] = {}
        self._threads = [threading.Thread(target=self._text_loop, name="aigc-text", daemon=True),
                         threading.Thread(target=self._image_loop, name="aigc-images", daemon=True)]
        for t in self._threads:
            t.start()

    @property
    def log_failures(self) -> int:
        """Log rows given up on (the database refused them three times)."""
        return self._writer.failures if self._writer is not None else 0

    # -- public --------------------------------------------------------------------------

    def submit(self, req: TextRequest | ImageRequest, loop: asyncio.AbstractEventLoop | None = None,
               handle: Handle | None = None) -> Handle:
        """Queue a request; raises :class:`Overloaded` when the queue is full, and the request's
        own errors (unknown run, bad options) before it is queued.

        Events go to the returned handle (one made for ``loop``, or the given ``handle``)."""
        t0 = time.perf_counter()
        kind, group, judge = self._check(req)
        load_s = time.perf_counter() - t0
        handle = handle if handle is not None else Handle(loop)
        timeout = req.timeout if req.timeout is not None else self.timeout
        deadline = t0 + timeout if timeout else None
        with self._lock:
            if self._stop:
                raise EngineUnavailable("the engine is shutting down")
            free, waiting = self._waiting()
            fits = kind == "text" and free.get(req.model, self._free_rows(req.model)) >= group.width
            if waiting >= self.max_queue and not fits:
                raise Overloaded(f"the queue is full ({self.max_queue} requests waiting): try again shortly",
                                 retry_after=1)
            if kind == "text":
                job = _TextJob(req, handle, deadline, group, judge)
                job.submitted, job.load_s = t0, load_s
                self._text_queue.append(job)
                self._wake.notify()
            else:
                self._image_queue.append((req, handle, deadline, time.perf_counter()))
                self._image_wake.notify()
        return handle

    def _waiting(self) -> tuple[dict[str, int], int]:
        """(rows each run's batch has free once the queued requests that fit are admitted, queued
        requests that will wait): ``max_queue`` bounds the second. A request that finds a free row
        does not wait, even before the decode thread has admitted it (a queue of one place had
        refused the second of two requests sent together while a row was free). Under the lock."""
        free: dict[str, int] = {}
        waiting = len(self._image_queue)
        for job in self._text_queue:
            model = job.req.model
            if model not in free:
                free[model] = self._free_rows(model)
            if free[model] >= job.group.width:
                free[model] -= job.group.width
            else:
                waiting += 1
        return free, waiting

    def _free_rows(self, model: str) -> int:
        entry = self.loaded.get(model)
        return entry.batch.free if entry is not None and entry.batch is not None else 0

    def generate(self, req: TextRequest) -> Result:
        return self.submit(req).wait()

    def get(self, name: str) -> Loaded:
        """The loaded run ``name`` (loading it now if needed, or waiting for a load under way)."""
        entry = self._entry(name)
        while entry is None:
            entry = self._loading(name).result()
            with self._lock:  # unloaded again before we got here (a tight memory cap): load again
                if self.loaded.get(name) is not entry:
                    entry = None
        return entry

    def describe(self, name: str) -> dict[str, Any]:
        """What a caller needs to check a request for run ``name`` (loading it if needed): its kind,
        and for image runs the image side and the class names."""
        entry = self.get(name)
        out: dict[str, Any] = {"name": name, "kind": entry.kind}
        if entry.kind == "image":
            out["image_size"] = entry.generator.model.config.image_size
            out["classes"] = list(entry.generator.classes or [])
        return out

    def unload(self, name: str) -> bool:
        with self._lock:
            entry = self.loaded.get(name)
            if entry is None or entry.busy:
                return False
            del self.loaded[name]
            return True

    def stats(self) -> dict[str, Any]:
        with self._lock:
            loaded = []
            for e in self.loaded.values():
                loaded.append({"name": e.name, "kind": e.kind, "bytes": e.nbytes, "busy": e.busy})
                cache = getattr(e.batch.runner, "prefix_cache", None) if e.batch is not None else None
                if cache is not None:
                    loaded[-1]["prefix_cache"] = cache.stats()
            return {
                "queue_depth": len(self._text_queue) + len(self._image_queue),
                "active_rows": sum(len(e.batch.owners) for e in self.loaded.values() if e.batch is not None),
                "loaded": loaded,
                "loaded_bytes": sum(e.nbytes for e in self.loaded.values()),
                "tokens_generated": self.tokens_generated,
                # prompts that reused a cached prefix, and the prompt tokens they did not run (loaded runs)
                "prefix_cache_hits": sum(e.get("prefix_cache", {}).get("hits", 0) for e in loaded),
                "prefix_tokens_saved": sum(e.get("prefix_cache", {}).get("tokens_saved", 0) for e in loaded),
            }

    def close(self) -> None:
        """Finish what is running and queued, then stop the workers."""
        with self._lock:
            self._stop = True
            self._wake.notify_all()
            self._image_wake.notify_all()
        for t in self._threads:
            t.join(timeout=60)
        self._prefill_pool.shutdown(wait=True)
        self._load_pool.shutdown(wait=True)
        if self._writer is not None:
            self._writer.close(timeout=60)

    # -- checks and loading ----------------------------------------------------------------

    def _check(self, req) -> tuple[str, SequenceGroup | None, ConditionJudge | FeedbackJudge | None]:
        """Validate a request before it is queued; for text, its sequence group and, when it
        reranks, the judge of its conditions (fitted here, on the loader thread, the first time)."""
        if not isinstance(req.n, int) or req.n < 1:
            raise InvalidInput(f"n must be an integer >= 1, got {req.n!r}")
        if req.n > self.max_batch:
            raise InvalidInput(f"n is {req.n}; this server makes at most {self.max_batch} per request")
        if req.timeout is not None and not req.timeout > 0:
            raise InvalidInput(f"timeout must be > 0 seconds, got {req.timeout}")
        entry = self.get(req.model)
        if isinstance(req, TextRequest):
            if entry.kind != "text":
                raise InvalidInput(f"{req.model!r} is an image run: ask for images instead of text")
            if req.logprobs is not None and not 0 <= req.logprobs <= 20:
                raise InvalidInput(f"top logprobs must be in 0..20, got {req.logprobs}")
            sampling = req.sampling
            if req.guidance != 1.0:
                sampling = dataclasses.replace(sampling, guidance=req.guidance)
            reranks = self._reranks(entry, req)
            draws = req.n * req.rerank if reranks else req.n
            chat = {"messages": req.messages} if req.messages and hasattr(entry.generator, "messages_ids") else {}
            group = entry.generator.prepare(req.prompt, draws, req.cond, sampling, **chat)
            if group.width > self.max_batch:
                raise InvalidInput(self._too_wide(req, group, reranks))
            return "text", group, self._judge(entry, req) if reranks else None
        if entry.kind != "image":
            raise InvalidInput(f"{req.model!r} is a text run: ask for text instead of images")
        entry.generator.label_ids(req.n, req.cond)  # an unknown class fails here, before queueing
        entry.generator.check_options(req.options)
        return "image", None, None

    def _too_wide(self, req: TextRequest, group: SequenceGroup, reranks: bool) -> str:
        """Why a request takes more rows than a batch has, and what fits."""
        why = [f"rerank {req.rerank}, which draws {req.rerank} candidates per sample"] if reranks else []
        if group.guided:
            why.append("guidance, which takes two rows per sample")
        per_sample = group.width // req.n
        if reranks and per_sample > self.max_batch:
            fits = f"so rerank can be at most {self.max_batch // (per_sample // req.rerank)}"
        elif reranks:
            fits = f"so n can be at most {self.max_batch // per_sample} (or lower rerank)"
        else:
            fits = f"so n can be at most {self.max_batch // per_sample}"
        return (f"n is {req.n} with {' and '.join(why)}: {group.width} rows; this server decodes at most "
                f"{self.max_batch} rows, {fits}")

    def _reranks(self, entry: Loaded, req: TextRequest) -> bool:
        """Whether ``req`` reranks: ``rerank`` above 1 by feedback, or with conditions asked (without,
        it is 1); a run without conditions is refused a condition rerank, as there is nothing to judge."""
        check_rerank_by(req.rerank_by)
        if check_candidates(req.rerank, "rerank") == 1:
            return False
        if req.rerank_by == "feedback":  # the reward model reads the text alone: any text run, cond or not
            return True
        if not entry.generator.cond_columns:
            raise InvalidInput(f"run {req.model!r} has no text conditions to judge: rerank needs a "
                               "conditional text run (leave rerank at 1, or rerank by 'feedback')")
        return bool(req.cond)

    def _judge(self, entry: Loaded, req: TextRequest) -> ConditionJudge | FeedbackJudge:
        """The judge of a loaded run's conditions: fitted on its train split the first time a request
        reranks, on the loader thread (the caller waits; the decode loop never does), and kept with
        the loaded run, so it is dropped when the run is. By feedback: the run's reward model, read
        here (the caller's thread) when its file changed; refused while it has no ratings."""
        if req.rerank_by == "feedback":
            return judge_for(self.ws, entry.name, req.prompt)
        with self._lock:
            future = entry.judge
            if future is None or (future.done() and future.exception() is not None):  # none, or failed: fit
                try:
                    future = entry.judge = self._load_pool.submit(judge_for_run, self.ws, entry.name)
                except RuntimeError:  # the loader is shut down: so is the engine
                    raise EngineUnavailable("the engine is shutting down") from None
        return future.result()

    def _entry(self, name: str) -> Loaded | None:
        """The loaded run ``name``, or None; never loads."""
        with self._lock:
            entry = self.loaded.get(name)
            if entry is not None:
                self.loaded.move_to_end(name)
            return entry

    def _loading(self, name: str) -> Future:
        """The load of run ``name`` under way, or a new one on the loader thread."""
        with self._lock:
            future = self._loads.get(name)
            if future is not None:
                return future
            try:
                future = self._loads[name] = self._load_pool.submit(self._load, name)
            except RuntimeError:  # the loader is shut down: so is the engine
                raise EngineUnavailable("the engine is shutting down") from None
        # Outside the lock: a load that is already over runs its callback right here.
        future.add_done_callback(lambda f: self._loaded(name, f))
        return future

    def _loaded(self, name: str, future: Future) -> None:
        with self._lock:
            if self._loads.get(name) is future:
                del self._loads[name]
            self._wake.notify()  # requests waiting in the queue for it

    def _load(self, name: str) -> Loaded:
        from aigc import runs

        t0 = time.perf_counter()
        self.ws.get_run(name)  # an unknown name: NotFound, with the known ones
        try:
            gen = runs.load(self.ws, name, self.device, safety=self.safety)
        except (AigcError, OSError, ValueError, RuntimeError, KeyError) as e:  # files deleted or damaged under us
            raise NotFound(f"run {name!r} cannot be loaded: {e}") from e
        kind = "text" if isinstance(gen, TextGenerator) else "image"
        entry = Loaded(name, gen, kind, _nbytes(gen.model), time.perf_counter() - t0, time.perf_counter(),
                       self.keep_alive)
        if kind == "text":
            if not hasattr(gen.model, "init_slots"):
                raise InvalidInput(f"run {name!r} ({gen.model.name}) cannot be served: its family has no slot cache")
            runner = gen.runner(self.max_batch)  # the run's own: its family's slot cache
            cache = getattr(runner, "prefix_cache", None)
            if cache is not None:  # one per loaded run (an adapter's keys are not its base's), of our size
                cache = PrefixCache(self.prefix_cache_tokens) if self.prefix_cache_tokens else None
                runner.prefix_cache = cache
            entry.batch = Batch(runner)
            # keys, values, decode weights; the prefix cache when full
            entry.nbytes += _extra_bytes(getattr(runner, "slots", runner), gen.model)
            if cache is not None:
                entry.nbytes += cache.nbytes(runner.slots)
        with self._lock:
            if name in self.loaded:
                return self.loaded[name]
            self._make_room(entry.nbytes)
            self.loaded[name] = entry
        return entry

    def _make_room(self, nbytes: int) -> None:
        """Unload idle runs, least recently used first, until ``nbytes`` more fit (lock held)."""
        used = sum(e.nbytes for e in self.loaded.values())
        for name in list(self.loaded):
            if used + nbytes <= self.memory_limit:
                return
            if self.loaded[name].busy == 0:
                used -= self.loaded.pop(name).nbytes
        if used + nbytes > self.memory_limit:
            raise Overloaded(f"loading this run needs {nbytes / 2**20:.0f} MiB more; {used / 2**20:.0f} MiB of the "
                             f"{self.memory_limit / 2**20:.0f} MiB cap are held by runs in use", retry_after=5)

    def _acquire(self, name: str) -> Loaded:
        entry = self.get(name)
        with self._lock:
            entry.busy += 1
            entry.last_used = time.perf_counter()
        return entry

    def _release(self, entry: Loaded, keep_alive: float | None) -> None:
        with self._lock:
            entry.busy -= 1
            entry.last_used = time.perf_counter()
            if keep_alive is not None:
                entry.keep_alive = keep_alive

    def _evict_expired(self) -> None:
        now = time.perf_counter()
        with self._lock:
            for name in [n for n, e in self.loaded.items() if e.expired(now)]:
                del self.loaded[name]

    def _post(self, handle: Handle, item: Any) -> None:
        if handle._loop is None:
            handle._q.put(item)
        else:
            self._outbox.setdefault(handle._loop, []).append((handle, item))

    def _flush(self) -> None:
        outbox, self._outbox = self._outbox, {}
        for loop, items in outbox.items():
            try:
                loop.call_soon_threadsafe(_deliver, items)
            except RuntimeError:  # that loop is closed: nobody is listening any more
                for handle, _ in items:
                    handle.cancelled = True

    # -- finishing a request -----------------------------------------------------------------

    def _finish(self, kind: str, handle: Handle, result: Result, row: dict[str, Any] | None) -> None:
        """Deliver ``result`` once its log row is written: a text result goes back to the text
        worker, which posts it after the request's events; an image result goes out from the writer."""
        if self._writer is None or row is None:
            self._deliver(kind, handle, result)
            return
        row = {"id": result.id, "run": result.model, "kind": kind, "status": result.status,
               "prompt_tokens": result.prompt_tokens, "completion_tokens": result.completion_tokens,
               "ttft_ms": None if result.ttft_s is None else result.ttft_s * 1000,
               "latency_ms": result.total_s * 1000, **row}
        if kind == "text":
            with self._lock:
                self._logging += 1

            def written(ok: bool) -> None:
                with self._lock:
                    self._logged.append((handle, result))
                    self._wake.notify()
        else:
            def written(ok: bool) -> None:
                self._deliver(kind, handle, result)
        self._writer.write(row, written)

    def _deliver(self, kind: str, handle: Handle, result: Result) -> None:
        for listener in self.listeners:
            listener(kind, result)
        if kind == "text":  # from the text worker: with the step's other events
            self._post(handle, result)
        else:
            handle._put(result)

    def _deliver_logged(self) -> None:
        """Text results whose rows are written go out (text worker, before its flush)."""
        with self._lock:
            if not self._logged:
                return
            done, self._logged = self._logged, collections.deque()
            self._logging -= len(done)
        for handle, result in done:
            self._deliver("text", handle, result)

    # -- text worker ---------------------------------------------------------------------------

    def _worker_setup(self, cpus: frozenset[int] | None) -> None:
        torch.set_num_threads(self.threads)  # per thread: OpenMP settings do not carry over from main
        if cpus is not None:
            bind_thread(cpus)

    def _text_loop(self) -> None:
        plan = self.cpu_plan
        self._worker_setup(plan and plan.decode)
        self._prefill_pool.submit(self._worker_setup, plan and plan.other).result()
        while True:
            self._join_prefilled()
            self._admit()
            self._deliver_logged()
            self._flush()  # first tokens out before the next step
            with self._lock:
                batches = [e for e in self.loaded.values() if e.batch is not None and e.batch.groups]
            for entry in batches:
                try:
                    self._step(entry)
                except Exception as e:  # noqa: BLE001 - fail this batch's requests, keep serving the rest
                    self._fail(entry, [group.owner for group in entry.batch.groups], e)
            self._flush()
            self._evict_expired()
            with self._lock:
                decoding = any(e.batch is not None and e.batch.owners for e in self.loaded.values())
                # Nothing to decode: sleep until a request, a finished prefill or load, or a written
                # log row comes (a request that came since _admit finds the queue non-empty here,
                # unless a prefill or load that will wake us is running).
                if not decoding and not self._prefilled and not self._logged and (
                        not self._text_queue or self._prefilling or self._loads):
                    if self._stop and not self._text_queue and not self._prefilling and not self._logging:
                        return
                    self._wake.wait(timeout=1.0)

    def _fail(self, entry: Loaded, jobs: list[_TextJob], error: Exception) -> None:
        """End admitted ``jobs`` (in the batch or not) with ``error``."""
        for job in jobs:
            entry.batch.remove(job.group)
            self._release(entry, job.req.keep_alive)
            self._post(job.handle, error if isinstance(error, AigcError) else
                       RuntimeError(f"generation failed: {type(error).__name__}: {error}"))

    def _admit(self) -> None:
        """Move queued requests into their run's batch while it has free rows. A request for a run
        that is not loaded starts its load (on the loader thread) and waits in the queue."""
        with self._lock:
            waiting = list(self._text_queue)
        now = time.perf_counter()
        for job in waiting:
            if job.handle.cancelled or (job.deadline is not None and now > job.deadline):
                self._drop_queued(job)
                continue
            entry = self._entry(job.req.model)
            if entry is None:
                load = job.loading
                if load is not None and load.done() and load.exception() is not None:
                    error = load.exception()
                    if not isinstance(error, AigcError):
                        error = RuntimeError(f"loading {job.req.model!r} failed: "
                                             f"{type(error).__name__}: {error}")
                    self._drop_queued(job, error)
                elif load is None or load.done():  # none yet, or loaded and unloaded again since
                    job.loading = self._loading(job.req.model)
                continue
            job.loading = None
            if entry.batch.free < job.group.width:
                continue
            with self._lock:
                self._text_queue.remove(job)
                entry.busy += 1
                entry.last_used = time.perf_counter()
            try:
                self._start(entry, job)
            except Exception as e:  # noqa: BLE001 - one request's failure must not stop the worker
                self._fail(entry, [job], e)

    def _drop_queued(self, job: _TextJob, error: Exception | None = None) -> None:
        with self._lock:
            if job in self._text_queue:
                self._text_queue.remove(job)
        if error is None and not job.handle.cancelled:
            error = DeadlineExceeded(f"the request waited in the queue past its {job.req.timeout or self.timeout:g} s "
                                     "deadline: try again, or with a longer timeout")
        if error is not None:
            self._post(job.handle, error)

    def _start(self, entry: Loaded, job: _TextJob) -> None:
        job.started = time.perf_counter()
        self._prefill(entry, job, first=True)

    def _prefill(self, entry: Loaded, job: _TextJob, first: bool) -> None:
        """Hand ``job``'s prefill to the prefill thread, holding rows for it; it joins the batch in
        :meth:`_join_prefilled` (``first``: with its first tokens sampled from the logits)."""
        batch = entry.batch
        runner = batch.runner
        parts = job.group.prefill_parts(runner.block_size, runner.capacity)
        batch.reserved += job.group.width
        self._prefilling += 1

        def work() -> None:
            try:
                with torch.inference_mode():
                    done = (entry, job, first, prefill(runner, parts), None)
            except Exception as e:  # noqa: BLE001 - reported to the request by the text worker
                done = (entry, job, first, None, e)
            with self._lock:
                self._prefilled.append(done)
                self._wake.notify()

        self._prefill_pool.submit(work)

    def _join_prefilled(self) -> None:
        """Jobs whose prefill finished take their rows (between two decode steps, text worker)."""
        with self._lock:
            if not self._prefilled:
                return
            done, self._prefilled = self._prefilled, collections.deque()
        now = time.perf_counter()
        for entry, job, first, prefilled, error in done:
            entry.batch.reserved -= job.group.width
            self._prefilling -= 1
            if error is not None:
                self._fail(entry, [job], error)
            elif job.handle.cancelled:
                self._end(entry, job, "cancelled")
            elif job.deadline is not None and now > job.deadline:
                self._end(entry, job, "timeout")
            else:
                with torch.inference_mode():
                    entry.batch.install(job.group, prefilled)
                    if first:
                        job.prefill_s = time.perf_counter() - job.started
                        for pick in choose_tokens([(job.group, None)], prefilled.logits):
                            self._accept(entry, pick)

    def _step(self, entry: Loaded) -> None:
        """One decode step of a run's batch: drop leavers, send full rows to refill, feed, sample."""
        batch = entry.batch
        now = time.perf_counter()
        for group in list(batch.groups):
            job = group.owner
            if job.handle.cancelled:
                self._end(entry, job, "cancelled")
            elif job.deadline is not None and now > job.deadline:
                self._end(entry, job, "timeout")
        if not batch.owners:
            return
        with torch.inference_mode():
            for group in batch.full():  # it sits out until its refill is done; the rest decode on
                batch.remove(group)
                self._prefill(entry, group.owner, first=False)
            if not batch.owners:
                return
            for pick in batch.step():
                self._accept(entry, pick)

    def _accept(self, entry: Loaded, pick: Pick) -> None:
        """Hand a job its next tokens and emit the text they complete."""
        group = pick.group
        job = group.owner
        if job.first_token is None:
            job.first_token = time.perf_counter()
        drawn = []
        if job.logprobs is not None:
            tok = entry.generator.tokenizer
            lp = logprobs_of(pick.scores, pick.token, job.req.logprobs)
            for i, (t, v, top, vals) in enumerate(zip(pick.ids, lp.token.tolist(), lp.top_ids.tolist(),
                                                      lp.top_values.tolist())):
                if not group.samples[i].done:
                    top = [(tok.decode([a], skip_special=False), float(x)) for a, x in zip(top, vals)]
                    info = TokenInfo(tok.decode([t], skip_special=False), float(v), top)
                    drawn.append((i, info, bool(info.token) and not tok.decode([t], skip_special=True)))
        chunks = group.accept(pick.ids)
        for i, info, special in drawn:  # after accept: what each token put into its sample's stream is known
            job.logprobs[i].add(info, special)
        for chunk in chunks:
            self._emit(job, chunk)
        if group.done:
            self._end(entry, job, "ok")

    def _emit(self, job: _TextJob, chunk) -> None:
        i = chunk.index
        job.texts[i] += chunk.text
        if chunk.finish_reason:
            job.finish[i] = chunk.finish_reason
        if job.judge is not None:  # a candidate: held back until the judge has chosen (_end)
            return
        tokens = None
        if job.logprobs is not None:
            tokens = job.logprobs[i].take(chunk.text, final=bool(chunk.finish_reason))
        self._post(job.handle, TextEvent(i, chunk.text, chunk.finish_reason, tokens))

    def _end(self, entry: Loaded, job: _TextJob, status: str) -> None:
        group = job.group
        if status == "timeout":  # close the samples that were cut short, so every stream has an end
            for chunk in group.cut("timeout"):
                self._emit(job, chunk)
        entry.batch.remove(group)
        self._release(entry, job.req.keep_alive)
        req = job.req
        finish = [f or ("length" if status == "ok" else status) for f in job.finish]
        kept = range(group.n)
        if job.judge is not None:  # the picks go out whole, as samples 0..n-1, in the order drawn
            try:
                kept = job.judge.choose(job.texts, req.cond, req.n)
            except Exception as e:  # noqa: BLE001 - this request's failure, not its batch's
                self._post(job.handle, RuntimeError(f"reranking failed: {type(e).__name__}: {e}"))
                return
            for index, i in enumerate(kept):
                tokens = job.logprobs[i].take(job.texts[i], final=True) if job.logprobs is not None else None
                self._post(job.handle, TextEvent(index, job.texts[i], finish[i], tokens))
        done = time.perf_counter()
        first = job.first_token
        if job.judge is not None and first is not None:
            first = done  # reranked: the first text goes out now, with the judge's picks
        completion = group.completion_tokens
        with self._lock:
            self.tokens_generated += completion
        result = Result(
            id=job.handle.id, model=req.model, status=status, texts=[job.texts[i] for i in kept],
            finish_reasons=[finish[i] for i in kept],
            prompt_tokens=group.prompt_tokens,
            completion_tokens=completion, queued_s=job.started - job.submitted,
            load_s=job.load_s, prefill_s=job.prefill_s,
            ttft_s=None if first is None else first - job.submitted,
            total_s=done - job.submitted, peak_batch=group.peak_batch)
        guard = getattr(entry.generator, "guard", None)
        if guard is not None:
            result.safety = [verdict(group.samples[i].rail) for i in kept]
            result.label = guard.guard.label(result.id)
        row = {"endpoint": req.endpoint, "prompt": req.prompt, "key_id": req.key_id,
               "options": {**req.options, "n": req.n, "cond": req.cond or {},
                           **({"rerank": req.rerank, "rerank_by": req.rerank_by}
                              if job.judge is not None else {})},
               "output": {"texts": result.texts, "finish_reasons": result.finish_reasons}}
        if status == "timeout":
            row["error"] = f"deadline of {req.timeout or self.timeout:g} s passed"
        if guard is not None:  # redacted, audited and the copies measured on the writer's thread, not this one
            rails = [group.samples[i].rail for i in kept]
            row["output"]["safety"] = result.safety
            row["_prepare"] = guard.guard.log_preparer(req.model, group.prompt_verdict, result.safety, rails)
            if self._writer is None:
                report_copies(rails, result.safety)
        self._finish("text", job.handle, result, row)

    # -- image worker ----------------------------------------------------------------------------

    def _image_loop(self) -> None:
        self._worker_setup(self.cpu_plan and self.cpu_plan.other)
        while True:
            with self._lock:
                while not self._image_queue:
                    if self._stop:
                        return
                    self._image_wake.wait(timeout=1.0)
                req, handle, deadline, submitted = self._image_queue.popleft()
            if handle.cancelled:
                continue
            try:
                if deadline is not None and time.perf_counter() > deadline:
                    raise DeadlineExceeded("the image request waited in the queue past its deadline: try again")
                self._run_images(req, handle, submitted)
            except AigcError as e:
                handle._put(e)
            except Exception as e:  # noqa: BLE001 - the worker must outlive any one request
                handle._put(RuntimeError(f"image sampling failed: {type(e).__name__}: {e}"))

    def _run_images(self, req: ImageRequest, handle: Handle, submitted: float) -> None:
        entry = self._acquire(req.model)
        started = time.perf_counter()
        try:
            images = entry.generator.sample(req.n, cond=req.cond, seed=req.seed, **req.options)
        finally:
            self._release(entry, req.keep_alive)
        done = time.perf_counter()
        result = Result(id=handle.id, model=req.model, status="ok", images=images.cpu(),
                        queued_s=started - submitted, total_s=done - submitted)
        row = None
        label, mark = None, False
        if self.safety:  # every image written carries the implicit AIGC label, and the mark per policy
            from aigc.safety.guard import guard_for

            guard = guard_for(self.ws)
            label, mark = guard.label(handle.id), bool(guard.policy.labels.get("image_mark"))
            cue = bool(guard.policy.labels.get("audio_cue", True))
            result.label, result.mark = label, mark
        if self.log:
            out_dir = self.ws.root / "generations" / handle.id
            tmp = self.ws.root / "tmp" / f"gen-{handle.id}"
            paths = entry.generator.save(images, tmp, prefix="image", label=label, mark=mark,
                                         audio=req.write_audio, cue=cue if label is not None else False)
            out_dir.parent.mkdir(parents=True, exist_ok=True)
            tmp.replace(out_dir)
            result.paths = [str(out_dir / Path(p).name) for p in paths]
            heard = {}  # a run on audio clips: which inverter made the sound the row points at
            if getattr(entry.generator, "audio", None) and req.write_audio:
                heard = {"inverter": entry.generator.inverter.describe()}
            row = {"endpoint": req.endpoint, "prompt": (req.cond or {}).get("label", ""), "key_id": req.key_id,
                   "options": {**req.options, **heard, **req.log_options, "n": req.n, "cond": req.cond or {},
                               "seed": req.seed},
                   "output": {"images": [str(Path(p).relative_to(self.ws.root)) for p in result.paths]}}
        self._finish("image", handle, result, row)
