"""The offline corpus: past runs grouped by dataset, with each dataset's meta-features.

Sources: past Optuna studies (one per dataset), the recorded benchmarks, or a JSONL file.

File format (``Corpus.save`` / ``Corpus.load``), one JSON object per line:

- ``{"kind": "space", "space": {param: optuna distribution JSON}}`` (first line);
- ``{"kind": "dataset", "name": str, "group": str, "direction": "minimize"|"maximize",
  "features": {name: float|null}}``;
- ``{"kind": "run", "dataset": str, "config": {param: value}, "score": float,
  "cost": float|null, "dynamics": {"total_steps": int, "metrics": {metric: [[step, value],
  ...]}}|null}`` (``TrainingDynamics``: the run's logged metrics, for the early-stop
  regressor).

Only full-fidelity results are runs; ``group`` names datasets that are subsets of one
underlying dataset (they form one ranking group).
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import optuna
from optuna.distributions import BaseDistribution, distribution_to_json, json_to_distribution

from optuna_autopipe.dynamics import DYNAMICS_ATTR, TrainingDynamics
from optuna_autopipe.early_stop import full_fidelity_result
from optuna_autopipe.profile import PROFILE_ATTR
from optuna_autopipe.space import union_space

_logger = logging.getLogger(__name__)


@dataclass
class DatasetRuns:
    """One dataset's past runs: configurations and final scores, shape ``(n,)``."""

    name: str
    direction: str
    features: dict[str, float]
    configs: list[dict[str, Any]]
    scores: np.ndarray
    group: str = ""
    costs: list[float | None] = field(default_factory=list)
    dynamics: list[TrainingDynamics | None] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.group = self.group or self.name
        self.scores = np.asarray(self.scores, dtype=float)
        if self.direction not in ("minimize", "maximize"):
            raise ValueError(
                f"Dataset {self.name!r}: direction must be 'minimize' or 'maximize', "
                f"got {self.direction!r}."
            )
        if len(self.configs) != len(self.scores):
            raise ValueError(
                f"Dataset {self.name!r}: {len(self.configs)} configs, {len(self.scores)} scores."
            )
        bad = ~np.isfinite(self.scores)
        if bad.any():
            raise ValueError(
                f"Dataset {self.name!r} has {int(bad.sum())} non-finite scores (NaN/inf) at rows "
                f"{np.flatnonzero(bad)[:10].tolist()}; drop those runs or record them as failed."
            )
        self.costs = self.costs or [None] * len(self.configs)
        self.dynamics = self.dynamics or [None] * len(self.configs)

    @property
    def utility(self) -> np.ndarray:
        """Scores oriented so that higher is better, shape ``(n,)``."""
        return self.scores if self.direction == "maximize" else -self.scores

    def take(self, rows: Sequence[int] | np.ndarray) -> DatasetRuns:
        """The same dataset with only the runs at ``rows``."""
        return DatasetRuns(
            name=self.name,
            direction=self.direction,
            features=self.features,
            configs=[self.configs[i] for i in rows],
            scores=self.scores[np.asarray(rows, dtype=int)],
            group=self.group,
            costs=[self.costs[i] for i in rows],
            dynamics=[self.dynamics[i] for i in rows],
        )


