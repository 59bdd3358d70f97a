"""The workspace safety policy: categories, term lists, allow lists, thresholds, and what each
path (ingest, prompt, output, log) does with personal information.

A policy is one versioned YAML or JSON file (``<workspace>/policy.yaml``; without one, the
default shipped in ``aigc/resources/safety/default_policy.yaml``). Parsing validates everything
first: a syntax error, an unknown key, category, action or operator, a regex that does not
compile or a term file in an unknown encoding raises :class:`~aigc.errors.InvalidInput` with one
line naming the field (and the YAML line), so a bad edit never replaces the policy in force.
``Policy.version`` is ``"<declared version>-<sha256 of the canonical content>[:12]"``: two
policies that check the same way carry the same version, and any change to a term file shows.

Matching. Every literal term, allow phrase and context word is one key of ONE Aho-Corasick
automaton, run over a *view* of the text built here from :func:`aigc.safety.normalize.normalize`
(NFKC, case folding, zero-width characters dropped, traditional -> simplified):

- separators between two non-ASCII letters are dropped (``刷 单``, ``刷*单`` -> ``刷单``), and so
  are those between an ASCII word and a Chinese character (``K 粉`` -> ``k粉``);
- between two ASCII words a run of separators becomes one space, and a chain of single letters
  each one separator apart is joined (``k i l l`` -> ``kill``, ``s.c.a.m`` -> ``scam``; two
  separators end the chain, so ``k i l l  y o u`` -> ``kill you``; a chain right after a word is
  also read with its first letter apart, as in ``let's b u r n`` -> ``let s burn``, and so is
  one that starts with a or i). Inside a joined chain of 4 letters or more every term is also
  looked for without word boundaries and without its spaces (``k i l l y o u`` -> ``killyou``
  holds "kill you"; a one-word term needs 5 letters, so ``s k i l l`` does not hold "kill"), and
  so is every regex, with its spaces and ``\\b`` taken out;
- a symbol inside an ASCII word stands for a letter and is kept: ``@`` ``$`` next to a letter
  (``c@sino``, ``$ex``), ``|`` and ``!`` between letters (``k|ll``, ``sh!t``), ``*`` with a letter
  on each side and two on one (``f*ck``, ``sh*t``, a term's key with one vowel as ``*`` matches
  it; ``s*c*a*m`` is spaced letters);
- in a word that mixes letters with homoglyph digits or symbols, they are folded (``0``->o ``1``->i
  ``3``->e ``4``->a ``5``->s ``7``->t ``8``->b ``@``->a ``$``->s ``|``->i ``!``->i), a lone digit next
  to such a word too (``1 kn0w``), and ``l`` reads as ``i`` throughout (``1`` stands for both),
  which every term is also keyed under (``k1ll``, ``ki11`` -> ``kiii``, as ``kill`` is). Words whose
  digits are no homoglyphs are left alone: quantities and ordinals (``15d``, ``30ml``, ``3rd``,
  ``4x4``), hex runs (hashes, UUIDs, ``2a57:ab84:15d``);
- sentence ends (``。！？!?`` newline) and clause marks (``，；：、``) stay: no term matches across them.

Past the words as written: an English term's last word also matches with -s and -ing (database ->
databases, overdose -> overdosing; not the past, which mostly tells of a thing: "killed it") and an
earlier word with -ing before an article or reflexive (hiring a hacker, hanging myself); a form
counts only where no term of its category matches the same span as written. Context words and
allow phrases take the past too (delivered, sold). A Chinese term ending in the person it is done
to also matches with 了 or 过 before that person (弄死了你). ``~`` between a term's parts lets up to
:data:`GAP_WORDS` words or :data:`GAP_CHARS` Chinese characters stand there within a clause, no
negation among them (``leaked ~ database*``: "leaked customer databases"); it is opt-in, as set
phrases (drop dead) must stay fixed, and runs as a regex that the term's longest part triggers.

A term whose key starts (ends) with an ASCII letter or digit matches only where the character
before (after) it in the view is not one, so ``kill`` is not found in ``skill`` or ``killer``; a
trailing ``*`` (``launder*``) lifts the right-hand boundary. Regex terms (``regex: true``) run
with ``re.ASCII`` (``\\b`` is an ASCII word boundary, so it holds next to a Chinese character) over
the view before homoglyph folding and, when a word has homoglyphs, over the view with them read as
letters (``1`` as i, then as l), so ``h0w t0 f1nd h15 h0m3 4ddr355`` meets the regexes as plain
words. A regex runs only over text that holds one of its factors (:func:`regex_factors`: literal
strings every match holds, found by a second automaton), so a hundred regexes cost a few. A term's
``lang`` (``en``, ``zh``) is when it is looked for: an ``en`` regex only in text with Latin letters,
a ``zh`` one only in text with Chinese characters (literal terms cost nothing extra, so they are
always looked for). Offsets are reported in the original text.

A match is dropped when an allow phrase overlaps it (``性教育`` keeps ``性`` terms out of sex
education) or when a context rule's word stands within the rule's window of it in the same
sentence (``scope: sentence``) or clause (``scope: clause``): warnings (谨防, 警惕, beware,
report), news (警方, arrested), help (热线, helpline), history and teaching (纪录片, museum),
negations right before the term (不会, 请勿, never), refusals (I can't help, 无法提供) and enforcement
after it (…属于违规, … is an instant ban, a bannable offence). A rule with ``quoted: true`` holds only for a match inside
quotation marks (:func:`quoted_spans`: “”, 「」, 《》, "", '' around at most 24 characters): a term its
sentence talks about as a word (文案中的“全网最低价”属于绝对化用语). A list's items joined by 、 stay in
one clause. A rule with ``effect: raise`` works the other
way: its word near a match that is kept lifts the match's severity one step (``TermMatch.raised_by``
says which rule), for a word that is harmless alone but not when it is offered for sale (出售,
selling), meant (我要, I want to) or said to the reader (你这个, you). A rule with ``effect: keep`` and
``overrides: [ids]`` keeps a match against the allow rules it names when its word is near: a request for the thing
itself (详细写出…步骤, step by step) is not released by a frame word around it (…结尾加一段安全提醒, a safety
reminder at the end), which is how a harmful request is dressed up. Context rules are general,
per category, never fitted to one text.

Scores: each matching rule gives its category the score of its severity (once, however often it
matches); several combine as a noisy OR (``1 - prod(1 - s)``), so two low-severity terms can reach
what one high one does (:func:`aigc.safety.moderation.assess`). A category
is on when its score reaches its threshold; a term's action (block, flag, redact) then applies.
"""

from __future__ import annotations

import bisect
import hashlib
import json
import os
import re
import unicodedata
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from importlib import resources
from pathlib import Path
from typing import Any

from aigc.errors import InvalidInput
from aigc.safety.normalize import normalize
from aigc.safety.pii import ENTITY_TYPES
from aigc.safety.pii import OPERATORS as PII_OPERATORS

SEVERITIES = ("low", "medium", "high")
ACTIONS = ("block", "flag", "redact")
PATHS = ("ingest", "prompt", "output", "log")
BLOCKING_PATHS = ("prompt", "output")  # where "block" is an operator too: the request or stream stops
COPY_ACTIONS = ("report", "block")
TEXT_POSITIONS = ("prefix", "suffix")
TRAINING_ACTIONS = ("warn", "refuse")
INGEST_ACTIONS = ("report", "redact", "drop")
CONTEXT_SIDES = ("before", "after", "both")
CONTEXT_SCOPES = ("sentence", "clause")
CONTEXT_EFFECTS = ("allow", "raise", "keep")  # a rule's word near a match drops it, raises its severity a step, or
# keeps it against the allow rules the rule names in ``overrides``

# OpenAI's moderation categories (omni-moderation), the names /v1/moderations answers with.
OPENAI_CATEGORIES = ("harassment", "harassment/threatening", "hate", "hate/threatening", "illicit",
                     "illicit/violent", "self-harm", "self-harm/intent", "self-harm/instructions", "sexual",
                     "sexual/minors", "violence", "violence/graphic")

# TC260-003-2024 (Basic security requirements for generative AI services), Appendix A: the 5
# classes and 31 risks a service must test for. A category names the risks it covers.
TC260_RISKS = {
    "A.1.a": "煽动颠覆国家政权、推翻社会主义制度", "A.1.b": "危害国家安全和利益、损害国家形象",
    "A.1.c": "煽动分裂国家、破坏国家统一和社会稳定", "A.1.d": "宣扬恐怖主义、极端主义", "A.1.e": "宣扬民族仇恨",
    "A.1.f": "宣扬暴力、淫秽色情", "A.1.g": "传播虚假有害信息", "A.1.h": "其他法律、行政法规禁止的内容",
    "A.2.a": "民族歧视内容", "A.2.b": "信仰歧视内容", "A.2.c": "国别歧视内容", "A.2.d": "地域歧视内容",
    "A.2.e": "性别歧视内容", "A.2.f": "年龄歧视内容", "A.2.g": "职业歧视内容", "A.2.h": "健康歧视内容",
    "A.2.i": "其他方面歧视内容",
    "A.3.a": "侵犯他人知识产权", "A.3.b": "违反商业道德", "A.3.c": "泄露他人商业秘密",
    "A.3.d": "利用算法、数据、平台等优势，实施垄断和不正当竞争行为", "A.3.e": "其他商业违法违规行为",
    "A.4.a": "危害他人身心健康", "A.4.b": "侵害他人肖像权", "A.4.c": "侵害他人名誉权", "A.4.d": "侵害他人荣誉权",
    "A.4.e": "侵害他人隐私权", "A.4.f": "侵害他人个人信息权益", "A.4.g": "侵犯他人其他合法权益",
    "A.5.a": "无法满足特定服务类型的安全需求（内容不准确、不可靠）",
}

