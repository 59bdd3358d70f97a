"""`aigc kb add|list|show|chunks|rm|search|ask|calibrate|set` (knowledge bases and the assistant that
answers from them) and `aigc assistant handoffs|close` (the queue of conversations for a person)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from aigc.cli.common import JsonOpt, ThreadsOpt, WorkspaceOpt, err, guard, out, threads

kb_app = typer.Typer(help="Knowledge bases for the customer-service assistant: FAQ tables, Markdown, text, HTML, "
                          "PDF; hybrid search; answers with citations.", no_args_is_help=True)
assistant_app = typer.Typer(help="The assistant's hand-off queue.", no_args_is_help=True)

NameArg = Annotated[str, typer.Argument(help="Knowledge base name.")]


@kb_app.command("add")
@guard
def add(
    name: NameArg,
    files: Annotated[list[Path] | None, typer.Argument(
        help="Files: FAQ tables (.csv .tsv .jsonl .xlsx), .md, .txt, .html, .pdf. Unchanged files are skipped; "
             "none: re-embed the knowledge base (after an embedder change).", show_default=False)] = None,
    question_column: Annotated[str | None, typer.Option(help="A FAQ table's question column [default: found "
                                                             "by name: question, 问题...].", show_default=False)] = None,
    answer_column: Annotated[str | None, typer.Option(help="A FAQ table's answer column [default: answer, 答案...].",
                                                      show_default=False)] = None,
    workspace: WorkspaceOpt = None,
    n_threads: ThreadsOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Add or update documents; a failed file leaves the knowledge base as it was."""
    from aigc.apps import assistant

    threads(n_threads)

    def progress(doc: str, done: int, total: int) -> None:
        err.print(f"{name}: {done}/{total} documents ({doc})")

    summary = assistant.kb_add(name, [str(f) for f in files or []], workspace=workspace, progress=progress,
                               question_column=question_column, answer_column=answer_column)
    if as_json:
        out.print_json(json.dumps(summary, ensure_ascii=False))
        return
    out.print(f"{name}: {summary['documents']} documents, {summary['chunks']} chunks "
              f"(added {len(summary['added'])}, replaced {len(summary['replaced'])}, "
              f"unchanged {len(summary['unchanged'])})")


@kb_app.command("list")
@guard
def list_(workspace: WorkspaceOpt = None, as_json: JsonOpt = False) -> None:
    """The knowledge bases of the workspace."""
    from aigc.apps import assistant

    rows = assistant.kb_list(workspace=workspace)
    if as_json:
        out.print_json(json.dumps(rows, ensure_ascii=False))
        return
    table = Table("name", "documents", "chunks", "updated")
    for r in rows:
        table.add_row(r["name"], str(r.get("documents", "")), str(r.get("chunks", "")), str(r.get("updated", "")))
    out.print(table)


@kb_app.command("show")
@guard
def show(name: NameArg, workspace: WorkspaceOpt = None, as_json: JsonOpt = False) -> None:
    """A knowledge base's documents and the assistant's settings."""
    from aigc import open_workspace
    from aigc.apps import assistant
    from aigc.apps.assistant.answer import settings

    info = assistant.kb_info(name, workspace=workspace)
    info["assistant"] = settings(open_workspace(workspace), name)
    out.print_json(json.dumps(info, ensure_ascii=False)) if as_json else out.print(
        json.dumps(info, ensure_ascii=False, indent=2))


