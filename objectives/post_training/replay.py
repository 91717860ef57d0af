"""The ``post-training`` benchmark: a replay of a mini corpus's recorded SFT → GRPO → lm-eval
runs (corpus v2, ``mini_corpus.V2``), one ``PostTrainingTask`` per dataset.

A recorded run (a COMPLETE trial of study ``mini-<dataset>`` in the corpus journal) holds its
SFT dynamics (every logged scalar per SFT step; ``total_steps`` = its planned SFT steps S),
its stage seconds (``autopipe:cost``) and its suite score after SFT and after 25%, 50% and
100% of its GRPO steps with their seconds (``autopipe:rl_fidelity``).

Fidelity axis (``n_steps`` = 3): the RL rungs 25%, 50% and 100% of the GRPO steps, each after
the whole SFT. A full run reports the score at each rung (``trial.report``), so Hyperband
(``bohb``) runs over RL fidelity, 25% to 100% with η = 3, as in the paper. A run stopped at
``fraction`` < 1 stops inside SFT, at ``ceil(fraction · S)`` of its own planned steps (the
early stop of the real objective): it shows only SFT dynamics, ends PRUNED with them (and a
proxy, with a regressor) and has no score (``value`` NaN). A promoted run resumes there.

Cost: recorded pipeline seconds. SFT step s costs ``sft_seconds · s / S``; the rung at ``f``
adds the GRPO seconds up to ``f`` and one evaluation. ``Evaluation.fidelity`` is the share of
the run's full cost reached (1 at the end of GRPO), ``cost`` the added share.

Scores: where the corpus trained a configuration with several seeds (``generate(
training_seeds=...)``), its score at each rung is the mean over the seeds that finished, and
that mean is both what a run observes and its true score; its SFT dynamics and seconds are
the main seed's run (one run is what a method pays for and watches). ``autopipe corpus
report`` gives the seed spread next to the spread across configurations. An unrecorded
configuration maps to the nearest recorded one (squared distance over each
parameter's position in its ordered choices, scaled to [0, 1]; first on ties), the same rule
for every method, stored on the trial as ``mapped_to``.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import optuna
from optuna.distributions import BaseDistribution, CategoricalDistribution
from optuna.trial import TrialState

from objectives.post_training.mini_corpus import SEED_MARK, config_key, seeded_runs
from objectives.post_training.objective import COST_ATTR, RL_FIDELITY_ATTR
from objectives.replay import BudgetExhausted, Config, Curve, Evaluation, ReplayTask, resumed
from optuna_autopipe.dynamics import DYNAMICS_ATTR, TrainingDynamics, stop_step
from optuna_autopipe.early_stop import CHECKPOINT_ATTR, AutoPipeEarlyStop
from optuna_autopipe.profile import DatasetProfile
from optuna_autopipe.space import suggest

if TYPE_CHECKING:
    from optuna_autopipe.regressor import EarlyStopRegressor

#: The RL rungs: fractions of the GRPO steps evaluated after the whole SFT.
RUNGS = (0.25, 0.5, 1.0)
STUDY_PREFIX = "mini-"


@dataclass(frozen=True)
class RecordedRun:
    """One recorded pipeline run: its SFT dynamics, SFT seconds, and per RL rung the score
    and the seconds spent up to it (GRPO up to the rung + one evaluation)."""

    config: Config
    dynamics: TrainingDynamics
    sft_seconds: float
    scores: tuple[float, ...]
    rung_seconds: tuple[float, ...]

    @property
    def sft_steps(self) -> int:
        return int(self.dynamics.total_steps)

    @cached_property
    def logged(self) -> dict[int, dict[str, float]]:
        """Per SFT step, the scalars the run logged there (built once per run: a replay feeds
        them to the hook step by step)."""
        by_step: dict[int, dict[str, float]] = {}
        for name, series in self.dynamics.metrics.items():
            for step, value in series:
                if value is not None:
                    by_step.setdefault(int(step), {})[name] = float(value)
        return by_step

    @property
    def full_seconds(self) -> float:
        return self.sft_seconds + self.rung_seconds[-1]

    def seconds_at(self, sft_step: int, rung: int = 0) -> float:
        """Cumulative seconds after ``sft_step`` SFT steps (``rung`` 0) or at RL rung
        ``rung`` (1, 2, 3: after the whole SFT)."""
        if rung:
            return self.sft_seconds + self.rung_seconds[rung - 1]
        return self.sft_seconds * sft_step / self.sft_steps

    def split(self, position: int) -> tuple[int, int]:
        """(SFT steps, RL rungs) done at ``position`` on the run's axis: SFT steps
        1..S, then S + r for RL rung r (what a checkpoint names)."""
        return min(position, self.sft_steps), max(0, position - self.sft_steps)


class PostTrainingTask(ReplayTask):
    """One dataset of the corpus, replayed from its recorded runs."""

    benchmark = "post-training"
    direction = "maximize"
    cost_unit = "pipeline seconds"
    reduce = "last"
    metric = "score"

    def __init__(
        self,
        *,
        name: str,
        runs: Sequence[RecordedRun],
        space: Mapping[str, BaseDistribution],
        features: Mapping[str, float],
    ) -> None:
        if not runs:
            raise ValueError(f"post-training/{name}: no recorded run to replay.")
        self.name = name
        self._runs = list(runs)
        self._space = dict(space)
        self._features = dict(features)
        self._grid = np.array([self._position(r.config) for r in self._runs])

    @cached_property
    def search_space(self) -> dict[str, BaseDistribution]:
        return dict(self._space)

    @property
    def n_steps(self) -> int:
        return len(RUNGS)

    @property
    def dataset_features(self) -> dict[str, float]:
        return dict(self._features)

    def _position(self, config: Mapping[str, Any]) -> list[float]:
        """Each parameter's index in its choices, scaled to [0, 1]."""
        position = []
        for name, dist in self._space.items():
            choices = list(dist.choices)  # type: ignore[attr-defined]
            if config[name] not in choices:
                raise ValueError(
                    f"post-training/{self.name}: {name}={config[name]!r} is not one of {choices}."
                )
            position.append(choices.index(config[name]) / max(1, len(choices) - 1))
        return position

    def run_of(self, config: Mapping[str, Any]) -> RecordedRun:
        """The recorded run of ``config``, or of its nearest recorded neighbour."""
        distance = ((self._grid - np.array(self._position(config))) ** 2).sum(axis=1)
        return self._runs[int(np.argmin(distance))]

    def resolve(self, config: Mapping[str, Any]) -> Config:
        return dict(self.run_of(config).config)

    def curve(self, config: Mapping[str, Any], rng: np.random.Generator) -> Curve:
        """The run's RL rungs: its score and cumulative seconds at 25%, 50%, 100% of GRPO."""
        run = self.run_of(config)
        return Curve(
            values=np.array(run.scores),
            costs=np.array([run.seconds_at(0, k) for k in range(1, len(RUNGS) + 1)]),
            true_score=run.scores[-1],
            config=dict(run.config),
        )

    def run_dynamics(
        self, configs: Sequence[Mapping[str, Any]], *, seed: int
    ) -> list[TrainingDynamics]:
        """The recorded SFT dynamics of each configuration's run (one recorded seed)."""
        return [self.run_of(c).dynamics for c in configs]

    def pool(self) -> tuple[list[Config], np.ndarray]:
        return [dict(r.config) for r in self._runs], np.array([r.scores[-1] for r in self._runs])

    def true_score(self, config: Mapping[str, Any]) -> float:
        return self.run_of(config).scores[-1]

    def checkpoint(self, trial: int, level: int, config: Mapping[str, Any]) -> str:
        """After RL rung ``level`` (1..3): position S + ``level`` on the run's axis (an
        early stop inside SFT names its SFT step)."""
        return f"replay:{trial}:{self.run_of(config).sft_steps + level}"

    def objective(
        self,
        *,
        seed: int,
        fraction: float = 1.0,
        budget: float | None = None,
        on_evaluation: Callable[[optuna.trial.Trial, Evaluation], None] | None = None,
        regressor: EarlyStopRegressor | None = None,
    ) -> Callable[[optuna.trial.Trial], float]:
        """An Optuna objective replaying this dataset (module docstring for the axis).

        ``fraction`` < 1 stops inside SFT; otherwise the run reports its RL rungs and a
        pruner may stop it at one. With ``budget`` (full-run equivalents for the whole
        study), a run that would exceed it is cut at the last rung it can pay for (or before
        it starts) and pruned. A promoted trial resumes its early stop's SFT step
        (checkpoint ``replay:<trial>:<step>``) or the RL rung a pruner stopped it at
        (``checkpoint``: ``replay:<trial>:<S + rung>``) and pays only what it adds.
        """
        spent = [0.0]

        def run(trial: optuna.trial.Trial) -> float:
            config = {name: suggest(trial, name, dist) for name, dist in self.search_space.items()}
            recorded = self.run_of(config)
            if recorded.config != config:
                trial.set_user_attr("mapped_to", recorded.config)
            # a promotion resumes its early stop's SFT step, or an RL rung (``split``)
            _, position = resumed(trial)
            start, start_rung = recorded.split(position)
            early = fraction < 1.0 and not start_rung
            hook = AutoPipeEarlyStop(
                trial,
                total_steps=recorded.sft_steps,
                fraction=fraction if early else 1.0,
                regressor=regressor if early else None,
                dataset=self.dataset_features,
            )
            last = stop_step(recorded.sft_steps, fraction) if early else recorded.sft_steps
            for step in range(start + 1, last + 1):
                # NaN: no intermediate value in SFT, the pruners' axis is the RL rungs
                hook.report(step, recorded.logged.get(step, {}), intermediate=math.nan)
            if early:
                self._finish(trial, recorded, spent, on_evaluation, position, last, 0)
                trial.set_user_attr(CHECKPOINT_ATTR, f"replay:{trial.number}:{last}")  # SFT step
                hook.finish(fidelity=recorded.seconds_at(last) / recorded.full_seconds)
                return math.nan  # hook.finish raised TrialPruned
            for rung in range(start_rung + 1, len(RUNGS) + 1):
                added = recorded.seconds_at(last, rung) - recorded.seconds_at(start, start_rung)
                if budget is not None and spent[0] + added / recorded.full_seconds > budget + 1e-9:
                    if rung > start_rung + 1:
                        self._finish(
                            trial, recorded, spent, on_evaluation, position, last, rung - 1
                        )
                    trial.set_user_attr("budget_exhausted", True)
                    raise BudgetExhausted(f"cost budget of {budget} full runs exhausted")
                trial.report(recorded.scores[rung - 1], step=rung)
                if rung < len(RUNGS) and trial.should_prune():
                    self._finish(trial, recorded, spent, on_evaluation, position, last, rung)
                    hook.prune()
                    hook.finish(fidelity=recorded.seconds_at(last, rung) / recorded.full_seconds)
            evaluation = self._finish(
                trial, recorded, spent, on_evaluation, position, last, len(RUNGS)
            )
            hook.finish(fidelity=1.0)
            return evaluation.value

        return run

    def _finish(
        self,
        trial: optuna.trial.Trial,
        run: RecordedRun,
        spent: list[float],
        on_evaluation: Callable[[optuna.trial.Trial, Evaluation], None] | None,
        position: int,
        sft_step: int,
        rung: int,
    ) -> Evaluation:
        """Record what the run reached from ``position`` (``RecordedRun.split``):
        ``sft_step`` SFT steps, then ``rung`` RL rungs."""
        reached = run.seconds_at(sft_step, rung)
        added = reached - run.seconds_at(*run.split(position))
        evaluation = Evaluation(
            config=dict(run.config),
            steps=np.array(run.scores[:rung]),
            value=run.scores[rung - 1] if rung else math.nan,
            true_score=run.scores[-1],
            fidelity=reached / run.full_seconds,
            cost=added / run.full_seconds,
            cost_real=added,
        )
        return self._record(trial, evaluation, spent, on_evaluation)


