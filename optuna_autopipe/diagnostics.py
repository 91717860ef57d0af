"""Offline diagnostics of the ranking prior (the paper's Table 5 / appendix D.2 metrics).

Leave-one-dataset-out over every dataset of a recorded benchmark. For each held-out dataset
the candidates are its own corpus configurations with their true scores; each model gives
a predicted score per candidate, scored with ``ranking_metrics``:

- ``ranker``: the XGBoost ranking ensemble fitted on the training datasets, with the
  datasets' meta-features;
- ``ranker-nodata``: the same without meta-features (configuration columns only);
- ``global``: minus the mean scaled rank of each candidate over the training datasets (the
  ``global`` benchmark method's criterion, applied to the held-out dataset's candidates; the
  method itself picks among the training datasets' configurations, so its choice can differ);
- ``es-<f>`` for each early-stop fraction f: the proxy ŷ = s(x) + r̂ of one observed (noisy)
  run of each candidate cut at f, s(x) from ``ranker`` and r̂ from the residual
  ``EarlyStopRegressor`` (trained on ``regressor_rows`` runs per training dataset, targets on
  prior scores cross-fitted over 4 folds of groups, in-sample with under 3 groups);
- ``es-direct-0.5``: the regressor trained on z(y) directly (no prior), cut at 0.5;
- ``cut-0.5``: no model, the score the run shows at the 0.5 cut (what a user would rank by).

With ``protocol="grouped"`` the held-out dataset's whole group is removed from training (as
``Benchmark.offline`` does). Folds run in spawned worker processes, one XGBoost thread each.

Outputs in ``out``: ``prior_report.csv`` (columns ``model, dataset, metric, value``; dataset
``mean`` rows average over the held-out datasets) and ``prior_report.md`` (model x metric
means ± standard error across held-out datasets).
"""

from __future__ import annotations

import multiprocessing
import os
import time
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path

import numpy as np
import pandas as pd
from tqdm import tqdm

from objectives.registry import Benchmark, Protocol, load_benchmark
from optuna_autopipe.bench.methods import config_key, scaled_rank
from optuna_autopipe.bench.report import mean_se
from optuna_autopipe.corpus import Corpus, DatasetRuns
from optuna_autopipe.dynamics import stop_step
from optuna_autopipe.ensemble import TreeParams
from optuna_autopipe.metrics import METRICS, ranking_metrics
from optuna_autopipe.ranker import Ranker
from optuna_autopipe.regressor import EarlyStopRegressor, prior_scores

BASE_MODELS = ("ranker", "ranker-nodata", "global")
#: The early-stop point of the regressor-free rows (direct regressor, observed score).
CUT = 0.5
CROSS_FIT = 4
COLUMNS = ["model", "dataset", "metric", "value"]
MEAN = "mean"


@dataclass(frozen=True)
class _Fold:
    """One held-out dataset of one report (picklable, sent to a worker)."""

    benchmark: str
    data_dir: str | None
    pool_size: int
    protocol: Protocol
    dataset: str
    params: TreeParams = field(default_factory=TreeParams)
    fractions: tuple[float, ...] = ()
    regressor_rows: int = 500


def models(fractions: Sequence[float]) -> list[str]:
    """The report's model names for the given early-stop fractions, in table order."""
    early = [f"es-{f:g}" for f in fractions]
    return (
        [*BASE_MODELS, *early, f"es-direct-{CUT:g}", f"cut-{CUT:g}"]
        if fractions
        else [*BASE_MODELS]
    )


def prior_report(
    *,
    benchmark: str,
    out: Path,
    protocol: Protocol = "grouped",
    data_dir: str | None = None,
    pool_size: int = 2000,
    workers: int = os.cpu_count() or 1,
    ranker_params: TreeParams | None = None,
    fractions: Sequence[float] = (0.25, 0.5, 0.75),
    regressor_rows: int = 500,
) -> pd.DataFrame:
    """Leave-one-dataset-out ranking metrics of the prior models; writes the CSV and the table.

    ``pool_size``: LCBench configurations per task (NMT uses its recorded runs). ``workers``:
    parallel folds (1 runs them in this process). ``fractions``: early-stop points of the
    regressor rows (empty: ranker rows only). Returns the rows of ``prior_report.csv``.
    """
    if protocol not in ("lodo", "grouped"):
        raise ValueError(f"Unknown protocol {protocol!r}; choose 'lodo' or 'grouped'.")
    if pool_size < 2:
        raise ValueError(f"pool_size must be >= 2, got {pool_size}.")
    params = ranker_params or TreeParams()
    names = [t.name for t in _benchmark(benchmark, data_dir, pool_size).tasks]
    fractions = tuple(sorted(fractions))
    folds = [
        _Fold(benchmark, data_dir, pool_size, protocol, name, params, fractions, regressor_rows)
        for name in names
    ]
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    workers = max(1, min(workers, len(folds)))
    with tqdm(total=len(folds), desc="folds", unit="fold") as bar:
        if workers == 1:
            results = []
            for fold in folds:
                results.append(_run_fold(fold))
                bar.update()
        else:
            context = multiprocessing.get_context("spawn")
            with ProcessPoolExecutor(max_workers=workers, mp_context=context) as pool:
                results = []
                for rows in pool.map(_run_fold, folds):
                    results.append(rows)
                    bar.update()
    wall = time.perf_counter() - started
    table = pd.DataFrame([row for rows in results for row in rows], columns=COLUMNS)
    means = (
        table.groupby(["model", "metric"], sort=False)["value"]
        .mean()
        .reset_index()
        .assign(dataset=MEAN)[COLUMNS]
    )
    table = pd.concat([table, means], ignore_index=True)
    order = {m: i for i, m in enumerate(models(fractions))}
    table = table.sort_values("model", key=lambda s: s.map(order), kind="stable")
    table = table.reset_index(drop=True)
    table.attrs["wall_seconds"] = wall
    table.to_csv(out / "prior_report.csv", index=False)
    title = (
        f"# Prior diagnostics: {benchmark}, {protocol} leave-one-dataset-out, "
        f"{len(names)} held-out datasets"
    )
    note = (
        "Mean ± standard error across held-out datasets. Candidates: each held-out dataset's "
        f"corpus configurations (LCBench: {pool_size} per task), each with one observed run "
        "for the early-stop rows. regret is normalised by |best − median|; recall@k is 1 "
        "when a best configuration is in the top k."
    )
    (out / "prior_report.md").write_text(
        f"{title}\n\n{note}\n\n{format_report(table)}\n\nwall time: {wall:.0f} s\n"
    )
    return table


