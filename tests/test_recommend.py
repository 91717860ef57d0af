"""``autopipe recommend``: the sampler's own recommendation of a study in SQLite or a journal,
its evidence, ``--enqueue`` (one verification, never two) and errors naming the study, the
storage and what is missing."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import numpy as np
import optuna
import pytest
from conftest import runs_with_dynamics, toy_losses
from optuna.distributions import FloatDistribution
from optuna.storages import JournalStorage
from optuna.storages.journal import JournalFileBackend
from optuna.trial import TrialState, create_trial

from optuna_autopipe.cli import main
from optuna_autopipe.corpus import Corpus, DatasetRuns
from optuna_autopipe.dynamics import DYNAMICS_ATTR, TrainingDynamics
from optuna_autopipe.early_stop import (
    FRACTION_ATTR,
    PROMOTED_FROM_ATTR,
    STOP_STEP_ATTR,
    AutoPipeEarlyStop,
)
from optuna_autopipe.ensemble import TreeParams
from optuna_autopipe.prior import Prior, fit_prior
from optuna_autopipe.promotion import promote_best
from optuna_autopipe.sampler import AutoPipeSampler

SPACE = {"x": FloatDistribution(0.0, 1.0), "w": FloatDistribution(0.0, 1.0)}
FEATURES = {"size": 1.5}


@pytest.fixture(scope="module")
def prior(tmp_path_factory: pytest.TempPathFactory) -> tuple[Prior, Path]:
    """A prior (ranker reading the dataset feature ``size``, early-stop regressors whose
    cut signal the sampler uses) and the directory it is saved in."""
    fitted = fit_prior(
        Corpus(SPACE, [runs_with_dynamics(f"d{i}", i) for i in range(4)]),
        grid=[TreeParams(n_estimators=20)],
        n_models=1,
    )
    assert fitted.regressor is not None and fitted.regressor.uses_cut
    assert "size" in fitted.ranker.dataset_features
    path = tmp_path_factory.mktemp("prior")
    fitted.save(path)
    return fitted, path


def _objective(prior: Prior, seed: int = 0):
    """Stops at 50% with the prior's regressor; a promoted trial runs on and returns x + w."""
    rng = np.random.default_rng(seed)

    def objective(trial: optuna.Trial) -> float:
        x, w = trial.suggest_float("x", 0.0, 1.0), trial.suggest_float("w", 0.0, 1.0)
        hook = AutoPipeEarlyStop(trial, total_steps=20, regressor=prior.regressor, dataset=FEATURES)
        for step, loss in enumerate(toy_losses(w - 0.5, rng), 1):
            if hook.report(step, {"loss": float(loss)}):
                break
        hook.finish()
        return x + w

    return objective


def _storage(tmp_path: Path, kind: str) -> tuple[str, str | optuna.storages.BaseStorage]:
    """The storage as the command takes it, and as a test opens it."""
    if kind == "sqlite":
        url = f"sqlite:///{tmp_path / 'study.db'}"
        return url, url
    path = str(tmp_path / "study.journal")
    return path, JournalStorage(JournalFileBackend(path))


def _early_stopped(prior: Prior, storage, n: int = 6) -> tuple[optuna.Study, AutoPipeSampler]:
    sampler = AutoPipeSampler(prior, FEATURES, seed=0, n_samples=256, budget=n)
    study = optuna.create_study(
        study_name="sft", storage=storage, direction="maximize", sampler=sampler
    )
    study.optimize(_objective(prior), n_trials=n)
    assert [t.state for t in study.trials] == [TrialState.PRUNED] * n
    return study, sampler


def _run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(["recommend", *argv])
    out, err = capsys.readouterr()
    return code, out, err


def _recommended(out: str) -> dict:
    line = next(s for s in out.splitlines() if s.startswith("Recommended configuration: "))
    return ast.literal_eval(line.removeprefix("Recommended configuration: "))


@pytest.mark.parametrize("kind", ["sqlite", "journal"])
def test_the_printed_recommendation_is_the_samplers_own_with_and_without_the_prior(
    prior, tmp_path, capsys, kind
):
    fitted, prior_dir = prior
    url, storage = _storage(tmp_path, kind)
    study, sampler = _early_stopped(fitted, storage)

    code, out, err = _run(capsys, "--storage", url, "--study", "sft", "--prior", str(prior_dir))
    assert code == 0, err
    assert _recommended(out) == sampler.recommend(study)
    assert (
        "6 trials: 6 early-stopped, 0 full-fidelity, 0 failed; promoted from early stops: 0" in out
    )
    assert "not verified: no full-fidelity result of it yet" in out
    # its early stop: the score at the cut the prior reads it by, first of the six
    assert re.search(r"early stop: trial \d, stopped at step 10 \(50% of training\)", out)
    assert "loss.late.max at the cut" in out and "rank 1 of 6 early stops" in out
    assert "prior score s(x) the sampler recorded" in out
    assert f"--prior {prior_dir} --enqueue" in out and "verify(study, {" in out

    code, out, _ = _run(capsys, "--storage", url, "--study", "sft")
    assert code == 0
    assert _recommended(out) == AutoPipeSampler().recommend(study)  # read by the proxies
    assert "pass --prior DIR for the sampler's own reading" in out
    assert len(study.trials) == 6  # nothing enqueued without --enqueue


