"""Runs: start, resume and load trainings of text families on ingested datasets.

A run folder holds everything needed to rebuild the model with no flags::

    runs/<name>/run.json           family, preset, model and training config, dataset, conditions
    runs/<name>/tokenizer.json     the tokenizer trained on the dataset's train split
    runs/<name>/model.safetensors  weights with the best validation loss
    runs/<name>/checkpoints/last.pt  weights + optimizer + RNG of the last completed step (resume)
    runs/<name>/metrics.jsonl, tb/ training curves;  export/ a transformers checkpoint (gpt)

This module ties the workspace, data, registry and training loop together; it imports no
surface (CLI, server).
"""

from __future__ import annotations

import copy
import inspect
import json
import shutil
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import torch
from torch import nn

from aigc.checkpoints import load_run_weights, load_weights
from aigc.data.dataset import read_card, read_text_split
from aigc.data.conditions import DEFAULT_MIN_COND_COUNT, value_counts
from aigc.data.textstream import encode_records, null_lookup, train_tokenizer
from aigc.data.tokenizers import TextTokenizer
from aigc.distributed import JobStopped, ProcessLost, launch, launched_rank, require_one_process
from aigc.errors import InvalidInput
from aigc.generation import TextGenerator
from aigc.models.registry import config_from_dict, get_family, make_config
from aigc.safety.training import COPY_INDEX, check_training_data, write_copy_index
from aigc.sharding import require_loop_step
from aigc.tasks import ImageTask, TableTask, TextLMTask
from aigc.training import LAUNCH_KEYS, TrainConfig, fit, merge_options
from aigc.workspace import Workspace, now, write_json_atomic

RUN_FILE = "run.json"
ENCODING_FILE = "encoding.json"  # a table family's data encoding, learned from the train split
# Share of a conditional run's training windows that start at a record, where its control tokens
# sit: a condition such as a product category shapes only a few words of a record, so the model
# learns it from the windows that see the tokens and those words together. 0.85 rather than 0.5:
# on the shop corpus it raised how often samples keep their category, at a slightly higher val loss.
ALIGNED_SHARE = 0.85


# Datasets that the families of another modality train on: an audio dataset's clips are stored as
# mel-spectrogram images (aigc.data.audio), a music dataset's pieces as text, one character per
# REMI token (aigc.data.music).
TRAINED_AS = {"audio": "image", "music": "text"}


def _default_run_name(ws: Workspace, dataset: str, family: str, preset: str) -> str:
    base = f"{dataset}-{family}-{preset}"
    name, k = base, 2
    while ws.has_run(name):
        name, k = f"{base}-{k}", k + 1
    return name


def train_config_for(family: type, preset: str, overrides: dict[str, Any] | None) -> TrainConfig:
    defaults = getattr(family, "TRAIN_DEFAULTS", {}).get(preset, {})
    cfg = config_from_dict(TrainConfig, merge_options(defaults, overrides), what="training option")
    cfg.validate()
    if not cfg.precision and getattr(family, "cpu_bf16", False):
        # resolved here, not at launch, so the run's spec records what it trained with
        from aigc.runtime import default_device, default_precision

        device = cfg.accelerator or default_device()
        if device == "cpu" and default_precision(device, cpu_bf16=True) == "bf16-mixed":
            cfg.precision = "bf16-mixed"
    return cfg


@dataclass
class Prepared:
    """A model built for a dataset, its task, what the run spec records, and files to write."""

    model: nn.Module
    task: Any
    spec: dict[str, Any]
    tokenizer: TextTokenizer | None = None
    encoding: dict[str, Any] | None = None  # a table family's data encoding (``encoding.json``)


