"""Batch generation from a file and sharded table synthesis on this machine (aigc.batch): the same
results whatever the shard size or worker count, resumable, and bad input refused before anything runs."""

from __future__ import annotations

import csv
import json
import sys
from pathlib import Path

import numpy as np
import pytest
from helpers import run_cli, write_fruit_csv

import aigc
from aigc import batch


def write_shop_table(path: Path, n: int = 240, seed: int = 0) -> Path:
    """A small table a copula fits in a moment: two categories and two numbers."""
    rng = np.random.default_rng(seed)
    with open(path, "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(["city", "tier", "age", "spend"])
        for _ in range(n):
            tier = rng.choice(["gold", "basic"], p=[0.3, 0.7])
            w.writerow([rng.choice(["北京", "上海", "Shenzhen"]), tier, int(rng.integers(18, 70)),
                        f"{rng.normal(120 if tier == 'gold' else 60, 15):.2f}"])
    return path


def train_batch_workspace(root: Path):
    """A tiny conditional gpt ("g") and a copula table run ("cop")."""
    ws = aigc.open_workspace(root / "ws")
    aigc.ingest(write_fruit_csv(root / "fruit.csv"), "fruit", workspace=ws, text_column="text", cond_columns=["fruit"])
    aigc.train("fruit", family="gpt", preset="tiny", name="g", workspace=ws, max_steps=20)
    aigc.ingest(write_shop_table(root / "shop.csv"), "shop", workspace=ws)
    aigc.train("shop", family="copula", preset="small", name="cop", workspace=ws)
    return ws


@pytest.fixture(scope="module")
def ws(tmp_path_factory):
    return train_batch_workspace(tmp_path_factory.mktemp("batch"))


@pytest.fixture(autouse=True)
def _module_catalog(ws, monkeypatch):
    """The CLI opens the module's workspace by path: give it the module's catalog (under
    AIGC_TEST_DB=postgresql each test would otherwise get a fresh, empty one)."""
    monkeypatch.setenv("AIGC_DB_URL", ws.db_url)


def write_requests(path: Path, count: int = 13) -> Path:
    """Objects and plain strings, conditions, n=2, a line's own seed, a stop string, a blank line."""
    lines = []
    for i in range(count):
        if i % 5 == 2:
            lines.append(json.dumps("apple red"))
        else:
            req = {"id": f"r{i}", "prompt": ["apple", "red", "猕猴桃"][i % 3], "cond": {"fruit": ["apple", "kiwi"][i % 2]},
                   "max_new_tokens": 12 + i}
            if i == 3:
                req.update(n=2, temperature=1.2)
            if i == 4:
                req.update(seed=1234, stop=" ")
            lines.append(json.dumps(req, ensure_ascii=False))
        if i == 6:
            lines.append("")
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def generate(ws, requests: Path, out: Path, *extra) -> object:
    return run_cli("generate", "g", "--file", requests, "--out", out, "-w", ws.root, "--seed", 7, *extra)


def test_results_are_the_same_whatever_the_shard_size_or_worker_count(ws, tmp_path):
    requests = write_requests(tmp_path / "requests.jsonl")
    outs = []
    for k, extra in enumerate([("--shard-size", 100), ("--shard-size", 4), ("--shard-size", 3, "--workers", 2)]):
        out = tmp_path / f"out{k}.jsonl"
        r = generate(ws, requests, out, *extra)
        assert r.exit_code == 0, r.output
        outs.append(out.read_bytes())
    assert r.stdout.startswith(f"wrote 13 results to {out}") and "2 worker(s), local" in r.stdout
    assert outs[0] == outs[1] == outs[2]

    records = [json.loads(line) for line in outs[0].decode().splitlines()]
    assert [rec["id"] for rec in records] == [f"r{i}" if i % 5 != 2 else (i + 1 if i < 7 else i + 2)
                                              for i in range(13)]  # a string line's id: its line number
    assert [rec["seed"] for rec in records] == [1234 if i == 4 else batch.task_seed(7, i) for i in range(13)]
    assert len(records[3]["outputs"]) == 2 and all(rec["aigc_label"]["Label"] == "1" for rec in records)
    assert {r for rec in records for r in rec["finish_reasons"]} <= {"stop", "length"}
    # each result is what the Python API gives for that request and seed
    gen = aigc.load("g", workspace=ws)
    assert records[3]["outputs"] == gen.generate("apple", n=2, cond={"fruit": "kiwi"}, seed=batch.task_seed(7, 3),
                                                 max_new_tokens=15, temperature=1.2)
    assert records[4]["outputs"] == gen.generate("red", cond={"fruit": "apple"}, seed=1234, max_new_tokens=16,
                                                 stop=(" ",))


def test_a_restarted_job_skips_finished_shards_and_writes_the_same_file(ws, tmp_path, monkeypatch):
    requests = write_requests(tmp_path / "requests.jsonl")
    out = tmp_path / "out.jsonl"
    assert generate(ws, requests, out, "--shard-size", 4).exit_code == 0
    first = out.read_bytes()
    parts = out.with_name("out.jsonl.parts")
    shards = sorted(parts.glob("shard-*.jsonl"))
    assert [p.name for p in shards] == [f"shard-0000{i}.jsonl" for i in range(4)]
    mtimes = {p.name: p.stat().st_mtime_ns for p in shards}
    # a job stopped after three shards: the last one never written, the output never assembled
    shards[-1].unlink()
    out.unlink()
    generated = []
    real_call = batch.ShardWorker.__call__
    monkeypatch.setattr(batch.ShardWorker, "__call__", lambda self, tasks: generated.extend(tasks) or
                        real_call(self, tasks))
    r = generate(ws, requests, out, "--shard-size", 4)
    assert r.exit_code == 0, r.output
    assert "(3 of 4 shards were already done)" in r.stdout
    assert [t["id"] for t in generated] == [14]  # only the last shard's one request (line 14) ran again
    assert out.read_bytes() == first
    assert all(parts.joinpath(name).stat().st_mtime_ns == t for name, t in mtimes.items() if name != shards[-1].name)


def test_another_job_on_the_same_out_is_refused_unless_restarted(ws, tmp_path):
    requests = write_requests(tmp_path / "requests.jsonl")
    out = tmp_path / "out.jsonl"
    assert generate(ws, requests, out, "--shard-size", 5).exit_code == 0
    requests.write_text(requests.read_text(encoding="utf-8").replace('"apple red"', '"red apple"'), encoding="utf-8")
    r = generate(ws, requests, out, "--shard-size", 5)
    assert r.exit_code == 2
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and "holds the shards of another job (the input file differs: sha256 " in lines[0]
    assert "--restart" in lines[0]
    r = run_cli("generate", "g", "--file", requests, "--out", out, "-w", ws.root, "--seed", 8, "--shard-size", 5)
    assert r.exit_code == 2 and "seed: 7 then, 8 now" in r.stderr
    r = generate(ws, requests, out, "--shard-size", 5, "--restart")
    assert r.exit_code == 0, r.output
    ids = [json.loads(line)["id"] for line in out.read_text(encoding="utf-8").splitlines()]
    assert len(ids) == 13 and "already done" not in r.stdout


@pytest.mark.parametrize("bad, message", [
    ('{"prompt": "apple"', "line 3: not JSON"),
    ('{"prompt": "apple", "temprature": 0.5}', "line 3: unknown field(s) temprature"),
    ('{"prompt": "apple", "n": 0}', "line 3: n must be a whole number >= 1, got 0"),
    ('{"prompt": "apple", "temperature": "hot"}', "line 3: temperature must be a number"),
    ('{"prompt": "apple", "top_p": 1.5}', "line 3: top_p"),
    ('{"prompt": "apple", "cond": ["fruit", "apple"]}', "line 3: cond must be an object"),
    ('{"prompt": "apple", "id": "r0"}', "line 3: id 'r0' is already the id of line 1"),
    ("[1, 2]", "line 3: a request is a JSON object or string, not list"),
])
def test_a_bad_line_is_refused_by_its_number_before_anything_runs(ws, tmp_path, bad, message):
    requests = tmp_path / "requests.jsonl"
    requests.write_text('{"id": "r0", "prompt": "apple"}\n"red"\n' + bad + '\n"apple"\n', encoding="utf-8")
    out = tmp_path / "out.jsonl"
    r = generate(ws, requests, out)
    assert r.exit_code == 2
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: requests.jsonl " + message.split(":")[0]), r.stderr
    assert message in lines[0]
    assert not out.exists() and not out.with_name("out.jsonl.parts").exists()


def test_requests_the_run_refuses_get_their_error_and_the_job_goes_on(ws, tmp_path):
    requests = tmp_path / "requests.jsonl"
    requests.write_text('"apple"\n"apple ☃"\n{"prompt": "red", "cond": {"fruit": "pear"}}\n', encoding="utf-8")
    out = tmp_path / "out.jsonl"
    r = generate(ws, requests, out)
    assert r.exit_code == 0 and "2 refused by the run" in r.stdout, r.output
    records = [json.loads(line) for line in out.read_text(encoding="utf-8").splitlines()]
    assert "outputs" in records[0] and "never saw in training" in records[1]["error"]
    assert "outputs" not in records[1] and "error" in records[2]


def test_batch_options_and_ray_need_what_they_need(ws, tmp_path, monkeypatch):
    requests = write_requests(tmp_path / "requests.jsonl", count=3)
    r = run_cli("generate", "g", "apple", "--ray", "local", "-w", ws.root)
    assert r.exit_code == 2 and "--ray applies with --file" in r.stderr
    r = run_cli("generate", "g", "--file", requests, "-w", ws.root)
    assert r.exit_code == 2 and "--file needs --out" in r.stderr
    monkeypatch.setitem(sys.modules, "ray", None)  # importing ray now fails, as where it is not installed
    r = generate(ws, requests, tmp_path / "out.jsonl", "--ray", "local")
    assert r.exit_code == 2
    assert r.stderr.strip() == "error: --ray needs Ray, which is not installed here: pip install 'aigc-studio[ray]'"


def test_a_table_run_answers_requests_with_rows(ws, tmp_path):
    requests = tmp_path / "requests.jsonl"
    requests.write_text('{"cond": {"tier": "gold"}, "n": 3}\n{"n": 2, "seed": 5}\n', encoding="utf-8")
    out = tmp_path / "rows.jsonl"
    r = run_cli("generate", "cop", "--file", requests, "--out", out, "-w", ws.root)
    assert r.exit_code == 0, r.output
    first, second = (json.loads(line) for line in out.read_text(encoding="utf-8").splitlines())
    assert len(first["outputs"]) == 3 and {row["tier"] for row in first["outputs"]} == {"gold"}
    assert second["seed"] == 5 and second["outputs"] == batch._plain_rows(aigc.load("cop", workspace=ws).sample(2, seed=5))
    r = run_cli("generate", "cop", "--file", requests, "--out", out, "-w", ws.root, "--temperature", 0.5)
    assert r.exit_code == 2 and "temperature do(es) not apply to cop, a table run" in r.stderr


def synth(ws, out: Path, *extra) -> object:
    return run_cli("synthesize", "cop", "--n", 130, "--out", out, "-w", ws.root, "--seed", 3, *extra)


def read_rows(path: Path) -> list[dict]:
    with open(path, encoding="utf-8", newline="") as f:
        return [{k: v for k, v in row.items() if k != "aigc_label"} for row in csv.DictReader(f)]


def test_sharded_synthesis_is_the_same_whatever_the_workers_and_resumes(ws, tmp_path):
    one, two = tmp_path / "one.csv", tmp_path / "two.csv"
    r = synth(ws, one, "--shard-size", 50)
    assert r.exit_code == 0 and "(3 shards; 1 worker(s), local)" in r.stdout, r.output
    assert synth(ws, two, "--shard-size", 50, "--workers", 2).exit_code == 0
    rows = read_rows(one)
    assert len(rows) == 130 and rows == read_rows(two)
    gen = aigc.load("cop", workspace=ws)
    first = batch._plain_rows(gen.sample(50, seed=batch.task_seed(3, 0)))
    assert [float(r["spend"]) for r in rows[:50]] == [r["spend"] for r in first]  # shard 0: its own seed
    assert synth(ws, tmp_path / "sixty.csv", "--shard-size", 60).exit_code == 0
    assert read_rows(tmp_path / "sixty.csv") != rows  # the rows are defined by the shards' seeds

    one.with_name("one.csv.parts").joinpath("shard-00001.jsonl").unlink()
    r = synth(ws, one, "--shard-size", 50)
    assert r.exit_code == 0 and "(3 shards, 2 already done;" in r.stdout and read_rows(one) == rows
    r = synth(ws, one, "--shard-size", 50, "--cond", "tier=gold")
    assert r.exit_code == 2 and "holds the shards of another job" in r.stderr
    r = run_cli("synthesize", "cop", "--n", 10, "--out", tmp_path / "y.csv", "-w", ws.root, "--workers", 2)
    assert r.exit_code == 2 and "--workers and --restart apply to sharded synthesis" in r.stderr


def synth_text(ws, out: Path, *extra) -> object:
    return run_cli("synthesize", "g", "--n", 30, "--out", out, "-w", ws.root, "--seed", 3, *extra)


def test_sharded_text_synthesis_is_the_same_whatever_the_workers_and_resumes(ws, tmp_path, monkeypatch):
    from aigc.synthesis import text as st

    one, two = tmp_path / "one.jsonl", tmp_path / "two.jsonl"
    r = synth_text(ws, one, "--shard-size", 8, "--json")
    assert r.exit_code == 0, r.output
    summary = json.loads(r.stdout)
    assert (summary["n"], summary["shards"], summary["workers"], summary["where"]) == (30, 4, 1, "local")
    r = synth_text(ws, two, "--shard-size", 8, "--workers", 2)
    assert r.exit_code == 0 and "(4 shards; 2 worker(s), local)" in r.stdout, r.output
    assert one.read_bytes() == two.read_bytes()

    records = [json.loads(line) for line in one.read_text(encoding="utf-8").splitlines()]
    # the conditions are drawn once with the job's seed, as the one-call path draws them
    job = st.text_job(ws, "g", 30, one, conditions=None, seed=3, max_new_tokens=None, temperature=1.0, top_p=0.95)
    assert [{"fruit": r["fruit"]} for r in records] == job.combos
    # shard 1 fills records 8..15 with its own seed, dropping what the one-call path drops
    texts, counts = st.fill_records(job.gen, job.combos[8:16], job.copy_index, job.threshold,
                                    seed=batch.task_seed(3, 1), sampling=job.sampling, what="shard 1")
    assert [r["text"] for r in records[8:16]] == texts and all(texts)
    ids = [r["aigc_label"]["ProduceID"] for r in records]
    assert ids == [f"{ids[0][:32]}-{i:06d}" for i in range(30)]  # one per record, derived from the job
    parts = one.with_name("one.jsonl.parts")
    shards = [json.loads(p.read_text(encoding="utf-8")) for p in sorted(parts.glob("shard-*.jsonl"))]
    assert summary["drawn"] == sum(s["drawn"] for s in shards) == 30 + summary["dropped_copies"] + summary["dropped_empty"]

    # a job stopped before shard 1 was written: the same command runs that shard only
    parts.joinpath("shard-00001.jsonl").unlink()
    one.unlink()
    ran = []
    real = batch.ShardWorker._records
    monkeypatch.setattr(batch.ShardWorker, "_records", lambda self, t: ran.append(t["seed"]) or real(self, t))
    r = synth_text(ws, one, "--shard-size", 8, "--json")
    assert r.exit_code == 0, r.output
    again = json.loads(r.stdout)
    assert ran == [batch.task_seed(3, 1)] and again["skipped_shards"] == 3
    assert one.read_bytes() == two.read_bytes() and again["drawn"] == summary["drawn"]
    r = synth_text(ws, one, "--shard-size", 8, "--cond", "fruit=kiwi")
    assert r.exit_code == 2 and "holds the shards of another job (conditions: {} then" in r.stderr


def test_a_text_shard_short_of_records_fails_the_job_and_writes_nothing(ws, tmp_path, monkeypatch):
    from aigc.generation import TextGenerator

    monkeypatch.setattr(TextGenerator, "generate", lambda self, prompt, n=1, **kw: [" "] * n)  # all empty
    out = tmp_path / "empty.jsonl"
    r = run_cli("synthesize", "g", "--n", 5, "--out", out, "-w", ws.root, "--shard-size", 2)
    assert r.exit_code == 2
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: run 'g', shard 0 (records 0 to 1), gave only 0 usable "
                                                   "records of 2 in 84 draws (0 copied 50+ characters of training "
                                                   "text, 84 were empty): nothing was written"), r.stderr
    assert not out.exists() and not list(out.with_name("empty.jsonl.parts").glob("shard-*"))


def test_sharded_synthesis_refuses_image_runs_and_table_constraints_on_text(ws, tmp_path, monkeypatch):
    import aigc.synthesis

    r = run_cli("synthesize", "g", "--n", 4, "--out", tmp_path / "t.jsonl", "-w", ws.root, "--shard-size", 2,
                "--constraint", "a<=b")
    assert r.exit_code == 2 and "constraints apply to table runs only" in r.stderr
    monkeypatch.setattr(aigc.synthesis, "run_modality", lambda ws, run: "image")
    with pytest.raises(aigc.errors.InvalidInput, match="makes table rows and text records, and g is an image run: synthesize it without"):
        batch.synthesize_shards(ws, "g", 4, tmp_path / "imgs", shard_size=2)
    assert not list(tmp_path.iterdir())
