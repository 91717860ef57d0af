"""Ranking metrics of the paper's Table 5, for one held-out dataset.

``utility`` is the true score oriented so that higher is better, ``predicted`` the model's
score (higher = predicted better), both shape ``(n,)``:

- ``regret``: (max u − u[top-1 predicted]) / |max u − median u| (normalised, so datasets
  aggregate; the same normalisation as the benchmark harness);
- ``recall@k``: 1 if a truly best configuration is among the top ``k`` predicted, else 0;
- ``ndcg@k``: scikit-learn's nDCG with graded relevance = the percentile of u within the
  dataset (rank-based: raw scores such as perplexity have outliers that would flatten it);
- ``pairwise_acc``: share of concordant pairs, (1 + Kendall's τ-b) / 2;
- ``spearman``: Spearman's rank correlation.
"""

from __future__ import annotations

import numpy as np
from scipy.stats import kendalltau, rankdata, spearmanr
from sklearn.metrics import ndcg_score

METRICS = (
    "regret",
    "recall@1",
    "recall@3",
    "recall@5",
    "recall@10",
    "ndcg@5",
    "ndcg@10",
    "pairwise_acc",
    "spearman",
)


def ranking_metrics(utility: np.ndarray, predicted: np.ndarray) -> dict[str, float]:
    """All metrics of ``METRICS`` for one dataset."""
    utility = np.asarray(utility, dtype=float)
    predicted = np.asarray(predicted, dtype=float)
    if utility.shape != predicted.shape or utility.ndim != 1 or len(utility) < 2:
        raise ValueError("utility and predicted must be 1-D arrays of the same length >= 2.")
    order = np.argsort(-predicted, kind="stable")
    best = utility.max()
    scale = abs(best - np.median(utility)) or 1.0
    relevance = (rankdata(utility) / len(utility))[None, :]
    result = {"regret": float((best - utility[order[0]]) / scale)}
    for k in (1, 3, 5, 10):
        result[f"recall@{k}"] = float(np.any(utility[order[:k]] >= best))
    for k in (5, 10):
        result[f"ndcg@{k}"] = float(ndcg_score(relevance, predicted[None, :], k=k))
    result["pairwise_acc"] = float((1.0 + kendalltau(utility, predicted).statistic) / 2.0)
    result["spearman"] = float(spearmanr(utility, predicted).statistic)
    return result
