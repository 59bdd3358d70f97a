"""Reading an ingested text dataset back: its splits as :class:`TextRecord` lists, and its card.

This module knows the on-disk layout written by :mod:`aigc.data.ingest` (``<split>.jsonl`` and
``card.json``). It knows nothing about tokenizers, models or the catalog.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from aigc.data.split import SPLITS
from aigc.errors import InvalidInput, NotFound


@dataclass(frozen=True)
class TextRecord:
    text: str
    cond: dict[str, str] = field(default_factory=dict)  # condition column -> value, {} when none


def _file(dataset_dir: Path, filename: str) -> Path:
    path = Path(dataset_dir) / filename
    if not path.is_file():
        if not Path(dataset_dir).is_dir():
            raise NotFound(f"no dataset folder at {dataset_dir}: ingest it first with `aigc ingest`")
        raise NotFound(f"{path} is missing: the dataset is incomplete, ingest it again with --replace")
    return path


def read_text_split(dataset_dir: Path, split: str) -> list[TextRecord]:
    """All records of one split (``train``, ``val`` or ``test``), in file order; [] for an empty split."""
    if split not in SPLITS:
        raise InvalidInput(f"unknown split {split!r}: use one of {', '.join(SPLITS)}")
    path = _file(dataset_dir, f"{split}.jsonl")
    out: list[TextRecord] = []
    with path.open(encoding="utf-8") as f:
        for lineno, line in enumerate(f, start=1):
            if not line.strip():
                continue
            try:
                obj = json.loads(line)
                cond = {str(k): str(v) for k, v in obj.get("cond", {}).items()}
                record = TextRecord(text=obj["text"], cond=cond)
            except (json.JSONDecodeError, KeyError, TypeError, AttributeError) as e:
                raise InvalidInput(
                    f"{path}: line {lineno} is not a text record ({type(e).__name__}: {e}): "
                    "the dataset is damaged, ingest it again with --replace"
                ) from None
            out.append(record)
    return out


def read_card(dataset_dir: Path) -> dict[str, Any]:
    """The dataset's card.json as a dict."""
    path = _file(dataset_dir, "card.json")
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        raise InvalidInput(
            f"{path} is not valid JSON ({e.msg}): ingest the dataset again with --replace"
        ) from None
