"""AutoPipeSampler: the acquisition formulas, the candidates, exclusion of taken configurations,
the explanation attrs, early-stopped trials as observations, ``recommend``, parallel workers
sharing a journal study, and bad inputs."""

from __future__ import annotations

import contextlib
import itertools
import logging
import math
import multiprocessing
import threading
import time
import tracemalloc

import numpy as np
import optuna
import pytest
from conftest import runs_with_dynamics, toy_losses
from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution
from optuna.storages import JournalStorage
from optuna.storages.journal import JournalFileBackend
from optuna.trial import TrialState, create_trial

from optuna_autopipe import sampler as sampler_module
from optuna_autopipe.acquisition import Schedule, best_first, offset, ucb
from optuna_autopipe.candidates import base_candidates, config_key, perturb
from optuna_autopipe.corpus import Corpus, DatasetRuns
from optuna_autopipe.early_stop import (
    PRIOR_SCORE_ATTR,
    PROXY_ATTR,
    PROXY_VARIANCE_ATTR,
    RESIDUAL_ATTR,
    STOP_STEP_ATTR,
    AutoPipeEarlyStop,
)
from optuna_autopipe.ensemble import TreeParams
from optuna_autopipe.prior import Prior, fit_prior
from optuna_autopipe.residual_gp import ResidualGP
from optuna_autopipe.sampler import CLAIM_ATTR, EXPLANATION_ATTRS, AutoPipeSampler

A_CHOICES = ("p", "q", "r")
B_CHOICES = (1, 2, 3, 4)
SPACE = {"a": CategoricalDistribution(A_CHOICES), "b": CategoricalDistribution(B_CHOICES)}
GRID = [{"a": a, "b": b} for a, b in itertools.product(A_CHOICES, B_CHOICES)]  # 12 points
FEATURES = {"size": 2.0}
EXPLAIN = (*EXPLANATION_ATTRS, CLAIM_ATTR)


def _value(config) -> float:
    return {"p": 0.0, "q": 1.0, "r": 2.0}[config["a"]] + 0.5 * config["b"]


def _suggest(trial) -> dict:
    return {
        "a": trial.suggest_categorical("a", A_CHOICES),
        "b": trial.suggest_categorical("b", B_CHOICES),
    }


def _objective(trial) -> float:
    return _value(_suggest(trial))


def _key(trial) -> str:
    return config_key({n: trial.params[n] for n in SPACE})


def _dataset(name: str, seed: int, space_names=("a", "b")) -> DatasetRuns:
    rng = np.random.default_rng(seed)
    configs = [dict(c) for c in GRID] * 3
    if "c" in space_names:
        configs = [{**c, "c": rng.choice(["u", "v"]).item()} for c in configs]
    scores = [_value(c) + 10 * seed + rng.normal(0, 0.1) for c in configs]
    return DatasetRuns(name, "maximize", {"size": float(seed)}, configs, scores)


@pytest.fixture(scope="module")
def prior() -> Prior:
    """A prior over SPACE that uses the dataset feature ``size``."""
    corpus = Corpus(dict(SPACE), [_dataset(f"d{i}", i) for i in range(5)])
    fitted = fit_prior(corpus, grid=[TreeParams(n_estimators=20)], n_models=1)
    assert "size" in fitted.ranker.kept_columns
    return fitted


# --- 1. the formulas -------------------------------------------------------------------------


def test_offset_is_the_inverse_variance_weighted_mean():
    assert offset(np.array([1.0, 3.0]), np.array([1.0, 3.0])) == pytest.approx(1.5)
    assert offset(np.array([2.0, 4.0]), np.array([0.5, 0.5])) == pytest.approx(3.0)
    assert offset(np.array([5.0]), np.array([7.0])) == pytest.approx(5.0)
    # a precise point dominates a vague one: (0·100 + 10·0.01) / (100 + 0.01)
    assert offset(np.array([0.0, 10.0]), np.array([0.01, 100.0])) == pytest.approx(0.1 / 100.01)
    assert offset(np.array([]), np.array([])) == 0.0


def test_ucb_is_elementwise():
    score = ucb(
        prior=np.array([1.0, -1.0, 0.0]),
        mean=np.array([0.5, 0.0, -0.5]),
        std=np.array([0.0, 1.0, 2.0]),
        bias=0.25,
        lam=0.5,
        kappa=2.0,
    )
    np.testing.assert_allclose(score, [1.25, 1.75, 3.75])
    flat = ucb(
        prior=np.array([9.0]),
        mean=np.array([1.0]),
        std=np.array([1.0]),
        bias=0.0,
        lam=0.0,
        kappa=3.0,
    )
    np.testing.assert_allclose(flat, [4.0])


