"""GGUF export (issue 12): tiny random-weight checkpoints of each supported architecture, with a
byte-level BPE tokenizer trained here, are exported and read back with transformers' GGUF reader
(the same logits within the dtype's error, the same token ids, the chat template in the metadata);
a sentencepiece-style tokenizer round-trips too; the Modelfile carries Ollama's template and stop
lines; bad input is one line and leaves nothing behind.

Tolerances, on logits of models whose logits span several units: f32 is exact up to float32
rounding; f16 rounds each weight to 11 significant bits (relative error <= 2**-11 ~ 4.9e-4), which
moves the logits by well under 2e-3 of their range (measured: ~4.5e-4); q8_0 stores each block of
32 weights as int8 times the block's max / 127 (relative step ~0.8% of the largest weight), which
moves them by under 3% of their range (measured: ~1.1%) and may flip the argmax only where the top
two logits are nearly tied: at least 75% of positions must agree (measured: 89-100%)."""

from __future__ import annotations

import json

import pytest
import torch
from gguf import GGMLQuantizationType, GGUFReader

from aigc.errors import InvalidInput
from aigc.pretrained import gguf_export as G
from aigc.pretrained.formats import DEFAULT_CHAT_TEMPLATE

CHATML = ("{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
          "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}")
SENTENCES = ["the quick brown fox jumps over the lazy dog", "hello world, 123 times!", "a tiny model says hi\n\nok"]
PROBE = "the quick brown fox says hello world, 123 times!"  # qwen2 splits digits apart, gpt-2 does not
ARCHS = ["llama", "mistral", "qwen2", "qwen3", "gemma3_text"]


def _bpe_tokenizer(add_prefix_space: bool = False, bos: str | None = "<|endoftext|>"):
    """A byte-level BPE (all 256 bytes, a few merges), ChatML specials and template."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=add_prefix_space)
    tok.decoder = decoders.ByteLevel()
    tok.train_from_iterator(SENTENCES * 5, trainers.BpeTrainer(
        vocab_size=300, special_tokens=["<|endoftext|>", "<|im_start|>", "<|im_end|>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False))
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, bos_token=bos, eos_token="<|im_end|>",
                                   pad_token="<|endoftext|>")
    fast.chat_template = CHATML
    return fast


def _spm_tokenizer():
    """Sentencepiece-style (Llama 2 / Mistral): BPE over "▁"-joined text with <0xNN> byte fallback, bos added."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    meta = pre_tokenizers.Metaspace(replacement="\u2581", prepend_scheme="first", split=False)
    learner = Tokenizer(models.BPE())
    learner.pre_tokenizer = meta
    learner.train_from_iterator(SENTENCES * 5, trainers.BpeTrainer(vocab_size=120, show_progress=False))
    learned = json.loads(learner.to_str())["model"]
    vocab = {t: i for i, t in enumerate(["<unk>", "<s>", "</s>", *(f"<0x{b:02X}>" for b in range(256))])}
    for t, _ in sorted(learned["vocab"].items(), key=lambda kv: kv[1]):
        vocab.setdefault(t, len(vocab))
    merges = [tuple(m.split(" ")) if isinstance(m, str) else tuple(m) for m in learned["merges"]]
    tok = Tokenizer(models.BPE(vocab, merges, unk_token="<unk>", byte_fallback=True, fuse_unk=True))
    tok.pre_tokenizer = meta
    tok.decoder = decoders.Sequence([decoders.Replace("\u2581", " "), decoders.ByteFallback(), decoders.Fuse(),
                                     decoders.Strip(" ", 1, 0)])
    tok.post_processor = processors.TemplateProcessing(single="<s> $A", pair="<s> $A <s> $B",
                                                       special_tokens=[("<s>", 1)])
    return PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="<unk>", bos_token="<s>", eos_token="</s>")


