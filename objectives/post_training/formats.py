"""The eight answer formats a completion may end with, and answer checking.

Formats (name: rendered for answer X -> what ``extract_answer`` takes):

- answer: ``Answer: X`` -> the rest of the line
- boxed: ``\\boxed{X}`` -> the text inside the braces
- bold: ``**Answer: X**`` -> the text between ``Answer:`` and the closing ``**``
- sentence: ``The answer is X.`` -> the rest of the line, one trailing period dropped
- final: ``Final answer: X`` -> the rest of the line
- tag: ``<answer>X</answer>`` -> the text between the tags
- hashes: ``#### X`` -> the rest of the line
- brackets: ``[[X]]`` -> the text inside the brackets

Keywords match case-insensitively. SFT completions end with ``Answer: X``; each RL prompt
asks for one of the eight formats; the lm-eval prompt asks for ``Answer: X``
(``EVAL_ANSWER_REGEX``).
"""

from __future__ import annotations

import re
import string
from dataclasses import dataclass


@dataclass(frozen=True)
class AnswerFormat:
    """A format: ``template`` holds ``{answer}``; ``instruction`` asks a model to use it."""

    name: str
    instruction: str
    template: str

    def render(self, answer: str) -> str:
        """The template with ``answer`` in place of ``{answer}``."""
        return self.template.replace("{answer}", answer)


def _format(name: str, shown: str, template: str) -> AnswerFormat:
    instruction = f"At the end of your response, output {shown} where X is your chosen answer."
    return AnswerFormat(name, instruction, template)


#: The instruction is the paper's (appendix C.1) with the format shown for X.
ANSWER_FORMATS: tuple[AnswerFormat, ...] = (
    _format("answer", "Answer: X", "Answer: {answer}"),
    _format("boxed", "\\boxed{X}", "\\boxed{{answer}}"),
    _format("bold", "**Answer: X**", "**Answer: {answer}**"),
    _format("sentence", "The answer is X.", "The answer is {answer}."),
    _format("final", "Final answer: X", "Final answer: {answer}"),
    _format("tag", "<answer>X</answer>", "<answer>{answer}</answer>"),
    _format("hashes", "#### X", "#### {answer}"),
    _format("brackets", "[[X]]", "[[{answer}]]"),
)
#: What SFT prompts of the mini datasets and evaluation prompts ask for.
ANSWER_INSTRUCTION = ANSWER_FORMATS[0].instruction

# One alternative per format, each with one named group. Where two formats can start at the
# same place ("**Answer: X**" also contains "Answer: X"), the more specific one comes first.
_FORMAT_PATTERN = re.compile(
    "|".join(
        (
            r"\*\*Answer:[ \t]*(?P<bold>[^\n*]+?)[ \t]*\*\*",
            r"Final answer:[ \t]*(?P<final>[^\n]*)",
            r"Answer:[ \t]*(?P<answer>[^\n]*)",
            r"\\boxed\{(?P<boxed>[^{}\n]*)\}",
            r"The answer is[ \t]+(?P<sentence>[^\n]*?)\.?[ \t]*(?=\n|$)",
            r"<answer>(?P<tag>.*?)</answer>",
            r"####[ \t]*(?P<hashes>[^\n]*)",
            r"\[\[(?P<brackets>[^\[\]\n]*)\]\]",
        )
    ),
    re.IGNORECASE | re.DOTALL,
)

#: For lm-eval's ``regex`` filter (``re.compile(p).findall(text)[0]``): the rest of the line
#: after the last "Answer:" in the text (one match, one group; the filter strips it). The eval
#: prompt asks the model to end with "Answer: X".
EVAL_ANSWER_REGEX = r"\A[\s\S]*Answer:[ \t]*([^\n]*)"

_PUNCTUATION = str.maketrans("", "", string.punctuation)


def extract_answer(text: str) -> str | None:
    """The answer (stripped) of the last format occurrence in ``text`` with a non-empty answer,
    unwrapped if it holds a format itself ("Answer: \\boxed{4}" gives "4"); None if none."""
    found = None
    for match in _FORMAT_PATTERN.finditer(text):
        answer = next(value for value in match.groupdict().values() if value is not None).strip()
        if answer:
            found = answer
    return None if found is None else extract_answer(found) or found


def normalize_answer(text: str) -> str:
    """Lower-case, ASCII punctuation dropped, whitespace collapsed and stripped."""
    return " ".join(text.lower().translate(_PUNCTUATION).split())


def is_correct(completion: str, gold: str) -> bool:
    """Whether the extracted answer equals ``gold`` after ``normalize_answer``."""
    answer = extract_answer(completion)
    return answer is not None and normalize_answer(answer) == normalize_answer(gold)