@dataclass
class Corpus:
    """Past runs of several datasets over one (union) search space."""

    space: dict[str, BaseDistribution]
    datasets: list[DatasetRuns]

    def __post_init__(self) -> None:
        names = [d.name for d in self.datasets]
        if len(set(names)) != len(names):
            raise ValueError(f"Corpus has duplicate dataset names: {names}.")

    @property
    def feature_names(self) -> list[str]:
        """Union of the datasets' meta-feature names, sorted."""
        return sorted({k for d in self.datasets for k in d.features})

    def dataset(self, name: str) -> DatasetRuns:
        for d in self.datasets:
            if d.name == name:
                return d
        raise ValueError(
            f"Dataset {name!r} is not in the corpus ({[d.name for d in self.datasets]})."
        )

    def without(self, names: Iterable[str]) -> Corpus:
        """The corpus minus some datasets (for leave-one-dataset-out)."""
        drop = set(names)
        return Corpus(self.space, [d for d in self.datasets if d.name not in drop])

    def subsample(self, n: int, *, seed: int = 0) -> Corpus:
        """At most ``n`` runs per dataset, drawn without replacement (seeded)."""
        rng = np.random.default_rng(seed)
        return Corpus(
            self.space,
            [d.take(np.sort(rng.permutation(len(d.configs))[:n])) for d in self.datasets],
        )

    def with_dynamics(self) -> Corpus:
        """The runs that recorded training dynamics (datasets without any are dropped)."""
        kept = [(d, [i for i, x in enumerate(d.dynamics) if x is not None]) for d in self.datasets]
        return Corpus(self.space, [d.take(keep) for d, keep in kept if keep])

    @property
    def rankable(self) -> list[DatasetRuns]:
        """The datasets with at least two runs (a ranking needs a pair)."""
        return [d for d in self.datasets if len(d.configs) >= 2]

    def require_training_data(self) -> None:
        """Raise unless the corpus can train a ranker: one dataset with two runs is enough
        (one query group; ``fit_prior`` records what a prior from so little history can and
        cannot judge)."""
        if not self.rankable:
            short = [d.name for d in self.datasets if len(d.configs) < 2]
            raise ValueError(
                f"A prior needs past runs on at least 1 dataset with 2+ runs; this corpus has "
                f"0 usable of {len(self.datasets)}"
                + (f" (fewer than 2 runs: {short[:10]})" if short else "")
                + ". Add finished full-fidelity trials or studies of other datasets."
            )

    # --- sources -------------------------------------------------------------------------

    @classmethod
    def from_tasks(
        cls,
        tasks: Sequence[Any],
        *,
        groups: Mapping[str, str] | None = None,
        max_runs: int | None = None,
        dynamics: bool = False,
        seed: int = 0,
    ) -> Corpus:
        """From benchmark replays: each task's reference pool with its true scores.

        ``max_runs``: at most that many pool configurations per task (a seeded draw).
        ``dynamics``: give every run the training dynamics of one observed (noisy) run
        (``ReplayTask.run_dynamics``, seeded by ``seed``).
        """
        datasets = []
        for task in tasks:
            configs, scores = task.pool()
            keep = np.arange(len(configs))
            if max_runs is not None and max_runs < len(configs):
                rng = np.random.default_rng([seed, len(datasets)])
                keep = np.sort(rng.permutation(len(configs))[:max_runs])
            configs = [configs[i] for i in keep]
            datasets.append(
                DatasetRuns(
                    name=task.name,
                    direction=task.direction,
                    features=task.dataset_features,
                    configs=configs,
                    scores=np.asarray(scores)[keep],
                    group=(groups or {}).get(task.name, task.name),
                    dynamics=task.run_dynamics(configs, seed=seed) if dynamics else [],
                )
            )
        return cls(union_space([t.search_space for t in tasks]), datasets)

    @classmethod
    def from_studies(
        cls, storage: str | optuna.storages.BaseStorage, study_names: Sequence[str]
    ) -> Corpus:
        """From past studies, one per dataset, meta-features in the study user attr
        ``autopipe:dataset_profile`` (a ``DatasetProfile`` JSON or a flat ``{name: value}``).

        Only COMPLETE trials at full fidelity (user attr ``fidelity`` absent or 1) are runs;
        the others are skipped and counted in the log.
        """
        datasets, spaces = [], []
        for name in study_names:
            try:
                study = optuna.load_study(study_name=name, storage=storage)
            except KeyError as exc:
                raise ValueError(f"Study {name!r} not found in the storage.") from exc
            if len(study.directions) != 1:
                raise ValueError(f"Study {name!r} is multi-objective; a corpus needs one score.")
            runs = [t for t in study.get_trials(deepcopy=False) if full_fidelity_result(t)]
            skipped = len(study.trials) - len(runs)
            if skipped:
                _logger.info(
                    "study %s: %d trials skipped (not COMPLETE at full fidelity, or non-finite)",
                    name,
                    skipped,
                )
            for trial in runs:
                spaces.append(trial.distributions)
            datasets.append(
                DatasetRuns(
                    name=name,
                    direction=study.direction.name.lower(),
                    features=_features_from_attr(name, study.user_attrs.get(PROFILE_ATTR)),
                    configs=[dict(t.params) for t in runs],
                    scores=np.array([t.value for t in runs]),
                    group=str(study.user_attrs.get("autopipe:dataset_group", name)),
                    costs=[t.user_attrs.get("cost") for t in runs],
                    dynamics=[_dynamics_from_attr(name, t) for t in runs],
                )
            )
        return cls(union_space(spaces), datasets)

    def save(self, path: str | Path, *, max_points: int | None = None) -> None:
        """Write the corpus as JSONL (format in the module docstring); ``max_points`` thins
        each run's dynamics to at most that many points per metric."""
        with Path(path).open("w") as out:
            space = {n: distribution_to_json(d) for n, d in self.space.items()}
            out.write(json.dumps({"kind": "space", "space": space}) + "\n")
            for d in self.datasets:
                features = {k: None if math.isnan(v) else v for k, v in d.features.items()}
                head = {
                    "kind": "dataset",
                    "name": d.name,
                    "group": d.group,
                    "direction": d.direction,
                    "features": features,
                }
                out.write(json.dumps(head) + "\n")
                for config, score, cost, dynamics in zip(
                    d.configs, d.scores.tolist(), d.costs, d.dynamics, strict=True
                ):
                    run = {
                        "kind": "run",
                        "dataset": d.name,
                        "config": config,
                        "score": score,
                        "cost": cost,
                        "dynamics": None
                        if dynamics is None
                        else json.loads(dynamics.to_json(max_points=max_points)),
                    }
                    out.write(json.dumps(run) + "\n")

    @classmethod
    def load(cls, path: str | Path) -> Corpus:
        """Read a JSONL corpus; errors name the file and line."""
        path = Path(path)
        if not path.exists():
            raise FileNotFoundError(f"Corpus file {path} not found.")
        space: dict[str, BaseDistribution] | None = None
        heads: dict[str, dict[str, Any]] = {}
        runs: dict[str, list[dict[str, Any]]] = {}
        with path.open() as lines:
            for number, line in enumerate(lines, 1):
                if not line.strip():
                    continue
                try:
                    record = json.loads(line)
                    kind = record["kind"]
                    if kind == "space":
                        space = {n: json_to_distribution(d) for n, d in record["space"].items()}
                    elif kind == "dataset":
                        heads[record["name"]] = record
                        runs.setdefault(record["name"], [])
                    elif kind == "run":
                        runs.setdefault(record["dataset"], []).append(record)
                    else:
                        raise ValueError(f"unknown kind {kind!r}")
                except (ValueError, KeyError, TypeError) as exc:
                    raise ValueError(
                        f"{path}, line {number}: not a corpus record ({exc!r}); see the format "
                        "in optuna_autopipe/corpus.py."
                    ) from exc
        if space is None:
            raise ValueError(f"{path}: no 'space' record; see optuna_autopipe/corpus.py.")
        missing = sorted(set(runs) - set(heads))
        if missing:
            raise ValueError(f"{path}: runs of datasets without a 'dataset' record: {missing}.")
        try:
            datasets = [
                DatasetRuns(
                    name=name,
                    direction=head["direction"],
                    features={
                        k: math.nan if v is None else float(v) for k, v in head["features"].items()
                    },
                    configs=[r["config"] for r in runs[name]],
                    scores=np.array([r["score"] for r in runs[name]], dtype=float),
                    group=head.get("group", name),
                    costs=[r.get("cost") for r in runs[name]],
                    dynamics=[
                        _parse_dynamics(r.get("dynamics"), f"a run of {name}") for r in runs[name]
                    ],
                )
                for name, head in heads.items()
            ]
        except ValueError as exc:
            raise ValueError(f"{path}: {exc}") from exc
        return cls(space, datasets)


