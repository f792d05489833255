"""Commands that turn preference pairs into profiles: score, approximate, approximate-many, profile update and
add-attributes, predict and evaluate."""

from __future__ import annotations

import dataclasses
import json
import sys
from typing import TYPE_CHECKING, Optional

import click

from .. import params
from ..errors import DriftError
from .display import report_fit
from .group import main, one_line_errors
from .options import (attribute_set, checked, model_options, no_cache_option, open_cache, open_scorer, slm_option,
                      split_ids, take_fields)
from .show import profile

if TYPE_CHECKING:  # the commands load these when they run, so that --help stays fast
    from ..fit.options import FitOptions
    from ..fit.screening import ScreenOptions
    from ..score.attributes import AttributeSet


@main.command()
@click.option("--system", required=True, help="System prompt.")
@click.option("--prompt", required=True, help="User message.")
@click.option("--response", required=True, help="Response to score.")
@click.option("--model", default=None, help="GGUF path or name (smollm2, gemma); default: the embedded model.")
@click.option("--json", "as_json", is_flag=True)
@click.pass_context
@one_line_errors
def score(ctx, system, prompt, response, model, as_json):
    """Log-probability of RESPONSE to PROMPT under SYSTEM."""
    from ..fileio import check_utf8
    from ..score.scorer import ScoreRequest
    for name, text in (("--system", system), ("--prompt", prompt), ("--response", response)):
        check_utf8(text, name)
        if not text.strip():  # each named here: the scorer's own check would name only the request
            raise DriftError(f"{name} is empty")
    scorer = open_scorer(ctx, model, cache=None, max_response_tokens=0)  # the whole response, as asked
    request = ScoreRequest(system, (("user", prompt),), response, label="--prompt, --response")
    tokens, per_token = scorer.token_logprobs(request)
    result = {"logprob": float(per_token.sum()), "n_tokens": len(tokens), "template": scorer.model.template.name}
    if as_json:
        click.echo(json.dumps(result))
    else:
        click.echo(f"logprob {result['logprob']:.4f} over {result['n_tokens']} tokens (template: {result['template']})")


def fit_options(f):
    """The options of a fit, shared by approximate and approximate-many."""
    for option in reversed([
        slm_option,
        click.option("--top", default=params.DEFAULT_TOP, show_default=True, help="Attributes used for decoding."),
        click.option("--attributes", "attributes_file", type=click.Path(), help="More attributes (TOML or JSON)."),
        click.option("--include", help="Only these attribute ids (comma-separated)."),
        click.option("--exclude", help="Leave out these attribute ids."),
        click.option("--decode-exclude", help="Approximate and show, but never decode with, these ids."),
        click.option("--normalize", type=click.Choice(["sum", "mean"]), default="sum", show_default=True),
        click.option("--method", type=click.Choice(["qp", "logistic", "bt"]),
                     help="qp: the paper's closed form; bt (the default, chosen by the DSP evaluation) and logistic: "
                          "regularized regressions."),
        click.option("--l2", type=float, help=f"Penalty of bt and logistic (default {params.DEFAULT_L2:g}); larger is "
                                              "closer to qp."),
        click.option("--family", help="auto (the default): attributes, length and lexical in one fit, each shrunk "
                                      "by its prior (attributes alone below 10 pairs); or some of them, e.g. "
                                      "attributes+length."),
        click.option("--max-response-tokens", default=params.DEFAULT_MAX_RESPONSE_TOKENS, show_default=True,
                     help="Score responses on their first tokens only (0: whole responses; too long is an error). "
                          "The profile records it; updates score alike.",
                     callback=checked("score.scorer", "check_max_response_tokens")),
        no_cache_option,
        click.option("--exhaustive", is_flag=True, help="Score every pair under every attribute (the paper's way) "
                                                        "instead of screening attributes (docs/screening.md)."),
        click.option("--json", "as_json", is_flag=True, help="Print what was written and what scoring cost, as JSON."),
    ]):
        f = option(f)
    return f


