"""Policy: does the default safety policy block what it should and let the rest through?

Cases: benchmarks/data/policy_cases.jsonl, written by hand before the term lists were tuned. Per
category (sexual, sexual_minors, hate, harassment, violence, self_harm, illicit, fraud, gambling,
extremism, privacy, advertising) and language (zh, en): 8 texts that should be stopped, each with
the phrase that makes it so (``key``), and 12 that should pass: near misses (``skill``, 跑分成绩,
第一次), warnings and anti-fraud notices quoting the term, news, medical and help texts. Each
should-block text also appears obfuscated (``variant``; made by :func:`obfuscate`, rewritten with
``--write-variants``): zh spaces / symbols / zero-width characters between the key's characters
or the whole text in traditional characters; en spaced letters, full-width letters, mixed case,
homoglyph digits (k1ll), zero-width characters. So 32 should-block and 24 should-pass a category
(dev).

Splits. ``dev``: the cases above, written first; the term lists and context rules were tuned on
them. ``heldout``: 3 should-block and 3 should-pass per category and language (plus the block
cases' variants), written after that tuning; its misses were then read and grouped into classes of
failure that the matcher and the lists were changed to handle in general (inflections, ``~`` gaps,
particles, families of terms, context rules), so it is no longer untouched. ``heldout2``: 10
should-block and 10 should-pass per category and language (480, plus 240 variants), written as
realistic abuse and business text before those changes were made and never tuned on; its block
cases of ``kind`` ``slang`` are written the way people dodge filters by hand (yp, cnm, p0rn, 菠菜 for
博彩). ``train`` (benchmarks/data/policy_train/, three files per category, ``<category>.jsonl``,
``<category>_2.jsonl`` and ``<category>_3.jsonl``): 40 should-block and 40 should-pass per category and
language in each, plus
the block cases' variants, written later by writers shown only the category definitions, never a
held-out case or the term lists; the classifier is fitted on it and dev, and the context rules added
with it were tuned on it (scripts/train_moderation_classifier.py), so its figures here are in-sample. ``heldout3``
(benchmarks/data/policy_heldout3.jsonl): 10 should-block and 10 should-pass per category and
language, plus variants, written blind at the same time by a fifth writer, as a tough but fair
real-world mix, and never tuned on. ``heldout4`` (benchmarks/data/policy_heldout4.jsonl): the same
shape, written blind by a sixth writer while a second round of the train split (``*_2.jsonl``: longer
texts, indirect wording, the hardest confusions) was written, after the first classifier on the train
split had been scored on heldout2 and heldout3 once; the choice between that classifier and the one
that replaced it was made on cross-validation of the training rows, not on any held-out split.
``heldout5`` (benchmarks/data/policy_heldout5.jsonl): the same shape again, written blind by two more
writers from the same brief as a third train round (``*_3.jsonl``: realistic settings, prompts sent to
an AI writing assistant among them), which was added after heldout2 to heldout4 had been scored by four
classifiers. Nothing was chosen on heldout5; it was first scored with the classifier fitted on the three
rounds, and its terms-alone false blocks (0.062) were what set the context rules to be tuned again, on
the train split's third round. ``heldout6`` (benchmarks/data/policy_heldout6.jsonl): the same shape,
written blind from the same brief by two more writers before the fine-tuned classifier
(``aigc.safety.tuned``) was first scored; nothing was chosen on it (one of its texts is also in heldout3).
``heldout7`` (benchmarks/data/policy_heldout7.jsonl): the same shape, written blind by two more writers (one a
language) from a brief with the category definitions alone, before the combined classifier
(:mod:`aigc.safety.combined`) existed and before anything was scored on it; no text is in another file.
One number was then chosen on heldout2 to heldout6, used as validation: the combined classifier's CV
false-block budget (0.045 of 0.025 / 0.035 / 0.045, the most blocks with every split's false blocks within
0.05; scripts/train_moderation_classifier.py ``COMBINED_MAX_FALSE``). heldout7 is the test of that choice. ``heldout8`` (benchmarks/data/policy_heldout8.jsonl): the same shape and
brief (benchmarks/data/policy_heldout_brief.md), two more writers, written after heldout7 had been read; sealed
until a classifier had been chosen without it: in session 27 the candidates trained with the retired splits
(heldout to heldout5) lost to the shipped ones on heldout6 and heldout7 (benchmarks/results/policy_retired.json), the
shipped ones stayed, and only then was heldout8 read; the default run has read it since. ``heldout9``
(benchmarks/data/policy_heldout9.jsonl): the same shape and brief, two more writers, written after heldout8 had been
read; sealed until the next classifier had been chosen without it: in session 28 the shipped fine-tune re-stored as
int8 rows matched the float16 one on heldout6-8 and shipped, a GPU retrain of its recipe lost there
(benchmarks/results/policy_int8_validation.json), and only then was heldout9 read, both beside each other
(policy_heldout9.json); the default run has read it since. ``heldout10`` (benchmarks/data/policy_heldout10.jsonl): the same shape and brief, two
more writers (session 28), before heldout9 was read; sealed until, in session 29, the 4-bit fine-tune had lost on
heldout6-9 (policy_s29_validation.json) and the combined classifier's point (the e5 head's weight 0.25, its
false-block budget 0.055) had been chosen there among twelve (policy_s29_grid.json); then read once, by the old
point and the new (policy_heldout10.json); the default run has read it since. ``heldout11``
(benchmarks/data/policy_heldout11.jsonl): the same shape and brief, two more writers (session 29), written after
heldout9 and before heldout10 was read; sealed until the next choice: in session 30 the combined classifier's point
was chosen again on heldout6-10 as validation, with every everyday source flagged at most 1 % (``--benign``) added to
the rule (policy_s30_grid.json: weight 0.5, budget 0.045, the point before session 29's); then read once, by the
chosen point and the one it replaced (policy_heldout11.json); the default run has read it since. ``heldout12`` (benchmarks/data/policy_heldout12.jsonl): the same shape and brief, two
more writers (session 30), written before heldout11 was read; sealed until a change to the default term lists
(scam archetypes) had been made on heldout6-11 (policy_s30_terms_validation.json), then read once, with the old terms
and the new (policy_heldout12.json, policy_heldout12_oldterms.json); the default run has read it since. ``heldout13``
(benchmarks/data/policy_heldout13.jsonl): the same shape and brief, two more writers (session 30), written before
heldout12 was read (one text, a set insult, is also in heldout7: two writers wrote it); sealed until the term rules
had been widened on heldout6-12 (policy_s30_terms2_validation.json), then read once with the terms before and after
(policy_heldout13.json, policy_heldout13_oldterms.json); the default run has read it since.
``heldout14`` (benchmarks/data/policy_heldout14.jsonl): the same shape and brief, two more writers (session 30),
written before heldout13 was read; read once in session 36 for R11's choice (policy_s36_heldout14.json), spent.
``heldout15`` (benchmarks/data/policy_heldout15.jsonl): the same shape and brief, two more writers (session 33),
written before heldout14 was read; read once in session 38 for R12's choice (policy_s38_heldout15.json), spent.
``heldout16`` (benchmarks/data/policy_heldout16.jsonl): the same shape and brief, two more writers (session 37),
written before heldout15 was read; read once in session 39 with heldout17 for R13's choice (policy_s39_test.json),
spent. The train split's fourth round (session 37) dropped its few rows that repeat or nearly repeat a
held-out text (char 5-gram Jaccard >= 0.6; one of them a heldout15 text), so none is trained on.
``heldout17`` and ``heldout18`` (benchmarks/data/policy_heldout17.jsonl, policy_heldout18.jsonl): the same shape and
brief, four more writers (session 39, one for each split and language), written before heldout16 was read and before any
figure of that session's candidates; the cases that repeat or nearly repeat a text of another case file (char 5-gram
Jaccard >= 0.6) were dropped unread (21 of heldout17's 480, 15 of heldout18's; so 459 and 465 base cases, 232 and
233 variants). heldout17 was read once with heldout16 for R13's choice (session 39; the files retrained on train
rounds 1-4 shipped), spent. heldout18 was read once in session 40 for R14's choice (term rules written from heldout6-17's
misses; policy_s40_r14_test.json beside policy_s40_r14_test_control.json), spent.
``heldout19`` and ``heldout20`` (benchmarks/data/policy_heldout19.jsonl, policy_heldout20.jsonl): the same shape and
brief, four more writers (session 40, one for each split and language; the task line asked them to spread the texts
over the brief's whole length range), written before heldout18 was read and before any figure of R14; near-duplicates of another case file dropped
unread as above (8 of heldout19's 480, 12 of heldout20's; so 472 and 468 base cases, 234 variants each). heldout19
was read once for R15's choice and heldout20 once for R16's (more term rules; policy_s40_r15_test.json,
policy_s40_r16_test.json, each beside its _control file), both spent.
``heldout21`` and ``heldout22`` (benchmarks/data/policy_heldout21.jsonl, policy_heldout22.jsonl): the same shape, brief
and task line as heldout19 and heldout20, four more writers (session 40), written after heldout19 had been read and
before heldout20 was; near-duplicates dropped unread (7 of each split's 480; so 473 base cases, 237 and 238
variants). Both sealed.
``heldout23`` and ``heldout24`` (benchmarks/data/policy_heldout23.jsonl, policy_heldout24.jsonl): the same shape, brief
and task line, four more writers (session 41), written before any figure of that session's classifier candidate and
after its round-5 train rows; near-duplicates of another case file dropped unread (11 of heldout23's 480, 10 of
heldout24's; so 469 and 470 base cases, 236 and 234 variants). Both sealed.
The targets are judged on the held-out splits, never on dev or train: a figure on the tuning set proves
little.

"Stopped" is the policy's verdict: a category is on (for advertising, whose action is flag, that
means flagged for review; for the others it blocks). Targets: block rate >= 0.95 and false-block
rate <= 0.05, overall and per category. Each split is reported three ways: ``terms`` (the policy's
term lists and context rules alone), ``classifier`` (the semantic classifier alone: a category
whose score reaches its threshold) and ``both`` (the policy with that classifier turned on:
``moderation.classifier``; its confirm points may take a category the terms put on off again, see the
training script), for each classifier of ``--classifier``, all in one run. By default the three that ship
(``CLASSIFIERS``): ``moderation_e5_combined.npz`` (the headline: the other two's logits added,
scripts/train_moderation_classifier.py --model combined), ``moderation_e5_tuned.npz`` (e5 fine-tuned on the
dev and train cases and everyday negatives, --model tuned) and ``moderation_e5.npz`` (a head on e5's fixed
vector and latent terms). Latency per check:
``Policy.match_terms`` + the decision (what the rails run on each segment), ``moderate()`` with the
PII scan (these two once a run), and per classifier one call (on 200 cases) and the check with it (terms +
classifier + the decision, what the input rail runs when it is on), p50 / p95; and the output
rail's cost per ``feed`` of a 2-character piece, segment checks included and without them.

``--benign``: the false-flag check on everyday text that breaks no rule and that no fit saw: a
seeded sample of ``--benign-n`` (4,000) texts of the held-out half of each corpus the training
script halves (the Chinese shopping reviews of ../shared/data/cn-shopping-reviews, tinyshakespeare's
speeches, the bundled shop copy) and the assistant fixtures (FAQ, queries, documents), which no fit
reads: the share flagged by terms, by the classifier (with a 95 % upper bound) and by both, the
classifier's categories, and 10 flagged examples (seeded). The e5 vectors are cached under
``benchmarks/.cache/e5-pieces`` (shared with the training script), so a refit is scored without
embedding again; the first run embeds ~10,000 texts, ~15 minutes on one busy core.

    python benchmarks/policy.py [--policy FILE] [--classifier REF ...] [--repeat 5] [--benign [--benign-n N]]
                                [--out-name policy] [--write-variants]

Prints a table per classifier and split, the misses of ``both``, and a closing table of every classifier on
the held-out splits; writes benchmarks/results/<out-name>.json (provenance first, then ``runs`` by classifier).
"""

