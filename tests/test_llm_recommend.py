"""The LLM-recommendation baselines (paper C.2.1) against a local stub of the
chat-completions API: the request, the prompt, the reply's validation, the warm start, the
errors, and the ``llm-desc`` / ``llm-history`` bench methods end to end. No network."""

from __future__ import annotations

import base64
import contextlib
import hashlib
import json
import logging
import math
import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import numpy as np
import optuna
import pandas as pd
import pytest
from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution

from optuna_autopipe.bench.harness import BenchSpec, run_bench
from optuna_autopipe.bench.job_failures import StudiesFailed
from optuna_autopipe.bench.methods import Context, get_method
from optuna_autopipe.llm_recommend import (
    ChatClient,
    LLMNotConfiguredError,
    LLMReplyError,
    LLMRequestError,
    PastDataset,
    configured_endpoint,
    enqueue_llm_recommendation,
    nearest_datasets,
    recommend,
    validate,
)
from optuna_autopipe.space import suggest

ENV_VARS = (
    "AUTOPIPE_LLM_BASE_URL",
    "AUTOPIPE_LLM_MODEL",
    "AUTOPIPE_LLM_API_KEY",
    "AUTOPIPE_LLM_TIMEOUT",
    "OPENAI_BASE_URL",
    "OPENAI_API_KEY",
)

SPACE = {
    "lr": FloatDistribution(1e-5, 0.1, log=True),
    "dropout": FloatDistribution(0.0, 0.5, step=0.1),
    "batch": IntDistribution(16, 512, log=True),
    "layers": IntDistribution(1, 9, step=2),
    "workers": IntDistribution(1, 64, log=True),
    "width": CategoricalDistribution([16, 64, 256]),
    "beta": CategoricalDistribution([0, 0.05, 0.1]),
    "opt": CategoricalDistribution(["adam", "sgd"]),
}
VALID = {
    "lr": 0.001,
    "dropout": 0.3,
    "batch": 64,
    "layers": 5,
    "workers": 8,
    "width": 64,
    "beta": 0.05,
    "opt": "sgd",
}
FEATURES = {"n_samples": 2000.0, "prompt_len_mean": 81.25, "completion_len_sd": math.nan}
#: A valid NMT (ted-ru-en) configuration except ``bpe`` 8, which is not among 10, 30, 50.
NMT_REPLY = {"bpe": 8, "num_layers": 4, "model_size": 512, "ff_num_hidden": 2048}
NMT_REPLY["initial_lr"] = 0.0006


@dataclass
class Stub:
    """A chat-completions endpoint on 127.0.0.1: records every request, answers from
    ``queue`` (status, body, delay) in order, then ``default`` (a reply's content)."""

    port: int = 0
    requests: list[dict[str, Any]] = field(default_factory=list)
    queue: list[tuple[int, str, float]] = field(default_factory=list)
    default: str = json.dumps(VALID)

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def reply(self, content: str) -> None:
        self.queue.append((200, completion(content), 0.0))

    def prompt(self, index: int = -1) -> str:
        return self.requests[index]["body"]["messages"][0]["content"]


def completion(content: str) -> str:
    message = {"role": "assistant", "content": content}
    return json.dumps({"object": "chat.completion", "choices": [{"index": 0, "message": message}]})


@pytest.fixture(scope="module")
def server() -> Iterator[Stub]:
    stub = Stub()

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            stub.requests.append({"path": self.path, "headers": dict(self.headers), "body": body})
            status, text, delay = (
                stub.queue.pop(0) if stub.queue else (200, completion(stub.default), 0.0)
            )
            time.sleep(delay)
            data = text.encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            with contextlib.suppress(BrokenPipeError, ConnectionResetError):  # client timed out
                self.wfile.write(data)

        def log_message(self, format: str, *args: Any) -> None:
            pass

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    httpd.daemon_threads = True
    stub.port = httpd.server_address[1]
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield stub
    httpd.shutdown()
    httpd.server_close()


