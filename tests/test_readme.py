"""The README's examples work as written, in English and in Chinese.

Every ``aigc`` command in the README parses under the real CLI (the subcommand exists, each flag
exists, values have the right type); the 中文快速上手 holds the same code blocks, command for
command, as the English part above it; and the quick start runs end to end on a tiny workspace
at ``~/.aigc`` (``HOME`` points into the test's folder): CSV ingest, show, train, generate with
conditions, eval, the export snippet, images, the Python API, the OpenAI client against a live
server, keys and logs. Only what would take minutes is made cheap, by the rules in ``cheap``.
"""

from __future__ import annotations

import csv
import gzip
import io
import json
import random
import re
import shlex
import struct
import tokenize
from pathlib import Path

import pytest
from typer.main import get_command
from typer.testing import CliRunner

from aigc.cli.main import app

README = Path(__file__).resolve().parents[1] / "README.md"
FENCE = re.compile(r"^```(\w*)\n(.*?)^```", re.M | re.S)
ZH_HEADING = "## 中文快速上手"


def parts() -> tuple[str, str]:
    """(the English part: everything above the Chinese section, the Chinese section)."""
    text = README.read_text(encoding="utf-8")
    start = text.index(ZH_HEADING)
    end = text.find("\n## ", start + len(ZH_HEADING))
    return text[:start], text[start: end if end > 0 else len(text)]


def blocks(part: str, lang: str | None = None) -> list[tuple[str, str]]:
    return [(kind, body) for kind, body in FENCE.findall(part) if lang is None or kind == lang]


def shell_commands(body: str) -> list[list[str]]:
    """A bash block's commands as token lists: comments dropped, ``a; b`` split in two."""
    commands = []
    for line in body.splitlines():
        lexer = shlex.shlex(line, posix=True, punctuation_chars=";")
        lexer.whitespace_split = True
        command: list[str] = []
        for token in lexer:
            if token == ";":
                commands.append(command)
                command = []
            else:
                command.append(token)
        if command:
            commands.append(command)
    return [c for c in commands if c]


def python_tokens(body: str) -> list[str]:
    """A Python block's tokens without comments and layout: what the code does, not its notes."""
    skip = {tokenize.COMMENT, tokenize.NL, tokenize.NEWLINE, tokenize.INDENT, tokenize.DEDENT,
            tokenize.ENDMARKER}
    return [t.string for t in tokenize.generate_tokens(io.StringIO(body).readline) if t.type not in skip]


def normalized(part: str) -> list[tuple[str, list]]:
    return [(kind, shell_commands(body) if kind == "bash" else python_tokens(body)) for kind, body in blocks(part)]


def aigc_commands(part: str) -> list[list[str]]:
    return [c[1:] for _, body in blocks(part, "bash") for c in shell_commands(body) if c[0] == "aigc"]


def test_the_chinese_quick_start_has_the_same_examples_as_the_english():
    en, zh = parts()
    en_blocks, zh_blocks = normalized(en), normalized(zh)
    assert len(zh_blocks) >= 8, "make, quick start, export, images, Python API, serve, OpenAI client, curl"
    assert zh_blocks == en_blocks
    subcommands = {c[0] for c in aigc_commands(zh)}
    assert {"ingest", "show", "train", "generate", "eval", "runs", "datasets", "serve", "keys", "logs"} <= subcommands
    generate = [c for c in aigc_commands(zh) if c[0] == "generate"]
    assert any("--cond" in c for c in generate) and any("--style-from" in c for c in generate)
    assert "expanduser" in zh and "from openai import OpenAI" in zh


@pytest.mark.parametrize("part", ["en", "zh"])
def test_every_aigc_command_in_the_readme_parses_under_the_cli(part):
    cli = get_command(app)
    commands = aigc_commands(parts()[0 if part == "en" else 1])
    assert len(commands) >= 15
    for args in commands:
        command, rest, name = cli, list(args), "aigc"
        while hasattr(command, "commands") and rest and rest[0] in command.commands:
            name = rest.pop(0)
            command = command.commands[name]
        assert not hasattr(command, "commands"), f"`aigc {' '.join(args)}`: no such command"
        flags = {opt for p in command.params for opt in (*p.opts, *p.secondary_opts)}
        for token in rest:
            if token.startswith("--"):
                assert token.split("=")[0] in flags, f"`aigc {' '.join(args)}`: {token} is not an option of {name}"
        # parsing converts every value too: a wrong type or a missing argument fails here
        command.make_context(name, list(rest)).close()


