"""Rails: the policy applied to a prompt before any model runs, and to a stream as it is made.

:func:`check_input` is the input rail: a prompt whose terms block (a ``block`` term in a category
that is on), that the policy's classifier puts in a category whose action is ``block``, or that
holds an entity the policy's path says ``block`` is refused; otherwise its
``redact`` terms are masked and its PII handled per the path's operators.

:class:`OutputRail` is the output rail for one stream. ``feed(delta)`` returns only text that
has been checked: text is held back until a segment ends (。！？ or a newline; ``!`` / ``?`` / ``.``
once whitespace follows, so a URL's ``?`` or an e-mail's ``.`` is not an end, and a ``.`` after an
abbreviation or a number is not either) and then the segment is checked whole:
terms (a block ends the stream, ``finish_reason == "content_filter"``, and the segment is never
released), PII (per the policy's ``output`` operators; ``block`` ends the stream too). When no
segment ends within ``segment_cap`` characters, the rail releases the head of what it holds but
keeps back a tail that could still become an entity or a term: at least the policy's longest
term (and 64 characters) of letters and digits, never cutting inside a run of characters an
entity is made of (digits, letters, ``@._-+:/``), inside an entity or a term the whole buffer
shows, or where the head alone would be redacted differently from the whole. Anything that goes
wrong inside fails closed: nothing more is released, ``blocked`` is set and ``reason`` says why.

``feed`` without a segment end costs a list append and one small regex search (about a
microsecond); the checks run once per segment.

A consumer that reports on the stream's tokens (log-probabilities) asks the rail to
:meth:`~OutputRail.record_pieces`: each release then says which stream characters it stands for
and which of them it changed (:class:`Piece`), so the consumer can word its report in released
text only (:mod:`aigc.engine`).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any, NamedTuple

from aigc.errors import InvalidInput
from aigc.safety.moderation import assess, classifier_scores, policy_scanner
from aigc.safety.policy import PATHS, Policy, TermMatch, is_separator

# A segment ends after 。！？ or a newline, or after ASCII !? that whitespace follows, or after a
# "." that whitespace follows and that does not end an abbreviation or a number (Mr. Dr. No. St.
# 3. e.g.), which would cut a title or an address from the name or number after it.
_END = re.compile(r"[。！？\n]|[!?.](?=\s)")
_ABBREV = re.compile(r"(?:\b(?:mr|mrs|ms|dr|prof|st|rd|ave|blvd|no|nos|apt|ste|fl|rm|bldg|inc|ltd|co|corp|jr|sr|"
                     r"vs|etc|e\.g|i\.e|approx|dept|tel|ext|u\.s|a\.m|p\.m)|\b[a-z]|\d)$", re.IGNORECASE)


def _segment_end(held: str) -> int | None:
    """Where the first segment of ``held`` ends (None: not yet)."""
    for m in _END.finditer(held):
        if m.group() != "." or not _ABBREV.search(held, 0, m.start()):
            return m.end()
    return None
MIN_HOLD = 64  # letters and digits a forced release keeps back, at least
# Characters an entity's token is made of (phones, IDs, cards, e-mails, URLs, IPs, plates): a
# forced release never cuts between two of them.
_RUN_PUNCT = frozenset("@._-+:/%#=&~")


def _runlike(ch: str) -> bool:
    return ch.isalnum() or ch in _RUN_PUNCT


@dataclass
class InputVerdict:
    allowed: bool
    text: str  # the prompt as a model may see it ("" when not allowed)
    categories: list[str]  # categories on
    entities: list[Any]  # aigc.safety.pii.Entity, offsets into the input
    rule_ids: list[str]
    reason: str = ""
    matches: list[TermMatch] = field(default_factory=list)


def _scanner_for(policy: Policy, scanner: Any) -> Any:
    return scanner if scanner is not None else policy_scanner(policy)


class Piece(NamedTuple):
    """A stretch of released text: ``text`` stands for the next ``chars`` characters of the stream,
    which it repeats (``same``) or replaces (what the rail wrote in their place: a redaction)."""

    chars: int
    text: str
    same: bool


def pieces(raw: str, released: str) -> list[Piece]:
    """``released``, what a check let out for ``raw``, as pieces: the head and the tail the two
    share, and what lies between them as one changed piece."""
    if raw == released:
        return [Piece(len(raw), raw, True)] if raw else []
    limit = min(len(raw), len(released))
    head = next((i for i in range(limit) if raw[i] != released[i]), limit)
    tail = next((i for i in range(limit - head) if raw[-1 - i] != released[-1 - i]), limit - head)
    out = [Piece(head, released[:head], True)] if head else []
    out.append(Piece(len(raw) - head - tail, released[head:len(released) - tail], False))
    return out + ([Piece(tail, released[len(released) - tail:], True)] if tail else [])


def _redact_ops(ops: dict[str, str]) -> dict[str, str]:
    # "block" is the rail's operator, not the scanner's: the text is replaced while it is decided
    return {k: ("replace" if v == "block" else v) for k, v in ops.items()}


def _blocked_types(entities: list[Any], ops: dict[str, str]) -> list[str]:
    return sorted({e.type for e in entities if ops.get(e.type, ops["*"]) == "block"})


def mask_terms(text: str, matches: list[TermMatch]) -> str:
    """``text`` with each match's span written as ``*`` (same length: offsets stay valid)."""
    if not matches:
        return text
    chars = list(text)
    for m in matches:
        chars[m.start:m.end] = "*" * (m.end - m.start)
    return "".join(chars)


