"""optuna-dashboard on a storage written by ``autopipe bench``: both studies served through its
HTTP API with their trials, intermediate values, AutoPipe's explanation attrs and notes, and a
page that headless Chromium renders (skipped where Chromium is not installed; with
``AUTOPIPE_DASHBOARD_SHOT=PATH`` the screenshot is also saved there, e.g. docs/dashboard.png)."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import optuna
import pytest

from optuna_autopipe.early_stop import PROXY_ATTR, PROXY_VARIANCE_ATTR
from optuna_autopipe.notes import MARKER
from optuna_autopipe.sampler import EXPLANATION_ATTRS

pytest.importorskip("optuna_dashboard", reason="the dashboard extra: pip install -e '.[dashboard]'")

pytestmark = pytest.mark.dashboard

DATASET = "ted-ru-en"
STUDIES = {method: f"nmt/{DATASET}/{method}/seed0" for method in ("tpe", "autopipe")}
#: What ``AutoPipeSampler`` and the early-stop hook write on each early-stopped trial.
EXPLAIN = (*EXPLANATION_ATTRS, PROXY_ATTR, PROXY_VARIANCE_ATTR)
CHROMIUM_FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--window-size=1400,1000",
    "--virtual-time-budget=10000",
)


def _executable(name: str) -> str:
    """``name`` from this interpreter's environment, else from ``PATH``."""
    local = Path(sys.executable).with_name(name)
    found = str(local) if local.exists() else shutil.which(name)
    if found is None:
        pytest.fail(f"{name} not found next to {sys.executable} or on PATH")
    return found


@pytest.fixture(scope="module")
def storage(tmp_path_factory: pytest.TempPathFactory) -> str:
    """The storage URL of a 4-trial ``autopipe bench`` run of TPE and AutoPipe on one dataset."""
    out = tmp_path_factory.mktemp("bench")
    command = [_executable("autopipe"), "bench", "--benchmark", "nmt", "--methods", "tpe,autopipe"]
    command += ["--budget", "4", "--seeds", "1", "--datasets", DATASET, "--workers", "1"]
    done = subprocess.run(
        [*command, "--out", str(out)], capture_output=True, text=True, timeout=300, check=False
    )
    assert done.returncode == 0, done.stderr[-3000:]
    url = f"sqlite:///{out / 'bench.db'}"
    assert f"optuna-dashboard {url}" in done.stdout
    return url


