"""The shared table encoding and the `ctgan` and `tvae` families through the table-family
contract: the encoding round-trips (point masses and missing values exactly), each family's loss
falls on a tiny table, save -> load gives the same rows for a seed, conditions hold, the loop
trains them, DP reports an epsilon within its target, and bad settings fail with one line."""

from __future__ import annotations

import functools
import json
import math

import numpy as np
import pandas as pd
import pytest
import torch

from aigc.checkpoints import load_weights, save_weights
from aigc.errors import InvalidInput
from aigc.models.ctgan import CTGAN
from aigc.models.registry import make_config
from aigc.models.table_encoding import (
    ColumnSpec,
    DataTransformer,
    marginal_distance,
    per_example_gradients,
    set_private_gradients,
    set_private_gradients_ghost,
)
from aigc.models.tvae import TVAE
from aigc.training import TrainConfig, fit

FAMILIES = [CTGAN, TVAE]


def make_table(n: int = 300, seed: int = 0) -> tuple[pd.DataFrame, list[ColumnSpec]]:
    """A model frame: age (integer, by group), gain (0 in ~70 % of rows, missing in ~10 %),
    group (a / b / c, c rare) and colour (red mostly for the old, some missing)."""
    rng = np.random.default_rng(seed)
    group = rng.choice(["a", "b", "c"], n, p=[0.6, 0.3, 0.1])
    age = np.clip(np.round(rng.normal(35, 8, n) + 20 * (group == "b")), 18, 90)
    gain = np.where(rng.random(n) < 0.7, 0.0, np.round(rng.lognormal(8, 1, n)))
    gain[rng.random(n) < 0.1] = np.nan
    colour = np.where((age > 45) ^ (rng.random(n) < 0.1), "red", "blue").astype(object)
    colour[rng.random(n) < 0.05] = None
    frame = pd.DataFrame({"age": age, "gain": gain, "group": pd.Series(group, dtype=object), "colour": colour})
    specs = [
        ColumnSpec("age", "numerical", integer=True, min=18, max=90),
        ColumnSpec("gain", "numerical", integer=True, min=0, max=float(np.nanmax(gain)), missing=0.1),
        ColumnSpec("group", "categorical", categories=["a", "b", "c"]),
        ColumnSpec("colour", "categorical", categories=["blue", "red"], missing=0.05),
    ]
    return frame, specs


TABLE, SPECS = make_table()


@functools.cache
def encoding(family) -> dict:
    """The family's encoding of TABLE (its presets share the encoding settings), fitted once."""
    return family.fit_encoding(make_config(family, "tiny"), TABLE, SPECS, seed=0)


def make_model(family, preset: str = "tiny", **overrides):
    return family(make_config(family, preset, overrides), encoding(family))


def backward(loss: torch.Tensor) -> None:  # what Fabric's backward does on one CPU
    loss.backward()


def train(model, steps: int, batch: int = 60, lr: float | None = None) -> list[dict]:
    lr = lr or type(model).TRAIN_DEFAULTS["tiny"]["lr"]
    opts = model.configure_optimizers(lr=lr, weight_decay=0.0)
    x = model.encode(TABLE)
    g = torch.Generator().manual_seed(1)
    return [model.training_step(x[torch.randint(len(x), (batch,), generator=g)], None, opts, backward)
            for _ in range(steps)]


def mean(history: list[dict], key: str, part: slice) -> float:
    return float(np.mean([h[key] for h in history[part]]))


# -- the encoding -------------------------------------------------------------------------------


def test_encoding_round_trips_point_masses_and_missing_values_exactly():
    state = DataTransformer.fit(TABLE, SPECS, seed=0)
    state = json.loads(json.dumps(state))  # JSON-able, as encoding.json holds it
    t = DataTransformer.from_state(state)
    gain = t.column("gain")
    assert 0.0 in gain["points"] and gain["missing"]  # the point mass and the missing mode
    x = t.transform(TABLE)
    assert x.dtype == np.float32 and x.shape == (len(TABLE), t.dim) == (len(TABLE), sum(s.dim for s in t.output_info))
    for s in t.output_info:  # every softmax span is one-hot; scalars within the mode
        block = x[:, s.start : s.start + s.dim]
        if s.activation == "softmax":
            assert ((block == 0) | (block == 1)).all() and (block.sum(1) == 1).all()
        else:
            assert np.abs(block).max() <= 1.0
    back = t.inverse(x)
    pd.testing.assert_frame_equal(back, TABLE, check_dtype=False)
    assert (back["gain"] == 0).sum() == (TABLE["gain"] == 0).sum()  # the zeros come back as exact zeros


