"""What scoring costs: tokens evaluated, seconds, items scored and read from a cache; the ETA's plan."""

from drift_cpp.preferences import load_pairs
from drift_cpp.score.cache import MemoryCache
from drift_cpp.progress import TokenProgress
from drift_cpp.score.scorer import Cost, ScoreRequest, Scorer, planned_tokens


def test_cost_counts_what_the_native_scorer_evaluates(smollm):
    from drift_cpp.demo import DEMO_PAIRS
    pairs = load_pairs(DEMO_PAIRS)[:2]
    requests = [ScoreRequest(system, p.prompt, r) for p in pairs for r in (p.chosen, p.rejected)
                for system in ("Be concise.", "Be funny.")]
    cache = MemoryCache()
    scorer = Scorer(smollm, cache=cache, progress=False)  # a fresh context: nothing cached in it yet
    work = sorted((scorer.tokens(r, smollm.render(scorer._messages(r))) for r in requests), key=lambda w: w[0])
    before = scorer.core.stats["evaluated_tokens"]
    scorer.score(requests + requests[:2])  # duplicates are scored once
    assert scorer.cost.tokens_evaluated == scorer.core.stats["evaluated_tokens"] - before == planned_tokens(work)
    # the prompts' shared prefixes are evaluated once: fewer tokens than every item alone
    assert scorer.cost.tokens_evaluated < sum(len(p) + len(t) - 1 for p, t in work)
    assert (scorer.cost.items_scored, scorer.cost.items_cached) == (8, 0) and scorer.cost.seconds > 0
    assert len(cache.new) == 8

    first = scorer.cost
    scorer.score(requests)
    assert scorer.cost - first == Cost(0, (scorer.cost - first).seconds, 0, 8)  # all from the cache


def test_eta_comes_from_the_tokens_left():
    bar = TokenProgress("scoring", 10, planned=1000)
    assert bar.eta_seconds() is None and bar.status() == "1,000 tokens to evaluate"
    bar.done, bar.rate = 400, 100.0
    assert bar.eta_seconds() == 6.0 and bar.status() == "100 tok/s, ETA 0:06"