def _config(arch: str, vocab_size: int = 320):
    """Rows of 64 so q8_0 (blocks of 32) applies; Qwen3 at head_dim 128, the only width transformers'
    GGUF reader rebuilds for it (it reads no key length for qwen3)."""
    import transformers as T

    small = dict(vocab_size=vocab_size, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                 num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=128)
    return {
        "llama": lambda: T.LlamaConfig(**small),
        "mistral": lambda: T.MistralConfig(**small),
        "qwen2": lambda: T.Qwen2Config(**small),
        "qwen3": lambda: T.Qwen3Config(**small, head_dim=128),
        "gemma3_text": lambda: T.Gemma3TextConfig(**small, head_dim=32),
    }[arch]()


def _save(folder, arch: str, tokenizer=None):
    """A seeded random model (weights ~N(0, 0.1), norms perturbed, so every tensor matters) and its tokenizer
    as the folder loads it (transformers may rebuild it for the architecture: qwen2 gets Qwen2's split)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = tokenizer or _bpe_tokenizer()
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(_config(arch, vocab_size=len(tokenizer) + 20)).eval()
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "norm" in name:
                p.add_(0.1 * torch.randn_like(p))
            else:
                p.normal_(0, 0.1)
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return model, AutoTokenizer.from_pretrained(folder)


def _read_back(path):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(path.parent, gguf_file=path.name, dtype=torch.float32).eval()
    return model, AutoTokenizer.from_pretrained(path.parent, gguf_file=path.name)


def _compare(model, back, tokenizer):
    ids = torch.tensor([tokenizer(PROBE)["input_ids"]])
    with torch.no_grad():
        want, got = model(ids).logits, back(ids).logits
    spread = (want.max() - want.min()).item()
    agree = (got.argmax(-1) == want.argmax(-1)).float().mean().item()
    return (got - want).abs().max().item() / spread, agree, spread


def _fields(path) -> tuple[dict, dict]:
    """(metadata key -> value, tensor name -> GGML type) of a GGUF file."""
    reader = GGUFReader(path)
    return {k: f.contents() for k, f in reader.fields.items()}, {t.name: t.tensor_type for t in reader.tensors}


@pytest.mark.parametrize("arch", ARCHS)
def test_each_architecture_exports_and_reads_back_with_the_same_logits_tokens_and_template(tmp_path, arch):
    model, tokenizer = _save(tmp_path / f"tiny-{arch}", arch)
    gguf_arch = {"mistral": "llama", "gemma3_text": "gemma3"}.get(arch, arch)
    for dtype, tolerance in (("f32", 1e-6), ("f16", 2e-3)):
        path = G.export_gguf(tmp_path / f"tiny-{arch}", tmp_path / "out" / f"{arch}-{dtype}.gguf", dtype)
        back, tok_back = _read_back(path)
        error, agree, spread = _compare(model, back, tokenizer)
        assert spread > 1.0 and error <= tolerance and agree == 1.0, (dtype, error, agree)
        assert tok_back(PROBE)["input_ids"] == tokenizer(PROBE)["input_ids"]
        meta, types = _fields(path)
        assert meta["general.architecture"] == gguf_arch and meta["general.name"] == f"tiny-{arch}"
        assert meta["tokenizer.chat_template"] == CHATML and meta["tokenizer.ggml.model"] == "gpt2"
        assert meta["tokenizer.ggml.pre"] == ("qwen2" if arch == "qwen2" else "gpt-2")
        assert meta[f"{gguf_arch}.block_count"] == 2 and meta[f"{gguf_arch}.embedding_length"] == 64
        assert meta[f"{gguf_arch}.attention.head_count_kv"] == 2 and meta[f"{gguf_arch}.vocab_size"] == len(tokenizer) + 20
        matrix = GGMLQuantizationType.F16 if dtype == "f16" else GGMLQuantizationType.F32
        assert types["blk.0.attn_q.weight"] == types["token_embd.weight"] == matrix
        assert types["blk.1.attn_norm.weight"] == types["output_norm.weight"] == GGMLQuantizationType.F32
        assert ("output.weight" in types) == (not model.config.tie_word_embeddings)  # gemma ties, the rest do not
    if arch == "qwen2":
        assert types["blk.0.attn_q.bias"] == GGMLQuantizationType.F32
    if arch in ("qwen3", "gemma3_text"):
        assert meta[f"{gguf_arch}.attention.key_length"] == model.config.head_dim


@pytest.mark.parametrize("arch", ["llama", "qwen2", "gemma3_text"])
def test_q8_0_is_close_to_the_original_and_half_the_size_of_f16(tmp_path, arch):
    model, tokenizer = _save(tmp_path / "m", arch)
    q8 = G.export_gguf(tmp_path / "m", tmp_path / "m-q8_0.gguf", "q8_0")
    f16 = G.export_gguf(tmp_path / "m", tmp_path / "m-f16.gguf", "f16")
    error, agree, _ = _compare(model, _read_back(q8)[0], tokenizer)
    assert error <= 0.03 and agree >= 0.75, (error, agree)
    _, types = _fields(q8)
    assert types["blk.0.ffn_down.weight"] == types["token_embd.weight"] == GGMLQuantizationType.Q8_0
    assert types["blk.0.ffn_norm.weight"] == GGMLQuantizationType.F32
    assert q8.stat().st_size < 0.6 * f16.stat().st_size


def test_a_sentencepiece_style_tokenizer_exports_as_llama_with_bytes_scores_and_bos(tmp_path):
    tokenizer = _spm_tokenizer()
    _save(tmp_path / "spm", "llama", tokenizer)
    path = G.export_gguf(tmp_path / "spm", tmp_path / "spm.gguf", "f16")
    _, back = _read_back(path)
    for text in ("the quick brown fox jumps", "hello  world é 中!"):  # é and 中 are unseen: byte fallback
        assert back(text)["input_ids"] == tokenizer(text)["input_ids"]
        assert back(text)["input_ids"][0] == 1  # <s> added, as the original does
    meta, _ = _fields(path)
    assert meta["tokenizer.ggml.model"] == "llama" and meta["tokenizer.ggml.add_space_prefix"] is True
    assert meta["tokenizer.ggml.add_bos_token"] is True and meta["tokenizer.ggml.bos_token_id"] == 1
    tokens, types, scores = (meta[f"tokenizer.ggml.{k}"] for k in ("tokens", "token_type", "scores"))
    assert types[tokens.index("<0x41>")] == 6 and types[tokens.index("<unk>")] == 2  # BYTE, UNKNOWN
    first, last = json.loads(tokenizer.backend_tokenizer.to_str())["model"]["merges"][0], tokens[-21]
    assert scores[tokens.index("".join(first))] == 0.0 > scores[tokens.index(last)]  # earlier merges score higher
    assert tokens[-1] == f"[PAD{len(tokens) - 1}]" and types[-1] == 5  # padded up to the embedding's rows: UNUSED


def test_a_special_id_the_tokenizer_lacks_comes_from_the_config(tmp_path):
    model, tokenizer = _save(tmp_path / "m", "llama", _bpe_tokenizer(bos=None))  # like Qwen's: no bos
    meta, _ = _fields(G.export_gguf(tmp_path / "m", tmp_path / "m.gguf", "f16"))
    assert tokenizer.bos_token_id is None and model.config.bos_token_id == 1
    assert meta["tokenizer.ggml.bos_token_id"] == 1 and meta["tokenizer.ggml.add_bos_token"] is False
    assert meta["tokenizer.ggml.eos_token_id"] == tokenizer.eos_token_id


def test_the_modelfile_carries_ollamas_template_system_and_stop_lines(tmp_path):
    _save(tmp_path / "m", "qwen2")
    path = G.export_gguf(tmp_path / "m", tmp_path / "out" / "m.gguf", "f16")
    text = G.write_modelfile(path, tmp_path / "out" / "Modelfile", None, ["<|endoftext|>", 'say "bye"'],
                             system="Be brief.").read_text()
    assert text == (
        "FROM ./m.gguf\n"
        'TEMPLATE """{{- range .Messages }}<|im_start|>{{ .Role }}\n{{ .Content }}<|im_end|>\n{{ end }}'
        '<|im_start|>assistant\n"""\n'
        'SYSTEM "Be brief."\n'
        'PARAMETER stop "<|im_end|>"\nPARAMETER stop "<|im_start|>"\nPARAMETER stop "<|endoftext|>"\n'
        'PARAMETER stop """say "bye""""\n')
    # the hint wins over the file's template; the project's default format ends turns with the file's eos
    text = G.write_modelfile(path, tmp_path / "elsewhere" / "Modelfile", DEFAULT_CHAT_TEMPLATE, []).read_text()
    assert text.startswith("FROM ../out/m.gguf\nTEMPLATE \"\"\"") and "### Assistant:\n{{ .Content }}<|im_end|>" in text
    assert text.endswith('PARAMETER stop "<|im_end|>"\nPARAMETER stop "### User:"\n')
    spaced = path.rename(tmp_path / "out" / "my model.gguf")  # an unquoted space would end Ollama's FROM value
    unknown = G.write_modelfile(spaced, tmp_path / "Modelfile.plain", "{{ messages }}", ["</s>"]).read_text()
    assert unknown == 'FROM "./out/my model.gguf"\nPARAMETER stop "</s>"\n'  # no TEMPLATE for an unknown format
    assert [G.detect_chat_format(t) for t in ("<|start_header_id|>", "<start_of_turn>", CHATML, "", None)] == \
        ["llama3", "gemma", "chatml", None, None]
    with pytest.raises(InvalidInput, match=r"contains '\"\"\"', which a Modelfile cannot quote"):
        G.write_modelfile(spaced, tmp_path / "bad", None, ['"""'])
    with pytest.raises(InvalidInput, match="GGUF file .* not found: export one first"):
        G.write_modelfile(path, tmp_path / "bad", None, [])
    assert not (tmp_path / "bad").exists()