def _prepare_text(fam: type, model_cfg: Any, cfg: TrainConfig, ds_dir: Path, card: dict,
                  tokenizer: TextTokenizer | None = None) -> Prepared:
    cond_columns = list(card.get("cond_columns") or [])
    train_records = read_text_split(ds_dir, "train")
    val_records = read_text_split(ds_dir, "val")
    if not val_records:
        fractions = card.get("split", {}).get("fractions") or [0, 0, 0]
        fix = ("ingest it again with a val fraction > 0, e.g. --split 0.9,0.05,0.05" if not fractions[1] else
               f"its {card.get('counts', {}).get('kept', '?')} records gave val none at a val fraction of "
               f"{fractions[1]:g}: ingest more records, or a larger val fraction, e.g. --split 0.8,0.1,0.1")
        raise InvalidInput(f"dataset {card.get('name')!r} has an empty val split: {fix}")
    if tokenizer is None:  # a new run: the tokenizer is trained on the train split
        # Datasets ingested before --min-cond-count existed get the default.
        tokenizer = train_tokenizer(train_records, cond_columns, cfg.tokenizer, cfg.vocab_size,
                                    card.get("min_cond_count", DEFAULT_MIN_COND_COUNT))
        model_cfg.vocab_size = tokenizer.vocab_size
        model_cfg.eos_token_id = tokenizer.eos_id
    torch.manual_seed(cfg.seed)
    model = fam(model_cfg)
    task = TextLMTask(encode_records(tokenizer, train_records, cond_columns),
                      encode_records(tokenizer, val_records, cond_columns), model.block_size, cfg,
                      aligned=ALIGNED_SHARE if cond_columns else 0.0, cond_dropout=cfg.cond_dropout,
                      null_of=null_lookup(tokenizer, cond_columns))
    # Every value of the dataset, each split's: the run knows them all (those without a token of
    # their own generate through their column's ``other`` token), and lists them all to the API.
    test_records = read_text_split(ds_dir, "test") if cond_columns else []
    records = (r for rs in (train_records, val_records, test_records) for r in rs)
    values = value_counts((r.cond for r in records), cond_columns)
    spec = {"cond_columns": cond_columns, "conditions": {c: sorted(values[c]) for c in cond_columns},
            "min_cond_count": card.get("min_cond_count", DEFAULT_MIN_COND_COUNT),
            "normalize": bool(card.get("normalize", True))}  # prompts are normalized as the text was
    return Prepared(model, task, spec, tokenizer)


def _prepare_image(fam: type, model_cfg: Any, cfg: TrainConfig, ds_dir: Path, card: dict,
                   overrides: dict[str, Any] | None = None) -> Prepared:
    from aigc.data.images import read_image_split, to_tensor

    train, val = read_image_split(ds_dir, "train"), read_image_split(ds_dir, "val")
    model_cfg.image_size = train.images.shape[1]
    model_cfg.channels = train.images.shape[3]
    if "num_classes" not in (overrides or {}):  # labelled data trains a class-conditional model
        model_cfg.num_classes = len(train.classes) if train.labels is not None else 0
    conditional = model_cfg.num_classes > 0

    def labels(split):
        return torch.from_numpy(split.labels).long() if conditional and split.labels is not None else None

    torch.manual_seed(cfg.seed)
    model = fam(model_cfg)
    task = ImageTask(to_tensor(train.images), labels(train), to_tensor(val.images), labels(val), cfg)
    return Prepared(model, task, {"classes": train.classes if conditional else []})


def _plan_privacy(fam: type, model_cfg: Any, cfg: TrainConfig) -> None:
    """A differentially private table run plans its noise for the run's steps: ``dp_steps`` follows
    ``max_steps``, and a run with a time budget alone is refused (the accountant must know the steps)."""
    if not getattr(fam, "DP", False) or not getattr(model_cfg, "epsilon", 0):
        return
    # the accountant plans one process's noise: averaged over ranks it would be weaker than it says
    require_one_process(cfg, "a differentially private run")
    if not cfg.max_steps:
        raise InvalidInput("a differentially private run needs --max-steps: the noise is planned for a number of "
                           "steps (a time budget may still stop it earlier, spending less of epsilon)")
    model_cfg.dp_steps = cfg.max_steps


