"""Evaluation with lm-eval: a suite of benchmarks, score = mean exact-match accuracy.

A benchmark is a local JSONL file of ``{"prompt", "answer"}`` records (turned into an lm-eval
``generate_until`` task named ``autopipe_<file stem>``) or the name of a task registered in
lm-eval (its own prompts and metric; its first metric counts). For local files (paper, C.1):
the prompt is the record's prompt followed by ``instruction`` (none when empty: for data
whose SFT prompts carry no instruction, like the mini datasets); the chat template is applied;
a regex filter takes the answer after the last "Answer:"; exact match ignores case and
punctuation. Decoding is stochastic at ``temperature`` and scores are averaged over ``seeds``
(``temperature=0``: greedy, one run).
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np

from objectives.post_training.formats import ANSWER_INSTRUCTION, EVAL_ANSWER_REGEX
from objectives.post_training.tasks import read_jsonl


@dataclass(frozen=True, kw_only=True)
class EvalSuite:
    """Benchmarks (JSONL paths or lm-eval task names) and how they are decoded."""

    benchmarks: tuple[str | Path, ...]
    seeds: tuple[int, ...] = (0, 1, 2)
    temperature: float = 0.7
    max_gen_toks: int = 64
    instruction: str = ANSWER_INSTRUCTION
    limit: int | None = None
    batch_size: int = 32

    def __post_init__(self) -> None:
        if isinstance(self.benchmarks, str | Path):
            raise TypeError("benchmarks must be a sequence, e.g. (path,), not one path.")
        if not self.benchmarks:
            raise ValueError("EvalSuite needs at least one benchmark (a JSONL path or task name).")
        if not self.seeds:
            raise ValueError("EvalSuite needs at least one seed.")
        for bench in self.benchmarks:
            if _is_file(bench):
                read_jsonl(bench, kind="eval", required=("prompt", "answer"))

    @property
    def runs(self) -> tuple[int, ...]:
        """The seeds actually run (one when decoding is greedy)."""
        return self.seeds if self.temperature > 0 else self.seeds[:1]

    def task_configs(self) -> list[str | dict[str, Any]]:
        return [_local_task(Path(b), self) if _is_file(b) else str(b) for b in self.benchmarks]


def _is_file(bench: str | Path) -> bool:
    return isinstance(bench, Path) or str(bench).endswith(".jsonl")


def _local_task(path: Path, suite: EvalSuite) -> dict[str, Any]:
    generation: dict[str, Any] = {
        "until": [],
        "do_sample": suite.temperature > 0,
        "max_gen_toks": suite.max_gen_toks,
    }
    if suite.temperature > 0:
        generation["temperature"] = suite.temperature
    return {
        "task": f"autopipe_{path.stem}",
        "dataset_path": "json",
        "dataset_kwargs": {"data_files": {"test": str(path.resolve())}},
        "test_split": "test",
        "output_type": "generate_until",
        "doc_to_text": "{{prompt}}" + (f"\n{suite.instruction}" if suite.instruction else ""),
        "doc_to_target": "{{answer}}",
        "generation_kwargs": generation,
        "filter_list": [
            {
                "name": "answer",
                "filter": [
                    {"function": "regex", "regex_pattern": EVAL_ANSWER_REGEX},
                    {"function": "take_first"},
                ],
            }
        ],
        "metric_list": [
            {
                "metric": "exact_match",
                "aggregation": "mean",
                "higher_is_better": True,
                "ignore_case": True,
                "ignore_punctuation": True,
            }
        ],
        "metadata": {"version": 1.0},
    }


def _first_score(metrics: dict[str, Any]) -> float:
    for key, value in metrics.items():
        if "," in key and "stderr" not in key and isinstance(value, int | float):
            return float(value)
    raise ValueError(f"lm-eval returned no score among {sorted(metrics)}.")


def evaluate(model: Any, tokenizer: Any, suite: EvalSuite, *, device: str) -> dict[str, float]:
    """Accuracy per benchmark (averaged over the suite's seeds), keyed by task name."""
    import lm_eval
    from lm_eval.tasks import TaskManager

    logging.getLogger("lm_eval").setLevel(logging.ERROR)
    tasks = suite.task_configs()
    manager = TaskManager(include_defaults=any(isinstance(t, str) for t in tasks))
    lm = _quiet_hflm()(
        pretrained=model,
        tokenizer=tokenizer,
        device=device,
        batch_size=suite.batch_size,
        max_length=getattr(model.config, "max_position_embeddings", None),
    )
    scores: dict[str, list[float]] = {}
    for seed in suite.runs:
        with _quiet_evaluation():
            results = lm_eval.simple_evaluate(
                model=lm,
                tasks=tasks,
                task_manager=manager,
                apply_chat_template=True,
                limit=suite.limit,
                log_samples=False,
                bootstrap_iters=0,
                random_seed=seed,
                numpy_random_seed=seed,
                torch_random_seed=seed,
                verbosity="ERROR",
            )
        for task, metrics in results["results"].items():
            scores.setdefault(task, []).append(_first_score(metrics))
    return {task: float(np.mean(values)) for task, values in scores.items()}


def _quiet_hflm() -> type:
    """lm-eval's ``HFLM`` without its per-request progress bar (``simple_evaluate`` has no
    switch for it)."""
    from lm_eval.models.huggingface import HFLM

    class QuietHFLM(HFLM):
        def generate_until(self, requests, disable_tqdm: bool = True):  # type: ignore[no-untyped-def]
            return super().generate_until(requests, disable_tqdm=True)

    return QuietHFLM


@contextmanager
def _quiet_evaluation() -> Iterator[None]:
    """Silence what ``simple_evaluate`` prints with no switch to turn it off: the progress
    bar ``lm_eval.api.task`` draws while building a task's requests, and git's "fatal: not
    a git repository" from the ``git describe`` lm-eval runs in the working directory to
    record its commit (a result field this project does not read; ``None`` instead)."""
    from unittest import mock

    from tqdm import tqdm

    with (
        mock.patch("lm_eval.api.task.tqdm", partial(tqdm, disable=True)),
        mock.patch("lm_eval.evaluator.get_git_commit_hash", lambda: None),
    ):
        yield


def suite_score(scores: dict[str, float], benchmarks: Sequence[str | Path]) -> float:
    """Mean accuracy over the suite's benchmarks."""
    if len(scores) != len(benchmarks):
        raise ValueError(f"Expected {len(benchmarks)} benchmark scores, got {sorted(scores)}.")
    return float(np.mean(list(scores.values())))
