"""The shipped semantic moderation classifier (e5 vectors + one logistic regression per category,
``builtin:moderation_e5.npz``): its weights load without pickle; an e5 classifier that a policy turns
on blocks a threat no term names (input rail, ``moderate``, ``/v1/moderations``; a fixed classifier
file: the shipped weights' quality is the benchmark's) while an ordinary sentence with the same words
passes; the default policy and a workspace that turns it off get terms only; a long text is read in
pieces; the assistant's retrieval uses the same e5 model; the training script fits the same arrays
from the same seed within its budgets; and the shipped weights name the training set the script
draws, which shares no text with the everyday corpora the benchmark measures on."""

from __future__ import annotations

import json
import runpy
from importlib import resources
from pathlib import Path

import numpy as np
import pytest

import aigc
from aigc.embedding import DIM, e5_id
from aigc.errors import InvalidInput
from aigc.safety.moderation import (MAX_PIECES, PIECE_CHARS, SemanticClassifier, assess, moderate, pieces_of,
                                    policy_classifier)
from aigc.safety.policy import default_policy, parse_policy, save_workspace_policy, workspace_policy
from aigc.safety.rails import check_input
from helpers import run_cli

REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / "scripts" / "train_moderation_classifier.py"
BENCHMARK = REPO / "benchmarks" / "policy.py"
SHARED = REPO.parent / "shared" / "data"
SHIPPED = Path(str(resources.files("aigc").joinpath("resources/safety/moderation_e5.npz")))
ON = "extends: default\nmoderation: {classifier: builtin:moderation_e5.npz}\n"
OFF = "extends: default\nmoderation: {classifier: null}\n"
THREAT = "I'm going to break every bone in your face when I see you"
THREAT_ZH = "明天我带刀去公司，让他们知道厉害"
ORDINARY = "this knife cuts bone easily"
ORDINARY_ZH = "这把刀很锋利，切骨头很轻松"
TERM_BLOCKED = "提供上门色情服务，包夜八百，加微信详聊。"
THREATENING = ("violence", "harassment")  # a threat against a person is either (OpenAI names them the same)


class NoPII:
    def scan(self, text):
        return []


SENTENCE = "The parcel arrived on time and the colour matches the photos. "


@pytest.fixture(scope="module")
def threat_policy(tmp_path_factory) -> str:
    """A policy that turns on a fixed e5 classifier file (not the shipped weights, whose quality the
    benchmark measures): violence is the cosine to THREAT, harassment to THREAT_ZH, each threshold
    halfway between the threat itself and the closest of the ordinary texts these tests send."""
    from aigc.embedding import e5

    threats = e5().embed([THREAT, THREAT_ZH], "passage").astype(np.float64)
    ordinary = e5().embed([ORDINARY, ORDINARY_ZH, *pieces_of(SENTENCE * 40)], "passage").astype(np.float64)
    categories = tuple(sorted(default_policy().categories))
    coef, intercept, k = np.zeros((len(categories), DIM)), np.full(len(categories), -30.0), 60.0
    for cat, v in zip(("violence", "harassment"), threats):
        j = categories.index(cat)
        coef[j], intercept[j] = k * v, -k * (1 + (ordinary @ v).max()) / 2
    path = tmp_path_factory.mktemp("clf") / "threats.npz"
    SemanticClassifier(categories, coef, intercept, "passage", {"embedder": e5_id()}).save(path)
    return f"extends: default\nmoderation: {{classifier: '{path}'}}\n"


def test_the_shipped_weights_load_without_pickle():
    with np.load(SHIPPED, allow_pickle=False) as z:
        assert set(z.files) - {"sparse_coef"} == {"meta", "coef", "intercept", "confirm", "w1", "b1"}
    clf = SemanticClassifier.load(SHIPPED)
    assert clf.confirm.shape == (len(clf.categories),)
    assert clf.categories == tuple(sorted(default_policy().categories))
    width = DIM if clf.w1 is None else clf.w1.shape[0]
    assert clf.coef.shape == (len(clf.categories), width) and clf.kind in ("query", "passage")
    assert clf.meta["model"] == ("linear" if clf.w1 is None else "mlp_sae" if clf.sparse_coef is not None else "mlp")
    assert clf.meta["embedder"] == e5_id() and clf.kind == "passage"
    assert set(clf.meta["everyday"]) == {"cn_shopping_reviews", "tinyshakespeare_speeches", "shop_copy", "service_text"}
    # the five CV fold models' hidden layers side by side (5 x 256 x 384 float32, 1.97 MB) and their mean
    # regression over the latent terms (12 x 16,384 float32, 0.79 MB)
    assert SHIPPED.stat().st_size < 3_200_000
    assert isinstance(policy_classifier(parse_policy(ON)), SemanticClassifier)


def _flat(tmp_path, intercept: float, confirm: float | None) -> str:
    """A policy with an e5 classifier that scores every text sigmoid(intercept) in every category,
    with one confirm point for all categories (None: none)."""
    categories = tuple(sorted(default_policy().categories))
    n = len(categories)
    path = tmp_path / f"flat{intercept}{confirm}.npz"
    SemanticClassifier(categories, np.zeros((n, DIM)), np.full(n, intercept), "passage", {"embedder": e5_id()},
                       None if confirm is None else np.full(n, confirm)).save(path)
    again = SemanticClassifier.load(path)
    assert (again.confirm is None) == (confirm is None)
    if confirm is not None:
        np.testing.assert_array_equal(again.confirm, np.full(n, confirm))
    return f"extends: default\nmoderation: {{classifier: '{path}'}}\n"


