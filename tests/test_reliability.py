"""Hostile-but-realistic inputs (issue 12): each is refused with one line before any model work.

The CLI runs in-process through click's CliRunner. Where a test proves that a check comes before
scoring, it shows that the score cache (opened just before the model is loaded) was never created.
"""

import json
import os
import sqlite3

import pytest
from click.testing import CliRunner

from drift_cpp import fileio
from drift_cpp.fit import profile_file as pf
from drift_cpp.score.attributes import builtin_attributes, load_attributes_file
from drift_cpp.cli import main
from drift_cpp.demo import DEMO_PAIRS
from drift_cpp.steer.session import Drift, Sampling
from drift_cpp.params import BETA_RANGE, check_beta
from drift_cpp.errors import DriftError
from drift_cpp.models import ModelOptions
from drift_cpp.preferences import load_pairs
from drift_cpp.score.cache import ScoreCache

GOOD = {"prompt": "Hi?", "chosen": "Hello.", "rejected": "Go away."}


def runner():
    try:
        return CliRunner(mix_stderr=False)  # click < 8.2
    except TypeError:
        return CliRunner()


def run(*args, input=None):
    """(exit code, stderr) of the real CLI; asserts the error is one line and no traceback."""
    result = runner().invoke(main, [str(a) for a in args], input=input)
    assert result.exception is None or isinstance(result.exception, SystemExit), result.exception
    err = result.stderr
    assert "Traceback" not in result.output + err
    if result.exit_code:
        assert err.startswith("error: ") and err.count("\n") == 1, err
    return result.exit_code, err.strip()


@pytest.fixture()
def prefs(tmp_path):
    path = tmp_path / "p.jsonl"
    path.write_text("".join(json.dumps(dict(GOOD, id=str(i), chosen=f"Hello {i}.")) + "\n" for i in range(3)))
    return path


def profile_json(**changes):
    from test_profile_file import sample
    obj = json.loads(pf.to_json(sample()))
    if "options" in changes:  # one option changed; a version-2 file holds them all
        changes = {**changes, "options": {**obj["options"], **changes["options"]}}
    obj.update(changes)
    return json.dumps(obj)


# --- 1. data loss: an output that is an input ------------------------------------------


def test_output_that_is_an_input_is_refused(tmp_path, prefs, tmp_cache, monkeypatch):
    before = prefs.read_bytes()
    monkeypatch.chdir(tmp_path)
    for out in (prefs, "p.jsonl", "./sub/../p.jsonl"):
        (tmp_path / "sub").mkdir(exist_ok=True)
        code, err = run("approximate", prefs, "-o", out)
        assert code == 1 and err == f"error: {out}: is also the input {prefs}; write the output elsewhere"
    os.symlink(prefs, tmp_path / "link.json")
    assert run("approximate", prefs, "-o", "link.json")[0] == 1
    (tmp_path / "attrs.toml").write_text('[[attributes]]\nid = "a"\nprompt = "Be brief."\n')
    assert "is also the input attrs.toml" in run("approximate", prefs, "-o", "attrs.toml", "--attributes",
                                                  "attrs.toml")[1]
    assert prefs.read_bytes() == before and not tmp_cache.exists()


def test_profile_commands_never_write_over_their_pairs(tmp_path, prefs, tmp_cache):
    before = prefs.read_bytes()
    code, err = run("profile", "update", prefs, prefs)
    assert code == 1 and "is also the input" in err
    code, err = run("profile", "add-attributes", prefs, prefs, "--attributes", tmp_path / "a.toml")
    assert code == 1 and "is also the input" in err
    assert prefs.read_bytes() == before and not tmp_cache.exists()


# --- 2. silent wrong answers ------------------------------------------------------------


