"""The demo's example persona and its settings, shared by `drift-cpp demo` and the experiments that study it."""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

from .fit.options import FitOptions
from .fit.profile import Profile
from .preferences import PreferencePair
from .score.attributes import builtin_attributes
from .score.scorer import Scorer

DEMO_PAIRS = Path(__file__).parent / "data" / "demo_pairs.jsonl"
# The demo scores these 14 style attributes (of the 41) to stay within a few minutes on 2 cores.
DEMO_ATTRIBUTES = ("concise", "formal", "vivid", "humor", "energy", "easy", "direct", "exclamatory",
                   "storyteller", "old_fashioned", "internet_slang", "analytic", "empathetic", "creative")
DEMO_PROMPTS = ("How do I boil an egg?", "Why is the sky blue?")
# The demo steers its top 3 attributes at beta 1 under the default guard: at beta 0.5 the guarded egg
# answer became a list that kept no fact a correct answer needs (docs/results/steering_guard).
DEMO_TOP, DEMO_BETA = 3, 1.0


def demo_profile(pairs: Sequence[PreferencePair], scorer: Scorer) -> Profile:
    """The paper's attribute model on the demo's attributes, unscreened (12 pairs cost little to score in full)."""
    return Profile.fit(pairs, scorer, builtin_attributes().select(DEMO_ATTRIBUTES),
                       FitOptions(top=DEMO_TOP, family="attributes"), screen=None)