def test_a_classifier_overrules_the_terms_only_below_its_confirm_point(tmp_path):
    """A term match stays on unless the classifier scores the text below its confirm point in that
    category (a warning that quotes a term); a classifier without one, or above it, never overrules."""
    for intercept, confirm, overruled in ((-30.0, -20.0, True), (-10.0, -20.0, False), (-30.0, None, False),
                                          (-30.0, -np.inf, False)):
        policy = parse_policy(_flat(tmp_path, intercept, confirm))
        m = moderate(TERM_BLOCKED, policy, scanner=NoPII())
        assert m.matches and m.blocked != overruled and m.categories["sexual"] != overruled, (intercept, confirm)
        assert check_input(TERM_BLOCKED, policy).allowed == overruled
        verdict = assess(policy, policy.match_terms(TERM_BLOCKED), policy_classifier(policy).scores(TERM_BLOCKED))
        assert verdict.overruled == m.overruled == m.to_dict()["overruled"] == (["sexual"] if overruled else [])
    # `aigc policy test` says when the classifier took a category the terms put on off again
    ws = aigc.open_workspace(tmp_path / "ws")
    save_workspace_policy(ws, _flat(tmp_path, -30.0, -20.0))
    r = run_cli("policy", "test", TERM_BLOCKED, "-w", ws.root)
    assert r.exit_code == 0 and r.stdout.startswith("ok") and "overruled by the classifier: sexual" in r.stdout
    r = run_cli("policy", "test", TERM_BLOCKED, "-w", ws.root, "--json")
    assert json.loads(r.stdout)["overruled"] == ["sexual"] and not json.loads(r.stdout)["flagged"]


def test_an_mlp_classifier_scores_through_its_hidden_layer_and_loads_as_it_was_saved(tmp_path):
    rng = np.random.default_rng(0)
    categories = tuple(sorted(default_policy().categories))
    n, h = len(categories), 16
    w1, b1 = rng.normal(size=(h, DIM)), rng.normal(size=h)
    coef, intercept = rng.normal(size=(n, h)), rng.normal(size=n)
    clf = SemanticClassifier(categories, coef, intercept, "passage", {"embedder": e5_id()}, None, w1, b1)
    v = rng.normal(size=(5, DIM))
    want = np.maximum(v @ np.float32(w1).astype(float).T + np.float32(b1), 0) @ coef.T + intercept
    got = clf.logits_of(v, [2, 3])
    np.testing.assert_allclose(got, np.stack([want[:2].max(0), want[2:].max(0)]))
    again = SemanticClassifier.load(clf.save(tmp_path / "mlp.npz"))
    np.testing.assert_array_equal(again.logits_of(v, [2, 3]), got)  # save -> load: the same scores
    with pytest.raises(InvalidInput, match="hidden layer"):
        SemanticClassifier(categories, coef, intercept, "passage", {}, None, w1, None)
    with pytest.raises(InvalidInput, match=r"want \(C, 16\)"):
        SemanticClassifier(categories, rng.normal(size=(n, DIM)), intercept, "passage", {}, None, w1, b1)


def test_a_classifier_that_reads_latent_terms_adds_their_term_and_scores_a_text_as_its_pieces_do(tmp_path):
    """sparse_coef: a linear term over each piece's e5 latent terms (log 1 + v) added to its logit; the
    classifier embeds them itself (logits) as a caller that keeps them does (logits_of); save -> load
    gives the same scores; a caller that leaves the latent terms out is told so."""
    from scipy.sparse import csr_matrix

    from aigc.embedding import e5

    rng = np.random.default_rng(3)
    categories = tuple(sorted(default_policy().categories))
    n, dim = len(categories), e5().sparse_dim()
    coef, intercept, sparse_coef = rng.normal(size=(n, DIM)), rng.normal(size=n), rng.normal(size=(n, dim))
    clf = SemanticClassifier(categories, coef, intercept, "passage", {"embedder": e5_id()}, None, None, None,
                             sparse_coef)
    v, s = rng.normal(size=(3, DIM)), csr_matrix(rng.random((3, dim)) * (rng.random((3, dim)) < 0.01))
    want = v @ coef.T + intercept + np.log1p(s.toarray()) @ np.float32(sparse_coef).astype(float).T
    np.testing.assert_allclose(clf.logits_of(v, [1, 2], s), np.stack([want[0], want[1:].max(0)]))
    again = SemanticClassifier.load(clf.save(tmp_path / "sae.npz"))
    np.testing.assert_array_equal(again.logits_of(v, [1, 2], s), clf.logits_of(v, [1, 2], s))
    with pytest.raises(ValueError, match="latent terms"):
        clf.logits_of(v, [1, 2])
    texts = [THREAT, SENTENCE * 30]  # one piece, and several
    split = clf.split(texts)
    flat = [p for ps in split for p in ps]
    np.testing.assert_allclose(clf.logits(texts), clf.logits_of(e5().embed(flat, "passage"), [len(ps) for ps in split],
                                                                e5().sparse(flat)), rtol=1e-6)


def test_the_script_fits_an_mlp_whose_shipped_arrays_give_its_own_logits():
    """The mlp's arrays (mean and spread folded into w1) score as the fitted network does, and the
    same seed fits the same arrays."""
    script = _script()
    rng = np.random.default_rng(1)
    labels = ["hate"] * 30 + ["violence"] * 30 + [""] * 120
    centres = {"hate": rng.normal(size=DIM), "violence": rng.normal(size=DIM), "": np.zeros(DIM)}
    x = np.array([centres[lab] + rng.normal(size=DIM) * 0.5 for lab in labels]) * 3 + 1
    data = {"x": x, "labels": np.array(labels), "groups": np.array([f"g{i}" for i in range(len(x))]),
            "sources": np.array(["hate"] * 30 + ["violence"] * 30 + ["hate", "violence"] * 20 + ["reviews"] * 80)}
    rows = np.arange(len(x))
    arrays = script["fit"](data, rows, ["hate", "violence"], 1.0, 0, "mlp")
    assert set(arrays) == {"w1", "b1", "coef", "intercept"} and arrays["w1"].shape == (script["HIDDEN"], DIM)
    np.testing.assert_array_equal(script["fit"](data, rows, ["hate", "violence"], 1.0, 0, "mlp")["w1"],
                                  arrays["w1"])
    logits = script["predict"](arrays, x)
    assert (logits[:30, 0] > logits[60:, 0].max()).mean() > 0.9  # hate scores over every should-pass row
    assert (logits[30:60, 1] > logits[60:, 1].max()).mean() > 0.9