@pytest.mark.parametrize("args, expected", [
    (["--max-response-tokens", "-5"], "max_response_tokens must be an integer >= 0"),
    (["--l2", "nan"], "--l2 must be a positive finite number, got nan"),
    (["--l2", "inf"], "--l2 must be a positive finite number, got inf"),
    (["--top", "0"], "--top must be at least 1, got 0"),
    (["--include", ""], "--include: no attribute ids given"),
    (["--include", ","], "--include: no attribute ids given"),
    (["--decode-exclude", "nope"], "unknown attribute id(s) in decode_exclude: nope"),
])
def test_approximate_refuses_bad_options_before_scoring(tmp_path, prefs, tmp_cache, args, expected):
    code, err = run("approximate", prefs, "-o", tmp_path / "out.json", *args)
    assert code in (1, 2) and expected in err
    assert not tmp_cache.exists() and not (tmp_path / "out.json").exists()


@pytest.mark.parametrize("args, expected", [
    (["--stop", ""], "stop strings must be non-empty"),
    (["--temperature", "nan"], "temperature must be a finite number, got nan"),
    (["--temperature", "1e39"], "temperature must be a finite number"),
    (["--top-p", "nan"], "top_p must be a finite number"),
    (["--min-p", "inf"], "min_p must be a finite number"),
    (["--beta", "nan"], "beta must be positive and within"),
    (["--beta", "1e-300"], "beta must be positive and within"),
    (["--beta", "-1"], "beta must be positive and within"),
    (["--seed", "-1"], "seed must be in [0, 2**32), got -1"),
    (["--seed", str(2**32)], "seed must be in [0, 2**32)"),
    (["--max-tokens", "-5"], "max_tokens cannot be negative"),
    (["--max-tokens", str(2**40)], "max_tokens cannot be negative (or above"),
    (["--top-k", str(2**40)], "top_k must be >= 0"),
    (["--n-ctx", "0"], "n_ctx must be a positive integer, got 0"),
    (["--top-attributes", "0"], "top_attributes must be at least 1"),
    (["--cfg-scale", "nan"], "--cfg-scale must be a finite number"),
    (["--negative-system", " ", "--cfg-scale", "2"], "--negative-system is empty"),
    (["--system", ""], "--system is empty"),
    (["--negative-system", "Be rude.", "--cfg-scale", "inf"], "--cfg-scale must be a finite number"),
    (["--prompt", "caf\udce9"], "error: --prompt: not valid UTF-8"),
    (["--system", "\ud800"], "error: --system: not valid UTF-8"),
])
def test_generate_refuses_bad_settings_before_loading_a_model(args, expected):
    code, err = run("generate", "--prompt", "Hi", "--profile", "/nonexistent/profile.json", *args)
    assert code in (1, 2) and expected in err and "profile.json" not in err


def test_invalid_utf8_on_stdin():
    code, err = run("generate", input=b"Hello\n\xff\xfeworld\n")
    assert (code, err) == (1, "error: stdin:2: not valid UTF-8")


def test_beta_range_is_one_check():
    low, high = BETA_RANGE
    assert check_beta(low) == low and check_beta(high) == high and check_beta(0.5) == 0.5
    for bad in (0, -0.5, low / 10, high * 10, float("nan"), float("inf"), 1e-50, True, "0.5"):
        with pytest.raises(DriftError, match="beta must be positive and within"):
            check_beta(bad)
    with pytest.raises(DriftError, match="beta must be positive"):
        Drift(beta=1e-300)  # refused before any model is loaded


def test_drift_beta_setter_and_chat_beta_command(smollm):
    drift = Drift()
    with pytest.raises(DriftError, match="beta must be positive"):
        drift.beta = 1e-50
    assert drift.beta == 0.5
    code, err = run("--threads", "1", "chat", input="/beta 1e-50\n/beta nan\n/beta 0.25\n/quit\n")
    assert code == 0 and err.count("beta must be positive and within") == 2


def test_chat_survives_an_undecodable_line(smollm):
    result = runner().invoke(main, ["--threads", "1", "chat"], input=b"\xff\xfe\n/beta 0.25\n/quit\n")
    assert result.exit_code == 0
    assert result.stderr == "error: stdin:1: not valid UTF-8\n"
    assert "(beta = 0.25)" in result.stdout


