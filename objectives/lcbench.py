"""LCBench benchmark through the YAHPO Gym ONNX surrogate (34 OpenML tasks, any configuration).

Score: validation accuracy (percent) after the last of 52 epochs, higher is better. The
surrogate is smooth and noise-free, which makes early stopping unrealistically easy, so the
curve a method sees carries i.i.d. Gaussian observation noise (``noise_sd`` accuracy points
per epoch, default 1.0; 0 turns it off). The true score used for regret is noise-free.

Training dynamics: per epoch, the observed validation accuracy, balanced accuracy (same
noise) and cross-entropy (multiplicative noise ``exp(N(0, noise_sd / 100))``); the
surrogate's test metrics are never shown.

Cost: the surrogate's predicted cumulative training time (seconds) at the epoch reached;
full-run equivalents are epochs / 52.

Reference pool: ``pool_size`` (default 10,000) configurations drawn once from a fixed seed,
the same for every task; the harness adds every configuration a method evaluated.
"""

from __future__ import annotations

import csv
import json
import math
from collections.abc import Mapping, Sequence
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np
from optuna.distributions import BaseDistribution, FloatDistribution, IntDistribution

from objectives.data import corrupt, require
from objectives.replay import Config, Curve, ReplayTask

EPOCHS = 52
#: Input column order of the surrogate's ``x_cont`` (after ``epoch``).
PARAMS = (
    "batch_size",
    "learning_rate",
    "momentum",
    "weight_decay",
    "num_layers",
    "max_units",
    "max_dropout",
)
SEARCH_SPACE: dict[str, BaseDistribution] = {
    "batch_size": IntDistribution(16, 512, log=True),
    "learning_rate": FloatDistribution(1e-4, 1e-1, log=True),
    "momentum": FloatDistribution(0.1, 0.99),
    "weight_decay": FloatDistribution(1e-5, 0.1),
    "num_layers": IntDistribution(1, 5),
    "max_units": IntDistribution(64, 1024, log=True),
    "max_dropout": FloatDistribution(0.0, 1.0),
}
#: The surrogate's output columns.
OUTPUTS = (
    "time",
    "val_accuracy",
    "val_cross_entropy",
    "val_balanced_accuracy",
    "test_cross_entropy",
    "test_balanced_accuracy",
)
_POOL_SEED = 20211
_DIR = "lcbench-yahpo"


class Surrogate:
    """The YAHPO LCBench ONNX model: configurations → per-epoch (time, val_accuracy)."""

    def __init__(self, root: Path) -> None:
        import onnxruntime

        model = require(root / _DIR / "model.onnx", "lcbench")
        encoding = require(root / _DIR / "encoding.json", "lcbench")
        try:
            self.codes: dict[str, int] = json.loads(encoding.read_text())["OpenML_task_id"]
        except (ValueError, KeyError, TypeError) as exc:
            raise corrupt(encoding, "lcbench", exc) from exc
        options = onnxruntime.SessionOptions()
        options.intra_op_num_threads = 1
        options.inter_op_num_threads = 1
        try:
            self._session = onnxruntime.InferenceSession(str(model), sess_options=options)
        except Exception as exc:  # onnxruntime raises its own, unexported exception types
            raise corrupt(model, "lcbench", exc) from exc

    def predict(
        self,
        task: str,
        configs: Sequence[Mapping[str, Any]],
        epochs: Sequence[int],
        outputs: Sequence[str] = ("time", "val_accuracy"),
    ) -> np.ndarray:
        """``outputs`` at the given epochs of each config, shape ``(configs, epochs, outputs)``.

        Time is cumulative seconds, accuracies are percent (names in ``OUTPUTS``).
        """
        x = np.array([[float(c[p]) for p in PARAMS] for c in configs], dtype=np.float32)
        n, m = len(configs), len(epochs)
        x_cont = np.empty((n, m, 8), dtype=np.float32)
        x_cont[:, :, 0] = np.asarray(epochs, dtype=np.float32)
        x_cont[:, :, 1:] = x[:, None, :]
        x_cat = np.full((n * m, 1), self.codes[task], dtype=np.int32)
        out = self._session.run(None, {"x_cat": x_cat, "x_cont": x_cont.reshape(-1, 8)})[0]
        columns = [OUTPUTS.index(name) for name in outputs]
        return out.reshape(n, m, -1)[:, :, columns].astype(float)


