"""A brand's copy rules, and the check of one text against them.

:class:`BrandRules` is a typed config (YAML / JSON via :func:`load_rules`; every field has a
default, so ``load_rules({})`` gives the defaults): words the copy must hold and must not,
the absolute claims China's Advertising Law (art. 9(3): 国家级, 最高级, 最佳 and the like) forbids,
length bounds per channel, punctuation and emoji. :meth:`BrandRules.check` returns
:class:`Violation` s whose ``start`` / ``end`` are offsets into the text as given, for the studio to
highlight; rule ids: ``required``, ``forbidden``, ``banned_claim``, ``length``, ``punctuation``,
``emoji``.

Matching reads text through :func:`aigc.safety.normalize.normalize` (width, case, traditional ->
simplified) with its offset map. Required and forbidden words, and the workspace safety policy's
terms, go through the policy's own matcher (:func:`aigc.safety.policy.parse_policy`: one
Aho-Corasick automaton, English words whole, separators and homoglyphs seen through: ``廉 价``,
``CHEAP``, ``c h e a p`` all hold "cheap"; a word ending in ``*`` is a prefix).

Banned claims are phrases; English ones match as whole words, case-insensitively, with the spaces
and hyphens in them optional (``No.1``, ``no. 1``; ``world class``). Some phrases are claims only in
some contexts, decided by rule (:data:`CLAIM_RULES`), not by listing texts:

- ``最`` is a claim before a Chinese character (最佳, 最强, 最受欢迎), except where it orders in
  time or sequence (最近, 最后, 最终, 最初, 最早, 最晚, 最末) or bounds a quantity (最多 3 天, 最少两件);
  the span is 最 and the character after it. 最新 and 最好 (also "had better") stay claims: a
  brand that disagrees lists the phrase under ``allowed_phrases``.
- ``第一`` is a claim (销量第一, 第一品牌) except as an ordinal before a counter (第一次, 第一步,
  第一天, 第一代, 第一眼, 第一时间 ...).
- ``100%`` / ``百分之百`` is a claim (100% 有效) except as a composition (100% 纯棉, 100% cotton: a
  material of :data:`aigc.apps.copy.checks.MATERIALS` or 纯 after it).
- ``best`` is a claim except in a date mark (best before, best by).

A match that overlaps an occurrence of one of ``allowed_phrases`` is not reported.
"""

from __future__ import annotations

import json
import os
import re
import unicodedata
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field, fields
from functools import lru_cache
from pathlib import Path
from typing import Any

from aigc.errors import InvalidInput
from aigc.safety.normalize import normalize

RULE_IDS = ("required", "forbidden", "banned_claim", "length", "punctuation", "emoji")

# characters per channel, [min, max]; a CJK character counts 1, as does a Latin letter
DEFAULT_LENGTH: dict[str, tuple[int, int]] = {"title": (10, 30), "detail": (60, 300), "social": (20, 140),
                                               "ad": (10, 60)}
# emoji per channel at most (None: no limit); a title or an ad line is read as plain text
DEFAULT_EMOJI: dict[str, int | None] = {"title": 0, "detail": 3, "social": 5, "ad": 1}

# Advertising Law of the PRC art. 9(3) and the SAMR's guidance on absolute terms; English equivalents
DEFAULT_BANNED_CLAIMS: tuple[str, ...] = (
    "最", "最佳", "最好", "最低", "最高", "最强", "最优", "第一", "唯一", "首个", "首家", "首款", "首创",
    "国家级", "世界级", "全球级", "宇宙级", "顶级", "顶尖", "极品", "极致", "至尊", "绝对", "万能", "100%",
    "百分之百", "独一无二", "史无前例", "无与伦比", "销量冠军", "永久", "零风险", "无敌",
    "best", "best-selling", "no. 1", "number one", "#1", "the only", "world-class", "guaranteed",
    "cheapest", "perfect", "ultimate", "unbeatable", "unrivalled", "unrivaled", "unmatched", "finest",
    "greatest", "flawless", "risk-free", "lowest price", "first-ever",
)

_CJK = re.compile(r"[\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff]")
_ZH_NUMBER = "0123456789一二两三四五六七八九十百千几"
_COUNTERS = ("次", "步", "天", "章", "节", "页", "期", "批", "季", "代", "届", "年", "月", "周", "课", "轮",
             "集", "件", "条", "层", "排", "眼", "口", "时间", "阶段")


