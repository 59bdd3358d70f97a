"""Native routes under ``/api``: runs and datasets to browse, ``generate`` as an NDJSON stream
(Ollama's shape: one object per chunk, then a final one with ``done: true``, timings in
nanoseconds and token counts), the generation log and feedback on it, and the arena's votes and
Elo leaderboard."""

from __future__ import annotations

import json
import time
from functools import partial
from pathlib import Path
from typing import Any

from fastapi import APIRouter, Query, Request
from fastapi.responses import FileResponse, StreamingResponse
from starlette.concurrency import run_in_threadpool

from aigc import arena, logbook
from aigc.engine import Result, TextEvent, TextRequest
from aigc.errors import InvalidInput, NotFound
from aigc.feedback import store as feedback_store
from aigc.generation import Sampling
from aigc.server.common import (check_limits, drain, guidance, rerank, settings_of, shared, stops, submit,
                                with_param)
from aigc.server.schemas import ArenaVoteRequest, FeedbackRequest, GenerateRequest
from aigc.workspace import now

router = APIRouter(prefix="/api", tags=["native"])
MAX_CURVE_POINTS = 400


def _ws(request: Request):
    return shared(request)["ws"]


# -- runs and datasets -----------------------------------------------------------------------------


def _run_info(ws, row: dict[str, Any]) -> dict[str, Any]:
    from aigc.runs import read_spec

    path = ws.run_path(row["name"], fetch=False)  # a listing never downloads runs from the artifact store
    info = {k: row[k] for k in ("name", "family", "dataset", "status", "step", "best_val_loss", "created_at",
                                "updated_at")}
    try:
        spec = read_spec(path)
    except Exception:  # noqa: BLE001 - a run folder being written or removed: list it without details
        spec = {}
    info["modality"] = spec.get("modality") or ("image" if spec.get("classes") is not None else "text")
    info["conditions"] = spec.get("conditions") or {}
    info["classes"] = spec.get("classes") or []
    model_cfg = spec.get("model_config") or {}
    if "image_size" in model_cfg:
        info["modality"] = "image"
        info["image_size"] = model_cfg["image_size"]
    if spec.get("audio"):  # mels of an audio dataset (an image family), or a vocoder that inverts them
        info["modality"] = "audio"
        info["sample_rate"] = spec["audio"].get("sample_rate")
    has_weights = (path / "model.safetensors").exists() or (path / "checkpoints" / "last.pt").exists()
    if not path.exists() and ws.mirror is not None:  # in the store, not cached here: fetched on first use
        has_weights = row["status"] in ("finished", "interrupted")
    if info["modality"] == "table":  # sampled by synthesis jobs (/api/synthesize), not by the engine
        columns = (spec.get("metadata") or {}).get("columns") or []
        info["columns"] = [{"name": c["name"], "kind": c["kind"]} for c in columns]
        info["conditions"] = {c["name"]: list(c.get("categories") or {})[:100] for c in columns
                              if c["kind"] in ("categorical", "boolean")}
        info["servable"] = False
        info["synthesizable"] = row["status"] == "finished" or has_weights
    elif spec.get("family") == "vocoder":  # not sampled itself: /api/audio/generate takes it as `vocoder`
        info["servable"] = info["synthesizable"] = False
    else:
        info["servable"] = has_weights
        info["synthesizable"] = has_weights
    return info


@router.get("/runs")
def list_runs(request: Request) -> dict[str, Any]:
    ws = _ws(request)
    return {"runs": [_run_info(ws, r) for r in ws.list_runs()]}