def _prepare_table(fam: type, model_cfg: Any, cfg: TrainConfig, ds_dir: Path, card: dict,
                   encoding: dict[str, Any] | None = None) -> Prepared:
    from aigc.data.tables import TableMetadata, read_table_split, to_model_frame
    from aigc.models.table_encoding import column_specs
    from aigc.table_generation import combinations

    meta = TableMetadata.from_dict(card["metadata"])
    specs = column_specs(meta)
    if not specs:
        raise InvalidInput(f"dataset {card.get('name')!r} has no column a table family can learn "
                           "(only id, text or PII columns): ingest it with --metadata naming their kinds")
    stored_train = read_table_split(ds_dir, "train")
    train = to_model_frame(stored_train, meta)
    fit_s = None
    if encoding is None:  # a new run: the encoding is learned from the train split
        t0 = time.perf_counter()
        encoding = fam.fit_encoding(model_cfg, train, specs, cfg.seed)
        fit_s = round(time.perf_counter() - t0, 2)  # (the budget counts it: train() passes fit its setup_s)
    torch.manual_seed(cfg.seed)
    model = fam(model_cfg, encoding)
    task = None
    if getattr(fam, "TRAINABLE", True):
        val = to_model_frame(read_table_split(ds_dir, "val"), meta)
        task = TableTask(model.encode(train), model.encode(val) if len(val) else None, cfg)
    # fixed combinations are checked against the combinations the train split holds
    combos = {",".join(c["columns"]): combinations(stored_train, list(c["columns"]))
              for c in meta.constraints if c.get("type") == "fixed_combinations"}
    return Prepared(model, task, {"metadata": card["metadata"], "n_train_rows": len(train),
                                  "fixed_combinations": combos, "encoding_fit_s": fit_s}, encoding=encoding)


def _prepare_audio(fam: type, model_cfg: Any, cfg: TrainConfig, ds_dir: Path, card: dict) -> Prepared:
    """A family that learns from the clips themselves (the vocoder), not from their mel images."""
    torch.manual_seed(cfg.seed)
    model = fam(model_cfg)
    task = fam.task_for_dataset(ds_dir, model_cfg, cfg.batch_size)
    return Prepared(model, task, {"audio": card["features"]})


def _prepare(fam: type, model_cfg: Any, cfg: TrainConfig, ds_dir: Path, overrides=None, tokenizer=None,
             encoding=None) -> Prepared:
    card = read_card(ds_dir)
    if fam.modality == "audio":
        return _prepare_audio(fam, model_cfg, cfg, ds_dir, card)
    if fam.modality == "text":
        return _prepare_text(fam, model_cfg, cfg, ds_dir, card, tokenizer)
    if fam.modality == "table":
        return _prepare_table(fam, model_cfg, cfg, ds_dir, card, encoding)
    return _prepare_image(fam, model_cfg, cfg, ds_dir, card, overrides)


def train(
    ws: Workspace,
    dataset: str,
    family: str = "gpt",
    preset: str = "small",
    name: str | None = None,
    model_overrides: dict[str, Any] | None = None,
    train_overrides: dict[str, Any] | None = None,
    callbacks: Sequence = (),
) -> dict[str, Any] | None:
    """Start a new run; returns its catalog row (None on ranks other than 0 of a multi-process
    job). Bad input fails before anything is written.

    With several processes (``devices``, ``num_nodes``) every rank runs this function: the
    processes are launched before anything is written, rank 0 alone names the run, writes its
    folder and catalog row, and the other ranks rebuild the model from the files it wrote."""
    started = time.perf_counter()  # the time budget is the command's: setup counts, not the loop alone
    fam = get_family(family)
    model_cfg = make_config(fam, preset, model_overrides)
    cfg = train_config_for(fam, preset, train_overrides)
    require_loop_step(cfg, fam)
    _plan_privacy(fam, model_cfg, cfg)
    ds = ws.get_dataset(dataset)
    if fam.modality not in (ds["modality"], TRAINED_AS.get(ds["modality"])):
        raise InvalidInput(f"dataset {dataset!r} holds {ds['modality']} but {family} is a {fam.modality} family")
    if name and not launched_rank():  # before starting processes for nothing
        _check_new_name(ws, name)
    fabric = launch(cfg)
    if fabric.is_global_zero:
        made = _broadcast_outcome(fabric, lambda: _create(ws, fam, family, preset, name, model_cfg, cfg, ds,
                                                          model_overrides))
        name, run_dir, spec, prep = made
    else:
        name = _broadcast_outcome(fabric, None)
        run_dir = ws.run_path(name)
        spec = read_spec(run_dir)
        cfg = config_from_dict(TrainConfig, spec["train_config"], what="training option")  # rank 0's, as planned
        prep = _rebuild(ws, spec, run_dir, cfg)
    return _fit_and_record(ws, name, run_dir, spec, prep.model, prep.task, cfg, callbacks, resume=False,
                           fabric=fabric, setup_s=time.perf_counter() - started)


