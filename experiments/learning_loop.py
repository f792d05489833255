#!/usr/bin/env python
"""Learning from picks, end to end (issue 25): simulated users drive chat's learning loop.

A simulated user is a judge with a hidden preference (generation_judges.py's transparent judges,
`long`, the reverse of `short`, and the DSP personas of dsp_personas.py). It chats through the code path of `drift-cpp chat --learn 1`:
steer/questions.Learner asks two answers to a prompt (by one of the question strategies), the user
picks by its judge, skipping near-ties, and the Learner records the pick into a profile's pairs file
(fit/learning.add) exactly as chat does. Each turn is a new one-turn conversation.

--via openai runs the same loop against a `drift-cpp serve` the harness starts (same models, attributes
and beta), the user talking to it only through the official openai client: the two answers are chat
completions (personalized: with `user`, against one without, one seed; samples: two without, seeds s and
s + 1), the pick goes to /v1/preferences, and the held-out answers are completions at temperature 0.
betas and active ask what no request can, and are refused. Its runs are named `...-openai`, record the
via in their settings and go in their own --out; tests/test_learning_loop_server.py checks that both
ways give the same pairs, profiles and win rates for the same seed.

After each checkpoint's number of picks the profile is frozen (copied) and decodes the held-out prompts
greedily; the judge compares each answer with plain decoding's (win 1, tie 0.5, loss 0). Beside the
win rate stands the fit's own cross-validated accuracy on its picks (choice.py's CV of the chosen
model): the gap between them is what is lost between learning and showing.

Protocol (nothing is tuned on the held-out prompts):
  * training prompts: generation_judges.TRAIN_PROMPTS (40), in a random order per seed, cycled;
    held-out prompts: the first --held-out of generation_judges.HELD_OUT_PROMPTS.
  * turn t of seed s samples at chat's defaults (temperature 0.8, top-p 0.9) with seed
    1,000,003 s + 16 t (+1, +2, ... for further candidates), up to --max-tokens tokens.
  * a run (judge, strategy, seed) stops at the last checkpoint's picks or after --max-turns-factor
    times as many turns.
  * 95% intervals: a cluster bootstrap (seeds, then held-out prompts within a seed), 2,000 draws.

Resumable: each finished run is written to RUN/result.json atomically and skipped by a rerun; an
unfinished run starts again (its scores are in the score cache, its held-out answers in
generations.jsonl). Outputs under --out: results.json, results.md, learning_curves.png.

    python experiments/learning_loop.py --threads 1 --out /tmp/loop   # the default budget: short, 10 picks, ~13 min
    python experiments/learning_loop.py --threads 1 --judges short --strategies samples \\
        --checkpoints 0,6 --held-out 4 --max-tokens 24 --out /tmp/loop-tiny   # the test's budget
    python experiments/learning_loop.py --threads 1 --via openai --strategies samples --out /tmp/loop-openai
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import os
import secrets
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Optional

import numpy as np

from drift_cpp.errors import DriftError
from drift_cpp.fileio import atomic_write_text
import dsp_personas
from content_judges import content_summary
from generation_judges import (HELD_OUT_PROMPTS, JUDGE_DESCRIPTIONS, JUDGES, SMOKE_ATTRIBUTES, TRAIN_PROMPTS,
                               Answer, GenerationLog, compare, mean_word_length, n_list_lines, n_words)
from run_info import REPO, command_line, git_rev, log, run, write_results


# ---------------------------------------------------------------------------- simulated users
def judge_long(a: Answer) -> float:
    """More words is better; a cut answer is at least max_tokens long, so it beats any answer that ended."""
    return float(n_words(a.text)) if a.ended else math.inf


USERS = {**JUDGES, "long": judge_long, **dsp_personas.JUDGES}
USER_DESCRIPTIONS = {**JUDGE_DESCRIPTIONS, "long": "more words; a cut answer beats one that ended, two cut ones tie",
                     **dsp_personas.JUDGE_DESCRIPTIONS}
# A near-tie is skipped, as a person would: two lengths within 10% (one e-fold is 100%), mean word
# lengths within 0.1 letters, or the judge's own tie ('!' per sentence, list lines: equal counts).
NEAR_LOG_LENGTH, NEAR_WORD_LENGTH = 0.1, 0.1


def near_tie(user: str, a: Answer, b: Answer) -> bool:
    if not a.text.strip() or not b.text.strip() or compare(USERS[user], a, b) == 0.5:
        return True
    if user in dsp_personas.JUDGES:
        return dsp_personas.near_tie(user, a, b)
    if user in ("short", "long") and a.ended and b.ended:
        return abs(math.log1p(n_words(a.text)) - math.log1p(n_words(b.text))) < NEAR_LOG_LENGTH
    if user == "plain_words" and None not in (ma := mean_word_length(a.text), mb := mean_word_length(b.text)):
        return abs(ma - mb) < NEAR_WORD_LENGTH  # (a text without words loses, as the judge says)
    return False


def pick(user: str, a: Answer, b: Answer) -> Optional[int]:
    """1 or 2 by the user's judge; None: a near-tie, skipped."""
    return None if near_tie(user, a, b) else 1 if compare(USERS[user], a, b) == 1.0 else 2


