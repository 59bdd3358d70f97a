"""What the export lint reads and what it reports: an export folder's files read once
(:class:`ExportFolder`), and one :class:`Finding` per check, with the servers that read the field it
covers (:data:`READERS`).

Shared by the checks of the transformers folder (:mod:`aigc.pretrained.export_lint`) and those of the
GGUF file and Ollama ``Modelfile`` beside it (:mod:`aigc.pretrained.gguf_lint`). Knows files, JSON and
the tokenizers library; nothing about runs, the workspace or surfaces.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any

LEVELS = ("error", "warning", "ok", "skipped")
SAMPLE_CHAT = [{"role": "user", "content": "Write a note about green tea."},
               {"role": "assistant", "content": "Green tea, steeped cool."},
               {"role": "user", "content": "Shorter."}]

# Which servers read the field each check covers (the citations are in export_lint's docstring).
READERS = {
    "config.present": "vLLM, TGI, llama.cpp, Ollama",
    "config.architectures": "vLLM, llama.cpp, Ollama",
    "config.model_type": "TGI, transformers",
    "config.dtype": "vLLM (transformers < 4.56: torch_dtype)",
    "config.max_position_embeddings": "vLLM, TGI, llama.cpp, Ollama",
    "config.vocab_size": "vLLM, llama.cpp, Ollama",
    "config.special_ids": "llama.cpp, transformers",
    "config.rope_theta": "TGI, Ollama, llama.cpp (older), transformers 4.x",
    "tokenizer.json": "vLLM, TGI, llama.cpp, Ollama",
    "tokenizer_config.tokenizer_class": "vLLM, TGI (transformers 4.x)",
    "tokenizer_config.extra_special_tokens": "vLLM, TGI (transformers 4.x)",
    "tokenizer_config.chat_template": "TGI, Ollama, llama.cpp, vLLM",
    "tokenizer.special_tokens": "TGI, llama.cpp, Ollama",
    "generation_config.eos": "vLLM, TGI, Ollama, transformers",
    "weights.safetensors": "vLLM, TGI, llama.cpp, Ollama",
    "weights.load": "transformers (and every server's weight names)",
    "tokenizer.load": "transformers (vLLM, TGI)",
    "gguf.read": "llama.cpp, Ollama",
    "gguf.llamacpp": "llama.cpp",
    "modelfile.from": "Ollama",
    "modelfile.template": "Ollama",
}


@dataclass(frozen=True)
class Finding:
    """One check's verdict: ``level`` is one of :data:`LEVELS`; ``message`` says what was found and,
    for an error or warning, what the reader does with it and the fix."""

    check: str
    level: str
    message: str

    @property
    def readers(self) -> str:
        return READERS.get(self.check, "")


def has_errors(findings: list[Finding]) -> bool:
    return any(f.level == "error" for f in findings)


def read_json(path: Path) -> tuple[Any, str | None]:
    """(data, None), (None, None) when the file is missing, or (None, the reason it does not parse)."""
    if not path.is_file():
        return None, None
    try:
        return json.loads(path.read_text(encoding="utf-8")), None
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        return None, f"{path.name} is not JSON ({e})"


def _token_text(value: Any) -> str | None:
    """A tokenizer_config token: a string or ``{"content": ...}``."""
    if isinstance(value, dict):
        value = value.get("content")
    return value if isinstance(value, str) and value else None


def token_ids(value: Any) -> list[int]:
    """An ``eos_token_id``-like field as a list of ints (an int, a list, or nothing)."""
    if isinstance(value, bool):
        return []
    if isinstance(value, int):
        return [value]
    return [v for v in value if isinstance(v, int) and not isinstance(v, bool)] if isinstance(value, list) else []


@dataclass
class ExportFolder:
    """The folder's files, read once."""

    path: Path
    config: dict | None
    config_error: str | None
    tok_config: dict | None
    tok_config_error: str | None
    gen_config: dict | None
    gen_config_error: str | None
    tokenizer: dict | None  # tokenizer.json
    tokenizer_error: str | None
    jinja: str | None  # chat_template.jinja

    @classmethod
    def read(cls, folder: Path) -> ExportFolder:
        config, config_error = read_json(folder / "config.json")
        tok_config, tok_error = read_json(folder / "tokenizer_config.json")
        gen_config, gen_error = read_json(folder / "generation_config.json")
        tokenizer, tokenizer_error = None, None
        if (folder / "tokenizer.json").is_file():
            try:
                from tokenizers import Tokenizer

                Tokenizer.from_file(str(folder / "tokenizer.json"))  # what the Rust readers do
                tokenizer = json.loads((folder / "tokenizer.json").read_text(encoding="utf-8"))
            except Exception as e:  # noqa: BLE001 - tokenizers raises its own Exception subclass
                tokenizer_error = f"tokenizer.json does not load with the tokenizers library: {e}"
        jinja = folder / "chat_template.jinja"
        return cls(folder, config if isinstance(config, dict) else None, config_error,
                   tok_config if isinstance(tok_config, dict) else None, tok_error,
                   gen_config if isinstance(gen_config, dict) else None, gen_error,
                   tokenizer, tokenizer_error, jinja.read_text(encoding="utf-8") if jinja.is_file() else None)

    @cached_property
    def vocab(self) -> dict[str, int]:
        """Every token text -> id: the model's vocabulary and the added tokens."""
        if not self.tokenizer:
            return {}
        model = self.tokenizer.get("model") or {}
        raw = model.get("vocab")
        vocab = dict(raw) if isinstance(raw, dict) else {p[0]: i for i, p in enumerate(raw or [])}
        vocab.update({t["content"]: t["id"] for t in self.added_tokens()})
        return vocab

    def added_tokens(self) -> list[dict]:
        return [t for t in (self.tokenizer or {}).get("added_tokens") or [] if isinstance(t, dict) and "content" in t]

    def token(self, name: str) -> str | None:
        """tokenizer_config's ``<name>_token`` text (eos, bos, pad, unk)."""
        return _token_text((self.tok_config or {}).get(f"{name}_token"))

    def token_id(self, name: str) -> int | None:
        text = self.token(name)
        return self.vocab.get(text) if text else None

    def template(self) -> str | None:
        """The chat template a transformers 5 reader uses: chat_template.jinja, else tokenizer_config's."""
        if self.jinja is not None:
            return self.jinja
        value = (self.tok_config or {}).get("chat_template")
        if isinstance(value, list):  # named templates: the default one
            value = next((t.get("template") for t in value if isinstance(t, dict) and t.get("name") == "default"), None)
        return value if isinstance(value, str) and value else None

    def special_tokens(self) -> dict[str, str]:
        """The variables a chat template sees: bos_token, eos_token, unk_token, pad_token."""
        return {f"{n}_token": t for n in ("bos", "eos", "unk", "pad") if (t := self.token(n))}
