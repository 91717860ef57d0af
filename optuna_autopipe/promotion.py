"""Promotion: run the best early-stopped configurations to full fidelity, keep the best verified.

The paper verifies one configuration, the early signal's favourite. When the signal or the
prior is wrong on a new dataset, nothing checks it, and the study ends on that one choice.
Promotion is one rung of successive halving on top of the early-stop phase: the ``n``
early-stopped configurations whose observations rank best (``AutoPipeSampler
.early_stop_ranking``: the cut signal or the proxy, as the sampler observed them) are
enqueued at full fidelity, each resuming from its early stop's checkpoint when it saved one
(``early_stop.promote``), so a promotion costs the rest of one run. ``recommend`` then
returns the best verified configuration, which is the one the signal's top ``n`` contain
rather than the one it put first. ``signal_agreement`` says afterwards how well the early
signal ordered the promoted runs (Spearman with their full-fidelity values).

Cost with the replays' defaults (15 trials stopped at 25%, ``n = 3`` resumed): 15 × 0.25 +
3 × 0.75 = 6 full-run equivalents, 40% of 15 full runs.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import TYPE_CHECKING

import optuna
from optuna.trial import TrialState
from scipy.stats import spearmanr

from optuna_autopipe.early_stop import PROMOTED_FROM_ATTR, promote

if TYPE_CHECKING:
    from optuna.trial import FrozenTrial

    from optuna_autopipe.sampler import AutoPipeSampler


def promote_best(
    study: optuna.Study, sampler: AutoPipeSampler, *, n: int | None = None
) -> list[int]:
    """Enqueue the ``n`` best early-stopped configurations (default ``sampler.n_promote``)
    at full fidelity; returns the early-stopped trials' numbers, best first.

    Run the enqueued trials with an objective that goes to full fidelity for a trial holding
    ``autopipe:promoted_from`` (and resumes from ``early_stop.resume_checkpoint(trial)``),
    e.g. ``study.optimize(objective, n_trials=len(promoted))``. Configurations already
    promoted (waiting, running or done) or run at full fidelity are not promoted again, so
    a second call promotes the next ``n`` (one call per round of promotions).

    Raises ``ValueError`` for a negative ``n``.
    """
    n = sampler.n_promote if n is None else n
    if n < 0:
        raise ValueError(f"n must be >= 0, got {n!r}.")
    pending = {
        t.user_attrs[PROMOTED_FROM_ATTR]
        for t in study.get_trials(deepcopy=False)
        if PROMOTED_FROM_ATTR in t.user_attrs and t.state != TrialState.FAIL
    }
    chosen = [t for t in sampler.early_stop_ranking(study) if t.number not in pending][:n]
    for trial in chosen:
        promote(study, trial)
    return [trial.number for trial in chosen]


def signal_agreement(study: optuna.Study, sampler: AutoPipeSampler) -> float:
    """Spearman correlation between the early signal's order of the promoted configurations
    and their full-fidelity values (oriented so that 1 means the signal ordered them right;
    NaN under 3 promoted runs or when it is undefined)."""
    ranking = [t.number for t in sampler.early_stop_ranking(study, include_verified=True)]
    return agreement(ranking, study.get_trials(deepcopy=False), study.direction)


def agreement(
    ranking: Sequence[int], trials: Sequence[FrozenTrial], direction: optuna.study.StudyDirection
) -> float:
    """``signal_agreement`` from ``ranking`` (the early-stopped trials' numbers by the early
    signal, best first) and the study's ``trials``."""
    sign = 1.0 if direction == optuna.study.StudyDirection.MAXIMIZE else -1.0
    pairs = [
        (list(ranking).index(t.user_attrs[PROMOTED_FROM_ATTR]), sign * t.value)
        for t in trials
        if t.state == TrialState.COMPLETE
        and t.user_attrs.get(PROMOTED_FROM_ATTR) in ranking
        and t.value is not None
    ]
    # constant values (every promoted run scored the same) leave the correlation undefined
    if len(pairs) < 3 or len({v for _, v in pairs}) < 2:
        return math.nan
    rho = spearmanr([-r for r, _ in pairs], [v for _, v in pairs]).statistic
    return float(rho)
