"""The ``dehb`` peer: DEHB 0.1.2 (Awad et al., 2021), differential evolution inside
Hyperband brackets, levels 1..``n_steps`` with η = 3, driven through ``ask``/``tell``.

DEHB's fidelities are floats (``n_steps · 3^-k``); a run stops at the level rounded up. A
configuration DEHB promotes (the same ``config_id`` at a higher fidelity, in its first
brackets) resumes its earlier run and pays only the added levels; DEHB itself would retrain
it from scratch. DEHB minimises, so a maximised score is told negated; its ``cost`` is the
levels the run made. Increasing numeric categoricals are ordinal hyperparameters.
"""

from __future__ import annotations

import math
import tempfile
from collections.abc import Hashable
from typing import Any

import ConfigSpace as CS
import optuna
from dehb import DEHB
from optuna.distributions import (
    BaseDistribution,
    CategoricalDistribution,
    FloatDistribution,
    IntDistribution,
)

from optuna_autopipe.bench.methods import Context, register
from optuna_autopipe.bench.peers.driver import (
    Proposal,
    drive,
    ordered_numbers,
    peer_space,
    task_config,
)


def config_space(space: dict[str, BaseDistribution], seed: int) -> CS.ConfigurationSpace:
    """ConfigSpace hyperparameters for an Optuna search space."""
    cs = CS.ConfigurationSpace(seed=seed)
    for name, dist in peer_space(space).items():
        if isinstance(dist, CategoricalDistribution):
            kind = (
                CS.OrdinalHyperparameter if ordered_numbers(dist) else CS.CategoricalHyperparameter
            )
            cs.add(kind(name, list(dist.choices)))
        elif isinstance(dist, IntDistribution):
            cs.add(CS.UniformIntegerHyperparameter(name, dist.low, dist.high, log=dist.log))
        elif isinstance(dist, FloatDistribution):
            cs.add(CS.UniformFloatHyperparameter(name, dist.low, dist.high, log=dist.log))
        else:
            raise ValueError(f"Parameter {name!r}: no ConfigSpace hyperparameter for {dist}.")
    return cs


class DehbPeer:
    """DEHB as a ``driver.Peer``; a run is ``(config_id, level)``."""

    def __init__(self, ctx: Context, folder: str) -> None:
        self.space = ctx.task.search_space
        self.sign = -1.0 if ctx.task.direction == "maximize" else 1.0
        cs = config_space(self.space, ctx.seed)
        self.optimizer = DEHB(
            cs=cs,
            dimensions=len(cs),
            min_fidelity=1,
            max_fidelity=ctx.task.n_steps,
            eta=3,
            seed=ctx.seed,
            n_workers=1,
            output_path=folder,  # it always writes its log there
            save_freq=None,
            log_level="WARNING",
        )
        self.jobs: dict[Hashable, dict[str, Any]] = {}
        self.latest: dict[int, tuple[int, int]] = {}  # config_id -> its furthest run's key

    def ask(self) -> Proposal:
        job = self.optimizer.ask()
        config_id = int(job["config_id"])
        level = max(1, math.ceil(float(job["fidelity"]) - 1e-9))
        earlier = self.latest.get(config_id)
        resume = earlier if earlier is not None and earlier[1] < level else None
        key = (config_id, level)
        self.jobs[key] = job
        self.latest[config_id] = key
        config = task_config(self.space, dict(job["config"]))
        return Proposal(key=key, config=config, stop_at=level, resume=resume)

    def on_step(self, key: Hashable, level: int, value: float) -> bool:
        raise AssertionError("every DEHB run has its level")  # stop_at is always set

    def tell(self, key: Hashable, level: int, value: float) -> None:
        self.optimizer.tell(self.jobs.pop(key), {"fitness": self.sign * value, "cost": level})


@register("dehb")
def dehb(ctx: Context) -> optuna.Study:
    with tempfile.TemporaryDirectory(prefix="autopipe-dehb-") as folder:
        return drive(ctx, DehbPeer(ctx, folder))