def load_post_training(journal: str | Path) -> list[PostTrainingTask]:
    """One task per ``mini-*`` study of the corpus journal at ``journal`` (``runs.journal``
    of ``autopipe corpus generate --corpus v2``): its COMPLETE runs that recorded their RL
    fidelities, its search space (the studies' distributions) and its dataset profile."""
    from optuna.storages.journal import JournalFileBackend

    path = Path(journal)
    if not path.is_file():
        raise FileNotFoundError(
            f"Post-training corpus journal {path} not found; generate it with "
            "`autopipe corpus generate --corpus v2 --out DIR` and pass DIR/runs.journal."
        )
    storage = optuna.storages.JournalStorage(JournalFileBackend(str(path)))
    tasks = []
    for summary in sorted(
        optuna.get_all_study_summaries(storage, include_best_trial=False),
        key=lambda s: s.study_name,
    ):
        name = summary.study_name
        if not name.startswith(STUDY_PREFIX) or name.endswith("-seeds") or SEED_MARK in name:
            continue
        study = optuna.load_study(study_name=name, storage=storage)
        trials = [
            t
            for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
            if RL_FIDELITY_ATTR in t.user_attrs
        ]
        if not trials:
            continue
        space = _space(trials)
        seeds = seeded_runs(storage, name)
        runs = [_recorded(t, seeds[config_key(t.params)]) for t in trials]
        features = DatasetProfile.from_study(study).features
        tasks.append(
            PostTrainingTask(
                name=name[len(STUDY_PREFIX) :], runs=runs, space=space, features=features
            )
        )
    if not tasks:
        raise ValueError(
            f"{path} holds no finished run with RL fidelities (autopipe:rl_fidelity); it is not "
            "a corpus v2 journal, or its generation has not finished a run yet."
        )
    return tasks


