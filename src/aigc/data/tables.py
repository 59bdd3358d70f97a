"""Tables as a modality: each column's kind, the table's metadata, the dataset on disk, ingestion.

Kinds (:data:`KINDS`) are inferred from the values by general rules, each stated in the column's
``reason``: numbers that are all whole are ``discrete``, other numbers ``continuous``; two values
spelled as a yes/no pair are ``boolean``; date-shaped values are ``datetime`` (their strftime
format kept to write them back); unique codes, UUIDs, row numbers and near-unique columns with an
id-like name are ``id`` (regenerated, never learned); long free text is ``text`` (left to a text
family); values that are mostly whole matches of one :mod:`aigc.safety.pii` entity are ``pii``
(replaced at ingestion by consistent fake values); the rest is ``categorical``. A metadata file
(ours, or SDV's) overrides any of it.

On disk, ``datasets/<name>/{train,val,test}.parquet`` hold the *stored frame*: the columns as
read, typed (continuous float64, discrete Int64, datetimes as text in their format, the rest
text), PII already replaced; ``card.json`` holds :meth:`TableMetadata.to_dict` under "metadata".
Families see the *model frame* (:func:`to_model_frame`): modelled columns only, numbers as
float64, categories as str. Reading files and parsing cells is :mod:`aigc.data.table_sources`'.
"""

from __future__ import annotations

import hashlib
import hmac
import random
import re
import statistics
import uuid
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from aigc.data.privacy import PiiReport, check_mode, pii_settings
from aigc.data.split import SPLITS, check_fractions, split_of
from aigc.data.table_sources import (DATE_SHAPE, EPOCH, clean_cell, date_formats, decimals_of, format_date,
                                     is_table_source, load_metadata_file, parse_date, parse_metadata,
                                     parse_number, read_table)
from aigc.errors import AlreadyExists, InvalidInput
from aigc.safety.pii import ENTITY_TYPES, Scanner, canonical, pseudonym
from aigc.workspace import Workspace, now, write_json_atomic

__all__ = ["KINDS", "MODELLED", "Column", "TableMetadata", "infer_metadata", "load_metadata_file",
           "to_model_frame", "from_model_frame", "read_table", "read_table_split", "ingest_table",
           "is_table_source", "TABLE_INGEST_OPTIONS"]

KINDS = ("continuous", "discrete", "categorical", "boolean", "datetime", "id", "text", "pii")
MODELLED = ("continuous", "discrete", "categorical", "boolean", "datetime")  # what families learn
TABLE_INGEST_OPTIONS = ("split", "replace", "header", "columns", "encoding", "metadata", "drop_columns",
                        "pii")

MAX_CATEGORIES = 1000  # distinct values a categorical column may have: more is an id, text, or noise
MOSTLY = 0.8  # a column this much numbers (or dates) is one; the other values are mistakes to fix
TEXT_MIN_CHARS = 30  # median length of free text (a sentence); shorter strings are labels
ID_MIN_ROWS = 20  # unique codes in fewer rows prove nothing
NEAR_UNIQUE = 0.5  # an id-named column with at least this share of distinct values is an id
PII_SAMPLE = 200  # distinct values scanned per column
PII_SHARE, PII_SHARE_NAMED = 0.7, 0.4  # whole-entity share of them for pii (a name like 'phone' helps)

_BOOL_PAIRS = [frozenset(p) for p in (("true", "false"), ("yes", "no"), ("y", "n"), ("t", "f"), ("0", "1"),
                                      ("是", "否"), ("真", "假"), ("对", "错"), ("on", "off"))]
_ID_NAME = re.compile(r"(?:^|_)(?:id|uuid|guid|key|code|no|num|number)$|(?:编号|序号|单号|代码)$")
_PII_NAME = re.compile(r"(?:^|_)(?:(?:first_|last_|full_|user_)?name|phone|mobile|tel|e_?mail|address"
                       r"|addr|ssn|passport|ip)(?:$|_)|姓名|名字|手机|电话|邮箱|地址|住址|身份证|护照|银行卡|联系人")