from __future__ import annotations

import argparse
import copy
import csv
import json
import sys
import time
from collections import Counter, defaultdict
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "scripts"))
import train_moderation_classifier as training  # noqa: E402  (the everyday corpora and their halves)
from _common import write_result  # noqa: E402

HERE = Path(__file__).resolve().parent
CASES = HERE / "data" / "policy_cases.jsonl"
# The held-out splits the default run reads (how each was written, sealed and read: the module doc). The first two
# (heldout, heldout2) live in CASES; a split not yet read by default (heldout14 to heldout20, spent; heldout21 to heldout24, sealed) is read only with --cases.
READ_HELDOUT = range(3, 14)
TRAIN_DIR = HERE / "data" / "policy_train"  # the classifier's train split, one file per category


def case_files() -> list[Path]:
    """Every case file the benchmark reads by default: the first cases, the held-out splits of ``READ_HELDOUT``,
    the train split."""
    return [CASES, *(HERE / "data" / f"policy_heldout{i}.jsonl" for i in READ_HELDOUT),
            *sorted(TRAIN_DIR.glob("*.jsonl"))]


ASSISTANT = HERE / "fixtures" / "assistant"  # never a training text: the --benign corpus no fit saw
# scored side by side in one run (the first is the headline): the two that ship and their combination
CLASSIFIERS = ("builtin:moderation_e5_combined.npz", "builtin:moderation_e5_tuned.npz", "builtin:moderation_e5.npz")
BENIGN_N = 4000  # texts drawn (seeded) from each held-out half: a 1 % rate is then known to +-0.3 %
MODES = ("terms", "classifier", "both")


