"""Formulas built from profiles: the Drift rule for one profile, or a blend of several."""

from __future__ import annotations

from typing import Iterable, Optional, Sequence

from ..errors import DriftError
from ..fit.profile import Profile
from ..params import DEFAULT_ATTRIBUTE_UNITS, DEFAULT_MAX_KL, DEFAULT_PLAUSIBILITY
from .formula import LLM, SLM, Formula, Term, default_system


def drift_formula(system: Optional[str], profiles: Sequence[tuple[Profile, float]], beta: float,
                  top: Optional[int] = None, exclude: Iterable[str] = (), plausibility: float = DEFAULT_PLAUSIBILITY,
                  max_kl: float = DEFAULT_MAX_KL, units: str = DEFAULT_ATTRIBUTE_UNITS) -> Formula:
    """The Drift rule for one profile, or a blend of profiles with weights (-1 negates one).

    system: the LLM's system prompt; None is the (first) profile's base prompt. The guard applies
    only where profiles steer: with none, this is plain decoding, left as it is. units: how the
    attribute weights steer (Profile.attribute_scale). The length target is the profiles' targets
    weighted by the size of their length weights in the blend.
    """
    exclude = list(exclude)
    base = profiles[0][0].attributes.base.prompt if profiles else None
    slm = profiles[0][0].model if profiles else None
    terms = [Term(LLM, system or base or default_system(), 1.0, label=LLM)]
    steering: dict[str, float] = {}
    eos, words, target, target_weight = 0.0, {}, 0.0, 0.0
    for profile, scale in profiles:
        if profile.attributes.base.prompt != base:
            raise DriftError("profiles with different base prompts cannot be blended")
        if profile.model != slm:
            raise DriftError(f"profiles built with different small models cannot be blended "
                             f"({slm.get('name')} and {profile.model.get('name')})")
        eos -= scale * profile.length_weight()
        if profile.length_target(beta) > 0:
            target += abs(scale * profile.length_weight()) * profile.length_target(beta)
            target_weight += abs(scale * profile.length_weight())
        for word, w in profile.word_weights():
            words[word] = words.get(word, 0.0) + scale * w
        weights = profile.decoding_weights(top, exclude, units) if profile.uses_attributes() else []
        for attribute, p in weights:
            terms.append(Term(SLM, attribute.prompt, scale * p, per_beta=True, label=attribute.id))
            steering[attribute.id] = steering.get(attribute.id, 0.0) + scale * p
        total = scale * sum(p for _, p in weights)
        if total:
            terms.append(Term(SLM, base, -total, per_beta=True, label="base"))
    models = ((SLM, slm),) if slm else ()
    formula = Formula(tuple(terms), beta, tuple(steering.items()), models, eos,
                      tuple((w, v) for w, v in words.items() if v),
                      length_target=target / target_weight if eos and target_weight else 0.0).merged()
    return formula.with_guard(plausibility, max_kl) if profiles else formula
