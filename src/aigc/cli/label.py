"""`aigc label check|add`: the AIGC labels of GB 45438-2025 in a file: read and validate them, or add them."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer

from aigc.cli.common import JsonOpt, WorkspaceOpt, err, guard, out

label_app = typer.Typer(help="AIGC labels (GB 45438): check a file's implicit and explicit labels, add them.",
                        no_args_is_help=True)

def _settings(workspace: Path | None) -> dict[str, Any]:
    """The workspace policy's ``labels`` settings (producer, explicit_text, text_position, image_mark);
    without a policy module, none: the producer stays empty, the explicit labels default on."""
    from aigc import open_workspace

    try:
        from aigc.safety.policy import workspace_policy
    except ImportError:
        err.print("warning: no safety policy module installed: labels are written without a producer code")
        return {}
    return dict(workspace_policy(open_workspace(workspace)).labels)


@label_app.command("check")
@guard
def label_check(
    file: Annotated[Path, typer.Argument(help="An image (PNG, JPEG, WebP), a sound (WAV, MP3, FLAC), JSON, JSONL, CSV "
                                         "or text file.")],
    require_explicit: Annotated[bool, typer.Option(
        "--require-explicit", help="A text file without a visible label fails.")] = False,
    as_json: JsonOpt = False,
) -> None:
    """Read and validate a file's labels. Exit 0: labelled and valid; 1: unlabelled or invalid (the
    problems are listed); 2: not a file these labels go in, or a corrupt one."""
    from aigc.provenance.annex import LABEL_VALUES
    from aigc.provenance.labels import check_file

    res = check_file(file, require_explicit=require_explicit)
    if as_json:
        out.print_json(json.dumps({"file": str(file), **res.to_dict()}, ensure_ascii=False))
    else:
        lab = res.implicit
        if lab is not None:
            kind = LABEL_VALUES.get(str(lab.get("Label")), f"Label {lab.get('Label')!r}")
            out.print(f"{file}: {'valid' if res.ok else 'INVALID'} implicit label ({kind}; producer "
                      f"{lab.get('ContentProducer') or '-'}; produce id {lab.get('ProduceID') or '-'}; "
                      f"in {', '.join(res.sources)})")
        else:
            out.print(f"{file}: {'no implicit label' if res.ok else 'NOT LABELLED'}")
        if res.explicit is not None:
            out.print(f"explicit label: {'yes' if res.explicit else 'no'}")
        for line in res.problems:
            out.print(f"problem: {line}")
        for line in res.warnings:
            out.print(f"warning: {line}")
    raise typer.Exit(0 if res.ok else 1)


@label_app.command("add")
@guard
def label_add(
    file: Annotated[Path, typer.Argument(help="An image (PNG, JPEG, WebP), a sound (WAV, MP3, FLAC), JSON, JSONL, CSV "
                                         "or text file.")],
    out_path: Annotated[Path, typer.Option("--out", "-o",
                                           help="Where to write the labelled copy (may be FILE).")],
    explicit: Annotated[bool | None, typer.Option(
        "--explicit/--no-explicit",
        help="Add the explicit label too: a text prefix/suffix, the 'AI生成' image mark, or a sound's "
             "audible cue [default: the policy's labels settings, else on].", show_default=False)] = None,
    producer: Annotated[str | None, typer.Option(
        help="The producer code [default: the workspace policy's labels.producer].",
        show_default=False)] = None,
    produce_id: Annotated[str | None, typer.Option(help="The content number [default: a new random one].",
                                                   show_default=False)] = None,
    lang: Annotated[str | None, typer.Option(
        help="Language of the visible label: zh or en [default: from the text].", show_default=False)] = None,
    position: Annotated[str | None, typer.Option(
        help="Where a text's visible label goes: prefix, suffix or both "
             "[default: the policy's labels.text_position, else prefix].",
        show_default=False)] = None,
    workspace: WorkspaceOpt = None,
) -> None:
    """Write a labelled copy of FILE: the implicit Annex E label (images: spliced in, pixels untouched;
    JSON/JSONL/CSV: an aigc_label field or column; text: an AIGC: last line) and the visible one."""
    from aigc.provenance import audio
    from aigc.provenance.images import sniff
    from aigc.provenance.labels import TEXT_SUFFIXES, implicit_label, label_file, read_label

    with open(file, "rb") as fh:  # a missing file is named before the policy is read
        head = fh.read(16)
    is_image, is_audio = sniff(head) is not None, audio.sniff(head) is not None
    settings = _settings(workspace)
    meta = implicit_label(producer=producer or settings.get("producer") or None, produce_id=produce_id)
    if explicit is None:
        key = "image_mark" if is_image else "audio_cue" if is_audio else "explicit_text"
        explicit = bool(settings.get(key, True))
    position = position or settings.get("text_position") or "prefix"
    written = label_file(file, out_path, meta, explicit=explicit, lang=lang, position=position)
    check = read_label(written)
    visible = explicit and (is_image or TEXT_SUFFIXES.get(Path(file).suffix.lower()) == "text")
    cue = explicit and is_audio
    out.print(f"labelled {written}: Label {check['Label']}, producer {check['ContentProducer'] or '-'}, "
              f"produce id {check['ProduceID']}{', with a visible label' if visible else ''}"
              f"{', with the audible cue' if cue else ''}")
    if not meta["ContentProducer"]:
        err.print("warning: no producer code: set labels.producer in the workspace policy "
                  "(`aigc policy edit`) or pass --producer; the label's ContentProducer is empty")
