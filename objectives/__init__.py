"""Things a study optimises: replays of recorded HPO benchmarks (and, later, the live pipeline)."""

from objectives.data import BenchmarkDataError, data_root
from objectives.registry import BENCHMARKS, load_benchmark
from objectives.replay import Curve, Evaluation, ReplayTask

__all__ = [
    "BENCHMARKS",
    "BenchmarkDataError",
    "Curve",
    "Evaluation",
    "ReplayTask",
    "data_root",
    "load_benchmark",
]
