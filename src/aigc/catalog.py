"""The catalog's database: an engine by URL, one-line errors when it cannot be reached, migrations,
and copying a whole catalog from one URL to another.

Two databases are supported. SQLite is the embedded default (``sqlite:///<workspace>/catalog.db``,
WAL mode, one machine). PostgreSQL, through psycopg 3, serves a team and several servers at once:
``postgresql+psycopg://USER:PASSWORD@HOST:5432/DB`` (``postgresql://`` and ``postgres://`` mean the
same). Every migration runs on both; :func:`migrate` serializes them across processes (SQLite's write
lock, PostgreSQL's advisory lock), so servers that start together never migrate twice.

A URL is never printed with its password (:func:`mask`). This module knows URLs, engines and the
tables of :mod:`aigc.workspace`; it knows nothing about what a row means.
"""

from __future__ import annotations

import os
import re
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

from aigc.errors import AlreadyExists, InvalidInput, NotFound
from aigc.workspace import ENV_DB_URL, MIGRATIONS, default_root, metadata, migrations_table, now, written

PG_DRIVER = "postgresql+psycopg"
_MIGRATE_LOCK = 0x4149474D  # "AIGM": the advisory lock that serializes migrations on PostgreSQL
_USAGE = "use sqlite:///PATH or postgresql://USER:PASSWORD@HOST:5432/DATABASE"


# -- URLs ------------------------------------------------------------------------------------------


def mask(url: str | sa.URL) -> str:
    """``url`` with its password (in the userinfo or a ``password=`` query) shown as ``***``."""
    text = url.render_as_string(hide_password=True) if isinstance(url, sa.URL) else str(url)
    text = re.sub(r"(://[^:/@?#]*:)[^/?#]*@", r"\1***@", text)  # up to the authority's last @
    return re.sub(r"(?i)(password=)[^&\s]*", r"\1***", text)


def parse_url(url: str) -> sa.URL:
    """The SQLAlchemy URL of a catalog: PostgreSQL through psycopg 3 whatever the spelling
    (``postgres://``, ``postgresql://``), SQLite as given; anything else is refused."""
    try:
        u = sa.make_url(url)
    except (sa.exc.ArgumentError, ValueError):
        raise InvalidInput(f"catalog URL {mask(url)!r} is not a database URL: {_USAGE}") from None
    backend = u.get_backend_name()
    if backend in ("postgres", "postgresql"):
        if u.drivername in ("postgres", "postgresql"):
            u = u.set(drivername=PG_DRIVER)
        if not u.database:
            raise InvalidInput(f"catalog URL {mask(u)} names no database: add it after the host, "
                               "e.g. postgresql://aigc:PASSWORD@localhost:5432/aigc")
        return u
    if backend == "sqlite":
        return u
    raise InvalidInput(f"catalog URL scheme {u.drivername!r} ({mask(u)}) is not supported: {_USAGE}")


def resolve_url(root: str | Path | None = None, url: str | None = None) -> str:
    """The catalog URL of the workspace at ``root``: ``url``, else ``$AIGC_DB_URL``, else its SQLite file
    (as :class:`~aigc.workspace.Workspace` does, without creating the workspace)."""
    if url or os.environ.get(ENV_DB_URL):
        return url or os.environ[ENV_DB_URL]
    return f"sqlite:///{(Path(root).expanduser() if root else default_root()) / 'catalog.db'}"


# -- engines and their errors ----------------------------------------------------------------------