# Regex terms can match spans of any length: a stream rail that must release text before a
# sentence ends keeps at least this many view characters back when the policy has any.
REGEX_HOLDBACK = 48

_RESOURCES = "resources/safety"
BUILTIN = "builtin:"  # a term file named "builtin:terms_zh.txt" is one that ships with aigc

DEFAULTS: dict[str, Any] = {
    "thresholds": {"category": 0.5, "severity": {"low": 0.3, "medium": 0.6, "high": 0.9}},
    "pii": {"default": {"ingest": "replace", "prompt": "keep", "output": "replace", "log": "replace"},
            "entities": {}, "threshold": 0.5, "names": []},
    "copy_guard": {"window": 16, "threshold": 50, "action": "report"},
    # audio_cue: audio files get the audible cue (provenance.audio.cue) in front, as images get image_mark
    "labels": {"producer": None, "explicit_text": True, "text_position": "suffix", "image_mark": True,
               "audio_cue": True},
    "training": {"unredacted_pii": "warn"},
    "ingest": {"pii": "report"},
    "rails": {"segment_cap": 200},
    "moderation": {"classifier": None},
}
_TOP_KEYS = ("version", "description", "categories", "thresholds", "terms", "term_files", "allow", "contexts",
             *[k for k in DEFAULTS if k != "thresholds"])


# -- what a policy holds ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Category:
    name: str
    description: str
    openai: tuple[str, ...]  # OpenAI moderation categories this one counts towards
    tc260: tuple[str, ...]  # TC260-003 Appendix A risks (keys of TC260_RISKS)
    threshold: float  # the score at which the category is on
    action: str  # what a classifier score at the threshold does (terms carry their own action)


@dataclass(frozen=True)
class Term:
    term: str
    category: str
    severity: str
    action: str
    lang: str | None = None
    regex: bool = False
    id: str = ""
    source: str = ""  # where it was written: "terms[3]" or "terms_zh.txt:12"

    @property
    def rule_id(self) -> str:
        return self.id or f"{self.category}:{self.term}"


@dataclass(frozen=True)
class ContextRule:
    id: str
    words: tuple[str, ...]
    categories: tuple[str, ...]
    window: int  # view characters between the word and the term, at most
    side: str  # before | after | both
    scope: str  # sentence | clause: what the two may not be separated by
    description: str = ""
    effect: str = "allow"  # allow: the match is dropped; raise: its severity goes up one step; keep: see overrides
    quoted: bool = False  # the rule holds only for a term inside quotation marks (a word talked about)
    overrides: tuple[str, ...] = ()  # effect keep: the allow rules (ids) whose words then no longer drop the match


@dataclass(frozen=True)
class TermMatch:
    term: str
    category: str
    severity: str
    action: str
    start: int  # offsets into the original text
    end: int
    rule_id: str
    allowed_by: str | None = None  # "allow:<phrase>" or "context:<rule id>" when dropped (include_allowed)
    raised_by: str | None = None  # "context:<rule id>" when a raise rule lifted ``severity`` a step

    def to_dict(self) -> dict[str, Any]:
        d = {"term": self.term, "category": self.category, "severity": self.severity, "action": self.action,
             "start": self.start, "end": self.end, "rule_id": self.rule_id}
        if self.allowed_by:
            d["allowed_by"] = self.allowed_by
        if self.raised_by:
            d["raised_by"] = self.raised_by
        return d


# -- the view every term is matched in -------------------------------------------------------------

# quotation marks that set a word apart as a word (“全网最低价”, "miracle cure", 「约炮」, 《赌博》): opening -> closing
_QUOTES = {"“": "”", "‘": "’", "「": "」", "『": "』", "《": "》", "«": "»", '"': '"', "＂": "＂", "'": "'"}
_QUOTED_MAX = 24  # characters between the marks, at most: a word or a phrase, not a passage


def quoted_spans(text: str) -> list[tuple[int, int]]:
    """The (start, end) spans of ``text`` between a pair of quotation marks at most ``_QUOTED_MAX``
    characters apart, with no sentence end between them; an ASCII ' opens only after a character
    that is not an ASCII letter or digit and closes only before one (so "don't" and "it's" quote
    nothing, while 含有'最低价' does)."""
    out, i, n = [], 0, len(text)
    while i < n:
        close = _QUOTES.get(text[i])
        if close is None or (text[i] == "'" and i and _ascii_word(text[i - 1])):
            i += 1
            continue
        for j in range(i + 1, min(n, i + 2 + _QUOTED_MAX)):
            if text[j] in "。！？!?\n":
                break
            if text[j] == close and (close != "'" or j + 1 == n or not _ascii_word(text[j + 1])):
                if j > i + 1:
                    out.append((i + 1, j))
                i = j
                break
        i += 1
    return out


def _ascii_word(ch: str) -> bool:
    return ch.isascii() and ch.isalnum()


def _within(span: tuple[int, int], spans: Sequence[tuple[int, int]]) -> bool:
    return any(a <= span[0] and span[1] <= b for a, b in spans)


_HARD = frozenset("。!?\n")  # after NFKC ！？ are ASCII; sentence ends, where the output rail cuts too
_CLAUSE = frozenset(",;:")  # after NFKC ，；： are ASCII; 、 joins a list's items (禁止发布毒品、枪支), not clauses
_ASCII_WORD = frozenset("abcdefghijklmnopqrstuvwxyz0123456789")
# Homoglyphs inside a word that mixes them with letters (k1ll, c@sino, sh!t, k|ll): "1" and "|"
# stand for i and l alike, so the automaton's view reads l as i throughout (_L_TO_I) and regexes
# read the word both ways (_LEET_I, _LEET_L).
_PIPE = "\ue000"  # stands in the view for a "|" inside a word (k|ll); a "|" between words is a separator
_PIPED = re.compile(r"(?<![a-z0-9|])[a-z0-9]+(?:\|[a-z0-9]+)+(?![a-z0-9|])")  # one "|" in it: k|ll, not a|b|c
_LEET_I = str.maketrans("0134578@$!" + _PIPE, "oieastbasii")
_LEET_L = str.maketrans("0134578@$!" + _PIPE, "oleastbasil")
_L_TO_I = str.maketrans("l", "i")
_HOMOGLYPHS = frozenset("0134578@$!" + _PIPE)
_CHAIN = re.compile(r"(?<![a-z0-9@$\ue000*])[a-z0-9@$](?: [a-z0-9@$])+(?![a-z0-9@$\ue000*])")
_TOKEN = re.compile(r"[a-z0-9@$\ue000*]+(?:![a-z0-9@$\ue000*]+)*")  # "!" only inside a word (sh!t)
_MIXED = re.compile(r"[a-z][0-9@$\ue000]|[0-9@$\ue000][a-z]|[a-z]![a-z]")
# Words with digits that are not homoglyphs: quantities and ordinals (15d, 30ml, 3rd, 4x4), and hex
# (hashes, UUIDs, IPv6: 2a57:ab84:15d), which would otherwise read as words (15d -> isd, "lsd").
_NOT_LEET = re.compile(r"\d{2,}(?:mm|cm|km|m|ml|l|mg|g|kg|lbs?|oz|ft|in|d|h|hrs?|min|s|ms|w|kw|v|mah|k|gb|mb|"
                       r"tb|hz|fps|p|pcs?|yo)|\d+(?:st|nd|rd|th)|\d*x\d+|[0-9a-f]{8,}")
_HEX_RUN = re.compile(r"[0-9a-f]*(?::[0-9a-f]*){2,}")
_LATIN = re.compile(r"[a-z]")
_CHINESE = re.compile(r"[\u3400-\u9fff\uf900-\ufaff]")
# Separators: what is neither a letter, digit or combining accent, nor a sentence end or clause
# mark, nor a symbol standing inside an ASCII word: @ or $ next to a letter (c@sino, $ex), the one
# | of a word (k|ll), * inside a word with two letters on one side (f*ck, sh*t; s*c*a*m is spaced
# letters); "_" too. NFKC has made ！？，；： ASCII.
_SEP_RUN = re.compile(r"(?:[^\w\u0300-\u036f。!?\n,;:、@$*\ue000]|_|(?<![a-z])[@$](?![a-z])"
                      r"|(?<![a-z])\*|\*(?![a-z])|(?<![a-z]{2})\*(?![a-z]{2}))+")
_WORDISH = frozenset("abcdefghijklmnopqrstuvwxyz0123456789@$*" + _PIPE)
_MULTI_SEP = "\x01"  # stands for a run of two or more separators while single letters are joined
COMPACT_MIN = 4  # a term is looked for inside a run of spaced single letters when its key has this many


def is_separator(ch: str) -> bool:
    """Whether the view drops ``ch`` (once normalised) between letters."""
    return all(_SEP_RUN.fullmatch(c) for c in normalize(ch).text)


@dataclass(frozen=True)
class View:
    """``text`` as terms are matched in it: ``plain`` (regexes), ``folded`` (the automaton; same
    length, homoglyphs folded) and, for each character, the index in the original text.
    ``regex_views``: ``plain`` and, when a word has homoglyphs, the readings with them folded (1 as
    i, 1 as l), all of one length. ``chains``: the spans of runs of spaced single letters that were
    joined (``k i l l y o u`` -> ``killyou``), where terms are also looked for without word
    boundaries. ``ambiguous``: a chain of spaced letters follows a word or starts with a or i, so
    its first letter may be a word of its own (``let's b u r n`` -> ``let s burn``, ``a s c a m`` ->
    ``a scam``); ``make_view(text, split_first=True)`` reads it so."""

    plain: str
    folded: str
    pos: tuple[int, ...]
    leet: bool = False
    ambiguous: bool = False
    regex_views: tuple[str, ...] = ()
    chains: tuple[tuple[int, int], ...] = ()

    def span(self, start: int, end: int) -> tuple[int, int]:
        return self.pos[start], self.pos[end - 1] + 1


