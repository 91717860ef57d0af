"""AutoPipeSampler in the studies users really run (issue 14): configurations that fail,
conditional search spaces, values the study fixes, distributions that differ from the
prior's, runs that stop themselves, and studies other samplers started. Each test failed on
the sampler before these cases were handled."""

from __future__ import annotations

import itertools
import json
import math

import numpy as np
import optuna
import pytest
from optuna.distributions import CategoricalDistribution, FloatDistribution
from optuna.storages import RetryFailedTrialCallback
from optuna.trial import TrialState

from optuna_autopipe.candidates import config_key
from optuna_autopipe.corpus import Corpus, DatasetRuns
from optuna_autopipe.early_stop import PRIOR_SCORE_ATTR
from optuna_autopipe.ensemble import TreeParams
from optuna_autopipe.prior import Prior, fit_prior
from optuna_autopipe.sampler import CLAIM_ATTR, AutoPipeSampler

FEATURES = {"size": 1.0}
OPT = ("adam", "sgd")
LAYERS = (4, 8)
BS = (8, 16, 32, 64)
SPACE = {"opt": CategoricalDistribution(OPT), "layers": CategoricalDistribution(LAYERS)}


def _fit(space, configs_of, value, n=4) -> Prior:
    datasets = []
    for i in range(n):
        rng = np.random.default_rng(i)
        configs = configs_of(rng)
        scores = [value(c) + rng.normal(0, 0.05) for c in configs]
        datasets.append(DatasetRuns(f"d{i}", "maximize", {"size": float(i)}, configs, scores))
    return fit_prior(Corpus(space, datasets), grid=[TreeParams(n_estimators=20)], n_models=1)


@pytest.fixture(scope="module")
def prior() -> Prior:
    """Over opt × layers × bs; it likes sgd, 8 layers and the largest batch (bs = 64)."""
    space = {**SPACE, "bs": CategoricalDistribution(BS)}
    grid = [dict(zip(space, v, strict=True)) for v in itertools.product(OPT, LAYERS, BS)]

    def value(c):
        return (c["opt"] == "sgd") + c["layers"] / 8 + c["bs"] / 64

    return _fit(space, lambda rng: grid * 2, value)


def _claim_describes_the_run(trial) -> bool:
    claim = trial.user_attrs[CLAIM_ATTR]
    return config_key({n: trial.params.get(n) for n in json.loads(claim)}) == claim


# --- 1. failed configurations ----------------------------------------------------------------


def _oom_objective(trial):
    bs = trial.suggest_categorical("bs", list(BS))
    if bs == 64:
        raise RuntimeError("CUDA out of memory")
    return float(bs)


def test_a_configuration_that_failed_is_not_proposed_again_without_a_prior():
    study = optuna.create_study(direction="maximize", sampler=AutoPipeSampler(None, seed=0))
    study.optimize(_oom_objective, n_trials=8, catch=(RuntimeError,))
    failed = [t for t in study.trials if t.state == TrialState.FAIL]
    assert len(failed) <= 1
    assert study.best_params == {"bs": 32}


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_the_priors_favourite_failing_advances_the_schedule_and_is_not_retried(prior, seed):
    sampler = AutoPipeSampler(prior, FEATURES, seed=seed, budget=12)

    def objective(trial):
        config = {n: trial.suggest_categorical(n, list(d.choices)) for n, d in prior_space(prior)}
        if config["bs"] == 64:
            raise RuntimeError("CUDA out of memory")
        return (config["opt"] == "sgd") + config["layers"] / 8 + config["bs"] / 64

    study = optuna.create_study(direction="maximize", sampler=sampler)
    study.optimize(objective, n_trials=12, catch=(RuntimeError,))
    keys = [t.user_attrs[CLAIM_ATTR] for t in study.trials]
    assert len(set(keys)) == 12  # nothing proposed twice, failures included
    failed = [t for t in study.trials if t.state == TrialState.FAIL]
    # the model learns that bs = 64 fails: at most the first failures before it can tell
    assert len(failed) <= 3, [t.params for t in failed]
    assert study.trials[-1].user_attrs["autopipe:phase"] == "bo"
    assert study.trials[-1].user_attrs["autopipe:failures"] == len(failed)
    assert study.best_params["bs"] != 64


def prior_space(prior):
    return prior.ranker.encoder.space.items()


def _memory_objective(trial):
    """Out of memory above 128 sequences per batch, whatever the other settings."""
    bs = trial.suggest_int("bs", 8, 256, log=True)
    lr = trial.suggest_float("lr", 1e-5, 1e-2, log=True)
    wd = trial.suggest_float("wd", 0.0, 0.1)
    if bs > 128:
        raise RuntimeError("CUDA out of memory")
    return -((math.log10(lr) + 3.5) ** 2) - wd + bs / 256


