"""Synthetic data sets from text and image runs, and their fidelity / utility / privacy reports."""

from __future__ import annotations

import base64
import csv
import io
import json
import math
import random
import warnings
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import aigc
from aigc.data.dataset import read_text_split
from aigc.errors import InvalidInput
from aigc.provenance.labels import check_file
from aigc.safety.copyguard import CopyIndex
from aigc.safety.policy import policy_path, save_workspace_policy
from aigc.safety.training import COPY_INDEX
from aigc.synthesis import images as si
from aigc.synthesis import text as st
from helpers import write_blocks_npz


def write_shop_jsonl(path: Path, n: int = 240) -> Path:
    """Two fruits, twice as many apples as kiwis, texts that never share a word across fruits;
    every 8th record also carries an e-mail address (PII the report looks for)."""
    rng = random.Random(0)
    rows = []
    for i in range(n):
        fruit = "apple" if i % 3 else "kiwi"
        words = ["apple", "crisp", "sweet", "orchard"] if fruit == "apple" else ["猕猴桃", "绿色", "酸甜", "kiwi"]
        text = " ".join(rng.choice(words) for _ in range(rng.randint(4, 12))) + f" {i}"
        if i % 8 == 0:
            text += f" mail shop{i}@example.com"
        rows.append(json.dumps({"text": text, "fruit": fruit}, ensure_ascii=False) + "\n")
    path.write_text("".join(rows), encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def text_ws(tmp_path_factory):
    root = tmp_path_factory.mktemp("synth-text")
    ws = aigc.open_workspace(root / "ws")
    aigc.ingest(write_shop_jsonl(root / "shop.jsonl"), "shop", workspace=ws, text_column="text", cond_columns=["fruit"])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the e-mails: "dataset holds unredacted PII" (the policy warns)
        aigc.train("shop", family="gpt", preset="tiny", name="g", workspace=ws, max_steps=30, seed=0)
    return ws


@pytest.fixture(scope="module")
def image_ws(tmp_path_factory):
    root = tmp_path_factory.mktemp("synth-images")
    ws = aigc.open_workspace(root / "ws")
    aigc.ingest(write_blocks_npz(root / "blocks.npz", n=200), "blocks", workspace=ws)
    aigc.train("blocks", family="vae", preset="tiny", name="v", workspace=ws, max_steps=4, batch_size=8, seed=0)
    return ws


def _lines(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


# -- synthesize_text -------------------------------------------------------------------------------


def test_synthesize_text_writes_n_labelled_records_with_the_asked_condition(text_ws, tmp_path):
    seen = []
    out = tmp_path / "kiwi.jsonl"
    summary = st.synthesize_text(text_ws, "g", 12, out, conditions={"fruit": "kiwi"}, seed=0, max_new_tokens=40,
                                 progress=lambda done, total: seen.append((done, total)))
    records = _lines(out)
    assert len(records) == 12 == summary["n"] == summary["kept"]
    assert all(r["fruit"] == "kiwi" and r["text"] and r["text"] == r["text"].strip() for r in records)
    assert all(set(r) == {"text", "fruit", "aigc_label"} for r in records)
    assert len({r["aigc_label"]["ProduceID"] for r in records}) == 12  # one content number per record
    assert check_file(out).ok
    assert summary["drawn"] == 12 + summary["dropped_copies"] + summary["dropped_empty"]
    assert summary["conditions"] == {"fruit": {"kiwi": 12}} and seen[-1] == (12, 12)
    again = st.synthesize_text(text_ws, "g", 12, tmp_path / "again.jsonl", conditions={"fruit": "kiwi"}, seed=0,
                               max_new_tokens=40)
    assert [r["text"] for r in _lines(tmp_path / "again.jsonl")] == [r["text"] for r in records]  # seeded
    assert again["drawn"] == summary["drawn"]


def test_without_conditions_the_records_have_the_train_label_balance(text_ws, tmp_path):
    train = Counter(r.cond["fruit"] for r in read_text_split(text_ws.dataset_path("shop"), "train"))
    n = 9
    st.synthesize_text(text_ws, "g", n, tmp_path / "mix.jsonl", seed=1, max_new_tokens=30)
    got = Counter(r["fruit"] for r in _lines(tmp_path / "mix.jsonl"))
    assert got["apple"] == round(n * train["apple"] / sum(train.values())) and sum(got.values()) == n
    # largest remainder by hand: 6 / 3 of 7 -> 4.67 / 2.33 -> 5 apples, 2 kiwis; asked values override
    conds = [{"fruit": "apple", "k": "x"}] * 6 + [{"fruit": "kiwi", "k": "y"}] * 3
    combos = st._draw_combos(conds, ["fruit", "k"], {}, 7, np.random.default_rng(0))
    assert Counter(c["fruit"] for c in combos) == {"apple": 5, "kiwi": 2}
    combos = st._draw_combos(conds, ["fruit", "k"], {"k": "y"}, 4, np.random.default_rng(0))
    assert combos == [{"fruit": "kiwi", "k": "y"}] * 4  # the other column follows the records with k=y


def test_a_record_that_copies_training_text_is_dropped_and_drawn_again(text_ws, tmp_path):
    run_dir = Path(text_ws.get_run("g")["path"])
    opts = dict(conditions={"fruit": "apple"}, seed=5, max_new_tokens=40)
    first = [r["text"] for r in _lines(Path(st.synthesize_text(text_ws, "g", 4, tmp_path / "a.jsonl", **opts)["path"]))]
    copied = max(first, key=len)
    assert len(copied) >= 16
    # The run's guard index now holds the very text the same seed draws first, at the lowest threshold.
    original = (run_dir / COPY_INDEX).read_bytes()
    try:
        CopyIndex.build([copied]).save(run_dir / COPY_INDEX)
        save_workspace_policy(text_ws, "extends: default\ncopy_guard: {threshold: 16}\n")
        summary = st.synthesize_text(text_ws, "g", 4, tmp_path / "b.jsonl", **opts)
        kept = [r["text"] for r in _lines(tmp_path / "b.jsonl")]
        index = CopyIndex.build([copied])
    finally:
        (run_dir / COPY_INDEX).write_bytes(original)
        policy_path(text_ws).unlink()
    assert summary["dropped_copies"] >= 1 and summary["copy_threshold"] == 16
    assert summary["drawn"] == 4 + summary["dropped_copies"] + summary["dropped_empty"] and len(kept) == 4
    assert copied not in kept
    assert all((index.longest(t) is None or index.longest(t).length < 16) for t in kept)


def test_a_whole_short_training_record_counts_as_a_copy_below_the_threshold():
    index = CopyIndex.build(["Fresh kiwi, picked this morning.", "A crisp apple for the road, with a long story."])
    assert st._copied(index, "Fresh kiwi, picked this morning.", 50)  # 32 characters: the record itself
    assert st._copied(index, "  a crisp apple for the road", 50)  # part of one, whole (normalised, stripped)
    assert not st._copied(index, "Fresh kiwi, picked this morning. Then a walk.", 50)  # new words around it
    assert not st._copied(index, "Nothing from training at all, not one bit.", 50)


def test_synthesize_text_refuses_bad_input_and_writes_nothing(text_ws, image_ws, tmp_path):
    out = tmp_path / "x.jsonl"
    with pytest.raises(InvalidInput, match="n must be"):
        st.synthesize_text(text_ws, "g", 0, out)
    with pytest.raises(InvalidInput, match=r"\.jsonl"):
        st.synthesize_text(text_ws, "g", 2, tmp_path / "x.csv")
    with pytest.raises(InvalidInput, match="unknown condition 'colour'"):
        st.synthesize_text(text_ws, "g", 2, out, conditions={"colour": "red"})
    with pytest.raises(InvalidInput, match="not a text run"):
        st.synthesize_text(image_ws, "v", 2, out)
    assert not out.exists() and not list(tmp_path.iterdir())


# -- text_report ------------------------------------------------------------------------------------


def test_report_math_against_hand_computed_values():
    assert st.js_divergence(Counter(a=1), Counter(b=4)) == pytest.approx(1.0)
    # p = (1/2, 1/2), q = (1, 0), m = (3/4, 1/4)
    kl_p = 0.5 * math.log2(0.5 / 0.75) + 0.5 * math.log2(0.5 / 0.25)
    kl_q = math.log2(1 / 0.75)
    assert st.js_divergence(Counter(a=1, b=1), Counter(a=3)) == pytest.approx((kl_p + kl_q) / 2)
    assert st.ngram_counts(["iPhone 15好用", "好用"], 2) == Counter({("iPhone", "15"): 1, ("15", "好"): 1,
                                                                     ("好", "用"): 2})


def test_text_report_of_the_real_test_split_itself_is_faithful(text_ws):
    test = read_text_split(text_ws.dataset_path("shop"), "test")
    report = st.text_report(text_ws, "g", [{"text": r.text, **r.cond} for r in test])
    f = report["fidelity"]
    assert f["length_chars"]["ks_complement"] == 1.0 and f["ngrams"]["js_1"] == 0 and f["ngrams"]["js_2"] == 0
    assert f["ngrams"]["top_overlap"] == 1.0 and f["conditions"]["fruit"]["tv_complement"] == 1.0
    p = report["privacy"]
    assert p["synthetic"] == p["reference"]  # the same records score what the reference scores
    assert p["reference"]["exact_copy_rate"] == 0.0  # ingest dedupes across splits
    json.dumps(report)  # JSON-able as a whole
    for section in report["sections"]:
        table = section.get("table", [])
        assert all(len(row) == len(table[0]) for row in table)
        for h in section.get("histograms", []):
            for counts in h["series"].values():
                assert len(h["bins"]) in (len(counts), len(counts) + 1)
    # what `aigc report` prints: every section with its figures (the fidelity line printed empty once)
    from aigc.cli.synthesize import summary_lines

    lines = summary_lines(report)
    assert len(lines) == sum(1 for s in report["sections"] if s.get("table"))
    assert any(line.startswith("Utility") and "fruit 1 1 1 1" in line for line in lines), lines
    assert any(line.startswith("Fidelity: length") and "KS complement 1" in line for line in lines), lines


def test_text_report_shapes_against_hand_computed_values(text_ws):
    test = read_text_split(text_ws.dataset_path("shop"), "test")
    longer = "kiwi " * (max(len(r.text) for r in test) // 5 + 1)  # longer than every real record
    f = st.text_report(text_ws, "g", [{"text": longer, "fruit": "kiwi"}] * 5)["fidelity"]
    assert f["length_chars"]["ks_complement"] == 0.0  # the two length CDFs never overlap
    # all kiwi against the real shares p: 1 - (|p_apple - 0| + |p_kiwi - 1|) / 2 = p_kiwi
    share = sum(r.cond["fruit"] == "kiwi" for r in test) / len(test)
    assert f["conditions"]["fruit"]["tv_complement"] == pytest.approx(share)
    assert f["conditions"]["fruit"]["synthetic"] == {"kiwi": 1.0}
    assert f["ngrams"]["distinct_1"]["synthetic"] == pytest.approx(1 / (5 * len(longer.split())))


def test_text_report_on_copies_of_train_finds_them_and_utility_matches_trtr(text_ws):
    train = read_text_split(text_ws.dataset_path("shop"), "train")
    copies = [r for r in train if len(r.text) >= 60 and "@" not in r.text][:20]
    report = st.text_report(text_ws, "g", [{"text": r.text, "fruit": r.cond["fruit"]} for r in copies])
    s = report["privacy"]["synthetic"]
    assert s["exact_copy_rate"] == 1.0
    assert s["copy_span"]["over_threshold"] == 1.0 and s["copy_span"]["max"] == max(len(r.text) for r in copies)
    # TSTR trains on these 20 train records; TRTR on 20 evenly spaced train records: hand-pick those
    spaced = [train[i * len(train) // 20] for i in range(20)]
    same = st.text_report(text_ws, "g", [{"text": r.text, "fruit": r.cond["fruit"]} for r in spaced])
    u = same["utility"]["fruit"]
    assert u["tstr"] == u["trtr"] and u["n_train"] == 20
    assert u["tstr"]["accuracy"] > 0.9  # the fruits never share a word
    one = st.text_report(text_ws, "g", [{"text": "apple crisp 1", "fruit": "apple"}] * 3)
    assert "skipped" in one["utility"]["fruit"]


def test_text_report_counts_pii_replayed_from_train(text_ws, tmp_path):
    train = read_text_split(text_ws.dataset_path("shop"), "train")
    with_mail = next(r for r in train if "@example.com" in r.text)
    path = tmp_path / "s.jsonl"
    path.write_text(json.dumps({"text": with_mail.text, "fruit": "apple"}) + "\n"
                    + json.dumps({"text": "apple sweet mail nobody999@example.com", "fruit": "apple"}) + "\n",
                    encoding="utf-8")
    pii = st.text_report(text_ws, "g", path)["privacy"]["synthetic"]["pii"]
    assert pii["entities"] == {"EMAIL": 2} and pii["replayed"] == {"EMAIL": 1}
    assert pii["replayed_share"] == 0.5 and pii["records_with_replay"] == 0.5
    path.write_text('{"text": "a"}\nnot json\n', encoding="utf-8")
    with pytest.raises(InvalidInput, match="line 2 is not JSON"):
        st.text_report(text_ws, "g", path)


# -- images -----------------------------------------------------------------------------------------


def test_synthesize_images_writes_pngs_by_class_with_a_labelled_csv(image_ws, tmp_path):
    seen = []
    out = tmp_path / "synth"
    summary = si.synthesize_images(image_ws, "v", 10, out, seed=0, progress=lambda d, t: seen.append((d, t)))
    assert summary["classes"] == {"bottom": 5, "top": 5} and seen[-1] == (10, 10)  # train is half and half
    with open(out / "labels.csv", encoding="utf-8", newline="") as f:
        rows = list(csv.DictReader(f))
    assert [list(r) for r in rows[:1]] == [["path", "label", "aigc_label"]] and len(rows) == 10
    assert all(r["path"].startswith(r["label"] + "/") and (out / r["path"]).is_file() for r in rows)
    assert sorted(p.relative_to(out).as_posix() for p in out.rglob("*.png")) == sorted(r["path"] for r in rows)
    assert check_file(out / "labels.csv").ok and all(check_file(out / r["path"]).ok for r in rows)
    assert [p.name for p in tmp_path.iterdir()] == ["synth"]  # no staging folder left behind
    one = si.synthesize_images(image_ws, "v", 3, tmp_path / "top", conditions={"label": "top"}, seed=1)
    assert one["classes"] == {"top": 3} and len(list((tmp_path / "top" / "top").glob("*.png"))) == 3


def test_synthesize_images_refusals_leave_the_folder_alone(image_ws, text_ws, tmp_path):
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "keep.txt").write_text("mine")
    with pytest.raises(InvalidInput, match="not an empty folder"):
        si.synthesize_images(image_ws, "v", 2, tmp_path / "full")
    with pytest.raises(InvalidInput, match="unknown label 'left'"):
        si.synthesize_images(image_ws, "v", 2, tmp_path / "new", conditions={"label": "left"})
    with pytest.raises(InvalidInput, match="not an image run"):
        si.synthesize_images(text_ws, "g", 2, tmp_path / "new")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["full"]
    assert [p.name for p in (tmp_path / "full").iterdir()] == ["keep.txt"]
    assert si.folder_names(["T-shirt/top", "T-shirt top", "a"]) == {"T-shirt/top": "T-shirt_top",
                                                                    "T-shirt top": "T-shirt_top_2", "a": "a"}


def test_image_report_returns_the_keys_and_finite_values(image_ws, tmp_path):
    si.synthesize_images(image_ws, "v", 24, tmp_path / "synth", seed=0)
    report = si.image_report(image_ws, "v", tmp_path / "synth")
    f, u, p = report["fidelity"], report["utility"], report["privacy"]
    for key in ("fid", "fid_floor_train_vs_test", "kid_mean", "precision", "recall", "conditional_accuracy"):
        assert math.isfinite(f[key]), key
    assert 0 <= f["precision"] <= 1 and 0 <= f["conditional_accuracy"] <= 1
    assert 0 <= u["cas"]["accuracy"] <= 1 and 0 <= u["trtr"]["accuracy"] <= 1 and u["n_train"] == 24
    for side in ("synthetic", "reference"):
        assert all(math.isfinite(v) for v in p[side]["pixel_rms"].values())
        assert 0 <= p[side]["near_duplicate_share"] <= 1
    json.dumps(report)
    shown = report["sections"][-1]["images"]
    assert len(shown) == 8
    png = Image.open(io.BytesIO(base64.b64decode(shown[0]["src"].split(",", 1)[1])))
    assert png.size == (8 * (8 + 1 + 8), 8 * 8)  # 8 px sample | gap | neighbour, enlarged 8x to 64 px


def test_image_report_finds_copied_training_images(image_ws, tmp_path):
    from aigc.data.images import read_image_split

    train = read_image_split(image_ws.dataset_path("blocks"), "train")
    out = tmp_path / "copies"
    out.mkdir()
    rows = []
    for i in range(12):
        Image.fromarray(train.images[i][..., 0]).save(out / f"{i}.png")
        rows.append({"path": f"{i}.png", "label": train.classes[train.labels[i]]})
    with open(out / "labels.csv", "w", newline="", encoding="utf-8") as f:
        w = csv.DictWriter(f, fieldnames=["path", "label"])
        w.writeheader()
        w.writerows(rows)
    p = si.image_report(image_ws, "v", out)["privacy"]
    assert p["synthetic"]["near_duplicate_share"] == 1.0 and p["synthetic"]["pixel_rms"]["min"] == 0.0
    assert p["synthetic"]["closer_than_real_p5"] == 1.0  # closer to train than 95 % of real test images
    assert p["reference"]["near_duplicate_share"] < 1.0
