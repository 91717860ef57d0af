"""Prior diagnostics (leave-one-dataset-out ranking metrics) and the ``offline`` method."""

from __future__ import annotations

import itertools

import numpy as np
import optuna
import pandas as pd
import pytest

import optuna_autopipe.bench.offline_method  # noqa: F401  (registers "offline")
from optuna_autopipe.bench.harness import outcome
from optuna_autopipe.bench.methods import Context, get_method
from optuna_autopipe.bench.offline_method import offline_ranker
from optuna_autopipe.corpus import Corpus
from optuna_autopipe.diagnostics import COLUMNS, MEAN, format_report, models, prior_report
from optuna_autopipe.metrics import METRICS
from optuna_autopipe.ranker import Ranker

MODELS = models((0.25, 0.5, 0.75))


@pytest.fixture(scope="module")
def nmt_report(tmp_path_factory):
    out = tmp_path_factory.mktemp("prior_report")
    return out, prior_report(benchmark="nmt", out=out, workers=2)


def test_report_has_every_model_dataset_and_metric(nmt_report, nmt):
    out, returned = nmt_report
    table = pd.read_csv(out / "prior_report.csv")
    assert list(table.columns) == COLUMNS == ["model", "dataset", "metric", "value"]
    datasets = [t.name for t in nmt.tasks]
    expected = set(itertools.product(MODELS, [*datasets, MEAN], METRICS))
    assert set(zip(table.model, table.dataset, table.metric, strict=True)) == expected
    assert len(table) == len(expected)
    pd.testing.assert_frame_equal(table, returned, check_exact=False)
    folds = table[table.dataset != MEAN]
    for (model, metric), rows in folds.groupby(["model", "metric"]):
        mean = table[(table.model == model) & (table.dataset == MEAN) & (table.metric == metric)]
        assert mean.value.item() == pytest.approx(rows.value.mean())
    text = (out / "prior_report.md").read_text()
    assert format_report(table) in text
    assert all(f"| {model} |" in text for model in MODELS)


def test_report_values_are_in_range_and_the_ranker_orders_better_than_chance(nmt_report):
    _, table = nmt_report
    folds = table[table.dataset != MEAN]
    value = {m: folds[folds.metric == m].value for m in METRICS}
    assert np.isfinite(folds.value).all()
    assert (value["regret"] >= 0).all()
    for k in (1, 3, 5, 10):
        assert set(value[f"recall@{k}"]) <= {0.0, 1.0}
    for metric in ("ndcg@5", "ndcg@10", "pairwise_acc"):
        assert value[metric].between(0, 1).all()
    assert value["spearman"].between(-1, 1).all()
    means = table[table.dataset == MEAN].set_index(["model", "metric"]).value
    assert means["ranker", "spearman"] > 0
    assert means["ranker", "pairwise_acc"] > 0.5


def test_offline_method_runs_the_rankers_top_configuration_once(nmt):
    target = "ted-ru-en"
    offline = nmt.offline(target, "grouped")
    ctx = Context(
        task=nmt.task(target),
        offline=offline,
        seed=3,
        budget=15,
        evaluations={},
        study_name=f"nmt/{target}/offline/seed0",
    )
    study = get_method("offline")(ctx)
    (trial,) = study.trials
    assert trial.state == optuna.trial.TrialState.COMPLETE
    configs = ctx.task.pool()[0]
    assert trial.params in configs
    assert "mapped_to" not in trial.user_attrs
    assert trial.user_attrs["prior_candidates"] == len(configs)

    # The same fold fitted independently picks the same top-1.
    corpus = Corpus.from_tasks(offline, groups=nmt.groups)
    raw = Ranker(n_jobs=1).fit(corpus).raw_scores(configs, ctx.task.dataset_features)
    assert trial.params == configs[int(np.argmax(raw))]
    standardised = (raw - raw.mean()) / raw.std()
    assert trial.user_attrs["prior_score"] == pytest.approx(standardised.max())

    record = outcome(study, ctx, protocol="grouped")
    assert record["n_evals"] == 1 and record["cost"] == pytest.approx(1.0)
    assert record["score"] == pytest.approx(ctx.task.true_score(trial.params))
    assert offline_ranker(offline) is offline_ranker(offline)  # fitted once per fold
