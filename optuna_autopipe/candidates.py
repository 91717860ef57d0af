"""The configurations the sampler chooses among, for any Optuna search space.

- A space of discrete parameters (categorical, or int/float with a finite number of values)
  whose product has at most ``max_grid`` points: the whole product, in a fixed order.
- Otherwise: ``n_samples`` scrambled-Sobol points of the unit cube (seeded, the same on every
  call), mapped to each parameter (log-uniformly where the distribution is log), plus
  ``perturb`` around given configurations (Gaussian steps of ``scale`` in the unit cube for
  numbers, a random other choice with probability ``scale`` for categoricals).

Values are plain Python numbers of the distribution's type, inside its bounds.
"""

from __future__ import annotations

import itertools
import json
import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from optuna.distributions import (
    BaseDistribution,
    CategoricalDistribution,
    FloatDistribution,
    IntDistribution,
)
from scipy.stats import qmc

Config = dict[str, Any]


def config_key(config: Mapping[str, Any]) -> str:
    """A hashable identity of a configuration (parameter order does not matter; numbers are
    compared to 12 significant digits, so a grid's 0.1 * 3 and an enqueued 0.3 are one value,
    and so are 1.0 and 1)."""
    return json.dumps({k: _canonical(config[k]) for k in sorted(config)}, default=str)


def _canonical(value: Any) -> Any:
    if isinstance(value, float) and math.isfinite(value):
        value = float(f"{value:.12g}")
        return int(value) if value.is_integer() else value
    return value


def grid_values(dist: BaseDistribution, limit: int) -> list[Any] | None:
    """Every value of a discrete distribution (``None`` if continuous or above ``limit``)."""
    if isinstance(dist, CategoricalDistribution):
        return list(dist.choices)
    if isinstance(dist, IntDistribution) and not dist.log:
        count = (dist.high - dist.low) // dist.step + 1
        return list(range(dist.low, dist.high + 1, dist.step)) if count <= limit else None
    if isinstance(dist, IntDistribution):
        return list(range(dist.low, dist.high + 1)) if dist.high - dist.low < limit else None
    if isinstance(dist, FloatDistribution) and dist.step is not None:
        count = round((dist.high - dist.low) / dist.step) + 1
        if count > limit:  # before building the list: a fine step has billions of values
            return None
        return [_clip_float(dist.low + i * dist.step, dist) for i in range(count)]
    return None


def product_size(space: Mapping[str, BaseDistribution], limit: int) -> int | None:
    """Size of the product of ``space``'s values, ``None`` when continuous or above ``limit``."""
    size = 1
    for dist in space.values():
        values = grid_values(dist, limit)
        if values is None:
            return None
        size *= len(values)
        if size > limit:
            return None
    return size


def base_candidates(
    space: Mapping[str, BaseDistribution], *, max_grid: int, n_samples: int, seed: int
) -> list[Config]:
    """The product (small discrete spaces) or a seeded Sobol sample (module docstring)."""
    names = list(space)
    if product_size(space, max_grid) is not None:
        columns = [grid_values(space[n], max_grid) or [] for n in names]
        return [dict(zip(names, values, strict=True)) for values in itertools.product(*columns)]
    sobol = qmc.Sobol(d=len(names), scramble=True, seed=seed)
    units = sobol.random(2 ** math.ceil(math.log2(max(n_samples, 2))))[:n_samples]
    return [{n: from_unit(float(u[j]), space[n]) for j, n in enumerate(names)} for u in units]


def perturb(
    configs: Sequence[Config],
    space: Mapping[str, BaseDistribution],
    *,
    n_each: int,
    scale: float,
    rng: np.random.Generator,
) -> list[Config]:
    """``n_each`` random neighbours of every configuration."""
    out = []
    for config in configs:
        for _ in range(n_each):
            neighbour = {}
            for name, dist in space.items():
                value = config[name]
                if value is None:  # inactive in a conditional space
                    pass
                elif isinstance(dist, CategoricalDistribution):
                    if rng.random() < scale:
                        value = dist.choices[int(rng.integers(len(dist.choices)))]
                else:
                    u = to_unit(value, dist) + rng.normal(0.0, scale)
                    value = from_unit(float(np.clip(u, 0.0, 1.0)), dist)
                neighbour[name] = value
            out.append(neighbour)
    return out


def to_unit(value: Any, dist: BaseDistribution) -> float:
    """A numeric value's position in [0, 1] (log scale where the distribution is log)."""
    assert isinstance(dist, FloatDistribution | IntDistribution)
    low, high, v = float(dist.low), float(dist.high), float(value)
    if dist.log:
        low, high, v = math.log(low), math.log(high), math.log(v)
    return 0.0 if high == low else (v - low) / (high - low)


def from_unit(u: float, dist: BaseDistribution) -> Any:
    """The value at position ``u`` in [0, 1] of ``dist`` (a categorical: the ``u``-th bin)."""
    if isinstance(dist, CategoricalDistribution):
        return dist.choices[min(int(u * len(dist.choices)), len(dist.choices) - 1)]
    assert isinstance(dist, FloatDistribution | IntDistribution)
    low, high = float(dist.low), float(dist.high)
    v = (
        math.exp(math.log(low) + u * (math.log(high) - math.log(low)))
        if dist.log
        else (low + u * (high - low))
    )
    if isinstance(dist, IntDistribution):
        steps = round((v - dist.low) / dist.step)
        return int(min(max(dist.low + steps * dist.step, dist.low), dist.high))
    if dist.step is not None:
        v = dist.low + round((v - dist.low) / dist.step) * dist.step
    return _clip_float(v, dist)


def _clip_float(v: float, dist: FloatDistribution) -> float:
    return float(min(max(v, dist.low), dist.high))
