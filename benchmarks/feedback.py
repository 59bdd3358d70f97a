"""Learning from feedback (issue 12): how few ratings teach a policy a taste it is never told?

Simulated raters, each a predicate on text that the model never sees, rate a policy's product copy:

- English: ``en_material`` mentions a material (cotton, linen, wool, leather, ceramic, oak, ...:
  :data:`EN_MATERIALS`), ``en_no_exclaim`` has no exclamation mark, ``en_short`` is under 60
  characters;
- Chinese: ``zh_material`` 提到材质 (棉, 亚麻, 羊毛, 皮革, 陶, 瓷, 木, ...: :data:`ZH_MATERIALS`),
  ``zh_no_exclaim`` 没有感叹号 (！ or !), ``zh_short`` 少于 30 个字.

A blank output pleases no rater (else "short" and "no exclamation marks" would reward saying
nothing). None of the rules is tuned to the corpus: the shop copy mentions a material in ~56 % of
its texts, shouts in ~33 %, and no text of it is that short.

The policy is an adapted LoRA run of a bundled base trained briefly (``--sft-budget`` seconds) on
the shop's copy of one language (src/aigc/resources/shop_copy.csv, condition columns category and
tone through a prompt template): SmolLM2-135M-Instruct for English, Gemma 3 270M for Chinese
(``--gemma``: installed and its terms accepted; otherwise the Chinese raters are skipped, with a
note in the JSON). ``--run`` / ``--run-zh`` use a LoRA run of yours instead.

Ratings: the shop's condition combinations are split (seeded) into a third held out and the rest.
The policy draws ``--candidates`` texts (temperature ``--temperature``) for prompts cycling over
the rest; a rater's ratings are pairs of a text it likes and one it does not, from the same
prompt (at most ``--pairs-per-prompt`` a prompt, each a distinct pair; one pair = one rating).
One pool of candidates serves every rater; prompts are drawn until each rater has the largest
budget or ``--max-rating-prompts`` were drawn. A budget of B ratings is a rater's first B pairs,
so the budgets are nested, as ratings arriving over time would be.

Measured on the HELD-OUT combinations (``--heldout-prompts`` draws cycling over them), as the
share of outputs the rater likes:

(a) base: the policy, one sample per held-out prompt;
(b) rerank: the online reward model (:class:`aigc.feedback.reward.RewardModel`, its defaults)
    trained on the B pairs picks the best of ``--rerank-candidates`` (8) draws of the policy;
(c) DPO: ``adapted.tune(method="dpo")`` on the B pairs, then one sample per prompt;
(d) KTO: ``adapted.tune(method="kto")`` on the same ratings as thumbs (chosen up, rejected down);
(e) rounds, as the product's loop runs (``--rounds`` K, at the budgets of ``--round-budgets``): the
    budget's ratings come in K rounds, each of the outputs of the policy as it is by then, sharing
    the --tune-steps steps (so (c) and (e) spend the same steps on as many ratings). Round 1
    rates the base's pool (the rater's first pairs, as above); each round tunes the current policy
    on that round's ratings (``adapted.tune``, ``--round-method``: its parent merged is the
    reference, as ``aigc tune`` on a tuned run does), and the next round's ratings are pairs among
    ``--candidates`` draws of that tuned run for fresh prompts of the rating combinations. Each
    round's run is measured as (c) is, and reranked as (b) is: the best of ``--rerank-candidates``
    draws of that run by a reward model of every rating so far (a tuned run's reward model
    inherits its parent's ratings: :mod:`aigc.feedback.store`). A taste the base hardly ever shows
    cannot be taught by rating the base alone; rounds show it more and more often. A rater whose
    target (below) another method already meets skips them, unless ``--rounds-always``.

(a), (c) and (d) sample each held-out combination with the same seeds, so they differ by their
weights alone. Also recorded: the base's share over all rerank candidates (the same quantity, more
samples), the rerank ceiling (a held-out prompt with at least one liked candidate among N), and the
likelihood of held-out shop text under (a), (c) and (d): the test split's responses scored given
their instructions, as ``aigc eval`` scores an adapted run, in nats per token and bits per character.

Target, per rater: a share >= 0.9 with <= 200 ratings by some method, the tuned ones keeping the
held-out perplexity (per token; every model here shares the base's tokenizer) within 10 % of the
base's (``ppl_ratio`` <= 1.1; ``bpc_ratio`` beside it). Reranking leaves the model as it is.

    python benchmarks/feedback.py [--threads 2] [--raters en_material en_no_exclaim ...] \\
        [--budgets 20 50 200] [--tune-steps 60] [--candidates 8] [--heldout-prompts 48] \\
        [--sft-budget 120] [--gemma] [--run NAME] [--workspace DIR] [--out-name feedback] \\
        [--methods rerank dpo kto rounds] [--rounds 3] [--round-budgets 200] [--save-texts DIR]

Prints the expected time first, then a table; writes benchmarks/results/<out-name>.json.
"""

from __future__ import annotations

import argparse
import csv
import itertools
import json
import math
import random
import re
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import write_result  # noqa: E402

HERE = Path(__file__).resolve().parent
SHARE_TARGET, MAX_RATINGS, PPL_TOLERANCE = 0.9, 200, 0.10

EN_MATERIALS = ("cotton", "linen", "wool", "leather", "ceramic", "oak", "walnut", "beech", "bamboo", "silk",
                "cashmere", "porcelain", "stoneware", "clay", "glass", "brass", "copper", "steel", "iron",
                "wood", "wooden", "stone", "marble", "canvas", "hemp", "jute", "rattan", "felt", "cork",
                "paper")
# Whole words for the ambiguous ones: 麻 alone is also 麻烦, 皮 also 皮肤, 丝 also 丝滑, 钢 also 钢笔.
ZH_MATERIALS = ("棉", "亚麻", "麻布", "羊毛", "羊绒", "真丝", "蚕丝", "皮革", "真皮", "牛皮", "陶", "瓷", "木", "竹",
                "玻璃", "铜", "不锈钢", "铁", "石", "纸", "毡", "藤")
