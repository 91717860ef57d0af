"""Online calibration: the prior's weight estimated on the study (``calibration.PriorWeight``),
the calibrated warm start and its seeds, promotion of the best early stops with the best
verified configuration recommended (``promotion.py``), and replays resuming a promoted run."""

from __future__ import annotations

import itertools
import math

import numpy as np
import optuna
import pytest
from optuna.distributions import CategoricalDistribution
from optuna.trial import TrialState

from optuna_autopipe.calibration import PriorWeight
from optuna_autopipe.candidates import config_key
from optuna_autopipe.corpus import Corpus, DatasetRuns
from optuna_autopipe.early_stop import (
    CHECKPOINT_ATTR,
    PROMOTED_FROM_ATTR,
    PROXY_ATTR,
    PROXY_VARIANCE_ATTR,
    STOP_STEP_ATTR,
    AutoPipeEarlyStop,
    promote,
)
from optuna_autopipe.ensemble import TreeParams
from optuna_autopipe.prior import Prior, fit_prior
from optuna_autopipe.promotion import promote_best, signal_agreement
from optuna_autopipe.sampler import AutoPipeSampler

SPACE = {
    "a": CategoricalDistribution(("p", "q", "r", "s")),
    "b": CategoricalDistribution((1, 2, 3, 4, 5)),
}
GRID = [{"a": a, "b": b} for a, b in itertools.product(("p", "q", "r", "s"), (1, 2, 3, 4, 5))]


def _value(config) -> float:
    return {"p": 0.0, "q": 1.0, "r": 2.0, "s": 3.0}[config["a"]] + 0.5 * config["b"]


def _params(trial) -> dict:
    return {name: trial.suggest_categorical(name, d.choices) for name, d in SPACE.items()}


@pytest.fixture(scope="module")
def prior() -> Prior:
    """A prior learned from three datasets where ``_value`` is the score."""
    rng = np.random.default_rng(0)
    datasets = [
        DatasetRuns(
            f"d{i}",
            "maximize",
            {},
            GRID * 2,
            [_value(c) + rng.normal(0, 0.1) for c in GRID * 2],
        )
        for i in range(3)
    ]
    return fit_prior(Corpus(dict(SPACE), datasets), grid=[TreeParams(n_estimators=20)])


# --- the prior's weight ---------------------------------------------------------------------


def test_the_weight_is_the_posterior_mean_of_a_bayesian_regression_on_the_prior_scores():
    rng = np.random.default_rng(1)
    s = rng.normal(size=8)
    z = 0.3 + 0.6 * s + rng.normal(0, 0.3, 8)
    v = rng.uniform(0.05, 0.5, 8)
    weight = PriorWeight(start=1.0, prior_sd=0.5, unexplained=0.5)
    # the same posterior by brute force: weighted least squares in (b, w), with the Gaussian
    # prior on w as one more row and a (nearly) flat prior on b as another
    a = 1 / np.sqrt(v + 0.5)
    rows = np.vstack([np.c_[a, a * s], [0.0, 1 / 0.5], [1e-8, 0.0]])
    target = np.r_[a * z, 1.0 / 0.5, 0.0]
    expected = np.linalg.lstsq(rows, target, rcond=None)[0][1]
    mean, sd = weight.posterior(s, z, v)
    assert mean == pytest.approx(expected, rel=1e-6)
    assert 0 < sd < 0.5  # the evidence narrowed the prior N(1, 0.5²)


def test_the_weight_starts_at_its_prior_follows_agreement_and_drops_to_zero_when_contradicted():
    weight = PriorWeight()
    empty = np.array([])
    assert weight.weight(empty, empty, empty) == 1.0
    s = np.linspace(-2, 2, 15)
    low = np.full(15, 0.1)
    assert weight.weight(s, s, low) == pytest.approx(1.0)  # agreement: clipped at the start
    assert weight.weight(s, 0.4 * s, low) == pytest.approx(0.4, abs=0.08)
    assert weight.posterior(s, -s, low)[0] < 0 and weight.weight(s, -s, low) == 0.0
    flat = np.full(15, 2.0)  # the prior's own top picks: nothing to learn about the slope
    assert weight.weight(flat, np.linspace(-1, 1, 15), low) == pytest.approx(1.0)


@pytest.mark.parametrize("field", ["start", "prior_sd", "unexplained"])
@pytest.mark.parametrize("value", [0.0, -1.0, math.inf, math.nan])
def test_bad_prior_weight_settings_are_refused(field, value):
    with pytest.raises(ValueError, match=f"PriorWeight.{field} must be positive"):
        PriorWeight(**{field: value})


