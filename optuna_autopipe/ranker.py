"""The dataset-conditioned ranking prior: an ensemble of XGBoost pairwise rankers.

Input row of a (configuration, dataset) pair: ``SpaceEncoder`` columns of the configuration,
then the dataset's meta-features (NaN where unknown; XGBoost routes missing values).
Each dataset group (datasets sharing ``group``) is one query; the label is the run's graded
relevance ``floor(31 · percentile of its utility within the dataset)``.

Columns are pruned as ``feature_filter`` describes: configuration columns per dataset,
dataset features across datasets.

Score: s(x) = ensemble mean, standardised over the candidate set being scored.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import xgboost as xgb

from optuna_autopipe.conditional import inactive_rules
from optuna_autopipe.corpus import Corpus, DatasetRuns
from optuna_autopipe.ensemble import TreeParams, load_ensemble, save_ensemble
from optuna_autopipe.feature_filter import (
    FeatureFilter,
    flag_columns,
    informative_dataset_features,
)
from optuna_autopipe.space import SpaceEncoder


@dataclass
class Ranker:
    """Fit on a ``Corpus``; score candidate configurations for a dataset's features."""

    params: TreeParams = field(default_factory=TreeParams)
    filter: FeatureFilter = field(default_factory=FeatureFilter)
    n_models: int = 3
    use_dataset_features: bool = True
    seed: int = 0
    #: XGBoost threads per model (not saved: a runtime choice).
    n_jobs: int = 1
    encoder: SpaceEncoder | None = None
    dataset_features: list[str] = field(default_factory=list)
    kept_columns: list[str] = field(default_factory=list)
    #: The corpus' conditional structure (``conditional.inactive_rules``), as lists.
    inactive: list[list[Any]] = field(default_factory=list)
    models: list[xgb.XGBRanker] = field(default_factory=list)

    # --- training ------------------------------------------------------------------------

    def fit(self, corpus: Corpus) -> Ranker:
        """Filter features and train ``n_models`` rankers (seeds ``seed .. seed+n-1``)."""
        corpus.require_training_data()
        self.encoder = SpaceEncoder(corpus.space)
        self.dataset_features = corpus.feature_names if self.use_dataset_features else []
        datasets = corpus.rankable
        configs = [c for d in datasets for c in d.configs]
        self.inactive = [list(rule) for rule in inactive_rules(configs, corpus.space)]
        x, labels, groups = self._training_rows(datasets)
        all_columns = self.encoder.columns + self.dataset_features
        keep = self._filter(datasets, x, all_columns)
        self.kept_columns = [c for c, k in zip(all_columns, keep, strict=True) if k]
        x = x[:, keep]
        order = np.argsort(groups, kind="stable")
        _, qid = np.unique(groups[order], return_inverse=True)
        self.models = []
        for i in range(self.n_models):
            model = xgb.XGBRanker(
                objective="rank:pairwise",
                random_state=self.seed + i,
                n_jobs=self.n_jobs,
                tree_method="hist",
                **asdict(self.params),
            )
            model.fit(x[order], labels[order], qid=qid)
            self.models.append(model)
        return self

    def _training_rows(
        self, datasets: Sequence[DatasetRuns]
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Rows, labels and group ids of ``datasets``, stacked in order."""
        assert self.encoder is not None
        blocks, labels, groups = [], [], []
        group_ids = {g: i for i, g in enumerate(sorted({d.group for d in datasets}))}
        for d in datasets:
            blocks.append(self._rows(d.configs, d.features, filtered=False))
            utility = d.utility
            percentile = (np.argsort(np.argsort(utility, kind="stable")) + 0.5) / len(utility)
            labels.append(np.floor(31 * percentile).astype(int))
            groups.append(np.full(len(utility), group_ids[d.group]))
        return np.vstack(blocks), np.concatenate(labels), np.concatenate(groups)

    def _rows(
        self, configs: Sequence[Mapping[str, Any]], features: Mapping[str, float], *, filtered: bool
    ) -> np.ndarray:
        assert self.encoder is not None
        config_part = self.encoder.encode(configs)
        known = [float(features.get(name, math.nan)) for name in self.dataset_features]
        rows = np.hstack([config_part, np.tile(known, (len(configs), 1))])
        if not filtered:
            return rows
        all_columns = self.encoder.columns + self.dataset_features
        index = {c: i for i, c in enumerate(all_columns)}
        return rows[:, [index[c] for c in self.kept_columns]]

    def _filter(
        self, datasets: Sequence[DatasetRuns], x: np.ndarray, columns: list[str]
    ) -> np.ndarray:
        """Keep mask over ``columns``; ``x`` stacks ``datasets``' rows in order."""
        assert self.encoder is not None
        n_config = len(self.encoder.columns)
        keep = np.ones(len(columns), dtype=bool)
        flags = np.zeros(n_config)
        start = 0
        for d in datasets:
            block = x[start : start + len(d.configs), :n_config]
            start += len(d.configs)
            flags += flag_columns(block, self.filter.var_ratio, self.filter.max_corr)
        keep[:n_config] = flags < self.filter.flag_share * len(datasets)
        if self.dataset_features:
            table = np.array(
                [[d.features.get(f, math.nan) for f in self.dataset_features] for d in datasets],
                dtype=float,
            )
            keep[n_config:] = informative_dataset_features(table, self.filter.max_corr)
        return keep

    # --- scoring -------------------------------------------------------------------------

    @property
    def conditional(self) -> set[str]:
        """Parameters some configuration of the corpus did not use."""
        return {rule[2] for rule in self.inactive}

    def raw_scores(
        self, configs: Sequence[Mapping[str, Any]], features: Mapping[str, float]
    ) -> np.ndarray:
        """Ensemble mean of the rankers' scores, shape ``(len(configs),)``."""
        if not self.models:
            raise RuntimeError("The ranker is not fitted; call fit(corpus) or Prior.load(...).")
        missing = [f for f in self.kept_columns if f in self.dataset_features and f not in features]
        if missing:
            raise ValueError(
                f"The dataset profile lacks {len(missing)} feature(s) the prior was trained on: "
                f"{missing[:10]}. Compute the profile with the same DatasetProfile version, or "
                "pass them as NaN explicitly if they are truly unknown."
            )
        x = self._rows(configs, features, filtered=True)
        return np.mean([m.predict(x) for m in self.models], axis=0).astype(float)

    def score(
        self, configs: Sequence[Mapping[str, Any]], features: Mapping[str, float]
    ) -> np.ndarray:
        """s(x): ensemble scores standardised over ``configs``, shape ``(len(configs),)``."""
        raw = self.raw_scores(configs, features)
        sd = raw.std()
        return (raw - raw.mean()) / sd if sd > 0 else np.zeros_like(raw)

    # --- persistence ---------------------------------------------------------------------

    def save(self, directory: str | Path) -> None:
        """Write ``ranker.json`` (schema) and ``ranker-<i>.json`` (XGBoost models)."""
        save_ensemble(directory, "ranker", self)

    @classmethod
    def load(cls, directory: str | Path) -> Ranker:
        return load_ensemble(directory, "ranker", cls, xgb.XGBRanker)