# ---------------------------------------------------------------------------- statistics
def cluster_bootstrap(outcomes: list[list[float]], draws: int = 2000, seed: int = 0) -> tuple[float, float]:
    """95% percentile interval of the mean outcome: seeds drawn with replacement, then prompts within each."""
    rng = np.random.default_rng(seed)
    groups = [np.asarray(o, dtype=float) for o in outcomes if len(o)]
    if not groups:
        return (math.nan, math.nan)
    means = np.empty(draws)
    for d in range(draws):
        chosen = [groups[i] for i in rng.integers(0, len(groups), len(groups))]
        means[d] = np.mean(np.concatenate([g[rng.integers(0, len(g), len(g))] for g in chosen]))
    return float(np.percentile(means, 2.5)), float(np.percentile(means, 97.5))


# ---------------------------------------------------------------------------- the two ways in
VIAS = ("python", "openai")
# What the public API can ask: a personalized answer (the request's user) and plain samples (none).
OPENAI_STRATEGIES = ("personalized", "samples")


class InProcess:
    """--via python: chat's Learner and session in this process, as `drift-cpp chat --learn 1` runs them."""

    def __init__(self, loop: "Loop"):
        from drift_cpp.score.cache import ScoreCache
        from drift_cpp.score.scorer import Scorer
        from drift_cpp.steer.session import Drift

        self.loop, self.args = loop, loop.args
        self.scorer = Scorer(loop.slm, cache=ScoreCache(self.args.cache))  # chat's scorer: the default response tokens
        self.glog = GenerationLog(self.args.out / "generations.jsonl")
        self.plain_session = Drift(loop.llm_name, loop.llm_name, options=loop.options)

    def session(self, profile):
        """chat's session: plain decoding until the profile steers, plain beside it (compare) always."""
        from drift_cpp.fit import learning
        from drift_cpp.steer.session import Drift
        steering = profile if learning.steers(profile) else None
        return Drift(self.loop.llm_name, self.loop.slm_name, profile=steering, beta=self.args.beta,
                     options=self.loop.options, compare=True)

    def answers(self, profile, prompts: list[str], sampling, only_logged: bool = False) -> list[Optional[Answer]]:
        """Answers decoded by the profile (None: plain), each logged once in generations.jsonl
        (only_logged: None for an answer not in the log, nothing decoded)."""
        from drift_cpp.steer.session import Drift
        drift = self.plain_session if profile is None else Drift(
            self.loop.llm_name, self.loop.slm_name, profile=profile, beta=self.args.beta, options=self.loop.options)
        return [self.glog.generate(drift, q, sampling, self.loop.fingerprint, only_logged)[0] for q in prompts]

    def start(self, name: str, where: Path, strategy: str) -> Path:
        """A new run's profile, at its path (the folder `where` is new)."""
        from drift_cpp.steer.questions import Learner
        target = where / "profile.json"
        self.learner = Learner(target, lambda: self.scorer, self.loop.attributes, strategy, k=self.args.k)
        self.changes = self.learner.changes
        self.drift = self.session(None)
        return target

    def ask(self, history: list[dict], sampling):
        return self.learner.ask(self.drift, history, sampling)

    def record(self, question, chosen: int):
        """The profile after the pick; None: nothing learned (the same two texts, or a pair learned before)."""
        update = self.learner.record(question, chosen)
        if update is None or not update.changed:
            return None
        self.drift = self.session(update.profile)
        return update.profile

    def settled(self) -> Optional[int]:
        return self.learner.settled()

    def close(self) -> None:
        self.glog.close()


