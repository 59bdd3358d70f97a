"""Answering a customer's question from a knowledge base: retrieve, decide, answer, cite, hand off.

One call, :func:`ask`, does the whole turn:

1. **Hand-off asked for** ("转人工", "human agent"...): hand off at once, no retrieval.
2. **Retrieve** (hybrid, :mod:`aigc.apps.assistant.retrieval`) and score the **confidence** that
   the knowledge base answers the question (:mod:`.confidence`: a logistic model over the hits,
   calibrated per embedding model).
3. **Below the threshold**: the first time, ask back "did you mean ..." with the closest entries;
   when the previous assistant turn already asked back, hand off (``low_confidence``).
4. **Answer**: a confident FAQ hit returns its curated answer verbatim (in the question's language
   when the entry exists in both); otherwise ``extractive`` (the sentences of the top chunks that
   answer best) or ``generate`` (the chunks go to an instruct model with a grounded prompt). A
   generated answer is split into sentences and each is matched to the chunks' sentences after
   generation (as RAGFlow does): a supported sentence gets its ``[n]``, an unsupported one is
   dropped (counted in ``dropped``); when nothing is supported, the extractive answer stands.
5. **Safety**: the question passes the workspace's input rail, retrieved chunks are redacted with
   the policy's output operators before anything reads them, the answer passes the output rail (a
   blocked answer hands off with reason ``safety``); a generated answer carries the AIGC label.

Confidence is :mod:`.confidence`'s, hand-offs are :mod:`.handoff`'s.
"""

from __future__ import annotations

import json
import re
import time
import unicodedata
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from aigc.apps import DEFAULT_MODEL, chat_texts, instruct_model, lang_of
from aigc.apps.assistant.confidence import calibration_for, confidence, features, langs_of, twin
from aigc.apps.assistant.handoff import record_handoff, wants_person
from aigc.errors import InvalidInput
from aigc.workspace import Workspace, check_name

MODES = ("auto", "faq", "extractive", "generate")
# A generated sentence is supported by a source sentence that holds three quarters of its content
# words / character trigrams. e5's cosine does not decide it: "the linen is dishwasher safe" is
# above 0.92 from "our stoneware is dishwasher safe" (it only picks the source among equals).
SUPPORT_OVERLAP = 0.75
MIN_UNITS = 3  # a sentence with fewer content words / trigrams states no fact to cite
MAX_QUESTION_CHARS = 2000
K = 8  # hits retrieved per question

_CLARIFY = {"zh": "您是想问：", "en": "Did you mean: "}
_TEXT = {
    "zh": {"handoff": "好的，正在为您转接人工客服，请稍候。", "clarify_tail": "如果都不是，请换个说法再问一次，或回复“转人工”。",
           "low": "抱歉，这个问题我还答不好，已为您转接人工客服。", "safety": "抱歉，这个回答不便提供，已为您转接人工客服。"},
    "en": {"handoff": "Sure, I am passing you to a member of our team now.",
           "clarify_tail": "If none of these is it, please rephrase, or say \"human agent\".",
           "low": "Sorry, I cannot answer that well; I am passing you to a member of our team.",
           "safety": "Sorry, I cannot give that answer; I am passing you to a member of our team."},
}
# A sentence ends at 。！？!? or a line end, or a "." before a space; its citation marks stay with it.
_SENTENCE_END = re.compile(r"(?:[。！？!?\n]+|(?<!\d)\.(?=\s|$))(?:\s*\[\d+\])*")
_STOP = frozenset("a an the is are was were be been of to in on at for and or but with by from as it its this that "
                  "these those you your we our they their i my me can will would should do does did not no yes "
                  "source sources states state says according".split())


# Scripts multilingual-e5 (XLM-R's vocabulary) reads; a question mostly in others is refused.
_KNOWN_SCRIPTS = ("LATIN", "CJK", "CYRILLIC", "GREEK", "ARABIC", "HEBREW", "DEVANAGARI", "BENGALI", "THAI",
                  "HANGUL", "HIRAGANA", "KATAKANA", "TAMIL", "TELUGU", "KANNADA", "MALAYALAM", "GUJARATI",
                  "GURMUKHI", "ARMENIAN", "GEORGIAN", "ETHIOPIC", "KHMER", "LAO", "MYANMAR", "SINHALA",
                  "ORIYA", "FULLWIDTH", "BOPOMOFO", "TIBETAN")