@pytest.fixture(autouse=True)
def no_endpoint(monkeypatch: pytest.MonkeyPatch) -> None:
    """Whatever this machine's environment holds, tests start with no endpoint."""
    for name in ENV_VARS:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")


@pytest.fixture
def stub(server: Stub, monkeypatch: pytest.MonkeyPatch) -> Stub:
    """The stub, reset, configured as the endpoint through the environment."""
    server.requests.clear()
    server.queue.clear()
    server.default = json.dumps(VALID)
    monkeypatch.setenv("AUTOPIPE_LLM_BASE_URL", server.base_url)
    monkeypatch.setenv("AUTOPIPE_LLM_MODEL", "stub-model")
    monkeypatch.setenv("AUTOPIPE_LLM_API_KEY", "sk-test")
    return server


def _ask(**kwargs: Any) -> Any:
    return recommend(
        search_space=SPACE,
        features=FEATURES,
        direction="minimize",
        client=ChatClient.from_env(),
        **kwargs,
    )


def test_the_request_carries_model_key_and_a_prompt_with_every_parameter_and_feature(stub):
    recommendation = _ask(metric="eval loss", task_description="Post-train a medical model.")
    (request,) = stub.requests
    assert request["path"] == "/v1/chat/completions"
    assert request["headers"]["Authorization"] == "Bearer sk-test"
    body = request["body"]
    assert body["model"] == "stub-model" and body["temperature"] == 0
    assert [m["role"] for m in body["messages"]] == ["user"]
    prompt = stub.prompt()
    for line in (
        "Post-train a medical model.",
        "Objective: the eval loss of the trained model; lower is better.",
        "- lr: real number from 1e-05 to 0.1, log scale",
        "- dropout: real number from 0.0 to 0.5 in steps of 0.1",
        "- batch: integer from 16 to 512, log scale",
        "- layers: integer from 1 to 9 in steps of 2",
        "- workers: integer from 1 to 64, log scale",
        "- width: one of [16, 64, 256]",
        "- beta: one of [0, 0.05, 0.1]",
        '- opt: one of ["adam", "sgd"]',
        "- n_samples: 2000",
        "- prompt_len_mean: 81.25",
        "- completion_len_sd: unknown",
        '{"lr": <value>, "dropout": <value>, "batch": <value>, "layers": <value>, '
        '"workers": <value>, "width": <value>, "beta": <value>, "opt": <value>}',
    ):
        assert line in prompt.splitlines(), line
    assert "Similar past datasets" not in prompt
    assert recommendation.config == VALID and recommendation.corrections == []
    assert recommendation.variant == "description-only" and recommendation.model == "stub-model"
    assert recommendation.prompt == prompt


def _past(name: str, f1: float, f2: float) -> PastDataset:
    return PastDataset(
        name=name,
        features={"f1": f1, "f2": f2},
        config={**VALID, "batch": 16 * (1 + int(f1))},
        score=10 + f1 + f2 / 10,
    )


#: Standardised over these four (mean 1, s.d. 1 per feature): alpha (-1, -1), delta (-1, 1),
#: gamma (1, -1), beta (1, 1). The target (2, 1.5) standardises to (1, 0.5).
HISTORY = [_past("ds-alpha", 0, 0), _past("ds-delta", 0, 2), _past("ds-gamma", 2, 0)]
HISTORY.append(_past("ds-beta", 2, 2))
TARGET = {"f1": 2.0, "f2": 1.5}


def test_the_nearest_datasets_are_ranked_by_cosine_of_standardised_features():
    ranked = nearest_datasets(TARGET, HISTORY, k=3)
    assert [past.name for past, _ in ranked] == ["ds-beta", "ds-gamma", "ds-delta"]
    cos = 1.5 / (math.sqrt(2) * math.sqrt(1.25))
    assert [s for _, s in ranked] == pytest.approx([cos, 0.5 / 1.5 * cos, -0.5 / 1.5 * cos])


