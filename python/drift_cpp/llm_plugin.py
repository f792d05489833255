"""drift-cpp as models of Simon Willison's `llm` CLI, registered through llm's plugin hooks.

    llm -m drift-cpp -o profile me.json "Plan my weekend"

Each installed preset is one model (`drift-cpp/<preset>`, the default also `drift-cpp`), decoded through
the public session (steer.session.Drift), so an answer here is the answer of `drift-cpp generate`.
Without a profile the model decodes plain. `llm`'s system prompt (-s) is the formula's system prompt, as
`drift-cpp generate --system`. The session is kept between calls with the same settings, so each turn of
`llm chat` evaluates only its own tokens.
"""

from __future__ import annotations

import dataclasses
import os
from typing import Optional

import llm
from pydantic import Field, create_model

from .params import DEFAULT_BETA, DEFAULT_MAX_KL, DEFAULT_PLAUSIBILITY, Sampling

MODEL_PREFIX = "drift-cpp"


@llm.hookimpl
def register_models(register):
    from .models import DEFAULT_MODEL, PRESETS, preset_installed
    for name, preset in PRESETS.items():
        if preset_installed(preset):
            register(DriftCpp(name), aliases=(MODEL_PREFIX,) if name == DEFAULT_MODEL else ())


# The scalar sampling settings (stop strings are a list, which an llm option is not).
SAMPLING = [f for f in dataclasses.fields(Sampling) if isinstance(f.default, (int, float))]


def _option(kind: type, help_: str, **checks):
    """An llm option that is None unless given: drift-cpp's own default applies, from params.py."""
    return Optional[kind], Field(default=None, description=help_, **checks)


class DriftCpp(llm.Model):
    can_stream = True

    Options = create_model(
        "Options", __base__=llm.Options,
        profile=_option(str, "A profile file (drift-cpp approximate); none: plain decoding."),
        beta=_option(float, f"The strength of personalization is 1/beta [default: {DEFAULT_BETA}]."),
        plausibility=_option(float, "The guard, where a profile steers: only tokens with p_LLM >= this times the "
                                    f"LLM's top probability (0: off) [default: {DEFAULT_PLAUSIBILITY}]."),
        max_kl=_option(float, "Steering scaled so that KL(fused || LLM) <= this many nats per token (0: off) "
                              f"[default: {DEFAULT_MAX_KL:g}]."),
        threads=_option(int, "CPU threads (0: one per core) [default: 0].", ge=0),
        **{f.name: _option(type(f.default), f"{f.metadata['help']} [default: {f.default}]") for f in SAMPLING},
    )

    def __init__(self, preset: str):
        self.preset = preset
        self.model_id = f"{MODEL_PREFIX}/{preset}"
        self._session = None  # (settings, Drift): the last session, reused while the settings stay
        self._settings = None

    def execute(self, prompt, stream, response, conversation):
        system, history = _messages(prompt.messages)
        drift = self._drift(prompt.options, system)
        sampling = Sampling(**{f.name: getattr(prompt.options, f.name) for f in SAMPLING
                               if getattr(prompt.options, f.name) is not None})
        yield from drift.stream(history, sampling)

    def _drift(self, options, system: Optional[str]):
        """The session for these settings: the last one where they are the same (a changed profile file is
        new settings), else a new one."""
        from .fit.profile import Profile
        from .models import ModelOptions
        from .steer.build import drift_formula
        from .steer.session import Drift

        path = None if options.profile is None else os.path.abspath(options.profile)
        stamp = None
        if path is not None and os.path.exists(path):
            st = os.stat(path)
            stamp = (st.st_size, st.st_mtime_ns)
        settings = (path, stamp, options.beta, options.plausibility, options.max_kl, options.threads, system)
        if self._settings != settings:
            guard = {name: getattr(options, name) for name in ("plausibility", "max_kl")
                     if getattr(options, name) is not None}
            profiles = [] if path is None else [(Profile.load(path), 1.0)]
            formula = drift_formula(system, profiles, DEFAULT_BETA if options.beta is None else options.beta,
                                    **guard)
            self._session = None  # its engine freed before the next one is made
            self._session = Drift(self.preset, formula=formula, options=ModelOptions(threads=options.threads or 0))
            self._settings = settings
        return self._session


def _messages(messages) -> tuple[Optional[str], list[dict]]:
    """llm's messages as drift-cpp's: the first system message is the formula's system prompt, the rest
    the conversation (their text parts)."""
    from llm.parts import TextPart

    system, history = None, []
    for message in messages:
        text = "".join(part.text for part in message.parts if isinstance(part, TextPart))
        if message.role == "system":
            system = text if system is None else system
        else:
            history.append({"role": message.role, "content": text})
    return system, history
