"""optuna-autopipe: dataset-conditioned configuration search for LLM post-training pipelines."""

__version__ = "0.1.0"