@pytest.mark.parametrize("kind", ["sqlite", "journal"])
def test_enqueue_adds_one_verification_and_never_a_second(prior, tmp_path, capsys, kind):
    fitted, prior_dir = prior
    url, storage = _storage(tmp_path, kind)
    study, sampler = _early_stopped(fitted, storage)
    best = sampler.recommend(study)
    early = next(t for t in study.trials if t.params == best)
    argv = ("--storage", url, "--study", "sft", "--prior", str(prior_dir), "--enqueue")

    code, out, err = _run(capsys, *argv)
    assert code == 0, err
    assert "Enqueued trial 6 (WAITING) to verify it: promoted from early-stopped trial" in out
    waiting = study.get_trials(states=(TrialState.WAITING,))
    assert len(study.trials) == 7 and [t.number for t in waiting] == [6]
    assert waiting[0].system_attrs["fixed_params"] == best
    assert waiting[0].user_attrs[PROMOTED_FROM_ATTR] == early.number

    code, out, _ = _run(capsys, *argv)
    assert code == 0 and len(study.trials) == 7
    assert "Not enqueued: trial 6 (WAITING) already verifies this configuration" in out

    running = study.ask()  # a worker takes it
    assert running.number == 6
    code, out, _ = _run(capsys, *argv)
    assert "Not enqueued: trial 6 (RUNNING)" in out and len(study.trials) == 7
    study.tell(running, _objective(fitted)(running))

    code, out, _ = _run(capsys, *argv)
    assert code == 0 and len(study.trials) == 7
    assert "Not enqueued: trial 6 already ran this configuration at full fidelity" in out
    assert _recommended(out) == sampler.recommend(study) == best
    assert f"verified: trial 6 ran it at full fidelity, value {best['x'] + best['w']:.6g}" in out
    assert f"(promoted from trial {early.number})" in out
    assert "verified already (trial 6); nothing to run." in out


def test_after_the_promotions_the_recommendation_is_the_best_verified_run(prior, tmp_path, capsys):
    fitted, prior_dir = prior
    url, storage = _storage(tmp_path, "sqlite")
    study, sampler = _early_stopped(fitted, storage)
    promoted = promote_best(study, sampler)
    assert len(promoted) == 3
    argv = ("--storage", url, "--study", "sft", "--prior", str(prior_dir))

    _, out, _ = _run(capsys, *argv)
    assert "9 trials: 6 early-stopped, 0 full-fidelity, 0 failed, 3 waiting; " in out
    assert "promoted from early stops: 3 (3 waiting)" in out
    assert "verifies it already: run it with the study's objective" in out

    study.optimize(_objective(fitted), n_trials=3)
    _, out, _ = _run(capsys, *argv, "--enqueue")
    best = sampler.recommend(study)
    assert _recommended(out) == best
    assert "9 trials: 6 early-stopped, 3 full-fidelity, 0 failed; " in out
    assert "promoted from early stops: 3 (3 complete)" in out
    full = sorted(
        (t for t in study.trials if t.state == TrialState.COMPLETE), key=lambda t: -t.value
    )
    assert full[0].params == best
    listed = re.findall(r"^    trial (\d+): ", out, flags=re.MULTILINE)
    assert [int(n) for n in listed] == [t.number for t in full]
    assert "Spearman" in out  # the signal's order of the 3 promoted runs
    assert f"Not enqueued: trial {full[0].number} already ran" in out and len(study.trials) == 9


def test_a_study_not_run_by_autopipe_gets_its_best_complete_trial_with_a_note(tmp_path, capsys):
    url, storage = _storage(tmp_path, "sqlite")
    study = optuna.create_study(
        study_name="tpe", storage=storage, sampler=optuna.samplers.RandomSampler(seed=0)
    )

    def objective(trial):
        x = trial.suggest_float("x", -1.0, 1.0)
        if trial.number == 2:
            raise RuntimeError("out of memory")
        return x**2

    study.optimize(objective, n_trials=6, catch=(RuntimeError,))
    code, out, _ = _run(capsys, "--storage", url, "--study", "tpe", "--enqueue")
    assert code == 0
    assert _recommended(out) == study.best_params
    assert (
        "6 trials: 0 early-stopped, 5 full-fidelity, 1 failed; promoted from early stops: 0" in out
    )
    assert "No trial carries AutoPipe's attrs" in out
    assert f"Not enqueued: trial {study.best_trial.number} already ran" in out
    assert len(study.trials) == 6


