"""`drift-cpp demo`, the README's first command, end to end on the embedded model."""

import os
import re
import subprocess
import sys


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
    assert "Traceback" not in run.stderr
