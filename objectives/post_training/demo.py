"""The live demo: AutoPipe vs TPE at equal pipeline time on held-out mini datasets.

1. The prior is fitted on a mini corpus (default: the bundled corpus v2, ``bundled/``), its
   early-stop regressor at ``FRACTION`` of SFT, or loaded from ``out/prior`` when already
   fitted on the same corpus file.
2. One job per seed ``k``: held-out dataset ``HELD_OUT[k % 3]`` (none of them is in the
   corpus). Per job, two studies, run ``workers`` at a time in worker processes (a job's TPE
   study starts when its AutoPipe study has finished), into one journal file:

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
import json
import multiprocessing
import os
import shutil
import sys
import time
from collections.abc import Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor, as_completed
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import optuna
from optuna.trial import TrialState

from objectives.post_training import bundle
from objectives.post_training.mini_corpus import (
    V2,
    MiniCorpus,
    MiniDataset,
    dataset_files,
    fail_lost_runs,
    objective,
    profile,
    quiet_worker,
)
from objectives.post_training.objective import FAILURE_ATTR, PostTrainingObjective
from objectives.post_training.search_space import SFT_PARAMETERS
from objectives.post_training.tasks import DatasetFiles, Teacher
from optuna_autopipe.corpus import Corpus
from optuna_autopipe.early_stop import PROMOTED_FROM_ATTR, promote, verify
from optuna_autopipe.prior import Prior, fit_prior
from optuna_autopipe.profile import DatasetProfile
from optuna_autopipe.promotion import promote_best
from optuna_autopipe.sampler import AutoPipeSampler

#: Study user attr holding the settings a demo's studies were made with.
SETTINGS_ATTR = "demo:settings"
#: Folder of the demo's artifact store (each run's full SFT dynamics and their plot).
ARTIFACTS = "artifacts"
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

    def score_at(self, seconds: float) -> float:
        """The best full-run score once ``seconds`` of pipeline time were spent (NaN: no
        full run finished by then)."""
        reached = [s for spent, s in self.trajectory if spent <= seconds + 1e-9 and s is not None]
        return reached[-1] if reached else np.nan


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


def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def study_name(method: str, dataset: str, seed: int) -> str:
    return f"{method}-{dataset}-seed{seed}"


def _check_resumable(out: Path, settings: dict[str, Any]) -> None:
    """Refuse to resume studies of ``out`` made with other settings (their results would
    mix two demos): ``ValueError`` naming the folder and the differences."""
    if not (out / "demo.journal").exists():
        return
    for summary in optuna.get_all_study_summaries(_storage(out), include_best_trial=False):
        stored = summary.user_attrs.get(SETTINGS_ATTR)
        if stored is not None and stored != settings:
            changed = sorted(k for k in {*stored, *settings} if stored.get(k) != settings.get(k))
            raise ValueError(
                f"{out} holds a demo run with other settings ({', '.join(changed)} differ: "
                f"study {summary.study_name} has "
                f"{ {k: stored.get(k) for k in changed} }); use a new --out or delete {out}."
            )


@contextmanager
def _lock(out: Path) -> Iterator[None]:
    """One demo at a time per folder (``out/demo.lock`` holds the owner's pid; a lock whose
    process is gone is taken over). Raises ``ValueError`` while another demo runs."""
    path = out / "demo.lock"
    while True:
        try:
            handle = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
        except FileExistsError:
            try:
                owner = int(path.read_text() or 0)
                os.kill(owner, 0)
            except (ValueError, ProcessLookupError, FileNotFoundError):
                path.unlink(missing_ok=True)  # stale: its demo is gone
                continue
            raise ValueError(
                f"Another demo (pid {owner}) is running in {out}; wait for it or use another --out."
            ) from None
        break
    os.write(handle, str(os.getpid()).encode())
    os.close(handle)
    try:
        yield
    finally:
        path.unlink(missing_ok=True)


def load_prior(out: Path, corpus_path: Path | None = None) -> Prior:
    """The prior fitted on ``corpus_path`` (default: the bundled corpus; regressor at
    ``FRACTION``), cached in ``out/prior`` and refitted when the corpus file changes."""
    corpus_path = bundle.BUNDLED / "corpus.jsonl" if corpus_path is None else corpus_path
    cached = out / "prior"
    digest = _digest(Path(corpus_path))
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


@dataclass(frozen=True)
class _Job:
    """One held-out dataset (its files written by the parent process) and seed: its two
    studies run in worker processes."""

    out: Path
    corpus: MiniCorpus
    dataset: MiniDataset
    files: DatasetFiles
    seed: int
    budget: int
    #: What the studies' results depend on besides the seed (``run_demo``'s settings), stored
    #: on each study.
    settings: dict[str, Any]

    def study(
        self, method: str, sampler: optuna.samplers.BaseSampler
    ) -> tuple[optuna.Study, list[optuna.trial.FrozenTrial]]:
        """This job's study of ``method`` (resumed when a stopped demo left one) and the
        trials a stopped demo left RUNNING: lost runs, failed here so that they run again."""
        study = optuna.create_study(
            study_name=study_name(method, self.dataset.name, self.seed),
            storage=_storage(self.out),
            direction="maximize",
            sampler=sampler,
            pruner=optuna.pruners.NopPruner(),
            load_if_exists=True,
        )
        study.set_user_attr(SETTINGS_ATTR, self.settings)
        return study, fail_lost_runs(study)

    def objective(self, **options: Any) -> PostTrainingObjective:
        artifacts = self.out / ARTIFACTS
        artifacts.mkdir(parents=True, exist_ok=True)
        return objective(
            self.files,
            self.corpus.scale,
            output_dir=self.out / "work" / f"{self.dataset.name}-seed{self.seed}",
            space=self.corpus.space,
            seed=self.seed,
            artifact_store=optuna.artifacts.FileSystemArtifactStore(artifacts),
            **options,
        )

    def features(self) -> DatasetProfile:
        return profile(self.dataset.name, self.files)


def _run_autopipe(job: _Job) -> Outcome:
    """``budget`` trials stopped at ``FRACTION``, then the promotions (worker process)."""
    quiet_worker()
    started = time.time()
    prior = Prior.load(job.out / "prior")
    features = job.features()
    sampler = AutoPipeSampler(
        prior,
        features,
        budget=job.budget,
        seed=job.seed,
        search_space=job.corpus.space,
        early_stop_params=SFT_PARAMETERS,
    )
    study, lost = job.study("autopipe", sampler)
    features.to_study(study)
    for trial in lost:  # a lost promotion is promoted again, from the same early stop
        if PROMOTED_FROM_ATTR in trial.user_attrs:
            promote(study, study.trials[trial.user_attrs[PROMOTED_FROM_ATTR]])
    early = job.objective(early_stop=FRACTION, regressor=prior.regressor, dataset=features)
    spent = [
        t
        for t in study.trials
        if PROMOTED_FROM_ATTR not in t.user_attrs
        and (t.state != TrialState.FAIL or FAILURE_ATTR in t.user_attrs)
    ]
    if job.budget > len(spent):
        study.optimize(early, n_trials=job.budget - len(spent))
    promoted = any(PROMOTED_FROM_ATTR in t.user_attrs for t in study.trials)
    if not promoted and not promote_best(study, sampler):  # nothing stopped early
        verify(study, sampler.recommend(study))
    waiting = study.get_trials(deepcopy=False, states=(TrialState.WAITING,))
    if waiting:
        study.optimize(early, n_trials=len(waiting))
    return _progress(_outcome("autopipe", job.dataset.name, job.seed, study), started, study)


def _run_tpe(job: _Job, seconds: float) -> Outcome:
    """Full runs until ``seconds`` of pipeline time are spent (worker process)."""
    quiet_worker()
    started = time.time()
    study, _ = job.study("tpe", optuna.samplers.TPESampler(seed=job.seed))
    full = job.objective(early_stop=None)
    while not study.trials or _spent(study) < seconds:
        study.optimize(full, n_trials=1)
    return _progress(_outcome("tpe", job.dataset.name, job.seed, study), started, study)


def _progress(outcome: Outcome, started: float, study: optuna.Study) -> Outcome:
    ran = any(
        t.datetime_complete is not None and t.datetime_complete.timestamp() >= started
        for t in study.get_trials(deepcopy=False)
    )
    print(
        f"  {outcome.method:8} {outcome.dataset:20} seed {outcome.seed}: {outcome.trials:2d} "
        f"trials ({outcome.full_runs} full), {outcome.seconds:4.0f} pipeline s, best full run "
        f"{outcome.score:.3f}  "
        + (f"[{time.time() - started:.0f} s wall]" if ran else "[done before: resumed]"),
        flush=True,
    )
    return outcome


def _run_jobs(jobs: Sequence[_Job], workers: int) -> list[Outcome]:
    """Every job's AutoPipe study, and its TPE study as soon as AutoPipe's spend is known,
    on ``workers`` processes; outcomes in job order, AutoPipe before TPE."""
    context = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(max_workers=workers, mp_context=context) as pool:
        autopipe = {pool.submit(_run_autopipe, job): k for k, job in enumerate(jobs)}
        tpe = {}
        for future in as_completed(autopipe):
            k = autopipe[future]
            tpe[k] = pool.submit(_run_tpe, jobs[k], future.result().seconds)
        mine = {k: f.result() for f, k in autopipe.items()}
        return [o for k in range(len(jobs)) for o in (mine[k], tpe[k].result())]


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

    Raises ``ValueError`` for a held-out dataset whose name is one of the corpus's, a
    missing corpus file, an ``out`` that is a file, an ``out`` holding a demo made with
    other settings (budget, corpus file or scale), or another demo running in ``out``.
    """
    out = Path(out)
    names = {d.name for d in corpus.datasets}
    clash = sorted(names & {d.name for d in held_out})
    if clash:
        raise ValueError(f"Held-out datasets {clash} are in corpus {corpus.name}; rename them.")
    source = bundle.BUNDLED / "corpus.jsonl" if corpus_path is None else Path(corpus_path)
    if not source.is_file():
        raise ValueError(
            f"--corpus {source}: no such file; give the corpus.jsonl an `autopipe corpus "
            "generate` wrote, or leave --corpus out for the bundled corpus."
        )
    if out.exists() and not out.is_dir():
        raise ValueError(f"--out {out} is a file; give a folder (it is created if missing).")
    # as a study attr stores it (JSON: tuples become lists)
    settings = json.loads(
        json.dumps(
            {
                "budget": budget,
                "corpus": corpus.name,
                "corpus_sha256": _digest(source),
                "scale": asdict(corpus.scale),
            }
        )
    )
    _check_resumable(out, settings)
    out.mkdir(parents=True, exist_ok=True)
    with _lock(out):
        started = time.time()
        load_prior(out, source)
        files = {d.name: dataset_files(out, d, corpus.scale) for d in held_out}
        jobs = [
            _Job(out, corpus, d, files[d.name], k, budget, settings)
            for k in seeds
            for d in [held_out[k % len(held_out)]]
        ]
        at_once = min(workers, 2 * len(jobs))
        print(
            f"prior ready ({time.time() - started:.0f} s); {_count(len(jobs), 'job')} "
            f"({', '.join(f'{j.dataset.name} seed {j.seed}' for j in jobs)}), up to "
            f"{_count(at_once, 'study', 'studies')} at a time",
            flush=True,
        )
        outcomes = _run_jobs(jobs, at_once)
        print(table(outcomes))
        plot = out / "regret_vs_pipeline_time.png"
        plot_regret(outcomes, plot)
        print(f"wall time: {time.time() - started:.0f} s; plot: {plot}")
        print(
            f"\nView the studies (notes, curves):\n  {_dashboard()} {out / 'demo.journal'} "
            f"--artifact-dir {out / ARTIFACTS}"
        )
    return outcomes