def test_schedule_anneals_lambda_linearly_and_kappa_geometrically():
    s = Schedule(budget=5, lambda_start=1.0, lambda_end=0.5, kappa_start=2.0, kappa_end=0.5)
    assert [s.lam(t) for t in (0, 1, 2, 4)] == pytest.approx([1.0, 0.875, 0.75, 0.5])
    assert s.lam(4) == s.lam(5) == s.lam(100) == pytest.approx(0.5)  # clipped after budget − 1
    assert s.lam(-3) == pytest.approx(1.0)
    # κ_t = 2 · (0.5 / 2)^(t / 4): halfway it is the geometric mean of the ends
    assert s.kappa(0) == pytest.approx(2.0)
    assert s.kappa(2) == pytest.approx(1.0)
    assert s.kappa(1) == pytest.approx(2.0 * 0.25**0.25)
    assert s.kappa(4) == s.kappa(9) == pytest.approx(0.5)
    rising = Schedule(budget=3, lambda_start=0.0, lambda_end=2.0, kappa_start=0.1, kappa_end=0.4)
    assert [rising.lam(t) for t in range(4)] == pytest.approx([0.0, 1.0, 2.0, 2.0])
    assert [rising.kappa(t) for t in range(4)] == pytest.approx([0.1, 0.2, 0.4, 0.4])
    # one trial is the last trial: the end values, no division by zero
    one = Schedule(budget=1)
    assert (one.lam(0), one.kappa(0)) == (one.lambda_end, one.kappa_end)
    assert (one.lam(3), one.kappa(3)) == (one.lambda_end, one.kappa_end)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"budget": 0}, "budget"),
        ({"budget": -2}, "budget"),
        ({"lambda_start": -0.1}, "lambda"),
        ({"lambda_end": -1.0}, "lambda"),
        ({"kappa_start": 0.0}, "kappa"),
        ({"kappa_end": -1.0}, "kappa"),
        ({"lambda_start": math.nan}, "lambda"),
        ({"kappa_end": math.inf}, "kappa"),
        ({"kappa_start": math.nan}, "kappa"),
    ],
)
def test_schedule_rejects_bad_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        Schedule(**kwargs)


def test_sampler_schedule_takes_the_sampler_budget():
    sampler = AutoPipeSampler(budget=7, schedule=Schedule(budget=99, lambda_start=2.0))
    assert sampler.schedule == Schedule(budget=7, lambda_start=2.0)
    with pytest.raises(ValueError, match="budget"):
        AutoPipeSampler(budget=0)


@pytest.mark.parametrize("slack", [0.0, 0.1, 5.0])
def test_best_first_gives_the_full_sort_and_computes_only_what_the_bound_requires(slack):
    rng = np.random.default_rng(0)
    scores = rng.normal(size=500)
    scores[:20] = scores[20]  # ties
    upper = scores + slack * rng.random(500)
    computed: list[int] = []

    def exact(positions):
        computed.extend(positions.tolist())
        return scores[positions]

    order = list(best_first(upper, exact, batch=16))
    np.testing.assert_array_equal(scores[order], np.sort(scores)[::-1])
    assert sorted(order) == sorted(computed) == list(range(500))  # each computed once
    computed.clear()
    first = next(best_first(upper, exact, batch=16))
    assert scores[first] == scores.max()
    # a tight bound finds the best within a few batches; a loose one computes more
    assert len(computed) <= (32 if slack <= 0.1 else 500)


def test_the_gp_std_bound_is_an_upper_bound_and_tight_next_to_a_lone_point():
    rng = np.random.default_rng(1)
    x, y = rng.random((30, 3)), rng.normal(size=30)
    gp = ResidualGP(x, y, np.full(30, 0.05))
    candidates = rng.random((400, 3))
    mean, std = gp.predict(candidates)
    bound_mean, bound = gp.predict(candidates, std="bound")
    np.testing.assert_allclose(bound_mean, mean)
    assert np.all(bound >= std - 1e-12)
    lone = ResidualGP(x[:1], y[:1], np.array([0.05]))
    np.testing.assert_allclose(
        lone.predict(candidates, std="bound")[1], lone.predict(candidates)[1]
    )


def test_the_bo_choice_is_the_argmax_of_the_exact_ucb_over_every_free_candidate(prior):
    space = {
        "a": CategoricalDistribution(A_CHOICES),
        "b": CategoricalDistribution(B_CHOICES),
        "c": FloatDistribution(0.0, 1.0, step=0.05),
    }
    sampler = AutoPipeSampler(prior, FEATURES, seed=3, search_space=space, budget=20)
    study = optuna.create_study(direction="maximize", sampler=sampler)
    study.optimize(
        lambda t: _objective(t) - 4 * (t.suggest_float("c", 0, 1, step=0.05) - 0.3) ** 2,
        n_trials=12,
    )
    chosen = study.trials[-1]
    assert chosen.user_attrs["autopipe:phase"] == "bo"
    # brute force on the data the last suggestion saw: every free candidate's exact UCB
    before = study.trials[:-1]
    base = sampler._candidates(space)
    observed = sampler._observations(before, space, study.direction)
    encoder = sampler_module.SpaceEncoder(space)
    t = len(before)
    lam = sampler._lambda(t, observed, base)
    gp, bias = sampler._fit(observed, encoder, base, lam)
    mean, std = gp.predict(base.x)
    score = ucb(
        prior=base.prior,
        mean=mean,
        std=std,
        bias=bias,
        lam=lam,
        kappa=sampler.schedule.kappa(t),
    )
    taken = {config_key({n: tr.params[n] for n in space}) for tr in before}
    score[[k in taken for k in base.keys]] = -np.inf
    best = int(np.argmax(score))
    assert chosen.user_attrs[CLAIM_ATTR] == base.keys[best]
    assert chosen.user_attrs["autopipe:acquisition"] == pytest.approx(score[best])
    assert chosen.user_attrs["autopipe:gp_std"] == pytest.approx(std[best])


# --- 2. the candidates -----------------------------------------------------------------------


