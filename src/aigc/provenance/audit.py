"""The safety audit log: one row per decision, append-only, hash-chained, never raw PII.

Each row of the catalog's ``audit_log`` table (``aigc.workspace.audit_table``) records a decision
(allow, flag, redact, block, error) taken on one path (ingest, train, prompt, output, log,
moderation; generate: one call of ``aigc generate`` / ``TextGenerator.generate`` outside the engine;
batch: one ``generate --file`` job): the request id, the run, the policy version, the categories,
entity counts and rule ids that led to it, the SHA-256 of the text, and an excerpt of at most 200
characters of the text with its PII replaced (``aigc.safety.pii.redact(text, "replace")``; when
redaction is unavailable or fails, the excerpt is withheld, never written raw). The excerpt is
always ``replace``-redacted, whatever the policy's ``log`` operators are (``keep`` included).
Every path writes through :func:`record` (or :func:`record_many`, several in one transaction);
the table is part of every catalog, so there is no workspace without an audit log.

The chain: ``row_hash = sha256(canonical JSON of the row's fields and id, with prev_hash)``, and each
row's ``prev_hash`` is the row before it's ``row_hash`` (the first row's is 64 zeros). Editing a
field, deleting a row or reordering rows breaks it, and :func:`verify` names the first row where it
breaks. Deleting rows at the end leaves a shorter valid chain: keep the ``head`` that :func:`verify`
returns somewhere else (a ticket, an export) to catch that.

Appends are serialized so that concurrent writers (threads, processes) never fork the chain: the
transaction that reads the last row and writes the next takes the database's write lock first
(SQLite ``BEGIN IMMEDIATE``; PostgreSQL a transaction-scoped advisory lock, see :func:`_chain`).
"""

from __future__ import annotations

import csv
import hashlib
import json
import os
import uuid
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import sqlalchemy as sa

from aigc.errors import InvalidInput
from aigc.workspace import Workspace, audit_table

GENESIS = "0" * 64
PATHS = ("ingest", "train", "prompt", "output", "log", "moderation", "generate", "batch")
DECISIONS = ("allow", "flag", "redact", "block", "error")
EXCERPT_CHARS = 200
EXPORT_FORMATS = ("jsonl", "csv")
WITHHELD = "[excerpt withheld: PII redaction unavailable]"
_REDACT_WINDOW = 4000  # the excerpt is cut from the redacted start of a long text, not the whole text
_PG_LOCK = 0x41494743  # "AIGC": the advisory lock key that serializes appends on PostgreSQL
# The fields a row's hash covers, in a fixed set (the JSON is key-sorted): every column but row_hash.
HASHED = ("id", "created_at", "request_id", "path", "run", "policy_version", "decision", "categories",
          "entity_counts", "rule_ids", "text_sha256", "excerpt", "prev_hash")


@dataclass(frozen=True)
class AuditVerify:
    """The chain's state: ``ok``, how many ``rows`` were checked, the ``first_bad_id`` and the
    ``reason`` when broken, and the last row's hash (``head``) to keep elsewhere."""

    ok: bool
    rows: int
    first_bad_id: int | None
    reason: str
    head: str | None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _canonical(value: Any) -> str:
    return json.dumps(value, sort_keys=True, ensure_ascii=False, separators=(",", ":"))


def row_hash(row: Mapping[str, Any]) -> str:
    """SHA-256 (hex) of the canonical JSON of a row's hashed fields (``HASHED``), as stored."""
    return hashlib.sha256(_canonical({k: row[k] for k in HASHED}).encode("utf-8")).hexdigest()


def excerpt(text: str, limit: int = EXCERPT_CHARS) -> str:
    """The start of ``text`` with its PII replaced by entity names ("<CN_MOBILE>"), cut to ``limit``
    characters. Redaction runs before the cut, so an entity is never cut in half and left readable;
    if redaction is unavailable or fails, :data:`WITHHELD` stands in for the excerpt."""
    window = text[:_REDACT_WINDOW]
    try:
        from aigc.safety.pii import redact

        redacted = redact(window, "replace").text
    except Exception:  # noqa: BLE001 - fail closed: whatever went wrong, the raw text is not stored
        return WITHHELD
    return redacted[:limit]


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="microseconds")


def _names(value: Any, what: str) -> list[str]:
    if value is None:
        return []
    if isinstance(value, str) or not isinstance(value, Iterable):
        raise InvalidInput(f"{what} must be a list of names, got {value!r}: pass e.g. [{value!r}]")
    items = list(value)
    bad = [v for v in items if not isinstance(v, str) or not v]
    if bad:
        raise InvalidInput(f"{what} must hold non-empty strings, got {bad[0]!r}")
    return sorted(set(items))


def _counts(value: Any) -> dict[str, int]:
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise InvalidInput(f"entity_counts must map entity types to counts, got {value!r}")
    for k, n in value.items():
        if not isinstance(k, str) or not isinstance(n, int) or isinstance(n, bool) or n < 0:
            raise InvalidInput(f"entity_counts must map entity types to counts >= 0, got {k!r}: {n!r}")
    return dict(sorted(value.items()))


