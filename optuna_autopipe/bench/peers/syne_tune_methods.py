"""Syne Tune 0.13 peers: ``mobster``, ``hyper-tune`` and ``asha-cts``.

- ``mobster``: MOBSTER (Klein et al., 2020), asynchronous Hyperband with a Gaussian-process
  searcher over configuration and level (``syne_tune.optimizer.baselines.MOBSTER``).
- ``hyper-tune``: Hyper-Tune (Li et al., 2022), the same with its bracket distribution and
  multi-level GP ensemble (``baselines.HyperTune``).
- ``asha-cts``: ASHA with the quantile-based transfer searcher (Salinas et al., 2020, CTS):
  Thompson samples of a surrogate fitted on the offline datasets' pools (their final scores,
  at most ``CTS_ROWS`` per dataset); the target's own results act only through ASHA's
  promotions. ``baselines.ASHACTS`` fails in 0.13 (``points_to_evaluate`` passed twice), so
  the scheduler is built from its parts as the baseline would.

All three are promotion-type (a paused run resumes at its next rung, paying only the added
levels), rungs at levels 1, 3, 9, ... (η = 3) up to ``n_steps``, seeded with ``random_seed``,
duplicates allowed (a finite space does not end a study early). Driven through the scheduler
API (``suggest``, ``on_trial_add``, ``on_trial_result``, ``on_trial_remove``,
``on_trial_complete``), no Tuner, no backend.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable
from datetime import datetime
from typing import Any

import numpy as np
import optuna
import pandas as pd
from optuna.distributions import (
    BaseDistribution,
    CategoricalDistribution,
    FloatDistribution,
    IntDistribution,
)
from syne_tune.backend.trial_status import Trial
from syne_tune.config_space import (
    choice,
    lograndint,
    loguniform,
    ordinal,
    randint,
    uniform,
)
from syne_tune.optimizer.baselines import MOBSTER, HyperTune
from syne_tune.optimizer.scheduler import SchedulerDecision, TrialScheduler
from syne_tune.optimizer.schedulers import HyperbandScheduler
from syne_tune.optimizer.schedulers.transfer_learning import TransferLearningTaskEvaluations
from syne_tune.optimizer.schedulers.transfer_learning.quantile_based.quantile_based_searcher import (  # noqa: E501
    QuantileBasedSurrogateSearcher,
)

from optuna_autopipe.bench.methods import Context, register
from optuna_autopipe.bench.peers.driver import (
    Proposal,
    drive,
    ordered_numbers,
    peer_space,
    task_config,
)

#: The constant holding the highest level (Syne Tune's ``max_resource_attr``), and the
#: reported level's key (``resource_attr``).
MAX_LEVEL, LEVEL = "autopipe_max_level", "autopipe_level"
METRIC = "score"
#: Offline runs per dataset the CTS surrogate is fitted on (a fixed subsample of its pool).
CTS_ROWS = 2000


def syne_tune_space(space: dict[str, BaseDistribution]) -> dict[str, Any]:
    """Syne Tune domains for an Optuna search space: increasing numeric categoricals as
    ordinals, other categoricals as choices, ints and floats as (log-)uniform ranges."""
    domains: dict[str, Any] = {}
    for name, dist in peer_space(space).items():
        if isinstance(dist, CategoricalDistribution):
            choices = list(dist.choices)
            domains[name] = (
                ordinal(choices, kind="equal") if ordered_numbers(dist) else choice(choices)
            )
        elif isinstance(dist, IntDistribution):
            domains[name] = (lograndint if dist.log else randint)(dist.low, dist.high)
        elif isinstance(dist, FloatDistribution):
            domains[name] = (loguniform if dist.log else uniform)(dist.low, dist.high)
        else:
            raise ValueError(f"Parameter {name!r}: no Syne Tune domain for {dist}.")
    return domains


class SchedulerPeer:
    """A Syne Tune scheduler as a ``driver.Peer``. A run is ``(trial id, resumes so far)``;
    the scheduler's PAUSE or STOP ends it, a later suggestion for the same trial id resumes
    it."""

    def __init__(self, scheduler: TrialScheduler, ctx: Context) -> None:
        self.scheduler = scheduler
        self.space = ctx.task.search_space
        self.levels = ctx.task.n_steps
        self.trials: dict[int, Trial] = {}
        self.runs: dict[int, tuple[int, int]] = {}  # trial id -> its latest key
        self.decided: set[Hashable] = set()  # runs the scheduler stopped or paused

    def ask(self) -> Proposal:
        suggestion = self.scheduler.suggest(len(self.trials))
        if suggestion is None:
            raise RuntimeError("Syne Tune proposed nothing (duplicates are allowed).")
        if suggestion.spawn_new_trial_id:
            trial_id = len(self.trials)
            trial = Trial(
                trial_id=trial_id, config=dict(suggestion.config), creation_time=datetime.now()
            )
            self.trials[trial_id] = trial
            self.scheduler.on_trial_add(trial)
            resume = None
        else:
            trial_id = suggestion.checkpoint_trial_id
            trial = self.trials[trial_id]
            if suggestion.config is not None:
                trial.config = dict(suggestion.config)
            resume = self.runs[trial_id]
        key = (trial_id, 0 if resume is None else resume[1] + 1)
        self.runs[trial_id] = key
        config = task_config(self.space, trial.config)
        return Proposal(key=key, config=config, resume=resume)

    def on_step(self, key: Hashable, level: int, value: float) -> bool:
        decision = self._report(key, level, value)
        if decision in (SchedulerDecision.STOP, SchedulerDecision.PAUSE):
            self.decided.add(key)
            return False
        return True

    def tell(self, key: Hashable, level: int, value: float) -> None:
        trial = self.trials[key[0]]  # type: ignore[index]
        if key in self.decided:
            self.scheduler.on_trial_remove(trial)
            return
        # the run ended by itself (its last level), which the pruner does not ask about
        self._report(key, level, value)
        self.scheduler.on_trial_complete(trial, self._result(level, value))

    def _result(self, level: int, value: float) -> dict[str, Any]:
        return {LEVEL: level, METRIC: value, MAX_LEVEL: self.levels}

    def _report(self, key: Hashable, level: int, value: float) -> SchedulerDecision:
        trial = self.trials[key[0]]  # type: ignore[index]
        return self.scheduler.on_trial_result(trial, self._result(level, value))


def _seed(ctx: Context) -> int:
    return ctx.seed % 2**31  # Syne Tune takes seeds below 2^31


def _common(ctx: Context) -> dict[str, Any]:
    return {
        "metric": METRIC,
        "mode": "max" if ctx.task.direction == "maximize" else "min",
        "resource_attr": LEVEL,
        "max_resource_attr": MAX_LEVEL,
        "type": "promotion",
        "random_seed": _seed(ctx),
    }


def _space(ctx: Context) -> dict[str, Any]:
    return {**syne_tune_space(ctx.task.search_space), MAX_LEVEL: ctx.task.n_steps}


def transfer_evaluations(ctx: Context) -> dict[str, TransferLearningTaskEvaluations]:
    """The offline datasets' pools as Syne Tune transfer data: per dataset at most
    ``CTS_ROWS`` configurations (a fixed subsample) with their final score, shape
    ``(n, 1 seed, 1 level, 1 objective)``."""
    domains = syne_tune_space(ctx.task.search_space)
    evaluations = {}
    for task in ctx.offline:
        configs, scores = task.pool()
        rows = np.random.default_rng(0).permutation(len(configs))[:CTS_ROWS]
        table = pd.DataFrame([configs[i] for i in rows])[list(domains)]
        evaluations[task.name] = TransferLearningTaskEvaluations(
            configuration_space=domains,
            hyperparameters=table,
            objectives_names=[METRIC],
            objectives_evaluations=np.asarray(scores)[rows].reshape(-1, 1, 1, 1),
        )
    return evaluations


def _asha_cts(ctx: Context) -> TrialScheduler:
    common = _common(ctx)
    searcher = QuantileBasedSurrogateSearcher(
        config_space=syne_tune_space(ctx.task.search_space),  # without the level constant
        metric=METRIC,
        mode=common["mode"],
        transfer_learning_evaluations=transfer_evaluations(ctx),
        random_seed=_seed(ctx),
    )
    return HyperbandScheduler(_space(ctx), searcher=searcher, **common)


def _method(make: Callable[[Context], TrialScheduler]) -> Callable[[Context], optuna.Study]:
    def run(ctx: Context) -> optuna.Study:
        return drive(ctx, SchedulerPeer(make(ctx), ctx))

    return run


_DUPLICATES = {"allow_duplicates": True}
register("mobster")(
    _method(lambda ctx: MOBSTER(_space(ctx), search_options=_DUPLICATES, **_common(ctx)))
)
register("hyper-tune")(
    _method(lambda ctx: HyperTune(_space(ctx), search_options=_DUPLICATES, **_common(ctx)))
)
register("asha-cts")(_method(_asha_cts))