def make_view(text: str, *, split_first: bool = False) -> View:
    norm = normalize(text)
    s, index = norm.text, norm.index
    if "|" in s:  # the one "|" of a word stands for a letter (k|ll); same length, so index holds
        s = _PIPED.sub(lambda m: m.group().replace("|", _PIPE) if m.group().count("|") == 1 else m.group(), s)
    out: list[str] = []
    pos: list[int] = []
    last = 0
    for m in _SEP_RUN.finditer(s):  # a run of separators: dropped, or one space between two ASCII words
        a, b = m.span()
        out.append(s[last:a])
        pos.extend(index[last:a])
        if a and b < len(s) and s[a - 1] in _WORDISH and s[b] in _WORDISH:
            out.append(" " if b - a == 1 else _MULTI_SEP)
            pos.append(index[a])
        last = b
    out.append(s[last:])
    pos.extend(index[last:])
    plain = "".join(out)
    ambiguous = False
    chains: list[tuple[int, int]] = []
    if " " in plain:  # join chains of single letters one separator apart: "k i l l" -> "kill"
        drop: set[int] = set()
        joined: list[tuple[int, int]] = []
        for m in _CHAIN.finditer(plain):
            a = m.start()
            # its first letter may be a word of its own: after a word (let's b u r n), or a / i
            lead = (a >= 2 and plain[a - 1] == " " and plain[a - 2] in _ASCII_WORD or plain[a] in "ai") and \
                m.end() - a >= 5
            ambiguous = ambiguous or lead
            first = a + 2 if split_first and lead else a
            drop.update(range(first + 1, m.end(), 2))
            joined.append((first, m.end()))
        if drop:
            order = sorted(drop)
            for a, b in joined:  # the chain's span once the separators are gone
                a2, b2 = a - bisect.bisect_left(order, a), b - bisect.bisect_left(order, b)
                if b2 - a2 >= COMPACT_MIN:
                    chains.append((a2, b2))
            plain = "".join(ch for j, ch in enumerate(plain) if j not in drop)
            pos = [p for j, p in enumerate(pos) if j not in drop]
    plain = plain.replace(_MULTI_SEP, " ")
    spans = _homoglyph_spans(plain)
    if not spans:
        return View(plain, plain.translate(_L_TO_I) if "l" in plain else plain, tuple(pos), False, ambiguous,
                    (plain,), tuple(chains))
    as_i, as_l = _fold(plain, spans, _LEET_I), _fold(plain, spans, _LEET_L)
    views = (plain, as_i) if as_i == as_l else (plain, as_i, as_l)
    return View(plain, as_i.translate(_L_TO_I), tuple(pos), True, ambiguous, views, tuple(chains))


def _homoglyph_spans(plain: str) -> list[tuple[int, int]]:
    """The words of ``plain`` whose digits and symbols stand for letters (k1ll, wh3r3, c@sino), and
    a lone digit or two next to such a word (1 kn0w -> i know); none in the common case."""
    if _MIXED.search(plain) is None:
        return []
    hexed = [m.span() for m in _HEX_RUN.finditer(plain)]
    tokens = [(m.start(), m.end(), m.group()) for m in _TOKEN.finditer(plain)]
    leet = [any(ch.isalpha() for ch in t) and any(ch in _HOMOGLYPHS for ch in t)
            and not _NOT_LEET.fullmatch(t) and not any(x <= a and b <= y for x, y in hexed)
            for a, b, t in tokens]
    spans = []
    for k, (a, b, t) in enumerate(tokens):  # a lone digit is a letter only one space from such a word
        near = t.isdigit() and len(t) <= 2 and (
            (k > 0 and leet[k - 1] and tokens[k - 1][1] + 1 == a and plain[a - 1] == " ")
            or (k + 1 < len(tokens) and leet[k + 1] and b + 1 == tokens[k + 1][0] and plain[b] == " "))
        if leet[k] or near:
            spans.append((a, b))
    return spans


def _fold(plain: str, spans: list[tuple[int, int]], table: dict[int, str]) -> str:
    out, last = [], 0
    for a, b in spans:
        out += [plain[last:a], plain[a:b].translate(table)]
        last = b
    out.append(plain[last:])
    return "".join(out)


def _word_edges(key: str) -> tuple[bool, bool]:
    return key[:1] in _ASCII_WORD, key[-1:] in _ASCII_WORD


def _masked(key: str) -> set[str]:
    """``key`` with one vowel inside a word written as ``*`` (f*ck, sh*t, n*gger), where the view
    keeps the ``*``: a letter on each side and two on one."""
    out = set()
    for i in range(1, len(key) - 1):
        before, after = key[max(i - 2, 0):i], key[i + 1:i + 3]
        if key[i] in "aeiou" and key[i - 1].isalpha() and key[i + 1].isalpha() and \
                (len(before) == 2 and before.isalpha() or len(after) == 2 and after.isalpha()):
            out.add(key[:i] + "*" + key[i + 1:])
    return out


# Words that are never inflected (pronouns, articles, auxiliaries, negations): "kill you" must not
# become "kill yous".
_FUNCTION_WORDS = frozenset(
    "a all also am an and any are as at be been but by can could did do does don for from had has have he her "
    "hers him his how i if in into is it its just me my no nor not of off on or our out over she so some than "
    "that the their them then there these they this those to too up us was we were what when where which who "
    "why will with won would you your yours".split())
# Irregular pasts of the verbs context rules name (sold near a drug name is a sale, as sell is).
_IRREGULAR = {"buy": ("bought",), "sell": ("sold",), "send": ("sent",), "pay": ("paid",), "get": ("got",),
              "steal": ("stole", "stolen"), "find": ("found",), "make": ("made",), "take": ("took", "taken"),
              "give": ("gave", "given"), "hide": ("hid", "hidden"), "bring": ("brought",), "tell": ("told",)}
_VOWELS = frozenset("aeiou")


def _inflections(word: str, past: bool = False) -> set[str]:
    """The regular English forms of ``word``: plural or third person and -ing ("database" ->
    "databases", "harass" -> "harassing", "make" -> "making", "stab" -> "stabbing"), and with
    ``past`` the past too ("deliver" -> "delivered", "sell" -> "sold"). None for a function word, a
    word under 3 letters or with digits, or one that already ends in a single s, -ed or -ing. A form
    that is no English word (a doubled consonant where none is) costs a key and matches nothing."""
    if len(word) < 3 or not word.isascii() or not word.isalpha() or word in _FUNCTION_WORDS:
        return set()
    sibilant = word.endswith(("ss", "us", "x", "z", "ch", "sh"))
    if (word.endswith("s") and not sibilant) or word.endswith(("ed", "ing")):
        return set()
    cons_y = word[-1] == "y" and word[-2] not in _VOWELS
    double = word[-1] not in "aeiouwxy" and word[-2] in _VOWELS and word[-3] not in _VOWELS  # stab: stabbing
    stem = word[:-2] + "y" if word.endswith("ie") else word if word.endswith("ee") else \
        word[:-1] if word.endswith("e") else word
    out = {word + "es" if sibilant else word[:-1] + "ies" if cons_y else word + "s", stem + "ing"}
    if double:
        out.add(word + word[-1] + "ing")
    if past:
        out |= set(_IRREGULAR.get(word, ()))
        out.add(word + "d" if word.endswith("e") else word[:-1] + "ied" if cons_y else word + "ed")
        if double:
            out.add(word + word[-1] + "ed")
    return out


_ING_BEFORE = frozenset("a an the myself yourself himself herself themselves ourselves yourselves".split())


def _inflected(plain: str, prefix: bool, past: bool = False) -> set[str]:
    """``plain`` (a phrase's view, words one space apart) with one of its words inflected at a time.
    The last word takes every form (leaked database -> databases, nude -> nudes); an earlier word
    only -ing, and only before an article or a reflexive (hire a hacker -> hiring a hacker, hang
    myself -> hanging myself): elsewhere it heads a set phrase whose other forms tell rather than
    insult or threaten (shut up / he shuts up, piss off / pissed off, kill you / smoking kills you).
    ``past`` adds past forms (for context words and allow phrases: "delivered"; a term's past mostly
    tells of it: "killed it" is praise). The last word of a prefix term (``launder*``) needs none."""
    words = plain.split(" ")
    out = set()
    for j, w in enumerate(words):
        last = j == len(words) - 1
        if last and prefix:
            continue
        forms = _inflections(w, past)
        if not last:
            forms = {f for f in forms if f.endswith("ing")} if words[j + 1] in _ING_BEFORE else set()
        out |= {" ".join([*words[:j], f, *words[j + 1:]]) for f in forms}
    return out


# An aspect particle between a verb and the person it is done to (弄死了你, 打过他): a Chinese term
# that ends in such a person is also keyed with one before it. Only there: inside other terms a
# particle joins words that were apart (买了大小 is "bought both sizes", not 买大小 betting).
_PARTICLES = ("了", "过")
_PERSONS = ("你们", "他们", "她们", "全家", "你", "他", "她")


def _with_particles(key: str) -> set[str]:
    person = next((p for p in _PERSONS if key.endswith(p)), None)
    verb = key[:-len(person)] if person else ""
    if len(verb) < 2 or not all(_CHINESE.match(ch) for ch in key) or verb.endswith(_PARTICLES):
        return set()
    return {verb + p + person for p in _PARTICLES}


