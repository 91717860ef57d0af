"""Notes in optuna-dashboard: why AutoPipe chose a trial's configuration, what its early stop
saw, why it failed; and on the study, what AutoPipe recommends now and on what evidence.

A note is optuna-dashboard's Markdown note (``optuna_dashboard.save_note``; stored in the
study's system attrs, so every Optuna storage holds it), shown on the trial's and the study's
page. Who writes them:

- ``AutoPipeSampler``: a trial's note when it chooses the configuration (``choice``) and after
  the trial (``outcome``); the study note after each trial (``study_note``);
- ``AutoPipeEarlyStop``: a trial's note after its early stop (``early_stop``), under any
  sampler.

Each note is rendered from the trial's user attrs and the study's trials (nothing else is
kept), so every writer renders the whole note. A person may write in a note too: AutoPipe's
part starts at the line ``MARKER`` and is all it replaces; the text above it is kept.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import optuna
import optuna_dashboard
from optuna.study import StudyDirection
from optuna.trial import FrozenTrial, TrialState

from optuna_autopipe._storage_attrs import live_trial
from optuna_autopipe.dynamics import DYNAMICS_ATTR, TrainingDynamics
from optuna_autopipe.early_stop import (
    CHECKPOINT_ATTR,
    FRACTION_ATTR,
    PRIOR_SCORE_ATTR,
    PROMOTED_FROM_ATTR,
    RESIDUAL_ATTR,
    STOP_STEP_ATTR,
    agrees,
    diverged,
    full_fidelity_result,
    proxy_of,
    stopped_early,
)

if TYPE_CHECKING:
    from optuna_autopipe.prior import Prior

#: The line AutoPipe's part of a note starts with; text above it is a person's and is kept.
MARKER = "---\n*AutoPipe (kept current by the sampler and the early-stop hook):*"
#: The sampler's explanation attrs read here (written by ``AutoPipeSampler``).
PHASE_ATTR = "autopipe:phase"
_PHASES = {
    "warm-start": "in the **warm start**: diverse configurations among the prior's best, "
    "then a probe the prior ranks low, which measures how far to trust the prior",
    "prior-order": "by the **prior's order** (BO off): its best untried configuration",
    "bo": "by **BO** over the prior's residuals, maximising the tempered UCB",
}
#: Metrics shown at an early stop, at most.
_SHOWN_METRICS = 5


def trial_note(
    trial: FrozenTrial,
    trials: Sequence[FrozenTrial],
    direction: StudyDirection,
    *,
    ranking: Sequence[int] | None = None,
) -> str:
    """AutoPipe's note of ``trial`` (Markdown): its choice, early stop and outcome.

    ``trials``: the study's trials (the early stop is compared with the others');
    ``ranking``: the early-stopped trials' numbers by the sampler's early-stop signal, best
    first (``None``: they are compared by proxy, else by the last intermediate value).
    Empty when there is nothing of AutoPipe's to say.
    """
    parts = [choice(trial.user_attrs)]
    if STOP_STEP_ATTR in trial.user_attrs:
        parts.append(early_stop(trial, trials, direction, ranking=ranking))
    parts.append(outcome(trial))
    return "\n\n".join(p for p in parts if p)


def choice(attrs: Mapping[str, Any]) -> str:
    """Why the sampler chose the configuration (from its explanation attrs), or how an
    enqueued verification came to be; '' for neither."""
    if PROMOTED_FROM_ATTR in attrs:
        origin = attrs[PROMOTED_FROM_ATTR]
        if origin is None:
            return "**Verification**: a fresh full-fidelity run of a recommended configuration."
        resume = attrs.get(CHECKPOINT_ATTR)
        return f"**Promoted** from early-stopped trial {origin} to full fidelity, " + (
            f"resuming from `{resume}`." if resume else "from scratch (no checkpoint)."
        )
    phase = attrs.get(PHASE_ATTR)
    if phase is None:
        return ""
    base, _, other = phase.partition(" (")
    text = f"**Chosen** {_PHASES.get(base, base)}."
    s, lam, kappa = (attrs.get(k) for k in (PRIOR_SCORE_ATTR, "autopipe:lambda", "autopipe:kappa"))
    mean, std, bias = (
        attrs.get(k) for k in ("autopipe:gp_mean", "autopipe:gp_std", "autopipe:offset")
    )
    acquisition = attrs.get("autopipe:acquisition")
    if base == "bo" and None not in (s, lam, kappa, mean, std, bias, acquisition):
        text += (
            f" UCB = λ·s(x) + b + μ(x) + κ·σ(x) = {lam:.3g}·{s:.3g} {_term(bias)} {_term(mean)}"
            f" + {kappa:.3g}·{std:.3g} = **{acquisition:.3g}**: the prior's score s(x), its "
            f"weight λ (how far the study's observations say to trust it), the dataset "
            f"offset b, the GP's residual mean μ and standard deviation σ, and the "
            f"exploration weight κ."
        )
    elif s is not None:
        text += f" Prior score s(x) = {s:.3g}" + (
            f", prior weight λ = {lam:.3g}." if lam is not None else "."
        )
    risk, failures = attrs.get("autopipe:failure_risk"), attrs.get("autopipe:failures")
    if failures:
        text += (
            f" {failures} failed configuration(s) so far; this one's probability of failing, "
            f"P(fail | x) = {risk:.2f}."
        )
    if other:
        text += (
            " The study fixed other values than the sampler chose (enqueued or fixed "
            "parameters): the numbers describe the configuration that ran."
        )
    return text


def early_stop(
    trial: FrozenTrial,
    trials: Sequence[FrozenTrial],
    direction: StudyDirection,
    *,
    ranking: Sequence[int] | None = None,
) -> str:
    """What the early stop of ``trial`` observed, and how it ranks among the study's early
    stops: by ``ranking`` (``trial_note``) when given, else by proxy when they have one,
    else by the last intermediate value."""
    attrs = trial.user_attrs
    fraction = attrs.get(FRACTION_ATTR)
    dynamics = _dynamics(attrs)
    total = f" of {dynamics.total_steps}" if dynamics is not None else ""
    text = f"**Early-stopped** at step {attrs[STOP_STEP_ATTR]}{total}" + (
        f" ({fraction:.0%} of training)." if fraction is not None else "."
    )
    if dynamics is not None:
        shown = _at_stop(dynamics, attrs[STOP_STEP_ATTR])
        if shown:
            text += " Logged at the stop: " + ", ".join(f"{n} {v:.4g}" for n, v in shown) + "."
    if diverged(trial):
        text += (
            " **The run diverged** before the stop (a loss is NaN or infinite): AutoPipe "
            "counts it as a failure, not an observation: it is not promoted or recommended, "
            "and its region is avoided (P(fail | x))."
        )
    proxy = proxy_of(trial)
    if proxy is not None:
        text += (
            " Proxy (the early-stop regressor's prediction of the final score, in the "
            f"prior's standardised units, higher is better): **{proxy[0]:.3g}** ± "
            f"{math.sqrt(proxy[1]):.2g}."
        )
    elif RESIDUAL_ATTR in attrs:
        text += (
            f" No proxy: the regressor's residual r̂ = {attrs[RESIDUAL_ATTR]:.3g} needs the prior "
            "score s(x) the sampler records when it chooses a configuration, and it did not "
            "choose this one (enqueued or fixed)."
        )
    else:
        text += " No proxy (the hook had no regressor)."
    if ranking is not None:
        if trial.number in ranking and len(ranking) > 1:
            place = list(ranking).index(trial.number) + 1
            text += (
                f" By the sampler's early-stop signal it ranks {place} of {len(ranking)} "
                f"early-stopped configurations so far (best: trial {ranking[0]})."
            )
        return text
    if diverged(trial):
        return text
    others = [
        t
        for t in trials
        if STOP_STEP_ATTR in t.user_attrs and t.number != trial.number and not diverged(t)
    ]
    by_proxy = proxy is not None
    key = "proxy" if by_proxy else "the last intermediate value"
    own = _observation(trial, by_proxy)
    scored = [(t.number, _observation(t, by_proxy)) for t in others]
    scored = [(n, v) for n, v in scored if v is not None]
    if own is not None and scored:
        # proxies are standardised scores; intermediate values are oriented like the study
        sign = 1.0 if proxy is not None or direction == StudyDirection.MAXIMIZE else -1.0
        better = sum(sign * v > sign * own for _, v in scored)
        best_number, best = max(scored, key=lambda p: sign * p[1])
        text += f" By {key} it ranks {better + 1} of {len(scored) + 1} early stops" + (
            "." if better == 0 else f" (best: trial {best_number}, {best:.4g})."
        )
    return text


def outcome(trial: FrozenTrial) -> str:
    """How the trial ended: its value, a pruner's stop or a failure and what is known of
    why ('' while it runs)."""
    attrs, state, value = trial.user_attrs, trial.state, trial.value
    if state == TrialState.COMPLETE and value is not None:
        fidelity = float(attrs.get("fidelity", 1.0))
        if fidelity < 1.0:
            return (
                f"**Complete** below full fidelity ({fidelity:.0%} of training): value {value:.6g}."
            )
        return f"**Complete** at full fidelity: value **{value:.6g}**."
    if state == TrialState.PRUNED and STOP_STEP_ATTR not in attrs:
        last = max(trial.intermediate_values, default=None)
        return "**Pruned** by the study's pruner" + (
            f" at step {last}." if last is not None else "."
        )
    if state != TrialState.FAIL:
        return ""
    text = (
        "**Failed**: the objective raised an exception or returned a value that is not a "
        f"number (Optuna logs which, with the traceback, as `Trial {trial.number} failed` in "
        "the worker's output; the storage does not keep it)."
    )
    dynamics = _dynamics(attrs)
    if dynamics is not None and dynamics.metrics:
        text += f" The last logged step was {dynamics.last_step:g} of {dynamics.total_steps}."
        first = _first_nonfinite(dynamics)
        if first is not None:
            name, step = first
            text += f" The metric {name} became NaN or infinite at step {step:g}: the run diverged."
    elif trial.intermediate_values:
        text += (
            f" Its last intermediate value is at step {max(trial.intermediate_values)}; the hook "
            "writes the dynamics in `finish()`, which the exception skipped."
        )
    elif trial.params:
        text += " It reported no training step (it failed while setting up, e.g. out of memory)."
    return (
        text + " AutoPipe does not propose this configuration again while others are free, and "
        "avoids its region (P(fail | x), the failure model)."
    )


def study_note(
    params: Mapping[str, Any] | None, lines: Sequence[str], *, trials: Sequence[FrozenTrial]
) -> str:
    """The study note: the recommended ``params`` (``None``: nothing to recommend yet), the
    ``evidence`` lines behind it as a list, and the time the finished trials ran."""
    seconds = sum(
        (t.datetime_complete - t.datetime_start).total_seconds()
        for t in trials
        if t.datetime_complete is not None and t.datetime_start is not None
    )
    if params is None:
        head = "**No recommendation yet**: no full-fidelity value or early stop to read."
    else:
        head = f"**Recommended** after {len(trials)} trials: `{dict(params)!r}`"
    items = [f"  - {line.strip()}" if line.startswith("  ") else f"- {line}" for line in lines]
    return "\n".join([head, "", *items, f"- time the finished trials ran: {_duration(seconds)}"])


def evidence(
    study: optuna.Study,
    trials: Sequence[FrozenTrial],
    params: Mapping[str, Any],
    *,
    prior: Prior | None,
    ranking: Sequence[int],
    agreement: float,
) -> list[str]:
    """What a recommendation rests on, one line each: the study's trials by kind, whether
    ``params`` was verified, its early stops (``ranking``: the early-stopped trials' numbers
    by the sampler's signal, best first), the prior score and weight the sampler recorded,
    the best full-fidelity results and ``agreement``, the early signal's Spearman with the
    promoted runs' full values (NaN: not shown)."""
    mine = [t for t in trials if agrees(t, params)]
    lines = [counts(trials)]
    full = sorted([t for t in mine if full_fidelity_result(t)], key=lambda t: better(study, t))
    if full:
        lines.append(
            f"verified: trial {full[0].number} ran it at full fidelity, value "
            f"{full[0].value:.6g}{origin(full[0])}"
        )
    else:
        lines.append("not verified: no full-fidelity result of it yet")
    lines += [_early_stop_line(t, prior, ranking) for t in mine if stopped_early(t)]
    scored = [t for t in mine if PRIOR_SCORE_ATTR in t.user_attrs]
    if scored and sampled_with_prior(trials):
        lines.append(
            f"prior score s(x) the sampler recorded (trial {scored[0].number}): "
            f"{scored[0].user_attrs[PRIOR_SCORE_ATTR]:.3g}"
        )
    lambdas = [t for t in trials if "autopipe:lambda" in t.user_attrs]
    if lambdas and sampled_with_prior(trials):
        last = lambdas[-1]
        lines.append(
            f"the prior's weight λ when the sampler last chose (trial {last.number}): "
            f"{last.user_attrs['autopipe:lambda']:.3g}"
        )
    verified = sorted(
        [t for t in trials if full_fidelity_result(t)], key=lambda t: better(study, t)
    )
    if verified:
        lines.append("full-fidelity results, best first:")
        lines += [
            f"  trial {t.number}: {t.value:.6g} {t.params!r}{origin(t)}" for t in verified[:5]
        ]
        if len(verified) > 5:
            lines.append(f"  ... and {len(verified) - 5} more")
    if math.isfinite(agreement):
        lines.append(
            "the early-stop signal's order of the promoted runs vs their full values: "
            f"Spearman {agreement:.2f}"
        )
    return lines


def counts(trials: Sequence[FrozenTrial]) -> str:
    """The study's trials by kind, promotions by state."""
    full = sum(full_fidelity_result(t) for t in trials)
    kinds = {
        "early-stopped": sum(stopped_early(t) for t in trials),
        "full-fidelity": full,
        "failed": sum(t.state == TrialState.FAIL for t in trials),
    }
    complete = [t for t in trials if t.state == TrialState.COMPLETE and not full_fidelity_result(t)]
    below = [t for t in complete if float(t.user_attrs.get("fidelity", 1.0)) < 1.0]
    others = {
        "complete below full fidelity": len(below),
        "complete with a value that is not finite": len(complete) - len(below),
        "pruned by the pruner": sum(
            t.state == TrialState.PRUNED and not stopped_early(t) for t in trials
        ),
        "running": sum(t.state == TrialState.RUNNING for t in trials),
        "waiting": sum(t.state == TrialState.WAITING for t in trials),
    }
    kinds.update((kind, n) for kind, n in others.items() if n)
    promoted = [t for t in trials if PROMOTED_FROM_ATTR in t.user_attrs]
    states = sorted({t.state for t in promoted}, key=lambda s: s.value)
    by_state = ", ".join(f"{sum(t.state == s for t in promoted)} {s.name.lower()}" for s in states)
    return (
        f"{len(trials)} trials: "
        + ", ".join(f"{n} {kind}" for kind, n in kinds.items())
        + f"; promoted from early stops: {len(promoted)}"
        + (f" ({by_state})" if promoted else "")
    )


def better(study: optuna.Study, trial: FrozenTrial) -> float:
    """A sort key, best first, of a trial with a value."""
    assert trial.value is not None
    return -trial.value if study.direction == StudyDirection.MAXIMIZE else trial.value


def origin(trial: FrozenTrial) -> str:
    """Where a verification run came from, as a suffix ('' for any other trial)."""
    if PROMOTED_FROM_ATTR not in trial.user_attrs:
        return ""
    source = trial.user_attrs[PROMOTED_FROM_ATTR]
    return " (a fresh verification run)" if source is None else f" (promoted from trial {source})"


def sampled_with_prior(trials: Sequence[FrozenTrial]) -> bool:
    """Whether the sampler that ran the study had a prior (it recorded some s(x) ≠ 0)."""
    return any(t.user_attrs.get(PRIOR_SCORE_ATTR, 0.0) != 0.0 for t in trials)


def save(study: optuna.Study, trial: FrozenTrial | optuna.Trial | None, text: str) -> None:
    """Write ``text`` as AutoPipe's part of the note of ``trial`` (``None``: the study's),
    keeping what a person wrote above ``MARKER``; nothing is written when unchanged."""
    target: optuna.Study | optuna.Trial = study
    if isinstance(trial, FrozenTrial):
        target = live_trial(study, trial)
    elif trial is not None:
        target = trial
    current = optuna_dashboard.get_note(target)
    own, _, _ = current.partition(MARKER)
    body = f"{own.rstrip()}\n\n{MARKER}\n\n{text}" if own.strip() else f"{MARKER}\n\n{text}"
    if body != current:
        optuna_dashboard.save_note(target, body)


def read_all(study: optuna.Study) -> tuple[str, dict[int, str]]:
    """The study's note and its trials' notes by trial number (what a person wrote too)."""
    trials = {t.number: optuna_dashboard.get_note(live_trial(study, t)) for t in study.trials}
    return optuna_dashboard.get_note(study), {n: body for n, body in trials.items() if body}


def write_all(study: optuna.Study, study_body: str, trial_bodies: Mapping[int, str]) -> None:
    """Write ``read_all``'s notes into ``study``, whose trials are numbered the same (a copy
    of the study they were read from)."""
    if study_body:
        optuna_dashboard.save_note(study, study_body)
    for trial in study.trials:
        if trial.number in trial_bodies:
            optuna_dashboard.save_note(live_trial(study, trial), trial_bodies[trial.number])


def _early_stop_line(trial: FrozenTrial, prior: Prior | None, ranking: Sequence[int]) -> str:
    """One early stop of the recommended configuration: where it stopped, its proxy, its
    score at the cut (with a prior's cut signal) and its rank by the sampler's signal."""
    attrs = trial.user_attrs
    fraction = attrs.get(FRACTION_ATTR)
    parts = [
        f"early stop: trial {trial.number}, stopped at step {attrs[STOP_STEP_ATTR]}"
        + (f" ({fraction:.0%} of training)" if fraction is not None else "")
    ]
    proxy = proxy_of(trial)
    parts.append(
        "no proxy"
        if proxy is None
        else f"proxy {proxy[0]:.3g} ± {proxy[1] ** 0.5:.2g} (standardised, higher is better)"
    )
    regressor = None
    if prior is not None and fraction is not None:
        with contextlib.suppress(ValueError):  # a fraction the prior serves no regressor for
            regressor = prior.regressor_for(fraction)
    dynamics = _dynamics(attrs)
    if regressor is not None and regressor.cut is not None and dynamics is not None:
        cut = regressor.cut
        value = cut.sign * cut.value(dynamics, fraction=fraction)
        parts.append(
            f"{cut.feature} at the cut {value:.4g} ({'higher' if cut.sign > 0 else 'lower'} "
            f"is better; the prior reads early stops by "
            f"{'it' if regressor.uses_cut else 'the proxy'})"
        )
    if trial.number in ranking:
        parts.append(f"rank {list(ranking).index(trial.number) + 1} of {len(ranking)} early stops")
    return ", ".join(parts)


def _term(x: float) -> str:
    """``x`` as a signed term of a sum: '+ 0.3', '− 0.3'."""
    return f"− {-x:.3g}" if x < 0 else f"+ {x:.3g}"


def _duration(seconds: float) -> str:
    if seconds < 120:
        return f"{seconds:.0f} s"
    return f"{seconds / 60:.0f} min" if seconds < 7200 else f"{seconds / 3600:.1f} h"


def _dynamics(attrs: Mapping[str, Any]) -> TrainingDynamics | None:
    record = attrs.get(DYNAMICS_ATTR)
    if not isinstance(record, str):
        return None
    try:
        return TrainingDynamics.from_json(record)
    except ValueError:  # a note never fails a run; the sampler reports unreadable dynamics
        return None


def _at_stop(dynamics: TrainingDynamics, step: float) -> list[tuple[str, float]]:
    """The last value (NaN too) of each metric up to ``step``, losses first."""
    values = []
    for name, series in dynamics.metrics.items():
        logged = [v for s, v in series if s <= step]
        if logged:
            values.append((name, logged[-1]))
    values.sort(key=lambda p: ("loss" not in p[0], p[0]))
    return values[:_SHOWN_METRICS]


def _first_nonfinite(dynamics: TrainingDynamics) -> tuple[str, float] | None:
    hits = [
        (s, name)
        for name, series in dynamics.metrics.items()
        for s, v in series
        if not math.isfinite(v)
    ]
    return (min(hits)[1], min(hits)[0]) if hits else None


def _observation(trial: FrozenTrial, by_proxy: bool) -> float | None:
    """A trial's early-stop observation for ranking: its proxy, or its last intermediate
    value (the primary metric, oriented like the study)."""
    if by_proxy:
        proxy = proxy_of(trial)
        return None if proxy is None else proxy[0]
    if not trial.intermediate_values:
        return None
    return trial.intermediate_values[max(trial.intermediate_values)]
