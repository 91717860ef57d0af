"""The two training stages: SFT with ``trl.SFTTrainer`` and RL with ``trl.GRPOTrainer``.

Effective batch sizes are met with gradient accumulation: per-device batch
``min(batch, max_device_batch)`` (lowered until it divides ``batch``), accumulation
``batch / per_device``. On CPU both stages run in float32 without activation checkpointing; on
CUDA in bf16 where the card supports it.
"""

from __future__ import annotations

import ast
import logging
import math
import random
import time
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from objectives.post_training.formats import ANSWER_FORMATS
from objectives.post_training.rewards import accuracy_reward, format_reward
from objectives.post_training.tiny_models import resolve_model

#: SFT learning-rate warm-up, as a share of the planned steps (cosine schedule after it).
SFT_WARMUP = 0.1


class Diverged(RuntimeError):
    """The training loss became NaN or infinite."""


@dataclass(frozen=True, kw_only=True)
class Hardware:
    """Where training runs: ``device`` is ``"cpu"`` or ``"cuda"``."""

    device: str
    max_device_batch: int

    @classmethod
    def detect(cls, device: str = "auto", max_device_batch: int | None = None) -> Hardware:
        import torch

        if device == "auto":
            device = "cuda" if torch.cuda.is_available() else "cpu"
        if device not in ("cpu", "cuda"):
            raise ValueError(f"device must be 'auto', 'cpu' or 'cuda', got {device!r}.")
        if device == "cuda" and not torch.cuda.is_available():
            raise ValueError("device='cuda' but torch sees no CUDA device; use device='cpu'.")
        return cls(device=device, max_device_batch=max_device_batch or 32)

    @property
    def bf16(self) -> bool:
        import torch

        return self.device == "cuda" and torch.cuda.is_bf16_supported()

    def trainer_args(self, output_dir: Path, seed: int) -> dict[str, Any]:
        """Arguments shared by both TRL configs."""
        return {
            "output_dir": str(output_dir),
            "seed": seed,
            "use_cpu": self.device == "cpu",
            "bf16": self.bf16,
            "fp16": False,
            _checkpointing_argument(): False,
            "report_to": "none",
            "save_strategy": "no",
            "logging_steps": 1,
            "disable_tqdm": True,
            "dataloader_num_workers": 0,
        }

    def split_batch(self, batch: int, multiple_of: int = 1) -> tuple[int, int]:
        """(per-device batch, accumulation steps) for an effective ``batch``; the per-device
        batch is a multiple of ``multiple_of`` (GRPO's group size)."""
        per_device = max(min(batch, self.max_device_batch), multiple_of)
        while batch % per_device or per_device % multiple_of:
            per_device -= 1
        return per_device, batch // per_device


def _checkpointing_argument() -> str:
    """The trainer argument that turns activation checkpointing off: ``activation_checkpointing``
    where transformers has it (its alias ``gradient_checkpointing`` warns there, and TRL's
    configs set that alias to True by default), ``gradient_checkpointing`` before."""
    from transformers import TrainingArguments

    new = "activation_checkpointing"
    return new if new in TrainingArguments.__dataclass_fields__ else "gradient_checkpointing"


def load_model(name: str, hardware: Hardware) -> tuple[Any, Any]:
    """Model and tokenizer for a hub name, a local folder or ``tiny/<name>``."""
    import torch
    from datasets.utils.logging import disable_progress_bar
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    disable_progress_bar()
    path = resolve_model(name)
    tokenizer = AutoTokenizer.from_pretrained(path)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    dtype = torch.bfloat16 if hardware.bf16 else torch.float32
    model = AutoModelForCausalLM.from_pretrained(path, dtype=dtype)
    return model, tokenizer


