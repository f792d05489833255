"""experiments/generation_judges.py: the four judges, the prompt split, and one smoke run end to end."""

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "experiments"))

import generation_judges as gj  # noqa: E402

A = gj.Answer  # an answer that ended


# ------------------------------------------------------------------ judges
def test_short_counts_whitespace_words():
    assert gj.n_words("") == 0
    assert gj.n_words("  one   two\nthree\tfour ") == 4
    assert gj.judge_short(A("Yes.")) == -1.0
    assert gj.judge_short(A("Yes, of course I can help!")) == -6.0
    assert gj.compare(gj.judge_short, A("Sure."), A("Sure, I would be glad to.")) == 1.0
    assert gj.compare(gj.judge_short, A("Sure, I would be glad to."), A("Sure.")) == 0.0
    assert gj.compare(gj.judge_short, A("one two"), A("three four")) == 0.5


def test_short_counts_a_cut_answer_as_longer_than_any_that_ended():
    cut = A("Just a few words", ended=False)
    assert gj.compare(gj.judge_short, A("A much longer answer that did end, after all."), cut) == 1.0
    assert gj.compare(gj.judge_short, cut, A("Done.")) == 0.0
    assert gj.compare(gj.judge_short, cut, A("Another one cut off by", ended=False)) == 0.5  # lengths unknown
    # the other judges read only the text
    for persona in ("exclaim", "lists", "plain_words"):
        assert gj.JUDGES[persona](A("Wow! 1. Yes", ended=False)) == gj.JUDGES[persona](A("Wow! 1. Yes"))


def test_exclaim_is_exclamation_marks_per_sentence():
    assert gj.n_sentences("Wow! Great. Really?") == 3
    assert gj.n_sentences("Line one\nLine two") == 2
    assert gj.n_sentences("") == 0
    assert gj.judge_exclaim(A("Wow! Great!")) == 1.0
    assert gj.judge_exclaim(A("Wow! That is great.")) == 0.5
    assert gj.judge_exclaim(A("Calm. Quiet. Still. Done!")) == 0.25
    assert gj.judge_exclaim(A("No exclamation here.")) == 0.0
    assert gj.judge_exclaim(A("")) == 0.0
    assert gj.judge_exclaim(A("!!!")) == 3.0  # no sentence counts as one
    assert gj.compare(gj.judge_exclaim, A("Hooray! We won!"), A("We won. Hooray!")) == 1.0
    assert gj.compare(gj.judge_exclaim, A("Fine."), A("Okay.")) == 0.5


def test_lists_counts_numbered_and_bulleted_lines():
    text = ("Here you go:\n1. Sunscreen\n2) Towel\n  - Hat\n* Water\n• Book\n+ Snacks\n"
            "Not a list - just a dash\n1.5 liters of water\n-5 degrees\n**bold** text\n10. Tenth")
    assert gj.n_list_lines(text) == 7
    assert gj.judge_lists(A(text)) == 7.0
    assert gj.judge_lists(A("A paragraph with no list at all.")) == 0.0
    assert gj.judge_lists(A("")) == 0.0
    assert gj.compare(gj.judge_lists, A("- a\n- b"), A("- a\nb")) == 1.0
    assert gj.compare(gj.judge_lists, A("plain"), A("also plain")) == 0.5


def test_plain_words_is_negative_mean_word_length():
    assert gj.mean_word_length("I am a cat") == pytest.approx(1.75)
    assert gj.judge_plain_words(A("I am a cat")) == pytest.approx(-1.75)
    assert gj.mean_word_length("It is 12345, ok?") == pytest.approx(2.0)  # digits are not words
    assert gj.mean_word_length("don't") == 5.0  # inner apostrophe stays in the word
    assert gj.mean_word_length("") is None
    assert gj.judge_plain_words(A("123 !!!")) == -math.inf
    assert gj.compare(gj.judge_plain_words, A("We can go now."), A("Extraordinary circumstances necessitate postponement.")) == 1.0
    assert gj.compare(gj.judge_plain_words, A(""), A("word")) == 0.0  # no words is the worst
    assert gj.compare(gj.judge_plain_words, A(""), A("")) == 0.5


