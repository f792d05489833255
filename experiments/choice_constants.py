#!/usr/bin/env python
"""The joint model's priors (choice.Priors), by nested evaluation on TRAIN pools.

The users and their pools are experiments/family_choice.py's (same options, same score cache); only
each user's train pool is read, never its test pool:
  * each train pool is split --splits times by prompt (article, query) into an inner train part
    (TRAIN_FRACTION of the prompts) and an inner held-out part;
  * from the inner train part, --draws draws of k pairs (k in --ks, where the part holds k pairs);
  * on each draw, every configuration is fitted and scored on the inner held-out part:
      - the joint model (every family in one fit) at each (length, lexical, length mean) prior of the grid;
      - each candidate of choice.CANDIDATES alone, at the former priors (1, 1: bow_rm's l2);
      - two per-user choices by the user's own cross-validation, for comparison: the attributes
        alone or the joint model, whichever cross-validates better; and the joint model at the prior
        (of PER_USER_PRIORS) that cross-validates best.
Admissible priors recover synthetic users (synthetic_users.py) whose taste is one family. For each
(kind, pairs, users) of ADMISSION, the true family must lead the joint model's shares (with the
taste's sign, for length) for that many of 10 users: the issue's recovery from 40 pairs, and a length
taste either way from 20. Every development user's train pool leans to longer answers, so the grid
alone would reward a population lean strong enough to override a user who prefers shorter answers
(the demo's persona, generation_judges' `short`). This constraint was added after the unconstrained
grid picked length prior 50 around a mean of 0.5, under which such a user of 20 pairs, and even of
40, gets a positive length weight.

The issue's target is per user (at k = 20 the model near the best baseline for EVERY user). So, among
the admissible priors, the kept ones minimize the worst user's regret: for each user and k, the best
single candidate's mean inner held-out accuracy (the family an oracle would have fixed for that user)
minus the configuration's, averaged over the ks, maximized over the users. Among priors within
TOLERANCE of the least regret: the best mean accuracy, then the strongest priors, then no lean.

The former rule (a candidate replaced the attributes when it beat them by a margin and z standard
errors) scored worst regret 0.067 and mean 0.669 on these same splits and draws (constants.md as
committed in 159e63c, run at git rev 84129a8).

    python experiments/choice_constants.py --threads 1 --articles 20 --out docs/results/family_choice
"""

from __future__ import annotations

import argparse
import itertools
import json
from dataclasses import asdict
from pathlib import Path

import numpy as np

from drift_cpp.fit import approximation, choice
from drift_cpp.fileio import atomic_write_text
from family_choice import CITATIONS, TRAIN_FRACTION, add_data_arguments, build_users
from run_info import REPO, command_line, git_rev, log, run
from synthetic_users import user as synthetic_user

LENGTH_GRID = (1.0, 2.0, 3.0, 5.0, 10.0, 20.0, 50.0)
LEXICAL_GRID = (1.0, 3.0, 5.0, 10.0, 20.0, 50.0)
LENGTH_MEAN_GRID = (0.0, 0.25, 0.5, 0.75, 1.0)  # every development user's train pool leans to longer answers (0.6-1.0)
GRID = {f"joint {p.length:g}/{p.lexical:g} mean {p.length_mean:g}": p
        for p in (choice.Priors(*x) for x in itertools.product(LENGTH_GRID, LEXICAL_GRID, LENGTH_MEAN_GRID))}
FORMER = choice.Priors(1.0, 1.0, 0.0)  # the candidates' priors before the joint model (bow_rm's l2 for words)
PER_USER_PRIORS = (choice.Priors(1.0, 1.0, 0.0), choice.Priors(3.0, 10.0, 0.0), choice.Priors(10.0, 30.0, 0.0))
# (kind, pairs, of 10 users whose true family must lead): what tests/test_choice.py checks of the defaults
ADMISSION = (("length", 40, 9), ("shorter", 40, 9), ("lexical", 40, 9), ("attributes", 40, 9),
             ("length", 20, 8), ("shorter", 20, 8))
