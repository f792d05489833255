"""The drift-cpp command line: preferences → profile → personalized generation."""

from __future__ import annotations

import dataclasses
import json
import os
import sys
import time
from functools import wraps
from pathlib import Path
from typing import Optional

import click

from . import params
from .errors import DriftError



def _one_line(text: str) -> str:
    return " ".join(str(text).split())


def _errors(f):
    """Bad input ends in one line on stderr, never a traceback (exit 1); a bug in drift-cpp exits 2."""
    @wraps(f)
    def run(*args, **kwargs):
        try:
            return f(*args, **kwargs)
        except DriftError as e:
            click.echo(f"error: {_one_line(e)}", err=True)
            sys.exit(1)
        except KeyboardInterrupt:
            click.echo("\ninterrupted", err=True)
            sys.exit(130)
        except BrokenPipeError:  # the reader left (drift-cpp ... | head): nothing to say, nowhere to say it
            sys.stdout = None  # so that the interpreter's exit does not flush into the closed pipe again
            sys.exit(141)
        except Exception as e:  # the last resort: the real causes are DriftErrors
            click.echo(f"error: internal error ({type(e).__name__}): {_one_line(e)}; please report it", err=True)
            sys.exit(2)
    return run


_NO_ARGS_IS_HELP = getattr(click.exceptions, "NoArgsIsHelpError", ())  # click >= 8.2


class _Main(click.Group):
    """Usage errors (a bad option value, an unknown command) are one line too, exit 2."""

    def main(self, args=None, prog_name=None, complete_var=None, standalone_mode=True, **extra):
        if not standalone_mode:
            return super().main(args, prog_name, complete_var, standalone_mode, **extra)
        try:
            code = super().main(args, prog_name, complete_var, standalone_mode=False, **extra)
        except _NO_ARGS_IS_HELP as e:  # a bare group: its help, as click shows it
            e.show()
            sys.exit(e.exit_code)
        except click.ClickException as e:
            click.echo(f"error: {_one_line(e.format_message())}", err=True)
            sys.exit(e.exit_code)
        except click.Abort:
            click.echo("\ninterrupted", err=True)
            sys.exit(130)
        sys.exit(code if isinstance(code, int) else 0)


def _options(ctx):
    from .models import ModelOptions
    return ModelOptions(ctx.obj["n_gpu_layers"], ctx.obj["threads"], ctx.obj["chat_template"])


def _model(ctx, spec):
    from .models import load_model
    return load_model(spec, _options(ctx))


def _cache(no_cache):
    """Opened (and so checked) before any model is loaded."""
    from .score.cache import ScoreCache
    return None if no_cache else ScoreCache()


def _scorer(ctx, spec, cache, max_response_tokens=params.DEFAULT_MAX_RESPONSE_TOKENS):
    from .score.scorer import Scorer
    return Scorer(_model(ctx, spec), cache=cache, max_response_tokens=max_response_tokens, progress=TokenProgress)


def _checked(module, check):
    """A click callback running drift-cpp's own check of a value (the one place it is defined)."""
    def callback(ctx, param, value):
        from importlib import import_module
        try:
            if value is not None:  # None: the option was left out
                getattr(import_module(f".{module}", __package__), check)(value)
        except DriftError as e:
            raise click.BadParameter(str(e), param=param) from None
        return value
    return callback


def _ids(value):
    """Comma-separated ids; None when the option was not given."""
    return None if value is None else [x for x in value.split(",") if x.strip()]


@click.group(cls=_Main)
@click.option("--verbose", is_flag=True, help="Show llama.cpp's own log (or set DRIFT_CPP_LOG=1).")
@click.option("--threads", type=click.IntRange(0, 1024), default=0, help="CPU threads (0: one per CPU core).")
@click.option("--n-gpu-layers", type=click.IntRange(-1, 100000), default=0,
              help="Layers to offload to the accelerator llama-cpp-python was built with (-1: all).")
@click.option("--chat-template", default=None,
              help="Built-in llama.cpp template (gemma, chatml, llama3, ...) for a GGUF that has none.")
@click.pass_context
def main(ctx, verbose, threads, n_gpu_layers, chat_template):
    """Personalized generation with Drift on a laptop: no training, a few dozen preference pairs."""
    from . import runtime
    if verbose:
        runtime.set_verbose(True)
    ctx.obj = {"threads": threads, "n_gpu_layers": n_gpu_layers, "chat_template": chat_template}


@main.command()
@click.option("--system", required=True, help="System prompt.")
@click.option("--prompt", required=True, help="User message.")
@click.option("--response", required=True, help="Response to score.")
@click.option("--model", default=None, help="GGUF path or name (smollm2, gemma); default: the embedded model.")
@click.option("--json", "as_json", is_flag=True)
@click.pass_context
@_errors
def score(ctx, system, prompt, response, model, as_json):
    """Log-probability of RESPONSE to PROMPT under SYSTEM."""
    from .fileio import check_utf8
    from .score.scorer import ScoreRequest
    for name, text in (("--system", system), ("--prompt", prompt), ("--response", response)):
        check_utf8(text, name)
        if not text.strip():  # each named here: the scorer's own check would name only the request
            raise DriftError(f"{name} is empty")
    scorer = _scorer(ctx, model, cache=None, max_response_tokens=0)  # the whole response, as asked
    request = ScoreRequest(system, (("user", prompt),), response, label="--prompt, --response")
    tokens, per_token = scorer.token_logprobs(request)
    result = {"logprob": float(per_token.sum()), "n_tokens": len(tokens), "template": scorer.model.template.name}
    if as_json:
        click.echo(json.dumps(result))
    else:
        click.echo(f"logprob {result['logprob']:.4f} over {result['n_tokens']} tokens (template: {result['template']})")