SERVER_START_S = 600     # the server loads its models before it answers: minutes on a busy machine
SERVER_TIMEOUT_S = 3600  # one request's answer, at one thread beside other jobs


class OverHttp:
    """--via openai: a `drift-cpp serve` of the harness's models, attributes and beta, and the simulated user
    talking to it through the official openai client only: chat completions for the answers (the profile's
    with `user`, plain without), /v1/preferences for the picks. Each run is a user of the server,
    PROFILES/<run>.json; the harness reads that file (and nothing else of the server) to freeze the profile."""

    def __init__(self, loop: "Loop"):
        import openai

        self.loop, args = loop, loop.args
        self.profiles = args.out / "profiles"
        self.profiles.mkdir(exist_ok=True)
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        key = secrets.token_hex(16)
        env = dict(os.environ)
        if args.cache is not None:  # the server keeps its scores in $DRIFT_CPP_CACHE/scores.sqlite
            env["DRIFT_CPP_CACHE"] = str(args.cache.parent)
        command = [sys.executable, "-m", "drift_cpp.cli", "--threads", str(args.threads), "serve",
                   "--profiles", str(self.profiles), "--port", str(port), "--api-key", key, "--beta", repr(args.beta)]
        command += [] if args.attributes == "all" else ["--include", args.attributes]
        command += [x for flag, name in (("--llm", loop.llm_name), ("--slm", loop.slm_name)) if name for x in (flag, name)]
        self.log_path = args.out / "server.log"
        with open(self.log_path, "w") as server_log:
            self.proc = subprocess.Popen(command, env=env, stdout=server_log, stderr=subprocess.STDOUT)
        self.client = openai.OpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key=key, max_retries=0,
                                    timeout=SERVER_TIMEOUT_S)
        deadline = time.monotonic() + SERVER_START_S
        while True:  # the server loads its models first
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.close()
                raise DriftError(f"drift-cpp serve did not start: {self.log_path.read_text()[-500:].strip()}")
            try:
                self.model = self.client.models.list().data[0].id
                break
            except openai.APIConnectionError:
                time.sleep(0.5)
        log(f"drift-cpp serve answers on port {port} (log: {self.log_path})")

    def _answer(self, messages: list[dict], sampling, user: Optional[str] = None) -> Answer:
        """One chat completion with the sampling's settings; no user: plain decoding."""
        reply = self.client.chat.completions.create(
            model=self.model, messages=messages, temperature=sampling.temperature, top_p=sampling.top_p,
            seed=sampling.seed, max_tokens=sampling.max_tokens, **({"user": user} if user else {}))
        choice = reply.choices[0]
        return Answer(choice.message.content, choice.finish_reason != "length")  # "length": cut

    def answers(self, profile, prompts: list[str], sampling) -> list[Answer]:
        """Answers by the run's profile on the server (None: plain), which is `profile` until the next pick."""
        user = None if profile is None else self.user
        return [self._answer([{"role": "user", "content": q}], sampling, user) for q in prompts]

    def start(self, name: str, where: Path, strategy: str) -> Path:
        from drift_cpp.fit import learning
        self.user, self.strategy, self.steers, self.changes = name, strategy, False, []
        self.target = self.profiles / f"{name}.json"
        for old in (self.target, learning.pairs_path(self.target)):  # an interrupted run's
            old.unlink(missing_ok=True)
        return self.target

    def ask(self, history: list[dict], sampling):
        """questions.ask's two answers, made by requests: the profile's against plain with one seed once it
        steers (personalized), else two plain samples with seeds s and s + 1."""
        from drift_cpp.steer.questions import Question
        if self.strategy == "personalized" and self.steers:
            two = (self._answer(history, sampling, self.user), self._answer(history, sampling))
            titles, strategy = ("1: personalized", "2: plain"), "personalized"
        else:
            two = tuple(self._answer(history, dataclasses.replace(sampling, seed=(sampling.seed + i) % 2**32))
                        for i in range(2))
            titles, strategy = ("1", "2"), "samples"
        return Question(history, (two[0].text, two[1].text), titles, strategy, None, (two[0].ended, two[1].ended))

    def record(self, question, chosen: int):
        """The pick posted to /v1/preferences; the profile after it, read back (None: nothing learned)."""
        from drift_cpp.fit import learning
        pair = question.pair(chosen)
        if pair is None:
            return None
        before = learning.load(self.target)
        body = {"user": self.user, "prompt": question.history, "chosen": pair.chosen, "rejected": pair.rejected}
        learned = self.client.post("/preferences", cast_to=object, body=body)["data"][0]
        if not learned["added"]:
            return None
        after = learning.load(self.target)
        self.changes.append((after.n_pairs, learning.change(before, after)))  # as Learner.record keeps them
        self.steers = learned["steering"]
        return after

    def settled(self) -> Optional[int]:
        from drift_cpp.steer.questions import Learner
        return Learner.settled(self)  # chat's rule, on this client's record of changes

    def close(self) -> None:
        self.proc.terminate()
        self.proc.wait(timeout=60)


