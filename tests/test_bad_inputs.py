"""Bad inputs across the public surface: each gives an error naming the input and the fix, or a
documented fallback, and leaves the storage as it was (the table of docs/bad-inputs.md)."""

from __future__ import annotations

import importlib.util
import itertools
import json
import math
import re
from pathlib import Path
from typing import Any

import numpy as np
import optuna
import pytest
import torch
from optuna.distributions import CategoricalDistribution, FloatDistribution
from optuna.trial import TrialState
from tiny_pipeline import TINY_CONFIG

import optuna_autopipe
from objectives import BenchmarkDataError, load_benchmark
from objectives.post_training import objective as objective_module
from objectives.post_training.evaluation import EvalSuite
from objectives.post_training.objective import FAILURE_ATTR, PostTrainingObjective
from objectives.post_training.tasks import DatasetFiles, write_dataset
from optuna_autopipe.cli import main
from optuna_autopipe.corpus import Corpus, DatasetRuns
from optuna_autopipe.dynamics import DYNAMICS_ATTR, TrainingDynamics
from optuna_autopipe.early_stop import AutoPipeEarlyStop, proxy_of
from optuna_autopipe.ensemble import TreeParams
from optuna_autopipe.prior import Prior, fit_prior
from optuna_autopipe.profile import PROFILE_ATTR, DatasetProfile
from optuna_autopipe.regressor import EarlyStopRegressor
from optuna_autopipe.sampler import AutoPipeSampler

pytestmark = pytest.mark.badinput

A_CHOICES = ("p", "q", "r")
B_CHOICES = (1, 2, 3, 4)
SPACE = {"a": CategoricalDistribution(A_CHOICES), "b": CategoricalDistribution(B_CHOICES)}
GRID = [{"a": a, "b": b} for a, b in itertools.product(A_CHOICES, B_CHOICES)]
FEATURES = {"size": 1.0}


def _value(config: dict[str, Any]) -> float:
    return A_CHOICES.index(config["a"]) + 0.5 * config["b"]


def _objective(trial: optuna.trial.Trial) -> float:
    return _value({name: trial.suggest_categorical(name, d.choices) for name, d in SPACE.items()})


def _corpus(n_datasets: int) -> Corpus:
    """Datasets over SPACE whose scores shift with the feature ``size``."""
    datasets = [
        DatasetRuns(
            f"d{i}",
            "maximize",
            {"size": float(i)},
            GRID * 2,
            [_value(c) + 10 * i + 0.01 * k for k, c in enumerate(GRID * 2)],
        )
        for i in range(n_datasets)
    ]
    return Corpus(dict(SPACE), datasets)


@pytest.fixture(scope="module")
def prior() -> Prior:
    fitted = fit_prior(_corpus(3), grid=[TreeParams(n_estimators=5)], n_models=1)
    assert "size" in fitted.ranker.kept_columns
    return fitted


@pytest.fixture
def study() -> optuna.Study:
    """A study with history (two COMPLETE trials and a study attr) to keep intact."""
    study = optuna.create_study(direction="maximize", sampler=optuna.samplers.RandomSampler(0))
    study.set_user_attr("owner", "me")
    study.optimize(_objective, n_trials=2)
    return study


def _snapshot(study: optuna.Study) -> tuple[Any, ...]:
    """What a bad input must leave unchanged: the study's attrs and every trial."""
    trials = [
        (t.number, t.state, t.params, t.user_attrs, t.values, t.intermediate_values)
        for t in study.get_trials(deepcopy=True)
    ]
    return dict(study.user_attrs), trials


# --- the prior's files ------------------------------------------------------------------------


def test_missing_prior_directory_names_the_file_and_the_command(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"nowhere/ranker\.json not found.*fit-prior"):
        Prior.load(tmp_path / "nowhere")