def _attribute_set(attributes_file, include, exclude):
    from .score.attributes import builtin_attributes, load_attributes_file
    attrs = builtin_attributes()
    if attributes_file:
        attrs = load_attributes_file(attributes_file, into=attrs)
    if include is not None and not _ids(include):
        raise DriftError("--include: no attribute ids given (leave the option out to use all attributes)")
    return attrs.select(_ids(include), _ids(exclude))


def _fit_options(f):
    """The options of a fit, shared by approximate and approximate-many."""
    for option in reversed([
        click.option("--slm", default=None, help="Small model for the rewards (default: the embedded model)."),
        click.option("--top", default=params.DEFAULT_TOP, show_default=True, help="Attributes used for decoding."),
        click.option("--attributes", "attributes_file", type=click.Path(), help="More attributes (TOML or JSON)."),
        click.option("--include", help="Only these attribute ids (comma-separated)."),
        click.option("--exclude", help="Leave out these attribute ids."),
        click.option("--decode-exclude", help="Approximate and show, but never decode with, these ids."),
        click.option("--normalize", type=click.Choice(["sum", "mean"]), default="sum", show_default=True),
        click.option("--method", type=click.Choice(["qp", "logistic", "bt"]),
                     help="qp: the paper's closed form; bt (the default, chosen by the DSP evaluation) and logistic: "
                          "regularized regressions."),
        click.option("--l2", type=float, help="Penalty of bt and logistic (default 1000); larger is closer to qp."),
        click.option("--family", help="auto (the default): attributes, length and lexical in one fit, each shrunk "
                                      "by its prior (attributes alone below 10 pairs); or some of them, e.g. "
                                      "attributes+length."),
        click.option("--max-response-tokens", default=params.DEFAULT_MAX_RESPONSE_TOKENS, show_default=True,
                     help="Score responses on their first tokens only (0: whole responses; too long is an error). "
                          "The profile records it; updates score alike.",
                     callback=_checked("scorer", "check_max_response_tokens")),
        click.option("--no-cache", is_flag=True, help="Do not read or write the score cache."),
        click.option("--exhaustive", is_flag=True, help="Score every pair under every attribute (the paper's way) "
                                                        "instead of screening attributes (docs/screening.md)."),
        click.option("--json", "as_json", is_flag=True, help="Print what was written and what scoring cost, as JSON."),
    ]):
        f = option(f)
    return f


def _fit_setup(top, normalize, method, l2, family, max_response_tokens, attributes_file, include, exclude,
               decode_exclude, exhaustive):
    """(FitOptions, attributes, decode_exclude, screen options or None), all checked before any model loads."""
    from .fit.profile import FitOptions, Profile
    from .fit.screening import ScreenOptions
    chosen = {k: v for k, v in (("method", method), ("l2", l2), ("family", family)) if v is not None}
    options = FitOptions(top, normalize, max_response_tokens=max_response_tokens, **chosen)
    options.check()
    attrs = _attribute_set(attributes_file, include, exclude)
    decode_exclude = Profile.check_decode_exclude(attrs, _ids(decode_exclude) or [])
    return options, attrs, decode_exclude, None if exhaustive else ScreenOptions()


@main.command()
@click.argument("prefs", type=click.Path())
@click.option("-o", "--output", required=True, type=click.Path(), help="Profile JSON to write.")
@_fit_options
@click.pass_context
@_errors
def approximate(ctx, prefs, output, slm, top, attributes_file, include, exclude, decode_exclude, normalize, method,
                l2, family, max_response_tokens, no_cache, exhaustive, as_json):
    """Fit a profile from preference pairs (JSONL or CSV with prompt, chosen, rejected).

    The first pairs are scored under every attribute, later ones under those that matter so far
    and a few at random (attribute screening); --exhaustive scores them all."""
    from .fileio import check_output
    from .preferences import load_pairs
    from .fit.profile import Profile
    options, attrs, decode_exclude, screen = _fit_setup(top, normalize, method, l2, family, max_response_tokens,
                                                        attributes_file, include, exclude, decode_exclude, exhaustive)
    check_output(output, inputs=[prefs, attributes_file])
    pairs = load_pairs(prefs)
    scorer = _scorer(ctx, slm, _cache(no_cache), max_response_tokens)
    profile = Profile.fit(pairs, scorer, attrs, options, decode_exclude, screen)
    profile.save(output)
    _report(profile, output, f"wrote {output}: {len(pairs)} pairs, {len(attrs)} attributes", as_json)


@main.command("approximate-many")
@click.argument("pairs_dir", type=click.Path())
@click.option("-o", "--output", "out_dir", required=True, type=click.Path(),
              help="Directory of profiles: USER.json for each pairs file USER.jsonl (.csv, .json, .parquet); "
                   "not the pairs directory.")
@click.option("--workers", type=click.IntRange(1, 4096), default=None,
              help="Processes (or Ray actors), each with its own sLM at the global --threads "
                   "[default: the CPU cores, or the Ray cluster's CPUs].")
@click.option("--ray", "ray_address", default=None,
              help="Fit on this Ray cluster (e.g. 10.0.0.1:6379, or 'auto'); needs pip install 'drift-cpp[ray]'.")
