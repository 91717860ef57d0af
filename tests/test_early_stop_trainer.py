"""AutoPipeEarlyStop as a transformers TrainerCallback, on a real tiny Trainer (CPU, seconds)."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import numpy as np
import optuna
import pytest
from optuna.trial import TrialState

from optuna_autopipe.dynamics import DYNAMICS_ATTR, TrainingDynamics
from optuna_autopipe.early_stop import (
    CHECKPOINT_ATTR,
    PROMOTED_FROM_ATTR,
    PROXY_ATTR,
    PROXY_VARIANCE_ATTR,
    STOP_STEP_ATTR,
    AutoPipeEarlyStop,
    promote,
    resume_checkpoint,
)

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

MAX_STEPS = 20
VOCAB = 32


@pytest.fixture(autouse=True)
def _one_thread():
    """Intra-op threads only slow a model this small down (about tenfold on two cores)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


class _Tokens(torch.utils.data.Dataset):
    """``n`` random sequences of 8 tokens (fixed seed), labels = inputs (causal LM)."""

    def __init__(self, n, seed):
        self.ids = torch.randint(0, VOCAB, (n, 8), generator=torch.Generator().manual_seed(seed))

    def __len__(self):
        return len(self.ids)

    def __getitem__(self, i):
        return {"input_ids": self.ids[i], "labels": self.ids[i]}


class _StepCounter(transformers.TrainerCallback):
    """The optimizer steps a ``train()`` call actually executes."""

    def __init__(self):
        self.steps = []

    def on_step_end(self, args, state, control, **kwargs):
        self.steps.append(state.global_step)


class _ConstantRegressor:
    """Stands in for a direct ``EarlyStopRegressor``: predicts 1.5 ± 0.25, keeps its inputs."""

    fraction = 0.5
    target = "direct"
    used_dataset_features = ("rows",)

    def __init__(self):
        self.dynamics = []

    def predict(self, configs, features, dynamics):
        self.dynamics.extend(dynamics)
        return SimpleNamespace(mean=np.array([1.5]), variance=np.array([0.25]))


class _TinyRun:
    """Objective: a 1-layer GPT-2 trained by a real ``Trainer`` fed to the hook's callback.

    Every call trains from the same seed in ``output_dir`` (resuming when the trial was
    promoted), appends ``(global_step, executed steps)`` to ``runs`` and returns the last value
    of the hook's primary metric. ``training_args`` override the ``TrainingArguments``;
    ``callbacks`` are the trainer's other callbacks.
    """

    def __init__(
        self,
        output_dir,
        *,
        fraction,
        evaluate=True,
        hook_options=None,
        callbacks=(),
        **training_args,
    ):
        self.output_dir = output_dir
        self.fraction = fraction
        self.evaluate = evaluate
        self.hook_options = hook_options or {}
        self.callbacks = list(callbacks)
        self.training_args = training_args
        self.runs = []

    def __call__(self, trial):
        lr = trial.suggest_float("lr", 1e-4, 1e-2, log=True)
        torch.manual_seed(0)
        config = transformers.GPT2Config(
            n_layer=1,
            n_head=2,
            n_embd=16,
            vocab_size=VOCAB,
            n_positions=16,
            bos_token_id=0,
            eos_token_id=0,
        )
        args = transformers.TrainingArguments(
            **{
                "output_dir": str(self.output_dir),
                "max_steps": MAX_STEPS,
                "logging_steps": 1,
                "per_device_train_batch_size": 4,
                "learning_rate": lr,
                "lr_scheduler_type": "cosine",
                "warmup_steps": 2,
                "eval_strategy": "steps" if self.evaluate else "no",
                "eval_steps": 5,
                "save_strategy": "no",
                "report_to": [],
                "use_cpu": True,
                "disable_tqdm": True,
                **self.training_args,
            }
        )
        hook = AutoPipeEarlyStop(trial, fraction=self.fraction, **self.hook_options)
        counter = _StepCounter()
        trainer = transformers.Trainer(
            model=transformers.GPT2LMHeadModel(config),
            args=args,
            train_dataset=_Tokens(64, seed=1),
            eval_dataset=_Tokens(16, seed=2) if self.evaluate else None,
            callbacks=[hook.callback(), counter, *self.callbacks],
        )
        trainer.train(resume_from_checkpoint=resume_checkpoint(trial))
        self.runs.append((trainer.state.global_step, counter.steps))
        hook.finish()
        return hook.dynamics.metrics[hook.primary][-1][1]


