"""Recommendation (issue 16, part 2): popularity, implicit's ALS and BPR, and our hybrid of behaviour
and item text, side by side on a shop with known tastes.

Data: :func:`aigc.apps.recommend.synth.generate` (``--users`` users, ``--items`` items drawn from the
bundled shop corpus, 10 % of them cold-start items that go on sale in the last fifth of 120 days;
users with latent tastes over categories, tones, language and a part the text does not show; see its
docstring). Every ``--seeds`` seed is a new shop (other items, users and interactions) and a new
training seed.

Split protocol (the same for every model):

- **Cold-start items**: the items whose every interaction is in the test period (at or after the
  generator's ``new_from``). None of their interactions is trained on; the models see their text
  (the hybrid) or nothing.
- **Warm test**: among the other items, each user's distinct items ordered by their first
  interaction; the last ``--n-test`` (2) are the user's test items (all their rows held out), for
  users with at least ``n_test + 3`` such items; everything else is training.
- Every model trains on the same training rows through :func:`aigc.apps.recommend.train` (the
  defaults of each model; the hybrid chooses its blend on a slice of these training rows only).

Metrics, at 10, binary relevance, averaged over users:

- **(a) warm**: users with test items; all warm items (not cold-start) the user has no training
  interaction with are ranked; recall@10 = test items in the top 10 / test items, NDCG@10.
- **(b) cold**: users with training history who interacted with a cold-start item; the cold-start
  items alone are ranked (the rest of the catalogue is left out); relevant: those they touched.
  Popularity scores every cold-start item 0 (ties in catalogue order, i.e. a random ranking, as
  cold-start items are a random subset); ALS and BPR have no factors for items they never saw,
  so their scores tie too and come out as popularity's; ``random`` is the mean of 20 seeded random
  rankings.

Targets (the issue): ours beats ALS on (a); ours beats popularity by 2x on (b).

Read with care: the generator's tastes are over the very attributes the catalogue lists (category,
tags = the copy's tone) and the language of the text, which the hybrid's taste score reads
directly; its text score has to find them in the words. ``hybrid_components`` gives each of the
hybrid's three scores alone on the same test (behaviour = ALS with item factors shrunk towards the
text's), to show what each brings; the weights that combine them were chosen on the training rows.

    python benchmarks/recommend.py [--users 2000] [--items 1000] [--seeds 0 1] [--fresh]

Item vectors are cached under ``benchmarks/.cache/recommend`` (the benchmark's workspace);
``--fresh`` uses a new temporary workspace, so the time includes embedding every item.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("AIGC_THREADS", "1")
sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import write_result  # noqa: E402

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

MODELS = ("popularity", "als", "bpr", "hybrid")
K = 10
CACHE = Path(__file__).resolve().parent / ".cache" / "recommend"


def split(interactions: pd.DataFrame, new_from: str, n_test: int) -> dict:
    """Training rows, each warm test user's held-out items, each user's cold-start items (see the
    module docstring)."""
    t = pd.to_datetime(interactions["timestamp"], utc=True)
    frame = interactions.assign(t=t)
    first = frame.groupby("item")["t"].min()
    cold_items = sorted(first.index[first >= pd.Timestamp(new_from)])
    is_cold = frame["item"].isin(cold_items)
    warm = frame[~is_cold]
    pairs = warm.groupby(["user", "item"], as_index=False)["t"].min().sort_values(["user", "t", "item"])
    pairs["from_end"] = pairs.groupby("user").cumcount(ascending=False)
    pairs["n"] = pairs.groupby("user")["item"].transform("size")
    test_pairs = pairs[(pairs["from_end"] < n_test) & (pairs["n"] >= n_test + 3)]
    held = warm.set_index(["user", "item"]).index.isin(test_pairs.set_index(["user", "item"]).index)
    train = warm[~held].drop(columns="t")
    warm_test = test_pairs.groupby("user")["item"].apply(set).to_dict()
    cold_test = frame[is_cold].groupby("user")["item"].apply(set).to_dict()
    return {"train": train, "warm_test": warm_test, "cold_test": cold_test, "cold_items": cold_items}


def ndcg(ranked: list[int], truth: set[int]) -> float:
    gain = sum(1 / np.log2(r + 2) for r, i in enumerate(ranked[:K]) if i in truth)
    ideal = sum(1 / np.log2(r + 2) for r in range(min(len(truth), K)))
    return gain / ideal


def evaluate(rec, cases: dict[str, set[str]], candidates: np.ndarray, exclude_seen: bool) -> dict:
    """Mean recall@10 and NDCG@10 of ``rec`` over ``cases`` (user -> relevant item ids), ranking
    only ``candidates`` (a bool mask over the catalogue) minus, with ``exclude_seen``, the user's
    training items."""
    from aigc.apps.recommend.models import top_k

    users = [u for u in sorted(cases) if u in rec.user_index]
    recall, gains = [], []
    for start in range(0, len(users), 256):
        part = users[start:start + 256]
        rows = np.array([rec.user_index[u] for u in part])
        scores = rec.model.scores(rows).astype(np.float64)
        scores[:, ~candidates] = -np.inf
        if exclude_seen:
            seen = rec.history[rows].toarray() > 0
            scores[seen] = -np.inf
        for u, top in zip(part, top_k(scores, K)):
            truth = {rec.item_index[i] for i in cases[u]}
            ranked = [int(i) for i in top]
            recall.append(len(truth & set(ranked)) / len(truth))
            gains.append(ndcg(ranked, truth))
    return {"recall@10": round(float(np.mean(recall)), 4), "ndcg@10": round(float(np.mean(gains)), 4),
            "users": len(users)}


def random_baseline(cases: dict[str, set[str]], pool: list[str], users: set[str], rounds: int = 20) -> dict:
    rng = np.random.default_rng(0)
    recall, gains = [], []
    for _ in range(rounds):
        for u in sorted(cases):
            if u not in users:
                continue
            ranked = list(rng.permutation(len(pool))[:K])
            truth = {pool.index(i) for i in cases[u]}
            recall.append(len(truth & set(ranked)) / len(truth))
            gains.append(ndcg(ranked, truth))
    return {"recall@10": round(float(np.mean(recall)), 4), "ndcg@10": round(float(np.mean(gains)), 4)}


def run_seed(ws, seed: int, args) -> dict:
    from aigc.apps import recommend
    from aigc.apps.recommend.synth import generate

    items, interactions, truth = generate(n_users=args.users, n_items=args.items, seed=seed)
    s = split(interactions, truth["new_from"], args.n_test)
    print(f"seed {seed}: {len(items)} items ({len(s['cold_items'])} cold-start), {len(interactions)} interactions, "
          f"{len(s['train'])} train rows, {len(s['warm_test'])} warm test users, {len(s['cold_test'])} users of "
          "cold-start items", flush=True)
    out = {"split": {"items": len(items), "cold_start_items": len(s["cold_items"]),
                     "interactions": len(interactions), "train_rows": len(s["train"]),
                     "warm_test_users": len(s["warm_test"]), "cold_test_users": len(s["cold_test"])},
           "warm": {}, "cold": {}, "train_seconds": {}}
    for model in MODELS:
        t = time.perf_counter()
        summary = recommend.train(f"bench-{model}", items, s["train"], model=model, workspace=ws, seed=seed)
        out["train_seconds"][model] = round(time.perf_counter() - t, 2)
        if model == "hybrid":
            out["hybrid"] = {"blend": summary["blend"], "blend_choice": summary["params"]["blend_choice"],
                             "embedded": summary["embedded"], "cached_vectors": summary["cached_vectors"]}
        rec = recommend.load(f"bench-{model}", ws)
        cold_mask = np.isin(np.array(rec.item_ids), s["cold_items"])
        out["warm"][model] = evaluate(rec, s["warm_test"], ~cold_mask, exclude_seen=True)
        out["cold"][model] = evaluate(rec, s["cold_test"], cold_mask, exclude_seen=False)
        if model == "hybrid":  # each of its scores alone, on the same test (not a choice: a reading)
            chosen = dict(rec.model.weights)
            out["hybrid_components"] = {}
            for label, w in (("behaviour", (1.0, 0.0, 0.0)), ("text", (0.0, 1.0, 0.0)), ("taste", (0.0, 0.0, 1.0))):
                rec.model.weights = {"warm": w, "cold": w}
                out["hybrid_components"][label] = {"warm": evaluate(rec, s["warm_test"], ~cold_mask, True),
                                                   "cold": evaluate(rec, s["cold_test"], cold_mask, False)}
            rec.model.weights = chosen
        print(f"  {model:<10} trained in {out['train_seconds'][model]:6.1f}s  warm recall@10 "
              f"{out['warm'][model]['recall@10']:.4f} ndcg@10 {out['warm'][model]['ndcg@10']:.4f}  cold recall@10 "
              f"{out['cold'][model]['recall@10']:.4f} ndcg@10 {out['cold'][model]['ndcg@10']:.4f}", flush=True)
    known = set(recommend.load("bench-hybrid", ws).user_index)
    out["cold"]["random"] = random_baseline(s["cold_test"], s["cold_items"], known)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--users", type=int, default=2000)
    parser.add_argument("--items", type=int, default=1000)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    parser.add_argument("--n-test", type=int, default=2, help="each warm user's last items held out")
    parser.add_argument("--fresh", action="store_true", help="a new workspace: embed every item again")
    parser.add_argument("--no-write", action="store_true", help="print only (a development run)")
    args = parser.parse_args()

    from aigc import open_workspace

    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="aigc-bench-recommend-") if args.fresh else \
            contextlib.nullcontext(CACHE) as root:
        ws = open_workspace(root)
        seeds = {str(seed): run_seed(ws, seed, args) for seed in args.seeds}
    mean = {part: {m: {metric: round(float(np.mean([seeds[s][part][m][metric] for s in seeds])), 4)
                       for metric in ("recall@10", "ndcg@10")} for m in (*MODELS, "random") if m in seeds[
        next(iter(seeds))][part]} for part in ("warm", "cold")}
    targets = {
        "ours_beats_als_on_warm_ndcg": {s: seeds[s]["warm"]["hybrid"]["ndcg@10"] > seeds[s]["warm"]["als"]["ndcg@10"]
                                        for s in seeds},
        "ours_over_popularity_on_cold_recall": {
            s: round(seeds[s]["cold"]["hybrid"]["recall@10"] / max(seeds[s]["cold"]["popularity"]["recall@10"], 1e-9), 2)
            for s in seeds},
    }
    print(f"\nmean over seeds {', '.join(seeds)} (recall@10 / NDCG@10):")
    print(f"{'model':<12}{'warm recall':>12}{'warm ndcg':>11}{'cold recall':>13}{'cold ndcg':>11}")
    for m in (*MODELS, "random"):
        w = mean["warm"].get(m)
        c = mean["cold"][m]
        print(f"{m:<12}{w['recall@10'] if w else float('nan'):>12.4f}{w['ndcg@10'] if w else float('nan'):>11.4f}"
              f"{c['recall@10']:>13.4f}{c['ndcg@10']:>11.4f}")
    print(f"targets: ours > ALS on warm NDCG@10 per seed {targets['ours_beats_als_on_warm_ndcg']}; "
          f"ours / popularity on cold recall@10 per seed {targets['ours_over_popularity_on_cold_recall']} (target 2)")
    seconds = round(time.perf_counter() - started, 1)
    print(f"{seconds:.0f} s in all")
    if args.no_write:
        return
    path = write_result("recommend", {
        "config": {"users": args.users, "items": args.items, "seeds": args.seeds, "n_test": args.n_test, "k": K,
                   "fresh_workspace": args.fresh, "threads": 1},
        "protocol": __doc__.split("Split protocol")[1].split("    python")[0].strip(),
        "seeds": seeds, "mean": mean, "targets": targets, "seconds": seconds})
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
