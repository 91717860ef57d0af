"""Dashboard notes (``optuna_autopipe.notes``), read back with optuna-dashboard's own
``get_note``: each trial's note states the sampler's choice with the numbers it recorded, the
early stop and how the trial ended; the study note states the sampler's own recommendation;
a person's text above the marker survives; the hook writes its note under any sampler; the
bench keeps the notes of the studies it stores; and the dynamics go to the artifact store."""

from __future__ import annotations

import json
import math

import numpy as np
import optuna
import pytest
from conftest import runs_with_dynamics, toy_losses
from optuna.distributions import FloatDistribution
from optuna.trial import TrialState
from optuna_dashboard import get_note, save_note

from optuna_autopipe import notes
from optuna_autopipe._storage_attrs import live_trial
from optuna_autopipe.corpus import Corpus
from optuna_autopipe.dynamics import TrainingDynamics
from optuna_autopipe.early_stop import AutoPipeEarlyStop, diverged, promote
from optuna_autopipe.ensemble import TreeParams
from optuna_autopipe.prior import Prior, fit_prior
from optuna_autopipe.promotion import promote_best
from optuna_autopipe.sampler import AutoPipeSampler

SPACE = {"x": FloatDistribution(0.0, 1.0), "w": FloatDistribution(0.0, 1.0)}
FEATURES = {"size": 1.5}


@pytest.fixture(scope="module")
def prior() -> Prior:
    return fit_prior(
        Corpus(SPACE, [runs_with_dynamics(f"d{i}", i) for i in range(4)]),
        grid=[TreeParams(n_estimators=20)],
        n_models=1,
    )


def _objective(prior: Prior | None, *, fail_at: float = 2.0, nan_from: int | None = None):
    """Stops at 50% (a promoted trial runs on) and returns x + w; fails for x > fail_at,
    and its loss is NaN from step ``nan_from`` on."""
    rng = np.random.default_rng(0)

    def objective(trial: optuna.Trial) -> float:
        x, w = trial.suggest_float("x", 0.0, 1.0), trial.suggest_float("w", 0.0, 1.0)
        regressor = prior.regressor if prior is not None else None
        hook = AutoPipeEarlyStop(trial, total_steps=20, regressor=regressor, dataset=FEATURES)
        for step, loss in enumerate(toy_losses(w - 0.5, rng), 1):
            if nan_from is not None and step >= nan_from:
                loss = math.nan
            if hook.report(step, {"loss": float(loss)}):
                break
        if x > fail_at:
            hook.write()
            raise RuntimeError("out of memory")
        hook.finish()
        return x + w

    return objective


def _note(study: optuna.Study, trial: optuna.trial.FrozenTrial | None = None) -> str:
    return get_note(study if trial is None else live_trial(study, trial))


def _study(prior: Prior, n: int = 6, **kwargs) -> tuple[optuna.Study, AutoPipeSampler]:
    sampler = AutoPipeSampler(prior, FEATURES, seed=0, n_samples=256, budget=n, n_startup=3)
    study = optuna.create_study(direction="maximize", sampler=sampler)
    study.optimize(_objective(prior, **kwargs), n_trials=n, catch=(RuntimeError,))
    return study, sampler


def test_each_trial_note_states_the_choice_with_the_numbers_the_sampler_recorded(prior):
    study, _ = _study(prior)
    for trial in study.trials:
        note, attrs = _note(study, trial), trial.user_attrs
        assert note.startswith(notes.MARKER)
        assert (
            f"Early-stopped** at step {attrs['autopipe:stop_step']} of 20 (50% of training)" in note
        )
        proxy = attrs["autopipe:proxy"]
        assert f"**{proxy:.3g}** ± {math.sqrt(attrs['autopipe:proxy_variance']):.2g}" in note
        assert f"Prior score s(x) = {attrs['autopipe:prior_score']:.3g}" in note or (
            f"·{attrs['autopipe:prior_score']:.3g} " in note
        )
        if attrs["autopipe:phase"] == "bo":
            acquisition = attrs["autopipe:acquisition"]
            terms = [attrs[f"autopipe:{k}"] for k in ("lambda", "kappa", "gp_std")]
            assert f"= **{acquisition:.3g}**" in note and f"{terms[0]:.3g}·" in note
            assert f"+ {terms[1]:.3g}·{terms[2]:.3g} =" in note
        else:
            assert attrs["autopipe:phase"] == "warm-start" and "**warm start**" in note
    assert [t.user_attrs["autopipe:phase"] for t in study.trials] == ["warm-start"] * 3 + ["bo"] * 3


