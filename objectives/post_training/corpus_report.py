"""What the mini corpus says: score spread per dataset, which hyperparameters matter (fANOVA
importances from Optuna, mean score per value) and the seed-to-seed spread of a few
configurations re-run with other seeds (``seed_spread``)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import optuna
from optuna.trial import TrialState

from objectives.post_training.mini_corpus import (
    RUN_INDEX_ATTR,
    V1,
    MiniCorpus,
    dataset_files,
    journal,
    objective,
    study_name,
)
from objectives.post_training.objective import COST_ATTR
from optuna_autopipe.dynamics import DYNAMICS_ATTR, TrainingDynamics

SEEDS_SUFFIX = "-seeds"


def seed_spread(
    out: str | Path,
    task: str,
    *,
    seeds: Sequence[int] = (1, 2, 3),
    corpus: MiniCorpus = V1,
) -> optuna.Study:
    """Re-run the best, median and worst corpus configurations of ``task`` with ``seeds``
    (study ``mini-<task>-seeds`` in the same journal; resumable: done runs are skipped)."""
    out = Path(out)
    storage = journal(out)
    runs = optuna.load_study(study_name=study_name(task), storage=storage)
    done = sorted(
        runs.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)), key=lambda t: t.value
    )
    if not done:
        raise ValueError(f"{study_name(task)} has no finished run yet; generate the corpus first.")
    picks = {t.number: t for t in (done[-1], done[len(done) // 2], done[0])}.values()
    study = optuna.create_study(
        study_name=study_name(task) + SEEDS_SUFFIX,
        storage=storage,
        direction="maximize",
        pruner=optuna.pruners.NopPruner(),
        load_if_exists=True,
    )
    have = {(t.user_attrs.get(RUN_INDEX_ATTR), t.user_attrs.get("seed")) for t in study.trials}
    files = dataset_files(out, corpus.dataset(task), corpus.scale)
    runs_by_seed = {
        seed: objective(
            files,
            corpus.scale,
            output_dir=out / "work",
            space=corpus.space,
            early_stop=None,
            seed=seed,
        )
        for seed in seeds
    }
    for trial in picks:
        index = trial.user_attrs.get(RUN_INDEX_ATTR)
        for seed, run in runs_by_seed.items():
            if (index, seed) in have:
                continue
            study.enqueue_trial(trial.params, user_attrs={RUN_INDEX_ATTR: index})
            study.optimize(run, n_trials=1)
    return study


def _cost_table(storage: optuna.storages.BaseStorage, datasets: Sequence[str]) -> list[str]:
    """SFT sequences/s (planned steps x effective batch / SFT seconds), RL and eval seconds."""
    rows: dict[str, list[tuple[float, float, float, float]]] = {}
    for task in datasets:
        study = optuna.load_study(study_name=study_name(task), storage=storage)
        for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)):
            cost = t.user_attrs[COST_ATTR]
            steps = TrainingDynamics.from_json(t.user_attrs[DYNAMICS_ATTR]).total_steps
            rows.setdefault(t.params["base_model"], []).append(
                (
                    steps * t.params["sft_batch"] / cost["sft"]["seconds"],
                    cost["rl"]["seconds"],
                    cost["eval"]["seconds"],
                    max(stage["peak_memory_gb"] for stage in cost.values()),
                )
            )
    lines = [
        "| base model | runs | SFT sequences/s | RL s | eval s | peak memory GB |",
        "|---|---|---|---|---|---|",
    ]
    for model, values in sorted(rows.items()):
        a = np.array(values)
        med = np.median(a, axis=0)
        lines.append(
            f"| {model} | {len(a)} | {med[0]:.0f} | {med[1]:.1f} | {med[2]:.1f} | "
            f"{a[:, 3].max():.2f} |"
        )
    return lines


def report(out: str | Path, datasets: Sequence[str]) -> str:
    """Markdown tables for the corpus in ``out`` (its journal)."""
    storage = journal(Path(out))
    names = {s.study_name for s in storage.get_all_studies()}
    lines = [
        "| dataset | runs | failed | score mean | min | median | max |",
        "|---|---|---|---|---|---|---|",
    ]
    importances: dict[str, dict[str, float]] = {}
    by_value: dict[str, dict[str, list[float]]] = {}
    for task in datasets:
        study = optuna.load_study(study_name=study_name(task), storage=storage)
        done = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
        failed = len(study.get_trials(deepcopy=False, states=(TrialState.FAIL,)))
        scores = np.array([t.value for t in done])
        lines.append(
            f"| {task} | {len(done)} | {failed} | {scores.mean():.3f} | {scores.min():.3f} | "
            f"{np.median(scores):.3f} | {scores.max():.3f} |"
        )
        importances[task] = optuna.importance.get_param_importances(
            study, evaluator=optuna.importance.FanovaImportanceEvaluator(seed=0)
        )
        for t in done:
            for name, value in t.params.items():
                by_value.setdefault(name, {}).setdefault(str(value), []).append(t.value)
    params = sorted({p for imp in importances.values() for p in imp})
    lines += ["", "fANOVA importance of each hyperparameter (Optuna), per dataset:", ""]
    lines += ["| parameter | " + " | ".join(datasets) + " |", "|---" * (len(datasets) + 1) + "|"]
    for p in sorted(
        params, key=lambda p: -np.mean([imp.get(p, 0) for imp in importances.values()])
    ):
        row = " | ".join(f"{importances[d].get(p, 0.0):.2f}" for d in datasets)
        lines.append(f"| {p} | {row} |")
    lines += ["", "Mean score by value (all datasets pooled):", ""]
    for name in sorted(by_value):
        cells = ", ".join(
            f"{v}: {np.mean(s):.3f} (n={len(s)})" for v, s in sorted(by_value[name].items())
        )
        lines.append(f"- {name}: {cells}")
    lines += ["", "Cost per stage by base model (median over runs; memory: largest peak):", ""]
    lines += _cost_table(storage, datasets)
    spread = [d for d in datasets if study_name(d) + SEEDS_SUFFIX in names]
    if spread:
        lines += ["", "Seed-to-seed spread (same configuration, other seeds):", ""]
        lines += [
            "| dataset | run | seed 0 (corpus) | other seeds | range |",
            "|---|---|---|---|---|",
        ]
    for task in spread:
        base = optuna.load_study(study_name=study_name(task), storage=storage)
        first = {
            t.user_attrs.get(RUN_INDEX_ATTR): t.value for t in base.trials if t.value is not None
        }
        study = optuna.load_study(study_name=study_name(task) + SEEDS_SUFFIX, storage=storage)
        groups: dict[int, list[float]] = {}
        for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)):
            groups.setdefault(t.user_attrs[RUN_INDEX_ATTR], []).append(t.value)
        for index, values in groups.items():
            everything = [first[index], *values]
            lines.append(
                f"| {task} | {index} | {first[index]:.3f} | "
                f"{', '.join(f'{v:.3f}' for v in values)} | "
                f"{min(everything):.3f}-{max(everything):.3f} |"
            )
    return "\n".join(lines)
