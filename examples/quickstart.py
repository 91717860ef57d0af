"""Quickstart: a prior learned on past datasets guides AutoPipeSampler on a new one.

The objective replays real NMT training runs; yours runs your pipeline with the same hook.
"""

import optuna

from objectives import load_benchmark
from optuna_autopipe.corpus import Corpus
from optuna_autopipe.early_stop import verify
from optuna_autopipe.prior import fit_prior
from optuna_autopipe.promotion import promote_best
from optuna_autopipe.sampler import AutoPipeSampler

nmt = load_benchmark("nmt")
past, new = [t for t in nmt.tasks if t.group != "ted"], nmt.task("ted-ru-en")
prior = fit_prior(Corpus.from_tasks(past, groups=nmt.groups, dynamics=True))  # ranker + regressors

sampler = AutoPipeSampler(
    prior, new.dataset_features, budget=15, seed=0, search_space=new.search_space
)
study = optuna.create_study(direction=new.direction, sampler=sampler)
# 15 trials stopped at 50% of training (the prior's 50% regressor turns each into a proxy);
# an early stop ends PRUNED, a run that converged sooner COMPLETE at full fidelity.
early = new.objective(seed=0, fraction=0.5, regressor=prior.regressor_for(0.5))
study.optimize(early, n_trials=15)
# The 3 best early stops resume to full fidelity; the best verified one is the answer.
promoted = promote_best(study, sampler)
study.optimize(new.objective(seed=0), n_trials=len(promoted))
best = sampler.recommend(study)
if verify(study, best) is None:  # None: no full-fidelity run of it yet, one is enqueued
    study.optimize(new.objective(seed=0), n_trials=1)
print(f"recommended {best}: perplexity {new.true_score(best):.2f} (noise-free)")