def test_the_study_note_is_the_samplers_recommendation_and_follows_the_verification(prior):
    study, sampler = _study(prior)
    recommended = sampler.recommend(study)
    note = _note(study)
    assert f"**Recommended** after 6 trials: `{recommended!r}`" in note
    assert "6 trials: 6 early-stopped, 0 full-fidelity, 0 failed" in note
    assert "not verified: no full-fidelity result of it yet" in note
    stopped = next(t for t in study.trials if sampler.recommend(study) == t.params)
    promote(study, stopped)
    study.optimize(_objective(prior), n_trials=1)
    verification = study.trials[-1]
    assert verification.state == TrialState.COMPLETE
    note = _note(study)
    assert f"verified: trial {verification.number} ran it at full fidelity" in note
    assert f"(promoted from trial {stopped.number})" in note
    trial_note = _note(study, verification)
    assert f"**Promoted** from early-stopped trial {stopped.number}" in trial_note
    assert f"**Complete** at full fidelity: value **{verification.value:.6g}**" in trial_note


def test_a_failed_trial_says_what_is_known_of_why(prior):
    study, _ = _study(prior, n=4, fail_at=-1.0, nan_from=5)
    assert {t.state for t in study.trials} == {TrialState.FAIL}
    note = _note(study, study.trials[0])
    assert "**Failed**" in note and "Trial 0 failed" in note
    assert "The metric loss became NaN or infinite at step 5: the run diverged" in note
    assert "Logged at the stop: loss nan" in note
    assert "No recommendation yet" in _note(study)


def test_what_a_person_wrote_above_the_marker_is_kept(prior):
    sampler = AutoPipeSampler(prior, FEATURES, seed=0, n_samples=256, budget=4, n_startup=2)
    study = optuna.create_study(direction="maximize", sampler=sampler)
    save_note(study, "## Our sweep\nlr ranges agreed with Ana.")
    study.optimize(_objective(prior), n_trials=1)
    trial = study.trials[0]
    save_note(live_trial(study, trial), "looked odd: check the data loader")
    study.optimize(_objective(prior), n_trials=1)
    assert _note(study).startswith("## Our sweep\nlr ranges agreed with Ana.\n\n" + notes.MARKER)
    assert "after 2 trials" in _note(study)
    # the trial's own note is AutoPipe's to rewrite only below the marker
    notes.save(study, trial, "rewritten")
    assert (
        _note(study, trial) == f"looked odd: check the data loader\n\n{notes.MARKER}\n\nrewritten"
    )


def test_the_hook_writes_the_early_stop_note_under_another_sampler():
    study = optuna.create_study(direction="maximize", sampler=optuna.samplers.RandomSampler(seed=0))
    study.optimize(_objective(None), n_trials=4)
    for trial in study.trials:
        note = _note(study, trial)
        assert "Early-stopped** at step 10 of 20" in note and "No proxy" in note
        assert "Chosen" not in note  # the random sampler explained nothing
    # ranked by the last intermediate value (the loss, negated in a maximised study)
    last = {t.number: t.intermediate_values[10] for t in study.trials}
    best = max(last, key=last.get)
    assert "ranks 1 of 4 early stops." in _note(study, study.trials[best])
    assert _note(study) == ""  # the study note is the sampler's