# ---------------------------------------------------------------------------- one run
class Loop:
    """Models, the way in (--via), plain held-out answers and settings shared by every run."""

    def __init__(self, args):
        from drift_cpp.models import ModelOptions, load_model
        from drift_cpp.params import Sampling
        from drift_cpp.score.attributes import builtin_attributes

        self.args = args
        self.options = ModelOptions(threads=args.threads)
        self.llm_name, self.slm_name = args.llm or args.model, args.slm or args.model
        llm, self.slm = load_model(self.llm_name, self.options), load_model(self.slm_name, self.options)
        self.identity = {"llm": llm.identity, "slm": self.slm.identity}
        self.fingerprint = (self.slm.identity["sha256"] if llm.same_as(self.slm.identity)
                            else f"{llm.identity['sha256']}/{self.slm.identity['sha256']}")
        attrs = builtin_attributes()
        self.attributes = attrs if args.attributes == "all" else attrs.select(include=args.attributes.split(","))
        self.held_out = HELD_OUT_PROMPTS[: args.held_out]
        self.eval_sampling = Sampling(temperature=0.0, max_tokens=args.max_tokens)
        self.via = (InProcess if args.via == "python" else OverHttp)(self)
        try:
            self.plain = self.via.answers(None, self.held_out, self.eval_sampling)
        except BaseException:
            self.via.close()  # --via openai: no server left running
            raise
        log(f"held-out plain answers: {sum(a.ended for a in self.plain)} / {len(self.plain)} ended "
            f"before {args.max_tokens} tokens")

    def evaluate(self, user: str, profile) -> dict:
        """The frozen profile's greedy answers on the held-out prompts against plain decoding's."""
        answers = self.held_out_answers(profile)
        outcomes = [compare(USERS[user], a, p) for a, p in zip(answers, self.plain)]
        c = None if profile is None else profile.choice
        return {"outcomes": outcomes, "win_rate": float(np.mean(outcomes)),
                "ended": sum(a.ended for a in answers),
                "cv_accuracy": None if c is None else c.accuracy,
                "family": None if c is None else list(c.family),
                "length_weight": None if profile is None else profile.length_weight(),
                "steering": [] if profile is None else [[a.id, w] for a, w in profile.decoding_weights()]
                if profile.uses_attributes() else [],
                "example": {"prompt": self.held_out[0], "answer": answers[0].text},
                "content": self.content(answers)}

    def held_out_answers(self, profile, only_logged: bool = False) -> list[Optional[Answer]]:
        from drift_cpp.fit import learning
        if not learning.steers(profile):  # it decodes plain: the same answers, all ties
            return self.plain
        if only_logged:  # fill_content's, --via python only
            return self.via.answers(profile, self.held_out, self.eval_sampling, only_logged=True)
        return self.via.answers(profile, self.held_out, self.eval_sampling)

    def content(self, answers: list[Answer]) -> dict:
        """Loops, echoes and empty answers (and facts, on prompts with required words): the steering checks' judges."""
        return content_summary(self.held_out, [a.text for a in answers], [p.text for p in self.plain])

    def fill_content(self, result: dict) -> None:
        """The content judges for a run finished before they were recorded, from its frozen profiles' answers
        in the generation log; a checkpoint whose answers are not there (decoded by an older decoding) stays
        without, for decoding them today would judge other answers than the win rate did."""
        from drift_cpp.fit.profile import Profile
        if self.args.via != "python":
            return
        frozen = self.args.out / "runs" / run_name(result["user"], result["strategy"], result["seed"], self.args.via) / "frozen"
        for k, c in result["checkpoints"].items():
            if "content" not in c:
                answers = self.held_out_answers(Profile.load(frozen / f"profile-{k}.json") if k != "0" else None, True)
                if None not in answers:
                    c["content"] = self.content(answers)

    def run(self, user: str, strategy: str, seed: int) -> dict:
        from drift_cpp.params import Sampling

        args = self.args
        name = run_name(user, strategy, seed, args.via)
        where = args.out / "runs" / name
        done = where / "result.json"
        settings = {k: getattr(args, k) for k in ("max_tokens", "held_out", "beta", "k", "max_turns_factor", "checkpoints")}
        settings |= {"attributes": list(self.attributes.ids), "models": self.fingerprint}
        settings |= {} if args.via == "python" else {"via": args.via}  # python runs keep their settings of before
        if done.exists():
            finished = json.loads(done.read_text("utf-8"))
            if finished.get("settings") != settings:
                raise DriftError(f"{done} was made with other settings ({finished.get('settings')}): use another --out")
            return finished
        if where.exists():  # an interrupted run starts again
            shutil.rmtree(where)
        (where / "frozen").mkdir(parents=True)
        target = self.via.start(name, where, strategy)
        checkpoints = sorted(set(args.checkpoints))
        order = np.random.default_rng(seed).permutation(len(TRAIN_PROMPTS))
        max_turns = args.max_turns_factor * max(checkpoints[-1], 1)
        result = {"user": user, "strategy": strategy, "seed": seed, "settings": settings,
                  "profile": str(target.relative_to(args.out)), "checkpoints": {}, "picks": []}
        if checkpoints[0] == 0:
            result["checkpoints"]["0"] = self.evaluate(user, None)
        turn, skipped, t0 = 0, 0, time.monotonic()
        while len(result["picks"]) < checkpoints[-1] and turn < max_turns:
            prompt = TRAIN_PROMPTS[order[turn % len(order)]]
            sampling = Sampling(max_tokens=args.max_tokens, seed=(1_000_003 * seed + 16 * turn) % 2**32)
            asked = time.perf_counter()
            question = self.via.ask([{"role": "user", "content": prompt}], sampling)
            asked = time.perf_counter() - asked
            turn += 1
            chosen = pick(user, *(Answer(t, e) for t, e in zip(question.answers, question.ended)))
            if chosen is None:
                skipped += 1
                continue
            started = time.perf_counter()
            profile = self.via.record(question, chosen)
            seconds = time.perf_counter() - started
            if profile is None:  # the same two texts, or a pair learned before
                skipped += 1
                continue
            n, change = profile.n_pairs, self.via.changes[-1][1]
            result["picks"].append({"turn": turn, "asked": question.strategy, "margin": question.margin,
                                    "ask_seconds": asked, "record_seconds": seconds, "change": change,
                                    "settled": self.via.settled(), "cv_accuracy": profile.choice.accuracy,
                                    "length_weight": profile.length_weight()})
            log(f"  [{user}/{strategy}/s{seed}] pick {n} at turn {turn} ({skipped} skipped), recorded in "
                f"{seconds:.1f} s, change {change}")
            if str(n) in map(str, checkpoints):
                shutil.copy(target, where / "frozen" / f"profile-{n}.json")
                result["checkpoints"][str(n)] = self.evaluate(user, profile)
                log(f"  [{user}/{strategy}/s{seed}] {n} picks: win rate {result['checkpoints'][str(n)]['win_rate']:.2f}"
                    f", CV accuracy {profile.choice.accuracy}")
        result.update(turns=turn, skipped=skipped, seconds=time.monotonic() - t0,
                      settled=next((p["settled"] for p in result["picks"] if p["settled"]), None))
        atomic_write_text(done, json.dumps(result, indent=1, ensure_ascii=False) + "\n")
        return result


