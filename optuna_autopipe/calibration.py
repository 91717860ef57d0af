"""How much the prior deserves on the target dataset, measured from the study's own results.

The paper anneals the prior's weight λ_t on a fixed schedule (``acquisition.Schedule``),
whatever the new dataset says. A prior learned from dissimilar or too little history can be
plainly wrong there, and a fixed λ then follows it into bad configurations. Here the weight is
estimated instead: the prior enters the model as a mean function m(x) = b + w·s(x), and w is
the posterior mean of a Bayesian linear regression of the observations on the prior's
scores,

    z_i = b + w·s_i + ε_i,    ε_i ~ N(0, v_i + τ²),    w ~ N(w₀, σ_w²),    b flat,

with z_i an observation (standardised, higher is better), s_i the prior's standardised score
of its configuration, v_i its noise variance, and τ² the share of z the prior cannot explain
on a new dataset (the residual GP models it). Integrating b out, the posterior of w is
Gaussian with precision P = 1/σ_w² + Σ_i a_i (s_i − s̄)² and mean
ŵ = (w₀/σ_w² + Σ_i a_i (s_i − s̄)(z_i − z̄)) / P, where a_i = 1/(v_i + τ²) and s̄, z̄ are the
a-weighted means. ŵ is clipped to [0, w₀]: a prior that ranks the target backwards is
ignored, not followed in reverse (``PriorWeight.weight``).

Before any observation ŵ = w₀ (the prior's corpus says it ranks well); observations whose s
barely varies (the prior's own top picks) move it little, which is why the warm start also
takes one configuration anywhere in the space (``AutoPipeSampler``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class PriorWeight:
    """The prior's weight w in m(x) = b + w·s(x), estimated online (module docstring).

    Attributes:
        start: w₀, the weight before any evidence (and the largest allowed).
        prior_sd: σ_w, how far the evidence must move w₀ (in units of w).
        unexplained: τ², the variance of z the prior cannot explain (z units).
    """

    start: float = 1.0
    prior_sd: float = 0.5
    unexplained: float = 0.5

    def __post_init__(self) -> None:
        for name in ("start", "prior_sd", "unexplained"):
            value = getattr(self, name)
            if not (0 < value < math.inf):
                raise ValueError(f"PriorWeight.{name} must be positive and finite, got {value!r}.")

    def posterior(
        self, prior: np.ndarray, z: np.ndarray, variance: np.ndarray
    ) -> tuple[float, float]:
        """(mean, standard deviation) of w given observations ``z`` (n,) at prior scores
        ``prior`` (n,) with noise ``variance`` (n,), before clipping."""
        precision = 1.0 / self.prior_sd**2
        if len(z) < 2:
            return self.start, math.sqrt(1.0 / precision)
        a = 1.0 / (np.asarray(variance, dtype=float) + self.unexplained)
        s_c = prior - np.sum(a * prior) / a.sum()
        z_c = z - np.sum(a * z) / a.sum()
        precision += float(np.sum(a * s_c**2))
        mean = (self.start / self.prior_sd**2 + float(np.sum(a * s_c * z_c))) / precision
        return mean, math.sqrt(1.0 / precision)

    def weight(self, prior: np.ndarray, z: np.ndarray, variance: np.ndarray) -> float:
        """ŵ clipped to [0, ``start``]: the weight the acquisition gives the prior."""
        return float(np.clip(self.posterior(prior, z, variance)[0], 0.0, self.start))
