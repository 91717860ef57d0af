"""``AutoPipeSampler``: Bayesian optimisation over the prior's residuals, as an Optuna sampler.

Each suggestion (paper B.3), for the study's search space:

1. Candidates (``candidates.py``): the whole product of a small discrete space, else a seeded
   Sobol sample plus neighbours of the best configurations so far; configurations already
   evaluated, running, enqueued or claimed by another worker are excluded, and so are
   configurations that failed and those the failure model (``failures.py``) expects to
   fail. Values the study fixes for the trial (enqueued, ``PartialFixedSampler``, already
   suggested) are set in every candidate, and parameters a branch of a conditional space
   does not use are set to ``None`` (``conditional.py``).
2. s(x): the prior's score, standardised with its mean and standard deviation over the base
   candidates of the prior's own space (0 without a prior).
3. Observations, as z-values oriented so that higher is better: an early-stopped trial gives
   its proxy (``autopipe:proxy``, or s(x) + ``autopipe:residual``) with the regressor's
   variance, or, when the prior's corpus found the score at the cut to rank runs better
   (``early_stop_signal``, ``cut_signal.py``), β·ĉ with ĉ that score standardised over the
   study's early-stopped trials; a full-fidelity trial gives its value standardised over the
   study's full-fidelity values, with variance ``full_noise``.
4. The prior's weight λ: ``procedure="calibrated"`` (default) estimates it from the study's
   observations, λ = ŵ, the posterior mean of w in z ≈ b + w·s(x), clipped to [0, 1]
   (``calibration.py``), so a prior the new dataset contradicts loses its say;
   ``procedure="paper"`` anneals λ_t on a fixed schedule (``acquisition.Schedule``).
   Targets: r = z − λ·s(x) (estimated λ) or z − s(x) (scheduled λ) with ``residual=True``,
   else z.
5. b = inverse-variance weighted mean of the targets; the GP (``residual_gp.py``) is fitted on
   the centred targets with per-point noise max(variance, ``noise_floor``).
6. Next configuration: argmax of UCB_t(x) = λ·s(x) + b + μ_t(x) + κ_t·σ_t(x)
   (``acquisition.py``; exact, with σ computed only where a cheap bound leaves the
   candidate a chance, ``acquisition.best_first``). The first ``n_startup`` trials instead
   take diverse configurations among the prior's ``startup_pool`` best (greedy max-min
   distance to everything tried; calibrated: the first at random among the prior's
   ``startup_top`` best, and the last one a random free candidate anywhere, a probe that
   shows whether the prior's ordering holds on this dataset); ``bo=False`` takes the prior's
   best untried configuration every time. The seed drives every random choice and breaks
   ties, so replicates differ where the method is really uncertain.

The search space is ``search_space=`` when given, else the union of the spaces the study's
finished and failed trials show, plus the prior's parameters the study has not shown yet: a
parameter of the prior the objective suggests before the study has shown it (the first
trial, a changed distribution) is chosen in ``sample_independent``, checked against the
prior and agreeing with what the trial holds. ``budget`` counts the sampler's own trials
(failed ones too): a study another sampler started begins the schedule at its start.

After the early-stop phase, ``promotion.py`` promotes the best early-stopped configurations
to full fidelity (``n_promote``), and ``recommend`` returns the best verified one.

The chosen configuration is claimed on the trial (user attr ``autopipe:claim``); the sampler
then re-reads the study and moves to its next choice if another trial holds the same
configuration (claimed while running, or evaluated, running or enqueued with it), so parallel
workers do not duplicate work. Every trial's user attrs (also visible to the objective through
``trial.user_attrs``) explain the choice: ``autopipe:prior_score`` (s), ``autopipe:gp_mean`` (μ),
``autopipe:gp_std`` (σ), ``autopipe:lambda``, ``autopipe:kappa``, ``autopipe:offset`` (b),
``autopipe:acquisition``, ``autopipe:phase``, ``autopipe:failure_risk`` (P(fail | x)) and
``autopipe:failures`` (failed configurations known). ``after_trial`` rewrites them for the
configuration that ran when it is not the one chosen.
"""

from __future__ import annotations

import copy
import json
import logging
import math
import threading
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any, Literal

import numpy as np
import optuna
import torch
from optuna.distributions import BaseDistribution, CategoricalDistribution, distribution_to_json
from optuna.samplers import BaseSampler, RandomSampler
from optuna.study import StudyDirection
from optuna.trial import FrozenTrial, TrialState

from optuna_autopipe import notes
from optuna_autopipe._storage_attrs import set_trial_user_attrs, wrapper_fixed_params
from optuna_autopipe.acquisition import Schedule, best_first, offset, ucb
from optuna_autopipe.calibration import PriorWeight
from optuna_autopipe.candidates import base_candidates, config_key, perturb, product_size
from optuna_autopipe.conditional import Rule, deactivate, inactive_rules
from optuna_autopipe.cut_signal import CutSignal, standardise
from optuna_autopipe.dynamics import DYNAMICS_ATTR, TrainingDynamics
from optuna_autopipe.early_stop import (
    FRACTION_ATTR,
    PRIOR_SCORE_ATTR,
    PROMOTED_FROM_ATTR,
    PROXY_ATTR,
    RESIDUAL_ATTR,
    diverged,
    proxy_of,
    stopped_early,
)
from optuna_autopipe.failures import RUN_FAILED_ATTR, FailureRisk, failed_numbers
from optuna_autopipe.notes import PHASE_ATTR
from optuna_autopipe.prior import Prior
from optuna_autopipe.profile import DatasetProfile
from optuna_autopipe.promotion import agreement
from optuna_autopipe.residual_gp import ResidualGP
from optuna_autopipe.space import SpaceEncoder

_logger = logging.getLogger(__name__)

CLAIM_ATTR = "autopipe:claim"
#: The user attrs explaining each suggestion (module docstring), in this order.
EXPLANATION_ATTRS = (
    PRIOR_SCORE_ATTR,
    "autopipe:gp_mean",
    "autopipe:gp_std",
    "autopipe:lambda",
    "autopipe:kappa",
    "autopipe:offset",
    "autopipe:acquisition",
    "autopipe:phase",
    "autopipe:failure_risk",
    "autopipe:failures",
)
_OCCUPIED = (TrialState.COMPLETE, TrialState.PRUNED, TrialState.RUNNING, TrialState.WAITING)
#: Trials whose parameters show the study's search space.
_SHOWN = (TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL)


@dataclass
class _Candidates:
    """One search space's base candidates, their keys, encodings and prior scores."""

    configs: list[dict[str, Any]]
    keys: list[str]
    x: np.ndarray
    prior: np.ndarray
    prior_mean: float
    prior_sd: float
    discrete: bool
    singles: dict[str, Any]


