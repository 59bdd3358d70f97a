"""Serving under load: `aigc serve` in its own process, N concurrent streaming clients.

Builds a workspace with a `small` gpt and a `small` lstm on the bundled shop corpus and a
`small` diffusion run (28x28), starts `aigc serve` on 127.0.0.1 with the three preloaded, then
for each concurrency (1, 4, 16, 64) runs that many clients for a fixed time: each client
streams `/v1/completions` (128 tokens, temperature 1, `stream_options.include_usage`) back to
back, and on a 429 waits the `Retry-After` it was given. Measured per level: aggregate
tokens/s, time to first token and request latency (p50/p99), 429s, 5xx, dropped streams (a
stream that ends without `[DONE]`) and the server's peak RSS (VmHWM of the server and of its
engine process, summed). The clients run in this process, on the same two cores as the server,
so they are lean: HTTP/1.1 over asyncio streams, parsing only the SSE events they need.

Side by side in the same run, the ablation that continuous batching is for: the same server
with `--max-batch 1` (one sequence at a time, as plain transformers serving does) at 16 clients.
Anchors: vLLM reports up to 24x the throughput of plain transformers serving (2023 launch post);
TGI answers 429 "overloaded" beyond 128 concurrent requests.

    python benchmarks/serve_load.py [--seconds 20] [--levels 1 4 16 64] [--threads 2]

Prints a table and writes benchmarks/results/serve_load.json. Needs nothing from ../shared.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import write_result  # noqa: E402

HERE = Path(__file__).resolve().parent
PROMPTS = ["这款", "This ", "全新", "Our ", "轻薄", "Stay ", "户外", "Soft "]


def build_workspace(root: Path) -> None:
    import numpy as np

    from importlib import resources

    import aigc

    ws = aigc.open_workspace(root)
    aigc.ingest(str(resources.files("aigc") / "resources" / "shop_copy.csv"), "shop", workspace=ws, text_column="text",
                cond_columns=["category", "tone", "lang"])
    # Throughput does not depend on how long a model trained: a few steps make real runs.
    aigc.train("shop", family="gpt", preset="small", name="shop-gpt", workspace=ws, max_steps=20, eval_every=20)
    aigc.train("shop", family="lstm", preset="small", name="shop-lstm", workspace=ws, max_steps=20, eval_every=20)
    rng = np.random.default_rng(0)
    x = (rng.random((256, 28, 28)) * 255).astype(np.uint8)
    np.savez(root / "noise.npz", x=x, y=np.array(["a", "b"])[np.arange(256) % 2])
    aigc.ingest(root / "noise.npz", "noise", workspace=ws)
    aigc.train("noise", family="diffusion", preset="small", name="noise-diffusion", workspace=ws, max_steps=5,
               eval_every=5)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def peak_rss_mb(pid: int) -> float:
    """Peak RSS (VmHWM) of ``pid`` plus that of its descendants (the engine process `aigc serve`
    starts, and multiprocessing's helper): a sum of peaks, so an upper bound of the peak total."""
    def hwm(p: int) -> float:
        try:
            with open(f"/proc/{p}/status", encoding="ascii") as f:
                for line in f:
                    if line.startswith("VmHWM:"):
                        return int(line.split()[1]) / 1024
        except OSError:
            pass
        return 0.0

    parents: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat", encoding="ascii") as f:
                    ppid = int(f.read().rsplit(")", 1)[1].split()[1])
            except (OSError, ValueError, IndexError):
                continue
            parents.setdefault(ppid, []).append(int(entry))
    total, todo = 0.0, [pid]
    while todo:
        p = todo.pop()
        total += hwm(p)
        todo.extend(parents.get(p, []))
    return total


class Server:
    def __init__(self, workspace: Path, max_batch: int, threads: int | None, safety: bool = True):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        cmd = [sys.executable, "-m", "aigc.cli.main", "serve", "--workspace", str(workspace), "--port", str(self.port),
               "--max-batch", str(max_batch), "--max-queue", "32", "--preload", "shop-gpt", "--preload", "shop-lstm",
               "--preload", "noise-diffusion"] + (["--threads", str(threads)] if threads else []) + (
                   [] if safety else ["--no-safety"])
        self.proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)

    def wait_ready(self, timeout: float = 120) -> None:
        deadline = time.time() + timeout
        while time.time() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError("server exited: " + self.proc.stderr.read())
            try:
                if httpx.get(self.url + "/health", timeout=2).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
        raise RuntimeError("server did not become ready")

    def stop(self) -> float:
        rss = peak_rss_mb(self.proc.pid)
        self.proc.terminate()
        self.proc.wait(timeout=30)
        return rss


