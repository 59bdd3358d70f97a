"""Report metrics for synthetic tables: hand-computed values on tiny tables, and SDMetrics 0.32's
own numbers where it defines the same metric (kept small: its DCR code is slow)."""

from __future__ import annotations

import warnings
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest

from aigc.errors import InvalidInput
from aigc.metrics import table as tm

TYPES = {"age": "numerical", "income": "numerical", "when": "datetime", "color": "categorical",
         "job": "categorical"}
SD_META = {"columns": {"age": {"sdtype": "numerical"}, "income": {"sdtype": "numerical"},
                       "when": {"sdtype": "datetime", "datetime_format": "%Y-%m-%d"},
                       "color": {"sdtype": "categorical"}, "job": {"sdtype": "categorical"}}}


def mixed(n: int, seed: int, shift: float = 0.0) -> pd.DataFrame:
    """A small mixed table with correlated columns and missing values in three of them."""
    rng = np.random.default_rng(seed)
    age = rng.normal(40 + shift, 10, n).round()
    income = age * 1000 + rng.normal(0, 5000, n)
    days = (age * 3 + rng.integers(0, 60, n)).astype(int)
    when = (pd.Timestamp("2020-01-01") + pd.to_timedelta(days, unit="D")).strftime("%Y-%m-%d")
    color = rng.choice(["red", "green", "blue"], n, p=[0.5, 0.3, 0.2]).astype(object)
    job = np.where(age > 40, rng.choice(["a", "b"], n), rng.choice(["b", "c"], n)).astype(object)
    frame = pd.DataFrame({"age": age, "income": income, "when": list(when), "color": color, "job": job})
    frame.loc[rng.random(n) < 0.1, "income"] = np.nan
    frame.loc[rng.random(n) < 0.1, "color"] = None
    frame.loc[rng.random(n) < 0.05, "when"] = None
    return frame


@pytest.fixture(autouse=True)
def _quiet():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        yield


# ----------------------------------------------------------------------------- by hand


def test_column_shapes_by_hand():
    real = pd.DataFrame({"x": [1, 2, 3, 4], "c": ["a", "a", "b", None]})
    synth = pd.DataFrame({"x": [3, 4, 5, 6], "c": ["a", "b", "b", "c"]})
    shapes = tm.column_shapes(real, synth, {"x": "numerical", "c": "categorical"})
    # KS: at x = 2 the real ECDF is 0.5 and the synthetic one 0 -> D = 0.5
    assert shapes["x"] == pytest.approx(0.5, abs=1e-12)
    # TV over {a, b, c}: real (2/3, 1/3, 0), synthetic (1/4, 1/2, 1/4): 1 - (5/12 + 1/6 + 1/4) / 2
    assert shapes["c"] == pytest.approx(7 / 12, abs=1e-6)


def test_column_pair_trends_by_hand():
    types = {"x": "numerical", "y": "numerical", "c": "categorical", "d": "categorical"}
    real = pd.DataFrame({"x": [1, 2, 3], "y": [1, 2, 3], "c": ["a", "a", "b"], "d": ["p", "p", "q"]})
    synth = pd.DataFrame({"x": [10, 20, 30], "y": [3, 2, 1], "c": ["a", "b", "b"], "d": ["p", "q", "q"]})
    trends = tm.column_pair_trends(real, synth, types)
    assert trends[("x", "y")] == pytest.approx(0.0)  # r = 1 against r = -1: 1 - 2 / 2
    # each frame is binned on its own 10 equal-width bins: x lands in bins 1, 6, 11 in both, so
    # real (1,a) (6,a) (11,b) against synthetic (1,a) (6,b) (11,b): 1 - (1/3 + 1/3) / 2
    assert trends[("x", "c")] == pytest.approx(2 / 3)
    # c, d: real (a,p) (a,p) (b,q) against synthetic (a,p) (b,q) (b,q): 1 - (1/3 + 1/3) / 2
    assert trends[("c", "d")] == pytest.approx(2 / 3)


