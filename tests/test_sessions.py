"""Sessions under abuse: closed streams, callers on several threads, cancellation within a token.

These used to crash the process (GGML_ASSERT or SIGSEGV): a stream's worker thread ran on
after the consumer left, and two threads drove one engine at once.
"""

import threading

import pytest

from drift_cpp.steer.session import Drift, Sampling
from drift_cpp.fit.profile import Profile

GREEDY = Sampling(temperature=0, max_tokens=24)
PROMPT = "Tell me about the ocean."
ITERATIONS = 50


@pytest.fixture(scope="module")
def session(smollm):
    return Drift(profile=Profile.with_weights(smollm, {"concise": 0.6, "humor": -0.4}))


def test_breaking_out_of_a_stream_then_generating_gives_the_sequential_answers(session):
    # Reference: the same calls in the same order, with the stream read to its end.
    list(session.stream(PROMPT, GREEDY))
    expected = session.generate(PROMPT, GREEDY).text
    for _ in range(ITERATIONS):
        stream = session.stream(PROMPT, GREEDY)
        pieces = [next(stream), next(stream)]
        stream.close()  # what a `break` does
        assert expected.startswith("".join(pieces))
        assert session._lock.acquire(blocking=False)  # the worker is gone: the session is free
        session._lock.release()
        assert session.generate(PROMPT, GREEDY).text == expected


def test_two_threads_on_one_session_get_the_sequential_answers(session):
    expected = session.generate(PROMPT, GREEDY).text
    for _ in range(ITERATIONS):
        results, errors = [], []

        def call():
            try:
                results.append(session.generate(PROMPT, GREEDY).text)
            except BaseException as e:  # noqa: BLE001  (reported below)
                errors.append(e)

        threads = [threading.Thread(target=call) for _ in range(2)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert not errors and results == [expected, expected]


def test_a_callback_returning_false_stops_within_that_token(session):
    seen = []

    def on_piece(piece):
        seen.append(piece)
        return len(seen) < 3

    result = session.generate(PROMPT, Sampling(temperature=0, max_tokens=200), on_piece=on_piece)
    assert result.finish_reason == "interrupted"
    assert len(seen) == 3 and result.text == "".join(seen)
    assert session.llm.detokenize(result.tokens) == result.text  # no token sampled after the stop

