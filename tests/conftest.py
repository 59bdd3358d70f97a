"""Shared fixtures: every test gets its own workspace (via $AIGC_HOME) and one torch thread."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("AIGC_THREADS", "1")
os.environ.setdefault("OMP_NUM_THREADS", "1")

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data"


# AIGC_TEST_DB=postgresql runs every test's catalog on a throwaway PostgreSQL server (tests/pg.py):
# each test gets a fresh database as $AIGC_DB_URL. Default: the SQLite file in each workspace.
TEST_DB = os.environ.get("AIGC_TEST_DB", "sqlite")
if TEST_DB not in ("sqlite", "postgresql"):
    raise pytest.UsageError(f"AIGC_TEST_DB must be sqlite or postgresql, got {TEST_DB!r}")


def pytest_configure(config):
    config.addinivalue_line("markers", "sqlite_only: checks the SQLite file itself (skipped under "
                                       "AIGC_TEST_DB=postgresql)")
    config.addinivalue_line("markers", "own_catalog: uses served_ws, yet the workspaces it opens by "
                                       "path need catalogs of their own (under AIGC_TEST_DB=postgresql: "
                                       "a fresh database)")


@pytest.fixture(autouse=True)
def aigc_home(tmp_path, monkeypatch, request):
    home = tmp_path / "aigc-home"
    monkeypatch.setenv("AIGC_HOME", str(home))
    if TEST_DB == "postgresql":
        if request.node.get_closest_marker("sqlite_only"):
            pytest.skip("checks the SQLite catalog file itself; AIGC_TEST_DB=postgresql")
        # A test that serves the session's runs (by path too, e.g. `aigc serve -w`) shares their catalog,
        # as every workspace opened at served_ws's folder shares its catalog.db under SQLite.
        served = "served_ws" in request.fixturenames and not request.node.get_closest_marker("own_catalog")
        monkeypatch.setenv("AIGC_DB_URL", request.getfixturevalue("served_db_url" if served else "pg_url"))
    else:
        monkeypatch.delenv("AIGC_DB_URL", raising=False)
    return home


@pytest.fixture(scope="session")
def pg_server():
    """A throwaway PostgreSQL server for the session; the tests that need one skip where none can run."""
    from pg import PgServer, find_bindir, unavailable

    why = unavailable()
    if why:
        pytest.skip(why)
    server = PgServer(find_bindir()).start()
    yield server
    server.stop()


@pytest.fixture
def pg_url(pg_server) -> str:
    """The URL of a fresh, empty database on the session's PostgreSQL server."""
    return pg_server.new_database()


@pytest.fixture(scope="session")
def served_db_url(request) -> str | None:
    """Where ``served_ws`` keeps its catalog: a database of its own under AIGC_TEST_DB=postgresql."""
    return request.getfixturevalue("pg_server").new_database() if TEST_DB == "postgresql" else None


@pytest.fixture(scope="session", autouse=True)
def _one_thread():
    try:
        import torch
    except ImportError:
        return
    torch.set_num_threads(1)


@pytest.fixture(scope="session")
def served_ws(tmp_path_factory, served_db_url):
    """Tiny runs for the engine and server tests: "g" (gpt), "l" (lstm), "d" (diffusion)."""
    from helpers import train_served_workspace

    with pytest.MonkeyPatch.context() as mp:
        if served_db_url:
            mp.setenv("AIGC_DB_URL", served_db_url)
        else:
            mp.delenv("AIGC_DB_URL", raising=False)
        return train_served_workspace(tmp_path_factory.mktemp("served"))


@pytest.fixture(scope="session")
def s3_endpoint():
    """A real S3-compatible server (moto) on a free loopback port, with dummy AWS credentials set for
    the session; skipped where moto[server] is not installed."""
    moto_server = pytest.importorskip("moto.server", reason="moto[server] is needed for the local S3 server")
    with pytest.MonkeyPatch.context() as mp:
        for var, value in {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
                           "AWS_DEFAULT_REGION": "us-east-1", "AWS_EC2_METADATA_DISABLED": "true"}.items():
            mp.setenv(var, value)
        mp.delenv("AWS_PROFILE", raising=False)
        server = moto_server.ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
        server.start()
        host, port = server.get_host_and_port()
        yield f"http://{host}:{port}"
        server.stop()


@pytest.fixture
def s3_bucket(s3_endpoint, monkeypatch):
    """A fresh, empty bucket on the session's S3 server; ``$AIGC_S3_ENDPOINT`` points at the server."""
    import uuid

    from aigc.storage import ArtifactStore

    monkeypatch.setenv("AIGC_S3_ENDPOINT", s3_endpoint)
    name = f"b-{uuid.uuid4().hex[:10]}"
    ArtifactStore.from_url(f"s3://{name}").fs.mkdir(name)
    return name
