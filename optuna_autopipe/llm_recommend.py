"""LLM recommendation: ask a chat model for one configuration, validate it, enqueue it.

The paper's two zero-shot LLM baselines (Section 4.1, "Baselines"; Appendix C.2.1, "LLM
Recommendation (Description-only)" and "(History-conditioned)"): one query per dataset, one
configuration back, run once. The prompt here is this package's own (``build_prompt``), not
the paper's Figure 4.1 text, which is specific to its medical-reasoning pipeline:

- description-only: the task description (optional), the search space (every parameter with
  its type, choices or range, step and log scale) and the dataset's meta-features;
- history-conditioned: also the ``k`` (default 5, as in the paper) past datasets nearest to
  this one by cosine similarity of meta-features (``nearest_datasets``), each with its
  meta-features, the best configuration recorded there and that configuration's score.

The endpoint is any OpenAI-compatible chat-completions API (``ChatClient``: ``POST
{base_url}/chat/completions`` with ``model``, ``messages`` and ``temperature`` 0, the key as a
Bearer token), configured by arguments or, in this order, the environment variables (a
variable that is unset, empty or blank counts as not set):

- base URL: ``AUTOPIPE_LLM_BASE_URL``, then ``OPENAI_BASE_URL``; there is no default, so
  nothing calls a paid API unless asked to; a URL that already ends in
  ``/chat/completions`` is used as it is; user info in it (``http://user:password@host/v1``)
  is sent as HTTP Basic auth when no key is set, and is shown as ``***`` in errors, the
  client's repr and the benchmark's stored settings;
- model: ``AUTOPIPE_LLM_MODEL``;
- key: ``AUTOPIPE_LLM_API_KEY``, then ``OPENAI_API_KEY``; optional (local servers such as
  vLLM or Ollama need none), sent only when set;
- timeout in seconds: ``AUTOPIPE_LLM_TIMEOUT`` (default 120).

The reply must be a JSON object holding a value for every parameter (``parse_reply``: after
one leading ``<think>...</think>`` block of a reasoning model, the whole reply or its single
fenced ```` ```json ```` block; ``validate``): a value outside the search space is moved to
the nearest valid value and the move logged and recorded; a missing parameter, or a value
that cannot be placed, is an error.

``enqueue_llm_recommendation`` is the warm start for users: it asks once and enqueues the
validated configuration into a study.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import json
import logging
import math
import numbers
import os
import re
import urllib.error
import urllib.request
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal
from urllib.parse import SplitResult, unquote, urlsplit, urlunsplit

import numpy as np
import optuna
from optuna.distributions import (
    BaseDistribution,
    CategoricalDistribution,
    FloatDistribution,
    IntDistribution,
)

_logger = logging.getLogger(__name__)

ENV_BASE_URL = "AUTOPIPE_LLM_BASE_URL"
ENV_MODEL = "AUTOPIPE_LLM_MODEL"
ENV_API_KEY = "AUTOPIPE_LLM_API_KEY"
ENV_TIMEOUT = "AUTOPIPE_LLM_TIMEOUT"
#: Read when the ``AUTOPIPE_LLM_*`` variable of the same role is unset or empty.
FALLBACK_BASE_URL = "OPENAI_BASE_URL"
FALLBACK_API_KEY = "OPENAI_API_KEY"
DEFAULT_TIMEOUT = 120.0
#: Past datasets shown to the history-conditioned prompt (the paper's top-5 neighbours).
NEIGHBOURS = 5
#: Characters of a response body or reply quoted in an error.
QUOTED_CHARS = 500
#: The path of the chat-completions API below its root.
COMPLETIONS_PATH = "/chat/completions"

Direction = Literal["minimize", "maximize"]


class LLMNotConfiguredError(ValueError):
    """No endpoint: the base URL or the model is neither given nor in the environment."""


class LLMRequestError(RuntimeError):
    """The endpoint failed: HTTP error, timeout, unreachable, or no chat completion back."""


class LLMReplyError(ValueError):
    """The model's reply is not a JSON object of parameter values that fits the space."""