def _failures(max_failure_risk: float, seed: int) -> int:
    sampler = AutoPipeSampler(None, seed=seed, n_samples=256, max_failure_risk=max_failure_risk)
    study = optuna.create_study(direction="maximize", sampler=sampler)
    study.optimize(_memory_objective, n_trials=14, catch=(RuntimeError,))
    return sum(t.state == TrialState.FAIL for t in study.trials)


def test_the_sampler_learns_the_region_that_fails_not_only_the_points():
    """With the failure model, the out-of-memory region (bs > 128, any lr and wd) is avoided
    after the first failures; without it (max_failure_risk=1) only the failed points are."""
    with_model = sum(_failures(0.5, seed) for seed in range(3))
    without = sum(_failures(1.0, seed) for seed in range(3))
    assert with_model < without, (with_model, without)


def test_the_failure_risk_is_in_the_explanation_attrs():
    study = optuna.create_study(
        direction="maximize", sampler=AutoPipeSampler(None, seed=1, n_samples=256)
    )
    study.optimize(_memory_objective, n_trials=10, catch=(RuntimeError,))
    later = [t for t in study.trials if t.user_attrs.get("autopipe:failures", 0) > 0]
    assert later  # seed 1 meets the out-of-memory region within 10 trials
    assert all(0.0 <= t.user_attrs["autopipe:failure_risk"] <= 0.5 for t in later)


def test_a_retry_of_a_failed_trial_is_still_run():
    """``RetryFailedTrialCallback`` re-enqueues a trial whose worker died: the retry runs the
    same configuration, and once it finishes the configuration no longer counts as failed."""
    study = optuna.create_study(direction="maximize", sampler=AutoPipeSampler(None, seed=0))
    study.enqueue_trial({"bs": 64})
    study.optimize(_oom_objective, n_trials=1, catch=(RuntimeError,))
    RetryFailedTrialCallback()(study, study.trials[0])
    study.optimize(lambda t: float(t.suggest_categorical("bs", list(BS))), n_trials=1)
    assert study.trials[1].params == {"bs": 64}
    assert study.trials[1].state == TrialState.COMPLETE


def test_a_failing_branch_of_a_conditional_space_fails_once_per_configuration_it_ran():
    """adam crashes whatever the batch; momentum exists only for sgd. A failed adam run
    excludes every candidate that agrees with what it held (any momentum), and its claim
    holds no momentum."""
    space = {
        "opt": CategoricalDistribution(["adam", "sgd"]),
        "momentum": CategoricalDistribution([0.0, 0.5, 0.9]),
        "bs": CategoricalDistribution([8, 16]),
    }

    def objective(trial):
        opt = trial.suggest_categorical("opt", ["adam", "sgd"])
        m = trial.suggest_categorical("momentum", [0.0, 0.5, 0.9]) if opt == "sgd" else 0.0
        bs = trial.suggest_categorical("bs", [8, 16])
        if opt == "adam":
            raise RuntimeError("adam crashes")
        return m + bs / 16

    for seed in (0, 1):
        study = optuna.create_study(
            direction="maximize", sampler=AutoPipeSampler(None, seed=seed, search_space=space)
        )
        study.optimize(objective, n_trials=8, catch=(RuntimeError,))
        failed = [t for t in study.trials if t.state == TrialState.FAIL]
        assert len(failed) <= 2, [t.params for t in failed]
        assert len({config_key(t.params) for t in failed}) == len(failed)
        for trial in failed:
            assert json.loads(trial.user_attrs[CLAIM_ATTR])["momentum"] is None


def test_when_every_run_failed_every_candidate_is_at_risk():
    def objective(trial):
        trial.suggest_categorical("bs", list(BS))
        raise RuntimeError("the cluster is down")

    study = optuna.create_study(sampler=AutoPipeSampler(None, seed=0))
    study.optimize(objective, n_trials=3, catch=(RuntimeError,))
    last = study.trials[-1].user_attrs
    assert last["autopipe:failures"] == 2 and last["autopipe:failure_risk"] == pytest.approx(3 / 4)


# --- 2. conditional spaces -------------------------------------------------------------------

UNION = {
    "c": CategoricalDistribution(["a", "b"]),
    "x": FloatDistribution(0, 1),
    "y": FloatDistribution(0, 1),
}


def _branching(trial):
    c = trial.suggest_categorical("c", ["a", "b"])
    return trial.suggest_float("x" if c == "a" else "y", 0, 1)


