"""AutoPipe in the benchmark: ``autopipe`` and its ablations, one ``AutoPipeSampler`` study each.

The prior comes from the public path, ``fit_prior``, on the offline datasets only: their
reference pools (at most ``CORPUS_ROWS`` runs per dataset, the ``offline`` method's corpus)
for the ranker, ``DYNAMICS_ROWS`` of those runs per dataset with one observed run's training
dynamics for the residual early-stop regressor and its cut signal, fitted at the method's
early-stop fraction only (a prior serves several, ``fit_prior(fractions=...)``; the bench fits
the one it uses, which keeps its cost), the ranker's default settings (one grid point: no grid
search, as in ``offline``), cached per process.
``Context.prior_noise`` then distorts the ranker (``prior_noise.distort``).

- ``autopipe``: the default, ``procedure="calibrated"``: ``budget`` trials stopped at
  ``FRACTION`` (25%), observed through the signal the prior chose
  (``early_stop_signal="auto"``), the prior's weight estimated on the study
  (``calibration.py``); then the ``n_promote`` (3) best early stops are promoted to full
  fidelity, resuming their runs (``promotion.py``): 15 × 0.25 + 3 × 0.75 = 6 full runs.
  The best verified configuration is the selection; the study's user attr
  ``autopipe:signal_agreement`` says how well the early signal ordered the promoted runs.
- ``autopipe-paper``: the paper's procedure (``procedure="paper"``): regressor proxies,
  λ on a fixed schedule, warm start among the prior's best, one verification of
  ``recommend`` (15 × 0.25 + 1 = 4.75 full runs).
- One option of ``autopipe`` changed: ``autopipe-fixed-lambda`` (λ on the paper's schedule),
  ``autopipe-1v`` (no promotion: one verification of ``recommend``), ``autopipe-contrast``
  and ``autopipe-probe-anywhere`` (the warm start's probe among the prior's lowest decile /
  anywhere, the default being its lower half), ``autopipe-proxy``
  (the regressor's proxies), ``autopipe-50``, ``autopipe-75`` (the cut at 50% / 75%),
  ``autopipe-full`` (``budget`` full-fidelity trials), ``no-residual`` (the GP models z),
  ``no-bo`` (the prior's top configurations in order), ``autopipe-belief-rec`` (with
  ``autopipe-1v``: verifies the GP's belief), ``no-offline`` (no prior: the direct
  regressor's ẑ feeds a GP).

Registered on import; ``optuna_autopipe.bench.methods`` imports this module on first use.
"""

from __future__ import annotations

import dataclasses
import math
from functools import lru_cache
from typing import Any

import numpy as np
import optuna

from objectives.replay import ReplayTask
from optuna_autopipe.bench.early_stop_method import direct_regressor
from optuna_autopipe.bench.methods import Context, Method, register
from optuna_autopipe.bench.offline_method import prior_corpus
from optuna_autopipe.bench.prior_noise import distort
from optuna_autopipe.early_stop import verify
from optuna_autopipe.ensemble import TreeParams
from optuna_autopipe.prior import Prior, fit_prior
from optuna_autopipe.promotion import promote_best, signal_agreement
from optuna_autopipe.sampler import AutoPipeSampler

#: Early-stop point of ``autopipe`` and its early-stopped ablations.
FRACTION = 0.25
#: Runs per offline dataset given one observed run's dynamics (the regressor's corpus).
DYNAMICS_ROWS = 500


@lru_cache(maxsize=8)
def offline_prior(offline: tuple[ReplayTask, ...], fraction: float) -> Prior:
    """``fit_prior`` on ``offline`` (cached per process): the ranker on up to
    ``CORPUS_ROWS`` runs per dataset, the regressor at ``fraction`` on ``DYNAMICS_ROWS`` of
    them."""
    corpus = prior_corpus(offline)
    for task, runs in zip(offline, corpus.datasets, strict=True):
        rows = np.sort(np.random.default_rng(0).permutation(len(runs.configs))[:DYNAMICS_ROWS])
        observed = task.run_dynamics([runs.configs[i] for i in rows], seed=0)
        runs.dynamics = [None] * len(runs.configs)
        for i, dynamics in zip(rows, observed, strict=True):
            runs.dynamics[i] = dynamics
    return fit_prior(corpus, grid=(TreeParams(),), fractions=(fraction,), n_jobs=1)


def _nan_to_none(value: float) -> float | None:
    """A JSON-safe study attr value."""
    return None if math.isnan(value) else value


def autopipe(
    *,
    fraction: float | None = FRACTION,
    offline: bool = True,
    recommend: str = "proxy",
    **options: Any,
) -> Method:
    """A method running ``AutoPipeSampler(**options)`` (``fraction=None``: full runs).

    After the early-stop phase the sampler's ``n_promote`` best early stops are promoted
    (resumed at full fidelity); with ``n_promote=0``, ``recommend(rule=recommend)`` is
    verified once (``early_stop.verify``: it resumes the early-stopped run when there is one,
    and runs nothing when the configuration already has a full-fidelity result).
    """

    def run(ctx: Context) -> optuna.Study:
        tasks = tuple(ctx.offline)
        prior = offline_prior(tasks, fraction or FRACTION) if offline else None
        if prior is not None and ctx.prior_noise != "none":
            prior = dataclasses.replace(
                prior, ranker=distort(prior.ranker, ctx.prior_noise, seed=ctx.seed)
            )
        sampler = AutoPipeSampler(
            prior,
            ctx.task.dataset_features,
            budget=ctx.budget,
            seed=ctx.seed,
            search_space=ctx.task.search_space,
            **options,
        )
        study = ctx.study(sampler)
        if fraction is None:
            study.optimize(ctx.objective(), n_trials=ctx.budget)
            return study
        regressor = prior.regressor_for(fraction) if prior else direct_regressor(tasks, fraction)
        study.optimize(ctx.objective(fraction=fraction, regressor=regressor), n_trials=ctx.budget)
        promoted = promote_best(study, sampler)
        best = None if promoted else sampler.recommend(study, rule=recommend)
        if best is not None and verify(study, best) is not None:
            return study  # the recommendation ran at full fidelity already
        study.optimize(ctx.objective(), n_trials=max(1, len(promoted)))
        if len(promoted) >= 3:
            study.set_user_attr(
                "autopipe:signal_agreement", _nan_to_none(signal_agreement(study, sampler))
            )
        return study

    return run


# Revision 2 (2026-11-30): the calibrated warm start's probe among the prior's lower half
# (``probe_pool=0.5``; revision 1 drew it anywhere, now ``autopipe-probe-anywhere``).
register("autopipe", revision=2)(autopipe())
register("autopipe-paper")(autopipe(procedure="paper"))
register("autopipe-fixed-lambda", revision=2)(autopipe(prior_weight="schedule"))
register("autopipe-1v", revision=2)(autopipe(n_promote=0))
register("autopipe-contrast")(autopipe(probe_pool=0.1))
register("autopipe-probe-anywhere")(autopipe(probe_pool=1.0))
register("autopipe-proxy", revision=2)(autopipe(early_stop_signal="proxy"))
register("autopipe-50", revision=2)(autopipe(fraction=0.5))
register("autopipe-75", revision=2)(autopipe(fraction=0.75))
register("autopipe-full", revision=2)(autopipe(fraction=None))
register("no-residual", revision=2)(autopipe(residual=False))
register("no-bo")(autopipe(bo=False))
register("no-offline")(autopipe(offline=False))
register("autopipe-belief-rec", revision=2)(autopipe(n_promote=0, recommend="belief"))