@dataclasses.dataclass(frozen=True)
class FitConfig:
    """What the fit options of approximate and approximate-many say, in one object."""
    top: int
    normalize: str
    method: Optional[str]
    l2: Optional[float]
    family: Optional[str]
    max_response_tokens: int
    attributes_file: Optional[str]
    include: Optional[str]
    exclude: Optional[str]
    decode_exclude: Optional[str]
    exhaustive: bool

    @classmethod
    def take(cls, kwargs: dict) -> "FitConfig":
        return take_fields(cls, kwargs)

    def setup(self) -> FitSetup:
        """The fit's options, attributes and screen, all checked before any model loads."""
        from ..fit.profile import FitOptions, Profile
        from ..fit.screening import ScreenOptions
        chosen = {k: v for k, v in (("method", self.method), ("l2", self.l2), ("family", self.family)) if v is not None}
        options = FitOptions(top=self.top, normalize=self.normalize, max_response_tokens=self.max_response_tokens,
                             **chosen)
        options.check()
        attrs = attribute_set(self.attributes_file, self.include, self.exclude)
        decode_exclude = Profile.check_decode_exclude(attrs, split_ids(self.decode_exclude) or [])
        return FitSetup(options, attrs, decode_exclude, None if self.exhaustive else ScreenOptions())


@dataclasses.dataclass(frozen=True)
class FitSetup:
    options: FitOptions
    attributes: AttributeSet
    decode_exclude: list
    screen: Optional[ScreenOptions]  # None: exhaustive


@main.command()
@click.argument("prefs", type=click.Path())
@click.option("-o", "--output", required=True, type=click.Path(), help="Profile JSON to write.")
@fit_options
@click.pass_context
@one_line_errors
def approximate(ctx, prefs, output, slm, no_cache, as_json, **options):
    """Fit a profile from preference pairs (JSONL or CSV with prompt, chosen, rejected).

    The first pairs are scored under every attribute, later ones under those that matter so far
    and a few at random (attribute screening); --exhaustive scores them all."""
    from ..fileio import check_output
    from ..preferences import load_pairs
    from ..fit.profile import Profile
    cfg = FitConfig.take(options)
    fit = cfg.setup()
    check_output(output, inputs=[prefs, cfg.attributes_file])
    pairs = load_pairs(prefs)
    scorer = open_scorer(ctx, slm, open_cache(no_cache), cfg.max_response_tokens)
    profile = Profile.fit(pairs, scorer, fit.attributes, fit.options, fit.decode_exclude, fit.screen)
    profile.save(output)
    report_fit(profile, output, f"wrote {output}: {len(pairs)} pairs, {len(fit.attributes)} attributes", as_json)


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
@fit_options
@click.pass_context
@one_line_errors
def approximate_many(ctx, pairs_dir, out_dir, workers, ray_address, slm, no_cache, as_json, **options):
    """Fit one profile per user file of PAIRS_DIR; users whose profile is up to date are skipped."""
    from ..fit.many import Job, approximate_many as run
    from ..score.scorer import Cost
    fit = FitConfig.take(options).setup()
    job = Job(slm, model_options(ctx), fit.attributes, fit.options, fit.screen, tuple(fit.decode_exclude))
    total = []

    def done(name, result):
        if result.error is not None:  # as it comes: the other users go on
            click.echo(f"error: {name}: {result.error}", err=True)
            return
        total.append(result)
        if not as_json:
            click.echo(f"{name}: {result.data.n_pairs} pairs, {Cost(**result.data.cost).line()}")

    fitted, skipped, failed = run(pairs_dir, out_dir, job, open_cache(no_cache), workers, ray_address, done)
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


@profile.command("update")
@click.argument("path", type=click.Path())
@click.argument("more", type=click.Path())
@slm_option
@no_cache_option
@click.option("--json", "as_json", is_flag=True, help="Print what was written and what scoring cost, as JSON.")
@click.pass_context
@one_line_errors
def profile_update(ctx, path, more, slm, no_cache, as_json):
    """Add the new pairs of MORE (only those are scored; a screened profile keeps screening)."""
    from ..fileio import check_output
    from ..preferences import load_pairs
    from ..fit.profile import Profile
    check_output(path, inputs=[more])
    prof = Profile.load(path)
    prof.check_updatable()
    pairs = load_pairs(more)
    scorer = open_scorer(ctx, slm, open_cache(no_cache), prof.options.max_response_tokens)
    added = prof.update(pairs, scorer)
    prof.save(path)
    if not as_json:
        click.echo(scorer.cost.line() + " for this update")
    chosen = f"; model: {'+'.join(prof.choice.family)}" if prof.choice else ""
    report_fit(prof, path, f"{path}: added {added} new pairs ({len(pairs) - added} already included), "
                        f"{prof.n_pairs} in all{chosen}", as_json)


