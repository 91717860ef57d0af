"""``autopipe recommend``: what AutoPipe recommends now for a study, why, and how to verify it.

The recommendation is ``AutoPipeSampler.recommend(study)`` itself, from a sampler built on the
study (with the saved prior when one is given: the prior's cut signal reads early stops the
way the study's own sampler did; without it they are read by the proxies they record). The
evidence is what the study holds: its trials by kind (early-stopped, full-fidelity, failed,
promoted), the recommended configuration's early stop (its fraction, proxy, score at the cut,
rank by the sampler's early-stop signal, the prior score s(x) the sampler recorded) and its
full-fidelity result when it has one, and the configurations verified so far.

Verification is ``early_stop.verify(study, params)``, the project's own: it promotes the
configuration's early stop (resuming from its checkpoint) or enqueues a fresh full run, and
enqueues nothing for a configuration already run at full fidelity. ``enqueue_verification``
also refuses while a verification of the configuration is waiting or running.

Storages: a URL (``sqlite:///study.db``, ``postgresql+psycopg2://...``) or the path of a
journal file. Neither is created when missing, and a password in a URL is never printed.
"""

from __future__ import annotations

import math
import shlex
import warnings
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import optuna
from optuna.storages import BaseStorage, JournalStorage
from optuna.storages.journal import JournalFileBackend
from optuna.trial import FrozenTrial, TrialState
from sqlalchemy.engine import make_url
from sqlalchemy.exc import SQLAlchemyError

from optuna_autopipe.early_stop import (
    CHECKPOINT_ATTR,
    PROMOTED_FROM_ATTR,
    agrees,
    full_fidelity_result,
    proxy_of,
    stopped_early,
    verify,
)
from optuna_autopipe.notes import better, counts, evidence, sampled_with_prior
from optuna_autopipe.prior import Prior
from optuna_autopipe.promotion import signal_agreement
from optuna_autopipe.sampler import AutoPipeSampler

#: Full-fidelity results listed in the evidence (the best ones).
_LISTED = 5
_PENDING = (TrialState.WAITING, TrialState.RUNNING)
_JOURNAL_HINT = "a path is read as an Optuna journal file; an SQLite database is sqlite:///PATH"


def recommend_main(
    storage_url: str,
    study_name: str,
    *,
    prior_dir: str | None = None,
    enqueue: bool = False,
    retry_failed: bool = False,
) -> str:
    """``autopipe recommend``: the report (``report``), after enqueuing the verification
    (``enqueue_verification``) when ``enqueue``; raises the errors of ``open_study``,
    ``load_prior`` and ``recommend``, each naming the study and the storage."""
    study = open_study(storage_url, study_name)
    where = f"Study {study_name!r} in storage {shown_url(storage_url)}"
    prior = load_prior(prior_dir, where=where) if prior_dir else None
    rec = recommend(study, prior=prior, where=where)
    done = enqueue_verification(study, rec.params, retry_failed=retry_failed) if enqueue else None
    text = report(study, rec, storage_url=storage_url, prior_dir=prior_dir)
    return text if done is None else f"{text}\n\n{done}"


def shown_url(storage_url: str) -> str:
    """``storage_url`` as printed: a URL's password replaced by ``***``."""
    if "://" not in storage_url:
        return storage_url
    try:
        url = make_url(storage_url)
    except SQLAlchemyError:
        return storage_url.split("://", 1)[0] + "://***"  # unparsable: show the scheme only
    return storage_url if url.password is None else url.render_as_string(hide_password=True)