async def _head(reader: asyncio.StreamReader) -> tuple[int, dict[str, str]]:
    lines = (await reader.readuntil(b"\r\n\r\n")).decode("latin-1").split("\r\n")
    headers = {}
    for line in lines[1:]:
        name, _, value = line.partition(":")
        if value:
            headers[name.strip().lower()] = value.strip()
    return int(lines[0].split()[1]), headers


async def _body(reader: asyncio.StreamReader, headers: dict[str, str]):
    """The response body's pieces: chunked transfer coding (a stream) or a Content-Length body."""
    if headers.get("transfer-encoding", "").lower() == "chunked":
        while size := int((await reader.readuntil(b"\r\n")).split(b";")[0], 16):
            yield (await reader.readexactly(size + 2))[:-2]
        await reader.readuntil(b"\r\n")  # the empty trailer
    elif n := int(headers.get("content-length", "0")):
        yield await reader.readexactly(n)


async def client(host: str, port: int, k: int, until: float, stats: dict) -> None:
    """One client: streamed completions back to back on one keep-alive HTTP/1.1 connection.

    It speaks HTTP over asyncio streams, not through an HTTP library: the load generator shares
    this machine's two cores with the server, and at 16 clients httpx's per-chunk work took 37 %
    of a core (this takes about 12 %), which the server then lacked. It parses only the SSE events
    it needs: the first with text (time to first token) and the usage one (tokens)."""
    body = json.dumps({"model": "shop-gpt", "prompt": PROMPTS[k % len(PROMPTS)], "max_tokens": 128,
                       "temperature": 1.0, "stream": True,
                       "stream_options": {"include_usage": True}}).encode()
    request = (f"POST /v1/completions HTTP/1.1\r\nHost: {host}:{port}\r\nContent-Type: application/json\r\n"
               f"Accept: text/event-stream\r\nContent-Length: {len(body)}\r\n\r\n").encode() + body
    reader = writer = None
    while time.perf_counter() < until:
        t0 = time.perf_counter()
        first = None
        done = False
        tokens = 0
        headers: dict[str, str] = {}
        try:
            if writer is None:
                reader, writer = await asyncio.open_connection(host, port)
            writer.write(request)
            status, headers = await _head(reader)
            if status != 200:
                async for _ in _body(reader, headers):
                    pass
                if status == 429:
                    stats["429"] += 1
                    await asyncio.sleep(float(headers.get("retry-after", "1")))
                else:
                    stats["5xx" if status >= 500 else "4xx"] += 1
                continue
            pending = b""
            async for piece in _body(reader, headers):
                pending += piece
                *events, pending = pending.split(b"\n\n")
                for event in events:
                    if not event.startswith(b"data: "):
                        continue
                    data = event[6:]
                    if data == b"[DONE]":
                        done = True
                    elif first is None or b'"choices": []' in data:
                        chunk = json.loads(data)
                        if chunk.get("usage"):
                            tokens = chunk["usage"]["completion_tokens"]
                        elif chunk["choices"] and chunk["choices"][0]["text"]:
                            first = time.perf_counter() - t0
        except (OSError, EOFError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, ValueError):
            stats["dropped"] += 1
            if writer is not None:
                writer.close()
            writer = None
            continue
        finally:
            if writer is not None and headers.get("connection", "").lower() == "close":
                writer.close()
                writer = None
        if not done:
            stats["dropped"] += 1
            continue
        end = time.perf_counter()
        if end <= until + 30:  # requests that finish after the window still count (they started inside it)
            stats["tokens"] += tokens
            stats["ttft"].append(first if first is not None else end - t0)
            stats["latency"].append(end - t0)
            stats["requests"] += 1
    if writer is not None:
        writer.close()


def pct(values: list[float], q: float) -> float | None:
    if not values:
        return None
    values = sorted(values)
    return values[min(len(values) - 1, int(round(q / 100 * (len(values) - 1))))]


