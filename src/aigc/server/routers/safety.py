"""Safety routes: ``/v1/moderations`` in OpenAI's shape, ``/api/policy`` (the workspace policy:
read it, replace it), ``/api/pii/scan`` and ``/api/pii/redact``.

Moderation runs here, in the server process (a policy check is a few hundred microseconds of
CPU, not a model), in the thread pool so a long text does not hold up the event loop; each input
is one audit row (its verdict and categories, a redacted excerpt), written before the answer."""

from __future__ import annotations

import uuid
from typing import Any

from fastapi import APIRouter, Request
from starlette.concurrency import run_in_threadpool

from aigc.errors import InvalidInput
from aigc.server.common import shared
from aigc.server.schemas import ModerationRequest, PiiRequest

router = APIRouter(tags=["safety"])


def _ws(request: Request):
    return shared(request)["ws"]


@router.post("/v1/moderations")
async def moderations(body: ModerationRequest, request: Request) -> dict[str, Any]:
    from aigc.safety.guard import guard_for
    from aigc.safety.moderation import moderate

    ws = _ws(request)
    texts = [body.input] if isinstance(body.input, str) else body.input
    request_id = "modr-" + uuid.uuid4().hex[:24]

    def run() -> tuple[str, list[dict[str, Any]]]:
        from aigc.provenance import audit

        policy = guard_for(ws).policy  # what the rails use: the last good policy while a hand edit breaks it
        verdicts = [moderate(t, policy) for t in texts]
        audit.record_many(ws, [_audit_row(request_id, policy.version, t, m) for t, m in zip(texts, verdicts)])
        return policy.version, [m.to_openai() for m in verdicts]

    version, results = await run_in_threadpool(run)
    return {"id": request_id, "model": body.model or f"aigc-policy-{version}", "results": results}


def _audit_row(request_id: str, version: str, text: str, m: Any) -> dict[str, Any]:
    """A moderated input's audit row: the verdict, the categories on, its PII by type, the rules."""
    entities: dict[str, int] = {}
    for e in m.entities:
        entities[e.type] = entities.get(e.type, 0) + 1
    return {"path": "moderation", "decision": "block" if m.blocked else "flag" if m.flagged else "allow",
            "text": text, "policy_version": version, "request_id": request_id,
            "categories": [c for c, on in m.categories.items() if on], "entity_counts": entities,
            "rule_ids": m.rule_ids}


@router.get("/api/policy")
def get_policy(request: Request) -> dict[str, Any]:
    from aigc.safety.policy import workspace_policy

    ws = _ws(request)
    policy = workspace_policy(ws)
    return {"version": policy.version, "source": "workspace" if (ws.root / "policy.yaml").exists() else "default",
            "policy": policy.to_dict(), "yaml": policy.dumps()}


@router.put("/api/policy")
async def put_policy(request: Request) -> dict[str, Any]:
    """Replace the workspace policy with the body (YAML or JSON text). A policy that does not
    validate is a 400 naming the problem, and the one in force stays."""
    from aigc.safety.policy import save_workspace_policy

    raw = await request.body()
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError:
        raise InvalidInput("the policy is not UTF-8 text: send it as UTF-8") from None
    if not text.strip():
        raise InvalidInput("the policy is empty: send the YAML or JSON of a policy (GET /api/policy shows one)")
    policy = await run_in_threadpool(save_workspace_policy, _ws(request), text)
    return {"version": policy.version, "policy": policy.to_dict()}


def _pii(body: PiiRequest, request: Request, redact: bool) -> dict[str, Any]:
    from aigc.safety.pii import Scanner
    from aigc.safety.policy import workspace_key

    texts = [body.text] if isinstance(body.text, str) else body.text
    key = workspace_key(_ws(request)) if redact and body.operator in ("hash", "pseudonym") else None
    scanner = Scanner(entities=body.entities, key=key)
    items = []
    for t in texts:
        if redact:
            red = scanner.redact(t, body.operator)
            items.append({"text": red.text, "entities": [e.to_dict() for e in red.entities]})
        else:
            items.append({"text": t, "entities": [e.to_dict() for e in scanner.scan(t)]})
    return {"results": items}


@router.post("/api/pii/scan")
async def pii_scan(body: PiiRequest, request: Request) -> dict[str, Any]:
    return await run_in_threadpool(_pii, body, request, False)


@router.post("/api/pii/redact")
async def pii_redact(body: PiiRequest, request: Request) -> dict[str, Any]:
    return await run_in_threadpool(_pii, body, request, True)
