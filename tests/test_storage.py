"""The artifact store (aigc.storage) on a real S3-compatible server (moto on 127.0.0.1): byte-identical
round trips, uploads that die leave the old version readable, a replaced folder never reads as a mix,
a second workspace loads a run it never trained, and a missing bucket is one line, exit 2."""

from __future__ import annotations

import asyncio
import hashlib
import json
import threading
import uuid
from pathlib import Path

import pytest
from typer.testing import CliRunner

from aigc.errors import ArtifactStoreError, InvalidInput
from aigc.storage import LATEST, MANIFEST, ArtifactStore, Mirror, open_mirror
from helpers import write_fruit_csv

@pytest.fixture
def endpoint(s3_endpoint):
    return s3_endpoint


@pytest.fixture
def bucket(s3_bucket):
    return s3_bucket


def make_folder(root: Path, tag: str) -> Path:
    """A folder of nested, binary and empty files whose contents all carry ``tag``."""
    (root / "checkpoints").mkdir(parents=True)
    (root / "run.json").write_text(json.dumps({"tag": tag}), encoding="utf-8")
    (root / "checkpoints" / "last.pt").write_bytes(bytes(range(256)) * 64 + tag.encode())
    (root / "export" / "deep").mkdir(parents=True)
    (root / "export" / "deep" / "模型.bin").write_bytes(tag.encode() * 1000)
    (root / "empty.txt").write_bytes(b"")
    return root


def contents(folder: Path) -> dict[str, bytes]:
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*"))
            if p.is_file() and p.name != MANIFEST}


def stored_versions(store: ArtifactStore, key: str) -> set[str]:
    store.fs.invalidate_cache()
    return {p.rstrip("/").rsplit("/", 1)[-1] for p in store.fs.ls(store._path(key), detail=False)} - {LATEST}


def test_put_get_round_trip_is_byte_identical(bucket, tmp_path):
    store = ArtifactStore.from_url(f"s3://{bucket}/ws")
    src = make_folder(tmp_path / "src", "one")
    expected = contents(src)
    (src / ".run.json.1234.tmp").write_text("half")  # a temporary of an atomic write: never uploaded
    manifest = store.put_folder(src, "runs/r")
    assert sorted(manifest["files"]) == sorted(expected)
    assert manifest["files"]["empty.txt"] == {"size": 0, "sha256": hashlib.sha256(b"").hexdigest()}

    dest = tmp_path / "dest" / "r"
    store.get_folder("runs/r", dest, tmp_dir=tmp_path / "tmp")
    assert contents(dest) == expected  # byte for byte, every file
    assert json.loads((dest / MANIFEST).read_text())["version"] == manifest["version"]
    assert not list((tmp_path / "tmp").iterdir())  # the download's staging folder is gone
    assert store.exists("runs/r") and not store.exists("runs/other")
    assert store.list("runs") == ["runs/r"] and store.list("datasets") == []

    assert store.delete("runs/r") and not store.exists("runs/r") and store.list("runs") == []
    store.fs.invalidate_cache()
    assert store.fs.find(f"{bucket}/ws") == []  # nothing of it is left behind
    assert not store.delete("runs/r")


def test_an_upload_that_dies_commits_nothing_and_the_old_version_stays(bucket, tmp_path, monkeypatch):
    store = ArtifactStore.from_url(f"s3://{bucket}/ws")
    old = store.put_folder(make_folder(tmp_path / "v1", "one"), "runs/r")
    real_put, calls = store.fs.put_file, []

    def dies_on_the_third_file(*args, **kwargs):
        calls.append(args)
        if len(calls) == 3:
            raise ConnectionResetError("the network went away")
        return real_put(*args, **kwargs)

    monkeypatch.setattr(store.fs, "put_file", dies_on_the_third_file)
    with pytest.raises(ArtifactStoreError, match="^cannot reach the artifact store .*the network went away"):
        store.put_folder(make_folder(tmp_path / "v2", "two"), "runs/r")
    assert len(calls) == 3  # it did die half-way
    assert store.manifest("runs/r")["version"] == old["version"]
    assert stored_versions(store, "runs/r") == {old["version"]}  # the dead upload's files were removed
    store.get_folder("runs/r", tmp_path / "read" / "r")
    assert contents(tmp_path / "read" / "r") == contents(tmp_path / "v1")


