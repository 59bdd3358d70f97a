"""Synthesis of tables end to end: ingest -> train -> synthesize (labelled files, conditions,
constraints, ingest back) -> report (JSON + HTML), through the API, the CLI and HTTP jobs."""

from __future__ import annotations

import csv
import json
import time
from pathlib import Path

import numpy as np
import pytest
from helpers import run_cli

import aigc
from aigc.errors import InvalidInput
from aigc.provenance.labels import check_file

EDU = {"primary": 6, "middle": 9, "high": 12, "college": 16}


def write_people(path: Path, n: int = 400, seed: int = 0) -> Path:
    """A small customer table: whole numbers, a decimal column with missing values, categories, a
    fixed pair (edu -> years), a yes/no column in Chinese, and start <= end dates."""
    rng = np.random.default_rng(seed)
    with open(path, "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(["age", "edu", "years", "spend", "city", "member", "start", "end"])
        for _ in range(n):
            edu = rng.choice(list(EDU), p=[0.2, 0.3, 0.3, 0.2])
            age = int(np.clip(rng.normal(40, 12), 18, 80))
            spend = "" if rng.random() < 0.1 else f"{max(0.0, rng.normal(50 + 10 * EDU[edu], 20)):.2f}"
            city = rng.choice(["北京", "上海", "Shenzhen"], p=[0.5, 0.3, 0.2])
            member = "是" if rng.random() < 0.3 else "否"
            start = int(rng.integers(1, 20))
            w.writerow([age, edu, EDU[edu], spend, city, member, f"2024-01-{start:02d}",
                        f"2024-02-{start + int(rng.integers(0, 8)):02d}"])
    return path


@pytest.fixture()
def people(tmp_path):
    ws = aigc.open_workspace(tmp_path / "ws")
    aigc.ingest(write_people(tmp_path / "people.csv"), "people", workspace=ws, split=(0.8, 0.1, 0.1))
    return ws


def test_people_ingest_as_a_table(people):
    ds = people.get_dataset("people")
    assert ds["modality"] == "table"


def test_copula_synthesizes_labelled_csv_and_parquet_that_ingest_back(people, tmp_path):
    aigc.train("people", family="copula", preset="small", name="cop", workspace=people)
    out = tmp_path / "s.csv"
    summary = aigc.synthesize("cop", n=300, out=out, workspace=people, seed=1, ingest="people-synth")
    assert summary["n"] == 300 and out.exists()
    assert check_file(out).ok
    rows = list(csv.DictReader(open(out, encoding="utf-8")))
    assert len(rows) == 300
    assert set(rows[0]) == {"age", "edu", "years", "spend", "city", "member", "start", "end", "aigc_label"}
    assert {r["member"] for r in rows} <= {"是", "否"}  # booleans spelled as they came
    assert all(r["age"].lstrip("-").isdigit() for r in rows)  # whole numbers stay whole
    back = people.get_dataset("people-synth")
    assert back["modality"] == "table"
    assert "aigc_label" not in [c["name"] for c in back["card"]["metadata"]["columns"]]
    pq = tmp_path / "s.parquet"
    aigc.synthesize("cop", n=50, out=pq, workspace=people)
    assert check_file(pq).ok


def test_conditions_return_only_the_asked_value_and_constraints_hold(people, tmp_path):
    aigc.train("people", family="copula", preset="small", name="cop", workspace=people)
    gen = aigc.load("cop", workspace=people)
    rows = gen.sample(200, conditions={"city": "Shenzhen"}, seed=0,
                      constraints=[{"type": "range", "column": "age", "low": 30, "high": 50},
                                   {"type": "inequality", "low": "start", "high": "end"},
                                   {"type": "fixed_combinations", "columns": ["edu", "years"]}])
    assert len(rows) == 200
    assert set(rows["city"]) == {"Shenzhen"}
    ages = rows["age"].astype(float)
    assert ages.between(30, 50).all()
    assert (rows["start"].astype(str) <= rows["end"].astype(str)).all()  # ISO dates compare as text
    assert all(EDU[e] == int(y) for e, y in zip(rows["edu"], rows["years"], strict=True))


def test_bad_synthesis_requests_are_refused_with_their_reason(people, tmp_path):
    aigc.train("people", family="copula", preset="small", name="cop", workspace=people)
    with pytest.raises(InvalidInput, match="never seen in column 'city'"):
        aigc.synthesize("cop", n=10, out=tmp_path / "x.csv", workspace=people, conditions={"city": "Paris"})
    with pytest.raises(InvalidInput, match="unknown condition column 'nope'"):
        aigc.synthesize("cop", n=10, out=tmp_path / "x.csv", workspace=people, conditions={"nope": "1"})
    with pytest.raises(InvalidInput, match="writes .csv"):
        aigc.synthesize("cop", n=10, out=tmp_path / "x.xlsx", workspace=people)
    with pytest.raises(InvalidInput, match="n must be"):
        aigc.synthesize("cop", n=0, out=tmp_path / "x.csv", workspace=people)
    assert not (tmp_path / "x.csv").exists()  # nothing half-written
    r = run_cli("synthesize", "cop", "--n", "5", "--out", tmp_path / "y.csv", "--cond", "city=Paris",
                "--workspace", people.root)
    assert r.exit_code == 2 and "never seen" in r.output and len(r.output.strip().splitlines()) == 1


@pytest.mark.parametrize("family", ["ctgan", "tvae", "tabgpt"])
def test_trained_families_synthesize_through_the_same_path(people, tmp_path, family):
    aigc.train("people", family=family, preset="tiny", name=family, workspace=people, max_steps=20)
    rows = aigc.load(family, workspace=people).sample(64, seed=0, conditions={"member": "是"})
    assert len(rows) == 64 and set(rows["member"]) == {"是"}
    again = aigc.load(family, workspace=people).sample(64, seed=0, conditions={"member": "是"})
    assert rows.equals(again)  # save -> load -> the same rows for the same seed


def test_report_of_a_run_writes_json_and_html(people, tmp_path):
    aigc.train("people", family="copula", preset="small", name="cop", workspace=people)
    result = aigc.report("cop", tmp_path / "rep", workspace=people, target="member")
    assert (tmp_path / "rep" / "report.json").exists() and (tmp_path / "rep" / "report.html").exists()
    saved = json.loads((tmp_path / "rep" / "report.json").read_text(encoding="utf-8"))
    q = saved["fidelity"]["quality"]["score"]
    assert 0.5 < q <= 1.0
    assert saved["utility"]["target"] == "member"
    assert result["privacy"]["pii_replayed"]["total"] == 0
    html = (tmp_path / "rep" / "report.html").read_text(encoding="utf-8")
    assert "<svg" in html and "北京" in html


def test_report_of_a_copied_table_shows_the_copying(people, tmp_path):
    from aigc.data.tables import read_table_split

    ds = people.dataset_path("people")
    train = read_table_split(ds, "train")
    train.to_csv(tmp_path / "real.csv", index=False)
    read_table_split(ds, "test").to_csv(tmp_path / "holdout.csv", index=False)
    r = run_cli("report", "--real", tmp_path / "real.csv", "--synth", tmp_path / "real.csv",
                "--holdout", tmp_path / "holdout.csv", "--out", tmp_path / "rep", "--json")
    assert r.exit_code == 0, r.output
    saved = json.loads((tmp_path / "rep" / "report.json").read_text(encoding="utf-8"))
    copies = saved["privacy"]["exact_copy_rate"]
    assert (copies["value"] if isinstance(copies, dict) else copies) == pytest.approx(1.0)


def test_http_synthesis_job_runs_in_the_background_and_serves_its_files(people):
    from fastapi.testclient import TestClient

    from aigc.server import Settings, create_app

    aigc.train("people", family="copula", preset="small", name="cop", workspace=people)
    with TestClient(create_app(people, Settings())) as c:
        bad = c.post("/api/synthesize", json={"run": "cop", "n": 10, "conditions": {"city": "Paris"}})
        assert bad.status_code == 400 and "never seen" in bad.json()["error"]["message"]
        assert c.post("/api/synthesize", json={"run": "nope", "n": 10}).status_code == 404
        r = c.post("/api/synthesize", json={"run": "cop", "n": 120, "format": "parquet", "target": "member"})
        assert r.status_code == 202
        job = r.json()
        deadline = time.time() + 120
        while job["status"] not in ("finished", "failed") and time.time() < deadline:
            time.sleep(0.2)
            job = c.get(job["links"]["self"]).json()
        assert job["status"] == "finished", job
        data = c.get(job["links"]["file"])
        assert data.status_code == 200 and data.content[:4] == b"PAR1"
        assert c.get(job["links"]["report"]).json()["utility"]["target"] == "member"
        assert "<svg" in c.get(job["links"]["report_html"]).text
        assert any(j["id"] == job["id"] for j in c.get("/api/synthesize").json()["data"])
        assert c.get("/api/synthesize/syn-doesnotexist").status_code == 404


def test_a_dp_run_reports_its_epsilon_and_bad_budgets_are_refused(people, tmp_path):
    row = aigc.train("people", family="tvae", preset="dp3", name="dp", workspace=people, max_steps=12,
                     batch_size=32)
    s = row["summary"]
    assert 0 < s["epsilon"] <= 3.0 and 0 < s["delta"] < 1 / 300
    rep = aigc.report("dp", workspace=people)
    assert rep["privacy"]["differential_privacy"]["epsilon"] == s["epsilon"]
    with pytest.raises(InvalidInput, match="epsilon"):
        aigc.train("people", family="tvae", preset="dp3", name="dp0", workspace=people, max_steps=12,
                   model={"epsilon": 0})
    with pytest.raises(InvalidInput, match="needs --max-steps"):
        aigc.train("people", family="tvae", preset="dp3", name="dp1", workspace=people, max_steps=0,
                   time_budget=5)
    assert not people.has_run("dp0") and not people.has_run("dp1")


def test_a_table_run_resumes_where_it_stopped(people):
    aigc.train("people", family="tvae", preset="tiny", name="tv", workspace=people, max_steps=10)
    row = aigc.resume("tv", workspace=people, max_steps=20)
    assert row["status"] == "finished" and row["step"] == 20
    assert len(aigc.load("tv", workspace=people).sample(16, seed=0)) == 16