@router.get("/runs/{name}")
def get_run(name: str, request: Request) -> dict[str, Any]:
    ws = _ws(request)
    row = ws.get_run(name)
    info = _run_info(ws, row)
    path = ws.run_path(name)
    curve: list[dict[str, Any]] = []
    metrics = path / "metrics.jsonl"
    if metrics.exists():
        with open(metrics, encoding="utf-8") as f:
            for line in f:
                try:
                    curve.append(json.loads(line))
                except json.JSONDecodeError:  # a line being written right now
                    continue
    train = [c for c in curve if "val_loss" not in c]
    val = [c for c in curve if "val_loss" in c]
    step = max(1, len(train) // MAX_CURVE_POINTS)
    info["curve"] = {"train": train[::step], "val": val}
    evaluation = path / "eval.json"
    info["eval"] = json.loads(evaluation.read_text(encoding="utf-8")) if evaluation.exists() else None
    images = sorted(p.relative_to(path).as_posix() for p in path.glob("*.png"))
    images += sorted(p.relative_to(path).as_posix() for p in (path / "samples").glob("*.png"))[-8:]
    info["images"] = images
    info["summary"] = row["summary"]
    return info


def _safe_file(root: Path, relative: str, suffix: str = ".png", what: str = "image") -> Path:
    """A ``suffix`` file inside ``root``, never outside it (``..``, absolute paths and links are refused)."""
    try:
        path = (root / relative).resolve()
        ok = root.resolve() in path.parents and path.suffix.lower() == suffix and path.is_file()
    except (OSError, ValueError):  # a NUL byte, a name too long...
        ok = False
    if not ok:
        raise NotFound(f"no {what} {relative[:100]!r} here")
    return path


@router.get("/runs/{name}/files/{relative:path}")
def run_file(name: str, relative: str, request: Request):
    ws = _ws(request)
    ws.get_run(name)
    return FileResponse(_safe_file(ws.run_path(name), relative), media_type="image/png")


@router.get("/datasets")
def list_datasets(request: Request) -> dict[str, Any]:
    return {"datasets": _ws(request).list_datasets()}


@router.get("/datasets/{name}")
def get_dataset(name: str, request: Request) -> dict[str, Any]:
    row = _ws(request).get_dataset(name)
    row.pop("path", None)
    row["has_preview"] = (_ws(request).dataset_path(name) / "preview.png").exists()
    return row


@router.get("/datasets/{name}/preview.png")
def dataset_preview(name: str, request: Request):
    ws = _ws(request)
    ws.get_dataset(name)
    return FileResponse(_safe_file(ws.dataset_path(name), "preview.png"), media_type="image/png")


# -- generate ---------------------------------------------------------------------------------------


def _keep_alive(value: float | str | None) -> float | None:
    if value is None or isinstance(value, (int, float)):
        return value
    from aigc.training import parse_duration

    text = value.strip()
    if text.startswith("-"):
        return -1.0
    try:
        return parse_duration(text)
    except Exception as e:  # noqa: BLE001
        raise with_param(InvalidInput(f"keep_alive must be seconds or a duration like '5m', got {value!r}"),
                         "keep_alive") from e


def _final(result: Result, model: str, response: str = "") -> dict[str, Any]:
    ns = 1_000_000_000
    decode_s = max(0.0, result.total_s - result.queued_s - result.prefill_s)
    return {"model": model, "created_at": now(), "response": response, "done": True,
            "done_reason": result.finish_reasons[0] if result.finish_reasons else result.status,
            "status": result.status, "id": result.id,
            "total_duration": int(result.total_s * ns), "load_duration": int(result.load_s * ns),
            "queue_duration": int(result.queued_s * ns),
            "prompt_eval_count": result.prompt_tokens, "prompt_eval_duration": int(result.prefill_s * ns),
            "eval_count": result.completion_tokens, "eval_duration": int(decode_s * ns),
            "ttft_ms": None if result.ttft_s is None else round(result.ttft_s * 1000, 2),
            **({"aigc_label": result.label} if result.label is not None else {}),
            **({"safety": result.client_safety()} if result.safety else {})}


@router.post("/generate")
async def generate(body: GenerateRequest, request: Request):
    o = body.options
    candidates = rerank(body.rerank, body.stream)
    tokens = check_limits(request, body.prompt, o.num_predict, 1, "num_predict", candidates.get("rerank", 1))
    if o.min_tokens > tokens:
        raise with_param(InvalidInput(f"options.min_tokens is {o.min_tokens}; it can be at most num_predict ({tokens})"),
                         "options.min_tokens")
    req = TextRequest(model=body.model, prompt=body.prompt, cond=body.cond,
                      sampling=Sampling(max_new_tokens=tokens, temperature=o.temperature, top_k=o.top_k or None,
                                        top_p=None if o.top_p >= 1 else o.top_p,
                                        repetition_penalty=o.repeat_penalty, stop=stops(o.stop), seed=o.seed,
                                        min_new_tokens=o.min_tokens),
                      timeout=body.timeout, keep_alive=_keep_alive(body.keep_alive), endpoint="/api/generate",
                      options=o.model_dump(exclude_none=True), rerank_by=body.rerank_by,
                      **guidance(body.guidance), **candidates)
    handle, events = await submit(request, req)
    if not body.stream:
        result = await drain(handle, events)
        return _final(result, body.model, result.texts[0])

    def line(ev) -> str:
        if isinstance(ev, TextEvent):
            if not ev.text:
                return ""
            return json.dumps({"model": body.model, "created_at": now(), "response": ev.text, "done": False},
                              ensure_ascii=False) + "\n"
        return json.dumps(_final(ev, body.model), ensure_ascii=False) + "\n"

    async def lines():
        try:
            async for burst in events:  # one write per burst of events
                if text := "".join(line(ev) for ev in burst):
                    yield text
        except Exception as e:  # noqa: BLE001 - an error mid-stream ends the stream with an error line
            yield json.dumps({"error": str(e), "done": True}) + "\n"
        finally:
            if handle.result is None:
                handle.cancel()

    return StreamingResponse(lines(), media_type="application/x-ndjson", headers={"X-Generation-Id": handle.id})


# -- the log and feedback ------------------------------------------------------------------------------


@router.get("/generations")
def list_generations(request: Request, run: str | None = None, limit: int = Query(50, ge=1, le=500),
                     offset: int = Query(0, ge=0, le=2**62)) -> dict[str, Any]:  # SQLite integers are 64-bit
    return {"generations": logbook.list_generations(_ws(request), run, limit, offset)}


@router.get("/generations/{generation_id}")
def get_generation(generation_id: str, request: Request) -> dict[str, Any]:
    return logbook.get(_ws(request), generation_id)


@router.get("/generations/{generation_id}/images/{filename}")
def generation_image(generation_id: str, filename: str, request: Request):
    ws = _ws(request)
    logbook.get(ws, generation_id)
    return FileResponse(_safe_file(ws.root / "generations" / generation_id, filename), media_type="image/png")


@router.get("/generations/{generation_id}/audio/{filename}")
def generation_audio(generation_id: str, filename: str, request: Request):
    """A WAV of a logged audio generation (``/api/audio/generate``), its label inside."""
    ws = _ws(request)
    logbook.get(ws, generation_id)
    return FileResponse(_safe_file(ws.root / "generations" / generation_id, filename, ".wav", "audio file"),
                        media_type="audio/wav")


@router.post("/feedback", status_code=201)
async def feedback(body: FeedbackRequest, request: Request) -> dict[str, Any]:
    """A thumb, a choice or an edit on a logged generation; a text one's run's reward model learns
    from it in the same transaction (aigc.feedback.store), so the next ``rerank_by: "feedback"``
    request of that run ranks by it."""
    ws = _ws(request)
    learn = _learner(ws, body)
    if body.kind == "thumb":
        add = partial(logbook.add_feedback, ws, body.generation_id, body.rating, body.comment, body.sample)
    elif body.kind == "choice":
        add = partial(logbook.add_choice, ws, body.generation_id, body.sample, body.comment)
    else:
        add = partial(logbook.add_edit, ws, body.generation_id, body.edited, body.sample, body.comment)
    feedback_id = await run_in_threadpool(add, learn=learn)
    return {"id": feedback_id, "generation_id": body.generation_id, "kind": body.kind,
            "created": int(time.time())}


def _learner(ws, body: FeedbackRequest):
    """What the run's reward model learns from ``body``, given the rated generation's log row. An
    image generation, a run deleted since, or an empty sample (nothing to learn from) keep the
    row only."""

    def learn(gen: dict[str, Any]) -> None:
        texts, run, prompt, i = gen["output"].get("texts") or [], gen["run"], gen["prompt"], body.sample
        if gen["kind"] != "text" or not ws.has_run(run) or not feedback_store.learnable(texts[i]):
            return
        if body.kind == "thumb":
            feedback_store.record_thumb(ws, run, prompt, texts[i], body.rating in ("up", 1))
        elif body.kind == "choice":
            others = [t for k, t in enumerate(texts) if k != i and feedback_store.learnable(t)]
            if others:
                feedback_store.record_choice(ws, run, prompt, texts[i], others)
        else:
            feedback_store.record_edit(ws, run, prompt, texts[i], body.edited)

    return learn


@router.get("/runs/{name}/feedback")
def run_feedback(name: str, request: Request) -> dict[str, Any]:
    """How many ratings of each kind run ``name``'s reward model learned from, and its last pick
    (the newest ``rerank_by: "feedback"`` output among its last 50 logged generations) with the
    features that scored it."""
    ws = _ws(request)
    out = feedback_store.stats(ws, name)
    out["last_pick"] = None
    for gen in logbook.list_generations(ws, name, limit=50):
        texts = gen["output"].get("texts") or []
        if gen["options"].get("rerank_by") == "feedback" and texts:
            why = feedback_store.explain(ws, name, texts[0], gen["prompt"]) or {"score": None, "features": []}
            out["last_pick"] = {"generation_id": gen["id"], "text": texts[0], **why}
            break
    return out


@router.get("/settings")
def server_settings(request: Request) -> dict[str, Any]:
    """The limits a client (the studio page) should respect."""
    s = settings_of(request)
    return {"max_tokens": s.max_tokens, "max_batch": s.max_batch, "max_images": s.max_images,
            "max_prompt_chars": s.max_prompt_chars, "log": s.log}


# -- the arena: two runs answer one prompt, a person picks the better answer (aigc.arena) ---------------


@router.post("/arena/vote", status_code=201)
def arena_vote(body: ArenaVoteRequest, request: Request) -> dict[str, Any]:
    """Store a vote; each generation must be its run's answer to ``prompt`` under ``cond`` (400 if not)."""
    vote_id = arena.record_vote(_ws(request), **body.model_dump())
    return {"id": vote_id, "run_a": body.run_a, "run_b": body.run_b, "winner": body.winner}


@router.get("/arena/leaderboard")
def arena_leaderboard(request: Request) -> dict[str, Any]:
    """The runs ranked by Elo over every vote so far: ``{run, rating, wins, losses, ties, games}``."""
    return {"leaderboard": arena.leaderboard(_ws(request))}