def test_unknown_and_constant_features_count_for_nothing_in_the_similarity():
    history = [
        PastDataset(name="p", features={"a": 0, "b": math.nan, "c": 5}, config={}, score=1),
        PastDataset(name="q", features={"a": 2, "b": math.nan, "c": 5}, config={}, score=1),
        PastDataset(name="r", features={"c": 5}, config={}, score=1),  # "a", "b" unknown
    ]
    # "b" is unknown on every past dataset and "c" constant over them: both are dropped, so
    # only "a" compares (standardised: p -1, q +1, r unknown -> 0).
    ranked = nearest_datasets({"a": 3.0, "b": 7.0, "c": 100.0}, history, k=5)
    assert [(past.name, s) for past, s in ranked] == [("q", 1.0), ("r", 0.0), ("p", -1.0)]
    unknown = nearest_datasets({"a": math.nan, "b": None, "c": math.inf}, history, k=2)
    assert [(past.name, s) for past, s in unknown] == [("p", 0.0), ("q", 0.0)]


def test_the_history_prompt_shows_the_nearest_datasets_in_order_with_their_best(stub):
    recommendation = recommend(
        search_space=SPACE,
        features=TARGET,
        direction="maximize",
        client=ChatClient.from_env(),
        history=HISTORY,
        metric="accuracy",
        k=3,
    )
    prompt = stub.prompt()
    headings = [line for line in prompt.splitlines() if line.startswith("### ")]
    assert headings == [
        "### 1. ds-beta (similarity 0.949)",
        "### 2. ds-gamma (similarity 0.316)",
        "### 3. ds-delta (similarity -0.316)",
    ]
    assert "ds-alpha" not in prompt
    beta = prompt[prompt.index("### 1. ds-beta") : prompt.index("### 2.")]
    assert "- meta-features: f1=2, f2=2" in beta
    assert f"- best configuration: {json.dumps(HISTORY[3].config)}" in beta
    assert "- its accuracy: 12.2" in beta
    assert "its accuracy (higher is better)" in prompt
    assert recommendation.variant == "history-conditioned"
    assert recommendation.neighbours == ["ds-beta", "ds-gamma", "ds-delta"]
    assert recommendation.user_attrs()["autopipe:llm_neighbours"] == recommendation.neighbours


OUT_OF_SPACE = {
    "lr": 1.0,  # above the range: clipped to 0.1
    "dropout": 0.26,  # between steps: 0.3
    "batch": "700",  # a number as a string, above the range: 512
    "layers": 4,  # a half step: halves go up, 5
    "workers": 1.45,  # log int: log(1.45) is nearer log(2) than log(1) (linearly 1)
    "width": 140,  # log-scaled grid (256 >= 10 x 16): 256 (linearly 64)
    "beta": 0.08,  # grid with 0, linear: 0.1
    "opt": "sgd",
    "reasoning": "ignored",
}
CORRECTED = {
    "lr": 0.1,
    "dropout": 0.3,
    "batch": 512,
    "layers": 5,
    "workers": 2,
    "width": 256,
    "beta": 0.1,
    "opt": "sgd",
}


def test_values_outside_the_space_move_to_the_nearest_valid_value_and_are_logged(stub, caplog):
    stub.reply(json.dumps(OUT_OF_SPACE))
    with caplog.at_level(logging.WARNING, logger="optuna_autopipe.llm_recommend"):
        recommendation = _ask()
    assert recommendation.config == pytest.approx(CORRECTED)
    assert type(recommendation.config["batch"]) is int
    assert [(c.param, c.proposed) for c in recommendation.corrections] == [
        (name, OUT_OF_SPACE[name]) for name in CORRECTED if name != "opt"
    ]
    for correction in recommendation.corrections:
        assert correction.chosen == pytest.approx(CORRECTED[correction.param])
        (record,) = [r for r in caplog.records if f"{correction.param}=" in r.getMessage()]
        assert f"{correction.param}={correction.proposed!r}" in record.getMessage()
        assert f"using {correction.chosen!r}" in record.getMessage()
    assert any("'reasoning'" in r.getMessage() for r in caplog.records)