def test_association_matrix_by_hand():
    frame = pd.DataFrame({"x": [1.0, 2.0, 3.0, 4.0], "y": [2.0, 4.0, 6.0, 8.0],
                          "c": ["a", "a", "b", "b"], "d": ["p", "p", "q", "q"], "e": ["u", "v", "u", "v"]})
    types = {"x": "numerical", "y": "numerical", "c": "categorical", "d": "categorical", "e": "categorical"}
    names, m = tm.association_matrix(frame, types)
    assert names == list(types) and np.allclose(np.diag(m), 1.0)
    assert m[0, 1] == pytest.approx(1.0)  # Pearson r of y = 2x
    assert m[2, 3] == pytest.approx(1.0)  # c and d determine each other: table [[2, 0], [0, 2]]
    assert m[2, 4] == pytest.approx(0.0)  # c and e independent: table [[1, 1], [1, 1]]


def test_detection_with_many_categories():
    """Two samples of one distribution over 2,000 categories: rare and unseen categories share a
    one-hot column, so the categories only one sample happens to have do not give it away."""
    rng = np.random.default_rng(0)
    real, synth = (pd.DataFrame({"zip": rng.integers(0, 2000, 600).astype(str), "x": rng.normal(size=600)})
                   for _ in range(2))
    assert tm.detection(real, synth, {"zip": "categorical", "x": "numerical"}) > 0.85


def test_quality_thresholds_by_hand():
    """SDMetrics 0.32 counts only pairs whose real association passes its thresholds."""
    rng = np.random.default_rng(0)
    x = rng.normal(size=200)
    real = pd.DataFrame({"x": x, "y": x + rng.normal(scale=0.1, size=200), "z": rng.normal(size=200)})
    synth = real.sample(frac=1, random_state=1).reset_index(drop=True)
    synth["y"] = synth["x"] * -1  # the strong pair turns negative
    q = tm.quality(real, synth, {c: "numerical" for c in real})
    counted = [p["columns"] for p in q["pairs"] if p["counted"]]
    assert counted == [["x", "y"]]  # |r(x, z)| and |r(y, z)| are near 0: left out
    pair = q["pairs"][0]
    assert q["trends"] == pytest.approx(pair["score"]) and pair["score"] < 0.1
    assert q["score"] == pytest.approx((q["shapes"] + q["trends"]) / 2)
    assert q["worst_pairs"][0]["columns"] == ["x", "y"]


def test_diagnostic_by_hand():
    col = SimpleNamespace
    meta = SimpleNamespace(
        modelled=lambda: [col(name="x", kind="continuous", min=0.0, max=10.0, missing=0.0),
                          col(name="c", kind="categorical", categories={"a": 1, "b": 1}, missing=0.0)],
        primary_key="id", constraints=[{"type": "range", "column": "x", "low": 0, "high": 5}],
        quasi_identifiers=[], target=None)
    real = pd.DataFrame({"id": [1, 2], "x": [0.0, 10.0], "c": ["a", "b"]})
    synth = pd.DataFrame({"id": [1, 2, 2, None], "x": [5.0, 11.0, np.nan, 0.0], "c": ["a", "a", "c", None]})
    d = tm.diagnostic(real, synth, meta)
    assert d["checks"]["x"] == {"check": "range", "score": 0.5}  # 11 is out of range, NaN not allowed
    assert d["checks"]["c"] == {"check": "category", "score": 0.5}  # "c" unknown, None not allowed
    assert d["checks"]["id"] == {"check": "key", "score": 0.5}  # a repeated 2 and a missing key
    assert d["validity"] == 0.25  # only the first row passes everything
    assert d["constraints"] == {"range 0 <= x <= 5": 0.75}  # 11 breaks it; NaN is not checked