def test_the_shipped_ensemble_of_fold_models_scores_their_mean_logit():
    """The training script ships the CV fold models whose logits chose the thresholds, as one model:
    mlps side by side (hidden layers stacked), linear models averaged; either way its logit is the mean."""
    script = _script()
    rng = np.random.default_rng(2)
    x = rng.normal(size=(50, 6))
    for hidden in (4, None):
        members = []
        for _ in range(3):
            m = {"coef": rng.normal(size=(2, hidden or 6)), "intercept": rng.normal(size=2)}
            if hidden:  # an mlp, beside a regression over latent terms
                m |= {"w1": rng.normal(size=(hidden, 6)), "b1": rng.normal(size=hidden), "scoef": rng.normal(size=(2, 9))}
            members.append(m)
        merged = script["ensemble"](members)
        assert ("w1" in merged) == ("scoef" in merged) == bool(hidden) and merged["coef"].shape[0] == 2
        s = rng.random((50, 9)) if hidden else None
        np.testing.assert_allclose(script["predict"](merged, x, s),
                                   np.mean([script["predict"](m, x, s) for m in members], axis=0), atol=1e-12)


def test_the_script_fits_latent_terms_beside_the_mlp_and_they_catch_what_only_they_show():
    """mlp_sae: the mlp on the dense vectors plus a regression over the latent terms; on rows whose
    dense vectors are noise and whose category shows only in one latent term, the fit ranks held-out
    positives over should-pass rows where the mlp alone cannot."""
    from scipy.sparse import csr_matrix

    script = _script()
    rng = np.random.default_rng(4)
    labels = np.array(["hate"] * 40 + ["violence"] * 40 + [""] * 160)
    s = np.zeros((len(labels), 30))
    s[labels == "hate", 3], s[labels == "violence", 7] = 2.0, 2.0
    s[:, 10:] = rng.random((len(labels), 20)) * (rng.random((len(labels), 20)) < 0.2)
    data = {"x": rng.normal(size=(len(labels), 8)), "labels": labels, "s": csr_matrix(s),
            "groups": np.array([f"g{i}" for i in range(len(labels))]),
            "sources": np.array(["hate"] * 40 + ["violence"] * 40 + ["hate", "violence"] * 40 + ["reviews"] * 80)}
    train, test = np.arange(0, len(labels), 2), np.arange(1, len(labels), 2)  # judged on rows it never saw
    held = labels[test]

    def auc(model: str) -> list[float]:  # per category: P(a positive outscores a should-pass row)
        arrays = script["fit"](data, train, ["hate", "violence"], 1.0, 0, model)
        logits = script["predict"](arrays, data["x"][test], data["s"][test])
        return [float((logits[held == cat, j][:, None] > logits[held == "", j][None, :]).mean())
                for j, cat in enumerate(("hate", "violence"))]

    assert script["fit"](data, train, ["hate", "violence"], 1.0, 0, "mlp_sae")["scoef"].shape == (2, 30)
    alone, both = auc("mlp"), auc("mlp_sae")  # the mlp alone ranks noise (~0.5); the latent terms lift it
    assert all(b > 0.8 and b > a + 0.25 for a, b in zip(alone, both)), (alone, both)


def test_confirm_points_release_the_most_should_pass_rows_within_the_loss_budget():
    confirm_points = _script()["confirm_points"]
    # one category; the terms put every row on it; logits ascending: allow, block, allow, allow, block x 7
    labels = np.array(["", "x", "", ""] + ["x"] * 7)
    logits = np.arange(len(labels), dtype=float)[:, None]
    on = np.ones((len(labels), 1), bool)
    assert confirm_points(logits, labels, on, 0.0)[0] == np.nextafter(0.0, 1)  # no block row may go
    assert confirm_points(logits, labels, on, 0.125)[0] == np.nextafter(3.0, 4)  # one of 8 may go
    assert confirm_points(logits, labels, on & False, 0.5)[0] == -np.inf  # the terms put nothing on
    assert confirm_points(logits[1:2], labels[1:2], on[1:2], 0.5)[0] == -np.inf  # nothing to release


def test_the_assistant_retrieval_and_the_classifier_share_one_e5_model():
    from aigc.apps.assistant.retrieval import embedder
    from aigc.embedding import e5

    assert embedder()._get() is e5().model() and embedder()._lock is e5().lock


def test_a_classifier_blocks_what_no_term_names_and_passes_an_ordinary_sentence_with_its_words(threat_policy):
    on = parse_policy(threat_policy)
    for threat, ordinary in ((THREAT, ORDINARY), (THREAT_ZH, ORDINARY_ZH)):
        assert on.match_terms(threat) == [] and on.match_terms(ordinary) == []  # no term names either
        m = moderate(threat, on, scanner=NoPII())
        assert m.blocked and any(m.categories[c] and m.to_openai()["categories"][c] for c in THREATENING)
        verdict = check_input(threat, on)
        assert not verdict.allowed and verdict.text == ""
        assert verdict.reason.startswith("blocked by the moderation classifier (")
        assert any(c in verdict.reason for c in THREATENING)
        assert not moderate(ordinary, on, scanner=NoPII()).flagged
        assert check_input(ordinary, on).allowed
    # terms still block on their own, with the terms as the reason
    assert "policy's terms" in check_input(TERM_BLOCKED, on).reason


def test_the_default_policy_and_a_workspace_that_turns_it_off_get_terms_only(tmp_path, threat_policy):
    assert default_policy().doc["moderation"]["classifier"] is None
    assert policy_classifier(default_policy()) is None
    assert check_input(THREAT, default_policy()).allowed  # what the terms alone miss
    ws = aigc.open_workspace(tmp_path / "ws")
    save_workspace_policy(ws, ON)  # a builtin: name validates though no such file lies next to the policy
    assert isinstance(policy_classifier(workspace_policy(ws)), SemanticClassifier)
    save_workspace_policy(ws, threat_policy)
    assert not check_input(THREAT, workspace_policy(ws)).allowed
    save_workspace_policy(ws, OFF)
    off = workspace_policy(ws)
    assert off.version == default_policy().version and policy_classifier(off) is None
    assert check_input(THREAT, off).allowed and not moderate(THREAT, off, scanner=NoPII()).flagged
    assert not check_input(TERM_BLOCKED, off).allowed