def _run_trial(objective, *, study=None, pruner=None):
    """One trial of ``objective`` (in ``study``, else a new in-memory study); that trial."""
    if study is None:
        study = optuna.create_study(
            sampler=optuna.samplers.RandomSampler(seed=0),
            pruner=pruner or optuna.pruners.NopPruner(),
        )
    study.optimize(objective, n_trials=1)
    return study.trials[-1]


def _dynamics(trial):
    return TrainingDynamics.from_json(trial.user_attrs[DYNAMICS_ATTR])


def _steps(dynamics, metric):
    return [step for step, _ in dynamics.metrics[metric]]


def test_the_callback_stops_a_real_trainer_at_half_and_records_every_metric(tmp_path):
    regressor = _ConstantRegressor()
    run = _TinyRun(
        tmp_path, fraction=0.5, hook_options={"regressor": regressor, "dataset": {"rows": 64.0}}
    )
    trial = _run_trial(run)

    assert run.runs == [(10, list(range(1, 11)))]  # stopped at ceil(0.5 · 20)
    assert trial.state == TrialState.PRUNED
    dynamics = _dynamics(trial)
    assert dynamics.total_steps == MAX_STEPS
    assert {"loss", "grad_norm", "learning_rate", "eval_loss"} <= set(dynamics.metrics)
    assert not any("runtime" in m or "per_second" in m for m in dynamics.metrics)
    assert "epoch" not in dynamics.metrics and "total_flos" not in dynamics.metrics
    for metric in ("loss", "grad_norm", "learning_rate"):
        assert _steps(dynamics, metric) == list(range(1, 11))
    assert _steps(dynamics, "eval_loss") == [5, 10]  # the stop evaluates (here on schedule too)
    assert dynamics.last_step == 10
    assert all(np.isfinite(v) for _, v in dynamics.metrics["loss"])
    # The primary metric of a trainer that evaluates is eval_loss, not the first logged loss.
    assert trial.intermediate_values == pytest.approx(dict(dynamics.metrics["eval_loss"]))
    assert trial.user_attrs["fidelity"] == 0.5 and trial.user_attrs[STOP_STEP_ATTR] == 10
    checkpoint = Path(trial.user_attrs[CHECKPOINT_ATTR])
    assert checkpoint == tmp_path / "checkpoint-10"
    assert (checkpoint / "trainer_state.json").is_file()
    assert sorted(p.name for p in tmp_path.glob("checkpoint-*")) == ["checkpoint-10"]
    # An early stop with a regressor records its proxy from the dynamics at the stop.
    assert trial.user_attrs[PROXY_ATTR] == 1.5 and trial.user_attrs[PROXY_VARIANCE_ATTR] == 0.25
    assert [d.last_step for d in regressor.dynamics] == [10]


def test_a_promoted_trial_resumes_from_the_checkpoint_and_continues_the_dynamics(tmp_path):
    study = optuna.create_study(
        sampler=optuna.samplers.RandomSampler(seed=0), pruner=optuna.pruners.NopPruner()
    )
    stopped = _run_trial(_TinyRun(tmp_path, fraction=0.5), study=study)
    assert stopped.state == TrialState.PRUNED
    promote(study, stopped)
    run = _TinyRun(tmp_path, fraction=1.0)
    full = _run_trial(run, study=study)

    assert run.runs == [(MAX_STEPS, list(range(11, 21)))]  # resumed at 10, steps 1-10 not redone
    assert full.state == TrialState.COMPLETE and full.number == stopped.number + 1
    assert full.params == stopped.params
    assert full.user_attrs[PROMOTED_FROM_ATTR] == stopped.number
    assert resume_checkpoint(full) == str(tmp_path / "checkpoint-10")
    dynamics = _dynamics(full)
    assert dynamics.total_steps == MAX_STEPS
    assert _steps(dynamics, "loss") == list(range(1, 21))  # the stopped run's 1-10, then 11-20
    assert _steps(dynamics, "eval_loss") == [5, 10, 15, 20]
    assert dynamics.metrics["loss"][:10] == _dynamics(stopped).metrics["loss"]
    assert full.value == pytest.approx(dynamics.metrics["eval_loss"][-1][1], rel=1e-6)
    assert sorted(full.intermediate_values) == [15, 20]
    assert full.user_attrs["fidelity"] == 1.0 and STOP_STEP_ATTR not in full.user_attrs

    # Weights, optimizer, schedule and data order came back: an uninterrupted run agrees.
    straight = optuna.create_study(pruner=optuna.pruners.NopPruner())
    straight.enqueue_trial(stopped.params)
    reference = _dynamics(_run_trial(_TinyRun(tmp_path / "straight", fraction=1.0), study=straight))
    assert dict(dynamics.metrics["loss"]) == pytest.approx(
        dict(reference.metrics["loss"]), rel=1e-4
    )
    assert full.value == pytest.approx(straight.trials[0].value, rel=1e-4)