def _count(n: int, one: str, many: str | None = None) -> str:
    return f"{n} {one if n == 1 else many or one + 's'}"


def _dashboard() -> str:
    """The optuna-dashboard command: its name when on PATH, else its path beside Python."""
    beside = Path(sys.executable).with_name("optuna-dashboard")
    return (
        "optuna-dashboard"
        if shutil.which("optuna-dashboard") or not beside.exists()
        else str(beside)
    )


def _best_known(outcomes: Sequence[Outcome]) -> dict[str, float]:
    best: dict[str, float] = {}
    for o in outcomes:
        if np.isfinite(o.score):
            best[o.dataset] = max(best.get(o.dataset, -np.inf), o.score)
    return best


def table(outcomes: Sequence[Outcome]) -> str:
    """The comparison: one row per study (with TPE's score once it had spent what AutoPipe
    spent), then each method's mean score and regret, and how many jobs each method won
    (regret: from the best full run of any study on the dataset)."""
    best = _best_known(outcomes)
    spend = {(o.dataset, o.seed): o.seconds for o in outcomes if o.method == "autopipe"}
    lines = [
        "",
        "AutoPipe vs TPE at equal pipeline time. Score: exact match on the held-out dataset's "
        "eval suite;\nregret: from the best full run any study found on that dataset; TPE "
        "stops at its first full run that reaches AutoPipe's\nspend, 'at equal s' is its "
        "score when it had spent no more than AutoPipe.",
        f"{'method':8} {'dataset':20} {'seed':>4} {'trials':>6} {'full runs':>9} "
        f"{'pipeline s':>10} {'score':>6} {'regret':>6} {'at equal s':>10}",
    ]
    for o in outcomes:
        at_spend = o.score_at(spend.get((o.dataset, o.seed), o.seconds))
        lines.append(
            f"{o.method:8} {o.dataset:20} {o.seed:4d} {o.trials:6d} {o.full_runs:9d} "
            f"{o.seconds:10.0f} {o.score:6.3f} {best.get(o.dataset, np.nan) - o.score:6.3f} "
            f"{at_spend:10.3f}"
        )
    for method in dict.fromkeys(o.method for o in outcomes):
        mine = [o for o in outcomes if o.method == method]
        regrets = [best.get(o.dataset, np.nan) - o.score for o in mine]
        lines.append(
            f"{method:8} mean score {np.mean([o.score for o in mine]):.3f}, mean regret "
            f"{np.mean(regrets):.3f} (worst {np.max(regrets):.3f}), "
            f"{np.mean([o.seconds for o in mine]):.0f} pipeline s per study"
        )
    pairs: dict[tuple[str, int], dict[str, Outcome]] = {}
    for o in outcomes:
        pairs.setdefault((o.dataset, o.seed), {})[o.method] = o
    wins = ties = wins_at_spend = 0
    for pair in pairs.values():
        if "autopipe" not in pair or "tpe" not in pair:
            continue
        mine, theirs = pair["autopipe"], pair["tpe"]
        wins += mine.score > theirs.score
        ties += mine.score == theirs.score
        at_spend = theirs.score_at(mine.seconds)
        # TPE with no full run by then loses; AutoPipe with no verified run never wins
        wins_at_spend += bool(np.isfinite(mine.score) and not mine.score <= at_spend)
    lines.append(
        f"AutoPipe better on {wins} of {len(pairs)} jobs, tied on {ties}; better than TPE at "
        f"equal spend on {wins_at_spend}."
    )
    return "\n".join(lines)


def plot_regret(outcomes: Sequence[Outcome], path: Path) -> None:
    """One panel per job: each method's regret of its best full run so far against
    cumulative pipeline seconds (nothing drawn before a method's first full run; dotted:
    AutoPipe's spend, which TPE's last run may overshoot)."""
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
            if o.method == "autopipe":
                ax.axvline(
                    o.seconds, color="grey", linestyle=":", linewidth=1, label="AutoPipe's spend"
                )
        ax.set_title(f"{dataset}, seed {seed}", fontsize=9)
        ax.set_xlabel("pipeline seconds")
    axes[0][0].set_ylabel("regret (exact match, lower is better)")
    axes[0][0].legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
