"""Tables as a modality: reading, kind inference, metadata files (ours and SDV's), PII
replacement, bad input, the model-frame round trip, routing and the CLI.

Every test builds its own tiny table in ``tmp_path``; only the last one reads ../shared (beside the
repo) and it skips when that folder is absent.
"""

from __future__ import annotations

import json
import random
import re
import uuid
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

import aigc
from aigc.cli.main import app
from aigc.data.tables import (KINDS, MODELLED, TableMetadata, from_model_frame, infer_metadata, ingest_table,
                              is_table_source, load_metadata_file, read_table, read_table_split,
                              to_model_frame)
from aigc.errors import InvalidInput
from aigc.workspace import Workspace

SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
ALL_TRAIN = (1.0, 0.0, 0.0)
WORDS = ["great", "value", "the", "kettle", "boils", "fast", "and", "quietly", "lid", "handle"]


@pytest.fixture
def ws(tmp_path: Path) -> Workspace:
    return Workspace(tmp_path / "ws")


def tricky_rows(n: int = 40, seed: int = 0) -> list[dict[str, str]]:
    """A column of each kind, spelled the awkward way."""
    rng = random.Random(seed)
    phones = [f"1{rng.choice('3589')}{rng.randint(100000000, 999999999)}" for _ in range(n // 2)]
    rows = []
    for i in range(n):
        rows.append({
            "row": str(i + 1),                                        # row numbers -> id
            "count": str(rng.randint(0, 9)),                          # whole numbers -> discrete
            "price": f"{rng.uniform(1, 99):.2f}",                     # decimals -> continuous
            "age": "?" if i % 8 == 0 else f" {rng.randint(18, 80)}",  # '?' missing, a leading space
            "vip": rng.choice(["是", "否"]),                           # boolean spelled in Chinese
            "joined": (f"2024-0{rng.randint(1, 9)}-{rng.randint(10, 28)}" if i % 3
                       else f"{rng.randint(10, 28)}.0{rng.randint(1, 9)}.2023"),  # two date formats
            "uid": str(uuid.UUID(int=rng.getrandbits(128), version=4)),
            "comment": " ".join(rng.choice(WORDS) for _ in range(12)),  # long free text
            "phone": phones[i // 2],                                  # each number on two rows
            "email": f"user{i}@mail{rng.randint(1, 5)}.com",
            "city": rng.choice(["北京", "上海", "广州"]),
        })
    return rows


def write_csv(path: Path, rows: list[dict[str, str]], sep: str = ",", header: bool = True,
              encoding: str = "utf-8") -> Path:
    pd.DataFrame(rows).to_csv(path, sep=sep, header=header, index=False, encoding=encoding)
    return path


def assert_nothing_written(ws: Workspace, name: str) -> None:
    assert not ws.has_dataset(name)
    assert not ws.dataset_path(name).exists()
    assert not list((ws.root / "tmp").glob("*")) if (ws.root / "tmp").exists() else True


# -- kinds --------------------------------------------------------------------------------------


def test_kinds_of_tricky_columns(tmp_path: Path) -> None:
    meta = infer_metadata(read_table(write_csv(tmp_path / "t.csv", tricky_rows())))
    kinds = {c.name: c.kind for c in meta.columns}
    assert kinds == {"row": "id", "count": "discrete", "price": "continuous", "age": "discrete",
                     "vip": "boolean", "joined": "datetime", "uid": "id", "comment": "text", "phone": "pii",
                     "email": "pii",
                     "city": "categorical"}
    assert all(c.reason for c in meta.columns)
    age, price, vip, joined = (meta.column(n) for n in ("age", "price", "vip", "joined"))
    assert age.missing == pytest.approx(5 / 40) and age.decimals == 0 and 18 <= age.min <= age.max <= 80
    assert price.decimals == 2
    assert set(vip.categories) == {"是", "否"} and sum(vip.categories.values()) == 40
    assert joined.datetime_format == "%Y-%m-%d" and "2 formats" in joined.reason  # the more used one
    assert meta.column("phone").entity == "CN_MOBILE" and meta.column("email").entity == "EMAIL"
    assert meta.column("uid").pattern == "uuid"
    assert [c.name for c in meta.modelled()] == ["count", "price", "age", "vip", "joined", "city"]
    assert meta.primary_key == "row"
    assert set(KINDS) > set(MODELLED)


@pytest.mark.parametrize(("values", "fmt", "earliest"), [
    (["2024年1月31日", "2023年12月1日"], "%Y年%m月%d日", "2023-12-01"),
    (["2024/01/31", "2024/2/1"], "%Y/%m/%d", "2024-01-31"),
    (["31.01.2024", "01.02.2024"], "%d.%m.%Y", "2024-01-31"),
    (["2024-01-31 08:30:00", "2024-02-01 23:59:59"], "%Y-%m-%d %H:%M:%S", "2024-01-31 08:30:00"),
    (["2024-01-31T08:30:00.250Z", "2024-02-01T23:59:59.000Z"], "%Y-%m-%dT%H:%M:%S.%fZ",
     "2024-01-31 08:30:00.25"),
])
def test_date_formats_are_recognised_and_recorded(values: list[str], fmt: str, earliest: str) -> None:
    col = infer_metadata(pd.DataFrame({"d": values * 3, "n": ["1", "2", "3"] * 2})).column("d")
    assert (col.kind, col.datetime_format) == ("datetime", fmt)
    assert col.min == pd.Timestamp(earliest).timestamp()  # seconds since the epoch, read as UTC


def test_typed_frames_from_python_infer_the_same(tmp_path: Path) -> None:
    frame = pd.DataFrame({"n": [1, 2, None, 4] * 5, "x": [0.5, 1.25, 2.0, None] * 5,
                          "flag": [True, False] * 10,
                          "day": pd.to_datetime(["2024-01-02", "2024-03-04"] * 10)})
    kinds = {c.name: (c.kind, c.decimals) for c in infer_metadata(frame).columns}
    assert kinds == {"n": ("discrete", 0), "x": ("continuous", 2), "flag": ("boolean", None),
                     "day": ("datetime", None)}


def test_pii_columns_are_replaced_consistently_and_never_stored(ws: Workspace, tmp_path: Path) -> None:
    rows = tricky_rows()
    card = ingest_table(ws, write_csv(tmp_path / "t.csv", rows), "t", split=(0.6, 0.2, 0.2))
    assert card["pii_columns"] == {"phone": "CN_MOBILE", "email": "EMAIL"}
    assert card["pii"]["entities"] == {"CN_MOBILE": 40, "EMAIL": 40} and card["pii"]["unredacted"] == 0
    stored = pd.concat([read_table_split(ws.dataset_path("t"), s) for s in ("train", "val", "test")])
    assert len(stored) == 40
    # Same original -> same fake: the 20 phones stay 20 distinct fakes, paired on the same rows as before.
    by_uid = dict(zip(stored["uid"], stored["phone"]))
    for a, b in zip(rows[::2], rows[1::2]):
        assert by_uid[a["uid"]] == by_uid[b["uid"]]
    assert stored["phone"].nunique() == 20 and all(re.fullmatch(r"1[3-9]\d{9}", p) for p in stored["phone"])
    assert all(e.endswith(("@example.com", "@example.org", "@example.net")) for e in stored["email"])
    originals = {r["phone"] for r in rows} | {r["email"] for r in rows}
    cells = {str(v) for v in stored.to_numpy().ravel()}
    assert not originals & cells
    folder = b"".join(p.read_bytes() for p in ws.dataset_path("t").iterdir())
    assert not any(o.encode() in folder for o in originals)
    assert not any(o in json.dumps(ws.get_dataset("t")["card"]) for o in originals)


@pytest.mark.parametrize("mode", ["report", "redact", "drop"])
def test_pii_inside_a_text_column_follows_the_pii_mode(ws: Workspace, tmp_path: Path, mode: str) -> None:
    late = "the parcel arrived late and the box was open"
    rows = [{"note": f"{late} {'call 13812345678 ' if i < 3 else ''}{i}", "stars": str(i % 5)}
            for i in range(30)]
    card = ingest_table(ws, write_csv(tmp_path / "n.csv", rows), "n", pii=mode, split=ALL_TRAIN)
    assert card["kinds"]["text"] == ["note"] and card["pii"]["by_column"] == {"note": {"CN_MOBILE": 3}}
    notes = " ".join(read_table_split(ws.dataset_path("n"), "train")["note"])
    assert ("13812345678" in notes) == (mode == "report")
    assert card["pii"]["unredacted"] == (3 if mode == "report" else 0)
    assert card["counts"]["kept"] == (27 if mode == "drop" else 30)


def test_header_detection_and_delimiters(tmp_path: Path) -> None:
    rows = [{"age": str(20 + i), "job": ["clerk", "nurse", "chef"][i % 3], "hours": str(30 + i % 5)}
            for i in range(12)]
    with_header = read_table(write_csv(tmp_path / "a.csv", rows))
    assert list(with_header.columns) == ["age", "job", "hours"] and with_header.attrs["header"] is True
    # A tab-separated .dat without a header: columns are numbered as `cut -f` counts them.
    dat = read_table(write_csv(tmp_path / "a.dat", rows, sep="\t", header=False))
    assert list(dat.columns) == ["1", "2", "3"] and len(dat) == 12 and dat.attrs["delimiter"] == "\t"
    assert dat.iloc[0].tolist() == ["20", "clerk", "30"]
    named = read_table(tmp_path / "a.dat", columns="age,job,hours")
    assert list(named.columns) == ["age", "job", "hours"] and len(named) == 12
    semi = read_table(write_csv(tmp_path / "s.txt", rows, sep=";"))
    assert list(semi.columns) == ["age", "job", "hours"] and semi.attrs["delimiter"] == ";"
    spaces = tmp_path / "w.dat"
    spaces.write_text("".join(f"{r['age']}   {r['job']}  {r['hours']}\n" for r in rows), encoding="utf-8")
    assert read_table(spaces).shape == (12, 3)
    # An all-text first row over all-text columns is a header when none of its cells repeats below.
    forced = read_table(tmp_path / "a.csv", header=False)
    assert forced.iloc[0].tolist() == ["age", "job", "hours"]
    cities = [{"城市": c, "人数": str(i)} for i, c in enumerate(["北京", "上海"] * 3)]
    gbk = write_csv(tmp_path / "g.csv", cities, encoding="gbk")
    frame = read_table(gbk)
    assert list(frame.columns) == ["城市", "人数"] and frame.attrs["encoding"] == "gb18030"


def test_parquet_jsonl_and_excel(tmp_path: Path) -> None:
    frame = pd.DataFrame({"n": [1, 2, 3, 4] * 3, "x": [0.5, 1.5, None, 2.25] * 3,
                          "c": ["a", "b", "a", None] * 3})
    frame.to_parquet(tmp_path / "t.parquet")
    frame.to_excel(tmp_path / "t.xlsx", index=False)
    lines = [json.dumps(r) + "\n" for r in frame.to_dict("records")]
    (tmp_path / "t.jsonl").write_text("".join(lines), "utf-8")
    for name in ("t.parquet", "t.xlsx", "t.jsonl"):
        meta = infer_metadata(read_table(tmp_path / name))
        assert [(c.kind, c.missing) for c in meta.columns] == [("discrete", 0), ("continuous", 0.25),
                                                               ("categorical", 0.25)], name
    (tmp_path / "bad.jsonl").write_text('{"n": 1}\n{"n": 2,}\n', encoding="utf-8")
    with pytest.raises(InvalidInput, match=r"bad\.jsonl: line 2 is not valid JSON \(.*\): fix or remove"):
        read_table(tmp_path / "bad.jsonl")


# -- metadata files ------------------------------------------------------------------------------


def sdv_rows() -> list[dict[str, str]]:
    return [{"user_id": f"U_{i:04d}", "age": str(30 + i % 7), "score": f"{i / 3:.3f}",
             "zip": f"0{2100 + i % 4}", "signup": f"0{1 + i % 9}/0{1 + i % 3}/2024",
             "contact": f"u{i}@shop.cn", "active": "TRUE" if i % 2 else "FALSE",
             "country": ["CN", "US", "FR"][i % 3]} for i in range(24)]


SDV_SINGLE = {
    "METADATA_SPEC_VERSION": "SINGLE_TABLE_V1",
    "primary_key": "user_id",
    "columns": {
        "user_id": {"sdtype": "id", "regex_format": "U_[0-9]{4}"},
        "age": {"sdtype": "numerical", "computer_representation": "Int64"},
        "score": {"sdtype": "numerical", "computer_representation": "Float"},
        "zip": {"sdtype": "categorical"},
        "signup": {"sdtype": "datetime", "datetime_format": "%d/%m/%Y"},
        "contact": {"sdtype": "email", "pii": True},
        "active": {"sdtype": "boolean"},
        "country": {"sdtype": "country_code"},
    },
}


@pytest.mark.parametrize("doc", [SDV_SINGLE, {"METADATA_SPEC_VERSION": "V1", "relationships": [],
                                              "tables": {"users": {k: v for k, v in SDV_SINGLE.items()
                                                                   if k != "METADATA_SPEC_VERSION"}}}])
def test_sdv_metadata_json(tmp_path: Path, doc: dict) -> None:
    frame = read_table(write_csv(tmp_path / "u.csv", sdv_rows()))
    (tmp_path / "meta.json").write_text(json.dumps(doc), encoding="utf-8")
    meta = infer_metadata(frame, overrides=load_metadata_file(tmp_path / "meta.json", list(frame.columns)))
    assert {c.name: c.kind for c in meta.columns} == {
        "user_id": "id", "age": "discrete", "score": "continuous", "zip": "categorical", "signup": "datetime",
        "contact": "pii", "active": "boolean", "country": "categorical"}
    assert meta.primary_key == "user_id" and meta.column("contact").entity == "EMAIL"
    # Codes, not numbers: the leading zero stays.
    assert meta.column("zip").categories == {"02100": 6, "02101": 6, "02102": 6, "02103": 6}
    assert meta.column("signup").datetime_format == "%d/%m/%Y"
    assert meta.column("signup").min == pytest.approx(pd.Timestamp("2024-01-01").timestamp())  # day first


def test_our_metadata_partial_and_round_trip(ws: Workspace, tmp_path: Path) -> None:
    path = write_csv(tmp_path / "u.csv", sdv_rows())
    partial = {"columns": [{"name": "age", "kind": "categorical"}], "target": "active",
               "quasi_identifiers": ["age", "country"],
               "constraints": [{"type": "range", "column": "score", "low": 0, "high": 8}]}
    (tmp_path / "m.json").write_text(json.dumps(partial), encoding="utf-8")
    card = ingest_table(ws, path, "u", metadata=tmp_path / "m.json", split=ALL_TRAIN)
    meta = TableMetadata.from_dict(card["metadata"])
    assert meta.column("age").kind == "categorical"
    assert meta.column("score").kind == "continuous"  # the rest inferred
    assert meta.target == "active" and meta.quasi_identifiers == ["age", "country"]
    assert meta.constraints == partial["constraints"]
    assert TableMetadata.from_dict(meta.to_dict()) == meta
    # A metadata file may describe a column that --drop-column leaves out.
    (tmp_path / "sdv.json").write_text(json.dumps(SDV_SINGLE), encoding="utf-8")
    card = ingest_table(ws, path, "u2", metadata=tmp_path / "sdv.json", drop_columns=["country"],
                        split=ALL_TRAIN)
    assert "country" not in [c["name"] for c in card["metadata"]["columns"]]
    assert card["dropped_columns"] == ["country"]
    assert card["kinds"]["pii"] == ["contact"]


@pytest.mark.parametrize(("doc", "message"), [
    ({"columns": {"agee": {"kind": "discrete"}}},
     r"names column 'agee', which the table does not have \(columns: user_id, age, .*\): fix the name or "
     r"remove it"),
    ({"columns": [{"name": "age", "kind": "numbr"}]},
     r"column 'age' has kind 'numbr', not one of continuous, "),
    ({"tables": {"a": {}, "b": {}}}, r"describes 2 tables \(a, b\), not one: keep only this table's entry"),
    ({"primary_key": "id"}, r"names primary_key 'id', which the table does not have"),
])
def test_bad_metadata_files(ws: Workspace, tmp_path: Path, doc: dict, message: str) -> None:
    (tmp_path / "m.json").write_text(json.dumps(doc), encoding="utf-8")
    with pytest.raises(InvalidInput, match=message):
        ingest_table(ws, write_csv(tmp_path / "u.csv", sdv_rows()), "u", metadata=tmp_path / "m.json")
    assert_nothing_written(ws, "u")


# -- bad input -----------------------------------------------------------------------------------


def _letters(rng: random.Random) -> str:
    return "".join(rng.choice("abcdefghijklmnopqrstuvwxyz") for _ in range(8))


def bad_tables() -> list[tuple[str, str, str]]:
    rng = random.Random(1)
    ok = [f"{i},{['a', 'b'][i % 2]}" for i in range(30)]
    return [
        ("one_row", "x,y\n1,a\n", r"has 1 row, and a data set needs at least 2, one to learn from and one "
                                  r"to check against: add rows"),
        ("duplicates", "x,y\n1,a\n1,a\n", r"has 1 row after dropping 1 duplicate row\(s\)"),
        ("empty_column", "x,y,z\n" + "\n".join(f"{line},?" for line in ok),
         r"column 'z' is empty in all 30 rows: drop it \(--drop-column z, or drop_columns=\['z'\]\) or fill "
         r"it in"),
        ("mixed", "x,y\n" + "\n".join(ok[:27]) + "\nunknown,a\nn/k,b\nunknown,b\n",
         r"column 'x' holds numbers except 3 value\(s\) such as 'unknown', 'n/k': correct them, or declare "
         r"the column categorical in --metadata"),
        ("categories", "word,n\n" + "\n".join(f"{_letters(rng)},{i % 3}" for i in range(10_001)),
         r"column 'word' has 10,001 distinct values, too many categories to learn \(at most 1,000\): declare "
         r"it id or text in --metadata, or drop it \(--drop-column word\)"),
        ("bad_date", "d,y\n" + "\n".join(f"2024-01-{10 + i},a" for i in range(9)) + "\n2024-13-45,b\n",
         r"column 'd' has dates that do not parse: '2024-13-45' \(beside '2024-01-10'\): correct them, or "
         r"declare the column categorical in --metadata"),
        ("ambiguous_dates", "d,y\n31/01/2024,a\n01/31/2024,b\n02/03/2024,a\n15/02/2024,b\n",
         r"column 'd' mixes date formats that read '02/03/2024' two ways, e.g. '31/01/2024' and "
         r"'01/31/2024': write its dates in one format, or declare its datetime_format in --metadata"),
    ]


@pytest.mark.parametrize(("name", "content", "message"), bad_tables(), ids=[t[0] for t in bad_tables()])
def test_bad_tables_are_refused_with_one_line_and_nothing_written(ws: Workspace, tmp_path: Path, name: str,
                                                                   content: str, message: str) -> None:
    path = tmp_path / f"{name}.csv"
    path.write_text(content, encoding="utf-8")
    with pytest.raises(InvalidInput, match=message) as info:
        ingest_table(ws, path, name)
    assert "\n" not in str(info.value)
    assert_nothing_written(ws, name)


def test_drop_column_fixes_an_empty_column(ws: Workspace, tmp_path: Path) -> None:
    path = tmp_path / "e.csv"
    path.write_text("x,y,z\n" + "".join(f"{i},{'ab'[i % 2]},\n" for i in range(10)), encoding="utf-8")
    card = ingest_table(ws, path, "e", drop_columns=["z"], split=ALL_TRAIN)
    assert card["dropped_columns"] == ["z"] and card["kinds"] == {"discrete": ["x"], "categorical": ["y"]}
    with pytest.raises(InvalidInput, match=r"no column 'w' to drop \(columns: x, y, z\): fix --drop-column"):
        ingest_table(ws, path, "e2", drop_columns=["w"])


# -- the dataset and the model frame ------------------------------------------------------------


def test_split_dedupe_and_card(ws: Workspace, tmp_path: Path) -> None:
    rows = tricky_rows(60)
    path = write_csv(tmp_path / "t.csv", rows + rows[:5])  # five exact duplicates
    card = ingest_table(ws, path, "t")
    c = card["counts"]
    assert (c["read"], c["kept"], c["duplicates"], c["dropped"]) == (65, 60, 5, 5)
    assert c["train"] + c["val"] + c["test"] == 60 and c["train"] > c["val"]
    assert card["modality"] == "table" and card["format"] == "csv"
    assert card["text_columns"]["columns"] == ["comment"]
    assert card["dropped_by_reason"] == {"duplicate row": 5}
    row = ws.get_dataset("t")
    assert row["modality"] == "table" and row["n_train"] == c["train"]
    # Deterministic: the same rows land in the same splits again.
    ingest_table(ws, path, "t", replace=True)
    assert list(read_table_split(ws.dataset_path("t"), "test")["uid"]) == [
        r["uid"] for r in rows if r["uid"] in set(read_table_split(ws.dataset_path("t"), "test")["uid"])]
    one = ingest_table(ws, path, "all", split=ALL_TRAIN)
    assert one["empty_splits"] == ["val", "test"]
    assert len(read_table_split(ws.dataset_path("all"), "val")) == 0


def test_model_frame_round_trip(ws: Workspace, tmp_path: Path) -> None:
    rows = tricky_rows()
    ingest_table(ws, write_csv(tmp_path / "t.csv", rows), "t", split=ALL_TRAIN)
    meta = TableMetadata.from_dict(ws.get_dataset("t")["card"]["metadata"])
    stored = read_table_split(ws.dataset_path("t"), "train")
    model = to_model_frame(stored, meta)
    assert list(model.columns) == ["count", "price", "age", "vip", "joined", "city"]
    assert model["age"].dtype == np.float64 and model["age"].isna().sum() == 5
    assert model["vip"].dtype == object and set(model["vip"]) == {"是", "否"}
    assert model["joined"].dtype == np.float64
    back = from_model_frame(model, meta, np.random.default_rng(0))
    assert list(back.columns) == list(stored.columns)
    for col in ("count", "price", "age", "vip", "joined", "city"):
        pd.testing.assert_series_equal(back[col], stored[col], check_names=False)
    assert str(back["age"].dtype) == "Int64" and back["joined"].str.fullmatch(r"\d{4}-\d{2}-\d{2}").all()
    assert back["row"].tolist() == list(range(1, 41))  # ids regenerated from the first
    assert back["uid"].is_unique and back["uid"].str.fullmatch(r"[0-9a-f-]{36}").all()
    assert not set(back["uid"]) & set(stored["uid"])
    assert back["phone"].str.fullmatch(r"1[3-9]\d{9}").all() and back["comment"].isna().all()
    # Sampled values that are not in the data still come back typed and formatted.
    model.loc[0, ["age", "price", "joined"]] = [33.4, 12.346, 1_700_000_000.0]
    back = from_model_frame(model, meta, np.random.default_rng(0))
    assert (back.loc[0, "age"], back.loc[0, "price"], back.loc[0, "joined"]) == (33, 12.35, "2023-11-14")


def test_coded_ids_are_regenerated_in_their_shape(tmp_path: Path) -> None:
    frame = pd.DataFrame({"order_no": [f"ORD-{i:05d}" for i in range(30)],
                          "n": [str(i % 4) for i in range(30)]})
    meta = infer_metadata(frame)
    assert meta.column("order_no").kind == "id" and meta.column("order_no").pattern == "ORD-99999"
    back = from_model_frame(to_model_frame(frame, meta), meta, np.random.default_rng(1))
    assert back["order_no"].is_unique and back["order_no"].str.fullmatch(r"ORD-\d{5}").all()


# -- routing and the CLI -------------------------------------------------------------------------


def test_routing_text_stays_text_and_tables_become_tables(tmp_path: Path) -> None:
    text_csv = tmp_path / "shop.csv"
    rows = "".join(f"a fine cup number {i},{'ab'[i % 2]}\n" for i in range(20))
    text_csv.write_text("text,category\n" + rows, encoding="utf-8")
    table_csv = write_csv(tmp_path / "t.csv", tricky_rows())
    assert not is_table_source(text_csv, {}) and is_table_source(text_csv, {"table": True})
    assert is_table_source(table_csv, {}) and not is_table_source(table_csv, {"text_column": "comment"})
    assert not is_table_source(tmp_path / "missing.csv", {})
    assert aigc.ingest(text_csv, "shop")["modality"] == "text"
    assert aigc.ingest(text_csv, "shop_t", table=True)["modality"] == "table"
    assert aigc.ingest(table_csv, "t")["modality"] == "table"
    assert aigc.ingest(table_csv, "t_text", text_column="comment")["modality"] == "text"
    with pytest.raises(InvalidInput, match=r"--text-column does not apply to the table .*: drop it"):
        aigc.ingest(table_csv, "bad", table=True, text_column="comment")


runner = CliRunner()


def test_cli_ingest_and_show_a_table(tmp_path: Path) -> None:
    ws = tmp_path / "cli-ws"
    path = write_csv(tmp_path / "x.csv", tricky_rows())
    r = runner.invoke(app, ["ingest", str(path), "--name", "t", "-w", str(ws)])
    assert r.exit_code == 0, r.output
    assert "dataset t: 40 rows kept of 40 read (train" in r.stdout
    assert "  discrete: count, age\n" in r.stdout and "  pii (replaced): phone, email\n" in r.stdout
    assert "  id (regenerated): row, uid\n" in r.stdout and "  text (not learned): comment\n" in r.stdout
    r = runner.invoke(app, ["show", "t", "-w", str(ws)])
    assert r.exit_code == 0 and re.search(r"│ age +│ discrete +│ 12\.5% +│ \d+ \.\. \d+", r.stdout), r.stdout
    assert re.search(r"│ vip +│ boolean +│ 0\.0% +│ [是否] \(\d+\), [是否] \(\d+\)", r.stdout)
    r = runner.invoke(app, ["datasets", "--json", "-w", str(ws)])
    assert json.loads(r.stdout)[0]["modality"] == "table"
    empty = tmp_path / "bad.csv"
    empty.write_text("x,y\n1,\n2,\n", encoding="utf-8")
    r = runner.invoke(app, ["ingest", str(empty), "--name", "b", "--table", "-w", str(ws)])
    assert r.exit_code == 2 and "Traceback" not in r.output
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: column 'y' is empty in all 2 rows"), r.stderr
    r = runner.invoke(app, ["ingest", str(empty), "--name", "b", "--drop-column", "y", "--split", "1,0,0",
                            "-w", str(ws)])
    assert r.exit_code == 0 and "dropped columns: y" in r.stdout, r.output


def test_adult_ingests_as_a_table(ws: Workspace) -> None:
    path = SHARED_DATA / "adult" / "adult.csv"
    if not path.exists():
        pytest.skip("../shared/data/adult is absent")
    card = aigc.ingest(path, "adult", workspace=ws)
    meta = TableMetadata.from_dict(card["metadata"])
    kinds = {c.name: c.kind for c in meta.columns}
    assert kinds["age"] == kinds["fnlwgt"] == kinds["hours-per-week"] == "discrete"
    assert kinds["workclass"] == kinds["income"] == kinds["native-country"] == "categorical"
    assert 0 < meta.column("workclass").missing < 0.1 and "?" not in meta.column("workclass").categories
    assert " Private" not in meta.column("workclass").categories  # values are stripped
    assert card["counts"]["read"] == 32561 and card["counts"]["duplicates"] > 0
