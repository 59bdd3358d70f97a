"""Reading tables: a file -> a frame of text cells; a cell's text -> a number or a date.

:func:`read_table` reads CSV, TSV and any delimited text whatever its extension (the delimiter
sniffed among comma, tab, semicolon and pipe, or runs of whitespace), Parquet, JSONL and Excel
(.xlsx, through openpyxl) into a pandas frame of ``object`` columns holding stripped strings, with
``None`` for every missing marker. A first row is a header unless a cell of it reads like a value
(a number, a date, long text, or a value of its column below). Encodings are detected as for text
(:func:`aigc.data.sources.decode_bytes`). :func:`load_metadata_file` reads ``--metadata`` (ours or
SDV's JSON) into overrides; :func:`is_table_source` is the routing rule of ``aigc.ingest``. Kinds,
metadata and the dataset on disk are :mod:`aigc.data.tables`'.
"""

from __future__ import annotations

import csv
import datetime as dt
import io
import json
import re
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import pandas as pd

from aigc.data.sources import (DEFAULT_TEXT_COLUMNS, _raise_csv_field_limit, check_columns, clean_header,
                               data_like_cell, decode_bytes, to_str)
from aigc.errors import InvalidInput

# Cells that mean "no value", compared case-insensitively (adult writes '?', Chinese files '无').
MISSING = frozenset({"", "?", "na", "n/a", "nan", "null", "none", "-", "无"})
DELIMITERS = (",", "\t", ";", "|")
EXCEL_SUFFIXES = (".xlsx", ".xlsm")
# Read as tables when no column is a text column; any other suffix but .txt when it parses as one.
TABLE_SUFFIXES = (".csv", ".tsv", ".dat", ".parquet", ".jsonl", *EXCEL_SUFFIXES)
TEXT_OPTIONS = ("text_column", "cond_columns", "lines", "normalize", "min_length", "max_length",
                "min_cond_count")
TABLE_OPTIONS = ("table", "metadata", "drop_columns")
SNIFF_BYTES = 65536
_CONSISTENT = 0.9  # share of sampled lines that must split into the same number of fields


# -- values --------------------------------------------------------------------------------

_NUMBER = re.compile(r"[+-]?(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?")
_MAX_DIGITS = 15  # longer digit strings are codes (IDs, cards), not quantities: float64 holds 15-16


def parse_number(text: str) -> float | None:
    """The number a cell writes, or None: codes with a leading zero ('007', '02134') and digit
    strings longer than a float holds exactly are not numbers."""
    if not _NUMBER.fullmatch(text):
        return None
    digits = text.lstrip("+-")
    if len(digits) > 1 and digits[0] == "0" and digits[1].isdigit():
        return None
    if sum(c.isdigit() for c in digits.split("e")[0].split("E")[0]) > _MAX_DIGITS:
        return None
    return float(text)


def decimals_of(text: str) -> int:
    """Digits after the point that a number is written with ('1.50' -> 2, '3e-2' -> 2)."""
    mantissa, _, exp = text.lower().partition("e")
    places = len(mantissa.partition(".")[2]) - (int(exp) if exp else 0)
    return max(0, min(places, 10))


_DATES = ("%Y-%m-%d", "%Y/%m/%d", "%Y.%m.%d", "%d.%m.%Y", "%d/%m/%Y", "%m/%d/%Y", "%d-%m-%Y",
          "%m-%d-%Y", "%Y年%m月%d日")
_TIMES = ("", " %H:%M", " %H:%M:%S", " %H:%M:%S.%f", "T%H:%M", "T%H:%M:%S", "T%H:%M:%S.%f",
          "T%H:%M:%SZ", "T%H:%M:%S.%fZ")
DATE_FORMATS = tuple(d + t for d in _DATES for t in _TIMES)
DATE_SHAPE = re.compile(r"(?:\d{4}[-/.]\d{1,2}[-/.]\d{1,2}|\d{1,2}[-/.]\d{1,2}[-/.]\d{4}"
                        r"|\d{4}年\d{1,2}月\d{1,2}日)(?:[ T]\d{1,2}:\d{2}(?::\d{2}(?:\.\d+)?)?Z?)?")
EPOCH = dt.datetime(1970, 1, 1)