def open_storage(storage_url: str, *, create: bool = False) -> BaseStorage:
    """The storage of ``storage_url``: an RDB URL, else a journal file's path.

    ``create``: a missing SQLite database is created (in an existing folder) instead of
    refused. A journal file must exist either way: a path naming none is more likely a
    mistyped URL.

    Raises ``FileNotFoundError`` for a journal file that does not exist, for an SQLite
    database that does not exist (unless ``create``) or whose folder does not, and
    ``ValueError`` for a path that is not a journal, an in-memory database (it holds no
    studies and keeps none) and a URL that cannot be opened (malformed, driver missing,
    not a database, server unreachable).
    """
    shown = shown_url(storage_url)
    if "://" not in storage_url:
        scheme = storage_url.partition(":")[0]
        if ":" in storage_url and scheme.replace("+", "").isalnum() and len(scheme) > 1:
            raise ValueError(
                f"Storage {shown} is neither a URL (scheme://...) nor a file; an SQLite "
                "database is sqlite:///PATH (three slashes, four for an absolute PATH)."
            )
        if Path(storage_url).is_dir():
            raise ValueError(f"Storage {shown} is a directory, not a journal file.")
        if not Path(storage_url).is_file():
            raise FileNotFoundError(f"Storage {shown}: no such journal file ({_JOURNAL_HINT}).")
        try:
            storage = JournalStorage(JournalFileBackend(storage_url))
        # Optuna's journal replay raises these on lines that are not its operations (not
        # text, JSON without an op_code, an unknown op_code).
        except (ValueError, KeyError, TypeError, AssertionError) as exc:
            raise ValueError(
                f"Storage {shown} is not a journal ({type(exc).__name__}: {str(exc)[:120]}); "
                f"{_JOURNAL_HINT}."
            ) from exc
        return storage
    try:
        url = make_url(storage_url)
        file = url.database if url.get_backend_name() == "sqlite" else None
        if url.get_backend_name() == "sqlite" and file in (None, "", ":memory:"):
            raise ValueError(
                f"Storage {shown} is an in-memory database: it starts empty and is gone when "
                "the command ends; use a file, sqlite:///PATH."
            )
        if file and not Path(file).is_file():
            if not create:
                raise FileNotFoundError(f"Storage {shown}: no such SQLite file {file}.")
            if not Path(file).parent.is_dir():
                raise FileNotFoundError(
                    f"Storage {shown}: no folder {Path(file).parent} to create the SQLite file "
                    "in; create it first, or choose another path."
                )
        return optuna.storages.get_storage(storage_url)
    except ImportError as exc:  # Optuna's error names no driver; its cause does
        raise ValueError(
            f"Cannot open storage {shown}: {exc.__cause__ or exc}; install its driver, or name "
            "an installed one in the URL (dialect+driver://...)."
        ) from exc
    except SQLAlchemyError as exc:  # its first line; the rest points at SQLAlchemy's docs
        raise ValueError(f"Cannot open storage {shown}: {str(exc).splitlines()[0]}") from exc


def open_study(storage_url: str, study_name: str) -> optuna.Study:
    """The single-objective study ``study_name`` of ``storage_url`` (``open_storage``).

    Raises ``ValueError`` naming the studies the storage holds when it has no such study,
    and for a multi-objective study;
    ``open_storage``'s errors otherwise.
    """
    storage = open_storage(storage_url)
    where = f"storage {shown_url(storage_url)}"
    journal = "://" not in storage_url
    names = optuna.get_all_study_names(storage)
    if study_name not in names:
        held = ", ".join(repr(n) for n in sorted(names)) if names else "none"
        raise ValueError(
            f"No study {study_name!r} in {where}; the studies it holds: {held}"
            + (f" ({_JOURNAL_HINT})" if journal and not names else "")
            + "."
        )
    study = optuna.load_study(study_name=study_name, storage=storage)
    if len(study.directions) != 1:
        raise ValueError(
            f"Study {study_name!r} in {where} has {len(study.directions)} objectives; "
            "AutoPipe recommends for a single objective."
        )
    return study


def load_prior(prior_dir: str, *, where: str) -> Prior:
    """``Prior.load(prior_dir)``; ``where`` (the study and storage) starts every error.

    Raises ``FileNotFoundError`` when the directory or its ranker is missing and
    ``ValueError`` when it does not load (corrupt, another version).
    """
    if not Path(prior_dir).is_dir():
        raise FileNotFoundError(f"{where}: --prior {prior_dir} is not a directory.")
    try:
        return Prior.load(prior_dir)
    except FileNotFoundError as exc:
        raise FileNotFoundError(f"{where}: --prior {prior_dir} does not load: {exc}") from exc
    except ValueError as exc:
        raise ValueError(f"{where}: --prior {prior_dir} does not load: {exc}") from exc