def run_name(user: str, strategy: str, seed: int, via: str) -> str:
    """A run's folder (and, --via openai, its user on the server): the via named, so no rerun mixes them."""
    return f"{user}-{strategy}-s{seed}" + ("" if via == "python" else f"-{via}")


# ---------------------------------------------------------------------------- report
def summarize(runs: list[dict], users, strategies, checkpoints) -> dict:
    table = {}
    for u in users:
        for s in strategies:
            rows = {}
            for c in checkpoints:
                got = [r["checkpoints"][str(c)] for r in runs if r["user"] == u and r["strategy"] == s
                       and str(c) in r["checkpoints"]]
                if not got:
                    continue
                outcomes = [g["outcomes"] for g in got]
                cv = [g["cv_accuracy"] for g in got if g["cv_accuracy"] is not None]
                win = float(np.mean(np.concatenate(outcomes)))
                rows[str(c)] = {"win_rate": win, "ci95": cluster_bootstrap(outcomes), "seeds": len(got),
                                "cv_accuracy": float(np.mean(cv)) if cv else None,
                                "gap": float(np.mean(cv)) - win if cv else None,
                                "answers": sum(len(o) for o in outcomes),
                                **{f"degenerate_{w}": sum(g["content"][f"degenerate_{w}"] for g in got)
                                   for w in ("steered", "plain") if all("content" in g for g in got)}}
            mine = [r for r in runs if r["user"] == u and r["strategy"] == s]
            if rows:
                picks = [p for r in mine for p in r["picks"]]
                table[f"{u}/{s}"] = {
                    "user": u, "strategy": s, "checkpoints": rows,
                    "turns": sum(r["turns"] for r in mine), "skipped": sum(r["skipped"] for r in mine),
                    "record_seconds_median": float(np.median([p["record_seconds"] for p in picks])) if picks else None,
                    "settled": [r["settled"] for r in mine]}
    return table


