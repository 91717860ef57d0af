"""A real LLM post-training pipeline (SFT, then GRPO, then lm-eval) as an AutoPipe objective."""
