"""The safety layer as generation meets it: one :class:`Guard` per workspace (its policy, read
again when ``policy.yaml`` changes, a PII scanner, the HMAC key), one :class:`RunGuard` per
loaded run (the guard plus the run's copy-guard index).

A generator with a run guard checks each prompt before any model runs (the input rail: a
blocked prompt raises :class:`~aigc.errors.ContentBlocked`; PII in it is handled per the
policy's ``prompt`` actions) and passes each sample's text through an output rail (PII per the
``output`` actions, blocked terms end the sample ``content_filter``, a copied span over the
policy's threshold reported, or blocked). :func:`verdict` reads what a sample's rail decided;
:meth:`Guard.log_preparer` is what the generation log keeps of a request (PII per the ``log``
actions) and its audit rows.
"""

from __future__ import annotations

import threading
import weakref
from pathlib import Path
from typing import Any

from aigc.errors import ContentBlocked

_guards: weakref.WeakValueDictionary = weakref.WeakValueDictionary()
_lock = threading.Lock()


def guard_for(ws: Any) -> Guard:
    """The workspace's guard (one per workspace root, shared while in use)."""
    key = str(Path(ws.root).resolve())
    with _lock:
        guard = _guards.get(key)
        if guard is None:
            guard = Guard(ws)
            _guards[key] = guard
        return guard


class Guard:
    def __init__(self, ws: Any):
        self.ws = ws
        self._policy = None
        self._scanner = None
        self._lock = threading.Lock()

    @property
    def policy(self):
        """The policy in force (the workspace's, re-read when its file changes)."""
        from aigc.safety.policy import workspace_policy

        policy = workspace_policy(self.ws)
        if policy is not self._policy:
            with self._lock:
                self._scanner = policy.scanner(self.ws)
                self._policy = policy
        return policy

    @property
    def scanner(self):
        self.policy  # noqa: B018 - refreshes the scanner with the policy
        return self._scanner

    def check_prompt(self, text: str, run: str | None = None) -> tuple[str, Any]:
        """The input rail: (the prompt as the model may see it, the verdict), or ContentBlocked
        (audited here: a blocked prompt makes no generation)."""
        from aigc.safety.rails import check_input

        policy = self.policy
        verdict = check_input(text, policy, path="prompt", scanner=self.scanner)
        if not verdict.allowed:
            from aigc.provenance import audit

            audit.record(self.ws, path="prompt", decision="block", text=text, policy_version=policy.version,
                         run=run, categories=verdict.categories, entity_counts=_counts(verdict.entities),
                         rule_ids=verdict.rule_ids)
            cats = ", ".join(verdict.categories) or "policy"
            raise ContentBlocked(f"the prompt was blocked by the workspace's safety policy ({cats}): "
                                 f"{verdict.reason}", verdict.categories)
        return verdict.text, verdict

    def log_preparer(self, run: str, prompt_verdict: Any, verdicts: list[dict[str, Any]], rails: list[Any] = ()):
        """What the log writer runs on a generation row before it is kept: prompt and outputs
        redacted per the ``log`` actions, and the audit rows of the request's decisions. Outputs the
        output rail already redacted with the same operators are not scanned again."""
        policy = self.policy

        def prepare(row: dict[str, Any]) -> dict[str, Any]:
            report_copies(list(rails), verdicts)  # the copy guard's report, here rather than on the decode loop
            ops = policy.pii_operators("log")
            same = ops == policy.pii_operators("output")
            scanner = self.scanner
            prompt = row.get("prompt") or ""
            output = dict(row.get("output") or {})
            texts = list(output.get("texts") or [])
            audits = []
            logged_prompt = scanner.redact(prompt, ops).text if prompt else prompt
            if prompt:
                ents = prompt_verdict.entities if prompt_verdict is not None else []
                audits.append(_audit_row(row["id"], "prompt", run, policy.version, prompt, logged_prompt,
                                         "redact" if ents else "allow",
                                         getattr(prompt_verdict, "categories", []), _counts(ents),
                                         getattr(prompt_verdict, "rule_ids", [])))
            logged = []
            for i, text in enumerate(texts):
                v = verdicts[i] if i < len(verdicts) else {}
                # a text the rail let out is already redacted with the output operators
                kept = text if (same and v) or not text else scanner.redact(text, ops).text
                logged.append(kept)
                if not v:
                    continue
                decision = ("block" if v.get("blocked") else "redact" if v.get("entities") else
                            "flag" if v.get("categories") or v.get("copy_flagged") else "allow")
                audits.append(_audit_row(row["id"], "output", run, policy.version, text, kept, decision,
                                         v.get("categories", []), v.get("entities", {}), v.get("rule_ids", [])))
            row["prompt"] = logged_prompt
            output["texts"] = logged
            row["output"] = output
            row["_audit"] = audits
            return row

        return prepare

    def rail(self, copy_index=None):
        """A fresh output rail for one sample (with the copy guard when the run has an index)."""
        from aigc.safety.rails import OutputRail

        policy = self.policy
        rail = OutputRail(policy, scanner=self.scanner)
        return rail if copy_index is None else CopyGuardedRail(rail, copy_index, policy.copy_guard)

    def label(self, content_id: str) -> dict[str, Any]:
        """The implicit AIGC label of an output (GB 45438 Annex E), producer from the policy."""
        from aigc.provenance.labels import implicit_label

        labels = self.policy.labels
        return implicit_label(producer=labels.get("producer") or "", produce_id=content_id)


