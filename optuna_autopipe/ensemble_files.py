"""Saving and loading an XGBoost ensemble as plain files: ``<stem>.json`` + ``<stem>-<i>.json``.

``<stem>.json`` is the model's schema (its settings, the encoding, kept columns, versions);
each ``<stem>-<i>.json`` is one XGBoost model in XGBoost's own JSON format.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, TypeVar

import xgboost as xgb

Model = TypeVar("Model", xgb.XGBRanker, xgb.XGBRegressor)


def save_ensemble(
    directory: str | Path, stem: str, models: Sequence[xgb.XGBModel], schema: dict[str, Any]
) -> None:
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    for i, model in enumerate(models):
        model.save_model(directory / f"{stem}-{i}.json")
    schema = {**schema, "n_models": len(models), "versions": {"xgboost": xgb.__version__}}
    (directory / f"{stem}.json").write_text(json.dumps(schema, indent=1))


def load_ensemble(
    directory: str | Path, stem: str, model_type: Callable[[], Model]
) -> tuple[dict[str, Any], list[Model]]:
    """The schema and the models; a missing or corrupt file raises with the path and the fix."""
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
            model = model_type()
            model.load_model(directory / f"{stem}-{i}.json")
            models.append(model)
    except (ValueError, KeyError, TypeError, xgb.core.XGBoostError) as exc:
        raise corrupt_prior(directory, exc) from exc
    return schema, models


def corrupt_prior(directory: str | Path, exc: Exception) -> ValueError:
    return ValueError(
        f"{directory} holds a corrupt or incompatible prior ({exc!r}); refit it with "
        "`autopipe fit-prior`."
    )
