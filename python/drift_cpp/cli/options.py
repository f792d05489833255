"""What the commands share: models, scorers and options built from the parameter dataclasses, and the formula
the decoding options describe (checked before any model loads)."""

from __future__ import annotations

import dataclasses
from typing import Optional

import click

from .. import params
from ..errors import DriftError
from ..progress import TokenProgress


# The options every command that loads models or scores declares alike.
llm_option = click.option("--llm", default=None, help="Large model: a GGUF path or name (default: the embedded model).")
slm_option = click.option("--slm", default=None, help="Small model that scores the rewards and steers: a GGUF path "
                                                      "or name, the profile's own (default: the embedded model).")
no_cache_option = click.option("--no-cache", is_flag=True, help="Do not read or write the score cache.")


def model_options(ctx):
    from ..models import ModelOptions
    return ModelOptions(ctx.obj["n_gpu_layers"], ctx.obj["threads"], ctx.obj["chat_template"])


def open_model(ctx, spec):
    from ..models import load_model
    return load_model(spec, model_options(ctx))


def open_cache(no_cache):
    """Opened (and so checked) before any model is loaded."""
    from ..score.cache import ScoreCache
    return None if no_cache else ScoreCache()


def open_scorer(ctx, spec, cache, max_response_tokens=params.DEFAULT_MAX_RESPONSE_TOKENS, progress=TokenProgress):
    from ..score.scorer import Scorer
    return Scorer(open_model(ctx, spec), cache=cache, max_response_tokens=max_response_tokens, progress=progress)


def checked(module, check):
    """A click callback running drift-cpp's own check of a value (the one place it is defined)."""
    def callback(ctx, param, value):
        from importlib import import_module
        try:
            if value is not None:  # None: the option was left out
                getattr(import_module(f"drift_cpp.{module}"), check)(value)
        except DriftError as e:
            raise click.BadParameter(str(e), param=param) from None
        return value
    return callback


def split_ids(value):
    """Comma-separated ids; None when the option was not given."""
    return None if value is None else [x for x in value.split(",") if x.strip()]


def attribute_set(attributes_file, include, exclude):
    from ..score.attributes import builtin_attributes, load_attributes_file
    attrs = builtin_attributes()
    if attributes_file:
        attrs = load_attributes_file(attributes_file, into=attrs)
    if include is not None and not split_ids(include):
        raise DriftError("--include: no attribute ids given (leave the option out to use all attributes)")
    return attrs.select(split_ids(include), split_ids(exclude))


def take_fields(cls, kwargs: dict):
    """An options object made of the fields it names, popped out of a command's keyword arguments."""
    return cls(**{f.name: kwargs.pop(f.name) for f in dataclasses.fields(cls)})


def options_from(cls):
    """Click options for a parameter dataclass's fields, with its defaults and help: one source of truth."""
    def decorate(f):
        for fld in reversed(_cli_fields(cls)):
            flag = "--" + fld.name.replace("_", "-")
            if isinstance(fld.default, tuple):
                f = click.option(flag, multiple=True, help=fld.metadata.get("help"))(f)
            else:
                f = click.option(flag, type=type(fld.default), default=fld.default, show_default=True,
                                 help=fld.metadata.get("help"))(f)
        return f
    return decorate


def _cli_fields(cls) -> list:
    """The fields that are options (a grammar, say, comes from a file option of its own)."""
    return [f for f in dataclasses.fields(cls) if f.metadata.get("cli", True)]


sampling_options = options_from(params.Sampling)


def drift_options(f):
    for option in reversed([
        click.option("--profile", "profiles", multiple=True, metavar="PATH[:WEIGHT]",
                     help="Profile JSON; repeat to blend profiles, with weights (-1 negates). None: plain decoding."),
        llm_option,
        slm_option,
        click.option("--beta", type=float, default=None, callback=checked("params", "check_beta"),
                     help=f"Personalization strength 1/beta [default: {params.DEFAULT_BETA}]."),
        click.option("--top-attributes", type=int, default=None, help="Attributes used (default: the profile's)."),
        click.option("--exclude", default="", help="Attribute ids never used for decoding."),
        click.option("--system", default=None, help="The LLM's system prompt (default: the base prompt)."),
        click.option("--negative-system", default=None,
                     help="Classifier-free guidance: the system prompt to steer away from (with --cfg-scale)."),
        click.option("--cfg-scale", type=float, default=None,
                     help=f"With --negative-system: h = h_neg + G (h_pos - h_neg), |G| <= {params.MAX_SCALE:g} "
                          "[default: 1, plain decoding]."),
        click.option("--plausibility", type=float, default=None,
                     help="The guard: only tokens with p_LLM >= this times the LLM's top probability are chosen "
                          f"(0: off) [default: {params.DEFAULT_PLAUSIBILITY} where a profile steers; a --formula's own]."),
        click.option("--max-kl", type=float, default=None,
                     help="Trust region: the steering is scaled down where KL(steered || LLM) would pass this many "
                          f"nats per token (0: off) [default: {params.DEFAULT_MAX_KL:g}; a --formula's own]."),
        click.option("--formula", "formula_path", type=click.Path(), help="Decode with a saved formula (JSON)."),
        click.option("--save-formula", type=click.Path(), help="Write the formula in use as JSON."),
    ]):
        f = option(f)
    return options_from(params.EngineOptions)(f)


