"""The ``post-training`` benchmark: a replay of a (tiny) corpus v2 generated for real."""

from __future__ import annotations

import math

import numpy as np
import optuna
import pandas as pd
import pytest
from conftest import TINY_V2_DATASETS as DATASETS
from optuna.trial import TrialState

from objectives.post_training.replay import RUNGS, load_post_training
from objectives.registry import POST_TRAINING_JOURNAL, load_benchmark, post_training_group
from optuna_autopipe.bench.harness import BenchSpec, run_bench
from optuna_autopipe.early_stop import CHECKPOINT_ATTR, PROMOTED_FROM_ATTR, verify

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def root(tiny_v2):
    """A data directory holding a corpus v2 journal: 2 datasets x 4 tiny runs."""
    return tiny_v2[1]


@pytest.fixture(scope="module")
def tasks(root):
    return {t.name: t for t in load_post_training(root / POST_TRAINING_JOURNAL)}


def test_each_dataset_replays_its_recorded_runs(tasks, root):
    assert sorted(tasks) == sorted(DATASETS)
    task = tasks["yesno"]
    configs, scores = task.pool()
    assert len(configs) == 4 and scores.shape == (4,)
    assert task.n_steps == len(RUNGS) == 3
    assert task.dataset_features["simple.rl_answer_yes_no_share"] == 1.0
    for config, score in zip(configs, scores, strict=True):
        assert task.resolve(config) == config and task.true_score(config) == score
    # an unrecorded configuration maps to a recorded one
    other = {name: dist.choices[0] for name, dist in task.search_space.items()}
    assert task.resolve(other) in configs
    benchmark = load_benchmark("post-training", data_dir=root)
    assert benchmark.groups == {"compare-swap": "compare", "yesno": "yesno"}
    assert post_training_group("compare+retrieval-swap") == "compare+retrieval"


def _recorder(evaluations):
    return lambda trial, evaluation: evaluations.__setitem__(trial.number, evaluation)


def _run(task, config, **options):
    study = optuna.create_study(direction="maximize")
    study.enqueue_trial(config)
    evaluations = {}
    study.optimize(
        task.objective(seed=0, on_evaluation=_recorder(evaluations), **options), n_trials=1
    )
    return study, evaluations


def test_a_full_run_reports_every_rl_rung_and_costs_one_run(tasks):
    task = tasks["compare-swap"]
    config = task.pool()[0][0]
    run = task.run_of(config)
    study, evaluations = _run(task, config)
    (trial,) = study.trials
    assert trial.state == TrialState.COMPLETE and trial.value == run.scores[-1]
    assert trial.intermediate_values == {k + 1: s for k, s in enumerate(run.scores)}
    assert evaluations[0].fidelity == pytest.approx(1.0)
    assert evaluations[0].cost == pytest.approx(1.0)
    assert evaluations[0].cost_real == pytest.approx(run.full_seconds)


def test_an_early_stop_is_inside_sft_and_its_promotion_pays_only_the_rest(tasks):
    task = tasks["compare-swap"]
    config = task.pool()[0][1]
    run = task.run_of(config)
    study, evaluations = _run(task, config, fraction=0.5)
    stopped = study.trials[0]
    assert stopped.state == TrialState.PRUNED
    half = math.ceil(0.5 * run.sft_steps)
    assert stopped.user_attrs[CHECKPOINT_ATTR] == f"replay:0:{half}"
    assert math.isnan(evaluations[0].value)  # no score before any evaluation
    assert evaluations[0].cost_real == pytest.approx(run.sft_seconds * half / run.sft_steps)
    verify(study, stopped.params)
    study.optimize(task.objective(seed=0, on_evaluation=_recorder(evaluations)), n_trials=1)
    promoted = study.trials[1]
    assert promoted.state == TrialState.COMPLETE and promoted.value == run.scores[-1]
    total = evaluations[0].cost_real + evaluations[1].cost_real
    assert total == pytest.approx(run.full_seconds)


def test_a_pruner_stops_a_run_at_an_rl_rung(tasks):
    task = tasks["yesno"]
    config = task.pool()[0][2]
    run = task.run_of(config)

    class PruneAtFirstRung(optuna.pruners.BasePruner):
        def prune(self, study, trial):
            return True

    study = optuna.create_study(direction="maximize", pruner=PruneAtFirstRung())
    study.enqueue_trial(config)
    evaluations = {}
    study.optimize(task.objective(seed=0, on_evaluation=_recorder(evaluations)), n_trials=1)
    assert study.trials[0].state == TrialState.PRUNED
    assert evaluations[0].value == run.scores[0]  # the 25% rung
    assert evaluations[0].cost_real == pytest.approx(run.seconds_at(0, 1))
    # promoted from that rung: it resumes after it, through the other rungs
    checkpoint = task.checkpoint(0, 1, config)
    assert checkpoint == f"replay:0:{run.sft_steps + 1}"
    study.enqueue_trial(config, user_attrs={PROMOTED_FROM_ATTR: 0, CHECKPOINT_ATTR: checkpoint})
    study.pruner = optuna.pruners.NopPruner()
    study.optimize(task.objective(seed=0, on_evaluation=_recorder(evaluations)), n_trials=1)
    promoted = study.trials[1]
    assert promoted.state == TrialState.COMPLETE and promoted.value == run.scores[-1]
    assert sorted(promoted.intermediate_values) == [2, 3]
    assert evaluations[1].cost_real == pytest.approx(run.full_seconds - run.seconds_at(0, 1))


