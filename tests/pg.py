"""A throwaway PostgreSQL server for the tests: initdb into a temporary folder, started with pg_ctl on
a free loopback port (its socket in that folder too), a fresh database for each test that asks, all
removed at the end. Nothing outside the folder is touched.

PostgreSQL refuses to run as root: as root, initdb and pg_ctl run as an unprivileged user through
``runuser`` (``nobody``), who owns the folder. Local connections are trusted (user ``postgres``), except
for one user, ``PASSWORD_USER``, who must give ``PASSWORD`` (so a wrong password can be tested).
"""

from __future__ import annotations

import glob
import os
import shutil
import socket
import subprocess
import tempfile
import time
import uuid
from pathlib import Path

PASSWORD_USER, PASSWORD = "aigc_pw", "s3cret-Pw"
UNPRIVILEGED = "nobody"


def find_bindir() -> Path | None:
    """The folder of initdb, pg_ctl and postgres: initdb on PATH, else the newest Debian install."""
    found = shutil.which("initdb")
    candidates = [Path(found).resolve().parent] if found else []
    debian = [Path(p) for p in glob.glob("/usr/lib/postgresql/*/bin")]
    candidates += sorted(debian, key=lambda p: int(p.parent.name) if p.parent.name.isdigit() else 0,
                         reverse=True)
    for d in candidates:
        if all((d / exe).exists() for exe in ("initdb", "pg_ctl", "postgres")):
            return d
    return None


def unavailable() -> str | None:
    """Why no throwaway server can be started here, or None when one can."""
    if find_bindir() is None:
        return ("no PostgreSQL binaries (initdb, pg_ctl, postgres on PATH or in /usr/lib/postgresql/*/bin): "
                "`make postgres` installs them")
    if os.geteuid() == 0 and shutil.which("runuser") is None:
        return "running as root without runuser: PostgreSQL refuses to run as root"
    return None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class PgServer:
    """``start()`` it, ask ``new_database()`` for URLs, ``stop()`` it; ``timings`` of initdb and start."""

    def __init__(self, bindir: Path, durable: bool = False):
        self.bindir = bindir
        self.durable = durable  # PostgreSQL's own defaults (fsync, synchronous_commit): for benchmarks
        self.dir = Path(tempfile.mkdtemp(prefix="aigc-pg-"))
        self.data = self.dir / "data"
        self.port = 0
        self.timings: dict[str, float] = {}

    def _run(self, *args: str) -> subprocess.CompletedProcess:
        cmd = [str(self.bindir / args[0]), *args[1:]]
        if os.geteuid() == 0:
            cmd = ["runuser", "-u", UNPRIVILEGED, "--", *cmd]
        return subprocess.run(cmd, capture_output=True, text=True, timeout=120, cwd=self.dir)

    def start(self) -> "PgServer":
        if os.geteuid() == 0:
            shutil.chown(self.dir, UNPRIVILEGED)
        t = time.perf_counter()
        res = self._run("initdb", "-D", str(self.data), "-U", "postgres", "-A", "trust", "-E", "UTF8",
                        "--no-locale", "--no-sync", "--no-instructions")
        self.timings["initdb_s"] = time.perf_counter() - t
        if res.returncode != 0:
            raise RuntimeError(f"initdb failed: {res.stderr.strip()[-500:]}")
        hba = self.data / "pg_hba.conf"  # the password user first: the first matching line decides
        rule = f"host all {PASSWORD_USER} 127.0.0.1/32 scram-sha-256\n"
        hba.write_text(rule + hba.read_text())
        for attempt in range(3):  # a free port can be taken between picking it and binding it
            self.port = _free_port()
            opts = f"-p {self.port} -k {self.dir} -c listen_addresses=127.0.0.1 -c max_connections=400"
            if not self.durable:  # tests need no durability: a throwaway server
                opts += " -c fsync=off -c synchronous_commit=off -c full_page_writes=off"
            t = time.perf_counter()
            res = self._run("pg_ctl", "-D", str(self.data), "-l", str(self.dir / "server.log"), "-w",
                            "-t", "60", "-o", opts, "start")
            self.timings["start_s"] = time.perf_counter() - t
            if res.returncode == 0:
                break
        else:
            log = (self.dir / "server.log").read_text()[-500:] if (self.dir / "server.log").exists() else ""
            raise RuntimeError(f"pg_ctl start failed: {res.stderr.strip()[-300:]} {log}")
        self.execute(f"CREATE ROLE {PASSWORD_USER} LOGIN PASSWORD '{PASSWORD}'")
        return self

    def url(self, database: str = "postgres", user: str = "postgres", password: str | None = None,
            driver: str = "postgresql+psycopg") -> str:
        auth = f"{user}:{password}" if password is not None else user
        return f"{driver}://{auth}@127.0.0.1:{self.port}/{database}"

    def execute(self, sql: str) -> None:
        """One statement as the superuser, outside a transaction (CREATE DATABASE needs that)."""
        import psycopg

        with psycopg.connect(host="127.0.0.1", port=self.port, user="postgres", dbname="postgres",
                             autocommit=True) as conn:
            conn.execute(sql)

    def new_database(self, owner: str = "postgres") -> str:
        """A fresh, empty database; returns its URL (as the superuser)."""
        name = "t_" + uuid.uuid4().hex[:12]
        self.execute(f"CREATE DATABASE {name} OWNER {owner}")
        return self.url(name)

    def version(self) -> str:
        import psycopg

        with psycopg.connect(host="127.0.0.1", port=self.port, user="postgres", dbname="postgres") as conn:
            return conn.execute("SHOW server_version").fetchone()[0]

    def stop(self) -> None:
        if self.port:
            self._run("pg_ctl", "-D", str(self.data), "-m", "immediate", "-w", "stop")
        shutil.rmtree(self.dir, ignore_errors=True)
