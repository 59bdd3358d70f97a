"""The PII pass of ingestion: count, redact or drop the personal information in kept records.

``report`` leaves the text as it is and counts what it found (training then warns or refuses,
per the policy); ``redact`` replaces each entity by the policy's ingest operator (``<CN_MOBILE>``
by default), so the dataset never holds the raw values; ``drop`` leaves out every record that
holds any. The card's ``pii`` section counts entities by type and by column either way.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from aigc.data.clean import Drop, Kept
from aigc.errors import InvalidInput

MODES = ("report", "redact", "drop")
TEXT = "text"  # the column name the card uses for the text when the source names none


@dataclass
class PiiReport:
    mode: str
    entities: Counter = field(default_factory=Counter)  # type -> count
    by_column: dict[str, Counter] = field(default_factory=dict)  # column -> type -> count
    records_with_pii: int = 0
    records_dropped: int = 0
    seconds: float = 0.0

    def count(self, column: str, entities) -> None:
        counts = self.by_column.setdefault(column, Counter())
        for e in entities:
            counts[e.type] += 1
            self.entities[e.type] += 1

    def to_card(self, policy_version: str) -> dict[str, Any]:
        return {"mode": self.mode, "policy_version": policy_version,
                "redacted": self.mode in ("redact", "drop"),
                # what the dataset still holds: nothing once redacted or dropped
                "unredacted": 0 if self.mode in ("redact", "drop") else sum(self.entities.values()),
                "records_with_pii": self.records_with_pii, "records_dropped": self.records_dropped,
                "entities": dict(sorted(self.entities.items())),
                "by_column": {c: dict(sorted(n.items())) for c, n in self.by_column.items()},
                "seconds": round(self.seconds, 2)}


def check_mode(mode: str) -> str:
    if mode not in MODES:
        raise InvalidInput(f"unknown --pii {mode!r}: pass one of {', '.join(MODES)}")
    return mode


def pii_pass(kept: Sequence[Kept], mode: str, scanner: Any, operators: Mapping[str, str] | str,
             *, text_column: str | None = None,
             progress: Callable[[int, int], None] | None = None) -> tuple[list[Kept], list[Drop], PiiReport]:
    """Scan each record's text and condition values; return the records to keep (redacted under
    ``redact``), the drops (under ``drop``) and the report."""
    check_mode(mode)
    report = PiiReport(mode)
    t0 = time.perf_counter()
    text_name = text_column or TEXT
    out: list[Kept] = []
    drops: list[Drop] = []
    for n, rec in enumerate(kept):
        found = False
        text, cond = rec.text, rec.cond
        fields = [(text_name, text)] + list(cond.items())
        new: dict[str, str] = {}
        for column, value in fields:
            if mode == "redact":
                red = scanner.redact(value, operators)
                ents, new[column] = red.entities, red.text
            else:
                ents = scanner.scan(value)
            if ents:
                found = True
                report.count(column, ents)
        report.records_with_pii += found
        if found and mode == "drop":
            report.records_dropped += 1
            drops.append(Drop(rec.index, "pii", "holds personal information (--pii drop)", ""))
            continue
        if found and mode == "redact":
            rec = Kept(rec.index, new[text_name], {c: new[c] for c in cond})
        out.append(rec)
        if progress is not None and (n + 1) % 500 == 0:
            progress(n + 1, len(kept))
    report.seconds = time.perf_counter() - t0
    return out, drops, report


def corpus_pass(text: str, mode: str, scanner: Any, operators: Mapping[str, str] | str) -> tuple[str, PiiReport]:
    """The same over one long text (a corpus), line by line; ``drop`` drops the lines with PII."""
    check_mode(mode)
    report = PiiReport(mode)
    t0 = time.perf_counter()
    lines = text.split("\n")
    kept_lines = []
    for line in lines:
        red = scanner.redact(line, operators) if mode == "redact" else None
        ents = red.entities if red is not None else scanner.scan(line)
        if ents:
            report.records_with_pii += 1
            report.count(TEXT, ents)
            if mode == "drop":
                report.records_dropped += 1
                continue
            if red is not None:
                line = red.text
        kept_lines.append(line)
    report.seconds = time.perf_counter() - t0
    return "\n".join(kept_lines), report


def pii_settings(ws: Any, mode: str | None) -> tuple[str, Any, dict[str, str], str]:
    """What ingestion does with PII in workspace ``ws``: the mode (``mode`` or the policy's
    ``ingest.pii``), a scanner, the ingest operators and the policy's version."""
    from aigc.safety.policy import workspace_policy

    policy = workspace_policy(ws)
    mode = check_mode(mode or policy.ingest_pii)
    return mode, policy.scanner(ws), policy.pii_operators("ingest"), policy.version