def test_v1_moderations_reads_the_classifier_a_workspace_turns_on(tmp_path, threat_policy):
    from fastapi import FastAPI
    from fastapi.testclient import TestClient

    from aigc.server.routers.safety import router

    ws = aigc.open_workspace(tmp_path / "ws")
    save_workspace_policy(ws, threat_policy)
    app = FastAPI()
    app.include_router(router)
    app.state.shared = {"ws": ws}
    with TestClient(app) as client:
        r = client.post("/v1/moderations", json={"input": [THREAT, ORDINARY]})
    assert r.status_code == 200
    threat, ordinary = r.json()["results"]
    assert threat["flagged"] and any(threat["categories"][c] for c in THREATENING) and threat["matches"] == []
    assert max(threat["category_scores"][c] for c in THREATENING) >= 0.5 and not ordinary["flagged"]


def test_a_long_text_is_read_in_pieces_cut_at_sentence_ends(monkeypatch, threat_policy):
    sentence = SENTENCE
    long = sentence * 40  # 2,520 characters
    parts = pieces_of(long)
    assert 1 < len(parts) <= MAX_PIECES and all(len(p) <= PIECE_CHARS for p in parts)
    assert all(p.endswith("photos.") for p in parts[:-1])  # each cut right after a sentence end
    assert "".join(parts).replace(" ", "") == long.replace(" ", "")  # nothing lost but the spaces at the cuts
    assert len(pieces_of("x" * (1 << 20))) == MAX_PIECES  # a 1 MiB request costs at most 8 e5 calls
    assert pieces_of("short") == ["short"]
    # a threat after 495 ordinary characters is scored in a piece of its own, not averaged into them
    on = parse_policy(threat_policy)
    text = sentence * 8 + THREAT
    assert pieces_of(text) == [(sentence * 8).rstrip(), THREAT]
    assert not moderate(long, on, scanner=NoPII()).flagged
    assert moderate(text, on, scanner=NoPII()).blocked
    monkeypatch.setattr("aigc.safety.moderation.PIECE_CHARS", 10_000)  # read whole, e5 averages it away
    assert not moderate(text, on, scanner=NoPII()).flagged


def test_a_text_of_several_sentences_is_also_scored_sentence_by_sentence():
    from aigc.safety.moderation import MAX_SENTENCES, TextClassifier, sentences_of, text_logits

    assert sentences_of("one sentence only.") == [] and sentences_of("一句话而已。") == []
    assert sentences_of("好的。谢谢！还有吗？\nyes; no") == ["好的。", "谢谢！", "还有吗？", "yes;", "no"]
    assert sentences_of("Dr. Smith said so. Then left.") == []  # a full stop is not a cut
    assert len(sentences_of("好。" * 100)) == MAX_SENTENCES
    assert [len(s) for s in sentences_of("长" * 2000 + "。好。")] == [PIECE_CHARS, 2]
    calls = []

    def diluted(pieces):  # a logit that the harmful word's share of its piece sets
        calls.append(list(pieces))
        return np.array([[10.0 * p.count("毒") / len(p)] for p in pieces])

    text = "这件衣服很好看面料舒服。" * 5 + "毒毒！"
    whole = 10.0 * 2 / len(TextClassifier.prepare(text))
    assert text_logits(diluted, [text])[0, 0] == pytest.approx(whole) and len(calls[0]) == 1  # its piece alone
    calls.clear()
    z = text_logits(diluted, [text, "毒", "很好。"], sentence_margin=1.0)
    assert len(calls) == 1 and len(calls[0]) == 3 + 6  # one call: every text's piece, then the first's sentences
    assert calls[0][3:] == ["这件衣服很好看面料舒服。"] * 5 + ["毒毒!"]
    assert z[:, 0] == pytest.approx([10.0 * 2 / 3 - 1.0, 10.0, 0.0])  # its worst sentence less the margin
    assert text_logits(diluted, [text], sentence_margin=100.0)[0, 0] == pytest.approx(whole)  # the higher wins
    calls.clear()
    long_enough = len(TextClassifier.prepare(text))
    z = text_logits(diluted, [text, "很好。毒！"], sentence_margin=1.0, sentence_min_chars=long_enough)
    assert calls[0][2:] == ["这件衣服很好看面料舒服。"] * 5 + ["毒毒!"], "only the text of that length is read by sentence"
    assert z[:, 0] == pytest.approx([10.0 * 2 / 3 - 1.0, 10.0 / 5])
    assert text_logits(diluted, [text], sentence_margin=1.0, sentence_min_chars=long_enough + 1)[0, 0] == pytest.approx(whole)


def _script() -> dict:
    return runpy.run_path(str(SCRIPT), run_name="train_moderation_classifier")


def test_the_script_fits_the_same_arrays_from_the_same_seed_within_its_budgets():
    """On a small synthetic set (two categories, dev should-pass cases, one everyday source): the
    same seed gives the same arrays, and the chosen rule keeps both false-flag budgets on CV."""
    script = _script()
    rng = np.random.default_rng(0)
    centres = {"hate": rng.normal(size=8), "violence": rng.normal(size=8), "": np.zeros(8)}
    labels = ["hate"] * 20 + ["violence"] * 20 + [""] * 240
    sources = ["hate"] * 20 + ["violence"] * 20 + ["hate", "violence"] * 20 + ["reviews"] * 200
    x = np.array([centres[lab] * 1.5 + rng.normal(size=8) for lab in labels])
    data = {"x": x, "labels": np.array(labels), "groups": np.array([f"g{i}" for i in range(len(x))]),
            "sources": np.array(sources)}
    first, again = (script["train"](data, 0, 0.05, 0.01, [1.0, 10.0]) for _ in range(2))
    assert first[1].keys() == again[1].keys() == {"coef", "intercept"}
    for key in first[1]:
        np.testing.assert_array_equal(first[1][key], again[1][key])
    np.testing.assert_array_equal(first[2], again[2])
    chosen = first[0]["chosen"]
    assert first[0]["categories"] == ["hate", "violence"] and chosen["c"] in (1.0, 10.0)
    assert chosen["false_block_rate"] <= 0.05 and chosen["everyday_flag_rate"]["reviews"] <= 0.01
    assert chosen["block_rate"] > 0.5  # the positives lie apart: the rule catches most of them
    strict, _, _ = script["train"](data, 0, 0.0, 0.0, [1.0])
    assert strict["chosen"]["false_block_rate"] == 0
    assert strict["chosen"]["everyday_flag_rate"]["reviews"] == 0