class _TiedKeys(logging.Filter):
    """Drops the Trainer's "missing keys" warning on resuming from a checkpoint when every
    missing key names a parameter tied to another one (``tie_word_embeddings``: the
    checkpoint stores the shared tensor once, under the other name, and loading it fills
    both); any other missing key still warns."""

    _PREFIX = "There were missing keys in the checkpoint model loaded:"

    def __init__(self, model: Any) -> None:
        super().__init__()
        names: dict[int, list[str]] = {}
        for name, parameter in model.named_parameters(remove_duplicate=False):
            names.setdefault(id(parameter), []).append(name)
        self.tied = {name for group in names.values() if len(group) > 1 for name in group}

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        if not message.startswith(self._PREFIX):
            return True
        try:
            missing = ast.literal_eval(message[len(self._PREFIX) :].strip().rstrip("."))
        except (ValueError, SyntaxError):
            return True
        return not (missing and set(missing) <= self.tied)


def _train(trainer: Any, stage: str, *, resume_from: str | None = None) -> None:
    """Train without per-step printing (the dynamics go to the trial, not to stdout), then
    raise ``Diverged`` if any logged loss was NaN or infinite."""
    from transformers.trainer_callback import PrinterCallback

    trainer.remove_callback(PrinterCallback)
    tied = _TiedKeys(trainer.model)
    trainer_logger = logging.getLogger("transformers.trainer")
    trainer_logger.addFilter(tied)
    try:
        with warnings.catch_warnings():
            # TRL reads transformers' deprecated `is_gradient_checkpointing` on every generation
            warnings.filterwarnings(
                "ignore",
                message="`is_gradient_checkpointing` is deprecated",
                category=FutureWarning,
            )
            trainer.train(resume_from_checkpoint=resume_from)
    finally:
        trainer_logger.removeFilter(tied)
    for entry in trainer.state.log_history:
        loss = entry.get("loss")
        if isinstance(loss, float) and not math.isfinite(loss):
            raise Diverged(f"{stage} loss became {loss} at step {entry.get('step')}")


def run_sft(
    *,
    model_name: str,
    records: Sequence[dict[str, str]],
    epochs: int,
    batch: int,
    lr: float,
    hardware: Hardware,
    output_dir: Path,
    seed: int,
    callbacks: Sequence[Any] = (),
    resume_from: str | None = None,
    max_length: int | None = None,
) -> tuple[Any, bool]:
    """Fine-tune on ``{"prompt", "completion"}`` records (chat format; loss on the completion).

    Returns (trainer, completed): ``completed`` is False when a callback stopped training
    before its planned end (the early-stop hook). A completed run saves the model and
    tokenizer to ``output_dir / "model"`` (GRPO's reference model is loaded from there).
    """
    from datasets import Dataset
    from trl import SFTConfig, SFTTrainer

    model, tokenizer = load_model(model_name, hardware)
    data = Dataset.from_list(
        [
            {
                "prompt": [{"role": "user", "content": r["prompt"]}],
                "completion": [{"role": "assistant", "content": r["completion"]}],
            }
            for r in records
        ]
    )
    per_device, accumulation = hardware.split_batch(batch)
    config = SFTConfig(
        **hardware.trainer_args(output_dir, seed),
        num_train_epochs=epochs,
        per_device_train_batch_size=per_device,
        gradient_accumulation_steps=accumulation,
        learning_rate=lr,
        lr_scheduler_type="cosine",
        warmup_steps=SFT_WARMUP,
        max_length=max_length or tokenizer.model_max_length,
    )
    trainer = SFTTrainer(
        model=model,
        args=config,
        train_dataset=data,
        processing_class=tokenizer,
        callbacks=list(callbacks),
    )
    _train(trainer, "SFT", resume_from=resume_from)
    completed = trainer.state.global_step >= trainer.state.max_steps
    if completed:
        trainer.save_model(str(output_dir / "model"))  # the tokenizer too (processing_class)
    return trainer, completed


def rl_prompts(records: Sequence[dict[str, str]], seed: int) -> list[dict[str, Any]]:
    """RL records with one of the eight answer-format instructions appended to each prompt
    (drawn with ``seed``, so every format appears about equally often)."""
    rng = random.Random(seed)
    return [
        {
            "prompt": [
                {
                    "role": "user",
                    "content": f"{r['prompt']}\n{rng.choice(ANSWER_FORMATS).instruction}",
                }
            ],
            "answer": r["answer"],
        }
        for r in records
    ]


