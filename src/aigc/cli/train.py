"""`aigc train`: start a run, or --resume one."""

from __future__ import annotations

import math
from contextlib import contextmanager
from typing import Annotated, Any

import typer

from aigc.cli.common import ThreadsOpt, TrainProgress, WorkspaceOpt, err, fmt, markup, out, parse_pairs, threads
from aigc.errors import AigcError, InvalidInput


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
    precision: Annotated[str | None, typer.Option(
        "--precision", help="32-true, bf16-mixed or 16-mixed [default: bf16-mixed on a GPU that has it, and on a "
        "CPU with native bf16 for diffusion; else 32-true].", show_default=False)] = None,
    tokenizer: Annotated[str | None, typer.Option("--tokenizer", help="char or bpe [default: char].", show_default=False)] = None,
    vocab_size: Annotated[int | None, typer.Option("--vocab-size", help="BPE vocabulary size.", show_default=False)] = None,
    cond_dropout: Annotated[float | None, typer.Option(
        "--cond-dropout", help="Text with conditions: share of records trained with their conditions hidden, "
        "which lets `aigc generate --guidance` steer [default: 0.1].", show_default=False)] = None,
    set_: Annotated[list[str] | None, typer.Option("--set", help="Model config override KEY=VALUE (repeatable), "
                                                   "e.g. n_layer=6.", show_default=False)] = None,
    base: Annotated[str | None, typer.Option("--base", help="Adapt this pretrained base (see `aigc base list`) "
                                             "instead of training --family from scratch.", show_default=False,
                                             rich_help_panel="Pretrained base")] = None,
    method: Annotated[str, typer.Option("--method", help="With --base: lora (adapters; the base frozen) or full.",
                                        rich_help_panel="Pretrained base")] = "lora",
    lora_r: Annotated[int | None, typer.Option("--lora-r", help="LoRA rank [default: 8].", show_default=False,
                                               rich_help_panel="Pretrained base")] = None,
    lora_alpha: Annotated[int | None, typer.Option("--lora-alpha", help="LoRA alpha [default: 16].", show_default=False,
                                                   rich_help_panel="Pretrained base")] = None,
    lora_dropout: Annotated[float | None, typer.Option("--lora-dropout", help="LoRA dropout [default: 0.05].",
                                                       show_default=False, rich_help_panel="Pretrained base")] = None,
    lora_targets: Annotated[str | None, typer.Option(
        "--lora-targets", help="Modules LoRA adapts: all-linear, or names, e.g. q_proj,v_proj [default: all-linear].",
        show_default=False, rich_help_panel="Pretrained base")] = None,
    block_size: Annotated[int | None, typer.Option("--block-size", help="With --base: tokens per training block "
                                                   "[default: 256].", show_default=False,
                                                   rich_help_panel="Pretrained base")] = None,
    prompt_template: Annotated[str | None, typer.Option(
        "--prompt-template", help="With --base: the instruction made of each record's condition columns, e.g. "
        "'Write a {tone} product description for {category}' [default: names every condition column].",
        show_default=False, rich_help_panel="Pretrained base")] = None,
    prompt_column: Annotated[str | None, typer.Option(
        "--prompt-column", help="With --base: a condition column holding each record's prompt (the text is the "
        "response).", show_default=False, rich_help_panel="Pretrained base")] = None,
    response_column: Annotated[str | None, typer.Option(
        "--response-column", help="With --base: the response column (the dataset's text column).",
        show_default=False, rich_help_panel="Pretrained base")] = None,
    chat: Annotated[str | None, typer.Option(
        "--chat", help="With --base, instead of DATASET: a chat JSONL file (OpenAI messages, ShareGPT or Alpaca).",
        show_default=False, rich_help_panel="Pretrained base")] = None,
    devices: Annotated[int | None, typer.Option(
        "--devices", help="Processes on this machine, one per GPU; --batch-size is per process [default: 1; "
        "under torchrun or fabric run, theirs].", show_default=False, rich_help_panel="Several processes")] = None,
    num_nodes: Annotated[int | None, typer.Option(
        "--num-nodes", help="Machines, each running --devices processes (start it on each with torchrun or "
        "fabric run) [default: 1].", show_default=False, rich_help_panel="Several processes")] = None,
    strategy: Annotated[str | None, typer.Option(
        "--strategy", help="auto (ddp with several processes), ddp, or fsdp (CUDA only): shards the weights over "
        "the GPUs, for gpt, lstm and tabgpt; the other families use ddp [default: auto].",
        show_default=False, rich_help_panel="Several processes")] = None,
    accelerator: Annotated[str | None, typer.Option(
        "--accelerator", help="cpu or cuda [default: cuda when available].", show_default=False,
        rich_help_panel="Several processes")] = None,
    threads_: ThreadsOpt = None,
    workspace: WorkspaceOpt = None,
) -> None:
    """Train a model on a dataset; progress shows loss, val loss, tok/s (img/s for images) and ETA.
    Ctrl-C stops cleanly; a diverging run stops with its last good weights kept. --devices N trains
    on N processes (DDP); rank 0 alone prints and writes."""
    import aigc

    options: dict[str, Any] = {
        k: v for k, v in dict(max_steps=max_steps, time_budget=time_budget, batch_size=batch_size, lr=lr,
                               eval_every=eval_every, patience=patience, seed=seed, tokenizer=tokenizer,
                               vocab_size=vocab_size, cond_dropout=cond_dropout, precision=precision, devices=devices,
                               num_nodes=num_nodes, strategy=strategy, accelerator=accelerator).items()
        if v is not None
    }
    threads(threads_)
    with _rank_zero_reports():
        if resume:
            if dataset or set_:
                raise InvalidInput("--resume continues a run as it was configured: drop DATASET and --set")
            label = resume
            row = aigc.resume(resume, workspace=workspace, callbacks=_observers(label), **options)
        elif base:
            if set_:
                raise InvalidInput("--set overrides a from-scratch family's config; with --base use --lora-r, "
                                   "--lora-alpha, --lora-dropout, --lora-targets and --block-size")
            adapt = {k: v for k, v in dict(r=lora_r, alpha=lora_alpha, dropout=lora_dropout, block_size=block_size,
                                           target_modules=_targets(lora_targets)).items() if v is not None}
            label = name or f"{dataset or chat}-{base}-{method}"
            row = aigc.train(dataset, base=base, method=method, name=name, adapt=adapt,
                             prompt_template=prompt_template, prompt_column=prompt_column,
                             response_column=response_column, chat_file=chat, workspace=workspace,
                             callbacks=_observers(label), **options)
        else:
            stray = [flag for flag, v in (("--chat", chat), ("--prompt-template", prompt_template),
                                          ("--prompt-column", prompt_column), ("--lora-r", lora_r)) if v is not None]
            if stray:
                raise InvalidInput(f"{stray[0]} adapts a pretrained base: add --base NAME (see `aigc base list`)")
            if not dataset:
                raise InvalidInput("missing DATASET: `aigc train DATASET` (see `aigc datasets`), or --resume RUN")
            label = name or f"{dataset}-{family}-{preset}"
            row = aigc.train(dataset, family=family, preset=preset, name=name, model=parse_pairs(set_, "--set"),
                             workspace=workspace, callbacks=_observers(label), **options)
    if row is None:  # a rank other than 0 of a multi-process job: rank 0 reports
        return
    s = row["summary"]
    if row["status"] == "interrupted":
        err.print(f"interrupted at step {row['step']}: resume with `aigc train --resume {row['name']}`")
        raise typer.Exit(130)
    out.print(markup("run [bold]{name}[/bold] {status} ({reason}): {steps} steps in {elapsed:.0f}s, {loss}",
                     name=row["name"], status=row["status"], reason=s["stop_reason"], steps=row["step"],
                     elapsed=s["elapsed_s"], loss=_val_summary(row["best_val_loss"], s)))


