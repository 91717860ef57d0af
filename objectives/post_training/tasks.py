"""Synthetic reasoning tasks at tiny scale, their JSONL datasets, and the JSONL reader.

Each task draws an ``Example`` (prompt, one-line reasoning, answer) from a ``random.Random`` at
a difficulty level 0, 1, 2, ...; texts stay short (under ~300 characters and ~60 words up to
level 3) with a small vocabulary, for byte-level BPE models with 256 positions. Tasks
(``TASKS``, name = style):

- compare: "Which option is the largest?" over lines "A. 37" .. "D. 45" -> a letter
  (level 0: three 2-digit options; 1: four; 2: four close 3-digit options, largest or
  smallest; 3+: the same with 4 digits)
- arithmetic: "What is 23 + 58 - 17?" -> an integer >= 0, reasoning gives the partial sums
  (terms below 100; level 0: two terms; 1: three; 2: four; 3: four below 1000; 4+: five)
- retrieval: "Context: the box of ann is red. ..." + "Question: what color is the box of
  bob?" -> a color; distractors share the name or the object (2, 4, 6, 7 facts at 0, 1, 2, 3+)
- yesno: "Is 47 greater than 52?", "Is 23 + 19 even?" -> yes / no (level 0: one number
  below 1000; 1, 2: two, three 2-digit terms; 3+: four 3-digit terms)
- sequence: "Next number: 3, 7, 11, 15, ?" -> the next term of an arithmetic progression,
  three to five terms shown (level 0: rising by 1-9; 1: 2-digit terms, steps +-2..19;
  2: 3-digit terms, steps +-11..99; 3+: 4-digit terms, steps +-11..199)

A dataset may mix tasks (``write_dataset(("compare", "yesno"), ...)``: each example's task drawn
uniformly) and may come from an imperfect teacher (``Teacher``): a systematic answer swap in
some SFT completions, which SFT learns and the accuracy reward of RL can correct.

Files (``write_dataset``): ``sft.jsonl`` records ``{"prompt", "completion"}`` with completion
``"<reasoning>\\nAnswer: <answer>"``; ``rl.jsonl`` and the eval benchmarks
``eval/test.jsonl`` (same level) and, unless ``hard=False``, ``eval/hard.jsonl`` (level + 1; the
same names for every task, so that the meta-features of benchmark overlap mean the same across
datasets) records ``{"prompt", "answer"}``.
"""

from __future__ import annotations

import json
import os
import random
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any


@dataclass(frozen=True)
class Example:
    """One problem: ``completion`` is the SFT target, reasoning then ``Answer: <answer>``."""

    prompt: str
    reasoning: str
    answer: str

    @property
    def completion(self) -> str:
        return f"{self.reasoning}\nAnswer: {self.answer}"


@dataclass(frozen=True)
class TaskSpec:
    """A task: ``make(rng, level)`` draws one example at difficulty ``level`` (0, 1, 2, ...)."""

    name: str
    style: str
    make: Callable[[random.Random, int], Example]


@dataclass(frozen=True, kw_only=True)
class Teacher:
    """An imperfect SFT teacher: for an example whose gold answer is a key of ``swaps``, with
    probability ``error`` its completion ends with ``Answer: swaps[gold]`` (the reasoning stays
    right). RL prompts and evaluation keep the gold answers."""

    swaps: Mapping[str, str]
    error: float

    def __post_init__(self) -> None:
        if not 0.0 <= self.error <= 1.0:
            raise ValueError(f"Teacher error must be in [0, 1], got {self.error!r}.")
        if self.error > 0 and not self.swaps:
            raise ValueError("A teacher with error > 0 needs swaps, e.g. {'A': 'B'}.")
        if any(wrong == gold for gold, wrong in self.swaps.items()):
            raise ValueError(f"Teacher swaps must change the answer, got {dict(self.swaps)}.")

    def teach(self, example: Example, rng: random.Random) -> Example:
        """The completion this teacher writes for ``example`` (``rng`` decides the errors)."""
        wrong = self.swaps.get(example.answer)
        if wrong is None or rng.random() >= self.error:
            return example
        return Example(example.prompt, example.reasoning, wrong)


@dataclass(frozen=True)
class DatasetFiles:
    """The files ``write_dataset`` wrote."""

    sft: Path
    rl: Path
    eval: tuple[Path, ...]


_LETTERS = "ABCD"
_NAMES = ("ann", "bob", "eve", "tom", "sam", "liz", "max", "kim")
_OBJECTS = ("box", "cup", "hat", "bag", "pen")
_COLORS = ("red", "blue", "green", "pink", "gray", "black", "white", "brown")


def _compare(rng: random.Random, level: int) -> Example:
    count = 3 if level == 0 else 4
    if level <= 1:
        values = rng.sample(range(10, 100), count)
    else:
        # Values from a narrow window (20 of 900, 200 of 9000): leading digits mostly tie.
        low = 10 ** min(level, 3)
        width = low // 10 * 2
        start = rng.randrange(low, 10 * low - width)
        values = rng.sample(range(start, start + width), count)
    largest = level <= 1 or rng.random() < 0.5
    best = max(values) if largest else min(values)
    letter = _LETTERS[values.index(best)]
    options = "\n".join(f"{_LETTERS[i]}. {v}" for i, v in enumerate(values))
    word = "largest" if largest else "smallest"
    prompt = f"Which option is the {word}?\n{options}"
    reasoning = f"The {word} of {', '.join(map(str, values))} is {best}, option {letter}."
    return Example(prompt, reasoning, letter)