def test_in_space_values_in_other_spellings_are_not_corrections(stub, caplog):
    stub.reply(json.dumps({**VALID, "lr": "1e-3", "dropout": 0.30000000000000004, "beta": "0.05"}))
    with caplog.at_level(logging.WARNING, logger="optuna_autopipe.llm_recommend"):
        recommendation = _ask()
    assert recommendation.config == pytest.approx(VALID) and recommendation.corrections == []
    assert caplog.records == []


@pytest.mark.parametrize("fence", ["```json\n{}\n```", "```\n{}\n```", "  ```JSON {} ```\n"])
def test_a_reply_that_is_one_fenced_json_block_is_accepted(stub, fence):
    stub.reply(fence.replace("{}", json.dumps(VALID, indent=2)))
    assert _ask().config == VALID


#: A reasoning model's thoughts, with a fenced configuration that is not the answer.
THOUGHTS = f"Maybe lr=1.0?\n```json\n{json.dumps({**VALID, 'opt': 'adam'})}\n```\nNo, lower."


@pytest.mark.parametrize(
    "reply",
    [
        f"<think>\n{THOUGHTS}\n</think>\n\n{json.dumps(VALID)}",
        # the chat template ends the prompt with "<think>": the reply starts inside the block
        f"{THOUGHTS}\n</think>\n{json.dumps(VALID)}",
        f"<think>{THOUGHTS}</think>\nHere you go:\n```json\n{json.dumps(VALID)}\n```\nGood luck!",
        f"Here you go:\n```json\n{json.dumps(VALID, indent=2)}\n```\nGood luck!",
    ],
)
def test_a_leading_think_block_and_prose_around_one_fenced_block_are_skipped(stub, reply):
    stub.reply(reply)
    assert _ask().config == VALID


@pytest.mark.parametrize(
    ("reply", "message"),
    [
        ("I would use lr=1e-3 and sgd.", "not a JSON object"),
        (f"Here it is:\n```json\n{json.dumps(VALID)}\n```\nor\n```{{}}```", "2 fenced blocks"),
        (f"<think>a</think><think>b</think>{json.dumps(VALID)}", "not a JSON object"),
        (json.dumps([VALID]), "not a JSON object"),
        (json.dumps({k: v for k, v in VALID.items() if k != "layers"}), "lacks parameter"),
        (json.dumps({**VALID, "opt": "adamw"}), "opt='adamw', which is not one of its choices"),
        (json.dumps({**VALID, "lr": "high"}), "lr='high', which is not a finite number"),
        (json.dumps({**VALID, "width": None}), "width=None, which is not a finite number"),
        (json.dumps({**VALID, "batch": True}), "batch=True, which is not a finite number"),
    ],
)
def test_a_reply_that_is_not_a_configuration_is_an_error_naming_it(stub, reply, message):
    stub.reply(reply)
    study = optuna.create_study()
    with pytest.raises(LLMReplyError, match=message) as error:
        enqueue_llm_recommendation(study, search_space=SPACE, features=FEATURES)
    if "JSON object" in message or "fenced blocks" in message:
        assert repr(reply[:500]) in str(error.value)
    elif "lacks" in message:
        assert "['layers']" in str(error.value)
    assert study.trials == []


def test_enqueue_adds_exactly_one_waiting_trial_with_the_validated_config(stub):
    stub.reply(json.dumps(OUT_OF_SPACE))
    study = optuna.create_study(direction="maximize")
    config = enqueue_llm_recommendation(
        study, search_space=SPACE, features=FEATURES, metric="accuracy"
    )
    assert config == pytest.approx(CORRECTED)
    (trial,) = study.trials
    assert trial.state == optuna.trial.TrialState.WAITING
    assert trial.system_attrs["fixed_params"] == config
    attrs = trial.user_attrs
    assert attrs["autopipe:llm_source"] == "LLM recommendation (description-only)"
    assert attrs["autopipe:llm_model"] == "stub-model"
    assert attrs["autopipe:llm_prompt_sha256"] == hashlib.sha256(stub.prompt().encode()).hexdigest()
    assert [c["param"] for c in attrs["autopipe:llm_corrections"]] == list(CORRECTED)[:-1]
    assert attrs["autopipe:llm_corrections"][0] == {"param": "lr", "proposed": 1.0, "chosen": 0.1}
    assert "autopipe:llm_neighbours" not in attrs
    assert "higher is better" in stub.prompt()

    study.optimize(lambda t: len([suggest(t, name, d) for name, d in SPACE.items()]), 1)
    assert study.trials[0].params == config and len(study.trials) == 1


