"""Search spaces: suggesting from a distribution, and encoding configurations as vectors.

``SpaceEncoder`` maps a configuration of an Optuna search space to a row of numbers that
the ranker, the regressor and the GP share:

- ``FloatDistribution`` / ``IntDistribution``: one column, ``(v - low) / (high - low)``,
  computed on ``log v`` when the distribution is log-scaled (shape-preserving in [0, 1]);
- ``CategoricalDistribution`` whose choices are all numbers (a grid over a number, like a
  learning-rate grid): one column holding the number, log-scaled when every choice is
  positive and the largest is at least 10x the smallest, scaled to [0, 1] over the choices;
  unseen grid values still encode (they may fall outside [0, 1]);
- any other ``CategoricalDistribution``: one-hot, one column per choice; a value not among
  the choices raises ``ValueError`` naming the parameter and the known choices.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import optuna
from optuna.distributions import (
    BaseDistribution,
    CategoricalDistribution,
    FloatDistribution,
    IntDistribution,
    distribution_to_json,
    json_to_distribution,
)


def suggest(trial: optuna.trial.BaseTrial, name: str, dist: BaseDistribution) -> Any:
    """Call the public ``trial.suggest_*`` matching ``dist`` and return the value."""
    if isinstance(dist, CategoricalDistribution):
        return trial.suggest_categorical(name, dist.choices)
    if isinstance(dist, IntDistribution):
        return trial.suggest_int(name, dist.low, dist.high, step=dist.step, log=dist.log)
    if isinstance(dist, FloatDistribution):
        return trial.suggest_float(name, dist.low, dist.high, step=dist.step, log=dist.log)
    raise TypeError(f"Unsupported distribution {dist!r} for parameter {name!r}.")


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


class SpaceEncoder:
    """Configurations of ``space`` as rows of ``len(columns)`` floats (see the module doc)."""

    def __init__(self, space: Mapping[str, BaseDistribution]) -> None:
        self.space = dict(sorted(space.items()))
        self._numeric: dict[str, tuple[float, float, bool]] = {}
        self._onehot: dict[str, list[Any]] = {}
        for name, dist in self.space.items():
            if isinstance(dist, FloatDistribution | IntDistribution):
                self._numeric[name] = (float(dist.low), float(dist.high), dist.log)
            elif isinstance(dist, CategoricalDistribution) and all(
                _is_number(c) for c in dist.choices
            ):
                low, high = float(min(dist.choices)), float(max(dist.choices))
                self._numeric[name] = (low, high, low > 0 and high >= 10 * low)
            elif isinstance(dist, CategoricalDistribution):
                self._onehot[name] = list(dist.choices)
            else:
                raise TypeError(f"Unsupported distribution {dist!r} for parameter {name!r}.")

    @property
    def columns(self) -> list[str]:
        """Column names: the parameter name, or ``name=choice`` for one-hot columns."""
        names = []
        for name in self.space:
            if name in self._numeric:
                names.append(name)
            else:
                names += [f"{name}={choice}" for choice in self._onehot[name]]
        return names

    def encode(self, configs: Sequence[Mapping[str, Any]]) -> np.ndarray:
        """Encode configurations, shape ``(len(configs), len(columns))``.

        A parameter missing from a configuration, or ``None`` there (inactive in a conditional
        space, ``conditional.py``; unless ``None`` is one of its choices), encodes as NaN
        (numeric) or all zeros (one-hot).
        """
        rows = np.zeros((len(configs), len(self.columns)))
        for i, config in enumerate(configs):
            j = 0
            for name in self.space:
                if name in self._numeric:
                    rows[i, j] = self._scale(name, config.get(name))
                    j += 1
                    continue
                choices = self._onehot[name]
                if config.get(name) is not None or (name in config and None in choices):
                    if config[name] not in choices:
                        raise ValueError(
                            f"Parameter {name!r} has value {config[name]!r}, which the encoding "
                            f"has never seen (known choices: {choices}). Refit the prior on a "
                            "corpus that includes it, or restrict the search space to known "
                            "choices."
                        )
                    rows[i, j + choices.index(config[name])] = 1.0
                j += len(choices)
        return rows

    def _scale(self, name: str, value: Any) -> float:
        if value is None:
            return math.nan
        low, high, log = self._numeric[name]
        v = float(value)
        if log:
            low, high, v = math.log(low), math.log(high), math.log(v)
        return 0.0 if high == low else (v - low) / (high - low)

    def to_json(self) -> str:
        """The search space as JSON (Optuna's distribution JSON per parameter)."""
        return json.dumps({n: distribution_to_json(d) for n, d in self.space.items()})

    @classmethod
    def from_json(cls, text: str) -> SpaceEncoder:
        return cls({n: json_to_distribution(d) for n, d in json.loads(text).items()})


def union_space(spaces: Sequence[Mapping[str, BaseDistribution]]) -> dict[str, BaseDistribution]:
    """One space covering several: numeric ranges widened, categorical choices merged.

    A parameter must have the same kind of distribution everywhere it appears.
    """
    merged: dict[str, BaseDistribution] = {}
    for space in spaces:
        for name, dist in space.items():
            if name not in merged:
                merged[name] = dist
                continue
            old = merged[name]
            if isinstance(old, CategoricalDistribution) and isinstance(
                dist, CategoricalDistribution
            ):
                extra = [c for c in dist.choices if c not in old.choices]
                merged[name] = CategoricalDistribution([*old.choices, *extra])
            elif type(old) is type(dist) and isinstance(dist, FloatDistribution | IntDistribution):
                assert isinstance(old, FloatDistribution | IntDistribution)
                merged[name] = type(dist)(
                    min(old.low, dist.low), max(old.high, dist.high), log=old.log and dist.log
                )
            else:
                raise ValueError(
                    f"Parameter {name!r} is {old!r} in one dataset and {dist!r} in another; "
                    "a corpus needs one kind of distribution per parameter."
                )
    return merged
