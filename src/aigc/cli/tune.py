"""`aigc tune RUN --from-feedback`: a new run that learned what users preferred (DPO or KTO)."""

from __future__ import annotations

from typing import Annotated, Any

import typer

from aigc.cli.common import ThreadsOpt, TrainProgress, WorkspaceOpt, markup, out, threads
from aigc.errors import InvalidInput


def tune(
    run: Annotated[str, typer.Argument(help="A LoRA run adapted from a pretrained base.", show_default=False)],
    from_feedback: Annotated[bool, typer.Option("--from-feedback", help="Learn from the ratings logged on RUN's "
                                                "outputs (thumbs, choices, edits).")] = False,
    pairs: Annotated[str | None, typer.Option("--pairs", help="Or from a JSONL of {prompt, chosen, rejected} "
                                              "(as `aigc logs --pairs` writes).", show_default=False)] = None,
    method: Annotated[str, typer.Option("--method", help="dpo (pairs), kto (thumbs), or auto: dpo when there "
                                        "are pairs.")] = "auto",
    beta: Annotated[float, typer.Option("--beta", help="How far the tuned run may move from RUN.")] = 0.1,
    max_drift: Annotated[float, typer.Option("--max-drift", help="Keep no weights whose perplexity on the held-out "
                                             "data RUN learned from is more than this many times that of the run "
                                             "that learned it (1.1: within 10 %); 0: no guard.")] = 1.1,
    name: Annotated[str | None, typer.Option("--name", "-n", help="New run [default: RUN-METHOD].",
                                             show_default=False)] = None,
    max_steps: Annotated[int | None, typer.Option("--max-steps", show_default=False)] = None,
    time_budget: Annotated[str | None, typer.Option("--time-budget", show_default=False)] = None,
    lr: Annotated[float | None, typer.Option("--lr", show_default=False)] = None,
    batch_size: Annotated[int | None, typer.Option("--batch-size", show_default=False)] = None,
    seed: Annotated[int | None, typer.Option("--seed", show_default=False)] = None,
    threads_: ThreadsOpt = None,
    workspace: WorkspaceOpt = None,
) -> None:
    """Tune RUN on what its users preferred: a new run that records its parent and its feedback."""
    from aigc import adapted, open_workspace
    from aigc.training import parse_duration

    if from_feedback == bool(pairs):
        raise InvalidInput("say what to learn from: --from-feedback (the ratings logged on RUN) or --pairs FILE")
    options: dict[str, Any] = {k: v for k, v in dict(max_steps=max_steps, lr=lr, batch_size=batch_size,
                                                      seed=seed).items() if v is not None}
    if time_budget is not None:
        options["time_budget"] = parse_duration(time_budget)
    threads(threads_)
    label = name or f"{run}-{method}"
    row = adapted.tune(open_workspace(workspace), run, method=method, beta=beta, name=name, pairs_file=pairs,
                       train_overrides=options, callbacks=[TrainProgress(label)], max_drift=max_drift)
    s = row["summary"]
    acc, drift = s.get("val_reward_accuracy"), s.get("val_drift")
    out.print(markup("run [bold]{name}[/bold] {status}: tuned from {run} in {steps} steps; held-out reward "
                     "accuracy {acc}{drift}", name=row["name"], status=row["status"], run=run, steps=row["step"],
                     acc="n/a" if acc is None else f"{acc:.2f}",
                     drift="" if drift is None else f"; held-out data perplexity x{drift:.3f}"
                     + (f" (stopped at the limit, x{max_drift:g})" if s.get("stop_reason") == "drift" else "")))
