"""The safety layer as generation meets it: one :class:`Guard` per workspace (its policy, read
again when ``policy.yaml`` changes, a PII scanner, the HMAC key), one :class:`RunGuard` per
loaded run (the guard plus the run's copy-guard index).

A generator with a run guard checks each prompt before any model runs (the input rail: a
blocked prompt raises :class:`~aigc.errors.ContentBlocked`; PII in it is handled per the
policy's ``prompt`` actions) and passes each sample's text through an output rail (PII per the
``output`` actions, blocked terms end the sample ``content_filter``, a copied span over the
policy's threshold reported, or blocked). :func:`verdict` reads what a sample's rail decided;
:meth:`Guard.log_preparer` is what the generation log keeps of a request (PII per the ``log``
actions) and its audit rows; :meth:`RunGuard.audit_call` is the audit row of a generation outside
the engine. Audit excerpts are always ``replace``-redacted, whatever the ``log`` actions say.
"""

from __future__ import annotations

import logging
import threading
import uuid
import weakref
from pathlib import Path
from typing import Any

from aigc.errors import ContentBlocked, InvalidInput

log = logging.getLogger("aigc.safety")
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
        self._broken = None  # the error of the broken policy file last warned about
        self._lock = threading.Lock()

    @property
    def policy(self):
        """The policy in force (the workspace's, re-read when its file changes). A file broken by
        hand leaves the last good policy in force, with one warning logged per error, so requests go
        on; with no good policy read yet, the error (one line naming the file and the line)."""
        from aigc.safety.policy import workspace_policy

        try:
            policy = workspace_policy(self.ws)
        except InvalidInput as e:
            if self._policy is None:
                raise
            if str(e) != self._broken:
                self._broken = str(e)
                log.warning("%s; policy %s stays in force until the file is fixed", e, self._policy.version)
            return self._policy
        if policy is not self._policy:
            with self._lock:
                self._scanner = policy.scanner(self.ws)
                self._policy, self._broken = policy, None
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
            # the log's copy is the audit excerpt only when it is what an excerpt must be: PII replaced
            # by entity names. Under any other log operator (keep, mask...) the audit redacts it anew.
            excerpt_ok = set(ops.values()) == {"replace"}
            scanner = self.scanner
            prompt = row.get("prompt") or ""
            output = dict(row.get("output") or {})
            texts = list(output.get("texts") or [])
            audits = []
            logged_prompt = scanner.redact(prompt, ops).text if prompt else prompt
            if prompt:
                ents = prompt_verdict.entities if prompt_verdict is not None else []
                audits.append(_audit_row(row["id"], "prompt", run, policy.version, prompt,
                                         logged_prompt if excerpt_ok else None, "redact" if ents else "allow",
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
                audits.append(_audit_row(row["id"], "output", run, policy.version, text,
                                         kept if excerpt_ok else None, _decision(v), v.get("categories", []),
                                         v.get("entities", {}), v.get("rule_ids", [])))
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


DECISION_ORDER = ("block", "redact", "flag", "allow")  # what a row of several decisions says: the first


def _decision(v: dict[str, Any]) -> str:
    """An output's audit decision from its rail's verdict."""
    return ("block" if v.get("blocked") else "redact" if v.get("entities") else
            "flag" if v.get("categories") or v.get("copy_flagged") else "allow")


def _audit_row(request_id: str, path: str, run: str, version: str, text: str, replaced: str | None,
               decision: str, categories: Any, entity_counts: dict[str, int], rule_ids: Any) -> dict:
    """An audit row (``aigc.provenance.audit.record``'s arguments); ``replaced``: the text with its PII
    already replaced by entity names, or None for the audit to redact it."""
    row = {"request_id": request_id, "path": path, "run": run, "policy_version": version, "text": text,
           "decision": decision, "categories": list(categories or []), "entity_counts": dict(entity_counts),
           "rule_ids": list(rule_ids or [])}
    if replaced is not None:
        row["replaced"] = replaced
    return row


class RunGuard:
    """The guard as one loaded run uses it: the workspace guard plus the run's copy index."""

    def __init__(self, guard: Guard, run_dir: Path | None = None):
        self.guard = guard
        self.run_dir = run_dir
        self._index = None
        self._index_loaded = False
        # where audit_call's row goes: None writes it to the audit log; a list collects it instead (a
        # batch job's workers: the job writes one row for all its requests)
        self.audit_rows: list[dict[str, Any]] | None = None

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

    def audit_call(self, prompt: str, group: Any, texts: list[str]) -> None:
        """The audit row of one generation outside the engine (``aigc generate``, ``aigc.generate``,
        an app calling the generator): the run, ``n`` and each sample's decision, the prompt and the
        texts as released hashed, their excerpt ``replace``-redacted. The engine audits through its
        log instead (a row per prompt and per output); a blocked prompt was audited when refused."""
        from aigc.provenance import audit

        rails = [sample.rail for sample in group.samples]
        verdicts = [verdict(rail) for rail in rails]
        report_copies(rails, verdicts)
        pv = getattr(group, "prompt_verdict", None)
        entities = _counts(getattr(pv, "entities", None))
        categories = set(getattr(pv, "categories", None) or ())
        rules = set(getattr(pv, "rule_ids", None) or ())
        decisions = ["redact" if entities else "allow"] + [_decision(v) for v in verdicts]
        for v in verdicts:
            categories.update(v.get("categories", ()))
            rules.update(v.get("rule_ids", ()))
            for kind, n in v.get("entities", {}).items():
                entities[kind] = entities.get(kind, 0) + n
        lines = [f"n={len(texts)}: " + ", ".join(f"sample {i + 1} {d}" for i, d in enumerate(decisions[1:])),
                 f"prompt: {prompt}", *(f"sample {i + 1}: {t}" for i, t in enumerate(texts))]
        row = dict(path="generate", decision=min(decisions, key=DECISION_ORDER.index), text="\n".join(lines),
                   policy_version=self.guard.policy.version, request_id="gen-" + uuid.uuid4().hex[:24],
                   run=self.run_dir.name if self.run_dir is not None else None, categories=sorted(categories),
                   entity_counts=dict(sorted(entities.items())), rule_ids=sorted(rules))
        if self.audit_rows is not None:
            self.audit_rows.append(row)
        else:
            audit.record(self.guard.ws, **row)


class CopyGuardedRail:
    """An output rail followed by the copy guard. Under ``action: block`` each segment the rail
    lets out is checked before it goes (with the ``threshold`` characters before it, so a span
    that runs into it is seen whole enough to decide) and a copy over the threshold ends the sample
    ``content_filter`` without releasing it; under ``report`` the longest copied span of the whole
    text is measured once, at the end, off the decode loop (:meth:`report`)."""

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
        """Measure the longest copied span of the whole text (``report``): called
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
    threshold = getattr(rail, "threshold", None)
    # the threshold travels with the span, so a reader (the studio) can say what "over" means
    out["copy"] = None if copy is None else {"start": copy.start, "end": copy.end, "length": copy.length,
                                             "threshold": threshold}
    out["copy_flagged"] = bool(copy is not None and threshold and copy.length >= threshold)
    if getattr(rail, "reason", None):
        out["reason"] = rail.reason
    return out