def test_a_small_discrete_space_is_enumerated_with_typed_values_in_bounds():
    space = {
        "c": CategoricalDistribution(["x", "y", "z"]),
        "i": IntDistribution(1, 7, step=2),  # 1 3 5 7
        "f": FloatDistribution(0.0, 0.5, step=0.25),  # 0 .25 .5
        "l": IntDistribution(1, 4, log=True),  # 1 2 3 4
        "n": CategoricalDistribution([8, 16]),
    }
    configs = base_candidates(space, max_grid=1000, n_samples=5, seed=0)
    assert len(configs) == 3 * 4 * 3 * 4 * 2
    assert len({config_key(c) for c in configs}) == len(configs)
    assert {c["i"] for c in configs} == {1, 3, 5, 7}
    assert {c["f"] for c in configs} == {0.0, 0.25, 0.5}
    assert {c["l"] for c in configs} == {1, 2, 3, 4}
    for c in configs:
        assert set(c) == set(space)
        assert type(c["c"]) is str and type(c["n"]) is int
        assert type(c["i"]) is int and type(c["l"]) is int and type(c["f"]) is float
        for name, dist in space.items():
            assert dist._contains(dist.to_internal_repr(c[name])), (name, c[name])
    # above max_grid the same space is sampled instead
    assert len(base_candidates(space, max_grid=50, n_samples=5, seed=0)) == 5


CONTINUOUS = {
    "lr": FloatDistribution(1e-5, 1e-1, log=True),
    "width": IntDistribution(2, 64, log=True),
    "drop": FloatDistribution(0.0, 0.5, step=0.1),
    "steps": IntDistribution(0, 100, step=5),
    "opt": CategoricalDistribution(["adam", "sgd", "lion"]),
    "u": FloatDistribution(-1.0, 1.0),
}


def _assert_in_space(configs, space):
    for c in configs:
        assert set(c) == set(space)
        for name, dist in space.items():
            value = c[name]
            if isinstance(dist, IntDistribution):
                assert type(value) is int
                assert (value - dist.low) % dist.step == 0
            if isinstance(dist, FloatDistribution):
                assert type(value) is float
                if dist.step is not None:
                    steps = (value - dist.low) / dist.step
                    assert abs(steps - round(steps)) < 1e-9
            assert dist._contains(dist.to_internal_repr(value)), (name, value)


def test_a_continuous_space_is_sobol_sampled_in_bounds_and_deterministically():
    configs = base_candidates(CONTINUOUS, max_grid=1000, n_samples=300, seed=3)
    assert len(configs) == 300
    _assert_in_space(configs, CONTINUOUS)
    # log scale: about half the learning rates lie below the geometric middle 1e-3
    below = np.mean([c["lr"] < 1e-3 for c in configs])
    assert 0.4 < below < 0.6
    assert {c["opt"] for c in configs} == {"adam", "sgd", "lion"}
    assert {c["drop"] for c in configs} >= {0.0, 0.5}
    assert len({c["u"] for c in configs}) == 300  # a continuous column never repeats
    again = base_candidates(CONTINUOUS, max_grid=1000, n_samples=300, seed=3)
    assert [config_key(c) for c in again] == [config_key(c) for c in configs]
    other = base_candidates(CONTINUOUS, max_grid=1000, n_samples=300, seed=4)
    assert [config_key(c) for c in other] != [config_key(c) for c in configs]


def test_a_finely_stepped_float_is_not_enumerated_value_by_value():
    space = {"x": FloatDistribution(0.0, 1.0, step=1e-7), "c": CategoricalDistribution([0, 1])}
    tracemalloc.start()
    try:
        configs = base_candidates(space, max_grid=1000, n_samples=16, seed=0)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert len(configs) == 16
    _assert_in_space(configs, space)
    assert peak < 5_000_000, f"{peak / 1e6:.0f} MB to sample 16 configurations"


def test_perturbed_neighbours_stay_in_the_space():
    centres = [
        {"lr": 1e-5, "width": 64, "drop": 0.5, "steps": 0, "opt": "adam", "u": 1.0},
        {"lr": 1e-1, "width": 2, "drop": 0.0, "steps": 100, "opt": "lion", "u": -1.0},
    ]
    rng = np.random.default_rng(0)
    out = perturb(centres, CONTINUOUS, n_each=200, scale=0.3, rng=rng)
    assert len(out) == 400
    _assert_in_space(out, CONTINUOUS)
    assert len({config_key(c) for c in out}) > 300
    # scale 0: numbers stay put and categoricals are never redrawn
    same = perturb(centres, CONTINUOUS, n_each=3, scale=0.0, rng=rng)
    for centre, neighbour in zip([c for c in centres for _ in range(3)], same, strict=True):
        assert neighbour["opt"] == centre["opt"]
        for name in ("lr", "width", "drop", "steps", "u"):
            assert neighbour[name] == pytest.approx(centre[name]), name


# --- 3. exclusion of taken configurations ----------------------------------------------------


@pytest.mark.parametrize("variant", ["no prior, inferred space", "prior warm start", "prior order"])
def test_the_whole_grid_is_covered_without_repeats_then_a_repeat_is_warned(variant, prior, caplog):
    if variant == "no prior, inferred space":  # BO for the last 4 trials
        sampler = AutoPipeSampler(seed=0, budget=12, n_startup=8)
    else:  # no GP fits, to keep the test quick: the exclusion is the same in every phase
        bo = variant == "prior warm start"
        sampler = AutoPipeSampler(prior, FEATURES, seed=0, budget=12, n_startup=12, bo=bo)
    study = optuna.create_study(direction="maximize", sampler=sampler)
    with pytest.warns(UserWarning) if variant.startswith("no prior") else contextlib.nullcontext():
        study.optimize(_objective, n_trials=12)
    keys = [_key(t) for t in study.trials]
    assert sorted(keys) == sorted(config_key(c) for c in GRID)
    with caplog.at_level(logging.WARNING, logger="optuna_autopipe.sampler"):
        study.optimize(_objective, n_trials=1)
    assert "Every candidate configuration has been evaluated" in caplog.text
    assert study.trials[-1].state == TrialState.COMPLETE and _key(study.trials[-1]) in keys


