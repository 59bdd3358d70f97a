"""The `aigc` command: the happy path end to end, and every bad input as one line + exit 2."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from aigc.cli.main import app
from helpers import write_fruit_csv

runner = CliRunner()


def aigc(*args: str):
    return runner.invoke(app, [str(a) for a in args], catch_exceptions=False)


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A workspace holding the fruit dataset and a tiny gpt run, made through the CLI itself."""
    root = tmp_path_factory.mktemp("cli")
    ws = root / "ws"
    r = aigc("ingest", write_fruit_csv(root / "fruit.csv"), "--name", "fruit", "--cond-column", "fruit",
             "--cond-column", "tone", "-w", ws)
    assert r.exit_code == 0, r.output
    assert "records kept" in r.stdout
    r = aigc("train", "fruit", "--family", "gpt", "--preset", "tiny", "--name", "g", "--max-steps", "60",
             "--seed", "3", "-w", ws)
    assert r.exit_code == 0, r.output
    assert "run g finished" in r.stdout
    return ws


def one_line_error(result, pattern: str) -> None:
    assert result.exit_code == 2, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    assert "Traceback" not in result.output
    import re

    assert re.search(pattern, lines[0]), lines[0]


def test_listing_and_show(trained):
    r = aigc("datasets", "--json", "-w", trained)
    assert [d["name"] for d in json.loads(r.stdout)] == ["fruit"]
    r = aigc("runs", "--json", "-w", trained)
    runs = json.loads(r.stdout)
    assert runs[0]["name"] == "g" and runs[0]["status"] == "finished" and runs[0]["step"] == 60
    r = aigc("show", "fruit", "-w", trained)
    assert r.exit_code == 0 and "condition fruit" in r.stdout and "apple" in r.stdout
    r = aigc("show", "g", "--json", "-w", trained)
    assert json.loads(r.stdout)["config"]["model"]["n_layer"] == 2


def test_generate_streams_with_conditions_stops_and_seeds(trained):
    args = ["generate", "g", "", "--cond", "fruit=apple", "--seed", "4", "-m", "40", "-w", trained]
    a, b = aigc(*args), aigc(*args)
    assert a.exit_code == 0 and a.stdout == b.stdout and a.stdout.strip()
    r = aigc(*args, "--n", "3")
    assert r.exit_code == 0 and r.stderr.count("--- sample") == 3
    stop = a.stdout.strip()[3:5]
    r = aigc(*args, "--stop", stop)
    assert r.stdout.rstrip("\n") == a.stdout[: a.stdout.index(stop)]


def test_eval_prints_and_saves_the_table(trained):
    r = aigc("eval", "g", "--prompts", "5", "--samples", "4", "-w", trained)
    assert r.exit_code == 0, r.output
    for label in ("perplexity", "bits per character", "BLEU", "chrF", "distinct-1 / 2 / 3", "self-BLEU",
                  "memorized", "per condition"):
        assert label in r.stdout
    saved = json.loads((trained / "runs" / "g" / "eval.json").read_text())
    assert saved["likelihood"]["bits_per_char"] > 0 and "fruit=" in next(iter(saved["by_condition"]))


