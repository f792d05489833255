"""The drift-cpp command line: preferences → profile → personalized generation."""

from __future__ import annotations

import json
import sys
from functools import wraps
from pathlib import Path

import click

from .errors import DriftError

DEMO_PAIRS = Path(__file__).parent / "data" / "demo_pairs.jsonl"
# The demo scores these 14 style attributes (of the 41) to stay within a few minutes on 2 cores.
DEMO_ATTRIBUTES = ("concise", "formal", "vivid", "humor", "energy", "easy", "direct", "exclamatory",
                   "storyteller", "old_fashioned", "internet_slang", "analytic", "empathetic", "creative")
DEMO_PROMPTS = ("How do I boil an egg?", "Why is the sky blue?")


def _errors(f):
    """Bad input ends in one line on stderr, never a traceback."""
    @wraps(f)
    def run(*args, **kwargs):
        try:
            return f(*args, **kwargs)
        except DriftError as e:
            click.echo(f"error: {e}", err=True)
            sys.exit(1)
        except KeyboardInterrupt:
            click.echo("\ninterrupted", err=True)
            sys.exit(130)
    return run


def _options(ctx):
    from .models import ModelOptions
    return ModelOptions(ctx.obj["n_gpu_layers"], ctx.obj["threads"], ctx.obj["chat_template"])


def _model(ctx, spec):
    from .models import load_model
    return load_model(spec, _options(ctx))


def _scorer(ctx, spec, no_cache, max_response_tokens=0):
    from .score_cache import ScoreCache
    from .scorer import Scorer
    return Scorer(_model(ctx, spec), cache=None if no_cache else ScoreCache(), max_response_tokens=max_response_tokens)


