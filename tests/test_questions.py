"""The questions that choose two of k samples by the profile (active, informative), on the embedded model:
the two shown are two of the samples, the one chosen is the best by the strategy's own measure, and
recording the pick scores nothing again (the candidates were scored when the question was asked)."""

import itertools

import pytest

from drift_cpp.models import ModelOptions
from drift_cpp.params import Sampling
from drift_cpp.score.attributes import builtin_attributes
from drift_cpp.score.cache import ScoreCache
from drift_cpp.score.scorer import Scorer
from drift_cpp.steer import questions
from drift_cpp.steer.session import Drift

ATTRS = builtin_attributes().select(include=["concise", "humor"])
HISTORY = [{"role": "user", "content": "Give me a tip for sleeping well."}]
SEED_PICKS = [("Is it raining?", "Yes, take an umbrella.", "It might be raining, or it might not; hard to say."),
              ("Name a fruit.", "An apple.", "Fruit is a broad category with many members, such as apples.")]


@pytest.mark.parametrize("strategy", questions.CHOOSING)
def test_two_of_k_samples_chosen_by_the_profile_and_the_pick_scores_nothing_again(strategy, tmp_path, smollm):
    scorer = Scorer(smollm, cache=ScoreCache(tmp_path / "cache.sqlite"))
    learner = questions.Learner(tmp_path / "me.json", lambda: scorer, ATTRS, strategy, k=3)
    for prompt, a, b in SEED_PICKS:
        learner.record(questions.Question([{"role": "user", "content": prompt}], (a, b), ("1", "2"), "samples"), 1)
    drift = Drift(options=ModelOptions(threads=1))
    sampling = Sampling(max_tokens=24, seed=7)
    question = learner.ask(drift, HISTORY, sampling)
    samples = [s.text for s in questions._samples(drift, HISTORY, sampling, 3)]
    assert question.strategy == strategy and set(question.answers) <= set(samples)

    profile = learner.ready()
    judged = questions.judge_candidates(profile, samples, HISTORY, scorer)
    assert len(judged) == len(list(itertools.combinations(range(3), 2)))  # three distinct samples
    shown = next(ij for ij in judged if (samples[ij[0]], samples[ij[1]]) == question.answers)
    if strategy == "active":
        assert abs(judged[shown][0]) == min(abs(m) for m, _ in judged.values())
    else:
        assert judged[shown][1] == max(i for _, i in judged.values()) > 0

    before = scorer.cost
    learner.record(question, 1)
    assert (scorer.cost - before).tokens_evaluated == 0
