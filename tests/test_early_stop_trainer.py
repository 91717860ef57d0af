"""AutoPipeEarlyStop as a transformers TrainerCallback, on a real tiny Trainer (CPU, seconds)."""

from __future__ import annotations

from pathlib import Path

import optuna
import pytest
import torch
from optuna.trial import TrialState

from optuna_autopipe.dynamics import DYNAMICS_ATTR, TrainingDynamics
from optuna_autopipe.early_stop import (
    CHECKPOINT_ATTR,
    PROMOTED_FROM_ATTR,
    PROXY_ATTR,
    AutoPipeEarlyStop,
    promote,
    resume_checkpoint,
)

transformers = pytest.importorskip("transformers")
MAX_STEPS = 20


class _Tokens(torch.utils.data.Dataset):
    """Random token sequences of a 32-token vocabulary (a causal LM learns their unigram)."""

    def __init__(self, n: int, seed: int) -> None:
        generator = torch.Generator().manual_seed(seed)
        self.ids = torch.randint(0, 32, (n, 8), generator=generator)

    def __len__(self) -> int:
        return len(self.ids)

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        return {"input_ids": self.ids[i], "labels": self.ids[i]}


class _StepCounter(transformers.TrainerCallback):
    def __init__(self) -> None:
        self.steps: list[int] = []

    def on_step_end(self, args, state, control, **kwargs):
        self.steps.append(state.global_step)


def _objective(out: Path, *, fraction: float, evaluate: bool = True, seen: list | None = None):
    """A tiny GPT-2 SFT-like run with the hook; returns the final eval (or train) loss."""

    def objective(trial: optuna.Trial) -> float:
        lr = trial.suggest_float("lr", 1e-4, 1e-2, log=True)
        torch.manual_seed(0)
        config = transformers.GPT2Config(
            n_layer=1, n_head=2, n_embd=16, vocab_size=32, n_positions=16
        )
        args = transformers.TrainingArguments(
            output_dir=str(out),
            max_steps=MAX_STEPS,
            logging_steps=1,
            per_device_train_batch_size=4,
            learning_rate=lr,
            lr_scheduler_type="cosine",
            warmup_steps=2,
            eval_strategy="steps" if evaluate else "no",
            eval_steps=5,
            save_strategy="no",
            report_to=[],
            use_cpu=True,
            disable_tqdm=True,
        )
        hook = AutoPipeEarlyStop(trial, fraction=fraction)
        counter = _StepCounter()
        trainer = transformers.Trainer(
            model=transformers.GPT2LMHeadModel(config),
            args=args,
            train_dataset=_Tokens(64, seed=1),
            eval_dataset=_Tokens(16, seed=2) if evaluate else None,
            callbacks=[hook.callback(), counter],
        )
        trainer.train(resume_from_checkpoint=resume_checkpoint(trial))
        if seen is not None:
            seen.append((trainer.state.global_step, counter.steps))
        hook.finish()
        metrics = trainer.evaluate() if evaluate else {}
        return float(metrics.get("eval_loss", trainer.state.log_history[-1].get("train_loss", 0)))

    return objective


def _dynamics(trial: optuna.trial.FrozenTrial) -> TrainingDynamics:
    return TrainingDynamics.from_json(trial.user_attrs[DYNAMICS_ATTR])


def test_the_callback_stops_a_real_trainer_at_half_and_records_every_metric(tmp_path):
    study = optuna.create_study(pruner=optuna.pruners.NopPruner())
    seen: list = []
    study.optimize(_objective(tmp_path, fraction=0.5, seen=seen), n_trials=1)
    trial = study.trials[0]
    assert seen[0][0] == 10 and seen[0][1] == list(range(1, 11))
    assert trial.state == TrialState.PRUNED
    dynamics = _dynamics(trial)
    assert dynamics.total_steps == MAX_STEPS
    assert {"loss", "grad_norm", "learning_rate", "eval_loss"} <= set(dynamics.metrics)
    assert max(step for series in dynamics.metrics.values() for step, _ in series) == 10
    assert [step for step, _ in dynamics.metrics["eval_loss"]] == [5, 10]  # incl. at the stop
    assert list(trial.intermediate_values) == [5, 10]  # primary metric: eval_loss
    assert trial.user_attrs["fidelity"] == 0.5 and trial.user_attrs["autopipe:stop_step"] == 10
    checkpoint = Path(trial.user_attrs[CHECKPOINT_ATTR])
    assert checkpoint == tmp_path / "checkpoint-10" and checkpoint.is_dir()


def test_a_promoted_trial_resumes_from_the_checkpoint_and_continues_the_dynamics(tmp_path):
    study = optuna.create_study(pruner=optuna.pruners.NopPruner())
    study.optimize(_objective(tmp_path, fraction=0.5), n_trials=1)
    stopped = study.trials[0]
    promote(study, stopped)
    seen: list = []
    study.optimize(_objective(tmp_path, fraction=1.0, seen=seen), n_trials=1)
    full = study.trials[1]
    assert seen[0][0] == MAX_STEPS and seen[0][1] == list(range(11, 21))  # resumed, not redone
    assert full.state == TrialState.COMPLETE and full.params == stopped.params
    assert full.user_attrs[PROMOTED_FROM_ATTR] == stopped.number
    steps = [step for step, _ in _dynamics(full).metrics["loss"]]
    assert steps[0] <= 10 and steps[-1] == MAX_STEPS and steps == sorted(steps)
    assert full.user_attrs["fidelity"] == 1.0


class _PruneFromStep3(optuna.pruners.BasePruner):
    def prune(self, study, trial) -> bool:
        step = trial.last_step
        return step is not None and step >= 3


def test_the_study_pruner_is_consulted_and_a_pruned_run_gets_no_proxy(tmp_path):
    study = optuna.create_study(pruner=_PruneFromStep3())
    seen: list = []
    study.optimize(_objective(tmp_path, fraction=0.5, evaluate=False, seen=seen), n_trials=1)
    trial = study.trials[0]
    assert seen[0][0] == 3 and trial.state == TrialState.PRUNED
    assert PROXY_ATTR not in trial.user_attrs and "autopipe:stop_step" not in trial.user_attrs


def test_without_eval_loss_the_train_loss_is_the_primary_metric(tmp_path):
    study = optuna.create_study(pruner=optuna.pruners.NopPruner())
    study.optimize(_objective(tmp_path, fraction=0.5, evaluate=False), n_trials=1)
    trial = study.trials[0]
    assert "eval_loss" not in _dynamics(trial).metrics
    assert list(trial.intermediate_values) == list(range(1, 11))
    losses = dict(_dynamics(trial).metrics["loss"])
    assert trial.intermediate_values[4] == pytest.approx(losses[4])
