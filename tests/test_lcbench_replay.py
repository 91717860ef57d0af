from __future__ import annotations

import math

import numpy as np
import optuna
import pytest

from objectives.lcbench import EPOCHS, SEARCH_SPACE, LCBenchTask, sample_configs


def test_tasks_space_and_features(lcbench):
    assert len(lcbench.tasks) == 34
    assert set(SEARCH_SPACE) == set(lcbench.tasks[0].search_space)
    airlines = lcbench.task("189354").dataset_features
    assert airlines and all(math.isnan(v) for v in airlines.values())
    covertype = lcbench.task("7593").dataset_features
    assert covertype["NumberOfClasses"] == 7


def test_pool_configs_are_valid_and_shared_across_tasks(lcbench):
    configs, scores = lcbench.task("3945").pool()
    assert len(configs) == 2000 and scores.shape == (2000,)
    assert configs == lcbench.task("7593").pool()[0]
    assert np.all((scores >= 0) & (scores <= 100))
    for config in configs[:200]:
        for name, dist in SEARCH_SPACE.items():
            assert dist._contains(dist.to_internal_repr(config[name]))


def test_noise_changes_the_observed_curve_but_not_the_true_score(lcbench):
    noisy = lcbench.task("126025")
    clean = LCBenchTask(name="126025", surrogate=noisy._surrogate, features={}, noise_sd=0.0)
    config = sample_configs(1, seed=3)[0]
    a = noisy.evaluate(config, rng=np.random.default_rng(0))
    b = clean.evaluate(config, rng=np.random.default_rng(0))
    assert a.true_score == b.true_score == pytest.approx(b.value)
    assert a.value != b.value
    residual = (
        noisy.curve(config, np.random.default_rng(1)).values
        - clean.curve(config, np.random.default_rng(1)).values
    )
    assert 0.5 < residual.std() < 1.5  # noise_sd = 1 accuracy point


def test_early_stop_cost_is_epochs_over_52_and_surrogate_time(lcbench):
    task = lcbench.task("167149")
    config = sample_configs(1, seed=4)[0]
    full = task.evaluate(config, rng=np.random.default_rng(0))
    early = task.evaluate(config, fraction=0.5, rng=np.random.default_rng(0))
    assert len(full.steps) == EPOCHS and len(early.steps) == 26
    assert early.cost == pytest.approx(0.5) and full.cost == 1.0
    assert 0 < early.cost_real <= full.cost_real
    with pytest.raises(ValueError, match="fraction"):
        task.evaluate(config, fraction=0.0, rng=np.random.default_rng(0))


def test_negative_noise_is_rejected(lcbench):
    with pytest.raises(ValueError, match="noise_sd"):
        LCBenchTask(name="3945", surrogate=lcbench.tasks[0]._surrogate, features={}, noise_sd=-1)


def test_budgeted_objective_never_exceeds_the_budget(lcbench):
    task = lcbench.task("3945")
    study = optuna.create_study(direction="maximize", pruner=optuna.pruners.NopPruner())
    costs = []

    def record(trial, evaluation):
        costs.append(evaluation.cost)

    objective = task.objective(seed=0, budget=2.5, on_evaluation=record)
    for _ in range(4):
        study.optimize(objective, n_trials=1)
    assert sum(costs) == pytest.approx(2.5, abs=1 / EPOCHS)
    assert study.trials[-1].user_attrs.get("budget_exhausted")