def check_question(question: Any) -> str:
    if not isinstance(question, str) or not question.strip():
        raise InvalidInput("the question is empty: ask something, e.g. 'how do I return an item?'")
    if len(question) > MAX_QUESTION_CHARS:
        raise InvalidInput(f"the question is {len(question):,} characters; at most {MAX_QUESTION_CHARS:,}: "
                           "ask it shorter")
    letters = [c for c in question if c.isalnum()]
    if not letters:
        raise InvalidInput(f"the question {question[:40]!r} has no words (only symbols or emoji): ask in words")
    alpha = [c for c in letters if c.isalpha()]
    unknown = [c for c in alpha if not unicodedata.name(c, "UNKNOWN").startswith(_KNOWN_SCRIPTS)]
    if len(unknown) * 2 > len(alpha):
        script = unicodedata.name(unknown[0], "UNKNOWN").split()[0].title()
        raise InvalidInput(f"the question is written in a script the embedding model (multilingual-e5-small) "
                           f"does not read ({script}): ask in Chinese, English or another major language")
    return question.strip()


# -- settings -------------------------------------------------------------------


def settings_path(ws: Workspace, name: str, fetch: bool = True) -> Path:
    """``<workspace>/assistant/<name>.json``: beside the knowledge base, not in it (a re-ingest swaps
    the knowledge base's folder whole). With an artifact store, fetched first like the knowledge base."""
    return ws.artifact_path("assistant", f"{check_name(name, 'knowledge base name')}.json", fetch)


def settings(ws: Workspace, name: str) -> dict[str, Any]:
    """The assistant's settings for knowledge base ``name``: mode, model, webhook, calibration."""
    path = settings_path(ws, name)
    out: dict[str, Any] = {"mode": "auto", "model": None, "webhook": None, "calibration": None}
    if path.exists():
        out.update(json.loads(path.read_text("utf-8")))
    return out


def configure(ws: Workspace, name: str, **changes: Any) -> dict[str, Any]:
    """Change the assistant's settings (``mode``, ``model``, ``webhook``, ``calibration``)."""
    from aigc.apps.assistant import kb

    kb.info(ws, name)  # an unknown knowledge base: NotFound
    current = settings(ws, name)
    unknown = sorted(set(changes) - set(current))
    if unknown:
        raise InvalidInput(f"unknown assistant setting {unknown[0]!r}: choose from {', '.join(sorted(current))}")
    if "mode" in changes and changes["mode"] not in MODES:
        raise InvalidInput(f"unknown answer mode {changes['mode']!r}: choose from {', '.join(MODES)}")
    if changes.get("webhook") and not re.match(r"https?://", str(changes["webhook"])):
        raise InvalidInput(f"webhook {changes['webhook']!r} is not an http(s) URL")
    current.update({k: v for k, v in changes.items()})
    # through tmp/ and the artifact store (when set), then renamed into place
    ws.publish_text(settings_path(ws, name, fetch=False), json.dumps(current, ensure_ascii=False, indent=2))
    return current


# -- sentences and citations --------------------------------------------------------------------


def sentences(text: str) -> list[tuple[int, int]]:
    """(start, end) of each sentence of ``text``, ends kept, surrounding space trimmed."""
    spans, start = [], 0
    for m in _SENTENCE_END.finditer(text):
        spans.append((start, m.end()))
        start = m.end()
    spans.append((start, len(text)))
    out = []
    for a, b in spans:
        while a < b and text[a].isspace():
            a += 1
        while b > a and text[b - 1].isspace():
            b -= 1
        if b - a >= 2 and any(c.isalnum() for c in text[a:b]):
            out.append((a, b))
    return out


def _units(text: str) -> set[str]:
    """Character trigrams of CJK text and lower-case words otherwise (what overlap counts)."""
    t = unicodedata.normalize("NFKC", text).lower()
    words = set(re.findall(r"[a-z0-9]+", t)) - _STOP
    cjk = re.sub(r"[^\u4e00-\u9fff0-9]", "", t)
    return words | {cjk[i:i + 3] for i in range(max(0, len(cjk) - 2))}