# A term written with "~" between its parts ("leaked ~ database*", "出售 ~ 名单") lets up to GAP_WORDS
# words (English) or GAP_CHARS characters (Chinese, about three words: the shape regexes' usual
# reach) stand there, within one clause and with no negation among them. Opt-in per term: set
# phrases (drop dead, kiss my ass) must stay fixed.
GAP = "~"
GAP_WORDS = 2
GAP_CHARS = 6
_GAP_NEGATIONS = "not|no|never|nor|without|t"
_GAP_EN = rf"(?: (?!(?:{_GAP_NEGATIONS})(?![a-z0-9]))[a-z0-9]+){{0,{GAP_WORDS}}} "
_GAP_ZH = rf"[^,;:、。!?\n 不没别勿非无未]{{0,{GAP_CHARS}}}"


def _gap_pattern(term: str) -> tuple[str, list[str]] | None:
    """The regex, over the folded view, of a term with gaps, and the keys of its longest part (what
    tells the automaton the regex is worth running); None for a term without "~". Each English part
    also matches inflected (``leaked ~ database*`` holds "leaked customer databases")."""
    prefix = term.endswith("*") and len(term) > 1
    pieces = (term[:-1] if prefix else term).split(GAP)
    if len(pieces) < 2:
        return None
    parts: list[list[str]] = []
    for j, piece in enumerate(pieces):
        view = make_view(piece)
        key = view.folded.strip()
        if not key:
            return None
        forms = {key}
        if key.isascii() and not view.leet:
            last = prefix and j == len(pieces) - 1
            forms |= {f.translate(_L_TO_I) for f in _inflected(view.plain.strip(), last)}
        parts.append(sorted(forms, key=len, reverse=True))
    out = [r"(?<![a-z0-9])" if parts[0][0][0] in _ASCII_WORD else ""]
    for j, forms in enumerate(parts):
        if j:
            ascii_gap = parts[j - 1][0][-1] in _ASCII_WORD and forms[0][0] in _ASCII_WORD
            out.append(_GAP_EN if ascii_gap else _GAP_ZH)
        out.append("(?:" + "|".join(map(re.escape, forms)) + ")")
    if prefix:
        out.append("[a-z0-9]*")
    elif parts[-1][0][-1] in _ASCII_WORD:
        out.append("(?![a-z0-9])")
    anchor = max(parts, key=lambda forms: len(forms[-1]))
    return "".join(out), anchor


_FACTOR_CAP = 256  # literal sets are cut here (the automaton takes thousands; the cap bounds the work)


def regex_factors(pattern: str) -> frozenset[str] | None:
    """Literal strings of which every match of ``pattern`` holds at least one ("出售" or "代购" for
    ``(出售|代购)[^,]{0,6}冰毒``, which holds "冰毒" too: the longer set wins), or None when no such
    small set can be read off the pattern. Lookarounds and ``\\b`` only narrow a match, so they are
    skipped; a part that may match nothing holds no factor."""
    from re import _constants as c, _parser as sre

    def exact(items) -> set[str] | None:  # every string a sequence can match, if few and literal
        out = {""}
        for op, av in items:
            if op is c.LITERAL:
                part = {chr(av)}
            elif op is c.IN and all(o is c.LITERAL for o, _ in av) and len(av) <= 16:
                part = {chr(v) for _, v in av}
            elif op is c.SUBPATTERN:
                part = exact(av[-1])
            elif op is c.BRANCH:
                parts = [exact(b) for b in av[1]]
                part = None if any(x is None for x in parts) else set().union(*parts)
            elif op in (c.MAX_REPEAT, c.MIN_REPEAT) and av[0] in (0, 1) and av[1] == 1:
                inner = exact(av[2])
                part = None if inner is None else inner | ({""} if av[0] == 0 else set())
            elif op in (c.AT, c.ASSERT, c.ASSERT_NOT):
                continue
            else:
                return None
            if part is None:
                return None
            out = {a + b for a in out for b in part}
            if len(out) > _FACTOR_CAP:
                return None
        return out

    def best(a: frozenset[str] | None, b: frozenset[str] | None) -> frozenset[str] | None:
        if a is None or b is None:
            return a or b
        return max(a, b, key=lambda f: (min(map(len, f)), -len(f)))

    def factors(items) -> frozenset[str] | None:  # a set of which every match holds one
        chosen, run = None, {""}

        def close():
            nonlocal chosen, run
            if "" not in run:
                chosen = best(chosen, frozenset(run))
            run = {""}

        for op, av in items:
            if op in (c.AT, c.ASSERT, c.ASSERT_NOT):
                continue
            part = exact([(op, av)])
            if part is not None:  # literal runs grow while they stay small: "kill" + "ing?" + " you"
                longer = {a + b for a in run for b in part} if len(run) * len(part) <= _FACTOR_CAP else None
                if longer is None:
                    close()
                    longer = part
                run = longer
                continue
            close()
            if op is c.SUBPATTERN:
                chosen = best(chosen, factors(av[-1]))
            elif op is c.BRANCH:
                parts = [factors(b) for b in av[1]]
                if all(parts) and sum(map(len, parts)) <= _FACTOR_CAP:
                    chosen = best(chosen, frozenset().union(*parts))
            elif op in (c.MAX_REPEAT, c.MIN_REPEAT) and av[0] >= 1:
                chosen = best(chosen, factors(av[2]))
        close()
        return chosen

    try:
        return factors(sre.parse(pattern, re.ASCII))
    except (re.error, RecursionError):
        return None


def _compact_regex(pattern: str) -> re.Pattern | None:
    """``pattern`` as it reads spaced letters joined into one run (``i w i l l k i l l y o u``): its
    word boundaries and spaces dropped; None when that changes nothing or does not compile."""
    compact = re.sub(r"(?<!\\) \??", "", pattern.replace(r"\b", ""))
    if compact == pattern:  # no spaces or word boundaries: the regex over the whole text already saw it
        return None
    try:
        rx = re.compile(compact, re.ASCII)
    except re.error:
        return None
    return None if rx.search("") else rx


def _automaton(entries: Mapping[str, list]) -> Any:
    """An Aho-Corasick automaton whose keys give the tuple of their values (None when empty)."""
    if not entries:
        return None
    import ahocorasick

    automaton = ahocorasick.Automaton()
    for key, values in entries.items():
        automaton.add_word(key, tuple(values))
    automaton.make_automaton()
    return automaton


