"""experiments/content_judges.py: facts kept, loops and echoes on hand-written and real answers (issue 19)."""

import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "experiments"))

import content_judges as cj  # noqa: E402
import fact_prompts as fp  # noqa: E402

EGG, SKY = "How do I boil an egg?", "Why is the sky blue?"
# Real answers from docs/results (demo_settings, generation_judges*) and issue 19.
LOOP_EGG = "Boil an egg:\n\nBoil an egg:\n\n" * 8 + "Boil an eg"
ECHO_EGG = 'Boil an egg: "Boil an egg"'
WRONG_SKY = "Because he sprays it with his blue."
WRONG_EGG = "Make a flame and place it over the egg."
PLAIN_EGG = ("Boil an egg in a kettle or on the stove. The key is to heat it to the boiling point, which is around "
             "120°C (249°F). This is where the magic happens.")
PLAIN_SKY = ("The sky blue is a result of the Earth's atmosphere scattering sunlight in a range of colors, "
             "primarily blue. When sunlight reaches our planet's atmosphere, it encounters tiny molecules of gases")


# ------------------------------------------------------------------ facts
def test_the_fact_prompts_are_fixed_split_and_never_credit_their_own_words():
    assert len(fp.FACTS) == 40 and len(fp.FACT_TRAIN) == 20 and len(fp.FACT_HELD_OUT) == 20
    assert EGG in fp.FACT_HELD_OUT and SKY in fp.FACT_HELD_OUT
    assert not set(fp.FACT_TRAIN) & set(fp.FACT_HELD_OUT)
    for prompt, groups in fp.FACTS:
        assert groups and all(groups)
        assert cj.fact_recall(prompt, prompt) == 0.0, prompt  # an echo keeps nothing
        assert cj.fact_recall(prompt + " " + prompt, prompt) == 0.0


def test_fact_recall_matches_stems_exact_words_and_phrases():
    assert cj.fact_recall("Rayleigh scattering of sunlight by air.", SKY) == 1.0
    assert cj.fact_recall("Light is scattered.", SKY) == 1.0
    assert cj.fact_recall(WRONG_SKY, SKY) == 0.0
    assert cj.fact_recall(PLAIN_SKY, SKY) == 1.0
    assert cj.fact_recall("Put it in a pot of water for ten minutes.", EGG) == 1.0
    assert cj.fact_recall(WRONG_EGG, EGG) == 0.0
    assert cj.fact_recall(ECHO_EGG, EGG) == 0.0
    assert cj.fact_recall("Heat it.", EGG) == 0.5
    assert cj.fact_recall("It's Paris.", "What is the capital of France?") == 1.0
    # '$' is an exact word: the sun, not Sunday
    star = "What is the closest star to Earth?"
    assert cj.fact_recall("The Sun.", star) == 1.0 and cj.fact_recall("On Sunday.", star) == 0.0
    assert cj.fact_recall("Plants take in carbon dioxide.", "What gas do plants take in from the air?") == 1.0
    assert cj.fact_recall("Plants take in CO2.", "What gas do plants take in from the air?") == 1.0
    assert cj.fact_recall("Plants take in carbon.", "What gas do plants take in from the air?") == 0.0
    assert cj.fact_recall("It is H2O.", "What is the chemical formula for water?") == 1.0
    assert cj.fact_recall("It boils at 100°C.", "What is the boiling point of water at sea level?") == 1.0
    assert cj.fact_recall("It boils at 1000°C.", "What is the boiling point of water at sea level?") == 0.0


# ------------------------------------------------------------------ loops
@pytest.mark.parametrize("text", [
    LOOP_EGG,                                                               # demo_settings, top 1-3 at beta >= 1
    "There's a famous quill " + "quill " * 40,                              # generation_judges plain_words beta=1
    "Oh\n" * 32,                                                             # the real pair's exclaim
    "1 OUG\nOh, no\nOh, no\nOh, no\nOh no...",                              # terms_long plain_words
    "Oh dear" + "ak" * 40,                                                   # terms_long plain_words (318 times there)
    "Blue because of when sunlight hits blue molecules in the sky causing it to be a mixture of colors and "
    "because of when sunlight hits molecules in the sky causing it to be a mixture of colors",  # demo_settings bt 7 0.25
])
def test_real_loops_are_loops(text):
    assert cj.loops(text), text
    assert cj.loop_reason(text)