_EN_MATERIAL = re.compile(r"\b(?:" + "|".join(EN_MATERIALS) + r")s?\b", re.IGNORECASE)


@dataclass(frozen=True)
class Rater:
    name: str
    lang: str
    rule: str  # what it likes, in words: recorded, never shown to the model
    rule_holds: Callable[[str], bool]

    def likes(self, text: str) -> bool:
        text = text.strip()
        return bool(text) and self.rule_holds(text)


RATERS = {r.name: r for r in (
    Rater("en_material", "en", "mentions a material (" + ", ".join(EN_MATERIALS) + ")",
          lambda t: bool(_EN_MATERIAL.search(t))),
    Rater("en_no_exclaim", "en", "no exclamation marks (! or ！)", lambda t: "!" not in t and "！" not in t),
    Rater("en_short", "en", "under 60 characters", lambda t: len(t) < 60),
    Rater("zh_material", "zh", "提到材质 (" + "、".join(ZH_MATERIALS) + ")",
          lambda t: any(m in t for m in ZH_MATERIALS)),
    Rater("zh_no_exclaim", "zh", "没有感叹号 (！ or !)", lambda t: "!" not in t and "！" not in t),
    Rater("zh_short", "zh", "少于 30 个字 (characters, punctuation included)", lambda t: len(t) < 30),
)}

# The policy of each language: the bundled base and the instruction its copy is asked with.
POLICIES = {
    "en": {"base": "smollm2-135m-instruct", "template": "Write a {tone} product description for {category}."},
    "zh": {"base": "gemma-3-270m", "template": "为{category}类商品写一段{tone}风格的中文商品文案。"},
}
COND_COLUMNS = ["category", "tone"]
BLOCK_SIZE = 128  # the SFT blocks: a shop text and its instruction fit in about 80 tokens
# Seeds of each kind of draw: --seed * 10^7 + offset + index, so no two draws share one.
METHODS = ("rerank", "dpo", "kto", "rounds")  # rerank is always measured: it costs a twentieth of a second
SEED_OFFSETS = {"rating_pool": 1_000_000, "heldout_candidates": 2_000_000, "heldout_one": 3_000_000,
                "split": 4_000_000, "round_pool": 5_000_000}  # round k's prompt j: + 100_000 * k + j

# What the expected time assumes, on 2 threads of a laptop-class CPU (a rough guide, not a figure):
TOKENS_PER_SAMPLE = 45  # shop copy: ~165 English or ~50 Chinese characters
STREAM_TOK_S = 20.0  # one stream of SmolLM2-135M; rows decoded together: STREAM_TOK_S * rows ** 0.7
TUNE_STEP_S = 2.5  # a DPO or KTO step, batch 4
TUNE_OVERHEAD_S = 25.0  # loading the base twice, validation, the merged export
PPL_S_PER_TEXT = 0.4  # scoring one held-out shop text
HELDOUT_TEXTS = 90  # the shop's test split of one language (5 % of 1,800)
SFT_OVERHEAD_S = 60.0  # de-quantizing the bundled base (once per workspace), validation, export
BASE_COST = {"en": 1.0, "zh": 2.0}  # Gemma 3 270M against SmolLM2-135M: twice the parameters


# -- ratings ---------------------------------------------------------------------------------------


def pairs_of(rater: Rater, texts: Sequence[str], cap: int) -> list[tuple[str, str]]:
    """Up to ``cap`` distinct (liked, not liked) pairs among one prompt's candidates, spread so the
    first ones share no text. Candidates equal once cleaned count once; blank ones are left out."""
    from aigc.data.clean import clean_text

    distinct: dict[str, str] = {}
    for text in texts:
        distinct.setdefault(clean_text(text), text)
    distinct.pop("", None)
    good = [t for t in distinct.values() if rater.likes(t)]
    bad = [t for t in distinct.values() if not rater.likes(t)]
    return [(good[a], bad[(a + d) % len(bad)]) for d in range(len(bad)) for a in range(len(good))][:cap]


def rating_pool(gen, combos: list[dict], raters: list[Rater], args, need: int | None = None,
                first_seed: int = 0) -> tuple[list[dict], dict[str, list]]:
    """Candidate sets of the policy, drawn until every rater has ``need`` pairs (default: the largest
    budget) or --max-rating-prompts were drawn; returns the sets and each rater's pairs, in the order
    drawn. Prompt k's seed is the rating pool's, offset by ``first_seed`` + k."""
    need = max(args.budgets) if need is None else need
    pool: list[dict] = []
    pairs: dict[str, list] = {r.name: [] for r in raters}
    for k in range(args.max_rating_prompts):
        if all(len(p) >= need for p in pairs.values()):
            break
        cond, seed = combos[k % len(combos)], seed_of(args, "rating_pool", first_seed + k)
        texts = draw(gen, cond, args.candidates, seed, args)
        pool.append({"cond": cond, "seed": seed, "texts": texts})
        for r in raters:
            pairs[r.name] += [{"cond": cond, "chosen": a, "rejected": b}
                              for a, b in pairs_of(r, texts, args.pairs_per_prompt)]
    return pool, pairs


# -- the policy ------------------------------------------------------------------------------------


def seed_of(args, kind: str, index: int) -> int:
    return args.seed * 10**7 + SEED_OFFSETS[kind] + index


def draw(gen, cond: dict[str, str], n: int, seed: int, args) -> list[str]:
    return gen.generate("", n=n, cond=cond or None, temperature=args.temperature, seed=seed,
                        max_new_tokens=args.max_new_tokens)


