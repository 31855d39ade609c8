"""Classical baselines on in-memory grey-matter (GM) volumes, and 2D-CNN data helpers.

Every function here takes ``X`` as a float array of shape ``(n_subjects, nx, ny, nz)`` on an
MNI grid in RAS voxel order (axis 2 runs inferior -> superior, so axial slice ``k`` of subject
``i`` is ``X[i, :, :, k]``), and ``y`` as a 1D array: ints 0/1 for classification (1 = MDD,
the positive class) or floats for regression.

* :class:`LbpSvm`: per-slice local-binary-pattern histograms and an RBF SVM.
* :class:`RegionRidge`: GM volume per atlas region and a (cross-validated) ridge model.
* :func:`axial_slices`, :func:`informative_slices`, :func:`majority_vote` and
  :func:`slices_as_channels`: the reshaping and the vote of the two 2D-CNN baselines (their
  training lives elsewhere).
"""

from __future__ import annotations

import logging

import numpy as np
from scipy import sparse
from skimage.feature import local_binary_pattern
from sklearn.base import BaseEstimator
from sklearn.linear_model import RidgeClassifierCV, RidgeCV
from sklearn.pipeline import Pipeline, make_pipeline
from sklearn.preprocessing import StandardScaler
from sklearn.svm import SVC

from bids_mdd.models.task import Task

log = logging.getLogger(__name__)

#: LBP neighbours and radius of the paper's texture baseline ("8 neighbours, radius 1").
LBP_POINTS = 8
LBP_RADIUS = 1
#: Number of distinct codes of skimage's ``method="uniform"`` LBP: P + 2 (0..P uniform, P + 1
#: for every non-uniform pattern). A flat neighbourhood (all neighbours >= centre) gives code P.
LBP_BINS = LBP_POINTS + 2
#: Ridge penalties searched by :class:`RegionRidge` (leave-one-out, as RidgeCV does).
RIDGE_ALPHAS = np.logspace(-3, 3, 13)


def _as_volumes(X: np.ndarray) -> np.ndarray:
    array = np.asarray(X)
    if array.ndim != 4:
        raise ValueError(f"X must have shape (n_subjects, nx, ny, nz), got {array.shape}")
    return array


def _as_binary(y: np.ndarray, n: int) -> np.ndarray:
    labels = np.asarray(y).ravel()
    if labels.shape[0] != n:
        raise ValueError(f"y has {labels.shape[0]} entries for {n} subjects")
    if not np.isin(labels, (0, 1)).all():
        raise ValueError("classification labels must be 0 (healthy) or 1 (MDD)")
    return labels.astype(np.int64)


# --------------------------------------------------------------------------------------------
# LBP + SVM
# --------------------------------------------------------------------------------------------

def lbp_features(X: np.ndarray, brain_threshold: float = 0.05) -> np.ndarray:
    """Per-axial-slice histograms of uniform LBP codes (8 neighbours, radius 1).

    Parameters
    ----------
    X : ndarray, shape (n_subjects, nx, ny, nz)
        GM volumes.
    brain_threshold : float
        A voxel is brain when its value exceeds ``brain_threshold`` times its volume's max.

    Returns
    -------
    ndarray, shape (n_subjects, nz * 10), float32
        For each slice ``k`` (in order), the 10-bin histogram of the LBP codes of its brain
        voxels, normalised to sum 1; all zeros for a slice without brain voxels.

    Notes
    -----
    Each volume is rescaled to uint8 0..255 by its max (skimage warns on float input), and
    each slice is edge-padded by one voxel before the LBP so that the image border is not
    read as an artificial edge: a constant slice gives only the flat code ``P`` (= 8).
    """
    volumes = _as_volumes(X)
    n, nx, ny, nz = volumes.shape
    features = np.zeros((n, nz, LBP_BINS), dtype=np.float32)
    for i in range(n):
        volume = np.clip(np.asarray(volumes[i], dtype=np.float64), 0.0, None)
        peak = float(volume.max())
        if peak <= 0.0:
            continue  # an empty volume: no brain anywhere
        brain = volume > brain_threshold * peak
        scaled = np.round(volume / peak * 255.0).astype(np.uint8)
        for k in np.flatnonzero(brain.any(axis=(0, 1))):
            padded = np.pad(scaled[:, :, k], LBP_RADIUS, mode="edge")
            codes = local_binary_pattern(padded, P=LBP_POINTS, R=LBP_RADIUS, method="uniform")
            codes = codes[LBP_RADIUS:-LBP_RADIUS, LBP_RADIUS:-LBP_RADIUS]
            counts = np.bincount(codes[brain[:, :, k]].astype(np.int64), minlength=LBP_BINS)
            features[i, k] = counts / counts.sum()
    return features.reshape(n, nz * LBP_BINS)


