"""Shared fixtures: the recorded benchmarks, loaded once per test session."""

from __future__ import annotations

import pytest

from objectives import data_root, load_benchmark
from objectives.registry import Benchmark


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
