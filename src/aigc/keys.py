"""API keys for the HTTP server: made once, shown once, stored as a SHA-256 hash.

A key is 32 random bytes (``aigc-`` + URL-safe base64), so a plain SHA-256 is enough to store it
(there is nothing to brute-force, unlike a password). When any unrevoked key exists, the server
asks every request but ``/health`` for ``Authorization: Bearer <key>``.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import uuid
from typing import Any

import sqlalchemy as sa

from aigc.errors import InvalidInput, NotFound
from aigc.workspace import Workspace, api_keys_table, now, written

PREFIX = "aigc-"


def _hash(key: str) -> str:
    return hashlib.sha256(key.encode("utf-8")).hexdigest()


def create_key(ws: Workspace, name: str = "default") -> tuple[str, str]:
    """Make a key; returns ``(key_id, key)``. The key itself is not stored anywhere."""
    if not name or len(name) > 80:
        raise InvalidInput(f"a key name must be 1 to 80 characters, got {len(name or '')}")
    key = PREFIX + secrets.token_urlsafe(32)
    key_id = "key-" + uuid.uuid4().hex[:8]
    with ws.engine.begin() as conn:
        conn.execute(api_keys_table.insert().values(id=key_id, name=name, prefix=key[:12], hash=_hash(key),
                                                    created_at=now()))
    return key_id, key


def list_keys(ws: Workspace) -> list[dict[str, Any]]:
    with ws.engine.connect() as conn:
        rows = conn.execute(sa.select(api_keys_table).order_by(
            api_keys_table.c.created_at, written(conn.dialect.name, api_keys_table))).mappings().all()
    return [{k: v for k, v in r.items() if k != "hash"} for r in rows]


def revoke_key(ws: Workspace, key_id: str) -> None:
    with ws.engine.begin() as conn:
        res = conn.execute(api_keys_table.update().where(api_keys_table.c.id == key_id)
                           .where(api_keys_table.c.revoked_at.is_(None)).values(revoked_at=now()))
    if res.rowcount == 0:
        raise NotFound(f"no active key {key_id!r}: see `aigc keys list`")


def keys_required(ws: Workspace) -> bool:
    with ws.engine.connect() as conn:
        return conn.execute(sa.select(api_keys_table.c.id).where(api_keys_table.c.revoked_at.is_(None))).first() is not None


def verify(ws: Workspace, key: str) -> str | None:
    """The id of the active key ``key`` is, or None."""
    digest = _hash(key)
    with ws.engine.connect() as conn:
        row = conn.execute(sa.select(api_keys_table.c.id, api_keys_table.c.hash)
                           .where(api_keys_table.c.hash == digest)
                           .where(api_keys_table.c.revoked_at.is_(None))).first()
    if row is None or not hmac.compare_digest(row.hash, digest):
        return None
    return row.id
