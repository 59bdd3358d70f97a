"""The catalog on PostgreSQL (a throwaway server, tests/pg.py): every migration, the rows of every module
round trip, fresh catalogs opened by several processes at once, a schema newer than the code, bad URLs
as one line without the password, and `aigc db copy` from a SQLite workspace and back."""

from __future__ import annotations

import multiprocessing as mp
import re

import numpy as np
import pandas as pd
import pytest
import sqlalchemy as sa
from typer.testing import CliRunner

from aigc import arena, catalog, keys, logbook
from aigc.apps import monitor
from aigc.apps.assistant import handoff
from aigc.apps.copy import experiments
from aigc.apps.monitor import classifier
from aigc.cli.main import app
from aigc.errors import AlreadyExists, InvalidInput
from aigc.provenance import audit
from aigc.workspace import MIGRATIONS, Workspace, migrations_table
from pg import PASSWORD, PASSWORD_USER

ALL = [name for name, _ in MIGRATIONS]


def cli(*args):
    return CliRunner().invoke(app, [str(a) for a in args], catch_exceptions=False)


def one_line_error(result, pattern: str) -> str:
    assert result.exit_code == 2, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and re.search(pattern, lines[0]), result.stderr
    return lines[0]


# -- URLs, without a server ------------------------------------------------------------------------


def test_urls_are_read_as_psycopg_3_and_printed_without_the_password():
    for given in ("postgres://u:pw@h/db", "postgresql://u:pw@h/db", "postgresql+psycopg://u:pw@h/db"):
        assert catalog.parse_url(given).drivername == "postgresql+psycopg"
    assert catalog.parse_url("sqlite:////tmp/c.db").drivername == "sqlite"
    assert catalog.mask("postgresql://aigc:s3cr@t@db:5432/aigc") == "postgresql://aigc:***@db:5432/aigc"
    assert catalog.mask("postgresql://aigc@db/aigc?password=hush&sslmode=require") == \
        "postgresql://aigc@db/aigc?password=***&sslmode=require"
    for bad, why in (("mysql://u:pw@h/db", "scheme 'mysql'"), ("nonsense", "not a database URL"),
                     ("postgresql://u:pw@h", "names no database")):
        with pytest.raises(InvalidInput, match=why) as e:
            catalog.parse_url(bad)
        assert "pw@" not in str(e.value)


def test_a_sqlite_schema_newer_than_the_code_is_refused(tmp_path):
    url = f"sqlite:///{tmp_path / 'catalog.db'}"
    ws = Workspace(tmp_path, db_url=url)
    with ws.engine.begin() as conn:
        conn.execute(migrations_table.insert().values(name="m999_future", applied_at="t"))
    newer = r"migrated by a newer aigc-studio \(unknown migration m999_future\): upgrade aigc-studio"
    with pytest.raises(InvalidInput, match=newer):
        Workspace(tmp_path, db_url=url)
    one_line_error(cli("--db-url", url, "datasets", "-w", tmp_path), "unknown migration m999_future")


# -- the rows of every module ----------------------------------------------------------------------

GOOD = ["物流很快，好评", "great battery, love it", "质量很好"]
BAD = ["物流太慢，差评", "terrible battery", "质量太差"]


