"""Readers for raw text sources: ``.txt``, ``.csv``, ``.tsv``, ``.jsonl``, ``.parquet``.

A reader turns a file into a :class:`RawSource`: raw (uncleaned) text plus condition values
per record, and the facts the card needs (format, encoding, mode, columns). This module knows
file formats and encodings. It knows nothing about cleaning, dedupe, splits or the workspace.

Encoding policy when none is given: UTF-8 (a leading BOM is accepted), then GB18030 (a superset
of GBK and GB2312, the usual encodings of Chinese files exported from Windows tools). A file with
NUL bytes in its first 8 KiB is refused as binary, because GB18030 maps almost any byte string
to *some* characters and would otherwise accept random bytes.
"""

from __future__ import annotations

import codecs
import csv
import io
import itertools
import json
import math
import re
import sys
import unicodedata
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from aigc.errors import InvalidInput

SUPPORTED_SUFFIXES: tuple[str, ...] = (".txt", ".csv", ".tsv", ".jsonl", ".parquet")

# Tried in order when the column to read as text is not named.
DEFAULT_TEXT_COLUMNS: tuple[str, ...] = ("text", "review", "content", "description", "copy", "body")

BINARY_SNIFF_BYTES = 8192
# GB18030 decodes nearly any byte soup; a real Chinese file has almost no control, private-use
# or unassigned characters. Above this fraction we call the GB18030 reading a false positive.
_GB18030_JUNK_LIMIT = 0.02


@dataclass
class RawSource:
    """What a reader found. ``records`` are (raw text, {cond column: raw value}) in file order."""

    path: Path
    format: str  # txt | csv | tsv | jsonl | parquet
    encoding: str  # the codec actually used ("utf-8" for parquet, whose strings are UTF-8 by spec)
    mode: Literal["records", "corpus"]
    text_column: str | None
    cond_columns: list[str]
    records: list[tuple[str, dict[str, str]]] = field(default_factory=list)


# -- files and bytes -----------------------------------------------------------------------


def check_file(path: str | Path) -> Path:
    """Resolve ``path`` and refuse what cannot be read: missing, a folder, empty, unknown suffix."""
    p = Path(path).expanduser().resolve()  # absolute, so the card says where the data came from
    if not p.exists():
        raise InvalidInput(f"no such file: {p}: check the path")
    if p.is_dir():
        raise InvalidInput(f"{p} is a folder, not a file: pass one {'/'.join(SUPPORTED_SUFFIXES)} file")
    suffix = p.suffix.lower()
    if suffix not in SUPPORTED_SUFFIXES:
        raise InvalidInput(
            f"unsupported file type {p.suffix or '(no suffix)'!r} for {p}: "
            f"supported are {', '.join(SUPPORTED_SUFFIXES)}"
        )
    if p.stat().st_size == 0:
        raise InvalidInput(f"{p} is empty (0 bytes): nothing to ingest")
    return p


def _check_codec(encoding: str) -> str:
    try:
        return codecs.lookup(encoding).name
    except LookupError:
        raise InvalidInput(
            f"unknown encoding {encoding!r}: pass a Python codec name such as utf-8, gb18030, big5 or latin-1"
        ) from None


def decode_bytes(data: bytes, path: Path, encoding: str | None = None) -> tuple[str, str]:
    """Decode a whole file; return (text, codec name used). See the module docstring for the policy."""
    if encoding is not None:
        codec = _check_codec(encoding)
        try:
            return data.decode(codec), codec
        except UnicodeDecodeError as e:
            raise InvalidInput(
                f"{path}: cannot decode byte 0x{data[e.start]:02x} at offset {e.start} as {codec}: "
                "pass the right --encoding, or leave it out to auto-detect"
            ) from None

    if b"\x00" in data[:BINARY_SNIFF_BYTES]:
        raise InvalidInput(
            f"{path} is a binary file, not text (NUL bytes in its first {BINARY_SNIFF_BYTES // 1024} KiB): "
            "pass a text file, or --encoding utf-16 if it is UTF-16 text"
        )

    # Strip the BOM ourselves rather than using 'utf-8-sig' so the reported offset counts it.
    bom = len(codecs.BOM_UTF8) if data.startswith(codecs.BOM_UTF8) else 0
    try:
        return data[bom:].decode("utf-8"), "utf-8-sig" if bom else "utf-8"
    except UnicodeDecodeError as e:
        utf8_error = e
    try:
        text = data.decode("gb18030")
    except UnicodeDecodeError:
        text = None
    if text is not None and _looks_like_text(text):
        return text, "gb18030"
    offset = utf8_error.start + bom
    raise InvalidInput(
        f"{path}: cannot decode byte 0x{data[offset]:02x} at offset {offset} as UTF-8 (or GB18030): "
        "pass --encoding (e.g. --encoding big5 or --encoding latin-1)"
    )


