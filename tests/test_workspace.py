"""The workspace catalog: migrations, WAL mode, concurrent readers and a writer, name checks."""

from __future__ import annotations

import multiprocessing as mp
import sqlite3

import pytest

from aigc.errors import AlreadyExists, InvalidInput, NotFound
from aigc.workspace import MIGRATIONS, Workspace


@pytest.mark.sqlite_only
def test_default_root_comes_from_aigc_home(aigc_home):
    ws = Workspace()
    assert ws.root == aigc_home
    assert (aigc_home / "catalog.db").exists() and (aigc_home / "datasets").is_dir()


@pytest.mark.sqlite_only
def test_migrations_apply_once_and_are_recorded(tmp_path):
    ws = Workspace(tmp_path)
    assert ws.applied_migrations() == [name for name, _ in MIGRATIONS]
    Workspace(tmp_path)  # opening again applies nothing twice
    con = sqlite3.connect(tmp_path / "catalog.db")
    assert con.execute("select count(*) from schema_migrations").fetchone()[0] == len(MIGRATIONS)
    assert con.execute("pragma journal_mode").fetchone()[0] == "wal"


def test_runs_and_datasets_rows(tmp_path):
    ws = Workspace(tmp_path)
    ws.register_dataset("d", "text", "/src.csv", {"counts": {"train": 3, "val": 1, "test": 1}})
    assert ws.get_dataset("d")["n_train"] == 3
    ws.create_run("r", "gpt", "d", {"model": {}})
    with pytest.raises(AlreadyExists, match="--resume"):
        ws.create_run("r", "gpt", "d", {})
    ws.update_run("r", status="finished", step=7, summary={"x": 1})
    row = ws.get_run("r")
    assert row["status"] == "finished" and row["step"] == 7 and row["summary"] == {"x": 1}
    with pytest.raises(NotFound, match=r"unknown run 'nope' \(known: r\)"):
        ws.get_run("nope")
    with pytest.raises(NotFound, match="aigc ingest"):
        ws.get_dataset("nope")
    with pytest.raises(InvalidInput, match="invalid run name"):
        ws.run_path("../escape")


def _writer(root: str, n: int) -> None:
    ws = Workspace(root)
    for i in range(n):
        ws.create_run(f"run-{i}", "gpt", "d", {"i": i})
        ws.update_run(f"run-{i}", status="finished", step=i)


def _reader(root: str, n: int, out) -> None:
    ws = Workspace(root)
    seen = 0
    for _ in range(n):
        rows = ws.list_runs()
        assert all(r["status"] in ("created", "finished") for r in rows)
        seen = max(seen, len(rows))
    out.put(seen)


def test_concurrent_readers_and_a_writer_do_not_corrupt_the_catalog(tmp_path):
    Workspace(tmp_path)
    ctx = mp.get_context("spawn")
    out = ctx.Queue()
    procs = [ctx.Process(target=_writer, args=(str(tmp_path), 60))]
    procs += [ctx.Process(target=_reader, args=(str(tmp_path), 150, out)) for _ in range(2)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(60)
        assert p.exitcode == 0
    ws = Workspace(tmp_path)
    assert len(ws.list_runs()) == 60
    assert sqlite3.connect(tmp_path / "catalog.db").execute("pragma integrity_check").fetchone()[0] == "ok"


def _open_at_once(root, barrier, results):
    import aigc

    barrier.wait()
    try:
        aigc.open_workspace(root).list_datasets()
        results.put("ok")
    except Exception as e:  # noqa: BLE001 - the test reports what went wrong
        results.put(f"{type(e).__name__}: {e}")


def test_processes_opening_a_new_workspace_at_once_all_succeed(tmp_path):
    """Before the catalog took its write lock first, 4 processes opening a new workspace together
    failed every time here ('table schema_migrations already exists')."""
    import multiprocessing as mp

    ctx = mp.get_context("fork")
    for round_ in range(3):
        root = tmp_path / f"ws{round_}"
        barrier, results = ctx.Barrier(4), ctx.Queue()
        procs = [ctx.Process(target=_open_at_once, args=(root, barrier, results)) for _ in range(4)]
        for p in procs:
            p.start()
        for p in procs:
            p.join(60)
        assert [results.get(timeout=5) for _ in procs] == ["ok"] * 4
