"""The monitor's text classifiers: sentiment (the user's labels) and, when the data has a topic
column, the topic, trained from the user's labelled texts with one call.

Two kinds, measured side by side by ``benchmarks/monitor.py``:

- ``tfidf``: the baseline, character 1-3-gram TF-IDF + logistic regression (scikit-learn).
- ``transformer`` (ours, the default): a small transformer encoder trained from scratch on the
  texts, tokens being CJK characters and Latin words (words outside the vocabulary fall into
  hashed buckets, never one UNK), fused with the baseline's log-probabilities by a weight chosen
  on a held-out tenth of the training texts (the fusion never sees the test). The encoder reads
  word order and negation ("不是很好"); the n-grams are strong on short, keyword-bearing reviews.

Nothing is pickled: the encoder's weights are a torch state dict loaded with ``weights_only``,
the TF-IDF vocabulary and both logistic regressions are arrays in an ``.npz``.
"""

from __future__ import annotations

import json
import math
import re
import threading
import time
import zlib
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from aigc.errors import InvalidInput, NotFound

KINDS = ("transformer", "tfidf")
MAX_LEN = 160  # tokens a text is cut to (the 95th percentile of review lengths is well below)
BUCKETS = 1024  # hashed ids for tokens outside the vocabulary
BIGRAMS = 50021  # hashed token-pair embeddings (see _net); 0 turns them off
_CJK = "\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff\uac00-\ud7af"
_TOKEN = re.compile(rf"[{_CJK}]|[^\W\d_{_CJK}]+|\d+|[^\s\w]")
_NEGATIVE_NAMES = {"0", "-1", "neg", "negative", "bad", "负", "负面", "差评", "消极", "差", "不满"}


def tokenize(text: str) -> list[str]:
    """CJK characters one by one, Latin words lower-cased, digit runs, punctuation marks."""
    return _TOKEN.findall(text.lower())


def negative_label(labels: Sequence[str], given: str | None = None) -> str | None:
    """Which of the user's labels means negative: ``given``, or the one label named so (``0``,
    ``negative``, ``差评``...); None when none is (the model then has no negative share to watch)."""
    if given is not None:
        if given not in labels:
            raise InvalidInput(f"--negative-label {given!r} is not one of the labels {sorted(labels)}")
        return given
    hits = [lab for lab in labels if lab.strip().lower() in _NEGATIVE_NAMES]
    return hits[0] if len(hits) == 1 else None


# -- the encoder -----------------------------------------------------------------------------


@dataclass
class Vocab:
    tokens: list[str]
    index: dict[str, int] = field(init=False)

    def __post_init__(self) -> None:
        self.index = {t: i for i, t in enumerate(self.tokens)}

    @property
    def size(self) -> int:
        return 2 + BUCKETS + len(self.tokens)  # 0 pad, 1 cls, buckets, words

    @classmethod
    def build(cls, texts: Sequence[str], max_size: int = 30000, min_count: int = 2) -> Vocab:
        counts = Counter(t for text in texts for t in tokenize(text))
        kept = [t for t, c in counts.most_common(max_size) if c >= min_count]
        return cls(kept)

    def encode(self, text: str) -> list[int]:
        ids = [1]
        for t in tokenize(text)[: MAX_LEN - 1]:
            i = self.index.get(t)
            ids.append(2 + BUCKETS + i if i is not None else 2 + zlib.crc32(t.encode()) % BUCKETS)
        return ids