def fill(ws: Workspace, comment: str = "nice") -> dict:
    """Rows in every table, each through the module that owns it; returns what the checks need."""
    ws.register_dataset("fruit", "text", "/data/fruit.csv", {"counts": {"train": 8, "val": 1, "test": 1}})
    ws.create_run("g", "gpt", "fruit", {"model": {"n_layer": 2}})
    ws.update_run("g", status="finished", step=30, best_val_loss=1.25, summary={"steps": 30})
    ws.create_run("h", "lstm", "fruit", {"model": {}})
    ws.register_base({"name": "tiny", "kind": "folder", "source": "/bases/tiny", "path": "/bases/tiny",
                      "architecture": "LlamaForCausalLM", "model_type": "llama", "params": 3_000_000_000,
                      "size_bytes": 6_000_000_000, "context_length": 2048, "chat_template": True,
                      "licence": "apache-2.0", "quantization": None, "extra": {"k": 1}})
    gens = [logbook.record(ws, {"run": "g", "kind": "text", "endpoint": "/v1/completions", "prompt": "apple",
                                "options": {"n": 2}, "output": {"texts": [f"apple {i}", f"red {i}"]},
                                "status": "ok", "latency_ms": 12.5, "prompt_tokens": 5,
                                "completion_tokens": 4})
            for i in range(5)]
    other = logbook.record(ws, {"run": "h", "kind": "text", "endpoint": "python", "prompt": "apple",
                                "options": {}, "output": {"texts": ["green"]}, "status": "ok",
                                "latency_ms": 3.0})
    feedback = [logbook.add_feedback(ws, gens[0], "up", comment), logbook.add_choice(ws, gens[1], 1),
                logbook.add_edit(ws, gens[2], "apple pie", 0)]
    key_id, key = keys.create_key(ws, "shop")
    old_id, old = keys.create_key(ws, "old")
    keys.revoke_key(ws, old_id)
    vote = arena.record_vote(ws, prompt="apple", cond={}, run_a="g", run_b="h", generation_a=gens[3],
                             generation_b=other, winner="a")
    audited = audit.record_many(ws, [dict(path="prompt", decision="allow", text="apple", policy_version="p1"),
                                     dict(path="output", decision="redact", text="call 13800138000",
                                          policy_version="p1", categories=["phone"],
                                          entity_counts={"PHONE": 1})])
    hand = handoff.record_handoff(ws, "faq", "I want a person", [{"role": "user", "content": "hi"}],
                                  "requested", 0.2)
    experiments.record_event(ws, "sku-1", "control", "shown")
    experiments.record_event(ws, "sku-1", "control", "clicked", text="Buy now")
    texts = [GOOD[i % 3] if i % 2 else BAD[i % 3] for i in range(60)]
    model = classifier.fit(texts, ["1" if i % 2 else "0" for i in range(60)], kind="tfidf", seed=0)
    dest = classifier.model_dir(ws, "reviews")
    dest.mkdir(parents=True, exist_ok=True)
    model.save_to(dest)
    monitor.configure("shop", ws, model="reviews")
    rng, start, posts = np.random.default_rng(1), pd.Timestamp("2026-01-01", tz="UTC"), []
    for day in range(20):  # a planted spike of negative posts on days 15 to 17
        for k in range(10):
            neg = rng.random() < (0.8 if 15 <= day < 18 else 0.1)
            posts.append({"text": BAD[0] if neg else GOOD[0], "id": f"p{day}-{k}",
                          "timestamp": (start + pd.Timedelta(days=day, hours=k)).isoformat()})
    added = monitor.add("shop", posts, workspace=ws)
    return {"gens": gens, "other": other, "feedback": feedback, "key": (key_id, key), "revoked": old,
            "vote": vote, "audited": audited, "handoff": hand["id"], "posts": added["added"]}


def snapshot(ws: Workspace) -> dict:
    """What every module lists or reads back, for comparing two catalogs."""
    gens = logbook.list_generations(ws, limit=100)
    return {
        "datasets": ws.list_datasets(), "runs": ws.list_runs(), "run_g": ws.get_run("g"),
        "bases": ws.list_bases(),
        "generations": gens, "feedback": {g["id"]: logbook.get(ws, g["id"])["feedback"] for g in gens},
        "pairs": logbook.feedback_examples(ws, "g"), "keys": keys.list_keys(ws),
        "votes": arena.votes(ws), "leaderboard": arena.leaderboard(ws),
        "audit": audit.list_entries(ws, limit=100), "chain": audit.verify(ws).to_dict(),
        "handoffs": handoff.list_handoffs(ws, status=None), "copy": experiments.counts(ws, "sku-1"),
        "streams": monitor.streams(ws), "items": monitor.items("shop", limit=1000, workspace=ws),
        "alerts": monitor.list_alerts("shop", workspace=ws),
    }