_UUID = re.compile(r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}")


@dataclass
class Column:
    name: str
    kind: str                    # one of KINDS
    missing: float = 0.0         # share of missing values (0..1) in the ingested table
    min: float | None = None     # continuous / discrete / datetime (seconds since the epoch) / int ids
    max: float | None = None
    decimals: int | None = None  # digits after the point that the data uses (0 = integers)
    categories: dict[str, int] | None = None  # categorical / boolean: value -> count, most frequent first
    datetime_format: str | None = None  # strftime format that writes values back the way they came
    entity: str | None = None    # pii: the recognizer's entity type, e.g. CN_MOBILE, EMAIL, PERSON
    reason: str | None = None    # why this kind
    # id: the shape of a value (9 digit, A/a letter, # either, \x a literal x), or "uuid";
    # pii: one fake value, the layout new ones follow
    pattern: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {k: v for k, v in asdict(self).items() if v is not None}


@dataclass
class TableMetadata:
    columns: list[Column]
    primary_key: str | None = None
    # {"type": "range", "column", "low", "high"} | {"type": "inequality", "low", "high"} (low <= high)
    # | {"type": "fixed_combinations", "columns": [...]}
    constraints: list[dict] = field(default_factory=list)
    quasi_identifiers: list[str] = field(default_factory=list)  # for the privacy report (CAP)
    target: str | None = None    # default TSTR target column, when the user declared one

    def column(self, name: str) -> Column:
        for c in self.columns:
            if c.name == name:
                return c
        have = ", ".join(c.name for c in self.columns)
        raise InvalidInput(f"no column {name!r} in the table (columns: {have}): pass one of them")

    def modelled(self) -> list[Column]:
        return [c for c in self.columns if c.kind in MODELLED]

    def to_dict(self) -> dict[str, Any]:
        return {"columns": [c.to_dict() for c in self.columns], "primary_key": self.primary_key,
                "constraints": self.constraints, "quasi_identifiers": self.quasi_identifiers,
                "target": self.target}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> TableMetadata:
        names = {f.name for f in fields(Column)}
        return cls([Column(**{k: v for k, v in c.items() if k in names}) for c in d["columns"]],
                   d.get("primary_key"), list(d.get("constraints") or []),
                   list(d.get("quasi_identifiers") or []), d.get("target"))


# -- kinds ---------------------------------------------------------------------------------


def _snake(name: str) -> str:
    return re.sub(r"[\s\-.]+", "_", re.sub(r"([a-z0-9])([A-Z])", r"\1_\2", name)).lower()


def _shown(values: Sequence[str], k: int = 2) -> str:
    return ", ".join(repr(v if len(v) <= 40 else v[:39] + "…") for v in values[:k])


def _pii_entity(name: str, counts: Counter, scanner: Scanner) -> str | None:
    """The entity most sampled values are whole matches of, when they are enough of them."""
    sample = list(counts)[:PII_SAMPLE]
    found: Counter = Counter()
    for v in sample:
        ents = scanner.scan(v)
        if len(ents) == 1 and ents[0].start == 0 and ents[0].end == len(v):
            found[ents[0].type] += 1
    if not found:
        return None
    entity, k = found.most_common(1)[0]
    share = PII_SHARE_NAMED if _PII_NAME.search(_snake(name)) else PII_SHARE
    return entity if k >= share * len(sample) else None


