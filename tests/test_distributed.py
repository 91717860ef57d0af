"""Many workers on one study (``autopipe worker``): no configuration is evaluated twice, every
trial is accounted for, and a killed worker's trial is failed by heartbeat, re-run, and does
not block anyone meanwhile.

Run with ``.venv/bin/pytest -m distributed``. The PostgreSQL tests read
``AUTOPIPE_TEST_POSTGRES_URL`` (``.ci/postgres.sh start`` starts a server and prints one) and
skip without it.
"""

from __future__ import annotations

import contextlib
import itertools
import logging
import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from datetime import datetime, timedelta
from pathlib import Path

import numpy as np
import optuna
import pytest
from distributed_objective import CHOICES, SEARCH_SPACE, score
from optuna.distributions import CategoricalDistribution
from optuna.storages import BaseStorage, JournalStorage
from optuna.storages.journal import JournalFileBackend
from optuna.trial import FrozenTrial, TrialState, create_trial

from optuna_autopipe.candidates import config_key
from optuna_autopipe.corpus import Corpus, DatasetRuns
from optuna_autopipe.early_stop import PRIOR_SCORE_ATTR
from optuna_autopipe.ensemble import TreeParams
from optuna_autopipe.prior import fit_prior
from optuna_autopipe.profile import DatasetProfile
from optuna_autopipe.sampler import CLAIM_ATTR, AutoPipeSampler
from optuna_autopipe.worker import open_storage

pytestmark = pytest.mark.distributed

POSTGRES_URL = os.environ.get("AUTOPIPE_TEST_POSTGRES_URL")
needs_postgres = pytest.mark.skipif(
    not POSTGRES_URL,
    reason="AUTOPIPE_TEST_POSTGRES_URL is not set (`.ci/postgres.sh start` starts a server and "
    "prints one)",
)
TESTS = Path(__file__).resolve().parent
FINISHED = (TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL)


@pytest.fixture(scope="module")
def prior_args(tmp_path_factory: pytest.TempPathFactory) -> list[str]:
    """``--prior DIR --dataset-profile FILE``: a prior fitted on 4 synthetic datasets over the
    objective's space (meta-feature ``size``), and the new dataset's profile."""
    rng = np.random.default_rng(0)
    products = itertools.product(*CHOICES.values())
    grid = [dict(zip(CHOICES, values, strict=True)) for values in products]
    datasets = []
    for i in range(4):
        configs = [grid[j] for j in rng.choice(len(grid), size=120, replace=False)]
        scores = [score(c) * (1 + 0.2 * i) + rng.normal(0, 0.1) for c in configs]
        datasets.append(DatasetRuns(f"d{i}", "maximize", {"size": float(i)}, configs, scores))
    prior = fit_prior(Corpus(dict(SEARCH_SPACE), datasets), grid=[TreeParams(n_estimators=30)])
    folder = tmp_path_factory.mktemp("prior")
    prior.save(folder)
    profile = folder / "profile.json"
    profile.write_text(DatasetProfile(name="new", features={"size": 1.5}).to_json())
    return ["--prior", str(folder), "--dataset-profile", str(profile)]


@pytest.fixture(params=["journal", pytest.param("postgresql", marks=needs_postgres)])
def shared(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[tuple[str, str]]:
    """(storage URL or journal path, study name) of a new maximising study; deleted after."""
    url = str(tmp_path / "journal.log") if request.param == "journal" else str(POSTGRES_URL)
    name = f"test-{uuid.uuid4().hex[:10]}"
    optuna.create_study(study_name=name, storage=_reader(url), direction="maximize")
    yield url, name
    optuna.delete_study(study_name=name, storage=_reader(url))


def _reader(url: str) -> BaseStorage | str:
    """The storage as the test reads it (no heartbeat: the test process runs no trial)."""
    return url if "://" in url else JournalStorage(JournalFileBackend(url))


def _trials(url: str, name: str) -> list[FrozenTrial]:
    return optuna.load_study(study_name=name, storage=_reader(url)).get_trials()


@pytest.fixture
def start() -> Iterator[Callable[..., subprocess.Popen]]:
    """``start(url, study, log, *args)``: ``autopipe worker`` in a new process (``tests/``
    importable, torch on one thread, output in ``log``); any still running at the end is killed."""
    started: list[subprocess.Popen] = []
    path = [str(TESTS), *filter(None, [os.environ.get("PYTHONPATH")])]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(path), "OMP_NUM_THREADS": "1"}

    def launch(url: str, name: str, log: Path, *args: str) -> subprocess.Popen:
        command = [sys.executable, "-m", "optuna_autopipe.cli", "worker", "--storage", url]
        with log.open("w") as out:
            started.append(
                subprocess.Popen(
                    [*command, "--study", name, *args],
                    cwd=TESTS.parent,
                    env=env,
                    stdout=out,
                    stderr=subprocess.STDOUT,
                )
            )
        return started[-1]

    yield launch
    for worker in started:
        if worker.poll() is None:
            worker.kill()
            worker.wait()