def test_corrupt_prior_files_name_the_file_and_the_command(prior, tmp_path):
    prior.save(tmp_path)
    (tmp_path / "prior.json").write_text("[1, 2]")
    with pytest.raises(ValueError, match=r"prior\.json is not a prior record.*fit-prior"):
        Prior.load(tmp_path)
    (tmp_path / "prior.json").write_text("{broken")
    with pytest.raises(ValueError, match=r"prior\.json is not a prior record.*fit-prior"):
        Prior.load(tmp_path)
    (tmp_path / "prior.json").write_text('{"garbage": true}')
    with pytest.raises(ValueError, match=r"not a prior record \(no 'versions'.*fit-prior"):
        Prior.load(tmp_path)
    prior.save(tmp_path)
    (tmp_path / "ranker-0.json").write_text("{broken")
    with pytest.raises(ValueError, match=r"corrupt or incompatible prior.*fit-prior"):
        Prior.load(tmp_path)


def test_a_prior_from_another_minor_version_is_refused(prior, tmp_path):
    prior.save(tmp_path)
    record = json.loads((tmp_path / "prior.json").read_text())
    current = optuna_autopipe.__version__
    assert record["versions"]["optuna_autopipe"] == current
    major, minor = (int(part) for part in current.split(".")[:2])
    record["versions"]["optuna_autopipe"] = f"{major}.{minor}.999"  # a patch release: fine
    (tmp_path / "prior.json").write_text(json.dumps(record))
    assert Prior.load(tmp_path).record["versions"]["optuna_autopipe"] == f"{major}.{minor}.999"
    for other in (f"{major}.{minor + 1}.0", f"{major + 1}.{minor}.0"):
        record["versions"]["optuna_autopipe"] = other
        (tmp_path / "prior.json").write_text(json.dumps(record))
        message = f"prior.json was written by optuna-autopipe {other}; this is {current}"
        with pytest.raises(
            ValueError, match=re.escape(message) + ".*Refit with `autopipe fit-prior`"
        ):
            Prior.load(tmp_path)


# --- the search space and the dataset profile -------------------------------------------------


def test_a_search_space_lacking_prior_parameters_is_refused_before_any_trial(prior, study):
    before = _snapshot(study)
    with pytest.raises(ValueError, match=r"lacks parameters the prior scores: \['b'\].*fit-prior"):
        AutoPipeSampler(prior, FEATURES, search_space={"a": SPACE["a"]})
    assert _snapshot(study) == before


def test_an_inferred_space_lacking_prior_parameters_warns_once_and_the_study_runs(prior):
    """The objective never suggests ``b``, which the prior always saw: a branch not run yet
    looks the same, so this is a warning, not an error that would end a conditional study."""
    study = optuna.create_study(sampler=AutoPipeSampler(prior, FEATURES, seed=0))
    study.optimize(lambda t: A_CHOICES.index(t.suggest_categorical("a", A_CHOICES)), n_trials=1)
    with pytest.warns(UserWarning, match=r"lack parameters the prior scores: \['b'\].*fit-prior"):
        study.optimize(lambda t: A_CHOICES.index(t.suggest_categorical("a", A_CHOICES)), n_trials=2)
    assert [t.state for t in study.trials] == [TrialState.COMPLETE] * 3
    assert len({t.params["a"] for t in study.trials}) == 3


def test_an_unseen_categorical_choice_is_refused_before_any_trial(prior, study):
    before = _snapshot(study)
    space = {**SPACE, "a": CategoricalDistribution((*A_CHOICES, "s"))}
    with pytest.raises(ValueError, match=r"'a' has value 's'.*known choices: \['p', 'q', 'r'\]"):
        AutoPipeSampler(prior, FEATURES, search_space=space)
    with pytest.raises(ValueError, match=r"'a' has value 's'.*Refit the prior"):
        prior.score([{"a": "s", "b": 1}], FEATURES)
    assert _snapshot(study) == before