def test_a_replaced_folder_never_reads_as_a_mix(bucket, tmp_path, monkeypatch):
    store = ArtifactStore.from_url(f"s3://{bucket}/ws")
    v1 = store.put_folder(make_folder(tmp_path / "v1", "one"), "runs/r")
    real_put, seen = store.fs.put_file, []

    def read_while_uploading(*args, **kwargs):
        """A reader on another machine downloads after every file the writer uploads."""
        out = real_put(*args, **kwargs)
        dest = tmp_path / "reader" / f"r{len(seen)}"
        store.get_folder("runs/r", dest)
        seen.append(contents(dest))
        return out

    monkeypatch.setattr(store.fs, "put_file", read_while_uploading)
    v2 = store.put_folder(make_folder(tmp_path / "v2", "two"), "runs/r")
    monkeypatch.undo()
    assert len(seen) == 4 and all(c == contents(tmp_path / "v1") for c in seen)  # old, whole, each time
    store.get_folder("runs/r", tmp_path / "after" / "r")
    assert contents(tmp_path / "after" / "r") == contents(tmp_path / "v2")

    # A third version: the first is collected, the second kept for readers still downloading it ...
    v3 = store.put_folder(make_folder(tmp_path / "v3", "three"), "runs/r")
    assert stored_versions(store, "runs/r") == {v2["version"], v3["version"]}
    # ... and a reader that still holds the first's manifest gets the newest, whole.
    store.get_folder("runs/r", tmp_path / "late" / "r", manifest=v1)
    assert contents(tmp_path / "late" / "r") == contents(tmp_path / "v3")


def test_a_failed_upload_publishes_nothing_here_or_there(bucket, tmp_path, monkeypatch):
    import aigc
    from aigc.workspace import Workspace

    ws = Workspace(tmp_path / "ws", artifacts=f"s3://{bucket}/ws")
    real_put = ws.mirror.store.fs.put_file

    def dies_on_val(local, remote, **kwargs):
        if remote.endswith("val.jsonl"):
            raise PermissionError("Access Denied")
        return real_put(local, remote, **kwargs)

    monkeypatch.setattr(ws.mirror.store.fs, "put_file", dies_on_val)
    with pytest.raises(ArtifactStoreError, match="refused access"):
        aigc.ingest(write_fruit_csv(tmp_path / "fruit.csv"), "fruit", workspace=ws, text_column="text")
    assert not (ws.datasets_dir / "fruit").exists() and not ws.has_dataset("fruit")
    assert not list((ws.root / "tmp").iterdir())
    ws.mirror.store.fs.invalidate_cache()
    assert ws.mirror.store.fs.find(f"{bucket}/ws") == []  # the versions' files it did send are gone too


def test_a_damaged_copy_is_refused_and_the_local_copy_kept(bucket, tmp_path):
    store = ArtifactStore.from_url(f"s3://{bucket}/ws")
    manifest = store.put_folder(make_folder(tmp_path / "v1", "one"), "runs/r")
    dest = tmp_path / "local" / "r"
    store.get_folder("runs/r", dest)
    # The same size as the original: only the sha256 tells them apart.
    store.fs.pipe_file(f"{bucket}/ws/runs/r/{manifest['version']}/run.json", b'{"tag": "bad"}')
    with pytest.raises(ArtifactStoreError, match=r"run\.json does not match its manifest"):
        store.get_folder("runs/r", dest)
    assert contents(dest) == contents(tmp_path / "v1")