def _join(workers: Sequence[subprocess.Popen], logs: Sequence[Path], timeout: float) -> None:
    """Wait for every worker; fail with the logs of any that failed or hung."""
    deadline = time.monotonic() + timeout
    for worker in workers:
        try:
            worker.wait(max(deadline - time.monotonic(), 0.1))
        except subprocess.TimeoutExpired:
            worker.kill()
            worker.wait()
    bad = [(w.returncode, log) for w, log in zip(workers, logs, strict=True) if w.returncode != 0]
    assert not bad, "\n\n".join(f"exit {rc}, {log}:\n{log.read_text()[-3000:]}" for rc, log in bad)


def _ran(log: Path) -> int:
    """The number of trials a worker reports it ran."""
    return int(log.read_text().rsplit(": ran ", 1)[1].split()[0])


def _key(trial: FrozenTrial) -> str:
    return config_key({name: trial.params[name] for name in SEARCH_SPACE})


def _assert_accounted_for_without_duplicates(trials: Sequence[FrozenTrial]) -> None:
    assert all(t.state in FINISHED for t in trials), [t.state for t in trials]
    keys = [_key(t) for t in trials if t.state != TrialState.FAIL]
    assert len(set(keys)) == len(keys), sorted(k for k in keys if keys.count(k) > 1)


def _peak_concurrency(trials: Sequence[FrozenTrial]) -> int:
    """The most trials that were running at one moment."""
    events = sorted(
        [(t.datetime_start, 1) for t in trials] + [(t.datetime_complete, -1) for t in trials],
        key=lambda e: (e[0], e[1]),
    )
    return max(itertools.accumulate(step for _, step in events))


# --- 1. many workers, one study ---------------------------------------------------------


def test_eight_workers_run_64_trials_without_a_duplicate(shared, prior_args, start, tmp_path):
    """8 processes × 8 trials on a 360-point grid, with a prior: 64 distinct configurations,
    each chosen (claimed) by the sampler, run by all 8 workers at once."""
    url, name = shared
    args = ["--objective", "distributed_objective:objective", "--n-trials", "8", *prior_args]
    logs = [tmp_path / f"worker{i}.log" for i in range(8)]
    workers = [start(url, name, log, *args, "--budget", "64", "--seed", "0") for log in logs]
    _join(workers, logs, timeout=150)

    trials = _trials(url, name)
    assert len(trials) == 64
    assert [_ran(log) for log in logs] == [8] * 8
    assert all(t.state == TrialState.COMPLETE for t in trials)  # the objective never fails
    _assert_accounted_for_without_duplicates(trials)
    assert all(t.user_attrs[CLAIM_ATTR] == _key(t) for t in trials)
    assert len({t.user_attrs["pid"] for t in trials}) == 8
    assert _peak_concurrency(trials) >= 3  # the workers really raced
    assert {t.user_attrs["autopipe:phase"] for t in trials} == {"warm-start", "bo"}
    assert len({t.user_attrs[PRIOR_SCORE_ATTR] for t in trials}) > 1  # the prior scored them


# --- 2. a worker dies -------------------------------------------------------------------


