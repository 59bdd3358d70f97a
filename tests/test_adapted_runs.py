"""Runs adapted from a pretrained base (issue 12, part 2): `aigc train DATASET --base NAME` turns a
dataset's records into instructions through a prompt template, adapts the base (full or LoRA)
under the one loop, and the run generates what its condition asks for, exports a merged
checkpoint (chat template in tokenizer_config.json) and a peft adapter that load back with equal
outputs, resumes, trains from a chat file, and refuses bad input in one line with nothing written."""

from __future__ import annotations

import csv
import json
import random

import pytest
import torch
from test_bases import save_tiny
from typer.testing import CliRunner

import aigc
from aigc.cli.main import app
from aigc.pretrained import bases as B
from aigc.pretrained.formats import DEFAULT_CHAT_TEMPLATE
from aigc.workspace import Workspace

# ends an assistant turn with the eos token, so a sample stops where its answer does
TEMPLATE = ("{% for m in messages %}<{{ m['role'] }}>{{ m['content'] }}{% if m['role'] == 'assistant' %}"
            "{{ eos_token }}{% endif %}\n{% endfor %}{% if add_generation_prompt %}<assistant>{% endif %}")
ANSWERS = {"tea": "leaves steep hot", "pan": "iron sear oil"}


def _shop(path, n: int = 120, seed: int = 0):
    rnd = random.Random(seed)
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["topic", "text"])
        for _ in range(n):
            topic = rnd.choice(sorted(ANSWERS))
            w.writerow([topic, ANSWERS[topic] + " " + "".join(rnd.choice("xyzw") for _ in range(5))])
    return path


def tiny_shop_workspace(root):
    """A workspace at ``root/ws`` with the tiny llama registered as base "tiny" and the topic data as "shop"."""
    ws = aigc.open_workspace(root / "ws")
    save_tiny(root / "tiny", "llama", TEMPLATE)
    B.add_base(ws, str(root / "tiny"), "tiny")
    aigc.ingest(str(_shop(root / "shop.csv")), "shop", text_column="text", cond_columns=["topic"], workspace=ws)
    return ws


@pytest.fixture
def ws(tmp_path):
    ws = Workspace(tmp_path / "ws")
    save_tiny(tmp_path / "tiny", "llama", TEMPLATE)
    B.add_base(ws, str(tmp_path / "tiny"), "tiny")
    aigc.ingest(str(_shop(tmp_path / "shop.csv")), "shop", text_column="text", cond_columns=["topic"], workspace=ws)
    return ws


def _logits(model, ids):
    with torch.no_grad():
        return model(ids).logits


def test_a_full_adaptation_answers_what_its_condition_asks_and_exports_a_checkpoint(ws, tmp_path):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    row = aigc.train("shop", base="tiny", method="full", prompt_template="write about {topic}", max_steps=300,
                     lr=1e-2, batch_size=8, eval_every=100, adapt={"block_size": 96}, workspace=ws)
    assert row["status"] == "finished" and row["family"] == "full" and row["step"] == 300
    spec = json.loads((ws.run_path(row["name"]) / "run.json").read_text())
    assert spec["base"] == "tiny" and spec["adapt"]["method"] == "full" and spec["data"]["template"] == "write about {topic}"
    assert spec["cond_columns"] == ["topic"] and spec["conditions"] == {"topic": ["pan", "tea"]}
    gen = aigc.load(row["name"], workspace=ws)
    # (the tiny test tokenizer decodes with a space between characters)
    assert "writeabouttea" in gen.tokenizer.decode(gen.context_ids("", {"topic": "tea"})).replace(" ", "")
    for topic, answer in ANSWERS.items():  # the asked topic's words come out, and the sample ends
        text = gen.generate(cond={"topic": topic}, temperature=0, max_new_tokens=40)[0].replace(" ", "")
        assert text.startswith(answer.replace(" ", "")), (topic, text)
    export = ws.run_path(row["name"]) / "export"
    model = AutoModelForCausalLM.from_pretrained(export).eval()
    tok = AutoTokenizer.from_pretrained(export)
    assert json.loads((export / "tokenizer_config.json").read_text())["chat_template"] == TEMPLATE
    ids = torch.tensor([gen.context_ids("", {"topic": "pan"})])
    with torch.no_grad():  # the export is the served model
        torch.testing.assert_close(_logits(model, ids), gen.model(ids.to(gen.device))[0].float().cpu())
    assert tok.apply_chat_template([{"role": "user", "content": "x"}], tokenize=False) == "<user>x"


