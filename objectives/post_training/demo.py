"""The live demo: AutoPipe vs TPE at equal pipeline time on held-out mini datasets.

1. The prior is fitted on a mini corpus (default: the bundled corpus v2, ``bundled/``), its
   early-stop regressor at ``FRACTION`` of SFT, or loaded from ``out/prior`` when already
   fitted on the same corpus file.
2. One job per seed ``k``: held-out dataset ``HELD_OUT[k % 3]`` (none of them is in the
   corpus). Jobs run ``workers`` at a time, each in its own process, into one journal file.
   Per job, two studies:

   - AutoPipe (the default, calibrated sampler, as ``autopipe`` in the benchmark):
     ``budget`` trials stopped at ``FRACTION`` of SFT (PRUNED, dynamics in user attrs), then
     ``promote_best`` promotes the best early stops to full runs (SFT resumes from the early
     stop's checkpoint, then GRPO and lm-eval); the best verified run is AutoPipe's result.
   - TPE (Optuna's default sampler): full runs until it has spent as much pipeline time as
     that AutoPipe study (at least one run).

3. It prints one line per finished study, the comparison table, writes the regret against
   pipeline time to ``out/regret_vs_pipeline_time.png`` and prints the optuna-dashboard
   command. Regret on a dataset is measured from the best full-run score any study of the
   demo found there (the demo does not know the dataset's true optimum).

Pipeline time is the sum of the trials' ``cost`` attrs: wall seconds of SFT, GRPO and the
evaluation, as the corpus records them.
"""

from __future__ import annotations

import hashlib
import multiprocessing
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import optuna
from optuna.trial import TrialState

from objectives.post_training import bundle
from objectives.post_training.mini_corpus import (
    V2,
    MiniCorpus,
    MiniDataset,
    dataset_files,
    objective,
    profile,
)
from objectives.post_training.objective import FAILURE_ATTR
from objectives.post_training.search_space import SFT_PARAMETERS
from objectives.post_training.tasks import Teacher
from optuna_autopipe.corpus import Corpus
from optuna_autopipe.early_stop import PROMOTED_FROM_ATTR, verify
from optuna_autopipe.prior import Prior, fit_prior
from optuna_autopipe.promotion import promote_best
from optuna_autopipe.sampler import AutoPipeSampler

#: Early-stop point of the demo's AutoPipe (the benchmark's ``autopipe`` default).
FRACTION = 0.25
#: Held-out datasets (not in corpus v2): a harder relative of a corpus task, a new mixture,
#: and a new mixture under an imperfect teacher.
HELD_OUT = (
    MiniDataset(name="compare-4", tasks=("compare",), difficulty=1),
    MiniDataset(name="retrieval+yesno", tasks=("retrieval", "yesno")),
    MiniDataset(
        name="compare+yesno-swap",
        tasks=("compare", "yesno"),
        teacher=Teacher(swaps={"A": "B", "yes": "no"}, error=0.7),
    ),
)


@dataclass(frozen=True)
class Outcome:
    """One study's result: trials run, full runs among them, pipeline seconds spent, best
    full-run score (AutoPipe: its best verified run) and the anytime trajectory, a list of
    (cumulative pipeline seconds, best full-run score so far or ``None``)."""

    method: str
    dataset: str
    seed: int
    trials: int
    full_runs: int
    seconds: float
    score: float
    trajectory: list[tuple[float, float | None]]


def _spent(study: optuna.Study) -> float:
    return sum(float(t.user_attrs.get("cost", 0.0)) for t in study.trials)


def _outcome(method: str, dataset: str, seed: int, study: optuna.Study) -> Outcome:
    spent, best, trajectory = 0.0, None, []
    for trial in sorted(study.trials, key=lambda t: t.datetime_complete or t.datetime_start):
        spent += float(trial.user_attrs.get("cost", 0.0))
        if trial.state == TrialState.COMPLETE and trial.value is not None:
            best = trial.value if best is None else max(best, trial.value)
        trajectory.append((spent, best))
    full = [t for t in study.trials if t.state == TrialState.COMPLETE]
    return Outcome(
        method=method,
        dataset=dataset,
        seed=seed,
        trials=len(study.trials),
        full_runs=len(full),
        seconds=spent,
        score=np.nan if best is None else best,
        trajectory=trajectory,
    )


def load_prior(out: Path, corpus_path: Path | None = None) -> Prior:
    """The prior fitted on ``corpus_path`` (default: the bundled corpus; regressor at
    ``FRACTION``), cached in ``out/prior`` and refitted when the corpus file changes."""
    corpus_path = bundle.BUNDLED / "corpus.jsonl" if corpus_path is None else corpus_path
    cached = out / "prior"
    digest = hashlib.sha256(Path(corpus_path).read_bytes()).hexdigest()
    stamp = cached / "corpus.sha256"
    if (cached / "prior.json").exists() and stamp.exists() and stamp.read_text() == digest:
        return Prior.load(cached)
    prior = fit_prior(Corpus.load(corpus_path), fraction=FRACTION)
    prior.save(cached)
    stamp.write_text(digest)
    return prior


