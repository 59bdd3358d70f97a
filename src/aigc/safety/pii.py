"""PII recognizers and operators: find personal data in Chinese and English text, then replace,
mask, hash, redact, pseudonymise or keep it.

Presidio's design without its NLP model: each recognizer is a pattern, a validator (check
digits, dates, ``phonenumbers``, ``ipaddress``), context words that raise its score, and a base
score. Everything runs over :func:`aigc.safety.normalize.normalize`'d text (NFKC, so full-width
digits and letters fold; zero-width characters dropped; traditional -> simplified) and every
match is mapped back, so an :class:`Entity`'s offsets are into the text the user wrote.

Numbers are read as *digit runs*: maximal runs of digits joined by single spaces or hyphens
(``138 1234 5678``, ``6222-0212-3456-7890``). A run is tried whole and, when it holds several
numbers, group by group, but a number is never cut out of the middle of a longer run of digits:
an 18-digit order number is not a phone number, a timestamp is not an ID. What a run is decides
its validators: GB 11643 check digit + region + birth date (resident ID), Luhn + issuer prefix
(bank card), ``phonenumbers`` (mobile, landline). Names and addresses have no check digit: they
are scored from a surname list, given-name characters, administrative-division names, road and
number suffixes, and the words around them; a list of common Chinese words (derived from jieba's
dictionary) keeps ordinary words from being read as names or places (细看…，方知用心: 方知 is a
word; 城市公园: 城市 is no city), and product nouns end English names ("Enamel Milk Pan").
``names=`` adds a workspace's own list of names (certain hits).

Overlapping candidates are resolved by score, then length. The data lists live in
``aigc/resources/safety`` (``surnames.txt``, ``cn_divisions.txt``, ``zh_words.txt``, ``pii_*.txt``),
each documented at its top. This module knows nothing of policies, paths or the audit log.
"""

from __future__ import annotations

import bisect
import datetime as _dt
import hashlib
import hmac
import ipaddress
import os
import random
import re
from dataclasses import dataclass
from functools import lru_cache
from importlib import resources
from typing import Iterable, Iterator, Mapping

from aigc.errors import InvalidInput
from aigc.safety.normalize import Normalized, normalize

ENTITY_TYPES: tuple[str, ...] = (
    "CN_RESIDENT_ID", "CN_MOBILE", "CN_LANDLINE", "BANK_CARD", "CN_USCC", "PASSPORT",
    "CN_HK_MACAU_PERMIT", "CN_LICENSE_PLATE", "EMAIL", "IP_ADDRESS", "URL", "PERSON", "ADDRESS",
)
OPERATORS: tuple[str, ...] = ("replace", "mask", "hash", "redact", "pseudonym", "keep")


@dataclass(frozen=True)
class Entity:
    """One piece of PII: its type, where it is in the original text, how sure, and its text."""

    type: str
    start: int
    end: int
    score: float
    text: str

    def to_dict(self) -> dict:
        return {"type": self.type, "start": self.start, "end": self.end, "score": self.score}


@dataclass
class Redacted:
    """A redacted text and the entities that were handled (offsets into the input text)."""

    text: str
    entities: list[Entity]


# ---------------------------------------------------------------------------------------------
# Lexicon: the data files, read once.

_CJK = "\u3400-\u4dbf\u4e00-\u9fff"


@dataclass(frozen=True)
class _Lexicon:
    surnames: dict[str, int]          # surname -> tier (1 common .. 3 needs context)
    surname_start: re.Pattern         # any character a surname starts with
    given: frozenset[str]             # characters common in given names
    name_stop: dict[str, tuple[str, ...]]  # first character -> common words starting with it
    provinces: dict[str, str]         # 2-digit code -> name
    prefectures: frozenset[str]       # 6-digit codes of provinces and prefectures (xxxx00)
    division_names: frozenset[str]    # full and short names of provinces and prefectures
    counties: tuple[tuple[str, str, str, str], ...]  # (code, province, prefecture, county) names
    en_first: frozenset[str]
    en_last: frozenset[str]
    en_things: frozenset[str]         # nouns that name products (Pan, Case, Lamp): not a person
    words: frozenset[str]             # common Chinese words (zh_words.txt): not names, not places
    nouns: frozenset[str]             # those of them that are nouns
    glue: frozenset[str]              # words a "surname" may be glued into (青叶良品): words + rarer


def _resource(name: str) -> list[str]:
    text = (resources.files("aigc") / "resources" / "safety" / name).read_text(encoding="utf-8")
    return [line for line in text.splitlines() if line.strip() and not line.startswith("#")]


@lru_cache(maxsize=1)
def _lexicon() -> _Lexicon:
    surnames = {}
    for line in _resource("surnames.txt"):
        parts = line.split()
        surnames[parts[0]] = int(parts[1]) if len(parts) > 1 else 2
    given = frozenset(c for line in _resource("pii_given_chars.txt") for c in line
                      if re.match(f"[{_CJK}]", c))
    provinces, names, by_code, prefectures = {}, set(), {}, set()
    for line in _resource("cn_divisions.txt"):
        code, name, *short = line.split("\t")
        by_code[code] = name
        if code.endswith("0000"):
            provinces[code[:2]] = name
        if code.endswith("00"):
            names.update([name, *short])
            prefectures.add(code)
    counties = tuple((code, by_code.get(code[:2] + "0000", ""), by_code.get(code[:4] + "00", ""), name)
                     for code, name in by_code.items() if not code.endswith("00"))
    stop: dict[str, list[str]] = {}
    words = [w for line in _resource("pii_name_stopwords.txt") for w in line.split()]
    for w in words + sorted(n for n in names if len(n) >= 2):
        stop.setdefault(w[0], []).append(w)
    zh = [line.split() for line in _resource("zh_words.txt")]  # word, and " n" (noun) or " g" (glue)
    en = {"[first]": set(), "[last]": set(), "[thing]": set()}
    section = None
    for line in _resource("pii_en_names.txt"):
        if line.startswith("["):
            section = line.strip()
            continue
        en[section].update(line.split())
    return _Lexicon(
        surnames=surnames, surname_start=re.compile("[" + "".join(sorted({s[0] for s in surnames})) + "]"),
        given=given, name_stop={k: tuple(sorted(v, key=len, reverse=True)) for k, v in stop.items()},
        provinces=provinces, prefectures=frozenset(prefectures), division_names=frozenset(names),
        counties=counties, en_first=frozenset(en["[first]"]), en_last=frozenset(en["[last]"]),
        en_things=frozenset(en["[thing]"]), words=frozenset(w[0] for w in zh if w[1:] != ["g"]),
        nouns=frozenset(w[0] for w in zh if w[1:] == ["n"]), glue=frozenset(w[0] for w in zh))


# ---------------------------------------------------------------------------------------------
# Validators.

_ID_WEIGHTS = (7, 9, 10, 5, 8, 4, 2, 1, 6, 3, 7, 9, 10, 5, 8, 4, 2)
_ID_CHECK = "10X98765432"
_EXTRA_PROVINCES = ("83",)  # residence permits of Taiwan residents (830000)
# The first 4 digits of an ID (province + prefecture) GB/T 2260 gives or gave beyond the prefecture-level
# divisions cn_divisions.txt lists (today's; it lists counties only for a few cities, so the last 2
# digits go unchecked). An ID keeps the code of the place and the year it was first issued in.
# - municipalities have no prefectures: xx01 市辖区, xx02 县, 5003 市 (重庆's county-level cities, to 2006);
# - xx90: county-level divisions a province governs itself (济源 419001, 五指山 469001);
# - xx21-xx39 numbered the regions (地区), leagues and autonomous prefectures; most regions have
#   since become cities under new codes (昌都地区 542100 -> 540300);
# - former cities: 巢湖 3414 (to 2011), 莱芜 3712 (to 2019), 重庆 5102 while in 四川 (to 1997);
# - 台湾, 香港, 澳门 and the residence permits' 83 are issued as xx0000 only.
_MUNICIPALITIES = ("11", "12", "31", "50")
_PROVINCE_COUNTIES = "90"
_FORMER_REGIONS = ("21", "39")
_FORMER_CITIES = ("3414", "3712", "5102")
_WHOLE_ONLY = ("71", "81", "82", "83")


def _id_check_char(first17: str) -> str:
    return _ID_CHECK[sum(int(c) * w for c, w in zip(first17, _ID_WEIGHTS)) % 11]


def _valid_date(y: int, m: int, d: int) -> bool:
    try:
        born = _dt.date(y, m, d)
    except ValueError:
        return False
    return 1900 <= y and born <= _dt.date.today()


def _id_region(d: str) -> bool:
    """The first 4 digits name a province and a prefecture-level division: one cn_divisions.txt lists,
    or one the notes above ``_MUNICIPALITIES`` allow."""
    lex, province, second = _lexicon(), d[:2], d[2:4]
    if province not in lex.provinces and province not in _EXTRA_PROVINCES:
        return False
    if province in _WHOLE_ONLY:
        return d[2:6] == "0000"
    if (second != "00" and d[:4] + "00" in lex.prefectures) or d[:4] in _FORMER_CITIES:
        return True
    if province in _MUNICIPALITIES:
        return second in ("01", "02") or d[:4] == "5003"
    return second == _PROVINCE_COUNTIES or _FORMER_REGIONS[0] <= second <= _FORMER_REGIONS[1]


def _id_shape(d: str) -> bool:
    """A real region (``_id_region``) and birth date where a resident ID has them (18 or 15 digits)."""
    if not _id_region(d):
        return False
    if len(d) == 18:
        return d[6:14].isdigit() and _valid_date(int(d[6:10]), int(d[10:12]), int(d[12:14]))
    return len(d) == 15 and _valid_date(1900 + int(d[6:8]), int(d[8:10]), int(d[10:12]))


def _valid_resident_id(d: str) -> bool:
    """GB 11643: region, birth date, and (18 digits) the ISO 7064 MOD 11-2 check character."""
    d = d.upper()
    if len(d) == 18:
        return d[:17].isdigit() and _id_shape(d) and _id_check_char(d[:17]) == d[17]
    return len(d) == 15 and d.isdigit() and _id_shape(d)


def _luhn(d: str) -> bool:
    total = 0
    for i, c in enumerate(reversed(d)):
        n = int(c)
        if i % 2:
            n = n * 2 - 9 if n > 4 else n * 2
        total += n
    return total % 10 == 0


def _card_issuer_known(d: str) -> bool:
    """An issuer prefix (IIN) of a card network a Chinese or international bank card carries."""
    n = len(d)
    if d[0] == "4" or d[:2] in ("62", "60", "65", "81") or "51" <= d[:2] <= "55" or d[:4] == "6011":
        return 16 <= n <= 19
    if "2221" <= d[:4] <= "2720" or "644" <= d[:3] <= "649" or "3528" <= d[:4] <= "3589":
        return 16 <= n <= 19
    if d[:2] in ("34", "37"):
        return n == 15  # American Express
    if d[:2] in ("36", "38", "39") or "300" <= d[:3] <= "305":
        return 14 <= n <= 16  # Diners Club
    return d[:2] in ("95", "94", "98") and n == 19  # domestic passbook-era cards


