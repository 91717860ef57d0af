"""Peer methods (Syne Tune, NePS, DEHB) and the peers' environment they run in."""

from __future__ import annotations

import pickle
import sys

import numpy as np
import optuna
import pytest

from optuna_autopipe.bench import harness, peer_env
from optuna_autopipe.bench.harness import BenchSpec, Job, run_bench
from optuna_autopipe.bench.methods import get_method, method_revision

DATASET = "ted-ru-en"


def _spec(tmp_path, methods: tuple[str, ...], budget: int = 2) -> BenchSpec:
    """One seed of ``methods`` on NMT's ``DATASET``, one worker."""
    return BenchSpec(
        benchmark="nmt",
        methods=methods,
        out=tmp_path,
        budget=budget,
        seeds=1,
        datasets=(DATASET,),
        workers=1,
    )


def _job(tmp_path, method: str, seed: int = 0, budget: int = 3) -> Job:
    return Job(_spec(tmp_path, (method,), budget), DATASET, method, seed)


def test_a_job_sent_to_the_peers_environment_comes_back_as_if_run_here(tmp_path, monkeypatch):
    monkeypatch.setenv(peer_env.PEERS_PYTHON_ENV, sys.executable)
    job = _job(tmp_path, "tpe")
    ((job_back, (trials, direction, record, notes)),) = peer_env.run_remote([job])
    ((_, (own_trials, own_direction, own_record, own_notes)),) = harness.run_jobs([job])
    assert job_back == job and direction == own_direction == "minimize"
    assert [(t.params, t.value) for t in trials] == [(t.params, t.value) for t in own_trials]
    assert record == own_record and notes == own_notes


def test_a_peer_without_its_environment_names_make_peers(tmp_path, monkeypatch):
    if peer_env.importable("mobster"):
        pytest.skip("syne_tune is importable here: this is the peers' environment")
    monkeypatch.setenv(peer_env.PEERS_PYTHON_ENV, str(tmp_path / "no-such-python"))
    spec = _spec(tmp_path, ("mobster",))
    with pytest.raises(FileNotFoundError, match=r"make peers"):
        run_bench(spec)
    with pytest.raises(ValueError, match=r"syne-tune\[gpsearchers\]==0.13.0.*make peers"):
        get_method("mobster")
    assert method_revision("mobster") == peer_env.PEERS["mobster"].revision


def test_a_failure_in_the_peers_environment_is_reported_with_its_output(tmp_path, monkeypatch):
    broken = tmp_path / "python"
    broken.write_text("#!/bin/sh\necho 'peers: something broke' >&2\nexit 3\n")
    broken.chmod(0o755)
    monkeypatch.setenv(peer_env.PEERS_PYTHON_ENV, str(broken))
    with pytest.raises(RuntimeError, match=r"(?s)tpe on ted-ru-en.*exit 3.*something broke"):
        peer_env.run_remote([_job(tmp_path, "tpe")])


def test_the_environments_must_share_optunas_version(tmp_path):
    request = tmp_path / "jobs.pkl"
    request.write_bytes(pickle.dumps(("0.0.1", [_job(tmp_path, "tpe")])))
    with pytest.raises(RuntimeError, match=r"0\.0\.1 in the harness's.*make peers"):
        peer_env._serve(request, tmp_path / "results.pkl")
    assert not (tmp_path / "results.pkl").exists()


class _Halving:
    """A scripted promotion-type peer: three runs to level 2, then the best one promoted
    to the end, then fresh full runs; records what it was told."""

    def __init__(self, task) -> None:
        self.configs = task.pool()[0][:40]
        self.levels = task.n_steps
        self.told: dict = {}
        self.asked = 0

    def ask(self):
        from optuna_autopipe.bench.peers.driver import Proposal

        self.asked += 1
        if self.asked <= 3:
            return Proposal(key=self.asked, config=self.configs[self.asked], stop_at=2)
        if self.asked == 4:
            best = min((1, 2, 3), key=lambda k: self.told[k][1])
            return Proposal(
                key="promoted", config=self.configs[best], stop_at=self.levels, resume=best
            )
        return Proposal(key=self.asked, config=self.configs[self.asked], stop_at=self.levels)

    def on_step(self, key, level, value):  # pragma: no cover - every proposal has stop_at
        raise AssertionError("not a stopping-type peer")

    def tell(self, key, level, value):
        self.told[key] = (level, value)


