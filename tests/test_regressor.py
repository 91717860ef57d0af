"""The early-stop regressor on synthetic corpora whose residual is readable from the dynamics."""

from __future__ import annotations

import dataclasses
import json
import math

import numpy as np
import optuna
import pytest
from optuna.distributions import FloatDistribution
from scipy.stats import spearmanr

from optuna_autopipe.corpus import Corpus, DatasetRuns
from optuna_autopipe.dynamics import TrainingDynamics
from optuna_autopipe.early_stop import RESIDUAL_ATTR, AutoPipeEarlyStop
from optuna_autopipe.ensemble import TreeParams
from optuna_autopipe.prior import Prior, fit_prior
from optuna_autopipe.ranker import Ranker
from optuna_autopipe.regressor import EarlyStopRegressor, prior_scores

SPACE = {"x": FloatDistribution(0.0, 1.0), "w": FloatDistribution(0.0, 1.0)}
TOTAL = 40


def _dataset(name: str, seed: int, n: int = 80) -> DatasetRuns:
    """Score y = q + x: x is what a prior can know, q (a run's hidden quality) only shows in
    the slope of its loss, and only before the cut does the loss carry it cleanly."""
    rng = np.random.default_rng(seed)
    x, w, q = rng.random(n), rng.random(n), rng.normal(0, 1, n)
    dynamics = []
    for quality in q:
        steps = np.arange(1, TOTAL + 1)
        loss = 3 - 0.02 * (1 + quality) * steps + rng.normal(0, 0.01, TOTAL)
        dynamics.append(
            TrainingDynamics(total_steps=TOTAL, metrics={"loss": np.c_[steps, loss].tolist()})
        )
    return DatasetRuns(
        name=name,
        direction="maximize",
        features={"size": float(seed)},
        configs=[{"x": float(a), "w": float(b)} for a, b in zip(x, w, strict=True)],
        scores=q + x + 10 * seed,  # per-dataset offsets: z(y) must remove them
        dynamics=dynamics,
    )


@pytest.fixture(scope="module")
def corpus() -> Corpus:
    return Corpus(dict(SPACE), [_dataset(f"d{i}", i) for i in range(5)])


def _z(d: DatasetRuns) -> np.ndarray:
    return (d.utility - d.utility.mean()) / d.utility.std()


def test_residual_regressor_learns_the_residual_on_a_held_out_dataset(corpus):
    train, held = corpus.without(["d4"]), corpus.dataset("d4")
    ranker = Ranker(params=TreeParams(n_estimators=50), n_models=1).fit(train)
    scores = prior_scores(train, ranker, folds=4)
    regressor = EarlyStopRegressor(n_models=5).fit(train, prior_scores=scores)
    s = ranker.score(held.configs, held.features)
    prediction = regressor.predict(held.configs, held.features, held.dynamics)
    residual = _z(held) - s
    assert np.corrcoef(prediction.mean, residual)[0, 1] > 0.8
    proxy = regressor.proxy(prediction, s)
    assert spearmanr(proxy, held.utility).statistic > 0.8
    assert spearmanr(proxy, held.utility).statistic > spearmanr(s, held.utility).statistic + 0.2
    assert (prediction.variance >= regressor.error_variance).all()
    # the calibrated floor is the out-of-fold error, close to the held-out dataset's error
    held_error = np.mean((prediction.mean - residual) ** 2)
    assert 0.3 * held_error < regressor.error_variance < 3 * held_error


def test_direct_regressor_predicts_the_standardised_score(corpus):
    train, held = corpus.without(["d4"]), corpus.dataset("d4")
    regressor = EarlyStopRegressor(target="direct").fit(train)
    prediction = regressor.predict(held.configs, held.features, held.dynamics)
    assert np.corrcoef(prediction.mean, _z(held))[0, 1] > 0.8
    np.testing.assert_array_equal(regressor.proxy(prediction, None), prediction.mean)


def test_cross_fitted_prior_scores_never_come_from_a_ranker_that_saw_the_dataset(corpus):
    ranker = Ranker(params=TreeParams(n_estimators=20), n_models=1).fit(corpus)
    crossed = prior_scores(corpus, ranker, folds=5)
    inside = prior_scores(corpus, ranker)
    assert crossed.keys() == inside.keys() == {d.name for d in corpus.datasets}
    for name in crossed:
        assert crossed[name].shape == (80,) and abs(crossed[name].mean()) < 1e-9
        assert not np.allclose(crossed[name], inside[name])


