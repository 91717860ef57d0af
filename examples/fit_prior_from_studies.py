"""Fit a prior from past studies (one per dataset) and use it to start a new study.

The past studies here replay real NMT training runs (the project's benchmark data) so the
script runs anywhere in seconds; with your own studies, only the storage URL, the study
names and the dataset profiles change.

    python examples/fit_prior_from_studies.py [OUT_DIR]
"""

import itertools
import sys
from pathlib import Path

import optuna

from objectives import load_benchmark
from optuna_autopipe.corpus import PROFILE_ATTR, Corpus
from optuna_autopipe.prior import Prior, fit_prior

out = Path(sys.argv[1] if len(sys.argv) > 1 else "runs/example-prior")
out.mkdir(parents=True, exist_ok=True)
journal = out / "studies.log"
storage = optuna.storages.JournalStorage(optuna.storages.journal.JournalFileBackend(str(journal)))
optuna.logging.set_verbosity(optuna.logging.WARNING)
nmt = load_benchmark("nmt")
past, new = nmt.tasks[:4], nmt.task("ted-ru-en")

# 1. Past studies: one per dataset, its meta-features in the study's user attrs.
for task in past:
    study = optuna.create_study(
        study_name=task.name,
        storage=storage,
        direction=task.direction,
        load_if_exists=True,
        sampler=optuna.samplers.RandomSampler(seed=0),
    )
    study.set_user_attr(PROFILE_ATTR, {"name": task.name, "features": task.dataset_features})
    if not study.trials:
        study.optimize(task.objective(seed=0), n_trials=25)

# 2. Fit the prior on them and save it as plain files.
corpus = Corpus.from_studies(storage, [t.name for t in past])
fit_prior(corpus).save(out / "prior")

# 3. A new dataset: score its candidates with the loaded prior, start from the top three.
prior = Prior.load(out / "prior")
prior.check_space(new.search_space)
grid = [
    dict(zip(new.search_space, values, strict=True))
    for values in itertools.product(*(d.choices for d in new.search_space.values()))
]
scores = prior.score(grid, new.dataset_features)
top = [grid[i] for i in scores.argsort()[::-1][:3]]
study = optuna.create_study(
    study_name=new.name,
    storage=storage,
    direction=new.direction,
    load_if_exists=True,
    sampler=optuna.samplers.TPESampler(seed=0),
)
for config in top:
    study.enqueue_trial(config, user_attrs={"prior_score": float(scores[grid.index(config)])})
study.optimize(new.objective(seed=0), n_trials=8)
print(f"prior's first pick: {top[0]} -> perplexity {study.trials[0].value:.2f}")
print(f"best after 8 trials: {study.best_params} -> perplexity {study.best_value:.2f}")
print(f"optuna-dashboard {journal}")
