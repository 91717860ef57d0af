"""The cut signal: chosen on the corpus, calibrated, saved with the regressor, and used by the
sampler (standardised within the study) only when it ranked the corpus better than the proxy."""

from __future__ import annotations

import json
import math

import numpy as np
import optuna
import pytest
from optuna.distributions import FloatDistribution
from optuna.trial import TrialState, create_trial

from optuna_autopipe.corpus import Corpus, DatasetRuns
from optuna_autopipe.cut_signal import CutSignal, standardise, within_spearman
from optuna_autopipe.dynamics import DYNAMICS_ATTR, TrainingDynamics
from optuna_autopipe.early_stop import (
    FRACTION_ATTR,
    PROXY_ATTR,
    PROXY_VARIANCE_ATTR,
    STOP_STEP_ATTR,
)
from optuna_autopipe.ensemble import TreeParams
from optuna_autopipe.prior import Prior, fit_prior
from optuna_autopipe.regressor import EarlyStopRegressor
from optuna_autopipe.sampler import AutoPipeSampler

SPACE = {"x": FloatDistribution(0.0, 1.0), "w": FloatDistribution(0.0, 1.0)}
TOTAL = 20


def _curve(level: float, quality: float, rng: np.random.Generator) -> TrainingDynamics:
    """An accuracy curve rising to ``level + quality``; the run's quality shows early."""
    steps = np.arange(1, TOTAL + 1)
    acc = level + quality * (1 - np.exp(-steps / 3)) + rng.normal(0, 0.02, TOTAL)
    return TrainingDynamics(total_steps=TOTAL, metrics={"val.acc": np.c_[steps, acc].tolist()})


def _dataset(name: str, seed: int, n: int = 60, *, config_weight: float = 0.0) -> DatasetRuns:
    """Each dataset's accuracies sit at their own level (unrelated to its meta-feature), so
    only within a dataset does the level at the cut tell runs apart; y = quality +
    ``config_weight`` · x, where x shows in no curve."""
    rng = np.random.default_rng(seed)
    level = 10.0 * rng.permutation(6)[0] + 3 * seed
    quality = rng.normal(0, 1, n)
    configs = rng.random((n, 2))
    return DatasetRuns(
        name=name,
        direction="maximize",
        features={"size": float(seed % 2)},
        configs=[{"x": float(a), "w": float(b)} for a, b in configs],
        scores=quality + config_weight * configs[:, 0],
        dynamics=[_curve(level, q, rng) for q in quality],
    )


@pytest.fixture(scope="module")
def prior() -> Prior:
    corpus = Corpus(dict(SPACE), [_dataset(f"d{i}", i) for i in range(5)])
    return fit_prior(corpus, grid=[TreeParams(n_estimators=30)], n_models=1, fraction=0.5)


def test_within_spearman_averages_per_group_and_counts_undefined_groups_as_zero():
    x = np.array([1.0, 2, 3, 1, 2, 3, 5, 5, 5])
    z = np.array([1.0, 2, 3, 3, 2, 1, 1, 2, 3])
    groups = np.array([0, 0, 0, 1, 1, 1, 2, 2, 2])
    assert within_spearman(x, z, groups) == pytest.approx((1 - 1 + 0) / 3)
    assert within_spearman(x[:3], z[:3], groups[:3]) == pytest.approx(1.0)


def test_standardise_ignores_nan_and_keeps_a_single_value_at_zero():
    np.testing.assert_allclose(standardise(np.array([1.0, 3.0, math.nan]))[:2], [-1, 1])
    assert math.isnan(standardise(np.array([1.0, 3.0, math.nan]))[2])
    np.testing.assert_allclose(standardise(np.array([4.0])), [0.0])


def test_fit_picks_the_oriented_feature_that_ranks_within_groups_and_calibrates_it():
    rng = np.random.default_rng(0)
    groups = np.repeat(np.arange(4), 200)
    z = rng.normal(size=800)
    noise = rng.normal(size=800)
    loss = -0.9 * z + np.sqrt(1 - 0.81) * rng.normal(size=800) + 50 * groups  # own scales
    signal = CutSignal.fit(np.c_[noise, loss], ["a.prefix.mean", "loss.late.min"], z, groups)
    assert signal is not None
    assert (signal.feature, signal.sign) == ("loss.late.min", -1.0)
    assert signal.spearman > 0.85
    assert signal.slope == pytest.approx(0.9, abs=0.05)
    assert signal.variance == pytest.approx(1 - 0.81, abs=0.05)
    assert CutSignal.fit(np.zeros((800, 1)), ["flat.prefix.mean"], z, groups) is None


