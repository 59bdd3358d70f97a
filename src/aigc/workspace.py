"""The workspace: a folder of artifacts plus the catalog database that indexes them.

Layout under the root (``$AIGC_HOME``, default ``~/.aigc``)::

    catalog.db            SQLite (WAL mode) through SQLAlchemy: datasets, runs, generations,
                          feedback, arena votes, API keys, the audit log, hand-offs, copy
                          events, migrations
    generations/<id>/     images made by the server (their paths are in the generations table)
    datasets/<name>/      one ingested dataset (train/val/test files + card.json)
    runs/<name>/          one training run (checkpoints, metrics, export, eval)
    kb/<name>/            a knowledge base of the assistant (chunks, vectors; aigc.apps.assistant.kb)
    assistant/<kb>.json   the assistant's settings for a knowledge base
    bases/<name>/         a pretrained base de-quantized from GGUF (a folder base stays where it is)
    monitor/models/<name>/, monitor/streams/<name>.json, monitor/topics.yaml    opinion monitoring
    recommend/<name>/     a recommender (recommend/.cache/ holds item vectors: a cache, not an artifact)
    copy/rules.yaml       the copy desk's brand rules
    tmp/                  staging area: everything is written here first, then renamed

The artifacts (:data:`ARTIFACTS`) are what an artifact store mirrors (aigc.storage).

This module knows paths and rows. It knows nothing about what is inside a dataset or a run.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import datetime, timezone
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

from aigc.errors import AlreadyExists, InvalidInput, NotFound

if TYPE_CHECKING:
    from aigc.storage import Mirror

ENV_HOME = "AIGC_HOME"
ENV_DB_URL = "AIGC_DB_URL"  # the catalog's SQLAlchemy URL (default: the SQLite file in the workspace)
ENV_ARTIFACTS = "AIGC_ARTIFACTS"  # where artifacts are kept (default: the workspace folder only)
NAME_RE = re.compile(r"^[\w][\w.\-]{0,79}$")

# The folders of artifacts, one per name in each: a folder, or (True) a single file named with its
# suffix. With an artifact store every one is mirrored there (aigc.storage.Mirror), so a machine that
# shares the catalog and the store answers from what another made. Everything else stays local:
# caches (recommend/.cache), generations/ (their rows say where), tmp/.
ARTIFACTS: dict[str, bool] = {
    "datasets": False, "runs": False, "bases": False,
    "kb": False, "assistant": True,  # knowledge bases; the assistant's settings (<kb>.json)
    "monitor/models": False, "monitor/streams": True,  # classifiers; stream settings (<stream>.json)
    "monitor": True,  # topics.yaml
    "recommend": False,
    "copy": True,  # rules.yaml
}

metadata = sa.MetaData()

datasets_table = sa.Table(
    "datasets",
    metadata,
    sa.Column("name", sa.String, primary_key=True),
    sa.Column("modality", sa.String, nullable=False),  # text | image | table
    sa.Column("source", sa.String, nullable=False),  # the path it was ingested from
    sa.Column("created_at", sa.String, nullable=False),
    sa.Column("n_train", sa.Integer, nullable=False),
    sa.Column("n_val", sa.Integer, nullable=False),
    sa.Column("n_test", sa.Integer, nullable=False),
    sa.Column("card", sa.Text, nullable=False),  # card.json, duplicated for listing
)

runs_table = sa.Table(
    "runs",
    metadata,
    sa.Column("name", sa.String, primary_key=True),
    sa.Column("family", sa.String, nullable=False),
    sa.Column("dataset", sa.String, nullable=False),
    sa.Column("status", sa.String, nullable=False),  # created | running | interrupted | finished | failed
    sa.Column("created_at", sa.String, nullable=False),
    sa.Column("updated_at", sa.String, nullable=False),
    sa.Column("step", sa.Integer, nullable=False, default=0),
    sa.Column("best_val_loss", sa.Float, nullable=True),
    sa.Column("config", sa.Text, nullable=False),  # JSON: family config + train config
    sa.Column("summary", sa.Text, nullable=False, default="{}"),  # JSON: last metrics, eval
)

migrations_table = sa.Table(
    "schema_migrations",
    metadata,
    sa.Column("name", sa.String, primary_key=True),
    sa.Column("applied_at", sa.String, nullable=False),
)


# Serving: every generation the engine makes, the feedback people give on it, and API keys.
generations_table = sa.Table(
    "generations",
    metadata,
    sa.Column("id", sa.String, primary_key=True),  # "gen-" + 24 hex digits
    sa.Column("created_at", sa.String, nullable=False, index=True),
    sa.Column("run", sa.String, nullable=False, index=True),
    sa.Column("kind", sa.String, nullable=False),  # text | image
    sa.Column("endpoint", sa.String, nullable=False),  # e.g. /v1/chat/completions, python
    sa.Column("prompt", sa.Text, nullable=False),
    sa.Column("options", sa.Text, nullable=False),  # JSON: the request's sampling options
    sa.Column("output", sa.Text, nullable=False),  # JSON: texts + finish reasons, or image paths
    sa.Column("status", sa.String, nullable=False),  # ok | cancelled | timeout | error
    sa.Column("error", sa.Text, nullable=True),
    sa.Column("prompt_tokens", sa.Integer, nullable=False, default=0),
    sa.Column("completion_tokens", sa.Integer, nullable=False, default=0),
    sa.Column("ttft_ms", sa.Float, nullable=True),  # time to first token (text)
    sa.Column("latency_ms", sa.Float, nullable=False),
    sa.Column("key_id", sa.String, nullable=True),  # the API key that asked, if any
)

feedback_table = sa.Table(
    "feedback",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("generation_id", sa.String, sa.ForeignKey("generations.id", ondelete="CASCADE"),
              nullable=False, index=True),
    sa.Column("created_at", sa.String, nullable=False),
    sa.Column("rating", sa.Integer, nullable=False),  # +1 thumbs up, -1 thumbs down
    sa.Column("sample_index", sa.Integer, nullable=False, default=0),  # which of the n outputs
    sa.Column("comment", sa.Text, nullable=True),
    # thumb | choice (sample_index preferred to the other samples, rating +1) | edit (sample_index
    # corrected by the user into `edited`, rating -1: it was not right as it was)
    sa.Column("kind", sa.String(16), nullable=False, default="thumb", server_default="thumb"),
    sa.Column("edited", sa.Text, nullable=True),
)

api_keys_table = sa.Table(
    "api_keys",
    metadata,
    sa.Column("id", sa.String, primary_key=True),  # "key-" + 8 hex digits, shown in listings
    sa.Column("name", sa.String, nullable=False),
    sa.Column("prefix", sa.String, nullable=False),  # the key's first characters, to recognise it
    sa.Column("hash", sa.String, nullable=False, unique=True),  # sha256 of the key; the key itself is never stored
    sa.Column("created_at", sa.String, nullable=False),
    sa.Column("last_used_at", sa.String, nullable=True),
    sa.Column("revoked_at", sa.String, nullable=True),
)


# Pretrained bases (aigc.pretrained.bases): where each is and what it is.
bases_table = sa.Table(
    "bases",
    metadata,
    sa.Column("name", sa.String(80), primary_key=True),
    sa.Column("kind", sa.String(16), nullable=False),  # folder | gguf | bundled
    sa.Column("source", sa.Text, nullable=False),  # what the user gave: a path or a bundled name
    sa.Column("path", sa.Text, nullable=False),  # the transformers folder it loads from
    sa.Column("architecture", sa.String(200), nullable=False),
    sa.Column("model_type", sa.String(100), nullable=False),
    sa.Column("params", sa.BigInteger, nullable=False),
    sa.Column("size_bytes", sa.BigInteger, nullable=False),
    sa.Column("context_length", sa.Integer, nullable=True),
    sa.Column("chat_template", sa.Boolean, nullable=False),
    sa.Column("licence", sa.Text, nullable=True),
    sa.Column("quantization", sa.String(32), nullable=True),
    sa.Column("extra", sa.Text, nullable=False, default="{}"),  # JSON
    sa.Column("created_at", sa.String(40), nullable=False),
)


# The studio's arena (aigc.arena): two runs answered one prompt; which answer the user preferred.
arena_votes_table = sa.Table(
    "arena_votes",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),  # votes replay in id order
    sa.Column("created_at", sa.String, nullable=False),
    sa.Column("prompt", sa.Text, nullable=False),
    sa.Column("cond", sa.Text, nullable=False, default="{}"),  # JSON: the conditions both runs were given
    sa.Column("run_a", sa.String, nullable=False, index=True),
    sa.Column("run_b", sa.String, nullable=False, index=True),
    sa.Column("generation_a", sa.String, sa.ForeignKey("generations.id", ondelete="CASCADE"), nullable=False),
    sa.Column("generation_b", sa.String, sa.ForeignKey("generations.id", ondelete="CASCADE"), nullable=False),
    sa.Column("winner", sa.String(4), nullable=False),  # a | b | tie
)


# The safety audit log (aigc.provenance.audit): one row per safety decision, append-only and
# hash-chained (each row's hash covers its fields and the previous row's hash), never raw PII.
audit_table = sa.Table(
    "audit_log",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),  # the chain's order
    sa.Column("created_at", sa.String(40), nullable=False, index=True),
    sa.Column("request_id", sa.String(64), nullable=True, index=True),
    sa.Column("path", sa.String(16), nullable=False),  # ingest | train | prompt | output | log | moderation
    sa.Column("run", sa.String(200), nullable=True, index=True),
    sa.Column("policy_version", sa.String(80), nullable=False),
    sa.Column("decision", sa.String(16), nullable=False),  # allow | flag | redact | block | error
    sa.Column("categories", sa.Text, nullable=False, default="[]"),  # JSON list
    sa.Column("entity_counts", sa.Text, nullable=False, default="{}"),  # JSON {type: n}
    sa.Column("rule_ids", sa.Text, nullable=False, default="[]"),  # JSON list
    sa.Column("text_sha256", sa.String(64), nullable=False),
    sa.Column("excerpt", sa.Text, nullable=False, default=""),  # redacted, at most 200 characters
    sa.Column("prev_hash", sa.String(64), nullable=False),
    sa.Column("row_hash", sa.String(64), nullable=False, unique=True),
)


# The customer-service assistant (aigc.apps.assistant): a conversation passed to a person.
handoffs_table = sa.Table(
    "handoffs",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("created_at", sa.String(40), nullable=False, index=True),
    sa.Column("kb", sa.String(200), nullable=False, index=True),
    sa.Column("reason", sa.String(32), nullable=False),  # requested | low_confidence | safety
    sa.Column("question", sa.Text, nullable=False),  # the last question, redacted per the log actions
    sa.Column("conversation", sa.Text, nullable=False, default="[]"),  # JSON turns, redacted likewise
    sa.Column("confidence", sa.Float, nullable=True),
    sa.Column("status", sa.String(16), nullable=False, default="open"),  # open | closed
    sa.Column("delivered", sa.Text, nullable=True),  # the webhook's answer: "200" or the error
)

# The copywriting desk's variants (aigc.apps.copy): what was shown, chosen or clicked.
copy_events_table = sa.Table(
    "copy_events",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("created_at", sa.String(40), nullable=False),
    sa.Column("experiment", sa.String(200), nullable=False, index=True),  # usually the product id
    sa.Column("variant", sa.String(200), nullable=False),  # "control" or a candidate's id
    sa.Column("event", sa.String(16), nullable=False),  # shown | chosen | clicked
    sa.Column("text", sa.Text, nullable=True),  # the variant's text (first event that carries it)
)

# Opinion monitoring (aigc.apps.monitor): the scored posts of each stream, and its alert events.
monitor_items_table = sa.Table(
    "monitor_items",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("stream", sa.String(200), nullable=False),
    sa.Column("ts", sa.String(40), nullable=False),  # ISO 8601, UTC
    sa.Column("ref", sa.String(200), nullable=True),  # the source's own id for the post, if it has one
    sa.Column("text", sa.Text, nullable=False),  # redacted with the policy's log operators
    sa.Column("label", sa.String(100), nullable=False),
    sa.Column("prob", sa.Float, nullable=False),
    sa.Column("negative", sa.Boolean, nullable=False),
    sa.Column("score", sa.Float, nullable=False),
    sa.Column("topic", sa.String(200), nullable=False),
    sa.Index("ix_monitor_items_stream_ts", "stream", "ts"),
)

monitor_alerts_table = sa.Table(
    "monitor_alerts",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("stream", sa.String(200), nullable=False, index=True),
    sa.Column("created_at", sa.String(40), nullable=False),
    sa.Column("kind", sa.String(16), nullable=False),  # alert | resolved
    sa.Column("rule", sa.String(32), nullable=False),
    sa.Column("topic", sa.String(200), nullable=False),  # "*" = all posts
    sa.Column("period", sa.String(40), nullable=False),  # the period's start, ISO UTC
    sa.Column("share", sa.Float, nullable=True),
    sa.Column("expected", sa.Float, nullable=True),
    sa.Column("volume", sa.Integer, nullable=True),
    sa.Column("explanation", sa.Text, nullable=False, default="{}"),  # JSON
    sa.Column("delivered", sa.Text, nullable=True),  # the webhook's answer
    sa.UniqueConstraint("stream", "kind", "rule", "topic", "period", name="uq_monitor_alert"),
)


def _m001_initial(conn: Connection) -> None:
    for table in (datasets_table, runs_table):
        table.create(conn, checkfirst=True)


def _m002_serving(conn: Connection) -> None:
    for table in (generations_table, feedback_table, api_keys_table):
        table.create(conn, checkfirst=True)


def _m003_bases(conn: Connection) -> None:
    bases_table.create(conn, checkfirst=True)


def _m004_feedback_kinds(conn: Connection) -> None:
    """Feedback rows of three kinds (``kind``, ``edited``). A catalog made since has them already:
    m002 creates the table as defined now."""
    have = {c["name"] for c in sa.inspect(conn).get_columns("feedback")}
    if "kind" not in have:
        conn.exec_driver_sql("ALTER TABLE feedback ADD COLUMN kind VARCHAR(16) NOT NULL DEFAULT 'thumb'")
    if "edited" not in have:
        conn.exec_driver_sql("ALTER TABLE feedback ADD COLUMN edited TEXT")


def _m005_arena(conn: Connection) -> None:
    arena_votes_table.create(conn, checkfirst=True)


def _m006_audit(conn: Connection) -> None:
    audit_table.create(conn, checkfirst=True)


def _m007_apps(conn: Connection) -> None:
    for table in (handoffs_table, copy_events_table):
        table.create(conn, checkfirst=True)


def _m008_monitor(conn: Connection) -> None:
    for table in (monitor_items_table, monitor_alerts_table):
        table.create(conn, checkfirst=True)


# The tables keyed by a name or a random id: listings order their rows as written (ties of
# created_at, the generation log's newest first), which is SQLite's rowid. PostgreSQL has none, so
# there migration m009 gives them an identity column ``seq`` (kept out of the definitions above:
# SQLite has no use for it).
WRITTEN_ORDER = ("datasets", "runs", "generations", "api_keys", "bases")


def written(dialect: str, table: sa.Table) -> sa.ColumnElement:
    """The column that orders ``table``'s rows as they were written, on the ``dialect`` given."""
    if dialect == "sqlite":
        return sa.literal_column(f"{table.name}.rowid")
    if table.name in WRITTEN_ORDER:
        return sa.literal_column(f"{table.name}.seq")
    return table.c.id  # the others are numbered by the database: the id is the order written


