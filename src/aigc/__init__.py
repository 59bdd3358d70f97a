"""aigc-studio: a self-hosted generative-AI engine. The public Python API.

    import aigc
    aigc.ingest("reviews.csv", "reviews", text_column="review", cond_columns=["cat", "label"])
    aigc.ingest("photos/", "photos", image_size=64)  # one subfolder per class
    aigc.train("reviews", family="gpt", preset="small", time_budget="5m")
    gen = aigc.load("reviews-gpt-small")
    gen.generate("这款手机", cond={"cat": "手机", "label": "1"}, n=3, seed=7)

Every function takes ``workspace=`` (a path or a :class:`Workspace`); the default is
``$AIGC_HOME`` or ``~/.aigc``. Heavy modules (torch, transformers) load on first use.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from aigc.errors import AigcError, AlreadyExists, InvalidInput, NotFound
from aigc.workspace import Workspace

if TYPE_CHECKING:
    from aigc.generation import TextGenerator

__version__ = "0.1.0"
__all__ = [
    "AigcError", "AlreadyExists", "InvalidInput", "NotFound", "Workspace",
    "open_workspace", "ingest", "train", "resume", "load", "generate", "evaluate",
]


def open_workspace(workspace: str | Path | Workspace | None = None) -> Workspace:
    return workspace if isinstance(workspace, Workspace) else Workspace(workspace)


def ingest(path: str | Path, name: str, *, workspace: Any = None, **options: Any) -> dict:
    """Ingest a text file (txt/csv/tsv/jsonl/parquet), an image source (a folder of images, an
    IDX file, an .npz, a .csv of image paths), audio clips (a folder of WAV/FLAC/OGG/MP3, one
    subfolder per class, or a .csv of clip paths) or symbolic music (a MIDI file, a folder of MIDI
    files, ``music21:bach``) as dataset ``name``; returns its card.

    Audio options are those of :func:`aigc.data.audio.ingest_audio` (``sample_rate``, ``seconds``,
    ``image_size``, ``silence_db``, ``strict``): ``aigc.ingest("digits/", "digits", seconds=1.0)``.

    Image sources are recognised by the path, or by an image option (``image_size``, ``labels``...).
    Text options are those of :func:`aigc.data.ingest.ingest_text`, e.g. a CSV/TSV without a header
    row: ``aigc.ingest("poems.tsv", "poems", header=False, columns=["title", "author", "poem"],
    text_column="poem", cond_columns=["author"])``; ``min_cond_count`` (default 2): condition values
    with fewer train records share their column's ``other`` token.

    A CSV/TSV/.dat/Parquet/JSONL/Excel file with no text column and no text option is a table
    (``table=True`` forces one; see :func:`aigc.data.tables.ingest_table` for ``metadata``,
    ``drop_columns``...): ``aigc.ingest("adult.csv", "adult")``.
    """
    from aigc.data import audio, images, table_sources

    ws = open_workspace(workspace)
    progress = options.pop("progress", None)  # progress(stage, done, total): text ingestion's long stages
    table = options.pop("table", None)  # True: a table whatever the file; False: never one
    if table is not True:
        # Audio and music before images: a folder of clips would pass for an (empty) image folder.
        if audio.is_audio_source(path, options):
            return audio.ingest_audio(ws, path, name, progress=progress, **audio.audio_options(path, options))
        from aigc.data import music

        if music.is_music_source(path, options):
            return music.ingest_music(ws, path, name, progress=progress, **options)
        if images.is_image_source(path, options):
            return images.ingest_images(ws, path, name, **images.image_options(path, options))
    if table or (table is None and table_sources.is_table_source(path, options)):
        from aigc.data.tables import TABLE_INGEST_OPTIONS, ingest_table

        return ingest_table(ws, path, name, progress=progress,
                            **table_sources.table_options(path, options, TABLE_INGEST_OPTIONS))
    from aigc.data.ingest import ingest_text

    return ingest_text(ws, path, name, progress=progress, **options)


def _train_options(options: dict[str, Any]) -> dict[str, Any]:
    from aigc.training import parse_duration

    if "time_budget" in options:
        options["time_budget"] = parse_duration(options["time_budget"])
    return options


def train(dataset: str | None = None, *, family: str = "gpt", preset: str = "small", name: str | None = None,
          model: dict[str, Any] | None = None, workspace: Any = None, callbacks=(), base: str | None = None,
          method: str = "lora", adapt: dict[str, Any] | None = None, prompt_template: str | None = None,
          prompt_column: str | None = None, response_column: str | None = None, chat_file: str | None = None,
          **train_options: Any) -> dict:
    """Train ``family`` on ``dataset``; ``model`` overrides the preset's config, the rest the
    training options (max_steps, time_budget, batch_size, lr, seed, tokenizer, ...).

    With ``base`` (see ``aigc base list``) the run adapts that pretrained model instead, by
    ``method`` "lora" or "full" (``adapt``: r, alpha, dropout, target_modules, block_size), on the
    dataset's records as instructions (``prompt_template`` over its condition columns, or
    ``prompt_column`` + its text column) or on the conversations of ``chat_file`` (OpenAI, ShareGPT
    or Alpaca JSONL)::

        aigc.train("shop", base="smollm2-135m-instruct", time_budget="5m",
                   prompt_template="Write a {tone} product description for {category}")
    """
    if base is not None:
        from aigc import adapted

        return adapted.train(open_workspace(workspace), dataset, base, method=method, name=name, adapt=adapt,
                             prompt_template=prompt_template, prompt_column=prompt_column,
                             response_column=response_column, chat_file=chat_file,
                             train_overrides=_train_options(train_options), callbacks=callbacks)
    if not dataset:
        raise InvalidInput("missing dataset: aigc.train(DATASET, ...)")
    from aigc import runs

    return runs.train(open_workspace(workspace), dataset, family, preset, name, model,
                      _train_options(train_options), callbacks)


def resume(name: str, *, workspace: Any = None, callbacks=(), **train_options: Any) -> dict:
    from aigc import runs

    return runs.resume(open_workspace(workspace), name, _train_options(train_options), callbacks)


def load(name: str, *, workspace: Any = None, device: str | None = None, vocoder: str | None = None) -> TextGenerator:
    """A run's generator (text, image; a run on audio clips inverts its mels with ``vocoder``:
    ``auto``, ``griffin-lim`` or a vocoder run)."""
    from aigc import runs

    return runs.load(open_workspace(workspace), name, device, vocoder=vocoder)


def generate(name: str, prompt: str = "", *, workspace: Any = None, rerank: int = 1,
             rerank_by: str = "condition", **options: Any) -> list[str]:
    """One-shot: load run ``name`` and return ``n`` continuations of ``prompt``.

    ``rerank`` N > 1 (a run with text conditions): each sample is the one of N draws that a
    classifier of the conditions reads most surely as ``cond`` (:mod:`aigc.rerank`); with
    ``rerank_by="feedback"`` (any text run), the one its reward model, learned from the ratings of
    its outputs, scores highest (:mod:`aigc.feedback.store`)."""
    from aigc.feedback.store import check_rerank_by

    check_rerank_by(rerank_by)
    gen = load(name, workspace=workspace)
    if rerank == 1:
        return gen.generate(prompt, **options)
    from aigc.rerank import check_candidates, generate_reranked, judge_for_run

    check_candidates(rerank, "rerank")
    if rerank_by == "feedback":
        from aigc.feedback.store import judge_for

        judge = judge_for(open_workspace(workspace), name, prompt)  # no ratings: refused before drawing
        n = options.pop("n", 1)
        return judge.pick(gen.generate(prompt, n=n * rerank, **options), options.get("cond"), n)
    judge = judge_for_run(open_workspace(workspace), name)
    return generate_reranked(gen, prompt, candidates=rerank, judge=judge, **options)


def evaluate(name: str, *, workspace: Any = None, **options: Any) -> dict:
    from aigc.evaluation import evaluate as _evaluate

    ws = open_workspace(workspace)
    result = _evaluate(ws, name, **options)
    ws.push_run(name)  # eval.json (and samples) written into the run: the store's copy gets them too
    return result


def synthesize(name: str, n: int = 1000, out: str | Path = "synthetic.csv", *, workspace: Any = None,
               **options: Any) -> dict:
    """Write ``n`` synthetic rows / records / images of run ``name`` to ``out``, labelled as
    AI-generated; options: ``conditions``, ``constraints`` (tables), ``seed``, ``ingest`` (a dataset
    name to ingest the result as), ``progress``. Returns a summary (path, n, seconds...)."""
    from aigc import synthesis

    return synthesis.synthesize(open_workspace(workspace), name, n, out, **options)


def report(name: str, out_dir: str | Path | None = None, *, workspace: Any = None, **options: Any) -> dict:
    """Fidelity, utility and privacy of run ``name``'s synthetic data (``synth``: what
    :func:`synthesize` wrote; a table run samples it when not given); ``report.json`` and
    ``report.html`` under ``out_dir``."""
    from aigc import synthesis

    return synthesis.report(open_workspace(workspace), name, out_dir, **options)


def report_files(real: str | Path, synth: str | Path, out_dir: str | Path | None = None, **options: Any) -> dict:
    """The report of any real and synthetic table files (``holdout``, ``metadata``, ``target``)."""
    from aigc import synthesis

    return synthesis.report_files(real, synth, out_dir, **options)
