"""Many users' profiles at once (drift-cpp approximate-many): a local process pool or a Ray cluster.

Each worker loads the sLM once and fits whole users (the columns screening scores depend on
the user's earlier pairs, so a user is the unit of work). The driver reads and checks every
user's pairs first, gives each user the scores its local cache already holds, and takes back
the profile and the scores computed for it: it writes the profile atomically and adds the
scores to its cache. A user whose profile is up to date (same pairs, attributes and fit) is
skipped, so an interrupted run resumes; a user with new pairs is fitted again, which with the
cache scores only the new entries (screening decides a pair's columns from the pairs before it).
Users are independent: one whose fit fails is reported, and every other user's profile is written.
"""

from __future__ import annotations

import os
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass
from multiprocessing import get_context
from pathlib import Path
from typing import Callable, Iterator, Optional

from . import profile_file
from ..score.attributes import AttributeSet
from ..errors import DriftError
from ..fileio import check_output
from ..models import ModelOptions, load_model
from ..preferences import PAIR_SUFFIXES, PreferencePair, load_pairs
from .profile import FitOptions, Profile, pair_requests
from ..score.cache import MemoryCache
from ..score.scorer import Scorer, request_key
from .screening import ScreenOptions

@dataclass(frozen=True)
class Job:
    """What every user's fit shares."""
    slm: Optional[str]
    model_options: ModelOptions
    attributes: AttributeSet
    options: FitOptions
    screen: Optional[ScreenOptions]
    decode_exclude: tuple


@dataclass
class Task:
    name: str
    pairs: list[PreferencePair]
    cached: dict  # key -> (logprob, n_tokens): what the driver's cache holds for this user


@dataclass
class Result:
    name: str
    data: Optional[profile_file.ProfileData]  # None: the fit failed
    scores: list  # (key, logprob, n_tokens) computed for this user
    error: Optional[str] = None  # why the fit failed, in one line


class Fitter:
    """One worker: the sLM stays loaded between users (a process of the pool, or a Ray actor)."""

    def __init__(self, job: Job):
        self.job = job
        self.scorer = Scorer(load_model(job.slm, job.model_options),
                             max_response_tokens=job.options.max_response_tokens)

    def fit(self, task: Task) -> Result:
        """The user's profile, or the reason it failed: one user's failure is never another's."""
        j = self.job
        self.scorer.cache = MemoryCache(task.cached)
        try:
            prof = Profile.fit(task.pairs, self.scorer, j.attributes, j.options, j.decode_exclude, j.screen)
        except Exception as e:  # noqa: BLE001  (reported for this user; the others go on)
            return Result(task.name, None, self.scorer.cache.new, failure(e))
        return Result(task.name, prof.to_data(), self.scorer.cache.new)


def failure(e: Exception) -> str:
    """An exception as the one line a user's failure is reported with."""
    text = " ".join(str(e).split())
    return text if isinstance(e, DriftError) else f"internal error ({type(e).__name__}): {text}; please report it"


def user_files(pairs_dir: Path, out_dir: Path) -> list[tuple[str, Path, Path]]:
    """(user, pairs file, profile file) for every pairs file, by name; two files of one user are an error."""
    if not pairs_dir.is_dir():
        raise DriftError(f"{pairs_dir}: not a directory of pairs files")
    if out_dir.exists() and not out_dir.is_dir():
        raise DriftError(f"-o {out_dir}: not a directory (give the directory the profiles go to)")
    if out_dir.resolve() == pairs_dir.resolve():  # the next run would read the profiles as pairs files
        raise DriftError(f"-o {out_dir}: is the pairs directory; write the profiles to another directory")
    files = sorted(p for p in pairs_dir.iterdir() if p.suffix.lower() in PAIR_SUFFIXES and p.is_file())
    if not files:
        raise DriftError(f"{pairs_dir}: no pairs files ({', '.join(PAIR_SUFFIXES)})")
    seen: dict[str, Path] = {}
    for f in files:
        if f.stem in seen:
            raise DriftError(f"{f}: user '{f.stem}' also has {seen[f.stem].name}; keep one pairs file per user")
        seen[f.stem] = f
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise DriftError(f"-o {out_dir}: cannot create the directory: {e.strerror or e}") from None
    out = [(f.stem, f, out_dir / f"{f.stem}.json") for f in files]
    for _, f, target in out:
        check_output(target, inputs=files)
    return out