# -- the quick start, run ------------------------------------------------------------------------


def cheap(args: list[str]) -> list[str] | None:
    """A README command as the test runs it, or None where it is not run here: ``serve`` blocks
    (the live server below stands in), an image eval trains a classifier (tests/test_image_runs.py
    covers it). Budgets shrink to 2 s, image samples to 4 with 2 denoising steps, text eval to 4
    prompts and samples."""
    args = list(args)
    if args[0] == "serve" or (args[0] == "eval" and "diffusion" in args[1]):
        return None
    if args[:2] == ["base", "add"] and not args[2].startswith("./my-model"):
        return None  # a GGUF file and Gemma (opt-in) are not here: tests/test_bases.py covers both ways
    if args[0] in ("export", "tune") or "--chat" in args:
        # the tiny base's tokenizer is no GGUF tokenizer, the workspace has no feedback, no chats.jsonl:
        # tests/test_adapted_runs.py and tests/test_tune.py run these
        return None
    if "--base" in args:
        args += ["--block-size", "96"]  # the tiny base's context
    if "--time-budget" in args:
        args[args.index("--time-budget") + 1] = "2s"
    if args[0] == "generate" and "diffusion" in args[1]:
        if "--n" in args:
            args[args.index("--n") + 1] = "4"
        args += ["--steps", "2"]
    if args[0] == "eval":
        args += ["--prompts", "4", "--samples", "4"]
    return args