def test_the_bench_runs_the_papers_methods_on_the_replay(root, tmp_path):
    spec = BenchSpec(
        benchmark="post-training",
        methods=("random", "tpe", "bohb", "random-es", "offline", "autopipe"),
        out=tmp_path / "out",
        budget=3,
        seeds=1,
        workers=1,
        data_dir=str(root),
    )
    table = pd.read_csv(run_bench(spec).results)
    assert set(table["method"]) == set(spec.methods)
    assert set(table["dataset"]) == set(DATASETS)
    assert np.isfinite(table["regret"]).all() and (table["regret"] >= -1e-12).all()
    assert (table["cost"] <= spec.budget + 1e-9).all()


def _work(folder, names):
    return [n for n in names if n == "work"]  # checkpoints: not part of a generation's record


def test_a_bundled_corpus_is_what_the_benchmark_reads_without_data(
    root, tmp_path, monkeypatch, capfd
):
    import json
    import shutil

    from objectives.post_training import bundle
    from optuna_autopipe.corpus import Corpus

    with pytest.raises(FileNotFoundError, match=r"generation\.json not found"):
        bundle.bundle(tmp_path / "nothing-generated", tmp_path / "bundled")
    # a generation still running: its journal ends in a record being written
    running = shutil.copytree(root / "post-training", tmp_path / "running", ignore=_work)
    with (running / "runs.journal").open("ab") as journal_file:
        journal_file.write(b'{"op_code": 5, "worker_id": "x", "trial_id"')
    written = bundle.bundle(running, tmp_path / "bundled")
    generation = root / "post-training"
    assert [p.name for p in written] == [*bundle.FILES, bundle.JOURNAL_XZ]  # no -base models
    shipped = Corpus.load(tmp_path / "bundled" / "corpus.jsonl")
    assert sorted(d.name for d in shipped.datasets) == sorted(f"mini-{n}" for n in DATASETS)
    record = json.loads((tmp_path / "bundled" / "generation.json").read_text())
    assert record["status"] == "finished" and record["bundled"]["runs_complete"] == 8
    assert "| compare-swap | 4 |" in (tmp_path / "bundled" / "report.md").read_text()
    packed = tmp_path / "bundled" / bundle.JOURNAL_XZ
    assert packed.stat().st_size < (generation / "runs.journal").stat().st_size
    monkeypatch.setenv("AUTOPIPE_CACHE", str(tmp_path / "cache"))
    journal = bundle.bundled_journal(tmp_path / "bundled")
    assert journal.read_bytes() == (generation / "runs.journal").read_bytes()
    assert bundle.bundled_journal(tmp_path / "bundled") == journal  # decompressed once
    monkeypatch.setattr(bundle, "BUNDLED", tmp_path / "bundled")
    empty = tmp_path / "no-data"
    empty.mkdir()  # a data folder without a post-training corpus
    capfd.readouterr()
    benchmark = load_benchmark("post-training", data_dir=empty)
    assert "replaying the corpus bundled with the package" in capfd.readouterr().err
    monkeypatch.delenv("AUTOPIPE_DATA", raising=False)  # no data folder chosen: the same
    default = load_benchmark("post-training")
    assert "replaying the corpus bundled with the package" in capfd.readouterr().err
    assert [t.name for t in default.tasks] == [t.name for t in benchmark.tasks]
    own = load_benchmark("post-training", data_dir=root)
    assert [t.name for t in benchmark.tasks] == [t.name for t in own.tasks]
    for mine, theirs in zip(benchmark.tasks, own.tasks, strict=True):
        np.testing.assert_array_equal(mine.pool()[1], theirs.pool()[1])
    monkeypatch.setattr(bundle, "BUNDLED", tmp_path / "nothing")
    with pytest.raises(FileNotFoundError, match="corpus journal"):
        load_benchmark("post-training", data_dir=empty)


def test_seed_spread_reruns_a_run_a_killed_process_left_running(root, tiny_v2, tmp_path):
    import shutil

    from objectives.post_training.corpus_report import SEEDS_SUFFIX, seed_spread
    from objectives.post_training.mini_corpus import RUN_INDEX_ATTR, journal

    corpus, _ = tiny_v2
    out = shutil.copytree(root / "post-training", tmp_path / "corpus", ignore=_work)
    first = seed_spread(out, "yesno", seeds=(1,), corpus=corpus)
    picks = sorted({t.user_attrs[RUN_INDEX_ATTR] for t in first.trials})
    # a seed-2 run of the first pick, killed mid-run
    study = optuna.load_study(study_name="mini-yesno" + SEEDS_SUFFIX, storage=journal(out))
    study.enqueue_trial(first.trials[0].params, user_attrs={RUN_INDEX_ATTR: picks[0]})
    lost = study.ask()
    lost.set_user_attr("seed", 2)
    again = seed_spread(out, "yesno", seeds=(1, 2), corpus=corpus)
    assert again.trials[lost.number].state == TrialState.FAIL
    done = {
        (t.user_attrs[RUN_INDEX_ATTR], t.user_attrs["seed"])
        for t in again.trials
        if t.state == TrialState.COMPLETE
    }
    assert done == {(index, seed) for index in picks for seed in (1, 2)}