_USCC_ALPHABET = "0123456789ABCDEFGHJKLMNPQRTUWXY"
_USCC_WEIGHTS = (1, 3, 9, 27, 19, 26, 16, 17, 20, 29, 25, 13, 8, 24, 10, 30, 28)
_ORG_ALPHABET = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ"
_ORG_WEIGHTS = (3, 7, 9, 10, 5, 8, 4, 2)


def _uscc_check_char(first17: str) -> str:
    total = sum(_USCC_ALPHABET.index(c) * w for c, w in zip(first17, _USCC_WEIGHTS))
    return _USCC_ALPHABET[(31 - total % 31) % 31]


def _org_check_char(first8: str) -> str:
    """GB 11714: the check character of the 9-character organisation code inside a USCC."""
    total = sum(_ORG_ALPHABET.index(c) * w for c, w in zip(first8, _ORG_WEIGHTS))
    r = 11 - total % 11
    return "0" if r == 11 else "X" if r == 10 else str(r)


def _valid_uscc(code: str) -> bool:
    """GB 32100: 18 characters of its alphabet and the MOD 31 check character."""
    code = code.upper()
    return (len(code) == 18 and all(c in _USCC_ALPHABET for c in code)
            and _uscc_check_char(code[:17]) == code[17])


@lru_cache(maxsize=1)
def _phonenumbers():
    import phonenumbers  # imported only when a number is checked (it is slow to import)

    return phonenumbers


@lru_cache(maxsize=8192)  # a streamed reply is scanned again as it grows
def _phone_kind(national: str) -> str | None:
    """``"mobile"`` / ``"landline"`` for a valid Chinese number (national form, landline with 0)."""
    pn = _phonenumbers()
    if national.startswith("0"):
        national = national[1:]
    elif len(national) != 11:
        return None
    if not national.isdigit() or not 9 <= len(national) <= 11:
        return None
    kind = pn.number_type(pn.PhoneNumber(country_code=86, national_number=int(national)))
    if kind == pn.PhoneNumberType.MOBILE:
        return "mobile" if len(national) == 11 and national[0] == "1" else None
    if kind in (pn.PhoneNumberType.FIXED_LINE, pn.PhoneNumberType.FIXED_LINE_OR_MOBILE):
        return "mobile" if national[0] == "1" and len(national) == 11 else "landline"
    return None


# ---------------------------------------------------------------------------------------------
# Context words: a match near one of these scores higher (Presidio's context enhancement).

_CONTEXT_WORDS = {
    "CN_RESIDENT_ID": "身份证 证件号 证件号码 公民身份 身份号 idcard id card id no id number identity 证件",
    "CN_MOBILE": "手机 电话 联系 致电 拨打 来电 号码 微信 短信 tel phone mobile cell call contact whatsapp sms",
    "CN_LANDLINE": "电话 座机 固话 总机 传真 办公室 分机 客服 热线 tel phone fax office landline hotline call",
    "BANK_CARD": "卡号 银行卡 信用卡 借记卡 储蓄卡 账号 帐号 账户 户名 开户 银行 银联 card account visa "
                 "mastercard unionpay debit credit iban",
    "CN_USCC": "统一社会信用代码 信用代码 社会信用 营业执照 税号 纳税人识别号 纳税人 注册号 企业 公司 uscc credit code "
               "tax id tax code company business license registration",
    "PASSPORT": "护照 护照号 旅行证件 passport travel document",
    "CN_HK_MACAU_PERMIT": "港澳通行证 通行证 往来港澳 回乡证 港澳居民来往内地 港澳 permit eep exit-entry "
                          "home return",
    "CN_LICENSE_PLATE": "车牌 牌照 车号 号牌 车辆 停车 违章 plate license licence vehicle car",
    "EMAIL": "邮箱 邮件 email e-mail mail",
    "IP_ADDRESS": "ip 地址 服务器 登录 访问 server host address login",
    "URL": "网址 链接 主页 网站 url link website site homepage",
    "ADDRESS": "地址 住址 住在 寄到 送到 收货 位于 address live at located ship to deliver",
}


def _context_regex(words: str) -> re.Pattern:
    ascii_words = sorted((w for w in words.split() if w.isascii()), key=len, reverse=True)
    cjk_words = sorted((w for w in words.split() if not w.isascii()), key=len, reverse=True)
    parts = [re.escape(w) for w in cjk_words]
    if ascii_words:
        parts.append(r"\b(?:" + "|".join(re.escape(w) for w in ascii_words) + r")\b")
    return re.compile("|".join(parts), re.IGNORECASE)


_CONTEXT = {k: _context_regex(v) for k, v in _CONTEXT_WORDS.items()}
_BEFORE, _AFTER = 24, 12  # characters of context read before and after a match


def _near(t: str, s: int, e: int, entity: str) -> bool:
    rx = _CONTEXT[entity]
    return bool(rx.search(t, max(0, s - _BEFORE), s) or rx.search(t, e, e + _AFTER))


# A candidate, in normalised offsets: (type, start, end, score, context boost).
_Cand = tuple[str, int, int, float, float]

# ---------------------------------------------------------------------------------------------
# Digit runs: resident IDs, bank cards, mobiles and landlines.

_RUN = re.compile(r"(?<![0-9A-Za-z])[0-9]+(?:[ \-][0-9]+)*(?:[Xx](?![0-9A-Za-z]))?(?![0-9])")
_GROUP = re.compile(r"[0-9]+[Xx]?")
# A country code just before a number: "+86 ", "+86-", "(+86)", "0086 ", "86 ".
_CC_BEFORE = re.compile(r"(?:\(\s*(?:\+|00)?\s*86\s*\)|(?<![0-9])(?:\+\s?|00)?86)\s?-?\s?$")
_PLUS_BEFORE = re.compile(r"\+\s?$")
_AREA_BEFORE = re.compile(r"(?:(?:\+|00)\s?86\s?)?\(\s*(0?[1-9][0-9]{1,2})\s*\)\s?-?\s?$")
_EXTENSION = re.compile(r"\s?(?:转|分机|ext\.?|x|#|-)\s?[0-9]{1,5}(?![0-9])", re.IGNORECASE)


def _digit_candidates(t: str) -> Iterator[_Cand]:
    for run in _RUN.finditer(t):
        if run.end() - run.start() < 7:
            continue  # no number we look for is shorter
        groups = [(g.start(), g.end()) for g in _GROUP.finditer(t, run.start(), run.end())]
        k = len(groups)
        for i in range(k):
            ndigits = 0
            for j in range(i, k):
                ndigits += groups[j][1] - groups[j][0]
                if ndigits > 19:
                    break
                # one separator throughout a number (an area code may have its own: 0755-8888 8888)
                if j > i + 1 and t[groups[j][0] - 1] != t[groups[j - 1][0] - 1] and (
                        j > i + 2 or t[groups[i][0]] != "0"):
                    break
                if ndigits < 7:
                    continue
                s, e = groups[i][0], groups[j][1]
                digits = "".join(t[a:b] for a, b in groups[i:j + 1])
                # inside a longer run, only one group or a number's usual grouping
                whole = (i == 0 and j == k - 1) or i == j
                layout = None if whole else tuple(b - a for a, b in groups[i:j + 1])
                yield from _classify(t, s, e, digits, layout)


# How each kind of number is grouped when it is written in parts (138 1234 5678, 6222 0212 ...).
_LAYOUTS = {
    "CN_RESIDENT_ID": {(6, 8, 4), (6, 4, 4, 4), (6, 6, 6), (6, 6, 3)},
    "BANK_CARD": {(4, 4, 4, 4), (4, 4, 4, 4, 1), (4, 4, 4, 4, 2), (4, 4, 4, 4, 3), (4, 6, 5), (4, 6, 4),
                  (6, 10), (6, 12), (6, 13)},
    "CN_MOBILE": {(3, 4, 4), (3, 8), (2, 3, 4, 4), (4, 3, 4, 4), (2, 11), (4, 11)},
    "CN_LANDLINE": {(3, 8), (3, 7), (4, 8), (4, 7), (3, 4, 4), (4, 4, 4), (4, 3, 4), (3, 3, 4),
                    (2, 8), (2, 7), (3, 4, 4), (2, 4, 4), (2, 3, 4)},
}


def _laid_out(entity: str, layout: tuple[int, ...] | None) -> bool:
    return layout is None or layout in _LAYOUTS[entity]


def _id_like(d: str) -> bool:
    """A province code and a birth year where a resident ID has them: a mistyped ID, not a card."""
    if d[:2] not in _lexicon().provinces:
        return False
    return len(d) == 18 and "1900" <= d[6:10] <= "2099" or len(d) == 15 and "01" <= d[8:10] <= "12"


def _classify(t: str, s: int, e: int, d: str, layout: tuple[int, ...] | None) -> Iterator[_Cand]:
    n = len(d)
    if d[-1] in "Xx":
        if n == 18 and _valid_resident_id(d) and _laid_out("CN_RESIDENT_ID", layout):
            yield ("CN_RESIDENT_ID", s, e, 0.9, 0.1)
        return
    if n in (15, 18) and _valid_resident_id(d) and _laid_out("CN_RESIDENT_ID", layout):
        if n == 18:
            yield ("CN_RESIDENT_ID", s, e, 0.9, 0.1)
        else:
            known = d[:4] + "00" in _lexicon().prefectures
            yield ("CN_RESIDENT_ID", s, e, 0.55 if known else 0.45, 0.4)
    if 14 <= n <= 19 and _luhn(d) and _laid_out("BANK_CARD", layout) and not _id_like(d):
        yield ("BANK_CARD", s, e, 0.75 if _card_issuer_known(d) else 0.2, 0.25)
    if n < 7 or n > 15:
        return
    cc = _CC_BEFORE.search(t, max(0, s - 12), s)
    # mobiles: 11 digits, or 13 / 15 with 86 / 0086 in the run
    national = d[2:] if n == 13 and d.startswith("86") else d[4:] if n == 15 and d.startswith("0086") else d
    if len(national) == 11 and national[0] == "1" and _laid_out("CN_MOBILE", layout) \
            and _phone_kind(national) == "mobile":
        start = s
        if national is not d:
            plus = _PLUS_BEFORE.search(t, max(0, s - 2), s)
            start = plus.start() if plus else s
        elif cc:
            start = cc.start()
        yield ("CN_MOBILE", start, e, 0.85, 0.15)
        return
    if not _laid_out("CN_LANDLINE", layout):
        return
    # landlines: 0 + area code + 7-8 digits; or after a country code without the 0;
    # or 7-8 digits after "(010)"
    area = _AREA_BEFORE.search(t, max(0, s - 16), s)
    if area and 7 <= n <= 8:
        code = area.group(1)
        national, start, score = ("" if code[0] == "0" else "0") + code + d, area.start(), 0.8
    elif d[0] == "0" and 10 <= n <= 12:
        national, start, score = d, s, 0.55 if t[s:e].isdigit() else 0.7
        if cc:
            start, score = cc.start(), 0.8
    elif cc and d[0] != "0" and 9 <= n <= 11:
        national, start, score = "0" + d, cc.start(), 0.8
    elif n == 15 and d.startswith("0086") or n == 13 and d.startswith("86"):
        national, start, score = "0" + d[4 if d[0] == "0" else 2:], s, 0.75
    else:
        return
    if _phone_kind(national) != "landline":
        return
    ext = _EXTENSION.match(t, e)
    yield ("CN_LANDLINE", start, ext.end() if ext else e, score, 0.2)