def test_detection_by_hand():
    """Real and synthetic rows a line separates: every fold's AUC is 1, so the score is 0."""
    real = pd.DataFrame({"x": [0.0, 0.1, 0.2, 0.3, 0.4, 0.5], "c": ["a"] * 6})
    synth = pd.DataFrame({"x": [10.0, 10.1, 10.2, 10.3, 10.4, 10.5], "c": ["b"] * 6})
    assert tm.detection(real, synth, {"x": "numerical", "c": "categorical"}) == pytest.approx(0.0)


def test_tstr_by_hand():
    """On 6 rows the boosted trees cannot split (20 rows per leaf): each model predicts its
    training majority, so AUC is 0.5 and F1/accuracy follow from constant predictions."""
    types = {"x": "numerical", "y": "categorical"}
    train = pd.DataFrame({"x": range(6), "y": ["a", "a", "a", "a", "b", "b"]})
    synth = pd.DataFrame({"x": range(6), "y": ["b"] * 6})  # one class: a constant "b" predictor
    holdout = pd.DataFrame({"x": [0, 1, 2], "y": ["a", "b", "a"]})
    out = tm.tstr(train, synth, holdout, types, target="y")
    assert out["task"] == "classification" and out["positive"] == "b"  # the minority class
    # TRTR predicts "a": accuracy 2/3; F1(a) = 2 * (2/3 * 1) / (2/3 + 1) = 0.8, F1(b) = 0
    assert out["trtr"] == pytest.approx({"auc": 0.5, "f1_macro": 0.4, "accuracy": 2 / 3})
    # TSTR predicts "b": accuracy 1/3; F1(b) = 2 * (1/3 * 1) / (1/3 + 1) = 0.5, F1(a) = 0
    assert out["tstr"] == pytest.approx({"auc": 0.5, "f1_macro": 0.25, "accuracy": 1 / 3})


def test_tstr_learns_and_refuses_bad_targets():
    rng = np.random.default_rng(0)

    def frame(n, signal=True):
        x = rng.normal(size=n)
        c = rng.choice(["u", "v"], n)
        y = np.where((x > 0) ^ (c == "v"), "yes", "no") if signal else rng.choice(["yes", "no"], n)
        return pd.DataFrame({"x": x, "c": c, "y": y})

    types = {"x": "numerical", "c": "categorical", "y": "categorical"}
    train, holdout = frame(400), frame(200)
    out = tm.tstr(train, frame(400, signal=False), holdout, types, target="y")
    assert out["trtr"]["auc"] > 0.95 and out["trtr"]["accuracy"] > 0.9  # x and c decide y
    assert abs(out["tstr"]["auc"] - 0.5) < 0.15  # the synthetic target was noise
    with pytest.raises(InvalidInput, match="'nope' is not a modelled column"):
        tm.tstr(train, train, holdout, types, target="nope")
    one = train.assign(y="yes")
    with pytest.raises(InvalidInput, match="has one class"):
        tm.tstr(one, one, holdout, types, target="y")
    reg = tm.tstr(train.assign(z=train.x * 2), train.assign(z=train.x * 2), holdout.assign(z=holdout.x * 2),
                  types | {"z": "numerical"}, target="z")
    assert reg["task"] == "regression" and reg["trtr"]["r2"] > 0.9


def test_dcr_by_hand():
    """Range of the reference x is 4; |a - b| / 4 capped at 1; mean over the two columns."""
    types = {"x": "numerical", "c": "categorical"}
    b = pd.DataFrame({"x": [0.0, 4.0, 2.0], "c": ["a", "b", None]})
    a = pd.DataFrame({"x": [1.0, 4.0, np.nan, 8.0], "c": ["a", "a", "b", "c"]})
    # row 0 nearest b0: (1/4 + 0) / 2; row 1: b0 (1 + 0) / 2 or b1 (0 + 1) / 2; row 2: b1 (1 + 0) / 2
    # (missing against a value is 1); row 3: every x term is capped at 1 and "c" matches nothing
    assert tm.dcr(a, b, types) == pytest.approx([0.125, 0.5, 0.5, 1.0], abs=1e-7)


