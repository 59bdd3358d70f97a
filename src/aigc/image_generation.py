"""Image generation for every image family: sampling by class name, seeds, PNGs and a grid.

The family does the sampling (``model.sample(n, condition, generator, **options)``); this module
turns class names into ids, seeds the generator, validates family-specific options (a diffusion
run's ``steps`` and ``guidance``) and writes files. It knows nothing about the catalog.
"""

from __future__ import annotations

import inspect
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from torch import Tensor, nn

from aigc.errors import InvalidInput


# The smallest side on which the visible "AI生成" mark is drawn on each image: below it the mark's
# 5 % of the side is under 7 px of ink, which no one can read (such images get it on the grid only).
MARK_MIN_SIDE = 128


def to_uint8(images: Tensor) -> np.ndarray:
    """(N, C, H, W) floats in [0, 1] -> uint8 (N, H, W, C)."""
    return (images.detach().clamp(0, 1) * 255).round().to(torch.uint8).permute(0, 2, 3, 1).cpu().numpy()


class ImageGenerator:
    """A loaded image run: the model plus the class names it was trained on."""

    def __init__(self, model: nn.Module, classes: Sequence[str] = (), name: str = "",
                 audio: dict | None = None):
        self.model = model.eval()
        self.classes = list(classes)
        self.name = name
        self.audio = audio  # a run trained on an audio dataset's mel images: the features to decode them

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    def label_ids(self, n: int, cond: dict[str, str] | None) -> Tensor | None:
        """Class ids for ``n`` samples: the asked class, or every class in turn when none is asked."""
        cond = dict(cond or {})
        label = cond.pop("label", None)
        if cond:
            raise InvalidInput(f"unknown condition {next(iter(cond))!r}: image runs take only label=CLASS")
        if not self.classes:
            if label is not None:
                raise InvalidInput(f"run {self.name!r} is unconditional: drop --cond label={label}")
            return None
        if label is None:
            return torch.arange(n, device=self.device) % len(self.classes)
        if label not in self.classes:
            raise InvalidInput(f"unknown label {label!r}: this run was trained on {', '.join(self.classes)}")
        return torch.full((n,), self.classes.index(label), dtype=torch.long, device=self.device)

    def _options(self, method, options: dict) -> dict:
        given = {k: v for k, v in options.items() if v is not None}
        accepted = inspect.signature(method).parameters
        for key in given:
            if key not in accepted:
                raise InvalidInput(f"--{key.replace('_', '-')} does not apply to a {self.model.name} run")
        return given

    def check_options(self, options: dict) -> dict:
        """Refuse family extras this run's ``sample`` does not take, and out-of-range values."""
        given = self._options(self.model.sample, options)
        steps = given.get("steps")
        if steps is not None and (isinstance(steps, bool) or not isinstance(steps, int) or not 1 <= steps <= 1000):
            raise InvalidInput(f"steps must be an integer in 1..1000, got {steps!r}")
        guidance = given.get("guidance")
        if guidance is not None and (isinstance(guidance, bool) or not isinstance(guidance, (int, float))
                                     or not 0 <= guidance <= 50):
            raise InvalidInput(f"guidance must be a number in 0..50 (1 = none), got {guidance!r}")
        return given

    def sample(self, n: int = 16, *, cond: dict[str, str] | None = None, seed: int | None = None,
               **options) -> Tensor:
        """``n`` images (n, C, H, W) in [0, 1]. ``options``: family extras such as steps, guidance."""
        if n < 1:
            raise InvalidInput(f"n must be >= 1, got {n}")
        labels = self.label_ids(n, cond)
        generator = self._generator(seed)
        with torch.inference_mode():
            return self.model.sample(n, condition=labels, generator=generator,
                                     **self._options(self.model.sample, options))

    def interpolate(self, n: int, seed_a: int, seed_b: int, *, cond: dict[str, str] | None = None) -> Tensor:
        """``n`` frames (n, C, H, W) walking the latent space (slerp) from seed ``seed_a``'s sample to
        seed ``seed_b``'s; one class throughout (``cond['label']``, or the class seed a draws)."""
        if not hasattr(self.model, "interpolate"):
            raise InvalidInput(f"a {self.model.name} run cannot interpolate between seeds: use a gan or vae run")
        if n < 2:
            raise InvalidInput(f"interpolation needs at least 2 frames (--n), got {n}")
        label = self.label_ids(1, cond) if cond else None  # None: a conditional model draws the class
        with torch.inference_mode():
            return self.model.interpolate(n, seed_a, seed_b, condition=label)

    def style_transfer(self, images: Tensor, cond: dict[str, str], *, source: str | None = None,
                       seed: int | None = None, **options) -> Tensor:
        """Keep the style of ``images`` (n, C, H, W) and give them the class ``cond['label']``.

        Diffusion denoises a noised copy under the new class (SDEdit, ``strength``); a
        class-conditional vae encodes under the ``source`` class and decodes under the new one."""
        if "label" not in (cond or {}):
            raise InvalidInput("style transfer needs the new class: --cond label=CLASS")
        target = self.label_ids(len(images), cond)
        images = images.to(self.device)
        with torch.inference_mode():
            if hasattr(self.model, "sdedit"):
                return self.model.sdedit(images, target, generator=self._generator(seed),
                                         **self._options(self.model.sdedit, options))
            if hasattr(self.model, "style_transfer") and self.classes:
                if source is None:
                    raise InvalidInput("a vae encodes under the image's own class: pass its class as the source")
                self._options(self.model.style_transfer, options)
                return self.model.style_transfer(images, self.label_ids(len(images), {"label": source}), target)
        raise InvalidInput(f"a {self.model.name} run cannot do style transfer: use a class-conditional vae or diffusion")

    def style_transfer_file(self, path: str | Path, cond: dict[str, str], n: int = 1, **kwargs) -> Tensor:
        """:meth:`style_transfer` of an image file, resized to the run's image size."""
        from aigc.data.images import load_image, to_tensor

        cfg = self.model.config
        image = load_image(path, cfg.image_size, cfg.channels)
        return self.style_transfer(to_tensor(np.repeat(image[None], n, axis=0)), cond, **kwargs)

    def _generator(self, seed: int | None) -> torch.Generator:
        seed = seed if seed is not None else int.from_bytes(os.urandom(4), "little")
        return torch.Generator(device=self.device).manual_seed(seed)

    def save(self, images: Tensor, out_dir: str | Path, prefix: str = "sample",
             label: dict | None = None, mark: bool = False, *, audio: bool = True,
             cue: bool | None = None) -> list[Path]:
        """Write one PNG per image and ``grid.png``; returns the image paths.

        ``label``: the implicit AIGC label (GB 45438 Annex E) each PNG carries in its metadata,
        its ProduceID suffixed with the image's number; ``mark``: also the visible "AI生成" mark, on
        every image large enough to hold it legibly (at least 5 % of the shortest side, 7 px of
        ink; a 28x28 digit is not) and always on ``grid.png``. A run on audio clips also writes a
        WAV per image (``audio=False``: not), starting with the audible cue when ``cue`` (default:
        ``mark``) and a label is given."""
        from PIL import Image

        from aigc.data.images import write_grid
        from aigc.provenance.labels import save_image

        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        arrays = to_uint8(images)
        paths = []
        for i, a in enumerate(arrays):
            path = out / f"{prefix}-{i:03d}.png"
            image = Image.fromarray(a[..., 0] if a.shape[-1] == 1 else a)
            if label is None:
                image.save(path)
            else:
                meta = {**label, "ProduceID": f"{label.get('ProduceID') or 'image'}-{i:03d}"}
                save_image(image, path, meta, explicit=mark and min(image.size) >= MARK_MIN_SIDE)
            paths.append(path)
        write_grid(out / "grid.png", list(arrays))
        if label is not None:
            grid = out / "grid.png"
            with Image.open(grid) as g:
                g.load()
                save_image(g, grid, {**label, "ProduceID": f"{label.get('ProduceID') or 'image'}-grid"}, explicit=mark)
        if audio and getattr(self, "audio", None):  # (save is also called unbound, on None, for image sets)
            self.save_audio(arrays, out, prefix, label=label, mark=mark if cue is None else cue)
        return paths

    def save_audio(self, arrays: np.ndarray, out: Path, prefix: str = "sample", *, label: dict | None = None,
                   mark: bool = False, seed: int = 0) -> list[Path]:
        """A run trained on an audio dataset: each generated mel image as a WAV beside its PNG,
        through ``self.inverter`` (a vocoder run or Griffin-Lim; :mod:`aigc.audio_generation`).
        ``label``: the implicit AIGC label each WAV carries; ``mark``: the audible cue too."""
        from aigc.audio_generation import images_to_waves
        from aigc.provenance.audio import save_wav

        waves = images_to_waves(arrays, self.audio, self.inverter, seed=seed)
        out = Path(out)
        out.mkdir(parents=True, exist_ok=True)
        paths = []
        for i, wave in enumerate(waves):
            meta = None if label is None else {**label, "ProduceID": f"{label.get('ProduceID') or 'audio'}-{i:03d}"}
            paths.append(save_wav(out / f"{prefix}-{i:03d}.wav", wave, self.audio["sample_rate"], meta,
                                  explicit=mark))
        return paths

    @property
    def inverter(self):
        """How mels become sound: set by :func:`aigc.runs.load` (``vocoder=``), else Griffin-Lim."""
        if getattr(self, "_inverter", None) is None:
            from aigc.audio_generation import GRIFFIN_LIM, Inverter

            self._inverter = Inverter(GRIFFIN_LIM, self.audio["sample_rate"])
        return self._inverter

    @inverter.setter
    def inverter(self, value) -> None:
        self._inverter = value
