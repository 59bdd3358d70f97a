"""The safety audit log: the hash chain verifies and breaks where a row was edited, deleted or moved;
concurrent writers (threads, processes) keep one chain; no raw PII is stored; `aigc audit` exits
as documented."""

from __future__ import annotations

import hashlib
import json
import os
import re
import subprocess
import sys
import textwrap
import threading
import types
from pathlib import Path

import pytest
import sqlalchemy as sa
import typer
from typer.testing import CliRunner

from aigc.errors import InvalidInput
from aigc.provenance import audit
from aigc.workspace import Workspace

PHONE = "13812345678"
TEXT = f"客户王先生来电，手机 {PHONE}，说快递还没到，要求退款。"
_FAKE_PHONE = re.compile(r"(?<!\d)1[3-9]\d{9}(?!\d)")


@pytest.fixture(autouse=True)
def redaction(monkeypatch):
    """The real PII redactor when it is installed; until then a stand-in that replaces mobiles."""
    try:
        import aigc.safety.pii  # noqa: F401
    except ImportError:
        fake = types.ModuleType("aigc.safety.pii")
        fake.redact = lambda text, operator="replace", **kw: types.SimpleNamespace(
            text=_FAKE_PHONE.sub("<CN_MOBILE>", text))
        monkeypatch.setitem(sys.modules, "aigc.safety.pii", fake)


@pytest.fixture
def ws(tmp_path):
    return Workspace(tmp_path / "ws")


def decide(ws, n=5, **kw):
    ids = []
    for i in range(n):
        args = dict(path="output", decision=("allow", "redact", "block")[i % 3], text=f"{TEXT} #{i}",
                    policy_version="1-abcdef012345", request_id=f"gen-{i}", run="shop",
                    categories=["fraud"] if i % 3 == 2 else [], entity_counts={"CN_MOBILE": 1},
                    rule_ids=["t-7"] if i % 3 == 2 else [])
        args.update(kw)
        ids.append(audit.record(ws, **args))
    return ids


def sql(ws, statement, **params):
    with ws.engine.begin() as conn:
        conn.execute(sa.text(statement), params)


def test_rows_are_chained_and_hold_no_raw_pii(ws):
    assert audit.verify(ws) == audit.AuditVerify(True, 0, None, "", None)
    long = TEXT * 20 + PHONE
    ids = decide(ws, 3)
    ids.append(audit.record(ws, path="prompt", decision="redact", text=long, policy_version="1-x"))
    assert ids == [1, 2, 3, 4]
    rows = list(audit._rows(ws))
    assert rows[0]["prev_hash"] == audit.GENESIS
    assert all(b["prev_hash"] == a["row_hash"] for a, b in zip(rows, rows[1:]))
    assert all(r["row_hash"] == audit.row_hash(r) for r in rows)
    assert rows[3]["text_sha256"] == hashlib.sha256(long.encode("utf-8")).hexdigest()
    for row in rows:
        assert PHONE not in row["excerpt"] and "<CN_MOBILE>" in row["excerpt"]
        assert 0 < len(row["excerpt"]) <= audit.EXCERPT_CHARS
        assert PHONE not in json.dumps(row, ensure_ascii=False)
    res = audit.verify(ws)
    assert res.ok and res.rows == 4 and res.head == rows[-1]["row_hash"]


def test_a_failing_redactor_withholds_the_excerpt(ws, monkeypatch):
    broken = types.ModuleType("aigc.safety.pii")

    def redact(text, operator="replace", **kw):
        raise RuntimeError("scanner crashed")

    broken.redact = redact
    monkeypatch.setitem(sys.modules, "aigc.safety.pii", broken)
    audit.record(ws, path="log", decision="error", text=TEXT, policy_version="1-x")
    [row] = audit.list_entries(ws)
    assert row["excerpt"] == audit.WITHHELD and PHONE not in json.dumps(row, ensure_ascii=False)


def test_an_edited_row_breaks_the_chain_there(ws):
    decide(ws, 5)
    sql(ws, "UPDATE audit_log SET decision = 'allow' WHERE id = 3")
    res = audit.verify(ws)
    assert not res.ok and res.first_bad_id == 3 and "changed after it was written" in res.reason


