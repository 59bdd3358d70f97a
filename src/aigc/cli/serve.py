"""`aigc serve`, `aigc keys ...` and `aigc logs`: the server and what it records."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from aigc.cli.common import JsonOpt, WorkspaceOpt, err, guard, markup, out
from aigc.errors import InvalidInput


def serve(
    workspace: WorkspaceOpt = None,
    host: Annotated[str, typer.Option(help="Address to bind; 127.0.0.1 keeps it on this machine.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(min=0, max=65535, help="TCP port (0 picks a free one).")] = 8000,
    no_log: Annotated[bool, typer.Option("--no-log", help="Do not record generations in the catalog.")] = False,
    max_batch: Annotated[int, typer.Option(min=1, help="Sequences decoded together per text run; the largest n.")] = 16,
    max_queue: Annotated[int, typer.Option(min=0, help="Waiting requests beyond the batch; more get 429.")] = 32,
    max_tokens: Annotated[int, typer.Option(min=1, help="Cap on max_tokens per request.")] = 2048,
    memory_limit: Annotated[str, typer.Option(help="Memory for loaded runs, e.g. 8G or 512M [default: half the "
                                                   "machine's]; the least recently used idle run is unloaded "
                                                   "beyond it.", show_default=False)] = "auto",
    keep_alive: Annotated[str, typer.Option(help="How long a run stays loaded after its last request "
                                                 "(e.g. 5m; -1 = forever).")] = "5m",
    timeout: Annotated[str, typer.Option(help="Default per-request deadline (e.g. 10m).")] = "10m",
    prefix_cache_tokens: Annotated[int, typer.Option(min=0, help="Prompt-prefix tokens (chat template, system "
                                                     "prompt) cached per loaded text run for later requests; "
                                                     "0 turns it off.")] = 8192,
    cors_origin: Annotated[list[str] | None, typer.Option(help="Allow browser calls from this origin "
                                                               "(repeatable).")] = None,
    preload: Annotated[list[str] | None, typer.Option(help="Load this run before answering /health "
                                                           "(repeatable).")] = None,
    threads: Annotated[int | None, typer.Option("--threads", min=1, show_default=False,
                                                help="Torch threads per engine worker (default: all cores but one, "
                                                     "which serves HTTP).")] = None,
    cpu_bind: Annotated[bool, typer.Option("--cpu-bind/--no-cpu-bind",
                                           help="On a CPU, give the text decode loop a core of its own and "
                                                "the rest of the server the other cores.")] = True,
    decode_weights: Annotated[str | None, typer.Option(
        "--decode-weights", show_default=False,
        help="How pretrained bases hold their matrices when decoding: float (exact), bfloat16, int8, or "
             "mixed (int8 for a few rows, bfloat16 for batches) [default: mixed on a CPU, float on a GPU; "
             "$AIGC_DECODE_WEIGHTS].")] = None,
    in_process: Annotated[bool, typer.Option("--in-process", help="Run the models in the server's own process "
                                             "(by default they run in a child process, so that model and HTTP "
                                             "work never wait on each other's GIL).")] = False,
    safety: Annotated[bool, typer.Option("--safety/--no-safety",
                                         help="The workspace's safety policy on every request: input and output "
                                              "rails, redacted log, audit. Turn off only to measure its cost.")] = True,
) -> None:
    """Serve every run over HTTP: OpenAI-compatible /v1, native /api, the web studio at /."""
    from aigc import open_workspace
    from aigc.runtime import DECODE_WEIGHTS, ENV_DECODE_WEIGHTS, configure_threads
    from aigc.runtime import decode_weights as chosen_weights
    from aigc.server import Settings
    from aigc.server.run import run_server
    from aigc.training import parse_duration

    configure_threads(threads)
    if decode_weights is not None:  # the engine's child process inherits it
        if decode_weights not in DECODE_WEIGHTS:
            raise InvalidInput(f"--decode-weights must be one of {', '.join(DECODE_WEIGHTS)}, got {decode_weights!r}")
        os.environ[ENV_DECODE_WEIGHTS] = decode_weights
    chosen_weights("cpu")  # a bad $AIGC_DECODE_WEIGHTS fails here, in one line, not at a request
    ws = open_workspace(workspace)
    settings = Settings(log=not no_log, max_batch=max_batch, max_queue=max_queue, max_tokens=max_tokens,
                        memory_limit=_memory_limit(memory_limit), keep_alive=_seconds(keep_alive, parse_duration),
                        timeout=parse_duration(timeout), cors_origins=cors_origin or [], preload=preload or [],
                        threads=threads, engine_process=not in_process, cpu_bind=cpu_bind,
                        prefix_cache_tokens=prefix_cache_tokens, safety=safety)
    for name in settings.preload:
        ws.get_run(name)  # an unknown run fails here, in one line, before the server starts
    run_server(ws, settings, host, port, announce=lambda url: out.print(markup(
        "aigc-studio serving {root} at [bold]{url}[/bold]  (OpenAI-compatible API at {url}/v1; Ctrl-C stops)",
        root=ws.root, url=url)))


def _seconds(text: str, parse) -> float:
    return -1.0 if text.strip().startswith("-") else parse(text)


def _memory_limit(text: str) -> int:
    from aigc.runtime import default_memory_limit

    return default_memory_limit() if text.strip().lower() == "auto" else parse_bytes(text)


def parse_bytes(text: str) -> int:
    units = {"": 1, "B": 1, "K": 2**10, "M": 2**20, "G": 2**30, "T": 2**40}
    t = text.strip().upper().removesuffix("IB").removesuffix("B")
    number, unit = (t[:-1], t[-1]) if t and t[-1] in units else (t, "")
    try:
        value = float(number) * units[unit]
    except ValueError:
        raise InvalidInput(f"--memory-limit must be a size like 2G or 512M, got {text!r}") from None
    if value <= 0:
        raise InvalidInput(f"--memory-limit must be > 0, got {text!r}")
    return int(value)


keys_app = typer.Typer(help="API keys: when any exists, every route but /health needs one.", no_args_is_help=True)


@keys_app.command("create")
@guard
def keys_create(name: Annotated[str, typer.Option(help="A label for the key.")] = "default",
                workspace: WorkspaceOpt = None) -> None:
    """Make a key and show it once (only its hash is stored)."""
    from aigc import keys, open_workspace

    key_id, key = keys.create_key(open_workspace(workspace), name)
    out.print(key)
    err.print(f"key {key_id} ({name}) created; this is the only time it is shown. "
              "Send it as: Authorization: Bearer <key>")


@keys_app.command("list")
@guard
def keys_list(workspace: WorkspaceOpt = None, as_json: JsonOpt = False) -> None:
    """List keys (id, name, prefix, created, revoked)."""
    from aigc import keys, open_workspace

    rows = keys.list_keys(open_workspace(workspace))
    if as_json:
        out.print_json(json.dumps(rows))
        return
    table = Table("id", "name", "prefix", "created", "revoked")
    for r in rows:
        table.add_row(r["id"], r["name"], r["prefix"] + "…", r["created_at"], r["revoked_at"] or "")
    out.print(table if rows else "no keys: the server is open to anyone who can reach it")


@keys_app.command("revoke")
@guard
def keys_revoke(key_id: Annotated[str, typer.Argument(help="The key's id, from `aigc keys list`.")],
                workspace: WorkspaceOpt = None) -> None:
    """Revoke a key (a running server stops accepting it within seconds)."""
    from aigc import keys, open_workspace

    keys.revoke_key(open_workspace(workspace), key_id)
    out.print(f"revoked {key_id}")


def logs(
    workspace: WorkspaceOpt = None,
    run: Annotated[str | None, typer.Option(help="Only this run's generations.")] = None,
    limit: Annotated[int, typer.Option(min=1, help="Rows to show.")] = 20,
    export: Annotated[Path | None, typer.Option(help="Write the log (all rows) as JSON Lines to this file.")] = None,
    pairs: Annotated[bool, typer.Option("--pairs", help="With --export: prompt/chosen/rejected pairs from "
                                                        "thumbs up and down on the same prompt.")] = False,
    as_json: JsonOpt = False,
) -> None:
    """List generations the server made, with their feedback; export them as JSONL."""
    from aigc import logbook, open_workspace

    ws = open_workspace(workspace)
    if pairs and export is None:
        raise InvalidInput("--pairs needs --export FILE")
    if export is not None:
        from aigc.safety.guard import guard_for

        n = logbook.export_jsonl(ws, export, run=run, pairs=pairs, label=None if pairs else guard_for(ws).label)
        out.print(f"wrote {n} {'pairs' if pairs else 'generations'} to {export}")
        return
    rows = logbook.list_generations(ws, run, limit)
    if as_json:
        out.print_json(json.dumps(rows, ensure_ascii=False))
        return
    table = Table("id", "time", "run", "prompt", "output", "up", "down", "status", "ms")
    for r in rows:
        o = r["output"]
        text = " | ".join(o["texts"]) if "texts" in o else f"{len(o.get('images', []))} images"
        table.add_row(r["id"], r["created_at"][:19], r["run"], _clip(r["prompt"]), _clip(text), str(r["up"]),
                      str(r["down"]), r["status"], f"{r['latency_ms']:.0f}")
    out.print(table if rows else "no generations logged yet: `aigc serve` records them")


def _clip(text: str, n: int = 40) -> str:
    text = text.replace("\n", " ")
    return text if len(text) <= n else text[: n - 1] + "…"
