"""Conditions of any cardinality: rare and unseen values share a column's ``other`` token, every
column has a ``null`` token that condition dropout trains, and no value breaks training,
evaluation or generation. Data sets are written by the tests themselves."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
import torch

import aigc
from aigc.data.conditions import closest_values, null_token, other_token, unknown_value
from aigc.data.dataset import TextRecord
from aigc.data.split import split_of
from aigc.data.textstream import encode_records, null_lookup, null_prefix_ids, prefix_ids, random_windows
from aigc.data.tokenizers import TextTokenizer, cond_token
from aigc.errors import InvalidInput

SPLIT = (0.8, 0.1, 0.1)
FREQUENT = {"李白": "明月 故乡 霜", "杜甫": "春望 国破 山河", "王维": "空山 新雨 秋"}
N_RARE = 230  # more than the card lists (cards.MAX_CONDITION_VALUES = 200)


def _texts_in(split: str, stem: str, n: int) -> list[str]:
    """``n`` distinct texts that the hash split sends to ``split``."""
    out, i = [], 0
    while len(out) < n:
        text = f"{stem} 第{i}首"
        if split_of(text, SPLIT) == split:
            out.append(text)
        i += 1
    return out


def write_poets_csv(path: Path) -> Path:
    rows = []
    for author, words in FREQUENT.items():
        rows += [(t, author) for t in _texts_in("train", words, 30)]
    rows += [(t, "other") for t in _texts_in("train", "名叫other的诗人", 3)]  # a real value named "other"
    rows += [(f"孤篇 {i} 号 只此一首", f"诗人{i:03d}") for i in range(N_RARE)]  # one record each: rare
    rows += [(t, "劉濟") for t in _texts_in("val", "只在验证集 劉濟", 2)]  # never in train
    with open(path, "w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(["text", "author"])
        writer.writerows(rows)
    return path


@pytest.fixture(scope="module")
def poets(tmp_path_factory):
    root = tmp_path_factory.mktemp("poets")
    ws = aigc.open_workspace(root / "ws")
    card = aigc.ingest(write_poets_csv(root / "poets.csv"), "poets", workspace=ws, cond_columns=["author"],
                       split=SPLIT)
    aigc.train("poets", family="gpt", preset="tiny", name="p", workspace=ws, max_steps=6, eval_every=3,
               batch_size=8)
    return ws, card


def test_card_counts_cardinality_and_what_shares_other(poets):
    ws, card = poets
    train = {r.text for r in aigc_split(ws, "train")}
    rare_in_train = sum(1 for i in range(N_RARE) if f"孤篇 {i} 号 只此一首" in train)
    stats = card["condition_stats"]["author"]
    assert card["min_cond_count"] == 2
    assert stats == {
        "cardinality": 3 + 1 + N_RARE + 1,
        "own_token": 3 + 1,  # the three poets and "other", each with 30 or 3 train records
        "other_values": N_RARE + 1,
        "other_records": N_RARE + 2,
        "unseen_in_train": (N_RARE - rare_in_train) + 1,
    }
    assert len(card["conditions"]["author"]) == 200 and card["conditions_truncated"] == {"author": 235}


def aigc_split(ws, split: str) -> list[TextRecord]:
    from aigc.data.dataset import read_text_split

    return read_text_split(ws.dataset_path("poets"), split)


def test_val_only_value_trains_evaluates_and_generates(poets):
    ws, _ = poets
    assert "劉濟" in {r.cond["author"] for r in aigc_split(ws, "val")}
    assert "劉濟" not in {r.cond["author"] for r in aigc_split(ws, "train")}
    run = ws.get_run("p")
    assert run["status"] == "finished" and run["step"] == 6
    report = aigc.evaluate("p", workspace=ws, n_prompts=2, n_samples=2, max_new_tokens=6, cond_samples=1)
    assert report["likelihood"]["bits_per_char"] > 0
    gen = aigc.load("p", workspace=ws)
    other = gen.tokenizer.token_to_id(other_token("author"))
    assert gen.context_ids("", {"author": "劉濟"}) == [gen.tokenizer.eos_id, other]
    assert len(gen.generate("", cond={"author": "劉濟"}, max_new_tokens=4, seed=0)) == 1


def test_run_json_lists_every_value_and_rare_ones_share_other(poets):
    ws, card = poets
    spec = json.loads((Path(ws.get_run("p")["path"]) / "run.json").read_text(encoding="utf-8"))
    values = spec["conditions"]["author"]
    assert len(values) == card["condition_stats"]["author"]["cardinality"] == 235
    assert {"劉濟", "other", "诗人000", "诗人229"} <= set(values)
    gen = aigc.load("p", workspace=ws)
    tok = gen.tokenizer
    other = tok.token_to_id(other_token("author"))
    assert tok.token_to_id(cond_token("author", "诗人000")) is None  # one record: no token of its own
    assert gen.context_ids("", {"author": "诗人000"})[1] == other
    own = tok.token_to_id(cond_token("author", "other"))  # a value named "other" is not the shared token
    assert own is not None and own != other and gen.context_ids("", {"author": "other"})[1] == own
    assert gen.context_ids("", {"author": "李白"})[1] == tok.token_to_id(cond_token("author", "李白"))


def test_unknown_value_names_the_closest_known_values(poets):
    ws, _ = poets
    gen = aigc.load("p", workspace=ws)
    with pytest.raises(InvalidInput, match=r"unknown value '李白白' for condition 'author': the closest of "
                                           r"its 235 known values are 李白, "):
        gen.generate("", cond={"author": "李白白"})
    assert closest_values("李商", ["杜甫", "李白", "李商隐", "诗人001"], n=2) == ["李商隐", "李白"]
    assert "?" not in str(unknown_value("author", "x", []))


def test_null_tokens_are_in_every_new_conditional_run(poets):
    ws, _ = poets
    gen = aigc.load("p", workspace=ws)
    null = gen.tokenizer.token_to_id(null_token("author"))
    assert null is not None and null_prefix_ids(gen.tokenizer, ["author"]) == [gen.tokenizer.eos_id, null]
    spec = json.loads((Path(ws.get_run("p")["path"]) / "run.json").read_text(encoding="utf-8"))
    assert spec["train_config"]["cond_dropout"] == 0.1


def test_null_prefix_ids_is_none_without_null_tokens():
    # A run trained before null tokens existed: its value tokens only.
    old = TextTokenizer.train(["苹果 apple"], special_tokens=[cond_token("fruit", "apple")])
    assert null_prefix_ids(old, ["fruit"]) is None and null_lookup(old, ["fruit"]) is None
    assert null_prefix_ids(old, []) is None
    with pytest.raises(InvalidInput, match="unknown value 'pear' for condition 'fruit': the closest of its 1 "
                                           "known values are apple"):
        prefix_ids(old, {"fruit": "pear"}, ["fruit"], {"fruit": ["apple"]})
    with pytest.raises(InvalidInput, match="value 'pear' of condition 'fruit' has no token in this run"):
        prefix_ids(old, {"fruit": "pear"}, ["fruit"])  # its own data, but no other token to fall back to


def _dropout_stream():
    cols = ["fruit", "tone"]
    specials = [cond_token("fruit", v) for v in ("apple", "kiwi")]
    specials += [cond_token("tone", v) for v in ("a", "b")]
    specials += [t for c in cols for t in (other_token(c), null_token(c))]
    records = [TextRecord(f"record {i} text",
                          {"fruit": ("apple", "kiwi")[i % 2], "tone": ("a", "b")[i % 3 % 2]})
               for i in range(400)]
    tok = TextTokenizer.train([r.text for r in records], special_tokens=specials)
    return tok, cols, encode_records(tok, records, cols)


def test_condition_dropout_replaces_a_records_control_tokens_at_the_given_rate():
    tok, cols, stream = _dropout_stream()
    table = null_lookup(tok, cols)
    fruit_null, tone_null = (tok.token_to_id(null_token(c)) for c in cols)
    controls = {tok.token_to_id(t) for t in tok.special_tokens()} - {tok.eos_id, fruit_null, tone_null}

    def batch(p: float) -> torch.Tensor:
        gen = torch.Generator().manual_seed(0)
        return random_windows(stream.ids, 24, 4000, gen, stream.starts, 1.0, stream.is_cond, table, p)[0]

    x, plain = batch(0.25), batch(0.0)
    changed = x != plain
    # Only control tokens change, and only into their own column's null token.
    assert set(plain[changed].tolist()) <= controls and set(x[changed].tolist()) <= {fruit_null, tone_null}
    # Windows that begin at a record (aligned = 1.0, but the last record is clamped): [eos, fruit, tone, ...]
    at_start = x[:, 0] == tok.eos_id
    assert at_start.sum() > 3900
    dropped = changed[at_start, 1]
    assert torch.equal(dropped, changed[at_start, 2]), "a record's columns are dropped together"
    assert set(x[at_start, 1][dropped].tolist()) == {fruit_null}
    assert set(x[at_start, 2][dropped].tolist()) == {tone_null}
    rate = dropped.float().mean().item()
    assert 0.23 < rate < 0.27, rate  # ~3,990 draws at p = 0.25: three standard deviations is 0.021
    assert torch.equal(batch(0.25), x), "seeded: the same generator state gives the same batch"


def test_dropout_of_zero_and_runs_without_null_tokens_change_nothing():
    tok, cols, stream = _dropout_stream()
    gen = torch.Generator().manual_seed(3)
    ref, _ = random_windows(stream.ids, 24, 64, gen, stream.starts, 0.5)
    gen = torch.Generator().manual_seed(3)
    same, _ = random_windows(stream.ids, 24, 64, gen, stream.starts, 0.5, stream.is_cond, None, 0.3)
    assert torch.equal(ref, same)
    with pytest.raises(InvalidInput, match=r"--cond-dropout must be in \[0, 1\)"):
        from aigc.tasks import TextLMTask
        from aigc.training import TrainConfig

        TextLMTask(stream, stream, 24, TrainConfig(), cond_dropout=1.0, null_of=null_lookup(tok, cols))


def test_cond_dropout_is_a_train_option_and_out_of_range_is_refused(tmp_path):
    from typer.testing import CliRunner

    from aigc.cli.main import app

    r = CliRunner().invoke(app, ["train", "nothing", "--cond-dropout", "1.5", "--workspace", str(tmp_path / "ws")])
    assert r.exit_code == 2 and "--cond-dropout must be in [0, 1), got 1.5" in r.output