def test_running_trials_and_their_claims_are_not_proposed_again():
    # all in the warm start (no GP fits, quick): the exclusion is the same in every phase
    sampler = AutoPipeSampler(seed=1, search_space=SPACE, n_startup=12)
    study = optuna.create_study(direction="maximize", sampler=sampler)
    study.optimize(_objective, n_trials=4)
    for _ in range(4):  # RUNNING with their parameters
        _suggest(study.ask())
    for _ in range(3):  # RUNNING, sampled (claimed) but only "a" suggested so far
        study.ask().suggest_categorical("a", A_CHOICES)
    last = study.ask()
    _suggest(last)
    trials = study.get_trials()
    assert [t.state for t in trials] == [TrialState.COMPLETE] * 4 + [TrialState.RUNNING] * 8
    claims = [t.user_attrs[CLAIM_ATTR] for t in trials]
    assert sorted(claims) == sorted(config_key(c) for c in GRID)
    for t in trials:
        if set(SPACE) <= set(t.params):
            assert t.user_attrs[CLAIM_ATTR] == _key(t)
        else:
            assert t.params["a"] in t.user_attrs[CLAIM_ATTR]


@pytest.mark.parametrize("finished", [0, 3])
def test_enqueued_configurations_are_not_proposed(finished):
    study = optuna.create_study(
        direction="maximize", sampler=AutoPipeSampler(seed=2, search_space=SPACE)
    )
    study.optimize(_objective, n_trials=finished)
    trial = study.ask()  # Optuna samples lazily: at the first suggest
    done = {_key(t) for t in study.trials if t.state == TrialState.COMPLETE}
    left = [c for c in GRID if config_key(c) not in done]
    for config in left[1:]:
        study.enqueue_trial(config)
    assert _suggest(trial) == left[0]
    study.tell(trial, 0.0)
    study.optimize(_objective, n_trials=len(left) - 1)  # runs the enqueued ones
    assert sorted(_key(t) for t in study.trials) == sorted(config_key(c) for c in GRID)


def test_configuration_keys_ignore_order_and_float_rounding():
    assert config_key({"x": 0.1 * 3, "n": 2.0, "c": "a"}) == config_key(
        {"c": "a", "n": 2, "x": 0.3}
    )
    assert config_key({"x": 0.3}) != config_key({"x": 0.3000001})
    assert config_key({"x": 1e-7}) != config_key({"x": 1.1e-7})
    assert config_key({"c": True}) != config_key({"c": 1})


def test_enqueued_values_typed_by_hand_match_the_grid_values():
    """The grid's 0.1 · 3 is 0.30000000000000004; an enqueued 0.3 (and 0 for 0.0) is the
    same configuration."""
    space = {"x": FloatDistribution(0.0, 0.5, step=0.1), "c": CategoricalDistribution(["a", "b"])}
    study = optuna.create_study(sampler=AutoPipeSampler(seed=0, search_space=space))
    trial = study.ask()
    for x, c in itertools.product([0, 0.1, 0.2, 0.3, 0.4, 0.5], ["a", "b"]):
        if (x, c) != (0.5, "b"):
            study.enqueue_trial({"x": x, "c": c})
    x = trial.suggest_float("x", 0.0, 0.5, step=0.1)
    assert (x, trial.suggest_categorical("c", ["a", "b"])) == (0.5, "b")


def _hold_first_claim(monkeypatch):
    """Make the first claim written from another thread wait until released."""
    reached, release = threading.Event(), threading.Event()
    original = sampler_module.set_trial_user_attrs
    main, first = threading.current_thread(), []

    def gated(study, trial, attrs):
        if threading.current_thread() is not main and not reached.is_set():
            first.append(attrs[CLAIM_ATTR])
            reached.set()
            assert release.wait(30)
        original(study, trial, attrs)

    monkeypatch.setattr(sampler_module, "set_trial_user_attrs", gated)
    return reached, release, first


@pytest.mark.parametrize("b_finishes", [False, True], ids=["higher B checks first", "B ends"])
def test_two_workers_racing_for_the_same_configuration_do_not_both_take_it(monkeypatch, b_finishes):
    """Worker A reads the study; before A writes its claim, worker B takes the same (best)
    configuration: B is higher-numbered and checks before A's claim lands, or B is
    lower-numbered and its trial even finishes. A must see that and move on."""
    flat = Schedule(kappa_start=1.0, kappa_end=1.0)  # the same ranking for every trial number
    study = optuna.create_study(
        direction="maximize",
        sampler=AutoPipeSampler(seed=5, search_space=SPACE, schedule=flat),
    )
    for config in GRID[:10]:
        study.add_trial(create_trial(params=config, distributions=SPACE, value=_value(config)))
    first, second = study.ask(), study.ask()
    trial_a, trial_b = (second, first) if b_finishes else (first, second)
    worker_a = AutoPipeSampler(seed=5, search_space=SPACE, schedule=flat)
    reached, release, a_first_claim = _hold_first_claim(monkeypatch)
    result = {}

    def run_a():
        frozen = next(t for t in study.get_trials() if t.number == trial_a.number)
        result["a"] = worker_a.sample_relative(study, frozen, dict(SPACE))

    thread = threading.Thread(target=run_a)
    thread.start()
    assert reached.wait(30)  # A has read the study and is about to write its claim
    b = _suggest(trial_b)  # B: the study's own sampler, unhindered
    assert a_first_claim == [config_key(b)]  # the race is real: both want the same one
    if b_finishes:
        study.tell(trial_b, _value(b))
    release.set()
    thread.join(30)
    assert not thread.is_alive()
    assert {config_key(result["a"]), config_key(b)} == {config_key(c) for c in GRID[10:]}


