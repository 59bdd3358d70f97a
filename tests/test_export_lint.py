"""The export lint (issue 18, part 5): our exports carry what vLLM, TGI, llama.cpp and Ollama read.

A tiny gpt trained from scratch (through `aigc train`) and a LoRA run on a tiny Llama with a ChatML
template (exported to GGUF with its Modelfile through `aigc export RUN --lint`) pass the lint; each
check fails on a copy broken in the way it guards against; make_portable turns what transformers 5's
save_pretrained writes into a folder that passes, without changing a logit; transformers renders the
chat exactly as the template in tokenizer_config.json (what TGI and Ollama read) does."""

from __future__ import annotations

import importlib.util
import json
import re
import shutil

import pytest
import torch
from test_adapted_runs import _shop
from test_bases import save_tiny
from test_gguf_export import CHATML, _bpe_tokenizer
from typer.testing import CliRunner

import aigc
from aigc.cli.main import app
from aigc.errors import InvalidInput
from aigc.pretrained import bases as B
from aigc.pretrained import export_lint as L
from helpers import write_fruit_csv

runner = CliRunner()


def cli(*args) -> object:
    return runner.invoke(app, [str(a) for a in args])


def levels(findings) -> dict[str, str]:
    """check -> its worst level (a check may report once per GGUF file)."""
    out: dict[str, str] = {}
    for f in findings:
        if f.check not in out or L.LEVELS.index(f.level) < L.LEVELS.index(out[f.check]):
            out[f.check] = f.level
    return out


@pytest.fixture(scope="module")
def exports(tmp_path_factory):
    """{"gpt": export/ of a tiny gpt run, "adapted": export/ of a LoRA run on a tiny ChatML Llama, with
    its GGUF and Modelfile}, and the output of `aigc export ... --lint` on each."""
    from transformers import AutoModelForCausalLM

    root = tmp_path_factory.mktemp("lint")
    ws = root / "ws"
    r = cli("ingest", write_fruit_csv(root / "fruit.csv"), "--name", "fruit", "--cond-column", "fruit", "-w", ws)
    assert r.exit_code == 0, r.output
    r = cli("train", "fruit", "--family", "gpt", "--preset", "tiny", "--name", "g", "--max-steps", "5", "-w", ws)
    assert r.exit_code == 0, r.output
    gpt_lint = cli("export", "g", "--lint", "-w", ws)

    model = save_tiny(root / "bpe", "llama", CHATML)
    tok = _bpe_tokenizer()  # byte-level BPE, ChatML specials and template, eos <|im_end|>
    tok.save_pretrained(root / "bpe")
    model.config.vocab_size = len(tok)
    AutoModelForCausalLM.from_config(model.config).save_pretrained(root / "bpe")
    w = aigc.open_workspace(ws)
    B.add_base(w, str(root / "bpe"), "bpe")
    aigc.ingest(str(_shop(root / "shop.csv")), "shop", text_column="text", cond_columns=["topic"], workspace=w)
    aigc.train("shop", base="bpe", name="r", max_steps=2, adapt={"block_size": 64}, workspace=w)
    adapted_lint = cli("export", "r", "--gguf", "f16", "--lint", "-w", ws)
    return {"gpt": w.run_path("g") / "export", "adapted": w.run_path("r") / "export",
            "gpt_lint": gpt_lint, "adapted_lint": adapted_lint}


def test_a_gpt_run_trained_from_scratch_exports_a_folder_that_passes_the_lint(exports):
    result = exports["gpt_lint"]
    assert result.exit_code == 0, result.output
    assert "trained from scratch: no GGUF" in result.output and "\n0 error," in result.output
    found = levels(L.lint(exports["gpt"]))
    # a model that continues text has no chat template: the one warning; no GGUF, so no GGUF checks
    assert {c for c, level in found.items() if level != "ok"} == {"tokenizer_config.chat_template", "gguf.read"}
    assert found["tokenizer_config.chat_template"] == "warning" and found["gguf.read"] == "skipped"
    config = json.loads((exports["gpt"] / "config.json").read_text())
    assert config["rope_theta"] == config["rope_parameters"]["rope_theta"] and config["torch_dtype"] == "float32"
    tok_config = json.loads((exports["gpt"] / "tokenizer_config.json").read_text())
    assert tok_config["tokenizer_class"] == "PreTrainedTokenizerFast"


def test_an_adapted_run_with_its_gguf_and_modelfile_passes_the_lint(exports):
    result = exports["adapted_lint"]
    assert result.exit_code == 0, result.output
    assert "wrote" in result.output and "\n0 error," in result.output
    found = levels(L.lint(exports["adapted"]))
    expected_skips = set() if importlib.util.find_spec("xllamacpp") else {"gguf.llamacpp"}
    assert {c for c, level in found.items() if level != "ok"} == expected_skips, found
    assert set(found) == set(L.READERS)  # every check ran
    modelfile = (exports["adapted"] / "Modelfile").read_text()
    assert '<|im_start|>' in modelfile and 'PARAMETER stop "<|im_end|>"' in modelfile
    # the LoRA adapter's own tokenizer (vLLM loads it with AutoTokenizer) is portable too
    adapter = json.loads((exports["adapted"] / "adapter" / "tokenizer_config.json").read_text())
    assert adapter["tokenizer_class"] == "PreTrainedTokenizerFast" and adapter["chat_template"] == CHATML