def parse_date(text: str, fmt: str) -> float | None:
    """Seconds since the epoch of ``text`` read with strftime format ``fmt``, or None."""
    try:
        return (dt.datetime.strptime(text, fmt) - EPOCH).total_seconds()
    except ValueError:
        return None


def format_date(seconds: float, fmt: str) -> str:
    return (EPOCH + dt.timedelta(seconds=round(seconds, 6))).strftime(fmt)


def date_formats(values: Sequence[str], column: str) -> tuple[list[str], dict[str, float]]:
    """The formats that read ``values`` (distinct, date-shaped), the most used first, and each
    value's seconds. One format when one reads them all (a day-first and a month-first reading of
    the same values: the order of :data:`DATE_FORMATS` decides); else the fewest formats that do,
    refused when a value reads differently under two of them, or under none."""
    sample = values[:200]
    candidates = [f for f in DATE_FORMATS if any(parse_date(v, f) is not None for v in sample)]
    for fmt in candidates:  # one format for all
        parsed = {v: parse_date(v, fmt) for v in values}
        if all(s is not None for s in parsed.values()):
            return [fmt], parsed  # type: ignore[return-value]
    left = [v for v in values if not any(parse_date(v, f) is not None for f in candidates)]
    candidates += [f for f in DATE_FORMATS
                   if f not in candidates and any(parse_date(v, f) is not None for v in left[:50])]
    readings = {v: {f: s for f in candidates if (s := parse_date(v, f)) is not None} for v in values}
    bad = [v for v, r in readings.items() if not r]
    if bad:
        good = next((f" (beside {v!r})" for v, r in readings.items() if r), "")
        raise InvalidInput(
            f"column {column!r} has dates that do not parse: {bad[0]!r}{good}: correct them, "
            f"or declare the column categorical in --metadata")
    chosen: list[str] = []
    uncovered = set(values)
    while uncovered:  # greedy cover: the format reading most of what is left
        best = max(candidates, key=lambda f: sum(1 for v in uncovered if f in readings[v]))
        chosen.append(best)
        uncovered = {v for v in uncovered if best not in readings[v]}
    def only(f: str) -> str:  # a value that format alone of those chosen reads
        return next((w for w in values if set(readings[w]) & set(chosen) == {f}), f)

    parsed = {}
    for v in values:
        two = [f for f in chosen if f in readings[v]]
        if len({readings[v][f] for f in two}) > 1:
            raise InvalidInput(
                f"column {column!r} mixes date formats that read {v!r} two ways, e.g. {only(two[0])!r} and "
                f"{only(two[1])!r}: write its dates in one format, or declare its datetime_format in "
                "--metadata")
        parsed[v] = readings[v][two[0]]
    return chosen, parsed


# -- files ---------------------------------------------------------------------------------


def _check(path: str | Path) -> Path:
    p = Path(path).expanduser().resolve()
    if not p.exists():
        raise InvalidInput(f"no such file: {p}: check the path")
    if p.is_dir():
        raise InvalidInput(f"{p} is a folder, not a file: pass one table file (.csv .tsv .parquet .jsonl "
                           ".xlsx ...)")
    if p.stat().st_size == 0:
        raise InvalidInput(f"{p} is empty (0 bytes): nothing to ingest")
    return p


def _fields_per_line(sample: str, delimiter: str | None) -> list[int]:
    if delimiter is None:
        return [len(line.split()) for line in sample.splitlines() if line.strip()]
    try:
        return [len(row) for row in csv.reader(io.StringIO(sample, newline=""), delimiter=delimiter) if row]
    except csv.Error:
        return []


def sniff_delimiter(sample: str, suffix: str = "") -> str | None:
    """The delimiter that splits the sampled lines most consistently into two or more fields
    (the suffix's own on a tie: tab for .tsv, comma for .csv); None for runs of whitespace; a
    comma when nothing splits (a one-column table)."""
    sample = sample[: sample.rfind("\n") + 1] or sample  # whole lines only
    preferred = "\t" if suffix == ".tsv" else ","
    best, best_score = None, None
    for d in (*DELIMITERS, None):
        counts = _fields_per_line(sample, d)
        if not counts:
            continue
        mode, n = Counter(counts).most_common(1)[0]
        share = n / len(counts)
        if mode < 2 or share < _CONSISTENT:
            continue
        score = (round(share, 2), d is not None, d == preferred, mode)
        if best_score is None or score > best_score:
            best, best_score = d, score
    return best if best_score is not None else ","


