"""The engine in its own process, behind the interface of :class:`~aigc.engine.Engine`.

Why: a decode step is some seventy small torch calls, and every one of them releases and takes
back the GIL. In one process with the HTTP event loop, each take-back waits for the loop to let
go (the "convoy" effect): measured here, one decode step of the small gpt at batch 16 took 2.6 ms
alone and 11 ms beside one busy Python thread, and `aigc serve` stayed at one core's worth of CPU
on a two-core machine however many clients came. vLLM moved its engine core out of the API
server's process for the same reason. With the engine in a child process, the model runs on one
core and HTTP, JSON and SSE on the other.

How: the parent keeps an :class:`EngineProcess` with the methods the server uses (``submit``,
``describe``, ``stats``, ``unload``, ``close``, ``listeners``); runs are only ever loaded in the
child, so the parent never holds a model. Requests go over a pipe; the child's engine reports
each decode step's events in one message (its per-loop outbox, see ``Engine._flush``), which a
reader thread here hands to the callers' event loops, one wake-up per message. Submission is a
round trip, so a bad request, an unknown run or a full queue still raise from ``submit``. Errors
cross as (class, args, attributes) and are rebuilt, so ``Overloaded.retry_after`` survives. A child
that is gone (or closing) raises :class:`~aigc.errors.EngineUnavailable`, never ``Overloaded``: the
server answers 503 then, not 429, since retrying cannot help until the server is restarted.
"""

from __future__ import annotations

import asyncio
import dataclasses
import itertools
import multiprocessing
import os
import pickle
import signal
import threading
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

from aigc.engine import Engine, Handle, ImageRequest, Result, TextEvent, TextRequest, _deliver
from aigc.errors import EngineUnavailable
from aigc.runtime import CpuPlan, bind_process, default_device, worker_threads
from aigc.workspace import Workspace

START_TIMEOUT = 120.0  # seconds for the child to import torch and start its engine


def _pack(item: Any) -> Any:
    if type(item) is TextEvent:  # the most common message by far: a tuple pickles 4x faster
        return ("__text__", item.index, item.text, item.finish_reason, item.tokens)
    if isinstance(item, BaseException):
        packed = ("__error__", type(item), item.args, dict(item.__dict__))
        try:
            pickle.dumps(packed)
        except Exception:  # noqa: BLE001 - an error that cannot cross: keep its name and message
            packed = ("__error__", RuntimeError, (f"{type(item).__name__}: {item}",), {})
        return packed
    if isinstance(item, Result) and item.images is not None:  # by value: no shared-memory tensors
        return dataclasses.replace(item, images=item.images.cpu().numpy())
    return item


def _unpack(item: Any) -> Any:
    if type(item) is tuple and item[0] == "__text__":
        return TextEvent(*item[1:])
    if isinstance(item, tuple) and len(item) == 4 and item[0] == "__error__":
        _, cls, args, attrs = item
        try:
            error = cls.__new__(cls)
            error.args = args
            error.__dict__.update(attrs)
        except Exception:  # noqa: BLE001 - an exotic exception class: keep its message
            error = RuntimeError(*args)
        return error
    if isinstance(item, Result) and item.images is not None:
        import torch

        return dataclasses.replace(item, images=torch.from_numpy(item.images))
    return item


# -- the child -------------------------------------------------------------------------------


class _Relay:
    """Stands in for the caller's event loop inside the child: what the engine would hand to
    ``loop.call_soon_threadsafe(_deliver, items)`` goes to the parent as one message."""

    def __init__(self, conn):
        self.conn = conn
        self.lock = threading.Lock()
        self.handles: dict[str, _RelayHandle] = {}

    def send(self, message: tuple) -> None:
        try:
            with self.lock:
                self.conn.send(message)
        except (OSError, ValueError):  # the parent is gone: stop generating for it
            for handle in list(self.handles.values()):
                handle.cancel()

    def call_soon_threadsafe(self, fn: Callable, items: list[tuple[Handle, Any]]) -> None:
        self.events(items)

    def events(self, items: list[tuple[Handle, Any]]) -> None:
        for handle, item in items:
            if isinstance(item, (Result, BaseException)):
                self.handles.pop(handle.id, None)
        self.send(("events", [(handle.id, _pack(item)) for handle, item in items]))


