"""AIGC labels (GB 45438-2025): every writer round-trips through the reader, the Annex E fields
validate, the visible image mark is tall enough, a re-saved file keeps or loses its label as
documented, bad files are one-line errors, `aigc label check|add` exit as documented, and the
images written along the way (training sample grids, evaluation samples) are labelled too."""

from __future__ import annotations

import csv
import io
import json
import math
from pathlib import Path

import numpy as np
import pytest
import typer
from PIL import Image, PngImagePlugin
from typer.testing import CliRunner

from aigc.errors import InvalidInput
from aigc.provenance import annex, images, labels, marks
from aigc.provenance.labels import check_file, implicit_label, label_file, read_label

PRODUCER = "001191110108MA01KP2T5U00000"  # a code in the TC260 practice guide's shape, not a real service's
EXT = {"PNG": ".png", "JPEG": ".jpg", "WEBP": ".webp"}


def meta(**kw):
    producer, produce_id = kw.pop("producer", PRODUCER), kw.pop("produce_id", "gen-0001")
    return implicit_label(producer=producer, produce_id=produce_id, **kw)


def noise(size=(96, 64), mode="RGB", seed=0):
    rng = np.random.default_rng(seed)
    shape = (size[1], size[0]) if mode == "L" else (size[1], size[0], len(mode))
    return Image.fromarray(rng.integers(0, 256, shape, dtype=np.uint8), mode)


def pixels(path):
    with Image.open(path) as im:
        return np.asarray(im.convert("RGBA"))


# -- the Annex E object --------------------------------------------------------------------------------

def test_implicit_label_has_every_annex_e_field_and_never_invents_a_producer():
    lab = implicit_label(producer=None, produce_id=None)
    assert list(lab) == list(annex.FIELDS)
    assert lab["Label"] == "1" and lab["ContentProducer"] == "" and lab["ContentPropagator"] == ""
    assert len(lab["ProduceID"]) == 32 and lab["ProduceID"] != implicit_label(producer=None)["ProduceID"]
    full = implicit_label(producer=PRODUCER, produce_id="p-1", propagator="shop", propagate_id="s-9",
                          label_type=3)
    assert (full["ContentProducer"], full["ProduceID"], full["ContentPropagator"], full["PropagateID"],
            full["Label"]) == (PRODUCER, "p-1", "shop", "s-9", "3")
    with pytest.raises(InvalidInput, match="label_type must be one of 1, 2, 3"):
        implicit_label(producer=PRODUCER, label_type="yes")
    with pytest.raises(InvalidInput, match="producer must be a string"):
        implicit_label(producer=42)


@pytest.mark.parametrize("change, problem, warning", [
    ({}, None, None),
    ({"Label": None}, "Label is missing", None),
    ({"Label": "4"}, "Label is '4'", None),
    ({"Label": 1}, "Label must be a string", None),
    ({"ProduceID": " "}, "ProduceID is missing or empty", None),
    ({"ProduceID": None}, "ProduceID is missing or empty", None),
    ({"ContentProducer": ""}, None, "ContentProducer is empty"),
    ({"ContentProducer": None}, None, "ContentProducer is empty"),
    ({"PropagateID": 7}, "PropagateID must be a string", None),
    ({"Extra": "x"}, None, "keys outside GB 45438 Annex E: Extra"),
])
def test_validate_reports_each_bad_or_missing_field(change, problem, warning):
    lab = meta()
    for key, value in change.items():
        if value is None:
            lab.pop(key)
        else:
            lab[key] = value
    problems, warnings = annex.validate(lab)
    assert (problem is None) == (not problems), problems
    assert problem is None or any(problem in p for p in problems), problems
    assert (warning is None) == (not warnings), warnings
    assert warning is None or any(warning in w for w in warnings), warnings


# -- images ------------------------------------------------------------------------------------------

@pytest.mark.parametrize("fmt, sources", [("PNG", ["png-text", "xmp"]), ("JPEG", ["xmp", "jpeg-comment"]),
                                          ("WEBP", ["xmp"])])
