"""The PII corpus (tests/data/pii_dev.jsonl, pii_test.jsonl) is what scripts/make_pii_data.py makes."""

from __future__ import annotations

import collections
import json
import runpy
from pathlib import Path
from types import SimpleNamespace

import pytest

pytest.importorskip("faker")  # a dev-only dependency: the script needs it, src/ never does

REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / "scripts" / "make_pii_data.py"
DATA = REPO / "tests" / "data"


@pytest.fixture(scope="module")
def gen():
    return SimpleNamespace(**runpy.run_path(str(SCRIPT), run_name="make_pii_data"))


def _records(split: str) -> list[dict]:
    lines = (DATA / f"pii_{split}.jsonl").read_text(encoding="utf-8").splitlines()
    return [json.loads(line) for line in lines]


def test_script_reproduces_committed_files(gen, tmp_path):
    assert gen.main(["--seed", str(gen.SEED), "--out", str(tmp_path)]) == 0
    for split in ("dev", "test"):
        committed = (DATA / f"pii_{split}.jsonl").read_bytes()
        assert (tmp_path / f"pii_{split}.jsonl").read_bytes() == committed, split
        assert len(committed) < 3_000_000 and b"\r" not in committed and committed.endswith(b"\n")


def test_test_split_has_200_spans_per_entity_and_100_per_negative_kind(gen):
    records = _records("test")
    per_type = collections.Counter(e["type"] for r in records for e in r["entities"])
    assert set(per_type) == set(gen.ENTITY_TYPES)
    assert min(per_type.values()) >= 200, per_type
    per_lang = collections.Counter((e["type"], e["lang"]) for r in records for e in r["entities"])
    for key in [("PERSON", "zh"), ("PERSON", "en"), ("ADDRESS", "zh"), ("ADDRESS", "en")]:
        assert per_lang[key] >= 200, key
    negatives = collections.Counter(n["kind"] for r in records for n in r["negatives"])
    assert set(negatives) == set(gen.NEGATIVE_KINDS) and min(negatives.values()) >= 100, negatives


def test_split_by_template(gen):
    used = {split: {r["template"] for r in _records(split)} for split in ("dev", "test")}
    assert used["dev"] and used["test"] and not used["dev"] & used["test"]
    assigned = {t.id: t.split for t in gen.templates()}
    assert all(assigned[t] == split for split, ids in used.items() for t in ids)
    # the hard-negative product names are split too
    names = {split: {n["value"] for r in _records(split) for n in r["negatives"]
                     if n["kind"] == "product_name"} for split in ("dev", "test")}
    assert names["dev"] and names["test"] and not names["dev"] & names["test"]
    # both splits cover every domain and language
    for split in ("dev", "test"):
        assert {(r["domain"], r["lang"]) for r in _records(split)} == {
            (d, lang) for d in gen.TEMPLATES for lang in ("zh", "en", "mixed")}


def test_spans_are_exact_and_labels_checked(gen):
    for split in ("dev", "test"):
        for r in _records(split):
            for e in r["entities"]:
                assert r["text"][e["start"]:e["end"]] == e["value"]
            for n in r["negatives"]:
                assert r["text"][n["start"]:n["end"]] == n["value"]
    # the check digits the labels rest on (GB 11643 and GB 32100 examples, a Luhn test number)
    assert gen.id_check("11010519491231002") == "X"
    assert gen.is_valid_uscc("91350100M000100Y43") and not gen.is_valid_uscc("91350100M000100Y44")
    assert gen.luhn_ok("4111111111111111") and not gen.luhn_ok("4111111111111112")
    month13 = "11010519491331002"
    assert gen.is_valid_id("11010519491231002X") and not gen.is_valid_id(month13 + gen.id_check(month13))