def create_engine(url: str) -> Engine:
    """An engine for the catalog at ``url``; nothing is connected yet. SQLite gets WAL mode, a 30 s
    wait for a concurrent writer and enforced foreign keys on every connection; PostgreSQL a pool
    whose connections are checked before use (a restarted server costs one retry, not an error)."""
    u = parse_url(url)
    try:
        if u.get_backend_name() == "sqlite":
            engine = sa.create_engine(u, connect_args={"timeout": 30})
            sa.event.listen(engine, "connect", _sqlite_pragmas)
        else:
            engine = sa.create_engine(u, pool_pre_ping=True,
                                      connect_args={"connect_timeout": 10, "application_name": "aigc-studio"})
            sa.event.listen(engine, "before_cursor_execute", _without_nul, retval=True)
    except (ImportError, sa.exc.NoSuchModuleError) as e:
        raise InvalidInput(f"catalog URL {mask(u)}: its driver is not installed ({e}): use {PG_DRIVER}:// "
                           "(psycopg 3, installed with aigc-studio) or sqlite:///") from None
    return engine


def _sqlite_pragmas(dbapi_conn, _record) -> None:  # noqa: ANN001 - DB-API objects
    cur = dbapi_conn.cursor()
    _set_wal(cur)  # readers never block the writer
    cur.execute("PRAGMA synchronous=NORMAL")
    cur.execute("PRAGMA foreign_keys=ON")
    cur.close()


def _without_nul(conn, cursor, statement, parameters, context, executemany):  # noqa: ANN001 - event hook
    """PostgreSQL's text cannot hold NUL characters (SQLite's can): a prompt, comment or post that
    carries one would fail its whole write there. It is stored as U+FFFD, the replacement character."""

    def clean(params):
        if isinstance(params, dict) and any(isinstance(v, str) and "\x00" in v for v in params.values()):
            return {k: v.replace("\x00", "\ufffd") if isinstance(v, str) else v for k, v in params.items()}
        return params

    if executemany and isinstance(parameters, (list, tuple)):
        return statement, [clean(p) for p in parameters]
    return statement, clean(parameters)


def _set_wal(cur, attempts: int = 40) -> None:
    """``PRAGMA journal_mode=WAL``, retried: while another process turns a new catalog to WAL,
    SQLite answers "database is locked" at once instead of calling the busy handler: six processes
    opening a new workspace together failed there in 1 of 25 rounds without the retry, 0 of 25 with it."""
    import sqlite3

    for i in range(attempts):
        try:
            cur.execute("PRAGMA journal_mode=WAL")
            return
        except sqlite3.OperationalError as e:
            if "locked" not in str(e) or i == attempts - 1:
                raise
            time.sleep(min(0.5, 0.01 * 2**i))


def unreachable(engine: Engine, error: Exception) -> InvalidInput:
    """What went wrong connecting to ``engine``'s database, in one line that names the fix, without
    the password (the driver's own message can be several lines and quote the URL)."""
    u = engine.url
    text = str(getattr(error, "orig", None) or error)
    if u.password:
        text = text.replace(str(u.password), "***")
    where = f"{u.host or 'localhost'}:{u.port or 5432}"
    if re.search(r"password authentication failed|no password supplied|authentication failed", text):
        why = f"wrong user name or password for user {u.username!r} on {where}: check the URL's credentials"
    elif m := re.search(r'database "([^"]+)" does not exist', text):
        why = (f"database {m.group(1)!r} does not exist on {where}: create it "
               f"(createdb -O {u.username or 'USER'} {m.group(1)}) or fix the URL's database name")
    elif m := re.search(r'role "([^"]+)" does not exist', text):
        why = (f"user {m.group(1)!r} does not exist on {where}: create it (createuser -P {m.group(1)}) "
               "or fix the URL")
    elif re.search(r"refused|could not connect|timeout expired|timed out|translate host|resolve host|"
                   r"Name or service not known|No route to host|Network is unreachable", text):
        why = f"cannot reach PostgreSQL at {where}: is the server running there, and are host and port right?"
    elif "unable to open database file" in text:
        why = f"cannot open the SQLite file {u.database}: does its folder exist, and may we write there?"
    else:
        why = " ".join(text.split())[:300]
    return InvalidInput(f"catalog {mask(u)}: {why}")


def connect(engine: Engine) -> Connection:
    """``engine.connect()``, with a failure to connect turned into :func:`unreachable`'s one-line
    error. Errors inside the block are not touched."""
    try:
        return engine.connect()
    except (sa.exc.OperationalError, sa.exc.InterfaceError) as e:
        raise unreachable(engine, e) from None