def _guess(name: str, counts: Counter, n: int, scanner: Scanner) -> tuple[str, str, str | None]:
    """(kind, reason, pii entity) of a column from its non-missing values' counts."""
    d = len(counts)
    if d == 2 and frozenset(v.casefold() for v in counts) in _BOOL_PAIRS:
        return "boolean", f"two values {'/'.join(counts)} -> boolean", None
    numbers = {v: parse_number(v) for v in counts}
    numeric = sum(counts[v] for v, x in numbers.items() if x is not None)
    if numeric < n or max(map(len, counts)) >= 7:  # short numbers are never PII; long ones may be phones
        entity = _pii_entity(name, counts, scanner)
        if entity is not None:
            return "pii", f"values are {entity} -> pii (replaced by fake values)", entity
    id_name = _ID_NAME.search(_snake(name)) is not None
    if numeric == n:
        values = list(numbers.values())
        if not all(x.is_integer() for x in values):  # type: ignore[union-attr]
            return "continuous", f"{d} distinct numbers with decimals -> continuous", None
        if id_name and d >= NEAR_UNIQUE * n:
            return "id", f"id-like name, {d} distinct of {n} -> id (regenerated)", None
        if d == n >= ID_MIN_ROWS and min(values) in (0, 1) and max(values) - min(values) + 1 == d:
            return "id", f"row numbers {min(values):.0f}..{max(values):.0f} -> id (regenerated)", None
        return "discrete", f"{d} distinct whole numbers -> discrete", None
    if numeric >= MOSTLY * n:
        words = [v for v, x in numbers.items() if x is None]
        raise InvalidInput(
            f"column {name!r} holds numbers except {n - numeric} value(s) such as {_shown(words)}: correct "
            "them, or declare the column categorical in --metadata")
    if sum(counts[v] for v in counts if DATE_SHAPE.fullmatch(v)) >= MOSTLY * n:
        return "datetime", "dates -> datetime", None
    if d >= 0.95 * n and all(_UUID.fullmatch(v) for v in counts):
        return "id", f"UUIDs, {d} distinct of {n} -> id (regenerated)", None
    if id_name and (d >= NEAR_UNIQUE * n or d > MAX_CATEGORIES):
        return "id", f"id-like name, {d} distinct of {n} -> id (regenerated)", None
    if d == n >= ID_MIN_ROWS and all(len(v) <= 40 and any(c.isdigit() for c in v)
                                     and not any(c.isspace() for c in v) for v in counts):
        return "id", f"{d} unique codes -> id (regenerated)", None
    median = statistics.median(len(v) for v in counts.elements())
    if median >= TEXT_MIN_CHARS and (d >= NEAR_UNIQUE * n or d > MAX_CATEGORIES):
        why = f"free text (median {median:.0f} characters, {d} distinct of {n}) -> text (not learned)"
        return "text", why, None
    return "categorical", f"{d} distinct values -> categorical", None


def _id_pattern(values: Sequence[str]) -> str:
    """The shape of the values of the most common length: a position that never changes is kept."""
    if all(_UUID.fullmatch(v) for v in values):
        return "uuid"
    length = Counter(map(len, values)).most_common(1)[0][0]
    same = [v for v in values if len(v) == length]
    out = []
    for chars in zip(*same):
        c = chars[0]
        if all(x == c for x in chars):
            out.append("\\" + c if c in "9Aa#\\" else c)
        elif all(x.isdigit() for x in chars):
            out.append("9")
        elif all(x.isascii() and x.isalpha() for x in chars):
            case = {c.isupper() for c in chars}
            out.append("#" if len(case) > 1 else "A" if case == {True} else "a")
        else:
            out.append("#")
    # A run of digit positions that varies anywhere varies everywhere: 'ORD-00017' -> 'ORD-99999'.
    digits = "".join("d" if all(x.isdigit() for x in chars) else "." for chars in zip(*same))
    for run in re.finditer("d+", digits):
        if "9" in out[run.start():run.end()]:
            out[run.start():run.end()] = ["9"] * (run.end() - run.start())
    return "".join(out)


def _numbers(name: str, kind: str, counts: Counter) -> dict[str, float]:
    """Each distinct value as a number, for a column declared numeric; refused when one is not."""
    out, bad = {}, []
    for v in counts:
        x = parse_number(v.lstrip("0") or "0") if v[:1] == "0" and v[1:2].isdigit() else parse_number(v)
        if x is None:
            bad.append(v)
        out[v] = x
    if bad:
        raise InvalidInput(f"column {name!r} is declared {kind} but holds values that are not numbers, such "
                           f"as {_shown(bad)}: correct them, or declare the column categorical in --metadata")
    return out  # type: ignore[return-value]


