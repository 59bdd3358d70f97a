"""Reading a recommender's input: a catalogue of items and the interactions of users with them.

What this module knows: files and frames -> :class:`Catalogue` and :class:`Interactions` (index
arrays, weights, UTC seconds), columns found by name in English or Chinese or given, event kinds
and their weights, timestamps in mixed formats. It knows nothing about models or the workspace.

- **Items** (CSV, TSV, JSONL, Parquet, Excel through :func:`aigc.data.table_sources.read_table`, or
  a pandas frame): an id column (:data:`ITEM_COLUMNS`), text columns title / description / tags /
  category (:data:`TEXT_COLUMNS`; at least one), an optional ``available`` column (yes/no, 1/0,
  true/false, 是/否, 有货/缺货...; missing = available). An item's text, what is embedded, is its
  title, description, category and tags joined.
- **Interactions**: user, item, optional event (:data:`EVENT_WEIGHTS`: view 1, click 2, cart 3,
  buy 5; a kind not listed weighs 1 and is named in the summary's warnings) and timestamp
  (ISO 8601 with or without a zone, ``05/01/2024 10:00``, ``2024年5月1日 10:00``, epoch seconds or
  milliseconds; all to UTC, a time without a zone read as UTC). Without a timestamp column, the
  file's order is the order of time (a warning says so). An interaction naming an item the
  catalogue lacks is an error naming the first few, unless ``drop_unknown`` skips them (counted).
  The items' id column given by name names the interactions' item column too when that file has it.

Every error is one :class:`~aigc.errors.InvalidInput` line naming the file, the row and the fix.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import scipy.sparse as sp

from aigc.apps import lang_of
from aigc.errors import InvalidInput


def _key(name: Any) -> str:
    """A column name or event kind as compared: case folded, spaces, '-' and '_' dropped."""
    return re.sub(r"[\s_\-]+", "", str(name)).casefold()

# Compared case-insensitively, spaces, '-' and '_' ignored; the first present wins.
ITEM_COLUMNS = ("item", "item_id", "itemid", "sku", "product_id", "product", "id", "商品id", "商品编号", "商品",
                "物品id", "物品", "编号")
USER_COLUMNS = ("user", "user_id", "userid", "uid", "customer", "customer_id", "member_id", "visitor_id", "用户",
                "用户id", "客户", "客户id", "会员id", "会员")
EVENT_COLUMNS = ("event", "event_type", "action", "behavior", "behaviour", "behavior_type", "type", "行为",
                 "事件", "行为类型", "事件类型")
TIME_COLUMNS = ("timestamp", "time", "ts", "datetime", "date", "event_time", "created_at", "时间", "时间戳",
                "日期", "发生时间")
TEXT_COLUMNS = {
    "title": ("title", "name", "product_name", "item_name", "标题", "名称", "商品名称", "商品名", "品名"),
    "description": ("description", "desc", "text", "body", "details", "content", "描述", "详情", "商品描述",
                    "文案", "介绍"),
    "category": ("category", "categories", "cat", "type", "类目", "类别", "分类", "品类"),
    "tags": ("tags", "tag", "keywords", "labels", "标签", "关键词"),
}
AVAILABLE_COLUMNS = ("available", "availability", "in_stock", "is_available", "on_sale", "有货", "可售",
                     "是否可售", "上架", "在售")
EVENT_WEIGHTS = {
    "view": 1.0, "pv": 1.0, "impression": 1.0, "浏览": 1.0, "查看": 1.0,
    "click": 2.0, "fav": 2.0, "favorite": 2.0, "favourite": 2.0, "like": 2.0, "点击": 2.0, "收藏": 2.0,
    "cart": 3.0, "add": 3.0, "add_to_cart": 3.0, "addtocart": 3.0, "加购": 3.0, "加入购物车": 3.0,
    "buy": 5.0, "purchase": 5.0, "order": 5.0, "transaction": 5.0, "购买": 5.0, "下单": 5.0, "成交": 5.0,
}
UNKNOWN_EVENT_WEIGHT = 1.0
_WEIGHTS = {_key(k): w for k, w in EVENT_WEIGHTS.items()}
MAX_TEXT_CHARS = 1000  # of an item's text, what the embedder reads (e5 reads 512 tokens at most)
_TRUE = {"1", "true", "yes", "y", "t", "available", "in stock", "in_stock", "是", "有", "有货", "可售", "在售", "上架"}
_FALSE = {"0", "false", "no", "n", "f", "unavailable", "out of stock", "out_of_stock", "sold out", "否", "无货",
          "缺货", "不可售", "下架", "售罄"}
_TAG_SPLIT = re.compile(r"[,;|/、，；]")


@dataclass
class Catalogue:
    """Items, in file order: ids, display titles, the texts that are embedded, categories,
    availability and the language of each text."""

    ids: list[str]
    titles: list[str]
    texts: list[str]
    categories: list[str]
    available: np.ndarray  # (n,) bool
    columns: dict[str, str | None] = field(default_factory=dict)  # role -> the column used
    tags: list[list[str]] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.ids)

    @property
    def langs(self) -> list[str]:
        return [lang_of(t) for t in self.texts]

    def index(self) -> dict[str, int]:
        return {item: i for i, item in enumerate(self.ids)}

    def attributes(self) -> tuple[sp.csr_matrix, np.ndarray, list[str]]:
        """``(matrix, groups, values)``: items x attribute values (groups: 0 category, 1 tags, 2 the
        text's language), each row summing to 1 within each group (an item's tags share theirs; a
        missing category or tags is the value ``(none)``)."""
        values: dict[tuple[int, str], int] = {}
        rows, cols, data = [], [], []
        for i in range(len(self.ids)):
            per_group = ([self.categories[i] or "(none)"], (self.tags[i] if self.tags else []) or ["(none)"],
                         [lang_of(self.texts[i])])
            for g, names in enumerate(per_group):
                names = list(dict.fromkeys(names))
                for name in names:
                    rows.append(i)
                    cols.append(values.setdefault((g, name), len(values)))
                    data.append(1.0 / len(names))
        matrix = sp.csr_matrix((np.array(data, dtype=np.float32), (rows, cols)), shape=(len(self.ids), len(values)))
        groups = np.array([g for g, _ in values], dtype=np.int64)
        return matrix, groups, [f"{('category', 'tag', 'lang')[g]}:{name}" for g, name in values]


@dataclass
class Interactions:
    """One row per interaction, items as catalogue indices, users as indices into ``user_ids``."""

    user_ids: list[str]
    user: np.ndarray  # (n,) int64
    item: np.ndarray  # (n,) int64
    weight: np.ndarray  # (n,) float32, the event's weight
    time: np.ndarray  # (n,) float64 UTC seconds
    columns: dict[str, str | None] = field(default_factory=dict)
    events: dict[str, int] = field(default_factory=dict)  # kind -> rows
    unknown_events: dict[str, int] = field(default_factory=dict)  # kinds weighted UNKNOWN_EVENT_WEIGHT
    dropped_unknown: int = 0
    warnings: list[str] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.user)


# -- reading frames --------------------------------------------------------------------------


def _frame(source: Any, what: str) -> tuple[pd.DataFrame, str]:
    """A frame of stripped strings (None = missing) and the name errors call it by."""
    if isinstance(source, pd.DataFrame):
        from aigc.data.table_sources import clean_cell

        if source.empty:
            raise InvalidInput(f"the {what} frame has no rows: pass a non-empty table")
        frame = pd.DataFrame({str(c): pd.Series([clean_cell(v) for v in source[c]], dtype=object)
                              for c in source.columns})
        frame.attrs["format"] = "frame"
        return frame, f"the {what} frame"
    from aigc.data.table_sources import read_table

    path = Path(source)
    header = None if path.suffix.lower() in (".parquet", ".jsonl", ".json") else True
    frame = read_table(path, header=header)
    return frame, path.name


def _row(frame: pd.DataFrame, i: int) -> str:
    """How an error names data row ``i`` (from 0): a file's row counting its header as row 1, or a
    JSONL/Parquet record or a frame's row from 1."""
    if frame.attrs.get("format") in ("jsonl", "parquet"):
        return f"record {i + 1}"
    if frame.attrs.get("format") == "frame":
        return f"row {i + 1}"
    return f"row {i + 2}"