def test_a_profile_missing_prior_features_is_refused_before_any_trial(prior, study):
    before = _snapshot(study)
    for dataset in (None, {"rows": 3.0}, DatasetProfile(name="new", features={"rows": 3.0})):
        with pytest.raises(ValueError, match=r"lacks 1 feature\(s\) the prior uses: \['size'\]"):
            AutoPipeSampler(prior, dataset)
    assert _snapshot(study) == before


def test_a_nan_profile_feature_is_scored_as_missing(prior):
    profile = DatasetProfile(name="new", features={"size": None})
    assert math.isnan(profile.features["size"])
    study = optuna.create_study(direction="maximize", sampler=AutoPipeSampler(prior, profile))
    study.optimize(_objective, n_trials=4)
    assert all(t.state == TrialState.COMPLETE for t in study.trials)
    assert np.isfinite([t.user_attrs["autopipe:prior_score"] for t in study.trials]).all()


def test_infinite_or_non_numeric_profile_features_are_refused():
    with pytest.raises(ValueError, match="Feature 'size' is infinite; use NaN"):
        DatasetProfile(name="new", features={"size": math.inf})
    with pytest.raises(ValueError, match="Feature 'size' must be a number or None"):
        DatasetProfile(name="new", features={"size": "big"})


def test_a_malformed_profile_attr_names_the_study_and_leaves_it_intact(study):
    for bad in ("{not json", {"size": "big"}, [1.0]):
        study.set_user_attr(PROFILE_ATTR, bad)
        before = _snapshot(study)
        with pytest.raises(ValueError, match=rf"Study '{study.study_name}': user attr"):
            Corpus.from_studies(study._storage, [study.study_name])
        assert _snapshot(study) == before


# --- the corpus -------------------------------------------------------------------------------


def test_an_empty_corpus_or_one_of_single_runs_cannot_fit_a_prior():
    with pytest.raises(ValueError, match=r"at least 1 dataset with 2\+ runs.*0 usable of 0"):
        fit_prior(_corpus(0))
    single = Corpus(dict(SPACE), [d.take([0]) for d in _corpus(2).datasets])
    with pytest.raises(ValueError, match=r"0 usable of 2 \(fewer than 2 runs: \['d0', 'd1'\]\)"):
        fit_prior(single)


def test_an_empty_study_list_gives_an_empty_corpus_that_cannot_fit_a_prior():
    corpus = Corpus.from_studies(optuna.storages.InMemoryStorage(), [])
    with pytest.raises(ValueError, match=r"at least 1 dataset.*Add finished full-fidelity"):
        fit_prior(corpus)


@pytest.mark.parametrize("score", [math.nan, math.inf, -math.inf])
def test_non_finite_corpus_scores_are_refused_naming_the_file_and_dataset(tmp_path, score):
    with pytest.raises(ValueError, match=r"Dataset 'd0' has 1 non-finite scores.*rows \[3\]"):
        DatasetRuns("d0", "maximize", {}, GRID[:4], [1.0, 2.0, 3.0, score])
    path = tmp_path / "corpus.jsonl"
    _corpus(2).save(path)
    lines = path.read_text().splitlines()
    run = json.loads(lines[2])
    lines[2] = json.dumps({**run, "score": score})  # NaN / Infinity, as json.dumps writes them
    path.write_text("\n".join(lines) + "\n")
    with pytest.raises(ValueError, match=rf"{re.escape(str(path))}: Dataset 'd0' has 1 non-fin"):
        Corpus.load(path)


# --- what trials return and record ------------------------------------------------------------


def test_nan_fails_and_inf_completes_and_the_sampler_and_corpus_ignore_both(prior):
    sampler = AutoPipeSampler(prior, FEATURES, seed=0, n_startup=1)
    study = optuna.create_study(direction="maximize", sampler=sampler)
    bad = {0: math.nan, 1: math.inf, 2: -math.inf}
    study.optimize(lambda t: bad.get(t.number, _objective(t)), n_trials=5)
    states = [t.state for t in study.trials]
    assert states == [TrialState.FAIL] + [TrialState.COMPLETE] * 4  # Optuna: NaN -> FAIL
    assert [t.value for t in study.trials[1:3]] == [math.inf, -math.inf]
    for trial in study.trials[3:]:
        explained = [trial.user_attrs[f"autopipe:{n}"] for n in ("gp_mean", "acquisition")]
        assert np.isfinite(explained).all()
    runs = Corpus.from_studies(study._storage, [study.study_name]).dataset(study.study_name)
    assert len(runs.configs) == 2 and np.isfinite(runs.scores).all()


