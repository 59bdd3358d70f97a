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
