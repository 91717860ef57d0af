"""The pipeline's search space (paper, Table 3), at real and at tiny scale.

Parameter names follow the paper's appendix: ``base_model``, ``sft_epoch``, ``sft_batch``
(effective batch, sequences), ``sft_lr``, ``rl_batch`` (effective batch, completions),
``rl_lr``, ``rl_beta`` (KL weight), ``rl_rollouts`` (completions per prompt), ``rl_temp``
(sampling temperature of the rollouts).

The paper lost its learning-rate grids. Ours: SFT {1e-5, 2e-5, 5e-5, 1e-4} (the usual full
fine-tuning range of 1-8B instruct models), RL {1e-6, 3e-6, 1e-5} (GRPO is run an order of
magnitude lower). At tiny scale (randomly initialised models of 0.1-1.1M parameters trained from
scratch on a few hundred examples) SFT learning rates are ~100x higher and batches 4x smaller.
"""

from __future__ import annotations

from optuna.distributions import BaseDistribution, CategoricalDistribution

from objectives.post_training.tiny_models import TINY_PREFIX

PAPER_MODELS = (
    "Qwen/Qwen2.5-1.5B-Instruct",
    "Qwen/Qwen2.5-3B-Instruct",
    "Qwen/Qwen2.5-7B-Instruct",
    "meta-llama/Llama-3.2-1B-Instruct",
    "meta-llama/Llama-3.2-3B-Instruct",
    "meta-llama/Llama-3.1-8B-Instruct",
)
#: What an early stop inside SFT observes (``AutoPipeSampler(early_stop_params=...)``).
SFT_PARAMETERS = ("base_model", "sft_epoch", "sft_batch", "sft_lr")
PARAMETERS = (
    "base_model",
    "sft_epoch",
    "sft_batch",
    "sft_lr",
    "rl_batch",
    "rl_lr",
    "rl_beta",
    "rl_rollouts",
    "rl_temp",
)


def _space(grids: dict[str, tuple]) -> dict[str, BaseDistribution]:
    return {name: CategoricalDistribution(grids[name]) for name in PARAMETERS}


def paper_space() -> dict[str, BaseDistribution]:
    """Table 3 with our learning-rate grids: 6 x 3 x 3 x 4 x 3 x 3 x 3 x 2 x 3 = 69,984 points."""
    return _space(
        {
            "base_model": PAPER_MODELS,
            "sft_epoch": (1, 2, 3),
            "sft_batch": (32, 64, 128),
            "sft_lr": (1e-5, 2e-5, 5e-5, 1e-4),
            "rl_batch": (64, 128, 256),
            "rl_lr": (1e-6, 3e-6, 1e-5),
            "rl_beta": (0.0, 0.05, 0.1),
            "rl_rollouts": (8, 16),
            "rl_temp": (0.7, 0.9, 1.1),
        }
    )


def tiny_space(
    *,
    rl_lr: tuple[float, ...] = (1e-5, 1e-4, 1e-3),
    base_models: tuple[str, ...] = ("llama-0.1m", "llama-0.6m", "llama-1.1m"),
) -> dict[str, BaseDistribution]:
    """The same space for the local tiny models: 3 x 3 x 3 x 3 x 3 x 3 x 3 x 2 x 3 = 13,122.

    ``base_models``: tiny model names (``tiny_models.TINY_MODELS``; corpus v2: the pre-trained
    ``-base`` ones). ``rl_lr``: the GRPO learning rates (corpus v2: 1e-4, 3e-4, 1e-3; in pilots
    of 60 GRPO steps on the 1.1M model, RL gained at 3e-4 and collapsed the model at 1e-3 and
    above)."""
    return _space(
        {
            "base_model": tuple(TINY_PREFIX + name for name in base_models),
            "sft_epoch": (1, 2, 3),
            "sft_batch": (8, 16, 32),
            "sft_lr": (1e-3, 3e-3, 1e-2),
            "rl_batch": (16, 32, 64),
            "rl_lr": rl_lr,
            "rl_beta": (0.0, 0.05, 0.1),
            "rl_rollouts": (4, 8),
            "rl_temp": (0.7, 0.9, 1.1),
        }
    )
