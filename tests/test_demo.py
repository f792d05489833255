"""`drift-cpp demo`, the README's first command, end to end on the embedded model."""

import os
import re
import subprocess
import sys

from drift_cpp.cli import SIDE_BY_SIDE_WIDTH as WIDTH  # of each column in the side-by-side output


def test_demo_fits_the_short_answer_persona_and_answers_side_by_side(tmp_path):
    env = dict(os.environ, DRIFT_CPP_CACHE=str(tmp_path / "cache"))  # a cold start, as on a fresh machine
    run = subprocess.run([sys.executable, "-m", "drift_cpp.cli", "--threads", "1", "demo"], env=env,
                         capture_output=True, text=True, timeout=900)
    assert run.returncode == 0, run.stderr[-3000:]
    out = run.stdout
    block = out.split("Top attributes of this persona:\n")[1].split("\n\n")[0]
    top = [re.fullmatch(r"  (\w+?)\s*([+-]\d\.\d{3})", line).groups() for line in block.splitlines()]
    assert len(top) == 3
    # The bundled pairs prefer the shorter answer, so 'concise' leads with a positive weight.
    assert top[0][0] == "concise" and float(top[0][1]) > 0
    assert out.count(">>> ") == 2
    # Coherent personalized answers (docs/results/demo_settings): shorter than plain, and no loop such
    # as the "Boil an egg:" header repeated to the token limit that weaker steering produces.
    for answer in out.split(">>> ")[1:]:
        rows = [line for line in answer.splitlines()[3:] if line.strip()]  # after the prompt, titles, rule
        plain = " ".join(line[:WIDTH] for line in rows).split()
        personal = " ".join(line[WIDTH + 3:] for line in rows).split()
        trigrams = list(zip(personal, personal[1:], personal[2:]))
        assert 0 < len(personal) < len(plain), answer
        assert len(set(trigrams)) >= 0.8 * len(trigrams), answer
    assert "Traceback" not in run.stderr
