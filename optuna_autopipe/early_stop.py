"""``AutoPipeEarlyStop``: record a run's training dynamics and stop it at a fraction of its length.

One hook per trial. It knows the planned training length ``total_steps`` (for a Hugging Face
trainer it reads ``state.max_steps``) and stops at ``stop_step = ceil(fraction · total)``.
Two ways to feed it:

- any training loop: ``if hook.report(step, {"loss": ..., ...}): break``, then
  ``hook.finish()``;
- TRL / transformers trainers: ``trainer = SFTTrainer(..., callbacks=[hook.callback()])``,
  ``trainer.train()``, ``hook.finish()``. Every logged scalar (loss, eval_loss, grad_norm,
  learning_rate, entropy, ...) is recorded with its step (not timings, throughput, FLOPs or
  the epoch counter); at the stop step the callback asks
  the trainer to log, evaluate (when it has an eval strategy), save a checkpoint (for
  promotion) and stop. The Optuna pruner is consulted after each report.

What lands on the trial (user attrs, so any storage and optuna-dashboard show them):

- the primary metric (``primary``; by default ``eval_loss`` for a trainer that evaluates,
  else ``loss``, and in a plain loop the first of them it reports) as intermediate values,
  oriented like the study so that its pruner compares them the right way round: a metric
  whose name says lower is better (``loss``, ``perplexity``, ``error``, ``nll``) is reported
  negated in a maximised study (e.g. accuracy after the pipeline), and any other metric is
  reported negated in a minimised one;
- ``autopipe:dynamics``: the ``TrainingDynamics`` JSON (every metric, compact);
- ``fidelity``: 1 for a run that returned normally, even one that logged fewer steps than
  ``total_steps`` (it converged, or the trainer's own ``EarlyStoppingCallback`` ended it: the
  hook did not stop it, so its result is final), unless ``finish(fidelity=...)`` says
  otherwise; after the hook's early stop or a pruner, the share of the planned training done;
- after an early stop, ``autopipe:stop_step`` and ``autopipe:fraction`` (the hook's fraction,
  which says which of a prior's regressors, ``Prior.regressor_for``, applies to the trial);
- after an early stop with a ``regressor``: ``autopipe:proxy`` and ``autopipe:proxy_variance``
  (and ``autopipe:residual`` for a residual regressor; its proxy is s(x) + r̂, where s(x) is
  the trial's ``autopipe:prior_score`` attr written by ``AutoPipeSampler``; without it only
  the residual is recorded); ``autopipe:checkpoint`` when the trainer saved one;
- after an early stop, the trial's optuna-dashboard note: what the stop observed and how it
  ranks among the study's early stops (``notes.py``);
- with ``artifact_store``, the trial's artifacts ``dynamics.json`` (every point, where the
  attr keeps at most ``max_points`` per metric) and ``dynamics.png`` (each metric's curve).

Fidelity is explicit: ``finish()`` raises ``optuna.TrialPruned`` after an early stop, so the
trial ends PRUNED. No sampler takes a PRUNED trial for a full-fidelity result, ``Corpus``
skips it, and its proxy is only in user attrs. A run the hook did not stop (it completed, it
ended itself earlier, or ``fraction=1``) returns normally, at full fidelity. To promote a
stopped configuration, ``promote(study, trial)`` enqueues it at full fidelity with the
checkpoint to resume from (``resume_checkpoint(trial)`` gives it back, and the new trial's
dynamics continue the old ones), or a fresh run when there is none; ``verify(study, params)``
does the same for a configuration unless the study already holds its full-fidelity result.
"""

from __future__ import annotations

import functools
import logging
import math
import re
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import optuna

from optuna_autopipe.dynamics import DYNAMICS_ATTR, TrainingDynamics, scalar, stop_step
from optuna_autopipe.profile import DatasetProfile

if TYPE_CHECKING:
    from transformers import TrainerCallback

    from optuna_autopipe.regressor import EarlyStopRegressor

_logger = logging.getLogger(__name__)

PROXY_ATTR = "autopipe:proxy"
PROXY_VARIANCE_ATTR = "autopipe:proxy_variance"
RESIDUAL_ATTR = "autopipe:residual"
#: s(x) of the trial's configuration, written by the sampler that proposed it.
PRIOR_SCORE_ATTR = "autopipe:prior_score"
STOP_STEP_ATTR = "autopipe:stop_step"
#: The hook's early-stop fraction, recorded with ``autopipe:stop_step`` after an early stop.
FRACTION_ATTR = "autopipe:fraction"
CHECKPOINT_ATTR = "autopipe:checkpoint"
PROMOTED_FROM_ATTR = "autopipe:promoted_from"
#: Metrics tried in order when ``primary`` is not given.
PRIMARY_DEFAULTS = ("eval_loss", "loss")
#: Metric names read as lower-is-better when orienting intermediate values.
_LOWER_IS_BETTER = re.compile(r"loss|perplexity|error|nll", re.IGNORECASE)
#: Trainer log entries that are bookkeeping (timings, throughput, progress), not dynamics.
_BOOKKEEPING = re.compile(r"(_runtime|_per_second|total_flos|^epoch)$")