class _RelayHandle(Handle):
    def __init__(self, relay: _Relay, handle_id: str):
        super().__init__(loop=None)
        self.id = handle_id
        self._loop = relay  # makes the engine queue this handle's text events per step (its outbox)
        self._relay = relay

    def _put(self, item: Any) -> None:  # image results and errors outside a decode step
        self._relay.events([(self, item)])


def _child_main(conn, root: str, db_url: str, artifacts: str | None, options: dict[str, Any]) -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C reaches the parent, which closes us
    relay = _Relay(conn)
    if options.get("cpu_plan") is not None:  # before the engine starts its threads: they inherit it
        bind_process(options["cpu_plan"].other)
    try:
        # the parent's catalog and artifact store, not $AIGC_DB_URL's and $AIGC_ARTIFACTS'
        engine = Engine(Workspace(root, db_url=db_url, artifacts=artifacts), **options)
    except BaseException as e:  # noqa: BLE001 - reported to the parent, which raises it
        relay.send(("started", _pack(e)))
        return
    relay.send(("started", None))
    pool = ThreadPoolExecutor(max_workers=4, thread_name_prefix="aigc-rpc")

    def call(call_id: int, method: str, args: tuple) -> None:
        try:
            if method == "submit":
                req, handle_id = args
                handle = _RelayHandle(relay, handle_id)
                relay.handles[handle_id] = handle
                try:
                    engine.submit(req, handle=handle)
                except BaseException:
                    relay.handles.pop(handle_id, None)
                    raise
                value = None
            else:
                value = getattr(engine, method)(*args)
            relay.send(("reply", call_id, True, value))
        except BaseException as e:  # noqa: BLE001 - every error goes back to the caller
            relay.send(("reply", call_id, False, _pack(e)))

    while True:
        try:
            message = conn.recv()
        except (EOFError, OSError):  # the parent is gone
            break
        kind = message[0]
        if kind == "cancel":
            handle = relay.handles.get(message[1])
            if handle is not None:
                handle.cancel()
        elif kind == "call":
            pool.submit(call, *message[1:])
        elif kind == "close":
            break
    engine.close()
    pool.shutdown(wait=False)
    try:
        relay.send(("closed",))
    except (OSError, ValueError):
        pass


# -- the parent ------------------------------------------------------------------------------


class _RemoteHandle(Handle):
    def __init__(self, owner: EngineProcess, loop: asyncio.AbstractEventLoop | None):
        super().__init__(loop)
        self._owner = owner

    def cancel(self) -> None:
        if not self.cancelled:
            super().cancel()
            try:
                self._owner._send(("cancel", self.id))
            except (OSError, ValueError):  # the engine process is gone: nothing left to stop
                pass


