"""A shop with known tastes, for the recommendation benchmark and tests: a catalogue from the bundled
shop corpus and users whose interactions follow tastes the generator knows.

    items, interactions, truth = generate(n_users=2000, n_items=1000, seed=0)

**Items** are rows of ``resources/shop_copy.csv`` (3,600 product texts, 6 categories x 3 tones x
zh/en): ``item`` (``sku-00001``...), ``title`` (the product's name where a pattern of the corpus
finds it, e.g. "the Indigo Cushion Cover", "产品名称：黄瓜保湿喷雾", else the first words),
``description`` (the text), ``category`` and ``tags`` (the tone). Several items share one product
in other words, tones or the other language, as listings in a real shop do.

**Users** have tastes the text can show: weights over categories (Dirichlet 0.3: most like one or
two), over tones (Dirichlet 1) and languages (Beta 0.5: most read one), plus a latent vector that
pairs with a latent vector of each item (what the text does not say: the photo, the price). A
user's affinity for an item is ``3 log p(category) + 1 log p(tone) + 2 log p(lang) + 1.5 z_u.z_i /
sqrt(d) + 1 log popularity`` (popularity lognormal, sigma 1); each visit picks an item from the
softmax of affinities over the items on sale then and not yet visited by that user.

**Time**: ``days`` days; each user makes ``1 + Poisson(events_per_user - 1)`` visits at uniform
times. A visit is a ``view``, then ``click`` (p 0.5), ``cart`` (p 0.4 after a click) and ``buy``
(p 0.5 after a cart), seconds apart. **Cold-start items** (``cold_fraction`` of the catalogue) go
on sale at a time uniform in the last ``new_span`` of the period, so every interaction with them is
after ``truth["new_from"]``: a benchmark that trains on what came before has their text and nothing
else. Everything is drawn from one ``numpy`` generator seeded by ``seed``.
"""

from __future__ import annotations

import re
from collections import Counter
from datetime import datetime, timedelta, timezone
from importlib import resources
from typing import Any

import numpy as np
import pandas as pd

from aigc.errors import InvalidInput

CORPUS_ROWS = 3600
LATENT = 8  # dimensions of the taste the text does not show
START = datetime(2024, 1, 1, tzinfo=timezone.utc)
# affinity = sum of weight x term (see the module docstring)
W_CATEGORY, W_TONE, W_LANG, W_LATENT, W_POP = 3.0, 1.0, 2.0, 1.5, 1.0
FUNNEL = (("click", 0.5), ("cart", 0.4), ("buy", 0.5))  # each step's probability after the one before

_EN_NAME = re.compile(r"\b[Tt]he\s+((?:(?:[A-Z][\w'-]*|&)\s+){0,5}[A-Z][\w'-]*)")
_ZH_NAME = tuple(re.compile(p) for p in (
    r"产品名称：([^。，；！？\s]+)", r"^([^：:，。！？；\s]{2,12})规格：", r"^([^：:，。！？；\s]{2,12})，采用",
    r"这款([^，。！？；\s]{2,12}?)超", r"；([^，。！？；\s]{2,12})便是如此", r"谁懂啊，([^，。！？；\s]{2,12}?)也太",
    r"^([^：:，。！？；\s]{2,12})以", r"认识一下[^：:]*[：:]([^！。，]{2,12})！"))
_BRAND = {"Lumen"}  # "Lumen & Leaf", the shop, not a product


def corpus() -> pd.DataFrame:
    """The bundled shop corpus: ``text``, ``category``, ``tone``, ``lang``."""
    with resources.files("aigc.resources").joinpath("shop_copy.csv").open("r", encoding="utf-8") as fh:
        return pd.read_csv(fh)


def product_names(texts: list[str], langs: list[str]) -> list[str]:
    """Each text's product name: the longest name that the corpus's patterns find in two texts or
    more and that this text holds; else its first words (6 English words, or the first clause of
    Chinese up to 12 characters)."""
    names: dict[str, Counter] = {"en": Counter(), "zh": Counter()}
    for text, lang in zip(texts, langs):
        if lang == "en":
            names["en"].update(m.group(1) for m in _EN_NAME.finditer(text) if m.group(1) not in _BRAND)
        else:
            names["zh"].update(m.group(1) for p in _ZH_NAME if (m := p.search(text)))
    known = {lang: sorted((n for n, c in names[lang].items() if c >= 2), key=len, reverse=True) for lang in names}
    out = []
    for text, lang in zip(texts, langs):
        name = next((n for n in known["zh" if lang == "zh" else "en"] if n in text), None)
        if name is None:
            if lang == "zh":
                name = re.split(r"[，。！？；：,.!?;:]", text, maxsplit=1)[0][:12]
            else:
                name = " ".join(re.split(r"[.!?;:]", text, maxsplit=1)[0].split()[:6])
        out.append(name)
    return out


def _iso(t: float) -> str:
    return (START + timedelta(seconds=float(t))).strftime("%Y-%m-%dT%H:%M:%SZ")