def _looks_like_text(text: str) -> bool:
    """False when too many characters are controls, private-use or unassigned (a binary false positive)."""
    sample = text[:100_000]
    if not sample:
        return True
    junk = 0
    for ch in set(sample):
        cat = unicodedata.category(ch)
        if (cat == "Cc" and ch not in "\t\n\r\f") or cat in ("Co", "Cn"):
            junk += sample.count(ch)
    return junk / len(sample) <= _GB18030_JUNK_LIMIT


def _read_text(path: Path, encoding: str | None) -> tuple[str, str]:
    text, used = decode_bytes(path.read_bytes(), path, encoding)
    if not text.replace("\ufeff", "").strip():
        raise InvalidInput(f"{path} holds only whitespace: nothing to ingest")
    return text, used


# -- values and columns --------------------------------------------------------------------


def to_str(value: Any) -> str:
    """A cell as text: None/NaN -> '', booleans as JSON spells them, containers as JSON."""
    if value is None:
        return ""
    if isinstance(value, str):
        return value
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float) and math.isnan(value):
        return ""
    if isinstance(value, (dict, list)):
        return json.dumps(value, ensure_ascii=False)
    return str(value)


def clean_header(name: Any) -> str:
    return to_str(name).replace("\ufeff", "").strip()


def _shown(names: list[str]) -> str:
    """Column names for a message: each cut to 30 characters (a data row read as a header has long ones)."""
    return ", ".join(repr(c if len(c) <= 30 else c[:29] + "…") for c in names) or "none"


def pick_columns(
    path: Path, available: list[str], text_column: str | None, cond_columns: list[str]
) -> str:
    """Validate the requested columns against ``available``; return the text column to use."""
    shown = _shown(available)
    if text_column is None:
        text_column = next((c for c in DEFAULT_TEXT_COLUMNS if c in available), None)
        if text_column is None:
            raise InvalidInput(
                f"{path}: no text column found among the columns {shown}: pass --text-column NAME"
            )
    elif text_column not in available:
        raise InvalidInput(
            f"{path}: no column {text_column!r} (available: {shown}): pass one of them as --text-column"
        )
    for col in cond_columns:
        if col not in available:
            raise InvalidInput(
                f"{path}: no condition column {col!r} (available: {shown}): fix --cond-columns"
            )
    return text_column


# A header names columns; a data row holds values. These mark a cell as a value: a number, a
# sentence (its punctuation), or more characters than a column name has.
_SENTENCE_PUNCTUATION = re.compile(r"[。！？，；：、]|[.!?;,:](?:\s|$)")
_LONGEST_NAME = 40


def data_like_cell(header: list[str], rows: list[list[str]]) -> str | None:
    """Why the header row reads like a data row (a cell that looks like a value), or None.

    A cell is a value when it is a number, has sentence punctuation, is longer than a column name
    would be, or turns up again as a value of its own column in the rows below.
    """
    for i, cell in enumerate(header):
        if not cell:
            continue
        if _is_number(cell):
            return f"{_shown([cell])} is a number"
        if len(cell) > _LONGEST_NAME or _SENTENCE_PUNCTUATION.search(cell):
            return f"{_shown([cell])} reads like text"
        if any(i < len(row) and row[i].strip() == cell for row in rows):
            return f"{_shown([cell])} is also a value in the rows below it"
    return None


