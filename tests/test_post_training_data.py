"""The post-training pipeline's data side: answer formats, GRPO rewards, synthetic tasks and
their JSONL files."""

from __future__ import annotations

import itertools
import json
import random
import re

import pytest

from objectives.post_training.formats import (
    ANSWER_FORMATS,
    EVAL_ANSWER_REGEX,
    extract_answer,
    is_correct,
    normalize_answer,
)
from objectives.post_training.rewards import (
    FORMAT_REWARD,
    accuracy_reward,
    completion_text,
    format_reward,
)
from objectives.post_training.tasks import TASKS, Example, Teacher, read_jsonl, write_dataset


@pytest.mark.parametrize("fmt", ANSWER_FORMATS, ids=lambda f: f.name)
@pytest.mark.parametrize("answer", ["B", "42", "yes", "red"])
def test_every_format_round_trips(fmt, answer):
    text = f"Some reasoning.\n{fmt.render(answer)}"
    assert extract_answer(text) == answer
    assert extract_answer(text + "\n") == answer
    assert is_correct(text, answer.lower())
    assert is_correct(f"Some reasoning.\n{fmt.render(answer + '.')}", f" {answer.upper()} ")
    assert not is_correct(text, "other")


def test_eight_distinct_formats_each_named_in_its_instruction():
    assert len(ANSWER_FORMATS) == 8
    assert (
        len({f.name for f in ANSWER_FORMATS}) == len({f.render("X") for f in ANSWER_FORMATS}) == 8
    )
    for fmt in ANSWER_FORMATS:
        assert fmt.render("X") in fmt.instruction


def test_matching_ignores_case_and_punctuation():
    assert is_correct("**Answer: B.**", "b")
    assert is_correct("final ANSWER: Red!", "red")
    assert normalize_answer("  The  Blue,\tbox. ") == "the blue box"


def test_the_last_occurrence_wins_and_nested_formats_unwrap():
    assert extract_answer("Answer: A\nno wait\n\\boxed{C}") == "C"
    assert extract_answer("[[7]] hmm <answer>8</answer> so Answer: 9") == "9"
    assert extract_answer("The answer is 12. Final answer: 13") == "13"
    assert extract_answer("Answer: \\boxed{42}") == "42"
    assert extract_answer("**Answer:** B") == "** B"
    assert is_correct("**Answer:** B", "B")


@pytest.mark.parametrize("text", ["", "B", "the result is 42", "Answer:", "\\boxed{}"])
def test_no_format_means_no_answer_and_no_reward(text):
    assert extract_answer(text) is None
    assert not is_correct(text, "42")
    assert format_reward([text]) == [0.0]
    assert accuracy_reward([text], answer=["42"]) == [0.0]


@pytest.mark.parametrize("text", ["Answer::::::", "#### ...", "[[?!]]", "Answer: \\boxed{-}"])
def test_a_format_holding_only_punctuation_earns_no_format_reward(text):
    # GRPO on the tiny models collapsed to "Answer:::..." when this earned the format reward
    assert format_reward([text]) == [0.0]
    assert accuracy_reward([text], answer=["42"]) == [0.0]


def test_rewards_take_strings_and_chat_messages():
    right, wrong = "7 + 5 = 12.\nAnswer: 12", "7 + 5 = 13.\n\\boxed{13}"
    chat = [[{"role": "assistant", "content": c}] for c in (right, wrong, "no idea")]
    for completions in ([right, wrong, "no idea"], chat):
        assert format_reward(completions, prompts=["p"] * 3) == [FORMAT_REWARD, FORMAT_REWARD, 0]
        assert accuracy_reward(completions, answer=["12"] * 3, prompts=["p"] * 3) == [1, 0, 0]
    assert completion_text([{"role": "user", "content": "q"}, chat[0][0]]) == right
    with pytest.raises(ValueError):
        accuracy_reward([right, wrong], answer=["12"])


def test_eval_regex_takes_the_answer_after_the_last_answer_line():
    completion = "Answer: A is wrong.\nThe largest of 3, 9 is 9, option B.\nAnswer: B"
    assert re.findall(EVAL_ANSWER_REGEX, completion) == ["B"]
    assert re.findall(EVAL_ANSWER_REGEX, completion + "  \n")[0].strip() == "B"
    assert re.findall(EVAL_ANSWER_REGEX, "Answer: 42\nbecause 40 + 2 = 42.") == ["42"]
    assert re.findall(EVAL_ANSWER_REGEX, "no answer here") == []
    extraction = pytest.importorskip("lm_eval.filters.extraction")
    regex_filter = extraction.RegexFilter(regex_pattern=EVAL_ANSWER_REGEX)
    assert list(regex_filter.apply([[completion, "none"]], [{}])) == [["B", "[invalid]"]]