def test_trials_pruned_before_any_dynamics_are_ignored(prior):
    sampler = AutoPipeSampler(prior, FEATURES, seed=0)

    def pruned_early(trial: optuna.trial.Trial) -> float:
        _objective(trial)
        hook = AutoPipeEarlyStop(trial, fraction=0.5, total_steps=10)
        if trial.number == 0:
            raise optuna.TrialPruned()  # before the hook saw anything
        hook.prune()  # the study's pruner, before any step was logged
        hook.finish()
        return 0.0

    study = optuna.create_study(direction="maximize", sampler=sampler)
    study.optimize(pruned_early, n_trials=2)
    assert [t.state for t in study.trials] == [TrialState.PRUNED] * 2
    assert TrainingDynamics.from_json(study.trials[1].user_attrs[DYNAMICS_ATTR]).metrics == {}
    with pytest.raises(ValueError, match=r"nothing to recommend\. Run some trials first"):
        sampler.recommend(study)
    before = _snapshot(study)
    corpus = Corpus.from_studies(study._storage, [study.study_name])
    assert corpus.dataset(study.study_name).configs == []
    assert _snapshot(study) == before
    study.optimize(_objective, n_trials=1)  # the next suggestion is unaffected
    assert study.trials[-1].state == TrialState.COMPLETE


def test_malformed_dynamics_are_refused_by_the_parser_and_skipped_in_a_corpus(
    study, caplog, tmp_path
):
    with pytest.raises(ValueError, match=r"trial 1 is not a training-dynamics record.*total_steps"):
        TrainingDynamics.from_json('{"metrics": {}}', source="trial 1")
    broken = optuna.trial.create_trial(
        params=GRID[0], distributions=SPACE, value=1.0, user_attrs={DYNAMICS_ATTR: "{broken"}
    )
    study.add_trial(broken)
    before = _snapshot(study)
    with caplog.at_level("WARNING", logger="optuna_autopipe.corpus"):
        runs = Corpus.from_studies(study._storage, [study.study_name]).dataset(study.study_name)
    assert "trial 2 is not a training-dynamics record" in caplog.text
    assert "kept without dynamics" in caplog.text
    assert len(runs.configs) == 3 and runs.dynamics == [None] * 3
    assert _snapshot(study) == before
    path = tmp_path / "corpus.jsonl"
    _corpus(2).save(path)
    lines = path.read_text().splitlines()
    lines[2] = json.dumps({**json.loads(lines[2]), "dynamics": {"steps": 3}})
    path.write_text("\n".join(lines) + "\n")
    message = f"{path}: a run of d0 is not a training-dynamics record"
    with pytest.raises(ValueError, match=re.escape(message)):
        Corpus.load(path)


def _converging(trial: optuna.trial.Trial) -> float:
    """A run over SPACE that stops itself at step 3 of 10 (it converged), before the hook's
    cut at 5: it returns normally."""
    value = _objective(trial)
    hook = AutoPipeEarlyStop(trial, fraction=0.5, total_steps=10)
    for step in range(1, 4):
        hook.report(step, {"loss": 1.0 / step})
    hook.finish()
    return value


def test_a_run_that_stops_itself_before_total_steps_is_a_full_result(prior):
    sampler = AutoPipeSampler(prior, FEATURES, seed=0)
    study = optuna.create_study(direction="maximize", sampler=sampler)
    study.optimize(_converging, n_trials=4)
    assert [t.state for t in study.trials] == [TrialState.COMPLETE] * 4
    assert [t.user_attrs["fidelity"] for t in study.trials] == [1.0] * 4
    best = max(study.trials, key=lambda t: t.value)
    assert sampler.recommend(study) == best.params  # observed as full-fidelity results
    before = _snapshot(study)
    runs = Corpus.from_studies(study._storage, [study.study_name]).dataset(study.study_name)
    assert len(runs.configs) == 4 and all(d is not None for d in runs.dynamics)
    assert _snapshot(study) == before


