"""The live demo: AutoPipe vs TPE on a new mini dataset with the real pipeline, one storage.

1. The prior is fitted on the bundled mini corpus (``bundled/corpus.jsonl``: the pipeline
   run on corpus ``V1``), or loaded from ``out/prior`` when already fitted.

Then per seed (default 0, 1, 2; one study per method and seed):

2. AutoPipe (the default, calibrated sampler): ``budget`` trials stopped at 50% of SFT
   (PRUNED, dynamics and proxy in user attrs), then ``promote_best`` promotes the 3 best to
   full runs (SFT resumes from the early stop's checkpoint, then GRPO and lm-eval); the
   best verified run is AutoPipe's result.
3. TPE: full runs in a second study of the same SQLite file until it has spent as much
   pipeline time as AutoPipe did (at least one run).
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import optuna
from optuna.trial import TrialState

from objectives.post_training.mini_corpus import (
    DEFAULT_SCALE,
    DEMO,
    dataset_files,
    objective,
    profile,
)
from objectives.post_training.search_space import SFT_PARAMETERS, tiny_space
from optuna_autopipe.corpus import Corpus
from optuna_autopipe.early_stop import PROMOTED_FROM_ATTR, verify
from optuna_autopipe.prior import Prior, fit_prior
from optuna_autopipe.promotion import promote_best
from optuna_autopipe.sampler import AutoPipeSampler

BUNDLED = Path(__file__).parent / "bundled"


@dataclass(frozen=True)
class Outcome:
    """One method's result on one seed: trials run, pipeline seconds spent, best full-fidelity
    score (AutoPipe: its best verified run)."""

    method: str
    seed: int
    trials: int
    full_runs: int
    seconds: float
    score: float


def _spent(study: optuna.Study) -> float:
    return sum(float(t.user_attrs.get("cost", 0.0)) for t in study.trials)


def _outcome(method: str, seed: int, study: optuna.Study) -> Outcome:
    full = [t for t in study.trials if t.state == TrialState.COMPLETE]
    return Outcome(
        method=method,
        seed=seed,
        trials=len(study.trials),
        full_runs=len(full),
        seconds=_spent(study),
        score=max((t.value for t in full), default=float("nan")),
    )


def load_prior(out: Path) -> Prior:
    """The prior fitted on the bundled corpus (cached in ``out/prior``)."""
    cached = out / "prior"
    if (cached / "prior.json").exists():
        return Prior.load(cached)
    prior = fit_prior(Corpus.load(BUNDLED / "corpus.jsonl"))
    prior.save(cached)
    return prior


def run_demo(
    out: str | Path = "runs/demo", *, budget: int = 10, seeds: Sequence[int] = (0, 1, 2)
) -> list[Outcome]:
    """Run both studies per seed into ``out/demo.db``, print the comparison, return it."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    storage = f"sqlite:///{out / 'demo.db'}"
    scale = DEFAULT_SCALE
    name = DEMO.folder
    started = time.time()
    prior = load_prior(out)
    files = dataset_files(out, DEMO, scale)
    dataset = profile(name, files)
    print(f"prior ready ({time.time() - started:.0f} s); new dataset: {name}")
    early = objective(
        files, scale, output_dir=out / "work", regressor=prior.regressor, dataset=dataset
    )
    full = objective(files, scale, output_dir=out / "work", early_stop=None)

    def study(method: str, seed: int, sampler: optuna.samplers.BaseSampler) -> optuna.Study:
        return optuna.create_study(
            study_name=f"{method}-{name}-seed{seed}",
            storage=storage,
            direction="maximize",
            sampler=sampler,
            pruner=optuna.pruners.NopPruner(),
            load_if_exists=True,
        )

    outcomes = []
    for seed in seeds:
        sampler = AutoPipeSampler(
            prior,
            dataset,
            budget=budget,
            seed=seed,
            search_space=tiny_space(),
            early_stop_params=SFT_PARAMETERS,
        )
        autopipe = study("autopipe", seed, sampler)
        dataset.to_study(autopipe)
        remaining = budget - len(autopipe.trials)
        if remaining > 0:
            autopipe.optimize(early, n_trials=remaining, show_progress_bar=True)
        promoted = any(PROMOTED_FROM_ATTR in t.user_attrs for t in autopipe.trials)
        if not promoted and not promote_best(autopipe, sampler):  # nothing stopped early
            verify(autopipe, sampler.recommend(autopipe))
        waiting = autopipe.get_trials(deepcopy=False, states=(TrialState.WAITING,))
        if waiting:
            autopipe.optimize(early, n_trials=len(waiting))
        outcomes.append(_outcome("autopipe", seed, autopipe))
        tpe = study("tpe", seed, optuna.samplers.TPESampler(seed=seed))
        while not tpe.trials or _spent(tpe) < outcomes[-1].seconds:
            tpe.optimize(full, n_trials=1, show_progress_bar=True)
        outcomes.append(_outcome("tpe", seed, tpe))

    print(f"\nAutoPipe vs TPE on {name} (mean exact match of the eval suite):")
    print(
        f"{'method':10} {'seed':>4} {'trials':>6} {'full runs':>9} {'pipeline s':>10} {'score':>6}"
    )
    for o in outcomes:
        print(
            f"{o.method:10} {o.seed:4d} {o.trials:6d} {o.full_runs:9d} {o.seconds:10.0f} "
            f"{o.score:6.3f}"
        )
    for method in ("autopipe", "tpe"):
        mine = [o for o in outcomes if o.method == method]
        scores = [o.score for o in mine]
        print(
            f"{method:10} mean {np.mean(scores):.3f} (min {min(scores):.3f}, max "
            f"{max(scores):.3f}), {np.mean([o.seconds for o in mine]):.0f} pipeline s per seed"
        )
    print(f"wall time: {time.time() - started:.0f} s")
    print(f"\nView the studies:\n  optuna-dashboard {storage}")
    return outcomes
