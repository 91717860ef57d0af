"""SmacSampler: SMAC3 through Optuna (types, bounds, cost sign, pruning, seeds, files)."""

from __future__ import annotations

import gc
import math
import sys
import tempfile
from pathlib import Path

import pytest

pytest.importorskip("smac")

import optuna

from optuna_autopipe.bench.smac_sampler import SmacSampler

optuna.logging.set_verbosity(optuna.logging.WARNING)

CHOICES = [None, "a", True, 2.5]


def quadratic(trial: optuna.Trial) -> float:
    """Minimum 0 at x=1, y=0.1, n=3, c="a"."""
    x = trial.suggest_float("x", -5.0, 5.0)
    y = trial.suggest_float("y", 1e-3, 10.0, log=True)
    n = trial.suggest_int("n", 0, 10)
    c = trial.suggest_categorical("c", CHOICES)
    return (x - 1) ** 2 + (math.log10(y) + 1) ** 2 + (n - 3) ** 2 / 10 + (c != "a")


def params(study: optuna.Study, n: int | None = None) -> list[dict]:
    return [t.params for t in study.trials[:n]]


def test_quadratic_types_bounds_and_progress() -> None:
    study = optuna.create_study(sampler=SmacSampler(seed=0, n_trials=20))
    study.optimize(quadratic, n_trials=20)

    assert all(t.state == optuna.trial.TrialState.COMPLETE for t in study.trials)
    for p in params(study):
        assert type(p["x"]) is float and -5.0 <= p["x"] <= 5.0
        assert type(p["y"]) is float and 1e-3 <= p["y"] <= 10.0
        assert type(p["n"]) is int and 0 <= p["n"] <= 10
        assert any(p["c"] is choice for choice in CHOICES)
    values = sorted(t.value for t in study.trials)
    bad = (-5 - 1) ** 2 + (math.log10(10.0) + 1) ** 2 + (10 - 3) ** 2 / 10 + 1
    assert study.best_value < values[len(values) // 4] < bad


def test_steps_logs_and_single_values_stay_on_their_grid() -> None:
    def objective(trial: optuna.Trial) -> float:
        a = trial.suggest_float("a", 0.0, 1.0, step=0.1)
        b = trial.suggest_int("b", 2, 20, step=3)
        k = trial.suggest_int("k", 1, 1000, log=True)
        z = trial.suggest_float("z", 2.0, 2.0)
        return (a - 0.3) ** 2 + (b - 8) ** 2 + math.log(k) + z

    study = optuna.create_study(sampler=SmacSampler(seed=1, n_trials=8))
    study.optimize(objective, n_trials=8)

    for p in params(study):
        assert type(p["a"]) is float and 0.0 <= p["a"] <= 1.0
        assert abs(p["a"] * 10 - round(p["a"] * 10)) < 1e-9
        assert type(p["b"]) is int and p["b"] in range(2, 21, 3)
        assert type(p["k"]) is int and 1 <= p["k"] <= 1000
        assert p["z"] == 2.0


def test_same_seed_same_params_different_seed_different() -> None:
    runs = []
    for seed in (3, 3, 4):
        study = optuna.create_study(sampler=SmacSampler(seed=seed, n_trials=10))
        study.optimize(quadratic, n_trials=10)
        runs.append(params(study))
    assert runs[0] == runs[1]
    assert runs[0] != runs[2]


def test_maximize_tells_the_negated_value() -> None:
    # Maximizing -f must feed SMAC the very costs that minimizing f does.
    minimized = optuna.create_study(sampler=SmacSampler(seed=5, n_trials=10))
    minimized.optimize(quadratic, n_trials=10)
    maximized = optuna.create_study(direction="maximize", sampler=SmacSampler(seed=5, n_trials=10))
    maximized.optimize(lambda t: -quadratic(t), n_trials=10)
    assert params(maximized) == params(minimized)


def test_pruned_trial_is_told_its_last_intermediate_value() -> None:
    def objective(trial: optuna.Trial, prune: bool) -> float:
        value = quadratic(trial)
        if trial.number == 5:
            trial.report(value + 1.0, step=0)
            trial.report(value, step=1)
            if prune:
                raise optuna.TrialPruned
        return value

    pruned = optuna.create_study(sampler=SmacSampler(seed=6, n_trials=10))
    pruned.optimize(lambda t: objective(t, prune=True), n_trials=10)
    completed = optuna.create_study(sampler=SmacSampler(seed=6, n_trials=10))
    completed.optimize(lambda t: objective(t, prune=False), n_trials=10)

    assert pruned.trials[5].state == optuna.trial.TrialState.PRUNED
    assert params(pruned) == params(completed)


def test_enqueued_trials_are_told_with_their_own_params_and_failures_skipped() -> None:
    optimum = {"x": 1.0, "y": 0.1, "n": 3, "c": "a"}
    sampler = SmacSampler(seed=7, n_trials=10)
    study = optuna.create_study(sampler=sampler)

    def objective(trial: optuna.Trial) -> float:
        if trial.number == 2:
            raise RuntimeError("boom")
        return quadratic(trial)

    study.enqueue_trial(optimum)  # trial 0: told when SMAC is built
    study.optimize(objective, n_trials=4, catch=(RuntimeError,))
    study.enqueue_trial(optimum)  # trial 4: fully fixed, SMAC is not asked
    study.enqueue_trial({"x": -4.0, "c": "a"})  # trial 5: SMAC asked, but x is fixed
    study.optimize(objective, n_trials=3)

    states = [t.state for t in study.trials]
    assert states.count(optuna.trial.TrialState.FAIL) == 1
    assert states.count(optuna.trial.TrialState.COMPLETE) == 6
    assert study.trials[0].params == study.trials[4].params == optimum
    assert study.trials[5].params["x"] == -4.0
    # SMAC was told each finished trial's own parameters and value.
    assert sampler._smac is not None
    runhistory = sampler._smac.runhistory
    told = [(dict(c), runhistory.get_cost(c)) for c in runhistory.get_configs()]
    for trial in study.get_trials(states=(optuna.trial.TrialState.COMPLETE,)):
        config = {**trial.params, "c": CHOICES.index(trial.params["c"])}
        assert (pytest.approx(config), pytest.approx(trial.value)) in told
    assert len(told) == 6


def test_parallel_threads() -> None:
    study = optuna.create_study(sampler=SmacSampler(seed=8, n_trials=8))
    study.optimize(quadratic, n_trials=8, n_jobs=2)
    assert all(t.state == optuna.trial.TrialState.COMPLETE for t in study.trials)
    assert len({tuple(p.items()) for p in params(study)}) == 8


def test_run_files_go_to_a_removed_temporary_directory_or_output_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cwd, tmp, out = tmp_path / "cwd", tmp_path / "tmp", tmp_path / "out"
    for folder in (cwd, tmp):
        folder.mkdir()
    monkeypatch.chdir(cwd)
    monkeypatch.setattr(tempfile, "tempdir", str(tmp))

    study = optuna.create_study(sampler=SmacSampler(seed=9, n_trials=4))
    study.optimize(quadratic, n_trials=3)
    assert any(tmp.iterdir())
    del study
    gc.collect()
    assert not any(tmp.iterdir())

    study = optuna.create_study(sampler=SmacSampler(seed=9, n_trials=4, output_directory=str(out)))
    study.optimize(quadratic, n_trials=3)
    assert list(out.rglob("runhistory.json"))
    assert not any(cwd.iterdir())


def test_n_initial_and_argument_checks() -> None:
    study = optuna.create_study(sampler=SmacSampler(seed=10, n_trials=20, n_initial=0))
    study.optimize(quadratic, n_trials=3)
    assert len(study.trials) == 3
    with pytest.raises(ValueError, match="n_initial"):
        SmacSampler(n_trials=5, n_initial=6)
    with pytest.raises(ValueError, match="n_trials"):
        SmacSampler(n_trials=0)


def test_multi_objective_is_refused() -> None:
    study = optuna.create_study(directions=["minimize", "minimize"], sampler=SmacSampler())
    with pytest.raises(ValueError, match="single-objective"):
        study.optimize(lambda t: (quadratic(t), 0.0), n_trials=1)


def test_missing_smac_says_how_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "smac", None)
    with pytest.raises(ImportError, match=r"optuna-autopipe\[smac\]"):
        SmacSampler()


def test_harness_smac_results_do_not_depend_on_the_callers_hash_seed(tmp_path):
    """SMAC depends on PYTHONHASHSEED; the harness pins it in its workers."""
    import os
    import subprocess
    import sys

    tables = []
    for hash_seed in ("1", "2"):
        out = tmp_path / hash_seed
        argv = ["bench", "--benchmark", "nmt", "--methods", "smac", "--datasets", "ted-ru-en"]
        argv += ["--budget", "8", "--seeds", "1", "--workers", "1", "--out", str(out)]
        env = {**os.environ, "PYTHONHASHSEED": hash_seed}
        code = "import sys; from optuna_autopipe.cli import main; sys.exit(main(sys.argv[1:]))"
        subprocess.run(
            [sys.executable, "-c", code, *argv], env=env, check=True, capture_output=True
        )
        tables.append((out / "results.csv").read_text().splitlines()[1])
    assert tables[0] == tables[1]
