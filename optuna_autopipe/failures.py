"""Failed configurations: never proposed again while others remain, and their region avoided.

The most common failure in LLM post-training is running out of memory at the largest batch,
sequence length or model, and it repeats: the same configuration fails the same way. So

- ``failed_numbers``: configurations whose trial FAILed and that never finished in another
  trial are excluded from the candidates while others are free (a failure that
  ``optuna.storages.RetryFailedTrialCallback`` is retrying, a WAITING or RUNNING trial naming
  it in its ``failed_trial`` system attr, does not count until the retry fails too). When
  nothing else is free, a failure whose run never reported (its worker died: Optuna's
  heartbeat failed it) is retried before a finished configuration runs again, but one whose
  run itself failed (the sampler's ``after_trial`` saw it end FAIL and marked it
  ``RUN_FAILED_ATTR``: an exception, out of memory, a NaN value) is not;
- ``FailureRisk``: the probability that a configuration fails, P(fail | x), a Gaussian
  process classifier (scikit-learn's ``GaussianProcessClassifier``: Laplace approximation,
  RBF kernel with one length scale per encoded column, fitted by marginal likelihood) on the
  finished (0) and failed (1) trials. Candidates with P(fail | x) above the sampler's
  ``max_failure_risk`` are not proposed while any other is free: the classifier learns
  which columns the failures depend on (the batch size, not the learning rate), so the
  region around an out-of-memory configuration is avoided, not only the point. This is the
  probability-of-feasibility idea of constrained BO (Gelbart, Snoek & Adams 2014), used as a
  filter because UCB values have no fixed sign to multiply.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterable

import numpy as np
from optuna.trial import FrozenTrial, TrialState
from sklearn.gaussian_process import GaussianProcessClassifier
from sklearn.gaussian_process.kernels import RBF, ConstantKernel

#: User attr the sampler sets on a trial whose run ended FAIL (not a worker that vanished).
RUN_FAILED_ATTR = "autopipe:run_failed"


def failed_numbers(trials: Iterable[FrozenTrial]) -> set[int]:
    """Numbers of FAILed trials that count as failures (not being retried)."""
    trials = list(trials)
    retried = {
        t.system_attrs["failed_trial"]
        for t in trials
        if t.state in (TrialState.WAITING, TrialState.RUNNING) and "failed_trial" in t.system_attrs
    }
    return {t.number for t in trials if t.state == TrialState.FAIL and t.number not in retried}


class FailureRisk:
    """P(fail | x) from encoded finished and failed configurations (module docstring).

    Args:
        finished: encoded configurations that ran to an outcome, shape ``(n, d)``.
        failed: encoded configurations that failed, shape ``(m, d)``.
        seed: the classifier optimiser's seed.

    With no failure the risk is 0 everywhere; with failures only (m of them, nothing
    finished yet) it is 1 at the failed points and (m + 1) / (m + 2) elsewhere (Laplace's
    rule of succession: every run so far failed). NaN inputs (inactive parameters) encode
    as 0.
    """

    def __init__(self, finished: np.ndarray, failed: np.ndarray, *, seed: int = 0) -> None:
        self._failed = np.nan_to_num(np.asarray(failed, dtype=float))
        self._model: GaussianProcessClassifier | None = None
        if len(self._failed) and len(finished):
            x = np.vstack([np.nan_to_num(np.asarray(finished, dtype=float)), self._failed])
            labels = np.r_[np.zeros(len(finished)), np.ones(len(self._failed))]
            kernel = ConstantKernel(1.0, (0.1, 100.0)) * RBF(
                np.full(x.shape[1], 0.3), length_scale_bounds=(0.05, 10.0)
            )
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # convergence notes on a handful of points
                self._model = GaussianProcessClassifier(kernel, random_state=seed).fit(x, labels)

    def predict(self, x: np.ndarray) -> np.ndarray:
        """P(fail) at encoded configurations ``x`` (n, d), shape ``(n,)``."""
        x = np.nan_to_num(np.asarray(x, dtype=float))
        if self._model is not None:
            return self._model.predict_proba(x)[:, 1]
        m = len(self._failed)
        if not m:
            return np.zeros(len(x))
        at_failed = (np.abs(x[:, None, :] - self._failed[None]).max(axis=2) < 1e-9).any(axis=1)
        return np.where(at_failed, 1.0, (m + 1) / (m + 2))
