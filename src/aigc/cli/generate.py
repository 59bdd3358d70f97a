"""`aigc generate`: streamed text from a trained run."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import typer

from aigc.batch import SHARD_SIZE
from aigc.cli.common import (RateProgress, ThreadsOpt, WorkspaceOpt, err, on_command_line, out, parse_pairs,
                              threads)
from aigc.errors import InvalidInput


def generate(
    ctx: typer.Context,
    run: Annotated[str, typer.Argument(help="Run name (see `aigc runs`).", show_default=False)],
    prompt: Annotated[str, typer.Argument(help="Text to continue.")] = "",
    max_new_tokens: Annotated[int, typer.Option("--max-new-tokens", "-m")] = 200,
    temperature: Annotated[float, typer.Option("--temperature", "-t", help="0 = greedy.")] = 0.8,
    top_k: Annotated[int | None, typer.Option("--top-k", show_default=False)] = None,
    top_p: Annotated[float | None, typer.Option("--top-p", show_default=False)] = None,
    repetition_penalty: Annotated[float, typer.Option("--repetition-penalty")] = 1.0,
    stop: Annotated[list[str] | None, typer.Option("--stop", help="Stop at this text (repeatable; not printed).",
                                                   show_default=False)] = None,
    seed: Annotated[int | None, typer.Option("--seed", show_default=False)] = None,
    n: Annotated[int, typer.Option("--n", help="Number of samples.")] = 1,
    cond: Annotated[list[str] | None, typer.Option("--cond", help="Condition KEY=VALUE (repeatable), "
                                                   "e.g. category=tea.", show_default=False)] = None,
    stream: Annotated[bool, typer.Option("--stream/--no-stream", help="Print tokens as they arrive.")] = True,
    out_dir: Annotated[Path | None, typer.Option("--out", help="Image runs: folder for the PNGs and grid.png "
                                                 "[default: RUN-samples]; with --file: the results JSONL.",
                                                 show_default=False)] = None,
    steps: Annotated[int | None, typer.Option("--steps", help="Diffusion: denoising steps (DDIM).",
                                              show_default=False)] = None,
    guidance: Annotated[float | None, typer.Option(
        "--guidance", help="Classifier-free guidance scale: diffusion, and text runs trained with "
        "--cond-dropout (1 = off; above 1 holds the --cond harder).", show_default=False)] = None,
    style_from: Annotated[Path | None, typer.Option("--style-from", help="Image runs: keep this image's style and "
                                                    "give it the class of --cond label=CLASS.", show_default=False)] = None,
    strength: Annotated[float | None, typer.Option("--strength", help="Diffusion style transfer: how much of the "
                                                   "image to re-imagine, in (0, 1].", show_default=False)] = None,
    from_label: Annotated[str | None, typer.Option("--from-label", help="VAE style transfer: the class of the "
                                                   "--style-from image.", show_default=False)] = None,
    interpolate: Annotated[int | None, typer.Option("--interpolate", help="gan/vae: --n frames walking the latent "
                                                    "space from --seed to this seed.", show_default=False)] = None,
    rerank: Annotated[int, typer.Option(
        "--rerank", min=1, help="Text runs with conditions: draw N samples for each one printed and keep the "
        "one a classifier of the conditions (fitted on the run's train split) reads most surely as asked "
        "(1 = off; costs N times the tokens).")] = 1,
    vocoder: Annotated[str | None, typer.Option(
        "--vocoder", help="Runs on audio clips: how mel spectrograms become sound: auto (the newest vocoder run "
        "on the run's dataset, else Griffin-Lim), griffin-lim, or a vocoder run's name.",
        show_default=False)] = None,
    file: Annotated[Path | None, typer.Option(
        "--file", help="Text and table runs: a JSONL file of requests, one a line ({\"prompt\", \"cond\", \"n\", "
        "\"seed\", sampling options, \"id\"} or a string); one result line each goes to --out, in order. "
        "The options above are the defaults of each line.", show_default=False)] = None,
    shard_size: Annotated[int, typer.Option("--shard-size", min=1, help="With --file: requests per shard (each "
                                            "finished shard is kept, and a restarted job skips it).")] = SHARD_SIZE,
    workers: Annotated[int | None, typer.Option(
        "--workers", min=1, help="With --file: workers, each loading the run once and running --threads torch "
        "threads (default 1 here); default 1 worker, with --ray one per CPU of the cluster.",
        show_default=False)] = None,
    ray: Annotated[str | None, typer.Option(
        "--ray", help="With --file: run the shards on a Ray cluster: auto, HOST:PORT of its head, or local "
        "(a cluster of --workers CPUs started here).", show_default=False)] = None,
    restart: Annotated[bool, typer.Option("--restart", help="With --file: discard the finished shards under "
                                          "OUT.parts and start over.")] = False,
    threads_: ThreadsOpt = None,
    workspace: WorkspaceOpt = None,
) -> None:
    """Generate text from RUN (continuing PROMPT under conditions), images from an image run, sound
    (WAV + spectrograms) from a run on audio clips; with --file, one result per request of a file."""
    import aigc
    from aigc.image_generation import ImageGenerator

    if file is not None:
        if prompt or rerank > 1 or interpolate is not None or style_from is not None:
            raise InvalidInput("with --file the prompts come from the file: leave out PROMPT, --rerank, "
                               "--interpolate and --style-from")
        if out_dir is None:
            raise InvalidInput("--file needs --out RESULTS.jsonl: where one result line per request goes")
        given = {p: v for p, v in (("max_new_tokens", max_new_tokens), ("temperature", temperature),
                                   ("top_k", top_k), ("top_p", top_p), ("repetition_penalty", repetition_penalty),
                                   ("stop", stop), ("guidance", guidance), ("n", n), ("cond", cond))
                 if on_command_line(ctx, p)}
        if "cond" in given:
            given["cond"] = parse_pairs(cond, "--cond")
        _generate_file(run, file, out_dir, seed=seed or 0, defaults=given, shard_size=shard_size, workers=workers,
                       ray=ray, restart=restart, threads_=threads_, workspace=workspace)
        return
    for option, value in (("--workers", workers), ("--ray", ray), ("--restart", restart or None),
                          ("--shard-size", shard_size if on_command_line(ctx, "shard_size") else None)):
        if value is not None:
            raise InvalidInput(f"{option} applies with --file (batch generation from a file of requests)")
    threads(threads_)
    gen = aigc.load(run, workspace=workspace, **({"vocoder": vocoder} if vocoder is not None else {}))
    from aigc.models.vocoder import Vocoder

    if isinstance(gen, Vocoder):
        raise InvalidInput(f"{run} is a vocoder: it turns mel spectrograms into sound for runs on the same audio "
                           f"dataset; use `aigc generate AUDIO_RUN --vocoder {run}`")
    if not isinstance(gen, ImageGenerator) and _is_music_run(workspace, run):  # REMI tokens: MIDI, WAV, rolls
        _generate_music(gen, run, prompt, n=n, cond=cond, max_new_tokens=max_new_tokens, temperature=temperature,
                        top_k=top_k, top_p=top_p, repetition_penalty=repetition_penalty, seed=seed,
                        guidance=guidance, rerank=rerank, out_dir=out_dir, workspace=workspace,
                        given={p for p in ("max_new_tokens", "temperature") if on_command_line(ctx, p)})
        return
    if isinstance(gen, ImageGenerator):
        if prompt:
            raise InvalidInput(f"{run} is an image run: it takes no PROMPT (use --cond label=CLASS)")
        if interpolate is not None:
            if seed is None or style_from is not None:
                raise InvalidInput("--interpolate SEED_B walks from --seed SEED_A: give --seed (and no --style-from)")
            images = gen.interpolate(n, seed, interpolate, cond=parse_pairs(cond, "--cond"))
        elif style_from is not None:
            images = gen.style_transfer_file(style_from, parse_pairs(cond, "--cond"), n=n, source=from_label,
                                             seed=seed, steps=steps, guidance=guidance, strength=strength)
        else:
            images = gen.sample(n, cond=parse_pairs(cond, "--cond"), seed=seed, steps=steps, guidance=guidance)
        from aigc import open_workspace
        from aigc.provenance.labels import new_produce_id
        from aigc.safety.guard import guard_for

        guard = guard_for(open_workspace(workspace))
        paths = gen.save(images, out_dir or Path(f"{run}-samples"), prefix="frame" if interpolate is not None else "sample",
                         label=guard.label(new_produce_id()), mark=bool(guard.policy.labels.get("image_mark")),
                         cue=bool(guard.policy.labels.get("audio_cue", True)))
        out.print(f"wrote {len(paths)} images and {paths[0].parent / 'grid.png'}" +
                  (f", and a WAV beside each ({gen.inverter.name} of its mel spectrogram)" if gen.audio else ""))
        return
    options = dict(n=n, cond=parse_pairs(cond, "--cond"), max_new_tokens=max_new_tokens, temperature=temperature,
                   top_k=top_k, top_p=top_p, repetition_penalty=repetition_penalty, stop=tuple(stop or ()), seed=seed)
    if guidance is not None:
        options["guidance"] = guidance
    if rerank > 1 and options["cond"]:
        from aigc.rerank import RerankedGenerator, judge_for_run

        # Candidates are judged as whole texts, so nothing streams.
        gen, stream = RerankedGenerator(gen, judge_for_run(aigc.open_workspace(workspace), run), rerank), False
    if stream and n == 1:
        chunks = gen.stream(prompt, **options)
        first = next(chunks)  # validation errors surface before anything is printed
        sys.stdout.write(prompt + first.text)
        sys.stdout.flush()
        for chunk in chunks:
            sys.stdout.write(chunk.text)
            sys.stdout.flush()
        sys.stdout.write("\n")
        return
    for i, text in enumerate(gen.generate(prompt, **options)):
        if n > 1:
            err.print(f"--- sample {i + 1}/{n}", style="dim")
        out.print(prompt + text, markup=False)


def _generate_file(run: str, file: Path, results: Path, *, seed: int, defaults: dict, shard_size: int,
                   workers: int | None, ray: str | None, restart: bool, threads_: int | None, workspace) -> None:
    """Batch generation (aigc.batch): progress in prompts/s on stderr, a summary line on stdout. Each
    worker runs --threads torch threads (default 1), so outputs match whatever the worker count."""
    from aigc import open_workspace
    from aigc.batch import generate_file

    ws = open_workspace(workspace)
    summary = generate_file(ws, run, file, results, seed=seed, shard_size=shard_size, defaults=defaults,
                            workers=workers if workers is not None or ray else 1, threads=threads_ or 1, ray=ray,
                            restart=restart, progress=RateProgress("generating", "prompts"))
    line = f"wrote {summary['requests']:,} results to {summary['path']}"
    if summary["skipped_shards"]:
        line += f" ({summary['skipped_shards']} of {summary['shards']} shards were already done)"
    if summary["generated"]:
        line += (f": {summary['generated']:,} requests in {summary['seconds']:.1f} s, {summary['per_s']:,} "
                 f"prompts/s, {summary['workers']} worker(s), {summary['where']}")
    if summary["errors"]:
        line += f"; {summary['errors']} refused by the run (their lines hold \"error\")"
    out.print(line)


def _is_music_run(workspace, run: str) -> bool:
    from aigc import open_workspace
    from aigc.music_generation import is_music_run

    return is_music_run(open_workspace(workspace), run)


def _generate_music(gen, run: str, prompt: str, *, n: int, cond: list[str] | None, max_new_tokens: int,
                    temperature: float, top_k: int | None, top_p: float | None, repetition_penalty: float,
                    seed: int | None, guidance: float | None, rerank: int, out_dir: Path | None, workspace,
                    given: set[str]) -> None:
    """A run on symbolic music: MIDI, WAV and a piano roll per sample, each labelled. -m, -t and --top-p
    not given take music's defaults (aigc.music_generation: 512 new tokens, temperature 1, top-p 0.95)."""
    from aigc import open_workspace
    from aigc.music_generation import (MUSIC_MAX_NEW_TOKENS, MUSIC_TEMPERATURE, MUSIC_TOP_P, generate_music,
                                       summary_line, write_music)
    from aigc.provenance.labels import new_produce_id
    from aigc.safety.guard import guard_for

    if prompt:
        raise InvalidInput(f"{run} is a music run: it takes no PROMPT "
                           "(use --cond key=VALUE, e.g. --cond \"key=C major\")")
    if rerank > 1:
        raise InvalidInput(f"--rerank applies to text runs, and {run} is a music run: leave it out")

    ws = open_workspace(workspace)
    extra = {k: v for k, v in (("top_k", top_k), ("guidance", guidance)) if v is not None}
    decoded = generate_music(
        gen, ws.get_run(run)["path"], n=n, cond=parse_pairs(cond, "--cond"),
        max_new_tokens=max_new_tokens if "max_new_tokens" in given else MUSIC_MAX_NEW_TOKENS,
        temperature=temperature if "temperature" in given else MUSIC_TEMPERATURE,
        top_p=top_p if top_p is not None else MUSIC_TOP_P, seed=seed, repetition_penalty=repetition_penalty,
        **extra)
    guard = guard_for(ws)
    written = write_music(decoded, out_dir or Path(f"{run}-samples"), label=guard.label(new_produce_id()),
                          explicit=bool(guard.policy.labels.get("audio_cue", True)))  # the chime before each WAV
    out.print(summary_line(written))
    if written["wav_skipped"]:
        err.print(f"warning: WAV skipped ({written['wav_skipped']})")
