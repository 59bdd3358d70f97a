"""The export lint's checks of what sits beside a transformers folder for llama.cpp and Ollama.

Each ``*.gguf`` file: the ``gguf`` package's reader opens it, it names its architecture, tokens and
eos, and it carries the folder's chat template; then llama.cpp itself (the xllamacpp wheel, when
installed) loads it, completes, and splits a probe into as many tokens as transformers does. The
Ollama ``Modelfile``: ``FROM`` one GGUF beside it (Ollama reads it relative to the Modelfile's
folder), a ``TEMPLATE`` that is Ollama's form of the chat template, and the stops it needs.
:func:`aigc.pretrained.export_lint.lint` runs these checks last.

Knows files, the ``gguf`` package, xllamacpp and transformers; nothing about runs, the workspace or
surfaces.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path

from aigc.errors import InvalidInput
from aigc.pretrained.export_folder import SAMPLE_CHAT, ExportFolder, Finding

PROBE = "The quick brown fox says hello world, 123 times! 你好"  # words, digits, punctuation, CJK


def gguf_checks(f: ExportFolder) -> Iterator[Finding]:
    """Each GGUF file in the folder read back, llama.cpp on those that open, then the Modelfile."""
    from gguf import GGUFReader

    files = sorted(f.path.glob("*.gguf"))
    if not files:
        yield Finding("gguf.read", "skipped", "no .gguf file (`aigc export RUN` writes one for an adapted run)")
        return
    good = []
    for path in files:
        try:
            reader = GGUFReader(path)
        except Exception as e:  # noqa: BLE001 - gguf raises ValueError, struct.error, IndexError...
            yield Finding("gguf.read", "error", f"{path.name} does not open with the gguf reader: {e}")
            continue
        fields = {k: reader.fields[k] for k in reader.fields}
        lacking = [k for k in ("general.architecture", "tokenizer.ggml.tokens", "tokenizer.ggml.eos_token_id")
                   if k not in fields]
        template = fields["tokenizer.chat_template"].contents() if "tokenizer.chat_template" in fields else None
        if lacking:
            yield Finding("gguf.read", "error", f"{path.name} lacks {', '.join(lacking)}")
        elif f.template() is not None and template != f.template():
            yield Finding("gguf.read", "error", f"{path.name}'s chat template is not the folder's: llama.cpp would "
                          "chat in another format (export the GGUF again)")
        else:
            good.append(path)
            yield Finding("gguf.read", "ok", f"{path.name}: {fields['general.architecture'].contents()}, "
                          f"{len(reader.tensors)} tensors")
    yield from _llamacpp(f, good)
    yield from _modelfile(f)


def _llamacpp(f: ExportFolder, files: list[Path]) -> Iterator[Finding]:
    """llama.cpp itself loads each file (through the xllamacpp wheel, when installed) and splits a
    probe into as many tokens as transformers does."""
    try:
        import xllamacpp
    except ImportError:
        yield Finding("gguf.llamacpp", "skipped", "llama.cpp is not installed here (pip install xllamacpp, the version "
                      "constraints.txt pins, to run it)")
        return
    from transformers import AutoTokenizer

    if not files:
        yield Finding("gguf.llamacpp", "skipped", "no GGUF file the gguf reader opens")
        return
    try:
        want = len(AutoTokenizer.from_pretrained(f.path)(PROBE)["input_ids"])
    except Exception:  # noqa: BLE001 - the tokenizer checks report why it does not load
        want = None
    for path in files:
        params = xllamacpp.CommonParams()
        params.model.path = str(path)
        params.n_ctx = 256
        params.cpuparams.n_threads = params.cpuparams_batch.n_threads = 1
        params.verbosity = -1
        try:
            server = xllamacpp.Server(params)
            out = server.handle_completions({"prompt": PROBE, "n_predict": 1, "temperature": 0.0})
            chat = (server.handle_chat_completions({"messages": SAMPLE_CHAT[:1], "max_tokens": 1})
                    if f.template() else {})
        except Exception as e:  # noqa: BLE001 - xllamacpp raises RuntimeError("Failed to init server...")
            yield Finding("gguf.llamacpp", "error", f"llama.cpp does not load {path.name}: {e}")
            continue
        got = (out.get("usage") or {}).get("prompt_tokens")
        if "choices" not in out or (f.template() and "choices" not in chat):
            yield Finding("gguf.llamacpp", "error", f"llama.cpp loads {path.name} but does not answer: "
                          f"{json.dumps(out or chat)[:200]}")
        elif want is not None and got != want:
            yield Finding("gguf.llamacpp", "error", f"llama.cpp splits the probe into {got} tokens, transformers into "
                          f"{want}: {path.name} would read text differently")
        else:
            yield Finding("gguf.llamacpp", "ok", f"{path.name}: loads, completes, {got} probe tokens as transformers")


def _unquote(value: str) -> str:
    """A Modelfile value without its quotes: ``"x"`` or ``\"\"\"x\"\"\"`` (Ollama's parser has no escapes)."""
    value = value.strip()
    for q in ('"""', '"'):
        if len(value) >= 2 * len(q) and value.startswith(q) and value.endswith(q):
            return value[len(q):-len(q)]
    return value


