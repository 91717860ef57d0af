"""The prior a study starts from: the tuned ranker and the early-stop regressors, as plain files.

``fit_prior`` chooses the ranker's XGBoost settings by a small grid search scored by
leave-one-group-out nDCG@5 (as the paper: mean and minimum over held-out datasets, here
maximising ``mean + min``), then fits the ensemble on the whole corpus. When the corpus runs
carry training dynamics it also fits the residual early-stop regressor, on cross-fitted
prior scores (``regressor.prior_scores``), once per early-stop fraction the corpus supports
(default 25%, 50% and 75%; ``Prior.regressor_for(fraction)``). The directory holds
``ranker.json`` + ``ranker-<i>.json`` (see ``Ranker.save``), optionally the default
regressor as ``regressor.json`` + ``regressor-<i>.json`` and each other fraction's as
``regressor_<fraction>.json`` + ``regressor_<fraction>-<i>.json``, and ``prior.json`` (the
grid search, the corpus it saw, versions, and ``regressor_files``: which file holds which
fraction's regressor). A prior saved without ``regressor_files`` (one regressor, in
``regressor.json``) still loads.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import optuna
import xgboost as xgb
from optuna.distributions import BaseDistribution

import optuna_autopipe
from optuna_autopipe.corpus import Corpus
from optuna_autopipe.ensemble import TreeParams
from optuna_autopipe.metrics import ranking_metrics
from optuna_autopipe.ranker import Ranker
from optuna_autopipe.regressor import EarlyStopRegressor, cross_fitted, prior_scores

DEFAULT_GRID: tuple[TreeParams, ...] = tuple(
    TreeParams(max_depth=depth, n_estimators=trees) for depth in (3, 6) for trees in (100, 300)
)
#: The early-stop points ``fit_prior`` fits a regressor for, where the corpus allows.
DEFAULT_FRACTIONS: tuple[float, ...] = (0.25, 0.5, 0.75)
#: The fraction of the default regressor (``Prior.regressor``) when the corpus serves it.
DEFAULT_FRACTION = 0.5


@dataclass
class Prior:
    """A fitted ranker, optionally early-stop regressors, and the record of the fit.

    ``regressors`` maps each early-stop fraction the prior serves to its regressor;
    ``regressor_for(fraction)`` picks the one for a hook stopping at ``fraction``.
    ``regressor`` is the default one (``fit_prior``: 50% when served), which
    ``AutoPipeSampler`` reads; it is added to ``regressors`` when missing there.

    Raises ``ValueError`` when a key of ``regressors`` is not its regressor's fraction.
    """

    ranker: Ranker
    regressor: EarlyStopRegressor | None = None
    record: dict[str, Any] = field(default_factory=dict)
    regressors: dict[float, EarlyStopRegressor] = field(default_factory=dict)

    def __post_init__(self) -> None:
        for fraction, regressor in self.regressors.items():
            if not math.isclose(fraction, regressor.fraction):
                raise ValueError(
                    f"regressors[{fraction:g}] was trained at fraction {regressor.fraction:g}; "
                    "key each regressor by its own fraction."
                )
        if self.regressor is not None:
            self.regressors = {**self.regressors, self.regressor.fraction: self.regressor}
        self.regressors = dict(sorted(self.regressors.items()))

    @property
    def fractions(self) -> list[float]:
        """The early-stop fractions the prior has a regressor for, ascending."""
        return list(self.regressors)

    def regressor_for(self, fraction: float) -> EarlyStopRegressor:
        """The early-stop regressor for a hook stopping at ``fraction``.

        Raises ``ValueError`` for a fraction outside (0, 1), and when the prior has none
        there, naming the fractions it serves and how to refit it for ``fraction``.
        """
        for served, regressor in self.regressors.items():
            if math.isclose(served, fraction):
                return regressor
        if not 0.0 < fraction < 1.0:
            raise ValueError(
                f"An early-stop fraction is in (0, 1), got {fraction!r}: a run at fraction 1 "
                "is a full run and needs no regressor."
            )
        if not self.regressors:
            raise ValueError(
                "The prior has no early-stop regressor: its corpus runs carried no training "
                "dynamics usable at the fractions it was fitted for (record['regressors'] says "
                "why). Refit it on runs recorded with AutoPipeEarlyStop (`autopipe fit-prior`)."
            )
        raise ValueError(
            f"The prior serves early-stop fractions {self.fractions}, not {fraction:g}. Stop "
            f"the hook at one of them, or refit the prior for it: fit_prior(corpus, "
            f"fractions=(..., {fraction:g})) or `autopipe fit-prior --fractions "
            f"...,{fraction:g}` (a fraction needs corpus runs that logged a point before it)."
        )

    def score(
        self, configs: Sequence[Mapping[str, Any]], features: Mapping[str, float]
    ) -> np.ndarray:
        """s(x) over ``configs`` (standardised), shape ``(len(configs),)``."""
        return self.ranker.score(configs, features)

    def check_space(self, space: Mapping[str, BaseDistribution]) -> None:
        """Raise if ``space`` has parameters the prior never saw, or lacks some it needs."""
        assert self.ranker.encoder is not None
        known = self.ranker.encoder.space
        unknown = sorted(set(space) - set(known))
        missing = sorted(set(known) - set(space))
        if unknown or missing:
            raise ValueError(
                "The search space differs from the prior's: "
                + (f"parameters the prior never saw: {unknown}; " if unknown else "")
                + (f"parameters the prior expects: {missing}; " if missing else "")
                + "refit the prior on studies with this search space (`autopipe fit-prior`)."
            )

    def save(self, directory: str | Path) -> None:
        """Write the ranker, the regressors and ``prior.json`` (the record, with this
        package's version, which ``load`` checks, and ``regressor_files``)."""
        directory = Path(directory)
        self.ranker.save(directory)
        files = {}
        for fraction, regressor in self.regressors.items():
            stem = "regressor" if regressor is self.regressor else f"regressor_{fraction:g}"
            regressor.save(directory, stem=stem)
            files[f"{fraction:g}"] = stem
        versions = {
            **self.record.get("versions", {}),
            "optuna_autopipe": optuna_autopipe.__version__,
        }
        record = {**self.record, "versions": versions, "regressor_files": files}
        (directory / "prior.json").write_text(json.dumps(record, indent=1))

    @classmethod
    def load(cls, directory: str | Path) -> Prior:
        """A prior saved by ``save``. Raises ``ValueError`` when its ``prior.json`` is not
        a prior record (not a JSON object, or without the ``versions`` every save writes) or
        was written by another MAJOR.MINOR version of optuna-autopipe (a prior without
        ``prior.json`` is not checked)."""
        directory = Path(directory)
        record_path = directory / "prior.json"
        try:
            record = json.loads(record_path.read_text()) if record_path.exists() else {}
            if not isinstance(record, dict):
                raise ValueError(f"a JSON {type(record).__name__}, not an object")
            if record_path.exists() and not isinstance(record.get("versions"), dict):
                raise ValueError("no 'versions' object, which every saved prior records")
        except ValueError as exc:
            raise ValueError(
                f"{record_path} is not a prior record ({exc}); refit with `autopipe fit-prior`."
            ) from exc
        _check_version(record_path, record)
        ranker = Ranker.load(directory)
        files = record.get("regressor_files")
        if files is None:  # saved with one regressor, or none
            files = {"default": "regressor"} if (directory / "regressor.json").exists() else {}
        if not isinstance(files, dict) or not all(isinstance(s, str) for s in files.values()):
            raise ValueError(
                f"{record_path}: 'regressor_files' is not a mapping of fractions to file "
                "stems; refit with `autopipe fit-prior`."
            )
        loaded = {stem: EarlyStopRegressor.load(directory, stem=stem) for stem in files.values()}
        return cls(
            ranker=ranker,
            regressor=loaded.get("regressor"),  # the default
            record=record,
            regressors={r.fraction: r for r in loaded.values()},
        )


def _check_version(record_path: Path, record: dict[str, Any]) -> None:
    """Raise unless ``record`` was written by this MAJOR.MINOR version of the package."""
    versions = record.get("versions")
    saved = versions.get("optuna_autopipe") if isinstance(versions, dict) else None
    if saved is None:
        return
    current = optuna_autopipe.__version__
    if str(saved).split(".")[:2] != current.split(".")[:2]:
        raise ValueError(
            f"{record_path} was written by optuna-autopipe {saved}; this is {current}, which "
            f"reads priors of version {'.'.join(current.split('.')[:2])}.x only. Refit with "
            "`autopipe fit-prior`."
        )


def _folds(corpus: Corpus, max_folds: int) -> list[str]:
    """Up to ``max_folds`` groups to hold out, evenly spread over the sorted groups."""
    groups = sorted({d.group for d in corpus.datasets})
    index = np.unique(np.linspace(0, len(groups) - 1, min(max_folds, len(groups))).round())
    return [groups[int(i)] for i in index]


def fit_prior(
    corpus: Corpus,
    *,
    grid: Sequence[TreeParams] = DEFAULT_GRID,
    max_folds: int = 6,
    tune_rows: int = 500,
    n_models: int = 3,
    seed: int = 0,
    n_jobs: int = 1,
    fractions: Sequence[float] = DEFAULT_FRACTIONS,
    fraction: float | None = None,
    cross_fit: int = 4,
    regressor_rows: int | None = None,
) -> Prior:
    """Grid-search the ranker on held-out groups, then fit the chosen one on everything.

    Each grid point trains one model per held-out group (``max_folds`` groups at most), on
    at most ``tune_rows`` runs per training dataset (a seeded subsample, to keep the search
    cheap), and records nDCG@5 on every held-out dataset; the winner maximises mean + min.
    ``n_jobs``: XGBoost threads per model (-1: all cores; 1 avoids OpenMP spinning on a
    busy machine). With fewer than 3 dataset groups there is nothing to hold out and still
    train on, so the grid search is skipped and the first grid point is used (recorded).

    Runs with training dynamics also train a residual early-stop regressor per early-stop
    point in ``fractions`` (and ``fraction``), each where the corpus supports it: a dataset
    with 2+ runs that logged a finite point before the cut (``EarlyStopRegressor.can_fit``);
    ``record["regressors"]`` has each fraction's signal record, or why it was not fitted
    (``fractions=()``: no regressor). They use at most ``regressor_rows`` runs with dynamics
    per dataset (a seeded subsample; ``None``: all) and share their targets' prior scores,
    cross-fitted over ``cross_fit`` folds of groups (see ``prior_scores``; 0: in-sample).
    ``Prior.regressor``, the default, is the one at ``fraction`` (``None``: 50%), or, when
    the corpus does not serve it, the fitted one nearest to it; ``record["regressor"]``
    describes it. Each extra fraction costs one more regressor fit (a few seconds on
    thousands of runs), not another ranker.

    Little history works too: one dataset (one ranking query; the regressor learns within
    it) or two datasets of one group. What such a prior cannot judge is written in its
    record instead of being judged in-sample: ``record["ranker"]`` says whether the grid
    search ran, ``record["regressor"]`` how the proxy was judged and which early-stop
    signal ``early_stop_signal="auto"`` will use and why (``EarlyStopRegressor.uses_cut``).

    Raises ``ValueError`` for a corpus without a dataset of 2+ runs, or a fraction outside
    (0, 1].
    """
    corpus.require_training_data()
    wanted = sorted({*fractions, *([] if fraction is None else [fraction])})
    candidates = [EarlyStopRegressor(fraction=f, seed=seed, n_jobs=n_jobs) for f in wanted]
    sample = corpus.subsample(tune_rows, seed=seed)
    trials = []
    for params in grid:
        ndcg = []
        if len(grid) > 1 and len({d.group for d in corpus.datasets}) >= 3:
            for group in _folds(corpus, max_folds):
                held = [d for d in corpus.datasets if d.group == group]
                train = sample.without(d.name for d in held)
                ranker = Ranker(params=params, n_models=1, seed=seed, n_jobs=n_jobs).fit(train)
                for d in held:
                    predicted = ranker.raw_scores(d.configs, d.features)
                    ndcg.append(ranking_metrics(d.utility, predicted)["ndcg@5"])
        trials.append(
            {
                "params": asdict(params),
                "ndcg@5_mean": float(np.mean(ndcg)) if ndcg else None,
                "ndcg@5_min": float(np.min(ndcg)) if ndcg else None,
            }
        )
    best = max(
        range(len(grid)),
        key=lambda i: (trials[i]["ndcg@5_mean"] or 0) + (trials[i]["ndcg@5_min"] or 0),
    )
    ranker = Ranker(params=grid[best], n_models=n_models, seed=seed, n_jobs=n_jobs)
    ranker.fit(corpus)
    groups = len({d.group for d in corpus.rankable})
    dynamics = corpus.with_dynamics()
    if regressor_rows is not None:
        dynamics = dynamics.subsample(regressor_rows, seed=seed)
    fitted = [r for r in candidates if r.can_fit(dynamics)]
    if fitted:
        scores = prior_scores(dynamics, ranker, folds=cross_fit)
        for r in fitted:
            r.fit(dynamics, prior_scores=scores, anchors_held_out=cross_fitted(dynamics, cross_fit))
    target = DEFAULT_FRACTION if fraction is None else fraction
    regressor = min(fitted, key=lambda r: (abs(r.fraction - target), r.fraction), default=None)
    record: dict[str, Any] = {
        "grid_search": trials,
        "chosen": asdict(grid[best]),
        "ranker": {
            "groups": groups,
            "grid_search": "ran"
            if any(t["ndcg@5_mean"] is not None for t in trials)
            else (
                "skipped: one grid point"
                if len(grid) == 1
                else f"skipped: {groups} group(s) of datasets, under the 3 a held-out "
                "fold needs; the first grid point is used"
            ),
        },
        "corpus": {d.name: len(d.configs) for d in corpus.datasets},
        "versions": {
            "optuna_autopipe": optuna_autopipe.__version__,
            "optuna": optuna.__version__,
            "xgboost": xgb.__version__,
        },
    }
    record["regressor"] = (
        None
        if regressor is None
        else {
            "cross_fit": cross_fit,
            "anchors": "cross-fitted" if cross_fitted(dynamics, cross_fit) else "in-sample",
            **regressor.signal_record(),
        }
    )
    record["regressors"] = {
        f"{r.fraction:g}": r.signal_record()
        if r.models
        else f"not fitted: no dataset has 2+ runs with a finite logged point before "
        f"{r.fraction:.0%} of training"
        for r in candidates
    }
    return Prior(
        ranker=ranker,
        regressor=regressor,
        record=record,
        regressors={r.fraction: r for r in fitted},
    )