def test_every_migration_runs_on_postgresql_once(pg_url, tmp_path):
    ws = Workspace(tmp_path, db_url=pg_url.replace("postgresql+psycopg://", "postgres://"))
    assert ws.engine.dialect.name == "postgresql" and ws.migrated == ALL and ws.applied_migrations() == ALL
    assert Workspace(tmp_path, db_url=pg_url).migrated == []  # opening again applies nothing
    desc = catalog.describe(pg_url)
    assert desc["pending"] == [] and set(desc["tables"]) == {t.name for t in catalog.tables()}
    assert not (tmp_path / "catalog.db").exists()
    with ws.engine.connect() as conn:  # the order rows were written in (m009): an identity column there
        for name in ("datasets", "runs", "generations", "api_keys", "bases"):
            assert "seq" in {c["name"] for c in sa.inspect(conn).get_columns(name)}


def test_every_module_round_trips_its_rows_on_postgresql(pg_url, tmp_path):
    ws = Workspace(tmp_path, db_url=pg_url)
    made = fill(ws, comment="nice\x00")
    snap = snapshot(ws)
    # newest first in the order written, though all were written within a second or two
    assert [g["id"] for g in snap["generations"]] == [made["other"], *reversed(made["gens"])]
    assert [(f["kind"], f["rating"]) for g in made["gens"][:3] for f in snap["feedback"][g]] == \
        [("thumb", 1), ("choice", 1), ("edit", -1)]
    assert snap["feedback"][made["gens"][0]][0]["comment"] == "nice\ufffd"  # PostgreSQL text holds no NUL
    edit = {"prompt": "apple", "cond": {}, "chosen": "apple pie", "rejected": "apple 2"}
    assert edit in snap["pairs"]["pairs"]
    assert keys.verify(ws, made["key"][1]) == made["key"][0] and keys.verify(ws, made["revoked"]) is None
    assert snap["leaderboard"][0]["run"] == "g" and snap["votes"][0]["id"] == made["vote"]
    assert snap["chain"]["ok"] and snap["chain"]["rows"] == 2 and made["audited"] == [1, 2]
    newest = snap["audit"][0]
    assert newest["entity_counts"] == {"PHONE": 1} and "13800138000" not in newest["excerpt"]
    assert snap["handoffs"][0]["conversation"][-1] == {"role": "user", "content": "I want a person"}
    assert snap["copy"] == {"control": {"shown": 1, "successes": 1, "text": "Buy now"}}
    assert snap["streams"][0]["items"] == made["posts"] == 200 and snap["streams"][0]["alerts"] > 0
    assert all(isinstance(i["negative"], bool) for i in snap["items"])
    with pytest.raises(InvalidInput, match="row 2: its id is 201 characters long; ids of at most 200"):
        monitor.add("shop", [{"text": "ok", "id": "a"}, {"text": "ok", "id": "b" * 201}], workspace=ws)
    assert monitor.streams(ws)[0]["items"] == 200  # nothing of that batch kept
    base = ws.get_base("tiny")
    assert base["params"] == 3_000_000_000 and base["chat_template"] is True and base["extra"] == {"k": 1}
    assert snap["run_g"]["best_val_loss"] == 1.25 and snap["run_g"]["summary"] == {"steps": 30}


# -- several processes, newer code, bad URLs -------------------------------------------------------


def _open_at_once(root, url, barrier, results):
    barrier.wait()
    try:
        results.put(Workspace(root, db_url=url).migrated)
    except Exception as e:  # noqa: BLE001 - the test reports what went wrong
        results.put(f"{type(e).__name__}: {e}")