def _is_number(text: str) -> bool:
    try:
        return math.isfinite(float(text.replace(",", "")))  # "nan" or "inf" could be names
    except ValueError:
        return False


def check_columns(columns: Any) -> list[str]:
    """``--columns a,b,c`` (a string, or a list from Python) as a list of distinct, non-empty names."""
    names = columns.split(",") if isinstance(columns, str) else list(columns)
    names = [clean_header(c) for c in names]
    if not names or "" in names:
        raise InvalidInput(
            f"invalid --columns {columns!r}: give every column a name, e.g. --columns title,author,poem"
        )
    repeated = sorted({c for c in names if names.count(c) > 1})
    if repeated:
        raise InvalidInput(
            f"invalid --columns: {repeated[0]!r} is named twice: give each column its own name"
        )
    return names


# -- readers -------------------------------------------------------------------------------


def _raise_csv_field_limit() -> None:
    # The default limit (128 KiB) rejects long reviews or documents kept in one cell. The limit is
    # a C long, so sys.maxsize overflows on Windows: halve until accepted.
    limit = sys.maxsize
    while True:
        try:
            csv.field_size_limit(limit)
            return
        except OverflowError:
            limit //= 2


def _read_delimited(path: Path, fmt: str, text_column: str | None, cond_columns: list[str],
                    encoding: str | None, header: bool, columns: list[str] | None) -> RawSource:
    text, used = _read_text(path, encoding)
    _raise_csv_field_limit()
    reader = csv.reader(io.StringIO(text, newline=""), delimiter="\t" if fmt == "tsv" else ",")
    try:
        first = next(reader)
        if columns is not None and len(columns) != len(first):
            raise InvalidInput(
                f"{path}: --columns names {len(columns)} columns but the first row has {len(first)} "
                f"fields: name every column, in order"
            )
        # Without a header the first row is data, and columns are numbered from 1 as `cut -f` does.
        numbered = [str(i + 1) for i in range(len(first))]
        names = columns or ([clean_header(h) for h in first] if header else numbered)
        # The first occurrence of a repeated header name wins, as with csv.DictReader lookups.
        index: dict[str, int] = {}
        for i, name in enumerate(names):
            index.setdefault(name, i)
        try:
            text_col = pick_columns(path, list(index), text_column, cond_columns)
        except InvalidInput as e:
            if not header or columns is not None:
                raise
            below = [row for _, row in zip(range(200), reader)]
            why = data_like_cell([clean_header(h) for h in first], below)
            if why is None:
                raise
            raise InvalidInput(
                f"{e}; the first row looks like data, not a header ({why}): if the file has no header row, "
                "pass --no-header (columns are then named 1, 2, 3, ...) or name them with --columns"
            ) from None
        ti = index[text_col]
        ci = [(c, index[c]) for c in cond_columns]
        records: list[tuple[str, dict[str, str]]] = []
        for row in itertools.chain([] if header else [first], reader):
            if not row:  # a blank line between rows
                continue
            n = len(row)
            records.append((row[ti] if ti < n else "", {c: row[i] if i < n else "" for c, i in ci}))
    except csv.Error as e:
        raise InvalidInput(f"{path}: malformed {fmt.upper()} near line {reader.line_num}: {e}") from None
    return RawSource(path, fmt, used, "records", text_col, list(cond_columns), records)


def _read_jsonl(path: Path, text_column: str | None, cond_columns: list[str],
                encoding: str | None) -> RawSource:
    text, used = _read_text(path, encoding)
    objects: list[dict[str, Any]] = []
    seen: dict[str, None] = {}  # columns in order of first appearance
    # Split on '\n' only: str.splitlines would also break on U+2028, which JSON allows raw in strings.
    for lineno, line in enumerate(text.split("\n"), start=1):
        line = line.strip().lstrip("\ufeff")
        if not line:
            continue
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as e:
            raise InvalidInput(
                f"{path}: line {lineno} is not valid JSON ({e.msg}, column {e.colno}): "
                "fix or remove that line"
            ) from None
        if not isinstance(obj, dict):
            raise InvalidInput(
                f"{path}: line {lineno} holds a JSON {type(obj).__name__}, not an object: "
                'write one object per line, e.g. {"text": "..."}'
            )
        obj = {clean_header(k): v for k, v in obj.items()}
        seen.update(dict.fromkeys(obj))
        objects.append(obj)
    text_col = pick_columns(path, list(seen), text_column, cond_columns)
    records = [(to_str(o.get(text_col)), {c: to_str(o.get(c)) for c in cond_columns}) for o in objects]
    return RawSource(path, "jsonl", used, "records", text_col, list(cond_columns), records)