# --- 4. the explanation attrs ----------------------------------------------------------------


def test_every_trial_explains_its_choice_and_the_bo_acquisition_adds_up(prior):
    sampler = AutoPipeSampler(prior, FEATURES, seed=3, budget=8, n_startup=2, procedure="paper")
    study = optuna.create_study(direction="maximize", sampler=sampler)
    study.optimize(_objective, n_trials=6)
    s = prior.score(GRID, FEATURES)  # standardised over the same 12 candidates
    index = {config_key(c): i for i, c in enumerate(GRID)}
    assert _key(study.trials[0]) == config_key(GRID[int(np.argmax(s))])  # the prior's best first
    for trial in study.trials:
        attrs = trial.user_attrs
        assert set(EXPLAIN) <= set(attrs), trial.number
        assert attrs[CLAIM_ATTR] == _key(trial)
        assert attrs[PRIOR_SCORE_ATTR] == pytest.approx(s[index[_key(trial)]], abs=1e-9)
        assert attrs["autopipe:lambda"] == pytest.approx(sampler.schedule.lam(trial.number))
        assert attrs["autopipe:kappa"] == pytest.approx(sampler.schedule.kappa(trial.number))
        if trial.number < 2:
            assert attrs["autopipe:phase"] == "warm-start"
            assert attrs["autopipe:gp_mean"] == attrs["autopipe:gp_std"] == 0.0
            assert attrs["autopipe:offset"] == 0.0
            continue
        assert attrs["autopipe:phase"] == "bo"
        assert attrs["autopipe:gp_std"] > 0
        expected = (
            attrs["autopipe:lambda"] * attrs[PRIOR_SCORE_ATTR]
            + attrs["autopipe:offset"]
            + attrs["autopipe:gp_mean"]
            + attrs["autopipe:kappa"] * attrs["autopipe:gp_std"]
        )
        assert attrs["autopipe:acquisition"] == pytest.approx(expected, rel=1e-9, abs=1e-12)
        # full-fidelity targets: z (standardised over the study, mean 0) − s(x), all with
        # the same variance, so b = −mean(s) over the earlier trials
        earlier = [t.user_attrs[PRIOR_SCORE_ATTR] for t in study.trials[: trial.number]]
        assert attrs["autopipe:offset"] == pytest.approx(-np.mean(earlier), abs=1e-9)


def test_bo_false_takes_the_prior_best_untried_configurations_in_order(prior):
    sampler = AutoPipeSampler(prior, FEATURES, seed=0, bo=False)
    study = optuna.create_study(direction="maximize", sampler=sampler)
    study.optimize(_objective, n_trials=5)
    order = np.argsort(-prior.score(GRID, FEATURES), kind="stable")[:5]
    assert [_key(t) for t in study.trials] == [config_key(GRID[i]) for i in order]
    assert {t.user_attrs["autopipe:phase"] for t in study.trials} == {"prior-order"}


def test_a_continuous_study_stays_in_bounds_without_repeats_and_explains_bo():
    sampler = AutoPipeSampler(seed=0, search_space=CONTINUOUS, n_samples=256, n_startup=2)
    study = optuna.create_study(direction="minimize", sampler=sampler)

    def objective(trial):
        c = {
            "lr": trial.suggest_float("lr", 1e-5, 1e-1, log=True),
            "width": trial.suggest_int("width", 2, 64, log=True),
            "drop": trial.suggest_float("drop", 0.0, 0.5, step=0.1),
            "steps": trial.suggest_int("steps", 0, 100, step=5),
            "opt": trial.suggest_categorical("opt", ["adam", "sgd", "lion"]),
            "u": trial.suggest_float("u", -1.0, 1.0),
        }
        return (math.log10(c["lr"]) + 3) ** 2 + c["u"] ** 2 + c["drop"]

    study.optimize(objective, n_trials=6)
    _assert_in_space([t.params for t in study.trials], CONTINUOUS)
    assert len({config_key(t.params) for t in study.trials}) == 6
    for trial in study.trials[2:]:
        attrs = trial.user_attrs
        assert attrs["autopipe:phase"] == "bo" and attrs[PRIOR_SCORE_ATTR] == 0.0
        expected = attrs["autopipe:offset"] + attrs["autopipe:gp_mean"]
        expected += attrs["autopipe:kappa"] * attrs["autopipe:gp_std"]
        assert attrs["autopipe:acquisition"] == pytest.approx(expected, rel=1e-9, abs=1e-12)


# --- 5. early-stopped trials as observations -------------------------------------------------


