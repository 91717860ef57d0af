"""AutoPipeSampler on a toy problem: offline, CPU only, well under a minute.

1. Three past studies, one per (synthetic) dataset, run to the end with the early-stop hook
   recording every run's learning curve; the dataset's meta-features are a study user attr.
2. ``fit_prior`` learns from them a ranking prior over configurations, conditioned on the
   dataset's features, and an early-stop regressor (final score from half a learning curve).
3. A new dataset: 8 trials stopped at half of training (PRUNED, proxies in user attrs), the 3
   best promoted to full runs, and the best verified configuration recommended.

The "training" is a noisy learning curve computed in a few lines; a real objective calls the
same hook from its own loop, or passes ``hook.callback()`` to a transformers / TRL trainer.
Once the package is published, ``optunahub.load_module("samplers/autopipe")`` loads it; here
it is loaded from the folder holding this file, so the example needs no network.
"""

from __future__ import annotations

from collections.abc import Callable
import itertools
import math
from pathlib import Path
from typing import Any

import numpy as np
import optuna
import optunahub


# Published: autopipe = optunahub.load_module("samplers/autopipe").
autopipe = optunahub.load_local_module(
    package="samplers/autopipe", registry_root=str(Path(__file__).resolve().parents[2])
)
TOTAL_STEPS = 100
SPACE: dict[str, list[Any]] = {
    "learning_rate": [1e-4, 3e-4, 1e-3, 3e-3, 1e-2],
    "batch_size": [8, 16, 32, 64],
    "warmup_ratio": [0.0, 0.05, 0.1],
}


def asymptote(params: dict[str, Any], dataset: dict[str, float]) -> float:
    """The loss a run of ``params`` converges to on ``dataset``.

    The best learning rate falls as the dataset grows, the best batch size grows with its
    difficulty, and warm-up matters only at high learning rates.
    """
    log_lr = math.log10(params["learning_rate"])
    best_log_lr = -2.5 - 0.5 * (dataset["log10_examples"] - 3.0)
    best_log_batch = 3.0 + 2.0 * dataset["difficulty"]
    unstable = max(0.0, log_lr + 2.5) * (0.1 - params["warmup_ratio"])
    return (
        0.5
        + dataset["difficulty"]
        + 0.3 * (log_lr - best_log_lr) ** 2
        + 0.05 * (math.log2(params["batch_size"]) - best_log_batch) ** 2
        + 3.0 * unstable
    )


def eval_curve(params: dict[str, Any], dataset: dict[str, float], step: int) -> float:
    """The noise-free eval loss of ``params`` on ``dataset`` after ``step`` steps."""
    end = asymptote(params, dataset)
    speed = 2.0 + math.log10(params["learning_rate"] / 1e-4)  # higher rates learn faster
    return end + (3.0 - end) * math.exp(-speed * step / TOTAL_STEPS)


def make_objective(
    dataset: dict[str, float],
    fraction: float,
    regressor: Any = None,
) -> Callable[[optuna.Trial], float]:
    """An objective whose trials "train" for ``TOTAL_STEPS``, stopped at ``fraction``.

    The hook records the curve (``loss`` every 10 steps, ``eval_loss`` every 20) and, with a
    ``regressor``, turns the curve at the stop into a proxy of the final score.
    """

    def objective(trial: optuna.Trial) -> float:
        params = {
            name: trial.suggest_categorical(name, choices) for name, choices in SPACE.items()
        }
        hook = autopipe.AutoPipeEarlyStop(
            trial,
            total_steps=TOTAL_STEPS,
            fraction=fraction,
            regressor=regressor,
            dataset=dataset,
        )
        rng = np.random.default_rng(trial.number)
        eval_loss = math.inf
        for step in range(10, TOTAL_STEPS + 1, 10):
            curve = eval_curve(params, dataset, step)
            logged = {"loss": curve - 0.1 + 0.05 * rng.standard_normal()}
            if step % 20 == 0:
                eval_loss = curve + 0.02 * rng.standard_normal()
                logged["eval_loss"] = eval_loss
            if hook.report(step, logged):
                break
        hook.finish()  # writes the curve (and proxy); raises optuna.TrialPruned after a stop
        return eval_loss

    return objective


def main() -> None:
    """Fit a prior on three past datasets, then tune a fourth with AutoPipeSampler."""
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    storage = optuna.storages.InMemoryStorage()

    past = {
        "past-0": {"log10_examples": 3.0, "difficulty": 0.2},
        "past-1": {"log10_examples": 4.0, "difficulty": 0.5},
        "past-2": {"log10_examples": 5.0, "difficulty": 0.8},
    }
    for seed, (name, features) in enumerate(past.items()):
        study = optuna.create_study(
            study_name=name, storage=storage, sampler=optuna.samplers.RandomSampler(seed=seed)
        )
        study.set_user_attr(autopipe.PROFILE_ATTR, features)
        study.optimize(make_objective(features, fraction=1.0), n_trials=20)
    prior = autopipe.fit_prior(autopipe.Corpus.from_studies(storage, list(past)), fractions=(0.5,))

    new = {"log10_examples": 4.5, "difficulty": 0.3}
    space = {
        name: optuna.distributions.CategoricalDistribution(choices)
        for name, choices in SPACE.items()
    }
    sampler = autopipe.AutoPipeSampler(prior, new, budget=8, seed=0, search_space=space)
    study = optuna.create_study(sampler=sampler)
    objective = make_objective(new, fraction=0.5, regressor=prior.regressor_for(0.5))
    study.optimize(objective, n_trials=8)  # early stops, PRUNED
    promoted = autopipe.promote_best(study, sampler)
    study.optimize(objective, n_trials=len(promoted))  # promoted trials run to the end
    best = sampler.recommend(study)
    if autopipe.verify(study, best) is None:  # no full run of it yet: one is enqueued
        study.optimize(objective, n_trials=1)

    grid = [dict(zip(SPACE, values, strict=True)) for values in itertools.product(*SPACE.values())]
    optimum = min(eval_curve(params, new, TOTAL_STEPS) for params in grid)
    final = eval_curve(best, new, TOTAL_STEPS)
    print(f"{len(study.trials)} trials ({len(promoted)} promoted to full runs)")
    print(f"recommended {best}: final loss {final:.3f} (optimum {optimum:.3f}, noise-free)")


if __name__ == "__main__":
    main()
