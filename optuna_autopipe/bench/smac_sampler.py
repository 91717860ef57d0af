"""SMAC3 (random-forest BO, Hutter et al. 2011) as an Optuna sampler, via SMAC's ask/tell.

SMAC is ``smac.HyperparameterOptimizationFacade`` with its defaults (random forest of 10
trees on log-scaled costs, EI, local + sorted random search, 20% random interleaving,
Sobol initial design of ``min(10 * n_params, int(0.25 * n_trials))`` configurations, at
least one), except that

* the surrogate is refit after every new result (``retrain_after=1``, as in the original
  sequential SMAC and in SMAC's BlackBoxFacade; the facade's default of 8 would fit the
  forest only twice in a 15-trial budget), and
* the forest runs single-threaded (``n_jobs=1``; SMAC's default of all cores mostly spends
  its time in thread overhead on such small data, and benchmark workers run in parallel)
  and grows its trees depth-first (``max_leaf_nodes=None``: the same fully grown trees
  without scikit-learn preallocating 2**21 nodes per tree for SMAC's ``2**20`` leaves,
  which took most of the time).

Search space: the intersection search space of the study's finished trials; SMAC is built
lazily from the first non-empty one, so the first trial is sampled at random and SMAC
learns it afterwards. Mapping to ConfigSpace:

* ``FloatDistribution`` → ``Float`` (log kept); with ``step``, an ``Integer`` over the grid
  indices ``0..round((high - low) / step)``, value ``low + k * step``.
* ``IntDistribution`` → ``Integer`` (log kept); with ``step > 1``, an ``Integer`` over the
  indices ``0..(high - low) // step``, value ``low + k * step``.
* ``CategoricalDistribution`` → ``Categorical`` over choice indices, so any choice (number,
  string, bool, None) works and the original object is returned.
* Single-valued distributions are left out (Optuna samples them independently).
"""

from __future__ import annotations

import logging
import math
import shutil
import tempfile
import threading
import weakref
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import optuna
from optuna.distributions import (
    BaseDistribution,
    CategoricalDistribution,
    FloatDistribution,
    IntDistribution,
)
from optuna.search_space import IntersectionSearchSpace
from optuna.study import StudyDirection
from optuna.trial import FrozenTrial, TrialState

if TYPE_CHECKING:
    from ConfigSpace import Configuration, ConfigurationSpace
    from ConfigSpace.hyperparameters import Hyperparameter
    from smac import HyperparameterOptimizationFacade
    from smac.runhistory.dataclasses import TrialInfo

_logger = logging.getLogger(__name__)

_IMPORT_ERROR = "SmacSampler needs the `smac` package: pip install 'optuna-autopipe[smac]'"


def _n_grid_steps(dist: FloatDistribution | IntDistribution) -> int:
    """Number of steps above ``low`` on a stepped distribution's grid."""
    assert dist.step is not None
    return round((dist.high - dist.low) / dist.step)


def _to_hyperparameter(name: str, dist: BaseDistribution) -> Hyperparameter:
    """The ConfigSpace hyperparameter standing for an Optuna distribution."""
    from ConfigSpace import Categorical, Float, Integer

    if isinstance(dist, CategoricalDistribution):
        return Categorical(name, list(range(len(dist.choices))))
    if isinstance(dist, FloatDistribution) and dist.step is None:
        return Float(name, (dist.low, dist.high), log=dist.log)
    if isinstance(dist, IntDistribution) and dist.step == 1:
        return Integer(name, (dist.low, dist.high), log=dist.log)
    if isinstance(dist, IntDistribution | FloatDistribution):
        return Integer(name, (0, _n_grid_steps(dist)))
    raise ValueError(f"SmacSampler does not support {type(dist).__name__} ('{name}').")


def _to_optuna(dist: BaseDistribution, value: Any) -> Any:
    """A SMAC value as the plain Python value of ``dist`` (int, float or the choice)."""
    if isinstance(dist, CategoricalDistribution):
        return dist.choices[int(value)]
    assert isinstance(dist, FloatDistribution | IntDistribution)
    if isinstance(dist, IntDistribution):
        return int(value) if dist.step == 1 else dist.low + int(value) * dist.step
    number = float(value) if dist.step is None else dist.low + int(value) * dist.step
    return min(max(number, dist.low), dist.high)