def _dynamics_corpus(sizes: list[float]) -> Corpus:
    """Runs over SPACE, one dataset per size, whose loss slope carries the score."""
    datasets = []
    for i, size in enumerate(sizes):
        quality = np.random.default_rng(i).normal(0, 1, 2 * len(GRID))
        curves = [[[s, 3 - 0.1 * (1 + q) * s] for s in range(1, 11)] for q in quality]
        dynamics = [TrainingDynamics(total_steps=10, metrics={"loss": c}) for c in curves]
        scores = quality + 10 * size
        datasets.append(
            DatasetRuns(f"d{i}", "maximize", {"size": size}, GRID * 2, scores, dynamics=dynamics)
        )
    return Corpus(dict(SPACE), datasets)


def _early_stop_with(regressor: EarlyStopRegressor, **dataset: Any) -> optuna.trial.FrozenTrial:
    """One trial over SPACE stopped at step 5 of 10 by a hook holding ``regressor``."""

    def objective(trial: optuna.trial.Trial) -> float:
        value = _objective(trial)
        hook = AutoPipeEarlyStop(trial, total_steps=10, regressor=regressor, **dataset)
        for step in range(1, 11):
            if hook.report(step, {"loss": 3 - 0.1 * step}):
                break
        hook.finish()
        return value

    study = optuna.create_study(direction="maximize")
    study.optimize(objective, n_trials=1)
    return study.trials[0]


@pytest.mark.parametrize("sizes", [[1.0, 1.0, 1.0], None])  # constant, or not asked for
def test_a_regressor_reading_no_dataset_features_needs_no_dataset(sizes):
    corpus = _dynamics_corpus(sizes or [0.0, 1.0, 2.0])
    regressor = EarlyStopRegressor(target="direct", n_models=1, use_dataset_features=bool(sizes))
    regressor.fit(corpus)
    assert regressor.used_dataset_features == []
    trial = _early_stop_with(regressor)
    assert trial.state == TrialState.PRUNED and proxy_of(trial) is not None


def test_a_hook_lacking_dataset_features_its_regressor_reads_names_them():
    regressor = EarlyStopRegressor(target="direct", n_models=1).fit(_dynamics_corpus([0, 1, 2]))
    assert regressor.used_dataset_features == ["size"]
    trial = optuna.create_study().ask()
    named = r"reads 1 dataset feature\(s\) the hook was not given: \['size'\]"
    for dataset in (None, {"rows": 3.0}, DatasetProfile(name="new", features={"rows": 3.0})):
        with pytest.raises(ValueError, match=named):
            AutoPipeEarlyStop(trial, total_steps=10, regressor=regressor, dataset=dataset)
    unknown = _early_stop_with(regressor, dataset={"size": math.nan})  # unknown: accepted
    assert unknown.state == TrialState.PRUNED and proxy_of(unknown) is not None


# --- the pipeline's data files ----------------------------------------------------------------


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> DatasetFiles:
    folder = tmp_path_factory.mktemp("data")
    return write_dataset("compare", folder, n_sft=16, n_rl=4, n_eval=4, seed=0)


def _pipeline(files: DatasetFiles, tmp_path: Path, **paths: Path) -> PostTrainingObjective:
    config = {**TINY_CONFIG, "sft_epoch": 1}
    return PostTrainingObjective(
        sft_data=paths.get("sft", files.sft),
        rl_data=paths.get("rl", files.rl),
        eval_suite=EvalSuite(benchmarks=files.eval, temperature=0.0),
        space={name: CategoricalDistribution([value]) for name, value in config.items()},
        early_stop=None,
        output_dir=tmp_path / "out",
        device="cpu",
    )


