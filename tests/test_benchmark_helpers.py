"""The benchmark helpers no figure run checks: the feedback benchmark's ratings, verdict and rounds
arithmetic, and the CPU a result records."""

import importlib
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[1] / "benchmarks"


@pytest.fixture(scope="module")
def fb():
    sys.path.insert(0, str(BENCH))
    try:
        yield importlib.import_module("feedback")
    finally:
        sys.path.remove(str(BENCH))


def test_pairs_of_pairs_liked_with_not_liked_distinct_and_capped(fb):
    rater = fb.RATERS["en_short"]
    texts = ["tiny one", "tiny one ", "x" * 80, "y" * 90, "", "short too"]
    pairs = fb.pairs_of(rater, texts, cap=3)
    assert len(pairs) == 3
    assert all(rater.likes(a) and not rater.likes(b) for a, b in pairs)
    assert len({a for a, _ in pairs[:2]}) == 2  # the first ones share no text
    assert fb.pairs_of(rater, ["x" * 80, "y" * 80], cap=4) == []  # nothing liked: no rating
    assert not rater.likes("   ")  # a blank output pleases no rater


def test_raters_rules(fb):
    assert fb.RATERS["en_material"].likes("A mug of glazed stoneware.")
    assert not fb.RATERS["en_material"].likes("A mug that keeps tea warm.")
    assert fb.RATERS["zh_material"].likes("纯棉面料，柔软亲肤")
    assert not fb.RATERS["zh_material"].likes("用起来不麻烦")  # 麻 alone is not linen
    assert not fb.RATERS["zh_no_exclaim"].likes("好用！")


def test_parse_args_rounds(fb):
    args = fb.parse_args(["--rounds", "4", "--round-budgets", "50,200", "--tune-steps", "60"])
    assert args.round_budgets == [50, 200]
    assert fb.round_steps(args) == 15  # the single tunings' steps, shared by the rounds
    assert "rounds" in args.methods and fb.round_budgets(args) == [50, 200]
    assert fb.round_budgets(fb.parse_args(["--methods", "rerank"])) == []


@pytest.mark.parametrize("argv, message", [
    (["--round-budgets", "4", "--rounds", "3"], "at least 2 ratings a round"),
    (["--round-budgets", "many"], "--round-budgets takes whole numbers"),
    (["--rounds", "0"], "--rounds must be >= 1"),
])
def test_parse_args_refuses(fb, capsys, argv, message):
    with pytest.raises(SystemExit) as e:
        fb.parse_args(argv)
    assert e.value.code == 2 and message in capsys.readouterr().err


def test_expected_time_grows_with_rounds(fb):
    langs = {"en": [fb.RATERS["en_material"]]}
    without = fb.expected_seconds(fb.parse_args(["--methods", "rerank"]), langs)[0]
    with_rounds = fb.expected_seconds(fb.parse_args(["--methods", "rerank", "rounds"]), langs)[0]
    more = fb.expected_seconds(fb.parse_args(["--methods", "rerank", "rounds", "--round-budgets", "50", "200"]),
                               langs)[0]
    assert without < with_rounds < more


def _report(rounds=None, rerank=0.5, dpo=None):
    entry = {"budget": 200, "ratings": 200, "rerank_share": rerank}
    if dpo:
        entry["dpo"] = dpo
    return {"base_share": 0.4, "budgets": [entry], **({"rounds": rounds} if rounds is not None else {})}


def test_target_counts_rounds_within_the_perplexity_tolerance(fb):
    assert not fb.target(_report())["met"]
    assert fb.target(_report(rerank=0.92))["by"] == [{"method": "rerank", "ratings": 200, "share": 0.92}]
    # a tuning past the perplexity tolerance does not count, however well it pleases
    assert not fb.target(_report(dpo={"share": 0.95, "ppl_ratio": 1.2}))["met"]
    def rnd(so_far, share, rerank, ppl):
        return {"ratings": 67, "ratings_so_far": so_far, "share": share, "rerank_share": rerank, "ppl_ratio": ppl}

    done = {"budget": 200, "ratings": 200, "method": "dpo",
            "rounds": [rnd(67, 0.5, 0.8, 1.02), rnd(134, 0.7, 0.93, 1.05), rnd(200, 0.91, 1.0, 1.15)]}
    verdict = fb.target(_report(rounds=[done]))
    # round 2 pleases reranked within the tolerance; round 3 pleases more but drifted past it
    assert verdict["met"] and verdict["by"] == [{"method": "2 rounds of dpo + rerank", "ratings": 134,
                                                 "share": 0.93, "ppl_ratio": 1.05}]
    assert verdict["fewest_ratings"] == 134
    assert not fb.target(_report(rounds=[{**done, "rounds": done["rounds"][:1]}]))["met"]
    over = {**done, "budget": 300, "rounds": [rnd(100, 0.5, 0.8, 1.0), rnd(201, 0.95, 1.0, 1.0)]}
    assert not fb.target(_report(rounds=[over]))["met"]  # more than 200 ratings by then
    stopped = {"budget": 200, "method": "dpo", "rounds": [{"ratings": 1, "stopped": "1 pair(s)"}], "ratings": 0}
    assert not fb.target(_report(rounds=[stopped]))["met"]
    args = fb.parse_args(["--round-method", "dpo", "kto"])
    assert args.round_method == ["dpo", "kto"]


def _common():
    """benchmarks/_common, imported as the benchmarks import it."""
    sys.path.insert(0, str(BENCH))
    try:
        return importlib.import_module("_common")
    finally:
        sys.path.remove(str(BENCH))


def test_cpu_model_names_the_processor():
    common = _common()
    cpu = common.cpu_model()
    if not Path("/proc/cpuinfo").is_file():
        assert cpu == {}
        return
    assert cpu.get("model name")
    assert isinstance(cpu.get("flags", []), list)


def test_a_result_records_no_machine_folder_in_its_command():
    common = _common()
    inside = BENCH / "data" / "policy_heldout19.jsonl"
    assert common.shown_arg(str(inside)) == "benchmarks/data/policy_heldout19.jsonl"
    assert common.shown_arg("/somewhere/else/cases.jsonl") == "cases.jsonl"
    assert common.shown_arg("builtin:moderation_e5.npz") == "builtin:moderation_e5.npz"
    assert common.shown_arg("--timed") == "--timed"