def _counts(entities: Any) -> dict[str, int]:
    counts: dict[str, int] = {}
    for e in entities or ():
        counts[e.type] = counts.get(e.type, 0) + 1
    return counts


def _audit_row(request_id: str, path: str, run: str, version: str, text: str, redacted: str, decision: str,
               categories: Any, entity_counts: dict[str, int], rule_ids: Any) -> dict[str, Any]:
    return {"request_id": request_id, "path": path, "run": run, "policy_version": version, "text": text,
            "redacted": redacted, "decision": decision, "categories": list(categories or []), "entity_counts": dict(entity_counts),
            "rule_ids": list(rule_ids or [])}


class RunGuard:
    """The guard as one loaded run uses it: the workspace guard plus the run's copy index."""

    def __init__(self, guard: Guard, run_dir: Path | None = None):
        self.guard = guard
        self.run_dir = run_dir
        self._index = None
        self._index_loaded = False

    @property
    def copy_index(self):
        if not self._index_loaded and self.run_dir is not None:
            from aigc.safety.training import load_copy_index

            self._index = load_copy_index(self.run_dir)
            self._index_loaded = True
        return self._index

    def check_prompt(self, text: str) -> tuple[str, Any]:
        return self.guard.check_prompt(text, self.run_dir.name if self.run_dir is not None else None)

    def rail(self):
        return self.guard.rail(self.copy_index)


class CopyGuardedRail:
    """An output rail followed by the copy guard. Under ``action: block`` each segment the rail
    lets out is checked before it goes (with the ``threshold`` characters before it, so a span
    that runs into it is seen whole enough to decide) and a copy over the threshold ends the sample
    ``content_filter`` without releasing it; under ``report`` (and ``regenerate``, which a stream
    cannot do) the longest copied span of the whole text is measured once, at the end, off the
    decode loop (:meth:`report`)."""

    def __init__(self, rail: Any, index: Any, settings: dict[str, Any]):
        self.rail, self.index = rail, index
        self.threshold = int(settings.get("threshold") or 50)
        self.block = settings.get("action") == "block"
        self.text = ""
        self.copy_span = None
        self._blocked = False
        self._reason = None

    def __getattr__(self, name: str) -> Any:  # categories, entity_counts, rule_ids of the rail
        return getattr(self.rail, name)

    @property
    def blocked(self) -> bool:
        return self._blocked or self.rail.blocked

    @property
    def reason(self) -> str | None:
        return self._reason or getattr(self.rail, "reason", None)

    def _pass(self, released: str) -> str:
        if self._blocked or not released:
            return "" if self._blocked else released
        if self.block:
            start = max(0, len(self.text) - self.threshold)
            window = self.text[start:] + released
            try:
                hit = self.index.check(window, self.threshold)
            except Exception as e:  # noqa: BLE001 - a guard that fails lets nothing more out
                self._blocked, self._reason = True, f"copy guard failed: {type(e).__name__}: {e}"
                return ""
            if hit.copied:
                span = hit.span
                self.copy_span = type(span)(span.start + start, span.end + start, span.length,
                                            span.source_offset)
                self._blocked = True
                self._reason = f"copies {span.length} characters of the training text (threshold {self.threshold})"
                return ""
        self.text += released
        return released

    def feed(self, delta: str) -> str:
        return self._pass(self.rail.feed(delta))

    def finish(self) -> str:
        out = self._pass(self.rail.finish())
        if self.block and not self._blocked and self.text:
            self.copy_span = self.index.longest(self.text)
        return out

    def report(self) -> None:
        """Measure the longest copied span of the whole text (``report`` and ``regenerate``): called
        off the decode loop, by the log writer (:meth:`Guard.log_preparer`) or at the end of a
        request that is not logged."""
        if self.copy_span is None and not self._blocked and self.text:
            self.copy_span = self.index.longest(self.text)

    @property
    def categories(self) -> list[str]:
        cats = list(self.rail.categories)
        return cats + ["copy"] if self._blocked and self.copy_span is not None else cats


def report_copies(rails: list[Any], verdicts: list[dict[str, Any]]) -> None:
    """Fill in ``copy`` of each verdict whose rail measures copies at the end (report mode)."""
    for rail, v in zip(rails, verdicts):
        if hasattr(rail, "report") and v.get("copy") is None:
            rail.report()
            v.update({k: w for k, w in verdict(rail).items() if k in ("copy", "copy_flagged")})


def verdict(rail: Any) -> dict[str, Any]:
    """What a sample's output rail decided, for a response, the studio and the log."""
    if rail is None:
        return {}
    out: dict[str, Any] = {"blocked": bool(rail.blocked), "categories": list(rail.categories),
                           "entities": dict(rail.entity_counts), "rule_ids": list(rail.rule_ids)}
    copy = getattr(rail, "copy_span", None)
    out["copy"] = None if copy is None else {"start": copy.start, "end": copy.end, "length": copy.length}
    threshold = getattr(rail, "threshold", None)
    out["copy_flagged"] = bool(copy is not None and threshold and copy.length >= threshold)
    if getattr(rail, "reason", None):
        out["reason"] = rail.reason
    return out