def _claim_zui(s: str, a: int, b: int) -> tuple[int, int] | None:
    nxt = s[b:b + 1]
    if not nxt or not _CJK.match(nxt) or nxt in "近后终初早晚末":
        return None
    if nxt in "多少" and re.match(rf"\s*[{_ZH_NUMBER}]", s[b + 1:b + 3]):
        return None
    return a, b + 1


def _claim_first(s: str, a: int, b: int) -> tuple[int, int] | None:
    return None if s.startswith(_COUNTERS, b) else (a, b)


def _claim_percent(s: str, a: int, b: int) -> tuple[int, int] | None:
    from aigc.apps.copy.checks import MATERIALS

    rest = s[b:b + 24].lstrip()
    if rest.startswith("纯") or any(m.match(rest) for m in _material_patterns(MATERIALS)):
        return None
    return a, b


@lru_cache(maxsize=1)
def _material_patterns(materials) -> tuple[re.Pattern, ...]:
    from aigc.apps.copy.checks import form_pattern

    return tuple(re.compile(form_pattern(normalize(f).text, plural=True)) for _, forms in materials
                 for f in forms.split("|"))


def _claim_best(s: str, a: int, b: int) -> tuple[int, int] | None:
    return None if re.match(r"[\s\-]*(before|by)(?![a-z])", s[b:]) else (a, b)


# normalised phrase -> its rule: the span it claims, or None where it is not a claim
CLAIM_RULES: dict[str, Callable[[str, int, int], tuple[int, int] | None]] = {
    "最": _claim_zui, "第一": _claim_first, "100%": _claim_percent, "百分之百": _claim_percent,
    "best": _claim_best,
}

# emoji: a pictograph shown as emoji by default, or any symbol with the emoji selector U+FE0F;
# with its skin tones and ZWJ sequences one emoji; a flag (two regional indicators) or a keycap one
_PICTO = ("[\U0001F300-\U0001F5FF\U0001F600-\U0001F64F\U0001F680-\U0001F6FF\U0001F900-\U0001FAFF"
          "\U0001F004\U0001F0CF\U0001F18E\U0001F191-\U0001F19A\U0001F201\U0001F21A\U0001F22F"
          "\U0001F232-\U0001F236\U0001F238-\U0001F23A\U0001F250\U0001F251"
          "\u231A\u231B\u23E9-\u23EC\u23F0\u23F3\u25FD\u25FE\u2614\u2615"
          "\u2648-\u2653\u267F\u2693\u26A1\u26AA\u26AB\u26BD\u26BE\u26C4\u26C5\u26CE\u26D4\u26EA\u26F2\u26F3"
          "\u26F5\u26FA\u26FD\u2705\u270A\u270B\u2728\u274C\u274E\u2753-\u2755\u2757\u2795-\u2797\u27B0\u27BF"
          "\u2B1B\u2B1C\u2B50\u2B55]")
_MOD = "(?:\uFE0F|[\U0001F3FB-\U0001F3FF])*"
_BASE = rf"(?:{_PICTO}|[^\s\w]\uFE0F)"
EMOJI = re.compile(rf"[\U0001F1E6-\U0001F1FF]{{2}}|[0-9#*]\uFE0F?\u20E3"
                   rf"|{_BASE}{_MOD}(?:\u200D{_BASE}{_MOD})*")

_HALF_TO_FULL = {",": "，", ".": "。", ";": "；", ":": "：", "!": "！", "?": "？"}
# half-width marks after a Chinese character, unless an English word or a number follows (尺码:XL)
_HALF_IN_ZH = re.compile(r"([\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff])[ \t]*([,.;:!?]+)(?![,.;:!?])"
                         r"(?![ \t]*[A-Za-z0-9])")
_FULL_IN_EN = re.compile(r"[，。；：！？、]+")
_FULL_TO_HALF = {"，": ",", "。": ".", "；": ";", "：": ":", "！": "!", "？": "?", "、": ","}


@dataclass(frozen=True)
class Violation:
    """One broken rule: its id, a one-line ``detail`` with the fix, and ``[start, end)`` in the text."""

    rule: str
    detail: str
    start: int
    end: int
    text: str

    def to_dict(self) -> dict[str, Any]:
        return {"rule": self.rule, "detail": self.detail, "start": self.start, "end": self.end,
                "text": self.text}