def test_the_driver_runs_a_peers_promotions_resuming_their_runs(nmt):
    from objectives.replay import resumed
    from optuna_autopipe.bench.methods import Context
    from optuna_autopipe.bench.peers.driver import drive
    from optuna_autopipe.early_stop import PROMOTED_FROM_ATTR

    task = nmt.task(DATASET)
    ctx = Context(task=task, offline=[], seed=3, budget=3, evaluations={}, study_name="x")
    peer = _Halving(task)
    study = drive(ctx, peer)
    trials = study.trials
    assert [t.last_step for t in trials[:3]] == [2, 2, 2]
    assert all(t.state == optuna.trial.TrialState.PRUNED for t in trials[:3])
    best = min((1, 2, 3), key=lambda k: peer.told[k][1])
    promoted = trials[3]
    assert promoted.params == trials[best - 1].params
    assert promoted.user_attrs[PROMOTED_FROM_ATTR] == best - 1
    assert sorted(promoted.intermediate_values)[0] == 3  # resumed after level 2
    # the promotion continues the same run: its values are what a fresh run would show
    fresh = optuna.create_study(direction="minimize")
    fresh.enqueue_trial(promoted.params)
    fresh.optimize(task.objective(seed=3), n_trials=1)
    own_run = fresh.trials[0].intermediate_values
    assert all(own_run[k] == v for k, v in promoted.intermediate_values.items())
    last = max(promoted.intermediate_values)
    assert peer.told["promoted"] == (min(last, task.n_steps), promoted.intermediate_values[last])
    # costs: the promotion pays only what its first part did not, then full runs until the
    # budget of 3 full runs is spent
    first, rest = ctx.evaluations[best - 1], ctx.evaluations[3]
    assert rest.fidelity == 1.0 and first.cost + rest.cost == pytest.approx(1.0)
    assert first.cost == pytest.approx(2 / len(own_run))
    costs = [ctx.evaluations[t.number].cost for t in trials]
    assert 3 - max(costs) < sum(costs) <= 3 + 1e-9
    assert trials[-1].user_attrs["budget_exhausted"]
    assert resumed(promoted)[0] == best - 1


def test_a_stopping_peer_decides_at_every_level(nmt):
    from optuna_autopipe.bench.methods import Context
    from optuna_autopipe.bench.peers.driver import Proposal, drive

    task = nmt.task(DATASET)
    seen = []

    class StopAtFour:
        n = 0

        def ask(self):
            self.n += 1
            return Proposal(key=self.n, config=task.pool()[0][self.n])

        def on_step(self, key, level, value):
            seen.append((key, level))
            return level < 4

        def tell(self, key, level, value):
            assert level == 4

    ctx = Context(task=task, offline=[], seed=0, budget=1, evaluations={}, study_name="x")
    study = drive(ctx, StopAtFour())
    assert seen[:4] == [(1, 1), (1, 2), (1, 3), (1, 4)]
    assert all(t.last_step <= 4 for t in study.trials)


def _peers_environment() -> None:
    """Skip unless the peers' environment exists (``make peers``)."""
    try:
        peer_env.peers_python()
    except FileNotFoundError as missing:
        pytest.skip(f"peer adapters need the peers' environment: {missing}")