@pytest.mark.parametrize("explicit", [False, True])
def test_image_writers_round_trip_through_the_reader(tmp_path, fmt, sources, explicit):
    path = tmp_path / f"out{EXT[fmt]}"
    lab = meta(producer="某某科技 AI 服务")  # non-ASCII survives every container
    labels.save_image(noise(), path, lab, explicit=explicit)
    assert read_label(path) == lab
    res = check_file(path)
    assert res.ok and res.problems == [] and res.warnings == [] and res.sources == sources
    assert res.implicit == lab and res.explicit is None and res.kind == fmt.lower()
    with Image.open(path) as im:
        assert im.format == fmt and im.size == (96, 64)
        assert "xmp" in im.info  # Pillow itself sees the XMP packet
    assert images.xmp_labels(im.info["xmp"]) == [annex.dumps(lab)]


@pytest.mark.parametrize("fmt, save_kw, mode", [
    ("PNG", {}, "RGB"), ("PNG", {}, "RGBA"), ("JPEG", {"quality": 80}, "RGB"), ("JPEG", {}, "L"),
    ("WEBP", {"lossless": True}, "RGB"), ("WEBP", {"lossless": True}, "RGBA"),
    ("WEBP", {"quality": 70}, "RGB"), ("WEBP", {"quality": 70}, "RGBA"),
])
def test_label_file_splices_the_label_without_touching_the_pixels(tmp_path, fmt, save_kw, mode):
    src, dst = tmp_path / f"plain{EXT[fmt]}", tmp_path / f"labelled{EXT[fmt]}"
    noise(mode=mode, seed=1).save(src, fmt, **save_kw)
    assert read_label(src) is None and not check_file(src).ok
    label_file(src, dst, meta())
    assert np.array_equal(pixels(src), pixels(dst))
    assert read_label(dst) == meta()
    # labelling again replaces the label: one copy per place, the new one
    label_file(dst, dst, meta(produce_id="gen-0002"))
    res = check_file(dst)
    assert res.ok and len(res.sources) == len(set(res.sources))
    assert res.implicit["ProduceID"] == "gen-0002" and np.array_equal(pixels(src), pixels(dst))


def test_splicing_keeps_the_other_properties_of_an_existing_xmp_packet(tmp_path):
    src, dst = tmp_path / "a.jpg", tmp_path / "b.jpg"
    theirs = (b'<x:xmpmeta xmlns:x="adobe:ns:meta/">'
              b'<rdf:RDF xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#">'
              b'<rdf:Description rdf:about="" xmlns:dc="http://purl.org/dc/elements/1.1/">'
              b'<dc:format>image/jpeg</dc:format></rdf:Description></rdf:RDF></x:xmpmeta>')
    noise().save(src, "JPEG", xmp=theirs)
    label_file(src, dst, meta())
    with Image.open(dst) as im:
        packet = im.info["xmp"]
    assert b"<dc:format>image/jpeg</dc:format>" in packet and b"TC260:AIGC" in packet
    assert read_label(dst) == meta()


def test_an_image_labelled_with_an_explicit_mark_gets_it_drawn(tmp_path):
    if marks.find_cjk_font() is None:  # the built-in 16x16 glyphs are wider than half this small image
        pytest.skip("no CJK font installed (`make test` installs fonts-wqy-microhei when it may)")
    src, dst = tmp_path / "a.png", tmp_path / "b.png"
    Image.new("RGB", (200, 100), (250, 250, 250)).save(src)
    label_file(src, dst, meta(), explicit=True)
    changed = np.any(pixels(src) != pixels(dst), axis=2)
    rows, cols = np.nonzero(changed)
    assert rows.min() > 50 and cols.min() > 100  # the bottom-right corner, nowhere else
    assert read_label(dst) == meta()


def _ink_height(before: Image.Image, after: Image.Image) -> tuple[int, tuple[int, int, int, int]]:
    """The height of the mark's white text: inside the changed box (the background darkened to
    150/255 black), the rows holding pixels at least half covered by the white ink."""
    a = np.asarray(before.convert("L"), dtype=np.float64)
    b = np.asarray(after.convert("L"), dtype=np.float64)
    rows, cols = np.nonzero(a != b)
    box = (cols.min(), rows.min(), cols.max() + 1, rows.max() + 1)
    dark = a * (1 - 150 / 255)
    coverage = (b - dark) / (255 - dark)
    inside = coverage[box[1]:box[3], box[0]:box[2]]
    ink_rows = np.nonzero((inside >= 0.5 - 0.02).any(axis=1))[0]  # 0.02: rounding in 8-bit compositing
    return int(ink_rows.max() - ink_rows.min() + 1), box


