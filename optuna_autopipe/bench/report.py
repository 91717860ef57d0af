"""Benchmark outputs: ``results.csv``, ``summary.md`` and ``regret_vs_cost.png``.

Regret is measured against the best of the reference pool, which is the task's fixed pool
plus the true score of every configuration any study of that benchmark and dataset in the
storage evaluated, whatever its protocol or prior noise (so regret >= 0 always, and settings
run into one storage share one reference):

    regret            = sign · (best − score)            (sign = +1 maximise, −1 minimise)
    normalized_regret = regret / |best − median(pool)|   (median over the fixed pool)

Summaries are mean ± standard error: per dataset across seeds, and overall as the mean over
datasets of the per-dataset means, with the standard error across datasets.
"""

from __future__ import annotations

import json
import platform
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import optuna
import pandas as pd

from objectives.registry import Benchmark
from optuna_autopipe._text import count
from optuna_autopipe.bench.methods import PROTOCOL_FREE

if TYPE_CHECKING:
    from optuna_autopipe.bench.harness import BenchSpec, Job

COLUMNS = [
    "benchmark",
    "dataset",
    "method",
    "seed",
    "selected",
    "score",
    "best_score",
    "regret",
    "normalized_regret",
    "cost",
    "cost_real",
    "n_evals",
    "full_fidelity",
    "cost_unit",
    "protocol",
    "n_sources",
    "sources",
    "prior_noise",
    "budget",
    "regret_at_anchor_cost",
]
#: The columns of ``COLUMNS`` that hold numbers (``read_results`` checks them).
NUMERIC_COLUMNS = [
    "score",
    "best_score",
    "regret",
    "normalized_regret",
    "cost",
    "cost_real",
    "n_evals",
    "budget",
    "regret_at_anchor_cost",
]
#: The method whose spending the anytime column reads every method at (``summarise``).
ANCHOR_METHOD = "autopipe"

#: Which datasets a method may learn from, per protocol (``Benchmark.offline``).
SOURCES_RULE = {
    "grouped": "every dataset outside the held-out dataset's group",
    "lodo": "every other dataset",
    "single-source": "one dataset of another group, a different one per seed",
    "few-source": "{k} of other groups, a different set per seed",
}


@dataclass(frozen=True)
class Outputs:
    results: Path
    summary: Path
    plot: Path
    table: pd.DataFrame
    storage_url: str
    wall_seconds: float


def write_outputs(
    storage: optuna.storages.BaseStorage,
    benchmark: Benchmark,
    jobs: Sequence[Job],
    spec: BenchSpec,
    *,
    wall_seconds: float,
) -> Outputs:
    """Read the finished studies of ``jobs`` from ``storage`` and write the three outputs."""
    finished = [
        s
        for s in optuna.get_all_study_summaries(storage, include_best_trial=False)
        if "bench" in s.user_attrs
    ]
    records = {s.study_name: s.user_attrs["bench"] for s in finished}
    references = _references(benchmark, finished, {job.dataset for job in jobs})
    rows, curves = [], []
    for job in jobs:
        record = records[job.study_name]
        best, scale = references[job.dataset]
        sign = benchmark.task(job.dataset).sign()
        regret = max(0.0, sign * (best - record["score"]))
        free = job.method in PROTOCOL_FREE  # one study shared by every setting
        rows.append(
            {
                "benchmark": benchmark.name,
                "dataset": job.dataset,
                "method": job.method,
                "seed": job.seed,
                "selected": json.dumps(record["selected"], sort_keys=True),
                "score": record["score"],
                "best_score": best,
                "regret": regret,
                "normalized_regret": regret / scale,
                "cost": record["cost"],
                "cost_real": record["cost_real"],
                "n_evals": record["n_evals"],
                # None: stored before the harness recorded it
                "full_fidelity": record.get("full_fidelity"),
                "cost_unit": record["cost_unit"],
                "protocol": spec.protocol,
                "n_sources": 0 if free else record["n_sources"],
                "sources": "" if free else record["sources"],
                "prior_noise": spec.prior_noise,
                "budget": record["budget"],
            }
        )
        curves.append(
            (
                job.method,
                job.dataset,
                [
                    (c, None if s is None else max(0.0, sign * (best - s)) / scale)
                    for c, s in record["trajectory"]
                ],
            )
        )
    _at_anchor_cost(rows, curves)
    table = pd.DataFrame(rows, columns=COLUMNS)
    spec.out.mkdir(parents=True, exist_ok=True)
    results = spec.out / "results.csv"
    table.to_csv(results, index=False)
    summary = spec.out / "summary.md"
    summary.write_text(summarise(table, spec=spec, wall_seconds=wall_seconds))
    plot = spec.out / "regret_vs_cost.png"
    plot_regret_vs_cost(curves, plot, title=f"{benchmark.name} ({spec.tag})")
    return Outputs(results, summary, plot, table, spec.storage_url, wall_seconds)


