"""Tiny data sets written by the tests themselves (no downloads, no shared data)."""

from __future__ import annotations

import csv
import hashlib
import random
from pathlib import Path

import numpy as np


def write_fruit_csv(path: Path, n: int = 160, seed: int = 0) -> Path:
    """Two conditions whose texts never overlap: fruit=apple -> 'apple ...', fruit=kiwi -> '猕猴桃 ...'.

    Separable enough that a tiny model learns the condition in a few dozen steps.
    """
    rng = random.Random(seed)
    rows = []
    for i in range(n):
        fruit = "apple" if i % 2 == 0 else "kiwi"
        words = ["apple", "red", "sweet"] if fruit == "apple" else ["猕猴桃", "绿色", "酸甜"]
        k = rng.randint(3, 12)
        text = " ".join(rng.choice(words) for _ in range(k)) + f" {i}"
        rows.append({"text": text, "fruit": fruit, "tone": rng.choice(["a", "b"])})
    with open(path, "w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=["text", "fruit", "tone"])
        writer.writeheader()
        writer.writerows(rows)
    return path


def write_corpus(path: Path, lines: int = 400, seed: int = 0) -> Path:
    """A whole-corpus .txt of short English and Chinese lines."""
    rng = random.Random(seed)
    vocab = ["the", "shop", "sells", "green", "tea", "and", "cups", "好", "茶", "杯子", "清香"]
    text = "\n".join(" ".join(rng.choice(vocab) for _ in range(rng.randint(4, 10))) for _ in range(lines))
    path.write_text(text + "\n", encoding="utf-8")
    return path


def write_blocks_npz(path: Path, n: int = 96, size: int = 8, seed: int = 0) -> Path:
    """Two classes a model can tell apart: bright top half ('top') or bright bottom half ('bottom')."""
    import numpy as np

    rng = np.random.default_rng(seed)
    x = (rng.random((n, size, size)) * 60).astype(np.uint8)
    y = np.array(["top", "bottom"])[np.arange(n) % 2]
    x[y == "top", : size // 2] += 180
    x[y == "bottom", size // 2 :] += 180
    np.savez(path, x=x, y=y)
    return path


def fruit_gpt_workspace(root: Path, steps: int):
    """A workspace under ``root`` with the fruit dataset (condition ``fruit``) and a tiny gpt ``g``
    trained for ``steps`` steps."""
    import aigc

    ws = aigc.open_workspace(root / "ws")
    aigc.ingest(write_fruit_csv(root / "fruit.csv"), "fruit", workspace=ws, text_column="text", cond_columns=["fruit"])
    aigc.train("fruit", family="gpt", preset="tiny", name="g", workspace=ws, max_steps=steps)
    return ws


def train_served_workspace(root: Path):
    """A workspace with what the server tests serve: a tiny conditional gpt ("g"), a tiny lstm
    ("l") on the same data, and a tiny class-conditional diffusion run ("d") on 8x8 blocks."""
    import aigc

    ws = aigc.open_workspace(root / "ws")
    aigc.ingest(write_fruit_csv(root / "fruit.csv"), "fruit", workspace=ws, text_column="text", cond_columns=["fruit"])
    aigc.train("fruit", family="gpt", preset="tiny", name="g", workspace=ws, max_steps=30)
    aigc.train("fruit", family="lstm", preset="tiny", name="l", workspace=ws, max_steps=30)
    aigc.ingest(write_blocks_npz(root / "blocks.npz"), "blocks", workspace=ws)
    aigc.train("blocks", family="diffusion", preset="tiny", name="d", workspace=ws, max_steps=4, eval_every=4,
               batch_size=8)
    return ws


class LiveServer:
    """A real uvicorn server on 127.0.0.1 (a free port) in a background thread."""

    def __init__(self, ws, settings=None):
        import uvicorn

        from aigc.server import Settings, create_app

        self.app = create_app(ws, settings or Settings())
        # keep-alive 60 s, not uvicorn's 5: a test's client may idle longer than 5 s between requests on a loaded
        # machine (seen once: test_fuzz's kept-alive connection broke after request 6 with four busy processes on
        # two cores; uvicorn closing it as idle is the likely cause, not proven)
        self.server = uvicorn.Server(uvicorn.Config(self.app, host="127.0.0.1", port=0, log_level="warning",
                                                    access_log=False, timeout_graceful_shutdown=5,
                                                    timeout_keep_alive=60))
        self.thread = None
        self.url = ""

    def __enter__(self) -> "LiveServer":
        import threading
        import time

        self.thread = threading.Thread(target=self.server.run, daemon=True)
        self.thread.start()
        deadline = time.time() + 30
        while not self.server.started:
            if time.time() > deadline or not self.thread.is_alive():
                raise RuntimeError("uvicorn did not start")
            time.sleep(0.02)
        port = self.server.servers[0].sockets[0].getsockname()[1]
        self.url = f"http://127.0.0.1:{port}"
        return self

    @property
    def engine(self):
        return self.app.state.shared["engine"]

    def __exit__(self, *exc) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=30)


def never_ending_text(monkeypatch, ws, run: str = "g", delay: float = 0.01) -> None:
    """Make the engine's text runs slow and never end a sample: each token waits ``delay`` s,
    end-of-text is never drawn and no output rail holds text back or ends a sample. For tests that
    need a request still running when they act."""
    import time

    import aigc
    import aigc.sampling as sampling_module

    eos = aigc.load(run, workspace=ws).tokenizer.eos_id

    def slow_and_endless(original):
        def wrapped(logits, *args, **kw):
            time.sleep(delay)
            logits = logits.clone()
            logits[:, eos] = float("-inf")
            return original(logits, *args, **kw)

        return wrapped

    # Every token the engine draws goes through next_token_probs (sample_next_token calls it too).
    monkeypatch.setattr(sampling_module, "next_token_probs", slow_and_endless(sampling_module.next_token_probs))
    # Nor may the output rail end it: random text over thousands of tokens can spell a blocked word
    # (r4p3 reads as one), and these tests are about streams that only the client ends.
    from aigc.safety.guard import Guard

    monkeypatch.setattr(Guard, "rail", lambda self, copy_index=None: None)


def run_cli(*args):
    """``aigc ARGS...`` through Typer's runner (arguments str()-ed), exceptions not swallowed."""
    from typer.testing import CliRunner

    from aigc.cli.main import app

    return CliRunner().invoke(app, [str(a) for a in args], catch_exceptions=False)


class WebhookSink:
    """A local HTTP server that records the JSON bodies POSTed to it (``received``) and answers 200."""

    def __init__(self):
        import http.server
        import json
        import threading

        received = self.received = []

        class Hook(http.server.BaseHTTPRequestHandler):
            def do_POST(self):  # noqa: N802 - the stdlib's name
                received.append(json.loads(self.rfile.read(int(self.headers["Content-Length"]))))
                self.send_response(200)
                self.end_headers()

            def log_message(self, *args):
                pass

        self.server = http.server.HTTPServer(("127.0.0.1", 0), Hook)
        self.url = f"http://127.0.0.1:{self.server.server_port}/hook"
        self._thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> "WebhookSink":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.server.shutdown()

    def wait(self, seconds: float = 10.0) -> list:
        import time

        deadline = time.time() + seconds
        while not self.received and time.time() < deadline:
            time.sleep(0.05)
        return self.received


class StubEmbedder:
    """Unit vectors of hashed character bigrams: near-duplicate texts are near in cosine, and there is
    no model to load (the assistant's and the recommender's embedder in tests)."""

    id = "stub-bigrams"

    def embed_passages(self, texts, batch=32):
        out = np.zeros((len(texts), 384), dtype=np.float32)
        for r, text in enumerate(texts):
            for a, b in zip(text, text[1:]):
                out[r, int(hashlib.md5((a + b).encode()).hexdigest()[:6], 16) % 384] += 1.0
        return out / np.maximum(np.linalg.norm(out, axis=1, keepdims=True), 1e-12)