def parse_modelfile(text: str) -> list[tuple[str, str]]:
    """A Modelfile's (INSTRUCTION, value) pairs in order, values unquoted (a triple-quoted value may span
    lines); a ``PARAMETER`` value is ``name value``, its value unquoted too."""
    pairs, rest = [], text
    pattern = re.compile(r'\s*(?:#[^\n]*|(\w+)[ \t]+("""[\s\S]*?"""|"[^"\n]*"|[^\n]*))\s*')
    while rest.strip():
        m = pattern.match(rest)
        if not m or not m.group(0):
            raise InvalidInput(f"the Modelfile does not parse at {rest.strip()[:40]!r}")
        if m.group(1):
            instruction, value = m.group(1).upper(), _unquote(m.group(2))
            if instruction == "PARAMETER":
                name, _, raw = value.partition(" ")
                value = f"{name} {_unquote(raw)}"
            pairs.append((instruction, value))
        rest = rest[m.end():]
    return pairs


def _modelfile(f: ExportFolder) -> Iterator[Finding]:
    from aigc.pretrained.gguf_export import detect_chat_format, ollama_template

    path = f.path / "Modelfile"
    if not path.is_file():
        yield Finding("modelfile.from", "warning", "no Modelfile beside the GGUF: `ollama create` needs one "
                      "(`aigc export RUN` writes it)")
        return
    try:
        pairs = parse_modelfile(path.read_text(encoding="utf-8"))
    except InvalidInput as e:
        yield Finding("modelfile.from", "error", str(e))
        return
    sources = [v for k, v in pairs if k == "FROM"]
    target = (path.parent / sources[0]).resolve() if len(sources) == 1 else None
    if target is None or not target.is_file() or target.parent != f.path.resolve() or target.suffix != ".gguf":
        yield Finding("modelfile.from", "error", f"FROM {', '.join(sources) or '(none)'} is not one .gguf file beside "
                      "the Modelfile: Ollama reads FROM relative to the Modelfile's folder")
    else:
        yield Finding("modelfile.from", "ok", f"FROM {sources[0]}")
    template = next((v for k, v in pairs if k == "TEMPLATE"), None)
    stops = [v.partition(" ")[2] for k, v in pairs if k == "PARAMETER" and v.partition(" ")[0] == "stop"]
    fmt = detect_chat_format(f.template())
    if fmt is None:
        level = "warning" if f.template() else "ok"
        yield Finding("modelfile.template", level, "the chat template is not a format the export knows: Ollama matches "
                      "the GGUF's template against those it knows, or prompts with the raw text" if f.template()
                      else "no chat template: Ollama prompts with the raw text")
        return
    body, markers = ollama_template(fmt, f.token("eos"))
    absent = [s for s in markers if s not in stops]
    stray = [s for s in stops if s not in f.template() and s != f.token("eos")]
    if template != body:
        yield Finding("modelfile.template", "error", f"the Modelfile's TEMPLATE is not Ollama's form of the model's "
                      f"{fmt} chat template: Ollama would prompt in another format (export it again)")
    elif absent:
        yield Finding("modelfile.template", "error", f"no PARAMETER stop {', '.join(absent)}: Ollama's answers would "
                      "run on past the end of a turn")
    elif stray:
        yield Finding("modelfile.template", "error", f"PARAMETER stop {', '.join(stray)}: a string the chat template "
                      "never writes (a typo stops nothing)")
    else:
        yield Finding("modelfile.template", "ok", f"{fmt}, stops {stops}")