def test_a_second_workspace_loads_a_run_it_never_trained(bucket, tmp_path, monkeypatch):
    import aigc
    from aigc.workspace import Workspace

    monkeypatch.chdir(tmp_path)  # one catalog file for both machines, by a relative URL
    monkeypatch.setenv("AIGC_DB_URL", "sqlite:///shared.db")
    monkeypatch.setenv("AIGC_ARTIFACTS", f"s3://{bucket}/ws")
    a = Workspace(tmp_path / "machine-a")
    aigc.ingest(write_fruit_csv(tmp_path / "fruit.csv"), "fruit", workspace=a, text_column="text",
                cond_columns=["fruit"])
    assert a.mirror.store.list("datasets") == ["datasets/fruit"]  # published = committed
    aigc.train("fruit", family="gpt", preset="tiny", name="g", workspace=a, max_steps=8, seed=1)
    manifest = a.mirror.store.manifest("runs/g")  # training pushed the run once its folder was complete
    assert manifest is not None and a.get_run("g")["status"] == "finished"
    assert "checkpoints/last.pt" in manifest["files"] and "export/config.json" in manifest["files"]
    expected = aigc.generate("g", "apple", workspace=a, cond={"fruit": "apple"}, seed=7, max_new_tokens=12)

    b = Workspace(tmp_path / "machine-b")
    assert not (b.runs_dir / "g").exists()
    got = aigc.generate("g", "apple", workspace=b, cond={"fruit": "apple"}, seed=7, max_new_tokens=12)
    assert got == expected
    assert contents(b.runs_dir / "g") == contents(a.runs_dir / "g")

    # Another process on machine b (this one forgets what it checked): one small read, no download.
    Mirror.current.clear()
    b2 = Workspace(tmp_path / "machine-b")
    reads = []
    real_manifest = ArtifactStore.manifest
    with monkeypatch.context() as m:
        m.setattr(ArtifactStore, "get_folder", lambda *a, **k: pytest.fail("downloaded again"))
        m.setattr(ArtifactStore, "manifest", lambda self, key: reads.append(key) or real_manifest(self, key))
        for ws in (b2, b2, Workspace(tmp_path / "machine-b")):  # the same process, the same answer
            ws.run_path("g")
    assert reads == ["runs/g"]

    # The run moves on (resumed and pushed on a): b's next process replaces its copy, whole.
    (a.runs_dir / "g" / "notes.txt").write_text("resumed")
    Mirror.current.clear()
    a.push_run("g")
    newer = a.push_run("g")
    assert list(Mirror.current) == [str(a.runs_dir / "g")]  # one entry per folder, not one per version seen
    Mirror.current.clear()
    assert (Workspace(tmp_path / "machine-b").run_path("g") / "notes.txt").read_text() == "resumed"
    assert json.loads((b.runs_dir / "g" / MANIFEST).read_text())["version"] == newer["version"]

    b2.delete_run("g")
    assert not a.mirror.store.exists("runs/g") and not a.has_run("g")


def test_a_missing_bucket_is_one_line_exit_2_and_writes_nothing(endpoint, tmp_path, monkeypatch):
    from aigc.cli.main import app
    from aigc.workspace import Workspace

    monkeypatch.setenv("AIGC_S3_ENDPOINT", endpoint)
    monkeypatch.setenv("AIGC_ARTIFACTS", "s3://no-such-bucket/ws")
    ws = tmp_path / "ws"
    r = CliRunner().invoke(app, ["ingest", str(write_fruit_csv(tmp_path / "fruit.csv")), "--name", "fruit",
                                 "-w", str(ws)], catch_exceptions=False)
    assert r.exit_code == 2, r.output
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in r.output, r.output
    assert lines[0].startswith("error: the bucket of the artifact store s3://no-such-bucket/ws does not "
                               "exist: create it")
    assert not (ws / "datasets" / "fruit").exists() and not list((ws / "tmp").iterdir())
    monkeypatch.delenv("AIGC_ARTIFACTS")
    assert not Workspace(ws).has_dataset("fruit")


def test_no_credentials_and_a_dead_endpoint_are_one_line(endpoint, bucket, monkeypatch):
    for var in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
        monkeypatch.delenv(var)
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", "/nonexistent")
    monkeypatch.setenv("AWS_CONFIG_FILE", "/nonexistent")
    store = ArtifactStore.from_url(f"s3://{bucket}/ws", skip_instance_cache=True)
    with pytest.raises(ArtifactStoreError, match="^no credentials for the artifact store .*AWS_ACCESS_KEY"):
        store.exists("runs/r")
    dead = ArtifactStore.from_url("s3://b/ws?endpoint_url=http://127.0.0.1:9", skip_instance_cache=True,
                                  key="k", secret="s", config_kwargs={"retries": {"max_attempts": 1}})
    assert dead.fs.endpoint_url == "http://127.0.0.1:9"
    with pytest.raises(ArtifactStoreError, match=r"^cannot reach the artifact store .*AIGC_S3_ENDPOINT"):
        dead.exists("runs/r")


def test_the_store_works_from_inside_a_running_event_loop(bucket, tmp_path):
    """s3fs runs its own loop in its own thread, so a server's coroutine may call the sync API (it
    blocks that loop meanwhile: the server calls it from worker threads)."""
    store = ArtifactStore.from_url(f"s3://{bucket}/ws")
    src = make_folder(tmp_path / "src", "one")
    result = {}

    async def inside_a_loop():
        result["manifest"] = store.put_folder(src, "runs/r")
        store.get_folder("runs/r", tmp_path / "dest" / "r")

    worker = threading.Thread(target=lambda: asyncio.run(inside_a_loop()), daemon=True)
    worker.start()
    worker.join(60)
    assert not worker.is_alive(), "deadlocked inside a running event loop"
    assert store.manifest("runs/r") == result["manifest"]
    assert contents(tmp_path / "dest" / "r") == contents(src)