def _at_anchor_cost(
    rows: list[dict[str, object]], curves: list[tuple[str, str, list[tuple[float, float | None]]]]
) -> None:
    """Set each row's ``regret_at_anchor_cost``: the normalised regret of its study's
    selection when it had spent what ``ANCHOR_METHOD`` spends on that dataset (its mean cost
    over seeds); NaN before the study's first full-fidelity result, or without the anchor."""
    spent: dict[str, list[float]] = {}
    for row in rows:
        if row["method"] == ANCHOR_METHOD:
            spent.setdefault(str(row["dataset"]), []).append(float(row["cost"]))  # type: ignore[arg-type]
    for row, (_, dataset, points) in zip(rows, curves, strict=True):
        if dataset not in spent:
            row["regret_at_anchor_cost"] = float("nan")
            continue
        at = np.array([np.mean(spent[dataset])])
        row["regret_at_anchor_cost"] = float(_step(points, at)[0])


def _references(
    benchmark: Benchmark, finished: Sequence[optuna.study.StudySummary], datasets: set[str]
) -> dict[str, tuple[float, float]]:
    """Per dataset: (best score of the reference pool, |best − median| of the fixed pool).

    The pool takes every finished study of the benchmark and dataset (by the study's user
    attrs ``benchmark`` and ``dataset``), whatever its protocol.
    """
    references = {}
    for dataset in datasets:
        task = benchmark.task(dataset)
        _, scores = task.pool()
        evaluated = [
            s.user_attrs["bench"]["best_evaluated"]
            for s in finished
            if s.user_attrs.get("benchmark") == benchmark.name
            and s.user_attrs.get("dataset") == dataset
        ]
        signed = np.concatenate([scores, evaluated]) * task.sign()
        best = float(signed.max() * task.sign())
        scale = abs(best - float(np.median(scores)))
        references[dataset] = (best, scale if scale > 0 else 1.0)
    return references


#: The method whose cost the summary's relative cost column divides by (paper Table 4.1's
#: high-resource baseline; "n/a" when it was not run).
REFERENCE_METHOD = "tpe"


def share(cost: float, reference: float) -> str:
    """``cost`` as a percentage of ``reference``; "n/a" without a reference."""
    return f"{cost / reference:.0%}" if np.isfinite(reference) and reference > 0 else "n/a"


def anytime(per_dataset: pd.Series) -> str:
    """Mean ± s.e. over the datasets where the method had a selection at the anchor's cost,
    with how many those are when not all; "–" when none."""
    known = per_dataset.dropna()
    if known.empty:
        return "–"
    missing = "" if len(known) == len(per_dataset) else f" ({len(known)}/{len(per_dataset)})"
    return mean_se(known) + missing