@pytest.mark.skipif(not all((SHARED / name).is_dir() for name in ("cn-shopping-reviews", "tinyshakespeare")),
                    reason="needs ../shared/data's cn-shopping-reviews and tinyshakespeare (negatives)")
def test_the_shipped_weights_name_the_training_set_and_the_benchmark_reads_none_of_it():
    script = _script()
    shipped = SemanticClassifier.load(SHIPPED)
    everyday = script["negatives"](shipped.meta["seed"])
    assert {name: len(texts) for name, texts in everyday.items()} == shipped.meta["everyday"]
    retired = bool(shipped.meta.get("retired"))  # trained on the retired held-out splits too (--retired)
    assert script["fingerprint"](script["training_cases"](retired=retired, rounds=shipped.meta.get("rounds", 3)),
                                 everyday) == shipped.meta["train_sha256"]
    for name, texts in script["halved_corpora"]().items():  # the halves share no text
        train, held = script["halves"](texts, shipped.meta["seed"])
        assert not set(train) & set(held) and len(train) + len(held) == len(texts)
    benchmark = runpy.run_path(str(BENCHMARK), run_name="policy_benchmark")
    benign = benchmark["benign_corpora"]()
    # a split it was trained on is scored but not judged for it
    assert benchmark["_trained_on"](shipped) == set(shipped.meta.get("retired") or [])
    assert not retired or benchmark["_trained_on"](shipped) == {s for s, _f in script["RETIRED"]}
    halved = set(script["halved_corpora"]())
    assert set(benign) == {*halved, "assistant_fixtures"} and set(shipped.meta["everyday"]) - halved <= {"service_text"}
    seen = {t for texts in everyday.values() for t in texts}
    for name, texts in benign.items():
        assert texts and not seen & set(texts), name


def test_the_benchmark_judges_no_classifier_on_a_split_it_or_a_part_was_trained_on():
    from types import SimpleNamespace as NS

    trained_on = runpy.run_path(str(BENCHMARK), run_name="policy_benchmark")["_trained_on"]
    tuned, head = NS(meta={"retired": ["heldout", "heldout2"]}), NS(meta={"retired": ["heldout3"]})
    assert trained_on(NS(meta={}, parts=[tuned, head])) == {"heldout", "heldout2", "heldout3"}
    assert trained_on(NS(meta={"retired": []})) == set() and trained_on(NS()) == set()


def test_the_benchmark_scores_a_classifier_at_another_sentence_margin_without_changing_the_loaded_one():
    load = runpy.run_path(str(BENCHMARK), run_name="policy_benchmark")["load"]
    shipped = load("builtin:moderation_e5.npz", None)
    at = load("builtin:moderation_e5.npz@sentence_margin=1.5", None)
    off = load("builtin:moderation_e5.npz@sentence_margin=none", None)
    assert (at.sentence_margin, off.sentence_margin) == (1.5, None) and at.coef is shipped.coef
    assert shipped.sentence_margin is None and load("builtin:moderation_e5.npz", None) is shipped  # the cached one
    both = load("builtin:moderation_e5.npz@sentence_margin=0@sentence_min_chars=120", None)
    assert (both.sentence_margin, both.sentence_min_chars, shipped.sentence_min_chars) == (0.0, 120, 0)
    with pytest.raises(SystemExit, match="after @ write one of sentence_margin, sentence_min_chars"):
        load("builtin:moderation_e5.npz@margin=1", None)


def test_the_benchmark_caches_chunks_cut_by_content_so_an_insertion_costs_only_its_own_chunk():
    ends = _script()["chunk_ends"]
    texts = [f"piece {i}" for i in range(3000)]
    before = ends(texts, 50)
    assert before[0][0] == 0 and before[-1][1] == 3000 and all(a < b for a, b in before)
    assert all(b == c for (_, b), (c, _) in zip(before, before[1:])) and max(b - a for a, b in before) <= 200
    inserted = texts[:1000] + [f"new {i}" for i in range(20)] + texts[1000:]
    after = ends(inserted, 50)
    keys = lambda xs, cuts: {tuple(xs[a:b]) for a, b in cuts}  # noqa: E731
    changed = keys(inserted, after) - keys(texts, before)
    assert 1 <= len(changed) <= 2, "only the chunks around the insertion are new"


def test_the_cache_computes_only_the_pieces_no_chunk_holds_when_new_rows_interleave(tmp_path):
    """A later train round's rows land between the old ones, so nearly every chunk is new; each new chunk takes the
    rows its pieces have in the old chunks and computes only the new pieces, dense or sparse, with the same result
    as computing all of them; another tag shares nothing."""
    from scipy.sparse import csr_matrix, load_npz, save_npz, vstack

    script, calls = _script(), []

    def values(part):
        return np.array([[float(len(p)), float(sum(map(ord, p)) % 997)] for p in part], np.float32)

    def compute(part):
        calls.append(len(part))
        return values(part)

    old = [f"piece {i}" for i in range(1500)]
    mixed = [x for i, p in enumerate(old) for x in ([p, f"new {i}"] if i % 10 == 0 else [p])]  # 150 new, all over
    for folder, fn, suffix, save, load, stack in (
            (tmp_path / "dense", compute, ".npy", np.save, np.load, np.concatenate),
            (tmp_path / "sparse", lambda part: csr_matrix(compute(part)), ".npz", save_npz, load_npz,
             lambda rows: vstack(rows).tocsr())):
        def run(texts, tag="passage"):
            parts = script["_cached"](texts, folder, tag, fn, suffix, save, load, "embedded", 50, stack=stack)
            joined = stack(parts)
            return joined.toarray() if hasattr(joined, "toarray") else joined

        calls.clear()
        np.testing.assert_array_equal(run(old), values(old))
        assert sum(calls) == 1500
        calls.clear()
        np.testing.assert_array_equal(run(mixed), values(mixed))
        assert sum(calls) == 150, "only the new pieces are computed"
        calls.clear()
        run(mixed)
        assert calls == [], "every chunk is now kept"
        run(mixed, tag="query")
        assert sum(calls) == len(mixed), "another tag's rows are not taken"


