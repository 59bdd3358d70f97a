"""Batch shards on a Ray cluster: joining it and running shards as Ray Data actors.

:func:`connect_ray` joins a cluster (``auto``, the ``host:port`` of its head) or starts one here
(``local``); an address where nothing answers is refused within seconds, before Ray's own retries, and
Ray's logs stay off our console. :func:`run_on_ray` runs shards as ``map_batches`` over a pool of
:class:`RayShardWorker` actors. :func:`aigc.batch.run_shards` imports this module only when a job asks
for Ray, and Ray itself is imported only inside these functions.

Knows runs (through :class:`aigc.batch.ShardWorker`) and Ray; nothing of the CLI.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from typing import Any

from aigc.batch import ShardWorker
from aigc.errors import AigcError, InvalidInput

CONNECT_TIMEOUT_S = 3.0  # the TCP check of a Ray address before Ray itself tries (it retries for minutes)
RAY_EXTRA = "pip install 'aigc-studio[ray]'"


class RayShardWorker(ShardWorker):
    """The actor Ray Data runs: a batch is one shard (its index and its tasks as JSON text)."""

    def __call__(self, batch: dict[str, Any]) -> dict[str, Any]:  # type: ignore[override]
        import numpy as np

        # ShardWorker's call named outright: zero-argument super() fails inside Ray Data's wrapper of
        # this class (measured: "super(type, obj): obj must be an instance or subtype of type").
        results = [json.dumps(ShardWorker.__call__(self, json.loads(t)), ensure_ascii=False) for t in batch["tasks"]]
        return {"shard": batch["shard"], "results": np.array(results, dtype=object)}


def run_on_ray(work: dict[str, Any], shards: dict[int, list[dict[str, Any]]],
               on_shard: Callable[[int, list[dict[str, Any]]], None], *, address: str, workers: int | None,
               threads: int) -> int:
    """Ray Data over the shards: one row per shard, ``map_batches`` over a pool of
    :class:`RayShardWorker` actors (each loads the run once), rows collected as they finish."""
    ray, leave = connect_ray(address, workers=(workers or 0) * threads)
    try:
        if workers is None:  # the cluster's CPUs, a worker per --threads of them
            workers = max(1, int(ray.cluster_resources().get("CPU", 1)) // threads)
        workers = min(workers, max(len(shards), 1))
        if not shards:
            return workers
        _quiet_ray_data(ray)
        items = [{"shard": i, "tasks": json.dumps(tasks, ensure_ascii=False)} for i, tasks in shards.items()]
        ds = ray.data.from_items(items, override_num_blocks=len(items))
        ds = ds.map_batches(RayShardWorker, fn_constructor_kwargs={"work": work, "threads": threads},
                            batch_size=1, compute=ray.data.ActorPoolStrategy(size=workers), num_cpus=threads)
        try:
            for row in ds.iter_rows():
                on_shard(int(row["shard"]), json.loads(row["results"]))
        except Exception as e:  # noqa: BLE001 - a domain error on a worker comes back wrapped by Ray
            cause = _aigc_cause(e)
            if cause is None:
                raise
            raise type(cause)(f"on the Ray cluster: {cause}") from None
        return workers
    finally:
        leave()


def _aigc_cause(e: BaseException) -> AigcError | None:
    """The AigcError a worker raised (NotFound, InvalidInput...) inside a Ray error, if any: the
    exception itself where Ray keeps it (a task's), else rebuilt from the traceback text it keeps
    (an actor's ``__init__``: ActorDiedError holds only the text)."""
    import re

    from aigc import errors

    seen = set()
    while e is not None and id(e) not in seen:
        seen.add(id(e))
        if isinstance(e, AigcError):
            return e
        found = re.findall(r"^aigc\.errors\.(\w+): (.+)$", str(e), re.MULTILINE)
        cls = getattr(errors, found[-1][0], None) if found else None
        if isinstance(cls, type) and issubclass(cls, AigcError):
            return cls(found[-1][1])
        e = getattr(e, "cause", None) or e.__cause__
    return None


def connect_ray(address: str, workers: int = 0):
    """Join the Ray cluster at ``address`` (``auto``, ``host:port`` of its head), or start a cluster of
    ``workers`` CPUs on this machine (``local``). Returns ``(ray, leave)``; ``leave()``
    disconnects (or stops the cluster started here). An address where nothing answers is refused
    within :data:`CONNECT_TIMEOUT_S` seconds, before Ray's own retries (minutes) begin."""
    import logging

    try:
        import ray
    except ImportError:
        raise InvalidInput(f"--ray needs Ray, which is not installed here: {RAY_EXTRA}") from None
    if ray.is_initialized():  # a caller already inside a Ray driver: use its connection, leave it open
        return ray, lambda: None
    # The console is ours (progress, one-line errors): Ray's Python logs and its workers' output stay in
    # its session logs.
    logging.getLogger("ray").setLevel(logging.ERROR)
    quiet = {"logging_level": logging.ERROR, "log_to_driver": False}
    if address == "local":
        ray.init(num_cpus=workers or None, include_dashboard=False, **quiet)
        return ray, ray.shutdown
    if address.startswith("ray://"):  # measured: the streaming executor needs a core worker in the driver
        raise InvalidInput(f"--ray {address}: Ray Data {ray.__version__} does not run through Ray Client (ray://); "
                           "run the command on a node of the cluster with --ray auto (or HOST:PORT of its head), "
                           "e.g. through `ray job submit -- aigc generate ... --ray auto`")
    _probe(address, _bootstrap_address(address))
    # Something answers there: Ray's own retries (1 s each, 20 by default) then decide whether it is a
    # head. A head that is up answers the first; a server that is not Ray answers none.
    os.environ.setdefault("RAY_gcs_server_port_wait_time_s", str(int(CONNECT_TIMEOUT_S)))
    _token_auth_like_ray_start()
    try:
        ray.init(address=address, **quiet)
    except Exception as e:  # noqa: BLE001 - Ray raises ConnectionError, RuntimeError, AuthenticationError...
        chain = [e]
        while chain[-1].__cause__ is not None and len(chain) < 10:
            chain.append(chain[-1].__cause__)
        why = ("the cluster wants an authentication token this machine lacks (Ray's token auth: see "
               "RAY_AUTH_MODE and `ray get-auth-token`)" if any("Authentication" in type(c).__name__ for c in chain)
               else f"something answers there, but no Ray head within {CONNECT_TIMEOUT_S:g} s: check the port")
        raise InvalidInput(f"could not join the Ray cluster at {address}: {why}") from None
    return ray, ray.shutdown


def _bootstrap_address(address: str) -> str:
    """``host:port`` of a GCS address, ``auto`` resolved as Ray resolves it ($RAY_ADDRESS, else the
    cluster that `ray start` last started on this machine)."""
    from ray._private import services

    try:
        return services.canonicalize_bootstrap_address_or_die(address)
    except ConnectionError:
        raise InvalidInput(f"--ray {address}: found no Ray cluster (no $RAY_ADDRESS, none started here with "
                           "`ray start --head`); start one, give its HOST:PORT, or use --ray local") from None
    except ValueError:
        raise InvalidInput(f"--ray {address!r}: use auto, local or HOST:PORT") from None


def _probe(given: str, address: str) -> None:
    """A TCP connection to ``address`` (what ``given`` resolved to) within CONNECT_TIMEOUT_S, or one
    clear error."""
    import socket
    from urllib.parse import urlsplit

    parts = urlsplit(f"tcp://{address}")
    try:
        host, port = parts.hostname, parts.port or 6379  # the head's default GCS port
    except ValueError:
        host = port = None
    if not host:
        raise InvalidInput(f"--ray {given!r}: use auto, local or HOST:PORT")
    try:
        socket.create_connection((host, port), timeout=CONNECT_TIMEOUT_S).close()
    except OSError as e:
        why = "timed out" if isinstance(e, TimeoutError) else (e.strerror or str(e)).lower()
        at = "" if address == given else f"{address}: "
        raise InvalidInput(f"no Ray cluster at {given} ({at}{why} within {CONNECT_TIMEOUT_S:g} s): start one there "
                           "with `ray start --head`, or check the address") from None


def _token_auth_like_ray_start() -> None:
    """Turn on Ray's token authentication where `ray start` would have (a token in ~/.ray or
    $RAY_AUTH_TOKEN and $RAY_AUTH_MODE unset), so a driver joins the cluster `ray start` made here."""
    try:
        from ray._private.authentication.authentication_token_setup import (
            maybe_enable_token_auth_if_token_available,
        )
    except ImportError:  # a Ray without token authentication
        return
    maybe_enable_token_auth_if_token_available(warn_if_disabled=False)


def _quiet_ray_data(ray) -> None:
    """No progress bars or log lines from Ray Data on the console: ours go there (its log file keeps them)."""
    import logging

    ray.data.DataContext.get_current().enable_progress_bars = False
    for handler in logging.getLogger("ray.data").handlers:  # a failure reaches the console as our error
        if type(handler).__name__ != "SessionFileHandler":
            handler.setLevel(logging.CRITICAL)
