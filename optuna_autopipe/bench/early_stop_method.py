"""Early-stop variants of the sequential baselines: ``random-es``, ``tpe-es`` and ``-cut``.

``random-es``, ``tpe-es`` (paper C.2.2): each of the ``budget`` evaluations runs the replay
to ``FRACTION`` of its planned length through ``AutoPipeEarlyStop``; the trial ends PRUNED
and the direct early-stop regressor (trained on the offline datasets to predict z(y), no
prior) turns its dynamics into a proxy ẑ. ``random-cut``, ``tpe-cut``: what an Optuna user
does without any model, stop at AutoPipe's ``CUT_FRACTION`` and optimise the score the
study saw there (the last intermediate value), the signal AutoPipe's cut signal compares.

The baseline's sampler learns from these values through an in-memory guide study
(ask/tell), so the benchmark study itself keeps the honest record: PRUNED trials with their
proxies in user attrs. After the budget, the configuration with the best value is verified
once at full fidelity, its cost included; a run that converged before the cut is complete
already (its proxy still comes from its recorded dynamics).

Registered on import; ``optuna_autopipe.bench.methods`` imports this module on first use.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import lru_cache, partial
from typing import Literal

import optuna

from objectives.replay import ReplayTask
from optuna_autopipe.bench.methods import Context, register
from optuna_autopipe.corpus import Corpus
from optuna_autopipe.dynamics import DYNAMICS_ATTR, TrainingDynamics
from optuna_autopipe.early_stop import PROXY_ATTR
from optuna_autopipe.regressor import EarlyStopRegressor

#: Early-stop point, as a share of the planned training length.
FRACTION = 0.5
#: Early-stop point of the ``-cut`` variants: AutoPipe's, so both cost the same.
CUT_FRACTION = 0.25
#: Runs per offline dataset the regressor is trained on (one observed run each).
CORPUS_ROWS = 500


@lru_cache(maxsize=8)
def dynamics_corpus(offline: tuple[ReplayTask, ...]) -> Corpus:
    """``CORPUS_ROWS`` runs per offline dataset, each with one observed run's dynamics."""
    groups = {t.name: str(getattr(t, "group", t.name)) for t in offline}
    return Corpus.from_tasks(offline, groups=groups, max_runs=CORPUS_ROWS, dynamics=True)


@lru_cache(maxsize=8)
def direct_regressor(
    offline: tuple[ReplayTask, ...], fraction: float = FRACTION
) -> EarlyStopRegressor:
    """The direct regressor fitted on ``offline`` (cached per process)."""
    return EarlyStopRegressor(fraction=fraction, target="direct").fit(dynamics_corpus(offline))


def early_stopped(
    make_sampler: Callable[[Context], optuna.samplers.BaseSampler],
    *,
    signal: Literal["proxy", "cut"] = "proxy",
) -> Callable[[Context], optuna.Study]:
    """A method spending ``budget`` early-stopped evaluations, then one verification run.

    ``signal="proxy"``: stops at ``FRACTION``, the direct regressor's proxy is the value;
    ``"cut"``: stops at ``CUT_FRACTION`` and the value is what the study itself saw there,
    the last intermediate value (no model).
    """

    def run(ctx: Context) -> optuna.Study:
        direction = "maximize" if signal == "proxy" else ctx.task.direction
        guide = optuna.create_study(direction=direction, sampler=make_sampler(ctx))
        study = ctx.study(optuna.samplers.RandomSampler(seed=ctx.seed))
        value: Callable[[optuna.trial.FrozenTrial], float]
        if signal == "proxy":
            regressor = direct_regressor(tuple(ctx.offline))
            objective = ctx.objective(fraction=FRACTION, regressor=regressor)
            value = partial(_proxy, regressor=regressor, task=ctx.task)
        else:
            objective = ctx.objective(fraction=CUT_FRACTION)
            value = _seen_at_cut
        values: dict[int, float] = {}
        for _ in range(ctx.budget):
            asked = guide.ask(ctx.task.search_space)
            study.enqueue_trial(asked.params)
            study.optimize(objective, n_trials=1)
            trial = study.trials[-1]
            values[trial.number] = value(trial)
            guide.tell(asked, values[trial.number])
        better = max if direction == "maximize" else min
        best = study.trials[better(values, key=values.__getitem__)]
        if best.state != optuna.trial.TrialState.COMPLETE:
            study.enqueue_trial(best.params, user_attrs={"autopipe:verifies": best.number})
            study.optimize(ctx.objective(), n_trials=1)
        return study

    return run


def _seen_at_cut(trial: optuna.trial.FrozenTrial) -> float:
    """The last intermediate value the study saw (the score at the cut)."""
    return trial.intermediate_values[max(trial.intermediate_values)]


def _proxy(
    trial: optuna.trial.FrozenTrial, regressor: EarlyStopRegressor, task: ReplayTask
) -> float:
    """The trial's proxy: written by the hook after an early stop, else from its dynamics."""
    if PROXY_ATTR in trial.user_attrs:
        return float(trial.user_attrs[PROXY_ATTR])
    dynamics = TrainingDynamics.from_json(trial.user_attrs[DYNAMICS_ATTR])
    prediction = regressor.predict([trial.params], task.dataset_features, [dynamics])
    return float(prediction.mean[0])


register("random-es")(early_stopped(lambda ctx: optuna.samplers.RandomSampler(seed=ctx.seed)))
register("tpe-es")(early_stopped(lambda ctx: optuna.samplers.TPESampler(seed=ctx.seed)))
register("random-cut")(
    early_stopped(lambda ctx: optuna.samplers.RandomSampler(seed=ctx.seed), signal="cut")
)
register("tpe-cut")(
    early_stopped(lambda ctx: optuna.samplers.TPESampler(seed=ctx.seed), signal="cut")
)