# ---------------------------------------------------------------------------------------------
# Pattern recognizers: pattern + validator + context + score.

@dataclass(frozen=True)
class _Pattern:
    entity: str
    regex: re.Pattern
    score: float
    boost: float
    validate: object = None  # callable(match) -> score | None (None: not this entity)
    needs: str = ""          # a character the text must hold for the pattern to be tried at all

    def find(self, t: str) -> Iterator[_Cand]:
        if self.needs and self.needs not in t:
            return
        for m in self.regex.finditer(t):
            score = self.score if self.validate is None else self.validate(m)
            if score is not None:
                yield (self.entity, m.start(), m.end(), score, self.boost)


def _uscc_score(code: str) -> float | None:
    code = code.upper()
    if not _valid_uscc(code) or code[0] not in "123456789ABCDEFGNY" or code[1] == "0":
        return None
    org_ok = _org_check_char(code[8:16]) == code[16]  # GB 11714, inside every real USCC
    if code.isdigit() and (_id_like(code) or not org_ok):
        return None  # a mistyped resident ID, or an 18-digit number that passed one check by chance
    score = 0.85 if code[2:4] in _lexicon().provinces or code[2:4] == "10" else 0.6
    return score + (0.05 if org_ok else -0.1)


def _ip_score(m: re.Match) -> float | None:
    text = m.group(0)
    try:
        ipaddress.ip_address(text)
    except ValueError:
        return None
    return 0.85


def _ipv6_find(t: str) -> Iterator[_Cand]:
    if not _IPV6_HINT.search(t):
        return
    for m in _IPV6.finditer(t):
        s, e = m.span()
        token = m.group(0)
        while token.endswith((".", ":")) and not token.endswith("::"):
            token, e = token[:-1], e - 1
        if token.count(":") < 2 or not re.search("[0-9a-fA-F]", token):
            continue
        try:
            ipaddress.IPv6Address(token)
        except ValueError:
            continue
        yield ("IP_ADDRESS", s, e, 0.85, 0.1)


_URL_TAIL = r"[A-Za-z0-9\-._~:/?#\[\]@!$&'()*+,;=%]*"
_TLDS = ("com|cn|net|org|edu|gov|io|co|info|biz|me|top|xyz|cc|tv|hk|tw|mo|uk|us|de|jp|kr|fr|ru|"
         "app|dev|site|online|shop|store|tech|cloud|ai|vip|club|wang|ltd|asia|mobi|name|pro")


def _url_find(t: str, original: str, index: tuple[int, ...]) -> Iterator[_Cand]:
    bare = _URL_BARE if _TLD_HINT.search(t) else None
    for rx, score in ((_URL_SCHEME, 0.9), (_URL_WWW, 0.85), (bare, 0.5)):
        for m in rx.finditer(t) if rx is not None else ():
            s, e = m.span()
            for k in range(s, e):  # a full-width comma or bracket folds to ASCII but ends a URL
                o = original[index[k]]
                if not o.isascii() and not o.isalnum():
                    e = k
                    break
            text = t[s:e]
            while text and (text[-1] in ".,;:!?'\""  # trailing punctuation, unbalanced brackets
                            or text[-1] == ")" and text.count("(") < text.count(")")
                            or text[-1] == "]" and text.count("[") < text.count("]")):
                text, e = text[:-1], e - 1
            if e - s > 4:
                yield ("URL", s, e, score, 0.3)


_EMAIL = re.compile(
    r"(?<![A-Za-z0-9._%+\-])[A-Za-z0-9](?:[A-Za-z0-9._%+\-]{0,63})@"
    r"(?:[A-Za-z0-9](?:[A-Za-z0-9\-]{0,61}[A-Za-z0-9])?\.)+[A-Za-z]{2,24}(?![A-Za-z0-9\-])")
_IPV4 = re.compile(r"(?<![0-9A-Za-z.])(?:[0-9]{1,3}\.){3}[0-9]{1,3}(?![0-9]|\.[0-9])")
_IPV6 = re.compile(r"(?<![0-9A-Za-z])[0-9A-Fa-f:.]*:[0-9A-Fa-f:.]*(?![0-9A-Za-z])")
_IPV6_HINT = re.compile(r"::|[0-9A-Fa-f]:[0-9A-Fa-f]{1,4}:")
_URL_SCHEME = re.compile(r"(?:https?|ftp)://[A-Za-z0-9\-._~:/?#\[\]@!$&'()*+,;=%]+", re.IGNORECASE)
_URL_WWW = re.compile(r"(?<![A-Za-z0-9.@/\-])www\.[A-Za-z0-9\-]+(?:\.[A-Za-z0-9\-]+)+(?:[:/?#]"
                      + _URL_TAIL + ")?", re.IGNORECASE)
_TLD_HINT = re.compile(rf"\.(?:{_TLDS})(?![A-Za-z0-9\-])", re.IGNORECASE)
_URL_BARE = re.compile(r"(?<![A-Za-z0-9.@/\-_])(?:[A-Za-z0-9](?:[A-Za-z0-9\-]{0,61}[A-Za-z0-9])?\.)+"
                       rf"(?:{_TLDS})(?![A-Za-z0-9\-@])(?:[:/?#]" + _URL_TAIL + ")?", re.IGNORECASE)

_PROVINCE_ABBR = "京津沪渝冀豫云辽黑湘皖鲁新苏浙赣鄂桂甘晋蒙陕吉闽贵粤青藏川宁琼"
_PLATE = re.compile(
    rf"(?<![A-Za-z0-9])[{_PROVINCE_ABBR}]\s?(?P<letter>[A-HJ-NP-Z])[\s·•.\-]?"
    r"(?:(?P<tail>[A-HJ-NP-Z0-9]{5,6})|(?P<tail4>[A-HJ-NP-Z0-9]{4})(?P<special>[挂学警港澳领试超]))"
    r"(?![A-Za-z0-9])", re.IGNORECASE)


def _plate_score(m: re.Match) -> float | None:
    """Plates: 5 characters after the letter with at least 3 digits (custom plates), or a
    new-energy 6 (D/F... then digits, or digits then D/F), or 4 + 挂/学/警/港/澳..."""
    if m.group("tail4"):
        return 0.8 if sum(c.isdigit() for c in m.group("tail4")) >= 2 else None
    tail = m.group("tail").upper()
    if len(tail) == 5 and sum(c.isdigit() for c in tail) < 3:
        return None
    if len(tail) == 6 and not (tail[0] in "DFABCEGHJK" and tail[1:].isdigit()
                               or tail[5] in "DF" and tail[:5].isdigit()):
        return None
    letters = m.group("letter") + m.group("tail")
    return 0.8 if letters == letters.upper() else 0.55  # lower-case letters: less sure


# Identity-document numbers and USCCs are read from one pass over 8-18 character letter/digit tokens.
_ALNUM_TOKEN = re.compile(r"(?<![0-9A-Za-z])[0-9A-Za-z]{8,18}(?![0-9A-Za-z])")
_PASSPORT_CN = re.compile(r"[EG][0-9]{8}|E[A-HJ-NP-Z][0-9]{7}|[DSP]E?[0-9]{7}|1[45][0-9]{7}", re.IGNORECASE)
_PASSPORT_GENERIC = re.compile(r"[A-Z]{1,2}[0-9]{6,8}|[0-9]{9}")
_PERMIT = re.compile(r"C[0-9]{8}|C[A-HJ-NP-Z][0-9]{7}|W[0-9]{8}|[HM][0-9]{8}(?:[0-9]{2})?", re.IGNORECASE)
_USCC = re.compile(r"[0-9A-HJ-NP-RTUWXY]{2}[0-9]{6}[0-9A-HJ-NP-RTUWXY]{10}", re.IGNORECASE)


def _token_candidates(t: str) -> Iterator[_Cand]:
    for m in _ALNUM_TOKEN.finditer(t):
        tok, s, e = m.group(), m.start(), m.end()
        if len(tok) == 18:
            if _USCC.fullmatch(tok):
                score = _uscc_score(tok)
                if score is not None:
                    yield ("CN_USCC", s, e, score, 0.15)
            continue
        if _PASSPORT_CN.fullmatch(tok):
            yield ("PASSPORT", s, e, 0.45 if tok[0] in "EeGg" else 0.25, 0.45)
        elif _PERMIT.fullmatch(tok):
            yield ("CN_HK_MACAU_PERMIT", s, e, 0.45, 0.45)
        elif _PASSPORT_GENERIC.fullmatch(tok):
            yield ("PASSPORT", s, e, 0.1, 0.45)  # a foreign passport: only next to 护照 / passport


_PLATE_HINT = re.compile(f"[{_PROVINCE_ABBR}]")
_PATTERNS = (
    _Pattern("EMAIL", _EMAIL, 0.95, 0.05, needs="@"),
    _Pattern("IP_ADDRESS", _IPV4, 0.85, 0.1, _ip_score, needs="."),
    _Pattern("CN_LICENSE_PLATE", _PLATE, 0.8, 0.15, _plate_score),
)
_TOKEN_TYPES = frozenset({"CN_USCC", "PASSPORT", "CN_HK_MACAU_PERMIT"})

# ---------------------------------------------------------------------------------------------
# English names and addresses (case-sensitive: read from the normalised text, not case-folded).