def test_transformers_loads_the_exports_and_renders_the_chat_as_tokenizer_config_says(exports):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    folder = exports["adapted"]
    model = AutoModelForCausalLM.from_pretrained(folder).eval()
    tok = AutoTokenizer.from_pretrained(folder)
    template = json.loads((folder / "tokenizer_config.json").read_text())["chat_template"]
    assert template == (folder / "chat_template.jinja").read_text() == CHATML
    for prompt in (True, False):
        want = L.render_chat(template, L.SAMPLE_CHAT, prompt, {"eos_token": tok.eos_token, "bos_token": tok.bos_token})
        assert tok.apply_chat_template(L.SAMPLE_CHAT, tokenize=False, add_generation_prompt=prompt) == want
    ids = torch.tensor([tok("hello world")["input_ids"]])
    with torch.no_grad():
        assert torch.isfinite(model(ids).logits).all()
    gpt = AutoModelForCausalLM.from_pretrained(exports["gpt"])
    assert gpt.config.vocab_size == len(AutoTokenizer.from_pretrained(exports["gpt"]))


def _edit_json(name, change):
    def edit(folder):
        data = json.loads((folder / name).read_text())
        change(data)
        (folder / name).write_text(json.dumps(data))
    return edit


def _rename_tensor(folder):
    from safetensors.torch import load_file, save_file

    state = load_file(str(folder / "model.safetensors"))
    state["model.final_norm.weight"] = state.pop("model.norm.weight")
    save_file(state, str(folder / "model.safetensors"), metadata={"format": "pt"})


def _foreign_metadata(folder):
    from safetensors.torch import load_file, save_file

    save_file(load_file(str(folder / "model.safetensors")), str(folder / "model.safetensors"),
              metadata={"format": "np"})


def _lowercase_tokenizer(folder):  # transformers then splits text differently from the GGUF
    data = json.loads((folder / "tokenizer.json").read_text())
    data["normalizer"] = {"type": "Lowercase"}
    (folder / "tokenizer.json").write_text(json.dumps(data))


def _drop_stop(folder):
    text = (folder / "Modelfile").read_text()
    (folder / "Modelfile").write_text(text.replace('PARAMETER stop "<|im_end|>"\n', ""))


BREAKS = {
    "config.present": lambda f: (f / "config.json").unlink(),
    "config.architectures": _edit_json("config.json", lambda c: c.update(architectures=["NopeForCausalLM"])),
    "config.model_type": _edit_json("config.json", lambda c: c.update(model_type="nope")),
    "config.dtype": _edit_json("config.json", lambda c: c.pop("torch_dtype")),
    "config.max_position_embeddings": _edit_json("config.json", lambda c: c.pop("max_position_embeddings")),
    "config.vocab_size": _edit_json("config.json", lambda c: c.update(vocab_size=100)),
    "config.special_ids": _edit_json("config.json", lambda c: c.update(eos_token_id=5)),
    "config.rope_theta": _edit_json("config.json", lambda c: c.pop("rope_theta")),  # transformers 5's default
    "tokenizer.json": lambda f: (f / "tokenizer.json").write_text("{"),
    "tokenizer_config.tokenizer_class": _edit_json("tokenizer_config.json",
                                                   lambda t: t.update(tokenizer_class="TokenizersBackend")),
    "tokenizer_config.extra_special_tokens": _edit_json("tokenizer_config.json",
                                                        lambda t: t.update(extra_special_tokens=["<|im_start|>"])),
    "tokenizer_config.chat_template": _edit_json("tokenizer_config.json", lambda t: t.pop("chat_template")),
    "tokenizer.special_tokens": _edit_json("tokenizer_config.json", lambda t: t.update(pad_token="<|nope|>")),
    "generation_config.eos": _edit_json("generation_config.json", lambda g: g.update(eos_token_id=[0])),
    "weights.safetensors": _foreign_metadata,
    "weights.load": _rename_tensor,
    "tokenizer.load": lambda f: (f / "chat_template.jinja").write_text(CHATML.replace("\n", " ")),
    "gguf.read": lambda f: next(f.glob("*.gguf")).write_bytes(next(f.glob("*.gguf")).read_bytes()[:4096]),
    "gguf.llamacpp": _lowercase_tokenizer,
    "modelfile.from": lambda f: (f / "Modelfile").write_text("FROM ./elsewhere.gguf\n"),
    "modelfile.template": _drop_stop,
}