def _storage(out: Path) -> optuna.storages.JournalStorage:
    from optuna.storages.journal import JournalFileBackend

    return optuna.storages.JournalStorage(JournalFileBackend(str(out / "demo.journal")))


def _job(
    out: Path, corpus: MiniCorpus, dataset: MiniDataset, seed: int, budget: int
) -> list[Outcome]:
    """AutoPipe then TPE on one held-out dataset (resumes studies a stopped demo left)."""
    import torch

    torch.set_num_threads(1)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    prior = Prior.load(out / "prior")
    files = dataset_files(out, dataset, corpus.scale)
    features = profile(dataset.name, files)
    work = out / "work" / f"{dataset.name}-seed{seed}"
    early = objective(
        files,
        corpus.scale,
        output_dir=work,
        space=corpus.space,
        early_stop=FRACTION,
        regressor=prior.regressor,
        dataset=features,
        seed=seed,
    )
    full = objective(
        files, corpus.scale, output_dir=work, space=corpus.space, early_stop=None, seed=seed
    )
    storage = _storage(out)

    def study(method: str, sampler: optuna.samplers.BaseSampler) -> optuna.Study:
        return optuna.create_study(
            study_name=f"{method}-{dataset.name}-seed{seed}",
            storage=storage,
            direction="maximize",
            sampler=sampler,
            pruner=optuna.pruners.NopPruner(),
            load_if_exists=True,
        )

    started = time.time()
    sampler = AutoPipeSampler(
        prior,
        features,
        budget=budget,
        seed=seed,
        search_space=corpus.space,
        early_stop_params=SFT_PARAMETERS,
    )
    autopipe = study("autopipe", sampler)
    features.to_study(autopipe)
    # Trials a stopped demo left RUNNING are lost runs: fail them and run the rest again.
    for trial in autopipe.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        autopipe.tell(trial.number, state=TrialState.FAIL)
    spent = [
        t
        for t in autopipe.trials
        if PROMOTED_FROM_ATTR not in t.user_attrs
        and (t.state != TrialState.FAIL or FAILURE_ATTR in t.user_attrs)
    ]
    remaining = budget - len(spent)
    if remaining > 0:
        autopipe.optimize(early, n_trials=remaining)
    promoted = any(PROMOTED_FROM_ATTR in t.user_attrs for t in autopipe.trials)
    if not promoted and not promote_best(autopipe, sampler):  # nothing stopped early
        verify(autopipe, sampler.recommend(autopipe))
    waiting = autopipe.get_trials(deepcopy=False, states=(TrialState.WAITING,))
    if waiting:
        autopipe.optimize(early, n_trials=len(waiting))
    mine = _outcome("autopipe", dataset.name, seed, autopipe)
    _progress(mine, time.time() - started)
    started = time.time()
    tpe = study("tpe", optuna.samplers.TPESampler(seed=seed))
    for trial in tpe.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        tpe.tell(trial.number, state=TrialState.FAIL)
    while not tpe.trials or _spent(tpe) < mine.seconds:
        tpe.optimize(full, n_trials=1)
    theirs = _outcome("tpe", dataset.name, seed, tpe)
    _progress(theirs, time.time() - started)
    return [mine, theirs]


def _progress(outcome: Outcome, wall: float) -> None:
    print(
        f"  {outcome.method:8} {outcome.dataset:20} seed {outcome.seed}: {outcome.trials:2d} "
        f"trials ({outcome.full_runs} full), {outcome.seconds:4.0f} pipeline s, best full run "
        f"{outcome.score:.3f}  [{wall:.0f} s wall]",
        flush=True,
    )


def _worker(args: tuple[str, MiniCorpus, MiniDataset, int, int]) -> list[Outcome]:
    out, corpus, dataset, seed, budget = args
    return _job(Path(out), corpus, dataset, seed, budget)