_W = r"(?:[A-Z]'[A-Z][a-z]+|(?:Mc|Mac|De|Van|O)?[A-Z][a-z]+(?:-[A-Z][a-z]+)?)"
# A run of capitalised words and initials: where English names are looked for.
_TITLE_DOT = r"(?:Mr|Mrs|Ms|Mx|Dr|Prof|Rev|Capt)\."
_CAP_WORD = rf"(?:{_TITLE_DOT}|{_W}|[A-Z]\.)"
_CAP_RUN = re.compile(rf"(?<![A-Za-z0-9']){_CAP_WORD}(?:[ \t]{_CAP_WORD})*")
_TOKEN = re.compile(r"\S+")
_EN_TITLES = frozenset("Mr Mrs Ms Miss Mx Dr Prof Sir Madam Dame Rev Capt".split())
_EN_NAME_SUFFIXES = frozenset("Jr Sr II III IV MD PhD DDS DVM".split())
# Role nouns: "Driver Joseph Griffin", "holder Ruben Blackwell": a name follows.
_EN_ROLES = frozenset("""
Driver Courier Caller Holder Cardholder Recipient Customer Client User Passenger Buyer Seller Dealer Agent
Officer Nurse Doctor Patient Technician Engineer Teacher Director Contact Attn Attention Dear Sender Owner
Landlord Tenant Member Rep Representative Supervisor Designer Author Reviewer Friend Neighbour Neighbor
Sister Brother Mom Dad Mother Father Wife Husband Son Daughter Uncle Aunt Cousin Colleague Boss Chef
Manager Consultant Advisor Assistant Clerk Cashier Coach Tutor Captain
""".split())
_EN_ROLES_STRONG = frozenset("Driver Holder Cardholder Recipient Caller Passenger Customer Patient".split())
_EN_NOT_NAME = frozenset("""
The This That These Those A An And But Or If In On At To For From With By Of As It Its We You He She They
My Your Our Their His Her Hi Hello Hey Thanks Thank Please Yes No Not Very Great Good Happy New
Order Service Support Team Store Shop Product Item Company Street Road Avenue Lane Drive Court
Monday Tuesday Wednesday Thursday Friday Saturday Sunday January February March July August September
October November December Apt Suite Unit Room Inc Ltd LLC PLC Co Corp Group China Beijing Shanghai
USA US UK OK Email Phone Mobile Tel Fax Address Card Bank Account Passport Name ID IP URL Web Chinese
English Sales Delivery Express Package Review Note Total Refund Ticket Order Tracking Invoice Receipt
When Where What Who Why How Is Are Was Were Be Can Could Would Should Will Just Also All Any Some
Amazing Awesome Nice Excellent Perfect Fast Quick Slow Bad Poor Free Call Send Ship Sent Got Made
I Me Am Let Lets Here There Today Tomorrow Yesterday Mon Tue Wed Thu Fri Sat Sun Visa Mastercard
Oh First Second Third Fourth Fifth Last Next Thou Thee Thy Thine
""".split()) | _EN_ROLES
_EN_CUE_STRONG = re.compile(
    r"(?:\bmy name is|\bmy name's|\bname\s*:|\bcontact(?: person)?\s*:|\bcustomer\s*:?|\bdear|\battn\.?\s*:?|"
    r"\battention\s*:|\bsigned,?|\bregards,|\bsincerely,|\brecipient\s*:?|\bholder\s*:?|\bcardholder\s*:?|"
    r"\bdriver\s*:?|\bcaller\s*:?|\buser\s*:?|\bpassenger\s*:?|\bbuyer\s*:?|\bseller\s*:?|\bpatient\s*:?|"
    r"\bcourier\s*:?|\bship to\s*:?|\bbill to\s*:?|\bsender\s*:?|\bcalled|\bnamed|姓名|联系人|收件人|收货人|"
    r"客服|卖家|买家|车主|司机|客户|用户|寄件人|发件人)\s*[:：]?\s*$", re.IGNORECASE)
# Words before a name that point at a person (my friend ..., thanks, ...) and plain prepositions.
_EN_CUE_PERSON = re.compile(
    r"(?:\bi am|\bi'm|\bthis is|\bthanks,?|\bthank you,?|\bcheers,|\bbest,|\bask for|\bspeak to|"
    r"\bspoke (?:to|with)|\bhelped by|\bcontact|\bfriend|\bneighbou?r|\bsister|\bbrother|\bmom|\bdad|"
    r"\bmother|\bfather|\bwife|\bhusband|\bson|\bdaughter|\bcolleague|\bboss|\bmanager|\bagent|"
    r"\benquiries\s*:?|\breach|\bmet|\bmeet with|\bsigned by|\bwritten by|\bdesigned by|\bmade by)\s*$",
    re.IGNORECASE)
_EN_CUE_WEAK = re.compile(r"(?:\bfrom|\bto|\bby|\bwith|\bfor|\band|\bcall|[:：,，])\s*$", re.IGNORECASE)
# A greeting names anything the copy talks to ("Oh hello, Enamel Milk Pan!"): no cue at all.
_EN_GREETING = re.compile(r"\b(?:hi|hello|hey|oh|welcome|meet|say hello to)\s*[,，!]?\s*$", re.IGNORECASE)
_EN_FOLLOW = re.compile(
    r"\s(?:was|is|has|had|needs|needed|updated|verified|reports|reported|said|says|from|at|helped|wrote|"
    r"called|asked|confirmed|also|will|would|can|could|and|or|in|of|on)\b|\s*[,，;；。!?)）]|\s*也|\s*$")
_HOUSE_NUMBER = re.compile(r"[0-9][A-Za-z]?,?\s$")
_EN_DETERMINER = re.compile(r"(?:\b(?:the|a|an|this|that|these|our|your|their|its|new)\s+|[这那个款])$",
                            re.IGNORECASE)


_STREET_SUFFIX = (
    "Street|Avenue|Road|Boulevard|Lane|Drive|Court|Place|Square|Terrace|Parkway|Highway|Freeway|"
    "Expressway|Way|Circle|Trail|Alley|Annex|Anex|Arcade|Bayou|Beach|Bottom|Plaza|Loop|Crossing|Crossroads?|"
    "Run|Path|Pike|Row|Walk|Crescent|Close|Grove|Gardens?|Heights|Hills?|Hollow|Park|Point|Ridge|Valley|View|"
    "Vista|Village|Estates?|Cove|Creek|Crest|Bend|Bluffs?|Branch|Bridge|Brooks?|Burgs?|Bypass|Camp|Canyon|"
    "Cape|Causeway|Centers?|Circles|Cliffs?|Club|Commons?|Corners?|Course|Courts|Coves|Curve|Dale|Dam|"
    "Divide|Drives|Extensions?|Falls?|Ferry|Fields?|Flats?|Fords?|Forest|Forges?|Forks?|Fort|Gateway|Glens?|"
    "Greens?|Groves|Harbors?|Haven|Inlet|Islands?|Isle|Junctions?|Keys?|Knolls?|Lakes?|Land|Landing|Lights?|"
    "Loaf|Locks?|Lodge|Mall|Manors?|Meadows?|Mews|Mills?|Mission|Motorway|Mount|Mountains?|Neck|Orchard|"
    "Oval|Overpass|Parks|Parkways|Pass|Passage|Pines?|Places|Plains?|Points|Ports?|Prairie|Radial|Ramp|"
    "Ranch|Rapids?|Rest|Ridges|River|Roads|Route|Rue|Shoals?|Shores?|Skyway|Springs?|Spurs?|Squares|Station|"
    "Stravenue|Stream|Streets|Summit|Throughway|Trace|Track|Trafficway|Trailer|Tunnel|Turnpike|Underpass|"
    "Unions?|Valleys|Via|Viaduct|Views|Villages|Ville|Walks|Wall|Ways|Wells?")
_STREET_ABBR = ("St|Ave|Av|Rd|Blvd|Ln|Dr|Ct|Pl|Sq|Ter|Pkwy|Hwy|Expy|Cir|Trl|Aly|Plz|Xing|Cres|Hts|Pt|Rdg|"
                "Vly|Vlg|Ctr|Ext|Rte")
_US_STATE = (r"(?:A[LKSZR]|C[AOT]|D[EC]|F[LM]|G[AU]|HI|I[DLNA]|K[SY]|LA|M[EHDAINSOTP]|N[EVHJMYCD]|O[HKR]|"
             r"P[AWR]|RI|S[CD]|T[NX]|UT|V[TAI]|W[AVIY]|AA|AE|AP)")
_CITY_STATE_ZIP = r",?\s+[A-Z][a-z]+(?:\s[A-Z][a-z]+){0,2},\s" + _US_STATE + r"\s[0-9]{5}(?:-[0-9]{4})?"
_EN_ADDRESS = re.compile(
    r"(?<![A-Za-z0-9])(?:No\.\s?)?[0-9]{1,6}[A-Za-z]?(?:-[0-9]{1,4})?,?\s"
    r"(?:(?:N|S|E|W|NE|NW|SE|SW|North|South|East|West)\.?\s)?"
    r"(?:(?:[A-Z][A-Za-z'\-]*|[0-9]{1,3}(?:st|nd|rd|th))\s){1,4}"
    rf"(?:(?:{_STREET_SUFFIX})\b|(?:{_STREET_ABBR})\b\.?)"
    r"(?:\s(?:N|S|E|W|NE|NW|SE|SW)\b\.?)?"
    r"(?P<unit>,?\s(?:(?:Apt|Apartment|Suite|Ste|Unit|Room|Rm|Floor|Fl|Bldg|Building)\b\.?|#)\s?#?\s?"
    r"[A-Za-z0-9\-]{1,6})?"
    r"(?P<city>" + _CITY_STATE_ZIP +
    r"|(?:,\s[A-Z][a-z]+(?:\s[A-Z][a-z]+){0,2}\s"
    r"(?:District|County|City|Province|Town|Township|Village|New Area))"
    r"(?:,\s[A-Z][a-z]+(?:\s[A-Z][a-z]+)?)?)?")
_EN_MILITARY = re.compile(
    r"(?<![A-Za-z0-9])(?:(?:PSC|Unit)\s[0-9]{4},?\sBox\s[0-9]{4}|(?:USNS|USNV|USS|USCGC)\s[A-Z][a-z]+)"
    r",?\s+(?:APO|FPO|DPO)\s(?:AA|AE|AP)\s[0-9]{5}")
_EN_POBOX = re.compile(r"(?<![A-Za-z])P\.?\s?O\.?\s?Box\s[0-9]{1,6}(?:" + _CITY_STATE_ZIP + ")?",
                       re.IGNORECASE)


def _en_address_find(t: str) -> Iterator[_Cand]:
    for m in _EN_ADDRESS.finditer(t):
        yield ("ADDRESS", m.start(), m.end(), 0.97 if m.group("city") else 0.7, 0.2)
    for m in _EN_MILITARY.finditer(t):
        yield ("ADDRESS", m.start(), m.end(), 0.85, 0.1)
    for m in _EN_POBOX.finditer(t):
        yield ("ADDRESS", m.start(), m.end(), 0.7, 0.2)


def _is_initial(tok: str) -> bool:
    return len(tok) == 2 and tok[0].isupper() and tok[1] == "."


