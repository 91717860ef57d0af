"""``autopipe worker``: one process of a study shared by many workers (machines, GPUs).

Every worker loads the same study, builds its own ``AutoPipeSampler`` and runs trials until its
own ``n_trials`` or the study-wide ``max_trials`` is reached. The sampler claims each
configuration on its trial and moves on when another running trial holds it, so workers do not
duplicate work and never wait on each other.

Storage: a URL with ``://`` is an RDB (PostgreSQL across machines), opened with a heartbeat: a
worker that dies leaves a RUNNING trial whose heartbeat stops; after ``grace_period`` seconds
the next worker to start a trial marks it FAIL and re-queues its configuration (up to
``max_retry`` times) as a WAITING trial that the next free worker runs. Anything else is a
journal file (``JournalFileBackend``, one host). Optuna 5's ``JournalStorage`` has no heartbeat:
a dead worker's trial stays RUNNING and its configuration stays excluded until it is failed by
hand (``study.tell(number, state=TrialState.FAIL)``).
"""

from __future__ import annotations

import importlib
import os
import sys
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import optuna
from optuna.distributions import BaseDistribution
from optuna.storages import (
    BaseStorage,
    JournalStorage,
    RDBStorage,
    RetryHeartbeatStaleTrialCallback,
)
from optuna.storages.journal import JournalFileBackend
from optuna.study import MaxTrialsCallback
from optuna.trial import TrialState

from optuna_autopipe.prior import Prior
from optuna_autopipe.profile import DatasetProfile
from optuna_autopipe.sampler import AutoPipeSampler

COUNTED = (TrialState.COMPLETE, TrialState.PRUNED)  # what --max-trials counts


def open_storage(
    url: str, *, heartbeat_interval: int = 60, grace_period: int | None = None, max_retry: int = 3
) -> BaseStorage:
    """An RDB storage with heartbeat and retry for a URL, else a journal file storage.

    ``grace_period`` defaults to twice ``heartbeat_interval`` (Optuna's default).
    """
    if max_retry < 0:
        raise ValueError(f"max_retry must be >= 0, got {max_retry}")
    if "://" not in url:
        return JournalStorage(JournalFileBackend(url))
    return RDBStorage(
        url,
        heartbeat_interval=heartbeat_interval,
        grace_period=grace_period,
        heartbeat_stale_trial_callback=RetryHeartbeatStaleTrialCallback(max_retry=max_retry),
    )


def import_object(spec: str) -> Any:
    """``package.module:name`` → the object (the current directory is importable)."""
    module_name, sep, name = spec.partition(":")
    if not sep or not module_name or not name:
        raise ValueError(f"expected MODULE:NAME (e.g. my_project.train:objective), got {spec!r}")
    if os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())
    try:
        target = importlib.import_module(module_name)
    except ImportError as exc:
        raise ValueError(f"cannot import {module_name!r} from {spec!r}: {exc}") from exc
    for part in name.split("."):
        if not hasattr(target, part):
            raise ValueError(f"{module_name!r} has no attribute {name!r}")
        target = getattr(target, part)
    return target


def run_worker(
    storage: BaseStorage,
    study_name: str,
    objective: Callable[[optuna.Trial], Any],
    *,
    prior: Prior | None = None,
    profile: DatasetProfile | None = None,
    search_space: Mapping[str, BaseDistribution] | None = None,
    n_trials: int | None = None,
    max_trials: int | None = None,
    budget: int | None = None,
    seed: int | None = None,
) -> int:
    """Run trials of an existing study until ``n_trials`` (this worker) or ``max_trials``
    (COMPLETE + PRUNED in the whole study) is reached; returns the trials this worker ran.

    With ``max_trials`` the study can overshoot by up to one trial per other worker (each
    worker finishes the trial it is running). ``budget`` (the sampler's λ/κ schedule) defaults
    to ``max_trials``, else ``n_trials``.
    """
    if n_trials is None and max_trials is None:
        raise ValueError("give --n-trials (per worker) or --max-trials (study-wide), or both")
    sampler = AutoPipeSampler(
        prior,
        profile,
        budget=budget or max_trials or n_trials,  # type: ignore[arg-type]
        seed=seed,
        search_space=search_space,
    )
    try:
        study = optuna.load_study(study_name=study_name, storage=storage, sampler=sampler)
    except KeyError as exc:
        raise ValueError(
            f"no study {study_name!r} in this storage: create it once first, e.g. "
            "optuna.create_study(study_name=..., storage=..., direction=...)"
        ) from exc
    ran: list[int] = []
    callbacks = [lambda _study, trial: ran.append(trial.number)]
    if max_trials is not None:
        if len(study.get_trials(deepcopy=False, states=COUNTED)) >= max_trials:
            return 0
        callbacks.append(MaxTrialsCallback(max_trials, states=COUNTED))
    study.optimize(objective, n_trials=n_trials, callbacks=callbacks)
    return len(ran)


def worker_main(
    storage_url: str,
    study_name: str,
    objective_spec: str,
    *,
    prior_dir: str | None = None,
    profile_path: str | None = None,
    search_space_spec: str | None = None,
    n_trials: int | None = None,
    max_trials: int | None = None,
    budget: int | None = None,
    seed: int | None = None,
    heartbeat_interval: int = 60,
    grace_period: int | None = None,
    max_retry: int = 3,
) -> int:
    """``autopipe worker``: open everything from its command-line form and run the worker."""
    objective = import_object(objective_spec)
    if not callable(objective):
        raise ValueError(f"{objective_spec!r} is not callable")
    storage = open_storage(
        storage_url,
        heartbeat_interval=heartbeat_interval,
        grace_period=grace_period,
        max_retry=max_retry,
    )
    space = import_object(search_space_spec) if search_space_spec else None
    if space is not None and not isinstance(space, Mapping):
        raise ValueError(f"{search_space_spec!r} is not a mapping of parameter distributions")
    profile = None
    if profile_path is not None:
        profile = DatasetProfile.from_json(Path(profile_path).read_text(), source=profile_path)
    return run_worker(
        storage,
        study_name,
        objective,
        prior=Prior.load(prior_dir) if prior_dir is not None else None,
        profile=profile,
        search_space=space,
        n_trials=n_trials,
        max_trials=max_trials,
        budget=budget,
        seed=seed,
    )
