"""Leave-one-dataset-out benchmark: every (dataset, method, seed) is one Optuna study.

Studies run in worker processes on in-memory storage and are then written, trials and all,
into one storage (default ``sqlite:///OUT/bench.db``) under the name
``<benchmark>/<dataset>/<method>/seed<k>`` (protocol ``grouped``, no prior noise) or
``<benchmark>/<tag>/<dataset>/<method>/seed<k>`` for any other setting (``BenchSpec.tag``:
``lodo``, ``single-source``, ``few-source-2``, ``grouped+inverted``, ...), so settings share
one storage without colliding and optuna-dashboard shows them side by side. Methods that
learn nothing from other datasets (``methods.PROTOCOL_FREE``: random, tpe, gp, ...) keep the
first name under every setting: their studies do not depend on it, so they run once.
A study's outcome is stored in its user attr ``bench`` (written last), which is also what
makes a run resumable: studies that have it are skipped, half-written ones are redone.
"""

from __future__ import annotations

import contextlib
import logging
import math
import multiprocessing
import os
import signal
import threading
import time
from collections.abc import Iterator, Sequence
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any

import optuna
import torch
from tqdm import tqdm

from objectives.registry import Benchmark, Protocol, load_benchmark
from objectives.replay import stable_seed
from optuna_autopipe import notes
from optuna_autopipe.bench import peer_env
from optuna_autopipe.bench.job_failures import JobFailure, StudiesFailed
from optuna_autopipe.bench.methods import (
    PROTOCOL_FREE,
    Context,
    get_method,
    method_revision,
    method_settings,
)
from optuna_autopipe.bench.prior_noise import check_mode
from optuna_autopipe.bench.report import Outputs, write_outputs
from optuna_autopipe.recommend import open_storage, shown_url

_logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class BenchSpec:
    """What to run. ``datasets=None`` means every dataset of the benchmark."""

    benchmark: str
    methods: Sequence[str]
    out: Path
    budget: int = 15
    seeds: int = 5
    datasets: Sequence[str] | None = None
    protocol: Protocol = "grouped"
    storage: str | None = None
    data_dir: str | None = None
    noise_sd: float = 1.0
    workers: int = field(default_factory=lambda: os.cpu_count() or 1)
    #: K of the ``few-source`` protocol (``Benchmark.offline``).
    sources: int = 2
    #: Distortion of the ranking prior (``prior_noise.PRIOR_NOISE``).
    prior_noise: str = "none"

    @property
    def storage_url(self) -> str:
        return self.storage or f"sqlite:///{self.out / 'bench.db'}"

    @property
    def tag(self) -> str:
        """The setting's name: the protocol (``few-source-K``), then ``+noise`` if any."""
        protocol = f"few-source-{self.sources}" if self.protocol == "few-source" else self.protocol
        return protocol if self.prior_noise == "none" else f"{protocol}+{self.prior_noise}"


@dataclass(frozen=True)
class Job:
    spec: BenchSpec
    dataset: str
    method: str
    seed: int

    @property
    def study_name(self) -> str:
        shared = self.spec.tag == "grouped" or self.method in PROTOCOL_FREE
        setting = "" if shared else f"{self.spec.tag}/"
        return f"{self.spec.benchmark}/{setting}{self.dataset}/{self.method}/seed{self.seed}"