TOLERANCE = 0.005  # accuracy; differences this small are well inside the draws' noise
SEED = 29
ATTRIBUTES = ("attributes",)


def inner_split(fold, rng):
    """(inner train, inner held-out) parts of a train pool, whole prompts on each side."""
    groups = np.unique(fold.groups)
    order = rng.permutation(len(groups))
    n_train = int(round(TRAIN_FRACTION * len(groups)))
    inner = np.isin(fold.groups, groups[order[:n_train]])
    return fold.take(np.flatnonzero(inner)), fold.take(np.flatnonzero(~inner))


def held_out(family, priors, sample, held) -> float:
    model = choice.fit(family, sample.W, sample.L, sample.texts, priors=priors)
    return approximation.accuracy(choice.margins(model, held.W, held.L, held.texts))


def cv_means(candidates, priors, sample) -> dict[tuple, float]:
    acc = choice.cross_validate(sample.W, sample.L, sample.texts, candidates, groups=sample.groups, priors=priors)
    return {c: float(a.mean()) for c, a in acc.items()}


def recovers_synthetic_users(priors: choice.Priors) -> bool:
    """Whether the joint model under these priors meets every line of ADMISSION."""
    for kind, pairs, users in ADMISSION:
        family = "length" if kind == "shorter" else kind
        recovered = 0
        for seed in range(10):
            W, L, docs = synthetic_user(kind, pairs, seed)
            model = choice.fit(choice.JOINT, W, L, docs, priors=priors)
            shares = choice.shares(model, W, L, docs)
            sign_ok = family != "length" or (model.length > 0) == (kind == "length")
            recovered += max(shares, key=shares.get) == family and sign_ok
        if recovered < users:
            return False
    return True


def draw_scores(sample, held) -> dict[str, float]:
    """Held-out accuracy of every configuration fitted on one draw."""
    out = {name: held_out(choice.JOINT, p, sample, held) for name, p in GRID.items()}
    for c in choice.CANDIDATES:
        out[choice.family_name(c)] = held_out(c, FORMER, sample, held)
    default = choice.PRIORS
    cv = cv_means((ATTRIBUTES, choice.JOINT), default, sample)  # one pass: both share the partitions
    joint_wins = cv[choice.JOINT] >= cv[ATTRIBUTES]
    out["by CV: attributes or joint"] = held_out(choice.JOINT if joint_wins else ATTRIBUTES, default, sample, held)
    best = max(PER_USER_PRIORS, key=lambda p: cv_means((choice.JOINT,), p, sample)[choice.JOINT])
    out["by CV: the joint model's prior"] = held_out(choice.JOINT, best, sample, held)
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", type=Path, default=REPO / "experiments" / "results" / "family_choice")
    add_data_arguments(ap)
    ap.add_argument("--splits", type=int, default=10)
    ap.add_argument("--draws", type=int, default=3)
    ap.add_argument("--ks", default="10,20")
    args = ap.parse_args(argv)
    log(CITATIONS)
    users, model, _, _ = build_users(args)
    ks = [int(k) for k in args.ks.split(",")]
    scores: dict = {}  # scores[config][user][k]: held-out accuracies over splits and draws
    for u, (train, _test) in users.items():  # the test pool is never read
        rng = np.random.default_rng([SEED, len(train)])
        for s in range(args.splits):
            inner, held = inner_split(train, rng)
            for k in (k for k in ks if k <= len(inner)):
                for _ in range(args.draws):
                    sample = inner.take(rng.choice(len(inner), size=k, replace=False))
                    for name, a in draw_scores(sample, held).items():
                        scores.setdefault(name, {}).setdefault(u, {}).setdefault(k, []).append(a)
        log(f"{u}: {args.splits} inner splits done")

    candidates = [choice.family_name(c) for c in choice.CANDIDATES]
    oracle = {u: {k: max(np.mean(scores[c][u][k]) for c in candidates) for k in scores[candidates[0]][u]}
              for u in users}
    table = {}
    for name, by_user in scores.items():
        means = {u: {k: float(np.mean(v)) for k, v in per.items()} for u, per in by_user.items()}
        table[name] = {"by_user_k": means,
                       "mean": float(np.mean([m for per in means.values() for m in per.values()])),
                       "worst_regret": float(max(np.mean([oracle[u][k] - means[u][k] for k in oracle[u]])
                                                 for u in users))}
    admitted = [n for n, p in GRID.items() if recovers_synthetic_users(p)]
    for n in GRID:
        table[n]["admitted"] = n in admitted
    least = min(table[n]["worst_regret"] for n in admitted)
    near = [n for n in admitted if table[n]["worst_regret"] <= least + TOLERANCE]
    best_near = max(table[n]["mean"] for n in near)
    kept = max((n for n in near if table[n]["mean"] >= best_near - TOLERANCE),
               key=lambda n: (GRID[n].length, GRID[n].lexical, -GRID[n].length_mean))
    report = {"citations": CITATIONS, "command": command_line(__file__, argv), "git_rev": git_rev(),
              "model": model.identity, "config": {k: str(v) for k, v in vars(args).items()},
              "configurations": table, "least_regret": least, "tolerance": TOLERANCE,
              "admission": {"rules": [list(a) for a in ADMISSION], "admitted": len(admitted), "of": len(GRID)},
              "kept": {**asdict(GRID[kept]), **{k: table[kept][k] for k in ("mean", "worst_regret")}},
              "defaults": asdict(choice.PRIORS)}
    args.out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(args.out / "constants.json", json.dumps(report, indent=1) + "\n")
    atomic_write_text(args.out / "constants.md", markdown(report, users, ks))
    print(markdown(report, users, ks))
    return 0