def _space(trials: Sequence[optuna.trial.FrozenTrial]) -> dict[str, BaseDistribution]:
    """The studies' search space: each parameter's categorical distribution as recorded."""
    space: dict[str, BaseDistribution] = {}
    for trial in trials:
        for name, dist in trial.distributions.items():
            if not isinstance(dist, CategoricalDistribution):
                raise ValueError(f"Parameter {name!r} is not categorical: {dist}.")
            space.setdefault(name, dist)
    return space


def _rungs(trial: optuna.trial.FrozenTrial) -> list[dict[str, Any]]:
    fidelities = trial.user_attrs.get(RL_FIDELITY_ATTR, {})
    keys = [f"{f:g}" for f in RUNGS]
    missing = [k for k in keys if k not in fidelities]
    if missing:
        raise ValueError(
            f"Trial {trial.number} ({trial.params}) lacks RL rungs {missing} in {RL_FIDELITY_ATTR}."
        )
    return [fidelities[k] for k in keys]


def _recorded(
    trial: optuna.trial.FrozenTrial, seeds: Sequence[optuna.trial.FrozenTrial]
) -> RecordedRun:
    """``trial``'s run, scored at each rung by the mean over ``seeds`` (its configuration's
    runs with every training seed, ``trial`` among them)."""
    rungs = _rungs(trial)
    return RecordedRun(
        config=dict(trial.params),
        dynamics=TrainingDynamics.from_json(trial.user_attrs[DYNAMICS_ATTR]),
        sft_seconds=float(trial.user_attrs[COST_ATTR]["sft"]["seconds"]),
        scores=tuple(
            np.mean([[float(r["score"]) for r in _rungs(t)] for t in seeds], axis=0).tolist()
        ),
        rung_seconds=tuple(float(r["rl_seconds"]) + float(r["eval_seconds"]) for r in rungs),
    )