@dataclass(frozen=True, kw_only=True)
class ChatClient:
    """A client of one OpenAI-compatible chat-completions endpoint.

    ``base_url`` is the API root (``https://api.openai.com/v1``, ``http://localhost:8000/v1``);
    requests go to ``{base_url}/chat/completions``, or to ``base_url`` itself when it already
    ends in ``/chat/completions``. User info in it (``user:password@``) is not part of the
    request's URL: it is sent as HTTP Basic auth when there is no ``api_key`` (whose Bearer
    token wins otherwise). ``shown_url``, the request's URL with the user info replaced by
    ``***``, is what errors and the repr show; ``base_url`` and ``api_key`` are left out of
    the repr.

    Raises:
        ValueError: ``base_url`` is not an http(s) URL with a host (or its port is not a
            number).
    """

    base_url: str = field(repr=False)
    model: str
    api_key: str | None = field(default=None, repr=False)
    timeout: float = DEFAULT_TIMEOUT
    shown_url: str = field(init=False, compare=False)

    def __post_init__(self) -> None:
        parts = _split(self.base_url.strip())
        if parts is None or parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(
                f"The LLM base URL {shown_url(self.base_url)!r} is not an http(s) URL with a "
                f"host; give the API root, e.g. {ENV_BASE_URL}=http://localhost:8000/v1."
            )
        path = parts.path.rstrip("/")
        path = path if path.endswith(COMPLETIONS_PATH) else path + COMPLETIONS_PATH
        # the path goes before a query (Azure's ?api-version=...), which is kept
        full = urlunsplit(parts._replace(path=path))
        object.__setattr__(self, "shown_url", shown_url(full))

    @property
    def url(self) -> str:
        """Where requests go (the user info of ``base_url`` left out)."""
        return _without_userinfo(self.shown_url)

    def _auth(self) -> str | None:
        """The Authorization header: the key as a Bearer token, else the URL's user info as
        HTTP Basic auth, else none."""
        if self.api_key:
            return f"Bearer {self.api_key}"
        userinfo = _userinfo(self.base_url.strip())
        if userinfo is None:
            return None
        user, _, password = userinfo.partition(":")
        pair = f"{unquote(user)}:{unquote(password)}".encode()
        return f"Basic {base64.b64encode(pair).decode()}"

    @classmethod
    def from_env(
        cls,
        *,
        base_url: str | None = None,
        model: str | None = None,
        api_key: str | None = None,
        timeout: float | None = None,
    ) -> ChatClient:
        """A client from the arguments, else the environment (order in the module doc).

        Raises:
            LLMNotConfiguredError: no base URL or no model (a blank variable counts as
                unset); names the variables to set.
            ValueError: ``AUTOPIPE_LLM_TIMEOUT`` is not a positive number, or the base URL
                is not an http(s) URL with a host.
        """
        base_url = base_url or _env(ENV_BASE_URL) or _env(FALLBACK_BASE_URL)
        model = model or _env(ENV_MODEL)
        if not base_url or not model:
            missing = [
                what
                for what, value in (
                    (f"{ENV_BASE_URL} (or {FALLBACK_BASE_URL}) to the API root", base_url),
                    (f"{ENV_MODEL} to the model name", model),
                )
                if not value
            ]
            raise LLMNotConfiguredError(
                "No LLM endpoint is configured: set "
                + " and ".join(missing)
                + f", e.g. {ENV_BASE_URL}=http://localhost:8000/v1 {ENV_MODEL}=my-model. "
                f"{ENV_API_KEY} (or {FALLBACK_API_KEY}) is sent as the Bearer token when set."
            )
        if timeout is None:
            text = _env(ENV_TIMEOUT) or str(DEFAULT_TIMEOUT)
            try:
                timeout = float(text)
            except ValueError:
                timeout = math.nan
            if not timeout > 0:
                raise ValueError(f"{ENV_TIMEOUT}={text!r} is not a positive number of seconds.")
        return cls(
            base_url=base_url,
            model=model,
            api_key=api_key or _env(ENV_API_KEY) or _env(FALLBACK_API_KEY),
            timeout=timeout,
        )

    def complete(self, messages: Sequence[Mapping[str, str]]) -> str:
        """The model's reply to ``messages`` (``[{"role": ..., "content": ...}, ...]``), at
        temperature 0.

        Raises:
            LLMRequestError: HTTP error status (names the URL and status, quotes the body's
                first 500 characters), timeout, unreachable endpoint, or a response without
                ``choices[0].message.content``.
        """
        body = json.dumps({"model": self.model, "messages": list(messages), "temperature": 0})
        headers = {"Content-Type": "application/json"}
        auth = self._auth()
        if auth:
            headers["Authorization"] = auth
        request = urllib.request.Request(
            self.url, data=body.encode(), headers=headers, method="POST"
        )
        try:
            with urllib.request.urlopen(request, timeout=self.timeout) as response:
                raw = response.read().decode("utf-8", errors="replace")
        except urllib.error.HTTPError as exc:
            text = exc.read().decode("utf-8", errors="replace")
            raise LLMRequestError(
                f"POST {self.shown_url} failed with HTTP {exc.code} {exc.reason}; response body: "
                f"{text[:QUOTED_CHARS]!r}"
            ) from exc
        except OSError as exc:  # URLError, TimeoutError, connection reset
            reason = exc.reason if isinstance(exc, urllib.error.URLError) else exc
            if isinstance(reason, TimeoutError):
                raise LLMRequestError(
                    f"POST {self.shown_url} timed out after {self.timeout:g} s (set {ENV_TIMEOUT} "
                    "or timeout= for a slower model)"
                ) from exc
            raise LLMRequestError(f"POST {self.shown_url} failed: {reason}") from exc
        try:
            content = json.loads(raw)["choices"][0]["message"]["content"]
        except (ValueError, KeyError, IndexError, TypeError):
            content = None
        if not isinstance(content, str):
            raise LLMRequestError(
                f"POST {self.shown_url} returned no chat completion (choices[0].message.content); "
                f"response body: {raw[:QUOTED_CHARS]!r}"
            )
        return content


