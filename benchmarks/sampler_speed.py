"""What a sampler costs per trial: the wall time of one suggestion on studies of growing size.

    python benchmarks/sampler_speed.py [--out runs/sampler_speed.md]   (or: make bench-sampler)

One suggestion = ``study.ask()`` followed by suggesting every parameter of the space. The
studies already hold 15, 100 and 500 finished trials (random configurations, values from a
smooth test function, added with ``study.add_trials``), on two spaces: a discrete space of
50,000 points (10 x 10 x 10 x 10 x 5; AutoPipeSampler enumerates it) and a 7-dimensional
continuous space (floats, two of them log-scaled, and a log-scaled int). Samplers, each on the
same studies: AutoPipeSampler without a prior, AutoPipeSampler with a small prior (fitted here
on a synthetic corpus of 3 datasets), Optuna's GPSampler and TPESampler (all ``seed=0``).

Each (space, trials, sampler) gets a fresh study and a fresh sampler. The first suggestion is
timed on its own ("first": AutoPipeSampler builds and scores its candidate set there, once per
study); then k more are timed (k = 5; 3 at 500 trials) and their median is reported, with the
ratio to GPSampler's median on the same study. Every asked trial is told its value, as in a
real study, so each timed suggestion refits on one more trial (GPSampler starts its kernel
fit from the previous one, which is free when the data do not change). Targets:
AutoPipeSampler under 1 s per suggestion at 100 trials on 2 cores, and no slower than
GPSampler. Prints the table; asserts nothing.
"""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import statistics
import time
import warnings
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import optuna
import torch
from optuna.distributions import (
    BaseDistribution,
    CategoricalDistribution,
    FloatDistribution,
    IntDistribution,
)
from optuna.samplers import BaseSampler, GPSampler, TPESampler
from optuna.trial import FrozenTrial

from optuna_autopipe.candidates import from_unit, product_size, to_unit
from optuna_autopipe.corpus import Corpus, DatasetRuns
from optuna_autopipe.ensemble import TreeParams
from optuna_autopipe.prior import Prior, fit_prior
from optuna_autopipe.sampler import AutoPipeSampler
from optuna_autopipe.space import suggest

Space = dict[str, BaseDistribution]

SPACES: dict[str, Space] = {
    "discrete 50k": {
        "lr": CategoricalDistribution([1e-4, 2e-4, 5e-4, 1e-3, 2e-3, 5e-3, 1e-2, 2e-2, 5e-2, 0.1]),
        "batch_size": IntDistribution(16, 160, step=16),
        "layers": IntDistribution(1, 10),
        "dropout": FloatDistribution(0.0, 0.45, step=0.05),
        "optimizer": CategoricalDistribution(["sgd", "adam", "adamw", "rmsprop", "lamb"]),
    },
    "continuous 7-d": {
        "lr": FloatDistribution(1e-5, 1e-1, log=True),
        "weight_decay": FloatDistribution(1e-6, 1e-2, log=True),
        "dropout": FloatDistribution(0.0, 0.5),
        "momentum": FloatDistribution(0.8, 0.999),
        "warmup": FloatDistribution(0.0, 0.2),
        "label_smoothing": FloatDistribution(0.0, 0.3),
        "width": IntDistribution(16, 1024, log=True),
    },
}
FEATURES = {"log_rows": 9.0, "n_classes": 5.0}


def unit(value: Any, dist: BaseDistribution) -> float:
    """A value's position in [0, 1] (a categorical: its index over the choices)."""
    if isinstance(dist, CategoricalDistribution):
        return dist.choices.index(value) / max(len(dist.choices) - 1, 1)
    return to_unit(value, dist)


def objective(config: Mapping[str, Any], space: Space, shift: float = 0.0) -> float:
    """A smooth test function to minimise: a bowl with ripples, its centre moved by ``shift``."""
    u = np.array([unit(config[n], d) for n, d in space.items()])
    centre = 0.3 + 0.4 * (np.arange(len(u)) % 3) / 2 + shift
    return float(np.sum((u - centre) ** 2) + 0.1 * np.sum(np.cos(6 * u)))


def random_configs(space: Space, n: int, rng: np.random.Generator) -> list[dict[str, Any]]:
    units = rng.random((n, len(space)))
    return [
        {name: from_unit(float(u[j]), space[name]) for j, name in enumerate(space)} for u in units
    ]


def finished_trials(space: Space, n: int, seed: int) -> list[FrozenTrial]:
    rng = np.random.default_rng(seed)
    return [
        optuna.trial.create_trial(params=c, distributions=space, value=objective(c, space))
        for c in random_configs(space, n, rng)
    ]


def small_prior(space: Space, seed: int = 0) -> Prior:
    """A quick prior: one 50-tree ranker on 3 synthetic datasets of 200 random runs each."""
    rng = np.random.default_rng(seed)
    datasets = []
    for i in range(3):
        configs = random_configs(space, 200, rng)
        scores = [objective(c, space, shift=0.05 * (i - 1)) + rng.normal(0, 0.05) for c in configs]
        features = {"log_rows": 8.0 + i, "n_classes": float(2 + 3 * i)}
        datasets.append(DatasetRuns(f"d{i}", "minimize", features, configs, np.array(scores)))
    return fit_prior(Corpus(dict(space), datasets), grid=[TreeParams(n_estimators=50)], n_models=1)