def _lambdas(prior: Prior, sign: float, **options) -> list[float]:
    sampler = AutoPipeSampler(prior, {}, seed=0, budget=12, **options)
    study = optuna.create_study(direction="maximize", sampler=sampler)
    study.optimize(lambda t: sign * _value(_params(t)), n_trials=10)
    return [t.user_attrs["autopipe:lambda"] for t in study.trials]


def test_a_prior_the_study_contradicts_loses_its_weight_and_one_it_confirms_keeps_it(prior):
    confirmed = _lambdas(prior, 1.0)
    contradicted = _lambdas(prior, -1.0)  # a dataset where the prior's order is reversed
    assert confirmed[0] == contradicted[0] == 1.0  # no evidence yet
    assert min(confirmed[4:]) > 0.7
    assert max(contradicted[4:]) < 0.2
    scheduled = _lambdas(prior, -1.0, procedure="paper")  # the paper's fixed schedule
    assert min(scheduled) >= 0.5


def test_bad_procedure_options_are_refused(prior):
    with pytest.raises(ValueError, match="procedure must be"):
        AutoPipeSampler(prior, {}, procedure="fast")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="prior_weight must be"):
        AutoPipeSampler(prior, {}, prior_weight="adaptive")  # type: ignore[arg-type]
    for option in ("n_promote", "n_startup"):
        with pytest.raises(ValueError, match=f"{option} must be >= 0"):
            AutoPipeSampler(prior, {}, **{option: -1})
    with pytest.raises(ValueError, match="startup_top must be >= 1"):
        AutoPipeSampler(prior, {}, startup_top=0)


# --- the warm start and its seeds -------------------------------------------------------------


def _first_trials(prior: Prior, seed: int, **options) -> list[str]:
    sampler = AutoPipeSampler(prior, {}, seed=seed, budget=12, **options)
    study = optuna.create_study(direction="maximize", sampler=sampler)
    study.optimize(lambda t: _value(_params(t)), n_trials=3)
    return [config_key(t.params) for t in study.trials]


def test_seeds_change_the_calibrated_warm_start_within_the_priors_best_and_the_probe(prior):
    top = np.argsort(-prior.score(GRID, {}), kind="stable")[:5]
    best5 = {config_key(GRID[i]) for i in top}
    runs = [_first_trials(prior, seed) for seed in range(8)]
    assert all(run[0] in best5 for run in runs)
    assert len({run[0] for run in runs}) >= 2  # replicates differ where the prior is unsure
    assert len({run[2] for run in runs}) >= 4  # the probe: at random in the prior's lower half
    paper = {tuple(_first_trials(prior, seed, procedure="paper")) for seed in range(3)}
    assert {run[0] for run in paper} == {config_key(GRID[top[0]])}  # the paper: argmax


