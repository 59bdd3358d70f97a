"""safety.normalize: the whole-string fast path equals the per-character reference (text and offsets),
traditional -> simplified, and ``Normalized.span`` maps a match back to what the user wrote."""

from __future__ import annotations

import random

import pytest

from aigc.safety.normalize import _fast, _per_char, normalize

# Pools of characters the checks meet in Chinese business text, and the ones that break naive offset maps.
POOLS = {
    "simplified": "的一是了我不人在他有这个上们来到时大地为子中你说生"
                  "国年着就那和要她出也得里后自以会",
    "traditional": "國語學習們這說話對時會東車門長開關電臺灣"
                   "體發頭風點還見親愛貝葉號碼聯繫購買價錢",
    "full-width": "".join(chr(c) for c in range(0xFF01, 0xFF5F)) + "　",
    "zero-width": "\u200b\u200c\u200d\u2060\ufeff\u00ad\u200e\u202e\ufe0f",
    "latin diacritics": "àáâãäåçèéêëìíîïñòóôõöùúûüýÿ"
                        "ĀāĂăĄąĆćČčĎďĒēĘęĚěĞğŁłŃńŇňŐőŒœŘřŚśŠšŰűŹźŻżŽž",
    "ascii": "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789 -_.,:;!?@#/",
    "punctuation": "，。！？、；：“”‘’（）《》【】—·\t\n",
    # these NFKC or case folding expand (or turn into a combining sequence)
    "compatibility": "①②⑳⒈⒐ﬁﬂﬀ㎏㎡℃™Ⅻ⼈⾦⿓豈更車Ĳĳǅǈŉΐǰẖ…",
    "casefold": "ΣσςİıßẞǄǅǆĿŉ",
    # NFKC joins these to the character before: kana voicing marks, Hangul jamo, combining marks
    "joining": "ｶｷｸﾊﾋﾞﾟﾡﾢￂￃￄᄀ\u1161\u11a8ㄱㅏ\u0301\u0308\u0327\u3099",
    "astral": "𠀀𠀁𪚥😀",
}
# ordinary mixed text, which NFKC, case folding and t2s keep one character per character
ONE_TO_ONE = ["simplified", "traditional", "full-width", "zero-width", "latin diacritics", "ascii",
              "punctuation"]
FLAGS = [dict(separators=s, simplify=t, casefold=c) for s in (False, True) for t in (True, False)
         for c in (True, False)]


def random_text(rng: random.Random, pools: list[str], length: int) -> str:
    return "".join(rng.choice(POOLS[rng.choice(pools)]) for _ in range(length))


def test_the_fast_path_gives_the_per_character_result_on_random_mixed_text():
    rng = random.Random(13)
    for i in range(1500):
        ordinary = i % 3 == 0  # a third from the one-to-one pools: these must take the fast path
        text = random_text(rng, ONE_TO_ONE if ordinary else list(POOLS), rng.randint(1, 48))
        for flags in FLAGS:
            assert normalize(text, **flags) == _per_char(text, **flags), (text, flags)
            if ordinary:
                assert _fast(text, **flags) is not None, (text, flags)


@pytest.mark.parametrize("text, folded, index", [
    # a voicing mark NFKC composes (-1) beside a ligature it expands (+1): the total length matches
    ("ｶﾞﬁ", "カ\u3099fi", (0, 1, 2, 2)),
    ("ﾡￂﬁ一", "\u1100\u1161fi一", (0, 1, 2, 2, 3)),  # half-width Hangul jamo compose into a syllable
    ("가\u11a8①", "가\u11a81", (0, 1, 2)),  # a syllable + a final consonant compose
    ("e\u0301ﬁ", "e\u0301fi", (0, 1, 2, 2)),  # a combining accent
])
def test_compositions_hidden_by_an_expansion_take_the_exact_path(text, folded, index):
    """The first two once took the fast path (the total length matched) with offsets one off."""
    assert _fast(text, False, True, True) is None
    assert normalize(text) == _per_char(text, False, True, True)
    assert (normalize(text).text, normalize(text).index) == (folded, index)


def test_traditional_full_width_and_zero_width_forms_fold_to_one_text():
    assert normalize("國語學習，們說話").text == "国语学习,们说话"
    assert normalize("發票號碼").text == "发票号码"
    assert normalize("ＷｅＣｈａｔ：微\u200b信１３８").text == "wechat:微信138"
    assert normalize("Crème BRÛLÉE").text == "crème brûlée"
    assert normalize("微 . 信", separators=True).text == "微信"
    assert normalize("國語", simplify=False).text == "國語"
    assert normalize("ABC", casefold=False).text == "ABC"
    with pytest.raises(TypeError, match="takes a str"):
        normalize(b"abc")  # type: ignore[arg-type]


@pytest.mark.parametrize("target, disguised", [
    ("发票", "發\u200b 票"),  # traditional, a zero-width space and a space between the characters
    ("13812345678", "１３８ １２３４-５６７８"),  # full-width digits with separators
    ("wechat", "Ｗｅ\u200dＣｈａｔ"),
    ("代开发票", "代·開.發—票"),
])
def test_span_maps_a_match_back_to_the_original_slice(target, disguised):
    rng = random.Random(7)
    plain = ["simplified", "latin diacritics", "casefold", "compatibility"]  # never dropped, so never join
    for _ in range(200):
        prefix = random_text(rng, plain, rng.randint(0, 20))
        suffix = random_text(rng, plain + ["zero-width", "punctuation"], rng.randint(0, 20))
        text = prefix + disguised + suffix
        n = normalize(text, separators=True)
        start = len(normalize(prefix, separators=True))
        assert n.text[start : start + len(target)] == target, text
        a, b = n.span(start, start + len(target))
        assert text[a:b] == disguised, (text, a, b)


def test_span_refuses_an_empty_or_outside_range():
    n = normalize("發票")
    assert n.span(0, 2) == (0, 2) and n.span(1, 2) == (1, 2)
    for start, end in ((1, 1), (-1, 1), (0, 3)):
        with pytest.raises(ValueError, match="outside the normalised text of 2 characters"):
            n.span(start, end)
