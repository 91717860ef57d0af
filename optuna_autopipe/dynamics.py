"""Training-dynamics features from the truncated prefix of a run (paper, appendix B.2.1).

A run's dynamics are named series of logged scalars, ``{metric: [[step, value], ...]}``
(train loss, eval loss, grad norm, learning rate, ...), logged at uneven steps. Features use
only points with ``step <= stop_step`` (the early-stop point), over two windows:

- ``prefix``: every point up to ``stop_step``;
- ``late``: points with ``step >= (1 - late_share) · stop_step`` (the last 20% by default).

Per metric and window: ``mean``, ``max``, ``min``, ``std`` (population), ``slope`` (least
squares of value against step) and ``mean_diff`` (mean of consecutive differences). Named
``<metric>.<window>.<statistic>``; NaN where the window has too few finite points (no point:
all NaN; one point: ``std``, ``slope`` and ``mean_diff`` NaN) or the metric was never logged.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import numpy as np

STATISTICS = ("mean", "max", "min", "std", "slope", "mean_diff")
WINDOWS = ("prefix", "late")

Dynamics = Mapping[str, Sequence[Sequence[float]]]


def feature_names(metrics: Sequence[str]) -> list[str]:
    """The feature names for ``metrics``, in the order ``dynamics_features`` returns them."""
    return [f"{m}.{w}.{s}" for m in metrics for w in WINDOWS for s in STATISTICS]


def dynamics_features(
    dynamics: Dynamics,
    *,
    stop_step: float,
    metrics: Sequence[str] | None = None,
    late_share: float = 0.2,
) -> dict[str, float]:
    """Features of ``dynamics`` truncated at ``stop_step`` (see the module docstring).

    ``metrics`` fixes the feature set (a metric absent from ``dynamics`` gives NaN features);
    by default, every metric present.
    """
    if not stop_step > 0:
        raise ValueError(f"stop_step must be positive, got {stop_step!r}.")
    if not 0 < late_share <= 1:
        raise ValueError(f"late_share must be in (0, 1], got {late_share!r}.")
    features: dict[str, float] = {}
    for metric in sorted(dynamics) if metrics is None else metrics:
        points = np.asarray(dynamics.get(metric, []), dtype=float).reshape(-1, 2)
        points = points[np.isfinite(points).all(axis=1) & (points[:, 0] <= stop_step)]
        points = points[np.argsort(points[:, 0], kind="stable")]
        windows = {
            "prefix": points,
            "late": points[points[:, 0] >= (1 - late_share) * stop_step],
        }
        for window, (steps, values) in ((w, p.T) for w, p in windows.items()):
            for statistic, value in _statistics(steps, values).items():
                features[f"{metric}.{window}.{statistic}"] = value
    return features


def _statistics(steps: np.ndarray, values: np.ndarray) -> dict[str, float]:
    if len(values) == 0:
        return dict.fromkeys(STATISTICS, math.nan)
    result = {
        "mean": float(values.mean()),
        "max": float(values.max()),
        "min": float(values.min()),
        "std": math.nan,
        "slope": math.nan,
        "mean_diff": math.nan,
    }
    if len(values) >= 2:
        result["std"] = float(values.std())
        result["mean_diff"] = float(np.diff(values).mean())
        if np.ptp(steps) > 0:
            result["slope"] = float(np.polyfit(steps, values, 1)[0])
    return result
