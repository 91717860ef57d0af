"""``PostTrainingObjective``: SFT → GRPO → lm-eval as an Optuna objective, early-stop aware.

One call = one trial. In early-stop mode (``early_stop=0.5``) SFT stops at half of its
planned steps through ``AutoPipeEarlyStop``, RL and evaluation are skipped and the trial
ends PRUNED with its dynamics (and, with a regressor, its proxy) in user attrs. A trial
enqueued by ``optuna_autopipe.early_stop.promote``/``verify`` — and every trial when
``early_stop=None`` — runs the whole pipeline and returns the suite's mean accuracy
(maximise). A promoted trial resumes SFT from the early stop's checkpoint.

Output directory (``output_dir``)::

    <study name>/trial-<number>/
        sft/checkpoint-<step>/   the early stop's checkpoint (kept: promotion resumes from it)
        sft/model/               SFT model, input of GRPO (removed unless keep_models)
        rl/model/                final model (removed unless keep_models)
        trial.json               params, per-stage cost, scores or the failure

User attrs written: ``cost`` (seconds, all stages), ``autopipe:cost`` (per stage: seconds,
GPU-hours, peak memory in GB), ``autopipe:scores`` (accuracy per benchmark),
``autopipe:failure`` (``{"stage", "kind", "reason"}``), and with ``rl_fidelities``
``autopipe:rl_fidelity`` (below).

Lower RL fidelities (``rl_fidelities``, e.g. ``(0.0, 0.25, 0.5)``): the model is also
evaluated after SFT (0.0) and after ``ceil(f * steps)`` GRPO steps, and the trial records
``autopipe:rl_fidelity = {"<f>": {"score", "scores", "rl_seconds", "eval_seconds"}}`` for
each ``f`` and for 1 (the final model): the suite score, per-benchmark scores, GRPO seconds
up to that step and the evaluation's seconds. A replay charges a run stopped at ``f`` its SFT
seconds, ``rl_seconds`` and ``eval_seconds``. These extra evaluations are not in ``cost``,
which is what the pipeline itself costs. A trial whose training runs out of
memory, diverges (NaN loss) or crashes ends FAIL with the reason (the objective returns NaN,
which Optuna records as a failed trial) and the study goes on.
"""

from __future__ import annotations

import json
import logging
import re
import shutil
import time
import warnings
from collections.abc import Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import optuna
from optuna.distributions import BaseDistribution

from objectives.post_training.evaluation import EvalSuite, evaluate, suite_score
from objectives.post_training.search_space import PARAMETERS, tiny_space
from objectives.post_training.tasks import read_jsonl
from objectives.post_training.training import Diverged, Hardware, load_model, run_grpo, run_sft
from optuna_autopipe.early_stop import PROMOTED_FROM_ATTR, AutoPipeEarlyStop, resume_checkpoint
from optuna_autopipe.space import suggest

if TYPE_CHECKING:
    from optuna_autopipe.profile import DatasetProfile
    from optuna_autopipe.regressor import EarlyStopRegressor

_logger = logging.getLogger(__name__)
_ANSWER_LINE = re.compile(r"[ \t]*Answer:[ \t]*\S")

COST_ATTR = "autopipe:cost"
SCORES_ATTR = "autopipe:scores"
RL_FIDELITY_ATTR = "autopipe:rl_fidelity"
FAILURE_ATTR = "autopipe:failure"


class StageFailure(Exception):
    """A stage failed in a way that fails the trial (not the study)."""

    def __init__(self, stage: str, kind: str, reason: str) -> None:
        super().__init__(f"{stage}: {kind}: {reason}")
        self.stage, self.kind, self.reason = stage, kind, reason


