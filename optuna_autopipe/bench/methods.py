"""Configuration-selection methods the benchmark compares, by name.

A method takes a ``Context`` (the held-out task, the offline tasks it may learn from, the
seed and the budget) and runs one Optuna study on the task; the harness reads the result
from the study. Adding a method is one ``@register("name")`` function.

Budgets: full-fidelity methods get ``budget`` full evaluations; ``bohb`` gets the same total
cost (``budget`` full-run equivalents) spent through Hyperband; ``random1`` and ``global``
evaluate one configuration; the early-stop variants (``random-es``, ``tpe-es``, ``smac-es``) get
``budget`` evaluations stopped at 50% plus one full verification run.
"""

from __future__ import annotations

import importlib
import importlib.util
import json
from collections.abc import Callable
from dataclasses import dataclass
from functools import cache
from typing import TYPE_CHECKING

import numpy as np
import optuna

from objectives.replay import Config, Evaluation, ReplayTask
from optuna_autopipe.bench.peer_env import PEERS, importable

if TYPE_CHECKING:
    from optuna_autopipe.regressor import EarlyStopRegressor


@dataclass
class Context:
    """What a method may use on one held-out dataset.

    ``seed`` seeds the method's sampler and the observation noise. The harness derives it
    from (dataset, seed index), so that seed ``k`` does not draw the same random
    configurations on every dataset (which would correlate the datasets' results).
    """

    task: ReplayTask
    offline: list[ReplayTask]
    seed: int
    budget: int
    #: Filled by the objective as trials finish: trial number -> what the run showed.
    evaluations: dict[int, Evaluation]
    #: The study's name; Hyperband assigns brackets by hashing it, so it must be fixed.
    study_name: str
    #: Distortion of the ranking prior for methods that use it (``prior_noise.PRIOR_NOISE``).
    prior_noise: str = "none"

    def objective(
        self,
        *,
        cost_budget: bool = False,
        fraction: float = 1.0,
        regressor: EarlyStopRegressor | None = None,
    ) -> Callable[[optuna.trial.Trial], float]:
        """The task's replay objective, recording each evaluation in ``self.evaluations``.

        ``fraction`` < 1 stops every run there (``AutoPipeEarlyStop``; ``regressor`` turns
        the dynamics into a proxy on the trial).
        """

        def record(trial: optuna.trial.Trial, evaluation: Evaluation) -> None:
            self.evaluations[trial.number] = evaluation

        return self.task.objective(
            seed=self.seed,
            budget=float(self.budget) if cost_budget else None,
            on_evaluation=record,
            fraction=fraction,
            regressor=regressor,
        )

    def study(
        self,
        sampler: optuna.samplers.BaseSampler,
        *,
        pruner: optuna.pruners.BasePruner | None = None,
    ) -> optuna.Study:
        """A fresh in-memory study in the task's direction; no pruning unless ``pruner``."""
        return optuna.create_study(
            study_name=self.study_name,
            direction=self.task.direction,
            sampler=sampler,
            pruner=pruner or optuna.pruners.NopPruner(),
        )


Method = Callable[[Context], optuna.Study]
METHODS: dict[str, Method] = {}
#: The revision of each method's behaviour (1 unless registered otherwise). A method's
#: revision goes up when a change of its defaults makes its stored studies describe another
#: method; the harness refuses to read studies of an older revision as current.
REVISIONS: dict[str, int] = {}
#: Method names that went away, and where their behaviour lives now.
RENAMED = {
    "autopipe-lower-half": "'autopipe' (its default since revision 2, 2026-11-30)",
}
#: Methods that learn nothing from other datasets: their studies are the same under every
#: protocol and prior noise, so the harness runs them once (under the ``grouped`` name) and
#: every setting reads those studies.
PROTOCOL_FREE = frozenset(
    {
        *("random", "tpe", "gp", "bohb", "smac", "random1", "random-cut", "tpe-cut"),
        *("mobster", "hyper-tune", "dehb", "llm-desc"),
    }
)


