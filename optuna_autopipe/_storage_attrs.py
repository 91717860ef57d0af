"""The one private Optuna call of the project: writing a RUNNING trial's user attrs from a sampler.

A sampler only receives ``FrozenTrial`` objects, which have no public setter; the sampler's
explanation (s(x), μ, σ, λ, κ, b, acquisition) and its claim on a configuration must land on
the trial while it runs, so they go through the study's storage.
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
