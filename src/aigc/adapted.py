"""Runs adapted from a pretrained base: start, resume, load and export them.

An adapted run's folder holds what rebuilds it from its base with no flags::

    runs/<name>/run.json           base, method, LoRA settings, block size, prompt template, data, training config
    runs/<name>/tokenizer/         the base's tokenizer, with the chat template the run trained on
    runs/<name>/model.safetensors  the adapters (LoRA) or every weight (full) with the best validation loss
    runs/<name>/checkpoints/last.pt  the same + optimizer + RNG of the last completed step (resume)
    runs/<name>/chats.jsonl        the conversations it trained on, when they came from a chat file
    runs/<name>/export/            the merged model and tokenizer (AutoModelForCausalLM loads it);
                                   export/adapter/ the LoRA adapter as a peft folder

The data becomes conversations (:mod:`aigc.pretrained.formats`): a dataset's condition columns
through a prompt template, a prompt column and the text column, or a chat JSONL file; training is
the one loop (:func:`aigc.training.fit`) on :class:`~aigc.pretrained.adapt.AdaptedLM` and
:class:`~aigc.pretrained.adapt.SFTTask`.

This module ties the workspace, the bases, the data and the loop together; it imports no surface.
"""

from __future__ import annotations

import copy
import hashlib
import json
import math
import shutil
import threading
import weakref
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

import torch

from aigc.checkpoints import load_run_weights, load_weights
from aigc.data.dataset import read_card, read_text_split
from aigc.data.conditions import value_counts
from aigc.distributed import require_one_process
from aigc.errors import InvalidInput
from aigc.models.registry import config_from_dict
from aigc.pretrained import formats
from aigc.pretrained.adapt import TRAIN_DEFAULTS, AdaptConfig, AdaptedLM, SFTTask, build_blocks
from aigc.pretrained.decoder import FastLM
from aigc.safety.training import COPY_INDEX, check_training_data, write_copy_index
from aigc.training import TrainConfig, fit, merge_options
from aigc.workspace import Workspace, now, write_json_atomic

RUN_FILE = "run.json"
TOKENIZER_DIR = "tokenizer"
CHATS_FILE = "chats.jsonl"
VAL_SHARE = 0.05  # of a chat file's conversations, held out for validation (at least one)


def is_adapted(spec: dict[str, Any]) -> bool:
    return bool(spec.get("base"))


def _train_config(method: str, overrides: dict[str, Any] | None) -> TrainConfig:
    cfg = config_from_dict(TrainConfig, merge_options(TRAIN_DEFAULTS[method], overrides), what="training option")
    cfg.validate()
    require_one_process(cfg, "adapting a pretrained base")
    return cfg


def _split_chats(chats: list, seed: int) -> tuple[list, list]:
    """A chat file's conversations split into train and val by a hash of their text: the same file
    gives the same split on every machine, and one conversation's copies land together."""
    if len(chats) < 2:
        raise InvalidInput(f"the chat file holds {len(chats)} conversation(s): it needs at least 2 "
                           "(one is held out to validate)")
    keyed = sorted(((hashlib.sha256(f"{seed}:{json.dumps(c, ensure_ascii=False)}".encode()).hexdigest(), i)
                    for i, c in enumerate(chats)))
    n_val = max(1, round(len(chats) * VAL_SHARE))
    val_ids = {i for _, i in keyed[:n_val]}
    return [c for i, c in enumerate(chats) if i not in val_ids], [c for i, c in enumerate(chats) if i in val_ids]


def _data_spec(ws: Workspace, dataset: str | None, chat_file: str | None, prompt_template: str | None,
               prompt_column: str | None, response_column: str | None) -> dict[str, Any]:
    """What the run trains on, checked before anything loads: recorded in run.json."""
    if bool(dataset) == bool(chat_file):
        raise InvalidInput("give a DATASET or --chat FILE (a chat JSONL), not both" if dataset else
                           "missing DATASET: `aigc train DATASET --base NAME` (see `aigc datasets`), or --chat FILE")
    if chat_file:
        if prompt_template or prompt_column or response_column:
            raise InvalidInput("--prompt-template, --prompt-column and --response-column shape a dataset's records "
                               "into chats; a chat file is already chats: drop them")
        return {"source": "chat", "chat_file": str(chat_file), "cond_columns": [], "template": None}
    ds = ws.get_dataset(dataset)
    if ds["modality"] != "text":
        raise InvalidInput(f"dataset {dataset!r} holds {ds['modality']}: a language model adapts to text")
    card = read_card(Path(ds["path"]))
    columns = list(card.get("cond_columns") or [])
    text_column = card.get("text_column")
    if response_column and response_column != text_column:
        raise InvalidInput(f"--response-column {response_column!r} is not dataset {dataset!r}'s text column "
                           f"({text_column or 'the whole record'}): ingest the table again with "
                           f"--text-column {response_column}")
    if prompt_column:
        if prompt_template:
            raise InvalidInput("give --prompt-column or --prompt-template, not both")
        if prompt_column not in columns:
            raise InvalidInput(f"--prompt-column {prompt_column!r} is not a condition column of dataset "
                               f"{dataset!r} (it has: {', '.join(columns) or 'none'}): ingest the table again with "
                               f"--cond-column {prompt_column}")
        return {"source": "dataset", "prompt_column": prompt_column, "template": None,
                "cond_columns": [c for c in columns if c != prompt_column]}
    template = prompt_template or formats.default_template(columns)
    used = formats.check_template(template, columns)
    return {"source": "dataset", "template": template, "cond_columns": used}