@dataclass(frozen=True)
class Recommendation:
    """``AutoPipeSampler.recommend``'s configuration for a study, with what it rests on."""

    params: dict[str, Any]
    #: The sampler that recommended it (built on the study, with the prior when given).
    sampler: AutoPipeSampler
    #: What the evidence lacks or the sampler warned about, one sentence each.
    notes: tuple[str, ...]


def recommend(study: optuna.Study, *, prior: Prior | None, where: str) -> Recommendation:
    """What ``AutoPipeSampler(prior).recommend(study)`` returns now, with notes on what the
    evidence lacks; ``where`` (the study and storage) starts the error.

    Raises ``ValueError`` when no trial gives an observation (no full-fidelity value, no
    readable early stop), saying what the study holds and what is missing.
    """
    if prior is not None and prior.ranker.encoder is not None:
        fitted = set(prior.ranker.encoder.space)
        used = {name for t in study.get_trials(deepcopy=False) for name in t.distributions}
        if used and not used <= fitted:
            raise ValueError(
                f"{where}: the prior was fitted on parameters {sorted(fitted)}, and the study "
                f"has {sorted(used - fitted)} besides: it is not this study's prior (pass the "
                "one it ran with, or none)."
            )
    # recommend()'s default rule never scores the prior, so the dataset's features are not
    # needed; NaN stands for each one the prior's ranker could read.
    features = dict.fromkeys(prior.ranker.dataset_features, math.nan) if prior else None
    sampler = AutoPipeSampler(prior, features)
    trials = study.get_trials(deepcopy=False)
    early = [t for t in trials if stopped_early(t)]
    notes = []
    if not any(k.startswith("autopipe:") for t in trials for k in t.user_attrs):
        notes.append(
            "No trial carries AutoPipe's attrs (autopipe:*): the study was not run with "
            "AutoPipeSampler and the early-stop hook, so the recommendation is its best "
            "complete trial, with no early stop, prior score or promotion behind it."
        )
    blind = [t for t in early if proxy_of(t) is None]
    if prior is None and blind:
        notes.append(
            f"{len(blind)} of {len(early)} early stops record no proxy: without --prior they "
            "count for nothing; the prior's score at the cut reads them (--prior DIR)."
        )
    elif prior is None and early and sampled_with_prior(trials):
        notes.append(
            "The study was sampled with a prior (its trials record s(x)); without --prior "
            "its early stops are read by their proxies, where the sampler may have read them "
            "by the prior's score at the cut: pass --prior DIR for the sampler's own reading."
        )
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            params = sampler.recommend(study)
        except ValueError as exc:
            missing = "no COMPLETE full-fidelity trial and no early stop the sampler can read"
            if blind and prior is None:
                missing += " (their score at the cut needs --prior DIR)"
            raise ValueError(
                f"{where}: nothing to recommend: {missing}; it holds {counts(trials)}."
            ) from exc
    notes.extend(str(w.message) for w in caught)
    return Recommendation(params=params, sampler=sampler, notes=tuple(notes))