def overlap(sentence: str, source: str) -> float:
    """The share of ``sentence``'s units that ``source`` has too."""
    a = _units(sentence)
    return len(a & _units(source)) / len(a) if a else 0.0


@dataclass
class Source:
    """A retrieved chunk as the answer sees it (redacted text, its sentences)."""

    n: int
    hit: Any
    text: str
    spans: list[tuple[int, int]]

    @property
    def chunk(self) -> dict[str, Any]:
        return self.hit.chunk


def _citation(src: Source, quote: str) -> dict[str, Any]:
    c = src.chunk
    return {"n": src.n, "doc": c.get("doc"), "chunk_id": c.get("chunk_id"), "title": c.get("title"),
            "score": round(float(src.hit.score), 4), "text": src.text, "quote": quote}


# -- the assistant ------------------------------------------------------------------------------


GROUNDED = {
    "en": ("Answer the customer's question using only the numbered sources. Answer in one to three short "
           "sentences, in English, with the facts as the sources state them. If the sources do not answer it, "
           "say you do not know.\n\nSources:\n{sources}\n\nQuestion: {question}"),
    "zh": ("只根据下面编号的资料回答顾客的问题。用中文回答，一到三句话，事实按资料原文。资料里没有答案就说不知道。\n\n"
           "资料：\n{sources}\n\n问题：{question}"),
}