class LbpSvm(BaseEstimator):
    """Texture baseline: uniform-LBP histograms of every axial slice, then an RBF SVM.

    Parameters
    ----------
    C : float
        SVM penalty.
    brain_threshold : float
        Brain mask threshold, as a fraction of each volume's max (see :func:`lbp_features`).
    """

    # Paper setting: LBP with 8 neighbours, radius 1, and an RBF-kernel SVM on the
    # concatenated per-slice histograms (features standardised first; gamma="scale").

    def __init__(self, C: float = 1.0, brain_threshold: float = 0.05) -> None:
        self.C = C
        self.brain_threshold = brain_threshold

    def features(self, X: np.ndarray) -> np.ndarray:
        """LBP features of ``X`` (see :func:`lbp_features`)."""
        return lbp_features(X, brain_threshold=self.brain_threshold)

    def fit(self, X: np.ndarray, y: np.ndarray) -> LbpSvm:
        """Fit the scaler and the SVM on volumes ``X`` with labels ``y`` (0/1).

        Returns
        -------
        LbpSvm
            ``self``.
        """
        volumes = _as_volumes(X)
        labels = _as_binary(y, volumes.shape[0])
        self.model_: Pipeline = make_pipeline(
            StandardScaler(), SVC(kernel="rbf", C=self.C, gamma="scale"))
        self.model_.fit(self.features(volumes), labels)
        return self

    def decision_scores(self, X: np.ndarray) -> np.ndarray:
        """SVM decision values, shape (n_subjects,): higher = more likely MDD."""
        return np.asarray(self.model_.decision_function(self.features(_as_volumes(X))))

    def predict(self, X: np.ndarray) -> np.ndarray:
        """Predicted labels, shape (n_subjects,): 1 = MDD, 0 = healthy."""
        return np.asarray(self.model_.predict(self.features(_as_volumes(X)))).astype(np.int64)


# --------------------------------------------------------------------------------------------
# Regional GM volumes + ridge
# --------------------------------------------------------------------------------------------

def region_indices(labels: np.ndarray) -> np.ndarray:
    """The non-zero label values of a label image, sorted (the columns of region_volumes)."""
    values = np.unique(np.asarray(labels))
    return values[values != 0].astype(np.int64)


def region_volumes(X: np.ndarray, labels: np.ndarray, voxel_ml: float) -> np.ndarray:
    """GM volume of each atlas region: the sum of the GM map over its voxels, times voxel_ml.

    Parameters
    ----------
    X : ndarray, shape (n_subjects, nx, ny, nz)
        GM maps (partial volume fractions).
    labels : ndarray of int, shape (nx, ny, nz)
        Label image, 0 = background.
    voxel_ml : float
        Volume of one voxel in mL.

    Returns
    -------
    ndarray, shape (n_subjects, n_regions), float64
        Columns in the order of :func:`region_indices` (sorted non-zero labels).
    """
    volumes = _as_volumes(X)
    labels = np.asarray(labels)
    if labels.shape != volumes.shape[1:]:
        raise ValueError(f"labels of shape {labels.shape} do not match volumes of shape "
                         f"{volumes.shape[1:]}")
    regions = region_indices(labels)
    flat = labels.ravel()
    inside = np.flatnonzero(flat != 0)
    column = np.searchsorted(regions, flat[inside])
    # One sparse (voxels x regions) indicator: a single matrix product sums every region of
    # every subject.
    indicator = sparse.csr_matrix(
        (np.ones(inside.size), (inside, column)), shape=(flat.size, regions.size))
    sums = (indicator.T @ volumes.reshape(volumes.shape[0], -1).T.astype(np.float64)).T
    return np.asarray(sums) * float(voxel_ml)