def _infer_column(name: str, raw: pd.Series, override: Mapping[str, Any],
                  scanner: Scanner) -> tuple[Column, pd.Series]:
    """The column's metadata and its stored (typed) values."""
    values = [v for v in raw if v is not None]
    n = len(values)
    if n == 0:
        raise InvalidInput(f"column {name!r} is empty in all {len(raw)} rows: drop it (--drop-column {name}, "
                           f"or drop_columns=[{name!r}]) or fill it in")
    counts = Counter(values)
    declared, entity = override.get("kind"), override.get("entity")
    if declared in (None, "numerical"):
        kind, reason, found = _guess(name, counts, n, scanner)
        if declared == "numerical" and kind not in ("continuous", "discrete"):
            nums = _numbers(name, "numerical", counts)
            kind = "discrete" if all(x.is_integer() for x in nums.values()) else "continuous"
        entity = entity or found
    else:
        kind, reason = declared, "declared in the metadata"
    col = Column(name, kind, missing=round(1 - n / len(raw), 6), reason=reason)
    stored = raw
    int_id = kind == "id" and all((x := parse_number(v)) is not None and x.is_integer() for v in counts)
    if kind in ("continuous", "discrete") or int_id:
        nums = _numbers(name, kind, counts)
        col.min, col.max = float(min(nums.values())), float(max(nums.values()))
        if kind == "continuous":
            col.decimals = max(decimals_of(v) for v in counts)
            stored = pd.Series([np.nan if v is None else nums[v] for v in raw], dtype="float64")
        else:
            bad = [v for v, x in nums.items() if not x.is_integer()]
            if bad:
                raise InvalidInput(f"column {name!r} is declared {kind} but holds numbers with decimals "
                                   f"such as {_shown(bad)}: declare it continuous in --metadata")
            col.decimals = 0
            stored = pd.Series([None if v is None else int(nums[v]) for v in raw], dtype="Int64")
    elif kind == "datetime":
        distinct = list(counts)
        if fmt := override.get("datetime_format"):
            parsed = {v: parse_date(v, fmt) for v in distinct}
            bad = [v for v, s in parsed.items() if s is None]
            if bad:
                raise InvalidInput(f"column {name!r} has dates that do not match its datetime_format "
                                   f"{fmt!r}, such as {_shown(bad)}: correct them, or fix datetime_format in "
                                   "--metadata")
            formats = [fmt]
        else:
            formats, parsed = date_formats(distinct, name)
            by_use: Counter = Counter()
            for v, k in counts.items():
                by_use[next(f for f in formats if parse_date(v, f) is not None)] += k
            formats = [f for f, _ in by_use.most_common()]
        col.datetime_format = formats[0]
        col.min, col.max = min(parsed.values()), max(parsed.values())  # type: ignore[type-var]
        if len(formats) > 1:
            col.reason += f" ({len(formats)} formats, written back as {formats[0]})"
        written = {v: format_date(s, formats[0]) for v, s in parsed.items()}  # one format for all
        stored = pd.Series([None if v is None else written[v] for v in raw], dtype=object)
    elif kind in ("categorical", "boolean"):
        if kind == "categorical" and len(counts) > MAX_CATEGORIES:
            raise InvalidInput(
                f"column {name!r} has {len(counts):,} distinct values, too many categories to learn (at "
                f"most {MAX_CATEGORIES:,}): declare it id or text in --metadata, or drop it (--drop-column "
                f"{name})")
        if kind == "boolean" and len(counts) > 2:
            raise InvalidInput(f"column {name!r} is declared boolean but has {len(counts)} values such as "
                               f"{_shown(list(counts), 3)}: declare it categorical in --metadata")
        col.categories = dict(sorted(counts.items(), key=lambda kv: (-kv[1], kv[0])))
    elif kind == "id":
        col.pattern = _id_pattern(list(counts))
    elif kind == "pii":
        col.entity = entity if entity in ENTITY_TYPES else None
        col.pattern = _fake(col.entity, values[0], random.Random(0))  # its layout; nothing keyed on it
    return col, stored