@pytest.mark.parametrize("fonts", ["found", "bitmap"])
@pytest.mark.parametrize("size, mode", [((640, 480), "RGB"), ((300, 1000), "RGBA"), ((64, 64), "L"),
                                        ((1024, 768), "RGB")])
def test_the_image_mark_is_at_least_5_percent_of_the_shortest_side(monkeypatch, fonts, size, mode):
    if fonts == "bitmap":  # no CJK font on the machine: the built-in glyphs draw "生成"
        monkeypatch.setattr(marks, "_CJK_FONTS", ())
        monkeypatch.delenv("AIGC_CJK_FONT", raising=False)
    elif marks.find_cjk_font() is None:
        pytest.skip("no CJK font installed")
    before = noise(size, mode, seed=2)
    after = marks.mark_image(before)
    assert after.size == before.size and after.mode == before.mode
    height, box = _ink_height(before, after)
    assert height >= math.ceil(0.05 * min(size)), (height, size)
    assert box[2] >= size[0] - box[0] and box[3] > size[1] / 2  # bottom-right
    top_left = marks.mark_image(before, corner="top-left")
    assert _ink_height(before, top_left)[1][:2] < (size[0] / 2, size[1] / 2)


def test_the_english_mark_and_refusals():
    before = noise((400, 300), seed=3)
    height, _ = _ink_height(before, marks.mark_image(before, lang="en"))
    assert height >= 15
    with pytest.raises(InvalidInput, match="too small"):
        marks.mark_image(noise((5, 5)))
    with pytest.raises(InvalidInput, match="corner must be one of"):
        marks.mark_image(before, corner="middle")


def test_resaving_with_pillow_keeps_or_loses_the_label_as_documented(tmp_path):
    """images.py's docstring: a JPEG re-saved by Pillow loses its XMP but keeps its COM segment (so
    the label is still read); rebuilt from pixels it loses both; `xmp=im.info["xmp"]` keeps the XMP.
    PNG and WebP lose the label on a plain re-save."""
    for fmt in EXT:
        labels.save_image(noise(), tmp_path / f"l{EXT[fmt]}", meta())
    with Image.open(tmp_path / "l.jpg") as im:
        im.save(tmp_path / "plain.jpg")
        im.save(tmp_path / "kept.jpg", xmp=im.info.get("xmp"))
        Image.fromarray(np.asarray(im)).save(tmp_path / "rebuilt.jpg")
    assert check_file(tmp_path / "plain.jpg").sources == ["jpeg-comment"]
    assert read_label(tmp_path / "plain.jpg") == meta()
    assert check_file(tmp_path / "kept.jpg").sources == ["xmp", "jpeg-comment"]
    assert read_label(tmp_path / "rebuilt.jpg") is None
    for ext in (".png", ".webp"):
        with Image.open(tmp_path / f"l{ext}") as im:
            im.save(tmp_path / f"plain{ext}")
        assert read_label(tmp_path / f"plain{ext}") is None
    with Image.open(tmp_path / "l.webp") as im:
        im.save(tmp_path / "kept.webp", xmp=im.info["xmp"])
    assert read_label(tmp_path / "kept.webp") == meta()


def test_broken_or_conflicting_labels_in_an_image_are_problems(tmp_path):
    def png(path, **chunks):
        info = PngImagePlugin.PngInfo()
        for key, value in chunks.items():
            info.add_itxt(key.replace("_", ":").replace("XML:com:adobe:xmp", "XML:com.adobe.xmp"), value)
        noise().save(path, pnginfo=info)
        return path

    seven = '{"Label":"7","ContentProducer":"x","ProduceID":"1"}'
    bad_value = check_file(png(tmp_path / "a.png", AIGC=seven))
    assert not bad_value.ok and "Label is '7'" in bad_value.problems[0]
    not_json = check_file(png(tmp_path / "b.png", AIGC="Label=1"))
    assert not not_json.ok and "is not JSON" in not_json.problems[0] and not_json.implicit is None
    other = images.xmp_packet(meta(produce_id="other"))
    disagree = check_file(png(tmp_path / "c.png", AIGC=annex.dumps(meta()), XML_com_adobe_xmp=other.decode()))
    assert not disagree.ok and "disagree" in disagree.problems[-1]
    blank = tmp_path / "d.png"
    labels.save_image(noise(), blank, implicit_label(producer=None, produce_id="x"))
    res = check_file(blank)  # an empty producer is reported, not made up, and does not fail the check
    assert res.ok and res.implicit["ContentProducer"] == ""
    assert any("ContentProducer is empty" in w for w in res.warnings)