def _split_rows(text: str, delimiter: str | None, path: Path) -> list[list[str]]:
    if delimiter is None:
        return [line.split() for line in text.splitlines() if line.strip()]
    _raise_csv_field_limit()
    reader = csv.reader(io.StringIO(text, newline=""), delimiter=delimiter)
    try:
        return [row for row in reader if row and any(c.strip() for c in row)]
    except csv.Error as e:
        raise InvalidInput(f"{path}: malformed delimited text near line {reader.line_num}: {e}: "
                           "fix the quoting on that line") from None


def _looks_like_value(cell: str) -> bool:
    return parse_number(cell) is not None or DATE_SHAPE.fullmatch(cell) is not None


def has_header(first: list[str], rows: list[list[str]]) -> bool:
    """A first row is a header unless a cell of it reads like a value: a number, a date, a
    sentence or long text, or a value of its own column in the rows below."""
    cells = [clean_header(c) for c in first]
    below = [[c.strip() for c in row] for row in rows[:200]]
    return data_like_cell(cells, below) is None and not any(_looks_like_value(c) for c in cells if c)


def _frame(path: Path, rows: list[list[str]], header: bool | None, columns: list[str] | None) -> pd.DataFrame:
    """Rows of cells -> the frame: names from the header, ``columns``, or numbered 1, 2, 3..."""
    if not rows:
        raise InvalidInput(f"{path}: no rows found: check the file")
    first = rows[0]
    if header is None:
        header = columns is None and has_header(first, rows[1:])
    width = len(first)
    if columns is not None and len(columns) != width:
        raise InvalidInput(f"{path}: --columns names {len(columns)} columns but the first row has {width} "
                           "fields: name every column, in order")
    if columns is not None:
        names = columns
    elif header:
        names = [clean_header(c) or str(i + 1) for i, c in enumerate(first)]
    else:
        names = [str(i + 1) for i in range(width)]
    twice = [n for n, k in Counter(names).items() if k > 1]
    if twice:
        raise InvalidInput(f"{path}: column {twice[0]!r} is named twice in the header: rename one, "
                           "or name them all with --columns")
    body = rows[1:] if header else rows
    cells: list[list[str | None]] = [[] for _ in names]
    for i, row in enumerate(body):
        if len(row) > width and any(c.strip() for c in row[width:]):  # trailing empty fields are no data
            raise InvalidInput(
                f"{path}: row {i + 1 + bool(header)} has {len(row)} fields but the table has {width} "
                f"(e.g. {row[width]!r} past the last column): quote values that hold the delimiter, or fix "
                "the row")
        for j in range(width):
            cells[j].append(clean_cell(row[j]) if j < len(row) else None)
    frame = pd.DataFrame({n: pd.Series(c, dtype=object) for n, c in zip(names, cells)})
    frame.attrs["header"] = bool(header)
    return frame


def clean_cell(value: Any) -> str | None:
    """A cell as stripped text, None when missing (a missing marker, None, NaN)."""
    text = to_str(value).strip()
    return None if text.casefold() in MISSING else text


def _delimited(path: Path, header: bool | None, columns: list[str] | None,
               encoding: str | None) -> pd.DataFrame:
    text, used = decode_bytes(path.read_bytes(), path, encoding)
    text = text.lstrip("\ufeff")
    delimiter = sniff_delimiter(text[:SNIFF_BYTES], path.suffix.lower())
    frame = _frame(path, _split_rows(text, delimiter, path), header, columns)
    fmt = {",": "csv", "\t": "tsv", None: "whitespace"}.get(delimiter, "delimited")
    frame.attrs.update(format=fmt, encoding=used, delimiter=delimiter or "whitespace")
    return frame