def test_a_lora_run_saves_adapters_exports_a_peft_folder_equal_to_the_merge_and_resumes(ws, tmp_path):
    from peft import PeftModel
    from safetensors.torch import load_file
    from transformers import AutoModelForCausalLM

    row = aigc.train("shop", base="tiny", name="lora-run", prompt_template="write about {topic}", max_steps=20,
                     lr=3e-2, batch_size=8, eval_every=10, adapt={"block_size": 96, "r": 4, "alpha": 8},
                     workspace=ws)
    run_dir = ws.run_path("lora-run")
    saved = load_file(run_dir / "model.safetensors")
    assert saved and all("lora_" in k for k in saved)  # the adapters alone
    export = run_dir / "export"
    merged = AutoModelForCausalLM.from_pretrained(export).eval()
    peft = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(tmp_path / "tiny"), export / "adapter").eval()
    ids = torch.randint(3, 30, (2, 24), generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(_logits(peft, ids), _logits(merged, ids), atol=1e-5, rtol=1e-4)
    base = AutoModelForCausalLM.from_pretrained(tmp_path / "tiny").eval()
    assert not torch.allclose(_logits(base, ids), _logits(merged, ids))  # the adapters changed something
    before = row["best_val_loss"]
    row = aigc.resume("lora-run", max_steps=40, workspace=ws)
    assert row["step"] == 40 and row["best_val_loss"] <= before


def test_a_chat_file_trains_a_run_that_answers_a_conversation(ws, tmp_path):
    chats = tmp_path / "chats.jsonl"
    with chats.open("w") as f:
        for i in range(40):
            topic = ("tea", "pan")[i % 2]
            f.write(json.dumps({"messages": [{"role": "user", "content": f"tell me about {topic}"},
                                             {"role": "assistant", "content": ANSWERS[topic]}]}) + "\n")
    row = aigc.train(base="tiny", method="full", chat_file=str(chats), max_steps=200, lr=1e-2, batch_size=8,
                     eval_every=100, adapt={"block_size": 64}, workspace=ws)
    run_dir = ws.run_path(row["name"])
    assert row["dataset"] == "chat:chats.jsonl" and (run_dir / "chats.jsonl").is_file()
    gen = aigc.load(row["name"], workspace=ws)
    from aigc.decoding import Sampling, run

    group = gen.prepare("", 1, None, Sampling(temperature=0, max_new_tokens=30),
                        messages=[{"role": "user", "content": "tell me about pan"}])
    text = "".join(c.text for c in run(gen.runner(group.width), group)).replace(" ", "")
    assert text == "ironsearoil", text


def test_a_base_without_a_chat_template_gets_the_default_one(ws, tmp_path):
    save_tiny(tmp_path / "plain", "llama", None)
    B.add_base(ws, str(tmp_path / "plain"), "plain")
    row = aigc.train("shop", base="plain", max_steps=2, adapt={"block_size": 96}, workspace=ws)
    spec = json.loads((ws.run_path(row["name"]) / "run.json").read_text())
    assert spec["chat_template_added"] is True
    assert spec["data"]["template"] == "Write a text with topic: {topic}."  # the generic default
    export = ws.run_path(row["name"]) / "export"
    assert json.loads((export / "tokenizer_config.json").read_text())["chat_template"] == DEFAULT_CHAT_TEMPLATE


@pytest.mark.parametrize("args, message", [
    (["shop", "--base", "tiny", "--prompt-template", "about {colour}"], "names column 'colour'"),
    (["shop", "--base", "tiny", "--prompt-column", "colour"], "--prompt-column 'colour' is not a condition column"),
    (["shop", "--base", "tiny", "--response-column", "body"], "is not dataset 'shop''s text column"),
    (["shop", "--base", "tiny", "--chat", "x.jsonl"], "not both"),
    (["--base", "tiny"], "missing DATASET"),
    (["shop", "--base", "tiny", "--set", "n_layer=2"], "--set overrides a from-scratch family"),
    (["shop", "--prompt-template", "x"], "add --base NAME"),
    (["shop", "--base", "nope"], "unknown base 'nope'"),
    (["shop", "--base", "tiny", "--method", "qlora"], "--method must be one of lora, full"),
    (["shop", "--base", "tiny", "--lora-r", "0"], "LoRA needs rank >= 1"),
    (["shop", "--base", "tiny", "--block-size", "4"], "--block-size must be"),
    (["--base", "tiny", "--chat", "CHATS"], "line 2"),
])
def test_bad_input_is_one_line_exit_2_and_writes_no_run(ws, tmp_path, args, message):
    chats = tmp_path / "bad.jsonl"
    chats.write_text(json.dumps({"messages": [{"role": "user", "content": "a"}, {"role": "assistant", "content": "b"}]})
                     + "\n" + json.dumps({"messages": [{"content": "no role"}]}) + "\n")
    args = [str(chats) if a == "CHATS" else a for a in args]
    result = CliRunner().invoke(app, ["train", *args, "--workspace", str(ws.root)])
    assert result.exit_code == 2, result.output
    assert message in result.output and "Traceback" not in result.output
    assert ws.list_runs() == []
    assert not ws.runs_dir.exists() or not any(ws.runs_dir.iterdir())


def test_eval_of_an_adapted_run_scores_responses_accuracy_and_sets_base_beside_adapted(ws):
    row = aigc.train("shop", base="tiny", method="full", prompt_template="write about {topic}", max_steps=300,
                     lr=1e-2, batch_size=8, eval_every=300, adapt={"block_size": 96}, workspace=ws)
    result = aigc.evaluate(row["name"], workspace=ws, n_prompts=6, cond_samples=4, max_new_tokens=30, temperature=0.3)
    assert result["likelihood"]["scored"] == "responses" and result["likelihood"]["perplexity"] < 3
    accuracy = result["conditional"]["columns"]["topic"]["accuracy"]
    assert accuracy >= 0.9, result["conditional"]  # the asked topic is what a classifier reads back
    pair = result["side_by_side"][0]
    assert pair["instruction"].startswith("write about ") and pair["base"] != pair["adapted"]
    assert aigc.open_workspace(ws).get_run(row["name"])["summary"]["eval"]["conditional_accuracy_min"] == accuracy


def test_aigc_export_writes_a_gguf_that_transformers_reads_back_and_a_modelfile(tmp_path):
    from test_gguf_export import _bpe_tokenizer
    from transformers import AutoModelForCausalLM

    ws = Workspace(tmp_path / "ws")
    model = save_tiny(tmp_path / "bpe", "llama", TEMPLATE)
    tok = _bpe_tokenizer()
    tok.chat_template = TEMPLATE
    tok.save_pretrained(tmp_path / "bpe")
    model.config.vocab_size = len(tok)
    AutoModelForCausalLM.from_config(model.config).save_pretrained(tmp_path / "bpe")
    B.add_base(ws, str(tmp_path / "bpe"), "bpe")
    aigc.ingest(str(_shop(tmp_path / "shop.csv")), "shop", text_column="text", cond_columns=["topic"], workspace=ws)
    aigc.train("shop", base="bpe", name="r", max_steps=2, adapt={"block_size": 64}, workspace=ws)
    cli = CliRunner()
    result = cli.invoke(app, ["export", "r", "--gguf", "f16", "--workspace", str(ws.root)])
    assert result.exit_code == 0, result.output
    export = ws.run_path("r") / "export"
    back = AutoModelForCausalLM.from_pretrained(export, gguf_file="r-f16.gguf").eval()
    merged = AutoModelForCausalLM.from_pretrained(export).eval()
    ids = torch.tensor([tok.encode("hello world")])
    torch.testing.assert_close(_logits(back, ids), _logits(merged, ids), atol=2e-2, rtol=1e-2)
    assert (export / "Modelfile").read_text().startswith("FROM ./r-f16.gguf")
    for args, message in ((["r", "--gguf", "q4"], "--gguf must be one of"), (["nope"], "unknown run")):
        bad = cli.invoke(app, ["export", *args, "--workspace", str(ws.root)])
        assert bad.exit_code == 2 and message in bad.output, bad.output


def test_the_demo_adapts_an_available_base_and_shows_it_beside_the_base(tmp_path, capsys):
    from aigc.cli import demo

    ws = Workspace(tmp_path / "ws")
    save_tiny(tmp_path / "tiny", "llama", TEMPLATE)
    B.add_base(ws, str(tmp_path / "tiny"), "gemma-3-270m")  # as if its terms were accepted: it comes first
    aigc.ingest(demo.sample_corpus(), "shop", workspace=ws, text_column="text", cond_columns=["category", "tone", "lang"])
    assert demo._adapt(ws, "0") is None  # 0 skips
    run = demo._adapt(ws, "2s")
    assert run == "shop-gemma-3-270m-lora" and ws.get_run(run)["status"] == "finished"
    shown = capsys.readouterr().out
    assert "adapting gemma-3-270m" in shown and shown.count("base ") >= 2 and shown.count("adapted ") >= 2
    assert "Write a playful product description for tea (language: en)" in shown
    assert demo._adapt(ws, "2s") == run and "adapting" not in capsys.readouterr().out  # a finished run is reused
