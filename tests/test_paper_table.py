"""``benchmarks/paper_table.py``: our Table 4.1 next to the paper's."""

from __future__ import annotations

import re
import runpy
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from optuna_autopipe.bench.report import COLUMNS

SCRIPT = Path(__file__).parents[1] / "benchmarks" / "paper_table.py"


@pytest.fixture(scope="module")
def table():
    return runpy.run_path(str(SCRIPT))["table"]


def test_rows_average_seeds_then_datasets_and_divide_cost_by_tpe(table):
    rows = [
        # method, dataset, seed, score, regret, normalised regret, pipeline seconds
        ("tpe", "a", 0, 0.6, 0.0, 0.0, 3600.0),
        ("tpe", "a", 1, 0.4, 0.2, 2.0, 3600.0),
        ("tpe", "b", 0, 0.5, 0.1, 1.0, 7200.0),
        ("tpe", "b", 1, 0.5, 0.1, 1.0, 7200.0),
        ("autopipe", "a", 0, 0.6, 0.0, 0.0, 900.0),
        ("autopipe", "b", 0, 0.2, 0.4, 4.0, 1800.0),
        ("mine", "a", 0, 0.6, 0.0, 0.0, 0.0),
        ("mine", "b", 0, 0.6, 0.0, 0.0, 0.0),
    ]
    results = pd.DataFrame(
        rows,
        columns=["method", "dataset", "seed", "score", "regret", "normalized_regret", "cost_real"],
    )
    lines = table(results).splitlines()
    tpe, autopipe, mine = lines[2:]
    # tpe: per dataset (0.5, 0.5) -> 0.500; normalised (1.0, 1.0); 1.5 pipeline hours
    assert tpe.startswith("| tpe | 0.500 | 0.100 | 1.000 ± 0.000 | a: 1.000 | 1.500 | 100% |")
    assert "| TPE, full | 0.570 | 0.058 | 66.80 | 100% |" in tpe
    assert autopipe.startswith(
        "| autopipe | 0.400 | 0.200 | 2.000 ± 2.000 | b: 4.000 | 0.375 | 25% |"
    )
    assert "Ours, ES at 25% (Table 7) | 0.565" in autopipe
    assert mine.endswith("| 0.000 | 0% | – | | | | |")


def _run(*argv):
    return subprocess.run(
        [sys.executable, str(SCRIPT), *map(str, argv)], capture_output=True, text=True, check=False
    )


def test_bad_results_files_are_refused_by_name_without_a_traceback(tmp_path):
    header_only = tmp_path / "header.csv"
    header_only.write_text(",".join(COLUMNS) + "\n")
    other = tmp_path / "nmt.csv"
    pd.DataFrame([dict.fromkeys(COLUMNS, 0) | {"benchmark": "nmt"}]).to_csv(other, index=False)
    (tmp_path / "bad.csv").write_text('a,b\n"unterminated\n')
    (tmp_path / "other.csv").write_text("a,b\n1,2\n")
    expected = {
        tmp_path / "missing.csv": "not a file",
        tmp_path: "not a file",
        tmp_path / "bad.csv": "not a results.csv of `autopipe bench`",
        tmp_path / "other.csv": r"lacks the columns \['benchmark'",
        header_only: "has no rows",
        other: r"holds results of \['nmt'\], not 'post-training'",
    }
    for path, message in expected.items():
        done = _run(path)
        assert done.returncode == 2 and "Traceback" not in done.stderr
        assert re.search(f"{re.escape(str(path))}: {message}", done.stderr), done.stderr
