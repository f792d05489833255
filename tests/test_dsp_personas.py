"""experiments/dsp_personas.py: the DSP personas' judges agree with DSP's labels on held-out queries, far
more than "longer wins" does, and behave as judges should (deterministic, no text scores lowest).
DSP: Cheng et al. 2023, "Everyone Deserves A Reward", CC BY-NC 4.0."""

import math
import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "experiments"))

import dsp_personas as dp  # noqa: E402
from drift_cpp.errors import DriftError  # noqa: E402
from dsp_fewshot import load_dsp  # noqa: E402
from generation_judges import Answer, compare  # noqa: E402

# Measured on the 201 held-out queries (804 pairs a persona, docs/results/dsp_personas): 0.72 / 0.67 /
# 0.83 / 0.79, standard errors 0.02 with the queries as units, "longer wins" 0.65 / 0.58 / 0.59 / 0.56.
# A persona's floor sits 2 standard errors below the weakest (business); the mean's floor 0.05 below the
# measured 0.75 (its standard error is ~0.01) and 0.10 above the mean of "longer wins" (0.60).
PERSONA_FLOOR, MEAN_FLOOR, ABOVE_LENGTH = 0.62, 0.70, 0.08


@pytest.fixture(scope="module")
def rows():
    from conftest import DSP_PATH
    if not DSP_PATH.exists():
        pytest.skip(f"DSP data not found at {DSP_PATH}")
    return load_dsp(DSP_PATH)


def test_the_judges_agree_with_dsp_labels_on_held_out_queries_beyond_length(rows):
    v = dp.validate(rows)["personas"]
    for persona, r in v.items():
        assert r["pairs"] >= 4 * 190, persona  # ~half of 400 queries, 4 pairs each
        assert r["agreement"] >= PERSONA_FLOOR, (persona, r)
        assert r["agreement"] > r["longer_wins"], (persona, r)  # a word judge, not a length judge
    mean, mean_longer = (np.mean([r[k] for r in v.values()]) for k in ("agreement", "longer_wins"))
    assert mean >= MEAN_FLOOR
    assert MEAN_FLOOR - mean_longer >= ABOVE_LENGTH


def test_the_agreement_measure_can_fail(rows):
    """A judge that reverses a persona agrees as much as the persona disagrees; "longer wins" on the same
    pairs is what the pair lengths say."""
    held_out = [r for r in rows if dp.is_held_out(r)][:40]
    pairs = dp.persona_pairs(held_out, "entertainment")
    judge = dp.JUDGES["entertainment"]
    forward = dp.agreement(judge, pairs)
    assert dp.agreement(lambda a: -judge(a), pairs) == pytest.approx(1 - forward)
    assert forward > 0.5
    lengths = [(len(own.split()), len(other.split())) for own, other, *_ in pairs]
    assert dp.agreement(dp.longer, pairs) == pytest.approx(np.mean([(a > b) + 0.5 * (a == b) for a, b in lengths]))


def test_the_stored_judges_are_a_fit_on_the_training_queries_alone(rows):
    """Refitting without the held-out queries gives the stored file (up to its rounding): the held-out
    queries never touched the judges, and the file is reproducible from the data."""
    model = dp.fit([r for r in rows if not dp.is_held_out(r)])
    vocab, idf, weights = dp.load()
    assert model["words"] == sorted(vocab, key=vocab.get)
    assert np.allclose(model["idf"], idf, atol=2e-4)
    for persona in dp.PERSONAS:
        assert np.allclose(model["weights"][persona], weights[persona], atol=2e-4), persona


TEXTS = ("Well, it's a great question! Let's break it down, you know.",
         "Ah, dear friend, the river of our dreams flows into the night.",
         "Our team and the manager see corporate success ahead.",
         "Such specific models, as several studies show, are new.")


@pytest.mark.parametrize("persona", dp.PERSONAS)
def test_a_judge_is_deterministic_and_no_text_is_the_worst(persona):
    judge = dp.JUDGES[persona]
    scores = [judge(Answer(t)) for t in TEXTS]
    assert all(math.isfinite(s) for s in scores)
    assert scores == [judge(Answer(t)) for t in TEXTS] == [judge(Answer(t.upper())) for t in TEXTS]
    assert scores == [judge(Answer(t, ended=False)) for t in TEXTS]  # a cut answer: its style so far
    for nothing in ("", "   \n", "?!", "zzqx vrrp"):  # no word of the lexicon
        assert judge(Answer(nothing)) == -math.inf < min(scores)
        assert compare(judge, Answer(TEXTS[0]), Answer(nothing)) == 1.0
    assert dp.near_tie(persona, Answer(""), Answer(" "))


@pytest.mark.parametrize("persona", dp.PERSONAS)
def test_a_judge_prefers_its_top_words_and_near_ties_are_symmetric(persona):
    up, down = dp.top_words(persona, 8)
    liked, disliked = Answer(" ".join(w for w, _ in up)), Answer(" ".join(w for w, _ in down))
    judge = dp.JUDGES[persona]
    assert judge(liked) > judge(disliked) and not dp.near_tie(persona, liked, disliked)
    for a in TEXTS:
        for b in TEXTS:
            assert dp.near_tie(persona, Answer(a), Answer(b)) == dp.near_tie(persona, Answer(b), Answer(a))
        assert dp.near_tie(persona, Answer(a), Answer(a))


def test_the_own_style_wins_where_the_texts_say_so():
    """Each persona ranks the hand-written text in its style first among the four."""
    own = {"entertainment": 0, "literature": 1, "business": 2, "academy": 3}
    for persona, i in own.items():
        scores = [dp.JUDGES[persona](Answer(t)) for t in TEXTS]
        assert int(np.argmax(scores)) == i, (persona, scores)


def test_a_missing_data_file_is_a_one_line_error(tmp_path):
    with pytest.raises(DriftError, match="no such file"):
        dp.main(["--report", "--data", str(tmp_path / "nope.jsonl"), "--out", str(tmp_path / "out")])
    assert not (tmp_path / "out").exists()