@dataclasses.dataclass(frozen=True)
class DriftConfig:
    """What the decoding options of generate and chat say, in one object."""
    profiles: tuple = ()
    llm: Optional[str] = None
    slm: Optional[str] = None
    beta: Optional[float] = None        # None: the default
    top_attributes: Optional[int] = None
    exclude: str = ""
    system: Optional[str] = None
    negative_system: Optional[str] = None
    cfg_scale: Optional[float] = None
    plausibility: Optional[float] = None  # None: the formula's own
    max_kl: Optional[float] = None
    formula_path: Optional[str] = None
    save_formula: Optional[str] = None
    n_ctx: int = params.EngineOptions.n_ctx
    n_batch: int = params.EngineOptions.n_batch

    @classmethod
    def take(cls, kwargs: dict) -> "DriftConfig":
        return take_fields(cls, kwargs)

    def blend(self) -> list:
        """(path, weight) of each --profile PATH[:WEIGHT], the weight checked."""
        out = []
        for spec in self.profiles:
            path, _, weight = spec.rpartition(":")
            try:
                path, weight = (path, float(weight)) if path else (spec, 1.0)
            except ValueError:  # a ':' inside the path itself
                path, weight = spec, 1.0
            params.check_scale(weight, f"--profile {spec}: the weight")
            out.append((path, weight))
        return out


def build_formula(cfg: DriftConfig):
    """The formula the options describe, checked (files, ids, numbers) before any model is loaded."""
    from ..fileio import check_output, check_utf8
    from ..steer.formula import Formula
    from ..steer.build import drift_formula
    from ..fit.profile import Profile
    for text, name in ((cfg.system, "--system"), (cfg.negative_system, "--negative-system")):
        if text is not None:
            check_utf8(text, name)
            if not text.strip():  # a saved formula refuses an empty prompt too
                raise DriftError(f"{name} is empty")
    params.check_top_attributes(cfg.top_attributes)
    if cfg.cfg_scale is not None:
        params.check_scale(cfg.cfg_scale, "--cfg-scale")
        if cfg.negative_system is None:
            raise DriftError("--cfg-scale needs --negative-system, the prompt it steers away from")
    params.check_guard(0.0 if cfg.plausibility is None else cfg.plausibility,
                       0.0 if cfg.max_kl is None else cfg.max_kl, ("--plausibility", "--max-kl"))
    params.EngineOptions(cfg.n_ctx, cfg.n_batch).check()
    blend = cfg.blend()
    if cfg.save_formula:
        check_output(cfg.save_formula, inputs=[cfg.formula_path, *(path for path, _ in blend)])
    if cfg.formula_path:
        given = [name for name, value in (("--profile", cfg.profiles), ("--negative-system", cfg.negative_system),
                                          ("--beta", cfg.beta), ("--top-attributes", cfg.top_attributes),
                                          ("--exclude", cfg.exclude), ("--system", cfg.system)) if value]
        if given:  # each would be silently ignored
            raise DriftError(f"--formula is a whole formula: it cannot be combined with {', '.join(given)}")
        formula = Formula.load(cfg.formula_path)
    else:
        profiles = [(Profile.load(path), weight) for path, weight in blend]
        formula = drift_formula(cfg.system, profiles, params.DEFAULT_BETA if cfg.beta is None else cfg.beta,
                                cfg.top_attributes, split_ids(cfg.exclude) or [])
        if cfg.negative_system is not None:
            formula = formula.with_cfg(cfg.negative_system, 1.0 if cfg.cfg_scale is None else cfg.cfg_scale)
    if cfg.plausibility is not None or cfg.max_kl is not None:
        formula = formula.with_guard(formula.plausibility if cfg.plausibility is None else cfg.plausibility,
                                     formula.max_kl if cfg.max_kl is None else cfg.max_kl)
    formula.check()  # every steering number, before any model loads
    return formula


def open_session(ctx, cfg: DriftConfig, formula, compare: bool = False):
    from ..steer.session import Drift
    drift = Drift(cfg.llm, cfg.slm, formula=formula, engine=params.EngineOptions(cfg.n_ctx, cfg.n_batch),
                  options=model_options(ctx), compare=compare)
    if cfg.save_formula:
        drift.save_formula(cfg.save_formula)
    return drift


def read_grammar(grammar: Optional[str], json_schema: Optional[str]) -> str:
    """The GBNF of --grammar FILE, or of --json-schema FILE; "" for neither."""
    from ..fileio import parse_json, read_text
    from ..steer.grammar import schema_grammar
    if grammar and json_schema:
        raise DriftError("--grammar and --json-schema are two grammars: give one")
    if grammar:
        text = read_text(grammar)
        if not text.strip():
            raise DriftError(f"{grammar}: an empty grammar")
        return text
    if not json_schema:
        return ""
    try:
        return schema_grammar(parse_json(read_text(json_schema), json_schema))
    except DriftError as e:
        raise DriftError(str(e) if str(e).startswith(json_schema) else f"{json_schema}: {e}") from None


def check_grammar_of(model, sampling, path: Optional[str]) -> None:
    """The sampling's grammar parses for the model, or one line naming its file with llama.cpp's reason
    (which llama.cpp writes to stderr, with the whole grammar: caught here)."""
    import os
    import re
    import tempfile
    from ..steer.binding import check_sampling_for
    with tempfile.TemporaryFile() as caught:
        saved = os.dup(2)
        os.dup2(caught.fileno(), 2)
        try:
            check_sampling_for(model, sampling)
        except DriftError as e:
            caught.seek(0)
            reason = re.search(r"error parsing grammar: (.*)", caught.read().decode("utf-8", "replace"))
            raise DriftError(f"{path}: {reason.group(1) if reason else e}") from None
        finally:
            os.dup2(saved, 2)
            os.close(saved)


def take_sampling(kwargs: dict):
    """Pops the sampling options out of a command's keyword arguments."""
    fields = {f.name: kwargs.pop(f.name) for f in _cli_fields(params.Sampling)}
    sampling = params.Sampling(**{**fields, "stop": tuple(fields["stop"])})
    sampling.check()
    return sampling
