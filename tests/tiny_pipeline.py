"""A small configuration of the real pipeline for tests (a 0.1M-parameter local model)."""

TINY_CONFIG = {
    "base_model": "tiny/llama-0.1m",
    "sft_epoch": 2,
    "sft_batch": 8,
    "sft_lr": 3e-3,
    "rl_batch": 8,
    "rl_lr": 1e-4,
    "rl_beta": 0.05,
    "rl_rollouts": 4,
    "rl_temp": 0.9,
}
