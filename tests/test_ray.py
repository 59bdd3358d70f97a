"""Batch generation and sharded synthesis (tables and text) on a real two-CPU Ray cluster (`ray start
--head` on this machine, in a short temp folder): the same files as the local path, and a dead address
refused fast.

Opt-in by marker (`-m ray`) where the suite deselects it; skipped where Ray is not installed."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest
from helpers import run_cli
from test_batch import read_rows, train_batch_workspace, write_requests

pytest.importorskip("ray", reason="Ray is an optional extra: pip install 'aigc-studio[ray]'")
pytestmark = pytest.mark.ray


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def cluster():
    """A head node of 2 CPUs, its ports free ones (never Ray's fixed defaults, which another cluster on
    the machine may hold), token auth off, everything under a short /tmp folder (Ray's socket paths
    have a length limit). Stopped by signalling the `ray start --block` process, which ends its own."""
    tmp = tempfile.mkdtemp(prefix="aigc-ray-", dir="/tmp")
    env = {**os.environ, "RAY_TMPDIR": tmp, "RAY_AUTH_MODE": "disabled", "RAY_USAGE_STATS_ENABLED": "0",
           "RAY_GRACEFUL_SHUTDOWN_DRAIN_TIMEOUT_S": "0"}  # stop at once, not after up to 30 s of draining
    port = free_port()
    ray_cli = Path(sys.executable).with_name("ray")
    log = Path(tmp) / "head.log"
    log_file = open(log, "w")  # noqa: SIM115 - the head writes to it until the end of the module
    head = subprocess.Popen(
        [str(ray_cli), "start", "--head", "--block", f"--port={port}", "--num-cpus=2", "--include-dashboard=false",
         f"--temp-dir={tmp}", f"--ray-client-server-port={free_port()}", f"--dashboard-agent-listen-port={free_port()}",
         f"--dashboard-port={free_port()}",
         "--disable-usage-stats"],
        env=env, stdout=log_file, stderr=subprocess.STDOUT, start_new_session=True)
    deadline = time.monotonic() + 60
    while "Ray runtime started" not in log.read_text():
        if head.poll() is not None or time.monotonic() > deadline:
            stop(head)
            pytest.fail("ray start --head did not start:\n" + log.read_text()[-2000:])
        time.sleep(0.2)
    yield {"address": f"127.0.0.1:{port}", "env": {k: env[k] for k in ("RAY_TMPDIR", "RAY_AUTH_MODE")}}
    stop(head)
    log_file.close()
    shutil.rmtree(tmp, ignore_errors=True)


def stop(head: subprocess.Popen) -> None:
    """SIGTERM to `ray start --block`, which stops what it started; past 30 s, SIGKILL to its session
    (the processes this fixture started, and only those)."""
    head.send_signal(signal.SIGTERM)
    try:
        head.wait(timeout=30)
    except subprocess.TimeoutExpired:
        os.killpg(head.pid, signal.SIGKILL)
        head.wait()


@pytest.fixture(scope="module")
def ws(tmp_path_factory):
    return train_batch_workspace(tmp_path_factory.mktemp("ray"))


@pytest.fixture(autouse=True)
def _driver_env(ws, cluster, monkeypatch):
    monkeypatch.setenv("AIGC_DB_URL", ws.db_url)  # the module's catalog, whatever AIGC_TEST_DB says
    for key, value in cluster["env"].items():
        monkeypatch.setenv(key, value)


def test_generation_through_ray_writes_the_local_file_and_resumes(ws, cluster, tmp_path, monkeypatch):
    requests = write_requests(tmp_path / "requests.jsonl", count=12)
    local, on_ray = tmp_path / "local.jsonl", tmp_path / "ray.jsonl"
    common = ("generate", "g", "--file", requests, "-w", ws.root, "--seed", 7)
    assert run_cli(*common, "--out", local, "--shard-size", 12).exit_code == 0
    r = run_cli(*common, "--out", on_ray, "--shard-size", 3, "--ray", cluster["address"], "--workers", 2)
    assert r.exit_code == 0, r.output
    assert f"2 worker(s), ray {cluster['address']}" in r.stdout
    assert on_ray.read_bytes() == local.read_bytes()

    # a job that stopped after three of its four shards: `--ray auto` (RAY_ADDRESS) does the last one only
    on_ray.with_name("ray.jsonl.parts").joinpath("shard-00002.jsonl").unlink()
    on_ray.unlink()
    monkeypatch.setenv("RAY_ADDRESS", cluster["address"])
    r = run_cli(*common, "--out", on_ray, "--shard-size", 3, "--ray", "auto")
    assert r.exit_code == 0, r.output
    assert "(3 of 4 shards were already done): 3 requests" in r.stdout
    assert on_ray.read_bytes() == local.read_bytes()


def test_synthesis_through_ray_equals_the_local_sharded_path(ws, cluster, tmp_path):
    local, on_ray = tmp_path / "local.csv", tmp_path / "ray.csv"
    common = ("synthesize", "cop", "--n", 150, "-w", ws.root, "--seed", 3, "--shard-size", 40)
    assert run_cli(*common, "--out", local).exit_code == 0
    r = run_cli(*common, "--out", on_ray, "--ray", cluster["address"], "--workers", 2)
    assert r.exit_code == 0 and f"(4 shards; 2 worker(s), ray {cluster['address']})" in r.stdout, r.output
    rows = read_rows(on_ray)
    assert len(rows) == 150 and rows == read_rows(local)
    manifest = json.loads(on_ray.with_name("ray.csv.parts").joinpath("manifest.json").read_text(encoding="utf-8"))
    assert manifest["shard_size"] == 40 and manifest["n"] == 150


def test_text_synthesis_through_ray_equals_the_local_sharded_file(ws, cluster, tmp_path):
    local, on_ray = tmp_path / "local.jsonl", tmp_path / "ray.jsonl"
    common = ("synthesize", "g", "--n", 20, "-w", ws.root, "--seed", 4, "--shard-size", 6)
    assert run_cli(*common, "--out", local).exit_code == 0
    r = run_cli(*common, "--out", on_ray, "--ray", cluster["address"], "--workers", 2)
    assert r.exit_code == 0 and f"(4 shards; 2 worker(s), ray {cluster['address']})" in r.stdout, r.output
    assert on_ray.read_bytes() == local.read_bytes()
    assert len(on_ray.read_text(encoding="utf-8").splitlines()) == 20

def test_an_address_without_a_cluster_is_one_line_and_exit_2_fast(ws, tmp_path):
    requests = write_requests(tmp_path / "requests.jsonl", count=2)
    dead = f"127.0.0.1:{free_port()}"
    t0 = time.perf_counter()
    r = run_cli("generate", "g", "--file", requests, "--out", tmp_path / "out.jsonl", "-w", ws.root, "--ray", dead)
    seconds = time.perf_counter() - t0
    assert r.exit_code == 2
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"error: no Ray cluster at {dead} ("), r.stderr
    assert "connection refused within 3 s" in lines[0]
    assert seconds < 5, seconds
    r = run_cli("synthesize", "cop", "--n", 10, "--out", tmp_path / "s.csv", "-w", ws.root, "--ray", "ray://" + dead)
    assert r.exit_code == 2 and "does not run through Ray Client (ray://)" in r.stderr  # measured: it fails inside