def write_inputs(root: Path) -> None:
    """The files the README's commands name, small: reviews.csv, copy.csv, photos/, the IDX pair, shoe.png."""
    import numpy as np
    from PIL import Image

    rng = random.Random(0)
    with open(root / "reviews.csv", "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(["review", "cat", "label"])
        for i in range(160):
            cat = "手机" if i % 2 else "耳机"
            good = rng.random() < 0.5
            w.writerow([f"这款{cat}{'很好用，电池耐用' if good else '不好用，屏幕太暗'}，第{i}次购买", cat, int(good)])
    with open(root / "copy.csv", "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(["text", "category", "tone"])
        for i in range(160):
            category, tone = ("kitchen", "tea")[i % 2], ("playful", "elegant")[i // 2 % 2]
            w.writerow([f"Our new {'kettle' if category == 'kitchen' else 'green tea'} is {tone} no {i}",
                        category, tone])
    gen = np.random.default_rng(0)
    for cls in ("cup", "pot"):
        (root / "photos" / cls).mkdir(parents=True)
        for i in range(12):
            Image.fromarray(gen.integers(0, 255, (20, 20, 3), dtype=np.uint8)).save(root / "photos" / cls / f"{i}.png")
    n = 120
    images = gen.integers(0, 255, (n, 28, 28), dtype=np.uint8)
    with gzip.open(root / "train-images-idx3-ubyte.gz", "wb") as f:
        f.write(struct.pack(">IIII", 0x803, n, 28, 28) + images.tobytes())
    with gzip.open(root / "train-labels-idx1-ubyte.gz", "wb") as f:
        f.write(struct.pack(">II", 0x801, n) + (np.arange(n) % 10).astype(np.uint8).tobytes())
    Image.fromarray(images[0]).save(root / "shoe.png")
    with open(root / "customers.csv", "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(["customer_id", "age", "city", "segment", "spend", "phone"])
        for i in range(200):
            vip = rng.random() < 0.3
            w.writerow([f"C{i:05d}", rng.randint(18, 80), rng.choice(["北京", "上海", "Hangzhou"]),
                        "vip" if vip else "regular", f"{rng.uniform(10, 90) + 100 * vip:.2f}",
                        f"139{rng.randint(0, 9999):04d}{rng.randint(0, 9999):04d}"])
    for name, lo, hi in (("real", 0, 80), ("other", 80, 160), ("holdout", 160, 200)):
        with open(root / f"{name}.csv", "w", newline="", encoding="utf-8") as f:
            w = csv.writer(f)
            w.writerow(["age", "city", "segment"])
            for i in range(lo, hi):
                w.writerow([20 + i % 50, ("北京", "上海")[i % 2], ("vip", "regular")[i % 3 == 0]])
    with open(root / "calls.csv", "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(["text"])
        for i in range(40):
            w.writerow([f"客户来电，订单 {i} 未到，回电 138{i:04d}5678" if i % 2 else f"order {i} arrived on time"])


def run_python(body: str, replace: dict[str, str] | None = None) -> None:
    for old, new in (replace or {}).items():
        assert old in body, old
        body = body.replace(old, new)
    exec(compile(body, str(README), "exec"), {"__name__": "readme"})  # noqa: S102


@pytest.mark.slow
def test_the_quick_start_runs_as_written(tmp_path, monkeypatch, capsys):
    from aigc import open_workspace
    from helpers import LiveServer

    monkeypatch.delenv("AIGC_HOME", raising=False)  # the README's workspace: ~/.aigc
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.chdir(tmp_path)
    write_inputs(tmp_path)
    runner = CliRunner()
    en, _ = parts()
    bash = [shell_commands(body) for _, body in blocks(en, "bash")]
    python = [body for _, body in blocks(en, "python")]
    quick_start = next(b for b in bash if ["aigc", "show", "reviews"] in b)
    images = next(b for b in bash if any("--image-size" in c for c in b))
    serve = next(b for b in bash if any(c[:2] == ["aigc", "keys"] for c in b))
    export, api, client = (next(p for p in python if marker in p)
                           for marker in ("expanduser", "import aigc", "from openai"))

    def run_all(commands):
        for command in commands:
            if command[0] != "aigc" or (args := cheap(command[1:])) is None:
                continue
            r = runner.invoke(app, args)
            assert r.exit_code == 0, f"`aigc {' '.join(args)}`:\n{r.output}"

    run_all(quick_start)
    assert (tmp_path / "home" / ".aigc" / "runs" / "reviews-gpt-small" / "export").is_dir()
    capsys.readouterr()
    run_python(export)
    assert capsys.readouterr().out.strip(), "the exported model generated text"
    run_all(images)
    assert len(list((tmp_path / "samples").glob("*.png"))) == 5  # 4 samples and grid.png
    run_all(next(b for b in bash if any(c[:3] == ["aigc", "pii", "scan"] for c in b)))  # safety
    card = json.loads((tmp_path / "home" / ".aigc" / "datasets" / "calls" / "card.json").read_text(encoding="utf-8"))
    assert card["pii"]["entities"] == {"CN_MOBILE": 20} and card["pii"]["unredacted"] == 0
    run_all(next(b for b in bash if any(c[:2] == ["aigc", "synthesize"] for c in b)))  # tables
    assert (tmp_path / "report" / "report.html").exists() and (tmp_path / "report2" / "report.json").exists()
    run_python(api, {'time_budget="5m"': 'time_budget="2s"'})
    assert capsys.readouterr().out.strip()

    ws = open_workspace()
    assert ws.root == tmp_path / "home" / ".aigc"
    with LiveServer(ws) as live:
        # Each chunk is printed with its finish reason: a model trained for 2 s may well answer
        # with an end-of-text first (an empty reply, seen once on CI), and what this checks is that
        # the client streams our answer to its end, not what a 2 s model says.
        run_python(client, {"http://127.0.0.1:8000/v1": live.url + "/v1",
                            'print(chunk.choices[0].delta.content or "", end="")':
                            'print(repr(chunk.choices[0].delta.content), chunk.choices[0].finish_reason)'})
    streamed = capsys.readouterr().out.strip().splitlines()
    assert streamed and streamed[-1].split()[-1] in ("stop", "length"), f"the chat stream ended: {streamed[-3:]}"
    run_all(serve)
    r = runner.invoke(app, ["logs", "--run", "reviews-gpt-small", "--json"])
    assert r.exit_code == 0 and '"/v1/chat/completions"' in r.stdout

    # pretrained bases: a checkpoint folder at the README's path registers and lists
    from test_bases import save_tiny

    save_tiny(tmp_path / "my-model")
    run_all(next(b for b in bash if ["aigc", "base", "list"] in b))
    run_all(next(b for b in bash if ["aigc", "tune", "copy-lora", "--from-feedback"] in b))
    assert (tmp_path / "home" / ".aigc" / "runs" / "copy-lora" / "export" / "adapter").is_dir()
    r = runner.invoke(app, ["base", "list", "--json"])
    assert r.exit_code == 0 and any(b["name"] == "mine" and b["status"] == "ready" for b in json.loads(r.stdout))
