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

Every finished request is written to the catalog (:mod:`aigc.logbook`) before its last event
is delivered, unless the engine was built with ``log=False``.
"""

from __future__ import annotations

import asyncio
import collections
import queue
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from aigc import logbook
from aigc.errors import AigcError, DeadlineExceeded, InvalidInput, NotFound, Overloaded
from aigc.generation import SampleStream, Sampling, TextGenerator
from aigc.runtime import CpuPlan, bind_thread, worker_threads
from aigc.sampling import draw, logprobs_of, next_token_probs, sample_next_token, uniforms
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
    tokens: list[TokenInfo] | None = None  # when log-probabilities were asked for


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
    completion_tokens: int = 0
    queued_s: float = 0.0
    load_s: float = 0.0
    prefill_s: float = 0.0
    ttft_s: float | None = None
    total_s: float = 0.0


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
    batch: Any = None  # _TextBatch for text runs

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


# -- text jobs and batches -----------------------------------------------------------------


class _TextJob:
    def __init__(self, req: TextRequest, handle: Handle, deadline: float | None, context: torch.Tensor,
                 generator: torch.Generator):
        self.req, self.handle, self.deadline = req, handle, deadline
        self.submitted = time.perf_counter()
        self.started = 0.0
        self.first_token: float | None = None
        self.load_s = self.prefill_s = 0.0
        self.rows: list[int] = []
        self.seq = context  # (n, T) context + generated tokens, up to the last call of tokens()
        self.unjoined: list[list[int]] = []  # tokens generated since: one list of n per step
        self.last: list[int] = []  # (n) tokens not fed to the model yet
        self.generator = generator
        self.samples: list[SampleStream] = []
        self.texts: list[str] = []
        self.finish: list[str | None] = []
        self.pending_tokens: list[list[TokenInfo]] = []
        self.steps = 0
        self.prompt_tokens = 0

    def tokens(self) -> torch.Tensor:
        """(n, T) context + every generated token (joined here, when needed, not every step)."""
        if self.unjoined:
            new = torch.tensor(self.unjoined, dtype=self.seq.dtype, device=self.seq.device).T
            self.seq, self.unjoined = torch.cat([self.seq, new], dim=1), []
        return self.seq


class _TextBatch:
    """One text run's live sequences: row r of the slot cache belongs to ``owners[r]``."""

    def __init__(self, gen: TextGenerator, rows: int):
        self.gen = gen
        self.model = gen.model
        self.slots = self.model.init_slots(rows)
        self.capacity = rows
        self.owners: list[tuple[_TextJob, int]] = []
        self.jobs: list[_TextJob] = []
        self.reserved = 0  # rows promised to jobs whose prefill is running

    @property
    def free(self) -> int:
        return self.capacity - len(self.owners) - self.reserved

    def install(self, job: _TextJob, state: Any) -> None:
        """Give ``job`` free rows holding its prefilled ``state``; it decodes from the next step."""
        rows = list(range(len(self.owners), len(self.owners) + job.req.n))
        self.owners.extend((job, j) for j in range(job.req.n))
        job.rows = rows
        self.jobs.append(job)
        self.model.load_slots(state, self.slots, rows)

    def remove(self, job: _TextJob) -> None:
        """Free ``job``'s rows, moving the last live rows into the holes (rows stay packed)."""
        if job not in self.jobs:  # never installed, or sitting out a prefill
            return
        for r in sorted(job.rows, reverse=True):
            last = len(self.owners) - 1
            if r != last:
                self.slots.move(last, r)
                owner, j = self.owners[last]
                self.owners[r] = (owner, j)
                owner.rows[j] = r
            self.owners.pop()
        job.rows = []
        self.jobs.remove(job)


# -- the engine ------------------------------------------------------------------------------