def _excel(path: Path, header: bool | None, columns: list[str] | None) -> pd.DataFrame:
    try:
        raw = pd.read_excel(path, sheet_name=0, header=None, dtype=object, engine="openpyxl")
    except Exception as e:  # openpyxl raises many kinds for a damaged file
        raise InvalidInput(f"{path}: not a readable Excel file ({type(e).__name__}: {e}): "
                           "check the file, or save it as .xlsx or .csv") from None
    # Excel keeps every number as a float: a whole one is written as the integer it shows.
    rows = [["" if v is None or v != v else to_str(int(v) if isinstance(v, float) and v.is_integer() else v)
             for v in row] for row in raw.itertuples(index=False)]
    frame = _frame(path, [r for r in rows if any(c.strip() for c in r)], header, columns)
    frame.attrs.update(format="excel", encoding=None)
    return frame


_SPACE = re.compile(r"[\s\ufeff]*")


def _jsonl(path: Path, encoding: str | None) -> pd.DataFrame:
    """JSON objects one after another (one per line, or spread over lines), or one array of them."""
    text, used = decode_bytes(path.read_bytes(), path, encoding)
    decoder, objects, pos = json.JSONDecoder(), [], _SPACE.match(text).end()
    while pos < len(text):
        try:
            obj, end = decoder.raw_decode(text, pos)
        except json.JSONDecodeError as e:
            raise InvalidInput(f"{path}: line {e.lineno} is not valid JSON ({e.msg}, column {e.colno}): "
                               "fix or remove that line") from None
        for item in obj if isinstance(obj, list) else [obj]:
            if not isinstance(item, dict):
                raise InvalidInput(f"{path}: line {text.count(chr(10), 0, pos) + 1} holds a JSON "
                                   f"{type(item).__name__}, not an object: write one object per row, e.g. "
                                   '{"age": 39, "city": "Paris"}')
            objects.append({clean_header(k): v for k, v in item.items()})
        pos = _SPACE.match(text, end).end()
    names = list(dict.fromkeys(k for o in objects for k in o))
    frame = pd.DataFrame({n: pd.Series([clean_cell(o.get(n)) for o in objects], dtype=object) for n in names})
    frame.attrs.update(format="jsonl", encoding=used)
    return frame


def _parquet(path: Path) -> pd.DataFrame:
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        table = pq.read_table(path)
    except (pa.ArrowException, OSError) as e:
        raise InvalidInput(f"{path}: not a readable Parquet file ({e}): check the file") from None
    frame = pd.DataFrame({clean_header(n): pd.Series([clean_cell(v) for v in table.column(i).to_pylist()],
                                                     dtype=object)
                          for i, n in enumerate(table.column_names)})
    frame.attrs.update(format="parquet", encoding="utf-8")
    return frame


def read_table(path: str | Path, *, header: bool | None = None, columns: Sequence[str] | str | None = None,
               encoding: str | None = None) -> pd.DataFrame:
    """Read a table file into a frame of stripped strings (None = missing); ``attrs`` hold the
    format, encoding, delimiter and whether a header row was read.

    ``header``: None detects it (see :func:`has_header`); False numbers the columns 1, 2, 3 as
    ``cut -f`` does; ``columns`` names them (the first row is then data, unless ``header=True``).
    """
    p = _check(path)
    suffix = p.suffix.lower()
    names = check_columns(columns) if columns is not None else None
    if suffix in (".parquet", ".jsonl") and (header is not None or names is not None):
        raise InvalidInput(f"--header/--no-header/--columns apply to delimited text and Excel files, not "
                           f"{p.name}, whose columns are named inside it: drop them")
    if suffix == ".parquet":
        if encoding is not None:
            raise InvalidInput(f"{p} is Parquet, whose strings are always UTF-8: drop --encoding")
        frame = _parquet(p)
    elif suffix == ".jsonl":
        frame = _jsonl(p, encoding)
    elif suffix in EXCEL_SUFFIXES:
        frame = _excel(p, header, names)
    elif suffix == ".xls":
        raise InvalidInput(f"{p} is an old Excel .xls file, which is not read: save it as .xlsx or .csv")
    else:
        frame = _delimited(p, header, names, encoding)
    frame.attrs["source"] = str(p)
    if frame.shape[1] == 0 or len(frame) == 0:
        raise InvalidInput(f"{p}: no rows found (a header but no rows?): check the file")
    return frame


# -- metadata files (ours, SDV's) ------------------------------------------------------------

