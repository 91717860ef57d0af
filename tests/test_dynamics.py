from __future__ import annotations

import json
import math

import numpy as np
import optuna
import pytest

from optuna_autopipe.dynamics import STATISTICS, TrainingDynamics, dynamics_features, feature_names


def test_statistics_over_the_prefix_and_the_late_window_by_hand():
    # loss at uneven steps; the point at step 120 lies beyond the early stop and must not count
    dynamics = {"loss": [[10, 4.0], [30, 3.0], [60, 2.0], [85, 1.6], [100, 1.4], [120, 0.1]]}
    f = dynamics_features(dynamics, stop_step=100)
    assert f["loss.prefix.mean"] == pytest.approx((4 + 3 + 2 + 1.6 + 1.4) / 5)
    assert f["loss.prefix.max"] == 4.0 and f["loss.prefix.min"] == 1.4
    assert f["loss.prefix.mean_diff"] == pytest.approx((1.4 - 4.0) / 4)
    # late window: steps >= 80 -> (85, 1.6), (100, 1.4)
    assert f["loss.late.mean"] == pytest.approx(1.5)
    assert f["loss.late.slope"] == pytest.approx(-0.2 / 15)
    assert f["loss.late.std"] == pytest.approx(0.1)
    assert list(f) == feature_names(["loss"])


def test_missing_metrics_and_sparse_windows_give_nan_not_errors():
    dynamics = {"train_loss": [[5, 2.0], [50, 1.0]], "eval_loss": [[50, 1.5]]}
    f = dynamics_features(dynamics, stop_step=50, metrics=["train_loss", "eval_loss", "entropy"])
    assert all(math.isnan(f[f"entropy.prefix.{s}"]) for s in STATISTICS)
    assert f["eval_loss.prefix.mean"] == 1.5 and math.isnan(f["eval_loss.prefix.slope"])
    assert f["train_loss.late.mean"] == 1.0 and math.isnan(f["train_loss.late.std"])
    assert f["train_loss.prefix.slope"] == pytest.approx(-1 / 45)


def test_nan_points_are_ignored_and_bad_arguments_rejected():
    f = dynamics_features({"loss": [[1, float("nan")], [2, 1.0], [3, 3.0]]}, stop_step=3)
    assert f["loss.prefix.mean"] == 2.0
    with pytest.raises(ValueError, match="stop_step"):
        dynamics_features({}, stop_step=0)
    with pytest.raises(ValueError, match="late_share"):
        dynamics_features({}, stop_step=10, late_share=0)


def test_known_slopes_and_means_of_linear_curves():
    # value = 3 - 0.02 * step on steps 2, 4, ..., 200; cut at 100, late window from step 80
    series = [[s, 3 - 0.02 * s] for s in range(2, 201, 2)]
    f = TrainingDynamics(total_steps=200, metrics={"loss": series}).features(fraction=0.5)
    assert f["loss.prefix.slope"] == pytest.approx(-0.02)
    assert f["loss.late.slope"] == pytest.approx(-0.02)
    assert f["loss.prefix.mean"] == pytest.approx(3 - 0.02 * 51)
    assert f["loss.late.mean"] == pytest.approx(3 - 0.02 * 90)
    assert f["loss.prefix.mean_diff"] == pytest.approx(-0.04)
    assert f["loss.prefix.rel_change"] == pytest.approx((3 - 2.0 - (3 - 0.04)) / (3 - 0.04))
    assert f["loss.prefix.nonfinite"] == 0.0