@pytest.mark.parametrize("text", [
    PLAIN_EGG, PLAIN_SKY, WRONG_SKY, WRONG_EGG, ECHO_EGG, "",
    # a long plain answer may say a phrase three times (terms_long's plain answers do)
    "To meet new people, join a club. Clubs are a great way to meet new people who share your interests. "
    "Volunteering is another way to meet new people while doing good, and it builds your confidence too.",
    "1. Boil water.\n2. Add the egg.\n3. Wait ten minutes.\n4. Cool it in cold water.",
    "1.Boil. - Boil. 2.Add. - Add.",          # terse and broken, but not a loop (issue 13's short)
    "Ha ha ha!",                               # three is a laugh, not a loop
    "-----\nA heading\n-----",                 # rules of dashes hold no letter
    "Wow!!!!!!!!!! Great!",
])
def test_answers_that_do_not_loop(text):
    assert not cj.loops(text), cj.loop_reason(text)


def test_loop_thresholds():
    assert cj.repeated_share("a b c d a b c d".split()) == 1 / 5
    assert cj.tandem_repeat("x y x y x y x y z".split()) == ("x y", 4)
    assert cj.tandem_repeat("x y x y x y z".split()) is None
    assert cj.loops("very " * 4 + "good")
    assert not cj.loops("very " * 3 + "good")


# ------------------------------------------------------------------ echoes
def test_real_echoes_are_echoes():
    assert cj.echoes(ECHO_EGG, EGG)
    assert cj.echoes(LOOP_EGG, EGG)
    assert cj.echoes("How do I boil an egg? How do I boil an egg?", EGG)
    assert cj.echoes("To boil an egg, boil the egg.", EGG)
    # the real pair's in-context answer to "Congratulate my sister on getting her driver's license."
    assert cj.echoes("Congratulate your sister on getting her driver's license!",
                     "Congratulate my sister on getting her driver's license.")
    # generation_judges exclaim beta=2: restates the question and never answers it
    assert cj.echoes("The sky is blue. The answer lies at the very beginning of this passage explaining why the sky "
                     "is blue.", "Explain why the sky is blue.")


def test_answers_that_do_not_echo():
    assert not cj.echoes("The capital of France is Paris.", "What is the capital of France?")
    assert not cj.echoes("Paris.", "What is the capital of France?")
    assert not cj.echoes(PLAIN_EGG, EGG)  # starts with the prompt's words, then answers
    assert not cj.echoes(PLAIN_SKY, SKY)
    assert not cj.echoes(WRONG_SKY, SKY)  # wrong, but not an echo: the facts judge catches it
    assert not cj.echoes("", EGG) and cj.empty("") and cj.empty(" ... ")
    assert cj.degenerate("", EGG) and cj.degenerate(ECHO_EGG, EGG) and not cj.degenerate(PLAIN_EGG, EGG)


# ------------------------------------------------------------------ model judge bookkeeping
def test_verdicts_need_both_orders_and_report_position_bias():
    v = cj.Verdict(margin_ab=2.0, margin_ba=-1.0)   # a first: picks 1 (a); b first: picks 2 (a)
    assert v.outcome == 1.0 and v.first_picked == (True, False)
    always_first = cj.Verdict(1.0, 1.0)              # picks whatever is shown first
    assert always_first.outcome == 0.5
    s = cj.judge_summary([v, always_first, cj.Verdict(-1.0, 1.0)])
    assert s["win_rate"] == pytest.approx((1 + 0.5 + 0) / 3)
    assert s["first_position_rate"] == pytest.approx(4 / 6)
    assert s["consistent"] == pytest.approx(2 / 3)
    assert cj.judge_summary([])["win_rate"] is None


def test_content_summary_counts_against_plain():
    prompts = [EGG, SKY, "Write a short birthday message for my best friend."]
    steered = [ECHO_EGG, WRONG_SKY, "Happy birthday, friend!"]
    plain = [PLAIN_EGG, PLAIN_SKY, "Happy birthday! " * 1]
    s = cj.content_summary(prompts, steered, plain)
    assert s["facts"]["n"] == 2 and s["facts"]["recall"] == 0.0 and s["facts"]["recall_plain"] == 0.75
    assert s["facts"]["ratio"] == 0.0 and s["facts"]["lost"] == 2
    assert s["echoes_steered"] == 1 and s["echoes_plain"] == 0 and s["loops_steered"] == 0
