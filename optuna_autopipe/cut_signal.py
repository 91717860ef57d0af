"""The score a run shows at the cut, an early-stop signal chosen per prior from its corpus.

A run's own metric at the early-stop point (e.g. its best dev perplexity so far) often ranks
one dataset's runs better than the regressor's proxy ŷ (``autopipe prior-report``: within-
dataset Spearman 0.98 vs 0.70 on NMT, 0.93 vs 0.82 on LCBench), but it lives on each dataset's
own scale: it compares runs of one dataset only, which a regressor trained across datasets
cannot exploit. ``CutSignal.fit`` looks at the regressor's training datasets only and picks the
dynamics feature f at the cut (``dynamics.py``, e.g. ``dev_perplexity.prefix.min``) whose
within-dataset Spearman correlation with the final score, averaged over datasets (0 where
undefined), is largest in absolute value; ``sign`` orients it (higher = better). With ĉ the
oriented feature standardised within its dataset and z the standardised final score, the
pooled least-squares fit z ≈ β·ĉ gives ``slope`` β and the residual ``variance`` v.

Online (``AutoPipeSampler``), when the signal ranked the corpus better than the regressor's
out-of-fold proxy, an early-stopped trial's observation is z = β·ĉ with variance v, ĉ now
standardised over the study's early-stopped trials (the only runs of the new dataset).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from scipy.stats import spearmanr

from optuna_autopipe.dynamics import TrainingDynamics


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

    @classmethod
    def fit(
        cls, features: np.ndarray, names: Sequence[str], z: np.ndarray, groups: np.ndarray
    ) -> CutSignal | None:
        """Choose among the columns ``names`` of ``features`` (n, k) for the standardised
        final scores ``z`` (n,) of runs of the datasets ``groups`` (n,; one id per dataset,
        not per group of related datasets); ``None`` if no column relates."""
        rhos = [within_spearman(features[:, j], z, groups) for j in range(len(names))]
        if not rhos or max(map(abs, rhos)) == 0:
            return None
        j = int(np.argmax(np.abs(rhos)))
        sign = 1.0 if rhos[j] > 0 else -1.0
        cut = np.full(len(z), math.nan)
        for g in np.unique(groups):
            mask = groups == g
            cut[mask] = standardise(sign * features[mask, j])
        ok = np.isfinite(cut) & np.isfinite(z)
        slope = float(cut[ok] @ z[ok] / max(cut[ok] @ cut[ok], 1e-12))
        variance = float(np.mean((z[ok] - slope * cut[ok]) ** 2))
        return cls(names[j], sign, abs(rhos[j]), slope, variance)

    def value(self, dynamics: TrainingDynamics, *, fraction: float) -> float:
        """The oriented feature of a run's ``dynamics`` at ``fraction`` (NaN when missing)."""
        metric = self.feature.rsplit(".", 2)[0]  # <metric>.<window>.<statistic>
        return self.sign * dynamics.features(fraction=fraction, metrics=[metric])[self.feature]