def generate(n_users: int = 2000, n_items: int = 1000, *, seed: int = 0, cold_fraction: float = 0.1,
             days: int = 120, new_span: float = 0.2, events_per_user: float = 14.0
             ) -> tuple[pd.DataFrame, pd.DataFrame, dict[str, Any]]:
    """``(items, interactions, truth)``: see the module docstring. ``interactions`` has ``user``,
    ``item``, ``event``, ``timestamp`` (ISO 8601, UTC) sorted by time; ``truth`` holds ``new_from``
    (ISO: every interaction with a cold-start item is at or after it), ``cold_items``, each user's
    tastes (``users``: a frame of ``user``, ``categories``, ``tone``, ``lang``) and the parameters."""
    if not 1 <= n_items <= CORPUS_ROWS:
        raise InvalidInput(f"n_items={n_items}: the shop corpus has {CORPUS_ROWS} texts: pass 1 to {CORPUS_ROWS}")
    if n_users < 1:
        raise InvalidInput(f"n_users={n_users}: pass at least 1")
    if not 0 <= cold_fraction < 1 or not 0 < new_span < 1:
        raise InvalidInput(f"cold_fraction={cold_fraction}, new_span={new_span}: pass 0 <= cold_fraction < 1 and "
                           "0 < new_span < 1")
    rng = np.random.default_rng(seed)
    full = corpus()
    full["title"] = product_names(full["text"].tolist(), full["lang"].tolist())  # a row's title whatever is drawn
    rows = full.iloc[np.sort(rng.choice(CORPUS_ROWS, n_items, replace=False))].reset_index(drop=True)
    cats, tones = sorted(full["category"].unique()), ["elegant", "playful", "practical"]
    items = pd.DataFrame({"item": [f"sku-{i + 1:05d}" for i in range(n_items)],
                          "title": rows["title"], "description": rows["text"],
                          "category": rows["category"], "tags": rows["tone"]})
    c_i = rows["category"].map({c: k for k, c in enumerate(cats)}).to_numpy()
    t_i = rows["tone"].map({t: k for k, t in enumerate(tones)}).to_numpy()
    l_i = (rows["lang"] == "zh").to_numpy().astype(int)
    z_i = rng.standard_normal((n_items, LATENT))
    log_pop = rng.normal(0.0, 1.0, n_items)

    span = days * 86400.0
    new_from = span * (1 - new_span)
    n_cold = int(round(cold_fraction * n_items))
    cold = np.zeros(n_items, dtype=bool)
    cold[rng.choice(n_items, n_cold, replace=False)] = True
    release = np.where(cold, rng.uniform(new_from, span, n_items), 0.0)

    p_cat = rng.dirichlet(np.full(len(cats), 0.3), n_users)  # (U, C)
    p_tone = rng.dirichlet(np.ones(len(tones)), n_users)  # (U, 3)
    p_zh = rng.beta(0.5, 0.5, n_users)
    p_lang = np.stack([1 - p_zh, p_zh], 1)  # (U, 2): en, zh
    z_u = rng.standard_normal((n_users, LATENT))
    eps = 1e-3
    affinity = (W_CATEGORY * np.log(p_cat + eps)[:, c_i] + W_TONE * np.log(p_tone + eps)[:, t_i]
                + W_LANG * np.log(p_lang + eps)[:, l_i] + W_LATENT * z_u @ z_i.T / np.sqrt(LATENT)
                + W_POP * log_pop[None, :])  # (U, I)

    records: list[tuple[int, int, str, float]] = []
    for u in range(n_users):
        visits = np.sort(rng.uniform(0, span, 1 + rng.poisson(max(events_per_user - 1, 0))))
        seen = np.zeros(n_items, dtype=bool)
        for t in visits:
            open_ = (release <= t) & ~seen
            if not open_.any():
                continue
            a = np.where(open_, affinity[u], -np.inf)
            p = np.exp(a - a.max())
            i = int(rng.choice(n_items, p=p / p.sum()))
            seen[i] = True
            records.append((u, i, "view", t))
            step = t
            for event, prob in FUNNEL:
                if rng.random() >= prob:
                    break
                step += rng.uniform(5, 600)
                records.append((u, i, event, step))
    records.sort(key=lambda r: r[3])
    interactions = pd.DataFrame({"user": [f"u{r[0] + 1:05d}" for r in records],
                                 "item": [items["item"][r[1]] for r in records],
                                 "event": [r[2] for r in records],
                                 "timestamp": [_iso(r[3]) for r in records]})
    users = pd.DataFrame({"user": [f"u{u + 1:05d}" for u in range(n_users)],
                          "categories": [[cats[k] for k in np.argsort(-p_cat[u])[:2]] for u in range(n_users)],
                          "tone": [tones[k] for k in p_tone.argmax(1)],
                          "lang": np.where(p_zh > 0.5, "zh", "en")})
    truth = {"new_from": _iso(new_from), "cold_items": items["item"][cold].tolist(), "users": users,
             "params": {"n_users": n_users, "n_items": n_items, "seed": seed, "cold_fraction": cold_fraction,
                        "days": days, "new_span": new_span, "events_per_user": events_per_user,
                        "weights": {"category": W_CATEGORY, "tone": W_TONE, "lang": W_LANG, "latent": W_LATENT,
                                    "popularity": W_POP}}}
    return items, interactions, truth
