"""The dataset-conditioned ranking prior: an ensemble of XGBoost pairwise rankers.

Input row of a (configuration, dataset) pair: ``SpaceEncoder`` columns of the configuration,
then the dataset's meta-features (NaN where unknown; XGBoost routes missing values).
Each dataset group (datasets sharing ``group``) is one query; the label is the run's graded
relevance ``floor(31 · percentile of its utility within the dataset)``.

Feature filtering (appendix B.1.1, thresholds are arguments):

- configuration columns, within each dataset: flag a column whose variance is below
  ``var_ratio`` x the dataset's median column variance, or whose |Pearson r| with an earlier
  column exceeds ``max_corr``; drop a column flagged in at least ``flag_share`` of datasets;
- dataset features (constant within a dataset, so judged across datasets, one row each):
  drop features with fewer than two distinct known values, or with |r| > ``max_corr`` against
  an earlier kept feature.

Score: s(x) = ensemble mean, standardised over the candidate set being scored.
"""

from __future__ import annotations

import json
import math
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import xgboost as xgb

from optuna_autopipe.corpus import Corpus, DatasetRuns
from optuna_autopipe.space import SpaceEncoder


@dataclass(frozen=True)
class RankerParams:
    """XGBoost settings of each ensemble member."""

    max_depth: int = 4
    learning_rate: float = 0.1
    n_estimators: int = 200
    subsample: float = 0.8
    colsample_bytree: float = 0.8
    min_child_weight: float = 1.0


@dataclass(frozen=True)
class FeatureFilter:
    """Thresholds of the feature filtering (module docstring)."""

    var_ratio: float = 0.01
    max_corr: float = 0.95
    flag_share: float = 0.9


@dataclass
class Ranker:
    """Fit on a ``Corpus``; score candidate configurations for a dataset's features."""

    params: RankerParams = field(default_factory=RankerParams)
    filter: FeatureFilter = field(default_factory=FeatureFilter)
    n_models: int = 3
    use_dataset_features: bool = True
    seed: int = 0
    #: XGBoost threads per model (not saved: a runtime choice).
    n_jobs: int = 1
    encoder: SpaceEncoder | None = None
    dataset_features: list[str] = field(default_factory=list)
    kept_columns: list[str] = field(default_factory=list)
    models: list[xgb.XGBRanker] = field(default_factory=list)

    # --- training ------------------------------------------------------------------------

    def fit(self, corpus: Corpus) -> Ranker:
        """Filter features and train ``n_models`` rankers (seeds ``seed .. seed+n-1``)."""
        corpus.require_training_data()
        self.encoder = SpaceEncoder(corpus.space)
        self.dataset_features = corpus.feature_names if self.use_dataset_features else []
        datasets = corpus.rankable
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
            flags += _flag_columns(block, self.filter.var_ratio, self.filter.max_corr)
        keep[:n_config] = flags < self.filter.flag_share * len(datasets)
        if self.dataset_features:
            table = np.array(
                [[d.features.get(f, math.nan) for f in self.dataset_features] for d in datasets],
                dtype=float,
            )
            keep[n_config:] = _informative_dataset_features(table, self.filter.max_corr)
        return keep

    # --- scoring -------------------------------------------------------------------------

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
        assert self.encoder is not None
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        for i, model in enumerate(self.models):
            model.save_model(directory / f"ranker-{i}.json")
        schema = {
            "params": asdict(self.params),
            "filter": asdict(self.filter),
            "n_models": self.n_models,
            "use_dataset_features": self.use_dataset_features,
            "seed": self.seed,
            "space": json.loads(self.encoder.to_json()),
            "dataset_features": self.dataset_features,
            "kept_columns": self.kept_columns,
            "versions": {"xgboost": xgb.__version__},
        }
        (directory / "ranker.json").write_text(json.dumps(schema, indent=1))

    @classmethod
    def load(cls, directory: str | Path) -> Ranker:
        directory = Path(directory)
        schema_path = directory / "ranker.json"
        if not schema_path.exists():
            raise FileNotFoundError(
                f"{schema_path} not found: not a saved prior (fit one with `autopipe fit-prior`)."
            )
        try:
            schema = json.loads(schema_path.read_text())
            ranker = cls(
                params=RankerParams(**schema["params"]),
                filter=FeatureFilter(**schema["filter"]),
                n_models=schema["n_models"],
                use_dataset_features=schema["use_dataset_features"],
                seed=schema["seed"],
                encoder=SpaceEncoder.from_json(json.dumps(schema["space"])),
                dataset_features=schema["dataset_features"],
                kept_columns=schema["kept_columns"],
            )
            for i in range(ranker.n_models):
                model = xgb.XGBRanker()
                model.load_model(directory / f"ranker-{i}.json")
                ranker.models.append(model)
        except (ValueError, KeyError, TypeError, xgb.core.XGBoostError) as exc:
            raise ValueError(
                f"{directory} holds a corrupt or incompatible prior ({exc!r}); refit it with "
                "`autopipe fit-prior`."
            ) from exc
        return ranker


def _flag_columns(block: np.ndarray, var_ratio: float, max_corr: float) -> np.ndarray:
    """1 for columns of ``block`` (n, d) that are near-constant or near-duplicates."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        variance = np.nanvar(block, axis=0)
        flagged = variance <= var_ratio * np.nanmedian(variance)
        live = np.flatnonzero(~flagged)
        if len(live) > 1:
            corr = np.corrcoef(np.nan_to_num(block[:, live]), rowvar=False)
            for a in range(len(live)):
                if np.any(np.abs(corr[a, :a]) > max_corr):
                    flagged[live[a]] = True
    return flagged.astype(float)


def _informative_dataset_features(table: np.ndarray, max_corr: float) -> np.ndarray:
    """Keep mask over dataset features (columns of ``table``, one row per dataset)."""
    keep = np.array([len(np.unique(c[np.isfinite(c)])) >= 2 for c in table.T], dtype=bool)
    kept: list[int] = []
    for j in np.flatnonzero(keep):
        column = table[:, j]
        for i in kept:
            both = np.isfinite(column) & np.isfinite(table[:, i])
            if both.sum() > 2:
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore", RuntimeWarning)
                    r = np.corrcoef(column[both], table[both, i])[0, 1]
                if np.isfinite(r) and abs(r) > max_corr:
                    keep[j] = False
                    break
        if keep[j]:
            kept.append(j)
    return keep