# -- text, JSON, JSONL, CSV ----------------------------------------------------------------------------

def test_explicit_text_labels_are_language_aware_and_detected_at_either_end():
    zh = labels.explicit_text("这款面霜很滋润。")
    assert zh == "【AI生成】这款面霜很滋润。" and labels.has_explicit_text(zh)
    assert labels.explicit_text("这款面霜很滋润。\n", position="suffix") == "这款面霜很滋润。（本内容由人工智能生成）\n"
    en = labels.explicit_text("Great cream.", position="both")
    assert en == "[AI-generated] Great cream. (This content was generated by AI.)"
    assert labels.explicit_text(zh) == zh  # already labelled: unchanged
    assert labels.has_explicit_text("本内容由人工智能合成") and labels.has_explicit_text("Text generated by AI")
    assert not labels.has_explicit_text("这款面霜很滋润。" * 20 + "有人说AI生成的评论不可信。" + "很好。" * 40)
    assert not labels.has_explicit_text("AI assistant said hello")
    with pytest.raises(InvalidInput, match="position must be one of"):
        labels.explicit_text("x", position="middle")


def test_text_files_round_trip_and_need_a_label_of_some_kind(tmp_path):
    src = tmp_path / "copy.txt"
    src.write_text("夏季新款连衣裙，清爽透气。\n", encoding="utf-8")
    res = check_file(src)
    assert not res.ok and res.explicit is False and "no implicit AIGC label" in res.problems[0]
    label_file(src, tmp_path / "both.txt", meta(), explicit=True)
    text = (tmp_path / "both.txt").read_text(encoding="utf-8")
    assert text.startswith("【AI生成】夏季新款连衣裙") and text.rstrip().endswith(annex.dumps(meta()))
    res = check_file(tmp_path / "both.txt", require_explicit=True)
    assert res.ok and res.explicit is True and res.implicit == meta() and res.sources == ["last line"]
    label_file(src, tmp_path / "implicit.txt", meta())
    assert check_file(tmp_path / "implicit.txt").ok
    assert not check_file(tmp_path / "implicit.txt", require_explicit=True).ok
    (tmp_path / "visible.txt").write_text(labels.explicit_text("好评。"), encoding="utf-8")
    res = check_file(tmp_path / "visible.txt")
    assert res.ok and res.implicit is None and res.explicit is True
    assert labels.label_text(labels.label_text("好评。", meta()), meta(produce_id="n")).count("AIGC: ") == 1


def test_json_jsonl_and_csv_writers_round_trip(tmp_path):
    records = [{"title": "连衣裙", "text": "清爽透气"}, {"title": "T恤", "text": "纯棉, 柔软"}]
    per_record = lambda i, _r: meta(produce_id=f"gen-{i}")  # noqa: E731
    (tmp_path / "one.json").write_text(json.dumps(labels.label_json(records[0], meta()), ensure_ascii=False))
    labels.write_jsonl(tmp_path / "many.jsonl", records, per_record)
    labels.write_csv(tmp_path / "many.csv", records, per_record)
    assert read_label(tmp_path / "one.json") == meta()
    for name in ("many.jsonl", "many.csv"):
        res = check_file(tmp_path / name)
        assert res.ok and res.implicit == meta(produce_id="gen-0"), res
        assert res.sources == (["line 1", "line 2"] if name.endswith("jsonl") else ["row 1", "row 2"])
    with open(tmp_path / "many.csv", encoding="utf-8", newline="") as fh:  # what a shop system imports
        rows = list(csv.DictReader(fh))
    assert [r["text"] for r in rows] == ["清爽透气", "纯棉, 柔软"]
    assert [json.loads(r["aigc_label"])["ProduceID"] for r in rows] == ["gen-0", "gen-1"]
    with pytest.raises(InvalidInput, match="needs a JSON object"):
        labels.label_json(["not", "an", "object"], meta())


