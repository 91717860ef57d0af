"""The Gaussian process over residual corrections (paper B.3.1), with BoTorch / GPyTorch.

Inputs: encoded configurations ``x`` (n, d); targets: centred residuals ``y`` (n,); each point
has its own fixed observation variance ``noise`` (n,) (the regressor's variance, floored).
Kernel: scaled Matérn-5/2 with one length scale per input column (ARD), zero mean, with
BoTorch's classic Gamma(3, 6) prior on length scales and Gamma(2, 0.15) on the output scale
(they keep the fit stable on a handful of points). The hyperparameters are fitted by
maximising the exact marginal likelihood (when that fails, the initial ones are kept, with a
warning).
"""

from __future__ import annotations

import logging
import warnings
from typing import Literal

import numpy as np
import torch
from botorch.exceptions import ModelFittingError
from botorch.fit import fit_gpytorch_mll
from botorch.models import SingleTaskGP
from gpytorch.kernels import MaternKernel, ScaleKernel
from gpytorch.means import ZeroMean
from gpytorch.mlls import ExactMarginalLogLikelihood
from gpytorch.priors import GammaPrior
from linear_operator.utils.cholesky import psd_safe_cholesky

_logger = logging.getLogger(__name__)

#: Candidates scored per posterior call (bounds memory on large candidate sets).
_CHUNK = 2048


class ResidualGP:
    """Fit once on ``(x, y, noise)``; ``predict`` the posterior mean and standard deviation."""

    def __init__(self, x: np.ndarray, y: np.ndarray, noise: np.ndarray) -> None:
        if not (len(x) == len(y) == len(noise)) or len(y) == 0:
            raise ValueError("ResidualGP needs matching, non-empty x, y and noise.")
        train_x = torch.as_tensor(np.nan_to_num(x), dtype=torch.float64)
        train_y = torch.as_tensor(y, dtype=torch.float64).reshape(-1, 1)
        train_var = torch.as_tensor(noise, dtype=torch.float64).reshape(-1, 1)
        kernel = ScaleKernel(
            MaternKernel(
                nu=2.5, ard_num_dims=train_x.shape[1], lengthscale_prior=GammaPrior(3.0, 6.0)
            ),
            outputscale_prior=GammaPrior(2.0, 0.15),
        )
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # BoTorch's advice on input scaling and small data
            self.model = SingleTaskGP(
                train_x,
                train_y,
                train_Yvar=train_var,
                covar_module=kernel,
                mean_module=ZeroMean(),
                outcome_transform=None,
            )
            try:
                fit_gpytorch_mll(
                    ExactMarginalLogLikelihood(self.model.likelihood, self.model), max_attempts=2
                )
            except ModelFittingError:
                # Clustered points with very different targets defeat the optimiser; the
                # initial hyperparameters (length scales ~0.7 of the unit cube) still give a
                # sound, smoother posterior.
                _logger.warning("GP hyperparameter fit failed; using the initial ones.")
                self.model.covar_module.base_kernel.initialize(lengthscale=0.7)
                self.model.covar_module.initialize(outputscale=1.0)
        self.model.eval()
        with torch.no_grad():
            self._train_x = train_x
            gram = self.model.covar_module(train_x).to_dense() + torch.diag(train_var.reshape(-1))
            self._cholesky = psd_safe_cholesky(gram)
            self._alpha = torch.cholesky_solve(train_y, self._cholesky)
            # k(x_j, x_j) + N_j (+ any jitter the factorisation added), (n,)
            self._own_variance = (self._cholesky**2).sum(dim=1)

    def predict(
        self, x: np.ndarray, *, std: Literal["exact", "bound"] = "exact"
    ) -> tuple[np.ndarray, np.ndarray]:
        """Posterior mean μ(x) and standard deviation σ(x) of the latent function, (m,) each.

        Marginals only, from the Cholesky factor L of K + diag(noise):
        μ = k(x, X) α with α = (K + N)⁻¹ y, σ² = k(x, x) − ‖L⁻¹ k(X, x)‖²; O(m n²) time and
        O(chunk · n) memory, never the m x m joint covariance.

        ``std="bound"`` returns instead an upper bound of σ in O(m n): the posterior given
        only the most informative single observation,
        σ² ≤ min_j k(x, x) − k(x, x_j)² / (k(x_j, x_j) + N_j),
        since conditioning on more data never increases a GP's variance.
        """
        means, stds = [], []
        with torch.no_grad():
            for start in range(0, len(x), _CHUNK):
                chunk = torch.as_tensor(
                    np.nan_to_num(x[start : start + _CHUNK]), dtype=torch.float64
                )
                cross = self.model.covar_module(chunk, self._train_x).to_dense()  # (m, n)
                means.append((cross @ self._alpha).reshape(-1).numpy())
                prior = self.model.covar_module(chunk, diag=True)
                if std == "bound":
                    explained = (cross**2 / self._own_variance).max(dim=1).values
                else:
                    v = torch.linalg.solve_triangular(self._cholesky, cross.T, upper=False)
                    explained = (v**2).sum(dim=0)
                stds.append((prior - explained).clamp_min(0).sqrt().numpy())
        return np.concatenate(means), np.concatenate(stds)