def test_value_reads_the_feature_of_a_metric_whose_name_has_dots():
    dynamics = _curve(5.0, 1.0, np.random.default_rng(0))
    signal = CutSignal("val.acc.late.mean", -1.0, 0.9, 0.9, 0.2)
    expected = dynamics.features(fraction=0.5)["val.acc.late.mean"]
    assert signal.value(dynamics, fraction=0.5) == pytest.approx(-expected)


def test_the_regressor_uses_the_cut_only_where_it_ranks_better_and_saves_the_choice(
    prior, tmp_path
):
    regressor = prior.regressor
    assert regressor is not None and regressor.cut is not None
    assert regressor.cut.feature.startswith("val.acc.") and regressor.cut.sign == 1.0
    assert regressor.uses_cut
    assert regressor.cut.spearman > regressor.proxy_spearman
    regressor.save(tmp_path)
    loaded = EarlyStopRegressor.load(tmp_path)
    assert loaded.cut == regressor.cut
    assert loaded.proxy_spearman == pytest.approx(regressor.proxy_spearman)
    # a regressor saved before the cut signal existed loads without one
    schema = json.loads((tmp_path / "regressor.json").read_text())
    del schema["cut"], schema["proxy_spearman"]
    (tmp_path / "regressor.json").write_text(json.dumps(schema))
    old = EarlyStopRegressor.load(tmp_path)
    assert old.cut is None and not old.uses_cut


def test_where_the_configuration_matters_more_the_proxy_is_kept():
    """y = q + 12·x: the curves show q only; the regressor also knows x (via the prior)."""
    corpus = Corpus(dict(SPACE), [_dataset(f"d{i}", i, config_weight=12.0) for i in range(5)])
    regressor = fit_prior(corpus, grid=[TreeParams(n_estimators=30)], n_models=1).regressor
    assert regressor is not None and regressor.cut is not None
    assert regressor.proxy_spearman > regressor.cut.spearman
    assert not regressor.uses_cut


def _early_stopped(config: dict, cut_quality: float, proxy: float) -> optuna.trial.FrozenTrial:
    dynamics = _curve(70.0, cut_quality, np.random.default_rng(1))
    return create_trial(
        state=TrialState.PRUNED,
        params=config,
        distributions=SPACE,
        user_attrs={
            "fidelity": 0.5,
            PROXY_ATTR: proxy,
            PROXY_VARIANCE_ATTR: 0.5,
            DYNAMICS_ATTR: dynamics.to_json(),
        },
    )


def _study_with_disagreeing_signals() -> optuna.Study:
    """Three early stops: the best cut (trial 1) has the worst proxy."""
    study = optuna.create_study(direction="maximize")
    for i, (cut, proxy) in enumerate([(0.0, 0.5), (2.0, -1.0), (1.0, 1.5)]):
        study.add_trial(_early_stopped({"x": 0.1 * (i + 1), "w": 0.5}, cut, proxy))
    return study


def test_the_sampler_observes_the_cut_standardised_within_the_study(prior):
    study = _study_with_disagreeing_signals()
    sampler = AutoPipeSampler(prior, {"size": 0.0}, seed=0, search_space=SPACE)
    signal = prior.regressor.cut
    observed = sampler._observations(study.trials, SPACE, study.direction)
    cuts = np.array(
        [
            signal.value(_curve(70.0, q, np.random.default_rng(1)), fraction=0.5)
            for q in (0.0, 2.0, 1.0)
        ]
    )
    # (the dynamics attr keeps 7 significant digits)
    np.testing.assert_allclose([o.z for o in observed], signal.slope * standardise(cuts), atol=1e-5)
    assert all(o.variance == signal.variance for o in observed)
    assert sampler.recommend(study) == study.trials[1].params
    proxies = AutoPipeSampler(prior, {"size": 0.0}, search_space=SPACE, early_stop_signal="proxy")
    assert [o.z for o in proxies._observations(study.trials, SPACE, study.direction)] == [
        0.5,
        -1.0,
        1.5,
    ]
    assert proxies.recommend(study) == study.trials[2].params