def test_the_probe_lands_in_the_share_of_the_prior_probe_pool_names(prior):
    scores = dict(zip((config_key(c) for c in GRID), prior.score(GRID, {}), strict=True))
    upper = []
    for seed in range(8):
        *tried, probe = _first_trials(prior, seed, probe_pool=0.1)
        free = sorted(v for k, v in scores.items() if k not in tried)  # 18: the decile is 1
        assert scores[probe] == pytest.approx(free[0])
        *tried, probe = _first_trials(prior, seed)  # the default: the lower half
        free = sorted(v for k, v in scores.items() if k not in tried)
        assert scores[probe] <= free[len(free) // 2 - 1] + 1e-12
        *tried, probe = _first_trials(prior, seed, probe_pool=1.0)
        free = sorted(v for k, v in scores.items() if k not in tried)
        upper.append(scores[probe] > free[len(free) // 2 - 1])
    assert any(upper)  # probe_pool=1: anywhere, the upper half too
    for bad in (0.0, 1.5):
        with pytest.raises(ValueError, match=r"probe_pool must be in \(0, 1\]"):
            AutoPipeSampler(prior, {}, probe_pool=bad)


# --- promotion ----------------------------------------------------------------------------------


def _early_stopped_study(prior: Prior, proxies: dict[str, float]) -> tuple:
    """A study whose trials are early-stopped with the given proxies (by configuration)."""
    sampler = AutoPipeSampler(prior, {}, seed=0, budget=len(proxies))
    study = optuna.create_study(direction="maximize", sampler=sampler)
    for config in proxies:
        a, b = config.split("/")
        study.enqueue_trial({"a": a, "b": int(b)})

    def early(trial) -> float:
        params = _params(trial)
        trial.set_user_attr(PROXY_ATTR, proxies[f"{params['a']}/{params['b']}"])
        trial.set_user_attr(PROXY_VARIANCE_ATTR, 0.1)
        trial.set_user_attr(STOP_STEP_ATTR, 5)
        trial.set_user_attr(CHECKPOINT_ATTR, f"ckpt-{trial.number}")
        raise optuna.TrialPruned()

    study.optimize(early, n_trials=len(proxies))
    return sampler, study


def test_promotion_runs_the_signals_best_and_the_best_verified_one_is_recommended(prior):
    proxies = {"p/1": 2.0, "q/2": 1.5, "r/3": 1.0, "s/4": 0.5, "s/5": -1.0}
    sampler, study = _early_stopped_study(prior, proxies)
    assert sampler.n_promote == 3
    assert sampler.recommend(study) == {"a": "p", "b": 1}  # before: the best proxy
    promoted = promote_best(study, sampler)
    assert promoted == [0, 1, 2]  # the three best proxies, best first
    assert promote_best(study, sampler) == [3, 4]  # waiting promotions are not repeated
    waiting = study.get_trials(states=(TrialState.WAITING,))
    assert [t.user_attrs[PROMOTED_FROM_ATTR] for t in waiting] == [0, 1, 2, 3, 4]
    assert [t.user_attrs[CHECKPOINT_ATTR] for t in waiting[:3]] == ["ckpt-0", "ckpt-1", "ckpt-2"]
    # full fidelity: the signal's second choice is really the best of the three
    truth = {"p/1": 1.0, "q/2": 3.0, "r/3": 2.0, "s/4": 0.0, "s/5": 0.5}
    study.optimize(lambda t: truth["{a}/{b}".format(**_params(t))], n_trials=3)
    assert sampler.recommend(study) == {"a": "q", "b": 2}  # the best verified
    # the signal put p > q > r, the full values say q > r > p: Spearman 1 − 6·6 / (3·8) = −0.5
    assert signal_agreement(study, sampler) == pytest.approx(-0.5)
    assert promote_best(study, sampler, n=0) == []
    with pytest.raises(ValueError, match="n must be >= 0"):
        promote_best(study, sampler, n=-1)


def test_a_promoted_replay_resumes_its_run_and_costs_only_the_rest(nmt):
    task = nmt.task("ted-ru-en")
    evaluations = {}
    objective = task.objective(
        seed=7, fraction=0.25, on_evaluation=lambda t, e: evaluations.update({t.number: e})
    )
    full = task.objective(seed=7, on_evaluation=lambda t, e: evaluations.update({t.number: e}))
    study = optuna.create_study(direction=task.direction, sampler=optuna.samplers.RandomSampler(3))
    study.optimize(objective, n_trials=4)
    stopped = [t for t in study.trials if t.state == TrialState.PRUNED]
    assert stopped, "no run was long enough to stop at 25%"
    first = stopped[0]
    steps = int(first.user_attrs[CHECKPOINT_ATTR].split(":")[-1])
    assert first.user_attrs[CHECKPOINT_ATTR] == f"replay:{first.number}:{steps}"
    promote(study, first)
    study.optimize(full, n_trials=1)
    resumed = evaluations[study.trials[-1].number]
    fresh = task.evaluate(first.params, rng=np.random.default_rng([7, first.number]))
    assert resumed.fidelity == 1.0
    assert resumed.value == fresh.value  # the same run, continued
    assert resumed.cost == pytest.approx(fresh.cost - steps / len(fresh.steps))
    assert resumed.cost + evaluations[first.number].cost == pytest.approx(fresh.cost)
    dynamics = study.trials[-1].user_attrs["autopipe:dynamics"]
    assert f"[{steps}," in dynamics and f"[{steps + 1}," in dynamics  # continued, not restarted


def test_the_hook_runs_a_promoted_trial_to_full_fidelity_whatever_its_fraction():
    study = optuna.create_study()
    study.enqueue_trial({}, user_attrs={PROMOTED_FROM_ATTR: 0})
    trial = study.ask()
    hook = AutoPipeEarlyStop(trial, total_steps=8, fraction=0.25)
    assert not any(hook.report(step, {"loss": 1.0 / step}) for step in range(1, 9))
    hook.finish()  # does not raise: a complete run
    plain = AutoPipeEarlyStop(study.ask(), total_steps=8, fraction=0.25)
    assert [plain.report(step, {"loss": 1.0}) for step in (1, 2)] == [False, True]


def test_signal_agreement_is_nan_without_a_warning_when_every_promoted_run_ties(prior):
    import warnings

    sampler, study = _early_stopped_study(prior, {"p/1": 2.0, "q/2": 1.5, "r/3": 1.0})
    promote_best(study, sampler)
    study.optimize(lambda t: 0.5, n_trials=3)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert math.isnan(signal_agreement(study, sampler))
