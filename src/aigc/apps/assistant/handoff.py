"""Hand-offs: a conversation passed to a person, asked for ("转人工", "human agent") or decided by
the assistant (low confidence after asking back once, or a blocked answer). A hand-off is a row of
the catalog's ``handoffs`` table, its conversation and question redacted with the policy's log
operators, and, when the knowledge base has a webhook, a POST of that row (on a thread; the answer,
"200" or the error, is kept on the row)."""

from __future__ import annotations

import json
import re
import threading
import unicodedata
from collections.abc import Mapping, Sequence
from typing import Any

from aigc.workspace import Workspace, handoffs_table, now

# Requests for a person, matched on the normalised question (NFKC, lower case, no spaces).
_HANDOFF = re.compile(
    r"转人工|人工客服|人工服务|找人工|接人工|要人工|真人客服|找真人|真人|客服人员|人工坐席|投诉.*人|"
    r"human(agent|being|please)?|realperson|liveagent|agentplease|speak(to|with)(a|an|some)|talkto(a|an|some)|"
    r"representative|operator|customerservice(agent|rep)|areal(person|human)")
_NOT_HANDOFF = re.compile(r"人工智能|artificialintelligence|humanhair")

def wants_person(question: str) -> bool:
    norm = re.sub(r"\s+", "", unicodedata.normalize("NFKC", question).lower())
    return bool(_HANDOFF.search(norm)) and not _NOT_HANDOFF.search(norm)


def record_handoff(ws: Workspace, kb: str, question: str, history: Sequence[Mapping[str, Any]], reason: str,
                   conf: float | None, webhook: str | None = None) -> dict[str, Any]:
    """A hand-off row (text redacted with the policy's log operators); its webhook POST on a thread."""
    from aigc.safety.guard import guard_for

    guard = guard_for(ws)
    ops = guard.policy.pii_operators("log")
    red = lambda t: guard.scanner.redact(t, ops).text  # noqa: E731
    turns = [{"role": t["role"], "content": red(t["content"])} for t in history] + \
        [{"role": "user", "content": red(question)}]
    row = {"created_at": now(), "kb": kb, "reason": reason, "question": red(question),
           "conversation": json.dumps(turns, ensure_ascii=False), "confidence": conf, "status": "open"}
    with ws.engine.begin() as conn:
        row["id"] = conn.execute(handoffs_table.insert().values(**row)).inserted_primary_key[0]
    if webhook:
        threading.Thread(target=_deliver, args=(ws, row, webhook), daemon=True, name="handoff-webhook").start()
    return row


def _deliver(ws: Workspace, row: dict[str, Any], url: str) -> None:
    from aigc.apps import post_json

    status = post_json(url, {**row, "conversation": json.loads(row["conversation"]), "event": "handoff"})
    with ws.engine.begin() as conn:
        conn.execute(handoffs_table.update().where(handoffs_table.c.id == row["id"]).values(delivered=status))


def list_handoffs(ws: Workspace, kb: str | None = None, status: str | None = "open", limit: int = 100) -> list[dict]:
    import sqlalchemy as sa

    q = sa.select(handoffs_table).order_by(handoffs_table.c.id.desc()).limit(limit)
    if kb:
        q = q.where(handoffs_table.c.kb == kb)
    if status:
        q = q.where(handoffs_table.c.status == status)
    with ws.engine.connect() as conn:
        rows = [dict(r) for r in conn.execute(q).mappings()]
    for r in rows:
        r["conversation"] = json.loads(r["conversation"] or "[]")
    return rows


def close_handoff(ws: Workspace, handoff_id: int) -> None:
    from aigc.errors import NotFound

    with ws.engine.begin() as conn:
        done = conn.execute(handoffs_table.update().where(handoffs_table.c.id == handoff_id)
                            .values(status="closed")).rowcount
    if not done:
        raise NotFound(f"no hand-off {handoff_id}: `aigc assistant handoffs` lists them")