def test_an_http_error_names_the_url_the_status_and_the_start_of_the_body(stub):
    stub.queue.append((500, "E" * 500 + "TAIL", 0.0))
    with pytest.raises(LLMRequestError) as error:
        _ask()
    message = str(error.value)
    assert f"POST {stub.base_url}/chat/completions failed with HTTP 500" in message
    assert "E" * 500 in message and "TAIL" not in message


def test_a_response_without_a_completion_is_an_error_naming_the_url_and_body(stub):
    stub.queue.append((200, '{"error": "model not loaded"}', 0.0))
    with pytest.raises(LLMRequestError, match="returned no chat completion") as error:
        _ask()
    assert stub.base_url in str(error.value) and "model not loaded" in str(error.value)


def test_a_timeout_and_an_unreachable_endpoint_name_the_url(stub):
    stub.queue.append((200, completion(json.dumps(VALID)), 2.0))
    client = ChatClient(base_url=stub.base_url, model="m", timeout=0.3)
    with pytest.raises(LLMRequestError, match=r"/v1/chat/completions timed out after 0\.3 s"):
        recommend(search_space=SPACE, features=FEATURES, direction="minimize", client=client)
    with socket.socket() as free:
        free.bind(("127.0.0.1", 0))
        port = free.getsockname()[1]
    closed = ChatClient(base_url=f"http://127.0.0.1:{port}/v1/", model="m")
    with pytest.raises(LLMRequestError, match=rf"POST http://127.0.0.1:{port}/v1/chat/completions"):
        recommend(search_space=SPACE, features=FEATURES, direction="minimize", client=closed)


def test_no_endpoint_is_a_clear_error_naming_the_variables(monkeypatch):
    study = optuna.create_study()
    with pytest.raises(LLMNotConfiguredError) as error:
        enqueue_llm_recommendation(study, search_space=SPACE, features=FEATURES)
    message = str(error.value)
    for name in ("AUTOPIPE_LLM_BASE_URL", "OPENAI_BASE_URL", "AUTOPIPE_LLM_MODEL"):
        assert name in message
    assert study.trials == []
    monkeypatch.setenv("OPENAI_BASE_URL", "http://127.0.0.1:9/v1")
    with pytest.raises(LLMNotConfiguredError) as error:
        ChatClient.from_env()
    assert str(error.value).startswith(
        "No LLM endpoint is configured: set AUTOPIPE_LLM_MODEL to the model name, e.g."
    )
    monkeypatch.setenv("AUTOPIPE_LLM_MODEL", "m")
    monkeypatch.setenv("AUTOPIPE_LLM_TIMEOUT", "soon")
    with pytest.raises(ValueError, match="AUTOPIPE_LLM_TIMEOUT='soon' is not a positive number"):
        ChatClient.from_env()


def test_the_environment_order_arguments_then_autopipe_then_openai(monkeypatch):
    monkeypatch.setenv("OPENAI_BASE_URL", "http://openai.example/v1")
    monkeypatch.setenv("OPENAI_API_KEY", "sk-openai")
    monkeypatch.setenv("AUTOPIPE_LLM_MODEL", "m")
    client = ChatClient.from_env()
    assert (client.base_url, client.api_key, client.timeout) == (
        "http://openai.example/v1",
        "sk-openai",
        120.0,
    )
    monkeypatch.setenv("AUTOPIPE_LLM_BASE_URL", "http://autopipe.example/v1")
    monkeypatch.setenv("AUTOPIPE_LLM_API_KEY", "sk-autopipe")
    monkeypatch.setenv("AUTOPIPE_LLM_TIMEOUT", "30")
    client = ChatClient.from_env()
    assert (client.base_url, client.api_key, client.timeout) == (
        "http://autopipe.example/v1",
        "sk-autopipe",
        30.0,
    )
    assert "sk-autopipe" not in repr(client)
    given = ChatClient.from_env(base_url="http://given/v1", model="g", api_key="k", timeout=5)
    assert (given.base_url, given.model, given.api_key, given.timeout) == (
        "http://given/v1",
        "g",
        "k",
        5,
    )


