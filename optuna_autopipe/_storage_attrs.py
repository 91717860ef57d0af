"""The project's private Optuna calls, kept here and nowhere else.

- Writing a RUNNING trial's user attrs from a sampler: a sampler only receives
  ``FrozenTrial`` objects, which have no public setter; the sampler's explanation (s(x), μ,
  σ, λ, κ, b, acquisition) and its claim on a configuration must land on the trial while it
  runs, so they go through the study's storage.
- A live ``optuna.Trial`` for a sampler's ``FrozenTrial``, for APIs that take one (optuna-
  dashboard's ``save_note``/``get_note``): the public constructor with the frozen trial's
  private ``_trial_id``. The constructor also calls the study's ``sampler.before_trial``,
  a no-op for ``AutoPipeSampler``.
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


def live_trial(study: optuna.Study, trial: optuna.trial.FrozenTrial) -> optuna.Trial:
    return optuna.Trial(study, trial._trial_id)


def wrapper_fixed_params(study: optuna.Study) -> dict[str, Any]:
    """Parameters fixed by ``PartialFixedSampler`` wrappers of the study's sampler."""
    fixed: dict[str, Any] = {}
    sampler = study.sampler
    while isinstance(sampler, optuna.samplers.PartialFixedSampler):
        fixed = {**sampler._fixed_params, **fixed}
        sampler = sampler._base_sampler
    return fixed
