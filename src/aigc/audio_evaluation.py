"""`aigc eval` for sound: runs of an image family on an audio dataset's mel images, and vocoders.

What is judged is the **sound**, not the generated picture. A generated mel image is turned into a
wave by the run's inverter (Griffin-Lim or a vocoder run, :mod:`aigc.audio_generation`), and the
wave is analysed again (:func:`sound_to_images`: its log-mel, drawn on the dataset's fixed image
scale, exactly as ingestion drew the real clips). Those re-analysed spectrograms go to a small
audio classifier: :class:`aigc.metrics.image.DomainClassifier` trained once on the dataset's train
spectrograms and on some of them heard through Griffin-Lim (cached under
``classifiers/<dataset>.audio-gl/``, its test accuracy reported; see :class:`AudioJudge`). So a
better vocoder shows up in every figure.

Figures, each against the same ``n`` real test clips through the same classifier:

- the generated clips: Fréchet distance in the classifier's features (``fd``), KID, precision and
  recall, conditional accuracy (classes asked in turn; the classifier's argmax), and an
  inception-style score ``exp(E KL(p(y|x) || p(y)))`` (also of the real test clips, for scale);
- references: train clips (the floor a perfect generator reaches), the test clips' own mels
  through the same inverter (``resynthesis``: what the inverter alone costs), and Griffin-Lim of
  uniform-noise mel images (the ceiling: sound that is no class at all).

A vocoder run is scored on the dataset's test clips (val without test; at most
``VOCODER_CLIPS``): :func:`aigc.models.vocoder.compare_with_griffin_lim` (MR-STFT, mel L1) and the
classifier figures of the vocoded and the Griffin-Lim'd clips (accuracy, FD to the real clips);
``beats_griffin_lim`` says on which it wins.

Cost: Griffin-Lim (64 iterations) takes 0.17 s per one-second clip on one idle CPU thread, 0.36 s
on a shared one (measured; about a third is the mel -> linear fit; a batch of 16 mels through
:func:`aigc.data.audio_features.griffin_lim` took longer per clip, not shorter). An evaluation
through Griffin-Lim inverts ``3 n`` clips (generated, resynthesis, noise): 4 to 9 minutes for the
default ``n`` of 500; through a vocoder only the ``n`` noise clips go through Griffin-Lim.

Every figure is computed with fixed seeds, so two evaluations of one run agree.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from aigc.errors import InvalidInput
from aigc.workspace import Workspace, now, write_json_atomic

MIN_CLIPS = 4  # FD, KID and 3-NN precision/recall need a few clips per set
MIN_CLASSIFIER_STEPS = 300  # small audio sets: epochs are raised until training takes this many steps
CLASSIFIER_BATCH = 128
VOCODER_CLIPS = 128  # a vocoder is scored on at most this many test clips, evenly spaced
SAMPLE_WAVS = 8  # generated clips written to eval_samples/ as WAVs
GRID_TILES = 64
JUDGE_RESYNTH_CLIPS = 512  # train clips also heard through Griffin-Lim by the judge (AudioJudge)
MEL_CHUNK = 256  # clips per STFT call in sound_to_images (memory, not results)


def sound_to_images(waves: Sequence[np.ndarray] | np.ndarray, features: dict[str, Any]) -> np.ndarray:
    """Waves -> the spectrogram images the dataset's classifier reads: uint8 (N, S, S, 1).

    Each wave is fitted to the dataset's clip length (cut, or zero-padded at the end), then its
    log-mel is drawn at the dataset's image size on the fixed dB scale
    (:func:`aigc.data.audio_features.mel_to_image`): the stored clips give back the stored images.
    ``features``: the card's (or a run spec's ``audio``) features.
    """
    from aigc.data.audio_features import log_mel, mel_to_image

    samples, sr, size = int(features["samples"]), int(features["sample_rate"]), int(features["image_size"])
    clips = np.zeros((len(waves), samples), np.float32)
    for i, wave in enumerate(waves):
        w = np.asarray(wave)
        if not np.issubdtype(w.dtype, np.floating):
            raise InvalidInput(f"sound_to_images expects float waves in [-1, 1], got {w.dtype}: "
                               "convert integer PCM with wave / 32768")
        w = np.nan_to_num(w.astype(np.float32).reshape(-1)[:samples])
        clips[i, : len(w)] = w
    images = [mel_to_image(m, size) for start in range(0, len(clips), MEL_CHUNK)
              for m in log_mel(clips[start : start + MEL_CHUNK], sr)]
    return np.stack(images)[..., None] if images else np.zeros((0, size, size, 1), np.uint8)


def evaluate_audio(ws: Workspace, name: str, *, n_samples: int = 500, seed: int = 0, steps: int | None = None,
                   guidance: float | None = None, vocoder: str | None = None,
                   references: bool = True) -> dict[str, Any]:
    """Evaluate a run of an image family trained on an audio dataset (see the module docstring);
    saved as ``eval.json`` in the run, with a few WAVs and spectrogram grids in ``eval_samples/``.

    ``vocoder``: the inverter (``None``/``auto``, ``griffin-lim`` or a vocoder run;
    :func:`aigc.audio_generation.choose_inverter`); ``steps``/``guidance``: diffusion sampling.
    ``references=False`` skips the floor, resynthesis and noise references (the same for every
    evaluation of one dataset and inverter: a sweep needs them once)."""
    import torch

    from aigc.audio_generation import GRIFFIN_LIM, Inverter, images_to_waves
    from aigc.data.images import read_image_split, to_tensor
    from aigc.image_generation import to_uint8
    from aigc.runs import load, read_spec

    if isinstance(n_samples, bool) or not isinstance(n_samples, int) or n_samples < MIN_CLIPS:
        raise InvalidInput(f"n_samples must be a whole number >= {MIN_CLIPS} (clips compared with as many test "
                           f"clips), got {n_samples!r}")
    run_dir = Path(ws.get_run(name)["path"])
    spec = read_spec(run_dir)
    features = spec.get("audio")
    if not features:
        raise InvalidInput(f"run {name!r} was not trained on an audio dataset: evaluate it with aigc eval, "
                           "which picks the right measures")
    gen = load(ws, name, safety=False, vocoder=vocoder)
    options = gen.check_options({"steps": steps, "guidance": guidance})  # refused before any work
    ds_dir = _dataset_dir(ws, spec, name)
    split, real_waves, real_labels = _clips(ds_dir, "test", name)
    n = min(n_samples, len(real_waves))
    pick = _spaced(len(real_waves), n)
    real_x = to_tensor(sound_to_images(real_waves[pick], features))
    real_y = torch.from_numpy(real_labels[pick]).long() if real_labels is not None else None
    train = read_image_split(ds_dir, "train")
    judge = AudioJudge.for_dataset(ws, spec["dataset"], train, real_x, real_y, features)

    # 1. generated mel images, every class in turn, batches of about 100 with one seed each (a whole
    # number of rounds over the classes, so each batch starting again at class 0 favours none)
    t0 = time.perf_counter()
    images, asked = [], []
    rounds = max(1, len(gen.classes))
    per = max(rounds, 100 - 100 % rounds)
    for i, start in enumerate(range(0, n, per)):
        k = min(per, n - start)
        labels = gen.label_ids(k, None)  # the classes gen.sample asks for (None: unconditional)
        images.append(to_uint8(gen.sample(k, seed=seed + i, **options)))
        if labels is not None:
            asked.append(labels.cpu())
    sampling_s = time.perf_counter() - t0
    images = np.concatenate(images)
    fake_y = torch.cat(asked) if asked else None
    # 2. -> sound through the run's inverter -> analysed again, as a listener's spectrogram would be
    t0 = time.perf_counter()
    waves = images_to_waves(images, features, gen.inverter, seed=seed)
    inversion_s = time.perf_counter() - t0
    heard = sound_to_images(waves, features)
    report = judge.report(real_x, to_tensor(heard), fake_y, real_y, seed)

    # 3. references, all n clips against the same real test clips
    refs = None
    if references:
        train_waves = _clips(ds_dir, "train", name)[1]
        train_pick = _spaced(len(train_waves), min(n, len(train_waves)))
        floor = judge.report(real_x, to_tensor(sound_to_images(train_waves[train_pick], features)), seed=seed)
        test_images = read_image_split(ds_dir, split).images[pick]  # the test clips as the run's images hold them
        resynthesis = judge.report(real_x, to_tensor(sound_to_images(
            images_to_waves(test_images, features, gen.inverter, seed=seed), features)), real_y, seed=seed)
        noise = np.random.default_rng(seed).integers(0, 256, size=test_images.shape, dtype=np.uint8)
        ceiling = judge.report(real_x, to_tensor(sound_to_images(
            images_to_waves(noise, features, Inverter(GRIFFIN_LIM, int(features["sample_rate"])), seed=seed),
            features)), seed=seed)
        refs = {"train_vs_test": floor, "resynthesis": resynthesis, "griffin_lim_of_noise": ceiling}

    result: dict[str, Any] = {
        "run": name, "modality": "audio", "split": split, "created_at": now(), "seed": seed, "n": n,
        "inverter": gen.inverter.describe(),
        "classifier": judge.describe(),
        **report,
        "real_inception_score": judge.inception(real_x),
        **({"references": refs} if refs is not None else {}),
        "sampling_seconds_per_1000": sampling_s / n * 1000,
        "inversion_seconds_per_1000": inversion_s / n * 1000,
    }
    _write_samples(ws, run_dir, images, heard, waves, fake_y, gen.classes, int(features["sample_rate"]))
    write_json_atomic(run_dir / "eval.json", result)
    headline = {k: result[k] for k in ("fd", "kid_mean", "conditional_accuracy") if k in result}
    headline["inverter"] = result["inverter"]["inverter"]
    row = ws.get_run(name)
    ws.update_run(name, summary={**row["summary"], "eval": headline})
    return result


def evaluate_vocoder(ws: Workspace, name: str, *, seed: int = 0) -> dict[str, Any]:
    """Evaluate a vocoder run against Griffin-Lim on its dataset's test clips (see the module
    docstring); saved as ``eval.json`` in the run."""
    import torch

    from aigc.audio_generation import GL_ITERATIONS, GRIFFIN_LIM, Inverter, images_to_waves
    from aigc.data.images import read_image_split, to_tensor
    from aigc.models.vocoder import compare_with_griffin_lim
    from aigc.runs import load, read_spec

    run_dir = Path(ws.get_run(name)["path"])
    spec = read_spec(run_dir)
    if spec.get("family") != "vocoder":
        raise InvalidInput(f"run {name!r} is a {spec.get('family')} run, not a vocoder: evaluate it with "
                           "aigc eval, which picks the right measures")
    features = spec["audio"]  # a vocoder run keeps its dataset's features, as runs on its images do
    ds_dir = _dataset_dir(ws, spec, name)
    split, clips, labels = _clips(ds_dir, "test", name)
    pick = _spaced(len(clips), min(VOCODER_CLIPS, len(clips)))
    clips = clips[pick]
    real_x = to_tensor(sound_to_images(clips, features))
    real_y = torch.from_numpy(labels[pick]).long() if labels is not None else None
    judge = AudioJudge.for_dataset(ws, spec["dataset"], read_image_split(ds_dir, "train"), real_x, real_y,
                                   features)

    sr = int(features["sample_rate"])
    model = load(ws, name, safety=False)
    reconstruction = compare_with_griffin_lim(model, clips.astype(np.float32), n_iter=GL_ITERATIONS)
    test_images = read_image_split(ds_dir, split).images[pick]  # the mels as a generated image holds them
    inverters = {"vocoder": Inverter(name, sr, run_dir, model=model), "griffin_lim": Inverter(GRIFFIN_LIM, sr)}
    judged = {}
    for key, inverter in inverters.items():
        heard = sound_to_images(images_to_waves(test_images, features, inverter, seed=seed), features)
        judged[key] = judge.report(real_x, to_tensor(heard), real_y, real_y, seed=seed)
    voc, gl = judged["vocoder"], judged["griffin_lim"]
    accuracy = voc.get("conditional_accuracy"), gl.get("conditional_accuracy")
    result: dict[str, Any] = {
        "run": name, "modality": "vocoder", "dataset": spec["dataset"], "split": split, "created_at": now(),
        "seed": seed, "n": len(clips), "inverter": inverters["vocoder"].describe(),
        "classifier": judge.describe(),
        "reconstruction": reconstruction,
        "vocoder": voc, "griffin_lim": gl, "griffin_lim_iterations": GL_ITERATIONS,
        "real_accuracy": gl.get("real_accuracy"), "real_inception_score": judge.inception(real_x),
        "beats_griffin_lim": {
            "mr_stft": reconstruction["vocoder_mr_stft"] < reconstruction["griffin_lim_mr_stft"],
            "fd": voc["fd"] < gl["fd"],
            "accuracy": None if accuracy[0] is None else accuracy[0] > accuracy[1],
        },
    }
    write_json_atomic(run_dir / "eval.json", result)
    row = ws.get_run(name)
    headline = {"mr_stft": reconstruction["vocoder_mr_stft"], "fd": voc["fd"],
                "griffin_lim_mr_stft": reconstruction["griffin_lim_mr_stft"], "griffin_lim_fd": gl["fd"],
                "beats_griffin_lim": result["beats_griffin_lim"]}
    ws.update_run(name, summary={**row["summary"], "eval": headline})
    return result


# -- pieces ------------------------------------------------------------------------------------------


def _dataset_dir(ws: Workspace, spec: dict[str, Any], name: str) -> Path:
    dataset = spec.get("dataset")
    if not dataset or not ws.has_dataset(dataset):
        raise InvalidInput(f"run {name!r} was trained on dataset {dataset!r}, which is not in this workspace: "
                           "ingest it again under that name to evaluate the run")
    return ws.dataset_path(dataset)


def _clips(ds_dir: Path, split: str, name: str) -> tuple[str, np.ndarray, np.ndarray | None]:
    """(split, float16 waves (N, T), int64 labels (N,) or None) of ``audio_<split>.npz``; the test
    split falls back to val when it holds fewer than MIN_CLIPS clips, and then so few is an error."""
    counts = {}
    for s in [split] + (["val"] if split == "test" else []):
        path = ds_dir / f"audio_{s}.npz"
        if not path.is_file():
            raise InvalidInput(f"{path} is missing: dataset {ds_dir.name!r} is not an audio dataset or is "
                               "damaged; ingest it again")
        with np.load(path) as z:
            waves, labels = z["waves"], (z["labels"] if "labels" in z.files else None)
        if len(waves) >= MIN_CLIPS:
            return s, waves, labels
        counts[s] = len(waves)
    held = " and ".join(f"{k} {s} clip(s)" for s, k in counts.items())
    raise InvalidInput(f"dataset {ds_dir.name!r} holds {held}: evaluating run {name!r} needs at least "
                       f"{MIN_CLIPS}; ingest it again with a larger share for them, e.g. --split 0.8,0.1,0.1")


def _spaced(total: int, k: int) -> np.ndarray:
    return np.linspace(0, total - 1, k).round().astype(np.int64)  # evenly spaced, deterministic


@dataclass
class AudioJudge:
    """The dataset's audio classifier (a :class:`aigc.metrics.image.DomainClassifier` on log-mel
    spectrograms) and what it says about sets of clips. ``kind``: ``class`` (the dataset's
    classes) or ``rotation`` (a set without classes: the pretext task evaluate_images uses)."""

    model: Any
    info: dict[str, Any]
    kind: str

    @classmethod
    def for_dataset(cls, ws: Workspace, dataset: str, train, test_x, test_y,
                    features: dict[str, Any]) -> "AudioJudge":
        """Trained on the train spectrograms and on up to JUDGE_RESYNTH_CLIPS of them heard again
        through Griffin-Lim (same labels), for at least MIN_CLASSIFIER_STEPS steps (a few hundred
        clips would get 3 steps from evaluate_images's 3 epochs), under its own cache key,
        ``<dataset>.audio-gl``; its test accuracy is measured on the clean ``test_x``.

        Why the re-heard copies: every generated clip reaches the judge through a phase
        reconstruction (Griffin-Lim, or a vocoder on Griffin-Lim phase), and a classifier that
        only ever saw clean spectrograms keys on detail that no inversion keeps: trained on clean
        mels alone, it heard 0.78 of the digits test clips right after Griffin-Lim of their own
        mels, against 0.99 clean (benchmarks/audio_train.py at af591da). A
        judge that cannot recognise the real clips once inverted caps every generator's score by
        the inverter, not by what it generates. Griffin-Lim is model-free, so no run's own
        vocoder is favoured."""
        import torch

        from aigc.audio_generation import GL_ITERATIONS, GRIFFIN_LIM, Inverter, images_to_waves
        from aigc.data.images import to_tensor
        from aigc.evaluation import ROTATION_TRAIN_IMAGES
        from aigc.metrics import image as im

        images = train.images
        if train.labels is None:
            images = images[_spaced(len(images), min(len(images), ROTATION_TRAIN_IMAGES))]
        sub = _spaced(len(images), min(len(images), JUDGE_RESYNTH_CLIPS))

        def heard() -> "torch.Tensor":  # made only when the judge is trained (Griffin-Lim is slow)
            waves = images_to_waves(images[sub], features, Inverter(GRIFFIN_LIM, int(features["sample_rate"])))
            return to_tensor(sound_to_images(waves, features))

        key, kind = f"{dataset}.audio-gl", "class"
        if train.labels is not None:
            x, y, classes = to_tensor(images), torch.from_numpy(train.labels).long(), len(train.classes)

            def extra():
                return heard(), y[torch.from_numpy(sub)]
        else:
            (x, y), (test_x, test_y) = im.rotations(to_tensor(images)), im.rotations(test_x)
            key, kind, classes = key + ".rotation", "rotation", 4

            def extra():
                return im.rotations(heard())
        n_train = len(x) + len(sub) * (1 if kind == "class" else 4)  # with the re-heard copies
        epochs = max(3, -(-MIN_CLASSIFIER_STEPS // max(1, n_train // CLASSIFIER_BATCH)))
        model, info = im.load_or_train_classifier(ws.root / "classifiers", key, x, y, test_x, test_y, seed=0,
                                                  num_classes=classes, epochs=epochs,
                                                  batch_size=CLASSIFIER_BATCH, extra=extra,
                                                  extra_recipe=f"griffin-lim {GL_ITERATIONS} of {len(sub)} "
                                                               f"spaced train clips")
        return cls(model, info, kind)

    def describe(self) -> dict[str, Any]:
        return {"features": self.kind, "input": "log-mel spectrograms of the sound, analysed again",
                "test_accuracy": self.info.get("accuracy"), "trained_now": self.info.get("trained"),
                "key": Path(self.info["path"]).name}

    def report(self, real_x, fake_x, fake_y=None, real_y=None, seed: int = 0) -> dict[str, Any]:
        """:func:`aigc.metrics.image.image_report` of ``fake_x`` against ``real_x``, FID named ``fd``
        (a Fréchet distance in an audio classifier's features), plus the inception-style score."""
        from aigc.metrics import image as im

        report = im.image_report(self.model, real_x, fake_x, fake_y, real_y, seed=seed)
        return {"fd": report.pop("fid"), **report, "inception_score": self.inception(fake_x)}

    def inception(self, images) -> float | None:
        """exp(E KL(p(y|x) || p(y))) of ``images`` (None for a rotation classifier: no classes)."""
        import torch

        from aigc.metrics.audio import inception_score
        from aigc.metrics.image import EMBED_BATCH

        if self.kind != "class":
            return None
        self.model.eval()
        with torch.no_grad():
            probs = torch.cat([self.model(images[i : i + EMBED_BATCH]).softmax(1)
                               for i in range(0, len(images), EMBED_BATCH)])
        return inception_score(probs.double())


def _write_samples(ws: Workspace, run_dir: Path, images: np.ndarray, heard: np.ndarray, waves: list[np.ndarray],
                   asked, classes: list[str], sample_rate: int) -> None:
    """``eval_samples/``: the first SAMPLE_WAVS clips as labelled WAVs, ``samples.json`` (file, class
    asked), ``generated.png`` (the generated spectrograms) and ``heard.png`` (the same clips
    analysed again from their sound), both labelled and marked as the policy says; built in the
    workspace's tmp/ and renamed into place."""
    from aigc.data.images import write_grid
    from aigc.provenance.audio import save_wav
    from aigc.provenance.labels import new_produce_id
    from aigc.safety.guard import guard_for

    guard = guard_for(ws)
    label, mark = guard.label(new_produce_id()), bool(guard.policy.labels.get("image_mark"))
    listed = []
    with ws.staging("eval-samples") as staged:
        for i, wave in enumerate(waves[:SAMPLE_WAVS]):
            file = f"sample-{i:03d}.wav"
            save_wav(staged / file, wave, sample_rate, {**label, "ProduceID": f"{label['ProduceID']}-{i:03d}"})
            listed.append({"file": file, "label": classes[int(asked[i])] if asked is not None else None})
        for grid, tiles in (("generated", images), ("heard", heard)):  # both drawn from generated sound
            write_grid(staged / f"{grid}.png", list(tiles[:GRID_TILES]),
                       label={**label, "ProduceID": f"{label['ProduceID']}-{grid}"}, mark=mark)
        write_json_atomic(staged / "samples.json", listed)
        ws.publish(staged, run_dir / "eval_samples", replace=True)