class Engine:
    def __init__(self, workspace: Workspace, *, max_batch: int = 16, max_queue: int = 32,
                 memory_limit: int = 2 << 30, keep_alive: float = 300.0, timeout: float | None = 600.0,
                 log: bool = True, device: str | None = None, threads: int | None = None,
                 cpu_plan: CpuPlan | None = None):
        if max_batch < 1 or max_queue < 0:
            raise InvalidInput(f"max_batch must be >= 1 and max_queue >= 0, got {max_batch} and {max_queue}")
        self.ws = workspace
        self.max_batch, self.max_queue = max_batch, max_queue
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
        self.listeners: list[Callable[[str, Result], None]] = []  # called with (kind, result) per request
        self.tokens_generated = 0
        self.log_failures = 0
        # Events for asyncio callers, gathered per event loop during a decode step and handed over
        # with one call_soon_threadsafe (one wake-up of the loop per step, not one per request).
        self._outbox: dict[asyncio.AbstractEventLoop, list[tuple[Handle, Any]]] = {}
        self._threads = [threading.Thread(target=self._text_loop, name="aigc-text", daemon=True),
                         threading.Thread(target=self._image_loop, name="aigc-images", daemon=True)]
        for t in self._threads:
            t.start()

    # -- public --------------------------------------------------------------------------

    def submit(self, req: TextRequest | ImageRequest, loop: asyncio.AbstractEventLoop | None = None,
               handle: Handle | None = None) -> Handle:
        """Queue a request; raises :class:`Overloaded` when the queue is full, and the request's
        own errors (unknown run, bad options) before it is queued.

        Events go to the returned handle (one made for ``loop``, or the given ``handle``)."""
        t0 = time.perf_counter()
        kind, prepared = self._check(req)
        load_s = time.perf_counter() - t0
        handle = handle if handle is not None else Handle(loop)
        timeout = req.timeout if req.timeout is not None else self.timeout
        deadline = t0 + timeout if timeout else None
        with self._lock:
            if self._stop:
                raise Overloaded("the engine is shutting down", retry_after=5)
            if len(self._text_queue) + len(self._image_queue) >= self.max_queue:
                raise Overloaded(f"the queue is full ({self.max_queue} requests waiting): try again shortly",
                                 retry_after=1)
            if kind == "text":
                job = _TextJob(req, handle, deadline, *prepared)
                job.submitted, job.load_s = t0, load_s
                self._text_queue.append(job)
                self._wake.notify()
            else:
                self._image_queue.append((req, handle, deadline, time.perf_counter()))
                self._image_wake.notify()
        return handle

    def generate(self, req: TextRequest) -> Result:
        return self.submit(req).wait()

    def get(self, name: str) -> Loaded:
        """The loaded run ``name`` (loading it now if needed)."""
        with self._lock:
            entry = self.loaded.get(name)
            if entry is not None:
                self.loaded.move_to_end(name)
                return entry
        return self._load(name)

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
            return {
                "queue_depth": len(self._text_queue) + len(self._image_queue),
                "active_rows": sum(len(e.batch.owners) for e in self.loaded.values() if e.batch is not None),
                "loaded": [{"name": e.name, "kind": e.kind, "bytes": e.nbytes, "busy": e.busy}
                           for e in self.loaded.values()],
                "loaded_bytes": sum(e.nbytes for e in self.loaded.values()),
                "tokens_generated": self.tokens_generated,
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

    # -- checks and loading ----------------------------------------------------------------

    def _check(self, req) -> tuple[str, tuple]:
        """Validate a request before it is queued; for text, its context and seeded generator."""
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
            return "text", entry.generator.prepare(req.prompt, req.n, req.cond, req.sampling)
        if entry.kind != "image":
            raise InvalidInput(f"{req.model!r} is a text run: ask for text instead of images")
        entry.generator.label_ids(req.n, req.cond)  # an unknown class fails here, before queueing
        entry.generator.check_options(req.options)
        return "image", ()

    def _load(self, name: str) -> Loaded:
        from aigc import runs

        t0 = time.perf_counter()
        self.ws.get_run(name)  # an unknown name: NotFound, with the known ones
        try:
            gen = runs.load(self.ws, name, self.device)
        except (AigcError, OSError, ValueError, RuntimeError, KeyError) as e:  # files deleted or damaged under us
            raise NotFound(f"run {name!r} cannot be loaded: {e}") from e
        kind = "text" if isinstance(gen, TextGenerator) else "image"
        entry = Loaded(name, gen, kind, _nbytes(gen.model), time.perf_counter() - t0, time.perf_counter(),
                       self.keep_alive)
        if kind == "text":
            if not hasattr(gen.model, "init_slots"):
                raise InvalidInput(f"run {name!r} ({gen.model.name}) cannot be served: its family has no slot cache")
            entry.batch = _TextBatch(gen, self.max_batch)
            entry.nbytes += _extra_bytes(entry.batch.slots, gen.model)  # keys, values, decode weights
        with self._lock:
            if name in self.loaded:  # loaded by the other worker meanwhile
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
        if self.log and row is not None:
            self._record({"id": result.id, "run": result.model, "kind": kind, "status": result.status,
                          "prompt_tokens": result.prompt_tokens, "completion_tokens": result.completion_tokens,
                          "ttft_ms": None if result.ttft_s is None else result.ttft_s * 1000,
                          "latency_ms": result.total_s * 1000, **row})
        for listener in self.listeners:
            listener(kind, result)
        if kind == "text":  # from the text worker: with the step's other events
            self._post(handle, result)
        else:
            handle._put(result)

    def _record(self, row: dict[str, Any]) -> None:
        """Write a log row; SQLite waits up to 30 s for a concurrent writer, then we try twice more."""
        for attempt in range(3):
            try:
                logbook.record(self.ws, row)
                return
            except Exception:  # noqa: BLE001 - a log failure must not take the request down
                if attempt == 2:
                    self.log_failures += 1
                    return
                time.sleep(0.1 * (attempt + 1))

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
            self._flush()  # first tokens out before the next step
            with self._lock:
                batches = [e for e in self.loaded.values() if e.batch is not None and e.batch.jobs]
            for entry in batches:
                try:
                    self._step(entry)
                except Exception as e:  # noqa: BLE001 - fail this batch's requests, keep serving the rest
                    self._fail(entry, list(entry.batch.jobs), e)
            self._flush()
            self._evict_expired()
            with self._lock:
                decoding = any(e.batch is not None and e.batch.owners for e in self.loaded.values())
                # Nothing to decode: sleep until a request or a finished prefill comes (a request
                # that came since _admit finds the queue non-empty here, unless a prefill that will
                # wake us is running).
                if not decoding and not self._prefilled and (not self._text_queue or self._prefilling):
                    if self._stop and not self._text_queue and not self._prefilling:
                        return
                    self._wake.wait(timeout=1.0)

    def _fail(self, entry: Loaded, jobs: list[_TextJob], error: Exception) -> None:
        """End admitted ``jobs`` (in the batch or not) with ``error``."""
        for job in jobs:
            entry.batch.remove(job)
            self._release(entry, job.req.keep_alive)
            self._post(job.handle, error if isinstance(error, AigcError) else
                       RuntimeError(f"generation failed: {type(error).__name__}: {error}"))

    def _admit(self) -> None:
        """Move queued requests into their run's batch while it has free rows."""
        with self._lock:
            waiting = list(self._text_queue)
        now = time.perf_counter()
        for job in waiting:
            if job.handle.cancelled or (job.deadline is not None and now > job.deadline):
                self._drop_queued(job)
                continue
            try:
                entry = self.get(job.req.model)
            except AigcError as e:
                self._drop_queued(job, e)
                continue
            if entry.batch.free < job.req.n:
                continue
            with self._lock:
                self._text_queue.remove(job)
                entry.busy += 1
                entry.last_used = time.perf_counter()
            try:
                self._start(entry, job)
            except Exception as e:  # noqa: BLE001 - one request's failure must not stop the worker
                self._fail(entry, [job], e)

    def _drop_queued(self, job: _TextJob, error: AigcError | None = None) -> None:
        with self._lock:
            if job in self._text_queue:
                self._text_queue.remove(job)
        if error is None and not job.handle.cancelled:
            error = DeadlineExceeded(f"the request waited in the queue past its {job.req.timeout or self.timeout:g} s "
                                     "deadline: try again, or with a longer timeout")
        if error is not None:
            self._post(job.handle, error)

    def _start(self, entry: Loaded, job: _TextJob) -> None:
        req, gen = job.req, entry.generator
        job.started = time.perf_counter()
        job.prompt_tokens = job.seq.shape[1]
        job.samples = [SampleStream(gen.tokenizer, i, req.sampling.stop) for i in range(req.n)]
        job.texts = [""] * req.n
        job.finish = [None] * req.n
        job.pending_tokens = [[] for _ in range(req.n)]
        self._prefill(entry, job, job.tokens()[:, -entry.batch.model.block_size:], first=True)

    def _prefill(self, entry: Loaded, job: _TextJob, context: torch.Tensor, first: bool) -> None:
        """Hand ``context`` (n, T) to the prefill thread, holding rows for it; ``job`` joins the
        batch in :meth:`_join_prefilled` (``first``: with its first token sampled from the logits)."""
        batch = entry.batch
        batch.reserved += job.req.n
        self._prefilling += 1

        def work() -> None:
            try:
                with torch.inference_mode():
                    state, logits = batch.model.prefill_state(context, batch.slots)
                done = (entry, job, first, state, logits, None)
            except Exception as e:  # noqa: BLE001 - reported to the request by the text worker
                done = (entry, job, first, None, None, e)
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
        for entry, job, first, state, logits, error in done:
            entry.batch.reserved -= job.req.n
            self._prefilling -= 1
            if error is not None:
                self._fail(entry, [job], error)
            elif job.handle.cancelled:
                self._end(entry, job, "cancelled")
            elif job.deadline is not None and now > job.deadline:
                self._end(entry, job, "timeout")
            else:
                with torch.inference_mode():
                    entry.batch.install(job, state)
                if first:
                    job.prefill_s = time.perf_counter() - job.started
                    self._sample(entry, job, logits)

    def _step(self, entry: Loaded) -> None:
        """One decode step of a run's batch: drop leavers, re-prefill full rows, feed, sample."""
        batch = entry.batch
        now = time.perf_counter()
        for job in list(batch.jobs):
            if job.handle.cancelled:
                self._end(entry, job, "cancelled")
            elif job.deadline is not None and now > job.deadline:
                self._end(entry, job, "timeout")
        if not batch.owners:
            return
        cap = batch.slots.capacity
        with torch.inference_mode():
            if cap is not None:
                at_cap = (batch.slots.lengths[: len(batch.owners)] >= cap).nonzero().flatten().tolist()
                full = list(dict.fromkeys(batch.owners[r][0] for r in at_cap))  # one tensor read, not one per job
                for job in full:  # context full: refill the last three quarters of a block, as TextGenerator
                    context = job.tokens()[:, -(3 * cap // 4):-1]  # does; the job sits out until it is done
                    batch.remove(job)
                    self._prefill(entry, job, context, first=False)
                if not batch.owners:
                    return
            tokens = torch.tensor([owner.last[j] for owner, j in batch.owners], device=batch.slots.lengths.device)
            logits = batch.model.decode_slots(tokens, batch.slots)
            # Rows of jobs with the same settings are sampled together; each job still draws its
            # uniforms from its own generator, so its tokens are those it would get alone. Rows are
            # taken first: a job that finishes below frees its rows and moves others.
            groups: dict[tuple | None, list[tuple[_TextJob, list[int]]]] = {}
            for job in batch.jobs:
                s = job.req.sampling
                key = None if s.repetition_penalty != 1.0 else (s.temperature, s.top_k, s.top_p)
                groups.setdefault(key, []).append((job, list(job.rows)))
            chosen = []
            for key, members in groups.items():
                if key is None:  # a repetition penalty looks at each job's own history
                    for job, rows in members:
                        token = self._choose(job, logits[rows])
                        chosen.append((job, token.tolist(), logits[rows], token))
                    continue
                order = [r for _, rows in members for r in rows]
                lg = logits if order == list(range(logits.shape[0])) else logits[order]
                probs, picked = next_token_probs(lg, temperature=key[0], top_k=key[1], top_p=key[2])
                if picked is None:
                    u = uniforms([job.req.n for job, _ in members], [job.generator for job, _ in members], lg.device)
                    picked = draw(probs, u)
                ids, k = picked.tolist(), 0  # one read for the group; tensors per job only for logprobs
                for job, rows in members:
                    n = len(rows)
                    wants = job.req.logprobs is not None
                    chosen.append((job, ids[k : k + n], lg[k : k + n] if wants else None,
                                   picked[k : k + n] if wants else None))
                    k += n
            for job, ids, lg, token in chosen:
                self._accept(entry, job, ids, lg, token)

    def _choose(self, job: _TextJob, logits: torch.Tensor) -> torch.Tensor:
        s = job.req.sampling
        return sample_next_token(logits.float(), job.generator, temperature=s.temperature, top_k=s.top_k,
                                 top_p=s.top_p, repetition_penalty=s.repetition_penalty,
                                 prev_tokens=job.tokens() if s.repetition_penalty != 1.0 else None)

    def _sample(self, entry: Loaded, job: _TextJob, logits: torch.Tensor) -> None:
        token = self._choose(job, logits)
        self._accept(entry, job, token.tolist(), logits, token)

    def _accept(self, entry: Loaded, job: _TextJob, ids: list[int], logits: torch.Tensor | None,
                token: torch.Tensor | None) -> None:
        """Take ``job``'s next tokens ``ids`` and emit what they complete. ``logits`` (its rows') and
        ``token`` (``ids`` as a tensor) are needed only when the request asked for log-probabilities."""
        s, tok = job.req.sampling, entry.generator.tokenizer
        job.unjoined.append(ids)
        job.last = ids
        job.steps += 1
        if job.first_token is None:
            job.first_token = time.perf_counter()
        infos = None
        if job.req.logprobs is not None:
            lp = logprobs_of(logits, token, job.req.logprobs)
            infos = [TokenInfo(tok.decode([t], skip_special=False), float(v),
                               [(tok.decode([i], skip_special=False), float(x)) for i, x in zip(top, vals)])
                     for t, v, top, vals in zip(ids, lp.token.tolist(), lp.top_ids.tolist(),
                                                lp.top_values.tolist())]
        for i, t in enumerate(ids):
            sample = job.samples[i]
            if sample.done:
                continue
            if infos is not None:
                job.pending_tokens[i].append(infos[i])
            self._emit(job, sample.push(t))
        finished = all(sample.done for sample in job.samples)
        if not finished and job.steps >= s.max_new_tokens:
            for sample in job.samples:
                if not sample.done:
                    self._emit(job, sample.finish())
            finished = True
        if finished:
            self._end(entry, job, "ok")

    def _emit(self, job: _TextJob, chunk) -> None:
        if chunk is None:
            return
        i = chunk.index
        job.texts[i] += chunk.text
        if chunk.finish_reason:
            job.finish[i] = chunk.finish_reason
        tokens = None
        if job.req.logprobs is not None:
            tokens, job.pending_tokens[i] = job.pending_tokens[i], []
        self._post(job.handle, TextEvent(i, chunk.text, chunk.finish_reason, tokens))

    def _end(self, entry: Loaded, job: _TextJob, status: str) -> None:
        if status == "timeout":  # close the samples that were cut short, so every stream has an end
            for sample in job.samples:
                if not sample.done:
                    chunk = sample.finish()
                    chunk.finish_reason = "timeout"
                    self._emit(job, chunk)
        entry.batch.remove(job)
        self._release(entry, job.req.keep_alive)
        done = time.perf_counter()
        completion = sum(sample.tokens for sample in job.samples)
        with self._lock:
            self.tokens_generated += completion
        req = job.req
        result = Result(
            id=job.handle.id, model=req.model, status=status, texts=job.texts,
            finish_reasons=[f or ("length" if status == "ok" else status) for f in job.finish],
            prompt_tokens=job.prompt_tokens, completion_tokens=completion, queued_s=job.started - job.submitted,
            load_s=job.load_s, prefill_s=job.prefill_s,
            ttft_s=None if job.first_token is None else job.first_token - job.submitted, total_s=done - job.submitted)
        row = {"endpoint": req.endpoint, "prompt": req.prompt, "key_id": req.key_id,
               "options": {**req.options, "n": req.n, "cond": req.cond or {}},
               "output": {"texts": result.texts, "finish_reasons": result.finish_reasons}}
        if status == "timeout":
            row["error"] = f"deadline of {req.timeout or self.timeout:g} s passed"
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
        if self.log:
            out_dir = self.ws.root / "generations" / handle.id
            tmp = self.ws.root / "tmp" / f"gen-{handle.id}"
            paths = entry.generator.save(images, tmp, prefix="image")
            out_dir.parent.mkdir(parents=True, exist_ok=True)
            tmp.replace(out_dir)
            result.paths = [str(out_dir / Path(p).name) for p in paths]
            row = {"endpoint": req.endpoint, "prompt": (req.cond or {}).get("label", ""), "key_id": req.key_id,
                   "options": {**req.options, "n": req.n, "cond": req.cond or {}, "seed": req.seed},
                   "output": {"images": [str(Path(p).relative_to(self.ws.root)) for p in result.paths]}}
        self._finish("image", handle, result, row)
