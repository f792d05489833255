"""Text features of responses: bags of words and their tfidf, as the per-user model and the
bag-of-words baseline read them."""

from __future__ import annotations

import math
import re
from collections import Counter
from functools import lru_cache
from typing import Mapping, Sequence, Union

import numpy as np

Doc = Union[str, Mapping[str, int]]  # a response: its text, or its term counts
_WORD = re.compile(r"[a-z0-9]+(?:'[a-z]+)?")


@lru_cache(maxsize=1 << 16)
def _text_counts(text: str) -> tuple[tuple[str, int], ...]:
    return tuple(Counter(_WORD.findall(text.lower())).items())


def term_items(doc: Doc) -> tuple[tuple[str, int], ...]:
    """A document's (term, count) items: of a text, or of counts already taken (a profile stores those)."""
    return _text_counts(doc) if isinstance(doc, str) else tuple(doc.items())


def tokenize(text: str) -> list[str]:
    """Lower-cased word tokens (letters and digits, with an apostrophe suffix like "don't")."""
    return _WORD.findall(text.lower())


def term_counts(text: str) -> dict[str, int]:
    """The bag of words of a text, as tfidf_fit and tfidf_transform read it in place of the text."""
    return dict(_text_counts(text))


def tfidf_fit(docs: Sequence[Doc]) -> tuple[dict[str, int], np.ndarray]:
    """Vocabulary (term -> column) and smoothed idf = ln((1 + N) / (1 + df)) + 1 of `docs` (texts or term counts)."""
    df: Counter = Counter()
    for d in docs:
        df.update(t for t, _ in term_items(d))
    vocab = {t: i for i, t in enumerate(sorted(df))}
    N = len(docs)
    idf = np.array([math.log((1 + N) / (1 + df[t])) + 1.0 for t in sorted(df)], dtype=np.float64)
    return vocab, idf


def tfidf_transform(docs: Sequence[Doc], vocab: Mapping[str, int], idf: np.ndarray) -> np.ndarray:
    """Rows: sublinear tf (1 + ln count) times idf, l2-normalized; terms outside the vocabulary dropped."""
    X = np.zeros((len(docs), len(vocab)), dtype=np.float64)
    for r, d in enumerate(docs):
        for t, c in term_items(d):
            j = vocab.get(t)
            if j is not None:
                X[r, j] = 1.0 + math.log(c)
    X *= idf
    norms = np.linalg.norm(X, axis=1, keepdims=True)
    return X / np.where(norms > 0, norms, 1.0)


def _pairs_key(pairs: Sequence[tuple[Doc, Doc]]) -> tuple:
    """Hashable pairs of documents, so that the designs below are cached."""
    return tuple((c, r) if isinstance(c, str) and isinstance(r, str) else (term_items(c), term_items(r))
                 for c, r in pairs)


def _as_doc(doc) -> Doc:
    return doc if isinstance(doc, str) else dict(doc)


@lru_cache(maxsize=4)
def _bow_basis(train: tuple) -> tuple:
    """vocab, idf, X = tfidf(chosen) - tfidf(rejected) of the training pairs, and U, s of X = U S V^T."""
    docs = [_as_doc(t) for pair in train for t in pair]
    vocab, idf = tfidf_fit(docs)
    X = tfidf_transform(docs[0::2], vocab, idf) - tfidf_transform(docs[1::2], vocab, idf)
    lam, U = np.linalg.eigh(X @ X.T)
    keep = lam > 1e-10 * max(float(lam.max(initial=0.0)), 1e-300)
    return vocab, idf, X, U[:, keep], np.sqrt(lam[keep])


@lru_cache(maxsize=4)
def _bow_design(train: tuple, test: tuple) -> tuple[np.ndarray, np.ndarray]:
    vocab, idf, X, U, s = _bow_basis(train)
    docs = [_as_doc(t) for pair in test for t in pair]
    Xt = tfidf_transform(docs[0::2], vocab, idf) - tfidf_transform(docs[1::2], vocab, idf)
    return U * s, (Xt @ X.T) @ (U / s)


def bow_design(train: Sequence[tuple[Doc, Doc]], test: Sequence[tuple[Doc, Doc]]) -> tuple[np.ndarray, np.ndarray]:
    """(Z, Zt): training and test tfidf differences in the row space of the training ones.

    With X = tfidf(chosen) - tfidf(rejected) of the training pairs and X = U S V^T, an
    l2-penalized linear model b always lies in span(V), so b = V c and X b = (U S) c, with
    ||b|| = ||c||. U S and S come from the k x k Gram matrix X X^T (no vocabulary-sized SVD),
    and the test rows map to Xt V = (Xt X^T) U S^-1. Cached: successive methods (e.g. an l2
    grid) on the same split share the features.
    """
    return _bow_design(_pairs_key(train), _pairs_key(test))


def bow_word_weights(train: Sequence[tuple[Doc, Doc]], c: np.ndarray) -> tuple[dict[str, int], np.ndarray, np.ndarray]:
    """(vocab, idf, b): the weights b = V c over the vocabulary of a model fitted on bow_design's Z."""
    vocab, idf, X, U, s = _bow_basis(_pairs_key(train))
    return vocab, idf, X.T @ ((U / s) @ np.asarray(c, dtype=np.float64))