def test_privacy_by_hand():
    types = {"x": "numerical", "c": "categorical"}
    train = pd.DataFrame({"x": [0.0, 1.0, 2.0, 4.0], "c": ["a", "a", "b", "b"]})
    holdout = pd.DataFrame({"x": [0.0, 1.0, 2.0, 4.0], "c": ["b", "b", "a", "a"]})
    synth = pd.DataFrame({"x": [0.0, 1.0, 4.0, 4.0, 1.5, 2.0], "c": ["a", "b", "b", "b", "a", "b"]})
    p = tm.privacy(train, synth, holdout, types, seed=0)
    # DCR to train / to holdout, per synthetic row: (0, .25) (.125, 0) (0, .375) (0, .375)
    # (.0625, .0625) (0, .125): 4 strictly closer to train, 1 tie, 1 closer to the holdout
    assert p["exact_copy_rate"]["value"] == pytest.approx(4 / 6)
    assert p["holdout_exact_copy_rate"] == 0.0 == p["exact_copy_rate"]["reference"]
    assert p["closer_to_train"]["value"] == pytest.approx(4.5 / 6)
    assert p["dcr_overfitting_protection"]["value"] == pytest.approx(2 * (1 - 4 / 6))
    # nearest / second nearest train DCR: 0 for the four copies, (.125/.375) and (.0625/.1875)
    assert p["nndr"]["value"] == pytest.approx(0.0)
    assert p["rows"] == {"train": 4, "synthetic": 6, "holdout": 4, "sample": 4}
    assert set(p["dcr_histogram"]["series"]) == {"synthetic → train", "holdout → train"}
    assert sum(p["dcr_histogram"]["series"]["synthetic → train"]) == 6


def test_cap_by_hand():
    types = {"q": "categorical", "s": "categorical"}
    train = pd.DataFrame({"q": ["a", "a", "b", "b"], "s": ["y", "n", "y", "y"]})
    synth = pd.DataFrame({"q": ["a", "a", "a", "b", "c"], "s": ["y", "y", "n", "n", "y"]})
    holdout = pd.DataFrame({"q": ["a", "b", "c", "c"], "s": ["n", "n", "y", "y"]})
    p = tm.privacy(train, synth, holdout, types, quasi_identifiers=["q"], sensitive="s")
    # train (a,y): 2 of the 3 synthetic "a" rows say y; (a,n): 1/3; (b,y) twice: 0 of 1
    assert p["cap"]["value"] == pytest.approx(1 - (2 / 3 + 1 / 3 + 0 + 0) / 4)
    # against the holdout: (a,y) 0 of 1, (a,n) 1 of 1, (b,y) 0 of 1 twice
    assert p["cap"]["reference"] == pytest.approx(1 - 1 / 4)
    with pytest.raises(InvalidInput, match="needs quasi-identifiers"):
        tm.privacy(train, synth, holdout, types, sensitive="s")


def test_copied_table_is_caught():
    """A synthetic set that is the train set: every row a copy, every member found."""
    types = {"age": "numerical", "income": "numerical", "color": "categorical", "job": "categorical"}
    train, holdout = mixed(200, 0)[list(types)], mixed(200, 1)[list(types)]
    p = tm.privacy(train, train, holdout, types, seed=0)
    assert p["exact_copy_rate"]["value"] == 1.0
    assert p["exact_copy_rate"]["reference"] < 0.05
    assert p["closer_to_train"]["value"] > 0.99  # train and holdout of equal size: T is all of train
    assert p["dcr_overfitting_protection"]["value"] < 0.02
    assert p["dcr_baseline_protection"]["value"] == 0.0  # median DCR of a copy is 0
    assert p["mia_auc"]["value"] == pytest.approx(1.0)
    assert abs(p["mia_auc"]["reference"] - 0.5) < 0.15