def chats_of(ws: Workspace, spec: dict[str, Any], run_dir: Path | None = None) -> tuple[list, list]:
    """(train, val) conversations of a data spec."""
    data = spec["data"]
    if data["source"] == "chat":
        saved = run_dir / CHATS_FILE if run_dir is not None else None
        if saved is not None and saved.is_file():
            chats = formats.read_chat_jsonl(saved)
        else:
            chats = formats.read_chat_jsonl(data["chat_file"])
        return _split_chats(chats, 0)
    ds_dir = ws.dataset_path(spec["dataset"])
    train, val = read_text_split(ds_dir, "train"), read_text_split(ds_dir, "val")
    if not val:
        raise InvalidInput(f"dataset {spec['dataset']!r} has an empty val split: ingest it again with a val "
                           "fraction > 0, e.g. --split 0.9,0.05,0.05")
    return records_chats(spec, train), records_chats(spec, val)


def _training_texts(ws: Workspace, spec: dict[str, Any], run_dir: Path) -> list[str]:
    """What an adapted run learns to say (the answers of its train conversations): the copy
    guard's index is built over it."""
    train, _ = chats_of(ws, spec, run_dir)
    return [m["content"] for chat in train for m in chat if m.get("role") == "assistant"]


def records_chats(spec: dict[str, Any], records: Sequence[Any]) -> list:
    """A dataset run's records as the conversations it trains on (its template or prompt column)."""
    data = spec["data"]
    if data.get("prompt_column"):
        col = data["prompt_column"]
        return formats.prompt_response_chats(({col: r.cond.get(col), "text": r.text} for r in records), col, "text")
    return formats.records_to_chats(records, data["template"])


def _conditions(ws: Workspace, spec: dict[str, Any]) -> dict[str, list[str]]:
    cols = spec["data"]["cond_columns"]
    if not cols or spec["data"]["source"] != "dataset":
        return {}
    ds_dir = ws.dataset_path(spec["dataset"])
    records = (r for s in ("train", "val", "test") for r in read_text_split(ds_dir, s))
    values = value_counts((r.cond for r in records), cols)
    return {c: sorted(values[c]) for c in cols}


def _build(ws: Workspace, spec: dict[str, Any], cfg: TrainConfig, run_dir: Path | None, tokenizer=None):
    """(model, task, tokenizer) of an adapted run: the base loaded, adapters added, data as blocks."""
    from aigc.pretrained.bases import load_base

    acfg = AdaptConfig(**spec["adapt"])
    model, base_tokenizer = load_base(ws, spec["base"])
    tokenizer = tokenizer or base_tokenizer
    train_chats, val_chats = chats_of(ws, spec, run_dir)
    train = build_blocks(tokenizer, train_chats, acfg.block_size)
    val = build_blocks(tokenizer, val_chats, acfg.block_size)
    torch.manual_seed(cfg.seed)
    adapted = AdaptedLM(model, acfg.method, r=acfg.r, alpha=acfg.alpha, dropout=acfg.dropout,
                        target_modules=acfg.target_modules)
    return adapted, SFTTask(train, val, cfg.batch_size), tokenizer


