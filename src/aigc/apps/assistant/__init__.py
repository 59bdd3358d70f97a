"""The customer-service assistant: a knowledge base of the company's FAQ and documents, hybrid
retrieval, answers with citations, and a hand-off to a person when it is unsure.

    from aigc.apps import assistant
    assistant.kb_add("help", ["faq.csv", "returns-policy.md", "保修说明.txt"])
    reply = assistant.ask("help", "东西坏了怎么保修？")
    reply["answer"], reply["citations"], reply["handoff"], reply["confidence"]
    assistant.handoffs()                              # the queue of conversations for a person

Modules: :mod:`.kb` (readers, chunks, the store, incremental re-ingest), :mod:`.retrieval`
(multilingual-e5 vectors, BM25 over jieba tokens, fusion), :mod:`.confidence` (whether the base
answers a question, calibrated), :mod:`.answer` ("did you mean", answers, citations, settings),
:mod:`.handoff` (the queue and its webhook).
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from aigc.errors import InvalidInput

_assistants: dict[tuple, Any] = {}
_lock = threading.Lock()


def _ws(workspace: Any):
    from aigc import open_workspace

    return open_workspace(workspace)


def kb_add(name: str, paths: Sequence[str | Path], *, workspace: Any = None,
           progress: Callable[[str, int, int], None] | None = None, **options: Any) -> dict[str, Any]:
    """Ingest files into knowledge base ``name`` (created if new): FAQ tables, Markdown, text, HTML,
    PDF. Unchanged files are skipped; a failed ingest leaves the knowledge base as it was."""
    from aigc.apps.assistant import kb

    return kb.add(_ws(workspace), name, list(paths), progress=progress, **options)


def kb_list(*, workspace: Any = None) -> list[dict[str, Any]]:
    from aigc.apps.assistant import kb

    return kb.list_kbs(_ws(workspace))


def kb_info(name: str, *, workspace: Any = None) -> dict[str, Any]:
    from aigc.apps.assistant import kb

    return kb.info(_ws(workspace), name)


def kb_chunks(name: str, *, doc: str | None = None, offset: int = 0, limit: int = 50,
              workspace: Any = None) -> list[dict[str, Any]]:
    from aigc.apps.assistant import kb

    return kb.chunks(_ws(workspace), name, doc=doc, offset=offset, limit=limit)


def kb_remove(name: str, doc: str | None = None, *, workspace: Any = None) -> None:
    """Remove one document of a knowledge base, or (``doc=None``) the whole knowledge base."""
    from aigc.apps.assistant import kb

    from aigc.apps.assistant.answer import settings_path

    ws = _ws(workspace)
    if doc is None:
        kb.delete(ws, name)
        ws.delete_artifact("assistant", settings_path(ws, name, fetch=False).name)  # the store's copy too
    else:
        kb.remove_document(ws, name, doc)


def search(name: str, query: str, *, k: int = 10, mode: str = "fusion", workspace: Any = None) -> list[dict]:
    from aigc.apps.assistant import kb

    hits = kb.load(_ws(workspace), name).search(query, k=k, mode=mode)
    return [{"rank": h.rank, "score": round(float(h.score), 4), "cosine": round(float(h.vector), 4),
             "bm25": round(float(h.bm25), 4), **{k2: h.chunk.get(k2) for k2 in ("chunk_id", "doc", "title", "text")}}
            for h in hits]


def assistant_for(name: str, *, workspace: Any = None, mode: str | None = None, model: str | None = None):
    """The assistant of knowledge base ``name`` (kept per process while the base and its settings
    are unchanged)."""
    from aigc.apps.assistant import kb
    from aigc.apps.assistant.answer import Assistant, settings_path

    ws = _ws(workspace)
    meta = kb.kb_path(ws, name) / kb.META
    settings = settings_path(ws, name)
    stamp = tuple((p.stat().st_ino, p.stat().st_mtime_ns) if p.exists() else None for p in (meta, settings))
    key = (str(Path(ws.root).resolve()), name, mode, model)
    with _lock:
        cached = _assistants.get(key)
        if cached is None or cached[0] != stamp:
            cached = (stamp, Assistant(ws, name, mode=mode, model=model))
            _assistants[key] = cached
        return cached[1]


def ask(name: str, question: str, *, history: Sequence[dict[str, Any]] = (), workspace: Any = None,
        mode: str | None = None, model: str | None = None) -> dict[str, Any]:
    """One turn: ``{"answer", "citations": [{"n", "doc", "chunk_id", "score", "text", "quote"}],
    "handoff", "clarify", "confidence", ...}``."""
    return assistant_for(name, workspace=workspace, mode=mode, model=model).ask(question, history)


def configure(name: str, *, workspace: Any = None, **settings: Any) -> dict[str, Any]:
    """Set the assistant's ``mode`` (auto | faq | extractive | generate), ``model``, ``webhook``."""
    from aigc.apps.assistant.answer import configure as _configure

    return _configure(_ws(workspace), name, **settings)


def read_questions(path: str | Path) -> list[dict[str, Any]]:
    """Labelled questions (JSONL): ``{"query", "kind"}`` where kind ``out_of_scope`` means the
    knowledge base cannot answer it (``handoff`` rows are skipped: they never reach retrieval)."""
    rows = []
    for i, line in enumerate(Path(path).read_text("utf-8").splitlines(), 1):
        if line.strip():
            try:
                row = json.loads(line)
            except json.JSONDecodeError as e:
                raise InvalidInput(f"{Path(path).name} line {i} is not JSON: {e.msg}") from None
            if not isinstance(row, dict) or not isinstance(row.get("query"), str):
                raise InvalidInput(f"{Path(path).name} line {i}: each line is {{\"query\": text, \"kind\": ...}}")
            rows.append(row)
    return rows


def calibrate(name: str, questions: str | Path | Sequence[dict[str, Any]], *, precision: float = 0.9,
              workspace: Any = None, save: bool = True) -> dict[str, Any]:
    """Fit the confidence model of knowledge base ``name`` on labelled questions (answerable ones and
    ``out_of_scope`` ones) so that answered questions are right at least ``precision`` of the time;
    saved in the assistant's settings (``save``)."""
    from aigc.apps.assistant.answer import configure as _configure
    from aigc.apps.assistant.confidence import fit_calibration
    from aigc.apps.assistant.handoff import wants_person

    rows = read_questions(questions) if isinstance(questions, (str, Path)) else list(questions)
    rows = [r for r in rows if r.get("kind") != "handoff" and not wants_person(r["query"])]
    a = assistant_for(name, workspace=workspace)
    feats = np.stack([a.retrieve(r["query"])[1] for r in rows]) if rows else np.zeros((0, 2))
    answerable = np.array([r.get("kind") != "out_of_scope" for r in rows])
    cal = fit_calibration(feats, answerable, precision=precision)
    cal["n"] = len(rows)
    if save:
        _configure(_ws(workspace), name, calibration=cal)
    return cal


def handoffs(kb: str | None = None, *, status: str | None = "open", limit: int = 100,
             workspace: Any = None) -> list[dict[str, Any]]:
    from aigc.apps.assistant.handoff import list_handoffs

    return list_handoffs(_ws(workspace), kb, status, limit)


def close_handoff(handoff_id: int, *, workspace: Any = None) -> None:
    from aigc.apps.assistant.handoff import close_handoff as _close

    _close(_ws(workspace), handoff_id)
