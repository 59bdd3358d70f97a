"""The rails: the input rail before a model runs, and the output rail that never lets PII or a
blocked term out of a stream, however it is chunked (every 2-way split, chunk sizes 1-8, a length
cap without sentence ends), and that fails closed."""

from __future__ import annotations

import re
import time

import pytest

from aigc.errors import InvalidInput
from aigc.safety.pii import Scanner
from aigc.safety.policy import default_policy, parse_policy
from aigc.safety.rails import OutputRail, check_input

_W = (7, 9, 10, 5, 8, 4, 2, 1, 6, 3, 7, 9, 10, 5, 8, 4, 2)


def resident_id(first17: str) -> str:
    """A resident ID with its GB 11643 check character (fictional: region and date only valid)."""
    return first17 + "10X98765432"[sum(int(c) * w for c, w in zip(first17, _W)) % 11]


ID = resident_id("11010519491231002")
# (text, raw PII values that must never be released, blocked term or None)
STREAMS = [
    (f"您好，我的电话是13812345678，邮箱zhang.san@example.com，身份证号{ID}。谢谢！", None),
    ("客户留言：请打 138 1234 5678 联系我\n地址不变，周五前发货。", None),
    ("Call me at +86-139-1234-5678 or write to john.doe@mail.example.org! Thanks a lot.", None),
    ("My card is 4111 1111 1111 1111 and my email is jane.roe@example.com. Ship it today", None),
    ("我们的新品很好用。另外招聘刷单兼职，日结300元，电话13912345678。欢迎咨询", "刷单"),
    ("Great product overall. We also launder money through crypto, mail ops@example.net. Bye", "launder"),
    ("Track it at https://shop.example.com/track?no=A1234567&k=z ready? Yes! Call +86 138 1234 5678 now.", None),
]


@pytest.fixture(scope="module")
def scanner():
    return Scanner()


@pytest.fixture(scope="module")
def policy():
    return default_policy()


def _digits(s: str) -> str:
    return re.sub(r"[\s\-+]", "", s)


def _leaks(released: str, values: list[str], term: str | None) -> list[str]:
    """What of ``values`` (or ``term``) shows in ``released``: a value whole, its e-mail local part,
    or any 5 consecutive digits of it."""
    found = [v for v in values if v in released]
    flat = _digits(released)
    for v in values:
        if "@" in v and v.split("@")[0] in released:
            found.append(v.split("@")[0])
        d = "".join(c for c in v if c.isdigit())
        found += [d[i:i + 5] for i in range(len(d) - 4) if d[i:i + 5] in flat]
    if term and term in released.lower():
        found.append(term)
    return found


def _stream(policy, scanner, chunks, **kw) -> tuple[str, OutputRail]:
    rail = OutputRail(policy, scanner=scanner, **kw)
    out = "".join(rail.feed(c) for c in chunks) + rail.finish()
    return out, rail


@pytest.fixture(scope="module")
def cases(scanner):
    out = []
    for text, term in STREAMS:
        values = [e.text for e in scanner.scan(text)]
        out.append((text, values, term))
    # the set means something: every text has PII the scanner finds in the whole text
    assert all(len(v) >= 1 for _, v, _ in out)
    assert sum(len(v) for _, v, _ in out) >= 10
    return out


def _check(policy, scanner, text, values, term, chunks, **kw):
    out, rail = _stream(policy, scanner, chunks, **kw)
    assert _leaks(out, values, term) == [], (chunks, out)
    if term:
        assert rail.blocked and rail.finish_reason == "content_filter" and rail.reason
    else:
        assert not rail.blocked and rail.finish_reason is None
        assert rail.entity_counts and sum(rail.entity_counts.values()) == len(values)
    return out


def test_no_leak_at_any_two_way_split(policy, scanner, cases):
    for text, values, term in cases:
        whole = _check(policy, scanner, text, values, term, [text])
        for i in range(1, len(text)):
            assert _check(policy, scanner, text, values, term, [text[:i], text[i:]]) == whole


@pytest.mark.parametrize("size", range(1, 9))
def test_no_leak_for_chunk_sizes_1_to_8(policy, scanner, cases, size):
    for text, values, term in cases:
        whole = _check(policy, scanner, text, values, term, [text])
        chunks = [text[i:i + size] for i in range(0, len(text), size)]
        assert _check(policy, scanner, text, values, term, chunks) == whole


def test_a_blocked_term_ends_the_stream_before_it_is_shown(policy, scanner):
    text = "第一句没问题。第二句：招聘刷 单兼职。第三句也不会出来。"
    out, rail = _stream(policy, scanner, list(text))
    assert out == "第一句没问题。"
    assert rail.blocked and rail.finish_reason == "content_filter"
    assert rail.categories == ["fraud"] and rail.rule_ids == ["fraud:刷单"]
    assert rail.feed("更多") == "" and rail.finish() == ""
    done = OutputRail(policy, scanner=scanner)
    assert done.feed("好的") == "" and done.finish() == "好的" and done.feed("。再来") == ""


