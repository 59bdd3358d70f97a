"""User data is never Rich markup: names, card values, conditions, prompts, generated text, log
rows and error messages print verbatim, whatever brackets or ``:emoji:`` codes they hold."""

from __future__ import annotations

import csv

import pytest

from aigc.cli.common import markup

from helpers import run_cli as aigc

# A closing tag with no opening one (Rich raised MarkupError on it), a style, a link, an emoji code.
TAGS = ["[/x]", "[bold]x", "[link=http://example.com]y", ":smile:"]




@pytest.fixture(scope="module")
def marked(tmp_path_factory):
    """A dataset whose condition values and texts are markup look-alikes, and a tiny gpt on it."""
    root = tmp_path_factory.mktemp("markup")
    path = root / "tags.csv"
    with open(path, "w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(["text", "tag"])
        for i in range(120):
            writer.writerow([f"[/note] item {i} [bold]on sale :smile:", TAGS[i % len(TAGS)]])
    ws = root / "ws"
    r = aigc("ingest", path, "--name", "tags", "--cond-column", "tag", "-w", ws)
    assert r.exit_code == 0, r.output
    r = aigc("train", "tags", "--preset", "tiny", "--name", "t", "--max-steps", "10", "--eval-every", "10",
             "-w", ws)
    assert r.exit_code == 0, r.output
    return ws


def test_the_markup_helper_styles_its_template_and_escapes_its_values():
    text = markup("run [bold]{name}[/bold] at {n:.1f}", name="[/x] :smile: [bold]y\\", n=2.25)
    assert text.plain == "run [/x] :smile: [bold]y\\ at 2.2"
    assert any(str(span.style) == "bold" for span in text.spans)


def test_an_unknown_name_with_a_closing_tag_is_a_one_line_error():
    r = aigc("show", "[/x]")
    assert r.exit_code == 2 and "Traceback" not in r.output
    assert r.stderr.splitlines() == ["error: no dataset or run named '[/x]' (known: none yet)"]


def test_card_values_and_conditions_print_verbatim(marked):
    r = aigc("show", "tags", "-w", marked)
    assert r.exit_code == 0, r.output
    line = next(line for line in r.stdout.splitlines() if "condition tag" in line)
    for tag in TAGS:
        assert f"{tag} (" in line, line


def test_prompts_generated_text_and_condition_errors_print_verbatim(marked):
    for tag in TAGS:
        r = aigc("generate", "t", "[/note] ", "--cond", f"tag={tag}", "-m", "5", "--seed", "1", "--no-stream",
                 "--n", "2", "-w", marked)
        assert r.exit_code == 0, r.output
        assert r.stdout.splitlines()[0].startswith("[/note] ")
    r = aigc("generate", "t", "[/note] ", "-m", "5", "--seed", "1", "-w", marked)  # streamed
    assert r.exit_code == 0 and r.stdout.startswith("[/note] ")
    r = aigc("generate", "t", "--cond", "tag=[/nope]", "-w", marked)
    assert r.exit_code == 2 and "Traceback" not in r.output
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and "'[/nope]'" in lines[0], lines


def test_the_run_summary_and_progress_print_verbatim(marked):
    r = aigc("train", "tags", "--preset", "tiny", "--name", "t2", "--max-steps", "4", "--eval-every", "2",
             "-w", marked)
    assert r.exit_code == 0, r.output
    assert r.stdout.startswith("run t2 finished (max_steps): 4 steps in ")
    assert "bits/token" in r.stdout and "[bold]" not in r.stdout


def test_eval_tables_print_condition_values_verbatim(marked):
    r = aigc("eval", "t", "--prompts", "2", "--samples", "2", "-w", marked)
    assert r.exit_code == 0, r.output
    for tag in TAGS:
        assert f"tag={tag}" in r.stdout


def test_logs_of_remote_clients_print_verbatim(tmp_path):
    import aigc as api
    from aigc import logbook

    ws = api.open_workspace(tmp_path / "ws")
    for prompt, text in (("[/note] hi", "[bold]ok"), (":smile: [link=http://x]", "[/b] end")):
        logbook.record(ws, {"run": "g", "kind": "text", "endpoint": "/v1/completions", "prompt": prompt,
                            "options": {}, "output": {"texts": [text]}, "status": "ok", "latency_ms": 5.0})
    r = aigc("logs", "-w", ws.root)
    assert r.exit_code == 0, r.output
    for shown in ("[/note] hi", "[bold]ok", ":smile: [link=http://x]", "[/b] end"):
        assert shown in r.stdout


def test_our_warnings_print_as_one_line_and_others_pass_through(monkeypatch):
    import io
    import warnings

    from rich.console import Console

    from aigc.cli import common
    from aigc.models.gan import CollapseWarning

    out = io.StringIO()
    monkeypatch.setattr(common, "err", Console(file=out, width=200, color_system=None))
    passed = []

    def command() -> None:
        warnings.warn("samples of a class vary 0.10x [bold]as much[/bold]", CollapseWarning, stacklevel=2)
        warnings.warn("not ours", DeprecationWarning, stacklevel=2)

    monkeypatch.setattr(warnings, "showwarning", lambda *a, **k: passed.append(str(a[0])))
    with warnings.catch_warnings():
        warnings.simplefilter("always")
        common.guard(command)()
    assert out.getvalue() == "warning: samples of a class vary 0.10x [bold]as much[/bold]\n"  # one line, verbatim
    assert passed == ["not ours"]  # another package's warning goes to the handler that was there