@contextmanager
def _failures(stage: str):  # type: ignore[no-untyped-def]
    """Turn an exception inside ``stage`` into a ``StageFailure`` of its kind: ``diverged``
    (a NaN/inf loss), ``out_of_memory`` or ``crashed``; a pruned trial passes through."""
    import torch

    try:
        yield
    except optuna.TrialPruned:
        raise
    except Diverged as exc:
        raise StageFailure(stage, "diverged", str(exc)) from exc
    except torch.OutOfMemoryError as exc:
        raise StageFailure(stage, "out_of_memory", str(exc).splitlines()[0]) from exc
    except Exception as exc:
        kind = "out_of_memory" if "out of memory" in str(exc).lower() else "crashed"
        raise StageFailure(stage, kind, f"{type(exc).__name__}: {exc}") from exc


@dataclass
class _Ledger:
    """Per-stage wall clock, GPU-hours and peak memory of one trial."""

    device: str
    stages: dict[str, dict[str, float]] = field(default_factory=dict)

    @contextmanager
    def stage(self, name: str):  # type: ignore[no-untyped-def]
        import torch

        if self.device == "cuda":
            torch.cuda.reset_peak_memory_stats()
        start = time.perf_counter()
        try:
            with _failures(name):
                yield
        finally:
            seconds = time.perf_counter() - start
            self.stages[name] = {
                "seconds": round(seconds, 3),
                "gpu_hours": round(seconds / 3600, 6) if self.device == "cuda" else 0.0,
                "peak_memory_gb": round(_peak_memory_gb(self.device), 3),
            }

    @property
    def seconds(self) -> float:
        return sum(s["seconds"] for s in self.stages.values())


def _warn_without_answer_line(records: list[dict[str, Any]], path: str | Path) -> None:
    """Warn when SFT completions do not end with an ``Answer: X`` line: evaluation reads the
    answer after the last "Answer:", so a model trained on them learns no answer it can find.
    A warning, not an error: such data still trains (and RL accepts eight formats)."""
    bad = [
        number
        for number, record in enumerate(records, start=1)
        if not _ANSWER_LINE.match(record["completion"].rstrip().rsplit("\n", 1)[-1])
    ]
    if bad:
        warnings.warn(
            f"SFT data {path}: {len(bad)} of {len(records)} completions (records {bad[:5]}) do "
            'not end with an "Answer: X" line, which evaluation reads; end every completion '
            'with "Answer: <answer>" (see objectives/post_training/formats.py).',
            stacklevel=3,
        )


def _peak_memory_gb(device: str) -> float:
    import resource

    import torch

    if device == "cuda":
        return torch.cuda.max_memory_allocated() / 2**30
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # process peak (KiB)


