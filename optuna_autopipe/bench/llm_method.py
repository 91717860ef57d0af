"""The ``llm-desc`` and ``llm-history`` benchmark methods: the paper's zero-shot LLM
recommendation baselines, description-only and history-conditioned (Section 4.1,
"Baselines"; Appendix C.2.1), through ``optuna_autopipe.llm_recommend``.

Each asks the endpoint configured in the environment (``AUTOPIPE_LLM_BASE_URL`` or
``OPENAI_BASE_URL``, ``AUTOPIPE_LLM_MODEL``, ``AUTOPIPE_LLM_API_KEY`` or ``OPENAI_API_KEY``,
``AUTOPIPE_LLM_TIMEOUT``) once for a configuration of the held-out task's search space, and
runs the validated configuration once at full fidelity, like ``global``:

- ``llm-desc``: the prompt gives the benchmark and dataset names, the metric and its
  direction, the search space and the task's meta-features;
- ``llm-history``: also the ``llm_recommend.NEIGHBOURS`` (5) offline datasets nearest by
  cosine similarity of standardised meta-features, each with the best configuration of its
  reference pool (``ReplayTask.pool``) and that configuration's score.

The study's user attrs (and the trial's) record the source, the model, the prompt's SHA-256,
the corrections made to the reply and, for ``llm-history``, the datasets shown.

One query per prompt: replies are cached per process by (URL, model, messages), and the
harness runs all studies of a dataset in one worker, so the seeds of a dataset share one
recommendation (as in the paper: one per dataset; the seeds differ in the observation
noise). Under ``single-source`` and ``few-source`` each seed has other offline datasets, so
``llm-history`` asks once per seed there.

Without an endpoint the method raises ``LLMNotConfiguredError`` (a ``ValueError``; ``autopipe
bench`` exits 2 with it) before it creates a study. That happens when the method is called
in a worker, not in the harness's up-front ``get_method`` check: registering needs no endpoint
(every lazily registered module must import in a fresh process).

Registered on import; ``optuna_autopipe.bench.methods`` imports this module.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import optuna

from objectives.replay import ReplayTask
from optuna_autopipe.bench.methods import Context, Method, register
from optuna_autopipe.llm_recommend import (
    ChatClient,
    LLMNotConfiguredError,
    PastDataset,
    configured_endpoint,
    recommend,
)

#: Replies by (URL, model, messages as JSON), for the life of the process.
_REPLIES: dict[tuple[str, str, str], str] = {}


@dataclass(frozen=True, kw_only=True)
class _CachingClient(ChatClient):
    """A ``ChatClient`` that asks each distinct query once per process (``_REPLIES``)."""

    def complete(self, messages: Sequence[Mapping[str, str]]) -> str:
        key = (self.url, self.model, json.dumps(list(messages), sort_keys=True))
        if key not in _REPLIES:
            _REPLIES[key] = super().complete(messages)
        return _REPLIES[key]


def best_of_pool(task: ReplayTask) -> PastDataset:
    """``task`` as history: its meta-features, and the best configuration of its reference
    pool (first on ties) with that configuration's noise-free score."""
    configs, scores = task.pool()
    best = int(np.argmax(scores * task.sign()))
    return PastDataset(
        name=task.name,
        features=task.dataset_features,
        config=configs[best],
        score=float(scores[best]),
    )


def llm_method(name: str, *, history: bool) -> Method:
    """The method ``name``: history-conditioned when ``history``, else description-only.

    Raises (from the method):
        LLMNotConfiguredError: no endpoint in the environment; says the method needs one and
            names the variables.
        LLMRequestError, LLMReplyError: the endpoint failed, or the reply is not a
            configuration of the task's space (``llm_recommend.recommend``).
    """

    def run(ctx: Context) -> optuna.Study:
        try:
            client = _CachingClient.from_env()
        except LLMNotConfiguredError as exc:
            raise LLMNotConfiguredError(
                f"Method {name!r} needs an OpenAI-compatible chat-completions endpoint. {exc}"
            ) from exc
        task = ctx.task
        recommendation = recommend(
            search_space=task.search_space,
            features=task.dataset_features,
            direction=task.direction,
            client=client,
            history=[best_of_pool(t) for t in ctx.offline] if history else None,
            metric=task.metric,
            task_description=f"Benchmark {task.benchmark!r}, dataset {task.name!r}.",
        )
        attrs = recommendation.user_attrs()
        study = ctx.study(optuna.samplers.RandomSampler(seed=ctx.seed))
        for key, value in attrs.items():
            study.set_user_attr(key, value)
        study.enqueue_trial(recommendation.config, user_attrs=attrs)
        study.optimize(ctx.objective(), n_trials=1)
        return study

    return run


# a stored result of another endpoint or model is not this method's (``methods.SETTINGS``)
register("llm-desc", settings=configured_endpoint)(llm_method("llm-desc", history=False))
register("llm-history", settings=configured_endpoint)(llm_method("llm-history", history=True))
