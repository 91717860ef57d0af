"""XGBoost ensembles (the ranker's and the regressor's): member settings and plain-file storage.

An ensemble is saved as ``<stem>.json``, the model's schema (its settings, the encoding, kept
columns, versions), plus one ``<stem>-<i>.json`` per member in XGBoost's own JSON format.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import asdict, dataclass, fields, is_dataclass
from pathlib import Path
from typing import Any, TypeVar

import xgboost as xgb

from optuna_autopipe.cut_signal import CutSignal
from optuna_autopipe.feature_filter import FeatureFilter
from optuna_autopipe.space import SpaceEncoder

Model = TypeVar("Model", xgb.XGBRanker, xgb.XGBRegressor)


@dataclass(frozen=True)
class TreeParams:
    """XGBoost settings of each ensemble member."""

    max_depth: int = 4
    learning_rate: float = 0.1
    n_estimators: int = 200
    subsample: float = 0.8
    colsample_bytree: float = 0.8
    min_child_weight: float = 1.0


#: Fields that are runtime choices or the fitted members themselves, never in the schema.
_RUNTIME = ("models", "n_jobs", "n_models")
#: How schema values become field values again (others are plain JSON).
_RESTORE: dict[str, Callable[[Any], Any]] = {
    "params": lambda value: TreeParams(**value),
    "filter": lambda value: FeatureFilter(**value),
    "encoder": lambda value: SpaceEncoder.from_json(json.dumps(value)),
    "cut": lambda value: None if value is None else CutSignal(**value),
}

Ensemble = TypeVar("Ensemble")


def save_ensemble(directory: str | Path, stem: str, ensemble: Any) -> None:
    """Write a fitted ensemble dataclass: its fields as the schema, its ``models`` as files."""
    if not ensemble.models:
        raise RuntimeError(f"The {stem} is not fitted; nothing to save.")
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    for i, model in enumerate(ensemble.models):
        model.save_model(directory / f"{stem}-{i}.json")
    schema = {
        f.name: _plain(getattr(ensemble, f.name))
        for f in fields(ensemble)
        if f.name not in _RUNTIME
    }
    schema.update(n_models=len(ensemble.models), versions={"xgboost": xgb.__version__})
    (directory / f"{stem}.json").write_text(json.dumps(schema, indent=1))


def load_ensemble(
    directory: str | Path, stem: str, cls: type[Ensemble], member: Callable[[], Model]
) -> Ensemble:
    """An ensemble saved by ``save_ensemble``; a missing or corrupt file raises with the fix."""
    directory = Path(directory)
    schema_path = directory / f"{stem}.json"
    if not schema_path.exists():
        raise FileNotFoundError(
            f"{schema_path} not found: not a saved prior (fit one with `autopipe fit-prior`)."
        )
    try:
        schema = json.loads(schema_path.read_text())
        models = []
        for i in range(schema["n_models"]):
            model = member()
            model.load_model(directory / f"{stem}-{i}.json")
            models.append(model)
        values = {
            f.name: _RESTORE.get(f.name, lambda value: value)(schema[f.name])
            for f in fields(cls)  # type: ignore[arg-type]
            if f.name in schema and f.name not in _RUNTIME
        }
        return cls(**values, n_models=len(models), models=models)
    except (ValueError, KeyError, TypeError, xgb.core.XGBoostError) as exc:
        raise corrupt_prior(directory, exc) from exc


def _plain(value: Any) -> Any:
    if isinstance(value, SpaceEncoder):
        return json.loads(value.to_json())
    return asdict(value) if is_dataclass(value) else value


def corrupt_prior(directory: str | Path, exc: Exception) -> ValueError:
    return ValueError(
        f"{directory} holds a corrupt or incompatible prior ({exc!r}); refit it with "
        "`autopipe fit-prior`."
    )