def test_independent_sample_is_not_closer_to_train():
    """Train, holdout and synthetic drawn independently from one distribution: each synthetic
    row is as likely nearer a train row as a holdout row. With 600 synthetic rows the share's
    standard error is sqrt(0.25 / 600) = 0.02; the tolerance is 4 of them (the seed fixes it)."""
    types = {"age": "numerical", "income": "numerical", "color": "categorical", "job": "categorical"}
    train, holdout, synth = (mixed(600, s)[list(types)] for s in (10, 11, 12))
    p = tm.privacy(train, synth, holdout, types, seed=0)
    assert abs(p["closer_to_train"]["value"] - 0.5) < 0.08
    assert abs(p["closer_to_train"]["reference"] - 0.5) < 0.08 * np.sqrt(2)  # 300 rows there
    assert p["dcr_overfitting_protection"]["value"] > 0.84
    assert abs(p["mia_auc"]["value"] - 0.5) < 0.08


def test_table_metadata_and_datetime_strings():
    col = SimpleNamespace
    meta = SimpleNamespace(
        modelled=lambda: [col(name="t", kind="datetime", datetime_format="%d/%m/%Y", min=None, max=None),
                          col(name="ok", kind="boolean", categories={"True": 1}, missing=0.0)],
        primary_key=None, constraints=[], quasi_identifiers=[], target=None)
    frame = pd.DataFrame({"t": ["02/01/2020", None], "ok": [True, False], "id": ["x", "y"]})
    values = tm.column_values(frame, meta)
    assert values["t"][0] == pd.Timestamp("2020-01-02").timestamp() and np.isnan(values["t"][1])
    assert list(values["ok"]) == ["True", "False"]
    assert tm.column_types(meta) == {"t": "numerical", "ok": "categorical"}  # the id column is ignored


def test_bad_inputs_are_refused():
    frame = pd.DataFrame({"x": [1.0, 2.0]})
    with pytest.raises(InvalidInput, match="'numerical' or 'categorical'"):
        tm.column_shapes(frame, frame, {"x": "float"})
    with pytest.raises(InvalidInput, match=r"synthetic table lacks column\(s\) \['y'\]"):
        tm.column_shapes(frame.assign(y=1), frame, {"x": "numerical", "y": "numerical"})
    with pytest.raises(InvalidInput, match="no rows"):
        tm.quality(frame, frame.iloc[:0], {"x": "numerical"})


# ----------------------------------------------------------------------------- against sdmetrics


def test_quality_matches_sdmetrics():
    from sdmetrics.reports.single_table import QualityReport

    real, synth = mixed(300, 0), mixed(250, 1, shift=3)
    sd_real = real.assign(when=pd.to_datetime(real["when"]))
    sd_synth = synth.assign(when=pd.to_datetime(synth["when"]))
    report = QualityReport()
    report.generate(sd_real, sd_synth, SD_META, verbose=False)
    ours = tm.quality(real, synth, TYPES)
    assert ours["score"] == pytest.approx(report.get_score(), abs=1e-6)
    shapes = report.get_details("Column Shapes")
    for column, score in zip(shapes["Column"], shapes["Score"]):
        assert ours["per_column"][column] == pytest.approx(score, abs=1e-6)
    pairs = report.get_details("Column Pair Trends")
    met = zip(pairs["Column 1"], pairs["Column 2"], pairs["Meets Threshold?"])
    counted = {(a, b) for a, b, ok in met if ok}
    assert counted == {tuple(p["columns"]) for p in ours["pairs"] if p["counted"]}
    assert ours["trends"] == pytest.approx(report.get_properties()["Score"][1], abs=1e-6)

    # every pair, without thresholds (and the Cramér's V each pair's threshold was tested on)
    report = QualityReport()
    report.real_correlation_threshold = report.real_association_threshold = 0
    report.generate(sd_real, sd_synth, SD_META, verbose=False)
    pairs = report.get_details("Column Pair Trends")
    trends = tm.column_pair_trends(real, synth, TYPES)
    assert len(trends) == len(pairs) == 10
    for a, b, score in zip(pairs["Column 1"], pairs["Column 2"], pairs["Score"]):
        assert trends[(a, b)] == pytest.approx(score, abs=1e-6)


