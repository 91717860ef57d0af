"""The ``priorband`` peer: NePS 0.13.0's PriorBand (Mallik et al., 2023), Hyperband whose
sampling mixes a prior over configurations, uniform draws and the incumbent, driven through
``neps.AskAndTell``.

The prior is the ``global`` configuration of the offline datasets (``methods.global_config``:
the best mean rank over their pools, mapped onto the held-out task) at confidence
``PRIOR_CONFIDENCE``; the fidelity is the task's levels 1..``n_steps`` (rungs
``int(n_steps / 3^k)``). A promotion (the same configuration at the next rung, NePS's
``previous_trial_id``) resumes its run. NePS minimises, so a maximised score is told negated.
NePS has no seed argument: the global ``random``, NumPy and torch generators are seeded with
the study's seed before it is built (measured reproducible so). NePS 0.13's
``AskAndTell.tell`` drops the report (fixed in 0.14, which needs numpy 2), so ``tell`` stores
it on the trial as 0.14 does.
"""

from __future__ import annotations

import random
import time
from collections.abc import Hashable
from typing import Any

import neps
import numpy as np
import optuna
import torch
from optuna.distributions import (
    BaseDistribution,
    CategoricalDistribution,
    FloatDistribution,
    IntDistribution,
)

from optuna_autopipe.bench.methods import Context, global_config, register
from optuna_autopipe.bench.peers.driver import Proposal, drive, peer_space, task_config

LEVEL = "autopipe_level"
PRIOR_CONFIDENCE = "medium"


def neps_space(
    space: dict[str, BaseDistribution], prior: dict[str, Any], levels: int
) -> neps.SearchSpace:
    """NePS parameters for an Optuna search space, each with ``prior``'s value, and the
    fidelity ``LEVEL`` in 1..``levels``. Categoricals stay categorical (NePS has no ordinal:
    its log integers sample only a few values of a small range)."""
    parameters: dict[str, Any] = {}
    for name, dist in peer_space(space).items():
        belief = {"prior": prior[name], "prior_confidence": PRIOR_CONFIDENCE}
        if isinstance(dist, CategoricalDistribution):
            parameters[name] = neps.Categorical(list(dist.choices), **belief)
        elif isinstance(dist, IntDistribution):
            parameters[name] = neps.Integer(dist.low, dist.high, log=dist.log, **belief)
        elif isinstance(dist, FloatDistribution):
            parameters[name] = neps.Float(dist.low, dist.high, log=dist.log, **belief)
        else:
            raise ValueError(f"Parameter {name!r}: no NePS parameter for {dist}.")
    parameters[LEVEL] = neps.Integer(1, levels, is_fidelity=True)
    return neps.SearchSpace(parameters)


class PriorBandPeer:
    """PriorBand as a ``driver.Peer``; a run is NePS's trial id ``"<config>_<rung>"``."""

    def __init__(self, ctx: Context) -> None:
        self.space = ctx.task.search_space
        self.sign = -1.0 if ctx.task.direction == "maximize" else 1.0
        random.seed(ctx.seed)
        np.random.seed(ctx.seed)
        torch.manual_seed(ctx.seed)
        prior, _ = global_config(ctx)
        optimizer = neps.algorithms.priorband(
            neps_space(self.space, prior, ctx.task.n_steps), eta=3, base="hyperband"
        )
        self.ask_tell = neps.AskAndTell(optimizer)

    def ask(self) -> Proposal:
        trial = self.ask_tell.ask()
        values = dict(trial.config)
        return Proposal(
            key=trial.id,
            config=task_config(self.space, values),
            stop_at=int(values[LEVEL]),
            resume=trial.metadata.previous_trial_id,
        )

    def on_step(self, key: Hashable, level: int, value: float) -> bool:
        raise AssertionError("every PriorBand run has its rung")  # stop_at is always set

    def tell(self, key: Hashable, level: int, value: float) -> None:
        trial = self.ask_tell.trials[key]
        trial.report = trial.set_complete(
            report_as="success",
            objective_to_minimize=float(self.sign * value),
            cost=float(level),
            learning_curve=None,
            err=None,
            tb=None,
            extra=None,
            time_end=time.time(),
            evaluation_duration=0.0,
        )


@register("priorband")
def priorband(ctx: Context) -> optuna.Study:
    return drive(ctx, PriorBandPeer(ctx))