def _en_name_find(t: str, lex: _Lexicon) -> Iterator[_Cand]:
    """English names: runs of capitalised words scored by the given/family name lists, a title,
    a role noun or a cue before them, and what follows them."""
    for run in _CAP_RUN.finditer(t):
        toks = []
        for m in _TOKEN.finditer(run.group()):
            w = m.group()
            if w.endswith(".") and not _is_initial(w):
                w = w[:-1]  # "Dr." -> "Dr"
            toks.append((w, run.start() + m.start(), run.start() + m.end()))
        k, cue = 0, 0.0
        while k < len(toks):  # titles, role nouns and sentence openers before the name
            w = toks[k][0]
            if w in _EN_TITLES or w in _EN_ROLES:
                cue = max(cue, 0.85 if w in _EN_TITLES or w in _EN_ROLES_STRONG else 0.2)
            elif not (w in _EN_NOT_NAME and w not in lex.en_last) and not _is_initial(w):
                break
            k += 1
        j = k
        while j < len(toks):
            w = toks[j][0]
            if w in _EN_NOT_NAME and w not in lex.en_last and w not in lex.en_first and not _is_initial(w):
                break
            j += 1
        cand = toks[k:j]
        while cand and _is_initial(cand[-1][0]):
            cand.pop()
        rest = toks[j:] if j < len(toks) else []
        if rest and rest[0][0] in _EN_NAME_SUFFIXES:
            cand.append(rest[0])
            rest = rest[1:]
        words = [w for w, _, _ in cand if not _is_initial(w) and w not in _EN_NAME_SUFFIXES]
        if not words or len(words) > 3 or rest and rest[0][0] not in _EN_NOT_NAME:
            continue  # nothing, or a longer capitalised phrase (a product, a title, a street)
        # a product noun ends it: "Enamel Milk Pan", "Walnut Pencil Case" ("Sarah Case" stays a name)
        if any(w in lex.en_things and (w not in lex.en_last or words[0] not in lex.en_first)
               for w in words[1:]):
            continue
        s, e = cand[0][1], cand[-1][2]
        if _EN_DETERMINER.search(t, max(0, s - 6), s) or _HOUSE_NUMBER.search(t, max(0, s - 8), s):
            continue  # "the Madison Office Chair", "60720 David Mills": a thing or a street
        before = t[max(0, s - 24):s]
        greeted = not cue and _EN_GREETING.search(before) is not None
        if greeted and words[0] not in lex.en_first and words[-1] not in lex.en_last:
            continue  # after a greeting only a listed name is one
        if not cue and not greeted:
            cue = (0.85 if _EN_CUE_STRONG.search(before) else 0.25 if _EN_CUE_PERSON.search(before)
                   else 0.1 if _EN_CUE_WEAK.search(before) else 0.0)
        if len(words) == 1:
            score = 0.85 if cue >= 0.85 else 0.0
        else:
            first, last = words[0], words[-1]
            if first in lex.en_first and last in lex.en_last:
                score = 0.85
            elif len(cand) > len(words):  # a middle initial: "Eric M. Fuentes"
                score = 0.75
            elif first in lex.en_last and last in lex.en_first and len(words) == 2:
                score = 0.65  # "Zhang Wei": family name first
            elif (first in lex.en_first or last in lex.en_last) and (len(words) == 2 or last in lex.en_last):
                score = 0.55
            else:
                score = 0.25
            score = max(score, cue) if cue >= 0.85 else score + cue
            if _EN_FOLLOW.match(t, e):
                score += 0.1
        if score > 0:
            yield ("PERSON", s, e, min(score, 1.0), 0.0)


# ---------------------------------------------------------------------------------------------
# Chinese person names: surname + one or two given-name characters, scored by context.

# Labels right before a name (姓名：, 联系人, 我叫 ...): a name follows for sure, even one that
# looks like a common word.
_NAME_LABEL = re.compile(
    r"(?:姓名|名字|联系人|收件人|收货人|寄件人|发件人|签收人|户名|开户名|开户人|持卡人|账户名称|账户名|"
    r"我是|我叫|名叫|叫做|名为|自称|署名|签名|落款|name|account name)\s*[:：]?\s*$", re.IGNORECASE)
# Roles right before a name (客户, 司机, 经理 ...): a name very likely follows.
_NAME_ROLE = re.compile(
    r"(?:负责人|经办人|申请人|乘客|旅客|患者|病人|买家|卖家|业主|租客|房东|客户|顾客|用户|会员|学员|员工|同事|"
    r"店长|店主|客服|专员|车主|司机|代驾|骑手|快递员|外卖员|配送员|送货员|师傅|导购|老板|经理|主管|老师|医生|"
    r"律师|经手人|操作员|业务员|销售员|安装工|维修工|技术员|工程师|营业员|收银员|值班员|联络人|对接人|担保人|"
    r"法定代表人|监护人|投保人|被保险人|受益人|借款人|付款人|收款人|户主|房主|住户|租户|承租人|出租人|当事人|"
    r"报案人|举报人|投诉人|来电人|访客|本人|尊敬的|亲爱的|致|"
    r"contact|customer|recipient|holder|cardholder|user|driver|caller|buyer|seller|passenger|patient|"
    r"applicant|beneficiary|tenant|guest|student|employee)\s*[:：]?\s*$", re.IGNORECASE)
# Words right before a name that make one likely (找张伟, 和王芳, 感谢李娜), or a clean boundary.
_CUE_WORDS = ("叫|感谢|谢谢|找|问|和|与|跟|给|让|请|由|向|对|同|及|是|被|把|替|帮|陪|约|等|到|"
              "联系|联络|通知|转告|告诉|提醒|表扬|投诉|夸")
_NAME_CUE = re.compile(f"(?:{_CUE_WORDS})$")
_NAME_LABEL_WEAK = re.compile(f"(?:{_CUE_WORDS}|[，,、；;:：(（\\s\"“'‘])$")
# Titles right after a name.
_NAME_TITLE = re.compile(
    r"(?:先生|女士|小姐|老师|经理|总监|主任|医生|大夫|护士|律师|教授|博士|同学|师傅|阿姨|叔叔|大爷|大妈|"
    r"老板|总经理|董事长|院长|校长|局长|处长|科长|部长|主管|店长|工程师|会计|同志|警官|老先生|女儿|儿子|"
    r"总理|总裁|总统|主席|书记|市长|省长|县长|镇长|村长|厂长|所长|行长|会长|队长|组长|班长|教练|导演|"
    r"总|工|姐|哥|您好|你好)")
# Words right after a name that a sentence goes on with (张伟说, 王芳的手机, 李娜已签收).
_NAME_FOLLOW = re.compile(
    r"(?:说|讲|表示|反映|称|来电|致电|打电话|投诉|咨询|询问|回复|反馈|下单|购买|买|签收|收到|收|寄|发|的|在|是|已|"
    r"于|给|和|与|跟|也|都|还|就|又|才|很|非常|特别|对|把|被|让|要|想|会|能|可以|需要|希望|觉得|认为|来|去|到|"
    r"从|今天|昨天|明天|刚|正|一直|负责|提供|留|电话|手机|联系|打|用|帮|为|这|那|上|做|看|等|请|开|住|家)")
# Words that follow a name and must not be read as its second given character (张伟明天 -> 张伟).
_AFTER_GIVEN1 = re.compile(r"(?:明天|今天|昨天|后天|已经|一直|一起|一下|一定|也是|还是|就是|都是|不是|说|先生|女士|"
                           r"小姐|老师|经理|同学|师傅|[的了是在和与给说也都就很])")
# An organisation's name goes on after the "name" (户名浦华众城信息有限公司): not a person.
_ORG_AFTER = re.compile(f"[{_CJK}]{{0,5}}?(?:有限公司|有限责任公司|股份|公司|集团|科技|信息|网络|电子|传媒|商贸|贸易|"
                        f"实业|工作室|事务所|银行|医院)")
_NOT_GIVEN = frozenset("的了是在和与及或也都就还很太吗呢吧啊呀哦嗯我你他她它们这那个些么什怎谁哪里说给把被让对向从到"
                       "先女姐哥总工电话号码手机地址")
_CJK_CHAR = re.compile(f"[{_CJK}]")


def _cn_name_find(t: str, lex: _Lexicon) -> Iterator[_Cand]:
    n = len(t)
    i = 0
    while i < n:
        m = lex.surname_start.search(t, i)
        if m is None:
            return
        i = m.start()
        ch = t[i]
        compound = t[i:i + 2] if t[i:i + 2] in lex.surnames else None
        if ch not in lex.surnames and compound is None:
            i += 1
            continue
        best = None
        for sur in ((compound, ch) if compound else (ch,)):
            cand = _cn_name_at(t, i, sur, lex.surnames[sur], lex) if sur in lex.surnames else None
            if cand and (best is None or cand[3] > best[3]):
                best = cand
        if best:
            yield best
        # a compound surname's second character does not start another name (东方淑英, not 方淑英)
        i += 2 if compound and best and best[2] - best[1] > 2 else 1


def _is_cjk(c: str) -> bool:
    return "\u4e00" <= c <= "\u9fff" or "\u3400" <= c <= "\u4dbf"


def _ordinary_word(t: str, i: int, j: int, e: int, lex: _Lexicon, *, inside: bool, titled: bool,
                   glued: bool) -> bool:
    """Whether the name candidate ``t[i:e]`` (given name from ``j``) reads as ordinary words: it is
    a common word (温润, 方知) or doubles its surname (高高兴兴); where it may be ``inside`` a word,
    its surname makes one with the character before it (非常喜欢: 非常, 青叶良品: 青叶); without a
    title after it, its last character makes a word with the next one (纸张加上: 加上), or,
    ``glued`` to the text before it (no boundary, cue word or role noun there), it follows a noun
    (茉莉龙珠). A character that makes a word on its other side too is read that way instead
    (今天王丽: 今天, not 天王; 张晶态度: 态度, not 晶态)."""
    words = lex.words
    if t[i:e] in words or t[j - 1] == t[j]:
        return True
    if inside and t[i - 1:i + 1] in lex.glue and t[max(0, i - 2):i] not in words:
        return True
    if titled:
        return False
    return (t[e - 1:e + 1] in words and t[e:e + 2] not in words
            or glued and t[max(0, i - 2):i] in lex.nouns)


def _title_at(t: str, e: int, lex: _Lexicon) -> bool:
    """A title right after a name: 先生, 经理; a one-character one (总, 工, 姐, 哥) only where the
    sentence goes on after it (王总说, 张工您好), not inside a word (由于工作, 携程工号)."""
    m = _NAME_TITLE.match(t, e)
    if m is None:
        return False
    if m.end() - e > 1:
        return True
    k = m.end()
    return (k >= len(t) or not _is_cjk(t[k]) or _NAME_FOLLOW.match(t, k) is not None
            or _NAME_TITLE.match(t, k) is not None)