def configured_endpoint() -> dict[str, str]:
    """The base URL (user info hidden, ``shown_url``) and model the environment names now
    (``ChatClient.from_env``'s order; empty strings when unset); the key is left out."""
    return {
        "base_url": shown_url(_env(ENV_BASE_URL) or _env(FALLBACK_BASE_URL) or ""),
        "model": _env(ENV_MODEL) or "",
    }


def _env(name: str) -> str | None:
    """The variable's value without surrounding blanks; ``None`` when unset, empty or blank."""
    return os.environ.get(name, "").strip() or None


def shown_url(url: str) -> str:
    """``url`` as printed: its user info (``user:password@``) replaced by ``***@``; only the
    scheme when it cannot be parsed and holds an ``@``."""
    parts = _split(url)
    if parts is None:
        return url.split("://", 1)[0] + "://***" if "@" in url else url
    if _userinfo(url) is None:
        return url
    return urlunsplit(parts._replace(netloc="***@" + parts.netloc.rsplit("@", 1)[1]))


def _split(url: str) -> SplitResult | None:
    """``url``'s parts; ``None`` when it cannot be parsed (bad brackets or port)."""
    try:
        parts = urlsplit(url)
        _ = parts.port  # ValueError when the port is not a number
    except ValueError:
        return None
    return parts


def _userinfo(url: str) -> str | None:
    """The user info of ``url`` (``user:password``); ``None`` when it has none."""
    parts = _split(url)
    if parts is None or "@" not in parts.netloc:
        return None
    return parts.netloc.rsplit("@", 1)[0]


def _without_userinfo(url: str) -> str:
    """``url`` without its user info (and the ``@``)."""
    parts = urlsplit(url)
    return urlunsplit(parts._replace(netloc=parts.netloc.rsplit("@", 1)[-1]))


@dataclass(frozen=True, kw_only=True)
class PastDataset:
    """One past (offline) dataset for the history-conditioned prompt.

    ``features``: its meta-features (NaN, ``None`` or missing: unknown); ``config``: the best
    configuration recorded there; ``score``: that configuration's score.

    Raises:
        ValueError: ``score`` is not a finite number, or a meta-feature is not a number;
            names the dataset and the field.
    """

    name: str
    features: Mapping[str, float]
    config: Mapping[str, Any]
    score: float

    def __post_init__(self) -> None:
        if not (_is_number(self.score) and math.isfinite(self.score)):
            raise ValueError(
                f"PastDataset {self.name!r}: score={self.score!r} is not a finite number; give "
                "the score of its best configuration, or leave the dataset out of the history."
            )
        check_features(self.features, f"PastDataset {self.name!r}")


def check_features(features: Mapping[str, Any], where: str) -> None:
    """Check that every meta-feature is a number or ``None`` (NaN and ``None``: unknown).

    Raises:
        ValueError: one is not; names ``where``, the feature and its value.
    """
    for name, value in features.items():
        if value is not None and not _is_number(value):
            raise ValueError(
                f"{where}: meta-feature {name!r}={value!r} is not a number; give meta-features "
                "as numbers (NaN or None when unknown)."
            )