def run_demo(
    out: str | Path = "runs/demo",
    *,
    budget: int = 8,
    seeds: Sequence[int] = (0, 1, 2),
    workers: int = 2,
    corpus: MiniCorpus = V2,
    corpus_path: str | Path | None = None,
    held_out: Sequence[MiniDataset] = HELD_OUT,
) -> list[Outcome]:
    """Run the demo into ``out`` (journal ``demo.journal``, plot, prior), print the
    comparison and return every study's ``Outcome``.

    ``corpus`` gives the scale and search space the corpus at ``corpus_path`` (default: the
    bundled one) was generated with; seed ``k`` runs on ``held_out[k % len(held_out)]``;
    ``workers`` jobs run at once (one process each, one torch thread each).

    Raises ``ValueError`` for a held-out dataset whose name is one of the corpus's.
    """
    out = Path(out)
    names = {d.name for d in corpus.datasets}
    clash = sorted(names & {d.name for d in held_out})
    if clash:
        raise ValueError(f"Held-out datasets {clash} are in corpus {corpus.name}; rename them.")
    out.mkdir(parents=True, exist_ok=True)
    started = time.time()
    load_prior(out, None if corpus_path is None else Path(corpus_path))
    jobs = [(str(out), corpus, held_out[k % len(held_out)], k, budget) for k in seeds]
    print(
        f"prior ready ({time.time() - started:.0f} s); {len(jobs)} jobs "
        f"({', '.join(f'{d.name} seed {k}' for _, _, d, k, _ in jobs)}), {workers} at a time",
        flush=True,
    )
    context = multiprocessing.get_context("spawn")
    with context.Pool(min(workers, len(jobs))) as pool:
        outcomes = [o for pair in pool.map(_worker, jobs, chunksize=1) for o in pair]
    print(table(outcomes))
    plot = out / "regret_vs_pipeline_time.png"
    plot_regret(outcomes, plot)
    print(f"wall time: {time.time() - started:.0f} s; plot: {plot}")
    print(f"\nView the studies:\n  optuna-dashboard {out / 'demo.journal'}")
    return outcomes


def _best_known(outcomes: Sequence[Outcome]) -> dict[str, float]:
    best: dict[str, float] = {}
    for o in outcomes:
        if np.isfinite(o.score):
            best[o.dataset] = max(best.get(o.dataset, -np.inf), o.score)
    return best


def table(outcomes: Sequence[Outcome]) -> str:
    """The comparison: one row per study, then each method's mean score and regret, and
    how many jobs each method won (regret: from the best full run of any study on the
    dataset)."""
    best = _best_known(outcomes)
    lines = [
        "",
        "AutoPipe vs TPE at equal pipeline time (score: exact match on the held-out dataset's "
        "eval suite; regret: from the best full run any study found on that dataset)",
        f"{'method':8} {'dataset':20} {'seed':>4} {'trials':>6} {'full runs':>9} "
        f"{'pipeline s':>10} {'score':>6} {'regret':>6}",
    ]
    for o in outcomes:
        lines.append(
            f"{o.method:8} {o.dataset:20} {o.seed:4d} {o.trials:6d} {o.full_runs:9d} "
            f"{o.seconds:10.0f} {o.score:6.3f} {best.get(o.dataset, np.nan) - o.score:6.3f}"
        )
    for method in dict.fromkeys(o.method for o in outcomes):
        mine = [o for o in outcomes if o.method == method]
        regrets = [best.get(o.dataset, np.nan) - o.score for o in mine]
        lines.append(
            f"{method:8} mean score {np.mean([o.score for o in mine]):.3f}, mean regret "
            f"{np.mean(regrets):.3f} (worst {max(regrets):.3f}), "
            f"{np.mean([o.seconds for o in mine]):.0f} pipeline s per study"
        )
    pairs = {(o.dataset, o.seed): {} for o in outcomes}
    for o in outcomes:
        pairs[o.dataset, o.seed][o.method] = o.score
    wins = sum(p.get("autopipe", -np.inf) > p.get("tpe", -np.inf) for p in pairs.values())
    ties = sum(p.get("autopipe") == p.get("tpe") for p in pairs.values())
    lines.append(f"AutoPipe better on {wins} of {len(pairs)} jobs, tied on {ties}.")
    return "\n".join(lines)


def plot_regret(outcomes: Sequence[Outcome], path: Path) -> None:
    """One panel per job: each method's regret of its best full run so far against
    cumulative pipeline seconds (nothing drawn before a method's first full run)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    best = _best_known(outcomes)
    jobs = list(dict.fromkeys((o.dataset, o.seed) for o in outcomes))
    fig, axes = plt.subplots(1, len(jobs), figsize=(4 * len(jobs), 3.2), squeeze=False)
    for ax, (dataset, seed) in zip(axes[0], jobs, strict=True):
        for o in outcomes:
            if (o.dataset, o.seed) != (dataset, seed):
                continue
            points = [(0.0, None), *o.trajectory]
            xs = [x for x, _ in points]
            ys = [np.nan if y is None else best[dataset] - y for _, y in points]
            ax.step(xs, ys, where="post", label=o.method)
        ax.set_title(f"{dataset}, seed {seed}", fontsize=9)
        ax.set_xlabel("pipeline seconds")
    axes[0][0].set_ylabel("regret (exact match)")
    axes[0][0].legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
