"""The batched, prefix-sharing scorer against llama-cpp-python's Llama plus numpy."""

import json
import re
import subprocess
import sys

import numpy as np
import pytest

from drift_cpp.errors import DriftError
from drift_cpp.score.scorer import ScoreRequest, Scorer

SYSTEMS = ["You are an AI assistant.", "You are a humorous AI assistant."]
QUESTIONS = ["What is the capital of France?", "Explain photosynthesis briefly."]
RESPONSES = ["The capital of France is Paris.", "Paris!",
             "Photosynthesis turns light into chemical energy in plants.", " Leading space,\nand a newline."]


def requests():
    return [ScoreRequest(s, (("user", q),), r) for s in SYSTEMS for q in QUESTIONS for r in RESPONSES]


def reference_token_logprobs(llm, prompt, response):
    llm.reset()
    llm.eval(prompt + response)
    logits = np.array(llm.scores[: len(prompt) + len(response)], dtype=np.float64)
    shifted = logits - logits.max(axis=1, keepdims=True)
    logsoftmax = shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))
    return np.array([logsoftmax[len(prompt) - 1 + t, tok] for t, tok in enumerate(response)])


def test_logprobs_match_llama_reference_per_token(smollm, reference_llm):
    scorer = Scorer(smollm, progress=False)
    for req in requests():
        prompt, response = scorer.tokens(req, smollm.render(scorer._messages(req)))
        tokens, ours = scorer.token_logprobs(req)
        assert tokens == response
        ref = reference_token_logprobs(reference_llm, prompt, response)
        np.testing.assert_allclose(ours, ref, atol=1e-3)


def test_scored_tokens_decode_back_to_the_response(smollm):
    scorer = Scorer(smollm, progress=False)
    for req in requests() + [ScoreRequest("You are an AI assistant.", (("user", "x"),), "<|im_end|> literal")]:
        tokens, _ = scorer.token_logprobs(req)
        assert smollm.detokenize(tokens) == req.response


def test_batched_shared_and_one_at_a_time_agree(smollm):
    reqs = requests()
    together = Scorer(smollm, progress=False)
    batch = together.score(reqs)
    stats = together.core.stats
    assert stats["evaluated_tokens"] < stats["naive_tokens"]  # prefixes were shared
    alone = np.array([Scorer(smollm, progress=False).score([r]).logprob[0] for r in reqs])
    np.testing.assert_array_equal(batch.logprob, alone)
    # duplicates are scored once and answered in request order
    again = together.score(reqs[::-1] + reqs[:2])
    np.testing.assert_array_equal(again.logprob, np.concatenate([batch.logprob[::-1], batch.logprob[:2]]))


def test_cache_resumes_and_returns_same_scores(smollm, tmp_cache):
    from drift_cpp.score.cache import ScoreCache
    reqs = requests()[:4]
    first = Scorer(smollm, cache=ScoreCache(), progress=False).score(reqs)
    scorer = Scorer(smollm, cache=ScoreCache(), progress=False)
    second = scorer.score(reqs)
    assert scorer.core.stats["evaluated_tokens"] == 0
    np.testing.assert_array_equal(first.logprob, second.logprob)


@pytest.mark.parametrize("req, message", [
    (ScoreRequest("S", (("user", "q"),), "  ", label="p.jsonl:3"), "p.jsonl:3: empty response"),
    (ScoreRequest("", (("user", "q"),), "r", label="p.jsonl:4"), "p.jsonl:4: empty system prompt"),
    (ScoreRequest("S", (("user", "q"),), "bad \udcff byte", label="p.jsonl:5"), "p.jsonl:5: text is not valid UTF-8"),
])
def test_bad_items_are_named(smollm, req, message):
    with pytest.raises(DriftError) as e:
        Scorer(smollm, progress=False).score([req])
    assert str(e.value) == message


def test_overlong_response_is_an_error_or_truncated_on_request(smollm):
    long = " ".join(["word"] * 400)
    req = ScoreRequest("S", (("user", "q"),), long, label="p.jsonl:9")
    with pytest.raises(DriftError, match=r"^p.jsonl:9: the prompt \(\d+ tokens with the system prompt\) and the "
                       r"response \(\d+ tokens\) need \d+ tokens, but the scorer's context holds 256: shorten the "
                       r"prompt by at least \d+ tokens \(drop its oldest messages or text\) or the response, or score "
                       r"responses on their first tokens \(--max-response-tokens\)$"):
        Scorer(smollm, n_ctx=256, max_response_tokens=0, progress=False).score([req])  # whole responses
    truncated = Scorer(smollm, n_ctx=256, max_response_tokens=100, progress=False).score([req])
    assert truncated.n_tokens[0] == 100


def test_an_overlong_prompt_is_refused_with_advice_that_works(smollm):
    # Issue 20: the advice was to set --max-response-tokens, which cannot shorten a prompt.
    scorer = Scorer(smollm, n_ctx=256, max_response_tokens=100, progress=False)
    words = ["word"] * 400
    with pytest.raises(DriftError) as e:
        scorer.check([ScoreRequest("S", (("user", " ".join(words)),), "Yes.", label="p.jsonl:3")])
    cut = int(re.search(r"shorten the prompt by at least (\d+) tokens \(drop its oldest messages or text\)$",
                        str(e.value))[1])
    scorer.check([ScoreRequest("S", (("user", " ".join(words[cut:])),), "Yes.")])  # its end, as advised, fits
    with pytest.raises(DriftError, match="shorten the prompt by at least 1 token "):
        scorer.check([ScoreRequest("S", (("user", " ".join(words[cut - 1:])),), "Yes.")])


def test_score_command_prints_logprob_and_tokens(smollm):
    run = subprocess.run([sys.executable, "-m", "drift_cpp.cli", "score", "--system", "You are an AI assistant.",
                          "--prompt", "Hi", "--response", "Hello there!", "--json"], capture_output=True, text=True)
    assert run.returncode == 0, run.stderr
    out = json.loads(run.stdout)
    ref = Scorer(smollm, progress=False).score(
        [ScoreRequest("You are an AI assistant.", (("user", "Hi"),), "Hello there!")])
    assert out["n_tokens"] == ref.n_tokens[0]
    assert abs(out["logprob"] - ref.logprob[0]) < 1e-4


def test_a_model_changed_in_the_middle_does_not_reuse_the_originals_scores(smollm, tmp_cache, tmp_path):
    # A copy with 4 KiB zeroed mid-file used to share the original's identity (size, first and
    # last MiB), and so its cached scores. The identity is now the sha256 of the whole file.
    from drift_cpp.models import HASHES_FILE, Model
    from drift_cpp.score.cache import ScoreCache

    data = bytearray(smollm.path.read_bytes())
    middle = len(data) // 2
    data[middle: middle + 4096] = bytes(4096)
    changed_path = tmp_path / "changed.gguf"
    changed_path.write_bytes(data)
    changed = Model(changed_path)
    assert changed.identity["sha256"] != Model(smollm.path).identity["sha256"]
    memo = json.loads((tmp_cache / HASHES_FILE).read_text())
    assert memo[str(changed_path.resolve())]["sha256"] == changed.identity["sha256"]

    req = requests()[:4]
    cache = ScoreCache(tmp_cache / "scores.sqlite")
    original = Scorer(smollm, cache=cache, progress=False).score(req).logprob
    cached = Scorer(changed, cache=cache, progress=False).score(req).logprob
    fresh = Scorer(changed, progress=False).score(req).logprob
    assert not np.allclose(fresh, original)  # the change matters, so reusing scores would be wrong
    np.testing.assert_array_equal(cached, fresh)
