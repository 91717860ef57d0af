"""The mini corpus: the real pipeline run at tiny scale on synthetic datasets, recorded as
past studies so that a prior can be learned from it.

Layout of ``out``::

    data/<task>/sft.jsonl, rl.jsonl, eval/<task>_test.jsonl, eval/<task>_hard.jsonl
    runs.journal        Optuna journal storage: one study per dataset ("mini-<task>"), the
                        dataset profile in its user attrs, one COMPLETE trial per run with its
                        dynamics, scores and costs (FAIL: the pipeline failed, reason attached)
    corpus.jsonl        ``Corpus.save`` of the studies (what ``fit_prior`` reads)
    generation.json     the command's settings, machine, versions, seeds, wall time

Generation is resumable: every finished run is in the journal at once; a restart fails the
runs a killed generation left RUNNING and runs them again, keeps WAITING ones, and only
enqueues configurations that are still missing. Configurations are drawn per dataset from
``tiny_space()`` with a fixed seed, so a restart asks for the same ones.
"""

from __future__ import annotations

import json
import multiprocessing
import os
import platform
import random
import sys
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import optuna
from optuna.trial import TrialState

from objectives.post_training.evaluation import EvalSuite
from objectives.post_training.objective import FAILURE_ATTR, PostTrainingObjective
from objectives.post_training.search_space import tiny_space
from objectives.post_training.tasks import DatasetFiles, write_dataset
from objectives.post_training.tiny_models import TINY_MODELS, TINY_PREFIX, resolve_model
from optuna_autopipe.corpus import Corpus
from optuna_autopipe.profile import DatasetProfile

#: Datasets of the bundled corpus (at ``MiniScale.difficulty`` 0).
CORPUS_DATASETS = ("compare", "arithmetic", "retrieval", "yesno")
#: The demo's new dataset: four-option comparisons (difficulty 1), a harder relative of the
#: corpus's three-option ``compare``; it is not in the corpus.
DEMO_DATASET, DEMO_DIFFICULTY = "compare", 1
RUN_INDEX_ATTR = "autopipe:run_index"
#: Points per metric kept in corpus.jsonl (the journal keeps every logged step).
CORPUS_POINTS = 200


@dataclass(frozen=True, kw_only=True)
class MiniScale:
    """Sizes of one mini dataset and of its pipeline runs (CPU-sized defaults)."""

    n_sft: int = 2048
    n_rl: int = 64
    n_eval: int = 100
    difficulty: int = 0
    rl_max_steps: int = 6
    max_completion_length: int = 48
    eval_temperature: float = 0.0


DEFAULT_SCALE = MiniScale()


def study_name(task: str) -> str:
    return f"mini-{task}"


def dataset_files(root: Path, task: str, scale: MiniScale, seed: int = 0) -> DatasetFiles:
    """Write the dataset's files under ``root/data/<task>-<difficulty>`` (deterministic: a
    rewrite gives the same files)."""
    return write_dataset(
        task,
        root / "data" / f"{task}-{scale.difficulty}",
        n_sft=scale.n_sft,
        n_rl=scale.n_rl,
        n_eval=scale.n_eval,
        difficulty=scale.difficulty,
        seed=seed,
    )


def profile(name: str, files: DatasetFiles) -> DatasetProfile:
    return DatasetProfile.from_files(
        name=name, sft_path=files.sft, rl_path=files.rl, eval_paths=list(files.eval)
    )


def objective(
    files: DatasetFiles, scale: MiniScale, *, output_dir: Path, **options: Any
) -> PostTrainingObjective:
    """The pipeline on one mini dataset at ``scale`` (``options`` go to the objective)."""
    return PostTrainingObjective(
        sft_data=files.sft,
        rl_data=files.rl,
        eval_suite=EvalSuite(
            benchmarks=files.eval, temperature=scale.eval_temperature, instruction=""
        ),
        space=tiny_space(),
        output_dir=output_dir,
        device="cpu",
        rl_max_steps=scale.rl_max_steps,
        max_completion_length=scale.max_completion_length,
        **options,
    )


def planned_configs(task: str, runs: int, seed: int = 0) -> list[dict[str, Any]]:
    """``runs`` distinct configurations of ``tiny_space()`` for ``task`` (seeded)."""
    rng = random.Random(f"{seed}-{task}")
    space = tiny_space()
    configs: list[dict[str, Any]] = []
    while len(configs) < runs:
        config = {name: rng.choice(dist.choices) for name, dist in space.items()}
        if config not in configs:
            configs.append(config)
    return configs


def journal(out: Path) -> optuna.storages.JournalStorage:
    from optuna.storages.journal import JournalFileBackend

    return optuna.storages.JournalStorage(JournalFileBackend(str(out / "runs.journal")))