def test_an_edit_that_recomputes_its_own_hash_still_breaks_the_next_link(ws):
    decide(ws, 5)
    row = next(r for r in audit._rows(ws) if r["id"] == 3)
    row["excerpt"] = "nothing to see"
    sql(ws, "UPDATE audit_log SET excerpt = :e, row_hash = :h WHERE id = 3",
        e=row["excerpt"], h=audit.row_hash(row))
    res = audit.verify(ws)
    assert not res.ok and res.first_bad_id == 4 and "does not follow row 3" in res.reason


@pytest.mark.parametrize("statement, bad_id", [
    ("DELETE FROM audit_log WHERE id = 3", 4),
    ("DELETE FROM audit_log WHERE id = 1", 2),
    (  # rows 2 and 3 swap places
        "UPDATE audit_log SET id = 100 WHERE id = 2; UPDATE audit_log SET id = 2 WHERE id = 3; "
        "UPDATE audit_log SET id = 3 WHERE id = 100", 2),
])
def test_a_deleted_or_moved_row_breaks_the_chain(ws, statement, bad_id):
    decide(ws, 5)
    for one in statement.split(";"):
        sql(ws, one)
    res = audit.verify(ws)
    assert not res.ok and res.first_bad_id == bad_id and "deleted, inserted or moved" in res.reason


def test_two_threads_appending_keep_one_chain(ws):
    errors = []

    def write(tag):
        try:
            for i in range(50):
                audit.record(ws, path="output", decision="allow", text=f"{tag}{i}", policy_version="1-x",
                             run=tag)
        except Exception as e:  # noqa: BLE001 - reported by the assertion below
            errors.append(e)

    threads = [threading.Thread(target=write, args=(t,)) for t in ("a", "b")]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    res = audit.verify(ws)
    assert res.ok and res.rows == 100
    assert [r["id"] for r in audit._rows(ws)] == list(range(1, 101))
    assert len(audit.list_entries(ws, run="a", limit=1000)) == 50


def test_two_processes_appending_keep_one_chain(ws):
    code = textwrap.dedent(f"""
        import sys, types
        fake = types.ModuleType("aigc.safety.pii")
        fake.redact = lambda text, operator="replace", **kw: types.SimpleNamespace(text=text)
        sys.modules["aigc.safety.pii"] = fake  # the chain is under test here, not the redactor
        from aigc.provenance import audit
        from aigc.workspace import Workspace
        ws = Workspace({str(ws.root)!r})
        for i in range(25):
            audit.record_many(ws, [dict(path="log", decision="allow", text=f"{{sys.argv[1]}}{{i}}-{{j}}",
                                        policy_version="1-x") for j in range(2)])
    """)
    env = {**os.environ, "PYTHONPATH": str(Path(audit.__file__).parents[2])}
    procs = [subprocess.Popen([sys.executable, "-c", code, tag], env=env) for tag in ("p", "q")]
    assert [p.wait(timeout=120) for p in procs] == [0, 0]
    res = audit.verify(ws)
    assert res.ok and res.rows == 100


def test_record_many_is_one_transaction_and_validates_first(ws):
    good = dict(path="ingest", decision="redact", text="x", policy_version="1-x")
    assert audit.record_many(ws, [good, good]) == [1, 2]
    for bad, message in [({"decision": "maybe"}, "decision must be one of"),
                         ({"path": "disk"}, "path must be one of"),
                         ({"categories": "fraud"}, "categories must be a list"),
                         ({"entity_counts": {"CN_MOBILE": -1}}, "counts >= 0"),
                         ({"policy_version": ""}, "policy_version must be"),
                         ({"text": None}, "text must be a string"),
                         ({"colour": "red"}, "unknown audit field")]:
        with pytest.raises(InvalidInput, match=message):
            audit.record_many(ws, [good, {**good, **bad}])
    assert audit.verify(ws).rows == 2  # nothing of the refused batches was written