def test_every_check_has_a_breakage():
    assert set(BREAKS) == set(L.READERS)


@pytest.mark.parametrize("check", sorted(BREAKS))
def test_each_check_fails_on_a_copy_broken_the_way_it_guards_against(exports, tmp_path, check):
    if check == "gguf.llamacpp" and not importlib.util.find_spec("xllamacpp"):
        pytest.skip("llama.cpp (the xllamacpp wheel) is not installed: its check is skipped by the lint too")
    folder = tmp_path / "export"
    shutil.copytree(exports["adapted"], folder, ignore=shutil.ignore_patterns("adapter"))
    BREAKS[check](folder)
    found = L.lint(folder)
    assert levels(found)[check] == "error", [f for f in found if f.check == check]
    assert L.has_errors(found)


def test_make_portable_turns_what_transformers_5_saves_into_a_folder_that_passes(tmp_path):
    """A Qwen-like folder as transformers 5 saves it: RoPE base 1e6 under rope_parameters only,
    TokenizersBackend, the template in chat_template.jinja only, a list of extra special tokens, and an
    end of turn (<|im_end|>) that is not the eos (<|endoftext|>), as in Qwen's base models."""
    import transformers as T
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = _bpe_tokenizer()
    tok.eos_token = "<|endoftext|>"
    tok.add_special_tokens({"additional_special_tokens": ["<|im_start|>"]})
    config = T.Qwen2Config(vocab_size=len(tok), hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                           num_attention_heads=2, num_key_value_heads=1, max_position_embeddings=64,
                           rope_parameters={"rope_type": "default", "rope_theta": 1e6}, eos_token_id=0)
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(config).eval()
    model.save_pretrained(tmp_path)
    tok.save_pretrained(tmp_path)
    (tmp_path / "generation_config.json").unlink()
    before = levels(L.lint(tmp_path))
    assert {c for c, level in before.items() if level == "error"} == {
        "config.dtype", "config.rope_theta", "tokenizer_config.tokenizer_class",
        "tokenizer_config.extra_special_tokens", "tokenizer_config.chat_template", "generation_config.eos"}
    assert L.make_portable(tmp_path) == ["config.json", "tokenizer_config.json", "generation_config.json"]
    assert L.make_portable(tmp_path) == []  # idempotent
    after = levels(L.lint(tmp_path))
    assert not [c for c, level in after.items() if level == "error"], after
    assert json.loads((tmp_path / "config.json").read_text())["rope_theta"] == 1e6
    eos_ids = json.loads((tmp_path / "generation_config.json").read_text())["eos_token_id"]
    assert sorted(eos_ids) == [0, 2]  # <|endoftext|> and the template's end of turn <|im_end|>
    back, tok_back = AutoModelForCausalLM.from_pretrained(tmp_path).eval(), AutoTokenizer.from_pretrained(tmp_path)
    ids = torch.tensor([tok("the quick brown fox")["input_ids"]])
    with torch.no_grad():
        assert torch.equal(back(ids).logits, model(ids).logits)
    assert tok_back("a <|im_start|> b")["input_ids"] == tok("a <|im_start|> b")["input_ids"]
    assert "<|im_start|>" in tok_back.all_special_tokens


def test_the_check_command_exits_1_on_an_error_and_2_on_bad_input(exports, tmp_path):
    folder = tmp_path / "export"
    shutil.copytree(exports["gpt"], folder)
    BREAKS["config.rope_theta"](folder)
    result = cli("export", "--check", folder)
    assert result.exit_code == 1 and "config.rope_theta" in result.output and "\n1 error," in result.output
    assert re.search(r"weights\.load\s+│\s+ok", result.output), result.output  # loaded by default
    quick = cli("export", "--check", folder, "--no-load")  # the files alone: the same error, nothing loaded
    assert quick.exit_code == 1 and "config.rope_theta" in quick.output
    assert re.search(r"weights\.load\s+│\s+skipped", quick.output), quick.output
    for args, message in (([], "missing RUN"), (["--check", tmp_path / "nope"], "not found"),
                          (["g", "--check", folder], "not both")):
        bad = cli("export", *args)
        assert bad.exit_code == 2 and message in bad.output, bad.output
    with pytest.raises(InvalidInput, match="not found"):
        L.make_portable(tmp_path / "nope")


def test_a_modelfile_parses_as_ollama_reads_it():
    text = 'FROM ./m.gguf\n# a comment\nTEMPLATE """{{ .Prompt }}\nline two"""\nPARAMETER stop "<|im_end|>"\n' \
           'PARAMETER temperature 0.2\nSYSTEM You sell tea.\n'
    assert L.parse_modelfile(text) == [("FROM", "./m.gguf"), ("TEMPLATE", "{{ .Prompt }}\nline two"),
                                       ("PARAMETER", "stop <|im_end|>"), ("PARAMETER", "temperature 0.2"),
                                       ("SYSTEM", "You sell tea.")]
