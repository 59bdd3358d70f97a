"""`aigc export RUN --gguf f16|q8_0 [--lint]`: a GGUF file and an Ollama Modelfile of an adapted run;
`aigc export --check FOLDER`: the export lint (what vLLM, TGI, llama.cpp and Ollama read) on any folder."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from aigc.cli.common import WorkspaceOpt, markup, out
from aigc.errors import InvalidInput

_STYLE = {"error": "red", "warning": "yellow", "ok": "green", "skipped": "dim"}


def export(
    run: Annotated[str | None, typer.Argument(help="A run (adapted from a pretrained base, for a GGUF).",
                                              show_default=False)] = None,
    gguf: Annotated[str, typer.Option("--gguf", help="Weight type of the GGUF file: f16, q8_0 or f32.")] = "f16",
    lint: Annotated[bool, typer.Option("--lint", help="Then check the run's export/ with the export lint; exit 1 "
                                                      "when it finds an error.")] = False,
    check: Annotated[Path | None, typer.Option("--check", metavar="FOLDER", show_default=False,
                                               help="Only lint FOLDER (any transformers checkpoint folder); "
                                                    "writes nothing.")] = None,
    load: Annotated[bool, typer.Option("--load/--no-load", help="With --lint or --check: end by loading the "
                                                                "weights through transformers (the whole "
                                                                "model in memory); --no-load checks the "
                                                                "files alone.")] = True,
    workspace: WorkspaceOpt = None,
) -> None:
    """Write export/RUN-TYPE.gguf and export/Modelfile beside the run's merged checkpoint
    (export/ already holds the transformers checkpoint and, for LoRA, export/adapter/).

    --lint and --check: one row per check of what vLLM, TGI, llama.cpp and Ollama read; exit 1 on an error.

    A run trained from scratch gets no GGUF: `aigc export RUN --lint` lints its export/ only."""
    from aigc.pretrained.export_lint import has_errors
    from aigc.pretrained.export_lint import lint as run_lint

    if check is not None:
        if run is not None:
            raise InvalidInput("give a RUN or --check FOLDER, not both")
        folder = check
    elif run is None:
        raise InvalidInput("missing RUN: `aigc export RUN` (see `aigc runs`), or `aigc export --check FOLDER`")
    else:
        folder = _export_run(run, gguf, lint, workspace)
        if not lint:
            return
    findings = run_lint(folder, load_model=load)
    table = Table("check", "result", "reads it", "finding", title=f"export lint: {folder}")
    for f in findings:
        table.add_row(f.check, markup(f"[{_STYLE[f.level]}]{{level}}[/{_STYLE[f.level]}]", level=f.level),
                      f.readers, f.message)
    out.print(table)
    counts = {level: sum(f.level == level for f in findings) for level in _STYLE}
    out.print(", ".join(f"{n} {level}" for level, n in counts.items()))
    if has_errors(findings):
        raise typer.Exit(1)


def _export_run(run: str, gguf: str, lint: bool, workspace) -> Path:
    """Write the GGUF and Modelfile of an adapted run; the run's export/ folder."""
    from aigc import adapted, open_workspace

    ws = open_workspace(workspace)
    run_dir = Path(ws.get_run(run)["path"])
    if lint and not adapted.is_adapted(adapted.read_spec(run_dir)):
        out.print(markup("run [bold]{run}[/bold] was trained from scratch: no GGUF, linting its export/", run=run))
        return run_dir / "export"
    path, modelfile = adapted.export_gguf(ws, run, gguf)
    out.print(markup("wrote [bold]{path}[/bold] ({mb:.1f} MB) and {modelfile}\nollama: ollama create {run} -f {modelfile}",
                     path=str(path), mb=path.stat().st_size / 1e6, modelfile=str(modelfile), run=run))
    return run_dir / "export"