def _cn_name_at(t: str, i: int, sur: str, tier: int, lex: _Lexicon) -> _Cand | None:
    j = i + len(sur)
    g1 = t[j:j + 1]
    if not g1 or not _is_cjk(g1) or g1 in _NOT_GIVEN or _NAME_TITLE.match(t, j):
        return None
    g2 = t[j + 1:j + 2]
    two = bool(g2 and _is_cjk(g2) and g2 in lex.given and g2 not in _NOT_GIVEN
               and not _AFTER_GIVEN1.match(t, j + 1) and not _NAME_TITLE.match(t, j + 1))
    before = t[max(0, i - 12):i]
    labelled = _NAME_LABEL.search(before) is not None
    role = not labelled and _NAME_ROLE.search(before) is not None
    bounded = i == 0 or not _is_cjk(t[i - 1]) or _NAME_LABEL_WEAK.search(before) is not None
    cue = _NAME_CUE.search(before) is not None
    # The surname may be the end of a word that starts before it: not after a role noun (车主张伟:
    # 主张), nor after a cue word unless the surname is mostly a word itself (和易中天, but 对于).
    inside = i > 0 and _is_cjk(t[i - 1]) and not role and (not cue or tier >= 3)
    # Without a label, a candidate that reads as ordinary words is none (客服居然说: a role noun
    # is no proof); a shorter given name may still be one (张伟明白 -> 张伟).
    for e in ((j + 2, j + 1) if two else (j + 1,)):
        titled = _title_at(t, e, lex)
        if labelled or not _ordinary_word(t, i, j, e, lex, inside=inside, titled=titled,
                                          glued=not (bounded or role)):
            break
    else:
        return None
    # a surname that is mostly an ordinary word (但, 于, 连) needs a cue, not just a boundary
    if tier >= 3 and not (labelled or role or cue or titled):
        return None
    if _ORG_AFTER.match(t, e):
        return None
    given = t[j:e]
    if all(c in lex.given for c in given):
        score = 0.38 if len(given) == 2 else 0.3
    else:
        score = 0.1
    score += {1: 0.1, 2: 0.0}.get(tier, -0.1) + (0.05 if len(sur) == 2 else 0.0)
    if labelled or role:
        score += 0.45
    elif bounded:
        score += 0.12
    if titled:
        score += 0.4
    elif e >= len(t) or not _is_cjk(t[e]):
        score += 0.12
    elif _NAME_FOLLOW.match(t, e):
        score += 0.1
    # 高兴, 黄色, 李子 ...: a common word, unless a label says it is a name, or a role noun
    # comes before a longer name that merely starts with one (客户李子明)
    if not labelled and any(t.startswith(w, i) and (not role or e - i <= len(w))
                            for w in lex.name_stop.get(t[i], ())):
        return None
    return ("PERSON", i, e, min(score, 1.0), 0.0)


# ---------------------------------------------------------------------------------------------
# Chinese addresses: a chain of administrative divisions, roads, places and numbers.

# Function words that never belong to a place name: a name does not run across them, so the
# words before an address (寄到, 住址, 位于 ...) stay out of it.
_ADDR_STOP = frozenset("的了是在我你他她它们这那些么吗呢吧啊呀哦嗯请把给被让对很也就还要到往寄送住址位于姓说您谢买货件"
                       "递及或与并且又再已找打")
_ADDR_SUFFIXES = (
    ("P", "特别行政区|自治区|省"),
    ("C", "自治州|地区|盟|市"),
    ("D", "自治县|自治旗|林区|新区|特区|区|县|旗"),
    ("T", "街道|镇|乡|苏木"),
    ("R", "大道|大街|街|路|巷|胡同|弄|道|环路"),
    ("V", "小区|社区|花园|大厦|公寓|家园|新村|广场|中心|苑|村|庄|屯|组|园|城|府|湾|里|院|寨|坊|阁|轩|居|邸"),
)
_ADDR_KIND_OF = {sfx: kind for kind, alts in _ADDR_SUFFIXES for sfx in alts.split("|")}
# Every suffix that starts at a position (the longest; 街道 also gives 街), found in one pass.
_ADDR_SUFFIX_AT = re.compile("(?=(" + "|".join(sorted(_ADDR_KIND_OF, key=len, reverse=True)) + "))")
_ADDR_NUMBER = re.compile(
    r"(?:[0-9]{1,6}[A-Za-z]?|[A-Za-z][0-9]{0,4}|[一二三四五六七八九十百零]{1,4})(?:-[0-9A-Za-z]{1,5})?"
    r"(?:号楼|号院|号铺|号|弄|栋|幢|座|单元|室|层|楼|户|期|区|排|巷|组|门)")
_NUMBER_START = frozenset("0123456789一二三四五六七八九十百零")
_ADDR_ROOM = re.compile(r"[0-9]{2,5}(?:室|房)?(?![0-9])")
_POSTCODE = re.compile(r"\s?[0-9]{6}(?![0-9])")
_NAME_MAX = 12  # characters a component's name + suffix may span


def _class_without(ranges: tuple[tuple[str, str], ...], holes: Iterable[str]) -> str:
    """A regex character class body: the code point ``ranges`` less the characters ``holes``."""
    out = []
    for lo, hi in ranges:
        start = ord(lo)
        for h in sorted(ord(c) for c in holes if lo <= c <= hi):
            if h > start:
                out.append(f"{chr(start)}-{chr(h - 1)}")
            start = h + 1
        if start <= ord(hi):
            out.append(f"{chr(start)}-{hi}")
    return "".join(out)


_PLACE_CHARS = _class_without((("\u3400", "\u4dbf"), ("\u4e00", "\u9fff")), _ADDR_STOP)
_ADDR_NAME_RUN = re.compile(f"[{_PLACE_CHARS}]+")
_ADDR_NAME_RUN_LATIN = re.compile(f"[{_PLACE_CHARS}A-Za-z]+")
# The longest name a first component (nothing before it to bound it) may have, by kind.
_FIRST_NAME_MAX = {"C": 5, "D": 5, "T": 5, "R": 6, "V": 6}
_DIVISION_NAME_MAX = 5  # the longest name of a division (P, C, D, T) not in cn_divisions.txt
# A road named by a direction or a number (解放东路, 体育一路): the word 东路 / 一路 does not
# swallow the suffix the way 过道 does in 之间过道.
_ROAD_ORDINALS = frozenset("东南西北中上下前后内外一二三四五六七八九十")

_Comp = tuple[str, int, int]


class _AddrText:
    """One text's address components: where suffixes are and where place names must stop,
    computed once so that every position is cheap to try."""

    def __init__(self, t: str, lex: _Lexicon):
        self.t, self.lex = t, lex
        self._options: dict[tuple[int, bool], list[_Comp]] = {}
        self.sfx: list[tuple[int, int, str]] = []  # (start, end, kind), by start
        for m in _ADDR_SUFFIX_AT.finditer(t):
            sfx, start = m.group(1), m.start()
            self.sfx.append((start, start + len(sfx), _ADDR_KIND_OF[sfx]))
            if sfx == "街道":
                self.sfx.append((start, start + 1, "R"))
        self.starts = [x[0] for x in self.sfx]
        # the stretches a place name may span: CJK (or also Latin) letters but no function word
        self.runs = [m.span() for m in _ADDR_NAME_RUN.finditer(t)]
        self._latin = [m.span() for m in _ADDR_NAME_RUN_LATIN.finditer(t)]
        self._run_starts = [a for a, _ in self.runs]
        self._latin_starts = [a for a, _ in self._latin]

    def brk(self, p: int, latin: bool = False) -> int:
        """The first position at or after ``p`` that a place name cannot cross."""
        runs, starts = (self._latin, self._latin_starts) if latin else (self.runs, self._run_starts)
        k = bisect.bisect_right(starts, p) - 1
        return runs[k][1] if k >= 0 and runs[k][1] > p else p

    def options(self, pos: int, latin: bool = False) -> list[_Comp]:
        """Every component that starts at ``pos`` (a number, or a name + suffix), shortest first;
        ``latin``: names may hold Latin letters (88号SOHO现代城; never in a first component)."""
        key = (pos, latin)
        if key not in self._options:
            self._options[key] = self._find_options(pos, latin)
        return self._options[key]

    def _find_options(self, pos: int, latin: bool) -> list[_Comp]:
        t = self.t
        out = []
        if t[pos] in _NUMBER_START or t[pos].isascii() and t[pos].isalpha():
            m = _ADDR_NUMBER.match(t, pos)
            if m:
                out.append(("N", pos, m.end()))
        limit = min(self.brk(pos, latin), pos + _NAME_MAX + 1)
        k = bisect.bisect_right(self.starts, pos)  # a name has at least one character
        while k < len(self.sfx) and self.sfx[k][0] < limit:
            start, end, kind = self.sfx[k]
            if end <= limit and self._named(pos, start, end, kind):
                out.append((kind, pos, end))
            k += 1
        out.sort(key=lambda c: c[2])
        return out

    def _named(self, pos: int, start: int, end: int, kind: str) -> bool:
        """Whether ``t[pos:end]`` (suffix from ``start``) is a place's name and its suffix, not
        ordinary words. A division listed in cn_divisions.txt is; another division's name is short
        (居然没有服务区 is none). The name is read two characters at a time (jieba's longer words
        include real places: 文化路, 龙岗区); where a common word runs across a one-character
        suffix, the suffix is part of that word: 城市, 知道, 哪里, 之间过道 (过道) are no places,
        but a direction or a number before it names a road (解放东路, 体育一路)."""
        t, words = self.t, self.lex.words
        if kind in "PCD" and _known_division(t[pos:end], self.lex):
            return True
        if kind in "PCDT" and start - pos > _DIVISION_NAME_MAX:
            return False
        if end > start + 1:
            return True  # 小区, 大道, 花园: a word of its own
        if t[start:start + 2] in words:
            return False  # 居然, 里面: the suffix starts a word
        if kind in "DT":  # a district's name may end in one: 南沙区, 沙坪坝区
            return t[pos:end] not in words
        p = pos
        while p < start - 1:
            p += 2 if t[p:p + 2] in words else 1
        return p != start - 1 or t[p:p + 2] not in words or p > pos and t[p] in _ROAD_ORDINALS

    def can_go_on(self, pos: int) -> bool:
        return pos < len(self.t) and bool(self.options(pos, latin=True))

    def pick(self, options: list[_Comp]) -> _Comp | None:
        """The shortest option after which a chain can go on (so 北镇街219号 is a road and a
        number, not a town and a dead end); the longest when none can."""
        for comp in options:
            if self.can_go_on(comp[2]):
                return comp
        return options[-1] if options else None

    def next(self, pos: int, prev: str) -> _Comp | None:
        options = self.options(pos, latin=True)
        if not options and self.t[pos] == " " and pos + 1 < len(self.t):
            options = self.options(pos + 1, latin=True)
        if not options and prev == "N":
            room = _ADDR_ROOM.match(self.t, pos)
            return ("N", pos, room.end()) if room else None
        return self.pick(options)


def _cn_address_find(t: str, lex: _Lexicon) -> Iterator[_Cand]:
    at = _AddrText(t, lex)
    if not at.sfx:
        return
    n, done = len(t), 0  # done: the end of the last address found
    for a, b in at.runs:
        k = bisect.bisect_right(at.starts, a)
        if b <= done or k == len(at.starts) or at.starts[k] >= b:
            continue  # no suffix inside this stretch: no component starts in it
        i = max(a, done)
        while i < b:
            first = at.pick([c for c in at.options(i) if c[0] != "N" and _first_ok(t, c, lex)])
            if first is None:
                i += 1
                continue
            chain = [first]
            while chain[-1][2] < n:
                nxt = at.next(chain[-1][2], chain[-1][0])
                if nxt is None:
                    break
                chain.append(nxt)
            scored = _chain_score(t, chain, lex)
            if scored is None:
                # a later start inside the same name has the same options and makes the same chain
                i = max(i + 1, first[2] - 1)
                continue
            s, e, score = scored
            post = _POSTCODE.match(t, e)
            if post and chain[-1][0] in "NRV":
                e = post.end()
            yield ("ADDRESS", s, e, score, 0.15)
            i = done = e