class AutoPipeSampler(BaseSampler):
    """BO over the residuals of a learned prior (module docstring).

    Args:
        prior: the fitted ``Prior`` (``None``: the "No Offline" variant, GP on proxies).
        dataset: the new dataset's ``DatasetProfile`` or meta-feature mapping.
        budget: the planned number of trials (λ and κ are annealed over it).
        seed: makes suggestions reproducible for the same storage contents.
        search_space: the space to optimise (default: the finished trials' common space,
            before any, the prior's space). Checked against the prior here: a parameter the
            prior scores missing, or a categorical choice it never saw, raises at once.
        residual: model r = z − s(x) (``False``: the GP models z; the prior still guides).
        bo: ``False`` takes the prior's best untried configuration each time.
        procedure: ``"calibrated"`` (default): the prior's weight is estimated on the
            study's observations (``prior_weight``), the warm start ends with a random probe,
            and ``n_promote`` defaults to 3 (``promotion.py``); ``"paper"``: the paper's
            procedure (B.3), λ_t on ``schedule``, the warm start among the prior's best only,
            the regressor's proxy as the early-stop signal, one verification
            (``n_promote=0``: ``early_stop.verify(study, sampler.recommend(study))``).
        schedule: κ_t, and with ``procedure="paper"`` λ_t (``acquisition.Schedule``; its
            budget is replaced by ``budget``).
        prior_weight: how λ is estimated (``calibration.PriorWeight``), or ``"schedule"``
            for λ_t on ``schedule`` (the paper's). Default: ``PriorWeight()`` calibrated,
            ``"schedule"`` paper.
        n_startup: warm-start trials (diverse configurations among the prior's best).
        startup_pool: how many of the prior's best the warm start chooses among.
        startup_top: calibrated: the first trial is drawn among the prior's this many best.
        probe_pool: calibrated: the last warm-start trial, the probe λ is measured against,
            is drawn at random among this share of the free candidates, the prior's lowest
            scored: 0.5 (default) the prior's lower half, 1 anywhere. A probe far from the
            warm start's first trials (at the top of the prior's order) gives the slope w
            more leverage, so a wrong prior loses its weight sooner, at the price of one run
            the prior calls poor (docs/sampler.md, "Robustness under dataset shift": the lower half
            halved LCBench's inverted-prior regret and cost nothing on NMT).
        n_promote: early-stopped configurations ``promotion.promote_best`` runs at full
            fidelity after the early-stop phase (default: 3 calibrated, 0 paper).
        max_grid: a discrete space with at most this many points is enumerated.
        n_samples: Sobol candidates of a larger or continuous space.
        full_noise: variance of a full-fidelity observation, in z units.
        noise_floor: least variance of any observation.
        early_stop_params: the parameters an early-stopped trial's observation depends on
            (for the SFT → RL pipeline, the SFT ones: ``search_space.SFT_PARAMETERS``). A
            candidate that agrees on all of them with an early-stopped (or running) trial is
            not proposed while any other is free: the stop cannot tell the two apart.
            ``None``: every parameter counts.
        early_stop_signal: what an early-stopped trial's observation is. ``"proxy"``: the
            regressor's proxy (paper B.2); ``"cut"``: the prior's cut signal, the score the
            run shows at the cut, compared within the study (``cut_signal.py``); ``"auto"``
            (default): the cut signal when the prior's corpus measured it to rank runs better
            than the proxy out of fold (or when the proxy could not be judged), else the
            proxy. Default: ``"auto"``, or ``"proxy"`` with ``procedure="paper"``.
        max_failure_risk: candidates whose probability of failing, P(fail | x) learnt from
            the study's failed trials (``failures.FailureRisk``), exceeds this are not
            proposed while another is free; 1 turns the model off (a configuration that
            failed is still never proposed again while others remain).

    Raises ``ValueError`` for an option out of range, and for a search space the prior
    cannot score (a parameter it always saw missing, a categorical choice it never saw, a
    parameter of another kind): here for ``search_space=``, else at the trial meeting it.
    """

    def __init__(
        self,
        prior: Prior | None = None,
        dataset: DatasetProfile | Mapping[str, float] | None = None,
        *,
        budget: int = 15,
        seed: int | None = None,
        search_space: Mapping[str, BaseDistribution] | None = None,
        residual: bool = True,
        bo: bool = True,
        procedure: Literal["calibrated", "paper"] = "calibrated",
        schedule: Schedule | None = None,
        prior_weight: PriorWeight | Literal["schedule"] | None = None,
        n_startup: int = 3,
        startup_pool: int = 50,
        startup_top: int = 5,
        probe_pool: float = 0.5,
        n_promote: int | None = None,
        max_grid: int = 100_000,
        n_samples: int = 2048,
        full_noise: float = 0.1,
        noise_floor: float = 0.01,
        early_stop_params: Sequence[str] | None = None,
        early_stop_signal: Literal["auto", "proxy", "cut"] | None = None,
        max_failure_risk: float = 0.5,
    ) -> None:
        if prior is None and not bo:
            raise ValueError("bo=False takes the prior's top configurations: it needs a prior.")
        if procedure not in ("calibrated", "paper"):
            raise ValueError(f"procedure must be 'calibrated' or 'paper', got {procedure!r}.")
        for name, count in (("n_startup", n_startup), ("n_promote", n_promote or 0)):
            if count < 0:
                raise ValueError(f"{name} must be >= 0, got {count!r}.")
        for name, count in (("startup_pool", startup_pool), ("startup_top", startup_top)):
            if count < 1:
                raise ValueError(f"{name} must be >= 1, got {count!r}.")
        for name, value in (("full_noise", full_noise), ("noise_floor", noise_floor)):
            if not 0 < value < math.inf:
                raise ValueError(f"{name} must be a positive variance, got {value!r}.")
        for name, count in (("max_grid", max_grid), ("n_samples", n_samples)):
            if count < 1:
                raise ValueError(f"{name} must be >= 1, got {count!r}.")
        if not 0.0 <= max_failure_risk <= 1.0:
            raise ValueError(f"max_failure_risk must be in [0, 1], got {max_failure_risk!r}.")
        self.max_failure_risk = max_failure_risk
        self.prior = prior
        self.features = dict(
            dataset.features if isinstance(dataset, DatasetProfile) else dataset or {}
        )
        if prior is not None:
            needed = [f for f in prior.ranker.kept_columns if f in prior.ranker.dataset_features]
            missing = [f for f in needed if f not in self.features]
            if missing:
                raise ValueError(
                    f"The dataset profile lacks {len(missing)} feature(s) the prior uses: "
                    f"{missing[:10]}. Pass dataset=DatasetProfile.from_files(...) computed the "
                    "same way as the prior's corpus, or NaN for features truly unknown."
                )
        self.budget = budget
        self.schedule = Schedule(**{**(schedule or Schedule()).__dict__, "budget": budget})
        self.search_space = dict(search_space) if search_space is not None else None
        self.residual = residual and prior is not None
        self.bo = bo
        self.procedure = procedure
        if prior_weight is None:
            prior_weight = PriorWeight() if procedure == "calibrated" else "schedule"
        if not isinstance(prior_weight, PriorWeight) and prior_weight != "schedule":
            raise ValueError(
                f"prior_weight must be a PriorWeight or 'schedule', got {prior_weight!r}."
            )
        self.prior_weight = prior_weight
        self.n_startup = n_startup
        self.startup_pool = startup_pool
        self.startup_top = startup_top
        if not 0.0 < probe_pool <= 1.0:
            raise ValueError(f"probe_pool must be in (0, 1], got {probe_pool!r}.")
        self.probe_pool = probe_pool
        self.n_promote = (3 if procedure == "calibrated" else 0) if n_promote is None else n_promote
        self.max_grid = max_grid
        self.n_samples = n_samples
        self.full_noise = full_noise
        self.noise_floor = noise_floor
        self.early_stop_params = None if early_stop_params is None else tuple(early_stop_params)
        self._signal_choice = self._check_signal(
            early_stop_signal or ("auto" if procedure == "calibrated" else "proxy")
        )
        self._cut_values: dict[tuple[int, float], float] = {}
        self._seed = int(np.random.SeedSequence(seed).generate_state(1)[0])
        self._independent = RandomSampler(seed=seed)
        self._warned: set[str] = set()
        self._cache: dict[str, _Candidates] = {}
        #: Per running trial: what its choice was made with (``after_trial`` re-explains).
        self._context: dict[int, _Context] = {}
        self._lock = threading.Lock()
        if prior is not None and self.search_space is not None:
            self._check_prior_space(self.search_space)

    def _check_signal(self, choice: str) -> str:
        """``early_stop_signal``, validated against the prior."""
        if choice not in ("auto", "proxy", "cut"):
            raise ValueError(f"early_stop_signal must be 'auto', 'proxy' or 'cut', got {choice!r}.")
        regressors = self.prior.regressors.values() if self.prior is not None else ()
        if choice == "cut" and not any(r.cut is not None for r in regressors):
            raise ValueError(
                "early_stop_signal='cut' needs a prior whose early-stop regressor has a cut "
                "signal: refit the prior on runs with recorded dynamics (autopipe fit-prior)."
            )
        return choice

    def _signal(self, trials: Sequence[FrozenTrial]) -> tuple[CutSignal | None, float]:
        """The cut signal the study's observations use (``None``: the proxies) and the
        early-stop fraction it reads: the fraction most of the study's early stops were cut
        at (``autopipe:fraction``), else the prior's default regressor's. A fraction the
        prior serves no regressor for falls back to the proxies, with one warning."""
        default = self.prior.regressor if self.prior is not None else None
        if self._signal_choice == "proxy" or default is None:
            return None, math.nan
        cut = [t.user_attrs[FRACTION_ATTR] for t in trials if FRACTION_ATTR in t.user_attrs]
        fraction = max(set(cut), key=cut.count) if cut else default.fraction
        try:
            regressor = self.prior.regressor_for(fraction)  # type: ignore[union-attr]
        except ValueError as exc:
            if "<fraction>" not in self._warned:
                self._warned.add("<fraction>")
                warnings.warn(f"{exc} AutoPipeSampler uses the proxies.", stacklevel=4)
            return None, fraction
        use = self._signal_choice == "cut" or regressor.uses_cut
        return (regressor.cut if use else None), fraction

    # --- pickling and reseeding ----------------------------------------------------------

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        del state["_lock"]
        state["_cache"] = {}
        state["_context"] = {}
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._lock = threading.Lock()

    def reseed_rng(self) -> None:
        with self._lock:
            self._seed = int(np.random.SeedSequence().generate_state(1)[0])
            self._cache = {}  # the Sobol candidates were drawn with the old seed
        self._independent.reseed_rng()

    # --- the sampler interface -----------------------------------------------------------

    def infer_relative_search_space(
        self, study: optuna.Study, trial: FrozenTrial
    ) -> dict[str, BaseDistribution]:
        if self.search_space is not None:
            space = self.search_space
        else:
            space = self._shown_space(study.get_trials(deepcopy=False, states=_SHOWN))
        return {name: dist for name, dist in space.items() if not dist.single()}

    def sample_relative(
        self, study: optuna.Study, trial: FrozenTrial, search_space: dict[str, BaseDistribution]
    ) -> dict[str, Any]:
        if len(study.directions) != 1:
            raise ValueError("AutoPipeSampler optimises one objective; this study has several.")
        if not search_space or set(search_space) <= set(trial.system_attrs.get("fixed_params", {})):
            return {}
        trials = study.get_trials(deepcopy=False)  # read once per suggestion
        self._warn_missing_prior_params(trials)
        with self._lock:
            config = self._suggest(study, trial, self._candidate_space(trials), trials)
        return {n: config[n] for n in search_space if config.get(n) is not None}

    def sample_independent(
        self,
        study: optuna.Study,
        trial: FrozenTrial,
        param_name: str,
        param_distribution: BaseDistribution,
    ) -> Any:
        if len(study.directions) != 1:
            raise ValueError("AutoPipeSampler optimises one objective; this study has several.")
        known = self.prior.ranker.encoder.space if self.prior is not None else {}  # type: ignore[union-attr]
        if self.search_space is None and param_name in known:
            return self._suggest_one(study, trial, param_name, param_distribution)
        if param_name not in self._warned:
            self._warned.add(param_name)
            warnings.warn(
                f"AutoPipeSampler samples parameter {param_name!r} independently (uniformly at "
                "random): it is outside the search space it optimises (pass search_space= to "
                "AutoPipeSampler to include it).",
                stacklevel=2,
            )
        return self._independent.sample_independent(study, trial, param_name, param_distribution)

    def after_trial(
        self,
        study: optuna.Study,
        trial: FrozenTrial,
        state: TrialState,
        values: Sequence[float] | None,
    ) -> None:
        """Mark a run that failed (``failures.RUN_FAILED_ATTR``), and re-explain a trial whose
        configuration is not the one the sampler chose (a value the study fixed later, a
        parameter the objective did not use): the claim, s(x), μ, σ and the acquisition
        then describe the configuration that ran, and a residual proxy is s(x) + r̂ with
        that s(x)."""
        if state == TrialState.FAIL and trial.params:  # not a trial refused before it ran
            set_trial_user_attrs(study, trial, {RUN_FAILED_ATTR: True})
        context = self._context.pop(trial.number, None)
        claim = trial.user_attrs.get(CLAIM_ATTR)
        ran = {n: trial.params.get(n) for n in json.loads(claim)} if claim else {}
        if context is not None and claim is not None and config_key(ran) != claim:
            attrs = context.explain(ran, self._prior_scores([ran], context.base)[0])
            if RESIDUAL_ATTR in trial.user_attrs:
                attrs[PROXY_ATTR] = attrs[PRIOR_SCORE_ATTR] + trial.user_attrs[RESIDUAL_ATTR]
            set_trial_user_attrs(study, trial, attrs)
            trial.user_attrs.update(attrs)
        finished = copy.copy(trial)  # as it ends: the storage records it after after_trial
        finished.state, finished.values = state, values
        self._write_notes(study, finished)

    def _write_notes(self, study: optuna.Study, finished: FrozenTrial) -> None:
        """The note of the trial that ``finished`` (with its state and values) and the study
        note (``notes.py``), from the study's trials with that one as it ends."""
        trials = [
            finished if t.number == finished.number else t for t in study.get_trials(deepcopy=False)
        ]
        ranking = [
            t.number
            for t in self._early_stop_ranking(trials, study.direction, include_verified=True)
        ]
        note = notes.trial_note(finished, trials, study.direction, ranking=ranking)
        notes.save(study, finished, note)
        try:
            config = self._recommend(trials, study.direction, "proxy")
        except ValueError:
            params, lines = None, [notes.counts(trials)]
        else:
            params = {n: v for n, v in config.items() if v is not None}
            lines = notes.evidence(
                study,
                trials,
                params,
                prior=self.prior,
                ranking=ranking,
                agreement=agreement(ranking, trials, study.direction),
            )
        notes.save(study, None, notes.study_note(params, lines, trials=trials))

    # --- the search space ----------------------------------------------------------------

    def _shown_space(self, trials: Sequence[FrozenTrial]) -> dict[str, BaseDistribution]:
        """The union of the spaces the study's finished and failed trials (among ``trials``)
        show (a parameter suggested with different distributions is left out, like Optuna's
        intersection)."""
        space: dict[str, BaseDistribution] = {}
        conflicting: set[str] = set()
        for trial in (t for t in trials if t.state in _SHOWN):
            for name, dist in trial.distributions.items():
                if space.setdefault(name, dist) != dist:
                    conflicting.add(name)
        return {n: d for n, d in space.items() if n not in conflicting}

    def _candidate_space(
        self,
        trials: Sequence[FrozenTrial],
        overrides: Mapping[str, BaseDistribution] | None = None,
    ) -> dict[str, BaseDistribution]:
        """The space the sampler chooses in, single-valued parameters included:
        ``search_space``, or the study's shown space and ``overrides`` plus, when they share
        a parameter with the prior, the prior's parameters they lack (with the prior's
        distributions)."""
        if self.search_space is not None:
            return {**self.search_space, **(overrides or {})}
        space = {**self._shown_space(trials), **(overrides or {})}
        known = self.prior.ranker.encoder.space if self.prior is not None else {}  # type: ignore[union-attr]
        return {**known, **space} if set(known) & set(space) else space

    def _relative_space(self, trials: Sequence[FrozenTrial]) -> dict[str, BaseDistribution]:
        """The multi-valued parameters of ``_candidate_space``: what observations hold."""
        return {n: d for n, d in self._candidate_space(trials).items() if not d.single()}

    def _warn_missing_prior_params(self, trials: Sequence[FrozenTrial]) -> None:
        """Warn (once) when no finished trial holds a parameter the prior scores and its
        corpus always held, while they hold others of its parameters: the objective may not
        suggest it (or only on a branch not run yet); the prior scores it as missing."""
        if self.prior is None or self.search_space is not None:
            return
        ranker = self.prior.ranker
        known = set(ranker.encoder.space)  # type: ignore[union-attr]
        held = {n for t in trials if t.state in _SHOWN[:2] for n in t.params}
        missing = sorted(known - ranker.conditional - held) if known & held else []
        if missing and f"<missing {missing}>" not in self._warned:
            self._warned.add(f"<missing {missing}>")
            warnings.warn(
                f"The study's trials lack parameters the prior scores: {missing}; the prior "
                "scores them as missing (XGBoost's missing-value branch) until a trial holds "
                "them. If the objective never suggests them, pass search_space= or refit the "
                "prior (`autopipe fit-prior`) on studies with this search space.",
                stacklevel=4,
            )

    def _suggest_one(
        self, study: optuna.Study, trial: FrozenTrial, name: str, dist: BaseDistribution
    ) -> Any:
        """A parameter the prior scores that the study has not shown with this distribution
        (the first trials, a changed range): checked against the prior, then taken from the
        trial's choice so far when that agrees with what the trial holds and fits ``dist``,
        else chosen anew with the rest of the configuration among candidates that agree."""
        self._check_prior_space({name: dist}, complete=False)
        trials = study.get_trials(deepcopy=False)
        space = self._candidate_space(trials, {**trial.distributions, name: dist})
        with self._lock:
            context = self._context.get(trial.number)
            config = context.config if context is not None else {}
            agrees = all(config.get(n, v) == v for n, v in trial.params.items())
            if not (agrees and name in config and _contains(dist, config[name])):
                config = self._suggest(study, trial, space, trials)
            value = config.get(name)
        if value is None or not _contains(dist, value):
            return self._independent.sample_independent(study, trial, name, dist)
        return value

    # --- one suggestion ------------------------------------------------------------------

    def _suggest(
        self,
        study: optuna.Study,
        trial: FrozenTrial,
        full_space: dict[str, BaseDistribution],
        trials: Sequence[FrozenTrial],
    ) -> dict[str, Any]:
        """The configuration chosen in ``full_space`` (module docstring; single-valued
        parameters left out, inactive ones ``None``), among candidates that agree with the
        values the trial holds or the study fixes for it; writes the explanation attrs.
        ``trials``: the study's trials, read once for the suggestion."""
        base = self._candidates(full_space)
        space = {n: d for n, d in full_space.items() if not d.single()}
        encoder = SpaceEncoder(space)
        rng = np.random.default_rng([self._seed, trial.number])
        pairs = self._observed(trials, space, study.direction)
        observed = [o for _, o in pairs]
        configs, keys, x, prior = base.configs, base.keys, base.x, base.prior
        if not base.discrete and observed:
            best = [o.config for o in sorted(observed, key=lambda o: -o.z)[:3]]
            extra = perturb(best, space, n_each=128, scale=0.05, rng=rng)
            configs = configs + extra
            keys = keys + [config_key(c) for c in extra]
            x = np.vstack([x, encoder.encode(extra)])
            prior = np.concatenate([prior, self._prior_scores(extra, base)])
        fixed = self._fixed(study, trial, space)
        rules = self._rules(trials, space)
        if fixed or rules:
            configs = _unique(deactivate([{**c, **fixed} for c in configs], rules))
            keys = [config_key(c) for c in configs]
            x = encoder.encode(configs)
            prior = self._prior_scores(configs, base)
        occupied = self._occupied(trials, trial, space)
        failed, ran = self._failed(trials, space, [o.config for o in observed])
        risk = np.zeros(len(configs))
        if failed and self.max_failure_risk < 1.0:
            finished = encoder.encode([o.config for o in observed])
            risk = FailureRisk(finished, encoder.encode(failed), seed=self._seed).predict(x)
        held = np.array([k in occupied for k in keys])
        known_to_fail = _matching(configs, failed)
        free = ~held & ~known_to_fail
        safe = free & (risk <= self.max_failure_risk)
        free = safe if safe.any() else free
        unseen = free & self._unobserved(trials, trial, configs)
        free = unseen if unseen.any() else free
        exhausted = not free.any()
        if exhausted:  # a failure whose run never reported (a dead worker) is retried first
            again = ~_matching(configs, ran)
            retry = again & ~held
            free = next(m for m in (retry, again, np.ones(len(keys), dtype=bool)) if m.any())
            _logger.warning(
                "Every candidate configuration has been evaluated, is running or failed; "
                "AutoPipeSampler %s.",
                "retries a failed one" if retry.any() else "proposes the best one again",
            )
        # The budget counts this sampler's own trials (not enqueued or other samplers'); the
        # observations the study held before stand in for warm-start trials.
        t = sum(1 for o in trials if o.number < trial.number and PHASE_ATTR in o.user_attrs)
        start = t + sum(1 for other, _ in pairs if PHASE_ATTR not in other.user_attrs)
        lam = self._lambda(t, observed, base)
        explain: dict[str, Any] = {
            "autopipe:lambda": lam,
            "autopipe:kappa": self.schedule.kappa(t),
            "autopipe:failures": len(failed),
        }
        weights = {"lam": lam, "kappa": float(explain["autopipe:kappa"])}
        pool = np.flatnonzero(free)
        mean = std = np.zeros(len(pool))
        bias = 0.0
        gp: ResidualGP | None = None
        if not self.bo:
            upper, phase = prior[pool], "prior-order"
        elif start < self.n_startup:
            tried = [o.config for o in observed] + [
                {n: other.params.get(n) for n in space}
                for other in trials
                if other.state == TrialState.RUNNING
                and other.number != trial.number
                and set(space) & set(other.params)
            ]
            diverse = self._warm_start(start, prior, x, free, encoder.encode(tried), rng)
            upper, phase = diverse[pool], "warm-start"
        else:
            if observed:
                gp, bias = self._fit(observed, encoder, base, lam)
                mean, std = gp.predict(x[pool], std="bound")
            else:  # the prior alone, with the GP's prior σ = 1
                std = np.ones(len(pool))
            upper = ucb(prior=prior[pool], mean=mean, std=std, bias=bias, **weights)
            phase = "bo"
        score = upper.copy()

        def chosen(index: int) -> dict[str, Any]:
            notes.save(study, trial, notes.choice(trial.user_attrs))
            config = dict(configs[index])
            self._context[trial.number] = _Context(
                config=config,
                base=base,
                encoder=encoder,
                gp=gp,
                bias=bias,
                weights=weights,
                phase=phase,
            )
            return config

        def exact(positions: np.ndarray) -> np.ndarray:
            """UCB at ``positions`` of ``pool`` with the exact σ (σ stored for the attrs)."""
            if gp is not None:
                std[positions] = gp.predict(x[pool[positions]])[1]
                score[positions] = ucb(
                    prior=prior[pool[positions]],
                    mean=mean[positions],
                    std=std[positions],
                    bias=bias,
                    **weights,
                )
            return score[positions]

        first = None
        for position in best_first(upper, exact):  # every free candidate, best first
            index = pool[position]
            first = index if first is None else first
            explain.update(
                {
                    PRIOR_SCORE_ATTR: float(prior[index]),
                    "autopipe:gp_mean": float(mean[position]),
                    "autopipe:gp_std": float(std[position]),
                    "autopipe:offset": bias,
                    "autopipe:acquisition": float(score[position]),
                    PHASE_ATTR: phase,
                    "autopipe:failure_risk": float(risk[index]),
                    CLAIM_ATTR: keys[index],
                }
            )
            set_trial_user_attrs(study, trial, explain)
            for name, value in explain.items():  # Optuna passes the objective's cached trial
                trial.set_user_attr(name, value)
            if exhausted or not self._held_by_another(study, trial, space, keys[index]):
                return chosen(index)
        _logger.warning(
            "Every free candidate configuration was claimed by another worker meanwhile; "
            "AutoPipeSampler proposes the best one again."
        )
        return chosen(first)

    def _fixed(
        self, study: optuna.Study, trial: FrozenTrial, space: Mapping[str, BaseDistribution]
    ) -> dict[str, Any]:
        """Values of ``space`` the trial already holds or the study fixes for it: enqueued
        (``study.enqueue_trial``, also partial), fixed by a ``PartialFixedSampler``, or
        suggested before the sampler was asked (those inside their distribution only, as
        Optuna uses them)."""
        fixed = {
            **trial.system_attrs.get("fixed_params", {}),
            **wrapper_fixed_params(study),
            **trial.params,
        }
        return {n: v for n, v in fixed.items() if n in space and _contains(space[n], v)}

    def _rules(
        self, trials: Sequence[FrozenTrial], space: Mapping[str, BaseDistribution]
    ) -> list[Rule]:
        """The conditional structure (``conditional.py``) the study's finished trials show,
        plus the prior corpus' rules that no finished trial contradicts."""
        finished = [t.params for t in trials if t.state in _SHOWN[:2]]
        rules = inactive_rules(finished, space)
        if self.prior is not None:
            for name, value, other in self.prior.ranker.inactive:
                contradicted = any(
                    p.get(name) == value and p.get(other) is not None for p in finished
                )
                if name in space and other in space and not contradicted:
                    rules.append((name, value, other))
        return rules

    def _failed(
        self,
        trials: Sequence[FrozenTrial],
        space: Mapping[str, BaseDistribution],
        finished: Sequence[Mapping[str, Any]],
    ) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
        """The failed trials' configurations (``failures.failed_numbers``) as the parameters
        of ``space`` each held when it failed: every candidate that agrees with one failed
        too (a run that failed before suggesting a parameter fails whatever its value, and a
        branch that does not use it fails with any). Those a ``finished`` configuration
        agrees with are left out. An early stop whose run diverged (``early_stop.diverged``)
        counts as a failure. Also returned: those whose run itself failed
        (``RUN_FAILED_ATTR``, or diverged), not a worker that vanished."""
        lost = {t.number for t in trials if diverged(t)}
        numbers = failed_numbers(trials) | lost
        failed, ran = [], []
        for trial in trials:
            held = {n: trial.params[n] for n in space if n in trial.params}
            if trial.number not in numbers or not held or _matching(finished, [held]).any():
                continue
            failed.append(held)
            if trial.user_attrs.get(RUN_FAILED_ATTR) or trial.number in lost:
                ran.append(held)
        return failed, ran

    def _candidates(
        self, full_space: Mapping[str, BaseDistribution], *, reference: bool = False
    ) -> _Candidates:
        """The base candidates of ``full_space``'s multi-valued parameters, built once per
        space; single-valued ones are held apart and added when the prior scores. s(x) is
        standardised with the mean and standard deviation of the prior's raw scores over the
        base candidates of the prior's own space (``reference``: computing those), so that a
        configuration has one s(x) whatever the study fixed or narrowed."""
        signature = repr(sorted((n, distribution_to_json(d)) for n, d in full_space.items()))
        if signature not in self._cache:
            space = {n: d for n, d in full_space.items() if not d.single()}
            singles = {
                n: d.to_external_repr(d.to_internal_repr(_only_value(d)))
                for n, d in full_space.items()
                if d.single()
            }
            configs = base_candidates(
                space, max_grid=self.max_grid, n_samples=self.n_samples, seed=self._seed % 2**31
            )
            discrete = product_size(space, self.max_grid) is not None
            usable = self.prior is not None and self._check_prior_space(full_space)
            raw = (
                self.prior.ranker.raw_scores([{**singles, **c} for c in configs], self.features)  # type: ignore[union-attr]
                if usable
                else np.zeros(len(configs))
            )
            mean, sd = float(raw.mean()), float(raw.std()) or 1.0
            if usable and not reference:
                own = self._candidates(self.prior.ranker.encoder.space, reference=True)  # type: ignore[union-attr]
                mean, sd = own.prior_mean, own.prior_sd
            self._cache[signature] = _Candidates(
                configs=configs,
                keys=[config_key(c) for c in configs],
                x=SpaceEncoder(space).encode(configs),
                prior=(raw - mean) / sd,
                prior_mean=mean,
                prior_sd=sd,
                discrete=discrete,
                singles=singles,
            )
        return self._cache[signature]

    def _check_prior_space(
        self, space: Mapping[str, BaseDistribution], *, complete: bool = True
    ) -> bool:
        """Whether the prior scores ``space`` (``False``, with one warning, when they share no
        parameter). Raises when a parameter's distribution is of another kind than the
        prior's or has a categorical choice the prior never saw, and, when ``complete``,
        when ``space`` lacks parameters the prior scores and its corpus always held."""
        ranker = self.prior.ranker  # type: ignore[union-attr]
        known = ranker.encoder.space
        if not set(known) & set(space):
            if "<prior>" not in self._warned:
                self._warned.add("<prior>")
                warnings.warn(
                    f"None of the prior's parameters ({sorted(known)}) is in the search space "
                    f"({sorted(space)}); AutoPipeSampler runs without the prior.",
                    stacklevel=4,
                )
            return False
        missing = sorted(set(known) - set(space) - ranker.conditional)
        if complete and missing:
            raise ValueError(
                f"The search space lacks parameters the prior scores: {missing}. Add them to "
                "the objective (or pass search_space= with them), or refit the prior "
                "(`autopipe fit-prior`) on studies with this search space."
            )
        for name, dist in space.items():
            if name not in known:
                continue
            if _is_label(dist) != _is_label(known[name]):
                raise ValueError(
                    f"Parameter {name!r} is {dist!r} in this study but {known[name]!r} in the "
                    "prior's corpus. Suggest it (and give it in search_space=) as the prior's "
                    "corpus did, or refit the prior (`autopipe fit-prior`) on studies with "
                    "this search space."
                )
            if isinstance(dist, CategoricalDistribution):
                ranker.encoder.encode([{name: choice} for choice in dist.choices])  # raises
        return True

    def _prior_scores(self, configs: Sequence[Mapping[str, Any]], base: _Candidates) -> np.ndarray:
        """s(x) of any configurations, standardised with the base candidates' statistics."""
        if self.prior is None or not base.prior.any():
            return np.zeros(len(configs))
        singles = base.singles
        raw = self.prior.ranker.raw_scores([{**singles, **c} for c in configs], self.features)
        return (raw - base.prior_mean) / base.prior_sd

    def _observation(
        self, trial: FrozenTrial, space: Mapping[str, Any], signal: CutSignal | None
    ) -> _Observation | None:
        """What a finished trial says, ``None`` when it says nothing usable. A trial counts
        on the parameters of ``space`` it holds (the others inactive: ``None``); an
        early-stopped trial without a proxy counts with the cut signal (z set by
        ``_observed``)."""
        if not set(space) & set(trial.params):
            return None
        config = {n: trial.params.get(n) for n in space}
        attrs = trial.user_attrs
        full = float(attrs.get("fidelity", 1.0)) >= 1.0
        if trial.state == TrialState.COMPLETE and full:
            value = trial.value
            if value is None or not math.isfinite(value):
                return None
            return _Observation(config=config, z=value, variance=self.full_noise, full=True)
        if trial.state not in (TrialState.COMPLETE, TrialState.PRUNED):
            return None
        if diverged(trial):  # a failure (``_failed``), not an observation
            return None
        proxy = proxy_of(trial)
        if proxy is None and signal is not None and stopped_early(trial):
            proxy = (math.nan, signal.variance)  # the cut signal needs only the dynamics
        if proxy is None:
            return None
        return _Observation(config=config, z=proxy[0], variance=proxy[1], full=False)

    def _observations(
        self, trials: Sequence[FrozenTrial], space: Mapping[str, Any], direction: StudyDirection
    ) -> list[_Observation]:
        """The observations of ``_observed``, without their trials."""
        return [o for _, o in self._observed(trials, space, direction)]

    def _observed(
        self, trials: Sequence[FrozenTrial], space: Mapping[str, Any], direction: StudyDirection
    ) -> list[tuple[FrozenTrial, _Observation]]:
        """Every usable finished trial with its z-value, higher = better: a full-fidelity value
        standardised over the study's full-fidelity values (variance ``full_noise``); an
        early-stopped trial's proxy with its variance, or with the cut signal β·ĉ with
        variance v, ĉ its cut feature standardised over the study's early-stopped trials
        (proxies for all when any of them lacks the feature; an early-stopped trial without
        a proxy then says nothing)."""
        signal, fraction = self._signal(trials)
        pairs = [(t, o) for t in trials if (o := self._observation(t, space, signal)) is not None]
        sign = 1.0 if direction == StudyDirection.MAXIMIZE else -1.0
        values = np.array([sign * o.z for _, o in pairs if o.full])
        mean = values.mean() if len(values) else 0.0
        sd = values.std() if len(values) >= 2 and values.std() > 0 else 1.0
        observed = [replace(o, z=(sign * o.z - mean) / sd) if o.full else o for _, o in pairs]
        early = [i for i, (_, o) in enumerate(pairs) if not o.full]
        if signal is not None and early:
            cuts = np.array([self._cut_value(pairs[i][0], signal, fraction) for i in early])
            if not np.isfinite(cuts).all():
                self._warn_unread_cut(signal, [pairs[i][0] for i in early], cuts)
            if np.isfinite(cuts).all():
                for i, c in zip(early, standardise(cuts), strict=True):
                    observed[i] = replace(observed[i], z=signal.slope * c, variance=signal.variance)
        return [(t, o) for (t, _), o in zip(pairs, observed, strict=True) if math.isfinite(o.z)]

    def _best_cut(
        self, trials: Sequence[FrozenTrial], space: Mapping[str, Any]
    ) -> dict[str, Any] | None:
        """The configuration with the best score at the cut among the observed trials, full
        or early-stopped (``None`` without the cut signal or when any lacks the score)."""
        signal, fraction = self._signal(trials)
        if signal is None:
            return None
        seen = [t for t in trials if self._observation(t, space, signal) is not None]
        cuts = [self._cut_value(t, signal, fraction) for t in seen]
        if not np.isfinite(cuts).all():
            return None
        return {n: seen[int(np.argmax(cuts))].params.get(n) for n in space}

    def _warn_unread_cut(
        self, signal: CutSignal, trials: Sequence[FrozenTrial], cuts: np.ndarray
    ) -> None:
        """Once: some early stops lack the prior's cut feature, so all are read by their
        proxies (``_observed``), which rank them by little when the metric is missing."""
        if "<cut>" in self._warned:
            return
        self._warned.add("<cut>")
        metric = signal.feature.split(".")[0]
        logged = sorted(
            {
                name
                for t in trials
                if isinstance(t.user_attrs.get(DYNAMICS_ATTR), str)
                for name in TrainingDynamics.from_json(t.user_attrs[DYNAMICS_ATTR]).metrics
            }
        )
        unread = [t.number for t, c in zip(trials, cuts, strict=True) if not math.isfinite(c)]
        warnings.warn(
            f"The prior reads early stops by {signal.feature} (its cut signal), which "
            f"{len(unread)} of {len(trials)} early-stopped trials lack (e.g. trial {unread[0]}; "
            f"the metrics they log: {logged}); every early stop is read by its proxy instead, "
            f"whose regressor may read {metric!r} too, so the ranking of early stops (and the "
            f"promotions) rests on little. Log {metric!r} up to the cut (for an eval metric, "
            "evaluate before the stop), or refit the prior on studies that log what this one does.",
            stacklevel=4,
        )

    def _cut_value(self, trial: FrozenTrial, signal: CutSignal, fraction: float) -> float:
        """The oriented cut feature, at ``fraction``, of a trial's recorded dynamics (NaN
        without)."""
        record = trial.user_attrs.get(DYNAMICS_ATTR)
        if not isinstance(record, str):
            return math.nan
        key = (hash(record), fraction)  # a finished trial's dynamics never change
        if key not in self._cut_values:
            dynamics = TrainingDynamics.from_json(record, source=f"trial {trial.number}")
            self._cut_values[key] = signal.value(dynamics, fraction=fraction)
        return self._cut_values[key]

    def _lambda(self, t: int, observed: list[_Observation], base: _Candidates) -> float:
        """The prior's weight λ in the acquisition at trial ``t`` (0 without a prior)."""
        if self.prior is None:
            return 0.0
        if self.prior_weight == "schedule":
            return self.schedule.lam(t)
        assert isinstance(self.prior_weight, PriorWeight)
        prior = self._prior_scores([o.config for o in observed], base)
        z = np.array([o.z for o in observed])
        variance = np.maximum([o.variance for o in observed], self.noise_floor)
        return self.prior_weight.weight(prior, z, variance)

    def _fit(
        self, observed: list[_Observation], encoder: SpaceEncoder, base: _Candidates, lam: float
    ) -> tuple[ResidualGP, float]:
        """The GP on the centred targets and the offset b (needs an observation); the
        residual targets subtract λ·s(x) (calibrated) or s(x) (paper)."""
        configs = [o.config for o in observed]
        targets = np.array([o.z for o in observed])
        if self.residual:
            weight = 1.0 if self.prior_weight == "schedule" else lam
            targets = targets - weight * self._prior_scores(configs, base)
        variances = np.maximum([o.variance for o in observed], self.noise_floor)
        bias = offset(targets, variances)
        with torch.random.fork_rng():
            torch.manual_seed(self._seed % 2**31)
            gp = ResidualGP(encoder.encode(configs), targets - bias, variances)
        return gp, bias

    def _warm_start(
        self,
        t: int,
        prior: np.ndarray,
        x: np.ndarray,
        free: np.ndarray,
        tried: np.ndarray,
        rng: np.random.Generator,
    ) -> np.ndarray:
        """A score whose argmax is warm-start trial ``t``'s choice: among the prior's
        ``startup_pool`` best free candidates (all when the prior is flat), the one farthest
        from everything tried, ties broken at random. Calibrated: the first trial takes one
        at random among the prior's ``startup_top`` best, and the last warm-start trial a
        random free candidate among the prior's lowest ``probe_pool`` share (1: anywhere):
        the probe the prior's weight is measured against."""
        pool = np.flatnonzero(free)
        ranked = pool[np.argsort(-prior[pool], kind="stable")] if prior.any() else pool
        score = np.full(len(prior), -np.inf)
        calibrated = self.procedure == "calibrated"
        if calibrated and (len(tried) == 0 or t == 0):
            score[rng.choice(ranked[: self.startup_top])] = 0.0
            return score
        if calibrated and self.n_startup >= 2 and t == self.n_startup - 1:
            if self.probe_pool < 1.0 and prior.any():
                pool = ranked[-max(1, int(self.probe_pool * len(ranked) + 1e-9)) :]
            score[rng.choice(pool)] = 0.0
            return score
        if prior.any():
            pool = ranked[: self.startup_pool]
        else:
            pool = rng.choice(pool, size=min(256, len(pool)), replace=False)
        if len(tried) == 0:
            score[pool] = prior[pool] if prior.any() else 0.0
            return score
        distance = np.linalg.norm(np.nan_to_num(x[pool, None, :] - tried[None, :, :]), axis=2)
        score[pool] = distance.min(axis=1) + 1e-9 * rng.random(len(pool))
        return score

    def _unobserved(
        self, trials: Sequence[FrozenTrial], current: FrozenTrial, configs: list[dict[str, Any]]
    ) -> np.ndarray:
        """Per candidate: whether no early-stopped or running trial agrees with it on
        ``early_stop_params`` (all True when the option is off)."""
        names = self.early_stop_params
        if not names:
            return np.ones(len(configs), dtype=bool)
        seen = {
            tuple(t.params[n] for n in names)
            for t in trials
            if t.number != current.number
            and set(names) <= set(t.params)
            and (t.state == TrialState.RUNNING or stopped_early(t))
        }
        return np.array([tuple(c[n] for n in names) not in seen for c in configs])

    @staticmethod
    def _occupied(
        trials: Sequence[FrozenTrial], current: FrozenTrial, space: Mapping[str, Any]
    ) -> set[str]:
        """Keys of configurations other trials evaluated, run, wait with or claimed."""
        keys = set()
        for other in trials:
            if other.number == current.number or other.state not in _OCCUPIED:
                continue
            params = {**other.system_attrs.get("fixed_params", {}), **other.params}
            if set(space) & set(params):
                keys.add(config_key({n: params.get(n) for n in space}))
            if other.state == TrialState.RUNNING and CLAIM_ATTR in other.user_attrs:
                keys.add(other.user_attrs[CLAIM_ATTR])
        return keys

    @classmethod
    def _held_by_another(
        cls, study: optuna.Study, trial: FrozenTrial, space: Mapping[str, Any], key: str
    ) -> bool:
        """Whether another trial now holds ``key`` (re-read from storage): one that claimed it
        meanwhile, whatever its number (a higher-numbered worker may have checked before this
        claim landed), or one that has finished with it since the first read."""
        return key in cls._occupied(study.get_trials(deepcopy=False), trial, space)

    # --- the recommendation --------------------------------------------------------------

    def recommend(
        self, study: optuna.Study, *, rule: Literal["belief", "proxy"] = "proxy"
    ) -> dict[str, Any]:
        """The configuration to verify at full fidelity (or to use).

        Once the study holds a verification (a COMPLETE trial promoted from an early stop,
        ``autopipe:promoted_from``): the best verified (full-fidelity) value. Before that,
        the best full-fidelity value when the study has one (with the cut signal and
        early-stopped trials too: the best score at the cut among all of them, a run that
        completed competing with its own score at the cut); otherwise, among the
        early-stopped configurations, ``rule="proxy"`` (default): the best observation as
        observed (the proxy, or the score at the cut with the cut signal);
        ``rule="belief"``: the one the model believes best,
        ẑ(x) = λ·s(x) + b + μ(x) (``residual=False`` or no prior: b + μ(x); paper: λ = 1), the
        GP's posterior
        mean at that point, which shrinks a noisy observation towards the prior and its
        neighbours (no exploration bonus here). docs/sampler.md compares both on the replays
        (bench methods ``autopipe`` and ``autopipe-belief-rec``). Parameters the
        configuration does not use (conditional spaces) are left out.
        """
        if rule not in ("belief", "proxy"):
            raise ValueError(f"rule must be 'belief' or 'proxy', got {rule!r}.")
        config = self._recommend(study.get_trials(deepcopy=False), study.direction, rule)
        return {n: v for n, v in config.items() if v is not None}

    def _recommend(
        self, trials: Sequence[FrozenTrial], direction: StudyDirection, rule: str
    ) -> dict[str, Any]:
        space = self._relative_space(trials)
        observed = self._observations(trials, space, direction) if space else []
        full = [o for o in observed if o.full]
        verified = any(
            t.state == TrialState.COMPLETE and PROMOTED_FROM_ATTR in t.user_attrs for t in trials
        )
        if rule == "proxy" and full and not verified and len(full) < len(observed):
            cut = self._best_cut(trials, space)
            if cut is not None:
                return cut
        if full:
            return dict(max(full, key=lambda o: o.z).config)
        if not observed:
            raise ValueError(
                "No trial has a full-fidelity value or an early-stop proxy yet: nothing to "
                "recommend. Run some trials first."
            )
        configs = [o.config for o in observed]
        if rule == "proxy":
            return dict(configs[int(np.argmax([o.z for o in observed]))])
        base = self._candidates(self._candidate_space(trials))
        prior = self._prior_scores(configs, base)
        encoder = SpaceEncoder(space)
        lam = self._lambda(self.budget, observed, base)
        gp, bias = self._fit(observed, encoder, base, lam)
        mean, _ = gp.predict(encoder.encode(configs))
        weight = (1.0 if self.prior_weight == "schedule" else lam) if self.residual else 0.0
        belief = weight * prior + bias + mean
        return dict(configs[int(np.argmax(belief))])

    def early_stop_ranking(
        self, study: optuna.Study, *, include_verified: bool = False
    ) -> list[FrozenTrial]:
        """The early-stopped trials best first, as the sampler observes them (the cut signal
        or the proxy), one per configuration, leaving out (unless ``include_verified``)
        configurations the study already ran at full fidelity: what
        ``promotion.promote_best`` promotes."""
        trials = study.get_trials(deepcopy=False)
        return self._early_stop_ranking(trials, study.direction, include_verified)

    def _early_stop_ranking(
        self, trials: Sequence[FrozenTrial], direction: StudyDirection, include_verified: bool
    ) -> list[FrozenTrial]:
        space = self._relative_space(trials)
        if not space:
            return []
        observed = self._observed(trials, space, direction)
        done = set()
        if not include_verified:
            done = {config_key(o.config) for _, o in observed if o.full}
        ranked = []
        for trial, o in sorted(observed, key=lambda p: -p[1].z):
            key = config_key(o.config)
            if not o.full and stopped_early(trial) and key not in done:
                ranked.append(trial)
                done.add(key)
        return ranked


