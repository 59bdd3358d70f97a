"""Make a labelled set of spoken digits with espeak-ng, offline and deterministic.

    python scripts/make_spoken_digits.py OUT_DIR [--per-digit 300] [--seed 0] [--jobs 2]
    aigc ingest OUT_DIR --name digits --seconds 1.0

Each digit 0-9 is spoken in English (British and American), German, French, Spanish and Mandarin
(the ``cmn-latn-pinyin`` voice reading "ling2", "yi1"...: Debian's espeak-ng reads Mandarin
correctly only in pinyin), by one of espeak-ng's voice variants (male, female, Klatt), at a
speed (``-s``, words per minute) and a pitch (``-p``, 0-99) drawn from ``--seed``. No two clips of
a digit share language, variant, speed and pitch, so none is a copy of another.

Writes ``OUT_DIR/<digit>/<id>.wav`` with the label folders ``zero`` .. ``nine`` (espeak-ng's
22,050 Hz mono 16-bit WAV: ingestion resamples, trims and pads them to one second) and
``OUT_DIR/manifest.csv`` (path, label, language, voice, speed, pitch), which ``aigc ingest`` also
takes. Each file is written under a temporary name and renamed. The default 300 per digit makes
3,000 clips; measured: 20 s with 2 jobs on 2 cores.
"""

from __future__ import annotations

import argparse
import csv
import os
import random
import shutil
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

LABELS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")
WORDS = {  # espeak-ng language -> the digits 0..9 as it should read them
    "en-gb": LABELS,
    "en-us": LABELS,
    "de": ("null", "eins", "zwei", "drei", "vier", "fünf", "sechs", "sieben", "acht", "neun"),
    "fr-fr": ("zéro", "un", "deux", "trois", "quatre", "cinq", "six", "sept", "huit", "neuf"),
    "es": ("cero", "uno", "dos", "tres", "cuatro", "cinco", "seis", "siete", "ocho", "nueve"),
    "cmn-latn-pinyin": ("ling2", "yi1", "er4", "san1", "si4", "wu3", "liu4", "qi1", "ba1", "jiu3"),
}
# The voice to ask for: with "en-gb" and "fr-fr" Debian's espeak-ng 1.51 ignores a "+variant"
# (measured: en-gb+f3 and en-gb+m6 write the same bytes), with their aliases "en" and "fr" it does not.
VOICES = {"en-gb": "en", "fr-fr": "fr"}
VARIANTS = ("", "m1", "m2", "m3", "m4", "m5", "m6", "m7", "f1", "f2", "f3", "f4", "f5", "klatt", "klatt2",
            "klatt3")  # "" is the language's default voice
SPEEDS = range(110, 231, 10)  # words per minute (espeak-ng's default is 175)
PITCHES = range(20, 81, 5)  # 0-99 (default 50)
DEFAULT_PER_DIGIT = 300


def _espeak() -> str:
    exe = shutil.which("espeak-ng")
    if exe is None:
        sys.exit("error: espeak-ng is not installed: install the Debian package (apt-get install espeak-ng, "
                 "or `make audio-deps` as root), then run this again")
    return exe


def _installed_languages(exe: str) -> list[str]:
    """The languages of WORDS that this espeak-ng has a voice for, in WORDS' order."""
    listing = subprocess.run([exe, "--voices"], capture_output=True, text=True, check=True).stdout
    have = {line.split()[1] for line in listing.splitlines()[1:] if len(line.split()) > 1}
    return [lang for lang in WORDS if lang in have]


def plan(per_digit: int, seed: int, languages: list[str]) -> list[dict]:
    """Every clip to make, in a fixed order: digit, language, variant, speed, pitch and file name."""
    rng = random.Random(seed)
    combos = len(languages) * len(VARIANTS) * len(SPEEDS) * len(PITCHES)
    if per_digit > combos:
        raise SystemExit(f"error: --per-digit {per_digit} is more than the {combos} distinct voicings: pass "
                         f"at most {combos}")
    clips = []
    for d, label in enumerate(LABELS):
        seen: set[tuple] = set()
        while len(seen) < per_digit:
            voicing = (languages[len(seen) % len(languages)],  # languages in turn: balanced per digit
                       rng.choice(VARIANTS), rng.choice(SPEEDS), rng.choice(PITCHES))
            if voicing in seen:
                continue
            seen.add(voicing)
            lang, variant, speed, pitch = voicing
            name = f"{len(seen) - 1:04d}-{lang}-{variant or 'default'}-s{speed}-p{pitch}.wav"
            clips.append({"path": f"{label}/{name}", "label": label, "language": lang,
                          "voice": VOICES.get(lang, lang) + (f"+{variant}" if variant else ""),
                          "speed": speed, "pitch": pitch, "word": WORDS[lang][d]})
    return clips


def _speak(exe: str, out: Path, clip: dict) -> None:
    dest = out / clip["path"]
    tmp = dest.with_name(f".{dest.name}.tmp")
    done = subprocess.run([exe, "-v", clip["voice"], "-s", str(clip["speed"]), "-p", str(clip["pitch"]),
                           "-w", str(tmp), clip["word"]], capture_output=True, text=True)
    if done.returncode != 0 or not tmp.is_file():
        tmp.unlink(missing_ok=True)
        detail = (done.stderr or done.stdout).strip().splitlines()
        sys.exit(f"error: espeak-ng -v {clip['voice']} failed on {clip['word']!r} (exit {done.returncode}: "
                 f"{detail[0] if detail else 'no message'}): check the espeak-ng installation")
    os.replace(tmp, dest)


def make(out: Path, per_digit: int = DEFAULT_PER_DIGIT, seed: int = 0, jobs: int = 2) -> list[dict]:
    """Speak the planned clips into ``out``; returns the plan (what manifest.csv lists)."""
    exe = _espeak()
    languages = _installed_languages(exe)
    if not languages:
        sys.exit(f"error: this espeak-ng has none of the voices {', '.join(WORDS)}: reinstall espeak-ng-data")
    missing = [lang for lang in WORDS if lang not in languages]
    if missing:
        print(f"note: espeak-ng has no voice for {', '.join(missing)}: those languages are left out",
              file=sys.stderr)
    clips = plan(per_digit, seed, languages)
    for label in LABELS:
        (out / label).mkdir(parents=True, exist_ok=True)
    with ThreadPoolExecutor(max_workers=max(1, jobs)) as pool:  # espeak-ng runs as a child process
        list(pool.map(lambda c: _speak(exe, out, c), clips))
    tmp = out / ".manifest.csv.tmp"
    with tmp.open("w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=["path", "label", "language", "voice", "speed", "pitch"],
                                extrasaction="ignore")
        writer.writeheader()
        writer.writerows(clips)
    os.replace(tmp, out / "manifest.csv")
    return clips


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("out_dir", type=Path, help="where to write <digit>/<id>.wav and manifest.csv")
    ap.add_argument("--per-digit", type=int, default=DEFAULT_PER_DIGIT, help="clips per digit (default 300)")
    ap.add_argument("--seed", type=int, default=0, help="draws the voicings (default 0)")
    ap.add_argument("--jobs", type=int, default=2, help="espeak-ng processes at once (default 2)")
    args = ap.parse_args(argv)
    if args.per_digit < 1:
        ap.error(f"--per-digit must be at least 1, got {args.per_digit}")
    clips = make(args.out_dir, args.per_digit, args.seed, args.jobs)
    print(f"{len(clips)} clips in {args.out_dir} ({args.per_digit} per digit; manifest.csv lists them)")


if __name__ == "__main__":
    main()