class RegionRidge(BaseEstimator):
    """Regional-volume baseline: GM volume per atlas region, standardised, then ridge.

    Parameters
    ----------
    labels : ndarray of int, shape (nx, ny, nz)
        Atlas label image on the grid of the volumes (0 = background), e.g. from
        :func:`bids_mdd.atlas.atlas_labels_on_grid`.
    voxel_ml : float
        Volume of one voxel in mL.
    task : Task
        ``RidgeClassifierCV`` (labels 0/1) or ``RidgeCV`` (continuous target).
    """

    def __init__(self, labels: np.ndarray, voxel_ml: float = 1.0,
                 task: Task = Task.CLASSIFICATION) -> None:
        self.labels = labels
        self.voxel_ml = voxel_ml
        self.task = task

    def features(self, X: np.ndarray) -> np.ndarray:
        """Regional GM volumes of ``X`` (see :func:`region_volumes`)."""
        return region_volumes(X, self.labels, self.voxel_ml)

    def fit(self, X: np.ndarray, y: np.ndarray) -> RegionRidge:
        """Fit the scaler and the ridge model (penalty chosen among ``RIDGE_ALPHAS``).

        Returns
        -------
        RegionRidge
            ``self``.
        """
        volumes = _as_volumes(X)
        if self.task == Task.CLASSIFICATION:
            target = _as_binary(y, volumes.shape[0])
            ridge = RidgeClassifierCV(alphas=RIDGE_ALPHAS)
        elif self.task == Task.REGRESSION:
            target = np.asarray(y, dtype=np.float64).ravel()
            if target.shape[0] != volumes.shape[0]:
                raise ValueError(f"y has {target.shape[0]} entries for {volumes.shape[0]} "
                                 "subjects")
            ridge = RidgeCV(alphas=RIDGE_ALPHAS)
        else:
            raise ValueError(f"task must be 'classification' or 'regression', got {self.task!r}")
        self.regions_ = region_indices(self.labels)
        self.model_: Pipeline = make_pipeline(StandardScaler(), ridge)
        self.model_.fit(self.features(volumes), target)
        log.debug("RegionRidge(%s): %d regions, alpha=%g", self.task, self.regions_.size,
                  self.model_[-1].alpha_)
        return self

    def decision_scores(self, X: np.ndarray) -> np.ndarray:
        """Decision values (classification; higher = more likely MDD) or predictions."""
        features = self.features(_as_volumes(X))
        if self.task == Task.CLASSIFICATION:
            return np.asarray(self.model_.decision_function(features))
        return np.asarray(self.model_.predict(features))

    def predict(self, X: np.ndarray) -> np.ndarray:
        """Predicted labels (0/1, classification) or target values (regression)."""
        predictions = np.asarray(self.model_.predict(self.features(_as_volumes(X))))
        return predictions.astype(np.int64) if self.task == Task.CLASSIFICATION else predictions


# --------------------------------------------------------------------------------------------
# 2D-CNN baselines: data reshaping and the subject vote
# --------------------------------------------------------------------------------------------

