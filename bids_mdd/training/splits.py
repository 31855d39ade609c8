"""Subject-level cross-validation splits: train / validation / test per fold, never sharing a
participant (nor a site, when a site column exists) between the three parts."""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

import numpy as np
from sklearn.model_selection import LeaveOneGroupOut, StratifiedGroupKFold

from bids_mdd.errors import BidsMddError, ExitCode
from bids_mdd.models.task import Task


@dataclass(frozen=True)
class Fold:
    """Indices (into the sample list) of one fold's three parts."""

    repeat: int
    index: int
    train: np.ndarray
    val: np.ndarray
    test: np.ndarray

    @property
    def name(self) -> str:
        return f"repeat-{self.repeat + 1}_fold-{self.index + 1}"


class CvScheme(StrEnum):
    """How participants are split into folds (``--cv``).

    ``grouped``: stratified k folds keeping each site whole when a site column exists (else
    each participant); ``stratified``: stratified k folds of participants, sites mixed across
    folds; ``leave-site-out``: one fold per site, tested on a site no part of its training saw.
    Site-mixed folds estimate accuracy at the sites trained on; leave-site-out at a new site.
    """

    GROUPED = "grouped"
    STRATIFIED = "stratified"
    LEAVE_SITE_OUT = "leave-site-out"


def strata(y: np.ndarray, task: Task, n_bins: int = 5) -> np.ndarray:
    """Stratification labels: the classes, or quantile bins of a regression target."""
    if task == Task.CLASSIFICATION:
        return np.asarray(y).astype(int)
    ranks = np.argsort(np.argsort(y, kind="stable"), kind="stable")
    return (ranks * n_bins // len(y)).astype(int)


def make_folds(y: np.ndarray, groups: np.ndarray, task: Task, n_folds: int, n_repeats: int = 1,
               val_fraction: float = 0.1, seed: int = 0) -> list[Fold]:
    """Stratified group k-fold (repeated), with a stratified group validation part carved from
    each training part; ``val_fraction`` is of all samples (paper A: 80/10/10).

    ``groups`` holds the participant of each sample, or its site for leave-site-out style
    folds. Every participant's sessions therefore stay in one part.
    """
    groups = np.asarray(groups)
    n_groups = len(np.unique(groups))
    if n_groups < n_folds:
        raise BidsMddError(f"only {n_groups} independent groups (participants or sites) for "
                           f"{n_folds} folds; lower --folds", ExitCode.USAGE)
    labels = strata(np.asarray(y), task)
    return _k_folds(labels, groups, n_folds, n_repeats, val_fraction, seed)


def leave_site_out_folds(y: np.ndarray, sites: np.ndarray, participants: np.ndarray,
                         task: Task, val_fraction: float = 0.1, seed: int = 0) -> list[Fold]:
    """One fold per site: that site is the test part; the validation part is carved from the
    other sites' participants (whole participants, stratified)."""
    sites, participants = np.asarray(sites), np.asarray(participants)
    if len(np.unique(sites)) < 2:
        raise BidsMddError("leave-site-out needs at least 2 sites in the site column",
                           ExitCode.USAGE)
    labels = strata(np.asarray(y), task)
    folds = []
    for index, (train_val, test) in enumerate(LeaveOneGroupOut().split(labels, labels, sites)):
        train, val = _carve_validation(train_val, labels, participants, val_fraction,
                                       1.0 - len(test) / len(labels), seed + 1000 + index)
        folds.append(Fold(0, index, np.sort(train), np.sort(val), np.sort(test)))
        assert_disjoint(folds[-1], participants)
        assert_disjoint(Fold(0, index, train, np.array([], int), test), sites)
    return folds


def _k_folds(labels: np.ndarray, groups: np.ndarray, n_folds: int, n_repeats: int,
             val_fraction: float, seed: int) -> list[Fold]:
    folds = []
    for repeat in range(n_repeats):
        outer = StratifiedGroupKFold(n_splits=n_folds, shuffle=True, random_state=seed + repeat)
        for index, (train_val, test) in enumerate(outer.split(labels, labels, groups)):
            train, val = _carve_validation(train_val, labels, groups, val_fraction,
                                           1.0 - 1.0 / n_folds, seed + 1000 * (repeat + 1) + index)
            folds.append(Fold(repeat, index, np.sort(train), np.sort(val), np.sort(test)))
            assert_disjoint(folds[-1], groups)
    return folds


def _carve_validation(indices: np.ndarray, labels: np.ndarray, groups: np.ndarray,
                      val_fraction: float, train_val_fraction: float, seed: int,
                      ) -> tuple[np.ndarray, np.ndarray]:
    if val_fraction <= 0:
        return indices, np.array([], dtype=int)
    # one inner fold of the training part is the validation part; small parts cannot be cut
    # finer than their number of groups or than their largest stratum
    _, counts = np.unique(labels[indices], return_counts=True)
    n_splits = min(max(2, int(round(train_val_fraction / val_fraction))),
                   len(np.unique(groups[indices])), int(counts.max()))
    if n_splits < 2:
        return indices, np.array([], dtype=int)
    inner = StratifiedGroupKFold(n_splits=n_splits, shuffle=True, random_state=seed)
    train, val = next(inner.split(indices, labels[indices], groups[indices]))
    return indices[train], indices[val]


def assert_disjoint(fold: Fold, groups: np.ndarray) -> None:
    """Raise if a participant/site appears in two parts of ``fold`` (the leakage guard)."""
    parts = {"train": set(groups[fold.train]), "val": set(groups[fold.val]),
             "test": set(groups[fold.test])}
    for a, b in (("train", "val"), ("train", "test"), ("val", "test")):
        shared = parts[a] & parts[b]
        if shared:
            raise AssertionError(f"{fold.name}: {sorted(shared)[:3]} in both {a} and {b}")