def _first_ok(t: str, comp: _Comp, lex: _Lexicon) -> bool:
    """Whether a component may start an address: a province only by its real name, the others
    with a name no longer than such names are (nothing before bounds a first component)."""
    kind, s, e = comp
    if kind == "N":
        return False
    if kind in "PC" and _known_division(t[s:e], lex):
        return True
    return kind != "P" and e - s - 1 <= _FIRST_NAME_MAX[kind]


def _known_division(name: str, lex: _Lexicon) -> bool:
    return name in lex.division_names or name[:-1] in lex.division_names


def _chain_score(t: str, chain: list[_Comp], lex: _Lexicon) -> tuple[int, int, float] | None:
    if len(chain) < 2:
        return None
    kinds = "".join(c[0] for c in chain)
    admin = any(k in "PCDT" for k in kinds)
    street = any(k in "RVN" for k in kinds)
    known = any(_known_division(t[s:e], lex) for k, s, e in chain if k in "PC")
    # a real division (a listed province or city, a district, a town) or a road or place with a
    # number: 城市公园, 仓前直街 and 洪城大市 alone are places named in passing, not addresses
    if not (known or "D" in kinds or "T" in kinds or "N" in kinds and ("R" in kinds or "V" in kinds)):
        return None
    if admin and street:
        score = 0.75 + (0.1 if "N" in kinds else 0.0)
    elif street:
        score = 0.65  # 建国路88号, 阳光小区3栋
    else:
        score = 0.55 if known and len(chain) >= 3 else 0.4
    if known:
        score += 0.1
    return chain[0][1], chain[-1][2], min(score, 1.0)


# ---------------------------------------------------------------------------------------------
# The scanner.

class Scanner:
    """PII recognizers compiled once; reusable and thread-safe.

    ``entities``: the types to look for (default all of :data:`ENTITY_TYPES`); ``threshold``: the
    least score reported; ``names``: a workspace's own names, always found (score 1.0); ``key``:
    the HMAC key of the ``hash`` operator (and of ``pseudonym``, which otherwise uses a random key
    of this scanner, consistent only within it).
    """

    def __init__(self, *, entities: Iterable[str] | None = None, threshold: float = 0.5,
                 names: Iterable[str] = (), key: bytes | None = None):
        if entities is None:
            self.entities = frozenset(ENTITY_TYPES)
        else:
            if isinstance(entities, str):
                entities = [entities]
            entities = list(entities)
            unknown = [e for e in entities if e not in ENTITY_TYPES]
            if unknown:
                raise InvalidInput(f"unknown PII entity type {unknown[0]!r}: "
                                   f"use any of {', '.join(ENTITY_TYPES)}")
            self.entities = frozenset(entities)
        if isinstance(threshold, bool) or not isinstance(threshold, (int, float)) or not 0 <= threshold <= 1:
            raise InvalidInput(f"PII threshold {threshold!r} is not a number between 0 and 1: pass e.g. 0.5")
        self.threshold = float(threshold)
        if key is not None and not isinstance(key, (bytes, bytearray)):
            raise InvalidInput(f"PII key must be bytes, not {type(key).__name__}: pass e.g. os.urandom(32) "
                               "or aigc.safety.policy.workspace_key(ws)")
        self.key = bytes(key) if key is not None else None
        self._pseudo_key = self.key if self.key is not None else os.urandom(32)
        self.names = _NameList(names)
        self._lex = _lexicon()

    # -- scanning --------------------------------------------------------------------------
    def scan(self, text: str) -> list[Entity]:
        """The PII in ``text``: sorted by start, non-overlapping, offsets into ``text``."""
        if not isinstance(text, str):
            raise InvalidInput(f"PII scan takes text as a str, not {type(text).__name__}: decode it first")
        if not text:
            return []
        norm = normalize(text, casefold=False)
        t = norm.text
        cands = []
        for typ, s, e, score, boost in self._candidates(norm):
            if typ not in self.entities or e <= s:
                continue
            if boost and score + boost >= self.threshold and _near(t, s, e, typ):
                score = min(1.0, score + boost)
            if score >= self.threshold:
                cands.append((typ, s, e, score))
        return self._resolve(norm, cands)

    def _candidates(self, norm: Normalized) -> Iterator[_Cand]:
        t, want = norm.text, self.entities
        if want & {"CN_RESIDENT_ID", "BANK_CARD", "CN_MOBILE", "CN_LANDLINE"}:
            yield from _digit_candidates(t)
        for p in _PATTERNS:
            if p.entity in want and (p.entity != "CN_LICENSE_PLATE" or _PLATE_HINT.search(t)):
                yield from p.find(t)
        if want & _TOKEN_TYPES:
            yield from _token_candidates(t)
        if "IP_ADDRESS" in want and ":" in t:
            yield from _ipv6_find(t)
        if "URL" in want and "." in t:
            yield from _url_find(t, norm.original, norm.index)
        has_cjk = not t.isascii()
        if "PERSON" in want:
            if has_cjk:
                yield from _cn_name_find(t, self._lex)
            yield from _en_name_find(t, self._lex)
            yield from self.names.find(t)
        if "ADDRESS" in want:
            if has_cjk:
                yield from _cn_address_find(t, self._lex)
            yield from _en_address_find(t)

    @staticmethod
    def _resolve(norm: Normalized, cands: list[tuple[str, int, int, float]]) -> list[Entity]:
        cands.sort(key=lambda c: (-c[3], -(c[2] - c[1]), c[1]))
        taken: list[tuple[int, int]] = []
        out = []
        for typ, s, e, score in cands:
            if any(s < b and a < e for a, b in taken):
                continue
            taken.append((s, e))
            a, b = norm.span(s, e)
            out.append(Entity(typ, a, b, round(score, 2), norm.original[a:b]))
        out.sort(key=lambda x: x.start)
        return out

    # -- operators -------------------------------------------------------------------------
    def redact(self, text: str, operator: str | Mapping[str, str] = "replace") -> Redacted:
        """``text`` with each entity handled by ``operator`` (one name, or a mapping from entity type
        to operator name with ``"*"`` the default)."""
        ops = _operators(operator)
        if self.key is None and "hash" in ops.values():
            raise InvalidInput("the PII 'hash' operator needs a key: pass key=<bytes> "
                               "(a workspace's aigc.safety.policy.workspace_key(ws))")
        entities = self.scan(text)
        pieces, last = [], 0
        for ent in entities:
            op = ops.get(ent.type, ops.get("*", "replace"))
            pieces.append(text[last:ent.start])
            pieces.append(self._apply(op, ent))
            last = ent.end
        pieces.append(text[last:])
        return Redacted("".join(pieces), entities)

    def _apply(self, op: str, ent: Entity) -> str:
        if op == "keep":
            return ent.text
        if op == "redact":
            return ""
        if op == "replace":
            return f"<{ent.type}>"
        if op == "mask":
            return mask(ent.type, ent.text)
        canon = canonical(ent.type, ent.text)
        if op == "hash":
            digest = hmac.new(self.key, f"{ent.type}|{canon}".encode(), hashlib.sha256).hexdigest()
            return f"<{ent.type}:{digest[:12]}>"
        seed = hmac.new(self._pseudo_key, f"pseudonym|{ent.type}|{canon}".encode(), hashlib.sha256).digest()
        return pseudonym(ent.type, ent.text, random.Random(int.from_bytes(seed[:8], "big")))


class _NameList:
    """A workspace's own names (normalised), found wherever they occur: certain hits."""

    def __init__(self, names: Iterable[str]):
        if isinstance(names, str):
            names = [names]
        cleaned = []
        for name in names:
            if not isinstance(name, str):
                raise InvalidInput(f"names must be strings, got {name!r}: pass names=['张伟', 'John Smith']")
            norm = normalize(name.strip(), casefold=False).text.lower()
            if len(norm) >= 2:
                cleaned.append(norm)
        self._automaton = None
        if cleaned:
            import ahocorasick

            auto = ahocorasick.Automaton()
            for name in cleaned:
                auto.add_word(name, len(name))
            auto.make_automaton()
            self._automaton = auto

    def find(self, t: str) -> Iterator[_Cand]:
        if self._automaton is None:
            return
        low = t.lower()
        if len(low) != len(t):
            low = t
        for end, length in self._automaton.iter(low):
            s, e = end + 1 - length, end + 1
            if low[s].isascii() and s > 0 and low[s - 1].isalnum() and low[s - 1].isascii():
                continue
            if low[e - 1].isascii() and e < len(low) and low[e].isalnum() and low[e].isascii():
                continue
            yield ("PERSON", s, e, 1.0, 0.0)


def _operators(operator: str | Mapping[str, str]) -> dict[str, str]:
    if isinstance(operator, str):
        ops = {"*": operator}
    elif isinstance(operator, Mapping):
        ops = dict(operator)
    else:
        raise InvalidInput(f"PII operator must be a name or a mapping, not {type(operator).__name__}: "
                           f"use one of {', '.join(OPERATORS)}")
    for entity, op in ops.items():
        if entity != "*" and entity not in ENTITY_TYPES:
            raise InvalidInput(f"unknown PII entity type {entity!r} in the operator mapping: "
                               f"use '*' or any of {', '.join(ENTITY_TYPES)}")
        if op not in OPERATORS:
            raise InvalidInput(f"unknown PII operator {op!r}: use one of {', '.join(OPERATORS)}")
    return ops


# ---------------------------------------------------------------------------------------------
# Operators: canonical values, masks and pseudonyms.

def _digits(text: str) -> str:
    return "".join(c for c in normalize(text, casefold=False).text if c.isascii() and c.isdigit())


def canonical(entity: str, text: str) -> str:
    """The value an entity stands for, however it was written (what ``hash`` and ``pseudonym``
    key on): ``+86 138-1234-5678`` and ``13812345678`` are one mobile."""
    norm = normalize(text, casefold=False).text
    if entity == "CN_MOBILE":
        return _digits(text)[-11:]
    if entity == "CN_LANDLINE":
        d = _digits(re.sub(r"(?:转|分机|ext\.?|x|#)\s?[0-9]+$", "", norm, flags=re.IGNORECASE))
        if re.match(r"\s*\(?\s*(?:\+|00)", norm) or d.startswith("86") and not d.startswith("0"):
            d = d[4:] if d.startswith("0086") else d[2:]
        d = d if d.startswith("0") else "0" + d
        for n in (12, 11, 10):
            if len(d) >= n and _phone_kind(d[:n]) == "landline":
                return d[:n]
        return d
    if entity in ("CN_RESIDENT_ID", "BANK_CARD"):
        return "".join(c for c in norm if c.isalnum()).upper()
    if entity in ("CN_USCC", "PASSPORT", "CN_HK_MACAU_PERMIT", "CN_LICENSE_PLATE"):
        return "".join(c for c in norm if c.isalnum()).upper()
    if entity == "EMAIL":
        return norm.strip().lower()
    if entity == "IP_ADDRESS":
        try:
            return str(ipaddress.ip_address(norm.strip()))
        except ValueError:
            return norm.strip().lower()
    if entity == "URL":
        return norm.strip().rstrip("/").lower()
    return normalize(text, separators=True).text