@dataclass
class PunctuationRules:
    max_repeat: int = 1  # the most of repeat_marks in a row: "!" passes, "!!" does not
    repeat_marks: str = "!！"
    mixed_width: bool = True  # no half-width , . ; : ! ? after Chinese, no full-width ，。 in English text

    def to_dict(self) -> dict[str, Any]:
        return {"max_repeat": self.max_repeat, "repeat_marks": self.repeat_marks,
                "mixed_width": self.mixed_width}


@dataclass
class BrandRules:
    """A brand's rules. ``length``: channel -> (min, max) characters; ``emoji``: channel -> the
    most emoji (0: none, None: no limit; a channel missing here has no limit); ``use_policy_terms``:
    whether :meth:`check` also refuses the workspace safety policy's terms given to it."""

    required_words: list[str] = field(default_factory=list)
    forbidden_words: list[str] = field(default_factory=list)
    use_policy_terms: bool = True
    banned_claims: list[str] = field(default_factory=lambda: list(DEFAULT_BANNED_CLAIMS))
    allowed_phrases: list[str] = field(default_factory=list)  # a claim inside one is not reported
    length: dict[str, tuple[int, int]] = field(default_factory=lambda: dict(DEFAULT_LENGTH))
    punctuation: PunctuationRules = field(default_factory=PunctuationRules)
    emoji: dict[str, int | None] = field(default_factory=lambda: dict(DEFAULT_EMOJI))

    # -- (de)serialising
    def to_dict(self) -> dict[str, Any]:
        return {"required_words": list(self.required_words), "forbidden_words": list(self.forbidden_words),
                "use_policy_terms": self.use_policy_terms, "banned_claims": list(self.banned_claims),
                "allowed_phrases": list(self.allowed_phrases),
                "length": {ch: [lo, hi] for ch, (lo, hi) in self.length.items()},
                "punctuation": self.punctuation.to_dict(), "emoji": dict(self.emoji)}

    # -- validating
    def validate(self, policy_terms: Iterable[str] | Any = ()) -> None:
        """Refuse rules that contradict themselves: a required word that is, or holds, a forbidden
        word (or a policy term given) or a banned claim; a length with min > max; emoji limits for
        a channel without a length; counts that are not counts. Raises InvalidInput."""
        for name in ("required_words", "forbidden_words", "banned_claims", "allowed_phrases"):
            _words(getattr(self, name), name)
        if not isinstance(self.use_policy_terms, bool):
            raise InvalidInput(f"use_policy_terms must be true or false, got {self.use_policy_terms!r}")
        if not self.length:
            raise InvalidInput("length names no channel: give at least one, e.g. {detail: [60, 300]}")
        for ch, bounds in self.length.items():
            _bounds(ch, bounds)
        for ch, most in self.emoji.items():
            if ch not in self.length:
                raise InvalidInput(f"emoji limit for unknown channel {ch!r}: the channels are "
                                   f"{', '.join(self.length)} (add it under length, or drop it)")
            if most is not None and (isinstance(most, bool) or not isinstance(most, int) or most < 0):
                raise InvalidInput(f"emoji.{ch} must be a count >= 0 (or null for no limit), got {most!r}")
        p = self.punctuation
        if isinstance(p.max_repeat, bool) or not isinstance(p.max_repeat, int) or p.max_repeat < 1:
            raise InvalidInput(f"punctuation.max_repeat must be an integer >= 1, got {p.max_repeat!r}")
        if not isinstance(p.repeat_marks, str) or not p.repeat_marks:
            raise InvalidInput(f"punctuation.repeat_marks must be the marks as one string (e.g. '!！'), "
                               f"got {p.repeat_marks!r}")
        if not isinstance(p.mixed_width, bool):
            raise InvalidInput(f"punctuation.mixed_width must be true or false, got {p.mixed_width!r}")
        refused = _term_matcher(tuple(self.forbidden_words))
        policy = _policy_matcher(policy_terms) if self.use_policy_terms else None
        for word in self.required_words:
            for matcher, what in ((refused, "a forbidden word"),
                                  (policy, "a term of the workspace safety policy")):
                hits = matcher.match_terms(word) if matcher is not None else []
                if hits:
                    raise InvalidInput(f"required word {word!r} holds {what}, {hits[0].term!r}: no text "
                                       "could pass; drop one of the two")
            claims = self._claims(word)
            if claims:
                raise InvalidInput(f"required word {word!r} holds the banned claim {claims[0][2]!r}: no text "
                                   "could pass; drop the word, or the claim from banned_claims")

    def bounds(self, channel: str) -> tuple[int, int]:
        """(min, max) characters of ``channel``; an unknown channel raises InvalidInput."""
        if channel not in self.length:
            raise InvalidInput(f"unknown channel {channel!r}: use one of {', '.join(self.length)} "
                               "(or add it under the rules' length)")
        return self.length[channel]

    # -- checking
    def check(self, text: str, channel: str, *, policy_terms: Iterable[str] | Any = ()) -> list[Violation]:
        """Every rule ``text`` breaks as a ``channel`` text, by start. ``policy_terms``: the
        workspace safety policy's terms (strings), or the :class:`~aigc.safety.policy.Policy`
        itself (then its allow lists and context rules apply too); ignored when
        ``use_policy_terms`` is false."""
        if not isinstance(text, str):
            raise InvalidInput(f"text must be a string, got {type(text).__name__}")
        lo, hi = self.bounds(channel)
        out: list[Violation] = []

        def add(rule: str, detail: str, a: int, b: int) -> None:
            out.append(Violation(rule, detail, a, b, text[a:b]))

        # required and forbidden words, the policy's terms
        found = {m.term for m in _term_matcher(tuple(self.required_words)).match_terms(text)} \
            if self.required_words else set()
        for word in self.required_words:
            if word not in found:
                add("required", f"required word {word!r} is missing: add it", 0, 0)
        seen: set[tuple[int, int]] = set()
        matchers = [(_term_matcher(tuple(self.forbidden_words)), "forbidden word {!r} of the brand rules")]
        if self.use_policy_terms:
            matchers.append((_policy_matcher(policy_terms), "term {!r} of the workspace safety policy"))
        for matcher, what in matchers:
            for m in matcher.match_terms(text) if matcher is not None else ():
                if (m.start, m.end) not in seen:
                    seen.add((m.start, m.end))
                    add("forbidden", f"{what.format(m.term)}: remove or rephrase it", m.start, m.end)

        for a, b, phrase in self._claims(text):
            add("banned_claim", f"absolute claim {phrase!r} (Advertising Law art. 9(3)): state a fact that "
                                "can be shown instead", a, b)

        # length
        counted = [i for i, ch in enumerate(text) if _counts(ch)]
        first = next((i for i, ch in enumerate(text) if not ch.isspace()), len(text))
        last = max((i for i, ch in enumerate(text) if not ch.isspace()), default=-1)
        counted = [i for i in counted if first <= i <= last]
        n = len(counted)
        if n > hi:
            add("length", f"{n} characters; the {channel} channel allows at most {hi}: cut {n - hi}",
                counted[hi], last + 1)
        elif n < lo:
            add("length", f"{n} characters; the {channel} channel needs at least {lo}: add {lo - n}", first,
                max(first, last + 1))

        # punctuation
        p = self.punctuation
        run = re.compile(f"[{re.escape(p.repeat_marks)}]{{{p.max_repeat + 1},}}")
        for m in run.finditer(text):
            add("punctuation", f"{len(m.group())} marks in a row ({m.group()}), at most {p.max_repeat}: "
                               "keep one", *m.span())
        if p.mixed_width:
            if _CJK.search(text):
                for m in _HALF_IN_ZH.finditer(text):
                    marks = m.group(2)
                    full = "".join(_HALF_TO_FULL[c] for c in marks)
                    add("punctuation", f"half-width {marks!r} in Chinese text: write the full-width {full!r}",
                        *m.span(2))
            else:
                for m in _FULL_IN_EN.finditer(text):
                    half = "".join(_FULL_TO_HALF[c] for c in m.group())
                    add("punctuation", f"full-width {m.group()!r} in English text: write {half!r}", *m.span())

        # emoji
        most = self.emoji.get(channel)
        if most is not None:
            marks = list(EMOJI.finditer(text))
            for m in marks[most:]:
                detail = (f"the {channel} channel allows no emoji: remove it" if most == 0 else
                          f"{len(marks)} emoji; the {channel} channel allows at most {most}: remove this one")
                add("emoji", detail, *m.span())
        out.sort(key=lambda v: (v.start, v.end, RULE_IDS.index(v.rule)))
        return out

    def _claims(self, text: str) -> list[tuple[int, int, str]]:
        """``(start, end, as written)`` of each banned claim in ``text`` (original offsets), the longest
        where two overlap, none inside an allowed phrase."""
        plain, joined = normalize(text), normalize(text, separators=True)
        hits: list[tuple[int, int]] = []
        allowed: list[tuple[int, int]] = []
        # as written; and, for Chinese phrases, with the separators between characters dropped (最 佳, 第*一)
        for view, zh_only in ((plain, False), (joined, True)):
            if zh_only and joined.text == plain.text:
                continue
            s = view.text
            for phrase, rx in _claim_patterns(tuple(self.banned_claims)):
                key = normalize(phrase).text.strip()
                if zh_only and not _CJK.match(key):
                    continue
                rule = CLAIM_RULES.get(key)
                for m in rx.finditer(s):
                    span = rule(s, *m.span()) if rule else m.span()
                    if span is not None:
                        hits.append(view.span(*span))
            allowed += [view.span(*m.span()) for _, rx in _claim_patterns(tuple(self.allowed_phrases))
                        for m in rx.finditer(s)]
        hits = [h for h in set(hits) if not any(a < h[1] and h[0] < b for a, b in allowed)]
        hits.sort(key=lambda h: (h[0], -h[1]))
        out: list[tuple[int, int, str]] = []
        end = -1
        for a, b in hits:
            if a >= end:
                out.append((a, b, text[a:b]))
                end = b
        return out