def run_bench(spec: BenchSpec) -> Outputs:
    """Run every missing study of ``spec``, then write results.csv, summary.md and the plot.

    Raises:
        ValueError: a bad setting, storage (``recommend.open_storage``) or finished study
            (``_finished``).
        FileNotFoundError: missing benchmark data, storage, or peers' environment.
        peer_env.PeerEnvironmentError: the peers' environment cannot run jobs.
        StudiesFailed: some studies failed; every other one is stored.
        BenchInterrupted: Ctrl-C; says how many studies are stored (a rerun resumes).
    """
    if spec.budget < 1 or spec.seeds < 1:
        raise ValueError(f"--budget and --seeds must be >= 1, got {spec.budget} and {spec.seeds}.")
    away = [method for method in spec.methods if peer_env.remote(method)]
    for method in spec.methods:
        if method not in away:
            get_method(method)
    if away:
        peer_env.check_peers_python()  # names `make peers` when it is missing or broken
    check_mode(spec.prior_noise)
    benchmark = _benchmark(spec.benchmark, spec.data_dir, spec.noise_sd)
    datasets = list(spec.datasets or [t.name for t in benchmark.tasks])
    for dataset in datasets:
        benchmark.offline(dataset, spec.protocol, sources=spec.sources)  # names a bad setting
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    if spec.storage is None:  # the default storage lives in the output folder
        spec.out.mkdir(parents=True, exist_ok=True)
    storage = open_storage(spec.storage_url, create=True)
    jobs = [Job(spec, d, m, s) for d in datasets for m in spec.methods for s in range(spec.seeds)]
    done = _finished(storage, jobs)
    spec.out.mkdir(parents=True, exist_ok=True)
    todo = [job for job in jobs if job.study_name not in done]
    started = time.perf_counter()
    failed: list[tuple[Job, JobFailure]] = []
    stored = len(jobs) - len(todo)
    workers_before = set(multiprocessing.active_children())
    with (
        tqdm(total=len(jobs), initial=stored, desc="studies", unit="study") as bar,
        _fixed_hash_seed(),
        _interrupt_flag() as interrupted,
        ProcessPoolExecutor(
            max_workers=max(1, spec.workers),
            mp_context=multiprocessing.get_context("spawn"),
            initializer=_leave_interrupts_to_the_parent,
        ) as pool,
    ):
        # One dataset's studies per task: a worker fits that fold's prior once (cached).
        by_dataset = [[job for job in todo if job.dataset == d] for d in datasets]
        pending = {pool.submit(run_jobs, g) for g in by_dataset if g}
        while pending and not interrupted.is_set():
            ended, pending = wait(pending, timeout=0.5, return_when=FIRST_COMPLETED)
            for task in ended:
                for job, result in task.result():
                    if isinstance(result, JobFailure):
                        failed.append((job, result))
                        continue
                    _store(storage, job, *result)
                    stored += 1
                    bar.update()
        if interrupted.is_set():
            pool.shutdown(wait=False, cancel_futures=True)
            for worker in set(multiprocessing.active_children()) - workers_before:
                worker.terminate()  # its running studies were never stored
            raise BenchInterrupted(
                f"interrupted: {stored} of {len(jobs)} studies stored in "
                f"{shown_url(spec.storage_url)}; rerun the same command to resume."
            ) from None
    if failed:
        raise StudiesFailed(sorted(failed, key=lambda failure: jobs.index(failure[0])))
    wall = time.perf_counter() - started
    return write_outputs(storage, benchmark, jobs, spec, wall_seconds=wall)


def _finished(storage: optuna.storages.BaseStorage, jobs: list[Job]) -> set[str]:
    """Names of the jobs' studies already finished in ``storage``.

    Raises:
        ValueError: a finished study was run by another revision of its method, or with
            other outside settings (an LLM's model), or under another budget or observation
            noise than this run's: its results describe another experiment; names the
            studies and the fix.
    """
    wanted = {job.study_name: job for job in jobs}
    done, stale = set(), []
    for summary in optuna.get_all_study_summaries(storage, include_best_trial=False):
        record = summary.user_attrs.get("bench")
        if record is None or summary.study_name not in wanted:
            continue
        done.add(summary.study_name)
        job = wanted[summary.study_name]
        stored = (record.get("revision", 1), record.get("settings", {}))
        now = (method_revision(job.method), method_settings(job.method))
        if stored != now:
            stale.append(
                (summary.study_name, f"{_describe(stored)}, {job.method!r} is at {_describe(now)}")
            )
        for key, value in _run_settings(job.spec).items():
            # a record written before the harness stored a setting cannot be checked on it
            if record.get(key, value) != value:
                stale.append(
                    (summary.study_name, f"run with {key} {record[key]}, this run asks for {value}")
                )
    if stale:
        listed = "\n".join(f"  {name}: {reason}" for name, reason in stale[:10])
        more = f"\n  ... and {len(stale) - 10} more" if len(stale) > 10 else ""
        n = len({name for name, _ in stale})
        raise ValueError(
            f"{n} finished {'study' if n == 1 else 'studies'} in this storage were run by "
            "another revision or settings of their method, or under another budget or "
            f"noise:\n{listed}{more}\nRead as current, "
            "they would report another experiment's results. Use a new --storage (or --out), "
            "or delete those studies (optuna delete-study --study-name NAME --storage URL) to "
            "rerun them."
        )
    return done