def _infer(frame: pd.DataFrame, overrides: Mapping[str, Any] | None,
           scanner: Scanner | None = None) -> tuple[TableMetadata, pd.DataFrame]:
    overrides = dict(overrides or {})
    declared = overrides.get("columns") or {}
    scanner = scanner if scanner is not None else Scanner()
    text = frame.apply(_as_text)
    cols, stored = [], {}
    for name in text.columns:
        cells = text[name].reset_index(drop=True)
        col, stored[name] = _infer_column(str(name), cells, declared.get(name, {}), scanner)
        cols.append(col)
    meta = TableMetadata(cols, overrides.get("primary_key"), list(overrides.get("constraints") or []),
                         list(overrides.get("quasi_identifiers") or []), overrides.get("target"))
    if meta.primary_key is None:
        meta.primary_key = next((c.name for c in cols if c.kind == "id" and text[c.name].is_unique
                                 and c.missing == 0), None)
    return meta, pd.DataFrame(stored)


def _as_text(series: pd.Series) -> pd.Series:
    """A column as the text cells inference reads (a frame from Python may hold typed values)."""
    def cell(v: Any) -> str | None:
        if v is None or (isinstance(v, float) and np.isnan(v)) or v is pd.NA or v is pd.NaT:
            return None
        if isinstance(v, (float, np.floating)) and float(v).is_integer():
            return str(int(v))
        return clean_cell(v)

    return pd.Series([cell(v) for v in series], index=series.index, dtype=object)


def infer_metadata(frame: pd.DataFrame, *, overrides: Mapping[str, Any] | None = None,
                   scanner: Scanner | None = None) -> TableMetadata:
    """Each column's kind and statistics (see the module docstring for the rules). ``overrides``:
    what :func:`load_metadata_file` returns (declared kinds and formats, keys, constraints)."""
    return _infer(frame, overrides, scanner)[0]


# -- frames ------------------------------------------------------------------------------------


def to_model_frame(frame: pd.DataFrame, meta: TableMetadata) -> pd.DataFrame:
    """The modelled columns, in order: numbers and datetimes (epoch seconds) as float64 with NaN
    for missing, categorical and boolean as str with None for missing."""
    out = {}
    for c in meta.modelled():
        s = frame[c.name]
        if c.kind == "datetime" and pd.api.types.is_datetime64_any_dtype(s):  # typed by the caller
            seconds = (s - pd.Timestamp(EPOCH)).dt.total_seconds()
            out[c.name] = seconds.astype("float64").reset_index(drop=True)
        elif c.kind == "datetime":
            fmt = str(c.datetime_format)
            seen = {v: parse_date(str(v), fmt) for v in s.dropna().unique()}
            out[c.name] = pd.Series([np.nan if pd.isna(v) or seen[v] is None else seen[v] for v in s],
                                    dtype="float64")
        elif c.kind in ("continuous", "discrete"):
            out[c.name] = pd.to_numeric(s, errors="coerce").astype("float64").reset_index(drop=True)
        else:
            out[c.name] = pd.Series([None if pd.isna(v) else str(v) for v in s], dtype=object)
    return pd.DataFrame(out)


