"""Audio families on 2 CPU cores, one invocation: spoken digits (mel images + a vocoder) and Bach chorales.

    python benchmarks/audio_train.py --budget 600 --threads 2        # -> results/audio_train.json
                                                                     #    + results/audio_train/ (WAV, MIDI, PNG)
    python benchmarks/audio_train.py --budget 600 --threads 2 --families diffusion --music '' \
        --name audio_train_diffusion                                 # the vocoder and diffusion alone

Spoken digits: ``scripts/make_spoken_digits.py`` writes ``--per-digit`` clips of each digit with
espeak-ng (deterministic; cached in ``benchmarks/.cache/digits-<n>``), ingested at 16 kHz, one
second. Then, each for ``--budget`` seconds under the one training loop:

1. the ``vocoder`` family (``small``, its default ``postnet`` generator: learned magnitudes, Griffin-Lim
   phase), evaluated by
   :func:`aigc.audio_evaluation.evaluate_vocoder` on the test clips beside Griffin-Lim (64
   iterations): multi-resolution STFT distance, mel L1, and the domain classifier's accuracy and
   Fréchet distance on each inverter's re-synthesised test clips;
2. each mel family of ``--families`` (``small``, class-conditional), evaluated by
   :func:`aigc.audio_evaluation.evaluate_audio` with the vocoder of step 1 (``--n`` samples): what
   the classifier hears in the generated sound (conditional accuracy, FD, KID, precision/recall,
   inception score) against the real-data floor (train clips against test clips) and the ceiling of
   Griffin-Lim of noise. Issue 17's target: conditional accuracy >= 0.80. The diffusion run is also
   evaluated at the classifier-free guidance scales of ``--guidance-sweep`` (the trade of
   conditional accuracy against diversity, as in Ho & Salimans 2022); its headline figures are
   those of the default scale.

Bach chorales (``music21:bach``, exported to MIDI once and cached under ``benchmarks/.cache``): a
``gpt small`` conditioned on key for ``--budget`` seconds, evaluated by
:func:`aigc.music_evaluation.evaluate_music`: test NLL per REMI token against the unigram and
bigram baselines on the same split (target: below the bigram), and the pitch-class and polyphony
histograms of samples against the test pieces; a sample is written as MIDI, WAV (fluidsynth) and a
piano roll for a person to hear.

Every run is fresh (a temporary workspace); figures, examples and pictures land in
``benchmarks/results/``.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import RESULTS, write_result  # noqa: E402

HERE = Path(__file__).resolve().parent
CACHE = HERE / ".cache"


def _digits(per_digit: int, clips: Path | None) -> Path:
    if clips is not None:
        return clips
    out = CACHE / f"digits-{per_digit}"
    if not (out / "manifest.csv").exists():
        subprocess.run([sys.executable, str(HERE.parent / "scripts" / "make_spoken_digits.py"), str(out),
                        "--per-digit", str(per_digit)], check=True)
    return out


def _train(ws, dataset: str, family: str, preset: str, budget: float, **model) -> tuple[dict, float]:
    import aigc

    t = time.perf_counter()
    row = aigc.train(dataset, family=family, preset=preset, name=f"{dataset}-{family}", workspace=ws,
                     model=model or None, time_budget=budget, max_steps=0)
    return row, round(time.perf_counter() - t, 1)


def _copy(files: list[Path], dest: Path, prefix: str) -> list[str]:
    dest.mkdir(parents=True, exist_ok=True)
    kept = []
    for f in files:
        target = dest / f"{prefix}-{f.name}"
        shutil.copyfile(f, target)
        kept.append(target.relative_to(RESULTS).as_posix())
    return kept


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--budget", type=float, default=600.0, help="training seconds per family")
    ap.add_argument("--families", default="gan,diffusion", help="mel families (comma-separated)")
    ap.add_argument("--per-digit", type=int, default=300, help="spoken clips per digit")
    ap.add_argument("--clips", type=Path, default=None, help="a folder of clips instead of making digits")
    ap.add_argument("--n", type=int, default=500, help="generated clips per evaluation")
    ap.add_argument("--music", default="music21:bach", help="symbolic music source ('' skips it)")
    ap.add_argument("--skip-digits", action="store_true")
    ap.add_argument("--guidance-sweep", default="1,3,4",
                    help="diffusion: also evaluated at these guidance scales (comma-separated; '' skips)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--name", default="audio_train")
    args = ap.parse_args()

    import torch

    import aigc
    from aigc.audio_evaluation import evaluate_audio, evaluate_vocoder
    from aigc.runtime import configure_threads

    configure_threads(args.threads)
    out: dict = {"budget_s": args.budget, "threads": args.threads, "torch": torch.__version__, "n": args.n,
                 "families": {}, "examples": {}}
    examples = RESULTS / args.name  # WAVs, MIDI and pictures beside the JSON of the same name
    shutil.rmtree(examples, ignore_errors=True)
    with tempfile.TemporaryDirectory() as tmp:
        ws = aigc.open_workspace(Path(tmp) / "ws")
        if not args.skip_digits:
            clips = _digits(args.per_digit, args.clips)
            t = time.perf_counter()
            card = aigc.ingest(clips, "digits", workspace=ws, seconds=1.0)
            out["digits"] = {"source": clips.name if args.clips is None else clips.name,
                             "counts": card["counts"], "classes": card["classes"],
                             "ingest_s": round(time.perf_counter() - t, 1)}
            row, secs = _train(ws, "digits", "vocoder", "small", args.budget)
            t = time.perf_counter()
            r = evaluate_vocoder(ws, row["name"])
            out["vocoder"] = {"family": "vocoder", "generator": "postnet", "steps": row["step"], "train_s": secs,
                              "eval_s": round(time.perf_counter() - t, 1), **r}
            print("vocoder", {k: r[k] for k in ("reconstruction", "beats_griffin_lim")}, flush=True)
            for fam in [f for f in args.families.split(",") if f]:
                row, secs = _train(ws, "digits", fam, "small", args.budget)
                sweep = {}
                if fam == "diffusion":  # classifier-free guidance traded against diversity, the default last
                    for g in [float(x) for x in args.guidance_sweep.split(",") if x]:
                        r = evaluate_audio(ws, row["name"], n_samples=args.n, vocoder="digits-vocoder", guidance=g,
                                           references=False)  # the default's evaluation below has them
                        sweep[g] = {k: r.get(k) for k in ("conditional_accuracy", "fd", "kid_mean", "inception_score",
                                                          "precision", "recall")}
                        print(f"diffusion guidance {g}", sweep[g], flush=True)
                t = time.perf_counter()
                r = evaluate_audio(ws, row["name"], n_samples=args.n, vocoder="digits-vocoder")
                out["families"][fam] = {"steps": row["step"], "train_s": secs,
                                        "eval_s": round(time.perf_counter() - t, 1), **r}
                if sweep:
                    out["families"][fam]["guidance_sweep"] = sweep
                samples = Path(row["path"]) / "eval_samples"
                out["examples"][fam] = _copy(sorted(samples.glob("*.wav"))[:4] + sorted(samples.glob("*.png")),
                                             examples, fam)
                print(fam, {k: r.get(k) for k in ("conditional_accuracy", "fd", "kid_mean", "inception_score")},
                      flush=True)
        if args.music:
            out["music"] = _music(ws, args, Path(tmp), examples)
    _table(out)
    out["target"] = {"digits_conditional_accuracy": ">= 0.80", "vocoder": "below Griffin-Lim's MR-STFT distance",
                     "chorales": "test NLL per REMI token below the bigram baseline"}
    print(f"wrote {write_result(args.name, out)}")


def _music(ws, args, tmp: Path, examples: Path) -> dict:
    import aigc
    from aigc.music_evaluation import evaluate_music
    from aigc.music_generation import generate_music, write_music

    # the corpus's MIDI export is slow (minutes): kept between invocations
    cache = CACHE / "music21"
    cache.mkdir(parents=True, exist_ok=True)
    (ws.root / "cache").mkdir(exist_ok=True)
    os.symlink(cache, ws.root / "cache" / "music21")
    t = time.perf_counter()
    card = aigc.ingest(args.music, "chorales", workspace=ws)
    info = {"source": args.music, "pieces": card["pieces"]["kept"], "tokens": card["tokens"]["total"],
            "ingest_s": round(time.perf_counter() - t, 1)}
    row, secs = _train(ws, "chorales", "gpt", "small", args.budget)
    t = time.perf_counter()
    r = evaluate_music(ws, row["name"], n_samples=32)
    gen = aigc.load(row["name"], workspace=ws)
    decoded = generate_music(gen, Path(row["path"]), n=2, seed=0)
    written = write_music(decoded, tmp / "music", prefix="chorale")
    files = [Path(s[k]) for s in written["samples"] for k in ("midi", "wav", "roll") if s.get(k)]
    info.update(steps=row["step"], train_s=secs, eval_s=round(time.perf_counter() - t, 1), **r,
                examples=_copy(files, examples, "gpt"), wav_skipped=written.get("wav_skipped"))
    print("chorales", r["likelihood"], flush=True)
    return info


def _fmt(x, nd=3) -> str:
    return "-" if x is None else f"{x:.{nd}f}"


def _table(out: dict) -> None:
    if "vocoder" in out:
        v = out["vocoder"]
        rec, voc, gl = v["reconstruction"], v.get("vocoder", {}), v.get("griffin_lim", {})
        print(f"\n{'inverter (test clips)':<26}{'MR-STFT':>9}{'mel L1 dB':>11}{'cls acc':>9}{'FD':>9}")
        print(f"{'postnet (' + str(v['steps']) + ' steps)':<26}{_fmt(rec['vocoder_mr_stft']):>9}"
              f"{_fmt(rec['vocoder_mel_l1_db'], 2):>11}{_fmt(voc.get('conditional_accuracy')):>9}{_fmt(voc.get('fd'), 2):>9}")
        print(f"{'griffin-lim (64 it.)':<26}{_fmt(rec['griffin_lim_mr_stft']):>9}"
              f"{_fmt(rec['griffin_lim_mel_l1_db'], 2):>11}{_fmt(gl.get('conditional_accuracy')):>9}{_fmt(gl.get('fd'), 2):>9}")
    if out["families"]:
        print(f"\n{'family (digits)':<16}{'steps':>7}{'cond acc':>10}{'FD':>9}{'KID':>10}{'IS':>7}{'recall':>8}")
        for fam, r in out["families"].items():
            print(f"{fam:<16}{r['steps']:>7}{_fmt(r.get('conditional_accuracy')):>10}{_fmt(r.get('fd'), 2):>9}"
                  f"{_fmt(r.get('kid_mean'), 2):>10}{_fmt(r.get('inception_score'), 2):>7}{_fmt(r.get('recall')):>8}")
        for fam, r in out["families"].items():
            for g, x in r.get("guidance_sweep", {}).items():
                print(f"{fam + ' w=' + str(g):<16}{'':>7}{_fmt(x.get('conditional_accuracy')):>10}{_fmt(x.get('fd'), 2):>9}"
                      f"{_fmt(x.get('kid_mean'), 2):>10}{_fmt(x.get('inception_score'), 2):>7}{_fmt(x.get('recall')):>8}")
        refs = next(iter(out["families"].values()))["references"]  # the same real clips for every family
        for ref in ("train_vs_test", "resynthesis", "griffin_lim_of_noise"):
            r = refs[ref]
            print(f"{'  ' + ref:<23}{_fmt(r.get('conditional_accuracy')):>10}{_fmt(r.get('fd'), 2):>9}"
                  f"{_fmt(r.get('kid_mean'), 2):>10}{_fmt(r.get('inception_score'), 2):>7}{_fmt(r.get('recall')):>8}")
    if "music" in out:
        m = out["music"]
        lk = m["likelihood"]
        print(f"\nchorales gpt ({m['steps']} steps): test NLL {_fmt(lk['nll_per_token'])} nats per REMI token; "
              f"unigram {_fmt(lk['unigram_nll'])}, bigram {_fmt(lk['bigram_nll'])}; beats bigram: {lk['beats_bigram']}")


if __name__ == "__main__":
    main()