def test_encoding_categories_keep_the_spec_order_then_missing():
    t = DataTransformer.from_state(DataTransformer.fit(TABLE, SPECS, seed=0))
    assert t.column("colour")["categories"] == ["blue", "red", None]
    assert t.column("group")["categories"] == ["a", "b", "c"]
    counts = t.column("group")["counts"]
    assert counts == [int((TABLE["group"] == v).sum()) for v in "abc"]


def test_encoding_refuses_what_it_cannot_encode():
    t = DataTransformer.from_state(DataTransformer.fit(TABLE, SPECS, seed=0))
    with pytest.raises(InvalidInput, match="'group'.*'z'"):
        t.transform(TABLE.assign(group="z"))
    with pytest.raises(InvalidInput, match="lacks column"):
        t.transform(TABLE.drop(columns=["age"]))
    with pytest.raises(InvalidInput, match="'age' has missing values"):
        t.transform(TABLE.assign(age=np.nan))
    with pytest.raises(InvalidInput, match="only missing"):
        DataTransformer.fit(TABLE.assign(gain=np.nan), SPECS, seed=0)
    with pytest.raises(InvalidInput, match="not a number"):
        DataTransformer.fit(TABLE.assign(age="old"), SPECS, seed=0)


def test_marginal_distance_is_zero_for_the_same_table_and_grows_with_a_shift():
    assert marginal_distance(TABLE, TABLE) == 0
    shifted = TABLE.assign(age=TABLE["age"] + 30, group="a")
    assert marginal_distance(TABLE, shifted) > 0.3


# -- training ---------------------------------------------------------------------------------


def test_ctgan_learns_the_conditional_vector_and_the_marginals():
    torch.manual_seed(0)
    model = make_model(CTGAN)
    x = model.encode(TABLE)
    before = model.validation_losses(x)["loss"]
    hist = train(model, 150, lr=2e-3)
    assert mean(hist, "cond_loss", slice(-20, None)) < 0.5 * mean(hist, "cond_loss", slice(0, 20))
    after = model.validation_losses(x)["loss"]
    assert after < before - 0.05, (before, after)
    assert all(math.isfinite(h["d_loss"]) and math.isfinite(h["g_loss"]) for h in hist)


def test_tvae_loss_and_validation_loss_fall():
    torch.manual_seed(0)
    model = make_model(TVAE)
    x = model.encode(TABLE)
    before = model.validation_losses(x)["loss"]
    hist = train(model, 80)
    assert mean(hist, "loss", slice(-10, None)) < 0.7 * mean(hist, "loss", slice(0, 10))
    assert model.validation_losses(x)["loss"] < before
    assert ((model.sigma >= 0.01) & (model.sigma <= 1.0)).all()  # clamped after every step


@pytest.mark.parametrize("family", FAMILIES)
def test_the_loop_trains_a_family_and_keeps_its_best_weights(tmp_path, family):
    class Task:  # what aigc.tasks.TableTask gives the loop
        unit = "row"
        tokens_per_batch = 60

        def __init__(self, rows):
            self.rows = rows

        def batch(self, generator):
            return self.rows[torch.randint(len(self.rows), (60,), generator=generator)], None

        def evaluate(self, model, full=False):
            with torch.no_grad():
                return model.validation_losses(self.rows).get("loss")

    model = make_model(family)
    cfg = TrainConfig(**{**family.TRAIN_DEFAULTS["tiny"], "max_steps": 20, "eval_every": 10})
    state = fit(model, Task(model.encode(TABLE)), cfg, tmp_path)
    assert state.step == 20 and state.stop_reason == "max_steps"
    assert math.isfinite(state.best_val_loss)  # both have a validation figure: best weights are kept
    rows = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert any(family.progress_keys[0] in r for r in rows)
    assert (tmp_path / "model.safetensors").exists()


# -- save -> load, sampling and conditions -----------------------------------------------------------


@pytest.mark.parametrize("family", FAMILIES)
def test_save_load_gives_the_same_rows_for_a_seed(tmp_path, family):
    torch.manual_seed(0)
    model = make_model(family)
    train(model, 10)
    model.eval()
    save_weights(model, tmp_path / "model.safetensors")
    (tmp_path / "encoding.json").write_text(json.dumps(model.encoding))
    again = family(make_config(family, "tiny"), json.loads((tmp_path / "encoding.json").read_text()))
    load_weights(again, tmp_path / "model.safetensors")
    again.eval()
    a = model.sample(200, generator=torch.Generator().manual_seed(3))
    b = again.sample(200, generator=torch.Generator().manual_seed(3))
    pd.testing.assert_frame_equal(a, b)
    c = again.sample(200, generator=torch.Generator().manual_seed(4))
    assert not a.equals(c)
    assert list(a.columns) == list(TABLE.columns) and len(a) == 200
    assert a["age"].between(18, 90).all() and (a["age"] == a["age"].round()).all()  # clipped and rounded
    assert set(a["group"]) <= {"a", "b", "c"}


