"""The mini corpus: the real pipeline run at tiny scale on synthetic datasets, recorded as
past studies so that a prior can be learned from it.

Two corpora are defined (``CORPORA``): ``v1``, the bundled one (four single-task datasets, 6
GRPO steps), and ``v2``, the two-stage testbed (nine datasets, mixtures and imperfect teachers
whose answer swaps RL can correct, 32 GRPO steps evaluated at 0/25/50/100% of them, 400
evaluation prompts, RL learning rates around where GRPO starts to help and to collapse).

Layout of ``out``::

    data/<name>-<difficulty>/sft.jsonl, rl.jsonl, eval/test.jsonl[, eval/hard.jsonl]
    runs.journal        Optuna journal storage: one study per dataset ("mini-<name>"), the
                        dataset profile in its user attrs, one COMPLETE trial per run with its
                        dynamics, scores and costs (FAIL: the pipeline failed, reason attached);
                        with ``training_seeds`` k > 1, the same configurations trained with
                        seeds 1..k-1 in studies "mini-<name>/seed-<j>"
    corpus.jsonl        ``Corpus.save`` of the studies (what ``fit_prior`` reads); a run's score
                        is the mean over the training seeds that finished it
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

import numpy as np
import optuna
from optuna.distributions import BaseDistribution
from optuna.trial import TrialState

from objectives.post_training.evaluation import EvalSuite
from objectives.post_training.objective import FAILURE_ATTR, PostTrainingObjective
from objectives.post_training.search_space import tiny_space
from objectives.post_training.tasks import DatasetFiles, Teacher, write_dataset
from objectives.post_training.tiny_models import BASE_MODELS, resolve_model
from optuna_autopipe.corpus import Corpus
from optuna_autopipe.profile import DatasetProfile

RUN_INDEX_ATTR = "autopipe:run_index"
#: Points per metric kept in corpus.jsonl (the journal keeps every logged step).
CORPUS_POINTS = 200


@dataclass(frozen=True, kw_only=True)
class MiniScale:
    """Sizes of one mini dataset and of its pipeline runs (CPU-sized defaults).

    ``rl_fidelities``: fractions of the GRPO steps (0: after SFT) at which each run is also
    evaluated (``PostTrainingObjective(rl_fidelities=...)``). ``hard_eval``: evaluate on the
    level + 1 benchmark too (``write_dataset(hard=...)``)."""

    n_sft: int = 2048
    n_rl: int = 64
    n_eval: int = 100
    rl_max_steps: int = 6
    max_completion_length: int = 48
    eval_temperature: float = 0.0
    rl_fidelities: tuple[float, ...] = ()
    hard_eval: bool = True


@dataclass(frozen=True, kw_only=True)
class MiniDataset:
    """One dataset: its task(s) (several: a mixture), difficulty and SFT teacher (``None``:
    always right). Files live in ``data/<name>-<difficulty>``."""

    name: str
    tasks: tuple[str, ...]
    difficulty: int = 0
    teacher: Teacher | None = None

    @property
    def folder(self) -> str:
        return f"{self.name}-{self.difficulty}"


@dataclass(frozen=True, kw_only=True)
class MiniCorpus:
    """A corpus definition: its datasets, the scale of their runs and the search space."""

    name: str
    datasets: tuple[MiniDataset, ...]
    scale: MiniScale
    space: dict[str, BaseDistribution]

    def dataset(self, name: str) -> MiniDataset:
        for dataset in self.datasets:
            if dataset.name == name:
                return dataset
        raise ValueError(
            f"Corpus {self.name} has no dataset {name!r}; it has {[d.name for d in self.datasets]}."
        )


def _single(task: str, difficulty: int = 0) -> MiniDataset:
    return MiniDataset(name=task, tasks=(task,), difficulty=difficulty)


DEFAULT_SCALE = MiniScale()
#: The bundled corpus (``bundled/``), single tasks at difficulty 0.
V1 = MiniCorpus(
    name="v1",
    datasets=tuple(_single(t) for t in ("compare", "arithmetic", "retrieval", "yesno")),
    scale=DEFAULT_SCALE,
    space=tiny_space(),
)
#: The two-stage testbed (issue 15): nine datasets at difficulty 0 (single tasks and mixtures);
#: four learn an imperfect teacher's answer swaps in SFT, which only RL with the accuracy reward
#: can undo. Scored on 400 same-level prompts: in a pilot (``docs/pipeline.md``) a level + 1
#: benchmark held every dataset's best score under 0.5, and single tasks at difficulty 1
#: (yesno) or arithmetic and sequences at any level stayed near chance at this scale.
V2 = MiniCorpus(
    name="v2",
    datasets=(
        _single("compare"),
        MiniDataset(
            name="compare-swap", tasks=("compare",), teacher=Teacher(swaps={"A": "B"}, error=0.7)
        ),
        _single("retrieval"),
        MiniDataset(
            name="retrieval-swap",
            tasks=("retrieval",),
            teacher=Teacher(swaps={"red": "blue", "green": "gray"}, error=0.7),
        ),
        _single("yesno"),
        MiniDataset(name="compare+yesno", tasks=("compare", "yesno")),
        MiniDataset(name="compare+retrieval", tasks=("compare", "retrieval")),
        MiniDataset(
            name="compare+retrieval-swap",
            tasks=("compare", "retrieval"),
            teacher=Teacher(swaps={"A": "B", "red": "blue"}, error=0.7),
        ),
        MiniDataset(
            name="yesno-swap", tasks=("yesno",), teacher=Teacher(swaps={"yes": "no"}, error=0.5)
        ),
    ),
    scale=MiniScale(
        n_sft=2048,
        n_rl=256,
        n_eval=400,
        rl_max_steps=32,
        rl_fidelities=(0.0, 0.25, 0.5),
        hard_eval=False,
    ),
    space=tiny_space(rl_lr=(1e-4, 3e-4, 1e-3), base_models=BASE_MODELS),
)
CORPORA = {corpus.name: corpus for corpus in (V1, V2)}
#: The demo's new dataset: four-option comparisons, a harder relative of v1's three-option
#: ``compare``; it is not in the corpus.
DEMO = _single("compare", 1)


#: Between a dataset's study name and a training seed's number: "mini-<name>/seed-<j>".
SEED_MARK = "/seed-"


def study_name(dataset: str, seed: int = 0) -> str:
    """The study of ``dataset``'s runs with training seed index ``seed`` (0: the main one)."""
    return f"mini-{dataset}" if seed == 0 else f"mini-{dataset}{SEED_MARK}{seed}"


