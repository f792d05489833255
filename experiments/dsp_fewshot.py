#!/usr/bin/env python
"""Few-shot preference modelling on DSP (the paper's section 4.2 and section 5, on a laptop).

Data: DSP (Domain-Specific Preference) -- Cheng et al. 2023, "Everyone Deserves A Reward:
Learning Customized Human Preferences" (arXiv 2309.03126), licensed CC BY-NC 4.0.
Each query has responses in five styles (academy, business, entertainment, literature,
normal). A persona of domain d prefers responses[d] over each of the other four styles.

Protocol (no tuning on the test pool):
  * A fixed seed draws the queries and splits them, by query, into disjoint train and test
    pools, so no response is on both sides.
  * Every unique (query, response) is scored ONCE under the base prompt and every attribute
    through the cached scorer (the first --max-response-tokens tokens); a pair's W / L rows are
    the reward rows of its chosen / rejected response. All four personas share that one matrix.
  * For each persona and training size k, >= 10 seeds (full) draw k training pairs from the
    train pool; each method is fitted on them and evaluated on the whole test pool.
  * Hyperparameters (the l2 of logistic / bt / with_length / bow_rm) and the "drift-selected"
    configuration (normalization and fit method) are chosen per persona and k by grouped
    cross-validation on the train pool only (held-out queries, never the test pool).

  * The default fit changes only when the fit with the best train-pool CV accuracy also beats
    the paper's closed form on the test pools ("Defaults by evidence" in results.md).

Outputs under --out: results.json, results.md (tables, the exact command, git rev), and PNGs
under --img (default: --out). Interrupted runs resume: every score goes to the score cache as
it is computed.

    python experiments/dsp_fewshot.py --size smoke --out /tmp/dsp-smoke
    python experiments/dsp_fewshot.py --size full --threads 1 --out docs/results/dsp_fewshot --img docs/img
                                                                # ~1.5-2 h on 2 cores
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

import numpy as np

from drift_cpp.fit import approximation
from drift_cpp import evaluation as ev
from drift_cpp.score.attributes import builtin_attributes
from drift_cpp.demo import DEMO_ATTRIBUTES
from drift_cpp.errors import DriftError
from drift_cpp.fileio import atomic_write_text
from drift_cpp.preferences import Message, PreferencePair
from run_info import REPO, command_line, git_rev, log, run

CITATION = ('DSP data: Cheng et al. 2023, "Everyone Deserves A Reward: Learning Customized Human Preferences" '
            "(arXiv 2309.03126), CC BY-NC 4.0")
DEFAULT_DATA = REPO.parent / "shared" / "data" / "dsp" / "dsp_dev.jsonl"
PERSONAS = ("academy", "business", "entertainment", "literature")
STYLES = PERSONAS + ("normal",)

SPLIT_SEED = 20230907   # which queries, and which of them train / test
EVAL_SEED = 0           # training draws and cross-validation splits
TRAIN_FRACTION = 0.6    # share of the queries in the train pool
CV_TEST_FRACTION = 1 / 3  # share of train-pool queries held out in each model-selection split
REDUCTION = (40, 20, 10, 5)  # paper Figure 4: top-m attributes at k = 40
TOP_SHOWN = 5

# Eight attributes that plausibly separate the four domains, for the smoke size.
SMOKE_ATTRIBUTES = ("formal", "concise", "vivid", "persuasive", "humor", "creative", "analytic", "storyteller")

# Cost of the full size, with the scorer at ~220 evaluated tokens/s on 2 cores and an item
# (one response under one system prompt) costing ~40 prompt tokens + its response tokens:
#   64 queries x 5 responses x 42 prompts = 13,440 items
#   x (40 + 64) tokens (responses truncated to 64)  = 1,397,760 tokens  -> 6,353 s = 1.76 h
# That bound is pessimistic: ~1/4 of the styled and ~1/2 of the 'normal' responses are
# shorter than 64 tokens (SmolLM2 tokenizer on this split), and the scorer shares the
# prompt prefix of all five responses to a query. Measured on the 2-core machine with other
# work running (--threads 1): 0.15 s per item at 16 tokens, 0.2 s at 32, 0.3-0.4 s at 64,
# so 13,440 x 0.3-0.4 s = 1.1-1.5 h. The analysis (numpy only) adds ~30 s. 64 queries give
# 256 pairs per persona: 38 queries (152 pairs) in the train pool and 26 (104) in the test pool.
# Two llama.cpp threads on two cores that other processes also use run ~10x slower than one
# thread (measured): pass --threads 1 on a shared machine.
SIZES = {
    "smoke": dict(queries=6, attributes=SMOKE_ATTRIBUTES, max_response_tokens=32, seeds=3,
                  ks=(2, 4, 8), reduction_k=8, cv_min_test=2, l2_grid=(0.1, 1.0, 10.0)),
    # As l2 grows, logistic and bt tend to the paper's closed form (their gradient at zero is
    # along v), so a grid up to 1e4 spans fits from unregularized to nearly qp.
    "full": dict(queries=64, attributes=None, max_response_tokens=64, seeds=20,
                 ks=(5, 10, 20, 40, 80, 150), reduction_k=40, cv_min_test=20,
                 l2_grid=(0.001, 0.01, 0.1, 1.0, 10.0, 100.0, 1000.0, 10000.0)),
    # What fits beside the generation run in one session, one thread each: 16 queries x 42
    # prompts x (~40 prompt + 5 x <= 48 response tokens) ~ 190k tokens at ~120 tok/s ~ 26 min.
    "reduced": dict(queries=16, attributes=None, max_response_tokens=48, seeds=10,
                    ks=(5, 10, 20), reduction_k=20, cv_min_test=10,
                    l2_grid=(0.001, 0.01, 0.1, 1.0, 10.0, 100.0)),
    # The real pair's sLM (issue 9): the demo's 14 style attributes, so the 0.5B's ~3-4x slower scoring
    # fits one thread in about an hour: 24 queries x 15 prompts x (~40 + 5 x <= 64 tokens) ~ 120k tokens.
    # 24 queries give 14 train-pool queries (56 pairs per persona), enough for k = 40, and 10 test ones.
    "pair": dict(queries=24, attributes=DEMO_ATTRIBUTES, max_response_tokens=64, seeds=20,
                 ks=(5, 10, 20, 40), reduction_k=40, cv_min_test=10,
                 l2_grid=(0.001, 0.01, 0.1, 1.0, 10.0, 100.0, 1000.0, 10000.0)),
}



# ----------------------------------------------------------------------------- data
def load_dsp(path: Path) -> list[dict]:
    if not path.exists():
        raise DriftError(f"{path}: no such file (give the DSP jsonl with --data)")
    rows = []
    for n, line in enumerate(path.read_text("utf-8").split("\n"), start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
            query, responses = row["query"], row["responses"]
            missing = [s for s in STYLES if not isinstance(responses.get(s), str)]
        except (json.JSONDecodeError, KeyError, TypeError, AttributeError) as e:
            raise DriftError(f"{path}:{n}: not a DSP record ({e})") from None
        if missing or not isinstance(query, str) or not query.strip():
            raise DriftError(f"{path}:{n}: a DSP record needs a query and the responses {', '.join(STYLES)}")
        rows.append({"id": str(row.get("id", f"line-{n}")), "query": query, "responses": responses})
    if not rows:
        raise DriftError(f"{path}: no records")
    return rows


def split_queries(rows: list[dict], n_queries: int) -> tuple[list[dict], list[dict]]:
    if n_queries < 2:
        raise DriftError("at least 2 queries are needed (one train, one test)")
    if n_queries > len(rows):
        raise DriftError(f"{n_queries} queries asked for but the data has {len(rows)}")
    order = np.random.default_rng(SPLIT_SEED).permutation(len(rows))[:n_queries]
    n_train = min(max(1, int(round(TRAIN_FRACTION * n_queries))), n_queries - 1)
    return [rows[i] for i in order[:n_train]], [rows[i] for i in order[n_train:]]


def score_items(rows, scorer, attributes):
    """Reward rows of every non-empty (query, response): {(query id, style): row}, for 'sum' and 'mean'."""
    from drift_cpp.fit.profile import reward_features

    keys, items = [], []
    for row in rows:
        for style in STYLES:
            text = row["responses"][style]
            if not text.strip():
                continue  # DSP has an empty response: pairs with it are skipped
            keys.append((row["id"], style))
            # chosen == rejected: the scorer evaluates each unique request once
            items.append(PreferencePair((Message("user", row["query"]),), text, text, f"{row['id']}/{style}", 0))
    out = {}
    for normalize in ("sum", "mean"):  # the second pass is read from the score cache
        R, _ = reward_features(scorer, items, attributes.base, attributes.attributes, normalize)
        out[normalize] = {key: r for key, r in zip(keys, R)}
    return out, len(items)


def persona_pairs(rows, persona, rewards):
    """(Fold with sum features, Fold with mean features, query id per pair)."""
    W = {"sum": [], "mean": []}
    L = {"sum": [], "mean": []}
    texts, groups = [], []
    for row in rows:
        chosen = row["responses"][persona]
        if not chosen.strip():
            continue
        for other in STYLES:
            rejected = row["responses"][other]
            if other == persona or not rejected.strip():
                continue
            for norm in ("sum", "mean"):
                W[norm].append(rewards[norm][(row["id"], persona)])
                L[norm].append(rewards[norm][(row["id"], other)])
            texts.append((chosen, rejected))
            groups.append(row["id"])
    folds = {norm: ev.Fold(W=np.array(W[norm]), L=np.array(L[norm]), texts=texts) for norm in ("sum", "mean")}
    return folds, groups


# ------------------------------------------------------------------------ analysis
def candidates(l2_grid):
    """Every configuration model selection may pick: label -> (method, params), per feature set."""
    sum_methods = {"longer": "longer", "best_single": "best_single", "drift": "drift", "standardize": "standardize"}
    for family in ("logistic", "bt", "with_length", "bow_rm"):
        for l2 in l2_grid:
            sum_methods[f"{family} l2={l2:g}"] = (family, {"l2": l2})
    mean_methods = {"drift (mean)": "drift", "standardize (mean)": "standardize"}
    return sum_methods, mean_methods


def merged(a: dict, b: dict) -> dict:
    if a["ks"] != b["ks"]:
        raise DriftError("cannot merge results over different ks")
    out = dict(a)
    out["methods"] = {**a["methods"], **b["methods"]}
    return out


def family_labels(l2_grid, family):
    return [f"{family} l2={l2:g}" for l2 in l2_grid]


def choose(cv: dict, ks, labels, default: str) -> list[str]:
    """For each k: the label with the best train-pool CV accuracy at that k (or, past the
    largest k cross-validation could use, at that largest k); `default` if CV had no k."""
    if not cv["ks"]:
        return [default] * len(ks)
    best = ev.best_by_k(cv, labels)
    out = []
    for k in ks:
        usable = [i for i, ck in enumerate(cv["ks"]) if ck <= k]
        out.append(best[usable[-1]] if usable else best[0])
    return out


def pick(results: dict, labels_per_k: list[str]) -> dict:
    """The test-pool scores of the configuration selected at each k."""
    entry = {"method": "selected by train-pool CV", "params": {}, "selected": list(labels_per_k),
             "mean": [], "std": [], "scores": []}
    for i, label in enumerate(labels_per_k):
        m = results["methods"][label]
        entry["mean"].append(m["mean"][i])
        entry["std"].append(m["std"][i])
        entry["scores"].append(m["scores"][i])
    return entry


def table(results: dict, rows: dict) -> dict:
    """A result dict holding `rows` (label -> entry or label in `results`)."""
    out = {k: v for k, v in results.items() if k != "methods"}
    out["methods"] = {label: (results["methods"][e] if isinstance(e, str) else e) for label, e in rows.items()}
    return out


def analyse_persona(folds_train, groups_train, folds_test, attributes, cfg, ks) -> dict:
    seeds, grid = cfg["seeds"], cfg["l2_grid"]
    sum_methods, mean_methods = candidates(grid)

    # Model selection: grouped CV on the train pool only.
    cv_kwargs = dict(ks=ks, n_splits=seeds, seed=EVAL_SEED, groups=groups_train,
                     test_fraction=CV_TEST_FRACTION, min_test=cfg["cv_min_test"])
    f = folds_train
    cv = merged(ev.cross_validate(f["sum"].W, f["sum"].L, f["sum"].texts, methods=sum_methods, **cv_kwargs),
                ev.cross_validate(f["mean"].W, f["mean"].L, f["mean"].texts, methods=mean_methods, **cv_kwargs))
    families = {fam: choose(cv, ks, family_labels(grid, fam), f"{fam} l2=1") for fam in
                ("logistic", "bt", "with_length", "bow_rm")}
    drift_family = ["drift", "drift (mean)", "standardize", "standardize (mean)"] + [
        l for fam in ("logistic", "bt", "with_length") for l in family_labels(grid, fam)]
    selected = choose(cv, ks, drift_family, "drift")

    # Evaluation: train pool -> test pool.
    test = merged(ev.holdout(folds_train["sum"], folds_test["sum"], ks, seeds, EVAL_SEED, sum_methods),
                  ev.holdout(folds_train["mean"], folds_test["mean"], ks, seeds, EVAL_SEED, mean_methods))
    rows = {"longer": "longer", "best_single": "best_single", "bow_rm": pick(test, families["bow_rm"]),
            "drift": "drift", "drift-selected": pick(test, selected)}
    default_fit, = family_labels((approximation.DEFAULT_L2,), approximation.DEFAULT_METHOD)
    if default_fit in test["methods"]:  # drift-cpp's default fit, where the grid holds its l2
        rows[f"drift-cpp default ({default_fit})"] = default_fit
    main = table(test, rows)
    fit_methods = table(test, {"qp": "drift", "logistic": pick(test, families["logistic"]),
                               "bt": pick(test, families["bt"]), "standardize": "standardize",
                               "with_length": pick(test, families["with_length"])})
    normalization = table(test, {"qp sum": "drift", "qp mean": "drift (mean)",
                                 "standardize sum": "standardize", "standardize mean": "standardize (mean)"})

    # Attribute reduction (Figure 4): Drift with its top-m attributes at k = reduction_k.
    k_red = cfg["reduction_k"]
    n_attr = len(attributes)
    sizes = [n_attr] + [m for m in REDUCTION if m < n_attr]
    reduction = ev.holdout(folds_train["sum"], folds_test["sum"], [k_red], seeds, EVAL_SEED,
                           {f"top {m}": ("drift", {"n_attributes": m}) for m in sizes})

    # The persona's profile from the whole train pool.
    W, L = folds_train["sum"].W, folds_train["sum"].L
    v, p = approximation.fit_qp(W, L)
    unit = approximation.unit_implicit_preference(v, W.shape[0])
    top = [{"id": attributes.attributes[i].id, "name": attributes.attributes[i].name, "p": float(p[i]),
            "unit_implicit_preference": float(unit[i])} for i in approximation.top_m(p, TOP_SHOWN)]

    return {
        "n_train_pairs": len(folds_train["sum"]), "n_test_pairs": len(folds_test["sum"]),
        "accuracy_vs_k": main, "fit_methods": fit_methods, "normalization": normalization,
        "attribute_reduction": reduction, "top_attributes": top,
        "selection": {"ks": list(test["ks"]), "drift-selected": selected, **families, "cv_ks": cv["ks"]},
        "cv": cv,
        "test": test,
    }


def product_candidates(l2_grid) -> list[str]:
    """The fits `drift-cpp approximate` offers: the paper's closed form (first) with either
    normalization, and the logistic and Bradley-Terry fits at one fixed l2."""
    return ["drift", "drift (mean)"] + family_labels(l2_grid, "logistic") + family_labels(l2_grid, "bt")


def defaults_evidence(personas: dict, l2_grid) -> dict:
    """The rule for changing the default fit: the candidate with the best train-pool CV accuracy
    (mean over personas and k) replaces the paper's closed form only if it also beats it on the
    test pools. The test pools play no part in picking the candidate."""
    if not all(r["cv"]["ks"] for r in personas.values()):
        return {"candidates": [], "best_by_cv": None, "adopt": "drift",
                "why": "the train pools are too small to cross-validate"}

    def accuracy(key: str, label: str) -> float:
        return float(np.mean([np.mean(r[key]["methods"][label]["mean"]) for r in personas.values()]))

    rows = [{"label": l, "cv": accuracy("cv", l), "test": accuracy("test", l)} for l in product_candidates(l2_grid)]
    paper, best = rows[0], max(rows, key=lambda r: r["cv"])
    if best is paper:
        why = "the paper's closed form has the best train-pool CV accuracy"
    elif best["test"] > paper["test"]:
        why = f"{best['label']} wins on the train pools by CV and holds on the test pools"
    else:
        why = f"{best['label']} wins on the train pools by CV but not on the test pools"
    adopt = best["label"] if best is not paper and best["test"] > paper["test"] else "drift"
    return {"candidates": rows, "best_by_cv": best["label"], "adopt": adopt, "why": why}


# ------------------------------------------------------------------------- report
def reduction_bars(results: dict) -> dict:
    bars = {}
    for persona, r in results["personas"].items():
        red = r["attribute_reduction"]
        bars[persona] = {label: (m["mean"][0], m["std"][0]) for label, m in red["methods"].items() if red["ks"]}
    avg = results["average"]["attribute_reduction"]
    if avg["ks"]:
        bars["average"] = {label: (m["mean"][0], m["std"][0]) for label, m in avg["methods"].items()}
    return bars


def markdown(results: dict, img: str) -> str:
    """The report; `img` is the plots' folder relative to it."""
    c = results["config"]
    out = [
        "# Few-shot preference modelling on DSP",
        "",
        f"{CITATION}.",
        "",
        f"- command: `{results['command']}`",
        f"- git rev: `{results['git_rev']}`",
        f"- model: {results['model']['name']} (sha256 {results['model']['sha256'][:16]}...)",
        f"- size: {c['size']}: {c['queries']} queries ({len(results['split']['train_queries'])} train pool, "
        f"{len(results['split']['test_queries'])} test pool, split by query with seed {SPLIT_SEED}), "
        f"{len(c['attributes'])} attributes, responses scored on their first {c['max_response_tokens']} tokens, "
        f"{c['seeds']} seeds per k",
        f"- scored items: {results['n_items']} (query, response) x {len(c['attributes']) + 1} prompts; "
        f"scoring {results['timing']['scoring_s']:.0f} s, analysis {results['timing']['analysis_s']:.0f} s",
        "",
        "Accuracy is on the test pool (pairs from queries never seen in training), mean ± std over "
        "the seeds (each seed draws k training pairs from the train pool); ties count 0.5. "
        "`longer` and `bow_rm` read the full response text, the attribute rewards its first "
        f"{c['max_response_tokens']} tokens. The l2 of logistic / bt / with_length / bow_rm and the "
        "`drift-selected` configuration are chosen per k by grouped cross-validation on the train pool "
        "only. `drift` is the paper's closed form with no tuning; `drift-cpp default` is the fit "
        "`drift-cpp approximate` uses, chosen as the \"Defaults by evidence\" section below describes.",
        "",
        "## Average over the four personas",
        "",
        "Mean over the personas; ± is the std over seeds of the persona-averaged accuracy.",
        "",
    ]
    avg = results["average"]
    out += [ev.format_table(avg["accuracy_vs_k"], "Accuracy vs k (Figure 3)"), "",
            ev.format_table(avg["fit_methods"], "Fit method: qp vs logistic vs bt vs standardize vs with_length"), "",
            ev.format_table(avg["normalization"], "Normalization: sum vs mean (per response token)"), "",
            ev.format_table(avg["attribute_reduction"], "Attribute reduction (Figure 4): Drift with its top-m attributes"),
            ""]
    out += [f"![{name[:-4].replace('_', ' ')}]({(Path(img) / name).as_posix()})" for name in PLOTS] + [""]
    d = results["defaults"]
    out += ["## Defaults by evidence", "",
            "Each fit `drift-cpp approximate` offers, by accuracy averaged over the personas and k: on the "
            "train pools by grouped cross-validation (which picks the candidate) and on the test pools "
            "(which must confirm it). `drift` is the paper's closed form with `sum` normalization.", "",
            "| fit | train-pool CV | test pool |", "|---|---|---|"]
    out += [f"| {r['label']} | {r['cv']:.3f} | {r['test']:.3f} |" for r in d["candidates"]]
    out += ["", f"Verdict: **{d['adopt']}**, as {d['why']}.", ""]
    for persona, r in results["personas"].items():
        out += [f"## Persona: {persona}", "",
                f"{r['n_train_pairs']} train-pool pairs, {r['n_test_pairs']} test-pool pairs.", "",
                ev.format_table(r["accuracy_vs_k"], "Accuracy vs k"), "",
                ev.format_table(r["fit_methods"], "Fit method"), "",
                ev.format_table(r["normalization"], "Normalization"), "",
                ev.format_table(r["attribute_reduction"], "Attribute reduction"), "",
                "**Top attributes** (qp on the whole train pool, sum normalization)", "",
                "| attribute | p | unit implicit preference |", "|---|---|---|"]
        out += [f"| {a['name']} | {a['p']:+.3f} | {a['unit_implicit_preference']:+.3f} |" for a in r["top_attributes"]]
        sel = r["selection"]
        note = ("" if sel["cv_ks"] else
                " (the train pool is too small to cross-validate: the defaults drift and l2=1 are used)")
        out += ["", f"**Chosen by train-pool CV**{note}", "", "| k | drift-selected | bow_rm | logistic | bt | with_length |",
                "|---|---|---|---|---|---|"]
        for i, k in enumerate(sel["ks"]):
            out.append(f"| {k} | {sel['drift-selected'][i]} | {sel['bow_rm'][i]} | {sel['logistic'][i]} | "
                       f"{sel['bt'][i]} | {sel['with_length'][i]} |")
        out.append("")
    return "\n".join(out)