def _create(ws: Workspace, fam: type, family: str, preset: str, name: str | None, model_cfg: Any,
            cfg: TrainConfig, ds: dict[str, Any], model_overrides: dict[str, Any] | None):
    """Rank 0's part of a new run: name it, build the model, write the run folder and the catalog row."""
    dataset = ds["name"]
    name = name or _default_run_name(ws, dataset, family, preset)
    _check_new_name(ws, name)
    if fam.modality == "text":
        check_training_data(ws, dataset, read_card(Path(ds["path"])))
    prep = _prepare(fam, model_cfg, cfg, Path(ds["path"]), model_overrides)
    model = prep.model

    run_dir = ws.run_path(name)
    spec = {
        "name": name,
        "family": family,
        "preset": preset,
        "modality": fam.modality,
        "dataset": dataset,
        "model_config": asdict(model_cfg),
        "train_config": asdict(cfg),
        **prep.spec,
        "n_params": sum(p.numel() for p in model.parameters() if p.requires_grad),
        "created_at": now(),
    }
    card = read_card(Path(ds["path"]))
    if ds["modality"] == "audio":  # how its images turn back into sound, kept with the run
        spec["audio"] = card["features"]
    if card.get("modality") == "music":  # REMI tokens as text: the run keeps the tokenizer that decodes them
        from aigc.data.music import TOKENIZER_FILE

        spec["music"] = {"tokenizer": TOKENIZER_FILE, "baselines": card.get("baselines")}
    ws.create_run(name, family, dataset, {"model": spec["model_config"], "train": spec["train_config"]})
    try:
        run_dir.mkdir(parents=True)
        if prep.tokenizer is not None:
            prep.tokenizer.save(run_dir / "tokenizer.json")
        if spec.get("music"):
            shutil.copyfile(Path(ds["path"]) / spec["music"]["tokenizer"], run_dir / spec["music"]["tokenizer"])
        if prep.encoding is not None:
            write_json_atomic(run_dir / ENCODING_FILE, prep.encoding)
        if fam.modality == "text":  # the copy guard's index of what the run learns from
            spec["copy_index"] = write_copy_index(
                run_dir, (r.text for r in read_text_split(Path(ds["path"]), "train")), ws)
        write_json_atomic(run_dir / RUN_FILE, spec)
    except BaseException:
        ws.delete_run(name)
        raise
    return name, run_dir, spec, prep


def _check_new_name(ws: Workspace, name: str) -> None:
    if ws.has_run(name):
        raise InvalidInput(f"run {name!r} already exists: pick another --name, or `aigc train --resume {name}`")


def _broadcast_outcome(fabric, make):
    """Rank 0 runs ``make`` and tells the other ranks the run's name, or that it failed (then
    they raise :class:`~aigc.distributed.JobStopped` instead of waiting for a run that never comes).
    Every rank calls this; ``make`` is None on the others. Returns ``make()`` on rank 0."""
    if fabric.world_size == 1:
        return make()
    if make is None:
        ok, value = fabric.broadcast(None, src=0)
        if not ok:
            raise JobStopped(f"rank {fabric.global_rank}: rank 0 stopped before training ({value})")
        return value
    try:
        made = make()
    except BaseException as e:
        fabric.broadcast((False, str(e) or type(e).__name__), src=0)
        raise
    fabric.broadcast((True, made[0]), src=0)
    return made


def _rebuild(ws: Workspace, spec: dict[str, Any], run_dir: Path, cfg: TrainConfig) -> Prepared:
    """The model and task of a run from its folder: to resume it, or on a rank other than 0."""
    fam = get_family(spec["family"])
    tokenizer = TextTokenizer.load(run_dir / "tokenizer.json") if fam.modality == "text" else None
    encoding = _read_encoding(run_dir) if fam.modality == "table" else None
    model_cfg = config_from_dict(fam.Config, spec["model_config"])
    return _prepare(fam, model_cfg, cfg, ws.dataset_path(spec["dataset"]), spec["model_config"], tokenizer,
                    encoding)