@kb_app.command("chunks")
@guard
def chunks(
    name: NameArg,
    doc: Annotated[str | None, typer.Option(help="Only this document.", show_default=False)] = None,
    offset: Annotated[int, typer.Option(min=0, help="Skip this many chunks.")] = 0,
    limit: Annotated[int, typer.Option(min=1, help="Show at most this many.")] = 20,
    workspace: WorkspaceOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """The chunk viewer: what the assistant retrieves and cites."""
    from aigc.apps import assistant

    rows = assistant.kb_chunks(name, doc=doc, offset=offset, limit=limit, workspace=workspace)
    if as_json:
        out.print_json(json.dumps(rows, ensure_ascii=False))
        return
    table = Table("chunk", "title", "text")
    for r in rows:
        text = r["text"]
        table.add_row(r["chunk_id"], r.get("title") or "-", text[:160] + ("..." if len(text) > 160 else ""))
    out.print(table)


@kb_app.command("rm")
@guard
def rm(
    name: NameArg,
    doc: Annotated[str | None, typer.Option(help="Remove only this document [default: the whole knowledge base].",
                                            show_default=False)] = None,
    workspace: WorkspaceOpt = None,
) -> None:
    """Remove a document, or the knowledge base."""
    from aigc.apps import assistant

    assistant.kb_remove(name, doc, workspace=workspace)
    out.print(f"removed {doc + ' from ' if doc else ''}{name}")


@kb_app.command("search")
@guard
def search(
    name: NameArg,
    query: Annotated[str, typer.Argument(help="What to look for.")],
    k: Annotated[int, typer.Option(min=1, max=100, help="Hits to show.")] = 5,
    mode: Annotated[str, typer.Option(help="fusion | vector | bm25 | rrf.")] = "fusion",
    workspace: WorkspaceOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Retrieval alone: the chunks a question finds, with their scores."""
    from aigc.apps import assistant

    hits = assistant.search(name, query, k=k, mode=mode, workspace=workspace)
    if as_json:
        out.print_json(json.dumps(hits, ensure_ascii=False))
        return
    table = Table("#", "score", "cosine", "bm25", "chunk", "text")
    for h in hits:
        table.add_row(str(h["rank"]), f"{h['score']:.3f}", f"{h['cosine']:.3f}", f"{h['bm25']:.2f}", h["chunk_id"],
                      h["text"][:120])
    out.print(table)


@kb_app.command("ask")
@guard
def ask(
    name: NameArg,
    question: Annotated[str, typer.Argument(help="The customer's question.")],
    history: Annotated[Path | None, typer.Option(help="Earlier turns: a JSON list of {role, content}.",
                                                 show_default=False)] = None,
    mode: Annotated[str | None, typer.Option(help="auto | faq | extractive | generate [default: the "
                                                  "assistant's setting].", show_default=False)] = None,
    model: Annotated[str | None, typer.Option(help="The instruct model of generated answers.",
                                              show_default=False)] = None,
    workspace: WorkspaceOpt = None,
    n_threads: ThreadsOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Ask the assistant: an answer with citations, a question back, or a hand-off."""
    from aigc.apps import assistant
    from aigc.errors import InvalidInput

    threads(n_threads)
    turns = []
    if history is not None:
        try:
            turns = json.loads(Path(history).read_text("utf-8"))
        except (OSError, json.JSONDecodeError) as e:
            raise InvalidInput(f"--history {history}: {e}") from None
    reply = assistant.ask(name, question, history=turns, workspace=workspace, mode=mode, model=model)
    if as_json:
        out.print_json(json.dumps(reply, ensure_ascii=False))
        return
    out.print(reply["answer"])
    for c in reply["citations"]:
        out.print(f"[{c['n']}] {c['doc']} {c['chunk_id']}: {c['quote'][:120]}")
    if reply["handoff"]:
        err.print(f"handed off to a person ({reply['reason']})")


@kb_app.command("calibrate")
@guard
def calibrate(
    name: NameArg,
    questions: Annotated[Path, typer.Argument(help="JSONL of {query, kind}: kind out_of_scope for questions the "
                                                   "knowledge base cannot answer, anything else for ones it can.")],
    precision: Annotated[float, typer.Option(min=0.5, max=0.999, help="Answered questions right at least this "
                                                                      "often.")] = 0.9,
    workspace: WorkspaceOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Fit when the assistant answers and when it asks back or hands off, on your own questions."""
    from aigc.apps import assistant

    cal = assistant.calibrate(name, questions, precision=precision, workspace=workspace)
    out.print_json(json.dumps(cal)) if as_json else out.print(
        f"{name}: threshold {cal['threshold']:.3f} on confidence, fitted on {cal['n']} questions")


@kb_app.command("set")
@guard
def set_(
    name: NameArg,
    mode: Annotated[str | None, typer.Option(help="auto | faq | extractive | generate.", show_default=False)] = None,
    model: Annotated[str | None, typer.Option(help="The instruct model of generated answers.",
                                              show_default=False)] = None,
    webhook: Annotated[str | None, typer.Option(help="POST each hand-off here (http(s) URL; '' to stop).",
                                                show_default=False)] = None,
    workspace: WorkspaceOpt = None,
) -> None:
    """Change the assistant's settings."""
    from aigc.apps import assistant

    changes = {k: v for k, v in (("mode", mode), ("model", model), ("webhook", webhook)) if v is not None}
    if "webhook" in changes and not changes["webhook"]:
        changes["webhook"] = None
    conf = assistant.configure(name, workspace=workspace, **changes)
    out.print(json.dumps({k: v for k, v in conf.items() if k != "calibration"}, ensure_ascii=False))


@assistant_app.command("handoffs")
@guard
def handoffs(
    kb: Annotated[str | None, typer.Option("--kb", help="Only this knowledge base.", show_default=False)] = None,
    all_: Annotated[bool, typer.Option("--all", help="Closed ones too.")] = False,
    limit: Annotated[int, typer.Option(min=1, help="At most this many, newest first.")] = 50,
    workspace: WorkspaceOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Conversations waiting for a person."""
    from aigc.apps import assistant

    rows = assistant.handoffs(kb, status=None if all_ else "open", limit=limit, workspace=workspace)
    if as_json:
        out.print_json(json.dumps(rows, ensure_ascii=False))
        return
    table = Table("id", "time", "kb", "reason", "status", "question")
    for r in rows:
        table.add_row(str(r["id"]), r["created_at"][:19], r["kb"], r["reason"], r["status"], r["question"][:80])
    out.print(table)


@assistant_app.command("close")
@guard
def close(handoff_id: Annotated[int, typer.Argument(help="The hand-off's id.")], workspace: WorkspaceOpt = None) -> None:
    """Mark a hand-off as dealt with."""
    from aigc.apps import assistant

    assistant.close_handoff(handoff_id, workspace=workspace)
    out.print(f"closed hand-off {handoff_id}")
