"""Optuna's shipped sampler conformance suites, run against ``AutoPipeSampler``, plus the
reproducibility, reseeding and pickling checks that live only in Optuna's own repository.

Each suite runs three times: without a prior; with a prior over parameters the suites never
use (the sampler warns and runs without it); and with a prior over ``z``, a name the suites
do use (``test_partial_fixed_sampling``, ``test_conditional_parameter_objective``).

Why ``z`` and not ``x``/``y``: on a study's first trial there is no trial to take the space
from, so the sampler proposes the prior's own space, and Optuna refuses a relative value whose
distribution differs in kind or log scale from the one the objective then declares. The suites
declare ``x`` and ``y`` as floats, log floats, ints, log ints and categoricals in turn, so no
prior distribution for them fits every case; ``z`` is always a linear ``FloatDistribution``.
"""

from __future__ import annotations

import math
import pickle
from collections.abc import Callable
from typing import Any

import numpy as np
import optuna
import pytest
import torch
from optuna.distributions import (
    BaseDistribution,
    CategoricalDistribution,
    FloatDistribution,
    IntDistribution,
)
from optuna.samplers import BaseSampler
from optuna.testing.pytest_samplers import (
    BasicSamplerTestCase,
    RelativeSamplerTestCase,
    SingleOnlySamplerTestCase,
)
from optuna.trial import TrialState

from optuna_autopipe.candidates import config_key
from optuna_autopipe.corpus import Corpus, DatasetRuns
from optuna_autopipe.ensemble import TreeParams
from optuna_autopipe.prior import Prior, fit_prior
from optuna_autopipe.sampler import AutoPipeSampler
from optuna_autopipe.space import suggest

#: Sobol candidates per suggestion: the suites only check validity, so fewer is enough.
N_SAMPLES = 256
FEATURES = {"size": 1.0}

#: The sampler's warnings these tests provoke on purpose (parameters it samples at random,
#: a prior whose parameters are not in the space); asserted where they matter.
pytestmark = [
    pytest.mark.filterwarnings("ignore:AutoPipeSampler samples parameter:UserWarning"),
    pytest.mark.filterwarnings("ignore:None of the prior's parameters:UserWarning"),
]


@pytest.fixture(scope="module", autouse=True)
def _one_torch_thread():
    """The GP fits on a handful of points: with several intra-op threads on a busy 2-core
    machine, torch spends most of each fit synchronising (measured 6x slower)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _prior(space: dict[str, FloatDistribution]) -> Prior:
    """A small real prior: 3 synthetic datasets of 40 runs over ``space``."""
    datasets = []
    for seed in range(3):
        rng = np.random.default_rng(seed)
        configs = [
            {name: float(rng.uniform(d.low, d.high)) for name, d in space.items()}
            for _ in range(40)
        ]
        scores = [-sum((v - seed) ** 2 for v in c.values()) for c in configs]
        datasets.append(
            DatasetRuns(
                name=f"d{seed}",
                direction="maximize",
                features={"size": float(seed)},
                configs=configs,
                scores=np.asarray(scores) + rng.normal(0, 0.1, len(configs)),
            )
        )
    return fit_prior(Corpus(dict(space), datasets), grid=[TreeParams(n_estimators=20)], n_models=1)


@pytest.fixture(scope="module")
def disjoint_prior() -> Prior:
    """A prior over parameters that none of the suites' objectives suggest."""
    return _prior(
        {
            "autopipe_lr": FloatDistribution(0.0, 1.0),
            "autopipe_dropout": FloatDistribution(0.0, 0.5),
        }
    )


@pytest.fixture(scope="module")
def z_prior() -> Prior:
    """A prior over ``z`` alone (a prior over more names raises, by design, on the spaces
    that have ``z`` but lack one of the others)."""
    return _prior({"z": FloatDistribution(-1.0, 1.0)})


def _no_prior() -> AutoPipeSampler:
    return AutoPipeSampler(seed=0, n_samples=N_SAMPLES)


# --- Optuna's suites -------------------------------------------------------------------------


class TestBasicNoPrior(BasicSamplerTestCase):
    @pytest.fixture
    def sampler(self) -> Callable[[], BaseSampler]:
        return _no_prior


class TestRelativeNoPrior(RelativeSamplerTestCase):
    @pytest.fixture
    def sampler(self) -> Callable[[], BaseSampler]:
        return _no_prior


class TestSingleOnlyNoPrior(SingleOnlySamplerTestCase):
    @pytest.fixture
    def sampler(self) -> Callable[[], BaseSampler]:
        return _no_prior


class _DisjointPrior:
    @pytest.fixture
    def sampler(self, disjoint_prior: Prior) -> Callable[[], BaseSampler]:
        return lambda: AutoPipeSampler(disjoint_prior, FEATURES, seed=0, n_samples=N_SAMPLES)


class TestBasicDisjointPrior(_DisjointPrior, BasicSamplerTestCase):
    pass


class TestRelativeDisjointPrior(_DisjointPrior, RelativeSamplerTestCase):
    pass