def test_ctgan_samples_only_the_asked_value():
    torch.manual_seed(0)
    model = make_model(CTGAN)
    train(model, 30, lr=2e-3)
    rows = model.sample(150, {"group": "c"}, generator=torch.Generator().manual_seed(0))
    assert len(rows) == 150 and (rows["group"] == "c").all()
    missing = model.sample(40, {"colour": None}, generator=torch.Generator().manual_seed(0))
    assert missing["colour"].isna().all()
    both = model.sample(30, {"group": "a", "colour": "red"}, generator=torch.Generator().manual_seed(0))
    assert len(both) == 30 and (both["group"] == "a").all() and (both["colour"] == "red").all()
    with pytest.raises(InvalidInput, match="never held"):
        model.sample(5, {"group": "z"})
    with pytest.raises(InvalidInput, match="unknown column 'size'"):
        model.sample(5, {"size": "big"})
    with pytest.raises(InvalidInput, match="outside"):
        model.sample(5, {"age": 200})
    with pytest.raises(InvalidInput, match="whole numbers"):
        model.sample(5, {"age": 30.5})


def test_tvae_meets_conditions_by_rejection():
    torch.manual_seed(0)
    model = make_model(TVAE)
    train(model, 30)
    assert not TVAE.SUPPORTS_CONDITIONS
    rows = model.sample(50, {"group": "b"}, generator=torch.Generator().manual_seed(0))
    assert len(rows) == 50 and (rows["group"] == "b").all()
    zeros = model.sample(20, {"gain": 0}, generator=torch.Generator().manual_seed(0))
    assert len(zeros) == 20 and (zeros["gain"] == 0).all()


# -- differential privacy --------------------------------------------------------------------------


@pytest.mark.parametrize("family", FAMILIES)
def test_dp_reports_an_epsilon_within_its_target_and_stops_at_the_planned_steps(family):
    torch.manual_seed(0)
    small = dict(latent_dim=8, width=16) if family is TVAE else dict(embedding_dim=8, g_width=16, d_width=16)
    model = make_model(family, "dp1", dp_steps=6, **small)
    hist = train(model, 6, batch=30)
    spent = [h["epsilon"] for h in hist]
    assert all(math.isfinite(e) for e in spent) and 0 < spent[0] < spent[-1] <= 1.0
    assert spent[-1] > 0.9  # the planned steps spend the budget, not a trivial fraction of it
    report = model.privacy()
    assert report["steps"] == 6 and report["delta"] == pytest.approx(1 / (10 * len(TABLE)))
    assert report["noise_multiplier"] > 0
    assert model.validation_losses(model.encode(TABLE)) == {}  # nothing chosen by real val rows
    with pytest.raises(InvalidInput, match="past the target"):
        train(model, 1, batch=30)


def test_ghost_clipping_sums_the_same_clipped_gradients_as_per_row_gradients():
    """TVAE's DP step clips each row's gradient without computing it (ghost clipping): with the
    noise off, the update equals the one from explicit per-row gradients (torch.func)."""
    torch.manual_seed(0)
    model = make_model(TVAE)
    x = model.encode(TABLE)[:40]
    eps = torch.randn(40, model.config.latent_dim)
    params = dict(model.named_parameters())

    def row_loss(p, xi, ei):
        r, k = model.row_losses(xi[None], ei[None], p)
        return (2 * r + k)[0]

    set_private_gradients(params, per_example_gradients(row_loss, params, x, eps), 0.5, 0.0)
    expected = {k: p.grad.clone() for k, p in params.items()}

    def row_losses():
        sigma_rows = model.sigma.expand(40, -1)
        r, k = model.row_losses(x, eps, {**params, "sigma": sigma_rows})
        return 2 * r + k, {"sigma": sigma_rows}

    set_private_gradients_ghost(model, row_losses, 0.5, 0.0)
    for k, p in params.items():
        torch.testing.assert_close(p.grad, expected[k], rtol=1e-4, atol=1e-6)
    assert sum(p.grad.norm() ** 2 for p in params.values()) ** 0.5 <= 0.5 + 1e-4  # a mean of clipped rows


@pytest.mark.parametrize("family", FAMILIES)
def test_dp_settings_are_checked(family):
    with pytest.raises(InvalidInput, match="epsilon must be > 0.*got -1"):
        make_model(family, "tiny", epsilon=-1.0, dp_steps=10)
    with pytest.raises(InvalidInput, match="epsilon 0 with dp_steps"):
        make_model(family, "dp3", epsilon=0.0)
    with pytest.raises(InvalidInput, match="delta must be in"):
        make_model(family, "dp3", delta=1.0)
    with pytest.raises(InvalidInput, match="needs dp_steps"):
        make_model(family, "tiny", epsilon=3.0)
    assert make_model(family, "tiny").privacy() is None