def _m009_written_order(conn: Connection) -> None:
    if conn.dialect.name == "postgresql":  # rows already there are numbered in their physical order
        for name in WRITTEN_ORDER:
            conn.exec_driver_sql(f"ALTER TABLE {name} ADD COLUMN IF NOT EXISTS seq BIGINT "
                                 "GENERATED BY DEFAULT AS IDENTITY")


# Append-only: never edit or reorder an entry that has shipped; add a new one instead.
MIGRATIONS: list[tuple[str, Callable[[Connection], None]]] = [
    ("m001_initial", _m001_initial),
    ("m002_serving", _m002_serving),
    ("m003_bases", _m003_bases),
    ("m004_feedback_kinds", _m004_feedback_kinds),
    ("m005_arena", _m005_arena),
    ("m006_audit", _m006_audit),
    ("m007_apps", _m007_apps),
    ("m008_monitor", _m008_monitor),
    ("m009_written_order", _m009_written_order),
]


def now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def check_name(name: str, what: str = "name") -> str:
    if not isinstance(name, str) or not NAME_RE.match(name):
        raise InvalidInput(
            f"invalid {what} {name!r}: use letters, digits, '.', '_' or '-' (at most 80), "
            "starting with a letter or digit"
        )
    return name


def default_root() -> Path:
    return Path(os.environ.get(ENV_HOME) or Path.home() / ".aigc").expanduser()


