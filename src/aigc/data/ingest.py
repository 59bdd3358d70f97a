"""``ingest_text``: read a text file, clean it, split it, and publish it as a workspace dataset.

Orchestration only: reading is :mod:`aigc.data.sources`, cleaning :mod:`aigc.data.clean`,
splitting :mod:`aigc.data.split`, the card :mod:`aigc.data.cards`. Everything is written to a
staging folder and renamed into ``datasets/<name>/`` in one step, so a failed or interrupted
ingest leaves no dataset folder behind and never half-replaces an existing one.

On disk::

    datasets/<name>/train.jsonl   one {"text": str, "cond": {column: value}} per line, UTF-8
    datasets/<name>/val.jsonl     (may be empty)
    datasets/<name>/test.jsonl    (may be empty)
    datasets/<name>/card.json
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from aigc.data.cards import build_card
from aigc.data.clean import Drop, Kept, clean_records
from aigc.data.conditions import DEFAULT_MIN_COND_COUNT, check_min_count
from aigc.data.sources import read_source
from aigc.data.privacy import check_mode, corpus_pass, pii_pass, pii_settings
from aigc.data.split import SPLITS, check_fractions, contiguous_split, hash_split
from aigc.errors import AlreadyExists, InvalidInput
from aigc.workspace import Workspace, now, write_json_atomic

# What to suggest when every record was dropped, per drop kind.
_RELAX_HINTS = {
    "empty": "check --text-column",
    "empty_condition": "check --cond-columns",
    "too_short": "lower --min-length",
    "too_long": "raise --max-length or leave it out",
    "pii": "pass --pii redact instead of drop",
}


def _check_lengths(min_length: int, max_length: int | None) -> None:
    if not isinstance(min_length, int) or isinstance(min_length, bool) or min_length < 0:
        raise InvalidInput(f"invalid --min-length {min_length!r}: pass a whole number >= 0")
    if max_length is not None and (
        not isinstance(max_length, int) or isinstance(max_length, bool) or max_length < max(min_length, 1)
    ):
        raise InvalidInput(
            f"invalid --max-length {max_length!r}: pass a whole number >= 1 and "
            f">= --min-length ({min_length}), or leave it out"
        )


def _nothing_left(path: Path, n_read: int, drops: Sequence[Drop]) -> InvalidInput:
    by_kind: dict[str, int] = {}
    for d in drops:
        by_kind[d.kind] = by_kind.get(d.kind, 0) + 1
    detail = ", ".join(f"{k}: {n}" for k, n in by_kind.items())
    hints = [_RELAX_HINTS[k] for k in by_kind if k in _RELAX_HINTS] or ["check the file"]
    return InvalidInput(
        f"{path}: no records left: read {n_read}, dropped {len(drops)} ({detail}): {', or '.join(hints)}"
    )


def _one_record(path: Path, lines: bool, n_read: int, drops: Sequence[Drop]) -> InvalidInput:
    left = f"read {n_read}, dropped {len(drops)}" if drops else f"read {n_read}"
    fix = ("drop --lines to read the file as one corpus, which is cut into train, val and test by characters"
           if lines else "add records (one per row), or save one long text as a .txt corpus")
    return InvalidInput(
        f"{path}: only 1 record ({left}), and a dataset needs at least 2, one to train on and one to "
        f"validate on: {fix}"
    )


def write_split(path: Path, rows: Sequence[tuple[str, dict[str, str]]]) -> None:
    """One split of a text dataset: a JSONL line ``{"text", "cond"}`` per record (music ingests the same)."""
    with path.open("w", encoding="utf-8", newline="\n") as f:
        for text, cond in rows:
            f.write(json.dumps({"text": text, "cond": cond}, ensure_ascii=False))
            f.write("\n")


def ingest_text(
    ws: Workspace,
    path: str | Path,
    name: str,
    *,
    lines: bool = False,
    text_column: str | None = None,
    cond_columns: Sequence[str] = (),
    encoding: str | None = None,
    normalize: bool = True,
    min_length: int = 1,
    max_length: int | None = None,
    split: tuple[float, float, float] = (0.9, 0.05, 0.05),
    replace: bool = False,
    header: bool | None = None,
    columns: Sequence[str] | str | None = None,
    min_cond_count: int = DEFAULT_MIN_COND_COUNT,
    pii: str | None = None,
    progress: Callable[[str, int, int], None] | None = None,
) -> dict[str, Any]:
    """Ingest a text file as dataset ``name``; return its card. User mistakes raise AigcError subclasses.

    ``header``/``columns``: CSV and TSV without a header row (see :func:`~aigc.data.sources.read_source`).
    ``min_cond_count``: condition values with fewer train records share their column's ``other``
    token (see :mod:`aigc.data.conditions`); the card counts them.
    ``pii``: ``report`` | ``redact`` | ``drop`` personal information (:mod:`aigc.data.privacy`);
    default: the workspace policy's ``ingest.pii``. ``progress(stage, done, total)`` is called as
    long stages go (``"pii"``: records scanned).
    """
    # Cheap checks first: a taken name or a bad option must not cost a full read of a big file.
    dest = ws.dataset_path(name)
    if not replace and (ws.has_dataset(name) or dest.exists()):
        raise AlreadyExists(f"dataset {name!r} already exists: pass --replace to overwrite it")
    if isinstance(cond_columns, str):  # a lone "label" would otherwise be read as l, a, b, e, l
        cond_columns = (cond_columns,)
    fractions = check_fractions(split)
    _check_lengths(min_length, max_length)
    check_min_count(min_cond_count)
    if pii is not None:
        check_mode(pii)

    source = read_source(path, lines=lines, text_column=text_column, cond_columns=list(cond_columns),
                         encoding=encoding, header=header, columns=columns)
    n_read = len(source.records)
    if n_read == 0:
        raise InvalidInput(f"{source.path}: no records found (a header but no rows?): check the file")
    kept, drops = clean_records(source.records, normalize=normalize, mode=source.mode,
                                min_length=min_length, max_length=max_length)
    source.records = []  # the raw copy is no longer needed; free it before writing
    if not kept:
        raise _nothing_left(source.path, n_read, drops)
    mode, scanner, operators, policy_version = pii_settings(ws, pii)
    if source.mode == "corpus":
        text, pii_report = corpus_pass(kept[0].text, mode, scanner, operators)
        kept = [Kept(kept[0].index, text, kept[0].cond)]
    else:
        step = (lambda done, total: progress("pii", done, total)) if progress is not None else None
        kept, pii_drops, pii_report = pii_pass(kept, mode, scanner, operators, text_column=source.text_column,
                                               progress=step)
        drops = [*drops, *pii_drops]
        if not kept:
            raise _nothing_left(source.path, n_read, drops)

    rows: dict[str, list[tuple[str, dict[str, str]]]]
    if source.mode == "corpus":
        text = kept[0].text
        pieces = contiguous_split(text, fractions)
        rows = {s: [(pieces[s], {})] if pieces[s].strip() else [] for s in SPLITS}
        del text, pieces
        if fractions[1] and not rows["val"]:
            raise InvalidInput(
                f"{source.path}: the corpus is too short to split: its {len(kept[0].text)} characters leave "
                f"the val split ({fractions[1]:g}) no text: add text, or raise the val fraction with --split"
            )
        method = "contiguous"
    elif len(kept) < 2:
        raise _one_record(source.path, lines, n_read, drops)
    else:
        by_split = hash_split(kept, [k.text for k in kept], fractions)
        rows = {s: [(k.text, k.cond) for k in by_split[s]] for s in SPLITS}
        method = "hash"
    if not rows["train"]:
        raise InvalidInput(
            f"{source.path}: none of the {len(kept)} kept records landed in train with split "
            f"{','.join(f'{f:g}' for f in fractions)}: add more records or raise the train fraction"
        )

    card = build_card(
        name=name,
        source=source,
        normalize=normalize,
        texts_by_split={s: [t for t, _ in rows[s]] for s in SPLITS},
        conds_by_split={s: [c for _, c in rows[s]] for s in SPLITS},
        min_cond_count=min_cond_count,
        lengths=[len(k.text) for k in kept],
        n_read=n_read,
        drops=drops,
        split_method=method,
        fractions=fractions,
        created_at=now(),
    )
    card["pii"] = pii_report.to_card(policy_version)
    with ws.staging("dataset") as staged:
        for s in SPLITS:
            write_split(staged / f"{s}.jsonl", rows[s])
        write_json_atomic(staged / "card.json", card)
        ws.publish(staged, dest, replace=replace)
    ws.register_dataset(name, "text", card["source"], card)
    _audit(ws, name, card)
    return card


_PII_DECISIONS = {"report": "flag", "redact": "redact", "drop": "block"}  # what each --pii mode did with PII


def _audit(ws: Workspace, name: str, card: dict[str, Any]) -> None:
    """The ingest's audit row: the dataset, its records kept and dropped, its PII by type (counts,
    never values) and what the --pii mode did with it."""
    from aigc.provenance import audit

    pii, counts = card["pii"], card["counts"]
    found = ", ".join(f"{kind} {n}" for kind, n in pii["entities"].items()) or "none"
    text = (f"dataset {name}: {counts['kept']} records kept, {counts['dropped']} dropped "
            f"({pii['records_dropped']} for PII); --pii {pii['mode']}, PII found: {found}")
    decision = _PII_DECISIONS[pii["mode"]] if pii["entities"] else "allow"
    audit.record(ws, path="ingest", decision=decision, text=text, policy_version=pii["policy_version"],
                 entity_counts=pii["entities"], rule_ids=[f"ingest.pii:{pii['mode']}"])