def _net(vocab_size: int, n_labels: int, dim: int = 128, layers: int = 2, heads: int = 4, bigrams: int = 0):
    """The encoder; with ``bigrams`` > 0, each position also adds an embedding of the hashed pair
    (this token, the next), which gives a character model the words of Chinese text cheaply."""
    import torch
    from torch import nn

    class Encoder(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.tok = nn.Embedding(vocab_size, dim, padding_idx=0)
            self.pos = nn.Embedding(MAX_LEN, dim)
            layer = nn.TransformerEncoderLayer(dim, heads, dim * 2, dropout=0.1, activation="gelu",
                                               batch_first=True, norm_first=True)
            self.layers = nn.TransformerEncoder(layer, layers, enable_nested_tensor=False)
            self.norm = nn.LayerNorm(dim)
            self.head = nn.Linear(2 * dim, n_labels)
            self.drop = nn.Dropout(0.1)
            self.bigrams = bigrams
            if bigrams:
                self.pair = nn.Embedding(bigrams + 1, dim, padding_idx=0)

        def forward(self, ids: torch.Tensor) -> torch.Tensor:
            pad = ids == 0
            x = self.tok(ids) + self.pos(torch.arange(ids.shape[1], device=ids.device))
            if self.bigrams:
                nxt = torch.nn.functional.pad(ids[:, 1:], (0, 1))
                pair = (ids * 1_000_003 + nxt) % self.bigrams + 1
                x = x + self.pair(torch.where(nxt == 0, torch.zeros_like(pair), pair))
            x = self.drop(x)
            x = self.norm(self.layers(x, src_key_padding_mask=pad))
            keep = (~pad).unsqueeze(-1).to(x.dtype)
            mean = (x * keep).sum(1) / keep.sum(1).clamp_min(1.0)
            return self.head(self.drop(torch.cat([x[:, 0], mean], -1)))

    return Encoder()


def _batches(lengths: np.ndarray, batch: int, rng: np.random.Generator | None) -> list[np.ndarray]:
    """Index batches of similar lengths (little padding); shuffled when ``rng`` is given."""
    order = np.argsort(lengths, kind="stable") if rng is None else \
        np.argsort(lengths + rng.random(len(lengths)) * 8, kind="stable")
    out = [order[i : i + batch] for i in range(0, len(order), batch)]
    if rng is not None:
        rng.shuffle(out)
    return out


def _pad(seqs: list[list[int]]):
    import torch

    width = max(len(s) for s in seqs)
    out = torch.zeros((len(seqs), width), dtype=torch.long)
    for i, s in enumerate(seqs):
        out[i, : len(s)] = torch.tensor(s, dtype=torch.long)
    return out


def _encoder_logprobs(net: Any, encoded: list[list[int]], device: str, batch: int = 256) -> np.ndarray:
    import torch

    net.eval()
    out = np.zeros((len(encoded), net.head.out_features), dtype=np.float32)
    lengths = np.array([len(s) for s in encoded])
    with torch.inference_mode():
        for idx in _batches(lengths, batch, None):
            logits = net(_pad([encoded[i] for i in idx]).to(device))
            out[idx] = torch.log_softmax(logits.float(), -1).cpu().numpy()
    return out


def train_encoder(texts: Sequence[str], y: np.ndarray, n_labels: int, *, vocab: Vocab, val: tuple | None,
                  time_budget: float, max_epochs: int, seed: int, device: str, bigrams: int = 0,
                  progress: Callable[[dict], None] | None = None) -> tuple[Any, dict]:
    """Train the encoder for at most ``max_epochs`` epochs or ``time_budget`` seconds; keeps the
    weights of the epoch with the lowest validation loss."""
    import torch

    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    net = _net(vocab.size, n_labels, bigrams=bigrams).to(device)
    encoded = [vocab.encode(t) for t in texts]
    lengths = np.array([len(s) for s in encoded])
    batches_per_epoch = math.ceil(len(encoded) / 64)
    total = batches_per_epoch * max_epochs
    opt = torch.optim.AdamW(net.parameters(), lr=2e-3, weight_decay=0.01)
    warm = max(1, total // 20)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: min(1.0, (s + 1) / warm) * 0.5 * (1 + math.cos(math.pi * min(1.0, s / total))))
    yt = torch.tensor(y, dtype=torch.long)
    val_enc = [vocab.encode(t) for t in val[0]] if val else None
    best: tuple[float, dict] | None = None
    history = []
    start = time.perf_counter()
    step = tokens = 0
    stopped = False
    for epoch in range(max_epochs):
        net.train()
        for idx in _batches(lengths, 64, rng):
            ids = _pad([encoded[i] for i in idx]).to(device)
            loss = torch.nn.functional.cross_entropy(net(ids), yt[idx].to(device), label_smoothing=0.05)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(net.parameters(), 1.0)
            opt.step()
            sched.step()
            step += 1
            tokens += int(lengths[idx].sum())
            elapsed = time.perf_counter() - start
            if progress and step % 20 == 0:
                rate = step / elapsed
                progress({"epoch": epoch + 1, "step": step, "steps": total, "loss": float(loss.detach()),
                          "texts_per_s": rate * 64, "tokens_per_s": tokens / elapsed,
                          "eta_s": (total - step) / rate if rate else None})
            if elapsed > time_budget:
                stopped = True
                break
        entry = {"epoch": epoch + 1, "steps": step, "seconds": round(time.perf_counter() - start, 1)}
        if val_enc is not None:
            lp = _encoder_logprobs(net, val_enc, device)
            entry["val_loss"] = float(-lp[np.arange(len(val[1])), val[1]].mean())
            entry["val_accuracy"] = float((lp.argmax(1) == val[1]).mean())
            if best is None or entry["val_loss"] < best[0]:
                best = (entry["val_loss"], {k: v.detach().clone() for k, v in net.state_dict().items()})
        history.append(entry)
        if stopped:
            break
    if best is not None:
        net.load_state_dict(best[1])
    return net, {"history": history, "steps": step, "tokens": tokens, "seconds": time.perf_counter() - start,
                 "stopped_by_budget": stopped}


# -- the n-gram baseline ---------------------------------------------------------------------


def _tfidf():
    from sklearn.feature_extraction.text import TfidfVectorizer

    return TfidfVectorizer(analyzer="char", ngram_range=(1, 3), min_df=2, sublinear_tf=True, max_features=300000,
                           lowercase=True, dtype=np.float32)


def _logreg(seed: int):
    from sklearn.linear_model import LogisticRegression

    return LogisticRegression(C=4.0, max_iter=2000, random_state=seed)


def _logprobs(lr: Any, X: Any) -> np.ndarray:
    return np.log(np.clip(lr.predict_proba(X), 1e-9, 1.0)).astype(np.float32)


# -- the model -------------------------------------------------------------------------------


@dataclass
class TextClassifier:
    """Sentiment (the user's labels) and optionally topic; see the module docstring."""

    kind: str
    labels: list[str]
    negative: str | None
    topics: list[str] = field(default_factory=list)
    weight: float = 0.0  # the encoder's share of the fused log-probabilities (0 for tfidf)
    bigrams: int = 0  # the encoder's hashed token-pair buckets (0: none)
    info: dict[str, Any] = field(default_factory=dict)
    tfidf: Any = None
    lr: Any = None
    topic_lr: Any = None
    vocab: Vocab | None = None
    net: Any = None
    device: str = "cpu"

    # -- predicting
    def sentiment_logprobs(self, texts: Sequence[str]) -> np.ndarray:
        texts = [str(t) for t in texts]
        lp = _logprobs(self.lr, self.tfidf.transform(texts))
        if self.net is not None and self.weight > 0:
            enc = _encoder_logprobs(self.net, [self.vocab.encode(t) for t in texts], self.device)
            lp = self.weight * enc + (1 - self.weight) * lp
            lp = lp - np.logaddexp.reduce(lp, axis=1, keepdims=True)
        return lp

    def predict(self, texts: Sequence[str]) -> list[dict[str, Any]]:
        """Per text: ``label``, ``prob`` (of that label), ``negative`` (bool), ``score`` (P(not
        negative) - P(negative), in [-1, 1]; the label's probability when no label means negative)
        and ``topic`` (None without a topic model)."""
        if not len(texts):
            return []
        probs = np.exp(self.sentiment_logprobs(texts))
        topics = None
        if self.topic_lr is not None:
            topics = self.topic_lr.predict(self.tfidf.transform([str(t) for t in texts]))
        neg = self.labels.index(self.negative) if self.negative is not None else None
        out = []
        for i, p in enumerate(probs):
            j = int(p.argmax())
            score = float(1 - 2 * p[neg]) if neg is not None else float(p[j])
            out.append({"label": self.labels[j], "prob": round(float(p[j]), 4), "negative": j == neg,
                        "score": round(score, 4), "topic": None if topics is None else str(topics[i])})
        return out

    # -- saving
    def save_to(self, folder: Path) -> None:
        """Write the model's files into ``folder`` (the caller stages and publishes it)."""
        import torch

        folder = Path(folder)
        arrays = {"lr_coef": self.lr.coef_, "lr_intercept": self.lr.intercept_, "lr_classes": self.lr.classes_,
                  "idf": self.tfidf.idf_}
        if self.topic_lr is not None:
            arrays.update(topic_coef=self.topic_lr.coef_, topic_intercept=self.topic_lr.intercept_,
                          topic_classes=np.array(self.topic_lr.classes_, dtype=str))
        np.savez(folder / "ngrams.npz", **arrays)
        vocab = sorted(self.tfidf.vocabulary_.items(), key=lambda kv: kv[1])
        (folder / "ngram_vocab.json").write_text(json.dumps([k for k, _ in vocab], ensure_ascii=False))
        if self.net is not None:
            torch.save({k: v.cpu() for k, v in self.net.state_dict().items()}, folder / "encoder.pt")
            (folder / "vocab.json").write_text(json.dumps(self.vocab.tokens, ensure_ascii=False))
        config = {"kind": self.kind, "labels": self.labels, "negative": self.negative, "topics": self.topics,
                  "weight": self.weight, "bigrams": self.bigrams, "info": self.info, "format": 1}
        (folder / "config.json").write_text(json.dumps(config, ensure_ascii=False, indent=1))

    @classmethod
    def load(cls, path: Path, device: str = "cpu") -> TextClassifier:
        import torch
        from sklearn.linear_model import LogisticRegression

        config = json.loads((path / "config.json").read_text())
        arrays = np.load(path / "ngrams.npz", allow_pickle=False)
        tfidf = _tfidf()
        tfidf.vocabulary_ = {t: i for i, t in enumerate(json.loads((path / "ngram_vocab.json").read_text()))}
        tfidf.idf_ = arrays["idf"]
        lr = LogisticRegression()
        lr.coef_, lr.intercept_, lr.classes_ = arrays["lr_coef"], arrays["lr_intercept"], arrays["lr_classes"]
        topic_lr = None
        if "topic_coef" in arrays:
            topic_lr = LogisticRegression()
            topic_lr.coef_, topic_lr.intercept_ = arrays["topic_coef"], arrays["topic_intercept"]
            topic_lr.classes_ = arrays["topic_classes"]
        model = cls(kind=config["kind"], labels=config["labels"], negative=config["negative"],
                    topics=config["topics"], weight=config["weight"], bigrams=config.get("bigrams", 0),
                    info=config["info"], tfidf=tfidf, lr=lr, topic_lr=topic_lr, device=device)
        if (path / "encoder.pt").exists():
            model.vocab = Vocab(json.loads((path / "vocab.json").read_text()))
            model.net = _net(model.vocab.size, len(model.labels), bigrams=config.get("bigrams", 0)).to(device)
            model.net.load_state_dict(torch.load(path / "encoder.pt", map_location=device, weights_only=True))
            model.net.eval()
        return model


def fit(texts: Sequence[str], labels: Sequence[str], topics: Sequence[str] | None = None, *,
        kind: str = "transformer", negative: str | None = None, time_budget: float = 600.0, max_epochs: int = 4,
        seed: int = 0, device: str | None = None, bigrams: int = BIGRAMS,
        progress: Callable[[dict], None] | None = None) -> TextClassifier:
    """Train a classifier on ``texts`` with ``labels`` (and ``topics``); see the module docstring."""
    from aigc.runtime import default_device

    if kind not in KINDS:
        raise InvalidInput(f"unknown classifier kind {kind!r}: use one of {', '.join(KINDS)}")
    texts = [str(t) for t in texts]
    labels = [str(x) for x in labels]
    classes = sorted(set(labels))
    if len(texts) < 10:
        raise InvalidInput(f"{len(texts)} labelled texts are too few to train a classifier: give at least 10")
    if len(classes) < 2:
        raise InvalidInput(f"every text has the label {classes[0]!r}: a classifier needs at least two labels")
    small = [c for c, n in Counter(labels).items() if n < 2]
    if small:
        raise InvalidInput(f"label(s) {small[:5]} have a single text each: give at least two texts per label")
    neg = negative_label(classes, negative)
    device = device or default_device()
    y = np.array([classes.index(x) for x in labels])
    rng = np.random.default_rng(seed)
    # A tenth held out (per label) to choose the fusion weight and the encoder's best epoch.
    held = np.zeros(len(texts), dtype=bool)
    for c in range(len(classes)):
        idx = np.flatnonzero(y == c)
        held[rng.choice(idx, size=max(1, len(idx) // 10), replace=False)] = True
    if kind == "tfidf":
        held[:] = False
    tr = np.flatnonzero(~held)
    va = np.flatnonzero(held)
    start = time.perf_counter()
    tfidf = _tfidf()
    X = tfidf.fit_transform([texts[i] for i in tr])
    lr = _logreg(seed).fit(X, y[tr])
    topic_lr = None
    topic_names: list[str] = []
    if topics is not None:
        t = np.array([str(x) for x in topics])
        topic_names = sorted(set(t.tolist()))
        if len(topic_names) >= 2:
            topic_lr = _logreg(seed).fit(X, t[tr])
    info: dict[str, Any] = {"texts": len(texts), "labels": dict(Counter(labels)), "ngram_seconds":
                            round(time.perf_counter() - start, 1), "device": device}
    model = TextClassifier(kind=kind, labels=classes, negative=neg, topics=topic_names, info=info, tfidf=tfidf,
                           lr=lr, topic_lr=topic_lr, device=device)
    if kind == "tfidf":
        return model
    vocab = Vocab.build([texts[i] for i in tr])
    val_texts = [texts[i] for i in va]
    net, log = train_encoder([texts[i] for i in tr], y[tr], len(classes), vocab=vocab, val=(val_texts, y[va]),
                             time_budget=max(1.0, time_budget - info["ngram_seconds"]), max_epochs=max_epochs,
                             seed=seed, device=device, bigrams=bigrams, progress=progress)
    model.vocab, model.net, model.bigrams = vocab, net, bigrams
    # The fusion weight: the lowest held-out log loss over a grid.
    enc = _encoder_logprobs(net, [vocab.encode(t) for t in val_texts], device)
    ngr = _logprobs(lr, tfidf.transform(val_texts))
    best = (math.inf, 0.0)
    for w in np.linspace(0, 1, 21):
        lp = w * enc + (1 - w) * ngr
        lp = lp - np.logaddexp.reduce(lp, axis=1, keepdims=True)
        best = min(best, (float(-lp[np.arange(len(va)), y[va]].mean()), float(w)))
    model.weight = round(best[1], 2)
    # The n-grams refitted on every training text (the held-out tenth only chose the weight and epoch).
    t = time.perf_counter()
    X = tfidf.fit_transform(texts)
    model.lr = _logreg(seed).fit(X, y)
    if topic_lr is not None:
        model.topic_lr = _logreg(seed).fit(X, np.array([str(x) for x in topics]))
    info["ngram_seconds"] = round(info["ngram_seconds"] + time.perf_counter() - t, 1)
    info.update(encoder={k: (round(v, 1) if isinstance(v, float) else v) for k, v in log.items()},
                fusion={"weight": model.weight, "val_loss": round(best[0], 4),
                        "encoder_val_accuracy": round(float((enc.argmax(1) == y[va]).mean()), 4),
                        "ngram_val_accuracy": round(float((ngr.argmax(1) == y[va]).mean()), 4)},
                seconds=round(time.perf_counter() - start, 1))
    return model


def model_dir(ws: Any, name: str) -> Path:
    from aigc.workspace import check_name

    return Path(ws.root) / "monitor" / "models" / check_name(name, "model name")


_CACHE: dict[str, tuple[float, TextClassifier]] = {}
_CACHE_LOCK = threading.Lock()


def load(ws: Any, name: str) -> TextClassifier:
    """The workspace's model ``name``, loaded once per process (again after it is retrained)."""
    from aigc.runtime import default_device

    path = model_dir(ws, name)
    config = path / "config.json"
    if not config.exists():
        raise NotFound(f"no monitor model {name!r}: train one with `aigc monitor train DATASET --name {name}`")
    key = str(path.resolve())
    stamp = config.stat().st_mtime_ns
    with _CACHE_LOCK:
        hit = _CACHE.get(key)
        if hit is None or hit[0] != stamp:
            hit = (stamp, TextClassifier.load(path, default_device()))
            _CACHE[key] = hit
        return hit[1]