def config_key(config: dict[str, Any]) -> str:
    return json.dumps(config, sort_keys=True, default=str)


def seed_studies(storage: optuna.storages.BaseStorage, study: str) -> list[str]:
    """Main study ``study`` and the studies of its other training seeds (``study`` +
    ``SEED_MARK`` + j) that ``storage`` holds, in seed order."""
    others = [
        s.study_name
        for s in storage.get_all_studies()
        if s.study_name.startswith(study + SEED_MARK)
    ]
    return [study, *sorted(others, key=seed_index)]


def seeded_runs(
    storage: optuna.storages.BaseStorage, study: str
) -> dict[str, list[optuna.trial.FrozenTrial]]:
    """The COMPLETE runs of main study ``study`` and of its other training seeds' studies
    (``seed_studies``), per configuration (``config_key``), the main run first."""
    runs: dict[str, list[optuna.trial.FrozenTrial]] = {}
    for name in seed_studies(storage, study):
        loaded = optuna.load_study(study_name=name, storage=storage)
        for trial in loaded.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)):
            runs.setdefault(config_key(trial.params), []).append(trial)
    return runs


def dataset_files(
    root: Path, dataset: MiniDataset, scale: MiniScale, seed: int = 0
) -> DatasetFiles:
    """Write the dataset's files under ``root/data/<folder>`` (deterministic: a rewrite gives
    the same files)."""
    return write_dataset(
        dataset.tasks,
        root / "data" / dataset.folder,
        n_sft=scale.n_sft,
        n_rl=scale.n_rl,
        n_eval=scale.n_eval,
        difficulty=dataset.difficulty,
        seed=seed,
        teacher=dataset.teacher,
        hard=scale.hard_eval,
    )


def profile(name: str, files: DatasetFiles) -> DatasetProfile:
    return DatasetProfile.from_files(
        name=name, sft_path=files.sft, rl_path=files.rl, eval_paths=list(files.eval)
    )


def objective(
    files: DatasetFiles,
    scale: MiniScale,
    *,
    output_dir: Path,
    space: dict[str, BaseDistribution] | None = None,
    device: str = "cpu",
    **options: Any,
) -> PostTrainingObjective:
    """The pipeline on one mini dataset at ``scale`` on ``device`` (``"cpu"``, ``"cuda"``,
    ``"auto"``; ``options`` go to the objective)."""
    return PostTrainingObjective(
        sft_data=files.sft,
        rl_data=files.rl,
        eval_suite=EvalSuite(
            benchmarks=files.eval, temperature=scale.eval_temperature, instruction=""
        ),
        space=space if space is not None else tiny_space(),
        output_dir=output_dir,
        device=device,
        rl_max_steps=scale.rl_max_steps,
        rl_fidelities=scale.rl_fidelities,
        max_completion_length=scale.max_completion_length,
        **options,
    )


