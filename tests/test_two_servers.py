"""Two real `aigc serve` processes on different ports, each with a local workspace of its own, over ONE
PostgreSQL catalog and ONE artifact store (S3 on a local moto server): both load the run a third
workspace trained and pushed, an API key made while both run works on both, and a generation made on
one gets feedback through the other, in the same rows."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time

import httpx
from typer.testing import CliRunner

import aigc
from aigc import catalog, keys, logbook
from aigc.cli.main import app
from aigc.workspace import Workspace
from helpers import write_fruit_csv


def _serve(*args: str, env: dict[str, str]) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "aigc.cli.main", *args, "--port", "0", "--preload", "g"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**env, "COLUMNS": "200"})


def _url(proc: subprocess.Popen) -> str:
    line = proc.stdout.readline()  # printed once the socket listens and the preloaded run is in
    found = re.search(r"http://127\.0\.0\.1:\d+", line)
    if not found:
        proc.kill()
        raise AssertionError(f"the server did not start: {line} {proc.stderr.read()[-2000:]}")
    return found.group(0)


def _stop(proc: subprocess.Popen) -> str:
    proc.send_signal(signal.SIGTERM)
    code = proc.wait(timeout=30)
    stderr = proc.stderr.read()
    assert code in (0, -signal.SIGTERM) and "Traceback" not in stderr, stderr
    return stderr


def test_two_servers_share_one_postgresql_catalog_and_one_artifact_store(pg_url, s3_bucket, tmp_path):
    store = f"s3://{s3_bucket}/ws"
    ws = Workspace(tmp_path / "trainer", db_url=pg_url, artifacts=store)
    aigc.ingest(write_fruit_csv(tmp_path / "fruit.csv", n=80), "fruit", workspace=ws, text_column="text",
                cond_columns=["fruit"], split=(0.8, 0.1, 0.1))
    aigc.train("fruit", family="gpt", preset="tiny", name="g", workspace=ws, max_steps=5)  # pushed when done

    env = {k: v for k, v in os.environ.items() if k != "AIGC_DB_URL"}
    env["AIGC_ARTIFACTS"] = store
    root_a, root_b = tmp_path / "server-a", tmp_path / "server-b"  # empty: the run comes from the store
    # A names the catalog with the global option (its engine runs in a child process); B through the
    # environment, with the model in the server's own process
    a = _serve("--db-url", pg_url, "serve", "-w", str(root_a), env=env)
    b = _serve("serve", "-w", str(root_b), "--in-process", env={**env, "AIGC_DB_URL": pg_url})
    try:
        url_a, url_b = _url(a), _url(b)
        assert url_a != url_b
        with httpx.Client(timeout=30) as h:
            for url in (url_a, url_b):
                assert h.get(url + "/health").json()["loaded"] == ["g"]
                assert h.get(url + "/v1/models").status_code == 200  # no key yet: open

            made = CliRunner().invoke(app, ["--db-url", pg_url, "keys", "create", "--name", "shop",
                                            "-w", str(root_a)])
            assert made.exit_code == 0, made.output
            key = made.stdout.strip()
            auth = {"Authorization": f"Bearer {key}"}
            deadline = time.time() + 20  # each server rereads whether keys exist every few seconds
            while {h.get(u + "/v1/models").status_code for u in (url_a, url_b)} != {401}:
                assert time.time() < deadline, "a server still answers without a key"
                time.sleep(0.25)
            for url in (url_a, url_b):
                assert h.get(url + "/v1/models", headers=auth).status_code == 200
                wrong = {"Authorization": "Bearer aigc-wrong"}
                assert h.get(url + "/v1/models", headers=wrong).status_code == 401

            made = h.post(url_a + "/v1/completions", headers=auth,
                          json={"model": "g", "prompt": "apple", "max_tokens": 4, "n": 2, "seed": 1})
            assert made.status_code == 200, made.text
            gid = made.json()["id"]
            rated = h.post(url_b + "/api/feedback", headers=auth, json={"generation_id": gid, "rating": "up"})
            assert rated.status_code == 201, rated.text
            seen_by_a = h.get(f"{url_a}/api/generations/{gid}", headers=auth).json()
            assert [f["id"] for f in seen_by_a["feedback"]] == [rated.json()["id"]]
    finally:
        _stop(a)
        _stop(b)

    trained = sorted(p.relative_to(ws.run_path("g")) for p in ws.run_path("g").rglob("*") if p.is_file())
    for root in (root_a, root_b):  # each server downloaded the whole run, byte for byte
        run = root / "runs" / "g"
        assert all((run / f).read_bytes() == (ws.run_path("g") / f).read_bytes() for f in trained)
    row = logbook.get(ws, gid)  # one generation row (A's), one feedback row (B's), in PostgreSQL
    assert row["run"] == "g" and row["key_id"] == keys.list_keys(ws)[0]["id"]
    assert [(f["rating"], f["kind"]) for f in row["feedback"]] == [(1, "thumb")]
    counts = catalog.describe(pg_url)["tables"]
    assert counts["generations"] == 1 and counts["feedback"] == 1 and counts["api_keys"] == 1
