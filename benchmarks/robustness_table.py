"""The robustness table of docs/sampler.md from ``make bench-stress`` outputs.

For every benchmark and setting (the ``results.csv`` of ``runs/stress/<benchmark>-<setting>/``)
and every method: mean ± s.e. across datasets of the per-dataset seed-mean normalised regret,
the worst dataset, the datasets above 1.0 (worse than the pool's median), the datasets where
the method is worse than TPE (full fidelity) by more than 0.15, and the cost in full-run
equivalents; then, per setting, the target check: AutoPipe against the best full-fidelity
baseline (tpe, gp, smac, bohb) and its cost ratio.

    python benchmarks/robustness_table.py [--root runs/stress] [--settings grouped,single,...]
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import pandas as pd

FULL_FIDELITY = ("tpe", "gp", "smac", "bohb")


def _mean_se(values: pd.Series) -> str:
    return f"{values.mean():.3f} ± {values.std(ddof=1) / np.sqrt(len(values)):.3f}"


def table(results: pd.DataFrame) -> list[str]:
    """Markdown rows, one per method, of one benchmark and setting."""
    per = results.groupby(["method", "dataset"], sort=False)[["normalized_regret", "cost"]].mean()
    tpe = per.loc["tpe", "normalized_regret"] if "tpe" in per.index else None
    lines = [
        "| method | normalised regret | worst dataset | > 1.0 | > TPE + 0.15 | cost |",
        "|---|---|---|---|---|---|",
    ]
    for method in dict.fromkeys(results["method"]):
        rows = per.loc[method]
        regret = rows["normalized_regret"]
        worst = regret.idxmax()
        behind = "" if tpe is None else str(int((regret - tpe.reindex(regret.index) > 0.15).sum()))
        lines.append(
            f"| {method} | {_mean_se(regret)} | {worst}: {regret[worst]:.3f} "
            f"| {int((regret > 1.0).sum())} | {behind} | {rows['cost'].mean():.2f} |"
        )
    return lines


def target(results: pd.DataFrame) -> str:
    """AutoPipe against the best full-fidelity baseline of the setting."""
    per = results.groupby(["method", "dataset"])[["normalized_regret", "cost"]].mean()
    means = per.groupby("method").mean()
    baselines = [m for m in FULL_FIDELITY if m in means.index]
    if "autopipe" not in means.index or not baselines:
        return "(no autopipe or full-fidelity baseline rows)"
    best = min(baselines, key=lambda m: means.loc[m, "normalized_regret"])
    mine, theirs = means.loc["autopipe"], means.loc[best]
    met = mine["normalized_regret"] <= theirs["normalized_regret"] and (
        mine["cost"] <= 0.4 * theirs["cost"] + 1e-9
    )
    return (
        f"autopipe {mine['normalized_regret']:.3f} at {mine['cost']:.2f} full runs vs best "
        f"full-fidelity baseline {best} {theirs['normalized_regret']:.3f} at "
        f"{theirs['cost']:.2f} ({mine['cost'] / theirs['cost']:.0%} of its cost): "
        + ("met" if met else "NOT met")
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--root", default="runs/stress")
    parser.add_argument("--benchmarks", default="nmt,lcbench")
    parser.add_argument("--settings", default="grouped,single,few,inverted")
    args = parser.parse_args()
    for benchmark in args.benchmarks.split(","):
        for setting in args.settings.split(","):
            path = Path(args.root) / f"{benchmark}-{setting}" / "results.csv"
            if not path.exists():
                print(f"\n{path}: missing\n")
                continue
            results = pd.read_csv(path)
            print(f"\n### {benchmark}, {setting} ({results['seed'].nunique()} seeds)\n")
            print("\n".join(table(results)))
            print(f"\n{target(results)}")


if __name__ == "__main__":
    main()
