"""AutoPipeEarlyStop through plain ``report`` calls, in the replays, and the ES baselines."""

from __future__ import annotations

import math

import numpy as np
import optuna
import pytest
from optuna.trial import TrialState

import optuna_autopipe.bench.early_stop_method as es_method
from optuna_autopipe.bench.harness import outcome
from optuna_autopipe.bench.methods import Context, get_method
from optuna_autopipe.corpus import Corpus
from optuna_autopipe.dynamics import DYNAMICS_ATTR, TrainingDynamics
from optuna_autopipe.early_stop import (
    FRACTION_ATTR,
    PRIOR_SCORE_ATTR,
    PROMOTED_FROM_ATTR,
    PROXY_ATTR,
    PROXY_VARIANCE_ATTR,
    RESIDUAL_ATTR,
    STOP_STEP_ATTR,
    AutoPipeEarlyStop,
    proxy_of,
    verify,
)
from optuna_autopipe.regressor import EarlyStopRegressor


@pytest.fixture(scope="module")
def nmt_regressors(nmt):
    """Residual (in-sample zeros as s(x)) and direct regressors on NMT's recorded runs."""
    corpus = Corpus.from_tasks(nmt.tasks, groups=nmt.groups, dynamics=True)
    zeros = {d.name: np.zeros(len(d.configs)) for d in corpus.datasets}
    return {
        "residual": EarlyStopRegressor(n_models=2).fit(corpus, prior_scores=zeros),
        "direct": EarlyStopRegressor(target="direct", n_models=2).fit(corpus),
    }


#: NMT's dataset features, which both regressors read.
NMT_FEATURES = {"log10_dataset_size": 5.0, "max_len": 80.0, "into_english": 1.0}


def _loop_objective(hook_options, losses, prior_score=None):
    """A plain training loop logging loss and learning rate for ``len(losses)`` steps."""

    def objective(trial):
        trial.suggest_float("lr", 1e-5, 1e-3, log=True)
        if prior_score is not None:
            trial.set_user_attr(PRIOR_SCORE_ATTR, prior_score)
        hook = AutoPipeEarlyStop(trial, total_steps=len(losses), **hook_options)
        for step, loss in enumerate(losses, 1):
            if hook.report(step, {"loss": loss, "learning_rate": 1e-4 / step}):
                break
        hook.finish()
        return losses[-1]

    return objective


def _one_trial(objective):
    study = optuna.create_study(pruner=optuna.pruners.NopPruner())
    study.optimize(objective, n_trials=1)
    return study.trials[0]


def test_report_path_stops_at_the_fraction_and_leaves_a_pruned_trial_with_its_record():
    trial = _one_trial(_loop_objective({"fraction": 0.5}, [3.0 - 0.1 * i for i in range(10)]))
    assert trial.state == TrialState.PRUNED
    assert sorted(trial.intermediate_values) == [1, 2, 3, 4, 5]
    assert trial.intermediate_values[5] == pytest.approx(2.6)
    assert trial.user_attrs["fidelity"] == 0.5 and trial.user_attrs["autopipe:stop_step"] == 5
    assert trial.user_attrs[FRACTION_ATTR] == 0.5  # which of a prior's regressors applies
    dynamics = TrainingDynamics.from_json(trial.user_attrs[DYNAMICS_ATTR])
    assert dynamics.total_steps == 10 and set(dynamics.metrics) == {"loss", "learning_rate"}
    assert [p[0] for p in dynamics.metrics["loss"]] == [1, 2, 3, 4, 5]
    assert PROXY_ATTR not in trial.user_attrs  # no regressor: dynamics only
    assert proxy_of(trial) is None