@profile.command("add-attributes")
@click.argument("path", type=click.Path())
@click.argument("prefs", type=click.Path())
@click.option("--attributes", "attributes_file", required=True, type=click.Path())
@slm_option
@no_cache_option
@click.pass_context
@one_line_errors
def profile_add_attributes(ctx, path, prefs, attributes_file, slm, no_cache):
    """Add attributes from a TOML/JSON file; only their columns are scored. PREFS are the profile's pairs."""
    from ..score.attributes import load_attributes_file
    from ..fileio import check_output
    from ..preferences import load_pairs
    from ..fit.profile import Profile
    check_output(path, inputs=[prefs, attributes_file])
    prof = Profile.load(path)
    prof.check_updatable()
    new = load_attributes_file(attributes_file, into=prof.attributes)
    pairs = load_pairs(prefs)
    prof.add_attributes(new.attributes, pairs, open_scorer(ctx, slm, open_cache(no_cache), prof.options.max_response_tokens))
    prof.save(path)
    click.echo(f"{path}: {len(prof.attributes)} attributes")


@main.command()
@click.argument("profile_path", type=click.Path())
@click.argument("pairs_path", type=click.Path())
@slm_option
@click.option("--json", "as_json", is_flag=True)
@no_cache_option
@click.pass_context
@one_line_errors
def predict(ctx, profile_path, pairs_path, slm, as_json, no_cache):
    """Predicted preference for each pair, and the accuracy (pairs are labelled: 'chosen' is preferred)."""
    from ..fit import approximation
    from ..preferences import load_pairs
    from ..fit.profile import Profile
    prof = Profile.load(profile_path)
    pairs = load_pairs(pairs_path)
    margins = prof.predict(pairs, open_scorer(ctx, slm, open_cache(no_cache), prof.options.max_response_tokens))
    rows = [{"id": p.id, "margin": float(m), "prefers": "chosen" if m > 0 else "rejected" if m < 0 else "tie"}
            for p, m in zip(pairs, margins)]
    acc = approximation.accuracy(margins)
    if as_json:
        click.echo(json.dumps({"pairs": rows, "accuracy": acc}, indent=2))
    else:
        for r in rows:
            click.echo(f"{r['id']}\t{r['margin']:+.3f}\t{r['prefers']}")
        click.echo(f"accuracy {acc:.3f} on {len(rows)} pairs")


@main.command()
@click.argument("prefs", type=click.Path())
@slm_option
@click.option("--splits", default=10, show_default=True, type=click.IntRange(min=1),
              help="Random train/test splits per training size.")
@click.option("--attributes", "attributes_file", type=click.Path(), help="More attributes (TOML or JSON).")
@click.option("--include", help="Only these attribute ids (comma-separated).")
@click.option("--exclude", help="Leave out these attribute ids.")
@click.option("--max-response-tokens", default=params.DEFAULT_MAX_RESPONSE_TOKENS, show_default=True,
              help="Score responses on their first tokens only (0: whole responses).",
              callback=checked("score.scorer", "check_max_response_tokens"))
@click.option("--json", "as_json", is_flag=True)
@click.option("--plot", type=click.Path(), help="Write accuracy vs k as a PNG (needs matplotlib).")
@no_cache_option
@click.pass_context
@one_line_errors
def evaluate(ctx, prefs, slm, splits, attributes_file, include, exclude, max_response_tokens, as_json, plot,
             no_cache):
    """Cross-validated accuracy on your own pairs, against baselines fitted on the same k pairs."""
    from .. import evaluation
    from ..fileio import check_output
    from ..preferences import load_pairs
    from ..fit.profile import reward_features
    if plot:
        check_output(plot, inputs=[prefs, attributes_file])
    pairs = load_pairs(prefs)
    ks = [k for k in evaluation.USER_KS if k <= len(pairs) - evaluation.MIN_TEST]
    if not ks:
        k = evaluation.USER_KS[0]
        raise DriftError(f"{prefs}: {len(pairs)} pairs are too few; evaluation needs at least "
                         f"{k + evaluation.MIN_TEST} ({k} to train, {evaluation.MIN_TEST} to test)")
    attrs = attribute_set(attributes_file, include, exclude)
    scorer = open_scorer(ctx, slm, open_cache(no_cache), max_response_tokens)
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