class AutoPipeEarlyStop:
    """Records a trial's training dynamics and stops it at ``fraction`` of ``total_steps``.

    Args:
        trial: the running trial.
        total_steps: planned training length in steps; ``None`` for a trainer callback (read
            from ``state.max_steps`` when training begins).
        fraction: early-stop point as a share of ``total_steps``; 1 records without stopping.
            A promoted trial (user attr ``autopipe:promoted_from``, ``promote``/``verify``)
            always runs to full fidelity, so one objective serves both phases.
        primary: metric reported as the trial's intermediate value.
        regressor: turns the dynamics at the stop into a proxy (``EarlyStopRegressor`` with
            the same ``fraction``, e.g. ``prior.regressor_for(fraction)``); without it only the
            dynamics are recorded.
        dataset: the dataset's meta-features (a ``DatasetProfile`` or a mapping), for the
            regressor; needed only when the regressor reads dataset features
            (``regressor.used_dataset_features``), and then it must hold each of them (NaN
            for one truly unknown).
        max_points: at most this many points per metric are stored (evenly thinned).
        checkpoint: let a trainer save a checkpoint at the stop (for promotion).
        artifact_store: an Optuna artifact store (``optuna.artifacts.FileSystemArtifactStore``,
            ``Boto3ArtifactStore``, ...): when given, the run's full dynamics (``dynamics.json``,
            not thinned) and a plot of every metric (``dynamics.png``) are uploaded as the
            trial's artifacts when it ends, shown by ``optuna-dashboard --artifact-dir DIR``.

    Raises ``ValueError`` for a fraction outside (0, 1], a regressor trained at another
    fraction, or a ``dataset`` lacking features the regressor reads (naming them).
    """

    def __init__(
        self,
        trial: optuna.trial.Trial,
        *,
        total_steps: int | None = None,
        fraction: float = 0.5,
        primary: str | None = None,
        regressor: EarlyStopRegressor | None = None,
        dataset: DatasetProfile | Mapping[str, float] | None = None,
        max_points: int = 2000,
        checkpoint: bool = True,
        artifact_store: Any = None,
    ) -> None:
        if not 0.0 < fraction <= 1.0:
            raise ValueError(f"fraction must be in (0, 1], got {fraction!r}.")
        if regressor is not None and not math.isclose(regressor.fraction, fraction):
            raise ValueError(
                f"The regressor was trained on dynamics cut at {regressor.fraction:g} of "
                f"training, but the hook stops at {fraction:g}; use the same fraction (a "
                "prior serves several: prior.regressor_for(fraction))."
            )
        self.features = dict(
            dataset.features if isinstance(dataset, DatasetProfile) else dataset or {}
        )
        missing = [
            f
            for f in (regressor.used_dataset_features if regressor is not None else [])
            if f not in self.features
        ]
        if missing:
            raise ValueError(
                f"The early-stop regressor reads {len(missing)} dataset feature(s) the hook was "
                f"not given: {missing[:10]}. Pass dataset=DatasetProfile.from_files(...) "
                "computed the same way as the prior's corpus (or a mapping holding them), with "
                "NaN for features truly unknown."
            )
        self.trial = trial
        self.fraction = 1.0 if PROMOTED_FROM_ATTR in trial.user_attrs else fraction
        self.primary = primary
        self.regressor = regressor
        self.max_points = max_points
        self.checkpoint = checkpoint
        self.artifact_store = artifact_store
        self.dynamics: TrainingDynamics | None = None
        self.stopped_early = False
        self.pruned = False
        self._reported: set[int] = set()
        if total_steps is not None:
            self.start(total_steps)

    def start(self, total_steps: int) -> None:
        """Set the planned length (done by the constructor or the trainer callback).

        A promoted trial resuming from a checkpoint continues the dynamics recorded so far.
        """
        self.dynamics = TrainingDynamics(total_steps=total_steps)
        earlier = self.trial.user_attrs.get(DYNAMICS_ATTR)
        if resume_checkpoint(self.trial) is not None and earlier is not None:
            self.dynamics.metrics = TrainingDynamics.from_json(earlier).metrics

    @property
    def stop_step(self) -> int | None:
        """The step training stops at, ``None`` when it runs to the end."""
        if self.dynamics is None:
            return None
        cut = stop_step(self.dynamics.total_steps, self.fraction)
        return cut if cut < self.dynamics.total_steps else None

    def report(
        self, step: int, metrics: Mapping[str, Any], *, intermediate: float | None = None
    ) -> bool:
        """Record the numeric ``metrics`` logged at ``step``; True when training should stop.

        The intermediate value reported to Optuna is ``intermediate`` when given (as is),
        otherwise the primary metric (when it is among ``metrics``) oriented like the study
        (module docstring); one per step. Other values that are not numbers (a trainer's
        text logs) are skipped.

        Raises:
            TypeError: the primary metric is among ``metrics`` but is neither a number nor
                ``None`` (not logged at this step), e.g. the string ``"0.5"``, which would
                leave the trial without a learning curve.
        """
        if self.dynamics is None:
            raise RuntimeError(
                "AutoPipeEarlyStop does not know the planned training length: pass "
                "total_steps=..., or use hook.callback() with a trainer."
            )
        if self.primary is None:
            self.primary = next((m for m in PRIMARY_DEFAULTS if m in metrics), None)
        logged = metrics.get(self.primary)
        if logged is not None and scalar(logged) is None:
            raise TypeError(
                f"Metric {self.primary!r} at step {step} is {logged!r} "
                f"({type(logged).__name__}), not a number: report it as a float "
                f"(e.g. float(value)) so the trial keeps its learning curve."
            )
        self.dynamics.record(step, metrics)
        value = self._oriented(scalar(logged)) if intermediate is None else intermediate
        if isinstance(value, int | float) and math.isfinite(value) and step not in self._reported:
            self.trial.report(float(value), step=int(step))
            self._reported.add(int(step))
        return self.should_stop(step)

    def _oriented(self, value: Any) -> Any:
        if not isinstance(value, int | float) or self.primary is None:
            return value
        maximize = self.trial.study.direction == optuna.study.StudyDirection.MAXIMIZE
        return -value if maximize == bool(_LOWER_IS_BETTER.search(self.primary)) else value

    def should_stop(self, step: int) -> bool:
        """True at or after the stop step."""
        cut = self.stop_step
        self.stopped_early = self.stopped_early or (cut is not None and step >= cut)
        return self.stopped_early

    def prune(self) -> None:
        """Mark the trial as pruned by the study's pruner (``finish`` then raises)."""
        self.pruned = True

    def write(self, *, fidelity: float | None = None) -> None:
        """Write the dynamics, fidelity and (after an early stop) the proxy to the trial.

        The default fidelity: after the hook's early stop or a pruner, the share of the
        planned training done, ``min(last step, stop step) / total_steps``; otherwise 1, a
        full result, whatever step the run ended at (a run that converged, or that the
        trainer's own ``EarlyStoppingCallback`` ended, stopped on its own terms).
        ``fidelity`` overrides it for objectives that know better (e.g. a run cut short by
        a budget); 1 or more also cancels an early stop reached on the run's last step.
        """
        if self.dynamics is None:
            return
        if fidelity is not None and fidelity >= 1.0:
            self.stopped_early = False  # reached the stop step on its last step: complete
        trial, dynamics = self.trial, self.dynamics
        if fidelity is None:
            reached = min(dynamics.last_step, self.stop_step or dynamics.total_steps)
            partial = self.stopped_early or self.pruned
            fidelity = reached / dynamics.total_steps if partial else 1.0
        trial.set_user_attr(DYNAMICS_ATTR, dynamics.to_json(max_points=self.max_points))
        trial.set_user_attr("fidelity", fidelity)
        if self.artifact_store is not None:
            self._upload_dynamics()
        if self.stopped_early:
            trial.set_user_attr(STOP_STEP_ATTR, self.stop_step)
            trial.set_user_attr(FRACTION_ATTR, self.fraction)
            if self.regressor is not None and not self.pruned:
                self._write_proxy()
            self._write_note()

    def _upload_dynamics(self) -> None:
        """The full dynamics and their plot as the trial's artifacts (``artifact_store``)."""
        assert self.dynamics is not None
        with tempfile.TemporaryDirectory() as folder:
            record, plot = Path(folder) / "dynamics.json", Path(folder) / "dynamics.png"
            record.write_text(self.dynamics.to_json(), encoding="utf-8")
            self.dynamics.save_plot(plot, stop_step=self.stop_step if self.stopped_early else None)
            for path in (record, plot):
                optuna.artifacts.upload_artifact(
                    artifact_store=self.artifact_store,
                    file_path=str(path),
                    study_or_trial=self.trial,
                )

    def _write_note(self) -> None:
        """The trial's dashboard note with what the early stop observed (``notes.py``)."""
        from optuna_autopipe import notes  # notes reads this module's attrs: imported late

        trials = self.trial.study.get_trials(deepcopy=False)
        frozen = next(t for t in trials if t.number == self.trial.number)
        body = notes.trial_note(frozen, trials, self.trial.study.direction)
        notes.save(self.trial.study, self.trial, body)

    def _write_proxy(self) -> None:
        assert self.regressor is not None
        config = dict(self.trial.params)
        prediction = self.regressor.predict([config], self.features, [self.dynamics])
        mean, variance = float(prediction.mean[0]), float(prediction.variance[0])
        self.trial.set_user_attr(PROXY_VARIANCE_ATTR, variance)
        if self.regressor.target == "direct":
            self.trial.set_user_attr(PROXY_ATTR, mean)
            return
        self.trial.set_user_attr(RESIDUAL_ATTR, mean)
        prior_score = self.trial.user_attrs.get(PRIOR_SCORE_ATTR)
        if prior_score is not None:
            self.trial.set_user_attr(PROXY_ATTR, float(prior_score) + mean)

    def finish(self, *, fidelity: float | None = None) -> None:
        """``write``, then raise ``optuna.TrialPruned`` after the hook's early stop or a
        pruner; otherwise return (a full-fidelity result unless ``fidelity`` < 1 says not)."""
        self.write(fidelity=fidelity)
        if self.pruned:
            raise optuna.TrialPruned("pruned by the study's pruner")
        if self.stopped_early:
            assert self.dynamics is not None
            raise optuna.TrialPruned(
                f"early-stopped at step {self.stop_step} of {self.dynamics.total_steps} "
                f"(fraction {self.fraction:g}); proxy in user attrs"
            )

    def callback(self) -> TrainerCallback:
        """A ``transformers.TrainerCallback`` feeding this hook (see the module docstring)."""
        return _trainer_callback(self)