def test_early_stopped_trials_are_observations_and_nan_or_failed_ones_are_not(prior):
    """Residual targets: trial 0 gives r = 0.8 (variance 0.2) through autopipe:residual,
    trial 3 gives r = −0.4 (variance 0.5) through autopipe:proxy = s(x) + r; b must be
    (0.8/0.2 − 0.4/0.5) / (1/0.2 + 1/0.5) = 3.2 / 7."""
    sampler = AutoPipeSampler(
        prior, FEATURES, seed=4, budget=10, n_startup=3, prior_weight="schedule"
    )
    study = optuna.create_study(direction="maximize", sampler=sampler)

    def objective(trial):
        config = _suggest(trial)
        n = trial.number
        s = trial.user_attrs[PRIOR_SCORE_ATTR]
        attrs = {
            0: {RESIDUAL_ATTR: 0.8, PROXY_VARIANCE_ATTR: 0.2},
            1: {PROXY_ATTR: math.nan, PROXY_VARIANCE_ATTR: 0.1},
            2: {PROXY_ATTR: 50.0, PROXY_VARIANCE_ATTR: 0.01},  # a FAIL: ignored
            3: {PROXY_ATTR: s - 0.4, PROXY_VARIANCE_ATTR: 0.5},
            4: {PROXY_ATTR: 1.0, PROXY_VARIANCE_ATTR: math.nan},
            5: {RESIDUAL_ATTR: 3.0},  # no variance: ignored
        }.get(n)
        if attrs is None:
            return _value(config)
        for key, value in attrs.items():
            trial.set_user_attr(key, value)
        trial.set_user_attr("fidelity", 0.5)
        if n == 2:
            raise RuntimeError("the run crashed")
        raise optuna.TrialPruned()

    study.optimize(objective, n_trials=7, catch=(RuntimeError,))
    states = [t.state for t in study.trials]
    assert states == [TrialState.PRUNED] * 2 + [TrialState.FAIL] + [TrialState.PRUNED] * 3 + [
        TrialState.COMPLETE
    ]
    last = study.trials[6].user_attrs
    assert last["autopipe:phase"] == "bo"
    assert last["autopipe:offset"] == pytest.approx(3.2 / 7)
    # every trial the sampler chose counts as done, the FAIL too (t = 6 for trial 6)
    assert last["autopipe:lambda"] == pytest.approx(sampler.schedule.lam(6))
    held = [_key(t) for t in study.trials]  # a FAIL's configuration is not proposed again
    assert len(set(held)) == len(held) == 7


def test_without_a_prior_the_gp_models_the_proxies_themselves():
    sampler = AutoPipeSampler(seed=0, search_space=SPACE, n_startup=2)
    study = optuna.create_study(direction="minimize", sampler=sampler)

    def objective(trial):
        _suggest(trial)
        if trial.number < 2:
            proxy, variance = [(1.0, 0.25), (3.0, 0.75)][trial.number]
            trial.set_user_attr(PROXY_ATTR, proxy)
            trial.set_user_attr(PROXY_VARIANCE_ATTR, variance)
            raise optuna.TrialPruned()
        return 0.0

    study.optimize(objective, n_trials=3)
    attrs = study.trials[2].user_attrs
    assert attrs["autopipe:phase"] == "bo"
    assert attrs["autopipe:offset"] == pytest.approx(1.5)  # (1/0.25 + 3/0.75) / (4 + 4/3)
    assert attrs["autopipe:gp_std"] > 0


def _hooked_objective(prior, features, rng):
    """x, w; a loss curve of quality w − 0.5 fed to the early-stop hook with the prior's
    regressor; returns x."""

    def objective(trial):
        x, w = trial.suggest_float("x", 0.0, 1.0), trial.suggest_float("w", 0.0, 1.0)
        hook = AutoPipeEarlyStop(trial, total_steps=20, regressor=prior.regressor, dataset=features)
        for step, loss in enumerate(toy_losses(w - 0.5, rng), 1):
            if hook.report(step, {"loss": float(loss)}):
                break
        hook.finish()
        return x

    return objective


def test_the_early_stop_hook_turns_the_sampler_prior_score_into_a_proxy_the_gp_uses():
    """End to end: the sampler writes s(x) on the trial, the hook (residual regressor) reads
    it for autopipe:proxy = s(x) + r, and the next BO step's offset is the mean residual."""
    space = {"x": FloatDistribution(0.0, 1.0), "w": FloatDistribution(0.0, 1.0)}
    corpus = Corpus(space, [runs_with_dynamics(f"d{i}", i) for i in range(4)])
    prior = fit_prior(corpus, grid=[TreeParams(n_estimators=20)], n_models=1)
    assert prior.regressor is not None and prior.regressor.target == "residual"
    features = {"size": 1.5}
    sampler = AutoPipeSampler(  # λ = 1 on the schedule: the targets are z − s(x)
        prior,
        features,
        seed=0,
        n_samples=256,
        n_startup=3,
        early_stop_signal="proxy",
        prior_weight="schedule",
    )
    study = optuna.create_study(direction="maximize", sampler=sampler)
    objective = _hooked_objective(prior, features, np.random.default_rng(9))

    study.optimize(objective, n_trials=4)
    assert [t.state for t in study.trials] == [TrialState.PRUNED] * 4
    for trial in study.trials:
        attrs = trial.user_attrs
        assert attrs[PROXY_ATTR] == pytest.approx(attrs[PRIOR_SCORE_ATTR] + attrs[RESIDUAL_ATTR])
    last = study.trials[3].user_attrs
    assert last["autopipe:phase"] == "bo"
    residuals = [t.user_attrs[RESIDUAL_ATTR] for t in study.trials[:3]]
    variances = [t.user_attrs[PROXY_VARIANCE_ATTR] for t in study.trials[:3]]
    assert last["autopipe:offset"] == pytest.approx(offset(np.array(residuals), variances))


def test_an_enqueued_partial_configuration_gets_the_proxy_of_the_configuration_that_ran():
    """``enqueue_trial({"x": 0.25})``: the sampler completes it (w), and s(x), the claim and
    the hook's proxy s(x) + r all describe the run, not the sampler's unconstrained choice."""
    space = {"x": FloatDistribution(0.0, 1.0), "w": FloatDistribution(0.0, 1.0)}
    corpus = Corpus(space, [runs_with_dynamics(f"d{i}", i) for i in range(4)])
    prior = fit_prior(corpus, grid=[TreeParams(n_estimators=20)], n_models=1)
    features = {"size": 1.5}
    sampler = AutoPipeSampler(prior, features, seed=0, n_samples=256, search_space=space)
    study = optuna.create_study(direction="maximize", sampler=sampler)
    objective = _hooked_objective(prior, features, np.random.default_rng(3))

    study.optimize(objective, n_trials=2)
    study.enqueue_trial({"x": 0.25})
    study.optimize(objective, n_trials=1)
    ran = study.trials[2]
    assert ran.params["x"] == 0.25
    assert ran.user_attrs[CLAIM_ATTR] == config_key(ran.params)
    base = sampler._candidates(space)
    assert ran.user_attrs[PRIOR_SCORE_ATTR] == pytest.approx(
        sampler._prior_scores([ran.params], base)[0]
    )
    attrs = ran.user_attrs
    assert attrs[PROXY_ATTR] == pytest.approx(attrs[PRIOR_SCORE_ATTR] + attrs[RESIDUAL_ATTR])


