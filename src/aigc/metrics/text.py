"""Text quality metrics: overlap with references (BLEU, chrF), diversity (distinct-n, self-BLEU),
copying from the training data (memorization) and obedience to conditions (a classifier of each
condition column, scikit-learn's char n-gram TF-IDF + logistic regression).

Pure functions over strings; BLEU and chrF come from sacrebleu so the numbers match published ones.
No model code, no tokenizer of ours: Chinese is scored with sacrebleu's "zh" tokenization and, for
distinct-n, one unit per Han character.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

import numpy as np
from sacrebleu.metrics import BLEU, CHRF
from sacrebleu.metrics.helpers import extract_all_word_ngrams

from aigc.errors import InvalidInput

# Han ideographs (BMP, extension A, compatibility, and the supplementary planes), kana and Hangul
# syllables: scripts written without spaces between words, so each character is one unit.
_CJK = "\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff\uac00-\ud7af\U00020000-\U0003134f"
_HAN = re.compile("[\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff\U00020000-\U0003134f]")
# A unit is one CJK character, or a run of letters/digits from any other script ("iPhone", "15").
# Punctuation, symbols, underscores and whitespace are dropped.
_UNIT = re.compile(f"[{_CJK}]|(?:(?![{_CJK}])[^\\W_])+")


def units(text: str) -> list[str]:
    """The units distinct-n counts: Latin/number runs as words, each CJK char alone, no punctuation.

    ``units("iPhone 15很好用!")`` -> ``["iPhone", "15", "很", "好", "用"]``. Case is kept.
    """
    return _UNIT.findall(text)


def _bleu_tokenize(references: Sequence[str]) -> str:
    return "zh" if any(_HAN.search(r) for r in references) else "13a"


def _check_pairs(hypotheses: Sequence[str], references: Sequence[str]) -> None:
    if isinstance(hypotheses, str) or isinstance(references, str):
        raise InvalidInput("hypotheses and references must be lists of strings, got a single string")
    if len(hypotheses) != len(references):
        raise InvalidInput(
            "hypotheses and references must have the same length, "
            f"got {len(hypotheses)} and {len(references)}"
        )
    if not hypotheses:
        raise InvalidInput("hypotheses and references must not be empty")


def bleu(hypotheses: list[str], references: list[str]) -> float:
    """Corpus BLEU (0-100) with one reference per hypothesis; "zh" tokenization if any reference has Han."""
    _check_pairs(hypotheses, references)
    metric = BLEU(tokenize=_bleu_tokenize(references))
    return min(100.0, metric.corpus_score(list(hypotheses), [list(references)]).score)


def chrf(hypotheses: list[str], references: list[str]) -> float:
    """Corpus chrF (0-100): character n-gram F-score, needs no word tokenization, so fine for Chinese."""
    _check_pairs(hypotheses, references)
    return min(100.0, CHRF().corpus_score(list(hypotheses), [list(references)]).score)


def distinct_n(texts: list[str], n: int) -> float:
    """Unique n-grams / total n-grams over the corpus (n-grams never cross texts), in :func:`units`.

    1.0 means no n-gram repeats anywhere; low values mean repetitive output. 0.0 when no text has
    ``n`` units.
    """
    if n < 1:
        raise InvalidInput(f"n must be >= 1, got {n}")
    seen: set[tuple[str, ...]] = set()
    total = 0
    for text in texts:
        u = units(text)
        grams = [tuple(u[i : i + n]) for i in range(len(u) - n + 1)]
        total += len(grams)
        seen.update(grams)
    return len(seen) / total if total else 0.0


def self_bleu(texts: list[str], max_texts: int = 200) -> float:
    """Mean sentence BLEU (0-100) of each text against all the others as references.

    High means the texts resemble each other (low diversity). Above ``max_texts`` texts (cost grows
    with the square), an evenly spaced subset is scored, so the result is deterministic.
    Sentence BLEU uses effective order so short texts are not zeroed by missing 4-grams.
    """
    if max_texts < 2:
        raise InvalidInput(f"max_texts must be >= 2, got {max_texts}")
    texts = list(texts)
    if len(texts) < 2:
        raise InvalidInput(f"self_bleu needs at least 2 texts to compare, got {len(texts)}")
    if len(texts) > max_texts:
        texts = [texts[i * len(texts) // max_texts] for i in range(max_texts)]
    # Same numbers as BLEU(effective_order=True).sentence_score(text, others) for each text (a test
    # checks this), but each text is tokenized once instead of once per hypothesis: with "zh"
    # tokenization that is 0.3 s instead of 19 s for 200 reviews.
    metric = BLEU(tokenize=_bleu_tokenize(texts), effective_order=True)
    order = metric.max_ngram_order
    stats = [extract_all_word_ngrams(metric.tokenizer(t.rstrip()), 1, order) for t in texts]
    # Per n-gram: [best count, text holding it, second-best count]. The reference count for text i
    # (max over all the other texts) is the best unless text i holds it, then the second best.
    best: dict[tuple[str, ...], list[int]] = {}
    for i, (grams, _) in enumerate(stats):
        for gram, count in grams.items():
            b = best.get(gram)
            if b is None:
                best[gram] = [count, i, 0]
            elif count > b[0]:
                b[0], b[1], b[2] = count, i, b[0]
            elif count > b[2]:
                b[2] = count
    lengths = [n for _, n in stats]
    scores = []
    for i, (grams, hyp_len) in enumerate(stats):
        correct, total = [0] * order, [0] * order
        for gram, count in grams.items():
            b = best[gram]
            total[len(gram) - 1] += count
            correct[len(gram) - 1] += min(count, b[2] if b[1] == i else b[0])
        # sacrebleu's rule: the reference length closest to the hypothesis, the shorter on a tie
        ref_len = min((abs(n - hyp_len), n) for j, n in enumerate(lengths) if j != i)[1]
        score = BLEU.compute_bleu(
            correct, total, hyp_len, ref_len, smooth_method=metric.smooth_method,
            smooth_value=metric.smooth_value, effective_order=True, max_ngram_order=order,
        ).score
        scores.append(score)
    return min(100.0, sum(scores) / len(scores))


# ---------------------------------------------------------------------- memorization

_BASE = np.uint64(0x100000001B3)  # odd 64-bit multiplier (FNV prime); arithmetic wraps mod 2**64
_BLOCK = 1 << 20  # training windows hashed per step: bounds memory to a few tens of MB


def _window_hashes(codes: np.ndarray, span: int) -> np.ndarray:
    """Polynomial hash of every ``span``-long window: ``codes`` (N,) uint32 -> (N - span + 1,) uint64."""
    n = len(codes) - span + 1
    acc = np.zeros(n, dtype=np.uint64)
    for j in range(span):  # span vectorized passes instead of a Python loop over N positions
        acc *= _BASE
        acc += codes[j : j + n]
    return acc


def _codes(text: str) -> np.ndarray:
    return np.frombuffer(text.encode("utf-32-le"), dtype=np.uint32)  # (len(text),) code points


def memorization(
    generated: list[str], train_texts: list[str] | str, span: int = 50, stride: int = 10
) -> dict:
    """Share of generated ``span``-char windows (every ``stride`` chars) found verbatim in the training text.

    Returns ``{"spans": n, "memorized": k, "rate": k / n}``; ``rate`` is None when no generated text
    has ``span`` characters. Training texts are joined with "\\n".

    Every window of the training text is hashed (64-bit polynomial hash, in numpy blocks) and looked
    up among the generated windows' hashes: about 1 s per 10 MB of training text, however many
    generated texts (a substring search per window would cost ~5 ms each at that size).
    """
    if span < 1 or stride < 1:
        raise InvalidInput(f"span and stride must be >= 1, got span={span}, stride={stride}")
    if isinstance(generated, str):
        generated = [generated]
    train = train_texts if isinstance(train_texts, str) else "\n".join(train_texts)

    gen_hashes = [
        _window_hashes(_codes(g), span)[::stride] for g in generated if len(g) >= span
    ]  # each (windows,)
    spans = sum(len(h) for h in gen_hashes)
    if spans == 0:
        return {"spans": 0, "memorized": 0, "rate": None}
    wanted = np.unique(np.concatenate(gen_hashes))  # (m,) sorted
    found = np.zeros(len(wanted), dtype=bool)

    codes = _codes(train)
    for start in range(0, max(len(codes) - span + 1, 0), _BLOCK):
        block = _window_hashes(codes[start : start + _BLOCK + span - 1], span)
        pos = np.searchsorted(wanted, block).clip(max=len(wanted) - 1)
        hit = wanted[pos] == block
        found[pos[hit]] = True

    all_gen = np.concatenate(gen_hashes)
    memorized = int(found[np.searchsorted(wanted, all_gen)].sum())
    return {"spans": spans, "memorized": memorized, "rate": memorized / spans}


# ---------------------------------------------------------------------- conditions

CLASSIFY_CHARS = 200  # a condition classifier reads this many leading characters of every text
CLASSIFIER_TEXTS = 20_000  # train texts a condition classifier fits on at most (evenly spaced)


def fit_condition_classifiers(texts: Sequence[str], labels: dict[str, Sequence[str]], *, seed: int = 0,
                              max_texts: int = CLASSIFIER_TEXTS) -> dict:
    """A classifier per condition column: character n-gram TF-IDF + logistic regression.

    ``labels`` maps each column to the value of every text. Character n-grams within word
    boundaries (``char_wb``, 1 to 4 characters) need no word tokenizer, so Chinese is read like any
    other script; one vocabulary serves every column. The logistic regression is fitted by SGD
    (scikit-learn's ``SGDClassifier(loss="log_loss")``), several times faster than the lbfgs solver
    on many classes and hundreds of thousands of n-grams, at the same accuracy. Texts are cut to
    :data:`CLASSIFY_CHARS`, so real records and generated samples are judged on the same footing;
    above ``max_texts`` an evenly spaced subset is used. Returns {column: fitted scikit-learn
    pipeline} (``predict``, ``predict_proba``, ``classes_``), deterministic for a seed.
    """
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.linear_model import SGDClassifier
    from sklearn.pipeline import Pipeline

    if isinstance(texts, str):
        raise InvalidInput("texts must be a list of strings, got a single string")
    texts = list(texts)
    if max_texts < 2:
        raise InvalidInput(f"max_texts must be >= 2, got {max_texts}")
    for col, values in labels.items():
        if len(values) != len(texts):
            raise InvalidInput(f"column {col!r} has {len(values)} values for {len(texts)} texts: give one per text")
        if len(set(values)) < 2:
            raise InvalidInput(f"column {col!r} needs at least 2 distinct values to classify, got {sorted(set(values))}")
    if not labels:
        return {}
    pick = range(len(texts))
    if len(texts) > max_texts:
        pick = [i * len(texts) // max_texts for i in range(max_texts)]
    vectorizer = TfidfVectorizer(analyzer="char_wb", ngram_range=(1, 4), sublinear_tf=True, min_df=2,
                                 max_features=1 << 18, dtype=np.float32)
    x = vectorizer.fit_transform([texts[i][:CLASSIFY_CHARS] for i in pick])  # (N, F) sparse
    out = {}
    for col, values in labels.items():
        clf = SGDClassifier(loss="log_loss", alpha=2e-5, max_iter=20, tol=None, random_state=seed)
        clf.fit(x, [str(values[i]) for i in pick])
        out[col] = Pipeline([("tfidf", vectorizer), ("logreg", clf)])
    return out


def classify(classifier, texts: Sequence[str]) -> list[str]:
    """The value ``classifier`` (from :func:`fit_condition_classifier`) names for each text."""
    if isinstance(texts, str):
        raise InvalidInput("texts must be a list of strings, got a single string")
    if not texts:
        return []
    return [str(v) for v in classifier.predict([t[:CLASSIFY_CHARS] for t in texts])]


def condition_accuracy(classifier, texts: Sequence[str], asked: Sequence[str]) -> float:
    """Share of ``texts`` that ``classifier`` assigns to the value each was asked for, in [0, 1]."""
    if isinstance(texts, str) or isinstance(asked, str):
        raise InvalidInput("texts and asked must be lists of strings, got a single string")
    if len(texts) != len(asked) or not texts:
        raise InvalidInput(f"texts and asked must be non-empty and of one length, got {len(texts)} and {len(asked)}")
    named = classify(classifier, texts)
    return sum(n == str(a) for n, a in zip(named, asked)) / len(named)


def majority_share(values: Sequence[str]) -> float:
    """Share of the most frequent value: the accuracy of always guessing it (chance level)."""
    if not values:
        raise InvalidInput("majority_share needs at least one value")
    counts: dict[str, int] = {}
    for v in values:
        counts[v] = counts.get(v, 0) + 1
    return max(counts.values()) / len(values)
