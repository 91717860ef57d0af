"""Training dynamics of a run and their features at an early-stop point (paper, appendix B.2.1).

``TrainingDynamics`` holds the named series of logged scalars of one run (train loss, eval
loss, grad norm, learning rate, ...), each ``[[step, value], ...]`` at its own uneven steps,
plus the planned training length ``total_steps``. It is stored on a trial as the compact JSON
user attr ``autopipe:dynamics`` (non-finite values as ``null``) and in corpus runs.

Features use only points with ``step <= stop_step`` (the early-stop point), over two windows:

- ``prefix``: every point up to ``stop_step``;
- ``late``: points with ``step >= (1 - late_share) · stop_step`` (the last 20% by default).

Per metric and window: ``mean``, ``max``, ``min``, ``std`` (population), ``slope`` (least
squares of value against step), ``mean_diff`` (mean of consecutive differences),
``rel_change`` ((last − first) / |first|, scale-free, so comparable across datasets whose
losses live on different scales) over the finite values, and ``nonfinite`` (share of NaN/inf
values: a diverging run). Named
``<metric>.<window>.<statistic>``; NaN where the window has too few finite points (none: all
NaN but ``nonfinite``; one: ``std``, ``slope``, ``mean_diff`` and ``rel_change`` NaN; a first
value of 0: ``rel_change`` NaN) or the metric was never logged (all NaN).
"""

from __future__ import annotations

import json
import math
import numbers
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

STATISTICS = ("mean", "max", "min", "std", "slope", "mean_diff", "rel_change", "nonfinite")
WINDOWS = ("prefix", "late")
#: Trial user attr holding a run's ``TrainingDynamics`` JSON.
DYNAMICS_ATTR = "autopipe:dynamics"

Series = Sequence[Sequence[float | None]]


def stop_step(total_steps: int, fraction: float) -> int:
    """The early-stop point of a run planned for ``total_steps``: ``ceil(fraction · total)``."""
    if not 0.0 < fraction <= 1.0:
        raise ValueError(f"The early-stop fraction must be in (0, 1], got {fraction!r}.")
    return max(1, math.ceil(fraction * total_steps))