def test_the_combined_grid_chooses_each_points_thresholds_within_its_own_budget_and_parts_parse():
    """--model combined --grid: each (weight, budget) point's thresholds keep that point's false-block budget on
    the summed out-of-fold logits, a looser budget blocks at least as much; --parts reads REF=WEIGHT lists."""
    script = _script()
    rng = np.random.default_rng(1)
    labels = np.array(["hate"] * 60 + [""] * 240)
    sources = np.array(["hate"] * 60 + ["hate"] * 120 + ["reviews"] * 120)
    positive = (labels == "hate")[:, None]
    parts = [rng.normal(size=(300, 1)) + 2.0 * positive, rng.normal(size=(300, 1)) + 1.0 * positive]
    data = {"labels": labels, "sources": sources, "terms": np.zeros((300, 1), bool)}
    rates = []
    for budget in (0.02, 0.1):
        logits, confirm, t, cv = script["combined_at"](parts, [1.0, 0.5], data, ["hate"], budget, 0.05)
        np.testing.assert_allclose(logits, parts[0] + 0.5 * parts[1])
        assert cv["false_block_rate"] <= budget and cv["everyday_flag_rate"]["reviews"] <= 0.05
        rates.append(cv["block_rate"])
    assert rates[1] >= rates[0] > 0.3
    assert script["_parts"]("builtin:a.npz=1,/x/b=c.npz=0.25") == [("builtin:a.npz", 1.0), ("/x/b=c.npz", 0.25)]
    with pytest.raises(Exception, match="not REF=WEIGHT"):
        script["_parts"]("builtin:a.npz")
    for argv in (["--model", "linear", "--grid", "/tmp/nowhere"],
                 ["--model", "combined", "--grid", "/tmp/nowhere", "--out", "/tmp/nowhere.npz"]):
        with pytest.raises(SystemExit):
            script["main"](argv)
    assert not Path("/tmp/nowhere").exists()


def test_calibration_texts_hold_a_threshold_that_the_out_of_fold_pieces_alone_let_down():
    """--calibrate: texts no part saw are extra everyday budgets, counted per text, a text scoring its highest
    piece of the summed parts; a calibration text the terms stop (and the classifier confirms) is not counted."""
    combined_at = _script()["combined_at"]
    labels = np.array(["hate"] * 10 + [""] * 20)
    sources = np.array(["hate"] * 10 + ["hate"] * 10 + ["reviews"] * 10)
    part = np.full((30, 1), -5.0)
    part[:10, 0] = np.arange(10)  # hate's positives at 0..9; nothing should-pass over -5
    data = {"labels": labels, "sources": sources, "terms": np.zeros((30, 1), bool)}
    _z, _c, t, cv = combined_at([part], [1.0], data, ["hate"], 0.1, 0.1)
    assert t[0] == 0.0 and cv["block_rate"] == 1.0
    # 10 calibration texts (12 pieces): text 0's second piece scores 4.5, text 1's 2.5; the rest -5
    cal_part = np.full((12, 1), -5.0)
    cal_part[1, 0], cal_part[3, 0] = 4.5, 2.5
    owner = np.array([0, 0, 1, 1] + list(range(2, 10)))
    data["calibration"] = {"parts": [cal_part], "owner": owner, "sources": np.array(["calibration:r"] * 10),
                           "terms": np.zeros((10, 1), bool)}
    _z, _c, t, cv = combined_at([part], [1.0], data, ["hate"], 0.1, 0.1)
    assert t[0] == 3.0 and cv["block_rate"] == 0.7  # one text of ten flagged (10 %) is allowed, two are not
    assert cv["everyday_flag_rate"]["calibration:r"] == 0.1 and cv["held_by"]["hate"] == ["everyday:calibration:r"]
    data["calibration"]["terms"][1, 0] = True  # the terms stop text 1; the classifier confirms it (no loss budget)
    _z, _c, t, cv = combined_at([part], [1.0], data, ["hate"], 0.1, 0.1, max_loss=1.0)
    assert t[0] == 0.0


def test_the_thresholds_record_which_budget_holds_each_category_where_it_stops():
    """held_by: the budgets that the next step down that would catch more breaks, or "none left"."""
    thresholds = _script()["thresholds"]
    labels = np.array(["hate"] * 10 + ["spam"] * 10 + [""] * 20)
    sources = np.array(["hate"] * 10 + ["spam"] * 10 + ["hate"] * 9 + ["spam"] + ["reviews"] * 10)
    logits = np.full((40, 2), -5.0)
    logits[:10, 0] = np.arange(10)  # hate's positives at 0..9
    logits[10:20, 1] = 3.0  # every spam positive over anything else
    logits[30, 0] = 5.5  # one review scores as hate between its positives 5 and 6
    t, cv = thresholds(logits, labels, sources, ["hate", "spam"], max_false=0.5, max_benign=0.05)
    assert t[0] == 6.0 and cv["block_rate"] == 0.7  # hate's 6..9 and every spam, the review not flagged
    assert cv["held_by"] == {"hate": ["everyday:reviews"], "spam": ["none left"]}
    t, cv = thresholds(logits, labels, sources, ["hate", "spam"], max_false=0.5, max_benign=0.1)
    assert cv["held_by"]["hate"] == ["none left"] and cv["block_rate"] == 1.0
    sources[29] = "hate"  # spam without a should-pass case: no budget of its own (it was a NaN no step kept)
    t, cv = thresholds(logits, labels, sources, ["hate", "spam"], max_false=0.5, max_benign=0.05)
    assert t[1] == 3.0 and cv["block_rate"] == 0.7