def _counts(ch: str) -> bool:
    """Whether a character counts towards the length: not a format character (ZWJ, U+FE0F), a
    combining mark or a skin-tone modifier."""
    return unicodedata.category(ch) not in ("Cf", "Mn", "Me") and not "\U0001F3FB" <= ch <= "\U0001F3FF"


@lru_cache(maxsize=32)
def _claim_patterns(phrases: tuple[str, ...]) -> tuple[tuple[str, re.Pattern], ...]:
    from aigc.apps.copy.checks import form_pattern

    out = []
    for phrase in dict.fromkeys(phrases):
        f = normalize(phrase).text.strip()
        if f:
            out.append((phrase, re.compile(form_pattern(f))))
    return tuple(out)


@lru_cache(maxsize=16)
def _term_matcher(words: tuple[str, ...]):
    """The safety policy's matcher over ``words`` (a policy of one category), or None when empty."""
    from aigc.safety.policy import parse_policy

    words = tuple(w for w in dict.fromkeys(words) if normalize(w).text.strip())
    if not words:
        return None
    doc = {"version": 1, "categories": {"brand": {"action": "flag"}},
           "terms": [{"term": w, "category": "brand", "action": "flag"} for w in words]}
    return parse_policy(json.dumps(doc), "brand rules")


def _policy_matcher(policy_terms: Iterable[str] | Any):
    """What matches the workspace policy's terms: the Policy itself, or a matcher over the strings."""
    if hasattr(policy_terms, "match_terms"):
        return policy_terms
    if isinstance(policy_terms, str):
        raise InvalidInput("policy_terms takes a list of terms (or the Policy), not one string: wrap it in a "
                           "list")
    return _term_matcher(tuple(_words(list(policy_terms), "policy_terms")))