@dataclass(frozen=True)
class _Observation:
    """A finished trial as the GP sees it: ``z`` (raw value for full trials until
    standardised), its variance, and whether it is a full-fidelity result."""

    config: dict[str, Any]
    z: float
    variance: float
    full: bool


@dataclass(frozen=True)
class _Context:
    """A trial's choice and what it was made with, to explain another configuration of it."""

    config: dict[str, Any]
    base: _Candidates
    encoder: SpaceEncoder
    gp: ResidualGP | None
    bias: float
    weights: dict[str, float]
    phase: str

    def explain(self, config: dict[str, Any], prior_score: float) -> dict[str, Any]:
        """The explanation attrs of ``config`` (s(x) given), the acquisition as the choice
        computed it (``None`` outside BO: the warm start's diversity score is relative)."""
        mean = std = 0.0
        acquisition = None
        if self.gp is not None:
            mean_, std_ = self.gp.predict(self.encoder.encode([config]))
            mean, std = float(mean_[0]), float(std_[0])
        if self.phase == "bo":
            acquisition = float(
                ucb(
                    prior=np.array([prior_score]),
                    mean=np.array([mean]),
                    std=np.array([std if self.gp is not None else 1.0]),
                    bias=self.bias,
                    **self.weights,
                )[0]
            )
        return {
            CLAIM_ATTR: config_key(config),
            PRIOR_SCORE_ATTR: float(prior_score),
            "autopipe:gp_mean": mean,
            "autopipe:gp_std": std,
            "autopipe:acquisition": acquisition,
            PHASE_ATTR: f"{self.phase} (ran another configuration)",
        }