def _describe(matches: list[TermMatch], limit: int = 3) -> str:
    ids = sorted({m.rule_id for m in matches})
    more = f" and {len(ids) - limit} more" if len(ids) > limit else ""
    return ", ".join(ids[:limit]) + more


def check_input(text: str, policy: Policy, *, path: str = "prompt", scanner: Any = None) -> InputVerdict:
    """The input rail for ``text`` on ``path`` (prompt by default): allowed or not, and the text a
    model may see (terms with action redact masked, PII per the path's operators)."""
    if not isinstance(text, str):
        raise InvalidInput(f"the input rail takes text (str), not {type(text).__name__}")
    if path not in PATHS:
        raise InvalidInput(f"unknown path {path!r}: use one of {', '.join(PATHS)}")
    if not text:
        return InputVerdict(True, "", [], [], [])
    try:
        matches = policy.match_terms(text)
        verdict = assess(policy, matches, classifier_scores(policy, text))
        rule_ids = sorted({m.rule_id for m in matches})
        if verdict.blocked:
            why = (f"the policy's terms ({_describe(verdict.blocking)})" if verdict.blocking else
                   f"the moderation classifier ({', '.join(verdict.blocked_by_classifier)})")
            return InputVerdict(False, "", verdict.on, [], rule_ids, f"blocked by {why}", list(matches))
        ops = policy.pii_operators(path)
        red = _scanner_for(policy, scanner).redact(mask_terms(text, verdict.redact), _redact_ops(ops))
        blocked = _blocked_types(red.entities, ops)
        if blocked:
            return InputVerdict(False, "", verdict.on, list(red.entities), rule_ids,
                                f"the policy blocks {', '.join(blocked)} in the {path}", list(matches))
        return InputVerdict(True, red.text, verdict.on, list(red.entities), rule_ids, "", list(matches))
    except Exception as e:  # noqa: BLE001 - a rail that fails lets nothing through, and says so
        return InputVerdict(False, "", [], [], [], f"the input rail failed ({type(e).__name__}: {e}): "
                                                   f"nothing was let through")