def _words(value: Any, name: str) -> list[str]:
    if not isinstance(value, (list, tuple)):
        raise InvalidInput(f"{name} must be a list of words, got {type(value).__name__} {value!r}")
    for w in value:
        if not isinstance(w, str) or not w.strip():
            raise InvalidInput(f"{name} holds {w!r}: every entry must be a non-empty string")
    return list(value)


def _bounds(channel: Any, bounds: Any) -> tuple[int, int]:
    if not isinstance(channel, str) or not channel.strip():
        raise InvalidInput(f"a channel name must be a non-empty string, got {channel!r}")
    if not isinstance(bounds, (list, tuple)) or len(bounds) != 2 or \
            any(isinstance(x, bool) or not isinstance(x, int) for x in bounds):
        raise InvalidInput(f"length.{channel} must be [min, max] characters (two integers), got {bounds!r}")
    lo, hi = bounds
    if lo < 0 or hi < 1:
        raise InvalidInput(f"length.{channel} = [{lo}, {hi}]: min must be >= 0 and max >= 1")
    if lo > hi:
        raise InvalidInput(f"length.{channel} = [{lo}, {hi}]: min is above max; swap them")
    return int(lo), int(hi)


_KEYS = tuple(f.name for f in fields(BrandRules))
_PUNCT_KEYS = tuple(f.name for f in fields(PunctuationRules))


