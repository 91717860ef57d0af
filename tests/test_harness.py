from __future__ import annotations

import dataclasses
import gzip
import json
import os
import pickle
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import optuna
import pandas as pd
import pytest
from optuna.storages.journal import JournalFileBackend
from scipy.stats import spearmanr

from objectives import data_root
from optuna_autopipe.bench.harness import BenchSpec, outcome, run_bench
from optuna_autopipe.bench.methods import REVISIONS, Context, get_method, method_names
from optuna_autopipe.bench.offline_method import offline_ranker
from optuna_autopipe.bench.peer_env import PEERS
from optuna_autopipe.bench.prior_noise import distort
from optuna_autopipe.bench.report import COLUMNS, summarise
from optuna_autopipe.cli import main
from optuna_autopipe.corpus import Corpus
from optuna_autopipe.ensemble import TreeParams
from optuna_autopipe.ranker import Ranker

DATASETS = ("ted-ru-en", "ted-zh-en")
NMT_X = ["bench", "--benchmark", "nmt", "--out", "X"]


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


def test_without_a_full_fidelity_result_the_selection_compares_runs_at_the_same_level(nmt):
    """Runs of different lengths stopped at the same level have different fidelities (3 of 19
    checkpoints is more of a run than 3 of 28): the selection compares the level's runs by
    value, not the shortest run, and the record says no run reached full fidelity."""
    from objectives.replay import Evaluation

    def run(value: float, steps: int, total: int, name: str) -> Evaluation:
        return Evaluation(
            config={"name": name},
            steps=np.zeros(steps),
            value=value,
            true_score=value,
            fidelity=steps / total,
            cost=steps / total,
            cost_real=1.0,
        )

    evaluations = {
        0: run(32.4, 3, 19, "short run, poor"),
        1: run(18.0, 3, 28, "long run, good"),
        2: run(15.0, 2, 10, "a lower level"),
        3: run(float("nan"), 4, 20, "diverged at the furthest level"),
    }
    ctx = Context(
        task=nmt.task("ted-ru-en"),
        offline=[],
        seed=0,
        budget=1,
        evaluations=evaluations,
        study_name="nmt/ted-ru-en/x/seed0",
    )
    record = outcome(optuna.create_study(), ctx, protocol="grouped")
    assert record["selected"] == {"name": "long run, good"}
    assert record["full_fidelity"] is False
    table = pd.DataFrame(
        [
            {"method": "dehb", "dataset": "d", "full_fidelity": False, "normalized_regret": 1.0},
            {"method": "dehb", "dataset": "e", "full_fidelity": True, "normalized_regret": 0.0},
        ]
    )
    assert "dehb: 1 of 2" in _partial_line(table)


def _partial_line(table: pd.DataFrame) -> str:
    """The summary's line on studies without a full-fidelity result, from a minimal table."""
    full = table.reindex(columns=COLUMNS)
    full[["score", "regret", "cost", "cost_real", "n_evals"]] = 0.0
    full["cost_unit"] = "s"
    full["regret_at_anchor_cost"] = np.nan
    spec = BenchSpec(benchmark="nmt", methods=("dehb",), out=Path("."), seeds=1, workers=1)
    text = summarise(full, spec=spec, wall_seconds=0.0)
    return next(line for line in text.splitlines() if line.startswith("Studies without"))


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


def test_a_bench_into_a_journal_file_stores_there_and_resumes_there(tmp_path, capsys):
    journal = tmp_path / "bench.journal"
    journal.touch()  # an existing journal file, as `autopipe recommend` reads one
    argv = [*NMT_X[:-1], str(tmp_path / "out"), "--methods", "random", "--storage", str(journal)]
    argv += ["--datasets", DATASETS[0], "--seeds", "2", "--budget", "2", "--workers", "1"]
    assert main(argv) == 0
    assert f"optuna-dashboard {journal}" in capsys.readouterr().out
    storage = optuna.storages.JournalStorage(JournalFileBackend(str(journal)))
    names = {s.study_name for s in optuna.get_all_study_summaries(storage)}
    assert names == {f"nmt/{DATASETS[0]}/random/seed{k}" for k in (0, 1)}
    written = journal.read_bytes()
    assert main(argv) == 0
    assert journal.read_bytes() == written  # resumed: nothing to run, nothing written


