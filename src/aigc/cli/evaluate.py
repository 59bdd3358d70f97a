"""`aigc eval`: evaluate a run and print the table (saved as eval.json in the run)."""

from __future__ import annotations

import json
from typing import Annotated

import typer
from rich.table import Table

from aigc.cli.common import JsonOpt, ThreadsOpt, WorkspaceOpt, fmt, out, threads


def eval_(
    run: Annotated[str, typer.Argument(help="Run name.", show_default=False)],
    prompts: Annotated[int, typer.Option("--prompts", help="Held-out prompts for BLEU/chrF.")] = 40,
    samples: Annotated[int | None, typer.Option("--samples", help="Text: free samples for diversity and memorization "
                                                "[32]; images: samples against the test split [500].",
                                                show_default=False)] = None,
    steps: Annotated[int | None, typer.Option("--steps", help="Diffusion: denoising steps.", show_default=False)] = None,
    guidance: Annotated[float | None, typer.Option("--guidance", help="Classifier-free guidance scale: diffusion, and text "
                                                   "runs trained with condition dropout.",
                                                   show_default=False)] = None,
    cond_samples: Annotated[int | None, typer.Option("--cond-samples", min=0,
                                                     help="Text runs with conditions: samples per asked value for "
                                                     "conditional accuracy [16] (0 skips it).",
                                                     show_default=False)] = None,
    rerank: Annotated[int, typer.Option("--rerank", min=1,
                                        help="Text runs with conditions: also measure conditional accuracy "
                                        "with each sample the best of N draws, as a classifier of the "
                                        "conditions reads them (1 = off).")] = 1,
    seed: Annotated[int, typer.Option("--seed")] = 0,
    threads_: ThreadsOpt = None,
    workspace: WorkspaceOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Perplexity, bits/char, BLEU, chrF, distinct-n, self-BLEU, memorization, per condition,
    conditional accuracy."""
    import aigc

    threads(threads_)
    result = aigc.evaluate(run, workspace=workspace, n_prompts=prompts, n_samples=samples, seed=seed, steps=steps,
                           guidance=guidance, rerank=rerank,
                           **({"cond_samples": cond_samples} if cond_samples is not None else {}))
    if as_json:
        out.print_json(json.dumps(result, ensure_ascii=False))
        return
    print_eval(result)


def print_eval(r: dict) -> None:
    if r.get("modality") == "image":
        print_image_eval(r)
        return
    lk, cont, div, mem = r["likelihood"], r["continuation"], r["diversity"], r["memorization"]
    adapted = "base" in r  # adapted from a pretrained base: answers to held-out instructions
    table = Table("metric", "value", title=f"evaluation of {r['run']} ({r['split']} split)")
    table.add_row("perplexity (per response token)" if adapted else "perplexity (per token)", fmt(lk["perplexity"]))
    table.add_row("bits per character", fmt(lk["bits_per_char"]))
    what = "answers to held-out instructions" if adapted else "prompted continuations"
    table.add_row(f"BLEU ({cont['n']} {what})", fmt(cont["bleu"], 2))
    table.add_row("chrF", fmt(cont["chrf"], 2))
    table.add_row("distinct-1 / 2 / 3", " / ".join(fmt(div[f"distinct_{k}"]) for k in (1, 2, 3)))
    table.add_row(f"self-BLEU ({div['n_samples']} samples)", fmt(div["self_bleu"], 2))
    table.add_row("memorized 50-char spans", fmt(mem.get("rate")))
    if safety := r.get("safety"):  # the raw samples under the workspace policy (no rails)
        pii = safety["pii"]
        found = ", ".join(f"{t} {n}" for t, n in pii["entities"].items()) or "none"
        table.add_row("samples with personal information", f"{fmt(pii['samples_with_pii'])} ({found})")
        table.add_row("samples the policy blocks", fmt(safety["blocked_share"]))
        copy = safety["copy"]
        if "max" in copy:
            table.add_row(f"longest copied span (mean / max; share >= {copy['threshold']})",
                          f"{copy['mean']} / {copy['max']}; {fmt(copy['over_threshold'])}")
    out.print(table)
    if r.get("by_condition"):
        per = Table("condition", "test records", "bits/char", "distinct-2", "sample", title="per condition")
        for key, v in r["by_condition"].items():
            per.add_row(key, str(v["n_test"]), fmt(v["bits_per_char"]), fmt(v["distinct_2"]), v["sample"][:70])
        out.print(per)
    if r.get("conditional"):
        print_conditional(r["conditional"])
    if r.get("conditional_reranked"):
        print_conditional(r["conditional_reranked"], f"; each the best of {r['conditional_reranked']['candidates']}")
    if r.get("side_by_side"):
        pairs = Table("instruction", f"base ({r['base']})", "adapted", title="the same instructions, before and after")
        for p in r["side_by_side"]:
            pairs.add_row(p["instruction"][:60], p["base"][:120], p["adapted"][:120])
        out.print(pairs)


def print_conditional(c: dict, how: str = "") -> None:
    """The conditional-accuracy table: one row per condition column."""
    table = Table("column", "asked values", "samples", "accuracy", "ceiling", "chance", "weakest value",
                  title=f"conditional accuracy ({c['samples_per_value']} samples per value{how}; ceiling = the "
                        f"classifier on {c['heldout_records']} held-out records)")
    for col, v in c["columns"].items():
        if "accuracy" not in v:
            table.add_row(col, "-", "-", "-", "-", "-", v.get("skipped", ""))
            continue
        weakest = min(v["per_value"].items(), key=lambda kv: (kv[1], kv[0]))
        table.add_row(col, str(v["values"]), str(v["samples"]), fmt(v["accuracy"]), fmt(v["ceiling"]),
                      fmt(v["chance"]), f"{weakest[0]} {fmt(weakest[1])}")
    out.print(table)


def print_image_eval(r: dict) -> None:
    table = Table("metric", "value", title=f"evaluation of {r['run']} ({r['n']} samples vs the {r['split']} split)")
    table.add_row("FID (domain features)", fmt(r["fid"], 2))
    table.add_row("FID floor (train vs test)", fmt(r["fid_floor_train_vs_test"], 2))
    table.add_row("KID", f"{fmt(r['kid_mean'], 4)} ± {fmt(r['kid_std'], 4)}")
    table.add_row("precision / recall", f"{fmt(r['precision'])} / {fmt(r['recall'])}")
    if "conditional_accuracy" in r:
        table.add_row("conditional accuracy", fmt(r["conditional_accuracy"]))
    if r["classifier"].get("features") == "rotation":  # an unlabelled set: self-supervised features
        table.add_row("feature extractor", "rotation classifier (the set has no classes)")
        table.add_row("rotation test accuracy", fmt(r["classifier"]["test_accuracy"]))
    else:
        table.add_row("classifier test accuracy", fmt(r["classifier"]["test_accuracy"]))
    for key, label in (("psnr", "reconstruction PSNR (dB)"), ("ssim", "reconstruction SSIM"),
                       ("test_loss", "test loss"), ("codebook_usage", "codebook usage")):
        if key in r:
            table.add_row(label, fmt(r[key]))
    table.add_row("seconds per 1,000 samples", fmt(r["seconds_per_1000_samples"], 1))
    out.print(table)