def _shown(path: Path) -> str:
    """``path`` relative to the repository when it is inside it (results name no machine's folders)."""
    try:
        return str(path.resolve().relative_to(HERE.parent))
    except ValueError:
        return path.name
TARGET_BLOCK, TARGET_FALSE = 0.95, 0.05
# every split a case may name: CASES' three, then a held-out split per data/policy_heldoutN.jsonl, in order
SPLITS = ("dev", "train", "heldout", "heldout2") + tuple(f"heldout{n}" for n in sorted(
    int(f.stem.removeprefix("policy_heldout")) for f in (HERE / "data").glob("policy_heldout[0-9]*.jsonl")))
HELD_OUT = SPLITS[2:]  # what the targets are judged on
ZH_VARIANTS = ("spaces", "traditional", "zero_width", "symbols")
EN_VARIANTS = ("spaces", "fullwidth", "mixed_case", "homoglyph", "zero_width")
_HOMOGLYPH = str.maketrans("aeios", "43105")


def obfuscate(text: str, key: str, variant: str) -> str:
    """``text`` with its ``key`` written the way people dodge a filter."""
    if variant == "traditional":
        import opencc

        return opencc.OpenCC("s2t").convert(text)
    if variant == "spaces" and key.isascii():  # letters one space apart, words two
        new = "  ".join(" ".join(word) for word in key.split())
    elif variant in ("spaces", "symbols", "zero_width"):
        sep = {"spaces": " ", "symbols": "*", "zero_width": "\u200b"}[variant]
        new = sep.join(key)
    elif variant == "fullwidth":
        new = "".join(chr(ord(c) + 0xFEE0) if "!" <= c <= "~" else "\u3000" if c == " " else c for c in key)
    elif variant == "mixed_case":
        new = "".join(c.upper() if i % 2 else c.lower() for i, c in enumerate(key))
    elif variant == "homoglyph":
        new = key.lower().translate(_HOMOGLYPH)
    else:
        raise ValueError(f"unknown variant {variant!r}")
    return text.replace(key, new, 1)


