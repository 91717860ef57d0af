"""Replays of recorded HPO data: one ``ReplayTask`` per dataset of a benchmark.

A task answers, for any configuration of its search space:

- ``curve(config, rng)``: the learning curve a run of it would show (observed, possibly noisy),
  its cumulative real cost, and its noise-free final score (for regret only);
- ``evaluate(config, fraction, rng)``: a run stopped after ``ceil(fraction * n_steps)`` steps,
  the same prefix for every configuration of the dataset (never a fraction of a run's own,
  outcome-dependent length);
- ``objective(...)``: the same as an Optuna objective, reporting the curve as intermediate
  values (so pruners work) and recording fidelity and cost on the trial.
"""

from __future__ import annotations

import abc
import logging
import math
import zlib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
import optuna
from optuna.distributions import BaseDistribution

from optuna_autopipe.dynamics import TrainingDynamics
from optuna_autopipe.early_stop import CHECKPOINT_ATTR, AutoPipeEarlyStop, resume_checkpoint
from optuna_autopipe.space import suggest

if TYPE_CHECKING:
    from optuna_autopipe.regressor import EarlyStopRegressor

_logger = logging.getLogger(__name__)

Config = dict[str, Any]


@dataclass(frozen=True)
class Curve:
    """A run's observed learning curve.

    Attributes:
        values: observed metric after each step, shape ``(n,)``.
        costs: cumulative real cost after each step, shape ``(n,)``, non-decreasing.
        true_score: noise-free final score of the configuration (hidden from methods).
        config: the configuration the curve belongs to (after any nearest-neighbour mapping).
        extras: other metrics the run logged after each step, each shape ``(n,)``.
    """

    values: np.ndarray
    costs: np.ndarray
    true_score: float
    config: Config
    extras: Mapping[str, np.ndarray] = field(default_factory=dict)


@dataclass(frozen=True)
class Evaluation:
    """The result of running a configuration up to some fidelity.

    ``value`` is what a method sees (the observed score at the fidelity reached);
    ``true_score`` is the configuration's noise-free final score, for regret only.
    ``cost`` is in full-run equivalents of this configuration, ``cost_real`` in the
    benchmark's real unit.
    """

    config: Config
    steps: np.ndarray
    value: float
    true_score: float
    fidelity: float
    cost: float
    cost_real: float


class BudgetExhausted(optuna.TrialPruned):
    """Raised inside an objective when the study's cost budget runs out mid-run."""