@pytest.mark.parametrize("complete_cut", [0.5, 3.0])
def test_a_run_that_completed_competes_with_the_early_stops_by_its_score_at_the_cut(
    prior, complete_cut
):
    """A short run completes inside the early-stop phase; its final value is on another
    scale than the early stops, so the recommendation compares scores at the cut."""
    study = _study_with_disagreeing_signals()
    completed = create_trial(
        value=1.0,
        params={"x": 0.7, "w": 0.7},
        distributions=SPACE,
        user_attrs={
            "fidelity": 1.0,
            DYNAMICS_ATTR: _curve(70.0, complete_cut, np.random.default_rng(1)).to_json(),
        },
    )
    study.add_trial(completed)
    sampler = AutoPipeSampler(prior, {"size": 0.0}, search_space=SPACE)
    best = completed if complete_cut > 2.0 else study.trials[1]
    assert sampler.recommend(study) == best.params
    assert sampler.recommend(study, rule="belief") == completed.params
    proxies = AutoPipeSampler(prior, {"size": 0.0}, search_space=SPACE, early_stop_signal="proxy")
    assert proxies.recommend(study) == completed.params


def test_a_trial_without_dynamics_makes_every_early_stop_use_its_proxy(prior):
    study = _study_with_disagreeing_signals()
    bare = create_trial(
        state=TrialState.PRUNED,
        params={"x": 0.9, "w": 0.9},
        distributions=SPACE,
        user_attrs={"fidelity": 0.5, PROXY_ATTR: 0.0, PROXY_VARIANCE_ATTR: 0.5},
    )
    study.add_trial(bare)
    sampler = AutoPipeSampler(prior, {"size": 0.0}, search_space=SPACE)
    observed = sampler._observations(study.trials, SPACE, study.direction)
    assert [o.z for o in observed] == [0.5, -1.0, 1.5, 0.0]


def test_early_stop_signal_is_checked(prior):
    with pytest.raises(ValueError, match="early_stop_signal must be"):
        AutoPipeSampler(prior, {"size": 0.0}, early_stop_signal="loss")
    without_cut = Prior(ranker=prior.ranker, regressor=None)
    with pytest.raises(ValueError, match="needs a prior whose early-stop regressor has a cut"):
        AutoPipeSampler(without_cut, {"size": 0.0}, early_stop_signal="cut")
    with pytest.raises(ValueError, match="needs a prior whose early-stop regressor has a cut"):
        AutoPipeSampler(None, early_stop_signal="cut")


def test_only_level_statistics_compete_and_their_ranking_survives_save_and_load(prior, tmp_path):
    rng = np.random.default_rng(3)
    z = rng.normal(size=40)
    names = ["m.prefix.std", "m.prefix.mean", "m.late.slope", "m.late.min"]
    # a spread and a trend statistic that rank perfectly, two levels that rank less well
    columns = [z, z + rng.normal(0, 0.5, 40), -z, -(z + rng.normal(0, 2.0, 40))]
    cut = CutSignal.fit(np.c_[tuple(columns)], names, z, np.zeros(40))
    assert cut is not None and cut.feature == "m.prefix.mean" and cut.sign == 1.0
    assert [name for name, _ in cut.candidates] == ["m.prefix.mean", "m.late.min"]
    assert cut.candidates[1][1] < 0 and cut.record()["candidates"][0][0] == "m.prefix.mean"
    assert CutSignal.fit(np.c_[z], ["m.prefix.std"], z, np.zeros(40)) is None
    prior.save(tmp_path)
    loaded = Prior.load(tmp_path).regressor
    assert loaded is not None and loaded.cut == prior.regressor.cut
    assert loaded.cut.candidates and all(
        name.rsplit(".", 1)[1] in ("mean", "max", "min") for name, _ in loaded.cut.candidates
    )


@pytest.mark.parametrize(
    ("groups", "anchors", "judged"),
    [
        (["d0"], "in-sample", False),
        (["g", "g"], "in-sample", False),
        (["a", "b"], "cross-fitted", True),
    ],
)
def test_a_prior_from_little_history_says_what_it_could_not_judge(groups, anchors, judged):
    datasets = [_dataset(f"d{i}", i) for i in range(len(groups))]
    for d, group in zip(datasets, groups, strict=True):
        d.group = group
    prior = fit_prior(Corpus(dict(SPACE), datasets), grid=[TreeParams(n_estimators=30)] * 2)
    record = prior.record
    assert record["ranker"]["groups"] == len(set(groups))
    assert record["ranker"]["grid_search"].startswith("skipped: ")
    assert record["regressor"]["anchors"] == anchors
    assert record["regressor"]["proxy_judgement"].startswith(
        "out of fold" if judged else "not judged"
    )
    assert (record["regressor"]["proxy_spearman"] is not None) == judged
    if not judged:  # nothing judged in-sample: the conservative signal, the run's own score
        assert prior.regressor.uses_cut and record["regressor"]["auto_signal"] == "cut"
    sampler = AutoPipeSampler(prior, {"size": 0.0}, seed=0, search_space=SPACE, n_samples=64)
    study = optuna.create_study(direction="maximize", sampler=sampler)
    study.optimize(lambda t: t.suggest_float("x", 0, 1) + t.suggest_float("w", 0, 1), n_trials=4)
    assert (
        len(study.trials) == 4
        and (sampler._signal(study.trials)[0] is not None) == prior.regressor.uses_cut
    )