@pytest.mark.slow
@pytest.mark.parametrize("method", sorted(peer_env.PEERS))
def test_each_peer_spends_its_budget_reproducibly_in_the_peers_environment(method, tmp_path):
    from optuna_autopipe.early_stop import PROMOTED_FROM_ATTR

    _peers_environment()
    job = _job(tmp_path, method, seed=1, budget=2)
    ((_, (trials, direction, record, _)),) = peer_env.run_remote([job])
    assert direction == "minimize" and record["sources"] != ""
    # the last run is cut where the budget ends (an evaluation if it made a step)
    assert 1.5 < record["cost"] <= 2 + 1e-9 and len(trials) - record["n_evals"] in (0, 1)
    assert trials[-1].user_attrs["budget_exhausted"]
    # multi-fidelity: runs stopped at lower levels, some promoted and resumed
    assert any(t.state == optuna.trial.TrialState.PRUNED for t in trials[:-1])
    promoted = [t for t in trials if PROMOTED_FROM_ATTR in t.user_attrs]
    assert promoted or method == "dehb"  # DEHB promotes only in its first brackets
    for trial in promoted:
        source = trials[trial.user_attrs[PROMOTED_FROM_ATTR]]
        assert trial.params == source.params
        assert min(trial.intermediate_values) > min(source.intermediate_values)
    ((_, (again, _, _, _)),) = peer_env.run_remote([job])
    assert [(t.params, t.last_step) for t in again] == [(t.params, t.last_step) for t in trials]
    other = _job(tmp_path, method, seed=2, budget=2)
    ((_, (elsewhere, _, _, _)),) = peer_env.run_remote([other])
    assert [t.params for t in elsewhere] != [t.params for t in trials]


@pytest.mark.slow
def test_the_bench_runs_a_peer_beside_the_projects_methods_into_one_storage(tmp_path):
    import pandas as pd

    _peers_environment()
    spec = _spec(tmp_path, ("random", "dehb"))
    table = pd.read_csv(run_bench(spec).results)
    assert sorted(table.method) == ["dehb", "random"]
    stored = optuna.load_study(study_name=f"nmt/{DATASET}/dehb/seed0", storage=spec.storage_url)
    assert stored.user_attrs["bench"]["revision"] == method_revision("dehb")
    assert len(stored.trials) > 2


def test_a_peer_never_sees_a_single_valued_parameter_and_gets_its_value_back():
    from optuna.distributions import (
        CategoricalDistribution,
        FloatDistribution,
        IntDistribution,
    )

    from optuna_autopipe.bench.peers.driver import peer_space, task_config

    space = {
        "bpe": CategoricalDistribution([8]),
        "layers": IntDistribution(1, 9, step=2),
        "lr": FloatDistribution(1e-4, 1e-1, log=True),
        "size": CategoricalDistribution([256, 512]),
    }
    assert list(peer_space(space)) == ["layers", "lr", "size"]
    proposed = {"layers": 4.2, "lr": 0.10000000000000002, "size": np.int64(512)}
    config = task_config(space, proposed)
    assert config == {"bpe": 8, "layers": 5, "lr": 0.1, "size": 512}
    assert type(config["size"]) is int  # the task's own choice, not the peer's numpy scalar
    with pytest.raises(ValueError, match=r"size=300 is not one of \(256, 512\)"):
        task_config(space, {**proposed, "size": 300})
    with pytest.raises(ValueError, match=r"lacks parameter 'lr'"):
        task_config(space, {"layers": 3, "size": 256})


def test_a_peers_python_without_the_peer_fails_that_study_and_keeps_the_others(
    tmp_path, monkeypatch
):
    from optuna_autopipe.bench.job_failures import StudiesFailed

    if peer_env.importable("dehb"):
        pytest.skip("dehb is importable here: this is the peers' environment")
    # the main environment named as the peers' one: it lacks DEHB and must say so, not send
    # the job on to itself
    monkeypatch.setenv(peer_env.PEERS_PYTHON_ENV, sys.executable)
    spec = _spec(tmp_path, ("random", "dehb"))
    with pytest.raises(StudiesFailed, match=r"(?s)dehb/seed0: PeerEnvironmentError.*lacks dehb"):
        run_bench(spec)
    stored = optuna.get_all_study_summaries(spec.storage_url)
    assert [s.study_name for s in stored] == [f"nmt/{DATASET}/random/seed0"]
