"""The implicit label of GB 45438-2025 Annex E: one JSON object in a metadata field named ``AIGC``.

The object's keys, in the standard's order::

    Label              "1" the content is AI-generated, "2" possibly, "3" suspected (a string)
    ContentProducer    the generating service's name or code (its provider fills it in)
    ProduceID          the producer's number for this piece of content, unique per file
    ReservedCode1      the producer's own integrity / security information (optional)
    ContentPropagator  the distributing platform's name or code (filled in by whoever publishes it)
    PropagateID        the propagator's number for this piece of content
    ReservedCode2      the propagator's own integrity / security information (optional)

The producer code is never made up here: it comes from the workspace policy (``labels.producer``).
Without one, ``ContentProducer`` is written empty and :func:`validate` reports a warning, so a label
is never silently passed off as complete. (The TC260 practice guide TC260-PG-20258A describes the
code a registered service gets; this module only carries it.)

This module knows the object; ``images`` and ``labels`` put it into files and read it back.
"""

from __future__ import annotations

import json
import uuid
from typing import Any

from aigc.errors import InvalidInput

FIELD = "AIGC"  # the metadata field's name (PNG text keyword, XMP property, JSON key in a JPEG comment)
FIELDS = ("Label", "ContentProducer", "ProduceID", "ReservedCode1", "ContentPropagator", "PropagateID",
          "ReservedCode2")
LABEL_VALUES = {"1": "AI-generated", "2": "possibly AI-generated", "3": "suspected AI-generated"}


def new_produce_id() -> str:
    """A fresh content number: 32 hex digits (a random UUID), unique per file."""
    return uuid.uuid4().hex


def _opt_str(value: Any, what: str) -> str:
    if value is None:
        return ""
    if not isinstance(value, str):
        raise InvalidInput(f"{what} must be a string, got {type(value).__name__} {value!r}: "
                           "pass text or None")
    if "\n" in value or "\r" in value or len(value) > 256:
        raise InvalidInput(f"{what} {value[:40]!r}... must be one line of at most 256 characters: shorten it")
    return value.strip()


def implicit_label(*, producer: str | None, produce_id: str | None = None, propagator: str | None = None,
                   propagate_id: str | None = None, label_type: str | int = "1",
                   reserved_code1: str | None = None, reserved_code2: str | None = None) -> dict[str, str]:
    """The Annex E object, every key present (empty when unknown), values strings.

    ``producer`` is the service's code from the workspace policy; ``None`` leaves it empty (never
    invented). ``produce_id`` defaults to a fresh :func:`new_produce_id`. ``label_type`` is "1" (is
    AI-generated: what aigc-studio writes), "2" (possibly) or "3" (suspected).
    """
    ok_type = isinstance(label_type, (str, int)) and not isinstance(label_type, bool)
    kind = str(label_type) if ok_type else None
    if kind not in LABEL_VALUES:
        meanings = ", ".join(f"{k}: {v}" for k, v in LABEL_VALUES.items())
        raise InvalidInput(f"label_type must be one of 1, 2, 3 ({meanings}), got {label_type!r}")
    produce = _opt_str(produce_id, "produce_id") or new_produce_id()
    return {
        "Label": kind,
        "ContentProducer": _opt_str(producer, "producer"),
        "ProduceID": produce,
        "ReservedCode1": _opt_str(reserved_code1, "reserved_code1"),
        "ContentPropagator": _opt_str(propagator, "propagator"),
        "PropagateID": _opt_str(propagate_id, "propagate_id"),
        "ReservedCode2": _opt_str(reserved_code2, "reserved_code2"),
    }


def dumps(label: dict[str, Any]) -> str:
    """Compact JSON in the standard's key order (keys it does not know follow), non-ASCII kept."""
    ordered = {k: label[k] for k in FIELDS if k in label}
    ordered.update({k: v for k, v in label.items() if k not in ordered})
    return json.dumps(ordered, ensure_ascii=False, separators=(",", ":"))


def loads(value: Any, where: str) -> dict[str, Any]:
    """A label from a field's value: the object itself, its JSON text, or ``{"AIGC": {...}}``.

    Raises :class:`InvalidInput` (naming ``where``) when the value is not an object."""
    obj = value
    if isinstance(value, (bytes, bytearray)):
        value = bytes(value).decode("utf-8", "replace")
    if isinstance(value, str):
        try:
            obj = json.loads(value)
        except ValueError:
            raise InvalidInput(f"the AIGC label in {where} is not JSON ({value[:60]!r}): "
                               "rewrite it with `aigc label add`") from None
    if isinstance(obj, dict) and set(obj) == {FIELD}:
        obj = obj[FIELD]
        if isinstance(obj, str):
            return loads(obj, where)
    if not isinstance(obj, dict):
        raise InvalidInput(f"the AIGC label in {where} is a {type(obj).__name__}, not a JSON object: "
                           "rewrite it with `aigc label add`")
    return obj


def validate(label: dict[str, Any]) -> tuple[list[str], list[str]]:
    """``(problems, warnings)`` of an Annex E object.

    Problems make a label invalid: no ``Label`` or a value other than "1"/"2"/"3", a field that is
    not a string, no ``ProduceID``. Warnings do not: an empty or missing ``ContentProducer`` (set
    ``labels.producer`` in the workspace policy), a key the standard does not define.
    """
    problems: list[str] = []
    warnings: list[str] = []
    for key in FIELDS:
        if key in label and not isinstance(label[key], str):
            problems.append(f"{key} must be a string, got {type(label[key]).__name__} {label[key]!r}")
    value = label.get("Label")
    if "Label" not in label:
        problems.append("Label is missing (it must be \"1\", \"2\" or \"3\")")
    elif isinstance(value, str) and value.strip() not in LABEL_VALUES:
        problems.append(f"Label is {value!r}: it must be \"1\" (AI-generated), \"2\" (possibly) "
                        "or \"3\" (suspected)")
    produce = label.get("ProduceID")
    if produce is None or (isinstance(produce, str) and not produce.strip()):
        problems.append("ProduceID is missing or empty: each labelled file needs its own content number")
    producer = label.get("ContentProducer")
    if producer is None or (isinstance(producer, str) and not producer.strip()):
        warnings.append("ContentProducer is empty: set labels.producer in the workspace policy "
                        "(`aigc policy edit`) to your service's name or registered code")
    unknown = sorted(k for k in label if k not in FIELDS)
    if unknown:
        warnings.append(f"keys outside GB 45438 Annex E: {', '.join(unknown)}")
    return problems, warnings