def resume(ws: Workspace, name: str, train_overrides: dict[str, Any] | None = None,
           callbacks: Sequence = ()) -> dict[str, Any] | None:
    """Continue an interrupted (or finished, with a larger --max-steps/--time-budget) run.

    The number of processes is this session's (``devices``, ``num_nodes``; one by default),
    not the run's: a run trained on two processes resumes on one, or on four. The batch size
    stays per process."""
    row = ws.get_run(name)
    run_dir = Path(row["path"])
    spec = read_spec(run_dir)
    if spec.get("base"):  # adapted from a pretrained base
        from aigc import adapted

        return adapted.resume(ws, name, spec, run_dir, train_overrides, callbacks)
    saved = {k: v for k, v in spec["train_config"].items() if k not in LAUNCH_KEYS}
    cfg = config_from_dict(TrainConfig, merge_options(saved, train_overrides), what="training option")
    cfg.validate()
    require_loop_step(cfg, get_family(spec["family"]))
    if not ws.has_dataset(spec["dataset"]):
        raise InvalidInput(f"run {name!r} was trained on dataset {spec['dataset']!r}, which no longer exists")
    fabric = launch(cfg)
    prep = _rebuild(ws, spec, run_dir, cfg)
    spec["train_config"] = asdict(cfg)
    if fabric.is_global_zero:
        write_json_atomic(run_dir / RUN_FILE, spec)
    return _fit_and_record(ws, name, run_dir, spec, prep.model, prep.task, cfg, callbacks, resume=True,
                           fabric=fabric)


class SampleGrids:
    """At every validation, a grid of samples with a fixed seed in ``samples/step-NNNNNNN.png``,
    so a person can watch an image model learn. Generated images like any other: each grid carries
    ``label`` (the workspace's implicit AIGC label, its ProduceID suffixed with the step) and, with
    ``mark``, the visible mark."""

    def __init__(self, model: nn.Module, classes: list[str], out_dir: Path, n: int = 16, *,
                 label: dict[str, Any] | None = None, mark: bool = False):
        self.model, self.classes, self.out_dir, self.n = model, classes, out_dir, n
        self.label, self.mark = label, mark

    def on_eval(self, state) -> None:
        from aigc.data.images import write_grid
        from aigc.image_generation import ImageGenerator, to_uint8

        gen = ImageGenerator(self.model, self.classes)
        try:
            fast = {"steps": 10} if "steps" in inspect.signature(self.model.sample).parameters else {}
            images = gen.sample(self.n, seed=0, **fast)
        except InvalidInput:  # e.g. a vqvae before its prior exists
            return
        finally:
            self.model.train()
        self.out_dir.mkdir(exist_ok=True)
        name = f"step-{state.step:07d}"
        label = self.label and {**self.label, "ProduceID": f"{self.label['ProduceID']}-{name}"}
        write_grid(self.out_dir / f"{name}.png", list(to_uint8(images)), label=label, mark=self.mark)


def _fail_if_still_running(ws: Workspace, name: str) -> None:
    """On a rank above 0 whose job lost a process: if the catalog still says the run is running,
    rank 0 is the one that died (a living rank 0 records the failure itself), so no one else will
    say so. Marked failed (its last checkpoint resumes); a catalog this rank cannot read or that
    has no such run (another node's own SQLite file) is left alone: the job's error stands."""
    try:
        if ws.has_run(name) and ws.get_run(name)["status"] == "running":
            ws.update_run(name, status="failed")
    except Exception:  # noqa: BLE001 - the lost process is the error to report, not the catalog's
        pass


