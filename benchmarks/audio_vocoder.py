"""The neural vocoder against Griffin-Lim on an ingested audio dataset, one invocation.

    python scripts/make_spoken_digits.py /tmp/digits
    python benchmarks/audio_vocoder.py --clips /tmp/digits --budget 600      # -> results/audio_vocoder.json

Each generator (``postnet``, ``vocos``, ``hifigan``) of :mod:`aigc.models.vocoder` trains for ``--budget``
seconds under the one training loop on the dataset's train clips; then each inverts the test clips'
mel spectrograms beside Griffin-Lim (64 iterations) and the multi-resolution STFT distance and the
mel L1 (dB) to the original clips are reported (lower is better). Issue 17's target: the neural
vocoder beats Griffin-Lim on STFT distance (10 minutes per family on 2 cores).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import write_result  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--clips", type=Path, required=True, help="a folder of clips, one subfolder per class")
    ap.add_argument("--budget", type=float, default=600.0, help="training seconds per generator")
    ap.add_argument("--generators", default="postnet,vocos,hifigan")
    ap.add_argument("--test-clips", type=int, default=64)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--name", default="audio_vocoder")
    args = ap.parse_args()

    import torch

    import aigc
    from aigc.models.vocoder import Vocoder, VocoderTask, compare_with_griffin_lim
    from aigc.runtime import configure_threads
    from aigc.training import TrainConfig, fit

    configure_threads(args.threads)
    out: dict = {"generators": {}}
    with tempfile.TemporaryDirectory() as tmp:
        ws = aigc.open_workspace(Path(tmp) / "ws")
        t = time.perf_counter()
        card = aigc.ingest(args.clips, "clips", workspace=ws, seconds=1.0)
        out["data"] = {"source": args.clips.name, "counts": card.get("counts"),
                       "ingest_s": round(time.perf_counter() - t, 1)}
        ds_dir = Path(ws.get_dataset("clips")["path"])
        test = np.load(ds_dir / "audio_test.npz")["waves"].astype(np.float32)[: args.test_clips]
        for gen in args.generators.split(","):
            model = Vocoder.from_preset("small", generator=gen)
            defaults = dict(Vocoder.TRAIN_DEFAULTS["small"])
            defaults.update(time_budget=args.budget, max_steps=0)
            cfg = TrainConfig(**{k: v for k, v in defaults.items() if k in TrainConfig.__dataclass_fields__})
            task = VocoderTask.from_dataset(ds_dir, model.config, cfg.batch_size)
            t = time.perf_counter()
            state = fit(model, task, cfg, Path(tmp) / f"run-{gen}")
            model.eval()
            r = compare_with_griffin_lim(model, test)
            out["generators"][gen] = {"steps": state.step, "train_s": round(time.perf_counter() - t, 1),
                                      "params": sum(p.numel() for p in model.parameters()), **r}
            print(gen, out["generators"][gen], flush=True)
    print(f"\n{'inverter':<22}{'MR-STFT':>10}{'mel L1 dB':>11}")
    for gen, r in out["generators"].items():
        print(f"{gen + ' (' + str(r['steps']) + ' steps)':<22}{r['vocoder_mr_stft']:>10.3f}"
              f"{r['vocoder_mel_l1_db']:>11.2f}")
    first = next(iter(out["generators"].values()))
    print(f"{'griffin-lim (64 it.)':<22}{first['griffin_lim_mr_stft']:>10.3f}{first['griffin_lim_mel_l1_db']:>11.2f}")
    out.update(budget_s=args.budget, threads=args.threads, torch=torch.__version__,
               target="the neural vocoder's MR-STFT distance below Griffin-Lim's",
               met={g: r["vocoder_mr_stft"] < r["griffin_lim_mr_stft"] for g, r in out["generators"].items()})
    print(f"wrote {write_result(args.name, out)}")


if __name__ == "__main__":
    main()
