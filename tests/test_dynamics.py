from __future__ import annotations

import math

import pytest

from optuna_autopipe.dynamics import STATISTICS, dynamics_features, feature_names


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
