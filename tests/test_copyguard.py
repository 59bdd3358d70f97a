"""Copy guard: every copied span of 16-128 characters is found at its exact length, variants of
it too (full-width, traditional, zero-width), offsets point into the text as written, no span
runs across two records, a saved index loads to the same answers, and a bad file is refused."""

from __future__ import annotations

import json
import random
import zipfile

import numpy as np
import pytest

from aigc.errors import InvalidInput
from aigc.safety import copyguard
from aigc.safety.copyguard import CopyIndex, CopySpan
from aigc.safety.normalize import normalize

# A small vocabulary, so windows repeat across records (many hash hits that are not the copy) and
# the written text differs from the normalised one ("，" -> ",", "！" -> "!", capitals -> lower).
WORDS = ["质量", "很好", "价格", "便宜", "发货", "速度", "快", "满意", "包装", "酒店", "服务", "态度", "这个",
         "产品", "不错", "还会", "再来", "。", "，", "！", "The ", "delivery ", "was ", "fast ", "and ", "box ",
         "intact", "Great ", "product", "would ", "buy ", "again", ". "]
TRADITIONAL = str.maketrans("质价发货满装务态这个产错还会来", "質價發貨滿裝務態這個產錯還會來")
# Characters the corpus never has: text made of them cannot extend a copy.
FRESH = "αβγδεζηθικλμνξοπρστυφχψω甲乙丙丁戊己庚辛壬癸子丑寅卯辰巳午未申酉戌亥"


def make_records(rng: random.Random, count: int = 40) -> list[str]:
    return ["".join(rng.choice(WORDS) for _ in range(rng.randint(20, 160))) for _ in range(count)]


def fresh(rng: random.Random, n: int) -> str:
    return "".join(rng.choice(FRESH) for _ in range(n))


def brute_longest(records: list[str], text: str) -> int:
    """The longest common substring of normalised ``text`` and any one normalised record."""
    q = normalize(text).text
    joiner = "\ue000"  # a private-use character: in neither the records nor the text
    corpus = joiner.join(normalize(r).text for r in records)
    assert joiner not in q and corpus.count(joiner) == len(records) - 1
    lo, hi = 0, len(q)  # a common substring of length L implies one of every shorter length
    while lo < hi:
        mid = (lo + hi + 1) // 2
        if any(q[i:i + mid] in corpus for i in range(len(q) - mid + 1)):
            lo = mid
        else:
            hi = mid - 1
    return lo


def cut(rng: random.Random, records: list[str], length: int) -> tuple[int, str, str]:
    """(record, piece as written, piece normalised): ``length`` normalised characters of a record."""
    choices = [i for i, r in enumerate(records) if len(normalize(r).text) >= length]
    i = rng.choice(choices)
    norm = normalize(records[i])
    o = rng.randrange(len(norm.text) - length + 1)
    a, b = norm.span(o, o + length)
    return i, records[i][a:b], norm.text[o:o + length]


@pytest.fixture(scope="module")
def corpus():
    records = make_records(random.Random(13))
    return records, CopyIndex.build(records)


def test_every_span_of_16_to_128_characters_is_found_at_its_exact_length_and_place(corpus):
    records, index = corpus
    rng = random.Random(1)
    for length in range(16, 129):
        _, piece, norm_piece = cut(rng, records, length)
        before, after = fresh(rng, rng.randint(0, 200)), fresh(rng, rng.randint(0, 200))
        span = index.longest(before + piece + after)
        assert span is not None, length
        assert (span.start, span.end, span.length) == (len(before), len(before) + len(piece), length)
        src_record, offset, src_text = index.source(span)
        assert src_text == norm_piece
        assert normalize(records[src_record]).text[offset:offset + length] == norm_piece


def test_longest_is_the_exact_maximal_span_inside_text_of_the_same_vocabulary(corpus):
    records, index = corpus
    rng = random.Random(2)
    for _ in range(25):
        piece = cut(rng, records, rng.randint(16, 128))[1]
        text = "".join(rng.choice(WORDS) for _ in range(rng.randint(0, 30))) + piece + \
            "".join(rng.choice(WORDS) for _ in range(rng.randint(0, 30)))
        expected = brute_longest(records, text)
        span = index.longest(text)
        assert span is not None and span.length == expected >= 16
        record, offset, copied = index.source(span)
        assert copied == normalize(text[span.start:span.end]).text
        assert normalize(records[record]).text[offset:offset + expected] == copied


def test_unrelated_text_reports_nothing():
    records = make_records(random.Random(3), count=20)
    index = CopyIndex.build(records)
    text = ("今天天气晴朗，我们去公园散步，看见很多人在放风筝，孩子们笑得很开心。"
            "Meanwhile the committee discussed next year's budget and the new library hours.") * 3
    assert brute_longest(records, text) < 16  # the premise: nothing of 16 characters is shared
    assert index.longest(text) is None
    assert index.spans(text) == []
    verdict = index.check(text, 32)
    assert verdict.copied is False and verdict.span is None


