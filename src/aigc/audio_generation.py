"""Sound from a run trained on an audio dataset's mel images: the mel inverter and the waves.

A run of an image family (gan, vae, diffusion, ...) trained on an audio dataset generates mel
spectrograms as greyscale images (:mod:`aigc.data.audio_features` fixes their scale). Turning one
into sound takes an **inverter**, mel in dB -> waveform:

- ``griffin-lim``: :func:`aigc.data.audio_features.griffin_lim` (64 iterations, seeded phase), no
  training, always there;
- a **vocoder run**: ``aigc train DATASET --family vocoder`` trains :mod:`aigc.models.vocoder` on
  the dataset's clips; ``vocoder=RUN`` names one.

``vocoder=None`` (``auto``) picks the newest finished vocoder run trained on the same dataset, else
Griffin-Lim; what was picked is reported (``Inverter.name``), so a figure always says which
inverter made it. Weights load on first use.

This module knows runs (through the workspace) and the feature constants; the CLI, the server and
evaluation call it, it calls none of them.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

import numpy as np

from aigc.errors import InvalidInput, NotFound

GRIFFIN_LIM = "griffin-lim"
AUTO = "auto"
GL_ITERATIONS = 64


class Inverter:
    """mel (dB) -> waveform. ``name`` is ``griffin-lim`` or the vocoder run's name."""

    def __init__(self, name: str, sample_rate: int, vocoder_dir: Path | None = None, device: str | None = None,
                 model=None):
        """``model``: the vocoder run's model when the caller has it loaded already (else loaded on first use)."""
        self.name, self.sample_rate, self.vocoder_dir, self.device = name, sample_rate, vocoder_dir, device
        self._model = model

    @property
    def is_vocoder(self) -> bool:
        return self.vocoder_dir is not None

    def _vocoder(self):
        if self._model is None:
            from aigc.models.registry import config_from_dict
            from aigc.checkpoints import load_run_weights
            from aigc.models.vocoder import Vocoder
            from aigc.runs import read_spec
            from aigc.runtime import default_device

            spec = read_spec(self.vocoder_dir)
            model = Vocoder(config_from_dict(Vocoder.Config, spec["model_config"], what="vocoder config"))
            load_run_weights(model, self.vocoder_dir, self.name)
            self._model = model.to(self.device or default_device()).eval()
        return self._model

    def __call__(self, db_mels: Sequence[np.ndarray] | np.ndarray, seed: int = 0,
                 length: int | None = None) -> list[np.ndarray]:
        """dB mels, each (n_mels, frames), -> float32 waves in [-1, 1] (Griffin-Lim: phase seeded
        with ``seed + i`` for the i-th mel). ``length``: samples per wave (the clips' length, whose
        ``1 + length // hop`` frames the mels have); default ``(frames - 1) * hop``."""
        from aigc.data.audio_features import HOP, griffin_lim

        mels = [np.asarray(m, dtype=np.float32) for m in db_mels]
        if not mels:
            return []
        if not self.is_vocoder:
            return [griffin_lim(m, n_iter=GL_ITERATIONS, sr=self.sample_rate, seed=seed + i,
                                length=length or (m.shape[-1] - 1) * HOP).astype(np.float32)
                    for i, m in enumerate(mels)]
        model = self._vocoder()
        waves: list[np.ndarray] = []
        same = len({m.shape for m in mels}) == 1
        batches = [np.stack(mels[i : i + 32]) for i in range(0, len(mels), 32)] if same else [m[None] for m in mels]
        for batch in batches:  # frames * hop samples each: cut to the clips' length
            waves.extend(w[: length or (w.shape[-1] - HOP)].astype(np.float32) for w in model.vocode(batch))
        return waves

    def describe(self) -> dict[str, Any]:
        return {"inverter": self.name, "kind": "vocoder" if self.is_vocoder else GRIFFIN_LIM,
                **({"griffin_lim_iterations": GL_ITERATIONS} if not self.is_vocoder else {})}


def _vocoder_runs(ws, dataset: str) -> list[dict]:
    rows = [r for r in ws.list_runs() if r.get("family") == "vocoder" and r.get("dataset") == dataset
            and r.get("status") == "finished"]
    return sorted(rows, key=lambda r: r.get("created_at") or "", reverse=True)


def choose_inverter(ws, spec: dict, vocoder: str | None = None, device: str | None = None) -> Inverter:
    """The inverter for a run's spec (its ``audio`` features and ``dataset``).

    ``vocoder``: ``None`` or ``"auto"`` (the newest finished vocoder run on the same dataset, else
    Griffin-Lim), ``"griffin-lim"``, or the name of a vocoder run (checked: a vocoder, finished,
    at the features' sample rate)."""
    audio = spec.get("audio")
    if not audio:
        raise InvalidInput(f"run {spec.get('name')!r} was not trained on an audio dataset: it makes images, not "
                           "sound (--vocoder applies to runs on ingested audio)")
    sr = int(audio["sample_rate"])
    choice = (vocoder or AUTO).strip()
    if choice == GRIFFIN_LIM:
        return Inverter(GRIFFIN_LIM, sr)
    if choice == AUTO:
        found = _vocoder_runs(ws, spec.get("dataset", ""))
        if not found:
            return Inverter(GRIFFIN_LIM, sr)
        return Inverter(found[0]["name"], sr, ws.run_path(found[0]["name"]), device)
    if not ws.has_run(choice):
        raise NotFound(f"no run named {choice!r}: --vocoder takes a vocoder run, 'auto' or 'griffin-lim'")
    row = ws.get_run(choice)
    if row.get("family") != "vocoder":
        raise InvalidInput(f"run {choice!r} is a {row.get('family')} run, not a vocoder: train one with "
                           f"`aigc train {spec.get('dataset', 'DATASET')} --family vocoder`")
    if row.get("status") != "finished":
        raise InvalidInput(f"vocoder run {choice!r} is {row.get('status')}, not finished: wait for it or resume it")
    from aigc.runs import read_spec

    vspec = read_spec(Path(row["path"]))
    vsr = int(vspec["model_config"].get("sample_rate", sr))
    if vsr != sr:
        raise InvalidInput(f"vocoder {choice!r} makes {vsr} Hz audio but run {spec.get('name')!r} was trained on "
                           f"{sr} Hz features: pick a vocoder trained on a {sr} Hz dataset")
    return Inverter(choice, sr, Path(row["path"]), device)


def images_to_mels(arrays: np.ndarray, audio: dict) -> list[np.ndarray]:
    """Generated uint8 mel images (N, H, W) or (N, H, W, 1) -> dB mels (n_mels, frames) each."""
    from aigc.data.audio_features import image_to_mel

    arrays = np.asarray(arrays)
    if arrays.ndim == 4:
        arrays = arrays[..., 0]
    return [image_to_mel(a, n_mels=audio["n_mels"], frames=audio.get("frames")) for a in arrays]


def images_to_waves(arrays: np.ndarray, audio: dict, inverter: Inverter, seed: int = 0) -> list[np.ndarray]:
    """Generated uint8 mel images -> waves through ``inverter``, of the dataset's clip length."""
    from aigc.data.audio_features import HOP

    mels = images_to_mels(arrays, audio)
    samples = audio.get("samples")
    if samples is None and mels:  # a run from before the card recorded it: the frames' span
        samples = (mels[0].shape[-1] - 1) * HOP
    return inverter(mels, seed=seed, length=samples)
