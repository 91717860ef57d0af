"""The ``smac`` benchmark method (SMAC3's random-forest BO through ``SmacSampler``).

Kept apart so that the harness works without the optional ``smac`` package.
"""

from __future__ import annotations

from optuna_autopipe.bench.methods import register, sequential
from optuna_autopipe.bench.smac_sampler import SmacSampler

register("smac")(sequential(lambda ctx: SmacSampler(seed=ctx.seed, n_trials=ctx.budget)))