async def level(url: str, concurrency: int, seconds: float) -> dict:
    stats = {"tokens": 0, "requests": 0, "ttft": [], "latency": [], "429": 0, "5xx": 0, "4xx": 0, "dropped": 0}
    host, port = url.removeprefix("http://").split(":")
    t0 = time.perf_counter()
    until = t0 + seconds
    await asyncio.gather(*(client(host, int(port), k, until, stats) for k in range(concurrency)))
    wall = time.perf_counter() - t0
    return {"clients": concurrency, "seconds": round(wall, 1), "requests": stats["requests"],
            "tokens_per_s": round(stats["tokens"] / wall, 1),
            "ttft_p50_ms": _ms(pct(stats["ttft"], 50)), "ttft_p99_ms": _ms(pct(stats["ttft"], 99)),
            "latency_p50_ms": _ms(pct(stats["latency"], 50)), "latency_p99_ms": _ms(pct(stats["latency"], 99)),
            "http_429": stats["429"], "http_5xx": stats["5xx"], "http_4xx": stats["4xx"], "dropped": stats["dropped"]}


def _ms(v: float | None) -> float | None:
    return None if v is None else round(v * 1000, 1)


def run_levels(workspace: Path, max_batch: int, levels: list[int], seconds: float, threads: int | None,
               safety: bool = True) -> tuple[list, float]:
    server = Server(workspace, max_batch, threads, safety)
    try:
        server.wait_ready()
        asyncio.run(level(server.url, 1, 2.0))  # warm-up
        rows = []
        for c in levels:
            rows.append(asyncio.run(level(server.url, c, seconds)))
            print(f"  max_batch={max_batch} clients={c}: {rows[-1]['tokens_per_s']} tok/s", file=sys.stderr)
    finally:
        rss = server.stop()
    return rows, rss


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--seconds", type=float, default=20)
    ap.add_argument("--levels", type=int, nargs="+", default=[1, 4, 16, 64])
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--safety-overhead", action="store_true",
                    help="Measure the safety layer's cost instead: tokens/s with rails on and off, alternated.")
    ap.add_argument("--repeats", type=int, default=3, help="With --safety-overhead: on/off pairs per level.")
    ap.add_argument("--classifier", default=None,
                    help="With --safety-overhead: the workspace policy turns on this moderation classifier "
                         "(builtin:NAME), which the input rail then runs on every prompt; written as "
                         "serve_safety_<NAME>.json")
    args = ap.parse_args()
    os.environ.setdefault("AIGC_THREADS", str(args.threads or ""))
    if args.safety_overhead:
        return safety_overhead(args)
    with tempfile.TemporaryDirectory(prefix="aigc-serve-bench-") as tmp:
        ws = Path(tmp) / "ws"
        build_workspace(ws)
        rows, rss = run_levels(ws, 16, args.levels, args.seconds, args.threads)
        ablation, rss_b1 = run_levels(ws, 1, [16], args.seconds, args.threads)
    by = {r["clients"]: r for r in rows}
    print(f"aigc serve, small gpt (shop corpus), 128-token streamed completions, {args.seconds:.0f} s per level, "
          f"{platform.machine()} {os.cpu_count()} CPUs")
    print(f"{'batch':>5} {'clients':>7} {'req':>5} {'tok/s':>8} {'ttft p50':>9} {'ttft p99':>9} {'lat p50':>8} "
          f"{'lat p99':>8} {'429':>5} {'5xx':>4} {'drop':>4}")
    for b, r in [(16, r) for r in rows] + [(1, r) for r in ablation]:
        print(f"{b:>5} {r['clients']:>7} {r['requests']:>5} {r['tokens_per_s']:>8} {r['ttft_p50_ms']!s:>9} "
              f"{r['ttft_p99_ms']!s:>9} {r['latency_p50_ms']!s:>8} {r['latency_p99_ms']!s:>8} {r['http_429']:>5} "
              f"{r['http_5xx']:>4} {r['dropped']:>4}")
    ratio16 = by[16]["tokens_per_s"] / by[1]["tokens_per_s"] if 1 in by and 16 in by else None
    vs_b1 = by[16]["tokens_per_s"] / ablation[0]["tokens_per_s"] if 16 in by else None
    print(f"tokens/s at 16 clients / at 1 client: {ratio16:.2f}x (target >= 6x)" if ratio16 else "")
    print(f"continuous batching (max_batch 16) / one at a time (max_batch 1), 16 clients: {vs_b1:.2f}x" if vs_b1 else "")
    print(f"server peak RSS with two text runs and one image run loaded: {rss:.0f} MB (target < 1024 MB)")
    out = {"benchmark": "serve_load", "seconds_per_level": args.seconds, "levels": rows, "ablation_max_batch_1": ablation,
           "ratio_16_vs_1": None if ratio16 is None else round(ratio16, 2),
           "batching_vs_one_at_a_time_16_clients": None if vs_b1 is None else round(vs_b1, 2),
           "server_peak_rss_mb": round(rss, 1), "server_peak_rss_mb_max_batch_1": round(rss_b1, 1),
           "machine_detail": {"cpus": os.cpu_count(), "threads": args.threads}}
    out.pop("benchmark")
    path = write_result("serve_load", out)
    print(f"wrote {path.relative_to(HERE.parent)}")


