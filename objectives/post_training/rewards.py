"""GRPO reward functions in TRL's form ``f(completions, **kwargs) -> list[float]``.

A completion is a string or a list of chat messages ``[{"role": "assistant", "content": str}]``
(the last message counts). The gold answers arrive as the dataset column ``answer``, one string
per completion.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from objectives.post_training.formats import extract_answer, is_correct, normalize_answer

#: Reward for ending with any of the eight answer formats, right or wrong.
FORMAT_REWARD = 0.1

Completion = str | Sequence[dict[str, Any]]


def completion_text(completion: Completion) -> str:
    """The text of a completion: the string itself, or the last message's ``content``."""
    if isinstance(completion, str):
        return completion
    if not completion:
        return ""
    content = completion[-1]["content"]
    if not isinstance(content, str):
        raise TypeError(f"Expected message content to be a string, got {type(content).__name__}.")
    return content


def format_reward(completions: Sequence[Completion], **kwargs: Any) -> list[float]:
    """``FORMAT_REWARD`` for each completion with an answer format holding an answer, else 0.

    An answer that ``normalize_answer`` empties (punctuation only, as in "Answer::::") earns
    nothing: otherwise GRPO on small models learns to emit the format alone, which collapses
    accuracy to 0 (seen on the tiny models at RL learning rates >= 1e-3 within 60 steps).
    """
    return [FORMAT_REWARD if _has_answer(completion_text(c)) else 0.0 for c in completions]


def _has_answer(text: str) -> bool:
    answer = extract_answer(text)
    return answer is not None and normalize_answer(answer) != ""


def accuracy_reward(
    completions: Sequence[Completion], answer: Sequence[str], **kwargs: Any
) -> list[float]:
    """1 for each completion whose extracted answer matches its gold ``answer``, else 0."""
    return [
        1.0 if is_correct(completion_text(c), gold) else 0.0
        for c, gold in zip(completions, answer, strict=True)
    ]