def test_the_bench_stores_its_studies_with_their_notes(tmp_path, nmt):
    from optuna_autopipe.bench.harness import BenchSpec, run_bench

    spec = BenchSpec(
        benchmark="nmt",
        methods=("autopipe",),
        budget=5,
        seeds=1,
        datasets=("ted-ru-en",),
        out=tmp_path,
        workers=1,
    )
    run_bench(spec)
    study = optuna.load_study(study_name="nmt/ted-ru-en/autopipe/seed0", storage=spec.storage_url)
    assert "**Recommended** after" in _note(study)
    # each note landed on its own trial: it quotes that trial's numbers
    for trial in study.trials:
        note, attrs = _note(study, trial), trial.user_attrs
        if "autopipe:proxy" in attrs:
            assert f"**{attrs['autopipe:proxy']:.3g}** ±" in note
        if trial.state == TrialState.COMPLETE:
            assert f"value **{trial.value:.6g}**" in note
        if "autopipe:acquisition" in attrs and attrs["autopipe:phase"] == "bo":
            assert f"= **{attrs['autopipe:acquisition']:.3g}**" in note


def test_the_full_dynamics_and_their_plot_go_to_the_artifact_store(tmp_path):
    store = optuna.artifacts.FileSystemArtifactStore(str(tmp_path))
    study = optuna.create_study()

    def objective(trial: optuna.Trial) -> float:
        hook = AutoPipeEarlyStop(trial, total_steps=400, max_points=10, artifact_store=store)
        for step in range(1, 401):
            if hook.report(step, {"loss": 3 - step / 400, "grad_norm": 1.0}):
                break
        hook.finish()
        return 0.0

    study.optimize(objective, n_trials=1)
    (trial,) = study.trials
    metas = {
        m.filename: m for m in optuna.artifacts.get_all_artifact_meta(trial, storage=study._storage)
    }
    assert set(metas) == {"dynamics.json", "dynamics.png"}
    with store.open_reader(metas["dynamics.json"].artifact_id) as reader:
        full = TrainingDynamics.from_json(json.loads(reader.read()))
    assert [len(s) for s in full.metrics.values()] == [200, 200]  # every point, to the stop
    stored = TrainingDynamics.from_json(trial.user_attrs["autopipe:dynamics"])
    assert [len(s) for s in stored.metrics.values()] == [10, 10]  # the attr stays thinned
    with store.open_reader(metas["dynamics.png"].artifact_id) as reader:
        assert reader.read(8) == b"\x89PNG\r\n\x1a\n"


def test_the_trial_counts_name_each_kind_of_trial_for_what_it_is():
    from optuna.trial import create_trial

    dist = {"x": FloatDistribution(0.0, 1.0)}
    trials = [
        create_trial(params={"x": 0.1}, distributions=dist, value=1.0),
        create_trial(params={"x": 0.2}, distributions=dist, value=math.inf),
        create_trial(
            params={"x": 0.3}, distributions=dist, value=2.0, user_attrs={"fidelity": 0.5}
        ),
        # a multi-fidelity peer's rung promotion: resumed from an early stop, pruned again
        create_trial(
            params={"x": 0.3},
            distributions=dist,
            state=TrialState.PRUNED,
            user_attrs={"autopipe:promoted_from": 2},
            intermediate_values={3: 1.5},
        ),
    ]
    assert notes.counts(trials) == (
        "4 trials: 0 early-stopped, 1 full-fidelity, 0 failed, 1 complete below full fidelity, "
        "1 complete with a value that is not finite, 1 pruned by the pruner; "
        "promoted from early stops: 1 (1 pruned)"
    )


def test_a_trial_that_raised_mid_run_is_not_said_to_have_logged_nothing(prior):
    sampler = AutoPipeSampler(prior, FEATURES, seed=0, n_samples=256, budget=3, n_startup=2)
    study = optuna.create_study(direction="maximize", sampler=sampler)

    def objective(trial: optuna.Trial) -> float:
        trial.suggest_float("x", 0.0, 1.0), trial.suggest_float("w", 0.0, 1.0)
        hook = AutoPipeEarlyStop(trial, total_steps=20, regressor=prior.regressor, dataset=FEATURES)
        for step in range(1, 8):
            hook.report(step, {"loss": 3.0 - step / 10})
        raise RuntimeError("CUDA out of memory")  # before hook.finish()

    study.optimize(objective, n_trials=1, catch=(RuntimeError,))
    note = _note(study, study.trials[0])
    assert "Its last intermediate value is at step 7" in note
    assert "reported no training step" not in note