class Assistant:
    """One knowledge base's assistant in a workspace (cheap; the heavy parts are cached per process)."""

    def __init__(self, ws: Workspace, name: str, *, mode: str | None = None, model: str | None = None):
        from aigc.apps.assistant import kb
        from aigc.safety.guard import guard_for

        self.ws, self.name = ws, name
        self.kb = kb.load(ws, name)
        conf = settings(ws, name)
        self.mode = mode or conf["mode"]
        if self.mode not in MODES:
            raise InvalidInput(f"unknown answer mode {self.mode!r}: choose from {', '.join(MODES)}")
        self.model = model or conf.get("model")
        if self.mode == "generate" and not self.model:
            self.model = DEFAULT_MODEL
        self.webhook = conf.get("webhook")
        self.calibration = calibration_for(conf.get("calibration"), self.kb.embedder_id, name)
        self.guard = guard_for(ws)

    # -- retrieval and confidence
    def _vectors_of(self, hits: Sequence[Any]) -> np.ndarray:
        return np.stack([self.kb.vector_of(h.chunk["chunk_id"]) for h in hits])

    def retrieve(self, question: str, k: int = K) -> tuple[list[Any], np.ndarray, float]:
        hits = self.kb.search(question, k=k, mode="fusion")
        feat = features(hits, self._vectors_of)
        return hits, feat, confidence(feat, self.calibration)

    # -- one turn
    def ask(self, question: str, history: Sequence[Mapping[str, Any]] = (), *, k: int = K) -> dict[str, Any]:
        t0 = time.perf_counter()
        question = check_question(question)
        history = _check_history(history)
        question, _ = self.guard.check_prompt(question)  # PII handled per the prompt actions; blocked: raised
        lang = lang_of(question)
        if wants_person(question):
            return self._handoff(question, history, lang, "requested", None, t0)
        hits, feat, conf = self.retrieve(question, k)
        threshold = float(self.calibration["threshold"])
        result: dict[str, Any] = {"confidence": round(conf, 4), "threshold": threshold,
                                  "top_score": round(float(feat[0]), 4), "margin": round(float(feat[1]), 4)}
        if conf < threshold:
            if _asked_back(history):
                return {**self._handoff(question, history, lang, "low_confidence", conf, t0), **result}
            return {**self._clarify(hits, lang, t0), **result}
        sources = self._sources(hits[:3])
        mode = self.mode
        if mode in ("auto", "faq") and sources[0].chunk.get("kind") == "faq":
            out = self._faq(sources, hits, lang)
        elif mode == "generate":
            out = self._generate(question, history, sources, lang)
        else:
            out = self._extractive(question, sources)
        released, blocked = self._rail(out["answer"])
        if blocked:
            return {**self._handoff(question, history, lang, "safety", conf, t0), **result}
        out["answer"] = released
        if out["mode"] == "generate":
            out["label"] = self.guard.label("kb-" + uuid.uuid4().hex[:24])
        return {**out, **result, "handoff": False, "clarify": False, "kb": self.name,
                "latency_ms": round((time.perf_counter() - t0) * 1000, 1)}

    def _sources(self, hits: Sequence[Any]) -> list[Source]:
        ops = self.guard.policy.pii_operators("output")
        scanner = self.guard.scanner
        out = []
        for i, h in enumerate(hits, 1):
            text = h.chunk.get("answer") if h.chunk.get("kind") == "faq" and h.chunk.get("answer") else h.chunk["text"]
            text = scanner.redact(text, ops).text
            out.append(Source(i, h, text, sentences(text)))
        return out

    def _rail(self, text: str) -> tuple[str, bool]:
        rail = self.guard.rail()
        released = rail.feed(text) + rail.finish()
        return released, bool(rail.blocked)

    def _faq(self, sources: list[Source], hits: Sequence[Any], lang: str) -> dict[str, Any]:
        """The curated answer of the top FAQ entry, in the question's language when the entry's
        translation (:func:`.confidence.twin`) is among the hits."""
        best = sources[0]
        if lang_of(best.chunk.get("question") or best.text) != lang:
            t = twin(self._vectors_of(hits), langs_of(hits))
            if t is not None and hits[t].chunk.get("kind") == "faq" \
                    and lang_of(hits[t].chunk.get("question") or "") == lang:
                best = self._sources([hits[t]])[0]
        best.n = 1
        parts = [f"{best.text[a:b]} [1]" for a, b in best.spans] or [f"{best.text} [1]"]
        return {"answer": _join(parts), "citations": [_citation(best, best.text)], "mode": "faq", "dropped": 0}

    def _extractive(self, question: str, sources: list[Source]) -> dict[str, Any]:
        """The sentences of the top chunks closest to the question (at most three, in reading order)."""
        from aigc.apps.assistant.retrieval import embedder

        cands = [(s, a, b) for s in sources[:2] for a, b in s.spans]
        if not cands:
            cands = [(sources[0], 0, len(sources[0].text))]
        emb = embedder()
        q = emb.embed_queries([question])[0]
        sv = emb.embed_passages([s.text[a:b] for s, a, b in cands])
        scores = sv @ q
        best = float(scores.max())
        keep = [i for i in np.argsort(-scores)[:3] if scores[i] >= best - 0.02]
        keep.sort(key=lambda i: (cands[i][0].n, cands[i][1]))
        parts, cites, used = [], [], {}
        for i in keep:
            src, a, b = cands[i]
            if src.n not in used:
                used[src.n] = len(used) + 1
                cites.append(_citation(src, src.text[a:b]))
                cites[-1]["n"] = used[src.n]
            parts.append(f"{src.text[a:b]} [{used[src.n]}]")
        return {"answer": _join(parts), "citations": cites, "mode": "extractive", "dropped": 0}

    def _generate(self, question: str, history: Sequence[Mapping[str, Any]], sources: list[Source],
                  lang: str) -> dict[str, Any]:
        from aigc.apps.assistant.retrieval import embedder

        gen = instruct_model(self.ws, self.model)
        numbered = "\n".join(f"[{s.n}] {s.text}" for s in sources)
        turns = [{"role": t["role"], "content": t["content"]} for t in history[-4:]]
        turns.append({"role": "user", "content": GROUNDED[lang].format(sources=numbered, question=question)})
        text = _generate_text(gen, turns)
        spans = sentences(text)
        if not spans:
            return {**self._extractive(question, sources), "dropped": 0}
        sents = []
        for a, b in spans:  # citation marks and list numbers the model wrote are not the answer's
            sent = re.sub(r"^\s*(?:\d+[.)、]|[-*•])\s*", "", re.sub(r"\s*\[\d+\]", "", text[a:b])).strip()
            if sent and sent not in sents and any(ch.isalnum() for ch in sent):
                sents.append(sent)
        if not sents:
            return {**self._extractive(question, sources), "dropped": 0}
        chunk_sents = [(s, s.text[a:b]) for s in sources for a, b in s.spans] or [(s, s.text) for s in sources]
        emb = embedder()
        gv = emb.embed_passages(sents)
        cv = emb.embed_passages([t for _, t in chunk_sents])
        sims = gv @ cv.T
        parts, cites, used, dropped = [], [], {}, 0
        for i, sent in enumerate(sents):
            ov = [overlap(sent, t) for _, t in chunk_sents]
            jo = int(np.argmax(ov))
            if len(_units(sent)) < MIN_UNITS:
                dropped += 1
                continue
            if ov[jo] >= SUPPORT_OVERLAP:
                best = max((k for k, o in enumerate(ov) if o >= SUPPORT_OVERLAP), key=lambda k: sims[i, k])
                src, quote = chunk_sents[best]
                if src.n not in used:
                    used[src.n] = len(used) + 1
                    cites.append({**_citation(src, quote), "n": used[src.n]})
                parts.append(f"{sent} [{used[src.n]}]")
            else:
                dropped += 1
        if not parts:
            return {**self._extractive(question, sources), "dropped": dropped}
        return {"answer": _join(parts), "citations": cites, "mode": "generate", "dropped": dropped}

    def _clarify(self, hits: Sequence[Any], lang: str, t0: float) -> dict[str, Any]:
        suggestions: list[str] = []
        for h in hits:
            title = (h.chunk.get("question") or h.chunk.get("title") or "").strip().rstrip("?？")
            if title and title not in suggestions:
                suggestions.append(title)
            if len(suggestions) == 3:
                break
        listed = "；".join(suggestions) if lang == "zh" else "; ".join(suggestions)
        answer = f"{_CLARIFY[lang]}{listed}？{_TEXT[lang]['clarify_tail']}" if lang == "zh" else \
            f"{_CLARIFY[lang]}{listed}? {_TEXT[lang]['clarify_tail']}"
        return {"answer": answer, "citations": [], "handoff": False, "clarify": True, "suggestions": suggestions,
                "mode": "clarify", "kb": self.name, "latency_ms": round((time.perf_counter() - t0) * 1000, 1)}

    def _handoff(self, question: str, history: Sequence[Mapping[str, Any]], lang: str, reason: str,
                 conf: float | None, t0: float) -> dict[str, Any]:
        record_handoff(self.ws, self.name, question, history, reason, conf, self.webhook)
        text = _TEXT[lang]["handoff" if reason == "requested" else "low" if reason == "low_confidence" else "safety"]
        return {"answer": text, "citations": [], "handoff": True, "clarify": False, "reason": reason,
                "mode": "handoff", "kb": self.name, "confidence": None if conf is None else round(conf, 4),
                "latency_ms": round((time.perf_counter() - t0) * 1000, 1)}


