"""Safety: one layer every path goes through (ingest, training, generation, the engine, the
server, the logs), configured once per workspace by its policy.

``normalize`` (the one normalisation every check reads through, with an offset map back),
``pii`` (recognizers and operators), ``policy`` (the workspace policy: categories, term lists,
PII actions per path, thresholds), ``moderation``, ``rails`` (input and streaming output rails),
``copyguard`` (the index of training text that says how much of an output is copied).

Core: nothing here imports a surface (server, CLI) or the engine.
"""

from __future__ import annotations

from typing import Any


def scan(text: str, **kw: Any):
    """The PII entities in ``text`` (offsets into it); see :func:`aigc.safety.pii.scan`."""
    from aigc.safety.pii import scan as _scan

    return _scan(text, **kw)


def redact(text: str, operator: Any = "replace", **kw: Any):
    """``text`` with its PII handled by ``operator``; see :func:`aigc.safety.pii.redact`."""
    from aigc.safety.pii import redact as _redact

    return _redact(text, operator, **kw)


__all__ = ["scan", "redact"]
