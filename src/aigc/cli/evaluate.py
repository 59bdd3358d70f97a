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
    vocoder: Annotated[str | None, typer.Option("--vocoder", help="Runs on audio clips: how mels become sound, "
                                                "'auto' (the newest vocoder run on the dataset, else Griffin-Lim), "
                                                "'griffin-lim' or a vocoder run's name [auto].",
                                                show_default=False)] = None,
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
                           **({"cond_samples": cond_samples} if cond_samples is not None else {}),
                           **({"vocoder": vocoder} if vocoder is not None else {}))
    if as_json:
        out.print_json(json.dumps(result, ensure_ascii=False))
        return
    print_eval(result)


def print_eval(r: dict) -> None:
    if r.get("modality") == "image":
        print_image_eval(r)
        return
    if r.get("modality") in ("audio", "vocoder"):
        print_audio_eval(r)
        return
    if r.get("modality") == "music":
        print_music_eval(r)
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


def print_audio_eval(r: dict) -> None:
    """An audio run's (or a vocoder's) evaluation: every set of clips scored from its sound against
    the real test clips by the dataset's audio classifier, then the run's own figures."""
    clf = r["classifier"]
    judged = ("an audio classifier of the classes" if clf["features"] == "class" else
              "a rotation classifier (the set has no classes)")
    table = Table("clips (from their sound)", "FD", "KID", "precision / recall", "accuracy", "inception score",
                  title=f"evaluation of {r['run']}: {r['n']} clips vs the {r['split']} split, judged by {judged} "
                        f"on log-mel spectrograms (test accuracy {fmt(clf['test_accuracy'])})")
    if r["modality"] == "vocoder":
        sets = {f"vocoded by {r['run']}": r["vocoder"],
                f"Griffin-Lim ({r['griffin_lim_iterations']} iterations)": r["griffin_lim"]}
    else:
        refs = r["references"]
        sets = {"generated": r, "train clips (the floor)": refs["train_vs_test"],
                f"test mels through {r['inverter']['inverter']} (resynthesis)": refs["resynthesis"],
                "Griffin-Lim of noise (the ceiling)": refs["griffin_lim_of_noise"]}
    sets["real test clips"] = {"conditional_accuracy": r.get("real_accuracy"),
                               "inception_score": r.get("real_inception_score")}
    for what, v in sets.items():
        kid = f"{fmt(v['kid_mean'], 4)} ± {fmt(v['kid_std'], 4)}" if "kid_mean" in v else "-"
        pr = f"{fmt(v['precision'])} / {fmt(v['recall'])}" if "precision" in v else "-"
        table.add_row(what, fmt(v.get("fd"), 2), kid, pr, fmt(v.get("conditional_accuracy")),
                      fmt(v.get("inception_score"), 2))
    out.print(table)
    if r["modality"] == "vocoder":
        rec, beats, yes = r["reconstruction"], r["beats_griffin_lim"], {True: "yes", False: "no", None: "-"}
        vs = Table("metric", "vocoder", "Griffin-Lim", "vocoder better",
                   title=f"{r['run']} against Griffin-Lim on {r['n']} {r['split']} clips of {r['dataset']}")
        vs.add_row("MR-STFT distance", fmt(rec["vocoder_mr_stft"]), fmt(rec["griffin_lim_mr_stft"]),
                   yes[beats["mr_stft"]])
        vs.add_row("mel L1 (dB)", fmt(rec["vocoder_mel_l1_db"], 2), fmt(rec["griffin_lim_mel_l1_db"], 2),
                   yes[rec["vocoder_mel_l1_db"] < rec["griffin_lim_mel_l1_db"]])
        vs.add_row("FD to the real clips", fmt(r["vocoder"]["fd"], 2), fmt(r["griffin_lim"]["fd"], 2),
                   yes[beats["fd"]])
        vs.add_row("classifier accuracy", fmt(r["vocoder"].get("conditional_accuracy")),
                   fmt(r["griffin_lim"].get("conditional_accuracy")), yes[beats["accuracy"]])
        out.print(vs)
        return
    own = Table("metric", "value")
    inv = r["inverter"]
    own.add_row("inverter", inv["inverter"] if inv["kind"] == inv["inverter"] else f"{inv['inverter']} ({inv['kind']})")
    own.add_row("seconds per 1,000 samples: sampling / inversion",
                f"{fmt(r['sampling_seconds_per_1000'], 1)} / {fmt(r['inversion_seconds_per_1000'], 1)}")
    out.print(own)


def print_music_eval(r: dict) -> None:
    """A symbolic-music run's evaluation as a table."""
    lk, sm, split = r["likelihood"], r["samples"], r["split"]
    vs, floor = r["distances"][f"samples_vs_{split}"], r["distances"][f"train_vs_{split}"]
    table = Table("metric", "value", "baseline / floor", title=f"evaluation of {r['run']} (music; {split} split, "
                  f"{sm['n']} samples of up to {r['sampling']['max_new_tokens']} tokens)")
    table.add_row("NLL per REMI token (nats)", fmt(lk["nll_per_token"]),
                  f"bigram {fmt(lk['bigram_nll'])}, unigram {fmt(lk['unigram_nll'])}")
    table.add_row("bits per REMI token", fmt(lk["bits_per_token"]),
                  f"bigram {fmt(lk['bigram_bits'])}, unigram {fmt(lk['unigram_bits'])}")
    table.add_row("beats the bigram baseline", "yes" if lk["beats_bigram"] else "no",
                  f"{lk['tokens']} tokens scored")
    table.add_row("samples with notes", fmt(sm["decoded_share"]), f"{sm['empty']} empty")
    table.add_row("notes per sample", fmt(sm["notes_per_sample"], 1), f"{fmt(sm['tokens_per_sample'], 1)} tokens")
    table.add_row("unknown characters", str(sm["unknown_chars"]), "")
    for key, label in (("pitch_class", "pitch classes"), ("polyphony", "polyphony")):
        table.add_row(f"{label}: TV / JS vs {split}", f"{fmt(vs[key]['tv'])} / {fmt(vs[key]['js'])}",
                      f"train vs {split}: {fmt(floor[key]['tv'])} / {fmt(floor[key]['js'])}")
    out.print(table)
    for key, title in (("pitch_class", "pitch-class histogram"),
                       ("polyphony", "polyphony histogram (notes sounding)")):
        h = r["histograms"][key]
        hist = Table("bin", "samples", split, "train", title=title)
        for i, b in enumerate(h["bins"]):
            hist.add_row(b, fmt(h["samples"][i]), fmt(h[split][i]), fmt(h["train"][i]))
        out.print(hist)