def _generate_text(gen: Any, turns: list[dict[str, str]]) -> str:
    """Greedy decoding of the grounded prompt (one answer, at most 160 new tokens)."""
    from aigc.decoding import Sampling

    return chat_texts(gen, turns, 1, Sampling(temperature=0.0, max_new_tokens=160, seed=0))[0].strip()


def _join(parts: list[str]) -> str:
    out = ""
    for p in parts:
        if out and not (lang_of(out[-6:]) == "zh" and lang_of(p[:6]) == "zh"):
            out += " "
        out += p
    return out


def _check_history(history: Any) -> list[dict[str, Any]]:
    if history is None:
        return []
    if not isinstance(history, (list, tuple)):
        raise InvalidInput("history must be a list of {\"role\", \"content\"} turns")
    out = []
    for i, t in enumerate(history):
        if not isinstance(t, Mapping) or t.get("role") not in ("user", "assistant", "system") \
                or not isinstance(t.get("content"), str):
            raise InvalidInput(f"history[{i}] must be {{\"role\": \"user\"|\"assistant\", \"content\": text}}")
        if t["role"] != "system":
            out.append(dict(t))
    return out


def _asked_back(history: Sequence[Mapping[str, Any]]) -> bool:
    """Whether the assistant's last turn asked "did you mean ..."."""
    for t in reversed(history):
        if t.get("role") == "assistant":
            return bool(t.get("clarify")) or t["content"].startswith(tuple(_CLARIFY.values()))
    return False