def _add(study: optuna.Study, state: TrialState, x: float, value=None, **attrs) -> None:
    study.add_trial(
        create_trial(
            state=state,
            value=value,
            params={"x": x, "w": 0.5},
            distributions=SPACE,
            user_attrs=attrs,
        )
    )


def _cut_without_proxy(rng: np.random.Generator, quality: float) -> dict:
    """The attrs of an early stop at 50% by a hook without a regressor: no proxy."""
    dynamics = TrainingDynamics(total_steps=20)
    for step, loss in enumerate(toy_losses(quality, rng)[:10], 1):
        dynamics.record(step, {"loss": float(loss)})
    return {
        DYNAMICS_ATTR: dynamics.to_json(),
        STOP_STEP_ATTR: 10,
        FRACTION_ATTR: 0.5,
        "fidelity": 0.5,
    }


def test_early_stops_without_a_proxy_need_the_prior_and_are_read_with_it(prior, tmp_path, capsys):
    fitted, prior_dir = prior
    url, storage = _storage(tmp_path, "journal")
    study = optuna.create_study(study_name="cut", storage=storage, direction="maximize")
    rng = np.random.default_rng(1)
    for x, quality in [(0.1, -1.0), (0.2, 1.5), (0.3, 0.0)]:
        _add(study, TrialState.PRUNED, x, **_cut_without_proxy(rng, quality))

    code, _, err = _run(capsys, "--storage", url, "--study", "cut")
    assert code == 2
    assert f"Study 'cut' in storage {url}: nothing to recommend" in err
    assert "needs --prior DIR" in err and "3 early-stopped" in err

    code, out, err = _run(capsys, "--storage", url, "--study", "cut", "--prior", str(prior_dir))
    assert code == 0, err
    assert _recommended(out) == AutoPipeSampler(fitted, FEATURES).recommend(study)
    assert _recommended(out) == {"x": 0.2, "w": 0.5}  # the best loss at the cut
    assert "no proxy, loss.late.max at the cut" in out


def test_a_study_without_a_finished_trial_names_what_it_holds(tmp_path, capsys):
    url, storage = _storage(tmp_path, "sqlite")
    study = optuna.create_study(study_name="empty", storage=storage)
    _add(study, TrialState.FAIL, 0.1)
    study.enqueue_trial({"x": 0.2, "w": 0.5})
    code, out, err = _run(capsys, "--storage", url, "--study", "empty", "--enqueue")
    assert code == 2 and out == ""
    assert f"Study 'empty' in storage {url}: nothing to recommend: no COMPLETE" in err
    assert "2 trials: 0 early-stopped, 0 full-fidelity, 1 failed, 1 waiting" in err
    assert len(study.trials) == 2


def test_an_unknown_study_lists_the_studies_of_the_storage(tmp_path, capsys):
    url, storage = _storage(tmp_path, "journal")
    for name in ("b", "a"):
        optuna.create_study(study_name=name, storage=storage)
    code, _, err = _run(capsys, "--storage", url, "--study", "c")
    assert code == 2
    assert f"No study 'c' in storage {url}; the studies it holds: 'a', 'b'." in err


@pytest.mark.parametrize("kind", ["sqlite", "journal"])
def test_a_missing_storage_file_is_named_and_not_created(tmp_path, capsys, kind):
    url = {"sqlite": f"sqlite:///{tmp_path / 'study.db'}", "journal": str(tmp_path / "j.log")}[kind]
    code, _, err = _run(capsys, "--storage", url, "--study", "sft")
    assert code == 2 and f"Storage {url}: no such" in err
    assert not any(tmp_path.iterdir())


def test_an_sqlite_file_given_as_a_path_is_not_read_as_a_journal(tmp_path, capsys):
    optuna.create_study(study_name="s", storage=_storage(tmp_path, "sqlite")[1])
    path = str(tmp_path / "study.db")
    code, _, err = _run(capsys, "--storage", path, "--study", "s")
    assert code == 2 and f"Storage {path} is not a journal" in err
    assert "an SQLite database is sqlite:///PATH" in err


@pytest.mark.parametrize(
    ("content", "said"),
    [
        ('{"a": 1}\n', " is not a journal"),
        ("[1, 2]\n", " is not a journal"),
        ('{"op_code": 99}\n', " is not a journal"),
        # Optuna skips a line that is not JSON (a write cut short): an empty journal
        ("hello world\n", "; the studies it holds: none (a path is read as an Optuna journal"),
    ],
)
def test_a_file_that_is_not_a_journal_is_named_not_a_traceback(tmp_path, capsys, content, said):
    path = tmp_path / "notes.txt"
    path.write_text(content)
    code, _, err = _run(capsys, "--storage", str(path), "--study", "s")
    assert code == 2 and f"{path}{said}" in err
    assert path.read_text() == content  # left as it was