@dataclass(frozen=True, kw_only=True)
class Correction:
    """A proposed value outside the search space and the valid value used instead."""

    param: str
    proposed: Any
    chosen: Any

    def as_dict(self) -> dict[str, Any]:
        return {"param": self.param, "proposed": self.proposed, "chosen": self.chosen}


@dataclass(frozen=True, kw_only=True)
class Recommendation:
    """What one query gave: the validated ``config`` and how it was obtained.

    ``neighbours`` names the past datasets the prompt showed, nearest first (empty for
    description-only).
    """

    config: dict[str, Any]
    corrections: list[Correction]
    variant: Literal["description-only", "history-conditioned"]
    model: str
    prompt: str
    reply: str
    neighbours: list[str]

    @property
    def prompt_sha256(self) -> str:
        return hashlib.sha256(self.prompt.encode()).hexdigest()

    def user_attrs(self) -> dict[str, Any]:
        """The record stored on the enqueued trial (and, by the benchmark, on the study)."""
        attrs: dict[str, Any] = {
            "autopipe:llm_source": f"LLM recommendation ({self.variant})",
            "autopipe:llm_model": self.model,
            "autopipe:llm_prompt_sha256": self.prompt_sha256,
            "autopipe:llm_corrections": [c.as_dict() for c in self.corrections],
        }
        if self.variant == "history-conditioned":
            attrs["autopipe:llm_neighbours"] = list(self.neighbours)
        return attrs


def nearest_datasets(
    features: Mapping[str, float], history: Sequence[PastDataset], *, k: int = NEIGHBOURS
) -> list[tuple[PastDataset, float]]:
    """The ``k`` past datasets most similar to ``features``, with their cosine similarity,
    most similar first (ties keep ``history``'s order).

    The features compared are those of ``features`` (a past dataset lacking one has it
    unknown). Each is standardised by its mean and standard deviation over ``history``
    (population s.d.), the target with the same statistics. NaN handling: a value that is
    NaN, missing, or infinite is unknown and its standardised value is 0 (the past datasets'
    mean), so it adds nothing to either the dot product or the norms; a feature unknown on
    every past dataset, or constant over them, is 0 everywhere. A vector that is 0 everywhere
    (nothing known that varies) has similarity 0 with every dataset.
    """
    if not history:
        return []
    names = list(features)
    past = np.array([[_known(h.features.get(n)) for n in names] for h in history])
    target = np.array([_known(features[n]) for n in names])
    known = ~np.isnan(past)
    count = known.sum(axis=0)
    mean = np.where(known, past, 0.0).sum(axis=0) / np.maximum(count, 1)
    sd = np.sqrt(np.where(known, (past - mean) ** 2, 0.0).sum(axis=0) / np.maximum(count, 1))
    varies = sd > 0

    def standardise(values: np.ndarray) -> np.ndarray:
        z = (values - mean) / np.where(varies, sd, 1.0)
        return np.where(np.isnan(values) | ~varies, 0.0, z)

    past_z, target_z = standardise(past), standardise(target)
    norms = np.linalg.norm(past_z, axis=1) * np.linalg.norm(target_z)
    similarity = np.where(norms > 0, past_z @ target_z / np.where(norms > 0, norms, 1.0), 0.0)
    order = np.argsort(-similarity, kind="stable")[:k]
    return [(history[i], float(similarity[i])) for i in order]


def _known(value: Any) -> float:
    """``value`` as a float, NaN when unknown (``None``, NaN, infinite)."""
    if value is None:
        return math.nan
    number = float(value)
    return number if math.isfinite(number) else math.nan


def describe_parameter(name: str, dist: BaseDistribution) -> str:
    """One line of the prompt's search space, e.g. ``lr: real number from 1e-05 to 0.1,
    log scale``.

    Raises:
        TypeError: a distribution other than categorical, int or float.
    """
    if isinstance(dist, CategoricalDistribution):
        return f"{name}: one of {_json([*dist.choices])}"
    if isinstance(dist, IntDistribution | FloatDistribution):
        kind = "integer" if isinstance(dist, IntDistribution) else "real number"
        text = f"{name}: {kind} from {_json(dist.low)} to {_json(dist.high)}"
        if dist.step is not None and not (isinstance(dist, IntDistribution) and dist.step == 1):
            text += f" in steps of {_json(dist.step)}"
        return text + (", log scale" if dist.log else "")
    raise TypeError(f"Unsupported distribution {dist!r} for parameter {name!r}.")