def test_sampling_check_is_the_one_place():
    Sampling(seed=2**32 - 1, max_tokens=0, stop=("\n\n",)).check()
    for bad in (dict(seed=-1), dict(seed=2**32), dict(stop=("",)), dict(stop="x"), dict(max_tokens=-5),
                dict(temperature=float("nan")), dict(top_p=float("inf")), dict(min_p=float("nan")),
                dict(stop=("\udcff",)), dict(temperature=True)):
        with pytest.raises(DriftError):
            Sampling(**bad).check()


def test_the_largest_seed_reaches_the_engine(smollm):
    result = Drift(options=ModelOptions(threads=1)).generate("Hi", Sampling(seed=2**32 - 1, max_tokens=2))
    assert len(result.tokens) <= 2


# --- profile files: validated on load, one line naming the field ------------------------------


@pytest.mark.parametrize("changes, expected", [
    ({"p": [1e30, 0.0, 0.0]}, "field 'p[0]' is 1e+30; weights of a unit vector lie in [-1, 1]"),
    ({"p": [0.5, 0.5, 0.0]}, "field 'p' has l2 norm 0.707107; it must be 1 (or all zero)"),
    ({"options": {"top": 0}}, "field 'options.top' must be at least 1, got 0"),
    ({"options": {"method": "magic"}}, "field 'options.method': unknown method 'magic'"),
    ({"options": {"l2": -1}}, "field 'options.l2' must be a positive finite number, got -1"),
    ({"n_pairs": 3}, "field 'n_pairs' is 3 but 'pair_ids' lists 2"),
    ({"features": {"rows": [{"id": "pair-1", "w": [0.0] * 3, "l": [0.0] * 3}]}},
     "field 'features.rows' does not match 'pair_ids': 1 rows for 2 pairs, first difference at index 1"),
    ({"features": {"rows": [{"id": i, "w": [0.0] * 3, "l": [0.0] * 3} for i in ("pair-2", "pair-1")]}},
     "field 'features.rows' does not match 'pair_ids': 2 rows for 2 pairs, first difference at index 0"),
])
def test_profile_values_are_validated(tmp_path, changes, expected):
    path = tmp_path / "me.json"
    path.write_text(profile_json(**changes))
    with pytest.raises(DriftError) as e:
        pf.load(path)
    assert str(e.value).startswith(f"{path}: {expected}")


def test_all_zero_p_is_a_valid_profile(tmp_path):
    path = tmp_path / "me.json"
    path.write_text(profile_json(p=[0.0, 0.0, 0.0]))
    assert pf.load(path).p == [0.0, 0.0, 0.0]


def test_update_of_a_profile_without_features(tmp_path, prefs, tmp_cache):
    path = tmp_path / "me.json"
    path.write_text(profile_json(features=None))
    code, err = run("profile", "update", path, prefs)
    assert code == 1 and err == (f"error: {path}: field 'features' is null, so nothing can be added to this "
                                 "profile; fit it again with drift-cpp approximate")
    assert not tmp_cache.exists()


# --- 3. one-line errors for files ---------------------------------------------------------


@pytest.mark.parametrize("make, expected", [
    (lambda d: d / "missing" / "out.json", "directory {d}/missing does not exist"),
    (lambda d: d, "is a directory; give a file name"),
    (lambda d: d / "p.jsonl" / "out.json", "{d}/p.jsonl is not a directory"),
])
def test_unwritable_outputs_are_refused_before_scoring(tmp_path, prefs, tmp_cache, make, expected):
    out = make(tmp_path)
    code, err = run("approximate", prefs, "-o", out)
    assert code == 1 and err == f"error: {out}: " + expected.format(d=tmp_path)
    code, err = run("evaluate", prefs, "--plot", out)
    assert code == 1 and expected.format(d=tmp_path) in err
    assert not tmp_cache.exists()


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into read-only directories (test_faults runs as nobody)")
def test_read_only_output_directory(tmp_path, prefs, tmp_cache):
    ro = tmp_path / "ro"
    ro.mkdir(mode=0o555)
    code, err = run("approximate", prefs, "-o", ro / "out.json")
    assert code == 1 and err == f"error: {ro}/out.json: directory {ro} is not writable"