def read_results(path: Path, *, benchmark: str | None = None) -> pd.DataFrame:
    """A ``results.csv`` written by ``write_outputs``, checked before a table reads it.

    Raises:
        ValueError: ``path`` is not a file, not a CSV, has no rows, lacks ``COLUMNS`` or
            has text in ``NUMERIC_COLUMNS``, or (with ``benchmark``) holds another
            benchmark's results; names the file and the fix.
    """
    if not path.is_file():
        raise ValueError(f"{path}: not a file (pass the results.csv in an `autopipe bench` --out).")
    try:
        results = pd.read_csv(path, dtype={"dataset": str})  # LCBench names are numbers
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as exc:
        raise ValueError(f"{path}: not a results.csv of `autopipe bench` ({exc}).") from exc
    missing = [c for c in COLUMNS if c not in results.columns]
    if missing:
        raise ValueError(
            f"{path}: lacks the columns {missing} of an `autopipe bench` results.csv; rerun "
            "`autopipe bench` with the same arguments to rewrite it from its storage."
        )
    if results.empty:
        raise ValueError(f"{path}: has no rows (did the `autopipe bench` run finish?).")
    text = [c for c in NUMERIC_COLUMNS if not pd.api.types.is_numeric_dtype(results[c])]
    if text:
        raise ValueError(f"{path}: the columns {text} hold values that are not numbers.")
    others = sorted(set(results["benchmark"]) - {benchmark}) if benchmark else []
    if others:
        raise ValueError(
            f"{path}: holds results of {others}, not {benchmark!r}; pass the results.csv of an "
            f"`autopipe bench --benchmark {benchmark}` run."
        )
    return results


def mean_se(values: pd.Series) -> str:
    """``mean ± standard error`` to 3 decimals (the mean alone for fewer than 2 values)."""
    values = values.dropna()
    if len(values) < 2:
        return f"{values.mean():.3f}"
    return f"{values.mean():.3f} ± {values.std(ddof=1) / np.sqrt(len(values)):.3f}"


def summarise(table: pd.DataFrame, *, spec: BenchSpec, wall_seconds: float) -> str:
    """The summary page: overall and per-dataset normalised regret, cost, and provenance."""
    per_dataset = table.groupby(["method", "dataset"], sort=False).mean(numeric_only=True)
    methods = list(dict.fromkeys(table["method"]))
    sources = SOURCES_RULE[spec.protocol].format(k=count(spec.sources, "dataset"))
    lines = [
        f"# {spec.benchmark}: protocol `{spec.tag}` (sources: {sources}), "
        f"prior noise `{spec.prior_noise}`",
        "",
        f"Budget {count(spec.budget, 'full evaluation')}, {count(spec.seeds, 'seed')}, "
        f"{count(table['dataset'].nunique(), 'dataset')}. Normalised regret "
        "(regret / |best − median| of the reference pool, lower is better): mean ± s.e. across "
        "datasets of the per-dataset means over seeds; worst dataset: the highest of those "
        "per-dataset means; datasets > 1.0: how many of them exceed 1.0 (worse than the pool's "
        "median). Final score: the selected configuration's score, mean over datasets. "
        f"Cost in full-run equivalents, in {table['cost_unit'].iloc[0]} and as a share of "
        f"{REFERENCE_METHOD}'s (full runs). At {ANCHOR_METHOD}'s cost: the normalised regret "
        f"of the selection when the method had spent what {ANCHOR_METHOD} spends on the dataset "
        "(mean over seeds; a study without a full-fidelity result by then counts as missing, "
        "and the datasets with a value are counted). "
        "Sources per study: `sources` in results.csv.",
        "",
        "| method | normalised regret | worst dataset | datasets > 1.0 | final score | regret "
        f"| cost (full runs) | cost (real) | cost / {REFERENCE_METHOD}'s | evaluations "
        f"| at {ANCHOR_METHOD}'s cost |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    reference_cost = (
        per_dataset.loc[REFERENCE_METHOD, "cost_real"].mean()
        if REFERENCE_METHOD in methods
        else float("nan")
    )
    for method in methods:
        rows = per_dataset.loc[method]
        regrets = rows["normalized_regret"]
        lines.append(
            f"| {method} | {mean_se(regrets)} | {regrets.idxmax()}: {regrets.max():.3f} "
            f"| {int((regrets > 1.0).sum())} | {rows['score'].mean():.4g} "
            f"| {mean_se(rows['regret'])} "
            f"| {rows['cost'].mean():.2f} | {rows['cost_real'].mean():.4g} "
            f"| {share(rows['cost_real'].mean(), reference_cost)} "
            f"| {rows['n_evals'].mean():.1f} | {anytime(rows['regret_at_anchor_cost'])} |"
        )
    datasets = list(dict.fromkeys(table["dataset"]))
    lines += [
        "",
        "Per dataset (normalised regret, mean ± s.e. across seeds):",
        "",
        "| method | " + " | ".join(datasets) + " |",
        "|---|" + "---|" * len(datasets),
    ]
    for method in methods:
        cells = [
            mean_se(table[(table.method == method) & (table.dataset == d)]["normalized_regret"])
            for d in datasets
        ]
        lines.append(f"| {method} | " + " | ".join(cells) + " |")
    # tables read from results.csv written before this column existed lack it
    partial = table[table.get("full_fidelity", pd.Series(index=table.index)).eq(False)]
    if len(partial):
        by_method = partial.groupby("method", sort=False).size()
        lines += [
            "",
            "Studies without a full-fidelity result (the selection is the best value among the "
            "runs at the furthest level any run reached): "
            + "; ".join(
                f"{method}: {n} of {int((table.method == method).sum())}"
                for method, n in by_method.items()
            )
            + ".",
        ]
    workers = count(spec.workers, "worker process", "worker processes")
    lines += [
        "",
        f"Machine: {platform.machine()}, {workers}, Python {sys.version.split()[0]}, "
        f"Optuna {optuna.__version__}. "
        f"Date: {datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC. "
        f"Wall time of this invocation: {wall_seconds:.0f} s.",
        "",
    ]
    return "\n".join(lines)


