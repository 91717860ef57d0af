"""Speed and memory of the offline prior: fit on each benchmark, score 50,000 candidates.

    python benchmarks/prior_speed.py      (or: make bench-prior)

Targets (issue 3): each fit under 2 minutes on 2 cores, scoring 50,000 candidates under
1 s, peak memory under 4 GB. Prints the measured figures; asserts nothing.
"""

import platform
import resource
import time

import numpy as np

from objectives import load_benchmark
from objectives.lcbench import sample_configs
from optuna_autopipe.corpus import Corpus
from optuna_autopipe.prior import fit_prior


def peak_gb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20


rows = []
priors = {}
for name in ("nmt", "lcbench"):
    benchmark = load_benchmark(name, pool_size=2000)
    corpus = Corpus.from_tasks(benchmark.tasks, groups=benchmark.groups)
    runs = sum(len(d.configs) for d in corpus.datasets)
    start = time.perf_counter()
    priors[name] = fit_prior(corpus)
    rows.append(
        (
            f"fit prior, {name} ({len(corpus.datasets)} datasets, {runs} runs)",
            time.perf_counter() - start,
        )
    )

task = load_benchmark("lcbench").task("3945")
candidates = sample_configs(50_000, seed=1)
start = time.perf_counter()
scores = priors["lcbench"].score(candidates, task.dataset_features)
rows.append(("score 50,000 LCBench candidates", time.perf_counter() - start))
assert np.isfinite(scores).all()

print(f"machine: {platform.machine()}, {platform.python_version()}")
for label, seconds in rows:
    print(f"{label:<55} {seconds:8.2f} s")
print(f"{'peak memory':<55} {peak_gb():8.2f} GB")