def _trainer_callback(hook: AutoPipeEarlyStop) -> TrainerCallback:
    from transformers import TrainerCallback

    class EarlyStopCallback(TrainerCallback):
        def on_train_begin(self, args, state, control, **kwargs):  # type: ignore[no-untyped-def]
            if hook.dynamics is None:
                hook.start(state.max_steps)
            if hook.primary is None:
                hook.primary = "eval_loss" if args.eval_strategy != "no" else "loss"

        def on_step_end(self, args, state, control, **kwargs):  # type: ignore[no-untyped-def]
            if hook.should_stop(state.global_step):
                control.should_training_stop = True
                control.should_log = True
                # Add to what the trainer's schedule asked for at this step, never cancel it.
                control.should_evaluate = control.should_evaluate or args.eval_strategy != "no"
                control.should_save = control.should_save or hook.checkpoint

        def on_log(self, args, state, control, logs=None, **kwargs):  # type: ignore[no-untyped-def]
            step = state.global_step
            logged = {k: v for k, v in (logs or {}).items() if not _BOOKKEEPING.search(k)}
            if hook.report(step, logged):
                control.should_training_stop = True
            elif step < state.max_steps and hook.trial.should_prune():
                hook.prune()
                control.should_training_stop = True

        def on_save(self, args, state, control, **kwargs):  # type: ignore[no-untyped-def]
            if hook.stopped_early:
                path = f"{args.output_dir}/checkpoint-{state.global_step}"
                hook.trial.set_user_attr(CHECKPOINT_ATTR, path)

    return EarlyStopCallback()