def markdown(r: dict, users, ks) -> str:
    kept, table = r["kept"], r["configurations"]
    ks_text = " / ".join(map(str, ks))
    out = ["# The joint model's priors, by nested evaluation on the train pools", "", r["citations"] + ".", "",
           f"- command: `{r['command']}`", f"- git rev: `{r['git_rev']}`",
           f"- kept: length prior {kept['length']:g}, lexical prior {kept['lexical']:g}, length mean "
           f"{kept['length_mean']:g} (worst user's regret {kept['worst_regret']:.3f}, least of the admitted "
           f"{r['least_regret']:.3f}; mean inner held-out accuracy {kept['mean']:.3f}); choice.PRIORS is "
           + ", ".join(f"{k} {v:g}" for k, v in r["defaults"].items()),
           f"- admitted: {r['admission']['admitted']} of {r['admission']['of']} priors recover synthetic users "
           "(true family leading, of 10 users: " + ", ".join(f"{k} at {p} pairs {u}" for k, p, u in
                                                              r["admission"]["rules"]) + ")",
           "- the former rule (a candidate replaced the attributes when it beat them by a margin and z standard "
           "errors), on the same splits and draws: worst regret 0.067, mean 0.669 (constants.md in commit 159e63c)", "",
           "Regret: the best single candidate's inner held-out accuracy (at the former priors 1 / 1) minus the "
           f"configuration's, averaged over k = {', '.join(map(str, ks))}; the worst user's is shown. Each row: "
           f"inner held-out accuracy by user at k = {ks_text}.", "",
           "| configuration | " + " | ".join(users) + " | mean | worst regret | admitted |",
           "|---|" + "---|" * (len(users) + 3)]
    for name in sorted(table, key=lambda n: (table[n]["worst_regret"], -table[n]["mean"])):
        t = table[name]
        cells = [" / ".join(f"{t['by_user_k'][u][k]:.2f}" for k in ks if k in t["by_user_k"][u]) for u in users]
        admitted = {True: "yes", False: "no"}.get(t.get("admitted"), "")
        out.append(f"| {name} | " + " | ".join(cells) + f" | {t['mean']:.3f} | {t['worst_regret']:.3f} | {admitted} |")
    return "\n".join(out) + "\n"


if __name__ == "__main__":
    run(main)