def _pending(study: optuna.Study, configs: list[dict[str, Any]]) -> list[int | None]:
    """Run indices still to enqueue for one study, plus ``None`` per leftover WAITING trial.

    Stale RUNNING trials (a killed generation) are failed first and their runs redone.
    """
    done: set[int] = set()
    waiting = 0
    for trial in study.get_trials(deepcopy=False):
        index = trial.user_attrs.get(RUN_INDEX_ATTR)
        if trial.state == TrialState.RUNNING:
            study.tell(trial.number, state=TrialState.FAIL)
        elif trial.state == TrialState.WAITING:
            waiting += 1
            done.add(index)
        elif trial.state == TrialState.COMPLETE or FAILURE_ATTR in trial.user_attrs:
            done.add(index)
    return [i for i in range(len(configs)) if i not in done] + [None] * waiting


def _report(study: optuna.Study, trial: optuna.trial.FrozenTrial) -> None:
    outcome = (
        trial.value if trial.state == TrialState.COMPLETE else trial.user_attrs.get(FAILURE_ATTR)
    )
    print(
        f"{study.study_name} run {trial.user_attrs.get(RUN_INDEX_ATTR)}: {trial.state.name} "
        f"{outcome} ({trial.user_attrs.get('cost')} s)",
        flush=True,
    )


#: One run to do: the dataset, and the run index with its configuration to enqueue (``None``:
#: run a WAITING trial a stopped generation left behind).
Job = tuple[str, tuple[int, dict[str, Any]] | None]


def _worker(
    out: str, jobs: list[Job], files: dict[str, DatasetFiles], scale: MiniScale, seed: int
) -> None:
    import torch

    torch.set_num_threads(1)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    root = Path(out)
    storage = journal(root)
    runs = {
        task: objective(files[task], scale, output_dir=root / "work", early_stop=None, seed=seed)
        for task in {task for task, _ in jobs}
    }
    for task, planned in jobs:
        # corpus runs are full runs: no pruner may stop them
        study = optuna.load_study(
            study_name=study_name(task), storage=storage, pruner=optuna.pruners.NopPruner()
        )
        if planned is not None:
            index, config = planned
            study.enqueue_trial(config, user_attrs={RUN_INDEX_ATTR: index})
        study.optimize(runs[task], n_trials=1, callbacks=[_report])


def generate(
    out: str | Path,
    *,
    runs: int = 48,
    workers: int = 2,
    datasets: Sequence[str] = CORPUS_DATASETS,
    scale: MiniScale = DEFAULT_SCALE,
    seed: int = 0,
) -> Path:
    """Run (or resume) the corpus generation; returns the path of ``corpus.jsonl``."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    storage = journal(out)
    started = time.time()
    jobs: list[Job] = []
    files = {task: dataset_files(out, task, scale, seed) for task in datasets}
    for name in TINY_MODELS:  # built once, before the workers start
        resolve_model(TINY_PREFIX + name)
    for task in datasets:
        study = optuna.create_study(
            study_name=study_name(task), storage=storage, direction="maximize", load_if_exists=True
        )
        profile(task, files[task]).to_study(study)
        configs = planned_configs(task, runs, seed)
        jobs += [(task, None if i is None else (i, configs[i])) for i in _pending(study, configs)]
    # interleave datasets so a stopped generation leaves every dataset partly done
    jobs.sort(key=lambda job: (-1 if job[1] is None else job[1][0], job[0]))
    shares = [jobs[k::workers] for k in range(workers)]
    context = multiprocessing.get_context("spawn")
    processes = [
        context.Process(target=_worker, args=(str(out), share, files, scale, seed))
        for share in shares
        if share
    ]
    for process in processes:
        process.start()
    for process in processes:
        process.join()
    corpus = Corpus.from_studies(storage, [study_name(t) for t in datasets])
    path = out / "corpus.jsonl"
    corpus.save(path, max_points=CORPUS_POINTS)
    record = {
        "command": " ".join(sys.argv),
        "runs_per_dataset": runs,
        "workers": workers,
        "datasets": list(datasets),
        "scale": asdict(scale),
        "seed": seed,
        "wall_seconds_this_call": round(time.time() - started),
        **_run_record(storage, datasets),
        "machine": f"{platform.node()} {platform.machine()}, {os.cpu_count()} CPUs",
        "python": platform.python_version(),
        "versions": _versions(),
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
    }
    (out / "generation.json").write_text(json.dumps(record, indent=1))
    return path


def _run_record(storage: optuna.storages.BaseStorage, datasets: Sequence[str]) -> dict[str, Any]:
    """Counts and times over every run in the journal (all calls of a resumed generation)."""
    trials = [
        t
        for task in datasets
        for t in optuna.load_study(study_name=study_name(task), storage=storage).trials
        if t.datetime_complete is not None
    ]
    if not trials:
        return {}
    first = min(t.datetime_start for t in trials)
    last = max(t.datetime_complete for t in trials)
    return {
        "runs_complete": sum(t.state == TrialState.COMPLETE for t in trials),
        "runs_failed": sum(FAILURE_ATTR in t.user_attrs for t in trials),
        "first_run_started": first.isoformat(timespec="seconds"),
        "last_run_finished": last.isoformat(timespec="seconds"),
        "pipeline_seconds_total": round(sum(float(t.user_attrs.get("cost", 0)) for t in trials)),
    }


def _versions() -> dict[str, str]:
    from importlib.metadata import version

    return {p: version(p) for p in ("torch", "transformers", "trl", "lm_eval", "optuna")}
