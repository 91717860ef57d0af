"""Property-based tests (hypothesis): on random search spaces, ``SpaceEncoder`` encodes every
valid configuration to finite numbers of the right width, and ``AutoPipeSampler`` (without and
with a prior) never raises and suggests values inside each distribution, of its Python type."""

from __future__ import annotations

import math
import warnings
from collections.abc import Iterator
from typing import Any

import numpy as np
import optuna
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from optuna.distributions import (
    BaseDistribution,
    CategoricalDistribution,
    FloatDistribution,
    IntDistribution,
)

from optuna_autopipe.corpus import Corpus, DatasetRuns
from optuna_autopipe.ensemble import TreeParams
from optuna_autopipe.prior import Prior, fit_prior
from optuna_autopipe.sampler import AutoPipeSampler
from optuna_autopipe.space import SpaceEncoder, suggest

pytestmark = pytest.mark.badinput

PROPERTY = settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
#: The parameter the prior of ``test_sampler_with_a_prior...`` scores.
PRIOR_PARAM = "z"

# --- strategies ------------------------------------------------------------------------------

_STEPS = (0.125, 0.25, 0.5, 1.0, 2.0)  # exact in binary: low + k * step is exact too


@st.composite
def float_distributions(draw: st.DrawFn) -> FloatDistribution:
    kind = draw(st.sampled_from(["plain", "log", "step"]))
    if kind == "log":
        low = draw(st.floats(1e-6, 1e3))
        return FloatDistribution(low, low * draw(st.floats(1.0, 1e4)), log=True)
    if kind == "step":
        step = draw(st.sampled_from(_STEPS))
        low = draw(st.integers(-100, 100)) * step
        return FloatDistribution(low, low + draw(st.integers(0, 40)) * step, step=step)
    low = draw(st.floats(-1e6, 1e6))
    return FloatDistribution(low, low + draw(st.floats(0.0, 1e6)))


@st.composite
def int_distributions(draw: st.DrawFn) -> IntDistribution:
    kind = draw(st.sampled_from(["plain", "log", "step"]))
    if kind == "log":
        low = draw(st.integers(1, 1000))
        return IntDistribution(low, low + draw(st.integers(0, 10**6)), log=True)
    step = draw(st.integers(2, 7)) if kind == "step" else 1
    low = draw(st.integers(-1000, 1000))
    return IntDistribution(low, low + step * draw(st.integers(0, 50)), step=step)


#: Choices Optuna accepts, mixed; ``unique`` also drops values equal across types (1, 1.0, True).
_CHOICE = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(10**6), 10**6),
    st.floats(-1e6, 1e6, allow_nan=False, allow_infinity=False),
    st.text(max_size=6),
)
categorical_distributions = st.one_of(
    st.lists(_CHOICE, min_size=1, max_size=6, unique=True),
    st.lists(st.integers(1, 10**4), min_size=1, max_size=6, unique=True),  # a numeric grid
).map(lambda choices: CategoricalDistribution(tuple(choices)))

distributions = st.one_of(float_distributions(), int_distributions(), categorical_distributions)
spaces = st.dictionaries(
    st.sampled_from(["lr", "depth", "model", "beta", "batch"]), distributions, min_size=1
)