def _jsonl(path: Path, records: list[Any]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    return path


@pytest.mark.parametrize("kind", ["sft", "rl"])
def test_missing_or_empty_training_data_names_the_file(files, tmp_path, kind):
    missing = tmp_path / "missing.jsonl"
    message = f"{kind.upper()} data file not found: {missing}"
    with pytest.raises(FileNotFoundError, match=re.escape(message)):
        _pipeline(files, tmp_path, **{kind: missing})
    empty = tmp_path / "empty.jsonl"
    empty.write_text("\n")
    with pytest.raises(ValueError, match=re.escape(f"{kind.upper()} data {empty} has no records")):
        _pipeline(files, tmp_path, **{kind: empty})


@pytest.mark.parametrize(
    ("kind", "record", "message"),
    [
        ("sft", {"prompt": "p", "response": "r"}, "missing key 'completion'"),
        ("sft", {"messages": [{"role": "user", "content": "p"}]}, "missing key 'prompt'"),
        ("rl", {"prompt": "p", "answer": 4}, "'answer' must be a string, got int"),
        ("rl", ["p", "a"], "expected a JSON object, got list"),
    ],
)
def test_training_data_with_a_wrong_schema_names_the_file_line_and_key(
    files, tmp_path, kind, record, message
):
    good = {
        "sft": {"prompt": "p", "completion": "c\nAnswer: A"},
        "rl": {"prompt": "p", "answer": "A"},
    }
    path = _jsonl(tmp_path / "wrong.jsonl", [good[kind], record])
    where = re.escape(f"{kind.upper()} data {path}, line 2: {message}")
    with pytest.raises(ValueError, match=where):
        _pipeline(files, tmp_path, **{kind: path})


def test_sft_completions_without_a_final_answer_line_warn_with_the_records(files, tmp_path):
    records = [
        {"prompt": "p", "completion": "37 is largest.\nAnswer: B\n\n"},
        {"prompt": "p", "completion": "The answer is B."},
        {"prompt": "p", "completion": "Answer: B\nbecause 37 is largest"},
    ]
    path = _jsonl(tmp_path / "sft.jsonl", records)
    message = f"SFT data {path}: 2 of 3 completions (records [2, 3]) do not end with an"
    with pytest.warns(UserWarning, match=re.escape(message)):
        objective = _pipeline(files, tmp_path, sft=path)
    assert len(objective.sft_records) == 3  # a warning: the data is still used


def test_an_eval_benchmark_without_examples_names_the_file(files, tmp_path):
    empty = tmp_path / "eval_empty.jsonl"
    empty.write_text("")
    with pytest.raises(ValueError, match=re.escape(f"eval data {empty} has no records")):
        EvalSuite(benchmarks=(*files.eval, empty))
    with pytest.raises(ValueError, match="at least one benchmark"):
        EvalSuite(benchmarks=())


def test_out_of_memory_in_sft_fails_the_trial_not_the_study(files, tmp_path, monkeypatch):
    def out_of_memory(**_: Any) -> None:
        raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")

    monkeypatch.setattr(objective_module, "run_sft", out_of_memory)
    study = optuna.create_study(direction="maximize")
    study.add_trial(
        optuna.trial.create_trial(
            params={"x": 0.5}, distributions={"x": FloatDistribution(0, 1)}, value=0.5
        )
    )
    before = _snapshot(study)
    study.optimize(_pipeline(files, tmp_path), n_trials=2)
    assert [t.state for t in study.trials[1:]] == [TrialState.FAIL] * 2
    failure = study.trials[1].user_attrs[FAILURE_ATTR]
    assert failure == {
        "stage": "sft",
        "kind": "out_of_memory",
        "reason": "CUDA out of memory. Tried to allocate 2.00 GiB",
    }
    assert _snapshot(study)[1][:1] == before[1] and _snapshot(study)[0] == before[0]


# --- benchmarks and the command line ----------------------------------------------------------


def test_missing_benchmark_data_names_the_file_and_the_download_command(tmp_path, capsys):
    with pytest.raises(BenchmarkDataError, match=r"nmtlc-scratch\.jsonl\.gz not found.*download"):
        load_benchmark("nmt", data_dir=tmp_path)
    out = tmp_path / "out"
    argv = ["bench", "--benchmark", "nmt", "--methods", "tpe", "--out", str(out)]
    assert main([*argv, "--data-dir", str(tmp_path), "--workers", "1"]) == 2
    error = capsys.readouterr().err
    assert error.startswith("autopipe: error: Benchmark data file")
    assert "`autopipe data download --benchmark nmt --data-dir DIR`" in error
    assert not out.exists()  # no storage was created


def _bench(tmp_path: Path, *options: str) -> list[str]:
    """``autopipe bench``: one random-search study of NMT's ted-ru-en into ``tmp_path/out``;
    ``options`` come last (an option given again replaces the first)."""
    out = str(tmp_path / "out")
    one = ["--datasets", "ted-ru-en", "--seeds", "1", "--budget", "1", "--workers", "1"]
    return ["bench", "--benchmark", "nmt", "--methods", "random", *one, "--out", out, *options]


def _one_line(err: str) -> str:
    """The error of an ``autopipe`` run that printed it alone, without a traceback."""
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("autopipe"), err
    return lines[0]


_NO_PSYCOPG = importlib.util.find_spec("psycopg") is None


@pytest.mark.parametrize(
    ("storage", "said"),
    [
        ("notaurl", "Storage notaurl: no such journal file (a path is read as an Optuna journal"),
        ("sqlite:///{tmp}/no-dir/x.db", "no folder {tmp}/no-dir to create the SQLite file in"),
        (
            "sqlite:///{tmp}/notes.txt",
            "Cannot open storage sqlite:///{tmp}/notes.txt: (sqlite3.DatabaseError) file is not a",
        ),
        ("sqlite://", "Storage sqlite:// is an in-memory database: it starts empty and is gone"),
        ("sqlite:///:memory:", "Storage sqlite:///:memory: is an in-memory database"),
        pytest.param(
            "postgresql+psycopg://u:secret@localhost/db",
            "Cannot open storage postgresql+psycopg://u:***@localhost/db: No module named "
            "'psycopg'; install its driver",
            marks=pytest.mark.skipif(not _NO_PSYCOPG, reason="psycopg is installed"),
        ),
    ],
)
def test_a_bench_storage_that_cannot_be_opened_is_named_with_the_fix(
    tmp_path, capsys, monkeypatch, storage, said
):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "notes.txt").write_text("my notes\n")
    storage, said = storage.format(tmp=tmp_path), said.format(tmp=tmp_path)
    assert main(_bench(tmp_path, "--storage", storage)) == 2
    error = _one_line(capsys.readouterr().err)
    assert error.startswith("autopipe: error: ") and said in error and "secret" not in error
    assert [p.name for p in tmp_path.iterdir()] == ["notes.txt"]  # nothing created
    assert (tmp_path / "notes.txt").read_text() == "my notes\n"