def _terms(rng: random.Random, count: int, high: int) -> tuple[str, list[str], int]:
    """An expression of ``count`` terms in 1..high-1 joined by + and - (never below zero), its
    partial sums ("23 + 58 = 81") and its value."""
    total = rng.randrange(1, high)
    expression, steps = str(total), []
    for _ in range(count - 1):
        term = rng.randrange(1, high)
        op = "-" if term <= total and rng.random() < 0.5 else "+"
        result = total - term if op == "-" else total + term
        expression += f" {op} {term}"
        steps.append(f"{total} {op} {term} = {result}")
        total = result
    return expression, steps, total


def _arithmetic(rng: random.Random, level: int) -> Example:
    count = min(level + 2, 4) if level < 4 else 5
    expression, steps, value = _terms(rng, count, 100 if level < 3 else 1000)
    return Example(f"What is {expression}?", ". ".join(steps) + ".", str(value))


def _retrieval(rng: random.Random, level: int) -> Example:
    count = min(2 + 2 * level, 7)
    name, obj = rng.choice(_NAMES), rng.choice(_OBJECTS)
    others = [(n, o) for n in _NAMES for o in _OBJECTS if (n, o) != (name, obj)]
    near = [pair for pair in others if pair[0] == name or pair[1] == obj]
    # At least one distractor shares the name or the object with the question.
    pairs = [(name, obj), rng.choice(near)]
    pairs += rng.sample([p for p in others if p != pairs[1]], count - 2)
    rng.shuffle(pairs)
    colors = {pair: rng.choice(_COLORS) for pair in pairs}
    facts = " ".join(f"the {o} of {n} is {colors[n, o]}." for n, o in pairs)
    prompt = f"Context: {facts}\nQuestion: what color is the {obj} of {name}?"
    answer = colors[name, obj]
    return Example(prompt, f"the {obj} of {name} is {answer}.", answer)


def _yesno(rng: random.Random, level: int) -> Example:
    # Level 0 asks about one number below 1000: enough distinct parity questions for eval.
    high = 100 if level in (1, 2) else 1000
    expression, steps, value = _terms(rng, min(level + 1, 4), high)
    if rng.random() < 0.5:
        parity = rng.choice(("even", "odd"))
        question = f"Is {expression} {parity}?"
        holds = (value % 2 == 0) == (parity == "even")
        verdict = f"{value} is {'even' if value % 2 == 0 else 'odd'}"
    else:
        threshold = max(0, value + rng.choice([d for d in range(-15, 16) if d]))
        if threshold == value:
            threshold += 1
        relation = rng.choice(("greater", "less"))
        question = f"Is {expression} {relation} than {threshold}?"
        holds = (value > threshold) == (relation == "greater")
        verdict = f"{value} is {'greater' if value > threshold else 'less'} than {threshold}"
    answer = "yes" if holds else "no"
    return Example(
        question, " ".join([*(f"{s}." for s in steps), f"{verdict}, so {answer}."]), answer
    )


# Per level from 1 (the last row serves every higher level): step sizes and the term range.
_SEQUENCE_LEVELS = (((2, 19), 0, 100), ((11, 99), 100, 1000), ((11, 199), 1000, 10000))


def _sequence(rng: random.Random, level: int) -> Example:
    shown = rng.randint(3, 5)
    if level == 0:
        step, start = rng.randint(1, 9), rng.randrange(0, 200)
    else:
        steps, low, high = _SEQUENCE_LEVELS[min(level, 3) - 1]
        step = rng.randint(*steps) * rng.choice((1, -1))
        # Every term, the answer included, stays in low..high-1.
        start = rng.randrange(low + max(0, -step) * shown, high - max(0, step) * shown)
    terms = [start + i * step for i in range(shown + 1)]
    sign = "+" if step > 0 else "-"
    reasoning = (
        f"{terms[1]} - {terms[0]} = {step}, so the step is {step}. "
        f"{terms[-2]} {sign} {abs(step)} = {terms[-1]}."
    )
    prompt = f"Next number: {', '.join(map(str, terms[:-1]))}, ?"
    return Example(prompt, reasoning, str(terms[-1]))


TASKS: dict[str, TaskSpec] = {
    spec.name: spec
    for spec in (
        TaskSpec("compare", "compare", _compare),
        TaskSpec("arithmetic", "arithmetic", _arithmetic),
        TaskSpec("retrieval", "retrieval", _retrieval),
        TaskSpec("yesno", "yesno", _yesno),
        TaskSpec("sequence", "sequence", _sequence),
    )
}


