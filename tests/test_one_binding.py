"""One binding: a joint-model profile (attributes, length and words) decodes to the same greedy text
through `generate`, `chat`, the Python session and the server, biases and guard options included."""

import json
import os
import subprocess
import sys
from dataclasses import replace

import openai

from drift_cpp.steer.session import Drift, Sampling
from drift_cpp.steer.build import drift_formula
from drift_cpp.models import ModelOptions
from drift_cpp.fit.profile import Profile
from serving import KEY, running
from test_choice import synthetic_profile

PROMPT = "Tell me about the ocean."
TOKENS = 40
# A strong length taste at beta 0.1 with the guard off ends the answer where plain steering would not
# (at the first sentence end past its length target, which 24 tokens do not reach), so a caller that
# dropped the length or word terms would answer differently (checked below).
BETA, PLAUSIBILITY = 0.1, 0.0
STEER = ["--beta", str(BETA), "--plausibility", str(PLAUSIBILITY), "--temperature", "0", "--max-tokens", str(TOKENS)]


def _cli(*args, stdin=None, env=None) -> str:
    run = subprocess.run([sys.executable, "-m", "drift_cpp.cli", "--threads", "1", *args], input=stdin, env=env,
                         capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stderr[-2000:]
    return run.stdout


def test_generate_chat_session_and_server_give_one_answer(smollm, tmp_path):
    profile, _ = synthetic_profile("shorter")
    profile.model = smollm.identity
    assert profile.choice is not None and profile.length_weight() < 0 and profile.word_weights()
    assert profile.uses_attributes()
    profiles = tmp_path / "profiles"
    profiles.mkdir()
    path = profiles / "me.json"
    profile.save(path)
    env = dict(os.environ, DRIFT_CPP_CACHE=str(tmp_path / "cache"))

    formula = drift_formula(None, [(Profile.load(path), 1.0)], BETA).with_guard(PLAUSIBILITY)
    greedy = Sampling(temperature=0, max_tokens=TOKENS)
    session = Drift(formula=formula, options=ModelOptions(threads=1)).generate(PROMPT, greedy).text
    unbiased = Drift(formula=replace(formula, eos=0.0, words=()), options=ModelOptions(threads=1))
    assert unbiased.generate(PROMPT, greedy).text != session  # the length and word terms matter here

    generated = json.loads(_cli("generate", "--profile", str(path), "--prompt", PROMPT, "--json", *STEER,
                                env=env))["text"]
    chatted = _cli("chat", "--profile", str(path), *STEER, stdin=PROMPT + "\n", env=env).rstrip("\n")
    with running(tmp_path, profiles) as (base, _):
        client = openai.OpenAI(base_url=f"{base}/v1", api_key=KEY, max_retries=0, timeout=300)
        model = client.models.list().data[0].id
        served = client.chat.completions.create(
            model=model, user="me", messages=[{"role": "user", "content": PROMPT}], temperature=0,
            max_tokens=TOKENS, extra_body={"beta": BETA, "plausibility": PLAUSIBILITY}).choices[0].message.content
    assert [generated, chatted, served] == [session] * 3
