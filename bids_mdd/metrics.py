"""Evaluation metrics per fold, their spread across folds, and permutation p-values."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pandas as pd
from scipy.stats import pearsonr
from sklearn.metrics import accuracy_score, balanced_accuracy_score, recall_score, roc_auc_score

CLASSIFICATION_METRICS = ("accuracy", "balanced_accuracy", "recall", "specificity", "auc")
REGRESSION_METRICS = ("pearson_r", "pearson_p", "mae", "rmse")


def classification_metrics(y_true: np.ndarray, score: np.ndarray,
                           threshold: float = 0.5) -> dict[str, float]:
    """Accuracy, balanced accuracy, recall (MDD positive), specificity, AUC from probabilities
    (or any score, with the matching threshold)."""
    y_true = np.asarray(y_true).astype(int)
    y_pred = (np.asarray(score) > threshold).astype(int)
    both = len(np.unique(y_true)) == 2
    return {
        "accuracy": float(accuracy_score(y_true, y_pred)),
        "balanced_accuracy": float(balanced_accuracy_score(y_true, y_pred)) if both else np.nan,
        "recall": float(recall_score(y_true, y_pred, pos_label=1, zero_division=0)),
        "specificity": float(recall_score(y_true, y_pred, pos_label=0, zero_division=0)),
        "auc": float(roc_auc_score(y_true, score)) if both else np.nan,
    }


def regression_metrics(y_true: np.ndarray, y_pred: np.ndarray) -> dict[str, float]:
    """Pearson r and its p-value, mean absolute and root-mean-square error."""
    y_true, y_pred = np.asarray(y_true, float), np.asarray(y_pred, float)
    if len(y_true) > 2 and np.std(y_pred) > 0 and np.std(y_true) > 0:
        r, p = pearsonr(y_true, y_pred)
    else:
        r, p = np.nan, np.nan
    return {"pearson_r": float(r), "pearson_p": float(p),
            "mae": float(np.mean(np.abs(y_true - y_pred))),
            "rmse": float(np.sqrt(np.mean((y_true - y_pred) ** 2)))}


def summarize(per_fold: pd.DataFrame, metrics: tuple[str, ...]) -> dict[str, dict[str, float]]:
    """Mean, SD (ddof 1) and count of each metric across folds."""
    return {m: {"mean": float(per_fold[m].mean()), "sd": float(per_fold[m].std(ddof=1)),
                "n_folds": int(per_fold[m].notna().sum())} for m in metrics if m in per_fold}


def permutation_p_value(observed: float, null: np.ndarray) -> float:
    """(1 + #null >= observed) / (1 + n): the permutation p-value (Phipson & Smyth 2010)."""
    null = np.asarray(null)
    return float((1 + np.sum(null >= observed - 1e-12)) / (1 + len(null)))


def permuted_within(y: np.ndarray, blocks: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """``y`` permuted within each block: where sites differ in their diagnosis mix, blocks of
    sites keep that mix, so that a prediction made from the site alone is no better than its
    permutations (restricted exchangeability; Winkler et al. 2014, NeuroImage 92:381)."""
    permuted = np.asarray(y).copy()
    for block in np.unique(blocks):
        where = np.flatnonzero(blocks == block)
        permuted[where] = permuted[rng.permutation(where)]
    return permuted


def permuted_outputs_null(y_true: np.ndarray, score: np.ndarray, blocks: np.ndarray,
                          n_permutations: int, seed: int,
                          statistic: Callable[[np.ndarray, np.ndarray], float]) -> np.ndarray:
    """Null distribution of ``statistic`` with the labels permuted within each block (a fold,
    or a fold's site) against the fixed out-of-fold outputs."""
    rng = np.random.default_rng(seed)
    return np.array([statistic(permuted_within(y_true, blocks, rng), score)
                     for _ in range(n_permutations)])