@pytest.mark.parametrize("name, content", [
    ("a.json", '{"text": "好"}'), ("b.json", '[{"text": "好"}, {"text": "差"}]'),
    ("c.jsonl", '{"text": "好"}\n\n{"text": "差"}\n'), ("d.csv", "text,stars\n好,5\n差,1\n"),
])
def test_label_file_on_structured_text(tmp_path, name, content):
    src = tmp_path / name
    src.write_text(content, encoding="utf-8")
    res = check_file(src)
    assert not res.ok and res.implicit is None and res.problems
    label_file(src, src, meta())
    res = check_file(src)
    assert res.ok and res.implicit == meta() and res.problems == []
    assert "好" in src.read_text(encoding="utf-8")  # the content is kept


def test_records_without_a_label_are_listed(tmp_path):
    path = tmp_path / "mixed.jsonl"
    good = json.dumps(labels.label_json({"t": 1}, meta()))
    path.write_text("\n".join([good, '{"t": 2}', good, '{"t": 4}']) + "\n")
    res = check_file(path)
    assert not res.ok and res.problems == ["2 of 4 records have no aigc_label (line 2, 4)"]
    blank = tmp_path / "blank.jsonl"
    labels.write_jsonl(blank, [{"t": i} for i in range(5)], implicit_label(producer=None, produce_id="x"))
    res = check_file(blank)
    assert res.ok and len(res.warnings) == 1 and "(line 1, line 2, line 3 and 2 more)" in res.warnings[0]


# -- bad files -------------------------------------------------------------------------------------------

@pytest.mark.parametrize("name, content, message", [
    ("missing.png", None, "is not a file"),
    ("empty.txt", b"", "is empty"),
    ("model.bin", b"\x01\x02", "is not an image .* nor JSON"),
    ("fake.png", b"just some text", "is not a PNG image"),
    ("broken.png", images.PNG_SIGNATURE + b"\x00\x00\x00\x0dIHDR" + b"\x00" * 5, "not a readable image"),
    ("latin.txt", "caf\xe9".encode("latin-1"), "not UTF-8 text"),
    ("bad.json", b'{"a": ', "not valid JSON"),
    ("bad.jsonl", b'{"a": 1}\nnope\n', "line 2 is not JSON"),
])
def test_a_file_that_is_not_labellable_is_a_one_line_error(tmp_path, name, content, message):
    path = tmp_path / name
    if content is not None:
        path.write_bytes(content)
    for fn in (check_file, read_label):
        with pytest.raises(InvalidInput, match=message) as exc:
            fn(path)
        assert "\n" not in str(exc.value)


def test_a_truncated_jpeg_is_refused(tmp_path):
    buf = io.BytesIO()
    noise((200, 200)).save(buf, "JPEG")
    (tmp_path / "cut.jpg").write_bytes(buf.getvalue()[:2000])
    with pytest.raises(InvalidInput, match="not a readable image"):
        check_file(tmp_path / "cut.jpg")
    with pytest.raises(InvalidInput):
        label_file(tmp_path / "cut.jpg", tmp_path / "out.jpg", meta())
    assert not (tmp_path / "out.jpg").exists()
    (tmp_path / "ok.txt").write_text("好评", encoding="utf-8")
    with pytest.raises(InvalidInput, match="does not exist"):
        label_file(tmp_path / "ok.txt", tmp_path / "no" / "out.txt", meta())
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cut.jpg", "ok.txt"]  # nothing half-written


# -- CLI -------------------------------------------------------------------------------------------------

def _cli():
    from aigc.cli.label import label_app

    app = typer.Typer()
    app.add_typer(label_app, name="label")
    runner = CliRunner()
    return lambda *args: runner.invoke(app, ["label", *map(str, args)], catch_exceptions=False)