class EngineProcess:
    """An :class:`~aigc.engine.Engine` (same keyword options) running in a child process.

    ``cpu_bind``: on a CPU, give the engine's text decode loop a core of its own and bind every
    other thread, this process's (HTTP) included, to the remaining cores (see
    :class:`~aigc.runtime.CpuPlan`; nothing is bound where the plan cannot be made)."""

    def __init__(self, workspace: Workspace, cpu_bind: bool = False, **options: Any):
        self.ws = workspace
        self.cpu_plan = None
        if cpu_bind and (options.get("device") or default_device()) == "cpu":
            self.cpu_plan = options["cpu_plan"] = CpuPlan.make(worker_threads(options.get("threads")))
        self.listeners: list[Callable[[str, Result], None]] = []
        self._handles: dict[str, _RemoteHandle] = {}
        self._calls: dict[int, Future] = {}
        self._ids = itertools.count()
        self._lock = threading.Lock()
        self._send_lock = threading.Lock()
        self._closed = False
        ctx = multiprocessing.get_context("spawn")  # never fork a process that has started torch threads
        self._conn, child = ctx.Pipe()
        self.process = ctx.Process(target=_child_main,
                                   args=(child, str(workspace.root), workspace.db_url, workspace.artifacts, options),
                                   name="aigc-engine", daemon=True)
        self.process.start()
        child.close()
        if not self._conn.poll(START_TIMEOUT):
            self.process.kill()
            raise RuntimeError(f"the engine process did not start within {START_TIMEOUT:g} s")
        try:
            started = self._conn.recv()
        except EOFError:
            code = self.process.exitcode
            raise RuntimeError(f"the engine process exited on start (exit code {code})") from None
        error = _unpack(started[1])
        if error is not None:
            self.process.join(5)
            raise error
        self._reader = threading.Thread(target=self._read, name="aigc-engine-reader", daemon=True)
        self._reader.start()
        self._affinity = None
        if self.cpu_plan is not None:
            self._affinity = frozenset(os.sched_getaffinity(0))  # given back on close
            bind_process(self.cpu_plan.other)

    # -- the Engine interface ----------------------------------------------------------------

    def submit(self, req: TextRequest | ImageRequest,
               loop: asyncio.AbstractEventLoop | None = None) -> Handle:
        handle = _RemoteHandle(self, loop)
        with self._lock:
            self._handles[handle.id] = handle
        try:
            self._call("submit", req, handle.id)
        except BaseException:
            with self._lock:
                self._handles.pop(handle.id, None)
            raise
        return handle

    def generate(self, req: TextRequest) -> Result:
        return self.submit(req).wait()

    def describe(self, name: str) -> dict[str, Any]:
        return self._call("describe", name)

    def unload(self, name: str) -> bool:
        return self._call("unload", name)

    def stats(self) -> dict[str, Any]:
        return self._call("stats")

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        try:
            self._send(("close",))
        except OSError:
            pass
        self.process.join(30)
        if self.process.is_alive():
            self.process.kill()
            self.process.join(5)
        if self._affinity is not None:
            bind_process(self._affinity)

    # -- plumbing ------------------------------------------------------------------------------

    def _send(self, message: tuple) -> None:
        with self._send_lock:
            self._conn.send(message)

    def _call(self, method: str, *args: Any) -> Any:
        if self._closed:
            raise EngineUnavailable("the engine is shutting down")
        if not self.process.is_alive():
            raise EngineUnavailable(f"the engine process exited unexpectedly (exit code {self.process.exitcode}): "
                                    "restart the server")
        call_id = next(self._ids)
        future: Future = Future()
        with self._lock:
            self._calls[call_id] = future
        try:
            self._send(("call", call_id, method, args))
        except (OSError, ValueError):  # it died since the check above
            with self._lock:
                self._calls.pop(call_id, None)
            raise EngineUnavailable("the engine process exited unexpectedly: restart the server") from None
        return future.result()

    def _read(self) -> None:
        """Hand the child's messages to their callers until the pipe closes."""
        while True:
            try:
                message = self._conn.recv()
            except (EOFError, OSError):
                break
            kind = message[0]
            if kind == "events":
                self._events(message[1])
            elif kind == "reply":
                _, call_id, ok, value = message
                with self._lock:
                    future = self._calls.pop(call_id, None)
                if future is not None:
                    if ok:
                        future.set_result(value)
                    else:
                        future.set_exception(_unpack(value))
            elif kind == "closed":
                break
        self._fail_all("the engine process stopped" if self._closed else
                       f"the engine process exited unexpectedly (exit code {self.process.exitcode})")

    def _events(self, items: list[tuple[str, Any]]) -> None:
        by_loop: dict[Any, list[tuple[Handle, Any]]] = {}
        for handle_id, item in items:
            item = _unpack(item)
            with self._lock:
                handle = self._handles.get(handle_id)
                if handle is not None and isinstance(item, (Result, BaseException)):
                    del self._handles[handle_id]
            if handle is None:
                continue
            if isinstance(item, Result):
                kind = "image" if item.images is not None or item.paths else "text"
                for listener in self.listeners:
                    listener(kind, item)
            if handle._loop is None:
                handle._q.put(item)
            else:
                by_loop.setdefault(handle._loop, []).append((handle, item))
        for loop, batch in by_loop.items():
            try:
                loop.call_soon_threadsafe(_deliver, batch)
            except RuntimeError:  # that loop is closed: nobody is listening any more
                pass

    def _fail_all(self, why: str) -> None:
        with self._lock:
            handles, self._handles = list(self._handles.values()), {}
            calls, self._calls = list(self._calls.values()), {}
        error = EngineUnavailable(why + ": restart the server")
        for future in calls:
            future.set_exception(error)
        for handle in handles:
            handle._put(error)