class LCBenchTask(ReplayTask):
    """One OpenML task of LCBench, evaluated by the surrogate."""

    benchmark = "lcbench"
    direction = "maximize"
    cost_unit = "surrogate seconds"
    reduce = "last"
    metric = "val_accuracy"

    def __init__(
        self,
        *,
        name: str,
        surrogate: Surrogate,
        features: dict[str, float],
        noise_sd: float = 1.0,
        pool_size: int = 10_000,
    ) -> None:
        if noise_sd < 0 or not math.isfinite(noise_sd):
            raise ValueError(f"noise_sd must be a finite number >= 0, got {noise_sd!r}.")
        self.name = name
        self.noise_sd = noise_sd
        self._surrogate = surrogate
        self._features = features
        self._pool_size = pool_size

    @property
    def search_space(self) -> dict[str, BaseDistribution]:
        return dict(SEARCH_SPACE)

    @property
    def n_steps(self) -> int:
        return EPOCHS

    @property
    def dataset_features(self) -> dict[str, float]:
        return dict(self._features)

    def curve(self, config: Mapping[str, Any], rng: np.random.Generator) -> Curve:
        return self.curves([config], rng)[0]

    def curves(self, configs: Sequence[Mapping[str, Any]], rng: np.random.Generator) -> list[Curve]:
        names = ("time", "val_accuracy", "val_balanced_accuracy", "val_cross_entropy")
        out = self._surrogate.predict(self.name, configs, range(1, EPOCHS + 1), names)
        curves = []
        for config, (time, accuracy, balanced, entropy) in zip(
            configs, out.transpose(0, 2, 1), strict=True
        ):
            noise = rng.normal(0.0, self.noise_sd, (3, EPOCHS))
            curves.append(
                Curve(
                    values=accuracy + noise[0],
                    costs=np.maximum.accumulate(np.clip(time, 0.0, None)),
                    true_score=float(accuracy[-1]),
                    config={p: config[p] for p in PARAMS},
                    extras={
                        "val_balanced_accuracy": balanced + noise[1],
                        "val_cross_entropy": entropy * np.exp(noise[2] / 100),
                    },
                )
            )
        return curves

    def true_score(self, config: Mapping[str, Any]) -> float:
        return float(self.true_scores([config])[0])

    def true_scores(self, configs: Sequence[Mapping[str, Any]]) -> np.ndarray:
        """Noise-free final validation accuracy of each configuration, shape ``(n,)``."""
        return self._surrogate.predict(self.name, configs, [EPOCHS])[:, 0, 1]

    def pool(self) -> tuple[list[Config], np.ndarray]:
        return self._pool

    @cached_property
    def _pool(self) -> tuple[list[Config], np.ndarray]:
        configs = sample_configs(self._pool_size, seed=_POOL_SEED)
        return configs, self.true_scores(configs)


def sample_configs(n: int, *, seed: int) -> list[Config]:
    """``n`` configurations drawn uniformly (log-uniformly where the space is log)."""
    rng = np.random.default_rng(seed)
    columns = {}
    for name, dist in SEARCH_SPACE.items():
        low, high = (math.log(dist.low), math.log(dist.high)) if dist.log else (dist.low, dist.high)
        u = rng.uniform(low, high, n)
        u = np.exp(u) if dist.log else u
        if isinstance(dist, IntDistribution):
            columns[name] = [int(v) for v in np.clip(np.round(u), dist.low, dist.high)]
        else:
            columns[name] = [float(v) for v in u]
    return [{name: columns[name][i] for name in SEARCH_SPACE} for i in range(n)]


def _features(root: Path) -> dict[str, dict[str, float]]:
    """Numeric OpenML meta-features per task id; empty when the optional table is absent."""
    path = root / _DIR / "task_metafeatures.csv"
    if not path.exists():
        return {}
    try:
        with path.open(newline="") as handle:
            rows = list(csv.DictReader(handle))
        skip = {"task_id", "dataset_name", "openmlid", "Name"}
        return {
            row["task_id"]: {
                k: float(v) if v not in ("", None) else math.nan
                for k, v in row.items()
                if k not in skip
            }
            for row in rows
        }
    except (ValueError, KeyError, csv.Error) as exc:
        raise corrupt(path, "lcbench", exc) from exc


def load_lcbench(
    root: Path, *, noise_sd: float = 1.0, pool_size: int = 10_000
) -> list[LCBenchTask]:
    """Load the 34 LCBench tasks. A task without meta-features gets NaN for every feature."""
    space = require(root / _DIR / "config_space.json", "lcbench")
    try:
        spec = json.loads(space.read_text())
        (task_param,) = (h for h in spec["hyperparameters"] if h["name"] == "OpenML_task_id")
        tasks = [str(t) for t in task_param["choices"]]
    except (ValueError, KeyError, TypeError) as exc:
        raise corrupt(space, "lcbench", exc) from exc
    surrogate = Surrogate(root)
    features = _features(root)
    names = sorted({k for f in features.values() for k in f})
    return [
        LCBenchTask(
            name=task,
            surrogate=surrogate,
            features={k: features.get(task, {}).get(k, math.nan) for k in names},
            noise_sd=noise_sd,
            pool_size=pool_size,
        )
        for task in tasks
    ]