@dataclass
class TrainingDynamics:
    """Logged metrics of one run: ``metrics[name] = [[step, value], ...]``."""

    total_steps: int
    metrics: dict[str, list[list[float]]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if isinstance(self.total_steps, bool) or not isinstance(self.total_steps, int | float):
            raise ValueError(f"total_steps must be a positive integer, got {self.total_steps!r}.")
        if not (math.isfinite(self.total_steps) and self.total_steps >= 1):
            raise ValueError(f"total_steps must be a positive integer, got {self.total_steps!r}.")
        self.total_steps = int(self.total_steps)

    def record(self, step: float, values: Mapping[str, Any]) -> None:
        """Append one logging event (every numeric value in ``values``, ``scalar``) at
        ``step``."""
        for name, value in values.items():
            number = scalar(value)
            if number is not None:
                self.metrics.setdefault(name, []).append([float(step), number])

    @property
    def last_step(self) -> float:
        """The latest step any metric was logged at (0 when nothing was)."""
        return max((p[0] for s in self.metrics.values() for p in s), default=0.0)

    def features(
        self, *, fraction: float, metrics: Sequence[str] | None = None, late_share: float = 0.2
    ) -> dict[str, float]:
        """Features at the early-stop point ``stop_step(total_steps, fraction)``."""
        return dynamics_features(
            self.metrics,
            stop_step=stop_step(self.total_steps, fraction),
            metrics=metrics,
            late_share=late_share,
        )

    def has_points(self, *, fraction: float, metrics: Sequence[str] | None = None) -> bool:
        """Whether any of ``metrics`` (default: all) has a finite value up to the cut."""
        cut = stop_step(self.total_steps, fraction)
        return any(
            p[0] <= cut and p[1] is not None and math.isfinite(p[1])
            for name in (self.metrics if metrics is None else metrics)
            for p in self.metrics.get(name, [])
        )

    def to_json(self, *, max_points: int | None = None) -> str:
        """Compact JSON; ``max_points`` thins each series evenly (keeping its ends)."""
        metrics = {}
        for name, series in self.metrics.items():
            if max_points is not None and len(series) > max_points:
                keep = np.unique(np.linspace(0, len(series) - 1, max_points).round().astype(int))
                series = [series[i] for i in keep]
            metrics[name] = [[_plain(s), _plain(v)] for s, v in series]
        document = {"total_steps": self.total_steps, "metrics": metrics}
        return json.dumps(document, separators=(",", ":"), allow_nan=False)

    def save_plot(self, path: str | Path, *, stop_step: float | None = None) -> None:
        """A PNG of every metric against the step, one panel each (at most 12, in name
        order), the early stop marked; matplotlib's ``Figure`` without pyplot, so no display
        or global state is touched."""
        from matplotlib.figure import Figure

        names = sorted(self.metrics)[:12]
        columns = min(3, max(1, len(names)))
        rows = max(1, math.ceil(len(names) / columns))
        figure = Figure(figsize=(4 * columns, 2.6 * rows), layout="constrained")
        for i, name in enumerate(names):
            axes = figure.add_subplot(rows, columns, i + 1)
            steps, values = zip(*self.metrics[name], strict=True)
            axes.plot(steps, values, marker="." if len(steps) < 50 else None)
            if stop_step is not None:
                axes.axvline(stop_step, color="grey", linestyle="--", label="early stop")
            axes.set_title(name)
            axes.set_xlim(0, self.total_steps)
            axes.set_xlabel("step")
        figure.savefig(path, dpi=90)

    @classmethod
    def from_json(
        cls, value: str | Mapping[str, Any], *, source: str = "dynamics"
    ) -> TrainingDynamics:
        """Parse ``to_json`` output (a string or the decoded mapping); errors name ``source``."""
        try:
            document = json.loads(value) if isinstance(value, str) else value
            metrics = {
                str(name): [
                    [float(step), math.nan if v is None else float(v)] for step, v in series
                ]
                for name, series in document["metrics"].items()
            }
            return cls(total_steps=document["total_steps"], metrics=metrics)
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            raise ValueError(
                f"{source} is not a training-dynamics record ({exc!r}); expected "
                '{"total_steps": N, "metrics": {name: [[step, value], ...]}} as written by '
                "AutoPipeEarlyStop."
            ) from exc


def scalar(value: Any) -> float | None:
    """``value`` as a float when it is one number: a Python or NumPy number, or a 0-d array or
    tensor (``torch.tensor(0.3)``); ``None`` for anything else (text, lists, booleans)."""
    if isinstance(value, bool | np.bool_):
        return None
    if isinstance(value, numbers.Real) or getattr(value, "shape", None) == ():
        try:
            return float(value)
        except (TypeError, ValueError):
            return None
    return None


def _plain(x: float) -> float | int | None:
    """A JSON-safe number: integers stay integers, non-finite becomes ``None``."""
    if not math.isfinite(x):
        return None
    return int(x) if float(x).is_integer() else float(f"{x:.7g}")


def feature_names(metrics: Sequence[str]) -> list[str]:
    """The feature names for ``metrics``, in the order ``dynamics_features`` returns them."""
    return [f"{m}.{w}.{s}" for m in metrics for w in WINDOWS for s in STATISTICS]


def dynamics_features(
    dynamics: Mapping[str, Series],
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
        raw = [(s, math.nan if v is None else v) for s, v in dynamics.get(metric, [])]
        points = np.asarray(raw, dtype=float).reshape(-1, 2)
        points = points[np.isfinite(points[:, 0]) & (points[:, 0] <= stop_step)]
        points = points[np.argsort(points[:, 0], kind="stable")]
        windows = {
            "prefix": points,
            "late": points[points[:, 0] >= (1 - late_share) * stop_step],
        }
        for window, window_points in windows.items():
            for statistic, value in _statistics(window_points).items():
                features[f"{metric}.{window}.{statistic}"] = value
    return features


def _statistics(points: np.ndarray) -> dict[str, float]:
    """The statistics of one window's ``(step, value)`` points, shape ``(n, 2)``."""
    result = dict.fromkeys(STATISTICS, math.nan)
    if len(points) == 0:
        return result
    finite = np.isfinite(points[:, 1])
    result["nonfinite"] = float(1.0 - finite.mean())
    steps, values = points[finite].T
    if len(values) == 0:
        return result
    result.update(mean=float(values.mean()), max=float(values.max()), min=float(values.min()))
    if len(values) >= 2:
        result["std"] = float(values.std())
        result["mean_diff"] = float(np.diff(values).mean())
        if values[0] != 0:
            result["rel_change"] = float((values[-1] - values[0]) / abs(values[0]))
        if np.ptp(steps) > 0:
            result["slope"] = float(np.polyfit(steps, values, 1)[0])
    return result