def enqueue_verification(
    study: optuna.Study, params: Mapping[str, Any], *, retry_failed: bool = False
) -> str:
    """Enqueue one full-fidelity run of ``params`` with ``early_stop.verify`` unless the
    study already holds one (verified, or a verification waiting or running) or, unless
    ``retry_failed``, a verification of it failed; what was done, as a sentence."""
    pending = [t for t in study.get_trials(deepcopy=False) if agrees(t, params) and _is_pending(t)]
    if pending:
        t = pending[0]
        return (
            f"Not enqueued: trial {t.number} ({t.state.name}) already verifies this "
            "configuration; run it with the study's objective."
        )
    failed = [
        t
        for t in study.get_trials(deepcopy=False)
        if agrees(t, params) and t.state == TrialState.FAIL and PROMOTED_FROM_ATTR in t.user_attrs
    ]
    if failed and not retry_failed:
        return (
            f"Not enqueued: trial {failed[-1].number} verifying this configuration FAILED and "
            "it would likely fail again (its user attrs may say why). Fix the cause, then "
            "enqueue with --retry-failed."
        )
    done = verify(study, params)
    if done is not None:
        return (
            f"Not enqueued: trial {done.number} already ran this configuration at full "
            f"fidelity (value {done.value:.6g})."
        )
    new = max(
        (t for t in study.get_trials(deepcopy=False) if agrees(t, params) and _is_pending(t)),
        key=lambda t: t.number,
    )
    origin = new.user_attrs[PROMOTED_FROM_ATTR]
    how = (
        "a fresh full-fidelity run (no early stop of it)"
        if origin is None
        else f"promoted from early-stopped trial {origin}"
        + (
            f", resuming from {new.user_attrs[CHECKPOINT_ATTR]}"
            if CHECKPOINT_ATTR in new.user_attrs
            else " (no checkpoint: from scratch)"
        )
    )
    return (
        f"Enqueued trial {new.number} (WAITING) to verify it: {how}. Run it with the "
        "study's objective (e.g. study.optimize(objective, n_trials=1), or one autopipe "
        "worker with --n-trials 1)."
    )


def report(
    study: optuna.Study,
    rec: Recommendation,
    *,
    storage_url: str,
    prior_dir: str | None,
) -> str:
    """The recommendation, its evidence and how to verify it, as printed by the command."""
    trials = study.get_trials(deepcopy=False)
    prior = rec.sampler.prior
    mine = [t for t in trials if agrees(t, rec.params)]
    lines = [
        f"Study {study.study_name!r} in {shown_url(storage_url)} "
        f"({study.direction.name.lower()}), read with "
        + (f"the prior {prior_dir}" if prior_dir else "no prior")
        + ".",
        f"Recommended configuration: {rec.params!r}",
        "",
        "Evidence:",
    ]
    full = sorted([t for t in mine if full_fidelity_result(t)], key=lambda t: better(study, t))
    ranking = [t.number for t in rec.sampler.early_stop_ranking(study, include_verified=True)]
    lines += [
        f"  {line}"
        for line in evidence(
            study,
            trials,
            rec.params,
            prior=prior,
            ranking=ranking,
            agreement=signal_agreement(study, rec.sampler),
        )
    ]
    lines.extend(f"  note: {note}" for note in rec.notes)
    lines += ["", "Verify it:"]
    pending = [t for t in mine if _is_pending(t)]
    if full:
        lines.append(f"  verified already (trial {full[0].number}); nothing to run.")
    elif pending:
        lines.append(
            f"  trial {pending[0].number} ({pending[0].state.name}) verifies it already: run "
            "it with the study's objective."
        )
    else:
        command = ["autopipe", "recommend", "--storage", shown_url(storage_url)]
        command += ["--study", study.study_name]
        command += ["--prior", prior_dir] if prior_dir else []
        lines += [
            f"  {shlex.join([*command, '--enqueue'])}",
            "  then run the enqueued trial with the study's objective; or in Python:",
            *(f"    {line}" for line in _snippet(storage_url, study.study_name, rec.params)),
        ]
    return "\n".join(lines)


def _snippet(storage_url: str, study_name: str, params: Mapping[str, Any]) -> list[str]:
    """Python that enqueues and runs the verification (``objective``: the study's)."""
    storage = repr(shown_url(storage_url))
    lines = ["import optuna", "from optuna_autopipe.early_stop import verify"]
    if "://" not in storage_url:
        lines.append("from optuna.storages.journal import JournalFileBackend")
        storage = f"optuna.storages.JournalStorage(JournalFileBackend({storage}))"
    lines += [
        f"study = optuna.load_study(study_name={study_name!r}, storage={storage})",
        f"if verify(study, {dict(params)!r}) is None:  # enqueued: run it at full fidelity",
        "    study.optimize(objective, n_trials=1)",
    ]
    return lines


def _is_pending(trial: FrozenTrial) -> bool:
    """A verification run waiting or running."""
    return trial.state in _PENDING and PROMOTED_FROM_ATTR in trial.user_attrs