@pytest.mark.slow
def test_ctrl_c_stops_the_run_in_one_line_and_a_rerun_resumes(tmp_path):
    """Ctrl-C reaches the command and its worker processes; only the command answers, with
    what is stored, and every study it stored is kept for the rerun."""
    out = tmp_path / "out"
    argv = [sys.executable, "-m", "optuna_autopipe.cli", *NMT_X[:-1], str(out)]
    argv += ["--methods", "tpe,bohb", "--seeds", "2", "--budget", "5", "--workers", "2"]
    argv += ["--data-dir", str(data_root())]
    url = f"sqlite:///{out / 'bench.db'}"

    def finished() -> dict[str, int]:
        summaries = optuna.get_all_study_summaries(url, include_best_trial=False)
        return {s.study_name: s._study_id for s in summaries if "bench" in s.user_attrs}

    # a shell's background job would ignore SIGINT: the command gets the default handling
    run = subprocess.Popen(
        argv,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    seen: list[str] = []
    reader = threading.Thread(target=lambda: seen.extend(iter(lambda: run.stderr.read(1), "")))
    reader.start()
    deadline = time.monotonic() + 300
    try:
        while not re.search(r"\| [1-9]\d*/24 \[", "".join(seen)):  # a study is stored
            assert run.poll() is None and time.monotonic() < deadline, "".join(seen)
            time.sleep(0.2)
        os.killpg(run.pid, signal.SIGINT)
        run.wait(timeout=120)
    finally:
        if run.poll() is None:
            os.killpg(run.pid, signal.SIGKILL)  # the command and its workers
    reader.join()
    err = "".join(seen)
    stored = finished()
    assert run.returncode == 130 and "Traceback" not in err, err
    said = f"autopipe: interrupted: {len(stored)} of 24 studies stored in {url}; rerun the same "
    assert err.splitlines()[-1] == said + "command to resume."
    assert 0 < len(stored) < 24
    done = subprocess.run(argv, capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stderr
    resumed = finished()
    assert len(resumed) == 24 and all(resumed[name] == sid for name, sid in stored.items())
    running = [
        t
        for name in resumed
        for t in optuna.load_study(study_name=name, storage=url).trials
        if t.state == optuna.trial.TrialState.RUNNING
    ]
    assert running == []


def test_studies_of_an_earlier_method_revision_are_refused_not_reused(small_run, monkeypatch):
    spec, _ = small_run
    storage = optuna.storages.get_storage(spec.storage_url)
    summaries = {s.study_name: s for s in optuna.get_all_study_summaries(storage)}
    assert summaries["nmt/ted-ru-en/tpe/seed0"].user_attrs["bench"]["revision"] == 1
    monkeypatch.setitem(REVISIONS, "tpe", 2)  # as if tpe's defaults had changed
    stale = r"(?s)4 finished studies .*tpe/seed0: revision 1, 'tpe' is at revision 2\n"
    stale += ".* new --storage"
    with pytest.raises(ValueError, match=stale):
        run_bench(spec)
    after = optuna.get_all_study_summaries(storage)
    assert {s.study_name: s._study_id for s in after} == {
        name: s._study_id for name, s in summaries.items()
    }  # nothing deleted or rewritten


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
            ["bench", "--benchmark", "nmt", "--methods", "autopipe-lower-half", "--out", "X"],
            "'autopipe-lower-half' is now 'autopipe'",
        ),
        (
            ["bench", "--benchmark", "nmt", "--methods", "tpe", "--out", "X", "--datasets", "x"],
            "'x'",
        ),
        (["bench", "--benchmark", "nmt", "--out", "X", "--budget", "0"], "must be >= 1"),
        (["bench", "--benchmark", "nmt", "--out", "X", "--frobnicate"], "unrecognized arguments"),
        # "--methods nope": were --sources accepted, the run would stop at once on the method.
        (
            [*NMT_X, "--methods", "nope", "--sources", "3"],
            "argument --sources: only with --protocol few-source",
        ),
        (
            [*NMT_X, "--methods", "nope", "--protocol", "lodo", "--sources", "3"],
            "argument --sources: only with --protocol few-source",
        ),
        ([*NMT_X, "--prior-noise", "loud"], "invalid choice: 'loud'"),
        ([*NMT_X, "--protocol", "loo"], "invalid choice: 'loo'"),
        ([*NMT_X, "--methods", "random", "--protocol", "few-source", "--sources", "4"], "K = 4"),
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


def _help_section(text: str, title: str) -> list[str]:
    """The comma-separated names listed under ``title`` in ``autopipe bench --help``."""
    section = text.split(f"\n{title}\n", 1)[1].split("\n\n", 1)[0]
    return [name.strip() for name in section.split(",")]


def test_bench_help_lists_every_method_and_the_peers(capsys, monkeypatch):
    monkeypatch.setenv("COLUMNS", "60")  # a narrow terminal must not split a name
    with pytest.raises(SystemExit) as exit_:
        main(["bench", "--help"])
    assert exit_.value.code == 0
    out = capsys.readouterr().out
    available = _help_section(out, "available methods:")
    assert available == method_names()
    peers = ["asha-cts", "dehb", "hyper-tune", "mobster", "priorband"]
    assert {*peers, "llm-desc", "llm-history", "autopipe-fixed-lambda"} <= set(available)
    title = "of which peers (run in the environment `make peers` builds):"
    assert _help_section(out, title) == sorted(PEERS) == peers
    assert set(_help_section(out, "default methods:")) < set(available)


@pytest.mark.parametrize(("n", "plural"), [(1, False), (2, True)])
def test_the_summary_counts_in_the_right_number(n, plural, tmp_path):
    datasets = DATASETS[:n]
    table = pd.DataFrame(
        {
            "method": "random",
            "dataset": list(datasets),
            "normalized_regret": 0.5,
            "score": 1.0,
            "regret": 0.1,
            "cost": 1.0,
            "cost_real": 1.0,
            "n_evals": 1,
            "cost_unit": "full runs",
            "regret_at_anchor_cost": np.nan,
        }
    )
    spec = BenchSpec(
        benchmark="nmt",
        methods=("random",),
        out=tmp_path,
        budget=n,
        seeds=n,
        datasets=datasets,
        protocol="few-source",
        sources=n,
        workers=n,
    )
    text = summarise(table, spec=spec, wall_seconds=1.0)
    s = "s" if plural else ""
    assert f"(sources: {n} dataset{s} of other groups," in text
    assert f"Budget {n} full evaluation{s}, {n} seed{s}, {n} dataset{s}. " in text
    assert f", {n} worker process{'es' if plural else ''}, Python " in text


@pytest.mark.parametrize(("ran", "trials"), [(1, "1 trial"), (3, "3 trials")])
def test_the_worker_counts_its_trials_in_the_right_number(ran, trials, capsys, monkeypatch):
    monkeypatch.setattr("optuna_autopipe.worker.worker_main", lambda *a, **k: ran)
    argv = ["worker", "--storage", "s.log", "--study", "st", "--objective", "m:f"]
    assert main([*argv, "--n-trials", "5"]) == 0
    assert f": ran {trials} of study 'st'" in capsys.readouterr().out


def _source_spec(storage: str, out: Path, protocol: str) -> BenchSpec:
    return BenchSpec(
        benchmark="nmt",
        methods=("random", "global"),
        out=out,
        budget=2,
        seeds=2,
        datasets=DATASETS,
        protocol=protocol,
        storage=storage,
        workers=1,
    )


@pytest.fixture(scope="module")
def source_runs(tmp_path_factory):
    """few-source, then single-source, into ONE storage."""
    root = tmp_path_factory.mktemp("sources")
    storage = f"sqlite:///{root / 'bench.db'}"
    specs = [_source_spec(storage, root / p, p) for p in ("few-source", "single-source")]
    return root, [(spec, run_bench(spec)) for spec in specs]


def test_source_protocols_record_their_sources_per_seed(source_runs, nmt):
    _, runs = source_runs
    for spec, outputs in runs:
        table = pd.read_csv(outputs.results)
        assert len(table) == len(DATASETS) * 2 * 2
        assert (table.protocol == spec.protocol).all() and (table.prior_noise == "none").all()
        learns = table[table.method == "global"]  # random learns nothing: no sources
        assert (table[table.method == "random"].n_sources == 0).all()
        assert table[table.method == "random"].sources.isna().all()
        assert (learns.n_sources == (2 if spec.protocol == "few-source" else 1)).all()
        for row in learns.itertuples():
            expected = nmt.offline(row.dataset, spec.protocol, replicate=row.seed)
            assert row.sources == ";".join(t.name for t in expected)
            assert all(nmt.groups[d] != "ted" for d in row.sources.split(";"))
        for _, rows in learns.groupby("dataset"):
            assert rows.set_index("seed").sources[0] != rows.set_index("seed").sources[1]


def test_summary_names_the_setting_and_each_methods_worst_dataset(source_runs):
    _, runs = source_runs
    for spec, outputs in runs:
        text = outputs.summary.read_text()
        tag = "few-source-2" if spec.protocol == "few-source" else "single-source"
        assert text.startswith(f"# nmt: protocol `{tag}` (sources: ")
        assert "prior noise `none`" in text.splitlines()[0]
        assert "| worst dataset | datasets > 1.0 |" in text
        table = pd.read_csv(outputs.results)
        means = table.groupby(["method", "dataset"]).normalized_regret.mean()
        for method in ("random", "global"):
            regrets = means[method]
            worst = f"| {regrets.idxmax()}: {regrets.max():.3f} | {int((regrets > 1).sum())} |"
            line = next(li for li in text.splitlines() if li.startswith(f"| {method} | "))
            assert worst in line


def test_protocols_share_one_storage_without_colliding(source_runs):
    root, _ = source_runs
    names = {s.study_name for s in optuna.get_all_study_summaries(f"sqlite:///{root / 'bench.db'}")}
    # global learns from the sources: one study per setting; random does not: shared
    assert len(names) == (2 + 1) * len(DATASETS) * 2
    assert "nmt/few-source-2/ted-ru-en/global/seed1" in names
    assert "nmt/single-source/ted-ru-en/global/seed1" in names
    assert "nmt/ted-ru-en/random/seed1" in names


def test_protocols_in_one_storage_share_the_reference_best(source_runs, tmp_path):
    """A better score found by a single-source study raises the bar of few-source rows too."""
    root, _ = source_runs
    shutil.copy(root / "bench.db", tmp_path / "bench.db")
    storage = f"sqlite:///{tmp_path / 'bench.db'}"
    study = optuna.load_study(
        study_name="nmt/single-source/ted-ru-en/global/seed0", storage=storage
    )
    record = study.user_attrs["bench"]
    study.set_user_attr("bench", {**record, "best_evaluated": 1.0})  # below every pool score
    studies = len(optuna.get_all_study_summaries(storage))
    for protocol in ("few-source", "single-source"):
        table = pd.read_csv(run_bench(_source_spec(storage, tmp_path / protocol, protocol)).results)
        assert (table[table.dataset == "ted-ru-en"].best_score == 1.0).all()
        assert (table[table.dataset == "ted-zh-en"].best_score > 1.0).all()
    assert len(optuna.get_all_study_summaries(storage)) == studies  # resumed: nothing re-run


def test_cli_runs_few_source_with_prior_noise_under_its_own_study_name(tmp_path):
    out = tmp_path / "out"
    argv = ["bench", "--benchmark", "nmt", "--methods", "offline", "--budget", "1"]
    argv += ["--seeds", "1", "--datasets", "ted-ru-en", "--workers", "1", "--out", str(out)]
    assert (
        main([*argv, "--protocol", "few-source", "--sources", "3", "--prior-noise", "inverted"])
        == 0
    )
    table = pd.read_csv(out / "results.csv")
    assert table.n_sources.tolist() == [3] and table.prior_noise.tolist() == ["inverted"]
    (summary,) = optuna.get_all_study_summaries(f"sqlite:///{out / 'bench.db'}")
    assert summary.study_name == "nmt/few-source-3+inverted/ted-ru-en/offline/seed0"


@pytest.fixture(scope="module")
def small_ranker(nmt):
    tasks = [nmt.task("ted-ru-en"), nmt.task("robust19-en-ja")]
    corpus = Corpus.from_tasks(tasks, groups=nmt.groups)
    return Ranker(params=TreeParams(n_estimators=20), n_models=1).fit(corpus)


def test_inverted_prior_negates_the_raw_scores(small_ranker, nmt):
    task = nmt.task("material-sw-en")
    configs, features = task.pool()[0], task.dataset_features
    inverted = distort(small_ranker, "inverted", seed=0)
    assert distort(small_ranker, "none", seed=0) is small_ranker
    raw = small_ranker.raw_scores(configs, features)
    assert np.ptp(raw) > 0
    assert np.array_equal(inverted.raw_scores(configs, features), -raw)
    assert np.allclose(inverted.score(configs, features), -small_ranker.score(configs, features))
    for name in ("encoder", "kept_columns", "dataset_features"):
        assert getattr(inverted, name) == getattr(small_ranker, name)
    copy = pickle.loads(pickle.dumps(inverted))
    assert np.array_equal(copy.raw_scores(configs, features), -raw)
    with pytest.raises(ValueError, match="'none', 'inverted', 'shuffled'"):
        distort(small_ranker, "loud", seed=0)


def test_shuffled_prior_is_a_fixed_uninformative_score_per_configuration(small_ranker, nmt):
    task = nmt.task("material-sw-en")
    configs, features = task.pool()[0], task.dataset_features
    shuffled = distort(small_ranker, "shuffled", seed=7)
    scores = shuffled.raw_scores(configs, features)
    assert np.array_equal(shuffled.raw_scores(configs[::-1], features), scores[::-1])
    assert shuffled.raw_scores([dict(reversed(configs[5].items()))], features)[0] == scores[5]
    assert np.array_equal(
        pickle.loads(pickle.dumps(shuffled)).raw_scores(configs, features), scores
    )
    assert len(np.unique(scores)) == len(configs) and ((scores >= 0) & (scores < 1)).all()
    rho = spearmanr(scores, small_ranker.raw_scores(configs, features)).statistic
    assert abs(rho) < 0.15
    other = distort(small_ranker, "shuffled", seed=8).raw_scores(configs, features)
    assert abs(spearmanr(scores, other).statistic) < 0.15  # the seed picks the permutation


def test_offline_method_runs_the_distorted_priors_top_configuration(nmt):
    target = "ted-ru-en"
    offline = nmt.offline(target, "few-source")
    configs = nmt.task(target).pool()[0]
    raw = offline_ranker(offline).raw_scores(configs, nmt.task(target).dataset_features)
    for noise, expected in (("none", np.argmax(raw)), ("inverted", np.argmin(raw))):
        ctx = Context(
            task=nmt.task(target),
            offline=offline,
            seed=3,
            budget=1,
            evaluations={},
            study_name=f"nmt/{target}/offline/seed0",
            prior_noise=noise,
        )
        (trial,) = get_method("offline")(ctx).trials
        assert trial.params == configs[int(expected)]


@pytest.mark.slow
def test_the_anytime_column_reads_every_study_at_autopipes_spend(tmp_path):
    from optuna_autopipe.bench.report import _step

    spec = BenchSpec(
        benchmark="nmt",
        methods=("random", "autopipe"),
        out=tmp_path,
        budget=4,
        seeds=1,
        datasets=(DATASETS[0],),
        workers=1,
    )
    outputs = run_bench(spec)
    table = outputs.table.set_index("method")
    spent = table.loc["autopipe", "cost"]
    assert spent < 4  # early stops: AutoPipe spends less than the budget
    # autopipe's own value is its final regret; random's, its selection's at that spend
    assert table.loc["autopipe", "regret_at_anchor_cost"] == pytest.approx(
        table.loc["autopipe", "normalized_regret"]
    )
    storage = optuna.storages.get_storage(spec.storage_url)
    record = optuna.load_study(
        study_name=f"nmt/{DATASETS[0]}/random/seed0", storage=storage
    ).user_attrs["bench"]
    best = table.loc["random", "best_score"]
    scale = table.loc["random", "regret"] / table.loc["random", "normalized_regret"]
    points = [
        (c, None if s is None else max(0.0, s - best) / scale) for c, s in record["trajectory"]
    ]
    expected = _step(points, np.array([spent]))[0]
    assert np.isfinite(expected)
    assert table.loc["random", "regret_at_anchor_cost"] == pytest.approx(expected)
    assert "at autopipe's cost" in outputs.summary.read_text()


def test_studies_of_another_budget_are_refused_not_reused(small_run):
    spec, _ = small_run
    storage = optuna.storages.get_storage(spec.storage_url)
    before = {s.study_name: s._study_id for s in optuna.get_all_study_summaries(storage)}
    other = dataclasses.replace(spec, budget=spec.budget + 2)
    refused = rf"(?s)16 finished studies .*tpe/seed0: run with budget {spec.budget}, this run "
    refused += rf"asks for {spec.budget + 2}.* new --storage"
    with pytest.raises(ValueError, match=refused):
        run_bench(other)
    after = optuna.get_all_study_summaries(storage)
    assert {s.study_name: s._study_id for s in after} == before  # nothing deleted or rewritten