def test_list_filters(ws):
    decide(ws, 6)
    audit.record(ws, path="prompt", decision="block", text="x", policy_version="2-y", run="other")
    assert [r["id"] for r in audit.list_entries(ws)] == [7, 6, 5, 4, 3, 2, 1]
    assert [r["id"] for r in audit.list_entries(ws, decision="block")] == [7, 6, 3]
    assert [r["id"] for r in audit.list_entries(ws, path="output", decision="block")] == [6, 3]
    assert [r["id"] for r in audit.list_entries(ws, run="other")] == [7]
    assert len(audit.list_entries(ws, limit=2)) == 2
    newest = audit.list_entries(ws, limit=1)[0]
    assert newest["categories"] == [] and newest["entity_counts"] == {} and newest["policy_version"] == "2-y"
    assert audit.list_entries(ws, run="shop")[0]["categories"] == ["fraud"]
    assert len(audit.list_entries(ws, since="2000-01-01")) == 7
    assert audit.list_entries(ws, since="2999-01-01T00:00:00+08:00") == []
    assert audit.list_entries(ws, until="2000-01-01") == []
    for kw, message in [({"since": "yesterday"}, "is not an ISO date"), ({"decision": "ok"}, "--decision"),
                        ({"limit": 0}, "--limit")]:
        with pytest.raises(InvalidInput, match=message):
            audit.list_entries(ws, **kw)


def test_export_jsonl_and_csv_verifiably(ws, tmp_path):
    decide(ws, 4)
    assert audit.export(ws, tmp_path / "a.jsonl") == 4
    rows = [json.loads(line) for line in (tmp_path / "a.jsonl").read_text(encoding="utf-8").splitlines()]
    assert audit.verify_rows(rows).ok
    rows[1]["decision"] = "allow" if rows[1]["decision"] != "allow" else "block"
    assert audit.verify_rows(rows).first_bad_id == 2
    assert audit.export(ws, tmp_path / "a.csv") == 4
    lines = (tmp_path / "a.csv").read_text(encoding="utf-8").splitlines()
    assert lines[0].split(",")[:3] == ["id", "created_at", "request_id"] and len(lines) == 5
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".")) == []  # no temporary left
    with pytest.raises(InvalidInput, match="format must be one of"):
        audit.export(ws, tmp_path / "a.xml", "xml")
    with pytest.raises(InvalidInput, match="does not exist"):
        audit.export(ws, tmp_path / "nowhere" / "a.jsonl")


def _cli():
    from aigc.cli.audit import audit_app

    app = typer.Typer()
    app.add_typer(audit_app, name="audit")
    runner = CliRunner()
    return lambda *args: runner.invoke(app, ["audit", *map(str, args)], catch_exceptions=False)


def test_cli_audit_list_export_verify(ws, tmp_path):
    aigc = _cli()
    decide(ws, 3)
    r = aigc("verify", "-w", ws.root)
    assert r.exit_code == 0 and "audit chain intact: 3 rows" in r.stdout
    r = aigc("list", "--decision", "redact", "--json", "-w", ws.root)
    assert r.exit_code == 0 and [row["id"] for row in json.loads(r.stdout)] == [2]
    r = aigc("list", "-w", ws.root)
    assert r.exit_code == 0 and "shop" in r.stdout and PHONE not in r.stdout
    r = aigc("export", tmp_path / "out.jsonl", "-w", ws.root)
    assert r.exit_code == 0 and "exported 3 audit rows" in r.stdout
    r = aigc("list", "--since", "last week", "-w", ws.root)
    assert r.exit_code == 2 and r.stderr.startswith("error: --since 'last week' is not an ISO date")
    sql(ws, "UPDATE audit_log SET categories = '[]' WHERE id = 3")
    r = aigc("verify", "-w", ws.root)
    lines = r.stderr.strip().splitlines()
    assert r.exit_code == 1 and len(lines) == 1 and lines[0].startswith("audit chain broken at row 3: ")
    r = aigc("verify", "--json", "-w", ws.root)
    assert r.exit_code == 1 and json.loads(r.stdout)["first_bad_id"] == 3


# -- every path writes its row, never raw PII (issue 13 task B) -------------------------------------

EMAIL = "wang.li@example.com"


