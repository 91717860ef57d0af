"""The tempered UCB of the online phase (paper B.3) and its schedules.

    UCB_t(x) = λ_t · s(x) + b + μ_t(x) + κ_t · σ_t(x)

- s(x): the prior's standardised score; μ_t, σ_t: the residual GP's posterior;
- b: the dataset offset, the inverse-variance weighted mean of the stored pre-bias residuals,
  b = Σ r_i / v_i / Σ 1 / v_i (0 before any observation);
- λ_t: the prior's weight, annealed linearly from ``lambda_start`` (trial 0) to ``lambda_end``
  (trial ``budget − 1`` and after), so the prior steers first and the residual model later;
- κ_t: the exploration weight, decaying geometrically from ``kappa_start`` to ``kappa_end``
  over the same range.

Defaults (the paper's values were lost in extraction): λ 1 → 0.5, κ 2 → 0.5. With s and the
residuals in standard-deviation units, κ = 2 starts with a wide optimism bonus; ending at 0.5
exploits by the last trials; λ stays at least 0.5 so a few noisy proxies cannot overrule the
prior entirely.
"""

from __future__ import annotations

import heapq
import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Schedule:
    """λ_t and κ_t over a budget of trials."""

    budget: int = 15
    lambda_start: float = 1.0
    lambda_end: float = 0.5
    kappa_start: float = 2.0
    kappa_end: float = 0.5

    def __post_init__(self) -> None:
        if self.budget < 1:
            raise ValueError(f"budget must be >= 1, got {self.budget}.")
        lambdas, kappas = (self.lambda_start, self.lambda_end), (self.kappa_start, self.kappa_end)
        if not all(0 <= v < math.inf for v in lambdas):  # also rejects NaN
            raise ValueError(f"lambda_start and lambda_end must be finite and >= 0, got {lambdas}.")
        if not all(0 < v < math.inf for v in kappas):
            raise ValueError(f"kappa_start and kappa_end must be finite and > 0, got {kappas}.")

    def progress(self, t: int) -> float:
        """t / (budget − 1), clipped to [0, 1]."""
        return 1.0 if self.budget == 1 else min(max(t / (self.budget - 1), 0.0), 1.0)

    def lam(self, t: int) -> float:
        return self.lambda_start + (self.lambda_end - self.lambda_start) * self.progress(t)

    def kappa(self, t: int) -> float:
        return self.kappa_start * (self.kappa_end / self.kappa_start) ** self.progress(t)


def offset(residuals: np.ndarray, variances: np.ndarray) -> float:
    """b: inverse-variance weighted mean of the residuals (0 when there are none)."""
    if len(residuals) == 0:
        return 0.0
    weights = 1.0 / np.asarray(variances, dtype=float)
    return float(np.sum(weights * residuals) / np.sum(weights))


def ucb(
    *,
    prior: np.ndarray,
    mean: np.ndarray,
    std: np.ndarray,
    bias: float,
    lam: float,
    kappa: float,
) -> np.ndarray:
    """λ·s(x) + b + μ(x) + κ·σ(x), elementwise over candidates."""
    return lam * prior + bias + mean + kappa * std


def best_first(
    upper: np.ndarray, exact: Callable[[np.ndarray], np.ndarray], *, batch: int = 256
) -> Iterator[int]:
    """Positions ``0 .. m−1`` in descending order of a score that is costly to compute.

    ``upper`` (m,) bounds each position's score from above; ``exact(positions)`` returns the
    scores there. Branch and bound: scores are computed in batches, in descending order of
    the bound, only while the next bound could still beat the best score not yet yielded: the
    order of sorting every exact score (up to the order of ties), while most positions are
    never computed when the bound is tight.
    """
    order = np.argsort(-upper, kind="stable")
    computed = 0
    heap: list[tuple[float, int]] = []  # (−score, position)
    while computed < len(order) or heap:
        while computed < len(order) and (not heap or -heap[0][0] < upper[order[computed]]):
            positions = order[computed : computed + batch]
            computed += len(positions)
            for position, score in zip(positions, exact(positions), strict=True):
                heapq.heappush(heap, (-float(score), int(position)))
        yield heapq.heappop(heap)[1]