@pytest.mark.parametrize("variant", ["fullwidth", "traditional", "zerowidth"])
def test_written_variants_of_a_copy_are_found_with_offsets_into_what_was_written(corpus, variant):
    records, index = corpus
    rng = random.Random(4)
    for length in (16, 40, 100):
        _, piece, norm_piece = cut(rng, records, length)
        if variant == "fullwidth":
            shown = "".join(chr(ord(c.upper()) + 0xFEE0) if "!" <= c <= "~" else "\u3000" if c == " " else c
                            for c in piece)
        elif variant == "traditional":
            shown = piece.translate(TRADITIONAL)
        else:
            shown = "\u200b".join(piece)
        assert shown != piece and normalize(shown).text == norm_piece  # the premise
        before = "前\u200b言ﬁ" + fresh(rng, 30)  # zero-width and a ligature: original != normalised offsets
        text = before + shown + fresh(rng, 30)
        span = index.longest(text)
        assert span is not None and span.length == length
        assert text[span.start:span.end] == shown


def test_a_span_does_not_run_across_two_records():
    # Records end and start with 20 characters; the text joins them with the characters a naive
    # joiner would use. A span across the boundary would be 41 characters or more.
    first, second = "这个产品质量很好价格便宜发货速度快满意包", "服务态度不错还会再来the box wa"
    records = ["甲乙\n丙丁 戊己" + first, second + "αβ\nγδ εζ"]
    index = CopyIndex.build(records)
    for joiner in ("\n", " ", "", "\x00"):
        text = "xyz" + first + joiner + second + "xyz"
        assert brute_longest(records, text) == 20
        span = index.longest(text)
        assert span is not None and span.length == 20, joiner
        assert [s.length for s in index.spans(text)] == [20, 20]
    whole = index.longest("前" + records[1] + "后")
    assert whole is not None and whole.length == len(records[1]) and index.source(whole)[:2] == (1, 0)


def test_training_records_are_read_through_the_same_normalisation():
    written = ["這個產品質量很好，價格便宜，發貨速度快。ＧＲＥＡＴ　ＰＲＯＤＵＣＴ！", "无\u200b关的\u200b另一条记录，不会被找到。"]
    index = CopyIndex.build(written)
    span = index.longest("用户说：这个产品质量很好,价格便宜,发货速度快。great product!谢谢")
    assert span is not None and span.length == len(normalize(written[0]).text)
    assert index.source(span) == (0, 0, normalize(written[0]).text)


def test_runs_are_not_looked_for_but_a_copy_with_runs_in_it_is_found_whole():
    records = ["好评" + "！" * 40 + "质量很好价格便宜发货速度快" + "哈" * 30 + "。", "很好" * 30, "ab" * 200]
    index = CopyIndex.build(records)
    for run in ("！" * 800, "!" * 800, "哈" * 100, "很好" * 100, "ab" * 400, "abab" * 50):
        assert brute_longest(records, run) >= 16  # the premise: the run is in the training text
        assert index.longest(run) is None
    piece = "！" * 35 + "质量很好价格便宜发货速度快" + "哈" * 25
    span = index.longest("甲乙" + piece + "丙丁")
    assert span is not None and (span.start, span.length) == (2, len(piece))


def test_check_compares_the_longest_span_with_the_threshold(corpus):
    records, index = corpus
    rng = random.Random(5)
    piece = cut(rng, records, 40)[1]
    text = fresh(rng, 50) + piece + fresh(rng, 50)
    assert index.check(text, 32).copied is True
    verdict = index.check(text, 50)
    assert verdict.copied is False and verdict.span.length == 40
    assert verdict.to_dict()["span"]["length"] == 40
    two = fresh(rng, 5) + cut(rng, records, 20)[1] + fresh(rng, 5) + cut(rng, records, 30)[1] + fresh(rng, 5)
    spans = index.spans(two)
    assert [s.length for s in spans] == [20, 30] and spans[0].end <= spans[1].start
    assert index.longest(two).length == 30


@pytest.mark.parametrize("mmap", [True, False])
def test_save_then_load_gives_the_same_answers(corpus, tmp_path, monkeypatch, mmap):
    records, index = corpus
    monkeypatch.setattr(copyguard, "_MMAP_MIN_BYTES", 1)  # map every array, however small
    path = index.save(tmp_path / "copy_index.npz")
    index.save(path)  # over an existing one
    assert sorted(p.name for p in tmp_path.iterdir()) == ["copy_index.npz"]  # no temporary file left
    loaded = CopyIndex.load(path, mmap=mmap)
    assert isinstance(loaded._ids.base, np.memmap) is mmap
    assert loaded.stats() == index.stats()
    rng = random.Random(6)
    texts = [fresh(rng, 20) + cut(rng, records, rng.randint(16, 128))[1] + "".join(rng.choices(WORDS, k=9))
             for _ in range(30)]
    assert [loaded.longest(t) for t in texts] == [index.longest(t) for t in texts]
    assert all(loaded.longest(t) is not None for t in texts)