def train(ws: Workspace, dataset: str | None, base: str, *, method: str = "lora", name: str | None = None,
          adapt: dict[str, Any] | None = None, prompt_template: str | None = None, prompt_column: str | None = None,
          response_column: str | None = None, chat_file: str | None = None,
          train_overrides: dict[str, Any] | None = None, callbacks: Sequence = ()) -> dict[str, Any]:
    """Adapt base ``base`` to ``dataset`` (or the conversations of ``chat_file``); returns the run's
    catalog row. Bad input fails before anything is written."""
    from aigc.pretrained.bases import get_base

    acfg = config_from_dict(AdaptConfig, {**(adapt or {}), "method": method}, what="adaptation option")
    acfg.validate()
    cfg = _train_config(method, train_overrides)
    data = _data_spec(ws, dataset, chat_file, prompt_template, prompt_column, response_column)
    if dataset:
        check_training_data(ws, dataset, read_card(ws.dataset_path(dataset)))
    row = get_base(ws, base)
    label = dataset or Path(chat_file or "chats").stem
    name = name or _default_name(ws, f"{label}-{base}-{method}")
    if ws.has_run(name):
        raise InvalidInput(f"run {name!r} already exists: pick another --name, or `aigc train --resume {name}`")
    spec: dict[str, Any] = {
        "name": name, "family": method, "modality": "text", "base": base, "base_model_type": row["model_type"],
        "base_architecture": row["architecture"], "dataset": dataset, "data": data, "adapt": asdict(acfg),
        "train_config": asdict(cfg), "created_at": now(),
    }
    spec["cond_columns"] = data["cond_columns"]
    spec["conditions"] = _conditions(ws, {**spec, "dataset": dataset}) if dataset else {}
    if chat_file:  # bad lines fail here, before the base loads
        formats.read_chat_jsonl(chat_file)
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(row["path"])
    # a base without a chat template gets the documented default: the blocks are rendered with the
    # template the run will chat with
    spec["chat_template_added"] = formats.ensure_chat_template(tokenizer)
    model, task, tokenizer = _build(ws, spec, cfg, None, tokenizer)
    spec["n_params"] = model.trainable_parameters()
    spec["base_params"] = int(row["params"] or 0)
    run_dir = ws.run_path(name)
    ws.create_run(name, method, dataset or f"chat:{Path(chat_file).name}", {"adapt": spec["adapt"], "train": spec["train_config"]})
    try:
        run_dir.mkdir(parents=True)
        tokenizer.save_pretrained(run_dir / TOKENIZER_DIR)
        if chat_file:
            _write_chats(run_dir / CHATS_FILE, formats.read_chat_jsonl(chat_file))
        spec["copy_index"] = write_copy_index(run_dir, _training_texts(ws, spec, run_dir), ws)
        write_json_atomic(run_dir / RUN_FILE, spec)
    except BaseException:
        ws.delete_run(name)
        raise
    return _fit(ws, name, run_dir, spec, model, task, cfg, callbacks, resume=False)


def _write_chats(path: Path, chats: list) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    with tmp.open("w", encoding="utf-8") as f:
        for chat in chats:
            f.write(json.dumps({"messages": chat}, ensure_ascii=False) + "\n")
    tmp.replace(path)


def _default_name(ws: Workspace, base: str) -> str:
    import re

    base = re.sub(r"[^A-Za-z0-9._-]+", "-", base).strip("-.") or "adapted"
    name, k = base, 2
    while ws.has_run(name):
        name, k = f"{base}-{k}", k + 1
    return name


def resume(ws: Workspace, name: str, spec: dict[str, Any], run_dir: Path,
           train_overrides: dict[str, Any] | None = None, callbacks: Sequence = ()) -> dict[str, Any]:
    if spec.get("parent"):
        raise InvalidInput(f"run {name!r} was tuned from feedback of run {spec['parent']!r} and does not resume: "
                           f"tune again (`aigc tune {spec['parent']} --from-feedback`)")
    cfg = config_from_dict(TrainConfig, merge_options(spec["train_config"], train_overrides), what="training option")
    cfg.validate()
    require_one_process(cfg, "adapting a pretrained base")
    if spec.get("dataset") and not ws.has_dataset(spec["dataset"]):
        raise InvalidInput(f"run {name!r} was trained on dataset {spec['dataset']!r}, which no longer exists")
    model, task, _ = _build(ws, spec, cfg, run_dir, _load_tokenizer(run_dir))
    spec["train_config"] = asdict(cfg)
    write_json_atomic(run_dir / RUN_FILE, spec)
    return _fit(ws, name, run_dir, spec, model, task, cfg, callbacks, resume=True)


def _fit(ws, name, run_dir, spec, model, task, cfg, callbacks, resume) -> dict[str, Any]:
    ws.update_run(name, status="running")
    try:
        state = fit(model, task, cfg, run_dir, list(callbacks), resume=resume)
    except BaseException:
        if not resume and not (run_dir / "checkpoints" / "last.pt").exists():
            ws.delete_run(name)
        else:
            ws.update_run(name, status="failed")
        raise
    status = "interrupted" if state.stop_reason == "interrupted" else "finished"
    summary = {"stop_reason": state.stop_reason, "steps": state.step, "elapsed_s": round(state.elapsed, 1),
               "tokens_seen": state.tokens_seen, "train_loss": state.train_loss,
               "best_val_loss": state.best_val_loss, "unit": state.unit, **state.val_figures}
    if status == "finished":
        export(model, run_dir, spec)
    ws.record_run(name, status=status, step=state.step, best_val_loss=state.best_val_loss, summary=summary)
    return ws.get_run(name)