@pytest.mark.parametrize("persona", sorted(gj.JUDGES))
def test_judges_are_deterministic_and_compare_is_antisymmetric(persona):
    judge = gj.JUDGES[persona]
    texts = ["", "Hi!", "Great news! You won!", "1. Eat\n2. Sleep\n- Repeat",
             "Photosynthesis transforms electromagnetic radiation.", "A cat sat. A dog ran!"]
    answers = [A(t) for t in texts] + [A(t, ended=False) for t in texts]
    for a in answers:
        assert judge(a) == judge(a)
        for b in answers:
            assert gj.compare(judge, a, b) + gj.compare(judge, b, a) == 1.0
        assert gj.compare(judge, a, a) == 0.5


def test_prompt_split_is_fixed_and_disjoint():
    assert len(gj.PROMPTS) == len(set(gj.PROMPTS)) == 60
    assert len(gj.TRAIN_PROMPTS) == 40 and len(gj.HELD_OUT_PROMPTS) == 20
    assert not set(gj.TRAIN_PROMPTS) & set(gj.HELD_OUT_PROMPTS)
    assert gj.HELD_OUT_PROMPTS[0] == gj.PROMPTS[2]
    assert set(gj.PERSONAS) == {"short", "exclaim", "lists", "plain_words"}


def test_label_pairs_skips_ties_and_empty_answers():
    prompts = ["q1", "q2", "q3", "q4"]
    a = [A("one two three"), A("same size"), A(""), A("four")]
    b = [A("one"), A("also same"), A("x"), A("five six")]
    pairs, labels = gj.label_pairs("short", prompts, a, b)
    assert labels == {"n_pairs": 2, "n_ties": 1, "n_empty": 1, "n_prompts": 4}
    assert [(p.chosen, p.rejected) for p in pairs] == [("one", "one two three"), ("four", "five six")]
    assert pairs[0].prompt[0].content == "q1" and pairs[0].prompt[0].role == "user"


def test_label_all_pairs_every_two_answer_sets():
    prompts = ["q1", "q2"]
    sets = [[A("a b c"), A("x")], [A("a"), A("x y")], [A("a b"), A("z")]]
    pairs, labels = gj.label_all("short", prompts, sets)
    assert labels == {"n_pairs": 5, "n_ties": 1, "n_empty": 0, "n_prompts": 2, "n_comparisons": 6}
    assert len({p.id for p in pairs}) == 5  # distinct ids: a profile keys its rows by them
    assert ("a", "a b c") in [(p.chosen, p.rejected) for p in pairs] and ("z", "x y") in [(p.chosen, p.rejected) for p in pairs]
    two, _ = gj.label_all("short", prompts, sets[:2])  # two sets: label_pairs' pairs and ids
    assert [p.id for p in two] == [p.id for p in gj.label_pairs("short", prompts, *sets[:2])[0]]


def test_generation_key_tells_a_biased_formula_from_plain_decoding():
    # A lexical- or length-only profile has no attribute weights: without its biases in the key its
    # answers were read back as the plain ones from the log.
    from drift_cpp.steer.session import Sampling
    s = Sampling(seed=1, max_tokens=8)
    plain = gj.GenerationLog.key("m", [], 0.0, "q", s)
    assert gj.GenerationLog.key("m", [], 0.0, "q", s, None) == plain  # logs made before the biases stay valid
    words = gj.GenerationLog.key("m", [], 0.5, "q", s, [0.0, [["see", 0.08]]])
    eos = gj.GenerationLog.key("m", [], 0.5, "q", s, [1.5, []])
    assert len({plain, words, eos}) == 3


def test_generation_key_tells_the_guard_and_the_samplers_apart_and_keeps_old_keys():
    # Issue 19: the guard (a formula field) and DRY / penalties (sampler fields) decide the text too.
    import dataclasses

    from drift_cpp.steer.session import Sampling
    from drift_cpp.steer.formula import Formula
    s = Sampling(seed=1, max_tokens=8)
    f = Formula.plain()
    old = gj.GenerationLog.key("m", [["concise", 0.5]], 0.5, "q", s)
    assert gj.GenerationLog.extra(f, s) == {}  # everything off: the key logged before issue 19
    assert gj.GenerationLog.key("m", [["concise", 0.5]], 0.5, "q", s, None, gj.GenerationLog.extra(f, s)) == old
    keys = {old}
    if hasattr(Formula, "with_guard"):
        extra = gj.GenerationLog.extra(dataclasses.replace(f, plausibility=0.1), s)
        assert extra == {"plausibility": 0.1}
        keys.add(gj.GenerationLog.key("m", [["concise", 0.5]], 0.5, "q", s, None, extra))
    if "dry_multiplier" in {x.name for x in dataclasses.fields(Sampling)}:
        dry = dataclasses.replace(s, dry_multiplier=0.8)
        assert gj.GenerationLog.extra(f, dry) == {"dry_multiplier": 0.8}
        keys.add(gj.GenerationLog.key("m", [["concise", 0.5]], 0.5, "q", dry, None, gj.GenerationLog.extra(f, dry)))
    assert len(keys) == 1 + hasattr(Formula, "with_guard") + ("dry_multiplier" in {x.name for x in dataclasses.fields(Sampling)})