# -- migrations ------------------------------------------------------------------------------------


def _lock(conn: Connection) -> None:
    """Serialize this transaction with every other catalog migration or copy on the same database."""
    if conn.dialect.name == "sqlite":
        # Take the write lock before reading what is applied: two processes opening a new
        # workspace at once would otherwise both see nothing applied and both migrate
        # ("table schema_migrations already exists"). The second now waits, then finds it done.
        conn.exec_driver_sql("BEGIN IMMEDIATE")
    else:
        conn.begin()
        conn.execute(sa.text("SELECT pg_advisory_xact_lock(:key)"), {"key": _MIGRATE_LOCK})


def _apply(conn: Connection, where: str) -> list[str]:
    """Apply the pending migrations on ``conn`` (inside its transaction); returns their names. A catalog
    that holds a migration this code does not know was made by a newer version: refused, untouched."""
    migrations_table.create(conn, checkfirst=True)
    done = set(conn.scalars(sa.select(migrations_table.c.name)))
    unknown = sorted(done - {name for name, _ in MIGRATIONS})
    if unknown:
        raise InvalidInput(f"catalog {where} was migrated by a newer aigc-studio (unknown migration "
                           f"{', '.join(unknown)}): upgrade aigc-studio")
    applied = []
    for name, apply in MIGRATIONS:
        if name not in done:
            apply(conn)
            conn.execute(migrations_table.insert().values(name=name, applied_at=now()))
            applied.append(name)
    return applied


def migrate(engine: Engine) -> list[str]:
    """Bring the catalog to this code's schema, all in one transaction; returns what was applied."""
    with connect(engine) as conn:
        try:
            _lock(conn)
            applied = _apply(conn, mask(engine.url))
        except sa.exc.ProgrammingError as e:
            raise _not_allowed(engine.url, e) from None
        conn.commit()
    return applied


def _not_allowed(u: sa.URL, error: sa.exc.ProgrammingError) -> Exception:
    """A user who may not create the catalog's tables gets the fix, not a traceback."""
    text = str(error.orig).splitlines()[0] if error.orig else str(error)
    if "permission denied" not in text:
        return error
    return InvalidInput(f"catalog {mask(u)}: user {u.username!r} may not create the catalog's tables "
                        f"({text}): make it the database's owner (ALTER DATABASE {u.database} OWNER TO "
                        f"{u.username})")


def applied(engine: Engine) -> list[str]:
    """The migrations recorded in the catalog, by name (none when it has no table for them yet)."""
    with connect(engine) as conn:
        if not sa.inspect(conn).has_table(migrations_table.name):
            return []
        return list(conn.scalars(sa.select(migrations_table.c.name).order_by(migrations_table.c.name)))


# -- inspecting and copying ------------------------------------------------------------------------


def tables() -> list[sa.Table]:
    """The catalog's tables in foreign-key order (a table after those it references), less the
    migrations' own table."""
    return [t for t in metadata.sorted_tables if t is not migrations_table]


def describe(url: str) -> dict[str, Any]:
    """Dialect, masked URL, applied and pending migrations and row counts per table, read-only."""
    engine = create_engine(url)
    u = engine.url
    if u.get_backend_name() == "sqlite" and u.database and not Path(u.database).exists():
        raise NotFound(f"no catalog at {u.database}: `aigc db migrate` creates it (so does any command "
                       "that opens the workspace)")
    try:
        names = applied(engine)
        with connect(engine) as conn:
            have = set(sa.inspect(conn).get_table_names())
            counts = {t.name: conn.execute(sa.select(sa.func.count()).select_from(t)).scalar_one()
                      for t in tables() if t.name in have}
    finally:
        engine.dispose()
    known = [name for name, _ in MIGRATIONS]
    return {"dialect": engine.dialect.name, "url": mask(u), "migrations": names,
            "pending": [n for n in known if n not in names], "unknown": sorted(set(names) - set(known)),
            "tables": counts}