def informative_slices(X: np.ndarray, min_fraction: float = 0.05) -> np.ndarray:
    """Axial slices that hold brain in the cohort.

    Parameters
    ----------
    X : ndarray, shape (n_subjects, nx, ny, nz)
        Volumes.
    min_fraction : float
        Keep slice ``k`` when the fraction of its voxels above 0.05 times the volume's max,
        averaged over subjects, is at least ``min_fraction``.

    Returns
    -------
    ndarray of bool, shape (nz,)
    """
    volumes = _as_volumes(X)
    peaks = volumes.reshape(volumes.shape[0], -1).max(axis=1)
    above = volumes > 0.05 * peaks[:, None, None, None]
    fraction = above.mean(axis=(1, 2))  # (n_subjects, nz)
    return fraction.mean(axis=0) >= min_fraction


def axial_slices(X: np.ndarray, keep: np.ndarray | None = None
                 ) -> tuple[np.ndarray, np.ndarray]:
    """Every (kept) axial slice of every subject as one 2D sample.

    Parameters
    ----------
    X : ndarray, shape (n_subjects, nx, ny, nz)
        Volumes.
    keep : ndarray of bool, shape (nz,), optional
        Slices to keep (e.g. :func:`informative_slices`); all when None.

    Returns
    -------
    slices : ndarray, shape (n_subjects * n_kept, 1, nx, ny), float32
        Subject-major: subject 0's kept slices in inferior -> superior order, then subject 1's.
    subject_index : ndarray of int, shape (n_subjects * n_kept,)
        The subject of each slice.
    """
    volumes = _as_volumes(X)
    n, nx, ny, nz = volumes.shape
    if keep is None:
        keep = np.ones(nz, dtype=bool)
    keep = np.asarray(keep, dtype=bool)
    if keep.shape != (nz,):
        raise ValueError(f"keep must be a boolean mask of shape ({nz},), got {keep.shape}")
    kept = np.moveaxis(volumes, 3, 1)[:, keep]  # (n, n_kept, nx, ny)
    slices = np.ascontiguousarray(kept.reshape(-1, 1, nx, ny), dtype=np.float32)
    subject_index = np.repeat(np.arange(n), int(keep.sum()))
    return slices, subject_index


def majority_vote(slice_probabilities: np.ndarray, subject_index: np.ndarray,
                  n_subjects: int) -> tuple[np.ndarray, np.ndarray]:
    """Subject-level decision from slice-level MDD probabilities.

    Parameters
    ----------
    slice_probabilities : ndarray, shape (n_slices,)
        P(MDD) of each slice.
    subject_index : ndarray of int, shape (n_slices,)
        The subject of each slice (0 .. n_subjects - 1).
    n_subjects : int
        Number of subjects; each must have at least one slice.

    Returns
    -------
    scores : ndarray, shape (n_subjects,), float64
        Fraction of each subject's slices with probability > 0.5 (a score for the AUC).
    labels : ndarray, shape (n_subjects,), int64
        1 (MDD) when *more* than half of the subject's slices are predicted MDD, as in the
        paper; exactly half gives 0.
    """
    probabilities = np.asarray(slice_probabilities, dtype=np.float64).ravel()
    subjects = np.asarray(subject_index).ravel().astype(np.int64)
    if probabilities.shape != subjects.shape:
        raise ValueError("slice_probabilities and subject_index differ in length")
    if subjects.size and (subjects.min() < 0 or subjects.max() >= n_subjects):
        raise ValueError(f"subject_index must lie in 0..{n_subjects - 1}")
    totals = np.bincount(subjects, minlength=n_subjects)
    if (totals == 0).any():
        raise ValueError(f"subjects without slices: {np.flatnonzero(totals == 0).tolist()}")
    positives = np.bincount(subjects, weights=(probabilities > 0.5).astype(np.float64),
                            minlength=n_subjects)
    scores = positives / totals
    labels = (2 * positives > totals).astype(np.int64)  # strict majority, exact in integers
    return scores, labels


def slices_as_channels(X: np.ndarray) -> np.ndarray:
    """Volumes as 2D multi-channel images: shape (n, nz, nx, ny), float32.

    Channel ``k`` of subject ``i`` is the axial slice ``X[i, :, :, k]``.
    """
    return np.ascontiguousarray(np.moveaxis(_as_volumes(X), 3, 1), dtype=np.float32)
