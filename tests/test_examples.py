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


@pytest.mark.slow
def test_real_pipeline_example_runs_offline(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    monkeypatch.setenv("AUTOPIPE_CACHE", str(tmp_path / "cache"))
    argv = ["real_pipeline.py", "--out", str(tmp_path), "--trials", "2"]
    monkeypatch.setattr(sys, "argv", argv)
    runpy.run_path(str(EXAMPLES / "real_pipeline.py"), run_name="__main__")
    assert "verified {" in capsys.readouterr().out
