"""AutoPipe and TPE on the same new dataset, as two studies in one storage, then the dashboard.

python examples/compare_with_tpe.py [OUT_DIR]
"""

import sys
from pathlib import Path

import optuna

from objectives import load_benchmark
from optuna_autopipe.corpus import Corpus
from optuna_autopipe.prior import fit_prior
from optuna_autopipe.promotion import promote_best
from optuna_autopipe.sampler import AutoPipeSampler

out = Path(sys.argv[1] if len(sys.argv) > 1 else "runs/compare-with-tpe")
out.mkdir(parents=True, exist_ok=True)
storage = f"sqlite:///{out / 'studies.db'}"
optuna.logging.set_verbosity(optuna.logging.WARNING)
nmt = load_benchmark("nmt")
past, new = [t for t in nmt.tasks if t.group != "ted"], nmt.task("ted-zh-en")
prior = fit_prior(Corpus.from_tasks(past, groups=nmt.groups, dynamics=True))


def study(name: str, sampler: optuna.samplers.BaseSampler) -> optuna.Study:
    return optuna.create_study(
        study_name=name,
        storage=storage,
        direction=new.direction,
        sampler=sampler,
        pruner=optuna.pruners.NopPruner(),
        load_if_exists=True,
    )


# AutoPipe: 15 runs stopped at 50%, then the 3 best resumed to full fidelity.
sampler = AutoPipeSampler(
    prior, new.dataset_features, budget=15, seed=0, search_space=new.search_space
)
autopipe = study("autopipe", sampler)
if not autopipe.trials:
    autopipe.optimize(new.objective(seed=0, fraction=0.5, regressor=prior.regressor), n_trials=15)
    promoted = promote_best(autopipe, sampler)
    autopipe.optimize(new.objective(seed=0), n_trials=len(promoted))
# TPE: 15 full runs.
tpe = study("tpe", optuna.samplers.TPESampler(seed=0))
if not tpe.trials:
    tpe.optimize(new.objective(seed=0), n_trials=15)

for name, s, cost in (
    ("autopipe", autopipe, sum(t.user_attrs["cost"] for t in autopipe.trials)),
    ("tpe", tpe, sum(t.user_attrs["cost"] for t in tpe.trials)),
):
    best = s.best_trial
    print(
        f"{name:9s} best perplexity {best.value:.2f} (true {new.true_score(best.params):.2f}), "
        f"cost {cost:.1f} full runs"
    )
print(f"pool best {new.pool()[1].min():.2f}")
print(f"optuna-dashboard {storage}")