def test_a_directory_or_a_url_missing_its_slashes_is_named(tmp_path, capsys):
    code, _, err = _run(capsys, "--storage", str(tmp_path), "--study", "s")
    assert code == 2 and "is a directory, not a journal file" in err
    code, _, err = _run(capsys, "--storage", f"sqlite:{tmp_path}/x.db", "--study", "s")
    assert code == 2 and "is neither a URL (scheme://...) nor a file" in err
    assert not any(tmp_path.iterdir())


def test_an_unreachable_server_is_named_without_its_password(capsys):
    url = "postgresql+psycopg2://autopipe:secret@127.0.0.1:1/autopipe"
    code, out, err = _run(capsys, "--storage", url, "--study", "sft")
    assert code == 2
    assert "Cannot open storage postgresql+psycopg2://autopipe:***@127.0.0.1:1/autopipe" in err
    assert "secret" not in out + err


def test_a_multi_objective_study_is_refused(tmp_path, capsys):
    url, storage = _storage(tmp_path, "sqlite")
    optuna.create_study(study_name="two", storage=storage, directions=["maximize", "minimize"])
    code, _, err = _run(capsys, "--storage", url, "--study", "two")
    assert code == 2 and f"Study 'two' in storage {url} has 2 objectives" in err


def _corrupt(directory: Path) -> Path:
    (directory / "prior.json").write_text("[1]")
    return directory


@pytest.mark.parametrize(
    ("make", "says"),
    [
        (lambda d: d / "nowhere", "is not a directory"),
        (lambda d: d, "ranker.json not found: not a saved prior"),
        (_corrupt, "is not a prior record"),
    ],
    ids=["missing", "empty", "corrupt"],
)
def test_a_prior_that_does_not_load_names_the_study_the_storage_and_the_directory(
    tmp_path, capsys, make, says
):
    url, storage = _storage(tmp_path, "sqlite")
    study = optuna.create_study(study_name="s", storage=storage)
    _add(study, TrialState.COMPLETE, 0.1, value=1.0)
    prior_dir = tmp_path / "prior"
    prior_dir.mkdir()
    given = make(prior_dir)
    code, _, err = _run(capsys, "--storage", url, "--study", "s", "--prior", str(given))
    assert code == 2
    assert f"Study 's' in storage {url}: --prior {given}" in err and says in err


def test_a_failed_verification_is_not_enqueued_again_unless_asked(prior, tmp_path, capsys):
    fitted, prior_dir = prior
    url, storage = _storage(tmp_path, "sqlite")
    study, _ = _early_stopped(fitted, storage)
    argv = ("--storage", url, "--study", "sft", "--prior", str(prior_dir), "--enqueue")
    assert _run(capsys, *argv)[0] == 0
    verification = study.ask()  # a worker takes it, and the run fails (out of memory, say)
    study.tell(verification, state=TrialState.FAIL)

    code, out, _ = _run(capsys, *argv)
    assert code == 0 and len(study.trials) == 7
    assert f"Not enqueued: trial {verification.number} verifying this configuration FAILED" in out
    code, out, _ = _run(capsys, *argv, "--retry-failed")
    assert code == 0 and len(study.trials) == 8
    assert "Enqueued trial 7 (WAITING) to verify it" in out


def test_a_prior_fitted_on_other_parameters_is_refused(tmp_path, capsys):
    other = {"lr": FloatDistribution(1e-4, 1e-2, log=True), "w": FloatDistribution(0.0, 1.0)}
    corpus = Corpus(
        other,
        [
            DatasetRuns(
                f"d{i}",
                "maximize",
                {"size": float(i)},
                [{"lr": 10 ** -(2 + j / 10), "w": j / 20} for j in range(20)],
                np.arange(20.0) * (i + 1),
            )
            for i in range(3)
        ],
    )
    fit_prior(corpus, grid=[TreeParams(n_estimators=20)], n_models=1).save(tmp_path / "other")
    fitted_url, storage = _storage(tmp_path, "journal")
    study = optuna.create_study(study_name="sft", storage=storage, direction="maximize")
    study.optimize(lambda t: t.suggest_float("x", 0, 1) + t.suggest_float("w", 0, 1), n_trials=2)
    code, _, err = _run(
        capsys, "--storage", fitted_url, "--study", "sft", "--prior", str(tmp_path / "other")
    )
    assert code == 2
    assert "the prior was fitted on parameters ['lr', 'w'], and the study has ['x']" in err