def test_runs_without_usable_dynamics_fall_back_to_the_prior_with_wide_variance(corpus):
    regressor = EarlyStopRegressor(target="residual").fit(
        corpus, prior_scores={d.name: np.zeros(80) for d in corpus.datasets}
    )
    configs = [{"x": 0.5, "w": 0.5}] * 4
    dynamics = [
        None,
        TrainingDynamics(total_steps=TOTAL),
        TrainingDynamics(total_steps=TOTAL, metrics={"loss": [[1, math.nan], [5, math.inf]]}),
        TrainingDynamics(total_steps=TOTAL, metrics={"loss": [[30, 1.0]]}),  # only past the cut
    ]
    prediction = regressor.predict(configs, {"size": 1.0}, dynamics)
    np.testing.assert_array_equal(prediction.mean, 0.0)
    np.testing.assert_allclose(prediction.variance, regressor.target_variance)
    fixed = EarlyStopRegressor(target="direct", variance_floor=0.01).fit(corpus)
    assert fixed.noise_floor == 0.01
    diverged = TrainingDynamics(total_steps=TOTAL, metrics={"loss": [[1, 3.0], [5, math.nan]]})
    assert np.isfinite(regressor.predict(configs[:1], {}, [diverged]).mean).all()


def test_bad_inputs_name_the_problem(corpus):
    with pytest.raises(ValueError, match="prior_scores"):
        EarlyStopRegressor().fit(corpus)
    with pytest.raises(ValueError, match="runs of dataset 'd0'"):
        EarlyStopRegressor().fit(corpus, prior_scores={"d0": np.zeros(3)})
    no_dynamics = Corpus(
        dict(SPACE),
        [DatasetRuns(d.name, d.direction, {}, d.configs, d.scores) for d in corpus.datasets],
    )
    with pytest.raises(ValueError, match=r"recorded training dynamics .* on at least 1 dataset"):
        EarlyStopRegressor(target="direct").fit(no_dynamics)
    with pytest.raises(ValueError, match="target"):
        EarlyStopRegressor(target="absolute")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="variance_floor"):
        EarlyStopRegressor(variance_floor=0)
    with pytest.raises(RuntimeError, match="not fitted"):
        EarlyStopRegressor().predict([], {}, [])


@pytest.fixture(scope="module")
def prior(corpus) -> Prior:
    return fit_prior(corpus, grid=[TreeParams(n_estimators=30)], n_models=1)


def test_fit_prior_adds_the_regressor_and_both_survive_save_and_load(prior, corpus, tmp_path):
    assert prior.regressor is not None and prior.regressor.target == "residual"
    record = prior.record["regressor"]
    assert record["fraction"] == 0.5 and record["anchors"] == "cross-fitted"
    assert record["proxy_judgement"].startswith("out of fold")
    assert record["auto_signal"] == ("cut" if prior.regressor.uses_cut else "proxy")
    prior.save(tmp_path)
    loaded = Prior.load(tmp_path)
    held = corpus.dataset("d2")
    before = prior.regressor.predict(held.configs, held.features, held.dynamics)
    after = loaded.regressor.predict(held.configs, held.features, held.dynamics)
    np.testing.assert_allclose(after.mean, before.mean, rtol=1e-6)
    np.testing.assert_allclose(after.variance, before.variance, rtol=1e-6)
    (tmp_path / "regressor-1.json").write_text("{broken")
    with pytest.raises(ValueError, match="corrupt or incompatible prior"):
        Prior.load(tmp_path)