def test_win_stats_counts_ties_as_half():
    s = gj.win_stats("short", [A("a"), A("a b c"), A("a b")], [A("a b"), A("a"), A("c d")])
    assert (s["wins"], s["ties"], s["losses"], s["n"]) == (1, 1, 1, 3)
    assert s["win_rate"] == pytest.approx(0.5)
    assert s["outcomes"] == [1.0, 0.0, 0.5]


# ------------------------------------------------------------------ end to end
@pytest.fixture(scope="module")
def smoke(tmp_path_factory):
    out = tmp_path_factory.mktemp("generation_smoke")
    cmd = [sys.executable, str(REPO / "experiments" / "generation_judges.py"), "--size", "smoke",
           "--out", str(out), "--cache", str(out / "scores.sqlite"), "--threads", "1"]
    run = subprocess.run(cmd, capture_output=True, text=True, timeout=1800)
    assert run.returncode == 0, run.stderr[-4000:]
    return out, cmd, run


def test_smoke_run_writes_results(smoke):
    out, _, _ = smoke
    results = json.loads((out / "results.json").read_text("utf-8"))
    for key in ("command", "git_rev", "model", "config", "prompts", "timing", "personas", "generations",
                "train_answers", "stopped_before_max_tokens"):
        assert key in results
    assert results["config"]["size"] == "smoke"
    assert results["config"]["betas"] == [0.5]
    assert len(results["config"]["attributes"]) == 6
    assert set(results["personas"]) == {"short", "exclaim", "lists", "plain_words"}
    assert len(results["prompts"]["train"]) == 4 and len(results["prompts"]["held_out"]) == 2
    assert not set(results["prompts"]["train"]) & set(results["prompts"]["held_out"])

    fitted = 0
    for name, r in results["personas"].items():
        assert r["labels"]["n_pairs"] + r["labels"]["n_ties"] + r["labels"]["n_empty"] == 4
        if r.get("skipped"):
            assert r["labels"]["n_pairs"] == 0
            continue
        fitted += 1
        assert 0.0 <= r["win_rate"] <= 1.0
        assert 0.0 <= r["negated_win_rate"] <= 1.0
        assert set(r["beta_sweep"]) == {"0.5"}
        for s in list(r["beta_sweep"].values()) + [r["negated"]]:
            assert 0.0 <= s["win_rate"] <= 1.0
            assert s["wins"] + s["ties"] + s["losses"] == s["n"] == 2
        assert r["win_rate"] == r["beta_sweep"]["0.5"]["win_rate"]
        assert 1 <= len(r["profile"]["decoding"]) <= 6
        assert len(results["generations"][f"{name}/beta=0.5"]) == 2
    assert fitted >= 1  # 'plain_words' ties only when both answers have the same mean word length

    md = (out / "results.md").read_text("utf-8")
    assert "generation_judges.py --size smoke" in md and results["git_rev"] in md
    assert results["plot"] == "generation_win_rates.png" and (out / results["plot"]).stat().st_size > 0
    assert "(generation_win_rates.png)" in md
    assert (out / "generations.jsonl").exists()


def test_smoke_rerun_resumes_without_generating(smoke):
    out, cmd, _ = smoke
    first = json.loads((out / "results.json").read_text("utf-8"))
    run = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stderr[-4000:]
    assert " new;" not in run.stderr and "cached" in run.stderr
    again = json.loads((out / "results.json").read_text("utf-8"))
    assert again["generations"] == first["generations"]
    assert {p: r.get("win_rate") for p, r in again["personas"].items()} == \
        {p: r.get("win_rate") for p, r in first["personas"].items()}