_SDV_PII = {"email": "EMAIL", "phone_number": None, "ssn": None, "name": "PERSON", "first_name": "PERSON",
            "last_name": "PERSON", "address": "ADDRESS", "street_address": "ADDRESS",
            "ipv4_address": "IP_ADDRESS", "ipv6_address": "IP_ADDRESS", "url": "URL",
            "credit_card_number": "BANK_CARD", "license_plate": "CN_LICENSE_PLATE", "iban": None,
            "passport_number": "PASSPORT"}


# The keys of each constraint type that name columns.
_CONSTRAINT_COLUMNS = {"range": ("column",), "inequality": ("low", "high"),
                       "fixed_combinations": ("columns",)}


def _sdv_column(spec: Mapping[str, Any]) -> dict[str, Any]:
    sdtype = spec.get("sdtype")
    if sdtype == "numerical":
        rep = str(spec.get("computer_representation") or "")
        # without a representation: whole numbers or not, as inference finds them
        return {"kind": "continuous" if rep.startswith("Float") else "discrete" if "Int" in rep
                else "numerical"}
    if sdtype in ("categorical", "boolean", "id"):
        return {"kind": sdtype}
    if sdtype == "datetime":
        return {"kind": "datetime", "datetime_format": spec.get("datetime_format")}
    if spec.get("pii") is True or (sdtype in _SDV_PII and spec.get("pii") is not False):
        return {"kind": "pii", "entity": _SDV_PII.get(sdtype)}
    return {"kind": "categorical"}


def parse_metadata(doc: Any, frame_columns: Sequence[str], where: str = "metadata",
                   dropped: Sequence[str] = ()) -> dict[str, Any]:
    """Overrides from our metadata (``TableMetadata.to_dict``, partial is fine) or SDV's metadata
    JSON (single-table, or multi-table with one table), checked against the table's columns (the
    entries of ``dropped`` columns are skipped)."""
    from aigc.data.tables import KINDS  # the kinds are the metadata's, which imports this module
    if isinstance(doc, Mapping) and "tables" in doc:
        tables = doc["tables"]
        if not isinstance(tables, Mapping) or len(tables) != 1:
            names = list(tables) if isinstance(tables, Mapping) else []
            raise InvalidInput(f"{where} describes {len(names)} tables ({', '.join(names)}), not one: "
                               "keep only this table's entry")
        doc = next(iter(tables.values()))
    if not isinstance(doc, Mapping):
        raise InvalidInput(f"{where} holds a JSON {type(doc).__name__}, not an object: write "
                           '{"columns": {"age": {"kind": "discrete"}}} or SDV\'s metadata JSON')
    have = list(frame_columns)

    def known(col: Any, what: str) -> str:
        if col not in have:
            raise InvalidInput(f"{where} names {what} {col!r}, which the table does not have (columns: "
                               f"{', '.join(map(str, have))}): fix the name or remove it")
        return col

    raw = doc.get("columns") or {}
    items = [(c.get("name"), c) for c in raw] if isinstance(raw, list) else list(raw.items())
    columns = {}
    for name, spec in items:
        if name in dropped:
            continue
        spec = {"kind": spec} if isinstance(spec, str) else dict(spec or {})
        known(name, "column")
        if "sdtype" in spec:
            spec = _sdv_column(spec)
        spec = {k: spec.get(k) for k in ("kind", "datetime_format", "entity")}
        if spec["kind"] not in (*KINDS, "numerical"):
            raise InvalidInput(f"{where}: column {name!r} has kind {spec['kind']!r}, not one of "
                               f"{', '.join(KINDS)}: fix it")
        columns[name] = {k: v for k, v in spec.items() if v is not None}
    out: dict[str, Any] = {"columns": columns}
    if (pk := doc.get("primary_key")) is not None:
        out["primary_key"] = known(pk, "primary_key")
    if (target := doc.get("target")) is not None:
        out["target"] = known(target, "target")
    out["quasi_identifiers"] = [known(c, "quasi_identifier") for c in doc.get("quasi_identifiers") or []]
    constraints = doc.get("constraints") or []
    for c in constraints:
        kind = c.get("type") if isinstance(c, Mapping) else None
        if kind not in _CONSTRAINT_COLUMNS:
            raise InvalidInput(f"{where}: constraint {c!r} is not one of {', '.join(_CONSTRAINT_COLUMNS)}: "
                               'fix it, e.g. {"type": "range", "column": "age", "low": 17, "high": 90}')
        for key in _CONSTRAINT_COLUMNS[kind]:
            for ref in c.get(key) if isinstance(c.get(key), list) else [c.get(key)]:
                known(ref, f"in a {kind} constraint the column")
    out["constraints"] = list(constraints)
    return out