def test_write_failure_is_one_line_and_keeps_the_old_file(tmp_path, monkeypatch):
    path = tmp_path / "out.txt"
    path.write_text("old")
    monkeypatch.setattr(os, "fsync", lambda fd: (_ for _ in ()).throw(OSError(28, "No space left on device")))
    with pytest.raises(DriftError, match=r"out\.txt: cannot write: No space left on device$"):
        fileio.atomic_write_text(path, "new")
    assert path.read_text() == "old" and os.listdir(tmp_path) == ["out.txt"]


def test_cache_location_that_is_a_file(tmp_path, prefs, monkeypatch):
    (tmp_path / "file").write_text("x")
    monkeypatch.setenv("DRIFT_CPP_CACHE", str(tmp_path / "file"))
    code, err = run("approximate", prefs, "-o", tmp_path / "out.json")
    assert code == 1 and err == (f"error: {tmp_path}/file: the cache location is a file, not a directory; "
                                 "set DRIFT_CPP_CACHE to a directory or run with --no-cache")


@pytest.mark.parametrize("content", [b"garbage " * 1000, b"SQLite format 3\x00" + b"\xff" * 5000])
def test_corrupt_cache(tmp_path, tmp_cache, content):
    tmp_cache.mkdir()
    (tmp_cache / "scores.sqlite").write_bytes(content)
    with pytest.raises(DriftError) as e:
        ScoreCache()
    assert str(e.value).startswith(f"{tmp_cache}/scores.sqlite: the score cache is corrupt (")
    assert str(e.value).endswith("); delete it or run with --no-cache")


def test_corruption_found_later_is_one_line_too(tmp_path, tmp_cache):
    cache = ScoreCache()
    cache.put_many([(f"k{i}", -1.0, 3) for i in range(2000)])
    cache.close()
    db = tmp_cache / "scores.sqlite"
    with sqlite3.connect(db) as c:  # fold the WAL into the file, then damage its pages
        c.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    data = bytearray(db.read_bytes())
    data[8192:] = b"\x07" * (len(data) - 8192)
    db.write_bytes(bytes(data))
    with pytest.raises(DriftError, match="the score cache is corrupt"):
        cache = ScoreCache()
        cache.get_many([f"k{i}" for i in range(2000)])


@pytest.mark.parametrize("name", ["p.jsonl", "p.csv", "p.json"])
def test_device_files_are_refused(tmp_path, name):
    os.symlink("/dev/zero", tmp_path / name)
    with pytest.raises(DriftError, match=f"{name}: not a regular file$"):
        load_pairs(tmp_path / name)


def test_size_cap(tmp_path, monkeypatch):
    path = tmp_path / "p.jsonl"
    path.write_text(json.dumps(GOOD) + "\n")
    monkeypatch.setattr(fileio, "MAX_DOCUMENT_BYTES", 10)
    with pytest.raises(DriftError, match=r"p\.jsonl: \d+ bytes, more than the 10 bytes drift-cpp reads$"):
        load_pairs(path)


def test_directory_as_input(tmp_path):
    (tmp_path / "d.jsonl").mkdir()
    with pytest.raises(DriftError, match=r"d\.jsonl: is a directory, not a file$"):
        load_pairs(tmp_path / "d.jsonl")


DEEP = "[" * 100_000 + "]" * 100_000


@pytest.mark.parametrize("name, text", [
    ("p.jsonl", '{"prompt": ' + DEEP + "}\n"),
    ("p.json", DEEP),
    ("a.json", '{"attributes": ' + DEEP + "}"),
    ("a.toml", "attributes = " + DEEP + "\n"),
    ("me.json", DEEP),
    ("shallow.json", "[" * 65 + "]" * 65),  # parses, but deeper than any document drift-cpp reads
])
def test_deep_nesting(tmp_path, name, text):
    path = tmp_path / name
    path.write_text(text)
    loader = {"p": load_pairs, "a": lambda p: load_attributes_file(p, builtin_attributes()),
              "me": pf.load, "shallow": pf.load}[name.split(".")[0]]
    with pytest.raises(DriftError, match="nested more than 64 levels deep$"):
        loader(path)