def test_without_a_key_no_authorization_header_is_sent(stub, monkeypatch):
    monkeypatch.delenv("AUTOPIPE_LLM_API_KEY")
    _ask()
    assert "Authorization" not in stub.requests[-1]["headers"]


def test_a_blank_base_url_is_not_configured_and_a_bad_one_is_named(monkeypatch):
    monkeypatch.setenv("AUTOPIPE_LLM_MODEL", "m")
    monkeypatch.setenv("AUTOPIPE_LLM_BASE_URL", "  ")
    with pytest.raises(LLMNotConfiguredError, match=r"set AUTOPIPE_LLM_BASE_URL \(or OPENAI_BASE"):
        ChatClient.from_env()
    monkeypatch.setenv("OPENAI_BASE_URL", " http://openai.example/v1 ")  # blank falls through
    assert ChatClient.from_env().url == "http://openai.example/v1/chat/completions"
    for url in ("localhost:8000/v1", "http://localhost:port/v1"):
        monkeypatch.setenv("AUTOPIPE_LLM_BASE_URL", url)
        with pytest.raises(ValueError, match=rf"'{url}' is not an http\(s\) URL with a host"):
            ChatClient.from_env()
    with pytest.raises(ValueError, match=r"'http://\*\*\*' is not an http\(s\) URL"):
        ChatClient(base_url="http://u:pw@localhost:port/v1", model="m")


@pytest.mark.parametrize("suffix", ["/chat/completions", "/chat/completions/"])
def test_a_base_url_ending_in_the_completions_path_is_used_as_it_is(stub, monkeypatch, suffix):
    monkeypatch.setenv("AUTOPIPE_LLM_BASE_URL", stub.base_url + suffix)
    assert _ask().config == VALID
    assert stub.requests[-1]["path"] == "/v1/chat/completions"


def test_a_query_in_the_base_url_stays_after_the_path(stub, monkeypatch):
    """Azure-style endpoints carry ``?api-version=...``: the path goes before it."""
    monkeypatch.setenv("AUTOPIPE_LLM_BASE_URL", stub.base_url + "?api-version=2024-06-01")
    assert _ask().config == VALID
    assert stub.requests[-1]["path"] == "/v1/chat/completions?api-version=2024-06-01"


def test_user_info_in_the_url_is_sent_as_basic_auth_and_never_shown(stub, monkeypatch):
    base = f"http://alice:s3cret@127.0.0.1:{stub.port}/v1"
    shown = f"http://***@127.0.0.1:{stub.port}/v1/chat/completions"
    client = ChatClient(base_url=base, model="m")
    assert "s3cret" not in repr(client) and "alice" not in repr(client)
    assert shown in repr(client) and client.shown_url == shown
    recommend(search_space=SPACE, features=FEATURES, direction="minimize", client=client)
    (request,) = stub.requests
    assert request["path"] == "/v1/chat/completions"
    assert (
        request["headers"]["Authorization"] == "Basic " + base64.b64encode(b"alice:s3cret").decode()
    )
    stub.queue.append((500, "oops", 0.0))
    with pytest.raises(LLMRequestError) as error:
        client.complete([{"role": "user", "content": "hi"}])
    assert f"POST {shown} failed with HTTP 500" in str(error.value)
    assert "s3cret" not in str(error.value) and "alice" not in str(error.value)
    keyed = ChatClient(base_url=base, model="m", api_key="sk-key")
    keyed.complete([{"role": "user", "content": "hi"}])
    assert stub.requests[-1]["headers"]["Authorization"] == "Bearer sk-key"
    monkeypatch.setenv("AUTOPIPE_LLM_BASE_URL", base)
    assert configured_endpoint()["base_url"] == f"http://***@127.0.0.1:{stub.port}/v1"
    with socket.socket() as free:
        free.bind(("127.0.0.1", 0))
        port = free.getsockname()[1]
    closed = ChatClient(base_url=f"http://alice:s3cret@localhost:{port}/v1", model="m")
    with pytest.raises(LLMRequestError, match=rf"POST http://\*\*\*@localhost:{port}/v1/") as error:
        closed.complete([{"role": "user", "content": "hi"}])
    assert "s3cret" not in str(error.value)


