"""`drift-cpp chat`: a streaming chat that can learn from the user's picks between two answers."""

from __future__ import annotations

import dataclasses
import sys
from pathlib import Path
from typing import Optional

import click

from .. import params
from ..errors import DriftError
from .display import side_by_side
from .group import main, one_line_errors
from .options import (DriftConfig, attribute_set, build_formula, drift_options, open_cache, open_scorer,
                      open_session, sampling_options, take_sampling)


CHAT_HELP = "/profile PATH, /beta X, /attributes, /compare, /ab [MESSAGE], /undo, /reset, /quit"


def _learning_target(cfg: DriftConfig) -> Optional[Path]:
    """The profile chat learns into: the one --profile, given without a weight; None otherwise."""
    if cfg.formula_path or len(cfg.profiles) != 1 or cfg.blend()[0] != (cfg.profiles[0], 1.0):
        return None
    return Path(cfg.profiles[0])


def _chat_formula(cfg: DriftConfig, target: Optional[Path]):
    """A profile being learned decodes plain until it has MIN_PROFILE_PAIRS pairs (or does not exist yet)."""
    from ..fit import learning
    if target is not None and not learning.steers(learning.load(target)):
        return build_formula(dataclasses.replace(cfg, profiles=()))
    return build_formula(cfg)


class _Learner:
    """chat's side of learning from picks (steer/questions.Learner does the rest): the two answers shown,
    the pick read, the session rebuilt when the profile's formula changes, and the word when it settles."""

    def __init__(self, ctx, cfg: DriftConfig, target: Optional[Path], include: Optional[str], questions: str):
        from ..steer.questions import Learner
        self.ctx, self.cfg, self.target = ctx, cfg, target
        attributes = attribute_set(None, include, None)  # checked now, used for a new profile
        self.core = None if target is None else Learner(
            # No progress bar: a pick is scored in the background, while the user types.
            target, lambda: open_scorer(ctx, cfg.slm, open_cache(False), progress=None), attributes, questions)
        self._said = None  # the settling last announced
        if target is not None and not target.exists():
            click.echo(f"(new profile {target}: your picks create it; plain decoding until "
                       f"{params.MIN_PROFILE_PAIRS} pairs)", err=True)

    def need(self):
        if self.core is None:
            raise DriftError("/ab, /undo and --learn need one --profile PATH (no weight, no --formula) to learn into")
        return self.core

    def ab(self, drift, line: str, sampling, read_pick):
        """Two answers to `line`, side by side; the pick becomes a pair and the conversation goes on with it."""
        question = self.need().ask(drift, drift.history + [{"role": "user", "content": line}], sampling)
        click.echo(side_by_side(*question.answers, titles=question.titles))
        pick = read_pick()
        drift.history = question.history + [{"role": "assistant", "content": question.answers[1 if pick == 2 else 0]}]
        if pick is None:
            return drift
        if not self.core.save_pick(question, pick):
            click.echo("(the two answers are the same, or were learned before: nothing to learn)")
        else:  # scoring takes seconds: it runs while the user reads and types (catch_up reports it)
            click.echo("(pick saved; learning it while you type)")
        return drift

    def catch_up(self, drift):
        """Waits for the pick being learned, if any, and reports it."""
        update = None if self.core is None else self.core.learned()
        return drift if update is None else self.report_fit(drift, update, "learned")

    def undo(self, drift):
        return self.report_fit(drift, self.need().undo(), "undone")

    def report_fit(self, drift, update, what):
        from ..fit import learning
        n = update.profile.n_pairs if update.profile else 0
        state = "" if learning.steers(update.profile) and n else f"; plain decoding until {params.MIN_PROFILE_PAIRS} pairs"
        click.echo(f"({what}: {n} pairs in {self.target}{state}; {update.describe()})")
        settled = self.core.settled()
        if settled and self._said is None:
            click.echo(f"(your profile has settled after {settled} picks: the last {params.SETTLE_PICKS} changed "
                       "its predictions little; more picks refine it slowly)")
        self._said = settled
        formula = _chat_formula(self.cfg, self.target)
        if formula == drift.formula:
            return drift
        new = open_session(self.ctx, self.cfg, formula, compare=True)
        new.history = drift.history
        return new


@main.command()
@drift_options
@sampling_options
@click.option("--learn", type=click.IntRange(0), default=0,
              help="Every N-th turn shows two answers and learns from your pick into --profile (0: only /ab).")
@click.option("--learn-include", default=None, help="A new profile scores only these attribute ids (comma-separated).")
@click.option("--questions", type=click.Choice(params.QUESTIONS), default=params.DEFAULT_QUESTIONS, show_default=True,
              help="How --learn and /ab make their two answers: the profile against plain, two plain samples, "
                   "the profile at two strengths, or two of a few samples: those the profile is least sure between "
                   "(active), or those whose pick would teach it most (informative).")
@click.pass_context
@one_line_errors
def chat(ctx, learn, learn_include, questions, **options):
    """Interactive chat that streams tokens. Commands: /profile PATH, /beta X, /attributes, /compare, /ab [MESSAGE],
    /undo, /reset, /quit. With one --profile, /ab and --learn N learn from your picks (a missing profile is created)."""
    from ..fileio import decode_utf8
    cfg, sampling = DriftConfig.take(options), take_sampling(options)
    target = _learning_target(cfg)
    learner = _Learner(ctx, cfg, target, learn_include, questions)
    if learn:
        learner.need()
    drift = open_session(ctx, cfg, _chat_formula(cfg, target), compare=True)
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
        try:
            drift = learner.catch_up(drift)  # the last pick, learned while this line was typed
        except DriftError as e:
            click.echo(f"error: {e}", err=True)
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
                    drift = open_session(ctx, new, _chat_formula(new, target), compare=True)  # only once it loaded
                    cfg, learner = new, _Learner(ctx, new, target, learn_include, questions)
                    click.echo(f"(profile: {arg.strip() or 'none'})")
                elif command == "/attributes":
                    for name, w in drift.active_weights or [("(none: plain decoding)", 0.0)]:
                        click.echo(f"  {name:<24}{w:+.3f}")
                    f = drift.formula
                    click.echo(f"  (guard: plausibility {f.plausibility:g}, max_kl {f.max_kl:g}; beta {f.beta:g})")
                elif command == "/compare":
                    plain = drift.compare_last(sampling)
                    click.echo(side_by_side(plain.text, drift.history[-1]["content"]))
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