class _Matcher:
    """One Aho-Corasick automaton over terms, allow phrases and context words, plus regex terms
    (and a second over the regexes' factors, which says which regexes a text needs)."""

    def __init__(self, terms: tuple[Term, ...], allow: tuple[str, ...], contexts: tuple[ContextRule, ...]):
        self.terms = terms
        self.contexts = contexts
        # (term index, compiled, needs Latin letters, needs Chinese, compiled for joined spaced letters):
        # a regex of lang en (zh) is only run over text that has Latin letters (Chinese characters)
        self.regexes = [(i, re.compile(t.term, re.ASCII), t.lang == "en", t.lang == "zh",
                         _compact_regex(t.term)) for i, t in enumerate(terms) if t.regex]
        # A regex runs only over text holding one of the literal strings every match of it holds
        # (its factors: "出售" or "代购" ... for "(出售|代购...)..."); one automaton finds which.
        self.always: list[int] = []  # regexes (positions in self.regexes) without factors: always run
        triggers: dict[str, list[int]] = {}
        for k, (i, _, _, _, _) in enumerate(self.regexes):
            found = regex_factors(terms[i].term)
            if not found:
                self.always.append(k)
            for f in found or ():
                triggers.setdefault(f, []).append(k)
        self.triggers = _automaton(triggers)
        entries: dict[str, list[tuple]] = {}

        def add(phrase: str, kind: str, ref: Any) -> int:
            prefix = phrase.endswith("*") and len(phrase) > 1
            view = make_view(phrase[:-1] if prefix else phrase)
            key = view.folded.strip()
            if not key:
                return 0
            left, right = _word_edges(key)
            keys = {key, key.translate(_L_TO_I)}  # the second is how a text with homoglyphs reads it
            if kind == "term" and key.isascii():
                keys |= {m for k in keys for m in _masked(k)}
                compact = key.replace(" ", "")
                # inside a run of spaced letters, without word boundaries: a phrase of 4 letters or
                # more (k i l l y o u), one word of 5 or more (so s k i l l does not hold "kill")
                if len(compact) >= COMPACT_MIN + (compact == key):
                    entries.setdefault(compact, []).append(("compact", ref, len(compact), False, False,
                                                            False))
            forms = _with_particles(key) if kind == "term" else set()
            if key.isascii() and not view.leet:  # databases, hiring a hacker; delivered (a context word)
                past = kind != "term"
                forms |= {f.translate(_L_TO_I) for f in _inflected(view.plain.strip(), prefix, past)}
            for k in keys:
                entries.setdefault(k, []).append((kind, ref, len(k), left, right and not prefix, prefix))
            # a term's inflected form is kind "form": dropped where another term of its category
            # matches as written (fucking is "fuck" inflected and a term itself: one word, one score)
            for k in forms - keys:
                entries.setdefault(k, []).append(("form" if kind == "term" else kind, ref, len(k), left,
                                                  right and not prefix, prefix))
            return max(map(len, keys | forms))

        self.longest = 0
        self.gaps: list[tuple[int, re.Pattern]] = []  # (term index, regex over the folded view) for "~" terms
        for i, t in enumerate(terms):
            if not t.regex:
                self.longest = max(self.longest, add(t.term, "term", i))
                gapped = _gap_pattern(t.term)
                if gapped is not None:
                    for k in gapped[1]:  # the regex runs when its longest part is in the text
                        entries.setdefault(k, []).append(("gap", len(self.gaps), len(k), False, False, False))
                    self.gaps.append((i, re.compile(gapped[0])))
        for phrase in allow:
            add(phrase, "allow", phrase)
        for r, rule in enumerate(contexts):
            for word in rule.words:
                add(word, "ctx", r)
        self.automaton = _automaton(entries)
        self.dropping: dict[str, list[int]] = {}  # category -> the context rules that drop its matches
        self.any_quoted = any(rule.quoted for rule in contexts)
        self.raising: dict[str, list[int]] = {}  # category -> the context rules that raise their severity
        self.keeping: dict[str, list[int]] = {}  # category -> the context rules that keep a match against others
        for r, rule in enumerate(contexts):
            for cat in rule.categories:
                {"raise": self.raising, "keep": self.keeping}.get(rule.effect, self.dropping).setdefault(cat, []).append(r)

    def match(self, text: str, include_allowed: bool = False) -> list[TermMatch]:
        view = make_view(text)
        quoted = quoted_spans(text) if self.any_quoted else ()
        out = self._match_view(view, include_allowed, quoted)
        if view.ambiguous:  # read "let's b u r n" both as "lets burn" and as "let s burn"
            seen = {(m.start, m.end, m.rule_id) for m in out}
            extra = self._match_view(make_view(text, split_first=True), include_allowed, quoted)
            out.extend(m for m in extra if (m.start, m.end, m.rule_id) not in seen)
            out.sort(key=lambda m: (m.start, m.end))
        return out

    def _match_view(self, view: View, include_allowed: bool, quoted: Sequence[tuple[int, int]] = ()
                    ) -> list[TermMatch]:
        folded = view.folded
        n = len(folded)
        found: set[tuple[int, int, int]] = set()  # (start, end, term index) in view coordinates
        allows: list[tuple[int, int, str]] = []
        ctx: dict[int, list[tuple[int, int]]] = {}
        gaps: set[int] = set()  # "~" terms whose longest part is in the text
        forms: set[tuple[int, int, int]] = set()  # matches of inflected keys
        if self.automaton is not None and n:
            for last, values in self.automaton.iter(folded):
                for kind, ref, length, left, right, prefix in values:
                    start, end = last - length + 1, last + 1
                    if kind == "gap":
                        gaps.add(ref)
                        continue
                    if kind == "compact":
                        if any(a <= start and end <= b for a, b in view.chains):
                            found.add((start, end, ref))
                        continue
                    if left and start > 0 and folded[start - 1] in _ASCII_WORD:
                        continue
                    if right and end < n and folded[end] in _ASCII_WORD:
                        continue
                    while prefix and end < n and folded[end] in _ASCII_WORD:
                        end += 1  # launder* reports the whole word: launderers
                    if kind == "term":
                        found.add((start, end, ref))
                    elif kind == "form":
                        forms.add((start, end, ref))
                    elif kind == "allow":
                        allows.append((start, end, ref))
                    else:
                        ctx.setdefault(ref, []).append((start, end))
        for g in gaps:
            i, rx = self.gaps[g]
            found.update((m.start(), m.end(), i) for m in rx.finditer(folded) if m.end() > m.start())
        if self.regexes:
            self._match_regexes(view, found)
        if forms:
            written = {(a, b, self.terms[i].category) for a, b, i in found}
            found.update(f for f in forms if (f[0], f[1], self.terms[f[2]].category) not in written)
        out = []
        for start, end, i in sorted(found):
            term = self.terms[i]
            inside = bool(quoted) and _within(view.span(start, end), quoted)
            why = self._allowed(view.plain, start, end, term.category, allows, ctx, inside)
            if why and not include_allowed:
                continue
            severity, raised = term.severity, None
            if not why:
                raised = self._near(view.plain, start, end, self.raising.get(term.category, ()), ctx)
                if raised and severity != SEVERITIES[-1]:
                    severity = SEVERITIES[SEVERITIES.index(severity) + 1]
                else:
                    raised = None
            a, b = view.span(start, end)
            out.append(TermMatch(term.term, term.category, severity, term.action, a, b, term.rule_id, why,
                                 raised))
        return out

    def _match_regexes(self, view: View, found: set[tuple[int, int, int]]) -> None:
        plain = view.plain
        latin = _LATIN.search(plain) is not None
        chinese = _CHINESE.search(plain) is not None
        run = set(self.always)
        if self.triggers is not None:
            for text in view.regex_views:
                for _, ks in self.triggers.iter(text):
                    run.update(ks)
        for k in sorted(run):
            i, rx, needs_latin, needs_chinese, _ = self.regexes[k]
            if (needs_latin and not latin) or (needs_chinese and not chinese):
                continue
            for text in view.regex_views:  # as written, and with homoglyphs read as letters
                for m in rx.finditer(text):
                    if m.end() > m.start():
                        found.add((m.start(), m.end(), i))
        for a, b in view.chains:  # inside a run of spaced letters: "i w i l l k i l l y o u"
            for i, _, _, _, compact in self.regexes:
                if compact is None:
                    continue
                for text in view.regex_views:
                    for m in compact.finditer(text, a, b):
                        if m.end() > m.start():
                            found.add((m.start(), m.end(), i))

    def _allowed(self, plain: str, start: int, end: int, category: str, allows, ctx, inside: bool = False
                 ) -> str | None:
        for a, b, phrase in allows:
            if a < end and start < b:
                return f"allow:{phrase}"
        dropping = self.dropping.get(category, ())
        for r in self.keeping.get(category, ()):  # a request for the thing outranks a frame around it
            if dropping and self._near(plain, start, end, (r,), ctx):
                dropping = [d for d in dropping if self.contexts[d].id not in self.contexts[r].overrides]
        return self._near(plain, start, end, dropping, ctx, inside)

    def _near(self, plain: str, start: int, end: int, rules, ctx, inside: bool = False) -> str | None:
        """``context:<id>`` of the first of ``rules`` with a word near the match, else None (a
        ``quoted`` rule only when the match is ``inside`` quotation marks)."""
        for r in rules:
            rule = self.contexts[r]
            if rule.quoted and not inside:
                continue
            stops = _HARD if rule.scope == "sentence" else _HARD | _CLAUSE
            for a, b in ctx.get(r, ()):
                if b <= start and rule.side != "after":
                    gap = plain[b:start]
                elif a >= end and rule.side != "before":
                    gap = plain[end:a]
                else:
                    continue  # overlaps the term itself, or on the wrong side
                if len(gap) <= rule.window and not any(ch in stops for ch in gap):
                    return f"context:{rule.id}"
        return None

# -- the policy ------------------------------------------------------------------------------------


class _Section:
    """A section of a policy's document (``policy.labels``), read as a copy of it."""

    def __set_name__(self, owner: type, name: str) -> None:
        self.name = name

    def __get__(self, obj: Any, owner: type | None = None) -> Any:
        if obj is None:
            return self
        return json.loads(json.dumps(obj.doc[self.name]))


@dataclass(frozen=True, eq=False)
class Policy:
    """A validated policy. Build one with :func:`parse_policy`, :func:`load_policy`,
    :func:`default_policy` or :func:`workspace_policy`; its sections are read-only copies."""

    version: str
    categories: Mapping[str, Category]
    terms: tuple[Term, ...]
    allow: tuple[str, ...]
    contexts: tuple[ContextRule, ...]
    source: str = "<string>"
    doc: dict[str, Any] = field(default_factory=dict, repr=False)
    base_dir: Path | None = field(default=None, repr=False)  # where relative paths in it start
    _matcher: _Matcher | None = field(default=None, repr=False)

    # sections, each read as a fresh copy: a caller cannot change the policy in force
    thresholds = _Section()
    pii = _Section()
    copy_guard = _Section()
    labels = _Section()
    training = _Section()
    ingest = _Section()
    rails = _Section()
    moderation = _Section()

    @property
    def training_unredacted_pii(self) -> str:
        return self.doc["training"]["unredacted_pii"]

    @property
    def ingest_pii(self) -> str:
        return self.doc["ingest"]["pii"]

    @property
    def segment_cap(self) -> int:
        return int(self.doc["rails"]["segment_cap"])

    @property
    def max_term_chars(self) -> int:
        """The longest span (view characters) a term can match: what a stream rail keeps back."""
        m = self._matcher
        return max(m.longest, REGEX_HOLDBACK if m.regexes or m.gaps else 0)

    def severity_score(self, severity: str) -> float:
        return float(self.doc["thresholds"]["severity"][severity])

    def pii_operators(self, path: str) -> dict[str, str]:
        """Entity type -> operator on ``path`` (ingest, prompt, output, log); ``"*"`` is the default."""
        if path not in PATHS:
            raise InvalidInput(f"unknown PII path {path!r}: use one of {', '.join(PATHS)}")
        pii = self.doc["pii"]
        ops = {"*": pii["default"][path]}
        for entity, per_path in pii["entities"].items():
            if path in per_path:
                ops[entity] = per_path[path]
        return ops

    def match_terms(self, text: str, *, include_allowed: bool = False) -> list[TermMatch]:
        """The term matches in ``text`` (original offsets, by start); allowed ones only on request."""
        if not isinstance(text, str):
            raise InvalidInput(f"match_terms takes text (str), not {type(text).__name__}")
        return self._matcher.match(text, include_allowed)

    def scanner(self, ws: Any = None):
        """A PII scanner as this policy configures it (threshold, workspace names; the workspace's
        HMAC key when ``ws`` is given, which hash and pseudonym need)."""
        from aigc.safety.pii import Scanner

        pii = self.doc["pii"]
        return Scanner(threshold=pii["threshold"], names=tuple(pii["names"]),
                       key=workspace_key(ws) if ws is not None else None)

    def to_dict(self) -> dict[str, Any]:
        return json.loads(json.dumps(self.doc))

    def dumps(self) -> str:
        """The policy as YAML (comments are not kept); ``parse_policy`` of it gives the same version."""
        import yaml

        body = yaml.dump(_flow_terms(self.to_dict()), Dumper=_dumper(), allow_unicode=True, sort_keys=False,
                         width=110)
        return f"# aigc safety policy {self.version}\n{body}"


