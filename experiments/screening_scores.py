#!/usr/bin/env python
"""Per-token rewards of DSP and CNN/DM responses under the base prompt and all 41 attributes.

The evidence behind attribute screening and the response truncation default
(docs/screening.md) comes from these arrays: every (response, system prompt) item is
scored ONCE at up to --cap response tokens with per-token log-probabilities, so the
reward at any truncation t <= cap is a prefix sum, and which columns a screening rule
would have scored can be simulated without scoring again.

Data:
  * DSP, Cheng et al. 2023, "Everyone Deserves A Reward" (arXiv 2309.03126), CC BY-NC 4.0:
    the queries dsp_fewshot.py draws (same split seed), every non-empty style response.
  * CNN/DM comparisons of named human workers, Stiennon et al. 2020, "Learning to summarize
    from human feedback" (Modified MIT; articles under their publishers' terms): the first
    --articles articles of the worker with most comparisons; the prompt is family_choice.py's
    (the instruction and the article's first --article-words words: only the article is cut),
    the responses the summaries, whole (--cap 0).

Output: one .npz per data set under --work (resumable: it is rewritten after each chunk and
items already there are skipped). experiments/screening.py reads them.

    python experiments/screening_scores.py --data dsp --queries 20 --cap 128 --threads 1
    python experiments/screening_scores.py --data cnndm --articles 12 --cap 0 --threads 1
"""

from __future__ import annotations

import argparse
import io
import json
import time
from collections import Counter
from pathlib import Path

import numpy as np

from drift_cpp.score.attributes import builtin_attributes
from drift_cpp.fileio import atomic_write_bytes
from drift_cpp.fileio import cache_dir
from drift_cpp.models import ModelOptions, load_model
from drift_cpp.score.scorer import ScoreRequest, Scorer
from dsp_fewshot import DEFAULT_DATA as DSP_DATA, STYLES, load_dsp, split_queries
from family_choice import CNNDM_DATA, cnndm_prompt, load_cnndm
from run_info import log, run

DEFAULT_WORK = cache_dir() / "screening"
CHUNK = 48  # items scored between two checkpoints


def dsp_items(n_queries: int):
    """(texts: {item id: (query, response)}, meta) for the queries dsp_fewshot.py uses, train pool first."""
    train, test = split_queries(load_dsp(DSP_DATA), n_queries)
    texts = {}
    for row in train + test:
        for style in STYLES:
            if row["responses"][style].strip():
                texts[f"{row['id']}/{style}"] = (row["query"], row["responses"][style])
    return texts, {"train_queries": [r["id"] for r in train], "test_queries": [r["id"] for r in test]}


def cnndm_rows(n_articles: int) -> list[dict]:
    """The comparisons of the worker with most of them, on that worker's first n_articles articles."""
    rows = load_cnndm(CNNDM_DATA)
    worker = Counter(r["worker"] for r in rows).most_common(1)[0][0]
    articles: list[str] = []
    for r in rows:
        if r["worker"] == worker and r["id"] not in articles:
            articles.append(r["id"])
    keep = set(articles[:n_articles])
    return [r for r in rows if r["worker"] == worker and r["id"] in keep]


def cnndm_items(n_articles: int, words: int):
    """(texts, meta): meta["pairs"] holds the worker's comparisons as (article, chosen item, rejected item)."""
    texts, pairs, rows = {}, [], cnndm_rows(n_articles)
    for r in rows:
        ids = [f"{r['id']}/{hash_text(s)}" for s in r["summaries"]]
        if not all(s.strip() for s in r["summaries"]):
            continue  # one summary in the data is empty: comparisons with it are skipped
        for item, s in zip(ids, r["summaries"]):
            texts.setdefault(item, (cnndm_prompt(r["article"], words), s))
        pairs.append((r["id"], ids[r["choice"]], ids[1 - r["choice"]]))
    return texts, {"articles": n_articles, "article_words": words, "worker": rows[0]["worker"],
                   "pairs": pairs}