def planned_configs(
    dataset: str, runs: int, seed: int = 0, space: dict[str, BaseDistribution] | None = None
) -> list[dict[str, Any]]:
    """``runs`` distinct configurations of ``space`` (default ``tiny_space()``) for
    ``dataset`` (seeded: the first k of a longer plan are the plan of k)."""
    rng = random.Random(f"{seed}-{dataset}")
    space = space if space is not None else tiny_space()
    configs: list[dict[str, Any]] = []
    while len(configs) < runs:
        config = {name: rng.choice(dist.choices) for name, dist in space.items()}
        if config not in configs:
            configs.append(config)
    return configs


def journal(out: Path) -> optuna.storages.JournalStorage:
    from optuna.storages.journal import JournalFileBackend

    return optuna.storages.JournalStorage(JournalFileBackend(str(out / "runs.journal")))


def fail_lost_runs(study: optuna.Study) -> list[optuna.trial.FrozenTrial]:
    """Fail the trials a killed process left RUNNING (no pipeline failure attached, so a
    resumed run does them again); returns them as they were."""
    lost = study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))
    for trial in lost:
        study.tell(trial.number, state=TrialState.FAIL)
    return lost


def quiet_worker() -> None:
    """Set up a pipeline worker process: one torch thread, Optuna's warnings only."""
    import torch

    torch.set_num_threads(1)
    optuna.logging.set_verbosity(optuna.logging.WARNING)


def _pending(study: optuna.Study, configs: list[dict[str, Any]]) -> list[int | None]:
    """Run indices still to enqueue for one study, plus ``None`` per leftover WAITING trial.

    Stale RUNNING trials (a killed generation) are failed first and their runs redone.
    """
    fail_lost_runs(study)
    done: set[int] = set()
    waiting = 0
    for trial in study.get_trials(deepcopy=False):
        index = trial.user_attrs.get(RUN_INDEX_ATTR)
        if trial.state == TrialState.WAITING:
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


#: One run to do: the dataset, the training seed index, and the run index with its
#: configuration to enqueue (``None``: run a WAITING trial a stopped generation left behind).
Job = tuple[str, int, tuple[int, dict[str, Any]] | None]


def _worker(
    out: str,
    jobs: list[Job],
    files: dict[str, DatasetFiles],
    corpus: MiniCorpus,
    seed: int,
    device: str,
) -> None:
    quiet_worker()
    root = Path(out)
    storage = journal(root)
    runs = {
        (name, k): objective(
            files[name],
            corpus.scale,
            output_dir=root / "work",
            space=corpus.space,
            early_stop=None,
            seed=seed + k,
            device=device,
        )
        for name, k in {(name, k) for name, k, _ in jobs}
    }
    for name, k, planned in jobs:
        # corpus runs are full runs: no pruner may stop them
        study = optuna.load_study(
            study_name=study_name(name, k), storage=storage, pruner=optuna.pruners.NopPruner()
        )
        if planned is not None:
            index, config = planned
            study.enqueue_trial(config, user_attrs={RUN_INDEX_ATTR: index})
        study.optimize(runs[name, k], n_trials=1, callbacks=[_report])


