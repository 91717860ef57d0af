"""The early-stop regressor: truncated training dynamics → a proxy of the final score (B.2).

Per training dataset ``d`` (corpus runs with recorded dynamics), the final score is
standardised with that dataset's own corpus statistics, ``z(y) = (u(y) − mean_d) / sd_d``
(``u`` orients scores so that higher is better; a held-out dataset never contributes), and
the target is either

- ``"residual"``: r = z(y) − s(x), with s(x) the prior's score standardised over the
  dataset's runs (``prior_scores``); the proxy of a new run is ŷ = s(x) + r̂; or
- ``"direct"``: z(y) itself (for methods without a prior: the "No Offline" ablation and the
  early-stop baselines); the proxy is ẑ.

Input row: ``SpaceEncoder`` columns, dataset meta-features and the dynamics features at the
early-stop point ``fraction`` of each run's planned length (``dynamics.py``); s(x) is never
an input. Columns are pruned as ``feature_filter`` describes. ``n_models`` XGBoost
regressors with seeds ``seed .. seed+n−1``; prediction = ensemble mean, variance = ensemble
variance, at least the noise floor: ``variance_floor`` when given, otherwise (default) the
out-of-fold mean squared error of the regressor on held-out groups of the corpus, measured at
fit time (the ensemble's spread alone is far smaller than its real error). A run with no
finite point before the cut in any metric the regressor was trained on gets the defined
fallback r̂ = 0 (the prior alone; ẑ = 0 for ``"direct"``) with the variance of the training
targets.

At fit time the regressor also measures how well its proxy ranks runs within a dataset out
of fold (``proxy_spearman``: mean within-dataset Spearman of ŷ with z(y) on held-out groups)
and picks the corpus's best cut signal (``cut``, ``cut_signal.py``: one level statistic of a
logged metric, compared within a dataset); ``uses_cut`` says which of the two ranked better,
and the sampler's ``early_stop_signal="auto"`` follows it. The proxy is judged only where that
is honest: with held-out groups to predict, and, for ``"residual"``, with anchors s(x) from a
ranker that did not see the run's group (``anchors_held_out``). Otherwise (one group of
datasets, or in-sample anchors, whose residuals come out ≈ 0 and whose proxy then merely
repeats the ranker's in-sample fit) ``proxy_spearman`` is NaN, ``proxy_judgement`` says why,
and ``uses_cut`` takes the conservative option, the cut signal, a run's own score.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import xgboost as xgb

from optuna_autopipe.corpus import Corpus, DatasetRuns
from optuna_autopipe.cut_signal import CutSignal, within_spearman
from optuna_autopipe.dynamics import TrainingDynamics, feature_names
from optuna_autopipe.ensemble import TreeParams, load_ensemble, save_ensemble
from optuna_autopipe.feature_filter import FeatureFilter, flag_columns, informative_dataset_features
from optuna_autopipe.ranker import Ranker
from optuna_autopipe.space import SpaceEncoder

Target = Literal["residual", "direct"]


#: The regressor's default member settings (slower learning, more trees than the ranker's).
REGRESSOR_PARAMS = TreeParams(learning_rate=0.05, n_estimators=300)


@dataclass(frozen=True)
class Prediction:
    """Predicted targets and their variances, shape ``(n,)`` each."""

    mean: np.ndarray
    variance: np.ndarray


@dataclass
class EarlyStopRegressor:
    """Fit on a ``Corpus`` whose runs carry ``TrainingDynamics``; predict r̂ (or ẑ)."""

    fraction: float = 0.5
    target: Target = "residual"
    params: TreeParams = REGRESSOR_PARAMS
    filter: FeatureFilter = field(default_factory=FeatureFilter)
    n_models: int = 5
    variance_floor: float | None = None
    calibration_folds: int = 4
    use_dataset_features: bool = True
    seed: int = 0
    #: XGBoost threads per model (not saved: a runtime choice).
    n_jobs: int = 1
    encoder: SpaceEncoder | None = None
    dataset_features: list[str] = field(default_factory=list)
    metrics: list[str] = field(default_factory=list)
    kept_columns: list[str] = field(default_factory=list)
    target_variance: float = 1.0
    error_variance: float = 1.0
    #: Out-of-fold within-dataset Spearman of the proxy with the final score (NaN: not
    #: judged, ``proxy_judgement`` says why) and the cut signal it is compared with
    #: (``cut_signal.py``).
    proxy_spearman: float = math.nan
    proxy_judgement: str = "not measured"
    cut: CutSignal | None = None
    models: list[xgb.XGBRegressor] = field(default_factory=list)

    def __post_init__(self) -> None:
        if self.target not in ("residual", "direct"):
            raise ValueError(f"target must be 'residual' or 'direct', got {self.target!r}.")
        if not 0.0 < self.fraction <= 1.0:
            raise ValueError(f"fraction must be in (0, 1], got {self.fraction!r}.")
        if self.variance_floor is not None and not self.variance_floor > 0:
            raise ValueError(
                "variance_floor must be positive (or None: calibrated), got "
                f"{self.variance_floor!r}."
            )

    # --- training ------------------------------------------------------------------------

    def can_fit(self, corpus: Corpus) -> bool:
        """Whether ``fit`` can train on ``corpus``: some dataset has 2+ runs whose dynamics
        hold a finite point before the cut at ``fraction``."""
        return any(len(self._usable(d)) >= 2 for d in corpus.datasets)

    def fit(
        self,
        corpus: Corpus,
        *,
        prior_scores: Mapping[str, np.ndarray] | None = None,
        anchors_held_out: bool = True,
    ) -> EarlyStopRegressor:
        """Train on the runs with dynamics; ``prior_scores[name]``: s(x) of every run of
        dataset ``name`` (shape ``(n_runs,)``), required for ``target="residual"``;
        ``anchors_held_out``: whether each dataset's scores came from a ranker that did not
        see its group (``prior_scores(..., folds=k)``), without which the proxy is not judged.

        Raises ``ValueError`` when no dataset has 2+ runs with dynamics before the cut."""
        if self.target == "residual" and prior_scores is None:
            raise ValueError(
                "target='residual' needs the prior's scores of the corpus runs "
                "(prior_scores=...; see regressor.prior_scores)."
            )
        datasets = [self._usable(d) for d in corpus.datasets]
        usable = [
            (d, keep) for d, keep in zip(corpus.datasets, datasets, strict=True) if len(keep) >= 2
        ]
        if not usable:
            raise ValueError(
                "The early-stop regressor needs runs with recorded training dynamics (a point "
                f"before the cut at {self.fraction:g}) on at least 1 dataset with 2+ runs; the "
                f"corpus has none of {len(corpus.datasets)}. Record dynamics with "
                "AutoPipeEarlyStop in full-fidelity runs."
            )
        self.encoder = SpaceEncoder(corpus.space)
        self.dataset_features = corpus.feature_names if self.use_dataset_features else []
        self.metrics = sorted(
            {m for d, keep in usable for i in keep for m in d.dynamics[i].metrics}
        )
        blocks, targets, finals, anchors = [], [], [], []
        for d, keep in usable:
            utility = d.utility
            z = (utility - utility.mean()) / (utility.std() or 1.0)
            finals.append(z[keep])
            if self.target == "residual":
                assert prior_scores is not None
                anchors.append(_checked_scores(prior_scores, d)[keep])
                z = z - _checked_scores(prior_scores, d)
            else:
                anchors.append(np.zeros(len(keep)))
            blocks.append(
                self._rows(
                    [d.configs[i] for i in keep],
                    d.features,
                    [d.dynamics[i] for i in keep],
                    filtered=False,
                )
            )
            targets.append(z[keep])
        columns = self._all_columns()
        keep_mask = self._filter(blocks, usable, columns)
        self.kept_columns = [c for c, k in zip(columns, keep_mask, strict=True) if k]
        rows = np.vstack(blocks)
        x, y = rows[:, keep_mask], np.concatenate(targets)
        groups = np.concatenate([np.full(len(keep), d.group) for d, keep in usable])
        dataset = np.concatenate([np.full(len(keep), i) for i, (_, keep) in enumerate(usable)])
        self.target_variance = float(y.var())
        final, anchor = np.concatenate(finals), np.concatenate(anchors)
        predicted = self._out_of_fold(x, y, groups)
        self.error_variance = self.target_variance
        self.proxy_spearman = math.nan
        n_groups = len(np.unique(groups))
        if predicted is None:
            self.proxy_judgement = f"not judged: {n_groups} group of datasets, none to hold out"
        elif self.target == "residual" and not anchors_held_out:
            self.proxy_judgement = (
                "not judged: the prior scores s(x) of its targets are in-sample (the ranker saw "
                "every group), so the proxy would repeat the ranker's own fit"
            )
        else:
            self.proxy_spearman = within_spearman(anchor + predicted, final, dataset)
            self.proxy_judgement = (
                f"out of fold over {min(self.calibration_folds, n_groups)} folds of "
                f"{n_groups} groups"
            )
        if predicted is not None and n_groups >= 3:  # two folds of one dataset misjudge it
            self.error_variance = float(np.mean((predicted - y) ** 2))
        names = feature_names(self.metrics)  # the last columns of every row
        self.cut = CutSignal.fit(rows[:, len(columns) - len(names) :], names, final, dataset)
        self.models = [self._model(self.seed + i).fit(x, y) for i in range(self.n_models)]
        return self

    def _model(self, seed: int) -> xgb.XGBRegressor:
        return xgb.XGBRegressor(
            random_state=seed, n_jobs=self.n_jobs, tree_method="hist", **asdict(self.params)
        )

    def _out_of_fold(self, x: np.ndarray, y: np.ndarray, groups: np.ndarray) -> np.ndarray | None:
        """Predictions of one model per fold of groups on the groups it did not see
        (``calibration_folds`` folds; ``None`` under 2 groups)."""
        names = np.unique(groups)
        folds = min(self.calibration_folds, len(names))
        if folds < 2:
            return None
        fold_of = {g: i % folds for i, g in enumerate(names)}
        fold = np.array([fold_of[g] for g in groups])
        predicted = np.empty_like(y)
        for k in range(folds):
            held = fold == k
            predicted[held] = self._model(self.seed).fit(x[~held], y[~held]).predict(x[held])
        return predicted

    @property
    def used_dataset_features(self) -> list[str]:
        """The dataset meta-features the fitted regressor reads: those it was trained with
        that its column filter kept (none when ``use_dataset_features=False`` or when they
        did not vary across the corpus's datasets). ``AutoPipeEarlyStop`` needs these."""
        kept = set(self.kept_columns)
        return [name for name in self.dataset_features if name in kept]

    @property
    def uses_cut(self) -> bool:
        """Whether the cut signal is preferred: it ranked the corpus better than the
        out-of-fold proxy, or the proxy could not be judged (``proxy_spearman`` NaN)."""
        if self.cut is None:
            return False
        return math.isnan(self.proxy_spearman) or self.cut.spearman > self.proxy_spearman

    def signal_record(self) -> dict[str, Any]:
        """What the signal choice rests on, for the prior's record (``prior.json``)."""
        return {
            "fraction": self.fraction,
            "proxy_spearman": None if math.isnan(self.proxy_spearman) else self.proxy_spearman,
            "proxy_judgement": self.proxy_judgement,
            "cut_signal": "none: no level statistic of a logged metric relates to the final "
            "score within a dataset (it needs 3+ runs of one dataset with dynamics)"
            if self.cut is None
            else self.cut.record(),
            "auto_signal": "cut" if self.uses_cut else "proxy",
        }

    def _usable(self, d: DatasetRuns) -> list[int]:
        """Indices of ``d``'s runs whose dynamics have a point before the cut."""
        return [
            i
            for i, dyn in enumerate(d.dynamics)
            if dyn is not None and dyn.has_points(fraction=self.fraction)
        ]

    def _all_columns(self) -> list[str]:
        assert self.encoder is not None
        return self.encoder.columns + self.dataset_features + feature_names(self.metrics)

    def _filter(
        self,
        blocks: Sequence[np.ndarray],
        usable: Sequence[tuple[DatasetRuns, list[int]]],
        columns: list[str],
    ) -> np.ndarray:
        """Keep mask: run-varying columns judged per dataset, dataset features across them."""
        assert self.encoder is not None
        n_config, n_data = len(self.encoder.columns), len(self.dataset_features)
        varying = np.r_[np.arange(n_config), np.arange(n_config + n_data, len(columns))]
        flags = sum(
            flag_columns(b[:, varying], self.filter.var_ratio, self.filter.max_corr) for b in blocks
        )
        keep = np.ones(len(columns), dtype=bool)
        keep[varying] = flags < self.filter.flag_share * len(blocks)
        if n_data:
            table = np.array(
                [[d.features.get(f, math.nan) for f in self.dataset_features] for d, _ in usable]
            )
            keep[n_config : n_config + n_data] = informative_dataset_features(
                table, self.filter.max_corr
            )
        return keep

    def _rows(
        self,
        configs: Sequence[Mapping[str, Any]],
        features: Mapping[str, float],
        dynamics: Sequence[TrainingDynamics | None],
        *,
        filtered: bool,
    ) -> np.ndarray:
        assert self.encoder is not None
        names = feature_names(self.metrics)
        dyn = [
            [math.nan] * len(names)
            if d is None
            else list(d.features(fraction=self.fraction, metrics=self.metrics).values())
            for d in dynamics
        ]
        known = [float(features.get(name, math.nan)) for name in self.dataset_features]
        rows = np.hstack(
            [
                self.encoder.encode(configs),
                np.tile(known, (len(configs), 1)).reshape(len(configs), -1),
                np.asarray(dyn, dtype=float).reshape(len(configs), -1),
            ]
        )
        if not filtered:
            return rows
        index = {c: i for i, c in enumerate(self._all_columns())}
        return rows[:, [index[c] for c in self.kept_columns]]

    # --- prediction ----------------------------------------------------------------------

    def predict(
        self,
        configs: Sequence[Mapping[str, Any]],
        features: Mapping[str, float],
        dynamics: Sequence[TrainingDynamics | None],
    ) -> Prediction:
        """r̂ (or ẑ) and its variance for runs of ``configs`` with their ``dynamics``."""
        if not self.models:
            raise RuntimeError("The regressor is not fitted; call fit(corpus) or Prior.load(...).")
        if len(dynamics) != len(configs):
            raise ValueError(f"{len(configs)} configs but {len(dynamics)} dynamics records.")
        x = self._rows(configs, features, dynamics, filtered=True)
        each = np.array([m.predict(x) for m in self.models], dtype=float)
        mean, variance = each.mean(axis=0), np.maximum(each.var(axis=0), self.noise_floor)
        blind = np.array(
            [
                d is None or not d.has_points(fraction=self.fraction, metrics=self.metrics)
                for d in dynamics
            ]
        )
        mean[blind], variance[blind] = 0.0, max(self.target_variance, self.noise_floor)
        return Prediction(mean=mean, variance=variance)

    @property
    def noise_floor(self) -> float:
        """The least variance of a prediction: ``variance_floor``, or when that is ``None``
        the out-of-fold mean squared error measured at fit time."""
        return self.error_variance if self.variance_floor is None else self.variance_floor

    def proxy(self, prediction: Prediction, prior_score: np.ndarray | float | None) -> np.ndarray:
        """ŷ = s(x) + r̂ (``"residual"``) or ẑ (``"direct"``), shape ``(n,)``."""
        if self.target == "direct":
            return prediction.mean
        if prior_score is None:
            raise ValueError("A residual regressor's proxy needs the prior score s(x).")
        return np.asarray(prior_score, dtype=float) + prediction.mean

    # --- persistence ---------------------------------------------------------------------

    def save(self, directory: str | Path, *, stem: str = "regressor") -> None:
        """Write ``<stem>.json`` (schema) and ``<stem>-<i>.json`` (XGBoost models)."""
        save_ensemble(directory, stem, self)

    @classmethod
    def load(cls, directory: str | Path, *, stem: str = "regressor") -> EarlyStopRegressor:
        """A regressor written by ``save`` with the same ``stem``."""
        return load_ensemble(directory, stem, cls, xgb.XGBRegressor)


def prior_scores(corpus: Corpus, ranker: Ranker, *, folds: int = 0) -> dict[str, np.ndarray]:
    """s(x) of every corpus run, standardised over its dataset's runs.

    ``folds=0``: the fitted ``ranker`` scores every dataset (in-sample: the ranker has seen
    these runs, so its scores are better than on a new dataset and residuals come out too
    small). ``folds=k``: cross-fitting, as a new dataset will see the ranker: groups are dealt
    into ``min(k, groups)`` folds and each fold is scored by a ranker with ``ranker``'s
    settings trained on the other folds. Cross-fitting needs 2+ groups; with one it falls
    back to in-sample scores (``ranker`` must be fitted; ``cross_fitted`` tells which).
    """
    groups = sorted({d.group for d in corpus.rankable})
    folds = min(folds, len(groups))
    if not cross_fitted(corpus, folds):
        return {d.name: ranker.score(d.configs, d.features) for d in corpus.datasets}
    # a group of one-run datasets has nothing to rank (its standardised score is 0 either way)
    unranked = [d for d in corpus.datasets if d.group not in groups]
    scores = {d.name: ranker.score(d.configs, d.features) for d in unranked}
    for k in range(folds):
        held = {g for i, g in enumerate(groups) if i % folds == k}
        train = corpus.without(d.name for d in corpus.datasets if d.group in held)
        fitted = dataclasses.replace(ranker, encoder=None, models=[]).fit(train)
        for d in corpus.datasets:
            if d.group in held:
                scores[d.name] = fitted.score(d.configs, d.features)
    return scores


def cross_fitted(corpus: Corpus, folds: int) -> bool:
    """Whether ``prior_scores(corpus, ..., folds=folds)`` cross-fits (2+ folds of groups
    holding a dataset of 2+ runs)."""
    return min(folds, len({d.group for d in corpus.rankable})) >= 2


def _checked_scores(scores: Mapping[str, np.ndarray], d: DatasetRuns) -> np.ndarray:
    if d.name not in scores or len(scores[d.name]) != len(d.configs):
        raise ValueError(
            f"prior_scores must give s(x) for each of the {len(d.configs)} runs of dataset "
            f"{d.name!r}."
        )
    return np.asarray(scores[d.name], dtype=float)
