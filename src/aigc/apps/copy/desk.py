"""The copywriting desk: candidates for a product, each with its checks, ranked; a catalogue in batch.

For one product (``{attribute: value}``), a brief (audience, tone, channel, length) and the brand
rules (:mod:`aigc.apps.copy.rules`), :class:`Desk` asks an instruct model (a pretrained base or an
adapted run, :func:`aigc.apps.instruct_model`; for Chinese, the workspace's Gemma base when it has
one, since the bundled SmolLM2 writes English) for ``n * pool`` drafts in one batch, after one worked
example in the product's language (:data:`EXAMPLES`), then for each draft:

- **cleans** it (quotes, "Here is..." preambles, Markdown marks) and **fits** it to the channel's
  length at a sentence end;
- **repairs** omissions: attributes the draft does not state are added as one spec sentence in
  the product's language ("材质：亚麻，颜色：米白。" / "Material: linen. Color: off-white.");
  the candidate says so (``repaired``: the keys added);
- **checks** it: the language of the model's own words (a product in Chinese wants Chinese copy),
  attribute coverage and invented values (:mod:`aigc.apps.copy.checks`; the
  lexicon of a key grows with the values the catalogue has for it), the brand rules and the
  workspace policy's terms with their spans, length, the output rail's safety verdict;
- **scores** it: the model's mean log-probability of the text given the prompt, and the desk's
  reward model (issue 12's :class:`~aigc.feedback.reward.RewardModel`, learned from the variants
  people chose, :mod:`aigc.apps.copy.experiments`).

Candidates are ranked by rules passed (no violation, no invented value, safe) -> the coverage of the
model's own words (before repair: a draft that is about the product beats one that a spec sentence
rescues) -> coverage -> model score -> feedback score, near-duplicates dropped, and the ``n`` best returned, each with its AIGC
label. :func:`template_copy` is the fill-in baseline the benchmark measures beside the desk.
"""

from __future__ import annotations

import hashlib
import math
import re
import time
import unicodedata
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from aigc.apps import DEFAULT_MODEL, chat_texts, instruct_model, lang_of
from aigc.errors import InvalidInput
from aigc.workspace import Workspace

CHANNELS = ("title", "detail", "social", "ad")
STOPS = ("\n\n", "User:", "Assistant:")  # copy is one paragraph; a base model may start the next turn
ZH_MODEL = "gemma-3-270m"  # used for Chinese copy when the workspace has it (its terms accepted)
BRIEF_KEYS = ("audience", "tone", "channel", "length")
MAX_ATTRIBUTES = 40
POOL = 3  # drafts per candidate asked for
_CHANNEL_TEXT = {
    "en": {"title": "a product title", "detail": "a product detail description", "social": "a social-media post",
           "ad": "a short advertising line"},
    "zh": {"title": "商品标题", "detail": "商品详情文案", "social": "社交媒体文案", "ad": "广告语"},
}


def check_product(product: Any) -> dict[str, str]:
    """The attributes of a product as ``{key: value}`` strings; lists become comma-joined values."""
    if not isinstance(product, Mapping) or not product:
        raise InvalidInput("a product is an object of attributes, e.g. {\"类型\": \"上衣\", \"材质\": \"亚麻\"}")
    out: dict[str, str] = {}
    for k, v in product.items():
        if v is None or (isinstance(v, float) and math.isnan(v)):
            continue
        if isinstance(v, (list, tuple)):
            v = ", ".join(str(x) for x in v if str(x).strip())
        if isinstance(v, bool):
            v = "yes" if v else "no"
        if not isinstance(v, (str, int, float)):
            raise InvalidInput(f"attribute {k!r} has a {type(v).__name__} value: give text or a number")
        v = str(v).strip()
        if v:
            out[str(k).strip()] = v
    if not out:
        raise InvalidInput(f"the product's attributes have no values ({', '.join(map(str, product))}): "
                           "give at least one attribute with a value")
    if len(out) > MAX_ATTRIBUTES:
        raise InvalidInput(f"the product has {len(out)} attributes; at most {MAX_ATTRIBUTES}")
    return out