def test_toml_attributes_with_a_bom(tmp_path):
    path = tmp_path / "a.toml"
    path.write_bytes(b"\xef\xbb\xbf" + b'[[attributes]]\nid = "brief"\nprompt = "Be brief."\n')
    assert load_attributes_file(path, builtin_attributes()).get("brief").prompt == "Be brief."


def test_one_wording_for_the_three_readers(tmp_path):
    bad = b'{\n"a": caf\xe9}\n'
    messages = []
    for name, loader in (("p.json", load_pairs), ("a.json", lambda p: load_attributes_file(p, builtin_attributes())),
                         ("me.json", pf.load)):
        (tmp_path / name).write_bytes(bad)
        with pytest.raises(DriftError) as e:
            loader(tmp_path / name)
        messages.append(str(e.value).replace(name, "F"))
        (tmp_path / name).write_bytes(b'{\n"a": oops}\n')
        with pytest.raises(DriftError) as e:
            loader(tmp_path / name)
        messages.append(str(e.value).replace(name, "F"))
    expected = [f"{tmp_path}/F:2: not valid UTF-8", f"{tmp_path}/F:2: invalid JSON: Expecting value (column 6)"]
    assert messages == expected * 3


def test_surrogate_escapes_in_json_are_refused(tmp_path):
    path = tmp_path / "p.jsonl"
    path.write_text('{"prompt": "\\ud800", "chosen": "a", "rejected": "b"}\n')
    with pytest.raises(DriftError, match=r"p\.jsonl:1: field 'prompt': not valid UTF-8$"):
        load_pairs(path)


# --- 3. the last-resort handler -----------------------------------------------------------


def test_an_internal_error_is_one_line_exit_2(prefs, tmp_path, monkeypatch):
    import drift_cpp.preferences

    def broken(path):
        raise ZeroDivisionError("division by zero\nsecond line")

    monkeypatch.setattr(drift_cpp.preferences, "load_pairs", broken)
    code, err = run("approximate", prefs, "-o", tmp_path / "out.json")
    assert (code, err) == (2, "error: internal error (ZeroDivisionError): division by zero second line; "
                              "please report it")


def test_usage_errors_are_one_line():
    code, err = run("generate", "--temperature", "warm")
    assert code == 2 and err == "error: Invalid value for '--temperature': 'warm' is not a valid float."
    assert run("no-such-command")[0] == 2
    for args in ([], ["profile"]):  # a bare group still shows its help
        result = runner().invoke(main, args)
        assert "Usage: " in result.output and "Commands:" in result.output and "error:" not in result.output


# --- 4. late failures ------------------------------------------------------------------------


def test_evaluate_counts_pairs_before_scoring(tmp_cache):
    code, err = run("evaluate", DEMO_PAIRS)
    assert code == 1 and err.endswith("12 pairs are too few; evaluation needs at least 20 (10 to train, 10 to test)")
    assert not tmp_cache.exists()


def test_profile_show_checks_the_plot_path_first(tmp_path):
    path = tmp_path / "me.json"
    path.write_text(profile_json())
    code, err = run("profile", "show", path, "--plot", path)
    assert code == 1 and "is also the input" in err and "attribute" not in err


def test_a_reader_that_leaves_early_is_not_an_error():
    # `drift-cpp models | head -1`: the pipe closes before drift-cpp writes; no 'internal error' line.
    import subprocess
    import sys
    child = subprocess.Popen([sys.executable, "-m", "drift_cpp.cli", "models"], stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE)
    child.stdout.close()
    err = child.stderr.read().decode()
    assert child.wait(timeout=60) == 141 and err == ""


# --- issue 20: late failures, hangs, a read-only cache, wording -------------------------------


