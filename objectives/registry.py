"""Benchmarks by name, and how their datasets are held out."""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, get_args

from objectives.data import DEFAULT_ROOT, ENV_VAR, BenchmarkDataError, data_root
from objectives.lcbench import load_lcbench
from objectives.nmt import load_nmt
from objectives.replay import ReplayTask, stable_seed

Protocol = Literal["lodo", "grouped", "single-source", "few-source"]
PROTOCOLS: tuple[str, ...] = get_args(Protocol)


@dataclass(frozen=True)
class Benchmark:
    """A recorded benchmark: its datasets and, for grouped hold-out, their families.

    ``groups`` maps a dataset to its family; datasets of one family are held out together
    under the ``grouped`` protocol (NMT's corpus pairs agree almost perfectly, so plain
    leave-one-out leaks the held-out answer through the partner), and the ``single-source``
    and ``few-source`` protocols draw their sources from the other families only.
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

    def offline(
        self, target: str, protocol: Protocol, *, replicate: int = 0, sources: int = 2
    ) -> list[ReplayTask]:
        """The datasets a method may learn from when ``target`` is held out.

        - ``lodo``: every other dataset; ``grouped``: every dataset outside ``target``'s group.
        - ``single-source``: one dataset of another group, the one at position
          ``replicate mod n`` of ``candidate_sources(target)`` (n candidates).
        - ``few-source``: ``sources`` (K) datasets of other groups, those at positions
          ``replicate·K, replicate·K + 1, ...`` (mod n) of ``candidate_sources(target)``;
          K must be below n so that they are distinct.

        The harness passes the seed index as ``replicate``, so each seed of a target learns
        from a different, fixed choice of sources.
        """
        if protocol not in PROTOCOLS:
            raise ValueError(f"Unknown protocol {protocol!r}; choose from {list(PROTOCOLS)}.")
        self.task(target)  # an unknown target is named
        if protocol in ("lodo", "grouped"):
            held = {target}
            if protocol == "grouped":
                held |= {d for d, g in self.groups.items() if g == self.groups[target]}
            return [t for t in self.tasks if t.name not in held]
        candidates = self.candidate_sources(target)
        if protocol == "few-source" and not 1 <= sources < len(candidates):
            raise ValueError(
                f"few-source needs 1 <= K < {len(candidates)} (the number of datasets outside "
                f"the group of {target!r}); got K = {sources}."
            )
        if not candidates:
            raise ValueError(f"{target!r} has no dataset outside its group to learn from.")
        count = 1 if protocol == "single-source" else sources
        start = replicate * count
        return [self.task(candidates[(start + i) % len(candidates)]) for i in range(count)]

    def candidate_sources(self, target: str) -> list[str]:
        """The datasets of the groups other than ``target``'s, in round-robin order.

        Groups are ordered by ``stable_seed(benchmark, target, group)`` and each group's
        datasets by ``stable_seed(benchmark, target, dataset)``; the list takes the first
        dataset of every group in that order, then the second of every group, and so on.
        """
        own = self.groups[self.task(target).name]
        members: dict[str, list[str]] = {}
        for task in self.tasks:
            if self.groups[task.name] != own:
                members.setdefault(self.groups[task.name], []).append(task.name)
        order = sorted(members, key=lambda g: (stable_seed(self.name, target, g), g))
        for group in order:
            members[group].sort(key=lambda d: (stable_seed(self.name, target, d), d))
        depth = max((len(m) for m in members.values()), default=0)
        return [members[g][i] for i in range(depth) for g in order if i < len(members[g])]


def _nmt(root: Any, **_: Any) -> Benchmark:
    tasks = load_nmt(root)
    return Benchmark("nmt", tasks, {t.name: t.group for t in tasks})


def _lcbench(root: Any, *, noise_sd: float = 1.0, pool_size: int = 10_000, **_: Any) -> Benchmark:
    tasks = load_lcbench(root, noise_sd=noise_sd, pool_size=pool_size)
    return Benchmark("lcbench", tasks, {t.name: t.name for t in tasks})


def _post_training(root: Path, **_: Any) -> Benchmark:
    """The corpus under ``root``, else the bundled one; a data folder that was chosen
    (``--data-dir``, ``$AUTOPIPE_DATA``) must exist.

    Raises:
        BenchmarkDataError: the chosen data folder does not exist.
        FileNotFoundError: no corpus under ``root`` and none bundled.
    """
    from objectives.post_training.bundle import BUNDLED, JOURNAL_XZ, bundled_journal
    from objectives.post_training.replay import load_post_training

    if root != DEFAULT_ROOT and not root.is_dir():
        raise BenchmarkDataError(
            f"Benchmark data folder {root} not found. Point --data-dir or ${ENV_VAR} at the "
            f"folder holding {POST_TRAINING_JOURNAL}, or set neither to replay the corpus "
            "bundled with the package."
        )
    journal = root / POST_TRAINING_JOURNAL
    if not journal.exists() and (BUNDLED / JOURNAL_XZ).is_file():
        print(
            f"post-training: {journal} not found; replaying the corpus bundled with the package "
            f"({BUNDLED / 'generation.json'} says how many runs).",
            file=sys.stderr,
        )
        journal = bundled_journal()
    tasks = load_post_training(journal)
    return Benchmark("post-training", tasks, {t.name: post_training_group(t.name) for t in tasks})


#: Where ``post-training`` reads its corpus under the data directory (else: the bundled
#: corpus, ``objectives.post_training.bundle``).
POST_TRAINING_JOURNAL = "post-training/runs.journal"


def post_training_group(name: str) -> str:
    """A corpus v2 dataset's family: its task(s) without the teacher (``compare-swap`` and
    ``compare`` are one family), held out together under ``grouped``."""
    return name.removesuffix("-swap")


BENCHMARKS: dict[str, Callable[..., Benchmark]] = {
    "nmt": _nmt,
    "lcbench": _lcbench,
    "post-training": _post_training,
}


def load_benchmark(
    name: str, *, data_dir: str | os.PathLike[str] | None = None, **options: Any
) -> Benchmark:
    """Load a benchmark by name (``nmt``, ``lcbench``, ``post-training``); ``options`` go to
    its loader."""
    if name not in BENCHMARKS:
        raise ValueError(f"Unknown benchmark {name!r}; choose one of {sorted(BENCHMARKS)}.")
    return BENCHMARKS[name](data_root(data_dir), **options)
