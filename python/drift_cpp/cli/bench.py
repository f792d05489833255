"""`drift-cpp bench`: the speed benchmarks, written as reports."""

from __future__ import annotations

from pathlib import Path

import click

from .group import main, one_line_errors
from .options import llm_option, model_options, slm_option


@main.command()
@click.option("--out", default="benchmarks/results", show_default=True, type=click.Path())
@click.option("--quick", is_flag=True, help="Fewer tokens and one repetition: a smoke run.")
@llm_option
@slm_option
@click.option("--reps", type=int, default=None, help="Repetitions, configurations interleaved within each "
                                                     "[default: 3; 1 with --quick].")
@click.option("--tokens", type=int, default=None, help="Tokens per configuration [default: 64; 16 with --quick].")
@click.option("--note", default="", help="A remark written into the report (e.g. what else ran).")
@click.option("--grammar-only", is_flag=True, help="Only grammar-constrained against free decoding (bench-grammar).")
@click.pass_context
@one_line_errors
def bench(ctx, out, quick, llm, slm, reps, tokens, note, grammar_only):
    """Scorer, decoding and grammar benchmarks; writes markdown and JSON reports."""
    from ..bench import run_all
    run_all(Path(out), quick, llm, slm, model_options(ctx), reps or (1 if quick else 3), note, tokens or (16 if quick else 64),
            grammar_only)