@needs_postgres
def test_a_killed_worker_s_trial_fails_by_heartbeat_and_is_rerun(prior_args, start, tmp_path):
    """SIGKILL a worker inside a trial: the others keep starting trials while the dead one is
    still RUNNING, its heartbeat goes stale and it ends FAIL, its configuration is re-queued
    and run once, a restarted worker tops the study up to --max-trials, and every trial that
    was COMPLETE before the kill is unchanged."""
    url, name = str(POSTGRES_URL), f"test-fault-{uuid.uuid4().hex[:10]}"
    study = optuna.create_study(study_name=name, storage=url, direction="maximize")
    args = [
        "--objective",
        "distributed_objective:slow_objective",
        *prior_args,
        "--budget",
        "12",
        "--heartbeat-interval",
        "1",
        "--grace-period",
        "3",
        "--max-retry",
        "1",
    ]
    logs = {}
    for i in range(3):
        log = tmp_path / f"worker{i}.log"
        logs[start(url, name, log, *args, "--n-trials", "4")] = log
    pids = {worker.pid: worker for worker in logs}

    deadline = time.monotonic() + 60
    while True:  # two trials done and a third with at least 0.5 s of its objective left
        trials = study.get_trials()
        running = [
            t
            for t in trials
            if t.state == TrialState.RUNNING
            and t.user_attrs.get("busy_until", 0) > time.time() + 0.5
            and t.user_attrs["pid"] in pids
        ]
        if sum(t.state == TrialState.COMPLETE for t in trials) >= 2 and running:
            break
        assert time.monotonic() < deadline, [t.state for t in trials]
        time.sleep(0.1)
    doomed = running[0]
    victim = pids[doomed.user_attrs["pid"]]
    victim.send_signal(signal.SIGKILL)
    victim.wait()
    killed_at = datetime.now()
    assert study.get_trials()[doomed.number].state == TrialState.RUNNING
    before = {t.number: (t.value, t.params) for t in study.get_trials() if t.value is not None}

    survivors = [worker for worker in logs if worker is not victim]
    survivor_logs = [logs[worker] for worker in survivors]
    _join(survivors, survivor_logs, timeout=60)
    assert [_ran(log) for log in survivor_logs] == [4, 4]

    # the restarted worker starts once the dead trial is past its grace period
    time.sleep(max(0.0, 4 - (datetime.now() - killed_at).total_seconds()))
    restart_log = tmp_path / "restarted.log"
    restarted = start(url, name, restart_log, *args, "--max-trials", "12")
    _join([restarted], [restart_log], timeout=60)
    assert _ran(restart_log) >= 1

    trials = study.get_trials()
    dead = trials[doomed.number]
    assert dead.state == TrialState.FAIL
    assert dead.datetime_complete - killed_at > timedelta(seconds=1.9)  # grace 3 s, beats 1 s
    started_meanwhile = [t for t in trials if killed_at < t.datetime_start < dead.datetime_complete]
    assert started_meanwhile  # nobody waited for the dead worker
    (retry,) = [t for t in trials if t.system_attrs.get("failed_trial") == doomed.number]
    # compared with the dead trial as read now: `doomed` was read while its worker was still
    # writing, and PostgreSQL can serve its params and its attrs from different moments
    assert retry.state == TrialState.COMPLETE and retry.params == dead.params
    assert sum(t.state == TrialState.COMPLETE for t in trials) == 12
    assert len(trials) == 13  # 12 complete + the dead one
    _assert_accounted_for_without_duplicates(trials)
    assert {n: (trials[n].value, trials[n].params) for n in before} == before
    optuna.delete_study(study_name=name, storage=url)


# --- 3. a dead worker's claim ------------------------------------------------------------

SMALL = {"a": CategoricalDistribution(("p", "q", "r")), "b": CategoricalDistribution((1, 2))}
SMALL_GRID = [{"a": a, "b": b} for a, b in itertools.product(("p", "q", "r"), (1, 2))]


def _small(trial: optuna.Trial) -> float:
    config = {name: trial.suggest_categorical(name, dist.choices) for name, dist in SMALL.items()}
    return "pqr".index(config["a"]) + config["b"]


def _beat(storage: BaseStorage, trial_id: int, dies: threading.Event) -> None:
    """A worker's heartbeat thread: every 0.5 s until the worker dies."""
    while not dies.wait(0.5):
        storage.record_heartbeat(trial_id)  # type: ignore[attr-defined]