def _cell(row: Optional[dict]) -> str:
    if row is None:
        return "–"
    lo, hi = row["ci95"]
    return f"{row['win_rate']:.2f} [{lo:.2f}, {hi:.2f}]"


def _by_checkpoint(table: dict, cps, title: str, heading: str, cell) -> list[str]:
    """A table of one cell per (user, strategy) and checkpoint after 0 picks; cell(row) None: "–"."""
    ks = [k for k in cps if k]
    out = ["", title, "", "| user | strategy | " + " | ".join(f"{k} {heading}" for k in ks) + " |",
           "|---|---|" + "---|" * len(ks)]
    for row in table.values():
        cells = []
        for k in ks:
            r = row["checkpoints"].get(str(k))
            cells.append((r is not None and cell(r)) or "–")
        out.append(f"| {row['user']} | {row['strategy']} | " + " | ".join(cells) + " |")
    return out


def markdown(results: dict) -> str:
    c, table = results["config"], results["summary"]
    cps = c["checkpoints"]
    out = ["# Learning from picks, end to end (issue 25)", "",
           f"- command: `{results['command']}`", f"- git rev: `{results['git_rev']}`",
           f"- via: {c.get('via', 'python')}", f"- models: LLM {results['models']['llm']['name']}, sLM {results['models']['slm']['name']}",
           f"- {len(c['attributes'])} attributes ({', '.join(c['attributes'])}), beta {c['beta']}, answers up to "
           f"{c['max_tokens']} tokens, {c['held_out']} held-out prompts (greedy), seeds {c['seeds']}",
           f"- held-out plain answers that ended before {c['max_tokens']} tokens: {results['plain_ended']} / {c['held_out']}",
           f"- time: {results['seconds']:.0f} s (of the runs)",
           "- record s: learning.add's time per pick, scoring included; a pair scored before (by an earlier run, "
           "or by the active strategy's question) is read from the score cache", "",
           "Win rate of the frozen profile's answers over plain decoding's on the held-out prompts (tie 0.5), "
           "with a 95% cluster-bootstrap interval over seeds and prompts:", "",
           "| user | strategy | " + " | ".join(f"{k} picks" for k in cps) + " | turns (skipped) | record s (median) | settled at |",
           "|---|---|" + "---|" * len(cps) + "---|---|---|"]
    for row in table.values():
        out.append(f"| {row['user']} | {row['strategy']} | " + " | ".join(_cell(row["checkpoints"].get(str(k))) for k in cps)
                   + f" | {row['turns']} ({row['skipped']}) | {row['record_seconds_median'] or 0:.1f} | "
                   + ", ".join(str(s) if s else "–" for s in row["settled"]) + " |")
    out += _by_checkpoint(table, cps, "Transfer: the fit's cross-validated accuracy on its own picks beside the win "
                          "rate of its answers (gap = CV − win):", "picks: CV / win / gap",
                          lambda r: None if r["cv_accuracy"] is None else
                          f"{r['cv_accuracy']:.2f} / {r['win_rate']:.2f} / {r['gap']:+.2f}")
    out += _by_checkpoint(table, cps, "Degenerate held-out answers (a loop, an echo of the prompt, or no words; "
                          "content_judges.py), personalized / plain, of all answers:", "picks",
                          lambda r: f"{r['degenerate_steered']} / {r['degenerate_plain']} of {r['answers']}"
                          if "degenerate_steered" in r else None)
    if results.get("plot"):
        out += ["", f"![learning curves; below, how much each pick moved the profile]({results['plot']})"]
    out += ["", "Users: " + "; ".join(f"`{u}`: {USER_DESCRIPTIONS[u]}" for u in c["users"]) + "."]
    return "\n".join(out) + "\n"