#: Outside settings a method's results depend on (an LLM's endpoint and model), read when a
#: study is stored and compared when it is read back (``method_settings``).
SETTINGS: dict[str, Callable[[], dict[str, str]]] = {}


def register(
    name: str, *, revision: int = 1, settings: Callable[[], dict[str, str]] | None = None
) -> Callable[[Method], Method]:
    """Register a method under ``name`` (used by ``autopipe bench --methods``) at
    ``revision`` (see ``REVISIONS``), with the outside ``settings`` its results depend on."""

    def add(method: Method) -> Method:
        METHODS[name] = method
        REVISIONS[name] = revision
        if settings is not None:
            SETTINGS[name] = settings
        return method

    return add


def method_settings(name: str) -> dict[str, str]:
    """The outside settings method ``name`` would run with now (empty for most methods)."""
    if name in PEERS:
        return {}
    get_method(name)
    return SETTINGS[name]() if name in SETTINGS else {}


def method_revision(name: str) -> int:
    """The current revision of method ``name`` (``REVISIONS``; a peer's from
    ``peer_env.PEERS``, known without its package)."""
    if name in PEERS:
        return PEERS[name].revision
    get_method(name)
    return REVISIONS.get(name, 1)


#: Methods registered by their own modules, imported on first use (optional dependencies).
_LAZY = {
    **{name: ("optuna_autopipe.bench.smac_method", "smac") for name in ("smac", "smac-es")},
    "offline": ("optuna_autopipe.bench.offline_method", None),
    **{name: ("optuna_autopipe.bench.llm_method", None) for name in ("llm-desc", "llm-history")},
    **{
        name: ("optuna_autopipe.bench.early_stop_method", None)
        for name in ("random-es", "tpe-es", "random-cut", "tpe-cut")
    },
    **{
        name: ("optuna_autopipe.bench.autopipe_method", None)
        for name in (
            "autopipe",
            "autopipe-paper",
            "autopipe-fixed-lambda",
            "autopipe-1v",
            "autopipe-contrast",
            "autopipe-probe-anywhere",
            "autopipe-proxy",
            "autopipe-50",
            "autopipe-75",
            "autopipe-full",
            "no-residual",
            "no-bo",
            "no-offline",
            "autopipe-belief-rec",
        )
    },
}


def method_names() -> list[str]:
    """Every method name ``get_method`` knows, sorted: those registered, those registered on
    first use (``_LAZY``) and the peers (``peer_env.PEERS``)."""
    return sorted({*METHODS, *_LAZY, *PEERS})


def get_method(name: str) -> Method:
    """The method registered as ``name``; a clear error lists the known names otherwise.

    Raises:
        ValueError: unknown, renamed, or its optional package is missing (for a peer of
            ``peer_env.PEERS``: run it through the harness, which uses the peers'
            environment).
    """
    if name in PEERS and name not in METHODS:
        if not importable(name):
            raise ValueError(
                f"Method {name!r} needs {PEERS[name].requirement}, which is not in this "
                "environment (its pins clash with ours); `autopipe bench` runs it in the "
                "peers' environment that `make peers` builds."
            )
        importlib.import_module(PEERS[name].module)
    if name in _LAZY and name not in METHODS:
        module, requirement = _LAZY[name]
        if requirement and importlib.util.find_spec(requirement) is None:
            raise ValueError(
                f"Method {name!r} needs the {requirement} package: "
                f"pip install 'optuna-autopipe[{requirement}]'."
            )
        importlib.import_module(module)
    if name in RENAMED:
        raise ValueError(f"Method {name!r} is now {RENAMED[name]}.")
    if name not in METHODS:
        raise ValueError(f"Unknown method {name!r}; choose from {method_names()}.")
    return METHODS[name]


def sequential(make_sampler: Callable[[Context], optuna.samplers.BaseSampler]) -> Method:
    """A method that spends ``budget`` full evaluations with the given sampler."""

    def run(ctx: Context) -> optuna.Study:
        study = ctx.study(make_sampler(ctx))
        study.optimize(ctx.objective(), n_trials=ctx.budget)
        return study

    return run