@pytest.mark.parametrize(
    "backend", ["sqlite", pytest.param("postgresql", marks=needs_postgres), "journal"]
)
def test_a_dead_worker_s_claim_blocks_only_until_its_trial_fails(backend, tmp_path, caplog):
    """A worker claims one of the last two free configurations, keeps its heartbeat while a
    live worker takes the other one, then dies. Once its trial is failed (heartbeat past the
    grace period; by hand on a journal, which has no heartbeat) the live worker's next trial
    takes the dead worker's configuration."""
    if backend == "journal":
        storage: BaseStorage = JournalStorage(JournalFileBackend(str(tmp_path / "journal.log")))
    else:
        url = f"sqlite:///{tmp_path / 'study.db'}" if backend == "sqlite" else str(POSTGRES_URL)
        storage = open_storage(url, heartbeat_interval=1, grace_period=3, max_retry=0)
    name = f"test-claim-{uuid.uuid4().hex[:10]}"
    sampler = AutoPipeSampler(seed=0, search_space=SMALL, n_startup=0)
    study = optuna.create_study(
        study_name=name, storage=storage, sampler=sampler, direction="maximize"
    )
    for config in SMALL_GRID[:4]:
        study.add_trial(create_trial(params=config, distributions=SMALL, value=0.0))
    with pytest.warns(UserWarning) if backend != "journal" else contextlib.nullcontext():
        dead = study.ask()  # Optuna warns: a heartbeat storage outside optimize
    _small(dead)
    held = config_key(dead.params)
    assert dead.user_attrs[CLAIM_ATTR] == held
    dies = threading.Event()
    if backend != "journal":  # the dead worker's heartbeat, until it dies
        storage.record_heartbeat(dead._trial_id)  # type: ignore[attr-defined]
        beat = threading.Thread(target=_beat, args=(storage, dead._trial_id, dies), daemon=True)
        beat.start()

    live = optuna.load_study(
        study_name=name, storage=storage, sampler=AutoPipeSampler(seed=1, search_space=SMALL)
    )
    live.optimize(_small, n_trials=1)
    assert config_key(live.trials[-1].params) != held  # the claim holds while the trial runs

    dies.set()
    if backend == "journal":
        other = JournalStorage(JournalFileBackend(str(tmp_path / "journal.log")))
        optuna.load_study(study_name=name, storage=other).tell(dead.number, state=TrialState.FAIL)
    else:
        beat.join()
        time.sleep(4.5)  # past the 3 s grace period (SQLite's clock has 1 s steps)
    with caplog.at_level(logging.WARNING, logger="optuna_autopipe.sampler"):
        live.optimize(_small, n_trials=1)
    trials = live.get_trials()
    assert trials[dead.number].state == TrialState.FAIL
    assert config_key(trials[-1].params) == held
    assert "proposes the best one again" not in caplog.text  # a free choice, no fallback
    assert sorted(config_key(t.params) for t in trials if t.state == TrialState.COMPLETE) == sorted(
        config_key(c) for c in SMALL_GRID
    )
    optuna.delete_study(study_name=name, storage=storage)


# --- 4. many conflicts in a row ----------------------------------------------------------


def test_a_worker_beaten_to_its_choice_many_times_still_takes_a_free_configuration(monkeypatch):
    """Other workers claim each of its next 100 choices first (more than the 64 tries after
    which the sampler used to fall back to its first, held, choice): it still returns a
    configuration nobody held when it checked."""
    checked: list[str] = []

    def held_by_another(cls, study, trial, space, key: str) -> bool:
        checked.append(key)
        return len(checked) <= 100

    monkeypatch.setattr(AutoPipeSampler, "_held_by_another", classmethod(held_by_another))
    study = optuna.create_study(sampler=AutoPipeSampler(seed=0, search_space=SEARCH_SPACE))
    trial = study.ask()
    config = {name: trial.suggest_categorical(name, values) for name, values in CHOICES.items()}
    assert len(checked) == len(set(checked)) == 101
    assert config_key(config) == checked[-1] == trial.user_attrs[CLAIM_ATTR]
