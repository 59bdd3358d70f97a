"""What the safety layer does when a run starts: the policy's word on unredacted PII in the
dataset, and the copy guard's index of the training text, stored with the run."""

from __future__ import annotations

import warnings
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from aigc.errors import InvalidInput

COPY_INDEX = "copy_index.npz"


class PiiWarning(UserWarning):
    """Training on a dataset that still holds personal information (the policy says warn)."""


def check_training_data(ws: Any, dataset: str, card: dict[str, Any]) -> None:
    """Refuse or warn, per the policy's ``training.unredacted_pii``, when the dataset's card
    counts PII that ingestion left in place (``--pii report``); either is an audit row."""
    pii = card.get("pii") or {}
    left = int(pii.get("unredacted") or 0)
    if not left:
        return
    from aigc.provenance import audit
    from aigc.safety.policy import workspace_policy

    entities = dict(pii.get("entities") or {})
    what = ", ".join(f"{t} {n}" for t, n in entities.items())
    policy = workspace_policy(ws)
    action = policy.training_unredacted_pii
    message = (f"dataset {dataset!r} holds {left} unredacted personal-information entities ({what}): "
               f"ingest it again with --pii redact (or --pii drop)")
    audit.record(ws, path="train", decision="block" if action == "refuse" else "flag", text=message,
                 policy_version=policy.version, entity_counts=entities,
                 rule_ids=[f"training.unredacted_pii:{action}"])
    if action == "refuse":
        raise InvalidInput(message + ", or set training.unredacted_pii: warn in the policy")
    if action == "warn":
        warnings.warn(PiiWarning(message), stacklevel=2)


def write_copy_index(run_dir: Path, texts: Iterable[str], ws: Any | None = None) -> dict[str, Any]:
    """Index the training text for the copy guard (``runs/<name>/copy_index.npz``); returns its stats."""
    from aigc.safety.copyguard import CopyIndex

    window = None
    if ws is not None:
        from aigc.safety.policy import workspace_policy

        window = workspace_policy(ws).copy_guard.get("window")
    index = CopyIndex.build(texts, **({"window": window} if window else {}))
    index.save(run_dir / COPY_INDEX)
    return index.stats()


def load_copy_index(run_dir: Path):
    """The run's copy index, or None for a run trained before there was one."""
    path = Path(run_dir) / COPY_INDEX
    if not path.exists():
        return None
    from aigc.safety.copyguard import CopyIndex

    return CopyIndex.load(path)