def value_in(draw: st.DrawFn, dist: BaseDistribution) -> Any:
    """A valid value of ``dist``, as the trial would hold it."""
    if isinstance(dist, CategoricalDistribution):
        return draw(st.sampled_from(dist.choices))
    if isinstance(dist, IntDistribution):
        if dist.log:
            return draw(st.integers(dist.low, dist.high))
        return dist.low + dist.step * draw(st.integers(0, (dist.high - dist.low) // dist.step))
    assert isinstance(dist, FloatDistribution)
    if dist.step is not None:
        return dist.low + dist.step * draw(
            st.integers(0, round((dist.high - dist.low) / dist.step))
        )
    return draw(st.floats(dist.low, dist.high))


@st.composite
def spaces_with_configs(
    draw: st.DrawFn,
) -> tuple[dict[str, BaseDistribution], list[dict[str, Any]]]:
    space = draw(spaces)
    configs = [
        {name: value_in(draw, dist) for name, dist in space.items()}
        for _ in range(draw(st.integers(1, 5)))
    ]
    return space, configs


# --- checks ----------------------------------------------------------------------------------


def assert_inside(value: Any, dist: BaseDistribution) -> None:
    """``value`` is a value of ``dist``: the choice object itself, or a number of the
    distribution's type within its bounds (and on its step)."""
    if isinstance(dist, CategoricalDistribution):
        assert any(value is choice for choice in dist.choices), (value, dist.choices)
        return
    if isinstance(dist, IntDistribution):
        assert type(value) is int, type(value)
    else:
        assert type(value) is float, type(value)
    assert dist.low <= value <= dist.high, (value, dist)
    step = getattr(dist, "step", None)
    if step is not None:
        units = (value - dist.low) / step
        assert math.isclose(units, round(units), abs_tol=1e-8), (value, dist)


def _one_hot(dist: BaseDistribution) -> bool:
    """A categorical with a choice that is not a number (bools are not) is one-hot encoded."""
    return isinstance(dist, CategoricalDistribution) and not all(
        isinstance(c, int | float) and not isinstance(c, bool) for c in dist.choices
    )


@pytest.fixture(scope="module", autouse=True)
def _one_torch_thread() -> Iterator[None]:
    """GP fits on a handful of points: one thread (see tests/test_conformance.py)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def prior() -> Prior:
    """A tiny prior over ``z`` in [0, 1] with one dataset feature."""
    space = {PRIOR_PARAM: FloatDistribution(0.0, 1.0)}
    datasets = []
    for seed in range(3):
        z = np.random.default_rng(seed).uniform(0, 1, 30)
        datasets.append(
            DatasetRuns(f"d{seed}", "maximize", {"size": float(seed)}, [{"z": v} for v in z], -z)
        )
    return fit_prior(Corpus(space, datasets), grid=[TreeParams(n_estimators=5)], n_models=1)


def run_sampler(sampler: AutoPipeSampler, space: dict[str, BaseDistribution]) -> None:
    """Five trials suggesting every parameter of ``space`` (a tiny discrete space runs out of
    new configurations: the sampler then repeats one); each value checked as returned."""

    def objective(trial: optuna.trial.Trial) -> float:
        total = 0.0
        for name, dist in space.items():
            value = suggest(trial, name, dist)
            assert_inside(value, dist)
            total += hash(repr(value)) % 97
        return total

    study = optuna.create_study(sampler=sampler)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # parameters sampled independently
        study.optimize(objective, n_trials=5)
    assert [t.state for t in study.trials] == [optuna.trial.TrialState.COMPLETE] * 5


# --- the properties --------------------------------------------------------------------------


@PROPERTY
@given(spaces_with_configs())
def test_the_encoder_gives_finite_rows_of_its_width_for_any_valid_configuration(case):
    space, configs = case
    encoder = SpaceEncoder(space)
    rows = encoder.encode(configs)
    width = sum(len(d.choices) if _one_hot(d) else 1 for d in space.values())
    assert rows.shape == (len(configs), width) == (len(configs), len(encoder.columns))
    assert np.isfinite(rows).all()
    assert rows.dtype == np.float64


@PROPERTY
@given(spaces, st.booleans())
def test_the_sampler_without_a_prior_suggests_valid_values_of_the_right_type(space, given_space):
    sampler = AutoPipeSampler(
        seed=0, n_startup=2, n_samples=64, search_space=space if given_space else None
    )
    run_sampler(sampler, space)


@PROPERTY
@given(spaces, st.booleans())
def test_the_sampler_with_a_prior_suggests_valid_values_of_the_right_type(
    prior, space, given_space
):
    space = {**space, PRIOR_PARAM: FloatDistribution(0.0, 1.0)}
    sampler = AutoPipeSampler(
        prior,
        {"size": 1.0},
        seed=0,
        n_startup=2,
        n_samples=64,
        search_space=space if given_space else None,
    )
    run_sampler(sampler, space)
