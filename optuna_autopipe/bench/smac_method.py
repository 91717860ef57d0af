"""The ``smac`` and ``smac-es`` benchmark methods (SMAC3's random-forest BO through
``SmacSampler``; ``smac-es``: the early-stopped variant, ``early_stop_method.early_stopped``).

Kept apart so that the harness works without the optional ``smac`` package.
"""

from __future__ import annotations

from optuna_autopipe.bench.early_stop_method import early_stopped
from optuna_autopipe.bench.methods import register, sequential
from optuna_autopipe.bench.smac_sampler import SmacSampler

register("smac")(sequential(lambda ctx: SmacSampler(seed=ctx.seed, n_trials=ctx.budget)))
register("smac-es")(early_stopped(lambda ctx: SmacSampler(seed=ctx.seed, n_trials=ctx.budget)))