def test_a_primary_metric_that_is_not_a_number_is_refused_by_name_other_text_is_skipped():
    study = optuna.create_study()
    hook = AutoPipeEarlyStop(study.ask(), total_steps=4, fraction=0.5)
    assert not hook.report(1, {"loss": 2.0, "note": "warm-up", "learning_rate": 1e-4})
    with pytest.raises(TypeError, match=r"Metric 'loss' at step 2 is '0.5' \(str\).*float"):
        hook.report(2, {"loss": "0.5"})
    assert hook.dynamics.metrics["loss"] == [[1.0, 2.0]]  # the refused step left no point
    assert set(hook.dynamics.metrics) == {"loss", "learning_rate"}


@pytest.mark.parametrize("fraction", [1.0, 0.9])  # ceil(0.9 * 4) = 4: nothing to cut
def test_full_fidelity_runs_complete_and_still_record_their_dynamics(fraction):
    trial = _one_trial(_loop_objective({"fraction": fraction}, [2.0, 1.5, 1.2, 1.1]))
    assert trial.state == TrialState.COMPLETE and trial.value == 1.1
    assert trial.user_attrs["fidelity"] == 1.0
    assert len(TrainingDynamics.from_json(trial.user_attrs[DYNAMICS_ATTR]).metrics["loss"]) == 4


@pytest.mark.parametrize("target", ["residual", "direct"])
def test_an_early_stop_with_a_regressor_records_its_proxy(nmt_regressors, target):
    regressor = nmt_regressors[target]
    options = {"regressor": regressor, "dataset": NMT_FEATURES}
    trial = _one_trial(_loop_objective(options, [9.0, 7.0, 6.0, 5.5], prior_score=0.7))
    assert trial.state == TrialState.PRUNED
    dynamics = TrainingDynamics.from_json(trial.user_attrs[DYNAMICS_ATTR])
    expected = regressor.predict([trial.params], options["dataset"], [dynamics])
    assert trial.user_attrs[PROXY_VARIANCE_ATTR] == pytest.approx(expected.variance[0])
    if target == "residual":
        assert trial.user_attrs[RESIDUAL_ATTR] == pytest.approx(expected.mean[0])
        assert trial.user_attrs[PROXY_ATTR] == pytest.approx(0.7 + expected.mean[0])
    else:
        assert trial.user_attrs[PROXY_ATTR] == pytest.approx(expected.mean[0])
    assert proxy_of(trial) == pytest.approx(
        (trial.user_attrs[PROXY_ATTR], trial.user_attrs[PROXY_VARIANCE_ATTR])
    )


def test_a_diverged_or_silent_run_gets_the_regressor_fallback_not_a_crash(nmt_regressors):
    regressor = nmt_regressors["residual"]
    options = {"regressor": regressor, "dataset": dict.fromkeys(NMT_FEATURES, math.nan)}
    for losses in ([math.nan, math.inf, math.nan, math.nan], [None] * 4):
        trial = _one_trial(_loop_objective(options, losses, prior_score=-0.2))
        assert trial.state == TrialState.PRUNED
        assert trial.user_attrs[RESIDUAL_ATTR] == 0.0
        assert trial.user_attrs[PROXY_ATTR] == pytest.approx(-0.2)
        assert trial.user_attrs[PROXY_VARIANCE_ATTR] == pytest.approx(
            max(regressor.target_variance, regressor.noise_floor)
        )


def test_a_residual_proxy_without_a_prior_score_records_only_the_residual(nmt_regressors):
    options = {"regressor": nmt_regressors["residual"], "dataset": NMT_FEATURES}
    trial = _one_trial(_loop_objective(options, [9.0, 7.0, 6.0, 5.5]))
    assert RESIDUAL_ATTR in trial.user_attrs and PROXY_ATTR not in trial.user_attrs