class TestSingleOnlyDisjointPrior(_DisjointPrior, SingleOnlySamplerTestCase):
    pass


class _ZPrior:
    @pytest.fixture
    def sampler(self, z_prior: Prior) -> Callable[[], BaseSampler]:
        return lambda: AutoPipeSampler(z_prior, FEATURES, seed=0, n_samples=N_SAMPLES)


class TestBasicZPrior(_ZPrior, BasicSamplerTestCase):
    pass


class TestRelativeZPrior(_ZPrior, RelativeSamplerTestCase):
    pass


class TestSingleOnlyZPrior(_ZPrior, SingleOnlySamplerTestCase):
    pass


# --- reproducibility, reseeding, pickling ----------------------------------------------------

#: Spaces of the own tests. The ``autopipe_*`` ones use the disjoint prior's names with the
#: same kind of distribution, so with that prior they are scored by it.
SPACES = {
    "grid": {"n": IntDistribution(1, 8), "act": CategoricalDistribution(["relu", "tanh", "gelu"])},
    "continuous": {
        "lr": FloatDistribution(1e-4, 1.0, log=True),
        "momentum": FloatDistribution(0.0, 1.0),
    },
    "prior-grid": {
        "autopipe_lr": FloatDistribution(0.0, 1.0, step=0.1),
        "autopipe_dropout": FloatDistribution(0.0, 0.5, step=0.1),
    },
    "prior-continuous": {
        "autopipe_lr": FloatDistribution(0.0, 1.0),
        "autopipe_dropout": FloatDistribution(0.0, 0.5),
    },
}


def _objective(space: dict[str, BaseDistribution]) -> Callable[[optuna.Trial], float]:
    def objective(trial: optuna.Trial) -> float:
        params = {name: suggest(trial, name, dist) for name, dist in space.items()}
        return sum(
            len(v) if isinstance(v, str) else (math.log10(v) if v > 0 else 0.0) + v
            for v in params.values()
        )

    return objective


def _make(case: str, prior: Prior, seed: int = 1) -> AutoPipeSampler:
    return AutoPipeSampler(
        prior if case.startswith("prior") else None, FEATURES, seed=seed, n_samples=N_SAMPLES
    )


def _run(study: optuna.Study, case: str, n_trials: int) -> list[dict[str, Any]]:
    before = len(study.trials)
    study.optimize(_objective(SPACES[case]), n_trials=n_trials)
    trials = study.trials[before:]
    assert all(t.state == TrialState.COMPLETE for t in trials)
    return [t.params for t in trials]


def _copy(study: optuna.Study, sampler: BaseSampler) -> optuna.Study:
    """A new in-memory study with the same trials as ``study``."""
    copy = optuna.create_study(sampler=sampler, direction=study.direction)
    copy.add_trials(study.trials)
    return copy


@pytest.mark.parametrize("case", list(SPACES))
def test_same_seed_same_trials_give_the_same_suggestions(case, disjoint_prior):
    a = optuna.create_study(sampler=_make(case, disjoint_prior))
    b = optuna.create_study(sampler=_make(case, disjoint_prior))
    assert _run(a, case, 8) == _run(b, case, 8)
    phases = [t.user_attrs.get("autopipe:phase") for t in a.trials]
    assert "warm-start" in phases and "bo" in phases
    assert len({config_key(t.params) for t in a.trials}) == 8  # no configuration twice


@pytest.mark.parametrize("case", ["grid", "prior-continuous"])
def test_a_fresh_sampler_continues_like_the_one_that_built_the_storage(case, disjoint_prior):
    a = optuna.create_study(sampler=_make(case, disjoint_prior))
    _run(a, case, 5)
    b = _copy(a, _make(case, disjoint_prior))
    assert _run(a, case, 3) == _run(b, case, 3)


@pytest.mark.parametrize("case", ["continuous", "prior-continuous"])
def test_reseed_rng_changes_the_next_suggestions(case, disjoint_prior):
    a = optuna.create_study(sampler=_make(case, disjoint_prior))
    b = optuna.create_study(sampler=_make(case, disjoint_prior))
    assert _run(a, case, 4) == _run(b, case, 4)
    b.sampler.reseed_rng()
    assert _run(a, case, 3) != _run(b, case, 3)


@pytest.mark.parametrize("reseed", [False, True])
@pytest.mark.parametrize("case", ["continuous", "prior-continuous"])
def test_an_unpickled_sampler_continues_like_the_original(case, reseed, disjoint_prior):
    a = optuna.create_study(sampler=_make(case, disjoint_prior))
    _run(a, case, 5)
    if reseed:
        a.sampler.reseed_rng()
    clone = pickle.loads(pickle.dumps(a.sampler))
    assert isinstance(clone, AutoPipeSampler)
    b = _copy(a, clone)
    assert _run(a, case, 3) == _run(b, case, 3)


def test_a_prior_over_other_parameters_warns_and_the_study_runs(disjoint_prior):
    study = optuna.create_study(sampler=_make("prior", disjoint_prior))
    with pytest.warns(UserWarning, match="runs without the prior"):
        _run(study, "continuous", 5)
