"""Synthetic users whose true taste is known: one feature family decides, the others are noise.

Used by tests/test_choice.py and by experiments/choice_constants.py, which admits only priors under
which a clear length taste, for longer or for shorter answers, is followed from 20 pairs.
"""

import numpy as np

NEUTRAL = [f"w{i}" for i in range(300)]
LIKED, DISLIKED = ["kindly", "please", "thanks"], ["dude", "whatever", "nah"]
KINDS = ("length", "shorter", "lexical", "attributes", "noise")


def text(rng, n_words, liked=0, disliked=0):
    words = list(rng.choice(NEUTRAL, n_words)) + list(rng.choice(LIKED, liked)) + list(rng.choice(DISLIKED, disliked))
    rng.shuffle(words)
    return " ".join(words)


def user(kind, n, seed, k=14):
    """n pairs (W, L, texts) of a user who prefers by `kind` alone."""
    if kind == "shorter":  # the length user with every pair reversed
        W, L, docs = user("length", n, seed, k)
        return L, W, [(r, c) for c, r in docs]
    rng = np.random.default_rng(seed)
    W, L = rng.normal(0, 3, (n, k)), rng.normal(0, 3, (n, k))
    v = rng.normal(size=k)
    docs = []
    for j in range(n):
        na, nb = rng.integers(15, 80, 2)
        a, b = text(rng, na), text(rng, nb)
        if kind == "length":  # a strong, not a certain, taste for longer answers
            first = rng.random() < 1 / (1 + np.exp(-4 * (np.log1p(na) - np.log1p(nb))))
        elif kind == "lexical":  # a liked word in one answer, a disliked one in the other; lengths unrelated
            a, b, first = text(rng, na // 2, liked=1), text(rng, nb // 2, disliked=1), True
        elif kind == "attributes":
            first = (W[j] - L[j]) @ v > 0
        elif kind == "noise":  # coin flips
            first = rng.random() < 0.5
        else:
            raise ValueError(f"unknown kind {kind!r} (choose from {', '.join(KINDS)})")
        docs.append((a, b) if first else (b, a))
        if not first:
            W[j], L[j] = L[j].copy(), W[j].copy()
    return W, L, docs