PLOT = "learning_curves.png"


def plot(results: dict, path: Path) -> bool:
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    from drift_cpp.fileio import save_figure
    users = results["config"]["users"]
    fig, axes = plt.subplots(2, len(users), figsize=(3.6 * len(users), 6.4), squeeze=False, sharey="row")
    colors = {s: f"C{i}" for i, s in enumerate(results["config"]["strategies"])}
    for ax, u in zip(axes[1], users):  # each pick's change (fit/learning.change): the profile settling
        for r in (r for r in results["runs"] if r["user"] == u):
            xs = [i + 1 for i, p in enumerate(r["picks"]) if p["change"]]
            ax.plot(xs, [p["change"] for p in r["picks"] if p["change"]], marker=".", color=colors[r["strategy"]],
                    alpha=0.7, label=f"{r['strategy']} s{r['seed']}")
        ax.set_yscale("log")
        ax.set_xlabel("picks")
    axes[1][0].set_ylabel("change made by the pick")
    axes[1][-1].legend(fontsize=7)
    for ax, u in zip(axes[0], users):
        for j, row in enumerate(r for r in results["summary"].values() if r["user"] == u):
            ks = sorted(int(k) for k in row["checkpoints"])
            rows = [row["checkpoints"][str(k)] for k in ks]
            ys = [r["win_rate"] for r in rows]
            err = [[y - r["ci95"][0] for y, r in zip(ys, rows)], [r["ci95"][1] - y for y, r in zip(ys, rows)]]
            ax.errorbar([k + 0.3 * j for k in ks], ys, yerr=err, marker="o", capsize=3, label=row["strategy"])  # apart
        ax.axhline(0.5, color="gray", linestyle="--", linewidth=1)
        ax.set_title(u)
        ax.set_ylim(0, 1.05)
    axes[0][0].set_ylabel("win rate over plain (held-out)")
    axes[0][-1].legend(fontsize=8)
    fig.tight_layout()
    save_figure(fig, path, dpi=120)
    plt.close(fig)
    return True


# ---------------------------------------------------------------------------- main
def _ints(text: str) -> list[int]:
    return [int(x) for x in text.split(",") if x.strip()]


