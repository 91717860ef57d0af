from __future__ import annotations

import gzip
import json
import shutil
from pathlib import Path

import numpy as np
import optuna
import pandas as pd
import pytest

from objectives import data_root
from optuna_autopipe.bench.harness import BenchSpec, outcome, run_bench
from optuna_autopipe.bench.methods import Context, get_method
from optuna_autopipe.bench.report import COLUMNS
from optuna_autopipe.cli import main

DATASETS = ("ted-ru-en", "ted-zh-en")


@pytest.fixture(scope="module")
def small_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("bench")
    spec = BenchSpec(
        benchmark="nmt",
        methods=("random", "tpe", "global", "bohb"),
        out=out,
        budget=3,
        seeds=2,
        datasets=DATASETS,
        workers=2,
    )
    return spec, run_bench(spec)


def test_outputs_exist_with_the_required_columns(small_run):
    _spec, outputs = small_run
    table = pd.read_csv(outputs.results)
    assert list(table.columns[:12]) == COLUMNS[:12]
    assert len(table) == len(DATASETS) * 4 * 2
    assert outputs.summary.read_text().startswith("# nmt")
    assert outputs.plot.stat().st_size > 10_000


def test_regret_is_nonnegative_and_equals_selected_minus_best_when_minimising(small_run, nmt):
    _, outputs = small_run
    table = pd.read_csv(outputs.results)
    assert (table.regret >= 0).all()
    assert np.allclose(table.regret, table.score - table.best_score)
    for dataset, rows in table.groupby("dataset"):
        task = nmt.task(dataset)
        assert rows.best_score.iloc[0] == pytest.approx(task.pool()[1].min())
        scale = abs(task.pool()[1].min() - np.median(task.pool()[1]))
        assert np.allclose(rows.normalized_regret, rows.regret / scale)
        for _, row in rows.iterrows():
            assert row.score == pytest.approx(task.true_score(json.loads(row.selected)))


def test_costs_follow_the_budget(small_run):
    _, outputs = small_run
    table = pd.read_csv(outputs.results)
    by_method = table.groupby("method")
    assert (by_method.get_group("random").cost == 3).all()
    assert (by_method.get_group("global").n_evals == 1).all()
    bohb = by_method.get_group("bohb")
    assert (bohb.cost <= 3 + 1e-9).all() and (bohb.cost > 2.5).all()


def _bohb_context(task, *, seed: int, budget: int) -> Context:
    name = f"nmt/{task.name}/bohb/seed{seed}"
    return Context(task=task, offline=[], seed=seed, budget=budget, evaluations={}, study_name=name)


def test_bohb_prunes_on_the_learning_curve_and_spends_exactly_its_budget(nmt):
    ctx = _bohb_context(nmt.task("material-sw-en"), seed=0, budget=15)
    study = get_method("bohb")(ctx)
    pruned = [e for e in ctx.evaluations.values() if e.fidelity < 1]
    assert len(pruned) >= 5 and len(ctx.evaluations) > 15
    assert sum(e.cost for e in ctx.evaluations.values()) == pytest.approx(15, abs=0.1)
    record = outcome(study, ctx, protocol="grouped")
    assert record["n_evals"] == len(ctx.evaluations)
    full = [e for e in ctx.evaluations.values() if e.fidelity == 1]
    best_observed = min(full, key=lambda e: e.value)
    assert record["selected"] == best_observed.config
    assert record["score"] == best_observed.true_score


def test_bohb_is_reproducible_under_the_study_name(nmt):
    def run():
        ctx = _bohb_context(nmt.task("material-so-en"), seed=3, budget=6)
        return [(t.params, t.state) for t in get_method("bohb")(ctx).trials]

    assert run() == run()


def test_every_study_is_in_one_storage_with_cost_attrs(small_run):
    spec, _ = small_run
    names = {s.study_name for s in optuna.get_all_study_summaries(spec.storage_url)}
    assert "nmt/ted-zh-en/bohb/seed1" in names and len(names) == 16
    study = optuna.load_study(study_name="nmt/ted-ru-en/tpe/seed0", storage=spec.storage_url)
    assert len(study.trials) == 3
    assert all({"fidelity", "cost", "cost_real"} <= set(t.user_attrs) for t in study.trials)