def _features_from_attr(study: str, value: Any) -> dict[str, float]:
    """Dataset features from a study user attr: a profile dict/JSON or ``{name: number}``."""
    if value is None:
        _logger.warning(
            "study %s has no %s user attr: its dataset features are unknown", study, PROFILE_ATTR
        )
        return {}
    try:
        if isinstance(value, str):
            value = json.loads(value)
        features = value.get("features", value) if isinstance(value, dict) else None
        if not isinstance(features, dict):
            raise ValueError("expected an object of features")
        return {k: math.nan if v is None else float(v) for k, v in features.items()}
    except (ValueError, TypeError) as exc:
        raise ValueError(
            f"Study {study!r}: user attr {PROFILE_ATTR!r} is not a feature mapping ({exc}); "
            "set it with DatasetProfile.to_study(study) or as {name: number or None}."
        ) from exc


def _parse_dynamics(value: Any, source: str) -> TrainingDynamics | None:
    return None if value is None else TrainingDynamics.from_json(value, source=source)


def _dynamics_from_attr(study: str, trial: optuna.trial.FrozenTrial) -> TrainingDynamics | None:
    """A trial's recorded dynamics; a malformed record is skipped with a warning (the run's
    score still counts)."""
    try:
        return _parse_dynamics(
            trial.user_attrs.get(DYNAMICS_ATTR), f"study {study}, trial {trial.number}"
        )
    except ValueError as exc:
        _logger.warning("%s; the run is kept without dynamics", exc)
        return None