def check_brief(brief: Any, rules: Any) -> dict[str, Any]:
    brief = dict(brief or {})
    unknown = sorted(set(brief) - set(BRIEF_KEYS))
    if unknown:
        raise InvalidInput(f"unknown brief field {unknown[0]!r}: a brief has {', '.join(BRIEF_KEYS)}")
    channel = brief.get("channel") or "detail"
    if channel not in rules.length:
        raise InvalidInput(f"unknown channel {channel!r}: the brand rules have {', '.join(rules.length)}")
    brief["channel"] = channel
    return brief


def product_lang(attributes: Mapping[str, str]) -> str:
    return lang_of(" ".join(f"{k} {v}" for k, v in attributes.items()))


def spec_sentence(attributes: Mapping[str, str], keys: Sequence[str], lang: str, budget: int | None = None) -> str:
    """The attributes ``keys`` as one spec sentence in ``lang`` ("材质：亚麻，颜色：米白。"); when that
    would take more than ``budget`` characters, their values alone ("亚麻 · 米白")."""
    if lang == "zh":
        keyed = "，".join(f"{k}：{attributes[k]}" for k in keys) + "。"
    else:
        keyed = " ".join(f"{k[:1].upper()}{k[1:]}: {attributes[k]}." for k in keys)
    if budget is None or len(keyed) <= budget:
        return keyed
    return " · ".join(attributes[k] for k in keys)


def template_copy(attributes: Mapping[str, str], brief: Mapping[str, Any] | None = None) -> str:
    """The fill-in baseline: every attribute in a fixed frame, the same for every product."""
    lang = product_lang(attributes)
    items = list(attributes)
    if lang == "zh":
        return "全新上架。" + spec_sentence(attributes, items, lang)
    return "New in. " + spec_sentence(attributes, items, lang)


def prompt_for(attributes: Mapping[str, str], brief: Mapping[str, Any], bounds: Sequence[int], lang: str) -> str:
    listed = "\n".join(f"- {k}: {v}" for k, v in attributes.items())
    lo, hi = bounds
    channel = _CHANNEL_TEXT[lang].get(brief["channel"], brief["channel"])
    if lang == "zh":
        who = f"，读者是{brief['audience']}" if brief.get("audience") else ""
        tone = f"，语气{brief['tone']}" if brief.get("tone") else ""
        return (f"为下面的商品写一段{channel}{who}{tone}，{lo}到{hi}个字。写出每一项属性的原值，不要添加没有列出的"
                f"颜色、材质或尺寸，不要用“最”“第一”“国家级”之类的绝对化用语。只写文案本身。\n商品：\n{listed}")
    who = f" for {brief['audience']}" if brief.get("audience") else ""
    tone = f" in a {brief['tone']} tone" if brief.get("tone") else ""
    return (f"Write {channel}{who}{tone}, {lo} to {hi} characters long, for this product. State every attribute "
            f"exactly as given, do not add colors, materials or sizes that are not listed, and do not use absolute "
            f"claims such as 'best' or 'No. 1'. Write only the copy.\nProduct:\n{listed}")


# One worked example per language, shown to the model as an earlier turn (small models stay on the
# product and in the language when they have seen one answer): written by the project, a product of
# no catalogue's.
EXAMPLES = {
    "en": ({"type": "mug", "material": "stoneware", "color": "white", "capacity": "350ml"},
           {"channel": "detail", "tone": "warm"},
           "Start the day with this white stoneware mug. It holds 350ml of coffee or tea, feels solid in the "
           "hand and keeps its glaze bright wash after wash."),
    "zh": ({"类型": "马克杯", "材质": "陶瓷", "颜色": "白色", "容量": "350ml"}, {"channel": "detail", "tone": "温暖"},
           "这款白色陶瓷马克杯容量350ml，握感厚实，咖啡或热茶都刚刚好，釉面光洁，每天用也好打理。"),
}


