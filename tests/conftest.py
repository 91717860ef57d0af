"""Shared fixtures: the recorded benchmarks, loaded once per test session, and a tiny corpus
v2 generated for real."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from objectives import data_root, load_benchmark
from objectives.post_training.mini_corpus import V2, MiniCorpus, MiniScale, generate
from objectives.post_training.search_space import tiny_space
from objectives.registry import Benchmark
from optuna_autopipe.corpus import DatasetRuns
from optuna_autopipe.dynamics import TrainingDynamics


def _require_data() -> None:
    if not (data_root() / "nmt").exists():
        pytest.fail(
            f"Benchmark data not found at {data_root()}; set AUTOPIPE_DATA to the folder "
            "holding nmt/ and lcbench-yahpo/."
        )


@pytest.fixture(scope="session")
def nmt() -> Benchmark:
    _require_data()
    return load_benchmark("nmt")


@pytest.fixture(scope="session")
def lcbench() -> Benchmark:
    _require_data()
    return load_benchmark("lcbench", pool_size=2000)


#: The datasets of ``tiny_v2``.
TINY_V2_DATASETS = ("compare-swap", "yesno")


@pytest.fixture(scope="session")
def tiny_v2(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[MiniCorpus, Path]]:
    """Corpus v2's definition at a tiny scale (randomly initialised models, nothing to
    pre-train) and a data root whose ``post-training/`` holds its generation: the datasets
    ``TINY_V2_DATASETS`` x 4 real runs (journal and ``corpus.jsonl``)."""
    patch = pytest.MonkeyPatch()
    base = tmp_path_factory.mktemp("tiny-v2")
    patch.setenv("AUTOPIPE_CACHE", str(base / "cache"))
    patch.setenv("HF_HUB_OFFLINE", "1")
    patch.setenv("HF_DATASETS_OFFLINE", "1")
    scale = MiniScale(
        n_sft=32,
        n_rl=16,
        n_eval=5,
        rl_max_steps=4,
        max_completion_length=8,
        rl_fidelities=(0.0, 0.25, 0.5),
    )
    corpus = dataclasses.replace(V2, scale=scale, space=tiny_space(rl_lr=(1e-4, 3e-4, 1e-3)))
    data = base / "data"
    generate(data / "post-training", corpus=corpus, runs=4, workers=1, datasets=TINY_V2_DATASETS)
    yield corpus, data
    patch.undo()


def toy_losses(quality: float, rng: np.random.Generator, total: int = 20) -> np.ndarray:
    """A toy loss curve, shape ``(total,)``: falls faster for a higher ``quality``."""
    return 3 - 0.04 * (1 + quality) * np.arange(1, total + 1) + rng.normal(0, 0.01, total)


def runs_with_dynamics(name: str, seed: int, n: int = 40) -> DatasetRuns:
    """Past runs of (x, w) in [0, 1]² whose loss curves show their quality q; final score
    q + x (maximised), one dataset feature ``size``."""
    rng = np.random.default_rng(seed)
    x, w, q = rng.random(n), rng.random(n), rng.normal(0, 1, n)
    steps = np.arange(1, 21)
    dynamics = [
        TrainingDynamics(
            total_steps=20, metrics={"loss": np.c_[steps, toy_losses(v, rng)].tolist()}
        )
        for v in q
    ]
    configs = [{"x": float(a), "w": float(b)} for a, b in zip(x, w, strict=True)]
    return DatasetRuns(name, "maximize", {"size": float(seed)}, configs, q + x, dynamics=dynamics)
