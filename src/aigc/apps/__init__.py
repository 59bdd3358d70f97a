"""Business apps on top of the core: :mod:`aigc.apps.copy` (the copywriting desk) and
:mod:`aigc.apps.assistant` (the customer-service assistant). Each has its own Python API; the CLI
and the server call it, it never calls them. What they share is here: the instruct model they
write with, and the language of a text."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

from aigc.errors import InvalidInput

DEFAULT_MODEL = "smollm2-135m-instruct"  # the bundled instruct base (Apache-2.0; English)

_generators: dict[tuple[str, str], Any] = {}
_lock = threading.Lock()


def lang_of(text: str) -> str:
    """``zh`` when at least a third of the letters are CJK ideographs, else ``en``."""
    letters = [c for c in text if c.isalpha()]
    cjk = sum(1 for c in letters if "\u4e00" <= c <= "\u9fff" or "\u3400" <= c <= "\u4dbf")
    return "zh" if letters and cjk * 3 >= len(letters) else "en"


def post_json(url: str, body: Any) -> str:
    """POST ``body`` as JSON to a webhook the operator configured; its answer as kept on the rows
    it reports: the HTTP status ("200") or the error (at most 300 characters). Never raises."""
    import json
    import urllib.request

    data = json.dumps(body, ensure_ascii=False, default=str).encode()
    req = urllib.request.Request(url, data=data, headers={"Content-Type": "application/json"}, method="POST")
    try:
        with urllib.request.urlopen(req, timeout=5) as resp:  # noqa: S310 - a URL the operator configured
            return str(resp.status)
    except Exception as e:  # noqa: BLE001 - recorded on the row; the app goes on
        return f"error: {e}"[:300]


def chat_texts(gen: Any, messages: list[dict[str, str]], n: int, sampling: Any) -> list[str]:
    """``n`` replies of instruct model ``gen`` to a conversation, through the one decoding core."""
    import torch

    from aigc.decoding import run

    group = gen.prepare("", n, None, sampling, messages=messages)
    texts: dict[int, str] = {}
    with torch.inference_mode():
        for chunk in run(gen.runner(group.width), group):
            texts[chunk.index] = texts.get(chunk.index, "") + chunk.text
    return [texts.get(i, "") for i in range(n)]


def instruct_model(ws: Any, model: str) -> Any:
    """An instruct model by name, loaded once per process: an adapted run of the workspace, or a
    pretrained base (a bundled one is added on first use). Loaded without the run guard: the apps
    apply the workspace's rails themselves, to what they show."""
    key = (str(Path(ws.root).resolve()), model)
    with _lock:
        gen = _generators.get(key)
        if gen is None:
            if ws.has_run(model):
                from aigc import runs

                gen = runs.load(ws, model, safety=False)
            else:
                from aigc.adapted import base_generator

                gen = base_generator(ws, model, None)
            if not hasattr(gen, "messages_ids"):
                raise InvalidInput(f"{model!r} is a run trained from scratch, not an instruct model: pass a "
                                   "pretrained base or a run adapted from one (`aigc base list`)")
            _generators[key] = gen
        return gen
