"""Requests batched into one llama_decode per step: each gets the answer a Drift session gives it alone."""

import pytest

from drift_cpp.steer.batching import Batcher, Job
from drift_cpp.steer.session import Drift
from drift_cpp.errors import DriftError
from drift_cpp.steer.build import drift_formula
from drift_cpp.models import ModelOptions, load_model
from drift_cpp.params import EngineOptions, Sampling
from drift_cpp.fit.profile import Profile

GREEDY = Sampling(temperature=0, max_tokens=20)
ENGINE = EngineOptions(n_ctx=256)
OCEAN = [{"role": "user", "content": "Tell me about the ocean."}]
FRUITS = [{"role": "user", "content": "Name three fruits."}]


@pytest.fixture(scope="module")
def model():
    return load_model(None, ModelOptions(threads=1))


@pytest.fixture(scope="module")
def formulas(model):
    alice = Profile.with_weights(model, {"concise": 0.8, "humor": -0.6})
    bob = Profile.with_weights(model, {"concise": -0.6, "humor": 0.8})
    return [drift_formula(None, [(p, 1.0)], 0.5) for p in (alice, bob)]


def _alone(model, formula, messages, sampling=GREEDY) -> str:
    return Drift(formula=formula, engine=ENGINE, options=model.options).generate(messages, sampling).text


def _together(batcher, jobs):
    for job in jobs:
        batcher.submit(job)
    for job in jobs:
        job.done.wait()
    return jobs


def test_users_submitted_together_share_one_batch_and_get_their_solo_answers(model, formulas):
    batcher = Batcher(model, model, ENGINE, n_threads=1, slots=4)
    jobs = [Job(formulas[0], OCEAN, GREEDY), Job(formulas[1], OCEAN, GREEDY), Job(formulas[0], FRUITS, GREEDY)]
    _together(batcher, jobs)
    assert [j.error for j in jobs] == [None] * 3
    (lane,) = batcher.state()
    assert lane["batches"] == {3: 1}  # one generate call advanced all three
    alone = [_alone(model, formulas[0], OCEAN), _alone(model, formulas[1], OCEAN), _alone(model, formulas[0], FRUITS)]
    assert [j.result.text for j in jobs] == alone and len(set(alone)) == 3


def test_a_cancelled_request_stops_within_a_token_and_leaves_its_batch_mates_alone(model, formulas):
    batcher = Batcher(model, model, ENGINE, n_threads=1, slots=2)
    pieces = []

    def on_piece(text):
        pieces.append(text)
        if len(pieces) == 3:
            leaving.cancel.set()

    leaving = Job(formulas[0], OCEAN, Sampling(temperature=0, max_tokens=200), on_piece)
    staying = Job(formulas[1], OCEAN, GREEDY)
    _together(batcher, [leaving, staying])
    assert leaving.result.finish_reason == "interrupted" and len(leaving.result.tokens) == 3
    assert staying.result.text == _alone(model, formulas[1], OCEAN)


def test_a_request_that_fails_fails_alone(model, formulas):
    batcher = Batcher(model, model, ENGINE, n_threads=1, slots=2)
    too_long = [{"role": "user", "content": "ocean " * 400}]  # beyond n_ctx = 256
    bad, good = _together(batcher, [Job(formulas[0], too_long, GREEDY), Job(formulas[0], FRUITS, GREEDY)])
    assert isinstance(bad.error, DriftError) and "context holds 256" in str(bad.error) and good.error is None
    assert good.result.text == _alone(model, formulas[0], FRUITS)
    assert batcher.generate(Job(formulas[0], OCEAN, GREEDY)).text == _alone(model, formulas[0], OCEAN)


def test_a_request_s_choices_stay_in_one_batch_and_each_gets_its_solo_answer(model, formulas):
    """Two lone requests and three choices of one, queued together for four slots: the choices wait for a
    batch that holds them all rather than split. Each choice samples with its own seed."""
    batcher = Batcher(model, model, ENGINE, n_threads=1, slots=4, quiet=1.0, window=2.0)  # all queued first
    batcher.lane(formulas[0])  # its engine made before the jobs arrive
    singles = [Job(formulas[1], FRUITS, GREEDY), Job(formulas[0], FRUITS, GREEDY)]
    choices = [Job(formulas[0], OCEAN, Sampling(temperature=0.8, seed=s, max_tokens=12)) for s in range(3)]
    for job in singles:
        batcher.submit(job)
    batcher.submit(*choices)
    for job in singles + choices:
        job.done.wait()
    (lane,) = batcher.state()
    assert lane["batches"] == {2: 1, 3: 1}  # the two lone ones first, then the three choices together
    assert [j.result.text for j in choices] == [_alone(model, formulas[0], OCEAN, j.sampling) for j in choices]
    with pytest.raises(DriftError, match="5 answers cannot run in one batch of 4 slots"):
        batcher.submit(*[Job(formulas[0], OCEAN, GREEDY) for _ in range(5)])