@pytest.mark.parametrize(
    ("past", "message"),
    [
        ({"score": None}, "PastDataset 'ds-x': score=None is not a finite number"),
        ({"score": math.nan}, "PastDataset 'ds-x': score=nan is not a finite number"),
        ({"score": "12.5"}, "PastDataset 'ds-x': score='12.5' is not a finite number"),
        (
            {"features": {"n": 3, "size": "big"}},
            "PastDataset 'ds-x': meta-feature 'size'='big' is not a number",
        ),
    ],
)
def test_a_past_dataset_without_a_finite_score_or_numeric_features_is_refused(past, message):
    fields = {"name": "ds-x", "features": {"n": 3}, "config": VALID, "score": 1.0}
    with pytest.raises(ValueError, match=message):
        PastDataset(**{**fields, **past})


def test_unknown_meta_features_are_allowed_and_a_string_one_is_refused(stub):
    past = PastDataset(
        name="p", features={"n": np.float32(2), "m": None}, config={}, score=np.float64(1)
    )
    with pytest.raises(ValueError, match="The dataset's features: meta-feature 'n'='big'"):
        recommend(
            search_space=SPACE,
            features={"n": "big"},
            direction="minimize",
            client=ChatClient.from_env(),
            history=[past],
        )
    assert stub.requests == []


MIXED = {"accum": CategoricalDistribution([1, 2, None])}


@pytest.mark.parametrize(("proposed", "chosen"), [(2.0, 2), ("2", 2), ("2.0", 2), (None, None)])
def test_a_number_equal_to_a_choice_of_a_mixed_list_is_that_choice(proposed, chosen):
    config, corrections = validate({"accum": proposed}, MIXED)
    assert config == {"accum": chosen} and type(config["accum"]) is type(chosen)
    assert corrections == []


@pytest.mark.parametrize("proposed", [2.5, True, "two"])
def test_a_value_of_a_mixed_list_that_is_no_choice_is_refused(proposed):
    with pytest.raises(LLMReplyError, match=r"which is not one of its choices \[1, 2, None\]"):
        validate({"accum": proposed}, MIXED)


def _nmt_spec(tmp_path, methods: tuple[str, ...], seeds: int) -> BenchSpec:
    return BenchSpec(
        benchmark="nmt",
        methods=methods,
        out=tmp_path,
        budget=2,
        seeds=seeds,
        datasets=("ted-ru-en",),
        workers=1,
    )