def _json(value: Any) -> str:
    return json.dumps(value, default=repr)


def _feature(value: Any) -> str:
    number = _known(value)
    return "unknown" if math.isnan(number) else f"{number:.6g}"


def build_prompt(
    *,
    search_space: Mapping[str, BaseDistribution],
    features: Mapping[str, float],
    direction: Direction,
    neighbours: Sequence[tuple[PastDataset, float]] | None = None,
    metric: str = "score",
    task_description: str | None = None,
) -> str:
    """The prompt: task, search space, meta-features, (history) nearest past datasets, and the
    answer format. ``neighbours`` (from ``nearest_datasets``) makes it history-conditioned.

    Raises:
        TypeError: a distribution other than categorical, int or float.
    """
    better = "lower" if direction == "minimize" else "higher"
    lines = [
        "You recommend one hyperparameter configuration for a training run on a dataset. "
        "You cannot run experiments; decide only from the information given.",
        "",
        "## Task",
    ]
    if task_description:
        lines.append(task_description.strip())
    lines += [
        f"Objective: the {metric} of the trained model; {better} is better.",
        "",
        "## Search space",
        *(f"- {describe_parameter(name, dist)}" for name, dist in search_space.items()),
        "",
        "## Dataset meta-features",
        *(f"- {name}: {_feature(value)}" for name, value in features.items()),
    ]
    if not features:
        lines.append("(none known)")
    if neighbours is not None:
        lines += [
            "",
            "## Similar past datasets",
            "The past datasets most similar to this one (cosine similarity of standardised "
            "meta-features), most similar first, each with the best configuration recorded "
            f"there and its {metric} ({better} is better). Their search spaces may differ from "
            "this one; answer within the search space above.",
        ]
        for rank, (past, similarity) in enumerate(neighbours, 1):
            past_features = ", ".join(
                f"{name}={_feature(past.features.get(name))}" for name in features
            )
            lines += [
                "",
                f"### {rank}. {past.name} (similarity {similarity:.3f})",
                f"- meta-features: {past_features or '(none known)'}",
                f"- best configuration: {_json(dict(past.config))}",
                f"- its {metric}: {past.score:.6g}",
            ]
    template = ", ".join(f"{_json(name)}: <value>" for name in search_space)
    lines += [
        "",
        "## Answer",
        "Reply with a single JSON object that gives a value from the search space for every "
        "parameter, and nothing else:",
        f"{{{template}}}",
    ]
    return "\n".join(lines)


_FENCE = re.compile(r"```(?:json)?\s*(.*?)\s*```", re.DOTALL | re.IGNORECASE)
#: A reasoning model's leading block; the opening tag may be missing (some chat templates
#: put it at the end of the prompt, so the reply starts inside the block).
_THINK = re.compile(r"\s*(?:<think>)?.*?</think>", re.DOTALL | re.IGNORECASE)


def parse_reply(reply: str) -> dict[str, Any]:
    """The JSON object of the model's reply.

    One leading ``<think>...</think>`` block (a reasoning model's; or everything up to the
    first ``</think>`` when the opening tag is missing) is dropped first. The object is then
    the whole rest, or else the content of its single fenced block (```` ```json ```` or
    ```` ``` ````), prose around that block allowed.

    Raises:
        LLMReplyError: neither is a JSON object, or the rest holds more than one fenced
            block (ambiguous); quotes the reply's first 500 characters.
    """
    thought = _THINK.match(reply)
    text = reply[thought.end() :].strip() if thought else reply.strip()
    try:
        value = json.loads(text)
    except ValueError:
        fences = _FENCE.findall(text)
        if len(fences) > 1:
            raise LLMReplyError(
                f"The LLM's reply holds {len(fences)} fenced blocks, so which one is the "
                f"configuration is ambiguous: {reply[:QUOTED_CHARS]!r}"
            ) from None
        value = None
        if fences:
            with contextlib.suppress(ValueError):  # not JSON either: refused below
                value = json.loads(fences[0])
    if not isinstance(value, dict):
        raise LLMReplyError(
            "The LLM's reply is not a JSON object (nor holds one fenced ```json block): "
            f"{reply[:QUOTED_CHARS]!r}"
        )
    return value