CURVES = {"accuracy_vs_k": "DSP: accuracy vs training pairs", "fit_methods": "DSP: fit methods",
          "normalization": "DSP: sum vs mean normalization"}  # each table plotted against k, by title
PLOTS = tuple(f"{key}.png" for key in CURVES) + ("attribute_reduction.png",)


def plots(results: dict, img: Path) -> None:
    img.mkdir(parents=True, exist_ok=True)
    personas = results["personas"]
    for key, title in CURVES.items():
        panels = {"average": results["average"][key], **{p: r[key] for p, r in personas.items()}}
        ev.plot(panels, img / f"{key}.png", title=title)
    k_red = results["average"]["attribute_reduction"]["ks"]
    ev.plot_bars(reduction_bars(results), img / "attribute_reduction.png",
                 title=f"DSP: Drift with its top-m attributes (k = {k_red[0] if k_red else '-'})")


# --------------------------------------------------------------------------- main
def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--size", choices=sorted(SIZES), default="smoke")
    ap.add_argument("--data", type=Path, default=DEFAULT_DATA, help="DSP jsonl (default: %(default)s)")
    ap.add_argument("--out", type=Path, default=None, help="output folder (default: experiments/results/dsp_fewshot_<size>)")
    ap.add_argument("--img", type=Path, default=None, help="folder for the plots (default: the output folder)")
    ap.add_argument("--cache", type=Path, default=None, help="score cache file (default: the drift-cpp cache)")
    ap.add_argument("--model", default=None, help="model name or GGUF path (default: the embedded SmolLM2-135M)")
    ap.add_argument("--threads", type=int, default=0,
                    help="scoring threads (default 0: one per core; use 1 when other work shares the CPU)")
    ap.add_argument("--queries", type=int, help="override the number of queries")
    ap.add_argument("--seeds", type=int, help="override the number of seeds per k")
    ap.add_argument("--max-response-tokens", type=int, help="override the response truncation")
    args = ap.parse_args(argv)

    cfg = dict(SIZES[args.size])
    for key in ("queries", "seeds", "max_response_tokens"):
        if getattr(args, key) is not None:
            cfg[key] = getattr(args, key)
    if cfg["seeds"] < 1 or cfg["max_response_tokens"] < 1:
        raise DriftError("--seeds and --max-response-tokens must be at least 1")
    out = args.out or REPO / "experiments" / "results" / f"dsp_fewshot_{args.size}"
    out.mkdir(parents=True, exist_ok=True)
    img = args.img or out
    command, rev = command_line(__file__, argv), git_rev()
    log(CITATION)

    from drift_cpp.models import ModelOptions, load_model
    from drift_cpp.score.cache import ScoreCache
    from drift_cpp.score.scorer import Scorer

    t0 = time.monotonic()
    rows = load_dsp(args.data)
    train_rows, test_rows = split_queries(rows, cfg["queries"])
    attributes = builtin_attributes()
    if cfg["attributes"] is not None:
        attributes = attributes.select(include=cfg["attributes"])
    model = load_model(args.model, ModelOptions(threads=max(0, args.threads)))
    cache = ScoreCache(args.cache)
    scorer = Scorer(model, cache=cache, max_response_tokens=cfg["max_response_tokens"])
    log(f"{len(train_rows)} train + {len(test_rows)} test queries, {len(attributes)} attributes, "
        f"first {cfg['max_response_tokens']} response tokens; score cache {cache.path}")
    rewards, n_items = score_items(train_rows + test_rows, scorer, attributes)
    t_scored = time.monotonic()

    folds = {}
    for persona in PERSONAS:
        tr, groups = persona_pairs(train_rows, persona, rewards)
        te, _ = persona_pairs(test_rows, persona, rewards)
        folds[persona] = (tr, groups, te)
    n_pool = min(len(tr["sum"]) for tr, _, _ in folds.values())
    ks = [k for k in cfg["ks"] if k <= n_pool]
    if not ks:
        raise DriftError(f"the train pools hold only {n_pool} pairs: use more queries")
    cfg["reduction_k"] = min(cfg["reduction_k"], n_pool)  # the same k for every persona

    personas = {}
    for persona, (tr, groups, te) in folds.items():
        log(f"analysing {persona}: {len(tr['sum'])} train-pool / {len(te['sum'])} test-pool pairs")
        personas[persona] = analyse_persona(tr, groups, te, attributes, cfg, ks)
    average = {key: ev.average_results({p: r[key] for p, r in personas.items()})
               for key in ("accuracy_vs_k", "fit_methods", "normalization", "attribute_reduction")}
    t_done = time.monotonic()

    results = {
        "citation": CITATION,
        "command": command,
        "git_rev": rev,
        "model": model.identity,
        "config": {"size": args.size, "data": str(args.data), "queries": cfg["queries"], "seeds": cfg["seeds"],
                   "max_response_tokens": cfg["max_response_tokens"], "ks": ks, "l2_grid": list(cfg["l2_grid"]),
                   "attributes": list(attributes.ids), "split_seed": SPLIT_SEED, "eval_seed": EVAL_SEED,
                   "train_fraction": TRAIN_FRACTION, "cv_test_fraction": CV_TEST_FRACTION,
                   "reduction_k": cfg["reduction_k"], "personas": list(PERSONAS), "threads": model.options.n_threads},
        "split": {"train_queries": [r["id"] for r in train_rows], "test_queries": [r["id"] for r in test_rows]},
        "n_items": n_items,
        "timing": {"scoring_s": t_scored - t0, "analysis_s": t_done - t_scored},
        "personas": personas,
        "average": average,
        "defaults": defaults_evidence(personas, cfg["l2_grid"]),
    }
    atomic_write_text(out / "results.json", json.dumps(results, indent=1, ensure_ascii=False) + "\n")
    try:
        plots(results, img)
    except DriftError as e:
        log(f"warning: no plots: {e}")
    atomic_write_text(out / "results.md", markdown(results, os.path.relpath(img, out)))
    log(f"wrote {out / 'results.json'}, {out / 'results.md'} and plots in {img}")
    avg = average["accuracy_vs_k"]
    print(ev.format_table(avg, f"Average test accuracy over the four personas ({CITATION})"))
    return 0


if __name__ == "__main__":
    run(main)