def find_column(frame: pd.DataFrame, given: str | None, names: Sequence[str], role: str, where: str,
                option: str, required: bool = True) -> str | None:
    """The column playing ``role``: ``given`` (it must exist), else the first of ``names`` present."""
    columns = [str(c) for c in frame.columns]
    if given is not None:
        match = [c for c in columns if c == given] or [c for c in columns if _key(c) == _key(given)]
        if not match:
            raise InvalidInput(f"{option} {given!r} is not a column of {where} (its columns: "
                               f"{', '.join(columns)}): pass one of those")
        return match[0]
    keys = {_key(c): c for c in reversed(columns)}
    for name in names:
        if _key(name) in keys:
            return keys[_key(name)]
    if required:
        raise InvalidInput(f"{where} has no {role} column (looked for {', '.join(names[:6])}...; its columns: "
                           f"{', '.join(columns)}): name it with {option}")
    return None


# -- items -----------------------------------------------------------------------------------


def _available(value: str | None, frame: pd.DataFrame, i: int, column: str, where: str) -> bool:
    if value is None:
        return True
    v = value.strip().casefold()
    if v in _TRUE:
        return True
    if v in _FALSE:
        return False
    raise InvalidInput(f"{where} {_row(frame, i)}: {column} is {value!r}: write yes/no, true/false or 1/0")