def _flow_terms(doc: dict[str, Any]) -> dict[str, Any]:
    doc["terms"] = [_Flow(t) for t in doc.get("terms", [])]
    for rule in doc.get("contexts", []):
        rule["words"] = _FlowList(rule["words"])
        rule["categories"] = _FlowList(rule["categories"])
    for cat in doc.get("categories", {}).values():
        cat["openai"], cat["tc260"] = _FlowList(cat["openai"]), _FlowList(cat["tc260"])
    return doc


class _Flow(dict):
    pass


class _FlowList(list):
    pass


@lru_cache(maxsize=1)
def _dumper():
    """A YAML dumper that writes terms, word lists and mappings to OpenAI / TC260 on one line each."""
    import yaml

    class Dumper(yaml.SafeDumper):
        pass

    Dumper.add_representer(_Flow, lambda d, v: d.represent_mapping("tag:yaml.org,2002:map", v, flow_style=True))
    Dumper.add_representer(_FlowList, lambda d, v: d.represent_sequence("tag:yaml.org,2002:seq", v,
                                                                        flow_style=True))
    return Dumper


# -- parsing and validation ------------------------------------------------------------------------


class _Map(dict):
    line: int | None = None


class _List(list):
    line: int | None = None


def _load_yaml(text: str, source: str) -> Any:
    import yaml

    class Loader(yaml.SafeLoader):
        pass

    def construct_map(loader, node):
        data = _Map()
        data.line = node.start_mark.line + 1
        yield data
        data.update(loader.construct_mapping(node))

    def construct_seq(loader, node):
        data = _List()
        data.line = node.start_mark.line + 1
        yield data
        data.extend(loader.construct_sequence(node))

    Loader.add_constructor("tag:yaml.org,2002:map", construct_map)
    Loader.add_constructor("tag:yaml.org,2002:seq", construct_seq)
    try:
        return yaml.load(text, Loader=Loader)  # noqa: S506 - a SafeLoader subclass
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None) or getattr(e, "context_mark", None)
        where = f" line {mark.line + 1}" if mark is not None else ""
        what = getattr(e, "problem", None) or str(e).splitlines()[0]
        ctx, cmark = getattr(e, "context", None), getattr(e, "context_mark", None)
        if ctx and cmark is not None and cmark is not mark:
            what += f" ({ctx} from line {cmark.line + 1})"
        raise InvalidInput(f"policy {source}{where}: YAML syntax error: {what}; fix the file "
                           f"(YAML or JSON)") from None
    except (ValueError, RecursionError, MemoryError) as e:  # a 5,000-digit number, lists nested 10^5 deep
        raise InvalidInput(f"policy {source}: not a policy file ({type(e).__name__}: "
                           f"{str(e).splitlines()[0][:120] if str(e) else 'too deep'}); fix the file (YAML or JSON)") from None


class _Check:
    """Validation with one-line errors that name the field and, when known, the YAML line."""

    def __init__(self, source: str):
        self.source = source

    def fail(self, where: str, message: str, node: Any = None) -> None:
        line = getattr(node, "line", None)
        at = f" line {line}" if line else ""
        raise InvalidInput(f"policy {self.source}{at}: {where}: {message}")

    def mapping(self, node: Any, where: str, allowed: tuple[str, ...] | None = None,
                parent: Any = None) -> Mapping:
        if node is None:
            return {}
        if not isinstance(node, Mapping):
            self.fail(where, f"expected a mapping, got {_show(node)}", node if hasattr(node, "line") else parent)
        for key in node:
            if not isinstance(key, str):
                self.fail(where, f"keys must be text, got {_show(key)}", node)
            if allowed is not None and key not in allowed:
                self.fail(where, f"unknown key {key!r}; allowed: {', '.join(allowed)} (remove or rename it)", node)
        return node

    def listing(self, node: Any, where: str, parent: Any = None) -> list:
        if node is None:
            return []
        if not isinstance(node, list):
            self.fail(where, f"expected a list, got {_show(node)}", node if hasattr(node, "line") else parent)
        return node

    def choice(self, value: Any, where: str, choices: tuple[str, ...], node: Any) -> str:
        if value not in choices:
            self.fail(where, f"unknown value {_show(value)}; use one of {', '.join(choices)}", node)
        return value

    def number(self, value: Any, where: str, node: Any, lo: float, hi: float, integer: bool = False):
        ok = isinstance(value, int) if integer else isinstance(value, (int, float))
        if isinstance(value, bool) or not ok or not lo <= value <= hi:
            kind = "an integer" if integer else "a number"
            self.fail(where, f"{_show(value)} is not {kind} in [{lo}, {hi}]", node)
        return int(value) if integer else float(value)

    def text(self, value: Any, where: str, node: Any, optional: bool = False) -> str | None:
        if value is None and optional:
            return None
        if isinstance(value, bool):
            self.fail(where, f"expected text, got {_show(value)} (YAML reads no, yes, on, off as true/false: "
                             f"put the word in quotes)", node)
        if not isinstance(value, str) or not value.strip():
            self.fail(where, f"expected non-empty text, got {_show(value)}", node)
        return value

    def flag(self, value: Any, where: str, node: Any) -> bool:
        if not isinstance(value, bool):
            self.fail(where, f"expected true or false, got {_show(value)}", node)
        return value


def _show(value: Any) -> str:
    s = repr(value)
    return s if len(s) <= 60 else s[:57] + "..."


# Lists a policy that ``extends: default`` adds to (its own entries after the default's); every
# other key it gives replaces the default's, mappings key by key.
_EXTEND_LISTS = frozenset({"terms", "term_files", "allow", "contexts"})


def _merged(base: Any, own: Any, key: str | None = None) -> Any:
    if isinstance(base, Mapping) and isinstance(own, Mapping):
        out = _Map(base)
        out.line = getattr(own, "line", getattr(base, "line", None))
        for k, v in own.items():
            out[k] = _merged(base[k], v, k) if k in base else v
        return out
    if key in _EXTEND_LISTS and isinstance(base, list) and isinstance(own, list):
        out = _List([*base, *own])
        out.line = getattr(own, "line", None)
        return out
    return own


def _extended(chk: _Check, raw: Mapping) -> Mapping:
    """A policy that ``extends: default``: the shipped default with this file's keys on top."""
    if raw.get("extends") != "default":
        chk.fail("extends", f"{_show(raw.get('extends'))} is not a policy to extend: the one there is is "
                            "'default' (the shipped policy)", raw)
    res = resources.files("aigc").joinpath(_RESOURCES, "default_policy.yaml")
    base = _load_yaml(res.read_text(encoding="utf-8"), "default_policy.yaml")
    own = _Map({k: v for k, v in raw.items() if k != "extends"})
    own.line = getattr(raw, "line", None)
    return _merged(base, own)


