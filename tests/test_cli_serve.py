"""`aigc serve` as a real process, `aigc keys`, `aigc logs` (list, JSONL export, preference
pairs), and their bad input as one line + exit 2."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys

import httpx
from typer.testing import CliRunner

from aigc import logbook
from aigc.cli.main import app

runner = CliRunner()


def aigc(*args):
    return runner.invoke(app, [str(a) for a in args], catch_exceptions=False)


def one_line_error(result, pattern: str) -> None:
    assert result.exit_code == 2, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and re.search(pattern, lines[0]), result.stderr


def test_serve_starts_prints_its_url_and_stops_on_sigterm(served_ws):
    proc = subprocess.Popen([sys.executable, "-m", "aigc.cli.main", "serve", "-w", str(served_ws.root), "--port", "0",
                             "--preload", "g"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "COLUMNS": "200"})
    try:
        line = proc.stdout.readline()
        url = re.search(r"http://127\.0\.0\.1:\d+", line).group(0)
        assert httpx.get(url + "/health", timeout=10).json()["loaded"] == ["g"]
        r = httpx.post(url + "/v1/completions", json={"model": "g", "prompt": "apple", "max_tokens": 4}, timeout=30)
        assert r.status_code == 200
    finally:
        proc.send_signal(signal.SIGTERM)
        code = proc.wait(timeout=30)  # uvicorn shuts down gracefully, then re-raises the signal
        stderr = proc.stderr.read()
        assert code in (0, -signal.SIGTERM) and "Traceback" not in stderr, stderr


def test_serve_bad_input(served_ws):
    one_line_error(aigc("serve", "-w", served_ws.root, "--preload", "nope"), "unknown run 'nope'")
    one_line_error(aigc("serve", "-w", served_ws.root, "--memory-limit", "lots"), "--memory-limit")
    one_line_error(aigc("serve", "-w", served_ws.root, "--keep-alive", "soon"), "soon")
    one_line_error(aigc("serve", "-w", served_ws.root, "--decode-weights", "fp8"),
                   "--decode-weights must be one of float, bfloat16, int8, mixed, got 'fp8'")


def test_serve_refuses_a_bad_decode_weights_variable(served_ws, monkeypatch):
    monkeypatch.setenv("AIGC_DECODE_WEIGHTS", "int4")
    one_line_error(aigc("serve", "-w", served_ws.root), r"\$AIGC_DECODE_WEIGHTS must be one of")


def test_keys_create_list_revoke(tmp_path):
    ws = tmp_path / "ws"
    r = aigc("keys", "create", "--name", "shop-frontend", "-w", ws)
    assert r.exit_code == 0
    key = r.stdout.strip()
    assert key.startswith("aigc-") and "only time" in r.stderr
    listed = json.loads(aigc("keys", "list", "--json", "-w", ws).stdout)
    assert listed[0]["name"] == "shop-frontend" and key not in json.dumps(listed)
    assert aigc("keys", "revoke", listed[0]["id"], "-w", ws).exit_code == 0
    one_line_error(aigc("keys", "revoke", listed[0]["id"], "-w", ws), "no active key")


def test_logs_list_export_and_preference_pairs(tmp_path):
    import aigc as api

    ws = api.open_workspace(tmp_path / "ws")
    ids = [logbook.record(ws, {"run": "g", "kind": "text", "endpoint": "/v1/completions", "prompt": "apple",
                               "options": {"cond": {}}, "output": {"texts": [text]}, "status": "ok",
                               "latency_ms": 5.0})
           for text in ("red sweet", "bad bad", "green")]
    logbook.add_feedback(ws, ids[0], "up")
    logbook.add_feedback(ws, ids[1], "down", comment="repeats itself")
    r = aigc("logs", "-w", ws.root)
    assert r.exit_code == 0 and "red sweet" in r.stdout
    out = tmp_path / "log.jsonl"
    assert aigc("logs", "--export", out, "-w", ws.root).exit_code == 0
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert len(rows) == 3 and {r["id"] for r in rows} == set(ids)
    feedback = {r["id"]: [(f["rating"], f["comment"]) for f in r["feedback"]] for r in rows}
    assert feedback == {ids[0]: [(1, None)], ids[1]: [(-1, "repeats itself")], ids[2]: []}
    pairs_file = tmp_path / "pairs.jsonl"
    assert aigc("logs", "--export", pairs_file, "--pairs", "-w", ws.root).exit_code == 0
    pairs = [json.loads(line) for line in pairs_file.read_text().splitlines()]
    assert pairs == [{"run": "g", "prompt": "apple", "cond": {}, "chosen": "red sweet", "rejected": "bad bad"}]
    one_line_error(aigc("logs", "--pairs", "-w", ws.root), "--pairs needs --export")