@_fit_options
@click.pass_context
@_errors
def approximate_many(ctx, pairs_dir, out_dir, workers, ray_address, slm, top, attributes_file, include, exclude,
                     decode_exclude, normalize, method, l2, family, max_response_tokens, no_cache, exhaustive, as_json):
    """Fit one profile per user file of PAIRS_DIR; users whose profile is up to date are skipped."""
    from .fit.many import Job, approximate_many as run
    from .score.scorer import Cost
    options, attrs, decode_exclude, screen = _fit_setup(top, normalize, method, l2, family, max_response_tokens,
                                                        attributes_file, include, exclude, decode_exclude, exhaustive)
    job = Job(slm, _options(ctx), attrs, options, screen, tuple(decode_exclude))
    total = []

    def done(name, result):
        if result.error is not None:  # as it comes: the other users go on
            click.echo(f"error: {name}: {result.error}", err=True)
            return
        total.append(result)
        if not as_json:
            click.echo(f"{name}: {result.data.n_pairs} pairs, {Cost(**result.data.cost).line()}")

    fitted, skipped, failed = run(pairs_dir, out_dir, job, _cache(no_cache), workers, ray_address, done)
    cost = sum((Cost(**r.data.cost) for r in total), Cost())
    if as_json:
        click.echo(json.dumps({"fitted": sorted(fitted), "skipped": skipped, "failed": failed,
                               "cost": cost.to_dict()}, indent=2))
    else:
        click.echo(f"{len(fitted)} profiles written to {out_dir}, {len(skipped)} up to date"
                   + (f", {len(failed)} failed ({', '.join(sorted(failed))})" if failed else "")
                   + f"; in all {cost.line()}")
    if failed:
        sys.exit(1)


def _report(profile, path, line: str, as_json: bool) -> None:
    """What approximate and profile update did: the file, the screen, and the cost of scoring."""
    if as_json:
        click.echo(json.dumps({"profile": str(path), "n_pairs": profile.n_pairs,
                               "n_attributes": len(profile.attributes), "selected": profile.selected,
                               "screened": profile.screen is not None, "cost": profile.cost.to_dict(),
                               "scored_fraction": profile.scored_fraction()}, indent=2))
        return
    click.echo(line)
    how = (f"screened: {profile.scored_fraction():.0%} of the pair x attribute entries scored"
           if profile.screen is not None else "exhaustive: every pair under every attribute")
    click.echo(f"{profile.cost.line()} (total for this profile; {how})")
    _show(profile)


def _show(profile, width: int = 30):
    """The chosen model in words, then the attributes ranked by W−L per pair (the paper's unit implicit
    preference), with bars."""
    if profile.choice is not None:
        from .fit.choice import explain
        names = {a.id: a.name for a in profile.attributes.attributes}
        for line in explain(profile.choice, [(names[a.id], w) for a, w in profile.decoding_weights()],
                            profile.word_weights()):
            click.echo(line)
        click.echo()
    uip = profile.unit_implicit_preference()
    scale = max(abs(uip).max(), 1e-12)
    selected, excluded = set(profile.selected), set(profile.decode_exclude)
    click.echo(f"{'attribute':<24}{'W-L per pair':>14}  {'p':>7}")
    for i in sorted(range(len(uip)), key=lambda i: -uip[i]):
        a = profile.attributes.attributes[i]
        n = int(round(abs(uip[i]) / scale * width))
        bar = ("+" if uip[i] >= 0 else "-") * n
        mark = " *" if a.id in selected else " x" if a.id in excluded else ""
        click.echo(f"{a.id:<24}{uip[i]:>14.3f}  {profile.p[i]:>7.3f}  {bar}{mark}")
    click.echo("* used for decoding   x approximated and shown, excluded from decoding")


@main.group()
def profile():
    """Read and update profiles."""


@profile.command("show")
@click.argument("path", type=click.Path())
@click.option("--json", "as_json", is_flag=True)
@click.option("--plot", type=click.Path(), help="Write a PNG bar chart (needs matplotlib).")
@_errors
def profile_show(path, as_json, plot):
    """Attributes ranked by the user's unit implicit preference."""
    from .fileio import check_output
    from .fit.profile import Profile
    if plot:
        check_output(plot, inputs=[path])
    prof = Profile.load(path)
    if as_json:
        from .fit.learning import report
        click.echo(json.dumps(report(prof), indent=2))
    else:
        o = prof.options
        fit = o.method if o.method == "qp" else f"{o.method} l2={o.l2:g}"
        click.echo(f"{path}: {prof.n_pairs} pairs, model {prof.model.get('name')}, {fit}/{o.normalize}")
        _show(prof)
    if plot:
        _plot(prof, plot)


def _plot(prof, out):
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise DriftError("matplotlib is not installed: pip install 'drift-cpp[plot]'") from None
    uip = prof.unit_implicit_preference()
    order = sorted(range(len(uip)), key=lambda i: uip[i])
    fig, ax = plt.subplots(figsize=(6, max(3, 0.22 * len(order))))
    ax.barh([prof.attributes.ids[i] for i in order], [uip[i] for i in order],
            color=["tab:blue" if uip[i] >= 0 else "tab:red" for i in order])
    ax.set_xlabel("unit implicit preference (W - L per pair)")
    fig.tight_layout()
    from .fileio import save_figure
    save_figure(fig, out, dpi=120)
    click.echo(f"wrote {out}")


@profile.command("update")
@click.argument("path", type=click.Path())
@click.argument("more", type=click.Path())
@click.option("--slm", default=None)
@click.option("--no-cache", is_flag=True)
@click.option("--json", "as_json", is_flag=True, help="Print what was written and what scoring cost, as JSON.")
@click.pass_context
@_errors
def profile_update(ctx, path, more, slm, no_cache, as_json):
    """Add the new pairs of MORE (only those are scored; a screened profile keeps screening)."""
    from .fileio import check_output
    from .preferences import load_pairs
    from .fit.profile import Profile
    check_output(path, inputs=[more])
    prof = Profile.load(path)
    prof.check_updatable()
    pairs = load_pairs(more)
    scorer = _scorer(ctx, slm, _cache(no_cache), prof.options.max_response_tokens)
    added = prof.update(pairs, scorer)
    prof.save(path)
    if not as_json:
        click.echo(scorer.cost.line() + " for this update")
    chosen = f"; model: {'+'.join(prof.choice.family)}" if prof.choice else ""
    _report(prof, path, f"{path}: added {added} new pairs ({len(pairs) - added} already included), "
                        f"{prof.n_pairs} in all{chosen}", as_json)