class PostTrainingObjective:
    """SFT → GRPO → lm-eval on one dataset; returns the suite's mean accuracy (maximise).

    Args:
        sft_data: JSONL of ``{"prompt", "completion"}`` (the completion ends in "Answer: X";
            a warning names the records that do not).
        rl_data: JSONL of ``{"prompt", "answer"}``.
        eval_suite: the benchmarks (``EvalSuite``).
        space: search space (default ``tiny_space()``; ``paper_space()`` for hub models);
            ``base_model`` values are hub names, local folders or ``tiny/<name>``.
        early_stop: SFT fraction at which non-promoted trials stop (``None``: always full).
        regressor: turns the early-stop dynamics into a proxy (fitted at the same fraction).
        dataset: the dataset's meta-features, for the regressor.
        output_dir: where trials write (layout in the module docstring).
        device: ``"auto"``, ``"cpu"`` or ``"cuda"``; ``max_device_batch`` caps per-device
            batches (the rest is gradient accumulation).
        rl_max_steps: cap on GRPO steps (default: one pass over the RL prompts).
        rl_fidelities: fractions in [0, 1) of the GRPO steps after which the model is also
            evaluated (0: after SFT), recorded in ``autopipe:rl_fidelity``.
        max_completion_length: GRPO completion length in tokens.
        max_length: SFT sequence length (default: the tokenizer's).
        seed: training seed (recorded on the trial).
        keep_models: keep SFT and RL models after the trial.
        artifact_store: an Optuna artifact store for each run's full SFT dynamics and their
            plot (``AutoPipeEarlyStop(artifact_store=...)``); ``None``: not uploaded.
    """

    def __init__(
        self,
        *,
        sft_data: str | Path,
        rl_data: str | Path,
        eval_suite: EvalSuite,
        space: Mapping[str, BaseDistribution] | None = None,
        early_stop: float | None = 0.5,
        regressor: EarlyStopRegressor | None = None,
        dataset: DatasetProfile | Mapping[str, float] | None = None,
        output_dir: str | Path = "runs/pipeline",
        device: str = "auto",
        max_device_batch: int | None = None,
        rl_max_steps: int | None = None,
        rl_fidelities: Sequence[float] = (),
        max_completion_length: int = 64,
        max_length: int | None = None,
        seed: int = 0,
        keep_models: bool = False,
        artifact_store: Any = None,
    ) -> None:
        self.sft_records = read_jsonl(sft_data, kind="SFT", required=("prompt", "completion"))
        _warn_without_answer_line(self.sft_records, sft_data)
        self.rl_records = read_jsonl(rl_data, kind="RL", required=("prompt", "answer"))
        self.eval_suite = eval_suite
        self.space = dict(space if space is not None else tiny_space())
        missing = [p for p in PARAMETERS if p not in self.space]
        if missing:
            raise ValueError(
                f"The search space lacks {missing}; start from tiny_space() or paper_space() "
                "and change the grids you need."
            )
        if early_stop is not None and not 0.0 < early_stop < 1.0:
            raise ValueError(f"early_stop must be in (0, 1) or None, got {early_stop!r}.")
        self.early_stop = early_stop
        self.regressor = regressor
        self.dataset = dataset
        self.output_dir = Path(output_dir)
        self.hardware = Hardware.detect(device, max_device_batch)
        self.rl_max_steps = rl_max_steps
        if any(not 0.0 <= f < 1.0 for f in rl_fidelities):
            raise ValueError(
                f"rl_fidelities must be fractions in [0, 1) (1, the final model, is always "
                f"evaluated), got {tuple(rl_fidelities)}."
            )
        self.rl_fidelities = tuple(sorted(set(rl_fidelities)))
        self.max_completion_length = max_completion_length
        self.max_length = max_length
        self.seed = seed
        self.keep_models = keep_models
        self.artifact_store = artifact_store

    def __call__(self, trial: optuna.trial.Trial) -> float:
        config = {name: suggest(trial, name, dist) for name, dist in self.space.items()}
        folder = self.output_dir / trial.study.study_name / f"trial-{trial.number:05d}"
        ledger = _Ledger(self.hardware.device)
        record: dict[str, Any] = {"params": config, "seed": self.seed}
        trial.set_user_attr("seed", self.seed)
        try:
            value = self._run(trial, config, folder, ledger, record)
        except StageFailure as failure:
            record["failure"] = {"stage": failure.stage, "kind": failure.kind}
            record["failure"]["reason"] = failure.reason[:2000]
            trial.set_user_attr(FAILURE_ATTR, record["failure"])
            _logger.warning("trial %d failed: %s", trial.number, failure)
            value = float("nan")
        except optuna.TrialPruned:
            self._close(trial, folder, ledger, record, completed=False)
            raise
        self._close(trial, folder, ledger, record, completed=True)
        return value

    def _run(
        self,
        trial: optuna.trial.Trial,
        config: dict[str, Any],
        folder: Path,
        ledger: _Ledger,
        record: dict[str, Any],
    ) -> float:
        full = self.early_stop is None or PROMOTED_FROM_ATTR in trial.user_attrs
        hook = AutoPipeEarlyStop(
            trial,
            fraction=1.0 if full else self.early_stop,
            regressor=None if full else self.regressor,
            dataset=self.dataset,
            artifact_store=self.artifact_store,
        )
        with ledger.stage("sft"):
            _, completed = run_sft(
                model_name=config["base_model"],
                records=self.sft_records,
                epochs=config["sft_epoch"],
                batch=config["sft_batch"],
                lr=config["sft_lr"],
                hardware=self.hardware,
                output_dir=folder / "sft",
                seed=self.seed,
                callbacks=[hook.callback()],
                resume_from=resume_checkpoint(trial),
                max_length=self.max_length,
            )
        if not completed:
            hook.finish()  # raises TrialPruned after an early stop or the study's pruner
            raise StageFailure("sft", "crashed", "training ended before its planned length")
        hook.write(fidelity=1.0)
        fidelities: dict[str, dict[str, Any]] = {}
        if 0.0 in self.rl_fidelities:
            fidelities["0"] = self._evaluate(folder / "sft" / "model", rl_seconds=0.0)
        with ledger.stage("rl"):
            _, models = run_grpo(
                model_dir=folder / "sft" / "model",
                records=self.rl_records,
                batch=config["rl_batch"],
                lr=config["rl_lr"],
                beta=config["rl_beta"],
                rollouts=config["rl_rollouts"],
                temperature=config["rl_temp"],
                hardware=self.hardware,
                output_dir=folder / "rl",
                seed=self.seed,
                max_completion_length=self.max_completion_length,
                max_steps=self.rl_max_steps,
                snapshots=[f for f in self.rl_fidelities if f > 0],
            )
        with ledger.stage("eval"):
            model, tokenizer = load_model(str(folder / "rl" / "model"), self.hardware)
            scores = evaluate(model, tokenizer, self.eval_suite, device=self.hardware.device)
        trial.set_user_attr(SCORES_ATTR, scores)
        record["scores"] = scores
        value = suite_score(scores, self.eval_suite.benchmarks)
        if self.rl_fidelities:
            for fraction, (path, seconds) in sorted(models.items()):
                if fraction < 1.0:
                    fidelities[f"{fraction:g}"] = self._evaluate(path, rl_seconds=seconds)
                    shutil.rmtree(path, ignore_errors=True)
            fidelities["1"] = {
                "score": value,
                "scores": scores,
                "rl_seconds": round(models[1.0][1], 3),
                "eval_seconds": ledger.stages["eval"]["seconds"],
            }
            trial.set_user_attr(RL_FIDELITY_ATTR, fidelities)
            record["rl_fidelity"] = fidelities
        return value

    def _evaluate(self, model_dir: Path, *, rl_seconds: float) -> dict[str, Any]:
        """One ``autopipe:rl_fidelity`` entry: the suite's scores of the model in
        ``model_dir``, with the GRPO seconds before it and the evaluation's own seconds."""
        started = time.perf_counter()
        with _failures("eval"):
            model, tokenizer = load_model(str(model_dir), self.hardware)
            scores = evaluate(model, tokenizer, self.eval_suite, device=self.hardware.device)
        return {
            "score": suite_score(scores, self.eval_suite.benchmarks),
            "scores": scores,
            "rl_seconds": round(rl_seconds, 3),
            "eval_seconds": round(time.perf_counter() - started, 3),
        }

    def _close(
        self,
        trial: optuna.trial.Trial,
        folder: Path,
        ledger: _Ledger,
        record: dict[str, Any],
        *,
        completed: bool,
    ) -> None:
        """Record costs, write ``trial.json``, remove what is not kept."""
        trial.set_user_attr(COST_ATTR, ledger.stages)
        trial.set_user_attr("cost", round(ledger.seconds, 3))
        record["cost"] = ledger.stages
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "trial.json").write_text(json.dumps(record, indent=1, default=str))
        if self.keep_models:
            return
        for stage in ("sft", "rl"):
            shutil.rmtree(folder / stage / "model", ignore_errors=True)
        if completed:  # a finished trial is never resumed: its checkpoints go too
            for checkpoint in (folder / "sft").glob("checkpoint-*"):
                shutil.rmtree(checkpoint, ignore_errors=True)
