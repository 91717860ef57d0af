"""The ``offline`` benchmark method: run the ranking prior's top configuration once.

The prior (``Ranker``, default settings, with dataset features) is fitted on the offline
datasets' reference pools, at most ``CORPUS_ROWS`` runs per dataset (a seeded subsample:
the paper's LCBench corpus is 34 tasks x 2,000 configurations; NMT has fewer runs, so it
is used whole). It scores the held-out task's reference pool (NMT: its recorded
configurations; LCBench: its 10,000-configuration pool) from the task's meta-features, and
the top-1 (first on ties) is run once at full fidelity. ``Context.prior_noise`` distorts the
prior's scores first (``prior_noise.distort``).

Registered on import; ``optuna_autopipe.bench.methods`` imports this module.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence

import numpy as np
import optuna

from objectives.replay import ReplayTask
from optuna_autopipe.bench.methods import Context, register
from optuna_autopipe.bench.prior_noise import distort
from optuna_autopipe.corpus import Corpus
from optuna_autopipe.ranker import Ranker

#: Runs per offline dataset the prior is fitted on.
CORPUS_ROWS = 2000
#: Fitted rankers kept per process (seeds of one held-out dataset reuse the same fold).
_CACHE_SIZE = 8
_RANKERS: OrderedDict[tuple[tuple[str, str, int], ...], Ranker] = OrderedDict()


def prior_corpus(offline: Sequence[ReplayTask]) -> Corpus:
    """The offline datasets' reference pools, at most ``CORPUS_ROWS`` runs each (seeded),
    grouped as the benchmark groups them."""
    groups = {t.name: str(getattr(t, "group", t.name)) for t in offline}
    return Corpus.from_tasks(offline, groups=groups).subsample(CORPUS_ROWS, seed=0)


def offline_ranker(offline: Sequence[ReplayTask]) -> Ranker:
    """The prior fitted on ``offline`` (cached per process by the datasets' names)."""
    key = tuple((t.benchmark, t.name, len(t.pool()[1])) for t in offline)
    if key in _RANKERS:
        _RANKERS.move_to_end(key)
        return _RANKERS[key]
    ranker = Ranker(n_jobs=1).fit(prior_corpus(offline))
    _RANKERS[key] = ranker
    while len(_RANKERS) > _CACHE_SIZE:
        _RANKERS.popitem(last=False)
    return ranker


@register("offline")
def offline(ctx: Context) -> optuna.Study:
    """The ranker's top configuration of the held-out task's pool, run once."""
    ranker = distort(offline_ranker(ctx.offline), ctx.prior_noise, seed=ctx.seed)
    candidates = ctx.task.pool()[0]
    scores = ranker.score(candidates, ctx.task.dataset_features)
    top = int(np.argmax(scores))
    study = ctx.study(optuna.samplers.RandomSampler(seed=ctx.seed))
    study.enqueue_trial(
        ctx.task.resolve(candidates[top]),
        user_attrs={"prior_score": float(scores[top]), "prior_candidates": len(candidates)},
    )
    study.optimize(ctx.objective(), n_trials=1)
    return study