def _load_tokenizer(run_dir: Path):
    from transformers import AutoTokenizer

    folder = run_dir / TOKENIZER_DIR
    if not folder.is_dir():
        raise InvalidInput(f"{folder} is missing: the run folder is damaged; train it again")
    return AutoTokenizer.from_pretrained(folder)


def export(model: AdaptedLM, run_dir: Path, spec: dict[str, Any]) -> None:
    """export/: the merged model (best weights) and tokenizer; export/adapter/: the LoRA adapter as
    peft writes it; both with the fields older readers need (``make_portable``). Staged, then
    renamed: never half an export."""
    from aigc.pretrained.export_lint import make_portable

    load_weights(model, run_dir / "model.safetensors")
    tokenizer = _load_tokenizer(run_dir)
    staged = run_dir / ".export-tmp"
    shutil.rmtree(staged, ignore_errors=True)
    merged = model.merged()
    merged.save_pretrained(staged)
    tokenizer.save_pretrained(staged)
    make_portable(staged)  # what vLLM, TGI, llama.cpp and Ollama read that transformers 5 leaves out
    if spec["adapt"]["method"] == "lora":
        model.net.save_pretrained(staged / "adapter")
        tokenizer.save_pretrained(staged / "adapter")
        make_portable(staged / "adapter")  # vLLM loads a LoRA's own tokenizer with AutoTokenizer
    (staged / "aigc.json").write_text(json.dumps(
        {"run": spec["name"], "base": spec["base"], "method": spec["adapt"]["method"],
         "template": spec["data"].get("template"), "cond_columns": spec["cond_columns"]},
        ensure_ascii=False, indent=2), encoding="utf-8")
    final, old = run_dir / "export", run_dir / ".export-old"
    if final.exists():
        final.rename(old)
    staged.rename(final)
    shutil.rmtree(old, ignore_errors=True)


def export_gguf(ws: Workspace, name: str, dtype: str = "f16") -> tuple[Path, Path]:
    """``export/<name>-<dtype>.gguf`` and ``export/Modelfile`` of a finished adapted run, from its merged
    checkpoint: ``ollama create NAME -f Modelfile`` and llama.cpp load them."""
    from aigc.pretrained.gguf_export import GGUF_DTYPES
    from aigc.pretrained.gguf_export import export_gguf as write_gguf
    from aigc.pretrained.gguf_export import write_modelfile

    if dtype not in GGUF_DTYPES:
        raise InvalidInput(f"--gguf must be one of {', '.join(GGUF_DTYPES)}, got {dtype!r}")
    row = ws.get_run(name)
    run_dir = Path(row["path"])
    spec = read_spec(run_dir)
    if not is_adapted(spec):
        raise InvalidInput(f"run {name!r} was trained from scratch ({spec['family']}); GGUF export is for runs "
                           "adapted from a pretrained base (`aigc train DATASET --base NAME`)")
    folder = run_dir / "export"
    if not (folder / "config.json").is_file():
        raise InvalidInput(f"run {name!r} has no export yet ({row['status']}): finish it with "
                           f"`aigc train --resume {name}`")
    gguf = write_gguf(folder, folder / f"{name}-{dtype}.gguf", dtype)
    tokenizer = _load_tokenizer(run_dir)
    modelfile = write_modelfile(gguf, folder / "Modelfile", getattr(tokenizer, "chat_template", None), [])
    return gguf, modelfile


def read_spec(run_dir: Path) -> dict[str, Any]:
    from aigc.runs import read_spec as read

    return read(run_dir)


def load_model(ws: Workspace, name: str, spec: dict[str, Any], run_dir: Path, device: str | None = None,
               merge: bool = True):
    """(model, tokenizer) of an adapted run with its best weights: the base with the adapters merged
    in (``merge``; what serving runs) or an :class:`AdaptedLM` (what training and tests compare)."""
    from aigc.pretrained.bases import load_base
    from aigc.runtime import default_device

    acfg = AdaptConfig(**spec["adapt"])
    base, _ = load_base(ws, spec["base"])
    tokenizer = _load_tokenizer(run_dir)
    model = AdaptedLM(base, acfg.method, r=acfg.r, alpha=acfg.alpha, dropout=acfg.dropout,
                      target_modules=acfg.target_modules)
    load_run_weights(model, run_dir, name)
    model.eval()
    if merge:  # in place: the adapted wrapper is not needed again
        net = model.net.merge_and_unload() if acfg.method == "lora" else model.net
        model = AdaptedLM(net, "full")
    return model.to(device or default_device()).eval(), tokenizer