def test_a_second_run_resumes_without_redoing_studies(small_run):
    spec, outputs = small_run
    storage = optuna.storages.get_storage(spec.storage_url)
    optuna.delete_study(study_name="nmt/ted-ru-en/random/seed1", storage=storage)
    before = {s.study_name: s._study_id for s in optuna.get_all_study_summaries(storage)}
    again = run_bench(spec)
    after = {s.study_name: s._study_id for s in optuna.get_all_study_summaries(storage)}
    assert set(after) - set(before) == {"nmt/ted-ru-en/random/seed1"}
    assert all(after[name] == study_id for name, study_id in before.items())
    assert (
        pd.read_csv(again.results)
        .drop(columns="selected")
        .equals(pd.read_csv(outputs.results).drop(columns="selected"))
    )


def test_lcbench_end_to_end_maximises(tmp_path):
    spec = BenchSpec(
        benchmark="lcbench",
        methods=("random", "random1"),
        out=tmp_path,
        budget=3,
        seeds=1,
        datasets=("3945", "7593"),
        workers=1,
    )
    table = pd.read_csv(run_bench(spec).results)
    assert np.allclose(table.regret, table.best_score - table.score)
    assert (table.regret >= 0).all()


@pytest.mark.parametrize(
    ("argv", "needle"),
    [
        (["bench", "--benchmark", "mnist", "--out", "X"], "invalid choice: 'mnist'"),
        (["bench", "--benchmark", "nmt", "--methods", "hyperopt", "--out", "X"], "hyperopt"),
        (
            ["bench", "--benchmark", "nmt", "--methods", "tpe", "--out", "X", "--datasets", "x"],
            "'x'",
        ),
        (["bench", "--benchmark", "nmt", "--out", "X", "--budget", "0"], "must be >= 1"),
        (["bench", "--benchmark", "nmt", "--out", "X", "--frobnicate"], "unrecognized arguments"),
    ],
)
def test_bad_arguments_name_the_argument(argv, needle, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    try:
        code = main(argv)
    except SystemExit as exit_:
        code = exit_.code
    assert code == 2
    assert needle in capsys.readouterr().err


def _bench_argv(benchmark: str, data_dir: Path) -> list[str]:
    out = str(data_dir / "out")
    return [
        "bench",
        "--benchmark",
        benchmark,
        "--methods",
        "random",
        "--out",
        out,
        "--data-dir",
        str(data_dir),
    ]


def test_missing_data_directory_says_where_to_get_it(tmp_path, capsys):
    code = main(_bench_argv("nmt", tmp_path))
    err = capsys.readouterr().err
    assert code == 2
    assert str(tmp_path / "nmt" / "nmtlc-scratch.jsonl.gz") in err
    assert "autopipe data download" in err and "github.com/Este1le/hpo_nmt" in err


def test_corrupt_data_file_is_named(tmp_path, capsys):
    (tmp_path / "nmt").mkdir()
    (tmp_path / "nmt" / "nmtlc-scratch.jsonl.gz").write_bytes(b"not gzip at all")
    code = main(_bench_argv("nmt", tmp_path))
    err = capsys.readouterr().err
    assert code == 2 and "nmtlc-scratch.jsonl.gz is unreadable" in err


def test_corrupt_lcbench_model_is_named(tmp_path, capsys):
    source = data_root() / "lcbench-yahpo"
    target = tmp_path / "lcbench-yahpo"
    shutil.copytree(source, target, ignore=shutil.ignore_patterns("model.onnx"))
    (target / "model.onnx").write_bytes(b"\x00garbage")
    code = main(_bench_argv("lcbench", tmp_path))
    err = capsys.readouterr().err
    assert code == 2 and "model.onnx is unreadable" in err


def test_truncated_gzip_is_named(tmp_path, capsys):
    source = data_root() / "nmt" / "nmtlc-scratch.jsonl.gz"
    (tmp_path / "nmt").mkdir()
    raw = gzip.decompress(source.read_bytes())[:5000]
    (tmp_path / "nmt" / "nmtlc-scratch.jsonl.gz").write_bytes(gzip.compress(raw))
    code = main(_bench_argv("nmt", tmp_path))
    assert code == 2 and "unreadable" in capsys.readouterr().err


def test_every_method_name_resolves_in_a_fresh_process():
    """Methods registered by lazily imported modules must be listed as lazy, or a fresh
    process (a spawned bench worker, the CLI) cannot find them by name."""
    import subprocess
    import sys

    code = (
        "import importlib; from optuna_autopipe.bench import methods as m\n"
        "base = set(m.METHODS)\n"
        "for module, _ in set(m._LAZY.values()):\n"
        "    importlib.import_module(module)\n"
        "print(sorted(set(m.METHODS) - base - set(m._LAZY)), sorted(set(m._LAZY) - set(m.METHODS)))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[] []"