def test_a_prior_serves_every_early_stop_fraction_its_corpus_supports(prior, corpus, tmp_path):
    assert prior.fractions == [0.25, 0.5, 0.75]
    assert prior.regressor is prior.regressor_for(0.5)  # the default, prior.regressor
    for fraction in prior.fractions:
        assert prior.regressor_for(fraction).fraction == fraction
        assert prior.record["regressors"][f"{fraction:g}"]["fraction"] == fraction
    prior.save(tmp_path)
    loaded = Prior.load(tmp_path)
    assert loaded.fractions == prior.fractions and loaded.regressor.fraction == 0.5
    held = corpus.dataset("d2")
    for fraction in prior.fractions:
        before = prior.regressor_for(fraction).predict(held.configs, held.features, held.dynamics)
        after = loaded.regressor_for(fraction).predict(held.configs, held.features, held.dynamics)
        np.testing.assert_allclose(after.mean, before.mean, rtol=1e-6)
    # a hook stopping at a quarter takes the prior's quarter regressor, and records its proxy
    study = optuna.create_study(direction="maximize")
    hook = AutoPipeEarlyStop(
        study.ask(),
        total_steps=TOTAL,
        fraction=0.25,
        regressor=loaded.regressor_for(0.25),
        dataset=held.features,
    )
    for step, point in enumerate(held.dynamics[0].metrics["loss"], 1):
        if hook.report(step, {"loss": point[1]}):
            break
    with pytest.raises(optuna.TrialPruned):
        hook.finish()
    assert np.isfinite(study.trials[0].user_attrs[RESIDUAL_ATTR])  # r̂ (no s(x) on the trial)


def test_a_prior_saved_with_one_regressor_still_loads(prior, tmp_path):
    """The layout before per-fraction regressors: ``regressor.json`` and its members only."""
    Prior(ranker=prior.ranker, regressor=prior.regressor, record={}).save(tmp_path)
    record = json.loads((tmp_path / "prior.json").read_text())
    del record["regressor_files"]
    (tmp_path / "prior.json").write_text(json.dumps(record))
    loaded = Prior.load(tmp_path)
    assert loaded.fractions == [0.5] and loaded.regressor.fraction == 0.5


def test_a_fraction_the_prior_does_not_serve_names_those_it_does_and_the_refit(prior):
    served = r"serves early-stop fractions \[0\.25, 0\.5, 0\.75\], not 0\.3.*fractions="
    with pytest.raises(ValueError, match=served):
        prior.regressor_for(0.3)
    with pytest.raises(ValueError, match=r"no early-stop regressor.*dynamics.*fit-prior"):
        Prior(ranker=prior.ranker).regressor_for(0.5)


def test_fit_prior_fits_the_fractions_asked_for_where_the_dynamics_reach(corpus):
    late = []  # nothing logged before step 12 of 40: no point before a cut at 25% (step 10)
    for d in corpus.datasets[:3]:
        dynamics = [
            TrainingDynamics(
                total_steps=TOTAL, metrics={"loss": [p for p in x.metrics["loss"] if p[0] >= 12]}
            )
            for x in d.dynamics
        ]
        late.append(dataclasses.replace(d, dynamics=dynamics))
    grid = [TreeParams(n_estimators=30)]
    prior = fit_prior(Corpus(dict(SPACE), late), grid=grid, n_models=1, fractions=(0.25, 0.5))
    assert prior.fractions == [0.5] and prior.regressor.fraction == 0.5
    assert prior.record["regressors"]["0.25"].startswith("not fitted: no dataset has 2+ runs")
    quarter = fit_prior(corpus.without(["d3", "d4"]), grid=grid, n_models=1, fractions=(0.25,))
    assert quarter.fractions == [0.25] and quarter.regressor.fraction == 0.25


def test_corpus_files_keep_the_dynamics(corpus, tmp_path):
    corpus.save(tmp_path / "corpus.jsonl")
    loaded = Corpus.load(tmp_path / "corpus.jsonl")
    for before, after in zip(corpus.datasets, loaded.datasets, strict=True):
        assert [d.total_steps for d in after.dynamics] == [TOTAL] * len(before.configs)
        np.testing.assert_allclose(
            after.dynamics[3].metrics["loss"], before.dynamics[3].metrics["loss"], rtol=1e-6
        )
    lines = (tmp_path / "corpus.jsonl").read_text().splitlines()
    lines[2] = lines[2].replace('"total_steps"', '"steps"')
    (tmp_path / "bad.jsonl").write_text("\n".join(lines))
    with pytest.raises(ValueError, match="a run of d0 is not a training-dynamics record"):
        Corpus.load(tmp_path / "bad.jsonl")