def shop_dataset(ws, lang: str, scratch: Path) -> str:
    """The shop's copy of one language as dataset ``shop-<lang>`` (ingested once per workspace)."""
    import aigc

    name = f"shop-{lang}"
    if not ws.has_dataset(name):
        source = resources.files("aigc") / "resources" / "shop_copy.csv"
        rows = [r for r in csv.DictReader(source.open(encoding="utf-8")) if r["lang"] == lang]
        path = scratch / f"{name}.csv"
        with path.open("w", encoding="utf-8", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=["text", *COND_COLUMNS], extrasaction="ignore")
            writer.writeheader()
            writer.writerows(rows)
        aigc.ingest(path, name, workspace=ws, text_column="text", cond_columns=COND_COLUMNS)
    return name


def policy_run(ws, lang: str, args, scratch: Path) -> tuple[str | None, str]:
    """(the policy run of ``lang``, how it was made), or (None, why it was skipped)."""
    import aigc
    from aigc.errors import NotFound

    given = given_run(args, lang)
    if given:
        if not ws.has_run(given) or (spec_of(ws, given).get("adapt") or {}).get("method") != "lora":
            sys.exit(f"error: --run{'' if lang == 'en' else '-zh'} {given!r} is not a LoRA run of workspace "
                     f"{ws.root}: give a run made with `aigc train DATASET --base NAME` (method lora)")
        return given, f"given: {given}"
    base = POLICIES[lang]["base"]
    if lang == "zh" and not args.gemma and not ws.has_base(base):
        return None, ("Chinese needs Gemma 3 270M (SmolLM2 is English-only): install it (`make gemma`), "
                      "read https://ai.google.dev/gemma/terms and pass --gemma")
    try:
        from aigc.pretrained.bases import add_base, get_base

        if lang == "zh" and not ws.has_base(base):
            add_base(ws, base, accept_license=True)
        get_base(ws, base)
    except NotFound as e:
        return None, str(e)
    dataset = shop_dataset(ws, lang, scratch)
    run = f"feedback-{lang}-{base}"
    if ws.has_run(run) and ws.get_run(run)["status"] == "finished":
        return run, f"reused {run} from the workspace"
    if ws.has_run(run):
        ws.delete_run(run)  # ours, from an interrupted invocation: a policy trains in one go
    aigc.train(dataset, base=base, name=run, prompt_template=POLICIES[lang]["template"],
               adapt={"block_size": BLOCK_SIZE}, time_budget=args.sft_budget, max_steps=0, workspace=ws)
    return run, f"trained: LoRA of {base} on {dataset} for {args.sft_budget:g} s"


def given_run(args, lang: str) -> str | None:
    return args.run if lang == "en" else args.run_zh


def spec_of(ws, run: str) -> dict[str, Any]:
    from aigc.runs import read_spec

    return read_spec(ws.run_path(run))


def combinations(spec: dict[str, Any], lang: str) -> list[dict[str, str]]:
    """Every combination of the run's condition values ({} for a run without conditions); a run with
    a ``lang`` column asks in ``lang`` only."""
    cols = list(spec.get("cond_columns") or [])
    values = {c: list((spec.get("conditions") or {}).get(c) or []) for c in cols}
    if "lang" in values:
        if lang not in values["lang"]:
            sys.exit(f"error: run {spec['name']!r} has no lang={lang} copy (its lang values: "
                     f"{values['lang']}); give a run trained on {lang} text, or leave out the {lang}_ raters")
        values["lang"] = [lang]
    return [dict(zip(cols, combo)) for combo in itertools.product(*(values[c] for c in cols))] or [{}]