@contextmanager
def _rank_zero_reports():
    """Rank 0 reports the job's outcome: when it stopped the job (bad input, divergence), the
    other ranks exit 2 without repeating its line. Their own failures they report themselves."""
    try:
        yield
    except AigcError as e:
        from aigc.distributed import JobStopped, global_rank
        from aigc.training import Diverged

        if isinstance(e, (Diverged, JobStopped)) and global_rank():
            raise typer.Exit(2) from None
        raise


def _observers(label: str) -> list:
    return [ProcessesLine(), TrainProgress(label)]


class ProcessesLine:
    """With several processes, one line before the progress: how many, and the global batch."""

    def on_start(self, s) -> None:
        if s.world_size > 1:
            err.print(f"training on {s.world_size} processes: global batch {s.global_batch} "
                      f"({s.world_size} x {s.global_batch // s.world_size} per process)")


def _targets(text: str | None) -> str | list[str] | None:
    if text is None or text.strip() == "all-linear":
        return None if text is None else "all-linear"
    names = [t.strip() for t in text.split(",") if t.strip()]
    if not names:
        raise InvalidInput(f"--lora-targets names no module: {text!r} (e.g. q_proj,v_proj or all-linear)")
    return names


def _val_summary(best: float | None, summary: dict[str, Any]) -> str:
    """The run's best validation loss, in its data's terms where the task gives them (bits/token
    for text); an image family's own validation loss otherwise, or none (a GAN has none)."""
    if best is None or not math.isfinite(best):
        return "no validation loss (the family has none)"
    bits = summary.get("val_bits_per_token")
    return f"best val loss {fmt(best, 4)}" + (f" ({fmt(bits, 3)} bits/token)" if bits is not None else "")