@profile.command("add-attributes")
@click.argument("path", type=click.Path())
@click.argument("prefs", type=click.Path())
@click.option("--attributes", "attributes_file", required=True, type=click.Path())
@click.option("--slm", default=None)
@click.option("--no-cache", is_flag=True)
@click.pass_context
@_errors
def profile_add_attributes(ctx, path, prefs, attributes_file, slm, no_cache):
    """Add attributes from a TOML/JSON file; only their columns are scored. PREFS are the profile's pairs."""
    from .score.attributes import load_attributes_file
    from .fileio import check_output
    from .preferences import load_pairs
    from .fit.profile import Profile
    check_output(path, inputs=[prefs, attributes_file])
    prof = Profile.load(path)
    prof.check_updatable()
    new = load_attributes_file(attributes_file, into=prof.attributes)
    pairs = load_pairs(prefs)
    prof.add_attributes(new.attributes, pairs, _scorer(ctx, slm, _cache(no_cache), prof.options.max_response_tokens))
    prof.save(path)
    click.echo(f"{path}: {len(prof.attributes)} attributes")


@main.command()
@click.argument("profile_path", type=click.Path())
@click.argument("pairs_path", type=click.Path())
@click.option("--slm", default=None)
@click.option("--json", "as_json", is_flag=True)
@click.option("--no-cache", is_flag=True)
@click.pass_context
@_errors
def predict(ctx, profile_path, pairs_path, slm, as_json, no_cache):
    """Predicted preference for each pair, and the accuracy (pairs are labelled: 'chosen' is preferred)."""
    from .fit import approximation
    from .preferences import load_pairs
    from .fit.profile import Profile
    prof = Profile.load(profile_path)
    pairs = load_pairs(pairs_path)
    margins = prof.predict(pairs, _scorer(ctx, slm, _cache(no_cache), prof.options.max_response_tokens))
    rows = [{"id": p.id, "margin": float(m), "prefers": "chosen" if m > 0 else "rejected" if m < 0 else "tie"}
            for p, m in zip(pairs, margins)]
    acc = approximation.accuracy(margins)
    if as_json:
        click.echo(json.dumps({"pairs": rows, "accuracy": acc}, indent=2))
    else:
        for r in rows:
            click.echo(f"{r['id']}\t{r['margin']:+.3f}\t{r['prefers']}")
        click.echo(f"accuracy {acc:.3f} on {len(rows)} pairs")


def _options_from(cls):
    """Click options for a parameter dataclass's fields, with its defaults and help: one source of truth."""
    def decorate(f):
        for fld in reversed(dataclasses.fields(cls)):
            flag = "--" + fld.name.replace("_", "-")
            if isinstance(fld.default, tuple):
                f = click.option(flag, multiple=True, help=fld.metadata.get("help"))(f)
            else:
                f = click.option(flag, type=type(fld.default), default=fld.default, show_default=True,
                                 help=fld.metadata.get("help"))(f)
        return f
    return decorate


_sampling_options = _options_from(params.Sampling)


