"""What the mini corpus says: score spread per dataset, which hyperparameters matter (fANOVA
importances from Optuna, mean score per value), the seed-to-seed spread of a few
configurations re-run with other seeds (``seed_spread``) and, for a corpus whose runs record
their RL fidelities (v2), what RL does (``two_stage``)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import optuna
from optuna.trial import TrialState

from objectives.post_training.mini_corpus import (
    RUN_INDEX_ATTR,
    V1,
    MiniCorpus,
    config_key,
    dataset_files,
    fail_lost_runs,
    journal,
    objective,
    seeded_runs,
    study_name,
)
from objectives.post_training.objective import COST_ATTR, FAILURE_ATTR, RL_FIDELITY_ATTR
from optuna_autopipe.dynamics import DYNAMICS_ATTR, TrainingDynamics

SEEDS_SUFFIX = "-seeds"
#: Trial numbers (in the corpus study) of the configurations ``seed_spread`` re-runs.
PICKS_ATTR = "autopipe:seed_spread_picks"


def seed_spread(
    out: str | Path,
    task: str,
    *,
    seeds: Sequence[int] = (1, 2, 3),
    corpus: MiniCorpus = V1,
) -> optuna.Study:
    """Re-run the best, median and worst corpus configurations of ``task`` (as of the first
    call) with ``seeds`` (study ``mini-<task>-seeds`` in the same journal; resumable: done
    runs are skipped)."""
    out = Path(out)
    storage = journal(out)
    runs = optuna.load_study(study_name=study_name(task), storage=storage)
    done = sorted(
        runs.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)), key=lambda t: t.value
    )
    if not done:
        raise ValueError(f"{study_name(task)} has no finished run yet; generate the corpus first.")
    study = optuna.create_study(
        study_name=study_name(task) + SEEDS_SUFFIX,
        storage=storage,
        direction="maximize",
        pruner=optuna.pruners.NopPruner(),
        load_if_exists=True,
    )
    # the picks are fixed by the first call: the corpus grows meanwhile and would move them
    if PICKS_ATTR not in study.user_attrs:
        chosen = (done[-1], done[len(done) // 2], done[0])
        study.set_user_attr(PICKS_ATTR, list(dict.fromkeys(t.number for t in chosen)))
    by_number = {t.number: t for t in runs.get_trials(deepcopy=False)}
    picks = [by_number[number] for number in study.user_attrs[PICKS_ATTR]]
    fail_lost_runs(study)
    have = {
        (t.user_attrs.get(RUN_INDEX_ATTR), t.user_attrs.get("seed"))
        for t in study.get_trials(deepcopy=False)
        if t.state != TrialState.FAIL or FAILURE_ATTR in t.user_attrs
    }
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


def _importances(study: optuna.Study, scores: Mapping[str, float]) -> dict[str, float]:
    """fANOVA importances (Optuna) of the study's parameters for ``scores`` (configuration key
    -> score; the study's runs of other configurations are left out); empty when every
    configuration has the same score (no variance to share)."""
    values = np.array(list(scores.values()))
    if len(values) < 2 or np.ptp(values) == 0:
        return {}
    return optuna.importance.get_param_importances(
        study,
        evaluator=optuna.importance.FanovaImportanceEvaluator(seed=0),
        target=lambda t: scores.get(config_key(t.params), np.nan),
    )


def _seed_means(
    storage: optuna.storages.BaseStorage, name: str
) -> tuple[list[optuna.trial.FrozenTrial], dict[str, float], dict[str, float | None]]:
    """Dataset ``name``'s configurations as the corpus scores them: the first finished run of
    each (its params and dynamics; training seed 0 where it finished), the final score
    averaged over the configuration's finished training seeds, and the score after SFT
    (``autopipe:rl_fidelity`` level "0") averaged likewise (None where a run did not record
    it). Keys: ``config_key`` of the params."""
    runs = seeded_runs(storage, study_name(name))
    final = {key: float(np.mean([t.value for t in seeds])) for key, seeds in runs.items()}
    sft = {
        key: float(np.mean([t.user_attrs[RL_FIDELITY_ATTR]["0"]["score"] for t in seeds]))
        if all(RL_FIDELITY_ATTR in t.user_attrs for t in seeds)
        else None
        for key, seeds in runs.items()
    }
    return [seeds[0] for seeds in runs.values()], final, sft


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
        "Scores: a configuration's score is the mean over its finished training seeds (what "
        "the prior learns and the post-training replay observes); runs: configurations.",
        "",
        "| dataset | runs | failed | score mean | min | median | max |",
        "|---|---|---|---|---|---|---|",
    ]
    importances: dict[str, dict[str, float]] = {}
    by_value: dict[str, dict[str, list[float]]] = {}
    for task in datasets:
        study = optuna.load_study(study_name=study_name(task), storage=storage)
        # pipeline failures; a run a stopped generation lost is FAIL without the attr
        failed = sum(FAILURE_ATTR in t.user_attrs for t in study.get_trials(deepcopy=False))
        done, final, _ = _seed_means(storage, task)
        scores = np.array(list(final.values()))
        lines.append(
            f"| {task} | {len(done)} | {failed} | {scores.mean():.3f} | {scores.min():.3f} | "
            f"{np.median(scores):.3f} | {scores.max():.3f} |"
        )
        importances[task] = _importances(study, final)
        for t in done:
            for name, value in t.params.items():
                by_value.setdefault(name, {}).setdefault(str(value), []).append(
                    final[config_key(t.params)]
                )
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
    lines += two_stage(storage, datasets)
    lines += seed_noise(storage, datasets)
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


#: Early SFT signals whose rank agreement with the final score ``two_stage`` reports, with the
#: sign that makes larger better: (feature at 50% of SFT, sign).
SFT_SIGNALS = (("loss.late.mean", -1.0), ("mean_token_accuracy.late.mean", 1.0))


def two_stage(storage: optuna.storages.BaseStorage, datasets: Sequence[str]) -> list[str]:
    """Per dataset, over the configurations whose runs recorded ``autopipe:rl_fidelity``
    (scores averaged over training seeds, ``_seed_means``): the mean and best score after SFT
    (no RL) and after RL, the mean RL gain (final - after SFT), the share of the score's
    variance due to the RL settings (sum of the fANOVA importances of the ``rl_*``
    parameters) and the Spearman correlation of the first run's early SFT signals (50% of
    SFT steps, ``SFT_SIGNALS``: what a replayed early stop observes) with the final score.
    Empty when no run recorded RL fidelities."""
    from scipy.stats import spearmanr

    rows, shares = [], []
    for name in datasets:
        study = optuna.load_study(study_name=study_name(name), storage=storage)
        first, finals, sfts = _seed_means(storage, name)
        done = [t for t in first if sfts[config_key(t.params)] is not None]
        if len(done) < 3:
            continue
        scores = {config_key(t.params): finals[config_key(t.params)] for t in done}
        final = np.array(list(scores.values()))
        sft = np.array([sfts[key] for key in scores])
        importance = _importances(study, scores)
        share = (
            sum(v for p, v in importance.items() if p.startswith("rl_")) if importance else np.nan
        )
        shares.append(share)
        features = [
            TrainingDynamics.from_json(t.user_attrs[DYNAMICS_ATTR]).features(fraction=0.5)
            for t in done
        ]
        rhos = []
        for feature, sign in SFT_SIGNALS:
            signal = sign * np.array([f.get(feature, np.nan) for f in features])
            ok = np.isfinite(signal)
            rho = spearmanr(signal[ok], final[ok]).statistic if ok.sum() >= 3 else np.nan
            rhos.append(f"{rho:.2f}")
        rows.append(
            f"| {name} | {len(done)} | {sft.mean():.3f} / {sft.max():.3f} | "
            f"{final.mean():.3f} / {final.max():.3f} | {(final - sft).mean():+.3f} | "
            f"{share:.2f} | {' | '.join(rhos)} |"
        )
    if not rows:
        return []
    signals = " | ".join(f"Spearman {feature} at 50% SFT" for feature, _ in SFT_SIGNALS)
    return [
        "",
        "Two stages: score after SFT and after RL (mean / best), the mean RL gain, the share of "
        "variance of the RL settings (fANOVA, rl_* summed) and the early SFT signals' rank "
        "agreement with the final score (Spearman, oriented so that +1 means the signal orders "
        "the runs as their final scores do: the loss negated) (mean RL share over datasets: "
        f"{np.nanmean(shares):.2f}; nan: every run scored the same):",
        "",
        f"| dataset | runs | after SFT | after RL | RL gain | RL share | {signals} |",
        "|---" * (6 + len(SFT_SIGNALS)) + "|",
        *rows,
    ]


def seed_noise(storage: optuna.storages.BaseStorage, datasets: Sequence[str]) -> list[str]:
    """Per dataset, over every configuration of the corpus: best and median of its score
    (mean over its finished training seeds), and over those finished with ≥ 2 seeds the seed
    spread σ_seed = sqrt(mean over configurations of the seeds' sample variance) next to the
    spread across configurations σ_config (standard deviation of their means), with the
    ratios σ_seed / σ_config (one run) and σ_seed / (√k σ_config) (the mean of k seeds).
    Empty when fewer than 3 configurations have a second seed; "n/a" when every
    configuration scored the same."""
    rows = []
    for name in datasets:
        groups = [
            [t.value for t in trials] for trials in seeded_runs(storage, study_name(name)).values()
        ]
        repeated = [g for g in groups if len(g) >= 2]
        if len(repeated) < 3:
            continue
        means = np.array([np.mean(g) for g in groups])
        seed_sd = float(np.sqrt(np.mean([np.var(g, ddof=1) for g in repeated])))
        config_sd = float(np.std([np.mean(g) for g in repeated], ddof=1))
        k = min(len(g) for g in repeated)
        ratios = (
            f"{seed_sd / config_sd:.2f} | {seed_sd / (np.sqrt(k) * config_sd):.2f}"
            if config_sd > 0
            else "n/a | n/a"
        )
        rows.append(
            f"| {name} | {len(groups)} | {len(repeated)} | {means.max():.3f} | "
            f"{np.median(means):.3f} | {seed_sd:.3f} | {config_sd:.3f} | {ratios} |"
        )
    if not rows:
        return []
    return [
        "",
        "Training seeds: a configuration's score is the mean over its seeds. Seed spread "
        "σ_seed (pooled within-configuration SD) against the spread across configurations "
        "σ_config (SD of the seed means), over configurations with ≥ 2 seeds; target ratio "
        "≤ 1/3:",
        "",
        "| dataset | configurations | with ≥ 2 seeds | best (mean) | median (mean) | σ_seed | "
        "σ_config | σ_seed/σ_config, one run | same, mean of the seeds |",
        "|---" * 9 + "|",
        *rows,
    ]
