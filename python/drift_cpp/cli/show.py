"""Commands that show what is there: a profile, and the models."""

from __future__ import annotations

import json

import click

from .display import plot_profile, show_profile
from .group import main, one_line_errors


@main.group()
def profile():
    """Read and update profiles."""


@profile.command("show")
@click.argument("path", type=click.Path())
@click.option("--json", "as_json", is_flag=True)
@click.option("--plot", type=click.Path(), help="Write a PNG bar chart (needs matplotlib).")
@one_line_errors
def profile_show(path, as_json, plot):
    """Attributes ranked by the user's unit implicit preference."""
    from ..fileio import check_output
    from ..fit.profile import Profile
    if plot:
        check_output(plot, inputs=[path])
    prof = Profile.load(path)
    if as_json:
        from ..fit.learning import report
        click.echo(json.dumps(report(prof), indent=2))
    else:
        o = prof.options
        fit = o.method if o.method == "qp" else f"{o.method} l2={o.l2:g}"
        click.echo(f"{path}: {prof.n_pairs} pairs, model {prof.model.get('name')}, {fit}/{o.normalize}")
        show_profile(prof)
    if plot:
        plot_profile(prof, plot)


@main.command()
@click.option("--json", "as_json", is_flag=True)
@one_line_errors
def models(as_json):
    """The model presets, the GGUF files already on this machine (Hugging Face, Ollama, LM Studio and
    llama.cpp caches; nothing is downloaded) and which of them pair as LLM and sLM."""
    from ..discovery import survey, survey_text
    from ..models import BRING_YOUR_OWN, list_presets, ready_presets
    rows, found = list_presets(), survey(ready_presets())
    if as_json:
        click.echo(json.dumps({"presets": rows, "bring_your_own": BRING_YOUR_OWN, **found}, indent=2))
        return
    click.echo(f"{'name':<11}{'family':<24}{'params':>7}  {'quant':<8}{'vocab':>8}  {'partner':<11}installed")
    for r in rows:
        state = ("yes" if r["ready"] else "yes (assembled on first use)") if r["installed"] else f"no: {r['install']}"
        click.echo(f"{r['name']:<11}{r['family']:<24}{r['parameters']:>7}  {r['quantization']:<8}{r['vocabulary']:>8}  "
                   f"{r['partner']:<11}{state}")
        if r["installed"]:
            click.echo(f"{'':<11}{r['path']}")
    click.echo("\n" + survey_text(found) + "\n\n" + BRING_YOUR_OWN)