def test_approximate_refuses_an_overlong_pair_before_scoring_any(tmp_path, tmp_cache):
    # Screening scores the first 4 pairs, then the rest: the 5th pair's length was found after scoring 4.
    path = tmp_path / "p.jsonl"
    records = [dict(GOOD, chosen=f"Hello {i}.") for i in range(4)] + [dict(GOOD, prompt="Tell me more. " * 800)]
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    code, err = run("--threads", "1", "approximate", path, "-o", tmp_path / "me.json", "--include", "concise")
    assert code == 1 and err.startswith(f"error: {path}:5: the prompt (") and "shorten the prompt" in err, err
    assert sqlite3.connect(tmp_cache / "scores.sqlite").execute("SELECT COUNT(*) FROM scores").fetchone() == (0,)


def test_score_names_the_empty_option_before_loading_a_model(tmp_cache):
    for i, name in enumerate(("--system", "--prompt", "--response")):
        values = ["S", "P", "R"]
        values[i] = " "
        code, err = run("score", "--system", values[0], "--prompt", values[1], "--response", values[2])
        assert (code, err) == (1, f"error: {name} is empty")
    assert not tmp_cache.exists()


def test_chat_beta_names_the_command_and_the_value(smollm):
    code, err = run("--threads", "1", "chat", input="/beta abc\n/beta\n/quit\n")
    assert code == 0 and err.splitlines() == ["error: /beta: expected a number, e.g. /beta 0.5, got 'abc'",
                                              "error: /beta: expected a number, e.g. /beta 0.5, got ''"]


def test_a_model_of_the_same_name_is_told_apart_by_content(smollm):
    from drift_cpp.fit.profile import Profile
    profile = Profile.with_weights(smollm, {"concise": 1.0})
    profile.model = {**smollm.identity, "sha256": "0" * 64}  # a copy of the file, changed
    with pytest.raises(DriftError) as e:
        profile.check_model(smollm)
    now = f"{smollm.path.resolve()} (sha256 {smollm.identity['sha256'][:12]}...)"
    assert str(e.value) == (f"this profile was built with another {smollm.path.name} (sha256 000000000000...) and "
                            f"cannot be used with {now}: its rewards come from another model")


def _cli(args, cache, **kw):
    """The CLI in a process of its own, with a time limit: these faults hang or touch what the process caches."""
    import subprocess
    import sys
    env = dict(os.environ, DRIFT_CPP_CACHE=str(cache))
    return subprocess.run([sys.executable, "-m", "drift_cpp.cli", "--threads", "1", *map(str, args)], env=env,
                          capture_output=True, text=True, timeout=300, **kw)


@pytest.mark.parametrize("args", [["score", "--system", "S", "--prompt", "P", "--response", "R", "--model"],
                                  ["generate", "--prompt", "Hi", "--max-tokens", "1", "--llm"],
                                  ["approximate", DEMO_PAIRS, "-o", "me.json", "--slm"]])
def test_a_model_that_is_a_fifo_is_refused_not_waited_on(tmp_path, args):
    fifo = tmp_path / "model.gguf"
    os.mkfifo(fifo)
    r = _cli([*args, fifo], tmp_path / "cache", cwd=tmp_path)  # opening it would wait for a writer forever
    assert r.returncode == 1
    assert r.stderr == f"error: {fifo}: not a regular file (a FIFO or a device); give a GGUF file\n"


def test_a_read_only_cache_still_hashes_the_model(tmp_path):
    # Issue 20: the model-hash memo's failed write broke even --no-cache.
    from test_faults import without_root_override
    ro = tmp_path / "ro"
    ro.mkdir(mode=0o555)
    try:
        r = _cli(["score", "--system", "S", "--prompt", "P", "--response", "R", "--json"], ro,
                 preexec_fn=without_root_override)
        assert r.returncode == 0 and json.loads(r.stdout)["n_tokens"] > 0, r.stderr
        r = _cli(["approximate", DEMO_PAIRS, "-o", tmp_path / "me.json", "--include", "concise", "--no-cache",
                  "--max-response-tokens", "8"], ro, preexec_fn=without_root_override)
        assert r.returncode == 0, r.stderr
        assert os.listdir(ro) == []
    finally:
        ro.chmod(0o755)