@pytest.mark.slow
def test_the_bench_methods_run_end_to_end_asking_once_per_dataset(stub, nmt, tmp_path):
    stub.default = json.dumps(NMT_REPLY)
    outputs = run_bench(_nmt_spec(tmp_path, ("llm-desc", "llm-history"), seeds=2))

    # Two seeds, one query per method: the seeds of a dataset share the recommendation.
    assert len(stub.requests) == 2
    desc, history = (stub.prompt(i) for i in range(2))
    task = nmt.task("ted-ru-en")
    for prompt in (desc, history):
        assert "Benchmark 'nmt', dataset 'ted-ru-en'." in prompt
        assert "- bpe: one of [10, 30, 50]" in prompt and "- max_len: 165" in prompt
        assert "dev_perplexity of the trained model; lower is better" in prompt
    assert "Similar past datasets" not in desc
    offline = nmt.offline("ted-ru-en", "grouped")  # the other families' four datasets
    shown = [line.split()[2] for line in history.splitlines() if line.startswith("### ")]
    assert sorted(shown) == sorted(t.name for t in offline)
    for past in offline:
        configs, scores = past.pool()
        best = configs[int(np.argmin(scores))]  # NMT minimises perplexity
        assert f"best configuration: {json.dumps(best)}" in history
    # The English-target material corpora are closer to ted-ru-en than robust19-en-ja.
    assert shown.index("robust19-en-ja") == 3

    chosen = {**NMT_REPLY, "bpe": 10}
    table = pd.read_csv(outputs.results)
    assert sorted(table.method) == ["llm-desc", "llm-desc", "llm-history", "llm-history"]
    assert (table.n_evals == 1).all() and (table.cost == 1).all()
    assert (table.selected == json.dumps(task.resolve(chosen), sort_keys=True)).all()
    storage = optuna.storages.get_storage(outputs.storage_url)
    for method, prompt in (("llm-desc", desc), ("llm-history", history)):
        study = optuna.load_study(study_name=f"nmt/ted-ru-en/{method}/seed1", storage=storage)
        (trial,) = study.trials
        assert trial.params == chosen and trial.state == optuna.trial.TrialState.COMPLETE
        attrs = study.user_attrs["bench"]["study_attrs"]
        assert attrs["autopipe:llm_model"] == "stub-model"
        assert attrs["autopipe:llm_prompt_sha256"] == hashlib.sha256(prompt.encode()).hexdigest()
        assert attrs["autopipe:llm_corrections"] == [{"param": "bpe", "proposed": 8, "chosen": 10}]
        assert trial.user_attrs["autopipe:llm_corrections"] == attrs["autopipe:llm_corrections"]
    assert attrs["autopipe:llm_neighbours"] == shown


@pytest.mark.slow
def test_the_bench_refuses_an_llm_method_without_an_endpoint(nmt, tmp_path):
    with pytest.raises(StudiesFailed) as error:
        run_bench(_nmt_spec(tmp_path, ("random", "llm-desc"), seeds=1))
    message = str(error.value)
    assert "nmt/ted-ru-en/llm-desc/seed0: LLMNotConfiguredError" in message
    assert "Method 'llm-desc' needs an OpenAI-compatible chat-completions endpoint" in message
    assert "AUTOPIPE_LLM_BASE_URL" in message and "AUTOPIPE_LLM_MODEL" in message
    stored = optuna.get_all_study_summaries(f"sqlite:///{tmp_path / 'bench.db'}")
    assert [s.study_name for s in stored] == ["nmt/ted-ru-en/random/seed0"]  # the other kept


@pytest.mark.slow
def test_a_stored_result_of_another_model_is_not_read_as_this_ones(
    stub, nmt, tmp_path, monkeypatch
):
    stub.default = json.dumps(NMT_REPLY)
    run_bench(_nmt_spec(tmp_path, ("llm-desc",), seeds=1))
    stored = optuna.load_study(
        study_name="nmt/ted-ru-en/llm-desc/seed0", storage=f"sqlite:///{tmp_path / 'bench.db'}"
    ).user_attrs["bench"]
    assert stored["settings"] == {"base_url": stub.base_url, "model": "stub-model"}
    monkeypatch.setenv("AUTOPIPE_LLM_MODEL", "another-model")
    with pytest.raises(
        ValueError, match=r"(?s)llm-desc/seed0.*'model': 'stub-model'.*another-model"
    ):
        run_bench(_nmt_spec(tmp_path, ("llm-desc",), seeds=1))


@pytest.mark.parametrize("method", ["llm-desc", "llm-history"])
def test_each_llm_method_refuses_to_run_without_an_endpoint(nmt, method):
    ctx = Context(
        task=nmt.task("ted-ru-en"),
        offline=nmt.offline("ted-ru-en", "grouped"),
        seed=0,
        budget=1,
        evaluations={},
        study_name=f"nmt/ted-ru-en/{method}/seed0",
    )
    with pytest.raises(LLMNotConfiguredError, match=f"Method '{method}' needs an OpenAI"):
        get_method(method)(ctx)
    assert ctx.evaluations == {}
