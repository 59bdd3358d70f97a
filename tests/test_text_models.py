"""Text families end to end through the Python API: training lowers the loss, reloads are exact,
the KV cache changes nothing, stops/seeds/conditions behave, the export loads in transformers."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch

import aigc
from aigc.data.textstream import random_windows
from aigc.errors import InvalidInput
from aigc.models.registry import get_family, make_config
from helpers import write_fruit_csv


@pytest.fixture(scope="module")
def fruit_ws(tmp_path_factory):
    """A workspace with the fruit dataset and one trained tiny gpt and lstm run (module-shared)."""
    root = tmp_path_factory.mktemp("fruit")
    ws = aigc.open_workspace(root / "ws")
    aigc.ingest(write_fruit_csv(root / "fruit.csv"), "fruit", workspace=ws, cond_columns=["fruit", "tone"])
    for family in ("gpt", "lstm"):
        aigc.train("fruit", family=family, preset="tiny", name=f"fruit-{family}", workspace=ws,
                   max_steps=250, eval_every=50, seed=1)
    return ws


@pytest.mark.parametrize("family", ["gpt", "lstm"])
def test_a_few_steps_lower_the_loss(family):
    torch.manual_seed(0)
    fam = get_family(family)
    cfg = make_config(fam, "tiny", {"vocab_size": 12})
    model = fam(cfg)
    data = torch.tensor([0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11] * 50)
    gen = torch.Generator().manual_seed(0)
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    losses = []
    for _ in range(30):
        x, y = random_windows(data, 32, 8, gen)
        _, loss = model(x, y)
        loss.backward()
        opt.step()
        opt.zero_grad()
        losses.append(loss.item())
    assert losses[0] > math.log(12) * 0.9  # starts near chance
    assert losses[-1] < losses[0] * 0.6


@pytest.mark.parametrize("family", ["gpt", "lstm"])
def test_training_run_records_falling_loss(fruit_ws, family):
    run = fruit_ws.get_run(f"fruit-{family}")
    assert run["status"] == "finished" and run["step"] == 250
    rows = [json.loads(line) for line in (Path(run["path"]) / "metrics.jsonl").read_text().splitlines()]
    train = [r["train_loss"] for r in rows if "train_loss" in r]
    assert train[-1] < train[0] * 0.7
    assert run["best_val_loss"] < train[0]
    assert list((Path(run["path"]) / "tb").glob("events.out.tfevents.*")), "TensorBoard events are written"


@pytest.mark.parametrize("family", ["gpt", "lstm"])
def test_save_load_gives_identical_logits_and_samples(fruit_ws, family):
    a = aigc.load(f"fruit-{family}", workspace=fruit_ws)
    b = aigc.load(f"fruit-{family}", workspace=fruit_ws)
    x = torch.tensor([a.context_ids("apple", {"fruit": "apple"})], device=next(a.model.parameters()).device)
    with torch.no_grad():
        assert torch.equal(a.model(x)[0], b.model(x)[0])
    kw = dict(n=2, cond={"fruit": "kiwi"}, max_new_tokens=30, seed=5)
    assert a.generate("", **kw) == b.generate("", **kw)


def test_kv_cache_path_generates_the_same_tokens(fruit_ws):
    gen = aigc.load("fruit-gpt", workspace=fruit_ws)
    for opts in (dict(temperature=0.0), dict(temperature=1.0, seed=3), dict(temperature=0.9, top_k=5, seed=4),
                 dict(temperature=1.0, seed=5, cond={"fruit": "kiwi"}, guidance=2.5)):
        # 50 new tokens after the prefix stays within the 64-token block: the cache never refills
        cached = gen.generate("apple", n=3, max_new_tokens=50, use_cache=True, **opts)
        plain = gen.generate("apple", n=3, max_new_tokens=50, use_cache=False, **opts)
        assert cached == plain


def test_guidance_runs_the_unconditional_context_beside_the_conditional_one(fruit_ws):
    """A run trained with condition dropout (the default) knows a null token per column; under
    guidance each sample also decodes ``<|endoftext|>`` + the null tokens + the prompt."""
    from aigc.data.textstream import null_prefix_ids
    from aigc.decoding import Sampling, prefill

    gen = aigc.load("fruit-gpt", workspace=fruit_ws)
    null = null_prefix_ids(gen.tokenizer, gen.cond_columns)
    assert null is not None and len(null) == 1 + len(gen.cond_columns)
    group = gen.prepare("apple", 2, {"fruit": "kiwi"}, Sampling(guidance=2.0))
    assert group.width == 4
    assert group.contexts[0].tolist() == [gen.context_ids("apple", {"fruit": "kiwi"})]
    assert group.contexts[1].tolist() == [null + gen.tokenizer.encode("apple")]
    assert gen.prepare("apple", 2, None, Sampling(guidance=2.0)).width == 2, "no condition: one row each"
    # What the first token is drawn from, against the plain forward of each context
    group = gen.prepare("apple", 2, {"fruit": "kiwi"}, Sampling(guidance=3.0))
    runner = gen.runner(group.width)
    with torch.inference_mode():
        scores = group.scores(prefill(runner, group.prefill_parts(runner.block_size, runner.capacity)).logits)
        cond, uncond = (torch.log_softmax(gen.model(ctx)[0][:, -1], -1) for ctx in group.contexts)
    torch.testing.assert_close(scores, (uncond + 3.0 * (cond - uncond)).expand(2, -1), atol=1e-4, rtol=1e-4)


def test_cli_generate_passes_guidance_to_text_runs(fruit_ws):
    from typer.testing import CliRunner

    from aigc.cli.main import app

    gen = aigc.load("fruit-gpt", workspace=fruit_ws)
    args = ["generate", "fruit-gpt", "", "--cond", "fruit=kiwi", "-m", "20", "--seed", "4",
            "--temperature", "1", "--no-stream", "--workspace", str(fruit_ws.root)]
    guided = CliRunner().invoke(app, args + ["--guidance", "3"])
    assert guided.exit_code == 0, guided.output
    expected = gen.generate("", cond={"fruit": "kiwi"}, max_new_tokens=20, seed=4, temperature=1.0,
                            guidance=3.0)[0]
    assert guided.stdout.strip() == expected.strip()
    bad = CliRunner().invoke(app, args + ["--guidance", "-1"])
    assert bad.exit_code == 2 and "guidance must be a finite number >= 0" in bad.output


def test_cli_generate_rerank_prints_the_judges_pick_of_the_candidates(fruit_ws):
    from typer.testing import CliRunner

    from aigc.cli.main import app
    from aigc.rerank import generate_reranked, judge_for_run

    gen = aigc.load("fruit-gpt", workspace=fruit_ws)
    args = ["generate", "fruit-gpt", "", "--cond", "fruit=kiwi", "-m", "20", "--seed", "4", "--temperature", "1",
            "--n", "2", "--rerank", "3", "--workspace", str(fruit_ws.root)]
    r = CliRunner().invoke(app, args)
    assert r.exit_code == 0, r.output
    expected = generate_reranked(gen, "", n=2, cond={"fruit": "kiwi"}, candidates=3,
                                 judge=judge_for_run(fruit_ws, "fruit-gpt"), max_new_tokens=20, seed=4,
                                 temperature=1.0)
    drawn = gen.generate("", n=6, cond={"fruit": "kiwi"}, max_new_tokens=20, seed=4, temperature=1.0)
    assert set(expected) <= set(drawn)  # picks among the 6 candidates the same seed draws
    assert [line.strip() for line in r.stdout.splitlines() if line.strip()] == [t.strip() for t in expected]


@pytest.mark.parametrize("normalize", [True, False])
def test_prompts_are_normalized_as_the_training_text_was(tmp_path, normalize):
    """Full-width letters and digits, as a Chinese input method types them, fold to the ASCII the
    training text was normalized to; a run ingested without normalization keeps them as typed."""
    ws = aigc.open_workspace(tmp_path / "ws")
    lines = [f"ＡＢＣ茶杯{i % 10}号，好！" if i % 2 else f"abc 茶 {i % 10} 杯" for i in range(80)]
    (tmp_path / "copy.txt").write_text("\n".join(lines) + "\n", encoding="utf-8")
    aigc.ingest(tmp_path / "copy.txt", "copy", workspace=ws, lines=True, normalize=normalize)
    aigc.train("copy", family="gpt", preset="tiny", name="copy-gpt", workspace=ws, max_steps=2, eval_every=2)
    gen = aigc.load("copy-gpt", workspace=ws)
    assert gen.normalize is normalize
    typed = "ＡＢＣ茶杯１号，好！"  # full-width letters, digit and punctuation
    if normalize:
        # NFKC folds the letters and the digit; Chinese punctuation stays full-width, as in ingest
        assert gen.context_ids(typed)[1:] == gen.tokenizer.encode("ABC茶杯1号，好！")
        assert len(gen.generate(typed, max_new_tokens=3, seed=1)) == 1
    else:
        assert gen.context_ids("ＡＢＣ茶杯")[1:] == gen.tokenizer.encode("ＡＢＣ茶杯")
        with pytest.raises(InvalidInput, match="never saw in training.*'１'"):
            gen.generate(typed, max_new_tokens=3)


def test_lean_cached_forward_matches_transformers_forward():
    torch.manual_seed(0)
    fam = get_family("gpt")
    model = fam(make_config(fam, "tiny", {"vocab_size": 40})).eval()
    x = torch.randint(0, 40, (2, 30))
    with torch.no_grad():
        ref = model(x)[0]
        cache = model.init_cache(2)
        parts = [model.forward_cached(x[:, :10], cache, last_only=False),
                 model.forward_cached(x[:, 10:11], cache, last_only=False),
                 model.forward_cached(x[:, 11:], cache, last_only=False)]  # a chunk after context: masked path
    torch.testing.assert_close(torch.cat(parts, 1), ref, atol=1e-5, rtol=1e-5)


def test_decode_weights_follow_every_update_of_the_model():
    """The fused, transposed weights decoding reads are kept between generations; an optimizer step,
    a load_state_dict or a dtype change must not leave the cached path on stale weights."""
    torch.manual_seed(0)
    fam = get_family("gpt")
    model = fam(make_config(fam, "tiny", {"vocab_size": 40}))
    x = torch.randint(0, 40, (2, 16))

    def check():
        model.eval()
        with torch.no_grad():
            cached = model.forward_cached(x, model.init_cache(2), last_only=False)
            ref = model(x)[0]
        torch.testing.assert_close(cached, ref, atol=1e-4, rtol=1e-4)
        return cached

    first = check()
    assert model._decode_weights() is model._decode_weights(), "kept while nothing changes"
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2)
    model.train()
    model(x, x)[1].backward()
    opt.step()
    assert not torch.allclose(check(), first), "the step changed the outputs, and the cached path saw it"
    fresh = fam(make_config(fam, "tiny", {"vocab_size": 40}))
    model.load_state_dict(fresh.state_dict())
    check()
    model.double()
    assert check().dtype == torch.float64


def test_scripted_layers_are_bit_equal_to_eager():
    """forward_cached and decode_slots run their layers as one TorchScript call each (the engine
    prefills beside its decode loop); they must compute exactly what the eager functions do, call
    after call (the profiling executor re-optimizes after the first runs)."""
    from aigc.models import gpt

    torch.manual_seed(0)
    fam = get_family("gpt")
    model = fam(make_config(fam, "tiny", {"vocab_size": 40})).eval()
    x = torch.randint(0, 40, (2, 30))

    def run(cached_layers, slot_layers):
        gpt._SCRIPTED[gpt._cached_layers], gpt._SCRIPTED[gpt._slot_layers] = cached_layers, slot_layers
        cache, slots = model.init_cache(2), model.init_slots(3)
        with torch.inference_mode():
            outs = [model.forward_cached(x[:, a:b], cache, last_only=False) for a, b in ((0, 12), (12, 13), (13, 30))]
            model.prefill_slots(x[:, :9], slots, [0, 2])
            model.prefill_slots(x[:1, :4], slots, [1])  # rows at different lengths: the masked path
            outs += [model.decode_slots(x[:, 9 + t].repeat(2)[:3], slots) for t in range(5)]
        return torch.cat([o.flatten() for o in outs]), cache.k.clone(), slots.k.clone()

    eager = run(gpt._cached_layers, gpt._slot_layers)
    gpt._SCRIPTED.clear()
    scripted = gpt._scripted_layers(), gpt._scripted_slot_layers()
    assert scripted[0] is not gpt._cached_layers, "TorchScript compiled the prefill layers"
    assert scripted[1] is not gpt._slot_layers, "TorchScript compiled the decode layers"
    for _ in range(4):
        out = run(*scripted)
        assert all(torch.equal(a, b) for a, b in zip(out, eager))


def test_seeds_stops_and_streaming(fruit_ws):
    gen = aigc.load("fruit-gpt", workspace=fruit_ws)
    same = [gen.generate("", cond={"fruit": "apple"}, max_new_tokens=40, seed=11)[0] for _ in range(2)]
    assert same[0] == same[1]
    others = {gen.generate("", cond={"fruit": "apple"}, max_new_tokens=40, seed=s, temperature=1.2)[0]
              for s in range(6)}
    assert len(others) > 1
    full = gen.generate("", cond={"fruit": "apple"}, max_new_tokens=40, seed=11)[0]
    stop = full[len(full) // 2 : len(full) // 2 + 2]
    cut = gen.generate("", cond={"fruit": "apple"}, max_new_tokens=40, seed=11, stop=[stop])[0]
    assert cut == full[: full.index(stop)] and stop not in cut
    chunks = list(gen.stream("", cond={"fruit": "apple"}, max_new_tokens=40, seed=11))
    assert "".join(c.text for c in chunks) == full
    # the output rail releases checked sentences (this text has no sentence end: all at once) ...
    assert len(chunks) == 1
    # ... and without the safety layer text arrives token by token
    from aigc import runs

    bare = runs.load(fruit_ws, "fruit-gpt", safety=False)
    chunks = list(bare.stream("", cond={"fruit": "apple"}, max_new_tokens=40, seed=11))
    assert "".join(c.text for c in chunks) == full
    assert len(chunks) > 3, "text arrives in pieces, not at the end"
    assert chunks[-1].finish_reason in ("stop", "length") and all(c.finish_reason is None for c in chunks[:-1])


@pytest.mark.parametrize("family", ["gpt", "lstm"])
def test_conditions_steer_generation(fruit_ws, family):
    gen = aigc.load(f"fruit-{family}", workspace=fruit_ws)
    apple = " ".join(gen.generate("", n=8, cond={"fruit": "apple"}, max_new_tokens=30, seed=0, temperature=0.5))
    kiwi = " ".join(gen.generate("", n=8, cond={"fruit": "kiwi"}, max_new_tokens=30, seed=0, temperature=0.5))
    def han(text: str) -> float:
        return sum("\u4e00" <= ch <= "\u9fff" for ch in text) / max(1, len(text))

    assert han(apple) < 0.05 and han(kiwi) > 0.4, (apple[:80], kiwi[:80])
    assert "猕" not in apple and "apple" not in kiwi


def test_bad_generation_requests_name_the_problem(fruit_ws):
    gen = aigc.load("fruit-gpt", workspace=fruit_ws)
    with pytest.raises(InvalidInput, match=r"unknown value 'pear' for condition 'fruit'.*apple, kiwi"):
        gen.generate("", cond={"fruit": "pear"})
    with pytest.raises(InvalidInput, match="unknown condition 'color'"):
        gen.generate("", cond={"color": "red"})
    with pytest.raises(InvalidInput, match=r"never saw in training \('Z'\)"):
        gen.generate("Z")
    with pytest.raises(InvalidInput, match="temperature"):
        gen.generate("", temperature=-1)
    with pytest.raises(InvalidInput, match="top_p"):
        gen.generate("", top_p=2)


def test_export_loads_in_transformers_with_identical_greedy_output(fruit_ws):
    from transformers import AutoModelForCausalLM, PreTrainedTokenizerFast

    export = Path(fruit_ws.get_run("fruit-gpt")["path"]) / "export"
    hf_model = AutoModelForCausalLM.from_pretrained(export, local_files_only=True).eval()
    hf_tok = PreTrainedTokenizerFast.from_pretrained(export, local_files_only=True)
    gen = aigc.load("fruit-gpt", workspace=fruit_ws)
    ids = gen.context_ids("apple red", {"fruit": "apple", "tone": "a"})
    prompt = "<|endoftext|><|fruit=apple|><|tone=a|>apple red"
    assert hf_tok(prompt)["input_ids"] == ids  # the exported tokenizer reads our control prefix
    ours = gen.generate("apple red", cond={"fruit": "apple", "tone": "a"}, max_new_tokens=20, temperature=0.0)[0]
    with torch.no_grad():
        out = hf_model.generate(torch.tensor([ids]), max_new_tokens=20, do_sample=False, use_cache=True)
    theirs = hf_tok.decode(out[0, len(ids):], skip_special_tokens=True)
    assert ours and theirs == ours