def promote(study: optuna.Study, trial: optuna.trial.FrozenTrial) -> None:
    """Enqueue ``trial``'s configuration for a full-fidelity run (resuming when it can).

    The new trial carries ``autopipe:promoted_from`` (the trial number) and, when the early
    stop saved one, ``autopipe:checkpoint``; the objective reads it back with
    ``resume_checkpoint(trial)`` and passes it to ``trainer.train(resume_from_checkpoint=...)``.
    """
    attrs: dict[str, Any] = {PROMOTED_FROM_ATTR: trial.number}
    if CHECKPOINT_ATTR in trial.user_attrs:
        attrs[CHECKPOINT_ATTR] = trial.user_attrs[CHECKPOINT_ATTR]
        attrs[DYNAMICS_ATTR] = trial.user_attrs.get(DYNAMICS_ATTR)
    study.enqueue_trial(trial.params, user_attrs=attrs, skip_if_exists=False)


def stopped_early(trial: optuna.trial.FrozenTrial) -> bool:
    """Whether ``trial`` ended PRUNED by the hook's early stop (not by a pruner)."""
    return trial.state == optuna.trial.TrialState.PRUNED and STOP_STEP_ATTR in trial.user_attrs


def diverged(trial: optuna.trial.FrozenTrial) -> bool:
    """Whether ``trial`` was early-stopped after its run diverged: the last value it logged of
    a metric named like a loss (``loss``, ``perplexity``, ``error``, ``nll``) is NaN or
    infinite. Such a stop says nothing about the configuration's final score; the sampler
    counts it as a failure (``failures.py``)."""
    record = trial.user_attrs.get(DYNAMICS_ATTR)
    return stopped_early(trial) and isinstance(record, str) and _diverged(record)