def validate(
    proposal: Mapping[str, Any], search_space: Mapping[str, BaseDistribution]
) -> tuple[dict[str, Any], list[Correction]]:
    """``proposal`` placed in ``search_space``: the configuration (every parameter, in the
    space's order) and the corrections made, each logged as a warning.

    A number may come as a string (``"64"``, ``"3e-4"``); reading it is no correction.
    Outside the space:

    - int / float: clipped to [low, high], then rounded to the nearest step (halves up); a
      log-scaled int takes the nearer (in log) of the integers around the value;
    - categorical whose choices are all numbers: the nearest choice, measured on the log
      scale when every choice is positive and the largest is at least 10x the smallest (the
      rule of ``space.SpaceEncoder``; a value <= 0 then takes the smallest), linearly
      otherwise; ties go to the first in the distribution's order;
    - other categoricals: the value must equal a choice (or be a string equal to its
      ``str`` or JSON form, e.g. ``"None"``); a number equal to a numeric choice is that
      choice (``2.0`` or ``"2"`` for ``2`` of ``[1, 2, None]``); there is no nearest label.

    Keys that are not parameters are ignored with a warning.

    Raises:
        LLMReplyError: a parameter missing, not a finite number where one is needed, or not
            a choice of a non-numeric categorical; names the parameter and the reply.
    """
    missing = [name for name in search_space if name not in proposal]
    if missing:
        raise LLMReplyError(
            f"The LLM's reply lacks parameter(s) {missing}: {_json(dict(proposal))[:QUOTED_CHARS]}"
        )
    extra = [key for key in proposal if key not in search_space]
    if extra:
        _logger.warning("LLM recommendation: ignoring keys that are not parameters: %s", extra)
    config: dict[str, Any] = {}
    corrections: list[Correction] = []
    for name, dist in search_space.items():
        proposed = proposal[name]
        chosen, corrected = _place(name, proposed, dist)
        config[name] = chosen
        if corrected:
            _logger.warning(
                "LLM recommendation: %s=%r is outside the search space; using %r.",
                name,
                proposed,
                chosen,
            )
            corrections.append(Correction(param=name, proposed=proposed, chosen=chosen))
    return config, corrections


def _place(name: str, value: Any, dist: BaseDistribution) -> tuple[Any, bool]:
    """(the valid value for ``value``, whether that changed it)."""
    if isinstance(dist, CategoricalDistribution):
        return _place_choice(name, value, dist.choices)
    if not isinstance(dist, IntDistribution | FloatDistribution):
        raise TypeError(f"Unsupported distribution {dist!r} for parameter {name!r}.")
    number = _number(name, value, describe_parameter(name, dist))
    low, high = float(dist.low), float(dist.high)
    clipped = min(max(number, low), high)
    if isinstance(dist, IntDistribution) and dist.log:
        lower, upper = math.floor(clipped), math.ceil(clipped)
        nearer = math.log(clipped) - math.log(lower) <= math.log(upper) - math.log(clipped)
        chosen: float = lower if nearer else upper
    elif dist.step is not None:
        steps = (clipped - low) / dist.step
        nearest = math.floor(steps + 0.5)
        # On the grid up to rounding (Optuna's own tolerance): keep the value as written.
        on_grid = abs(steps - nearest) < 1e-8
        chosen = clipped if on_grid else min(low + nearest * dist.step, high)
    else:
        chosen = clipped
    typed = int(chosen) if isinstance(dist, IntDistribution) else float(chosen)
    return typed, typed != number


def _place_choice(name: str, value: Any, choices: Sequence[Any]) -> tuple[Any, bool]:
    if all(_is_number(c) for c in choices):
        number = _number(name, value, f"{name}: one of {_json([*choices])}")
        grid = np.array([float(c) for c in choices])
        log = grid.min() > 0 and grid.max() >= 10 * grid.min()
        if log and number > 0:
            distance = np.abs(np.log(grid) - math.log(number))
        else:
            distance = np.abs(grid - number)
        index = int(np.argmin(distance))
        return choices[index], bool(distance[index] > 0)
    for choice in choices:
        if _is_number(choice):
            same = _read_number(value) == choice
        else:
            same = type(choice) is type(value) and choice == value
            same = same or (isinstance(value, str) and value in (str(choice), _json(choice)))
        if same:
            return choice, False
    raise LLMReplyError(
        f"The LLM proposed {name}={value!r}, which is not one of its choices {[*choices]!r}."
    )