def test_processes_opening_a_fresh_postgresql_catalog_at_once_migrate_it_once(pg_server, tmp_path):
    ctx = mp.get_context("fork")
    for round_ in range(3):
        url = pg_server.new_database()
        barrier, results = ctx.Barrier(4), ctx.Queue()
        procs = [ctx.Process(target=_open_at_once, args=(tmp_path / f"ws{round_}", url, barrier, results))
                 for _ in range(4)]
        for p in procs:
            p.start()
        for p in procs:
            p.join(60)
        got = sorted((results.get(timeout=5) for _ in procs), key=len)
        assert got == [[], [], [], ALL], got  # exactly one of them migrated; none failed
        assert catalog.describe(url)["migrations"] == sorted(ALL)


def test_a_postgresql_schema_newer_than_the_code_is_refused(pg_url, tmp_path):
    ws = Workspace(tmp_path, db_url=pg_url)
    with ws.engine.begin() as conn:
        conn.execute(migrations_table.insert().values(name="m042_later", applied_at="t"))
    with pytest.raises(InvalidInput, match=r"newer aigc-studio \(unknown migration m042_later\): upgrade"):
        Workspace(tmp_path, db_url=pg_url)
    one_line_error(cli("--db-url", pg_url, "runs", "-w", tmp_path),
                   r"catalog postgresql\+psycopg://postgres@.* was migrated by a newer aigc-studio "
                   r"\(unknown migration m042_later\): upgrade aigc-studio")
    assert catalog.describe(pg_url)["unknown"] == ["m042_later"]


def test_bad_catalog_urls_are_one_line_without_the_password(pg_server, tmp_path):
    from pg import _free_port

    db = pg_server.new_database()
    name = db.rsplit("/", 1)[1]
    cases = [
        (pg_server.url(name, "u", "hush1").replace(f":{pg_server.port}/", f":{_free_port()}/"),
         r"cannot reach PostgreSQL at 127\.0\.0\.1:\d+: is the server running"),
        (pg_server.url(name, PASSWORD_USER, "hush2"),
         f"wrong user name or password for user '{PASSWORD_USER}'"),
        (pg_server.url("nowhere", PASSWORD_USER, PASSWORD), "database 'nowhere' does not exist on 127.0.0.1"),
        (pg_server.url(name, PASSWORD_USER, PASSWORD),  # a user who does not own the database
         f"user '{PASSWORD_USER}' may not create the catalog's tables .*ALTER DATABASE"),
        ("mysql://u:hush3@localhost/aigc", "scheme 'mysql'.* is not supported: use sqlite:///PATH or "),
        ("postgresql+psycopg2://u:hush4@localhost/aigc", "driver is not installed"),
    ]
    for url, pattern in cases:
        line = one_line_error(cli("--db-url", url, "datasets", "-w", tmp_path), pattern)
        assert "***" in line and not re.search(r"hush\d|" + re.escape(PASSWORD), line), line


# -- aigc db ---------------------------------------------------------------------------------------