def test_a_second_training_seed_scores_each_configuration_by_the_mean(root, tiny_v2, tmp_path):
    import json
    import shutil

    from objectives.post_training.corpus_report import report, seed_noise
    from objectives.post_training.mini_corpus import (
        RUN_INDEX_ATTR,
        config_key,
        generate,
        journal,
        save_corpus,
        study_name,
    )
    from objectives.post_training.objective import RL_FIDELITY_ATTR
    from optuna_autopipe.corpus import Corpus

    corpus, _ = tiny_v2
    out = shutil.copytree(root / "post-training", tmp_path / "corpus", ignore=_work)
    # three of yesno's four configurations get a second training seed
    generate(out, corpus=corpus, runs=3, workers=1, datasets=["yesno"], training_seeds=2)
    storage = journal(out)
    first = optuna.load_study(study_name=study_name("yesno"), storage=storage)
    second = optuna.load_study(study_name=study_name("yesno", 1), storage=storage)
    assert second.study_name == "mini-yesno/seed-1"
    assert [t.user_attrs["seed"] for t in second.trials] == [1, 1, 1]
    assert all(t.state == TrialState.COMPLETE for t in second.trials)
    assert len(first.trials) == 4  # the first seed's runs are not redone
    for t in second.trials:
        assert t.params == first.trials[t.user_attrs[RUN_INDEX_ATTR]].params
    record = json.loads((out / "generation.json").read_text())
    assert record["training_seeds"] == [0, 1]
    assert record["runs_complete_by_seed"] == {"0": 4, "1": 3}
    # Tiny random models score 0 everywhere: a third seed with made-up scores (its runs'
    # other records copied from seed 0) shows what is averaged, on two configurations
    third = optuna.create_study(study_name=study_name("yesno", 2), storage=storage)
    made_up = {}
    for index, score in ((0, 0.6), (2, 0.9)):
        own = first.trials[index]
        rungs = {
            k: {**v, "score": score / 2 if k == "0.5" else score}
            for k, v in own.user_attrs[RL_FIDELITY_ATTR].items()
        }
        third.add_trial(
            optuna.trial.create_trial(
                params=own.params,
                distributions=own.distributions,
                value=score,
                user_attrs={**own.user_attrs, RL_FIDELITY_ATTR: rungs},
            )
        )
        made_up[config_key(own.params)] = score
    seeds = {
        config_key(t.params): 3 if index in (0, 2) else 2 if index == 1 else 1
        for index, t in enumerate(first.trials)
    }
    mean = {key: made_up.get(key, 0.0) / seeds[key] for key in seeds}
    save_corpus(out, ["yesno"])
    saved = Corpus.load(out / "corpus.jsonl").dataset("mini-yesno")
    assert {config_key(c): s for c, s in zip(saved.configs, saved.scores, strict=True)} == (
        pytest.approx(mean)
    )
    task = {t.name: t for t in load_post_training(out / "runs.journal")}["yesno"]
    configs, scores = task.pool()
    assert {config_key(c): s for c, s in zip(configs, scores, strict=True)} == pytest.approx(mean)
    run = task.run_of(first.trials[0].params)
    assert run.scores == pytest.approx((0.2, 0.1, 0.2))  # 25%, 50%, 100% of GRPO
    assert run.sft_seconds == first.trials[0].user_attrs["autopipe:cost"]["sft"]["seconds"]
    (row,) = [line for line in seed_noise(storage, ["yesno"]) if line.startswith("| yesno")]
    sd = {0: np.std([0, 0, 0.6], ddof=1), 1: 0.0, 2: np.std([0, 0, 0.9], ddof=1)}
    cells = row.split(" | ")
    assert cells[1:5] == ["4", "3", "0.300", "0.100"]
    assert float(cells[5]) == pytest.approx(np.sqrt(np.mean([v**2 for v in sd.values()])), abs=1e-3)
    assert float(cells[6]) == pytest.approx(np.std([0.2, 0.0, 0.3], ddof=1), abs=1e-3)
    assert seed_noise(storage, ["compare-swap"]) == []  # one seed only
    # the report's tables read the same means: scores, and after SFT (rung "0") as after RL
    summary, rest = report(out, ["yesno"]).split("Two stages:")
    two_stages = rest.split("Training seeds:")[0]
    (row,) = [line for line in summary.splitlines() if line.startswith("| yesno |")]
    assert row == "| yesno | 4 | 0 | 0.125 | 0.000 | 0.100 | 0.300 |"
    (row,) = [line for line in two_stages.splitlines() if line.startswith("| yesno |")]
    assert row.split(" | ")[1:5] == ["4", "0.125 / 0.300", "0.125 / 0.300", "+0.000"]