_MASK_KEEP = {  # significant (letter, digit, CJK) characters kept at the start and the end
    "CN_RESIDENT_ID": (3, 4), "BANK_CARD": (4, 4), "CN_USCC": (2, 4), "PASSPORT": (1, 3),
    "CN_HK_MACAU_PERMIT": (1, 3), "CN_LICENSE_PLATE": (2, 2), "URL": (4, 4),
}


def mask(entity: str, text: str) -> str:
    """``text`` with most of its letters and digits replaced by ``*`` (type-aware; separators and
    layout kept): ``13812345678`` -> ``138****5678``, ``张伟`` -> ``张*``."""
    sig = [i for i, c in enumerate(text) if c.isalnum()]
    n = len(sig)
    if entity == "CN_MOBILE":
        lead, trail = n - 8, 4  # the country code (if any) and the 3-digit prefix stay
    elif entity == "CN_LANDLINE":
        lead, trail = _landline_area_len(text), 4
    elif entity == "EMAIL":
        at = text.rfind("@")
        hidden = {i for i in sig if i < at}
        hidden.discard(sig[0] if sig else -1)
        return "".join("*" if i in hidden else c for i, c in enumerate(text))
    elif entity == "IP_ADDRESS":
        sep = "." if "." in text else ":"
        head = sep.join(text.split(sep)[:2])
        return head + "".join("*" if c.isalnum() else c for c in text[len(head):])
    elif entity == "URL" and re.match(r"(?i)(?:[a-z]+://)?[^/]+/.", text):
        slash = text.find("/", text.find("//") + 2 if "//" in text else 0)
        return text[:slash + 1] + "".join("*" if c.isalnum() else c for c in text[slash + 1:])
    elif entity == "PERSON":
        if _CJK_CHAR.match(text[:1] or " "):
            lead = 2 if len(text) >= 4 and text[:2] in _lexicon().surnames else 1
            return text[:lead] + "".join("*" if c.isalnum() else c for c in text[lead:])
        return re.sub(r"(?<=[A-Za-z])[A-Za-z'\-]+", lambda m: "*" * len(m.group(0)), text)
    elif entity == "ADDRESS":
        lead, trail = min(6, n // 3), 0
    else:
        lead, trail = _MASK_KEEP.get(entity, (1, 1))
    lead, trail = max(0, lead), max(0, trail)
    if lead + trail >= n:
        lead, trail = (n - 1) // 2, 0 if n < 3 else min(trail, (n - 1) // 2)
    hidden = set(sig[lead:n - trail] if trail else sig[lead:])
    return "".join("*" if i in hidden else c for i, c in enumerate(text))


def _landline_area_len(text: str) -> int:
    d = _digits(text)
    lead = 0
    if re.match(r"\s*\(?\s*(?:\+|00)", text) or (d.startswith("86") and len(d) >= 12):
        lead = 4 if d.startswith("0086") else 2
        d = d[lead:]
    if not d.startswith("0"):
        return lead + (2 if d[:1] in "12" else 3)
    return lead + (3 if d[1:2] in "12" else 4)


# -- pseudonyms ---------------------------------------------------------------------------

_FAKE_ROADS = ("人民路", "解放路", "中山路", "建设路", "和平路", "新华路", "友谊路", "文化路", "光明路", "幸福路")
_FAKE_EN = ("Maple", "Oak", "Cedar", "Pine", "Elm", "Willow", "Lake", "Hill", "Park", "River")
_FAKE_EN_SFX = ("St", "Ave", "Rd", "Ln", "Dr", "Ct", "Way", "Blvd")
_FAKE_CITIES = (("Springfield", "IL"), ("Riverside", "CA"), ("Franklin", "TN"), ("Greenville", "SC"),
                ("Fairview", "TX"), ("Madison", "WI"), ("Clinton", "IA"), ("Georgetown", "KY"))
_MOBILE_PREFIXES = ("130", "131", "132", "133", "135", "136", "137", "138", "139", "150", "151", "152",
                    "155", "156", "157", "158", "159", "180", "181", "182", "183", "185", "186", "187",
                    "188", "189", "177", "199")
_PLATE_LETTERS = "ABCDEFGHJKLMNPQRSTUVWXYZ"


def _fill(text: str, fake: str, slots: list[int]) -> str:
    """``text`` with the characters at ``slots`` replaced, in order, by those of ``fake``."""
    chars = list(text)
    for i, c in zip(slots, fake):
        chars[i] = c
    return "".join(chars)


def _alnum_slots(text: str) -> list[int]:
    return [i for i, c in enumerate(text) if c.isalnum()]


def pseudonym(entity: str, text: str, rng: random.Random) -> str:
    """A fake value of the same type and layout as ``text``, drawn from ``rng`` (seed it with a
    keyed hash of the value for consistency). Fake IDs, cards and USCCs are check-digit-valid,
    fake phone numbers pass ``phonenumbers``, fake IPs come from documentation/benchmark ranges."""
    digit_slots = [i for i, c in enumerate(text) if c.isdigit()]
    if entity == "CN_MOBILE":
        while True:
            fake = rng.choice(_MOBILE_PREFIXES) + "".join(rng.choice("0123456789") for _ in range(8))
            if _phone_kind(fake) == "mobile":
                return _fill(text, fake, digit_slots[-11:])
    if entity == "CN_LANDLINE":
        area = _landline_area_len(text)
        rest = digit_slots[area:]
        canon = canonical(entity, text)
        for _ in range(100):
            fake = rng.choice("2345678") + "".join(rng.choice("0123456789") for _ in range(len(rest) - 1))
            out = _fill(text, fake, rest)
            if _phone_kind(canonical(entity, out)) == "landline" and canonical(entity, out) != canon:
                return out
        return _fill(text, "2" * len(rest), rest)
    if entity == "CN_RESIDENT_ID":
        slots = _alnum_slots(text)
        code = rng.choice(_lexicon().counties)[0]
        born = _dt.date(1950, 1, 1) + _dt.timedelta(days=rng.randrange(20000))
        if len(slots) == 15:
            fake = code + born.strftime("%y%m%d") + f"{rng.randrange(1000):03d}"
        else:
            first17 = code + born.strftime("%Y%m%d") + f"{rng.randrange(1000):03d}"
            fake = first17 + _id_check_char(first17)
        return _fill(text, fake, slots)
    if entity == "BANK_CARD":
        n = len(digit_slots)
        body = "62" + "".join(rng.choice("0123456789") for _ in range(n - 3))
        check = next(c for c in "0123456789" if _luhn(body + c))
        return _fill(text, body + check, digit_slots)
    if entity == "CN_USCC":
        code = rng.choice(_lexicon().counties)[0]
        org8 = "".join(rng.choice("0123456789ABCDEFGHJKLMNPQRTUWXY") for _ in range(8))
        first17 = "91" + code + org8 + _org_check_char(org8)
        return _fill(text, first17 + _uscc_check_char(first17), _alnum_slots(text))
    if entity in ("PASSPORT", "CN_HK_MACAU_PERMIT", "CN_LICENSE_PLATE"):
        out = list(text)
        for i, c in enumerate(text):
            if c.isdigit():
                out[i] = rng.choice("0123456789")
            elif entity == "CN_LICENSE_PLATE" and c.isascii() and c.isalpha():
                out[i] = rng.choice(_PLATE_LETTERS)
            elif entity == "CN_LICENSE_PLATE" and c in _PROVINCE_ABBR:
                out[i] = rng.choice(_PROVINCE_ABBR)
        return "".join(out)
    if entity == "EMAIL":
        return f"user{rng.randrange(16 ** 8):08x}@example.{rng.choice(('com', 'org', 'net'))}"
    if entity == "IP_ADDRESS":
        if ":" in text:
            return str(ipaddress.IPv6Address((0x20010DB8 << 96) | rng.getrandbits(96)))
        return str(ipaddress.IPv4Address((198 << 24) | (18 << 16) | rng.getrandbits(17)))
    if entity == "URL":
        return f"https://example.com/{rng.randrange(16 ** 10):010x}"
    if entity == "PERSON":
        lex = _lexicon()
        if _CJK_CHAR.search(text):
            common = sorted(s for s, tier in lex.surnames.items() if tier == 1 and len(s) == 1)
            given = sorted(lex.given)
            n = max(1, min(2, sum(1 for c in text if _is_cjk(c)) - 1))
            return rng.choice(common) + "".join(rng.choice(given) for _ in range(n))
        return f"{rng.choice(sorted(lex.en_first))} {rng.choice(sorted(lex.en_last))}"
    if entity == "ADDRESS":
        if _CJK_CHAR.search(text):
            _, prov, city, county = rng.choice(_lexicon().counties)
            prefix = prov if prov == city or not city else prov + city
            return f"{prefix}{county}{rng.choice(_FAKE_ROADS)}{rng.randrange(1, 300)}号"
        city, state = rng.choice(_FAKE_CITIES)
        return (f"{rng.randrange(10, 9999)} {rng.choice(_FAKE_EN)} {rng.choice(_FAKE_EN_SFX)}, "
                f"{city}, {state} {rng.randrange(10000, 99999)}")
    return text


# ---------------------------------------------------------------------------------------------
# Module-level shortcuts.

@lru_cache(maxsize=16)
def _scanner(entities: tuple[str, ...] | None, threshold: float, names: tuple[str, ...],
             key: bytes | None) -> Scanner:
    return Scanner(entities=entities, threshold=threshold, names=names, key=key)


def _cached_scanner(entities=None, threshold=0.5, names=(), key=None) -> Scanner:
    try:
        return _scanner(None if entities is None else tuple(entities), threshold,
                        tuple(names) if not isinstance(names, str) else (names,), key)
    except TypeError:  # unhashable arguments: a scanner of their own
        return Scanner(entities=entities, threshold=threshold, names=names, key=key)


def scan(text: str, **kw) -> list[Entity]:
    """The PII entities in ``text`` (see :class:`Scanner` for the keyword arguments)."""
    return _cached_scanner(**kw).scan(text)


def redact(text: str, operator: str | Mapping[str, str] = "replace", **kw) -> Redacted:
    """``text`` with its PII handled by ``operator`` (see :meth:`Scanner.redact`)."""
    return _cached_scanner(**kw).redact(text, operator)
