"""Domain shift: does a new input lie inside the distribution a bundle was trained on?

A model's output means something only for inputs like those it was trained on: a scan of
another scanner, a whole head where the bundle saw skull-stripped brains, a synthetic image.
Each bundle keeps a probabilistic PCA (Tipping & Bishop 1999) of its training inputs, taken on
a coarse copy of the network's own input (block means on a grid of about ``COARSE_MM``, the
scale of the 8 mm smoothing, so that it stays a few hundred kB), and scores a new input by its
Mahalanobis distance under that model's covariance: the ``k`` principal axes with their
variances plus isotropic noise in every other direction,

    d(x)^2 = sum_j (w_j . (x - mu))^2 / lambda_j + ||r||^2 / sigma^2,

with ``r`` the part of ``x - mu`` outside the principal subspace. The residual term carries most
of the signal for an image of another kind: the principal axes describe how the training inputs
differ from each other, the residual what none of them has.

The threshold is a quantile (default the 99th percentile) of the distances of cross-validation's
held-out inputs, each scored by a PCA fitted on its fold's training part only, so it is set by
inputs the PCA has not seen, as a new participant's will be; the bundle's own PCA is then fitted
on every training input. The distance is written for every prediction; an input above the
threshold is flagged as outside the training distribution.

sklearn's ``PCA`` fits the components; ``PCA.score_samples`` would give the same model's
likelihood, but it forms the D x D precision matrix (D is thousands of voxels), so the distance
is computed here from the components alone.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from safetensors.numpy import load_file, save_file
from sklearn.decomposition import PCA

from bids_mdd.models.inputs import zoom_array

METHOD = ("Mahalanobis distance under a probabilistic PCA of the training inputs (coarse "
          "copy of the network input); threshold: a quantile of cross-validation's held-out "
          "distances")
DOMAIN_FILE = "domain.safetensors"
COARSE_MM = 8.0
MAX_COMPONENTS = 10
QUANTILE = 0.99


def coarse_factor(spacing_mm: float) -> float:
    """Zoom that brings a grid of ``spacing_mm`` voxels to about :data:`COARSE_MM`."""
    return min(1.0, spacing_mm / COARSE_MM)


def coarsen(volumes: np.ndarray, factor: float) -> np.ndarray:
    """(n, x, y, z) network inputs -> (n, D) float64 rows of block means."""
    return np.stack([zoom_array(np.asarray(v, np.float32), factor).ravel()
                     for v in volumes]).astype(np.float64)


@dataclass(frozen=True)
class DomainModel:
    """A fitted probabilistic PCA and its calibrated threshold (see the module docstring)."""

    mean: np.ndarray  # (D,)
    components: np.ndarray  # (k, D), orthonormal rows
    variances: np.ndarray  # (k,)
    noise_variance: float
    factor: float  # coarse zoom applied to the network input
    threshold: float = np.inf
    quantile: float = QUANTILE
    calibration: dict[str, Any] | None = None

    @classmethod
    def fit(cls, volumes: np.ndarray, factor: float, n_components: int) -> DomainModel:
        """The PCA of ``volumes`` (network inputs, (n, x, y, z)) with ``n_components`` axes."""
        rows = coarsen(volumes, factor)
        n, d = rows.shape
        k = max(1, min(n_components, n - 2, d - 1))
        pca = PCA(n_components=k, svd_solver="full").fit(rows)
        floor = 1e-6 * max(float(pca.explained_variance_.max()), 1e-12)
        # The noise variance is the variance left outside the k axes per remaining dimension,
        # (trace - sum of the k variances) / (D - k), times (n - 1) / (n - 1 - k): with fewer
        # inputs than voxels the k axes also take up the training inputs' own noise, which
        # shrinks the residual by that factor. (sklearn's noise_variance_ averages the
        # remaining sample eigenvalues, which grows with D / n.) Without both, distances
        # would depend on the number of training inputs, and the held-out calibration, done
        # with fewer, would not carry over to the bundle's PCA.
        total = float(np.var(rows, axis=0, ddof=1).sum())
        left = (total - float(pca.explained_variance_.sum())) / (d - k)
        left *= (n - 1) / max(n - 1 - k, 1)
        return cls(mean=pca.mean_, components=pca.components_,
                   variances=np.maximum(pca.explained_variance_, floor),
                   noise_variance=max(left, floor), factor=factor)

    def distances(self, volumes: np.ndarray) -> np.ndarray:
        """The Mahalanobis distance of each network input ((n, x, y, z))."""
        centred = coarsen(volumes, self.factor) - self.mean
        scores = centred @ self.components.T
        residual = np.sum(centred**2, axis=1) - np.sum(scores**2, axis=1)
        squared = np.sum(scores**2 / self.variances, axis=1) + np.maximum(residual, 0) / \
            self.noise_variance
        return np.sqrt(squared)

    def calibrated(self, heldout: np.ndarray, quantile: float = QUANTILE) -> DomainModel:
        """This model with its threshold at ``quantile`` of the held-out distances."""
        heldout = np.asarray(heldout, float)
        threshold = float(np.quantile(heldout, quantile))
        calibration = {"n_heldout": int(len(heldout)),
                       "heldout_median": float(np.median(heldout)),
                       "heldout_max": float(heldout.max()),
                       "heldout_fraction_flagged": float(np.mean(heldout > threshold))}
        return DomainModel(self.mean, self.components, self.variances, self.noise_variance,
                           self.factor, threshold, quantile, calibration)

    def save(self, path: Path) -> None:
        # C order: safetensors writes the raw buffer, and sklearn's components_ are Fortran
        # ordered, which astype keeps.
        save_file({"mean": np.ascontiguousarray(self.mean, np.float32),
                   "components": np.ascontiguousarray(self.components, np.float32),
                   "variances": np.ascontiguousarray(self.variances, np.float64)}, str(path))

    def to_json(self) -> dict[str, Any]:
        """What model.json keeps beside the tensors file (its sha256 is added by the writer)."""
        return {"method": METHOD, "file": DOMAIN_FILE, "coarse_factor": self.factor,
                "n_components": int(len(self.variances)), "n_features": int(len(self.mean)),
                "noise_variance": self.noise_variance, "threshold": self.threshold,
                "quantile": self.quantile, "calibration": self.calibration}

    @classmethod
    def load(cls, path: Path, meta: dict[str, Any]) -> DomainModel:
        tensors = load_file(str(path))
        return cls(mean=tensors["mean"].astype(np.float64),
                   components=tensors["components"].astype(np.float64),
                   variances=tensors["variances"].astype(np.float64),
                   noise_variance=float(meta["noise_variance"]),
                   factor=float(meta["coarse_factor"]), threshold=float(meta["threshold"]),
                   quantile=float(meta["quantile"]), calibration=meta.get("calibration"))


def n_components_for(n_inputs: int) -> int:
    """Principal axes for a PCA of ``n_inputs``: at most a third as many as inputs (more fit
    the inputs' own noise), and :data:`MAX_COMPONENTS`."""
    return max(1, min(MAX_COMPONENTS, (n_inputs - 1) // 3))


def fit_calibrated(volumes: np.ndarray, heldout_splits: list[tuple[np.ndarray, np.ndarray]],
                   factor: float, quantile: float = QUANTILE,
                   split_volumes: Sequence[np.ndarray] | None = None) -> DomainModel:
    """The PCA of every input, with its threshold set by held-out distances: for each
    (fit indices, held-out indices) pair, a PCA of the fit part scores the held-out part.
    Every PCA has as many axes as the smallest fit part allows, so the distances compare.
    ``split_volumes``: each split's own copy of the inputs (e.g. harmonised by a fit on that
    split's fit part only), in place of ``volumes``."""
    k = n_components_for(min(len(fit) for fit, _ in heldout_splits))
    own = split_volumes or [volumes] * len(heldout_splits)
    heldout = np.concatenate([DomainModel.fit(split[fit], factor, k).distances(split[test])
                              for (fit, test), split in zip(heldout_splits, own)])
    return DomainModel.fit(volumes, factor, k).calibrated(heldout, quantile)