def read_items(source: Any, *, item_column: str | None = None, title_column: str | None = None,
               description_column: str | None = None, category_column: str | None = None,
               tags_column: str | None = None, available_column: str | None = None) -> Catalogue:
    """A catalogue from a file or a frame: see the module docstring."""
    frame, where = _frame(source, "items")
    id_col = find_column(frame, item_column, ITEM_COLUMNS, "item id", where, "--item-column")
    given = {"title": title_column, "description": description_column, "category": category_column,
             "tags": tags_column}
    cols: dict[str, str | None] = {"item": id_col}
    for role, names in TEXT_COLUMNS.items():
        found = find_column(frame, given[role], names, role, where, f"--{role}-column", required=False)
        cols[role] = found if found != id_col else None
    if not any(cols[r] for r in TEXT_COLUMNS):
        raise InvalidInput(f"{where} has no text column (looked for title, description, category, tags, 标题, 描述, "
                           f"类目...; its columns: {', '.join(map(str, frame.columns))}): name one with "
                           "--title-column or --description-column")
    cols["available"] = find_column(frame, available_column, AVAILABLE_COLUMNS, "available", where,
                                    "--available-column", required=False)
    ids, titles, texts, categories, tags, available = [], [], [], [], [], []
    first_row: dict[str, int] = {}
    records = frame.to_dict("records")
    for i, row in enumerate(records):
        item = row[id_col]
        if item is None:
            raise InvalidInput(f"{where} {_row(frame, i)}: the item id ({id_col}) is empty: give every item an id")
        if item in first_row:
            raise InvalidInput(f"{where} {_row(frame, i)}: item {item!r} is listed twice (first at "
                               f"{_row(frame, first_row[item])}): keep one row per item")
        first_row[item] = i
        parts = {r: row[c] if c else None for r, c in cols.items() if r in TEXT_COLUMNS}
        text = " · ".join(p for p in (parts["title"], parts["description"], parts["category"], parts["tags"]) if p)
        ids.append(item)
        titles.append(parts["title"] or (parts["description"] or item)[:40])
        texts.append(text[:MAX_TEXT_CHARS] or item)
        categories.append(parts["category"] or "")
        tags.append([t.strip() for t in _TAG_SPLIT.split(parts["tags"] or "") if t.strip()])
        available.append(_available(row[cols["available"]], frame, i, cols["available"], where)
                         if cols["available"] else True)
    return Catalogue(ids, titles, texts, categories, np.array(available, dtype=bool), cols, tags)


# -- interactions ----------------------------------------------------------------------------


def event_weight(kind: str | None) -> float | None:
    """The weight of an event kind (None when the kind is not one we know)."""
    if kind is None or not _key(kind):
        return UNKNOWN_EVENT_WEIGHT
    return _WEIGHTS.get(_key(kind))


