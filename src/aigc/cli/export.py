"""`aigc export RUN --gguf f16|q8_0`: a GGUF file and an Ollama Modelfile of an adapted run."""

from __future__ import annotations

from typing import Annotated

import typer

from aigc.cli.common import WorkspaceOpt, markup, out


def export(
    run: Annotated[str, typer.Argument(help="A run adapted from a pretrained base.", show_default=False)],
    gguf: Annotated[str, typer.Option("--gguf", help="Weight type of the GGUF file: f16, q8_0 or f32.")] = "f16",
    workspace: WorkspaceOpt = None,
) -> None:
    """Write export/RUN-TYPE.gguf and export/Modelfile beside the run's merged checkpoint
    (export/ already holds the transformers checkpoint and, for LoRA, export/adapter/)."""
    from aigc import adapted, open_workspace

    path, modelfile = adapted.export_gguf(open_workspace(workspace), run, gguf)
    out.print(markup("wrote [bold]{path}[/bold] ({mb:.1f} MB) and {modelfile}\nollama: ollama create {run} -f {modelfile}",
                     path=str(path), mb=path.stat().st_size / 1e6, modelfile=str(modelfile), run=run))