def up_to_date(path: Path, pairs: list[PreferencePair], job: Job, model) -> bool:
    """The profile at path was fitted on exactly these pairs, attributes and options (a damaged one is not)."""
    if not path.exists():
        return False
    try:
        prof = Profile.load(path)
    except DriftError:
        return False
    return (prof.pair_ids == [p.id for p in pairs] and prof.attributes == job.attributes
            and prof.options == job.options and prof.screen == job.screen
            and prof.decode_exclude == list(job.decode_exclude) and model.same_as(prof.model))


def plan(pairs_dir: Path, out_dir: Path, job: Job, cache) -> tuple[list[Task], list[str], dict]:
    """Tasks for the users to fit (with their cached scores), the users skipped as up to date, and where to write."""
    users = user_files(pairs_dir, out_dir)
    loaded = [(name, load_pairs(f), target) for name, f, target in users]  # every file checked before any work
    model = load_model(job.slm, job.model_options)
    tasks, skipped, targets = [], [], {}
    for name, pairs, target in loaded:
        if up_to_date(target, pairs, job, model):
            skipped.append(name)
            continue
        requests, _ = pair_requests(pairs, job.attributes.base, job.attributes.attributes)
        keys = [request_key(model, job.options.max_response_tokens, r) for r in requests]
        tasks.append(Task(name, pairs, cache.get_many(keys) if cache else {}))
        targets[name] = target
    return tasks, skipped, targets


_FITTER: Optional[Fitter] = None


def _start_worker(job: Job) -> None:
    global _FITTER
    _FITTER = Fitter(job)


def _fit_in_worker(task: Task) -> Result:
    return _FITTER.fit(task)


def run_local(job: Job, tasks: list[Task], workers: int) -> Iterator[Result]:
    """Fits on a pool of processes, each with its own sLM (spawned: no llama.cpp state is forked)."""
    with ProcessPoolExecutor(max_workers=workers, mp_context=get_context("spawn"), initializer=_start_worker,
                             initargs=(job,)) as pool:
        futures = {pool.submit(_fit_in_worker, t): t.name for t in tasks}
        for f in as_completed(futures):
            try:
                yield f.result()
            except Exception as e:  # noqa: BLE001  (a worker that died: its users fail, the others' results stay)
                yield Result(futures[f], None, [], failure(e))


def run_ray(job: Job, tasks: list[Task], workers: Optional[int], address: str) -> Iterator[Result]:
    """Fits on a Ray cluster: one Fitter actor per worker, each holding its sLM for all its users."""
    try:
        import ray
        from ray.util import ActorPool
    except ImportError:
        raise DriftError("--ray needs Ray: pip install 'drift-cpp[ray]'") from None
    ray.init(address=address, log_to_driver=False)
    try:
        n = workers or max(int(ray.cluster_resources().get("CPU", 1)), 1)
        actors = [ray.remote(num_cpus=1)(Fitter).remote(job) for _ in range(min(n, len(tasks)) or 1)]
        yield from ActorPool(actors).map_unordered(lambda actor, task: actor.fit.remote(task), tasks)
    finally:
        ray.shutdown()


def approximate_many(pairs_dir, out_dir, job: Job, cache, workers: Optional[int] = None,
                     ray_address: Optional[str] = None, on_done: Callable[[str, Result], None] = lambda *_: None):
    """Fits every user not up to date; returns (fitted users, skipped users, {failed user: why}).
    on_done sees each result as it comes, failed or not."""
    pairs_dir, out_dir = Path(pairs_dir), Path(out_dir)
    tasks, skipped, targets = plan(pairs_dir, out_dir, job, cache)
    if not tasks:
        return [], skipped, {}
    if ray_address:
        results = run_ray(job, tasks, workers, ray_address)
    else:
        results = run_local(job, tasks, min(workers or os.cpu_count() or 1, len(tasks)))
    done, failed = [], {}
    for result in results:
        if cache:
            cache.put_many(result.scores)  # a failed user's scores too: the rerun does not pay for them again
        if result.error is None:
            try:
                profile_file.save(targets[result.name], result.data)
                done.append(result.name)
            except DriftError as e:
                result.error = failure(e)
        if result.error is not None:
            failed[result.name] = result.error
        on_done(result.name, result)
    return done, skipped, failed
