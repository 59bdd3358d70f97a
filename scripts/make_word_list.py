"""Make ``src/aigc/resources/safety/zh_words.txt``: common two-character Chinese words, which the
PII recognizers (aigc.safety.pii) use to tell a name or a place from ordinary words.

The source is jieba 0.42.1's ``dict.txt`` (MIT licence; one ``word frequency tag`` per line,
about 349,000 words with their frequency in jieba's corpus and a part-of-speech tag). jieba is
not a dependency of aigc: this script reads the file once and the list it writes is data we ship.
Get the file with::

    pip download jieba==0.42.1 --no-deps -d /tmp && tar xzf /tmp/jieba-0.42.1.tar.gz -C /tmp
    python scripts/make_word_list.py /tmp/jieba-0.42.1/jieba/dict.txt

What is kept (the rule is written into the file's header too): words of two Chinese characters

* with frequency >= ``--min-freq``; rarer ones, down to ``--min-freq-glue``, only when their
  second character starts a surname (surnames.txt), marked `` g``: they count only as a word a
  "surname" is glued into (青叶良品: 青叶, a brand), never as a word a name is or ends in;
* not tagged as a person's name (``nr*``), so that real names stay names, except a word tagged
  ``nr`` that also occurs inside a longer word not tagged ``nr``: jieba tags many ordinary words
  ``nr`` (余韵, 叶子, 高峰, 温泉), and those build other words (流风余韵, 树叶子, 勇攀高峰), which a
  person's name does not (李娜 and 王明 occur in none);
* not a place tagged ``ns`` ending in 县 or 旗 (房县, 南县 are counties, not ordinary words: the
  address recognizer reads a two-character component that is a listed word, 城市 or 知道, as no
  place).

Nouns (tags n, ng, nz) are marked `` n``: a name candidate glued right after a noun is the tail
of a compound (茉莉龙珠), not a name. Longer words are left out: every rule that reads the list
looks at two characters at a time (measured: the 3-4 character words changed no figure).

The output is sorted and deterministic: the same dict.txt gives the same bytes.
"""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SAFETY = ROOT / "src" / "aigc" / "resources" / "safety"
OUT = SAFETY / "zh_words.txt"
HAN2 = re.compile(r"[\u4e00-\u9fff]{2}")
NOUN_TAGS = ("n", "ng", "nz")
COUNTY_CHARS = "县旗"
MIN_FREQ, MIN_FREQ_GLUE = 5, 3

HEADER = """\
# Common two-character Chinese words, for the PERSON and ADDRESS recognizers (aigc.safety.pii).
#
# A name candidate that is one of these words (温润, 方知) is no name without a label (姓名：).
# Nor, without a label or a title after it, is one whose last character makes a word with the next
# character (纸张加上: 加上), or one glued right after a noun (lines marked " n": 茉莉龙珠); nor,
# unless a role noun ends right before it, one whose surname makes a word with the character
# before it (非常喜欢: 非常; 青叶良品: 青叶, where the rarer words marked " g" count too). An
# address component of two characters that is one of these words (城市, 知道), or whose suffix one
# of them swallows (之间过道: 过道; 居然), is no division, road or place.
#
# Derived by scripts/make_word_list.py from jieba 0.42.1's dict.txt
# (https://github.com/fxsjy/jieba, MIT licence, Copyright (c) 2013 Sun Junyi). Selection: words of
# two Chinese characters with jieba frequency >= {min_freq}, or >= {min_freq_glue} (marked " g") when
# the second character starts a surname in surnames.txt; not tagged nr* (person names) except nr
# words that occur inside a longer word not tagged nr (jieba tags ordinary words such as 余韵 and
# 叶子 nr); not ns words ending in 县 or 旗 (counties). " n" marks a noun (jieba tags {noun_tags}).
# One word per line, sorted. {count} words.
"""


def surname_starts(path: Path) -> set[str]:
    """The first characters of the surnames in surnames.txt."""
    lines = path.read_text(encoding="utf-8").splitlines()
    return {line.split()[0][0] for line in lines if line.strip() and not line.startswith("#")}


def read_dict(path: Path) -> dict[str, tuple[int, str]]:
    """jieba's dict.txt: word -> (frequency, tag)."""
    words = {}
    for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        parts = line.split()
        if len(parts) != 3 or not parts[1].isdigit():
            raise SystemExit(f"{path}:{n}: expected 'word frequency tag', got {line!r}: "
                             "pass jieba 0.42.1's jieba/dict.txt")
        words[parts[0]] = (int(parts[1]), parts[2])
    return words


def select(words: dict[str, tuple[int, str]], surnames: set[str], min_freq: int = MIN_FREQ,
           min_freq_glue: int = MIN_FREQ_GLUE) -> list[str]:
    """The kept words, sorted, each ``word``, ``word n`` (a noun) or ``word g`` (glue only)."""
    in_words = set()  # two-character pieces of longer words that are not person names
    for w, (_, tag) in words.items():
        if len(w) > 2 and not tag.startswith("nr"):
            in_words.update(w[k:k + 2] for k in range(len(w) - 1))
    out = []
    for w, (freq, tag) in words.items():
        if not HAN2.fullmatch(w) or freq < min_freq_glue:
            continue
        if tag.startswith("nr") and w not in in_words or tag == "ns" and w[-1] in COUNTY_CHARS:
            continue
        if freq >= min_freq:
            out.append(w + " n" if tag in NOUN_TAGS else w)
        elif w[1] in surnames:
            out.append(w + " g")
    return sorted(out)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("dict_txt", type=Path, help="jieba 0.42.1's jieba/dict.txt")
    ap.add_argument("--out", type=Path, default=OUT)
    ap.add_argument("--min-freq", type=int, default=MIN_FREQ, help="least jieba frequency of a word")
    ap.add_argument("--min-freq-glue", type=int, default=MIN_FREQ_GLUE,
                    help="least jieba frequency of a word whose second character starts a surname")
    args = ap.parse_args(argv)
    if not args.dict_txt.is_file():
        raise SystemExit(f"no such file {args.dict_txt}: pass the path of jieba 0.42.1's jieba/dict.txt")
    kept = select(read_dict(args.dict_txt), surname_starts(SAFETY / "surnames.txt"), args.min_freq,
                  args.min_freq_glue)
    text = HEADER.format(min_freq=args.min_freq, min_freq_glue=args.min_freq_glue,
                         noun_tags=", ".join(NOUN_TAGS), count=len(kept)) + "\n".join(kept) + "\n"
    tmp = args.out.with_name(args.out.name + ".tmp")
    tmp.write_text(text, encoding="utf-8")
    tmp.replace(args.out)
    print(f"wrote {args.out}: {len(kept)} words, {len(text.encode('utf-8'))} bytes")
    return 0


if __name__ == "__main__":
    sys.exit(main())