class OutputRail:
    """The output rail of one stream (see the module doc). Not thread-safe: one per stream."""

    def __init__(self, policy: Policy, *, scanner: Any = None, segment_cap: int | None = None):
        if segment_cap is not None and (isinstance(segment_cap, bool) or not isinstance(segment_cap, int)
                                        or segment_cap < 16):
            raise InvalidInput(f"segment_cap {segment_cap!r} is not an integer of at least 16: pass e.g. 200")
        self.policy = policy
        self.scanner = _scanner_for(policy, scanner)
        self.cap = segment_cap or policy.segment_cap
        self.ops = policy.pii_operators("output")
        self._red_ops = _redact_ops(self.ops)
        self.hold = max(policy.max_term_chars, MIN_HOLD)
        self.blocked = False
        self.finish_reason: str | None = None
        self.reason: str | None = None
        self.entity_counts: dict[str, int] = {}
        self.fed = 0  # characters of the stream taken so far
        self._pieces: list[Piece] | None = None  # releases as pieces, once record_pieces() is called
        self._parts: list[str] = []
        self._n = 0  # characters held
        self._last = ""  # the last character fed (an ASCII !? waits for the whitespace after it)
        self._next_forced = self.cap  # held length at which a release is forced
        self._offset = 0  # characters of the stream before the held text
        self._matches: list[TermMatch] = []  # every match so far (stream offsets)
        self._seen: set[tuple[int, int, str]] = set()
        self._finished = False

    # -- what the rail decided ----------------------------------------------------------------

    @property
    def categories(self) -> list[str]:
        return assess(self.policy, self._matches).on if self._matches else []

    @property
    def rule_ids(self) -> list[str]:
        return sorted({m.rule_id for m in self._matches})

    @property
    def matches(self) -> list[TermMatch]:
        return list(self._matches)

    # -- the stream ---------------------------------------------------------------------------

    def feed(self, delta: str) -> str:
        """Take the next piece of the stream; return the text now safe to release ("" while held)."""
        if self.blocked or self._finished or not delta:
            return ""
        self.fed += len(delta)
        self._parts.append(delta)
        self._n += len(delta)
        probe = self._last + delta
        self._last = delta[-1]
        if self._n < self._next_forced and _END.search(probe) is None:
            return ""  # the common case: no segment ended
        return self._guarded(final=False)

    def passes(self, context: str, text: str) -> bool:
        """Whether ``text`` said after the released ``context`` would pass unchanged: no term (of any
        action) and no entity ends in it. For text no stream said (a token's alternatives); a check
        that fails says no."""
        try:
            whole, start = context + text, len(context)
            return not (any(m.end > start for m in self.policy.match_terms(whole))
                        or any(e.end > start for e in self.scanner.scan(whole)))
        except Exception:  # noqa: BLE001 - fail closed
            return False

    def record_pieces(self) -> None:
        """From now on, keep each release as :class:`Piece` s, for :meth:`take_pieces`."""
        self._pieces = []

    def take_pieces(self) -> list[Piece]:
        """The pieces released since the last call, in stream order (none unless recording)."""
        if self._pieces is None:
            return []
        out, self._pieces = self._pieces, []
        return out

    def finish(self) -> str:
        """The end of the stream: check and release what is still held."""
        if self.blocked or self._finished:
            return ""
        self._finished = True
        return self._guarded(final=True)

    def _guarded(self, final: bool) -> str:
        try:
            return self._release(final)
        except Exception as e:  # noqa: BLE001 - fail closed
            self._block(f"the output rail failed ({type(e).__name__}: {e}): the rest of the stream was withheld")
            return ""

    def _block(self, reason: str) -> None:
        self.blocked = True
        self.finish_reason = "content_filter"
        self.reason = reason
        self._parts, self._n = [], 0

    def _release(self, final: bool) -> str:
        held = "".join(self._parts)
        out: list[str] = []
        while held:
            forced = False
            end = _segment_end(held)  # one segment at a time, so chunking never changes what is checked
            if end is not None:
                cut = end
            elif final:
                cut = len(held)
            elif len(held) >= self._next_forced:
                cut, forced = self._forced_cut(held), True
            else:
                break
            if not cut:
                break
            released = self._check(held[:cut], held if forced else None)
            if released is None:
                return "".join(out)  # blocked: nothing of this segment, nothing after it
            out.append(released)
            self._offset += cut
            held = held[cut:]
            if forced:
                break
        self._parts = [held] if held else []
        self._n = len(held)
        self._next_forced = max(self.cap, self._n + self.cap // 2)
        return "".join(out)

    def _check(self, segment: str, whole: str | None) -> str | None:
        """``segment`` checked: its release, or None when the stream is blocked. ``whole``: the held
        text a forced release cuts ``segment`` from (its terms are read with what follows)."""
        if whole is None:
            matches = self.policy.match_terms(segment)
        else:
            matches = [m for m in self.policy.match_terms(whole) if m.end <= len(segment)]
        fresh = []
        for m in matches:
            key = (m.start + self._offset, m.end + self._offset, m.rule_id)
            if key not in self._seen:
                self._seen.add(key)
                fresh.append(m)
        if fresh:
            self._matches.extend(_shift(m, self._offset) for m in fresh)
            verdict = assess(self.policy, self._matches)
            if verdict.blocked:
                self._block(f"blocked by the policy's terms ({_describe(verdict.blocking)})")
                return None
        red = self.scanner.redact(mask_terms(segment, [m for m in matches if m.action == "redact"]), self._red_ops)
        blocked = _blocked_types(red.entities, self.ops)
        if blocked:
            self._block(f"the policy blocks {', '.join(blocked)} in the output")
            return None
        for e in red.entities:
            self.entity_counts[e.type] = self.entity_counts.get(e.type, 0) + 1
        if self._pieces is not None:
            self._pieces += pieces(segment, red.text)
        return red.text

    def _forced_cut(self, held: str) -> int:
        """Where a release without a segment end may cut ``held`` (0: nowhere yet)."""
        kept, cut = 0, len(held)
        while cut > 0 and kept < self.hold:  # keep back `hold` letters and digits at least
            cut -= 1
            if not is_separator(held[cut]):
                kept += 1
        whole = self.scanner.scan(held)
        spans = [(e.start, e.end) for e in whole] + [(m.start, m.end) for m in self.policy.match_terms(held)]
        while cut > 0:
            before = cut
            while cut > 0 and _joined(held, cut):
                cut -= 1
            for a, b in spans:
                if a < cut < b:
                    cut = a
            if cut != before:
                continue
            # the head alone must show every entity the whole buffer shows in it, or it would leak
            alone = {(e.start, e.end) for e in self.scanner.scan(held[:cut])}
            missing = [e.start for e in whole if e.end <= cut and (e.start, e.end) not in alone]
            if not missing:
                break
            cut = min(missing)
        return cut


def _joined(text: str, i: int) -> bool:
    """Whether cutting ``text`` at ``i`` would split a run an entity could be made of (``138|0013``,
    ``a@b|.com``, ``138 |1234``)."""
    a, b = text[i - 1], text[i]
    return (_runlike(a) and _runlike(b)) or (a.isspace() and i >= 2 and text[i - 2].isdigit() and b.isdigit())


def _shift(m: TermMatch, offset: int) -> TermMatch:
    if not offset:
        return m
    return TermMatch(m.term, m.category, m.severity, m.action, m.start + offset, m.end + offset, m.rule_id,
                     m.allowed_by)