def _check_compare(example: Example) -> None:
    lines = example.prompt.splitlines()
    values = {line[0]: int(line[3:]) for line in lines[1:]}
    pick = max if "largest" in lines[0] else min
    assert lines[1][0] == "A" and len(values) in (3, 4)
    assert example.answer == pick(values, key=values.__getitem__)


def _check_arithmetic(example: Example) -> None:
    expression = example.prompt.removeprefix("What is ").removesuffix("?")
    assert set(expression) <= set("0123456789 +-")
    assert int(example.answer) == eval(expression) >= 0


def _check_retrieval(example: Example) -> None:
    context, question = example.prompt.split("\n")
    facts = dict(re.findall(r"the (\w+ of \w+) is (\w+)\.", context))
    key = re.fullmatch(r"Question: what color is the (\w+ of \w+)\?", question)[1]
    assert example.answer == facts[key]


def _check_yesno(example: Example) -> None:
    parts = re.fullmatch(
        r"Is ([\d +-]+?) (even|odd|greater than \d+|less than \d+)\?", example.prompt
    )
    value, claim = eval(parts[1]), parts[2].split()
    holds = {
        "even": lambda: value % 2 == 0,
        "odd": lambda: value % 2 == 1,
        "greater": lambda: value > int(claim[-1]),
        "less": lambda: value < int(claim[-1]),
    }[claim[0]]()
    assert example.answer == ("yes" if holds else "no")


def _check_sequence(example: Example) -> None:
    terms = [int(t) for t in example.prompt.removeprefix("Next number: ").split(", ")[:-1]]
    steps = {b - a for a, b in itertools.pairwise(terms)}
    assert len(steps) == 1 and len(terms) >= 3
    assert int(example.answer) == terms[-1] + steps.pop() >= 0


_CHECKS = {
    "compare": _check_compare,
    "arithmetic": _check_arithmetic,
    "retrieval": _check_retrieval,
    "yesno": _check_yesno,
    "sequence": _check_sequence,
}


@pytest.mark.parametrize("name", sorted(TASKS))
def test_tasks_are_deterministic_correct_and_short(name):
    spec = TASKS[name]
    assert spec.name == name and spec.style in _CHECKS
    for level in range(4):
        examples = [spec.make(random.Random(level), level) for _ in range(2)]
        assert examples[0] == examples[1]
        rng = random.Random(100 + level)
        for _ in range(50):
            example = spec.make(rng, level)
            _CHECKS[spec.style](example)
            assert example.completion == f"{example.reasoning}\nAnswer: {example.answer}"
            assert is_correct(example.completion, example.answer)
            text = f"{example.prompt}\n{example.completion}"
            assert len(text) < 300 and len(text.split()) <= 60


def test_five_styles():
    assert {spec.style for spec in TASKS.values()} == set(_CHECKS)


@pytest.mark.parametrize("name", sorted(TASKS))
def test_write_dataset_writes_disjoint_splits(tmp_path, name):
    files = write_dataset(name, tmp_path / "a", n_sft=64, n_rl=16, n_eval=20, difficulty=0)
    assert files.sft == tmp_path / "a" / "sft.jsonl" and files.rl == tmp_path / "a" / "rl.jsonl"
    assert [p.name for p in files.eval] == ["test.jsonl", "hard.jsonl"]
    assert all(p.parent == tmp_path / "a" / "eval" for p in files.eval)
    sft = read_jsonl(files.sft, kind="SFT", required=("prompt", "completion"))
    rl = read_jsonl(files.rl, kind="RL", required=("prompt", "answer"))
    test, hard = (read_jsonl(p, kind="eval", required=("prompt", "answer")) for p in files.eval)
    assert [len(sft), len(rl), len(test), len(hard)] == [64, 16, 20, 20]
    assert all(set(r) == {"prompt", "completion"} for r in sft)
    assert all(set(r) == {"prompt", "answer"} for r in rl + test + hard)
    train_prompts = {r["prompt"] for r in sft + rl}
    eval_prompts = [r["prompt"] for r in test + hard]
    assert len(set(eval_prompts)) == 40 and not train_prompts & set(eval_prompts)
    again = write_dataset(name, tmp_path / "b", n_sft=64, n_rl=16, n_eval=20, difficulty=0)
    assert again.sft.read_bytes() == files.sft.read_bytes()
    assert again.eval[1].read_bytes() == files.eval[1].read_bytes()
    other = write_dataset(name, tmp_path / "c", n_sft=64, n_rl=16, n_eval=20, difficulty=0, seed=1)
    assert other.sft.read_bytes() != files.sft.read_bytes()
    assert not list(tmp_path.rglob("*.partial"))
    same_level = write_dataset(
        name, tmp_path / "d", n_sft=64, n_rl=16, n_eval=20, difficulty=0, hard=False
    )
    assert [p.name for p in same_level.eval] == ["test.jsonl"]
    assert same_level.eval[0].read_bytes() == files.eval[0].read_bytes()
    assert not (tmp_path / "d" / "eval" / "hard.jsonl").exists()