def rules_from_dict(doc: Mapping[str, Any]) -> BrandRules:
    """Rules from a mapping; missing keys keep their defaults, ``length`` and ``emoji`` add to / override
    the default channels. Unknown keys and wrong types raise InvalidInput. Shorthands:

    - ``banned_claims: default`` (or ``default+``) is the built-in list; ``extra_banned_claims``
      adds to whichever list is in force;
    - ``emoji``: true (no limit), false (none), a count for every channel, channel -> count, or
      ``{allowed: bool, max: count | {channel: count}}``."""
    if not isinstance(doc, Mapping):
        raise InvalidInput(f"brand rules must be a mapping of {', '.join(_KEYS)}, got {type(doc).__name__}")
    unknown = [k for k in doc if k not in _KEYS + ("extra_banned_claims",)]
    if unknown:
        raise InvalidInput(f"unknown brand rules key {unknown[0]!r}: use {', '.join(_KEYS)} "
                           "(or extra_banned_claims)")
    rules = BrandRules()
    for name in ("required_words", "forbidden_words", "banned_claims", "allowed_phrases"):
        value = doc.get(name)
        if name == "banned_claims" and value in ("default", "default+"):
            continue
        if value is not None:
            setattr(rules, name, _words(value, name))
    if doc.get("extra_banned_claims") is not None:
        extra = _words(doc["extra_banned_claims"], "extra_banned_claims")
        rules.banned_claims = list(dict.fromkeys(rules.banned_claims + extra))
    if "use_policy_terms" in doc:
        rules.use_policy_terms = doc["use_policy_terms"]
    length = doc.get("length")
    if length is not None:
        if not isinstance(length, Mapping):
            raise InvalidInput(f"length must map channel -> [min, max], got {length!r}")
        rules.length.update({ch: _bounds(ch, b) for ch, b in length.items()})
    punct = doc.get("punctuation")
    if punct is not None:
        if not isinstance(punct, Mapping) or any(k not in _PUNCT_KEYS for k in punct):
            raise InvalidInput(f"punctuation must be a mapping of {', '.join(_PUNCT_KEYS)}, got {punct!r}")
        rules.punctuation = PunctuationRules(**{**rules.punctuation.to_dict(), **punct})
    if doc.get("emoji") is not None:
        rules.emoji = _emoji(doc["emoji"], rules)
    return rules


def _emoji(emoji: Any, rules: BrandRules) -> dict[str, int | None]:
    """The per-channel emoji limits an ``emoji`` entry means (see :func:`rules_from_dict`)."""
    def every(most: int | None) -> dict[str, int | None]:
        return {ch: most for ch in rules.length}

    if isinstance(emoji, bool):
        return every(None if emoji else 0)
    if isinstance(emoji, int):
        return every(emoji)
    if isinstance(emoji, Mapping) and set(emoji) & {"allowed", "max"}:
        if set(emoji) - {"allowed", "max"}:
            raise InvalidInput(f"emoji with allowed / max takes no other key, got {dict(emoji)!r}")
        allowed = emoji.get("allowed", True)
        if not isinstance(allowed, bool):
            raise InvalidInput(f"emoji.allowed must be true or false, got {allowed!r}")
        if not allowed:
            return every(0)
        most = emoji.get("max")
        return _emoji(most, rules) if most is not None else every(None)
    if isinstance(emoji, Mapping):
        return {**rules.emoji, **emoji}
    raise InvalidInput(f"emoji must be true, false, a count, channel -> count, or {{allowed, max}}, "
                       f"got {emoji!r}")


def load_rules(source: str | os.PathLike | Mapping[str, Any]) -> BrandRules:
    """Brand rules from a mapping or a YAML / JSON file, validated (:meth:`BrandRules.validate`)."""
    if isinstance(source, Mapping):
        rules = rules_from_dict(source)
    elif isinstance(source, (str, os.PathLike)):
        import yaml

        from aigc.safety.policy import decode_text_file

        path = Path(source)
        if not path.is_file():
            raise InvalidInput(f"no brand rules file {path}: give a YAML or JSON file (or a mapping)")
        text = decode_text_file(path.read_bytes(), f"brand rules {path}")
        try:
            doc = yaml.safe_load(text)
        except yaml.YAMLError as e:
            raise InvalidInput(f"brand rules {path} is not YAML or JSON: {str(e).splitlines()[0]}") from None
        rules = rules_from_dict({} if doc is None else doc)
    else:
        raise InvalidInput(f"load_rules takes a mapping or a file path, got {type(source).__name__}")
    rules.validate()
    return rules