def format_report(df: pd.DataFrame) -> str:
    """A markdown table model x metric of the means ± s.e. across held-out datasets."""
    folds = df[df["dataset"] != MEAN]
    metrics = [m for m in METRICS if m in set(folds["metric"])]
    models = list(dict.fromkeys(folds["model"]))
    lines = [
        "| model | " + " | ".join(metrics) + " |",
        "|---|" + "---:|" * len(metrics),
    ]
    for model in models:
        rows = folds[folds["model"] == model]
        cells = [mean_se(rows[rows["metric"] == metric]["value"]) for metric in metrics]
        lines.append(f"| {model} | " + " | ".join(cells) + " |")
    n_datasets = folds["dataset"].nunique()
    return "\n".join(lines) + f"\n\n({n_datasets} held-out datasets)"


@cache
def _benchmark(name: str, data_dir: str | None, pool_size: int) -> Benchmark:
    """The benchmark, loaded once per process (its pools are computed on first use)."""
    return load_benchmark(name, data_dir=data_dir, pool_size=pool_size)


@cache
def _corpus(name: str, data_dir: str | None, pool_size: int, dynamics: bool) -> Corpus:
    """Every dataset's corpus runs (with one observed run's dynamics each), built once."""
    benchmark = _benchmark(name, data_dir, pool_size)
    return Corpus.from_tasks(benchmark.tasks, groups=benchmark.groups, dynamics=dynamics)


def _run_fold(fold: _Fold) -> list[tuple[str, str, str, float]]:
    """Fit the models without ``fold.dataset`` (and its group) and score its candidates."""
    benchmark = _benchmark(fold.benchmark, fold.data_dir, fold.pool_size)
    corpus = _corpus(fold.benchmark, fold.data_dir, fold.pool_size, bool(fold.fractions))
    offline = benchmark.offline(fold.dataset, fold.protocol)
    train = Corpus(corpus.space, [corpus.dataset(t.name) for t in offline])
    held = corpus.dataset(fold.dataset)
    predicted: dict[str, np.ndarray] = {}
    for model, use_features in (("ranker", True), ("ranker-nodata", False)):
        ranker = Ranker(params=fold.params, use_dataset_features=use_features, n_jobs=1)
        predicted[model] = ranker.fit(train).raw_scores(held.configs, held.features)
    predicted["global"] = -np.mean(
        [[scaled_rank(task, config_key(c), c) for c in held.configs] for task in offline], axis=0
    )
    if fold.fractions:
        predicted.update(_early_stop_predictions(fold, train, held, predicted["ranker"]))
    rows = []
    for model in models(fold.fractions):
        metrics = ranking_metrics(held.utility, predicted[model])
        rows.extend((model, fold.dataset, name, metrics[name]) for name in METRICS)
    return rows


def _early_stop_predictions(
    fold: _Fold, train: Corpus, held: DatasetRuns, ranker_scores: np.ndarray
) -> dict[str, np.ndarray]:
    """The ``es-*`` and ``cut-*`` rows' predicted scores of the held-out candidates."""
    sample = train.subsample(fold.regressor_rows, seed=0)
    ranker = Ranker(params=fold.params, n_models=1, n_jobs=1)
    if len({d.group for d in sample.datasets}) < 3:
        ranker.fit(sample)  # too few groups to cross-fit: in-sample scores
    scores = prior_scores(sample, ranker, folds=CROSS_FIT)
    s = (ranker_scores - ranker_scores.mean()) / (ranker_scores.std() or 1.0)
    predicted = {}
    for fraction in fold.fractions:
        regressor = EarlyStopRegressor(fraction=fraction).fit(sample, prior_scores=scores)
        prediction = regressor.predict(held.configs, held.features, held.dynamics)
        predicted[f"es-{fraction:g}"] = regressor.proxy(prediction, s)
    direct = EarlyStopRegressor(fraction=CUT, target="direct").fit(sample)
    predicted[f"es-direct-{CUT:g}"] = direct.predict(
        held.configs, held.features, held.dynamics
    ).mean
    task = _benchmark(fold.benchmark, fold.data_dir, fold.pool_size).task(held.name)
    cut = stop_step(task.n_steps, CUT)
    predicted[f"cut-{CUT:g}"] = np.array(
        [
            task.sign()
            * task.score_of(np.array([v for step, v in d.metrics[task.metric] if step <= cut]))
            for d in held.dynamics
        ]
    )
    return predicted