def test_a_group_of_one_run_is_scored_but_not_used_to_cross_fit():
    single = _dataset("single", 1).take([0])
    single.group = "other"
    prior = fit_prior(Corpus(dict(SPACE), [_dataset("d0", 0), single]), grid=[TreeParams()])
    assert prior.record["regressor"]["anchors"] == "in-sample"  # one group can rank
    assert prior.regressor is not None and prior.regressor.uses_cut


def _early_stops_without_proxies(*, fraction: float) -> optuna.Study:
    """Three early stops at ``fraction`` (``autopipe:fraction``) with dynamics and no proxy;
    the best cut is trial 1's."""
    study = optuna.create_study(direction="maximize")
    for i, cut in enumerate([0.0, 2.0, 1.0]):
        study.add_trial(
            create_trial(
                state=TrialState.PRUNED,
                params={"x": 0.1 * (i + 1), "w": 0.5},
                distributions=SPACE,
                user_attrs={
                    "fidelity": fraction,
                    FRACTION_ATTR: fraction,
                    STOP_STEP_ATTR: round(TOTAL * fraction),
                    DYNAMICS_ATTR: _curve(70.0, cut, np.random.default_rng(1)).to_json(),
                },
            )
        )
    return study


def test_early_stops_recorded_by_a_hook_without_a_regressor_are_observed_by_their_cut(prior):
    """The hook given no ``regressor=`` records the dynamics but no proxy: the cut signal
    needs only the dynamics, so those early stops still count."""
    study = _early_stops_without_proxies(fraction=0.5)
    sampler = AutoPipeSampler(prior, {"size": 0.0}, seed=0, search_space=SPACE)
    assert len(sampler._observations(study.trials, SPACE, study.direction)) == 3
    assert sampler.recommend(study) == study.trials[1].params
    assert [t.number for t in sampler.early_stop_ranking(study)] == [1, 2, 0]
    proxies = AutoPipeSampler(prior, {"size": 0.0}, search_space=SPACE, early_stop_signal="proxy")
    assert proxies._observations(study.trials, SPACE, study.direction) == []


def test_the_sampler_reads_the_cut_of_the_fraction_the_study_stopped_at():
    """A prior serving 25% and 50%: early stops at 25% (``autopipe:fraction``) are read
    with the 25% regressor's cut signal, at 25%; a fraction the prior does not serve falls
    back to the proxies with one warning."""
    corpus = Corpus(dict(SPACE), [_dataset(f"d{i}", i) for i in range(5)])
    prior = fit_prior(corpus, grid=[TreeParams(n_estimators=30)], n_models=1, fractions=(0.25, 0.5))
    assert prior.fractions == [0.25, 0.5]
    sampler = AutoPipeSampler(prior, {"size": 0.0}, seed=0, search_space=SPACE)
    study = _early_stops_without_proxies(fraction=0.25)
    signal, fraction = sampler._signal(study.trials)
    regressor = prior.regressor_for(0.25)
    assert fraction == 0.25
    assert signal == (regressor.cut if regressor.uses_cut else None)
    if signal is not None:
        expected = signal.value(_curve(70.0, 2.0, np.random.default_rng(1)), fraction=0.25)
        assert sampler._cut_value(study.trials[1], signal, 0.25) == pytest.approx(
            expected, abs=1e-5
        )
    study.add_trial(
        create_trial(
            state=TrialState.PRUNED,
            params={"x": 0.9, "w": 0.9},
            distributions=SPACE,
            user_attrs={FRACTION_ATTR: 0.3, STOP_STEP_ATTR: 6},
        )
    )
    study.add_trial(study.trials[-1])
    with pytest.warns(UserWarning, match="serves early-stop fractions.*uses the proxies"):
        assert sampler._signal(study.trials[3:]) == (None, 0.3)