def parse_times(values: Sequence[str | None], frame: pd.DataFrame, column: str, where: str) -> np.ndarray:
    """(n,) float64 UTC seconds (:mod:`aigc.data.times`; a time without a zone is UTC, and any bare
    number is seconds, or milliseconds from 1e11, since only the order of events matters here);
    the first value that is no time is an error naming its row."""
    from aigc.data.times import to_utc, utc_seconds

    values = list(values)
    for i, v in enumerate(values):
        if v is None or (isinstance(v, float) and v != v) or not str(v).strip():
            raise InvalidInput(f"{where} {_row(frame, i)}: the timestamp ({column}) is empty: fill it in or drop "
                               "the row")
    times = to_utc(values, "UTC", any_number=True)
    bad = times.isna().to_numpy()
    if bad.any():
        i = int(bad.argmax())
        raise InvalidInput(f"{where} {_row(frame, i)}: {column} {values[i]!r} is not a time: write e.g. "
                           "2024-05-01T10:00:00+08:00, 2024-05-01 10:00 (UTC) or epoch seconds")
    return utc_seconds(times)


def read_interactions(source: Any, catalogue: Catalogue, *, user_column: str | None = None,
                      item_column: str | None = None, event_column: str | None = None,
                      time_column: str | None = None, drop_unknown: bool = False) -> Interactions:
    """Interactions from a file or a frame, their items looked up in ``catalogue``."""
    frame, where = _frame(source, "interactions")
    cols: dict[str, str | None] = {
        "user": find_column(frame, user_column, USER_COLUMNS, "user", where, "--user-column"),
        # the items' --item-column names this file's column too when it has one
        "item": find_column(frame, item_column if item_column in frame.columns else None, ITEM_COLUMNS, "item",
                            where, "--item-column"),
        "event": find_column(frame, event_column, EVENT_COLUMNS, "event", where, "--event-column", required=False),
        "time": find_column(frame, time_column, TIME_COLUMNS, "timestamp", where, "--time-column", required=False),
    }
    if cols["user"] == cols["item"]:
        raise InvalidInput(f"{where}: the user and item columns are both {cols['user']!r}: name them with "
                           "--user-column and --item-column")
    users, items = frame[cols["user"]], frame[cols["item"]]
    for name, series in (("user", users), ("item", items)):
        empty = series.isna().to_numpy()
        if empty.any():
            i = int(np.argmax(empty))
            raise InvalidInput(f"{where} {_row(frame, i)}: the {name} ({cols[name]}) is empty: fill it in or drop "
                               "the row")
    index = catalogue.index()
    item_idx = np.fromiter((index.get(v, -1) for v in items), dtype=np.int64, count=len(items))
    unknown = item_idx < 0
    warnings: list[str] = []
    dropped = int(unknown.sum())
    if dropped:
        names = list(dict.fromkeys(items[unknown]))
        if not drop_unknown:
            raise InvalidInput(f"{where}: {dropped} interactions name {len(names)} items that are not in the catalogue "
                               f"(e.g. {', '.join(repr(n) for n in names[:5])}): add them to the items, or pass "
                               "--drop-unknown to skip those rows")
        warnings.append(f"skipped {dropped} interactions with {len(names)} items not in the catalogue "
                        f"(e.g. {', '.join(repr(n) for n in names[:3])})")
    keep = ~unknown
    if not keep.any():
        raise InvalidInput(f"{where}: no interaction names an item of the catalogue: check the item ids")
    if cols["time"]:
        times = parse_times(frame[cols["time"]].tolist(), frame, cols["time"], where)
    else:
        times = np.arange(len(frame), dtype=np.float64)
        warnings.append(f"{where} has no timestamp column: its row order is taken as the order of time "
                        "(name one with --time-column)")
    events: Counter = Counter()
    unknown_events: Counter = Counter()
    weights = np.ones(len(frame), dtype=np.float32)
    if cols["event"]:
        kinds = frame[cols["event"]].tolist()
        for i, kind in enumerate(kinds):
            w = event_weight(kind)
            label = "(none)" if kind is None else str(kind)
            if w is None:
                unknown_events[label] += 1
                w = UNKNOWN_EVENT_WEIGHT
            events[label] += 1
            weights[i] = w
        if unknown_events:
            warnings.append("event kinds weighted 1 as unknown: " + ", ".join(
                f"{k} ({n})" for k, n in unknown_events.most_common(10)))
    user_codes, user_ids = pd.factorize(users[keep], sort=False)
    return Interactions(user_ids=[str(u) for u in user_ids], user=user_codes.astype(np.int64),
                        item=item_idx[keep], weight=weights[keep], time=times[keep], columns=cols,
                        events=dict(events), unknown_events=dict(unknown_events),
                        dropped_unknown=dropped if drop_unknown else 0, warnings=warnings)