def parse_policy(text: str, source: str = "<string>", *, base_dir: str | os.PathLike | None = None) -> Policy:
    """A policy from YAML or JSON ``text``; term files resolve against ``base_dir`` (``builtin:``
    names against the shipped lists). Raises InvalidInput naming the field and line."""
    if not isinstance(text, str):
        raise InvalidInput(f"policy {source}: expected YAML or JSON text, got {type(text).__name__}")
    raw = _load_yaml(text, source)
    chk = _Check(source)
    if not isinstance(raw, Mapping):
        chk.fail("top level", f"a policy is a mapping with at least version and categories, got {_show(raw)}")
    if "extends" in raw:
        raw = _extended(chk, raw)
    chk.mapping(raw, "top level", _TOP_KEYS)
    doc: dict[str, Any] = {}

    version = raw.get("version")
    if isinstance(version, bool) or not (isinstance(version, int) and version >= 0 or isinstance(version, str)
                                         and re.fullmatch(r"[A-Za-z0-9._]+", version)):
        chk.fail("version", f"{_show(version)} is not a version: write a number such as 1 (letters, digits, "
                            f"dots and underscores, no dashes)", raw)
    doc["version"] = version
    if raw.get("description") is not None:
        doc["description"] = chk.text(raw["description"], "description", raw)

    thresholds = _thresholds(chk, raw.get("thresholds"), raw)
    doc["thresholds"] = thresholds

    cats_node = chk.mapping(raw.get("categories"), "categories", parent=raw)
    if not cats_node:
        chk.fail("categories", "a policy needs at least one category (name -> openai, tc260, description)", raw)
    categories: dict[str, Category] = {}
    doc["categories"] = {}
    for name, node in cats_node.items():
        where = f"categories.{name}"
        if not re.fullmatch(r"[a-z][a-z0-9_/-]*", name):
            chk.fail(where, "a category name is lower-case letters, digits, _ / - (e.g. self_harm)", cats_node)
        node = chk.mapping(node, where, ("description", "openai", "tc260", "threshold", "action"), cats_node)
        openai = tuple(chk.choice(c, f"{where}.openai", OPENAI_CATEGORIES, node)
                       for c in chk.listing(node.get("openai"), f"{where}.openai", node))
        tc260 = tuple(chk.choice(c, f"{where}.tc260", tuple(TC260_RISKS), node)
                      for c in chk.listing(node.get("tc260"), f"{where}.tc260", node))
        threshold = chk.number(node.get("threshold", thresholds["category"]), f"{where}.threshold", node, 0, 1)
        action = chk.choice(node.get("action", "block"), f"{where}.action", ACTIONS[:2], node)
        desc = chk.text(node.get("description"), f"{where}.description", node, optional=True) or ""
        categories[name] = Category(name, desc, openai, tc260, threshold, action)
        entry = {"description": desc, "openai": list(openai), "tc260": list(tc260), "action": action}
        if not desc:
            del entry["description"]
        if "threshold" in node:
            entry["threshold"] = threshold
        doc["categories"][name] = entry

    terms: list[Term] = []
    doc["terms"] = []
    for i, node in enumerate(chk.listing(raw.get("terms"), "terms", raw)):
        term, entry = _term(chk, node, f"terms[{i}]", categories, raw.get("terms"))
        terms.append(term)
        doc["terms"].append(entry)

    doc["term_files"] = []
    file_hashes = []
    for i, node in enumerate(chk.listing(raw.get("term_files"), "term_files", raw)):
        where = f"term_files[{i}]"
        if isinstance(node, str):
            ref, lang = node, None
        else:
            node = chk.mapping(node, where, ("path", "lang"), raw.get("term_files"))
            ref = chk.text(node.get("path"), f"{where}.path", node)
            lang = chk.text(node.get("lang"), f"{where}.lang", node, optional=True)
        content = _read_term_file(ref, base_dir, f"policy {source}: {where}")
        file_hashes.append(hashlib.sha256(content.encode("utf-8")).hexdigest())
        terms.extend(_parse_term_file(content, ref, lang, categories, chk))
        doc["term_files"].append(ref if lang is None else {"path": ref, "lang": lang})

    allow = tuple(chk.text(p, f"allow[{i}]", raw.get("allow"))
                  for i, p in enumerate(chk.listing(raw.get("allow"), "allow", raw)))
    doc["allow"] = list(allow)

    contexts: list[ContextRule] = []
    doc["contexts"] = []
    for i, node in enumerate(chk.listing(raw.get("contexts"), "contexts", raw)):
        rule = _context(chk, node, f"contexts[{i}]", categories, raw.get("contexts"))
        contexts.append(rule)
        entry = {"id": rule.id, "words": list(rule.words), "categories": list(rule.categories),
                 "window": rule.window, "side": rule.side, "scope": rule.scope}
        if rule.effect != "allow":
            entry["effect"] = rule.effect
        if rule.quoted:
            entry["quoted"] = True
        if rule.overrides:
            entry["overrides"] = list(rule.overrides)
        if rule.description:
            entry["description"] = rule.description
        doc["contexts"].append(entry)
    if len({r.id for r in contexts}) != len(contexts):
        chk.fail("contexts", "two context rules share an id: give each its own", raw.get("contexts"))
    allow_ids = {r.id for r in contexts if r.effect == "allow"}
    for i, rule in enumerate(contexts):
        for rid in rule.overrides:
            if rid not in allow_ids:
                chk.fail(f"contexts[{i}].overrides", f"{_show(rid)} is not the id of a context rule with effect "
                         f"allow; those are: {', '.join(sorted(allow_ids)) or 'none'}", raw.get("contexts"))

    doc["pii"] = _pii(chk, raw.get("pii"), raw)
    doc["copy_guard"] = _copy_guard(chk, raw.get("copy_guard"), raw)
    doc["labels"] = _labels(chk, raw.get("labels"), raw)
    doc["training"] = _simple(chk, raw.get("training"), raw, "training", "unredacted_pii", TRAINING_ACTIONS)
    doc["ingest"] = _simple(chk, raw.get("ingest"), raw, "ingest", "pii", INGEST_ACTIONS)
    rails = chk.mapping(raw.get("rails"), "rails", ("segment_cap",), raw)
    doc["rails"] = {"segment_cap": chk.number(rails.get("segment_cap", DEFAULTS["rails"]["segment_cap"]),
                                              "rails.segment_cap", rails, 16, 100_000, integer=True)}
    mod = chk.mapping(raw.get("moderation"), "moderation", ("classifier",), raw)
    doc["moderation"] = {"classifier": chk.text(mod.get("classifier"), "moderation.classifier", mod,
                                                optional=True)}
    clf_ref = doc["moderation"]["classifier"]
    if clf_ref and clf_ref.startswith(BUILTIN):  # one that ships with aigc
        name = clf_ref[len(BUILTIN):]
        if "/" in name or not resources.files("aigc").joinpath(_RESOURCES, name).is_file():
            chk.fail("moderation.classifier", f"no built-in classifier {clf_ref!r}: the ones that ship are "
                                              f"{BUILTIN}moderation_e5_tuned.npz and {BUILTIN}moderation_e5.npz", mod)
    elif clf_ref and base_dir is not None:
        path = Path(doc["moderation"]["classifier"])
        if not path.is_absolute() and not (Path(base_dir) / path).exists():
            chk.fail("moderation.classifier", f"no classifier file {path} next to the policy: train one "
                                              f"(aigc.safety.moderation.TextClassifier) or remove the key", mod)

    terms_t = tuple(terms)
    matcher = _Matcher(terms_t, allow, tuple(contexts))
    canonical = json.dumps({"policy": doc, "term_files": file_hashes}, sort_keys=True, ensure_ascii=False,
                           separators=(",", ":"))
    digest = hashlib.sha256(canonical.encode("utf-8")).hexdigest()[:12]
    policy = Policy(version=f"{version}-{digest}", categories=dict(categories), terms=terms_t, allow=allow,
                    contexts=tuple(contexts), source=source, doc=doc,
                    base_dir=None if base_dir is None else Path(base_dir), _matcher=matcher)
    return policy


def _thresholds(chk: _Check, node: Any, parent: Any) -> dict[str, Any]:
    node = chk.mapping(node, "thresholds", ("category", "severity"), parent)
    d = DEFAULTS["thresholds"]
    sev = chk.mapping(node.get("severity"), "thresholds.severity", SEVERITIES, node)
    return {"category": chk.number(node.get("category", d["category"]), "thresholds.category", node, 0, 1),
            "severity": {s: chk.number(sev.get(s, d["severity"][s]), f"thresholds.severity.{s}", sev, 0, 1)
                         for s in SEVERITIES}}


def _term(chk: _Check, node: Any, where: str, categories: Mapping[str, Category], parent: Any,
          defaults: Mapping[str, Any] | None = None) -> tuple[Term, dict[str, Any]]:
    if isinstance(node, str):
        node = {"term": node, **(defaults or {})}
    node = chk.mapping(node, where, ("term", "category", "severity", "action", "lang", "regex", "id"), parent)
    text = chk.text(node.get("term"), f"{where}.term", node)
    category = node.get("category")
    if category not in categories:
        chk.fail(f"{where}.category", f"term {text!r} names unknown category {_show(category)}; known: "
                                      f"{', '.join(categories)} (add the category or fix the name)", node)
    severity = chk.choice(node.get("severity", "medium"), f"{where}.severity", SEVERITIES, node)
    action = chk.choice(node.get("action", "block"), f"{where}.action", ACTIONS, node)
    lang = chk.text(node.get("lang"), f"{where}.lang", node, optional=True)
    regex = chk.flag(node.get("regex", False), f"{where}.regex", node)
    rid = chk.text(node.get("id"), f"{where}.id", node, optional=True)
    if regex:
        try:
            rx = re.compile(text, re.ASCII)
        except re.error as e:
            chk.fail(f"{where}.term", f"regex {text!r} does not compile ({e}); fix it or escape it", node)
        if rx.search(""):
            chk.fail(f"{where}.term", f"regex {text!r} matches empty text: make it match at least one character",
                     node)
        rid = rid or f"{category}:re:{hashlib.sha256(text.encode()).hexdigest()[:8]}"
    elif not make_view(text.rstrip("*") or text).folded.strip():
        chk.fail(f"{where}.term", f"term {text!r} is empty once normalised (only separators): write letters", node)
    elif GAP in text and not all(make_view(part).folded.strip() for part in text.rstrip("*").split(GAP)):
        chk.fail(f"{where}.term", f"term {text!r} has an empty part: {GAP} stands between two parts, as in "
                                  f"'leaked {GAP} database'", node)
    entry = {"term": text, "category": category, "severity": severity, "action": action}
    if lang:
        entry["lang"] = lang
    if regex:
        entry["regex"] = True
    if node.get("id"):
        entry["id"] = rid
    return Term(text, category, severity, action, lang, regex, rid or "", where), entry


def _context(chk: _Check, node: Any, where: str, categories: Mapping[str, Category], parent: Any) -> ContextRule:
    node = chk.mapping(node, where, ("id", "words", "categories", "window", "side", "scope", "effect",
                                     "description", "quoted", "overrides"), parent)
    rid = chk.text(node.get("id"), f"{where}.id", node)
    words = tuple(chk.text(w, f"{where}.words", node) for w in chk.listing(node.get("words"), f"{where}.words",
                                                                          node))
    if not words:
        chk.fail(f"{where}.words", "a context rule needs at least one word", node)
    cats = tuple(chk.listing(node.get("categories"), f"{where}.categories", node))
    for c in cats:
        if c not in categories:
            chk.fail(f"{where}.categories", f"unknown category {_show(c)}; known: {', '.join(categories)}", node)
    if not cats:
        chk.fail(f"{where}.categories", "name the categories the rule applies to", node)
    effect = chk.choice(node.get("effect", "allow"), f"{where}.effect", CONTEXT_EFFECTS, node)
    overrides = tuple(chk.text(w, f"{where}.overrides", node)
                      for w in chk.listing(node.get("overrides"), f"{where}.overrides", node))
    if (effect == "keep") != bool(overrides):
        chk.fail(f"{where}.overrides", "a rule with effect keep names the allow rules it overrides, and only such a "
                 "rule has overrides", node)
    return ContextRule(
        id=rid, words=words, categories=cats,
        window=chk.number(node.get("window", 20), f"{where}.window", node, 0, 1000, integer=True),
        side=chk.choice(node.get("side", "both"), f"{where}.side", CONTEXT_SIDES, node),
        scope=chk.choice(node.get("scope", "sentence"), f"{where}.scope", CONTEXT_SCOPES, node),
        description=chk.text(node.get("description"), f"{where}.description", node, optional=True) or "",
        effect=effect, quoted=chk.flag(node.get("quoted", False), f"{where}.quoted", node), overrides=overrides)