def test_bad_input_is_one_line_and_leaves_nothing_at_out_file(tmp_path, monkeypatch):
    from test_bases import save_tiny

    out = tmp_path / "out" / "x.gguf"
    save_tiny(tmp_path / "gpt2", "gpt2")
    save_tiny(tmp_path / "wordlevel", "llama")  # test_bases' tiny tokenizer is WordLevel
    (tmp_path / "empty").mkdir()
    _save(tmp_path / "prefix", "llama", _bpe_tokenizer(add_prefix_space=True))
    _save(tmp_path / "good", "llama")
    cases = [
        (tmp_path / "gpt2", "f16", r"holds a 'gpt2' model, which the GGUF export does not convert: it converts "
                                   r"llama, mistral, qwen2, qwen3, gemma3_text"),
        (tmp_path / "empty", "f16", r"is not a checkpoint: no config.json in it"),
        (tmp_path / "nowhere", "f16", r"model folder .* not found: give a transformers checkpoint folder"),
        (tmp_path / "good", "q4", r"unknown GGUF dtype 'q4': use one of f16, q8_0, f32"),
        (tmp_path / "wordlevel", "f16", r"is a 'WordLevel' model, which GGUF cannot carry for llama.cpp"),
        (tmp_path / "prefix", "f16", r"splits text in a way llama.cpp does not know \(it knows gpt-2, llama-bpe"),
    ]
    for folder, dtype, message in cases:
        with pytest.raises(InvalidInput, match=message) as e:
            G.export_gguf(folder, out, dtype)
        assert "\n" not in str(e.value)
        assert not out.exists()

    def broken(t):  # a failure once the header is written, before the first tensor
        raise OSError("disk full")

    monkeypatch.setattr(G, "_encode", broken)
    with pytest.raises(OSError, match="disk full"):
        G.export_gguf(tmp_path / "good", out, "f16")
    assert not out.exists() and list(out.parent.iterdir()) == []  # no temporary file either