def test_write_dataset_rejects_bad_arguments(tmp_path):
    with pytest.raises(ValueError, match="Unknown task 'nope'"):
        write_dataset("nope", tmp_path)
    with pytest.raises(ValueError, match="n_eval"):
        write_dataset("compare", tmp_path, n_eval=0)
    with pytest.raises(ValueError, match="difficulty"):
        write_dataset("compare", tmp_path, difficulty=-1)


def test_a_mixture_draws_from_each_of_its_tasks(tmp_path):
    files = write_dataset(("compare", "yesno"), tmp_path, n_sft=200, n_rl=8, n_eval=20)
    prompts = [r["prompt"] for r in read_jsonl(files.sft, kind="SFT", required=("prompt",))]
    compare = sum(p.startswith("Which option") for p in prompts)
    assert 60 < compare < 140 and sum(p.startswith("Is ") for p in prompts) == 200 - compare
    with pytest.raises(ValueError, match="at least one task"):
        write_dataset((), tmp_path)


def test_an_imperfect_teacher_swaps_sft_answers_only(tmp_path):
    teacher = Teacher(swaps={"A": "B"}, error=0.7)
    right = write_dataset("compare", tmp_path / "r", n_sft=600, n_rl=50, n_eval=50, difficulty=0)
    wrong = write_dataset(
        "compare", tmp_path / "w", n_sft=600, n_rl=50, n_eval=50, difficulty=0, teacher=teacher
    )
    required = ("prompt", "completion")
    pairs = list(
        zip(
            read_jsonl(right.sft, kind="SFT", required=required),
            read_jsonl(wrong.sft, kind="SFT", required=required),
            strict=True,
        )
    )
    assert all(r["prompt"] == w["prompt"] for r, w in pairs)
    gold_a = [(r, w) for r, w in pairs if r["completion"].endswith("Answer: A")]
    swapped = sum(w["completion"].endswith("Answer: B") for _, w in gold_a)
    assert 0.6 < swapped / len(gold_a) < 0.8  # error 0.7 on the examples whose answer is A
    others = [(r, w) for r, w in pairs if not r["completion"].endswith("Answer: A")]
    assert all(r == w for r, w in others)
    for split in ("rl", "eval"):  # RL and evaluation keep the gold answers
        paths = (right.rl, wrong.rl) if split == "rl" else (right.eval[0], wrong.eval[0])
        assert paths[0].read_text() == paths[1].read_text()
    for swaps, error in (({"A": "B"}, 1.5), ({}, 0.5), ({"A": "A"}, 0.5)):
        with pytest.raises(ValueError, match=r"(?i)teacher"):
            Teacher(swaps=swaps, error=error)


def test_read_jsonl_names_the_problem(tmp_path):
    path = tmp_path / "data.jsonl"
    with pytest.raises(FileNotFoundError, match=re.escape(str(path))):
        read_jsonl(path, kind="SFT", required=("prompt",))
    cases = {
        "": "has no records",
        "\n  \n": "has no records",
        '{"prompt": "p", "answer": "a"}\n{"prompt": \n': "line 2: invalid JSON",
        '{"prompt": "p", "answer": "a"}\n\n{"prompt": "q"}\n': "line 3: missing key 'answer'",
        '{"prompt": "p", "answer": 4}\n': "line 1: 'answer' must be a string",
        '["p", "a"]\n': "line 1: expected a JSON object",
    }
    for text, message in cases.items():
        path.write_text(text)
        with pytest.raises(ValueError, match=re.escape(message)) as error:
            read_jsonl(path, kind="RL", required=("prompt", "answer"))
        assert str(path) in str(error.value) and "RL data" in str(error.value)
    path.write_text(json.dumps({"prompt": "p", "answer": "a", "extra": 1}) + "\n")
    assert read_jsonl(path, kind="RL", required=("prompt", "answer")) == [
        {"prompt": "p", "answer": "a", "extra": 1}
    ]