def test_the_exchange_search_steps_back_where_the_greedy_spent_a_shared_budget_on_less():
    """One step of a catches 5 but flags two reviews; b's and c's catch 3 each and flag one each: with two reviews
    allowed the greedy takes a's step and stops at 5, the exchange search gives it back for b's and c's, 6."""
    thresholds = _script()["thresholds"]
    labels = np.array(["a"] * 5 + ["b"] * 3 + ["c"] * 3 + [""] * 23)
    sources = np.array(labels[:11].tolist() + ["reviews"] * 20 + ["a", "b", "c"])  # and a should-pass case each
    logits = np.full((34, 3), -5.0)
    logits[:5, 0], logits[5:8, 1], logits[8:11, 2] = 2.0, 2.0, 2.0
    logits[11:13, 0], logits[13, 1], logits[14, 2] = 2.0, 2.0, 2.0  # the reviews each step flags
    greedy, cv = thresholds(logits, labels, sources, ["a", "b", "c"], max_false=1.0, max_benign=0.1)
    assert cv["block_rate"] == round(5 / 11, 4) and greedy[0] == 2.0
    t, cv = thresholds(logits, labels, sources, ["a", "b", "c"], max_false=1.0, max_benign=0.1, exchange=1)
    assert cv["block_rate"] == round(6 / 11, 4) and t[0] == np.inf and (t[1:] == 2.0).all()
    assert cv["everyday_flag_rate"]["reviews"] == 0.1 and cv["held_by"]["a"] == ["everyday:reviews"]


def test_sentence_calibrated_thresholds_score_each_row_as_a_text_is_scored_at_the_margin():
    """--sentences: a row's logit is the higher of its piece's and its worst sentence's less the margin, summed
    over the parts before the max (as CombinedClassifier scores a text); rows' sentences come from sentences_of."""
    script = _script()
    sents, owner = script["sentence_rows"](["一句话。", "第一句。第二句！", "one. two", "a; b\nc"])
    assert owner.tolist() == [1, 1, 3, 3, 3] and sents[:2] == ["第一句。", "第二句!"]  # normalised as scored
    rows = np.array([[0.0], [-3.0], [1.0]])
    sentence = np.array([[-1.0], [2.0], [5.0], [0.5]])
    np.testing.assert_allclose(script["with_sentences"](rows, sentence, np.array([1, 1, 2, 2]), 1.0),
                               [[0.0], [1.0], [4.0]])
    labels = np.array(["hate", ""])
    data = {"labels": labels, "sources": np.array(["hate", "hate"]), "terms": np.zeros((2, 1), bool),
            "sentences": (["x", "y"], np.array([0, 0]))}
    parts = [np.array([[-5.0], [0.0]]), np.array([[-5.0], [0.0]])]
    sentence_parts = [np.array([[4.0], [-9.0]]), np.array([[-4.0], [9.0]])]  # each part's worst is another sentence
    logits, *_ = script["combined_at"](parts, [1.0, 0.5], data, ["hate"], 0.5, 0.5, (sentence_parts, 0.5))
    np.testing.assert_allclose(logits, [[max(-7.5, 2.0 - 0.5)], [0.0]])  # sums 2.0 and -4.5; not 4.0 + 4.5


def test_a_looser_max_loss_lets_the_classifier_release_more_of_the_terms_false_stops():
    """--losses: combined_at's confirm points take off at most max_loss of the terms' right stops (on the summed
    out-of-fold logits); a looser budget releases at least as many should-pass rows the terms stop, and more here."""
    script = _script()
    rng = np.random.default_rng(3)
    labels = np.array(["hate"] * 200 + [""] * 200)
    sources = np.array(["hate"] * 400)
    z = rng.normal(size=(400, 1)) + 2.5 * (labels == "hate")[:, None]
    data = {"labels": labels, "sources": sources, "terms": np.ones((400, 1), bool)}  # the terms stop every row
    released, lost = [], []
    for loss in (0.01, 0.05):
        logits, confirm, t, cv = script["combined_at"]([z], [1.0], data, ["hate"], 0.5, 0.5, None, loss)
        kept = logits[:, 0] >= confirm[0]
        assert (~kept[labels == "hate"]).mean() <= loss  # what it took off the terms' right stops
        released.append(int((~kept[labels == ""]).sum()))
        lost.append(int((~kept[labels == "hate"]).sum()))
    assert released[1] > released[0] and lost[1] >= lost[0]
    for argv in (["--model", "combined", "--losses"], ["--model", "combined", "--grid", "/tmp/nowhere", "--losses",
                                                       "--sentences"]):
        with pytest.raises(SystemExit):
            script["main"](argv)
    assert not Path("/tmp/nowhere").exists()


def test_train_rounds_are_read_up_to_the_one_asked_and_rows_carry_theirs(tmp_path):
    script = _script()
    assert [script["round_of"](Path(f)) for f in ("fraud.jsonl", "fraud_2.jsonl", "self_harm_4.jsonl",
                                                  "self_harm.jsonl", "sexual_minors_3.jsonl")] == [1, 2, 4, 1, 3]
    cases, train = tmp_path / "cases.jsonl", tmp_path / "train"
    train.mkdir()
    cases.write_text(json.dumps({"id": "d", "text": "dev", "split": "dev"}) + "\n")
    for name in ("hate", "hate_2", "hate_4"):
        (train / f"{name}.jsonl").write_text(json.dumps({"id": name, "text": name, "split": "train"}) + "\n")
    rows = script["training_cases"](cases, train, rounds=3)
    assert [(r["id"], r["round"]) for r in rows] == [("d", 0), ("hate", 1), ("hate_2", 2)]
    assert [r["id"] for r in script["training_cases"](cases, train, rounds=4)][-1] == "hate_4"
    assert script["ROUNDS"] == 4  # the shipped files' rounds (session 39); the first three with --rounds 3