def test_trials_of_a_conditional_space_count_on_the_parameters_they_hold():
    sampler = AutoPipeSampler(None, seed=0, search_space=UNION, n_startup=2, n_samples=256)
    study = optuna.create_study(sampler=sampler)
    study.optimize(_branching, n_trials=6)
    keys = [config_key(t.params) for t in study.trials]
    assert len(set(keys)) == 6
    assert any(t.user_attrs["autopipe:gp_mean"] != 0.0 for t in study.trials[2:])
    best = sampler.recommend(study)
    assert best == study.best_params  # the inactive parameter is left out


def test_an_inferred_conditional_space_runs_and_its_claims_hold_the_active_parameters():
    sampler = AutoPipeSampler(None, seed=3, n_samples=256)
    study = optuna.create_study(sampler=sampler)
    study.optimize(_branching, n_trials=8)
    assert all(t.state == TrialState.COMPLETE for t in study.trials)
    for trial in study.trials[1:]:
        assert _claim_describes_the_run(trial), (trial.params, trial.user_attrs)


@pytest.fixture(scope="module")
def conditional_prior() -> Prior:
    """Fitted with ``Corpus.from_studies`` on studies of the branching objective."""
    storage = optuna.storages.InMemoryStorage()
    for i in range(3):
        study = optuna.create_study(
            study_name=f"s{i}", storage=storage, sampler=optuna.samplers.RandomSampler(seed=i)
        )
        study.set_user_attr("autopipe:dataset_profile", {"size": float(i)})
        study.optimize(lambda t, i=i: _branching(t) + 0.1 * i, n_trials=30)
    corpus = Corpus.from_studies(storage, ["s0", "s1", "s2"])
    return fit_prior(corpus, grid=[TreeParams(n_estimators=20)], n_models=1)


def test_a_branch_that_skips_a_parameter_the_prior_always_saw_is_not_an_error(prior):
    """The prior always saw ``layers``; the objective skips it at the largest batch. The
    study goes on (the parameter is inactive there), and a study that never suggests it
    still gets the clear error."""

    def objective(trial):
        opt = trial.suggest_categorical("opt", list(OPT))
        bs = trial.suggest_categorical("bs", list(BS))
        layers = trial.suggest_categorical("layers", list(LAYERS)) if bs < 64 else 4
        return (opt == "sgd") + layers / 8 + bs / 64

    study = optuna.create_study(direction="maximize", sampler=AutoPipeSampler(prior, FEATURES))
    study.enqueue_trial({"opt": "sgd", "bs": 64})
    study.optimize(objective, n_trials=8)
    assert all(t.state == TrialState.COMPLETE for t in study.trials)
    assert any("layers" not in t.params for t in study.trials)


def test_a_prior_over_a_conditional_space_scores_each_branch(conditional_prior):
    assert conditional_prior.ranker.conditional == {"x", "y"}
    sampler = AutoPipeSampler(conditional_prior, FEATURES, seed=0, n_samples=256)
    study = optuna.create_study(sampler=sampler)
    study.optimize(_branching, n_trials=8)  # no "lacks ['y']"
    assert all(t.state == TrialState.COMPLETE for t in study.trials)
    assert {t.params["c"] for t in study.trials} == {"a", "b"}
    for trial in study.trials:
        assert math.isfinite(trial.user_attrs[PRIOR_SCORE_ATTR])
        assert _claim_describes_the_run(trial)


# --- 3. values the study fixes ---------------------------------------------------------------

FULL = {**SPACE, "bs": CategoricalDistribution(BS)}
GRID = [dict(zip(FULL, v, strict=True)) for v in itertools.product(OPT, LAYERS, BS)]


def _standardised_prior_scores(prior: Prior) -> dict[str, float]:
    """s(x) over the grid, as the sampler standardises it (over its discrete candidates)."""
    raw = prior.ranker.raw_scores(GRID, FEATURES)
    return {
        config_key(c): float(v) for c, v in zip(GRID, (raw - raw.mean()) / raw.std(), strict=True)
    }


def _suggest_full(trial) -> dict:
    return {n: trial.suggest_categorical(n, list(d.choices)) for n, d in FULL.items()}


def _explains_what_ran(trial, scores) -> bool:
    return _claim_describes_the_run(trial) and trial.user_attrs[PRIOR_SCORE_ATTR] == (
        pytest.approx(scores[config_key(trial.params)])
    )


