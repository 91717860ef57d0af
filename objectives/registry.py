"""Benchmarks by name, and how their datasets are held out."""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from objectives.data import data_root
from objectives.lcbench import load_lcbench
from objectives.nmt import load_nmt
from objectives.replay import ReplayTask

Protocol = Literal["lodo", "grouped"]


@dataclass(frozen=True)
class Benchmark:
    """A recorded benchmark: its datasets and, for grouped hold-out, their families.

    ``groups`` maps a dataset to its family; datasets of one family are held out together
    under the ``grouped`` protocol (NMT's corpus pairs agree almost perfectly, so plain
    leave-one-out leaks the held-out answer through the partner).
    """

    name: str
    tasks: Sequence[ReplayTask]
    groups: dict[str, str]

    def task(self, name: str) -> ReplayTask:
        for task in self.tasks:
            if task.name == name:
                return task
        raise ValueError(
            f"Dataset {name!r} is not in benchmark {self.name!r}; "
            f"choose from {[t.name for t in self.tasks]}."
        )

    def offline(self, target: str, protocol: Protocol) -> list[ReplayTask]:
        """The datasets a method may learn from when ``target`` is held out."""
        if protocol not in ("lodo", "grouped"):
            raise ValueError(f"Unknown protocol {protocol!r}; choose 'lodo' or 'grouped'.")
        held = {target}
        if protocol == "grouped":
            held |= {d for d, g in self.groups.items() if g == self.groups[target]}
        return [t for t in self.tasks if t.name not in held]


def _nmt(root: Any, **_: Any) -> Benchmark:
    tasks = load_nmt(root)
    return Benchmark("nmt", tasks, {t.name: t.group for t in tasks})


def _lcbench(root: Any, *, noise_sd: float = 1.0, pool_size: int = 10_000, **_: Any) -> Benchmark:
    tasks = load_lcbench(root, noise_sd=noise_sd, pool_size=pool_size)
    return Benchmark("lcbench", tasks, {t.name: t.name for t in tasks})


BENCHMARKS: dict[str, Callable[..., Benchmark]] = {"nmt": _nmt, "lcbench": _lcbench}


def load_benchmark(
    name: str, *, data_dir: str | os.PathLike[str] | None = None, **options: Any
) -> Benchmark:
    """Load a benchmark by name (``nmt`` or ``lcbench``); ``options`` go to its loader."""
    if name not in BENCHMARKS:
        raise ValueError(f"Unknown benchmark {name!r}; choose one of {sorted(BENCHMARKS)}.")
    return BENCHMARKS[name](data_root(data_dir), **options)
