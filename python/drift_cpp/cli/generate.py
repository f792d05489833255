"""Commands that answer: generate, and the demo."""

from __future__ import annotations

import json
import sys

import click

from ..errors import DriftError
from .display import side_by_side
from .group import main, one_line_errors
from .options import (DriftConfig, build_formula, check_grammar_of, drift_options, llm_option, model_options,
                      no_cache_option, open_cache, open_scorer, open_session, read_grammar, sampling_options,
                      slm_option, take_sampling)


@main.command()
@drift_options
@sampling_options
@click.option("--prompt", default=None, help="User message (default: read stdin).")
@click.option("--compare", is_flag=True, help="Show the plain and the personalized answers side by side.")
@click.option("--json", "as_json", is_flag=True)
@click.option("--stats", is_flag=True, help="Tokens/s and mean next-token entropy (plain vs fused).")
@click.option("--json-schema", type=click.Path(), help="Answer in JSON that follows this JSON Schema file.")
@click.option("--grammar", type=click.Path(), help="Answer in this GBNF grammar file's language (start rule: root).")
@click.pass_context
@one_line_errors
def generate(ctx, prompt, compare, as_json, stats, json_schema, grammar, **options):
    """Generate an answer, personalized by --profile (or steered by --negative-system, --formula)."""
    from dataclasses import replace
    from ..fileio import check_utf8, decode_utf8
    cfg, sampling = DriftConfig.take(options), take_sampling(options)
    sampling = replace(sampling, grammar=read_grammar(grammar, json_schema))
    if prompt is None:
        prompt = decode_utf8(sys.stdin.buffer.read(), "stdin")
    check_utf8(prompt, "--prompt")
    if not prompt.strip():
        raise DriftError("empty prompt: pass --prompt or write it to stdin")
    drift = open_session(ctx, cfg, build_formula(cfg), compare=compare)
    check_grammar_of(drift.llm, sampling, grammar or json_schema)  # before any token
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
        click.echo(side_by_side(plain.text, result.text))
    else:
        click.echo()
    if stats:
        click.echo(f"[{len(result.tokens)} tokens, {result.tokens_per_second:.1f} tok/s, entropy plain "
                   f"{result.entropy_plain_bits:.2f} bits -> fused {result.entropy_fused_bits:.2f} bits, "
                   f"finish: {result.finish_reason}]", err=True)


@main.command()
@no_cache_option
@llm_option
@slm_option
@click.pass_context
@one_line_errors
def demo(ctx, no_cache, llm, slm):
    """Fit a profile from the bundled example pairs and show what it does to two answers."""
    from ..demo import DEMO_ATTRIBUTES, DEMO_BETA, DEMO_PAIRS, DEMO_PROMPTS, demo_profile
    from ..preferences import load_pairs
    from ..steer.session import Drift, Sampling
    pairs = load_pairs(DEMO_PAIRS)
    click.echo(f"The example persona wants short, direct answers: {len(pairs)} preference pairs in {DEMO_PAIRS.name}.")
    click.echo(f"Scoring them under {len(DEMO_ATTRIBUTES)} of the 41 attributes with "
               f"{slm or 'the embedded model'} (minutes the first time, seconds from the cache)...")
    # The paper's attribute model on whole responses under every attribute: the demo's settings were
    # chosen so (docs/results.md, "How the demo was set"), and 12 pairs cost little to score in full.
    profile = demo_profile(pairs, open_scorer(ctx, slm, open_cache(no_cache), max_response_tokens=0))
    click.echo("\nTop attributes of this persona:")
    for a, w in profile.decoding_weights():
        click.echo(f"  {a.id:<16}{w:+.3f}")
    session = Drift(llm, slm, profile=profile, beta=DEMO_BETA, options=model_options(ctx), compare=True)
    sampling = Sampling(temperature=0, max_tokens=120)
    for prompt in DEMO_PROMPTS:
        click.echo(f"\n>>> {prompt}")
        personal, plain = session.generate_all(prompt, sampling)
        click.echo(side_by_side(plain.text, personal.text))