def _short(value: Any, what: str, limit: int, *, required: bool = False) -> str | None:
    if value is None and not required:
        return None
    if not isinstance(value, str) or not value.strip() or len(value) > limit:
        need = "a non-empty string" + (f" of at most {limit} characters" if limit else "")
        raise InvalidInput(f"{what} must be {need}, got {value!r}")
    return value


def _prepare(entry: Mapping[str, Any]) -> dict[str, Any]:
    """A row's fields from a decision (validated), all but id, prev_hash and row_hash."""
    unknown = set(entry) - {"path", "decision", "text", "policy_version", "request_id", "run", "categories",
                            "entity_counts", "rule_ids", "replaced"}
    if unknown:
        raise InvalidInput(f"unknown audit field(s) {', '.join(sorted(unknown))}: "
                           "see aigc.provenance.audit.record")
    path, decision, text = entry.get("path"), entry.get("decision"), entry.get("text")
    if path not in PATHS:
        raise InvalidInput(f"audit path must be one of {', '.join(PATHS)}, got {path!r}")
    if decision not in DECISIONS:
        raise InvalidInput(f"audit decision must be one of {', '.join(DECISIONS)}, got {decision!r}")
    if not isinstance(text, str):
        raise InvalidInput("audit text must be a string (the text the decision was about), "
                           f"got {type(text).__name__}")
    return {
        "created_at": _now(),
        "request_id": _short(entry.get("request_id"), "request_id", 64),
        "path": path,
        "run": _short(entry.get("run"), "run", 200),
        "policy_version": _short(entry.get("policy_version"), "policy_version", 80, required=True),
        "decision": decision,
        "categories": _canonical(_names(entry.get("categories"), "categories")),
        "entity_counts": _canonical(_counts(entry.get("entity_counts"))),
        "rule_ids": _canonical(_names(entry.get("rule_ids"), "rule_ids")),
        "text_sha256": hashlib.sha256(text.encode("utf-8")).hexdigest(),
        # ``replaced``: the text with its PII already replaced by entity names (the generation log's
        # copy when every ``log`` operator is ``replace``), so it is not scanned a second time. Any
        # other redaction (mask, keep...) is not an excerpt: the text is redacted here instead.
        "excerpt": (replaced[:EXCERPT_CHARS] if isinstance(replaced := entry.get("replaced"), str)
                    else excerpt(text)),
    }


@contextmanager
def _chain(ws: Workspace) -> Iterator[sa.Connection]:
    """A transaction holding the chain's write lock, so that reading the last row and appending the
    next are one step for every writer. SQLite: ``BEGIN IMMEDIATE`` takes the database's write lock
    up front (a plain BEGIN would let two writers read the same last row). PostgreSQL: a
    transaction-scoped advisory lock (released at commit)."""
    with ws.engine.begin() as conn:
        if conn.dialect.name == "sqlite":
            conn.exec_driver_sql("BEGIN IMMEDIATE")
        elif conn.dialect.name == "postgresql":
            conn.execute(sa.text("SELECT pg_advisory_xact_lock(:key)"), {"key": _PG_LOCK})
        yield conn


def record_many(ws: Workspace, rows: Iterable[Mapping[str, Any]]) -> list[int]:
    """Append several decisions in one transaction (each a mapping of :func:`record`'s keyword
    arguments); returns their ids. Nothing is written when any row is invalid."""
    prepared = [_prepare(r) for r in rows]  # validate and redact before taking the lock
    if not prepared:
        return []
    ids = []
    with _chain(ws) as conn:
        last = conn.execute(sa.select(audit_table.c.id, audit_table.c.row_hash)
                            .order_by(audit_table.c.id.desc()).limit(1)).first()
        next_id, prev = (last[0] + 1, last[1]) if last else (1, GENESIS)
        rows = []
        for fields in prepared:
            row = {**fields, "id": next_id, "prev_hash": prev}
            row["row_hash"] = prev = row_hash(row)
            rows.append(row)
            ids.append(next_id)
            next_id += 1
        conn.execute(audit_table.insert(), rows)  # one cached statement for all the rows
    return ids


def record(ws: Workspace, *, path: str, decision: str, text: str, policy_version: str,
           request_id: str | None = None, run: str | None = None, categories: Iterable[str] = (),
           entity_counts: Mapping[str, int] | None = None, rule_ids: Iterable[str] = ()) -> int:
    """Append one decision to the chain and return its id.

    ``path``: ingest | train | prompt | output | log | moderation | generate | batch; ``decision``:
    allow | flag | redact | block | error; ``text``: what was decided on (only its SHA-256 and a
    ``replace``-redacted excerpt are stored; a path that decides on counts, such as ingest, passes
    a line of them); ``policy_version``: the policy that decided (``Policy.version``)."""
    return record_many(ws, [dict(path=path, decision=decision, text=text, policy_version=policy_version,
                                 request_id=request_id, run=run, categories=categories,
                                 entity_counts=entity_counts, rule_ids=rule_ids)])[0]


