"""tabgpt: encoding, training, sampling, conditions, save -> load, on a small made-up table."""

import json

import numpy as np
import pandas as pd
import pytest
import torch

from aigc.checkpoints import load_weights, save_weights
from aigc.errors import InvalidInput
from aigc.models.registry import make_config
from aigc.models.table_encoding import ColumnSpec
from aigc.models.tabgpt import TabGPT

N_ROWS = 1200


def make_table(n: int = N_ROWS, seed: int = 0) -> pd.DataFrame:
    """color decides size (reverse order too: size says color); gain is 0 on 70 % of rows;
    age has 21 integer values; x is continuous; color is missing on 10 % of rows."""
    rng = np.random.default_rng(seed)
    color = rng.choice(["red", "green", "blue"], size=n, p=[0.5, 0.3, 0.2])
    size = np.array([{"red": "S", "green": "M", "blue": "L"}[c] for c in color], dtype=object)
    flip = rng.random(n) < 0.05
    size[flip] = rng.choice(["S", "M", "L"], size=int(flip.sum()))
    gain = np.where(rng.random(n) < 0.7, 0.0, np.round(rng.lognormal(7, 1, n)))
    age = rng.integers(20, 41, n).astype(float)
    x = rng.uniform(-1, 3, n)
    color = color.astype(object)
    color[rng.random(n) < 0.1] = None
    return pd.DataFrame({"color": color, "size": size, "gain": gain, "age": age, "x": x})


SPECS = [
    ColumnSpec("color", "categorical", categories=["red", "green", "blue"]),
    ColumnSpec("size", "categorical", categories=["S", "M", "L"]),
    ColumnSpec("gain", "numerical", integer=True),
    ColumnSpec("age", "numerical", integer=True),
    ColumnSpec("x", "numerical"),
]


def build(table: pd.DataFrame) -> TabGPT:
    config = make_config(TabGPT, "tiny")
    torch.manual_seed(0)
    return TabGPT(config, TabGPT.fit_encoding(config, table, SPECS, seed=0))


def train(model: TabGPT, x: torch.Tensor, steps: int) -> list[float]:
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2)
    gen = torch.Generator().manual_seed(0)
    model.train()
    losses = []
    for _ in range(steps):
        _, loss = model(x[torch.randint(0, len(x), (128,), generator=gen)])
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    model.eval()
    return losses


@pytest.fixture(scope="module")
def table() -> pd.DataFrame:
    return make_table()


@pytest.fixture(scope="module")
def trained(table) -> TabGPT:
    model = build(table)
    train(model, model.encode(table), 300)
    return model


@pytest.fixture(scope="module")
def samples(trained) -> pd.DataFrame:
    return trained.sample(4000, generator=torch.Generator().manual_seed(1))


def test_encoding_is_json_and_shapes_columns(table):
    config = make_config(TabGPT, "tiny")
    enc = TabGPT.fit_encoding(config, table, SPECS, seed=0)
    cols = {c["name"]: c for c in json.loads(json.dumps(enc))["columns"]}
    assert cols["age"]["points"] == [float(v) for v in range(20, 41)] and cols["age"]["knots"] == []  # discrete
    assert cols["gain"]["points"] == [0.0] and len(cols["gain"]["knots"]) > 1  # a point mass, then bins
    assert cols["x"]["points"] == [] and len(cols["x"]["knots"]) == config.n_bins
    assert cols["color"]["values"] == ["red", "green", "blue"]
    assert cols["color"]["counts"][-1] == table["color"].isna().sum()  # the missing token's count
    ids = TabGPT(config, enc).encode(table)
    assert ids.shape == (len(table), 5) and ids.dtype == torch.float32


def test_loss_falls_in_a_few_dozen_steps(table):
    model = build(table)
    x = model.encode(table)
    before = model.validation_losses(x)["loss"]
    losses = train(model, x, 40)
    after = model.validation_losses(x)["loss"]
    # the head starts from each column's marginal: what falls is the dependence learned (color <-> size)
    assert after < before - 0.3, (before, after)
    assert np.mean(losses[-5:]) < np.mean(losses[:5])


