"""Sound over HTTP: ``POST /api/audio/generate``.

A run of an image family trained on an audio dataset generates mel spectrograms; the engine
samples them as it samples any image run (``ImageRequest``, told not to write WAVs) and, when the
log is on, writes each PNG. This route turns the images into sound with the inverter the request
asks for (``vocoder``: ``auto``, ``griffin-lim`` or a vocoder run;
:func:`aigc.audio_generation.choose_inverter`) and writes the WAVs into the generation's folder,
so that the files served, logged and returned are the ones the response names: the
implicit AIGC label inside each, and the audible cue when the policy's ``labels.audio_cue`` says so.

Inversion (Griffin-Lim or a vocoder's forward pass) runs in the threadpool, never on the event loop.
"""

from __future__ import annotations

import base64
import tempfile
import time
from pathlib import Path
from typing import Any

from fastapi import APIRouter, Request
from starlette.concurrency import run_in_threadpool

from aigc.engine import ImageRequest, Result
from aigc.errors import AigcError, InvalidInput
from aigc.server.common import drain, settings_of, shared, submit, with_param
from aigc.server.schemas import AudioGenerateRequest

router = APIRouter(prefix="/api/audio", tags=["audio"])
MAX_CACHED_INVERTERS = 4  # vocoders kept loaded between requests (each a few MB)
# where each kind of run is served, for the message that turns a non-audio run away
ROUTE_OF = {"text": "/api/generate or /v1/completions", "image": "/v1/images/generations",
            "table": "/api/synthesize"}


def _audio_spec(ws, name: str) -> dict[str, Any]:
    """The spec of run ``name``, which must generate mels of an audio dataset (404 when unknown)."""
    from aigc.runs import read_spec

    ws.get_run(name)
    spec = read_spec(ws.run_path(name))
    if spec.get("family") == "vocoder":
        raise with_param(InvalidInput(f"run {name!r} is a vocoder: it turns mels into sound for other runs; "
                                      f"send a run trained on dataset {spec.get('dataset')!r} as model and "
                                      f"{name!r} as vocoder"), "model")
    if not spec.get("audio"):
        kind = spec.get("modality") or "text"
        raise with_param(InvalidInput(f"run {name!r} is a {kind} run, not one trained on an audio dataset: "
                                      f"use {ROUTE_OF.get(kind, '/v1/images/generations')}"), "model")
    return spec


def _class(spec: dict[str, Any], label: str | None) -> str | None:
    """The run's own spelling of class ``label`` (matched ignoring case)."""
    classes = spec.get("classes") or []
    if label is None:
        return None
    if not classes:
        raise with_param(InvalidInput(f"{spec['name']!r} is unconditional: leave label out"), "label")
    for c in classes:
        if c.lower() == label.lower():
            return c
    raise with_param(InvalidInput(f"{label!r} is not a class of {spec['name']!r} (classes: {', '.join(classes)})"),
                     "label")


def _inverter(request: Request, spec: dict[str, Any], vocoder: str):
    """The request's inverter; a vocoder's weights stay loaded (a few runs) for the next request."""
    from aigc.audio_generation import choose_inverter

    state = shared(request)
    try:
        chosen = choose_inverter(state["ws"], spec, vocoder, settings_of(request).device)
    except AigcError as e:
        raise with_param(e, "vocoder") from None
    if not chosen.is_vocoder:
        return chosen
    weights = chosen.vocoder_dir / "model.safetensors"
    key = (chosen.name, str(chosen.vocoder_dir), weights.stat().st_mtime_ns if weights.exists() else 0)
    cache: dict = state.setdefault("audio_inverters", {})
    if key not in cache:
        while len(cache) >= MAX_CACHED_INVERTERS:
            cache.pop(next(iter(cache)))
        cache[key] = chosen
    return cache[key]


def _audio_cue(ws, result: Result) -> bool:
    """Whether the WAVs carry the audible cue: labelled output under ``labels.audio_cue`` (default on)."""
    if result.label is None:
        return False
    from aigc.safety.guard import guard_for

    return bool(guard_for(ws).policy.labels.get("audio_cue", True))


