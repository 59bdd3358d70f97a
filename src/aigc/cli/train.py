"""`aigc train`: start a run, or --resume one."""

from __future__ import annotations

import math
from typing import Annotated, Any

import typer

from aigc.cli.common import ThreadsOpt, TrainProgress, WorkspaceOpt, err, fmt, markup, out, parse_pairs, threads
from aigc.errors import InvalidInput


def train(
    dataset: Annotated[str | None, typer.Argument(help="Dataset to train on.", show_default=False)] = None,
    family: Annotated[str, typer.Option("--family", "-f", help="Model family: gpt, lstm (text); gan, vae, "
                                        "vqvae, diffusion (images).")] = "gpt",
    preset: Annotated[str, typer.Option("--preset", "-p", help="tiny (tests), small (CPU minutes), base (GPU).")] = "small",
    name: Annotated[str | None, typer.Option("--name", "-n", help="Run name [default: DATASET-FAMILY-PRESET].",
                                             show_default=False)] = None,
    resume: Annotated[str | None, typer.Option("--resume", help="Continue this run from its last checkpoint.",
                                               show_default=False)] = None,
    max_steps: Annotated[int | None, typer.Option("--max-steps", help="Stop after this many steps [default: the "
                                                  "preset's; none with --time-budget].", show_default=False)] = None,
    time_budget: Annotated[str | None, typer.Option("--time-budget", help="Stop after this long, e.g. 300s, 5m "
                                                    "(without --max-steps the budget alone governs).",
                                                    show_default=False)] = None,
    batch_size: Annotated[int | None, typer.Option("--batch-size", show_default=False)] = None,
    lr: Annotated[float | None, typer.Option("--lr", help="Peak learning rate.", show_default=False)] = None,
    eval_every: Annotated[int | None, typer.Option("--eval-every", help="Steps between validations.", show_default=False)] = None,
    patience: Annotated[int | None, typer.Option("--patience", help="Early stopping: validations without improvement.",
                                                 show_default=False)] = None,
    seed: Annotated[int | None, typer.Option("--seed", show_default=False)] = None,
    tokenizer: Annotated[str | None, typer.Option("--tokenizer", help="char or bpe [default: char].", show_default=False)] = None,
    vocab_size: Annotated[int | None, typer.Option("--vocab-size", help="BPE vocabulary size.", show_default=False)] = None,
    cond_dropout: Annotated[float | None, typer.Option(
        "--cond-dropout", help="Text with conditions: share of records trained with their conditions hidden, "
        "which lets `aigc generate --guidance` steer [default: 0.1].", show_default=False)] = None,
    set_: Annotated[list[str] | None, typer.Option("--set", help="Model config override KEY=VALUE (repeatable), "
                                                   "e.g. n_layer=6.", show_default=False)] = None,
    threads_: ThreadsOpt = None,
    workspace: WorkspaceOpt = None,
) -> None:
    """Train a model on a dataset; progress shows loss, val loss, tok/s (img/s for images) and ETA.
    Ctrl-C stops cleanly; a diverging run stops with its last good weights kept."""
    import aigc

    options: dict[str, Any] = {
        k: v for k, v in dict(max_steps=max_steps, time_budget=time_budget, batch_size=batch_size, lr=lr,
                               eval_every=eval_every, patience=patience, seed=seed, tokenizer=tokenizer,
                               vocab_size=vocab_size, cond_dropout=cond_dropout).items() if v is not None
    }
    threads(threads_)
    if resume:
        if dataset or set_:
            raise InvalidInput("--resume continues a run as it was configured: drop DATASET and --set")
        label = resume
        row = aigc.resume(resume, workspace=workspace, callbacks=[TrainProgress(label)], **options)
    else:
        if not dataset:
            raise InvalidInput("missing DATASET: `aigc train DATASET` (see `aigc datasets`), or --resume RUN")
        label = name or f"{dataset}-{family}-{preset}"
        row = aigc.train(dataset, family=family, preset=preset, name=name, model=parse_pairs(set_, "--set"),
                         workspace=workspace, callbacks=[TrainProgress(label)], **options)
    s = row["summary"]
    if row["status"] == "interrupted":
        err.print(f"interrupted at step {row['step']}: resume with `aigc train --resume {row['name']}`")
        raise typer.Exit(130)
    out.print(markup("run [bold]{name}[/bold] {status} ({reason}): {steps} steps in {elapsed:.0f}s, {loss}",
                     name=row["name"], status=row["status"], reason=s["stop_reason"], steps=row["step"],
                     elapsed=s["elapsed_s"], loss=_val_summary(row["best_val_loss"], s)))


def _val_summary(best: float | None, summary: dict[str, Any]) -> str:
    """The run's best validation loss, in its data's terms where the task gives them (bits/token
    for text); an image family's own validation loss otherwise, or none (a GAN has none)."""
    if best is None or not math.isfinite(best):
        return "no validation loss (the family has none)"
    bits = summary.get("val_bits_per_token")
    return f"best val loss {fmt(best, 4)}" + (f" ({fmt(bits, 3)} bits/token)" if bits is not None else "")