def _only_value(dist: BaseDistribution) -> Any:
    """The value of a single-valued distribution."""
    return dist.choices[0] if isinstance(dist, CategoricalDistribution) else dist.low  # type: ignore[attr-defined]


def _contains(dist: BaseDistribution, value: Any) -> bool:
    """Whether ``value`` is one of ``dist``'s values (bounds and choices; steps not checked)."""
    if isinstance(dist, CategoricalDistribution):
        return value in dist.choices
    return isinstance(value, int | float) and dist.low <= value <= dist.high  # type: ignore[attr-defined]


def _is_label(dist: BaseDistribution) -> bool:
    """Whether ``dist`` is a categorical of labels (one-hot encoded), not of numbers."""
    return isinstance(dist, CategoricalDistribution) and not all(
        isinstance(c, int | float) and not isinstance(c, bool) for c in dist.choices
    )


def _matching(
    configs: Sequence[Mapping[str, Any]], patterns: Sequence[Mapping[str, Any]]
) -> np.ndarray:
    """Per configuration: whether it agrees with some pattern on all the pattern's
    parameters (``config_key`` equality), shape ``(len(configs),)``."""
    by_names: dict[tuple[str, ...], set[str]] = {}
    for pattern in patterns:
        by_names.setdefault(tuple(sorted(pattern)), set()).add(config_key(pattern))
    match = np.zeros(len(configs), dtype=bool)
    for names, pattern_keys in by_names.items():
        match |= np.array(
            [config_key({n: c.get(n) for n in names}) in pattern_keys for c in configs], dtype=bool
        )
    return match


def _unique(configs: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """``configs`` without repeats (``config_key``), in order."""
    seen: dict[str, dict[str, Any]] = {}
    for config in configs:
        seen.setdefault(config_key(config), config)
    return list(seen.values())