def load_metadata_file(path: str | Path, frame_columns: Sequence[str],
                       dropped: Sequence[str] = ()) -> dict[str, Any]:
    """Read ``--metadata FILE`` (see :func:`parse_metadata`) into overrides for :func:`infer_metadata`."""
    p = Path(path).expanduser()
    if not p.is_file():
        raise InvalidInput(f"no metadata file at {p}: check the --metadata path")
    try:
        doc = json.loads(p.read_text(encoding="utf-8-sig"))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise InvalidInput(f"{p}: not valid JSON ({e}): fix the metadata file") from None
    return parse_metadata(doc, frame_columns, str(p), dropped)


# -- routing -------------------------------------------------------------------------------


def _peek_columns(p: Path, options: Mapping[str, Any]) -> list[str] | None:
    """The column names of a would-be table, reading only its start; None when it is not one."""
    suffix = p.suffix.lower()
    if suffix in EXCEL_SUFFIXES:
        return []
    if suffix == ".parquet":
        import pyarrow.parquet as pq

        return [clean_header(n) for n in pq.read_schema(p).names]
    with p.open("rb") as f:
        head = f.read(SNIFF_BYTES)
    text = head.decode("utf-8", errors="replace").lstrip("\ufeff")
    if suffix == ".jsonl":
        keys: dict[str, None] = {}
        for line in text.splitlines()[:50]:
            try:
                keys.update(dict.fromkeys(clean_header(k) for k in json.loads(line)))
            except (ValueError, TypeError, AttributeError):
                continue
        return list(keys)
    delimiter = sniff_delimiter(text, suffix)
    rows = _split_rows(text[: text.rfind("\n") + 1] or text, delimiter, p)
    if not rows or (suffix not in TABLE_SUFFIXES and len(rows[0]) < 2):
        return None
    if options.get("columns") is not None:
        return check_columns(options["columns"])
    header = options.get("header")
    if header is False or (header is None and not has_header(rows[0], rows[1:])):
        return [str(i + 1) for i in range(len(rows[0]))]
    return [clean_header(c) for c in rows[0]]


def is_table_source(path: str | Path, options: Mapping[str, Any] | None = None) -> bool:
    """Whether ``aigc.ingest`` reads ``path`` as a table: ``table=True`` (or a table option) says
    so; a text option (``text_column``, ``cond_columns``, ``lines``...) says text; otherwise a
    CSV/TSV/.dat/Parquet/JSONL/Excel file (or another delimited file, but never .txt) with no text
    column (``text``, ``review``, ``content``...) is a table."""
    options = options or {}
    if options.get("table") or any(options.get(k) is not None for k in TABLE_OPTIONS[1:]):
        return True
    if any(options.get(k) is not None for k in TEXT_OPTIONS):
        return False
    p = Path(path).expanduser()
    if not p.is_file() or p.suffix.lower() == ".txt" or p.stat().st_size == 0:
        return False
    try:
        names = _peek_columns(p, options)
    except (InvalidInput, OSError, ValueError):
        return False
    return names is not None and not set(names) & set(DEFAULT_TEXT_COLUMNS)


def table_options(path: str | Path, options: Mapping[str, Any], allowed: Iterable[str]) -> dict[str, Any]:
    """The options of a table ingest; any other option (text or image) is refused by name."""
    extra = [k for k in options if k not in allowed and options[k] is not None]
    if extra:
        one = len(extra) == 1
        flags = ", ".join("--" + k.replace("_", "-") for k in extra)
        raise InvalidInput(f"{flags} {'does' if one else 'do'} not apply to the table {path}: drop "
                           f"{'it' if one else 'them'}, or leave out --table/--metadata/--drop-column to "
                           "ingest it as text")
    return dict(options)