def read_cases(path: Path = CASES) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def write_variants(path: Path = CASES) -> int:
    """Rewrite the file: the base cases as they are, then one obfuscated variant of each
    should-block base case (variants cycle per category and language)."""
    base = [c for c in read_cases(path) if "variant" not in c]
    out = list(base)
    counters: dict[tuple, int] = defaultdict(int)
    for c in base:
        if c["expect"] != "block":
            continue
        names = ZH_VARIANTS if c["lang"] == "zh" else EN_VARIANTS
        k = counters[c["category"], c["lang"]]
        counters[c["category"], c["lang"]] += 1
        variant = names[k % len(names)]
        out.append({"id": f"{c['id']}-{variant}", "category": c["category"], "lang": c["lang"], "expect": "block",
                    "kind": "obfuscated", "split": c["split"], "variant": variant, "of": c["id"],
                    "text": obfuscate(c["text"], c["key"], variant)})
    tmp = path.with_suffix(".tmp")
    tmp.write_text("".join(json.dumps(c, ensure_ascii=False) + "\n" for c in out), encoding="utf-8")
    tmp.replace(path)
    return len(out) - len(base)


def percentile(values: list[float], q: float) -> float:
    return float(np.percentile(np.asarray(values), q)) if values else float("nan")


def run(policy, classifier, cases: list[dict], repeat: int, scanner, timed: int = 200) -> dict:
    """Each case's verdict by terms, by the classifier and by both, and the latencies (the terms' and
    ``moderate``'s only when ``repeat``)."""
    from aigc.safety.moderation import assess, moderate

    check_us: list[float] = []
    moderate_us: list[float] = []
    rows = []
    scores = _scores(classifier, [c["text"] for c in cases])
    for c, extra in zip(cases, scores):
        text = c["text"]
        matches = policy.match_terms(text)
        verdict = assess(policy, matches)
        for _ in range(repeat):
            t0 = time.perf_counter()
            assess(policy, policy.match_terms(text))
            check_us.append((time.perf_counter() - t0) * 1e6)
        for _ in range(repeat):
            t0 = time.perf_counter()
            moderate(text, policy, scanner=scanner)
            moderate_us.append((time.perf_counter() - t0) * 1e6)
        alone, both = assess(policy, [], extra), assess(policy, matches, extra)
        stopped = {"terms": verdict.flagged, "classifier": alone.flagged, "both": both.flagged}
        rows.append({**c, "stopped": stopped, "on": both.on, "terms": [m.rule_id for m in matches]})
    classifier_us, both_us = [], []
    for c in cases[::max(1, len(cases) // timed)][:timed]:  # one call per text, as the input rail makes it
        t0 = time.perf_counter()
        extra = classifier.scores(c["text"])
        t1 = time.perf_counter()
        assess(policy, policy.match_terms(c["text"]), extra)
        classifier_us.append((t1 - t0) * 1e6)
        both_us.append((time.perf_counter() - t0) * 1e6)
    return {"rows": rows, "check_us": check_us, "moderate_us": moderate_us, "classifier_us": classifier_us,
            "check_with_classifier_us": both_us}


def _scores(classifier, texts: list[str]) -> list[dict[str, float]]:
    """Each text's scores, the same figures as its ``scores_many``; an e5 classifier's from cached piece
    logits (:func:`training.shipped_piece_logits`), so a refit is scored without embedding the cases again."""
    if not hasattr(classifier, "piece_logits"):
        return [classifier.scores(t) for t in texts]
    from aigc.safety.moderation import text_logits

    return classifier.scores_of(text_logits(lambda pieces: training.shipped_piece_logits(classifier, pieces), texts,
                                            classifier.sentence_margin, classifier.sentence_min_chars))


def rail_overhead(policy, cases: list[dict], scanner, token_chars: int = 2) -> dict:
    """Each case's text streamed through an OutputRail in pieces of ``token_chars`` characters (about
    a token of Chinese): microseconds per ``feed`` in all (segment checks included) and on the path
    where no segment ends (a long text without sentence ends, cap out of reach)."""
    from aigc.safety.rails import OutputRail

    feeds, total = 0, 0.0
    for c in cases:
        text = c["text"] + "\n"
        rail = OutputRail(policy, scanner=scanner)
        t0 = time.perf_counter()
        for i in range(0, len(text), token_chars):
            rail.feed(text[i:i + token_chars])
        rail.finish()
        total += time.perf_counter() - t0
        feeds += -(-len(text) // token_chars)
    rail = OutputRail(policy, scanner=scanner, segment_cap=10**7)
    pieces = ["好的", "颜色", " nice", " soft"] * 25_000
    t0 = time.perf_counter()
    for p in pieces:
        rail.feed(p)
    fast = (time.perf_counter() - t0) / len(pieces)
    return {"token_chars": token_chars, "feeds": feeds, "us_per_feed": round(total / feeds * 1e6, 2),
            "us_per_feed_no_segment_end": round(fast * 1e6, 3)}


def rates(rows: list[dict]) -> dict:
    """Block and false-block rates of ``rows`` (their ``stopped`` is one mode's verdict)."""
    block = [r for r in rows if r["expect"] == "block"]
    allow = [r for r in rows if r["expect"] == "allow"]
    br = sum(r["stopped"] for r in block) / len(block) if block else None
    fb = sum(r["stopped"] for r in allow) / len(allow) if allow else None
    return {"n_block": len(block), "n_allow": len(allow), "block_rate": None if br is None else round(br, 4),
            "false_block_rate": None if fb is None else round(fb, 4)}


LENGTHS = (("short", 0), ("medium", 120), ("long", 240))  # a case's band: at least this many characters as written


def length_band(text: str) -> str:
    return [name for name, least in LENGTHS if len(text) >= least][-1]


def summary(rows: list[dict]) -> dict:
    """The rates of one split under one mode: overall, per category and language, variant, kind and length
    (``LENGTHS``: harm inside a long text is what short cases never show)."""
    per_cat = {}
    for cat in sorted({r["category"] for r in rows}):
        sub = [r for r in rows if r["category"] == cat]
        per_cat[cat] = {**rates(sub), **{lang: rates([r for r in sub if r["lang"] == lang]) for lang in ("zh", "en")}}
    per_variant = {v: rates([r for r in rows if r.get("variant", "plain") == v and r["expect"] == "block"])
                   ["block_rate"] for v in ["plain", *sorted({r["variant"] for r in rows if "variant" in r})]}
    per_kind = {k: rates([r for r in rows if r["kind"] == k and r["expect"] == "allow"])["false_block_rate"]
                for k in sorted({r["kind"] for r in rows if r["expect"] == "allow"})}
    per_kind_block = {k: rates([r for r in rows if r["kind"] == k and r["expect"] == "block"])["block_rate"]
                      for k in sorted({r["kind"] for r in rows if r["expect"] == "block"})}
    per_length = {name: rates([r for r in rows if length_band(r["text"]) == name]) for name, _least in LENGTHS}
    overall = rates(rows)
    passed = overall["block_rate"] >= TARGET_BLOCK and overall["false_block_rate"] <= TARGET_FALSE
    cats_pass = all(v["block_rate"] >= TARGET_BLOCK and v["false_block_rate"] <= TARGET_FALSE
                    for v in per_cat.values())
    return {"overall": overall, "pass": passed, "every_category_passes": cats_pass, "per_category": per_cat,
            "block_rate_by_variant": per_variant, "block_rate_by_kind": per_kind_block,
            "false_block_rate_by_kind": per_kind, "rates_by_length": per_length}


def _f(x) -> str:
    return "    -" if x is None else f"{x:.3f}"


def report(split: str, rows: list[dict]) -> dict:
    """Print and return one split's rates under each mode, and the misses of ``both``."""
    out = {mode: summary([{**r, "stopped": r["stopped"][mode]} for r in rows]) for mode in MODES}
    both = out["both"]
    print(f"\n[{split}] {both['overall']['n_block']} should block, {both['overall']['n_allow']} should pass")
    print(f"{'':<14}" + "".join(f"{mode:^16}" for mode in MODES))
    print(f"{'category':<14}" + f"{'block':>8}{'false':>8}" * len(MODES))
    for cat in both["per_category"]:
        cells = [out[m]["per_category"][cat] for m in MODES]
        below = cells[-1]["block_rate"] < TARGET_BLOCK or cells[-1]["false_block_rate"] > TARGET_FALSE
        print(f"{cat:<14}" + "".join(f"{_f(v['block_rate']):>8}{_f(v['false_block_rate']):>8}" for v in cells)
              + ("  <- both below target" if below else ""))
    print(f"{'overall':<14}" + "".join(f"{_f(out[m]['overall']['block_rate']):>8}"
                                       f"{_f(out[m]['overall']['false_block_rate']):>8}" for m in MODES))
    print("target block >= {}, false <= {}: ".format(TARGET_BLOCK, TARGET_FALSE)
          + ", ".join(f"{m} {'PASS' if out[m]['pass'] else 'FAIL'} (every category: "
                      f"{'PASS' if out[m]['every_category_passes'] else 'FAIL'})" for m in MODES))
    for title, key in (("block rate by variant", "block_rate_by_variant"),
                       ("false-block rate by kind", "false_block_rate_by_kind"),
                       ("block rate by kind", "block_rate_by_kind")):
        print(f"both, {title}: " + ", ".join(f"{k} {_f(v)}" for k, v in both[key].items()))
    print("both, by length (block / false, n): " + ", ".join(
        f"{k} {_f(v['block_rate'])} / {_f(v['false_block_rate'])} ({v['n_block']}+{v['n_allow']})"
        for k, v in both["rates_by_length"].items()))
    misses = [{"id": r["id"], "expect": r["expect"], "text": r["text"], "on": r["on"], "terms": r["terms"],
               "by": [m for m in MODES[:2] if r["stopped"][m]]}
              for r in rows if r["stopped"]["both"] != (r["expect"] == "block")]
    for m in misses:
        print(f"  MISS {m['id']:<28} expect {m['expect']:<5} on={m['on']} terms={m['terms']} by={m['by']} "
              f"{m['text']!r}")
    both["misses"] = misses
    return out


# -- real text that breaks no rule -----------------------------------------------------------------


def benign_corpora(n: int = BENIGN_N) -> dict[str, list[str]]:
    """Everyday text no classifier fit saw: a seeded sample of ``n`` texts of the held-out half of
    each corpus the training script halves (shopping reviews, tinyshakespeare's speeches, the
    bundled shop copy), and the assistant fixtures, which no fit reads at all."""
    out = {name: training.sample(training.halves(texts)[1], n)
           for name, texts in training.halved_corpora().items()}
    return {**out, "assistant_fixtures": assistant_texts()}


def assistant_texts() -> list[str]:
    """The assistant fixtures' FAQ questions and answers, test queries and the paragraphs of its
    Markdown and text documents."""
    with (ASSISTANT / "faq.csv").open(encoding="utf-8", newline="") as f:
        out = [t for r in csv.DictReader(f) for t in (r["question"], r["answer"])]
    out += [json.loads(line)["query"] for line in (ASSISTANT / "queries.jsonl").read_text(encoding="utf-8")
            .splitlines() if line.strip()]
    for path in sorted((ASSISTANT / "docs").glob("*")):
        if path.suffix in (".md", ".txt"):
            out += [b.strip() for b in path.read_text(encoding="utf-8").split("\n\n") if b.strip()]
    return out


def upper95(k: int, n: int) -> float:
    """Wilson's 95 % upper bound of a rate seen ``k`` times in ``n``."""
    if not n:
        return float("nan")
    p, z = k / n, 1.96
    return (p + z * z / (2 * n) + z * ((p * (1 - p) + z * z / (4 * n)) / n) ** 0.5) / (1 + z * z / n)


def benign_check(policy, classifier, n: int = BENIGN_N, examples: int = 10) -> dict:
    """Per corpus: the share flagged by terms, classifier and both (with the classifier's 95 % upper
    bound); the classifier's categories; examples. The e5 vectors are cached by the training script
    (benchmarks/.cache/e5-pieces), so a refit is scored without embedding again."""
    from aigc.safety.moderation import assess

    out = {}
    for name, texts in benign_corpora(n).items():
        t0 = time.perf_counter()
        matches = [policy.match_terms(t) for t in texts]
        terms = np.array([assess(policy, m).flagged for m in matches])
        extra = _scores(classifier, texts)
        # the classifier alone (no matches), and the policy with it (its confirm points may overrule terms)
        alone = [assess(policy, [], e).categories for e in extra]  # one decision a text
        clf_on = np.array([[on[c] for c in classifier.categories] for on in alone])
        clf = clf_on.any(1)
        both = np.array([assess(policy, m, e).flagged for m, e in zip(matches, extra)])
        order = np.random.default_rng(0).permutation(len(texts))
        picked = [i for i in order if clf[i]][:examples]
        cats = Counter(c for row in clf_on for c, on in zip(classifier.categories, row) if on)
        out[name] = {"n": len(texts), "flagged_share": {"terms": round(float(terms.mean()), 4),
                                                        "classifier": round(float(clf.mean()), 4),
                                                        "both": round(float(both.mean()), 4)},
                     "classifier_upper95": round(upper95(int(clf.sum()), len(texts)), 4),
                     "classifier_categories": dict(cats.most_common()),
                     "examples": [{"text": texts[i][:160],
                                   "categories": [c for c, on in zip(classifier.categories, clf_on[i]) if on]}
                                  for i in picked],
                     "seconds": round(time.perf_counter() - t0, 1)}
        share = out[name]["flagged_share"]
        print(f"\n[benign: {name}] {len(texts):,} texts flagged: terms {share['terms']:.4f}, classifier "
              f"{share['classifier']:.4f} (95 % upper bound {out[name]['classifier_upper95']:.4f}), both "
              f"{share['both']:.4f}; "
              f"classifier categories {dict(cats.most_common(5))}")
        for e in out[name]["examples"]:
            print(f"  {e['categories']} {e['text'][:100]!r}")
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--policy", help="a policy file (default: the shipped default policy)")
    ap.add_argument("--classifier", nargs="+", default=None,
                    help=f"the classifiers of the classifier and both modes, each scored in this run: builtin:NAME or "
                         f"a path, either with @sentence_margin=M (none or a number: that margin instead of its file's) and "
                         f"@sentence_min_chars=L (only texts of at least L characters read by sentence) "
                         f"(default: the policy's moderation.classifier, else {' '.join(CLASSIFIERS)})")
    ap.add_argument("--cases", nargs="+", default=None,
                    help=f"case files (default: policy_cases.jsonl, policy_heldout{READ_HELDOUT[0]}.jsonl to "
                         f"policy_heldout{READ_HELDOUT[-1]}.jsonl, policy_train/*.jsonl)")
    ap.add_argument("--repeat", type=int, default=5, help="timed checks per case")
    ap.add_argument("--timed", type=int, default=200, help="texts timed through each classifier, one call each")
    ap.add_argument("--benign", action="store_true",
                    help="also the false-flag check on everyday text no fit saw (see benign_corpora)")
    ap.add_argument("--benign-n", type=int, default=BENIGN_N, help="texts drawn from each held-out half")
    ap.add_argument("--out-name", default="policy")
    ap.add_argument("--write-variants", action="store_true", help="rewrite the obfuscated variants, then exit")
    args = ap.parse_args()
    files = [Path(f) for f in args.cases] if args.cases else case_files()
    if args.write_variants:
        for path in files:
            print(f"wrote {write_variants(path)} variants to {_shown(path)}")
        return
    if args.benign and not (training.REVIEWS.is_file() and training.SHAKESPEARE.is_file()):
        sys.exit(f"--benign needs {training.REVIEWS} and {training.SHAKESPEARE} (../shared/data)")

    from aigc.safety.pii import Scanner
    from aigc.safety.policy import default_policy, load_policy, parse_policy

    policy = load_policy(args.policy) if args.policy else default_policy()
    own = policy.doc["moderation"]["classifier"]
    refs = args.classifier or ([own] if own else list(CLASSIFIERS))
    terms_policy = policy if not own else \
        parse_policy(json.dumps({**policy.doc, "moderation": {"classifier": None}}), base_dir=policy.base_dir)
    scanner = Scanner()
    cases = [c for path in files for c in read_cases(path)]
    base = {ref: policy.base_dir if own and ref == own else Path.cwd() for ref in refs}  # a policy's own: beside it
    if args.benign and not all(hasattr(load(ref, base[ref]), "logits") for ref in refs):
        sys.exit("--benign reads an e5 classifier's logits; a classifier given is not one")
    runs, latency, overhead = {}, {}, None
    for k, ref in enumerate(refs):
        classifier = load(ref, base[ref])
        t0 = time.perf_counter()
        res = run(terms_policy, classifier, cases, args.repeat if k == 0 else 0, scanner,  # the terms' timing once
                  max(1, args.timed))
        elapsed = time.perf_counter() - t0
        if k == 0:
            latency = {name: {"p50": round(percentile(res[key], 50), 1), "p95": round(percentile(res[key], 95), 1)}
                       for name, key in (("check_us", "check_us"), ("moderate_with_pii_us", "moderate_us"))}
            overhead = rail_overhead(terms_policy, cases, scanner)
        own_latency = {name: {"p50": round(percentile(res[key], 50), 1), "p95": round(percentile(res[key], 95), 1)}
                       for name, key in (("classifier_us", "classifier_us"),
                                         ("check_with_classifier_us", "check_with_classifier_us"))}
        print(f"\n==== classifier {ref}: policy {policy.version} (terms {terms_policy.version}), {len(cases)} cases, "
              f"{elapsed:.1f} s")
        splits = {}
        for split in SPLITS:
            rows = [r for r in res["rows"] if r.get("split", "dev") == split]
            if rows:
                splits[split] = report(split, rows)
        print(f"classifier {ref}: " + "; ".join(f"{k} p50 {v['p50']}, p95 {v['p95']}" for k, v in own_latency.items()))
        benign = benign_check(terms_policy, classifier, args.benign_n) if args.benign else None
        trained = _trained_on(classifier)
        judged = [s for s in HELD_OUT if s in splits and s not in trained]
        verdicts = {m: {"pass": bool(judged) and all(splits[s][m]["pass"] for s in judged),
                        "every_category_passes": bool(judged) and all(splits[s][m]["every_category_passes"]
                                                                      for s in judged)} for m in MODES}
        runs[ref] = {"classifier_cv": getattr(classifier, "meta", {}).get("cv"), "trained_on_splits": sorted(trained),
                     "judged_on": judged,
                     "modes": {"terms": "the policy's terms and context rules alone", "classifier": f"{ref} alone",
                               "both": f"the policy with moderation.classifier {ref}"},
                     "pass": verdicts, **splits, "benign": benign, "latency": own_latency}
    print("latency per check (us): " + "; ".join(f"{k} p50 {v['p50']}, p95 {v['p95']}" for k, v in latency.items()))
    print(f"output rail: {overhead['us_per_feed']} us per feed of {overhead['token_chars']} characters "
          f"(segment checks included), {overhead['us_per_feed_no_segment_end']} us when no segment ends")
    print(f"\nblock / false block on the held-out splits (target >= {TARGET_BLOCK} / <= {TARGET_FALSE}; * a split the "
          f"classifier was trained on, not judged):")
    shown = [s for s in HELD_OUT if s in runs[refs[0]]]
    print(f"{'':<44}" + "".join(f"{s:>14}" for s in shown))
    rows = [("terms", refs[0], "terms")] + [(f"{m} {ref.removeprefix('builtin:')}", ref, m) for ref in refs
                                              for m in ("classifier", "both")]
    for title, ref, m in rows:
        seen = set(runs[ref]["trained_on_splits"]) if m != "terms" else set()
        print(f"{title:<44}" + "".join(f"{runs[ref][s][m]['overall']['block_rate']:>7.3f}/"
                                       f"{runs[ref][s][m]['overall']['false_block_rate']:.3f}"
                                       + ("*" if s in seen else " ") for s in shown))
    for ref in refs:
        print(f"target with {ref}: " + ", ".join(
            f"{m} {'PASS' if v['pass'] else 'FAIL'} (every category: {'PASS' if v['every_category_passes'] else 'FAIL'})"
            for m, v in runs[ref]["pass"].items()))
    path = write_result(args.out_name, {
        "policy_version": policy.version, "terms_policy_version": terms_policy.version, "classifiers": refs,
        "cases": [_shown(path) for path in files], "n_cases": len(cases), "repeat": args.repeat,
        "timed": args.timed,
        "targets": {"block_rate": TARGET_BLOCK, "false_block_rate": TARGET_FALSE, "judged_on": list(HELD_OUT)},
        "latency": latency, "output_rail": overhead, "runs": runs})
    print(f"wrote {path}")


def _trained_on(classifier) -> set[str]:
    """The held-out splits ``classifier`` was trained on (scripts/train_moderation_classifier.py --retired records
    them in its meta; a combined classifier's are its own and its parts'): scored, but not judged for it."""
    out = set((getattr(classifier, "meta", None) or {}).get("retired") or [])
    for part in getattr(classifier, "parts", ()):
        out |= _trained_on(part)
    return out


SENTENCE_KEYS = ("sentence_margin", "sentence_min_chars")  # what a classifier reference may set after an @


def load(ref: str, base_dir: Path | None):
    """The classifier ``ref`` names (builtin:NAME, or a path from ``base_dir``). ``REF@sentence_margin=M``: that
    classifier with its file's ``sentence_margin`` set to M (``none``: a text's pieces alone;
    :func:`aigc.safety.moderation.text_logits`), a candidate when the margin is chosen; ``@sentence_min_chars=L``
    (after it) reads by sentence only texts of at least L characters."""
    from aigc.safety.moderation import classifier_at

    name, *settings = ref.split("@")
    classifier = classifier_at(name, base_dir)
    if settings:
        meta = dict(classifier.meta)
        for setting in settings:
            key, _, value = setting.partition("=")
            try:
                if key not in SENTENCE_KEYS:
                    raise ValueError
                meta[key] = (None if value == "none" else float(value)) if key == "sentence_margin" else int(value)
            except ValueError:
                raise SystemExit(f"policy.py: {ref!r}: after @ write one of {', '.join(SENTENCE_KEYS)}=VALUE "
                                 f"(sentence_margin a number or none, sentence_min_chars a whole number)") from None
        classifier = copy.copy(classifier)  # the loaded one is shared (cached)
        classifier.meta = meta
    return classifier

if __name__ == "__main__":
    main()
