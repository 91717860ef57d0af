"""The peers' environment: benchmark methods from packages whose pins clash with the
project's (Syne Tune 0.13 needs numpy < 1.27, DEHB 0.1.2 numpy < 2) run in a separate
virtual environment that ``make peers`` builds (``.venv-peers``, the project installed
there too, ``peers-constraints.txt``).

The harness sends a dataset's jobs of such methods to that environment's Python
(``python -m optuna_autopipe.bench.peer_env JOBS RESULTS``, both pickle files), which runs
them exactly as the harness runs any job (``harness.run_jobs``) and returns each study's
trials, direction and outcome; the harness then writes them into its storage like any other
study. Inside the peers' environment the packages are importable, so the same methods run in
process there. Both environments must hold the same Optuna version (the trials cross as
pickles); a mismatch is refused with both versions named.
"""

from __future__ import annotations

import importlib.util
import os
import pickle
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import optuna

if TYPE_CHECKING:
    from optuna_autopipe.bench.harness import Job

#: Overrides where the peers' Python is (default: ``.venv-peers/bin/python`` in the checkout).
PEERS_PYTHON_ENV = "AUTOPIPE_PEERS_PYTHON"
#: Set in the peers' side of a call: a job it cannot run there is an error, not sent on.
_SERVING_ENV = "AUTOPIPE_PEERS_SERVING"
_CHECKOUT = Path(__file__).resolve().parents[2]


@dataclass(frozen=True)
class Peer:
    """A method from another package: the module that registers it, the package's import
    name and its pip requirement, and the method's revision (``methods.REVISIONS``)."""

    module: str
    package: str
    requirement: str
    revision: int = 1


_SYNE_TUNE = "syne-tune[gpsearchers]==0.13.0"
#: Peer methods by name (``autopipe bench --methods``).
PEERS = {
    **{
        name: Peer("optuna_autopipe.bench.peers.syne_tune_methods", "syne_tune", _SYNE_TUNE)
        for name in ("mobster", "hyper-tune", "asha-cts")
    },
    "priorband": Peer(
        "optuna_autopipe.bench.peers.neps_method", "neps", "neural-pipeline-search==0.13.0"
    ),
    "dehb": Peer("optuna_autopipe.bench.peers.dehb_method", "dehb", "dehb==0.1.2"),
}


def importable(method: str) -> bool:
    """Whether peer ``method``'s package is importable in this environment."""
    return importlib.util.find_spec(PEERS[method].package) is not None


class PeerEnvironmentError(RuntimeError):
    """The peers' environment could not run a job (its output attached)."""


def remote(method: str) -> bool:
    """Whether ``method`` must run in the peers' environment (a peer whose package this
    environment lacks).

    Raises:
        PeerEnvironmentError: this is the peers' environment and it lacks the package.
    """
    if method not in PEERS or importable(method):
        return False
    if os.environ.get(_SERVING_ENV):
        raise PeerEnvironmentError(
            f"The peers' environment ({sys.executable}) lacks {PEERS[method].requirement} "
            f"for {method!r}: build it with `make peers`, or point ${PEERS_PYTHON_ENV} at a "
            "Python that has it."
        )
    return True


def peers_python() -> Path:
    """The peers' environment's Python.

    Raises:
        FileNotFoundError: it does not exist; names the path and ``make peers``.
    """
    configured = os.environ.get(PEERS_PYTHON_ENV)
    path = Path(configured) if configured else _CHECKOUT / ".venv-peers" / "bin" / "python"
    if not path.is_file():
        why = "is not a file" if path.exists() else "does not exist"
        raise FileNotFoundError(_unusable(path, why))
    return path


def check_peers_python() -> None:
    """Make sure the peers' Python can run jobs: it imports ``optuna_autopipe`` and the
    harness's Optuna version (the trials cross as pickles).

    Raises:
        FileNotFoundError: it does not exist (``peers_python``).
        PeerEnvironmentError: it cannot be run, cannot import them, or has another Optuna;
            names the path, what failed and ``make peers``.
    """
    python = peers_python()
    probe = "import optuna, optuna_autopipe; print(optuna.__version__)"
    try:
        done = subprocess.run(
            [str(python), "-c", probe], capture_output=True, text=True, check=False
        )
    except OSError as exc:  # not executable, not a program
        raise PeerEnvironmentError(_unusable(python, f"cannot be run ({exc.strerror})")) from exc
    if done.returncode != 0:
        last = (done.stderr.strip().splitlines() or [f"exit {done.returncode}"])[-1]
        raise PeerEnvironmentError(_unusable(python, f"cannot import the project ({last})"))
    if done.stdout.strip() != optuna.__version__:
        other = f"has Optuna {done.stdout.strip()}, the harness {optuna.__version__}"
        raise PeerEnvironmentError(_unusable(python, other))


def _unusable(python: Path, why: str) -> str:
    """The error for a peers' Python that cannot serve: ``why``, and how to get one."""
    return (
        f"The peers' environment ({python}) {why}: the peer methods {sorted(PEERS)} run "
        "there because their pins clash with this environment's numpy. Build it with "
        f"`make peers` (or point ${PEERS_PYTHON_ENV} at a Python that has them and this "
        "project)."
    )


def run_remote(jobs: list[Job]) -> list[tuple[Job, tuple[Any, ...]]]:
    """Run ``jobs`` in the peers' environment; returns what ``harness.run_jobs`` returns.

    Raises:
        FileNotFoundError: no peers' environment (``peers_python``).
        PeerEnvironmentError: the run failed there (its last output attached), or the
            environments' Optuna versions differ.
    """
    python = peers_python()
    with tempfile.TemporaryDirectory(prefix="autopipe-peers-") as folder:
        request, reply = Path(folder) / "jobs.pkl", Path(folder) / "results.pkl"
        request.write_bytes(pickle.dumps((optuna.__version__, jobs)))
        done = subprocess.run(
            [str(python), "-m", "optuna_autopipe.bench.peer_env", str(request), str(reply)],
            env={**os.environ, "PYTHONHASHSEED": "0", _SERVING_ENV: "1"},
            capture_output=True,
            text=True,
            check=False,
        )
        if done.returncode != 0:
            names = sorted({f"{job.method} on {job.dataset}" for job in jobs})
            raise PeerEnvironmentError(
                f"The peers' environment ({python}) failed running {names} "
                f"(exit {done.returncode}):\n{done.stderr[-3000:]}"
            )
        return pickle.loads(reply.read_bytes())


def _serve(request: Path, reply: Path) -> None:
    """The peers' side: run the pickled jobs, pickle the results."""
    from optuna_autopipe.bench.harness import run_jobs

    version, jobs = pickle.loads(request.read_bytes())
    if version != optuna.__version__:
        raise PeerEnvironmentError(
            f"Optuna {optuna.__version__} in the peers' environment, {version} in the "
            "harness's: rebuild it with `make peers`."
        )
    reply.write_bytes(pickle.dumps(run_jobs(jobs)))


if __name__ == "__main__":
    _serve(Path(sys.argv[1]), Path(sys.argv[2]))