def fast(model: AdaptedLM):
    """The fast decoder over a merged model where its architecture has one; else the model itself."""
    from aigc.runtime import decode_weights

    try:
        return FastLM.from_hf(model.net, weights=decode_weights(str(next(model.parameters()).device)))
    except InvalidInput:
        return model


# Bases loaded for serving, one per (folder, device, decode weights), shared by every LoRA run on them while any
# of them is loaded: N adapters cost one base and N small sets of low-rank matrices.
_SHARED: weakref.WeakValueDictionary = weakref.WeakValueDictionary()
_SHARED_LOCK = threading.Lock()


def shared_base(ws: Workspace, base: str, device: str | None = None):
    """(FastLM of base ``base`` on ``device``, its tokenizer), loaded once and shared; FastLM is None
    when the base's architecture has no fast decoder (its runs then serve merged)."""
    from aigc.pretrained.bases import get_base, load_base
    from aigc.runtime import decode_weights, default_device

    device = device or default_device()
    weights = decode_weights(str(device))
    key = (str(get_base(ws, base)["path"]), str(device), weights)
    with _SHARED_LOCK:
        entry = _SHARED.get(key)
        if entry is None:
            model, tokenizer = load_base(ws, base, device=device)
            try:
                entry = FastLM.from_hf(model, weights=weights)
            except InvalidInput:
                return None, tokenizer
            entry.tokenizer = tokenizer
            _SHARED[key] = entry
        return entry, entry.tokenizer


def _adapter_state(run_dir: Path, name: str) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    weights = run_dir / "model.safetensors"
    if weights.exists():
        return load_file(str(weights))
    if (run_dir / "checkpoints" / "last.pt").exists():
        return torch.load(run_dir / "checkpoints" / "last.pt", map_location="cpu", weights_only=False)["model"]
    raise InvalidInput(f"run {name!r} has no weights yet: train it with `aigc train --resume {name}`")


def load(ws: Workspace, name: str, spec: dict[str, Any], run_dir: Path, device: str | None = None):
    """A :class:`~aigc.pretrained.generator.ChatGenerator` of the run: a LoRA run's adapters on the
    shared base (:func:`shared_base`, unmerged), a full run's weights (or a base without a fast
    decoder) as a model of its own."""
    from aigc.pretrained.generator import ChatGenerator

    data = spec["data"]
    acfg = AdaptConfig(**spec["adapt"])
    if acfg.method == "lora":
        base, _ = shared_base(ws, spec["base"], device)
        if base is not None:
            model = base.with_lora(_adapter_state(run_dir, name), alpha=acfg.alpha)
            return ChatGenerator(model, _load_tokenizer(run_dir), data.get("template"), spec["cond_columns"],
                                 spec.get("conditions"), name=name, vocab_size=base.hf.config.vocab_size)
    model, tokenizer = load_model(ws, name, spec, run_dir, device)
    return ChatGenerator(fast(model), tokenizer, data.get("template"), spec["cond_columns"], spec.get("conditions"),
                         name=name, vocab_size=model.net.config.vocab_size)


def base_generator(ws: Workspace, base: str, template: str | None, cond_columns: Sequence[str] = (),
                   device: str | None = None):
    """The unadapted base as a generator with the same template: the 'before' of a side-by-side."""
    from aigc.pretrained.bases import load_base
    from aigc.pretrained.generator import ChatGenerator
    from aigc.runtime import default_device

    shared, tokenizer = shared_base(ws, base, device)
    if shared is not None:
        model, vocab = shared, shared.hf.config.vocab_size
    else:
        hf, tokenizer = load_base(ws, base)
        model, vocab = AdaptedLM(hf, "full").to(device or default_device()).eval(), hf.config.vocab_size
    tokenizer = copy.copy(tokenizer)  # the shared one keeps its own template
    formats.ensure_chat_template(tokenizer)
    return ChatGenerator(model, tokenizer, template, cond_columns, name=base, vocab_size=vocab)


# -- tuning from feedback ----------------------------------------------------------------------