def test_an_out_folder_that_is_a_file_is_refused_before_anything_runs(tmp_path, capsys):
    taken = tmp_path / "results"
    taken.write_text("kept\n")
    for argv in (
        ["bench", "--benchmark", "nmt", "--out", str(taken)],
        ["bench", "--benchmark", "nmt", "--out", str(taken / "nmt")],
        ["fit-prior", "--benchmark", "nmt", "--out", str(taken)],
    ):
        with pytest.raises(SystemExit) as exit_info:
            main(argv)
        assert exit_info.value.code == 2
        said = f"argument --out: {taken} is a file, not a folder; name a folder (new or existing)"
        assert said in capsys.readouterr().err
    assert [p.name for p in tmp_path.iterdir()] == ["results"]
    assert taken.read_text() == "kept\n"


@pytest.mark.parametrize(
    ("option", "value", "said"),
    [
        ("--datasets", "", "argument --datasets: expected comma-separated names, got ''"),
        ("--methods", " , ", "argument --methods: expected comma-separated names, got ' , '"),
        ("--methods", "random,,random", "argument --methods: 'random' given more than once"),
        ("--datasets", "ted-ru-en,ted-ru-en", "argument --datasets: 'ted-ru-en' given more"),
    ],
)
def test_empty_or_repeated_names_are_refused_naming_their_flag(
    tmp_path, capsys, option, value, said
):
    with pytest.raises(SystemExit) as exit_info:
        main(_bench(tmp_path, option, value))
    assert exit_info.value.code == 2 and said in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize(
    ("script", "said"),
    [
        (None, "cannot be run (Permission denied)"),  # a file, not a program
        (
            "echo \"ModuleNotFoundError: No module named 'optuna_autopipe'\" >&2; exit 1",
            "cannot import the project (ModuleNotFoundError: No module named 'optuna_autopipe')",
        ),
        ("echo 0.0.1", f"has Optuna 0.0.1, the harness {optuna.__version__}"),
    ],
)
def test_a_peers_python_that_cannot_serve_is_refused_before_anything_runs(
    tmp_path, capsys, monkeypatch, script, said
):
    from optuna_autopipe.bench import peer_env

    if peer_env.importable("dehb"):
        pytest.skip("dehb is importable here: this is the peers' environment")
    python = tmp_path / "python"
    python.write_text("not a program\n" if script is None else f"#!/bin/sh\n{script}\n")
    if script is not None:
        python.chmod(0o755)
    monkeypatch.setenv(peer_env.PEERS_PYTHON_ENV, str(python))
    assert main(_bench(tmp_path, "--methods", "random,dehb")) == 2
    error = _one_line(capsys.readouterr().err)
    assert f"The peers' environment ({python}) {said}: " in error
    assert "Build it with `make peers`" in error
    assert not (tmp_path / "out").exists()


