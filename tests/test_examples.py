from __future__ import annotations

import runpy
import sys
from pathlib import Path

import pytest

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"


@pytest.mark.parametrize(
    ("script", "expected"),
    [
        ("fit_prior_from_studies.py", "optuna-dashboard {out}"),
        ("early_stop_any_loop.py", "optuna-dashboard {out}"),
        ("compare_with_tpe.py", "optuna-dashboard sqlite:///{out}"),
        ("quickstart.py", "recommended {{"),
    ],
)
def test_example_runs(script, expected, tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(sys, "argv", [script, str(tmp_path)])
    runpy.run_path(str(EXAMPLES / script), run_name="__main__")
    assert expected.format(out=tmp_path) in capsys.readouterr().out
