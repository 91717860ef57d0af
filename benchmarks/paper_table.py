"""The paper's Table 4.1 next to ours, from one ``autopipe bench`` output (``results.csv``).

Per method: the final score and regret (mean over datasets of the per-dataset seed means),
the normalised regret (mean ± s.e. across datasets) and its worst dataset, the cost per
study in pipeline hours (the replay's recorded seconds / 3600) and as a share of TPE's (full
runs), then the paper's own row (final score, regret, cost in H200 GPU hours and as a share
of its TPE-full's; Table 4.1, and Tables 6-7 for the ablations and early-stop points).

    python benchmarks/paper_table.py runs/post-training/grouped/results.csv
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import pandas as pd

from optuna_autopipe.bench.report import mean_se, read_results, share

#: The paper's rows (performance, regret, cost in GPU hours), keyed by our method name.
#: The paper stops at 50% of SFT; our ``autopipe`` stops at 25% (``autopipe-50`` at 50%).
PAPER: dict[str, tuple[str, float, float, float]] = {
    "random1": ("Random (single run)", 0.391, 0.237, 3.62),
    "global": ("Global", 0.529, 0.099, 4.05),
    "offline": ("Offline-only (ranker)", 0.558, 0.070, 6.16),
    "random-es": ("Random search, ES", 0.446, 0.182, 4.95),
    "random": ("Random search, full", 0.565, 0.063, 58.5),
    "bohb": ("BOHB", 0.590, 0.038, 95.5),
    "smac-es": ("SMAC, ES", 0.504, 0.123, 5.99),
    "smac": ("SMAC, full", 0.580, 0.048, 64.0),
    "tpe-es": ("TPE, ES", 0.545, 0.083, 6.27),
    "tpe": ("TPE, full", 0.570, 0.058, 66.8),
    "autopipe": ("Ours, ES at 25% (Table 7)", 0.565, 0.063, 7.02),
    "autopipe-50": ("Ours (two-phase, ES at 50%)", 0.590, 0.038, 8.71),
    "autopipe-75": ("Ours, ES at 75% (Table 7)", 0.583, 0.045, 9.58),
    "no-residual": ("No residual formulation (Table 6)", 0.516, 0.112, 7.88),
    "no-bo": ("No BO (Table 6)", 0.527, 0.101, 9.14),
    "no-offline": ("No offline (Table 6)", 0.497, 0.131, 5.60),
}
PAPER_TPE_COST = PAPER["tpe"][3]


def table(results: pd.DataFrame) -> str:
    """The markdown table (module docstring) of one benchmark run's ``results``."""
    per = results.groupby(["method", "dataset"], sort=False)[
        ["score", "regret", "normalized_regret", "cost_real"]
    ].mean()
    methods = list(dict.fromkeys(results["method"]))
    tpe_cost = per.loc["tpe", "cost_real"].mean() if "tpe" in methods else np.nan
    lines = [
        "| method | final score | regret | normalised regret | worst dataset | cost (pipeline h) "
        "| cost / TPE's | paper: method | score | regret | cost (GPU h) | cost / TPE's |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for method in methods:
        rows = per.loc[method]
        regret = rows["normalized_regret"]
        cost = rows["cost_real"].mean()
        name, score, paper_regret, paper_cost = PAPER.get(method, ("–", np.nan, np.nan, np.nan))
        paper = (
            f"{name} | {score:.3f} | {paper_regret:.3f} | {paper_cost:.2f} "
            f"| {paper_cost / PAPER_TPE_COST:.0%}"
            if method in PAPER
            else "– | | | |"
        )
        lines.append(
            f"| {method} | {rows['score'].mean():.3f} | {rows['regret'].mean():.3f} "
            f"| {mean_se(regret)} | {regret.idxmax()}: {regret.max():.3f} "
            f"| {cost / 3600:.3f} | {share(cost, tpe_cost)} | {paper} |"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("results", type=Path, help="results.csv of an autopipe bench run")
    args = parser.parse_args()
    try:
        results = read_results(args.results, benchmark="post-training")
    except ValueError as exc:
        parser.error(str(exc))
    print(table(results))


if __name__ == "__main__":
    main()