@click.group()
@click.option("--verbose", is_flag=True, help="Show llama.cpp's own log (or set DRIFT_CPP_LOG=1).")
@click.option("--threads", type=int, default=0, help="CPU threads (0: llama.cpp's default).")
@click.option("--n-gpu-layers", type=int, default=0,
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
    from .scorer import ScoreRequest
    scorer = _scorer(ctx, model, no_cache=True)
    tokens, per_token = scorer.token_logprobs(ScoreRequest(system, (("user", prompt),), response, label="--response"))
    result = {"logprob": float(per_token.sum()), "n_tokens": len(tokens), "template": scorer.model.template.name}
    if as_json:
        click.echo(json.dumps(result))
    else:
        click.echo(f"logprob {result['logprob']:.4f} over {result['n_tokens']} tokens (template: {result['template']})")


def _attribute_set(attributes_file, include, exclude):
    from .attributes import builtin_attributes, load_attributes_file
    attrs = builtin_attributes()
    if attributes_file:
        attrs = load_attributes_file(attributes_file, into=attrs)
    split = lambda s: [x for x in (s or "").split(",") if x]  # noqa: E731
    return attrs.select(split(include) or None, split(exclude))


@main.command()
@click.argument("prefs", type=click.Path())
@click.option("-o", "--output", required=True, type=click.Path(), help="Profile JSON to write.")
@click.option("--slm", default=None, help="Small model for the rewards (default: the embedded model).")
@click.option("--top", default=7, show_default=True, help="Attributes used for decoding.")
@click.option("--attributes", "attributes_file", type=click.Path(), help="More attributes (TOML or JSON).")
@click.option("--include", help="Only these attribute ids (comma-separated).")
@click.option("--exclude", help="Leave out these attribute ids.")
@click.option("--decode-exclude", help="Approximate and show, but never decode with, these ids.")
@click.option("--normalize", type=click.Choice(["sum", "mean"]), default="sum", show_default=True)
@click.option("--method", type=click.Choice(["qp", "logistic", "bt"]),
              help="qp: the paper's closed form; bt (the default, chosen by the DSP evaluation) and logistic: "
                   "regularized regressions.")
@click.option("--l2", type=float, help="Penalty of bt and logistic (default 1000); larger is closer to qp.")
@click.option("--max-response-tokens", default=0, help="Truncate longer responses (0: never; too long is an error).")
@click.option("--no-cache", is_flag=True, help="Do not read or write the score cache.")
@click.pass_context
@_errors
def approximate(ctx, prefs, output, slm, top, attributes_file, include, exclude, decode_exclude, normalize, method,
                l2, max_response_tokens, no_cache):
    """Fit a profile from preference pairs (JSONL or CSV with prompt, chosen, rejected)."""
    from .preferences import load_pairs
    from .profile import FitOptions, Profile
    pairs = load_pairs(prefs)
    attrs = _attribute_set(attributes_file, include, exclude)
    scorer = _scorer(ctx, slm, no_cache, max_response_tokens)
    chosen = {k: v for k, v in (("method", method), ("l2", l2)) if v is not None}
    profile = Profile.fit(pairs, scorer, attrs, FitOptions(top, normalize, **chosen),
                          [x for x in (decode_exclude or "").split(",") if x])
    profile.save(output)
    click.echo(f"wrote {output}: {len(pairs)} pairs, {len(attrs)} attributes")
    _show(profile)


def _show(profile, width: int = 30):
    """The attributes ranked by W−L per pair (the paper's unit implicit preference), with bars."""
    uip = profile.unit_implicit_preference()
    scale = max(abs(uip).max(), 1e-12)
    selected, excluded = set(profile.data.selected), set(profile.data.decode_exclude)
    click.echo(f"{'attribute':<24}{'W-L per pair':>14}  {'p':>7}")
    for i in sorted(range(len(uip)), key=lambda i: -uip[i]):
        a = profile.data.attributes[i]
        n = int(round(abs(uip[i]) / scale * width))
        bar = ("+" if uip[i] >= 0 else "-") * n
        mark = " *" if a["id"] in selected else " x" if a["id"] in excluded else ""
        click.echo(f"{a['id']:<24}{uip[i]:>14.3f}  {profile.data.p[i]:>7.3f}  {bar}{mark}")
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
    from .profile import Profile
    prof = Profile.load(path)
    if as_json:
        uip = prof.unit_implicit_preference()
        click.echo(json.dumps({"n_pairs": prof.data.n_pairs, "selected": prof.data.selected,
                               "decode_exclude": prof.data.decode_exclude,
                               "attributes": [{"id": a["id"], "unit_implicit_preference": float(u), "p": p}
                                              for a, u, p in zip(prof.data.attributes, uip, prof.data.p)]}, indent=2))
    else:
        o = prof.options
        fit = o.method if o.method == "qp" else f"{o.method} l2={o.l2:g}"
        click.echo(f"{path}: {prof.data.n_pairs} pairs, model {prof.data.model.get('name')}, {fit}/{o.normalize}")
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
    ax.barh([prof.data.attributes[i]["id"] for i in order], [uip[i] for i in order],
            color=["tab:blue" if uip[i] >= 0 else "tab:red" for i in order])
    ax.set_xlabel("unit implicit preference (W - L per pair)")
    fig.tight_layout()
    fig.savefig(out, dpi=120)
    click.echo(f"wrote {out}")


@profile.command("update")
@click.argument("path", type=click.Path())
@click.argument("more", type=click.Path())
@click.option("--slm", default=None)
@click.option("--no-cache", is_flag=True)
@click.pass_context
@_errors
def profile_update(ctx, path, more, slm, no_cache):
    """Add the new pairs of MORE (only those are scored)."""
    from .preferences import load_pairs
    from .profile import Profile
    prof = Profile.load(path)
    pairs = load_pairs(more)
    added = prof.update(pairs, _scorer(ctx, slm, no_cache))
    prof.save(path)
    click.echo(f"{path}: added {added} new pairs ({len(pairs) - added} already included), {prof.data.n_pairs} in all")


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
    from .attributes import load_attributes_file
    from .preferences import load_pairs
    from .profile import Profile
    prof = Profile.load(path)
    new = load_attributes_file(attributes_file, into=prof.attributes)
    prof.add_attributes(new.attributes, load_pairs(prefs), _scorer(ctx, slm, no_cache))
    prof.save(path)
    click.echo(f"{path}: {len(prof.data.attributes)} attributes")


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
    from . import approximation
    from .preferences import load_pairs
    from .profile import Profile
    prof = Profile.load(profile_path)
    pairs = load_pairs(pairs_path)
    margins = prof.predict(pairs, _scorer(ctx, slm, no_cache))
    rows = [{"id": p.id, "margin": float(m), "prefers": "chosen" if m > 0 else "rejected" if m < 0 else "tie"}
            for p, m in zip(pairs, margins)]
    acc = approximation.accuracy(margins)
    if as_json:
        click.echo(json.dumps({"pairs": rows, "accuracy": acc}, indent=2))
    else:
        for r in rows:
            click.echo(f"{r['id']}\t{r['margin']:+.3f}\t{r['prefers']}")
        click.echo(f"accuracy {acc:.3f} on {len(rows)} pairs")


def _sampling_options(f):
    for option in reversed([
        click.option("--temperature", default=0.8, show_default=True, help="0: greedy."),
        click.option("--top-p", default=0.9, show_default=True),
        click.option("--top-k", default=0, show_default=True),
        click.option("--min-p", default=0.0, show_default=True),
        click.option("--seed", default=0, show_default=True),
        click.option("--max-tokens", default=500, show_default=True),
        click.option("--stop", multiple=True, help="Stop string (repeatable)."),
    ]):
        f = option(f)
    return f


def _drift_options(f):
    for option in reversed([
        click.option("--profile", "profile_path", type=click.Path(), help="Profile JSON; none: plain decoding."),
        click.option("--llm", default=None, help="Large model (default: the embedded model)."),
        click.option("--slm", default=None, help="Small model of the profile (default: the embedded model)."),
        click.option("--beta", default=0.5, show_default=True, help="Personalization strength 1/beta."),
        click.option("--top-attributes", type=int, default=None, help="Attributes used (default: the profile's)."),
        click.option("--exclude", default="", help="Attribute ids never used for decoding."),
        click.option("--system", default=None, help="The LLM's system prompt (default: the base prompt)."),
        click.option("--n-ctx", default=2048, show_default=True, help="KV cells per sequence."),
    ]):
        f = option(f)
    return f


def _make_drift(ctx, profile_path, llm, slm, beta, top_attributes, exclude, system, n_ctx, with_profile=True):
    from .decoding import Drift
    return Drift(llm=llm, slm=slm, profile=profile_path if with_profile else None, beta=beta, system=system,
                 top_attributes=top_attributes, exclude=[x for x in exclude.split(",") if x], n_ctx=n_ctx,
                 options=_options(ctx))


def _sampling(temperature, top_p, top_k, min_p, seed, max_tokens, stop):
    from .decoding import Sampling
    return Sampling(temperature, top_p, top_k, min_p, seed, max_tokens, tuple(stop))


def _side_by_side(left: str, right: str, titles=("plain", "personalized"), width: int = 38) -> str:
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
def generate(ctx, profile_path, llm, slm, beta, top_attributes, exclude, system, n_ctx, temperature, top_p, top_k,
             min_p, seed, max_tokens, stop, prompt, compare, as_json, stats):
    """Generate an answer, personalized by --profile."""
    if prompt is None:
        prompt = sys.stdin.read()
    if not prompt.strip():
        raise DriftError("empty prompt: pass --prompt or write it to stdin")
    sampling = _sampling(temperature, top_p, top_k, min_p, seed, max_tokens, stop)
    args = (ctx, profile_path, llm, slm, beta, top_attributes, exclude, system, n_ctx)
    drift = _make_drift(*args)
    streaming = not (as_json or compare)
    result = drift.generate(prompt, sampling, on_piece=(lambda s: click.echo(s, nl=False)) if streaming else None,
                            stats=stats)
    plain = _make_drift(*args, with_profile=False).generate(prompt, sampling) if compare else None
    if as_json:
        out = {"text": result.text, "finish_reason": result.finish_reason, "n_tokens": len(result.tokens),
               "tokens_per_second": result.tokens_per_second, "weights": result.weights}
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


CHAT_HELP = "/profile PATH, /beta X, /attributes, /compare, /reset, /quit"


@main.command()
@_drift_options
@_sampling_options
@click.pass_context
@_errors
def chat(ctx, profile_path, llm, slm, beta, top_attributes, exclude, system, n_ctx, temperature, top_p, top_k, min_p,
         seed, max_tokens, stop):
    """Interactive chat that streams tokens. Commands: /profile PATH, /beta X, /attributes, /compare, /reset, /quit."""
    args = [ctx, profile_path, llm, slm, beta, top_attributes, exclude, system, n_ctx]
    sampling = _sampling(temperature, top_p, top_k, min_p, seed, max_tokens, stop)
    drift = _make_drift(*args)
    interactive = sys.stdin.isatty()
    if interactive:
        click.echo(f"drift-cpp chat ({CHAT_HELP})")
    stdin = sys.stdin
    while True:
        if interactive:
            click.echo("> ", nl=False)
        line = stdin.readline()
        if not line:
            break
        line = line.strip()
        if not line:
            continue
        try:
            if line.startswith("/"):
                command, _, arg = line.partition(" ")
                if command == "/quit":
                    break
                elif command == "/reset":
                    drift.reset()
                    click.echo("(conversation cleared)")
                elif command == "/beta":
                    value = float(arg)
                    if not value > 0:
                        raise DriftError("beta must be positive")
                    drift.beta = args[4] = value
                    click.echo(f"(beta = {value})")
                elif command == "/profile":
                    args[1] = arg.strip() or None
                    drift = _make_drift(*args)
                    click.echo(f"(profile: {args[1] or 'none'})")
                elif command == "/attributes":
                    for name, w in drift.active_weights or [("(none: plain decoding)", 0.0)]:
                        click.echo(f"  {name:<24}{w:+.3f}")
                elif command == "/compare":
                    last = next((m for m in reversed(drift.history) if m["role"] == "user"), None)
                    if last is None:
                        raise DriftError("nothing to compare yet")
                    history = drift.history[:-2] + [last]
                    plain = _make_drift(*args, with_profile=False).generate(history, sampling)
                    click.echo(_side_by_side(plain.text, drift.history[-1]["content"]))
                else:
                    raise DriftError(f"unknown command {command}: {CHAT_HELP}")
                continue
            result = drift.chat(line, sampling, on_piece=lambda s: click.echo(s, nl=False))
            click.echo("" if result.finish_reason != "interrupted" else " [interrupted]")
        except (DriftError, ValueError) as e:
            click.echo(f"error: {e}", err=True)


@main.command()
@click.option("--no-cache", is_flag=True)
@click.option("--llm", default=None, help="Large model (default: the embedded model).")
@click.option("--slm", default=None, help="Small model that scores and steers (default: the embedded model).")
@click.pass_context
@_errors
def demo(ctx, no_cache, llm, slm):
    """Fit a profile from the bundled example pairs and show what it does to two answers."""
    from .attributes import builtin_attributes
    from .decoding import Drift, Sampling
    from .preferences import load_pairs
    from .profile import FitOptions, Profile
    pairs = load_pairs(DEMO_PAIRS)
    click.echo(f"The example persona wants short, direct answers: {len(pairs)} preference pairs in {DEMO_PAIRS.name}.")
    click.echo(f"Scoring them under {len(DEMO_ATTRIBUTES)} of the 41 attributes with "
               f"{slm or 'the embedded model'} (minutes the first time, seconds from the cache)...")
    scorer = _scorer(ctx, slm, no_cache)
    profile = Profile.fit(pairs, scorer, builtin_attributes().select(DEMO_ATTRIBUTES), FitOptions(top=3))
    click.echo("\nTop attributes of this persona:")
    for a, w in profile.decoding_weights():
        click.echo(f"  {a.id:<16}{w:+.3f}")
    plain = Drift(llm=llm, slm=slm, options=_options(ctx))
    personal = Drift(llm=llm, slm=slm, profile=profile, options=_options(ctx))
    sampling = Sampling(temperature=0, max_tokens=120)
    for prompt in DEMO_PROMPTS:
        click.echo(f"\n>>> {prompt}")
        click.echo(_side_by_side(plain.generate(prompt, sampling).text, personal.generate(prompt, sampling).text))


@main.command()
@click.argument("prefs", type=click.Path())
@click.option("--slm", default=None)
@click.option("--splits", default=10, show_default=True, help="Random train/test splits per training size.")
@click.option("--attributes", "attributes_file", type=click.Path(), help="More attributes (TOML or JSON).")
@click.option("--include", help="Only these attribute ids (comma-separated).")
@click.option("--exclude", help="Leave out these attribute ids.")
@click.option("--max-response-tokens", default=0, help="Truncate longer responses (0: never).")
@click.option("--json", "as_json", is_flag=True)
@click.option("--plot", type=click.Path(), help="Write accuracy vs k as a PNG (needs matplotlib).")
@click.option("--no-cache", is_flag=True)
@click.pass_context
@_errors
def evaluate(ctx, prefs, slm, splits, attributes_file, include, exclude, max_response_tokens, as_json, plot,
             no_cache):
    """Cross-validated accuracy on your own pairs, against baselines fitted on the same k pairs."""
    from . import approximation, evaluation
    from .preferences import load_pairs
    from .profile import reward_features
    pairs = load_pairs(prefs)
    attrs = _attribute_set(attributes_file, include, exclude)
    W, L = reward_features(_scorer(ctx, slm, no_cache, max_response_tokens), pairs, attrs.base, attrs.attributes)
    ks = [k for k in (10, 20, 50, 100, 200, 500, 1000) if k <= len(pairs) - evaluation.MIN_TEST]
    if not ks:
        raise DriftError(f"{prefs}: {len(pairs)} pairs are too few; evaluation needs at least "
                         f"{10 + evaluation.MIN_TEST} (10 to train, {evaluation.MIN_TEST} to test)")
    default_fit = f"drift ({approximation.DEFAULT_METHOD} l2={approximation.DEFAULT_L2:g}, the default)"
    methods = {default_fit: (approximation.DEFAULT_METHOD, {"l2": approximation.DEFAULT_L2}),
               "drift (qp, the paper's)": "drift", **{m: m for m in ("longer", "best_single", "logistic", "bow_rm")}}
    results = evaluation.cross_validate(W, L, [(p.chosen, p.rejected) for p in pairs], ks, splits, methods=methods)
    if as_json:
        click.echo(json.dumps(results, indent=2))
    else:
        click.echo(evaluation.format_table(results, f"Accuracy on held-out pairs of {prefs} ({splits} splits)"))
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