def test_no_feature_uses_points_past_the_cut():
    rng = np.random.default_rng(0)
    metrics = {
        "loss": [[s, float(v)] for s, v in zip(range(1, 101), rng.random(100), strict=True)],
        "eval_loss": [[s, float(rng.random())] for s in range(10, 101, 10)],
    }
    base = TrainingDynamics(total_steps=100, metrics=metrics).features(fraction=0.5)
    for trial in range(5):
        perturbed = {
            name: [[s, v if s <= 50 else float(rng.normal(0, 100 * (trial + 1)))] for s, v in pts]
            for name, pts in metrics.items()
        }
        perturbed["loss"].append([100.0, math.nan])
        after = TrainingDynamics(total_steps=100, metrics=perturbed).features(fraction=0.5)
        assert after.keys() == base.keys()
        assert all(
            (math.isnan(base[k]) and math.isnan(after[k])) or base[k] == after[k] for k in base
        )


def test_a_diverged_run_gives_finite_statistics_and_its_nonfinite_share():
    series = [[1, 2.0], [2, 1.5], [3, math.inf], [4, math.nan]]
    f = dynamics_features({"loss": series}, stop_step=4)
    assert f["loss.prefix.nonfinite"] == 0.5 and f["loss.prefix.mean"] == 1.75
    all_bad = dynamics_features({"loss": [[1, math.nan], [2, math.inf]]}, stop_step=2)
    assert all_bad["loss.prefix.nonfinite"] == 1.0 and math.isnan(all_bad["loss.prefix.mean"])


def test_json_round_trip_is_compact_and_turns_nonfinite_values_into_null():
    dynamics = TrainingDynamics(total_steps=50)
    dynamics.record(1, {"loss": 2.0, "learning_rate": 1e-5, "epoch": 0.1, "note": "text"})
    dynamics.record(2, {"loss": math.nan, "flag": True})
    text = dynamics.to_json()
    assert " " not in text and "NaN" not in text and "null" in text
    back = TrainingDynamics.from_json(text)
    assert back.total_steps == 50 and set(back.metrics) == {"loss", "learning_rate", "epoch"}
    assert back.metrics["loss"][0] == [1.0, 2.0] and math.isnan(back.metrics["loss"][1][1])
    assert TrainingDynamics.from_json(json.loads(text)).metrics.keys() == back.metrics.keys()


def test_thinning_keeps_the_ends_of_long_series():
    dynamics = TrainingDynamics(total_steps=10_000)
    for step in range(1, 10_001):
        dynamics.record(step, {"loss": 1 / step})
    series = TrainingDynamics.from_json(dynamics.to_json(max_points=100)).metrics["loss"]
    assert len(series) == 100 and series[0][0] == 1 and series[-1][0] == 10_000


@pytest.mark.parametrize(
    "bad",
    [
        "{not json",
        '{"metrics": {}}',
        '{"total_steps": 0, "metrics": {}}',
        '{"total_steps": 10, "metrics": {"loss": [[1]]}}',
        '{"total_steps": 10, "metrics": [1, 2]}',
        "[]",
    ],
)
def test_malformed_dynamics_records_raise_a_clear_error(bad):
    with pytest.raises(ValueError, match="trial 7 is not a training-dynamics record"):
        TrainingDynamics.from_json(bad, source="trial 7")


def test_numpy_and_tensor_scalars_are_recorded_and_reported_and_booleans_are_not():
    import torch

    from optuna_autopipe.early_stop import AutoPipeEarlyStop

    dynamics = TrainingDynamics(total_steps=3)
    values = {"a": np.float32(0.5), "b": torch.tensor(0.25), "c": True, "d": "x"}
    dynamics.record(1, {**values, "e": np.array([1.0, 2.0])})
    assert dynamics.metrics == {"a": [[1.0, 0.5]], "b": [[1.0, 0.25]]}
    study = optuna.create_study()
    trial = study.ask()
    hook = AutoPipeEarlyStop(trial, total_steps=4, fraction=1.0)
    for step in (1, 2):
        hook.report(step, {"loss": torch.tensor(3.0 - step), "flag": True})
    hook.finish()
    assert study.trials[0].intermediate_values == {1: 2.0, 2: 1.0}
    assert set(TrainingDynamics.from_json(trial.user_attrs["autopipe:dynamics"]).metrics) == {
        "loss"
    }