def messages_for(attributes: Mapping[str, str], brief: Mapping[str, Any], bounds: Sequence[int],
                 lang: str) -> list[dict[str, str]]:
    """The conversation the model continues: the example's request and answer, then this product's."""
    ex_attrs, ex_brief, ex_text = EXAMPLES[lang]
    return [{"role": "user", "content": prompt_for(ex_attrs, ex_brief, (40, 200), lang)},
            {"role": "assistant", "content": ex_text},
            {"role": "user", "content": prompt_for(attributes, brief, bounds, lang)}]


_PREAMBLE = re.compile(r"^\s*(here(’|')?s|here is|sure[,!]|certainly[,!]|title:|copy:|description:|文案[:：]|标题[:：])"
                       r"[^\n]*?(:|：|\n)\s*", re.IGNORECASE)


def clean(text: str) -> str:
    """A draft as copy: no preamble, Markdown marks, wrapping quotes or trailing fragment of a word."""
    text = unicodedata.normalize("NFC", text).strip()
    text = _PREAMBLE.sub("", text, count=1)
    text = re.sub(r"[*_#`]+", "", text)
    text = re.sub(r"\s*\n\s*", " ", text).strip()
    text = text.strip("\"“”'「」 ")
    return re.sub(r"\s{2,}", " ", text)


_END = re.compile(r"[。！？!?]|\.(?=\s|$)")


_CLAUSE = re.compile(r"[，,；;、：:—–-]|\s")


def fit_length(text: str, hi: int) -> str:
    """``text`` within ``hi`` characters (unchanged when it fits): cut at the last sentence end that
    fits, else at the last clause mark or space (the mark dropped), else at ``hi``."""
    if len(text) <= hi:
        return text
    if hi <= 0:
        return ""
    ends = [m.end() for m in _END.finditer(text) if m.end() <= hi]
    if ends:
        return text[:ends[-1]].rstrip()
    cuts = [m.start() for m in _CLAUSE.finditer(text) if 0 < m.start() <= hi]
    return text[:cuts[-1] if cuts else hi].rstrip(" ，,；;、：:—–-")


