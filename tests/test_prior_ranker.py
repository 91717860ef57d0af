"""Corpus and ranker: sources, round trips, filtering, and recovering a known ordering."""

from __future__ import annotations

import json
import math

import numpy as np
import optuna
import pytest
from optuna.distributions import CategoricalDistribution, FloatDistribution

from optuna_autopipe.corpus import PROFILE_ATTR, Corpus, DatasetRuns
from optuna_autopipe.ensemble import TreeParams
from optuna_autopipe.feature_filter import FeatureFilter, flag_columns
from optuna_autopipe.metrics import ranking_metrics
from optuna_autopipe.ranker import Ranker

SPACE = {"x": FloatDistribution(0.0, 1.0), "opt": CategoricalDistribution(["adam", "sgd"])}


def _synthetic(n_datasets: int = 8, n: int = 120, seed: int = 0) -> Corpus:
    """Utility peaks at x = c (a dataset feature); 'adam' adds a constant bonus."""
    rng = np.random.default_rng(seed)
    datasets = []
    for d in range(n_datasets):
        c = (d + 0.5) / n_datasets
        xs = rng.uniform(0, 1, n)
        opts = rng.choice(["adam", "sgd"], n)
        utility = -((xs - c) ** 2) + 0.05 * (opts == "adam")
        datasets.append(
            DatasetRuns(
                name=f"d{d}",
                direction="minimize",
                features={"center": c, "constant": 1.0, "copy_of_center": 2 * c + 1},
                configs=[{"x": float(x), "opt": str(o)} for x, o in zip(xs, opts, strict=True)],
                scores=-utility,
            )
        )
    return Corpus(SPACE, datasets)


def test_ranker_recovers_a_known_dataset_conditioned_ordering():
    corpus = _synthetic()
    held = corpus.dataset("d2")
    ranker = Ranker(params=TreeParams(n_estimators=100)).fit(corpus.without(["d2"]))
    with_features = ranking_metrics(held.utility, ranker.raw_scores(held.configs, held.features))
    blind = Ranker(params=TreeParams(n_estimators=100), use_dataset_features=False)
    blind.fit(corpus.without(["d2"]))
    without = ranking_metrics(held.utility, blind.raw_scores(held.configs, held.features))
    assert with_features["pairwise_acc"] > 0.7  # chance is 0.5
    assert with_features["pairwise_acc"] > without["pairwise_acc"] + 0.1
    scores = ranker.score(held.configs, held.features)
    assert scores.mean() == pytest.approx(0, abs=1e-9) and scores.std() == pytest.approx(1)


def test_feature_filter_drops_constant_and_duplicate_features():
    ranker = Ranker(params=TreeParams(n_estimators=10)).fit(_synthetic())
    assert "center" in ranker.kept_columns
    assert "constant" not in ranker.kept_columns and "copy_of_center" not in ranker.kept_columns
    block = np.column_stack([np.arange(10.0), np.ones(10), 2 * np.arange(10.0) + 1])
    assert flag_columns(block, var_ratio=0.01, max_corr=0.95).tolist() == [0, 1, 1]


def test_save_and_load_give_identical_scores(tmp_path):
    corpus = _synthetic(n_datasets=4)
    ranker = Ranker(params=TreeParams(n_estimators=20), filter=FeatureFilter()).fit(corpus)
    ranker.save(tmp_path)
    loaded = Ranker.load(tmp_path)
    held = corpus.dataset("d1")
    np.testing.assert_array_equal(
        ranker.raw_scores(held.configs, held.features),
        loaded.raw_scores(held.configs, held.features),
    )
    assert json.loads((tmp_path / "ranker.json").read_text())["versions"]["xgboost"]


def test_bad_inputs_give_clear_errors(tmp_path):
    corpus = _synthetic(n_datasets=3)
    with pytest.raises(ValueError, match="at least 1 dataset with 2\\+ runs"):
        Ranker().fit(Corpus(SPACE, []))
    with pytest.raises(ValueError, match="non-finite scores"):
        DatasetRuns(
            name="bad", direction="minimize", features={}, configs=[{}, {}], scores=[1.0, math.nan]
        )
    ranker = Ranker(params=TreeParams(n_estimators=5)).fit(corpus)
    with pytest.raises(ValueError, match="lacks 1 feature"):
        ranker.raw_scores([{"x": 0.1, "opt": "adam"}], {})
    with pytest.raises(ValueError, match="'opt' has value 'lion'"):
        ranker.raw_scores([{"x": 0.1, "opt": "lion"}], {"center": 0.5})
    with pytest.raises(FileNotFoundError, match="fit-prior"):
        Ranker.load(tmp_path / "nowhere")
    ranker.save(tmp_path)
    (tmp_path / "ranker-0.json").write_text("{broken")
    with pytest.raises(ValueError, match="corrupt or incompatible prior"):
        Ranker.load(tmp_path)


def test_corpus_from_studies_keeps_full_fidelity_complete_trials(tmp_path, caplog):
    storage = optuna.storages.InMemoryStorage()
    for name, center in (("a", 0.2), ("b", 0.8)):
        study = optuna.create_study(study_name=name, storage=storage)
        study.set_user_attr(PROFILE_ATTR, {"name": name, "features": {"center": center, "u": None}})
        for i in range(6):
            trial = study.ask(SPACE)
            if i == 0:
                study.tell(trial, state=optuna.trial.TrialState.FAIL)
            elif i == 1:
                trial.set_user_attr("fidelity", 0.5)
                trial.report(1.0, step=1)
                study.tell(trial, state=optuna.trial.TrialState.PRUNED)
            elif i == 2:
                pass  # left RUNNING
            else:
                study.tell(trial, (trial.params["x"] - center) ** 2)
    with caplog.at_level("INFO", logger="optuna_autopipe.corpus"):
        corpus = Corpus.from_studies(storage, ["a", "b"])
    assert "3 trials skipped" in caplog.text
    a = corpus.dataset("a")
    assert len(a.configs) == 3 and a.direction == "minimize"
    assert a.features["center"] == 0.2 and math.isnan(a.features["u"])
    path = tmp_path / "corpus.jsonl"
    corpus.save(path)
    again = Corpus.load(path)
    assert again.space == corpus.space
    assert again.dataset("b").configs == corpus.dataset("b").configs
    np.testing.assert_array_equal(again.dataset("b").scores, corpus.dataset("b").scores)
    assert math.isnan(again.dataset("a").features["u"])
    with pytest.raises(ValueError, match="'missing' not found"):
        Corpus.from_studies(storage, ["missing"])


def test_corpus_file_errors_name_the_line(tmp_path):
    path = tmp_path / "c.jsonl"
    path.write_text('{"kind": "space", "space": {}}\n{"kind": "run", "dataset": "a"\n')
    with pytest.raises(ValueError, match="line 2"):
        Corpus.load(path)
    with pytest.raises(FileNotFoundError, match=r"nope\.jsonl"):
        Corpus.load(tmp_path / "nope.jsonl")


def test_benchmark_corpus_ranker_beats_chance_on_held_out_nmt_pair(nmt):
    corpus = Corpus.from_tasks(nmt.tasks, groups=nmt.groups)
    ranker = Ranker(params=TreeParams(n_estimators=100))
    ranker.fit(corpus.without(["ted-ru-en", "ted-zh-en"]))
    held = corpus.dataset("ted-ru-en")
    metrics = ranking_metrics(held.utility, ranker.raw_scores(held.configs, held.features))
    assert metrics["spearman"] > 0.3