def _reset_sequences(conn: Connection) -> None:
    """After rows with explicit ids, point each PostgreSQL id sequence past the largest id, so that
    the next insert without an id does not collide (SQLite takes max(rowid) + 1 by itself)."""
    if conn.dialect.name != "postgresql":
        return
    for t in tables():
        col = t.autoincrement_column  # an integer id the database numbers (None for the named tables)
        if col is not None:
            conn.execute(sa.text(f"SELECT setval(pg_get_serial_sequence(:t, :c), "
                                 f"COALESCE((SELECT MAX({col.name}) FROM {t.name}), 0) + 1, false)"),
                         {"t": t.name, "c": col.name})


Progress = Callable[[str, int, int], None]  # (table, rows copied so far, rows in the table)


def copy(src_url: str, dst_url: str, *, replace: bool = False, batch: int = 2000,
         progress: Progress | None = None) -> dict[str, int]:
    """Copy every row of the catalog at ``src_url`` into the one at ``dst_url`` (created or migrated
    there), tables in foreign-key order, ids kept; returns the row count per table.

    The destination is written in one transaction: a failure (or Ctrl-C) leaves it as it was. It must
    hold no rows unless ``replace``, which deletes them first. The source is migrated first if it is
    behind (as any command that opens it would) and read in one snapshot."""
    if batch < 1:
        raise InvalidInput(f"--batch must be >= 1, got {batch}")
    src, dst = create_engine(src_url), create_engine(dst_url)
    if src.url.render_as_string(hide_password=False) == dst.url.render_as_string(hide_password=False):
        raise InvalidInput(f"source and destination are the same catalog ({mask(src.url)}): name another one")
    if dst.url.get_backend_name() == "sqlite" and dst.url.database:
        Path(dst.url.database).expanduser().parent.mkdir(parents=True, exist_ok=True)
    counts: dict[str, int] = {}
    try:
        migrate(src)
        with connect(src) as rconn, connect(dst) as wconn:
            _snapshot(rconn)
            _lock(wconn)
            _apply(wconn, mask(dst.url))
            held = {t.name: n for t in tables()
                    if (n := wconn.execute(sa.select(sa.func.count()).select_from(t)).scalar_one())}
            if held and not replace:
                raise AlreadyExists(f"catalog {mask(dst.url)} already holds rows ({_listing(held)}): copy "
                                    "into an empty database, or pass --replace to delete them first")
            for t in reversed(tables()):
                if held.get(t.name):
                    wconn.execute(t.delete())
            for t in tables():
                total = rconn.execute(sa.select(sa.func.count()).select_from(t)).scalar_one()
                counts[t.name] = _copy_table(rconn, wconn, t, total, batch, progress)
            _reset_sequences(wconn)
            wconn.commit()
    finally:
        src.dispose()
        dst.dispose()
    return counts


def _snapshot(conn: Connection) -> None:
    """Read every table of the source as of one moment, while servers may still be writing to it."""
    if conn.dialect.name == "sqlite":
        conn.exec_driver_sql("BEGIN")  # the snapshot starts at the first read and lasts to the end
    else:
        conn.execution_options(isolation_level="REPEATABLE READ").begin()


def _copy_table(rconn: Connection, wconn: Connection, table: sa.Table, total: int, batch: int,
                progress: Progress | None) -> int:
    done = 0
    if progress:
        progress(table.name, 0, total)
    # in the order written, which the destination's rowid or seq (m009) then keeps
    query = sa.select(table).order_by(written(rconn.dialect.name, table)).execution_options(yield_per=batch)
    for rows in rconn.execute(query).mappings().partitions(batch):  # streamed: one batch in memory
        wconn.execute(table.insert(), [dict(r) for r in rows])
        done += len(rows)
        if progress:
            progress(table.name, done, total)
    return done


def _listing(counts: dict[str, int]) -> str:
    return ", ".join(f"{name} {n:,}" for name, n in counts.items())
