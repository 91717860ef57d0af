"""Pruning of uninformative feature columns (paper, appendix B.1.1); thresholds are arguments.

- Columns that vary within a dataset (configuration encodings, training-dynamics features)
  are judged per dataset by ``flag_columns``: near-constant (variance below ``var_ratio`` x
  the block's median column variance) or near-duplicate (|Pearson r| above ``max_corr``
  with an earlier column); a model drops a column flagged in at least ``flag_share`` of the
  datasets.
- Dataset features (constant within a dataset) are judged across datasets, one row each, by
  ``informative_dataset_features``: fewer than two distinct known values, or |r| above
  ``max_corr`` with an earlier kept feature.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class FeatureFilter:
    """Thresholds of the feature filtering (module docstring)."""

    var_ratio: float = 0.01
    max_corr: float = 0.95
    flag_share: float = 0.9


def flag_columns(block: np.ndarray, var_ratio: float, max_corr: float) -> np.ndarray:
    """1 for columns of ``block`` (n, d) that are near-constant or near-duplicates."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        variance = np.nanvar(block, axis=0)
        flagged = variance <= var_ratio * np.nanmedian(variance)
        live = np.flatnonzero(~flagged)
        if len(live) > 1:
            corr = np.corrcoef(np.nan_to_num(block[:, live]), rowvar=False)
            for a in range(len(live)):
                if np.any(np.abs(corr[a, :a]) > max_corr):
                    flagged[live[a]] = True
    return flagged.astype(float)


def informative_dataset_features(table: np.ndarray, max_corr: float) -> np.ndarray:
    """Keep mask over dataset features (columns of ``table``, one row per dataset)."""
    keep = np.array([len(np.unique(c[np.isfinite(c)])) >= 2 for c in table.T], dtype=bool)
    kept: list[int] = []
    for j in np.flatnonzero(keep):
        column = table[:, j]
        for i in kept:
            both = np.isfinite(column) & np.isfinite(table[:, i])
            if both.sum() > 2:
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore", RuntimeWarning)
                    r = np.corrcoef(column[both], table[both, i])[0, 1]
                if np.isfinite(r) and abs(r) > max_corr:
                    keep[j] = False
                    break
        if keep[j]:
            kept.append(j)
    return keep