def test_a_part_trained_on_fewer_rounds_keeps_its_own_folds_and_scores_the_later_rows_as_new_text(tmp_path):
    """--model combined with a part trained on rounds 1-3 and the rows of round 4: its rows keep the out-of-fold
    logits of its own folds, and round 4's rows, which none of its models saw, get its file's logits."""
    from sklearn.model_selection import StratifiedGroupKFold

    script = _script()
    rng = np.random.default_rng(3)
    labels = np.array(["hate"] * 30 + ["violence"] * 30 + [""] * 140)
    centres = {"hate": rng.normal(size=DIM), "violence": rng.normal(size=DIM), "": np.zeros(DIM)}
    x = np.array([centres[lab] + rng.normal(size=DIM) * 0.7 for lab in labels])
    cats = ["hate", "violence"]
    rounds = np.where(np.arange(200) % 4 == 3, 4, 1)
    data = {"x": x, "labels": labels, "groups": np.array([f"g{i}" for i in range(200)]),
            "sources": np.array(["hate"] * 30 + ["violence"] * 30 + ["hate", "violence"] * 30 + ["reviews"] * 80), "round": rounds,
            "round_sha": {1: "own", 2: "own", 3: "own"}}
    own = np.flatnonzero(rounds <= 3)
    folds = list(StratifiedGroupKFold(5, shuffle=True, random_state=0).split(
        np.zeros((len(own), 1)), labels[own], data["groups"][own]))
    members = [script["fit"](data, own[a], cats, 1.0, 0, "mlp") for a, _b in folds]
    merged, t = script["ensemble"](members), np.array([0.5, -0.5])
    meta = {"embedder": e5_id(), "train_sha256": "own", "c": 1.0, "model": "mlp", "thresholds_logit": [0.5, -0.5]}
    path = SemanticClassifier(cats, merged["coef"], merged["intercept"] - t, "passage", meta, None, merged["w1"],
                              merged["b1"]).save(tmp_path / "head.npz")
    got = script["part_oof"](str(path), data, cats, 0, "all rows")
    for (a, b), m in zip(folds, members):  # each of its rows by the fold model that did not see it
        np.testing.assert_allclose(got[own[b]], script["predict"](m, x[own[b]]) - t, atol=1e-9)
    later = np.flatnonzero(rounds == 4)
    np.testing.assert_allclose(got[later], SemanticClassifier.load(path).logits_of(x[later], [1] * len(later)),
                               atol=1e-4)  # as the file scores new text
    with pytest.raises(SystemExit, match="not trained on these rows"):
        script["part_oof"](str(path), {**data, "round_sha": {1: "other"}}, cats, 0, "all rows")


def test_composed_rows_keep_their_sources_text_label_and_fold_and_fit_one_piece():
    """Round 5 (scripts/make_policy_compositions.py) on tiny rows: each composed row holds its source's text
    verbatim, keeps its label, category, language and CV group, fits one piece, and both labels get both recipes;
    the same seed gives the same rows."""
    compose = runpy.run_path(str(REPO / "scripts" / "make_policy_compositions.py"), run_name="compositions")
    rows = [{"id": f"hate/{lang}/t1-{e[0]}{i}", "category": "hate", "lang": lang, "expect": e, "kind": k,
             "text": f"{lang} {e} source text number {i}.", "split": "train"}
            for lang in ("zh", "en") for e, k in (("block", "plain"), ("allow", "news")) for i in range(20)]
    rows.append({**rows[0], "id": "hate/zh/t1-b0-zero_width", "kind": "obfuscated", "of": rows[0]["id"]})
    everyday = {"cn_shopping_reviews": [f"这家店的东西很好，第{i}次回购了，物流也快。" for i in range(50)],
                "tinyshakespeare_speeches": [f"Speak, friend, and enter the hall number {i}." for i in range(50)],
                "shop_copy": ["A quiet linen cushion for a slow Sunday morning."], "service_text": ["配送说明"]}
    made = compose["compose"](rows, everyday)["hate"]
    assert made == compose["compose"](rows, everyday)["hate"]
    by_id = {r["id"]: r for r in rows}
    n = compose["EMBED"] + compose["WRAP"]
    assert len(made) == 2 * 2 * n and len({r["id"] for r in made}) == len(made)
    for r in made:
        src = by_id[r["source"]]
        assert src["text"] in r["text"] and len(r["text"]) <= PIECE_CHARS and r["of"] == src["id"]
        assert (r["category"], r["lang"], r["expect"]) == (src["category"], src["lang"], src["expect"])
        assert src.get("kind") != "obfuscated"
        if r["kind"] == "embedded":
            assert compose["LENGTH"][0] <= len(r["text"]) and r["text"] != src["text"]
    assert {(r["expect"], r["kind"]) for r in made} == {(e, k) for e in ("block", "allow")
                                                        for k in ("embedded", "wrapped")}


def test_the_benchmark_gives_rates_by_length_band_as_written():
    benchmark = runpy.run_path(str(BENCHMARK), run_name="policy_benchmark")
    row = {"category": "hate", "lang": "en", "kind": "plain"}
    rows = [{**row, "text": "x" * 119, "expect": "block", "stopped": True},
            {**row, "text": "x" * 120, "expect": "block", "stopped": False},
            {**row, "text": "x" * 240, "expect": "block", "stopped": True},
            {**row, "text": "y" * 300, "expect": "allow", "stopped": True, "kind": "news"},
            {**row, "text": "y" * 20, "expect": "allow", "stopped": False, "kind": "news"}]
    got = benchmark["summary"](rows)["rates_by_length"]
    assert got == {"short": {"n_block": 1, "n_allow": 1, "block_rate": 1.0, "false_block_rate": 0.0},
                   "medium": {"n_block": 1, "n_allow": 0, "block_rate": 0.0, "false_block_rate": None},
                   "long": {"n_block": 1, "n_allow": 1, "block_rate": 1.0, "false_block_rate": 1.0}}