def _one(ws, path: str) -> dict:
    """The one row ``path`` wrote (the chain still verifying), with no raw PII in it."""
    rows = audit.list_entries(ws, path=path)
    assert len(rows) == 1, rows
    stored = json.dumps(rows[0], ensure_ascii=False)
    assert PHONE not in stored and EMAIL not in stored
    assert audit.verify(ws).ok
    return rows[0]


@pytest.mark.parametrize("log_op", ["keep", "mask", "replace"])
def test_the_excerpt_is_replace_redacted_whatever_the_log_keeps(ws, log_op):
    from aigc.safety.guard import Guard
    from aigc.safety.policy import save_workspace_policy
    from aigc.safety.rails import check_input

    save_workspace_policy(ws, "extends: default\npii:\n"
                              f"  default: {{prompt: keep, output: keep, log: {log_op}}}\n")
    guard = Guard(ws)
    prompt_verdict = check_input(TEXT, guard.policy, path="prompt", scanner=guard.scanner)
    out_verdict = {"blocked": False, "categories": [], "entities": {"CN_MOBILE": 1}, "rule_ids": []}
    prepare = guard.log_preparer("shop", prompt_verdict, [out_verdict])
    row = prepare({"id": "gen-1", "prompt": TEXT, "output": {"texts": [TEXT]}})
    assert (PHONE in row["prompt"]) is (log_op == "keep")  # the log keeps what the policy says
    # the log's copy stands in for the excerpt only when it is PII replaced (no second scan then)
    assert [("replaced" in a) for a in row["_audit"]] == [log_op == "replace"] * 2
    audit.record_many(ws, row["_audit"])
    rows = audit.list_entries(ws)
    assert [r["path"] for r in rows] == ["output", "prompt"]
    for r in rows:
        assert PHONE not in json.dumps(r, ensure_ascii=False) and "<CN_MOBILE>" in r["excerpt"]
        assert "****" not in r["excerpt"]  # replaced, not masked
    assert audit.verify(ws).ok


def test_ingest_writes_one_row_of_counts(ws, tmp_path):
    import aigc

    src = tmp_path / "calls.csv"
    lines = [f"客户来电 {i} 号，回电 {PHONE}，邮箱 {EMAIL}" if i % 2 else f"order {i} shipped" for i in range(10)]
    src.write_text("text\n" + "\n".join(lines) + "\n", encoding="utf-8")
    aigc.ingest(src, "calls", workspace=ws, text_column="text", pii="redact")
    row = _one(ws, "ingest")
    assert row["decision"] == "redact" and row["entity_counts"] == {"CN_MOBILE": 5, "EMAIL": 5}
    assert row["rule_ids"] == ["ingest.pii:redact"]
    assert row["excerpt"].startswith("dataset calls: 10 records kept, 0 dropped (0 for PII); --pii redact")


def test_training_refused_or_warned_writes_one_row(ws):
    from aigc.safety.policy import save_workspace_policy
    from aigc.safety.training import PiiWarning, check_training_data

    card = {"pii": {"unredacted": 3, "entities": {"CN_MOBILE": 2, "EMAIL": 1}}}
    check_training_data(ws, "clean", {"pii": {"unredacted": 0}})  # nothing to decide: no row
    assert audit.list_entries(ws) == []
    with pytest.warns(PiiWarning):
        check_training_data(ws, "calls", card)
    row = _one(ws, "train")
    assert (row["decision"], row["entity_counts"]) == ("flag", {"CN_MOBILE": 2, "EMAIL": 1})
    assert row["rule_ids"] == ["training.unredacted_pii:warn"] and "dataset 'calls' holds 3" in row["excerpt"]
    save_workspace_policy(ws, "extends: default\ntraining: {unredacted_pii: refuse}\n")
    with pytest.raises(InvalidInput, match="holds 3 unredacted"):
        check_training_data(ws, "calls", card)
    assert audit.list_entries(ws, path="train")[0]["decision"] == "block" and audit.verify(ws).rows == 2