def _regenerate_ids(col: Column, n: int, rng: np.random.Generator) -> pd.Series:
    if col.pattern is None:  # whole numbers: a fresh run from the first
        return pd.Series(np.arange(n) + int(col.min or 0), dtype="Int64")
    if col.pattern == "uuid":
        return pd.Series([str(uuid.UUID(bytes=rng.bytes(16), version=4)) for _ in range(n)], dtype=object)
    pools = {"9": "0123456789", "A": "ABCDEFGHIJKLMNOPQRSTUVWXYZ", "a": "abcdefghijklmnopqrstuvwxyz"}
    pools["#"] = pools["9"] + pools["A"] + pools["a"]
    slots = re.findall(r"\\.|.", col.pattern)
    made: dict[str, None] = {}
    for _ in range(20):  # draw until unique (a pattern with too few values may repeat some)
        for _ in range(n - len(made)):
            made[''.join(s[1] if s[0] == "\\" else rng.choice(list(pools[s])) if s in pools else s
                         for s in slots)] = None
        if len(made) >= n:
            break
    ids = list(made)
    return pd.Series((ids * (n // max(len(ids), 1) + 1))[:n], dtype=object)


def from_model_frame(model_frame: pd.DataFrame, meta: TableMetadata,
                     rng: np.random.Generator) -> pd.DataFrame:
    """Model-frame rows back to the stored frame's columns and types: numbers rounded to their
    decimals (discrete as Int64), datetimes in their format, categories as written, ids
    regenerated, PII columns new fake values, text columns empty."""
    n = len(model_frame)
    out = {}
    for c in meta.columns:
        if c.kind in MODELLED:
            s = model_frame[c.name].reset_index(drop=True)
        if c.kind == "continuous":
            out[c.name] = pd.to_numeric(s, errors="coerce").astype("float64").round(c.decimals or 0)
        elif c.kind == "discrete":
            out[c.name] = pd.to_numeric(s, errors="coerce").round(0).astype("Int64")
        elif c.kind == "datetime":
            fmt = str(c.datetime_format)
            out[c.name] = pd.Series([None if pd.isna(x) else format_date(float(x), fmt) for x in s],
                                    dtype=object)
        elif c.kind in ("categorical", "boolean"):
            out[c.name] = pd.Series([None if v is None or (isinstance(v, float) and np.isnan(v)) else str(v)
                                     for v in s], dtype=object)
        elif c.kind == "id":
            out[c.name] = _regenerate_ids(c, n, rng)
        elif c.kind == "pii":
            py = random.Random(int(rng.integers(2**63)))
            gone = rng.random(n) < c.missing
            like = c.pattern or "x"
            out[c.name] = pd.Series([None if gone[i] else _fake(c.entity, like, py) for i in range(n)],
                                    dtype=object)
        else:
            out[c.name] = pd.Series([None] * n, dtype=object)
    return pd.DataFrame(out)


def _fake(entity: str | None, text: str, rng: random.Random) -> str:
    """A fake value like ``text``: the entity's pseudonym, else the same shape with new characters."""
    fake = pseudonym(entity, text, rng) if entity in ENTITY_TYPES else text
    if fake == text:
        fake = "".join(rng.choice("0123456789") if ch.isdigit() else
                       rng.choice("abcdefghijklmnopqrstuvwxyz") if ch.isascii() and ch.islower() else
                       rng.choice("ABCDEFGHIJKLMNOPQRSTUVWXYZ") if ch.isascii() and ch.isupper() else
                       chr(rng.randrange(0x4E00, 0x9FA6)) if "\u4e00" <= ch <= "\u9fff" else ch
                       for ch in text)
    return fake


def fake_value(entity: str | None, text: str, key: bytes) -> str:
    """The consistent fake of ``text``: the same value, key and entity give the same fake (seeded
    by an HMAC of the canonical value, as :meth:`aigc.safety.pii.Scanner.redact`'s pseudonym is)."""
    canon = canonical(entity, text) if entity in ENTITY_TYPES else text
    seed = hmac.new(key, f"pseudonym|{entity}|{canon}".encode(), hashlib.sha256).digest()
    return _fake(entity, text, random.Random(int.from_bytes(seed[:8], "big")))


def read_table_split(ds_dir: Path, split: str) -> pd.DataFrame:
    """The stored frame of one split of a table dataset."""
    if split not in SPLITS:
        raise InvalidInput(f"unknown split {split!r}: use one of {', '.join(SPLITS)}")
    path = Path(ds_dir) / f"{split}.parquet"
    if not path.is_file():
        raise InvalidInput(f"{Path(ds_dir)} is not a table dataset (no {split}.parquet): ingest a table "
                           "first")
    return pd.read_parquet(path)


# -- ingestion ---------------------------------------------------------------------------------


def _replace_pii(stored: pd.DataFrame, meta: TableMetadata, mode: str, scanner: Scanner, operators: Any,
                 key: bytes,
                 progress: Callable[[str, int, int], None] | None) -> tuple[PiiReport, np.ndarray]:
    """PII columns -> consistent fakes; text columns scanned, redacted or their rows dropped per ``mode``.
    Returns the report and the mask of rows to keep."""
    report = PiiReport(mode)
    keep = np.ones(len(stored), bool)
    work = [c for c in meta.columns if c.kind in ("pii", "text")]
    total, done = len(stored) * len(work), 0
    for c in work:
        fakes: dict[str, str] = {}
        new = []
        for i, v in enumerate(stored[c.name]):
            done += 1
            if progress is not None and done % 500 == 0:
                progress("pii", done, total)
            if v is None:
                new.append(None)
            elif c.kind == "pii":
                if v not in fakes:
                    fakes[v] = fake_value(c.entity, v, key)
                report.by_column.setdefault(c.name, Counter())[c.entity or "PII"] += 1
                new.append(fakes[v])
            else:
                red = scanner.redact(v, operators) if mode == "redact" else None
                ents = red.entities if red is not None else scanner.scan(v)
                report.count(c.name, ents)
                keep[i] &= not (ents and mode == "drop")
                new.append(red.text if red is not None else v)
        stored[c.name] = pd.Series(new, dtype=object)
        if c.kind == "pii":
            c.pattern = next(iter(fakes.values()))
    return report, keep


def ingest_table(ws: Workspace, path: str | Path, name: str, *, split: Sequence[float] = (0.9, 0.05, 0.05),
                 header: bool | None = None, columns: Sequence[str] | str | None = None,
                 encoding: str | None = None, metadata: str | Path | Mapping[str, Any] | None = None,
                 drop_columns: Sequence[str] | None = None, replace: bool = False, pii: str | None = None,
                 progress: Callable[[str, int, int], None] | None = None) -> dict[str, Any]:
    """Ingest a table file as dataset ``name``; return its card. Every mistake raises InvalidInput
    (or AlreadyExists) before anything is written.

    ``metadata``: a metadata file (ours or SDV's) or its dict; ``drop_columns``: columns left out;
    ``pii``: what to do with personal information inside text columns (report | redact | drop; PII
    *columns* are always replaced); ``progress(stage, done, total)`` as the PII pass goes.
    """
    dest = ws.dataset_path(name)
    if not replace and (ws.has_dataset(name) or dest.exists()):
        raise AlreadyExists(f"dataset {name!r} already exists: pass --replace to overwrite it")
    fractions = check_fractions(split)
    if pii is not None:
        check_mode(pii)
    raw = read_table(path, header=header, columns=columns, encoding=encoding)
    attrs = dict(raw.attrs)
    source = attrs["source"]
    drop = [drop_columns] if isinstance(drop_columns, str) else list(drop_columns or [])
    for c in drop:
        if c not in raw.columns:
            raise InvalidInput(f"{source}: no column {c!r} to drop (columns: {', '.join(raw.columns)}): "
                               "fix --drop-column")
    raw = raw.drop(columns=drop)
    if raw.shape[1] == 0:
        raise InvalidInput(f"{source}: every column is dropped: drop fewer with --drop-column")
    if isinstance(metadata, Mapping):
        overrides = parse_metadata(metadata, list(raw.columns), dropped=drop)
    else:
        overrides = load_metadata_file(metadata, list(raw.columns), drop) if metadata is not None else {}
    n_read = len(raw)
    keys = pd.Series(["\x1f".join("\x00" if v is None else v for v in row)
                      for row in raw.itertuples(index=False, name=None)])
    duplicate = keys.duplicated().to_numpy()
    raw, keys = raw[~duplicate].reset_index(drop=True), keys[~duplicate].reset_index(drop=True)
    if len(raw) < 2:
        dupes = f" after dropping {int(duplicate.sum())} duplicate row(s)" if duplicate.any() else ""
        raise InvalidInput(f"{source}: the table has {len(raw)} row{dupes}, and a data set needs at least 2, "
                           "one to learn from and one to check against: add rows")
    mode, scanner, operators, policy_version = pii_settings(ws, pii)
    meta, stored = _infer(raw, overrides, scanner)
    from aigc.safety.policy import workspace_key

    report, keep = _replace_pii(stored, meta, mode, scanner, operators, workspace_key(ws), progress)
    where = np.array([split_of(k, fractions) for k in keys])
    parts = {s: stored[(where == s) & keep].reset_index(drop=True) for s in SPLITS}
    if len(parts["train"]) == 0:
        raise InvalidInput(f"{source}: none of the {len(stored)} kept rows landed in train with split "
                           f"{','.join(f'{f:g}' for f in fractions)}: add more rows or raise the train "
                           "fraction")
    card = _card(name, attrs, meta, parts, n_read, int(duplicate.sum()), int((~keep).sum()), drop, fractions)
    entities = Counter(e for cols in report.by_column.values() for e in cols.elements())
    text_found = sum(sum(report.by_column.get(c.name, Counter()).values())
                     for c in meta.columns if c.kind == "text")
    card["pii"] = {"mode": mode, "policy_version": policy_version,
                   "redacted": mode != "report" or not text_found,
                   "unredacted": 0 if mode != "report" else text_found, "records_dropped": int((~keep).sum()),
                   "replaced_columns": card["pii_columns"], "entities": dict(sorted(entities.items())),
                   "by_column": {c: dict(n) for c, n in report.by_column.items()}}
    with ws.staging("dataset") as staged:
        for s in SPLITS:
            parts[s].to_parquet(staged / f"{s}.parquet", index=False)
        write_json_atomic(staged / "card.json", card)
        ws.publish(staged, dest, replace=replace)
    ws.register_dataset(name, "table", str(source), card)
    return card


def _card(name: str, attrs: Mapping[str, Any], meta: TableMetadata, parts: Mapping[str, pd.DataFrame],
          n_read: int, duplicates: int, pii_dropped: int, dropped_columns: list[str],
          fractions: Sequence[float]) -> dict[str, Any]:
    kinds: dict[str, list[str]] = {}
    for c in meta.columns:
        kinds.setdefault(c.kind, []).append(c.name)
    kept = sum(len(p) for p in parts.values())
    by_reason = {k: v for k, v in (("duplicate row", duplicates),
                                   ("personal information in a text column (--pii drop)", pii_dropped)) if v}
    text = kinds.get("text", [])
    return {
        "name": name, "modality": "table", "source": attrs["source"], "format": attrs.get("format"),
        "encoding": attrs.get("encoding"), "delimiter": attrs.get("delimiter"), "header": attrs.get("header"),
        "counts": {"read": n_read, "kept": kept, "dropped": n_read - kept, "duplicates": duplicates,
                   **{s: len(parts[s]) for s in SPLITS}},
        "metadata": meta.to_dict(),
        "kinds": kinds,
        "pii_columns": {c.name: c.entity for c in meta.columns if c.kind == "pii"},
        "dropped_columns": dropped_columns,
        "text_columns": {"columns": text, "note": "free text is kept in the data set but not learned by "
                         "table families: train a text family on it"} if text else {},
        "dropped_by_reason": by_reason,
        "split": {"method": "hash", "fractions": [float(f) for f in fractions]},
        "empty_splits": [s for s in ("val", "test") if len(parts[s]) == 0],
        "files": {s: f"{s}.parquet" for s in SPLITS},
        "created_at": now(),
    }