def _fit_and_record(ws, name, run_dir, spec, model, task, cfg, callbacks, resume, fabric,
                    setup_s: float = 0.0) -> dict[str, Any] | None:
    """Train and record the outcome. Every rank trains; rank 0 alone touches the catalog and
    writes the run's files (the others return None)."""
    zero = fabric.is_global_zero
    if spec["modality"] == "image":
        from aigc.provenance.labels import new_produce_id
        from aigc.safety.guard import guard_for

        guard = guard_for(ws)
        callbacks = [*callbacks, SampleGrids(model, spec.get("classes", []), run_dir / "samples",
                                             label=guard.label(new_produce_id()),
                                             mark=bool(guard.policy.labels.get("image_mark")))]
    if zero:
        ws.update_run(name, status="running")
    if task is None:  # a closed-form family (a copula): fitting its encoding was the whole fit
        return _record_closed_form(ws, name, run_dir, spec) if zero else None
    stage_cfg = cfg
    if hasattr(model, "prior_sampler") and cfg.time_budget:
        # Two stages share the one budget the user gave: the model gets its share, the prior the rest.
        stage_cfg = replace(cfg, time_budget=cfg.time_budget * model.first_stage_budget_share)
    exports = hasattr(model, "export") or hasattr(model, "save_pipeline")
    # FSDP shards ``model`` in place: rank 0 exports the best weights from a plain copy
    plain = copy.deepcopy(model) if zero and exports and cfg.strategy == "fsdp" else model
    try:
        state = fit(model, task, stage_cfg, run_dir, list(callbacks), resume=resume, fabric=fabric, setup_s=setup_s)
    except BaseException as e:
        if zero:
            has_ckpt = (run_dir / "checkpoints" / "last.pt").exists()
            if not resume and not has_ckpt:
                ws.delete_run(name)  # nothing worth keeping: leave no half-made run behind
            else:
                ws.update_run(name, status="failed")
        elif isinstance(e, ProcessLost):
            _fail_if_still_running(ws, name)
        raise
    status = "interrupted" if state.stop_reason == "interrupted" else "finished"
    if status == "finished" and hasattr(model, "prior_sampler"):
        # A VQ-VAE samples through an autoregressive prior over its codes: the run's second stage.
        from aigc.prior import PRIOR_DIR, train_prior

        resume_prior = resume and (run_dir / PRIOR_DIR / "checkpoints" / "last.pt").exists()
        try:
            # What the first stage left of the budget (at least a second, so the prior exists)
            prior_cfg = replace(cfg, time_budget=max(1.0, cfg.time_budget - state.elapsed)) if cfg.time_budget else cfg
            _, spec["prior"] = train_prior(model, task, spec["preset"], prior_cfg, run_dir, callbacks, resume_prior)
        except BaseException:
            if zero:
                ws.update_run(name, status="failed")
            raise
        if zero:
            write_json_atomic(run_dir / RUN_FILE, spec)
        if spec["prior"]["stop_reason"] == "interrupted":
            status = "interrupted"
    if not zero:
        return None
    summary = {
        "stop_reason": state.stop_reason,
        "steps": state.step,
        "elapsed_s": round(state.elapsed, 1),
        "tokens_seen": state.tokens_seen,
        "train_loss": state.train_loss,
        "best_val_loss": state.best_val_loss,
        "unit": state.unit,  # what tokens_seen counts
        **state.val_figures,  # the best val loss in the data's terms (val_bits_per_token for text)
    }
    if state.world_size > 1:  # how the last session trained: its processes and their global batch
        summary["processes"], summary["global_batch"] = state.world_size, state.global_batch
    privacy = model.privacy() if hasattr(model, "privacy") else None
    if privacy:  # a differentially private run: what the accountant says it spent, and its delta
        summary["epsilon"], summary["delta"] = privacy.get("epsilon"), privacy.get("delta")
        summary["privacy"] = privacy
    if status == "finished" and exports:
        _export(plain, run_dir)
    ws.record_run(name, status=status, step=state.step, best_val_loss=state.best_val_loss, summary=summary)
    # The run's files and row are complete here, on rank 0 alone.
    return ws.get_run(name)


def _record_closed_form(ws: Workspace, name: str, run_dir: Path, spec: dict[str, Any]) -> dict[str, Any]:
    summary = {"stop_reason": "fitted", "steps": 0, "unit": "row", "train_rows": spec.get("n_train_rows"),
               "elapsed_s": spec.get("encoding_fit_s")}
    ws.record_run(name, status="finished", step=0, summary=summary)
    return ws.get_run(name)


def _read_encoding(run_dir: Path) -> dict[str, Any]:
    return _read_run_json(run_dir / ENCODING_FILE)


def _export(model: nn.Module, run_dir: Path) -> None:
    """Write export/ through a staging folder and a rename: never half an export."""
    load_weights(model, run_dir / "model.safetensors")  # export the best weights, not the last
    staged = run_dir / ".export-tmp"
    shutil.rmtree(staged, ignore_errors=True)
    if hasattr(model, "save_pipeline"):  # a diffusers pipeline folder
        model.save_pipeline(staged)
    else:  # a transformers checkpoint
        model.export(staged, TextTokenizer.load(run_dir / "tokenizer.json"))
    final = run_dir / "export"
    old = run_dir / ".export-old"
    if final.exists():
        final.rename(old)
    staged.rename(final)
    shutil.rmtree(old, ignore_errors=True)


