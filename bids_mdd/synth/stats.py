"""Effect-size helpers for checking what a synthetic cohort carries."""

from __future__ import annotations

import numpy as np


def cohens_d(a: np.ndarray, b: np.ndarray) -> float:
    """Cohen's d of ``a`` over ``b``: (mean a - mean b) / pooled SD (ddof 1); nan if undefined.

    Written here because scipy.stats has no Cohen's d and the one-line formula does not justify
    a new dependency (pingouin).
    """
    a, b = np.asarray(a, float), np.asarray(b, float)
    if a.size < 2 or b.size < 2:
        return float("nan")
    pooled = np.sqrt(((a.size - 1) * a.var(ddof=1) + (b.size - 1) * b.var(ddof=1))
                     / (a.size + b.size - 2))
    return float((a.mean() - b.mean()) / pooled) if pooled > 0 else float("nan")