def test_cli_label_check_exit_codes(tmp_path):
    aigc = _cli()
    good, plain = tmp_path / "good.png", tmp_path / "plain.png"
    labels.save_image(noise(), good, meta())
    noise().save(plain)
    r = aigc("check", good)
    assert r.exit_code == 0 and "valid implicit label (AI-generated" in r.stdout and PRODUCER in r.stdout
    r = aigc("check", good, "--json")
    assert r.exit_code == 0 and json.loads(r.stdout)["implicit"] == meta()
    r = aigc("check", plain)
    assert r.exit_code == 1 and "NOT LABELLED" in r.stdout and "problem: no implicit AIGC label" in r.stdout
    (tmp_path / "x.bin").write_bytes(b"\x00\x01")
    r = aigc("check", tmp_path / "x.bin")
    lines = r.stderr.strip().splitlines()
    assert r.exit_code == 2 and len(lines) == 1 and lines[0].startswith("error: ") and "x.bin" in lines[0]


def test_cli_label_add_uses_the_policy_producer_and_never_makes_one_up(tmp_path, monkeypatch):
    import aigc.cli.label as cli_label

    aigc = _cli()
    src = tmp_path / "copy.txt"
    src.write_text("夏季新款连衣裙。\n", encoding="utf-8")
    monkeypatch.setattr(cli_label, "_settings", lambda ws: {"producer": PRODUCER, "explicit_text": True})
    r = aigc("add", src, "--out", tmp_path / "a.txt", "--produce-id", "p-7")
    assert r.exit_code == 0, r.output
    assert "with a visible label" in r.stdout
    res = check_file(tmp_path / "a.txt", require_explicit=True)
    assert res.ok and res.implicit["ContentProducer"] == PRODUCER and res.implicit["ProduceID"] == "p-7"

    monkeypatch.setattr(cli_label, "_settings", lambda ws: {"image_mark": False})
    noise().save(tmp_path / "a.png")
    r = aigc("add", tmp_path / "a.png", "-o", tmp_path / "b.png")
    assert r.exit_code == 0, r.output
    assert "warning: no producer code" in r.stderr
    assert read_label(tmp_path / "b.png")["ContentProducer"] == ""
    assert np.array_equal(pixels(tmp_path / "a.png"), pixels(tmp_path / "b.png"))  # image_mark off: no mark
    r = aigc("check", tmp_path / "b.png")
    assert r.exit_code == 0 and "warning: ContentProducer is empty" in r.stdout
    r = aigc("add", tmp_path / "a.png", "-o", tmp_path / "c.png", "--producer", "P-1", "--explicit")
    assert r.exit_code == 0 and read_label(tmp_path / "c.png")["ContentProducer"] == "P-1"
    assert not np.array_equal(pixels(tmp_path / "a.png"), pixels(tmp_path / "c.png"))


def test_cli_label_add_reads_the_workspace_policy(tmp_path):
    """No producer in the default policy: the label is written with an empty ContentProducer and a
    warning; the text gets the visible label the policy turns on by default."""
    aigc = _cli()
    src = tmp_path / "copy.txt"
    src.write_text("夏季新款连衣裙。\n", encoding="utf-8")
    r = aigc("add", src, "--out", tmp_path / "a.txt", "-w", tmp_path / "ws")
    assert r.exit_code == 0, r.output
    assert "warning: no producer code" in r.stderr
    res = check_file(tmp_path / "a.txt", require_explicit=True)
    assert res.ok and res.implicit["ContentProducer"] == "" and res.explicit is True
    r = aigc("add", tmp_path / "missing.txt", "--out", tmp_path / "b.txt", "-w", tmp_path / "ws")
    assert r.exit_code == 2 and r.stderr.startswith("error: ") and "missing.txt" in r.stderr


# -- every image file aigc-studio generates carries the label --------------------------------------------

def policy_yaml(**labels_settings) -> str:
    """The default policy with these ``labels`` settings (the producer code set, say)."""
    import yaml

    import aigc

    doc = yaml.safe_load((Path(aigc.__file__).parent / "resources" / "safety" / "default_policy.yaml")
                         .read_text(encoding="utf-8"))
    doc["labels"].update(labels_settings)
    return yaml.safe_dump(doc, allow_unicode=True)