class ReplayTask(abc.ABC):
    """One dataset of a recorded benchmark."""

    benchmark: str
    name: str
    direction: Literal["minimize", "maximize"]
    cost_unit: str
    #: How a curve becomes a score: its best point (``"best"``) or its last (``"last"``).
    reduce: Literal["best", "last"]
    #: Name of the curve's metric in recorded training dynamics.
    metric: str

    @property
    @abc.abstractmethod
    def search_space(self) -> dict[str, BaseDistribution]:
        """The Optuna search space of this dataset."""

    @property
    @abc.abstractmethod
    def n_steps(self) -> int:
        """Nominal training length in steps (the unit of early-stop prefixes and pruning)."""

    @property
    @abc.abstractmethod
    def dataset_features(self) -> dict[str, float]:
        """Dataset meta-features known before any training (NaN where unknown)."""

    @abc.abstractmethod
    def curve(self, config: Mapping[str, Any], rng: np.random.Generator) -> Curve:
        """The learning curve of one (possibly noisy) run of ``config``."""

    @abc.abstractmethod
    def pool(self) -> tuple[list[Config], np.ndarray]:
        """Reference pool: configurations and their noise-free final scores, shape ``(n,)``."""

    @abc.abstractmethod
    def true_score(self, config: Mapping[str, Any]) -> float:
        """Noise-free final score of ``config`` (after any nearest-neighbour mapping)."""

    def curves(self, configs: Sequence[Mapping[str, Any]], rng: np.random.Generator) -> list[Curve]:
        """One run's curve per configuration (overridden where a batch is faster)."""
        return [self.curve(c, rng) for c in configs]

    def dynamics(self, curve: Curve) -> TrainingDynamics:
        """The training dynamics a run with ``curve`` logs: every metric after each step."""
        series = {self.metric: curve.values, **curve.extras}
        metrics = {
            name: [[step, float(v)] for step, v in enumerate(values, 1)]
            for name, values in series.items()
        }
        return TrainingDynamics(total_steps=self.n_steps, metrics=metrics)

    def run_dynamics(
        self, configs: Sequence[Mapping[str, Any]], *, seed: int
    ) -> list[TrainingDynamics]:
        """The dynamics of one observed run of each configuration (noise seeded by ``seed``)."""
        rng = np.random.default_rng(stable_seed(self.benchmark, self.name, "dynamics", seed))
        return [self.dynamics(curve) for curve in self.curves(configs, rng)]

    def resolve(self, config: Mapping[str, Any]) -> Config:
        """The configuration a run of ``config`` actually uses (identity unless overridden)."""
        return {name: config[name] for name in self.search_space}

    def true_scores(self, configs: list[Config]) -> np.ndarray:
        """Noise-free final scores of several configurations, shape ``(n,)``."""
        return np.array([self.true_score(c) for c in configs])

    def sign(self) -> float:
        """+1 when higher scores are better, -1 otherwise."""
        return 1.0 if self.direction == "maximize" else -1.0

    def score_of(self, values: np.ndarray) -> float:
        """Reduce an observed curve prefix to the score a method sees."""
        if self.reduce == "last":
            return float(values[-1])
        return float(values.max() if self.direction == "maximize" else values.min())

    def prefix_steps(self, fraction: float) -> int:
        """Number of steps in an early-stop prefix: ``ceil(fraction * n_steps)``, at least 1."""
        if not 0.0 < fraction <= 1.0:
            raise ValueError(f"fraction must be in (0, 1], got {fraction!r}.")
        return max(1, math.ceil(fraction * self.n_steps))

    def evaluate(
        self, config: Mapping[str, Any], *, fraction: float = 1.0, rng: np.random.Generator
    ) -> Evaluation:
        """Run ``config`` for a prefix of ``fraction`` of the nominal training length.

        ``fraction=1`` runs to completion (a run whose recorded curve is shorter than the
        prefix has converged early and is complete too).
        """
        curve = self.curve(config, rng)
        return self._evaluation(curve, self._stop(fraction, len(curve.values)))

    def _stop(self, fraction: float, total: int) -> int:
        """Steps a run of ``total`` recorded steps makes when stopped at ``fraction``."""
        return total if fraction >= 1.0 else min(self.prefix_steps(fraction), total)

    def _evaluation(self, curve: Curve, n: int, start: int = 0) -> Evaluation:
        """Steps ``start+1 .. n`` of ``curve`` run now (``start`` > 0: resumed there)."""
        total = len(curve.values)
        return Evaluation(
            config=curve.config,
            steps=curve.values[:n],
            value=self.score_of(curve.values[:n]),
            true_score=curve.true_score,
            fidelity=n / total,
            cost=(n - start) / total,
            cost_real=float(curve.costs[n - 1] - (curve.costs[start - 1] if start else 0.0)),
        )

    def checkpoint(self, trial: int, level: int, config: Mapping[str, Any]) -> str:
        """The replay checkpoint of trial ``trial``'s run of ``config`` stopped after
        fidelity level ``level`` (the ``n`` of its last ``trial.report``), which a promoted
        trial resumes from (``resumed``)."""
        return f"replay:{trial}:{level}"

    def objective(
        self,
        *,
        seed: int,
        fraction: float = 1.0,
        budget: float | None = None,
        on_evaluation: Callable[[optuna.trial.Trial, Evaluation], None] | None = None,
        regressor: EarlyStopRegressor | None = None,
    ) -> Callable[[optuna.trial.Trial], float]:
        """An Optuna objective replaying this task through ``AutoPipeEarlyStop``.

        Each step's metrics are recorded by the hook and the running score is reported with
        ``trial.report`` (so a pruner compares like with like); a run stopped at
        ``fraction`` ends PRUNED with its dynamics (and, with ``regressor``, its proxy) in
        user attrs; a pruned trial records what it cost. With ``budget`` (full-run
        equivalents for the whole study), a run that would exceed it is cut where the budget
        ends and pruned. The noise of trial ``k`` is drawn from ``default_rng([seed, k])``,
        so a study is reproducible.

        An early stop leaves the checkpoint ``replay:<trial>:<step>``; a promoted trial
        resuming from it (``early_stop.promote``) continues that very run (same noise) from
        the step after, and costs only the steps it adds.
        """
        spent = [0.0]

        def run(trial: optuna.trial.Trial) -> float:
            config = {name: suggest(trial, name, dist) for name, dist in self.search_space.items()}
            source, start = resumed(trial)
            curve = self.curve(config, np.random.default_rng([seed, source]))
            if curve.config != config:
                trial.set_user_attr("mapped_to", curve.config)
            hook = AutoPipeEarlyStop(
                trial,
                total_steps=self.n_steps,
                fraction=fraction,
                regressor=regressor,
                dataset=self.dataset_features,
            )
            dynamics = self.dynamics(curve)
            total = len(curve.values)
            for n in range(start + 1, total + 1):
                if budget is not None and spent[0] + (n - start) / total > budget + 1e-9:
                    if n > start + 1:
                        hook.write(
                            fidelity=self._finish(
                                trial, curve, n - 1, spent, on_evaluation, start
                            ).fidelity
                        )
                    trial.set_user_attr("budget_exhausted", True)
                    raise BudgetExhausted(f"cost budget of {budget} full runs exhausted")
                logged = {name: series[n - 1][1] for name, series in dynamics.metrics.items()}
                stop = hook.report(n, logged, intermediate=self.score_of(curve.values[:n]))
                if n < total and trial.should_prune():
                    hook.prune()
                if n == total or stop or hook.pruned:
                    break
            evaluation = self._finish(trial, curve, n, spent, on_evaluation, start)
            if hook.stopped_early and evaluation.fidelity < 1.0:
                trial.set_user_attr(CHECKPOINT_ATTR, self.checkpoint(trial.number, n, config))
            hook.finish(fidelity=evaluation.fidelity)
            return evaluation.value

        return run

    def _finish(
        self,
        trial: optuna.trial.Trial,
        curve: Curve,
        n: int,
        spent: list[float],
        on_evaluation: Callable[[optuna.trial.Trial, Evaluation], None] | None,
        start: int = 0,
    ) -> Evaluation:
        return self._record(trial, self._evaluation(curve, n, start), spent, on_evaluation)

    def _record(
        self,
        trial: optuna.trial.Trial,
        evaluation: Evaluation,
        spent: list[float],
        on_evaluation: Callable[[optuna.trial.Trial, Evaluation], None] | None,
    ) -> Evaluation:
        """Charge ``evaluation`` to the study (``spent``), write its fidelity and costs on the
        trial and pass it to ``on_evaluation``."""
        spent[0] += evaluation.cost
        trial.set_user_attr("fidelity", evaluation.fidelity)
        trial.set_user_attr("cost", evaluation.cost)
        trial.set_user_attr("cost_real", evaluation.cost_real)
        trial.set_user_attr("cost_unit", self.cost_unit)
        if on_evaluation is not None:
            on_evaluation(trial, evaluation)
        return evaluation


def resumed(trial: optuna.trial.Trial) -> tuple[int, int]:
    """(trial whose run this is, steps already run): ``(trial.number, 0)`` for a fresh run,
    the early-stopped trial and its stop step for a promotion resuming a replay checkpoint."""
    checkpoint = resume_checkpoint(trial)
    if checkpoint is None or not checkpoint.startswith("replay:"):
        return trial.number, 0
    _, number, step = checkpoint.split(":")
    return int(number), int(step)


def stable_seed(*parts: object) -> int:
    """A seed derived from names and numbers, identical across processes (unlike ``hash``)."""
    return zlib.crc32("/".join(map(str, parts)).encode())