def _run_settings(spec: BenchSpec) -> dict[str, float]:
    """The run's settings a finished study must share to be reused (stored in its record)."""
    return {"budget": spec.budget, "noise_sd": spec.noise_sd}


def _describe(version: tuple[int, dict]) -> str:
    """``revision R`` of a method, with its outside settings when it has any."""
    revision, settings = version
    return f"revision {revision}" + (f" with settings {settings}" if settings else "")


class BenchInterrupted(KeyboardInterrupt):
    """Ctrl-C stopped the run; the message says how many studies are stored, and where."""


@contextlib.contextmanager
def _interrupt_flag() -> Iterator[threading.Event]:
    """Ctrl-C sets the yielded event instead of raising ``KeyboardInterrupt`` wherever the
    main thread happens to be: raised inside a garbage-collection callback (SQLAlchemy's),
    Python prints and drops it, and the run went on (seen in CI). Off the main thread,
    where no handler can be set, the event is never set. The previous handler is restored.
    """
    interrupted = threading.Event()
    if threading.current_thread() is not threading.main_thread():
        yield interrupted
        return
    previous = signal.signal(signal.SIGINT, lambda signum, frame: interrupted.set())
    try:
        yield interrupted
    finally:
        signal.signal(signal.SIGINT, previous)


def _leave_interrupts_to_the_parent() -> None:
    """A worker's initializer: Ctrl-C reaches the whole process group, and only the parent
    handles it (once, ending the workers). The worker's handler does nothing rather than
    ``SIG_IGN``, which a child of the worker (the peers' Python) would inherit and outlive
    the run with; a handled signal is reset to its default in a child."""
    signal.signal(signal.SIGINT, lambda signum, frame: None)


@contextlib.contextmanager
def _fixed_hash_seed() -> Iterator[None]:
    """Start worker processes with ``PYTHONHASHSEED=0``.

    SMAC's suggestions depend on Python's per-process string-hash seed (measured: the same
    seed gives different trials under different ``PYTHONHASHSEED``), so workers are spawned
    with a fixed one to make every study reproducible. The caller's environment is restored.
    """
    previous = os.environ.get("PYTHONHASHSEED")
    os.environ["PYTHONHASHSEED"] = "0"
    try:
        yield
    finally:
        if previous is None:
            del os.environ["PYTHONHASHSEED"]
        else:
            os.environ["PYTHONHASHSEED"] = previous


@cache
def _benchmark(name: str, data_dir: str | None, noise_sd: float) -> Benchmark:
    return load_benchmark(name, data_dir=data_dir, noise_sd=noise_sd)


def run_jobs(jobs: list[Job]) -> list[tuple[Job, tuple[Any, ...] | JobFailure]]:
    """Run ``jobs`` (one dataset's); those of peers this environment lacks run in the peers'
    environment (``peer_env``), in one call. A job that raises gives its ``JobFailure``, so
    the others' studies are kept."""
    away = [job for job in jobs if peer_env.remote(job.method)]
    results: list[tuple[Job, tuple[Any, ...] | JobFailure]] = []
    for job in jobs:
        if job not in away:
            try:
                results.append((job, _run_job(job)))
            except Exception:  # reported with the other failures by run_bench
                results.append((job, JobFailure.current()))
    if away:
        try:
            results += peer_env.run_remote(away)
        except Exception:  # every job sent there failed with it
            failure = JobFailure.current()
            results += [(job, failure) for job in away]
    return results