def _is_number(value: Any) -> bool:
    """Whether ``value`` is a real number (NumPy's included), not a bool."""
    return isinstance(value, numbers.Real) and not isinstance(value, bool | np.bool_)


def _read_number(value: Any) -> float:
    """``value`` (a number or a string holding one) as a float; NaN for anything else."""
    if _is_number(value):
        return float(value)
    if isinstance(value, str):
        with contextlib.suppress(ValueError):  # not a number: NaN
            return float(value.strip())
    return math.nan


def _number(name: str, value: Any, expected: str) -> float:
    """``value`` (a number or a string holding one) as a finite float.

    Raises:
        LLMReplyError: anything else, naming the parameter and what it should be.
    """
    number = _read_number(value)
    if not math.isfinite(number):
        raise LLMReplyError(
            f"The LLM proposed {name}={value!r}, which is not a finite number (expected "
            f"{expected})."
        )
    return number


def recommend(
    *,
    search_space: Mapping[str, BaseDistribution],
    features: Mapping[str, float],
    direction: Direction,
    client: ChatClient,
    history: Sequence[PastDataset] | None = None,
    metric: str = "score",
    task_description: str | None = None,
    k: int = NEIGHBOURS,
) -> Recommendation:
    """Ask ``client`` once for a configuration of ``search_space`` and validate the reply.

    ``history`` (the past datasets to choose the ``k`` nearest from) makes the query
    history-conditioned; ``None`` makes it description-only.

    Raises:
        ValueError: ``history`` given but empty, ``k`` < 1, or a meta-feature of ``features``
            that is not a number (``check_features``).
        LLMRequestError: the endpoint failed (``ChatClient.complete``).
        LLMReplyError: the reply is not a valid configuration (``parse_reply``, ``validate``).
    """
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}.")
    check_features(features, "The dataset's features")
    neighbours = None
    if history is not None:
        if not history:
            raise ValueError(
                "history is empty; pass past datasets, or history=None for description-only."
            )
        neighbours = nearest_datasets(features, history, k=k)
    prompt = build_prompt(
        search_space=search_space,
        features=features,
        direction=direction,
        neighbours=neighbours,
        metric=metric,
        task_description=task_description,
    )
    reply = client.complete([{"role": "user", "content": prompt}])
    config, corrections = validate(parse_reply(reply), search_space)
    return Recommendation(
        config=config,
        corrections=corrections,
        variant="description-only" if neighbours is None else "history-conditioned",
        model=client.model,
        prompt=prompt,
        reply=reply,
        neighbours=[past.name for past, _ in neighbours or []],
    )


def enqueue_llm_recommendation(
    study: optuna.Study,
    *,
    search_space: Mapping[str, BaseDistribution],
    features: Mapping[str, float],
    history: Sequence[PastDataset] | None = None,
    client: ChatClient | None = None,
    metric: str = "score",
    task_description: str | None = None,
    k: int = NEIGHBOURS,
) -> dict[str, Any]:
    """Warm-start ``study`` with an LLM's configuration: ask once (``recommend``, in the
    study's direction) and enqueue the validated configuration as one WAITING trial whose
    user attrs record the source, the model, the prompt's SHA-256, the corrections and (with
    ``history``) the past datasets shown. Returns the configuration.

    ``client`` defaults to ``ChatClient.from_env()`` (endpoint from the environment).

    Raises:
        ValueError: a multi-objective study; ``history`` empty; ``k`` < 1; a meta-feature
            of ``features`` that is not a number.
        LLMNotConfiguredError: no ``client`` and no endpoint in the environment.
        LLMRequestError, LLMReplyError: as ``recommend``; nothing is enqueued then.
    """
    if len(study.directions) != 1:
        raise ValueError("enqueue_llm_recommendation needs a single-objective study.")
    minimize = study.direction == optuna.study.StudyDirection.MINIMIZE
    recommendation = recommend(
        search_space=search_space,
        features=features,
        direction="minimize" if minimize else "maximize",
        client=client or ChatClient.from_env(),
        history=history,
        metric=metric,
        task_description=task_description,
        k=k,
    )
    study.enqueue_trial(recommendation.config, user_attrs=recommendation.user_attrs())
    return dict(recommendation.config)
