"""`drift-cpp demo`, the README's first command, end to end on the embedded model."""

import os
import re
import subprocess
import sys
from pathlib import Path

from drift_cpp.demo import DEMO_PROMPTS
from drift_cpp.cli import SIDE_BY_SIDE_WIDTH as WIDTH  # of each column in the side-by-side output

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "experiments"))
import content_judges as cj  # noqa: E402  (issue 19's detectors, unit-tested in test_content_judges.py)


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
    # Coherent personalized answers that still answer (issue 19). The demo once printed
    # `Boil an egg: "Boil an egg"`, which is shorter and does not loop; so each answer must also keep a
    # fact the question needs (fact_prompts.py: water, heat, a pot... for the egg; scattering or light
    # for the sky, which the plain answers hold), and must neither loop nor echo the prompt.
    answers = out.split(">>> ")[1:]
    assert [a.splitlines()[0] for a in answers] == list(DEMO_PROMPTS)
    for answer in answers:
        prompt = answer.splitlines()[0]
        rows = [line for line in answer.splitlines()[3:] if line.strip()]  # after the prompt, titles, rule
        plain = " ".join(line[:WIDTH] for line in rows)
        personal = " ".join(line[WIDTH + 3:] for line in rows)
        assert 0 < len(personal.split()) < len(plain.split()), answer
        assert cj.fact_recall(plain, prompt) > 0, answer  # the words are ones the plain answer has
        assert cj.fact_recall(personal, prompt) > 0, answer
        assert not cj.loops(personal), (cj.loop_reason(personal), answer)
        assert not cj.echoes(personal, prompt), (cj.echo_reason(personal, prompt), answer)
    assert "Traceback" not in run.stderr
