"""Peer methods (Syne Tune, NePS, DEHB) and the peers' environment they run in."""

from __future__ import annotations

import pickle
import sys

import pytest

from optuna_autopipe.bench import harness, peer_env
from optuna_autopipe.bench.harness import BenchSpec, Job, run_bench
from optuna_autopipe.bench.methods import get_method, method_revision

DATASET = "ted-ru-en"


def _job(tmp_path, method: str, seed: int = 0, budget: int = 3) -> Job:
    spec = BenchSpec(
        benchmark="nmt", methods=(method,), out=tmp_path, budget=budget, seeds=1, workers=1
    )
    return Job(spec, DATASET, method, seed)


def test_a_job_sent_to_the_peers_environment_comes_back_as_if_run_here(tmp_path, monkeypatch):
    monkeypatch.setenv(peer_env.PEERS_PYTHON_ENV, sys.executable)
    job = _job(tmp_path, "tpe")
    ((job_back, (trials, direction, record)),) = peer_env.run_remote([job])
    ((_, (own_trials, own_direction, own_record)),) = harness.run_jobs([job])
    assert job_back == job and direction == own_direction == "minimize"
    assert [(t.params, t.value) for t in trials] == [(t.params, t.value) for t in own_trials]
    assert record == own_record


def test_a_peer_without_its_environment_names_make_peers(tmp_path, monkeypatch):
    if peer_env.importable("mobster"):
        pytest.skip("syne_tune is importable here: this is the peers' environment")
    monkeypatch.setenv(peer_env.PEERS_PYTHON_ENV, str(tmp_path / "no-such-python"))
    spec = BenchSpec(benchmark="nmt", methods=("mobster",), out=tmp_path, datasets=(DATASET,))
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
