"""Drive a peer optimiser through one benchmark study, ask/tell style.

A peer proposes runs (``Proposal``): a configuration, where to stop it (a resource level, or
``None`` to decide step by step through ``Peer.on_step``, a stopping-type scheduler) and,
for a promotion, which earlier run it continues. The driver makes each proposal one trial of
the study on the replay objective with BOHB's budget (``Context.objective(cost_budget=True)``:
``budget`` full-run equivalents in all; the run that crosses it is cut and ends the study)
and tells the peer the last value the run reported (``Peer.tell``).

Resource levels are the task's fidelity steps 1..``n_steps`` (epochs on LCBench, checkpoints
on NMT, the RL rungs 25/50/100% of GRPO on the post-training replay), the values its
intermediate values. Level ``n_steps`` is the whole run: a recorded run longer than the
nominal ``n_steps`` runs to its own end and is told as level ``n_steps``, one that ended
earlier (converged) is told at the level it reached. A promotion resumes its run where the
earlier trial stopped (``ReplayTask.checkpoint``, ``early_stop.PROMOTED_FROM_ATTR``): it sees
the same run and pays only the steps it adds.
"""

from __future__ import annotations

from collections.abc import Hashable
from dataclasses import dataclass
from typing import Any, Protocol

import optuna
from optuna.distributions import (
    BaseDistribution,
    CategoricalDistribution,
    FloatDistribution,
    IntDistribution,
)

from optuna_autopipe.bench.methods import Context
from optuna_autopipe.early_stop import CHECKPOINT_ATTR, PROMOTED_FROM_ATTR

#: Study user attr: the peer's own id of each trial's run (trial number -> id).
PEER_ID_ATTR = "peer:id"


@dataclass(frozen=True)
class Proposal:
    """One run a peer asks for. ``key``: the peer's id of it; ``stop_at``: the resource level
    (1..n_steps) to stop at, ``None`` to ask ``Peer.on_step`` at every level; ``resume``: the
    key of an earlier proposal whose run this one continues (a promotion)."""

    key: Hashable
    config: dict[str, Any]
    stop_at: int | None = None
    resume: Hashable | None = None


class Peer(Protocol):
    """What an adapter implements; values are the task's, in its direction."""

    def ask(self) -> Proposal:
        """The next run to make."""

    def on_step(self, key: Hashable, level: int, value: float) -> bool:
        """Whether run ``key`` continues after reporting ``value`` at ``level`` (only asked
        for proposals without ``stop_at``)."""

    def tell(self, key: Hashable, level: int, value: float) -> None:
        """Run ``key`` ended at ``level`` with ``value`` (its last reported value)."""


def ordered_numbers(dist: CategoricalDistribution) -> bool:
    """Whether a categorical's choices are increasing numbers (peers get them as ordinals)."""
    choices = dist.choices
    numeric = all(isinstance(c, int | float) and not isinstance(c, bool) for c in choices)
    return numeric and list(choices) == sorted(choices)


def peer_space(space: dict[str, BaseDistribution]) -> dict[str, BaseDistribution]:
    """The parameters a peer chooses: those with more than one value (some libraries refuse
    a single-valued one; ``task_config`` fills them in)."""
    return {name: dist for name, dist in space.items() if not dist.single()}


def task_config(space: dict[str, BaseDistribution], values: dict[str, Any]) -> dict[str, Any]:
    """A peer's proposal in the task's own values: a categorical's choice equal to the
    proposed value (peers hand back numpy scalars), an integer rounded onto its grid, a float
    clipped into its bounds (a peer's log transform can overshoot by an ulp).

    Raises:
        ValueError: a parameter is missing, or a categorical value is not a choice.
    """
    config: dict[str, Any] = {}
    for name, dist in space.items():
        if dist.single():  # not shown to the peer (``peer_space``)
            config[name] = (
                dist.choices[0] if isinstance(dist, CategoricalDistribution) else dist.low
            )
            continue
        if name not in values:
            raise ValueError(f"The peer's proposal {values} lacks parameter {name!r}.")
        value = values[name]
        if isinstance(dist, CategoricalDistribution):
            matches = [c for c in dist.choices if c == value]
            if not matches:
                raise ValueError(f"{name}={value!r} is not one of {dist.choices}.")
            config[name] = matches[0]
        elif isinstance(dist, IntDistribution):
            on_grid = dist.low + dist.step * round((float(value) - dist.low) / dist.step)
            config[name] = min(dist.high, max(dist.low, on_grid))
        elif isinstance(dist, FloatDistribution):
            config[name] = min(dist.high, max(dist.low, float(value)))
        else:
            raise ValueError(f"Parameter {name!r}: unsupported distribution {dist}.")
    return config


class _PeerPruner(optuna.pruners.BasePruner):
    """Stops the running trial where its proposal says, or where the peer decides."""

    def __init__(self, peer: Peer, levels: int) -> None:
        self.peer = peer
        self.levels = levels
        self.proposal: Proposal | None = None

    def prune(self, study: optuna.Study, trial: optuna.trial.FrozenTrial) -> bool:
        level = trial.last_step
        if self.proposal is None or level is None or level >= self.levels:
            return False
        if self.proposal.stop_at is not None:
            return level >= self.proposal.stop_at
        return not self.peer.on_step(self.proposal.key, level, trial.intermediate_values[level])


def drive(ctx: Context, peer: Peer, *, max_runs: int = 100_000) -> optuna.Study:
    """Run ``peer``'s proposals on ``ctx``'s task until the budget is spent; returns the
    study (every run a trial; a promotion's trial names its source in
    ``autopipe:promoted_from``).

    Raises:
        KeyError: a proposal resumes a key the peer never proposed.
        RuntimeError: the peer proposed ``max_runs`` runs without spending the budget.
    """
    pruner = _PeerPruner(peer, ctx.task.n_steps)
    study = ctx.study(optuna.samplers.RandomSampler(seed=ctx.seed), pruner=pruner)
    objective = ctx.objective(cost_budget=True)
    # key -> (trial whose recorded run it is, levels that run reached)
    runs: dict[Hashable, tuple[int, int]] = {}
    for _ in range(max_runs):
        proposal = peer.ask()
        attrs: dict[str, Any] = {}
        if proposal.resume is not None:
            source, reached = runs[proposal.resume]
            attrs = {
                PROMOTED_FROM_ATTR: source,
                CHECKPOINT_ATTR: ctx.task.checkpoint(source, reached, proposal.config),
            }
        study.enqueue_trial(proposal.config, user_attrs=attrs)
        pruner.proposal = proposal
        study.optimize(objective, n_trials=1)
        trial = study.trials[-1]
        study.set_user_attr(f"{PEER_ID_ATTR}:{trial.number}", str(proposal.key))
        if trial.user_attrs.get("budget_exhausted"):
            return study
        level = trial.last_step
        if level is None:
            raise RuntimeError(f"Trial {trial.number} reported no value: {trial.state.name}.")
        runs[proposal.key] = (int(attrs.get(PROMOTED_FROM_ATTR, trial.number)), level)
        peer.tell(proposal.key, min(level, ctx.task.n_steps), trial.intermediate_values[level])
    raise RuntimeError(f"The peer made {max_runs} runs without spending the budget.")
