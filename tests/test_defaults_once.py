"""Defaults live once: the Python API and the CLI fit the same profile from the same pairs."""

import json
import os
import subprocess
import sys

from drift_cpp.score.attributes import builtin_attributes
from drift_cpp.demo import DEMO_PAIRS
from drift_cpp.models import ModelOptions, load_model
from drift_cpp.preferences import load_pairs
from drift_cpp.fit.profile import Profile
from drift_cpp.score.cache import ScoreCache
from drift_cpp.score.scorer import Scorer

ATTRIBUTES = ("concise", "formal", "humor", "exclamatory")
# What differs between two fits of the same pairs: when they ran and what scoring cost (the second
# one reads the first one's scores from the cache).
VOLATILE = {"created_at", "updated_at", "cost"}


def _content(path) -> dict:
    return {k: v for k, v in json.loads(path.read_text()).items() if k not in VOLATILE}


def test_python_api_and_cli_fit_the_same_profile(tmp_path, tmp_cache):
    scorer = Scorer(load_model(None, ModelOptions(threads=1)), cache=ScoreCache(), progress=False)
    Profile.fit(load_pairs(DEMO_PAIRS), scorer, builtin_attributes().select(ATTRIBUTES)).save(tmp_path / "api.json")
    run = subprocess.run([sys.executable, "-m", "drift_cpp.cli", "--threads", "1", "approximate", str(DEMO_PAIRS),
                          "-o", str(tmp_path / "cli.json"), "--include", ",".join(ATTRIBUTES)],
                         env=dict(os.environ, DRIFT_CPP_CACHE=str(tmp_cache)), capture_output=True, text=True,
                         timeout=900)
    assert run.returncode == 0, run.stderr[-2000:]
    api, cli = _content(tmp_path / "api.json"), _content(tmp_path / "cli.json")
    assert api["options"]["max_response_tokens"] == 64 and api["options"]["top"] == 7
    assert api == cli
