"""A cheap, deterministic objective over a 360-point categorical grid, for the worker tests
(``autopipe worker --objective distributed_objective:objective`` with ``tests/`` on the path).

Before it sleeps, each trial records the worker's pid and when the sleep ends (user attrs
``pid``, ``busy_until``, epoch seconds), so that a test can kill a worker inside a trial.
"""

from __future__ import annotations

import os
import time
from typing import Any

import optuna
from optuna.distributions import CategoricalDistribution

CHOICES: dict[str, tuple[Any, ...]] = {
    "optimizer": ("adamw", "sgd", "lion", "adafactor", "rmsprop", "adagrad"),
    "lr": (1e-5, 3e-5, 1e-4, 3e-4, 1e-3),
    "rank": (4, 8, 16, 32),
    "schedule": ("cosine", "linear", "constant"),
}  # 6 · 5 · 4 · 3 = 360 configurations
SEARCH_SPACE = {name: CategoricalDistribution(values) for name, values in CHOICES.items()}


def score(config: dict[str, Any]) -> float:
    """Higher is better; every configuration has its own value."""
    return (
        CHOICES["optimizer"].index(config["optimizer"]) * 1.0
        - abs(CHOICES["lr"].index(config["lr"]) - 2) * 0.7
        + CHOICES["rank"].index(config["rank"]) * 0.13
        + CHOICES["schedule"].index(config["schedule"]) * 0.011
    )


def _run(trial: optuna.Trial, seconds: float) -> float:
    config = {name: trial.suggest_categorical(name, values) for name, values in CHOICES.items()}
    trial.set_user_attr("pid", os.getpid())
    trial.set_user_attr("busy_until", time.time() + seconds)
    time.sleep(seconds)
    return score(config)


def objective(trial: optuna.Trial) -> float:
    """Sleeps 80 ms, so that workers overlap."""
    return _run(trial, 0.08)


def slow_objective(trial: optuna.Trial) -> float:
    """Sleeps 1.5 s, long enough to kill the worker while the trial runs."""
    return _run(trial, 1.5)
