"""The safety section of ``aigc eval``: what a run's raw samples (no rails) would have met.

PII in outputs (entities per type, share of samples with any), the blocked share (samples the
workspace policy's moderation flags, and by which categories) and the longest span copied from
the training text (the run's copy index; built from ``train_texts`` for a run that predates it).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np


def safety_report(ws: Any, samples: Sequence[str], run_dir: Path, train_texts: Sequence[str] | None = None
                  ) -> dict[str, Any]:
    from aigc.safety.copyguard import CopyIndex
    from aigc.safety.moderation import moderate
    from aigc.safety.policy import workspace_policy
    from aigc.safety.training import load_copy_index

    policy = workspace_policy(ws)
    scanner = policy.scanner(ws)
    samples = [s for s in samples if s]
    entities: Counter = Counter()
    with_pii = flagged = 0
    categories: Counter = Counter()
    for text in samples:
        found = scanner.scan(text)
        with_pii += bool(found)
        entities.update(e.type for e in found)
        m = moderate(text, policy)
        if m.flagged:
            flagged += 1
            categories.update(c for c, on in m.categories.items() if on)
    index = load_copy_index(run_dir)
    if index is None and train_texts is not None:
        index = CopyIndex.build(train_texts)
    threshold = int(policy.copy_guard.get("threshold") or 50)
    copy: dict[str, Any] = {"threshold": threshold}
    if index is not None and samples:
        lengths = []
        for text in samples:
            span = index.longest(text)
            lengths.append(span.length if span is not None else 0)
        arr = np.asarray(lengths)
        copy.update(mean=round(float(arr.mean()), 1), p95=float(np.percentile(arr, 95)), max=int(arr.max()),
                    over_threshold=round(float((arr >= threshold).mean()), 4))
    n = len(samples)
    return {
        "policy_version": policy.version,
        "n_samples": n,
        "pii": {"samples_with_pii": round(with_pii / n, 4) if n else None,
                "entities": dict(sorted(entities.items()))},
        "blocked_share": round(flagged / n, 4) if n else None,
        "blocked_categories": dict(categories.most_common()),
        "copy": copy,
    }