# --- 6. recommend ----------------------------------------------------------------------------


def _add(study, config, state=TrialState.COMPLETE, value=None, **attrs):
    study.add_trial(
        create_trial(
            state=state,
            value=value,
            params=config,
            distributions=SPACE,
            user_attrs=attrs,
        )
    )


@pytest.mark.parametrize("direction", ["minimize", "maximize"])
def test_recommend_takes_the_best_full_fidelity_trial(direction):
    study = optuna.create_study(direction=direction)
    _add(study, GRID[0], value=3.0)
    _add(study, GRID[1], value=1.0)
    _add(study, GRID[2], value=2.0)
    extreme = -100.0 if direction == "minimize" else 100.0
    _add(study, GRID[3], value=extreme, fidelity=0.5, **{PROXY_ATTR: 0.0, PROXY_VARIANCE_ATTR: 1})
    _add(study, GRID[4], TrialState.PRUNED, **{PROXY_ATTR: 99.0, PROXY_VARIANCE_ATTR: 0.1})
    _add(study, GRID[5], TrialState.FAIL)
    best = GRID[1] if direction == "minimize" else GRID[0]
    assert AutoPipeSampler().recommend(study) == best
    assert AutoPipeSampler(search_space=SPACE).recommend(study) == best


def test_recommend_takes_the_best_proxy_when_no_full_trial_exists():
    study = optuna.create_study(direction="minimize")  # proxies are higher-is-better z-values
    _add(study, GRID[0], TrialState.PRUNED, **{PROXY_ATTR: 0.5, PROXY_VARIANCE_ATTR: 0.1})
    _add(study, GRID[1], TrialState.PRUNED, **{PROXY_ATTR: math.nan, PROXY_VARIANCE_ATTR: 0.1})
    _add(study, GRID[2], TrialState.PRUNED, **{PROXY_ATTR: 2.0, PROXY_VARIANCE_ATTR: 0.1})
    _add(
        study,
        GRID[3],
        TrialState.PRUNED,
        **{PRIOR_SCORE_ATTR: 1.0, RESIDUAL_ATTR: 0.7, PROXY_VARIANCE_ATTR: 0.1},
    )
    _add(study, GRID[4], TrialState.FAIL, **{PROXY_ATTR: 50.0, PROXY_VARIANCE_ATTR: 0.1})
    _add(study, GRID[5], TrialState.PRUNED)
    assert AutoPipeSampler().recommend(study) == GRID[2]
    _add(study, GRID[6], TrialState.PRUNED, **{PROXY_ATTR: 2.3, PROXY_VARIANCE_ATTR: 25.0})
    assert AutoPipeSampler().recommend(study) == GRID[6]  # the best proxy as observed
    # rule="belief": the GP posterior shrinks the very noisy proxy; the precise one wins
    assert AutoPipeSampler().recommend(study, rule="belief") == GRID[2]
    with pytest.raises(ValueError, match="rule"):
        AutoPipeSampler().recommend(study, rule="best")
    _add(
        study,
        GRID[7],
        TrialState.PRUNED,
        **{RESIDUAL_ATTR: 1.5, PRIOR_SCORE_ATTR: 2.0, PROXY_VARIANCE_ATTR: 0.01},
    )
    assert AutoPipeSampler().recommend(study) == GRID[7]  # s + r̂ = 3.5
    assert AutoPipeSampler().recommend(study, rule="belief") == GRID[7]


def test_recommend_without_a_finished_trial_says_so():
    study = optuna.create_study()
    with pytest.raises(ValueError, match="nothing to recommend"):
        AutoPipeSampler().recommend(study)
    _add(study, GRID[0], TrialState.FAIL)
    _add(study, GRID[1], TrialState.PRUNED)  # pruned without a proxy
    study.enqueue_trial(GRID[2])
    _suggest(study.ask())  # RUNNING
    with pytest.raises(ValueError, match="nothing to recommend"):
        AutoPipeSampler(search_space=SPACE).recommend(study)


# --- 7. parallel workers ---------------------------------------------------------------------

PARALLEL_SPACE = {
    "a": CategoricalDistribution(["p", "q", "r", "s", "t"]),
    "b": IntDistribution(1, 8),
}  # 40 points


def _slow_objective(trial) -> float:
    a = trial.suggest_categorical("a", ["p", "q", "r", "s", "t"])
    b = trial.suggest_int("b", 1, 8)
    time.sleep(0.05)
    return "pqrst".index(a) - (b - 5) ** 2


def _worker(path: str, seed: int) -> None:
    import torch

    torch.set_num_threads(1)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.load_study(
        study_name="parallel",
        storage=JournalStorage(JournalFileBackend(path)),
        sampler=AutoPipeSampler(seed=seed, search_space=PARALLEL_SPACE, budget=32),
    )
    study.optimize(_slow_objective, n_trials=8)