def _pii(chk: _Check, node: Any, parent: Any) -> dict[str, Any]:
    node = chk.mapping(node, "pii", ("default", "entities", "threshold", "names"), parent)
    d = DEFAULTS["pii"]
    default_node = chk.mapping(node.get("default"), "pii.default", PATHS, node)
    default = {}
    for path in PATHS:
        ops = PII_OPERATORS + (("block",) if path in BLOCKING_PATHS else ())
        default[path] = chk.choice(default_node.get(path, d["default"][path]), f"pii.default.{path}", ops,
                                   default_node)
    known = ENTITY_TYPES
    entities: dict[str, dict[str, str]] = {}
    ent_node = chk.mapping(node.get("entities"), "pii.entities", None, node)
    for entity, per_path in ent_node.items():
        if entity not in known:
            chk.fail("pii.entities", f"unknown entity type {entity!r}; known: {', '.join(known)}", ent_node)
        per_path = chk.mapping(per_path, f"pii.entities.{entity}", PATHS, ent_node)
        entities[entity] = {}
        for path, op in per_path.items():
            ops = PII_OPERATORS + (("block",) if path in BLOCKING_PATHS else ())
            entities[entity][path] = chk.choice(op, f"pii.entities.{entity}.{path}", ops, per_path)
    names = [chk.text(n, "pii.names", node) for n in chk.listing(node.get("names"), "pii.names", node)]
    return {"default": default, "entities": entities,
            "threshold": chk.number(node.get("threshold", d["threshold"]), "pii.threshold", node, 0, 1),
            "names": names}


def _copy_guard(chk: _Check, node: Any, parent: Any) -> dict[str, Any]:
    node = chk.mapping(node, "copy_guard", ("window", "threshold", "action"), parent)
    d = DEFAULTS["copy_guard"]
    window = chk.number(node.get("window", d["window"]), "copy_guard.window", node, 4, 1024, integer=True)
    threshold = chk.number(node.get("threshold", d["threshold"]), "copy_guard.threshold", node, window, 100_000,
                           integer=True)
    action = node.get("action", d["action"])
    if action not in COPY_ACTIONS:  # "regenerate" too: a streamed sample cannot be taken back and drawn again
        chk.fail("copy_guard.action", f"must be report or block, got {_show(action)}", node)
    return {"window": window, "threshold": threshold, "action": action}


def _labels(chk: _Check, node: Any, parent: Any) -> dict[str, Any]:
    node = chk.mapping(node, "labels", tuple(DEFAULTS["labels"]), parent)
    d = DEFAULTS["labels"]
    return {"producer": chk.text(node.get("producer"), "labels.producer", node, optional=True),
            "explicit_text": chk.flag(node.get("explicit_text", d["explicit_text"]), "labels.explicit_text", node),
            "text_position": chk.choice(node.get("text_position", d["text_position"]), "labels.text_position",
                                        TEXT_POSITIONS, node),
            "image_mark": chk.flag(node.get("image_mark", d["image_mark"]), "labels.image_mark", node),
            "audio_cue": chk.flag(node.get("audio_cue", d["audio_cue"]), "labels.audio_cue", node)}


def _simple(chk: _Check, node: Any, parent: Any, name: str, key: str, choices: tuple[str, ...]) -> dict[str, str]:
    node = chk.mapping(node, name, (key,), parent)
    return {key: chk.choice(node.get(key, DEFAULTS[name][key]), f"{name}.{key}", choices, node)}


# -- term files ------------------------------------------------------------------------------------


def decode_text_file(data: bytes, what: str) -> str:
    """Bytes of a text file as text: UTF-8 (with or without a BOM), UTF-16 with a BOM, GB18030;
    anything else (or text with control characters, the mark of a wrong guess) is InvalidInput."""
    if data.startswith((b"\xff\xfe", b"\xfe\xff")):
        candidates = ("utf-16",)
    else:
        candidates = ("utf-8-sig", "gb18030")
    for enc in candidates:
        try:
            text = data.decode(enc)
        except UnicodeDecodeError:
            continue
        if not any(unicodedata.category(ch) == "Cc" and ch not in "\t\n\r" for ch in text):
            return text
    raise InvalidInput(f"{what} is not text in UTF-8, GB18030 or UTF-16 with a BOM: save it as UTF-8")


def _read_term_file(ref: str, base_dir: str | os.PathLike | None, what: str) -> str:
    if ref.startswith(BUILTIN):
        name = ref[len(BUILTIN):]
        res = resources.files("aigc").joinpath(_RESOURCES, name)
        if "/" in name or not res.is_file():
            shipped = sorted(p.name for p in resources.files("aigc").joinpath(_RESOURCES).iterdir()
                             if p.name.endswith(".txt"))
            raise InvalidInput(f"{what}: no built-in term file {name!r}; built-in: {', '.join(shipped)}")
        return decode_text_file(res.read_bytes(), f"{what} ({ref})")
    path = Path(ref)
    if not path.is_absolute():
        path = Path(base_dir or ".") / path
    if not path.is_file():
        raise InvalidInput(f"{what}: no term file {path}: fix the path (relative paths start at the policy's "
                           f"folder; {BUILTIN}NAME names a shipped list)")
    return decode_text_file(path.read_bytes(), f"{what} ({path})")


def _parse_term_file(content: str, ref: str, lang: str | None, categories: Mapping[str, Category],
                     chk: _Check) -> list[Term]:
    """One term a line under ``[category severity action]`` headers; ``re:`` starts a regex; ``#`` a comment."""
    name = Path(ref.removeprefix(BUILTIN)).name
    header: dict[str, Any] | None = None
    out: list[Term] = []
    for no, line in enumerate(content.splitlines(), 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        where = f"{name}:{no}"
        if line.startswith("[") and line.endswith("]"):
            parts = line[1:-1].split()
            if not 1 <= len(parts) <= 3:
                chk.fail(where, f"a header is [category severity action], got {line!r}")
            header = {"category": parts[0]}
            if len(parts) > 1:
                header["severity"] = parts[1]
            if len(parts) > 2:
                header["action"] = parts[2]
            if header["category"] not in categories:
                chk.fail(where, f"unknown category {parts[0]!r}; known: {', '.join(categories)}")
            continue
        if header is None:
            chk.fail(where, "a term before any [category severity action] header: add one above it")
        node: dict[str, Any] = dict(header)
        if lang:
            node["lang"] = lang
        if line.startswith("re:"):
            node.update(term=line[3:].strip(), regex=True)
        else:
            node["term"] = line
        term, _ = _term(chk, node, where, categories, None)
        out.append(term)
    return out


# -- where policies come from ----------------------------------------------------------------------


def load_policy(path: str | os.PathLike) -> Policy:
    """The policy in file ``path`` (YAML or JSON; its term files relative to its folder)."""
    path = Path(path)
    if not path.is_file():
        raise InvalidInput(f"no policy file {path}: pass a YAML or JSON policy (aigc policy show prints one)")
    text = decode_text_file(path.read_bytes(), f"policy {path}")
    return parse_policy(text, str(path), base_dir=path.parent)


@lru_cache(maxsize=1)
def default_policy() -> Policy:
    """The policy that ships with aigc (``resources/safety/default_policy.yaml``)."""
    res = resources.files("aigc").joinpath(_RESOURCES, "default_policy.yaml")
    return parse_policy(res.read_text(encoding="utf-8"), "default_policy.yaml")


@lru_cache(maxsize=16)
def _cached_policy(path: str, stamp: tuple[int, int, int]) -> Policy | InvalidInput:
    """The policy in ``path`` as it was at ``stamp``, or the error it gave: kept too, so a broken file
    is read once, not on every request."""
    try:
        return load_policy(path)
    except InvalidInput as e:
        return e


def policy_path(ws: Any) -> Path:
    return Path(ws.root) / "policy.yaml"


def workspace_policy(ws: Any) -> Policy:
    """The workspace's policy (``<root>/policy.yaml``, re-read when it changes), else the default.
    A file broken by hand (saves through ``aigc policy edit`` and PUT /api/policy are checked first)
    is InvalidInput, one line naming the file and the line; serving keeps the last good policy in
    force instead (:attr:`aigc.safety.guard.Guard.policy`)."""
    path = policy_path(ws)
    try:
        st = path.stat()
    except FileNotFoundError:
        return default_policy()
    found = _cached_policy(str(path), (st.st_mtime_ns, st.st_size, st.st_ino))
    if isinstance(found, InvalidInput):
        raise InvalidInput(str(found))  # a fresh error each time: the cached one gathers no tracebacks
    return found


def save_workspace_policy(ws: Any, text: str) -> Policy:
    """Validate ``text`` and make it the workspace's policy (atomic: on any error the old one stays)."""
    path = policy_path(ws)
    policy = parse_policy(text, str(path), base_dir=path.parent)
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex[:8]}.tmp")
    try:
        tmp.write_text(text, encoding="utf-8")
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return policy


KEY_BYTES = 32


def workspace_key(ws: Any) -> bytes:
    """The workspace's secret HMAC key (``<root>/safety.key``: 32 random bytes, mode 0600, made
    once): what ``hash`` and ``pseudonym`` redaction use so joins work within a workspace only."""
    path = Path(ws.root) / "safety.key"
    if not path.exists():
        tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex[:8]}.tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(os.urandom(KEY_BYTES))
            try:
                os.link(tmp, path)  # never replaces a key another process made meanwhile
            except FileExistsError:
                pass
        finally:
            tmp.unlink(missing_ok=True)
    key = path.read_bytes()
    if len(key) != KEY_BYTES:
        raise InvalidInput(f"{path} holds {len(key)} bytes, not a {KEY_BYTES}-byte key: restore it from a "
                           f"backup (hashes and pseudonyms made with the old key will not match a new one)")
    return key