def test_an_enqueued_trial_says_why_its_residual_has_no_proxy(prior):
    assert prior.regressor is not None and prior.regressor.target == "residual"
    sampler = AutoPipeSampler(prior, FEATURES, seed=0, n_samples=256, budget=3, n_startup=2)
    study = optuna.create_study(direction="maximize", sampler=sampler)
    study.enqueue_trial({"x": 0.5, "w": 0.5})
    study.optimize(_objective(prior), n_trials=1)
    note = _note(study, study.trials[0])
    assert "No proxy: the regressor's residual" in note and "did not choose this one" in note


def test_a_run_that_diverged_before_its_early_stop_is_a_failure_not_a_candidate(prior):
    """A too-high learning rate: the loss is NaN at the cut. Such a stop is not observed,
    not promoted, not recommended, and its region counts as failed."""
    rng = np.random.default_rng(0)

    def objective(trial: optuna.Trial) -> float:
        x, w = trial.suggest_float("x", 0.0, 1.0), trial.suggest_float("w", 0.0, 1.0)
        hook = AutoPipeEarlyStop(trial, total_steps=20, regressor=prior.regressor, dataset=FEATURES)
        for step, loss in enumerate(toy_losses(w - 0.5, rng), 1):
            if hook.report(step, {"loss": math.nan if x > 0.5 and step > 6 else float(loss)}):
                break
        hook.finish()
        return x + w

    sampler = AutoPipeSampler(prior, FEATURES, seed=0, n_samples=256, budget=8, n_startup=3)
    study = optuna.create_study(direction="maximize", sampler=sampler)
    study.enqueue_trial({"x": 0.9, "w": 0.9})  # diverges: the prior's kind of favourite
    study.enqueue_trial({"x": 0.2, "w": 0.3})
    study.optimize(objective, n_trials=8)
    lost = [t.number for t in study.trials if t.params["x"] > 0.5]
    assert 0 in lost and all(diverged(t) for t in study.trials if t.number in lost)
    ranked = [t.number for t in sampler.early_stop_ranking(study)]
    assert ranked and not set(ranked) & set(lost)
    assert sampler.recommend(study)["x"] <= 0.5
    promoted = promote_best(study, sampler)
    assert promoted and not set(promoted) & set(lost)
    assert "**The run diverged** before the stop" in _note(study, study.trials[0])
    later = [t for t in study.trials if t.number > 0 and "autopipe:failures" in t.user_attrs]
    assert later and all(t.user_attrs["autopipe:failures"] >= 1 for t in later)


def test_early_stops_that_lack_the_priors_cut_metric_are_warned_about(prior):
    assert prior.regressor is not None and prior.regressor.uses_cut
    rng = np.random.default_rng(0)

    def objective(trial: optuna.Trial) -> float:
        x, w = trial.suggest_float("x", 0.0, 1.0), trial.suggest_float("w", 0.0, 1.0)
        hook = AutoPipeEarlyStop(trial, total_steps=20, regressor=prior.regressor, dataset=FEATURES)
        for step, loss in enumerate(toy_losses(w - 0.5, rng), 1):
            if hook.report(step, {"val_loss": float(loss)}):  # the past studies logged "loss"
                break
        hook.finish()
        return x + w

    sampler = AutoPipeSampler(prior, FEATURES, seed=0, n_samples=256, budget=4, n_startup=2)
    study = optuna.create_study(direction="maximize", sampler=sampler)
    with pytest.warns(UserWarning, match=r"reads early stops by loss\..*lack.*\['val_loss'\]"):
        study.optimize(objective, n_trials=4)
