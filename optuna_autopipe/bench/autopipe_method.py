"""AutoPipe in the benchmark: ``autopipe`` and its ablations, one ``AutoPipeSampler`` study each.

The prior is fitted on the offline datasets only: the ranker as in ``offline`` (cached per
process), the residual early-stop regressor on ``CORPUS_ROWS`` observed runs per offline
dataset at the method's early-stop fraction, with prior scores cross-fitted over 4 folds of
groups (``regressor.prior_scores``).

- ``autopipe``: ``budget`` trials stopped at ``FRACTION`` (25%: 15 quarter runs plus one
  verification cost 4.75 full runs, under half of the full-fidelity baselines' 15), each
  observed through the signal the prior chose (``early_stop_signal="auto"``: on both
  replays the cut signal, the score at the cut compared within the study); then
  ``recommend`` is verified once at full fidelity.
- ``autopipe-proxy``: the same with the residual regressor's proxies (the paper's B.2
  design, the default before 2026-11-27).
  ``autopipe-50``, ``autopipe-75``: the same at 50% and 75% (sensitivity).
- ``autopipe-full``: ``budget`` full-fidelity trials, no early stop, no regressor.
- ``no-residual``: the GP models the proxy z directly, the prior still guides (λ·s).
- ``no-bo``: the prior's top configurations in order, proxies pick the one verified.
- ``autopipe-belief-rec``: ``autopipe`` verifying the GP's belief s + b + μ instead of the
  best proxy (the default before 2026-11-27).
- ``no-offline``: no prior; the direct regressor's ẑ feeds a GP (the "No Offline" ablation).

Registered on import; ``optuna_autopipe.bench.methods`` imports this module on first use.
"""

from __future__ import annotations

from functools import lru_cache

import optuna

from objectives.replay import ReplayTask
from optuna_autopipe.bench.early_stop_method import direct_regressor, dynamics_corpus
from optuna_autopipe.bench.methods import Context, Method, register
from optuna_autopipe.bench.offline_method import offline_ranker
from optuna_autopipe.prior import Prior
from optuna_autopipe.regressor import EarlyStopRegressor, prior_scores
from optuna_autopipe.sampler import AutoPipeSampler

#: Early-stop point of ``autopipe`` and its early-stopped ablations.
FRACTION = 0.25
CROSS_FIT = 4


@lru_cache(maxsize=8)
def offline_prior(offline: tuple[ReplayTask, ...], fraction: float) -> Prior:
    """Ranker + residual regressor fitted on ``offline`` (cached per process)."""
    ranker = offline_ranker(offline)
    corpus = dynamics_corpus(offline)
    scores = prior_scores(corpus, ranker, folds=CROSS_FIT)
    regressor = EarlyStopRegressor(fraction=fraction).fit(corpus, prior_scores=scores)
    return Prior(ranker=ranker, regressor=regressor)


def autopipe(
    *,
    fraction: float | None = FRACTION,
    residual: bool = True,
    bo: bool = True,
    offline: bool = True,
    recommend: str = "proxy",
    signal: str = "auto",
) -> Method:
    """A method running ``AutoPipeSampler`` with these options (``fraction=None``: full runs)."""

    def run(ctx: Context) -> optuna.Study:
        tasks = tuple(ctx.offline)
        prior = offline_prior(tasks, fraction or FRACTION) if offline else None
        sampler = AutoPipeSampler(
            prior,
            ctx.task.dataset_features,
            budget=ctx.budget,
            seed=ctx.seed,
            search_space=ctx.task.search_space,
            residual=residual,
            bo=bo,
            early_stop_signal=signal,
        )
        study = ctx.study(sampler)
        if fraction is None:
            study.optimize(ctx.objective(), n_trials=ctx.budget)
            return study
        regressor = prior.regressor if prior else direct_regressor(tasks, fraction)
        study.optimize(ctx.objective(fraction=fraction, regressor=regressor), n_trials=ctx.budget)
        best = sampler.recommend(study, rule=recommend)
        done = [
            t
            for t in study.trials
            if t.state == optuna.trial.TrialState.COMPLETE and t.params == best
        ]
        if not done:
            study.enqueue_trial(best, user_attrs={"autopipe:verifies": "recommend"})
            study.optimize(ctx.objective(), n_trials=1)
        return study

    return run


register("autopipe")(autopipe())
register("autopipe-proxy")(autopipe(signal="proxy"))
register("autopipe-50")(autopipe(fraction=0.5))
register("autopipe-75")(autopipe(fraction=0.75))
register("autopipe-full")(autopipe(fraction=None))
register("no-residual")(autopipe(residual=False))
register("no-bo")(autopipe(bo=False))
register("no-offline")(autopipe(offline=False))
register("autopipe-belief-rec")(autopipe(recommend="belief"))