def test_db_copy_from_sqlite_to_postgresql_and_back(pg_url, tmp_path, monkeypatch):
    root = tmp_path / "ws"
    sqlite_url = f"sqlite:///{root / 'catalog.db'}"  # the workspace's own SQLite file
    lite = Workspace(root, db_url=sqlite_url)
    made = fill(lite)
    before = snapshot(lite)
    res = cli("db", "copy", sqlite_url, pg_url.replace("postgresql+psycopg://", "postgresql://"))
    assert res.exit_code == 0, res.output
    assert re.search(r"copied \d[\d,]* rows from sqlite:///.* to postgresql\+psycopg://postgres@.* rows/s",
                     res.stdout)

    pg = Workspace(root, db_url=pg_url)
    assert pg.migrated == [] and snapshot(pg) == before  # every listing the same, ids kept
    # the id sequences were moved past the copied ids: new rows get the next ones
    assert logbook.add_feedback(pg, made["gens"][4], "down") == max(made["feedback"]) + 1
    assert handoff.record_handoff(pg, "faq", "again", [], "requested", None)["id"] == made["handoff"] + 1
    assert audit.record(pg, path="log", decision="allow", text="x", policy_version="p1") == 3
    assert audit.verify(pg).ok
    assert keys.verify(pg, made["key"][1]) == made["key"][0]
    info = cli("db", "info", "--db-url", pg_url, "--json")
    assert info.exit_code == 0 and '"feedback": 4' in info.stdout and '"dialect": "postgresql"' in info.stdout

    # a destination with rows: refused, unless --replace; a failing copy leaves it as it was
    one_line_error(cli("db", "copy", sqlite_url, pg_url),
                   r"already holds rows \(.*feedback 4.*\): .*--replace")
    after = snapshot(pg)
    real = catalog._copy_table

    def fail_at_feedback(rconn, wconn, table, *args):
        if table.name == "feedback":
            raise RuntimeError("the network went away")
        return real(rconn, wconn, table, *args)

    monkeypatch.setattr(catalog, "_copy_table", fail_at_feedback)
    with pytest.raises(RuntimeError, match="network"):
        catalog.copy(sqlite_url, pg_url, replace=True)
    monkeypatch.undo()
    assert snapshot(pg) == after
    assert catalog.copy(sqlite_url, pg_url, replace=True)["feedback"] == 3 and snapshot(pg) == before

    # and back, from PostgreSQL to a new SQLite file, in the order written
    back_url = f"sqlite:///{tmp_path / 'back' / 'catalog.db'}"
    catalog.copy(pg_url, back_url)
    assert snapshot(Workspace(root, db_url=back_url)) == before
    with pytest.raises(AlreadyExists, match="--replace"):
        catalog.copy(pg_url, back_url)


def test_db_migrate_and_info(pg_url, tmp_path, monkeypatch):
    res = cli("--db-url", pg_url, "db", "migrate", "-w", tmp_path)
    assert res.exit_code == 0 and f"applied {', '.join(ALL)} to postgresql+psycopg://postgres@" in res.stdout
    res = cli("db", "migrate", "--db-url", pg_url, "-w", tmp_path)
    assert res.exit_code == 0 and f"is up to date ({len(ALL)} migrations, the last {ALL[-1]})" in res.stdout
    res = cli("db", "info", "--db-url", pg_url)
    assert res.exit_code == 0 and res.stdout.startswith("postgresql  postgresql+psycopg://postgres@")
    assert f"{len(ALL)} migrations applied" in res.stdout and "generations" in res.stdout
    monkeypatch.delenv("AIGC_DB_URL", raising=False)
    one_line_error(cli("db", "info", "-w", tmp_path / "none"), "no catalog at .*: `aigc db migrate` creates")


def test_a_catalog_outage_while_serving_is_a_503_and_passes_when_the_database_is_back(pg_server, pg_url, tmp_path):
    from fastapi.testclient import TestClient

    from aigc.server import Settings, create_app

    database = pg_url.rsplit("/", 1)[1]
    with TestClient(create_app(Workspace(tmp_path / "ws", db_url=pg_url), Settings())) as client:
        assert client.get("/api/runs").status_code == 200
        # the database refuses new connections and drops the pool's: an outage, not a bad request
        pg_server.execute(f"ALTER DATABASE {database} ALLOW_CONNECTIONS false")
        pg_server.execute(f"SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = '{database}'")
        down = client.get("/api/runs")
        assert down.status_code == 503, down.text
        assert down.json()["error"]["code"] == "catalog_unavailable" and down.headers["retry-after"] == "5"
        assert "password" not in down.text.lower()
        pg_server.execute(f"ALTER DATABASE {database} ALLOW_CONNECTIONS true")
        assert client.get("/api/runs").status_code == 200  # the pool reconnects by itself