def one_suggestion(study: optuna.Study, space: Space) -> float:
    """Seconds for ``ask`` + every ``suggest_*``; the trial is then told its value."""
    start = time.perf_counter()
    trial = study.ask()
    config = {name: suggest(trial, name, dist) for name, dist in space.items()}
    seconds = time.perf_counter() - start
    study.tell(trial, objective(config, space))
    return seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="runs/sampler_speed.md", help="markdown file to write")
    parser.add_argument("--trials", default="15,100,500", help="finished trials per study")
    parser.add_argument("--k", type=int, default=5, help="timed suggestions (after the first)")
    parser.add_argument("--k-large", type=int, default=3, help="timed suggestions at 500+ trials")
    parser.add_argument(
        "--gp-k-large", type=int, default=None, help="GPSampler's k at 500+ trials (default k)"
    )
    parser.add_argument(
        "--torch-threads", type=int, default=None, help="torch.set_num_threads (default: torch's)"
    )
    args = parser.parse_args()
    if args.torch_threads:
        torch.set_num_threads(args.torch_threads)
    load_before = os.getloadavg()
    started = datetime.datetime.now().isoformat(timespec="seconds")
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
    sizes = [int(n) for n in args.trials.split(",")]
    begin = time.perf_counter()

    rows = []
    for space_name, space in SPACES.items():
        start = time.perf_counter()
        prior = small_prior(space)
        print(f"[{space_name}] prior fitted in {time.perf_counter() - start:.1f} s", flush=True)
        samplers: dict[str, Callable[[], BaseSampler]] = {
            "AutoPipe (no prior)": lambda space=space: AutoPipeSampler(seed=0, search_space=space),
            "AutoPipe (prior)": lambda space=space, prior=prior: AutoPipeSampler(
                prior, FEATURES, seed=0, search_space=space
            ),
            "GPSampler": lambda: GPSampler(seed=0),
            "TPESampler": lambda: TPESampler(seed=0),
        }
        for n in sizes:
            trials = finished_trials(space, n, seed=n)
            medians: dict[str, float] = {}
            for sampler_name, make in samplers.items():
                k = args.k if n < 500 else args.k_large
                if sampler_name == "GPSampler" and n >= 500 and args.gp_k_large is not None:
                    k = args.gp_k_large
                study = optuna.create_study(direction="minimize", sampler=make())
                study.add_trials(trials)
                first = one_suggestion(study, space)
                times = [one_suggestion(study, space) for _ in range(k)]
                medians[sampler_name] = statistics.median(times)
                rows.append([space_name, n, sampler_name, first, medians[sampler_name], k])
                print(
                    f"[{space_name}] {n:>4} trials  {sampler_name:<20} first {first:7.3f} s  "
                    f"median {medians[sampler_name]:7.3f} s  (k={k})",
                    flush=True,
                )
            for row in rows[-len(samplers) :]:
                row.append(row[4] / medians["GPSampler"])

    total = time.perf_counter() - begin
    grid = {name: product_size(space, 100_000) for name, space in SPACES.items()}
    lines = [
        "# Sampler speed: wall time of one suggestion (`study.ask()` + every `suggest_*`)",
        "",
        f"- date: {started} (start)",
        f"- machine: {platform.platform()}, {platform.processor() or platform.machine()}, "
        f"{os.cpu_count()} CPUs (torch threads: {torch.get_num_threads()})",
        "- load average (1 min) at start / end: "
        f"{load_before[0]:.1f} / {os.getloadavg()[0]:.1f} (other processes share the CPUs)",
        f"- python {platform.python_version()}, optuna {optuna.__version__}, "
        f"torch {torch.__version__}",
        f"- spaces: discrete = {grid['discrete 50k']:,} points (enumerated by AutoPipeSampler); "
        "continuous = 7 parameters (2 log floats, 4 floats, 1 log int)",
        "- first: the study's first suggestion (AutoPipeSampler builds its candidates there); "
        "median: over the k suggestions after it; x GP: median / GPSampler's median",
        "",
        "| space | trials | sampler | first (s) | median (s) | k | x GP |",
        "|---|---:|---|---:|---:|---:|---:|",
    ]
    for space_name, n, sampler_name, first, median, k, ratio in rows:
        lines.append(
            f"| {space_name} | {n} | {sampler_name} | {first:.3f} | {median:.3f} | {k} "
            f"| {ratio:.2f} |"
        )
    lines += ["", f"Total runtime: {total:.0f} s ({total / 60:.1f} min)"]
    text = "\n".join(lines) + "\n"
    print()
    print(text, end="")
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(text)
    print(f"written to {out}")


if __name__ == "__main__":
    main()