def test_bad_hook_arguments_are_rejected_with_the_fix(nmt_regressors):
    trial = optuna.create_study().ask()
    with pytest.raises(ValueError, match="fraction"):
        AutoPipeEarlyStop(trial, total_steps=10, fraction=0)
    with pytest.raises(ValueError, match="same fraction"):
        AutoPipeEarlyStop(trial, fraction=0.25, regressor=nmt_regressors["direct"], dataset={})
    read = r"\['into_english', 'log10_dataset_size', 'max_len'\].*dataset="
    with pytest.raises(ValueError, match=read):
        AutoPipeEarlyStop(trial, regressor=nmt_regressors["direct"])
    with pytest.raises(ValueError, match=r"\['into_english', 'max_len'\]"):
        AutoPipeEarlyStop(
            trial, regressor=nmt_regressors["direct"], dataset={"log10_dataset_size": 5}
        )
    with pytest.raises(RuntimeError, match="total_steps"):
        AutoPipeEarlyStop(trial).report(1, {"loss": 1.0})
    with pytest.raises(ValueError, match="total_steps"):
        AutoPipeEarlyStop(trial, total_steps=0)


def test_replay_runs_through_the_hook_with_every_logged_metric(lcbench):
    task = lcbench.tasks[0]
    study = optuna.create_study(direction="maximize")
    study.optimize(task.objective(seed=1, fraction=0.5), n_trials=2)
    for trial in study.trials:
        assert trial.state == TrialState.PRUNED and trial.user_attrs["fidelity"] == 0.5
        dynamics = TrainingDynamics.from_json(trial.user_attrs[DYNAMICS_ATTR])
        assert set(dynamics.metrics) == {
            "val_accuracy",
            "val_balanced_accuracy",
            "val_cross_entropy",
        }
        assert dynamics.total_steps == 52 and dynamics.last_step == 26
        assert list(trial.intermediate_values) == list(range(1, 27))


def _early_stop_baseline(nmt, name: str) -> tuple[optuna.Study, Context]:
    """``name`` run on NMT's ted-zh-en (perplexity: lower is better) with a budget of 4."""
    task = nmt.task("ted-zh-en")
    ctx = Context(
        task=task,
        offline=nmt.offline(task.name, "grouped"),
        seed=3,
        budget=4,
        evaluations={},
        study_name=f"baseline/{name}",
    )
    return get_method(name)(ctx), ctx


def test_early_stop_baselines_spend_half_runs_then_verify_the_best_proxy(nmt):
    for name in ("random-es", "tpe-es"):
        study, ctx = _early_stop_baseline(nmt, name)
        task = ctx.task
        early = study.trials[:4]
        proxies = [
            es_method._proxy(t, es_method.direct_regressor(tuple(ctx.offline)), task) for t in early
        ]
        best = early[int(np.argmax(proxies))]
        if best.state == TrialState.COMPLETE:
            assert len(study.trials) == 4
        else:
            verification = study.trials[4]
            assert len(study.trials) == 5 and verification.state == TrialState.COMPLETE
            assert verification.params == best.params
            assert verification.user_attrs["autopipe:verifies"] == best.number
        assert all(PROXY_ATTR in t.user_attrs for t in early if t.state == TrialState.PRUNED)
        record = outcome(study, ctx, protocol="grouped")
        assert record["cost"] == pytest.approx(sum(e.cost for e in ctx.evaluations.values()))
        assert record["cost"] < 4


@pytest.mark.parametrize("name", ["random-cut", "tpe-cut"])
def test_cut_baselines_stop_at_a_quarter_then_verify_the_best_score_seen_there(nmt, name):
    study, _ = _early_stop_baseline(nmt, name)
    early = study.trials[:4]
    assert all(t.user_attrs["fidelity"] <= 0.3 or t.state == TrialState.COMPLETE for t in early)
    assert not any(PROXY_ATTR in t.user_attrs for t in early)  # no model involved
    seen = [t.intermediate_values[max(t.intermediate_values)] for t in early]
    best = early[int(np.argmin(seen))]
    assert study.trials[-1].params == best.params
    assert study.trials[-1].state == TrialState.COMPLETE