def test_the_cap_releases_long_text_without_sentence_ends_and_still_leaks_nothing(policy, scanner):
    filler = "这款杯子容量大保温好颜色也很漂亮适合办公室和家里使用"
    pieces = [filler * 3, " 联系 13812345678 ", filler * 2, " 邮箱 li.si@example.com ", filler * 3,
              f" 证件 {ID} ", filler * 2]
    text = "".join(pieces)
    values = [e.text for e in scanner.scan(text)]
    assert len(values) == 3
    for size in (1, 3, 7):
        rail = OutputRail(policy, scanner=scanner, segment_cap=40)
        early = "".join(rail.feed(text[i:i + size]) for i in range(0, len(text), size))
        out = early + rail.finish()
        assert len(early) > len(text) // 2  # the cap let text out before the stream ended
        assert _leaks(out, values, None) == []
        assert out.count("<CN_MOBILE>") == 1 and out.count("<EMAIL>") == 1 and out.count("<CN_RESIDENT_ID>") == 1
    for i in range(1, len(text), 17):
        out, _ = _stream(policy, scanner, [text[:i], text[i:]], segment_cap=40)
        assert _leaks(out, values, None) == []


def test_clean_text_passes_unchanged_and_pii_follows_the_output_operators(scanner):
    p = parse_policy("version: 1\ncategories:\n  x: {openai: []}\n"
                     "pii: {default: {output: mask}, entities: {EMAIL: {output: redact}}}\n")
    text = "It arrived on time! Great colour.\nWould buy again? Yes. 很好用。"
    out, rail = _stream(p, scanner, list(text))
    assert out == text and not rail.blocked and rail.entity_counts == {}
    out, rail = _stream(p, scanner, list("电话13812345678，邮箱a.b@example.com。"))
    assert out == "电话138****5678，邮箱。" and rail.entity_counts == {"CN_MOBILE": 1, "EMAIL": 1}


def test_block_operator_on_output_ends_the_stream(scanner):
    p = parse_policy("version: 1\ncategories:\n  x: {openai: []}\n"
                     "pii: {entities: {CN_RESIDENT_ID: {output: block}}}\n")
    out, rail = _stream(p, scanner, list(f"好的。您的证件号是{ID}。"))
    assert out == "好的。" and rail.blocked and "CN_RESIDENT_ID" in rail.reason and ID not in out


def test_redact_terms_are_masked_in_outputs(policy, scanner):
    out, rail = _stream(policy, scanner, list("这他妈的太好用了。"))
    assert out == "这***太好用了。" and not rail.blocked


class Exploding:
    def __init__(self, after: int):
        self.calls, self.after = 0, after

    def scan(self, text):
        return []

    def redact(self, text, operator="replace"):
        self.calls += 1
        if self.calls > self.after:
            raise RuntimeError("recognizer crashed")
        from aigc.safety.pii import Redacted

        return Redacted(text, [])


def test_an_internal_failure_fails_closed(policy):
    rail = OutputRail(policy, scanner=Exploding(after=1))
    assert rail.feed("第一句。") == "第一句。"
    assert rail.feed("第二句。") == ""
    assert rail.blocked and rail.finish_reason == "content_filter" and "recognizer crashed" in rail.reason
    assert rail.feed("第三句。") == "" and rail.finish() == ""
    verdict = check_input("hello there", policy, scanner=Exploding(after=0))
    assert not verdict.allowed and verdict.text == "" and "input rail failed" in verdict.reason


def test_input_rail_blocks_terms_and_handles_pii_per_the_prompt_path(policy, scanner):
    v = check_input("招聘刷单兼职，日结", policy, scanner=scanner)
    assert not v.allowed and v.text == "" and v.categories == ["fraud"] and v.rule_ids == ["fraud:刷单"]
    assert "fraud:刷单" in v.reason
    # the default prompt actions: phones kept, resident IDs replaced
    v = check_input(f"我的电话13812345678，身份证{ID}，帮我写一段文案", policy, scanner=scanner)
    assert v.allowed and v.text == "我的电话13812345678，身份证<CN_RESIDENT_ID>，帮我写一段文案"
    assert [e.type for e in v.entities] == ["CN_MOBILE", "CN_RESIDENT_ID"]
    # a warning quoting a term is let through; a flag category is reported, not blocked
    v = check_input("警惕刷单诈骗！", policy, scanner=scanner)
    assert v.allowed and v.categories == []
    v = check_input("全网最低价，错过再等一年", policy, scanner=scanner)
    assert v.allowed and v.categories == ["advertising"]
    strict = parse_policy("version: 1\ncategories:\n  x: {openai: []}\npii: {entities: {CN_MOBILE: {prompt: block}}}\n")
    v = check_input("call 13812345678", strict, scanner=scanner)
    assert not v.allowed and v.reason == "the policy blocks CN_MOBILE in the prompt"
    assert check_input("", policy, scanner=scanner).allowed
    with pytest.raises(InvalidInput, match="unknown path 'train'"):
        check_input("x", policy, path="train", scanner=scanner)
    with pytest.raises(InvalidInput, match="segment_cap 4"):
        OutputRail(policy, scanner=scanner, segment_cap=4)


def test_feed_without_a_segment_end_costs_microseconds(policy, scanner):
    rail = OutputRail(policy, scanner=scanner, segment_cap=10**6)
    tokens = ["好", "的", "颜", "色", " nice", " colour"] * 5000
    t0 = time.perf_counter()
    for tok in tokens:
        rail.feed(tok)
    per_feed_us = (time.perf_counter() - t0) / len(tokens) * 1e6
    assert per_feed_us < 20, per_feed_us  # ~1 us on one core; the checks run once per segment
