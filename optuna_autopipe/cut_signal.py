"""The score a run shows at the cut, an early-stop signal chosen per prior from its corpus.

A run's own metric at the early-stop point (e.g. its best dev perplexity so far) often ranks
one dataset's runs better than the regressor's proxy ŷ (``autopipe prior-report``: within-
dataset Spearman 0.98 vs 0.70 on NMT, 0.93 vs 0.82 on LCBench), but it lives on each dataset's
own scale: it compares runs of one dataset only, which a regressor trained across datasets
cannot exploit. ``CutSignal.fit`` looks at the regressor's training datasets only and picks,
among the *level* statistics at the cut (``LEVELS``: mean, max, min of a metric over the
prefix or its late window, ``dynamics.py``, e.g. ``dev_perplexity.prefix.min``), the one whose
within-dataset Spearman correlation with the final score, averaged over datasets (0 where
undefined), is largest in absolute value; ``sign`` orients it (higher = better). Spread and
trend statistics (std, slope, relative change, ...) are left out on purpose: on a corpus of
one or two datasets one of them can beat the running best by chance (measured: a std won by
0.014 on the source dataset and ranked the target's runs at 0.07), while a metric's level is
what the final score is made of. ``candidates`` keeps the ranking of every level statistic.
With ĉ the oriented feature standardised within its dataset and z the standardised final
score, the pooled least-squares fit z ≈ β·ĉ gives ``slope`` β and the residual ``variance`` v.

Online (``AutoPipeSampler``), when the signal ranked the corpus better than the regressor's
out-of-fold proxy, an early-stopped trial's observation is z = β·ĉ with variance v, ĉ now
standardised over the study's early-stopped trials (the only runs of the new dataset).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy.stats import spearmanr

from optuna_autopipe.dynamics import TrainingDynamics

#: The statistics a cut signal may be (a metric's level at the cut, not its spread or trend).
LEVELS = ("mean", "max", "min")


def within_spearman(x: np.ndarray, z: np.ndarray, groups: np.ndarray) -> float:
    """Mean over groups of Spearman(x, z) within each group, shapes ``(n,)``; a group where
    it is undefined (under 3 finite pairs, a constant) counts as 0."""
    values = []
    for g in np.unique(groups):
        mask = (groups == g) & np.isfinite(x) & np.isfinite(z)
        rho = math.nan
        if mask.sum() >= 3 and np.ptp(x[mask]) > 0 and np.ptp(z[mask]) > 0:
            rho = float(spearmanr(x[mask], z[mask]).statistic)
        values.append(0.0 if math.isnan(rho) else rho)
    return float(np.mean(values)) if values else 0.0


def standardise(values: np.ndarray) -> np.ndarray:
    """(v − mean) / sd over the finite entries (sd 1 when under 2 or constant; NaN stays)."""
    finite = values[np.isfinite(values)]
    sd = finite.std() if len(finite) >= 2 else 0.0
    return (values - (finite.mean() if len(finite) else 0.0)) / (sd if sd > 0 else 1.0)


@dataclass(frozen=True)
class CutSignal:
    """One oriented dynamics feature at the cut and its calibration (module docstring)."""

    feature: str
    sign: float
    spearman: float
    slope: float
    variance: float
    #: Every level statistic considered, ``(name, signed mean within-dataset Spearman)``,
    #: best first (by absolute value).
    candidates: tuple[tuple[str, float], ...] = ()

    def __post_init__(self) -> None:  # a loaded schema holds lists
        object.__setattr__(
            self, "candidates", tuple((str(n), float(r)) for n, r in self.candidates)
        )

    @classmethod
    def fit(
        cls, features: np.ndarray, names: Sequence[str], z: np.ndarray, groups: np.ndarray
    ) -> CutSignal | None:
        """Choose among the level-statistic columns of ``names`` (``LEVELS``) of ``features``
        (n, k) for the standardised final scores ``z`` (n,) of runs of the datasets
        ``groups`` (n,; one id per dataset, not per group of related datasets); ``None`` if
        no level column relates."""
        levels = [j for j, name in enumerate(names) if name.rsplit(".", 1)[-1] in LEVELS]
        rhos = {j: within_spearman(features[:, j], z, groups) for j in levels}
        ranking = sorted(rhos, key=lambda j: -abs(rhos[j]))
        if not ranking or rhos[ranking[0]] == 0:
            return None
        j = ranking[0]
        sign = 1.0 if rhos[j] > 0 else -1.0
        cut = np.full(len(z), math.nan)
        for g in np.unique(groups):
            mask = groups == g
            cut[mask] = standardise(sign * features[mask, j])
        ok = np.isfinite(cut) & np.isfinite(z)
        slope = float(cut[ok] @ z[ok] / max(cut[ok] @ cut[ok], 1e-12))
        variance = float(np.mean((z[ok] - slope * cut[ok]) ** 2))
        candidates = tuple((names[k], rhos[k]) for k in ranking)
        return cls(names[j], sign, abs(rhos[j]), slope, variance, candidates)

    def record(self, top: int = 5) -> dict[str, Any]:
        """The choice and its ``top`` best candidates, as plain JSON."""
        return {
            "feature": self.feature,
            "higher_is_better": self.sign > 0,
            "spearman": self.spearman,
            "candidates": [list(c) for c in self.candidates[:top]],
        }

    def value(self, dynamics: TrainingDynamics, *, fraction: float) -> float:
        """The oriented feature of a run's ``dynamics`` at ``fraction`` (NaN when missing)."""
        metric = self.feature.rsplit(".", 2)[0]  # <metric>.<window>.<statistic>
        return self.sign * dynamics.features(fraction=fraction, metrics=[metric])[self.feature]