@pytest.fixture(scope="module")
def image_ws(tmp_path_factory):
    """A tiny vae on 8x8 blocks, trained 4 steps with a validation every 2, in a workspace whose policy
    names a producer: its sample grids are the training-time generated files."""
    import aigc
    from aigc.safety.policy import save_workspace_policy

    from helpers import write_blocks_npz

    root = tmp_path_factory.mktemp("labelled-runs")
    ws = aigc.open_workspace(root / "ws")
    save_workspace_policy(ws, policy_yaml(producer=PRODUCER))
    aigc.ingest(write_blocks_npz(root / "blocks.npz"), "blocks", workspace=ws)
    aigc.train("blocks", family="vae", preset="tiny", name="v", workspace=ws, max_steps=4, eval_every=2,
               batch_size=8, seed=0)
    return ws


def assert_labelled(path, produce_suffix: str) -> dict:
    """``path`` holds a valid implicit label with the workspace's producer, found by the reader, the checker
    and `aigc label check`; returns it."""
    res = check_file(path)
    assert res.ok and res.kind == "png" and res.problems == [], res.problems
    assert res.implicit == read_label(path) and res.implicit["ContentProducer"] == PRODUCER
    assert res.implicit["ProduceID"].endswith(produce_suffix) and res.implicit["Label"] == "1"
    r = _cli()("check", path)
    assert r.exit_code == 0 and "valid implicit label (AI-generated" in r.stdout
    return res.implicit


def test_training_sample_grids_are_labelled(image_ws):
    grids = sorted((image_ws.run_path("v") / "samples").glob("step-*.png"))
    assert [g.name for g in grids] == ["step-0000002.png", "step-0000004.png"]
    found = [assert_labelled(g, f"-{g.stem}") for g in grids]
    runs = {lab["ProduceID"].rsplit("-step", 1)[0] for lab in found}
    assert len(runs) == 1  # one training run: one ProduceID, suffixed per grid


def test_image_evaluation_samples_are_labelled(image_ws):
    import aigc

    path = image_ws.run_path("v") / "eval_samples.png"
    assert not path.exists()
    aigc.evaluate("v", workspace=image_ws, n_samples=16)
    assert_labelled(path, "")


@pytest.mark.parametrize("mark", [True, False])
def test_audio_evaluation_grids_are_labelled_and_marked_per_policy(tmp_path, mark):
    import aigc
    from aigc.audio_evaluation import _write_samples
    from aigc.data.images import write_grid
    from aigc.safety.policy import save_workspace_policy

    ws = aigc.open_workspace(tmp_path / "ws")
    save_workspace_policy(ws, policy_yaml(producer=PRODUCER, image_mark=mark))
    rng = np.random.default_rng(0)
    images, heard = rng.integers(0, 256, (2, 12, 16, 16, 1), dtype=np.uint8)
    waves = [rng.uniform(-0.5, 0.5, 1600).astype(np.float32) for _ in range(3)]
    run_dir = ws.root / "runs" / "mel"
    run_dir.mkdir(parents=True)
    _write_samples(ws, run_dir, images, heard, waves, np.array([0, 1, 0]), ["low", "high"], 16000)
    out = run_dir / "eval_samples"
    for name, tiles in (("generated", images), ("heard", heard)):
        assert_labelled(out / f"{name}.png", f"-{name}")
        write_grid(tmp_path / f"{name}-plain.png", list(tiles))
        same = np.array_equal(pixels(out / f"{name}.png"), pixels(tmp_path / f"{name}-plain.png"))
        assert same is not mark  # the visible mark drawn exactly when the policy asks for it
    assert read_label(out / "sample-000.wav")["ContentProducer"] == PRODUCER


def test_write_grid_labels_and_marks_only_when_asked(tmp_path):
    from aigc.data.images import write_grid

    tiles = list(np.random.default_rng(1).integers(0, 256, (16, 8, 8, 1), dtype=np.uint8))
    write_grid(tmp_path / "plain.png", tiles)
    write_grid(tmp_path / "labelled.png", tiles, label=meta())
    write_grid(tmp_path / "marked.png", tiles, label=meta(), mark=True)
    assert read_label(tmp_path / "plain.png") is None and not check_file(tmp_path / "plain.png").ok
    assert read_label(tmp_path / "labelled.png") == meta() == read_label(tmp_path / "marked.png")
    assert np.array_equal(pixels(tmp_path / "plain.png"), pixels(tmp_path / "labelled.png"))
    assert not np.array_equal(pixels(tmp_path / "plain.png"), pixels(tmp_path / "marked.png"))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["labelled.png", "marked.png", "plain.png"]  # no tmp