def _run_job(
    job: Job,
) -> tuple[list[optuna.trial.FrozenTrial], str, dict[str, Any], tuple[str, dict[int, str]]]:
    """Run one study in this process; return its trials, direction, outcome record and
    dashboard notes (``notes.read_all``)."""
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    torch.set_num_threads(1)  # one worker per core: torch's own threads would oversubscribe
    spec = job.spec
    benchmark = _benchmark(spec.benchmark, spec.data_dir, spec.noise_sd)
    ctx = Context(
        task=benchmark.task(job.dataset),
        offline=benchmark.offline(
            job.dataset, spec.protocol, replicate=job.seed, sources=spec.sources
        ),
        seed=stable_seed(job.dataset, job.seed),
        budget=spec.budget,
        evaluations={},
        study_name=job.study_name,
        prior_noise=spec.prior_noise,
    )
    study = get_method(job.method)(ctx)
    record = outcome(study, ctx, protocol=spec.protocol)
    return study.trials, ctx.task.direction, record, notes.read_all(study)


def outcome(study: optuna.Study, ctx: Context, *, protocol: str) -> dict[str, Any]:
    """A study's result: the selected configuration, its true score, cost and trajectory.

    The selection is the best observed value among full-fidelity (COMPLETE) trials, or, if
    no trial reached full fidelity (``full_fidelity`` False), the best finite observed value
    among the runs at the furthest level any run reached: the most recorded steps (NMT
    checkpoints, LCBench epochs, post-training RL rungs), not the largest share of a run,
    which would favour the configurations whose runs are shortest.
    ``trajectory`` holds ``[cumulative cost, true score of the selection so far]`` after
    every evaluation (``None`` before the first full-fidelity result). ``sources`` names the
    offline datasets the method could learn from (``;``-separated); ``study_attrs`` are the
    method's study user attrs (e.g. ``autopipe:signal_agreement``).
    """
    task, evaluations = ctx.task, ctx.evaluations
    better = max if task.direction == "maximize" else min
    trajectory, cost, cost_real, incumbent = [], 0.0, 0.0, None
    for number in sorted(evaluations):
        evaluation = evaluations[number]
        cost += evaluation.cost
        cost_real += evaluation.cost_real
        if evaluation.fidelity >= 1.0:
            incumbent = better(
                [i for i in (incumbent, evaluation) if i is not None], key=lambda e: e.value
            )
        trajectory.append([cost, None if incumbent is None else incumbent.true_score])
    full = incumbent is not None
    if incumbent is None:
        seen = [e for e in evaluations.values() if math.isfinite(e.value)]
        furthest = max(len(e.steps) for e in seen or evaluations.values())
        incumbent = better(
            [e for e in seen or evaluations.values() if len(e.steps) == furthest],
            key=lambda e: e.value,
        )
    return {
        "selected": incumbent.config,
        "score": incumbent.true_score,
        "full_fidelity": full,
        "cost": cost,
        "cost_real": cost_real,
        "cost_unit": task.cost_unit,
        "n_evals": len(evaluations),
        "best_evaluated": better(e.true_score for e in evaluations.values()),
        "trajectory": trajectory,
        "protocol": protocol,
        "sources": ";".join(t.name for t in ctx.offline),
        "n_sources": len(ctx.offline),
        "prior_noise": ctx.prior_noise,
        "budget": ctx.budget,
        "sampler_seed": ctx.seed,
        "study_attrs": dict(study.user_attrs),
    }


def _store(
    storage: optuna.storages.BaseStorage,
    job: Job,
    trials: list[optuna.trial.FrozenTrial],
    direction: str,
    record: dict[str, Any],
    study_notes: tuple[str, dict[int, str]],
) -> None:
    """Write one finished study into the shared storage; the ``bench`` attr goes last."""
    with contextlib.suppress(KeyError):
        optuna.delete_study(study_name=job.study_name, storage=storage)
    study = optuna.create_study(
        storage=storage,
        study_name=job.study_name,
        direction=direction,
        sampler=optuna.samplers.RandomSampler(),  # never samples; no before_trial effects
    )
    study.add_trials(trials)
    notes.write_all(study, *study_notes)
    for key, value in (
        ("benchmark", job.spec.benchmark),
        ("dataset", job.dataset),
        ("method", job.method),
        ("seed", job.seed),
    ):
        study.set_user_attr(key, value)
    study.set_user_attr(
        "bench",
        {
            **record,
            **_run_settings(job.spec),
            "revision": method_revision(job.method),
            "settings": method_settings(job.method),
        },
    )