def _read_parquet(path: Path, text_column: str | None, cond_columns: list[str]) -> RawSource:
    import pyarrow as pa  # imported here: only parquet needs it, and it is slow to import
    import pyarrow.parquet as pq

    try:
        table = pq.read_table(path)
    except (pa.ArrowException, OSError) as e:
        raise InvalidInput(f"{path}: not a readable Parquet file ({e}): check the file") from None
    names = [clean_header(n) for n in table.column_names]
    text_col = pick_columns(path, names, text_column, cond_columns)

    def column(name: str) -> list[str]:
        return [to_str(v) for v in table.column(names.index(name)).to_pylist()]

    texts = column(text_col)
    conds = {c: column(c) for c in cond_columns}
    records = [(t, {c: conds[c][i] for c in cond_columns}) for i, t in enumerate(texts)]
    return RawSource(path, "parquet", "utf-8", "records", text_col, list(cond_columns), records)


def _read_txt(path: Path, lines: bool, encoding: str | None) -> RawSource:
    text, used = _read_text(path, encoding)
    if text.startswith("\ufeff"):  # only possible with an explicit --encoding utf-8
        text = text[1:]
    if not lines:
        return RawSource(path, "txt", used, "corpus", None, [], [(text, {})])
    # Normalise line ends first so '\r' alone (old Mac files) also separates records.
    rows = text.replace("\r\n", "\n").replace("\r", "\n").split("\n")
    records: list[tuple[str, dict[str, str]]] = [(r, {}) for r in rows if r.strip()]
    return RawSource(path, "txt", used, "records", None, [], records)


def read_source(
    path: str | Path,
    *,
    lines: bool = False,
    text_column: str | None = None,
    cond_columns: list[str] | tuple[str, ...] = (),
    encoding: str | None = None,
    header: bool | None = None,
    columns: Sequence[str] | str | None = None,
) -> RawSource:
    """Read any supported file into a :class:`RawSource`; every user mistake raises InvalidInput.

    CSV and TSV: ``header`` says whether the first row names the columns; ``columns`` names them.
    As in pandas, ``columns`` alone means the file has no header row (``header=True`` with
    ``columns`` renames a header's columns instead).
    """
    p = check_file(path)
    fmt = p.suffix.lower().lstrip(".")
    cond = [c.strip() for c in cond_columns]
    if (header is not None or columns is not None) and fmt not in ("csv", "tsv"):
        raise InvalidInput(f"--no-header/--columns apply to .csv/.tsv files only, not {p.name}: drop them")
    names = check_columns(columns) if columns is not None else None
    has_header = header if header is not None else names is None
    if fmt == "txt":
        if text_column is not None or cond:
            raise InvalidInput(
                f"{p} is plain text, so --text-column/--cond-columns do not apply: "
                "drop them, or pass a .csv/.tsv/.jsonl/.parquet file"
            )
        return _read_txt(p, lines, encoding)
    if lines:
        raise InvalidInput(f"--lines applies to .txt files only, not {p.name}: drop --lines")
    if text_column is not None:
        text_column = text_column.strip()
    if fmt in ("csv", "tsv"):
        return _read_delimited(p, fmt, text_column, cond, encoding, has_header, names)
    if fmt == "jsonl":
        return _read_jsonl(p, text_column, cond, encoding)
    if encoding is not None:
        raise InvalidInput(f"{p} is Parquet, whose strings are always UTF-8: drop --encoding")
    return _read_parquet(p, text_column, cond)
