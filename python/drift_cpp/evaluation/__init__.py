"""Few-shot preference-modelling evaluation (paper section 4.2 and section 5).

Pure functions over numpy arrays (matplotlib only for the plots, imported lazily). A pair
set is a `Fold`: the reward features W, L of shape (n_pairs, k) -- rewards of the chosen
and rejected responses under each attribute, already normalized ('sum' or 'mean') by the
caller -- and/or the texts (chosen, rejected) for the text baselines.

Every method is fitted on the training fold and returns its accuracy on the test fold
(a margin of exactly 0 counts 0.5, as in approximation.accuracy):

    longer       always prefer the longer response (characters); nothing is fitted
    best_single  the one attribute whose training column sum of W - L has the largest |value|,
                 used with its sign
    drift        the paper's closed form (approximation.fit, method "qp"); with n_attributes=m
                 only the top-m |p| weights are kept (paper Figure 4)
    logistic     approximation.fit_logistic (absolute labels, section 5)
    bt           approximation.fit_bradley_terry (pairwise)
    standardize  per-attribute standardization with training statistics, then qp
    with_length  response length as one more feature, bt fit
    chosen       drift-cpp's per-user choice among attributes, length and lexical features (choice.py)
    bow_rm       a conventional learned reward model sized for a laptop: Bradley-Terry
                 logistic regression on TF-IDF features of the response text

cross_validate draws random train/test splits of one pair set; holdout samples training
sets from a train pool and always tests on a fixed, disjoint test pool. Both use fixed
seeds, so the same arguments give the same numbers, and all methods see the same splits.
"""

from .methods import (BASELINES, Fold, MethodSpec, best_single, bow_rm, bt, drift, evaluate, logistic, longer,
                      resolve_methods, standardize, with_length)
from ..fit.features import tfidf_fit, tfidf_transform, tokenize
from .protocols import (DEFAULT_SEED, MIN_TEST, USER_KS, average_results, best_by_k, cross_validate,
                        group_partition, holdout, user_methods)
from .reports import format_table, plot, plot_bars

__all__ = ["BASELINES", "Fold", "MethodSpec", "best_single", "bow_rm", "bt", "drift", "evaluate", "logistic",
           "longer", "resolve_methods", "standardize", "tfidf_fit", "tfidf_transform", "tokenize", "with_length",
           "DEFAULT_SEED", "MIN_TEST", "USER_KS", "average_results", "best_by_k", "cross_validate",
           "group_partition", "holdout", "user_methods", "format_table", "plot", "plot_bars"]