def _to_smac(dist: BaseDistribution, value: Any) -> Any:
    """An Optuna parameter value as the value of the hyperparameter ``_to_hyperparameter`` made."""
    if isinstance(dist, CategoricalDistribution):
        return int(dist.to_internal_repr(value))
    assert isinstance(dist, FloatDistribution | IntDistribution)
    if isinstance(dist, IntDistribution) and dist.step == 1:
        return int(value)
    if dist.step is None:
        return min(max(float(value), dist.low), dist.high)
    return round((value - dist.low) / dist.step)


class SmacSampler(optuna.samplers.BaseSampler):
    """Optuna sampler asking SMAC3's ``HyperparameterOptimizationFacade`` for configurations.

    Args:
        seed: Seed of SMAC (scenario, forest, design) and of the independent sampler.
        n_trials: SMAC's scenario budget; it sizes the initial design.
        n_initial: Size of the Sobol initial design; default SMAC's
            ``min(10 * n_params, int(0.25 * n_trials))`` (at least 1).
        output_directory: Where SMAC writes its run files (under ``<name>/<seed>``, an old
            run there is overwritten); default a temporary directory removed with the sampler.

    Costs told to SMAC: the objective value when minimizing, its negative when maximizing.
    COMPLETE trials are told; PRUNED ones with their last intermediate value (skipped when
    they have none); FAIL ones and non-finite values are not. A trial is told as SMAC's
    configuration when the SMAC parameters it used have the values SMAC asked for (ones it
    did not use keep SMAC's values); otherwise (enqueued or fixed values, or sampled before
    SMAC existed) as a configuration built from its parameters if they cover SMAC's space,
    else not at all. Parameters outside SMAC's space are sampled by ``RandomSampler``.
    Single-objective only.
    """

    def __init__(
        self,
        *,
        seed: int | None = None,
        n_trials: int = 100,
        n_initial: int | None = None,
        output_directory: str | None = None,
    ) -> None:
        try:
            import smac  # noqa: F401
        except ImportError as e:
            raise ImportError(_IMPORT_ERROR) from e
        if n_trials < 1:
            raise ValueError(f"n_trials must be positive, got {n_trials}.")
        if n_initial is not None and not 0 <= n_initial <= n_trials:
            raise ValueError(f"n_initial must be in [0, n_trials={n_trials}], got {n_initial}.")
        self._seed = seed if seed is not None else int(np.random.default_rng().integers(2**31))
        self._n_trials = n_trials
        self._n_initial = n_initial
        self._output_directory = output_directory
        self._random_sampler = optuna.samplers.RandomSampler(seed=seed)
        self._intersection = IntersectionSearchSpace(include_pruned=True)
        self._lock = threading.Lock()
        self._space: dict[str, BaseDistribution] = {}
        self._smac: HyperparameterOptimizationFacade | None = None
        # Seed of told trials SMAC did not ask for: SMAC's intensifier adopts the seeds in its
        # run history at its first ask, and keeps the seed of that ask.
        self._smac_seed = self._seed
        #: Optuna trial number -> SMAC's trial and the parameters it became.
        self._asked: dict[int, tuple[TrialInfo, dict[str, Any]]] = {}

    def reseed_rng(self) -> None:
        self._random_sampler.reseed_rng()

    def infer_relative_search_space(
        self, study: optuna.Study, trial: FrozenTrial
    ) -> dict[str, BaseDistribution]:
        if len(study.directions) > 1:
            raise ValueError("SmacSampler supports single-objective studies only.")
        return {
            name: dist
            for name, dist in self._intersection.calculate(study).items()
            if not dist.single()
        }

    def sample_relative(
        self,
        study: optuna.Study,
        trial: FrozenTrial,
        search_space: dict[str, BaseDistribution],
    ) -> dict[str, Any]:
        with self._lock:
            if self._smac is None and search_space:
                self._build(study, search_space)
            names = [n for n, d in search_space.items() if self._space.get(n) == d]
            if not names:
                return {}
            assert self._smac is not None
            info = self._smac.ask()
            self._smac_seed = info.seed
            params = {n: _to_optuna(d, info.config[n]) for n, d in self._space.items()}
            self._asked[trial.number] = (info, params)
        return {n: params[n] for n in names}

    def sample_independent(
        self,
        study: optuna.Study,
        trial: FrozenTrial,
        param_name: str,
        param_distribution: BaseDistribution,
    ) -> Any:
        return self._random_sampler.sample_independent(study, trial, param_name, param_distribution)

    def after_trial(
        self,
        study: optuna.Study,
        trial: FrozenTrial,
        state: TrialState,
        values: Sequence[float] | None,
    ) -> None:
        try:
            with self._lock:
                asked = self._asked.pop(trial.number, None)
                if self._smac is not None:
                    self._tell(study, trial, state, values, asked)
        except Exception as e:  # A sampler must not break the study over one result.
            _logger.warning(f"SmacSampler could not tell trial {trial.number} to SMAC: {e!r}")

    def _build(self, study: optuna.Study, search_space: dict[str, BaseDistribution]) -> None:
        """Create SMAC on ``search_space`` and tell it the study's finished trials."""
        from ConfigSpace import ConfigurationSpace
        from smac import HyperparameterOptimizationFacade, Scenario
        from smac.model.random_forest import RandomForest

        configspace = ConfigurationSpace(seed=self._seed)
        configspace.add([_to_hyperparameter(n, d) for n, d in search_space.items()])
        if self._output_directory is None:
            output_directory = tempfile.mkdtemp(prefix="smac-sampler-")
            weakref.finalize(self, shutil.rmtree, output_directory, ignore_errors=True)
        else:
            output_directory = self._output_directory
        scenario = Scenario(
            configspace,
            output_directory=Path(output_directory),
            deterministic=True,
            n_trials=self._n_trials,
            seed=self._seed,
        )
        facade = HyperparameterOptimizationFacade
        # facade.get_model's forest, single-threaded and grown depth-first (see above).
        model = RandomForest(
            configspace,
            log_y=True,
            n_trees=10,
            bootstrapping=True,
            ratio_features=1.0,
            min_samples_split=2,
            min_samples_leaf=1,
            max_depth=2**20,
            max_leaf_nodes=None,
            seed=self._seed,
            n_jobs=1,
        )
        initial_design = (
            facade.get_initial_design(scenario)
            if self._n_initial is None
            else facade.get_initial_design(scenario, n_configs=self._n_initial, max_ratio=1.0)
        )
        # logging_level=False: any level makes SMAC dictConfig the root logger.
        logging.getLogger("smac").setLevel(logging.ERROR)
        self._smac = facade(
            scenario,
            model=model,
            initial_design=initial_design,
            config_selector=facade.get_config_selector(scenario, retrain_after=1),
            logging_level=False,
            overwrite=True,
        )
        self._space = dict(search_space)
        finished = (TrialState.COMPLETE, TrialState.PRUNED)
        for past in study.get_trials(deepcopy=False, states=finished):
            self._tell(study, past, past.state, past.values, None)

    def _tell(
        self,
        study: optuna.Study,
        trial: FrozenTrial,
        state: TrialState,
        values: Sequence[float] | None,
        asked: tuple[TrialInfo, dict[str, Any]] | None,
    ) -> None:
        """Tell SMAC the cost of ``trial``, if it has one and its configuration is known."""
        from smac.runhistory.dataclasses import TrialInfo, TrialValue

        if state == TrialState.COMPLETE and values is not None:
            value = values[0]
        elif state == TrialState.PRUNED and trial.intermediate_values:
            value = trial.intermediate_values[max(trial.intermediate_values)]
        else:
            return
        if not math.isfinite(value):
            return
        cost = value if study.direction == StudyDirection.MINIMIZE else -value
        used = trial.params
        if asked is not None and all(used[n] == v for n, v in asked[1].items() if n in used):
            info = asked[0]
        else:
            config = self._configuration(trial)
            if config is None:
                return
            info = TrialInfo(config, seed=self._smac_seed)
        assert self._smac is not None
        self._smac.tell(info, TrialValue(cost=cost))

    def _configuration(self, trial: FrozenTrial) -> Configuration | None:
        """SMAC's configuration of ``trial``'s parameters; None if they do not cover the space."""
        from ConfigSpace import Configuration

        if any(trial.distributions.get(n) != d for n, d in self._space.items()):
            return None
        assert self._smac is not None
        configspace: ConfigurationSpace = self._smac.scenario.configspace
        values = {n: _to_smac(d, trial.params[n]) for n, d in self._space.items()}
        return Configuration(configspace, values=values)