# lr 2e-4 with the drift guard (TUNE_MAX_DRIFT) rather than a low rate (benchmarks/feedback.py, rounds of
# 20 DPO steps, SmolLM2-135M): with --tune-lr 1e-4 and 5e-5 held-out perplexity hardly moved (x1.009,
# x1.002 after three rounds) and the English material taste stayed at 0.77 reranked (logged runs, stopped
# before their results were written), where 2e-4 reached 1.00 at x1.07 (results/feedback_rounds.json). But 2e-4 took Gemma 3 270M's perplexity x1.15-x1.62 in one round: the guard keeps a checkpoint
# at most 5 steps (eval_every) before its limit, and at the limit tuning goes back to it and on at half
# the rate, twice (veto_backoffs: 1e-4, then 5e-5), before it stops.
TUNE_DEFAULTS = {"lr": 2e-4, "batch_size": 4, "warmup_steps": 5, "weight_decay": 0.0, "eval_every": 5,
                 "max_steps": 100, "min_lr_ratio": 0.1, "veto_backoffs": 2}
# The held-out perplexity of the data the run learned from may rise at most this much (x1.10: within
# 10 %) over the run that learned it, however many tunings a run is from it; 0 or None: no guard.
TUNE_MAX_DRIFT = 1.1
DRIFT_CONVERSATIONS = 64  # held-out conversations the guard scores at each validation
TUNE_METHODS = ("auto", "dpo", "kto")
DELTA_FILE = "tune_delta.safetensors"


def _feedback_data(ws: Workspace, run: str, spec: dict[str, Any], pairs_file: str | None):
    """(pairs, thumbs) of a run's feedback (or of a pairs JSONL file), each prompt made into the
    run's instruction as it was when the rated text was generated."""
    from aigc.logbook import feedback_examples
    from aigc.pretrained.generator import instruction
    from aigc.pretrained.preference import PreferencePair, Thumb

    if pairs_file:
        rows = []
        for i, line in enumerate(Path(pairs_file).read_text(encoding="utf-8").splitlines(), start=1):
            if not line.strip():
                continue
            try:
                obj = json.loads(line)
                rows.append({"prompt": str(obj.get("prompt") or ""), "cond": obj.get("cond") or {},
                             "chosen": str(obj["chosen"]), "rejected": str(obj["rejected"])})
            except (json.JSONDecodeError, KeyError, AttributeError, TypeError):
                raise InvalidInput(f"{pairs_file}: line {i} is not a pair: expected an object with 'prompt', "
                                   "'chosen' and 'rejected' (as `aigc logs --pairs` writes them)") from None
        examples = {"pairs": rows, "thumbs": []}
    else:
        examples = feedback_examples(ws, run)
    template, cols = spec["data"].get("template"), spec["cond_columns"]

    def ask(e):
        return instruction(template, cols, e["prompt"], {k: v for k, v in e["cond"].items() if k in cols}, run) or " "

    pairs = [PreferencePair(ask(e), e["chosen"], e["rejected"]) for e in examples["pairs"]]
    thumbs = [Thumb(ask(e), e["text"], e["up"]) for e in examples["thumbs"]]
    return pairs, thumbs


def _hash_split(items: list, share: float = 0.1) -> tuple[list, list]:
    keyed = sorted(range(len(items)), key=lambda i: hashlib.sha256(repr(items[i]).encode()).hexdigest())
    n_val = max(1, round(len(items) * share))
    val = set(keyed[:n_val])
    return [x for i, x in enumerate(items) if i not in val], [x for i, x in enumerate(items) if i in val]


def combine_loras(first: dict[str, torch.Tensor], second: dict[str, torch.Tensor], scale_first: float,
                  scale_second: float) -> dict[str, torch.Tensor]:
    """Two LoRAs on the same modules as one of their summed rank, with scale 1 (``alpha == r``):
    ``B1 A1 s1 + B2 A2 s2 = [B1 s1, B2 s2] [A1; A2]``, exactly."""
    out = {}
    for key, a1 in first.items():
        if ".lora_A." not in key:
            continue
        b_key = key.replace(".lora_A.", ".lora_B.")
        if key not in second or b_key not in second or b_key not in first:
            raise InvalidInput(f"the two adapters do not cover the same modules ({key} is in one only)")
        out[key] = torch.cat([a1, second[key]], dim=0)
        out[b_key] = torch.cat([first[b_key] * scale_first, second[b_key] * scale_second], dim=1)
    return out