def _draw(
    spec: TaskSpec, rng: random.Random, level: int, n: int, exclude: set[str] | None = None
) -> list[Example]:
    """``n`` examples; with ``exclude``, distinct prompts not in it (``exclude`` is updated)."""
    if exclude is None:
        return [spec.make(rng, level) for _ in range(n)]
    examples: list[Example] = []
    for _ in range(50 * n + 1000):
        example = spec.make(rng, level)
        if example.prompt not in exclude:
            exclude.add(example.prompt)
            examples.append(example)
            if len(examples) == n:
                return examples
    raise ValueError(
        f"Task {spec.name!r} at difficulty {level} has too few distinct prompts for {n} "
        "evaluation examples unseen in training; lower n_eval or raise the difficulty."
    )


def _write_jsonl(path: Path, records: Iterable[dict[str, str]]) -> Path:
    """Write one JSON object per line through a temporary file and a rename."""
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(path.name + ".partial")
    with partial.open("w", encoding="utf-8") as handle:
        handle.writelines(json.dumps(record) + "\n" for record in records)
    os.replace(partial, path)
    return path


def mixture(tasks: Sequence[str]) -> TaskSpec:
    """A task drawing each example from one of ``tasks``, uniformly (one task: itself)."""
    if not tasks:
        raise ValueError(f"A dataset needs at least one task; choose from {sorted(TASKS)}.")
    for task in tasks:
        if task not in TASKS:
            raise ValueError(f"Unknown task {task!r}; choose from {sorted(TASKS)}.")
    specs = [TASKS[t] for t in tasks]
    if len(specs) == 1:
        return specs[0]
    return TaskSpec(
        "+".join(tasks), "mixture", lambda rng, level: rng.choice(specs).make(rng, level)
    )


def write_dataset(
    task: str | Sequence[str],
    out_dir: str | Path,
    *,
    n_sft: int = 512,
    n_rl: int = 128,
    n_eval: int = 100,
    difficulty: int = 1,
    seed: int = 0,
    teacher: Teacher | None = None,
    hard: bool = True,
) -> DatasetFiles:
    """Write ``task``'s SFT, RL and eval files (module docstring) under ``out_dir``.

    ``task``: a task name or several (a mixture, ``mixture``). Each split has its own random
    stream derived from ``seed``; eval prompts are distinct and appear neither in the SFT nor
    in the RL prompts. ``teacher`` writes the SFT completions (default: always right).
    ``hard=False``: ``eval/test.jsonl`` only (no level + 1 benchmark).
    """
    spec = mixture([task] if isinstance(task, str) else list(task))
    if min(n_sft, n_rl, n_eval) < 1:
        raise ValueError(f"n_sft, n_rl and n_eval must be >= 1, got {n_sft}, {n_rl}, {n_eval}.")
    if difficulty < 0:
        raise ValueError(f"difficulty must be >= 0, got {difficulty}.")
    out = Path(out_dir)

    def rng(split: str) -> random.Random:
        return random.Random(f"{spec.name}/{split}/{seed}")

    sft = _draw(spec, rng("sft"), difficulty, n_sft)
    rl = _draw(spec, rng("rl"), difficulty, n_rl)
    seen = {e.prompt for e in sft + rl}
    test = _draw(spec, rng("test"), difficulty, n_eval, seen)
    benchmarks = {"test": test}
    if hard:
        benchmarks["hard"] = _draw(spec, rng("hard"), difficulty + 1, n_eval, seen)
    if teacher is not None:
        errors = rng("teacher")
        sft = [teacher.teach(e, errors) for e in sft]
    return DatasetFiles(
        sft=_write_jsonl(
            out / "sft.jsonl", ({"prompt": e.prompt, "completion": e.completion} for e in sft)
        ),
        rl=_write_jsonl(out / "rl.jsonl", ({"prompt": e.prompt, "answer": e.answer} for e in rl)),
        eval=tuple(
            _write_jsonl(
                out / "eval" / f"{name}.jsonl",
                ({"prompt": e.prompt, "answer": e.answer} for e in examples),
            )
            for name, examples in benchmarks.items()
        ),
    )


def read_jsonl(path: str | Path, *, kind: str, required: tuple[str, ...]) -> list[dict[str, Any]]:
    """The records of a JSONL file (blank lines skipped); each must be an object whose
    ``required`` keys hold strings. ``kind`` ("SFT", "RL", "eval") names the file in errors."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{kind} data file not found: {path}")
    records = []
    with path.open(encoding="utf-8") as handle:
        for number, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            where = f"{kind} data {path}, line {number}"
            try:
                record = json.loads(line)
            except json.JSONDecodeError as error:
                raise ValueError(f"{where}: invalid JSON ({error.msg}).") from None
            if not isinstance(record, dict):
                raise ValueError(f"{where}: expected a JSON object, got {type(record).__name__}.")
            for key in required:
                if key not in record:
                    raise ValueError(f"{where}: missing key {key!r} (records need {required}).")
                if not isinstance(record[key], str):
                    raise ValueError(
                        f"{where}: {key!r} must be a string, got {type(record[key]).__name__}."
                    )
            records.append(record)
    if not records:
        raise ValueError(f"{kind} data {path} has no records.")
    return records
