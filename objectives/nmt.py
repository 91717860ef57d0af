"""NMT benchmark: real Transformer training runs on 6 corpora (Zhang & Duh, hpo_nmt).

Score: best dev perplexity of a run (lower is better), chosen over BLEU because only
perplexity has learning curves, which the early-stop signal and pruning need. A recorded
configuration's true score is the mean over its replicate runs; each evaluation replays one
replicate drawn at random (the real run-to-run noise).

Cost: training updates. Every checkpoint of a curve is 2,000 updates (checked against the
``num_updates`` column of ``nmthpo/*.evals``: median updates per checkpoint is 2,000 on every
corpus). The tables' ``dev_gpu_time`` is not used: it does not grow with training length
(correlation with ``num_updates`` 0.0-0.4), so it measures decoding, not training.

Search space: per corpus, the product of the values recorded for each hyperparameter, as
categorical choices. A configuration never recorded maps to its nearest recorded neighbour
(distance over log2 values, each axis scaled to the corpus's range), the same rule for every
method; the mapping is logged and stored on the trial as ``mapped_to``.
"""

from __future__ import annotations

import gzip
import json
import logging
from collections import defaultdict
from collections.abc import Mapping
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np
from optuna.distributions import BaseDistribution, CategoricalDistribution

from objectives.data import corrupt, require
from objectives.replay import Config, Curve, ReplayTask

_logger = logging.getLogger(__name__)

PARAMS = ("bpe", "num_layers", "model_size", "ff_num_hidden", "initial_lr")
UPDATES_PER_CHECKPOINT = 2000
CURVES_FILE = "nmt/nmtlc-scratch.jsonl.gz"


class NMTTask(ReplayTask):
    """One NMT corpus replayed from its recorded runs."""

    benchmark = "nmt"
    direction = "minimize"
    cost_unit = "training updates"
    reduce = "best"
    metric = "dev_perplexity"

    def __init__(self, *, name: str, runs: list[dict[str, Any]]) -> None:
        self.name = name
        self._runs: dict[tuple[float, ...], list[np.ndarray]] = defaultdict(list)
        for run in runs:
            key = tuple(float(run["hyperparams"][p]) for p in PARAMS)
            self._runs[key].append(np.asarray(run["perplexity_curve"], dtype=float))
        self._keys = sorted(self._runs)
        self._scores = np.array([np.mean([c.min() for c in self._runs[k]]) for k in self._keys])
        self._score_of = dict(zip(self._keys, self._scores.tolist(), strict=True))
        first = runs[0]
        self._features = {
            "log10_dataset_size": float(np.log10(first["hyperparams"]["dataset_size"])),
            "max_len": float(first["max_len"]),
            "into_english": float(first["trg"] == "en"),
        }
        lengths = [len(c) for curves in self._runs.values() for c in curves]
        self._n_steps = int(np.median(lengths))
        grid = np.log2(np.array(self._keys))
        span = grid.max(axis=0) - grid.min(axis=0)
        self._scale = np.where(span > 0, span, 1.0)
        self._grid = grid / self._scale

    @cached_property
    def search_space(self) -> dict[str, BaseDistribution]:
        values = np.array(self._keys)
        return {
            p: CategoricalDistribution(sorted({_plain(v, p) for v in values[:, i]}))
            for i, p in enumerate(PARAMS)
        }

    @property
    def n_steps(self) -> int:
        return self._n_steps

    @property
    def dataset_features(self) -> dict[str, float]:
        return dict(self._features)

    @property
    def group(self) -> str:
        """The corpus family (``material``, ``robust19``, ``ted``); pairs of a family agree."""
        return self.name.split("-")[0]

    def nearest(self, config: Mapping[str, Any]) -> tuple[float, ...]:
        """The recorded configuration closest to ``config`` (itself when recorded)."""
        key = tuple(float(config[p]) for p in PARAMS)
        if key in self._runs:
            return key
        point = np.log2(np.array(key)) / self._scale
        index = int(np.argmin(((self._grid - point) ** 2).sum(axis=1)))
        _logger.info("nmt/%s: %s not recorded, mapped to %s", self.name, key, self._keys[index])
        return self._keys[index]

    def resolve(self, config: Mapping[str, Any]) -> Config:
        return _config(self.nearest(config))

    def curve(self, config: Mapping[str, Any], rng: np.random.Generator) -> Curve:
        key = self.nearest(config)
        replicates = self._runs[key]
        values = replicates[int(rng.integers(len(replicates)))]
        costs = UPDATES_PER_CHECKPOINT * np.arange(1, len(values) + 1, dtype=float)
        return Curve(
            values=values, costs=costs, true_score=self._score_of[key], config=_config(key)
        )

    def pool(self) -> tuple[list[Config], np.ndarray]:
        return [_config(k) for k in self._keys], self._scores.copy()

    def true_score(self, config: Mapping[str, Any]) -> float:
        return self._score_of[self.nearest(config)]


def _plain(value: float, param: str) -> int | float:
    return float(value) if param == "initial_lr" else int(value)


def _config(key: tuple[float, ...]) -> Config:
    return {p: _plain(v, p) for p, v in zip(PARAMS, key, strict=True)}


def load_nmt(root: Path) -> list[NMTTask]:
    """Load the six NMT corpora from ``root/nmt/nmtlc-scratch.jsonl.gz``."""
    path = require(root / CURVES_FILE, "nmt")
    by_corpus: dict[str, list[dict[str, Any]]] = defaultdict(list)
    try:
        with gzip.open(path, "rt") as lines:
            for line in lines:
                run = json.loads(line)
                if run["perplexity_curve"]:
                    by_corpus[run["dataset_name"]].append(run)
    except (OSError, EOFError, ValueError, KeyError) as exc:
        raise corrupt(path, "nmt", exc) from exc
    if not by_corpus:
        raise corrupt(path, "nmt", "no runs")
    return [NMTTask(name=name, runs=runs) for name, runs in sorted(by_corpus.items())]
