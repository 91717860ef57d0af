"""The project's private Optuna calls, kept here and nowhere else.

- Writing a RUNNING trial's user attrs from a sampler: a sampler only receives
  ``FrozenTrial`` objects, which have no public setter; the sampler's explanation (s(x), μ,
  σ, λ, κ, b, acquisition) and its claim on a configuration must land on the trial while it
  runs, so they go through the study's storage.
- The values a ``PartialFixedSampler`` wrapping the sampler fixes: it removes them from the
  relative search space without saying what they are, and the sampler must choose among
  configurations that agree with them.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import optuna


def set_trial_user_attrs(
    study: optuna.Study, trial: optuna.trial.FrozenTrial, attrs: Mapping[str, Any]
) -> None:
    storage = study._storage
    for key, value in attrs.items():
        storage.set_trial_user_attr(trial._trial_id, key, value)


def wrapper_fixed_params(study: optuna.Study) -> dict[str, Any]:
    """Parameters fixed by ``PartialFixedSampler`` wrappers of the study's sampler."""
    fixed: dict[str, Any] = {}
    sampler = study.sampler
    while isinstance(sampler, optuna.samplers.PartialFixedSampler):
        fixed = {**sampler._fixed_params, **fixed}
        sampler = sampler._base_sampler
    return fixed