def generate(
    out: str | Path,
    *,
    corpus: MiniCorpus = V1,
    runs: int = 48,
    workers: int = 2,
    datasets: Sequence[str] | None = None,
    seed: int = 0,
    training_seeds: int = 1,
    device: str = "cpu",
) -> Path:
    """Run (or resume) the generation of ``corpus`` (``datasets``: a subset of its dataset
    names) with ``workers`` processes, every run on ``device`` (``"cuda"``: all workers share
    the GPU; keep one device type per corpus, since numerics differ between CPU and GPU);
    returns the path of ``corpus.jsonl``. A later call with more ``runs`` extends every
    dataset's plan (its first runs are the same).

    ``seed`` draws the datasets and the plan and is the first training seed; each
    configuration is trained with seeds ``seed`` .. ``seed + training_seeds - 1`` (every
    configuration's first seed runs before any second one, so a stopped generation leaves
    whole passes)."""
    out = Path(out)
    chosen = [corpus.dataset(n) for n in datasets] if datasets else list(corpus.datasets)
    out.mkdir(parents=True, exist_ok=True)
    storage = journal(out)
    started = time.time()
    jobs: list[Job] = []
    files = {d.name: dataset_files(out, d, corpus.scale, seed) for d in chosen}
    for name in corpus.space["base_model"].choices:  # built once, before the workers start
        resolve_model(str(name))
    for dataset in chosen:
        configs = planned_configs(dataset.name, runs, seed, corpus.space)
        for k in range(training_seeds):
            study = optuna.create_study(
                study_name=study_name(dataset.name, k),
                storage=storage,
                direction="maximize",
                load_if_exists=True,
            )
            profile(dataset.name, files[dataset.name]).to_study(study)
            jobs += [
                (dataset.name, k, None if i is None else (i, configs[i]))
                for i in _pending(study, configs)
            ]
    names = [d.name for d in chosen]

    def record(status: str) -> None:
        settings = {
            "command": " ".join(sys.argv),
            "status": status,
            "corpus": corpus.name,
            "runs_per_dataset": runs,
            "workers": workers,
            "datasets": [asdict(d) for d in chosen],
            "scale": asdict(corpus.scale),
            "space": {name: list(dist.choices) for name, dist in corpus.space.items()},
            "seed": seed,
            "training_seeds": list(range(seed, seed + training_seeds)),
            "device": device,
            "wall_seconds_this_call": round(time.time() - started),
            **run_record(storage, names),
            "machine": f"{platform.node()} {platform.machine()}, {os.cpu_count()} CPUs",
            "python": platform.python_version(),
            "versions": _versions(),
            "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        }
        (out / "generation.json").write_text(json.dumps(settings, indent=1, default=dict))

    # written first too: a generation stopped midway still says what it was running
    record("running")
    # interleave datasets so a stopped generation leaves every dataset partly done
    jobs.sort(key=lambda job: (job[1], -1 if job[2] is None else job[2][0], job[0]))
    shares = [jobs[k::workers] for k in range(workers)]
    context = multiprocessing.get_context("spawn")
    processes = [
        context.Process(target=_worker, args=(str(out), share, files, corpus, seed, device))
        for share in shares
        if share
    ]
    for process in processes:
        process.start()
    for process in processes:
        process.join()
    path = save_corpus(out, names)
    record("finished")
    return path


def save_corpus(out: Path, datasets: Sequence[str], path: Path | None = None) -> Path:
    """Write ``Corpus.save`` of the journal's runs on ``datasets`` (``CORPUS_POINTS`` per
    metric) to ``path`` (default ``out/corpus.jsonl``); returns it. A run's score is the mean
    over its configuration's finished training seeds; its dynamics are the main seed's."""
    storage = journal(out)
    saved = Corpus.from_studies(storage, [study_name(n) for n in datasets])
    for runs in saved.datasets:
        seeds = seeded_runs(storage, runs.name)
        runs.scores = np.array(
            [np.mean([t.value for t in seeds[config_key(c)]]) for c in runs.configs]
        )
    path = out / "corpus.jsonl" if path is None else path
    saved.save(path, max_points=CORPUS_POINTS)
    return path


def seed_index(name: str) -> int:
    """The training seed index of a corpus study name (0: a main study)."""
    return int(name.split(SEED_MARK)[1]) if SEED_MARK in name else 0


def run_record(storage: optuna.storages.BaseStorage, datasets: Sequence[str]) -> dict[str, Any]:
    """Counts and times over every run of ``datasets`` in the journal, every training seed
    (all calls of a resumed generation; ``runs_failed``: pipeline failures, not runs a stopped
    generation lost; ``runs_complete_by_seed``: per training seed index)."""
    studies = [name for d in datasets for name in seed_studies(storage, study_name(d))]
    trials = {
        name: [
            t
            for t in optuna.load_study(study_name=name, storage=storage).trials
            if t.datetime_complete is not None
        ]
        for name in studies
    }
    every = [t for runs in trials.values() for t in runs]
    if not every:
        return {}
    by_seed: dict[str, int] = {}
    for name, runs in trials.items():
        key = str(seed_index(name))
        by_seed[key] = by_seed.get(key, 0) + sum(t.state == TrialState.COMPLETE for t in runs)
    return {
        "runs_complete": sum(by_seed.values()),
        "runs_complete_by_seed": dict(sorted(by_seed.items())),
        "runs_failed": sum(FAILURE_ATTR in t.user_attrs for t in every),
        "first_run_started": min(t.datetime_start for t in every).isoformat(timespec="seconds"),
        "last_run_finished": max(t.datetime_complete for t in every).isoformat(timespec="seconds"),
        "pipeline_seconds_total": round(sum(float(t.user_attrs.get("cost", 0)) for t in every)),
    }


def _versions() -> dict[str, str]:
    from importlib.metadata import version

    return {p: version(p) for p in ("torch", "transformers", "trl", "lm_eval", "optuna")}