def _drift_guard(ws: Workspace, run: str, pspec: dict[str, Any], parent_dir: Path, tokenizer,
                 max_ratio: float):
    """(the guard, its record for run.json): the val conversations of the data ``run`` (or the run it
    was tuned from, and so on) learned from, and that run's perplexity on them when a tuning recorded
    it (else None: the guard measures the parent, which learned it)."""
    from aigc.errors import AigcError
    from aigc.pretrained.preference import DriftGuard

    try:
        _, val = chats_of(ws, pspec, parent_dir)
    except (AigcError, OSError) as e:
        raise InvalidInput(f"the drift guard scores the held-out data run {run!r} learned from, and it cannot "
                           f"be read ({e}): restore it, or tune with --max-drift 0 (no guard)") from None
    val = val[::max(1, len(val) // DRIFT_CONVERSATIONS)][:DRIFT_CONVERSATIONS]
    ids, labels = build_blocks(tokenizer, val, AdaptConfig(**pspec["adapt"]).block_size)
    before = (pspec.get("tune") or {}).get("drift") or {}
    same = before.get("conversations") == len(val) and before.get("root_nll") is not None
    root_nll = float(before["root_nll"]) if same else None
    record = {"max_ratio": max_ratio, "conversations": len(val), "root": before.get("root", run) if same else run}
    return DriftGuard(ids, labels, max_ratio, root_nll), record


def tune(ws: Workspace, run: str, *, method: str = "auto", beta: float = 0.1, name: str | None = None,
         pairs_file: str | None = None, train_overrides: dict[str, Any] | None = None,
         callbacks: Sequence = (), max_drift: float | None = TUNE_MAX_DRIFT) -> dict[str, Any]:
    """A new run tuned from LoRA run ``run`` on its users' feedback (or a pairs file): DPO on
    preference pairs, KTO on unpaired thumbs (``auto``: DPO when there are pairs). The parent's
    adapters are merged into the base, which is DPO's and KTO's reference; a fresh LoRA learns the
    preferences on top, and the two are stored as one LoRA of their summed rank, so the new run
    serves, exports and adapts like any LoRA run. Its run.json records its parent and what it
    learned from.

    Its reward model (:mod:`aigc.feedback.store`, what ``rerank_by: "feedback"`` ranks by) starts
    as the parent's: the new run's catalog row and run.json record, as ``feedback_inherits``, the
    parent's ratings in the catalog now (and those the parent inherited), which it learns before
    its own. So also when tuned from a pairs file: the parent's ratings are still the users' taste
    in the texts the new run writes. Ratings given to the parent later are not inherited.

    ``max_drift`` guards what preference losses do not see (:class:`DriftGuard`): each validation
    scores the held-out conversations of the data the run learned from (its dataset's val split or
    its chat file's), and weights whose perplexity there is more than ``max_drift`` times that of the
    run that learned it (the parent, or the first run of a chain of tunings, so the limit does not
    compound) are not kept: tuning goes back to the best weights within it and on at half the
    learning rate (``veto_backoffs`` times, 2 by default), then stops and keeps them, the parent's own
    when none are. Figures: the summary's ``val_drift`` and ``stop_reason`` ``"drift"``."""
    from safetensors.torch import load_file, save_file

    from aigc.checkpoints import save_weights

    from aigc.feedback.store import INHERITS, inheritance
    from aigc.pretrained.bases import load_base
    from aigc.pretrained.preference import PreferenceObjective, PreferenceTask, thumbs_from_pairs

    if method not in TUNE_METHODS:
        raise InvalidInput(f"--method must be one of {', '.join(TUNE_METHODS)}, got {method!r}")
    parent_dir = Path(ws.get_run(run)["path"])
    pspec = read_spec(parent_dir)
    if not is_adapted(pspec) or pspec["adapt"]["method"] != "lora":
        raise InvalidInput(f"run {run!r} is not a LoRA run: tuning from feedback adapts a run made with "
                           "`aigc train DATASET --base NAME` (method lora)")
    inherits = inheritance(ws, run)  # read before its feedback is: every rating inherited is one it could learn
    pairs, thumbs = _feedback_data(ws, run, pspec, pairs_file)
    if method == "auto":
        method = "dpo" if pairs else "kto"
    if method == "dpo":
        if len(pairs) < 2:
            raise InvalidInput(f"run {run!r} has {len(pairs)} preference pair(s) in its feedback (a thumbs up and "
                               "a thumbs down on the same prompt, a choice, or an edit): DPO needs at least 2; "
                               "rate more outputs, or use --method kto on thumbs")
        data = pairs
    else:
        data = thumbs + thumbs_from_pairs(pairs)
        ups = sum(t.up for t in data)
        if not data:
            raise InvalidInput(f"run {run!r} has no feedback yet: rate some of its outputs first")
        if ups in (0, len(data)):
            raise InvalidInput(f"KTO needs both thumbs up and thumbs down: run {run!r}'s feedback has only "
                               f"{'up' if ups else 'down'} ({len(data)})")
    if not beta > 0:
        raise InvalidInput(f"--beta must be > 0, got {beta}")
    if max_drift is not None and not (max_drift == 0 or max_drift > 1):
        raise InvalidInput(f"--max-drift must be a perplexity ratio > 1 (e.g. 1.1: within 10 %), or 0 for no "
                           f"guard, got {max_drift}")
    cfg = config_from_dict(TrainConfig, merge_options(TUNE_DEFAULTS, train_overrides), what="training option")
    cfg.validate()
    train_set, val_set = _hash_split(data)
    name = name or _default_name(ws, f"{run}-{method}")
    if ws.has_run(name):
        raise InvalidInput(f"run {name!r} already exists: pick another --name")
    acfg = AdaptConfig(**pspec["adapt"])
    base, _ = load_base(ws, pspec["base"])
    parent = AdaptedLM(base, "lora", r=acfg.r, alpha=acfg.alpha, dropout=acfg.dropout,
                       target_modules=acfg.target_modules)
    parent_state = _adapter_state(parent_dir, run)
    parent.load_state_dict(parent_state)
    torch.manual_seed(cfg.seed)
    policy = AdaptedLM(parent.net.merge_and_unload(), "lora", r=acfg.r, alpha=acfg.alpha, dropout=acfg.dropout,
                       target_modules=acfg.target_modules)
    tokenizer = _load_tokenizer(parent_dir)
    guard, drift = _drift_guard(ws, run, pspec, parent_dir, tokenizer, float(max_drift)) if max_drift else (None, None)
    if guard is not None:
        drift["root_nll"] = guard.measure_root(policy)  # (the policy is the parent until it steps)
    objective = PreferenceObjective(policy, method, beta)
    task = PreferenceTask(tokenizer, train_set, val_set, batch_size=cfg.batch_size, max_length=acfg.block_size,
                          guard=guard)
    counts = {"pairs": len(pairs), "thumbs_up": sum(t.up for t in thumbs), "thumbs_down": sum(not t.up for t in thumbs)}
    spec = {**{k: v for k, v in pspec.items() if k not in ("n_params",)}, "name": name, "created_at": now(),
            "train_config": asdict(cfg), "parent": run, INHERITS: inherits,
            "tune": {"method": method, "beta": beta, "source": pairs_file or "feedback", "learned_from": counts,
                     "train_examples": len(train_set), "val_examples": len(val_set), "stage_adapt": asdict(acfg),
                     **({"drift": drift} if drift else {})}}
    run_dir = ws.run_path(name)
    ws.create_run(name, method, pspec.get("dataset") or "",
                  {"tune": spec["tune"], "train": spec["train_config"], INHERITS: inherits})
    try:
        run_dir.mkdir(parents=True)
        tokenizer.save_pretrained(run_dir / TOKENIZER_DIR)
        for kept in (COPY_INDEX, CHATS_FILE):  # the copy guard's index; a chat-file run's conversations
            if (parent_dir / kept).exists():
                shutil.copyfile(parent_dir / kept, run_dir / kept)
        write_json_atomic(run_dir / RUN_FILE, spec)
        if guard is not None:  # the parent itself (a zero delta): what is kept when every validation drifts
            save_weights(objective, run_dir / "model.safetensors")
        state = fit(objective, task, cfg, run_dir, list(callbacks))
    except BaseException:
        ws.delete_run(name)
        raise
    if not (run_dir / "model.safetensors").exists() or (
            state.stop_reason == "interrupted" and not math.isfinite(state.best_val_loss)):  # before its first validation
        ws.record_run(name, status="interrupted", step=state.step)
        return ws.get_run(name)
    if drift is not None:  # the kept weights' figure (their last validation: the final full one)
        drift["kept"] = task.figures.get("drift") if state.stop_reason != "interrupted" else None
    # the preference adapter over the parent's, as one LoRA of their summed rank
    (run_dir / "model.safetensors").replace(run_dir / DELTA_FILE)
    scale = acfg.alpha / acfg.r
    combined = combine_loras(parent_state, load_file(str(run_dir / DELTA_FILE)), scale, scale)
    save_file({k: v.contiguous() for k, v in combined.items()}, str(run_dir / "model.safetensors"))
    rank = 2 * acfg.r
    spec["adapt"] = {**asdict(acfg), "r": rank, "alpha": rank}
    write_json_atomic(run_dir / RUN_FILE, spec)
    base, _ = load_base(ws, pspec["base"])
    merged_view = AdaptedLM(base, "lora", r=rank, alpha=rank, dropout=0.0, target_modules=acfg.target_modules)
    status = "interrupted" if state.stop_reason == "interrupted" else "finished"
    export(merged_view, run_dir, spec)
    summary = {"stop_reason": state.stop_reason, "steps": state.step, "elapsed_s": round(state.elapsed, 1),
               "best_val_loss": state.best_val_loss, **state.val_figures,
               **({"val_drift": drift["kept"]} if drift is not None else {})}
    ws.record_run(name, status=status, step=state.step, best_val_loss=state.best_val_loss, summary=summary)
    return ws.get_run(name)