register("random")(sequential(lambda ctx: optuna.samplers.RandomSampler(seed=ctx.seed)))
# Optuna 5 defaults: multivariate TPE with constant liar, 10 random start-up trials.
register("tpe")(sequential(lambda ctx: optuna.samplers.TPESampler(seed=ctx.seed)))
# Optuna 5 defaults: 10 random start-up trials, then a GP with log-EI.
register("gp")(sequential(lambda ctx: optuna.samplers.GPSampler(seed=ctx.seed)))


@register("bohb")
def bohb(ctx: Context) -> optuna.Study:
    """TPE + Hyperband over the learning curve (25% to 100% of training, η=3) at equal cost.

    Trials run until ``budget`` full-run equivalents are spent; the run that crosses the
    budget is cut where the budget ends.
    """
    pruner = optuna.pruners.HyperbandPruner(
        min_resource=max(1, round(0.25 * ctx.task.n_steps)),
        max_resource=ctx.task.n_steps,
        reduction_factor=3,
    )
    study = ctx.study(optuna.samplers.TPESampler(seed=ctx.seed), pruner=pruner)

    def stop_when_spent(study: optuna.Study, trial: optuna.trial.FrozenTrial) -> None:
        if trial.user_attrs.get("budget_exhausted"):
            study.stop()

    study.optimize(ctx.objective(cost_budget=True), callbacks=[stop_when_spent])
    return study


@register("random1")
def random1(ctx: Context) -> optuna.Study:
    """One random configuration, run once."""
    study = ctx.study(optuna.samplers.RandomSampler(seed=ctx.seed))
    study.optimize(ctx.objective(), n_trials=1)
    return study


def global_config(ctx: Context) -> tuple[Config, float]:
    """The configuration with the best mean standardised rank over the offline datasets,
    mapped onto the held-out task, and that mean rank.

    Candidates are every configuration of the offline datasets' reference pools. On each
    offline dataset a candidate takes the rank of its (nearest recorded) score within that
    dataset's pool, scaled to [0, 1] with 0 the best; the lowest mean wins.
    """
    candidates: dict[str, Config] = {}
    for task in ctx.offline:
        candidates.update(zip(_pool_keys(task), task.pool()[0], strict=True))
    keys = list(candidates)
    mean_rank = np.mean(
        [[scaled_rank(task, key, candidates[key]) for key in keys] for task in ctx.offline],
        axis=0,
    )
    best = candidates[keys[int(np.argmin(mean_rank))]]
    return ctx.task.resolve(best), float(mean_rank.min())


@register("global")
def global_best(ctx: Context) -> optuna.Study:
    """``global_config``, run once on the held-out dataset (mapped to its nearest recorded
    neighbour there)."""
    config, mean_rank = global_config(ctx)
    study = ctx.study(optuna.samplers.RandomSampler(seed=ctx.seed))
    study.enqueue_trial(config, user_attrs={"global_mean_rank": mean_rank})
    study.optimize(ctx.objective(), n_trials=1)
    return study


def config_key(config: Config) -> str:
    return json.dumps(config, sort_keys=True)


@cache
def _pool_keys(task: ReplayTask) -> list[str]:
    return [config_key(c) for c in task.pool()[0]]


@cache
def _pool_ranks(task: ReplayTask) -> tuple[dict[str, float], np.ndarray]:
    """Scaled rank of each pool configuration by key, and the sorted signed pool scores."""
    signed = np.sort(task.pool()[1] * task.sign())
    ranks = (len(signed) - np.searchsorted(signed, task.pool()[1] * task.sign(), "right")) / len(
        signed
    )
    return dict(zip(_pool_keys(task), ranks.tolist(), strict=True)), signed


def scaled_rank(task: ReplayTask, key: str, config: Config) -> float:
    """Fraction of ``task``'s pool strictly better than ``config`` (after mapping)."""
    table, signed = _pool_ranks(task)
    if key in table:
        return table[key]
    resolved = task.resolve(config)
    if config_key(resolved) in table:
        return table[config_key(resolved)]
    score = task.true_score(resolved) * task.sign()
    return float(len(signed) - np.searchsorted(signed, score, "right")) / len(signed)