def test_local_urls_and_bad_urls(tmp_path):
    store = ArtifactStore.from_url(str(tmp_path / "shared"))  # a plain path: a shared folder, NFS...
    store.put_folder(make_folder(tmp_path / "src", "one"), "datasets/d")
    store.get_folder("datasets/d", tmp_path / "dest" / "d")
    assert contents(tmp_path / "dest" / "d") == contents(tmp_path / "src")
    assert ArtifactStore.from_url(f"file://{tmp_path / 'shared'}").list("datasets") == ["datasets/d"]
    mem = ArtifactStore.from_url(f"memory://{uuid.uuid4().hex}")
    mem.put_folder(tmp_path / "src", "runs/r")
    assert mem.list("runs") == ["runs/r"]

    assert open_mirror(str(tmp_path / "ws"), tmp_path / "ws") is None  # the workspace itself: no store
    with pytest.raises(InvalidInput, match="overlaps the workspace"):
        open_mirror(str(tmp_path / "ws" / "store"), tmp_path / "ws")
    with pytest.raises(InvalidInput, match="Protocol not known: nope"):
        ArtifactStore.from_url("nope://x")
    with pytest.raises(InvalidInput, match="only endpoint_url"):
        ArtifactStore.from_url("s3://b/ws?region=x")
    with pytest.raises(InvalidInput, match="invalid artifact key"):
        store.exists("runs/../escape")


def test_aigc_push_commits_a_run_trained_before_the_store_and_servers_see_new_versions(bucket, tmp_path,
                                                                                       monkeypatch):
    import aigc
    from aigc.cli.main import app
    from aigc.workspace import Workspace

    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("AIGC_DB_URL", "sqlite:///shared.db")
    monkeypatch.delenv("AIGC_ARTIFACTS", raising=False)
    a = Workspace(tmp_path / "machine-a")
    aigc.ingest(write_fruit_csv(tmp_path / "fruit.csv"), "fruit", workspace=a, text_column="text")
    aigc.train("fruit", family="gpt", preset="tiny", name="g", workspace=a, max_steps=4, seed=1)
    cli = CliRunner()
    r = cli.invoke(app, ["push", "g", "-w", str(a.root)])
    assert r.exit_code == 2 and r.stderr.strip() == ("error: no artifact store to push to: set $AIGC_ARTIFACTS, "
                                                     "e.g. s3://bucket/aigc"), r.output

    monkeypatch.setenv("AIGC_ARTIFACTS", f"s3://{bucket}/late")
    a.update_run("g", status="running")
    r = cli.invoke(app, ["push", "g", "-w", str(a.root)])
    assert r.exit_code == 2 and "run 'g' is training now" in r.stderr, r.output
    a.update_run("g", status="finished")
    r = cli.invoke(app, ["push", "nope", "g", "-w", str(a.root)])  # every name checked before any upload
    assert r.exit_code == 2 and "nope" in r.stderr and not Workspace(a.root).mirror.store.list("runs")
    r = cli.invoke(app, ["push", "g", "-w", str(a.root)])
    assert r.exit_code == 0 and r.stdout.startswith("pushed run g: version v-"), r.output
    r = cli.invoke(app, ["push", "--dataset", "fruit", "-w", str(a.root)])
    assert r.exit_code == 0 and r.stdout.startswith("pushed dataset fruit: version v-"), r.output

    b = Workspace(tmp_path / "machine-b")  # a server's workspace: one long-lived process
    expected = aigc.generate("g", "apple", workspace=a, seed=7, max_new_tokens=8)
    assert aigc.generate("g", "apple", workspace=b, seed=7, max_new_tokens=8) == expected
    (a.runs_dir / "g" / "notes.txt").write_text("newer")
    newer = Workspace(a.root).push_run("g")  # `a` was opened before the store was set
    b.run_path("g")  # checked moments ago: no read of the store yet
    assert not (b.runs_dir / "g" / "notes.txt").exists()
    monkeypatch.setattr(Mirror, "RECHECK_S", 0.0)  # as if RECHECK_S seconds had passed
    assert (b.run_path("g") / "notes.txt").read_text() == "newer"
    assert json.loads((b.runs_dir / "g" / MANIFEST).read_text())["version"] == newer["version"]
