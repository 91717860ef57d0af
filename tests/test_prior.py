from __future__ import annotations

import json

import numpy as np
import optuna
import pytest
from optuna.distributions import FloatDistribution
from optuna.storages.journal import JournalFileBackend

from optuna_autopipe.cli import main
from optuna_autopipe.corpus import Corpus
from optuna_autopipe.dynamics import DYNAMICS_ATTR
from optuna_autopipe.prior import DEFAULT_GRID, Prior, fit_prior
from optuna_autopipe.profile import PROFILE_ATTR


@pytest.fixture(scope="module")
def nmt_prior(nmt, tmp_path_factory):
    corpus = Corpus.from_tasks(nmt.tasks[:5], groups=nmt.groups)  # 3 families
    directory = tmp_path_factory.mktemp("prior")
    fit_prior(corpus).save(directory)
    return directory


def test_grid_search_is_recorded_and_the_winner_maximises_mean_plus_min(nmt_prior):
    record = json.loads((nmt_prior / "prior.json").read_text())
    trials = record["grid_search"]
    assert len(trials) == len(DEFAULT_GRID)
    best = max(trials, key=lambda t: t["ndcg@5_mean"] + t["ndcg@5_min"])
    assert record["chosen"] == best["params"]
    assert set(record["versions"]) == {"optuna_autopipe", "optuna", "xgboost"}


def test_loaded_prior_scores_a_new_dataset_and_checks_its_space(nmt_prior, nmt):
    prior = Prior.load(nmt_prior)
    task = nmt.task("ted-zh-en")
    prior.check_space(task.search_space)
    configs, _ = task.pool()
    scores = prior.score(configs, task.dataset_features)
    assert scores.shape == (len(configs),) and np.isfinite(scores).all()
    with pytest.raises(ValueError, match=r"never saw: \['warmup'\].*expects: \['bpe'\]"):
        space = dict(task.search_space)
        del space["bpe"]
        prior.check_space({**space, "warmup": FloatDistribution(0, 0.1)})


def test_cli_fits_a_prior_from_studies_and_from_a_benchmark(tmp_path, nmt, capsys, caplog):
    storage = f"sqlite:///{tmp_path / 'past.db'}"
    for task in nmt.tasks[:2]:
        study = optuna.create_study(
            study_name=task.name,
            storage=storage,
            direction=task.direction,
            sampler=optuna.samplers.RandomSampler(seed=0),
            pruner=optuna.pruners.NopPruner(),
        )
        study.set_user_attr(PROFILE_ATTR, {"name": task.name, "features": task.dataset_features})
        study.optimize(task.objective(seed=0), n_trials=12)
        params = study.trials[0].params
        broken = {DYNAMICS_ATTR: "{not json", "fidelity": 1.0}
        study.add_trial(
            optuna.trial.create_trial(
                params=params, distributions=task.search_space, value=9.0, user_attrs=broken
            )
        )
    studies = ",".join(t.name for t in nmt.tasks[:2])
    corpus = Corpus.from_studies(storage, studies.split(","))
    assert [sum(d is not None for d in ds.dynamics) for ds in corpus.datasets] == [12, 12]
    assert "the run is kept without dynamics" in caplog.text
    assert (
        main(
            ["fit-prior", "--storage", storage, "--studies", studies, "--out", str(tmp_path / "a")]
        )
        == 0
    )
    from_studies = Prior.load(tmp_path / "a")
    assert from_studies.record["corpus"] == {t.name: 13 for t in nmt.tasks[:2]}
    journal = str(tmp_path / "past.journal")  # a journal file's path, as recommend takes it
    for task in nmt.tasks[:2]:
        optuna.copy_study(
            from_study_name=task.name,
            from_storage=storage,
            to_storage=optuna.storages.JournalStorage(JournalFileBackend(journal)),
        )
    out = str(tmp_path / "j")
    assert main(["fit-prior", "--storage", journal, "--studies", studies, "--out", out]) == 0
    assert Prior.load(out).record["corpus"] == from_studies.record["corpus"]
    assert from_studies.regressor is not None  # the studies' trials recorded their dynamics
    assert from_studies.regressor.metrics == ["dev_perplexity"]
    assert main(["fit-prior", "--benchmark", "nmt", "--no-tune", "--out", str(tmp_path / "b")]) == 0
    assert len(Prior.load(tmp_path / "b").record["grid_search"]) == 1
    assert Prior.load(tmp_path / "b").record["regressor"]["anchors"] == "cross-fitted"
    two_groups = Prior.load(tmp_path / "a").record["grid_search"]
    assert two_groups[0]["ndcg@5_mean"] is None  # 2 groups: nothing to tune on, documented
    assert (
        main(["fit-prior", "--storage", storage, "--studies", "nope", "--out", str(tmp_path / "c")])
        == 2
    )
    assert "'nope' not found" in capsys.readouterr().err


def test_cli_fit_prior_fits_the_early_stop_fractions_asked_for(nmt, tmp_path, capsys):
    out = tmp_path / "prior"
    args = ["fit-prior", "--benchmark", "nmt", "--no-tune", "--out", str(out), "--fractions"]
    assert main([*args, "0.25"]) == 0
    prior = Prior.load(out)
    assert prior.fractions == [0.25] and prior.regressor.fraction == 0.25
    assert "early-stop regressors at 25% (default 25%)" in capsys.readouterr().out
    with pytest.raises(SystemExit) as exited:
        main([*args, "0.25,1.5"])
    assert exited.value.code == 2
    assert "early-stop fractions must be in (0, 1)" in capsys.readouterr().err
