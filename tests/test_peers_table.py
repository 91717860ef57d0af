"""``benchmarks/peers_table.py``: AutoPipe against the peers at its cost and at full budget."""

from __future__ import annotations

import runpy
from pathlib import Path

import pandas as pd
import pytest

from optuna_autopipe.bench.report import COLUMNS, read_results

SCRIPT = Path(__file__).parents[1] / "benchmarks" / "peers_table.py"


@pytest.fixture(scope="module")
def script():
    return runpy.run_path(str(SCRIPT))


def _per(script, rows):
    results = pd.DataFrame(
        rows,
        columns=["method", "dataset", "seed", "normalized_regret", "regret_at_anchor_cost", "cost"],
    )
    return script["per_dataset"](results)


ROWS = [
    # method, dataset, seed, regret at the end, at autopipe's cost, cost
    ("autopipe", "a", 0, 0.1, 0.1, 6.0),
    ("autopipe", "a", 1, 0.3, 0.3, 6.0),
    ("autopipe", "b", 0, 0.4, 0.4, 6.0),
    ("autopipe-full", "a", 0, 0.1, 0.2, 15.0),
    ("autopipe-full", "b", 0, 0.2, 0.4, 15.0),
    ("dehb", "a", 0, 0.0, 0.5, 15.0),
    ("dehb", "b", 0, 0.5, float("nan"), 15.0),
    ("priorband", "a", 0, 0.3, 0.1, 15.0),
    ("priorband", "b", 0, 0.1, 0.2, 15.0),
]


def test_rows_average_seeds_then_datasets_and_count_missing_anytime_values(script):
    lines = script["table"](_per(script, ROWS))
    autopipe, _, dehb, _ = lines[2:]
    # autopipe: per dataset (0.2, 0.4) -> 0.300 ± 0.100, worst b
    assert autopipe == "| autopipe | 0.300 ± 0.100 | b: 0.400 | 0.300 ± 0.100 | 6.00 |"
    # dehb had no full-fidelity result on b by autopipe's cost: one of two datasets counted
    assert dehb == "| **dehb** (peer) | 0.250 ± 0.250 | b: 0.500 | 0.500 (1/2) | 15.00 |"


def test_targets_say_where_a_peer_wins(script):
    lines = script["targets"](_per(script, ROWS))
    at_cost_dehb, at_cost_priorband, full = lines
    assert at_cost_dehb.endswith(
        "autopipe vs dehb: 0.200 vs 0.500: ahead; the peer is lower on 0 of 1 datasets; the "
        "peer had no full-fidelity result yet on 1 of 2 datasets"
    )
    # priorband at autopipe's cost: (0.1, 0.2) against autopipe's (0.2, 0.4)
    assert "0.300 vs 0.150: BEHIND; the peer is lower on 2 of 2 datasets (a, b)" in (
        at_cost_priorband
    )
    # full budget: autopipe-full (0.1, 0.2) is our better one; the best peer is priorband
    assert full.startswith("- full budget, autopipe-full vs the best peer priorband: 0.150 vs")
    assert "0.200: ahead; the peer is lower on 1 of 2 datasets (b)" in full


def test_numeric_dataset_names_are_read_as_names(script, tmp_path):
    path = tmp_path / "results.csv"
    rows = [(*row[:1], {"a": 3945, "b": 7593}[row[1]], *row[2:]) for row in ROWS]
    table = pd.DataFrame(
        rows,
        columns=["method", "dataset", "seed", "normalized_regret", "regret_at_anchor_cost", "cost"],
    )
    full = table.reindex(columns=COLUMNS).fillna(0).assign(**table, benchmark="lcbench")
    full.to_csv(path, index=False)
    per = script["per_dataset"](read_results(path, benchmark="lcbench"))
    assert "(7593)" in script["targets"](per)[-1]


def test_a_peer_without_any_selection_at_autopipes_cost_is_behind_it(script):
    rows = [r for r in ROWS if r[0] != "dehb"] + [
        ("dehb", d, 0, 0.0, float("nan"), 15.0) for d in "ab"
    ]
    at_cost_dehb = script["targets"](_per(script, rows))[1]
    assert at_cost_dehb.endswith(
        "vs dehb: ahead; the peer had no full-fidelity result yet on 2 of 2 datasets"
    )


def test_without_autopipe_or_peers_says_so(script):
    rows = [r for r in ROWS if r[0] not in ("dehb", "priorband")]
    assert script["targets"](_per(script, rows)) == ["(no peer rows: nothing to compare)"]
    rows = [r for r in ROWS if r[0] != "autopipe"]
    assert script["targets"](_per(script, rows)) == ["(no autopipe rows: nothing to compare)"]


def test_a_method_missing_a_dataset_is_refused_by_name(script):
    rows = [r for r in ROWS if r[:2] != ("dehb", "b")]
    with pytest.raises(ValueError, match="No rows for dehb on b: every method needs every"):
        _per(script, rows)


def test_a_results_file_with_text_in_a_number_column_is_refused(tmp_path):
    path = tmp_path / "results.csv"
    row = dict.fromkeys(COLUMNS, 0) | {"benchmark": "nmt", "normalized_regret": "high"}
    pd.DataFrame([row]).to_csv(path, index=False)
    with pytest.raises(ValueError, match=r"columns \['normalized_regret'\] hold values that"):
        read_results(path)