@functools.lru_cache(maxsize=4096)
def _diverged(record: str) -> bool:
    try:
        metrics = TrainingDynamics.from_json(record).metrics
    except ValueError:
        return False
    return any(
        series and not math.isfinite(series[-1][1])
        for name, series in metrics.items()
        if _LOWER_IS_BETTER.search(name)
    )


def verify(study: optuna.Study, params: Mapping[str, Any]) -> optuna.trial.FrozenTrial | None:
    """The full-fidelity result of ``params`` (e.g. ``sampler.recommend(study)``), or ``None``
    after enqueuing one full-fidelity run of it.

    A trial "of ``params``" agrees with every value in ``params``. When the study already
    holds a full-fidelity result of it (a COMPLETE trial whose ``fidelity`` attr is absent or
    1, with a finite value), the best such trial is returned and nothing is enqueued: the
    configuration is verified already. Otherwise, when an early-stopped trial of it exists, it
    is promoted (and resumes from its checkpoint), else a fresh full run is enqueued; the new
    trial carries ``autopipe:promoted_from``, which objectives read as "run at full
    fidelity", and ``None`` is returned (run it with ``study.optimize(objective,
    n_trials=1)``).
    """
    sign = 1.0 if study.direction == optuna.study.StudyDirection.MAXIMIZE else -1.0
    done = [
        (sign * t.value, t)
        for t in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,))
        if agrees(t, params) and full_fidelity_result(t)
    ]
    if done:
        return max(done, key=lambda pair: pair[0])[1]
    for trial in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.PRUNED,)):
        if stopped_early(trial) and agrees(trial, params):
            promote(study, trial)
            return None
    study.enqueue_trial(dict(params), user_attrs={PROMOTED_FROM_ATTR: None}, skip_if_exists=False)
    return None


def agrees(trial: optuna.trial.FrozenTrial, params: Mapping[str, Any]) -> bool:
    """Whether ``trial`` ran, runs or will run with every value of ``params`` (a WAITING
    trial's values are its enqueued fixed parameters)."""
    values = {**trial.system_attrs.get("fixed_params", {}), **trial.params}
    return all(name in values and values[name] == v for name, v in params.items())


def full_fidelity_result(trial: optuna.trial.FrozenTrial) -> bool:
    """Whether ``trial`` is a full-fidelity result: COMPLETE, its ``fidelity`` user attr
    absent or 1, with a finite value."""
    return (
        trial.state == optuna.trial.TrialState.COMPLETE
        and float(trial.user_attrs.get("fidelity", 1.0)) >= 1.0
        and trial.value is not None
        and math.isfinite(trial.value)
    )


def resume_checkpoint(trial: optuna.trial.Trial) -> str | None:
    """The checkpoint a promoted trial resumes from (``None``: train from scratch)."""
    if PROMOTED_FROM_ATTR not in trial.user_attrs:
        return None
    return trial.user_attrs.get(CHECKPOINT_ATTR)


def proxy_of(trial: optuna.trial.FrozenTrial) -> tuple[float, float] | None:
    """(proxy, variance) recorded on an early-stopped trial, ``None`` when it has none.

    The proxy is ``autopipe:proxy``, else s(x) + r̂ from ``autopipe:prior_score`` and
    ``autopipe:residual``; non-finite values count as none.
    """
    attrs = trial.user_attrs
    proxy = attrs.get(PROXY_ATTR)
    if proxy is None and RESIDUAL_ATTR in attrs and PRIOR_SCORE_ATTR in attrs:
        proxy = attrs[PRIOR_SCORE_ATTR] + attrs[RESIDUAL_ATTR]
    variance = attrs.get(PROXY_VARIANCE_ATTR)
    if proxy is None or variance is None or not np.isfinite([proxy, variance]).all():
        return None
    return float(proxy), float(variance)