def _write_waves(result: Result, spec: dict[str, Any], inverter, seed: int, cue: bool) -> list[bytes]:
    """Each generated mel as a labelled WAV: in the generation's folder when it was logged (one
    atomic rename each), else in a scratch folder; returns the files' bytes."""
    from aigc.audio_generation import images_to_waves
    from aigc.image_generation import to_uint8
    from aigc.provenance.audio import save_wav

    audio = spec["audio"]
    waves = images_to_waves(to_uint8(result.images), audio, inverter, seed=seed)
    with tempfile.TemporaryDirectory(prefix="aigc-audio-") as scratch:
        paths = [Path(p).with_suffix(".wav") for p in result.paths] or \
                [Path(scratch) / f"image-{i:03d}.wav" for i in range(len(waves))]
        out = []
        for i, (path, wave) in enumerate(zip(paths, waves)):
            meta = None if result.label is None else \
                {**result.label, "ProduceID": f"{result.label.get('ProduceID') or 'audio'}-{i:03d}"}
            out.append(save_wav(path, wave, int(audio["sample_rate"]), meta, explicit=cue).read_bytes())
        return out


@router.post("/generate")
async def generate(body: AudioGenerateRequest, request: Request) -> dict[str, Any]:
    """``n`` clips of class ``label`` from an audio run: per clip a WAV and its spectrogram, as URLs
    of the logged generation (``response_format: "url"``, the default with the log on) or base64.
    ``audio_cue``: whether each WAV starts with the audible cue (the explicit label)."""
    settings, ws = settings_of(request), shared(request)["ws"]
    if body.n > settings.max_images:
        raise with_param(InvalidInput(f"n is {body.n}; this server makes at most {settings.max_images} clips per "
                                      "request"), "n")
    fmt = body.response_format or ("url" if settings.log else "b64_json")
    if fmt == "url" and not settings.log:
        raise with_param(InvalidInput("response_format 'url' needs the generation log (this server runs with "
                                      "--no-log): ask for b64_json"), "response_format")
    spec = await run_in_threadpool(_audio_spec, ws, body.model)
    label = _class(spec, body.label)
    inverter = await run_in_threadpool(_inverter, request, spec, body.vocoder)
    options = {k: v for k, v in (("steps", body.steps), ("guidance", body.guidance)) if v is not None}
    req = ImageRequest(model=body.model, n=body.n, cond={"label": label} if label else None, seed=body.seed,
                       options=options, timeout=body.timeout, endpoint="/api/audio/generate",
                       write_audio=False,  # the WAVs come from the inverter this request asks for, below
                       log_options={"inverter": inverter.describe()})
    handle, events = await submit(request, req)
    result = await drain(handle, events)
    cue = await run_in_threadpool(_audio_cue, ws, result)
    wavs = await run_in_threadpool(_write_waves, result, spec, inverter, body.seed or 0, cue)
    classes = spec.get("classes") or []
    names = [label or (classes[i % len(classes)] if classes else None) for i in range(len(wavs))]
    if fmt == "url":
        base = f"{str(request.base_url).rstrip('/')}/api/generations/{result.id}"
        data = [{"url": f"{base}/audio/{Path(p).with_suffix('.wav').name}",
                 "spectrogram_url": f"{base}/images/{Path(p).name}"} for p in result.paths]
    else:
        from aigc.image_generation import to_uint8
        from aigc.server.routers.openai import _png_b64

        arrays = await run_in_threadpool(to_uint8, result.images)
        data = [{"b64_wav": base64.b64encode(w).decode("ascii"),
                 "b64_png": await run_in_threadpool(_png_b64, a, result.label, i)}
                for i, (w, a) in enumerate(zip(wavs, arrays))]
    for item, name in zip(data, names):
        item["label"] = name
    return {"id": result.id, "created": int(time.time()), "model": body.model, "label": label, "seed": body.seed,
            "inverter": inverter.describe(), "sample_rate": int(spec["audio"]["sample_rate"]), "audio_cue": cue,
            "data": data,
            **({"aigc_label": result.label} if result.label is not None else {})}