def parse(argv=None):
    from drift_cpp.steer.questions import STRATEGIES
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", type=Path, default=REPO / "experiments" / "results" / "learning_loop")
    ap.add_argument("--users", "--judges", dest="users", default="short",
                    help=f"simulated users (judges), comma-separated, of {', '.join(USERS)}")
    ap.add_argument("--strategies", default="personalized",
                    help=f"question strategies, comma-separated, of {', '.join(STRATEGIES)}")
    ap.add_argument("--seeds", type=_ints, default=[0], help="seeds, comma-separated")
    ap.add_argument("--checkpoints", type=_ints, default=[0, 5, 10], help="picks at which the profile is frozen")
    ap.add_argument("--held-out", type=int, default=4, help="held-out prompts (of 20)")
    # SmolLM2 rarely ends an answer: at 96 tokens the short user found 3 decisive pairs in 33 turns, at 192 10 in 33.
    ap.add_argument("--max-tokens", type=int, default=192, help="tokens per answer, in the loop and held out")
    ap.add_argument("--max-turns-factor", type=int, default=4, help="turns allowed per pick of the last checkpoint")
    ap.add_argument("--attributes", default=",".join(SMOKE_ATTRIBUTES),
                    help="attribute ids the profiles score (comma-separated), or 'all' (41; slow)")
    ap.add_argument("--beta", type=float, default=0.5)
    ap.add_argument("--k", type=int, default=4, help="candidates the active strategy draws")
    ap.add_argument("--cache", type=Path, default=None,
                    help="score cache (default: drift-cpp's); --via openai: DIR/scores.sqlite, the server's")
    ap.add_argument("--model", default=None)
    ap.add_argument("--llm", default=None)
    ap.add_argument("--slm", default=None)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--via", choices=VIAS, default="python",
                    help="python: chat's Learner in this process; openai: a drift-cpp serve, through the openai client")
    ap.add_argument("--report", action="store_true", help="write the report from the finished runs; run nothing")
    args = ap.parse_args(argv)
    args.users, args.strategies = args.users.split(","), args.strategies.split(",")
    if bad := [u for u in args.users if u not in USERS]:
        raise DriftError(f"--users: unknown {', '.join(bad)} (choose from {', '.join(USERS)})")
    if bad := [s for s in args.strategies if s not in STRATEGIES]:
        raise DriftError(f"--strategies: unknown {', '.join(bad)} (choose from {', '.join(STRATEGIES)})")
    if args.via == "openai" and (bad := [s for s in args.strategies if s not in OPENAI_STRATEGIES]):
        raise DriftError(f"--strategies {','.join(bad)}: no request of the public API asks it (--via openai takes "
                         f"{', '.join(OPENAI_STRATEGIES)})")
    if args.via == "openai" and args.cache is not None and args.cache.name != "scores.sqlite":
        raise DriftError(f"--cache {args.cache}: the server keeps its scores in DIR/scores.sqlite; name the file so")
    if not args.checkpoints or min(args.checkpoints) < 0 or not 1 <= args.held_out <= len(HELD_OUT_PROMPTS):
        raise DriftError("--checkpoints must be >= 0 and --held-out within 1..20")
    return args


def main(argv=None) -> int:
    args = parse(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    made = args.out / "results.json"
    if made.exists() and (was := json.loads(made.read_text("utf-8"))["config"].get("via", "python")) != args.via:
        raise DriftError(f"{args.out} holds runs made --via {was}: give --via {args.via} another --out")
    command, rev, t0 = command_line(__file__, argv), git_rev(), time.monotonic()
    loop = Loop(args)
    runs = []
    try:
        for seed in args.seeds:  # seed-major: a cut-short run still has every user and strategy once
            for user in args.users:
                for strategy in args.strategies:
                    done = args.out / "runs" / run_name(user, strategy, seed, args.via) / "result.json"
                    if args.report:
                        if done.exists():
                            runs.append(json.loads(done.read_text("utf-8")))
                            loop.fill_content(runs[-1])
                        continue
                    log(f"run {user}/{strategy}/seed {seed} via {args.via}")
                    runs.append(loop.run(user, strategy, seed))
    finally:
        loop.via.close()  # --via openai: the server stops
    seconds = sum(r["seconds"] for r in runs) if args.report else time.monotonic() - t0  # the runs' own time
    results = {"command": command, "git_rev": rev, "models": loop.identity, "seconds": seconds,
               "plain_ended": sum(a.ended for a in loop.plain),
               "config": {"via": args.via, "users": args.users, "strategies": args.strategies, "seeds": args.seeds,
                          "checkpoints": sorted(set(args.checkpoints)), "held_out": args.held_out,
                          "max_tokens": args.max_tokens, "max_turns_factor": args.max_turns_factor,
                          "attributes": list(loop.attributes.ids), "beta": args.beta, "k": args.k,
                          "near_log_length": NEAR_LOG_LENGTH, "near_word_length": NEAR_WORD_LENGTH},
               "summary": summarize(runs, args.users, args.strategies, sorted(set(args.checkpoints))),
               "runs": runs}
    if plot(results, args.out / PLOT):
        results["plot"] = PLOT
    report = markdown(results)
    write_results(args.out, results, report)
    log(f"wrote {args.out / 'results.md'}")
    print(report)
    return 0


if __name__ == "__main__":
    run(main)