def plot_regret_vs_cost(
    curves: list[tuple[str, str, list[tuple[float, float | None]]]], path: Path, *, title: str
) -> None:
    """Anytime normalised regret of the current selection against cumulative cost.

    One line per method: the mean over datasets of the mean over seeds, on a common cost
    grid, from the cost where every study of the method has a full-fidelity result (a mean
    over the datasets that have one so far would jump each time a dataset joins; a study
    that never reaches full fidelity is left out); a dot marks
    where the method's spending ends (one-shot methods are a dot at cost 1). The regret axis
    is linear up to 0.01 and logarithmic above (matplotlib's ``symlog``), so the small
    regrets of the good methods and the large ones of early selections both show.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    top = max((c for _, _, points in curves for c, _ in points), default=1.0)
    ends = [points[-1][0] for _, _, points in curves if points]
    grid = np.unique(np.concatenate([np.linspace(0.0, top, 200), ends]))
    fig, ax = plt.subplots(figsize=(8, 4.5))
    palette = plt.get_cmap("tab20").colors  # distinct colours for up to 20 methods
    for index, method in enumerate(dict.fromkeys(m for m, _, _ in curves)):
        by_dataset: dict[str, list[np.ndarray]] = {}
        spent = 0.0
        for m, dataset, points in curves:
            if m == method:
                curve = _step(points, grid)  # carries the final selection to the right
                if np.isfinite(curve).any():  # never at full fidelity: no anytime curve
                    by_dataset.setdefault(dataset, []).append(curve)
                spent = max(spent, points[-1][0])
        if not by_dataset:
            continue
        mean = np.mean([np.mean(v, axis=0) for v in by_dataset.values()], axis=0)
        mean[grid > spent + 1e-9] = np.nan  # a line ends where its method stopped spending
        (line,) = ax.plot(grid, mean, label=method, color=palette[index % len(palette)])
        last = np.flatnonzero(np.isfinite(mean))
        if last.size:
            ax.plot(grid[last[-1]], mean[last[-1]], "o", color=line.get_color())
    ax.set_yscale("symlog", linthresh=0.01)
    low, high = ax.get_ylim()
    ticks = [
        t for t in (0, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1, 2, 5, 10, 20, 50) if low <= t <= high
    ]
    ax.set_yticks(ticks, labels=[f"{t:g}" for t in ticks])
    ax.set_xlabel("cumulative cost (full-run equivalents)")
    ax.set_ylabel("normalised regret of current selection")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend(loc="center left", bbox_to_anchor=(1.01, 0.5), fontsize="small")  # off the lines
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def _step(points: list[tuple[float, float | None]], grid: np.ndarray) -> np.ndarray:
    """Right-continuous step function of ``points`` on ``grid`` (NaN before the first value)."""
    costs = np.array([c for c, _ in points])
    values = np.array([np.nan if v is None else v for _, v in points])
    index = np.searchsorted(costs, grid + 1e-12, side="right") - 1
    return np.where(index >= 0, values[np.clip(index, 0, None)], np.nan)
