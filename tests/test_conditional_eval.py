"""Conditional accuracy in `aigc eval` (issue 11 item 3): does a sample generated under a condition
read as that condition to a classifier trained on the train split?"""

from __future__ import annotations

import json
import random

import pytest

from aigc.data.dataset import TextRecord
from aigc.data.tokenizers import cond_token
from aigc.evaluation import FOLDED, conditional_report, own_token_values
from helpers import run_cli as aigc, write_fruit_csv

WORDS = {"tea": ["oolong", "leaves", "steep", "茶叶", "冲泡"], "pan": ["skillet", "iron", "sear", "铁锅", "煎炒"],
         "mug": ["handle", "glaze", "coffee", "陶瓷", "杯子"]}


def records(n: int, seed: int) -> list[TextRecord]:
    """Topic shows in the words; tone ('calm' / 'loud') shows in the ending; 'mug' is rare."""
    rng = random.Random(seed)
    out = []
    for i in range(n):
        topic = "mug" if i % 20 == 0 else ("tea", "pan")[i % 2]
        tone = ("calm", "loud")[(i // 2) % 2]
        text = " ".join(rng.choice(WORDS[topic]) for _ in range(rng.randint(3, 7)))
        out.append(TextRecord(text=text + (" ..." if tone == "calm" else " !!!"), cond={"topic": topic, "tone": tone}))
    return out


class Tokens:
    """Control tokens of a run in which 'mug' was too rare for a token of its own (it went to `other`)."""

    def __init__(self, known: dict[str, list[str]]):
        self.ids = {cond_token(c, v): i for i, (c, v) in enumerate((c, v) for c in known for v in known[c])}

    def token_to_id(self, token: str):
        return self.ids.get(token)


class StubGenerator:
    """Generates ``obeyed`` columns as asked and ignores the others (always 'pan' / 'calm')."""

    def __init__(self, obeyed: set[str]):
        self.tokenizer = Tokens({"topic": ["tea", "pan"], "tone": ["calm", "loud"]})
        self.obeyed = obeyed
        self.asked: list[dict[str, str]] = []

    def knows_value(self, column, value):  # as TextGenerator: a value with a control token of its own
        return self.tokenizer.token_to_id(cond_token(column, value)) is not None

    def generate(self, prompt, *, n, cond, max_new_tokens, seed, **sampling):
        self.asked.append(dict(cond))
        rng = random.Random(seed)
        (col, value), = cond.items()
        topic = value if col == "topic" and col in self.obeyed else "pan"
        end = {"calm": " ...", "loud": " !!!"}[value if col == "tone" and col in self.obeyed else "calm"]
        return [" ".join(rng.choice(WORDS[topic]) for _ in range(5)) + end for _ in range(n)]


def test_an_obeyed_column_scores_1_and_an_ignored_one_scores_chance():
    gen = StubGenerator(obeyed={"tone"})
    report = conditional_report(gen, records(200, 0), records(60, 1), ["topic", "tone"], samples=4)
    topic, tone = report["columns"]["topic"], report["columns"]["tone"]
    assert tone["accuracy"] == 1.0 and tone["per_value"] == {"calm": 1.0, "loud": 1.0}
    assert topic["accuracy"] == 0.5 and topic["per_value"] == {"pan": 1.0, "tea": 0.0}  # always 'pan'
    assert topic["chance"] == tone["chance"] == 0.5
    assert topic["ceiling"] == tone["ceiling"] == 1.0  # the classifier reads real held-out records
    assert topic["samples"] == 8 and report["samples_per_value"] == 4 and report["heldout_records"] == 60
    # each column alone, one seed per value; 'mug' (folded into `other`) is never asked for
    assert gen.asked == [{"topic": "pan"}, {"topic": "tea"}, {"tone": "calm"}, {"tone": "loud"}]
    assert json.loads(json.dumps(report)) == report  # eval.json holds it as is


def test_values_are_capped_to_the_most_frequent_and_folded_values_left_out():
    gen = StubGenerator(obeyed={"topic"})
    train = records(200, 0)
    assert own_token_values(gen, "topic", train) == ["pan", "tea"]  # 'mug' has no token of its own
    report = conditional_report(gen, train, records(60, 1), ["topic"], samples=2, max_values=1)
    assert report["columns"]["topic"]["values"] == 1 and gen.asked == [{"topic": "pan"}]
    assert report["columns"]["topic"]["accuracy"] == 1.0


def test_a_column_with_one_own_value_is_skipped_with_a_reason():
    gen = StubGenerator(obeyed=set())
    gen.tokenizer = Tokens({"topic": ["pan"], "tone": ["calm", "loud"]})
    report = conditional_report(gen, records(100, 0), [], ["topic", "tone"], samples=2)
    assert "fewer than two values" in report["columns"]["topic"]["skipped"]
    assert report["columns"]["tone"]["ceiling"] is None  # no held-out records to measure it on
    assert FOLDED not in report["columns"]["tone"]["per_value"]




@pytest.fixture(scope="module")
def fruit_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("cond")
    ws = root / "ws"
    assert aigc("ingest", write_fruit_csv(root / "fruit.csv", n=200), "--name", "fruit", "--cond-column", "fruit",
                "--cond-column", "tone", "-w", ws).exit_code == 0
    r = aigc("train", "fruit", "--preset", "tiny", "--name", "g", "--max-steps", "200", "--seed", "3", "-w", ws)
    assert r.exit_code == 0, r.output
    return ws


def test_aigc_eval_reports_and_saves_conditional_accuracy_per_column(fruit_run):
    r = aigc("eval", "g", "--prompts", "2", "--samples", "2", "--cond-samples", "6", "-w", fruit_run)
    assert r.exit_code == 0, r.output
    assert "conditional accuracy" in r.stdout and "ceiling" in r.stdout
    saved = json.loads((fruit_run / "runs" / "g" / "eval.json").read_text())
    fruit, tone = saved["conditional"]["columns"]["fruit"], saved["conditional"]["columns"]["tone"]
    # fruit shows in every text (apple vs 猕猴桃), tone in none: the classifier's ceilings say so
    assert fruit["ceiling"] == 1.0 and tone["ceiling"] < 0.8
    assert fruit["samples"] == 12 and fruit["chance"] == 0.5
    # a tiny model learns this condition in 200 steps (at 80 it had not yet)
    assert fruit["accuracy"] >= 0.9
    assert saved["conditional"]["samples_per_value"] == 6
    row = json.loads(aigc("show", "g", "--json", "-w", fruit_run).stdout)
    assert row["summary"]["eval"]["conditional_accuracy_min"] == min(fruit["accuracy"], tone["accuracy"])


def test_aigc_eval_cond_samples_0_skips_it(fruit_run):
    r = aigc("eval", "g", "--prompts", "2", "--samples", "2", "--cond-samples", "0", "-w", fruit_run)
    assert r.exit_code == 0, r.output
    assert "conditional" not in json.loads((fruit_run / "runs" / "g" / "eval.json").read_text())
    r = aigc("eval", "g", "--cond-samples", "-1", "-w", fruit_run)
    assert r.exit_code == 2 and "Traceback" not in r.output


def test_aigc_eval_rerank_measures_the_best_of_n_draws(fruit_run, monkeypatch):
    from aigc import rerank

    calls = []
    original = rerank.generate_reranked

    def spy(gen, prompt="", **kw):
        calls.append((kw["n"], kw["candidates"]))
        return original(gen, prompt, **kw)

    monkeypatch.setattr(rerank, "generate_reranked", spy)
    r = aigc("eval", "g", "--prompts", "2", "--samples", "2", "--cond-samples", "3", "--rerank", "2", "-w", fruit_run)
    assert r.exit_code == 0, r.output
    assert "each the best of 2" in r.stdout
    saved = json.loads((fruit_run / "runs" / "g" / "eval.json").read_text())
    reranked = saved["conditional_reranked"]
    assert reranked["candidates"] == 2 and set(reranked["columns"]) == {"fruit", "tone"}
    assert reranked["columns"]["fruit"]["samples"] == 6
    assert calls == [(3, 2)] * 4  # 2 values of each of 2 columns, 3 samples each from 2 x 3 draws
    assert aigc("eval", "g", "--rerank", "0", "-w", fruit_run).exit_code == 2


def test_judge_for_run_fits_the_runs_condition_columns(fruit_run):
    from aigc import open_workspace
    from aigc.rerank import judge_for_run

    judge = judge_for_run(open_workspace(fruit_run), "g")
    assert set(judge.classifiers) == {"fruit", "tone"}
    assert judge.pick(["apple red sweet", "猕猴桃 绿色 酸甜"], {"fruit": "kiwi"}, 1) == ["猕猴桃 绿色 酸甜"]


def test_a_held_out_prompt_with_a_character_the_run_never_saw_is_left_out_and_counted(fruit_run, monkeypatch):
    from aigc import evaluation

    real = evaluation._prompt_pairs

    def with_an_unseen_character(records, limit):  # as a char-level run on open-vocabulary text meets
        return [("龘 apple", " red sweet", {"fruit": "apple", "tone": "a"}), *real(records, limit)]

    monkeypatch.setattr(evaluation, "_prompt_pairs", with_an_unseen_character)
    r = aigc("eval", "g", "--prompts", "2", "--samples", "2", "--cond-samples", "0", "-w", fruit_run)
    assert r.exit_code == 0, r.output  # before: "the prompt has 1 character(s) this run never saw", exit 2
    cont = json.loads((fruit_run / "runs" / "g" / "eval.json").read_text())["continuation"]
    assert cont["skipped_unseen_characters"] == 1 and cont["n"] == 2