class _PruneFromStep3(optuna.pruners.BasePruner):
    """Prunes once a trial has reported at step 3; remembers the steps it was asked at."""

    def __init__(self):
        self.asked_at = []

    def prune(self, study, trial):
        self.asked_at.append(trial.last_step)
        return trial.last_step is not None and trial.last_step >= 3


def test_the_study_pruner_is_consulted_and_a_pruned_run_gets_no_proxy(tmp_path):
    pruner = _PruneFromStep3()
    options = {"regressor": _ConstantRegressor(), "dataset": {"rows": 64.0}}
    run = _TinyRun(tmp_path, fraction=0.5, evaluate=False, hook_options=options)
    trial = _run_trial(run, pruner=pruner)

    assert run.runs == [(3, [1, 2, 3])]  # well before the early-stop point 10
    assert set(pruner.asked_at) == {1, 2, 3}
    assert trial.state == TrialState.PRUNED
    assert sorted(trial.intermediate_values) == [1, 2, 3]
    assert _dynamics(trial).last_step == 3
    assert trial.user_attrs["fidelity"] == pytest.approx(3 / MAX_STEPS)
    for attr in (PROXY_ATTR, PROXY_VARIANCE_ATTR, STOP_STEP_ATTR, CHECKPOINT_ATTR):
        assert attr not in trial.user_attrs
    assert not list(tmp_path.glob("checkpoint-*"))


def test_without_eval_loss_the_train_loss_is_the_primary_metric(tmp_path):
    run = _TinyRun(tmp_path, fraction=0.5, evaluate=False)
    trial = _run_trial(run)

    assert run.runs == [(10, list(range(1, 11)))]
    assert trial.state == TrialState.PRUNED
    dynamics = _dynamics(trial)
    assert not [metric for metric in dynamics.metrics if metric.startswith("eval_")]
    assert {"loss", "grad_norm", "learning_rate"} <= set(dynamics.metrics)
    assert trial.intermediate_values == pytest.approx(dict(dynamics.metrics["loss"]))
    assert sorted(trial.intermediate_values) == list(range(1, 11))
    assert trial.user_attrs[CHECKPOINT_ATTR] == str(tmp_path / "checkpoint-10")


@pytest.mark.parametrize("scheduled_save", [False, True])
def test_checkpoint_false_saves_nothing_extra_but_keeps_a_scheduled_save(tmp_path, scheduled_save):
    schedule = {"save_strategy": "steps", "save_steps": 10} if scheduled_save else {}
    run = _TinyRun(
        tmp_path, fraction=0.5, evaluate=False, hook_options={"checkpoint": False}, **schedule
    )
    trial = _run_trial(run)

    assert run.runs[0][0] == 10 and trial.state == TrialState.PRUNED
    saved = sorted(p.name for p in tmp_path.glob("checkpoint-*"))
    assert saved == (["checkpoint-10"] if scheduled_save else [])
    expected = str(tmp_path / "checkpoint-10") if scheduled_save else None
    assert trial.user_attrs.get(CHECKPOINT_ATTR) == expected


def test_a_trainer_stopped_by_its_own_early_stopping_callback_is_a_full_result(tmp_path):
    """EarlyStoppingCallback ends the run at its first evaluation without a large gain, long
    before the hook's stop at 15: the hook did not stop it, so the trial is a full result."""
    stopper = transformers.EarlyStoppingCallback(
        early_stopping_patience=1, early_stopping_threshold=100.0
    )
    run = _TinyRun(tmp_path, fraction=0.75, callbacks=[stopper], metric_for_best_model="eval_loss")
    trial = _run_trial(run)

    stopped_at = run.runs[0][0]
    assert stopped_at < 15 and _dynamics(trial).last_step == stopped_at
    assert trial.state == TrialState.COMPLETE
    assert trial.user_attrs["fidelity"] == 1.0 and STOP_STEP_ATTR not in trial.user_attrs
