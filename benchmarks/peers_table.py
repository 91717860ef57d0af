"""Issue 16's comparison from ``make bench-peers`` outputs: AutoPipe against the peers outside
Optuna (``peer_env.PEERS``), at AutoPipe's cost and at the full budget, per benchmark.

Per method (``runs/peers/<benchmark>/results.csv``): normalised regret at the end of its
budget (mean ± s.e. across datasets of the per-dataset seed means) and its worst dataset; the
same read at ``autopipe``'s cost (``regret_at_anchor_cost``: a study without a full-fidelity
result by then is missing, and the datasets with a value are counted); the cost in full-run
equivalents. Then the two targets:

- at its own cost: ``autopipe`` against every peer's regret at that cost (mean over datasets);
- at the full budget: the better of ``autopipe`` and ``autopipe-full`` against the best peer,

each with the datasets where the peer's seed mean is lower, so a loss says where.

    python benchmarks/peers_table.py [--root runs/peers] [--benchmarks nmt,post-training,lcbench]
"""

from __future__ import annotations

import argparse
from pathlib import Path

import pandas as pd

from optuna_autopipe.bench.peer_env import PEERS
from optuna_autopipe.bench.report import anytime, mean_se, read_results

ANCHOR, FULL = "autopipe", "autopipe-full"


def per_dataset(results: pd.DataFrame) -> pd.DataFrame:
    """Seed means per (method, dataset) of the regret at the end, at the anchor's cost, and
    of the cost; shape (methods × datasets, 3).

    Raises:
        ValueError: a method lacks some dataset (its means would cover other datasets than
            the rest's); names them.
    """
    columns = ["normalized_regret", "regret_at_anchor_cost", "cost"]
    per = results.groupby(["method", "dataset"], sort=False)[columns].mean()
    full = pd.MultiIndex.from_product(per.index.levels)
    missing = [f"{method} on {dataset}" for method, dataset in full.difference(per.index)]
    if missing:
        raise ValueError(f"No rows for {', '.join(missing[:5])}: every method needs every dataset.")
    return per


def table(per: pd.DataFrame) -> list[str]:
    """Markdown rows, one per method, in the order of ``per``."""
    lines = [
        "| method | regret (full budget) | worst dataset | at autopipe's cost | cost |",
        "|---|---|---|---|---|",
    ]
    for method in dict.fromkeys(per.index.get_level_values("method")):
        rows = per.loc[method]
        regret = rows["normalized_regret"]
        worst = regret.idxmax()
        name = f"**{method}** (peer)" if method in PEERS else method
        lines.append(
            f"| {name} | {mean_se(regret)} | {worst}: {regret[worst]:.3f} "
            f"| {anytime(rows['regret_at_anchor_cost'])} | {rows['cost'].mean():.2f} |"
        )
    return lines


def _versus(mine: pd.Series, theirs: pd.Series) -> str:
    """``mine`` against ``theirs`` (per-dataset regrets): the means over the datasets where
    both have a value, the verdict, the datasets where ``theirs`` is lower, and how many
    datasets ``theirs`` has no value on (no full-fidelity result by that cost: counted as
    ahead, as the peer has nothing to select)."""
    both = pd.concat({"mine": mine, "theirs": theirs}, axis=1).dropna(subset="mine")
    none = int(both["theirs"].isna().sum())
    unselected = f"; the peer had no full-fidelity result yet on {none} of {len(both)} datasets"
    both = both.dropna()
    if both.empty:
        return "ahead" + unselected
    lost = [str(dataset) for dataset in both.index[both["theirs"] < both["mine"]]]
    verdict = "ahead" if both["mine"].mean() <= both["theirs"].mean() else "BEHIND"
    return (
        f"{both['mine'].mean():.3f} vs {both['theirs'].mean():.3f}: {verdict}; the peer is "
        f"lower on {len(lost)} of {len(both)} datasets"
        + (f" ({', '.join(lost)})" if lost else "")
        + (unselected if none else "")
    )


def targets(per: pd.DataFrame) -> list[str]:
    """The two targets of issue 16, one line per peer at AutoPipe's cost and one at the full
    budget; empty without ``autopipe`` or a peer."""
    methods = set(per.index.get_level_values("method"))
    peers = [m for m in dict.fromkeys(per.index.get_level_values("method")) if m in PEERS]
    if ANCHOR not in methods or not peers:
        return [f"(no {ANCHOR if ANCHOR not in methods else 'peer'} rows: nothing to compare)"]
    mine = per.loc[ANCHOR]
    at_cost = f"- at autopipe's cost ({mine['cost'].mean():.2f} full runs), autopipe vs"
    lines = [
        f"{at_cost} {peer}: "
        + _versus(mine["normalized_regret"], per.loc[peer]["regret_at_anchor_cost"])
        for peer in peers
    ]
    ours = [m for m in (ANCHOR, FULL) if m in methods]
    best_ours = min(ours, key=lambda m: per.loc[m]["normalized_regret"].mean())
    best_peer = min(peers, key=lambda m: per.loc[m]["normalized_regret"].mean())
    lines.append(
        f"- full budget, {best_ours} vs the best peer {best_peer}: "
        + _versus(per.loc[best_ours]["normalized_regret"], per.loc[best_peer]["normalized_regret"])
    )
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--root", default="runs/peers")
    parser.add_argument(
        "--benchmarks", default="nmt,post-training,lcbench", help="comma- or space-separated"
    )
    args = parser.parse_args()
    for benchmark in args.benchmarks.replace(",", " ").split():
        path = Path(args.root) / benchmark / "results.csv"
        try:
            results = read_results(path)
            per = per_dataset(results)
        except ValueError as exc:
            parser.error(f"{exc} Under --root: the --out folders of `autopipe bench` runs.")
        print(
            f"\n### {benchmark} (benchmark {', '.join(sorted(set(results['benchmark'])))}, "
            f"{results['dataset'].nunique()} datasets, {results['seed'].nunique()} seeds)\n"
        )
        print("\n".join(table(per)))
        print("\n" + "\n".join(targets(per)))


if __name__ == "__main__":
    main()
