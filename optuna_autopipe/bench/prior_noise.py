"""Wrong-prior stress for the benchmark: a ranking prior whose scores are distorted.

- ``none``: the ranker as fitted.
- ``inverted``: raw scores negated, so the prior recommends its worst configurations first.
- ``shuffled``: raw scores replaced by a value in [0, 1) hashed from (seed, the
  configuration's JSON with sorted keys): no information, and the same configuration always
  gets the same score for one seed, i.e. a fixed random permutation of the prior's ranking.

The distorted ranker is a ``Ranker`` (same encoder, kept columns, dataset features and
models), so the sampler reads it like the real one; it pickles like one too.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, fields
from typing import Any

import numpy as np

from optuna_autopipe.ranker import Ranker

PRIOR_NOISE = ("none", "inverted", "shuffled")


def check_mode(mode: str) -> None:
    """Raise unless ``mode`` is one of ``PRIOR_NOISE``."""
    if mode not in PRIOR_NOISE:
        raise ValueError(f"Unknown prior noise {mode!r}; choose from {list(PRIOR_NOISE)}.")


@dataclass
class DistortedRanker(Ranker):
    """A fitted ``Ranker`` whose ``raw_scores`` (and so ``score``) are distorted by ``mode``."""

    mode: str = "inverted"
    noise_seed: int = 0

    def raw_scores(
        self, configs: Sequence[Mapping[str, Any]], features: Mapping[str, float]
    ) -> np.ndarray:
        if self.mode == "inverted":
            return -super().raw_scores(configs, features)
        return np.array([_uniform(self.noise_seed, config) for config in configs])


def distort(ranker: Ranker, mode: str, *, seed: int) -> Ranker:
    """``ranker`` with its scores distorted by ``mode`` (``none``: ``ranker`` itself)."""
    check_mode(mode)
    if mode == "none":
        return ranker
    state = {f.name: getattr(ranker, f.name) for f in fields(Ranker)}
    return DistortedRanker(**state, mode=mode, noise_seed=seed)


def _uniform(seed: int, config: Mapping[str, Any]) -> float:
    """A value in [0, 1) fixed by ``seed`` and the configuration (not by the process)."""
    key = json.dumps(dict(config), sort_keys=True, default=_plain)
    digest = hashlib.blake2b(f"{seed}/{key}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") / 2.0**64


def _plain(value: Any) -> Any:
    """NumPy scalars as the Python numbers they hold, so both spell the same key."""
    if isinstance(value, np.generic):
        return value.item()
    raise TypeError(f"Cannot key a configuration value of type {type(value).__name__}.")