def _instant(value: str | datetime | None, what: str) -> str | None:
    """An ISO date or time (naive = UTC) as the stored form, so that strings compare as instants."""
    if value is None:
        return None
    try:
        moment = value if isinstance(value, datetime) else datetime.fromisoformat(str(value).strip())
    except ValueError:
        raise InvalidInput(f"{what} {value!r} is not an ISO date or time: use e.g. 2025-09-01 or "
                           "2025-09-01T08:00:00+08:00") from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=timezone.utc)
    return moment.astimezone(timezone.utc).isoformat(timespec="microseconds")


def _decoded(row: Mapping[str, Any]) -> dict[str, Any]:
    out = dict(row)
    for key in ("categories", "entity_counts", "rule_ids"):
        out[key] = json.loads(out[key])
    return out


def list_entries(ws: Workspace, *, path: str | None = None, decision: str | None = None,
                 run: str | None = None, since: str | datetime | None = None,
                 until: str | datetime | None = None, limit: int = 100) -> list[dict[str, Any]]:
    """The newest ``limit`` rows matching every filter given (``since`` inclusive, ``until``
    exclusive), newest first, their JSON fields decoded."""
    if path is not None and path not in PATHS:
        raise InvalidInput(f"--path must be one of {', '.join(PATHS)}, got {path!r}")
    if decision is not None and decision not in DECISIONS:
        raise InvalidInput(f"--decision must be one of {', '.join(DECISIONS)}, got {decision!r}")
    if not isinstance(limit, int) or limit < 1:
        raise InvalidInput(f"--limit must be a whole number >= 1, got {limit!r}")
    t = audit_table.c
    query = sa.select(audit_table).order_by(t.id.desc()).limit(limit)
    for column, value in ((t.path, path), (t.decision, decision), (t.run, run)):
        if value is not None:
            query = query.where(column == value)
    if (start := _instant(since, "--since")) is not None:
        query = query.where(t.created_at >= start)
    if (end := _instant(until, "--until")) is not None:
        query = query.where(t.created_at < end)
    with ws.engine.connect() as conn:
        return [_decoded(r) for r in conn.execute(query).mappings()]


def _rows(ws: Workspace) -> Iterator[dict[str, Any]]:
    """Every row in chain order, as stored."""
    with ws.engine.connect() as conn:
        for row in conn.execute(sa.select(audit_table).order_by(audit_table.c.id)).mappings():
            yield dict(row)


def export(ws: Workspace, out_path: str | os.PathLike, fmt: str | None = None) -> int:
    """Write every row, in chain order and as stored (hashes included, so a copy can be verified),
    to ``out_path`` as JSONL or CSV (default: from the suffix, else JSONL); atomic. Returns the count."""
    out = Path(out_path)
    fmt = fmt or ("csv" if out.suffix.lower() == ".csv" else "jsonl")
    if fmt not in EXPORT_FORMATS:
        raise InvalidInput(f"export format must be one of {', '.join(EXPORT_FORMATS)}, got {fmt!r}")
    if out.is_dir():
        raise InvalidInput(f"{out} is a folder: pass a file path, e.g. {out / 'audit.jsonl'}")
    if not out.parent.is_dir():
        raise InvalidInput(f"folder {out.parent} does not exist: create it or pass another path")
    tmp = out.with_name(f".{out.name}.{uuid.uuid4().hex[:8]}.tmp")
    count = 0
    columns = [c.name for c in audit_table.columns]
    try:
        with open(tmp, "w", encoding="utf-8", newline="") as fh:
            writer = csv.DictWriter(fh, fieldnames=columns) if fmt == "csv" else None
            if writer:
                writer.writeheader()
            for row in _rows(ws):
                if writer:
                    writer.writerow(row)
                else:
                    fh.write(json.dumps(row, ensure_ascii=False) + "\n")
                count += 1
        os.replace(tmp, out)
    finally:
        tmp.unlink(missing_ok=True)
    return count


def verify_rows(rows: Iterable[Mapping[str, Any]]) -> AuditVerify:
    """Check a chain given as rows in id order (from the catalog, or read back from a JSONL export)."""
    prev, count, last_id = GENESIS, 0, None
    for row in rows:
        count += 1
        if row["prev_hash"] != prev:
            where = "the first row" if last_id is None else f"row {last_id}"
            reason = (f"row {row['id']} does not follow {where}: a row before it was deleted, inserted "
                      "or moved (its prev_hash is not the previous row's hash)")
            return AuditVerify(False, count, int(row["id"]), reason, None)
        if row_hash(row) != row["row_hash"]:
            reason = f"row {row['id']} was changed after it was written: its fields no longer match its hash"
            return AuditVerify(False, count, int(row["id"]), reason, None)
        prev, last_id = row["row_hash"], row["id"]
    return AuditVerify(True, count, None, "", None if last_id is None else prev)


def verify(ws: Workspace) -> AuditVerify:
    """Walk the whole chain in id order; the first row that does not verify stops it."""
    return verify_rows(_rows(ws))