def test_a_parameter_suggested_with_one_value_is_scored_with_that_value(prior):
    """s(x) is the same whether a value is fixed by a single-valued suggestion, an enqueued
    trial or a ``PartialFixedSampler``: standardised over the prior's own space."""
    scores = _standardised_prior_scores(prior)
    sampler = AutoPipeSampler(prior, FEATURES, seed=0)
    study = optuna.create_study(direction="maximize", sampler=sampler)

    def objective(trial):
        opt = trial.suggest_categorical("opt", list(OPT))
        layers = trial.suggest_categorical("layers", [4])
        bs = trial.suggest_categorical("bs", [8, 16, 32])
        return (opt == "sgd") + layers / 8 + bs / 64

    study.optimize(objective, n_trials=6)  # no "lacks parameters the prior scores: ['layers']"
    assert all(t.state == TrialState.COMPLETE for t in study.trials)
    assert len({config_key(t.params) for t in study.trials}) == 6
    for trial in study.trials:
        assert _claim_describes_the_run(trial)
        assert trial.user_attrs[PRIOR_SCORE_ATTR] == pytest.approx(scores[config_key(trial.params)])


def test_a_partial_fixed_sampler_chooses_among_configurations_that_agree(prior):
    scores = _standardised_prior_scores(prior)
    inner = AutoPipeSampler(prior, FEATURES, seed=0, search_space=FULL)
    sampler = optuna.samplers.PartialFixedSampler({"opt": "adam"}, inner)
    study = optuna.create_study(direction="maximize", sampler=sampler)
    study.optimize(lambda t: float(_suggest_full(t)["bs"]), n_trials=6)
    assert all(t.state == TrialState.COMPLETE for t in study.trials)
    assert {t.params["opt"] for t in study.trials} == {"adam"}
    assert len({config_key(t.params) for t in study.trials}) == 6
    for trial in study.trials:
        assert _explains_what_ran(trial, scores)


@pytest.mark.parametrize("search_space", [None, FULL], ids=["inferred", "given"])
def test_an_enqueued_partial_configuration_is_completed_and_explained_as_it_ran(
    prior, search_space
):
    scores = _standardised_prior_scores(prior)
    sampler = AutoPipeSampler(prior, FEATURES, seed=0, search_space=search_space)
    study = optuna.create_study(direction="maximize", sampler=sampler)
    study.optimize(lambda t: float(_suggest_full(t)["bs"]), n_trials=3)
    study.enqueue_trial({"opt": "adam", "bs": 8})
    study.enqueue_trial({"layers": 4})
    study.optimize(lambda t: float(_suggest_full(t)["bs"]), n_trials=2)
    first, second = study.trials[3], study.trials[4]
    assert (first.params["opt"], first.params["bs"]) == ("adam", 8)
    assert second.params["layers"] == 4
    for trial in study.trials:
        assert _explains_what_ran(trial, scores)


# --- 4. distributions that differ from the prior's --------------------------------------------


def test_a_categorical_choice_the_prior_never_saw_fails_the_first_trial_clearly(prior):
    study = optuna.create_study(sampler=AutoPipeSampler(prior, FEATURES, seed=0))

    def objective(trial):
        trial.suggest_categorical("opt", ["adam", "adamw"])
        return 0.0

    with pytest.raises(
        ValueError, match=r"'opt' has value 'adamw'.*known choices: \['adam', 'sgd'\]"
    ):
        study.optimize(objective, n_trials=1)
    assert study.trials[0].state == TrialState.FAIL and "opt" not in study.trials[0].params


def test_a_label_parameter_suggested_as_a_number_fails_clearly(prior):
    study = optuna.create_study(sampler=AutoPipeSampler(prior, FEATURES, seed=0))
    with pytest.raises(ValueError, match=r"'opt' is FloatDistribution.*prior's corpus"):
        study.optimize(lambda t: t.suggest_float("opt", 0.0, 1.0), n_trials=1)


# --- 5. studies other samplers started -------------------------------------------------------


def test_the_budget_counts_the_samplers_own_trials(prior):
    study = optuna.create_study(direction="maximize", sampler=optuna.samplers.RandomSampler(seed=0))
    study.optimize(lambda t: float(_suggest_full(t)["bs"]), n_trials=5)
    sampler = AutoPipeSampler(prior, FEATURES, seed=0, budget=10)
    study.sampler = sampler
    study.optimize(lambda t: float(_suggest_full(t)["bs"]), n_trials=2)
    first, second = study.trials[5].user_attrs, study.trials[6].user_attrs
    assert first["autopipe:kappa"] == pytest.approx(sampler.schedule.kappa(0))
    assert second["autopipe:kappa"] == pytest.approx(sampler.schedule.kappa(1))
    # the five observations it found stand in for the warm start
    assert first["autopipe:phase"] == "bo"