def _snapshot_callback(
    fractions: Sequence[float], output_dir: Path, saved: dict[float, tuple[Path, float]]
) -> Any:
    """A ``TrainerCallback`` that saves the model (and tokenizer) after ``ceil(f * max_steps)``
    steps for each fraction ``f`` to ``output_dir / "rl-<f>"`` and records in ``saved`` the
    folder and the training seconds up to that step; at the end of training, ``saved[1.0]``
    holds ``output_dir / "model"`` (where the caller saves the final model) and the seconds of
    the whole training, on the same clock."""
    from transformers import TrainerCallback

    at: dict[int, list[float]] = {}
    started = [0.0]

    class SnapshotCallback(TrainerCallback):
        def on_train_begin(self, args, state, control, **kwargs):  # type: ignore[no-untyped-def]
            started[0] = time.perf_counter()
            for f in fractions:
                at.setdefault(max(1, math.ceil(f * state.max_steps)), []).append(f)

        def on_step_end(self, args, state, control, **kwargs):  # type: ignore[no-untyped-def]
            for f in at.get(state.global_step, ()):
                folder = output_dir / f"rl-{f:g}"
                kwargs["model"].save_pretrained(str(folder))
                kwargs["processing_class"].save_pretrained(str(folder))
                saved[f] = (folder, time.perf_counter() - started[0])

        def on_train_end(self, args, state, control, **kwargs):  # type: ignore[no-untyped-def]
            saved[1.0] = (output_dir / "model", time.perf_counter() - started[0])

    return SnapshotCallback()


def run_grpo(
    *,
    model_dir: Path,
    records: Sequence[dict[str, str]],
    batch: int,
    lr: float,
    beta: float,
    rollouts: int,
    temperature: float,
    hardware: Hardware,
    output_dir: Path,
    seed: int,
    max_completion_length: int,
    max_steps: int | None = None,
    snapshots: Sequence[float] = (),
) -> tuple[Any, dict[float, tuple[Path, float]]]:
    """GRPO (Dr. GRPO loss, unscaled rewards) on ``{"prompt", "answer"}`` records, one epoch
    of prompts (``batch / rollouts`` prompts per step) or ``max_steps``; reward =
    format reward + exact-match accuracy. Saves the model to ``output_dir / "model"``.

    ``snapshots``: fractions in (0, 1) of the planned steps after which the model is also
    saved (lower RL fidelities, for multi-fidelity baselines). Returns (trainer, {fraction:
    (model folder, training seconds up to it)}), the final model at fraction 1.
    """
    if any(not 0.0 < f < 1.0 for f in snapshots):
        raise ValueError(f"snapshots must be fractions in (0, 1), got {tuple(snapshots)}.")
    from datasets import Dataset
    from trl import GRPOConfig, GRPOTrainer

    per_device, accumulation = hardware.split_batch(batch, multiple_of=rollouts)
    config = GRPOConfig(
        **hardware.trainer_args(output_dir, seed),
        num_train_epochs=1,
        max_steps=max_steps or -1,
        per_device_train_batch_size=per_device,
        gradient_accumulation_steps=accumulation,
        learning_rate=lr,
        beta=beta,
        num_generations=rollouts,
        temperature=temperature,
        max_completion_length=max_completion_length,
        loss_type="dr_grpo",
        scale_rewards="none",
    )
    model, tokenizer = load_model(str(model_dir), hardware)
    saved: dict[float, tuple[Path, float]] = {}
    trainer = GRPOTrainer(
        model=model,
        reward_funcs=[format_reward, accuracy_reward],
        args=config,
        train_dataset=Dataset.from_list(rl_prompts(records, seed)),
        processing_class=tokenizer,
        callbacks=[_snapshot_callback(snapshots, output_dir, saved)],
    )
    _train(trainer, "GRPO")
    if trainer.state.global_step < trainer.state.max_steps:
        prompts = per_device * accumulation // rollouts
        raise RuntimeError(
            f"GRPO ran {trainer.state.global_step} of its {trainer.state.max_steps} planned "
            f"steps: {len(records)} RL prompts, {prompts} per step (rl_batch {batch} / "
            f"rl_rollouts {rollouts}); give it at least {prompts} RL prompts."
        )
    trainer.save_model(str(output_dir / "model"))  # the tokenizer too (processing_class)
    return trainer, saved
