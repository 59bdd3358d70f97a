"""The bundled sample corpus (src/aigc/resources/shop_copy.csv) and the script that makes it."""

from __future__ import annotations

import collections
import csv
import importlib.resources
import importlib.util
import io
import re
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / "scripts" / "make_sample_data.py"
CSV_PATH = REPO / "src" / "aigc" / "resources" / "shop_copy.csv"

CATEGORIES = {"kitchen", "tea", "skincare", "stationery", "outdoor", "home"}
TONES = {"playful", "elegant", "practical"}
LANGS = {"en", "zh"}
CJK = re.compile(r"[\u4e00-\u9fff]")


def _load_script():
    spec = importlib.util.spec_from_file_location("make_sample_data", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules.setdefault("make_sample_data", module)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def gen():
    return _load_script()


@pytest.fixture(scope="module")
def raw() -> bytes:
    return CSV_PATH.read_bytes()


@pytest.fixture(scope="module")
def rows(raw) -> list[dict[str, str]]:
    return list(csv.DictReader(io.StringIO(raw.decode("utf-8"), newline="")))


def test_build_rows_reproduces_committed_csv(gen, raw):
    built = gen.build_rows()
    assert gen.render_csv(built).encode("utf-8") == raw
    # and a second run gives the same rows (no hidden global state)
    assert gen.build_rows() == built


def test_main_writes_the_same_bytes(gen, raw, tmp_path):
    out = tmp_path / "copy.csv"
    assert gen.main([str(out)]) == 0
    assert out.read_bytes() == raw


def test_file_encoding_and_size(raw):
    assert not raw.startswith(b"\xef\xbb\xbf"), "no BOM"
    assert b"\r" not in raw, "'\\n' line endings only"
    assert raw.endswith(b"\n")
    assert len(raw) < 700 * 1024


def test_is_package_data():
    res = importlib.resources.files("aigc") / "resources" / "shop_copy.csv"
    assert res.is_file()


def test_columns_and_balance(raw, rows):
    header = raw.split(b"\n", 1)[0].decode("utf-8")
    assert header == "text,category,tone,lang"
    assert len(rows) == 3600
    for r in rows:
        assert list(r) == ["text", "category", "tone", "lang"]
        assert r["category"] in CATEGORIES and r["category"].isascii()
        assert r["tone"] in TONES
        assert r["lang"] in LANGS
    cells = collections.Counter((r["lang"], r["category"], r["tone"]) for r in rows)
    assert len(cells) == len(CATEGORIES) * len(TONES) * len(LANGS) == 36
    assert set(cells.values()) == {100}


def test_sorted_by_lang_category_tone(rows):
    keys = [(r["lang"], r["category"], r["tone"]) for r in rows]
    assert keys == sorted(keys)


def test_texts_unique_and_sized(rows):
    texts = [r["text"] for r in rows]
    assert len(set(texts)) == len(texts)
    for r in rows:
        t = r["text"]
        assert t == t.strip() and "\n" not in t and "  " not in t
        n = len(t)
        if r["lang"] == "en":
            assert 80 <= n <= 220, t
        else:
            assert 30 <= n <= 90, t


def test_language_and_punctuation(rows):
    for r in rows:
        t = r["text"]
        if r["lang"] == "en":
            assert not CJK.search(t), t
            assert not re.search(r"[，。！、：；]", t), t
            assert t[-1] in ".!?", t
        else:
            assert len(CJK.findall(t)) >= 15, t
            assert t[-1] in "。！", t
            assert not re.search(r"[,!?;]", t), t  # Chinese punctuation, not ASCII


def test_tones_are_distinguishable(rows):
    def share(lang, tone, pred):
        sub = [r["text"] for r in rows if r["lang"] == lang and r["tone"] == tone]
        return sum(map(pred, sub)) / len(sub)

    def excl(t):
        return "!" in t or "！" in t

    def digit(t):
        return bool(re.search(r"\d", t))

    for lang in LANGS:
        assert share(lang, "playful", excl) > 0.9
        assert share(lang, "elegant", excl) == 0
        assert share(lang, "practical", excl) == 0
        assert share(lang, "practical", digit) > 0.7
        assert share(lang, "elegant", digit) < 0.1
        assert share(lang, "playful", digit) < 0.1


def test_every_product_appears(gen, rows):
    for category, entry in gen.CATALOGUE.items():
        assert len(entry["products"]) >= 15
        for lang in LANGS:
            body = "\n".join(r["text"] for r in rows if r["category"] == category and r["lang"] == lang)
            for product in entry["products"]:
                name = product.en if lang == "en" else product.zh
                assert name in body, (category, lang, name)