@pytest.mark.slow
def test_parallel_workers_on_a_journal_study_never_duplicate_a_configuration(tmp_path):
    path = str(tmp_path / "journal.log")
    storage = JournalStorage(JournalFileBackend(path))
    optuna.create_study(study_name="parallel", storage=storage, direction="maximize")
    context = multiprocessing.get_context("spawn")
    workers = [context.Process(target=_worker, args=(path, seed)) for seed in range(4)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(120)
    assert [w.exitcode for w in workers] == [0] * 4
    trials = optuna.load_study(study_name="parallel", storage=storage).trials
    assert len(trials) == 32
    assert all(t.state == TrialState.COMPLETE for t in trials)
    keys = [config_key(t.params) for t in trials]
    assert len(set(keys)) == 32, sorted(k for k in keys if keys.count(k) > 1)


# --- 8. bad inputs ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def prior_abc() -> Prior:
    """A prior over a, b and c (categorical u/v)."""
    space = {**SPACE, "c": CategoricalDistribution(["u", "v"])}
    datasets = [_dataset(f"d{i}", i, ("a", "b", "c")) for i in range(4)]
    return fit_prior(Corpus(space, datasets), grid=[TreeParams(n_estimators=10)], n_models=1)


def test_a_prior_over_another_space_names_the_missing_parameters(prior_abc):
    space_abd = {**SPACE, "d": FloatDistribution(0.0, 1.0)}
    with pytest.raises(ValueError, match=r"lacks parameters the prior scores: \['c'\]"):
        AutoPipeSampler(prior_abc, FEATURES, search_space=space_abd)  # before any trial

    def objective(trial):
        return _value(_suggest(trial)) + trial.suggest_float("d", 0.0, 1.0)

    inferred = optuna.create_study(sampler=AutoPipeSampler(prior_abc, FEATURES))
    with pytest.warns(UserWarning, match=r"lack parameters the prior scores: \['c'\]"):
        inferred.optimize(objective, n_trials=2)  # the 2nd trial infers {a, b, d}: no c
    assert [t.state for t in inferred.trials] == [TrialState.COMPLETE] * 2


def test_a_prior_with_dataset_features_needs_them(prior):
    for dataset in (None, {}, {"rows": 3.0}):
        with pytest.raises(ValueError, match=r"lacks 1 feature\(s\) the prior uses: \['size'\]"):
            AutoPipeSampler(prior, dataset)
    AutoPipeSampler(prior, {"size": math.nan})  # explicitly unknown is fine
    with pytest.raises(ValueError, match="needs a prior"):
        AutoPipeSampler(None, bo=False)


def test_nan_objective_values_fail_and_do_not_break_the_next_suggestions(prior):
    sampler = AutoPipeSampler(prior, FEATURES, seed=6, n_startup=2, prior_weight="schedule")
    study = optuna.create_study(direction="maximize", sampler=sampler)

    def objective(trial):
        value = _objective(trial)
        return math.nan if trial.number in (1, 3) else value

    study.optimize(objective, n_trials=6)
    states = [t.state for t in study.trials]
    assert [i for i, s in enumerate(states) if s == TrialState.FAIL] == [1, 3]
    complete = [t for t in study.trials if t.state == TrialState.COMPLETE]
    assert len(complete) == 4 and len({_key(t) for t in complete}) == 4
    # failed trials count as trials done: trial 2 is the first in BO (t = 2)
    assert study.trials[1].user_attrs["autopipe:phase"] == "warm-start"
    assert study.trials[5].user_attrs["autopipe:lambda"] == sampler.schedule.lam(5)
    for trial in study.trials[2:]:
        assert trial.user_attrs["autopipe:phase"] == "bo"
        values = [trial.user_attrs[name] for name in EXPLAIN[:7]]
        assert np.isfinite(values).all()


def test_a_multi_objective_study_is_refused():
    study = optuna.create_study(
        directions=["minimize", "minimize"], sampler=AutoPipeSampler(search_space=SPACE)
    )
    with pytest.raises(ValueError, match="one objective"):
        _suggest(study.ask())


@pytest.mark.parametrize(
    ("option", "value"),
    [("full_noise", 0.0), ("noise_floor", -1.0), ("noise_floor", math.nan), ("n_samples", 0)],
)
def test_bad_numeric_options_are_rejected_with_their_name(option, value):
    with pytest.raises(ValueError, match=option):
        AutoPipeSampler(**{option: value})


def test_early_stop_params_skip_configurations_the_stop_cannot_tell_apart():
    space = {"sft": CategoricalDistribution([0, 1, 2]), "rl": CategoricalDistribution([0, 1, 2])}
    sampler = AutoPipeSampler(seed=0, search_space=space, early_stop_params=("sft",))
    study = optuna.create_study(sampler=sampler)
    stopped = {"state": TrialState.PRUNED, "user_attrs": {STOP_STEP_ATTR: 5}}
    for (sft, rl), kind in [((0, 0), stopped), ((1, 0), stopped)] + [
        ((2, rl), {"state": TrialState.COMPLETE, "value": float(rl)}) for rl in (0, 1)
    ]:
        study.add_trial(create_trial(params={"sft": sft, "rl": rl}, distributions=space, **kind))
    free = [{"sft": s, "rl": r} for s, r in [(0, 1), (0, 2), (1, 1), (1, 2), (2, 2)]]
    mask = sampler._unobserved(study.trials, study.trials[-1], free)
    assert mask.tolist() == [False, False, False, False, True]  # full runs do not count
    assert study.ask(space).params == {"sft": 2, "rl": 2}  # the one free unobserved SFT setting
    # every SFT setting observed or running: the other free configurations come back
    fourth = study.ask(space).params
    assert fourth in free[:4]
