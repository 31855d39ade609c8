"""The papers' baselines on the same folds as the 3D network, and paper A's comparison table."""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import replace

import numpy as np
import pandas as pd

from bids_mdd.atlas import atlas_labels_on_grid
from bids_mdd.models.inputs import InputSpec
from bids_mdd.models.networks import build_network
from bids_mdd.models.task import Task
from bids_mdd.training.baselines import (
    LbpSvm,
    RegionRidge,
    axial_slices,
    informative_slices,
    majority_vote,
    slices_as_channels,
)
from bids_mdd.training.cv import (
    CVResult,
    assemble,
    cross_validate_estimator,
    cross_validate_network,
)
from bids_mdd.training.data import Sample
from bids_mdd.training.loop import TrainConfig
from bids_mdd.training.splits import Fold

LOGGER = logging.getLogger(__name__)

BATCH_2D = 64
BASELINES_CLASSIFICATION = ("lbp-svm", "ridge-regions", "slicewise-2d", "slices-as-channels")
BASELINES_REGRESSION = ("ridge-regions",)
TITLES = {"lbp-svm": "LBP (8 neighbours, radius 1) + RBF SVM",
          "ridge-regions": "Ridge on AAL2 regional GM volumes",
          "slicewise-2d": "2D DenseNet121, slice-wise, majority vote",
          "slices-as-channels": "2D DenseNet121, axial slices as channels"}


def run_baseline(name: str, gm: np.ndarray, gm_spec: InputSpec, y: np.ndarray,
                 samples: list[Sample], folds: list[Fold], task: Task, config: TrainConfig,
                 width: dict[str, int],
                 fold_inputs: Callable[[Fold], np.ndarray] | None = None) -> CVResult:
    """Cross-validate baseline ``name`` on GM maps ``gm`` (n, x, y, z) with ``folds``
    (``fold_inputs``: each fold's own GM maps, e.g. harmonised by a fit on its training part).

    The 2D networks train with batch 64, as paper A's 2D models; the rest of ``config`` is
    the 3D network's.
    """
    config = replace(config, batch_size=BATCH_2D)
    if name == "lbp-svm":
        return cross_validate_estimator(LbpSvm, gm, y, samples, folds, task, threshold=0.0,
                                        fold_inputs=fold_inputs)
    if name == "ridge-regions":
        labels = atlas_labels_on_grid(gm_spec.affine, gm_spec.shape)
        voxel_ml = float(abs(np.linalg.det(gm_spec.affine[:3, :3]))) / 1000
        return cross_validate_estimator(lambda: RegionRidge(labels, voxel_ml, task), gm, y,
                                        samples, folds, task, threshold=0.0,
                                        fold_inputs=fold_inputs)
    if name == "slices-as-channels":
        channels = slices_as_channels(gm)
        make = _net_2d(channels.shape[1], width)
        return cross_validate_network(
            make, channels, y, samples, folds, task, config, desc=name, add_channel=False,
            fold_inputs=(lambda fold: slices_as_channels(fold_inputs(fold))) if fold_inputs
            else None)
    if name == "slicewise-2d":
        return _slicewise(gm, y, samples, folds, task, config, width, fold_inputs)
    raise ValueError(f"unknown baseline {name!r}; choose from {BASELINES_CLASSIFICATION}")


def _net_2d(in_channels: int, width: dict[str, int]) -> Callable:
    return lambda: build_network("densenet121", spatial_dims=2, in_channels=in_channels,
                                 out_channels=2, **width)


def _slicewise(gm: np.ndarray, y: np.ndarray, samples: list[Sample], folds: list[Fold],
               task: Task, config: TrainConfig, width: dict[str, int],
               fold_inputs: Callable[[Fold], np.ndarray] | None = None) -> CVResult:
    """Each axial slice is a sample (paper A: batch 64); a subject is MDD when more than half
    of its slices are predicted MDD; the fraction of such slices is its score. The slices
    are those informative in ``gm``, for every fold's own maps alike."""
    informative = informative_slices(gm)
    slices, subject = axial_slices(gm, informative)
    slice_y = y[subject]
    scores = []
    for fold in folds:
        if fold_inputs is not None:
            slices, _ = axial_slices(fold_inputs(fold), informative)
        expand = lambda part: np.flatnonzero(np.isin(subject, part))  # noqa: E731
        slice_fold = Fold(fold.repeat, fold.index, expand(fold.train), expand(fold.val),
                          expand(fold.test))
        slice_samples = [samples[i] for i in subject]
        cv = cross_validate_network(_net_2d(1, width), slices, slice_y, slice_samples,
                                    [slice_fold], task, config, desc="slicewise-2d",
                                    add_channel=False)
        probabilities = cv.predictions["score"].to_numpy()
        tested, local = np.unique(subject[slice_fold.test], return_inverse=True)
        assert np.array_equal(tested, fold.test), "every test subject has slices"
        votes, _ = majority_vote(probabilities, local, len(tested))
        scores.append(votes)
    extra = [{} for _ in folds]
    return assemble(task, samples, folds, y, scores, 0.5, extra)


def comparison_table(results: dict[str, CVResult], task: Task) -> pd.DataFrame:
    """Paper A's tables 3-5 shape: one row per method, mean ± SD across folds."""
    metrics = (("accuracy", "balanced_accuracy", "recall", "specificity", "auc")
               if task == Task.CLASSIFICATION else ("pearson_r", "mae", "rmse"))
    rows = []
    for method, cv in results.items():
        summary = cv.summary
        row = {"method": method}
        for metric in metrics:
            mean, sd = summary[metric]["mean"], summary[metric]["sd"]
            scale = 100 if metric in ("accuracy", "balanced_accuracy", "recall",
                                      "specificity") else 1
            row[metric] = f"{mean * scale:.2f} ± {sd * scale:.2f}"
        row["n_folds"] = len(cv.per_fold)
        rows.append(row)
    return pd.DataFrame(rows)