class Workspace:
    """Paths plus catalog. Cheap to open; safe for several processes at once (SQLite WAL, or a
    PostgreSQL server named by ``db_url``).

    ``db_url`` (default ``$AIGC_DB_URL``, else the SQLite file ``catalog.db`` under the root) is
    where the catalog lives; ``artifacts`` (default ``$AIGC_ARTIFACTS``, else the root itself) is
    where artifacts are kept (:data:`ARTIFACTS`): a local folder or an fsspec URL such as
    ``s3://bucket/prefix``. The root is then the local working copy and cache.
    """

    def __init__(self, root: str | os.PathLike | None = None, db_url: str | None = None,
                 artifacts: str | None = None):
        self.root = Path(root).expanduser() if root else default_root()
        if self.root.exists() and not self.root.is_dir():
            raise InvalidInput(f"workspace {self.root} is a file, not a folder: pass another --workspace")
        for sub in ("datasets", "runs", "bases", "tmp"):
            (self.root / sub).mkdir(parents=True, exist_ok=True)
        self.db_url = db_url or os.environ.get(ENV_DB_URL) or f"sqlite:///{self.root / 'catalog.db'}"
        self.artifacts = artifacts or os.environ.get(ENV_ARTIFACTS) or None
        self.engine = self._open_catalog()

    def __repr__(self) -> str:
        return f"Workspace({str(self.root)!r})"

    # -- paths ---------------------------------------------------------------------------

    @property
    def datasets_dir(self) -> Path:
        return self.root / "datasets"

    @property
    def runs_dir(self) -> Path:
        return self.root / "runs"

    def artifact_path(self, kind: str, name: str, fetch: bool = True) -> Path:
        """``<kind>/<name>``, one artifact of a folder of :data:`ARTIFACTS` (``kb``, ``monitor/models``,
        ``assistant`` with ``<kb>.json``...). With an artifact store (and ``fetch``), downloaded first
        when it is missing here or older than the store's committed copy (checked once per process,
        then every ``Mirror.RECHECK_S``): a machine that shares the catalog and the store answers
        from an artifact it never made."""
        single = ARTIFACTS[_check_kind(kind)]
        stem, _, suffix = name.rpartition(".") if single and isinstance(name, str) else ("", "", "")
        # a file's name is checked without its suffix: a knowledge base of 80 characters has <name>.json
        check_name(stem if stem and suffix.isalnum() else name, f"{kind} name")
        path = self.root / kind / name
        return self.mirror.ensure(path) if fetch and self.mirror else path

    def artifact_names(self, kind: str) -> list[str]:
        """The names of ``kind``'s artifacts here or (with an artifact store) committed there: what a
        listing shows on every machine. Hidden entries (locks, caches, markers) are not artifacts."""
        folder, single = self.root / _check_kind(kind), ARTIFACTS[kind]
        names = {p.name for p in folder.iterdir() if p.is_dir() != single} if folder.is_dir() else set()
        if self.mirror is not None:
            names.update(self.mirror.names(kind))
        # not the folders nested in it (monitor/models), nor hidden entries (locks, caches, markers)
        return sorted(n for n in names if not n.startswith(".") and f"{kind}/{n}" not in ARTIFACTS)

    def read_artifact_file(self, kind: str, name: str, rel: str) -> bytes | None:
        """The file ``rel`` of the folder artifact ``<kind>/<name>`` (a knowledge base's ``kb.json``) as
        its newest copy has it, without fetching the rest (:meth:`aigc.storage.Mirror.read`): a listing
        reads one small file of every artifact, where :meth:`artifact_path` would download each whole.
        None when neither this workspace nor the store has it."""
        if ARTIFACTS[_check_kind(kind)]:
            raise InvalidInput(f"{kind} holds single files, not folders: read {kind}/{name} through "
                               "artifact_path")
        folder = self.artifact_path(kind, name, fetch=False)
        if self.mirror is not None:
            return self.mirror.read(folder, rel)
        try:
            return (folder / rel).read_bytes()
        except (FileNotFoundError, NotADirectoryError):
            return None

    def dataset_path(self, name: str, fetch: bool = True) -> Path:
        """``datasets/<name>``; fetched from the artifact store like any artifact (:meth:`artifact_path`)."""
        return self.artifact_path("datasets", check_name(name, "dataset name"), fetch)

    def run_path(self, name: str, fetch: bool = True) -> Path:
        """``runs/<name>``; fetched like any artifact: a machine that shares the catalog and the store
        loads a run it never trained."""
        return self.artifact_path("runs", check_name(name, "run name"), fetch)

    def base_path(self, name: str, fetch: bool = True) -> Path:
        """``bases/<name>``, a de-quantized base; fetched like any artifact."""
        return self.artifact_path("bases", check_name(name, "base name"), fetch)

    @contextmanager
    def staging(self, prefix: str = "stage") -> Iterator[Path]:
        """A fresh folder under ``tmp/`` that is removed unless the caller publishes it."""
        path = self.root / "tmp" / f"{prefix}-{uuid.uuid4().hex[:12]}"
        path.mkdir(parents=True)
        try:
            yield path
        finally:
            shutil.rmtree(path, ignore_errors=True)

    def publish(self, staged: Path, dest: Path, replace: bool = False) -> None:
        """Move a finished staging folder into place with renames only (atomic per rename).

        With ``replace``, the old folder is first renamed aside, then removed after the new
        one is in place, so a crash never leaves ``dest`` missing or half-written.

        With an artifact store, an artifact's folder (:data:`ARTIFACTS`) is committed there from
        staging first: a failed upload leaves nothing new, neither there nor here (the caller's
        staging is removed).
        """
        if dest.exists() and not replace:
            raise AlreadyExists(f"{dest} already exists: pass --replace to overwrite it")
        if self.mirror is not None:
            self.mirror.push(staged, dest)
        old = None
        if dest.exists():
            old = self.root / "tmp" / f"old-{uuid.uuid4().hex[:12]}"
            os.replace(dest, old)
        os.replace(staged, dest)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)

    def publish_text(self, dest: Path, text: str) -> None:
        """Replace a single file (an artifact's, e.g. ``assistant/<kb>.json``) with ``text``: written
        under ``tmp/``, committed to the artifact store first when it is mirrored there, then renamed
        over ``dest``. Readers see the old file or the new; a failed upload changes nothing."""
        with self.staging(f"file-{dest.name}") as stage:
            staged = stage / dest.name
            staged.write_text(text, encoding="utf-8")
            if self.mirror is not None:
                self.mirror.push_file(staged, dest)
            else:
                dest.parent.mkdir(parents=True, exist_ok=True)
                os.replace(staged, dest)

    def delete_artifact(self, kind: str, name: str) -> None:
        """Remove artifact ``<kind>/<name>``: the store's copy first (one deleted here must not come
        back from there), then this one, renamed aside at once and its files removed after."""
        path = self.artifact_path(kind, name, fetch=False)
        if self.mirror is not None:
            self.mirror.delete(path)
        if path.is_dir():
            aside = self.root / "tmp" / f"deleted-{uuid.uuid4().hex[:12]}"
            os.replace(path, aside)
            shutil.rmtree(aside, ignore_errors=True)
        else:
            path.unlink(missing_ok=True)

    # -- catalog -------------------------------------------------------------------------

    def _open_catalog(self) -> Engine:
        """The catalog at ``db_url``, migrated to this code's schema; ``self.migrated`` names what
        opening it applied. aigc.catalog makes the engine by dialect and words its errors."""
        from aigc import catalog  # it imports this module's tables

        engine = catalog.create_engine(self.db_url)
        self.migrated = catalog.migrate(engine)
        return engine

    def applied_migrations(self) -> list[str]:
        with self.engine.connect() as conn:
            return list(conn.scalars(sa.select(migrations_table.c.name).order_by(migrations_table.c.name)))

    # -- datasets ------------------------------------------------------------------------

    def register_dataset(self, name: str, modality: str, source: str, card: dict[str, Any]) -> None:
        counts = card.get("counts", {})
        row = dict(
            name=name,
            modality=modality,
            source=source,
            created_at=now(),
            n_train=int(counts.get("train", 0)),
            n_val=int(counts.get("val", 0)),
            n_test=int(counts.get("test", 0)),
            card=json.dumps(card, ensure_ascii=False),
        )
        with self.engine.begin() as conn:
            conn.execute(datasets_table.delete().where(datasets_table.c.name == name))
            conn.execute(datasets_table.insert().values(**row))

    def get_dataset(self, name: str) -> dict[str, Any]:
        with self.engine.connect() as conn:
            row = conn.execute(sa.select(datasets_table).where(datasets_table.c.name == name)).mappings().first()
        if row is None:
            known = ", ".join(d["name"] for d in self.list_datasets()) or "none yet"
            raise NotFound(f"unknown dataset {name!r} (known: {known}): run `aigc ingest PATH --name {name}` first")
        out = dict(row)
        out["card"] = json.loads(out["card"])
        out["path"] = str(self.dataset_path(name))
        return out

    def list_datasets(self) -> list[dict[str, Any]]:
        with self.engine.connect() as conn:
            rows = conn.execute(sa.select(datasets_table).order_by(
                datasets_table.c.created_at, written(conn.dialect.name, datasets_table))).mappings().all()
        return [{k: v for k, v in r.items() if k != "card"} for r in rows]

    def has_dataset(self, name: str) -> bool:
        with self.engine.connect() as conn:
            return conn.execute(sa.select(datasets_table.c.name).where(datasets_table.c.name == name)).first() is not None

    # -- runs ----------------------------------------------------------------------------

    def create_run(self, name: str, family: str, dataset: str, config: dict[str, Any]) -> None:
        check_name(name, "run name")
        with self.engine.begin() as conn:
            if conn.execute(sa.select(runs_table.c.name).where(runs_table.c.name == name)).first():
                raise AlreadyExists(f"run {name!r} already exists: pick another --name, or --resume it")
            conn.execute(
                runs_table.insert().values(
                    name=name, family=family, dataset=dataset, status="created", created_at=now(),
                    updated_at=now(), step=0, best_val_loss=None,
                    config=json.dumps(config, ensure_ascii=False), summary="{}",
                )
            )

    def update_run(self, name: str, **fields: Any) -> None:
        for key in ("config", "summary"):
            if key in fields and not isinstance(fields[key], str):
                fields[key] = json.dumps(fields[key], ensure_ascii=False)
        fields["updated_at"] = now()
        with self.engine.begin() as conn:
            conn.execute(runs_table.update().where(runs_table.c.name == name).values(**fields))

    def get_run(self, name: str) -> dict[str, Any]:
        with self.engine.connect() as conn:
            row = conn.execute(sa.select(runs_table).where(runs_table.c.name == name)).mappings().first()
        if row is None:
            known = ", ".join(r["name"] for r in self.list_runs()) or "none yet"
            raise NotFound(f"unknown run {name!r} (known: {known}): see `aigc runs`")
        out = dict(row)
        out["config"] = json.loads(out["config"])
        out["summary"] = json.loads(out["summary"])
        out["path"] = str(self.run_path(name))
        return out

    def has_run(self, name: str) -> bool:
        with self.engine.connect() as conn:
            return conn.execute(sa.select(runs_table.c.name).where(runs_table.c.name == name)).first() is not None

    def list_runs(self) -> list[dict[str, Any]]:
        with self.engine.connect() as conn:
            rows = conn.execute(sa.select(runs_table).order_by(
                runs_table.c.created_at, written(conn.dialect.name, runs_table))).mappings().all()
        return [{k: v for k, v in r.items() if k not in ("config", "summary")} for r in rows]

    def delete_run(self, name: str) -> None:
        path = self.run_path(name, fetch=False)
        if self.mirror is not None:  # the store's copy first: a run deleted here must not come back
            self.mirror.delete(path)
        with self.engine.begin() as conn:
            conn.execute(runs_table.delete().where(runs_table.c.name == name))
        shutil.rmtree(path, ignore_errors=True)

    # -- bases ---------------------------------------------------------------------------

    def register_base(self, row: dict[str, Any]) -> None:
        """Insert or replace the row of a base (see aigc.pretrained.bases.BaseInfo)."""
        values = {c.name: row.get(c.name) for c in bases_table.columns if c.name != "created_at"}
        values["extra"] = json.dumps(row.get("extra") or {}, ensure_ascii=False)
        values["chat_template"] = bool(values["chat_template"])
        with self.engine.begin() as conn:
            conn.execute(bases_table.delete().where(bases_table.c.name == values["name"]))
            conn.execute(bases_table.insert().values(**values, created_at=now()))

    def get_base(self, name: str) -> dict[str, Any]:
        with self.engine.connect() as conn:
            row = conn.execute(sa.select(bases_table).where(bases_table.c.name == name)).mappings().first()
        if row is None:
            known = ", ".join(b["name"] for b in self.list_bases()) or "none yet"
            raise NotFound(f"unknown base {name!r} (known: {known}): see `aigc base list`, add one with `aigc base add PATH`")
        return {**row, "extra": json.loads(row["extra"] or "{}")}

    def has_base(self, name: str) -> bool:
        with self.engine.connect() as conn:
            return conn.execute(sa.select(bases_table.c.name).where(bases_table.c.name == name)).first() is not None

    def list_bases(self) -> list[dict[str, Any]]:
        with self.engine.connect() as conn:
            rows = conn.execute(sa.select(bases_table).order_by(
                bases_table.c.created_at, written(conn.dialect.name, bases_table))).mappings().all()
        return [{**r, "extra": json.loads(r["extra"] or "{}")} for r in rows]

    def delete_base(self, name: str, delete_files: bool) -> None:
        with self.engine.begin() as conn:
            conn.execute(bases_table.delete().where(bases_table.c.name == name))
        if delete_files:
            self.delete_artifact("bases", name)

    # -- artifact store ------------------------------------------------------------------

    @cached_property
    def mirror(self) -> Mirror | None:
        """The store named by ``artifacts``, with the root as its local cache (:class:`aigc.storage.Mirror`:
        every folder of :data:`ARTIFACTS`); None when artifacts live in the root only. Opened on first
        use, so a command that touches no artifact never contacts the store."""
        if not self.artifacts:
            return None
        from aigc.storage import open_mirror

        return open_mirror(self.artifacts, self.root)

    def push_run(self, name: str) -> dict[str, Any] | None:
        """Commit ``runs/<name>`` to the artifact store as the run's current version, checkpoints
        included (a resume on another machine needs ``checkpoints/last.pt``); returns the manifest,
        or None without a store. Call it once the run's folder is complete (end of training, after
        an evaluation wrote into it)."""
        return self._push("run", self.run_path(name, fetch=False))

    def push_dataset(self, name: str) -> dict[str, Any] | None:
        """Commit ``datasets/<name>`` to the artifact store, as :meth:`push_run` does a run's."""
        return self._push("dataset", self.dataset_path(name, fetch=False))

    def push_artifact(self, kind: str, name: str) -> dict[str, Any] | None:
        """Commit ``<kind>/<name>`` as it is here: for an artifact made before the store was set
        (what is published since is committed as it is written)."""
        return self._push(kind, self.artifact_path(kind, name, fetch=False))

    def _push(self, kind: str, path: Path) -> dict[str, Any] | None:
        if self.mirror is None:
            return None
        if ARTIFACTS[path.parent.relative_to(self.root).as_posix()]:  # a single file: a copy goes up
            if not path.is_file():
                raise NotFound(f"{kind} {path.name!r} has no file at {path}: nothing to push")
            with self.staging(f"push-{path.name}") as stage:
                shutil.copyfile(path, stage / path.name)
                return self.mirror.push_file(stage / path.name, path)
        if not path.is_dir():
            raise NotFound(f"{kind} {path.name!r} has no folder at {path}: nothing to push")
        return self.mirror.push(path)

    def record_run(self, name: str, **fields: Any) -> None:
        """The end of a training session: commit the run's folder to the artifact store (when one is
        set), then update its row. In that order, a machine that sees the new status finds the files;
        the row is updated even when the upload fails, since the run is complete here."""
        try:
            self.push_run(name)
        finally:
            self.update_run(name, **fields)


def _check_kind(kind: str) -> str:
    if kind not in ARTIFACTS:
        raise InvalidInput(f"unknown artifact folder {kind!r}: use one of {', '.join(ARTIFACTS)}")
    return kind


def write_json_atomic(path: Path, obj: Any) -> None:
    """Write JSON next to ``path`` then rename over it: readers never see half a file."""
    write_text_atomic(path, json.dumps(obj, ensure_ascii=False, indent=2))


def write_text_atomic(path: Path, text: str) -> None:
    """Write UTF-8 text to a temporary file beside ``path`` (a name of its own, so two writers never
    share one), then rename it over ``path``; the temporary file is gone either way."""
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex[:8]}.tmp")
    try:
        tmp.write_text(text, encoding="utf-8")
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