def test_moderations_write_one_row_per_input(ws):
    from fastapi import FastAPI
    from fastapi.testclient import TestClient

    from aigc.server.routers.safety import router

    app = FastAPI()
    app.include_router(router)
    app.state.shared = {"ws": ws}
    with TestClient(app) as client:
        r = client.post("/v1/moderations", json={"input": ["教你刷单套现，日赚三千", f"回电 {PHONE}"]})
    assert r.status_code == 200
    rows = audit.list_entries(ws, path="moderation")
    request_id = r.json()["id"]
    assert [(x["decision"], x["request_id"]) for x in rows] == [("allow", request_id), ("block", request_id)]
    assert "fraud" in rows[1]["categories"] and rows[1]["rule_ids"]
    assert rows[0]["entity_counts"] == {"CN_MOBILE": 1} and rows[0]["excerpt"] == "回电 <CN_MOBILE>"
    assert PHONE not in json.dumps(rows, ensure_ascii=False) and audit.verify(ws).ok


@pytest.fixture(scope="module")
def trained_ws(tmp_path_factory):
    """A workspace with a tiny text run ``g`` (a few steps: these tests read the audit, not the text)."""
    from helpers import fruit_gpt_workspace

    return fruit_gpt_workspace(tmp_path_factory.mktemp("audit_run"), steps=2)


@pytest.fixture
def run_ws(trained_ws):
    """``trained_ws`` with an empty audit log (the ingest's row, other tests' rows gone): each test
    counts its own."""
    sql(trained_ws, "DELETE FROM audit_log")
    return trained_ws


def test_generate_writes_one_row_per_call(run_ws, monkeypatch):
    import aigc
    from helpers import run_cli

    monkeypatch.setenv("AIGC_DB_URL", run_ws.db_url)  # the CLI opens it by path (a fresh catalog under PostgreSQL)

    prompt = f"apple {PHONE}"
    aigc.generate("g", prompt, workspace=run_ws, n=2, max_new_tokens=8, seed=0)
    row = _one(run_ws, "generate")
    assert row["run"] == "g" and row["request_id"].startswith("gen-")
    assert row["decision"] in ("redact", "block")  # the prompt's phone (a sample may block too)
    assert row["excerpt"].startswith("n=2: sample 1 ") and "prompt: apple <CN_MOBILE>" in row["excerpt"]
    assert row["entity_counts"].get("CN_MOBILE", 0) >= 1
    gen = aigc.load("g", workspace=run_ws)
    stream = gen.stream("apple", max_new_tokens=40, seed=1)
    next(stream)
    stream.close()  # a reader that stops early: the call is still one row
    assert run_cli("generate", "g", "apple", "-m", "4", "--seed", "2", "-w", run_ws.root).exit_code == 0
    rows = audit.list_entries(run_ws, path="generate")
    assert len(rows) == 3 and all(r["excerpt"].startswith("n=1: sample 1 ") for r in rows[:2])
    assert audit.verify(run_ws).ok


def test_batch_writes_one_row_per_job(run_ws, tmp_path):
    from aigc.batch import generate_file

    requests = tmp_path / "requests.jsonl"
    lines = [{"prompt": "apple", "n": 2}, {"prompt": f"apple {PHONE}"}, {"prompt": "教我刷单套现"}, "apple red"]
    requests.write_text("".join(json.dumps(x, ensure_ascii=False) + "\n" for x in lines), encoding="utf-8")
    summary = generate_file(run_ws, "g", requests, tmp_path / "out.jsonl", defaults={"max_new_tokens": 6})
    assert summary["requests"] == 4 and summary["errors"] == 1
    out = (tmp_path / "out.jsonl").read_text(encoding="utf-8")
    assert "_safety" not in out
    assert [r["path"] for r in audit.list_entries(run_ws)] == ["batch", "prompt"]  # the blocked prompt: its own
    row = _one(run_ws, "batch")
    assert row["run"] == "g" and row["request_id"].startswith("batch-") and row["decision"] == "redact"
    assert row["excerpt"].startswith("generate --file -> out.jsonl: 4 requests run, 1 refused; decisions: ")
    assert row["entity_counts"].get("CN_MOBILE", 0) >= 1 and "redact 1" in row["excerpt"]