class Desk:
    """The desk of one workspace: its brand rules, model and reward model."""

    def __init__(self, ws: Workspace, rules: Any = None, *, model: str | None = None):
        from aigc.apps.copy.rules import load_rules
        from aigc.safety.guard import guard_for

        self.ws = ws
        self.rules = rules if rules is not None and not isinstance(rules, (str, Path, Mapping)) else \
            load_rules(rules if rules is not None else {})
        self.rules.validate()
        self.asked_model = model
        self.model = model or DEFAULT_MODEL  # the model of the last write
        self.guard = guard_for(ws)

    # -- the model
    def model_for(self, lang: str) -> tuple[str, list[str]]:
        """The model that writes copy in ``lang`` and any warning about it: the one asked for; else,
        for Chinese, the workspace's Gemma base when it has one (the bundled SmolLM2 writes English)."""
        if self.asked_model:
            return self.asked_model, []
        if lang == "zh":
            if self.ws.has_base(ZH_MODEL):
                return ZH_MODEL, []
            return DEFAULT_MODEL, [f"{DEFAULT_MODEL} writes English, not Chinese: for Chinese copy add a "
                                   f"Chinese-capable base (`make gemma`, then `aigc base add {ZH_MODEL} "
                                   "--accept-license`) or pass --model"]
        return DEFAULT_MODEL, []

    @property
    def generator(self):
        return instruct_model(self.ws, self.model)

    def drafts(self, prompt: list[dict[str, str]], n: int, max_chars: int, seed: int) -> list[str]:
        """``n`` drafts for a conversation (an example turn, then the product's), of about
        ``max_chars`` characters at most (tokens per character measured on the example answer)."""
        from aigc.decoding import Sampling

        gen = self.generator
        example = prompt[1]["content"]
        per_char = len(gen.tokenizer.encode(example)) / max(len(example), 1)
        max_new_tokens = int(min(320, max(24, max_chars * per_char * 1.3)))
        s = Sampling(temperature=0.8, top_p=0.95, repetition_penalty=1.1, max_new_tokens=max_new_tokens, seed=seed,
                     stop=STOPS)
        return chat_texts(gen, prompt, n, s)

    def model_scores(self, prompt: list[dict[str, str]], texts: Sequence[str]) -> list[float]:
        """Mean log-probability per token of each text after the conversation (the model's fluency)."""
        import torch

        gen = self.generator
        ctx = gen.messages_ids(prompt)
        out = []
        with torch.inference_mode():
            for text in texts:
                ids = gen.tokenizer.encode(text)
                if not ids:
                    out.append(-99.0)
                    continue
                seq = torch.tensor([ctx + ids], device=gen.device)
                logits, _ = gen.model(seq[:, :-1])
                logp = torch.log_softmax(logits[0, len(ctx) - 1:].float(), -1)
                out.append(float(logp.gather(-1, seq[0, len(ctx):, None]).mean()))
        return out

    # -- checks
    def check(self, text: str, attributes: Mapping[str, str], channel: str,
              lexicon: Mapping[str, Iterable[str]] | None = None) -> dict[str, Any]:
        """Every check of one text: coverage, invented values, rule violations, length, safety."""
        from aigc.apps.copy.checks import coverage, invented

        cov = coverage(text, attributes)
        inv = invented(text, attributes, lexicon=lexicon)
        violations = [_violation(v) for v in self.rules.check(text, channel)]
        for m in self.guard.policy.match_terms(text):
            d = m.to_dict()
            if d.get("action", "block") in ("block", "redact"):
                violations.append({"rule": "policy", "detail": f"the safety policy's term "
                                   f"{d.get('term') or d.get('text')!r} ({d.get('category')})",
                                   "start": d.get("start"), "end": d.get("end"), "text": d.get("text")})
        rail = self.guard.rail()
        rail.feed(text)
        rail.finish()
        safety = {"decision": "block" if rail.blocked else "allow", "categories": list(rail.categories),
                  "reason": rail.reason}
        lo, hi = self.rules.length[channel]
        passed = not violations and not inv and not rail.blocked
        return {"coverage": cov, "invented": inv, "violations": violations, "length": len(text),
                "length_bounds": [lo, hi], "safety": safety, "passed": passed}

    # -- one product
    def write(self, product: Mapping[str, Any], brief: Mapping[str, Any] | None = None, *, n: int = 5,
              pool: int = POOL, seed: int = 0, lexicon: Mapping[str, Iterable[str]] | None = None,
              repair: bool = True, rank: bool = True) -> dict[str, Any]:
        """``n`` ranked candidates for ``product`` (``rank=False``: the first ``n`` drafts as drawn,
        unrepaired — what the benchmark calls unranked samples)."""
        from aigc.apps.copy.experiments import reward_model

        if isinstance(n, bool) or not isinstance(n, int) or not 1 <= n <= 20:
            raise InvalidInput(f"n must be an integer from 1 to 20, got {n!r}")
        t0 = time.perf_counter()
        attrs = check_product(product)
        brief = check_brief(brief, self.rules)
        channel = brief["channel"]
        lang = product_lang(attrs)
        lo, hi = self.rules.length[channel]
        self.model, warnings = self.model_for(lang)
        prompt = messages_for(attrs, brief, (lo, hi), lang)
        raw = self.drafts(prompt, n * (pool if rank else 1), hi, seed)
        cands: list[dict[str, Any]] = []
        from aigc.apps.copy.checks import coverage

        for draft in raw:
            text = clean(draft)
            added: list[str] = []
            own = text
            if rank:
                text = own = fit_length(text, hi)
                if repair and text:
                    own_coverage = coverage(text, attrs)
                    missing = own_coverage["missing"]
                    if missing:
                        added = list(missing)
                        sep = "" if lang == "zh" or not text else " "
                        spec = spec_sentence(attrs, added, lang, budget=hi // 2)  # half the length, at most
                        text = fit_length(text, hi - len(spec) - len(sep))
                        text = f"{text}{sep}{spec}".strip()
            if not text:
                continue
            cands.append({"text": text, "source": "model", "repaired": added, "own": own,
                          "own_coverage": own_coverage["score"] if added else None})
        if not rank:
            cands = cands[:n]
        scores = self.model_scores(prompt, [c["text"] for c in cands]) if cands else []
        reward = reward_model(self.ws)
        fb = reward.score([c["text"] for c in cands]) if reward is not None and cands else [0.0] * len(cands)
        seen: set[str] = set()
        out = []
        for c, ms, fs in zip(cands, scores, fb):
            key = re.sub(r"\W+", "", c["text"].lower())
            if rank and key in seen:
                continue
            seen.add(key)
            c["checks"] = self.check(c["text"], attrs, channel, lexicon)
            own, own_coverage = c.pop("own"), c.pop("own_coverage")
            c["checks"]["own_coverage"] = own_coverage if c["repaired"] else c["checks"]["coverage"]["score"]
            if lang_of(own) != lang:  # the model's own words are in another language than the product's
                c["checks"]["violations"].append({"rule": "language", "detail": f"written in {lang_of(own)}, the "
                                                  f"product's attributes are in {lang}", "start": 0,
                                                  "end": len(own), "text": own})
                c["checks"]["passed"] = False
            c["model_score"] = round(ms, 4)
            c["feedback_score"] = round(float(fs), 4)
            c["id"] = "c-" + hashlib.sha256(c["text"].encode()).hexdigest()[:10]
            out.append(c)
        if rank:
            out.sort(key=lambda c: (not c["checks"]["passed"], -c["checks"]["own_coverage"],
                                    -c["checks"]["coverage"]["score"], -c["model_score"], -c["feedback_score"]))
        out = out[:n]
        for i, c in enumerate(out, 1):
            c["rank"] = i
            c["label"] = self.guard.label("copy-" + c["id"][2:])
        return {"product": attrs, "brief": brief, "lang": lang, "model": self.model, "candidates": out,
                "warnings": warnings, "seconds": round(time.perf_counter() - t0, 2)}

    # -- a catalogue
    def batch(self, products: Sequence[Mapping[str, Any]], brief: Mapping[str, Any] | None = None, *, n: int = 5,
              seed: int = 0, progress: Callable[[int, int], None] | None = None) -> list[dict[str, Any]]:
        """Every product of a catalogue (``{"id", "attributes", "brief"}`` records); one result each."""
        lexicon = catalogue_lexicon([p["attributes"] for p in products])
        results = []
        for i, p in enumerate(products):
            r = self.write(p["attributes"], p.get("brief") or brief, n=n, seed=seed + i, lexicon=lexicon)
            results.append({"id": p["id"], **r})
            if progress is not None:
                progress(i + 1, len(products))
        return results


def catalogue_lexicon(products: Iterable[Mapping[str, Any]]) -> dict[str, list[str]]:
    """The values each attribute key has across a catalogue: what a wrong value of that key looks like."""
    lex: dict[str, set[str]] = {}
    for attrs in products:
        for k, v in check_product(attrs).items():
            lex.setdefault(k, set()).update(p.strip() for p in re.split(r"[,，、/]", v) if p.strip())
    return {k: sorted(v) for k, v in lex.items()}


def _violation(v: Any) -> dict[str, Any]:
    return v if isinstance(v, dict) else {"rule": v.rule, "detail": v.detail, "start": v.start, "end": v.end,
                                          "text": v.text}