def safety_overhead(args) -> None:
    """Tokens/s of the same load with the safety layer on (input and output rails, redacted log,
    audit rows) and off (`aigc serve --no-safety`), alternated on/off so drift hits both alike."""
    levels = [c for c in args.levels if c in (1, 16)] or [1, 16]
    runs: dict[str, dict[int, list]] = {"on": {c: [] for c in levels}, "off": {c: [] for c in levels}}
    with tempfile.TemporaryDirectory(prefix="aigc-serve-bench-") as tmp:
        ws = Path(tmp) / "ws"
        build_workspace(ws)
        if args.classifier:  # the workspace's own policy: the default one with the classifier on
            (ws / "policy.yaml").write_text(f"extends: default\nmoderation: {{classifier: '{args.classifier}'}}\n",
                                            encoding="utf-8")
        for _ in range(args.repeats):
            for mode in ("on", "off"):
                rows, _ = run_levels(ws, 16, levels, args.seconds, args.threads, safety=mode == "on")
                for r in rows:
                    runs[mode][r["clients"]].append(r)
    print(f"aigc serve, small gpt, 128-token streamed completions, {args.seconds:.0f} s per level, "
          f"{args.repeats} on/off pairs, {platform.machine()} {os.cpu_count()} CPUs"
          + (f", moderation classifier {args.classifier} on prompts" if args.classifier else ""))
    print(f"{'clients':>7} {'tok/s on':>9} {'tok/s off':>10} {'on/off':>7} {'ttft p50 on':>12} {'ttft p50 off':>13}  "
          f"target on/off >= 0.90")
    table = []
    for c in levels:
        on = [r["tokens_per_s"] for r in runs["on"][c]]
        off = [r["tokens_per_s"] for r in runs["off"][c]]
        ratio = (sum(on) / len(on)) / (sum(off) / len(off))
        row = {"clients": c, "tokens_per_s_on": on, "tokens_per_s_off": off, "ratio_on_off": round(ratio, 3),
               "ttft_p50_ms_on": [r["ttft_p50_ms"] for r in runs["on"][c]],
               "ttft_p50_ms_off": [r["ttft_p50_ms"] for r in runs["off"][c]],
               "http_5xx": sum(r["http_5xx"] for m in runs for r in runs[m][c]), "target_met": ratio >= 0.90}
        table.append(row)
        print(f"{c:>7} {sum(on) / len(on):>9.0f} {sum(off) / len(off):>10.0f} {ratio:>7.3f} "
              f"{row['ttft_p50_ms_on']!s:>12} {row['ttft_p50_ms_off']!s:>13}  {'met' if row['target_met'] else 'NOT met'}")
    name = "serve_safety" + (f"_{Path(args.classifier.removeprefix('builtin:')).stem}" if args.classifier else "")
    path = write_result(name, {"seconds_per_level": args.seconds, "repeats": args.repeats, "levels": table,
                               "classifier": args.classifier,
                                         "machine_detail": {"cpus": os.cpu_count(), "threads": args.threads}})
    print(f"wrote {path.relative_to(HERE.parent)}")


if __name__ == "__main__":
    main()