def split_combinations(combos: list[dict], args) -> tuple[list[dict], list[dict], str]:
    """(rating combinations, held-out ones, what holds out): a seeded third of them held out; a run
    with a single combination is held out by seeds alone."""
    if len(combos) < 2:
        return combos, combos, "seeds"
    shuffled = list(combos)
    random.Random(seed_of(args, "split", 0)).shuffle(shuffled)
    n_held = max(1, len(shuffled) // 3)
    return shuffled[n_held:], shuffled[:n_held], "combinations"


def heldout_chats(ws, spec: dict[str, Any], lang: str, limit: int) -> list:
    """Held-out shop text as the run's conversations: its dataset's test split (val when empty), of
    ``lang``'s records where it has a lang column; a chat-file run's val conversations."""
    from aigc import adapted
    from aigc.data.dataset import read_text_split

    if not spec.get("dataset"):
        chats = adapted.chats_of(ws, spec, ws.run_path(spec["name"]))[1]
    else:
        folder = ws.dataset_path(spec["dataset"])
        records = read_text_split(folder, "test") or read_text_split(folder, "val")
        chats = adapted.records_chats(spec, [r for r in records if r.cond.get("lang", lang) == lang])
    step = max(1, len(chats) // limit) if limit else 1
    return chats[::step][:limit or None]


def likelihood(gen, spec: dict[str, Any], chats: list) -> dict[str, float]:
    """Nats per token and bits per character of the held-out responses given their instructions (the
    likelihood part of ``aigc eval`` for an adapted run: :func:`aigc.evaluation.evaluate_adapted`)."""
    from aigc.pretrained.adapt import build_blocks
    from aigc.tasks import nll_sum

    ids, labels = build_blocks(gen.hf_tokenizer, chats, spec["adapt"]["block_size"])
    total, count = nll_sum(gen.model, ids[:, :-1], labels[:, 1:], batch_size=8)
    chars = sum(len(m["content"]) for chat in chats for m in chat if m["role"] == "assistant")
    return {"nll_per_token": round(total / max(1, count), 5),
            "bits_per_char": round(total / math.log(2) / max(1, chars), 5)}


def one_per_prompt(gen, held: list[dict], args) -> list[str]:
    """One sample for each held-out prompt: the draws of a combination in one group, the same seed
    for every model measured."""
    texts = []
    for i, cond in enumerate(held):
        count = len(range(i, args.heldout_prompts, len(held)))
        if count:
            texts += draw(gen, cond, count, seed_of(args, "heldout_one", i), args)
    return texts


def share(rater: Rater, texts: Sequence[str]) -> float | None:
    return round(sum(rater.likes(t) for t in texts) / len(texts), 4) if texts else None


# -- what each budget of ratings buys --------------------------------------------------------------


def reranked_share(reward, rater: Rater, heldout: list[dict], prompt_of: Callable[[dict], str]) -> float:
    """Share of held-out prompts whose candidate the reward model scores highest is liked (a blank
    candidate ranks last, as the server's judge ranks it)."""
    import numpy as np

    from aigc.feedback.store import learnable

    picks = []
    for h in heldout:
        texts = h["texts"]
        scores = np.full(len(texts), -np.inf)
        keep = [i for i, t in enumerate(texts) if learnable(t)]
        if keep:
            scores[keep] = reward.score([texts[i] for i in keep], prompt_of(h["cond"]))
        picks.append(texts[int(np.argmax(scores))])
    return share(rater, picks)


def tune_run(ws, parent: str, method: str, pairs: list[dict], name: str, ctx: dict, args,
             steps: int | None = None) -> dict[str, Any]:
    """Run ``name``: DPO or KTO from ``pairs`` on top of run ``parent`` (``aigc tune --pairs-file``),
    ``steps`` steps (default --tune-steps); what it learned and in how long."""
    from aigc import adapted

    pairs_file = ctx["scratch"] / f"{name}.jsonl"
    pairs_file.write_text("".join(json.dumps({"prompt": "", **p}, ensure_ascii=False) + "\n" for p in pairs),
                          encoding="utf-8")
    if ws.has_run(name):
        ws.delete_run(name)  # ours, kept by an earlier --keep-runs invocation
    overrides = {"max_steps": steps or args.tune_steps, **({"lr": args.tune_lr} if args.tune_lr else {})}
    t0 = time.perf_counter()
    guard = {} if args.max_drift is None else {"max_drift": args.max_drift}
    row = adapted.tune(ws, parent, method=method, beta=args.beta, name=name, pairs_file=str(pairs_file),
                       train_overrides=overrides, **guard)
    return {"steps": row["step"], "best_val_loss": row["best_val_loss"],
            "val_reward_accuracy": row["summary"].get("val_reward_accuracy"),
            "stop_reason": row["summary"].get("stop_reason"), "val_drift": row["summary"].get("val_drift"),
            "tune_s": round(time.perf_counter() - t0, 1)}


def measured(ws, name: str, ctx: dict, args, reward=None) -> dict[str, Any]:
    """Run ``name`` measured as the base is: its share of one sample per held-out prompt and the
    likelihood of held-out shop text against the base's; with ``reward``, also the share reranked
    by it among ``--rerank-candidates`` draws of this run (the held-out candidates' seeds)."""
    import aigc

    t0 = time.perf_counter()
    gen = aigc.load(name, workspace=ws)
    texts = one_per_prompt(gen, ctx["held"], args)
    fit = likelihood(gen, spec_of(ws, name), ctx["chats"])
    base = ctx["base_fit"]
    out = {"share": share(ctx["rater"], texts), **fit,
           "ppl_ratio": round(math.exp(fit["nll_per_token"] - base["nll_per_token"]), 4),
           "bpc_ratio": round(fit["bits_per_char"] / base["bits_per_char"], 4)}
    if reward is not None:
        heldout = [{"cond": h["cond"], "texts": draw(gen, h["cond"], args.rerank_candidates, h["seed"], args)}
                   for h in ctx["heldout"]]
        out["rerank_share"] = reranked_share(reward, ctx["rater"], heldout, ctx["prompt_of"])
        out["rerank_ceiling"] = share(ctx["rater"], [max(h["texts"], key=ctx["rater"].likes) for h in heldout])
    out.update(measure_s=round(time.perf_counter() - t0, 1), examples=texts[:2])
    del gen
    return out


def tuned(ws, policy: str, method: str, pairs: list[dict], ctx: dict, args) -> dict[str, Any]:
    """DPO or KTO from ``pairs`` on top of the policy, measured as the base is; the run is removed
    afterwards unless --keep-runs."""
    name = f"{policy}-{ctx['rater'].name}-{len(pairs)}-{method}"
    fit = tune_run(ws, policy, method, pairs, name, ctx, args)
    out = measured(ws, name, ctx, args)
    out = {"share": out.pop("share"), **out, **fit}
    if not args.keep_runs:
        ws.delete_run(name)
    return out


def round_pairs(gen, rater: Rater, combos: list[dict], want: int, k: int, args) -> tuple[list[dict], dict]:
    """Round ``k``'s ratings (k >= 1): up to ``want`` pairs among ``--candidates`` draws of ``gen``
    (the policy as tuned so far) for fresh prompts cycling over ``combos``; and what was drawn."""
    pool, pairs = rating_pool(gen, combos, [rater], args, need=want,
                              first_seed=SEED_OFFSETS["round_pool"] - SEED_OFFSETS["rating_pool"] + 100_000 * k)
    return pairs[rater.name][:want], {"prompts": len(pool),
                                      "pool_share": share(rater, [t for p in pool for t in p["texts"]])}


def rounds(ws, policy: str, rater: Rater, pairs: list[dict], budget: int, method: str, ctx: dict,
           args) -> dict[str, Any]:
    """(e): ``budget`` ratings in ``--rounds`` rounds, each rating the current policy's outputs and
    tuning it on them (``method``); each round's run measured one sample a prompt, reranked by the
    ratings so far, and by the likelihood of held-out shop text."""
    import aigc
    from aigc.feedback.reward import RewardModel

    reward, current, used, made = RewardModel(), policy, 0, []
    out: dict[str, Any] = {"budget": budget, "method": method, "rounds": []}
    t0 = time.perf_counter()
    for k in range(args.rounds):
        want = math.ceil((budget - used) / (args.rounds - k))
        if k == 0:
            got = pairs[:want]
            info = {"prompts": len(ctx["pool"]), "pool_share": share(rater, [t for p in ctx["pool"] for t in p["texts"]]),
                    "drawn_from": "the base"}
        else:
            gen = aigc.load(current, workspace=ws)
            got, info = round_pairs(gen, rater, ctx["rating_combos"], want, k, args)
            info["drawn_from"] = current
            del gen
        if len(got) < 2:
            out["rounds"].append({**info, "ratings": len(got), "stopped": f"{len(got)} pair(s): too few to tune on"})
            break
        for p in got:
            reward.add_pair(ctx["prompt_of"](p["cond"]), p["chosen"], p["rejected"])
        used += len(got)
        name = f"{policy}-{rater.name}-{budget}-{method}-round{k + 1}"
        fit = tune_run(ws, current, method, got, name, ctx, args, steps=round_steps(args))
        made.append(name)
        current = name
        after = measured(ws, current, ctx, args, reward=reward)
        out["rounds"].append({**info, "ratings": len(got), "ratings_so_far": used, **fit, **after})
        print(f"  {rater.name} {method} round {k + 1}: {len(got)} ratings (the rated outputs' share "
              f"{info['pool_share']}), tuned in {fit['tune_s']} s ({fit['steps']} steps"
              f"{', stopped at the drift limit' if fit.get('stop_reason') == 'drift' else ''}): share {after['share']}, reranked "
              f"{after['rerank_share']}, perplexity x{after['ppl_ratio']}", file=sys.stderr)
    out["ratings"] = used
    last = next((r for r in reversed(out["rounds"]) if "share" in r), None)
    if last is not None:
        out.update({k: last[k] for k in ("share", "rerank_share", "rerank_ceiling", "ppl_ratio", "bpc_ratio")})
    out["elapsed_s"] = round(time.perf_counter() - t0, 1)
    if not args.keep_runs:
        for name in made:
            ws.delete_run(name)
    return out


def rater_report(ws, policy: str, rater: Rater, pairs: list[dict], ctx: dict, args) -> dict[str, Any]:
    from aigc.feedback.reward import RewardModel

    heldout = ctx["heldout"]
    report: dict[str, Any] = {
        "lang": rater.lang, "rule": rater.rule, "policy": policy,
        "base_share": share(rater, ctx["base_texts"]),
        "base_share_all_candidates": share(rater, [t for h in heldout for t in h["texts"]]),
        "rerank_ceiling": share(rater, [max(h["texts"], key=rater.likes) for h in heldout]),
        "pool_share": share(rater, [t for p in ctx["pool"] for t in p["texts"]]),
        "pairs_available": len(pairs), "example_pairs": pairs[:2], "budgets": [],
    }
    reward, learned, previous = RewardModel(), 0, None

    prompt_of = ctx["prompt_of"]
    for budget in args.budgets:
        used = min(budget, len(pairs))
        entry: dict[str, Any] = {"budget": budget, "ratings": used}
        if used == previous:
            entry["skipped"] = (f"only {len(pairs)} pairs in {len(ctx['pool'])} rated prompts, all used by "
                                "the budget before")
            report["budgets"].append(entry)
            continue
        previous = used
        if used < 2:
            entry["skipped"] = (f"{used} pair(s) in {len(ctx['pool'])} prompts of {args.candidates} "
                                "candidates: the policy hardly ever (or always) pleases this rater; "
                                "DPO needs 2")
            report["budgets"].append(entry)
            continue
        for p in pairs[learned:used]:
            reward.add_pair(prompt_of(p["cond"]), p["chosen"], p["rejected"])
        learned = used
        t0 = time.perf_counter()
        entry["rerank_share"] = reranked_share(reward, rater, heldout, prompt_of)
        entry["rerank_s"] = round(time.perf_counter() - t0, 2)
        for method in tunings_asked(args):
            entry[method] = tuned(ws, policy, method, pairs[:used], {**ctx, "rater": rater}, args)
            print(f"  {rater.name} {used} ratings {method}: share {entry[method]['share']}, "
                  f"perplexity x{entry[method]['ppl_ratio']}", file=sys.stderr)
        report["budgets"].append(entry)
    if "rounds" in args.methods and target(report)["met"] and not args.rounds_always:
        report["rounds_skipped"] = "another method meets the target (--rounds-always measures rounds anyway)"
    elif "rounds" in args.methods:
        ctx = {**ctx, "rater": rater}
        report["rounds"] = [rounds(ws, policy, rater, pairs, b, m, ctx, args)
                            for m in args.round_method for b in args.round_budgets]
    return report


def target(report: dict[str, Any]) -> dict[str, Any]:
    """Met when some method reaches the share with <= 200 ratings, a tuned one within 10 % of the
    base's perplexity."""
    ways = []
    for entry in report["budgets"]:
        if "skipped" in entry or entry["ratings"] > MAX_RATINGS:
            continue
        if entry["rerank_share"] >= SHARE_TARGET:
            ways.append({"method": "rerank", "ratings": entry["ratings"], "share": entry["rerank_share"]})
        for method in ("dpo", "kto"):
            m = entry.get(method)
            if m is not None and m["share"] >= SHARE_TARGET and m["ppl_ratio"] <= 1 + PPL_TOLERANCE:
                ways.append({"method": method, "ratings": entry["ratings"], "share": m["share"],
                             "ppl_ratio": m["ppl_ratio"]})
    for r in report.get("rounds", []):
        for k, rnd in enumerate(r["rounds"], start=1):  # after each round: its run, the ratings so far
            if "share" not in rnd or rnd["ratings_so_far"] > MAX_RATINGS or rnd["ppl_ratio"] > 1 + PPL_TOLERANCE:
                continue
            for how, key in (("", "share"), (" + rerank", "rerank_share")):
                if rnd[key] >= SHARE_TARGET:
                    ways.append({"method": f"{k} round{'s' if k > 1 else ''} of {r['method']}{how}",
                                 "ratings": rnd["ratings_so_far"], "share": rnd[key], "ppl_ratio": rnd["ppl_ratio"]})
    return {"met": bool(ways), "fewest_ratings": min((w["ratings"] for w in ways), default=None), "by": ways,
            # a rater the policy already pleases tests little: the figures say so beside the verdict
            "base_meets_already": report["base_share"] >= SHARE_TARGET}


# -- the run ---------------------------------------------------------------------------------------


def tunings_asked(args) -> list[str]:
    """The tunings each budget of ratings is measured with (--methods; reranking always is)."""
    return [m for m in ("dpo", "kto") if m in args.methods]


def round_steps(args) -> int:
    """Each round's tuning steps: --tune-steps in all, shared by the rounds, so the rounds and the
    single tunings of (c) and (d) take the same steps over the same number of ratings."""
    return math.ceil(args.tune_steps / args.rounds)


def round_budgets(args) -> list[int]:
    return args.round_budgets if "rounds" in args.methods else []


def expected_seconds(args, langs: dict[str, list[Rater]]) -> tuple[float, float]:
    """(expected, at most) seconds, from the constants above; the most assumes every rater's taste is
    so rare that the rating pool reaches --max-rating-prompts."""
    tokens = min(args.max_new_tokens, TOKENS_PER_SAMPLE)

    def decode_s(groups: int, rows: int) -> float:
        return groups * tokens * rows / (STREAM_TOK_S * rows ** 0.7)

    speed = 2 / max(1, args.threads) ** 0.8  # the constants are for 2 threads
    expected = most = 0.0
    for lang, raters in langs.items():
        held = args.heldout_prompts
        texts = min(args.ppl_records or HELDOUT_TEXTS, HELDOUT_TEXTS)
        # one model's held-out samples (6 combinations held out, a group each) and likelihood
        per_model = decode_s(min(held, 6), max(1, held // 6)) + PPL_S_PER_TEXT * texts
        groups = min(args.max_rating_prompts, math.ceil(max(args.budgets) / args.pairs_per_prompt))
        tunings = len(raters) * len(args.budgets) * len(tunings_asked(args))
        work = (per_model + decode_s(held, args.rerank_candidates) + decode_s(groups, args.candidates)
                + tunings * (args.tune_steps * TUNE_STEP_S + TUNE_OVERHEAD_S + per_model))
        for budget in round_budgets(args):  # each round: rate the tuned run's draws, tune; then measure
            per_round = decode_s(math.ceil(budget / args.rounds / args.pairs_per_prompt), args.candidates)
            work += len(raters) * len(args.round_method) * args.rounds * (
                per_round + round_steps(args) * TUNE_STEP_S + TUNE_OVERHEAD_S + per_model
                + decode_s(held, args.rerank_candidates))
        setup = 0.0 if given_run(args, lang) else args.sft_budget + SFT_OVERHEAD_S * speed
        expected += setup + work * BASE_COST[lang] * speed
        most += decode_s(args.max_rating_prompts - groups, args.candidates) * BASE_COST[lang] * speed
    return expected, expected + most


def measure_language(ws, lang: str, raters: list[Rater], args, scratch: Path) -> tuple[dict, dict]:
    """(the policy's record, each rater's report) for one language."""
    import aigc

    t0 = time.perf_counter()
    policy, how = policy_run(ws, lang, args, scratch)
    if policy is None:
        print(f"{lang}: skipped: {how}", file=sys.stderr)
        return {"skipped": how}, {r.name: {"lang": lang, "rule": r.rule, "skipped": how} for r in raters}
    record: dict[str, Any] = {"run": policy, "how": how, "setup_s": round(time.perf_counter() - t0, 1)}
    spec = spec_of(ws, policy)
    record.update(base=spec["base"], template=spec["data"].get("template"),
                  sft_steps=ws.get_run(policy)["step"])
    rating_combos, held, held_by = split_combinations(combinations(spec, lang), args)
    record.update(rating_combinations=rating_combos, heldout_combinations=held, heldout_by=held_by)
    gen = aigc.load(policy, workspace=ws)
    chats = heldout_chats(ws, spec, lang, args.ppl_records)

    t0 = time.perf_counter()
    base_fit = likelihood(gen, spec, chats)
    record.update(heldout_texts=len(chats), base_likelihood=base_fit,
                  ppl_s=round(time.perf_counter() - t0, 1))
    t0 = time.perf_counter()
    pool, pairs = rating_pool(gen, rating_combos, raters, args)
    record.update(rating_prompts=len(pool), rating_candidates=sum(len(p["texts"]) for p in pool),
                  rating_pool_s=round(time.perf_counter() - t0, 1))
    t0 = time.perf_counter()
    heldout = [{"cond": held[j % len(held)], "seed": seed_of(args, "heldout_candidates", j)}
               for j in range(args.heldout_prompts)]
    for h in heldout:
        h["texts"] = draw(gen, h["cond"], args.rerank_candidates, h["seed"], args)
    base_texts = one_per_prompt(gen, held, args)
    record.update(heldout_s=round(time.perf_counter() - t0, 1), examples=base_texts[:3])
    print(f"{lang}: policy {policy} ({how}); {len(pool)} rating prompts in {record['rating_pool_s']} s, "
          f"held-out draws in {record['heldout_s']} s", file=sys.stderr)
    ctx = {"gen": gen, "held": held, "heldout": heldout, "base_texts": base_texts, "pool": pool,
           "chats": chats, "base_fit": base_fit, "scratch": scratch, "rating_combos": rating_combos,
           "prompt_of": lambda cond: gen.instruction("", cond or None)}
    if args.save_texts:  # what was rated and what reranking picks from, to compare reward models offline
        from aigc.workspace import write_json_atomic

        args.save_texts.mkdir(parents=True, exist_ok=True)
        write_json_atomic(args.save_texts / f"feedback_texts_{lang}.json", {
            "policy": policy, "settings": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
            "pool": pool, "heldout": heldout, "base_texts": base_texts,
            "pairs": {r.name: pairs[r.name] for r in raters}})
    reports = {}
    for r in raters:
        reports[r.name] = rater_report(ws, policy, r, pairs[r.name], ctx, args)
        reports[r.name]["base_likelihood"] = base_fit
    return record, reports


def _fmt(value: float | None, width: int = 6) -> str:
    return f"{value:>{width}.2f}" if isinstance(value, (int, float)) else f"{'-':>{width}}"


def print_table(reports: dict[str, dict], targets: dict[str, dict], args) -> None:
    print(f"feedback: share of held-out outputs each simulated rater likes (base = the SFT policy, rerank = "
          f"best of {args.rerank_candidates} by the reward model, DPO/KTO = tuned {args.tune_steps} steps); "
          "ppl = perplexity of held-out shop text relative to the base")
    print(f"{'rater':<14} {'ratings':>7} {'base':>6} {'ceil':>6} {'rerank':>6} {'DPO':>6} {'KTO':>6} "
          f"{'ppl DPO':>7} {'ppl KTO':>7}")
    for name, rep in reports.items():
        if "skipped" in rep:
            print(f"{name:<14} skipped: {rep['skipped']}")
            continue
        for e in rep["budgets"]:
            if "skipped" in e:
                print(f"{name:<14} {e['budget']:>7} {_fmt(rep['base_share'])} {_fmt(rep['rerank_ceiling'])} "
                      f"skipped: {e['skipped']}")
                continue
            dpo, kto = e.get("dpo", {}), e.get("kto", {})  # absent: not asked for (--methods)
            print(f"{name:<14} {e['ratings']:>7} {_fmt(rep['base_share'])} {_fmt(rep['rerank_ceiling'])} "
                  f"{_fmt(e['rerank_share'])} {_fmt(dpo.get('share'))} {_fmt(kto.get('share'))} "
                  f"{_fmt(dpo.get('ppl_ratio'), 7)} {_fmt(kto.get('ppl_ratio'), 7)}")
    for name, rep in reports.items():
        if rep.get("rounds_skipped"):
            print(f"{name:<14} rounds: skipped: {rep['rounds_skipped']}")
        for r in rep.get("rounds", []):
            if "share" not in r:
                print(f"{name:<14} rounds at {r['budget']}: stopped: {r['rounds'][-1].get('stopped')}")
                continue
            print(f"{name:<14} rounds of {r['method']} to {r['budget']} ratings (each: the ratings, the rated "
                  "outputs' share; then its run's share, reranked, ceiling, perplexity):")
            for k, x in enumerate(r["rounds"], start=1):
                if "share" not in x:
                    print(f"{'':<14}   round {k}: {x['ratings']} ratings: stopped: {x.get('stopped')}")
                    continue
                print(f"{'':<14}   round {k}: {x['ratings']:>3} ({_fmt(x['pool_share']).strip()}), "
                      f"{x['ratings_so_far']:>3} so far: share {_fmt(x['share']).strip()}, reranked "
                      f"{_fmt(x['rerank_share']).strip()} (ceiling {_fmt(x['rerank_ceiling']).strip()}), "
                      f"ppl x{x['ppl_ratio']:.2f}")
    print(f"target: share >= {SHARE_TARGET} with <= {MAX_RATINGS} ratings, perplexity within "
          f"{PPL_TOLERANCE:.0%} of the base")
    for name, t in targets.items():
        if t.get("skipped"):
            verdict = "skipped"
        elif t["met"]:
            verdict = "met: " + ", ".join(f"{w['method']} at {w['ratings']}" for w in t["by"])
        else:
            verdict = "not met"
        if t.get("base_meets_already"):
            verdict += " (the base already does: this rater tests little)"
        print(f"  {name:<14} {verdict}")


def _ints(values: list[str]) -> list[int]:
    return [int(v) for item in values for v in item.split(",") if v]


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--raters", nargs="+", choices=sorted(RATERS), default=list(RATERS), metavar="RATER",
                    help=f"some of {', '.join(RATERS)} (default: all; Chinese ones need --gemma)")
    ap.add_argument("--budgets", nargs="+", default=["20", "50", "200"],
                    help="ratings (pairs) per budget, e.g. 20 50 200 or 20,50,200")
    ap.add_argument("--candidates", type=int, default=8, help="candidates drawn per rating prompt")
    ap.add_argument("--rerank-candidates", type=int, default=8, help="N: reranking picks the best of N draws")
    ap.add_argument("--heldout-prompts", type=int, default=48, help="held-out draws a model is measured on")
    ap.add_argument("--tune-steps", type=int, default=60, help="DPO / KTO steps (batch 4)")
    ap.add_argument("--tune-lr", type=float, default=None, help="DPO / KTO peak LR (default: aigc tune's)")
    ap.add_argument("--beta", type=float, default=0.1, help="DPO / KTO beta")
    ap.add_argument("--max-drift", type=float, default=None,
                    help="tune's drift guard: held-out perplexity limit over the policy (default: aigc tune's; "
                         "0: none)")
    ap.add_argument("--temperature", type=float, default=0.9)
    ap.add_argument("--max-new-tokens", type=int, default=96)
    ap.add_argument("--pairs-per-prompt", type=int, default=4, help="at most this many ratings a prompt")
    ap.add_argument("--max-rating-prompts", type=int, default=80, help="the rating pool's prompts, at most")
    ap.add_argument("--ppl-records", type=int, default=0, help="held-out shop texts scored (0: all)")
    ap.add_argument("--sft-budget", type=float, default=120.0, help="seconds of LoRA SFT for a new policy")
    ap.add_argument("--run", default=None, help="an English LoRA run to use as the policy (no SFT)")
    ap.add_argument("--run-zh", default=None, help="a Chinese LoRA run to use as the policy (no SFT)")
    ap.add_argument("--gemma", action="store_true",
                    help="a Chinese policy on Gemma 3 270M: you accept https://ai.google.dev/gemma/terms")
    ap.add_argument("--workspace", type=Path, default=None,
                    help="the workspace, kept (its policy is reused); default: a temporary one")
    ap.add_argument("--methods", nargs="+", choices=METHODS, default=list(METHODS),
                    help="what each budget of ratings is measured with (default: all); reranking always is, "
                         "so `--methods rerank` skips the DPO and KTO tunings (minutes each)")
    ap.add_argument("--rounds", type=int, default=3, help="(e): rounds a budget's ratings come in")
    ap.add_argument("--round-budgets", nargs="+", default=["200"],
                    help="(e): the budgets measured in rounds (each costs --rounds tunings a rater)")
    ap.add_argument("--round-method", nargs="+", choices=("dpo", "kto"), default=["dpo"],
                    help="(e): each round's tuning (several: each measured in its own rounds)")
    ap.add_argument("--rounds-always", action="store_true",
                    help="(e) for every rater; by default a rater whose target is met already skips it")
    ap.add_argument("--save-texts", type=Path, default=None, metavar="DIR",
                    help="write each language's rating pool, rated pairs and held-out candidates to "
                         "DIR/feedback_texts_<lang>.json")
    ap.add_argument("--keep-runs", action="store_true", help="keep the tuned runs (each exports ~0.5 GB)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out-name", default="feedback")
    args = ap.parse_args(argv)
    for flag in ("budgets", "round_budgets"):
        try:
            setattr(args, flag, sorted(set(_ints(getattr(args, flag)))))
        except ValueError:
            ap.error(f"--{flag.replace('_', '-')} takes whole numbers, e.g. 20 50 200, got "
                     f"{' '.join(getattr(args, flag))}")
    for flag in ("threads", "rounds", "candidates", "rerank_candidates", "heldout_prompts", "tune_steps",
                 "max_new_tokens", "pairs_per_prompt", "max_rating_prompts"):
        if getattr(args, flag) < 1:
            ap.error(f"--{flag.replace('_', '-')} must be >= 1, got {getattr(args, flag)}")
    if not args.budgets or args.budgets[0] < 1:
        ap.error(f"--budgets must be whole numbers >= 1, got {args.budgets}")
    if not args.round_budgets or args.round_budgets[0] < 2 * args.rounds:
        ap.error(f"--round-budgets must be at least 2 ratings a round ({2 * args.rounds}), got {args.round_budgets}")
    if args.candidates < 2:
        ap.error(f"--candidates must be >= 2 (a rating pairs two of a prompt's), got {args.candidates}")
    if args.ppl_records < 0 or args.sft_budget <= 0 or args.temperature <= 0 or args.beta <= 0:
        ap.error("--ppl-records must be >= 0, and --sft-budget, --temperature and --beta > 0")
    if not re.fullmatch(r"[A-Za-z0-9._-]+", args.out_name):
        ap.error(f"--out-name must be a file name (letters, digits, . _ -), got {args.out_name!r}")
    return args


def main() -> None:
    args = parse_args()
    from aigc import adapted
    from aigc.errors import AigcError
    from aigc.runtime import configure_threads

    threads = configure_threads(args.threads)
    langs: dict[str, list[Rater]] = {}
    for name in args.raters:
        langs.setdefault(RATERS[name].lang, []).append(RATERS[name])
    # Chinese without --gemma (or --run-zh) is skipped unless the workspace has Gemma already
    likely = {k: v for k, v in langs.items() if k == "en" or args.gemma or args.run_zh}
    expected, most = expected_seconds(args, likely)
    print(f"expected time: ~{expected / 60:.0f} min on {threads} thread(s) (at most ~{most / 60:.0f} min "
          f"when a taste is so rare that the rating pool reaches {args.max_rating_prompts} prompts); "
          f"{len(args.raters)} rater(s) x {len(args.budgets)} budget(s) x {len(tunings_asked(args))} tunings of "
          f"{args.tune_steps} steps",
          flush=True)
    t_start = time.perf_counter()
    policies: dict[str, Any] = {}
    reports: dict[str, dict] = {}
    import aigc
    from aigc.feedback.reward import RewardConfig
    from aigc.training import TrainConfig

    with tempfile.TemporaryDirectory(prefix="aigc-feedback-") as tmp:
        root = args.workspace or Path(tmp) / "workspace"
        scratch = Path(tmp) / "scratch"
        scratch.mkdir()
        ws = aigc.open_workspace(root)
        try:
            for lang, raters in langs.items():
                policies[lang], lang_reports = measure_language(ws, lang, raters, args, scratch)
                reports.update(lang_reports)
        except AigcError as e:
            sys.exit(f"error: {e}")
    targets = {name: {"skipped": rep["skipped"]} if "skipped" in rep else target(rep)
               for name, rep in reports.items()}
    elapsed = time.perf_counter() - t_start
    print_table(reports, targets, args)
    settings = {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()}
    path = write_result(args.out_name, {
        "settings": {**settings, "threads": threads},
        "tune_defaults": {**adapted.TUNE_DEFAULTS, "max_drift": adapted.TUNE_MAX_DRIFT},
        "seeds": {"offsets": SEED_OFFSETS, "seed": args.seed, "reward_model": RewardConfig().seed,
                  "sft_and_tune": TrainConfig().seed,
                  "rule": "draw seed = seed * 10^7 + offset + index"},
        "target": {"share": SHARE_TARGET, "max_ratings": MAX_RATINGS, "ppl_within": PPL_TOLERANCE},
        "expected_s": round(expected), "elapsed_s": round(elapsed, 1),
        "policies": policies, "raters": reports, "targets": targets,
    })
    print(f"wrote {path.relative_to(HERE.parent)} in {elapsed / 60:.1f} min (expected ~{expected / 60:.0f})")


if __name__ == "__main__":
    main()