def test_a_file_that_is_not_a_good_index_is_refused_in_one_line(corpus, tmp_path):
    _, index = corpus
    good = index.save(tmp_path / "good.npz")
    garbage = tmp_path / "garbage.npz"
    garbage.write_bytes(b"not an index at all" * 50)
    truncated = tmp_path / "truncated.npz"
    truncated.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    other = tmp_path / "other.npz"
    np.savez(other, x=np.arange(3))

    def rewritten(name, **change):
        with np.load(good) as z:
            arrays = {k: z[k] for k in z.files}
        meta = json.loads(bytes(arrays["meta"]).decode())
        meta.update(change.pop("meta", {}))
        arrays.update(change, meta=np.frombuffer(json.dumps(meta).encode(), np.uint8))
        np.savez(tmp_path / name, **arrays)
        return tmp_path / name

    with np.load(good) as z:
        positions = z["positions"].copy()
    positions[0] = 10**6
    cases = {garbage: "not a copy index", truncated: "not a copy index", other: "not a copy index",
             rewritten("v2.npz", meta={"version": 2}): "version 2",
             rewritten("format.npz", meta={"format": "something-else"}): "not a copy index",
             rewritten("damaged.npz", positions=positions): "damaged",
             tmp_path / "missing.npz": "does not exist"}
    for path, words in cases.items():
        with pytest.raises(InvalidInput, match=words) as e:
            CopyIndex.load(path)
        assert "\n" not in str(e.value) and "rebuild" in str(e.value)
    with zipfile.ZipFile(good) as zf:  # the good one still loads
        assert "meta.npy" in zf.namelist()
    assert CopyIndex.load(good).stats() == index.stats()


def test_bad_arguments_are_refused_with_the_fix(corpus):
    _, index = corpus
    with pytest.raises(InvalidInput, match="stride 14 does not fit window 16"):
        CopyIndex.build(["abc"], stride=14)
    with pytest.raises(InvalidInput, match="window must be an integer"):
        CopyIndex.build(["abc"], window="16")
    with pytest.raises(InvalidInput, match="record 1 is a int"):
        CopyIndex.build(["abc", 5])
    with pytest.raises(InvalidInput, match="not one str"):
        CopyIndex.build("abc")
    with pytest.raises(InvalidInput, match="no training records"):
        CopyIndex.build([])
    with pytest.raises(InvalidInput, match="threshold 10 is below"):
        index.check("text", 10)
    with pytest.raises(InvalidInput, match="not bytes"):
        index.longest(b"bytes")
    with pytest.raises(InvalidInput, match="does not come from this index"):
        index.source(CopySpan(0, 16, 16, 10**9))


def test_a_window_of_24_finds_24_and_not_less():
    rng = random.Random(7)
    records = make_records(rng, count=10)
    index = CopyIndex.build(records, window=24, stride=12)
    for length in (24, 25, 60):
        piece = cut(rng, records, length)[1]
        span = index.longest(fresh(rng, 10) + piece + fresh(rng, 10))
        assert span is not None and span.length == length
    assert index.longest(fresh(rng, 10) + cut(rng, records, 23)[1] + fresh(rng, 10)) is None


# -- the copy guard on a stream (issue 13 task B) ----------------------------------------------------


def _through(rail, text: str) -> str:
    """``text`` fed to an output rail a character at a time, as a sampler would: what it releases."""
    out = "".join(rail.feed(ch) for ch in text)
    return out + ("" if rail.blocked else rail.finish())


def test_action_block_ends_a_sample_that_copies_a_long_training_span(corpus):
    from aigc.safety.guard import CopyGuardedRail, verdict
    from aigc.safety.policy import default_policy
    from aigc.safety.rails import OutputRail

    records, index = corpus
    rng = random.Random(21)
    threshold = 40
    block = {"threshold": threshold, "action": "block"}
    _, piece, _ = cut(rng, records, 90)  # 90 normalised characters of one training record
    copied = fresh(rng, 30) + "。" + piece + "。" + fresh(rng, 30) + "。"
    rail = CopyGuardedRail(OutputRail(default_policy()), index, block)
    released = _through(rail, copied)
    v = verdict(rail)
    assert rail.blocked and v["blocked"] and "copy" in v["categories"]
    assert v["copy"]["length"] >= threshold and f"threshold {threshold}" in v["reason"]
    assert piece not in released and released.startswith(copied[:31])  # what came before the copy went out
    longest = index.longest(released)
    assert longest is None or longest.length < threshold  # no copy at the threshold ever reached the reader
    # the same text under report is released whole, its copy measured at the end
    reported = CopyGuardedRail(OutputRail(default_policy()), index, {**block, "action": "report"})
    assert _through(reported, copied) == copied and not reported.blocked
    reported.report()
    assert verdict(reported)["copy_flagged"] and verdict(reported)["copy"]["length"] >= 90
    # text of its own passes under block
    own = fresh(rng, 60) + "。" + fresh(rng, 60) + "。"
    clean = CopyGuardedRail(OutputRail(default_policy()), index, block)
    assert _through(clean, own) == own and not clean.blocked and verdict(clean)["copy"] is None