def read_spec(run_dir: Path) -> dict[str, Any]:
    return _read_run_json(run_dir / RUN_FILE)


def _read_run_json(path: Path) -> dict[str, Any]:
    if not path.exists():
        raise InvalidInput(f"{path} is missing: the run folder is damaged; train it again")
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError):  # written atomically, so only a damaged disk
        raise InvalidInput(f"{path} is damaged (not JSON): train the run again") from None


def load(ws: Workspace, name: str, device: str | None = None, safety: bool = True, vocoder: str | None = None):
    """Rebuild a run's model from its folder (best weights): a :class:`TextGenerator` for text
    families, an :class:`~aigc.image_generation.ImageGenerator` for image families.

    ``safety``: a text generator gets the workspace's guard (input and output rails, the run's
    copy index; :mod:`aigc.safety.guard`). Off for evaluation, which measures the model itself.
    ``vocoder``: a run on audio clips turns mels into sound with this inverter (``auto``: the
    newest vocoder run on its dataset, else Griffin-Lim; :func:`aigc.audio_generation.choose_inverter`)."""
    gen = _load(ws, name, device)
    spec_audio = getattr(gen, "audio", None)
    if spec_audio:
        from aigc.audio_generation import choose_inverter

        gen.inverter = choose_inverter(ws, read_spec(ws.run_path(name)), vocoder, device)
    elif vocoder not in (None, "auto"):
        raise InvalidInput(f"run {name!r} was not trained on audio clips: --vocoder applies to those runs only")
    if safety and isinstance(gen, TextGenerator):
        from aigc.safety.guard import RunGuard, guard_for
        from aigc.safety.normalize import warm as warm_normalize

        run_dir = ws.run_path(name)
        if not (run_dir / COPY_INDEX).exists():  # a run trained before the copy guard: its index, once
            dataset = read_spec(run_dir).get("dataset")
            if dataset and ws.has_dataset(dataset):
                write_copy_index(run_dir, (r.text for r in read_text_split(ws.dataset_path(dataset), "train")), ws)
        gen.guard = RunGuard(guard_for(ws), run_dir)
        gen.guard.copy_index  # noqa: B018 - loaded here, not on a request
        warm_normalize()
    return gen


def _load(ws: Workspace, name: str, device: str | None = None):
    from aigc.runtime import default_device

    row = ws.get_run(name)
    run_dir = Path(row["path"])
    spec = read_spec(run_dir)
    if spec.get("base"):  # adapted from a pretrained base: a chat generator
        from aigc import adapted

        return adapted.load(ws, name, spec, run_dir, device)
    fam = get_family(spec["family"])
    if fam.modality == "table":
        from aigc.table_generation import TableGenerator

        model = fam(config_from_dict(fam.Config, spec["model_config"]), _read_encoding(run_dir))
        if getattr(fam, "TRAINABLE", True):
            load_run_weights(model, run_dir, name)
        model.to(device or default_device()).eval()
        ds_dir = ws.dataset_path(spec["dataset"]) if ws.has_dataset(spec["dataset"]) else None
        return TableGenerator(model, spec, name=name, dataset_dir=ds_dir)
    model = fam(config_from_dict(fam.Config, spec["model_config"]))
    load_run_weights(model, run_dir, name)
    model.to(device or default_device()).eval()
    if fam.modality == "audio":  # a vocoder: it inverts mels for other runs (aigc.audio_generation)
        return model
    if hasattr(model, "prior_sampler"):
        from aigc.prior import attach, load_prior

        prior = load_prior(run_dir, spec)
        if prior is not None:
            attach(model, prior.to(device or default_device()))
    if fam.modality == "image":
        from aigc.image_generation import ImageGenerator

        return ImageGenerator(model, spec.get("classes", []), name=name, audio=spec.get("audio"))
    tokenizer = TextTokenizer.load(run_dir / "tokenizer.json")
    return TextGenerator(model, tokenizer, spec["cond_columns"], spec["conditions"], name=name,
                         normalize=spec.get("normalize", True))  # runs from before it was recorded: ingest's default