def _drift_options(f):
    for option in reversed([
        click.option("--profile", "profiles", multiple=True, metavar="PATH[:WEIGHT]",
                     help="Profile JSON; repeat to blend profiles, with weights (-1 negates). None: plain decoding."),
        click.option("--llm", default=None, help="Large model (default: the embedded model)."),
        click.option("--slm", default=None, help="Small model of the profile (default: the embedded model)."),
        click.option("--beta", type=float, default=None, callback=_checked("params", "check_beta"),
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
    return _options_from(params.EngineOptions)(f)


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
        """Pops this object's options out of a command's keyword arguments."""
        return cls(**{f.name: kwargs.pop(f.name) for f in dataclasses.fields(cls)})

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


def _formula(cfg: DriftConfig):
    """The formula the options describe, checked (files, ids, numbers) before any model is loaded."""
    from .fileio import check_output, check_utf8
    from .steer.formula import Formula
    from .steer.build import drift_formula
    from .fit.profile import Profile
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
                                cfg.top_attributes, _ids(cfg.exclude) or [])
        if cfg.negative_system is not None:
            formula = formula.with_cfg(cfg.negative_system, 1.0 if cfg.cfg_scale is None else cfg.cfg_scale)
    if cfg.plausibility is not None or cfg.max_kl is not None:
        formula = formula.with_guard(formula.plausibility if cfg.plausibility is None else cfg.plausibility,
                                     formula.max_kl if cfg.max_kl is None else cfg.max_kl)
    formula.check()  # every steering number, before any model loads
    return formula


def _make_drift(ctx, cfg: DriftConfig, formula, compare: bool = False):
    from .steer.session import Drift
    drift = Drift(cfg.llm, cfg.slm, formula=formula, engine=params.EngineOptions(cfg.n_ctx, cfg.n_batch),
                  options=_options(ctx), compare=compare)
    if cfg.save_formula:
        drift.save_formula(cfg.save_formula)
    return drift


def _sampling(kwargs: dict):
    """Pops the sampling options out of a command's keyword arguments."""
    fields = {f.name: kwargs.pop(f.name) for f in dataclasses.fields(params.Sampling)}
    sampling = params.Sampling(**{**fields, "stop": tuple(fields["stop"])})
    sampling.check()
    return sampling


SIDE_BY_SIDE_WIDTH = 38  # of each column: two fit an 80-column terminal


def _side_by_side(left: str, right: str, titles=("plain", "personalized"), width: int = SIDE_BY_SIDE_WIDTH) -> str:
    import textwrap
    cols = [textwrap.wrap(t, width) or [""] for t in (left, right)]
    n = max(map(len, cols))
    lines = [f"{titles[0]:<{width}} | {titles[1]}", "-" * width + "-+-" + "-" * width]
    for i in range(n):
        a = cols[0][i] if i < len(cols[0]) else ""
        b = cols[1][i] if i < len(cols[1]) else ""
        lines.append(f"{a:<{width}} | {b}")
    return "\n".join(lines)


@main.command()
@_drift_options
@_sampling_options
@click.option("--prompt", default=None, help="User message (default: read stdin).")
@click.option("--compare", is_flag=True, help="Show the plain and the personalized answers side by side.")
@click.option("--json", "as_json", is_flag=True)
@click.option("--stats", is_flag=True, help="Tokens/s and mean next-token entropy (plain vs fused).")
@click.pass_context
@_errors
def generate(ctx, prompt, compare, as_json, stats, **options):
    """Generate an answer, personalized by --profile (or steered by --negative-system, --formula)."""
    from .fileio import check_utf8, decode_utf8
    cfg, sampling = DriftConfig.take(options), _sampling(options)
    if prompt is None:
        prompt = decode_utf8(sys.stdin.buffer.read(), "stdin")
    check_utf8(prompt, "--prompt")
    if not prompt.strip():
        raise DriftError("empty prompt: pass --prompt or write it to stdin")
    drift = _make_drift(ctx, cfg, _formula(cfg), compare=compare)
    if compare:  # plain decoding is a second formula, run in the same steps
        result, plain = drift.generate_all(prompt, sampling, stats=stats)
    else:
        streaming = not as_json
        result, plain = drift.generate(prompt, sampling, on_piece=(lambda s: click.echo(s, nl=False)) if streaming
                                       else None, stats=stats), None
    if as_json:
        out = {"text": result.text, "finish_reason": result.finish_reason, "n_tokens": len(result.tokens),
               "tokens_per_second": result.tokens_per_second, "weights": result.weights,
               "guard": {"plausibility": drift.formula.plausibility, "max_kl": drift.formula.max_kl}}
        if stats:
            out.update(entropy_plain_bits=result.entropy_plain_bits, entropy_fused_bits=result.entropy_fused_bits)
        if plain:
            out["plain"] = plain.text
        click.echo(json.dumps(out, indent=2))
        return
    if compare:
        click.echo(_side_by_side(plain.text, result.text))
    else:
        click.echo()
    if stats:
        click.echo(f"[{len(result.tokens)} tokens, {result.tokens_per_second:.1f} tok/s, entropy plain "
                   f"{result.entropy_plain_bits:.2f} bits -> fused {result.entropy_fused_bits:.2f} bits, "
                   f"finish: {result.finish_reason}]", err=True)


CHAT_HELP = "/profile PATH, /beta X, /attributes, /compare, /ab [MESSAGE], /undo, /reset, /quit"


def _learning_target(cfg: DriftConfig) -> Optional[Path]:
    """The profile chat learns into: the one --profile, given without a weight; None otherwise."""
    if cfg.formula_path or len(cfg.profiles) != 1 or cfg.blend()[0] != (cfg.profiles[0], 1.0):
        return None
    return Path(cfg.profiles[0])


def _chat_formula(cfg: DriftConfig, target: Optional[Path]):
    """A profile being learned decodes plain until it has MIN_PROFILE_PAIRS pairs (or does not exist yet)."""
    from .fit import learning
    if target is not None and not learning.steers(learning.load(target)):
        return _formula(dataclasses.replace(cfg, profiles=()))
    return _formula(cfg)


class _Learner:
    """chat's preference capture: two candidates, the user's pick, the profile updated with it."""

    def __init__(self, ctx, cfg: DriftConfig, target: Optional[Path], include: Optional[str]):
        self.ctx, self.cfg, self.target = ctx, cfg, target
        self.attributes = _attribute_set(None, include, None)  # checked now, used for a new profile
        self._scorer = None
        if target is not None and not target.exists():
            click.echo(f"(new profile {target}: your picks create it; plain decoding until "
                       f"{params.MIN_PROFILE_PAIRS} pairs)", err=True)

    def need(self) -> Path:
        if self.target is None:
            raise DriftError("/ab, /undo and --learn need one --profile PATH (no weight, no --formula) to learn into")
        return self.target

    def ab(self, drift, line: str, sampling, read_pick):
        """Two answers to `line`, side by side; the pick becomes a pair and the conversation goes on with it."""
        from .preferences import pair_from
        self.ready()  # a fault found after the two answers would lose the pick
        history = drift.history + [{"role": "user", "content": line}]
        if drift.active_weights:  # a profile steers: it against plain decoding
            answers = [g.text for g in drift.generate_all(history, sampling)]
            titles = ("1: personalized", "2: plain")
        else:  # two samples
            answers = [drift.generate(history, dataclasses.replace(sampling, seed=(sampling.seed + i) % 2**32)).text
                       for i in (0, 1)]
            titles = ("1", "2")
        click.echo(_side_by_side(*answers, titles=titles))
        pick = read_pick()
        drift.history = history + [{"role": "assistant", "content": answers[1 if pick == 2 else 0]}]
        if pick is None:
            return drift
        if answers[0].strip() == answers[1].strip():
            click.echo("(the two answers are the same: nothing to learn)")
            return drift
        chosen, rejected = answers[pick - 1], answers[2 - pick]
        return self._learn(drift, pair_from({"prompt": history, "chosen": chosen, "rejected": rejected}, "pick"))

    def ready(self) -> None:
        """The profile, its pairs file and its folder can take a pick, and the scorer is loaded."""
        from .fit import learning
        learning.check(self.need())
        if self._scorer is None:
            self._scorer = _scorer(self.ctx, self.cfg.slm, _cache(False))

    def _learn(self, drift, pair):
        from .fit import learning
        update = learning.add(self.target, [pair], self._scorer, self.attributes)
        return self._report(drift, update, "learned")

    def undo(self, drift):
        from .fit import learning
        return self._report(drift, learning.undo(self.need()), "undone")

    def _report(self, drift, update, what):
        from .fit import learning
        n = update.profile.n_pairs if update.profile else 0
        state = "" if learning.steers(update.profile) and n else f"; plain decoding until {params.MIN_PROFILE_PAIRS} pairs"
        click.echo(f"({what}: {n} pairs in {self.target}{state}; {update.describe()})")
        formula = _chat_formula(self.cfg, self.target)
        if formula == drift.formula:
            return drift
        new = _make_drift(self.ctx, self.cfg, formula, compare=True)
        new.history = drift.history
        return new


@main.command()
@_drift_options
@_sampling_options
@click.option("--learn", type=click.IntRange(0), default=0,
              help="Every N-th turn shows two answers and learns from your pick into --profile (0: only /ab).")
@click.option("--learn-include", default=None, help="A new profile scores only these attribute ids (comma-separated).")
@click.pass_context
@_errors
def chat(ctx, learn, learn_include, **options):
    """Interactive chat that streams tokens. Commands: /profile PATH, /beta X, /attributes, /compare, /ab [MESSAGE],
    /undo, /reset, /quit. With one --profile, /ab and --learn N learn from your picks (a missing profile is created)."""
    from .fileio import decode_utf8
    cfg, sampling = DriftConfig.take(options), _sampling(options)
    target = _learning_target(cfg)
    learner = _Learner(ctx, cfg, target, learn_include)
    if learn:
        learner.need()
    drift = _make_drift(ctx, cfg, _chat_formula(cfg, target), compare=True)
    interactive = sys.stdin.isatty()
    if interactive:
        click.echo(f"drift-cpp chat ({CHAT_HELP})")
    stdin = sys.stdin.buffer  # bytes, so one undecodable line is an error for that line only
    n = turns = 0
    ab_next = False

    def read_pick():
        nonlocal n
        while True:
            click.echo("pick 1, 2 or s(kip): ", nl=False)
            raw = stdin.readline()
            n += 1
            answer = decode_utf8(raw, "stdin", first_line=n).strip().lower()
            if answer in ("1", "2"):
                return int(answer)
            if answer in ("s", "skip", "") or not interactive:
                click.echo("(skipped)")
                return None

    while True:
        if interactive:
            click.echo("> ", nl=False)
        raw = stdin.readline()
        if not raw:
            break
        n += 1
        try:
            line = decode_utf8(raw, "stdin", first_line=n).strip()
            if not line:
                continue
            if line.startswith("/"):
                command, _, arg = line.partition(" ")
                if command == "/quit":
                    break
                elif command == "/reset":
                    drift.reset()
                    click.echo("(conversation cleared)")
                elif command == "/beta":
                    try:
                        beta = float(arg)
                    except ValueError:
                        raise DriftError(f"/beta: expected a number, e.g. /beta 0.5, got {arg.strip()!r}") from None
                    drift.beta = beta
                    cfg = dataclasses.replace(cfg, beta=drift.beta)
                    click.echo(f"(beta = {drift.beta})")
                elif command == "/profile":
                    new = dataclasses.replace(cfg, profiles=(arg.strip(),) if arg.strip() else ())
                    target = _learning_target(new)
                    drift = _make_drift(ctx, new, _chat_formula(new, target), compare=True)  # only once it loaded
                    cfg, learner = new, _Learner(ctx, new, target, learn_include)
                    click.echo(f"(profile: {arg.strip() or 'none'})")
                elif command == "/attributes":
                    for name, w in drift.active_weights or [("(none: plain decoding)", 0.0)]:
                        click.echo(f"  {name:<24}{w:+.3f}")
                    f = drift.formula
                    click.echo(f"  (guard: plausibility {f.plausibility:g}, max_kl {f.max_kl:g}; beta {f.beta:g})")
                elif command == "/compare":
                    plain = drift.compare_last(sampling)
                    click.echo(_side_by_side(plain.text, drift.history[-1]["content"]))
                elif command == "/ab":
                    learner.need()
                    if arg.strip():
                        turns += 1
                        drift = learner.ab(drift, arg.strip(), sampling, read_pick)
                    else:
                        ab_next = True
                        click.echo("(the next message gets two answers)")
                elif command == "/undo":
                    drift = learner.undo(drift)
                else:
                    raise DriftError(f"unknown command {command}: {CHAT_HELP}")
                continue
            turns += 1
            if ab_next or (learn and turns % learn == 0):
                ab_next = False
                drift = learner.ab(drift, line, sampling, read_pick)
                continue
            try:
                drift.chat(line, sampling, on_piece=lambda s: click.echo(s, nl=False))
                click.echo()
            except KeyboardInterrupt:  # Ctrl-C ends the answer, not the chat
                click.echo(" [interrupted]")
        except (DriftError, ValueError) as e:
            click.echo(f"error: {e}", err=True)


def _api_key(ctx, param, value):
    """An empty key, given or in the environment (where click reads it as unset), would serve without one."""
    if value == "" or (value is None and os.environ.get(param.envvar) == ""):
        raise click.BadParameter(f"empty (here or in {param.envvar}): give a key, or unset both to serve without one",
                                 param=param)
    return value


@main.command()
@click.option("--profiles", "profiles_dir", required=True, type=click.Path(exists=True, file_okay=False),
              help="Directory of the users' profiles: DIR/<user>.json, with their pairs in DIR/<user>.pairs.jsonl.")
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on (localhost: this machine only).")
@click.option("--port", type=click.IntRange(0, 65535), default=8000, show_default=True)
@click.option("--api-key", default=None, envvar="DRIFT_CPP_API_KEY", callback=_api_key,
              help="Require 'Authorization: Bearer KEY' (or set DRIFT_CPP_API_KEY).")
@click.option("--max-body-bytes", type=click.IntRange(1), default=4 * 2**20, show_default=True,
              help="Refuse request bodies over this size (HTTP 413) before reading them.")
@click.option("--llm", default=None, help="Large model (default: the embedded model).")
@click.option("--slm", default=None, help="Small model of the profiles (default: the embedded model).")
@click.option("--beta", type=float, default=params.DEFAULT_BETA, show_default=True,
              help="Personalization strength 1/beta, unless a request gives its own 'beta'.",
              callback=_checked("params", "check_beta"))
@click.option("--top-attributes", type=int, default=None, help="Attributes used (default: each profile's).")
@click.option("--system", default=None, help="The LLM's system prompt (default: the base prompt).")
@click.option("--slots", type=click.IntRange(1, 1024), default=4, show_default=True,
              help="Requests decoded together per layout; each slot holds --n-ctx KV cells per sequence.")
@click.option("--attributes", "attributes_file", type=click.Path(), help="More attributes for new profiles.")
@click.option("--include", help="New profiles score only these attribute ids (comma-separated).")
@click.option("--no-cache", is_flag=True, help="Do not read or write the score cache.")
@_options_from(params.EngineOptions)
@click.pass_context
@_errors
def serve(ctx, profiles_dir, host, port, api_key, max_body_bytes, slots, attributes_file, include, no_cache,
          **options):
    """An OpenAI-compatible server (/v1/chat/completions, /v1/models) that personalizes by the request's 'user'."""
    try:
        from . import server
    except ImportError as e:
        raise DriftError(f"serve needs the server extra: pip install 'drift-cpp[server]' ({e})") from None
    from .steer.batching import Batcher
    cfg = DriftConfig(**options)
    _formula(cfg)  # checks --system, --top-attributes and the engine options before any model loads
    attrs = _attribute_set(attributes_file, include, None)
    batcher = Batcher(_model(ctx, cfg.llm), _model(ctx, cfg.slm), params.EngineOptions(cfg.n_ctx, cfg.n_batch),
                      _options(ctx).n_threads, slots)
    app = server.Server(Path(profiles_dir), batcher, lambda: _scorer(ctx, cfg.slm, _cache(no_cache)), attrs,
                        cfg.system, cfg.beta, cfg.top_attributes, api_key)
    server.serve(app, host, port, max_body_bytes)


@main.command()
@click.option("--no-cache", is_flag=True)
@click.option("--llm", default=None, help="Large model (default: the embedded model).")
@click.option("--slm", default=None, help="Small model that scores and steers (default: the embedded model).")
@click.pass_context
@_errors
def demo(ctx, no_cache, llm, slm):
    """Fit a profile from the bundled example pairs and show what it does to two answers."""
    from .demo import DEMO_ATTRIBUTES, DEMO_BETA, DEMO_PAIRS, DEMO_PROMPTS, demo_profile
    from .preferences import load_pairs
    from .steer.session import Drift, Sampling
    pairs = load_pairs(DEMO_PAIRS)
    click.echo(f"The example persona wants short, direct answers: {len(pairs)} preference pairs in {DEMO_PAIRS.name}.")
    click.echo(f"Scoring them under {len(DEMO_ATTRIBUTES)} of the 41 attributes with "
               f"{slm or 'the embedded model'} (minutes the first time, seconds from the cache)...")
    # The paper's attribute model on whole responses under every attribute: the demo's settings were
    # chosen so (docs/results.md, "The demo's settings"), and 12 pairs cost little to score in full.
    profile = demo_profile(pairs, _scorer(ctx, slm, _cache(no_cache), max_response_tokens=0))
    click.echo("\nTop attributes of this persona:")
    for a, w in profile.decoding_weights():
        click.echo(f"  {a.id:<16}{w:+.3f}")
    session = Drift(llm, slm, profile=profile, beta=DEMO_BETA, options=_options(ctx), compare=True)
    sampling = Sampling(temperature=0, max_tokens=120)
    for prompt in DEMO_PROMPTS:
        click.echo(f"\n>>> {prompt}")
        personal, plain = session.generate_all(prompt, sampling)
        click.echo(_side_by_side(plain.text, personal.text))


@main.command()
@click.argument("prefs", type=click.Path())
@click.option("--slm", default=None)
@click.option("--splits", default=10, show_default=True, type=click.IntRange(min=1),
              help="Random train/test splits per training size.")
@click.option("--attributes", "attributes_file", type=click.Path(), help="More attributes (TOML or JSON).")
@click.option("--include", help="Only these attribute ids (comma-separated).")
@click.option("--exclude", help="Leave out these attribute ids.")
@click.option("--max-response-tokens", default=params.DEFAULT_MAX_RESPONSE_TOKENS, show_default=True,
              help="Score responses on their first tokens only (0: whole responses).",
              callback=_checked("scorer", "check_max_response_tokens"))
@click.option("--json", "as_json", is_flag=True)
@click.option("--plot", type=click.Path(), help="Write accuracy vs k as a PNG (needs matplotlib).")
@click.option("--no-cache", is_flag=True)
@click.pass_context
@_errors
def evaluate(ctx, prefs, slm, splits, attributes_file, include, exclude, max_response_tokens, as_json, plot,
             no_cache):
    """Cross-validated accuracy on your own pairs, against baselines fitted on the same k pairs."""
    from . import evaluation
    from .fileio import check_output
    from .preferences import load_pairs
    from .fit.profile import reward_features
    if plot:
        check_output(plot, inputs=[prefs, attributes_file])
    pairs = load_pairs(prefs)
    ks = [k for k in evaluation.USER_KS if k <= len(pairs) - evaluation.MIN_TEST]
    if not ks:
        k = evaluation.USER_KS[0]
        raise DriftError(f"{prefs}: {len(pairs)} pairs are too few; evaluation needs at least "
                         f"{k + evaluation.MIN_TEST} ({k} to train, {evaluation.MIN_TEST} to test)")
    attrs = _attribute_set(attributes_file, include, exclude)
    scorer = _scorer(ctx, slm, _cache(no_cache), max_response_tokens)
    W, L = reward_features(scorer, pairs, attrs.base, attrs.attributes)
    results = evaluation.cross_validate(W, L, [(p.chosen, p.rejected) for p in pairs], ks, splits,
                                        methods=evaluation.user_methods())
    if as_json:
        click.echo(json.dumps({**results, "cost": scorer.cost.to_dict()}, indent=2))
    else:
        click.echo(evaluation.format_table(results, f"Accuracy on held-out pairs of {prefs} ({splits} splits)"))
        click.echo(scorer.cost.line())
    if plot:
        evaluation.plot(results, plot)
        click.echo(f"wrote {plot}", err=as_json)


@main.command()
@click.option("--json", "as_json", is_flag=True)
@_errors
def models(as_json):
    """The model presets: installed or not, where, and which partner shares their vocabulary."""
    from .models import BRING_YOUR_OWN, list_presets
    rows = list_presets()
    if as_json:
        click.echo(json.dumps({"presets": rows, "bring_your_own": BRING_YOUR_OWN}, indent=2))
        return
    click.echo(f"{'name':<11}{'family':<24}{'params':>7}  {'quant':<8}{'vocab':>8}  {'partner':<11}installed")
    for r in rows:
        state = ("yes" if r["ready"] else "yes (assembled on first use)") if r["installed"] else f"no: {r['install']}"
        click.echo(f"{r['name']:<11}{r['family']:<24}{r['parameters']:>7}  {r['quantization']:<8}{r['vocabulary']:>8}  "
                   f"{r['partner']:<11}{state}")
        if r["installed"]:
            click.echo(f"{'':<11}{r['path']}")
    click.echo("\n" + BRING_YOUR_OWN)


@main.command()
@click.option("--out", default="benchmarks/results", show_default=True, type=click.Path())
@click.option("--quick", is_flag=True, help="Fewer tokens and one repetition: a smoke run.")
@click.option("--llm", default=None, help="Large model (default: the embedded model).")
@click.option("--slm", default=None, help="Small model (default: the embedded model).")
@click.option("--reps", type=int, default=None, help="Repetitions, configurations interleaved within each "
                                                     "[default: 3; 1 with --quick].")
@click.option("--tokens", type=int, default=None, help="Tokens per configuration [default: 64; 16 with --quick].")
@click.option("--note", default="", help="A remark written into the report (e.g. what else ran).")
@click.pass_context
@_errors
def bench(ctx, out, quick, llm, slm, reps, tokens, note):
    """Scorer and decoding benchmarks; writes markdown and JSON reports."""
    from .bench import run_all
    run_all(Path(out), quick, llm, slm, _options(ctx), reps or (1 if quick else 3), note, tokens or (16 if quick else 64))


if __name__ == "__main__":
    main()


class TokenProgress:
    """A click progress bar over items, with tokens/s and the ETA.

    The ETA comes from tokens, not items: items differ in length, and the tokens still to
    evaluate are known in advance (planned_tokens)."""

    def __init__(self, label: str, n_items: int, planned: int):
        self.start = time.monotonic()
        self.base = None  # the scorer's token count when this bar started
        self.rate = 0.0
        self.planned, self.done = planned, 0
        self.bar = click.progressbar(length=n_items, label=label, show_eta=False, show_pos=True,
                                     file=sys.stderr, item_show_func=lambda _: self.status())

    def __enter__(self):
        self.bar.__enter__()
        return self

    def __exit__(self, *exc):
        self.bar.__exit__(*exc)

    def evaluated(self, tokens_so_far: int) -> None:
        """Called by the native scorer after each llama_decode."""
        if self.base is None:
            self.base = tokens_so_far
            self.start = time.monotonic()
        self.done = tokens_so_far - self.base
        self.rate = self.done / max(time.monotonic() - self.start, 1e-9)
        self.bar.render_progress()

    def eta_seconds(self) -> Optional[float]:
        if self.rate <= 0:
            return None
        return max(self.planned - self.done, 0) / self.rate

    def status(self) -> str:
        eta = self.eta_seconds()
        if eta is None:
            return f"{self.planned:,} tokens to evaluate"
        return f"{self.rate:.0f} tok/s, ETA {int(eta) // 60}:{int(eta) % 60:02d}"

    def advance(self, n_items: int) -> None:
        self.bar.update(n_items)
