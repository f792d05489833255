"""JSON output and the usual request fields of `drift-cpp serve` (issue 23), driven by the official openai
client: response_format, logit_bias, n, stream_options.include_usage, and a 400 for any other field.

The embedded model at --threads 1, few tokens. 'alice' has a profile that steers at once.
"""

import json
from concurrent.futures import ThreadPoolExecutor

import httpx
import openai
import pytest
from serving import AUTH, KEY, running
from test_grammar import SCHEMA, conforms

from drift_cpp.fit.profile import Profile

PROMPT = [{"role": "user", "content": "Tell me about the ocean."}]
JSON_SCHEMA = {"type": "json_schema", "json_schema": {"name": "place", "schema": SCHEMA}}


@pytest.fixture(scope="module")
def server(smollm, tmp_path_factory):
    root = tmp_path_factory.mktemp("serve-json")
    profiles = root / "profiles"
    profiles.mkdir()
    Profile.with_weights(smollm, {"concise": 0.8, "humor": -0.6}).save(profiles / "alice.json")
    with running(root, profiles, "--include", "concise,humor", "--n-ctx", "512") as (base, _):
        client = openai.OpenAI(base_url=f"{base}/v1", api_key=KEY, max_retries=0, timeout=300)
        yield {"client": client, "model": client.models.list().data[0].id, "base": base}


def _ask(server, **kw):
    kw = {"messages": PROMPT, "temperature": 0, "max_tokens": 16, **kw}
    return server["client"].chat.completions.create(model=server["model"], **kw)


@pytest.mark.parametrize("user", [None, "alice"])
def test_json_schema_answers_parse_and_conform_over_ten_seeds(server, user):
    def answer(seed):
        return _ask(server, temperature=0.8, seed=seed, max_tokens=40, response_format=JSON_SCHEMA,
                    **({"user": user} if user else {})).choices[0]

    with ThreadPoolExecutor(4) as pool:  # sent together: decoded in shared batches
        choices = list(pool.map(answer, range(10)))
    for choice in choices:
        assert choice.finish_reason == "stop", choice.message.content
        assert conforms(json.loads(choice.message.content)), choice.message.content
    assert len({c.message.content for c in choices}) > 1  # sampled, not one answer ten times
    # without the format, the same requests answer in prose
    with pytest.raises(ValueError):
        json.loads(_ask(server, temperature=0.8, seed=0, max_tokens=40).choices[0].message.content)


def test_json_object_gives_json_and_a_stream_gives_the_same(server):
    whole = _ask(server, max_tokens=60, response_format={"type": "json_object"}).choices[0]
    assert whole.finish_reason == "stop" and isinstance(json.loads(whole.message.content), dict)
    stream = _ask(server, max_tokens=60, response_format={"type": "json_object"}, stream=True)
    assert "".join(c.choices[0].delta.content or "" for c in stream if c.choices) == whole.message.content


def test_logit_bias_keeps_a_token_out_and_brings_one_in(server, smollm):
    for user in (None, "alice"):
        extra = {"user": user} if user else {}
        plain = _ask(server, **extra).choices[0].message.content
        first = smollm.core.tokenize(plain, False, False)[0]
        piece = smollm.core.detokenize([first]).decode()
        assert plain.startswith(piece)
        for seed in range(3):
            kept_out = _ask(server, temperature=0.8, seed=seed, logit_bias={str(first): -100}, **extra)
            assert not kept_out.choices[0].message.content.startswith(piece)
        brought = _ask(server, max_tokens=2, logit_bias={str(smollm.core.tokenize(" zebra", False, False)[0]): 100},
                       **extra)
        assert brought.choices[0].message.content.startswith(" zebra"[:2])


def test_n_choices_are_decoded_in_one_batch_and_counted_in_usage(server):
    before = _batches_of(server, 3)
    three = _ask(server, n=3, temperature=0.8, seed=7)
    assert [c.index for c in three.choices] == [0, 1, 2]
    assert len({c.message.content for c in three.choices}) > 1  # seeds 7, 8, 9
    assert _batches_of(server, 3) == before + 1
    one = _ask(server, temperature=0.8, seed=8)  # choice 1 samples with seed + 1
    assert one.choices[0].message.content == three.choices[1].message.content
    assert three.usage.prompt_tokens == one.usage.prompt_tokens  # the prompt counted once
    assert three.usage.total_tokens == three.usage.prompt_tokens + three.usage.completion_tokens
    assert three.usage.completion_tokens > one.usage.completion_tokens


def _batches_of(server, size: int) -> int:
    lanes = httpx.get(f"{server['base']}/slots", headers=AUTH).json()
    return sum(lane["batches"].get(str(size), 0) for lane in lanes)


def test_a_stream_of_two_choices_with_usage_matches_the_whole_answer(server):
    whole = _ask(server, n=2)
    chunks = list(_ask(server, n=2, stream=True, stream_options={"include_usage": True}))
    texts = ["".join(c.choices[0].delta.content or "" for c in chunks if c.choices and c.choices[0].index == i)
             for i in range(2)]
    assert texts == [c.message.content for c in whole.choices]
    assert all(c.usage is None for c in chunks[:-1]) and chunks[-1].choices == []
    assert chunks[-1].usage.model_dump() == whole.usage.model_dump()
    plain = list(_ask(server, stream=True))
    assert all(getattr(c, "usage", None) is None for c in plain)  # usage only when asked for, as OpenAI


@pytest.mark.parametrize("body, param", [
    ({"logprobs": True}, "logprobs"),
    ({"tools": [{"type": "function", "function": {"name": "f"}}]}, "tools"),
    ({"messages": [{"role": "user", "content": "hi", "name": "bob"}]}, "messages[0].name"),
    ({"stream_options": {"include_obfuscation": True}}, "stream_options.include_obfuscation"),
    ({"response_format": {"type": "json_schema", "json_schema": {"name": "x", "schema": {"type": "martian"}}}},
     "response_format"),
    ({"logit_bias": {"ocean": 1}}, "logit_bias"),
    ({"logit_bias": {"1": -101}}, "logit_bias"),
    ({"logit_bias": {"99999999": 1}}, "logit_bias"),
    ({"n": 5}, "n"),  # more than the server's 4 slots: one batch could not hold them
])
def test_an_unsupported_field_or_value_is_a_400_that_names_it(server, body, param):
    with pytest.raises(openai.BadRequestError) as e:
        _ask(server, extra_body=body) if "messages" not in body else _ask(server, **body)
    assert e.value.body["param"] == param, e.value.body
    assert "\n" not in e.value.body["message"]


def test_a_field_sent_as_null_asks_for_nothing(server):
    assert _ask(server, extra_body={"logprobs": None, "tools": None}).choices[0].message.content