def test_detection_matches_sdmetrics():
    from sdmetrics.single_table import LogisticDetection

    columns = ["age", "income", "color", "job"]
    real, synth = mixed(120, 0)[columns], mixed(90, 1, shift=5)[columns]
    meta = {"columns": {c: SD_META["columns"][c] for c in real}}
    np.random.seed(7)  # SDMetrics shuffles its folds with numpy's global generator
    expected = LogisticDetection.compute(real, synth, meta)
    types = {c: TYPES[c] for c in real}
    assert tm.detection(real, synth, types, seed=7) == pytest.approx(expected, abs=1e-6)


def test_dcr_matches_sdmetrics():
    from sdmetrics.single_table.privacy.dcr_utils import calculate_dcr

    real, synth = mixed(40, 0), mixed(30, 1, shift=20)  # the shift puts values outside the range
    sd_real = real.assign(when=pd.to_datetime(real["when"]))
    sd_synth = synth.assign(when=pd.to_datetime(synth["when"]))
    expected = calculate_dcr(sd_synth, sd_real, SD_META).to_numpy()
    assert tm.dcr(synth, real, TYPES) == pytest.approx(expected, abs=1e-6)


def test_dcr_protections_match_sdmetrics(monkeypatch):
    from sdmetrics.single_table import DCRBaselineProtection, DCROverfittingProtection

    types = {c: TYPES[c] for c in ("age", "income", "color", "job")}
    meta = {"columns": {c: SD_META["columns"][c] for c in types}}
    train, holdout = mixed(40, 0)[list(types)], mixed(40, 1)[list(types)]
    synth = pd.concat([train.iloc[:15], mixed(25, 2)[list(types)]], ignore_index=True)  # some copies
    drawn = {}
    real_random_like = tm._random_like

    def keep(*args, **kwargs):
        drawn["rows"] = real_random_like(*args, **kwargs)
        return drawn["rows"]

    monkeypatch.setattr(tm, "_random_like", keep)
    p = tm.privacy(train, synth, holdout, types, seed=0)  # equal sizes: T and H are all rows

    expected = DCROverfittingProtection.compute_breakdown(train, synth, holdout, meta, None)
    assert p["dcr_overfitting_protection"]["value"] == pytest.approx(expected["score"], abs=1e-9)
    closer = expected["synthetic_data_percentages"]["closer_to_training"]
    assert p["closer_to_train"]["value"] >= closer  # the same, plus half of the ties

    random_rows = pd.DataFrame(drawn["rows"])
    monkeypatch.setattr(DCRBaselineProtection, "_generate_random_data",
                        classmethod(lambda cls, real_data, num_samples=None: random_rows))
    expected = DCRBaselineProtection.compute(train, synth, meta, None)
    assert p["dcr_baseline_protection"]["value"] == pytest.approx(expected, abs=1e-6)


def test_cap_matches_sdmetrics():
    from sdmetrics.single_table import CategoricalCAP

    rng = np.random.default_rng(0)

    def frame(n):
        return pd.DataFrame({"q1": rng.choice(["a", "b", "c"], n), "q2": rng.choice(["x", "y"], n),
                             "s": rng.choice(["lo", "mid", "hi"], n)})

    train, synth, holdout = frame(60), frame(50), frame(20)
    types = dict.fromkeys(train, "categorical")
    meta = {"columns": {c: {"sdtype": "categorical"} for c in train}}
    expected = CategoricalCAP.compute(train, synth, meta, key_fields=["q1", "q2"], sensitive_fields=["s"])
    p = tm.privacy(train, synth, holdout, types, quasi_identifiers=["q1", "q2"], sensitive="s")
    assert p["cap"]["value"] == pytest.approx(expected, abs=1e-9)