def test_bad_input_is_one_line_and_exit_2(trained, tmp_path):
    ws = trained
    empty = tmp_path / "empty.csv"
    empty.write_text("")
    binary = tmp_path / "blob.txt"
    binary.write_bytes(bytes(range(256)) * 20)
    latin1 = tmp_path / "latin1.txt"
    latin1.write_bytes("café\n".encode("latin-1"))
    cases = [
        (("ingest", tmp_path / "missing.csv", "--name", "x"), "no such file"),
        (("ingest", empty, "--name", "x"), "empty"),
        (("ingest", write_fruit_csv(tmp_path / "f.csv"), "--name", "x", "--text-column", "body"), "body"),
        (("ingest", binary, "--name", "x"), "binary"),
        (("ingest", latin1, "--name", "x", "--encoding", "utf-8"), "offset"),
        (("ingest", write_fruit_csv(tmp_path / "f2.csv"), "--name", "x", "--min-length", "10000"), "no records"),
        (("ingest", write_fruit_csv(tmp_path / "f3.csv"), "--name", "fruit"), "--replace"),
        (("train", "fruit", "--family", "transformerxl"), "unknown family 'transformerxl'.*gpt, lstm"),
        (("train", "fruit", "--preset", "huge"), "unknown preset 'huge'.*tiny, small, base"),
        (("train", "nosuch"), "unknown dataset 'nosuch'"),
        (("train", "fruit", "--set", "n_layer=two", "--preset", "tiny"), "n_layer must be int"),
        (("train", "fruit", "--set", "depth=2", "--preset", "tiny"), "unknown .* key.*depth"),
        (("train", "fruit", "--time-budget", "soon"), "duration"),
        (("train", "fruit", "--preset", "tiny", "--precision", "fp8"), "--precision must be one of 32-true"),
        (("generate", "nosuch"), "unknown run 'nosuch'"),
        (("generate", "g", "Zebra"), "never saw"),
        (("generate", "g", "--temperature", "-1"), "temperature"),
        (("generate", "g", "--top-p", "2"), "top_p"),
        (("generate", "g", "--cond", "fruit=pear"), "unknown value 'pear'"),
        (("generate", "g", "--cond", "fruit"), "KEY=VALUE"),
        (("show", "nothing"), "no dataset or run named 'nothing'"),
    ]
    for args, pattern in cases:
        one_line_error(aigc(*args, "-w", ws), pattern)
    # Nothing half-written: no dataset 'x', no stray staging folders, no new runs.
    assert sorted(p.name for p in (ws / "datasets").iterdir()) == ["fruit"]
    assert list((ws / "tmp").iterdir()) == []
    assert sorted(p.name for p in (ws / "runs").iterdir()) == ["g"]


def test_train_refuses_an_existing_run_name(trained):
    r = aigc("train", "fruit", "--preset", "tiny", "--name", "g", "-w", trained)
    one_line_error(r, "already exists.*--resume g")


def test_help_lists_every_command():
    r = aigc("--help")
    for cmd in ("ingest", "datasets", "runs", "show", "train", "generate", "eval", "demo", "serve", "logs", "keys"):
        assert cmd in r.stdout


def test_demo_ingests_the_bundled_sample_trains_and_evaluates(tmp_path):
    ws = tmp_path / "ws"
    r = aigc("demo", "--preset", "tiny", "--time-budget", "3s", "--adapt-budget", "0", "--no-serve", "-w", ws)
    assert r.exit_code == 0, r.output
    assert "ingested shop: 3" in r.stdout  # ~3,600 records of bilingual product copy
    for label in ("category=tea, tone=playful, lang=en", "category=skincare, tone=elegant, lang=zh",
                  "bits per character", "per condition"):
        assert label in r.stdout
    r = aigc("demo", "--preset", "tiny", "--adapt-budget", "0", "--no-serve", "-w", ws)  # reuses the finished model
    assert r.exit_code == 0 and "reusing finished run shop-gpt-tiny" in r.stdout


@pytest.mark.parametrize("family", ["vae", "gan"])
def test_image_progress_and_summary_speak_images_not_tokens(tmp_path, family):
    import re

    from helpers import write_blocks_npz

    ws = tmp_path / "ws"
    assert aigc("ingest", write_blocks_npz(tmp_path / "blocks.npz"), "--name", "blocks", "-w", ws).exit_code == 0
    r = aigc("train", "blocks", "--family", family, "--preset", "tiny", "--name", "b", "--max-steps", "4",
             "--eval-every", "2", "--batch-size", "8", "-w", ws)
    assert r.exit_code == 0, r.output
    progress = [line for line in r.stderr.splitlines() if line.startswith("b: step ")]
    assert progress and all(re.search(r" [\d,]+ img/s .*ETA ", line) for line in progress), r.stderr
    assert "tok/s" not in r.stderr and "bits/token" not in r.stdout
    # the family's own validation loss (or that it has none), never bits per token
    summary = r"(best val loss -?\d+\.\d{4}|no validation loss \(the family has none\))$"
    assert re.search(summary, r.stdout.strip()), r.stdout