def hash_text(s: str) -> str:
    import hashlib
    return hashlib.sha256(s.encode()).hexdigest()[:12]


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--data", choices=("dsp", "cnndm"), required=True)
    ap.add_argument("--queries", type=int, default=20, help="DSP queries")
    ap.add_argument("--articles", type=int, default=8, help="CNN/DM articles of the worker with most comparisons")
    ap.add_argument("--article-words", type=int, default=100, help="CNN/DM: words of each article in the prompt")
    ap.add_argument("--cap", type=int, default=128, help="response tokens scored (0: all)")
    ap.add_argument("--base-cap", type=int, default=None, help="response tokens scored under the base prompt "
                    "(default: --cap), so that a truncation study on the attributes scored at that cap has its base")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--work", type=Path, default=DEFAULT_WORK)
    args = ap.parse_args(argv)

    texts, meta = dsp_items(args.queries) if args.data == "dsp" else cnndm_items(args.articles, args.article_words)
    attrs = builtin_attributes()
    prompts = [attrs.base] + list(attrs.attributes)
    model = load_model(None, ModelOptions(0, args.threads, None))
    scorer = Scorer(model, max_response_tokens=args.cap)
    base_scorer = Scorer(model, max_response_tokens=args.cap if args.base_cap is None else args.base_cap)
    args.work.mkdir(parents=True, exist_ok=True)
    out = args.work / f"{args.data}.npz"
    done = {}
    if out.exists():
        with np.load(out, allow_pickle=False) as z:
            done = {k: z[k] for k in z.files if k != "meta"}
            old_cap = json.loads(str(z["meta"]))["cap"]
        # entries from before caps were recorded per entry: the cap of the run that wrote the file
        for k in [k for k in done if k.startswith("lp|") and "cap|" + k[3:] not in done]:
            done["cap|" + k[3:]] = np.array([old_cap], dtype=np.int32)
    work = []
    queries = {q: n for n, q in enumerate(dict.fromkeys(i.split("/")[0] for i in texts))}  # in the data's order
    for item_id, (query, response) in texts.items():
        for j, a in enumerate(prompts):
            key = f"lp|{item_id}|{j}"
            if key in done:
                continue
            sc = base_scorer if j == 0 else scorer
            request = ScoreRequest(a.prompt, (("user", query),), response, label=item_id)
            prompt, tokens = sc.tokens(request, model.render(sc._messages(request)))
            work.append(((queries[item_id.split('/')[0]], prompt), key, prompt, tokens, sc.max_response_tokens))
    # A query's items together (its responses share each prompt), so that every query finished is
    # complete data even if the run stops: the analysis uses the responses scored under all prompts.
    work.sort(key=lambda w: w[0])
    work = [w[1:] for w in work]
    log(f"{args.data}: {len(texts)} responses x {len(prompts)} prompts, {len(work)} items to score")
    start = time.monotonic()
    for i in range(0, len(work), CHUNK):
        chunk = work[i : i + CHUNK]
        results = scorer.core.score([(p, t) for _, p, t, _ in chunk], True)
        for (key, prompt, _, cap), (_, per_token) in zip(chunk, results):
            done[key] = np.asarray(per_token, dtype=np.float32)
            done["np|" + key[3:]] = np.array([len(prompt)], dtype=np.int32)
            done["cap|" + key[3:]] = np.array([cap], dtype=np.int32)
        buf = io.BytesIO()
        np.savez(buf, meta=np.array(json.dumps({**meta, "data": args.data, "cap": args.cap,
                                                "model": model.identity["name"],
                                                "items": list(texts)})), **done)
        atomic_write_bytes(out, buf.getvalue())
        log(f"{min(i + CHUNK, len(work))}/{len(work)} items, {time.monotonic() - start:.0f} s, "
            f"{scorer.core.stats['evaluated_tokens']} tokens evaluated")
    return 0


if __name__ == "__main__":
    run(main)