@pytest.mark.parametrize(
    ("direction", "metric", "reported"),
    [
        ("maximize", "loss", -2.0),
        ("minimize", "loss", 2.0),
        ("maximize", "accuracy", 2.0),
        ("minimize", "accuracy", -2.0),
    ],
)
def test_intermediate_values_are_oriented_like_the_study(direction, metric, reported):
    study = optuna.create_study(direction=direction)
    trial = study.ask()
    hook = AutoPipeEarlyStop(trial, total_steps=10, fraction=1.0, primary=metric)
    hook.report(1, {metric: 2.0})
    hook.report(2, {metric: 1.0}, intermediate=5.0)  # an explicit value is kept as is
    assert study.trials[0].intermediate_values == {1: reported, 2: 5.0}


def _converging(fraction, *, fidelity=None):
    """A loop that stops itself once the loss stops improving (step 6 of 10): it converged."""
    losses = [3.0, 2.0, 1.5, 1.2, 1.1, 1.1, 1.1, 1.1, 1.1, 1.1]

    def objective(trial):
        trial.suggest_float("lr", 1e-5, 1e-3, log=True)
        hook = AutoPipeEarlyStop(trial, total_steps=len(losses), fraction=fraction)
        previous = math.inf
        for step, loss in enumerate(losses, 1):
            if hook.report(step, {"loss": loss}) or previous - loss < 1e-3:
                break
            previous = loss
        hook.finish(fidelity=fidelity)
        return loss

    return objective


@pytest.mark.parametrize("fraction", [1.0, 0.75])  # the hook would stop at step 8 of 10
def test_a_run_that_ends_itself_before_its_planned_length_is_a_full_result(fraction):
    trial = _one_trial(_converging(fraction))
    assert trial.state == TrialState.COMPLETE and trial.value == 1.1
    assert trial.user_attrs["fidelity"] == 1.0
    assert STOP_STEP_ATTR not in trial.user_attrs and FRACTION_ATTR not in trial.user_attrs
    assert TrainingDynamics.from_json(trial.user_attrs[DYNAMICS_ATTR]).last_step == 6
    # the caller knows better: an explicit fidelity is recorded as given
    partial = _one_trial(_converging(fraction, fidelity=0.6))
    assert partial.state == TrialState.COMPLETE and partial.user_attrs["fidelity"] == 0.6


def test_verify_returns_the_finished_full_fidelity_trial_instead_of_running_it_again():
    study = optuna.create_study(direction="minimize")
    distributions = {"lr": optuna.distributions.FloatDistribution(1e-5, 1e-3, log=True)}

    def add(lr, state=TrialState.COMPLETE, value=None, **attrs):
        trial = optuna.trial.create_trial(
            state=state,
            value=value,
            params={"lr": lr},
            distributions=distributions,
            user_attrs=attrs,
        )
        study.add_trial(trial)

    add(1e-4, value=2.0)
    add(1e-4, value=1.5, fidelity=1.0)  # the same configuration, better: this one is returned
    add(2e-4, value=0.5, fidelity=0.5)  # a COMPLETE trial below full fidelity is no result
    add(3e-4, TrialState.PRUNED, **{STOP_STEP_ATTR: 5, "fidelity": 0.5})
    finished = verify(study, {"lr": 1e-4})
    assert finished is not None and finished.number == 1 and finished.value == 1.5
    assert len(study.trials) == 4  # nothing enqueued
    assert verify(study, {"lr": 2e-4}) is None  # a fresh full run is enqueued
    assert verify(study, {"lr": 3e-4}) is None  # the early stop is promoted
    waiting = study.get_trials(states=(TrialState.WAITING,))
    assert [t.system_attrs["fixed_params"] for t in waiting] == [{"lr": 2e-4}, {"lr": 3e-4}]
    assert [t.user_attrs[PROMOTED_FROM_ATTR] for t in waiting] == [None, 3]