@pytest.fixture(scope="module")
def dashboard(storage: str) -> Iterator[str]:
    """``optuna-dashboard <storage> --port <free port>`` running; yields its base URL."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    process = subprocess.Popen(
        [_executable("optuna-dashboard"), storage, "--port", str(port), "--host", "127.0.0.1"],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                _get(f"{base}/api/meta")
                break
            except OSError:
                if process.poll() is not None or time.monotonic() > deadline:
                    process.kill()
                    pytest.fail(f"optuna-dashboard did not start: {process.communicate()[0]}")
                time.sleep(0.25)
        yield base
    finally:
        process.terminate()
        process.wait(timeout=10)


def _get(url: str) -> Any:
    with urllib.request.urlopen(url, timeout=10) as response:
        return json.loads(response.read())


def _study_ids(base: str) -> dict[str, int]:
    summaries = _get(f"{base}/api/studies")["study_summaries"]
    return {s["study_name"]: s["study_id"] for s in summaries}


def test_the_dashboard_serves_both_studies_with_trials_curves_and_explanations(storage, dashboard):
    ids = _study_ids(dashboard)
    assert set(STUDIES.values()) <= set(ids)
    served = {m: _get(f"{dashboard}/api/studies/{ids[name]}") for m, name in STUDIES.items()}
    for method, name in STUDIES.items():
        trials = optuna.load_study(study_name=name, storage=storage).trials
        detail = served[method]
        assert detail["name"] == name and detail["has_intermediate_values"]
        assert [t["number"] for t in detail["trials"]] == [t.number for t in trials]
        for shown, trial in zip(detail["trials"], trials, strict=True):
            assert shown["state"] == trial.state.name.capitalize()
            curve = {v["step"]: v["value"] for v in shown["intermediate_values"]}
            assert curve == trial.intermediate_values and curve
            attrs = {a["key"]: a["value"] for a in shown["user_attrs"]}
            assert set(attrs) == set(trial.user_attrs)
    explained = [
        {a["key"]: a["value"] for a in t["user_attrs"]}
        for t in served["autopipe"]["trials"]
        if t["state"] == "Pruned"
    ]
    assert len(explained) == 4  # the budget, early-stopped, then one full verification
    for attrs in explained:
        assert set(EXPLAIN) <= set(attrs), set(EXPLAIN) - set(attrs)
        float(attrs["autopipe:acquisition"])
    assert [a["autopipe:phase"] for a in explained] == ["warm-start"] * 3 + ["bo"]
    tpe_keys = {a["key"] for t in served["tpe"]["trials"] for a in t["user_attrs"]}
    assert not tpe_keys & set(EXPLAIN)


def test_the_dashboard_serves_autopipes_notes_on_the_study_and_each_trial(storage, dashboard):
    ids = _study_ids(dashboard)
    served = {m: _get(f"{dashboard}/api/studies/{ids[name]}") for m, name in STUDIES.items()}
    autopipe = served["autopipe"]
    study_note = autopipe["note"]["body"]
    trials = autopipe["trials"]
    assert study_note.startswith(MARKER)
    assert f"**Recommended** after {len(trials)} trials" in study_note
    complete = sum(t["state"] == "Complete" for t in trials)
    assert f"4 early-stopped, {complete} full-fidelity" in study_note and complete >= 1
    for trial in autopipe["trials"]:
        body = trial["note"]["body"]
        attrs = {a["key"]: a["value"] for a in trial["user_attrs"]}
        assert body.startswith(MARKER), trial["number"]
        if trial["state"] == "Pruned":
            assert "**Early-stopped** at step" in body
            assert f"**{float(attrs[PROXY_ATTR]):.3g}** ±" in body
        if attrs.get("autopipe:phase") == "bo":
            assert f"= **{float(attrs['autopipe:acquisition']):.3g}**" in body
    assert "**Complete** at full fidelity" in autopipe["trials"][-1]["note"]["body"]
    # TPE ran full runs with no early stop: AutoPipe had nothing to say
    assert served["tpe"]["note"]["body"] == ""
    assert all(t["note"]["body"] == "" for t in served["tpe"]["trials"])


def test_headless_chromium_renders_an_autopipe_trial_page(dashboard, tmp_path):
    """Trial 3, the first chosen by BO, with its note, curve and explanation attrs (the
    image in docs/dashboard.md)."""
    from PIL import Image

    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if chromium is None:
        pytest.skip("chromium not installed (Debian: apt-get install -y chromium)")
    study_id = _study_ids(dashboard)[STUDIES["autopipe"]]
    shot = tmp_path / "dashboard.png"
    page = f"{dashboard}/dashboard/studies/{study_id}/trials?numbers=3"
    profile = f"--user-data-dir={tmp_path / 'profile'}"
    subprocess.run(
        [chromium, *CHROMIUM_FLAGS, profile, f"--screenshot={shot}", page],
        capture_output=True,
        timeout=120,
        check=True,
    )
    image = Image.open(shot).convert("RGB")
    assert image.size == (1400, 1000)
    assert len(image.getcolors(1 << 24)) > 200  # not a blank page
    # The trial detail (right of the trial list) is one flat colour until the study's data
    # has loaded and rendered: text and values make many colours and dark pixels there.
    detail = image.crop((280, 80, 1340, 980))
    assert len(detail.getcolors(1 << 24)) > 50
    dark = sum(count for count, rgb in detail.getcolors(1 << 24) if max(rgb) < 128)
    assert dark > 0.005 * detail.width * detail.height
    if os.environ.get("AUTOPIPE_DASHBOARD_SHOT"):
        shutil.copyfile(shot, os.environ["AUTOPIPE_DASHBOARD_SHOT"])