def test_a_post_training_data_folder_that_is_not_there_is_refused(tmp_path, capsys, monkeypatch):
    missing = tmp_path / "nowhere"
    argv = _bench(tmp_path, "--benchmark", "post-training", "--datasets", "yesno")
    said = f"autopipe: error: Benchmark data folder {missing} not found. Point --data-dir or "
    assert main([*argv, "--data-dir", str(missing)]) == 2
    assert _one_line(capsys.readouterr().err).startswith(said)
    monkeypatch.setenv("AUTOPIPE_DATA", str(missing))
    assert main(argv) == 2
    error = _one_line(capsys.readouterr().err)
    assert error.startswith(said) and error.endswith("replay the corpus bundled with the package.")
    assert not (tmp_path / "out").exists()


def test_a_corpus_report_without_a_generation_says_what_to_run(tmp_path, capsys):
    empty = tmp_path / "empty"
    empty.mkdir()
    assert main(["corpus", "report", "--out", str(empty)]) == 2
    error = capsys.readouterr().err
    assert error.startswith(f"autopipe: error: No corpus generation in {empty}")
    assert "autopipe corpus generate --out" in error
    assert list(empty.iterdir()) == []  # no journal was created
    with pytest.raises(SystemExit):
        main(["demo", "--seeds", "1,2"])
    assert "expected a whole number >= 1, got '1,2'" in capsys.readouterr().err


def test_unknown_command_line_arguments_exit_2_with_the_message(tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["bench", "--bogus"])
    assert exit_info.value.code == 2
    assert "the following arguments are required: --out, --benchmark" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exit_info:
        main(["bench", "--benchmark", "nmt", "--out", str(tmp_path), "--bogus"])
    assert exit_info.value.code == 2
    assert "unrecognized arguments: --bogus" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["bench", "--benchmark", "mnist", "--out", str(tmp_path)])
    assert "invalid choice: 'mnist'" in capsys.readouterr().err