def test_cached_sampling_path_matches_the_training_forward(trained, table):
    """block.step over a key/value cache computes what block.forward computes over the whole row."""
    x = trained.encode(table.head(64)).long()
    B, n = x.shape
    order = torch.arange(n).expand(B, n)
    start = torch.full((B, 1), trained.vocab_size)
    h = (trained.value_embed(torch.cat([start, x[:, :-1]], 1)) + trained.column_embed(torch.cat([torch.full((B, 1), n), order[:, :-1]], 1))
         + trained.next_embed(order))
    with torch.no_grad():
        full = h
        for block in trained.blocks:
            full = block(full)
        hd = trained.config.n_embd // trained.config.n_head
        caches = [(torch.empty(n, B, trained.config.n_head, hd), torch.empty(n, B, trained.config.n_head, hd))
                  for _ in trained.blocks]
        for k in range(n):
            step = h[:, k]
            for block, (keys, values) in zip(trained.blocks, caches, strict=True):
                step = block.step(step, keys, values, k)
            torch.testing.assert_close(step, full[:, k], rtol=1e-4, atol=1e-5)


def test_save_load_gives_identical_samples(trained, tmp_path):
    save_weights(trained, tmp_path / "model.safetensors")
    (tmp_path / "encoding.json").write_text(json.dumps({"columns": trained.columns, "version": 1}))
    again = TabGPT(trained.config, json.loads((tmp_path / "encoding.json").read_text()))
    load_weights(again, tmp_path / "model.safetensors")
    a = trained.sample(300, generator=torch.Generator().manual_seed(7))
    b = again.sample(300, generator=torch.Generator().manual_seed(7))
    pd.testing.assert_frame_equal(a, b)
    c = again.sample(300, generator=torch.Generator().manual_seed(8))
    assert not a.equals(c)


def test_samples_have_the_model_frame_types_and_ranges(samples, table):
    assert list(samples.columns) == list(table.columns)
    assert samples["color"].dtype == object and samples["gain"].dtype == np.float64
    for name in ("gain", "age", "x"):
        assert samples[name].notna().all()
        assert samples[name].min() >= table[name].min() and samples[name].max() <= table[name].max()
    assert (samples["age"] == samples["age"].round()).all() and (samples["gain"] == samples["gain"].round()).all()
    assert set(samples["age"]) <= set(table["age"])  # a discrete column draws seen values only
    assert samples["x"].nunique() > 1000  # a binned column draws values inside its bins, not bin labels
    assert set(samples["size"]) == {"S", "M", "L"}


def test_point_mass_and_missing_come_back_at_their_rates(samples, table):
    assert abs((samples["gain"] == 0).mean() - (table["gain"] == 0).mean()) < 0.04
    assert abs(samples["color"].isna().mean() - table["color"].isna().mean()) < 0.03
    # and the dependence: size follows color
    known = samples[samples["color"].notna()]
    agree = (known["size"] == known["color"].map({"red": "S", "green": "M", "blue": "L"})).mean()
    assert agree > 0.85


def test_conditions_hold_on_every_row_and_condition_the_rest(trained):
    gen = torch.Generator().manual_seed(3)
    blue = trained.sample(500, conditions={"color": "blue"}, generator=gen)
    assert (blue["color"] == "blue").all()
    assert (blue["size"] == "L").mean() > 0.8  # natural order: size is read after color
    large = trained.sample(500, conditions={"size": "L"}, generator=gen)
    assert (large["size"] == "L").all()
    assert (large["color"] == "blue").mean() > 0.6  # color read after size: the any-order training
    both = trained.sample(200, conditions={"age": 25, "x": 1.2345, "gain": 0}, generator=gen)
    assert (both["age"] == 25.0).all() and (both["x"] == 1.2345).all() and (both["gain"] == 0).all()
    missing = trained.sample(50, conditions={"color": None}, generator=gen)
    assert missing["color"].isna().all()


@pytest.mark.parametrize(("conditions", "message"), [
    ({"colour": "red"}, "cannot condition on 'colour'"),
    ({"color": "purple"}, "never saw"),
    ({"age": 99}, "give one inside"),
    ({"age": 25.5}, "never saw"),
    ({"x": "wide"}, "give a number"),
])
def test_bad_conditions_are_refused(trained, conditions, message):
    with pytest.raises(InvalidInput, match=message):
        trained.sample(10, conditions=conditions)


def test_bad_tables_are_refused(table):
    config = make_config(TabGPT, "tiny")
    with pytest.raises(InvalidInput, match="no column"):
        TabGPT.fit_encoding(config, table.drop(columns=["x"]), SPECS, seed=0)
    with pytest.raises(InvalidInput, match="empty table"):
        TabGPT.fit_encoding(config, table.head(0), SPECS, seed=0)
    bad = table.assign(x=table["x"].astype(object))
    bad.loc[3, "x"] = "wide"
    with pytest.raises(InvalidInput, match="'wide'"):
        TabGPT.fit_encoding(config, bad, SPECS, seed=0)
    model = build(table)
    with pytest.raises(InvalidInput, match="'purple'"):
        model.encode(table.assign(color="purple"))
